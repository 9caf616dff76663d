//! `cargo xtask build-images`: one OCI image archive per connector, without a container engine.
//!
//! The image's root filesystem is the release binary at `/usr/local/bin/<crate>`, exactly the
//! shared libraries it links (from `ldd`, the dynamic loader included), the CA certificates,
//! `/etc/passwd` and `/etc/group` with the unprivileged user 9999 it runs as, and a writable
//! `/var/lib/kps` (its working and state directory). See [`crate::oci`] for the archive.
//!
//! `--push REGISTRY` is designed, not built: the archive is an OCI layout, so
//! `skopeo copy oci-archive:<archive> docker://<registry>/<crate>:<tag>` pushes it as is (no
//! engine, no rebuild); xtask would run exactly that (or speak the registry's HTTP API: one
//! blob upload per blob, then the manifest) and print the pushed digest, which equals the
//! archive's manifest digest.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::connectors::{self, WorkspacePackage};
use crate::host::{self, Ctx};
use crate::oci::{self, ImageArchive, ImageConfig};
use crate::tar::{self, Entry};

/// The registry images are named in (the deploy documents name the same).
pub const REGISTRY: &str = "ghcr.io/kps-connectors";
/// The user and group the image runs as.
pub const USER: u32 = 9999;
/// Where the binary is in the image.
pub const BIN_DIR: &str = "usr/local/bin";
/// The working and state directory, owned by [`USER`].
pub const HOME: &str = "var/lib/kps";
/// The host's CA bundle (Debian's `ca-certificates`), copied into the image at the same path.
pub const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The options of `build-images`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The connectors (names, e.g. `file`); empty: every connector with a binary.
    pub connectors: Vec<String>,
    /// The image tag; default: the workspace version.
    pub tag: Option<String>,
    /// Where the archives go; default: `<target>/images`.
    pub out: Option<PathBuf>,
    /// Hand each archive to `docker load` or `podman load`.
    pub load: bool,
    /// Push to this registry (designed, not built).
    pub push: Option<String>,
}

/// One image built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The crate.
    pub crate_name: String,
    /// `registry/crate:tag`.
    pub reference: String,
    /// Where the archive was written.
    pub path: PathBuf,
    /// The archive.
    pub image: ImageArchive,
}

/// Runs `build-images`.
pub fn run(ctx: &Ctx, options: &Options) -> Result<()> {
    if let Some(registry) = &options.push {
        bail!(
            "--push is designed but not built yet (see xtask/README.md): push an archive with \
             `skopeo copy oci-archive:<archive> docker://{registry}/<crate>:<tag>`"
        );
    }
    let built = build(ctx, options)?;
    println!(
        "{:<24} {:>10}  {:<71}  ARCHIVE",
        "IMAGE", "COMPRESSED", "DIGEST"
    );
    for image in &built {
        println!(
            "{:<24} {:>7.1} MB  {}  {}",
            image.crate_name,
            image.image.compressed_size as f64 / 1_000_000.0,
            image.image.manifest_digest,
            image.path.display()
        );
    }
    if options.load {
        for image in &built {
            load(&image.path, &image.reference)?;
        }
    }
    Ok(())
}

/// Builds the release binaries and writes the archives.
pub fn build(ctx: &Ctx, options: &Options) -> Result<Vec<Built>> {
    let root = &ctx.paths.root;
    let names = if options.connectors.is_empty() {
        connectors::with_binaries(root)?
    } else {
        for name in &options.connectors {
            connectors::check_exists(root, name)?;
        }
        options.connectors.clone()
    };
    let packing = Packing::new(ctx, options)?;
    compile(root, &names)?;
    names.iter().map(|name| packing.package(name)).collect()
}

/// `cargo build --release` of the connectors named.
fn compile(root: &Path, names: &[String]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--release"]).current_dir(root);
    for name in names {
        build.args(["-p", &connectors::crate_name(name)]);
    }
    host::run(&mut build)
}

/// Everything an image is made of besides its binary: the same packing of the same binary
/// gives the same bytes.
#[derive(Debug, Clone)]
struct Packing {
    root: PathBuf,
    release_dir: PathBuf,
    package: WorkspacePackage,
    tag: String,
    out: PathBuf,
    certificates: Vec<u8>,
    epoch: u64,
    revision: String,
}

impl Packing {
    fn new(ctx: &Ctx, options: &Options) -> Result<Packing> {
        let root = ctx.paths.root.clone();
        let package = WorkspacePackage::read(&root)?;
        let tag = options
            .tag
            .clone()
            .unwrap_or_else(|| package.version.clone());
        check_tag(&tag)?;
        let certificates = fs::read(CA_CERTIFICATES).with_context(|| {
            format!("cannot read {CA_CERTIFICATES}: install the CA certificates (apt-get install ca-certificates)")
        })?;
        Ok(Packing {
            release_dir: ctx.paths.target.join("release"),
            out: options
                .out
                .clone()
                .unwrap_or_else(|| ctx.paths.target.join("images")),
            epoch: oci::source_date_epoch()?,
            revision: git_revision(&root),
            root,
            package,
            tag,
            certificates,
        })
    }

    /// Writes the archive of connector `name` from its release binary.
    fn package(&self, name: &str) -> Result<Built> {
        let crate_name = connectors::crate_name(name);
        let binary = self.release_dir.join(&crate_name);
        let reference = format!("{REGISTRY}/{crate_name}:{}", self.tag);
        let label = |key: &str, value: String| (format!("org.opencontainers.image.{key}"), value);
        let labels = vec![
            label("title", crate_name.clone()),
            label(
                "description",
                connectors::crate_description(&self.root, &crate_name).unwrap_or_default(),
            ),
            label("source", self.package.repository.clone()),
            label("version", self.package.version.clone()),
            label("revision", self.revision.clone()),
            label("licenses", self.package.license.clone()),
            label("created", oci::rfc3339(self.epoch)),
        ];
        let config = image_config(&crate_name, labels);
        let rootfs = tar::write(
            &rootfs(&binary, &crate_name, &self.certificates)?,
            self.epoch,
        )?;
        let image = oci::image_archive(rootfs, &config, &reference, self.epoch)?;
        fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create {}", self.out.display()))?;
        let path = self.out.join(format!("{crate_name}-{}.oci.tar", self.tag));
        let partial = path.with_extension("tar.partial");
        fs::write(&partial, &image.bytes)
            .and_then(|()| fs::rename(&partial, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Built {
            crate_name,
            reference,
            path,
            image,
        })
    }
}

/// A tag as registries take it: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !ok {
        bail!("`{tag}` is not an image tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128 characters)");
    }
    Ok(())
}

/// `git rev-parse HEAD`, or `unknown` outside a git checkout.
fn git_revision(root: &Path) -> String {
    host::output(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(root),
    )
    .ok()
    .filter(|out| out.status.success())
    .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    .filter(|rev| !rev.is_empty())
    .unwrap_or_else(|| "unknown".to_owned())
}

/// The image config of a connector.
fn image_config(crate_name: &str, labels: Vec<(String, String)>) -> ImageConfig {
    ImageConfig {
        user: USER.to_string(),
        entrypoint: vec![format!("/{BIN_DIR}/{crate_name}")],
        env: vec![
            "PATH=/usr/local/bin".to_owned(),
            format!("SSL_CERT_FILE={CA_CERTIFICATES}"),
            format!("CONNECTOR_STATE_DIR=/{HOME}/state"),
        ],
        working_dir: format!("/{HOME}"),
        exposed_ports: vec!["8000/tcp".to_owned(), "9102/tcp".to_owned()],
        labels,
    }
}

/// The root filesystem of an image running `binary`.
pub fn rootfs(binary: &Path, crate_name: &str, certificates: &[u8]) -> Result<Vec<Entry>> {
    let program = fs::read(binary)
        .with_context(|| format!("cannot read {} (was it built?)", binary.display()))?;
    let mut entries = vec![
        Entry::file(format!("{BIN_DIR}/{crate_name}"), 0o755, program),
        Entry::file(
            "etc/passwd",
            0o644,
            format!("root:x:0:0:root:/root:/sbin/nologin\nkps:x:{USER}:{USER}:kps connector:/{HOME}:/sbin/nologin\n")
                .into_bytes(),
        ),
        Entry::file(
            "etc/group",
            0o644,
            format!("root:x:0:\nkps:x:{USER}:\n").into_bytes(),
        ),
        Entry::file("etc/nsswitch.conf", 0o644, b"hosts: files dns\n".to_vec()),
        Entry::file(
            CA_CERTIFICATES.trim_start_matches('/'),
            0o644,
            certificates.to_vec(),
        ),
        Entry::dir("tmp", 0o1777),
        Entry::dir(HOME, 0o755).owned_by(USER, USER),
    ];
    for library in linked_libraries(binary)? {
        let contents =
            fs::read(&library).with_context(|| format!("cannot read {}", library.display()))?;
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(&library)?.permissions().mode() & 0o777
        };
        let path = library.to_string_lossy().trim_start_matches('/').to_owned();
        entries.push(Entry::file(path, mode, contents));
    }
    tar::add_parents(&mut entries);
    Ok(entries)
}

/// The shared libraries `binary` links, the dynamic loader included (none for a static build).
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = host::output(Command::new("ldd").arg(binary))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if format!("{text}{errors}").contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("`ldd {}` failed: {}", binary.display(), errors.trim());
    }
    parse_ldd(&text)
}

/// The library paths in `ldd` output.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("statically linked") {
            continue;
        }
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                if target.starts_with("not found") {
                    bail!("the binary links {}, which is not found", name.trim());
                }
                target
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or_default();
        // linux-vdso.so.1 and friends live in the kernel: no path.
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    libraries.sort();
    libraries.dedup();
    Ok(libraries)
}

/// Hands `archive` to `docker load` or `podman load`, whichever answers.
fn load(archive: &Path, reference: &str) -> Result<()> {
    let mut problems = Vec::new();
    for engine in ["docker", "podman"] {
        if host::which(engine).is_none() {
            continue;
        }
        let info = host::output(Command::new(engine).arg("info"))?;
        if info.status.success() {
            host::run(Command::new(engine).arg("load").arg("-i").arg(archive))?;
            eprintln!("loaded {reference} into {engine}");
            return Ok(());
        }
        let reason = String::from_utf8_lossy(&info.stderr);
        let reason = reason
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no answer");
        problems.push(format!(
            "`{engine}` is installed but its engine does not answer (`{engine} info`: {})",
            reason.trim()
        ));
    }
    if problems.is_empty() {
        problems.push("neither docker nor podman is installed".to_owned());
    }
    bail!(
        "cannot --load {}: {}; the archive is ready: on a machine with an engine run \
         `docker load -i {0}` or `podman load -i {0}`, or `skopeo copy oci-archive:{0} docker-daemon:{reference}`",
        archive.display(),
        problems.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f27)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f27)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f27)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        let err = parse_ldd("\tlibfoo.so.1 => not found\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn tags_are_checked() {
        for ok in ["0.1.0", "latest", "v1_2-rc.1"] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_config_runs_as_the_user_with_the_ports() {
        let config = image_config("kps-connector-x", Vec::new());
        assert_eq!(config.user, "9999");
        assert_eq!(config.entrypoint, ["/usr/local/bin/kps-connector-x"]);
        assert_eq!(config.exposed_ports, ["8000/tcp", "9102/tcp"]);
    }

    /// The revision label the first build recorded.
    fn first_revision(built: &Built) -> String {
        let text = String::from_utf8_lossy(&built.image.bytes);
        let key = "\"org.opencontainers.image.revision\":\"";
        let start = text.find(key).unwrap() + key.len();
        text[start..start + text[start..].find('"').unwrap()].to_owned()
    }

    /// The issue's "must show": the file connector's archive is a valid OCI layout (every
    /// blob's digest and size), its root filesystem runs `--help` as user 9999 in a chroot,
    /// and two builds give the same digest. Builds the release binary (slow the first time).
    #[test]
    fn the_file_image_is_a_valid_layout_runs_as_9999_and_is_reproducible() {
        let ctx = Ctx::detect().unwrap();
        let dir = ctx
            .paths
            .xtask_dir
            .join(format!("test-images-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let options = Options {
            connectors: vec!["file".into()],
            tag: Some("test".into()),
            out: Some(dir.join("first")),
            ..Options::default()
        };
        // Compiled once and packed twice from the same inputs (a commit or a rebuild in between
        // would change the inputs, so `build` is not simply called twice).
        let first = build(&ctx, &options).unwrap();
        let packing = Packing::new(&ctx, &options).unwrap();
        let second = Packing {
            out: dir.join("second"),
            revision: first_revision(&first[0]),
            ..packing
        }
        .package("file")
        .unwrap();
        let second = [second];
        let (first, second) = (&first[0], &second[0]);
        assert_eq!(first.image.manifest_digest, second.image.manifest_digest);
        assert_eq!(
            fs::read(&first.path).unwrap(),
            fs::read(&second.path).unwrap()
        );
        assert!(first.path.ends_with("kps-connector-file-test.oci.tar"));
        assert!(
            first.image.compressed_size < 25_000_000,
            "{} bytes compressed",
            first.image.compressed_size
        );

        let layout = oci::verify_layout(&first.path, &dir.join("layout")).unwrap();
        assert_eq!(layout.manifest_digest, first.image.manifest_digest);
        assert_eq!(
            layout.reference,
            "ghcr.io/kps-connectors/kps-connector-file:test"
        );
        let config = layout.config.get("config").unwrap();
        assert_eq!(config.get("User").and_then(|u| u.as_str()), Some("9999"));
        assert_eq!(
            config.get("Entrypoint").map(|e| e.compact()).as_deref(),
            Some(r#"["/usr/local/bin/kps-connector-file"]"#)
        );
        assert_eq!(
            config.get("ExposedPorts").map(|e| e.compact()).as_deref(),
            Some(r#"{"8000/tcp":{},"9102/tcp":{}}"#)
        );
        let labels = config.get("Labels").unwrap();
        for label in ["source", "version", "revision"] {
            let key = format!("org.opencontainers.image.{label}");
            let value = labels
                .get(&key)
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            assert!(!value.is_empty(), "{key} is empty");
        }

        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).unwrap();
        host::run(
            Command::new("tar")
                .arg("-xzf")
                .arg(&layout.layers[0])
                .arg("-C")
                .arg(&rootfs),
        )
        .unwrap();
        assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());
        let passwd = fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
        assert!(passwd.contains(":9999:9999:"), "{passwd}");
        let rootfs_arg = rootfs.to_string_lossy().into_owned();
        let run_as_9999 = |args: &[&str]| {
            let mut argv = vec![
                "chroot",
                "--userspec=9999:9999",
                rootfs_arg.as_str(),
                "/usr/local/bin/kps-connector-file",
            ];
            argv.extend_from_slice(args);
            host::output(&mut ctx.host.privileged(&argv, &[])).unwrap()
        };
        let help = run_as_9999(&["--help"]);
        let stdout = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.status.success(),
            "{help:?}: {}",
            String::from_utf8_lossy(&help.stderr)
        );
        assert!(stdout.contains("--connector-id"), "{stdout}");
        // As 9999 it also prints its class (nothing it reads is root-only); 9999 owns its home.
        let class = run_as_9999(&["--print-class"]);
        assert!(class.status.success(), "{class:?}");
        let owner = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(rootfs.join(HOME)).unwrap().uid()
        };
        assert_eq!(owner, USER);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! OCI image archives made without a container engine: one gzip layer, the image config, the
//! manifest and an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/...`) in a tar
//! file, plus Docker's `manifest.json` so older `docker load` reads it too.
//!
//! Reproducible: the layer is a [`tar`](crate::tar) with sorted entries and one fixed time,
//! compressed with `gzip -n -9` (no name, no time); the JSON documents are compact with a fixed
//! key order; the dates are `SOURCE_DATE_EPOCH` (or 0). Digests come from `sha256sum`.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::host;
use crate::json::Json;
use crate::tar::{self, Entry};

/// The media type of the image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of the image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The media type of a gzip layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The media type of the image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// What goes in the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The user (`uid` or `uid:gid`) the container runs as.
    pub user: String,
    /// The entrypoint.
    pub entrypoint: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// The working directory.
    pub working_dir: String,
    /// Exposed ports, e.g. `8000/tcp`.
    pub exposed_ports: Vec<String>,
    /// Labels, also the manifest's annotations.
    pub labels: Vec<(String, String)>,
}

/// A built image archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageArchive {
    /// The archive (a tar holding the OCI image layout).
    pub bytes: Vec<u8>,
    /// The manifest digest, `sha256:...`: the image's identity.
    pub manifest_digest: String,
    /// The compressed size: the layer, the config and the manifest, in bytes.
    pub compressed_size: u64,
    /// The uncompressed size of the root filesystem tar, in bytes.
    pub layer_size: u64,
}

/// A blob in the layout.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Result<Blob> {
        Ok(Blob {
            digest: sha256(&bytes)?,
            bytes,
        })
    }

    fn descriptor(&self, media_type: &str) -> Json {
        Json::obj([
            ("mediaType", Json::str(media_type)),
            ("digest", Json::str(&self.digest)),
            ("size", Json::num(self.bytes.len())),
        ])
    }
}

/// `sha256:<hex>` of `bytes`, by `sha256sum`.
pub fn sha256(bytes: &[u8]) -> Result<String> {
    let out = host::pipe(&mut Command::new("sha256sum"), bytes)?;
    let text = String::from_utf8_lossy(&out);
    match text.split_whitespace().next() {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(format!("sha256:{hex}"))
        }
        _ => bail!("unexpected output of sha256sum: {text}"),
    }
}

/// `bytes` compressed by `gzip -n -9` (reproducible: no file name, no time stamp).
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    host::pipe(Command::new("gzip").args(["-n", "-9", "-c"]), bytes)
        .context("gzip is needed to compress the image layer")
}

/// The image archive of a root filesystem (`rootfs`, a tar) with `config`, named `reference`
/// (`registry/repository:tag`), dated `epoch` (seconds).
pub fn image_archive(
    rootfs: Vec<u8>,
    config: &ImageConfig,
    reference: &str,
    epoch: u64,
) -> Result<ImageArchive> {
    let Some((_, tag)) = reference
        .rsplit_once(':')
        .filter(|(repo, _)| !repo.is_empty())
    else {
        bail!("`{reference}` is not repository:tag");
    };
    let created = rfc3339(epoch);
    let diff_id = sha256(&rootfs)?;
    let layer_size = rootfs.len() as u64;
    let layer = Blob::new(gzip(&rootfs)?)?;
    drop(rootfs);

    let labels = Json::obj(config.labels.iter().map(|(k, v)| (k.clone(), Json::str(v))));
    let image_config = Json::obj([
        ("created", Json::str(&created)),
        ("architecture", Json::str(oci_architecture())),
        ("os", Json::str("linux")),
        (
            "config",
            Json::obj([
                ("User", Json::str(&config.user)),
                (
                    "ExposedPorts",
                    Json::obj(
                        config
                            .exposed_ports
                            .iter()
                            .map(|p| (p.clone(), Json::obj::<String>([]))),
                    ),
                ),
                (
                    "Env",
                    Json::Array(config.env.iter().map(Json::str).collect()),
                ),
                (
                    "Entrypoint",
                    Json::Array(config.entrypoint.iter().map(Json::str).collect()),
                ),
                ("WorkingDir", Json::str(&config.working_dir)),
                ("Labels", labels.clone()),
            ]),
        ),
        (
            "rootfs",
            Json::obj([
                ("type", Json::str("layers")),
                ("diff_ids", Json::Array(vec![Json::str(&diff_id)])),
            ]),
        ),
        (
            "history",
            Json::Array(vec![Json::obj([
                ("created", Json::str(&created)),
                ("created_by", Json::str("cargo xtask build-images")),
            ])]),
        ),
    ]);
    let config_blob = Blob::new(image_config.compact().into_bytes())?;
    let manifest = Json::obj([
        ("schemaVersion", Json::num(2)),
        ("mediaType", Json::str(MANIFEST_MEDIA_TYPE)),
        ("config", config_blob.descriptor(CONFIG_MEDIA_TYPE)),
        (
            "layers",
            Json::Array(vec![layer.descriptor(LAYER_MEDIA_TYPE)]),
        ),
        ("annotations", labels),
    ]);
    let manifest_blob = Blob::new(manifest.compact().into_bytes())?;
    let mut descriptor = manifest_blob.descriptor(MANIFEST_MEDIA_TYPE);
    if let Json::Object(fields) = &mut descriptor {
        fields.push((
            "annotations".into(),
            Json::obj([
                ("io.containerd.image.name", Json::str(reference)),
                ("org.opencontainers.image.ref.name", Json::str(tag)),
            ]),
        ));
    }
    let index = Json::obj([
        ("schemaVersion", Json::num(2)),
        ("mediaType", Json::str(INDEX_MEDIA_TYPE)),
        ("manifests", Json::Array(vec![descriptor])),
    ]);
    let blob_path = |blob: &Blob| format!("blobs/{}", blob.digest.replacen(':', "/", 1));
    // Docker's own format, read by `docker load` before Docker 25.
    let docker_manifest = Json::Array(vec![Json::obj([
        ("Config", Json::str(blob_path(&config_blob))),
        ("RepoTags", Json::Array(vec![Json::str(reference)])),
        ("Layers", Json::Array(vec![Json::str(blob_path(&layer))])),
    ])]);

    let compressed_size =
        (layer.bytes.len() + config_blob.bytes.len() + manifest_blob.bytes.len()) as u64;
    let manifest_digest = manifest_blob.digest.clone();
    let mut entries = vec![
        Entry::file(
            "oci-layout",
            0o644,
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        Entry::file("index.json", 0o644, index.compact().into_bytes()),
        Entry::file(
            "manifest.json",
            0o644,
            docker_manifest.compact().into_bytes(),
        ),
    ];
    for blob in [layer, config_blob, manifest_blob] {
        entries.push(Entry::file(blob_path(&blob), 0o644, blob.bytes));
    }
    tar::add_parents(&mut entries);
    Ok(ImageArchive {
        bytes: tar::write(&entries, epoch)?,
        manifest_digest,
        compressed_size,
        layer_size,
    })
}

/// The OCI name of this machine's architecture.
pub fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `epoch` (seconds since 1970, UTC) as RFC 3339, e.g. `1970-01-01T00:00:00Z`.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `SOURCE_DATE_EPOCH` when set (and a number), else 0.
pub fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{text}` is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

/// What [`verify_layout`] found in an archive.
#[cfg(test)]
#[derive(Debug)]
pub struct VerifiedLayout {
    /// The manifest's digest (from index.json).
    pub manifest_digest: String,
    /// The image name (`io.containerd.image.name`).
    pub reference: String,
    /// The image config.
    pub config: Json,
    /// The layer blobs' paths in the unpacked layout, in order.
    pub layers: Vec<std::path::PathBuf>,
}

/// Unpacks `archive` into `into` with the system's `tar` and checks it is an OCI image layout:
/// `oci-layout`, `index.json`, and every blob the index reaches (manifest, config, layers)
/// present with the digest and size its descriptor names.
#[cfg(test)]
pub fn verify_layout(archive: &std::path::Path, into: &std::path::Path) -> Result<VerifiedLayout> {
    use std::fs;

    fs::create_dir_all(into)?;
    host::run(
        Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(into),
    )?;
    let layout = Json::parse(&fs::read_to_string(into.join("oci-layout"))?)?;
    if layout.get("imageLayoutVersion") != Some(&Json::str("1.0.0")) {
        bail!("oci-layout: {}", layout.compact());
    }
    let read_blob =
        |descriptor: &Json, media_type: &str| -> Result<(Vec<u8>, std::path::PathBuf)> {
            let field = |name: &str| descriptor.get(name).cloned().unwrap_or(Json::Null);
            if field("mediaType") != Json::str(media_type) {
                bail!("expected {media_type} in {}", descriptor.compact());
            }
            let digest = field("digest").as_str().unwrap_or_default().to_owned();
            let Some(hex) = digest.strip_prefix("sha256:") else {
                bail!("not a sha256 digest: {}", descriptor.compact());
            };
            let path = into.join("blobs/sha256").join(hex);
            let bytes = fs::read(&path).with_context(|| format!("blob {digest} is missing"))?;
            if field("size").as_f64() != Some(bytes.len() as f64) {
                bail!(
                    "blob {digest}: size {} but the descriptor says {}",
                    bytes.len(),
                    field("size").compact()
                );
            }
            if sha256(&bytes)? != digest {
                bail!("blob {digest}: its contents do not have that digest");
            }
            Ok((bytes, path))
        };
    let index = Json::parse(&fs::read_to_string(into.join("index.json"))?)?;
    if index.get("schemaVersion") != Some(&Json::num(2)) {
        bail!("index.json: schemaVersion is not 2");
    }
    let Some(Json::Array(manifests)) = index.get("manifests") else {
        bail!("index.json has no manifests");
    };
    let [descriptor] = manifests.as_slice() else {
        bail!(
            "index.json should list one manifest, not {}",
            manifests.len()
        );
    };
    let (manifest, _) = read_blob(descriptor, MANIFEST_MEDIA_TYPE)?;
    let manifest = Json::parse(std::str::from_utf8(&manifest)?)?;
    let (config, _) = read_blob(
        manifest
            .get("config")
            .context("the manifest has no config")?,
        CONFIG_MEDIA_TYPE,
    )?;
    let config = Json::parse(std::str::from_utf8(&config)?)?;
    let Some(Json::Array(layers)) = manifest.get("layers") else {
        bail!("the manifest has no layers");
    };
    let mut paths = Vec::new();
    let mut diff_ids = Vec::new();
    for layer in layers {
        let (bytes, path) = read_blob(layer, LAYER_MEDIA_TYPE)?;
        let tar = host::pipe(Command::new("gzip").args(["-d", "-c"]), &bytes)?;
        diff_ids.push(Json::str(sha256(&tar)?));
        paths.push(path);
    }
    let expected = config.get("rootfs").and_then(|r| r.get("diff_ids"));
    if expected != Some(&Json::Array(diff_ids)) {
        bail!("the config's rootfs.diff_ids do not match the layers");
    }
    let digest = descriptor
        .get("digest")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let reference = descriptor
        .get("annotations")
        .and_then(|a| a.get("io.containerd.image.name"))
        .and_then(Json::as_str)
        .unwrap_or_default();
    Ok(VerifiedLayout {
        manifest_digest: digest.to_owned(),
        reference: reference.to_owned(),
        config,
        layers: paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn sha256_matches_the_known_value() {
        assert_eq!(
            sha256(b"abc").unwrap(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn gzip_is_reproducible_and_round_trips() {
        let data = b"hello hello hello hello".repeat(100);
        let once = gzip(&data).unwrap();
        assert_eq!(once, gzip(&data).unwrap());
        assert!(once.len() < data.len());
        let back = host::pipe(Command::new("gzip").args(["-d", "-c"]), &once).unwrap();
        assert_eq!(back, data);
    }

    fn config() -> ImageConfig {
        ImageConfig {
            user: "9999".into(),
            entrypoint: vec!["/app".into()],
            env: vec!["A=b".into()],
            working_dir: "/".into(),
            exposed_ports: vec!["8000/tcp".into()],
            labels: vec![("org.opencontainers.image.version".into(), "1.0".into())],
        }
    }

    #[test]
    fn the_archive_is_an_oci_layout_with_checked_digests() {
        let rootfs = tar::write(&[Entry::file("app", 0o755, b"binary".to_vec())], 0).unwrap();
        let image = image_archive(rootfs.clone(), &config(), "r.example/app:1.0", 0).unwrap();
        let again = image_archive(rootfs, &config(), "r.example/app:1.0", 0).unwrap();
        assert_eq!(image, again, "reproducible");

        let dir = std::env::temp_dir().join(format!("xtask-oci-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("image.oci.tar");
        std::fs::write(&archive, &image.bytes).unwrap();
        let layout = verify_layout(&archive, &dir.join("layout")).unwrap();
        assert_eq!(layout.manifest_digest, image.manifest_digest);
        assert_eq!(layout.reference, "r.example/app:1.0");
        assert_eq!(
            layout.config.get("config").and_then(|c| c.get("User")),
            Some(&Json::str("9999"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_reference_needs_a_tag() {
        assert!(image_archive(Vec::new(), &config(), "no-tag", 0).is_err());
    }
}

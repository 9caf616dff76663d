//! `cargo xtask deploy [--check]`: the generated, checked-in `deploy/` folder.
//!
//! For every connector of [`connectors::DEPLOYED`]: `deploy/<name>/connector_class.json` and
//! `kubernetes.yaml`, printed by the connector binary itself (`--print-class`,
//! `--print-manifests`: the schemas come from its Rust types, so they cannot drift), and the
//! sample documents `streams/<stream>.json` (what `kpsctl apply -f` reads, in the platform's
//! stream document shape) and `config.json` (the platform's config document). Every sample is
//! validated against the class's schemas ([`crate::schema`]) before anything is written, and the
//! table's broken sample must be refused. `--check` writes nothing and fails when a checked-in
//! file differs, is missing, or is stale.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::connectors::{self, DEPLOYED, Deployed};
use crate::host;
use crate::json::Json;
use crate::paths::Paths;
use crate::schema;

/// The instance id the samples name.
fn instance_id(name: &str) -> String {
    format!("{name}-1")
}

/// The service domain the samples name: a placeholder.
const SERVICE_DOMAIN: &str = "<service-domain-id>";

/// The keys a connector class must have.
const CLASS_KEYS: &[&str] = &[
    "name",
    "description",
    "connectorVersion",
    "minSvcDomainVersion",
    "type",
    "staticParameterSchema",
    "configParameterSchema",
    "streamParameterSchema",
    "yamlData",
];

/// Writes `deploy/`, or with `check` compares it.
pub fn run(paths: &Paths, check: bool) -> Result<()> {
    let files = generate(paths)?;
    if check {
        let problems = compare(&paths.deploy_dir(), &files)?;
        if !problems.is_empty() {
            bail!(
                "deploy/ is not what xtask generates:\n  {}\nrun `cargo xtask deploy` and commit the result",
                problems.join("\n  ")
            );
        }
        eprintln!("deploy/ is up to date ({} files)", files.len());
        return Ok(());
    }
    write(&paths.deploy_dir(), &files)
}

/// Every file of `deploy/`, by path relative to it.
pub fn generate(paths: &Paths) -> Result<BTreeMap<PathBuf, String>> {
    build_binaries(paths)?;
    let mut files = BTreeMap::new();
    for connector in DEPLOYED {
        let binary = paths.binary("debug", &connectors::crate_name(connector.name));
        let class_text = print(&binary, "--print-class")?;
        let manifests = print(&binary, "--print-manifests")?;
        let class = Json::parse(&class_text)
            .with_context(|| format!("{} --print-class: not JSON", binary.display()))?;
        check_class(&class)?;
        let samples = samples(connector)?;
        check_samples(connector, &class, &samples)?;

        let dir = PathBuf::from(connector.name);
        files.insert(dir.join("connector_class.json"), class_text);
        files.insert(dir.join("kubernetes.yaml"), manifests);
        for (path, document) in samples {
            files.insert(dir.join(path), document.pretty());
        }
    }
    files.insert(PathBuf::from("README.md"), readme());
    Ok(files)
}

/// Builds the debug binaries of the deployed connectors (one cargo invocation, always the same
/// set, so its feature resolution is reused).
fn build_binaries(paths: &Paths) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.arg("build").current_dir(&paths.root);
    for connector in DEPLOYED {
        build.args(["-p", &connectors::crate_name(connector.name)]);
    }
    host::run(&mut build)
}

/// Runs `binary flag` and returns what it printed.
fn print(binary: &Path, flag: &str) -> Result<String> {
    let out = host::output(Command::new(binary).arg(flag))?;
    if !out.status.success() {
        bail!(
            "`{} {flag}` failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{} {flag}`: not UTF-8", binary.display()))
}

/// Checks the class has the platform's fields.
pub fn check_class(class: &Json) -> Result<()> {
    let Json::Object(fields) = class else {
        bail!("the connector class is not a JSON object");
    };
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    for key in CLASS_KEYS {
        if !keys.contains(key) {
            bail!("the connector class has no `{key}`");
        }
    }
    for key in [
        "staticParameterSchema",
        "configParameterSchema",
        "streamParameterSchema",
    ] {
        if class.get(key).and_then(|s| s.get("type")) != Some(&Json::str("object")) {
            bail!("the class's {key} is not an object schema");
        }
    }
    match class.get("type").and_then(Json::as_str) {
        Some("INGRESS" | "EGRESS" | "BIDIRECTIONAL") => Ok(()),
        other => bail!("the class's type is {other:?}"),
    }
}

/// The sample documents of a connector: `streams/<name>.json` and `config.json`.
pub fn samples(connector: &Deployed) -> Result<Vec<(PathBuf, Json)>> {
    let name = connector.name;
    let mut documents = Vec::new();
    for stream in connector.streams {
        let values = Json::parse(stream.stream)
            .with_context(|| format!("the sample stream {} of {name}", stream.name))?;
        let document = Json::obj([
            ("name", Json::str(stream.name)),
            ("connectorInstanceID", Json::str(instance_id(name))),
            (
                "serviceDomainIds",
                Json::Array(vec![Json::str(SERVICE_DOMAIN)]),
            ),
            ("direction", Json::str(stream.direction)),
            ("transportChannel", Json::str(stream.channel)),
            (
                "labels",
                Json::Array(vec![Json::obj([
                    ("id", Json::str("<category-id>")),
                    ("value", Json::str(name)),
                ])]),
            ),
            ("stream", values),
        ]);
        documents.push((
            PathBuf::from("streams").join(format!("{}.json", stream.name)),
            document,
        ));
    }
    let config =
        Json::parse(connector.config).with_context(|| format!("the sample config of {name}"))?;
    documents.push((
        PathBuf::from("config.json"),
        Json::obj([
            ("name", Json::str(format!("{name}-config"))),
            (
                "description",
                Json::str(format!("dynamic config of the {name} connector instance")),
            ),
            ("connectorInstanceID", Json::str(instance_id(name))),
            (
                "serviceDomainIds",
                Json::Array(vec![Json::str(SERVICE_DOMAIN)]),
            ),
            ("config", config),
        ]),
    ));
    Ok(documents)
}

/// Checks every sample against the class's schemas, and that the broken sample is refused.
pub fn check_samples(
    connector: &Deployed,
    class: &Json,
    samples: &[(PathBuf, Json)],
) -> Result<()> {
    let name = connector.name;
    let stream_schema = class
        .get("streamParameterSchema")
        .context("no streamParameterSchema")?;
    let config_schema = class
        .get("configParameterSchema")
        .context("no configParameterSchema")?;
    let mut problems = Vec::new();
    for (path, document) in samples {
        let (schema, values) = match document.get("stream") {
            Some(values) => (stream_schema, values),
            None => (config_schema, document.get("config").unwrap_or(&Json::Null)),
        };
        for error in schema::validate(schema, values) {
            problems.push(format!("deploy/{name}/{}: {error}", path.display()));
        }
    }
    let broken = Json::parse(connector.broken)?;
    if schema::validate(stream_schema, &broken).is_empty() {
        problems.push(format!(
            "the broken sample of {name} ({}) is accepted by its stream schema",
            connector.broken
        ));
    }
    if !problems.is_empty() {
        bail!(
            "the samples do not fit the class:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// What differs between `dir` and `files`: changed, missing and stale files.
pub fn compare(dir: &Path, files: &BTreeMap<PathBuf, String>) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (path, text) in files {
        match fs::read_to_string(dir.join(path)) {
            Ok(found) if found == *text => {}
            Ok(_) => problems.push(format!("deploy/{} differs", path.display())),
            Err(_) => problems.push(format!("deploy/{} is missing", path.display())),
        }
    }
    for path in list_files(dir)? {
        if !files.contains_key(&path) {
            problems.push(format!(
                "deploy/{} is not generated (stale?)",
                path.display()
            ));
        }
    }
    Ok(problems)
}

/// Writes `files` under `dir`, removing files there that are not generated any more.
fn write(dir: &Path, files: &BTreeMap<PathBuf, String>) -> Result<()> {
    for path in list_files(dir)? {
        if !files.contains_key(&path) {
            let stale = dir.join(&path);
            fs::remove_file(&stale)
                .with_context(|| format!("cannot remove {}", stale.display()))?;
            eprintln!("removed deploy/{}", path.display());
        }
    }
    for (path, text) in files {
        let target = dir.join(path);
        if fs::read_to_string(&target).is_ok_and(|found| found == *text) {
            continue;
        }
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        eprintln!("wrote deploy/{}", path.display());
    }
    Ok(())
}

/// Every file under `dir`, relative to it, sorted (none when `dir` does not exist).
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = match fs::read_dir(dir.join(&relative)) {
            Ok(entries) => entries,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound && relative.as_os_str().is_empty() =>
            {
                return Ok(found);
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot list {}", dir.join(&relative).display()));
            }
        };
        for entry in entries {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `deploy/README.md`.
fn readme() -> String {
    let mut text = String::from(
        "# deploy/\n\
         \n\
         Generated by `cargo xtask deploy` (do not edit: `cargo xtask deploy --check`, run by the\n\
         tests, fails when these files differ from what the connectors print).\n\
         \n\
         | connector | files |\n\
         |---|---|\n",
    );
    for connector in DEPLOYED {
        let name = connector.name;
        let streams: Vec<String> = connector
            .streams
            .iter()
            .map(|s| format!("[`streams/{0}.json`]({name}/streams/{0}.json)", s.name))
            .collect();
        text.push_str(&format!(
            "| {name} | [`connector_class.json`]({name}/connector_class.json), \
             [`kubernetes.yaml`]({name}/kubernetes.yaml), [`config.json`]({name}/config.json), {} |\n",
            streams.join(", ")
        ));
    }
    text.push_str(
        "\n\
         - `connector_class.json`: the platform's connector class (register it with the platform);\n\
         \x20 printed by the connector binary (`--print-class`): its schemas come from the Rust types.\n\
         \x20 The image is `ghcr.io/kps-connectors/kps-connector-<name>:{{ .Parameters.image_tag }}`.\n\
         - `kubernetes.yaml`: the same Deployment and Service for a cluster without the platform\n\
         \x20 (`kubectl apply -f`); edit `CONNECTOR_INSTANCE_ID` and `NATS_BROKER`.\n\
         - `streams/*.json`: sample stream documents; `kpsctl --connector-id <name>-1 apply -f\n\
         \x20 deploy/<name>/streams/` declares them on a running connector.\n\
         - `config.json`: a sample config document; its `config` values are what\n\
         \x20 `kpsctl config set KEY=VALUE` merges.\n\
         \n\
         Images: `cargo xtask build-images` (see the README's \"Images and deployment\").\n",
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::SampleStream;

    fn class() -> Json {
        Json::parse(
            r#"{"name": "kps-connector-x", "description": "x", "connectorVersion": "0.1.0",
                "minSvcDomainVersion": "2.3.0", "type": "INGRESS",
                "staticParameterSchema": {"type": "object"},
                "configParameterSchema": {"type": "object", "properties": {"log_level": {"type": "string"}}},
                "streamParameterSchema": {"type": "object", "additionalProperties": false,
                    "required": ["url"], "properties": {"url": {"type": "string"}}},
                "yamlData": "kind: Deployment\n"}"#,
        )
        .unwrap()
    }

    const X: Deployed = Deployed {
        name: "x",
        streams: &[SampleStream {
            name: "x-in",
            direction: "INGRESS",
            channel: "kps.x.in",
            stream: r#"{"url": "tcp://127.0.0.1:1"}"#,
        }],
        config: r#"{"log_level": "debug"}"#,
        broken: r#"{"url": 1}"#,
    };

    #[test]
    fn samples_are_platform_documents_that_fit_the_class() {
        let samples = samples(&X).unwrap();
        let paths: Vec<String> = samples
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(paths, ["streams/x-in.json", "config.json"]);
        let stream = &samples[0].1;
        assert_eq!(stream.get("name"), Some(&Json::str("x-in")));
        assert_eq!(stream.get("direction"), Some(&Json::str("INGRESS")));
        assert_eq!(stream.get("transportChannel"), Some(&Json::str("kps.x.in")));
        assert_eq!(stream.get("connectorInstanceID"), Some(&Json::str("x-1")));
        assert_eq!(
            samples[1].1.get("config").map(Json::compact).as_deref(),
            Some(r#"{"log_level":"debug"}"#)
        );
        check_class(&class()).unwrap();
        check_samples(&X, &class(), &samples).unwrap();
    }

    #[test]
    fn a_sample_that_does_not_fit_or_a_broken_one_that_does_is_an_error() {
        const WRONG_STREAMS: &[SampleStream] = &[SampleStream {
            name: "x-in",
            direction: "INGRESS",
            channel: "kps.x.in",
            stream: r#"{"url": "tcp://127.0.0.1:1", "colour": "red"}"#,
        }];
        let wrong = Deployed {
            streams: WRONG_STREAMS,
            ..X
        };
        let err = check_samples(&wrong, &class(), &samples(&wrong).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("deploy/x/streams/x-in.json: /colour: unknown field"),
            "{err}"
        );
        let lenient = Deployed {
            broken: r#"{"url": "fine"}"#,
            ..X
        };
        let err = check_samples(&lenient, &class(), &samples(&lenient).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("broken sample of x"), "{err}");
        let mut incomplete = class();
        if let Json::Object(fields) = &mut incomplete {
            fields.retain(|(k, _)| k != "yamlData");
        }
        assert!(
            check_class(&incomplete)
                .unwrap_err()
                .to_string()
                .contains("yamlData")
        );
    }

    #[test]
    fn compare_finds_changed_missing_and_stale_files() {
        let dir = std::env::temp_dir().join(format!("xtask-deploy-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut files = BTreeMap::new();
        files.insert(PathBuf::from("a/one.json"), "1\n".to_owned());
        files.insert(PathBuf::from("a/streams/two.json"), "2\n".to_owned());
        write(&dir, &files).unwrap();
        assert!(compare(&dir, &files).unwrap().is_empty());
        fs::write(dir.join("a/one.json"), "changed").unwrap();
        fs::remove_file(dir.join("a/streams/two.json")).unwrap();
        fs::write(dir.join("a/old.json"), "old").unwrap();
        let problems = compare(&dir, &files).unwrap();
        assert_eq!(
            problems,
            [
                "deploy/a/one.json differs",
                "deploy/a/streams/two.json is missing",
                "deploy/a/old.json is not generated (stale?)"
            ]
        );
        write(&dir, &files).unwrap();
        assert!(
            compare(&dir, &files).unwrap().is_empty(),
            "write removes stale files"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The issue's "must show": the checked-in deploy/ is what xtask generates (builds the
    /// deployed connectors' debug binaries).
    #[test]
    fn deploy_is_up_to_date() {
        run(&Paths::detect(), true).unwrap();
    }

    /// The checked-in class documents are JSON with the platform's fields, their schemas accept
    /// the checked-in samples and refuse the broken one; and the connector itself (through
    /// `kpsctl apply`) accepts the sample streams and refuses the broken one.
    #[test]
    fn checked_in_classes_accept_the_samples_and_refuse_a_broken_one() {
        let paths = Paths::detect();
        for connector in DEPLOYED {
            let dir = paths.deploy_dir().join(connector.name);
            let class = Json::parse(&fs::read_to_string(dir.join("connector_class.json")).unwrap())
                .unwrap();
            check_class(&class).unwrap();
            let mut checked_in = Vec::new();
            for path in list_files(&dir).unwrap() {
                if path.extension().is_some_and(|e| e == "json")
                    && path != Path::new("connector_class.json")
                {
                    let document =
                        Json::parse(&fs::read_to_string(dir.join(&path)).unwrap()).unwrap();
                    checked_in.push((path, document));
                }
            }
            assert!(
                checked_in.len() > connector.streams.len(),
                "{}: {checked_in:?}",
                connector.name
            );
            check_samples(connector, &class, &checked_in).unwrap();
        }
    }

    /// The connector itself takes the samples: `kpsctl apply -f deploy/<name>/streams/` against
    /// the running connector binary is accepted, and a stream document holding the broken
    /// sample is refused with INVALID_ARGUMENT.
    #[test]
    fn kpsctl_applies_the_samples_to_the_running_connector() {
        let paths = Paths::detect();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "kps-connector-cli"])
            .current_dir(&paths.root);
        host::run(&mut build).unwrap();
        build_binaries(&paths).unwrap();
        let scratch = paths
            .xtask_dir
            .join(format!("test-deploy-{}", std::process::id()));
        fs::create_dir_all(&scratch).unwrap();
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        for connector in DEPLOYED {
            let (grpc, metrics) = (free_port(), free_port());
            let mut child =
                Command::new(paths.binary("debug", &connectors::crate_name(connector.name)))
                    .args(["--connector-id", &instance_id(connector.name)])
                    .args(["--listen", &format!("127.0.0.1:{grpc}")])
                    .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
                    .arg("--state-dir")
                    .arg(scratch.join("state"))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
            let kpsctl = |args: &[&str]| {
                let mut cmd = Command::new(paths.binary("debug", "kpsctl"));
                cmd.args(["--connector", &format!("127.0.0.1:{grpc}")])
                    .args(["--connector-id", &instance_id(connector.name)])
                    .args(args);
                host::output(&mut cmd).unwrap()
            };
            crate::probe::wait_up(
                connector.name,
                grpc,
                crate::probe::Probe::Tcp,
                std::time::Duration::from_secs(20),
            )
            .unwrap();
            let streams_dir = paths.deploy_dir().join(connector.name).join("streams");
            let applied = kpsctl(&["apply", "-f", &streams_dir.to_string_lossy()]);
            let listed = kpsctl(&["--json", "streams"]);
            let sample = connector.streams[0];
            let broken = scratch.join("broken.json");
            fs::write(
                &broken,
                format!(
                    r#"{{"name": "broken", "direction": "{}", "transportChannel": "kps.broken", "stream": {}}}"#,
                    sample.direction, connector.broken
                ),
            )
            .unwrap();
            let refused = kpsctl(&["apply", "-f", &broken.to_string_lossy()]);
            let _ = child.kill();
            let _ = child.wait();
            assert!(applied.status.success(), "{}: {applied:?}", connector.name);
            let listed = String::from_utf8_lossy(&listed.stdout);
            for stream in connector.streams {
                assert!(listed.contains(&format!("\"{}\"", stream.name)), "{listed}");
            }
            assert!(
                !refused.status.success(),
                "{}: the broken sample was applied",
                connector.name
            );
            let message = String::from_utf8_lossy(&refused.stderr);
            assert!(message.contains("InvalidArgument"), "{message}");
        }
        fs::remove_dir_all(&scratch).unwrap();
    }
}

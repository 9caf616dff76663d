//! `cargo xtask new-connector NAME --direction ingress|egress|bidirectional`: a new connector
//! crate, modelled on `crates/kps-connector-file`, that builds and passes the testkit's contract
//! suite as generated. Only the bodies of the source and the sink are left to write (they
//! answer `ConnectorError::fatal("not written yet: ...")` until then).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::host;

/// Which directions the new connector supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directions {
    /// A source only.
    Ingress,
    /// A sink only.
    Egress,
    /// Both.
    Bidirectional,
}

impl Directions {
    /// Parses `ingress`, `egress` or `bidirectional`.
    pub fn parse(text: &str) -> Result<Directions> {
        match text {
            "ingress" => Ok(Directions::Ingress),
            "egress" => Ok(Directions::Egress),
            "bidirectional" => Ok(Directions::Bidirectional),
            other => bail!("`{other}` is not a direction: ingress, egress or bidirectional"),
        }
    }

    fn ingress(self) -> bool {
        self != Directions::Egress
    }

    fn egress(self) -> bool {
        self != Directions::Ingress
    }
}

/// Checks a connector name: lowercase letters and digits, words joined by single `-`,
/// starting with a letter; not one of the workspace's own crates.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        bail!(
            "`{name}` is not a connector name: lowercase letters and digits, words joined by `-`, \
             starting with a letter (e.g. `opcua`, `modbus-tcp`)"
        );
    }
    if matches!(name, "core" | "cli") {
        bail!("`{name}` is taken by the workspace's own crate");
    }
    Ok(())
}

/// The names the generated code uses.
struct Names {
    /// `modbus-tcp`.
    name: String,
    /// `kps-connector-modbus-tcp`.
    crate_name: String,
    /// `kps_connector_modbus_tcp`.
    lib: String,
    /// `ModbusTcp`.
    camel: String,
}

impl Names {
    fn new(name: &str) -> Names {
        let camel = name
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        Names {
            name: name.to_owned(),
            crate_name: format!("kps-connector-{name}"),
            lib: format!("kps_connector_{}", name.replace('-', "_")),
            camel,
        }
    }

    fn fill(&self, template: &str) -> String {
        template
            .replace("__NAME__", &self.name)
            .replace("__CRATE__", &self.crate_name)
            .replace("__LIB__", &self.lib)
            .replace("__CAMEL__", &self.camel)
    }
}

/// Creates the crate under `root/crates/` and adds it to the workspace members; returns its
/// folder.
pub fn create(root: &Path, name: &str, directions: Directions) -> Result<PathBuf> {
    check_name(name)?;
    let names = Names::new(name);
    let dir = root.join("crates").join(&names.crate_name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let manifest = root.join("Cargo.toml");
    let workspace = fs::read_to_string(&manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let workspace = add_member(&workspace, &format!("crates/{}", names.crate_name))?;

    for (path, contents) in files(&names, directions) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&target, contents)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    fs::write(&manifest, workspace)
        .with_context(|| format!("cannot write {}", manifest.display()))?;
    // The templates are formatted for a short name; rustfmt makes any name's lines right.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut fmt = Command::new(cargo);
    fmt.args(["fmt", "-p", &names.crate_name]).current_dir(root);
    if !host::succeeds(&mut fmt) {
        eprintln!(
            "note: `{}` failed: format the new crate yourself",
            host::display(&fmt)
        );
    }
    Ok(dir)
}

/// Runs `new-connector`: creates the crate and says what comes next.
pub fn run(root: &Path, name: &str, directions: Directions) -> Result<()> {
    let dir = create(root, name, directions)?;
    let names = Names::new(name);
    let mut parts = Vec::new();
    if directions.ingress() {
        parts.push("src/source.rs (`next_batch`)");
    }
    if directions.egress() {
        parts.push("src/sink.rs (`write`)");
    }
    println!(
        "created {dir} and added it to the workspace members.\n\
         \n\
         next (CONTRIBUTING.md walks through each step):\n\
         \x20 1. cargo test -p {krate}        # builds and passes the contract suite already\n\
         \x20 2. write the bodies in {parts}; add your client library to\n\
         \x20    [workspace.dependencies] and to {krate}/Cargo.toml\n\
         \x20 3. give src/params.rs the stream parameters your system needs (doc comments become\n\
         \x20    the class's streamParameterSchema), and the README its parameters table\n\
         \x20 4. add the data suite to tests/conformance.rs, and the service your tests need to\n\
         \x20    `cargo xtask services up` (xtask/src/services/table.rs)\n\
         \x20 5. add a row to xtask/src/connectors.rs (DEPLOYED) and run `cargo xtask deploy`;\n\
         \x20    `cargo xtask build-images --connector {name}` builds its image\n\
         \x20 6. cargo xtask test",
        dir = dir.display(),
        krate = names.crate_name,
        parts = parts.join(" and "),
    );
    Ok(())
}

/// The root manifest with `member` added to `[workspace] members`, before the first member that
/// is not a connector (`kps-connector-cli`, `benches`, `xtask`), so connectors stay together.
pub fn add_member(manifest: &str, member: &str) -> Result<String> {
    let Some(start) = manifest.find("members = [") else {
        bail!("the root Cargo.toml has no `members = [` list");
    };
    let Some(length) = manifest[start..].find(']') else {
        bail!("the root Cargo.toml's members list is not closed");
    };
    let list = &manifest[start..start + length];
    if list.contains(&format!("\"{member}\"")) {
        bail!("{member} is already a workspace member");
    }
    let lines: Vec<&str> = list.lines().collect();
    let mut insert_at = None;
    let mut last_connector = None;
    for (index, line) in lines.iter().enumerate().skip(1) {
        let entry = line.trim().trim_end_matches(',').trim_matches('"');
        if entry.starts_with("crates/kps-connector-") && entry != "crates/kps-connector-cli" {
            last_connector = Some(index);
        } else if insert_at.is_none() && last_connector.is_some() && !entry.is_empty() {
            insert_at = Some(index);
        }
    }
    let at = last_connector
        .map(|last| last + 1)
        .or(insert_at)
        .unwrap_or(lines.len());
    let mut new_lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    if at == 0 || lines.len() == 1 {
        bail!("the root Cargo.toml's members list must hold one member per line");
    }
    new_lines.insert(at, format!("    \"{member}\","));
    let mut out = manifest[..start].to_owned();
    out.push_str(&new_lines.join("\n"));
    if list.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&manifest[start + length..]);
    Ok(out)
}

/// The generated files, by path inside the crate.
fn files(names: &Names, directions: Directions) -> Vec<(&'static str, String)> {
    let direction_list = match directions {
        Directions::Ingress => "Direction::Ingress",
        Directions::Egress => "Direction::Egress",
        Directions::Bidirectional => "Direction::Ingress, Direction::Egress",
    };
    let mut lib = names
        .fill(LIB_HEAD)
        .replace("__DIRECTIONS__", direction_list);
    let mut mods = String::from("mod params;\n");
    let mut uses = vec!["Connector", "ConnectorInfo", "ConnectorResult", "Direction"];
    if directions.egress() {
        mods.push_str("mod sink;\n");
        uses.push("Sink");
    }
    if directions.ingress() {
        mods.push_str("mod source;\n");
        uses.push("Source");
    }
    uses.extend(["StreamContext", "async_trait"]);
    lib = lib
        .replace("__MODS__", &mods)
        .replace("__USES__", &uses.join(", "));
    if directions.ingress() {
        lib.push_str(&names.fill(LIB_OPEN_SOURCE));
    }
    if directions.egress() {
        lib.push_str(&names.fill(LIB_OPEN_SINK));
    }
    lib.push_str("}\n");

    let what = match directions {
        Directions::Ingress => "reads records from",
        Directions::Egress => "writes records to",
        Directions::Bidirectional => "reads records from and writes records to",
    };
    let mut streams = String::new();
    if directions.ingress() {
        streams.push_str(&names.fill(TEST_INGRESS_STREAM));
    }
    if directions.egress() {
        streams.push_str(&names.fill(TEST_EGRESS_STREAM));
    }
    let unsupported = match directions {
        Directions::Ingress => "\n    .unsupported(Direction::Egress)",
        Directions::Egress => "\n    .unsupported(Direction::Ingress)",
        Directions::Bidirectional => "",
    };
    let test_uses = if unsupported.is_empty() {
        ""
    } else {
        "use kps_connector_core::Direction;\n"
    };
    let test = names
        .fill(CONFORMANCE)
        .replace("__STREAMS__", &streams)
        .replace("__UNSUPPORTED__", unsupported)
        .replace("__TEST_USES__", test_uses);
    let directions_text = match directions {
        Directions::Ingress => "ingress",
        Directions::Egress => "egress",
        Directions::Bidirectional => "ingress, egress",
    };

    let mut files = vec![
        (
            "Cargo.toml",
            names.fill(CARGO_TOML).replace("__WHAT__", what),
        ),
        (
            "README.md",
            names
                .fill(README)
                .replace("__WHAT__", what)
                .replace("__DIRECTIONS__", directions_text),
        ),
        ("src/lib.rs", lib.replace("__WHAT__", what)),
        ("src/params.rs", names.fill(PARAMS)),
        ("src/main.rs", names.fill(MAIN)),
        ("tests/conformance.rs", test),
    ];
    if directions.ingress() {
        files.push(("src/source.rs", names.fill(SOURCE)));
    }
    if directions.egress() {
        files.push(("src/sink.rs", names.fill(SINK)));
    }
    files
}

const CARGO_TOML: &str = r#"[package]
name = "__CRATE__"
description = "kps __NAME__ connector: __WHAT__ __NAME__"
version.workspace = true
edition.workspace = true
rust-version.workspace = true
license.workspace = true
repository.workspace = true

[dependencies]
kps-connector-core.workspace = true
schemars.workspace = true
serde.workspace = true

[dev-dependencies]
kps-connector-core = { workspace = true, features = ["testkit"] }
serde_json.workspace = true
tokio.workspace = true

[lints]
workspace = true
"#;

const README: &str = r#"# __CRATE__

The __NAME__ connector: __WHAT__ __NAME__.
Directions: __DIRECTIONS__.

Generated by `cargo xtask new-connector`; see CONTRIBUTING.md for the steps from here.

## Stream parameters

| parameter | type | default | |
|---|---|---|---|
| `url` | string | required | where __NAME__ is, e.g. `tcp://127.0.0.1:1234` |

## Delivery

Not written yet: say when a record read from the outside system is acknowledged to it (only
after the transport confirmed it), and when a write counts as confirmed.

## Tests

`cargo test -p __CRATE__` runs the testkit's contract suite
(`tests/conformance.rs`) against the connector in-process; it needs NATS
(`cargo xtask services up`). Add the data suite once the source and sink are written, with the
service your tests need in `cargo xtask services up`.
"#;

const LIB_HEAD: &str = r#"//! The __NAME__ connector: __WHAT__ __NAME__.

__MODS__
use kps_connector_core::{
    __USES__,
};

pub use params::__CAMEL__Params;

/// The __NAME__ connector.
#[derive(Debug, Clone, Default)]
pub struct __CAMEL__Connector;

#[async_trait]
impl Connector for __CAMEL__Connector {
    type Params = __CAMEL__Params;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "__NAME__",
            description: "__WHAT__ __NAME__",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[__DIRECTIONS__],
        }
    }

    fn validate(&self, direction: Direction, params: &__CAMEL__Params) -> ConnectorResult<()> {
        params.validate(direction)
    }
"#;

const LIB_OPEN_SOURCE: &str = r#"
    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &__CAMEL__Params,
    ) -> ConnectorResult<Box<dyn Source>> {
        Ok(Box::new(source::__CAMEL__Source::open(ctx, params).await?))
    }
"#;

const LIB_OPEN_SINK: &str = r#"
    async fn open_sink(
        &self,
        ctx: StreamContext,
        params: &__CAMEL__Params,
    ) -> ConnectorResult<Box<dyn Sink>> {
        Ok(Box::new(sink::__CAMEL__Sink::open(ctx, params).await?))
    }
"#;

const PARAMS: &str = r#"//! The stream parameters: their doc comments become the connector class's
//! `streamParameterSchema`.

use kps_connector_core::{ConnectorError, ConnectorResult, Direction};
use schemars::JsonSchema;
use serde::Deserialize;

/// One stream's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct __CAMEL__Params {
    /// Where __NAME__ is, e.g. `tcp://127.0.0.1:1234`.
    pub url: String,
}

impl __CAMEL__Params {
    /// Checks what the types cannot.
    pub fn validate(&self, _direction: Direction) -> ConnectorResult<()> {
        if self.url.trim().is_empty() {
            return Err(ConnectorError::invalid("url", "must not be empty"));
        }
        Ok(())
    }
}
"#;

const SOURCE: &str = r#"//! Ingress: read records from the outside system; the runtime acknowledges them after the
//! transport confirmed them.

use kps_connector_core::{
    ConnectorError, ConnectorResult, Source, SourceBatch, StreamContext, async_trait,
};

use crate::params::__CAMEL__Params;

/// Reads one stream's records from __NAME__.
pub struct __CAMEL__Source {
    ctx: StreamContext,
    url: String,
}

impl __CAMEL__Source {
    /// Connects to the outside system. Return `ConnectorError::retryable` when it is
    /// unreachable: the core retries with backoff.
    pub async fn open(ctx: StreamContext, params: &__CAMEL__Params) -> ConnectorResult<Self> {
        Ok(Self {
            ctx,
            url: params.url.clone(),
        })
    }
}

#[async_trait]
impl Source for __CAMEL__Source {
    /// Waits for at least one record, then returns up to `max_records` of those ready, with
    /// the `Acknowledge` that confirms them to the outside system (cancel-safe).
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        let _ = (&self.ctx, max_records);
        Err(ConnectorError::fatal(format!(
            "not written yet: reading records from {}",
            self.url
        )))
    }
}
"#;

const SINK: &str = r#"//! Egress: write records to the outside system; a write returns only after it confirmed them.

use kps_connector_core::{
    Bytes, ConnectorError, ConnectorResult, Sink, StreamContext, WriteOutcome, async_trait,
};

use crate::params::__CAMEL__Params;

/// Writes one stream's records to __NAME__.
pub struct __CAMEL__Sink {
    ctx: StreamContext,
    url: String,
}

impl __CAMEL__Sink {
    /// Connects to the outside system. Return `ConnectorError::retryable` when it is
    /// unreachable: the core retries with backoff.
    pub async fn open(ctx: StreamContext, params: &__CAMEL__Params) -> ConnectorResult<Self> {
        Ok(Self {
            ctx,
            url: params.url.clone(),
        })
    }
}

#[async_trait]
impl Sink for __CAMEL__Sink {
    /// Writes `records` in order and returns once the outside system confirmed them; a record
    /// refused for what it is goes in `WriteOutcome::reject`.
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        let _ = (&self.ctx, records);
        Err(ConnectorError::fatal(format!(
            "not written yet: writing records to {}",
            self.url
        )))
    }
}
"#;

const MAIN: &str = r#"//! `__CRATE__`: the __NAME__ connector's binary.

fn main() -> std::process::ExitCode {
    kps_connector_core::main(__LIB__::__CAMEL__Connector)
}
"#;

const TEST_INGRESS_STREAM: &str = r#"            StreamDecl::ingress(
                "in",
                unique_name("kps.__NAME__.in"),
                json!({"url": "tcp://127.0.0.1:1"}),
            ),
"#;

const TEST_EGRESS_STREAM: &str = r#"            StreamDecl::egress(
                "out",
                unique_name("kps.__NAME__.out"),
                json!({"url": "tcp://127.0.0.1:1"}),
            ),
"#;

const CONFORMANCE: &str = r#"//! The __NAME__ connector against the testkit's contract suite, over real gRPC and NATS.
//! Add the data suite (`DataSuite`) once the source and sink are written.

#![allow(clippy::unwrap_used)]

__TEST_USES__use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use __LIB__::__CAMEL__Connector;
use serde_json::json;

#[tokio::test]
async fn contract_suite_passes() {
    let connector = TestConnector::start(__CAMEL__Connector).await;
    let suite = ContractSuite::new(
        connector.endpoint(),
        connector.connector_id(),
        vec![
__STREAMS__        ],
    )
    .refuses(json!({}), "url")
    .refuses(json!({"url": ""}), "url")
    .refuses(json!({"url": "tcp://127.0.0.1:1", "colour": "red"}), "colour")__UNSUPPORTED__;
    suite.run().await.assert_passed();
    connector.shutdown().await;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Paths;

    #[test]
    fn names_are_checked() {
        for ok in ["opcua", "modbus-tcp", "s3", "x1-y2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Opcua", "1x", "a_b", "a--b", "a-", "-a", "core", "cli", "a.b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let names = Names::new("modbus-tcp");
        assert_eq!(names.camel, "ModbusTcp");
        assert_eq!(names.lib, "kps_connector_modbus_tcp");
        assert_eq!(names.crate_name, "kps-connector-modbus-tcp");
    }

    #[test]
    fn members_are_added_after_the_connectors() {
        let manifest = "[workspace]\nresolver = \"3\"\nmembers = [\n    \"crates/kps-connector-core\",\n    \"crates/kps-connector-file\",\n    \"crates/kps-connector-cli\",\n    \"xtask\",\n]\n\n[x]\n";
        let added = add_member(manifest, "crates/kps-connector-new").unwrap();
        assert_eq!(
            added,
            "[workspace]\nresolver = \"3\"\nmembers = [\n    \"crates/kps-connector-core\",\n    \"crates/kps-connector-file\",\n    \"crates/kps-connector-new\",\n    \"crates/kps-connector-cli\",\n    \"xtask\",\n]\n\n[x]\n"
        );
        let err = add_member(&added, "crates/kps-connector-new")
            .unwrap_err()
            .to_string();
        assert!(err.contains("already"), "{err}");
        assert!(add_member("[package]\n", "x").is_err());
        let only_core = "members = [\n    \"crates/kps-connector-core\",\n]\n";
        assert_eq!(
            add_member(only_core, "crates/kps-connector-new").unwrap(),
            "members = [\n    \"crates/kps-connector-core\",\n    \"crates/kps-connector-new\",\n]\n"
        );
    }

    #[test]
    fn the_generated_files_follow_the_directions() {
        let names = Names::new("demo");
        let paths = |d| -> Vec<&str> { files(&names, d).into_iter().map(|(p, _)| p).collect() };
        assert!(paths(Directions::Ingress).contains(&"src/source.rs"));
        assert!(!paths(Directions::Ingress).contains(&"src/sink.rs"));
        assert!(paths(Directions::Egress).contains(&"src/sink.rs"));
        assert!(!paths(Directions::Egress).contains(&"src/source.rs"));
        for (path, text) in files(&names, Directions::Bidirectional) {
            assert!(
                !text.contains("__"),
                "{path} has a placeholder left: {text}"
            );
        }
        let lib = &files(&names, Directions::Ingress)[2].1;
        assert!(lib.contains("directions: &[Direction::Ingress]"), "{lib}");
        assert!(!lib.contains("open_sink"), "{lib}");
        assert!(Directions::parse("sideways").is_err());
    }

    /// Copies what a connector crate needs of the workspace (the root manifest with only the
    /// core as member, the lock file, the proto and the core) into `to`.
    fn minimal_workspace(root: &Path, to: &Path) {
        let copy = |from: &Path, to: &Path| {
            host::run(Command::new("cp").arg("-r").arg(from).arg(to)).unwrap();
        };
        fs::create_dir_all(to.join("crates")).unwrap();
        copy(&root.join("proto"), to);
        copy(&root.join("crates/kps-connector-core"), &to.join("crates"));
        // The workspace manifest's `[patch.crates-io]` points into `vendor/`.
        if root.join("vendor").is_dir() {
            copy(&root.join("vendor"), to);
        }
        for file in ["Cargo.lock", "clippy.toml"] {
            if root.join(file).exists() {
                fs::copy(root.join(file), to.join(file)).unwrap();
            }
        }
        let manifest = fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let start = manifest.find("members = [").unwrap();
        let end = start + manifest[start..].find(']').unwrap();
        let only_core = format!(
            "{}members = [\n    \"crates/kps-connector-core\",\n{}",
            &manifest[..start],
            &manifest[end..]
        );
        fs::write(to.join("Cargo.toml"), only_core).unwrap();
    }

    /// The issue's "must show": a scaffolded connector compiles, is clippy-clean and passes its
    /// contract test as generated (in a copy of the workspace, sharing the target directory so
    /// the dependencies are not built again; nothing is left in the repository). Needs NATS.
    #[test]
    fn a_scaffolded_connector_builds_and_passes_its_contract_test() {
        let paths = Paths::detect();
        let scratch = paths
            .xtask_dir
            .join(format!("test-scaffold-{}", std::process::id()));
        let _ = fs::remove_dir_all(&scratch);
        minimal_workspace(&paths.root, &scratch);
        let dir = create(&scratch, "scaffold-demo", Directions::Bidirectional).unwrap();
        assert!(dir.join("src/sink.rs").is_file() && dir.join("src/source.rs").is_file());
        let manifest = fs::read_to_string(scratch.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("\"crates/kps-connector-scaffold-demo\","),
            "{manifest}"
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        // Captured, so the nested runs' `test result:` lines are not counted as this run's.
        let in_scratch = |args: &[&str]| {
            let mut cmd = Command::new(&cargo);
            cmd.args(args)
                .current_dir(&scratch)
                .env("CARGO_TARGET_DIR", &paths.target);
            let out = host::output(&mut cmd).unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (
                out.status.success(),
                format!("{}:\n{text}", host::display(&cmd)),
            )
        };
        let crate_name = "kps-connector-scaffold-demo";
        let checked = in_scratch(&[
            "clippy",
            "-p",
            crate_name,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        let formatted = in_scratch(&["fmt", "-p", crate_name, "--", "--check"]);
        let tested = in_scratch(&["test", "-p", crate_name]);
        let binary = paths.binary("debug", crate_name);
        let class = Command::new(&binary).arg("--print-class").output();
        fs::remove_dir_all(&scratch).unwrap();
        let _ = fs::remove_file(&binary);
        for (ok, output) in [&checked, &formatted, &tested] {
            assert!(*ok, "{output}");
        }
        assert!(
            tested.1.contains("test contract_suite_passes ... ok"),
            "{}",
            tested.1
        );
        let class = class.unwrap();
        assert!(class.status.success(), "{class:?}");
        let class = String::from_utf8_lossy(&class.stdout);
        assert!(class.contains("\"type\": \"BIDIRECTIONAL\""), "{class}");
    }
}

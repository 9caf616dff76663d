//! The connectors of the workspace as xtask sees them: every `crates/kps-connector-<name>` with a
//! binary (for `build-images`), and the table of those `deploy/` is generated for, with their
//! sample documents (for `deploy`).
//!
//! Adding a connector to `deploy/`: one more [`Deployed`] entry in [`DEPLOYED`], its samples taken
//! from its README's parameters table, then `cargo xtask deploy`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// A sample stream document of `deploy/<name>/streams/<file>.json`.
#[derive(Debug, Clone, Copy)]
pub struct SampleStream {
    /// The stream's name (its id) and the file's stem.
    pub name: &'static str,
    /// `INGRESS` or `EGRESS`.
    pub direction: &'static str,
    /// The NATS subject.
    pub channel: &'static str,
    /// The stream values, a JSON object.
    pub stream: &'static str,
}

/// A connector `deploy/` is generated for.
#[derive(Debug, Clone, Copy)]
pub struct Deployed {
    /// The connector's name: the crate is `kps-connector-<name>`.
    pub name: &'static str,
    /// Sample streams, one per direction at least.
    pub streams: &'static [SampleStream],
    /// Sample dynamic config values, a JSON object.
    pub config: &'static str,
    /// Stream values its schema must refuse (the tests check they are), a JSON object.
    pub broken: &'static str,
}

/// The connectors `deploy/` holds, in the order of the README.
pub const DEPLOYED: &[Deployed] = &[
    Deployed {
        name: "file",
        streams: &[
            SampleStream {
                name: "file-in",
                direction: "INGRESS",
                channel: "kps.file.in",
                stream: r#"{"path": "/var/lib/kps/input/records.log", "start": "beginning", "poll_interval_ms": 200}"#,
            },
            SampleStream {
                name: "file-out",
                direction: "EGRESS",
                channel: "kps.file.out",
                stream: r#"{"path": "/var/lib/kps/output/records.log"}"#,
            },
        ],
        config: r#"{"log_level": "info", "dead_letter_subject": "kps.file.dead.{stream}"}"#,
        broken: r#"{"path": "/var/lib/kps/input/records.log", "start": "middle", "colour": "red"}"#,
    },
    Deployed {
        name: "mqtt",
        streams: &[
            SampleStream {
                name: "mqtt-in",
                direction: "INGRESS",
                channel: "kps.mqtt.in",
                stream: r#"{"url": "mqtt://mosquitto:1883", "topic": "sensors/#", "qos": 1}"#,
            },
            SampleStream {
                name: "mqtt-out",
                direction: "EGRESS",
                channel: "kps.mqtt.out",
                stream: r#"{"url": "mqtt://mosquitto:1883", "topic": "actuators/commands", "qos": 1, "username": "kps", "password_file": "/var/run/secrets/kps/mqtt-password"}"#,
            },
        ],
        config: r#"{"log_level": "info", "dead_letter_subject": "kps.mqtt.dead.{stream}"}"#,
        broken: r#"{"url": "mqtt://mosquitto:1883", "topic": "sensors/#", "qos": 3}"#,
    },
    Deployed {
        name: "amqp",
        streams: &[
            SampleStream {
                name: "amqp-in",
                direction: "INGRESS",
                channel: "kps.amqp.in",
                stream: r#"{"url": "amqp://rabbitmq:5672/%2f", "queue": "sensor-readings", "prefetch": 256}"#,
            },
            SampleStream {
                name: "amqp-out",
                direction: "EGRESS",
                channel: "kps.amqp.out",
                stream: r#"{"url": "amqp://rabbitmq:5672/%2f", "exchange": "", "routing_key": "commands", "username": "kps", "password_file": "/var/run/secrets/kps/amqp-password"}"#,
            },
        ],
        config: r#"{"log_level": "info", "dead_letter_subject": "kps.amqp.dead.{stream}"}"#,
        broken: r#"{"url": "amqp://rabbitmq:5672/%2f", "queue": "sensor-readings", "prefetch": 70000}"#,
    },
    Deployed {
        name: "mysql",
        streams: &[
            SampleStream {
                name: "mysql-in",
                direction: "INGRESS",
                channel: "kps.mysql.in",
                stream: r#"{"url": "mysql://kps@mariadb:3306/plant", "password_file": "/var/run/secrets/kps/mysql-password", "table": "readings", "mode": "incrementing", "cursor_column": "id", "poll_interval_ms": 1000}"#,
            },
            SampleStream {
                name: "mysql-out",
                direction: "EGRESS",
                channel: "kps.mysql.out",
                stream: r#"{"url": "mysql://kps@mariadb:3306/plant", "password_file": "/var/run/secrets/kps/mysql-password", "table": "commands", "mode": "insert"}"#,
            },
        ],
        config: r#"{"log_level": "info", "dead_letter_subject": "kps.mysql.dead.{stream}"}"#,
        broken: r#"{"url": "mysql://kps@mariadb:3306/plant", "table": "readings", "batch_size": 0}"#,
    },
    Deployed {
        name: "kafka",
        streams: &[
            SampleStream {
                name: "kafka-in",
                direction: "INGRESS",
                channel: "kps.kafka.in",
                stream: r#"{"brokers": "kafka:9092", "topic": "sensor-readings", "group_id": "kps-kafka-in", "start": "earliest"}"#,
            },
            SampleStream {
                name: "kafka-out",
                direction: "EGRESS",
                channel: "kps.kafka.out",
                stream: r#"{"brokers": "kafka:9092", "topic": "commands", "compression": "zstd"}"#,
            },
        ],
        config: r#"{"log_level": "info", "dead_letter_subject": "kps.kafka.dead.{stream}"}"#,
        broken: r#"{"brokers": "kafka:9092", "topic": "sensor-readings", "start": "yesterday"}"#,
    },
    Deployed {
        name: "rtsp",
        streams: &[SampleStream {
            name: "rtsp-in",
            direction: "INGRESS",
            channel: "kps.rtsp.in",
            stream: r#"{"url": "rtsp://camera:8554/stream", "output": "keyframes", "max_fps": 1, "username": "kps", "password_file": "/var/run/secrets/kps/camera-password"}"#,
        }],
        config: r#"{"log_level": "info", "dead_letter_subject": "kps.rtsp.dead.{stream}"}"#,
        broken: r#"{"url": "rtsp://camera:8554/stream", "transport": "carrier-pigeon"}"#,
    },
];

/// The crate of connector `name`.
pub fn crate_name(name: &str) -> String {
    format!("kps-connector-{name}")
}

/// The names of every connector crate with a binary (`crates/kps-connector-<name>/src/main.rs`),
/// sorted; the core and kpsctl are not connectors.
pub fn with_binaries(root: &Path) -> Result<Vec<String>> {
    let crates = root.join("crates");
    let entries =
        fs::read_dir(&crates).with_context(|| format!("cannot list {}", crates.display()))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let dir = entry.file_name().to_string_lossy().into_owned();
            let name = dir.strip_prefix("kps-connector-")?.to_owned();
            let is_connector = !matches!(name.as_str(), "core" | "cli")
                && entry.path().join("src/main.rs").is_file();
            is_connector.then_some(name)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Checks that `name` is a connector with a binary.
pub fn check_exists(root: &Path, name: &str) -> Result<()> {
    let known = with_binaries(root)?;
    if !known.iter().any(|known| known == name) {
        bail!(
            "no connector `{name}` (crates/{}/src/main.rs); connectors: {}",
            crate_name(name),
            known.join(", ")
        );
    }
    Ok(())
}

/// The workspace's `[workspace.package]` values xtask needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePackage {
    /// `version`.
    pub version: String,
    /// `repository`.
    pub repository: String,
    /// `license`.
    pub license: String,
}

impl WorkspacePackage {
    /// Reads them from the root `Cargo.toml`.
    pub fn read(root: &Path) -> Result<WorkspacePackage> {
        let path = root.join("Cargo.toml");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let field = |key: &str| {
            toml_string(&text, "[workspace.package]", key)
                .with_context(|| format!("{}: no {key} in [workspace.package]", path.display()))
        };
        Ok(WorkspacePackage {
            version: field("version")?,
            repository: field("repository")?,
            license: field("license")?,
        })
    }
}

/// The `description` of a crate's `Cargo.toml`, if it has one.
pub fn crate_description(root: &Path, crate_name: &str) -> Option<String> {
    let text = fs::read_to_string(root.join("crates").join(crate_name).join("Cargo.toml")).ok()?;
    toml_string(&text, "[package]", "description")
}

/// The string value of `key = "..."` in `section` of a TOML text (the simple form only).
pub fn toml_string(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == section;
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() == key {
            let v = v.trim();
            return v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\""));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::Paths;

    #[test]
    fn the_workspace_has_the_file_connector() {
        let root = Paths::detect().root;
        let names = with_binaries(&root).unwrap();
        assert!(names.contains(&"file".to_owned()), "{names:?}");
        assert!(!names.iter().any(|n| n == "core" || n == "cli"));
        assert!(check_exists(&root, "file").is_ok());
        let err = check_exists(&root, "nope").unwrap_err().to_string();
        assert!(err.contains("no connector `nope`"), "{err}");
        let package = WorkspacePackage::read(&root).unwrap();
        assert!(package.repository.starts_with("https://"), "{package:?}");
        assert!(crate_description(&root, "kps-connector-file").is_some());
    }

    #[test]
    fn toml_strings_are_read_from_their_section() {
        let text = "[package]\nname = \"a\"\n[workspace.package]\nversion = \"1.2.3\"\n# x\nrepository = \"https://x\"\n";
        assert_eq!(
            toml_string(text, "[workspace.package]", "version").as_deref(),
            Some("1.2.3")
        );
        assert_eq!(toml_string(text, "[package]", "version"), None);
        assert_eq!(toml_string(text, "[package]", "name").as_deref(), Some("a"));
    }

    #[test]
    fn every_deployed_connector_has_samples_in_both_forms() {
        for connector in DEPLOYED {
            assert!(!connector.streams.is_empty(), "{}", connector.name);
            for stream in connector.streams {
                assert!(matches!(stream.direction, "INGRESS" | "EGRESS"));
                crate::json::Json::parse(stream.stream).unwrap();
            }
            crate::json::Json::parse(connector.config).unwrap();
            crate::json::Json::parse(connector.broken).unwrap();
        }
    }
}

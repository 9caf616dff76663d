//! Stream documents: the platform's JSON document for a stream (its `name`, `direction`,
//! `stream` values), plus the transport channel.
//!
//! ```json
//! {
//!   "name": "sensors-in",
//!   "direction": "INGRESS",
//!   "transportChannel": "sensors.readings",
//!   "labels": [{"id": "site", "value": "north"}],
//!   "stream": {"url": "mqtt://127.0.0.1:1883", "topic": "sensors/#"}
//! }
//! ```

use std::path::{Path, PathBuf};

use kps_connector_core::Direction;
use kps_connector_core::testkit::StreamDecl;
use serde::Deserialize;

use crate::{CliError, CliResult};

/// One stream document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamDocument {
    /// The stream's name: its id.
    pub name: String,
    /// `INGRESS` or `EGRESS` (any case).
    pub direction: String,
    /// The NATS subject (also accepted as `transport_channel` or `channel`).
    #[serde(alias = "transport_channel", alias = "channel")]
    pub transport_channel: String,
    /// The connector's stream parameters.
    #[serde(default)]
    pub stream: serde_json::Map<String, serde_json::Value>,
    /// Platform fields kpsctl does not need (labels, connectorInstanceID, serviceDomainIds...).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

impl StreamDocument {
    /// The declaration sent to the connector.
    pub fn to_decl(&self) -> CliResult<StreamDecl> {
        let direction = match self.direction.to_ascii_lowercase().as_str() {
            "ingress" => Direction::Ingress,
            "egress" => Direction::Egress,
            _ => {
                return Err(CliError::Input(format!(
                    "stream `{}`: direction `{}` is neither INGRESS nor EGRESS",
                    self.name, self.direction
                )));
            }
        };
        Ok(StreamDecl {
            id: self.name.clone(),
            direction,
            channel: self.transport_channel.clone(),
            metadata: serde_json::Value::Object(self.stream.clone()),
        })
    }
}

/// Reads stream documents from files and directories (their `*.json` files, sorted). A file may
/// hold one document or an array of them.
pub fn read_documents(paths: &[PathBuf]) -> CliResult<Vec<StreamDocument>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| CliError::Io {
                context: format!("read directory {}", path.display()),
                source,
            })?;
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    let mut documents = Vec::new();
    for file in files {
        documents.extend(read_file(&file)?);
    }
    Ok(documents)
}

fn read_file(path: &Path) -> CliResult<Vec<StreamDocument>> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        context: format!("read {}", path.display()),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| CliError::Input(format!("{}: not JSON: {e}", path.display())))?;
    let values = match value {
        serde_json::Value::Array(items) => items,
        single => vec![single],
    };
    values
        .into_iter()
        .map(|v| {
            serde_json::from_value(v).map_err(|e| {
                CliError::Input(format!("{}: not a stream document: {e}", path.display()))
            })
        })
        .collect()
}

/// The declarations of `documents`, refusing duplicate names.
pub fn declarations(documents: &[StreamDocument]) -> CliResult<Vec<StreamDecl>> {
    let mut seen = std::collections::HashSet::new();
    documents
        .iter()
        .map(|d| {
            if !seen.insert(d.name.clone()) {
                return Err(CliError::Input(format!(
                    "stream `{}` is declared twice",
                    d.name
                )));
            }
            d.to_decl()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_from_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"name": "a", "direction": "INGRESS", "transportChannel": "x.a", "stream": {"path": "/tmp/a"}, "labels": []}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"[{"name": "b", "direction": "egress", "transport_channel": "x.b"}]"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let docs = read_documents(&[dir.path().to_path_buf()]).unwrap();
        let decls = declarations(&docs).unwrap();
        assert_eq!(decls.len(), 2);
        assert_eq!(decls[0].direction, Direction::Ingress);
        assert_eq!(decls[1].channel, "x.b");
        let twice = declarations(&[docs[0].clone(), docs[0].clone()]).unwrap_err();
        assert!(twice.to_string().contains("declared twice"));
    }

    #[test]
    fn a_bad_direction_is_named() {
        let doc: StreamDocument = serde_json::from_str(
            r#"{"name": "a", "direction": "SIDEWAYS", "transportChannel": "x"}"#,
        )
        .unwrap();
        assert!(doc.to_decl().unwrap_err().to_string().contains("SIDEWAYS"));
    }
}

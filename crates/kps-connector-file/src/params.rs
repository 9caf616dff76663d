//! The file connector's stream parameters.

use kps_connector_core::{ConnectorError, ConnectorResult, Direction};
use schemars::JsonSchema;
use serde::Deserialize;

/// One stream's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// The file to tail (ingress) or append to (egress).
    pub path: String,
    /// Ingress, with no saved position: start at the `beginning` (default) or the `end`.
    #[serde(default)]
    pub start: StartAt,
    /// Ingress: how often to look for new lines when at the end of the file, in milliseconds.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Ingress: the longest line accepted, in bytes; a longer one fails the stream.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
}

/// Where an ingress stream with no saved position starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// The first line of the file.
    #[default]
    Beginning,
    /// Only lines appended after the stream started.
    End,
}

fn default_poll_interval_ms() -> u64 {
    200
}

fn default_max_line_bytes() -> usize {
    1024 * 1024
}

impl FileParams {
    /// Checks what the types cannot.
    pub fn validate(&self, _direction: Direction) -> ConnectorResult<()> {
        if self.path.trim().is_empty() {
            return Err(ConnectorError::invalid("path", "must not be empty"));
        }
        if !(1..=60_000).contains(&self.poll_interval_ms) {
            return Err(ConnectorError::invalid(
                "poll_interval_ms",
                "must be between 1 and 60000",
            ));
        }
        if self.max_line_bytes == 0 {
            return Err(ConnectorError::invalid(
                "max_line_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

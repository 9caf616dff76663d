//! Dynamic config: a JSON object merged key by key by SetPayload and watched by the streams.
//!
//! The core understands two keys: `log_level` (a tracing filter such as `info` or
//! `kps_connector_core=debug`, applied at once) and `dead_letter_subject` (where refused records go;
//! `{stream}` is replaced by the stream id). Every other key is the connector's.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::error::ConnectorError;

/// The config key that sets the log filter at runtime.
pub const LOG_LEVEL_KEY: &str = "log_level";
/// The config key naming the dead-letter subject (`{stream}` is replaced by the stream id).
pub const DEAD_LETTER_SUBJECT_KEY: &str = "dead_letter_subject";

/// A snapshot of the dynamic config.
pub type ConfigMap = Arc<Map<String, Value>>;

/// The dynamic config in force, with a watch channel for the streams.
#[derive(Debug, Clone)]
pub struct DynamicConfig {
    tx: Arc<watch::Sender<ConfigMap>>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        Self::new(Map::new())
    }
}

impl DynamicConfig {
    /// A config holding `initial`.
    pub fn new(initial: Map<String, Value>) -> Self {
        let (tx, _) = watch::channel(Arc::new(initial));
        Self { tx: Arc::new(tx) }
    }

    /// The config now in force.
    pub fn current(&self) -> ConfigMap {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<ConfigMap> {
        self.tx.subscribe()
    }

    /// What the config would be after merging `update` key by key (a `null` value removes the key).
    pub fn merged(&self, update: &Map<String, Value>) -> Map<String, Value> {
        let mut merged = (*self.current()).clone();
        for (key, value) in update {
            if value.is_null() {
                merged.remove(key);
            } else {
                merged.insert(key.clone(), value.clone());
            }
        }
        merged
    }

    /// Puts `config` in force and notifies the watchers.
    pub fn replace(&self, config: Map<String, Value>) {
        self.tx.send_replace(Arc::new(config));
    }
}

/// Checks the keys the core understands.
pub fn validate_core_keys(config: &Map<String, Value>) -> Result<(), ConnectorError> {
    if let Some(level) = config.get(LOG_LEVEL_KEY) {
        let text = level.as_str().ok_or_else(|| {
            ConnectorError::invalid(LOG_LEVEL_KEY, "must be a string such as \"info\"")
        })?;
        tracing_subscriber::EnvFilter::try_new(text).map_err(|e| {
            ConnectorError::invalid(LOG_LEVEL_KEY, format!("not a log filter: {e}"))
        })?;
    }
    if let Some(subject) = config.get(DEAD_LETTER_SUBJECT_KEY) {
        let text = subject
            .as_str()
            .ok_or_else(|| ConnectorError::invalid(DEAD_LETTER_SUBJECT_KEY, "must be a string"))?;
        crate::transport::validate_subject(text, false)
            .map_err(|e| ConnectorError::invalid(DEAD_LETTER_SUBJECT_KEY, e))?;
    }
    Ok(())
}

/// The dead-letter subject for `stream_id` under `config`, if one is configured.
pub fn dead_letter_subject(config: &Map<String, Value>, stream_id: &str) -> Option<String> {
    config
        .get(DEAD_LETTER_SUBJECT_KEY)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("{stream}", stream_id))
}

/// The config schema of a connector with no config of its own: the core's keys, others allowed.
pub fn default_config_schema() -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "log_level": {
                "type": "string",
                "description": "tracing filter applied at runtime, e.g. info or kps_connector_core=debug"
            },
            "dead_letter_subject": {
                "type": "string",
                "description": "NATS subject for refused records; {stream} is replaced by the stream id"
            }
        },
        "additionalProperties": true
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_key_by_key_and_null_removes() {
        let config = DynamicConfig::new(json!({"a": 1, "b": 2}).as_object().cloned().unwrap());
        let merged = config.merged(json!({"b": 3, "a": null, "c": 4}).as_object().unwrap());
        assert_eq!(Value::Object(merged), json!({"b": 3, "c": 4}));
    }

    #[test]
    fn core_keys_are_checked() {
        let bad = json!({"log_level": "=,=bad[["})
            .as_object()
            .cloned()
            .unwrap();
        assert!(validate_core_keys(&bad).is_err());
        let good = json!({"log_level": "debug", "dead_letter_subject": "dlq.{stream}"});
        assert!(validate_core_keys(good.as_object().unwrap()).is_ok());
        assert_eq!(
            dead_letter_subject(good.as_object().unwrap(), "s1").as_deref(),
            Some("dlq.s1")
        );
    }
}

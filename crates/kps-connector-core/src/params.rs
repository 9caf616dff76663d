//! Stream parameters: parsing a stream's metadata into a connector's typed struct with errors that
//! name the field, and secrets that come from files or the environment and never print.

use std::fmt;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;

/// Deserializes stream metadata into `T`, naming the offending field on error
/// (`invalid parameter `qos`: invalid value: ...`).
pub fn parse_params<T: DeserializeOwned>(
    metadata: &serde_json::Map<String, serde_json::Value>,
) -> Result<T, ConnectorError> {
    let value = serde_json::Value::Object(metadata.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // A missing or unknown top-level field has the path `.` (or "" for the key `""`):
        // then only the message names it.
        let field = if path == "." || path.is_empty() {
            field_from_message(&inner).unwrap_or_else(|| "metadata".to_owned())
        } else {
            path
        };
        ConnectorError::invalid(field, inner)
    })
}

/// serde names a missing or unknown field only in its message ("missing field `url`"). An
/// unknown field with an empty name (the key `""`) names nothing: the caller names `metadata`.
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned()).filter(|field| !field.is_empty())
}

/// A secret value (a password, a key). `Debug` and `Display` print `***`; it is never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where a secret comes from: a file (a mounted Kubernetes secret) or an environment variable.
/// A connector's params carry the two optional fields `password_file` and `password_env` (serde's
/// `flatten` does not combine with `deny_unknown_fields`, so declare them directly) and build
/// one of these from them; the secret itself never travels in the stream metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct PasswordSource {
    /// A file holding the password (trailing newline ignored), e.g. a mounted Kubernetes secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
}

impl PasswordSource {
    /// Checks that at most one source is given.
    pub fn validate(&self) -> Result<(), ConnectorError> {
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(ConnectorError::invalid(
                "password_file",
                "give either password_file or password_env, not both",
            ));
        }
        Ok(())
    }

    /// Whether a password source is configured.
    pub fn is_set(&self) -> bool {
        self.password_file.is_some() || self.password_env.is_some()
    }

    /// Reads the secret now (at open time, so a rotated secret is picked up on reconnect).
    pub async fn load(&self) -> Result<Option<Secret>, ConnectorError> {
        if let Some(path) = &self.password_file {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                ConnectorError::invalid("password_file", format!("cannot read {path}: {e}"))
            })?;
            return Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))));
        }
        if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|_| {
                ConnectorError::invalid(
                    "password_env",
                    format!("environment variable {var} is not set"),
                )
            })?;
            return Ok(Some(Secret::new(value)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        url: String,
        #[serde(default)]
        qos: u8,
    }

    fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap()
    }

    fn field_of(e: ConnectorError) -> String {
        match e {
            ConnectorError::InvalidParameter { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            field_of(parse_params::<P>(&obj(json!({}))).unwrap_err()),
            "url"
        );
        assert_eq!(
            field_of(parse_params::<P>(&obj(json!({"url": "x", "qos": "high"}))).unwrap_err()),
            "qos"
        );
        assert_eq!(
            field_of(parse_params::<P>(&obj(json!({"url": "x", "bogus": 1}))).unwrap_err()),
            "bogus"
        );
        // Found by the params fuzz targets: an empty key used to give the field name "".
        let empty_key = parse_params::<P>(&obj(json!({"url": "x", "": 1}))).unwrap_err();
        assert_eq!(
            empty_key.to_string(),
            "invalid parameter `metadata`: unknown field ``, expected `url` or `qos`"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }

    #[tokio::test]
    async fn password_comes_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let from_file = PasswordSource {
            password_file: Some(path.display().to_string()),
            password_env: None,
        };
        assert_eq!(from_file.load().await.unwrap().unwrap().expose(), "s3cret");
        let missing = PasswordSource {
            password_file: None,
            password_env: Some("KPS_TEST_SURELY_UNSET_VAR".into()),
        };
        assert_eq!(field_of(missing.load().await.unwrap_err()), "password_env");
        let both = PasswordSource {
            password_file: Some("a".into()),
            password_env: Some("b".into()),
        };
        assert!(both.validate().is_err());
    }
}

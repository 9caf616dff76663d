//! The routing key of an egress record: fixed, or taken from the record with a JSON pointer.

use kps_connector_core::Bytes;

/// How each record's routing key is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    fixed: Option<String>,
    pointer: Option<String>,
}

impl Routing {
    /// A fixed `key`, a `pointer` into each record, or both (the key where the pointer finds
    /// nothing). Neither: the empty routing key.
    pub fn new(key: Option<&str>, pointer: Option<&str>) -> Self {
        Self {
            fixed: key.map(str::to_owned),
            pointer: pointer.map(str::to_owned),
        }
    }

    /// The routing key of `record`, or why it has none (no record content in the reason).
    pub fn key_for(&self, record: &Bytes) -> Result<String, String> {
        let Some(pointer) = &self.pointer else {
            return Ok(self.fixed.clone().unwrap_or_default());
        };
        let found = match serde_json::from_slice::<serde_json::Value>(record) {
            Ok(document) => match document.pointer(pointer) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            },
            Err(_) if self.fixed.is_some() => None,
            Err(e) => return Err(format!("no routing key: the record is not JSON ({e})")),
        };
        match (found, &self.fixed) {
            (Some(key), _) if key.len() > 255 => Err(format!(
                "no routing key: the value at `{pointer}` is longer than 255 bytes"
            )),
            (Some(key), _) => Ok(key),
            (None, Some(fixed)) => Ok(fixed.clone()),
            (None, None) => Err(format!(
                "no routing key: nothing usable at `{pointer}` (a string, number or boolean)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(r: &Routing, record: &str) -> Result<String, String> {
        r.key_for(&Bytes::copy_from_slice(record.as_bytes()))
    }

    #[test]
    fn fixed_pointer_and_fallback() {
        let fixed = Routing::new(Some("k"), None);
        assert_eq!(key(&fixed, "anything").unwrap(), "k");
        let pointer = Routing::new(None, Some("/device/id"));
        assert_eq!(key(&pointer, r#"{"device":{"id":"d1"}}"#).unwrap(), "d1");
        assert_eq!(key(&pointer, r#"{"device":{"id":7}}"#).unwrap(), "7");
        assert!(
            key(&pointer, r#"{"device":{}}"#)
                .unwrap_err()
                .contains("/device/id")
        );
        assert!(key(&pointer, "not json").unwrap_err().contains("not JSON"));
        let both = Routing::new(Some("default"), Some("/id"));
        assert_eq!(key(&both, r#"{"id":"x"}"#).unwrap(), "x");
        assert_eq!(key(&both, r#"{"other":1}"#).unwrap(), "default");
        assert_eq!(key(&both, "not json").unwrap(), "default");
        assert_eq!(key(&Routing::new(None, None), "x").unwrap(), "");
    }
}

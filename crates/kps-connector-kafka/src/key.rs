//! The egress message key: the value a JSON pointer selects in the record.
//!
//! A string value is the key as it is; a number, boolean, object or list is its JSON text;
//! `null` means no key. A record that is not JSON, or has nothing at the pointer, cannot be keyed:
//! it is refused (the core alerts and dead-letters it) rather than sent to a random partition,
//! which would break the per-key order the key is there for.

use serde_json::Value;

/// The key of `record` under `pointer`, or why there is none.
pub fn extract(pointer: &str, record: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut value: Value = serde_json::from_slice(record)
        .map_err(|e| format!("record is not JSON, so it has no key at {pointer}: {e}"))?;
    match value.pointer_mut(pointer).map(Value::take) {
        None => Err(format!(
            "record has no value at {pointer} for the message key"
        )),
        Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.into_bytes())),
        Some(other) => Ok(Some(other.to_string().into_bytes())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pointer_selects_the_key() {
        let record = br#"{"device_id":"d-7","n":12,"tags":{"site":"a"},"none":null}"#;
        assert_eq!(extract("/device_id", record), Ok(Some(b"d-7".to_vec())));
        assert_eq!(extract("/n", record), Ok(Some(b"12".to_vec())));
        assert_eq!(extract("/tags/site", record), Ok(Some(b"a".to_vec())));
        assert_eq!(
            extract("/tags", record),
            Ok(Some(br#"{"site":"a"}"#.to_vec()))
        );
        assert_eq!(extract("/none", record), Ok(None));
    }

    #[test]
    fn records_without_a_key_are_refused_with_a_reason() {
        let missing = extract("/device_id", br#"{"n":1}"#).unwrap_err();
        assert!(missing.contains("no value at /device_id"), "{missing}");
        let not_json = extract("/device_id", b"plain text").unwrap_err();
        assert!(not_json.contains("not JSON"), "{not_json}");
        assert!(!not_json.contains("plain text"), "no payload in the reason");
    }
}

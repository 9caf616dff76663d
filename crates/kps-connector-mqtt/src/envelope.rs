//! The `json` envelope: an MQTT message as a JSON record and back.
//!
//! Ingress writes `{"topic":"a/b","payload":"text","payload_base64":false,"qos":1,"retain":false}`;
//! a payload that is not UTF-8 is base64 (standard alphabet, padded) with `"payload_base64": true`.
//! Egress reads the same shape: `payload` is required, `topic`, `qos` and `retain` override the
//! stream's parameters when present, `payload_base64` defaults to false, other fields are ignored.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::params::validate_topic_name;

#[derive(Serialize)]
struct Outgoing<'a> {
    topic: &'a str,
    payload: &'a str,
    payload_base64: bool,
    qos: u8,
    retain: bool,
}

/// Encodes one received MQTT message as a JSON record.
pub fn encode(topic: &str, payload: &[u8], qos: u8, retain: bool) -> Bytes {
    let (text, base64): (Cow<'_, str>, bool) = match std::str::from_utf8(payload) {
        Ok(text) => (Cow::Borrowed(text), false),
        Err(_) => (Cow::Owned(BASE64.encode(payload)), true),
    };
    let message = Outgoing {
        topic,
        payload: &text,
        payload_base64: base64,
        qos,
        retain,
    };
    // Escaping may grow the text a little; 64 bytes cover the field names and flags.
    let mut out = Vec::with_capacity(topic.len() + text.len() + 64);
    // Serializing a struct of strings, integers and booleans into a Vec cannot fail.
    if serde_json::to_writer(&mut out, &message).is_err() {
        out.clear();
    }
    Bytes::from(out)
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default, borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Cow<'a, str>,
    #[serde(default)]
    payload_base64: bool,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    retain: Option<bool>,
}

/// A record of the json envelope, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The record's own topic, if it names one.
    pub topic: Option<String>,
    /// The MQTT payload (a slice of the record when the text needed no unescaping).
    pub payload: Bytes,
    /// The record's own qos, if it names one.
    pub qos: Option<u8>,
    /// The record's own retain flag, if it names one.
    pub retain: Option<bool>,
}

/// Decodes a json-envelope record; the error says why the record is refused (never its content).
pub fn decode(record: &Bytes) -> Result<Decoded, String> {
    let incoming: Incoming<'_> =
        serde_json::from_slice(record).map_err(|e| format!("not a json envelope: {e}"))?;
    let payload = if incoming.payload_base64 {
        BASE64
            .decode(incoming.payload.as_bytes())
            .map(Bytes::from)
            .map_err(|e| format!("payload is not base64: {e}"))?
    } else {
        match incoming.payload {
            // No escapes: the payload is a slice of the record, no copy.
            Cow::Borrowed(text) => record.slice_ref(text.as_bytes()),
            Cow::Owned(text) => Bytes::from(text),
        }
    };
    if let Some(qos) = incoming.qos
        && qos > 2
    {
        return Err(format!("qos {qos} is not 0, 1 or 2"));
    }
    let topic = match incoming.topic {
        Some(topic) => {
            validate_topic_name(&topic).map_err(|why| format!("topic {why}"))?;
            Some(topic.into_owned())
        }
        None => None,
    };
    Ok(Decoded {
        topic,
        payload,
        qos: incoming.qos,
        retain: incoming.retain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let record = encode("a/b", "hé \"quoted\"\n".as_bytes(), 1, false);
        let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"topic": "a/b", "payload": "hé \"quoted\"\n", "payload_base64": false, "qos": 1, "retain": false})
        );
        let decoded = decode(&record).unwrap();
        assert_eq!(decoded.topic.as_deref(), Some("a/b"));
        assert_eq!(&decoded.payload[..], "hé \"quoted\"\n".as_bytes());
        assert_eq!(decoded.qos, Some(1));
        assert_eq!(decoded.retain, Some(false));
    }

    #[test]
    fn binary_payloads_are_base64() {
        let bytes = [0u8, 159, 146, 150, 255];
        let record = encode("x", &bytes, 2, true);
        let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(value["payload_base64"], true);
        assert_eq!(value["payload"], BASE64.encode(bytes));
        assert_eq!(&decode(&record).unwrap().payload[..], &bytes);
    }

    #[test]
    fn plain_text_is_not_copied() {
        let record = Bytes::from_static(br#"{"payload":"hello"}"#);
        let decoded = decode(&record).unwrap();
        assert_eq!(&decoded.payload[..], b"hello");
        let start = record.as_ptr() as usize;
        let inner = decoded.payload.as_ptr() as usize;
        assert!(
            inner > start && inner < start + record.len(),
            "payload is a slice of the record"
        );
        assert_eq!(decoded.topic, None);
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        for (record, reason) in [
            (&br#"not json"#[..], "not a json envelope"),
            (br#"{"topic":"a"}"#, "missing field `payload`"),
            (br#"{"payload":"x","topic":"a/+"}"#, "wildcards"),
            (br#"{"payload":"x","qos":3}"#, "qos 3"),
            (br#"{"payload":"%%","payload_base64":true}"#, "not base64"),
        ] {
            let error = decode(&Bytes::copy_from_slice(record)).unwrap_err();
            assert!(error.contains(reason), "{error} should mention {reason}");
        }
    }
}

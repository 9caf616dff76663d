//! The `json` envelope of ingress records: a Kafka message as one JSON object,
//! `{"key", "value", "headers", "partition", "offset", "timestamp"}`.
//!
//! `key` and `value` are JSON strings when the bytes are UTF-8 text, `{"base64": "..."}` when
//! they are not, and `null` when absent; `headers` is a list of `{"key", "value"}` objects in
//! message order (a key may repeat); `timestamp` is milliseconds since the Unix epoch, or `null`.

use base64::Engine;
use bytes::Bytes;
use rdkafka::Message;
use rdkafka::message::Headers;
use serde::Serialize;

/// Bytes as the envelope shows them.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Text(&'a str),
    Binary { base64: String },
}

impl<'a> Data<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Data::Text(text),
            Err(_) => Data::Binary {
                base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            },
        }
    }
}

#[derive(Serialize)]
struct Header<'a> {
    key: &'a str,
    value: Option<Data<'a>>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    key: Option<Data<'a>>,
    value: Option<Data<'a>>,
    headers: Vec<Header<'a>>,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
}

/// The message as a JSON envelope record.
pub fn encode<M: Message>(message: &M) -> Bytes {
    let headers = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .map(|header| Header {
                    key: header.key,
                    value: header.value.map(Data::of),
                })
                .collect()
        })
        .unwrap_or_default();
    let envelope = Envelope {
        key: message.key().map(Data::of),
        value: message.payload().map(Data::of),
        headers,
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
    };
    // Serializing strings, numbers and lists into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;
    use rdkafka::message::{Header as KafkaHeader, OwnedHeaders, OwnedMessage};
    use serde_json::json;

    #[test]
    fn a_message_becomes_one_json_object() {
        let headers = OwnedHeaders::new()
            .insert(KafkaHeader {
                key: "trace",
                value: Some("abc"),
            })
            .insert(KafkaHeader {
                key: "raw",
                value: Some(&[0xff_u8, 0x00][..]),
            })
            .insert(KafkaHeader::<&[u8]> {
                key: "empty",
                value: None,
            });
        let message = OwnedMessage::new(
            Some(br#"{"t":1}"#.to_vec()),
            Some(b"device-7".to_vec()),
            "topic".into(),
            Timestamp::CreateTime(1_700_000_000_123),
            2,
            41,
            Some(headers),
        );
        let value: serde_json::Value = serde_json::from_slice(&encode(&message)).unwrap();
        assert_eq!(
            value,
            json!({
                "key": "device-7",
                "value": "{\"t\":1}",
                "headers": [
                    {"key": "trace", "value": "abc"},
                    {"key": "raw", "value": {"base64": "/wA="}},
                    {"key": "empty", "value": null},
                ],
                "partition": 2,
                "offset": 41,
                "timestamp": 1_700_000_000_123_i64,
            })
        );
    }

    #[test]
    fn missing_parts_are_null() {
        let message = OwnedMessage::new(
            None,
            None,
            "topic".into(),
            Timestamp::NotAvailable,
            0,
            0,
            None,
        );
        let value: serde_json::Value = serde_json::from_slice(&encode(&message)).unwrap();
        assert_eq!(
            value,
            json!({"key": null, "value": null, "headers": [], "partition": 0, "offset": 0, "timestamp": null})
        );
    }
}

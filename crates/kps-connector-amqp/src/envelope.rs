//! Turning an AMQP delivery into a record: the body as is, or a JSON envelope with the body,
//! routing key, exchange, headers and properties.

use base64::Engine;
use kps_connector_core::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

use crate::params::Envelope;

/// Why a delivery could not become a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unhandled {
    /// The record would exceed `max_record_bytes`.
    #[error("a message larger than max_record_bytes")]
    TooLarge,
    /// The JSON envelope carries text bodies and this one is not UTF-8.
    #[error("a message whose body is not utf-8 text (envelope json)")]
    NotText,
}

/// What a delivery carries besides its body.
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// The exchange it was published to.
    pub exchange: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// Its properties (and headers).
    pub properties: &'a BasicProperties,
}

/// Makes the record of a delivery. `body` is moved in: with no envelope it becomes the record
/// without a copy.
pub fn to_record(
    envelope: Envelope,
    body: Vec<u8>,
    meta: Meta<'_>,
    max_bytes: usize,
) -> Result<Bytes, Unhandled> {
    let record = match envelope {
        Envelope::None => Bytes::from(body),
        Envelope::Json => json_record(&body, meta)?,
    };
    if record.len() > max_bytes {
        return Err(Unhandled::TooLarge);
    }
    Ok(record)
}

fn json_record(body: &[u8], meta: Meta<'_>) -> Result<Bytes, Unhandled> {
    let body = std::str::from_utf8(body).map_err(|_| Unhandled::NotText)?;
    let envelope = JsonEnvelope {
        body,
        routing_key: meta.routing_key,
        exchange: meta.exchange,
        headers: Table(meta.properties.headers().as_ref()),
        properties: Properties(meta.properties),
    };
    let mut out = Vec::with_capacity(body.len() + 128);
    // Serializing borrowed strings and numbers into a Vec cannot fail.
    serde_json::to_writer(&mut out, &envelope).map_err(|_| Unhandled::NotText)?;
    Ok(Bytes::from(out))
}

#[derive(Serialize)]
struct JsonEnvelope<'a> {
    body: &'a str,
    routing_key: &'a str,
    exchange: &'a str,
    headers: Table<'a>,
    properties: Properties<'a>,
}

/// Headers as a JSON object (an absent table is `{}`).
struct Table<'a>(Option<&'a FieldTable>);

impl Serialize for Table<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(table) = self.0 else {
            return serializer.serialize_map(Some(0))?.end();
        };
        let inner = table.inner();
        let mut map = serializer.serialize_map(Some(inner.len()))?;
        for (key, value) in inner {
            map.serialize_entry(key.as_str(), &Value(value))?;
        }
        map.end()
    }
}

/// One AMQP field value as JSON: numbers, booleans, text (byte strings that are not UTF-8 and
/// byte arrays as base64), arrays, objects; a decimal as a number, void as null.
struct Value<'a>(&'a AMQPValue);

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            AMQPValue::Boolean(v) => serializer.serialize_bool(*v),
            AMQPValue::ShortShortInt(v) => serializer.serialize_i8(*v),
            AMQPValue::ShortShortUInt(v) => serializer.serialize_u8(*v),
            AMQPValue::ShortInt(v) => serializer.serialize_i16(*v),
            AMQPValue::ShortUInt(v) => serializer.serialize_u16(*v),
            AMQPValue::LongInt(v) => serializer.serialize_i32(*v),
            AMQPValue::LongUInt(v) => serializer.serialize_u32(*v),
            AMQPValue::LongLongInt(v) => serializer.serialize_i64(*v),
            AMQPValue::Float(v) => serializer.serialize_f32(*v),
            AMQPValue::Double(v) => serializer.serialize_f64(*v),
            AMQPValue::DecimalValue(d) => {
                serializer.serialize_f64(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
            }
            AMQPValue::ShortString(s) => serializer.serialize_str(s.as_str()),
            AMQPValue::LongString(s) => bytes(serializer, s.as_bytes()),
            AMQPValue::FieldArray(array) => {
                let items = array.as_slice();
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Value(item))?;
                }
                seq.end()
            }
            AMQPValue::Timestamp(t) => serializer.serialize_u64(*t),
            AMQPValue::FieldTable(table) => Table(Some(table)).serialize(serializer),
            AMQPValue::ByteArray(b) => serializer
                .serialize_str(&base64::engine::general_purpose::STANDARD.encode(b.as_slice())),
            AMQPValue::Void => serializer.serialize_unit(),
        }
    }
}

fn bytes<S: Serializer>(serializer: S, value: &[u8]) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(value) {
        Ok(text) => serializer.serialize_str(text),
        Err(_) => {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(value))
        }
    }
}

/// The message properties that are set, by their AMQP names (`type` for the message type).
struct Properties<'a>(&'a BasicProperties);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = serializer.serialize_map(None)?;
        let strings = [
            ("content_type", p.content_type()),
            ("content_encoding", p.content_encoding()),
            ("correlation_id", p.correlation_id()),
            ("reply_to", p.reply_to()),
            ("expiration", p.expiration()),
            ("message_id", p.message_id()),
            ("type", p.kind()),
            ("user_id", p.user_id()),
            ("app_id", p.app_id()),
            ("cluster_id", p.cluster_id()),
        ];
        for (name, value) in strings {
            if let Some(value) = value {
                map.serialize_entry(name, value.as_str())?;
            }
        }
        if let Some(mode) = p.delivery_mode() {
            map.serialize_entry("delivery_mode", mode)?;
        }
        if let Some(priority) = p.priority() {
            map.serialize_entry("priority", priority)?;
        }
        if let Some(timestamp) = p.timestamp() {
            map.serialize_entry("timestamp", timestamp)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{DecimalValue, FieldArray, LongString, ShortString};
    use serde_json::json;

    const BIG: usize = 1 << 20;

    fn meta(properties: &BasicProperties) -> Meta<'_> {
        Meta {
            exchange: "ex",
            routing_key: "rk",
            properties,
        }
    }

    #[test]
    fn no_envelope_keeps_the_body_without_a_copy() {
        let body = b"hello".to_vec();
        let ptr = body.as_ptr();
        let props = BasicProperties::default();
        let record = to_record(Envelope::None, body, meta(&props), BIG).unwrap();
        assert_eq!(record.as_ptr(), ptr);
        assert_eq!(&record[..], b"hello");
    }

    #[test]
    fn json_envelope_carries_everything() {
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from("n"), AMQPValue::LongInt(-3));
        headers.insert(
            ShortString::from("s"),
            AMQPValue::LongString(LongString::from("x")),
        );
        headers.insert(
            ShortString::from("bin"),
            AMQPValue::LongString(LongString::from(vec![0xff, 0x00])),
        );
        headers.insert(
            ShortString::from("a"),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::Boolean(true),
                AMQPValue::Void,
            ])),
        );
        headers.insert(
            ShortString::from("d"),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 2,
                value: 125,
            }),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_type("reading".into())
            .with_headers(headers);
        let record = to_record(Envelope::Json, br#"{"t":1}"#.to_vec(), meta(&props), BIG).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(
            v,
            json!({
                "body": "{\"t\":1}",
                "routing_key": "rk",
                "exchange": "ex",
                "headers": {"n": -3, "s": "x", "bin": "/wA=", "a": [true, null], "d": 1.25},
                "properties": {"content_type": "application/json", "delivery_mode": 2, "type": "reading"}
            })
        );
        let bare = to_record(
            Envelope::Json,
            b"x".to_vec(),
            meta(&BasicProperties::default()),
            BIG,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bare).unwrap();
        assert_eq!(v["headers"], json!({}));
        assert_eq!(v["properties"], json!({}));
    }

    #[test]
    fn what_cannot_be_a_record_is_named() {
        let props = BasicProperties::default();
        assert_eq!(
            to_record(Envelope::Json, vec![0xff, 0xfe], meta(&props), BIG),
            Err(Unhandled::NotText)
        );
        assert_eq!(
            to_record(Envelope::None, vec![0; 11], meta(&props), 10),
            Err(Unhandled::TooLarge)
        );
        assert!(to_record(Envelope::None, vec![0; 10], meta(&props), 10).is_ok());
    }
}

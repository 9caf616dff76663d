//! Turning an AMQP delivery into a record: the body as is, or a JSON envelope with the body,
//! routing key, exchange, headers and properties.

use amqprs::{BasicProperties, DecimalValue, FieldTable, FieldValue};
use base64::Engine;
use kps_connector_core::Bytes;
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
        headers: Table(meta.properties.headers()),
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

/// Headers as a JSON object with its keys in order (an absent table is `{}`).
struct Table<'a>(Option<&'a FieldTable>);

impl Serialize for Table<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(table) = self.0 else {
            return serializer.serialize_map(Some(0))?.end();
        };
        let mut fields: Vec<(&String, &FieldValue)> = table
            .as_ref()
            .iter()
            .map(|(key, value)| (key.as_ref(), value))
            .collect();
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            map.serialize_entry(key, &Value(value))?;
        }
        map.end()
    }
}

/// One AMQP field value as JSON: numbers, booleans, text, arrays, objects; a byte array as
/// base64, a decimal as a number, void as null.
///
/// A long string is UTF-8 text: the client library cannot decode one that is not.
struct Value<'a>(&'a FieldValue);

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            FieldValue::t(v) => serializer.serialize_bool(*v),
            FieldValue::b(v) => serializer.serialize_i8(*v),
            FieldValue::B(v) => serializer.serialize_u8(*v),
            FieldValue::s(v) => serializer.serialize_i16(*v),
            FieldValue::u(v) => serializer.serialize_u16(*v),
            FieldValue::I(v) => serializer.serialize_i32(*v),
            FieldValue::i(v) => serializer.serialize_u32(*v),
            FieldValue::l(v) => serializer.serialize_i64(*v),
            FieldValue::f(v) => serializer.serialize_f32(*v),
            FieldValue::d(v) => serializer.serialize_f64(*v),
            FieldValue::D(d) => match decimal(d) {
                Some(number) => serializer.serialize_f64(number),
                None => serializer.serialize_unit(),
            },
            FieldValue::S(s) => serializer.serialize_str(s.as_ref()),
            FieldValue::A(array) => {
                // The library offers an array's values by value only.
                let items = Vec::<FieldValue>::from(array.clone());
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in &items {
                    seq.serialize_element(&Value(item))?;
                }
                seq.end()
            }
            FieldValue::T(t) => serializer.serialize_u64(*t),
            FieldValue::F(table) => Table(Some(table)).serialize(serializer),
            FieldValue::x(b) => {
                let bytes = Vec::<u8>::from(b.clone());
                serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            FieldValue::V => serializer.serialize_unit(),
        }
    }
}

/// A decimal's value. The library keeps its scale and digits private; they are what it
/// serializes, in that order.
fn decimal(value: &DecimalValue) -> Option<f64> {
    let serde_json::Value::Array(parts) = serde_json::to_value(value).ok()? else {
        return None;
    };
    let scale = i32::try_from(parts.first()?.as_u64()?).ok()?;
    let digits = i32::try_from(parts.get(1)?.as_i64()?).ok()?;
    Some(f64::from(digits) / 10f64.powi(scale))
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
            ("type", p.message_type()),
            ("user_id", p.user_id()),
            ("app_id", p.app_id()),
            ("cluster_id", p.cluster_id()),
        ];
        for (name, value) in strings {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        if let Some(mode) = p.delivery_mode() {
            map.serialize_entry("delivery_mode", &mode)?;
        }
        if let Some(priority) = p.priority() {
            map.serialize_entry("priority", &priority)?;
        }
        if let Some(timestamp) = p.timestamp() {
            map.serialize_entry("timestamp", &timestamp)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amqprs::{ByteArray, FieldArray, LongStr, ShortStr};
    use serde_json::json;

    const BIG: usize = 1 << 20;

    fn meta(properties: &BasicProperties) -> Meta<'_> {
        Meta {
            exchange: "ex",
            routing_key: "rk",
            properties,
        }
    }

    fn name(key: &str) -> ShortStr {
        key.try_into().expect("a short string")
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
        let mut headers = FieldTable::new();
        headers.insert(name("n"), FieldValue::I(-3));
        headers.insert(
            name("s"),
            FieldValue::S(LongStr::try_from("x").expect("a long string")),
        );
        headers.insert(
            name("bin"),
            FieldValue::x(ByteArray::try_from(vec![0xff, 0x00]).expect("a byte array")),
        );
        headers.insert(
            name("a"),
            FieldValue::A(
                FieldArray::try_from(vec![FieldValue::t(true), FieldValue::V]).expect("an array"),
            ),
        );
        headers.insert(name("d"), FieldValue::D(DecimalValue::new(2, 125)));
        let mut nested = FieldTable::new();
        nested.insert(name("at"), FieldValue::T(1_700_000_000));
        headers.insert(name("t"), FieldValue::F(nested));
        let props = BasicProperties::default()
            .with_content_type("application/json")
            .with_delivery_mode(2)
            .with_message_type("reading")
            .with_headers(headers)
            .finish();
        let record = to_record(Envelope::Json, br#"{"t":1}"#.to_vec(), meta(&props), BIG).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&record).unwrap();
        assert_eq!(
            v,
            json!({
                "body": "{\"t\":1}",
                "routing_key": "rk",
                "exchange": "ex",
                "headers": {"n": -3, "s": "x", "bin": "/wA=", "a": [true, null], "d": 1.25,
                            "t": {"at": 1_700_000_000}},
                "properties": {"content_type": "application/json", "delivery_mode": 2, "type": "reading"}
            })
        );
        // The headers come out in key order, whatever the table's.
        let text = std::str::from_utf8(&record).unwrap();
        let order: Vec<usize> = ["\"a\"", "\"bin\"", "\"d\"", "\"n\"", "\"s\"", "\"t\""]
            .iter()
            .map(|key| text.find(key).expect("a header"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
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

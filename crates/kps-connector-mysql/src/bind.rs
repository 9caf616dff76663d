//! Records to rows: a JSON value checked against its column's kind and turned into the value
//! bound to the INSERT (never pasted into SQL). The reverse of [`crate::record`]: what ingress
//! writes for a column, egress accepts for it.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::datetime::{check_time, parse_date, parse_rfc3339};
use crate::schema::ColumnKind;

/// A record's fields as written: each name and its JSON value as raw text, borrowed from the
/// record (a name is copied only when it holds escapes). Parsing a record allocates one vector.
#[derive(Debug)]
pub struct Fields<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(CowStr(name)) = map.next_key()? {
                    fields.push((name, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// A JSON string, borrowed unless it holds escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(StrVisitor)
    }
}

/// A value ready to bind, borrowing from the record where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue<'a> {
    /// NULL.
    Null,
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// Text from the record (a string without escapes, a number's digits, JSON text).
    Str(&'a str),
    /// Text made here (a string with escapes, a normalized date-time).
    Text(String),
    /// Bytes (decoded base64).
    Bytes(Vec<u8>),
}

/// The JSON type of a raw value, from its first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonType {
    Null,
    Bool(bool),
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    fn of(raw: &str) -> Self {
        match raw.as_bytes().first() {
            Some(b'n') => JsonType::Null,
            Some(b't') => JsonType::Bool(true),
            Some(b'f') => JsonType::Bool(false),
            Some(b'"') => JsonType::String,
            Some(b'[') => JsonType::Array,
            Some(b'{') => JsonType::Object,
            _ => JsonType::Number,
        }
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Bool(_) => "a boolean",
            JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
        }
    }
}

/// The string a raw JSON string value holds.
fn string(raw: &RawValue) -> Result<Cow<'_, str>, String> {
    serde_json::from_str::<CowStr<'_>>(raw.get())
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

fn owned_or_borrowed(text: Cow<'_, str>) -> SqlValue<'_> {
    match text {
        Cow::Borrowed(s) => SqlValue::Str(s),
        Cow::Owned(s) => SqlValue::Text(s),
    }
}

/// The value to bind for the raw JSON `value` in a column of `kind`, or why it does not fit
/// (without the value itself).
pub fn to_sql(kind: ColumnKind, value: &RawValue) -> Result<SqlValue<'_>, String> {
    let raw = value.get();
    let json_type = JsonType::of(raw);
    if json_type == JsonType::Null {
        return Ok(SqlValue::Null);
    }
    let wrong = || format!("expects {}, got {}", kind.expects(), json_type.name());
    match (kind, json_type) {
        (ColumnKind::Int { unsigned }, _) => integer(raw, json_type, unsigned).ok_or_else(wrong),
        (ColumnKind::Bit, _) => integer(raw, json_type, true).ok_or_else(wrong),
        (ColumnKind::Year, _) => integer(raw, json_type, false).ok_or_else(wrong),
        (ColumnKind::Float | ColumnKind::Double, JsonType::Number) => {
            raw.parse::<f64>().map(SqlValue::F64).map_err(|_| wrong())
        }
        // A number's own digits: nothing is lost on the way to the DECIMAL.
        (ColumnKind::Decimal, JsonType::Number) => Ok(SqlValue::Str(raw)),
        (ColumnKind::Decimal, JsonType::String) => {
            let text = string(value)?;
            if is_decimal(&text) {
                Ok(owned_or_borrowed(text))
            } else {
                Err(format!(
                    "expects {}, got a string that is not a number",
                    kind.expects()
                ))
            }
        }
        (ColumnKind::Text, JsonType::String) => string(value).map(owned_or_borrowed),
        (ColumnKind::Binary, JsonType::String) => base64::engine::general_purpose::STANDARD
            .decode(string(value)?.as_bytes())
            .map(SqlValue::Bytes)
            .map_err(|_| {
                format!(
                    "expects {}, got a string that is not base64",
                    kind.expects()
                )
            }),
        (ColumnKind::Json, _) => Ok(SqlValue::Str(raw)),
        (ColumnKind::Date, JsonType::String) => {
            let text = string(value)?;
            parse_date(&text).map_err(|e| e.to_string())?;
            Ok(owned_or_borrowed(text))
        }
        (ColumnKind::DateTime | ColumnKind::Timestamp, JsonType::String) => {
            parse_rfc3339(&string(value)?)
                .map(|dt| SqlValue::Text(dt.to_sql()))
                .map_err(|e| e.to_string())
        }
        (ColumnKind::Time, JsonType::String) => {
            let text = string(value)?;
            check_time(&text).map_err(|e| e.to_string())?;
            Ok(owned_or_borrowed(text))
        }
        _ => Err(wrong()),
    }
}

fn integer(raw: &str, json_type: JsonType, unsigned: bool) -> Option<SqlValue<'static>> {
    match json_type {
        JsonType::Bool(b) => Some(SqlValue::I64(i64::from(b))),
        JsonType::Number => {
            if let Ok(i) = raw.parse::<i64>() {
                (!unsigned || i >= 0).then_some(SqlValue::I64(i))
            } else if let Ok(u) = raw.parse::<u64>() {
                Some(SqlValue::U64(u))
            } else {
                // A float with no fraction (1.0) is an integer; 1.5 is not.
                let f = raw.parse::<f64>().ok()?;
                let whole = f.fract() == 0.0 && f.abs() < 9.0e15;
                (whole && (!unsigned || f >= 0.0)).then_some(SqlValue::I64(f as i64))
            }
        }
        _ => None,
    }
}

/// `[+-]digits[.digits][e[+-]digits]`, what MySQL reads as a DECIMAL.
fn is_decimal(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// The sqlx query type the sink binds into.
pub type Query<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

/// Binds `value` as the next parameter of `query`.
pub fn bind<'q>(query: Query<'q>, value: &'q SqlValue<'q>) -> Query<'q> {
    match value {
        SqlValue::Null => query.bind(None::<&str>),
        SqlValue::I64(v) => query.bind(*v),
        SqlValue::U64(v) => query.bind(*v),
        SqlValue::F64(v) => query.bind(*v),
        SqlValue::Str(v) => query.bind(*v),
        SqlValue::Text(v) => query.bind(v.as_str()),
        SqlValue::Bytes(v) => query.bind(v.as_slice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(kind: ColumnKind, json: &str) -> Result<SqlValue<'static>, String> {
        let raw: &'static RawValue =
            serde_json::from_str(Box::leak(json.to_owned().into_boxed_str())).unwrap();
        to_sql(kind, raw)
    }

    #[test]
    fn values_fit_their_columns() {
        let int = ColumnKind::Int { unsigned: false };
        let uint = ColumnKind::Int { unsigned: true };
        assert_eq!(sql(int, "-5").unwrap(), SqlValue::I64(-5));
        assert_eq!(
            sql(uint, "18446744073709551615").unwrap(),
            SqlValue::U64(u64::MAX)
        );
        assert_eq!(sql(int, "3.0").unwrap(), SqlValue::I64(3));
        assert_eq!(sql(int, "true").unwrap(), SqlValue::I64(1));
        assert!(sql(int, "1.5").is_err());
        assert!(sql(uint, "-1").is_err());
        assert_eq!(
            sql(int, "\"abc\"").unwrap_err(),
            "expects an integer, got a string"
        );
        assert_eq!(
            sql(ColumnKind::Decimal, "\"-12.50\"").unwrap(),
            SqlValue::Str("-12.50")
        );
        assert_eq!(
            sql(ColumnKind::Decimal, "12345678901234567890.0123456789").unwrap(),
            SqlValue::Str("12345678901234567890.0123456789")
        );
        assert!(sql(ColumnKind::Decimal, "\"12,5\"").is_err());
        assert_eq!(
            sql(ColumnKind::Binary, "\"AAEC\"").unwrap(),
            SqlValue::Bytes(vec![0, 1, 2])
        );
        assert!(sql(ColumnKind::Binary, "\"***\"").is_err());
        assert_eq!(
            sql(ColumnKind::Json, "{\"a\": [1, null]}").unwrap(),
            SqlValue::Str("{\"a\": [1, null]}")
        );
        assert_eq!(
            sql(ColumnKind::Timestamp, "\"2024-05-01T12:00:00+02:00\"").unwrap(),
            SqlValue::Text("2024-05-01 10:00:00.000000".into())
        );
        assert!(sql(ColumnKind::DateTime, "\"tomorrow\"").is_err());
        assert!(sql(ColumnKind::Date, "\"2024-13-01\"").is_err());
        assert!(sql(ColumnKind::Text, "5").is_err());
        assert_eq!(sql(ColumnKind::Text, "null").unwrap(), SqlValue::Null);
        assert_eq!(
            sql(ColumnKind::Text, "\"plain\"").unwrap(),
            SqlValue::Str("plain")
        );
        assert_eq!(
            sql(ColumnKind::Text, "\"a\\nb\"").unwrap(),
            SqlValue::Text("a\nb".into())
        );
        assert_eq!(sql(ColumnKind::Float, "0.1").unwrap(), SqlValue::F64(0.1));
    }

    #[test]
    fn records_parse_into_borrowed_fields() {
        let record = br#"{"id": 1, "na\u006de": "x", "doc": {"k": [1]}}"#;
        let Fields(fields) = serde_json::from_slice(record).unwrap();
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["id", "name", "doc"]);
        assert!(matches!(fields[0].0, Cow::Borrowed(_)));
        assert_eq!(fields[2].1.get(), r#"{"k": [1]}"#);
        assert!(serde_json::from_slice::<Fields<'_>>(b"[1]").is_err());
        assert!(serde_json::from_slice::<Fields<'_>>(b"not json").is_err());
    }

    #[test]
    fn decimals_are_recognised() {
        for ok in ["0", "-1", "+1.5", ".5", "5.", "1e10", "1.5E-3"] {
            assert!(is_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "1e", "1.2.3", "abc", "1 "] {
            assert!(!is_decimal(bad), "{bad}");
        }
    }
}

//! Rows to records: one JSON object per row, column name to value, written straight into the
//! record's own buffer (one allocation per record, no intermediate `serde_json::Value`).
//!
//! The mapping (see the README): integers, FLOAT, DOUBLE, BIT and YEAR as JSON numbers; DECIMAL
//! as a string (no precision lost); DATE as `YYYY-MM-DD`; DATETIME and TIMESTAMP as RFC 3339 in
//! UTC; TIME as `[-]HH:MM:SS[.ffffff]`; text as strings; binary as base64 strings; JSON columns
//! as JSON; NULL (and MySQL's zero dates) as `null`.

use base64::Engine as _;
use bytes::Bytes;
use serde::de::IgnoredAny;
use sqlx::mysql::{MySql, MySqlRow, MySqlValueRef};
use sqlx::{Decode, Row, ValueRef};

use crate::datetime::{CivilDateTime, write_binary_time};
use crate::schema::ColumnKind;

/// Why a value could not be turned into JSON (a driver or protocol surprise, not a record fault).
#[derive(Debug, thiserror::Error)]
#[error("column `{column}`: {message}")]
pub struct EncodeError {
    column: String,
    message: String,
}

struct Field {
    /// `"name":` (with a leading comma after the first field), JSON-escaped once.
    key: Box<[u8]>,
    name: String,
    kind: ColumnKind,
}

/// Writes the first `fields.len()` columns of each row as a JSON object.
pub struct RowEncoder {
    fields: Vec<Field>,
    size_hint: usize,
}

impl RowEncoder {
    /// An encoder for rows whose leading columns are `columns` (name and kind), in order.
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, ColumnKind)>) -> Self {
        let fields: Vec<Field> = columns
            .into_iter()
            .enumerate()
            .map(|(i, (name, kind))| {
                let mut key = Vec::with_capacity(name.len() + 4);
                if i > 0 {
                    key.push(b',');
                }
                // Writing a str into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut key, name);
                key.push(b':');
                Field {
                    key: key.into_boxed_slice(),
                    name: name.to_owned(),
                    kind,
                }
            })
            .collect();
        let size_hint = fields.iter().map(|f| f.key.len() + 8).sum::<usize>() + 2;
        Self { fields, size_hint }
    }

    /// The row as a JSON object.
    pub fn encode(&mut self, row: &MySqlRow) -> Result<Bytes, EncodeError> {
        let mut out = Vec::with_capacity(self.size_hint);
        out.push(b'{');
        for (i, field) in self.fields.iter().enumerate() {
            out.extend_from_slice(&field.key);
            let value = row.try_get_raw(i).map_err(|e| EncodeError {
                column: field.name.clone(),
                message: e.to_string(),
            })?;
            write_value(&mut out, field.kind, value).map_err(|message| EncodeError {
                column: field.name.clone(),
                message,
            })?;
        }
        out.push(b'}');
        // Remember the size so the next record's buffer rarely grows.
        self.size_hint = self.size_hint.max(out.len());
        Ok(Bytes::from(out))
    }
}

fn decode<'r, T: Decode<'r, MySql>>(value: MySqlValueRef<'r>) -> Result<T, String> {
    T::decode(value).map_err(|e| e.to_string())
}

fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), String> {
    serde_json::to_writer(out, value).map_err(|e| e.to_string())
}

/// Appends one column value as JSON.
fn write_value(
    out: &mut Vec<u8>,
    kind: ColumnKind,
    value: MySqlValueRef<'_>,
) -> Result<(), String> {
    if value.is_null() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    match kind {
        ColumnKind::Int { unsigned: false } | ColumnKind::Year => json(out, &decode::<i64>(value)?),
        ColumnKind::Int { unsigned: true } => json(out, &decode::<u64>(value)?),
        ColumnKind::Bit => {
            let bytes = decode::<&[u8]>(value)?;
            let n = bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            json(out, &n)
        }
        ColumnKind::Float => json(out, &decode::<f32>(value)?),
        ColumnKind::Double => json(out, &decode::<f64>(value)?),
        ColumnKind::Decimal | ColumnKind::Text => write_text(out, decode::<&[u8]>(value)?),
        ColumnKind::Date | ColumnKind::DateTime | ColumnKind::Timestamp => {
            let raw = decode::<&[u8]>(value)?;
            let dt = CivilDateTime::from_binary(raw).ok_or("malformed date value")?;
            out.push(b'"');
            if kind == ColumnKind::Date {
                dt.write_date(out);
            } else {
                dt.write_rfc3339(out);
            }
            out.push(b'"');
            Ok(())
        }
        ColumnKind::Time => {
            out.push(b'"');
            write_binary_time(decode::<&[u8]>(value)?, out).ok_or("malformed time value")?;
            out.push(b'"');
            Ok(())
        }
        ColumnKind::Binary => {
            let bytes = decode::<&[u8]>(value)?;
            let engine = &base64::engine::general_purpose::STANDARD;
            let start = out.len() + 1;
            let len = base64::encoded_len(bytes.len(), true).ok_or("binary value too large")?;
            out.push(b'"');
            out.resize(start + len, 0);
            engine
                .encode_slice(bytes, &mut out[start..])
                .map_err(|e| e.to_string())?;
            out.push(b'"');
            Ok(())
        }
        ColumnKind::Json => {
            let raw = decode::<&[u8]>(value)?;
            match std::str::from_utf8(raw) {
                Ok(text) if serde_json::from_str::<IgnoredAny>(text).is_ok() => {
                    out.extend_from_slice(text.trim().as_bytes());
                    Ok(())
                }
                // Not valid JSON after all (a column without a check): keep it as a string.
                _ => write_text(out, raw),
            }
        }
    }
}

fn write_text(out: &mut Vec<u8>, raw: &[u8]) -> Result<(), String> {
    match std::str::from_utf8(raw) {
        Ok(text) => json(out, text),
        Err(_) => json(out, &String::from_utf8_lossy(raw)),
    }
}

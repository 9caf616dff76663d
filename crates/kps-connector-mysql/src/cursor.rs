//! The ingress read position: where the last row read (in memory) or confirmed (durably) sits
//! in the table's order, how it is saved in the stream's state, and how it is read off a row.
//!
//! The position is an enum so that a change-data-capture mode (a binlog file and offset, or a
//! GTID set) can later be one more variant with its own reader, saved the same way.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sqlx::mysql::{MySql, MySqlRow};
use sqlx::{Decode, Row, ValueRef};

use crate::datetime::CivilDateTime;
use crate::params::IngressMode;
use crate::schema::ColumnKind;

/// The state key the cursor is saved under.
pub const STATE_KEY: &str = "cursor";

/// A place in the table's read order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Before every row.
    Start,
    /// After the row with this incrementing value.
    Id(i128),
    /// After every row with this timestamp.
    Ts(CivilDateTime),
    /// After the row with this timestamp and incrementing value.
    TsId(CivilDateTime, i128),
}

/// The cursor as saved: the position plus what it is a position in, so a stream whose table or
/// mode changed does not resume from a meaningless place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    v: u32,
    table: String,
    mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cursor_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ts: Option<String>,
}

/// Encodes and decodes saved cursors for one stream's table and mode.
#[derive(Debug, Clone)]
pub struct CursorCodec {
    table: String,
    mode: IngressMode,
}

/// Why a saved cursor is not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// It is not a cursor this version wrote.
    #[error("unreadable saved cursor")]
    Unreadable,
    /// It belongs to another table, mode or column.
    #[error("the saved cursor is for another table, mode or cursor column")]
    Mismatch,
}

impl CursorCodec {
    /// A codec for `table` read in `mode`.
    pub fn new(table: &str, mode: &IngressMode) -> Self {
        Self {
            table: table.to_owned(),
            mode: mode.clone(),
        }
    }

    fn saved(&self, id: Option<String>, ts: Option<String>) -> Saved {
        Saved {
            v: 1,
            table: self.table.clone(),
            mode: self.mode.name().to_owned(),
            cursor_column: self.mode.cursor().map(|c| c.as_str().to_owned()),
            timestamp_column: self.mode.timestamp().map(|c| c.as_str().to_owned()),
            id,
            ts,
        }
    }

    /// The bytes to save for `position`.
    pub fn encode(&self, position: &Position) -> Bytes {
        let rfc = |t: &CivilDateTime| t.to_sql();
        let saved = match position {
            Position::Start => self.saved(None, None),
            Position::Id(id) => self.saved(Some(id.to_string()), None),
            Position::Ts(ts) => self.saved(None, Some(rfc(ts))),
            Position::TsId(ts, id) => self.saved(Some(id.to_string()), Some(rfc(ts))),
        };
        // Serializing plain strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(&saved).unwrap_or_default())
    }

    /// The position saved in `bytes`.
    pub fn decode(&self, bytes: &[u8]) -> Result<Position, CursorError> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|_| CursorError::Unreadable)?;
        if saved.v != 1 {
            return Err(CursorError::Unreadable);
        }
        let expected = self.saved(None, None);
        if (
            &saved.table,
            &saved.mode,
            &saved.cursor_column,
            &saved.timestamp_column,
        ) != (
            &expected.table,
            &expected.mode,
            &expected.cursor_column,
            &expected.timestamp_column,
        ) {
            return Err(CursorError::Mismatch);
        }
        let id = saved
            .id
            .map(|s| s.parse::<i128>().map_err(|_| CursorError::Unreadable))
            .transpose()?;
        let ts = saved
            .ts
            .map(|s| CivilDateTime::from_sql(&s).ok_or(CursorError::Unreadable))
            .transpose()?;
        Ok(match (&self.mode, id, ts) {
            (_, None, None) => Position::Start,
            (IngressMode::Incrementing { .. }, Some(id), None) => Position::Id(id),
            (IngressMode::Timestamp { .. }, None, Some(ts)) => Position::Ts(ts),
            (IngressMode::TimestampIncrementing { .. }, Some(id), Some(ts)) => {
                Position::TsId(ts, id)
            }
            _ => return Err(CursorError::Unreadable),
        })
    }
}

/// Reads a position off a row: the incrementing value at `id_at`, the timestamp at `ts_at`.
#[derive(Debug, Clone, Copy)]
pub struct PositionReader {
    /// Column index and signedness of the incrementing column.
    pub id_at: Option<(usize, bool)>,
    /// Column index of the timestamp column.
    pub ts_at: Option<usize>,
}

impl PositionReader {
    /// The row's position, or an error naming what is wrong.
    pub fn read(&self, row: &MySqlRow) -> Result<Position, String> {
        let id = match self.id_at {
            Some((at, unsigned)) => Some(read_id(row, at, unsigned)?),
            None => None,
        };
        let ts = match self.ts_at {
            Some(at) => Some(read_ts(row, at)?),
            None => None,
        };
        Ok(match (ts, id) {
            (None, Some(id)) => Position::Id(id),
            (Some(ts), None) => Position::Ts(ts),
            (Some(ts), Some(id)) => Position::TsId(ts, id),
            (None, None) => Position::Start,
        })
    }
}

/// The integer at `at`, signed or not.
pub fn read_id(row: &MySqlRow, at: usize, unsigned: bool) -> Result<i128, String> {
    let value = row.try_get_raw(at).map_err(|e| e.to_string())?;
    if value.is_null() {
        return Err("the cursor column is null in a row".to_owned());
    }
    if unsigned {
        <u64 as Decode<MySql>>::decode(value)
            .map(i128::from)
            .map_err(|e| e.to_string())
    } else {
        <i64 as Decode<MySql>>::decode(value)
            .map(i128::from)
            .map_err(|e| e.to_string())
    }
}

/// The date-time at `at` (a zero date reads as 0000-00-00 00:00:00).
pub fn read_ts(row: &MySqlRow, at: usize) -> Result<CivilDateTime, String> {
    let value = row.try_get_raw(at).map_err(|e| e.to_string())?;
    let raw = <&[u8] as Decode<MySql>>::decode(value)
        .map_err(|_| "the timestamp column is null in a row".to_owned())?;
    CivilDateTime::from_binary(raw).ok_or_else(|| "malformed timestamp value".to_owned())
}

/// Whether `kind` can be read as an incrementing cursor, and its signedness.
pub fn id_kind(kind: ColumnKind) -> Option<bool> {
    match kind {
        ColumnKind::Int { unsigned } => Some(unsigned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datetime::parse_rfc3339;
    use crate::ident::Ident;

    fn ident(s: &str) -> Ident {
        Ident::new(s).unwrap()
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_tables() {
        let mode = IngressMode::TimestampIncrementing {
            timestamp: ident("ts"),
            cursor: ident("id"),
        };
        let codec = CursorCodec::new("orders", &mode);
        let ts = parse_rfc3339("2024-05-01T10:00:00.000250Z").unwrap();
        let pos = Position::TsId(ts, u64::MAX as i128);
        assert_eq!(codec.decode(&codec.encode(&pos)).unwrap(), pos);
        assert_eq!(
            codec.decode(&codec.encode(&Position::Start)).unwrap(),
            Position::Start
        );
        let other = CursorCodec::new("invoices", &mode);
        assert_eq!(
            other.decode(&codec.encode(&pos)),
            Err(CursorError::Mismatch)
        );
        let inc = CursorCodec::new(
            "orders",
            &IngressMode::Incrementing {
                cursor: ident("id"),
            },
        );
        assert_eq!(inc.decode(&codec.encode(&pos)), Err(CursorError::Mismatch));
        assert_eq!(inc.decode(b"garbage"), Err(CursorError::Unreadable));
        assert_eq!(
            inc.decode(&inc.encode(&Position::Id(-5))).unwrap(),
            Position::Id(-5)
        );
        let ts_codec = CursorCodec::new(
            "orders",
            &IngressMode::Timestamp {
                timestamp: ident("ts"),
            },
        );
        let zero = Position::Ts(CivilDateTime::default());
        assert_eq!(ts_codec.decode(&ts_codec.encode(&zero)).unwrap(), zero);
    }
}

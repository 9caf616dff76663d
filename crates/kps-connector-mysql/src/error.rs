//! How database errors become connector errors: connection trouble is retryable (the core
//! reopens), a row the database refuses for what it holds is a rejected record. Messages name
//! the error and the column, never the value.

use kps_connector_core::ConnectorError;
use sqlx::mysql::MySqlDatabaseError;

/// A failed statement, classified.
#[derive(Debug)]
pub enum WriteFailure {
    /// The database refused the row's content (duplicate key, value out of range, ...).
    Record(String),
    /// Anything else: the connection, a lock, the table itself.
    Retry(ConnectorError),
}

/// A retryable error for a failed operation (`what` says which), e.g. "query `orders`: ...".
pub fn retryable(what: &str, e: &sqlx::Error) -> ConnectorError {
    ConnectorError::retryable(format!("{what}: {}", describe(e)))
}

/// The error without record values: database errors of the row-content kind are reduced to
/// their number, SQLSTATE and a short text.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<MySqlDatabaseError>() {
            Some(my) if record_error(my).is_some() => record_reason(my),
            Some(my) => format!("mysql error {}: {}", my.number(), my.message()),
            None => db.message().to_owned(),
        },
        other => other.to_string(),
    }
}

/// Classifies the error of an INSERT.
pub fn classify_write(e: sqlx::Error) -> WriteFailure {
    if let sqlx::Error::Database(db) = &e
        && let Some(my) = db.try_downcast_ref::<MySqlDatabaseError>()
        && record_error(my).is_some()
    {
        return WriteFailure::Record(record_reason(my));
    }
    WriteFailure::Retry(retryable("write", &e))
}

/// Whether the error is about the row's content, with a short description.
fn record_error(e: &MySqlDatabaseError) -> Option<&'static str> {
    let text = match e.number() {
        1048 => "a column that cannot be null was null",
        1062 | 1586 | 1859 => "duplicate key",
        1216 | 1452 => "foreign key constraint fails",
        1264 | 1690 => "value out of range",
        1265 => "value truncated",
        1292 | 1366 | 1367 | 1411 => "incorrect value for the column type",
        1300 => "invalid character string",
        1364 => "a column without a default value is missing",
        1406 => "value too long for the column",
        1416 => "not a geometry value",
        1526 => "no partition for the value",
        3140 => "invalid JSON text",
        3819 | 4025 => "check constraint fails",
        _ => match e.code() {
            Some(state) if state.starts_with("22") => "data exception",
            Some(state) if state.starts_with("23") => "integrity constraint violation",
            _ => return None,
        },
    };
    Some(text)
}

fn record_reason(e: &MySqlDatabaseError) -> String {
    let text = record_error(e).unwrap_or("refused");
    let column = column_of(e.message())
        .map(|c| format!(" (column `{c}`)"))
        .unwrap_or_default();
    format!("mysql error {}: {text}{column}", e.number())
}

/// The column a MySQL message names as `column 'name'`, if it does (a name, never a value).
/// MariaDB also writes `` column `db`.`table`.`name` ``: the last quoted part is the column.
fn column_of(message: &str) -> Option<&str> {
    // "column 'n'" and "Column 'n' cannot be null".
    let name = if let Some(at) = message.find("olumn '") {
        let rest = &message[at + "olumn '".len()..];
        &rest[..rest.find('\'')?]
    } else {
        let at = message.find("column `")?;
        let rest = &message[at + "column ".len()..];
        let path = &rest[..rest.find(' ').unwrap_or(rest.len())];
        path.rsplit('.').next()?.trim_matches('`')
    };
    (!name.is_empty() && name.len() <= crate::ident::MAX_IDENT_LEN).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_names_are_taken_from_messages() {
        assert_eq!(
            column_of("Incorrect integer value: 'abc' for column `test`.`t`.`n` at row 1"),
            Some("n")
        );
        assert_eq!(column_of("Column 'name' cannot be null"), Some("name"));
        assert_eq!(
            column_of("Out of range value for column 'n' at row 1"),
            Some("n")
        );
        assert_eq!(column_of("Duplicate entry 'x' for key 'PRIMARY'"), None);
    }
}

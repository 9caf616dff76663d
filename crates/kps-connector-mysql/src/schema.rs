//! What a table looks like, from `information_schema`: its columns with the kind of value each
//! holds (which decides the JSON mapping both ways), its unique keys and its storage engine.

use sqlx::Row;
use sqlx::mysql::MySqlConnection;

/// The kind of value a column holds, which decides how it maps to and from JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// TINYINT ... BIGINT (BOOL is TINYINT(1)): a JSON number.
    Int {
        /// UNSIGNED.
        unsigned: bool,
    },
    /// FLOAT: a JSON number (shortest form that reads back as the same FLOAT).
    Float,
    /// DOUBLE / REAL: a JSON number.
    Double,
    /// DECIMAL / NUMERIC: a JSON string, every digit kept.
    Decimal,
    /// BIT(n): a JSON number.
    Bit,
    /// YEAR: a JSON number.
    Year,
    /// DATE: `YYYY-MM-DD`.
    Date,
    /// DATETIME: RFC 3339 in UTC.
    DateTime,
    /// TIMESTAMP: RFC 3339 in UTC.
    Timestamp,
    /// TIME (a duration): `[-]HH:MM:SS[.ffffff]`.
    Time,
    /// CHAR, VARCHAR, TEXT, ENUM, SET and anything else textual: a JSON string.
    Text,
    /// BINARY, VARBINARY, BLOB, spatial types: a base64 JSON string.
    Binary,
    /// JSON (MySQL's type, or MariaDB's LONGTEXT with a `json_valid` check): JSON itself.
    Json,
}

impl ColumnKind {
    /// The kind of a column from its `DATA_TYPE` and `COLUMN_TYPE`.
    pub fn from_types(data_type: &str, column_type: &str) -> Self {
        let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bool"
            | "boolean" => ColumnKind::Int { unsigned },
            "float" => ColumnKind::Float,
            "double" | "real" | "double precision" => ColumnKind::Double,
            "decimal" | "numeric" | "dec" | "fixed" => ColumnKind::Decimal,
            "bit" => ColumnKind::Bit,
            "year" => ColumnKind::Year,
            "date" => ColumnKind::Date,
            "datetime" => ColumnKind::DateTime,
            "timestamp" => ColumnKind::Timestamp,
            "time" => ColumnKind::Time,
            "json" => ColumnKind::Json,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
            | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
            | "multilinestring" | "multipolygon" | "geometrycollection" => ColumnKind::Binary,
            _ => ColumnKind::Text,
        }
    }

    /// Whether the column can serve as an incrementing cursor.
    pub fn is_integer(self) -> bool {
        matches!(self, ColumnKind::Int { .. })
    }

    /// Whether the column can serve as a last-modified cursor.
    pub fn is_temporal(self) -> bool {
        matches!(
            self,
            ColumnKind::Date | ColumnKind::DateTime | ColumnKind::Timestamp
        )
    }

    /// What JSON a record must hold for this column (in messages).
    pub fn expects(self) -> &'static str {
        match self {
            ColumnKind::Int { unsigned: false } => "an integer",
            ColumnKind::Int { unsigned: true } => "a non-negative integer",
            ColumnKind::Float | ColumnKind::Double => "a number",
            ColumnKind::Decimal => "a decimal number or a string holding one",
            ColumnKind::Bit => "a non-negative integer",
            ColumnKind::Year => "an integer year",
            ColumnKind::Date => "a date string YYYY-MM-DD",
            ColumnKind::DateTime | ColumnKind::Timestamp => "an RFC 3339 date-time string",
            ColumnKind::Time => "a time string [-]HH:MM:SS[.ffffff]",
            ColumnKind::Text => "a string",
            ColumnKind::Binary => "a base64 string",
            ColumnKind::Json => "any JSON value",
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Its name as the catalog spells it.
    pub name: String,
    /// What it holds.
    pub kind: ColumnKind,
    /// Part of the primary key.
    pub primary: bool,
    /// AUTO_INCREMENT.
    pub auto_increment: bool,
}

/// A table's columns (in table order), unique keys and engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// The columns, in table order.
    pub columns: Vec<ColumnInfo>,
    /// The column lists of the primary key and every unique index.
    pub unique_keys: Vec<Vec<String>>,
    /// The storage engine (InnoDB, Aria, MyISAM, ...), if known.
    pub engine: Option<String>,
}

impl TableSchema {
    /// Loads `table` of the connection's database; `None` if there is no such table.
    pub async fn load(
        conn: &mut MySqlConnection,
        table: &str,
    ) -> Result<Option<Self>, sqlx::Error> {
        let tables = sqlx::query(
            "SELECT CAST(ENGINE AS CHAR) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let Some(first) = tables.first() else {
            return Ok(None);
        };
        let engine: Option<String> = first.try_get(0)?;

        let rows = sqlx::query(
            "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR), \
             CAST(COLUMN_KEY AS CHAR), CAST(EXTRA AS CHAR) \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let mut columns = Vec::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get(0)?;
            let data_type: String = row.try_get(1)?;
            let column_type: String = row.try_get(2)?;
            let key: Option<String> = row.try_get(3)?;
            let extra: Option<String> = row.try_get(4)?;
            columns.push(ColumnInfo {
                kind: ColumnKind::from_types(&data_type, &column_type),
                primary: key.as_deref() == Some("PRI"),
                auto_increment: extra
                    .is_some_and(|e| e.to_ascii_lowercase().contains("auto_increment")),
                name,
            });
        }

        // MariaDB's JSON is LONGTEXT with a `json_valid(col)` check constraint. MySQL has a
        // real JSON type and no TABLE_NAME in this view: there the query fails, harmlessly.
        let checks = sqlx::query(
            "SELECT CAST(CHECK_CLAUSE AS CHAR) FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await;
        match checks {
            Ok(checks) => {
                for row in &checks {
                    let clause: String = row.try_get(0)?;
                    let clause: String = clause.chars().filter(|c| !c.is_whitespace()).collect();
                    for column in &mut columns {
                        if column.kind == ColumnKind::Text
                            && clause
                                .eq_ignore_ascii_case(&format!("json_valid(`{}`)", column.name))
                        {
                            column.kind = ColumnKind::Json;
                        }
                    }
                }
            }
            Err(sqlx::Error::Database(e)) => {
                tracing::debug!(error = %e, "no check constraints view with table names (not MariaDB)");
            }
            Err(e) => return Err(e),
        }

        let keys = sqlx::query(
            "SELECT CAST(INDEX_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR) FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0 \
             ORDER BY INDEX_NAME, SEQ_IN_INDEX",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let mut unique_keys: Vec<(String, Vec<String>)> = Vec::new();
        for row in &keys {
            let index: String = row.try_get(0)?;
            let column: String = row.try_get(1)?;
            match unique_keys.last_mut() {
                Some((name, cols)) if *name == index => cols.push(column),
                _ => unique_keys.push((index, vec![column])),
            }
        }
        Ok(Some(Self {
            columns,
            unique_keys: unique_keys.into_iter().map(|(_, cols)| cols).collect(),
            engine,
        }))
    }

    /// The column named `name` (exactly, or else ignoring ASCII case, as MySQL does).
    pub fn column(&self, name: &str) -> Option<(usize, &ColumnInfo)> {
        self.columns
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
            .or_else(|| {
                self.columns
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.name.eq_ignore_ascii_case(name))
            })
    }

    /// Whether `names` are exactly the columns of the primary key or of a unique index.
    pub fn is_unique_key(&self, names: &[&str]) -> bool {
        self.unique_keys.iter().any(|key| {
            key.len() == names.len()
                && names
                    .iter()
                    .all(|n| key.iter().any(|k| k.eq_ignore_ascii_case(n)))
        })
    }

    /// Whether the engine rolls back a failed statement alone (InnoDB and friends).
    pub fn is_transactional(&self) -> bool {
        self.engine.as_deref().is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "innodb" | "xtradb" | "rocksdb" | "tokudb"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_catalog_types() {
        assert_eq!(
            ColumnKind::from_types("bigint", "bigint(20) unsigned"),
            ColumnKind::Int { unsigned: true }
        );
        assert_eq!(
            ColumnKind::from_types("tinyint", "tinyint(1)"),
            ColumnKind::Int { unsigned: false }
        );
        assert_eq!(
            ColumnKind::from_types("decimal", "decimal(30,10)"),
            ColumnKind::Decimal
        );
        assert_eq!(
            ColumnKind::from_types("varbinary", "varbinary(16)"),
            ColumnKind::Binary
        );
        assert_eq!(
            ColumnKind::from_types("longtext", "longtext"),
            ColumnKind::Text
        );
        assert_eq!(ColumnKind::from_types("json", "json"), ColumnKind::Json);
        assert_eq!(
            ColumnKind::from_types("enum", "enum('a','b')"),
            ColumnKind::Text
        );
        assert_eq!(
            ColumnKind::from_types("timestamp", "timestamp(6)"),
            ColumnKind::Timestamp
        );
        assert!(ColumnKind::Date.is_temporal() && !ColumnKind::Time.is_temporal());
    }
}

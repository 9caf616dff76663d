//! Egress: JSON records to rows, with multi-row INSERTs (or INSERT ... ON DUPLICATE KEY UPDATE)
//! in one transaction per batch.
//!
//! A record that cannot be written is rejected on its own and the rest of its batch is still
//! written: records that are not JSON objects, name an unknown column or hold a value of the
//! wrong type are refused before any SQL runs; when the database refuses a multi-row statement
//! for a row's content (a duplicate key, a value out of range), that statement's rows are
//! written again one by one in the same transaction, and only the refused ones are rejected.

use std::collections::HashMap;

use bytes::Bytes;
use kps_connector_core::{
    ConnectorError, ConnectorResult, Sink, StreamContext, WriteOutcome, async_trait,
};
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

use crate::bind::{Fields, SqlValue, bind, to_sql};
use crate::connect::connect;
use crate::error::{WriteFailure, classify_write, retryable};
use crate::ident::{quote_name, shown};
use crate::params::EgressSettings;
use crate::schema::{ColumnInfo, TableSchema};

/// MySQL's limit on placeholders in one prepared statement.
const MAX_PLACEHOLDERS: usize = 65_535;

/// The table a sink writes, with its statement parts.
#[derive(Debug)]
struct Target {
    table: String,
    columns: Vec<ColumnInfo>,
    quoted: Vec<String>,
    by_name: HashMap<String, usize>,
    /// Upsert: the key columns (indices into `columns`).
    keys: Option<Vec<usize>>,
    max_rows: usize,
}

/// One record ready to insert: its index in the batch and its values by column index.
struct Row<'a> {
    index: usize,
    values: Vec<(usize, SqlValue<'a>)>,
}

impl Row<'_> {
    fn same_columns(&self, other: &Row<'_>) -> bool {
        self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|(a, b)| a.0 == b.0)
    }
}

/// The egress sink of one stream.
pub struct MysqlSink {
    conn: MySqlConnection,
    target: Target,
}

impl MysqlSink {
    /// Connects and checks the table, its columns and (upsert) its key.
    pub async fn open(ctx: StreamContext, settings: &EgressSettings) -> ConnectorResult<Self> {
        let t = &settings.table;
        let mut conn = connect(&t.url, &t.password, &t.tls).await?;
        let schema = TableSchema::load(&mut conn, t.table.as_str())
            .await
            .map_err(|e| retryable(&format!("read the columns of `{}`", t.table), &e))?
            .ok_or_else(|| {
                ConnectorError::retryable(format!("no table `{}` in {}", t.table, t.url.shown()))
            })?;
        let columns: Vec<ColumnInfo> = match &t.columns {
            Some(names) => names
                .iter()
                .map(|n| {
                    schema
                        .column(n.as_str())
                        .map(|(_, c)| c.clone())
                        .ok_or_else(|| {
                            ConnectorError::invalid(
                                "columns",
                                format!("no column {} in the table", shown(n.as_str())),
                            )
                        })
                })
                .collect::<ConnectorResult<_>>()?,
            None => schema.columns.clone(),
        };
        let index_of = |name: &str| {
            columns
                .iter()
                .position(|c| c.name.eq_ignore_ascii_case(name))
        };
        let keys = match &settings.upsert_keys {
            Some(keys) => {
                let indices = keys
                    .iter()
                    .map(|k| {
                        index_of(k.as_str()).ok_or_else(|| {
                            ConnectorError::invalid(
                                "key_columns",
                                format!("no column `{k}` in the table"),
                            )
                        })
                    })
                    .collect::<ConnectorResult<Vec<usize>>>()?;
                let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
                if !schema.is_unique_key(&names) {
                    return Err(ConnectorError::invalid(
                        "key_columns",
                        format!(
                            "({}) is not the primary key or a unique index of `{}`",
                            names.join(", "),
                            t.table
                        ),
                    ));
                }
                Some(indices)
            }
            None => None,
        };
        if !schema.is_transactional() {
            tracing::warn!(
                engine = schema.engine.as_deref().unwrap_or("unknown"),
                "the table's engine is not transactional: a refused multi-row insert may leave \
                 some of its rows written, and those are then written again"
            );
        }
        let by_name = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let quoted = columns.iter().map(|c| quote_name(&c.name)).collect();
        let max_rows = t
            .batch_size
            .min(MAX_PLACEHOLDERS / columns.len().max(1))
            .max(1);
        tracing::info!(
            table = %t.table,
            database = %t.url.shown(),
            upsert = keys.is_some(),
            stream = ctx.stream_id(),
            "writing table"
        );
        Ok(Self {
            conn,
            target: Target {
                table: t.table.quoted().to_string(),
                columns,
                quoted,
                by_name,
                keys,
                max_rows,
            },
        })
    }
}

#[async_trait]
impl Sink for MysqlSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        let mut outcome = WriteOutcome::default();
        let parsed: Vec<Result<Fields<'_>, String>> = records
            .iter()
            .map(|r| serde_json::from_slice(r).map_err(|e| not_an_object(&e)))
            .collect();
        let mut rows = Vec::with_capacity(records.len());
        for (index, record) in parsed.iter().enumerate() {
            match record
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|m| self.target.prepare(m))
            {
                Ok(values) => rows.push(Row { index, values }),
                Err(reason) => outcome.reject(index, reason),
            }
        }
        if rows.is_empty() {
            return Ok(outcome);
        }

        let target = &self.target;
        let mut tx = self
            .conn
            .begin()
            .await
            .map_err(|e| retryable("begin a transaction", &e))?;
        let mut start = 0;
        while start < rows.len() {
            let run = rows[start..]
                .iter()
                .take_while(|r| r.same_columns(&rows[start]))
                .count();
            let n = chunk_len(run, target.max_rows);
            let chunk = &rows[start..start + n];
            match target.insert(&mut tx, chunk).await {
                Ok(()) => {}
                Err(WriteFailure::Record(_)) => {
                    // Find the refused rows: the statement failed as a whole, so write its
                    // rows one at a time.
                    for row in chunk {
                        match target.insert(&mut tx, std::slice::from_ref(row)).await {
                            Ok(()) => {}
                            Err(WriteFailure::Record(reason)) => outcome.reject(row.index, reason),
                            Err(WriteFailure::Retry(e)) => return Err(e),
                        }
                    }
                }
                Err(WriteFailure::Retry(e)) => return Err(e),
            }
            start += n;
        }
        tx.commit().await.map_err(|e| retryable("commit", &e))?;
        outcome.rejected.sort_by_key(|r| r.index);
        Ok(outcome)
    }
}

/// Why a record is not a JSON object, without quoting it (serde's messages may hold a value).
fn not_an_object(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => "not a JSON object".to_owned(),
        _ => format!(
            "not JSON (syntax error at line {} column {})",
            e.line(),
            e.column()
        ),
    }
}

/// How many rows of a run of `available` go in the next statement: the cap, or else the largest
/// power of two, so a stream only ever prepares a handful of distinct statements.
fn chunk_len(available: usize, cap: usize) -> usize {
    if available >= cap {
        cap
    } else {
        1 << (usize::BITS - 1 - available.max(1).leading_zeros())
    }
}

impl Target {
    /// Checks a record against the columns and converts its values.
    fn prepare<'a>(&self, record: &'a Fields<'a>) -> Result<Vec<(usize, SqlValue<'a>)>, String> {
        let mut values = Vec::with_capacity(record.0.len());
        for (name, value) in &record.0 {
            let name = name.as_ref();
            let index = self
                .by_name
                .get(name)
                .copied()
                .or_else(|| {
                    self.columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(name))
                })
                .ok_or_else(|| format!("unknown column {}", shown(name)))?;
            let column = &self.columns[index];
            let value =
                to_sql(column.kind, value).map_err(|e| format!("column `{}` {e}", column.name))?;
            values.push((index, value));
        }
        values.sort_by_key(|(i, _)| *i);
        if let Some(pair) = values.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(format!(
                "column `{}` is given twice",
                self.columns[pair[0].0].name
            ));
        }
        if let Some(keys) = &self.keys
            && let Some(missing) = keys
                .iter()
                .find(|k| values.binary_search_by_key(*k, |(i, _)| *i).is_err())
        {
            return Err(format!(
                "key column `{}` is missing",
                self.columns[*missing].name
            ));
        }
        Ok(values)
    }

    /// The statement for `rows` rows setting `columns`.
    fn sql(&self, columns: &[usize], rows: usize) -> String {
        let names: Vec<&str> = columns.iter().map(|i| self.quoted[*i].as_str()).collect();
        let mut sql = String::with_capacity(
            32 + names.iter().map(|n| n.len() + 1).sum::<usize>() + rows * (columns.len() * 2 + 3),
        );
        sql.push_str("INSERT INTO ");
        sql.push_str(&self.table);
        sql.push_str(" (");
        sql.push_str(&names.join(","));
        sql.push_str(") VALUES ");
        let mut tuple = String::with_capacity(columns.len() * 2 + 2);
        tuple.push('(');
        for i in 0..columns.len() {
            tuple.push_str(if i == 0 { "?" } else { ",?" });
        }
        tuple.push(')');
        for r in 0..rows {
            if r > 0 {
                sql.push(',');
            }
            sql.push_str(&tuple);
        }
        if let Some(keys) = &self.keys {
            let updates: Vec<String> = columns
                .iter()
                .filter(|i| !keys.contains(i))
                .map(|i| format!("{0}=VALUES({0})", self.quoted[*i]))
                .collect();
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            if updates.is_empty() {
                let key = &self.quoted[keys[0]];
                sql.push_str(&format!("{key}={key}"));
            } else {
                sql.push_str(&updates.join(","));
            }
        }
        sql
    }

    /// Inserts `rows` (all setting the same columns) with one statement.
    async fn insert(
        &self,
        conn: &mut MySqlConnection,
        rows: &[Row<'_>],
    ) -> Result<(), WriteFailure> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let columns: Vec<usize> = first.values.iter().map(|(i, _)| *i).collect();
        let sql = self.sql(&columns, rows.len());
        let mut query = sqlx::query(&sql);
        for row in rows {
            for (_, value) in &row.values {
                query = bind(query, value);
            }
        }
        query
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(classify_write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ColumnKind;

    fn target(upsert: bool) -> Target {
        let columns: Vec<ColumnInfo> = ["id", "name", "n"]
            .iter()
            .map(|n| ColumnInfo {
                name: (*n).to_owned(),
                kind: if *n == "name" {
                    ColumnKind::Text
                } else {
                    ColumnKind::Int { unsigned: false }
                },
                primary: *n == "id",
                auto_increment: false,
            })
            .collect();
        Target {
            table: "`t`".into(),
            quoted: columns.iter().map(|c| quote_name(&c.name)).collect(),
            by_name: columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect(),
            columns,
            keys: upsert.then(|| vec![0]),
            max_rows: 1000,
        }
    }

    #[test]
    fn statements_quote_every_name_and_bind_every_value() {
        let t = target(false);
        assert_eq!(
            t.sql(&[0, 1], 2),
            "INSERT INTO `t` (`id`,`name`) VALUES (?,?),(?,?)"
        );
        assert_eq!(t.sql(&[], 2), "INSERT INTO `t` () VALUES (),()");
        let u = target(true);
        assert_eq!(
            u.sql(&[0, 2], 1),
            "INSERT INTO `t` (`id`,`n`) VALUES (?,?) ON DUPLICATE KEY UPDATE `n`=VALUES(`n`)"
        );
        assert_eq!(
            u.sql(&[0], 1),
            "INSERT INTO `t` (`id`) VALUES (?) ON DUPLICATE KEY UPDATE `id`=`id`"
        );
    }

    #[test]
    fn records_are_checked_before_any_sql() {
        let t = target(true);
        let ok: Fields<'_> = serde_json::from_str(r#"{"name":"a","id":1}"#).unwrap();
        let values = t.prepare(&ok).unwrap();
        assert_eq!(
            values.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let unknown: Fields<'_> = serde_json::from_str(r#"{"id":1,"x`; DROP TABLE t":1}"#).unwrap();
        assert!(
            t.prepare(&unknown)
                .unwrap_err()
                .starts_with("unknown column")
        );
        let wrong: Fields<'_> = serde_json::from_str(r#"{"id":"one"}"#).unwrap();
        assert_eq!(
            t.prepare(&wrong).unwrap_err(),
            "column `id` expects an integer, got a string"
        );
        let keyless: Fields<'_> = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!(
            t.prepare(&keyless).unwrap_err(),
            "key column `id` is missing"
        );
        let twice: Fields<'_> = serde_json::from_str(r#"{"id":1,"ID":2}"#).unwrap();
        assert_eq!(t.prepare(&twice).unwrap_err(), "column `id` is given twice");
    }

    #[test]
    fn parse_errors_do_not_quote_the_record() {
        let e = serde_json::from_slice::<Fields<'_>>(br#""secret""#).unwrap_err();
        assert_eq!(not_an_object(&e), "not a JSON object");
        let e = serde_json::from_slice::<Fields<'_>>(b"secret").unwrap_err();
        assert_eq!(
            not_an_object(&e),
            "not JSON (syntax error at line 1 column 1)"
        );
        let e = serde_json::from_slice::<Fields<'_>>(br#"{"a": "secret"#).unwrap_err();
        assert!(!not_an_object(&e).contains("secret"));
    }

    #[test]
    fn chunks_are_the_cap_or_powers_of_two() {
        assert_eq!(chunk_len(5000, 1000), 1000);
        assert_eq!(chunk_len(1000, 1000), 1000);
        assert_eq!(chunk_len(999, 1000), 512);
        assert_eq!(chunk_len(3, 1000), 2);
        assert_eq!(chunk_len(1, 1000), 1);
        assert_eq!(chunk_len(7, 5), 5);
    }
}

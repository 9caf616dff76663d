//! Egress: JSON records to rows, with multi-row INSERTs (or INSERT ... ON DUPLICATE KEY UPDATE)
//! in transactions committed in order, a batch's rows always in one transaction.
//!
//! A record that cannot be written is rejected on its own and the rest of its batch is still
//! written: records that are not JSON objects, name an unknown column or hold a value of the
//! wrong type are refused before any SQL runs; when the database refuses a multi-row statement
//! for a row's content (a duplicate key, a value out of range), that statement's rows are
//! written again one by one in the same transaction, and only the refused ones are rejected.
//!
//! Writes are pipelined ([`Sink::send`]): `send` writes a batch's rows (every INSERT awaited, so
//! the rows get their auto-increment ids in the order the batches were sent and the refused
//! ones are known) and returns what resolves once their transaction committed; up to
//! [`PENDING_WRITES`] batches wait for that at once. A batch opens a transaction (its first
//! INSERT on an idle connection, at most [`CONNECTIONS`], with autocommit off) and hands it to a
//! commit task, which sends `COMMIT` as soon as the transaction before it committed. Until then, the batches sent next are written
//! in the same transaction and share its `COMMIT`: while one transaction commits, the next one
//! collects what arrives meanwhile, so a busy stream commits larger groups of rows, and a quiet
//! one commits each batch at once. The commit runs in a task of its own rather than in the
//! confirmation, so a later batch waiting for a row lock this transaction holds (an upsert of
//! the same key) never waits for a commit nobody drives. Transactions commit in the order they
//! were opened; when one fails, the ones after it roll back, and a sink that is dropped (the
//! core reopens it after an error) rolls back the one it has not started committing: the core
//! sends every unconfirmed batch again, in order, to the new sink.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use kps_connector_core::{
    ConnectorError, ConnectorResult, PendingWrite, Sink, StreamContext, WriteOutcome, async_trait,
};
use sqlx::Executor;
use sqlx::mysql::MySqlConnection;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::bind::{Fields, SqlValue, bind, to_sql};
use crate::connect::connect;
use crate::error::{WriteFailure, classify_write, retryable};
use crate::ident::{quote_name, shown};
use crate::params::{EgressSettings, TableSettings};
use crate::schema::{ColumnInfo, TableSchema};

/// MySQL's limit on placeholders in one prepared statement.
const MAX_PLACEHOLDERS: usize = 65_535;

/// Batches written and waiting for their `COMMIT` at once (the core's egress window).
pub const PENDING_WRITES: usize = 4;

/// The most connections a sink opens: one while the stream is quiet, two under load (one
/// transaction committing, the next one written).
pub const CONNECTIONS: usize = 2;

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
    /// Where to open more connections.
    settings: TableSettings,
    target: Target,
    /// Connections with no transaction open.
    idle: Vec<MySqlConnection>,
    /// The commit tasks of the transactions under way, oldest first; each hands its connection
    /// back once done (`None` when the connection failed).
    committing: VecDeque<JoinHandle<Option<MySqlConnection>>>,
    /// The newest transaction: later batches join it while its `COMMIT` has not started.
    newest: Option<Arc<Transaction>>,
    /// Resolves to whether the newest transaction committed: the next one's `COMMIT` waits for
    /// it.
    last_commit: Option<oneshot::Receiver<bool>>,
    /// Why a write failed: the batches sent after it are not written (the core sends them
    /// again, in order, to the next sink).
    failed: Option<ConnectorError>,
}

impl std::fmt::Debug for MysqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSink")
            .field("table", &self.target.table)
            .field("idle", &self.idle.len())
            .field("committing", &self.committing.len())
            .finish_non_exhaustive()
    }
}

impl Drop for MysqlSink {
    fn drop(&mut self) {
        // Batches whose commit has not started were not confirmed: the core sends them again to
        // the next sink, so they are rolled back here rather than written twice.
        self.abandon_newest();
    }
}

/// A transaction open on one connection, and the batches written in it, waiting for its
/// `COMMIT`.
struct Transaction {
    /// Set once its commit task takes it over: later batches start a new transaction.
    closing: AtomicBool,
    /// Set when a batch failed in it or the sink gave it up: it is rolled back.
    failed: AtomicBool,
    /// Held by `send` while it writes a batch in the transaction, and by the commit task from
    /// the `COMMIT` on.
    joined: Arc<tokio::sync::Mutex<Joined>>,
}

/// What a transaction's writers and its commit task share.
struct Joined {
    conn: Option<MySqlConnection>,
    /// The confirmations of the batches written in the transaction.
    batches: Vec<oneshot::Sender<ConnectorResult<()>>>,
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
        without_autocommit(&mut conn).await?;
        tracing::info!(
            table = %t.table,
            database = %t.url.shown(),
            upsert = keys.is_some(),
            stream = ctx.stream_id(),
            "writing table"
        );
        Ok(Self {
            settings: t.clone(),
            idle: vec![conn],
            committing: VecDeque::new(),
            newest: None,
            last_commit: None,
            failed: None,
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

    /// A connection with no transaction open: an idle one, one whose commit finished, a new
    /// one while fewer than [`CONNECTIONS`] are open, or else the one of the oldest commit once
    /// it is done.
    async fn connection(&mut self) -> ConnectorResult<MySqlConnection> {
        loop {
            if let Some(conn) = self.idle.pop() {
                return Ok(conn);
            }
            let Some(oldest) = self.committing.front() else {
                break;
            };
            if !oldest.is_finished() && self.committing.len() < CONNECTIONS {
                break;
            }
            if let Some(task) = self.committing.pop_front()
                && let Ok(Some(conn)) = task.await
            {
                self.idle.push(conn);
            }
        }
        let t = &self.settings;
        let mut conn = connect(&t.url, &t.password, &t.tls).await?;
        without_autocommit(&mut conn).await?;
        Ok(conn)
    }

    /// The newest transaction, if a batch may still join it: its commit task has not taken it
    /// over (it waits for the transaction before it to commit).
    fn joinable(&self) -> Option<tokio::sync::OwnedMutexGuard<Joined>> {
        let newest = self.newest.as_ref()?;
        if newest.closing.load(Ordering::Acquire) || newest.failed.load(Ordering::Acquire) {
            return None;
        }
        // Locked only by the commit task from the `COMMIT` on: then the batch starts anew.
        newest.joined.clone().try_lock_owned().ok()
    }

    /// Marks the newest transaction failed unless its commit started: it will be rolled back.
    fn abandon_newest(&self) {
        if let Some(newest) = &self.newest
            && !newest.closing.load(Ordering::Acquire)
        {
            newest.failed.store(true, Ordering::Release);
        }
    }

    /// Writes `rows` in the newest transaction when it is still open, else in a new one whose
    /// commit task starts here. Returns what resolves once the transaction committed.
    async fn write_rows(
        &mut self,
        rows: &[Row<'_>],
        outcome: &mut WriteOutcome,
    ) -> ConnectorResult<oneshot::Receiver<ConnectorResult<()>>> {
        let (done_tx, done_rx) = oneshot::channel();
        if let Some(mut joined) = self.joinable()
            && let Some(conn) = joined.conn.as_mut()
        {
            if let Err(e) = self.target.insert_all(conn, rows, outcome).await {
                self.abandon_newest();
                return Err(e);
            }
            joined.batches.push(done_tx);
            return Ok(done_rx);
        }

        // On an error the connection is dropped, which rolls its transaction back.
        let begun = async {
            // The first statement opens the transaction (autocommit is off).
            let mut conn = self.connection().await?;
            self.target.insert_all(&mut conn, rows, outcome).await?;
            Ok::<_, ConnectorError>(conn)
        };
        let conn = match begun.await {
            Ok(conn) => conn,
            Err(e) => {
                self.abandon_newest();
                return Err(e);
            }
        };
        let transaction = Arc::new(Transaction {
            closing: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            joined: Arc::new(tokio::sync::Mutex::new(Joined {
                conn: Some(conn),
                batches: vec![done_tx],
            })),
        });
        let (committed_tx, committed_rx) = oneshot::channel();
        let earlier = self.last_commit.replace(committed_rx);
        self.committing.push_back(tokio::spawn(commit(
            transaction.clone(),
            earlier,
            committed_tx,
        )));
        self.newest = Some(transaction);
        Ok(done_rx)
    }
}

#[async_trait]
impl Sink for MysqlSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        self.send(records).await?.await
    }

    async fn send(&mut self, records: &[Bytes]) -> ConnectorResult<PendingWrite> {
        if let Some(e) = &self.failed {
            return Ok(failed(e.clone()));
        }
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
            // Every record was refused: nothing to commit.
            return Ok(Box::pin(std::future::ready(Ok(outcome))));
        }
        let done = match self.write_rows(&rows, &mut outcome).await {
            Ok(done) => done,
            // Through the confirmation: the core settles the batches sent before this one first,
            // so those whose transaction commits are not sent again.
            Err(e) if e.is_retryable() => {
                self.failed = Some(e.clone());
                return Ok(failed(e));
            }
            Err(e) => return Err(e),
        };
        outcome.rejected.sort_by_key(|r| r.index);
        Ok(Box::pin(async move {
            match done.await {
                Ok(Ok(())) => Ok(outcome),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(ConnectorError::retryable(
                    "commit: stopped before the database answered",
                )),
            }
        }))
    }

    /// Batches are written one after the other while earlier ones commit.
    fn max_pending_writes(&self) -> usize {
        PENDING_WRITES
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        // Let the commits under way finish before the connections go.
        for task in self.committing.drain(..) {
            if let Ok(Some(conn)) = task.await {
                self.idle.push(conn);
            }
        }
        for conn in self.idle.drain(..) {
            let _ = sqlx::Connection::close(conn).await;
        }
        Ok(())
    }
}

/// Turns autocommit off on a sink's connection: its first statement after a `COMMIT` opens the
/// next transaction, without a `BEGIN` round trip.
async fn without_autocommit(conn: &mut MySqlConnection) -> ConnectorResult<()> {
    conn.execute("SET autocommit = 0")
        .await
        .map(|_| ())
        .map_err(|e| retryable("turn autocommit off", &e))
}

/// The confirmation of a batch that could not be written.
fn failed(e: ConnectorError) -> PendingWrite {
    Box::pin(std::future::ready(Err(e)))
}

/// Commits `transaction` once the transaction before it committed (or rolls it back if that
/// one did not, or a batch failed in it), tells the next transaction's commit (`committed`) and
/// the confirmations of its batches, and hands the connection back unless it failed.
async fn commit(
    transaction: Arc<Transaction>,
    earlier: Option<oneshot::Receiver<bool>>,
    committed: oneshot::Sender<bool>,
) -> Option<MySqlConnection> {
    let earlier_committed = match earlier {
        Some(earlier) => earlier.await.unwrap_or(false),
        None => true,
    };
    transaction.closing.store(true, Ordering::Release);
    // Waits for a batch being written in the transaction right now: it is committed too.
    let mut joined = transaction.joined.lock().await;
    let Some(mut conn) = joined.conn.take() else {
        let _ = committed.send(false);
        for batch in joined.batches.drain(..) {
            let _ = batch.send(Err(ConnectorError::retryable("commit: no connection")));
        }
        return None;
    };
    let (result, conn) = if earlier_committed && !transaction.failed.load(Ordering::Acquire) {
        match conn.execute("COMMIT").await {
            Ok(_) => (Ok(()), Some(conn)),
            Err(e) => (Err(retryable("commit", &e)), None),
        }
    } else {
        // Written again by the next sink, after the batches before them.
        let conn = conn.execute("ROLLBACK").await.ok().map(|_| conn);
        let why = if earlier_committed {
            "a write in the same transaction failed"
        } else {
            "an earlier transaction failed to commit"
        };
        (
            Err(ConnectorError::retryable(format!(
                "commit: rolled back, {why}"
            ))),
            conn,
        )
    };
    let _ = committed.send(result.is_ok());
    for batch in joined.batches.drain(..) {
        let _ = batch.send(result.clone());
    }
    conn
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

/// How many rows of a run of `available` go in the next statement: all of them, up to the cap.
/// One statement per run costs one round trip; the sizes a stream uses are few (the batch sizes
/// under load, small ones when quiet), and the connection's statement cache keeps them prepared.
fn chunk_len(available: usize, cap: usize) -> usize {
    available.min(cap).max(1)
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

    /// Inserts `rows` with as few statements as their columns allow; a statement the database
    /// refuses for a row's content is written again row by row, and the refused rows go in
    /// `outcome`.
    async fn insert_all(
        &self,
        conn: &mut MySqlConnection,
        rows: &[Row<'_>],
        outcome: &mut WriteOutcome,
    ) -> ConnectorResult<()> {
        let mut start = 0;
        while start < rows.len() {
            let run = rows[start..]
                .iter()
                .take_while(|r| r.same_columns(&rows[start]))
                .count();
            let n = chunk_len(run, self.max_rows);
            let chunk = &rows[start..start + n];
            match self.insert(conn, chunk).await {
                Ok(()) => {}
                Err(WriteFailure::Record(_)) => {
                    // Find the refused rows: the statement failed as a whole, so write its
                    // rows one at a time.
                    for row in chunk {
                        match self.insert(conn, std::slice::from_ref(row)).await {
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
        Ok(())
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
    fn chunks_are_the_whole_run_up_to_the_cap() {
        assert_eq!(chunk_len(5000, 1000), 1000);
        assert_eq!(chunk_len(1000, 1000), 1000);
        assert_eq!(chunk_len(999, 1000), 999);
        assert_eq!(chunk_len(127, 1000), 127);
        assert_eq!(chunk_len(1, 1000), 1);
        assert_eq!(chunk_len(7, 5), 5);
    }
}

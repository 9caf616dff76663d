//! Ingress: follows a table by polling with a cursor and yields its new rows as JSON records.
//!
//! Two positions are kept. The *read position* lives in memory and moves as soon as rows are
//! fetched, so the next query starts after them even while earlier batches are still on their
//! way to NATS. The *durable cursor* moves only in a batch's [`Acknowledge`], after the transport
//! confirmed it; a restart resumes after the durable cursor: nothing is lost, and after a clean
//! stop nothing is read twice.
//!
//! The queries run ahead of [`Source::next_batch`]: a reader task owns the connection and the
//! read position, runs the next query from there (with the timestamp groups below), pairs each
//! row with its durable cursor and passes the rows through a channel of [`READ_AHEAD`] query
//! results, then asks for the next rows at once; the database works on that query while the
//! current rows are published. `next_batch` takes rows from the channel, encodes them as records
//! and hands them out with the durable cursor of the last one. An error of the reader reaches
//! `next_batch` after the rows read before it (retryable, naming the table: the core reopens the
//! source, which resumes after the durable cursor); dropping the source stops the reader and
//! closes its connection.
//!
//! Polling is what this source does today; the position type and the reader are separate so a
//! binlog change-data-capture mode can be added as another reader later.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::{
    Acknowledge, ConnectorError, ConnectorResult, Source, SourceBatch, StreamContext, async_trait,
};
use sqlx::mysql::{MySqlConnection, MySqlRow};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connect::connect;
use crate::cursor::{CursorCodec, Position, PositionReader, STATE_KEY, id_kind};
use crate::error::retryable;
use crate::ident::{Ident, quote_name, shown};
use crate::params::{IngressMode, IngressSettings, Start};
use crate::record::RowEncoder;
use crate::saver::{CursorSaver, SaverHandle};
use crate::schema::{ColumnKind, TableSchema};

/// Query results the reader task may have ready before `next_batch` takes them.
pub const READ_AHEAD: usize = 2;

/// A row read, waiting to be encoded and handed out.
struct Pending {
    row: MySqlRow,
    /// The durable cursor that is safe to save once this row is confirmed: the row's own
    /// position, or (inside a group of rows sharing a timestamp) the position before the group.
    safe: Position,
}

/// The statements of one stream (identifiers quoted, values always bound).
#[derive(Debug, Clone)]
struct Queries {
    /// From the start of the table.
    first: String,
    /// After a position.
    next: String,
    /// Every row of one timestamp (mode `timestamp`, when a whole batch shares it).
    group: Option<String>,
    /// The position of the newest row (`start: now`).
    newest: String,
}

/// The ingress source of one stream.
pub struct MysqlSource {
    ctx: StreamContext,
    /// The reader task's query results, or its error.
    results: mpsc::Receiver<ConnectorResult<Vec<Pending>>>,
    /// Rows the reader sent and `next_batch` has not taken yet (for the lag metric).
    queued: Arc<AtomicUsize>,
    reader: JoinHandle<()>,
    /// Rows taken from the channel and not handed out yet.
    buffer: VecDeque<Pending>,
    /// The reader's error, taken from the channel behind rows still to hand out.
    failed: Option<ConnectorError>,
    encoder: RowEncoder,
    /// The durable cursor of the last batch handed out.
    handed: Position,
    codec: CursorCodec,
    saver: CursorSaver,
    what: String,
}

impl Drop for MysqlSource {
    fn drop(&mut self) {
        // The reader holds the connection: stop it (mid-query too) with the source.
        self.reader.abort();
    }
}

/// Runs the queries from the read position and pairs the rows with their durable cursors (the
/// reader task's state).
struct Reader {
    conn: MySqlConnection,
    queries: Queries,
    positions: PositionReader,
    timestamp_mode: bool,
    batch_size: usize,
    poll_interval: Duration,
    read_pos: Position,
    what: String,
}

impl MysqlSource {
    /// Connects, checks the table and columns, loads the durable cursor and starts reading.
    pub async fn open(ctx: StreamContext, settings: &IngressSettings) -> ConnectorResult<Self> {
        let t = &settings.table;
        let mut conn = connect(&t.url, &t.password, &t.tls).await?;
        let schema = TableSchema::load(&mut conn, t.table.as_str())
            .await
            .map_err(|e| retryable(&format!("read the columns of `{}`", t.table), &e))?
            .ok_or_else(|| {
                ConnectorError::retryable(format!("no table `{}` in {}", t.table, t.url.shown()))
            })?;

        // The record's fields: the chosen columns, or all of them.
        let mut select: Vec<(String, ColumnKind)> = match &t.columns {
            Some(names) => names
                .iter()
                .map(|n| find(&schema, "columns", n))
                .collect::<ConnectorResult<_>>()?,
            None => schema
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.kind))
                .collect(),
        };
        let output = select.len();
        let mut place =
            |field: &str, ident: &Ident| -> ConnectorResult<(usize, ColumnKind, String)> {
                let (name, kind) = find(&schema, field, ident)?;
                let at = match select.iter().position(|(n, _)| *n == name) {
                    Some(at) => at,
                    None => {
                        select.push((name.clone(), kind));
                        select.len() - 1
                    }
                };
                Ok((at, kind, quote_name(&name)))
            };
        let id = match settings.mode.cursor() {
            Some(ident) => {
                let (at, kind, quoted) = place("cursor_column", ident)?;
                let unsigned = id_kind(kind).ok_or_else(|| {
                    ConnectorError::invalid(
                        "cursor_column",
                        format!("`{ident}` is not an integer column"),
                    )
                })?;
                Some((at, unsigned, quoted))
            }
            None => None,
        };
        let ts = match settings.mode.timestamp() {
            Some(ident) => {
                let (at, kind, quoted) = place("timestamp_column", ident)?;
                if !kind.is_temporal() {
                    return Err(ConnectorError::invalid(
                        "timestamp_column",
                        format!("`{ident}` is not a TIMESTAMP, DATETIME or DATE column"),
                    ));
                }
                Some((at, kind, quoted))
            }
            None => None,
        };

        let queries = build_queries(&t.table, &select, &settings.mode, id.as_ref(), ts.as_ref());
        let encoder = RowEncoder::new(select[..output].iter().map(|(n, k)| (n.as_str(), *k)));
        let positions = PositionReader {
            id_at: id.as_ref().map(|(at, unsigned, _)| (*at, *unsigned)),
            ts_at: ts.as_ref().map(|(at, _, _)| *at),
        };
        let codec = CursorCodec::new(t.table.as_str(), &settings.mode);

        let saved = match ctx.state().load(STATE_KEY).await? {
            Some(bytes) => match codec.decode(&bytes) {
                Ok(position) => Some(position),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring the saved cursor; starting as `start` says");
                    None
                }
            },
            None => None,
        };
        let position = match saved {
            Some(position) => position,
            None => {
                let position = match settings.start {
                    Start::Beginning => Position::Start,
                    Start::Now => newest(&mut conn, &queries.newest, positions).await?,
                };
                // Remember where `now` was, so a restart does not move it.
                ctx.state().save(STATE_KEY, codec.encode(&position)).await?;
                position
            }
        };
        tracing::info!(
            table = %t.table,
            database = %t.url.shown(),
            mode = settings.mode.name(),
            resume = ?position,
            engine = schema.engine.as_deref().unwrap_or("unknown"),
            "reading table"
        );
        let what = format!("read `{}`", t.table);
        let reader = Reader {
            conn,
            queries,
            positions,
            timestamp_mode: matches!(settings.mode, IngressMode::Timestamp { .. }),
            batch_size: t.batch_size,
            poll_interval: settings.poll_interval,
            read_pos: position,
            what: what.clone(),
        };
        let (sender, results) = mpsc::channel(READ_AHEAD);
        let queued = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(reader.run(sender, queued.clone()));
        Ok(Self {
            ctx: ctx.clone(),
            results,
            queued,
            reader,
            buffer: VecDeque::new(),
            failed: None,
            encoder,
            handed: position,
            codec,
            saver: CursorSaver::spawn(ctx.state().clone()),
            what,
        })
    }
}

impl Reader {
    /// Reads until the source is dropped or a query fails; the failure is the last message.
    async fn run(
        mut self,
        results: mpsc::Sender<ConnectorResult<Vec<Pending>>>,
        queued: Arc<AtomicUsize>,
    ) {
        loop {
            let read = match self.query().await {
                Ok(rows) if rows.is_empty() => {
                    // Nothing new: wait before asking again.
                    tokio::time::sleep(self.poll_interval).await;
                    continue;
                }
                Ok(rows) => self.fill(rows).await,
                Err(e) => Err(e),
            };
            let failed = read.is_err();
            if let Ok(pending) = &read {
                if pending.is_empty() {
                    continue;
                }
                queued.fetch_add(pending.len(), Ordering::Relaxed);
            }
            if results.send(read).await.is_err() || failed {
                return;
            }
        }
    }

    /// Runs the next query from the read position.
    async fn query(&mut self) -> ConnectorResult<Vec<MySqlRow>> {
        let limit = self.batch_size as u64;
        let rows = match self.read_pos {
            Position::Start => {
                sqlx::query(&self.queries.first)
                    .bind(limit)
                    .fetch_all(&mut self.conn)
                    .await
            }
            Position::Id(id) => {
                bind_id(sqlx::query(&self.queries.next), id)
                    .bind(limit)
                    .fetch_all(&mut self.conn)
                    .await
            }
            Position::Ts(ts) => {
                sqlx::query(&self.queries.next)
                    .bind(ts.to_sql())
                    .bind(limit)
                    .fetch_all(&mut self.conn)
                    .await
            }
            Position::TsId(ts, id) => {
                let ts = ts.to_sql();
                bind_id(
                    sqlx::query(&self.queries.next).bind(ts.clone()).bind(ts),
                    id,
                )
                .bind(limit)
                .fetch_all(&mut self.conn)
                .await
            }
        };
        rows.map_err(|e| retryable(&self.what, &e))
    }

    /// Pairs fetched rows with their durable cursors and moves the read position past them.
    async fn fill(&mut self, mut rows: Vec<MySqlRow>) -> ConnectorResult<Vec<Pending>> {
        let read = |rows: &[MySqlRow], reader: PositionReader| -> ConnectorResult<Vec<Position>> {
            rows.iter()
                .map(|r| reader.read(r).map_err(ConnectorError::fatal))
                .collect()
        };
        let mut positions = read(&rows, self.positions)?;
        if self.timestamp_mode && rows.len() >= self.batch_size {
            // A full batch may have cut a group of equal timestamps: keep whole groups only.
            let last = positions.last().copied();
            let keep = positions
                .iter()
                .rposition(|p| Some(*p) != last)
                .map_or(0, |i| i + 1);
            if keep > 0 {
                rows.truncate(keep);
                positions.truncate(keep);
            } else if let (Some(Position::Ts(ts)), Some(group)) = (last, &self.queries.group) {
                // The whole batch shares one timestamp: read that group entirely.
                rows = sqlx::query(group)
                    .bind(ts.to_sql())
                    .fetch_all(&mut self.conn)
                    .await
                    .map_err(|e| retryable(&self.what, &e))?;
                positions = read(&rows, self.positions)?;
            }
        }
        let mut pending = Vec::with_capacity(rows.len());
        let mut safe_before = self.read_pos;
        for (i, (row, position)) in rows.into_iter().zip(&positions).enumerate() {
            let group_goes_on = self.timestamp_mode && positions.get(i + 1) == Some(position);
            let safe = if group_goes_on {
                safe_before
            } else {
                safe_before = *position;
                *position
            };
            pending.push(Pending { row, safe });
        }
        if let Some(last) = positions.last() {
            self.read_pos = *last;
        }
        Ok(pending)
    }
}

#[async_trait]
impl Source for MysqlSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        while self.buffer.is_empty() {
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            // Cancel-safe: a result is either still in the channel or in the buffer.
            match self.results.recv().await {
                Some(Ok(pending)) => {
                    self.queued.fetch_sub(pending.len(), Ordering::Relaxed);
                    self.buffer.extend(pending);
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(ConnectorError::retryable(format!(
                        "{}: the reader stopped",
                        self.what
                    )));
                }
            }
        }
        let max_records = max_records.max(1);
        // What the reader has ready too, so batches stay full across query results.
        while self.buffer.len() < max_records {
            match self.results.try_recv() {
                Ok(Ok(pending)) => {
                    self.queued.fetch_sub(pending.len(), Ordering::Relaxed);
                    self.buffer.extend(pending);
                }
                // An error is taken by the next call, after these rows.
                Ok(Err(e)) => {
                    self.failed = Some(e);
                    break;
                }
                Err(_) => break,
            }
        }
        let n = max_records.min(self.buffer.len());
        let mut records = Vec::with_capacity(n);
        let mut safe = self.handed;
        for pending in self.buffer.drain(..n) {
            let record = self
                .encoder
                .encode(&pending.row)
                .map_err(|e| ConnectorError::fatal(format!("{}: {e}", self.what)))?;
            records.push(record);
            safe = pending.safe;
        }
        let lag = self.buffer.len() + self.queued.load(Ordering::Relaxed);
        self.ctx
            .metrics()
            .set_lag(i64::try_from(lag).unwrap_or(i64::MAX));
        if safe == self.handed {
            return Ok(SourceBatch::unacknowledged(records));
        }
        self.handed = safe;
        let ack = CursorAck {
            saver: self.saver.handle(),
            cursor: self.codec.encode(&safe),
        };
        Ok(SourceBatch::new(records, ack))
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        // Every batch is acknowledged by now: write the last cursor before the stream stops.
        self.reader.abort();
        self.saver.flush().await
    }
}

/// Hands the cursor of a confirmed batch to the saver.
struct CursorAck {
    saver: SaverHandle,
    cursor: Bytes,
}

#[async_trait]
impl Acknowledge for CursorAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        self.saver.save(self.cursor)
    }
}

type Query<'q> = sqlx::query::Query<'q, sqlx::MySql, sqlx::mysql::MySqlArguments>;

fn bind_id(query: Query<'_>, id: i128) -> Query<'_> {
    match i64::try_from(id) {
        Ok(signed) => query.bind(signed),
        Err(_) => query.bind(u64::try_from(id).unwrap_or(u64::MAX)),
    }
}

/// The catalog name and kind of the column `ident` names, or an invalid-parameter error.
fn find(schema: &TableSchema, field: &str, ident: &Ident) -> ConnectorResult<(String, ColumnKind)> {
    schema
        .column(ident.as_str())
        .map(|(_, c)| (c.name.clone(), c.kind))
        .ok_or_else(|| {
            ConnectorError::invalid(
                field,
                format!("no column {} in the table", shown(ident.as_str())),
            )
        })
}

fn build_queries(
    table: &Ident,
    select: &[(String, ColumnKind)],
    mode: &IngressMode,
    id: Option<&(usize, bool, String)>,
    ts: Option<&(usize, ColumnKind, String)>,
) -> Queries {
    let columns: Vec<String> = select.iter().map(|(n, _)| quote_name(n)).collect();
    let sel = format!("SELECT {} FROM {}", columns.join(", "), table.quoted());
    // Rows of the current second (day, for a DATE column) may still be joined by others with
    // the same timestamp: they are read once that second is over.
    let bound = |kind: ColumnKind| {
        if kind == ColumnKind::Date {
            "CURDATE()"
        } else {
            "NOW()"
        }
    };
    let empty = String::new();
    let c = id.map_or(&empty, |(_, _, q)| q);
    let (t, t_kind) = ts.map_or((&empty, ColumnKind::Timestamp), |(_, k, q)| (q, *k));
    match mode {
        IngressMode::Incrementing { .. } => Queries {
            first: format!("{sel} WHERE {c} IS NOT NULL ORDER BY {c} LIMIT ?"),
            next: format!("{sel} WHERE {c} > ? ORDER BY {c} LIMIT ?"),
            group: None,
            newest: format!(
                "SELECT {c} FROM {} WHERE {c} IS NOT NULL ORDER BY {c} DESC LIMIT 1",
                table.quoted()
            ),
        },
        IngressMode::Timestamp { .. } => {
            let b = bound(t_kind);
            Queries {
                first: format!("{sel} WHERE {t} < {b} ORDER BY {t} LIMIT ?"),
                next: format!("{sel} WHERE {t} > ? AND {t} < {b} ORDER BY {t} LIMIT ?"),
                group: Some(format!("{sel} WHERE {t} = ?")),
                newest: format!(
                    "SELECT {t} FROM {} WHERE {t} < {b} ORDER BY {t} DESC LIMIT 1",
                    table.quoted()
                ),
            }
        }
        IngressMode::TimestampIncrementing { .. } => {
            let b = bound(t_kind);
            Queries {
                first: format!(
                    "{sel} WHERE {t} < {b} AND {c} IS NOT NULL ORDER BY {t}, {c} LIMIT ?"
                ),
                next: format!(
                    "{sel} WHERE {t} >= ? AND {t} < {b} AND {c} IS NOT NULL AND ({t} > ? OR {c} > ?) ORDER BY {t}, {c} LIMIT ?"
                ),
                group: None,
                newest: format!(
                    "SELECT {t}, {c} FROM {} WHERE {t} < {b} AND {c} IS NOT NULL ORDER BY {t} DESC, {c} DESC LIMIT 1",
                    table.quoted()
                ),
            }
        }
    }
}

/// The position of the newest row (`start: now`), or the start of an empty table.
async fn newest(
    conn: &mut MySqlConnection,
    sql: &str,
    reader: PositionReader,
) -> ConnectorResult<Position> {
    let row = sqlx::query(sql)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| retryable("find the newest row", &e))?;
    let Some(row) = row else {
        return Ok(Position::Start);
    };
    // The newest-row query selects the timestamp first, then the incrementing column.
    let id = reader
        .id_at
        .map(|(_, unsigned)| (usize::from(reader.ts_at.is_some()), unsigned));
    let positioned = PositionReader {
        id_at: id,
        ts_at: reader.ts_at.map(|_| 0),
    };
    positioned.read(&row).map_err(ConnectorError::fatal)
}

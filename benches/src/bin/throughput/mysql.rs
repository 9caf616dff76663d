//! MySQL: the connector beside sqlx, on the MariaDB of `cargo xtask services up`.
//!
//! Each run has its own table `(id BIGINT AUTO_INCREMENT PRIMARY KEY, payload MEDIUMTEXT,
//! created_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))`. A record is the JSON object of a row:
//! ingress publishes `{"id": .., "payload": ".."}` (mode `incrementing` on `id`,
//! `poll_interval_ms` 10), egress receives `{"payload": ".."}` and inserts it; the payload is
//! sized so that the JSON record has the run's size. The raw reader is a keyset `SELECT` loop of
//! 1,000 rows (the connector's default `batch_size`), sleeping 10 ms when nothing is new; the raw
//! writer commits multi-row `INSERT`s of 256 rows. Egress arrivals are counted by `MAX(id)`;
//! their latency is `created_at` (the database's clock, the same machine's) minus the stamp.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use kps_connector_core::async_trait;
use kps_connector_core::testkit::unique_name;
use kps_connector_core::transport::wire::now_nanos;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};

use crate::measure::{Arrived, EgressEnd, IngressEnd, Observer, STAMP_BYTES, System, stamp};

/// The connector's `poll_interval_ms` here, and the raw reader's wait when nothing is new.
const POLL_MS: u64 = 10;

/// Rows per raw SELECT (the connector's default `batch_size`).
const SELECT_ROWS: i64 = 1_000;

/// Rows per raw INSERT transaction.
const INSERT_ROWS: usize = 256;

/// Bytes of JSON around the payload of an ingress record, `{"id":123456,"payload":""}`.
const INGRESS_OVERHEAD: usize = 26;

/// Bytes of JSON around the payload of an egress record, `{"payload":""}`.
const EGRESS_OVERHEAD: usize = 14;

/// The database of the tests.
pub struct Mysql {
    pool: MySqlPool,
}

/// The database URL: `KPS_TEST_MYSQL_URL`, or the local MariaDB.
fn url() -> String {
    std::env::var("KPS_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

impl Mysql {
    /// Connects a small pool.
    pub async fn connect() -> Result<Self> {
        let url = url();
        let connect = MySqlPoolOptions::new().max_connections(8).connect(&url);
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(pool)) => Ok(Self { pool }),
            Ok(Err(e)) => {
                bail!("MariaDB at {url} is not reachable ({e}): cargo xtask services up mariadb")
            }
            Err(_) => bail!("MariaDB at {url} did not answer within 10 s"),
        }
    }

    async fn table(&self) -> Result<String> {
        let table = unique_name("kps_bench");
        sqlx::query(&format!(
            "CREATE TABLE `{table}` (id BIGINT AUTO_INCREMENT PRIMARY KEY, payload MEDIUMTEXT NOT NULL, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
        ))
        .execute(&self.pool)
        .await
        .context("CREATE TABLE")?;
        Ok(table)
    }
}

#[async_trait]
impl System for Mysql {
    fn name(&self) -> &'static str {
        "mysql"
    }

    fn client(&self) -> &'static str {
        "sqlx"
    }

    async fn ingress(&self, size: usize) -> Result<Box<dyn IngressEnd>> {
        Ok(Box::new(MysqlIngress {
            pool: self.pool.clone(),
            table: self.table().await?,
            payload_bytes: size.saturating_sub(INGRESS_OVERHEAD).max(STAMP_BYTES),
        }))
    }

    async fn egress(&self, size: usize) -> Result<Box<dyn EgressEnd>> {
        Ok(Box::new(MysqlEgress {
            pool: self.pool.clone(),
            table: self.table().await?,
            payload_bytes: size.saturating_sub(EGRESS_OVERHEAD).max(STAMP_BYTES),
        }))
    }

    fn ingress_stamp(&self) -> fn(&[u8]) -> Option<i64> {
        payload_stamp
    }

    fn egress_record(&self, record: &Bytes) -> Bytes {
        let payload = text(record, record.len().saturating_sub(EGRESS_OVERHEAD));
        Bytes::from(json!({ "payload": payload }).to_string())
    }

    fn latency_batch(&self) -> usize {
        // Ten rows every 10 ms: one commit per millisecond is more than the disk allows.
        10
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "mysql: MariaDB on loopback, one InnoDB table per run; a record is a row's JSON object sized to the run's size; ingress in mode incrementing with poll_interval_ms {POLL_MS} reading rows already in the table (raw: keyset SELECT of {SELECT_ROWS} rows with sqlx); egress inserts (raw: multi-row INSERTs of {INSERT_ROWS} rows, one transaction each), arrivals counted by MAX(id); latency rows are sent 10 every 10 ms, egress latency is the row's created_at minus the stamp."
        )]
    }
}

/// The first `len` bytes of a record (ASCII) as text.
fn text(record: &Bytes, len: usize) -> &str {
    let end = len.clamp(STAMP_BYTES.min(record.len()), record.len());
    std::str::from_utf8(&record[..end]).unwrap_or_default()
}

/// The stamp at the head of the `payload` field of a row's JSON record.
fn payload_stamp(record: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\"payload\":\"";
    let at = record.windows(KEY.len()).position(|w| w == KEY)?;
    stamp(record.get(at + KEY.len()..)?)
}

/// Inserts `payloads` with multi-row statements of at most `rows` rows and 4 MB, each its own
/// transaction.
async fn insert(pool: &MySqlPool, table: &str, payloads: &[&str], rows: usize) -> Result<()> {
    let per_statement =
        rows.min(((4 << 20) / payloads.first().map_or(1, |p| p.len().max(1))).max(1));
    for chunk in payloads.chunks(per_statement) {
        let sql = format!(
            "INSERT INTO `{table}` (payload) VALUES {}",
            vec!["(?)"; chunk.len()].join(",")
        );
        let mut query = sqlx::query(&sql);
        for payload in chunk {
            query = query.bind(*payload);
        }
        let mut tx = pool.begin().await.context("BEGIN")?;
        query.execute(&mut *tx).await.context("INSERT")?;
        tx.commit().await.context("COMMIT")?;
    }
    Ok(())
}

async fn drop_table(pool: &MySqlPool, table: &str) {
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS `{table}`"))
        .execute(pool)
        .await;
}

/// A table the connector follows.
struct MysqlIngress {
    pool: MySqlPool,
    table: String,
    payload_bytes: usize,
}

#[async_trait]
impl IngressEnd for MysqlIngress {
    fn metadata(&self) -> Value {
        json!({
            "url": url(), "table": self.table, "mode": "incrementing", "cursor_column": "id",
            "columns": ["id", "payload"], "poll_interval_ms": POLL_MS,
        })
    }

    fn stored(&self) -> bool {
        true
    }

    async fn write(&mut self, records: &[Bytes]) -> Result<()> {
        let payloads: Vec<&str> = records
            .iter()
            .map(|r| text(r, self.payload_bytes))
            .collect();
        insert(&self.pool, &self.table, &payloads, 1_000).await
    }

    async fn raw_reader(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        Ok(Box::new(KeysetReader {
            pool: self.pool.clone(),
            sql: format!(
                "SELECT id, payload FROM `{}` WHERE id > ? ORDER BY id LIMIT ?",
                self.table
            ),
            last: 0,
            latency,
        }))
    }

    async fn cleanup(self: Box<Self>) {
        drop_table(&self.pool, &self.table).await;
    }
}

/// The raw reader: keyset pagination, every value decoded.
struct KeysetReader {
    pool: MySqlPool,
    sql: String,
    last: i64,
    latency: bool,
}

#[async_trait]
impl Observer for KeysetReader {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = sqlx::query(&self.sql)
                .bind(self.last)
                .bind(SELECT_ROWS)
                .fetch_all(&self.pool)
                .await
                .context("SELECT")?;
            if !rows.is_empty() {
                let now = now_nanos();
                let mut arrived = Arrived {
                    count: rows.len() as u64,
                    latencies: Vec::new(),
                };
                for row in &rows {
                    self.last = row.try_get(0).context("id")?;
                    let payload: &str = row.try_get(1).context("payload")?;
                    if self.latency
                        && let Some(sent) = stamp(payload.as_bytes())
                    {
                        arrived.latencies.push(now - sent);
                    }
                }
                return Ok(arrived);
            }
            if Instant::now() >= deadline {
                return Ok(Arrived::default());
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }
}

/// A table the connector inserts into.
struct MysqlEgress {
    pool: MySqlPool,
    table: String,
    payload_bytes: usize,
}

#[async_trait]
impl EgressEnd for MysqlEgress {
    fn metadata(&self) -> Value {
        json!({"url": url(), "table": self.table})
    }

    async fn observer(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        Ok(Box::new(Inserted {
            pool: self.pool.clone(),
            table: self.table.clone(),
            seen: 0,
            latency,
        }))
    }

    async fn raw_write(&mut self, records: &[Bytes]) -> Result<()> {
        let payloads: Vec<&str> = records
            .iter()
            .map(|r| text(r, self.payload_bytes))
            .collect();
        insert(&self.pool, &self.table, &payloads, INSERT_ROWS).await
    }

    async fn cleanup(self: Box<Self>) {
        drop_table(&self.pool, &self.table).await;
    }
}

/// Rows inserted so far (ids are consecutive from 1 with one writer): `MAX(id)`, or, for the
/// latency, the new rows with their `created_at`.
struct Inserted {
    pool: MySqlPool,
    table: String,
    seen: i64,
    latency: bool,
}

#[async_trait]
impl Observer for Inserted {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = if self.latency {
                let rows = sqlx::query(&format!(
                    "SELECT id, payload, CAST(UNIX_TIMESTAMP(created_at) * 1000000 AS SIGNED) FROM `{}` WHERE id > ? ORDER BY id LIMIT 1000",
                    self.table
                ))
                .bind(self.seen)
                .fetch_all(&self.pool)
                .await
                .context("SELECT")?;
                let mut arrived = Arrived {
                    count: rows.len() as u64,
                    latencies: Vec::new(),
                };
                for row in &rows {
                    self.seen = row.try_get(0).context("id")?;
                    let payload: &str = row.try_get(1).context("payload")?;
                    let created_us: i64 = row.try_get(2).context("created_at")?;
                    if let Some(sent) = stamp(payload.as_bytes()) {
                        arrived.latencies.push(created_us * 1_000 - sent);
                    }
                }
                arrived
            } else {
                let max: i64 = sqlx::query_scalar(&format!(
                    "SELECT COALESCE(MAX(id), 0) FROM `{}`",
                    self.table
                ))
                .fetch_one(&self.pool)
                .await
                .context("SELECT MAX(id)")?;
                let count = u64::try_from(max - self.seen).unwrap_or_default();
                self.seen = self.seen.max(max);
                Arrived {
                    count,
                    latencies: Vec::new(),
                }
            };
            if arrived.count > 0 || Instant::now() >= deadline {
                return Ok(arrived);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::record;

    #[test]
    fn records_have_the_run_size_and_their_stamp() {
        let system_record = record(123_456_789, 1, 100);
        let payload = text(&system_record, 100 - EGRESS_OVERHEAD);
        let egress = json!({ "payload": payload }).to_string();
        assert_eq!(egress.len(), 100);
        assert_eq!(payload_stamp(egress.as_bytes()), Some(123_456_789));
        let ingress =
            json!({"id": 123_456, "payload": text(&system_record, 100 - INGRESS_OVERHEAD)})
                .to_string();
        assert_eq!(ingress.len(), 100);
        assert_eq!(payload_stamp(ingress.as_bytes()), Some(123_456_789));
    }
}

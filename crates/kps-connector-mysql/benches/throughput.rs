//! Throughput of table -> NATS (ingress) and NATS -> table (egress) through the connector,
//! beside raw sqlx queries in the same run (a keyset SELECT loop, multi-row INSERT transactions),
//! against the MariaDB and NATS on loopback; then the connector binary's CPU per million
//! records, its idle RSS, and ingress latency at 1,000 rows/s.
//!
//! `cargo bench -p kps-connector-mysql` (needs `cargo xtask services up`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{create, db, drop_table, exec, table_name, url};
use criterion::{Criterion, SamplingMode, Throughput};
use kps_connector_core::testkit::{self, NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, proto};
use kps_connector_mysql::MysqlConnector;
use serde_json::json;
use sqlx::Row;
use sqlx::mysql::MySqlPool;
use tokio::runtime::Runtime;

/// Rows per measured iteration.
const N: usize = 20_000;
/// Rows for the CPU measurement of the binary.
const CPU_ROWS: usize = 200_000;
/// Rows per raw SELECT and per raw INSERT transaction.
const RAW_BATCH: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(120);

/// A payload that makes the JSON record about 100 bytes.
fn payload(i: usize) -> String {
    let mut text = format!("kps-record-{i:010}-");
    text.extend(std::iter::repeat_n('x', 64 - text.len()));
    text
}

/// The record egress writes for row `i` (about 100 bytes).
fn record(i: usize) -> Bytes {
    Bytes::from(json!({"id": i + 1, "payload": payload(i), "qty": i}).to_string())
}

const COLUMNS: &str =
    "id BIGINT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(100) NOT NULL, qty INT NOT NULL";

async fn fill(pool: &MySqlPool, table: &str, n: usize) {
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(RAW_BATCH);
        let sql = format!(
            "INSERT INTO `{table}` (payload, qty) VALUES {}",
            vec!["(?, ?)"; chunk].join(",")
        );
        let mut query = sqlx::query(&sql);
        for k in i..i + chunk {
            query = query.bind(payload(k)).bind(k as i64);
        }
        query.execute(pool).await.expect("rows");
        i += chunk;
    }
}

/// The baseline reader: keyset pagination with raw sqlx, every value decoded.
async fn raw_select(pool: &MySqlPool, table: &str, n: usize) {
    let sql = format!("SELECT id, payload, qty FROM `{table}` WHERE id > ? ORDER BY id LIMIT ?");
    let mut conn = pool.acquire().await.expect("connection");
    let (mut last, mut read, mut bytes) = (0i64, 0usize, 0usize);
    while read < n {
        let rows = sqlx::query(&sql)
            .bind(last)
            .bind(RAW_BATCH as i64)
            .fetch_all(&mut *conn)
            .await
            .expect("select");
        for row in &rows {
            last = row.get(0);
            bytes += row.get::<&str, _>(1).len() + row.get::<i32, _>(2) as usize % 2;
        }
        read += rows.len();
    }
    assert!(bytes > 0);
}

/// The baseline writer: multi-row INSERTs of 256 rows, one transaction each (the size of the
/// connector's egress batches).
async fn raw_insert(pool: &MySqlPool, table: &str, n: usize) {
    let mut conn = pool.acquire().await.expect("connection");
    let mut i = 0;
    while i < n {
        let chunk = (n - i).min(256);
        let sql = format!(
            "INSERT INTO `{table}` (id, payload, qty) VALUES {}",
            vec!["(?, ?, ?)"; chunk].join(",")
        );
        let mut query = sqlx::query(&sql);
        let payloads: Vec<String> = (i..i + chunk).map(payload).collect();
        for (k, p) in (i..i + chunk).zip(&payloads) {
            query = query.bind((k + 1) as i64).bind(p.as_str()).bind(k as i64);
        }
        let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("begin");
        query.execute(&mut *tx).await.expect("insert");
        tx.commit().await.expect("commit");
        i += chunk;
    }
}

/// Waits until the row with id `n` exists: records are written in order, one transaction per
/// batch, so then all of them are (a primary-key lookup, cheaper than counting).
async fn wait_rows(pool: &MySqlPool, table: &str, n: usize) {
    if n == 0 {
        return;
    }
    let sql = format!("SELECT COUNT(*) FROM `{table}` WHERE id = ?");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found: i64 = sqlx::query_scalar(&sql)
            .bind(n as i64)
            .fetch_one(pool)
            .await
            .expect("lookup");
        if found == 1 {
            return;
        }
        assert!(Instant::now() < deadline, "rows did not arrive");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn ingress(c: &mut Criterion, rt: &Runtime, pool: &MySqlPool, probe: &NatsProbe) {
    let table = table_name("kps_bench_in");
    let channel = unique_name("kps.mysql.bench.in");
    let (mut connector, mut arrivals) = rt.block_on(async {
        create(pool, &table, COLUMNS).await;
        fill(pool, &table, N).await;
        (
            TestConnector::start(MysqlConnector::default()).await,
            probe.subscribe(&channel).await,
        )
    });
    let mut group = c.benchmark_group("table_to_nats");
    group
        .throughput(Throughput::Elements(N as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("raw_sqlx_select", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    raw_select(pool, &table, N).await;
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("connector", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A new stream id has no saved cursor: it reads the table from the start.
                    let stream = StreamDecl::ingress(
                        unique_name("bench-in"),
                        channel.as_str(),
                        json!({"url": url(), "table": table, "mode": "incrementing", "cursor_column": "id"}),
                    );
                    let start = Instant::now();
                    connector.apply(vec![stream]).await.expect("stream starts");
                    let got = arrivals.collect(N, TIMEOUT).await;
                    total += start.elapsed();
                    assert_eq!(got.len(), N);
                    connector.apply(Vec::new()).await.expect("stream stops");
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(async {
        connector.shutdown().await;
        drop_table(pool, &table).await;
    });
}

fn egress(c: &mut Criterion, rt: &Runtime, pool: &MySqlPool, probe: &NatsProbe, records: &[Bytes]) {
    let raw_table = table_name("kps_bench_raw_out");
    let table = table_name("kps_bench_out");
    let channel = unique_name("kps.mysql.bench.out");
    let connector = rt.block_on(async {
        create(pool, &raw_table, COLUMNS).await;
        create(pool, &table, COLUMNS).await;
        let mut connector = TestConnector::start(MysqlConnector::default()).await;
        connector
            .apply(vec![StreamDecl::egress(
                "bench-out",
                channel.as_str(),
                json!({"url": url(), "table": table}),
            )])
            .await
            .expect("stream starts");
        connector
            .wait_for_state("bench-out", kps_connector_core::State::Healthy, TIMEOUT)
            .await;
        connector
    });
    let mut group = c.benchmark_group("nats_to_table");
    group
        .throughput(Throughput::Elements(N as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("raw_sqlx_insert", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    exec(pool, &format!("TRUNCATE TABLE `{raw_table}`")).await;
                    let start = Instant::now();
                    raw_insert(pool, &raw_table, N).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.bench_function("connector", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    exec(pool, &format!("TRUNCATE TABLE `{table}`")).await;
                    let start = Instant::now();
                    // One record per TransportMessage, as the reference publishes.
                    probe.publish_records(&channel, records, 1).await;
                    wait_rows(pool, &table, N).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(async {
        connector.shutdown().await;
        drop_table(pool, &raw_table).await;
        drop_table(pool, &table).await;
    });
}

/// The connector binary as a child process, for CPU and memory figures of its own.
struct Binary {
    child: Child,
    endpoint: String,
    id: String,
    _state: tempfile::TempDir,
}

impl Binary {
    fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let (listen, metrics) = (free(), free());
        let state = tempfile::tempdir().expect("state dir");
        let id = unique_name("mysql-bench");
        let child = Command::new(env!("CARGO_BIN_EXE_kps-connector-mysql"))
            .args(["--connector-id", &id])
            .args(["--listen", &listen.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--nats-url", &testkit::nats_url()])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the connector binary starts");
        Self {
            child,
            endpoint: format!("http://{listen}"),
            id,
            _state: state,
        }
    }

    /// user + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc stat");
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb / 1024.0
    }

    async fn apply(&self, streams: &[StreamDecl]) {
        let mut client = testkit::grpc_client(&self.endpoint).await.expect("gRPC");
        client
            .set_payload(proto::SetPayloadRequest {
                connector_id: self.id.clone(),
                payloads: streams.iter().map(StreamDecl::to_payload).collect(),
            })
            .await
            .expect("streams accepted");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU per million records in the binary, both directions; idle RSS; ingress latency.
async fn process_figures(pool: &MySqlPool, probe: &NatsProbe) {
    let binary = Binary::start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = binary.rss_mb();

    let table_in = table_name("kps_bench_cpu_in");
    let table_out = table_name("kps_bench_cpu_out");
    create(pool, &table_in, COLUMNS).await;
    create(pool, &table_out, COLUMNS).await;
    fill(pool, &table_in, CPU_ROWS).await;
    let ch_in = unique_name("kps.mysql.cpu.in");
    let ch_out = unique_name("kps.mysql.cpu.out");
    let mut arrivals = probe.subscribe(&ch_in).await;
    let ingress = StreamDecl::ingress(
        "cpu-in",
        ch_in.as_str(),
        json!({"url": url(), "table": table_in, "mode": "incrementing", "cursor_column": "id",
               "poll_interval_ms": 10}),
    );
    let egress = StreamDecl::egress(
        "cpu-out",
        ch_out.as_str(),
        json!({"url": url(), "table": table_out}),
    );

    let cpu0 = binary.cpu_seconds();
    let start = Instant::now();
    binary.apply(std::slice::from_ref(&ingress)).await;
    let got = arrivals.collect(CPU_ROWS, TIMEOUT).await.len();
    let ingress_secs = start.elapsed().as_secs_f64();
    let ingress_cpu = binary.cpu_seconds() - cpu0;
    assert_eq!(got, CPU_ROWS);

    binary.apply(&[ingress.clone(), egress.clone()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let many: Vec<Bytes> = (0..CPU_ROWS).map(record).collect();
    let cpu1 = binary.cpu_seconds();
    let start = Instant::now();
    // Paced so core NATS never holds more than the subscription's buffer for the connector.
    for (k, chunk) in many.chunks(10_000).enumerate() {
        probe.publish_records(&ch_out, chunk, 1).await;
        wait_rows(pool, &table_out, (k * 10_000).saturating_sub(20_000)).await;
    }
    wait_rows(pool, &table_out, CPU_ROWS).await;
    let egress_secs = start.elapsed().as_secs_f64();
    let egress_cpu = binary.cpu_seconds() - cpu1;
    let busy_rss = binary.rss_mb();

    // Latency: 1,000 rows/s for 5 s (10 rows every 10 ms), each carrying its insert time; the
    // stream polls every 10 ms.
    let sender = {
        let pool = pool.clone();
        let table = table_in.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let sql = format!(
                "INSERT INTO `{table}` (payload, qty) VALUES {}",
                ["(?, 0)"; 10].join(",")
            );
            for _ in 0..500 {
                tick.tick().await;
                let now = kps_connector_core::transport::wire::now_nanos().to_string();
                let mut query = sqlx::query(&sql);
                for _ in 0..10 {
                    query = query.bind(now.as_str());
                }
                query.execute(&pool).await.expect("rows");
            }
        })
    };
    let mut latencies = Vec::with_capacity(5_000);
    while latencies.len() < 5_000 {
        let got = arrivals.collect(1, Duration::from_secs(10)).await;
        if got.is_empty() {
            break;
        }
        let now = kps_connector_core::transport::wire::now_nanos();
        for record in &got {
            let value: serde_json::Value = serde_json::from_slice(record).expect("JSON record");
            if let Some(sent) = value["payload"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
            {
                latencies.push((now - sent) as f64 / 1e6);
            }
        }
    }
    sender.await.expect("sender");
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];

    println!("\nconnector process figures ({CPU_ROWS} rows, records of about 100 bytes):");
    println!(
        "  ingress table->nats: {:.0} records/s, {:.2} CPU-s per million records",
        CPU_ROWS as f64 / ingress_secs,
        ingress_cpu * 1e6 / CPU_ROWS as f64
    );
    println!(
        "  egress nats->table:  {:.0} records/s, {:.2} CPU-s per million records",
        CPU_ROWS as f64 / egress_secs,
        egress_cpu * 1e6 / CPU_ROWS as f64
    );
    println!("  RSS: idle {idle_rss:.1} MB, after both runs {busy_rss:.1} MB");
    println!(
        "  ingress latency at 1,000 rows/s, poll_interval_ms 10 (INSERT commit -> NATS subscriber, {} samples): p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        pct(0.50),
        pct(0.99)
    );
    drop(binary);
    drop_table(pool, &table_in).await;
    drop_table(pool, &table_out).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (pool, probe) = rt.block_on(async { (db().await, NatsProbe::connect().await) });
    let records: Vec<Bytes> = (0..N).map(record).collect();
    let mut c = Criterion::default().configure_from_args();
    ingress(&mut c, &rt, &pool, &probe);
    egress(&mut c, &rt, &pool, &probe, &records);
    c.final_summary();
    rt.block_on(process_figures(&pool, &probe));
}

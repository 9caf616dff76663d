//! The core's conformance kit against this connector and MariaDB: the gRPC contract suite, and
//! the data suite (records in = records out, in order; stop and start without loss).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::data::{DataSuite, ExternalSystem};
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, async_trait};
use kps_connector_mysql::MysqlConnector;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::mysql::MySqlPool;

/// A table as the data suite's outside system: records `{"seq": i, "payload": ...}` are rows,
/// in the order of an AUTO_INCREMENT `row_id`.
struct MysqlTable {
    pool: MySqlPool,
    table: String,
    consumed: tokio::sync::Mutex<i64>,
}

impl MysqlTable {
    async fn new(prefix: &str) -> Self {
        let pool = db().await;
        let table = table_name(prefix);
        create(
            &pool,
            &table,
            "row_id BIGINT AUTO_INCREMENT PRIMARY KEY, seq INT NOT NULL, payload VARCHAR(64) NOT NULL",
        )
        .await;
        Self {
            pool,
            table,
            consumed: tokio::sync::Mutex::new(0),
        }
    }

    fn ingress(&self) -> Value {
        json!({"url": url(), "table": self.table, "mode": "incrementing", "cursor_column": "row_id",
               "columns": ["seq", "payload"], "poll_interval_ms": 50})
    }

    fn egress(&self) -> Value {
        json!({"url": url(), "table": self.table})
    }

    async fn cleanup(self) {
        drop_table(&self.pool, &self.table).await;
    }
}

#[async_trait]
impl ExternalSystem for MysqlTable {
    fn record(&self, i: usize) -> Bytes {
        Bytes::from(json!({"seq": i, "payload": format!("kps-record-{i:06}")}).to_string())
    }

    async fn produce(&self, records: &[Bytes]) -> Result<(), String> {
        for chunk in records.chunks(500) {
            let sql = format!(
                "INSERT INTO `{}` (seq, payload) VALUES {}",
                self.table,
                vec!["(?, ?)"; chunk.len()].join(",")
            );
            let mut query = sqlx::query(&sql);
            for record in chunk {
                let v: Value = serde_json::from_slice(record).map_err(|e| e.to_string())?;
                query = query
                    .bind(v["seq"].as_i64().unwrap_or(-1))
                    .bind(v["payload"].as_str().unwrap_or("").to_owned());
            }
            query.execute(&self.pool).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn consume(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>, String> {
        let deadline = Instant::now() + timeout;
        let mut consumed = self.consumed.lock().await;
        let mut out = Vec::with_capacity(n);
        while out.len() < n && Instant::now() < deadline {
            let rows = sqlx::query(&format!(
                "SELECT row_id, seq, payload FROM `{}` WHERE row_id > ? ORDER BY row_id LIMIT ?",
                self.table
            ))
            .bind(*consumed)
            .bind((n - out.len()) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
            if rows.is_empty() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for row in rows {
                *consumed = row.get::<i64, _>(0);
                let seq: i32 = row.get(1);
                let payload: String = row.get(2);
                out.push(Bytes::from(
                    json!({"seq": seq, "payload": payload}).to_string(),
                ));
            }
        }
        Ok(out)
    }

    fn normalize(&self, record: Bytes) -> Bytes {
        // Ingress writes fields in table order; compare as canonical JSON.
        serde_json::from_slice::<Value>(&record)
            .map(|v| Bytes::from(v.to_string()))
            .unwrap_or(record)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_suite_passes() {
    let ingress = MysqlTable::new("kps_contract_in").await;
    let egress = MysqlTable::new("kps_contract_out").await;
    let running = TestConnector::start(MysqlConnector::default()).await;
    let valid = ingress.ingress();
    let with = |key: &str, value: Value| {
        let mut m = valid.clone();
        match value {
            Value::Null => {
                m.as_object_mut().map(|o| o.remove(key));
            }
            v => m[key] = v,
        }
        m
    };
    let suite = ContractSuite::new(
        running.endpoint(),
        running.connector_id(),
        vec![
            StreamDecl::ingress(
                "contract-in",
                unique_name("kps.mysql.cin").as_str(),
                ingress.ingress(),
            ),
            StreamDecl::egress(
                "contract-out",
                unique_name("kps.mysql.cout").as_str(),
                egress.egress(),
            ),
        ],
    )
    .refuses(with("table", json!("x`; DROP TABLE y")), "table")
    .refuses(with("url", Value::Null), "url")
    .refuses(
        with("url", json!("mysql://root:secret@127.0.0.1:3306/test")),
        "url",
    )
    .refuses(with("mode", Value::Null), "mode")
    .refuses(with("mode", json!("upsert")), "mode")
    .refuses(with("cursor_column", json!("id; --")), "cursor_column")
    .refuses(with("batch_size", json!(0)), "batch_size")
    .refuses(with("poll_interval_ms", json!("soon")), "poll_interval_ms")
    .refuses(with("bogus", json!(1)), "bogus");
    suite.run().await.assert_passed();
    running.shutdown().await;
    ingress.cleanup().await;
    egress.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_passes_for_ingress() {
    let suite = DataSuite::new(1_000);
    let system = MysqlTable::new("kps_data_in").await;
    suite
        .ingress_round_trip(MysqlConnector::default(), system.ingress(), &system)
        .await
        .assert_passed();
    system.cleanup().await;

    let system = MysqlTable::new("kps_data_in_restart").await;
    suite
        .ingress_restart(MysqlConnector::default(), system.ingress(), &system)
        .await
        .assert_passed();
    system.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_passes_for_egress() {
    let suite = DataSuite::new(1_000);
    let system = MysqlTable::new("kps_data_out").await;
    suite
        .egress_round_trip(MysqlConnector::default(), system.egress(), &system)
        .await
        .assert_passed();
    system.cleanup().await;

    let system = MysqlTable::new("kps_data_out_restart").await;
    suite
        .egress_restart(MysqlConnector::default(), system.egress(), &system)
        .await
        .assert_passed();
    system.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_ingress_across_a_nats_outage() {
    let system = MysqlTable::new("kps_natscut_in").await;
    let report = DataSuite::new(3000)
        .ingress_nats_cut(MysqlConnector::default(), system.ingress(), &system)
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_egress_across_a_nats_outage() {
    let system = MysqlTable::new("kps_natscut_out").await;
    let report = DataSuite::new(3000)
        .egress_nats_cut(MysqlConnector::default(), system.egress(), &system)
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_ingress_survives_sigkill() {
    let system = MysqlTable::new("kps_crash_in").await;
    let report = DataSuite::new(3000)
        .ingress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-mysql")),
            system.ingress(),
            &system,
        )
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_egress_survives_sigkill() {
    let system = MysqlTable::new("kps_crash_out").await;
    let report = DataSuite::new(3000)
        .egress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-mysql")),
            system.egress(),
            &system,
        )
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_egress_skips_malformed_messages() {
    let system = MysqlTable::new("kps_malformed_out").await;
    let report = DataSuite::new(1000)
        .egress_malformed_input(MysqlConnector::default(), system.egress(), &system)
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

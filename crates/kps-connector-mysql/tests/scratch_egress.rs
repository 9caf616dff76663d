#![allow(missing_docs)]
mod common;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use common::*;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, State};
use kps_connector_mysql::{MysqlConnector, sink};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch() {
    let pool = db().await;
    let table = table_name("kps_scratch");
    create(&pool, &table, "id BIGINT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(100) NOT NULL, qty INT NOT NULL").await;
    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.scratch");
    running.apply(vec![StreamDecl::egress("s", channel.as_str(), json!({"url": url(), "table": table}))]).await.unwrap();
    running.wait_for_state("s", State::Healthy, Duration::from_secs(30)).await;
    let probe = NatsProbe::connect().await;
    let records: Vec<Bytes> = (0..20000).map(|i| Bytes::from(json!({"id": i + 1, "payload": format!("kps-record-{i:010}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), "qty": i}).to_string())).collect();
    for per in [1usize, 100] {
        exec(&pool, &format!("TRUNCATE TABLE `{table}`")).await;
        for c in [&sink::BATCHES, &sink::ROWS, &sink::STATEMENTS, &sink::INSERT_US, &sink::COMMIT_US] { c.store(0, Relaxed); }
        let t = Instant::now();
        probe.publish_records(&channel, &records, per).await;
        let published = t.elapsed();
        eventually(Duration::from_secs(60), "rows", || async { count(&pool, &table).await == 20000 }).await;
        println!("per_message {per}: published in {published:?}, all rows in {:?}; batches {} rows {} statements {} insert_ms {} commit_ms {}",
            t.elapsed(), sink::BATCHES.load(Relaxed), sink::ROWS.load(Relaxed), sink::STATEMENTS.load(Relaxed),
            sink::INSERT_US.load(Relaxed)/1000, sink::COMMIT_US.load(Relaxed)/1000);
    }
    running.shutdown().await;
    drop_table(&pool, &table).await;
}

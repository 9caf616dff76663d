//! The connections a stream holds: the ingress reader's, and the egress sink's (one while
//! quiet, at most two under load), all closed once the stream is removed.

mod common;

use std::time::Duration;

use common::*;
use kps_connector_core::State;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_mysql::MysqlConnector;
use serde_json::{Value, json};
use sqlx::mysql::MySqlPool;

const WAIT: Duration = Duration::from_secs(60);

/// A database user of this test's own, so its connections can be counted.
struct TestUser {
    name: String,
}

impl TestUser {
    async fn create(pool: &MySqlPool) -> Self {
        let name = unique_name("kps_u");
        exec(pool, &format!("CREATE USER '{name}'@'127.0.0.1'")).await;
        exec(pool, &format!("GRANT ALL ON *.* TO '{name}'@'127.0.0.1'")).await;
        Self { name }
    }

    /// The test database's URL, as this user.
    fn url(&self) -> String {
        let mut url = url::Url::parse(&url()).expect("test url");
        url.set_username(&self.name).expect("user name");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.to_string()
    }

    /// How many connections the server has for this user.
    async fn connections(&self, pool: &MySqlPool) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = ?")
            .bind(&self.name)
            .fetch_one(pool)
            .await
            .expect("processlist")
    }

    async fn drop(self, pool: &MySqlPool) {
        exec(pool, &format!("DROP USER '{}'@'127.0.0.1'", self.name)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_stream_is_closed_when_it_is_removed() {
    let pool = db().await;
    let user = TestUser::create(&pool).await;
    let table = table_name("kps_conns");
    create(
        &pool,
        &table,
        "id BIGINT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64) NOT NULL",
    )
    .await;
    insert_payloads(&pool, &table, 0, 100).await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let probe = NatsProbe::connect().await;
    let input = unique_name("kps.mysql.conns.in");
    let output = unique_name("kps.mysql.conns.out");
    let mut arrivals = probe.subscribe(&input).await;
    let ingress: Value = json!({
        "url": user.url(), "table": table, "mode": "incrementing", "cursor_column": "id",
        "poll_interval_ms": 20,
    });
    let egress: Value = json!({"url": user.url(), "table": table, "columns": ["payload"]});
    running
        .apply(vec![
            StreamDecl::ingress("in", input.as_str(), ingress),
            StreamDecl::egress("out", output.as_str(), egress),
        ])
        .await
        .expect("streams accepted");
    running.wait_for_state("out", State::Healthy, WAIT).await;
    assert_eq!(arrivals.collect(100, WAIT).await.len(), 100);

    // Many batches at once: the sink writes the next while one commits.
    let records: Vec<_> = (0..3000)
        .map(|i| kps_connector_core::Bytes::from(json!({"payload": format!("w-{i}")}).to_string()))
        .collect();
    probe.publish_records(&output, &records, 1).await;
    eventually(WAIT, "the written rows", || async {
        count(&pool, &table).await == 3100
    })
    .await;
    // The reader publishes what the sink wrote, too.
    assert_eq!(arrivals.collect(3000, WAIT).await.len(), 3000);
    let open = user.connections(&pool).await;
    assert!(
        (2..=3).contains(&open),
        "the reader's connection and one or two of the sink: {open}"
    );

    running.apply(vec![]).await.expect("streams removed");
    eventually(WAIT, "no connection left", || async {
        user.connections(&pool).await == 0
    })
    .await;

    running.shutdown().await;
    drop_table(&pool, &table).await;
    user.drop(&pool).await;
}

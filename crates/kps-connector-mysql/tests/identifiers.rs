//! Hostile identifiers: names such as "x`; DROP TABLE y" in stream metadata are refused with
//! INVALID_ARGUMENT naming the field, and in a record they are an unknown column; nothing runs.

mod common;

use std::time::Duration;

use common::*;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, State};
use kps_connector_mysql::MysqlConnector;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_are_refused_and_nothing_is_dropped() {
    let pool = db().await;
    let victim = table_name("kps_victim");
    let table = table_name("kps_ident");
    create(&pool, &victim, "id INT PRIMARY KEY").await;
    create(&pool, &table, "id INT AUTO_INCREMENT PRIMARY KEY, v INT").await;
    let evil = format!("x`; DROP TABLE `{victim}`; --");

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let base = json!({"url": url(), "table": table, "mode": "incrementing", "cursor_column": "id"});
    let with = |key: &str, value: Value| {
        let mut m = base.clone();
        m[key] = value;
        m
    };
    let cases: Vec<(StreamDecl, &str)> = vec![
        (
            StreamDecl::ingress("t", "kps.ident", with("table", json!(evil))),
            "table",
        ),
        (
            StreamDecl::ingress("c", "kps.ident", with("columns", json!(["v", evil]))),
            "columns",
        ),
        (
            StreamDecl::ingress("k", "kps.ident", with("cursor_column", json!(evil))),
            "cursor_column",
        ),
        (
            StreamDecl::ingress(
                "ts",
                "kps.ident",
                json!({"url": url(), "table": table, "mode": "timestamp", "timestamp_column": evil}),
            ),
            "timestamp_column",
        ),
        (
            StreamDecl::egress(
                "u",
                "kps.ident",
                json!({"url": url(), "table": table, "mode": "upsert", "key_columns": [evil]}),
            ),
            "key_columns",
        ),
        (
            StreamDecl::egress("e", "kps.ident", json!({"url": url(), "table": evil})),
            "table",
        ),
    ];
    for (stream, field) in cases {
        let status = running
            .apply(vec![stream])
            .await
            .expect_err("a hostile name is refused");
        assert_eq!(
            format!("{:?}", status.code()),
            "InvalidArgument",
            "{status:?}"
        );
        assert!(
            status.message().contains(field),
            "`{field}` not named: {}",
            status.message()
        );
    }
    assert!(
        running.streams().await.iter().all(|s| !s.subscribed),
        "nothing started"
    );

    // In a record, a hostile key is an unknown column: refused, never pasted into SQL.
    let channel = unique_name("kps.mysql.ident");
    running
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"url": url(), "table": table}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("out", State::Healthy, Duration::from_secs(30))
        .await;
    let probe = NatsProbe::connect().await;
    let record = json!({"id": 1, evil.clone(): 1}).to_string();
    probe
        .publish_records(
            &channel,
            &[Bytes::from(record), Bytes::from(r#"{"id":2,"v":2}"#)],
            2,
        )
        .await;
    eventually(Duration::from_secs(30), "the good record", || async {
        count(&pool, &table).await == 1
    })
    .await;
    // The alert follows the commit's confirmation, a moment after the row is visible.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rejected = loop {
        let events = running.events().await;
        if let Some(rejected) = alert(&events, "record-rejected", "out") {
            break rejected.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hostile record is rejected: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        rejected.message.contains("unknown column"),
        "{}",
        rejected.message
    );

    assert_eq!(
        count(&pool, &victim).await,
        0,
        "the victim table still exists"
    );
    running.shutdown().await;
    drop_table(&pool, &victim).await;
    drop_table(&pool, &table).await;
}

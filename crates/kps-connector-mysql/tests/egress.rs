//! Egress against MariaDB: JSON records from NATS written as rows: 2,000 inserts, upserts, a bad
//! record among good ones, and every column type through egress and back through ingress.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, State};
use kps_connector_mysql::MysqlConnector;
use serde_json::{Value, json};
use sqlx::Row;

const WAIT: Duration = Duration::from_secs(60);

fn records(values: impl IntoIterator<Item = Value>) -> Vec<Bytes> {
    values
        .into_iter()
        .map(|v| Bytes::from(v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_2000_records_then_upserts_updates_and_new_rows() {
    let pool = db().await;
    let table = table_name("kps_out_rows");
    // A partial upsert is still an INSERT first: columns it leaves out need a default.
    create(
        &pool,
        &table,
        "id INT PRIMARY KEY, name VARCHAR(32) NOT NULL DEFAULT '', qty INT",
    )
    .await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let insert_channel = unique_name("kps.mysql.out");
    let upsert_channel = unique_name("kps.mysql.upsert");
    running
        .apply(vec![
            StreamDecl::egress(
                "insert",
                insert_channel.as_str(),
                json!({"url": url(), "table": table}),
            ),
            StreamDecl::egress(
                "upsert",
                upsert_channel.as_str(),
                json!({"url": url(), "table": table, "mode": "upsert", "key_columns": ["id"]}),
            ),
        ])
        .await
        .expect("streams accepted");
    running.wait_for_state("insert", State::Healthy, WAIT).await;
    running.wait_for_state("upsert", State::Healthy, WAIT).await;

    let probe = NatsProbe::connect().await;
    let inserts = records((1..=2000).map(|i| json!({"id": i, "name": format!("n-{i}"), "qty": i})));
    probe.publish_records(&insert_channel, &inserts, 100).await;
    eventually(WAIT, "2000 rows", || async {
        count(&pool, &table).await == 2000
    })
    .await;
    let sum: i64 = sqlx::query_scalar(&format!("SELECT CAST(SUM(qty) AS SIGNED) FROM `{table}`"))
        .fetch_one(&pool)
        .await
        .expect("sum");
    assert_eq!(sum, 2000 * 2001 / 2);

    // 100 existing ids updated, 100 new ones inserted, one record setting only some columns.
    let mut upserts: Vec<Value> = (1901..=2100)
        .map(|i| json!({"id": i, "name": format!("u-{i}"), "qty": -i}))
        .collect();
    upserts.push(json!({"id": 5, "qty": 0}));
    probe
        .publish_records(&upsert_channel, &records(upserts), 50)
        .await;
    eventually(WAIT, "upserts applied", || async {
        let row = sqlx::query(&format!("SELECT name, qty FROM `{table}` WHERE id = 5"))
            .fetch_one(&pool)
            .await
            .expect("row 5");
        count(&pool, &table).await == 2100 && row.get::<Option<i32>, _>(1) == Some(0)
    })
    .await;
    let rows = sqlx::query(&format!(
        "SELECT id, name, qty FROM `{table}` WHERE id IN (5, 1900, 1901, 2000, 2100) ORDER BY id"
    ))
    .fetch_all(&pool)
    .await
    .expect("rows");
    let got: Vec<(i32, String, i32)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        vec![
            (5, "n-5".to_owned(), 0),
            (1900, "n-1900".to_owned(), 1900),
            (1901, "u-1901".to_owned(), -1901),
            (2000, "u-2000".to_owned(), -2000),
            (2100, "u-2100".to_owned(), -2100),
        ]
    );
    let events = running.events().await;
    assert!(
        alert(&events, "record-rejected", "insert").is_none(),
        "{events:#?}"
    );
    assert!(
        alert(&events, "record-rejected", "upsert").is_none(),
        "{events:#?}"
    );

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_keep_their_order_in_ids_and_upserts_of_one_key() {
    let pool = db().await;
    let rows = table_name("kps_out_order");
    create(
        &pool,
        &rows,
        "id BIGINT AUTO_INCREMENT PRIMARY KEY, seq INT NOT NULL",
    )
    .await;
    let keys = table_name("kps_out_keys");
    create(&pool, &keys, "k INT PRIMARY KEY, v INT NOT NULL").await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let insert_channel = unique_name("kps.mysql.order");
    let upsert_channel = unique_name("kps.mysql.keys");
    running
        .apply(vec![
            StreamDecl::egress(
                "order",
                insert_channel.as_str(),
                json!({"url": url(), "table": rows}),
            ),
            StreamDecl::egress(
                "keys",
                upsert_channel.as_str(),
                json!({"url": url(), "table": keys, "mode": "upsert", "key_columns": ["k"]}),
            ),
        ])
        .await
        .expect("streams accepted");
    running.wait_for_state("order", State::Healthy, WAIT).await;
    running.wait_for_state("keys", State::Healthy, WAIT).await;

    // One record per message, as the platform publishes: many batches, sent while earlier ones
    // commit, some sharing a transaction.
    let probe = NatsProbe::connect().await;
    let n = 6000;
    probe
        .publish_records(
            &insert_channel,
            &records((0..n).map(|i| json!({"seq": i}))),
            1,
        )
        .await;
    // Three keys written over and over: a batch waits for the row locks of the transaction
    // before it, which commits on its own.
    probe
        .publish_records(
            &upsert_channel,
            &records((0..n).map(|i| json!({"k": i % 3, "v": i}))),
            1,
        )
        .await;
    eventually(WAIT, "every insert", || async {
        count(&pool, &rows).await == i64::from(n)
    })
    .await;
    let seqs: Vec<i32> = sqlx::query_scalar(&format!("SELECT seq FROM `{rows}` ORDER BY id"))
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<i32>>(),
        "ids follow the order of the records"
    );
    let last = |k: i32| (n - 3..n).find(|v| v % 3 == k).unwrap_or_default();
    eventually(WAIT, "the last value of every key", || async {
        let got: Vec<(i32, i32)> = sqlx::query(&format!("SELECT k, v FROM `{keys}` ORDER BY k"))
            .fetch_all(&pool)
            .await
            .expect("keys")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        got == vec![(0, last(0)), (1, last(1)), (2, last(2))]
    })
    .await;
    let events = running.events().await;
    for stream in ["order", "keys"] {
        assert!(
            alert(&events, "connection", stream).is_none(),
            "no write failed: {events:#?}"
        );
    }

    running.shutdown().await;
    drop_table(&pool, &rows).await;
    drop_table(&pool, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_among_good_ones_is_rejected_alone() {
    let pool = db().await;
    let table = table_name("kps_out_bad");
    create(
        &pool,
        &table,
        "id INT PRIMARY KEY, name VARCHAR(8) NOT NULL, n INT",
    )
    .await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.bad");
    let dead_letters = unique_name("kps.mysql.dlq");
    running
        .set_config(json!({"dead_letter_subject": dead_letters}))
        .await
        .expect("config accepted");
    running
        .apply(vec![StreamDecl::egress(
            "bad",
            channel.as_str(),
            json!({"url": url(), "table": table}),
        )])
        .await
        .expect("stream accepted");
    running.wait_for_state("bad", State::Healthy, WAIT).await;
    let probe = NatsProbe::connect().await;
    let mut refused = probe.subscribe(&dead_letters).await;

    let batch: Vec<Bytes> = vec![
        Bytes::from(r#"{"id":1,"name":"a","n":1}"#),
        Bytes::from("not json at all"),
        Bytes::from(r#"{"id":2,"name":"b","nope":1}"#),
        Bytes::from(r#"{"id":3,"name":"c","n":"three"}"#),
        Bytes::from(r#"{"id":4,"name":"d","n":4}"#),
        Bytes::from(r#"{"id":1,"name":"dup","n":5}"#),
        Bytes::from(r#"{"id":6,"name":"much too long for eight","n":6}"#),
        Bytes::from(r#"{"id":7,"name":"g","n":7}"#),
    ];
    // One TransportMessage: one batch, one transaction.
    probe.publish_records(&channel, &batch, batch.len()).await;

    let dead: BTreeSet<Bytes> = refused.collect(5, WAIT).await.into_iter().collect();
    let expected: BTreeSet<Bytes> = [1, 2, 3, 5, 6].iter().map(|i| batch[*i].clone()).collect();
    assert_eq!(dead, expected, "exactly the bad records are dead-lettered");
    let rows = sqlx::query(&format!("SELECT id, name FROM `{table}` ORDER BY id"))
        .fetch_all(&pool)
        .await
        .expect("rows");
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (1, "a".to_owned()),
            (4, "d".to_owned()),
            (7, "g".to_owned())
        ]
    );

    let events = running.events().await;
    let rejected = alert(&events, "record-rejected", "bad").expect("rejections are alerted");
    assert!(
        rejected.message.contains("5 record(s)"),
        "{}",
        rejected.message
    );
    assert!(
        !rejected.message.contains("much too long"),
        "no payload in events: {}",
        rejected.message
    );
    running.wait_for_state("bad", State::Healthy, WAIT).await;

    // The stream goes on with later records.
    probe
        .publish_records(&channel, &[Bytes::from(r#"{"id":8,"name":"h","n":8}"#)], 1)
        .await;
    eventually(WAIT, "a later record", || async {
        count(&pool, &table).await == 4
    })
    .await;

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips_through_egress_and_ingress() {
    let pool = db().await;
    let table = table_name("kps_out_types");
    create(&pool, &table, ALL_TYPES).await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let out_channel = unique_name("kps.mysql.typesout");
    let in_channel = unique_name("kps.mysql.typesin");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&in_channel).await;
    running
        .apply(vec![
            StreamDecl::egress(
                "types-out",
                out_channel.as_str(),
                json!({"url": url(), "table": table}),
            ),
            StreamDecl::ingress(
                "types-in",
                in_channel.as_str(),
                json!({"url": url(), "table": table, "mode": "incrementing", "cursor_column": "id",
                       "poll_interval_ms": 50}),
            ),
        ])
        .await
        .expect("streams accepted");
    running
        .wait_for_state("types-out", State::Healthy, WAIT)
        .await;

    // What ingress wrote for a row is what egress accepts for it; offsets become UTC.
    let mut written = all_types_record();
    written["t_ts"] = json!("2024-03-01T03:02:03.5+02:00");
    let nulls: Value = all_types_columns()
        .into_iter()
        .map(|c| (c, Value::Null))
        .collect::<serde_json::Map<_, _>>()
        .into();
    probe
        .publish_records(&out_channel, &records([written, nulls]), 2)
        .await;

    let read = parse(&arrivals.collect(2, WAIT).await);
    let mut expected = json!({"id": 1});
    expected
        .as_object_mut()
        .unwrap()
        .extend(all_types_record().as_object().unwrap().clone());
    assert_eq!(read[0], expected);
    let mut expected_nulls = json!({"id": 2});
    for column in all_types_columns() {
        expected_nulls[column.as_str()] = Value::Null;
    }
    assert_eq!(read[1], expected_nulls);

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_connection_is_retried_with_the_same_batch() {
    let pool = db().await;
    let table = table_name("kps_out_cut");
    create(
        &pool,
        &table,
        "id INT PRIMARY KEY, name VARCHAR(32) NOT NULL",
    )
    .await;
    let upstream = url::Url::parse(&url()).expect("test url");
    let upstream_addr = format!(
        "{}:{}",
        upstream.host_str().unwrap_or("127.0.0.1"),
        upstream.port().unwrap_or(3306)
    );
    let proxy = kps_connector_core::testkit::FaultProxy::start(
        upstream_addr.parse().expect("socket address"),
    )
    .await;
    let mut proxied = upstream.clone();
    proxied.set_port(Some(proxy.addr().port())).expect("port");

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.outcut");
    running
        .apply(vec![StreamDecl::egress(
            "cut",
            channel.as_str(),
            json!({"url": proxied.as_str(), "table": table}),
        )])
        .await
        .expect("stream accepted");
    running.wait_for_state("cut", State::Healthy, WAIT).await;
    let probe = NatsProbe::connect().await;
    let batch = |range: std::ops::RangeInclusive<i32>| {
        records(range.map(|i| json!({"id": i, "name": format!("n-{i}")})))
    };
    probe.publish_records(&channel, &batch(1..=100), 10).await;
    eventually(WAIT, "the first 100 rows", || async {
        count(&pool, &table).await == 100
    })
    .await;

    proxy.cut();
    probe.publish_records(&channel, &batch(101..=200), 10).await;
    running.wait_for_state("cut", State::Unhealthy, WAIT).await;
    assert_eq!(count(&pool, &table).await, 100);
    proxy.restore();
    eventually(WAIT, "the held batch written after the cut", || async {
        count(&pool, &table).await == 200
    })
    .await;
    running.wait_for_state("cut", State::Healthy, WAIT).await;
    let events = running.events().await;
    assert!(
        alert(&events, "record-rejected", "cut").is_none(),
        "nothing written twice: {events:#?}"
    );

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

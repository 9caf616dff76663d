//! Ingress against MariaDB: rows in, JSON records out on NATS, with exact ids, every column
//! type, new rows while running, restarts, the timestamp modes and a lost connection.

mod common;

use std::time::Duration;

use common::*;
use kps_connector_core::State;
use kps_connector_core::testkit::{FaultProxy, NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_mysql::MysqlConnector;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn incrementing(table: &str) -> Value {
    json!({"url": url(), "table": table, "mode": "incrementing", "cursor_column": "id", "poll_interval_ms": 50})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_2000_rows_then_rows_added_while_running_with_exact_ids() {
    let pool = db().await;
    let table = table_name("kps_in_rows");
    create(
        &pool,
        &table,
        "id BIGINT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64) NOT NULL",
    )
    .await;
    insert_payloads(&pool, &table, 0, 2000).await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.in");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    running
        .apply(vec![StreamDecl::ingress(
            "rows",
            channel.as_str(),
            incrementing(&table),
        )])
        .await
        .expect("stream accepted");

    let first = parse(&arrivals.collect(2000, WAIT).await);
    assert_eq!(ints(&first, "id"), (1..=2000).collect::<Vec<i64>>());
    assert_eq!(first[0], json!({"id": 1, "payload": "row-0"}));
    assert_eq!(first[1999], json!({"id": 2000, "payload": "row-1999"}));

    // Rows added while the stream runs are picked up, and only those.
    insert_payloads(&pool, &table, 2000, 25).await;
    let more = parse(&arrivals.collect(25, WAIT).await);
    assert_eq!(ints(&more, "id"), (2001..=2025).collect::<Vec<i64>>());
    assert!(
        arrivals.drain(Duration::from_millis(500)).await.is_empty(),
        "no row twice"
    );

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_is_mapped() {
    let pool = db().await;
    let table = table_name("kps_in_types");
    create(&pool, &table, ALL_TYPES).await;
    let mut conn = pool.acquire().await.expect("connection");
    // The TIMESTAMP literal is written in +02:00 and must come out in UTC.
    sqlx::query("SET time_zone = '+02:00'")
        .execute(&mut *conn)
        .await
        .expect("time zone");
    let columns = all_types_columns().join(", ");
    sqlx::query(&format!(
        "INSERT INTO `{table}` ({columns}) VALUES {ALL_TYPES_VALUES}"
    ))
    .execute(&mut *conn)
    .await
    .expect("typed row");
    sqlx::query(&format!("INSERT INTO `{table}` () VALUES ()"))
        .execute(&mut *conn)
        .await
        .expect("null row");
    drop(conn);

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.types");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    running
        .apply(vec![StreamDecl::ingress(
            "types",
            channel.as_str(),
            incrementing(&table),
        )])
        .await
        .expect("stream accepted");
    let records = arrivals.collect(2, WAIT).await;
    let values = parse(&records);
    assert_eq!(values.len(), 2);

    let mut expected = json!({"id": 1});
    expected
        .as_object_mut()
        .unwrap()
        .extend(all_types_record().as_object().unwrap().clone());
    assert_eq!(values[0], expected);
    // Fields come in table order; exact integers survive the text (no float rounding).
    let text = std::str::from_utf8(&records[0]).unwrap();
    assert!(text.starts_with("{\"id\":1,\"t_tiny\":-128,"), "{text}");
    assert!(text.contains("\"t_ubig\":18446744073709551615,"), "{text}");
    assert!(text.contains("\"t_big\":-9223372036854775808,"), "{text}");

    let mut nulls = json!({"id": 2});
    for column in all_types_columns() {
        nulls[column.as_str()] = Value::Null;
    }
    assert_eq!(values[1], nulls);

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_after_the_confirmed_cursor_without_duplicates() {
    let pool = db().await;
    let table = table_name("kps_in_restart");
    create(
        &pool,
        &table,
        "id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64) NOT NULL",
    )
    .await;
    insert_payloads(&pool, &table, 0, 300).await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.restart");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut params = incrementing(&table);
    params["batch_size"] = json!(50);
    running
        .apply(vec![StreamDecl::ingress(
            "restart",
            channel.as_str(),
            params,
        )])
        .await
        .expect("stream accepted");
    let before = parse(&arrivals.collect(300, WAIT).await);
    assert_eq!(ints(&before, "id"), (1..=300).collect::<Vec<i64>>());

    running.stop().await;
    insert_payloads(&pool, &table, 300, 200).await;
    running.start_again().await;
    let after = parse(&arrivals.collect(200, WAIT).await);
    assert_eq!(ints(&after, "id"), (301..=500).collect::<Vec<i64>>());
    assert!(
        arrivals.drain(Duration::from_secs(1)).await.is_empty(),
        "a clean stop and start must not repeat rows"
    );

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_modes_read_whole_groups_once_and_follow_changes() {
    let pool = db().await;
    let table = table_name("kps_in_ts");
    create(
        &pool,
        &table,
        "id INT AUTO_INCREMENT PRIMARY KEY, ts DATETIME(6) NOT NULL, payload VARCHAR(64)",
    )
    .await;
    // Groups of equal timestamps larger than a batch (batch_size 3).
    for (ts, n) in [
        ("2024-01-01 00:00:01", 4),
        ("2024-01-01 00:00:02", 5),
        ("2024-01-01 00:00:03", 1),
    ] {
        for _ in 0..n {
            sqlx::query(&format!(
                "INSERT INTO `{table}` (ts, payload) VALUES (?, 'v1')"
            ))
            .bind(ts)
            .execute(&pool)
            .await
            .expect("row");
        }
    }

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let probe = NatsProbe::connect().await;
    let ts_channel = unique_name("kps.mysql.ts");
    let both_channel = unique_name("kps.mysql.tsinc");
    let mut ts_arrivals = probe.subscribe(&ts_channel).await;
    let mut both_arrivals = probe.subscribe(&both_channel).await;
    running
        .apply(vec![
            StreamDecl::ingress(
                "by-ts",
                ts_channel.as_str(),
                json!({"url": url(), "table": table, "mode": "timestamp", "timestamp_column": "ts",
                       "batch_size": 3, "poll_interval_ms": 50}),
            ),
            StreamDecl::ingress(
                "by-ts-id",
                both_channel.as_str(),
                json!({"url": url(), "table": table, "mode": "timestamp+incrementing",
                       "timestamp_column": "ts", "cursor_column": "id", "batch_size": 3,
                       "poll_interval_ms": 50}),
            ),
        ])
        .await
        .expect("streams accepted");

    let by_ts = parse(&ts_arrivals.collect(10, WAIT).await);
    let mut ids = ints(&by_ts, "id");
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=10).collect::<Vec<i64>>(),
        "every row once, whole groups"
    );
    let by_both = parse(&both_arrivals.collect(10, WAIT).await);
    assert_eq!(
        ints(&by_both, "id"),
        (1..=10).collect::<Vec<i64>>(),
        "in (ts, id) order"
    );
    assert_eq!(by_both[0]["ts"], json!("2024-01-01T00:00:01Z"));

    // A changed row (a newer last-modified time) comes again, with its new content.
    exec(
        &pool,
        &format!("UPDATE `{table}` SET ts = '2024-01-01 00:00:09', payload = 'v2' WHERE id = 2"),
    )
    .await;
    for arrivals in [&mut ts_arrivals, &mut both_arrivals] {
        let changed = parse(&arrivals.collect(1, WAIT).await);
        assert_eq!(
            changed,
            vec![json!({"id": 2, "ts": "2024-01-01T00:00:09Z", "payload": "v2"})]
        );
        assert!(arrivals.drain(Duration::from_millis(500)).await.is_empty());
    }

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_now_reads_only_rows_added_later_and_columns_choose_the_fields() {
    let pool = db().await;
    let table = table_name("kps_in_now");
    create(
        &pool,
        &table,
        "id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64) NOT NULL, secret VARCHAR(8)",
    )
    .await;
    insert_payloads(&pool, &table, 0, 5).await;

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.now");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut params = incrementing(&table);
    params["start"] = json!("now");
    params["columns"] = json!(["payload"]);
    running
        .apply(vec![StreamDecl::ingress("now", channel.as_str(), params)])
        .await
        .expect("stream accepted");
    running.wait_for_state("now", State::Healthy, WAIT).await;
    insert_payloads(&pool, &table, 5, 3).await;
    let records = parse(&arrivals.collect(3, WAIT).await);
    assert_eq!(
        records,
        vec![
            json!({"payload": "row-5"}),
            json!({"payload": "row-6"}),
            json!({"payload": "row-7"})
        ]
    );
    assert!(arrivals.drain(Duration::from_millis(500)).await.is_empty());

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_database_connection_is_retried_without_losing_rows() {
    let pool = db().await;
    let table = table_name("kps_in_cut");
    create(
        &pool,
        &table,
        "id INT AUTO_INCREMENT PRIMARY KEY, payload VARCHAR(64) NOT NULL",
    )
    .await;
    insert_payloads(&pool, &table, 0, 100).await;
    let upstream = url::Url::parse(&url()).expect("test url");
    let upstream_addr = format!(
        "{}:{}",
        upstream.host_str().unwrap_or("127.0.0.1"),
        upstream.port().unwrap_or(3306)
    );
    let proxy = FaultProxy::start(upstream_addr.parse().expect("socket address")).await;
    let mut proxied = upstream.clone();
    proxied.set_port(Some(proxy.addr().port())).expect("port");

    let mut running = TestConnector::start(MysqlConnector::default()).await;
    let channel = unique_name("kps.mysql.cut");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut params = incrementing(&table);
    params["url"] = json!(proxied.as_str());
    running
        .apply(vec![StreamDecl::ingress("cut", channel.as_str(), params)])
        .await
        .expect("stream accepted");
    let first = parse(&arrivals.collect(100, WAIT).await);
    assert_eq!(ints(&first, "id"), (1..=100).collect::<Vec<i64>>());

    proxy.cut();
    running.wait_for_state("cut", State::Unhealthy, WAIT).await;
    insert_payloads(&pool, &table, 100, 100).await;
    proxy.restore();
    let mut second = ints(&parse(&arrivals.collect(100, WAIT).await), "id");
    second.dedup();
    assert_eq!(
        second,
        (101..=200).collect::<Vec<i64>>(),
        "nothing lost, in order"
    );
    running.wait_for_state("cut", State::Healthy, WAIT).await;
    let events = running.events().await;
    assert!(
        alert(&events, "connection", "cut").is_some(),
        "the lost connection was alerted: {events:#?}"
    );

    running.shutdown().await;
    drop_table(&pool, &table).await;
}

//! Egress against the real RabbitMQ: NATS -> exchange with publisher confirms, in order;
//! routing keys from the records; unroutable records refused, alerted and dead-lettered; a
//! missing exchange retried, or declared.

mod common;

use std::time::Duration;

use common::{Rabbit, amqp_url, assert_all_in_order, events_of, has_status, records};
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, State};
use lapin::ExchangeKind;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::FieldTable;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_moves_10000_records_in_order_with_confirms() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_out");
    rabbit.queue(&queue, &[]).await;
    let mut arrivals = rabbit.consumer(&queue).await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.out");
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"url": amqp_url(), "exchange": "", "routing_key": queue}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("out", State::Healthy, TIMEOUT)
        .await;
    let probe = NatsProbe::connect().await;
    let sent = records(0..10_000);
    // Several records per TransportMessage, as the contract allows.
    probe.publish_records(&channel, &sent, 100).await;
    let received = arrivals.collect(10_000, TIMEOUT).await;
    assert_eq!(received.len(), 10_000);
    assert_eq!(assert_all_in_order(&sent, &received), 0, "no duplicates");
    let metrics = connector.metrics_text().await;
    assert!(metrics.contains("out"), "{metrics}");

    connector.shutdown().await;
    rabbit.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_keys_come_from_the_records_and_unroutable_records_are_refused() {
    let rabbit = Rabbit::connect().await;
    let exchange = unique_name("kps_amqp_ex");
    let queue = unique_name("kps_amqp_routed");
    rabbit.routed_queue(&exchange, &queue, "sensor").await;
    let mut arrivals = rabbit.consumer(&queue).await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.routed");
    let dead_letters = format!("{channel}.dead");
    connector
        .set_config(json!({"dead_letter_subject": dead_letters}))
        .await
        .expect("config accepted");
    let probe = NatsProbe::connect().await;
    let mut dead = probe.subscribe(&dead_letters).await;
    connector
        .apply(vec![StreamDecl::egress(
            "routed",
            channel.as_str(),
            json!({"url": amqp_url(), "exchange": exchange, "routing_key_pointer": "/kind"}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("routed", State::Healthy, TIMEOUT)
        .await;
    let routed_a = Bytes::from_static(br#"{"kind":"sensor","v":1}"#);
    let unroutable = Bytes::from_static(br#"{"kind":"nobody-listens","v":2}"#);
    let no_key = Bytes::from_static(b"not json");
    let routed_b = Bytes::from_static(br#"{"kind":"sensor","v":3}"#);
    let sent = vec![
        routed_a.clone(),
        unroutable.clone(),
        no_key.clone(),
        routed_b.clone(),
    ];
    probe.publish_records(&channel, &sent, 4).await;

    assert_eq!(
        arrivals.collect(2, TIMEOUT).await,
        vec![routed_a, routed_b],
        "routable records arrive, in order"
    );
    assert_eq!(
        dead.collect(2, TIMEOUT).await,
        vec![unroutable, no_key],
        "refused records are dead-lettered"
    );
    // The alert follows the dead letters' publish.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let events = loop {
        let events = connector.events().await;
        if !events_of(&events, "routed", "record-rejected").is_empty()
            || std::time::Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let alerts = events_of(&events, "routed", "record-rejected");
    assert_eq!(alerts.len(), 1, "{events:#?}");
    assert!(has_status(&events, "routed", State::Healthy), "{events:#?}");
    assert!(
        arrivals
            .collect(1, Duration::from_millis(300))
            .await
            .is_empty()
    );

    connector.shutdown().await;
    rabbit.delete(&queue).await;
    rabbit.delete_exchange(&exchange).await;
}

/// Batches of four records, up to four of them waiting for their confirms at once: every
/// unroutable record is refused by the batch it belongs to, exactly once, while the broker's
/// confirms (and the returned messages they carry) cross batch boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_refuse_exactly_their_unroutable_records() {
    let rabbit = Rabbit::connect().await;
    let exchange = unique_name("kps_amqp_ex");
    let queue = unique_name("kps_amqp_pipelined");
    rabbit.routed_queue(&exchange, &queue, "sensor").await;
    let mut arrivals = rabbit.consumer(&queue).await;

    let mut connector = TestConnector::start_with(AmqpConnector, |o| o.max_batch_records = 4).await;
    let channel = unique_name("kps.amqp.pipelined");
    let dead_letters = format!("{channel}.dead");
    connector
        .set_config(json!({"dead_letter_subject": dead_letters}))
        .await
        .expect("config accepted");
    let probe = NatsProbe::connect().await;
    let mut dead = probe.subscribe(&dead_letters).await;
    connector
        .apply(vec![StreamDecl::egress(
            "pipelined",
            channel.as_str(),
            json!({"url": amqp_url(), "exchange": exchange, "routing_key_pointer": "/kind"}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("pipelined", State::Healthy, TIMEOUT)
        .await;
    let sent: Vec<Bytes> = (0..400)
        .map(|i| {
            let kind = if i % 7 == 3 {
                "nobody-listens"
            } else {
                "sensor"
            };
            Bytes::from(format!(r#"{{"kind":"{kind}","v":{i}}}"#))
        })
        .collect();
    let (unroutable, routed): (Vec<Bytes>, Vec<Bytes>) = sent
        .iter()
        .cloned()
        .partition(|r| r.starts_with(br#"{"kind":"nobody"#));
    probe.publish_records(&channel, &sent, 1).await;

    assert_eq!(arrivals.collect(routed.len(), TIMEOUT).await, routed);
    assert_eq!(dead.collect(unroutable.len(), TIMEOUT).await, unroutable);
    assert!(
        arrivals
            .collect(1, Duration::from_millis(300))
            .await
            .is_empty()
    );
    assert!(dead.collect(1, Duration::from_millis(300)).await.is_empty());
    let events = connector.events().await;
    assert!(
        events_of(&events, "pipelined", "connection").is_empty(),
        "no write failed: {events:#?}"
    );
    let metrics = connector.metrics_text().await;
    let unroutable_count = format!("{}", unroutable.len());
    assert!(
        metrics.lines().any(|l| l.contains("amqp_unroutable")
            && l.contains("pipelined")
            && l.ends_with(&unroutable_count)),
        "{metrics}"
    );

    connector.shutdown().await;
    rabbit.delete(&queue).await;
    rabbit.delete_exchange(&exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_is_unhealthy_and_declare_creates_it() {
    let rabbit = Rabbit::connect().await;
    let missing = unique_name("kps_amqp_noex");
    let declared = unique_name("kps_amqp_newex");
    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.noex");
    connector
        .apply(vec![
            StreamDecl::egress(
                "missing",
                channel.as_str(),
                json!({"url": amqp_url(), "exchange": missing}),
            ),
            StreamDecl::egress(
                "declared",
                format!("{channel}.declared"),
                json!({"url": amqp_url(), "exchange": declared, "declare": true, "exchange_type": "fanout"}),
            ),
        ])
        .await
        .expect("streams accepted");
    connector
        .wait_for_state("declared", State::Healthy, TIMEOUT)
        .await;
    connector
        .wait_for_state("missing", State::Unhealthy, TIMEOUT)
        .await;
    let events = connector.events().await;
    assert!(
        events_of(&events, "missing", "connection")
            .iter()
            .any(|a| a.message.contains("not found")),
        "{events:#?}"
    );
    // The declared exchange exists now: a passive declare succeeds.
    rabbit
        .channel
        .exchange_declare(
            declared.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                passive: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the exchange was declared");
    connector.shutdown().await;
    rabbit.delete_exchange(&declared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacked_records_are_written_again_not_lost() {
    use lapin::types::{AMQPValue, LongString};
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_full");
    // Holds 5 messages and nacks publishes beyond that.
    rabbit
        .queue(
            &queue,
            &[
                ("x-max-length", AMQPValue::LongInt(5)),
                (
                    "x-overflow",
                    AMQPValue::LongString(LongString::from("reject-publish")),
                ),
            ],
        )
        .await;
    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.full");
    connector
        .apply(vec![StreamDecl::egress(
            "full",
            channel.as_str(),
            json!({"url": amqp_url(), "exchange": "", "routing_key": queue}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("full", State::Healthy, TIMEOUT)
        .await;
    let probe = NatsProbe::connect().await;
    let sent = records(0..10);
    probe.publish_records(&channel, &sent, 10).await;
    connector
        .wait_for_state("full", State::Unhealthy, TIMEOUT)
        .await;
    let events = connector.events().await;
    assert!(
        events_of(&events, "full", "connection")
            .iter()
            .any(|a| a.message.contains("nacked")),
        "{events:#?}"
    );

    // Room in the queue again: the batch is written again until every record is in.
    let mut arrivals = rabbit.consumer(&queue).await;
    let mut received = Vec::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline && !sent.iter().all(|r| received.contains(r)) {
        received.extend(arrivals.collect(10, Duration::from_millis(500)).await);
    }
    let duplicates = assert_distinct_in_order(&sent, &received);
    eprintln!("nacked batch written again: {duplicates} duplicate(s)");
    connector
        .wait_for_state("full", State::Healthy, TIMEOUT)
        .await;
    connector.shutdown().await;
    rabbit.delete(&queue).await;
}

/// Every record arrived; the first arrival of each keeps the order. Returns the duplicates.
fn assert_distinct_in_order(sent: &[Bytes], received: &[Bytes]) -> usize {
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&Bytes> = received.iter().filter(|r| seen.insert(*r)).collect();
    assert!(
        sent.iter().all(|r| seen.contains(r)),
        "records lost: {received:?}"
    );
    let sent_refs: Vec<&Bytes> = sent.iter().collect();
    assert_eq!(firsts, sent_refs, "first arrivals in order");
    received.len() - firsts.len()
}

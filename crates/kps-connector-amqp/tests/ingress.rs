//! Ingress against the real RabbitMQ: queue -> NATS, in order, acknowledged; unhandled messages
//! dead-lettered with an alert; a missing queue retried, or declared.

mod common;

use std::time::Duration;

use common::{AMQP_ADDR, Rabbit, amqp_url, assert_all_in_order, events_of, has_status, records};
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::testkit::{
    FaultProxy, NatsProbe, StreamDecl, TestConnector, collect_until_complete, unique_name,
};
use kps_connector_core::{Bytes, State};
use lapin::types::{AMQPValue, LongString};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_moves_10000_records_in_order_and_leaves_the_queue_empty() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_in");
    rabbit.queue(&queue, &[]).await;
    let sent = records(0..10_000);
    rabbit.publish(&queue, &sent).await;
    assert_eq!(rabbit.ready(&queue).await, 10_000);

    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.in");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"url": amqp_url(), "queue": queue}),
        )])
        .await
        .expect("stream accepted");
    let received = arrivals.collect(10_000, TIMEOUT).await;
    assert_eq!(received.len(), 10_000, "records arrived");
    assert_eq!(assert_all_in_order(&sent, &received), 0, "no duplicates");
    assert!(has_status(&connector.events().await, "in", State::Healthy));

    // Stopping closes the connection: anything left unacknowledged would be ready again.
    connector.shutdown().await;
    assert_eq!(
        rabbit.ready(&queue).await,
        0,
        "every delivery was acknowledged"
    );
    rabbit.delete(&queue).await;
}

/// Acknowledgements are coalesced while the stream is behind, but once it has caught up every
/// confirmed delivery is acknowledged: a connection lost then gives nothing back to the queue,
/// so nothing comes twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_stream_has_acknowledged_everything() {
    let rabbit = Rabbit::connect().await;
    let proxy = FaultProxy::start(AMQP_ADDR.parse().expect("address")).await;
    let queue = unique_name("kps_amqp_caught_up");
    rabbit.queue(&queue, &[]).await;
    let sent = records(0..5_000);
    rabbit.publish(&queue, &sent).await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.caught_up");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "caught-up",
            channel.as_str(),
            json!({"url": format!("amqp://{}/%2f", proxy.addr()), "queue": queue}),
        )])
        .await
        .expect("stream accepted");
    let mut received = arrivals.collect(5_000, TIMEOUT).await;
    assert_eq!(received.len(), 5_000, "records arrived");
    // The last batch's acknowledgement follows its confirmation round trip.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A lost connection requeues what was not acknowledged: nothing, here.
    proxy.cut();
    connector
        .wait_for_state("caught-up", State::Unhealthy, TIMEOUT)
        .await;
    proxy.restore();
    connector
        .wait_for_state("caught-up", State::Healthy, TIMEOUT)
        .await;
    let more = records(5_000..5_010);
    rabbit.publish(&queue, &more).await;
    let all: Vec<Bytes> = sent.iter().chain(&more).cloned().collect();
    received.extend(
        collect_until_complete(&all, &received, TIMEOUT, async || {
            arrivals
                .collect(all.len(), Duration::from_millis(500))
                .await
        })
        .await,
    );
    received.extend(arrivals.collect(1, Duration::from_millis(500)).await);
    assert_eq!(assert_all_in_order(&all, &received), 0, "no duplicates");

    connector.shutdown().await;
    assert_eq!(rabbit.ready(&queue).await, 0);
    rabbit.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_json_envelope_and_unhandled_messages_go_to_the_dead_letter_exchange() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_env");
    let dead = format!("{queue}_dlq");
    rabbit.queue(&dead, &[]).await;
    rabbit
        .queue(
            &queue,
            &[
                (
                    "x-dead-letter-exchange",
                    AMQPValue::LongString(LongString::from("")),
                ),
                (
                    "x-dead-letter-routing-key",
                    AMQPValue::LongString(LongString::from(dead.as_str())),
                ),
            ],
        )
        .await;
    let good_a = Bytes::from_static(br#"{"t":1}"#);
    let binary = Bytes::from_static(&[0xff, 0xfe, 0x00]);
    let good_b = Bytes::from_static(b"plain text");
    rabbit
        .publish(&queue, &[good_a.clone(), binary.clone(), good_b.clone()])
        .await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.env");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "env",
            channel.as_str(),
            json!({"url": amqp_url(), "queue": queue, "envelope": "json"}),
        )])
        .await
        .expect("stream accepted");
    let received = arrivals.collect(2, TIMEOUT).await;
    assert_eq!(received.len(), 2);
    let first: serde_json::Value = serde_json::from_slice(&received[0]).expect("a JSON envelope");
    assert_eq!(first["body"], json!(r#"{"t":1}"#));
    assert_eq!(first["routing_key"], json!(queue));
    assert_eq!(first["exchange"], json!(""));
    assert_eq!(first["headers"], json!({}));
    assert_eq!(first["properties"]["delivery_mode"], json!(2));
    let second: serde_json::Value = serde_json::from_slice(&received[1]).expect("a JSON envelope");
    assert_eq!(second["body"], json!("plain text"));

    let mut dead_letters = rabbit.consumer(&dead).await;
    assert_eq!(dead_letters.collect(1, TIMEOUT).await, vec![binary]);
    let events = connector.events().await;
    let alerts = events_of(&events, "env", "record-rejected");
    assert_eq!(
        alerts.len(),
        1,
        "an alert about the rejected message: {events:#?}"
    );
    assert!(
        alerts[0].message.contains("not utf-8"),
        "{}",
        alerts[0].message
    );

    connector.shutdown().await;
    assert_eq!(rabbit.ready(&queue).await, 0);
    rabbit.delete(&queue).await;
    rabbit.delete(&dead).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_is_unhealthy_until_it_exists_and_declare_creates_it() {
    let rabbit = Rabbit::connect().await;
    let missing = unique_name("kps_amqp_missing");
    let declared = unique_name("kps_amqp_declared");
    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.missing");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "missing",
                channel.as_str(),
                json!({"url": amqp_url(), "queue": missing}),
            ),
            StreamDecl::ingress(
                "declared",
                format!("{channel}.declared"),
                json!({"url": amqp_url(), "queue": declared, "declare": true}),
            ),
        ])
        .await
        .expect("streams accepted: a missing queue is not a request error");
    connector
        .wait_for_state("missing", State::Unhealthy, TIMEOUT)
        .await;
    let events = connector.events().await;
    let alerts = events_of(&events, "missing", "connection");
    assert!(
        alerts.iter().any(|a| a.message.contains("not found")),
        "{events:#?}"
    );
    connector
        .wait_for_state("declared", State::Healthy, TIMEOUT)
        .await;
    assert!(rabbit.exists(&declared).await, "declare created the queue");

    // Once the queue exists, the retrying stream opens it and moves its records.
    rabbit.queue(&missing, &[]).await;
    let sent = records(0..10);
    rabbit.publish(&missing, &sent).await;
    connector
        .wait_for_state("missing", State::Healthy, TIMEOUT)
        .await;
    let received = arrivals.collect(10, TIMEOUT).await;
    assert_eq!(received, sent);

    connector.shutdown().await;
    rabbit.delete(&missing).await;
    rabbit.delete(&declared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_queue_makes_the_stream_unhealthy_until_it_is_back() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_deleted");
    rabbit.queue(&queue, &[]).await;
    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.deleted");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "deleted",
            channel.as_str(),
            json!({"url": amqp_url(), "queue": queue}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("deleted", State::Healthy, TIMEOUT)
        .await;

    // The broker cancels the consumer of a deleted queue (a channel-level loss).
    rabbit.delete(&queue).await;
    connector
        .wait_for_state("deleted", State::Unhealthy, TIMEOUT)
        .await;
    let events = connector.events().await;
    assert!(
        events_of(&events, "deleted", "connection")
            .iter()
            .any(
                |a| a.message.contains("cancelled the consumer") || a.message.contains("not found")
            ),
        "{events:#?}"
    );

    rabbit.queue(&queue, &[]).await;
    let sent = records(0..10);
    rabbit.publish(&queue, &sent).await;
    connector
        .wait_for_state("deleted", State::Healthy, TIMEOUT)
        .await;
    assert_eq!(arrivals.collect(10, TIMEOUT).await, sent);
    connector.shutdown().await;
    rabbit.delete(&queue).await;
}

/// A header whose text is not UTF-8 (brokers pass publishers' bytes through) neither stops the
/// stream nor the records after it: its value arrives with replacement characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_that_is_not_utf8_does_not_stop_the_stream() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_hdr");
    rabbit.queue(&queue, &[]).await;
    rabbit
        .publish(&queue, &[Bytes::from_static(b"before")])
        .await;
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "h".into(),
        AMQPValue::LongString(LongString::from(vec![b'a', 0xff, 0xfe, b'z'])),
    );
    rabbit
        .channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            b"with a binary header",
            lapin::BasicProperties::default().with_headers(headers),
        )
        .await
        .expect("basic.publish")
        .await
        .expect("confirmed");
    rabbit
        .publish(&queue, &[Bytes::from_static(b"after")])
        .await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.hdr");
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "hdr",
            channel.as_str(),
            json!({"url": amqp_url(), "queue": queue, "envelope": "json"}),
        )])
        .await
        .expect("stream accepted");
    let received = arrivals.collect(3, TIMEOUT).await;
    let bodies: Vec<serde_json::Value> = received
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(r).expect("a JSON envelope"))
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:#?}");
    assert_eq!(bodies[0]["body"], json!("before"));
    assert_eq!(bodies[1]["body"], json!("with a binary header"));
    assert_eq!(bodies[1]["headers"]["h"], json!("a\u{fffd}\u{fffd}z"));
    assert_eq!(bodies[2]["body"], json!("after"));
    connector.shutdown().await;
    assert_eq!(rabbit.ready(&queue).await, 0);
    rabbit.delete(&queue).await;
}

//! NATS -> MQTT: round trips, the retain flag, and the json envelope (per-record topics,
//! refused records).

use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::State;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, unique_name};
use rumqttc::QoS;
use serde_json::json;

use crate::common::{
    SHARED_PORT, Subscriber, assert_same, connector, payloads, qos_of, records, shared_broker,
    unique_topic, wait_for_events,
};

const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
const ARRIVE_WITHIN: Duration = Duration::from_secs(60);

/// 10,000 records through one egress stream, 50 per TransportMessage, in order, each once, at
/// the stream's qos. Published 500 at a time, each batch awaited at the subscriber, so the
/// broker's default queue for the subscriber is never the limit.
async fn round_trip(qos: u8) {
    let url = shared_broker().await;
    let topic = unique_topic("out");
    let channel = unique_name("kps.mqtt.out");
    let mut subscriber = Subscriber::start(SHARED_PORT, &topic, 2).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"url": url, "topic": topic, "qos": qos}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("out", State::Healthy, HEALTHY_WITHIN)
        .await;

    let probe = NatsProbe::connect().await;
    let sent = records("out", 0..10_000);
    let mut received = Vec::with_capacity(sent.len());
    for chunk in sent.chunks(500) {
        probe.publish_records(&channel, chunk, 50).await;
        let got = subscriber.collect(chunk.len(), ARRIVE_WITHIN).await;
        assert_eq!(
            got.len(),
            chunk.len(),
            "records lost at qos {qos} after {}",
            received.len()
        );
        assert!(
            got.iter()
                .all(|p| p.topic == topic && p.qos == qos_of(qos) && !p.retain)
        );
        received.extend(payloads(&got));
    }
    assert!(
        received == sent,
        "records arrived out of order at qos {qos}"
    );
    assert!(
        subscriber
            .drain(Duration::from_millis(300))
            .await
            .is_empty(),
        "none twice"
    );
    running.shutdown().await;
    subscriber.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_round_trip_10000_records_qos0() {
    round_trip(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_round_trip_10000_records_qos1() {
    round_trip(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_round_trip_qos2() {
    let url = shared_broker().await;
    let topic = unique_topic("out2");
    let channel = unique_name("kps.mqtt.out2");
    let mut subscriber = Subscriber::start(SHARED_PORT, &topic, 2).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::egress(
            "out2",
            channel.as_str(),
            json!({"url": url, "topic": topic, "qos": 2}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("out2", State::Healthy, HEALTHY_WITHIN)
        .await;
    let sent = records("q2", 0..500);
    NatsProbe::connect()
        .await
        .publish_records(&channel, &sent, 25)
        .await;
    let got = subscriber.collect(sent.len(), ARRIVE_WITHIN).await;
    assert_same(&payloads(&got), &sent, "qos 2");
    assert!(got.iter().all(|p| p.qos == QoS::ExactlyOnce));
    running.shutdown().await;
    subscriber.stop().await;
}

/// `retain: true` leaves the last record on the topic for later subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_records_reach_later_subscribers() {
    let url = shared_broker().await;
    let topic = unique_topic("retain");
    let channel = unique_name("kps.mqtt.retain");
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::egress(
            "retain",
            channel.as_str(),
            json!({"url": url, "topic": topic, "retain": true}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("retain", State::Healthy, HEALTHY_WITHIN)
        .await;
    let probe = NatsProbe::connect().await;
    let mut live = Subscriber::start(SHARED_PORT, &topic, 1).await;
    probe
        .publish_records(
            &channel,
            &[Bytes::from_static(b"first"), Bytes::from_static(b"last")],
            2,
        )
        .await;
    assert_eq!(live.collect(2, ARRIVE_WITHIN).await.len(), 2);
    let mut later = Subscriber::start(SHARED_PORT, &topic, 1).await;
    let got = later.collect(1, ARRIVE_WITHIN).await;
    assert_eq!(payloads(&got), vec![Bytes::from_static(b"last")]);
    assert!(got[0].retain);
    running.shutdown().await;
    live.stop().await;
    later.stop().await;
    // Clear the retained message.
    crate::common::publish(SHARED_PORT, &topic, &[Bytes::new()], 1, true).await;
}

/// With the json envelope a record may name its topic, qos and retain flag; a record that is
/// not an envelope is refused (an alert), and the records around it are still written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_envelope_routes_by_topic_and_refuses_bad_records() {
    let url = shared_broker().await;
    let base = unique_topic("env");
    let channel = unique_name("kps.mqtt.env");
    let mut subscriber = Subscriber::start(SHARED_PORT, &format!("{base}/#"), 2).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::egress(
            "env",
            channel.as_str(),
            json!({"url": url, "topic": format!("{base}/default"), "envelope": "json"}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("env", State::Healthy, HEALTHY_WITHIN)
        .await;
    let records = vec![
        Bytes::from(json!({"topic": format!("{base}/a"), "payload": "to a"}).to_string()),
        Bytes::from_static(b"not an envelope"),
        Bytes::from(json!({"payload": "/wAQ", "payload_base64": true, "qos": 0}).to_string()),
        Bytes::from(json!({"topic": format!("{base}/+"), "payload": "wildcard topic"}).to_string()),
        Bytes::from(json!({"topic": format!("{base}/b"), "payload": "to b", "qos": 2}).to_string()),
    ];
    NatsProbe::connect()
        .await
        .publish_records(&channel, &records, 5)
        .await;
    let got = subscriber.collect(3, ARRIVE_WITHIN).await;
    let seen: Vec<(String, Bytes, QoS)> = got
        .iter()
        .map(|p| (p.topic.clone(), p.payload.clone(), p.qos))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                format!("{base}/a"),
                Bytes::from_static(b"to a"),
                QoS::AtLeastOnce
            ),
            (
                format!("{base}/default"),
                Bytes::from_static(&[0xff, 0x00, 0x10]),
                QoS::AtMostOnce
            ),
            (
                format!("{base}/b"),
                Bytes::from_static(b"to b"),
                QoS::ExactlyOnce
            ),
        ]
    );
    let events = wait_for_events(
        &mut running,
        Duration::from_secs(10),
        "a record-rejected alert",
        |events| {
            events
                .iter()
                .any(|e| e.kind == "alert" && e.stream_id == "env" && e.id == "record-rejected")
        },
    )
    .await;
    let alert = events
        .iter()
        .find(|e| e.id == "record-rejected")
        .expect("the alert");
    assert!(alert.message.contains("2 record(s)"), "{}", alert.message);
    assert!(
        !alert.message.contains("not an envelope\""),
        "no payload in alerts: {}",
        alert.message
    );
    running.shutdown().await;
    subscriber.stop().await;
}

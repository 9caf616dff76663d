//! MQTT -> NATS: round trips, wildcards with the json envelope, shared subscriptions and the
//! persistent session across a connector restart.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::State;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, unique_name};
use serde_json::{Value, json};

use crate::common::{
    SHARED_PORT, assert_same, connector, forget_sessions, publish, records, shared_broker,
    unique_topic, wait_for_state_since,
};

const HEALTHY_WITHIN: Duration = Duration::from_secs(30);
const ARRIVE_WITHIN: Duration = Duration::from_secs(60);

/// 10,000 records through one ingress stream, in order, each exactly once. The publisher sends
/// 500 at a time and waits for them on NATS, so the broker never holds more than its default
/// per-client queue (`max_queued_messages 1000`) for the connector.
async fn round_trip(qos: u8) {
    let url = shared_broker().await;
    let topic = unique_topic("in");
    let channel = unique_name("kps.mqtt.in");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"url": url, "topic": topic, "qos": qos}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("in", State::Healthy, HEALTHY_WITHIN)
        .await;

    let sent = records("rec", 0..10_000);
    let mut received = Vec::with_capacity(sent.len());
    for chunk in sent.chunks(500) {
        publish(SHARED_PORT, &topic, chunk, qos, false).await;
        let got = arrivals.collect(chunk.len(), ARRIVE_WITHIN).await;
        assert_eq!(
            got.len(),
            chunk.len(),
            "records lost at qos {qos} after {}",
            received.len()
        );
        received.extend(got);
    }
    assert!(
        received == sent,
        "records arrived out of order at qos {qos}"
    );
    assert!(
        arrivals.drain(Duration::from_millis(300)).await.is_empty(),
        "records arrived twice at qos {qos}"
    );
    let metrics = running.metrics_text().await;
    assert!(
        metrics.contains("stream=\"in\""),
        "per-stream metrics: {metrics}"
    );
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["in"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_round_trip_10000_records_qos0() {
    round_trip(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_round_trip_10000_records_qos1() {
    round_trip(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_round_trip_qos2() {
    let url = shared_broker().await;
    let topic = unique_topic("in2");
    let channel = unique_name("kps.mqtt.in2");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "in2",
            channel.as_str(),
            json!({"url": url, "topic": topic, "qos": 2}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("in2", State::Healthy, HEALTHY_WITHIN)
        .await;
    let sent = records("q2", 0..500);
    publish(SHARED_PORT, &topic, &sent, 2, false).await;
    assert_same(
        &arrivals.collect(sent.len(), ARRIVE_WITHIN).await,
        &sent,
        "qos 2",
    );
    assert!(arrivals.drain(Duration::from_millis(300)).await.is_empty());
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["in2"]).await;
}

/// A `+` filter with the json envelope: every record names the topic it came from, text payloads
/// stay text, binary payloads are base64, qos and retain are reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_subscription_with_json_envelope() {
    let url = shared_broker().await;
    let base = unique_topic("wild");
    let channel = unique_name("kps.mqtt.wild");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "wild",
            channel.as_str(),
            json!({"url": url, "topic": format!("{base}/+/temp"), "qos": 1, "envelope": "json"}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("wild", State::Healthy, HEALTHY_WITHIN)
        .await;

    let kitchen = format!("{base}/kitchen/temp");
    let cellar = format!("{base}/cellar/temp");
    publish(
        SHARED_PORT,
        &kitchen,
        &[Bytes::from_static(b"21.5")],
        1,
        false,
    )
    .await;
    publish(
        SHARED_PORT,
        &format!("{base}/kitchen/humidity"),
        &[Bytes::from_static(b"40")],
        1,
        false,
    )
    .await;
    publish(
        SHARED_PORT,
        &cellar,
        &[Bytes::from_static(&[0xff, 0x00, 0x10])],
        0,
        false,
    )
    .await;
    publish(
        SHARED_PORT,
        &kitchen,
        &[Bytes::from_static(b"{\"c\":22}")],
        1,
        false,
    )
    .await;

    let got = arrivals.collect(3, ARRIVE_WITHIN).await;
    let got: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(r).expect("a json record"))
        .collect();
    assert_eq!(
        got,
        vec![
            json!({"topic": kitchen, "payload": "21.5", "payload_base64": false, "qos": 1, "retain": false}),
            json!({"topic": cellar, "payload": "/wAQ", "payload_base64": true, "qos": 0, "retain": false}),
            json!({"topic": kitchen, "payload": "{\"c\":22}", "payload_base64": false, "qos": 1, "retain": false}),
        ]
    );
    assert!(
        arrivals.drain(Duration::from_millis(300)).await.is_empty(),
        "the humidity topic does not match the filter"
    );
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["wild"]).await;
}

/// A `#` filter sees a retained message on subscribing, with its retain flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_level_wildcard_and_retained_messages() {
    let url = shared_broker().await;
    let base = unique_topic("hash");
    let retained = format!("{base}/a/b/c");
    publish(
        SHARED_PORT,
        &retained,
        &[Bytes::from_static(b"kept")],
        1,
        true,
    )
    .await;
    let channel = unique_name("kps.mqtt.hash");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "hash",
            channel.as_str(),
            json!({"url": url, "topic": format!("{base}/#"), "envelope": "json", "clean_session": true}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("hash", State::Healthy, HEALTHY_WITHIN)
        .await;
    publish(
        SHARED_PORT,
        &format!("{base}/x"),
        &[Bytes::from_static(b"live")],
        1,
        false,
    )
    .await;
    let got: Vec<Value> = arrivals
        .collect(2, ARRIVE_WITHIN)
        .await
        .iter()
        .map(|r| serde_json::from_slice(r).expect("a json record"))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["topic"], json!(retained));
    assert_eq!(got[0]["retain"], json!(true));
    assert_eq!(got[1]["payload"], json!("live"));
    assert_eq!(got[1]["retain"], json!(false));
    running.shutdown().await;
    // Clear the retained message.
    publish(SHARED_PORT, &retained, &[Bytes::new()], 1, true).await;
}

/// Two streams in one `$share` group split the messages: each arrives once, on one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_messages() {
    let url = shared_broker().await;
    let topic = unique_topic("share");
    let group = unique_name("g");
    let channel = unique_name("kps.mqtt.share");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    let filter = format!("$share/{group}/{topic}");
    running
        .apply(vec![
            StreamDecl::ingress(
                "share-a",
                channel.as_str(),
                json!({"url": url, "topic": filter}),
            ),
            StreamDecl::ingress(
                "share-b",
                channel.as_str(),
                json!({"url": url, "topic": filter}),
            ),
        ])
        .await
        .expect("streams accepted");
    running
        .wait_for_state("share-a", State::Healthy, HEALTHY_WITHIN)
        .await;
    running
        .wait_for_state("share-b", State::Healthy, HEALTHY_WITHIN)
        .await;
    let sent = records("sh", 0..200);
    publish(SHARED_PORT, &topic, &sent, 1, false).await;
    let got = arrivals.collect(sent.len(), ARRIVE_WITHIN).await;
    let distinct: HashSet<&Bytes> = got.iter().collect();
    assert_eq!(got.len(), sent.len(), "every message arrived once");
    assert_eq!(distinct.len(), sent.len());
    assert!(arrivals.drain(Duration::from_millis(300)).await.is_empty());
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["share-a", "share-b"]).await;
}

/// The connector stops, 100 qos-1 messages are published, the connector starts again with the
/// same id: the persistent session delivers all 100, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_delivers_what_was_published_while_stopped() {
    let url = shared_broker().await;
    let topic = unique_topic("session");
    let channel = unique_name("kps.mqtt.session");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "session",
            channel.as_str(),
            json!({"url": url, "topic": topic, "qos": 1}),
        )])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("session", State::Healthy, HEALTHY_WITHIN)
        .await;
    let before = records("before", 0..10);
    publish(SHARED_PORT, &topic, &before, 1, false).await;
    assert_eq!(arrivals.collect(before.len(), ARRIVE_WITHIN).await, before);

    running.stop().await;
    let while_stopped = records("stopped", 0..100);
    publish(SHARED_PORT, &topic, &while_stopped, 1, false).await;
    running.start_again().await;

    let got = arrivals.collect(while_stopped.len(), ARRIVE_WITHIN).await;
    assert_eq!(got.len(), 100, "all 100 arrive after the restart");
    assert!(got == while_stopped, "in order");
    assert!(
        arrivals.drain(Duration::from_millis(500)).await.is_empty(),
        "none twice"
    );
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["session"]).await;
}

/// Changing a persistent stream's filter drops the old subscription from the broker's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_filter_unsubscribes_the_old_one() {
    let url = shared_broker().await;
    let old = unique_topic("old");
    let new = unique_topic("new");
    let channel = unique_name("kps.mqtt.change");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    let decl = |topic: &str| {
        StreamDecl::ingress("chg", channel.as_str(), json!({"url": url, "topic": topic}))
    };
    running
        .apply(vec![decl(&old)])
        .await
        .expect("stream accepted");
    running
        .wait_for_state("chg", State::Healthy, HEALTHY_WITHIN)
        .await;
    let changed_at = std::time::SystemTime::now();
    running
        .apply(vec![decl(&new)])
        .await
        .expect("changed stream accepted");
    // The restarted stream reports healthy once the new subscription is in place.
    wait_for_state_since(
        &mut running,
        "chg",
        State::Healthy,
        changed_at,
        HEALTHY_WITHIN,
    )
    .await;
    publish(SHARED_PORT, &new, &[Bytes::from_static(b"new-1")], 1, false).await;
    assert_eq!(
        arrivals.collect(1, ARRIVE_WITHIN).await,
        vec![Bytes::from_static(b"new-1")]
    );
    publish(SHARED_PORT, &old, &[Bytes::from_static(b"old-1")], 1, false).await;
    publish(SHARED_PORT, &new, &[Bytes::from_static(b"new-2")], 1, false).await;
    assert_eq!(
        arrivals.collect(1, ARRIVE_WITHIN).await,
        vec![Bytes::from_static(b"new-2")],
        "the old filter no longer delivers"
    );
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["chg"]).await;
}

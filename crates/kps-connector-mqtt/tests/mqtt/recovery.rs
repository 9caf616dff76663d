//! Broker loss: a private mosquitto is stopped and started again; its streams go UNHEALTHY with
//! an alert and come back HEALTHY, records flow again, and a stream on another broker is not
//! touched. A cut connection (a fault proxy) loses nothing at qos 1.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kps_connector_core::State;
use kps_connector_core::testkit::{FaultProxy, NatsProbe, StreamDecl, unique_name};
use serde_json::json;

use crate::common::{
    PrivateBroker, SHARED_PORT, Subscriber, connector, forget_sessions, is_state, payloads,
    publish, records, shared_broker, status_of, unique_topic, wait_for_events,
    wait_for_state_since,
};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_recover_after_a_broker_restart() {
    let shared = shared_broker().await;
    let mut broker = PrivateBroker::start("").await;
    let topic_in = unique_topic("rin");
    let topic_out = unique_topic("rout");
    let topic_steady = unique_topic("steady");
    let (chan_in, chan_out, chan_steady) = (
        unique_name("kps.mqtt.rin"),
        unique_name("kps.mqtt.rout"),
        unique_name("kps.mqtt.steady"),
    );
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&chan_in).await;
    let mut steady_arrivals = probe.subscribe(&chan_steady).await;
    let mut running = connector().await;
    running
        .apply(vec![
            StreamDecl::ingress(
                "in",
                chan_in.as_str(),
                json!({"url": broker.url(), "topic": topic_in}),
            ),
            StreamDecl::egress(
                "out",
                chan_out.as_str(),
                json!({"url": broker.url(), "topic": topic_out}),
            ),
            StreamDecl::ingress(
                "steady",
                chan_steady.as_str(),
                json!({"url": shared, "topic": topic_steady}),
            ),
        ])
        .await
        .expect("streams accepted");
    for id in ["in", "out", "steady"] {
        running.wait_for_state(id, State::Healthy, WITHIN).await;
    }
    let mut subscriber = Subscriber::start(broker.port, &topic_out, 1).await;
    let first = records("first", 0..5);
    publish(broker.port, &topic_in, &first, 1, false).await;
    assert_eq!(arrivals.collect(5, WITHIN).await, first);
    probe.publish_records(&chan_out, &first, 5).await;
    assert_eq!(payloads(&subscriber.collect(5, WITHIN).await), first);

    // The broker goes away.
    broker.stop().await;
    let events = wait_for_events(
        &mut running,
        WITHIN,
        "both streams report the loss",
        |events| {
            is_state(events, "in", State::Unhealthy)
                && events.iter().any(|e| {
                    e.kind == "alert"
                        && e.id == "connection"
                        && e.stream_id == "in"
                        && e.state == State::Unhealthy
                })
                && events.iter().any(|e| {
                    e.kind == "alert"
                        && e.id == "connection"
                        && e.stream_id == "out"
                        && e.state == State::Unhealthy
                })
        },
    )
    .await;
    assert!(
        is_state(&events, "steady", State::Healthy),
        "other streams unaffected: {events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.stream_id == "steady" && e.kind == "alert"),
        "no alert on the other broker's stream: {events:#?}"
    );
    let alert = events
        .iter()
        .find(|e| e.id == "connection" && e.stream_id == "in")
        .expect("alert");
    assert!(
        alert.message.contains(&broker.url()),
        "the alert names the broker: {}",
        alert.message
    );
    // The other broker's stream still moves records.
    let steady = records("steady", 0..3);
    publish(SHARED_PORT, &topic_steady, &steady, 1, false).await;
    assert_eq!(steady_arrivals.collect(3, WITHIN).await, steady);

    // The broker comes back.
    let back = SystemTime::now();
    broker.start_again().await;
    wait_for_state_since(&mut running, "in", State::Healthy, back, WITHIN).await;
    let mut subscriber_after = Subscriber::start(broker.port, &topic_out, 1).await;
    let second = records("second", 0..5);
    publish(broker.port, &topic_in, &second, 1, false).await;
    // Records NATS had confirmed but whose PUBACK the broker had not read when it stopped come
    // again (at least once); the new ones follow, in order.
    let mut again = Vec::new();
    let deadline = std::time::Instant::now() + WITHIN;
    while again.iter().filter(|r| second.contains(r)).count() < second.len()
        && std::time::Instant::now() < deadline
    {
        again.extend(arrivals.collect(1, Duration::from_secs(5)).await);
    }
    let (new, repeated): (Vec<Bytes>, Vec<Bytes>) =
        again.into_iter().partition(|r| second.contains(r));
    assert_eq!(new, second, "ingress flows again");
    assert!(
        repeated.iter().all(|r| first.contains(r)),
        "only unacknowledged records come twice: {repeated:?}"
    );
    // The idle egress stream finds its connection broken at the next write and reconnects.
    probe.publish_records(&chan_out, &second, 5).await;
    assert_eq!(
        payloads(&subscriber_after.collect(5, WITHIN).await),
        second,
        "egress flows again"
    );
    let events = wait_for_events(&mut running, WITHIN, "both streams recovered", |events| {
        is_state(events, "in", State::Healthy)
            && is_state(events, "out", State::Healthy)
            && ["in", "out"].iter().all(|s| {
                events.iter().any(|e| {
                    e.kind == "alert"
                        && e.id == "connection"
                        && e.stream_id == *s
                        && e.state == State::Healthy
                })
            })
    })
    .await;
    assert!(status_of(&events, "steady").is_some_and(|e| e.state == State::Healthy));
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["steady"]).await;
    subscriber.stop().await;
    subscriber_after.stop().await;
}

/// The connection between the connector and the broker is cut while qos-1 records flow, then
/// restored: every record arrives (some maybe twice: at least once), the first copies in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_loses_nothing_at_qos1() {
    shared_broker().await;
    let proxy = FaultProxy::start(([127, 0, 0, 1], SHARED_PORT).into()).await;
    let topic = unique_topic("cut");
    let channel = unique_name("kps.mqtt.cut");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "cut",
            channel.as_str(),
            json!({"url": format!("mqtt://{}", proxy.addr()), "topic": topic, "qos": 1}),
        )])
        .await
        .expect("stream accepted");
    running.wait_for_state("cut", State::Healthy, WITHIN).await;
    let sent = records("cut", 0..600);
    publish(SHARED_PORT, &topic, &sent[..300], 1, false).await;
    proxy.cut();
    // Published while the connector is cut off: the persistent session keeps them.
    publish(SHARED_PORT, &topic, &sent[300..], 1, false).await;
    wait_for_events(&mut running, WITHIN, "the cut is reported", |events| {
        is_state(events, "cut", State::Unhealthy)
    })
    .await;
    let restored = SystemTime::now();
    proxy.restore();
    wait_for_state_since(&mut running, "cut", State::Healthy, restored, WITHIN).await;
    let mut got: Vec<Bytes> = Vec::new();
    let mut distinct = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while distinct.len() < sent.len() && std::time::Instant::now() < deadline {
        for record in arrivals.collect(1, Duration::from_secs(5)).await {
            if distinct.insert(record.clone()) {
                got.push(record);
            }
        }
    }
    assert_eq!(got.len(), sent.len(), "every record arrived");
    assert!(got == sent, "first copies in order");
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    forget_sessions(&id, &["cut"]).await;
}

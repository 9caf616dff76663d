//! The runtime and the transport against the real NATS server: ingress and egress records, in
//! order, batching, acknowledgements only after confirmation, undecodable input, sink failures,
//! isolation, NATS outages and JetStream durability.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hub, HubConnector, records};
use kps_connector_core::testkit::{
    FaultProxy, NatsProbe, StreamDecl, TestConnector, http_get, unique_name,
};
use kps_connector_core::{Bytes, State};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn started(hub: &Hub) -> TestConnector<HubConnector> {
    common::init_logs();
    TestConnector::start(HubConnector {
        hub: hub.clone(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn ingress_records_arrive_in_order_and_are_acked_only_once_published() {
    let hub = Hub::default();
    let mut connector = started(&hub).await;
    let (name, channel) = (unique_name("in"), unique_name("kps.rt.in"));
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    let sent = records("rec", 0..10_000);
    hub.endpoint(&name).push(sent.clone());
    let received = arrivals.collect(sent.len(), WAIT).await;
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "records arrive in order");
    assert_eq!(
        hub.endpoint(&name).wait_acked(sent.len(), WAIT).await,
        sent.len()
    );
    assert!(
        arrivals.messages() < sent.len(),
        "records already waiting travel together"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn one_record_per_message_gives_the_reference_behaviour() {
    let hub = Hub::default();
    let mut connector = TestConnector::start_with(
        HubConnector {
            hub: hub.clone(),
            ..Default::default()
        },
        |o| {
            o.max_batch_records = 1;
        },
    )
    .await;
    let (name, channel) = (unique_name("in"), unique_name("kps.rt.one"));
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    hub.endpoint(&name).push(records("one", 0..300));
    assert_eq!(arrivals.collect(300, WAIT).await, records("one", 0..300));
    assert_eq!(arrivals.messages(), 300);
    connector.shutdown().await;
}

#[tokio::test]
async fn egress_accepts_several_records_per_message_in_order() {
    let hub = Hub::default();
    let mut connector = started(&hub).await;
    let (name, channel) = (unique_name("out"), unique_name("kps.rt.out"));
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    connector.wait_for_state("out", State::Healthy, WAIT).await;
    let sent = records("e", 0..5_000);
    NatsProbe::connect()
        .await
        .publish_records(&channel, &sent, 7)
        .await;
    assert!(hub.endpoint(&name).wait_written(sent.len(), WAIT).await == sent);
    connector.shutdown().await;
}

#[tokio::test]
async fn an_undecodable_message_is_alerted_dead_lettered_and_skipped() {
    let hub = Hub::default();
    let mut connector = started(&hub).await;
    let (name, channel) = (unique_name("out"), unique_name("kps.rt.bad"));
    let dead = format!("{channel}.dead");
    connector
        .set_config(json!({"dead_letter_subject": "{stream}-placeholder"}))
        .await
        .unwrap();
    connector
        .set_config(json!({"dead_letter_subject": dead.clone()}))
        .await
        .unwrap();
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    connector.wait_for_state("out", State::Healthy, WAIT).await;
    let probe = NatsProbe::connect().await;
    let mut dead_letters = probe.subscribe(&dead).await;
    probe
        .publish_raw(&channel, Bytes::from_static(&[0x1a, 0xff, 0xff, 0x01]))
        .await;
    probe
        .publish_records(
            &channel,
            &[Bytes::from("after"), Bytes::from("reject-me")],
            2,
        )
        .await;
    assert_eq!(
        hub.endpoint(&name).wait_written(1, WAIT).await,
        vec![Bytes::from("after")]
    );
    // The sink recorded the write before the runtime saw its outcome: the events may follow.
    connector
        .wait_for_event("out", "undecodable-input", WAIT)
        .await;
    connector
        .wait_for_event("out", "record-rejected", WAIT)
        .await;
    // The raw message is dead-lettered as it came; the refused record as a TransportMessage.
    assert_eq!(
        dead_letters.collect(1, WAIT).await,
        vec![Bytes::from("reject-me")]
    );
    assert_eq!(dead_letters.undecodable(), 1);
    let metrics = connector.metrics_text().await;
    assert!(
        metrics.contains(
            r#"kps_stream_undecodable_messages_total{stream="out",direction="egress"} 1"#
        ),
        "{metrics}"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn a_failing_sink_is_retried_with_the_same_batch_and_recovers() {
    let hub = Hub::default();
    let mut connector = started(&hub).await;
    let (name, channel) = (unique_name("out"), unique_name("kps.rt.retry"));
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    connector.wait_for_state("out", State::Healthy, WAIT).await;
    hub.endpoint(&name).fail_writes.store(3, Ordering::SeqCst);
    let sent = records("s", 0..100);
    NatsProbe::connect()
        .await
        .publish_records(&channel, &sent, 10)
        .await;
    connector
        .wait_for_state("out", State::Unhealthy, WAIT)
        .await;
    assert!(
        hub.endpoint(&name).wait_written(100, WAIT).await == sent,
        "nothing lost, nothing doubled, in order"
    );
    connector.wait_for_state("out", State::Healthy, WAIT).await;
    connector.shutdown().await;
}

#[tokio::test]
async fn one_failing_stream_does_not_touch_another() {
    let hub = Hub::default();
    let mut connector = started(&hub).await;
    let (good, bad) = (unique_name("good"), unique_name("bad"));
    let channel = unique_name("kps.rt.iso");
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "bad",
                unique_name("kps.rt.bad"),
                json!({"name": bad, "fail_open": true}),
            ),
            StreamDecl::ingress("good", channel.as_str(), json!({"name": good})),
        ])
        .await
        .unwrap();
    hub.endpoint(&good).push(records("g", 0..500));
    assert_eq!(arrivals.collect(500, WAIT).await.len(), 500);
    connector
        .wait_for_state("bad", State::Unhealthy, WAIT)
        .await;
    connector.wait_for_state("good", State::Healthy, WAIT).await;
    connector.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_never_acknowledges_what_was_not_published() {
    let hub = Hub::default();
    let mut connector = started(&hub).await;
    let (name, channel) = (unique_name("in"), unique_name("kps.rt.drain"));
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    hub.endpoint(&name).push(records("d", 0..20_000));
    tokio::time::sleep(Duration::from_millis(5)).await;
    connector.shutdown().await;
    let acked = hub.endpoint(&name).acked.load(Ordering::SeqCst);
    let received = arrivals.drain(Duration::from_millis(500)).await;
    assert!(
        received.len() >= acked,
        "acked {acked} but only {} arrived",
        received.len()
    );
    assert_eq!(received[..acked], records("d", 0..acked)[..]);
}

#[tokio::test]
async fn the_grpc_server_serves_while_nats_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let hub = Hub::default();
    let mut connector = TestConnector::start_with(
        HubConnector {
            hub: hub.clone(),
            ..Default::default()
        },
        |o| {
            o.nats_url = format!("nats://{closed}");
        },
    )
    .await;
    let name = unique_name("in");
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            unique_name("kps.rt.nonats"),
            json!({"name": name}),
        )])
        .await
        .expect("streams are accepted while NATS is down");
    hub.endpoint(&name).push(records("n", 0..3));
    connector
        .wait_for_state("in", State::Unhealthy, Duration::from_secs(30))
        .await;
    assert_eq!(
        hub.endpoint(&name).acked.load(Ordering::SeqCst),
        0,
        "nothing acked without the transport"
    );
    assert_eq!(
        connector
            .streams()
            .await
            .iter()
            .filter(|s| s.subscribed)
            .count(),
        1
    );
    let (status, body) = http_get(connector.metrics_addr(), "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(http_get(connector.metrics_addr(), "/healthz").await.0, 200);
    connector.shutdown().await;
}

/// Pushes `before` records, cuts the connector's NATS connection, pushes the rest up to `total`:
/// the stream turns UNHEALTHY, then HEALTHY once NATS is back, and every acknowledged record
/// arrived.
async fn cut_and_recover(max_batch_records: u32, before: usize, total: usize) {
    let nats_addr: std::net::SocketAddr = "127.0.0.1:4222".parse().expect("an address");
    let proxy = FaultProxy::start(nats_addr).await;
    let hub = Hub::default();
    let mut connector = TestConnector::start_with(
        HubConnector {
            hub: hub.clone(),
            ..Default::default()
        },
        |o| {
            o.nats_url = format!("nats://{}", proxy.addr());
            o.max_batch_records = max_batch_records;
        },
    )
    .await;
    let (name, channel) = (unique_name("in"), unique_name("kps.rt.cut"));
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .expect("stream accepted");
    hub.endpoint(&name).push(records("c", 0..before));
    let mut received = arrivals.collect(before, WAIT).await;
    proxy.cut();
    hub.endpoint(&name).push(records("c", before..total));
    connector
        .wait_for_state("in", State::Unhealthy, Duration::from_secs(30))
        .await;
    proxy.restore();
    connector
        .wait_for_state("in", State::Healthy, Duration::from_secs(30))
        .await;
    assert_eq!(hub.endpoint(&name).wait_acked(total, WAIT).await, total);
    received.extend(arrivals.collect(total - before, WAIT).await);
    received.extend(arrivals.drain(Duration::from_millis(300)).await);
    let distinct: std::collections::HashSet<_> = received.iter().cloned().collect();
    for record in records("c", 0..total) {
        assert!(
            distinct.contains(&record),
            "{record:?} was acknowledged but never arrived"
        );
    }
    connector.shutdown().await;
}

#[tokio::test]
async fn a_cut_nats_connection_recovers_without_losing_acknowledged_records() {
    cut_and_recover(256, 100, 200).await;
}

#[tokio::test]
async fn a_cut_with_the_in_flight_window_full_is_reported_and_recovers() {
    // One record per message: the in-flight window between pump and acker fills during the cut,
    // and the failed confirmation must still end the attempt (no pump stuck on a full window).
    cut_and_recover(1, 50, 1_000).await;
}

#[tokio::test]
async fn jetstream_egress_survives_a_connector_restart_without_loss() {
    let hub = Hub::default();
    let mut connector = TestConnector::start_jetstream(HubConnector {
        hub: hub.clone(),
        ..Default::default()
    })
    .await;
    let (name, channel) = (unique_name("js"), unique_name("kps.js.out"));
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    connector.wait_for_state("out", State::Healthy, WAIT).await;
    let probe = NatsProbe::connect().await;
    probe
        .publish_records(&channel, &records("j", 0..100), 10)
        .await;
    assert_eq!(hub.endpoint(&name).wait_written(100, WAIT).await.len(), 100);
    connector.stop().await;
    // Published while the connector is down: JetStream keeps them for the durable consumer.
    probe
        .publish_records(&channel, &records("j", 100..200), 10)
        .await;
    connector.start_again().await;
    // Messages a stopped consumer had pulled come back after the consumer's ack wait (10 s).
    let written = hub
        .endpoint(&name)
        .wait_written(200, Duration::from_secs(45))
        .await;
    assert!(
        written == records("j", 0..200),
        "every record once, in order ({} written)",
        written.len()
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn jetstream_ingress_acks_after_the_stream_stored_the_records() {
    let hub = Hub::default();
    let mut connector = TestConnector::start_jetstream(HubConnector {
        hub: hub.clone(),
        ..Default::default()
    })
    .await;
    let (name, channel) = (unique_name("js"), unique_name("kps.js.in"));
    let mut arrivals = NatsProbe::connect().await.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    hub.endpoint(&name).push(records("k", 0..1_000));
    assert!(arrivals.collect(1_000, WAIT).await == records("k", 0..1_000));
    assert_eq!(hub.endpoint(&name).wait_acked(1_000, WAIT).await, 1_000);
    connector.shutdown().await;
}

/// A core NATS transport on the test server, connected.
async fn connected_nats(name: &str) -> kps_connector_core::transport::nats::NatsTransport {
    use kps_connector_core::events::EventRegistry;
    use kps_connector_core::transport::nats::{NatsOptions, NatsTransport};
    let options = NatsOptions {
        url: kps_connector_core::testkit::nats_url(),
        name: name.into(),
        confirm_timeout: Duration::from_secs(5),
        tls: None,
        credentials: None,
    };
    let nats = NatsTransport::connect(&options, EventRegistry::new())
        .await
        .expect("connect to the test NATS server");
    assert!(nats.wait_connected(Duration::from_secs(5)).await);
    nats
}

#[tokio::test]
async fn jetstream_state_survives_a_new_backend() {
    use kps_connector_core::state::StateStore;
    use kps_connector_core::transport::jetstream::{JetStreamTransport, LazyStateBackend};
    let nats = connected_nats("state-test").await;
    let bucket = unique_name("kps-state-test");
    let js = std::sync::Arc::new(JetStreamTransport::new(
        nats.clone(),
        Duration::from_secs(5),
    ));
    let store = StateStore::new(
        std::sync::Arc::new(LazyStateBackend::new(js.clone(), bucket.clone())),
        "s/1",
    );
    assert_eq!(store.load("cursor").await.unwrap(), None);
    store.save("cursor", "41").await.unwrap();
    store.save("cursor", "42").await.unwrap();
    let again = StateStore::new(
        std::sync::Arc::new(LazyStateBackend::new(js, bucket)),
        "s/1",
    );
    assert_eq!(
        again.load("cursor").await.unwrap().as_deref(),
        Some(&b"42"[..])
    );
}

#[tokio::test]
async fn one_round_trip_confirms_every_batch_published_before_it() {
    use kps_connector_core::transport::{Transport, wire};
    let nats = connected_nats("confirm-test").await;
    let probe = kps_connector_core::testkit::NatsProbe::connect().await;
    let subject = unique_name("kps.confirm");
    let mut arrivals = probe.subscribe(&subject).await;
    let before = nats.round_trips();

    // Four batches in flight, confirmed in order: the first one's round trip is queued with
    // it (none was outstanding); the other three are published while it is outstanding, and
    // the round trip the second confirmation issues after it covers the last two as well.
    let mut confirmations = Vec::new();
    for batch in 0..4u8 {
        let record = |n: u8| wire::encode(0, &[Bytes::from(vec![n; 8])]);
        let messages = vec![record(batch), record(batch)];
        confirmations.push(nats.publish(&subject, messages).await.unwrap());
    }
    for confirmation in confirmations {
        confirmation.await.unwrap();
    }
    assert_eq!(nats.round_trips() - before, 2);
    assert_eq!(
        arrivals.collect(8, Duration::from_secs(5)).await.len(),
        8,
        "every message of the confirmed batches reached the server"
    );

    // A batch published after the last round trip was issued gets a round trip of its own.
    let late = nats
        .publish(
            &subject,
            vec![wire::encode(0, &[Bytes::from_static(b"late")])],
        )
        .await
        .unwrap();
    late.await.unwrap();
    assert_eq!(nats.round_trips() - before, 3);
}

#[tokio::test]
async fn a_batch_published_with_no_round_trip_outstanding_queues_its_round_trip_with_it() {
    use kps_connector_core::transport::{Transport, wire};
    let nats = connected_nats("confirm-now-test").await;
    let subject = unique_name("kps.confirm.now");
    let before = nats.round_trips();
    let confirmation = nats
        .publish(
            &subject,
            vec![wire::encode(0, &[Bytes::from_static(b"now")])],
        )
        .await
        .unwrap();
    // Issued by the publish itself, before anything awaits the confirmation.
    assert_eq!(nats.round_trips() - before, 1);
    tokio::time::timeout(Duration::from_secs(5), confirmation)
        .await
        .expect("the confirmation resolves")
        .unwrap();
    assert_eq!(nats.round_trips() - before, 1, "no second round trip");
}

#[tokio::test]
async fn try_next_takes_everything_already_waiting() {
    use kps_connector_core::transport::{Transport, wire};
    let nats = connected_nats("try-next-test").await;
    let subject = unique_name("kps.trynext");
    let mut subscription = nats.subscribe(&subject, "g", "d").await.unwrap();
    let messages: Vec<Bytes> = (0..600u32)
        .map(|i| wire::encode(0, &[Bytes::from(i.to_be_bytes().to_vec())]))
        .collect();
    nats.publish(&subject, messages)
        .await
        .unwrap()
        .await
        .unwrap();
    // The first delivery arrives, then everything else is taken without waiting: the task's
    // cooperative budget (128 polls) must not cut the batch short.
    let first = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .unwrap();
    assert!(first.is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut taken = 1;
    while let Some(delivery) = subscription.try_next() {
        delivery.unwrap();
        taken += 1;
    }
    assert_eq!(taken, 600);
}

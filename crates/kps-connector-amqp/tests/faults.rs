//! Faults against the real RabbitMQ: a cut connection recovers (UNHEALTHY, then HEALTHY, other
//! streams untouched); the built binary killed with SIGKILL mid-stream loses nothing.

mod common;

use std::time::Duration;

use common::{AMQP_ADDR, Rabbit, amqp_url, assert_all_in_order, has_status, records};
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::testkit::{
    ConnectorProcess, DeliveryReport, FaultProxy, NatsProbe, StreamDecl, TestConnector,
    collect_until_complete, unique_name,
};
use kps_connector_core::{Bytes, State};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_recovers_and_other_streams_are_unaffected() {
    let rabbit = Rabbit::connect().await;
    let proxy = FaultProxy::start(AMQP_ADDR.parse().expect("address")).await;
    let proxied_url = format!("amqp://{}/%2f", proxy.addr());
    let queue_in = unique_name("kps_amqp_cut_in");
    let queue_out = unique_name("kps_amqp_cut_out");
    let queue_other = unique_name("kps_amqp_cut_other");
    for queue in [&queue_in, &queue_out, &queue_other] {
        rabbit.queue(queue, &[]).await;
    }
    let mut written = rabbit.consumer(&queue_out).await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    let base = unique_name("kps.amqp.cut");
    let (ch_in, ch_out, ch_other) = (
        format!("{base}.in"),
        format!("{base}.out"),
        format!("{base}.other"),
    );
    let probe = NatsProbe::connect().await;
    let mut read = probe.subscribe(&ch_in).await;
    let mut read_other = probe.subscribe(&ch_other).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "cut-in",
                ch_in.as_str(),
                json!({"url": proxied_url, "queue": queue_in}),
            ),
            StreamDecl::egress(
                "cut-out",
                ch_out.as_str(),
                json!({"url": proxied_url, "exchange": "", "routing_key": queue_out}),
            ),
            StreamDecl::ingress(
                "other",
                ch_other.as_str(),
                json!({"url": amqp_url(), "queue": queue_other}),
            ),
        ])
        .await
        .expect("streams accepted");
    for id in ["cut-in", "cut-out", "other"] {
        connector.wait_for_state(id, State::Healthy, TIMEOUT).await;
    }

    // Before the cut.
    let in_sent = records(0..300);
    let out_sent = records(1000..1300);
    rabbit.publish(&queue_in, &in_sent[..100]).await;
    probe.publish_records(&ch_out, &out_sent[..100], 10).await;
    let mut in_received = read.collect(100, TIMEOUT).await;
    let mut out_received = written.collect(100, TIMEOUT).await;

    // During the cut: both proxied streams turn UNHEALTHY; the other one keeps moving records.
    proxy.cut();
    connector
        .wait_for_state("cut-in", State::Unhealthy, TIMEOUT)
        .await;
    rabbit.publish(&queue_in, &in_sent[100..200]).await;
    probe
        .publish_records(&ch_out, &out_sent[100..200], 10)
        .await;
    connector
        .wait_for_state("cut-out", State::Unhealthy, TIMEOUT)
        .await;
    let other_sent = records(5000..5100);
    rabbit.publish(&queue_other, &other_sent).await;
    assert_eq!(read_other.collect(100, TIMEOUT).await, other_sent);
    let events = connector.events().await;
    assert!(has_status(&events, "other", State::Healthy), "{events:#?}");
    for id in ["cut-in", "cut-out"] {
        assert!(
            events
                .iter()
                .any(|e| e.kind == "alert" && e.stream_id == id && e.state == State::Unhealthy),
            "an alert for {id}: {events:#?}"
        );
    }

    // After the cut: both recover; nothing was lost (in-flight deliveries may come twice).
    proxy.restore();
    connector
        .wait_for_state("cut-in", State::Healthy, TIMEOUT)
        .await;
    connector
        .wait_for_state("cut-out", State::Healthy, TIMEOUT)
        .await;
    rabbit.publish(&queue_in, &in_sent[200..]).await;
    probe.publish_records(&ch_out, &out_sent[200..], 10).await;
    in_received.extend(
        collect_until_complete(&in_sent, &in_received, TIMEOUT, async || {
            read.collect(300, Duration::from_millis(500)).await
        })
        .await,
    );
    // Batches unconfirmed at the cut are written again: collect until every record is in.
    out_received.extend(
        collect_until_complete(&out_sent, &out_received, TIMEOUT, async || {
            written.collect(300, Duration::from_millis(500)).await
        })
        .await,
    );
    let in_duplicates = assert_all_in_order(&in_sent, &in_received);
    let out_duplicates = assert_all_in_order(&out_sent, &out_received);
    eprintln!("after the cut: {in_duplicates} ingress and {out_duplicates} egress duplicate(s)");

    connector.shutdown().await;
    for queue in [&queue_in, &queue_out, &queue_other] {
        rabbit.delete(queue).await;
    }
}

/// The built connector binary as the platform runs it, with `connector_id`'s state in `state`.
fn process(connector_id: &str, state: &std::path::Path, jetstream: bool) -> ConnectorProcess {
    let builder = ConnectorProcess::builder(env!("CARGO_BIN_EXE_kps-connector-amqp"), connector_id)
        .state_dir(state);
    if jetstream {
        builder.jetstream()
    } else {
        builder
    }
    .start()
}

/// Publishes `records` to `queue` in chunks, pacing itself so a kill lands mid-stream.
fn paced_producer(queue: String, records: Vec<Bytes>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let rabbit = Rabbit::connect().await;
        for chunk in records.chunks(500) {
            rabbit.publish(&queue, chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// After a crash nothing may be lost; what arrived before the kill came in order.
fn assert_none_lost(sent: &[Bytes], before_kill: usize, received: &[Bytes]) -> DeliveryReport {
    assert_eq!(
        &received[..before_kill],
        &sent[..before_kill],
        "in order before the kill"
    );
    let report = DeliveryReport::compare(sent, received);
    report.assert_none_lost();
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_killed_mid_stream_loses_nothing() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_kill_in");
    rabbit.queue(&queue, &[]).await;
    let channel = unique_name("kps.amqp.kill.in");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let state = tempfile::tempdir().expect("a state directory");
    let id = unique_name("amqp-kill");
    let streams = [StreamDecl::ingress(
        "kill-in",
        channel.as_str(),
        json!({"url": amqp_url(), "queue": queue}),
    )];

    let sent = records(0..20_000);
    let producer = paced_producer(queue.clone(), sent.clone());
    let mut first = process(&id, state.path(), false);
    first.apply(&streams).await;
    let mut received = arrivals.collect(3_000, TIMEOUT).await;
    assert_eq!(received.len(), 3_000);
    first.kill().await;

    let mut second = process(&id, state.path(), false);
    second.apply(&streams).await;
    producer.await.expect("producer");
    let more = collect_until_complete(&sent, &received, TIMEOUT, async || {
        arrivals.collect(1_000, Duration::from_millis(500)).await
    })
    .await;
    received.extend(more);
    received.extend(arrivals.drain(Duration::from_millis(500)).await);
    let report = assert_none_lost(&sent, 3_000, &received);
    eprintln!("ingress SIGKILL: {report}");
    second.terminate().await;
    assert_eq!(
        rabbit.ready(&queue).await,
        0,
        "every delivery was acknowledged"
    );
    rabbit.delete(&queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_killed_mid_stream_loses_nothing_with_jetstream() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_kill_out");
    rabbit.queue(&queue, &[]).await;
    let mut written = rabbit.consumer(&queue).await;
    let channel = unique_name("kps.amqp.kill.out");
    let state = tempfile::tempdir().expect("a state directory");
    let id = unique_name("amqp-kill");
    let streams = [StreamDecl::egress(
        "kill-out",
        channel.as_str(),
        json!({"url": amqp_url(), "exchange": "", "routing_key": queue}),
    )];

    let mut first = process(&id, state.path(), true);
    first.apply(&streams).await;
    let sent = records(0..20_000);
    let producer = {
        let channel = channel.clone();
        let sent = sent.clone();
        tokio::spawn(async move {
            let probe = NatsProbe::connect().await;
            for chunk in sent.chunks(500) {
                probe.publish_records(&channel, chunk, 50).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut received = written.collect(3_000, TIMEOUT).await;
    assert_eq!(received.len(), 3_000);
    first.kill().await;

    let mut second = process(&id, state.path(), true);
    second.apply(&streams).await;
    producer.await.expect("producer");
    // Messages the killed process held unacknowledged come back after JetStream's ack wait.
    let more = collect_until_complete(&sent, &received, Duration::from_secs(90), async || {
        written.collect(1_000, Duration::from_millis(500)).await
    })
    .await;
    received.extend(more);
    let report = assert_none_lost(&sent, 3_000, &received);
    eprintln!("egress SIGKILL (jetstream): {report}");
    second.terminate().await;
    rabbit.delete(&queue).await;
    NatsProbe::connect()
        .await
        .delete_jetstream_stream(&format!("KPS_{}", channel.replace('.', "_")))
        .await;
}

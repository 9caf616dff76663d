//! Faults against the real RabbitMQ: a cut connection recovers (UNHEALTHY, then HEALTHY, other
//! streams untouched); the built binary killed with SIGKILL mid-stream loses nothing.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{AMQP_ADDR, Rabbit, amqp_url, assert_all_in_order, has_status, records};
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::proto;
use kps_connector_core::testkit::{
    self, FaultProxy, NatsProbe, StreamDecl, TestConnector, unique_name,
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
    in_received.extend(collect_distinct(&mut read, &in_received, 300).await);
    out_received.extend(written.collect(200, TIMEOUT).await);
    let in_duplicates = assert_all_in_order(&in_sent, &in_received);
    let out_duplicates = assert_all_in_order(&out_sent, &out_received);
    eprintln!("after the cut: {in_duplicates} ingress and {out_duplicates} egress duplicate(s)");

    connector.shutdown().await;
    for queue in [&queue_in, &queue_out, &queue_other] {
        rabbit.delete(queue).await;
    }
}

/// Collects from `stream` until `target` distinct records were seen (counting `already`).
async fn collect_distinct(
    stream: &mut testkit::RecordStream,
    already: &[Bytes],
    target: usize,
) -> Vec<Bytes> {
    let mut seen: std::collections::HashSet<Bytes> = already.iter().cloned().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while seen.len() < target && Instant::now() < deadline {
        for record in stream.collect(1, Duration::from_millis(500)).await {
            seen.insert(record.clone());
            out.push(record);
        }
    }
    out
}

/// The built `kps-connector-amqp` binary, run as the platform runs it.
struct Process {
    child: Child,
    endpoint: String,
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

impl Process {
    fn start(connector_id: &str, state_dir: &std::path::Path, extra: &[&str]) -> Self {
        let listen = free_port();
        let metrics = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_kps-connector-amqp"))
            .args(["--connector-id", connector_id])
            .args(["--listen", &listen.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--nats-url", &testkit::nats_url()])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the connector binary starts");
        Self {
            child,
            endpoint: format!("http://{listen}"),
        }
    }

    async fn apply(&self, connector_id: &str, streams: &[StreamDecl]) {
        let mut client = testkit::grpc_client(&self.endpoint)
            .await
            .expect("gRPC answers");
        client
            .set_payload(proto::SetPayloadRequest {
                connector_id: connector_id.to_owned(),
                payloads: streams.iter().map(StreamDecl::to_payload).collect(),
            })
            .await
            .expect("streams accepted");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let events = client
                .get_events(proto::GetEventsRequest {
                    connector_id: connector_id.to_owned(),
                })
                .await
                .expect("GetEvents")
                .into_inner();
            let healthy = events.event_payloads.iter().any(|p| {
                matches!(&p.object, Some(proto::event_payload::Object::Status(s))
                    if s.state == proto::State::Healthy as i32)
            });
            if healthy {
                return;
            }
            assert!(Instant::now() < deadline, "the stream never became healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no draining, no clean close.
    async fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.wait().await;
    }

    /// SIGTERM: drains and exits.
    async fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.wait().await;
    }

    async fn wait(&mut self) {
        let deadline = Instant::now() + TIMEOUT;
        while self.child.try_wait().expect("child status").is_none() {
            assert!(Instant::now() < deadline, "the connector did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_killed_mid_stream_loses_nothing() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_kill_in");
    rabbit.queue(&queue, &[]).await;
    let channel = unique_name("kps.amqp.kill.in");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    let state = tempfile_dir();
    let id = unique_name("amqp-kill");
    let streams = [StreamDecl::ingress(
        "kill-in",
        channel.as_str(),
        json!({"url": amqp_url(), "queue": queue}),
    )];

    let sent = records(0..20_000);
    let producer = paced_producer(queue.clone(), sent.clone());
    let first = Process::start(&id, state.path(), &[]);
    first.apply(&id, &streams).await;
    let mut received = arrivals.collect(3_000, TIMEOUT).await;
    assert_eq!(received.len(), 3_000);
    first.kill().await;

    let second = Process::start(&id, state.path(), &[]);
    second.apply(&id, &streams).await;
    producer.await.expect("producer");
    let more = collect_distinct(&mut arrivals, &received, sent.len()).await;
    received.extend(more);
    received.extend(arrivals.drain(Duration::from_millis(500)).await);
    let (duplicates, late) = assert_none_lost(&sent, 3_000, &received);
    eprintln!(
        "ingress SIGKILL: {} records sent, {} received, {duplicates} duplicate(s), {late} redelivered after later records, none lost",
        sent.len(),
        received.len()
    );
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
    let state = tempfile_dir();
    let id = unique_name("amqp-kill");
    let streams = [StreamDecl::egress(
        "kill-out",
        channel.as_str(),
        json!({"url": amqp_url(), "exchange": "", "routing_key": queue}),
    )];
    let jetstream = ["--transport", "jetstream"];

    let first = Process::start(&id, state.path(), &jetstream);
    first.apply(&id, &streams).await;
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

    let second = Process::start(&id, state.path(), &jetstream);
    second.apply(&id, &streams).await;
    producer.await.expect("producer");
    // Messages the killed process held unacknowledged come back after JetStream's ack wait (30 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen: std::collections::HashSet<Bytes> = received.iter().cloned().collect();
    while seen.len() < sent.len() && Instant::now() < deadline {
        for record in written.collect(1_000, Duration::from_millis(500)).await {
            seen.insert(record.clone());
            received.push(record);
        }
    }
    let (duplicates, late) = assert_none_lost(&sent, 3_000, &received);
    eprintln!(
        "egress SIGKILL (jetstream): {} records sent, {} written, {duplicates} duplicate(s), {late} redelivered after later records, none lost",
        sent.len(),
        received.len()
    );
    second.terminate().await;
    rabbit.delete(&queue).await;
    delete_jetstream_stream(&format!("KPS_{}", channel.replace('.', "_"))).await;
}

/// After a crash, nothing may be lost; redelivered records may come twice and, with JetStream,
/// after later ones (a message the killed process held comes back only after the ack wait).
/// Checks that none is lost and that what arrived before the kill came in order; returns the
/// duplicates and the first arrivals that came after a later record.
fn assert_none_lost(sent: &[Bytes], before_kill: usize, received: &[Bytes]) -> (usize, usize) {
    assert_eq!(
        &received[..before_kill],
        &sent[..before_kill],
        "in order before the kill"
    );
    let mut seen = std::collections::HashSet::new();
    let firsts: Vec<&Bytes> = received.iter().filter(|r| seen.insert(*r)).collect();
    let lost = sent.iter().filter(|r| !seen.contains(r)).count();
    assert_eq!(lost, 0, "{lost} of {} records lost", sent.len());
    let position: std::collections::HashMap<&Bytes, usize> =
        sent.iter().enumerate().map(|(i, r)| (r, i)).collect();
    let mut late = 0;
    let mut highest = 0;
    for record in &firsts {
        let p = position[record];
        if p < highest {
            late += 1;
        }
        highest = highest.max(p);
    }
    (received.len() - firsts.len(), late)
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a state directory")
}

/// Deletes a JetStream stream the test made the connector create (raw NATS protocol, so this
/// crate needs no NATS client).
async fn delete_jetstream_stream(name: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = testkit::nats_url().trim_start_matches("nats://").to_owned();
    let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await else {
        return;
    };
    let request = format!(
        "CONNECT {{\"verbose\":false}}\r\nPUB $JS.API.STREAM.DELETE.{name} 0\r\n\r\nPING\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = String::new();
    while !seen.contains("PONG") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            _ => break,
        }
    }
}

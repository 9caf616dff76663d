//! Throughput of AMQP -> NATS (ingress) and NATS -> AMQP (egress) through the connector, beside
//! a raw lapin consumer and publisher in the same run, against the RabbitMQ and NATS on loopback;
//! then the connector binary's CPU per million records, its idle RSS, and ingress latency at
//! 1,000 records/s.
//!
//! `cargo bench -p kps-connector-amqp` (needs `cargo xtask services up`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Rabbit, amqp_url};
use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::testkit::{
    self, NatsProbe, RecordStream, StreamDecl, TestConnector, unique_name,
};
use kps_connector_core::{Bytes, proto};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use tokio::runtime::Runtime;

/// Records per measured iteration.
const N: usize = 20_000;
/// Bytes per record.
const RECORD_BYTES: usize = 100;
/// Records for the CPU measurement of the binary.
const CPU_RECORDS: usize = 200_000;
const TIMEOUT: Duration = Duration::from_secs(120);

fn record(i: usize) -> Bytes {
    let mut text = format!("kps-record-{i:010}-");
    text.extend(std::iter::repeat_n('x', RECORD_BYTES - text.len()));
    Bytes::from(text)
}

fn records(n: usize) -> Vec<Bytes> {
    (0..n).map(record).collect()
}

struct Bench {
    rabbit: Rabbit,
    probe: NatsProbe,
    records: Vec<Bytes>,
}

async fn purge(rabbit: &Rabbit, queue: &str) {
    rabbit
        .channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .expect("queue.purge");
}

/// Waits until `queue` holds `n` ready messages.
async fn wait_depth(rabbit: &Rabbit, queue: &str, n: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while rabbit.ready(queue).await < n {
        assert!(
            Instant::now() < deadline,
            "the queue never reached {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The raw baseline of ingress: a lapin consumer (prefetch 256, `basic.ack multiple` every 64)
/// on a fresh connection reading the N messages.
async fn raw_consume(queue: &str, n: usize) {
    let connection = Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(256, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut got = 0;
    while got < n {
        let delivery = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("no error");
        got += 1;
        let body = Bytes::from(delivery.data);
        std::hint::black_box(body);
        if got % 64 == 0 || got == n {
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .expect("ack");
        }
    }
    connection.close(200, "OK".into()).await.expect("close");
}

/// The raw baseline of egress: a lapin publisher with confirms, publishing the N records
/// (each send awaited) and then waiting for every confirm.
async fn raw_publish(rabbit: &Rabbit, queue: &str, records: &[Bytes]) {
    for record in records {
        let confirm = rabbit
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                record,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish");
        drop(confirm);
    }
    let returned = rabbit.channel.wait_for_confirms().await.expect("confirms");
    assert!(returned.is_empty());
}

fn ingress(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let queue = unique_name("kps_amqp_bench_in");
    let channel = unique_name("kps.amqp.bench.in");
    let (mut connector, mut arrivals) = rt.block_on(async {
        bench.rabbit.queue(&queue, &[]).await;
        let connector = TestConnector::start(AmqpConnector).await;
        let arrivals = bench.probe.subscribe(&channel).await;
        (connector, arrivals)
    });
    let stream = StreamDecl::ingress(
        "bench-in",
        channel.as_str(),
        json!({"url": amqp_url(), "queue": queue}),
    );

    let mut group = c.benchmark_group("amqp_to_nats");
    group
        .throughput(Throughput::Elements(N as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("raw_lapin_consumer", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    bench.rabbit.publish(&queue, &bench.records).await;
                    let start = Instant::now();
                    raw_consume(&queue, N).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.bench_function("connector", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    bench.rabbit.publish(&queue, &bench.records).await;
                    let start = Instant::now();
                    connector
                        .apply(vec![stream.clone()])
                        .await
                        .expect("stream starts");
                    let got = arrivals.collect(N, TIMEOUT).await;
                    total += start.elapsed();
                    assert_eq!(got.len(), N);
                    connector.apply(Vec::new()).await.expect("stream stops");
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(async {
        connector.shutdown().await;
        bench.rabbit.delete(&queue).await;
    });
}

fn egress(c: &mut Criterion, rt: &Runtime, bench: &Bench) {
    let queue = unique_name("kps_amqp_bench_out");
    let channel = unique_name("kps.amqp.bench.out");
    let connector = rt.block_on(async {
        bench.rabbit.queue(&queue, &[]).await;
        let mut connector = TestConnector::start(AmqpConnector).await;
        connector
            .apply(vec![StreamDecl::egress(
                "bench-out",
                channel.as_str(),
                json!({"url": amqp_url(), "exchange": "", "routing_key": queue}),
            )])
            .await
            .expect("stream starts");
        connector
            .wait_for_state("bench-out", kps_connector_core::State::Healthy, TIMEOUT)
            .await;
        connector
    });

    let mut group = c.benchmark_group("nats_to_amqp");
    group
        .throughput(Throughput::Elements(N as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.bench_function("raw_lapin_publisher", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    purge(&bench.rabbit, &queue).await;
                    let start = Instant::now();
                    raw_publish(&bench.rabbit, &queue, &bench.records).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.bench_function("connector", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    purge(&bench.rabbit, &queue).await;
                    let start = Instant::now();
                    // One record per TransportMessage, as the reference publishes.
                    bench
                        .probe
                        .publish_records(&channel, &bench.records, 1)
                        .await;
                    wait_depth(&bench.rabbit, &queue, N as u32).await;
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(async {
        connector.shutdown().await;
        bench.rabbit.delete(&queue).await;
    });
}

/// The connector binary as a child process, for CPU and memory figures of its own.
struct Binary {
    child: Child,
    endpoint: String,
    id: String,
    _state: tempfile::TempDir,
}

impl Binary {
    fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
        };
        let (listen, metrics) = (free(), free());
        let state = tempfile::tempdir().expect("state dir");
        let id = unique_name("amqp-bench");
        let child = Command::new(env!("CARGO_BIN_EXE_kps-connector-amqp"))
            .args(["--connector-id", &id])
            .args(["--listen", &listen.to_string()])
            .args(["--metrics-listen", &metrics.to_string()])
            .args(["--nats-url", &testkit::nats_url()])
            .arg("--state-dir")
            .arg(state.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the connector binary starts");
        Self {
            child,
            endpoint: format!("http://{listen}"),
            id,
            _state: state,
        }
    }

    /// user + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).expect("/proc stat");
        let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let ticks: f64 =
            fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
        ticks / 100.0
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc status");
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb / 1024.0
    }

    async fn apply(&self, streams: &[StreamDecl]) {
        let mut client = testkit::grpc_client(&self.endpoint).await.expect("gRPC");
        client
            .set_payload(proto::SetPayloadRequest {
                connector_id: self.id.clone(),
                payloads: streams.iter().map(StreamDecl::to_payload).collect(),
            })
            .await
            .expect("streams accepted");
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Records of the latency runs.
const LATENCY_RECORDS: usize = 5_000;

fn now_nanos() -> i64 {
    kps_connector_core::transport::wire::now_nanos()
}

fn latency_ms(record: &[u8], now: i64) -> Option<f64> {
    let sent: i64 = std::str::from_utf8(record).ok()?.parse().ok()?;
    Some((now - sent) as f64 / 1e6)
}

/// (p50, p99, samples).
fn percentiles(mut latencies: Vec<f64>) -> (f64, f64, usize) {
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))]
    };
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN, 0);
    }
    (pct(0.50), pct(0.99), latencies.len())
}

/// Publishes one record a millisecond (transient, no confirms awaited), each its send time.
fn paced_sender(queue: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let connection = common::rabbit().await;
        let channel = connection.create_channel().await.expect("channel");
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for _ in 0..LATENCY_RECORDS {
            tick.tick().await;
            let body = now_nanos().to_string();
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .expect("publish");
            drop(confirm);
        }
    })
}

/// The same load read by a raw lapin consumer (prefetch 256, one ack per delivery).
async fn raw_latency(queue: &str) -> (f64, f64, usize) {
    let connection = common::rabbit().await;
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(256, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw-latency".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let sender = paced_sender(queue.to_owned());
    let mut latencies = Vec::with_capacity(LATENCY_RECORDS);
    while latencies.len() < LATENCY_RECORDS {
        let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(10), consumer.next()).await
        else {
            break;
        };
        let now = now_nanos();
        latencies.extend(latency_ms(&delivery.data, now));
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    sender.await.expect("sender");
    percentiles(latencies)
}

/// user + system CPU seconds of this (the bench) process so far.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc stat");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    (fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime")) / 100.0
}

async fn collect_all(arrivals: &mut RecordStream, n: usize) -> usize {
    arrivals.collect(n, TIMEOUT).await.len()
}

/// CPU per million records in the binary, both directions; idle RSS; ingress p99 latency.
async fn process_figures(bench: &Bench) {
    let binary = Binary::start();
    eprintln!("connector process: pid {}", binary.child.id());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = binary.rss_mb();

    // Ingress: CPU_RECORDS already waiting in the queue.
    let queue_in = unique_name("kps_amqp_cpu_in");
    let queue_out = unique_name("kps_amqp_cpu_out");
    bench.rabbit.queue(&queue_in, &[]).await;
    bench.rabbit.queue(&queue_out, &[]).await;
    let many = records(CPU_RECORDS);
    bench.rabbit.publish(&queue_in, &many).await;
    let ch_in = unique_name("kps.amqp.cpu.in");
    let ch_out = unique_name("kps.amqp.cpu.out");
    let mut arrivals = bench.probe.subscribe(&ch_in).await;
    let ingress = StreamDecl::ingress(
        "cpu-in",
        ch_in.as_str(),
        json!({"url": amqp_url(), "queue": queue_in}),
    );
    let egress = StreamDecl::egress(
        "cpu-out",
        ch_out.as_str(),
        json!({"url": amqp_url(), "exchange": "", "routing_key": queue_out}),
    );
    let cpu0 = binary.cpu_seconds();
    let start = Instant::now();
    binary.apply(std::slice::from_ref(&ingress)).await;
    let got = collect_all(&mut arrivals, CPU_RECORDS).await;
    let ingress_secs = start.elapsed().as_secs_f64();
    let ingress_cpu = binary.cpu_seconds() - cpu0;
    assert_eq!(got, CPU_RECORDS);

    // Egress: CPU_RECORDS published on NATS, one per TransportMessage, 10,000 at a time (core
    // NATS drops what a subscriber leaves pending beyond its 65,536-message buffer).
    binary.apply(&[ingress.clone(), egress.clone()]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu1 = binary.cpu_seconds();
    let start = Instant::now();
    for (i, chunk) in many.chunks(10_000).enumerate() {
        bench.probe.publish_records(&ch_out, chunk, 1).await;
        wait_depth(&bench.rabbit, &queue_out, ((i + 1) * 10_000) as u32).await;
    }
    let egress_secs = start.elapsed().as_secs_f64();
    let egress_cpu = binary.cpu_seconds() - cpu1;
    let busy_rss = binary.rss_mb();

    // Latency: 1,000 records/s for 5 s, each carrying its send time.
    let sender = paced_sender(queue_in.clone());
    let mut latencies = Vec::with_capacity(LATENCY_RECORDS);
    while latencies.len() < LATENCY_RECORDS {
        let got = arrivals.collect(1, Duration::from_secs(10)).await;
        if got.is_empty() {
            break;
        }
        let now = now_nanos();
        latencies.extend(got.iter().filter_map(|r| latency_ms(r, now)));
    }
    sender.await.expect("sender");
    let connector_latency = percentiles(latencies);

    // The raw lapin baselines' CPU, measured in this process (idle otherwise), on a queue of
    // their own.
    drop(binary);
    let raw_queue = unique_name("kps_amqp_cpu_raw");
    bench.rabbit.queue(&raw_queue, &[]).await;
    bench.rabbit.publish(&raw_queue, &many).await;
    let cpu2 = own_cpu_seconds();
    raw_consume(&raw_queue, CPU_RECORDS).await;
    let raw_consumer_cpu = own_cpu_seconds() - cpu2;
    let cpu3 = own_cpu_seconds();
    for chunk in many.chunks(N) {
        raw_publish(&bench.rabbit, &raw_queue, chunk).await;
    }
    let raw_publisher_cpu = own_cpu_seconds() - cpu3;
    purge(&bench.rabbit, &raw_queue).await;
    let raw_latency = raw_latency(&raw_queue).await;
    bench.rabbit.delete(&raw_queue).await;

    println!("\nconnector process figures ({CPU_RECORDS} records of {RECORD_BYTES} bytes):");
    println!(
        "  raw lapin in the bench process: consumer {:.2}, publisher {:.2} CPU-s per million records",
        raw_consumer_cpu * 1e6 / CPU_RECORDS as f64,
        raw_publisher_cpu * 1e6 / CPU_RECORDS as f64
    );
    println!(
        "  ingress amqp->nats: {:.0} records/s, {:.2} CPU-s per million records",
        CPU_RECORDS as f64 / ingress_secs,
        ingress_cpu * 1e6 / CPU_RECORDS as f64
    );
    println!(
        "  egress nats->amqp:  {:.0} records/s, {:.2} CPU-s per million records",
        CPU_RECORDS as f64 / egress_secs,
        egress_cpu * 1e6 / CPU_RECORDS as f64
    );
    println!("  RSS: idle {idle_rss:.1} MB, after both runs {busy_rss:.1} MB");
    println!(
        "  ingress latency at 1,000 records/s, RabbitMQ publish -> NATS subscriber: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        connector_latency.0, connector_latency.1, connector_latency.2
    );
    println!(
        "  raw lapin consumer latency, same load, RabbitMQ publish -> delivery: p50 {:.2} ms, p99 {:.2} ms ({} samples)",
        raw_latency.0, raw_latency.1, raw_latency.2
    );
    bench.rabbit.delete(&queue_in).await;
    bench.rabbit.delete(&queue_out).await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let bench = rt.block_on(async {
        Bench {
            rabbit: Rabbit::connect().await,
            probe: NatsProbe::connect().await,
            records: records(N),
        }
    });
    let mut c = Criterion::default().configure_from_args();
    ingress(&mut c, &rt, &bench);
    egress(&mut c, &rt, &bench);
    c.final_summary();
    rt.block_on(process_figures(&bench));
}

//! Throughput of the MQTT connector beside a raw rumqttc client, on the same broker in the same run.
//!
//! - `ingress/raw-rumqttc`: a publisher sends N qos-1 records to a topic; a plain rumqttc
//!   subscriber (auto acks) receives them. `ingress/connector`: the same publisher, the connector
//!   (its release binary, a separate process) subscribed to the topic and publishing to NATS; the
//!   bench counts the records arriving on the NATS subject.
//! - `egress/raw-rumqttc`: a rumqttc client publishes N qos-1 records (window 256, as the sink)
//!   and a subscriber receives them. `egress/connector`: the bench publishes N records on NATS
//!   (one per TransportMessage, as the reference does), the connector publishes them to the topic
//!   at qos 1, and the subscriber receives them.
//!
//! Every rumqttc client here has `TCP_NODELAY` set, as the connector's do.
//!
//! The broker is a private `mosquitto` (default `max_inflight_messages 20`, unlimited queue so
//! nothing is dropped); NATS is the local server. After criterion's report the bench prints
//! records/s, MB/s and the connector process's CPU seconds per million records (from
//! `/proc/<pid>/stat`), plus its RSS. `KPS_BENCH_RECORDS` sets N (default 20,000 records of 100
//! bytes per iteration); `KPS_BENCH_INFLIGHT` sets the broker's `max_inflight_messages`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use kps_connector_core::proto;
use kps_connector_core::testkit::{self, NatsProbe, StreamDecl};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

const RECORD_BYTES: usize = 100;

/// Counts messages a rumqttc subscriber received.
struct Counter {
    count: AtomicU64,
    notify: Notify,
}

impl Counter {
    async fn wait_for(&self, target: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::SeqCst) < target {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {target} arrived",
                self.count.load(Ordering::SeqCst)
            );
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(100)), self.notify.notified())
                    .await;
        }
    }
}

/// A rumqttc client whose event loop runs in a task; counts received publishes.
async fn mqtt_client(
    port: u16,
    subscribe: Option<&str>,
    inflight: u16,
) -> (AsyncClient, Arc<Counter>) {
    let mut options = MqttOptions::new(testkit::unique_name("bench"), "127.0.0.1", port);
    options
        .set_inflight(inflight)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // The same socket setting as the connector's clients (no Nagle delay on small writes).
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let counter = Arc::new(Counter {
        count: AtomicU64::new(0),
        notify: Notify::new(),
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready = Some(ready_tx);
    let subscribing = subscribe.is_some();
    if let Some(topic) = subscribe {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
    }
    let task_counter = counter.clone();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::Publish(_)) => {
                    task_counter.count.fetch_add(1, Ordering::SeqCst);
                    task_counter.notify.notify_one();
                }
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::ConnAck(_)) if !subscribing => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .expect("mqtt client ready")
        .expect("mqtt task");
    (client, counter)
}

async fn publish_all(client: &AsyncClient, topic: &str, records: &[Bytes]) {
    for record in records {
        client
            .publish_bytes(topic.to_owned(), QoS::AtLeastOnce, false, record.clone())
            .await
            .expect("publish");
    }
}

/// The private broker and the connector process.
struct Bench {
    broker: Child,
    _broker_dir: tempfile::TempDir,
    connector: Child,
    port: u16,
    records: Vec<Bytes>,
    in_topic: String,
    in_subject: String,
    out_topic: String,
    out_subject: String,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.connector.kill();
        let _ = self.connector.wait();
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// (user + system CPU seconds, RSS kB) of a process.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat (utime, stime); the split starts at field 3.
    let hz = clock_ticks();
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

impl Bench {
    async fn start(records: usize, inflight: u32, nodelay: bool) -> Self {
        let dir = tempfile::tempdir().expect("broker dir");
        let port = free_port();
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\nmax_inflight_messages {inflight}\n{}",
                if nodelay { "set_tcp_nodelay true\n" } else { "" }
            ),
        )
        .expect("config");
        let broker = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| testkit::service_unavailable("/usr/sbin/mosquitto", e));
        wait_listening(port).await;
        NatsProbe::connect().await;

        let id = testkit::unique_name("bench");
        let (grpc, metrics) = (free_port(), free_port());
        let state = dir.path().join("state");
        let connector = Command::new(env!("CARGO_BIN_EXE_kps-connector-mqtt"))
            .args([
                "--connector-id",
                &id,
                "--listen",
                &format!("127.0.0.1:{grpc}"),
            ])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
                "--nats-url",
                &testkit::nats_url(),
            ])
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("connector binary starts");
        wait_listening(grpc).await;
        let bench = Self {
            broker,
            _broker_dir: dir,
            connector,
            port,
            records: (0..records)
                .map(|i| {
                    let mut r = format!("record-{i:012}-").into_bytes();
                    r.resize(RECORD_BYTES, b'x');
                    Bytes::from(r)
                })
                .collect(),
            in_topic: format!("bench/{}", testkit::unique_name("in")),
            in_subject: testkit::unique_name("kps.bench.in"),
            out_topic: format!("bench/{}", testkit::unique_name("out")),
            out_subject: testkit::unique_name("kps.bench.out"),
        };
        let (_, idle_rss) = cpu_and_rss(bench.connector.id());
        println!("connector idle RSS: {:.1} MB", idle_rss as f64 / 1024.0);

        let mut client = testkit::grpc_client(&format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("gRPC");
        let url = format!("mqtt://127.0.0.1:{port}");
        let streams = [
            StreamDecl::ingress(
                "in",
                bench.in_subject.as_str(),
                json!({"url": url, "topic": bench.in_topic, "qos": 1}),
            ),
            StreamDecl::egress(
                "out",
                bench.out_subject.as_str(),
                json!({"url": url, "topic": bench.out_topic, "qos": 1}),
            ),
        ];
        client
            .set_payload(proto::SetPayloadRequest {
                connector_id: id.clone(),
                payloads: streams.iter().map(StreamDecl::to_payload).collect(),
            })
            .await
            .expect("streams applied");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = client
                .get_events(proto::GetEventsRequest {
                    connector_id: id.clone(),
                })
                .await
                .expect("events")
                .into_inner()
                .event_payloads;
            let healthy = events
                .iter()
                .filter(|e| {
                    matches!(&e.object, Some(proto::event_payload::Object::Status(s)) if s.state == proto::State::Healthy as i32)
                })
                .count();
            if healthy == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "streams not healthy: {events:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bench
    }

    fn connector_cpu(&self) -> f64 {
        cpu_and_rss(self.connector.id()).0
    }
}

/// Totals per benchmark, for the summary.
#[derive(Default, Clone, Copy)]
struct Totals {
    records: u64,
    seconds: f64,
    connector_cpu: f64,
}

fn main() {
    let records: usize = std::env::var("KPS_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let inflight: u32 = std::env::var("KPS_BENCH_INFLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = Runtime::new().expect("tokio runtime");
    let nodelay = std::env::var("KPS_BENCH_BROKER_NODELAY").is_ok_and(|v| v == "1");
    let bench = rt.block_on(Bench::start(records, inflight, nodelay));
    let n = records as u64;
    let timeout = Duration::from_secs(120);

    // The clients the iterations reuse.
    let (publisher, _) = rt.block_on(mqtt_client(bench.port, None, 100));
    let raw_in_topic = format!("bench/{}", testkit::unique_name("rawin"));
    let (_raw_in_sub, raw_in_count) =
        rt.block_on(mqtt_client(bench.port, Some(&raw_in_topic), 100));
    let (_out_sub, out_count) = rt.block_on(mqtt_client(bench.port, Some(&bench.out_topic), 100));
    let raw_out_topic = format!("bench/{}", testkit::unique_name("rawout"));
    let (_raw_out_sub, raw_out_count) =
        rt.block_on(mqtt_client(bench.port, Some(&raw_out_topic), 100));
    let (raw_publisher, _) = rt.block_on(mqtt_client(bench.port, None, 256));
    let probe = rt.block_on(NatsProbe::connect());
    let mut nats_in = rt.block_on(probe.subscribe(&bench.in_subject));

    let mut totals: Vec<(&str, Totals)> = Vec::new();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let mut group = criterion.benchmark_group("mqtt");
    group.throughput(Throughput::Bytes(n * RECORD_BYTES as u64));

    let mut t = Totals::default();
    group.bench_function("ingress/raw-rumqttc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = raw_in_count.count.load(Ordering::SeqCst) + n;
                    publish_all(&publisher, &raw_in_topic, &bench.records).await;
                    raw_in_count.wait_for(target, timeout).await;
                }
                let elapsed = start.elapsed();
                t.records += iters * n;
                t.seconds += elapsed.as_secs_f64();
                elapsed
            })
        })
    });
    totals.push(("ingress/raw-rumqttc", t));

    let mut t = Totals::default();
    group.bench_function("ingress/connector", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let cpu = bench.connector_cpu();
                let start = Instant::now();
                for _ in 0..iters {
                    publish_all(&publisher, &bench.in_topic, &bench.records).await;
                    let got = nats_in.collect(records, timeout).await;
                    assert_eq!(got.len(), records, "records lost on the way to NATS");
                }
                let elapsed = start.elapsed();
                t.records += iters * n;
                t.seconds += elapsed.as_secs_f64();
                t.connector_cpu += bench.connector_cpu() - cpu;
                elapsed
            })
        })
    });
    totals.push(("ingress/connector", t));

    let mut t = Totals::default();
    group.bench_function("egress/raw-rumqttc", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let target = raw_out_count.count.load(Ordering::SeqCst) + n;
                    publish_all(&raw_publisher, &raw_out_topic, &bench.records).await;
                    raw_out_count.wait_for(target, timeout).await;
                }
                let elapsed = start.elapsed();
                t.records += iters * n;
                t.seconds += elapsed.as_secs_f64();
                elapsed
            })
        })
    });
    totals.push(("egress/raw-rumqttc", t));

    let mut t = Totals::default();
    group.bench_function("egress/connector", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let cpu = bench.connector_cpu();
                let start = Instant::now();
                for _ in 0..iters {
                    let target = out_count.count.load(Ordering::SeqCst) + n;
                    probe
                        .publish_records(&bench.out_subject, &bench.records, 1)
                        .await;
                    out_count.wait_for(target, timeout).await;
                }
                let elapsed = start.elapsed();
                t.records += iters * n;
                t.seconds += elapsed.as_secs_f64();
                t.connector_cpu += bench.connector_cpu() - cpu;
                elapsed
            })
        })
    });
    totals.push(("egress/connector", t));
    group.finish();
    criterion.final_summary();

    let (_, rss) = cpu_and_rss(bench.connector.id());
    println!();
    println!(
        "summary: {records} records of {RECORD_BYTES} bytes per iteration, qos 1, mosquitto max_inflight_messages {inflight}"
    );
    println!(
        "{:<22} {:>12} {:>9} {:>10} {:>22}",
        "path", "records/s", "MB/s", "vs raw", "connector CPU s / 1M"
    );
    let rate = |t: &Totals| t.records as f64 / t.seconds.max(f64::EPSILON);
    for (i, (name, t)) in totals.iter().enumerate() {
        let raw = if name.ends_with("connector") {
            Some(rate(&totals[i - 1].1))
        } else {
            None
        };
        println!(
            "{:<22} {:>12.0} {:>9.2} {:>10} {:>22}",
            name,
            rate(t),
            rate(t) * RECORD_BYTES as f64 / 1e6,
            raw.map(|r| format!("{:.2}", rate(t) / r))
                .unwrap_or_default(),
            if name.ends_with("connector") {
                format!("{:.2}", t.connector_cpu / (t.records as f64 / 1e6))
            } else {
                String::new()
            },
        );
    }
    println!("connector RSS after the run: {:.1} MB", rss as f64 / 1024.0);
    drop(bench);
}

//! MQTT: the connector beside rumqttc, on a private Mosquitto.
//!
//! The broker is a private `mosquitto` on a free port with an unlimited queue per client
//! (`max_queued_messages 0`; the packaged default of 1,000 drops qos 1 messages a subscriber
//! has not taken yet, which a throughput run would turn into losses) and otherwise the default
//! settings (`max_inflight_messages 20`). Every path is qos 1.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use kps_connector_core::async_trait;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, unique_name};
use kps_connector_core::transport::wire::now_nanos;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::measure::{
    Arrived, EgressEnd, IngressEnd, Observer, System, apply, mb, record, stamp, start_connector,
};
use crate::report::{Memory, thousands};

/// The Mosquitto binary (the `mosquitto` package; `cargo xtask services up mosquitto`).
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// The raw clients' publish window (the connector's egress default is 256).
const INFLIGHT: u16 = 256;

/// The private broker.
pub struct Mqtt {
    port: u16,
    broker: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
    }
}

impl Mqtt {
    /// Starts the private broker and waits until it listens.
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir().context("a folder for the broker")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("a free port")?;
        let config = dir.path().join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"
            ),
        )
        .context("the broker's config")?;
        let broker = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot run {MOSQUITTO} (install it: cargo xtask services up mosquitto)")
            })?;
        let mqtt = Self {
            port,
            broker,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the private mosquitto does not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(mqtt)
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The connector with `n` ingress streams on distinct topics (one MQTT connection each,
    /// qos 1, clean sessions), one record through each: its memory then.
    pub async fn many_streams(&self, binary: &Path, n: usize) -> Result<Memory> {
        let mut process = start_connector(binary, "mqtt").await;
        let topics = format!("bench/{}", unique_name("many"));
        let subjects = unique_name("kps.bench.many");
        let streams: Vec<StreamDecl> = (0..n)
            .map(|i| {
                StreamDecl::ingress(
                    format!("s{i}"),
                    format!("{subjects}.{i}"),
                    json!({"url": self.url(), "topic": format!("{topics}/{i}"), "qos": 1, "clean_session": true}),
                )
            })
            .collect();
        apply(&mut process, &streams).await?;
        let probe = NatsProbe::connect().await;
        let mut arrivals = probe.subscribe(&format!("{subjects}.>")).await;
        let (publisher, _) = Client::connect(self.port, None).await?;
        let now = now_nanos();
        for i in 0..n {
            publisher
                .publish(&format!("{topics}/{i}"), record(now, i as u64, 100))
                .await?;
        }
        let got = arrivals.collect(n, Duration::from_secs(60)).await;
        if got.len() < n {
            bail!("{} of {n} records came through the {n} streams", got.len());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let memory = process.memory();
        process.kill().await;
        publisher.close().await;
        Ok(Memory {
            connector: "mqtt".to_owned(),
            what: format!(
                "{} ingress streams on distinct topics (one MQTT connection each), one record through each",
                thousands(n as u64)
            ),
            rss_mb: mb(memory.rss),
            peak_rss_mb: mb(memory.peak_rss),
        })
    }
}

#[async_trait]
impl System for Mqtt {
    fn name(&self) -> &'static str {
        "mqtt"
    }

    fn client(&self) -> &'static str {
        "rumqttc"
    }

    async fn ingress(&self, _size: usize) -> Result<Box<dyn IngressEnd>> {
        let (publisher, _) = Client::connect(self.port, None).await?;
        Ok(Box::new(MqttIngress {
            url: self.url(),
            port: self.port,
            topic: format!("bench/{}", unique_name("in")),
            publisher,
            reader: None,
        }))
    }

    async fn egress(&self, _size: usize) -> Result<Box<dyn EgressEnd>> {
        // Connected now, so that the raw writer's run does not include connecting.
        let (publisher, _) = Client::connect(self.port, None).await?;
        Ok(Box::new(MqttEgress {
            url: self.url(),
            port: self.port,
            topic: format!("bench/{}", unique_name("out")),
            subscriber: None,
            publisher,
        }))
    }

    fn notes(&self) -> Vec<String> {
        vec![
            "mqtt: a private Mosquitto with an unlimited per-client queue (max_queued_messages 0), otherwise defaults (set_tcp_nodelay false); qos 1 everywhere; both clients are the workspace's rumqttc (vendor/rumqttc), the raw one with upstream's one flush per request and the connector with its requests batched before a flush; ingress records are published while the reader runs (MQTT keeps nothing for a subscriber that is not there); the raw client is a rumqttc subscriber (ingress) or publisher (egress, window 256 like the connector's sink).".to_owned(),
            "mqtt 1,000 streams: the MQTT connector with 1,000 ingress streams on distinct topics of the private broker, each its own MQTT connection (the connector's design), clean sessions; RSS read 2 s after one record went through each.".to_owned(),
        ]
    }
}

/// A rumqttc client whose event loop runs in a task, forwarding what it receives.
struct Client {
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Client {
    /// Connects (and subscribes to `topic` at qos 1); returns once the broker answered.
    async fn connect(port: u16, topic: Option<&str>) -> Result<(Self, mpsc::Receiver<Bytes>)> {
        let mut options = MqttOptions::new(unique_name("bench"), "127.0.0.1", port);
        options
            .set_inflight(INFLIGHT)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        // As the connector's clients: no Nagle delay on small writes.
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        if let Some(topic) = topic {
            client
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .context("MQTT subscribe")?;
        }
        let (records, received) = mpsc::channel(65_536);
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let subscribing = topic.is_some();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready);
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(publish)) => {
                        let forwarded = records.send(publish.payload).await;
                        if forwarded.is_err() {
                            break;
                        }
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Event::Incoming(Packet::ConnAck(_)) if !subscribing => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), is_ready).await {
            Ok(Ok(())) => Ok((Self { client, task }, received)),
            _ => {
                task.abort();
                bail!("the MQTT broker on port {port} did not answer within 10 s")
            }
        }
    }

    async fn publish(&self, topic: &str, record: Bytes) -> Result<()> {
        self.client
            .publish_bytes(topic, QoS::AtLeastOnce, false, record)
            .await
            .context("MQTT publish")
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.task.abort();
    }
}

/// Records a rumqttc subscriber received.
struct Received {
    records: mpsc::Receiver<Bytes>,
    latency: bool,
}

#[async_trait]
impl Observer for Received {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let mut batch = Vec::new();
        if let Ok(Some(first)) = tokio::time::timeout(timeout, self.records.recv()).await {
            batch.push(first);
            while batch.len() < 1024 {
                match self.records.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        Ok(Arrived::of(&batch, self.latency, stamp))
    }
}

/// A topic the connector subscribes to.
struct MqttIngress {
    url: String,
    port: u16,
    topic: String,
    publisher: Client,
    reader: Option<Client>,
}

#[async_trait]
impl IngressEnd for MqttIngress {
    fn metadata(&self) -> Value {
        json!({"url": self.url, "topic": self.topic, "qos": 1, "clean_session": true})
    }

    fn stored(&self) -> bool {
        false
    }

    async fn write(&mut self, records: &[Bytes]) -> Result<()> {
        for record in records {
            self.publisher.publish(&self.topic, record.clone()).await?;
        }
        Ok(())
    }

    async fn raw_reader(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        let (client, records) = Client::connect(self.port, Some(&self.topic)).await?;
        self.reader = Some(client);
        Ok(Box::new(Received { records, latency }))
    }

    async fn cleanup(self: Box<Self>) {
        self.publisher.close().await;
        if let Some(reader) = self.reader {
            reader.close().await;
        }
    }
}

/// A topic the connector publishes to, and its subscriber.
struct MqttEgress {
    url: String,
    port: u16,
    topic: String,
    subscriber: Option<Client>,
    publisher: Client,
}

#[async_trait]
impl EgressEnd for MqttEgress {
    fn metadata(&self) -> Value {
        json!({"url": self.url, "topic": self.topic, "qos": 1})
    }

    async fn observer(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        let (client, records) = Client::connect(self.port, Some(&self.topic)).await?;
        self.subscriber = Some(client);
        Ok(Box::new(Received { records, latency }))
    }

    async fn raw_write(&mut self, records: &[Bytes]) -> Result<()> {
        for record in records {
            self.publisher.publish(&self.topic, record.clone()).await?;
        }
        Ok(())
    }

    async fn cleanup(self: Box<Self>) {
        self.publisher.close().await;
        if let Some(subscriber) = self.subscriber {
            subscriber.close().await;
        }
    }
}

//! Kafka: the connector beside rdkafka, on the broker of `cargo xtask services up` (tansu with
//! SQLite storage), every topic with 3 partitions.
//!
//! Ingress reads records that already wait in the topic, as a new consumer group from the
//! earliest offset; the raw reader is an rdkafka consumer group member (each value copied into
//! `Bytes`, as the connector does). Egress writes to the topic; the raw writer is an idempotent
//! producer (acks=all, linger.ms=5, librdkafka's default, as the connector's sink) awaiting every delivery report;
//! arrivals are counted by the partitions' high watermarks, or read by a consumer for the
//! latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use kps_connector_core::async_trait;
use kps_connector_core::testkit::unique_name;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::measure::{Arrived, EgressEnd, IngressEnd, Observer, System, stamp};

/// Partitions of every topic.
const PARTITIONS: i32 = 3;

/// `fetch.wait.max.ms` of the latency runs' readers (see the notes).
const LATENCY_FETCH_WAIT_MS: u32 = 5;

/// The broker: `KPS_TEST_KAFKA_BROKERS`, or the one on 127.0.0.1:9092.
fn brokers() -> String {
    std::env::var("KPS_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

fn config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

/// The Kafka broker of the tests.
pub struct Kafka {
    admin: AdminClient<DefaultClientContext>,
}

impl Kafka {
    /// Checks the broker answers and makes an admin client.
    pub async fn connect() -> Result<Self> {
        let brokers = brokers();
        let first = brokers.split(',').next().unwrap_or_default().to_owned();
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(&first),
        )
        .await
        {
            Ok(Ok(_)) => {}
            _ => {
                bail!("the Kafka broker at {first} is not reachable: cargo xtask services up kafka")
            }
        }
        Ok(Self {
            admin: config().create().context("admin client")?,
        })
    }

    /// A new topic, once its metadata shows every partition.
    async fn topic(&self) -> Result<String> {
        let topic = unique_name("kps-bench");
        let results = self
            .admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    PARTITIONS,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .context("CreateTopics")?;
        for result in results {
            if let Err((name, code)) = result {
                bail!("cannot create topic {name}: {code}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = tokio::task::block_in_place(|| {
                self.admin
                    .inner()
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
            })
            .context("metadata")?
            .topics()
            .first()
            .is_some_and(|t| t.error().is_none() && t.partitions().len() == PARTITIONS as usize);
            if ready {
                return Ok(topic);
            }
            if Instant::now() > deadline {
                bail!("topic {topic} never showed {PARTITIONS} partitions");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[async_trait]
impl System for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn client(&self) -> &'static str {
        "rdkafka"
    }

    async fn ingress(&self, _size: usize) -> Result<Box<dyn IngressEnd>> {
        Ok(Box::new(KafkaIngress {
            topic: self.topic().await?,
            producer: producer("5")?,
            quick: producer("0")?,
        }))
    }

    async fn egress(&self, _size: usize) -> Result<Box<dyn EgressEnd>> {
        let topic = self.topic().await?;
        // librdkafka's default linger, as the connector's sink.
        let producer = producer("5")?;
        // Connected now (metadata fetched), so that the raw writer's run does not include it.
        tokio::task::block_in_place(|| {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
        })
        .context("producer metadata")?;
        Ok(Box::new(KafkaEgress { topic, producer }))
    }

    fn latency_metadata(&self, mut metadata: Value) -> Value {
        metadata["properties"] = json!({ "fetch.wait.max.ms": LATENCY_FETCH_WAIT_MS });
        metadata
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "kafka: tansu (SQLite storage) on loopback, topics of {PARTITIONS} partitions; ingress reads records already in the topic as a new consumer group from the earliest offset (raw: an rdkafka group member with default settings); egress writes without keys (raw: an idempotent rdkafka producer, acks=all, linger.ms=5 (librdkafka's default, as the connector), every delivery report awaited), arrivals counted by the high watermarks. Latency: tansu answers a fetch only once fetch.wait.max.ms is over (librdkafka's default 500 ms) even when records wait, where Apache Kafka answers as soon as fetch.min.bytes (1) is there; so the ingress latency runs set fetch.wait.max.ms={LATENCY_FETCH_WAIT_MS} (the stream's `properties`, and the raw reader), as does the egress latency reader."
        )]
    }
}

/// An idempotent producer (acks=all) lingering `linger_ms`.
fn producer(linger_ms: &str) -> Result<FutureProducer> {
    config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms)
        .create()
        .context("producer")
}

/// Sends `records` (to `partitions` in turn, or where the partitioner puts them), retrying while
/// the local queue is full; awaits every delivery report when `confirm`.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[Bytes],
    spread: bool,
    confirm: bool,
) -> Result<()> {
    let mut deliveries = Vec::with_capacity(if confirm { records.len() } else { 0 });
    for (i, value) in records.iter().enumerate() {
        let mut message = FutureRecord::<(), [u8]>::to(topic).payload(&value[..]);
        if spread {
            message = message.partition(i as i32 % PARTITIONS);
        }
        loop {
            match producer.send_result(message) {
                Ok(delivery) => {
                    if confirm {
                        deliveries.push(delivery);
                    }
                    break;
                }
                Err((_, back)) => {
                    message = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("a record was not delivered: {e}"),
            Err(_) => bail!("the producer went away"),
        }
    }
    Ok(())
}

/// Messages a consumer receives.
struct Received {
    consumer: StreamConsumer,
    latency: bool,
}

#[async_trait]
impl Observer for Received {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let message = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_) => return Ok(Arrived::default()),
            Ok(message) => message.context("a message")?,
        };
        let record = Bytes::copy_from_slice(message.payload().unwrap_or_default());
        Ok(Arrived::of(
            std::slice::from_ref(&record),
            self.latency,
            stamp,
        ))
    }
}

/// The sum of a topic's high watermarks, polled.
struct Watermarks {
    consumer: Arc<BaseConsumer>,
    topic: String,
    seen: i64,
}

#[async_trait]
impl Observer for Watermarks {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let deadline = Instant::now() + timeout;
        loop {
            let consumer = self.consumer.clone();
            let topic = self.topic.clone();
            let total = tokio::task::spawn_blocking(move || {
                (0..PARTITIONS)
                    .map(|p| {
                        consumer
                            .fetch_watermarks(&topic, p, Duration::from_secs(5))
                            .map(|(_, high)| high)
                    })
                    .sum::<Result<i64, _>>()
            })
            .await
            .context("the watermarks task")?
            .context("watermarks")?;
            if total > self.seen {
                let count = u64::try_from(total - self.seen).unwrap_or_default();
                self.seen = total;
                return Ok(Arrived {
                    count,
                    latencies: Vec::new(),
                });
            }
            if Instant::now() >= deadline {
                return Ok(Arrived::default());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A topic the connector consumes.
struct KafkaIngress {
    topic: String,
    producer: FutureProducer,
    /// Linger 0, no reports awaited: the paced sender.
    quick: FutureProducer,
}

#[async_trait]
impl IngressEnd for KafkaIngress {
    fn metadata(&self) -> Value {
        json!({
            "brokers": brokers(), "topic": self.topic, "start": "earliest",
            "group_id": unique_name("kps-bench-connector"),
        })
    }

    fn stored(&self) -> bool {
        true
    }

    async fn write(&mut self, records: &[Bytes]) -> Result<()> {
        produce(&self.producer, &self.topic, records, true, true).await
    }

    async fn send(&mut self, records: &[Bytes]) -> Result<()> {
        produce(&self.quick, &self.topic, records, false, false).await
    }

    async fn raw_reader(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        let mut config = config();
        config
            .set("group.id", unique_name("kps-bench-raw"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        if latency {
            config.set("fetch.wait.max.ms", LATENCY_FETCH_WAIT_MS.to_string());
        }
        let consumer: StreamConsumer = config.create().context("consumer")?;
        consumer.subscribe(&[&self.topic]).context("subscribe")?;
        Ok(Box::new(Received { consumer, latency }))
    }

    async fn cleanup(self: Box<Self>) {}
}

/// A topic the connector produces to.
struct KafkaEgress {
    topic: String,
    producer: FutureProducer,
}

#[async_trait]
impl EgressEnd for KafkaEgress {
    fn metadata(&self) -> Value {
        json!({"brokers": brokers(), "topic": self.topic})
    }

    async fn observer(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        if latency {
            let consumer: StreamConsumer = config()
                .set("group.id", "kps-bench-reader-unused")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", LATENCY_FETCH_WAIT_MS.to_string())
                .create()
                .context("consumer")?;
            let mut partitions = TopicPartitionList::new();
            for p in 0..PARTITIONS {
                partitions
                    .add_partition_offset(&self.topic, p, Offset::Beginning)
                    .context("partition")?;
            }
            consumer.assign(&partitions).context("assign")?;
            return Ok(Box::new(Received {
                consumer,
                latency: true,
            }));
        }
        let consumer: BaseConsumer = config()
            .set("group.id", "kps-bench-watermarks-unused")
            .create()
            .context("consumer")?;
        Ok(Box::new(Watermarks {
            consumer: Arc::new(consumer),
            topic: self.topic.clone(),
            seen: 0,
        }))
    }

    async fn raw_write(&mut self, records: &[Bytes]) -> Result<()> {
        produce(&self.producer, &self.topic, records, false, true).await
    }

    async fn raw_send(&mut self, records: &[Bytes]) -> Result<()> {
        produce(&self.producer, &self.topic, records, false, false).await
    }

    async fn cleanup(self: Box<Self>) {}
}

//! Throughput of Kafka -> NATS (ingress) and NATS -> Kafka (egress) through the connector, beside
//! a raw rdkafka consumer and producer in the same run, against the broker and NATS on loopback.
//!
//! Ingress is timed from the first record to the last (consumer group joins are left out, for
//! the raw consumer as for the connector); egress from the first publish to the last record
//! confirmed in the topic (raw: the last delivery report).
//!
//! `cargo bench -p kps-connector-kafka` (needs `cargo xtask services up`).

#[path = "../tests/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::{brokers, create_topic, produce, producer};
use criterion::{Criterion, SamplingMode, Throughput};
use kps_connector_core::Bytes;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_kafka::KafkaConnector;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use tokio::runtime::Runtime;

/// Records per measured iteration.
const N: usize = 50_000;
/// Bytes per record.
const RECORD_BYTES: usize = 100;
/// Partitions of the benchmark topics.
const PARTITIONS: i32 = 3;
const TIMEOUT: Duration = Duration::from_secs(120);

fn record(i: usize) -> Bytes {
    let mut text = format!("kps-record-{i:010}-");
    text.extend(std::iter::repeat_n('x', RECORD_BYTES - text.len()));
    Bytes::from(text)
}

fn records(n: usize) -> Vec<Bytes> {
    (0..n).map(record).collect()
}

/// The raw baseline of ingress: a consumer group member reading the N records (each copied
/// into `Bytes`, as the connector does), from its first record to its last.
async fn raw_consume(topic: &str, n: usize) -> Duration {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique_name("kps-bench-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.offset.store", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut first = None;
    for _ in 0..n {
        let message = tokio::time::timeout(TIMEOUT, consumer.recv())
            .await
            .expect("a message in time")
            .expect("no error");
        first.get_or_insert_with(Instant::now);
        std::hint::black_box(Bytes::copy_from_slice(
            message.payload().unwrap_or_default(),
        ));
    }
    first.map(|t| t.elapsed()).unwrap_or_default()
}

/// The raw baseline of egress: an idempotent producer (acks=all) sending the N records and
/// awaiting every delivery report.
async fn raw_produce(producer: &FutureProducer, topic: &str, records: &[Bytes]) -> Duration {
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(records.len());
    for value in records {
        let mut message = FutureRecord::<(), [u8]>::to(topic).payload(&value[..]);
        loop {
            match producer.send_result(message) {
                Ok(delivery) => {
                    deliveries.push(delivery);
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
        delivery.await.expect("report").expect("delivered");
    }
    start.elapsed()
}

/// The sum of the partitions' high watermarks of `topic`.
async fn topic_size(consumer: &std::sync::Arc<StreamConsumer>, topic: &str) -> i64 {
    let consumer = consumer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        (0..PARTITIONS)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(5))
                    .expect("watermarks")
                    .1
            })
            .sum()
    })
    .await
    .expect("watermarks task")
}

fn ingress(c: &mut Criterion, rt: &Runtime) {
    let topic = unique_name("kps-kafka-bench-in");
    let channel = unique_name("kps.kafka.bench.in");
    let probe = rt.block_on(NatsProbe::connect());
    let (mut connector, mut arrivals) = rt.block_on(async {
        create_topic(&topic, PARTITIONS).await;
        let records: Vec<_> = records(N)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (Some(i as i32 % PARTITIONS), None, r))
            .collect();
        produce(&producer(), &topic, &records).await;
        let connector = TestConnector::start(KafkaConnector).await;
        let arrivals = probe.subscribe(&channel).await;
        (connector, arrivals)
    });

    let mut group = c.benchmark_group("kafka_to_nats");
    group
        .throughput(Throughput::Elements(N as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("raw_rdkafka_consumer", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += raw_consume(&topic, N).await;
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
                    // A new group each time: it reads the topic from the start.
                    let stream = StreamDecl::ingress(
                        "bench-in",
                        channel.as_str(),
                        json!({
                            "brokers": brokers(),
                            "topic": topic,
                            "start": "earliest",
                            "group_id": unique_name("kps-bench-connector"),
                        }),
                    );
                    connector.apply(vec![stream]).await.expect("stream starts");
                    let first = arrivals.collect(1, TIMEOUT).await;
                    let start = Instant::now();
                    let rest = arrivals.collect(N - first.len(), TIMEOUT).await;
                    total += start.elapsed();
                    assert_eq!(first.len() + rest.len(), N);
                    connector.apply(Vec::new()).await.expect("stream stops");
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(connector.shutdown());
}

fn egress(c: &mut Criterion, rt: &Runtime) {
    let raw_topic = unique_name("kps-kafka-bench-raw-out");
    let topic = unique_name("kps-kafka-bench-out");
    let channel = unique_name("kps.kafka.bench.out");
    let records = records(N);
    let probe = rt.block_on(NatsProbe::connect());
    let (connector, watcher, raw_producer) = rt.block_on(async {
        create_topic(&raw_topic, PARTITIONS).await;
        create_topic(&topic, PARTITIONS).await;
        let mut connector = TestConnector::start(KafkaConnector).await;
        connector
            .apply(vec![StreamDecl::egress(
                "bench-out",
                channel.as_str(),
                json!({"brokers": brokers(), "topic": topic}),
            )])
            .await
            .expect("stream starts");
        connector
            .wait_for_state(
                "bench-out",
                kps_connector_core::State::Healthy,
                Duration::from_secs(30),
            )
            .await;
        let watcher: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", "kps-bench-watcher-unused")
            .create()
            .expect("watcher");
        let raw_producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()
            .expect("producer");
        (connector, std::sync::Arc::new(watcher), raw_producer)
    });

    let mut group = c.benchmark_group("nats_to_kafka");
    group
        .throughput(Throughput::Elements(N as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("raw_rdkafka_producer", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += raw_produce(&raw_producer, &raw_topic, &records).await;
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
                    let before = topic_size(&watcher, &topic).await;
                    let start = Instant::now();
                    probe.publish_records(&channel, &records, 100).await;
                    let deadline = Instant::now() + TIMEOUT;
                    while topic_size(&watcher, &topic).await < before + N as i64 {
                        assert!(Instant::now() < deadline, "the records never all arrived");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    group.finish();
    rt.block_on(connector.shutdown());
}

fn main() {
    let rt = Runtime::new().expect("tokio runtime");
    let mut c = Criterion::default().configure_from_args();
    ingress(&mut c, &rt);
    egress(&mut c, &rt);
    c.final_summary();
}

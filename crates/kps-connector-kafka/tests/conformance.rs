//! The Kafka connector against the testkit: the contract suite and the data suite, over real
//! gRPC and NATS, with the real broker (`cargo xtask services up` starts it on 127.0.0.1:9092).

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::Duration;

use common::{TopicReader, brokers, create_topic, produce, producer};
use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::data::{DataSuite, ExternalSystem};
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, async_trait};
use kps_connector_kafka::KafkaConnector;
use rdkafka::producer::FutureProducer;
use serde_json::json;

/// A one-partition topic as the outside system (the data suite checks one total order).
struct Topic {
    name: String,
    producer: FutureProducer,
    reader: TopicReader,
}

impl Topic {
    async fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        create_topic(&name, 1).await;
        Self {
            producer: producer(),
            reader: TopicReader::new(&name, 1),
            name,
        }
    }
}

#[async_trait]
impl ExternalSystem for Topic {
    async fn produce(&self, records: &[Bytes]) -> Result<(), String> {
        let records: Vec<_> = records.iter().map(|r| (Some(0), None, r.clone())).collect();
        produce(&self.producer, &self.name, &records).await;
        Ok(())
    }

    async fn consume(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>, String> {
        Ok(self
            .reader
            .read(n, timeout)
            .await
            .into_iter()
            .map(|r| r.value)
            .collect())
    }
}

#[tokio::test]
async fn contract_suite_passes() {
    let topic = Topic::new("kps-kafka-contract").await;
    let connector = TestConnector::start(KafkaConnector).await;
    let b = brokers();
    let suite = ContractSuite::new(
        connector.endpoint(),
        connector.connector_id(),
        vec![
            StreamDecl::ingress(
                "in",
                unique_name("kps.kafka.contract.in"),
                json!({"brokers": b, "topic": topic.name}),
            ),
            StreamDecl::egress(
                "out",
                unique_name("kps.kafka.contract.out"),
                json!({"brokers": b, "topic": topic.name}),
            ),
        ],
    )
    .refuses(json!({"topic": "t"}), "brokers")
    .refuses(json!({"brokers": b}), "topic")
    .refuses(json!({"brokers": "no-port", "topic": "t"}), "brokers")
    .refuses(json!({"brokers": b, "topic": "has space"}), "topic")
    .refuses(
        json!({"brokers": b, "topic": "t", "start": "middle"}),
        "start",
    )
    .refuses(
        json!({"brokers": b, "topic": "t", "compression": "brotli"}),
        "compression",
    )
    .refuses(
        json!({"brokers": b, "topic": "t", "envelope": "xml"}),
        "envelope",
    )
    .refuses(
        json!({"brokers": b, "topic": "t", "partition": 1}),
        "partition",
    )
    .refuses(
        json!({"brokers": b, "topic": "t", "properties": {"sasl.password": "x"}}),
        "properties",
    )
    .refuses(
        json!({"brokers": b, "topic": "t", "properties": {"no.such.setting": "1"}}),
        "properties",
    );
    suite.run().await.assert_passed();
    connector.shutdown().await;
}

#[tokio::test]
async fn data_suite_ingress_round_trip_and_restart() {
    let suite = DataSuite::new(2_000);
    let topic = Topic::new("kps-kafka-data-in").await;
    let metadata = json!({"brokers": brokers(), "topic": topic.name, "start": "earliest"});
    suite
        .ingress_round_trip(KafkaConnector, metadata, &topic)
        .await
        .assert_passed();

    let topic = Topic::new("kps-kafka-data-in-restart").await;
    let metadata = json!({"brokers": brokers(), "topic": topic.name, "start": "earliest"});
    suite
        .ingress_restart(KafkaConnector, metadata, &topic)
        .await
        .assert_passed();
}

#[tokio::test]
async fn data_suite_egress_round_trip_and_restart() {
    let suite = DataSuite::new(2_000);
    let topic = Topic::new("kps-kafka-data-out").await;
    let metadata = json!({"brokers": brokers(), "topic": topic.name});
    suite
        .egress_round_trip(KafkaConnector, metadata, &topic)
        .await
        .assert_passed();

    let topic = Topic::new("kps-kafka-data-out-restart").await;
    let metadata = json!({"brokers": brokers(), "topic": topic.name, "compression": "zstd"});
    suite
        .egress_restart(KafkaConnector, metadata, &topic)
        .await
        .assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_across_a_nats_outage() {
    let system = Topic::new("kps-kafka-natscut-in").await;
    let report = DataSuite::new(3000)
        .ingress_nats_cut(
            KafkaConnector,
            json!({"brokers": brokers(), "topic": system.name, "start": "earliest"}),
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_across_a_nats_outage() {
    let system = Topic::new("kps-kafka-natscut-out").await;
    let report = DataSuite::new(3000)
        .egress_nats_cut(
            KafkaConnector,
            json!({"brokers": brokers(), "topic": system.name}),
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_survives_sigkill() {
    let system = Topic::new("kps-kafka-crash-in").await;
    let report = DataSuite::new(3000)
        .ingress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-kafka")),
            // A short session timeout: the killed member's partition moves to its successor
            // within seconds instead of the default 45.
            json!({"brokers": brokers(), "topic": system.name, "start": "earliest",
                   "properties": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}}),
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_survives_sigkill() {
    let system = Topic::new("kps-kafka-crash-out").await;
    let report = DataSuite::new(3000)
        .egress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-kafka")),
            json!({"brokers": brokers(), "topic": system.name}),
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_skips_malformed_messages() {
    let system = Topic::new("kps-kafka-malformed-out").await;
    let report = DataSuite::new(1000)
        .egress_malformed_input(
            KafkaConnector,
            json!({"brokers": brokers(), "topic": system.name}),
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

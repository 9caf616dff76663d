//! The testkit's suites: the gRPC contract, and the data checks (records in = records out, in
//! order; stop and start without loss) against the shared Mosquitto.
//!
//! The data checks move 1,000 records: at most what Mosquitto's default per-client queue
//! (`max_queued_messages 1000`) holds for a subscriber that is away or behind.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::data::{DataSuite, ExternalSystem};
use kps_connector_core::testkit::{StreamDecl, unique_name};
use kps_connector_core::{Direction, async_trait};
use kps_connector_mqtt::MqttConnector;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{
    SHARED_PORT, Subscriber, connector, payloads, publish, shared_broker, unique_topic,
};

/// The shared broker as the data suite drives it: one topic the ingress stream reads, one the
/// egress stream writes (read by a plain subscriber started before the stream).
struct Mosquitto {
    topic: String,
    subscriber: Mutex<Subscriber>,
}

impl Mosquitto {
    async fn new(prefix: &str) -> Self {
        shared_broker().await;
        let topic = unique_topic(prefix);
        let subscriber = Mutex::new(Subscriber::start(SHARED_PORT, &topic, 1).await);
        Self { topic, subscriber }
    }

    async fn metadata(&self, qos: u8) -> Value {
        json!({"url": shared_broker().await, "topic": self.topic, "qos": qos})
    }
}

#[async_trait]
impl ExternalSystem for Mosquitto {
    async fn produce(&self, records: &[Bytes]) -> Result<(), String> {
        publish(SHARED_PORT, &self.topic, records, 1, false).await;
        Ok(())
    }

    async fn consume(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>, String> {
        Ok(payloads(
            &self.subscriber.lock().await.collect(n, timeout).await,
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_passes() {
    let url = shared_broker().await;
    let running = connector().await;
    let streams = vec![
        StreamDecl::ingress(
            "contract-in",
            unique_name("kps.mqtt.contract.in"),
            json!({"url": url, "topic": unique_topic("contract-in")}),
        ),
        StreamDecl::egress(
            "contract-out",
            unique_name("kps.mqtt.contract.out"),
            json!({"url": url, "topic": unique_topic("contract-out")}),
        ),
    ];
    let report = ContractSuite::new(running.endpoint(), running.connector_id(), streams)
        .refuses(json!({"url": url, "topic": "t", "qos": 7}), "qos")
        .refuses(json!({"topic": "t"}), "url")
        .refuses(json!({"url": url, "topic": "a/#/b"}), "topic")
        .refuses(
            json!({"url": url, "topic": "t", "envelope": "xml"}),
            "envelope",
        )
        .refuses(json!({"url": url, "topic": "t", "bogus": true}), "bogus")
        .run()
        .await;
    println!("{}", report.render());
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    crate::common::forget_sessions(&id, &["contract-in", "contract-in-bystander"]).await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_round_trip() {
    let system = Mosquitto::new("data-in").await;
    DataSuite::new(1_000)
        .ingress_round_trip(MqttConnector, system.metadata(1).await, &system)
        .await
        .assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_restart() {
    let system = Mosquitto::new("data-in-restart").await;
    DataSuite::new(1_000)
        .ingress_restart(MqttConnector, system.metadata(1).await, &system)
        .await
        .assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_round_trip() {
    let system = Mosquitto::new("data-out").await;
    DataSuite::new(1_000)
        .egress_round_trip(MqttConnector, system.metadata(1).await, &system)
        .await
        .assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_restart() {
    let system = Mosquitto::new("data-out-restart").await;
    DataSuite::new(1_000)
        .egress_restart(MqttConnector, system.metadata(1).await, &system)
        .await
        .assert_passed();
}

#[test]
fn the_connector_is_bidirectional() {
    use kps_connector_core::Connector;
    let info = MqttConnector.info();
    assert_eq!(info.name, "mqtt");
    assert!(info.supports(Direction::Ingress) && info.supports(Direction::Egress));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_across_a_nats_outage() {
    let system = Mosquitto::new("data-in-natscut").await;
    let report = DataSuite::new(900)
        .ingress_nats_cut(MqttConnector, system.metadata(1).await, &system)
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_across_a_nats_outage() {
    let system = Mosquitto::new("data-out-natscut").await;
    let report = DataSuite::new(900)
        .egress_nats_cut(MqttConnector, system.metadata(1).await, &system)
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_survives_sigkill() {
    let system = Mosquitto::new("data-in-crash").await;
    let report = DataSuite::new(900)
        .ingress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-mqtt")),
            system.metadata(1).await,
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_survives_sigkill() {
    let system = Mosquitto::new("data-out-crash").await;
    let report = DataSuite::new(900)
        .egress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-mqtt")),
            system.metadata(1).await,
            &system,
        )
        .await;
    println!("{report}");
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_skips_malformed_messages() {
    let system = Mosquitto::new("data-out-malformed").await;
    let report = DataSuite::new(500)
        .egress_malformed_input(MqttConnector, system.metadata(1).await, &system)
        .await;
    println!("{report}");
    report.assert_passed();
}

//! The testkit's suites against the real RabbitMQ: the contract checks, the data checks (records
//! in = records out, in order; stop and start without loss), and bad parameters refused with the
//! field named.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Rabbit, Records, amqp_url};
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::data::{DataSuite, ExternalSystem};
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, async_trait};
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_suite_passes() {
    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_contract");
    rabbit.queue(&queue, &[]).await;
    let connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.contract");
    let suite = ContractSuite::new(
        connector.endpoint(),
        connector.connector_id(),
        vec![
            StreamDecl::ingress(
                "contract-in",
                format!("{channel}.in"),
                json!({"url": amqp_url(), "queue": queue}),
            ),
            StreamDecl::egress(
                "contract-out",
                format!("{channel}.out"),
                json!({"url": amqp_url(), "exchange": "", "routing_key": queue}),
            ),
        ],
    )
    .refuses(
        json!({"url": "amqp://guest:guest@127.0.0.1:5672/%2f", "queue": queue}),
        "url",
    )
    .refuses(json!({"url": amqp_url()}), "queue")
    .refuses(
        json!({"url": amqp_url(), "queue": queue, "prefetch": 0}),
        "prefetch",
    )
    .refuses(
        json!({"url": amqp_url(), "queue": queue, "bogus": true}),
        "bogus",
    );
    suite.run().await.assert_passed();
    connector.shutdown().await;
    rabbit.delete(&queue).await;
}

/// Bad parameters in either direction are refused whole, naming the field, and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_naming_the_field() {
    let mut connector = TestConnector::start(AmqpConnector).await;
    let channel = unique_name("kps.amqp.bad");
    let cases: Vec<(StreamDecl, &str)> = vec![
        (
            StreamDecl::ingress(
                "creds-in",
                channel.as_str(),
                json!({"url": "amqp://guest:guest@127.0.0.1:5672/%2f", "queue": "q"}),
            ),
            "url",
        ),
        (
            StreamDecl::egress(
                "creds-out",
                channel.as_str(),
                json!({"url": "amqps://admin@rabbit.example/prod", "exchange": "x"}),
            ),
            "url",
        ),
        (
            StreamDecl::ingress("no-queue", channel.as_str(), json!({"url": amqp_url()})),
            "queue",
        ),
        (
            StreamDecl::egress("no-exchange", channel.as_str(), json!({"url": amqp_url()})),
            "exchange",
        ),
        (
            StreamDecl::egress(
                "no-key",
                channel.as_str(),
                json!({"url": amqp_url(), "exchange": ""}),
            ),
            "routing_key",
        ),
        (
            StreamDecl::ingress("no-url", channel.as_str(), json!({"queue": "q"})),
            "url",
        ),
        (
            StreamDecl::ingress(
                "bad-envelope",
                channel.as_str(),
                json!({"url": amqp_url(), "queue": "q", "envelope": "xml"}),
            ),
            "envelope",
        ),
    ];
    for (stream, field) in cases {
        let id = stream.id.clone();
        let status = connector
            .apply(vec![stream])
            .await
            .expect_err("bad parameters are refused");
        // INVALID_ARGUMENT (compared by name: this crate does not depend on tonic).
        assert_eq!(
            format!("{:?}", status.code()),
            "InvalidArgument",
            "{id}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{id}: the error names `{field}`: {}",
            status.message()
        );
        assert!(
            !status.message().contains("guest:guest"),
            "no credentials echoed: {}",
            status.message()
        );
        assert!(
            connector.streams().await.is_empty(),
            "{id}: nothing started"
        );
    }
    connector.shutdown().await;
}

/// RabbitMQ as the data suite drives it: records go into `queue_in` (ingress reads it) and are
/// read from `queue_out` (egress writes it).
struct RabbitSystem {
    rabbit: Rabbit,
    queue_in: String,
    queue_out: String,
    written: Mutex<Records>,
}

impl RabbitSystem {
    async fn new() -> Self {
        let rabbit = Rabbit::connect().await;
        let queue_in = unique_name("kps_amqp_data_in");
        let queue_out = unique_name("kps_amqp_data_out");
        rabbit.queue(&queue_in, &[]).await;
        rabbit.queue(&queue_out, &[]).await;
        let written = Mutex::new(rabbit.consumer(&queue_out).await);
        Self {
            rabbit,
            queue_in,
            queue_out,
            written,
        }
    }

    fn ingress(&self) -> Value {
        json!({"url": amqp_url(), "queue": self.queue_in})
    }

    fn egress(&self) -> Value {
        json!({"url": amqp_url(), "exchange": "", "routing_key": self.queue_out})
    }

    async fn cleanup(self) {
        self.rabbit.delete(&self.queue_in).await;
        self.rabbit.delete(&self.queue_out).await;
    }
}

#[async_trait]
impl ExternalSystem for RabbitSystem {
    async fn produce(&self, records: &[Bytes]) -> Result<(), String> {
        self.rabbit.publish(&self.queue_in, records).await;
        Ok(())
    }

    async fn consume(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>, String> {
        Ok(self.written.lock().await.collect(n, timeout).await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_suite_passes() {
    let suite = DataSuite::new(10_000);
    for check in [
        "ingress round trip",
        "ingress restart",
        "egress round trip",
        "egress restart",
    ] {
        let system = RabbitSystem::new().await;
        let report = match check {
            "ingress round trip" => {
                suite
                    .ingress_round_trip(AmqpConnector, system.ingress(), &system)
                    .await
            }
            "ingress restart" => {
                suite
                    .ingress_restart(AmqpConnector, system.ingress(), &system)
                    .await
            }
            "egress round trip" => {
                suite
                    .egress_round_trip(AmqpConnector, system.egress(), &system)
                    .await
            }
            _ => {
                suite
                    .egress_restart(AmqpConnector, system.egress(), &system)
                    .await
            }
        };
        report.assert_passed();
        system.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_across_a_nats_outage() {
    let system = RabbitSystem::new().await;
    let report = DataSuite::new(5000)
        .ingress_nats_cut(AmqpConnector, system.ingress(), &system)
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_across_a_nats_outage() {
    let system = RabbitSystem::new().await;
    let report = DataSuite::new(5000)
        .egress_nats_cut(AmqpConnector, system.egress(), &system)
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_ingress_survives_sigkill() {
    let system = RabbitSystem::new().await;
    let report = DataSuite::new(5000)
        .ingress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-amqp")),
            system.ingress(),
            &system,
        )
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_survives_sigkill() {
    let system = RabbitSystem::new().await;
    let report = DataSuite::new(5000)
        .egress_crash(
            Path::new(env!("CARGO_BIN_EXE_kps-connector-amqp")),
            system.egress(),
            &system,
        )
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_egress_skips_malformed_messages() {
    let system = RabbitSystem::new().await;
    let report = DataSuite::new(1000)
        .egress_malformed_input(AmqpConnector, system.egress(), &system)
        .await;
    println!("{report}");
    system.cleanup().await;
    report.assert_passed();
}

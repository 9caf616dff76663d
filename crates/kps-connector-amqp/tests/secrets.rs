//! No secret in logs, events, metrics or stream metadata: the built binary, logging at `trace`,
//! runs streams whose passwords are planted, unique values from an environment variable and a
//! file, which the real RabbitMQ refuses; beside them a stream the broker accepts.

use std::time::Duration;

use common::{AMQP_ADDR, Rabbit, amqp_url, events_of};
use kps_connector_amqp::AmqpParams;
use kps_connector_core::params::parse_params;
use kps_connector_core::proto;
use kps_connector_core::testkit::{ConnectorProcess, StreamDecl, http_get, unique_name};
use kps_connector_core::{Bytes, State};
use serde_json::json;

mod common;

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_passwords_appear_in_no_log_event_metric_or_metadata() {
    let from_env = format!("planted-env-{}", unique_name("s"));
    let from_file = format!("planted-file-{}", unique_name("s"));
    let dir = tempfile::tempdir().expect("a directory");
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{from_file}\n")).expect("password file written");
    let guest_file = dir.path().join("guest-password");
    std::fs::write(&guest_file, "guest\n").expect("password file written");

    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_secrets");
    rabbit.queue(&queue, &[]).await;
    let mut process = ConnectorProcess::builder(
        env!("CARGO_BIN_EXE_kps-connector-amqp"),
        unique_name("secrets"),
    )
    .rust_log("trace")
    .env("KPS_TEST_AMQP_PASSWORD", &from_env)
    .start();
    let base = unique_name("kps.amqp.secrets");
    let streams = [
        StreamDecl::ingress(
            "refused-env",
            format!("{base}.env"),
            json!({"url": amqp_url(), "queue": queue,
                   "username": "guest", "password_env": "KPS_TEST_AMQP_PASSWORD"}),
        ),
        StreamDecl::egress(
            "refused-file",
            format!("{base}.file"),
            json!({"url": amqp_url(), "exchange": "", "routing_key": queue,
                   "username": "guest", "password_file": password_file.display().to_string()}),
        ),
        StreamDecl::ingress(
            "accepted",
            format!("{base}.accepted"),
            json!({"url": amqp_url(), "queue": queue,
                   "username": "guest", "password_file": guest_file.display().to_string()}),
        ),
    ];
    process
        .set_streams(&streams)
        .await
        .expect("streams accepted");
    process
        .wait_for_state("accepted", State::Healthy, TIMEOUT)
        .await;
    rabbit
        .publish(&queue, &[Bytes::from_static(b"a record")])
        .await;
    for stream in ["refused-env", "refused-file"] {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let events = process.events().await;
            if events_of(&events, stream, "connection")
                .iter()
                .any(|e| e.kind == "alert" && e.state == State::Unhealthy)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{stream} was not refused by {AMQP_ADDR}: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A few reconnect attempts more.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let events = process.events().await;
    let refused = events_of(&events, "refused-env", "connection");
    // The broker says why (the client announces `authentication_failure_close`).
    assert!(
        refused
            .iter()
            .any(|e| e.message.contains("403 ACCESS_REFUSED")),
        "{refused:#?}"
    );
    let (_, metrics) = http_get(process.metrics_addr(), "/metrics").await;
    assert!(metrics.contains("accepted"), "{metrics}");
    let connector_id = process.connector_id().to_owned();
    let listed = process
        .client()
        .await
        .get_payload(proto::GetPayloadRequest {
            connector_id,
            kind: proto::PayloadKind::Stream as i32,
        })
        .await
        .expect("GetPayload STREAM")
        .into_inner();
    let logs = process.logs();
    // Everything the process logs, at every level, is checked below. amqprs is built without
    // its `traces` feature and logs nothing: with it, its trace lines would carry the
    // connection.start-ok frame, and the password checks below would fail.
    assert!(
        logs.contains("TRACE") && logs.contains("kps_connector_amqp"),
        "the connector did not log at trace: {logs}"
    );
    let params: Vec<AmqpParams> = streams
        .iter()
        .map(|s| parse_params(s.metadata.as_object().expect("an object")).expect("params"))
        .collect();
    for secret in [&from_env, &from_file] {
        assert!(!logs.contains(secret.as_str()), "a password is in the logs");
        assert!(
            !format!("{events:?}").contains(secret.as_str()),
            "a password is in the events"
        );
        assert!(
            !metrics.contains(secret.as_str()),
            "a password is in the metrics"
        );
        assert!(
            !format!("{listed:?}").contains(secret.as_str()),
            "a password is in the stream metadata"
        );
        assert!(
            !format!("{params:?}").contains(secret.as_str()),
            "a password is in the Debug of the params"
        );
    }
    process.terminate().await;
    rabbit.delete(&queue).await;
}

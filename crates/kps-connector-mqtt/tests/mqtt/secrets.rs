//! No secret in logs, events, metrics or stream metadata: the built binary, logging at `trace`,
//! runs streams whose passwords (planted, unique) come from an environment variable and a file,
//! against a private mosquitto that requires a password: one it accepts, one it refuses. The
//! NATS password (`--nats-password-file`) is planted too.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kps_connector_core::proto;
use kps_connector_core::testkit::{ConnectorProcess, StreamDecl, http_get, unique_name};
use kps_connector_core::{State, params::parse_params};
use kps_connector_mqtt::MqttParams;
use serde_json::json;

use crate::common::{PrivateBroker, unique_topic};

const WITHIN: Duration = Duration::from_secs(30);

/// Writes a mosquitto password file in `dir` holding `user` with `password`.
fn mosquitto_passwd(dir: &Path, user: &str, password: &str) -> std::path::PathBuf {
    let file = dir.join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&file)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success(), "mosquitto_passwd failed");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_secrets_appear_in_no_log_event_metric_or_metadata() {
    let accepted = format!("planted-accepted-{}", unique_name("s"));
    let refused = format!("planted-refused-{}", unique_name("s"));
    let nats_password = format!("planted-nats-{}", unique_name("s"));
    let secrets = [&accepted, &refused, &nats_password];

    let dir = tempfile::tempdir().expect("a directory");
    let passwd = mosquitto_passwd(dir.path(), "app", &accepted);
    let broker = PrivateBroker::start(&format!(
        "allow_anonymous false\npassword_file {}\n",
        passwd.display()
    ))
    .await;
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, format!("{refused}\n")).expect("password file written");
    // The shared NATS has no authorization: it ignores the user and password it is sent.
    let nats_password_file = dir.path().join("nats-password");
    std::fs::write(&nats_password_file, &nats_password).expect("password file written");

    let mut process = ConnectorProcess::builder(
        env!("CARGO_BIN_EXE_kps-connector-mqtt"),
        unique_name("secrets"),
    )
    .rust_log("trace")
    .env("KPS_TEST_MQTT_PASSWORD", &accepted)
    .arg("--nats-user")
    .arg("kps")
    .arg("--nats-password-file")
    .arg(nats_password_file.display().to_string())
    .start();
    let streams = [
        StreamDecl::ingress(
            "accepted-in",
            unique_name("kps.mqtt.secret.in"),
            json!({"url": broker.url(), "topic": unique_topic("secret"), "qos": 1,
                   "username": "app", "password_env": "KPS_TEST_MQTT_PASSWORD"}),
        ),
        StreamDecl::egress(
            "accepted-out",
            unique_name("kps.mqtt.secret.out"),
            json!({"url": broker.url(), "topic": unique_topic("secret"),
                   "username": "app", "password_env": "KPS_TEST_MQTT_PASSWORD"}),
        ),
        StreamDecl::ingress(
            "refused-in",
            unique_name("kps.mqtt.secret.refused"),
            json!({"url": broker.url(), "topic": unique_topic("secret"),
                   "username": "app", "password_file": wrong_file.display().to_string()}),
        ),
    ];
    process
        .set_streams(&streams)
        .await
        .expect("streams accepted");
    process
        .wait_for_state("accepted-in", State::Healthy, WITHIN)
        .await;
    process
        .wait_for_state("accepted-out", State::Healthy, WITHIN)
        .await;
    process
        .wait_for_state("refused-in", State::Unhealthy, WITHIN)
        .await;
    // A few reconnect attempts of the refused stream.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let events = process.events().await;
    let refusal = events
        .iter()
        .find(|e| e.kind == "alert" && e.stream_id == "refused-in")
        .unwrap_or_else(|| panic!("no alert for the refused stream: {events:#?}"));
    assert!(
        refusal.message.contains("broker refused the connection"),
        "{}",
        refusal.message
    );
    let (_, metrics) = http_get(process.metrics_addr(), "/metrics").await;
    assert!(metrics.contains("accepted-in"), "{metrics}");
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
    assert!(
        logs.contains("TRACE") && logs.lines().count() > 100,
        "the connector did not log at trace: {logs}"
    );

    let params: Vec<MqttParams> = streams
        .iter()
        .map(|s| parse_params(s.metadata.as_object().expect("an object")).expect("params"))
        .collect();
    for secret in secrets {
        assert!(!logs.contains(secret.as_str()), "a secret is in the logs");
        assert!(
            !format!("{events:?}").contains(secret.as_str()),
            "a secret is in the events"
        );
        assert!(
            !metrics.contains(secret.as_str()),
            "a secret is in the metrics"
        );
        assert!(
            !format!("{listed:?}").contains(secret.as_str()),
            "a secret is in the stream metadata"
        );
        assert!(
            !format!("{params:?}").contains(secret.as_str()),
            "a secret is in the Debug of the params"
        );
    }
    process.terminate().await;
}

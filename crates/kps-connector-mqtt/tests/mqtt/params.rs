//! Bad stream parameters are refused over gRPC with INVALID_ARGUMENT naming the field, and the
//! running streams stay untouched.

use std::time::Duration;

use kps_connector_core::State;
use kps_connector_core::testkit::{StreamDecl, unique_name};
use serde_json::{Value, json};

use crate::common::{connector, shared_broker, status_of, unique_topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_naming_the_field() {
    let url = shared_broker().await;
    let topic = unique_topic("params");
    let mut running = connector().await;
    let good = StreamDecl::ingress(
        "good",
        unique_name("kps.mqtt.p"),
        json!({"url": url, "topic": topic}),
    );
    running
        .apply(vec![good.clone()])
        .await
        .expect("a good stream is accepted");
    running
        .wait_for_state("good", State::Healthy, Duration::from_secs(30))
        .await;

    let with = |extra: Value| {
        let mut metadata = json!({"url": url, "topic": topic});
        metadata
            .as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        metadata
    };
    let cases: Vec<(&str, bool, Value)> = vec![
        ("qos", true, with(json!({"qos": 3}))),
        ("qos", true, with(json!({"qos": "one"}))),
        ("url", true, json!({"topic": topic})),
        ("url", true, with(json!({"url": "http://127.0.0.1:1883"}))),
        (
            "url",
            true,
            with(json!({"url": "mqtt://user:secret@127.0.0.1"})),
        ),
        ("topic", true, json!({"url": url})),
        ("topic", true, with(json!({"topic": "a/#/b"}))),
        ("topic", false, with(json!({"topic": "a/+/b"}))),
        ("envelope", true, with(json!({"envelope": "avro"}))),
        ("retain", true, with(json!({"retain": true}))),
        ("client_id", true, with(json!({"client_id": ""}))),
        (
            "username",
            true,
            with(json!({"password_env": "MQTT_PASSWORD"})),
        ),
        ("ca_file", true, with(json!({"ca_file": "/etc/ssl/ca.pem"}))),
        (
            "password",
            true,
            with(json!({"password": "inline secrets are refused"})),
        ),
    ];
    for (field, ingress, metadata) in cases {
        let bad = if ingress {
            StreamDecl::ingress("bad", "kps.mqtt.bad", metadata.clone())
        } else {
            StreamDecl::egress("bad", "kps.mqtt.bad", metadata.clone())
        };
        let status = running
            .apply(vec![good.clone(), bad])
            .await
            .expect_err(&format!("{metadata} must be refused"));
        assert_eq!(
            format!("{:?}", status.code()),
            "InvalidArgument",
            "{metadata}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "the error for {metadata} names `{field}`: {}",
            status.message()
        );
        assert!(
            !status.message().contains("secret"),
            "no secrets in errors: {}",
            status.message()
        );
    }
    // Nothing changed: the good stream is still the only one and still healthy.
    let streams = running.streams().await;
    assert_eq!(
        streams.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["good"]
    );
    let events = running.events().await;
    assert_eq!(
        status_of(&events, "good").map(|e| e.state),
        Some(State::Healthy)
    );
    assert!(status_of(&events, "bad").is_none());
    let id = running.connector_id().to_owned();
    running.shutdown().await;
    crate::common::forget_sessions(&id, &["good"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_is_not_a_request_error() {
    let port = crate::common::free_port();
    let mut running = connector().await;
    running
        .apply(vec![StreamDecl::ingress(
            "down",
            "kps.mqtt.down",
            json!({"url": format!("mqtt://127.0.0.1:{port}"), "topic": "t"}),
        )])
        .await
        .expect("accepted: the broker being down is reported through events");
    let events = crate::common::wait_for_events(
        &mut running,
        Duration::from_secs(20),
        "down reported",
        |events| {
            status_of(events, "down").is_some_and(|e| e.state == State::Unhealthy)
                && events
                    .iter()
                    .any(|e| e.kind == "alert" && e.stream_id == "down" && e.id == "connection")
        },
    )
    .await;
    let alert = events
        .iter()
        .find(|e| e.id == "connection")
        .expect("the alert");
    assert!(
        alert.message.contains(&format!("127.0.0.1:{port}")),
        "{}",
        alert.message
    );
    running.shutdown().await;
}

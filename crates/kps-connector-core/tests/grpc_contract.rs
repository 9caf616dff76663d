//! Every rule of the contract's "Behaviour" section, through a real gRPC client against the real
//! server, with the real NATS server as transport.

mod common;

use std::time::Duration;

use common::HubConnector;
use kps_connector_core::proto;
use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Direction, State};
use serde_json::json;
use tonic::Code;

fn streams() -> Vec<StreamDecl> {
    vec![
        StreamDecl::ingress(
            "in",
            unique_name("kps.core.in"),
            json!({"name": unique_name("in")}),
        ),
        StreamDecl::egress(
            "out",
            unique_name("kps.core.out"),
            json!({"name": unique_name("out")}),
        ),
    ]
}

#[tokio::test]
async fn the_contract_suite_passes_against_the_core() {
    let connector = TestConnector::start(HubConnector::default()).await;
    let report = ContractSuite::new(connector.endpoint(), connector.connector_id(), streams())
        .refuses(json!({}), "name")
        .refuses(json!({"name": ""}), "name")
        .refuses(json!({"name": "x", "fail_open": "sometimes"}), "fail_open")
        .refuses(json!({"name": "x", "extra": 1}), "extra")
        .run()
        .await;
    report.assert_passed();
    assert!(report.checks.len() >= 15, "{}", report.render());
    connector.shutdown().await;
}

#[tokio::test]
async fn a_direction_the_connector_does_not_support_is_refused() {
    let connector = TestConnector::start(HubConnector {
        ingress_only: true,
        ..Default::default()
    })
    .await;
    let ingress = vec![StreamDecl::ingress(
        "in",
        unique_name("kps.core.in"),
        json!({"name": "a"}),
    )];
    ContractSuite::new(connector.endpoint(), connector.connector_id(), ingress)
        .unsupported(Direction::Egress)
        .run()
        .await
        .assert_passed();
    connector.shutdown().await;
}

#[tokio::test]
async fn discovered_streams_are_listed_with_subscribed_ones_each_once() {
    let mut connector = TestConnector::start(HubConnector::default()).await;
    connector
        .apply(vec![
            StreamDecl::ingress("both", unique_name("kps.core"), json!({"name": "b"})),
            StreamDecl::ingress("mine", unique_name("kps.core"), json!({"name": "m"})),
        ])
        .await
        .unwrap();
    let streams = connector.streams().await;
    let flags = |id: &str| {
        let matching: Vec<_> = streams.iter().filter(|s| s.id == id).collect();
        assert_eq!(matching.len(), 1, "{id} listed once: {streams:?}");
        (matching[0].subscribed, matching[0].discovered)
    };
    assert_eq!(flags("both"), (true, true));
    assert_eq!(flags("mine"), (true, false));
    assert_eq!(flags("found"), (false, true));
    assert_eq!(streams.len(), 3);
    connector.shutdown().await;
}

#[tokio::test]
async fn config_is_validated_and_log_level_is_checked() {
    let mut connector = TestConnector::start(HubConnector::default()).await;
    let refused = connector
        .set_config(json!({"log_level": "info,[[not a filter"}))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("log_level"),
        "{}",
        refused.message()
    );
    let refused = connector
        .set_config(json!({"dead_letter_subject": "bad subject"}))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("dead_letter_subject"),
        "{}",
        refused.message()
    );
    connector
        .set_config(json!({"log_level": "debug", "site": "north"}))
        .await
        .unwrap();
    let id = connector.connector_id().to_owned();
    let config = connector
        .client()
        .get_payload(proto::GetPayloadRequest {
            connector_id: id,
            kind: proto::PayloadKind::Config as i32,
        })
        .await
        .unwrap()
        .into_inner();
    let Some(proto::payload::Object::Config(config)) = &config.payloads[0].object else {
        panic!("a config payload: {config:?}");
    };
    let fields = &config.metadata.as_ref().unwrap().fields;
    assert!(fields.contains_key("log_level") && fields.contains_key("site"));
    connector.shutdown().await;
}

#[tokio::test]
async fn a_stream_that_cannot_open_is_accepted_reported_unhealthy_and_retried() {
    let hub = common::Hub::default();
    let mut connector = TestConnector::start(HubConnector {
        hub: hub.clone(),
        ..Default::default()
    })
    .await;
    let down = unique_name("down");
    connector
        .apply(vec![StreamDecl::ingress(
            "down",
            unique_name("kps.core"),
            json!({"name": down, "fail_open": true}),
        )])
        .await
        .expect("an outside system that is down is not a request error");
    connector
        .wait_for_state("down", State::Unhealthy, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        hub.endpoint(&down)
            .opens
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2,
        "retried with backoff"
    );
    let events = connector.events().await;
    let alert = events
        .iter()
        .find(|e| e.kind == "alert" && e.id == "connection" && e.stream_id == "down");
    assert!(
        alert.is_some_and(|a| a.message.contains("is down")),
        "{events:#?}"
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let hub = common::Hub::default();
    let mut connector = TestConnector::start(HubConnector {
        hub: hub.clone(),
        ..Default::default()
    })
    .await;
    let name = unique_name("m");
    connector
        .apply(vec![StreamDecl::ingress(
            "metered",
            unique_name("kps.core"),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    hub.endpoint(&name).push(common::records("r", 0..10));
    hub.endpoint(&name)
        .wait_acked(10, Duration::from_secs(10))
        .await;
    let text = connector.metrics_text().await;
    assert!(
        text.contains(r#"kps_stream_records_total{stream="metered",direction="ingress"} 10"#),
        "{text}"
    );
    assert!(text.contains("kps_streams_running 1"), "{text}");
    assert_eq!(
        kps_connector_core::testkit::http_get(connector.metrics_addr(), "/readyz")
            .await
            .0,
        200
    );
    assert_eq!(
        kps_connector_core::testkit::http_get(connector.metrics_addr(), "/healthz")
            .await
            .0,
        200
    );
    connector.shutdown().await;
}

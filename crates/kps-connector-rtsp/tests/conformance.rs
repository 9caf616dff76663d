//! The RTSP connector against the testkit's contract suite, over real gRPC, with a stream on the
//! shared RTSP test server; and the direction it does not have.

mod support;

use kps_connector_core::Direction;
use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::{StreamDecl, TestConnector, unique_name};
use kps_connector_rtsp::RtspConnector;
use serde_json::json;

#[tokio::test]
async fn contract_suite_passes() {
    let url = support::require_shared_server().await;
    let connector = TestConnector::start(RtspConnector).await;
    let suite = ContractSuite::new(
        connector.endpoint(),
        connector.connector_id(),
        vec![
            StreamDecl::ingress("cam", unique_name("kps.rtsp.a"), json!({"url": url})),
            StreamDecl::ingress(
                "snapshots",
                unique_name("kps.rtsp.b"),
                json!({"url": url, "transport": "udp", "output": "keyframes", "max_fps": 1}),
            ),
        ],
    )
    .unsupported(Direction::Egress)
    .refuses(json!({}), "url")
    .refuses(json!({"url": "http://127.0.0.1:8554/test"}), "url")
    .refuses(json!({"url": "rtsp://admin:pw@127.0.0.1:8554/test"}), "url")
    .refuses(json!({"url": url, "transport": "sctp"}), "transport")
    .refuses(json!({"url": url, "output": "everything"}), "output")
    .refuses(json!({"url": url, "envelope": "xml"}), "envelope")
    .refuses(json!({"url": url, "max_fps": 0}), "max_fps")
    .refuses(
        json!({"url": url, "password_file": "/run/secret"}),
        "username",
    )
    .refuses(json!({"url": url, "colour": "red"}), "colour");
    let report = suite.run().await;
    report.assert_passed();
    connector.shutdown().await;
}

#[tokio::test]
async fn an_egress_stream_is_refused_naming_the_direction() {
    let url = support::require_shared_server().await;
    let mut connector = TestConnector::start(RtspConnector).await;
    let refused = connector
        .apply(vec![StreamDecl::egress(
            "out",
            unique_name("kps.rtsp.out"),
            json!({"url": url}),
        )])
        .await
        .expect_err("egress is refused");
    assert_eq!(
        format!("{:?}", refused.code()),
        "InvalidArgument",
        "{refused:?}"
    );
    assert!(refused.message().contains("direction"), "{refused:?}");
    assert!(connector.streams().await.is_empty());
    connector.shutdown().await;
}

//! `mqtts://` with `ca_file`: a private mosquitto with a TLS listener whose certificate a test CA
//! (the testkit's `TestCertificates`) signed.

use std::time::Duration;

use kps_connector_core::State;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestCertificates, unique_name};
use serde_json::json;

use crate::common::{
    PrivateBroker, Subscriber, connector, payloads, publish, records, unique_topic, wait_for_events,
};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_ca_file_moves_records_both_ways() {
    let dir = tempfile::tempdir().expect("certificate directory");
    let certs = TestCertificates::generate(dir.path());
    let listener = format!(
        "listener {{port}} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}",
        certs.ca.display(),
        certs.server_cert.display(),
        certs.server_key.display()
    );
    let broker = PrivateBroker::start_with_listeners(&[&listener], "").await;
    let tls_url = format!("mqtts://127.0.0.1:{}", broker.extra_ports[0]);
    let ca_file = certs.ca.display().to_string();

    let topic_in = unique_topic("tlsin");
    let topic_out = unique_topic("tlsout");
    let chan_in = unique_name("kps.mqtt.tlsin");
    let chan_out = unique_name("kps.mqtt.tlsout");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&chan_in).await;
    let mut subscriber = Subscriber::start(broker.port, &topic_out, 1).await;
    let mut running = connector().await;
    running
        .apply(vec![
            StreamDecl::ingress(
                "tls-in",
                chan_in.as_str(),
                json!({"url": tls_url, "topic": topic_in, "ca_file": ca_file}),
            ),
            StreamDecl::egress(
                "tls-out",
                chan_out.as_str(),
                json!({"url": tls_url, "topic": topic_out, "ca_file": ca_file}),
            ),
            // Without the CA the system roots do not trust the test CA: refused, reported.
            StreamDecl::ingress(
                "untrusted",
                "kps.mqtt.untrusted",
                json!({"url": tls_url, "topic": topic_in}),
            ),
        ])
        .await
        .expect("streams accepted");
    running
        .wait_for_state("tls-in", State::Healthy, WITHIN)
        .await;
    running
        .wait_for_state("tls-out", State::Healthy, WITHIN)
        .await;

    let sent = records("tls", 0..100);
    // Published on the plain listener of the same broker, read by the connector over TLS.
    publish(broker.port, &topic_in, &sent, 1, false).await;
    assert_eq!(arrivals.collect(sent.len(), WITHIN).await, sent);
    probe.publish_records(&chan_out, &sent, 10).await;
    assert_eq!(
        payloads(&subscriber.collect(sent.len(), WITHIN).await),
        sent
    );

    let events = wait_for_events(
        &mut running,
        WITHIN,
        "the untrusted stream is refused",
        |events| {
            events.iter().any(|e| {
                e.kind == "alert"
                    && e.stream_id == "untrusted"
                    && e.id == "connection"
                    && e.state == State::Unhealthy
            })
        },
    )
    .await;
    let alert = events
        .iter()
        .find(|e| e.stream_id == "untrusted" && e.id == "connection")
        .expect("alert");
    assert!(alert.message.contains("tls"), "{}", alert.message);
    running.shutdown().await;
    subscriber.stop().await;
}

//! `amqps://` with `ca_file` (and `cert_file`/`key_file` for mutual TLS) against the real
//! RabbitMQ: its listener is plaintext, so the testkit's TLS-terminating proxy, with a server
//! certificate of a test CA, stands in front of it.

mod common;

use std::time::Duration;

use common::{AMQP_ADDR, Rabbit, events_of, records};
use kps_connector_amqp::AmqpConnector;
use kps_connector_core::State;
use kps_connector_core::testkit::{
    FaultProxy, NatsProbe, StreamDecl, TestCertificates, TestConnector, unique_name,
};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the connection alert of `stream` is UNHEALTHY and returns its message.
async fn refusal(connector: &mut TestConnector<AmqpConnector>, stream: &str) -> String {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let events = connector.events().await;
        if let Some(alert) = events_of(&events, stream, "connection")
            .into_iter()
            .find(|e| e.kind == "alert" && e.state == State::Unhealthy)
        {
            return alert.message.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{stream} was not refused: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_ca_file_moves_records_both_ways_and_an_untrusted_broker_is_refused() {
    let dir = tempfile::tempdir().expect("certificate directory");
    let certs = TestCertificates::generate(dir.path());
    let proxy = FaultProxy::start_tls(AMQP_ADDR.parse().expect("address"), &certs).await;
    let url = format!("amqps://{}/%2f", proxy.addr());
    let ca_file = certs.ca.display().to_string();

    let rabbit = Rabbit::connect().await;
    let queue_in = unique_name("kps_amqp_tls_in");
    let queue_out = unique_name("kps_amqp_tls_out");
    rabbit.queue(&queue_in, &[]).await;
    rabbit.queue(&queue_out, &[]).await;
    let mut written = rabbit.consumer(&queue_out).await;
    let base = unique_name("kps.amqp.tls");
    let (ch_in, ch_out) = (format!("{base}.in"), format!("{base}.out"));
    let probe = NatsProbe::connect().await;
    let mut read = probe.subscribe(&ch_in).await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "tls-in",
                ch_in.as_str(),
                json!({"url": url, "queue": queue_in, "ca_file": ca_file}),
            ),
            StreamDecl::egress(
                "tls-out",
                ch_out.as_str(),
                json!({"url": url, "exchange": "", "routing_key": queue_out, "ca_file": ca_file}),
            ),
            // Without the CA the system roots do not trust the test CA.
            StreamDecl::ingress(
                "untrusted",
                format!("{base}.untrusted"),
                json!({"url": url, "queue": queue_in}),
            ),
        ])
        .await
        .expect("streams accepted");
    connector
        .wait_for_state("tls-in", State::Healthy, TIMEOUT)
        .await;
    connector
        .wait_for_state("tls-out", State::Healthy, TIMEOUT)
        .await;

    let sent = records(0..200);
    rabbit.publish(&queue_in, &sent).await;
    assert_eq!(read.collect(sent.len(), TIMEOUT).await, sent);
    probe.publish_records(&ch_out, &sent, 10).await;
    assert_eq!(written.collect(sent.len(), TIMEOUT).await, sent);

    let message = refusal(&mut connector, "untrusted").await;
    assert!(message.contains("UnknownIssuer"), "{message}");
    connector.shutdown().await;
    rabbit.delete(&queue_in).await;
    rabbit.delete(&queue_out).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_client_certificate_passes_mutual_tls_and_without_one_is_refused() {
    let dir = tempfile::tempdir().expect("certificate directory");
    let certs = TestCertificates::generate(dir.path());
    let proxy = FaultProxy::start_mutual_tls(AMQP_ADDR.parse().expect("address"), &certs).await;
    let url = format!("amqps://{}/%2f", proxy.addr());
    let ca_file = certs.ca.display().to_string();

    let rabbit = Rabbit::connect().await;
    let queue = unique_name("kps_amqp_mtls");
    rabbit.queue(&queue, &[]).await;
    let base = unique_name("kps.amqp.mtls");
    let probe = NatsProbe::connect().await;
    let mut read = probe.subscribe(&format!("{base}.in")).await;

    let mut connector = TestConnector::start(AmqpConnector).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "mtls-in",
                format!("{base}.in"),
                json!({"url": url, "queue": queue, "ca_file": ca_file,
                       "cert_file": certs.client_cert.display().to_string(),
                       "key_file": certs.client_key.display().to_string()}),
            ),
            StreamDecl::ingress(
                "no-cert",
                format!("{base}.nocert"),
                json!({"url": url, "queue": queue, "ca_file": ca_file}),
            ),
            StreamDecl::ingress(
                "missing-ca",
                format!("{base}.missing"),
                json!({"url": url, "queue": queue,
                       "ca_file": dir.path().join("missing.pem").display().to_string()}),
            ),
        ])
        .await
        .expect("streams accepted");
    connector
        .wait_for_state("mtls-in", State::Healthy, TIMEOUT)
        .await;
    let sent = records(0..100);
    rabbit.publish(&queue, &sent).await;
    assert_eq!(read.collect(sent.len(), TIMEOUT).await, sent);

    // The proxy refuses the handshake of a client without a certificate.
    let message = refusal(&mut connector, "no-cert").await;
    assert!(message.contains("CertificateRequired"), "{message}");
    // A CA file that cannot be read fails the stream, naming the parameter and the file.
    connector
        .wait_for_state("missing-ca", State::Failed, TIMEOUT)
        .await;
    let events = connector.events().await;
    let failed = events
        .iter()
        .find(|e| e.stream_id == "missing-ca" && e.state == State::Failed)
        .expect("the failed status");
    assert!(
        failed.message.contains("ca_file") && failed.message.contains("missing.pem"),
        "{}",
        failed.message
    );
    connector.shutdown().await;
    rabbit.delete(&queue).await;
}

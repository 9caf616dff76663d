//! `security_protocol: ssl` with `ca_file` (and `cert_file`/`key_file` for mutual TLS): a private
//! tansu broker (plaintext, the one `cargo xtask services up` built) behind the testkit's
//! TLS-terminating fault proxy, advertising the proxy's address, so every connection of the
//! connector and of the test's own clients is TLS with a server certificate of a test CA.
//! Records flow both ways with the CA; without it, or with another CA, or without the client
//! certificate the proxy asks for, the stream is UNHEALTHY with an alert naming the TLS failure.

#[allow(dead_code)]
mod common;

use std::time::{Duration, Instant};

use common::{
    Cluster, PrivateBroker, TopicReader, create_topic_on, free_port, produce, producer_for,
};
use kps_connector_core::testkit::{
    EventView, FaultProxy, NatsProbe, StreamDecl, TestCertificates, TestConnector, unique_name,
};
use kps_connector_core::{Bytes, State};
use kps_connector_kafka::KafkaConnector;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn records(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i:04}")))
        .collect()
}

fn keyless(records: &[Bytes]) -> Vec<(Option<i32>, Option<&str>, Bytes)> {
    records.iter().map(|r| (Some(0), None, r.clone())).collect()
}

fn path(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Waits until `stream` has an UNHEALTHY `connection` alert and returns its message.
async fn refusal(connector: &mut TestConnector<KafkaConnector>, stream: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let events = connector.events().await;
        let alert = events.iter().find(|e: &&EventView| {
            e.kind == "alert"
                && e.stream_id == stream
                && e.id == "connection"
                && e.state == State::Unhealthy
        });
        if let Some(alert) = alert {
            return alert.message.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{stream} was not refused: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The streams' metadata: `brokers`, `topic` and the TLS fields of `tls`.
fn stream(brokers: &str, topic: &str, tls: Value) -> Value {
    let mut metadata = json!({"brokers": brokers, "topic": topic,
                              "properties": {"socket.timeout.ms": 5000}});
    if let (Some(metadata), Value::Object(tls)) = (metadata.as_object_mut(), tls) {
        metadata.extend(tls);
    }
    metadata
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_with_a_ca_file_moves_records_both_ways_and_an_untrusted_broker_is_refused() {
    let dir = tempfile::tempdir().expect("certificate directory");
    let certs = TestCertificates::generate(dir.path());
    let other_dir = tempfile::tempdir().expect("certificate directory");
    let other = TestCertificates::generate(other_dir.path());
    let listen = free_port();
    let proxy = FaultProxy::start_tls(listen, &certs).await;
    let _broker = PrivateBroker::start(listen, proxy.addr()).await;
    let brokers = proxy.addr().to_string();
    let cluster = Cluster::tls(&brokers, &certs, false);
    let (topic_in, topic_out) = (unique_name("kps-tls-in"), unique_name("kps-tls-out"));
    create_topic_on(&cluster, &topic_in, 1).await;
    create_topic_on(&cluster, &topic_out, 1).await;
    let kafka = producer_for(&cluster);
    let written = TopicReader::on(&cluster, &topic_out, 1);

    let probe = NatsProbe::connect().await;
    let base = unique_name("kps.kafka.tls");
    let (ch_in, ch_out) = (format!("{base}.in"), format!("{base}.out"));
    let mut arrivals = probe.subscribe(&ch_in).await;
    let trusted = json!({"security_protocol": "ssl", "ca_file": path(&certs.ca)});
    let mut connector = TestConnector::start(KafkaConnector).await;
    connector
        .apply(vec![
            StreamDecl::ingress(
                "tls-in",
                ch_in.as_str(),
                stream(
                    &brokers,
                    &topic_in,
                    json!({"security_protocol": "ssl", "ca_file": path(&certs.ca),
                           "start": "earliest"}),
                ),
            ),
            StreamDecl::egress(
                "tls-out",
                ch_out.as_str(),
                stream(&brokers, &topic_out, trusted),
            ),
            // Without a CA file the system's CA store does not trust the test CA.
            StreamDecl::ingress(
                "untrusted-in",
                format!("{base}.untrusted"),
                stream(&brokers, &topic_in, json!({"security_protocol": "ssl"})),
            ),
            // Another CA does not either.
            StreamDecl::egress(
                "wrong-ca-out",
                format!("{base}.wrong"),
                stream(
                    &brokers,
                    &topic_out,
                    json!({"security_protocol": "ssl", "ca_file": path(&other.ca)}),
                ),
            ),
        ])
        .await
        .expect("streams accepted");
    for id in ["tls-in", "tls-out"] {
        connector.wait_for_state(id, State::Healthy, TIMEOUT).await;
    }

    let sent_in = records("in", 200);
    produce(&kafka, &topic_in, &keyless(&sent_in)).await;
    assert_eq!(arrivals.collect(sent_in.len(), TIMEOUT).await, sent_in);
    let sent_out = records("out", 200);
    probe.publish_records(&ch_out, &sent_out, 10).await;
    let received: Vec<Bytes> = written
        .read(sent_out.len(), TIMEOUT)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(received, sent_out);

    for id in ["untrusted-in", "wrong-ca-out"] {
        let message = refusal(&mut connector, id).await;
        println!("{id}: {message}");
        // librdkafka words it `SSL handshake failed: error:0A000086:SSL routines::certificate
        // verify failed: ...` or, from its I/O path, `error:0A000086:SSL routines::...`.
        assert!(
            message.contains("SSL") && message.contains("certificate verify failed"),
            "{id}: {message}"
        );
        connector
            .wait_for_state(id, State::Unhealthy, TIMEOUT)
            .await;
    }
    connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_with_a_client_certificate_passes_mutual_tls_and_without_one_is_refused() {
    let dir = tempfile::tempdir().expect("certificate directory");
    let certs = TestCertificates::generate(dir.path());
    let listen = free_port();
    let proxy = FaultProxy::start_mutual_tls(listen, &certs).await;
    let _broker = PrivateBroker::start(listen, proxy.addr()).await;
    let brokers = proxy.addr().to_string();
    let cluster = Cluster::tls(&brokers, &certs, true);
    let topic = unique_name("kps-mtls");
    create_topic_on(&cluster, &topic, 1).await;
    let kafka = producer_for(&cluster);
    let written = TopicReader::on(&cluster, &topic, 1);

    let probe = NatsProbe::connect().await;
    let base = unique_name("kps.kafka.mtls");
    let (ch_in, ch_out) = (format!("{base}.in"), format!("{base}.out"));
    let mut arrivals = probe.subscribe(&ch_in).await;
    let mutual = json!({"security_protocol": "ssl", "ca_file": path(&certs.ca),
                        "cert_file": path(&certs.client_cert),
                        "key_file": path(&certs.client_key)});
    let mut ingress = mutual.clone();
    ingress["start"] = json!("earliest");
    let mut connector = TestConnector::start(KafkaConnector).await;
    connector
        .apply(vec![
            StreamDecl::ingress("mtls-in", ch_in.as_str(), stream(&brokers, &topic, ingress)),
            StreamDecl::egress(
                "mtls-out",
                ch_out.as_str(),
                stream(&brokers, &topic, mutual),
            ),
            StreamDecl::egress(
                "no-cert-out",
                format!("{base}.nocert"),
                stream(
                    &brokers,
                    &topic,
                    json!({"security_protocol": "ssl", "ca_file": path(&certs.ca)}),
                ),
            ),
            StreamDecl::ingress(
                "missing-ca",
                format!("{base}.missing"),
                stream(
                    &brokers,
                    &topic,
                    json!({"security_protocol": "ssl",
                           "ca_file": path(&dir.path().join("missing.pem"))}),
                ),
            ),
        ])
        .await
        .expect("streams accepted");
    for id in ["mtls-in", "mtls-out"] {
        connector.wait_for_state(id, State::Healthy, TIMEOUT).await;
    }

    // Into the topic from Kafka and from NATS; the ingress stream reads both back.
    let from_kafka = records("kafka", 100);
    produce(&kafka, &topic, &keyless(&from_kafka)).await;
    let from_nats = records("nats", 100);
    probe.publish_records(&ch_out, &from_nats, 10).await;
    let mut expected = from_kafka.clone();
    expected.extend(from_nats.iter().cloned());
    let in_topic: Vec<Bytes> = written
        .read(expected.len(), TIMEOUT)
        .await
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(in_topic, expected);
    assert_eq!(arrivals.collect(expected.len(), TIMEOUT).await, expected);

    // The proxy refuses a client without a certificate.
    let message = refusal(&mut connector, "no-cert-out").await;
    println!("no-cert-out: {message}");
    assert!(
        message.contains("SSL") && message.contains("certificate required"),
        "{message}"
    );
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
}

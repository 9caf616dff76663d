//! `mqtts://` with `ca_file`: a private mosquitto with a TLS listener whose certificate a test CA
//! (made with the `openssl` command) signed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kps_connector_core::State;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, service_unavailable, unique_name};
use serde_json::json;

use crate::common::{
    PrivateBroker, Subscriber, connector, payloads, publish, records, unique_topic, wait_for_events,
};

const WITHIN: Duration = Duration::from_secs(30);

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| service_unavailable("the openssl command", e));
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a server certificate for 127.0.0.1 and localhost, in `dir`.
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kps test ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("extensions written");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_ca_file_moves_records_both_ways() {
    let certs = tempfile::tempdir().expect("certificate directory");
    make_certificates(certs.path());
    let d = certs.path().display();
    let listener = format!(
        "listener {{port}} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key"
    );
    let broker = PrivateBroker::start_with_listeners(&[&listener], "").await;
    let tls_url = format!("mqtts://127.0.0.1:{}", broker.extra_ports[0]);
    let ca_file = format!("{d}/ca.pem");

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

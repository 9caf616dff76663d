//! NATS over TLS (`--nats-tls-ca`), mutual TLS (`--nats-tls-cert`, `--nats-tls-key`) and a user
//! with a password from a file (`--nats-user`, `--nats-password-file`), against private
//! `nats-server` processes this test starts with certificates from a test CA.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HubConnector, records};
use futures::StreamExt;
use kps_connector_core::options::RuntimeOptions;
use kps_connector_core::testkit::{
    StreamDecl, TestCertificates, TestConnector, http_get, server_round_trip, service_unavailable,
    unique_name,
};
use kps_connector_core::transport::wire;
use kps_connector_core::{Bytes, State};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A `nats-server` on a free loopback port with a generated config; killed on drop.
struct PrivateNats {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl PrivateNats {
    /// Starts a server whose config is `listen` plus `extra`; waits until it accepts TCP.
    async fn start(extra: &str) -> Self {
        if !Path::new(NATS_SERVER).exists() {
            service_unavailable(
                "the nats-server binary",
                format!("{NATS_SERVER} is missing"),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = dir.path().join("nats.conf");
        std::fs::write(&config, format!("listen: \"127.0.0.1:{port}\"\n{extra}\n")).unwrap();
        let log = std::fs::File::create(dir.path().join("nats.log")).unwrap();
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server exited with {status}");
            }
            assert!(Instant::now() < deadline, "nats-server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's `tls` block; with `verify`, clients must present a certificate of the CA.
fn tls_block(certs: &TestCertificates, verify: bool) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n  timeout: 5\n}}\n",
        certs.server_cert.display(),
        certs.server_key.display(),
        certs.ca.display()
    )
}

/// A test client of the private server with the CA, the client certificate and `user`.
async fn test_client(
    server: &PrivateNats,
    certs: &TestCertificates,
    user: Option<(&str, &str)>,
) -> async_nats::Client {
    let mut options = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(certs.ca.clone())
        .add_client_certificate(certs.client_cert.clone(), certs.client_key.clone());
    if let Some((user, password)) = user {
        options = options.user_and_password(user.to_owned(), password.to_owned());
    }
    options.connect(server.url()).await.unwrap()
}

/// Starts the hub connector against `server` with `adjust`ed NATS options.
async fn connector(
    server: &PrivateNats,
    hub: &HubConnector,
    adjust: impl FnOnce(&mut RuntimeOptions),
) -> TestConnector<HubConnector> {
    let url = server.url();
    TestConnector::start_with(hub.clone(), move |o| {
        o.nats_url = url;
        adjust(o);
    })
    .await
}

/// Waits for `/readyz` to answer `want` (200: the transport is connected).
async fn ready_within(connector: &TestConnector<HubConnector>, want: u16, within: Duration) -> u16 {
    let deadline = Instant::now() + within;
    loop {
        let (status, _) = http_get(connector.metrics_addr(), "/readyz").await;
        if status == want || Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Declares an ingress stream of hub endpoint `name` to `subject`, pushes 200 records and
/// returns what a subscriber of the private server received; asserts every record was
/// acknowledged (so NATS confirmed it).
async fn records_flow(
    connector: &mut TestConnector<HubConnector>,
    hub: &HubConnector,
    subscriber: &async_nats::Client,
) -> Vec<Bytes> {
    let name = unique_name("tls_in");
    let subject = unique_name("kps.core.tls");
    let mut subscription = subscriber.subscribe(subject.clone()).await.unwrap();
    server_round_trip(subscriber).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "tls-in",
            subject.as_str(),
            json!({"name": name}),
        )])
        .await
        .unwrap();
    connector
        .wait_for_state("tls-in", State::Healthy, WAIT)
        .await;
    let sent = records("tls", 0..200);
    hub.hub.endpoint(&name).push(sent.clone());
    assert_eq!(hub.hub.endpoint(&name).wait_acked(200, WAIT).await, 200);
    let mut received = Vec::new();
    let deadline = Instant::now() + WAIT;
    while received.len() < sent.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), subscription.next()).await {
            Ok(Some(message)) => received.extend(wire::decode(message.payload).unwrap().1),
            _ => continue,
        }
    }
    assert_eq!(received, sent);
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_over_tls_carries_records_with_the_ca_and_is_refused_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate(dir.path());
    let server = PrivateNats::start(&tls_block(&certs, false)).await;
    let hub = HubConnector::default();

    let ca = certs.ca.clone();
    let mut trusted = connector(&server, &hub, move |o| o.nats_tls_ca = Some(ca)).await;
    assert_eq!(ready_within(&trusted, 200, WAIT).await, 200);
    let subscriber = test_client(&server, &certs, None).await;
    records_flow(&mut trusted, &hub, &subscriber).await;

    // Without the CA the system roots do not trust the test CA: never connected.
    let untrusted = connector(&server, &hub, |_| {}).await;
    assert_eq!(
        ready_within(&untrusted, 200, Duration::from_secs(3)).await,
        503
    );
    futures::join!(trusted.shutdown(), untrusted.shutdown());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_mutual_tls_with_a_password_file_connects_and_anything_less_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate(dir.path());
    let password = format!("pw-{}", unique_name("nats"));
    let server = PrivateNats::start(&format!(
        "{}authorization {{\n  user: app\n  password: \"{password}\"\n}}\n",
        tls_block(&certs, true)
    ))
    .await;
    let password_file = dir.path().join("nats-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let wrong_file = dir.path().join("wrong-password");
    std::fs::write(&wrong_file, "not-the-password\n").unwrap();
    let hub = HubConnector::default();
    let mutual = |certs: &TestCertificates, password: Option<PathBuf>| {
        let certs = certs.clone();
        move |o: &mut RuntimeOptions| {
            o.nats_tls_ca = Some(certs.ca);
            o.nats_tls_cert = Some(certs.client_cert);
            o.nats_tls_key = Some(certs.client_key);
            if let Some(file) = password {
                o.nats_user = Some("app".to_owned());
                o.nats_password_file = Some(file);
            }
        }
    };

    let mut full = connector(&server, &hub, mutual(&certs, Some(password_file))).await;
    assert_eq!(ready_within(&full, 200, WAIT).await, 200);
    let subscriber = test_client(&server, &certs, Some(("app", &password))).await;
    records_flow(&mut full, &hub, &subscriber).await;

    // No client certificate: the server refuses the handshake.
    let password_file = dir.path().join("nats-password");
    let ca = certs.ca.clone();
    let no_cert = connector(&server, &hub, move |o| {
        o.nats_tls_ca = Some(ca);
        o.nats_user = Some("app".to_owned());
        o.nats_password_file = Some(password_file);
    })
    .await;
    // A client certificate but the wrong password.
    let mut wrong = connector(&server, &hub, mutual(&certs, Some(wrong_file))).await;
    // The certificate without any password.
    let no_password = connector(&server, &hub, mutual(&certs, None)).await;
    let statuses = futures::future::join_all(
        [&no_cert, &wrong, &no_password]
            .map(|refused| ready_within(refused, 200, Duration::from_secs(3))),
    )
    .await;
    assert_eq!(statuses, [503, 503, 503]);

    // The password is in no event and no metric of any of them.
    for connector in [&mut full, &mut wrong] {
        let events = connector.events().await;
        let metrics = connector.metrics_text().await;
        assert!(!format!("{events:?}").contains(&password));
        assert!(!metrics.contains(&password));
    }
    futures::future::join_all([full, no_cert, wrong, no_password].map(TestConnector::shutdown))
        .await;
}

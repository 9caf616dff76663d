//! The gRPC server over TLS (`--tls-cert`, `--tls-key`) and mutual TLS (`--tls-client-ca`), with
//! real clients and certificates from a test CA; and the startup errors of incomplete or bad
//! TLS options.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::HubConnector;
use kps_connector_core::proto;
use kps_connector_core::proto::connector_service_client::ConnectorServiceClient;
use kps_connector_core::testkit::{TestCertificates, grpc_tls_client, nats_url, unique_name};
use kps_connector_core::{RunningConnector, RuntimeOptions};
use tonic::transport::{ClientTlsConfig, Endpoint};

/// A connector started with `adjust`ed options, with its id.
async fn start(
    adjust: impl FnOnce(&mut RuntimeOptions),
) -> Result<(RunningConnector, String), kps_connector_core::app::StartError> {
    let state = tempfile::tempdir().unwrap();
    let id = unique_name("tls");
    let mut options = RuntimeOptions::for_tests(&id, &nats_url(), PathBuf::from(state.path()));
    adjust(&mut options);
    kps_connector_core::start(HubConnector::default(), options, None)
        .await
        .map(|running| (running, id))
}

fn with_tls(certs: &TestCertificates, mutual: bool) -> impl FnOnce(&mut RuntimeOptions) {
    let certs = certs.clone();
    move |o| {
        o.tls_cert = Some(certs.server_cert.clone());
        o.tls_key = Some(certs.server_key.clone());
        if mutual {
            o.tls_client_ca = Some(certs.ca.clone());
        }
    }
}

/// One GetEvents call on a fresh connection: `Ok` when the connector answered.
async fn get_events(endpoint: Endpoint, connector_id: &str) -> Result<(), String> {
    let call = async {
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        ConnectorServiceClient::new(channel)
            .get_events(proto::GetEventsRequest {
                connector_id: connector_id.to_owned(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("call: {e:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()))
}

fn https(running: &RunningConnector, tls: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{}", running.grpc_addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
}

fn plaintext(running: &RunningConnector) -> Endpoint {
    Endpoint::from_shared(format!("http://{}", running.grpc_addr())).unwrap()
}

#[tokio::test]
async fn with_tls_a_client_trusting_the_ca_is_served_and_plaintext_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestCertificates::generate(other_dir.path());
    let (running, id) = start(with_tls(&certs, false)).await.unwrap();

    // The testkit's TLS client: the whole contract works over TLS.
    let mut client = grpc_tls_client(
        &format!("https://{}", running.grpc_addr()),
        certs.grpc_client_tls(false),
    )
    .await
    .unwrap();
    client
        .get_payload(proto::GetPayloadRequest {
            connector_id: id.clone(),
            kind: proto::PayloadKind::Stream as i32,
        })
        .await
        .unwrap();
    get_events(https(&running, certs.grpc_client_tls(false)), &id)
        .await
        .unwrap();

    // Plaintext HTTP/2 to the TLS port is refused.
    let plain = get_events(plaintext(&running), &id).await;
    assert!(plain.is_err(), "a plaintext client was served");
    // A client that trusts another CA refuses the server's certificate.
    let untrusted = get_events(https(&running, other.grpc_client_tls(false)), &id).await;
    assert!(untrusted.is_err(), "a client of another CA was served");
    // Failed handshakes do not stop the server.
    get_events(https(&running, certs.grpc_client_tls(true)), &id)
        .await
        .unwrap();
    running.shutdown().await;
}

#[tokio::test]
async fn with_mutual_tls_only_clients_with_a_certificate_of_the_ca_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let other = TestCertificates::generate(other_dir.path());
    let (running, id) = start(with_tls(&certs, true)).await.unwrap();

    let without = get_events(https(&running, certs.grpc_client_tls(false)), &id).await;
    let refusal = without.expect_err("a client without a certificate was served");
    assert!(refusal.contains("CertificateRequired"), "{refusal}");
    // A certificate from another CA, offered to a client that trusts the server.
    let foreign = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(&certs.ca).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(&other.client_cert).unwrap(),
            std::fs::read(&other.client_key).unwrap(),
        ));
    let foreign = get_events(https(&running, foreign), &id).await;
    assert!(
        foreign.is_err(),
        "a client certificate of another CA was accepted"
    );
    let plain = get_events(plaintext(&running), &id).await;
    assert!(plain.is_err(), "a plaintext client was served");

    get_events(https(&running, certs.grpc_client_tls(true)), &id)
        .await
        .unwrap();
    let mut client = grpc_tls_client(
        &format!("https://{}", running.grpc_addr()),
        certs.grpc_client_tls(true),
    )
    .await
    .unwrap();
    client
        .get_payload(proto::GetPayloadRequest {
            connector_id: id.clone(),
            kind: proto::PayloadKind::Config as i32,
        })
        .await
        .unwrap();
    running.shutdown().await;
}

#[tokio::test]
async fn incomplete_or_bad_tls_options_are_startup_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let missing = dir.path().join("missing.pem");

    let error = |adjust: Box<dyn FnOnce(&mut RuntimeOptions)>| async move {
        match start(adjust).await {
            Ok((running, _)) => {
                running.shutdown().await;
                panic!("the connector started")
            }
            Err(e) => e.to_string(),
        }
    };
    let c = certs.clone();
    let text = error(Box::new(move |o| o.tls_cert = Some(c.server_cert))).await;
    assert_eq!(text, "--tls-cert needs --tls-key");
    let c = certs.clone();
    let text = error(Box::new(move |o| o.tls_key = Some(c.server_key))).await;
    assert_eq!(text, "--tls-key needs --tls-cert");
    let c = certs.clone();
    let text = error(Box::new(move |o| o.tls_client_ca = Some(c.ca))).await;
    assert!(text.starts_with("--tls-client-ca needs"), "{text}");

    let (c, m) = (certs.clone(), missing.clone());
    let text = error(Box::new(move |o| {
        o.tls_cert = Some(c.server_cert);
        o.tls_key = Some(m);
    }))
    .await;
    assert!(
        text.starts_with("--tls-key ") && text.contains("missing.pem") && text.contains("read"),
        "{text}"
    );
    let (c, g) = (certs.clone(), garbage.clone());
    let text = error(Box::new(move |o| {
        o.tls_cert = Some(g);
        o.tls_key = Some(c.server_key);
    }))
    .await;
    assert!(
        text.starts_with("--tls-cert ") && text.contains("garbage.pem"),
        "{text}"
    );
    let (c, g) = (certs.clone(), garbage.clone());
    let text = error(Box::new(move |o| {
        o.tls_cert = Some(c.server_cert);
        o.tls_key = Some(c.server_key);
        o.tls_client_ca = Some(g);
    }))
    .await;
    assert!(
        text.starts_with("--tls-client-ca ") && text.contains("garbage.pem"),
        "{text}"
    );
    // A key that is not the certificate's: both files named.
    let c = certs.clone();
    let text = error(Box::new(move |o| {
        o.tls_cert = Some(c.server_cert);
        o.tls_key = Some(c.client_key);
    }))
    .await;
    assert!(
        text.contains("server.pem") && text.contains("client.key"),
        "{text}"
    );
    let m = missing.clone();
    let text = error(Box::new(move |o| o.nats_tls_ca = Some(m))).await;
    assert!(
        text.starts_with("--nats-tls-ca ") && text.contains("missing.pem"),
        "{text}"
    );
    let c = certs.clone();
    let text = error(Box::new(move |o| {
        o.nats_user = Some("app".into());
        o.nats_password_file = Some(c.ca_key.with_file_name("no-password"));
    }))
    .await;
    assert!(
        text.starts_with("--nats-password-file ") && text.contains("no-password"),
        "{text}"
    );
}

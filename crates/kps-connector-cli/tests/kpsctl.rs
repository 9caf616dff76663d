//! Every kpsctl verb, run as the real binary against a real running connector (the file
//! connector, serving the real gRPC contract) and the real NATS server.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kps_connector_core::State;
use kps_connector_core::testkit::{TestConnector, unique_name};
use kps_connector_file::FileConnector;
use serde_json::{Value, json};

fn kpsctl(connector: &TestConnector<FileConnector>, args: &[&str]) -> Output {
    kpsctl_at(&connector.endpoint(), connector.connector_id(), args, None)
}

fn kpsctl_at(endpoint: &str, id: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kpsctl"));
    command
        .args(["--connector", endpoint, "--connector-id", id])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("kpsctl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("kpsctl ends")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_doc(dir: &Path, name: &str, doc: Value) {
    std::fs::write(dir.join(format!("{name}.json")), doc.to_string()).unwrap();
}

struct Fixture {
    connector: TestConnector<FileConnector>,
    dir: tempfile::TempDir,
    input: String,
    output: String,
}

async fn fixture() -> Fixture {
    let connector = TestConnector::start(FileConnector).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.log").display().to_string();
    let output = dir.path().join("out.log").display().to_string();
    std::fs::write(&input, "").unwrap();
    let docs = dir.path().join("streams");
    std::fs::create_dir(&docs).unwrap();
    write_doc(
        &docs,
        "a",
        json!({"name": "tail-in", "direction": "INGRESS", "transportChannel": unique_name("kpsctl.in"),
        "labels": [{"id": "site", "value": "north"}], "stream": {"path": input}}),
    );
    write_doc(
        &docs,
        "b",
        json!({"name": "append-out", "direction": "EGRESS", "transportChannel": unique_name("kpsctl.out"),
        "stream": {"path": output}}),
    );
    Fixture {
        connector,
        dir,
        input,
        output,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_streams_delete_and_their_errors() {
    let mut f = fixture().await;
    let docs = f.dir.path().join("streams").display().to_string();
    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["apply", "-f", &docs]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("applied 2 stream(s): tail-in, append-out"),
        "{}",
        stdout(&out)
    );
    f.connector
        .wait_for_state("tail-in", State::Healthy, Duration::from_secs(10))
        .await;

    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["streams"]));
    let table = stdout(&out);
    assert!(table.starts_with("ID"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("tail-in"))
        .expect("tail-in row");
    assert!(
        row.contains("INGRESS") && row.contains("yes") && row.contains("HEALTHY"),
        "{row}"
    );

    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["--json", "streams"]));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().any(|r| r["id"] == "append-out"
        && r["direction"] == "EGRESS"
        && r["metadata"]["path"] == f.output.as_str()));

    // A document the connector refuses: exit 1, the code and the field named, nothing changed.
    let bad = f.dir.path().join("bad.json");
    std::fs::write(&bad, json!({"name": "bad", "direction": "INGRESS", "transportChannel": "x.y", "stream": {"path": f.input, "colour": 1}}).to_string()).unwrap();
    let out = tokio::task::block_in_place(|| {
        kpsctl(&f.connector, &["apply", "-f", bad.to_str().unwrap()])
    });
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("InvalidArgument") && stderr(&out).contains("colour"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        f.connector
            .streams()
            .await
            .iter()
            .filter(|s| s.subscribed)
            .count(),
        2
    );

    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["delete", "append-out"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deleted stream append-out (1 remaining)"));
    let ids: Vec<String> = f
        .connector
        .streams()
        .await
        .into_iter()
        .filter(|s| s.subscribed)
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec!["tail-in".to_owned()]);

    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["delete", "nope"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("stream `nope` is not subscribed"),
        "{}",
        stderr(&out)
    );
    f.connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_and_events() {
    let mut f = fixture().await;
    let docs = f.dir.path().join("streams").display().to_string();
    assert!(
        tokio::task::block_in_place(|| kpsctl(&f.connector, &["apply", "-f", &docs]))
            .status
            .success()
    );
    f.connector
        .wait_for_state("tail-in", State::Healthy, Duration::from_secs(10))
        .await;

    let out = tokio::task::block_in_place(|| {
        kpsctl(&f.connector, &["config", "set", "site=north", "retries=3"])
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["config", "get"]));
    assert!(
        stdout(&out).contains("site=\"north\"") && stdout(&out).contains("retries=3"),
        "{}",
        stdout(&out)
    );
    let out =
        tokio::task::block_in_place(|| kpsctl(&f.connector, &["config", "set", "log_level=[[bad"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("log_level"), "{}", stderr(&out));

    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["events"]));
    let text = stdout(&out);
    assert!(text.starts_with("TIME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("tail-in") && l.contains("status") && l.contains("HEALTHY")),
        "{text}"
    );
    let out = tokio::task::block_in_place(|| kpsctl(&f.connector, &["--json", "events"]));
    let events: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        events
            .iter()
            .all(|e| e["created_at"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    f.connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_and_tail_move_records_through_a_connector() {
    let mut f = fixture().await;
    let docs = f.dir.path().join("streams").display().to_string();
    assert!(
        tokio::task::block_in_place(|| kpsctl(&f.connector, &["apply", "-f", &docs]))
            .status
            .success()
    );
    f.connector
        .wait_for_state("append-out", State::Healthy, Duration::from_secs(10))
        .await;
    let streams = f.connector.streams().await;
    let channel_of = |id: &str| {
        streams
            .iter()
            .find(|s| s.id == id)
            .unwrap()
            .transport_channel
            .clone()
    };

    // publish -> egress stream -> file
    let out_channel = channel_of("append-out");
    let out = tokio::task::block_in_place(|| {
        kpsctl_at(
            &f.connector.endpoint(),
            f.connector.connector_id(),
            &["publish", &out_channel, "--batch", "2"],
            Some("one\ntwo\nthree\n"),
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("published 3 records in 2 messages"),
        "{}",
        stdout(&out)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&f.output).unwrap_or_default() != "one\ntwo\nthree\n" {
        assert!(
            std::time::Instant::now() < deadline,
            "file holds {:?}",
            std::fs::read_to_string(&f.output)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // file -> ingress stream -> tail
    let in_channel = channel_of("tail-in");
    let endpoint = f.connector.endpoint();
    let id = f.connector.connector_id().to_owned();
    let tail = std::thread::spawn(move || {
        kpsctl_at(
            &endpoint,
            &id,
            &["tail", &in_channel, "--count", "3", "--seconds", "20"],
            None,
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&f.input, "alpha\nbeta\ngamma\n").unwrap();
    let out = tail.join().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alpha\nbeta\ngamma\n");

    let generated = tokio::task::block_in_place(|| {
        kpsctl_at(
            &f.connector.endpoint(),
            f.connector.connector_id(),
            &[
                "--json",
                "publish",
                "kpsctl.void",
                "--count",
                "1000",
                "--size",
                "100",
                "--batch",
                "50",
            ],
            None,
        )
    });
    let report: Value = serde_json::from_slice(&generated.stdout).expect("JSON");
    assert_eq!(
        (
            report["records"].as_u64(),
            report["messages"].as_u64(),
            report["bytes"].as_u64()
        ),
        (Some(1000), Some(20), Some(100_000))
    );
    f.connector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance_passes_against_a_connector_and_fails_naming_the_rule() {
    let f = fixture().await;
    let docs = f.dir.path().join("streams").display().to_string();
    let out = tokio::task::block_in_place(|| {
        kpsctl(
            &f.connector,
            &[
                "conformance",
                "-f",
                &docs,
                "--refuse",
                r#"path={}"#,
                "--refuse",
                r#"colour={"path":"/x","colour":1}"#,
            ],
        )
    });
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains(" 0 failed"), "{}", stdout(&out));

    let broken = broken::serve().await;
    let out = tokio::task::block_in_place(|| {
        kpsctl_at(
            &format!("http://{broken}"),
            "broken",
            &["conformance", "-f", &docs],
            None,
        )
    });
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let report = stdout(&out);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("FAIL") && l.contains("identity")),
        "the broken rule is named: {report}"
    );
    f.connector.shutdown().await;
}

#[test]
fn unreachable_connector_and_nats_are_clear_errors() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = kpsctl_at(&closed.to_string(), "x", &["streams"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach the connector at http://"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kpsctl"))
        .args(["--nats-url", &format!("nats://{closed}"), "tail", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot reach NATS"),
        "{}",
        stderr(&out)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kpsctl"))
        .args(["streams"])
        .env_remove("CONNECTOR_INSTANCE_ID")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("--connector-id"), "{}", stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_kpsctl"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success() && stdout(&out).contains("kpsctl"));
}

/// A deliberately broken connector: it answers OK to everything, whatever the connector id.
mod broken {
    use kps_connector_core::proto;
    use kps_connector_core::proto::connector_service_server::{
        ConnectorService, ConnectorServiceServer,
    };
    use tonic::{Request, Response, Status};

    struct Broken;

    fn ok() -> Option<proto::ResponseStatus> {
        Some(proto::ResponseStatus {
            code: proto::ResponseCode::Ok as i32,
            ..Default::default()
        })
    }

    #[tonic::async_trait]
    impl ConnectorService for Broken {
        async fn get_payload(
            &self,
            _: Request<proto::GetPayloadRequest>,
        ) -> Result<Response<proto::GetPayloadResponse>, Status> {
            Ok(Response::new(proto::GetPayloadResponse {
                status: ok(),
                payloads: vec![],
            }))
        }
        async fn set_payload(
            &self,
            _: Request<proto::SetPayloadRequest>,
        ) -> Result<Response<proto::SetPayloadResponse>, Status> {
            Ok(Response::new(proto::SetPayloadResponse { status: ok() }))
        }
        async fn get_events(
            &self,
            _: Request<proto::GetEventsRequest>,
        ) -> Result<Response<proto::GetEventsResponse>, Status> {
            Ok(Response::new(proto::GetEventsResponse {
                status: ok(),
                event_payloads: vec![],
            }))
        }
    }

    pub async fn serve() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ConnectorServiceServer::new(Broken))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_over_mutual_tls_with_the_tls_flags() {
    use kps_connector_core::testkit::{TestCertificates, nats_url};
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCertificates::generate(dir.path());
    let mut options = kps_connector_core::RuntimeOptions::for_tests(
        &unique_name("kpsctl-tls"),
        &nats_url(),
        dir.path().join("state"),
    );
    options.tls_cert = Some(certs.server_cert.clone());
    options.tls_key = Some(certs.server_key.clone());
    options.tls_client_ca = Some(certs.ca.clone());
    let id = options.connector_id.clone();
    let running = kps_connector_core::start(FileConnector, options, None)
        .await
        .unwrap();
    let address = running.grpc_addr().to_string();
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.client_cert.display().to_string(),
        certs.client_key.display().to_string(),
    );

    let out = tokio::task::block_in_place(|| {
        kpsctl_at(
            &address,
            &id,
            &[
                "--tls-ca",
                &ca,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--json",
                "streams",
            ],
            None,
        )
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(listed.is_array(), "{listed}");

    // Without the client certificate the connector refuses the handshake; without TLS the
    // plaintext connection fails: both are clear errors with exit status 1.
    for args in [&["--tls-ca", ca.as_str(), "streams"][..], &["streams"][..]] {
        let out = tokio::task::block_in_place(|| kpsctl_at(&address, &id, args, None));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&address),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = tokio::task::block_in_place(|| {
        kpsctl_at(&address, &id, &["--tls-cert", &cert, "streams"], None)
    });
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tls-key"), "{}", stderr(&out));
    running.shutdown().await;
}

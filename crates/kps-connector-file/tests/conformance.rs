//! The file connector against the testkit: the contract suite and the data suite, over real
//! gRPC and the real NATS server, with real files.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use kps_connector_core::testkit::contract::ContractSuite;
use kps_connector_core::testkit::data::{DataSuite, ExternalSystem};
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_core::{Bytes, State, async_trait};
use kps_connector_file::FileConnector;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Files in a temporary directory as the outside system.
struct Files {
    _dir: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
    /// Lines of `output` already returned by `consume`.
    consumed: std::sync::atomic::AtomicUsize,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.log");
        let output = dir.path().join("out.log");
        std::fs::write(&input, "").unwrap();
        Self {
            _dir: dir,
            input,
            output,
            consumed: Default::default(),
        }
    }

    fn path(p: &std::path::Path) -> String {
        p.display().to_string()
    }
}

#[async_trait]
impl ExternalSystem for Files {
    async fn produce(&self, records: &[Bytes]) -> Result<(), String> {
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&self.input)
            .await
            .map_err(|e| e.to_string())?;
        let mut data = Vec::new();
        for r in records {
            data.extend_from_slice(r);
            data.push(b'\n');
        }
        file.write_all(&data).await.map_err(|e| e.to_string())
    }

    async fn consume(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = tokio::fs::read_to_string(&self.output)
                .await
                .unwrap_or_default();
            let skip = self.consumed.load(std::sync::atomic::Ordering::SeqCst);
            let lines: Vec<Bytes> = text
                .lines()
                .skip(skip)
                .take(n)
                .map(|l| Bytes::from(l.to_owned()))
                .collect();
            if lines.len() >= n || tokio::time::Instant::now() >= deadline {
                self.consumed
                    .fetch_add(lines.len(), std::sync::atomic::Ordering::SeqCst);
                return Ok(lines);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn contract_suite_passes() {
    let files = Files::new();
    let connector = TestConnector::start(FileConnector).await;
    let suite = ContractSuite::new(
        connector.endpoint(),
        connector.connector_id(),
        vec![
            StreamDecl::ingress(
                "tail",
                unique_name("kps.file.in"),
                json!({"path": Files::path(&files.input)}),
            ),
            StreamDecl::egress(
                "append",
                unique_name("kps.file.out"),
                json!({"path": Files::path(&files.output)}),
            ),
        ],
    )
    .refuses(json!({}), "path")
    .refuses(
        json!({"path": "/tmp/x", "poll_interval_ms": 0}),
        "poll_interval_ms",
    )
    .refuses(json!({"path": "/tmp/x", "start": "middle"}), "start")
    .refuses(json!({"path": "/tmp/x", "colour": "red"}), "colour");
    suite.run().await.assert_passed();
    connector.shutdown().await;
}

#[tokio::test]
async fn data_suite_ingress_round_trip_and_restart() {
    let files = Files::new();
    let suite = DataSuite::new(2_000);
    let metadata = json!({"path": Files::path(&files.input), "poll_interval_ms": 20});
    suite
        .ingress_round_trip(FileConnector, metadata, &files)
        .await
        .assert_passed();

    let files = Files::new();
    let metadata = json!({"path": Files::path(&files.input), "poll_interval_ms": 20});
    suite
        .ingress_restart(FileConnector, metadata, &files)
        .await
        .assert_passed();
}

#[tokio::test]
async fn data_suite_egress_round_trip_and_restart() {
    let suite = DataSuite::new(2_000);
    let files = Files::new();
    let metadata = json!({"path": Files::path(&files.output)});
    suite
        .egress_round_trip(FileConnector, metadata, &files)
        .await
        .assert_passed();

    let files = Files::new();
    let metadata = json!({"path": Files::path(&files.output)});
    suite
        .egress_restart(FileConnector, metadata, &files)
        .await
        .assert_passed();
}

#[tokio::test]
async fn a_record_with_a_newline_is_dead_lettered_and_the_rest_written() {
    let files = Files::new();
    let mut connector = TestConnector::start(FileConnector).await;
    let channel = unique_name("kps.file.dlq");
    let dead_letters = format!("{channel}.dead");
    connector
        .set_config(json!({"dead_letter_subject": format!("{channel}.dead")}))
        .await
        .unwrap();
    connector
        .apply(vec![StreamDecl::egress(
            "out",
            channel.as_str(),
            json!({"path": Files::path(&files.output)}),
        )])
        .await
        .unwrap();
    connector
        .wait_for_state("out", State::Healthy, Duration::from_secs(10))
        .await;
    let probe = NatsProbe::connect().await;
    let mut dlq = probe.subscribe(&dead_letters).await;
    let records = vec![
        Bytes::from("good-1"),
        Bytes::from("bad\nline"),
        Bytes::from("good-2"),
    ];
    probe.publish_records(&channel, &records, 3).await;

    let written = files.consume(2, Duration::from_secs(10)).await.unwrap();
    assert_eq!(written, vec![Bytes::from("good-1"), Bytes::from("good-2")]);
    let dead = dlq.collect(1, Duration::from_secs(10)).await;
    assert_eq!(dead, vec![Bytes::from("bad\nline")]);
    let events = connector.events().await;
    assert!(
        events
            .iter()
            .any(|e| e.id == "record-rejected" && e.stream_id == "out"),
        "{events:#?}"
    );
    assert!(
        connector
            .metrics_text()
            .await
            .contains(r#"kps_stream_dead_letters_total{stream="out",direction="egress"} 1"#)
    );
    connector.shutdown().await;
}

#[tokio::test]
async fn ingress_resumes_after_the_last_confirmed_line() {
    let files = Files::new();
    files
        .produce(&[Bytes::from("a"), Bytes::from("b")])
        .await
        .unwrap();
    let mut connector = TestConnector::start(FileConnector).await;
    let channel = unique_name("kps.file.resume");
    let probe = NatsProbe::connect().await;
    let mut arrivals = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "in",
            channel.as_str(),
            json!({"path": Files::path(&files.input), "poll_interval_ms": 10}),
        )])
        .await
        .unwrap();
    assert_eq!(
        arrivals.collect(2, Duration::from_secs(10)).await,
        vec![Bytes::from("a"), Bytes::from("b")]
    );
    connector.restart().await;
    files.produce(&[Bytes::from("c")]).await.unwrap();
    assert_eq!(
        arrivals.collect(1, Duration::from_secs(10)).await,
        vec![Bytes::from("c")]
    );
    assert!(
        arrivals.drain(Duration::from_millis(300)).await.is_empty(),
        "no line read twice"
    );
    connector.shutdown().await;
}

/// The fault checks every connector runs: malformed input on egress, a NATS outage both ways,
/// and the built binary killed with SIGKILL both ways (JetStream mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_suite_fault_checks_pass() {
    let suite = DataSuite::new(900);
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_kps-connector-file"));
    let ingress =
        |files: &Files| json!({"path": Files::path(&files.input), "poll_interval_ms": 20});
    let egress = |files: &Files| json!({"path": Files::path(&files.output)});

    let files = Files::new();
    let report = suite
        .egress_malformed_input(FileConnector, egress(&files), &files)
        .await;
    println!("{report}");
    report.assert_passed();

    let files = Files::new();
    let report = suite
        .ingress_nats_cut(FileConnector, ingress(&files), &files)
        .await;
    println!("{report}");
    report.assert_passed();

    let files = Files::new();
    let report = suite
        .egress_nats_cut(FileConnector, egress(&files), &files)
        .await;
    println!("{report}");
    report.assert_passed();

    let files = Files::new();
    let report = suite.ingress_crash(binary, ingress(&files), &files).await;
    println!("{report}");
    report.assert_passed();

    let files = Files::new();
    let report = suite.egress_crash(binary, egress(&files), &files).await;
    println!("{report}");
    report.assert_passed();
}

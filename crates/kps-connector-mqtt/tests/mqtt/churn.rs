//! Churn: 1,000 streams (half ingress, half egress, each its own MQTT connection) applied,
//! half of them changed, then all removed, several times over, through SetPayload on the built
//! binary. Nothing may leak: after each removal the process holds the tasks, open files
//! (sockets) and threads it held before the first stream, and its memory stops growing. The
//! gRPC API answers GetPayload throughout (its latency is printed).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kps_connector_core::State;
use kps_connector_core::proto;
use kps_connector_core::testkit::{ConnectorProcess, StreamDecl, grpc_client, unique_name};
use serde_json::json;

use crate::common::{shared_broker, unique_topic};

const STREAMS: usize = 1_000;
const CYCLES: usize = 3;
const SETTLE: Duration = Duration::from_secs(120);

/// The stream set of generation `generation`: stream `i` is ingress when even; streams with
/// `i % 4 < 2` change their topic every generation (so they restart), the others never change.
fn stream_set(url: &str, prefix: &str, generation: usize) -> Vec<StreamDecl> {
    (0..STREAMS)
        .map(|i| {
            let version = if i % 4 < 2 { generation } else { 0 };
            let metadata =
                json!({"url": url, "topic": format!("{prefix}/{i}/{version}"), "qos": 0});
            let channel = format!("{}.{i}", prefix.replace('/', "."));
            if i % 2 == 0 {
                StreamDecl::ingress(format!("s{i}"), channel, metadata)
            } else {
                StreamDecl::egress(format!("s{i}"), channel, metadata)
            }
        })
        .collect()
}

/// Waits until every stream of `streams` reports HEALTHY.
async fn wait_all_healthy(process: &mut ConnectorProcess, streams: &[StreamDecl]) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let events = process.events().await;
        let healthy = events
            .iter()
            .filter(|e| e.kind == "status" && e.state == State::Healthy && !e.stream_id.is_empty())
            .count();
        if healthy == streams.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{healthy} of {} streams healthy after {SETTLE:?}",
            streams.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the process holds once idle.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    tasks: f64,
    open_files: usize,
    threads: usize,
    rss_mb: f64,
}

/// Waits until no stream runs and the task count stops moving, then measures.
async fn idle_footprint(process: &ConnectorProcess) -> Footprint {
    let deadline = Instant::now() + SETTLE;
    let mut previous = f64::NAN;
    loop {
        let running = process.metric("kps_streams_running").await;
        let tasks = process
            .metric("kps_runtime_tasks")
            .await
            .unwrap_or(f64::NAN);
        if running == Some(0.0) && tasks == previous {
            return Footprint {
                tasks,
                open_files: process.open_files(),
                threads: process.threads(),
                rss_mb: process.memory().rss as f64 / 1_048_576.0,
            };
        }
        assert!(Instant::now() < deadline, "streams never stopped");
        previous = tasks;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_churned_leak_nothing_and_the_api_stays_responsive() {
    let url = shared_broker().await;
    let prefix = unique_topic("churn");
    let id = unique_name("mqtt-churn");
    let mut process =
        ConnectorProcess::builder(env!("CARGO_BIN_EXE_kps-connector-mqtt"), &id).start();
    process.client().await;
    let baseline = idle_footprint(&process).await;

    // A second client asks for the stream list every 20 ms during the whole churn.
    let endpoint = process.endpoint();
    let poll_id = id.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = grpc_client(&endpoint).await.expect("a second gRPC client");
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                client
                    .get_payload(proto::GetPayloadRequest {
                        connector_id: poll_id.clone(),
                        kind: proto::PayloadKind::Stream as i32,
                    })
                    .await
                    .expect("GetPayload answers during churn");
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        })
    };

    let mut footprints = Vec::new();
    for cycle in 0..CYCLES {
        let first = stream_set(&url, &prefix, 2 * cycle + 1);
        process
            .set_streams(&first)
            .await
            .expect("1,000 streams accepted");
        wait_all_healthy(&mut process, &first).await;
        let changed = stream_set(&url, &prefix, 2 * cycle + 2);
        process
            .set_streams(&changed)
            .await
            .expect("the changed set accepted");
        wait_all_healthy(&mut process, &changed).await;
        let loaded_rss = process.memory().rss as f64 / 1_048_576.0;
        process
            .set_streams(&[])
            .await
            .expect("the empty set accepted");
        let footprint = idle_footprint(&process).await;
        println!(
            "cycle {cycle}: {loaded_rss:.1} MB with 1,000 streams; after removing them: {footprint:?}"
        );
        footprints.push(footprint);
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = poller.await.expect("the poller");
    latencies.sort();
    println!(
        "baseline {baseline:?}; GetPayload during churn: {} calls, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );

    let last = footprints.last().copied().expect("cycles ran");
    assert!(
        last.tasks <= baseline.tasks + 2.0,
        "tasks leaked: {} before, {} after",
        baseline.tasks,
        last.tasks
    );
    assert!(
        last.open_files <= baseline.open_files + 2,
        "open files (connections) leaked: {} before, {} after",
        baseline.open_files,
        last.open_files
    );
    assert!(
        last.threads <= baseline.threads + 2,
        "threads leaked: {} before, {} after",
        baseline.threads,
        last.threads
    );
    // The allocator keeps some of the first cycle's memory; later cycles must not add to it.
    let first = footprints[0];
    assert!(
        last.rss_mb <= first.rss_mb * 1.25 + 8.0,
        "memory keeps growing: {:.1} MB after the first cycle, {:.1} MB after the last",
        first.rss_mb,
        last.rss_mb
    );
    assert!(
        percentile(&latencies, 0.99) < Duration::from_secs(1),
        "GetPayload p99 during churn"
    );
    process.terminate().await;
}

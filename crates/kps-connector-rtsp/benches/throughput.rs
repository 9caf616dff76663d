//! Throughput of the RTSP connector beside a raw retina client, in the same run, on a
//! high-bitrate stream from a private GStreamer test server (incompressible noise, so x264
//! really produces the bitrate asked for).
//!
//! `cargo bench -p kps-connector-rtsp --bench throughput`. Settings by environment:
//! `KPS_RTSP_BENCH_SECS` (10), `KPS_RTSP_BENCH_WIDTH` (1280), `KPS_RTSP_BENCH_HEIGHT` (720),
//! `KPS_RTSP_BENCH_FPS` (30), `KPS_RTSP_BENCH_KBPS` (40000).
//!
//! A live source sets the pace: frames/s and MB/s are the server's, so what matters is that
//! the connector keeps up with the raw client (ratio 1.0) and what it costs in CPU. Three
//! phases: the raw client alone, the connector alone (retina -> NATS, received back by a NATS
//! subscriber in this process), and both at once on the same shared media.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kps_connector_core::State;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, TestConnector, unique_name};
use kps_connector_rtsp::RtspConnector;
use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat};
use serde_json::json;
use support::{PrivateServer, ServerSpec};

#[derive(Debug, Clone, Copy, Default)]
struct Count {
    frames: u64,
    bytes: u64,
    secs: f64,
}

impl Count {
    fn fps(&self) -> f64 {
        self.frames as f64 / self.secs
    }

    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

fn env_or(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this process used so far (user + system, all threads), from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// A raw retina client: DESCRIBE/SETUP (TCP, Annex B with SPS/PPS, as the connector asks)/PLAY,
/// counting frames and bytes for `secs` after the first frame.
async fn raw_retina(url: &str, secs: Duration) -> Count {
    let url = url::Url::parse(url).expect("url");
    let mut session = Session::describe(url, SessionOptions::default())
        .await
        .expect("describe");
    let index = session
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .expect("a video stream");
    session
        .setup(
            index,
            SetupOptions::default().frame_format(FrameFormat::SIMPLE),
        )
        .await
        .expect("setup");
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .expect("play")
        .demuxed()
        .expect("demuxed");
    let mut count = Count::default();
    let mut started: Option<Instant> = None;
    while let Some(item) = demuxed.next().await {
        if let CodecItem::VideoFrame(frame) = item.expect("a frame") {
            let start = *started.get_or_insert_with(Instant::now);
            if start.elapsed() >= secs {
                count.secs = start.elapsed().as_secs_f64();
                break;
            }
            count.frames += 1;
            count.bytes += frame.into_data().len() as u64;
        }
    }
    count
}

/// The connector (in-process, core NATS) publishing the stream; a NATS subscriber counts the
/// records that arrive for `secs` after the first one.
async fn connector(url: &str, secs: Duration) -> Count {
    let mut connector = TestConnector::start(RtspConnector).await;
    let channel = unique_name("kps.rtsp.bench");
    let probe = NatsProbe::connect().await;
    let mut records = probe.subscribe(&channel).await;
    connector
        .apply(vec![StreamDecl::ingress(
            "bench",
            channel.as_str(),
            json!({"url": url}),
        )])
        .await
        .expect("stream accepted");
    connector
        .wait_for_state("bench", State::Healthy, Duration::from_secs(20))
        .await;
    let first = records.collect(1, Duration::from_secs(20)).await;
    assert!(!first.is_empty(), "the connector publishes");
    let start = Instant::now();
    let mut count = Count::default();
    while start.elapsed() < secs {
        let left = secs.saturating_sub(start.elapsed());
        for record in records.collect(64, left).await {
            count.frames += 1;
            count.bytes += record.len() as u64;
        }
    }
    count.secs = start.elapsed().as_secs_f64();
    connector.shutdown().await;
    count
}

fn report(what: &str, count: Count, cpu: Option<f64>) {
    let cpu = cpu
        .map(|c| {
            format!(
                "  cpu {:5.1}% ({:.2} ms/frame)",
                100.0 * c / count.secs,
                1000.0 * c / count.frames.max(1) as f64
            )
        })
        .unwrap_or_default();
    println!(
        "{what:<28} {:8.1} frames/s  {:7.2} MB/s  ({} frames, {:.1} MB in {:.1} s){cpu}",
        count.fps(),
        count.mbps(),
        count.frames,
        count.bytes as f64 / 1e6,
        count.secs
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a quick smoke test;
    // a test runner listing tests (`--list`, cargo-nextest) finds none here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(smoke));
}

async fn run(smoke: bool) {
    let secs = Duration::from_secs(if smoke {
        1
    } else {
        u64::from(env_or("KPS_RTSP_BENCH_SECS", 10))
    });
    let spec = ServerSpec {
        width: env_or("KPS_RTSP_BENCH_WIDTH", 1280),
        height: env_or("KPS_RTSP_BENCH_HEIGHT", 720),
        fps: env_or("KPS_RTSP_BENCH_FPS", 30),
        gop: env_or("KPS_RTSP_BENCH_FPS", 30),
        bitrate: env_or("KPS_RTSP_BENCH_KBPS", 40_000),
        pattern: "snow",
        ..ServerSpec::default()
    };
    println!(
        "rtsp throughput: {}x{} @ {} fps, gop {}, x264 {} kbit/s (noise), {} s per phase",
        spec.width,
        spec.height,
        spec.fps,
        spec.gop,
        spec.bitrate,
        secs.as_secs()
    );
    let server = PrivateServer::start(spec).await;
    let url = server.url();

    let cpu = cpu_secs();
    let raw = raw_retina(&url, secs).await;
    report("raw retina client", raw, Some(cpu_secs() - cpu));

    let cpu = cpu_secs();
    let conn = connector(&url, secs).await;
    report("connector -> NATS -> probe", conn, Some(cpu_secs() - cpu));

    let (raw_both, conn_both) = tokio::join!(raw_retina(&url, secs), connector(&url, secs));
    report("side by side: raw", raw_both, None);
    report("side by side: connector", conn_both, None);
    println!(
        "connector / raw: {:.3} frames/s, {:.3} MB/s (alone); {:.3} frames/s, {:.3} MB/s (side by side)",
        conn.fps() / raw.fps(),
        conn.mbps() / raw.mbps(),
        conn_both.fps() / raw_both.fps(),
        conn_both.mbps() / raw_both.mbps()
    );
}

//! RTSP: the connector beside a raw retina client, on a private high-bitrate GStreamer server.
//!
//! A live camera sets the pace: both clients get every frame the server sends, so the ratio
//! says whether the connector keeps up, and the CPU and memory columns what it costs. The
//! server streams incompressible noise (so x264 really produces the bitrate asked for); each
//! client reads it for the same time, one after the other. There is no fixed record size (a
//! record is a frame) and no latency row (frames carry no send time).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kps_connector_core::testkit::{NatsProbe, StreamDecl, unique_name};
use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions};
use retina::codec::{CodecItem, FrameFormat};
use serde_json::json;

use crate::measure::{Settings, apply, idle_memory, mb, start_connector};
use crate::report::{Part, Throughput, per_thousand};

/// The system Python, where python3-gi lives.
const PYTHON: &str = "/usr/bin/python3";

/// The stream: 1280x720 at 30 frames/s, 40 Mbit/s of noise, an IDR every second.
const WIDTH: u32 = 1280;
const HEIGHT: u32 = 720;
const FPS: u32 = 30;
const KBPS: u32 = 40_000;

/// Frames and bytes seen over some seconds.
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
}

/// The private server, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(script: &Path) -> Result<Self> {
        if !script.is_file() {
            bail!(
                "the RTSP test server script {} is missing",
                script.display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("a free port")?;
        let child = Command::new(PYTHON)
            .arg(script)
            .args(["--address", "127.0.0.1", "--path", "/test"])
            .args(["--port", &port.to_string()])
            .args(["--fps", &FPS.to_string(), "--gop", &FPS.to_string()])
            .args([
                "--width",
                &WIDTH.to_string(),
                "--height",
                &HEIGHT.to_string(),
            ])
            .args(["--bitrate", &KBPS.to_string(), "--pattern", "snow"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("cannot run {PYTHON} (install the server: cargo xtask services up rtsp)")
            })?;
        let mut server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!(
                    "the RTSP test server exited ({status}): cargo xtask services up rtsp installs its packages"
                );
            }
            if Instant::now() > deadline {
                bail!("the RTSP test server does not listen on {port}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/test", self.port)
    }
}

/// A raw retina client (TCP, Annex B with SPS/PPS, as the connector asks) counting frames and
/// bytes for `secs` after the first frame.
async fn raw_retina(url: &str, secs: Duration) -> Result<Count> {
    let url = url::Url::parse(url).context("the URL")?;
    let mut session = Session::describe(url, SessionOptions::default())
        .await
        .context("DESCRIBE")?;
    let index = session
        .streams()
        .iter()
        .position(|s| s.media() == "video")
        .context("no video stream")?;
    session
        .setup(
            index,
            SetupOptions::default().frame_format(FrameFormat::SIMPLE),
        )
        .await
        .context("SETUP")?;
    let mut demuxed = session
        .play(PlayOptions::default())
        .await
        .context("PLAY")?
        .demuxed()
        .context("demuxing")?;
    let mut count = Count::default();
    let mut started: Option<Instant> = None;
    let deadline = Instant::now() + secs + Duration::from_secs(20);
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline.into(), demuxed.next()).await {
        if let CodecItem::VideoFrame(frame) = item.context("a frame")? {
            let start = *started.get_or_insert_with(Instant::now);
            if start.elapsed() >= secs {
                count.secs = start.elapsed().as_secs_f64();
                break;
            }
            count.frames += 1;
            count.bytes += frame.into_data().len() as u64;
        }
    }
    if count.secs == 0.0 {
        bail!(
            "the raw retina client got {} frames, not {secs:?} of them",
            count.frames
        );
    }
    Ok(count)
}

/// Idle memory, then the raw client and the connector on the same live stream.
pub async fn run(binary: &Path, settings: &Settings, script: &Path) -> Result<Part> {
    let mut part = Part::default();
    part.notes.push(format!(
        "rtsp: a private GStreamer server streams {WIDTH}x{HEIGHT} at {FPS} frames/s, x264 at {KBPS} kbit/s of noise; the raw retina client and the connector each read it for {} s, one after the other; a live source sets the pace, so records/s is the camera's and the ratio says whether the connector keeps up.",
        settings.rtsp_secs
    ));
    match idle_memory(binary, "rtsp").await {
        Ok(memory) => part.memory.push(memory),
        Err(e) => part.failures.push(format!("rtsp idle memory: {e:#}")),
    }
    let server = Server::start(script).await?;
    let secs = Duration::from_secs(settings.rtsp_secs);
    println!("rtsp ingress, live {WIDTH}x{HEIGHT} {FPS} fps {KBPS} kbit/s for {secs:?}");
    let raw = raw_retina(&server.url(), secs).await?;

    let mut process = start_connector(binary, "rtsp").await;
    let probe = NatsProbe::connect().await;
    let subject = unique_name("kps.bench.rtsp");
    let mut records = probe.subscribe(&subject).await;
    apply(
        &mut process,
        &[StreamDecl::ingress(
            "bench",
            subject.as_str(),
            json!({"url": server.url()}),
        )],
    )
    .await?;
    if records.collect(1, Duration::from_secs(20)).await.is_empty() {
        bail!("the connector published no frame within 20 s");
    }
    let (cpu, switches) = (process.cpu_seconds(), process.context_switches());
    let start = Instant::now();
    let mut connector = Count::default();
    while start.elapsed() < secs {
        let left = secs.saturating_sub(start.elapsed());
        for record in records.collect(64, left).await {
            connector.frames += 1;
            connector.bytes += record.len() as u64;
        }
    }
    connector.secs = start.elapsed().as_secs_f64();
    let cpu = process.cpu_seconds() - cpu;
    let switches = process.context_switches().since(switches);
    let memory = process.memory();
    process.kill().await;

    let row = Throughput {
        connector: "rtsp".to_owned(),
        direction: "ingress".to_owned(),
        record_bytes: connector.bytes / connector.frames.max(1),
        records: connector.frames,
        records_per_s: connector.fps(),
        mb_per_s: mb(connector.bytes) / connector.secs,
        raw_client: "retina".to_owned(),
        raw_client_records_per_s: raw.fps(),
        raw_nats_records_per_s: None,
        ratio: connector.fps() / raw.fps(),
        cpu_s_per_million: cpu * 1e6 / connector.frames.max(1) as f64,
        wakeups_per_1k_records: per_thousand(switches.voluntary, connector.frames),
        preemptions_per_1k_records: per_thousand(switches.involuntary, connector.frames),
        peak_rss_mb: mb(memory.peak_rss),
        note: Some(format!(
            "live {WIDTH}x{HEIGHT} {FPS} frames/s: a record is a frame (average size in the record column); {:.1}% of a CPU, raw retina {:.2} MB/s, connector {:.2} MB/s",
            100.0 * cpu / connector.secs,
            mb(raw.bytes) / raw.secs,
            mb(connector.bytes) / connector.secs
        )),
    };
    println!("  {}", row.summary());
    part.throughput.push(row);
    Ok(part)
}

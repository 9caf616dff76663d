//! The throughput harness of every connector, run by `cargo xtask bench`.
//!
//! For each connector and direction it pushes a fixed number of records (100 B and 10 KB)
//! through the connector's release binary against the real broker, and in the same run through
//! the outside system's client library alone and through async-nats alone; then it measures
//! end-to-end latency at 1,000 records/s, the connector process's CPU seconds per million
//! records and its memory (idle, and 1,000 streams in one process). The results go to
//! `target/bench/throughput.md` and `target/bench/throughput.json`.
//!
//! ```text
//! throughput [--quick] [--only mqtt,amqp] [--bin-dir target/release] [--out target/bench]
//! ```
//!
//! Needs the services of `cargo xtask services up` (NATS, RabbitMQ, MariaDB, the Kafka broker,
//! the Mosquitto and GStreamer packages).

mod amqp;
mod kafka;
mod measure;
mod mqtt;
mod mysql;
mod report;
mod rtsp;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;

use measure::{Settings, Way, run_system};
use report::{Part, Report};

/// The connectors the harness knows, in the order it measures them.
const CONNECTORS: &[&str] = &["mqtt", "amqp", "mysql", "kafka", "rtsp"];

/// The command line.
#[derive(Debug, Parser)]
#[command(about = "Throughput, latency, CPU and memory of every connector beside its raw clients")]
struct Args {
    /// A smoke run: ten times fewer records, shorter latency and RTSP runs.
    #[arg(long)]
    quick: bool,
    /// Multiplies the record counts of the throughput runs (e.g. 10 for a run long enough to
    /// profile the connector process while it moves records).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    scale: u64,
    /// Only this direction (both by default).
    #[arg(long, value_enum)]
    way: Option<Way>,
    /// Only the throughput runs of this record size in bytes (100 or 10000; both by default).
    #[arg(long)]
    size: Option<usize>,
    /// Only these connectors, comma-separated (mqtt, amqp, mysql, kafka, rtsp).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The folder of the release connector binaries (`kps-connector-<name>`); default: the
    /// folder of this program.
    #[arg(long, env = "KPS_BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Where `throughput.md` and `throughput.json` are written.
    #[arg(long, env = "KPS_BENCH_OUT", default_value = "target/bench")]
    out: PathBuf,
    /// The RTSP test server script (GStreamer), for the private high-bitrate camera.
    #[arg(
        long,
        env = "KPS_BENCH_RTSP_SCRIPT",
        default_value = "crates/kps-connector-rtsp/testserver/rtsp_server.py"
    )]
    rtsp_script: PathBuf,
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if let Some(unknown) = args.only.iter().find(|n| !CONNECTORS.contains(&n.as_str())) {
        bail!(
            "unknown connector `{unknown}` in --only: the connectors are {}",
            CONNECTORS.join(", ")
        );
    }
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("cannot find this program's path")?
            .parent()
            .map(Path::to_path_buf)
            .context("this program has no folder")?,
    };
    let mut settings = Settings::new(args.quick, args.scale);
    if let Some(way) = args.way {
        settings.ways = vec![way];
    }
    if let Some(size) = args.size {
        settings.sizes.retain(|(s, _)| *s == size);
        if settings.sizes.is_empty() {
            bail!("--size {size}: the record sizes are 100 and 10000");
        }
    }
    let mut report = Report::new(&settings);
    let started = Instant::now();
    // What a wake-up costs on this machine, for reading the CPU figures.
    let trips = measure::nats_round_trips(if settings.quick { 500 } else { 5_000 }).await;
    println!(
        "NATS round trip: {:.0} µs median, {:.0} µs of CPU each",
        trips.p50_us, trips.cpu_us
    );
    report.machine.nats_round_trip = Some(trips);
    for &name in CONNECTORS {
        if !args.only.is_empty() && !args.only.iter().any(|n| n == name) {
            continue;
        }
        let binary = bin_dir.join(format!("kps-connector-{name}"));
        if !binary.is_file() {
            report.failures.push(format!(
                "{name}: {} is missing (cargo build --release -p kps-connector-{name})",
                binary.display()
            ));
            continue;
        }
        println!("== {name}");
        let (settings, script) = (settings.clone(), args.rtsp_script.clone());
        // Its own task: a panic (a testkit assertion) fails this connector, not the run.
        let task =
            tokio::spawn(async move { measure_one(name, &binary, &settings, &script).await });
        match task.await {
            Ok(Ok(part)) => report.add(part),
            Ok(Err(e)) => report.failures.push(format!("{name}: {e:#}")),
            Err(e) => report.failures.push(format!(
                "{name}: the measurement panicked: {}",
                panic_text(e)
            )),
        }
    }
    report.finish(started.elapsed().as_secs_f64());
    report.write(&args.out)?;
    println!("\n{}", report.markdown());
    println!(
        "results: {} and {}",
        args.out.join("throughput.md").display(),
        args.out.join("throughput.json").display()
    );
    if report.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &report.failures {
        eprintln!("failed: {failure}");
    }
    eprintln!("{} measurement(s) failed", report.failures.len());
    Ok(ExitCode::FAILURE)
}

/// Every measurement of connector `name`.
async fn measure_one(
    name: &'static str,
    binary: &Path,
    settings: &Settings,
    rtsp_script: &Path,
) -> Result<Part> {
    let both = &settings.ways;
    Ok(match name {
        "mqtt" => {
            let system = Arc::new(mqtt::Mqtt::start().await?);
            let mut part = run_system(system.clone(), binary, settings, both).await;
            println!("mqtt: {} streams in one process", settings.many_streams);
            match system.many_streams(binary, settings.many_streams).await {
                Ok(memory) => {
                    println!(
                        "  RSS {:.1} MB, peak {:.1} MB",
                        memory.rss_mb, memory.peak_rss_mb
                    );
                    part.memory.push(memory);
                }
                Err(e) => part.failures.push(format!("mqtt many streams: {e:#}")),
            }
            part
        }
        "amqp" => {
            run_system(
                Arc::new(amqp::Amqp::connect().await?),
                binary,
                settings,
                both,
            )
            .await
        }
        "mysql" => {
            run_system(
                Arc::new(mysql::Mysql::connect().await?),
                binary,
                settings,
                both,
            )
            .await
        }
        "kafka" => {
            run_system(
                Arc::new(kafka::Kafka::connect().await?),
                binary,
                settings,
                both,
            )
            .await
        }
        "rtsp" => rtsp::run(binary, settings, rtsp_script).await?,
        other => bail!("no measurements for `{other}`"),
    })
}

/// The message of a panicked task.
fn panic_text(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "no message".to_owned()),
        Err(error) => error.to_string(),
    }
}

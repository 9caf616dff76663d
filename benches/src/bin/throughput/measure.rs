//! The measuring every connector shares: records that carry their send time, observers of
//! arrivals, rate runs, latency runs, the connector process's CPU and memory, and the raw
//! async-nats baseline.
//!
//! A connector module describes its outside system with [`System`], [`IngressEnd`] and
//! [`EgressEnd`]; [`run_system`] does the rest, the same way for every connector.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use kps_connector_core::testkit::{
    ConnectorProcess, NatsProbe, RecordStream, StreamDecl, proc_stat_cpu_seconds, unique_name,
};
use kps_connector_core::transport::wire::now_nanos;
use kps_connector_core::{State, async_trait};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::report::{Latency, Memory, Part, ProcessFigures, Rates, RoundTrips, Throughput};

/// Bytes of the stamp at the head of every record: its send time in nanoseconds since the
/// epoch, as 16 hex digits (text, so that it also fits a table column or a JSON string).
pub const STAMP_BYTES: usize = 16;

/// How long an observer waits for the next record before the run fails.
const IDLE: Duration = Duration::from_secs(60);

/// How long one call of [`Observer::next`] waits.
const POLL: Duration = Duration::from_secs(1);

/// Records per NATS message when the raw async-nats baseline plays the connector's ingress side
/// (`--max-batch-records` default: the connector packs what is waiting, up to 256).
const INGRESS_RECORDS_PER_MESSAGE: usize = 256;

/// The connector's default `--max-batch-bytes`: a TransportMessage stays under NATS's 1 MiB.
const MAX_BATCH_BYTES: usize = 921_600;

/// The size of the records of the latency runs.
pub const LATENCY_RECORD_BYTES: usize = 100;

/// The rate of the latency runs, records per second.
pub const LATENCY_RATE: u32 = 1_000;

/// What a run measures: record counts and durations.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A smoke run: ten times fewer records, shorter latency runs.
    pub quick: bool,
    /// The record sizes of the throughput runs and how many records each moves.
    pub sizes: Vec<(usize, u64)>,
    /// Seconds of each latency run.
    pub latency_secs: u64,
    /// Seconds of each RTSP run (a live source sets the pace).
    pub rtsp_secs: u64,
    /// Streams of the "many streams in one process" run.
    pub many_streams: usize,
    /// The directions measured.
    pub ways: Vec<Way>,
}

impl Settings {
    /// The full run, or the quick one, with the throughput runs' record counts times `scale`.
    pub fn new(quick: bool, scale: u64) -> Self {
        let divide = if quick { 10 } else { 1 };
        Self {
            quick,
            sizes: vec![
                (100, 100_000 * scale / divide),
                (10_000, 10_000 * scale / divide),
            ],
            latency_secs: if quick { 2 } else { 5 },
            rtsp_secs: if quick { 3 } else { 10 },
            many_streams: 1_000,
            ways: vec![Way::Ingress, Way::Egress],
        }
    }
}

/// A record of `size` bytes: the stamp, the sequence number (8 hex digits), then `x` up to
/// the size. Shorter sizes cut the sequence number; the stamp always fits (`size` >= 16).
pub fn record(stamp: i64, seq: u64, size: usize) -> Bytes {
    let stamp = u64::try_from(stamp).unwrap_or_default();
    let mut bytes = format!("{stamp:016x}{:08x}", seq & 0xffff_ffff).into_bytes();
    bytes.resize(size.max(STAMP_BYTES), b'x');
    Bytes::from(bytes)
}

/// `n` records of `size` bytes stamped now.
pub fn records(n: u64, size: usize) -> Vec<Bytes> {
    let now = now_nanos();
    (0..n).map(|seq| record(now, seq, size)).collect()
}

/// The send time of a record made by [`record`] (or of text that starts like one).
pub fn stamp(record: &[u8]) -> Option<i64> {
    let head = std::str::from_utf8(record.get(..STAMP_BYTES)?).ok()?;
    u64::from_str_radix(head, 16)
        .ok()
        .and_then(|v| i64::try_from(v).ok())
}

/// Records that arrived since the previous call of [`Observer::next`].
#[derive(Debug, Default)]
pub struct Arrived {
    /// How many.
    pub count: u64,
    /// The end-to-end latency of each, in nanoseconds, when the observer was asked for them.
    pub latencies: Vec<i64>,
}

impl Arrived {
    /// `records` received now, with their latencies when `latency` is set.
    pub fn of(records: &[Bytes], latency: bool, stamp_of: fn(&[u8]) -> Option<i64>) -> Self {
        let latencies = if latency {
            let now = now_nanos();
            records
                .iter()
                .filter_map(|r| stamp_of(r))
                .map(|s| now - s)
                .collect()
        } else {
            Vec::new()
        };
        Self {
            count: records.len() as u64,
            latencies,
        }
    }
}

/// Watches records arrive at the end of a path (a NATS subject, a queue, a topic, a table).
#[async_trait]
pub trait Observer: Send {
    /// Waits up to `timeout` for records; returns those that arrived (none after the timeout).
    async fn next(&mut self, timeout: Duration) -> Result<Arrived>;
    /// Closes what the observer opened (called once the run is over).
    async fn close(self: Box<Self>) {}
}

/// Records arriving on a NATS subject.
pub struct NatsObserver {
    stream: RecordStream,
    latency: bool,
    stamp_of: fn(&[u8]) -> Option<i64>,
}

impl NatsObserver {
    /// Subscribes to `subject`; `stamp_of` reads a record's send time (latency runs).
    pub async fn subscribe(
        probe: &NatsProbe,
        subject: &str,
        latency: bool,
        stamp_of: fn(&[u8]) -> Option<i64>,
    ) -> Self {
        Self {
            stream: probe.subscribe(subject).await,
            latency,
            stamp_of,
        }
    }
}

#[async_trait]
impl Observer for NatsObserver {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let records = self.stream.collect(1, timeout).await;
        Ok(Arrived::of(&records, self.latency, self.stamp_of))
    }
}

/// What an observer saw during a run.
#[derive(Debug)]
pub struct Observed {
    /// Records seen.
    pub count: u64,
    /// When the observer started.
    pub started: Instant,
    /// When the first tenth of the records had arrived, and how many had then.
    pub tenth: Option<(Instant, u64)>,
    /// When the last arrived.
    pub last: Option<Instant>,
    /// Latencies in nanoseconds (latency runs).
    pub latencies: Vec<i64>,
}

impl Observed {
    fn new() -> Self {
        Self {
            count: 0,
            started: Instant::now(),
            tenth: None,
            last: None,
            latencies: Vec::new(),
        }
    }

    /// The steady rate, records per second over the last nine tenths: from the arrival that
    /// completed the first tenth to the last arrival (stream start-up, consumer group joins and
    /// a first large batch left out). When nearly everything came at once, from the observer's
    /// start instead.
    pub fn rate(&self) -> f64 {
        match (self.tenth, self.last) {
            (Some((tenth, then)), Some(last)) if last > tenth && self.count > then => {
                (self.count - then) as f64 / (last - tenth).as_secs_f64()
            }
            (_, Some(last)) if last > self.started => {
                self.count as f64 / (last - self.started).as_secs_f64()
            }
            _ => f64::NAN,
        }
    }

    /// Records per second from `start` (the first write) to the last arrival.
    pub fn rate_from(&self, start: Instant) -> f64 {
        match self.last {
            Some(last) if last > start => self.count as f64 / (last - start).as_secs_f64(),
            _ => f64::NAN,
        }
    }
}

/// An observer running in its own task until `n` records arrived; the counter shows progress.
pub struct Watch {
    /// Records seen so far.
    pub progress: Arc<AtomicU64>,
    task: JoinHandle<Result<Observed>>,
}

impl Watch {
    /// Starts watching for `n` records; `what` names the path in errors.
    pub fn start(mut observer: Box<dyn Observer>, n: u64, what: String) -> Self {
        let progress = Arc::new(AtomicU64::new(0));
        let shared = progress.clone();
        let task = tokio::spawn(async move {
            let observed = watch(observer.as_mut(), n, &what, &shared).await;
            observer.close().await;
            observed
        });
        Self { progress, task }
    }

    /// Waits for the end of the run.
    pub async fn finish(self) -> Result<Observed> {
        self.task.await.context("the observer task panicked")?
    }
}

/// Feeds `observer`'s arrivals into an [`Observed`] until `n` records arrived.
async fn watch(
    observer: &mut dyn Observer,
    n: u64,
    what: &str,
    progress: &AtomicU64,
) -> Result<Observed> {
    let mut observed = Observed::new();
    let mut active = observed.started;
    while observed.count < n {
        let arrived = observer.next(POLL).await?;
        let now = Instant::now();
        if arrived.count == 0 {
            if now - active > IDLE {
                bail!(
                    "{what}: {} of {n} records arrived, then none for {IDLE:?}",
                    observed.count
                );
            }
            continue;
        }
        active = now;
        observed.last = Some(now);
        observed.count += arrived.count;
        if observed.tenth.is_none() && observed.count * 10 >= n {
            observed.tenth = Some((now, observed.count));
        }
        observed.latencies.extend(arrived.latencies);
        progress.store(observed.count, Ordering::Relaxed);
    }
    Ok(observed)
}

/// The ingress side of a connector's outside system: where records are written for the
/// connector (or a raw client) to read.
#[async_trait]
pub trait IngressEnd: Send {
    /// The ingress stream's metadata.
    fn metadata(&self) -> Value;
    /// Whether the outside system keeps records until they are read (a queue, a topic, a
    /// table): they are then written before the reader starts, and the run measures reading.
    /// Otherwise (MQTT) they are written while the reader runs.
    fn stored(&self) -> bool;
    /// Writes `records` as the system's producers do, returning once it accepted them all.
    async fn write(&mut self, records: &[Bytes]) -> Result<()>;
    /// Writes `records` without waiting for a confirmation where one can be skipped (the paced
    /// sender of the latency runs).
    async fn send(&mut self, records: &[Bytes]) -> Result<()> {
        self.write(records).await
    }
    /// The raw client library reading the records: the baseline.
    async fn raw_reader(&mut self, latency: bool) -> Result<Box<dyn Observer>>;
    /// Removes what the end created.
    async fn cleanup(self: Box<Self>);
}

/// The egress side of a connector's outside system: where the connector (or a raw client)
/// writes, and how arrivals there are seen.
#[async_trait]
pub trait EgressEnd: Send {
    /// The egress stream's metadata.
    fn metadata(&self) -> Value;
    /// Watches records arrive in the outside system (counting them, or reading their send time
    /// when `latency`).
    async fn observer(&mut self, latency: bool) -> Result<Box<dyn Observer>>;
    /// The raw client library writing `records`, with the confirmations the connector waits
    /// for: the baseline.
    async fn raw_write(&mut self, records: &[Bytes]) -> Result<()>;
    /// The raw client writing `records` without waiting for confirmations where they can be
    /// skipped (the paced sender of the latency runs).
    async fn raw_send(&mut self, records: &[Bytes]) -> Result<()> {
        self.raw_write(records).await
    }
    /// Removes what the end created.
    async fn cleanup(self: Box<Self>);
}

/// A connector's outside system as the harness drives it.
#[async_trait]
pub trait System: Send + Sync {
    /// The connector's name (`mqtt`): its binary is `kps-connector-<name>`.
    fn name(&self) -> &'static str;
    /// The raw client library of the baseline (`rumqttc`).
    fn client(&self) -> &'static str;
    /// A fresh ingress end (queue, topic, table) for records of `size` bytes.
    async fn ingress(&self, size: usize) -> Result<Box<dyn IngressEnd>>;
    /// A fresh egress end for records of `size` bytes.
    async fn egress(&self, size: usize) -> Result<Box<dyn EgressEnd>>;
    /// How the send time is read back from a record the connector published on NATS.
    fn ingress_stamp(&self) -> fn(&[u8]) -> Option<i64> {
        stamp
    }
    /// What the platform publishes on NATS for the connector to write out, for `record`.
    fn egress_record(&self, record: &Bytes) -> Bytes {
        record.clone()
    }
    /// The ingress stream's metadata for the latency runs (default: `metadata` unchanged).
    fn latency_metadata(&self, metadata: Value) -> Value {
        metadata
    }
    /// Records per tick of the paced sender (a tick every `batch` ms keeps 1,000 records/s).
    fn latency_batch(&self) -> usize {
        1
    }
    /// Notes on how the paths are set up, for the report.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Ingress or egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Way {
    /// Outside system to NATS.
    Ingress,
    /// NATS to outside system.
    Egress,
}

impl Way {
    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Ingress => "ingress",
            Way::Egress => "egress",
        }
    }
}

/// Starts the connector binary with no streams and waits until its gRPC port answers.
pub async fn start_connector(binary: &Path, name: &str) -> ConnectorProcess {
    let mut process =
        ConnectorProcess::builder(binary, unique_name(&format!("bench-{name}"))).start();
    process.client().await;
    process
}

/// Declares `streams` and waits until each is HEALTHY; fails with the events and the log.
pub async fn apply(process: &mut ConnectorProcess, streams: &[StreamDecl]) -> Result<()> {
    process
        .set_streams(streams)
        .await
        .map_err(|status| anyhow::anyhow!("SetPayload refused: {status}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let events = process.events().await;
        let healthy = events
            .iter()
            .filter(|e| e.kind == "status" && e.state == State::Healthy)
            .filter(|e| streams.iter().any(|s| s.id == e.stream_id))
            .count();
        if healthy >= streams.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let unhealthy: Vec<_> = events
                .iter()
                .filter(|e| e.state != State::Healthy)
                .take(5)
                .collect();
            bail!(
                "{healthy} of {} streams HEALTHY after 120 s; for instance {unhealthy:#?}\nlog:\n{}",
                streams.len(),
                tail(&process.logs(), 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// How many records may be on their way through core NATS at once: a subscriber that falls
/// further behind loses messages (the client's 65,536-message buffer, the server's 64 MB
/// pending limit).
fn nats_window(size: usize) -> u64 {
    ((8 << 20) / size.max(1) as u64).clamp(100, 20_000)
}

/// Publishes `records` on `subject`, `per_message` per TransportMessage, keeping at most a
/// window of them ahead of what arrived at the far end (`arrived`).
pub async fn publish_paced(
    probe: &NatsProbe,
    subject: &str,
    records: &[Bytes],
    per_message: usize,
    arrived: &AtomicU64,
) -> Result<()> {
    let size = records.first().map_or(1, Bytes::len);
    let window = nats_window(size);
    let chunk = usize::try_from(window / 4)
        .unwrap_or(1)
        .max(per_message)
        .max(1);
    let mut sent = 0u64;
    for part in records.chunks(chunk) {
        let mut seen = arrived.load(Ordering::Relaxed);
        let mut moved = Instant::now();
        while sent.saturating_sub(seen) > window {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = arrived.load(Ordering::Relaxed);
            if now != seen {
                seen = now;
                moved = Instant::now();
            } else if moved.elapsed() > IDLE {
                bail!("publishing to {subject}: {seen} of {sent} records arrived, then none");
            }
        }
        probe.publish_records(subject, part, per_message).await;
        sent += part.len() as u64;
    }
    Ok(())
}

/// The raw async-nats baseline: `n` records of `size` bytes published on a subject and
/// received by a subscriber on the same server, `per_message` records per TransportMessage.
pub async fn nats_baseline(size: usize, n: u64, per_message: usize) -> Result<f64> {
    // As the connector's batcher: at most `--max-batch-bytes` (default 921,600) per message.
    let per_message = per_message.min((MAX_BATCH_BYTES / size.max(1)).max(1));
    let probe = NatsProbe::connect().await;
    let subject = unique_name("kps.bench.raw");
    let observer = NatsObserver::subscribe(&probe, &subject, false, stamp).await;
    let watch = Watch::start(Box::new(observer), n, format!("raw async-nats {subject}"));
    publish_paced(
        &probe,
        &subject,
        &records(n, size),
        per_message,
        &watch.progress,
    )
    .await?;
    Ok(watch.finish().await?.rate())
}

/// `n` sequential round trips to the NATS server (requests nobody serves, as the connectors'
/// confirmations): the median wall time and this process's CPU per round trip.
pub async fn nats_round_trips(n: u32) -> RoundTrips {
    let probe = NatsProbe::connect().await;
    probe.round_trip().await;
    let pid = std::process::id();
    let cpu = proc_stat_cpu_seconds(pid).unwrap_or(f64::NAN);
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let start = Instant::now();
        probe.round_trip().await;
        times.push(start.elapsed());
    }
    let cpu = proc_stat_cpu_seconds(pid).unwrap_or(f64::NAN) - cpu;
    times.sort_unstable();
    RoundTrips {
        p50_us: times
            .get(times.len() / 2)
            .map_or(f64::NAN, |t| t.as_secs_f64() * 1e6),
        cpu_us: cpu * 1e6 / f64::from(n.max(1)),
    }
}

/// Where the paced sender of a latency run writes.
pub enum Paced<'a> {
    /// Into the outside system, as its producers do (ingress).
    Outside(&'a mut dyn IngressEnd),
    /// The raw client of an egress end.
    RawEgress(&'a mut dyn EgressEnd),
    /// Onto a NATS subject, one record per message, as the platform publishes (egress).
    Nats {
        /// The client.
        probe: &'a NatsProbe,
        /// The subject.
        subject: &'a str,
        /// The system, to shape the records.
        system: &'a dyn System,
    },
}

/// Sends `records` to `to`.
async fn send_to(to: &mut Paced<'_>, records: &[Bytes]) -> Result<()> {
    match to {
        Paced::Outside(end) => end.send(records).await,
        Paced::RawEgress(end) => end.raw_send(records).await,
        Paced::Nats {
            probe,
            subject,
            system,
        } => {
            let shaped: Vec<Bytes> = records.iter().map(|r| system.egress_record(r)).collect();
            probe.publish_records(subject, &shaped, 1).await;
            Ok(())
        }
    }
}

/// Sends `batch` records and waits until `observer` saw them: the path is then running
/// (connected, subscribed, its consumer group joined) when the latency run starts.
async fn warm_up(to: &mut Paced<'_>, observer: &mut dyn Observer, batch: usize) -> Result<()> {
    let records: Vec<Bytes> = (0..batch.max(1) as u64)
        .map(|seq| record(now_nanos(), seq, LATENCY_RECORD_BYTES))
        .collect();
    send_to(to, &records).await?;
    let deadline = Instant::now() + IDLE;
    let mut seen = 0;
    while seen < records.len() as u64 {
        if Instant::now() > deadline {
            bail!("the warm-up records did not come through within {IDLE:?}");
        }
        seen += observer.next(POLL).await?.count;
    }
    Ok(())
}

/// After a warm-up, sends `total` records of [`LATENCY_RECORD_BYTES`], `batch` every `batch` ms
/// (1,000 records/s), each stamped when its tick comes, while `observer` measures their latency.
async fn send_paced(
    mut to: Paced<'_>,
    mut observer: Box<dyn Observer>,
    total: u64,
    batch: usize,
    what: String,
) -> Result<Observed> {
    let batch = batch.max(1);
    warm_up(&mut to, observer.as_mut(), batch).await?;
    let watch = Watch::start(observer, total, what);
    let period = Duration::from_secs_f64(batch as f64 / f64::from(LATENCY_RATE));
    let mut tick = tokio::time::interval(period);
    let mut seq = 0u64;
    while seq < total {
        tick.tick().await;
        let now = now_nanos();
        let records: Vec<Bytes> = (0..batch as u64)
            .map(|k| record(now, seq + k, LATENCY_RECORD_BYTES))
            .collect();
        send_to(&mut to, &records).await?;
        seq += records.len() as u64;
    }
    watch.finish().await
}

/// The `p`th percentile (0 to 1, nearest rank) of latencies in nanoseconds, in milliseconds.
pub fn percentile_ms(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

/// Bytes to MB (10^6).
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Every measurement of one connector: idle memory, throughput both ways at each size,
/// latency both ways. A failing measurement is reported and the others still run.
pub async fn run_system(
    system: Arc<dyn System>,
    binary: &Path,
    settings: &Settings,
    ways: &[Way],
) -> Part {
    let name = system.name();
    let mut part = Part::default();
    part.notes.extend(system.notes());
    match idle_memory(binary, name).await {
        Ok(memory) => part.memory.push(memory),
        Err(e) => part.failures.push(format!("{name} idle memory: {e:#}")),
    }
    for &way in ways {
        for &(size, n) in &settings.sizes {
            println!("{name} {} {size} B x {n}", way.as_str());
            let row = match way {
                Way::Ingress => ingress_throughput(system.as_ref(), binary, size, n).await,
                Way::Egress => egress_throughput(system.as_ref(), binary, size, n).await,
            };
            match row {
                Ok(row) => {
                    println!("  {}", row.summary());
                    part.throughput.push(row);
                }
                Err(e) => part
                    .failures
                    .push(format!("{name} {} {size} B: {e:#}", way.as_str())),
            }
        }
        println!("{name} {} latency", way.as_str());
        match latency(system.as_ref(), binary, way, settings).await {
            Ok(row) => {
                println!("  {}", row.summary());
                part.latency.push(row);
            }
            Err(e) => part
                .failures
                .push(format!("{name} {} latency: {e:#}", way.as_str())),
        }
    }
    part
}

/// The connector's RSS one second after it started, with no streams.
pub async fn idle_memory(binary: &Path, name: &str) -> Result<Memory> {
    let process = start_connector(binary, name).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = process.memory();
    process.kill().await;
    Ok(Memory {
        connector: name.to_owned(),
        what: "idle: started, no streams".to_owned(),
        rss_mb: mb(memory.rss),
        peak_rss_mb: mb(memory.peak_rss),
    })
}

/// Outside system -> NATS: the raw client alone, async-nats alone, then the connector.
async fn ingress_throughput(
    system: &dyn System,
    binary: &Path,
    size: usize,
    n: u64,
) -> Result<Throughput> {
    let name = system.name();
    // The raw client library reading what was written.
    let mut end = system.ingress(size).await?;
    let data = records(n, size);
    if end.stored() {
        end.write(&data).await?;
    }
    let reader = end.raw_reader(false).await?;
    let watch = Watch::start(reader, n, format!("raw {} reader", system.client()));
    if !end.stored() {
        end.write(&data).await?;
    }
    let raw_client = watch.finish().await?.rate();
    end.cleanup().await;

    let raw_nats = nats_baseline(size, n, INGRESS_RECORDS_PER_MESSAGE).await?;

    // The connector: written (before or during), read by the connector, received from NATS.
    let mut process = start_connector(binary, name).await;
    let mut end = system.ingress(size).await?;
    if end.stored() {
        end.write(&data).await?;
    }
    let probe = NatsProbe::connect().await;
    let subject = unique_name("kps.bench.in");
    let observer = NatsObserver::subscribe(&probe, &subject, false, system.ingress_stamp()).await;
    let (cpu, switches) = (process.cpu_seconds(), process.context_switches());
    let watch = Watch::start(
        Box::new(observer),
        n,
        format!("{name} connector -> NATS {subject}"),
    );
    apply(
        &mut process,
        &[StreamDecl::ingress(
            "bench-in",
            subject.as_str(),
            end.metadata(),
        )],
    )
    .await?;
    if !end.stored() {
        end.write(&data).await?;
    }
    let observed = watch.finish().await?;
    let figures = ProcessFigures {
        cpu_seconds: process.cpu_seconds() - cpu,
        peak_rss: process.memory().peak_rss,
        switches: process.context_switches().since(switches),
    };
    process.kill().await;
    end.cleanup().await;
    let rates = Rates {
        connector: observed.rate(),
        raw_client,
        raw_nats: Some(raw_nats),
    };
    Ok(Throughput::new(
        system,
        Way::Ingress,
        size,
        n,
        rates,
        figures,
    ))
}

/// NATS -> outside system: the raw client alone, async-nats alone, then the connector.
async fn egress_throughput(
    system: &dyn System,
    binary: &Path,
    size: usize,
    n: u64,
) -> Result<Throughput> {
    let name = system.name();
    let data = records(n, size);
    // The raw client library writing, observed where the connector's writes are.
    let mut end = system.egress(size).await?;
    let observer = end.observer(false).await?;
    let watch = Watch::start(observer, n, format!("raw {} writer", system.client()));
    let start = Instant::now();
    end.raw_write(&data).await?;
    let raw_client = watch.finish().await?.rate_from(start);
    end.cleanup().await;

    // One record per message, as the platform publishes.
    let raw_nats = nats_baseline(size, n, 1).await?;

    let shaped: Vec<Bytes> = data.iter().map(|r| system.egress_record(r)).collect();
    drop(data);
    let mut process = start_connector(binary, name).await;
    let mut end = system.egress(size).await?;
    let subject = unique_name("kps.bench.out");
    apply(
        &mut process,
        &[StreamDecl::egress(
            "bench-out",
            subject.as_str(),
            end.metadata(),
        )],
    )
    .await?;
    let observer = end.observer(false).await?;
    let probe = NatsProbe::connect().await;
    let (cpu, switches) = (process.cpu_seconds(), process.context_switches());
    let watch = Watch::start(observer, n, format!("NATS {subject} -> {name} connector"));
    let start = Instant::now();
    publish_paced(&probe, &subject, &shaped, 1, &watch.progress).await?;
    let observed = watch.finish().await?;
    let figures = ProcessFigures {
        cpu_seconds: process.cpu_seconds() - cpu,
        peak_rss: process.memory().peak_rss,
        switches: process.context_switches().since(switches),
    };
    process.kill().await;
    end.cleanup().await;
    let rates = Rates {
        connector: observed.rate_from(start),
        raw_client,
        raw_nats: Some(raw_nats),
    };
    Ok(Throughput::new(
        system,
        Way::Egress,
        size,
        n,
        rates,
        figures,
    ))
}

/// End-to-end latency at 1,000 records/s: through the connector, then the raw client alone.
async fn latency(
    system: &dyn System,
    binary: &Path,
    way: Way,
    settings: &Settings,
) -> Result<Latency> {
    let total = u64::from(LATENCY_RATE) * settings.latency_secs;
    let connector = connector_latency(system, binary, way, total).await?;
    let raw = raw_latency(system, way, total).await?;
    Ok(Latency::new(
        system,
        way,
        connector.latencies,
        raw.latencies,
    ))
}

/// The connector's latency run: a fresh process, one stream, the paced sender.
async fn connector_latency(
    system: &dyn System,
    binary: &Path,
    way: Way,
    total: u64,
) -> Result<Observed> {
    let name = system.name();
    let batch = system.latency_batch();
    let mut process = start_connector(binary, name).await;
    let probe = NatsProbe::connect().await;
    let observed = match way {
        Way::Ingress => {
            let mut end = system.ingress(LATENCY_RECORD_BYTES).await?;
            let subject = unique_name("kps.bench.lat.in");
            let observer =
                NatsObserver::subscribe(&probe, &subject, true, system.ingress_stamp()).await;
            let metadata = system.latency_metadata(end.metadata());
            apply(
                &mut process,
                &[StreamDecl::ingress("bench-lat", subject.as_str(), metadata)],
            )
            .await?;
            let to = Paced::Outside(end.as_mut());
            let what = format!("{name} latency");
            let observed = send_paced(to, Box::new(observer), total, batch, what).await?;
            process.kill().await;
            end.cleanup().await;
            observed
        }
        Way::Egress => {
            let mut end = system.egress(LATENCY_RECORD_BYTES).await?;
            let subject = unique_name("kps.bench.lat.out");
            apply(
                &mut process,
                &[StreamDecl::egress(
                    "bench-lat",
                    subject.as_str(),
                    end.metadata(),
                )],
            )
            .await?;
            let observer = end.observer(true).await?;
            let to = Paced::Nats {
                probe: &probe,
                subject: &subject,
                system,
            };
            let what = format!("{name} latency");
            let observed = send_paced(to, observer, total, batch, what).await?;
            process.kill().await;
            end.cleanup().await;
            observed
        }
    };
    Ok(observed)
}

/// The raw client's latency run under the same load.
async fn raw_latency(system: &dyn System, way: Way, total: u64) -> Result<Observed> {
    let batch = system.latency_batch();
    let what = format!("raw {} latency", system.client());
    match way {
        Way::Ingress => {
            let mut end = system.ingress(LATENCY_RECORD_BYTES).await?;
            let reader = end.raw_reader(true).await?;
            let observed =
                send_paced(Paced::Outside(end.as_mut()), reader, total, batch, what).await?;
            end.cleanup().await;
            Ok(observed)
        }
        Way::Egress => {
            let mut end = system.egress(LATENCY_RECORD_BYTES).await?;
            let observer = end.observer(true).await?;
            let to = Paced::RawEgress(end.as_mut());
            let observed = send_paced(to, observer, total, batch, what).await?;
            end.cleanup().await;
            Ok(observed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_stamp_and_size() {
        let r = record(1_700_000_000_123_456_789, 7, 100);
        assert_eq!(r.len(), 100);
        assert_eq!(stamp(&r), Some(1_700_000_000_123_456_789));
        assert_eq!(&r[16..24], b"00000007");
        assert_eq!(record(5, 1, 10).len(), STAMP_BYTES);
        assert_eq!(stamp(b"not a stamp at all"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<i64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }

    #[test]
    fn rates_are_steady_rates_over_the_last_nine_tenths() {
        let start = Instant::now();
        let mut observed = Observed::new();
        observed.started = start;
        observed.count = 110;
        observed.tenth = Some((start + Duration::from_secs(5), 10));
        observed.last = Some(start + Duration::from_secs(7));
        assert!((observed.rate() - 50.0).abs() < 1e-9);
        // Everything at once: from the observer's start.
        observed.tenth = Some((start + Duration::from_secs(1), 110));
        observed.last = Some(start + Duration::from_secs(1));
        assert!((observed.rate() - 110.0).abs() < 1e-9);
        assert!(Observed::new().rate().is_nan());
    }
}

//! The results: rows of the throughput, latency and memory tables, the verdict on each target,
//! written as a markdown page and as JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use kps_connector_core::testkit::ContextSwitches;
use serde::Serialize;

use crate::measure::{
    LATENCY_RATE, LATENCY_RECORD_BYTES, Settings, System, Way, mb, percentile_ms,
};

/// The targets of the issue, checked against what was measured.
const TARGET_RATIO: f64 = 0.8;
const TARGET_P99_MS: f64 = 5.0;
const TARGET_IDLE_MB: f64 = 20.0;
const TARGET_MANY_STREAMS_MB: f64 = 200.0;
const TARGET_CPU_PER_MILLION: f64 = 2.0;
/// The connectors whose ingress p99 has a target.
const P99_CONNECTORS: &[&str] = &["mqtt", "amqp", "kafka"];

/// What the connector process used during one throughput run.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFigures {
    /// CPU seconds (user + system) of the run.
    pub cpu_seconds: f64,
    /// Its peak RSS (`VmHWM`) at the end of the run, bytes.
    pub peak_rss: u64,
    /// Its context switches during the run: wake-ups (voluntary) and preemptions (involuntary).
    pub switches: ContextSwitches,
}

/// The three rates of one throughput run, records per second.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Through the connector.
    pub connector: f64,
    /// The outside system's client library alone.
    pub raw_client: f64,
    /// async-nats alone (none for a live source, whose pace the source sets).
    pub raw_nats: Option<f64>,
}

/// One row of the throughput table.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// `mqtt`, ...
    pub connector: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// Bytes per record (RTSP: the average frame).
    pub record_bytes: u64,
    /// Records moved.
    pub records: u64,
    /// Through the connector, records/s.
    pub records_per_s: f64,
    /// Through the connector, MB/s (10^6 bytes) of record payload.
    pub mb_per_s: f64,
    /// The raw client library.
    pub raw_client: String,
    /// The raw client alone, records/s.
    pub raw_client_records_per_s: f64,
    /// async-nats alone, records/s.
    pub raw_nats_records_per_s: Option<f64>,
    /// Connector / raw, raw being the slower of the raw clients in the path.
    pub ratio: f64,
    /// CPU seconds of the connector process per million records.
    pub cpu_s_per_million: f64,
    /// Wake-ups of the connector process (voluntary context switches) per thousand records:
    /// how many records each trip through the scheduler carries, whatever the machine.
    pub wakeups_per_1k_records: f64,
    /// Times the connector process was preempted (involuntary context switches) per thousand
    /// records: how much it had to share its core with the brokers and the harness.
    pub preemptions_per_1k_records: f64,
    /// Peak RSS of the connector process (a fresh one per run), MB.
    pub peak_rss_mb: f64,
    /// How the row differs from the others, if it does.
    pub note: Option<String>,
}

impl Throughput {
    /// A row of `system`'s `way` with `n` records of `size` bytes.
    pub fn new(
        system: &dyn System,
        way: Way,
        size: usize,
        n: u64,
        rates: Rates,
        figures: ProcessFigures,
    ) -> Self {
        let raw = rates
            .raw_nats
            .map_or(rates.raw_client, |nats| nats.min(rates.raw_client));
        Self {
            connector: system.name().to_owned(),
            direction: way.as_str().to_owned(),
            record_bytes: size as u64,
            records: n,
            records_per_s: rates.connector,
            mb_per_s: rates.connector * size as f64 / 1e6,
            raw_client: system.client().to_owned(),
            raw_client_records_per_s: rates.raw_client,
            raw_nats_records_per_s: rates.raw_nats,
            ratio: rates.connector / raw,
            cpu_s_per_million: figures.cpu_seconds * 1e6 / n.max(1) as f64,
            wakeups_per_1k_records: per_thousand(figures.switches.voluntary, n),
            preemptions_per_1k_records: per_thousand(figures.switches.involuntary, n),
            peak_rss_mb: mb(figures.peak_rss),
            note: None,
        }
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        format!(
            "connector {} rec/s ({:.2} MB/s), raw {} {} rec/s, raw async-nats {} rec/s, ratio {:.2}, {:.2} CPU-s/1M, {:.0} wake-ups/1k, {:.0} preemptions/1k, peak RSS {:.1} MB",
            count(self.records_per_s),
            self.mb_per_s,
            self.raw_client,
            count(self.raw_client_records_per_s),
            self.raw_nats_records_per_s.map_or("n/a".to_owned(), count),
            self.ratio,
            self.cpu_s_per_million,
            self.wakeups_per_1k_records,
            self.preemptions_per_1k_records,
            self.peak_rss_mb
        )
    }
}

/// One row of the latency table.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// `mqtt`, ...
    pub connector: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// Records per second sent.
    pub rate: u32,
    /// Latencies measured through the connector.
    pub samples: usize,
    /// Through the connector, ms.
    pub p50_ms: f64,
    /// Through the connector, ms.
    pub p99_ms: f64,
    /// The raw client library.
    pub raw_client: String,
    /// Latencies measured with the raw client alone.
    pub raw_samples: usize,
    /// The raw client alone, ms.
    pub raw_p50_ms: f64,
    /// The raw client alone, ms.
    pub raw_p99_ms: f64,
}

impl Latency {
    /// A row from the latencies (nanoseconds) through the connector and through the raw client.
    pub fn new(system: &dyn System, way: Way, mut connector: Vec<i64>, mut raw: Vec<i64>) -> Self {
        connector.sort_unstable();
        raw.sort_unstable();
        Self {
            connector: system.name().to_owned(),
            direction: way.as_str().to_owned(),
            rate: LATENCY_RATE,
            samples: connector.len(),
            p50_ms: percentile_ms(&connector, 0.50),
            p99_ms: percentile_ms(&connector, 0.99),
            raw_client: system.client().to_owned(),
            raw_samples: raw.len(),
            raw_p50_ms: percentile_ms(&raw, 0.50),
            raw_p99_ms: percentile_ms(&raw, 0.99),
        }
    }

    /// One line for the progress output.
    pub fn summary(&self) -> String {
        format!(
            "connector p50 {:.2} ms p99 {:.2} ms ({} samples); raw {} p50 {:.2} ms p99 {:.2} ms",
            self.p50_ms,
            self.p99_ms,
            self.samples,
            self.raw_client,
            self.raw_p50_ms,
            self.raw_p99_ms
        )
    }
}

/// One row of the memory table.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// `mqtt`, ...
    pub connector: String,
    /// What the process was doing.
    pub what: String,
    /// RSS when measured, MB.
    pub rss_mb: f64,
    /// Peak RSS until then, MB.
    pub peak_rss_mb: f64,
}

/// What one connector's measurements produced.
#[derive(Debug, Default)]
pub struct Part {
    /// Throughput rows.
    pub throughput: Vec<Throughput>,
    /// Latency rows.
    pub latency: Vec<Latency>,
    /// Memory rows.
    pub memory: Vec<Memory>,
    /// Measurements that failed, with the reason.
    pub failures: Vec<String>,
    /// How the paths were set up.
    pub notes: Vec<String>,
}

/// The verdict on one target.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The target.
    pub target: String,
    /// `met`, `missed` or `not measured`.
    pub verdict: String,
    /// The figures behind it.
    pub detail: String,
}

/// The machine during the run.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available.
    pub cpus: usize,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started.
    pub load_at_start: String,
    /// `/proc/loadavg` when it ended.
    pub load_at_end: String,
    /// What a wake-up costs here: sequential server round trips (a request nobody serves, as
    /// the connectors' core NATS confirmations) from this process to the NATS server.
    pub nats_round_trip: Option<RoundTrips>,
}

/// Sequential round trips to the NATS server, measured once per run: machines differ most in
/// what waking a process costs, and every record path pays it per batch.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RoundTrips {
    /// Median wall time of one, microseconds.
    pub p50_us: f64,
    /// CPU (user + system) this process spent per round trip, microseconds.
    pub cpu_us: f64,
}

/// Everything the run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started (UTC).
    pub started_at: String,
    /// Seconds the run took.
    pub seconds: f64,
    /// A quick (smoke) run.
    pub quick: bool,
    /// (record bytes, records) of the throughput runs.
    pub sizes: Vec<(usize, u64)>,
    /// Seconds of each latency run.
    pub latency_secs: u64,
    /// The machine.
    pub machine: Machine,
    /// Throughput rows.
    pub throughput: Vec<Throughput>,
    /// Latency rows.
    pub latency: Vec<Latency>,
    /// Memory rows.
    pub memory: Vec<Memory>,
    /// The verdict on each target.
    pub targets: Vec<Target>,
    /// Measurements that failed.
    pub failures: Vec<String>,
    /// How the paths were set up.
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report of a run with `settings`, started now.
    pub fn new(settings: &Settings) -> Self {
        Self {
            started_at: utc_now(),
            seconds: 0.0,
            quick: settings.quick,
            sizes: settings.sizes.clone(),
            latency_secs: settings.latency_secs,
            machine: Machine {
                cpus: std::thread::available_parallelism().map_or(0, usize::from),
                load_at_start: load_average(),
                load_at_end: String::new(),
                nats_round_trip: None,
            },
            throughput: Vec::new(),
            latency: Vec::new(),
            memory: Vec::new(),
            targets: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds one connector's rows.
    pub fn add(&mut self, part: Part) {
        self.throughput.extend(part.throughput);
        self.latency.extend(part.latency);
        self.memory.extend(part.memory);
        self.failures.extend(part.failures);
        self.notes.extend(part.notes);
    }

    /// Records the end of the run and judges the targets.
    pub fn finish(&mut self, seconds: f64) {
        self.seconds = seconds;
        self.machine.load_at_end = load_average();
        self.targets = self.judge();
    }

    fn judge(&self) -> Vec<Target> {
        let small: Vec<&Throughput> = self
            .throughput
            .iter()
            .filter(|row| row.record_bytes == 100)
            .collect();
        vec![
            verdict(
                format!("throughput >= {TARGET_RATIO} x raw for 100 B records"),
                small
                    .iter()
                    .map(|r| (path(r), r.ratio, r.ratio >= TARGET_RATIO))
                    .collect(),
                |v| format!("{v:.2}"),
            ),
            verdict(
                format!(
                    "p99 < {TARGET_P99_MS} ms at {} records/s, MQTT, AMQP and Kafka ingress",
                    thousands(u64::from(LATENCY_RATE))
                ),
                self.latency
                    .iter()
                    .filter(|r| {
                        r.direction == "ingress" && P99_CONNECTORS.contains(&r.connector.as_str())
                    })
                    .map(|r| (r.connector.clone(), r.p99_ms, r.p99_ms < TARGET_P99_MS))
                    .collect(),
                |v| format!("{v:.2} ms"),
            ),
            verdict(
                format!("idle connector < {TARGET_IDLE_MB} MB RSS"),
                self.memory
                    .iter()
                    .filter(|r| r.what.starts_with("idle"))
                    .map(|r| (r.connector.clone(), r.rss_mb, r.rss_mb < TARGET_IDLE_MB))
                    .collect(),
                |v| format!("{v:.1} MB"),
            ),
            verdict(
                format!(
                    "1,000 concurrent streams in one process < {TARGET_MANY_STREAMS_MB} MB RSS"
                ),
                self.memory
                    .iter()
                    .filter(|r| r.what.starts_with("1,000"))
                    .map(|r| {
                        (
                            r.connector.clone(),
                            r.peak_rss_mb,
                            r.peak_rss_mb < TARGET_MANY_STREAMS_MB,
                        )
                    })
                    .collect(),
                |v| format!("{v:.1} MB peak"),
            ),
            verdict(
                format!("<= {TARGET_CPU_PER_MILLION} CPU-s per million 100 B records"),
                small
                    .iter()
                    .map(|r| {
                        (
                            path(r),
                            r.cpu_s_per_million,
                            r.cpu_s_per_million <= TARGET_CPU_PER_MILLION,
                        )
                    })
                    .collect(),
                |v| format!("{v:.2}"),
            ),
        ]
    }

    /// Writes `throughput.md` and `throughput.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).context("the report as JSON")?;
        let json_path = dir.join("throughput.json");
        std::fs::write(&json_path, json + "\n")
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        let md_path = dir.join("throughput.md");
        std::fs::write(&md_path, self.markdown())
            .with_context(|| format!("cannot write {}", md_path.display()))?;
        Ok(())
    }

    /// The report as a markdown page.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let sizes: Vec<String> = self
            .sizes
            .iter()
            .map(|(size, n)| format!("{} x {}", thousands(*n), bytes(*size as u64)))
            .collect();
        let _ = writeln!(md, "# Connector throughput\n");
        let _ = writeln!(
            md,
            "{} run of `cargo xtask bench{}`, started {} and took {:.0} s; {} CPUs, load average {} at the start and {} at the end. Throughput runs move {}; latency runs send {} records/s of {} B for {} s.\n",
            if self.quick { "Quick" } else { "Full" },
            if self.quick { " --quick" } else { "" },
            self.started_at,
            self.seconds,
            self.machine.cpus,
            self.machine.load_at_start,
            self.machine.load_at_end,
            sizes.join(" and "),
            thousands(u64::from(LATENCY_RATE)),
            LATENCY_RECORD_BYTES,
            self.latency_secs,
        );
        if let Some(trips) = self.machine.nats_round_trip {
            let _ = writeln!(
                md,
                "What a wake-up costs on this machine: a round trip from the harness to the NATS server (a request nobody serves, as a connector's confirmation) takes {:.0} µs at the median and {:.0} µs of the harness's CPU. Wake-ups (voluntary context switches) say how well a path batches and do not depend on the machine; CPU per record is those wake-ups, each record's system calls, and, when the cores are all busy, the preemptions (involuntary context switches) that share the connector's core with the brokers and the harness.\n",
                trips.p50_us, trips.cpu_us
            );
        }
        md.push_str(&self.throughput_table());
        md.push_str(&self.latency_table());
        md.push_str(&self.memory_table());
        let _ = writeln!(md, "## Targets\n");
        for target in &self.targets {
            let _ = writeln!(
                md,
                "- {}: **{}** ({})",
                target.target, target.verdict, target.detail
            );
        }
        md.push('\n');
        if !self.failures.is_empty() {
            let _ = writeln!(md, "## Failed measurements\n");
            for failure in &self.failures {
                let first = failure.lines().next().unwrap_or_default();
                let _ = writeln!(md, "- {first}");
            }
            md.push('\n');
        }
        let _ = writeln!(md, "## How it is measured\n");
        for note in GENERAL_NOTES
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.notes.clone())
        {
            let _ = writeln!(md, "- {note}");
        }
        md
    }

    /// The throughput table alone (for the README).
    pub fn throughput_table(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "### Throughput\n");
        let _ = writeln!(
            md,
            "| connector | direction | record | records | connector records/s | MB/s | raw client | raw client records/s | raw async-nats records/s | connector / raw | CPU-s per 1M records | wake-ups per 1k records | preemptions per 1k records | peak RSS MB |"
        );
        let _ = writeln!(
            md,
            "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.throughput {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} |",
                r.connector,
                r.direction,
                bytes(r.record_bytes),
                thousands(r.records),
                count(r.records_per_s),
                r.mb_per_s,
                r.raw_client,
                count(r.raw_client_records_per_s),
                r.raw_nats_records_per_s.map_or("n/a".to_owned(), count),
                r.ratio,
                r.cpu_s_per_million,
                r.wakeups_per_1k_records,
                r.preemptions_per_1k_records,
                r.peak_rss_mb,
            );
        }
        md.push('\n');
        let notes: Vec<String> = self
            .throughput
            .iter()
            .filter_map(|r| {
                r.note
                    .as_ref()
                    .map(|n| format!("{} {}: {n}", r.connector, r.direction))
            })
            .collect();
        for note in notes {
            let _ = writeln!(md, "- {note}");
        }
        md.push('\n');
        md
    }

    /// The latency table.
    pub fn latency_table(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### Latency at {} records/s ({} B)\n",
            thousands(u64::from(LATENCY_RATE)),
            LATENCY_RECORD_BYTES
        );
        let _ = writeln!(
            md,
            "| connector | direction | samples | p50 ms | p99 ms | raw client | raw p50 ms | raw p99 ms |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---|---:|---:|");
        for r in &self.latency {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} |",
                r.connector,
                r.direction,
                thousands(r.samples as u64),
                r.p50_ms,
                r.p99_ms,
                r.raw_client,
                r.raw_p50_ms,
                r.raw_p99_ms,
            );
        }
        md.push('\n');
        md
    }

    /// The memory table.
    pub fn memory_table(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "### Memory of the connector process\n");
        let _ = writeln!(md, "| connector | state | RSS MB | peak RSS MB |");
        let _ = writeln!(md, "|---|---|---:|---:|");
        for r in &self.memory {
            let _ = writeln!(
                md,
                "| {} | {} | {:.1} | {:.1} |",
                r.connector, r.what, r.rss_mb, r.peak_rss_mb
            );
        }
        md.push('\n');
        md
    }
}

/// Notes that hold for every connector.
const GENERAL_NOTES: &[&str] = &[
    "Every connector runs as its release binary in a child process (a fresh one per run), on core NATS with the default options (up to 256 records per TransportMessage on ingress); CPU seconds (user + system) and peak RSS (VmHWM) are that process's, from /proc.",
    "Ingress rates are steady rates over the last nine tenths of the records: from the arrival on NATS that completed the first tenth to the last arrival (stream start-up, consumer group joins and a first large batch left out; the raw readers are timed the same way). Egress rates count from the first NATS publish (raw: the first write) to the last record seen in the outside system. The platform's side publishes egress records one per TransportMessage, as the reference platform does, a bounded window ahead of what arrived (core NATS drops what a slow subscriber leaves pending).",
    "raw client: the outside system's client library alone on the same broker, moving the same records (reading what was written for ingress, writing with the confirmations the connector waits for on egress). raw async-nats: publishing the same records and receiving them on one subject of the same NATS server (ingress: 256 records per message, egress: one). connector / raw divides by the slower of the two.",
    "The brokers, NATS, the connector and the harness's own publishers and readers share the machine's CPUs (and other work on it, see the load average): absolute rates move between runs, the ratio within a run is the figure to read.",
    "Latency: every record carries its send time (nanoseconds since the epoch, 16 hex digits at its head); the receiver subtracts it from its clock on arrival. Each latency run starts once a warm-up record went through (connections, subscriptions and consumer groups ready). The raw latency baselines send without waiting for confirmations.",
];

/// One target's verdict from (path, value, met) per measured path.
fn verdict(
    target: String,
    checks: Vec<(String, f64, bool)>,
    show: impl Fn(f64) -> String,
) -> Target {
    if checks.is_empty() {
        return Target {
            target,
            verdict: "not measured".to_owned(),
            detail: "no run measured it".to_owned(),
        };
    }
    let missed: Vec<&(String, f64, bool)> = checks
        .iter()
        .filter(|(_, v, met)| !met || v.is_nan())
        .collect();
    let detail: Vec<String> = checks
        .iter()
        .map(|(path, value, _)| format!("{path} {}", show(*value)))
        .collect();
    Target {
        target,
        verdict: if missed.is_empty() {
            "met".to_owned()
        } else {
            format!("missed by {} of {}", missed.len(), checks.len())
        },
        detail: detail.join(", "),
    }
}

/// `mqtt ingress`.
fn path(row: &Throughput) -> String {
    format!("{} {}", row.connector, row.direction)
}

/// A rate with thousands separators, or `n/a`.
fn count(value: f64) -> String {
    if value.is_finite() {
        thousands(value.round() as u64)
    } else {
        "n/a".to_owned()
    }
}

/// `count` events per thousand of `of` records.
pub fn per_thousand(count: u64, of: u64) -> f64 {
    count as f64 * 1e3 / of.max(1) as f64
}

/// `123,456`.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `100 B`, `10 KB`.
fn bytes(value: u64) -> String {
    if value >= 1_000 && value.is_multiple_of(1_000) {
        format!("{} KB", value / 1_000)
    } else if value >= 1_000 {
        format!("{:.1} KB", value as f64 / 1e3)
    } else {
        format!("{value} B")
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or_default();
    let (y, m, d) = civil_from_days(days);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(count(f64::NAN), "n/a");
        assert_eq!(bytes(100), "100 B");
        assert_eq!(bytes(10_000), "10 KB");
        assert_eq!(bytes(41_234), "41.2 KB");
    }

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn a_target_is_missed_when_one_path_misses_it() {
        let met = verdict(
            "t".into(),
            vec![("a".into(), 0.9, true), ("b".into(), 1.1, true)],
            |v| format!("{v:.1}"),
        );
        assert_eq!(met.verdict, "met");
        assert_eq!(met.detail, "a 0.9, b 1.1");
        let missed = verdict(
            "t".into(),
            vec![("a".into(), 0.5, false), ("b".into(), 0.9, true)],
            |v| format!("{v}"),
        );
        assert_eq!(missed.verdict, "missed by 1 of 2");
        assert_eq!(
            verdict("t".into(), vec![], |v| format!("{v}")).verdict,
            "not measured"
        );
    }
}

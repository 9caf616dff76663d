//! Prometheus metrics: per-stream counters the runtime updates once per batch, never per record.
//!
//! Served as Prometheus text on `/metrics` of the metrics port (see [`crate::http`]).

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::connector::Direction;

/// The labels of every per-stream metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// The stream id.
    pub stream: String,
    /// `ingress` or `egress`.
    pub direction: String,
}

/// The labels of connector-specific counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NamedLabels {
    /// The stream id.
    pub stream: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// What is counted, e.g. `rtp_sequence_gaps`.
    pub name: String,
}

#[derive(Default)]
struct Families {
    records: Family<StreamLabels, Counter>,
    bytes: Family<StreamLabels, Counter>,
    messages: Family<StreamLabels, Counter>,
    errors: Family<StreamLabels, Counter>,
    restarts: Family<StreamLabels, Counter>,
    dead_letters: Family<StreamLabels, Counter>,
    undecodable: Family<StreamLabels, Counter>,
    lag: Family<StreamLabels, Gauge>,
    named: Family<NamedLabels, Counter>,
    streams: Gauge,
    runtime_tasks: Gauge,
}

/// The process's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    families: Arc<Families>,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family registered under the `kps` prefix.
    pub fn new() -> Self {
        let families = Arc::new(Families::default());
        let mut registry = Registry::with_prefix("kps");
        registry.register("stream_records", "Records moved", families.records.clone());
        registry.register("stream_bytes", "Record bytes moved", families.bytes.clone());
        registry.register(
            "stream_messages",
            "Transport messages published or consumed",
            families.messages.clone(),
        );
        registry.register(
            "stream_errors",
            "Errors (each followed by a retry)",
            families.errors.clone(),
        );
        registry.register(
            "stream_restarts",
            "Source or sink reopened after an error",
            families.restarts.clone(),
        );
        registry.register(
            "stream_dead_letters",
            "Records refused and dead-lettered",
            families.dead_letters.clone(),
        );
        registry.register(
            "stream_undecodable_messages",
            "Transport messages that were not a TransportMessage",
            families.undecodable.clone(),
        );
        registry.register(
            "stream_lag",
            "Records waiting in the outside system, where known",
            families.lag.clone(),
        );
        registry.register(
            "stream_connector",
            "Connector-specific counts",
            families.named.clone(),
        );
        registry.register(
            "streams_running",
            "Streams running in this process",
            families.streams.clone(),
        );
        registry.register(
            "runtime_tasks",
            "Tasks alive in the async runtime (a number that keeps growing is a leak)",
            families.runtime_tasks.clone(),
        );
        Self {
            families,
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// The handles of one stream's metrics.
    pub fn stream(&self, stream_id: &str, direction: Direction) -> StreamMetrics {
        let labels = StreamLabels {
            stream: stream_id.to_owned(),
            direction: direction.as_str().to_owned(),
        };
        let f = &self.families;
        StreamMetrics {
            records: f.records.get_or_create(&labels).clone(),
            bytes: f.bytes.get_or_create(&labels).clone(),
            messages: f.messages.get_or_create(&labels).clone(),
            errors: f.errors.get_or_create(&labels).clone(),
            restarts: f.restarts.get_or_create(&labels).clone(),
            dead_letters: f.dead_letters.get_or_create(&labels).clone(),
            undecodable: f.undecodable.get_or_create(&labels).clone(),
            lag: f.lag.get_or_create(&labels).clone(),
            families: self.families.clone(),
            labels: Arc::new(labels),
        }
    }

    /// Forgets a removed stream's series.
    pub fn remove_stream(&self, stream_id: &str, direction: Direction) {
        let labels = StreamLabels {
            stream: stream_id.to_owned(),
            direction: direction.as_str().to_owned(),
        };
        let f = &self.families;
        for family in [
            &f.records,
            &f.bytes,
            &f.messages,
            &f.errors,
            &f.restarts,
            &f.dead_letters,
            &f.undecodable,
        ] {
            family.remove(&labels);
        }
        f.lag.remove(&labels);
    }

    /// Sets the number of running streams.
    pub fn set_streams_running(&self, n: usize) {
        self.families
            .streams
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the number of tasks alive in the async runtime.
    pub fn set_runtime_tasks(&self, n: usize) {
        self.families
            .runtime_tasks
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// One stream's metric handles: cheap to clone, updated per batch.
#[derive(Clone)]
pub struct StreamMetrics {
    records: Counter,
    bytes: Counter,
    messages: Counter,
    errors: Counter,
    restarts: Counter,
    dead_letters: Counter,
    undecodable: Counter,
    lag: Gauge,
    families: Arc<Families>,
    labels: Arc<StreamLabels>,
}

impl std::fmt::Debug for StreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMetrics")
            .field("labels", &self.labels)
            .finish()
    }
}

impl StreamMetrics {
    /// Counts a batch of records moved in `messages` transport messages.
    pub fn record_batch(&self, records: u64, bytes: u64, messages: u64) {
        self.records.inc_by(records);
        self.bytes.inc_by(bytes);
        self.messages.inc_by(messages);
    }

    /// Counts an error.
    pub fn error(&self) {
        self.errors.inc();
    }

    /// Counts a reopen after an error.
    pub fn restart(&self) {
        self.restarts.inc();
    }

    /// Counts refused records.
    pub fn dead_lettered(&self, n: u64) {
        self.dead_letters.inc_by(n);
    }

    /// Counts an undecodable transport message.
    pub fn undecodable(&self) {
        self.undecodable.inc();
    }

    /// Sets how many records wait in the outside system, where the connector knows.
    pub fn set_lag(&self, lag: i64) {
        self.lag.set(lag);
    }

    /// Adds `n` to a connector-specific counter of this stream, e.g. `count("rtp_sequence_gaps", 1)`.
    pub fn count(&self, name: &str, n: u64) {
        self.families
            .named
            .get_or_create(&NamedLabels {
                stream: self.labels.stream.clone(),
                direction: self.labels.direction.clone(),
                name: name.to_owned(),
            })
            .inc_by(n);
    }

    /// The records counted so far (for tests and reports).
    pub fn records(&self) -> u64 {
        self.records.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_per_stream_series_and_forgets_removed_streams() {
        let metrics = Metrics::new();
        let s = metrics.stream("s1", Direction::Ingress);
        s.record_batch(3, 300, 1);
        s.count("rtp_sequence_gaps", 2);
        let text = metrics.render();
        assert!(
            text.contains(r#"kps_stream_records_total{stream="s1",direction="ingress"} 3"#),
            "{text}"
        );
        assert!(text.contains(r#"name="rtp_sequence_gaps"} 2"#), "{text}");
        metrics.remove_stream("s1", Direction::Ingress);
        assert!(
            !metrics
                .render()
                .contains(r#"kps_stream_records_total{stream="s1""#)
        );
    }
}

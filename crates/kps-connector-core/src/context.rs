//! What a connector is handed when the runtime opens a source or sink, or asks for discovery.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigMap;
use crate::connector::Direction;
use crate::events::{EventRegistry, Severity, State};
use crate::metrics::StreamMetrics;
use crate::state::StateStore;

/// One stream's handles: identity, events, config, state, metrics and cancellation.
#[derive(Clone)]
pub struct StreamContext {
    pub(crate) connector_id: Arc<str>,
    pub(crate) stream_id: Arc<str>,
    pub(crate) direction: Direction,
    pub(crate) transport_channel: Arc<str>,
    pub(crate) events: EventRegistry,
    pub(crate) config: watch::Receiver<ConfigMap>,
    pub(crate) state: StateStore,
    pub(crate) metrics: StreamMetrics,
    pub(crate) cancel: CancellationToken,
}

impl std::fmt::Debug for StreamContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamContext")
            .field("connector_id", &self.connector_id)
            .field("stream_id", &self.stream_id)
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl StreamContext {
    /// The connector instance id.
    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }

    /// The stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The stream's direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The NATS subject the stream publishes to or subscribes on.
    pub fn transport_channel(&self) -> &str {
        &self.transport_channel
    }

    /// A stable default client id for the outside system: `kps-<connector>-<stream>`, with
    /// characters outside `[A-Za-z0-9_-]` replaced by `-`, at most `max_len` bytes.
    pub fn default_client_id(&self, max_len: usize) -> String {
        let raw = format!("kps-{}-{}", self.connector_id, self.stream_id);
        let mut id: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        id.truncate(max_len);
        id
    }

    /// Raises an alert about this stream (state UNHEALTHY for warnings and critical alerts).
    /// Raise alerts when a condition starts, not per record. A warning or critical alert on a
    /// HEALTHY stream also turns its status UNHEALTHY (a client library that reconnects by
    /// itself keeps the stream running, but the platform must see that it is not moving),
    /// except the per-record alerts of [`crate::events::alert_ids::is_per_record`].
    pub fn alert(&self, id: &str, severity: Severity, message: impl Into<String>) {
        let message = message.into();
        let state = match severity {
            Severity::Info => State::Healthy,
            Severity::Warning | Severity::Critical => State::Unhealthy,
        };
        self.events
            .alert(id, &self.stream_id, severity, state, message.clone());
        if state == State::Unhealthy
            && !crate::events::alert_ids::is_per_record(id)
            && self.events.stream_state(&self.stream_id) == Some(State::Healthy)
        {
            self.events
                .status(&self.stream_id, State::Unhealthy, message);
        }
    }

    /// Marks an alert of this stream as resolved; once no warning or critical alert of the
    /// stream is left, an UNHEALTHY status turns HEALTHY again.
    pub fn resolve_alert(&self, id: &str, message: impl Into<String>) {
        let message = message.into();
        self.events.resolve(id, &self.stream_id, message.clone());
        if self.events.stream_state(&self.stream_id) == Some(State::Unhealthy)
            && !self.events.has_open_alerts(&self.stream_id)
        {
            self.events.status(&self.stream_id, State::Healthy, message);
        }
    }

    /// The dynamic config now in force; call `changed().await` on it to follow updates.
    pub fn config(&self) -> watch::Receiver<ConfigMap> {
        self.config.clone()
    }

    /// This stream's durable state (cursor, offsets).
    pub fn state(&self) -> &StateStore {
        &self.state
    }

    /// This stream's metrics, for connector-specific counts (e.g. `metrics().count("rtp_gaps", 1)`).
    pub fn metrics(&self) -> &StreamMetrics {
        &self.metrics
    }

    /// Fires when the stream is stopping; background tasks a connector spawns should end with it.
    pub fn cancelled(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

/// What discovery is given: the config in force and the parameters of the running streams
/// (a connector may discover through the same outside system its streams use).
pub struct DiscoveryContext<P> {
    /// The dynamic config in force.
    pub config: ConfigMap,
    /// The parameters of the subscribed streams, by stream id.
    pub streams: Vec<(String, Arc<P>)>,
}

impl<P> std::fmt::Debug for DiscoveryContext<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryContext")
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DynamicConfig;
    use crate::metrics::Metrics;
    use crate::state::FileStateBackend;

    fn context(events: &EventRegistry) -> StreamContext {
        StreamContext {
            connector_id: "c".into(),
            stream_id: "s".into(),
            direction: Direction::Ingress,
            transport_channel: "subject".into(),
            events: events.clone(),
            config: DynamicConfig::new(Default::default()).subscribe(),
            state: StateStore::new(Arc::new(FileStateBackend::new("unused")), "s"),
            metrics: Metrics::new().stream("s", Direction::Ingress),
            cancel: CancellationToken::new(),
        }
    }

    #[test]
    fn an_alert_turns_a_healthy_stream_unhealthy_until_every_alert_is_resolved() {
        let events = EventRegistry::new();
        let ctx = context(&events);
        events.status("s", State::Healthy, "open");
        ctx.alert("connection", Severity::Warning, "broker unreachable");
        ctx.alert("topic", Severity::Warning, "topic missing");
        assert_eq!(events.stream_state("s"), Some(State::Unhealthy));
        ctx.resolve_alert("connection", "broker reachable");
        assert_eq!(events.stream_state("s"), Some(State::Unhealthy));
        ctx.resolve_alert("topic", "topic readable");
        assert_eq!(events.stream_state("s"), Some(State::Healthy));
    }

    #[test]
    fn info_and_per_record_alerts_leave_the_status_alone() {
        let events = EventRegistry::new();
        let ctx = context(&events);
        events.status("s", State::Healthy, "open");
        ctx.alert("note", Severity::Info, "fyi");
        ctx.alert(
            crate::events::alert_ids::UNDECODABLE_INPUT,
            Severity::Warning,
            "not a TransportMessage",
        );
        assert_eq!(events.stream_state("s"), Some(State::Healthy));
        ctx.alert("connection", Severity::Warning, "broker unreachable");
        ctx.resolve_alert("connection", "broker reachable");
        assert_eq!(
            events.stream_state("s"),
            Some(State::Healthy),
            "an open per-record alert does not keep the stream unhealthy"
        );
    }
}

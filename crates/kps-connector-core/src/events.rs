//! The events registry: the latest Status or Alert per (event id, stream id), as GetEvents serves it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// The state an event reports (the contract's `State`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// The stream is being set up.
    Provisioning,
    /// The stream is set up.
    Provisioned,
    /// The stream stopped for good (a fatal error); a changed SetPayload restarts it.
    Failed,
    /// The stream moves records.
    Healthy,
    /// The stream is retrying (outside system or transport down).
    Unhealthy,
}

/// How serious an Alert is (the contract's `Severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// For information (e.g. a resolved alert).
    Info,
    /// Something went wrong and is being handled (retrying, record dead-lettered).
    Warning,
    /// Something needs a person.
    Critical,
}

/// Whether an event is a Status or an Alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A stream's lifecycle state.
    Status,
    /// Something that happened, with a severity.
    Alert(Severity),
}

/// One event, as GetEvents reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event id, e.g. `status` or `transport-publish`.
    pub id: String,
    /// The stream it is about, or empty for the connector as a whole.
    pub stream_id: String,
    /// Status or Alert (with severity).
    pub kind: EventKind,
    /// The state it reports.
    pub state: State,
    /// For people; never a secret or a record.
    pub message: String,
    /// When this state began.
    pub created_at: SystemTime,
    /// Extra structured facts (counts, addresses).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The event id of a stream's lifecycle Status: one per stream, so HEALTHY and UNHEALTHY never
/// live at once.
pub const STATUS_EVENT_ID: &str = "status";

/// Well-known alert ids raised by the core.
pub mod alert_ids {
    /// Publishing on the transport failed or was not confirmed.
    pub const TRANSPORT_PUBLISH: &str = "transport-publish";
    /// Subscribing to the transport channel failed.
    pub const TRANSPORT_SUBSCRIBE: &str = "transport-subscribe";
    /// Unsubscribing failed.
    pub const TRANSPORT_UNSUBSCRIBE: &str = "transport-unsubscribe";
    /// The outside system could not be reached or the connection broke.
    pub const CONNECTION: &str = "connection";
    /// A transport message could not be decoded.
    pub const UNDECODABLE_INPUT: &str = "undecodable-input";
    /// The outside system refused a record.
    pub const RECORD_REJECTED: &str = "record-rejected";
    /// Discovering streams failed.
    pub const DISCOVERY: &str = "discovery";
    /// The stream failed for good.
    pub const FAILED: &str = "failed";

    /// Whether alert `id` is about single records or messages (skipped or dead-lettered while the
    /// stream keeps moving) rather than about the stream: such alerts leave its status alone.
    pub fn is_per_record(id: &str) -> bool {
        id == UNDECODABLE_INPUT || id == RECORD_REJECTED
    }
}

type Key = (String, String);

/// The registry of current events, shared by the runtime, the connectors and the gRPC service.
#[derive(Debug, Clone, Default)]
pub struct EventRegistry {
    inner: Arc<Mutex<BTreeMap<Key, Event>>>,
}

impl EventRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `event` as the latest for its (id, stream). An event equal in kind, state and
    /// message to the one in place keeps the earlier `created_at`: it is the same condition.
    pub fn raise(&self, event: Event) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (event.id.clone(), event.stream_id.clone());
        if let Some(existing) = map.get(&key)
            && existing.kind == event.kind
            && existing.state == event.state
            && existing.message == event.message
        {
            return;
        }
        map.insert(key, event);
    }

    /// Sets a stream's lifecycle status.
    pub fn status(&self, stream_id: &str, state: State, message: impl Into<String>) {
        self.raise(Event {
            id: STATUS_EVENT_ID.to_owned(),
            stream_id: stream_id.to_owned(),
            kind: EventKind::Status,
            state,
            message: message.into(),
            created_at: SystemTime::now(),
            metadata: serde_json::Map::new(),
        });
    }

    /// Raises an alert about a stream (or the connector when `stream_id` is empty).
    pub fn alert(
        &self,
        id: &str,
        stream_id: &str,
        severity: Severity,
        state: State,
        message: impl Into<String>,
    ) {
        self.raise(Event {
            id: id.to_owned(),
            stream_id: stream_id.to_owned(),
            kind: EventKind::Alert(severity),
            state,
            message: message.into(),
            created_at: SystemTime::now(),
            metadata: serde_json::Map::new(),
        });
    }

    /// Marks an alert that is in place as resolved: it becomes an INFO alert in state HEALTHY,
    /// so the latest event for that id says the condition is over. Does nothing if none is there.
    pub fn resolve(&self, id: &str, stream_id: &str, message: impl Into<String>) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = map.get_mut(&(id.to_owned(), stream_id.to_owned()))
            && existing.kind != EventKind::Alert(Severity::Info)
        {
            existing.kind = EventKind::Alert(Severity::Info);
            existing.state = State::Healthy;
            existing.message = message.into();
            existing.created_at = SystemTime::now();
        }
    }

    /// Forgets every event about a stream (it was removed).
    pub fn remove_stream(&self, stream_id: &str) {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|(_, stream), _| stream != stream_id);
    }

    /// The current events, ordered by (event id, stream id).
    pub fn snapshot(&self) -> Vec<Event> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }

    /// The current lifecycle state of a stream, if it has one.
    pub fn stream_state(&self, stream_id: &str) -> Option<State> {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(&(STATUS_EVENT_ID.to_owned(), stream_id.to_owned()))
            .map(|e| e.state)
    }

    /// Whether a warning or critical alert about `stream_id` itself (not a per-record one, see
    /// [`alert_ids::is_per_record`]) is in place, not resolved.
    pub fn has_open_alerts(&self, stream_id: &str) -> bool {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().any(|e| {
            e.stream_id == stream_id
                && !alert_ids::is_per_record(&e.id)
                && matches!(
                    e.kind,
                    EventKind::Alert(Severity::Warning | Severity::Critical)
                )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_status_replaces_the_previous_one() {
        let events = EventRegistry::new();
        events.status("s1", State::Unhealthy, "broker down");
        events.status("s1", State::Healthy, "connected");
        let all = events.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].state, State::Healthy);
    }

    #[test]
    fn same_condition_keeps_its_start_time() {
        let events = EventRegistry::new();
        events.status("s1", State::Unhealthy, "broker down");
        let first = events.snapshot()[0].created_at;
        events.status("s1", State::Unhealthy, "broker down");
        assert_eq!(events.snapshot()[0].created_at, first);
    }

    #[test]
    fn resolve_turns_an_alert_into_info_and_remove_forgets_the_stream() {
        let events = EventRegistry::new();
        events.alert(
            "connection",
            "s1",
            Severity::Warning,
            State::Unhealthy,
            "refused",
        );
        events.alert(
            "connection",
            "s2",
            Severity::Warning,
            State::Unhealthy,
            "refused",
        );
        events.resolve("connection", "s1", "connected again");
        let s1 = events
            .snapshot()
            .into_iter()
            .find(|e| e.stream_id == "s1")
            .unwrap();
        assert_eq!(s1.kind, EventKind::Alert(Severity::Info));
        assert_eq!(s1.state, State::Healthy);
        events.remove_stream("s1");
        assert_eq!(events.snapshot().len(), 1);
        events.resolve("connection", "missing", "nothing");
        assert_eq!(events.snapshot().len(), 1);
    }
}

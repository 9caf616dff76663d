//! The stream runtime: the supervisor that turns a declared stream set into running tasks, one
//! task per stream, each retrying on its own with backoff so one stream's failure never touches
//! another.

mod egress;
pub mod erased;
mod ingress;
pub mod stream_set;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::config::DynamicConfig;
use crate::connector::Direction;
use crate::context::StreamContext;
use crate::error::ConnectorError;
use crate::events::{EventRegistry, Severity, State, alert_ids};
use crate::metrics::Metrics;
use crate::state::{StateBackend, StateStore};
use crate::transport::{Transport, TransportError};
use erased::{ErasedConnector, ParsedParams};
use stream_set::{StreamSpec, plan};

/// How records are grouped and how much may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Most records per TransportMessage (1 gives the reference behaviour: one record a message).
    pub max_records: usize,
    /// Most encoded bytes per TransportMessage (capped at the server's max payload).
    pub max_bytes: usize,
    /// Most batches published and not yet confirmed, per ingress stream.
    pub max_in_flight: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_records: 256,
            max_bytes: 900 * 1024,
            max_in_flight: 16,
        }
    }
}

/// Everything a stream task needs, shared by all of them.
pub struct StreamDeps {
    /// The connector instance id.
    pub connector_id: Arc<str>,
    /// The connector.
    pub connector: Arc<dyn ErasedConnector>,
    /// The process's transport.
    pub transport: Arc<dyn Transport>,
    /// The events registry.
    pub events: EventRegistry,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The dynamic config.
    pub config: DynamicConfig,
    /// Where sources keep their position.
    pub state: Arc<dyn StateBackend>,
    /// Batching and in-flight limits.
    pub batch: BatchSettings,
    /// How long a stopping stream may take to drain before it is aborted.
    pub drain_timeout: Duration,
}

/// Why one attempt of a stream ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    #[error("{0}")]
    Connector(#[from] ConnectorError),
    #[error("{0}")]
    Transport(#[from] TransportError),
}

impl StreamError {
    fn is_retryable(&self) -> bool {
        match self {
            StreamError::Connector(e) => e.is_retryable(),
            StreamError::Transport(_) => true,
        }
    }

    fn alert_id(&self) -> &'static str {
        match self {
            StreamError::Connector(_) => alert_ids::CONNECTION,
            StreamError::Transport(TransportError::Subscribe { .. }) => {
                alert_ids::TRANSPORT_SUBSCRIBE
            }
            StreamError::Transport(_) => alert_ids::TRANSPORT_PUBLISH,
        }
    }
}

struct RunningStream {
    spec: StreamSpec,
    params: ParsedParams,
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

/// A subscribed stream as GetPayload lists it.
#[derive(Clone)]
pub struct StreamEntry {
    /// Its declaration.
    pub spec: StreamSpec,
    /// Its parsed parameters.
    pub params: ParsedParams,
}

/// Owns the running streams and applies declared stream sets.
pub struct Supervisor {
    deps: Arc<StreamDeps>,
    running: tokio::sync::Mutex<BTreeMap<String, RunningStream>>,
    snapshot: Mutex<Arc<Vec<StreamEntry>>>,
    tracker: TaskTracker,
}

impl Supervisor {
    /// A supervisor with no streams.
    pub fn new(deps: Arc<StreamDeps>) -> Self {
        Self {
            deps,
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            snapshot: Mutex::new(Arc::new(Vec::new())),
            tracker: TaskTracker::new(),
        }
    }

    /// The shared dependencies.
    pub fn deps(&self) -> &Arc<StreamDeps> {
        &self.deps
    }

    /// The subscribed streams now (cheap; does not wait for an apply in progress).
    pub fn streams(&self) -> Arc<Vec<StreamEntry>> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the running set equal to `desired` (already validated): stops removed streams,
    /// restarts changed ones, starts new ones and leaves unchanged ones running untouched.
    pub async fn apply(&self, desired: Vec<StreamEntry>) {
        let mut running = self.running.lock().await;
        let current: Vec<StreamSpec> = running.values().map(|r| r.spec.clone()).collect();
        let wanted: Vec<StreamSpec> = desired.iter().map(|e| e.spec.clone()).collect();
        let plan = plan(&current, &wanted);

        let stopping: Vec<RunningStream> = plan
            .stop
            .iter()
            .chain(&plan.restart)
            .filter_map(|id| running.remove(id))
            .collect();
        self.stop_all(stopping, &plan.stop).await;

        for entry in desired {
            if plan.start.contains(&entry.spec.id) || plan.restart.contains(&entry.spec.id) {
                let stream = self.spawn(entry);
                running.insert(stream.spec.id.clone(), stream);
            }
        }
        self.deps.metrics.set_streams_running(running.len());
        let entries = running
            .values()
            .map(|r| StreamEntry {
                spec: r.spec.clone(),
                params: r.params.clone(),
            })
            .collect();
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(entries);
        tracing::info!(
            started = plan.start.len(),
            restarted = plan.restart.len(),
            stopped = plan.stop.len(),
            unchanged = plan.keep.len(),
            "stream set applied"
        );
    }

    /// Stops every stream, draining in-flight records (graceful shutdown).
    pub async fn shutdown(&self) {
        self.apply(Vec::new()).await;
        self.tracker.close();
        self.tracker.wait().await;
    }

    async fn stop_all(
        &self,
        streams: Vec<RunningStream>,
        forget: &std::collections::BTreeSet<String>,
    ) {
        for stream in &streams {
            stream.cancel.cancel();
        }
        let timeout = self.deps.drain_timeout;
        let waits = streams.into_iter().map(|stream| async move {
            let abort = stream.handle.abort_handle();
            if tokio::time::timeout(timeout, stream.handle).await.is_err() {
                tracing::warn!(stream = %stream.spec.id, "stream did not drain in {timeout:?}; aborted");
                abort.abort();
            }
            stream.spec
        });
        for spec in futures::future::join_all(waits).await {
            if forget.contains(&spec.id) {
                self.deps.events.remove_stream(&spec.id);
                self.deps.metrics.remove_stream(&spec.id, spec.direction);
            }
        }
    }

    fn spawn(&self, entry: StreamEntry) -> RunningStream {
        let cancel = CancellationToken::new();
        let deps = self.deps.clone();
        let spec = entry.spec.clone();
        let params = entry.params.clone();
        let span = tracing::info_span!(
            "stream",
            connector = deps.connector.info().name,
            stream = %spec.id,
            direction = %spec.direction
        );
        let task_cancel = cancel.clone();
        let handle = self
            .tracker
            .spawn(run_stream(deps, spec.clone(), params.clone(), task_cancel).instrument(span));
        RunningStream {
            spec,
            params,
            cancel,
            handle,
        }
    }
}

/// One stream's life: open, move records, and on a retryable error report UNHEALTHY, back off
/// and open again, until cancelled or failed for good.
async fn run_stream(
    deps: Arc<StreamDeps>,
    spec: StreamSpec,
    params: ParsedParams,
    cancel: CancellationToken,
) {
    let events = &deps.events;
    events.status(&spec.id, State::Provisioning, "starting");
    let metrics = deps.metrics.stream(&spec.id, spec.direction);
    let ctx = StreamContext {
        connector_id: deps.connector_id.clone(),
        stream_id: spec.id.as_str().into(),
        direction: spec.direction,
        transport_channel: spec.transport_channel.as_str().into(),
        events: events.clone(),
        config: deps.config.subscribe(),
        state: StateStore::new(deps.state.clone(), &spec.id),
        metrics: metrics.clone(),
        cancel: cancel.clone(),
    };
    let mut backoff = Backoff::default();
    loop {
        let result = match spec.direction {
            Direction::Ingress => ingress::run(&deps, &ctx, &params, &mut backoff).await,
            Direction::Egress => egress::run(&deps, &ctx, &params, &mut backoff).await,
        };
        match result {
            Ok(()) => {
                tracing::debug!("stream stopped");
                return;
            }
            Err(e) if e.is_retryable() => {
                metrics.error();
                metrics.restart();
                tracing::warn!(error = %e, attempt = backoff.attempts() + 1, "stream interrupted; retrying");
                events.status(&spec.id, State::Unhealthy, format!("retrying: {e}"));
                events.alert(
                    e.alert_id(),
                    &spec.id,
                    Severity::Warning,
                    State::Unhealthy,
                    e.to_string(),
                );
                if !backoff.wait(&cancel).await {
                    return;
                }
            }
            Err(e) => {
                metrics.error();
                tracing::error!(error = %e, "stream failed");
                events.status(&spec.id, State::Failed, e.to_string());
                events.alert(
                    alert_ids::FAILED,
                    &spec.id,
                    Severity::Critical,
                    State::Failed,
                    e.to_string(),
                );
                return;
            }
        }
    }
}

/// Marks a stream healthy after (re)opening, resolving the alerts of the previous attempt.
fn report_open(ctx: &StreamContext, what: &str) {
    ctx.events.status(&ctx.stream_id, State::Healthy, what);
    for id in [alert_ids::CONNECTION, alert_ids::TRANSPORT_SUBSCRIBE] {
        ctx.events
            .resolve(id, &ctx.stream_id, format!("recovered: {what}"));
    }
}

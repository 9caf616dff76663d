//! A test double of an outside system for the core's own tests: a replayable log as the source
//! (unacknowledged records are read again after a reopen, like a broker would redeliver them)
//! and a recording sink that can be told to fail. Connector crates test against real systems;
//! the core's tests are about the contract, the runtime and the transport, which are all real here.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kps_connector_core::{
    Acknowledge, Bytes, Connector, ConnectorError, ConnectorInfo, ConnectorResult, Direction,
    DiscoveredStream, DiscoveryContext, Sink, Source, SourceBatch, StreamContext, WriteOutcome,
    async_trait,
};
use serde::Deserialize;
use tokio::sync::Notify;

/// One named endpoint of the hub.
#[derive(Default)]
pub struct Endpoint {
    pub log: Mutex<Vec<Bytes>>,
    pub appended: Notify,
    pub acked: AtomicUsize,
    pub opens: AtomicUsize,
    pub written: Mutex<Vec<Bytes>>,
    pub fail_writes: AtomicUsize,
}

impl Endpoint {
    pub fn push(&self, records: impl IntoIterator<Item = Bytes>) {
        self.log.lock().unwrap().extend(records);
        self.appended.notify_waiters();
    }

    pub fn written(&self) -> Vec<Bytes> {
        self.written.lock().unwrap().clone()
    }

    pub async fn wait_written(&self, n: usize, timeout: Duration) -> Vec<Bytes> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let written = self.written();
            if written.len() >= n || tokio::time::Instant::now() >= deadline {
                return written;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_acked(&self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let acked = self.acked.load(Ordering::SeqCst);
            if acked >= n || tokio::time::Instant::now() >= deadline {
                return acked;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Endpoints by name, shared by the test and the connector.
#[derive(Clone, Default)]
pub struct Hub {
    endpoints: Arc<Mutex<HashMap<String, Arc<Endpoint>>>>,
}

impl Hub {
    pub fn endpoint(&self, name: &str) -> Arc<Endpoint> {
        self.endpoints
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubParams {
    /// The endpoint's name.
    pub name: String,
    /// Opening fails (retryably) while true.
    #[serde(default)]
    pub fail_open: bool,
}

/// A connector over the hub.
#[derive(Clone, Default)]
pub struct HubConnector {
    pub hub: Hub,
    pub ingress_only: bool,
}

const BOTH: &[Direction] = &[Direction::Ingress, Direction::Egress];
const INGRESS: &[Direction] = &[Direction::Ingress];

#[async_trait]
impl Connector for HubConnector {
    type Params = HubParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "hub",
            description: "test double",
            version: "0.0.0",
            directions: if self.ingress_only { INGRESS } else { BOTH },
        }
    }

    fn validate(&self, _direction: Direction, params: &HubParams) -> ConnectorResult<()> {
        if params.name.is_empty() {
            return Err(ConnectorError::invalid("name", "must not be empty"));
        }
        Ok(())
    }

    async fn open_source(
        &self,
        _ctx: StreamContext,
        params: &HubParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        let endpoint = self.hub.endpoint(&params.name);
        endpoint.opens.fetch_add(1, Ordering::SeqCst);
        if params.fail_open {
            return Err(ConnectorError::retryable(format!(
                "{} is down",
                params.name
            )));
        }
        let position = endpoint.acked.load(Ordering::SeqCst);
        Ok(Box::new(HubSource { endpoint, position }))
    }

    async fn open_sink(
        &self,
        _ctx: StreamContext,
        params: &HubParams,
    ) -> ConnectorResult<Box<dyn Sink>> {
        let endpoint = self.hub.endpoint(&params.name);
        endpoint.opens.fetch_add(1, Ordering::SeqCst);
        if params.fail_open {
            return Err(ConnectorError::retryable(format!(
                "{} is down",
                params.name
            )));
        }
        Ok(Box::new(HubSink { endpoint }))
    }

    async fn discover(
        &self,
        _ctx: DiscoveryContext<HubParams>,
    ) -> ConnectorResult<Vec<DiscoveredStream>> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("name".into(), "found".into());
        Ok(["found", "both"]
            .into_iter()
            .map(|id| DiscoveredStream {
                id: id.to_owned(),
                direction: Direction::Ingress,
                transport_channel: String::new(),
                metadata: metadata.clone(),
            })
            .collect())
    }
}

struct HubSource {
    endpoint: Arc<Endpoint>,
    position: usize,
}

#[async_trait]
impl Source for HubSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        loop {
            let appended = self.endpoint.appended.notified();
            {
                let log = self.endpoint.log.lock().unwrap();
                if log.len() > self.position {
                    let end = log.len().min(self.position + max_records);
                    let records = log[self.position..end].to_vec();
                    self.position = end;
                    return Ok(SourceBatch::new(
                        records,
                        HubAck {
                            endpoint: self.endpoint.clone(),
                            upto: end,
                        },
                    ));
                }
            }
            appended.await;
        }
    }
}

struct HubAck {
    endpoint: Arc<Endpoint>,
    upto: usize,
}

#[async_trait]
impl Acknowledge for HubAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        self.endpoint.acked.fetch_max(self.upto, Ordering::SeqCst);
        Ok(())
    }
}

struct HubSink {
    endpoint: Arc<Endpoint>,
}

#[async_trait]
impl Sink for HubSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        if self
            .endpoint
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ConnectorError::retryable("the hub refused the write"));
        }
        let mut outcome = WriteOutcome::all_written();
        let mut written = self.endpoint.written.lock().unwrap();
        for (i, record) in records.iter().enumerate() {
            if record.as_ref() == b"reject-me" {
                outcome.reject(i, "the hub refuses this record");
            } else {
                written.push(record.clone());
            }
        }
        Ok(outcome)
    }
}

/// Sends the connector's logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// `n` numbered records.
pub fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("{prefix}-{i:06}")))
        .collect()
}

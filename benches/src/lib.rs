//! Shared pieces of the benches: a source that replays prepared records as fast as the runtime
//! takes them, and a runner of the core's ingress path over the in-memory transport.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::config::DynamicConfig;
use kps_connector_core::events::EventRegistry;
use kps_connector_core::metrics::Metrics;
use kps_connector_core::runtime::erased::Erased;
use kps_connector_core::runtime::stream_set::StreamSpec;
use kps_connector_core::runtime::{BatchSettings, StreamDeps, StreamEntry, Supervisor};
use kps_connector_core::state::FileStateBackend;
use kps_connector_core::transport::memory::MemoryTransport;
use kps_connector_core::transport::{Transport, wire};
use kps_connector_core::{
    Acknowledge, Connector, ConnectorInfo, ConnectorResult, Direction, Source, SourceBatch,
    StreamContext, async_trait,
};

/// Parameters of the replay connector: none.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayParams {}

/// A connector whose source replays `records` forever (clones of the same `Bytes`: no
/// allocation per record) and counts acknowledgements.
#[derive(Clone)]
pub struct ReplayConnector {
    /// The records to replay.
    pub records: Arc<Vec<Bytes>>,
    /// Records acknowledged.
    pub acked: Arc<AtomicU64>,
}

#[async_trait]
impl Connector for ReplayConnector {
    type Params = ReplayParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "replay",
            description: "bench source",
            version: "0",
            directions: &[Direction::Ingress],
        }
    }

    async fn open_source(
        &self,
        _ctx: StreamContext,
        _params: &ReplayParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        Ok(Box::new(ReplaySource {
            records: self.records.clone(),
            next: 0,
            acked: self.acked.clone(),
        }))
    }
}

struct ReplaySource {
    records: Arc<Vec<Bytes>>,
    next: usize,
    acked: Arc<AtomicU64>,
}

#[async_trait]
impl Source for ReplaySource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        let mut batch = Vec::with_capacity(max_records);
        for _ in 0..max_records {
            batch.push(self.records[self.next % self.records.len()].clone());
            self.next += 1;
        }
        let ack = CountAck {
            acked: self.acked.clone(),
            n: batch.len() as u64,
        };
        Ok(SourceBatch::new(batch, ack))
    }
}

struct CountAck {
    acked: Arc<AtomicU64>,
    n: u64,
}

#[async_trait]
impl Acknowledge for CountAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        self.acked.fetch_add(self.n, Ordering::Relaxed);
        Ok(())
    }
}

/// Runs the ingress path (source -> batcher -> in-memory transport -> subscriber -> acks) until
/// `records` records were acknowledged; returns the records decoded by the subscriber.
pub async fn run_ingress(record_size: usize, records: u64, max_batch_records: usize) -> u64 {
    let transport = MemoryTransport::new();
    let mut subscription = transport
        .subscribe("bench.in", "bench", "bench")
        .await
        .expect("subscribe");
    let connector = ReplayConnector {
        records: Arc::new(
            (0..64)
                .map(|i| Bytes::from(vec![i as u8; record_size]))
                .collect(),
        ),
        acked: Arc::new(AtomicU64::new(0)),
    };
    let acked = connector.acked.clone();
    let deps = Arc::new(StreamDeps {
        connector_id: "bench".into(),
        connector: Arc::new(Erased(Arc::new(connector))),
        transport: Arc::new(transport),
        events: EventRegistry::new(),
        metrics: Metrics::new(),
        config: DynamicConfig::default(),
        state: Arc::new(FileStateBackend::new(
            std::env::temp_dir().join("kps-bench-state"),
        )),
        batch: BatchSettings {
            max_records: max_batch_records,
            ..BatchSettings::default()
        },
        drain_timeout: Duration::from_secs(5),
    });
    let supervisor = Supervisor::new(deps.clone());
    let params = deps
        .connector
        .parse(Direction::Ingress, &serde_json::Map::new())
        .expect("params");
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while seen < records {
            let Some(Ok(delivery)) = subscription.next().await else {
                break;
            };
            seen += wire::decode(delivery.payload)
                .map(|(_, r)| r.len() as u64)
                .unwrap_or(0);
        }
        seen
    });
    supervisor
        .apply(vec![StreamEntry {
            spec: StreamSpec {
                id: "bench".into(),
                direction: Direction::Ingress,
                transport_channel: "bench.in".into(),
                metadata: serde_json::Map::new(),
            },
            params,
        }])
        .await;
    let seen = consumer.await.unwrap_or(0);
    while acked.load(Ordering::Relaxed) < records {
        tokio::task::yield_now().await;
    }
    supervisor.shutdown().await;
    seen
}

//! The data suite: records in = records out, in order per stream; stop and start without loss.
//!
//! A connector crate implements [`ExternalSystem`] for its outside system (write records in,
//! read records out) and runs the checks with its real broker or database:
//!
//! ```text
//! let suite = DataSuite::new(1_000);
//! suite.ingress_round_trip(MyConnector::default(), json!({"topic": t}), &system).await.assert_passed();
//! ```

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::harness::{StreamDecl, TestConnector};
use super::probe::NatsProbe;
use super::unique_name;
use crate::connector::Connector;
use crate::events::State;

/// The outside system of a connector, as the data suite drives it.
#[async_trait]
pub trait ExternalSystem: Send + Sync {
    /// The i-th test record, as the outside system holds it (default `kps-record-000042`).
    fn record(&self, i: usize) -> Bytes {
        Bytes::from(format!("kps-record-{i:06}"))
    }

    /// Writes `records` into the outside system, in order (what an ingress stream reads).
    async fn produce(&self, records: &[Bytes]) -> Result<(), String>;

    /// Reads the next `n` records the egress stream wrote (after those earlier calls returned),
    /// in order, waiting at most `timeout`; returns fewer if they did not come in time.
    async fn consume(&self, n: usize, timeout: Duration) -> Result<Vec<Bytes>, String>;

    /// Maps a record as it arrived to the form [`ExternalSystem::record`] made (for systems that
    /// add fields, e.g. a row id). The default keeps it as is.
    fn normalize(&self, record: Bytes) -> Bytes {
        record
    }
}

/// The data checks' settings.
#[derive(Debug, Clone)]
pub struct DataSuite {
    /// How many records each check moves.
    pub records: usize,
    /// Records per TransportMessage when the suite publishes (egress).
    pub per_message: usize,
    /// How long the records may take.
    pub timeout: Duration,
}

/// What a data check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataReport {
    /// The check.
    pub check: String,
    /// Records produced.
    pub sent: usize,
    /// Records that arrived (with duplicates).
    pub received: usize,
    /// Produced records that never arrived.
    pub lost: usize,
    /// Records that arrived more than once.
    pub duplicates: usize,
    /// Whether the distinct records arrived in the order produced.
    pub in_order: bool,
    /// Whether duplicates are acceptable for this check (at-least-once after a crash).
    pub duplicates_allowed: bool,
}

impl DataReport {
    fn compare(check: &str, sent: &[Bytes], received: &[Bytes], duplicates_allowed: bool) -> Self {
        let mut seen = HashSet::new();
        let mut distinct = Vec::new();
        let mut duplicates = 0;
        for record in received {
            if seen.insert(record.clone()) {
                distinct.push(record.clone());
            } else {
                duplicates += 1;
            }
        }
        let sent_set: HashSet<&Bytes> = sent.iter().collect();
        let lost = sent.iter().filter(|r| !seen.contains(*r)).count();
        let arrived_in_sent_order: Vec<&Bytes> =
            distinct.iter().filter(|r| sent_set.contains(r)).collect();
        let expected_order: Vec<&Bytes> = sent.iter().filter(|r| seen.contains(*r)).collect();
        Self {
            check: check.to_owned(),
            sent: sent.len(),
            received: received.len(),
            lost,
            duplicates,
            in_order: arrived_in_sent_order == expected_order,
            duplicates_allowed,
        }
    }

    /// Whether nothing was lost, the order held, and duplicates only where allowed.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.in_order && (self.duplicates_allowed || self.duplicates == 0)
    }

    /// Panics with the figures unless the check passed.
    pub fn assert_passed(&self) {
        assert!(self.passed(), "data check failed: {self:#?}");
    }
}

/// Starts `connector` with `stream` as its whole stream set and waits until it is HEALTHY.
async fn running_stream<C: Connector + Clone>(
    connector: C,
    stream: StreamDecl,
) -> TestConnector<C> {
    let mut running = TestConnector::start(connector).await;
    let id = stream.id.clone();
    running
        .apply(vec![stream])
        .await
        .unwrap_or_else(|status| panic!("stream `{id}` refused: {status}"));
    running
        .wait_for_state(&id, State::Healthy, Duration::from_secs(30))
        .await;
    running
}

impl DataSuite {
    /// Checks that move `records` records each.
    pub fn new(records: usize) -> Self {
        Self {
            records,
            per_message: 100,
            timeout: Duration::from_secs(60),
        }
    }

    fn records(&self, system: &dyn ExternalSystem, range: std::ops::Range<usize>) -> Vec<Bytes> {
        range.map(|i| system.record(i)).collect()
    }

    /// Ingress: N records written into the outside system arrive on NATS, in order, once.
    pub async fn ingress_round_trip<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.in");
        let probe = NatsProbe::connect().await;
        let mut arrivals = probe.subscribe(&channel).await;
        let running = running_stream(
            connector,
            StreamDecl::ingress("data-in", channel.as_str(), metadata),
        )
        .await;
        let sent = self.records(system, 0..self.records);
        system.produce(&sent).await.expect("records produced");
        let received: Vec<Bytes> = arrivals
            .collect(self.records, self.timeout)
            .await
            .into_iter()
            .map(|r| system.normalize(r))
            .collect();
        running.shutdown().await;
        DataReport::compare("ingress round trip", &sent, &received, false)
    }

    /// Ingress: records written while the connector is stopped arrive after it starts again,
    /// none lost; after a clean stop, none duplicated.
    pub async fn ingress_restart<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.restart");
        let probe = NatsProbe::connect().await;
        let mut arrivals = probe.subscribe(&channel).await;
        let mut running = running_stream(
            connector,
            StreamDecl::ingress("data-restart", channel.as_str(), metadata),
        )
        .await;
        let half = self.records / 2;
        let first = self.records(system, 0..half);
        system.produce(&first).await.expect("records produced");
        let mut received = arrivals.collect(half, self.timeout).await;
        running.stop().await;
        let second = self.records(system, half..self.records);
        system
            .produce(&second)
            .await
            .expect("records produced while stopped");
        running.start_again().await;
        received.extend(arrivals.collect(self.records - half, self.timeout).await);
        received.extend(arrivals.drain(Duration::from_millis(500)).await);
        running.shutdown().await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        let sent: Vec<Bytes> = first.into_iter().chain(second).collect();
        DataReport::compare("ingress stop and start", &sent, &received, false)
    }

    /// Egress: N records published on NATS (several per TransportMessage) are written to the
    /// outside system, in order, once.
    pub async fn egress_round_trip<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.out");
        let running = running_stream(
            connector,
            StreamDecl::egress("data-out", channel.as_str(), metadata),
        )
        .await;
        let probe = NatsProbe::connect().await;
        let sent = self.records(system, 0..self.records);
        probe
            .publish_records(&channel, &sent, self.per_message)
            .await;
        let received: Vec<Bytes> = system
            .consume(self.records, self.timeout)
            .await
            .expect("records consumed")
            .into_iter()
            .map(|r| system.normalize(r))
            .collect();
        running.shutdown().await;
        DataReport::compare("egress round trip", &sent, &received, false)
    }

    /// Egress: records published before a stop and after the restart are all written, once.
    pub async fn egress_restart<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.outrestart");
        let mut running = running_stream(
            connector,
            StreamDecl::egress("data-out-restart", channel.as_str(), metadata),
        )
        .await;
        let probe = NatsProbe::connect().await;
        let half = self.records / 2;
        let first = self.records(system, 0..half);
        probe
            .publish_records(&channel, &first, self.per_message)
            .await;
        let mut received = system
            .consume(half, self.timeout)
            .await
            .expect("records consumed");
        running.restart().await;
        running
            .wait_for_state("data-out-restart", State::Healthy, Duration::from_secs(30))
            .await;
        let second = self.records(system, half..self.records);
        probe
            .publish_records(&channel, &second, self.per_message)
            .await;
        received.extend(
            system
                .consume(self.records - half, self.timeout)
                .await
                .expect("records consumed"),
        );
        running.shutdown().await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        let sent: Vec<Bytes> = first.into_iter().chain(second).collect();
        DataReport::compare("egress stop and start", &sent, &received, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn compare_counts_losses_duplicates_and_order() {
        let sent = vec![b("a"), b("b"), b("c")];
        assert!(DataReport::compare("x", &sent, &sent, false).passed());
        let dup = DataReport::compare("x", &sent, &[b("a"), b("a"), b("b"), b("c")], false);
        assert_eq!((dup.duplicates, dup.passed()), (1, false));
        assert!(DataReport::compare("x", &sent, &[b("a"), b("a"), b("b"), b("c")], true).passed());
        let lost = DataReport::compare("x", &sent, &[b("a"), b("c")], false);
        assert_eq!(lost.lost, 1);
        let swapped = DataReport::compare("x", &sent, &[b("b"), b("a"), b("c")], false);
        assert!(!swapped.in_order);
    }
}

//! The data suite: records in = records out, in order per stream; stop and start without loss.
//!
//! A connector crate implements [`ExternalSystem`] for its outside system (write records in,
//! read records out) and runs the checks with its real broker or database:
//!
//! ```text
//! let suite = DataSuite::new(1_000);
//! suite.ingress_round_trip(MyConnector::default(), json!({"topic": t}), &system).await.assert_passed();
//! ```

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::delivery::{DeliveryReport, collect_until_complete};
use super::fault_proxy::FaultProxy;
use super::harness::{StreamDecl, TestConnector};
use super::probe::{NatsProbe, RecordStream};
use super::process::ConnectorProcess;
use super::unique_name;
use crate::connector::Connector;
use crate::events::State;
use crate::options::{RuntimeOptions, TransportKind};

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
    /// First arrivals that came after a record produced later.
    pub late: usize,
    /// Whether duplicates and late arrivals are acceptable for this check (at-least-once after a
    /// fault or a crash: a record whose acknowledgement was lost comes again, possibly after
    /// later ones).
    pub redelivery_allowed: bool,
}

impl DataReport {
    fn compare(check: &str, sent: &[Bytes], received: &[Bytes], redelivery_allowed: bool) -> Self {
        let delivery = DeliveryReport::compare(sent, received);
        Self {
            check: check.to_owned(),
            sent: delivery.sent,
            received: delivery.received,
            lost: delivery.lost,
            duplicates: delivery.duplicates,
            late: delivery.late,
            redelivery_allowed,
        }
    }

    /// Whether the distinct records arrived in the order produced.
    pub fn in_order(&self) -> bool {
        self.late == 0
    }

    /// Whether nothing was lost, and duplicates and late arrivals came only where allowed.
    pub fn passed(&self) -> bool {
        self.lost == 0 && (self.redelivery_allowed || (self.duplicates == 0 && self.in_order()))
    }

    /// Panics with the figures unless the check passed.
    pub fn assert_passed(&self) {
        assert!(self.passed(), "data check failed: {self:#?}");
    }
}

impl std::fmt::Display for DataReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} sent, {} received, {} lost, {} duplicate(s), {} late",
            self.check, self.sent, self.received, self.lost, self.duplicates, self.late
        )
    }
}

/// Starts `connector` with `stream` as its whole stream set and waits until it is HEALTHY.
async fn running_stream<C: Connector + Clone>(
    connector: C,
    stream: StreamDecl,
) -> TestConnector<C> {
    running_stream_with(connector, stream, |_| {}).await
}

/// [`running_stream`] after `adjust` changed the runtime options.
async fn running_stream_with<C: Connector + Clone>(
    connector: C,
    stream: StreamDecl,
    adjust: impl FnOnce(&mut RuntimeOptions),
) -> TestConnector<C> {
    let mut running = TestConnector::start_with(connector, adjust).await;
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

    /// Egress with malformed input: between good records, messages that are not
    /// TransportMessages (empty, random bytes, a truncated TransportMessage) arrive on the
    /// subject. Each is skipped (and dead-lettered when configured); every good record is
    /// written in order, once, and the stream stays HEALTHY.
    pub async fn egress_malformed_input<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.malformed");
        let id = "data-malformed";
        let mut running = running_stream(
            connector,
            StreamDecl::egress(id, channel.as_str(), metadata),
        )
        .await;
        let probe = NatsProbe::connect().await;
        let half = self.records / 2;
        let sent = self.records(system, 0..self.records);
        probe
            .publish_records(&channel, &sent[..half], self.per_message)
            .await;
        let valid = crate::transport::wire::encode(0, &sent[..2]);
        let truncated = valid.slice(..valid.len() - 3);
        let random: Vec<u8> = (0..64).map(|_| fastrand::u8(..)).collect();
        for garbage in [
            Bytes::new(),
            Bytes::from(random),
            truncated,
            Bytes::from_static(b"\xff\xff\xff\xff\x0f"),
        ] {
            probe.publish_raw(&channel, garbage).await;
        }
        probe
            .publish_records(&channel, &sent[half..], self.per_message)
            .await;
        let mut received = system
            .consume(self.records, self.timeout)
            .await
            .expect("records consumed");
        received.extend(
            system
                .consume(1, Duration::from_millis(500))
                .await
                .unwrap_or_default(),
        );
        running.wait_for_state(id, State::Healthy, STATE_WAIT).await;
        running.shutdown().await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        DataReport::compare("egress with malformed messages", &sent, &received, false)
    }

    /// Ingress across a NATS outage: the connector reaches NATS through a [`FaultProxy`] that is
    /// cut mid-stream. The stream turns UNHEALTHY, then HEALTHY once NATS is back; every record
    /// arrives (a record published but not confirmed before the cut may come twice).
    pub async fn ingress_nats_cut<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.natscut.in");
        let probe = NatsProbe::connect().await;
        let mut arrivals = probe.subscribe(&channel).await;
        let proxy = FaultProxy::start(nats_addr()).await;
        let proxied = format!("nats://{}", proxy.addr());
        let id = "data-natscut-in";
        let mut running = running_stream_with(
            connector,
            StreamDecl::ingress(id, channel.as_str(), metadata),
            |o| o.nats_url = proxied,
        )
        .await;
        let third = self.records / 3;
        let sent = self.records(system, 0..self.records);

        system
            .produce(&sent[..third])
            .await
            .expect("records produced");
        let mut received = arrivals.collect(third, self.timeout).await;
        proxy.cut();
        system
            .produce(&sent[third..2 * third])
            .await
            .expect("records produced during the outage");
        running
            .wait_for_state(id, State::Unhealthy, STATE_WAIT)
            .await;
        proxy.restore();
        running.wait_for_state(id, State::Healthy, STATE_WAIT).await;
        system
            .produce(&sent[2 * third..])
            .await
            .expect("records produced after the outage");
        received
            .extend(collect_records(&sent, &received, self.timeout, &mut arrivals, system).await);
        running.shutdown().await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        DataReport::compare("ingress across a NATS outage", &sent, &received, true)
    }

    /// Egress across a NATS outage, in JetStream mode (core NATS keeps nothing for a subscriber
    /// that is away): records published while the connector cannot reach NATS are written once
    /// it can again; the stream turns UNHEALTHY, then HEALTHY; none is lost.
    pub async fn egress_nats_cut<C: Connector + Clone>(
        &self,
        connector: C,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.natscut.out");
        let proxy = FaultProxy::start(nats_addr()).await;
        let proxied = format!("nats://{}", proxy.addr());
        let id = "data-natscut-out";
        let mut running = running_stream_with(
            connector,
            StreamDecl::egress(id, channel.as_str(), metadata),
            |o| {
                o.nats_url = proxied;
                o.transport = TransportKind::Jetstream;
            },
        )
        .await;
        let probe = NatsProbe::connect().await;
        let third = self.records / 3;
        let sent = self.records(system, 0..self.records);

        probe
            .publish_records(&channel, &sent[..third], self.per_message)
            .await;
        let mut received = system
            .consume(third, self.timeout)
            .await
            .expect("records consumed");
        proxy.cut();
        probe
            .publish_records(&channel, &sent[third..2 * third], self.per_message)
            .await;
        running
            .wait_for_state(id, State::Unhealthy, STATE_WAIT)
            .await;
        proxy.restore();
        running.wait_for_state(id, State::Healthy, STATE_WAIT).await;
        probe
            .publish_records(&channel, &sent[2 * third..], self.per_message)
            .await;
        received.extend(consume_records(&sent, &received, self.timeout, system).await);
        running.shutdown().await;
        probe
            .delete_jetstream_stream(&jetstream_stream_name(&channel))
            .await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        DataReport::compare("egress across a NATS outage", &sent, &received, true)
    }

    /// Ingress through the built connector `binary` in JetStream mode, killed with SIGKILL
    /// mid-stream and started again with the same id and state: no record is lost (those read
    /// but not confirmed before the kill come again).
    pub async fn ingress_crash(
        &self,
        binary: &Path,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.crash.in");
        let probe = NatsProbe::connect().await;
        let mut arrivals = probe.subscribe(&channel).await;
        let state = tempfile::tempdir().expect("a state directory");
        let connector_id = unique_name("crash");
        let streams = [StreamDecl::ingress(
            "data-crash-in",
            channel.as_str(),
            metadata,
        )];
        let start = || jetstream_process(binary, &connector_id, state.path());
        let two_thirds = self.records * 2 / 3;
        let sent = self.records(system, 0..self.records);

        let mut first = start();
        first.apply(&streams).await;
        system
            .produce(&sent[..two_thirds])
            .await
            .expect("records produced");
        // Kill while the connector is still moving the backlog.
        let mut received = arrivals.collect(two_thirds / 4, self.timeout).await;
        first.kill().await;
        received.extend(arrivals.drain(Duration::from_millis(200)).await);
        system
            .produce(&sent[two_thirds..])
            .await
            .expect("records produced while the connector was down");
        let mut second = start();
        second.apply(&streams).await;
        received
            .extend(collect_records(&sent, &received, self.timeout, &mut arrivals, system).await);
        second.terminate().await;
        probe
            .delete_jetstream_stream(&jetstream_stream_name(&channel))
            .await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        DataReport::compare("ingress SIGKILL and restart", &sent, &received, true)
    }

    /// Egress through the built connector `binary` in JetStream mode, killed with SIGKILL
    /// mid-stream and started again: every record published is written (those in flight at the
    /// kill come again after JetStream's ack wait).
    pub async fn egress_crash(
        &self,
        binary: &Path,
        metadata: Value,
        system: &dyn ExternalSystem,
    ) -> DataReport {
        let channel = unique_name("kps.data.crash.out");
        let probe = NatsProbe::connect().await;
        let state = tempfile::tempdir().expect("a state directory");
        let connector_id = unique_name("crash");
        let streams = [StreamDecl::egress(
            "data-crash-out",
            channel.as_str(),
            metadata,
        )];
        let start = || jetstream_process(binary, &connector_id, state.path());
        let two_thirds = self.records * 2 / 3;
        let sent = self.records(system, 0..self.records);

        let mut first = start();
        first.apply(&streams).await;
        probe
            .publish_records(&channel, &sent[..two_thirds], self.per_message)
            .await;
        // Kill while the connector is still writing the backlog.
        let mut received = system
            .consume(two_thirds / 4, self.timeout)
            .await
            .expect("records consumed");
        first.kill().await;
        probe
            .publish_records(&channel, &sent[two_thirds..], self.per_message)
            .await;
        let mut second = start();
        second.apply(&streams).await;
        // Messages the killed process held unacknowledged come back after the ack wait.
        received.extend(consume_records(&sent, &received, self.timeout + ACK_WAIT, system).await);
        second.terminate().await;
        probe
            .delete_jetstream_stream(&jetstream_stream_name(&channel))
            .await;
        let received: Vec<Bytes> = received.into_iter().map(|r| system.normalize(r)).collect();
        DataReport::compare("egress SIGKILL and restart", &sent, &received, true)
    }
}

/// How long a check waits for a stream to reach a state.
const STATE_WAIT: Duration = Duration::from_secs(60);

/// Longer than the JetStream consumer's ack wait, after which unacknowledged messages come again.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// The test NATS server's address, for a [`FaultProxy`] in front of it.
fn nats_addr() -> std::net::SocketAddr {
    let url = super::nats_url();
    let host_port = url
        .trim_start_matches("nats://")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_owned();
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| super::service_unavailable("NATS", format!("bad address {url}")))
}

/// The built connector `binary` as instance `connector_id` in JetStream mode, keeping its state
/// in `state` (the same for a restarted process).
fn jetstream_process(binary: &Path, connector_id: &str, state: &Path) -> ConnectorProcess {
    ConnectorProcess::builder(binary, connector_id)
        .state_dir(state)
        .jetstream()
        .start()
}

/// The JetStream stream the connector creates for `subject` when none covers it.
fn jetstream_stream_name(subject: &str) -> String {
    crate::transport::jetstream::stream_name_for(subject)
}

/// Collects from NATS until every one of `sent` arrived (normalized) or `timeout` passed.
async fn collect_records(
    sent: &[Bytes],
    already: &[Bytes],
    timeout: Duration,
    arrivals: &mut RecordStream,
    system: &dyn ExternalSystem,
) -> Vec<Bytes> {
    let already: Vec<Bytes> = already
        .iter()
        .map(|r| system.normalize(r.clone()))
        .collect();
    let mut raw = Vec::new();
    collect_until_complete(sent, &already, timeout, async || {
        let batch = arrivals.collect(1_000, Duration::from_millis(500)).await;
        raw.extend(batch.iter().cloned());
        batch.into_iter().map(|r| system.normalize(r)).collect()
    })
    .await;
    raw.extend(arrivals.drain(Duration::from_millis(500)).await);
    raw
}

/// Consumes from the outside system until every one of `sent` was written (normalized) or
/// `timeout` passed.
async fn consume_records(
    sent: &[Bytes],
    already: &[Bytes],
    timeout: Duration,
    system: &dyn ExternalSystem,
) -> Vec<Bytes> {
    let already: Vec<Bytes> = already
        .iter()
        .map(|r| system.normalize(r.clone()))
        .collect();
    let mut raw = Vec::new();
    collect_until_complete(sent, &already, timeout, async || {
        let batch = system
            .consume(1_000, Duration::from_millis(500))
            .await
            .unwrap_or_default();
        raw.extend(batch.iter().cloned());
        batch.into_iter().map(|r| system.normalize(r)).collect()
    })
    .await;
    raw
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
        let lost = DataReport::compare("x", &sent, &[b("a"), b("c")], true);
        assert_eq!((lost.lost, lost.passed()), (1, false));
        let swapped = DataReport::compare("x", &sent, &[b("b"), b("a"), b("c")], false);
        assert!(!swapped.in_order() && !swapped.passed());
        assert!(DataReport::compare("x", &sent, &[b("b"), b("a"), b("c")], true).passed());
    }
}

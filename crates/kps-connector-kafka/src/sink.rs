//! Egress: an idempotent producer (`enable.idempotence=true`, so `acks=all` and no reordering or
//! duplicates from librdkafka's own retries); a batch is confirmed only when every one of its
//! records has its delivery report. Up to [`PENDING_WRITES`] batches wait for their reports at
//! once (pipelined through [`Sink::send`]).
//!
//! Delivery reports come back through the producer's context with the batch's generation and
//! the record's index in the batch as the opaque value (no allocation per record). A record the cluster refuses for what it
//! is (too large, invalid) is reported in [`WriteOutcome::rejected`]: the core alerts and
//! dead-letters it. Any other failed delivery (timeout, connection, fenced producer) fails the
//! write as retryable: the core reopens the sink and writes the batch again (at least once).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kps_connector_core::context::StreamContext;
use kps_connector_core::{
    Bytes, ConnectorError, ConnectorResult, PendingWrite, Severity, Sink, WriteOutcome, async_trait,
};
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use tokio::sync::Notify;

use crate::client::{self, BrokerFailures, METADATA_TIMEOUT};
use crate::key;
use crate::params::KafkaParams;

/// The alert raised while the cluster cannot be reached.
const CONNECTION_ALERT: &str = kps_connector_core::events::alert_ids::CONNECTION;

/// `message.timeout.ms` unless the stream's properties set it: how long librdkafka retries a
/// record before reporting it failed (librdkafka's default is 5 minutes).
const MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// Batches queued in librdkafka and waiting for their delivery reports at once (the core's
/// egress window): enough to keep every partition's requests full while earlier batches'
/// acknowledgements travel back. With batches in flight, librdkafka's own `linger.ms` (5 ms)
/// packs requests without delaying the next batch; 1 ms, which serial writes needed, made its
/// broker thread spin (measured: 4.1 -> 1.8 CPU-s per million records with the default).
const PENDING_WRITES: usize = 8;

/// What one sent batch's delivery reports said so far.
#[derive(Default)]
struct Reports {
    /// Records sent and not yet reported.
    pending: usize,
    /// Failed records: index in the batch and error.
    failures: Vec<(usize, KafkaError)>,
}

/// One sent batch: its reports, and what wakes its confirmation when the last one arrived.
#[derive(Default)]
struct SentBatch {
    reports: Mutex<Reports>,
    reported: Notify,
}

impl SentBatch {
    fn reports(&self) -> MutexGuard<'_, Reports> {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The producer's context: hands delivery reports to the batches they belong to and reports
/// cluster-wide errors.
struct ProducerEvents {
    ctx: StreamContext,
    /// The batches sent and not yet confirmed, by generation, oldest first (at most the sink's
    /// pending-writes window, so a lookup is a short scan).
    batches: Mutex<VecDeque<(u32, Arc<SentBatch>)>>,
    alerted: AtomicBool,
    /// The last broker failure librdkafka logged, for the alerts' messages.
    failures: BrokerFailures,
}

impl ProducerEvents {
    fn batches(&self) -> MutexGuard<'_, VecDeque<(u32, Arc<SentBatch>)>> {
        self.batches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts tracking the reports of a batch; drops batches whose confirmation was abandoned.
    fn track(&self, generation: u32) -> Arc<SentBatch> {
        let batch = Arc::new(SentBatch::default());
        let mut batches = self.batches();
        batches.retain(|(_, sent)| Arc::strong_count(sent) > 1);
        batches.push_back((generation, batch.clone()));
        batch
    }

    /// Stops tracking a confirmed batch.
    fn forget(&self, generation: u32) {
        self.batches().retain(|(g, _)| *g != generation);
    }

    /// Resolves the connection alert once deliveries succeed again.
    fn delivered(&self) {
        if self.alerted.swap(false, Ordering::AcqRel) {
            self.failures.clear();
            self.ctx
                .resolve_alert(CONNECTION_ALERT, "kafka deliveries succeed again");
        }
    }
}

impl ClientContext for ProducerEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.failures.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error");
        let message = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::SSL) => format!("kafka TLS failure: {reason}"),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::Authentication) => self
                .failures
                .explain(format!("kafka cluster unreachable: {reason}")),
            _ => return,
        };
        if !self.alerted.swap(true, Ordering::AcqRel) {
            self.ctx.alert(CONNECTION_ALERT, Severity::Warning, message);
        }
    }
}

/// The opaque value of a record: the batch's generation and the record's index.
fn opaque(generation: u32, index: usize) -> usize {
    ((generation as usize) << 32) | (index & 0xffff_ffff)
}

impl ProducerContext for ProducerEvents {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let generation = (opaque >> 32) as u32;
        let index = opaque & 0xffff_ffff;
        let batches = self.batches();
        // A report of an abandoned batch (its confirmation dropped) has nobody to tell.
        let Some((_, batch)) = batches.iter().find(|(g, _)| *g == generation) else {
            return;
        };
        let mut reports = batch.reports();
        if let Err((error, _)) = result {
            reports.failures.push((index, error.clone()));
        }
        reports.pending = reports.pending.saturating_sub(1);
        if reports.pending == 0 {
            batch.reported.notify_one();
        }
    }
}

type KafkaProducer = ThreadedProducer<ProducerEvents>;

/// An egress stream's producer.
pub struct KafkaSink {
    producer: Option<Arc<KafkaProducer>>,
    events: Arc<ProducerEvents>,
    topic: String,
    key: Option<String>,
    generation: u32,
    /// How long a write waits for its last delivery report before giving up.
    report_timeout: Duration,
}

/// Opens the producer and checks that the cluster answers and the topic exists.
pub(crate) async fn open(
    ctx: StreamContext,
    params: &KafkaParams,
) -> ConnectorResult<Box<dyn Sink>> {
    let mut config = client::base_config(params, &ctx.default_client_id(255)).await?;
    let message_timeout_ms = match params.properties.get("message.timeout.ms") {
        Some(value) => value.to_string().parse().unwrap_or(MESSAGE_TIMEOUT_MS),
        None => {
            config.set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string());
            MESSAGE_TIMEOUT_MS
        }
    };
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "compression.type",
            params.compression.unwrap_or_default().as_str(),
        );
    let events = ProducerEvents {
        ctx: ctx.clone(),
        batches: Mutex::default(),
        alerted: AtomicBool::new(false),
        failures: BrokerFailures::default(),
    };
    let producer: KafkaProducer = config
        .create_with_context(events)
        .map_err(|e| client::classify("cannot create the kafka producer", &e))?;
    let events = producer.context().clone();
    let producer = Arc::new(producer);

    let probe = (producer.clone(), params.topic.clone());
    let brokers = params.brokers.clone();
    let metadata = client::blocking(move || {
        let (producer, topic) = probe;
        producer
            .client()
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
    })
    .await?;
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(e) => {
            // Serve what librdkafka queued (its log line of the broker failure) now, not only
            // when the producer's thread gets to it.
            producer.poll(Duration::ZERO);
            client::drop_off_runtime(producer);
            return Err(ConnectorError::retryable(
                events
                    .failures
                    .explain(format!("cannot reach the kafka brokers {brokers}: {e}")),
            ));
        }
    };
    if let Some(error) = metadata.topics().first().and_then(|t| t.error()) {
        client::drop_off_runtime(producer);
        return Err(ConnectorError::retryable(format!(
            "topic {} is not writable: {}",
            params.topic,
            RDKafkaErrorCode::from(error)
        )));
    }
    if events.alerted.swap(false, Ordering::AcqRel) {
        ctx.resolve_alert(CONNECTION_ALERT, "kafka cluster reachable");
    }
    events.failures.clear();
    Ok(Box::new(KafkaSink {
        producer: Some(producer),
        events,
        topic: params.topic.clone(),
        key: params.key_pointer().map(str::to_owned),
        generation: 0,
        report_timeout: Duration::from_millis(message_timeout_ms) + Duration::from_secs(10),
    }))
}

/// Errors that are about the record itself: sending it again will fail again.
fn refuses_the_record(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

impl KafkaSink {
    fn producer(&self) -> ConnectorResult<&Arc<KafkaProducer>> {
        self.producer
            .as_ref()
            .ok_or_else(|| ConnectorError::retryable("the kafka producer is closed"))
    }

    /// Hands every record to librdkafka (waiting while its queue is full), counting each in
    /// `batch`; records that cannot be keyed or that librdkafka refuses at once go to `outcome`.
    async fn send_all(
        &self,
        records: &[Bytes],
        batch: &SentBatch,
        outcome: &mut WriteOutcome,
    ) -> ConnectorResult<()> {
        let producer = self.producer()?;
        for (index, record) in records.iter().enumerate() {
            let key = match &self.key {
                Some(pointer) => match key::extract(pointer, record) {
                    Ok(key) => key,
                    Err(reason) => {
                        outcome.reject(index, reason);
                        continue;
                    }
                },
                None => None,
            };
            let mut message: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&self.topic, opaque(self.generation, index))
                    .payload(&record[..]);
            if let Some(key) = &key {
                message = message.key(&key[..]);
            }
            // Counted before the send: the report may arrive before `send` returns.
            batch.reports().pending += 1;
            loop {
                match producer.send(message) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((error, _)) => {
                        batch.reports().pending -= 1;
                        if refuses_the_record(&error) {
                            outcome.reject(index, format!("refused by librdkafka: {error}"));
                            break;
                        }
                        return Err(client::classify("kafka produce", &error));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Waits until every record of `batch` has its delivery report, then turns the reports into
/// the batch's outcome: records refused for what they are join `outcome`, any other failure
/// fails the batch (retryable).
async fn confirm(
    events: Arc<ProducerEvents>,
    generation: u32,
    batch: Arc<SentBatch>,
    mut outcome: WriteOutcome,
    report_timeout: Duration,
) -> ConnectorResult<WriteOutcome> {
    let deadline = tokio::time::Instant::now() + report_timeout;
    loop {
        // `notify_one` keeps a permit when nobody waits, so no report is missed between the
        // check and the wait.
        if batch.reports().pending == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, batch.reported.notified())
            .await
            .is_err()
        {
            events.forget(generation);
            return Err(ConnectorError::retryable(format!(
                "no delivery report from kafka within {report_timeout:?}"
            )));
        }
    }
    events.forget(generation);
    let failures = std::mem::take(&mut batch.reports().failures);
    let mut retry = None;
    for (index, error) in failures {
        if refuses_the_record(&error) {
            outcome.reject(index, format!("refused by kafka: {error}"));
        } else if retry.is_none() {
            retry = Some(client::classify("kafka delivery failed", &error));
        }
    }
    if let Some(error) = retry {
        return Err(error);
    }
    outcome.rejected.sort_by_key(|r| r.index);
    events.delivered();
    Ok(outcome)
}

#[async_trait]
impl Sink for KafkaSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        self.send(records).await?.await
    }

    async fn send(&mut self, records: &[Bytes]) -> ConnectorResult<PendingWrite> {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        let batch = self.events.track(generation);
        let mut outcome = WriteOutcome::default();
        if let Err(e) = self.send_all(records, &batch, &mut outcome).await {
            self.events.forget(generation);
            return Err(e);
        }
        Ok(Box::pin(confirm(
            self.events.clone(),
            generation,
            batch,
            outcome,
            self.report_timeout,
        )))
    }

    /// librdkafka keeps a partition's records in order (the producer is idempotent) and reports
    /// each batch's records, so later batches may be queued while earlier ones wait for their
    /// reports.
    fn max_pending_writes(&self) -> usize {
        PENDING_WRITES
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        if let Some(producer) = self.producer.take() {
            client::blocking(move || {
                if let Err(e) = producer.flush(Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "flushing the kafka producer");
                }
                drop(producer);
            })
            .await?;
        }
        Ok(())
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            client::drop_off_runtime(producer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_values_carry_generation_and_index() {
        let value = opaque(7, 42);
        assert_eq!(((value >> 32) as u32, value & 0xffff_ffff), (7, 42));
        let value = opaque(u32::MAX, 0);
        assert_eq!(((value >> 32) as u32, value & 0xffff_ffff), (u32::MAX, 0));
    }

    #[test]
    fn size_errors_refuse_the_record_and_timeouts_do_not() {
        let too_large = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(refuses_the_record(&too_large));
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(!refuses_the_record(&timeout));
    }
}

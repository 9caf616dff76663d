//! Ingress: a consumer group member that stores a partition's offset only after the transport
//! confirmed the records before it.
//!
//! librdkafka runs with `enable.auto.offset.store=false` and `enable.auto.commit=true`: the
//! batch's [`Acknowledge`] stores the next offset of each partition it holds, and librdkafka
//! commits the stored offsets every `auto.commit.interval.ms` (1s by default here), for the
//! partitions being revoked at a rebalance, and when the consumer closes. [`Source::close`]
//! commits once more, synchronously. Records unconfirmed at a crash are therefore read again
//! (at least once); order is kept per partition.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, StreamExt};
use kps_connector_core::context::StreamContext;
use kps_connector_core::{
    Acknowledge, Bytes, ConnectorError, ConnectorResult, Severity, Source, SourceBatch, async_trait,
};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use crate::client::{self, BrokerFailures, METADATA_TIMEOUT};
use crate::envelope;
use crate::params::{Envelope, KafkaParams};

/// The alert raised while the cluster cannot be reached.
const CONNECTION_ALERT: &str = kps_connector_core::events::alert_ids::CONNECTION;
/// The alert raised while the topic does not exist.
const TOPIC_ALERT: &str = "topic-missing";

type KafkaConsumer = StreamConsumer<ConsumerEvents>;

/// The consumer, destroyed on the blocking pool when the last handle goes (closing a consumer
/// leaves its group and waits for the broker).
struct ConsumerHandle(Option<KafkaConsumer>);

impl ConsumerHandle {
    fn get(&self) -> &KafkaConsumer {
        // Only `drop` takes the consumer out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("consumer used after drop"))
    }
}

impl Drop for ConsumerHandle {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            client::drop_off_runtime(consumer);
        }
    }
}

/// What librdkafka reports on its own: errors, rebalances and commits.
struct ConsumerEvents {
    ctx: StreamContext,
    /// Whether the connection alert is raised (resolved when records flow again).
    alerted: Arc<AtomicBool>,
    /// The last broker failure librdkafka logged, for the alerts' messages.
    failures: Arc<BrokerFailures>,
}

impl ClientContext for ConsumerEvents {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.failures.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka consumer error");
        let message = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::SSL) => format!("kafka TLS failure: {reason}"),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::Authentication) => self
                .failures
                .explain(format!("kafka cluster unreachable: {reason}")),
            _ => return,
        };
        self.ctx.alert(CONNECTION_ALERT, Severity::Warning, message);
        self.alerted.store(true, Ordering::Release);
    }
}

impl ConsumerContext for ConsumerEvents {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            // librdkafka commits the stored offsets of revoked partitions itself
            // (enable.auto.commit), before they move to another member.
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = %describe(partitions), "partitions revoked");
            }
            Rebalance::Assign(partitions) => {
                tracing::info!(partitions = %describe(partitions), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe(offsets), "offsets committed"),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, "committing offsets failed; they are committed again later")
            }
        }
    }
}

fn describe(partitions: &TopicPartitionList) -> String {
    partitions
        .elements()
        .iter()
        .map(|p| match p.offset() {
            Offset::Offset(offset) => format!("{}[{}]@{offset}", p.topic(), p.partition()),
            _ => format!("{}[{}]", p.topic(), p.partition()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An ingress stream's consumer.
pub struct KafkaSource {
    consumer: Arc<ConsumerHandle>,
    topic: Arc<str>,
    envelope: Envelope,
    ctx: StreamContext,
    alerted: Arc<AtomicBool>,
    failures: Arc<BrokerFailures>,
    topic_alerted: bool,
}

/// Opens the consumer: checks the cluster answers and the topic exists, then subscribes.
pub(crate) async fn open(
    ctx: StreamContext,
    params: &KafkaParams,
) -> ConnectorResult<Box<dyn Source>> {
    let group = params
        .group_id
        .clone()
        .unwrap_or_else(|| format!("kps-{}-{}", ctx.connector_id(), ctx.stream_id()));
    let mut config = client::base_config(params, &ctx.default_client_id(255)).await?;
    if !params.properties.contains_key("auto.commit.interval.ms") {
        config.set("auto.commit.interval.ms", "1000");
    }
    config
        .set("group.id", &group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            params.start.unwrap_or_default().as_str(),
        )
        .set("enable.partition.eof", "false");
    let alerted = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(BrokerFailures::default());
    let events = ConsumerEvents {
        ctx: ctx.clone(),
        alerted: alerted.clone(),
        failures: failures.clone(),
    };
    let consumer: KafkaConsumer = config
        .create_with_context(events)
        .map_err(|e| client::classify("cannot create the kafka consumer", &e))?;
    let consumer = Arc::new(ConsumerHandle(Some(consumer)));

    let topic: Arc<str> = Arc::from(params.topic.as_str());
    let brokers = params.brokers.clone();
    let probe = (consumer.clone(), topic.clone());
    let metadata = client::blocking(move || {
        let (consumer, topic) = probe;
        consumer
            .get()
            .fetch_metadata(Some(&topic), METADATA_TIMEOUT)
    })
    .await?;
    let metadata = match metadata {
        Ok(metadata) => metadata,
        Err(e) => {
            drain_events(consumer.get()).await;
            return Err(ConnectorError::retryable(
                failures.explain(format!("cannot reach the kafka brokers {brokers}: {e}")),
            ));
        }
    };
    if let Some(error) = metadata.topics().first().and_then(|t| t.error()) {
        let error = RDKafkaErrorCode::from(error);
        ctx.alert(
            TOPIC_ALERT,
            Severity::Warning,
            format!("topic {topic} is not readable: {error}"),
        );
        return Err(ConnectorError::retryable(format!(
            "topic {topic} is not readable: {error}"
        )));
    }
    ctx.resolve_alert(TOPIC_ALERT, format!("topic {topic} exists"));
    consumer
        .get()
        .subscribe(&[&topic])
        .map_err(|e| client::classify("cannot subscribe", &e))?;
    tracing::info!(%group, %topic, "consumer group member subscribed");
    Ok(Box::new(KafkaSource {
        consumer,
        topic,
        envelope: params.envelope.unwrap_or_default(),
        ctx,
        alerted,
        failures,
        topic_alerted: false,
    }))
}

/// Serves the consumer's queue for a moment: librdkafka's log lines (among them the broker
/// failure that explains an unreachable cluster) and errors wait there until the consumer is
/// polled, which an open that never got the cluster's metadata has not done yet.
async fn drain_events(consumer: &KafkaConsumer) {
    let mut stream = consumer.stream();
    let drained = tokio::time::timeout(std::time::Duration::from_millis(50), async {
        // Nothing is subscribed yet: only logs and errors come, and both are dealt with by the
        // context (logs) or meant for the explanation above (errors).
        while stream.next().await.is_some() {}
    });
    let _ = drained.await;
}

impl KafkaSource {
    /// Handles an error the consumer returned instead of a message: connection trouble and a
    /// missing topic are alerted (librdkafka reconnects by itself); a fatal one ends the source.
    fn consumer_error(&mut self, error: KafkaError) -> ConnectorResult<()> {
        match &error {
            KafkaError::MessageConsumptionFatal(_) => {
                return Err(ConnectorError::retryable(format!(
                    "the kafka consumer failed: {error}"
                )));
            }
            KafkaError::MessageConsumption(
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
            ) => {
                if !self.topic_alerted {
                    self.ctx.alert(
                        TOPIC_ALERT,
                        Severity::Warning,
                        format!("topic {} is not readable: {error}", self.topic),
                    );
                    self.topic_alerted = true;
                }
                return Ok(());
            }
            _ => {}
        }
        let classified = client::classify("kafka consumer", &error);
        if !classified.is_retryable() {
            return Err(classified);
        }
        tracing::warn!(%error, "kafka consumer error");
        if !self.alerted.swap(true, Ordering::AcqRel) {
            self.ctx.alert(
                CONNECTION_ALERT,
                Severity::Warning,
                self.failures.explain(format!("kafka consumer: {error}")),
            );
        }
        Ok(())
    }

    fn healthy_again(&mut self) {
        if self.alerted.swap(false, Ordering::AcqRel) {
            self.failures.clear();
            self.ctx
                .resolve_alert(CONNECTION_ALERT, "kafka records flow again");
        }
        if self.topic_alerted {
            self.topic_alerted = false;
            self.ctx
                .resolve_alert(TOPIC_ALERT, format!("topic {} is readable", self.topic));
        }
    }
}

/// The records of one batch and the next offset of each partition they came from.
#[derive(Default)]
struct Taken {
    records: Vec<Bytes>,
    offsets: Vec<(i32, i64)>,
}

impl Taken {
    fn take(&mut self, message: &BorrowedMessage<'_>, envelope: Envelope) {
        let record = match envelope {
            Envelope::None => Bytes::copy_from_slice(message.payload().unwrap_or_default()),
            Envelope::Json => envelope::encode(message),
        };
        self.records.push(record);
        let next = message.offset() + 1;
        match self
            .offsets
            .iter_mut()
            .find(|(partition, _)| *partition == message.partition())
        {
            Some((_, offset)) => *offset = (*offset).max(next),
            None => self.offsets.push((message.partition(), next)),
        }
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        let consumer = self.consumer.clone();
        let mut stream = consumer.get().stream();
        let mut taken = Taken::default();
        // Cancel-safe: a message leaves librdkafka's queue only in the poll that returns it.
        loop {
            match stream.next().await {
                Some(Ok(message)) => {
                    taken.take(&message, self.envelope);
                    break;
                }
                Some(Err(error)) => self.consumer_error(error)?,
                None => return Err(ConnectorError::retryable("the kafka consumer stopped")),
            }
        }
        // Then only what is already waiting.
        while taken.records.len() < max_records {
            match stream.next().now_or_never() {
                Some(Some(Ok(message))) => taken.take(&message, self.envelope),
                Some(Some(Err(error))) => {
                    self.consumer_error(error)?;
                    break;
                }
                _ => break,
            }
        }
        drop(stream);
        self.healthy_again();
        let ack = OffsetAck {
            consumer,
            topic: self.topic.clone(),
            offsets: taken.offsets,
        };
        Ok(SourceBatch::new(taken.records, ack))
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        let consumer = self.consumer.clone();
        let committed =
            client::blocking(move || consumer.get().commit_consumer_state(CommitMode::Sync))
                .await?;
        match committed {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => Err(ConnectorError::retryable(format!(
                "final offset commit: {e}"
            ))),
        }
    }
}

/// Stores the next offset of each partition of a batch, once the transport confirmed it.
struct OffsetAck {
    consumer: Arc<ConsumerHandle>,
    topic: Arc<str>,
    offsets: Vec<(i32, i64)>,
}

#[async_trait]
impl Acknowledge for OffsetAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        let mut list = TopicPartitionList::with_capacity(self.offsets.len());
        for (partition, next) in &self.offsets {
            list.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))
                .map_err(|e| ConnectorError::fatal(format!("offset list: {e}")))?;
        }
        // In memory only (librdkafka commits it later): no blocking call.
        if let Err(error) = self.consumer.get().store_offsets(&list) {
            // A partition revoked meanwhile belongs to another member now, which reads these
            // records again from the last commit: at least once, nothing lost.
            tracing::debug!(%error, "offsets not stored (partition no longer assigned)");
        }
        Ok(())
    }
}

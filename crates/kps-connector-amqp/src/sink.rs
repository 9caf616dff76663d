//! Egress: publish each record to the exchange with publisher confirms; a batch is confirmed
//! once the broker confirmed every record of it.
//!
//! Pipelined: [`Sink::send`] hands every publish of a batch to the connection's writer task in
//! record order and returns the batch's confirmation without waiting for the broker. Up to [`PENDING_WRITES`] batches wait for their confirms at once; the core
//! awaits them in the order sent. `write` is `send` followed by its confirmation.
//!
//! - An unroutable record (returned by the broker under `mandatory`) is refused in the
//!   [`WriteOutcome`] of its batch: the core raises an Alert and dead-letters it where
//!   configured. Returned messages are matched back to their records by body and routing key
//!   (the `confirms` module tells which batch they belong to).
//! - A record whose routing key cannot be found (`routing_key_pointer`) is refused the same way.
//! - A nack (the broker did not take responsibility: a full queue with `reject-publish`, an
//!   internal error) fails the batch's confirmation as retryable: the core alerts, reopens and
//!   sends every unconfirmed batch again (at-least-once: records of those batches confirmed
//!   before may be published twice).
//! - A connection or channel failure is retryable too.

use std::sync::Arc;

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicPublishArguments, Channel, ConfirmSelectArguments, ExchangeDeclareArguments,
};
use kps_connector_core::metrics::StreamMetrics;
use kps_connector_core::{
    Bytes, ConnectorError, ConnectorResult, PendingWrite, Sink, StreamContext, WriteOutcome,
    async_trait,
};

use crate::confirms::{Confirms, Unclaimed};
use crate::connection::{self, BrokerAddress, ChannelState, Link};
use crate::params::{AmqpParams, ExchangeType};
use crate::routing::Routing;

/// The metric counting records the broker returned as unroutable.
pub const UNROUTABLE_METRIC: &str = "amqp_unroutable";
/// The alert raised while the broker blocks publishing (a memory or disk alarm).
pub const BLOCKED_ALERT: &str = "broker-blocked";

/// Batches sent and waiting for their publisher confirms at once (the core's egress window).
///
/// RabbitMQ confirms a persistent message once its queues have written it to disk, in batches
/// of its own; with one batch at a time the connector would sit idle for that whole round trip.
/// Four batches (up to 4 x `--max-batch-records` records) keep the broker busy while it
/// persists, as the MQTT sink does, and bound what is published again after a failure.
pub const PENDING_WRITES: usize = 4;

/// An open publisher on one exchange.
pub struct AmqpSink {
    link: Link,
    channel: Channel,
    state: Arc<ChannelState>,
    mandatory: bool,
    properties: BasicProperties,
    shared: Arc<Shared>,
}

/// What the sink and its pending confirmations share.
struct Shared {
    exchange: String,
    routing: Routing,
    address: BrokerAddress,
    metrics: StreamMetrics,
    /// The channel's publisher confirms and the messages the broker returned.
    confirms: Arc<Confirms>,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("address", &self.shared.address.to_string())
            .field("exchange", &self.shared.exchange)
            .finish_non_exhaustive()
    }
}

impl AmqpSink {
    /// Connects, checks (or declares) the exchange and turns publisher confirms on.
    ///
    /// While the broker blocks the connection (`connection.blocked`, a memory or disk alarm),
    /// [`BLOCKED_ALERT`] is raised, and resolved when it unblocks it.
    pub async fn open(ctx: StreamContext, params: &AmqpParams) -> ConnectorResult<Self> {
        let exchange = params
            .exchange
            .as_deref()
            .ok_or_else(|| ConnectorError::invalid("exchange", "required for egress streams"))?;
        let routing = Routing::new(
            params.routing_key.as_deref(),
            params.routing_key_pointer.as_deref(),
        );
        let (link, address) =
            connection::connect(params, &ctx.default_client_id(255), Some(&ctx)).await?;
        let (channel, state) =
            open_exchange(&link, exchange, params.declare, params.exchange_type()).await?;
        let confirms = Arc::new(Confirms::new(params.mandatory()));
        link.feed_confirms(&channel, &state, confirms.clone())
            .await?;
        channel
            .confirm_select(ConfirmSelectArguments::new(false))
            .await
            .map_err(|e| link.failed("confirm.select", &state, &e))?;
        let mut properties = BasicProperties::default();
        if params.persistent() {
            properties.with_delivery_mode(2);
        }
        tracing::info!(%address, exchange, "publishing with confirms");
        Ok(Self {
            link,
            channel,
            state,
            mandatory: params.mandatory(),
            properties,
            shared: Arc::new(Shared {
                exchange: exchange.to_owned(),
                routing,
                address,
                metrics: ctx.metrics().clone(),
                confirms,
            }),
        })
    }
}

/// A channel on which `exchange` is known to exist (see `source::open_queue`).
async fn open_exchange(
    link: &Link,
    exchange: &str,
    declare: bool,
    kind: ExchangeType,
) -> ConnectorResult<(Channel, Arc<ChannelState>)> {
    let (channel, state) = link.channel().await?;
    if exchange.is_empty() {
        return Ok((channel, state));
    }
    let passive = ExchangeDeclareArguments::of_type(exchange, amqprs_kind(kind))
        .passive(true)
        .finish();
    match channel.exchange_declare(passive).await {
        Ok(()) => Ok((channel, state)),
        Err(_) if state.is_not_found() && declare => {
            // The failed check closed that channel.
            let (channel, state) = link.channel().await?;
            let durable = ExchangeDeclareArguments::of_type(exchange, amqprs_kind(kind))
                .durable(true)
                .finish();
            channel.exchange_declare(durable).await.map_err(|e| {
                link.failed(format!("cannot declare exchange `{exchange}`"), &state, &e)
            })?;
            tracing::info!(exchange, "declared the exchange");
            Ok((channel, state))
        }
        Err(_) if state.is_not_found() => Err(ConnectorError::retryable(format!(
            "exchange `{exchange}` not found (create it, or set declare: true)"
        ))),
        Err(e) => Err(link.failed(format!("cannot check exchange `{exchange}`"), &state, &e)),
    }
}

fn amqprs_kind(kind: ExchangeType) -> amqprs::channel::ExchangeType {
    match kind {
        ExchangeType::Direct => amqprs::channel::ExchangeType::Direct,
        ExchangeType::Fanout => amqprs::channel::ExchangeType::Fanout,
        ExchangeType::Topic => amqprs::channel::ExchangeType::Topic,
        ExchangeType::Headers => amqprs::channel::ExchangeType::Headers,
    }
}

/// A batch whose publishes are handed to the connection and whose confirms are awaited.
struct Published {
    /// The batch's number on this channel.
    batch: u64,
    /// The batch's records, what returned messages are matched against (none when publishing
    /// is not mandatory: nothing comes back then).
    records: Vec<Bytes>,
    /// Records refused before publishing (no routing key).
    outcome: WriteOutcome,
    /// The index of each published record, in publish order.
    sent: Vec<usize>,
}

impl AmqpSink {
    /// Publishes every record that has a routing key, handing the publishes to the connection
    /// in record order (not waiting for the broker's confirms).
    async fn publish(&self, records: &[Bytes]) -> ConnectorResult<Published> {
        let shared = &self.shared;
        if let Some(reason) = shared.confirms.failure() {
            return Err(ConnectorError::retryable(format!(
                "publishing to {}: {reason}",
                shared.address
            )));
        }
        if !self.channel.is_open() {
            return Err(ConnectorError::retryable(format!(
                "publishing to {}: {}",
                shared.address,
                self.link.ending(&self.state)
            )));
        }
        let mut outcome = WriteOutcome::default();
        let mut sent = Vec::with_capacity(records.len());
        let mut keys = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            match shared.routing.key_for(record) {
                Ok(key) => {
                    sent.push(index);
                    keys.push(key);
                }
                Err(reason) => outcome.reject(index, reason),
            }
        }
        // Registered before the first publish goes out, so that no confirm comes before its
        // batch is known.
        let batch = shared.confirms.register(sent.len());
        for (&index, routing_key) in sent.iter().zip(keys) {
            let arguments = BasicPublishArguments {
                exchange: shared.exchange.clone(),
                routing_key,
                mandatory: self.mandatory,
                immediate: false,
            };
            // amqprs takes the body as a Vec: the one copy of the record.
            self.channel
                .basic_publish(self.properties.clone(), records[index].to_vec(), arguments)
                .await
                .map_err(|e| {
                    self.link
                        .failed(format!("publishing to {}", shared.address), &self.state, &e)
                })?;
        }
        // Only a mandatory publish can come back: the records are kept to match it.
        let records = if self.mandatory {
            records.to_vec()
        } else {
            Vec::new()
        };
        Ok(Published {
            batch,
            records,
            outcome,
            sent,
        })
    }
}

#[async_trait]
impl Sink for AmqpSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        self.send(records).await?.await
    }

    async fn send(&mut self, records: &[Bytes]) -> ConnectorResult<PendingWrite> {
        let published = self.publish(records).await?;
        Ok(Box::pin(confirmed(self.shared.clone(), published)))
    }

    /// A batch's confirmation waits for the broker's confirms of its own publishes (and of the
    /// batches before it) only, so later batches may be sent while earlier ones wait.
    fn max_pending_writes(&self) -> usize {
        PENDING_WRITES
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        self.link.close().await;
        Ok(())
    }
}

/// Awaits every confirm of a published batch: Ok once the broker acked them all, with the
/// unroutable records refused; a nack or a lost channel is a retryable error.
async fn confirmed(shared: Arc<Shared>, published: Published) -> ConnectorResult<WriteOutcome> {
    let Published {
        batch,
        records,
        mut outcome,
        sent,
    } = published;
    let nacked = shared.confirms.settle(batch).await.map_err(|reason| {
        ConnectorError::retryable(format!(
            "awaiting publisher confirms from {}: {reason}",
            shared.address
        ))
    })?;
    if nacked > 0 {
        return Err(ConnectorError::retryable(format!(
            "the broker nacked {nacked} of {} record(s) published to exchange `{}` (a full queue or a broker error); writing them again",
            sent.len(),
            shared.exchange
        )));
    }
    shared.refuse_returned(batch, &records, &sent, &mut outcome)?;
    Ok(outcome)
}

impl Shared {
    /// Refuses the records of batch `batch` that the broker returned (unroutable): each
    /// returned message is matched to a record of the batch not matched yet with its body and
    /// routing key.
    fn refuse_returned(
        &self,
        batch: u64,
        records: &[Bytes],
        sent: &[usize],
        outcome: &mut WriteOutcome,
    ) -> ConnectorResult<()> {
        let mut matched = vec![false; sent.len()];
        let claimed = self
            .confirms
            .claim(batch, |message| {
                let at = (0..sent.len()).position(|at| {
                    let record = &records[sent[at]];
                    !matched[at]
                        && record[..] == message.body[..]
                        && self
                            .routing
                            .key_for(record)
                            .is_ok_and(|key| key == message.routing_key)
                })?;
                matched[at] = true;
                Some(sent[at])
            })
            .map_err(|Unclaimed(count)| {
                ConnectorError::retryable(format!(
                    "the broker returned {count} message(s) that match no record sent; writing the batch again"
                ))
            })?;
        if claimed.is_empty() {
            return Ok(());
        }
        for (index, message) in &claimed {
            outcome.reject(
                *index,
                format!(
                    "unroutable: exchange `{}` has no queue for routing key `{}` ({} {})",
                    self.exchange, message.routing_key, message.reply_code, message.reply_text
                ),
            );
        }
        outcome.rejected.sort_by_key(|r| r.index);
        self.metrics.count(UNROUTABLE_METRIC, claimed.len() as u64);
        Ok(())
    }
}

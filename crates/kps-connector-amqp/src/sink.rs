//! Egress: publish each record to the exchange with publisher confirms; a batch is confirmed
//! once the broker confirmed every record of it.
//!
//! Pipelined: [`Sink::send`] hands every publish of a batch to the connection in record order,
//! waits until lapin wrote their frames, and returns the batch's confirmation without waiting
//! for the broker. Up to [`PENDING_WRITES`] batches wait for their confirms at once; the core
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

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use futures::StreamExt;
use kps_connector_core::metrics::StreamMetrics;
use kps_connector_core::{
    Bytes, ConnectorError, ConnectorResult, PendingWrite, Severity, Sink, StreamContext,
    WriteOutcome, async_trait,
};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind, PublisherConfirm};

use crate::confirms::{Confirms, Unclaimed};
use crate::connection::{self, BrokerAddress, describe, is_not_found, retryable};
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
    connection: Connection,
    channel: Channel,
    options: BasicPublishOptions,
    properties: BasicProperties,
    shared: Arc<Shared>,
    /// Stops the task that watches for connection.blocked when the sink goes.
    _watcher: tokio_util::sync::DropGuard,
}

/// What the sink and its pending confirmations share.
struct Shared {
    exchange: ShortString,
    routing: Routing,
    address: BrokerAddress,
    metrics: StreamMetrics,
    /// The channel's publisher confirms and the messages they carry back.
    confirms: Confirms,
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
    pub async fn open(ctx: StreamContext, params: &AmqpParams) -> ConnectorResult<Self> {
        let exchange = params
            .exchange
            .as_deref()
            .ok_or_else(|| ConnectorError::invalid("exchange", "required for egress streams"))?;
        let routing = Routing::new(
            params.routing_key.as_deref(),
            params.routing_key_pointer.as_deref(),
        );
        let (connection, address) =
            connection::connect(params, &ctx.default_client_id(255)).await?;
        let channel = open_exchange(
            &connection,
            exchange,
            params.declare,
            params.exchange_type(),
        )
        .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| retryable("confirm.select", &e))?;
        let mut properties = BasicProperties::default();
        if params.persistent() {
            properties = properties.with_delivery_mode(2);
        }
        let watcher = watch_blocked(&ctx, &connection);
        tracing::info!(%address, exchange, "publishing with confirms");
        Ok(Self {
            connection,
            channel,
            options: BasicPublishOptions {
                mandatory: params.mandatory(),
                immediate: false,
            },
            properties,
            shared: Arc::new(Shared {
                exchange: exchange.into(),
                routing,
                address,
                metrics: ctx.metrics().clone(),
                confirms: Confirms::new(params.mandatory()),
            }),
            _watcher: watcher,
        })
    }
}

/// Raises [`BLOCKED_ALERT`] while the broker blocks this connection's publishing (writes then
/// wait), and resolves it when the broker unblocks it. The watch ends with the sink.
fn watch_blocked(ctx: &StreamContext, connection: &Connection) -> tokio_util::sync::DropGuard {
    let stop = ctx.cancelled().child_token();
    let guard = stop.clone().drop_guard();
    let mut events = Box::pin(connection.events_listener());
    let ctx = ctx.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => break,
                event = events.next() => event,
            };
            match event {
                Some(lapin::Event::ConnectionBlocked(reason)) => ctx.alert(
                    BLOCKED_ALERT,
                    Severity::Warning,
                    format!("the broker blocks publishing ({reason}); writes wait"),
                ),
                Some(lapin::Event::ConnectionUnblocked) => {
                    ctx.resolve_alert(BLOCKED_ALERT, "the broker accepts publishing again");
                }
                Some(_) => {}
                None => break,
            }
        }
    });
    guard
}

/// A channel on which `exchange` is known to exist (see `source::open_queue`).
async fn open_exchange(
    connection: &Connection,
    exchange: &str,
    declare: bool,
    kind: ExchangeType,
) -> ConnectorResult<Channel> {
    let channel = new_channel(connection).await?;
    if exchange.is_empty() {
        return Ok(channel);
    }
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let kind = match kind {
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Fanout => ExchangeKind::Fanout,
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Headers => ExchangeKind::Headers,
    };
    match channel
        .exchange_declare(
            exchange.into(),
            kind.clone(),
            passive,
            FieldTable::default(),
        )
        .await
    {
        Ok(()) => Ok(channel),
        Err(e) if is_not_found(&e) && declare => {
            let channel = new_channel(connection).await?;
            let durable = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(exchange.into(), kind, durable, FieldTable::default())
                .await
                .map_err(|e| retryable(format!("cannot declare exchange `{exchange}`"), &e))?;
            tracing::info!(exchange, "declared the exchange");
            Ok(channel)
        }
        Err(e) if is_not_found(&e) => Err(ConnectorError::retryable(format!(
            "exchange `{exchange}` not found (create it, or set declare: true)"
        ))),
        Err(e) => Err(retryable(format!("cannot check exchange `{exchange}`"), &e)),
    }
}

async fn new_channel(connection: &Connection) -> ConnectorResult<Channel> {
    connection
        .create_channel()
        .await
        .map_err(|e| retryable("cannot open a channel", &e))
}

/// A publish handed to the connection.
enum PublishState<F> {
    /// Its frames are queued; the future resolves once they are written.
    Sending(Pin<Box<F>>),
    /// Written; the broker's confirm is awaited.
    Sent(lapin::Result<PublisherConfirm>),
}

/// A batch whose frames are written and whose confirms are awaited.
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
    /// Publishes every record that has a routing key and waits until lapin wrote their frames
    /// (not for the broker's confirms).
    async fn publish(&self, records: &[Bytes]) -> ConnectorResult<Published> {
        let shared = &self.shared;
        let mut outcome = WriteOutcome::default();
        let mut sent = Vec::with_capacity(records.len());
        let mut publishing = Vec::with_capacity(records.len());
        // Hand every publish to the connection before awaiting any: each future is polled once
        // right away, which queues its frames and registers its confirm in record order.
        for (index, record) in records.iter().enumerate() {
            let key = match shared.routing.key_for(record) {
                Ok(key) => key,
                Err(reason) => {
                    outcome.reject(index, reason);
                    continue;
                }
            };
            sent.push(index);
            let mut future = Box::pin(self.channel.basic_publish(
                shared.exchange.clone(),
                key,
                self.options,
                record,
                self.properties.clone(),
            ));
            let state = match futures::poll!(future.as_mut()) {
                Poll::Ready(result) => PublishState::Sent(result),
                Poll::Pending => PublishState::Sending(future),
            };
            publishing.push(state);
        }
        let mut confirms = Vec::with_capacity(publishing.len());
        for state in publishing {
            let result = match state {
                PublishState::Sending(future) => future.await,
                PublishState::Sent(result) => result,
            };
            let confirm =
                result.map_err(|e| retryable(format!("publishing to {}", shared.address), &e))?;
            confirms.push(confirm);
        }
        let batch = shared.confirms.register(confirms);
        // Only a mandatory publish can come back: the records are kept to match it.
        let records = if self.options.mandatory {
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
        if let Err(e) = self.connection.close(200, "OK".into()).await {
            tracing::debug!(error = %describe(&e), "closing the connection");
        }
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
    let nacked = shared.confirms.settle(batch).await.map_err(|e| {
        retryable(
            format!("awaiting publisher confirms from {}", shared.address),
            &e,
        )
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
                let delivery = &message.delivery;
                let at = (0..sent.len()).position(|at| {
                    let record = &records[sent[at]];
                    !matched[at]
                        && record[..] == delivery.data[..]
                        && self
                            .routing
                            .key_for(record)
                            .is_ok_and(|key| key.as_str() == delivery.routing_key.as_str())
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
                    self.exchange,
                    message.delivery.routing_key.as_str(),
                    message.reply_code,
                    message.reply_text.as_str()
                ),
            );
        }
        outcome.rejected.sort_by_key(|r| r.index);
        self.metrics.count(UNROUTABLE_METRIC, claimed.len() as u64);
        Ok(())
    }
}

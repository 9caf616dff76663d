//! Egress: publish each record to the exchange with publisher confirms; `write` returns once the
//! broker confirmed every record of the batch.
//!
//! - An unroutable record (returned by the broker under `mandatory`) is refused in the
//!   [`WriteOutcome`]: the core raises an Alert and dead-letters it where configured.
//! - A record whose routing key cannot be found (`routing_key_pointer`) is refused the same way.
//! - A nack (the broker did not take responsibility: a full queue with `reject-publish`, an
//!   internal error) fails the write as retryable: the core alerts, reopens and writes the batch
//!   again (at-least-once: records of the batch confirmed before may be published twice).
//! - A connection or channel failure is retryable too.

use std::pin::Pin;
use std::task::Poll;

use futures::StreamExt;
use kps_connector_core::{
    Bytes, ConnectorError, ConnectorResult, Severity, Sink, StreamContext, WriteOutcome,
    async_trait,
};
use lapin::message::BasicReturnMessage;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind, PublisherConfirm};

use crate::connection::{self, BrokerAddress, describe, is_not_found, retryable};
use crate::params::{AmqpParams, ExchangeType};
use crate::routing::Routing;

/// The metric counting records the broker returned as unroutable.
pub const UNROUTABLE_METRIC: &str = "amqp_unroutable";
/// The alert raised while the broker blocks publishing (a memory or disk alarm).
pub const BLOCKED_ALERT: &str = "broker-blocked";

/// An open publisher on one exchange.
pub struct AmqpSink {
    ctx: StreamContext,
    connection: Connection,
    channel: Channel,
    exchange: ShortString,
    routing: Routing,
    options: BasicPublishOptions,
    properties: BasicProperties,
    address: BrokerAddress,
    /// Stops the task that watches for connection.blocked when the sink goes.
    _watcher: tokio_util::sync::DropGuard,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("address", &self.address.to_string())
            .field("exchange", &self.exchange)
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
            ctx,
            connection,
            channel,
            exchange: exchange.into(),
            routing,
            options: BasicPublishOptions {
                mandatory: params.mandatory(),
                immediate: false,
            },
            properties,
            address,
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

#[async_trait]
impl Sink for AmqpSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        let mut outcome = WriteOutcome::default();
        let mut published = Vec::with_capacity(records.len());
        let mut sent = Vec::with_capacity(records.len());
        // Hand every publish to the connection before awaiting any: each future is polled once
        // right away, which queues its frames and its confirm in record order.
        for (index, record) in records.iter().enumerate() {
            let key = match self.routing.key_for(record) {
                Ok(key) => key,
                Err(reason) => {
                    outcome.reject(index, reason);
                    continue;
                }
            };
            sent.push(index);
            let mut future = Box::pin(self.channel.basic_publish(
                self.exchange.clone(),
                key,
                self.options,
                record,
                self.properties.clone(),
            ));
            let state = match futures::poll!(future.as_mut()) {
                Poll::Ready(result) => PublishState::Sent(result),
                Poll::Pending => PublishState::Sending(future),
            };
            published.push(state);
        }
        let mut confirms = Vec::with_capacity(published.len());
        for state in published {
            let result = match state {
                PublishState::Sending(future) => future.await,
                PublishState::Sent(result) => result,
            };
            let confirm =
                result.map_err(|e| retryable(format!("publishing to {}", self.address), &e))?;
            confirms.push(confirm);
        }
        let mut returned = Vec::new();
        let mut nacked = 0usize;
        for confirm in confirms {
            match confirm.await {
                Ok(Confirmation::Ack(message)) => returned.extend(message),
                Ok(Confirmation::Nack(message)) => {
                    nacked += 1;
                    returned.extend(message);
                }
                Ok(Confirmation::NotRequested) => {}
                Err(e) => {
                    return Err(retryable(
                        format!("awaiting publisher confirms from {}", self.address),
                        &e,
                    ));
                }
            }
        }
        if nacked > 0 {
            return Err(ConnectorError::retryable(format!(
                "the broker nacked {nacked} of {} record(s) published to exchange `{}` (a full queue or a broker error); writing them again",
                records.len(),
                self.exchange
            )));
        }
        if !returned.is_empty() {
            self.refuse_returned(records, &sent, returned, &mut outcome)?;
        }
        Ok(outcome)
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        if let Err(e) = self.connection.close(200, "OK".into()).await {
            tracing::debug!(error = %describe(&e), "closing the connection");
        }
        Ok(())
    }
}

impl AmqpSink {
    /// Maps returned (unroutable) messages back to their records and refuses those. The broker
    /// returns them in publish order, so each is matched to the next record with its routing
    /// key and body.
    fn refuse_returned(
        &self,
        records: &[Bytes],
        sent: &[usize],
        returned: Vec<BasicReturnMessage>,
        outcome: &mut WriteOutcome,
    ) -> ConnectorResult<()> {
        let count = returned.len();
        let mut next = 0;
        for message in returned {
            let delivery = &message.delivery;
            let found = sent[next..].iter().position(|index| {
                let record = &records[*index];
                record[..] == delivery.data[..]
                    && self
                        .routing
                        .key_for(record)
                        .is_ok_and(|key| key.as_str() == delivery.routing_key.as_str())
            });
            let Some(offset) = found else {
                return Err(ConnectorError::retryable(
                    "the broker returned a message that matches no record of the batch; writing it again",
                ));
            };
            outcome.reject(
                sent[next + offset],
                format!(
                    "unroutable: exchange `{}` has no queue for routing key `{}` ({} {})",
                    self.exchange,
                    delivery.routing_key.as_str(),
                    message.reply_code,
                    message.reply_text.as_str()
                ),
            );
            next += offset + 1;
        }
        outcome.rejected.sort_by_key(|r| r.index);
        self.ctx.metrics().count(UNROUTABLE_METRIC, count as u64);
        Ok(())
    }
}

//! Ingress: consume a queue with manual acknowledgements; a batch is acknowledged (`basic.ack`
//! with `multiple`) only after the transport confirmed its records.
//!
//! The read path, per delivery: lapin's I/O thread parses the frames and queues the delivery on
//! the consumer; [`Source::next_batch`] takes the first one and every other one already queued
//! (up to `max_records`) into a batch, moving each body into its record without a copy. The
//! runtime publishes the batch and, once the transport confirmed it, calls the batch's
//! acknowledgement. Acknowledgements are coalesced (see `Acks`): under load the broker hears
//! one `basic.ack multiple` per quarter of the prefetch window, and at once when the stream has
//! caught up. While the stream is behind (the previous batch held more than one delivery),
//! `next_batch` lets the stream's other work run once before it collects, so each batch takes
//! what arrived meanwhile: fewer, larger batches, each of which costs a transport publish and a
//! confirmation round trip.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::stream::Peekable;
use futures::{FutureExt, StreamExt};
use kps_connector_core::events::alert_ids;
use kps_connector_core::{
    Acknowledge, Bytes, ConnectorError, ConnectorResult, Severity, Source, SourceBatch,
    StreamContext, async_trait,
};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::{DeliveryTag, FieldTable};
use lapin::{Channel, Connection, Consumer};

use crate::connection::{self, BrokerAddress, describe, is_not_found, retryable};
use crate::envelope::{self, Meta, Unhandled};
use crate::params::{AmqpParams, Envelope};

/// The metric counting deliveries rejected to the dead-letter exchange.
pub const REJECTED_METRIC: &str = "amqp_rejected";

/// An open consumer on one queue.
pub struct AmqpSource {
    ctx: StreamContext,
    connection: Connection,
    channel: Channel,
    /// Peekable, so `next_batch` can wait for a delivery without taking it (cancel-safe).
    consumer: Peekable<Consumer>,
    /// Deliveries in the previous batch (more than one: the stream is behind).
    last_batch: usize,
    consumer_tag: String,
    acks: Arc<Acks>,
    envelope: Envelope,
    max_record_bytes: usize,
    address: BrokerAddress,
}

impl std::fmt::Debug for AmqpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource")
            .field("address", &self.address.to_string())
            .field("queue", &self.consumer.get_ref().queue())
            .finish_non_exhaustive()
    }
}

impl AmqpSource {
    /// Connects, checks (or declares) the queue, sets the prefetch and starts consuming.
    pub async fn open(ctx: StreamContext, params: &AmqpParams) -> ConnectorResult<Self> {
        let queue = params
            .queue
            .as_deref()
            .ok_or_else(|| ConnectorError::invalid("queue", "required for ingress streams"))?;
        let name = ctx.default_client_id(255);
        let (connection, address) = connection::connect(params, &name).await?;
        let channel = open_queue(&connection, queue, params.declare).await?;
        channel
            .basic_qos(params.prefetch(), BasicQosOptions { global: false })
            .await
            .map_err(|e| retryable("basic.qos", &e))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                name.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| retryable(format!("cannot consume queue `{queue}`"), &e))?;
        tracing::info!(%address, queue, prefetch = params.prefetch(), "consuming");
        let acks = Arc::new(Acks::new(channel.clone(), params.prefetch()));
        Ok(Self {
            ctx,
            connection,
            channel,
            consumer: consumer.peekable(),
            last_batch: 0,
            consumer_tag: name,
            acks,
            envelope: params.envelope(),
            max_record_bytes: params.max_record_bytes(),
            address,
        })
    }
}

/// A channel on which `queue` is known to exist: checked passively, and declared durable when
/// missing and `declare` is set (a passive check first, so an existing queue's arguments, e.g.
/// its dead-letter exchange, are never contradicted).
async fn open_queue(
    connection: &Connection,
    queue: &str,
    declare: bool,
) -> ConnectorResult<Channel> {
    let channel = new_channel(connection).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(_) => Ok(channel),
        Err(e) if is_not_found(&e) && declare => {
            // The failed check closed that channel.
            let channel = new_channel(connection).await?;
            channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions::durable(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| retryable(format!("cannot declare queue `{queue}`"), &e))?;
            tracing::info!(queue, "declared the queue");
            Ok(channel)
        }
        Err(e) if is_not_found(&e) => Err(ConnectorError::retryable(format!(
            "queue `{queue}` not found (create it, or set declare: true)"
        ))),
        Err(e) => Err(retryable(format!("cannot check queue `{queue}`"), &e)),
    }
}

async fn new_channel(connection: &Connection) -> ConnectorResult<Channel> {
    connection
        .create_channel()
        .await
        .map_err(|e| retryable("cannot open a channel", &e))
}

/// The records of a batch in the making, and how to settle its deliveries.
struct Pending {
    records: Vec<Bytes>,
    last_record: Option<DeliveryTag>,
    last_taken: DeliveryTag,
    rejected: Vec<DeliveryTag>,
}

impl AmqpSource {
    /// Adds one consumer item to the batch; an error or the end of the consumer ends the source.
    fn take(
        &self,
        item: Option<lapin::Result<lapin::message::Delivery>>,
        pending: &mut Pending,
    ) -> ConnectorResult<()> {
        let delivery = match item {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(retryable(format!("consuming from {}", self.address), &e)),
            None => {
                return Err(ConnectorError::retryable(format!(
                    "the broker cancelled the consumer of queue `{}` (queue deleted?)",
                    self.consumer.get_ref().queue()
                )));
            }
        };
        let tag = delivery.delivery_tag;
        pending.last_taken = tag;
        let lapin::message::Delivery {
            exchange,
            routing_key,
            properties,
            data,
            ..
        } = delivery;
        let meta = Meta {
            exchange: exchange.as_str(),
            routing_key: routing_key.as_str(),
            properties: &properties,
        };
        match envelope::to_record(self.envelope, data, meta, self.max_record_bytes) {
            Ok(record) => {
                pending.records.push(record);
                pending.last_record = Some(tag);
            }
            Err(why) => {
                self.report_unhandled(why);
                pending.rejected.push(tag);
            }
        }
        Ok(())
    }

    fn report_unhandled(&self, why: Unhandled) {
        self.ctx.metrics().count(REJECTED_METRIC, 1);
        self.ctx.alert(
            alert_ids::RECORD_REJECTED,
            Severity::Warning,
            format!(
                "{why} was rejected without requeue (to the dead-letter exchange of queue `{}`, if it has one)",
                self.consumer.get_ref().queue()
            ),
        );
    }
}

#[async_trait]
impl Source for AmqpSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        let max_records = max_records.max(1);
        // Cancel-safe: until a delivery is taken, a dropped future loses nothing (the peeked
        // delivery stays in the consumer); after that, nothing awaits.
        Pin::new(&mut self.consumer).peek().await;
        if self.last_batch > 1 {
            // Behind: publishing and acknowledging the previous batches goes first, and this
            // batch takes what arrives meanwhile.
            tokio::task::yield_now().await;
        }
        let first = self.consumer.next().await;
        let mut pending = Pending {
            records: Vec::with_capacity(self.last_batch.max(16).min(max_records)),
            last_record: None,
            last_taken: 0,
            rejected: Vec::new(),
        };
        self.take(first, &mut pending)?;
        while pending.records.len() + pending.rejected.len() < max_records {
            match self.consumer.next().now_or_never() {
                Some(item) => self.take(item, &mut pending)?,
                None => break,
            }
        }
        self.acks.taken.store(pending.last_taken, Ordering::SeqCst);
        self.last_batch = pending.records.len() + pending.rejected.len();
        let ack = BatchAck {
            acks: self.acks.clone(),
            last_record: pending.last_record,
            last_taken: pending.last_taken,
            rejected: pending.rejected,
        };
        Ok(SourceBatch::new(pending.records, ack))
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        // Every batch handed out was confirmed and acknowledged by now: send what is deferred.
        if let Err(e) = self.acks.flush().await {
            tracing::debug!(error = %e, "basic.ack");
        }
        // Unacknowledged deliveries (prefetched, never returned) go back to the queue.
        let cancel = self
            .channel
            .basic_cancel(
                self.consumer_tag.as_str().into(),
                BasicCancelOptions::default(),
            )
            .await;
        if let Err(e) = cancel {
            tracing::debug!(error = %describe(&e), "basic.cancel");
        }
        if let Err(e) = self.connection.close(200, "OK".into()).await {
            tracing::debug!(error = %describe(&e), "closing the connection");
        }
        Ok(())
    }
}

/// The acknowledgements of one consumer, shared by the batches it hands out.
///
/// A confirmed batch's `basic.ack multiple` covers every earlier delivery too, so while later
/// batches are still on their way it may wait for theirs: it is sent once [`Acks::every`]
/// confirmed deliveries are waiting for it, or at once when no later batch was taken (the
/// stream caught up, or it is idle), or when the source closes. The broker then hears one
/// acknowledgement per `every` deliveries under load, as from a client that acknowledges every
/// so many messages, and at once when the flow stops. Nothing is ever acknowledged before the
/// transport confirmed it: only the runtime's acker calls [`BatchAck::ack`], in order.
struct Acks {
    channel: Channel,
    /// Confirmed deliveries that make an acknowledgement go out while later batches are in
    /// flight (a quarter of the prefetch window, so the broker never runs out of credit).
    every: u64,
    /// The delivery tag of the newest delivery taken into a batch.
    taken: AtomicU64,
    /// The newest delivery tag the transport confirmed (0: none yet).
    confirmed: AtomicU64,
    /// The newest delivery tag acknowledged to the broker (0: none yet).
    acked: AtomicU64,
}

impl Acks {
    fn new(channel: Channel, prefetch: u16) -> Self {
        Self {
            channel,
            every: u64::from(prefetch / 4).max(1),
            taken: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
        }
    }

    /// Acknowledges every confirmed delivery not acknowledged yet.
    async fn flush(&self) -> ConnectorResult<()> {
        let confirmed = self.confirmed.load(Ordering::SeqCst);
        if confirmed <= self.acked.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.channel
            .basic_ack(confirmed, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| retryable("basic.ack", &e))?;
        self.acked.store(confirmed, Ordering::SeqCst);
        Ok(())
    }
}

/// Settles one batch once the transport confirmed it: rejects (without requeue) what could not
/// be a record, then acknowledges every delivery up to the batch's last record with one
/// `basic.ack multiple`, now or together with a later batch (see [`Acks`]).
struct BatchAck {
    acks: Arc<Acks>,
    /// The batch's last record: it and every delivery before it may be acknowledged.
    last_record: Option<DeliveryTag>,
    /// The batch's last delivery (a record or a rejected message).
    last_taken: DeliveryTag,
    rejected: Vec<DeliveryTag>,
}

#[async_trait]
impl Acknowledge for BatchAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        let acks = &self.acks;
        for tag in &self.rejected {
            acks.channel
                .basic_reject(*tag, BasicRejectOptions { requeue: false })
                .await
                .map_err(|e| retryable("basic.reject", &e))?;
        }
        if let Some(tag) = self.last_record {
            acks.confirmed.store(tag, Ordering::SeqCst);
        }
        let newest = self.last_taken >= acks.taken.load(Ordering::SeqCst);
        let waiting = acks
            .confirmed
            .load(Ordering::SeqCst)
            .saturating_sub(acks.acked.load(Ordering::SeqCst));
        if newest || waiting >= acks.every {
            acks.flush().await?;
        }
        Ok(())
    }
}

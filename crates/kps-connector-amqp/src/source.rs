//! Ingress: consume a queue with manual acknowledgements; a batch is acknowledged (`basic.ack`
//! with `multiple`) only after the transport confirmed its records.
//!
//! The read path, per delivery: amqprs's reader task parses the frames and hands them to the
//! channel's dispatcher task, which assembles each delivery and sends it to the consumer's
//! receiver; [`Source::next_batch`] takes the first one and every other one already received
//! (up to `max_records`) into a batch, moving each body into its record without a copy. The
//! runtime publishes the batch and, once the transport confirmed it, calls the batch's
//! acknowledgement. Acknowledgements are coalesced (see `Acks`): under load the broker hears
//! one `basic.ack multiple` per sixteenth of the prefetch window, and at once when the stream has
//! caught up. While the stream is behind (the previous batch held more than one delivery),
//! `next_batch` lets the stream's other work run once before it collects, so each batch takes
//! what arrived meanwhile: fewer, larger batches, each of which costs a transport publish and a
//! confirmation round trip.
//!
//! The consumer's receiver ends when the channel or the connection closes, or when the broker
//! cancels the consumer (the queue was deleted): the source then fails with a retryable error
//! that says which.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use amqprs::channel::{
    BasicAckArguments, BasicCancelArguments, BasicConsumeArguments, BasicQosArguments,
    BasicRejectArguments, Channel, ConsumerMessage, QueueDeclareArguments,
};
use kps_connector_core::events::alert_ids;
use kps_connector_core::{
    Acknowledge, Bytes, ConnectorError, ConnectorResult, Severity, Source, SourceBatch,
    StreamContext, async_trait,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use crate::connection::{self, BrokerAddress, ChannelState, Link};
use crate::envelope::{self, Meta, Unhandled};
use crate::params::{AmqpParams, Envelope};

/// The metric counting deliveries rejected to the dead-letter exchange.
pub const REJECTED_METRIC: &str = "amqp_rejected";

/// How long a graceful stop waits for the broker to confirm the consumer's cancellation (the
/// connection's close follows, which requeues the prefetched deliveries anyway).
const CANCEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A delivery tag: the broker's number of a delivery on its channel.
type DeliveryTag = u64;

/// An open consumer on one queue.
pub struct AmqpSource {
    ctx: StreamContext,
    link: Link,
    channel: Channel,
    state: Arc<ChannelState>,
    queue: String,
    consumer: UnboundedReceiver<ConsumerMessage>,
    /// A delivery received and not taken into a batch yet (`next_batch` stays cancel-safe).
    held: Option<ConsumerMessage>,
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
            .field("queue", &self.queue)
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
        let (link, address) = connection::connect(params, &name, None).await?;
        let (channel, state) = open_queue(&link, queue, params.declare).await?;
        channel
            .basic_qos(BasicQosArguments::new(0, params.prefetch(), false))
            .await
            .map_err(|e| link.failed("basic.qos", &state, &e))?;
        let arguments = BasicConsumeArguments::new(queue, &name)
            .manual_ack(true)
            .finish();
        let (consumer_tag, consumer) = channel
            .basic_consume_rx(arguments)
            .await
            .map_err(|e| link.failed(format!("cannot consume queue `{queue}`"), &state, &e))?;
        tracing::info!(%address, queue, prefetch = params.prefetch(), "consuming");
        let acks = Arc::new(Acks::new(channel.clone(), params.prefetch()));
        Ok(Self {
            ctx,
            link,
            channel,
            state,
            queue: queue.to_owned(),
            consumer,
            held: None,
            last_batch: 0,
            consumer_tag,
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
    link: &Link,
    queue: &str,
    declare: bool,
) -> ConnectorResult<(Channel, Arc<ChannelState>)> {
    let (channel, state) = link.channel().await?;
    let passive = QueueDeclareArguments::new(queue).passive(true).finish();
    match channel.queue_declare(passive).await {
        Ok(_) => Ok((channel, state)),
        Err(_) if state.is_not_found() && declare => {
            // The failed check closed that channel.
            let (channel, state) = link.channel().await?;
            let durable = QueueDeclareArguments::durable_client_named(queue);
            channel
                .queue_declare(durable)
                .await
                .map_err(|e| link.failed(format!("cannot declare queue `{queue}`"), &state, &e))?;
            tracing::info!(queue, "declared the queue");
            Ok((channel, state))
        }
        Err(_) if state.is_not_found() => Err(ConnectorError::retryable(format!(
            "queue `{queue}` not found (create it, or set declare: true)"
        ))),
        Err(e) => Err(link.failed(format!("cannot check queue `{queue}`"), &state, &e)),
    }
}

/// The records of a batch in the making, and how to settle its deliveries.
struct Pending {
    records: Vec<Bytes>,
    last_record: Option<DeliveryTag>,
    last_taken: DeliveryTag,
    rejected: Vec<DeliveryTag>,
}

impl AmqpSource {
    /// Why the consumer's receiver ended: the broker cancelled the consumer, closed the channel
    /// or the connection, or the connection was lost.
    fn ended(&self) -> ConnectorError {
        if self.state.consumer_cancelled() {
            return ConnectorError::retryable(format!(
                "the broker cancelled the consumer of queue `{}` (queue deleted?)",
                self.queue
            ));
        }
        ConnectorError::retryable(format!(
            "consuming from {}: {}",
            self.address,
            self.link.ending(&self.state)
        ))
    }

    /// Adds one delivery to the batch.
    fn take(&self, message: ConsumerMessage, pending: &mut Pending) -> ConnectorResult<()> {
        let ConsumerMessage {
            deliver,
            basic_properties,
            content,
            ..
        } = message;
        let Some(deliver) = deliver else {
            return Err(ConnectorError::retryable(format!(
                "consuming from {}: a delivery without its basic.deliver",
                self.address
            )));
        };
        let tag = deliver.delivery_tag();
        pending.last_taken = tag;
        let properties = basic_properties.unwrap_or_default();
        let meta = Meta {
            exchange: deliver.exchange(),
            routing_key: deliver.routing_key(),
            properties: &properties,
        };
        let body = content.unwrap_or_default();
        match envelope::to_record(self.envelope, body, meta, self.max_record_bytes) {
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
                self.queue
            ),
        );
    }
}

#[async_trait]
impl Source for AmqpSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        let max_records = max_records.max(1);
        // Cancel-safe: a delivery received is held in `self` until it is taken; after that,
        // nothing awaits.
        if self.held.is_none() {
            match self.consumer.recv().await {
                Some(message) => self.held = Some(message),
                None => return Err(self.ended()),
            }
        }
        if self.last_batch > 1 {
            // Behind: publishing and acknowledging the previous batches goes first, and this
            // batch takes what arrives meanwhile.
            tokio::task::yield_now().await;
        }
        let mut pending = Pending {
            records: Vec::with_capacity(self.last_batch.max(16).min(max_records)),
            last_record: None,
            last_taken: 0,
            rejected: Vec::new(),
        };
        if let Some(first) = self.held.take() {
            self.take(first, &mut pending)?;
        }
        while pending.records.len() + pending.rejected.len() < max_records {
            match self.consumer.try_recv() {
                Ok(message) => self.take(message, &mut pending)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(self.ended()),
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
        if self.channel.is_open() {
            let cancel = self
                .channel
                .basic_cancel(BasicCancelArguments::new(&self.consumer_tag));
            match tokio::time::timeout(CANCEL_TIMEOUT, cancel).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(error = %connection::describe(&e), "basic.cancel"),
                Err(_) => tracing::debug!("basic.cancel timed out"),
            }
        }
        self.link.close().await;
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
    /// flight (a sixteenth of the prefetch window, 64 by default: the broker never runs out of
    /// credit, and hears acknowledgements as often as from a client that acknowledges every 64).
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
            every: u64::from(prefetch / 16).max(1),
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
        self.usable("basic.ack")?;
        self.channel
            .basic_ack(BasicAckArguments::new(confirmed, true))
            .await
            .map_err(|e| connection::retryable("basic.ack", &e))?;
        self.acked.store(confirmed, Ordering::SeqCst);
        Ok(())
    }

    /// Fails when the channel is closed: an acknowledgement sent on it would be lost (the
    /// broker requeued its deliveries when it closed).
    fn usable(&self, what: &str) -> ConnectorResult<()> {
        if self.channel.is_open() {
            Ok(())
        } else {
            Err(ConnectorError::retryable(format!(
                "{what}: the channel is closed"
            )))
        }
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
            acks.usable("basic.reject")?;
            acks.channel
                .basic_reject(BasicRejectArguments::new(*tag, false))
                .await
                .map_err(|e| connection::retryable("basic.reject", &e))?;
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

//! Ingress: consume a queue with manual acknowledgements; a batch is acknowledged (one
//! `basic.ack` with `multiple`) only after the transport confirmed its records.

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
    consumer: Consumer,
    consumer_tag: String,
    envelope: Envelope,
    max_record_bytes: usize,
    address: BrokerAddress,
}

impl std::fmt::Debug for AmqpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource")
            .field("address", &self.address.to_string())
            .field("queue", &self.consumer.queue())
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
        Ok(Self {
            ctx,
            connection,
            channel,
            consumer,
            consumer_tag: name,
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
    last_taken: Option<DeliveryTag>,
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
                    self.consumer.queue()
                )));
            }
        };
        let tag = delivery.delivery_tag;
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
                pending.last_taken = Some(tag);
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
                self.consumer.queue()
            ),
        );
    }
}

#[async_trait]
impl Source for AmqpSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        let max_records = max_records.max(1);
        // Cancel-safe: a dropped `next()` loses nothing (the consumer keeps its deliveries).
        let first = self.consumer.next().await;
        let mut pending = Pending {
            records: Vec::with_capacity(max_records.min(64)),
            last_taken: None,
            rejected: Vec::new(),
        };
        self.take(first, &mut pending)?;
        while pending.records.len() + pending.rejected.len() < max_records {
            match self.consumer.next().now_or_never() {
                Some(item) => self.take(item, &mut pending)?,
                None => break,
            }
        }
        let ack = BatchAck {
            channel: self.channel.clone(),
            last: pending.last_taken,
            rejected: pending.rejected,
        };
        Ok(SourceBatch::new(pending.records, ack))
    }

    async fn close(&mut self) -> ConnectorResult<()> {
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

/// Settles one batch: rejects (without requeue) what could not be a record, then acknowledges
/// every delivery up to the batch's last record with one `basic.ack multiple`.
struct BatchAck {
    channel: Channel,
    last: Option<DeliveryTag>,
    rejected: Vec<DeliveryTag>,
}

#[async_trait]
impl Acknowledge for BatchAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        for tag in &self.rejected {
            self.channel
                .basic_reject(*tag, BasicRejectOptions { requeue: false })
                .await
                .map_err(|e| retryable("basic.reject", &e))?;
        }
        if let Some(tag) = self.last {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| retryable("basic.ack", &e))?;
        }
        Ok(())
    }
}

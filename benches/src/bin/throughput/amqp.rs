//! AMQP: the connector beside amqprs, the client library it is built on, on the RabbitMQ of
//! `cargo xtask services up`.
//!
//! Ingress reads records that already wait in a durable queue (written with publisher
//! confirms, persistent); the raw reader is an amqprs consumer with the connector's default
//! prefetch (1024) acknowledging with `multiple` every 64 deliveries. Egress publishes to the
//! default exchange routing to a durable queue; the raw writer is an amqprs publisher with
//! confirms, persistent and mandatory, as the connector's sink, waiting for the confirms every
//! thousand publishes; arrivals are counted by the queue's depth.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, FieldValue, Nack, Return};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use kps_connector_core::async_trait;
use kps_connector_core::testkit::unique_name;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::measure::{Arrived, EgressEnd, IngressEnd, Observer, System, stamp};

/// The broker's host and port (its `guest` account works on loopback).
const HOST: &str = "127.0.0.1";
const PORT: u16 = 5672;

/// The connector's default prefetch.
const PREFETCH: u16 = 1024;

/// Publishes between two waits for confirms.
const CONFIRM_EVERY: usize = 1_000;

/// The RabbitMQ of the tests.
pub struct Amqp {
    connection: Connection,
}

impl Amqp {
    /// Connects to the broker.
    pub async fn connect() -> Result<Self> {
        Ok(Self {
            connection: connect().await?,
        })
    }

    /// A durable queue that the broker deletes after ten minutes unused (when a run fails
    /// before its cleanup).
    async fn queue(&self) -> Result<String> {
        let name = unique_name("kps_bench");
        let mut args = FieldTable::new();
        args.insert(
            "x-expires".try_into().context("a field name")?,
            FieldValue::I(600_000),
        );
        let channel = self.connection.open_channel(None).await?;
        channel
            .queue_declare(
                QueueDeclareArguments::durable_client_named(&name)
                    .arguments(args)
                    .finish(),
            )
            .await
            .context("queue.declare")?;
        let _ = channel.close().await;
        Ok(name)
    }
}

/// A connection to the broker, failing with the command that starts it.
async fn connect() -> Result<Connection> {
    let arguments = OpenConnectionArguments::new(HOST, PORT, "guest", "guest");
    match tokio::time::timeout(Duration::from_secs(10), Connection::open(&arguments)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => {
            bail!(
                "RabbitMQ at {HOST}:{PORT} is not reachable ({e}): cargo xtask services up rabbitmq"
            )
        }
        Err(_) => bail!("RabbitMQ at {HOST}:{PORT} did not answer within 10 s"),
    }
}

#[async_trait]
impl System for Amqp {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn client(&self) -> &'static str {
        "amqprs"
    }

    async fn ingress(&self, _size: usize) -> Result<Box<dyn IngressEnd>> {
        let queue = self.queue().await?;
        Ok(Box::new(AmqpIngress {
            queue,
            publisher: Publisher::open().await?,
        }))
    }

    async fn egress(&self, _size: usize) -> Result<Box<dyn EgressEnd>> {
        let queue = self.queue().await?;
        // Connected now, so that the raw writer's run does not include opening it.
        Ok(Box::new(AmqpEgress {
            queue,
            publisher: Publisher::open().await?,
        }))
    }

    fn notes(&self) -> Vec<String> {
        vec!["amqp: RabbitMQ on loopback, durable queues, persistent messages; ingress reads records already waiting in the queue (raw: amqprs consumer, the connector's client library, prefetch 1024 (the connector's default), ack multiple every 64); egress publishes to the default exchange (raw: amqprs publisher with confirms, persistent, mandatory, waiting for the confirms every 1000) and arrivals are counted by the queue's depth.".to_owned()]
    }
}

/// The publisher confirms of a confirm-mode channel: which delivery tags (numbered from 1) the
/// broker acked or nacked, and how many messages it returned.
#[derive(Default)]
struct Confirms {
    state: Mutex<ConfirmState>,
    changed: Notify,
}

#[derive(Default)]
struct ConfirmState {
    /// The tag of the newest publish.
    published: u64,
    /// Every tag up to this one is confirmed.
    floor: u64,
    /// Whether each tag after `floor` is confirmed.
    confirmed: VecDeque<bool>,
    nacked: u64,
    returned: u64,
    /// The channel ended: what is not confirmed yet never will be.
    ended: bool,
}

impl Confirms {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConfirmState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `count` publishes are about to go out.
    fn publishing(&self, count: usize) {
        let mut state = self.lock();
        state.published += count as u64;
        state.confirmed.extend(std::iter::repeat_n(false, count));
    }

    fn confirm(&self, tag: u64, multiple: bool, nack: bool) {
        let mut state = self.lock();
        let state = &mut *state;
        if tag <= state.floor {
            return;
        }
        let first = if multiple { state.floor + 1 } else { tag };
        for tag in first..=tag {
            if let Some(done) = state.confirmed.get_mut((tag - state.floor - 1) as usize)
                && !*done
            {
                *done = true;
                if nack {
                    state.nacked += 1;
                }
            }
        }
        while state.confirmed.front() == Some(&true) {
            state.confirmed.pop_front();
            state.floor += 1;
        }
        self.changed.notify_waiters();
    }

    /// Waits until every publish is confirmed; fails on a nack or a returned message.
    async fn wait(&self) -> Result<()> {
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            {
                let state = self.lock();
                if state.nacked > 0 {
                    bail!("{} messages nacked", state.nacked);
                }
                if state.returned > 0 {
                    bail!("{} messages returned unroutable", state.returned);
                }
                if state.floor == state.published {
                    return Ok(());
                }
                if state.ended {
                    bail!("the channel closed before every publish was confirmed");
                }
            }
            changed.await;
        }
    }
}

/// The confirm-mode channel's callback, feeding [`Confirms`].
struct ConfirmCallback(Arc<Confirms>);

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(&mut self, _: &Channel, _: CloseChannel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.confirm(ack.delivery_tag(), ack.mutiple(), false);
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0.confirm(nack.delivery_tag(), nack.multiple(), true);
    }

    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        self.0.lock().returned += 1;
    }
}

impl Drop for ConfirmCallback {
    fn drop(&mut self) {
        // The channel ended: nothing more will be confirmed.
        self.0.lock().ended = true;
        self.0.changed.notify_waiters();
    }
}

/// A connection with a confirm-mode channel and a plain one.
struct Publisher {
    connection: Connection,
    confirmed: Channel,
    confirms: Arc<Confirms>,
    plain: Channel,
    properties: BasicProperties,
}

impl Publisher {
    async fn open() -> Result<Self> {
        let connection = connect().await?;
        let confirmed = connection.open_channel(None).await?;
        let confirms = Arc::new(Confirms::default());
        confirmed
            .register_callback(ConfirmCallback(confirms.clone()))
            .await
            .context("channel callback")?;
        confirmed
            .confirm_select(ConfirmSelectArguments::new(false))
            .await
            .context("confirm.select")?;
        let plain = connection.open_channel(None).await?;
        let properties = BasicProperties::default().with_delivery_mode(2).finish();
        Ok(Self {
            connection,
            confirmed,
            confirms,
            plain,
            properties,
        })
    }

    /// Persistent, mandatory publishes with confirms, waited for every thousand.
    async fn publish_confirmed(&self, queue: &str, records: &[Bytes]) -> Result<()> {
        for chunk in records.chunks(CONFIRM_EVERY) {
            self.confirms.publishing(chunk.len());
            for record in chunk {
                let arguments = BasicPublishArguments::new("", queue)
                    .mandatory(true)
                    .finish();
                self.confirmed
                    .basic_publish(self.properties.clone(), record.to_vec(), arguments)
                    .await
                    .context("basic.publish")?;
            }
            self.confirms.wait().await.context("publisher confirms")?;
        }
        Ok(())
    }

    /// Persistent publishes on the plain channel: nothing to wait for.
    async fn publish(&self, queue: &str, records: &[Bytes]) -> Result<()> {
        for record in records {
            self.plain
                .basic_publish(
                    self.properties.clone(),
                    record.to_vec(),
                    BasicPublishArguments::new("", queue),
                )
                .await
                .context("basic.publish")?;
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.connection.close().await;
    }
}

/// An amqprs consumer: acknowledges with `multiple` every 64 deliveries (`ack`), or consumes
/// without acknowledgements.
struct Deliveries {
    connection: Connection,
    channel: Channel,
    consumer: UnboundedReceiver<ConsumerMessage>,
    ack: bool,
    unacked: u32,
    latency: bool,
}

impl Deliveries {
    async fn open(queue: &str, ack: bool, latency: bool) -> Result<Self> {
        let connection = connect().await?;
        let channel = connection.open_channel(None).await?;
        channel
            .basic_qos(BasicQosArguments::new(0, PREFETCH, false))
            .await
            .context("basic.qos")?;
        let (_, consumer) = channel
            .basic_consume_rx(
                BasicConsumeArguments::new(queue, "kps-bench")
                    .manual_ack(ack)
                    .finish(),
            )
            .await
            .context("basic.consume")?;
        Ok(Self {
            connection,
            channel,
            consumer,
            ack,
            unacked: 0,
            latency,
        })
    }
}

#[async_trait]
impl Observer for Deliveries {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let message = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_) | Ok(None) => return Ok(Arrived::default()),
            Ok(Some(message)) => message,
        };
        let tag = message
            .deliver
            .as_ref()
            .map(|deliver| deliver.delivery_tag())
            .context("a delivery without its basic.deliver")?;
        let record = Bytes::from(message.content.unwrap_or_default());
        let arrived = Arrived::of(std::slice::from_ref(&record), self.latency, stamp);
        if self.ack {
            self.unacked += 1;
            if self.unacked >= 64 {
                self.channel
                    .basic_ack(BasicAckArguments::new(tag, true))
                    .await
                    .context("basic.ack")?;
                self.unacked = 0;
            }
        }
        Ok(arrived)
    }

    async fn close(self: Box<Self>) {
        let _ = self.connection.close().await;
    }
}

/// Counts the messages in a queue (its depth), polled.
struct Depth {
    connection: Connection,
    channel: Channel,
    queue: String,
    seen: u64,
}

#[async_trait]
impl Observer for Depth {
    async fn next(&mut self, timeout: Duration) -> Result<Arrived> {
        let deadline = Instant::now() + timeout;
        loop {
            let declared = self
                .channel
                .queue_declare(
                    QueueDeclareArguments::new(&self.queue)
                        .passive(true)
                        .finish(),
                )
                .await
                .context("passive queue.declare")?;
            let depth = declared.map_or(0, |(_, count, _)| u64::from(count));
            if depth > self.seen {
                let count = depth - self.seen;
                self.seen = depth;
                return Ok(Arrived {
                    count,
                    latencies: Vec::new(),
                });
            }
            if Instant::now() >= deadline {
                return Ok(Arrived::default());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn close(self: Box<Self>) {
        let _ = self.connection.close().await;
    }
}

/// Deletes `queue` on a connection of its own.
async fn delete(queue: &str) {
    if let Ok(connection) = connect().await {
        if let Ok(channel) = connection.open_channel(None).await {
            let _ = channel.queue_delete(QueueDeleteArguments::new(queue)).await;
        }
        let _ = connection.close().await;
    }
}

/// A queue the connector consumes.
struct AmqpIngress {
    queue: String,
    publisher: Publisher,
}

#[async_trait]
impl IngressEnd for AmqpIngress {
    fn metadata(&self) -> Value {
        json!({"url": format!("amqp://{HOST}:{PORT}/%2f"), "queue": self.queue})
    }

    fn stored(&self) -> bool {
        true
    }

    async fn write(&mut self, records: &[Bytes]) -> Result<()> {
        self.publisher.publish_confirmed(&self.queue, records).await
    }

    async fn send(&mut self, records: &[Bytes]) -> Result<()> {
        self.publisher.publish(&self.queue, records).await
    }

    async fn raw_reader(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        Ok(Box::new(
            Deliveries::open(&self.queue, true, latency).await?,
        ))
    }

    async fn cleanup(self: Box<Self>) {
        self.publisher.close().await;
        delete(&self.queue).await;
    }
}

/// A queue the connector publishes to (through the default exchange).
struct AmqpEgress {
    queue: String,
    publisher: Publisher,
}

#[async_trait]
impl EgressEnd for AmqpEgress {
    fn metadata(&self) -> Value {
        json!({"url": format!("amqp://{HOST}:{PORT}/%2f"), "exchange": "", "routing_key": self.queue})
    }

    async fn observer(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        if latency {
            return Ok(Box::new(Deliveries::open(&self.queue, false, true).await?));
        }
        let connection = connect().await?;
        let channel = connection.open_channel(None).await?;
        Ok(Box::new(Depth {
            connection,
            channel,
            queue: self.queue.clone(),
            seen: 0,
        }))
    }

    async fn raw_write(&mut self, records: &[Bytes]) -> Result<()> {
        self.publisher.publish_confirmed(&self.queue, records).await
    }

    async fn raw_send(&mut self, records: &[Bytes]) -> Result<()> {
        self.publisher.publish(&self.queue, records).await
    }

    async fn cleanup(self: Box<Self>) {
        self.publisher.close().await;
        delete(&self.queue).await;
    }
}

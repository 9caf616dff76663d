//! AMQP: the connector beside lapin, on the RabbitMQ of `cargo xtask services up`.
//!
//! Ingress reads records that already wait in a durable queue (written with publisher
//! confirms, persistent); the raw reader is a lapin consumer with the connector's default prefetch (1024)
//! acknowledging with `multiple` every 64 deliveries. Egress publishes to the default exchange
//! routing to a durable queue; the raw writer is a lapin publisher with confirms, persistent
//! and mandatory, as the connector's sink; arrivals are counted by the queue's depth.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use kps_connector_core::async_trait;
use kps_connector_core::testkit::unique_name;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{Value, json};

use crate::measure::{Arrived, EgressEnd, IngressEnd, Observer, System, stamp};

/// The broker (its `guest` account works on loopback).
const ADDR: &str = "127.0.0.1:5672";

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
        let mut args = FieldTable::default();
        args.insert(ShortString::from("x-expires"), AMQPValue::LongInt(600_000));
        let channel = self.connection.create_channel().await?;
        channel
            .queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)
            .await
            .context("queue.declare")?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(name)
    }
}

/// A connection to the broker, failing with the command that starts it.
async fn connect() -> Result<Connection> {
    let url = format!("amqp://guest:guest@{ADDR}/%2f");
    match tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => {
            bail!("RabbitMQ at {ADDR} is not reachable ({e}): cargo xtask services up rabbitmq")
        }
        Err(_) => bail!("RabbitMQ at {ADDR} did not answer within 10 s"),
    }
}

#[async_trait]
impl System for Amqp {
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn client(&self) -> &'static str {
        "lapin"
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
        vec!["amqp: RabbitMQ on loopback, durable queues, persistent messages; ingress reads records already waiting in the queue (raw: lapin consumer, prefetch 1024 (the connector's default), ack multiple every 64); egress publishes to the default exchange (raw: lapin publisher with confirms, persistent, mandatory) and arrivals are counted by the queue's depth.".to_owned()]
    }
}

/// A connection with a confirm-mode channel and a plain one.
struct Publisher {
    connection: Connection,
    confirmed: Channel,
    plain: Channel,
}

impl Publisher {
    async fn open() -> Result<Self> {
        let connection = connect().await?;
        let confirmed = connection.create_channel().await?;
        confirmed
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("confirm.select")?;
        let plain = connection.create_channel().await?;
        Ok(Self {
            connection,
            confirmed,
            plain,
        })
    }

    /// Persistent, mandatory publishes with confirms, waited for every thousand.
    async fn publish_confirmed(&self, queue: &str, records: &[Bytes]) -> Result<()> {
        for chunk in records.chunks(CONFIRM_EVERY) {
            for record in chunk {
                let confirm = self
                    .confirmed
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        record,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .context("basic.publish")?;
                drop(confirm);
            }
            let returned = self
                .confirmed
                .wait_for_confirms()
                .await
                .context("publisher confirms")?;
            if !returned.is_empty() {
                bail!("{} messages returned unroutable", returned.len());
            }
        }
        Ok(())
    }

    /// Persistent publishes on the plain channel: nothing to wait for.
    async fn publish(&self, queue: &str, records: &[Bytes]) -> Result<()> {
        for record in records {
            let confirm = self
                .plain
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    record,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .context("basic.publish")?;
            drop(confirm);
        }
        Ok(())
    }

    async fn close(self) {
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// A lapin consumer: acknowledges with `multiple` every 64 deliveries (`ack`), or consumes
/// without acknowledgements.
struct Deliveries {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
    ack: bool,
    unacked: u32,
    latency: bool,
}

impl Deliveries {
    async fn open(queue: &str, ack: bool, latency: bool) -> Result<Self> {
        let connection = connect().await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .context("basic.qos")?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "kps-bench".into(),
                BasicConsumeOptions {
                    no_ack: !ack,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
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
        let delivery = match tokio::time::timeout(timeout, self.consumer.next()).await {
            Err(_) | Ok(None) => return Ok(Arrived::default()),
            Ok(Some(delivery)) => delivery.context("a delivery")?,
        };
        let tag = delivery.delivery_tag;
        let record = Bytes::from(delivery.data);
        let arrived = Arrived::of(std::slice::from_ref(&record), self.latency, stamp);
        if self.ack {
            self.unacked += 1;
            if self.unacked >= 64 {
                self.channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
                    .context("basic.ack")?;
                self.unacked = 0;
            }
        }
        Ok(arrived)
    }

    async fn close(self: Box<Self>) {
        let _ = self.connection.close(200, "OK".into()).await;
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
            let queue = self
                .channel
                .queue_declare(
                    self.queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .context("passive queue.declare")?;
            let depth = u64::from(queue.message_count());
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
        let _ = self.connection.close(200, "OK".into()).await;
    }
}

/// Deletes `queue` on a connection of its own.
async fn delete(queue: &str) {
    if let Ok(connection) = connect().await {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = connection.close(200, "OK".into()).await;
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
        json!({"url": format!("amqp://{ADDR}/%2f"), "queue": self.queue})
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
        json!({"url": format!("amqp://{ADDR}/%2f"), "exchange": "", "routing_key": self.queue})
    }

    async fn observer(&mut self, latency: bool) -> Result<Box<dyn Observer>> {
        if latency {
            return Ok(Box::new(Deliveries::open(&self.queue, false, true).await?));
        }
        let connection = connect().await?;
        let channel = connection.create_channel().await?;
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

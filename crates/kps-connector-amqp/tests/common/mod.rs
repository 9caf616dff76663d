//! Helpers the integration tests share: the RabbitMQ on 127.0.0.1:5672 (guest/guest), queues
//! with unique names that expire when a test leaves them behind, publishing and consuming.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use kps_connector_core::testkit::{self, EventView};
use kps_connector_core::{Bytes, State};
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};

/// The test broker (its default `guest` account works on loopback).
pub const AMQP_ADDR: &str = "127.0.0.1:5672";

/// The connector URL of the test broker.
pub fn amqp_url() -> String {
    format!("amqp://{AMQP_ADDR}/%2f")
}

/// A connection to the test broker; panics naming `cargo xtask services up` when it is down.
pub async fn rabbit() -> Connection {
    let url = format!("amqp://guest:guest@{AMQP_ADDR}/%2f");
    match tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(&url, ConnectionProperties::default()),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => testkit::service_unavailable(&format!("RabbitMQ at {AMQP_ADDR}"), e),
        Err(_) => testkit::service_unavailable(&format!("RabbitMQ at {AMQP_ADDR}"), "timed out"),
    }
}

/// A broker connection with one channel in confirm mode.
pub struct Rabbit {
    pub connection: Connection,
    pub channel: Channel,
}

impl Rabbit {
    pub async fn connect() -> Self {
        let connection = rabbit().await;
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm.select");
        Self {
            connection,
            channel,
        }
    }

    /// Declares a durable queue that the broker deletes after 10 minutes unused; `args` adds
    /// arguments (e.g. a dead-letter exchange).
    pub async fn queue(&self, name: &str, args: &[(&str, AMQPValue)]) {
        let mut table = FieldTable::default();
        table.insert(ShortString::from("x-expires"), AMQPValue::LongInt(600_000));
        for (key, value) in args {
            table.insert(ShortString::from(*key), value.clone());
        }
        self.channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), table)
            .await
            .expect("queue.declare");
    }

    /// Publishes `records` to `queue` through the default exchange, waiting for the confirms.
    pub async fn publish(&self, queue: &str, records: &[Bytes]) {
        for chunk in records.chunks(1000) {
            for record in chunk {
                let confirm = self
                    .channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        record,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .expect("basic.publish");
                drop(confirm);
            }
            self.channel.wait_for_confirms().await.expect("confirms");
        }
    }

    /// The number of ready messages in `queue`.
    pub async fn ready(&self, queue: &str) -> u32 {
        let channel = self.connection.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists");
        queue.message_count()
    }

    /// Whether `queue` exists.
    pub async fn exists(&self, queue: &str) -> bool {
        let channel = self.connection.create_channel().await.expect("channel");
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok()
    }

    /// An auto-acknowledging consumer of `queue`.
    pub async fn consumer(&self, queue: &str) -> Records {
        let channel = self.connection.create_channel().await.expect("channel");
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("basic.consume");
        Records {
            _channel: channel,
            consumer,
        }
    }

    pub async fn delete(&self, queue: &str) {
        let channel = self.connection.create_channel().await.expect("channel");
        let _ = channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
    }

    /// Declares direct exchange `exchange` and queue `queue` bound to it with `routing_key`.
    pub async fn routed_queue(&self, exchange: &str, queue: &str, routing_key: &str) {
        self.channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("exchange.declare");
        self.queue(queue, &[]).await;
        self.channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue.bind");
    }

    /// Deletes an exchange a test declared (if it is still there).
    pub async fn delete_exchange(&self, exchange: &str) {
        let _ = self
            .channel
            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// Bodies arriving on a queue.
pub struct Records {
    _channel: Channel,
    consumer: Consumer,
}

impl Records {
    /// Up to `n` bodies, waiting at most `timeout`.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Bytes> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.next()).await {
                Ok(Some(Ok(delivery))) => out.push(Bytes::from(delivery.data)),
                _ => break,
            }
        }
        out
    }
}

/// `kps-record-000000` ... as the data suite makes them.
pub fn records(range: std::ops::Range<usize>) -> Vec<Bytes> {
    range
        .map(|i| Bytes::from(format!("kps-record-{i:06}")))
        .collect()
}

/// Asserts `received` holds every record of `sent`, in order, and returns the duplicates.
pub fn assert_all_in_order(sent: &[Bytes], received: &[Bytes]) -> usize {
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&Bytes> = received.iter().filter(|r| seen.insert(*r)).collect();
    let missing = sent.iter().filter(|r| !seen.contains(r)).count();
    assert_eq!(missing, 0, "{missing} of {} records lost", sent.len());
    let sent_refs: Vec<&Bytes> = sent.iter().collect();
    assert!(distinct == sent_refs, "records out of order");
    received.len() - distinct.len()
}

/// The alerts and statuses of `stream` with `id`.
pub fn events_of<'a>(events: &'a [EventView], stream: &str, id: &str) -> Vec<&'a EventView> {
    events
        .iter()
        .filter(|e| e.stream_id == stream && e.id == id)
        .collect()
}

/// Whether `events` hold the status `state` for `stream`.
pub fn has_status(events: &[EventView], stream: &str, state: State) -> bool {
    events
        .iter()
        .any(|e| e.kind == "status" && e.stream_id == stream && e.state == state)
}

//! [`NatsProbe`]: the platform's side of the transport in tests: publish records as
//! TransportMessages, collect the records a connector published.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;

use crate::transport::wire;

/// A NATS client for tests.
#[derive(Clone)]
pub struct NatsProbe {
    client: async_nats::Client,
}

impl std::fmt::Debug for NatsProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsProbe")
    }
}

impl NatsProbe {
    /// Connects to the test NATS server; panics naming `cargo xtask services up` if it is down.
    pub async fn connect() -> Self {
        let url = super::nats_url();
        match tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url.as_str())).await
        {
            Ok(Ok(client)) => Self { client },
            Ok(Err(e)) => super::service_unavailable(&format!("NATS at {url}"), e),
            Err(_) => super::service_unavailable(&format!("NATS at {url}"), "timed out"),
        }
    }

    /// Subscribes to `subject`; records published after this call are collected.
    pub async fn subscribe(&self, subject: &str) -> RecordStream {
        let subscriber = self
            .client
            .subscribe(subject.to_owned())
            .await
            .expect("NATS subscribe");
        // Make sure the server registered the subscription before the test produces anything.
        server_round_trip(&self.client).await;
        RecordStream {
            subscriber,
            messages: 0,
            undecodable: 0,
        }
    }

    /// Publishes `records` on `subject`, `per_message` records per TransportMessage, and waits
    /// until the server has them.
    pub async fn publish_records(&self, subject: &str, records: &[Bytes], per_message: usize) {
        for chunk in records.chunks(per_message.max(1)) {
            let message = wire::encode(wire::now_nanos(), chunk);
            self.client
                .publish(subject.to_owned(), message)
                .await
                .expect("NATS publish");
        }
        server_round_trip(&self.client).await;
    }

    /// Deletes the JetStream stream `name` (a test's own, after it), ignoring a missing one.
    pub async fn delete_jetstream_stream(&self, name: &str) {
        let context = async_nats::jetstream::new(self.client.clone());
        let _ = context.delete_stream(name).await;
    }

    /// One server round trip (see [`server_round_trip`]): what a core NATS confirmation costs.
    pub async fn round_trip(&self) {
        server_round_trip(&self.client).await;
    }

    /// Publishes raw bytes (e.g. something that is not a TransportMessage).
    pub async fn publish_raw(&self, subject: &str, payload: Bytes) {
        self.client
            .publish(subject.to_owned(), payload)
            .await
            .expect("NATS publish");
        server_round_trip(&self.client).await;
    }
}

/// Returns once the server has processed everything `client` sent before this call.
///
/// `flush` only writes the client's buffer to the socket: a subscription flushed that way may
/// still be unknown to the server when another connection publishes, and those messages find
/// no subscriber. A request to a subject nobody serves comes back (as "no responders") only
/// after the server read everything before it on this connection, in order.
///
/// # Panics
/// If the server does not answer within 10 s.
pub async fn server_round_trip(client: &async_nats::Client) {
    let subject = format!("_KPS.test.round_trip.{}", super::unique_name("rt"));
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(subject, Bytes::new()),
    )
    .await
    .expect("NATS round trip: no answer within 10 s");
    if let Err(e) = answer {
        assert_eq!(
            e.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "NATS round trip: {e}"
        );
    }
}

/// Records arriving on a subject, decoded from TransportMessages.
pub struct RecordStream {
    subscriber: async_nats::Subscriber,
    messages: usize,
    undecodable: usize,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("messages", &self.messages)
            .finish()
    }
}

impl RecordStream {
    /// Collects records until `n` arrived or `timeout` passed; returns what arrived, in order.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Bytes> {
        let deadline = Instant::now() + timeout;
        let mut records = Vec::with_capacity(n);
        while records.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.subscriber.next()).await {
                Ok(Some(message)) => {
                    self.messages += 1;
                    match wire::decode(message.payload) {
                        Ok((_, decoded)) => records.extend(decoded),
                        Err(_) => self.undecodable += 1,
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        records
    }

    /// Collects whatever arrives within `quiet` of the previous message (to check that nothing
    /// more comes).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Bytes> {
        let mut records = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(quiet, self.subscriber.next()).await {
            self.messages += 1;
            match wire::decode(message.payload) {
                Ok((_, decoded)) => records.extend(decoded),
                Err(_) => self.undecodable += 1,
            }
        }
        records
    }

    /// How many TransportMessages arrived so far.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// How many messages were not TransportMessages.
    pub fn undecodable(&self) -> usize {
        self.undecodable
    }
}

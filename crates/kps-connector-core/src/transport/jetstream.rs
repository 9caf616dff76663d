//! JetStream, the opt-in durable mode: at-least-once end to end, across connector crashes.
//!
//! Ingress publishes wait for the stream's publish ack. Egress reads through a durable pull
//! consumer named after the stream and acknowledges each message only after the sink confirmed
//! it. Source positions live in a JetStream stream (see [`StreamStateBackend`]). A subject with no JetStream stream covering it gets one, `KPS_<subject>`, on first use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::nats::{NatsTransport, sanitize_name};
use super::{Confirmation, Delivery, DeliveryAck, Subscription, Transport, TransportError};
use crate::state::StateBackend;

/// The JetStream stream created for `subject` when no stream covers it: `KPS_<subject>` with
/// the characters a stream name cannot hold replaced.
pub fn stream_name_for(subject: &str) -> String {
    format!("KPS_{}", sanitize_name(subject))
}

/// A JetStream transport on top of the process's NATS connection.
pub struct JetStreamTransport {
    nats: NatsTransport,
    context: jetstream::Context,
    /// Subject -> the JetStream stream that covers it.
    streams: Mutex<HashMap<String, String>>,
    ack_timeout: Duration,
}

impl std::fmt::Debug for JetStreamTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamTransport").finish_non_exhaustive()
    }
}

impl JetStreamTransport {
    /// JetStream over `nats`; `ack_timeout` bounds each publish ack.
    pub fn new(nats: NatsTransport, ack_timeout: Duration) -> Self {
        let mut context = jetstream::new(nats.client().clone());
        context.set_timeout(ack_timeout);
        Self {
            nats,
            context,
            streams: Mutex::new(HashMap::new()),
            ack_timeout,
        }
    }

    /// The name of the JetStream stream covering `subject`, created when there is none.
    async fn stream_for(&self, subject: &str) -> Result<String, TransportError> {
        if let Some(name) = self.cached_stream(subject) {
            return Ok(name);
        }
        let unavailable = |e: &dyn std::fmt::Display| {
            TransportError::Unavailable(format!("JetStream stream for {subject}: {e}"))
        };
        let name = match self.context.stream_by_subject(subject).await {
            Ok(name) => name,
            Err(_) => {
                let name = stream_name_for(subject);
                self.context
                    .get_or_create_stream(stream::Config {
                        name: name.clone(),
                        subjects: vec![subject.to_owned()],
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unavailable(&e))?;
                name
            }
        };
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(subject.to_owned(), name.clone());
        }
        Ok(name)
    }

    fn cached_stream(&self, subject: &str) -> Option<String> {
        self.streams.lock().ok()?.get(subject).cloned()
    }

    /// A state backend on the JetStream stream `KPS_STATE_<bucket>` (created if missing), used
    /// for source positions in this mode.
    pub async fn state_backend(&self, bucket: &str) -> Result<StreamStateBackend, TransportError> {
        let bucket = sanitize_name(bucket);
        let stream = self
            .context
            .get_or_create_stream(stream::Config {
                name: format!("KPS_STATE_{bucket}"),
                subjects: vec![format!("kps_state.{bucket}.>")],
                max_messages_per_subject: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| TransportError::Unavailable(format!("state stream for {bucket}: {e}")))?;
        Ok(StreamStateBackend {
            context: self.context.clone(),
            stream,
            prefix: format!("kps_state.{bucket}"),
        })
    }
}

#[async_trait]
impl Transport for JetStreamTransport {
    async fn publish(
        &self,
        subject: &str,
        messages: Vec<Bytes>,
    ) -> Result<Confirmation, TransportError> {
        self.stream_for(subject).await?;
        let mut acks = Vec::with_capacity(messages.len());
        for message in messages {
            let ack = self
                .context
                .publish(subject.to_owned(), message)
                .await
                .map_err(|e| TransportError::Publish {
                    subject: subject.to_owned(),
                    message: e.to_string(),
                })?;
            acks.push(ack);
        }
        let subject = subject.to_owned();
        let timeout = self.ack_timeout;
        Ok(Confirmation::new(async move {
            for ack in acks {
                match tokio::time::timeout(timeout, ack.into_future()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        return Err(TransportError::Publish {
                            subject,
                            message: format!("no JetStream ack: {e}"),
                        });
                    }
                    Err(_) => {
                        return Err(TransportError::Unavailable(format!(
                            "no JetStream ack for {subject} within {timeout:?}"
                        )));
                    }
                }
            }
            Ok(())
        }))
    }

    async fn publish_dead_letter(
        &self,
        subject: &str,
        message: Bytes,
        reason: &str,
    ) -> Result<(), TransportError> {
        self.nats
            .publish_dead_letter(subject, message, reason)
            .await
    }

    async fn subscribe(
        &self,
        subject: &str,
        _group: &str,
        durable: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let subscribe_error = |e: &dyn std::fmt::Display| TransportError::Subscribe {
            subject: subject.to_owned(),
            message: e.to_string(),
        };
        let stream_name = self.stream_for(subject).await?;
        let stream = self
            .context
            .get_stream(&stream_name)
            .await
            .map_err(|e| subscribe_error(&e))?;
        let durable = sanitize_name(durable);
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: subject.to_owned(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    // A stopped replica's unacknowledged messages come back this soon.
                    ack_wait: Duration::from_secs(10),
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| subscribe_error(&e))?;
        // Short pull requests: one left behind by a stopped replica takes new messages only
        // briefly (they are redelivered after `ack_wait`).
        let messages = consumer
            .stream()
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| subscribe_error(&e))?;
        Ok(Box::new(JetStreamSubscription { messages }))
    }

    fn max_message_bytes(&self) -> usize {
        self.nats.max_message_bytes()
    }

    fn is_connected(&self) -> bool {
        self.nats.is_connected()
    }
}

struct JetStreamSubscription {
    messages: consumer::pull::Stream,
}

fn delivery(
    item: Result<jetstream::Message, consumer::pull::MessagesError>,
) -> Result<Delivery, TransportError> {
    match item {
        Ok(message) => Ok(Delivery::new(
            message.payload.clone(),
            Box::new(JetStreamAck(message)),
        )),
        Err(e) => Err(TransportError::Unavailable(format!(
            "JetStream consumer: {e}"
        ))),
    }
}

#[async_trait]
impl Subscription for JetStreamSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        self.messages.next().await.map(delivery)
    }

    fn try_next(&mut self) -> Option<Result<Delivery, TransportError>> {
        // Unconstrained: see the core NATS subscription's `try_next`.
        tokio::task::unconstrained(self.messages.next())
            .now_or_never()
            .flatten()
            .map(delivery)
    }

    async fn unsubscribe(&mut self) -> Result<(), TransportError> {
        // Dropping the pull stream stops fetching; the durable consumer keeps its position.
        Ok(())
    }
}

struct JetStreamAck(jetstream::Message);

#[async_trait]
impl DeliveryAck for JetStreamAck {
    async fn ack(self: Box<Self>) -> Result<(), TransportError> {
        self.0
            .ack()
            .await
            .map_err(|e| TransportError::Ack(e.to_string()))
    }
}

/// Source positions kept in a JetStream stream: one subject per key, one message per subject
/// (the stream keeps only the latest), written with a publish ack. This is what a JetStream
/// key-value bucket is underneath, without depending on the KV API's server version.
pub struct StreamStateBackend {
    context: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

impl StreamStateBackend {
    fn subject(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }
}

#[async_trait]
impl StateBackend for StreamStateBackend {
    async fn load(&self, key: &str) -> Result<Option<Bytes>, crate::ConnectorError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(key))
            .await
        {
            Ok(message) => Ok(Some(message.payload)),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(crate::ConnectorError::retryable(format!(
                "read state {key}: {e}"
            ))),
        }
    }

    async fn save(&self, key: &str, value: Bytes) -> Result<(), crate::ConnectorError> {
        let failed = |e: &dyn std::fmt::Display| {
            crate::ConnectorError::retryable(format!("save state {key}: {e}"))
        };
        self.context
            .publish(self.subject(key), value)
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    }
}

/// A [`StreamStateBackend`] opened (or created) on first use, so a connector starts while NATS
/// is still unreachable.
pub struct LazyStateBackend {
    transport: std::sync::Arc<JetStreamTransport>,
    bucket: String,
    store: tokio::sync::OnceCell<StreamStateBackend>,
}

impl LazyStateBackend {
    /// A backend for `bucket` through `transport`.
    pub fn new(transport: std::sync::Arc<JetStreamTransport>, bucket: String) -> Self {
        Self {
            transport,
            bucket,
            store: tokio::sync::OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&StreamStateBackend, crate::ConnectorError> {
        self.store
            .get_or_try_init(|| self.transport.state_backend(&self.bucket))
            .await
            .map_err(|e| crate::ConnectorError::retryable(e.to_string()))
    }
}

#[async_trait]
impl StateBackend for LazyStateBackend {
    async fn load(&self, key: &str) -> Result<Option<Bytes>, crate::ConnectorError> {
        self.store().await?.load(key).await
    }

    async fn save(&self, key: &str, value: Bytes) -> Result<(), crate::ConnectorError> {
        self.store().await?.save(key, value).await
    }
}

//! The pipeline transport: publishing TransportMessages for ingress, subscribing for egress.
//!
//! [`nats`] is the default (core NATS, what the platform speaks); [`jetstream`] is the opt-in
//! durable mode; [`memory`] is for the core's unit tests only. Only this module sees async-nats.

pub mod jetstream;
pub mod memory;
pub mod nats;
pub mod wire;

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The server did not confirm in time or the connection is down: retry.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// Publishing failed.
    #[error("publish to {subject}: {message}")]
    Publish {
        /// The subject.
        subject: String,
        /// What went wrong.
        message: String,
    },
    /// Subscribing failed.
    #[error("subscribe to {subject}: {message}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// What went wrong.
        message: String,
    },
    /// Acknowledging a delivery failed.
    #[error("acknowledge: {0}")]
    Ack(String),
}

/// Resolves once the transport confirmed the messages it was returned for.
pub struct Confirmation(Pin<Box<dyn Future<Output = Result<(), TransportError>> + Send>>);

impl Confirmation {
    /// A confirmation that waits for `future`.
    pub fn new(future: impl Future<Output = Result<(), TransportError>> + Send + 'static) -> Self {
        Self(Box::pin(future))
    }

    /// Already confirmed.
    pub fn confirmed() -> Self {
        Self::new(async { Ok(()) })
    }
}

impl Future for Confirmation {
    type Output = Result<(), TransportError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Confirmation")
    }
}

/// The transport a process shares between its streams (one connection per process).
#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Publishes encoded TransportMessages on `subject`, in order. Returns once they are handed
    /// to the client (applying backpressure); the [`Confirmation`] resolves when the server has
    /// them (core NATS: a server round trip after them; JetStream: every publish ack).
    async fn publish(
        &self,
        subject: &str,
        messages: Vec<Bytes>,
    ) -> Result<Confirmation, TransportError>;

    /// Publishes one refused record, as a TransportMessage, on a dead-letter subject, with the
    /// reason in a `Kps-Dead-Letter-Reason` header, and waits for the confirmation.
    async fn publish_dead_letter(
        &self,
        subject: &str,
        message: Bytes,
        reason: &str,
    ) -> Result<(), TransportError>;

    /// Subscribes to `subject`. `group` is the queue group (replicas share the load);
    /// `durable` names the durable consumer in JetStream mode.
    async fn subscribe(
        &self,
        subject: &str,
        group: &str,
        durable: &str,
    ) -> Result<Box<dyn Subscription>, TransportError>;

    /// The largest message the server accepts.
    fn max_message_bytes(&self) -> usize;

    /// Whether the connection to the server is up now.
    fn is_connected(&self) -> bool;
}

/// A subscription's deliveries, in order.
#[async_trait]
pub trait Subscription: Send {
    /// Waits for the next delivery; `None` when the subscription ended.
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>>;

    /// A delivery that is ready now, without waiting.
    fn try_next(&mut self) -> Option<Result<Delivery, TransportError>>;

    /// Stops new deliveries; those already received can still be taken with `try_next`.
    async fn unsubscribe(&mut self) -> Result<(), TransportError>;
}

/// Acknowledges one delivery to a durable transport.
#[async_trait]
pub trait DeliveryAck: Send + 'static {
    /// Acknowledges the delivery.
    async fn ack(self: Box<Self>) -> Result<(), TransportError>;
}

/// One transport message received.
pub struct Delivery {
    /// The encoded TransportMessage.
    pub payload: Bytes,
    ack: Option<Box<dyn DeliveryAck>>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("bytes", &self.payload.len())
            .field("durable", &self.ack.is_some())
            .finish()
    }
}

impl Delivery {
    /// A delivery with nothing to acknowledge (core NATS).
    pub fn unacknowledged(payload: Bytes) -> Self {
        Self { payload, ack: None }
    }

    /// A delivery acknowledged through `ack` (JetStream).
    pub fn new(payload: Bytes, ack: Box<dyn DeliveryAck>) -> Self {
        Self {
            payload,
            ack: Some(ack),
        }
    }

    /// Acknowledges the delivery, if the transport needs it.
    pub async fn ack(self) -> Result<(), TransportError> {
        match self.ack {
            Some(ack) => ack.ack().await,
            None => Ok(()),
        }
    }
}

/// Checks a NATS subject: not empty, no whitespace, no empty tokens; wildcards (`*`, `>`) only
/// where `allow_wildcards`.
pub fn validate_subject(subject: &str, allow_wildcards: bool) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{subject}` contains whitespace"));
    }
    for token in subject.split('.') {
        if token.is_empty() {
            return Err(format!("`{subject}` has an empty token"));
        }
        if !allow_wildcards && (token == "*" || token == ">") {
            return Err(format!(
                "`{subject}` has a wildcard, which cannot be published to"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_subject;

    #[test]
    fn subjects_are_checked() {
        assert!(validate_subject("sensors.temp", false).is_ok());
        assert!(validate_subject("sensors.*", true).is_ok());
        assert!(validate_subject("sensors.*", false).is_err());
        assert!(validate_subject("a..b", true).is_err());
        assert!(validate_subject("a b", true).is_err());
        assert!(validate_subject("", true).is_err());
    }
}

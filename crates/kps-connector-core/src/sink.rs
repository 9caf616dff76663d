//! The egress side a connector implements: a [`Sink`] writes a batch and returns once confirmed.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ConnectorResult;

/// A batch a sink sent and the outside system has yet to confirm: resolves to the batch's
/// outcome once confirmed, or to the error that broke the connection.
pub type PendingWrite = Pin<Box<dyn Future<Output = ConnectorResult<WriteOutcome>> + Send>>;

/// Writes records to the outside system for one egress stream.
///
/// [`Sink::write`] returns only after the outside system confirmed the records it accepted; the
/// runtime acknowledges the transport messages only then. A record the outside system refuses for
/// what it is (bad JSON, an unknown column) is reported in [`WriteOutcome::rejected`]: the runtime
/// raises an Alert, sends it to the dead-letter subject where one is configured, and goes on.
/// A connection failure is an `Err` (retryable): the runtime reopens the sink and writes the
/// same batch again.
#[async_trait]
pub trait Sink: Send + 'static {
    /// Writes `records` in order and waits for the outside system's confirmation.
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome>;

    /// Sends `records` in order and returns what resolves once the outside system confirmed
    /// them, without waiting for that. The runtime keeps up to
    /// [`Sink::max_pending_writes`] batches sent and unconfirmed, awaits their confirmations in
    /// the order it sent them, and acknowledges each batch's transport messages only once its
    /// confirmation resolved. On an error it reopens the sink and sends every unconfirmed
    /// batch again, in order. The default writes and waits (one batch at a time).
    async fn send(&mut self, records: &[Bytes]) -> ConnectorResult<PendingWrite> {
        let outcome = self.write(records).await;
        Ok(Box::pin(std::future::ready(outcome)))
    }

    /// How many sent batches may wait for their confirmation at once: 1 (the default) writes
    /// one batch at a time. A sink whose outside system confirms in order (MQTT PUBACKs, AMQP
    /// publisher confirms) can allow more, hiding the confirmation round trip.
    fn max_pending_writes(&self) -> usize {
        1
    }

    /// Closes the connection cleanly (graceful shutdown).
    async fn close(&mut self) -> ConnectorResult<()> {
        Ok(())
    }
}

/// What a write did with records that could not be written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Records refused for what they are, by index in the written slice.
    pub rejected: Vec<RejectedRecord>,
}

impl WriteOutcome {
    /// Every record was written.
    pub fn all_written() -> Self {
        Self::default()
    }

    /// Adds a refused record.
    pub fn reject(&mut self, index: usize, reason: impl Into<String>) {
        self.rejected.push(RejectedRecord {
            index,
            reason: reason.into(),
        });
    }
}

/// One record the outside system refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRecord {
    /// Its index in the slice given to [`Sink::write`].
    pub index: usize,
    /// Why, without the record's content.
    pub reason: String,
}

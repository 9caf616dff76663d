//! The ingress side a connector implements: a [`Source`] yields batches with an acknowledgement.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ConnectorResult;

/// Reads records from the outside system for one ingress stream.
///
/// The runtime calls [`Source::next_batch`] in a loop, publishes the records on the transport, and
/// calls the batch's [`Acknowledge`] only after the transport confirmed them, strictly in the order
/// the batches were returned. A source must therefore not acknowledge anything itself.
#[async_trait]
pub trait Source: Send + 'static {
    /// Waits until at least one record is available, then returns the records ready now, at most
    /// `max_records`, without waiting for more (batching only what is already waiting).
    ///
    /// Must be cancel-safe: the runtime may drop the future on shutdown; records it held are then
    /// simply not acknowledged and the outside system delivers them again.
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch>;

    /// Closes the connection cleanly after the last acknowledgement (graceful shutdown).
    async fn close(&mut self) -> ConnectorResult<()> {
        Ok(())
    }
}

/// Records read together, and how to acknowledge them once they are safe.
pub struct SourceBatch {
    /// The records, each one the bytes of one outside-system message.
    pub records: Vec<Bytes>,
    /// Called after the transport confirmed every record of this batch; `None` when the outside
    /// system has nothing to acknowledge (e.g. MQTT qos 0).
    pub ack: Option<Box<dyn Acknowledge>>,
}

impl SourceBatch {
    /// A batch with an acknowledgement.
    pub fn new(records: Vec<Bytes>, ack: impl Acknowledge) -> Self {
        Self {
            records,
            ack: Some(Box::new(ack)),
        }
    }

    /// A batch with nothing to acknowledge.
    pub fn unacknowledged(records: Vec<Bytes>) -> Self {
        Self { records, ack: None }
    }
}

impl std::fmt::Debug for SourceBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceBatch")
            .field("records", &self.records.len())
            .field("ack", &self.ack.is_some())
            .finish()
    }
}

/// Acknowledges a batch to the outside system (offset store, basic.ack, PUBACK, cursor save).
///
/// Runs on the runtime's acknowledgement path, in batch order, possibly concurrently with the
/// source's next `next_batch`, so it must own what it needs (a client handle, a delivery tag).
#[async_trait]
pub trait Acknowledge: Send + 'static {
    /// Acknowledges the batch. An error is treated like a source error (retryable: reopen).
    async fn ack(self: Box<Self>) -> ConnectorResult<()>;
}

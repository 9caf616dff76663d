//! The egress side a connector implements: a [`Sink`] writes a batch and returns once confirmed.

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ConnectorResult;

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

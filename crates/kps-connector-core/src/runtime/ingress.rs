//! Ingress: source -> TransportMessages -> transport, with acknowledgements flowing back to the
//! source in order, only after the transport confirmed.
//!
//! Two halves run concurrently in the stream's task: the pump reads a batch (whatever is already
//! waiting), encodes it and publishes it; the acker awaits each batch's confirmation in order and
//! then acknowledges it to the source. At most `max_in_flight` batches sit between them, which is
//! the backpressure on the source.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::erased::ParsedParams;
use super::{StreamDeps, StreamError, report_open};
use crate::backoff::Backoff;
use crate::context::StreamContext;
use crate::events::alert_ids;
use crate::source::Acknowledge;
use crate::transport::{Confirmation, wire};

struct InFlight {
    confirmation: Confirmation,
    ack: Option<Box<dyn Acknowledge>>,
    records: u64,
    bytes: u64,
    messages: u64,
}

/// One attempt: open the source and pump until cancelled (Ok, after draining) or an error.
pub(super) async fn run(
    deps: &Arc<StreamDeps>,
    ctx: &StreamContext,
    params: &ParsedParams,
    backoff: &mut Backoff,
) -> Result<(), StreamError> {
    let mut source = deps.connector.open_source(ctx.clone(), params).await?;
    report_open(ctx, "reading");

    let batch = deps.batch;
    let max_bytes = batch.max_bytes.min(deps.transport.max_message_bytes());
    let (tx, mut rx) = mpsc::channel::<InFlight>(batch.max_in_flight.max(1));
    let acker_failed = CancellationToken::new();
    let cancel = ctx.cancel.clone();
    let channel = ctx.transport_channel.clone();

    let pump = async {
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = acker_failed.cancelled() => break,
                next = source.next_batch(batch.max_records) => next,
            };
            let next = next?;
            let records = next.records.len() as u64;
            let bytes: u64 = next.records.iter().map(|r| r.len() as u64).sum();
            let mut messages = 0;
            let confirmation = if next.records.is_empty() {
                Confirmation::confirmed()
            } else {
                let encoded = wire::encode_batches(
                    wire::now_nanos(),
                    &next.records,
                    batch.max_records,
                    max_bytes,
                );
                messages = encoded.len() as u64;
                // A publish can wait for the transport (its buffer full while NATS is away):
                // give up when the acker failed, so the error is reported and the stream retried.
                tokio::select! {
                    biased;
                    _ = acker_failed.cancelled() => break,
                    published = deps.transport.publish(&channel, encoded) => published?,
                }
            };
            let in_flight = InFlight {
                confirmation,
                ack: next.ack,
                records,
                bytes,
                messages,
            };
            // With the in-flight window full the send waits for the acker; if the acker fails
            // meanwhile (a confirmation timed out) nothing will make room: stop here.
            let sent = tokio::select! {
                biased;
                _ = acker_failed.cancelled() => break,
                sent = tx.send(in_flight) => sent,
            };
            if sent.is_err() {
                break;
            }
        }
        drop(tx);
        Ok::<(), StreamError>(())
    };

    let acker = async {
        let mut publish_alert_open = true;
        let result = async {
            while let Some(in_flight) = rx.recv().await {
                in_flight.confirmation.await?;
                if let Some(ack) = in_flight.ack {
                    ack.ack().await?;
                }
                ctx.metrics
                    .record_batch(in_flight.records, in_flight.bytes, in_flight.messages);
                backoff.reset();
                if publish_alert_open {
                    ctx.events.resolve(
                        alert_ids::TRANSPORT_PUBLISH,
                        &ctx.stream_id,
                        "publishing again",
                    );
                    publish_alert_open = false;
                }
            }
            Ok::<(), StreamError>(())
        }
        .await;
        if result.is_err() {
            acker_failed.cancel();
        }
        result
    };

    let (pumped, acked) = tokio::join!(pump, acker);
    // Records the pump published before an error were still confirmed and acknowledged by the
    // acker; now report the first error, if any.
    pumped?;
    acked?;
    if let Err(e) = source.close().await {
        tracing::debug!(error = %e, "closing the source");
    }
    Ok(())
}

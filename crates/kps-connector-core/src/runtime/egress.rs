//! Egress: transport -> decode -> sink, acknowledging transport messages only after the sink
//! confirmed their records.
//!
//! Messages already waiting are written together (one sink write for several TransportMessages).
//! A sink failure keeps the subscription and the batch: the sink is reopened after backoff and
//! the same batch written again. An undecodable message is counted, alerted, dead-lettered where
//! configured, and skipped.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::erased::ParsedParams;
use super::{StreamDeps, StreamError, report_open};
use crate::backoff::Backoff;
use crate::config::dead_letter_subject;
use crate::context::StreamContext;
use crate::events::{Severity, State, alert_ids};
use crate::sink::{PendingWrite, Sink, WriteOutcome};
use crate::transport::{Delivery, Subscription, wire};

/// Deliveries taken from the transport and the records they hold.
#[derive(Default)]
struct Batch {
    deliveries: Vec<Delivery>,
    records: Vec<Bytes>,
}

/// One attempt: subscribe, then write until cancelled (Ok, after draining) or a transport error.
pub(super) async fn run(
    deps: &Arc<StreamDeps>,
    ctx: &StreamContext,
    params: &ParsedParams,
    backoff: &mut Backoff,
) -> Result<(), StreamError> {
    let mut subscription = deps
        .transport
        .subscribe(&ctx.transport_channel, &ctx.stream_id, &durable_name(ctx))
        .await?;
    let mut sink = deps.connector.open_sink(ctx.clone(), params).await?;
    report_open(ctx, "writing");

    let result = write_loop(deps, ctx, params, backoff, subscription.as_mut(), &mut sink).await;
    match result {
        Ok(()) => {
            // Graceful drain: stop the flow, write what was already received, then close.
            if let Err(e) = subscription.unsubscribe().await {
                tracing::debug!(error = %e, "unsubscribe");
            }
            let mut rest = Batch::default();
            while let Some(delivery) = subscription.try_next() {
                take(deps, ctx, &mut rest, delivery?).await?;
            }
            if !rest.deliveries.is_empty() {
                write_batch(deps, ctx, sink.as_mut(), rest).await?;
            }
            if let Err(e) = sink.close().await {
                tracing::debug!(error = %e, "closing the sink");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn durable_name(ctx: &StreamContext) -> String {
    format!("kps-{}-{}", ctx.connector_id, ctx.stream_id)
}

async fn write_loop(
    deps: &Arc<StreamDeps>,
    ctx: &StreamContext,
    params: &ParsedParams,
    backoff: &mut Backoff,
    subscription: &mut dyn Subscription,
    sink: &mut Box<dyn Sink>,
) -> Result<(), StreamError> {
    let max_records = deps.batch.max_records.max(1);
    // Batches sent and not confirmed yet, oldest first.
    let mut pending: VecDeque<(Batch, PendingWrite)> = VecDeque::new();
    loop {
        let window = sink.max_pending_writes().max(1);
        let failed = if pending.len() >= window {
            // The window is full: wait for the oldest confirmation.
            complete_oldest(deps, ctx, backoff, &mut pending).await?
        } else {
            let next = match pending.front_mut() {
                None => tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => return Ok(()),
                    next = subscription.next() => next,
                },
                Some((_, confirmation)) => tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => {
                        // Stopping: what was sent is confirmed and acknowledged first.
                        while !pending.is_empty() {
                            if let Some(e) = complete_oldest(deps, ctx, backoff, &mut pending).await? {
                                return Err(e.into());
                            }
                        }
                        return Ok(());
                    }
                    outcome = confirmation => {
                        if let Some(e) = settle_oldest(deps, ctx, backoff, &mut pending, outcome).await? {
                            recover(deps, ctx, params, backoff, sink, &mut pending, None, e).await?;
                        }
                        continue;
                    }
                    next = subscription.next() => next,
                },
            };
            let Some(first) = next else {
                return Err(StreamError::Transport(
                    crate::transport::TransportError::Unavailable("subscription ended".to_owned()),
                ));
            };
            let mut batch = Batch::default();
            take(deps, ctx, &mut batch, first?).await?;
            while batch.records.len() < max_records {
                match subscription.try_next() {
                    Some(delivery) => take(deps, ctx, &mut batch, delivery?).await?,
                    None => break,
                }
            }
            if batch.deliveries.is_empty() {
                continue;
            }
            match try_send(sink.as_mut(), &batch.records).await {
                Ok(confirmation) => {
                    pending.push_back((batch, confirmation));
                    None
                }
                Err(e) if e.is_retryable() => {
                    recover(
                        deps,
                        ctx,
                        params,
                        backoff,
                        sink,
                        &mut pending,
                        Some(batch),
                        e,
                    )
                    .await?;
                    None
                }
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(e) = failed {
            recover(deps, ctx, params, backoff, sink, &mut pending, None, e).await?;
        }
    }
}

/// Waits for the oldest pending confirmation and finishes its batch; returns the retryable error
/// if the confirmation failed (the batch stays pending, to be sent again).
async fn complete_oldest(
    deps: &StreamDeps,
    ctx: &StreamContext,
    backoff: &mut Backoff,
    pending: &mut VecDeque<(Batch, PendingWrite)>,
) -> Result<Option<crate::ConnectorError>, StreamError> {
    let Some((_, confirmation)) = pending.front_mut() else {
        return Ok(None);
    };
    let outcome = confirmation.await;
    settle_oldest(deps, ctx, backoff, pending, outcome).await
}

/// Handles the oldest pending batch's confirmation `outcome`: a confirmed batch is finished
/// (dead letters, acknowledgements) and leaves the window; a retryable error is returned with
/// the batch still pending, to be sent again.
async fn settle_oldest(
    deps: &StreamDeps,
    ctx: &StreamContext,
    backoff: &mut Backoff,
    pending: &mut VecDeque<(Batch, PendingWrite)>,
    outcome: Result<WriteOutcome, crate::ConnectorError>,
) -> Result<Option<crate::ConnectorError>, StreamError> {
    match outcome {
        Ok(outcome) => {
            if let Some((batch, _)) = pending.pop_front() {
                finish(deps, ctx, batch, outcome).await?;
                backoff.reset();
            }
            Ok(None)
        }
        Err(e) if e.is_retryable() => Ok(Some(e)),
        Err(e) => Err(e.into()),
    }
}

/// After a failed send or confirmation: reopens the sink with backoff, then sends every
/// unconfirmed batch again, oldest first (then `failed`, the batch whose send failed), until
/// they are all sent or the stream is cancelled (unsent batches are not acknowledged, so a
/// durable transport delivers them again).
#[allow(clippy::too_many_arguments)]
async fn recover(
    deps: &StreamDeps,
    ctx: &StreamContext,
    params: &ParsedParams,
    backoff: &mut Backoff,
    sink: &mut Box<dyn Sink>,
    pending: &mut VecDeque<(Batch, PendingWrite)>,
    failed: Option<Batch>,
    error: crate::ConnectorError,
) -> Result<(), StreamError> {
    let mut unsent: Vec<Batch> = pending.drain(..).map(|(batch, _)| batch).collect();
    unsent.extend(failed);
    let mut error = error;
    loop {
        ctx.metrics.error();
        ctx.metrics.restart();
        tracing::warn!(error = %error, "sink write failed; reopening");
        ctx.events.status(
            &ctx.stream_id,
            State::Unhealthy,
            format!("retrying: {error}"),
        );
        ctx.alert(alert_ids::CONNECTION, Severity::Warning, error.to_string());
        loop {
            if !backoff.wait(&ctx.cancel).await {
                // Stopping with unwritten batches: they are not acknowledged.
                return Ok(());
            }
            match deps.connector.open_sink(ctx.clone(), params).await {
                Ok(new_sink) => {
                    *sink = new_sink;
                    report_open(ctx, "writing");
                    break;
                }
                Err(e) if e.is_retryable() => {
                    ctx.events
                        .status(&ctx.stream_id, State::Unhealthy, format!("retrying: {e}"));
                    ctx.alert(alert_ids::CONNECTION, Severity::Warning, e.to_string());
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Send again, oldest first, keeping within the new sink's window.
        let mut resend = std::mem::take(&mut unsent).into_iter();
        let mut failure = None;
        for batch in resend.by_ref() {
            if pending.len() >= sink.max_pending_writes().max(1)
                && let Some(e) = complete_oldest(deps, ctx, backoff, pending).await?
            {
                unsent.extend(pending.drain(..).map(|(batch, _)| batch));
                unsent.push(batch);
                failure = Some(e);
                break;
            }
            match try_send(sink.as_mut(), &batch.records).await {
                Ok(confirmation) => pending.push_back((batch, confirmation)),
                Err(e) if e.is_retryable() => {
                    unsent.extend(pending.drain(..).map(|(batch, _)| batch));
                    unsent.push(batch);
                    failure = Some(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        match failure {
            None => return Ok(()),
            Some(e) => {
                unsent.extend(resend);
                error = e;
            }
        }
    }
}

async fn try_send(
    sink: &mut dyn Sink,
    records: &[Bytes],
) -> Result<PendingWrite, crate::ConnectorError> {
    if records.is_empty() {
        return Ok(Box::pin(std::future::ready(
            Ok(WriteOutcome::all_written()),
        )));
    }
    sink.send(records).await
}

/// Adds a delivery to the batch, or handles it as undecodable.
async fn take(
    deps: &StreamDeps,
    ctx: &StreamContext,
    batch: &mut Batch,
    delivery: Delivery,
) -> Result<(), StreamError> {
    match wire::decode(delivery.payload.clone()) {
        Ok((_, records)) => {
            batch.records.extend(records);
            batch.deliveries.push(delivery);
            Ok(())
        }
        Err(e) => {
            ctx.metrics.undecodable();
            tracing::debug!(error = %e, "undecodable transport message skipped");
            ctx.alert(
                alert_ids::UNDECODABLE_INPUT,
                Severity::Warning,
                format!(
                    "undecodable message on {} skipped: {e}",
                    ctx.transport_channel
                ),
            );
            if let Some(subject) = dead_letter_subject(&deps.config.current(), &ctx.stream_id) {
                deps.transport
                    .publish_dead_letter(&subject, delivery.payload.clone(), &e.to_string())
                    .await?;
                ctx.metrics.dead_lettered(1);
            }
            delivery.ack().await?;
            Ok(())
        }
    }
}

async fn write_batch(
    deps: &StreamDeps,
    ctx: &StreamContext,
    sink: &mut dyn Sink,
    batch: Batch,
) -> Result<(), StreamError> {
    let outcome = try_send(sink, &batch.records).await?.await?;
    finish(deps, ctx, batch, outcome).await
}

/// After a confirmed write: dead-letter the refused records, acknowledge the deliveries, count.
async fn finish(
    deps: &StreamDeps,
    ctx: &StreamContext,
    batch: Batch,
    outcome: WriteOutcome,
) -> Result<(), StreamError> {
    if !outcome.rejected.is_empty() {
        let dead_letters = dead_letter_subject(&deps.config.current(), &ctx.stream_id);
        for rejected in &outcome.rejected {
            let Some(record) = batch.records.get(rejected.index) else {
                continue;
            };
            if let Some(subject) = &dead_letters {
                let message = wire::encode(wire::now_nanos(), std::slice::from_ref(record));
                deps.transport
                    .publish_dead_letter(subject, message, &rejected.reason)
                    .await?;
            }
        }
        ctx.metrics.dead_lettered(outcome.rejected.len() as u64);
        let first = &outcome.rejected[0].reason;
        ctx.alert(
            alert_ids::RECORD_REJECTED,
            Severity::Warning,
            format!(
                "{} record(s) refused by the outside system{}; first: {first}",
                outcome.rejected.len(),
                if dead_letters.is_some() {
                    " and dead-lettered"
                } else {
                    ""
                },
            ),
        );
    }
    let records = batch.records.len() as u64;
    let bytes: u64 = batch.records.iter().map(|r| r.len() as u64).sum();
    let messages = batch.deliveries.len() as u64;
    for delivery in batch.deliveries {
        delivery.ack().await?;
    }
    ctx.metrics
        .record_batch(records - outcome.rejected.len() as u64, bytes, messages);
    Ok(())
}

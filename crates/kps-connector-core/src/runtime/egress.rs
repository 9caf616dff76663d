//! Egress: transport -> decode -> sink, acknowledging transport messages only after the sink
//! confirmed their records.
//!
//! Messages already waiting are written together (one sink write for several TransportMessages).
//! A sink failure keeps the subscription and the batch: the sink is reopened after backoff and
//! the same batch written again. An undecodable message is counted, alerted, dead-lettered where
//! configured, and skipped.

use std::sync::Arc;

use bytes::Bytes;

use super::erased::ParsedParams;
use super::{StreamDeps, StreamError, report_open};
use crate::backoff::Backoff;
use crate::config::dead_letter_subject;
use crate::context::StreamContext;
use crate::events::{Severity, State, alert_ids};
use crate::sink::{Sink, WriteOutcome};
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
    loop {
        let first = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Ok(()),
            next = subscription.next() => next,
        };
        let Some(first) = first else {
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
        // Write, reopening the sink with backoff until it takes the batch or we are cancelled.
        loop {
            match try_write(sink.as_mut(), &batch.records).await {
                Ok(outcome) => {
                    finish(deps, ctx, std::mem::take(&mut batch), outcome).await?;
                    backoff.reset();
                    break;
                }
                Err(e) if e.is_retryable() => {
                    ctx.metrics.error();
                    ctx.metrics.restart();
                    tracing::warn!(error = %e, "sink write failed; reopening");
                    ctx.events
                        .status(&ctx.stream_id, State::Unhealthy, format!("retrying: {e}"));
                    ctx.alert(alert_ids::CONNECTION, Severity::Warning, e.to_string());
                    loop {
                        if !backoff.wait(&ctx.cancel).await {
                            // Stopping with an unwritten batch: it is not acknowledged, so a
                            // durable transport delivers it again.
                            return Ok(());
                        }
                        match deps.connector.open_sink(ctx.clone(), params).await {
                            Ok(new_sink) => {
                                *sink = new_sink;
                                report_open(ctx, "writing");
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                ctx.events.status(
                                    &ctx.stream_id,
                                    State::Unhealthy,
                                    format!("retrying: {e}"),
                                );
                                ctx.alert(alert_ids::CONNECTION, Severity::Warning, e.to_string());
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

async fn try_write(
    sink: &mut dyn Sink,
    records: &[Bytes],
) -> Result<WriteOutcome, crate::ConnectorError> {
    if records.is_empty() {
        return Ok(WriteOutcome::all_written());
    }
    sink.write(records).await
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
    let outcome = try_write(sink, &batch.records).await?;
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

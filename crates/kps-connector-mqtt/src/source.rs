//! Ingress: an MQTT subscription as a [`Source`]. One MQTT message is one record.
//!
//! A task polls rumqttc's event loop continuously (pings, acks, reads) and forwards every
//! PUBLISH into a bounded channel; [`MqttSource::next_batch`] waits for one and takes whatever
//! else is already waiting. With qos >= 1 the client runs with manual acks: the PUBACK (qos 1)
//! or PUBREC (qos 2) of a message is sent only when the runtime acknowledges its batch, which it
//! does after NATS confirmed the records. A crash or a lost connection before that leaves the
//! message unacknowledged, and the broker delivers it again (with a persistent session).
//!
//! When the connection breaks the task hands the records it already received to the source,
//! then the error; the runtime reopens the source after backoff.

use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::{
    Acknowledge, ConnectorError, ConnectorResult, Source, SourceBatch, StreamContext, async_trait,
};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{self, connection_error, linger};
use crate::envelope;
use crate::params::{BrokerUrl, Envelope, MqttParams};

/// Messages received and not yet taken by `next_batch` (beyond this the task stops reading the
/// socket, and TCP pushes back on the broker).
const RECEIVED_CAPACITY: usize = 1024;

/// The request channel must hold every acknowledgement that can be outstanding: packet ids are
/// 16-bit, so at most 65,535 messages can wait for their ack. Then `ack` never waits on the
/// event loop while the event loop waits on the source (no deadlock), whatever the broker's
/// in-flight window. The channel allocates only for what it holds.
const REQUEST_CAPACITY: usize = 65_535 + 16;

/// How long opening may take (connect, CONNACK, SUBACK).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `close` waits for the broker to take the DISCONNECT and close the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// The durable state key holding the filter this stream's persistent session subscribed to.
const SUBSCRIBED_KEY: &str = "mqtt.subscribed_filter";

/// What the event loop task hands to the source.
type Received = Result<Publish, ConnectorError>;

/// An open MQTT subscription.
pub struct MqttSource {
    ctx: StreamContext,
    client: AsyncClient,
    received: mpsc::Receiver<Received>,
    envelope: Envelope,
    /// An error seen while batching, returned by the next call.
    pending_error: Option<ConnectorError>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Stops the event loop task when the source is dropped.
    _stop: DropGuard,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("stream", &self.ctx.stream_id())
            .finish_non_exhaustive()
    }
}

impl MqttSource {
    /// Connects, subscribes (waiting for the SUBACK) and starts the event loop task.
    pub async fn open(ctx: StreamContext, params: &MqttParams) -> ConnectorResult<Self> {
        let qos = qos(params.qos);
        let manual_acks = qos != QoS::AtMostOnce;
        // The subscriber publishes nothing: a small outgoing window keeps the client small.
        let settings = client::settings(&ctx, params, 10, REQUEST_CAPACITY, manual_acks).await?;
        let broker = settings.broker;
        let persistent = !settings.options.clean_session();
        let (client, eventloop) = client::connect(settings.options, REQUEST_CAPACITY);

        // Requests queue until the event loop connects; they go out right after the CONNACK.
        let previous = if persistent {
            ctx.state().load(SUBSCRIBED_KEY).await?
        } else {
            None
        };
        if let Some(previous) = previous
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            && previous != params.topic
        {
            // The stream's filter changed: drop the old subscription from the persistent session.
            tracing::info!(old = previous, new = %params.topic, "filter changed; unsubscribing the old one");
            client
                .unsubscribe(previous)
                .await
                .map_err(|_| closed(&broker))?;
        }
        client
            .subscribe(params.topic.clone(), qos)
            .await
            .map_err(|e| ConnectorError::invalid("topic", format!("cannot subscribe: {e}")))?;

        let (tx, rx) = mpsc::channel(RECEIVED_CAPACITY);
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(drive(
            eventloop,
            broker.clone(),
            params.topic.clone(),
            qos,
            tx,
            ready_tx,
            stop.clone(),
        ));
        let stop = stop.drop_guard();

        let cancelled = ctx.cancelled();
        let ready = tokio::select! {
            ready = ready_rx => ready.unwrap_or_else(|_| Err(closed(&broker))),
            _ = tokio::time::sleep(OPEN_TIMEOUT) => Err(ConnectorError::retryable(format!(
                "mqtt broker {broker}: no answer to connect and subscribe within {OPEN_TIMEOUT:?}"
            ))),
            _ = cancelled.cancelled() => Err(ConnectorError::retryable("stream stopped while connecting")),
        };
        ready?;
        if persistent && previous.as_deref() != Some(params.topic.as_bytes()) {
            ctx.state()
                .save(SUBSCRIBED_KEY, params.topic.clone())
                .await?;
        }
        tracing::info!(%broker, topic = %params.topic, qos = params.qos, persistent, "subscribed");
        Ok(Self {
            ctx,
            client,
            received: rx,
            envelope: params.envelope,
            pending_error: None,
            task: Some(task),
            _stop: stop,
        })
    }
}

/// The record of one MQTT message: its payload as is (no copy), or the json envelope.
fn record(envelope: Envelope, publish: &Publish) -> Bytes {
    match envelope {
        Envelope::None => publish.payload.clone(),
        Envelope::Json => envelope::encode(
            &publish.topic,
            &publish.payload,
            publish.qos as u8,
            publish.retain,
        ),
    }
}

#[async_trait]
impl Source for MqttSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        // Cancel-safe: nothing is taken from the channel unless this call returns it.
        let first = match self.received.recv().await {
            Some(Ok(publish)) => publish,
            Some(Err(error)) => return Err(error),
            None => return Err(ConnectorError::retryable("mqtt event loop stopped")),
        };
        let mut records = Vec::with_capacity(max_records.clamp(1, 256));
        let mut acks = Vec::new();
        let envelope = self.envelope;
        let mut redelivered = 0;
        let mut take = |publish: Publish| {
            records.push(record(envelope, &publish));
            redelivered += u64::from(publish.dup);
            if publish.qos != QoS::AtMostOnce {
                acks.push((publish.qos, publish.pkid));
            }
        };
        take(first);
        let mut taken = 1;
        while taken < max_records {
            match self.received.try_recv() {
                Ok(Ok(publish)) => take(publish),
                Ok(Err(error)) => {
                    self.pending_error = Some(error);
                    break;
                }
                Err(_) => break,
            }
            taken += 1;
        }
        if redelivered > 0 {
            // Messages the broker sent again (an earlier session did not acknowledge them).
            self.ctx.metrics().count("mqtt_redelivered", redelivered);
        }
        if acks.is_empty() {
            Ok(SourceBatch::unacknowledged(records))
        } else {
            Ok(SourceBatch::new(
                records,
                MqttAck {
                    client: self.client.clone(),
                    acks,
                },
            ))
        }
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        // Messages not taken stay unacknowledged (the broker delivers them again); closing the
        // channel also frees the event loop task if it waits for room in it.
        self.received.close();
        // Every acknowledgement was queued before this (the runtime closes after the last ack);
        // the DISCONNECT goes out after them.
        if self.client.disconnect().await.is_ok()
            && let Some(task) = self.task.take()
        {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
        }
        Ok(())
    }
}

/// Acknowledges a batch's qos 1 and 2 messages to the broker, in order.
struct MqttAck {
    client: AsyncClient,
    /// (qos, packet id) of each message to acknowledge; qos 0 messages need none.
    acks: Vec<(QoS, u16)>,
}

#[async_trait]
impl Acknowledge for MqttAck {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        for (qos, pkid) in self.acks {
            // rumqttc builds the PUBACK/PUBREC from the qos and packet id only.
            let mut key = Publish::from_bytes(String::new(), qos, Bytes::new());
            key.pkid = pkid;
            self.client.ack(&key).await.map_err(|_| {
                ConnectorError::retryable(
                    "mqtt connection closed before the acknowledgement went out; the broker delivers those messages again",
                )
            })?;
        }
        Ok(())
    }
}

fn closed(broker: &BrokerUrl) -> ConnectorError {
    ConnectorError::retryable(format!("mqtt broker {broker}: connection closed"))
}

/// The rumqttc qos of a validated parameter.
pub(crate) fn qos(value: u8) -> QoS {
    match value {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Polls the event loop until the source is dropped or closed, or the connection breaks.
async fn drive(
    mut eventloop: EventLoop,
    broker: BrokerUrl,
    topic: String,
    requested: QoS,
    tx: mpsc::Sender<Received>,
    ready: oneshot::Sender<ConnectorResult<()>>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    // Cleared once the source closed its channel: messages are then dropped unacknowledged while
    // the DISCONNECT goes out.
    let mut forwarding = true;
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if forwarding {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        sent = tx.send(Ok(publish)) => forwarding = sent.is_ok(),
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                tracing::debug!(session_present = connack.session_present, "connected");
            }
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                let granted = suback.return_codes.first().copied();
                match granted {
                    Some(SubscribeReasonCode::Success(qos)) => {
                        if qos != requested {
                            tracing::warn!(requested = ?requested, granted = ?qos, "broker granted a lower qos");
                        }
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    }
                    _ => {
                        let error = ConnectorError::retryable(format!(
                            "mqtt broker {broker} refused the subscription to `{topic}` (not authorized or invalid filter)"
                        ));
                        fail(&tx, &mut ready, error).await;
                        return;
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                linger(&mut eventloop).await;
                return;
            }
            Ok(_) => {}
            Err(error) => {
                let error = connection_error(&broker, &error);
                tracing::debug!(%error, "mqtt event loop ended");
                fail(&tx, &mut ready, error).await;
                return;
            }
        }
    }
}

/// Reports an error: to `open` while it waits, otherwise after the records already received.
async fn fail(
    tx: &mpsc::Sender<Received>,
    ready: &mut Option<oneshot::Sender<ConnectorResult<()>>>,
    error: ConnectorError,
) {
    match ready.take() {
        Some(ready) => {
            let _ = ready.send(Err(error));
        }
        None => {
            let _ = tx.send(Err(error)).await;
        }
    }
}

//! Egress: records published to an MQTT topic by a [`Sink`] that returns only once the broker
//! confirmed every one of them.
//!
//! `write` hands each record to the client (the stream's qos and retain flag, or the record's
//! own with the json envelope), then waits until the event loop task has counted as many
//! confirmations as publishes were handed over: a PUBACK for qos 1, a PUBCOMP for qos 2, and for
//! qos 0 the publish written to the socket (qos 0 has no confirmation). The task polls
//! rumqttc's event loop continuously and counts those events; one client per sink means every
//! PUBACK/PUBCOMP it sees answers one of our publishes, in order.
//!
//! A broken connection fails the write with a retryable error: the runtime reopens the sink
//! (a new connection) after backoff and writes the same batch again, so delivery is at least
//! once across reconnects.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use kps_connector_core::events::alert_ids;
use kps_connector_core::{
    ConnectorError, ConnectorResult, PendingWrite, Severity, Sink, StreamContext, WriteOutcome,
    async_trait,
};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{self, MAX_PACKET_BYTES, connection_error, linger};
use crate::envelope;
use crate::params::{BrokerUrl, Envelope, MqttParams};
use crate::source::qos;

/// Publishes queued for the event loop beyond the in-flight window.
const REQUEST_CAPACITY: usize = 256;

/// Batches sent and waiting for their PUBACKs at once (the core's egress window).
const PENDING_WRITES: usize = 4;

/// How long opening may take (connect and CONNACK).
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `close` waits for the broker to take the DISCONNECT and close the connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the event loop task and the sink share.
#[derive(Default)]
struct Progress {
    /// Confirmations counted since the connection opened.
    confirmed: AtomicU64,
    /// The count `write` waits for.
    target: AtomicU64,
    /// Wakes `write` when `confirmed` reaches `target` or the connection broke.
    notify: Notify,
    /// Set once the connection broke.
    broken: AtomicBool,
    /// Why it broke.
    error: Mutex<Option<ConnectorError>>,
}

impl Progress {
    fn confirm(&self) {
        let confirmed = self.confirmed.fetch_add(1, Ordering::SeqCst) + 1;
        if confirmed >= self.target.load(Ordering::SeqCst) {
            self.notify.notify_one();
        }
    }

    fn fail(&self, error: ConnectorError) {
        *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        self.broken.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    fn error(&self, broker: &BrokerUrl) -> ConnectorError {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| {
                ConnectorError::retryable(format!("mqtt broker {broker}: connection closed"))
            })
    }
}

/// An open MQTT publisher.
pub struct MqttSink {
    client: AsyncClient,
    broker: BrokerUrl,
    topic: String,
    qos: QoS,
    retain: bool,
    envelope: Envelope,
    progress: Arc<Progress>,
    /// Publishes handed to the client on this connection.
    sent: u64,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Stops the event loop task when the sink is dropped.
    _stop: DropGuard,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("broker", &self.broker)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl MqttSink {
    /// Connects (waiting for the CONNACK) and starts the event loop task.
    pub async fn open(ctx: StreamContext, params: &MqttParams) -> ConnectorResult<Self> {
        let settings =
            client::settings(&ctx, params, params.inflight(), REQUEST_CAPACITY, false).await?;
        let broker = settings.broker;
        let (client, eventloop) = client::connect(settings.options, REQUEST_CAPACITY);
        let progress = Arc::new(Progress::default());
        let (ready_tx, ready_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(drive(
            eventloop,
            ctx.clone(),
            broker.clone(),
            progress.clone(),
            ready_tx,
            stop.clone(),
        ));
        let stop = stop.drop_guard();
        let cancelled = ctx.cancelled();
        let ready = tokio::select! {
            ready = ready_rx => ready.unwrap_or_else(|_| Err(progress.error(&broker))),
            _ = tokio::time::sleep(OPEN_TIMEOUT) => Err(ConnectorError::retryable(format!(
                "mqtt broker {broker}: no answer to connect within {OPEN_TIMEOUT:?}"
            ))),
            _ = cancelled.cancelled() => Err(ConnectorError::retryable("stream stopped while connecting")),
        };
        ready?;
        tracing::info!(%broker, topic = %params.topic, qos = params.qos, "connected");
        Ok(Self {
            client,
            broker,
            topic: params.topic.clone(),
            qos: qos(params.qos),
            retain: params.retain,
            envelope: params.envelope,
            progress,
            sent: 0,
            task: Some(task),
            _stop: stop,
        })
    }

    async fn publish(
        &mut self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
    ) -> ConnectorResult<()> {
        if self.progress.broken.load(Ordering::SeqCst) {
            return Err(self.progress.error(&self.broker));
        }
        self.client
            .publish_bytes(topic, qos, retain, payload)
            .await
            .map_err(|_| self.progress.error(&self.broker))?;
        self.sent += 1;
        Ok(())
    }

    /// Waits until every publish handed over so far is confirmed.
    /// Publishes every record (refusing those that cannot be an MQTT message), without waiting
    /// for the broker's acknowledgements.
    async fn publish_all(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        let mut outcome = WriteOutcome::default();
        for (index, record) in records.iter().enumerate() {
            let (topic, qos, retain, payload) = match self.envelope {
                Envelope::None => (self.topic.clone(), self.qos, self.retain, record.clone()),
                Envelope::Json => match envelope::decode(record) {
                    Ok(decoded) => (
                        decoded.topic.unwrap_or_else(|| self.topic.clone()),
                        decoded.qos.map(qos).unwrap_or(self.qos),
                        decoded.retain.unwrap_or(self.retain),
                        decoded.payload,
                    ),
                    Err(reason) => {
                        outcome.reject(index, reason);
                        continue;
                    }
                },
            };
            // A packet over the limit would break the connection for every record after it.
            if payload.len() + topic.len() + 8 > MAX_PACKET_BYTES {
                outcome.reject(
                    index,
                    format!(
                        "{} bytes is more than an MQTT message may carry here ({MAX_PACKET_BYTES})",
                        payload.len()
                    ),
                );
                continue;
            }
            self.publish(topic, qos, retain, payload).await?;
        }
        Ok(outcome)
    }

    async fn confirmed(&self) -> ConnectorResult<()> {
        wait_confirmed(&self.progress, self.sent, &self.broker).await
    }
}

/// Waits until the broker acknowledged the first `target` messages of the connection.
async fn wait_confirmed(
    progress: &Progress,
    target: u64,
    broker: &BrokerUrl,
) -> ConnectorResult<()> {
    progress.target.store(target, Ordering::SeqCst);
    loop {
        if progress.confirmed.load(Ordering::SeqCst) >= target {
            return Ok(());
        }
        if progress.broken.load(Ordering::SeqCst) {
            return Err(progress.error(broker));
        }
        progress.notify.notified().await;
    }
}

#[async_trait]
impl Sink for MqttSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        let outcome = self.publish_all(records).await?;
        self.confirmed().await?;
        Ok(outcome)
    }

    async fn send(&mut self, records: &[Bytes]) -> ConnectorResult<PendingWrite> {
        let outcome = self.publish_all(records).await?;
        let progress = self.progress.clone();
        let broker = self.broker.clone();
        let target = self.sent;
        Ok(Box::pin(async move {
            wait_confirmed(&progress, target, &broker).await?;
            Ok(outcome)
        }))
    }

    /// The broker acknowledges in the order it received the messages (MQTT 3.1.1 section 4.6),
    /// so later batches may be sent while earlier ones wait for their PUBACKs.
    fn max_pending_writes(&self) -> usize {
        PENDING_WRITES
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        if self.client.disconnect().await.is_ok()
            && let Some(task) = self.task.take()
        {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, task).await;
        }
        Ok(())
    }
}

/// Polls the event loop, counting confirmations, until the sink is dropped or closed, or the
/// connection breaks. A connection lost while idle is alerted at once; the next write fails and
/// the runtime reopens the sink.
async fn drive(
    mut eventloop: EventLoop,
    ctx: StreamContext,
    broker: BrokerUrl,
    progress: Arc<Progress>,
    ready: oneshot::Sender<ConnectorResult<()>>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        match event {
            // qos 0: written and flushed is all the confirmation there is.
            Ok(Event::Outgoing(Outgoing::Publish(0))) => progress.confirm(),
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => progress.confirm(),
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Ok(()));
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
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(error.clone()));
                    }
                    None => {
                        ctx.alert(
                            alert_ids::CONNECTION,
                            Severity::Warning,
                            format!("{error}; reconnecting at the next write"),
                        );
                        progress.fail(error);
                    }
                }
                progress.broken.store(true, Ordering::SeqCst);
                progress.notify.notify_one();
                return;
            }
        }
    }
}

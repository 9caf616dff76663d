//! Core NATS, the platform's transport: at-least-once up to the server.
//!
//! Ingress messages are confirmed by a server round trip issued after them on the same
//! connection (a request to a subject nobody serves: the server answers "no responders" only
//! after it processed every earlier publish), so a source is acknowledged only once the server
//! has its records. Egress subscribes in a queue group named after the stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{HeaderMap, Subject};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use super::{Confirmation, Delivery, Subscription, Transport, TransportError};
use crate::events::{EventRegistry, Severity, State, alert_ids};
use crate::params::Secret;
use crate::tls::ClientTls;

/// The header that carries why a record was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "Kps-Dead-Letter-Reason";

/// Fallback when the server has not told its max payload yet.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// How to connect to NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL(s), comma separated.
    pub url: String,
    /// The client connection name.
    pub name: String,
    /// How long a publish confirmation may take before the stream counts the transport as down.
    pub confirm_timeout: Duration,
    /// TLS to the server (then required): the CA to trust and the client certificate.
    pub tls: Option<ClientTls>,
    /// A user name and its password.
    pub credentials: Option<(String, Secret)>,
}

/// A core NATS connection shared by every stream of the process.
#[derive(Clone)]
pub struct NatsTransport {
    client: async_nats::Client,
    confirm_subject: Subject,
    confirm_timeout: Duration,
    connected: Arc<AtomicBool>,
    confirms: Arc<ConfirmProgress>,
}

/// Which published batches a server round trip has confirmed.
///
/// Every batch published gets the next sequence number once all its messages are handed to the
/// connection. A round trip confirms every batch numbered before it was issued (the server
/// answers it only after processing what came before it on the connection), so a batch that an
/// earlier-issued round trip already covers needs none of its own: with several batches in
/// flight, one round trip confirms them all.
///
/// A batch published while no round trip is outstanding has its round trip queued at once,
/// right behind its messages, so both leave in one socket write; one published while a round
/// trip is outstanding waits for that one and shares a round trip issued after it.
#[derive(Debug, Default)]
struct ConfirmProgress {
    /// The newest batch handed to the connection.
    published: AtomicU64,
    /// The newest batch a completed round trip covers.
    confirmed: AtomicU64,
    /// Round trips issued and not finished yet.
    outstanding: AtomicU64,
    /// Round trips issued (for tests).
    round_trips: AtomicU64,
}

/// Counts a round trip as outstanding until it finishes or is dropped.
struct OutstandingRoundTrip(Arc<ConfirmProgress>);

impl OutstandingRoundTrip {
    fn new(confirms: &Arc<ConfirmProgress>) -> Self {
        confirms.outstanding.fetch_add(1, Ordering::AcqRel);
        Self(confirms.clone())
    }
}

impl Drop for OutstandingRoundTrip {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport")
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl NatsTransport {
    /// Connects; a server that is not reachable yet is retried in the background forever (the
    /// streams report UNHEALTHY meanwhile), so this only fails on a malformed URL.
    pub async fn connect(
        options: &NatsOptions,
        events: EventRegistry,
    ) -> Result<Self, TransportError> {
        let connected = Arc::new(AtomicBool::new(false));
        let flag = connected.clone();
        let mut connect = async_nats::ConnectOptions::new();
        if let Some((user, password)) = &options.credentials {
            connect = connect.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(tls) = &options.tls {
            connect = connect.require_tls(true);
            if let Some(ca) = &tls.ca {
                connect = connect.add_root_certificates(ca.path().to_path_buf());
            }
            if let Some((cert, key)) = &tls.identity {
                connect = connect
                    .add_client_certificate(cert.path().to_path_buf(), key.path().to_path_buf());
            }
        }
        let client = connect
            .name(&options.name)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .subscription_capacity(65_536)
            .client_capacity(8_192)
            .event_callback(move |event| {
                let flag = flag.clone();
                let events = events.clone();
                async move { on_connection_event(&flag, &events, event) }
            })
            .connect(options.url.as_str())
            .await
            .map_err(|e| {
                TransportError::Unavailable(format!("connect to {}: {e}", redact_url(&options.url)))
            })?;
        let confirm_subject = Subject::from(format!("_KPS.confirm.{}", unique_token()));
        Ok(Self {
            client,
            confirm_subject,
            confirm_timeout: options.confirm_timeout,
            connected,
            confirms: Arc::default(),
        })
    }

    /// The underlying client (for the JetStream transport and the state backend).
    pub(crate) fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// A confirmation that resolves after a server round trip issued when it is first polled.
    pub(crate) fn round_trip(&self) -> Confirmation {
        let transport = self.clone();
        Confirmation::new(async move { transport.issue_round_trip().await })
    }

    /// The confirmation of published batch `batch`: resolves at once if a round trip issued
    /// after its publishes already completed, and otherwise after a new one.
    fn confirmation_of(&self, batch: u64) -> Confirmation {
        let transport = self.clone();
        Confirmation::new(async move {
            if transport.confirms.confirmed.load(Ordering::Acquire) >= batch {
                return Ok(());
            }
            transport.issue_round_trip().await
        })
    }

    /// The confirmation of published batch `batch` when no round trip is outstanding: its round
    /// trip is queued on the connection now, behind the batch's messages, instead of when the
    /// confirmation is first awaited (by then the connection task has usually written the
    /// messages on their own, and the round trip would cost a socket write of its own).
    async fn confirmation_issued_now(&self, batch: u64) -> Confirmation {
        let mut confirmation = self.confirmation_of(batch);
        // One poll queues the request (the client's command channel has room unless the
        // connection is backed up, and then the next poll queues it); the waker registered
        // is this task's, which is the one that awaits the confirmation.
        match futures::poll!(&mut confirmation) {
            std::task::Poll::Ready(result) => Confirmation::new(std::future::ready(result)),
            std::task::Poll::Pending => confirmation,
        }
    }

    /// Round trips issued so far by this connection's confirmations.
    #[doc(hidden)]
    pub fn round_trips(&self) -> u64 {
        self.confirms.round_trips.load(Ordering::Relaxed)
    }

    /// One server round trip; on success every batch published before it was issued counts
    /// as confirmed.
    async fn issue_round_trip(&self) -> Result<(), TransportError> {
        // Read before the request is queued: every batch counted here was handed to the
        // connection before it.
        let covered = self.confirms.published.load(Ordering::Acquire);
        self.confirms.round_trips.fetch_add(1, Ordering::Relaxed);
        let _outstanding = OutstandingRoundTrip::new(&self.confirms);
        let timeout = self.confirm_timeout;
        let request = self
            .client
            .request(self.confirm_subject.clone(), Bytes::new());
        match tokio::time::timeout(timeout, request).await {
            Err(_) => Err(TransportError::Unavailable(format!(
                "no confirmation from the NATS server within {timeout:?}"
            ))),
            Ok(Err(e)) if e.kind() != RequestErrorKind::NoResponders => Err(
                TransportError::Unavailable(format!("confirmation round trip: {e}")),
            ),
            Ok(_) => {
                self.confirms.confirmed.fetch_max(covered, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Waits for the connection to be up, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.is_connected() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Flushes, unsubscribes everything and closes the connection (graceful shutdown).
    pub async fn close(&self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.drain()).await;
    }
}

fn on_connection_event(flag: &AtomicBool, events: &EventRegistry, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            flag.store(true, Ordering::Release);
            events.resolve(alert_ids::CONNECTION, "", "connected to NATS");
        }
        async_nats::Event::Disconnected => {
            flag.store(false, Ordering::Release);
            events.alert(
                alert_ids::CONNECTION,
                "",
                Severity::Warning,
                State::Unhealthy,
                "disconnected from NATS; reconnecting",
            );
        }
        async_nats::Event::ClientError(e) => {
            events.alert(
                alert_ids::CONNECTION,
                "",
                Severity::Warning,
                State::Unhealthy,
                format!("NATS client error: {e}"),
            );
        }
        _ => {}
    }
}

/// `url` (comma-separated server URLs) with any user and password inside replaced by `***`,
/// safe to log.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.split_once("://") {
                Some((scheme, rest)) => (Some(scheme), rest),
                None => (None, one),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let rest = match rest[..authority_end].rfind('@') {
                Some(at) => format!("***{}", &rest[at..]),
                None => rest.to_owned(),
            };
            match scheme {
                Some(scheme) => format!("{scheme}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A token unique to this process and call, for private subjects.
pub(crate) fn unique_token() -> String {
    format!("{}{:016x}", std::process::id(), fastrand::u64(..))
}

/// Makes a stream id usable as a queue group or durable name: `[A-Za-z0-9_-]`, others as `_`.
pub(crate) fn sanitize_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[async_trait]
impl Transport for NatsTransport {
    async fn publish(
        &self,
        subject: &str,
        messages: Vec<Bytes>,
    ) -> Result<Confirmation, TransportError> {
        let subject_name = Subject::from(subject);
        for message in messages {
            self.client
                .publish(subject_name.clone(), message)
                .await
                .map_err(|e| TransportError::Publish {
                    subject: subject.to_owned(),
                    message: e.to_string(),
                })?;
        }
        let batch = self.confirms.published.fetch_add(1, Ordering::AcqRel) + 1;
        if self.confirms.outstanding.load(Ordering::Acquire) == 0 {
            return Ok(self.confirmation_issued_now(batch).await);
        }
        Ok(self.confirmation_of(batch))
    }

    async fn publish_dead_letter(
        &self,
        subject: &str,
        message: Bytes,
        reason: &str,
    ) -> Result<(), TransportError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            DEAD_LETTER_REASON_HEADER,
            reason.replace(['\r', '\n'], " ").as_str(),
        );
        self.client
            .publish_with_headers(subject.to_owned(), headers, message)
            .await
            .map_err(|e| TransportError::Publish {
                subject: subject.to_owned(),
                message: e.to_string(),
            })?;
        self.round_trip().await
    }

    async fn subscribe(
        &self,
        subject: &str,
        group: &str,
        _durable: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let subscriber = self
            .client
            .queue_subscribe(subject.to_owned(), sanitize_name(group))
            .await
            .map_err(|e| TransportError::Subscribe {
                subject: subject.to_owned(),
                message: e.to_string(),
            })?;
        // The SUB is only queued on the connection: wait until the server has processed it, so
        // what is published once the stream reports HEALTHY reaches it (core NATS keeps nothing
        // for a subscription the server does not know yet).
        self.round_trip()
            .await
            .map_err(|e| TransportError::Subscribe {
                subject: subject.to_owned(),
                message: e.to_string(),
            })?;
        Ok(Box::new(NatsSubscription { subscriber }))
    }

    fn max_message_bytes(&self) -> usize {
        match self.client.server_info().max_payload {
            0 => DEFAULT_MAX_PAYLOAD,
            n => n,
        }
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

struct NatsSubscription {
    subscriber: async_nats::Subscriber,
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        self.subscriber
            .next()
            .await
            .map(|m| Ok(Delivery::unacknowledged(m.payload)))
    }

    fn try_next(&mut self) -> Option<Result<Delivery, TransportError>> {
        // Unconstrained: taking what already waits must not end early when the task's
        // cooperative budget runs out (it did, at about 128 messages, halving egress batches).
        tokio::task::unconstrained(self.subscriber.next())
            .now_or_never()
            .flatten()
            .map(|m| Ok(Delivery::unacknowledged(m.payload)))
    }

    async fn unsubscribe(&mut self) -> Result<(), TransportError> {
        self.subscriber
            .unsubscribe()
            .await
            .map_err(|e| TransportError::Subscribe {
                subject: "unsubscribe".to_owned(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn credentials_in_urls_are_redacted() {
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact_url("nats://app:s3cret@nats-1:4222,tls://tok@nats-2/x"),
            "nats://***@nats-1:4222,tls://***@nats-2/x"
        );
        assert_eq!(redact_url("u:p@host:4222"), "***@host:4222");
    }
}

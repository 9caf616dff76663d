//! Opening a broker connection (the address in `address`, TLS in `tls`), and what the broker or
//! the socket said when a connection or channel ended, turned into connector errors.
//!
//! The client library, amqprs, runs a connection as two tokio tasks (its reader and its writer)
//! and each channel as a third (its dispatcher). What the broker initiates (closing a channel or
//! the connection, cancelling a consumer, confirms and returned messages) reaches the connector
//! through callbacks registered here; a channel's dispatcher ends, and drops its callback, when
//! the channel or the connection closes for whatever reason, which is how a lost connection is
//! noticed by the batches waiting for confirms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::Channel;
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use kps_connector_core::{ConnectorError, ConnectorResult, Severity, StreamContext, async_trait};

pub use crate::address::BrokerAddress;
use crate::confirms::{Confirms, Returned};
use crate::params::AmqpParams;
use crate::sink::BLOCKED_ALERT;

/// How long a graceful connection close may take before the connection is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The reply code of a missing queue or exchange.
const NOT_FOUND: u16 = 404;

/// An open connection and what its broker said about it.
pub struct Link {
    connection: Connection,
    state: Arc<ConnectionState>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("open", &self.connection.is_open())
            .finish_non_exhaustive()
    }
}

/// What the broker said when it closed a connection (its `connection.close`).
#[derive(Debug, Default)]
struct ConnectionState {
    closed: Mutex<Option<(u16, String)>>,
}

/// What the broker said about one channel: its `channel.close`, or that it cancelled the
/// channel's consumer.
#[derive(Debug, Default)]
pub(crate) struct ChannelState {
    closed: Mutex<Option<(u16, String)>>,
    cancelled: AtomicBool,
}

impl ChannelState {
    /// The reply code of the broker's `channel.close`, if it closed the channel.
    pub(crate) fn closed_code(&self) -> Option<u16> {
        lock(&self.closed).as_ref().map(|(code, _)| *code)
    }

    /// Whether the broker's `channel.close` said NOT_FOUND (a missing queue or exchange).
    pub(crate) fn is_not_found(&self) -> bool {
        self.closed_code() == Some(NOT_FOUND)
    }

    /// Whether the broker cancelled the channel's consumer (`basic.cancel`: the queue was
    /// deleted, say).
    pub(crate) fn consumer_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a channel ended, from what the broker said (or did not say) about it and its connection.
fn ending(channel: &ChannelState, connection: &ConnectionState, open: bool) -> String {
    if let Some((code, text)) = lock(&channel.closed).as_ref() {
        return format!("the broker closed the channel ({code} {text})");
    }
    if let Some((code, text)) = lock(&connection.closed).as_ref() {
        return format!("the broker closed the connection ({code} {text})");
    }
    if open {
        "the channel closed".to_owned()
    } else {
        "the connection was lost".to_owned()
    }
}

impl Link {
    /// Opens a channel whose broker-initiated events (`channel.close`, `basic.cancel`) are
    /// recorded in the returned state.
    pub(crate) async fn channel(&self) -> ConnectorResult<(Channel, Arc<ChannelState>)> {
        let channel = self
            .connection
            .open_channel(None)
            .await
            .map_err(|e| self.retryable("cannot open a channel", &e))?;
        let state = Arc::new(ChannelState::default());
        self.watch(&channel, &state, None).await?;
        Ok((channel, state))
    }

    /// From now on, hands the publisher confirms and returned messages of `channel` to
    /// `confirms`, which fail once the channel has ended.
    pub(crate) async fn feed_confirms(
        &self,
        channel: &Channel,
        state: &Arc<ChannelState>,
        confirms: Arc<Confirms>,
    ) -> ConnectorResult<()> {
        self.watch(channel, state, Some(confirms)).await
    }

    /// Registers the callback of `channel` (replacing the one before).
    async fn watch(
        &self,
        channel: &Channel,
        state: &Arc<ChannelState>,
        confirms: Option<Arc<Confirms>>,
    ) -> ConnectorResult<()> {
        let events = ChannelEvents {
            state: state.clone(),
            connection: self.state.clone(),
            confirms,
        };
        channel
            .register_callback(events)
            .await
            .map_err(|e| self.retryable("cannot open a channel", &e))
    }

    /// Why the channel with `state` ended (or cannot be used), for an error message.
    pub(crate) fn ending(&self, state: &ChannelState) -> String {
        ending(state, &self.state, self.connection.is_open())
    }

    /// A retryable error: `what` and the reason a call on one of this connection's channels
    /// failed. The broker's reply, when it closed the channel or the connection, is the reason;
    /// the library's error otherwise.
    pub(crate) fn failed(
        &self,
        what: impl std::fmt::Display,
        state: &ChannelState,
        error: &amqprs::error::Error,
    ) -> ConnectorError {
        if state.closed_code().is_some()
            || lock(&self.state.closed).is_some()
            || !self.connection.is_open()
        {
            return ConnectorError::retryable(format!("{what}: {}", self.ending(state)));
        }
        self.retryable(what, error)
    }

    fn retryable(
        &self,
        what: impl std::fmt::Display,
        error: &amqprs::error::Error,
    ) -> ConnectorError {
        if let Some((code, text)) = lock(&self.state.closed).as_ref() {
            return ConnectorError::retryable(format!(
                "{what}: the broker closed the connection ({code} {text})"
            ));
        }
        retryable(what, error)
    }

    /// Closes the connection gracefully (the broker requeues what was delivered and not
    /// acknowledged), giving up after a few seconds.
    pub async fn close(&self) {
        let close = self.connection.clone().close();
        match tokio::time::timeout(CLOSE_TIMEOUT, close).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %describe(&e), "closing the connection"),
            Err(_) => tracing::debug!("closing the connection timed out"),
        }
    }
}

/// The connection's callback: records the broker's `connection.close` and, for a publishing
/// stream, raises [`BLOCKED_ALERT`] while the broker blocks the connection.
struct ConnectionEvents {
    state: Arc<ConnectionState>,
    /// The stream to alert about `connection.blocked` (egress streams only).
    blocked: Option<StreamContext>,
}

#[async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        tracing::debug!(code = close.reply_code(), text = %close.reply_text(), "the broker closed the connection");
        lock(&self.state.closed).get_or_insert((close.reply_code(), close.reply_text().clone()));
        Ok(())
    }

    async fn blocked(&mut self, _: &Connection, reason: String) {
        if let Some(ctx) = &self.blocked {
            ctx.alert(
                BLOCKED_ALERT,
                Severity::Warning,
                format!("the broker blocks publishing ({reason}); writes wait"),
            );
        }
    }

    async fn unblocked(&mut self, _: &Connection) {
        if let Some(ctx) = &self.blocked {
            ctx.resolve_alert(BLOCKED_ALERT, "the broker accepts publishing again");
        }
    }

    async fn secret_updated(&mut self, _: &Connection) {}
}

/// A channel's callback: records the broker's `channel.close` and consumer cancellation, and
/// hands confirms and returned messages to the channel's [`Confirms`]. The channel's dispatcher
/// drops it when the channel ends, which fails the confirms still awaited.
struct ChannelEvents {
    state: Arc<ChannelState>,
    connection: Arc<ConnectionState>,
    confirms: Option<Arc<Confirms>>,
}

#[async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::debug!(code = close.reply_code(), text = %close.reply_text(), "the broker closed the channel");
        lock(&self.state.closed).get_or_insert((close.reply_code(), close.reply_text().clone()));
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        // Accepting it ends the consumer's receiver: the source sees its end.
        self.state.cancelled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        if let Some(confirms) = &self.confirms {
            confirms.settle_tags(ack.delivery_tag(), ack.mutiple(), false);
        }
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        if let Some(confirms) = &self.confirms {
            confirms.settle_tags(nack.delivery_tag(), nack.multiple(), true);
        }
    }

    async fn publish_return(
        &mut self,
        _: &Channel,
        ret: Return,
        _: BasicProperties,
        content: Vec<u8>,
    ) {
        if let Some(confirms) = &self.confirms {
            confirms.returned(Returned {
                routing_key: ret.routing_key().clone(),
                reply_code: ret.reply_code(),
                reply_text: ret.reply_text().clone(),
                body: content,
            });
        }
    }
}

impl Drop for ChannelEvents {
    fn drop(&mut self) {
        if let Some(confirms) = &self.confirms {
            // The connection's state is not known here: its loss is the likely reason when
            // neither the channel nor the connection was closed by the broker.
            confirms.fail(ending(&self.state, &self.connection, false));
        }
    }
}

/// Connects to the broker of `params`, naming the connection `name` (shown by RabbitMQ). `blocked`
/// is the stream to alert while the broker blocks the connection (publishing streams).
/// Every failure is retryable (the broker may come back, a secret may be rotated), except a
/// password source or a TLS file that cannot be read.
pub async fn connect(
    params: &AmqpParams,
    name: &str,
    blocked: Option<&StreamContext>,
) -> ConnectorResult<(Link, BrokerAddress)> {
    let address = BrokerAddress::parse(&params.url)?;
    let password = params.password_source().load().await?;
    let credentials = match (&params.username, &password) {
        (Some(username), Some(password)) => Some((username.as_str(), password)),
        _ => None,
    };
    let mut arguments = address.arguments(credentials, name);
    if address.is_tls() {
        arguments.tls_adaptor(crate::tls::tls_adaptor(params, &address.host).await?);
    }
    let connection = match tokio::time::timeout(
        address.connection_timeout,
        Connection::open(&arguments),
    )
    .await
    {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return Err(open_failed(&address, &e)),
        Err(_) => {
            return Err(ConnectorError::retryable(format!(
                "cannot connect to {address}: no answer within {} ms (connection_timeout)",
                address.connection_timeout.as_millis()
            )));
        }
    };
    drop(arguments);
    if connection.heartbeat() == 0 {
        // amqprs treats a heartbeat of 0 as a deadline already past: the connection would drop
        // at once. Both sides said 0 (`heartbeat=0` and a broker without heartbeats).
        let link = Link {
            connection,
            state: Arc::default(),
        };
        link.close().await;
        return Err(ConnectorError::retryable(format!(
            "cannot connect to {address}: the broker turned heartbeats off as the URL asked (heartbeat=0); the client library needs them: set heartbeat to a number of seconds"
        )));
    }
    let state = Arc::new(ConnectionState::default());
    let events = ConnectionEvents {
        state: state.clone(),
        blocked: blocked.cloned(),
    };
    connection
        .register_callback(events)
        .await
        .map_err(|e| retryable(format!("cannot connect to {address}"), &e))?;
    // amqprs takes the broker's frame_max and channel_max as they are.
    if let Some(wanted) = address
        .frame_max
        .filter(|&max| max != 0 && max < connection.frame_max())
    {
        tracing::warn!(
            wanted,
            used = connection.frame_max(),
            "the URL's frame_max is not applied: the client library uses the broker's"
        );
    }
    if let Some(wanted) = address
        .channel_max
        .filter(|&max| max != 0 && max < connection.channel_max())
    {
        tracing::warn!(
            wanted,
            used = connection.channel_max(),
            "the URL's channel_max is not applied: the client library uses the broker's"
        );
    }
    Ok((Link { connection, state }, address))
}

/// The error of a connection that could not be opened: the broker's reply when it refused the
/// connection (the client announces `authentication_failure_close`, so a refused login comes
/// back as `403 ACCESS_REFUSED`), otherwise what went wrong, with a hint when the connection
/// ended during the handshake (a broker that closes without a word, or the network).
fn open_failed(address: &BrokerAddress, error: &amqprs::error::Error) -> ConnectorError {
    if let amqprs::error::Error::ConnectionOpenError(text) = error
        && let Some((code, reply)) = broker_reply(text)
    {
        return ConnectorError::retryable(format!(
            "cannot connect to {address}: the broker refused the connection ({code} {reply})"
        ));
    }
    let reason = describe(error);
    let hint = match error {
        amqprs::error::Error::NetworkError(text)
            if text.contains("peer shutdown") || text.contains("reset by peer") =>
        {
            " (the connection closed during the handshake: the username or password refused, or the network cut it)"
        }
        _ => "",
    };
    ConnectorError::retryable(format!("cannot connect to {address}: {reason}{hint}"))
}

/// The reply code and text of the broker's `connection.close` inside the text of amqprs's
/// error for a connection the broker refused to open (it prints the frame it got instead of
/// `connection.open-ok`).
fn broker_reply(text: &str) -> Option<(u16, &str)> {
    let (_, after) = text.split_once("reply_code: ")?;
    let code = after.split(',').next()?.trim().parse().ok()?;
    let (_, after) = after.split_once("reply_text: ShortStr(")?;
    let (_, after) = after.split_once(", \"")?;
    let (reply, _) = after.split_once("\")")?;
    Some((code, reply))
}

/// A retryable error: `what` (lowercase, no secret) and amqprs's reason.
pub fn retryable(what: impl std::fmt::Display, error: &amqprs::error::Error) -> ConnectorError {
    ConnectorError::retryable(format!("{what}: {}", describe(error)))
}

/// amqprs's error text without its `AMQP` prefix, with a lowercase start (its messages never
/// carry credentials).
pub fn describe(error: &amqprs::error::Error) -> String {
    let text = error.to_string();
    let text = text
        .strip_prefix("AMQP(S) ")
        .or_else(|| text.strip_prefix("AMQP "))
        .unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_open_says_the_brokers_reply() {
        let text = "failed to open connection, reason: Close(MethodHeader { class_id: 10, method_id: 50 }, Close { reply_code: 530, reply_text: ShortStr(41, \"NOT_ALLOWED - vhost nosuchvhost not found\"), class_id: 10, method_id: 40 })";
        assert_eq!(
            broker_reply(text),
            Some((530, "NOT_ALLOWED - vhost nosuchvhost not found"))
        );
        assert_eq!(broker_reply("failed to open connection"), None);
    }

    #[test]
    fn errors_lose_the_library_prefix() {
        let e = amqprs::error::Error::NetworkError("network io error: refused".to_owned());
        assert_eq!(describe(&e), "network error: network io error: refused");
    }
}

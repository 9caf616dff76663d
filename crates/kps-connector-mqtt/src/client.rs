//! Building an MQTT client for a stream: client id, session, credentials, TLS, limits, and
//! turning rumqttc's errors into classified connector errors.

use std::sync::Arc;
use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult, StreamContext};
use rumqttc::{
    ConnectReturnCode, ConnectionError, MqttOptions, NetworkOptions, StateError, TlsConfiguration,
    Transport,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::params::{BrokerUrl, MqttParams, Scheme};

/// The longest client id MQTT 3.1.1 obliges a broker to accept.
pub const MAX_STRICT_CLIENT_ID: usize = 23;

/// The largest MQTT packet read or written (MQTT allows 256 MiB; a record is bounded by the NATS
/// message size anyway). A bigger message read from the broker breaks the connection.
pub const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// How long the TCP (and TLS) connect and the CONNACK may take, in seconds.
const CONNECT_TIMEOUT_SECS: u64 = 10;

/// How often the client pings an idle broker; a lost broker is noticed within twice this.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The client settings for one stream. Its `Debug` leaves the rumqttc options out: theirs
/// prints the password.
pub struct ClientSettings {
    /// The broker.
    pub broker: BrokerUrl,
    /// The rumqttc options.
    pub options: MqttOptions,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("broker", &self.broker)
            .field("client_id", &self.options.client_id())
            .finish_non_exhaustive()
    }
}

/// Requests (acknowledgements, publishes) the event loop writes before one flush: a batch's
/// PUBACKs or publishes leave in one socket write instead of one write each (the workspace's
/// patched rumqttc, `vendor/rumqttc`).
const REQUEST_BATCH: usize = 256;

/// Builds the MQTT options of a stream: reads the password and the CA file now, so a rotated
/// secret is picked up when the stream reconnects.
pub async fn settings(
    ctx: &StreamContext,
    params: &MqttParams,
    inflight: u16,
    request_capacity: usize,
    manual_acks: bool,
) -> ConnectorResult<ClientSettings> {
    let broker = params.broker()?;
    let client_id = params
        .client_id
        .clone()
        .unwrap_or_else(|| default_client_id(ctx.connector_id(), ctx.stream_id()));
    let mut options = MqttOptions::new(client_id, broker.host.clone(), broker.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(params.clean_session_for(ctx.direction()))
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES)
        .set_inflight(inflight.max(1))
        .set_request_channel_capacity(request_capacity)
        .set_max_request_batch(REQUEST_BATCH)
        .set_manual_acks(manual_acks);
    if let Some(user) = &params.username {
        let password = params.password_source().load().await?;
        let password = password.as_ref().map(|p| p.expose()).unwrap_or_default();
        options.set_credentials(user.clone(), password);
    }
    if broker.scheme == Scheme::Mqtts {
        let config = tls_config(params.ca_file.as_deref()).await?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
    Ok(ClientSettings { broker, options })
}

/// A client and its event loop, with Nagle's algorithm off: acknowledgements and the last
/// publish of a batch are small writes that must not wait for the peer's delayed ACK.
pub fn connect(
    options: MqttOptions,
    request_capacity: usize,
) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, request_capacity);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(network);
    (client, eventloop)
}

/// The rustls client config: the CA certificates of `ca_file`, or the system's roots.
async fn tls_config(ca_file: Option<&str>) -> ConnectorResult<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = tokio::fs::read(path).await.map_err(|e| {
                ConnectorError::invalid("ca_file", format!("cannot read {path}: {e}"))
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    ConnectorError::invalid("ca_file", format!("{path} is not PEM: {e}"))
                })?;
            if certs.is_empty() {
                return Err(ConnectorError::invalid(
                    "ca_file",
                    format!("{path} holds no certificate"),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ConnectorError::invalid("ca_file", format!("{path}: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(ConnectorError::fatal(
                    "no system CA certificates found for mqtts; give ca_file",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::fatal(format!("tls setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// A client id derived from the connector id and stream id: stable across restarts, distinct per
/// stream, at most 23 bytes of `[A-Za-z0-9_-]`. `kps-<connector>-<stream>` when that fits,
/// otherwise its first 10 characters, `-`, and a 12-character hash of both ids.
pub fn default_client_id(connector_id: &str, stream_id: &str) -> String {
    let readable: String = format!("kps-{connector_id}-{stream_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if readable.len() <= MAX_STRICT_CLIENT_ID
        && readable == format!("kps-{connector_id}-{stream_id}")
    {
        return readable;
    }
    // FNV-1a over both ids (stable across Rust versions, unlike std's hasher).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in connector_id.bytes().chain([0]).chain(stream_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut id: String = readable.chars().take(10).collect();
    id.push('-');
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..12 {
        id.push(char::from(DIGITS[(hash % 36) as usize]));
        hash /= 36;
    }
    id
}

/// After the DISCONNECT went out: keeps reading until the broker closes the connection (or a
/// second passed), so the broker reads everything sent before it (the last acknowledgements)
/// instead of losing it to a reset. Messages still arriving are dropped unacknowledged; the
/// broker delivers them again to the next session.
pub async fn linger(eventloop: &mut rumqttc::EventLoop) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

/// A connection error as a retryable connector error naming the broker (never a secret).
pub fn connection_error(broker: &BrokerUrl, error: &ConnectionError) -> ConnectorError {
    let why = match error {
        ConnectionError::Io(e) => format!("connection failed: {e}"),
        ConnectionError::NetworkTimeout => "connection timed out".to_owned(),
        ConnectionError::FlushTimeout => "write timed out".to_owned(),
        ConnectionError::ConnectionRefused(code) => {
            format!("broker refused the connection: {}", refusal(*code))
        }
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "connection closed by the broker".to_owned()
        }
        ConnectionError::MqttState(StateError::Io(e)) => format!("connection lost: {e}"),
        ConnectionError::MqttState(StateError::AwaitPingResp) => {
            "broker stopped answering pings".to_owned()
        }
        ConnectionError::Tls(e) => format!("tls: {e}"),
        ConnectionError::RequestsDone => "client closed".to_owned(),
        other => lowercase_first(&other.to_string()),
    };
    ConnectorError::retryable(format!("mqtt broker {broker}: {why}"))
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "success",
        ConnectReturnCode::RefusedProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::BadClientId => "client id rejected",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorized",
    }
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_of_client_settings_holds_no_password() {
        let mut options = MqttOptions::new("kps-c1-s1", "127.0.0.1", 1883);
        options.set_credentials("app", "planted-secret-4711");
        assert!(format!("{options:?}").contains("planted-secret-4711"));
        let settings = ClientSettings {
            broker: crate::params::parse_url("mqtt://127.0.0.1:1883").unwrap(),
            options,
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("planted-secret-4711"), "{shown}");
        assert!(shown.contains("kps-c1-s1"), "{shown}");
    }

    #[test]
    fn client_ids_are_short_stable_and_distinct() {
        assert_eq!(default_client_id("c1", "s1"), "kps-c1-s1");
        let a = default_client_id("conn_12345_abcdef01", "orders-eu");
        let b = default_client_id("conn_12345_abcdef01", "orders-us");
        assert_ne!(a, b);
        assert_eq!(a, default_client_id("conn_12345_abcdef01", "orders-eu"));
        for id in [
            &a,
            &b,
            &default_client_id("x", "stream with spaces/and slashes"),
        ] {
            assert!(id.len() <= MAX_STRICT_CLIENT_ID, "{id}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                "{id}"
            );
        }
        // Ids that differ only in replaced characters stay distinct.
        assert_ne!(default_client_id("c", "a/b"), default_client_id("c", "a-b"));
    }

    #[test]
    fn errors_are_retryable_and_lowercase() {
        let broker = crate::params::parse_url("mqtt://127.0.0.1:1").unwrap();
        let e = connection_error(
            &broker,
            &ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
        );
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "mqtt broker mqtt://127.0.0.1:1: broker refused the connection: not authorized"
        );
    }
}

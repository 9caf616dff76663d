//! Opening a broker connection: the URL without credentials, the credentials from a secret, and
//! AMQP errors turned into connector errors.

use std::str::FromStr;

use kps_connector_core::{ConnectorError, ConnectorResult, Secret};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{Connection, ConnectionProperties};

use crate::params::AmqpParams;

/// Heartbeat (seconds) asked for when the URL does not say: a dead peer is noticed in ~20 s.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// TCP + TLS connect timeout (milliseconds) when the URL does not say.
const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 10_000;

/// A broker URL checked to carry no credentials. Its `Display` is the URL as given (safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    uri: AMQPUri,
    shown: String,
}

impl BrokerAddress {
    /// Parses `url` (`amqp://host:port/vhost` or `amqps://...`); credentials are refused.
    pub fn parse(url: &str) -> ConnectorResult<Self> {
        let invalid = |why: String| ConnectorError::invalid("url", why);
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        AMQPScheme::from_str(parsed.scheme()).map_err(|_| {
            invalid(format!(
                "the scheme must be amqp or amqps, not `{}`",
                parsed.scheme()
            ))
        })?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials inside the URL are refused; use username with password_file or password_env".to_owned(),
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("the URL names no host".to_owned())),
        };
        let mut uri = AMQPUri::from_str(url).map_err(|e| invalid(e.to_lowercase()))?;
        // amq-protocol resolves IP literals to `localhost`; keep the host as written.
        uri.authority.host = host;
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        uri.query
            .connection_timeout
            .get_or_insert(DEFAULT_CONNECTION_TIMEOUT_MS);
        Ok(Self {
            uri,
            shown: url.to_owned(),
        })
    }

    /// Whether the URL is `amqps://`.
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
    }

    /// The URI to connect with `username` / `password` (or the broker's default account).
    fn with_credentials(&self, credentials: Option<(&str, &Secret)>) -> AMQPUri {
        let mut uri = self.uri.clone();
        if let Some((username, password)) = credentials {
            uri.authority.userinfo = AMQPUserInfo {
                username: username.to_owned(),
                password: password.expose().to_owned(),
            };
        }
        uri
    }
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Connects to the broker of `params`, naming the connection `name` (shown by RabbitMQ).
/// Every failure is retryable (the broker may come back, a secret may be rotated), except a
/// password source that cannot be read.
pub async fn connect(
    params: &AmqpParams,
    name: &str,
) -> ConnectorResult<(Connection, BrokerAddress)> {
    let address = BrokerAddress::parse(&params.url)?;
    let password = params.password_source().load().await?;
    let credentials = match (&params.username, &password) {
        (Some(username), Some(password)) => Some((username.as_str(), password)),
        _ => None,
    };
    let uri = address.with_credentials(credentials);
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let tls = tls_config(params).await?;
    let runtime = lapin::runtime::default_runtime()
        .map_err(|e| ConnectorError::fatal(format!("no async runtime for lapin: {e}")))?;
    let connection = Connection::connect_uri_with_config(uri, properties, tls, runtime)
        .await
        .map_err(|e| retryable(format!("cannot connect to {address}"), &e))?;
    Ok((connection, address))
}

/// The TLS settings of `params`, read now (so renewed certificates are picked up at the next
/// connect): `ca_file` trusted besides the system's roots, `cert_file` and `key_file` presented.
async fn tls_config(params: &AmqpParams) -> ConnectorResult<OwnedTLSConfig> {
    let cert_chain = match &params.ca_file {
        Some(path) => Some(read_pem("ca_file", path, "CERTIFICATE-----").await?),
        None => None,
    };
    let identity = match (&params.cert_file, &params.key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read_pem("cert_file", cert, "CERTIFICATE-----")
                .await?
                .into_bytes(),
            key: read_pem("key_file", key, "PRIVATE KEY-----")
                .await?
                .into_bytes(),
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// Reads the PEM file `path` of parameter `field`, which must hold a `-----BEGIN ...{marker}`
/// block. Errors name the field and the file, never the content.
async fn read_pem(field: &str, path: &str, marker: &str) -> ConnectorResult<String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ConnectorError::invalid(field, format!("cannot read {path}: {e}")))?;
    let holds = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.ends_with(marker));
    if !holds {
        return Err(ConnectorError::invalid(
            field,
            format!("{path} holds no PEM {}", marker.trim_end_matches('-')),
        ));
    }
    Ok(text)
}

/// A retryable error: `what` (lowercase, no secret) and lapin's reason.
pub fn retryable(what: impl std::fmt::Display, error: &lapin::Error) -> ConnectorError {
    ConnectorError::retryable(format!("{what}: {}", describe(error)))
}

/// lapin's error text with a lowercase start (its messages never carry credentials).
pub fn describe(error: &lapin::Error) -> String {
    let text = error.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// Whether `error` is the broker saying NOT_FOUND (a missing queue or exchange).
pub fn is_not_found(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_vhosts_and_defaults() {
        let a = BrokerAddress::parse("amqp://127.0.0.1:5672/%2f").unwrap();
        assert_eq!(a.uri.authority.host, "127.0.0.1");
        assert_eq!(a.uri.authority.port, 5672);
        assert_eq!(a.uri.vhost, "/");
        assert_eq!(a.uri.authority.userinfo.username, "guest");
        assert_eq!(a.uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        let b = BrokerAddress::parse("amqps://[::1]/prod?heartbeat=30").unwrap();
        assert_eq!(b.uri.scheme, AMQPScheme::AMQPS);
        assert_eq!(b.uri.authority.host, "::1");
        assert_eq!(b.uri.authority.port, 5671);
        assert_eq!(b.uri.vhost, "prod");
        assert_eq!(b.uri.query.heartbeat, Some(30));
        assert_eq!(b.to_string(), "amqps://[::1]/prod?heartbeat=30");
        let c = BrokerAddress::parse("amqp://rabbit.local").unwrap();
        assert_eq!(
            (c.uri.authority.host.as_str(), c.uri.vhost.as_str()),
            ("rabbit.local", "/")
        );
    }

    #[test]
    fn credentials_come_from_the_secret_only() {
        let a = BrokerAddress::parse("amqp://127.0.0.1:5672/%2f").unwrap();
        let secret = Secret::new("s3cret");
        let uri = a.with_credentials(Some(("app", &secret)));
        assert_eq!(uri.authority.userinfo.username, "app");
        assert_eq!(uri.authority.userinfo.password, "s3cret");
        assert!(!a.to_string().contains("s3cret"));
    }
}

//! The broker URL: parsed and checked to carry no credentials, its query parameters read, and
//! turned into amqprs's connection arguments with the credentials of the stream's secret.

use std::time::Duration;

use amqprs::connection::OpenConnectionArguments;
use amqprs::security::SecurityCredentials;
use kps_connector_core::{ConnectorError, ConnectorResult, Secret};

/// Heartbeat (seconds) asked for when the URL does not say: a dead peer is noticed in ~20 s.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// TCP + TLS + AMQP handshake timeout (milliseconds) when the URL does not say.
const DEFAULT_CONNECTION_TIMEOUT_MS: u64 = 10_000;
/// AMQP short strings (the vhost among them) hold at most 255 bytes.
const MAX_SHORT_STRING: usize = 255;

/// The SASL mechanism of the URL's `auth_mechanism` query parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMechanism {
    /// `PLAIN` (the default): the username and password.
    #[default]
    Plain,
    /// `AMQPLAIN`: the username and password in RabbitMQ's older encoding.
    AmqPlain,
    /// `EXTERNAL`: the identity of the TLS client certificate.
    External,
}

/// A broker URL checked to carry no credentials. Its `Display` is the URL as given (safe to log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub(crate) tls: bool,
    pub(crate) host: String,
    port: u16,
    vhost: String,
    heartbeat: u16,
    pub(crate) connection_timeout: Duration,
    pub(crate) frame_max: Option<u32>,
    pub(crate) channel_max: Option<u16>,
    auth: AuthMechanism,
    shown: String,
}

impl BrokerAddress {
    /// Parses `url` (`amqp://host:port/vhost` or `amqps://...`); credentials are refused.
    ///
    /// The query parameters `heartbeat` (s), `connection_timeout` (ms), `frame_max`,
    /// `channel_max` and `auth_mechanism` are read; a value that is not a number of their type
    /// is refused.
    pub fn parse(url: &str) -> ConnectorResult<Self> {
        let invalid = |why: String| ConnectorError::invalid("url", why);
        let parsed = url::Url::parse(url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        let tls = match parsed.scheme() {
            "amqp" => false,
            "amqps" => true,
            other => {
                return Err(invalid(format!(
                    "the scheme must be amqp or amqps, not `{other}`"
                )));
            }
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "credentials inside the URL are refused; use username with password_file or password_env".to_owned(),
            ));
        }
        if parsed.cannot_be_a_base() {
            return Err(invalid(format!("invalid URL: '{url}'")));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("the URL names no host".to_owned())),
        };
        let port = parsed.port().unwrap_or(if tls { 5671 } else { 5672 });
        // No path at all is the vhost `/`; otherwise the path without its leading slash.
        // A `%` not followed by two hex digits stays as it is.
        let vhost = percent_encoding::percent_decode_str(parsed.path().get(1..).unwrap_or("/"))
            .decode_utf8()
            .map_err(|e| invalid(format!("the vhost: {e}")))?
            .into_owned();
        if vhost.len() > MAX_SHORT_STRING {
            return Err(invalid(format!(
                "the vhost is longer than {MAX_SHORT_STRING} bytes"
            )));
        }
        let heartbeat = query_number(&parsed, "heartbeat")?.unwrap_or(DEFAULT_HEARTBEAT_SECS);
        let connection_timeout =
            query_number(&parsed, "connection_timeout")?.unwrap_or(DEFAULT_CONNECTION_TIMEOUT_MS);
        let frame_max = query_number(&parsed, "frame_max")?;
        let channel_max = query_number(&parsed, "channel_max")?;
        let auth = match query(&parsed, "auth_mechanism") {
            None => AuthMechanism::default(),
            Some(name) => match name.to_lowercase().as_str() {
                "plain" => AuthMechanism::Plain,
                "amqplain" => AuthMechanism::AmqPlain,
                "external" => AuthMechanism::External,
                "anonymous" | "rabbit-cr-demo" => {
                    return Err(invalid(format!(
                        "auth_mechanism `{name}` is not supported (plain, amqplain or external)"
                    )));
                }
                _ => return Err(invalid(format!("invalid SASL mechanism: {name}"))),
            },
        };
        Ok(Self {
            tls,
            host,
            port,
            vhost,
            heartbeat,
            connection_timeout: Duration::from_millis(connection_timeout),
            frame_max,
            channel_max,
            auth,
            shown: url.to_owned(),
        })
    }

    /// Whether the URL is `amqps://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The arguments to open a connection with `username` / `password` (or the broker's
    /// default account), named `name`.
    pub(crate) fn arguments(
        &self,
        credentials: Option<(&str, &Secret)>,
        name: &str,
    ) -> OpenConnectionArguments {
        let (username, password) = match credentials {
            Some((username, password)) => (username, password.expose()),
            None => ("guest", "guest"),
        };
        let credentials = match self.auth {
            AuthMechanism::Plain => SecurityCredentials::new_plain(username, password),
            AuthMechanism::AmqPlain => SecurityCredentials::new_amqplain(username, password),
            AuthMechanism::External => SecurityCredentials::new_external(),
        };
        let mut arguments = OpenConnectionArguments::default();
        arguments
            .host(&self.host)
            .port(self.port)
            .virtual_host(&self.vhost)
            .heartbeat(self.heartbeat)
            .connection_name(name)
            .credentials(credentials);
        arguments
    }
}

impl std::fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// The first value of query parameter `name`.
fn query(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Query parameter `name` as a number of type `T`, if given.
fn query_number<T>(url: &url::Url, name: &str) -> ConnectorResult<Option<T>>
where
    T: std::str::FromStr<Err = std::num::ParseIntError>,
{
    query(url, name)
        .map(|value| {
            value.parse::<T>().map_err(|e| {
                ConnectorError::invalid("url", format!("query parameter `{name}`: {e}"))
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_vhosts_and_defaults() {
        let a = BrokerAddress::parse("amqp://127.0.0.1:5672/%2f").unwrap();
        assert_eq!(a.host, "127.0.0.1");
        assert_eq!(a.port, 5672);
        assert_eq!(a.vhost, "/");
        assert!(!a.is_tls());
        assert_eq!(a.heartbeat, DEFAULT_HEARTBEAT_SECS);
        assert_eq!(
            a.connection_timeout,
            Duration::from_millis(DEFAULT_CONNECTION_TIMEOUT_MS)
        );
        assert_eq!((a.frame_max, a.channel_max), (None, None));
        assert_eq!(a.auth, AuthMechanism::Plain);
        let b = BrokerAddress::parse("amqps://[::1]/prod?heartbeat=30").unwrap();
        assert!(b.is_tls());
        assert_eq!(b.host, "::1");
        assert_eq!(b.port, 5671);
        assert_eq!(b.vhost, "prod");
        assert_eq!(b.heartbeat, 30);
        assert_eq!(b.to_string(), "amqps://[::1]/prod?heartbeat=30");
        let c = BrokerAddress::parse("amqp://rabbit.local").unwrap();
        assert_eq!((c.host.as_str(), c.vhost.as_str()), ("rabbit.local", "/"));
        let d = BrokerAddress::parse("amqp://h/a%2Fb%zz").unwrap();
        assert_eq!(d.vhost, "a/b%zz");
    }

    #[test]
    fn query_parameters_are_read_and_checked() {
        let a = BrokerAddress::parse(
            "amqp://h/v?connection_timeout=2500&frame_max=8192&channel_max=16&auth_mechanism=AMQPLAIN",
        )
        .unwrap();
        assert_eq!(a.connection_timeout, Duration::from_millis(2500));
        assert_eq!(a.frame_max, Some(8192));
        assert_eq!(a.channel_max, Some(16));
        assert_eq!(a.auth, AuthMechanism::AmqPlain);
        for url in [
            "amqp://h/v?heartbeat=x",
            "amqp://h/v?heartbeat=70000",
            "amqp://h/v?channel_max=-1",
            "amqp://h/v?frame_max=1.5",
            "amqp://h/v?connection_timeout=",
            "amqp://h/v?auth_mechanism=kerberos",
            "amqp://h/v?auth_mechanism=anonymous",
        ] {
            assert!(
                matches!(
                    BrokerAddress::parse(url),
                    Err(ConnectorError::InvalidParameter { ref field, .. }) if field == "url"
                ),
                "{url}"
            );
        }
        let long = format!("amqp://h/{}", "v".repeat(256));
        assert!(BrokerAddress::parse(&long).is_err());
    }

    #[test]
    fn credentials_come_from_the_secret_only() {
        let a = BrokerAddress::parse("amqp://127.0.0.1:5672/%2f").unwrap();
        let secret = Secret::new("s3cret");
        let arguments = a.arguments(Some(("app", &secret)), "stream");
        assert!(arguments.get_credentials() == &SecurityCredentials::new_plain("app", "s3cret"));
        assert_eq!(arguments.get_connection_name(), Some("stream"));
        assert_eq!(arguments.get_virtual_host(), "/");
        assert_eq!(arguments.get_heartbeat(), DEFAULT_HEARTBEAT_SECS);
        let guest = a.arguments(None, "stream");
        assert!(guest.get_credentials() == &SecurityCredentials::new_plain("guest", "guest"));
        assert!(!a.to_string().contains("s3cret"));
    }
}

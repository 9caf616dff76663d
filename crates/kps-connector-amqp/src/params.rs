//! The stream parameters (one stream's metadata) and the rules the type cannot express.

use kps_connector_core::{ConnectorError, ConnectorResult, Direction, PasswordSource};
use schemars::JsonSchema;
use serde::Deserialize;

/// Default `prefetch` (basic.qos prefetch count) of an ingress stream.
///
/// A delivery stays unacknowledged from its arrival until the transport confirmed its batch
/// (a publish and a NATS round trip) and, under load, until a sixteenth of the window is ready
/// to be acknowledged at once: the window must cover that whole pipeline, or the broker waits for
/// credit. 1,024 does at the rates one connector process moves; the memory it may hold is the
/// window times the message size (1 MB at 1 KB messages).
pub const DEFAULT_PREFETCH: u16 = 1024;
/// Default `max_record_bytes` of an ingress stream: just under NATS's default 1 MiB max payload.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024 - 1024;
/// AMQP short strings (queue, exchange, routing key) hold at most 255 bytes.
const MAX_SHORT_STRING: usize = 255;

/// One AMQP stream's parameters.
///
/// Ingress streams consume `queue`; egress streams publish to `exchange` with publisher confirms.
/// Credentials never travel in the metadata: `username` plus `password_file` or `password_env`,
/// or none at all for the broker's default `guest` account.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpParams {
    /// The broker, `amqp://host:port/vhost` or `amqps://host:port/vhost` (vhost percent-encoded:
    /// `%2f` is `/`). Query parameters `heartbeat` (s) and `connection_timeout` (ms) are
    /// honoured; `frame_max` and `channel_max` are checked but the broker's values are used.
    /// Credentials inside the URL are refused.
    pub url: String,
    /// The user name; requires `password_file` or `password_env`. Without it, `guest`/`guest`.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (e.g. a mounted Kubernetes secret).
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// `amqps://` only: a PEM file of the CA certificates that signed the broker's certificate,
    /// trusted besides the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `amqps://` only: a PEM client certificate (chain) for a broker that requires one
    /// (mutual TLS); needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// `amqps://` only: the PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1, unencrypted).
    #[serde(default)]
    pub key_file: Option<String>,

    /// Ingress: the queue to consume (required).
    #[serde(default)]
    pub queue: Option<String>,
    /// Ingress: the basic.qos prefetch count, 1 to 65535 (default 1024).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub prefetch: Option<u16>,
    /// Ingress: how a message becomes a record: `none` (the body, default) or `json`
    /// (`{"body", "routing_key", "exchange", "headers", "properties"}`, body as UTF-8 text).
    #[serde(default)]
    pub envelope: Option<Envelope>,
    /// Ingress: a message larger than this (after the envelope) is rejected to the queue's
    /// dead-letter exchange (default 1047552, under NATS's default 1 MiB max payload).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_record_bytes: Option<usize>,

    /// Declare the queue (ingress) or the exchange (egress) durable when it is missing
    /// (default false: it must exist).
    #[serde(default)]
    pub declare: bool,

    /// Egress: the exchange to publish to (required); `""` is the default exchange, which routes
    /// to the queue named by the routing key.
    #[serde(default)]
    pub exchange: Option<String>,
    /// Egress: the type of the exchange `declare` creates (default `direct`).
    #[serde(default)]
    pub exchange_type: Option<ExchangeType>,
    /// Egress: the routing key; required for the default exchange unless `routing_key_pointer`
    /// is given; with a pointer, the key of records where the pointer finds nothing.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Egress: a JSON pointer (RFC 6901, e.g. `/device/id`) taking the routing key from each
    /// record (a JSON document); a string, number or boolean there is the key.
    #[serde(default)]
    pub routing_key_pointer: Option<String>,
    /// Egress: publish persistent messages (delivery mode 2; default true).
    #[serde(default)]
    pub persistent: Option<bool>,
    /// Egress: publish with the mandatory flag (default true), so that a message no queue
    /// receives is returned and reported instead of dropped by the broker.
    #[serde(default)]
    pub mandatory: Option<bool>,
}

/// How an ingress message becomes a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// The message body as is.
    #[default]
    None,
    /// A JSON object: `body` (UTF-8 text), `routing_key`, `exchange`, `headers`, `properties`.
    Json,
}

/// The type of an exchange the egress stream declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    /// Routes on the exact routing key.
    #[default]
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes on routing key patterns.
    Topic,
    /// Routes on headers.
    Headers,
}

impl AmqpParams {
    /// The password source built from `password_file` / `password_env`.
    pub fn password_source(&self) -> PasswordSource {
        PasswordSource {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }

    /// The prefetch count in force.
    pub fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or(DEFAULT_PREFETCH)
    }

    /// The envelope in force.
    pub fn envelope(&self) -> Envelope {
        self.envelope.unwrap_or_default()
    }

    /// The record size limit in force.
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes.unwrap_or(DEFAULT_MAX_RECORD_BYTES)
    }

    /// Whether messages are published persistent.
    pub fn persistent(&self) -> bool {
        self.persistent.unwrap_or(true)
    }

    /// Whether messages are published mandatory.
    pub fn mandatory(&self) -> bool {
        self.mandatory.unwrap_or(true)
    }

    /// The exchange type in force.
    pub fn exchange_type(&self) -> ExchangeType {
        self.exchange_type.unwrap_or_default()
    }

    /// Checks what the type cannot express, for a stream in `direction`.
    pub fn validate(&self, direction: Direction) -> ConnectorResult<()> {
        let address = crate::connection::BrokerAddress::parse(&self.url)?;
        self.validate_credentials()?;
        self.validate_tls(address.is_tls())?;
        match direction {
            Direction::Ingress => self.validate_ingress(),
            Direction::Egress => self.validate_egress(),
        }
    }

    fn validate_credentials(&self) -> ConnectorResult<()> {
        let password = self.password_source();
        password.validate()?;
        match (&self.username, password.is_set()) {
            (Some(name), _) if name.is_empty() => {
                Err(ConnectorError::invalid("username", "must not be empty"))
            }
            (Some(_), false) => Err(ConnectorError::invalid(
                "username",
                "needs password_file or password_env (the password never travels in the metadata)",
            )),
            (None, true) => Err(ConnectorError::invalid(
                "username",
                "required with password_file or password_env",
            )),
            _ => Ok(()),
        }
    }

    fn validate_tls(&self, tls: bool) -> ConnectorResult<()> {
        for (field, value) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            match value.as_deref() {
                Some("") => return Err(ConnectorError::invalid(field, "must not be empty")),
                Some(_) if !tls => {
                    return Err(ConnectorError::invalid(field, "only for amqps:// urls"));
                }
                _ => {}
            }
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(ConnectorError::invalid(
                "key_file",
                "required with cert_file",
            )),
            (None, Some(_)) => Err(ConnectorError::invalid(
                "cert_file",
                "required with key_file",
            )),
            _ => Ok(()),
        }
    }

    fn validate_ingress(&self) -> ConnectorResult<()> {
        for (field, given) in [
            ("exchange", self.exchange.is_some()),
            ("exchange_type", self.exchange_type.is_some()),
            ("routing_key", self.routing_key.is_some()),
            ("routing_key_pointer", self.routing_key_pointer.is_some()),
            ("persistent", self.persistent.is_some()),
            ("mandatory", self.mandatory.is_some()),
        ] {
            if given {
                return Err(ConnectorError::invalid(field, "only for egress streams"));
            }
        }
        match self.queue.as_deref() {
            None => Err(ConnectorError::invalid(
                "queue",
                "required for ingress streams",
            )),
            Some("") => Err(ConnectorError::invalid("queue", "must not be empty")),
            Some(queue) => short_string("queue", queue),
        }?;
        if self.prefetch == Some(0) {
            return Err(ConnectorError::invalid(
                "prefetch",
                "must be at least 1 (0 would be unlimited)",
            ));
        }
        if self.max_record_bytes == Some(0) {
            return Err(ConnectorError::invalid(
                "max_record_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_egress(&self) -> ConnectorResult<()> {
        for (field, given) in [
            ("queue", self.queue.is_some()),
            ("prefetch", self.prefetch.is_some()),
            ("envelope", self.envelope.is_some()),
            ("max_record_bytes", self.max_record_bytes.is_some()),
        ] {
            if given {
                return Err(ConnectorError::invalid(field, "only for ingress streams"));
            }
        }
        let Some(exchange) = self.exchange.as_deref() else {
            return Err(ConnectorError::invalid(
                "exchange",
                "required for egress streams (\"\" is the default exchange)",
            ));
        };
        short_string("exchange", exchange)?;
        if let Some(key) = &self.routing_key {
            short_string("routing_key", key)?;
        }
        if let Some(pointer) = &self.routing_key_pointer
            && !pointer.is_empty()
            && !pointer.starts_with('/')
        {
            return Err(ConnectorError::invalid(
                "routing_key_pointer",
                "a JSON pointer starts with `/` (e.g. `/device/id`)",
            ));
        }
        if exchange.is_empty() {
            if self.routing_key.is_none() && self.routing_key_pointer.is_none() {
                return Err(ConnectorError::invalid(
                    "routing_key",
                    "required for the default exchange (it names the queue), or give routing_key_pointer",
                ));
            }
            if self.declare {
                return Err(ConnectorError::invalid(
                    "declare",
                    "the default exchange always exists and cannot be declared",
                ));
            }
            if self.exchange_type.is_some() {
                return Err(ConnectorError::invalid(
                    "exchange_type",
                    "the default exchange is a direct exchange",
                ));
            }
        } else if self.exchange_type.is_some() && !self.declare {
            return Err(ConnectorError::invalid(
                "exchange_type",
                "only used with declare: true",
            ));
        }
        Ok(())
    }
}

fn short_string(field: &str, value: &str) -> ConnectorResult<()> {
    if value.len() > MAX_SHORT_STRING {
        return Err(ConnectorError::invalid(
            field,
            format!("at most {MAX_SHORT_STRING} bytes, got {}", value.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kps_connector_core::params::parse_params;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> ConnectorResult<AmqpParams> {
        parse_params(v.as_object().expect("an object"))
    }

    fn field_of(r: ConnectorResult<()>) -> String {
        match r {
            Err(ConnectorError::InvalidParameter { field, .. }) => field,
            other => panic!("expected an invalid parameter, got {other:?}"),
        }
    }

    fn check(direction: Direction, v: serde_json::Value) -> ConnectorResult<()> {
        parse(v)?.validate(direction)
    }

    const URL: &str = "amqp://127.0.0.1:5672/%2f";

    #[test]
    fn valid_streams_pass() {
        check(Direction::Ingress, json!({"url": URL, "queue": "q"})).unwrap();
        check(
            Direction::Ingress,
            json!({"url": URL, "queue": "q", "prefetch": 10, "envelope": "json", "declare": true}),
        )
        .unwrap();
        check(
            Direction::Egress,
            json!({"url": URL, "exchange": "", "routing_key": "q"}),
        )
        .unwrap();
        check(Direction::Egress, json!({"url": URL, "exchange": "ex"})).unwrap();
        check(
            Direction::Egress,
            json!({"url": "amqps://broker.example:5671/prod", "exchange": "ex", "declare": true,
                   "exchange_type": "topic", "routing_key_pointer": "/id", "persistent": false,
                   "username": "app", "password_env": "AMQP_PASSWORD"}),
        )
        .unwrap();
    }

    #[test]
    fn tls_files_need_amqps_and_come_in_pairs() {
        let tls = "amqps://127.0.0.1:5671/%2f";
        check(
            Direction::Ingress,
            json!({"url": tls, "queue": "q", "ca_file": "/ca.pem",
                   "cert_file": "/c.pem", "key_file": "/c.key"}),
        )
        .unwrap();
        check(
            Direction::Egress,
            json!({"url": tls, "exchange": "x", "ca_file": "/ca.pem"}),
        )
        .unwrap();
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "ca_file": "/ca.pem"})
            )),
            "ca_file"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": tls, "queue": "q", "cert_file": "/c.pem"})
            )),
            "key_file"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": tls, "queue": "q", "key_file": "/c.key"})
            )),
            "cert_file"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": tls, "queue": "q", "ca_file": ""})
            )),
            "ca_file"
        );
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        for url in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://guest@127.0.0.1:5672/%2f",
            "amqp://:secret@127.0.0.1:5672/%2f",
        ] {
            assert_eq!(
                field_of(check(Direction::Ingress, json!({"url": url, "queue": "q"}))),
                "url"
            );
        }
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "http://127.0.0.1:5672",
            "not a url",
            "amqp://",
            "amqp:///vhost",
        ] {
            assert_eq!(
                field_of(check(Direction::Ingress, json!({"url": url, "queue": "q"}))),
                "url",
                "{url}"
            );
        }
    }

    #[test]
    fn missing_queue_or_exchange_is_refused() {
        assert_eq!(
            field_of(check(Direction::Ingress, json!({"url": URL}))),
            "queue"
        );
        assert_eq!(
            field_of(check(Direction::Ingress, json!({"url": URL, "queue": ""}))),
            "queue"
        );
        assert_eq!(
            field_of(check(Direction::Egress, json!({"url": URL}))),
            "exchange"
        );
        assert_eq!(
            field_of(check(
                Direction::Egress,
                json!({"url": URL, "exchange": ""})
            )),
            "routing_key"
        );
    }

    #[test]
    fn fields_of_the_other_direction_are_refused() {
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "exchange": "x"})
            )),
            "exchange"
        );
        assert_eq!(
            field_of(check(
                Direction::Egress,
                json!({"url": URL, "exchange": "x", "queue": "q"})
            )),
            "queue"
        );
        assert_eq!(
            field_of(check(
                Direction::Egress,
                json!({"url": URL, "exchange": "x", "envelope": "json"})
            )),
            "envelope"
        );
    }

    #[test]
    fn other_rules_name_their_field() {
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "prefetch": 0})
            )),
            "prefetch"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "prefetch": 70000})
            )),
            "prefetch"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "envelope": "xml"})
            )),
            "envelope"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "bogus": 1})
            )),
            "bogus"
        );
        assert_eq!(
            field_of(check(
                Direction::Egress,
                json!({"url": URL, "exchange": "", "routing_key": "q", "declare": true})
            )),
            "declare"
        );
        assert_eq!(
            field_of(check(
                Direction::Egress,
                json!({"url": URL, "exchange": "x", "routing_key_pointer": "id"})
            )),
            "routing_key_pointer"
        );
        assert_eq!(
            field_of(check(
                Direction::Egress,
                json!({"url": URL, "exchange": "x", "exchange_type": "fanout"})
            )),
            "exchange_type"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q".repeat(256)})
            )),
            "queue"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "username": "u"})
            )),
            "username"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "password_env": "P"})
            )),
            "username"
        );
        assert_eq!(
            field_of(check(
                Direction::Ingress,
                json!({"url": URL, "queue": "q", "username": "u", "password_env": "P", "password_file": "f"})
            )),
            "password_file"
        );
    }
}

//! One stream's parameters (its metadata) and the checks the type cannot express.

use std::collections::BTreeMap;
use std::fmt;

use kps_connector_core::{ConnectorError, ConnectorResult, Direction, PasswordSource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kafka stream's parameters.
///
/// Ingress streams read `topic` as a member of the consumer group `group_id`; egress streams
/// write to `topic` with an idempotent producer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaParams {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// The topic read (ingress) or written (egress).
    pub topic: String,
    /// Ingress: the consumer group; default `kps-<connector id>-<stream id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Ingress: where a group with no committed offset starts: `earliest` or `latest` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Start>,
    /// Egress: `none` (default) or a JSON pointer into the record (e.g. `/device_id`) whose value
    /// becomes the message key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Egress: the producer's compression: `none` (default), `gzip`, `snappy`, `lz4`, `zstd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// Ingress: what a record is: `none` (the message value, default) or `json` (an object with
    /// `key`, `value`, `headers`, `partition`, `offset`, `timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<Envelope>,
    /// Extra librdkafka settings that are not secrets (e.g. `{"sasl.mechanism": "PLAIN"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, PropertyValue>,
    /// A file holding the SASL password (`sasl.password`), e.g. a mounted Kubernetes secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the SASL password (`sasl.password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// How connections to the brokers are secured: `plaintext` (default), `ssl` (TLS),
    /// `sasl_plaintext` or `sasl_ssl` (SASL over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_protocol: Option<SecurityProtocol>,
    /// `ssl`/`sasl_ssl` only: a PEM file of the CA certificates that signed the brokers'
    /// certificates, trusted instead of the system's CA store (`ssl.ca.location`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `ssl`/`sasl_ssl` only: a PEM client certificate (chain) for brokers that require one
    /// (mutual TLS, `ssl.certificate.location`); needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// `ssl`/`sasl_ssl` only: the PEM private key of `cert_file` (`ssl.key.location`;
    /// unencrypted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// How connections to the brokers are secured (librdkafka's `security.protocol`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// Plain TCP.
    #[default]
    Plaintext,
    /// TLS; the brokers' certificates are verified, host name included.
    Ssl,
    /// SASL authentication over plain TCP.
    SaslPlaintext,
    /// SASL authentication over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether connections use TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// Where a consumer group with no committed offset starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// The oldest message still in the partition.
    Earliest,
    /// Only messages produced after the group joined.
    #[default]
    Latest,
}

impl Start {
    /// The `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Earliest => "earliest",
            Start::Latest => "latest",
        }
    }
}

/// The producer's compression codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression.
    #[default]
    None,
    /// gzip (zlib, built in statically).
    Gzip,
    /// snappy (bundled with librdkafka).
    Snappy,
    /// lz4 (bundled with librdkafka).
    Lz4,
    /// zstd (built in statically).
    Zstd,
}

impl Compression {
    /// The `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// What an ingress record is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// The message value as it is.
    #[default]
    None,
    /// A JSON object: `key`, `value`, `headers`, `partition`, `offset`, `timestamp`.
    Json,
}

/// A librdkafka setting's value: a string, a number or a boolean (librdkafka takes them all as
/// text).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PropertyValue {
    /// A string.
    Text(String),
    /// A boolean, given as `true` or `false`.
    Flag(bool),
    /// A number.
    Number(serde_json::Number),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PropertyValue::Text(text) => f.write_str(text),
            PropertyValue::Flag(flag) => write!(f, "{flag}"),
            PropertyValue::Number(number) => write!(f, "{number}"),
        }
    }
}

/// librdkafka settings the connector sets itself, with the parameter to use instead (or why not).
const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("bootstrap.servers", "use the `brokers` parameter"),
    ("metadata.broker.list", "use the `brokers` parameter"),
    ("group.id", "use the `group_id` parameter"),
    ("auto.offset.reset", "use the `start` parameter"),
    ("compression.type", "use the `compression` parameter"),
    ("compression.codec", "use the `compression` parameter"),
    (
        "enable.auto.offset.store",
        "offsets are stored only after the transport confirmed",
    ),
    (
        "enable.auto.commit",
        "stored offsets are committed periodically by the connector's consumer",
    ),
    ("enable.idempotence", "the producer is always idempotent"),
    ("acks", "the producer always waits for all in-sync replicas"),
    (
        "request.required.acks",
        "the producer always waits for all in-sync replicas",
    ),
    (
        "sasl.password",
        "secrets come from password_file or password_env",
    ),
    ("security.protocol", "use the `security_protocol` parameter"),
    ("ssl.ca.location", "use the `ca_file` parameter"),
    ("ssl.ca.pem", "use the `ca_file` parameter"),
    ("ssl.certificate.location", "use the `cert_file` parameter"),
    ("ssl.key.location", "use the `key_file` parameter"),
];

/// Whether a librdkafka setting holds a secret (never accepted in stream metadata).
fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("password")
        || name.contains("secret")
        || name == "ssl.key.pem"
        || name == "ssl.certificate.pem"
        || name == "ssl_key"
        || name.starts_with("sasl.oauthbearer.config")
}

impl KafkaParams {
    /// Parameters naming only a cluster (for discovery through the `discovery_brokers` key).
    pub fn for_brokers(brokers: &str) -> Self {
        Self {
            brokers: brokers.to_owned(),
            topic: String::new(),
            group_id: None,
            start: None,
            key: None,
            compression: None,
            envelope: None,
            properties: BTreeMap::new(),
            password_file: None,
            password_env: None,
            security_protocol: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    /// The security protocol in force.
    pub fn security_protocol(&self) -> SecurityProtocol {
        self.security_protocol.unwrap_or_default()
    }

    /// The TLS files given, each with its parameter's name.
    pub fn tls_files(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ]
        .into_iter()
        .filter_map(|(field, value)| value.as_deref().map(|path| (field, path)))
    }

    /// Where the SASL password comes from.
    pub fn password(&self) -> PasswordSource {
        PasswordSource {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }

    /// The rules the type cannot express, for a stream in `direction`.
    pub fn validate(&self, direction: Direction) -> ConnectorResult<()> {
        validate_brokers(&self.brokers)?;
        validate_topic(&self.topic)?;
        let wrong_direction = |field: &str| {
            ConnectorError::invalid(
                field,
                format!(
                    "applies to {} streams only",
                    match direction {
                        Direction::Ingress => "egress",
                        Direction::Egress => "ingress",
                    }
                ),
            )
        };
        match direction {
            Direction::Ingress => {
                if self.key.is_some() {
                    return Err(wrong_direction("key"));
                }
                if self.compression.is_some() {
                    return Err(wrong_direction("compression"));
                }
                if let Some(group) = &self.group_id
                    && group.trim().is_empty()
                {
                    return Err(ConnectorError::invalid("group_id", "must not be empty"));
                }
            }
            Direction::Egress => {
                if self.group_id.is_some() {
                    return Err(wrong_direction("group_id"));
                }
                if self.start.is_some() {
                    return Err(wrong_direction("start"));
                }
                if self.envelope.is_some() {
                    return Err(wrong_direction("envelope"));
                }
                if let Some(key) = &self.key {
                    validate_key(key)?;
                }
            }
        }
        for name in self.properties.keys() {
            if is_secret_property(name) {
                return Err(ConnectorError::invalid(
                    "properties",
                    format!(
                        "`{name}` is a secret: secrets come from password_file or password_env, never from stream metadata"
                    ),
                ));
            }
            if let Some((_, why)) = OWNED_PROPERTIES.iter().find(|(owned, _)| owned == name) {
                return Err(ConnectorError::invalid(
                    "properties",
                    format!("`{name}` is set by the connector: {why}"),
                ));
            }
        }
        self.validate_tls()?;
        self.password().validate()
    }

    /// `ca_file`, `cert_file` and `key_file`: not empty, only with TLS, certificate and key
    /// together.
    fn validate_tls(&self) -> ConnectorResult<()> {
        let tls = self.security_protocol().is_tls();
        for (field, path) in self.tls_files() {
            if path.trim().is_empty() {
                return Err(ConnectorError::invalid(field, "must not be empty"));
            }
            if !tls {
                return Err(ConnectorError::invalid(
                    field,
                    "only with security_protocol ssl or sasl_ssl",
                ));
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

    /// The key pointer for egress, `None` for `none` or no key.
    pub fn key_pointer(&self) -> Option<&str> {
        self.key.as_deref().filter(|key| *key != "none")
    }
}

/// Checks a `host:port[,host:port]` list; errors name `brokers`.
pub(crate) fn validate_brokers(brokers: &str) -> ConnectorResult<()> {
    let invalid = |why: String| Err(ConnectorError::invalid("brokers", why));
    if brokers.trim().is_empty() {
        return invalid("must list at least one host:port".to_owned());
    }
    for broker in brokers.split(',') {
        let broker = broker.trim();
        let Some((host, port)) = broker.rsplit_once(':') else {
            return invalid(format!("`{broker}` is not host:port"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |port| port == 0) {
            return invalid(format!("`{broker}` is not host:port"));
        }
    }
    Ok(())
}

fn validate_topic(topic: &str) -> ConnectorResult<()> {
    let invalid = |why: &str| Err(ConnectorError::invalid("topic", why));
    if topic.is_empty() {
        return invalid("must not be empty");
    }
    if topic.len() > 249 {
        return invalid("is longer than 249 characters");
    }
    if topic == "." || topic == ".." {
        return invalid("cannot be `.` or `..`");
    }
    if !topic
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return invalid("may hold only ASCII letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

fn validate_key(key: &str) -> ConnectorResult<()> {
    if key == "none" || key.starts_with('/') {
        Ok(())
    } else {
        Err(ConnectorError::invalid(
            "key",
            "must be `none` or a JSON pointer such as `/device_id`",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kps_connector_core::params::parse_params;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> ConnectorResult<KafkaParams> {
        parse_params(value.as_object().expect("an object"))
    }

    fn field(result: ConnectorResult<impl fmt::Debug>) -> String {
        match result {
            Err(ConnectorError::InvalidParameter { field, .. }) => field,
            other => panic!("expected an invalid parameter, got {other:?}"),
        }
    }

    #[test]
    fn minimal_parameters_parse_with_defaults() {
        let params = parse(json!({"brokers": "127.0.0.1:9092", "topic": "t"})).unwrap();
        assert_eq!(params.start.unwrap_or_default(), Start::Latest);
        assert_eq!(params.envelope.unwrap_or_default(), Envelope::None);
        assert_eq!(params.compression.unwrap_or_default(), Compression::None);
        assert_eq!(params.key_pointer(), None);
        params.validate(Direction::Ingress).unwrap();
        params.validate(Direction::Egress).unwrap();
    }

    #[test]
    fn every_field_parses() {
        let params = parse(json!({
            "brokers": "a:9092,b:9093",
            "topic": "events.v1",
            "key": "/device_id",
            "compression": "zstd",
            "properties": {"linger.ms": 10, "socket.keepalive.enable": true, "client.rack": "r1"},
            "password_env": "KAFKA_PASSWORD",
        }))
        .unwrap();
        params.validate(Direction::Egress).unwrap();
        assert_eq!(params.key_pointer(), Some("/device_id"));
        let values: Vec<String> = params.properties.values().map(|v| v.to_string()).collect();
        assert_eq!(values, ["r1", "10", "true"]);
    }

    #[test]
    fn type_errors_name_the_field() {
        assert_eq!(field(parse(json!({"topic": "t"}))), "brokers");
        assert_eq!(field(parse(json!({"brokers": "a:1"}))), "topic");
        let bad_start = json!({"brokers": "a:1", "topic": "t", "start": "middle"});
        assert_eq!(field(parse(bad_start)), "start");
        let bad_codec = json!({"brokers": "a:1", "topic": "t", "compression": "brotli"});
        assert_eq!(field(parse(bad_codec)), "compression");
        let unknown = json!({"brokers": "a:1", "topic": "t", "partition": 3});
        assert_eq!(field(parse(unknown)), "partition");
    }

    #[test]
    fn rules_name_the_field() {
        let check = |value: serde_json::Value, direction| {
            field(parse(value).and_then(|p| p.validate(direction)))
        };
        let ingress = Direction::Ingress;
        let egress = Direction::Egress;
        assert_eq!(
            check(json!({"brokers": "", "topic": "t"}), ingress),
            "brokers"
        );
        assert_eq!(
            check(json!({"brokers": "host", "topic": "t"}), ingress),
            "brokers"
        );
        assert_eq!(
            check(json!({"brokers": "h:0", "topic": "t"}), ingress),
            "brokers"
        );
        assert_eq!(
            check(json!({"brokers": "h:1", "topic": ""}), ingress),
            "topic"
        );
        assert_eq!(
            check(json!({"brokers": "h:1", "topic": "a b"}), ingress),
            "topic"
        );
        let key = json!({"brokers": "h:1", "topic": "t", "key": "device_id"});
        assert_eq!(check(key.clone(), egress), "key");
        assert_eq!(check(key, ingress), "key");
        let envelope = json!({"brokers": "h:1", "topic": "t", "envelope": "json"});
        assert_eq!(check(envelope, egress), "envelope");
        let group = json!({"brokers": "h:1", "topic": "t", "group_id": " "});
        assert_eq!(check(group, ingress), "group_id");
        let secret = json!({"brokers": "h:1", "topic": "t", "properties": {"sasl.password": "x"}});
        assert_eq!(check(secret, ingress), "properties");
        let keystore =
            json!({"brokers": "h:1", "topic": "t", "properties": {"ssl.keystore.password": "x"}});
        assert_eq!(check(keystore, egress), "properties");
        let owned =
            json!({"brokers": "h:1", "topic": "t", "properties": {"enable.idempotence": false}});
        assert_eq!(check(owned, egress), "properties");
        let both =
            json!({"brokers": "h:1", "topic": "t", "password_env": "A", "password_file": "/b"});
        assert_eq!(check(both, egress), "password_file");
    }

    #[test]
    fn tls_files_need_a_tls_protocol_and_come_in_pairs() {
        let check = |value: serde_json::Value| {
            parse(value).and_then(|p| p.validate(Direction::Ingress).map(|()| p))
        };
        let tls = check(
            json!({"brokers": "h:1", "topic": "t", "security_protocol": "ssl",
                               "ca_file": "/ca.pem", "cert_file": "/c.pem", "key_file": "/c.key"}),
        )
        .unwrap();
        assert_eq!(tls.security_protocol(), SecurityProtocol::Ssl);
        let files: Vec<_> = tls.tls_files().collect();
        assert_eq!(
            files,
            [
                ("ca_file", "/ca.pem"),
                ("cert_file", "/c.pem"),
                ("key_file", "/c.key")
            ]
        );
        let sasl = check(json!({"brokers": "h:1", "topic": "t", "security_protocol": "sasl_ssl"}))
            .unwrap();
        assert!(sasl.security_protocol().is_tls());
        assert_eq!(
            check(json!({"brokers": "h:1", "topic": "t"}))
                .unwrap()
                .security_protocol(),
            SecurityProtocol::Plaintext
        );
        let plaintext_ca = json!({"brokers": "h:1", "topic": "t", "ca_file": "/ca.pem"});
        assert_eq!(field(check(plaintext_ca)), "ca_file");
        let sasl_plaintext_ca = json!({"brokers": "h:1", "topic": "t",
            "security_protocol": "sasl_plaintext", "ca_file": "/ca.pem"});
        assert_eq!(field(check(sasl_plaintext_ca)), "ca_file");
        let empty =
            json!({"brokers": "h:1", "topic": "t", "security_protocol": "ssl", "ca_file": ""});
        assert_eq!(field(check(empty)), "ca_file");
        let cert_alone = json!({"brokers": "h:1", "topic": "t", "security_protocol": "ssl",
                                "cert_file": "/c.pem"});
        assert_eq!(field(check(cert_alone)), "key_file");
        let key_alone = json!({"brokers": "h:1", "topic": "t", "security_protocol": "ssl",
                               "key_file": "/c.key"});
        assert_eq!(field(check(key_alone)), "cert_file");
        let unknown = json!({"brokers": "h:1", "topic": "t", "security_protocol": "tls"});
        assert_eq!(field(check(unknown)), "security_protocol");
        for owned in ["security.protocol", "ssl.ca.location", "ssl.key.location"] {
            let value = json!({"brokers": "h:1", "topic": "t", "properties": {owned: "x"}});
            assert_eq!(field(check(value)), "properties", "{owned}");
        }
    }
}

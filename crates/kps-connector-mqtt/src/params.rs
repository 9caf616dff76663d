//! One stream's parameters (its metadata), their JSON Schema and the rules serde cannot express.

use kps_connector_core::{ConnectorError, ConnectorResult, Direction, PasswordSource};
use schemars::JsonSchema;
use serde::Deserialize;

/// The egress in-flight window when only qos 0 and 1 are published.
const DEFAULT_INFLIGHT: u16 = 256;

/// The egress in-flight window when qos 2 may be published (Mosquitto's default
/// `max_inflight_messages`).
const DEFAULT_QOS2_INFLIGHT: u16 = 20;

/// The highest MQTT topic length (a UTF-8 string with a 16-bit length prefix).
const MAX_TOPIC_BYTES: usize = 65_535;

/// The parameters of one MQTT stream.
///
/// Ingress streams subscribe to `topic` (a filter) and publish every MQTT message as one record;
/// egress streams publish every record to `topic` (a name).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttParams {
    /// The broker: `mqtt://host:port` (port 1883 by default) or `mqtts://host:port` (TLS, port
    /// 8883 by default). No credentials in the URL.
    pub url: String,
    /// Ingress: a topic filter (`+`, `#` and `$share/GROUP/filter` allowed). Egress: a topic
    /// name (no wildcards).
    pub topic: String,
    /// The quality of service: 0 (at most once), 1 (at least once) or 2 (exactly once to the
    /// broker). Ingress subscribes with it, egress publishes with it.
    #[serde(default = "default_qos")]
    #[schemars(range(min = 0, max = 2))]
    pub qos: u8,
    /// The MQTT client id; by default one derived from the connector id and the stream id,
    /// stable across restarts, at most 23 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Whether the broker forgets the session on disconnect. Default: `false` for ingress with
    /// qos >= 1 (messages published while the connector is down are delivered after it comes
    /// back), `true` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_session: Option<bool>,
    /// Egress only: publish with the MQTT retain flag.
    #[serde(default)]
    pub retain: bool,
    /// How a record maps to an MQTT message: `none` (the record is the payload) or `json`
    /// (`{"topic", "payload", "payload_base64", "qos", "retain"}`).
    #[serde(default)]
    pub envelope: Envelope,
    /// The user name to log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password (e.g. a mounted Kubernetes secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// An environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// `mqtts` only: a PEM file with the CA certificate(s) to trust instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Egress only: the most qos 1/2 publishes awaiting the broker's acknowledgement. Default
    /// 256, or 20 when qos 2 may be published (qos 2, or the json envelope): Mosquitto's default
    /// `max_inflight_messages`, beyond which it drops qos 2 publishes of MQTT 3.1.1 clients
    /// without telling them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub max_inflight: Option<u16>,
}

fn default_qos() -> u8 {
    1
}

/// How a record maps to an MQTT message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// The record is the MQTT payload, byte for byte.
    #[default]
    None,
    /// The record is a JSON object `{"topic", "payload", "payload_base64", "qos", "retain"}`;
    /// the payload is UTF-8 text, or base64 with `"payload_base64": true`.
    Json,
}

/// Whether the connection is plain TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `mqtt://`
    Mqtt,
    /// `mqtts://`
    Mqtts,
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Plain or TLS.
    pub scheme: Scheme,
    /// The host name or address (IPv6 addresses in brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
        };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

impl MqttParams {
    /// The broker URL, checked.
    pub fn broker(&self) -> ConnectorResult<BrokerUrl> {
        parse_url(&self.url)
    }

    /// Where the password comes from.
    pub fn password_source(&self) -> PasswordSource {
        PasswordSource {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
        }
    }

    /// The clean-session flag in force for `direction`.
    pub fn clean_session_for(&self, direction: Direction) -> bool {
        self.clean_session
            .unwrap_or(!(direction == Direction::Ingress && self.qos > 0))
    }

    /// The egress in-flight window in force.
    pub fn inflight(&self) -> u16 {
        self.max_inflight
            .unwrap_or(if self.qos == 2 || self.envelope == Envelope::Json {
                DEFAULT_QOS2_INFLIGHT
            } else {
                DEFAULT_INFLIGHT
            })
    }

    /// Checks everything serde could not, for a stream in `direction`.
    pub fn validate(&self, direction: Direction) -> ConnectorResult<()> {
        let broker = self.broker()?;
        if self.qos > 2 {
            return Err(ConnectorError::invalid(
                "qos",
                format!("must be 0, 1 or 2, not {}", self.qos),
            ));
        }
        match direction {
            Direction::Ingress => validate_filter(&self.topic)?,
            Direction::Egress => validate_topic_name(&self.topic)
                .map_err(|why| ConnectorError::invalid("topic", why))?,
        }
        if self.max_inflight == Some(0) {
            return Err(ConnectorError::invalid(
                "max_inflight",
                "must be at least 1",
            ));
        }
        if direction == Direction::Ingress && self.max_inflight.is_some() {
            return Err(ConnectorError::invalid(
                "max_inflight",
                "only for egress streams (the broker sets the ingress window)",
            ));
        }
        if direction == Direction::Ingress && self.retain {
            return Err(ConnectorError::invalid(
                "retain",
                "only egress streams publish; remove it from ingress streams",
            ));
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() {
                return Err(ConnectorError::invalid(
                    "client_id",
                    "must not be empty; omit it for the default",
                ));
            }
            if id.len() > MAX_TOPIC_BYTES {
                return Err(ConnectorError::invalid(
                    "client_id",
                    "longer than 65535 bytes",
                ));
            }
        }
        if let Some(user) = &self.username
            && user.is_empty()
        {
            return Err(ConnectorError::invalid("username", "must not be empty"));
        }
        let password = self.password_source();
        password.validate()?;
        if password.is_set() && self.username.is_none() {
            return Err(ConnectorError::invalid(
                "username",
                "MQTT 3.1.1 sends a password only with a user name",
            ));
        }
        if self.ca_file.is_some() && broker.scheme != Scheme::Mqtts {
            return Err(ConnectorError::invalid("ca_file", "only for mqtts:// urls"));
        }
        Ok(())
    }
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]`.
pub fn parse_url(raw: &str) -> ConnectorResult<BrokerUrl> {
    let invalid = |why: &str| ConnectorError::invalid("url", why.to_owned());
    let url = url::Url::parse(raw).map_err(|e| ConnectorError::invalid("url", e.to_string()))?;
    let scheme = match url.scheme() {
        "mqtt" | "tcp" => Scheme::Mqtt,
        "mqtts" | "ssl" => Scheme::Mqtts,
        other => {
            return Err(ConnectorError::invalid(
                "url",
                format!("scheme `{other}` is not mqtt or mqtts"),
            ));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in the url; use username and password_file or password_env",
        ));
    }
    if !(url.path().is_empty() || url.path() == "/")
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(invalid("expected mqtt://host:port without path or query"));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        _ => return Err(invalid("has no host")),
    };
    let port = url.port().unwrap_or(match scheme {
        Scheme::Mqtt => 1883,
        Scheme::Mqtts => 8883,
    });
    Ok(BrokerUrl { scheme, host, port })
}

/// Checks an ingress topic filter, including the `$share/GROUP/filter` form.
fn validate_filter(filter: &str) -> ConnectorResult<()> {
    let invalid = |why: String| Err(ConnectorError::invalid("topic", why));
    if filter.is_empty() {
        return invalid("must not be empty".to_owned());
    }
    if filter.len() > MAX_TOPIC_BYTES {
        return invalid("longer than 65535 bytes".to_owned());
    }
    if filter.contains('\0') {
        return invalid("must not contain the null character".to_owned());
    }
    let inner = match filter.strip_prefix("$share/") {
        Some(rest) => {
            let Some((group, inner)) = rest.split_once('/') else {
                return invalid("expected $share/GROUP/filter".to_owned());
            };
            if group.is_empty() || group.contains(['+', '#']) {
                return invalid(format!(
                    "`{group}` is not a valid shared subscription group"
                ));
            }
            if inner.is_empty() {
                return invalid("expected $share/GROUP/filter".to_owned());
            }
            inner
        }
        None => filter,
    };
    let levels: Vec<&str> = inner.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let is_last = i + 1 == levels.len();
        match *level {
            "#" if !is_last => return invalid("`#` must be the last level of a filter".to_owned()),
            "#" | "+" => {}
            l if l.contains(['+', '#']) => {
                return invalid(format!("wildcards must fill a whole level, not `{l}`"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a topic name to publish to (egress, or a record's topic in the json envelope).
pub fn validate_topic_name(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err("longer than 65535 bytes".to_owned());
    }
    if topic.contains(['+', '#']) {
        return Err(format!(
            "`{topic}` has wildcards; publishing needs a topic name"
        ));
    }
    if topic.contains('\0') {
        return Err("must not contain the null character".to_owned());
    }
    if topic.starts_with('$') {
        return Err(format!(
            "`{topic}` starts with `$`, which is reserved for the broker"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> ConnectorResult<MqttParams> {
        kps_connector_core::params::parse_params(v.as_object().expect("an object"))
    }

    fn field(e: ConnectorError) -> String {
        match e {
            ConnectorError::InvalidParameter { field, .. } => field,
            other => panic!("not an invalid parameter: {other:?}"),
        }
    }

    fn check(v: serde_json::Value, direction: Direction) -> Result<MqttParams, String> {
        let p = params(v).map_err(field)?;
        p.validate(direction).map_err(field)?;
        Ok(p)
    }

    #[test]
    fn defaults() {
        let p = check(
            json!({"url": "mqtt://127.0.0.1", "topic": "a/#"}),
            Direction::Ingress,
        )
        .unwrap();
        assert_eq!(p.qos, 1);
        assert_eq!(p.envelope, Envelope::None);
        assert!(!p.retain);
        assert!(!p.clean_session_for(Direction::Ingress));
        assert!(p.clean_session_for(Direction::Egress));
        assert_eq!(
            p.broker().unwrap(),
            BrokerUrl {
                scheme: Scheme::Mqtt,
                host: "127.0.0.1".into(),
                port: 1883
            }
        );
        let p0 = check(
            json!({"url": "mqtts://h", "topic": "a", "qos": 0}),
            Direction::Ingress,
        )
        .unwrap();
        assert!(p0.clean_session_for(Direction::Ingress));
        assert_eq!(p0.broker().unwrap().port, 8883);
        assert_eq!(p.inflight(), 256);
        let q2 = check(
            json!({"url": "mqtt://h", "topic": "a", "qos": 2}),
            Direction::Egress,
        )
        .unwrap();
        assert_eq!(q2.inflight(), 20);
        let set = check(
            json!({"url": "mqtt://h", "topic": "a", "max_inflight": 5}),
            Direction::Egress,
        )
        .unwrap();
        assert_eq!(set.inflight(), 5);
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let base = |extra: serde_json::Value| {
            let mut v = json!({"url": "mqtt://localhost:1883", "topic": "t"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        let ingress = Direction::Ingress;
        let egress = Direction::Egress;
        assert_eq!(check(base(json!({"qos": 3})), ingress).unwrap_err(), "qos");
        assert_eq!(check(base(json!({"qos": -1})), ingress).unwrap_err(), "qos");
        assert_eq!(
            check(base(json!({"qos": "high"})), ingress).unwrap_err(),
            "qos"
        );
        assert_eq!(check(json!({"topic": "t"}), ingress).unwrap_err(), "url");
        assert_eq!(
            check(json!({"url": "mqtt://h"}), ingress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"url": "http://h"})), ingress).unwrap_err(),
            "url"
        );
        assert_eq!(
            check(base(json!({"url": "mqtt://u:p@h"})), ingress).unwrap_err(),
            "url"
        );
        assert_eq!(
            check(base(json!({"url": "not a url"})), ingress).unwrap_err(),
            "url"
        );
        assert_eq!(
            check(base(json!({"envelope": "xml"})), ingress).unwrap_err(),
            "envelope"
        );
        assert_eq!(
            check(base(json!({"bogus": 1})), ingress).unwrap_err(),
            "bogus"
        );
        assert_eq!(
            check(base(json!({"topic": "a/+"})), egress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"topic": "a/#"})), egress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"topic": ""})), ingress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"topic": "a/#/b"})), ingress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"topic": "a/b+"})), ingress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"topic": "$share//a"})), ingress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"topic": "$share/g"})), ingress).unwrap_err(),
            "topic"
        );
        assert_eq!(
            check(base(json!({"retain": true})), ingress).unwrap_err(),
            "retain"
        );
        assert_eq!(
            check(base(json!({"client_id": ""})), ingress).unwrap_err(),
            "client_id"
        );
        assert_eq!(
            check(base(json!({"password_env": "X"})), ingress).unwrap_err(),
            "username"
        );
        assert_eq!(
            check(
                base(json!({"username": "u", "password_env": "X", "password_file": "/f"})),
                ingress
            )
            .unwrap_err(),
            "password_file"
        );
        assert_eq!(
            check(base(json!({"ca_file": "/ca.pem"})), ingress).unwrap_err(),
            "ca_file"
        );
        assert_eq!(
            check(base(json!({"max_inflight": 0})), egress).unwrap_err(),
            "max_inflight"
        );
        assert_eq!(
            check(base(json!({"max_inflight": 70000})), egress).unwrap_err(),
            "max_inflight"
        );
        assert_eq!(
            check(base(json!({"max_inflight": 10})), ingress).unwrap_err(),
            "max_inflight"
        );
    }

    #[test]
    fn good_filters_and_names() {
        for filter in [
            "a/+/c",
            "#",
            "+",
            "a/#",
            "$share/g1/a/+/c",
            "$SYS/#",
            "/a//b",
        ] {
            check(
                json!({"url": "mqtt://h", "topic": filter}),
                Direction::Ingress,
            )
            .unwrap_or_else(|f| panic!("{filter} refused ({f})"));
        }
        check(
            json!({"url": "mqtts://[::1]:8884", "topic": "a/b", "retain": true, "ca_file": "/x"}),
            Direction::Egress,
        )
        .unwrap();
        assert_eq!(parse_url("mqtts://[::1]:8884").unwrap().host, "[::1]");
    }
}

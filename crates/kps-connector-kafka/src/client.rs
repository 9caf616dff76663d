//! librdkafka client settings shared by the consumer, the producer and discovery, and the blocking
//! librdkafka calls moved off the async runtime.

use std::sync::Mutex;
use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult};
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::params::KafkaParams;

/// How long opening a stream waits for the cluster's metadata before reporting it unreachable.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings every client of a stream gets: brokers, client id, security protocol and TLS
/// files, the stream's extra properties, and the SASL password when one is configured (read now,
/// so a rotated secret is picked up on reconnect). The TLS files are checked now too, so that a
/// missing or wrong file fails the stream naming the parameter and the file.
pub(crate) async fn base_config(
    params: &KafkaParams,
    client_id: &str,
) -> ConnectorResult<ClientConfig> {
    for (field, path) in params.tls_files() {
        let marker = match field {
            "key_file" => "PRIVATE KEY-----",
            _ => "CERTIFICATE-----",
        };
        check_pem(field, path, marker).await?;
    }
    let mut config = plain_config(params, client_id);
    if let Some(password) = params.password().load().await? {
        config.set("sasl.password", password.expose());
    }
    Ok(config)
}

/// [`base_config`] without the secret, for validation and discovery.
pub(crate) fn plain_config(params: &KafkaParams, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", params.brokers.trim())
        .set("client.id", client_id)
        // Fail a broker connection attempt within a few seconds (the default is 30s).
        .set("socket.connection.setup.timeout.ms", "10000")
        .set("security.protocol", params.security_protocol().as_str());
    for (field, path) in params.tls_files() {
        let property = match field {
            "ca_file" => "ssl.ca.location",
            "cert_file" => "ssl.certificate.location",
            _ => "ssl.key.location",
        };
        config.set(property, path);
    }
    for (name, value) in &params.properties {
        config.set(name.as_str(), value.to_string());
    }
    config
}

/// Checks that the file `path` of parameter `field` can be read and holds a
/// `-----BEGIN ...{marker}` block. Errors name the field and the file, never the content.
async fn check_pem(field: &str, path: &str, marker: &str) -> ConnectorResult<()> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ConnectorError::invalid(field, format!("cannot read {path}: {e}")))?;
    let holds = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(marker));
    if holds {
        Ok(())
    } else {
        Err(ConnectorError::invalid(
            field,
            format!("{path} holds no PEM {}", marker.trim_end_matches('-')),
        ))
    }
}

/// The latest broker connection failure librdkafka logged (for example `SSL handshake failed:
/// ... certificate verify failed`), so that errors and alerts say why the cluster is
/// unreachable: librdkafka's error events carry only a code, and an open that times out only
/// "broker transport failure".
#[derive(Debug, Default)]
pub(crate) struct BrokerFailures {
    last: Mutex<Option<String>>,
}

impl BrokerFailures {
    /// A client context's `log`: forwards the line to `tracing` (as rdkafka does by default)
    /// and remembers broker failures (facility `FAIL`).
    pub(crate) fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let failure = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}");
                true
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}");
                true
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}");
                false
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}");
                false
            }
        };
        if failure && facility == "FAIL" {
            // Lines start with the broker thread's name, `[thrd:ssl://host:port/bootstrap]: `.
            let message = match message.strip_prefix("[thrd:") {
                Some(rest) => rest.split_once("]: ").map_or(message, |(_, text)| text),
                None => message,
            };
            *self.lock() = Some(message.to_owned());
        }
    }

    /// `what`, followed by the last broker failure when one was logged since the last
    /// [`BrokerFailures::clear`].
    pub(crate) fn explain(&self, what: String) -> String {
        match self.lock().as_deref() {
            Some(failure) => format!("{what} (last broker failure: {failure})"),
            None => what,
        }
    }

    /// Forgets the last failure (the cluster answers again).
    pub(crate) fn clear(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks `config` with librdkafka itself (unknown settings, bad values) without connecting.
pub(crate) fn check_config(config: &ClientConfig) -> ConnectorResult<()> {
    config
        .create_native_config()
        .map(drop)
        .map_err(|e| match e {
            KafkaError::ClientConfig(_, description, name, _) => ConnectorError::invalid(
                "properties",
                format!("`{name}`: {}", description.trim_end_matches('.')),
            ),
            other => ConnectorError::invalid("properties", other.to_string()),
        })
}

/// Runs a blocking librdkafka call (metadata, commit, close) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> ConnectorResult<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| ConnectorError::retryable(format!("a librdkafka call did not finish: {e}")))
}

/// Drops a librdkafka client on the blocking pool: destroying a client waits for its
/// outstanding requests (a consumer also leaves its group), which must not block the runtime.
pub(crate) fn drop_off_runtime<T: Send + 'static>(client: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || drop(client));
        }
        Err(_) => drop(client),
    }
}

/// A librdkafka error as a connector error: connection trouble is retryable; a client that
/// cannot be created (its TLS files refused by OpenSSL, say) and the codes below are fatal.
pub(crate) fn classify(context: &str, error: &KafkaError) -> ConnectorError {
    let message = format!("{context}: {error}");
    if matches!(error, KafkaError::ClientCreation(_)) {
        return ConnectorError::fatal(message);
    }
    match error.rdkafka_error_code() {
        Some(code) if is_fatal_code(code) => ConnectorError::fatal(message),
        _ => ConnectorError::retryable(message),
    }
}

/// Errors that retrying with the same settings will not cure.
fn is_fatal_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::UnsupportedFeature
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::PropertyValue;

    fn params(properties: &[(&str, PropertyValue)]) -> KafkaParams {
        let mut params = KafkaParams::for_brokers("127.0.0.1:9092");
        params.properties = properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        params
    }

    #[test]
    fn broker_failures_explain_errors_until_cleared() {
        let failures = BrokerFailures::default();
        assert_eq!(failures.explain("down".into()), "down");
        failures.log(RDKafkaLogLevel::Info, "FAIL", "Disconnected (idle)");
        failures.log(RDKafkaLogLevel::Error, "CONFWARN", "not a broker failure");
        assert_eq!(failures.explain("down".into()), "down");
        failures.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "[thrd:ssl://h:1/bootstrap]: ssl://h:1/bootstrap: SSL handshake failed: x",
        );
        assert_eq!(
            failures.explain("down".into()),
            "down (last broker failure: ssl://h:1/bootstrap: SSL handshake failed: x)"
        );
        failures.clear();
        assert_eq!(failures.explain("down".into()), "down");
    }

    #[tokio::test]
    async fn tls_files_are_checked_naming_the_parameter_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let mut params = KafkaParams::for_brokers("127.0.0.1:9092");
        params.security_protocol = Some(crate::params::SecurityProtocol::Ssl);
        params.ca_file = Some(not_pem.display().to_string());
        let err = base_config(&params, "c").await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidParameter { field, message }
                if field == "ca_file" && message.contains("ca.txt") && message.contains("no PEM")),
            "{err:?}"
        );
        params.ca_file = Some(dir.path().join("missing.pem").display().to_string());
        let err = base_config(&params, "c").await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidParameter { field, message }
                if field == "ca_file" && message.contains("missing.pem")),
            "{err:?}"
        );
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        params.ca_file = Some(ca.display().to_string());
        let config = base_config(&params, "c").await.unwrap();
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some(ca.to_str().unwrap()));
    }

    #[test]
    fn librdkafka_checks_the_properties() {
        let good = params(&[("linger.ms", PropertyValue::Text("20".into()))]);
        check_config(&plain_config(&good, "c")).unwrap();
        let unknown = params(&[("no.such.setting", PropertyValue::Text("1".into()))]);
        let err = check_config(&plain_config(&unknown, "c")).unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidParameter { field, message }
                if field == "properties" && message.contains("no.such.setting")),
            "{err:?}"
        );
        let bad_value = params(&[("linger.ms", PropertyValue::Text("soon".into()))]);
        assert!(check_config(&plain_config(&bad_value, "c")).is_err());
    }
}

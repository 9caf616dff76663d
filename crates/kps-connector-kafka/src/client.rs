//! librdkafka client settings shared by the consumer, the producer and discovery, and the blocking
//! librdkafka calls moved off the async runtime.

use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult};
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::params::KafkaParams;

/// How long opening a stream waits for the cluster's metadata before reporting it unreachable.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings every client of a stream gets: brokers, client id, the stream's extra
/// properties, and the SASL password when one is configured (read now, so a rotated secret is
/// picked up on reconnect).
pub(crate) async fn base_config(
    params: &KafkaParams,
    client_id: &str,
) -> ConnectorResult<ClientConfig> {
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
        .set("socket.connection.setup.timeout.ms", "10000");
    for (name, value) in &params.properties {
        config.set(name.as_str(), value.to_string());
    }
    config
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

/// A librdkafka error as a connector error: connection trouble is retryable, the rest fatal.
pub(crate) fn classify(context: &str, error: &KafkaError) -> ConnectorError {
    let message = format!("{context}: {error}");
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

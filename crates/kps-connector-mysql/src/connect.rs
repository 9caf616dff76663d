//! Opening a connection: the URL's options, the password loaded now, the session in UTC, a
//! bounded wait.

use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult, PasswordSource};
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnection;

use crate::error::describe;
use crate::params::DbUrl;

/// How long a connection attempt may take before it counts as failed (and is retried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url`; a failure is retryable and names the server, never the password.
pub async fn connect(url: &DbUrl, password: &PasswordSource) -> ConnectorResult<MySqlConnection> {
    connect_within(url, password, CONNECT_TIMEOUT).await
}

/// Connects to `url`, giving up after `timeout`.
pub async fn connect_within(
    url: &DbUrl,
    password: &PasswordSource,
    timeout: Duration,
) -> ConnectorResult<MySqlConnection> {
    let options = url.connect_options(password).await?;
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ConnectorError::retryable(format!(
            "connect to {}: {}",
            url.shown(),
            describe(&e)
        ))),
        Err(_) => Err(ConnectorError::retryable(format!(
            "connect to {}: no answer within {timeout:?}",
            url.shown()
        ))),
    }
}

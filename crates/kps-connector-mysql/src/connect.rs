//! Opening a connection: the URL's options, the password and TLS files loaded now, the session
//! in UTC, a bounded wait.

use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult, PasswordSource};
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnection;

use crate::error::describe;
use crate::params::DbUrl;
use crate::tls::{SslMode, TlsSettings};

/// How long a connection attempt may take before it counts as failed (and is retried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `url` with `tls`; a failure is retryable and names the server, never the
/// password; a TLS file that cannot be read is an invalid parameter naming it.
pub async fn connect(
    url: &DbUrl,
    password: &PasswordSource,
    tls: &TlsSettings,
) -> ConnectorResult<MySqlConnection> {
    connect_within(url, password, tls, CONNECT_TIMEOUT).await
}

/// Connects to `url` with `tls`, giving up after `timeout`.
pub async fn connect_within(
    url: &DbUrl,
    password: &PasswordSource,
    tls: &TlsSettings,
    timeout: Duration,
) -> ConnectorResult<MySqlConnection> {
    let options = url.connect_options(password, tls).await?;
    match tokio::time::timeout(timeout, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        // A mode other than the default is named, and TLS trouble always names it (a refused
        // certificate comes as an I/O error: `invalid peer certificate: UnknownIssuer`).
        Ok(Err(e)) if tls.mode != SslMode::Preferred || matches!(e, sqlx::Error::Tls(_)) => {
            Err(ConnectorError::retryable(format!(
                "connect to {} with ssl_mode {}: {}",
                url.shown(),
                tls.mode.as_str(),
                describe(&e)
            )))
        }
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

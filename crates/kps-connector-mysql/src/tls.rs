//! TLS to the server: the `ssl_mode` parameter, the PEM files (`ca_file`, `cert_file`,
//! `key_file`), their rules, and how they become sqlx connect options.
//!
//! MySQL negotiates TLS inside its protocol (the client asks for it after the server's
//! greeting). sqlx is built with rustls (ring) and the system's CA store; the files are read
//! when a connection opens, so renewed certificates are used from the next reconnect, and a file
//! that cannot be read fails the stream naming the parameter and the file.

use kps_connector_core::{ConnectorError, ConnectorResult};
use schemars::JsonSchema;
use serde::Deserialize;
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

/// How a connection uses TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SslMode {
    /// Never: plain TCP.
    Disabled,
    /// TLS when the server offers it, else plain TCP; the certificate is not checked (the
    /// default without `ca_file`, as with the MySQL clients).
    #[default]
    Preferred,
    /// TLS or no connection; the certificate is not checked.
    Required,
    /// TLS, and the server's certificate must chain to `ca_file` (or the system's CA store);
    /// the host name is not compared (the default with `ca_file`).
    VerifyCa,
    /// As `verify_ca`, and the certificate must name the URL's host.
    VerifyIdentity,
}

impl SslMode {
    /// The mode's name as in the parameters.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "disabled",
            SslMode::Preferred => "preferred",
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify_ca",
            SslMode::VerifyIdentity => "verify_identity",
        }
    }

    /// Whether the server's certificate is checked (the only modes that use `ca_file`).
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyIdentity)
    }

    fn sqlx(self) -> MySqlSslMode {
        match self {
            SslMode::Disabled => MySqlSslMode::Disabled,
            SslMode::Preferred => MySqlSslMode::Preferred,
            SslMode::Required => MySqlSslMode::Required,
            SslMode::VerifyCa => MySqlSslMode::VerifyCa,
            SslMode::VerifyIdentity => MySqlSslMode::VerifyIdentity,
        }
    }
}

/// A connection's TLS settings, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode in force.
    pub mode: SslMode,
    /// The CA certificates trusted besides the system's (verifying modes only).
    pub ca_file: Option<String>,
    /// The client certificate (chain) presented, with `key_file`.
    pub cert_file: Option<String>,
    /// The client certificate's private key.
    pub key_file: Option<String>,
}

impl TlsSettings {
    /// Resolves and checks the parameters: `ssl_mode` defaults to `verify_ca` with a `ca_file`
    /// and to `preferred` without; `ca_file` only with a verifying mode (the others would ignore
    /// it), `cert_file` and `key_file` together and not with `disabled`, no empty path. Errors
    /// name the parameter.
    pub fn resolve(
        mode: Option<SslMode>,
        ca_file: Option<&str>,
        cert_file: Option<&str>,
        key_file: Option<&str>,
    ) -> ConnectorResult<Self> {
        for (field, value) in [
            ("ca_file", ca_file),
            ("cert_file", cert_file),
            ("key_file", key_file),
        ] {
            if value.is_some_and(|path| path.trim().is_empty()) {
                return Err(ConnectorError::invalid(field, "must not be empty"));
            }
        }
        let mode = mode.unwrap_or(if ca_file.is_some() {
            SslMode::VerifyCa
        } else {
            SslMode::Preferred
        });
        if ca_file.is_some() && !mode.verifies() {
            return Err(ConnectorError::invalid(
                "ca_file",
                format!(
                    "is used only with ssl_mode verify_ca or verify_identity, not {}",
                    mode.as_str()
                ),
            ));
        }
        match (cert_file, key_file) {
            (Some(_), None) => {
                return Err(ConnectorError::invalid(
                    "key_file",
                    "required with cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(ConnectorError::invalid(
                    "cert_file",
                    "required with key_file",
                ));
            }
            (Some(_), Some(_)) if mode == SslMode::Disabled => {
                return Err(ConnectorError::invalid(
                    "cert_file",
                    "is not used with ssl_mode disabled",
                ));
            }
            _ => {}
        }
        Ok(Self {
            mode,
            ca_file: ca_file.map(str::to_owned),
            cert_file: cert_file.map(str::to_owned),
            key_file: key_file.map(str::to_owned),
        })
    }

    /// `options` with this TLS: the mode, and the files read now (errors name the parameter
    /// and the file, never the content).
    pub async fn apply(
        &self,
        options: MySqlConnectOptions,
    ) -> ConnectorResult<MySqlConnectOptions> {
        let mut options = options.ssl_mode(self.mode.sqlx());
        if let Some(path) = &self.ca_file {
            options = options.ssl_ca_from_pem(read_pem("ca_file", path, "CERTIFICATE-----").await?);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            options = options
                .ssl_client_cert_from_pem(read_pem("cert_file", cert, "CERTIFICATE-----").await?)
                .ssl_client_key_from_pem(read_pem("key_file", key, "PRIVATE KEY-----").await?);
        }
        Ok(options)
    }

    /// The parameters that give these settings, for discovered streams' metadata (the mode
    /// always, the files when given).
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("ssl_mode", self.mode.as_str().to_owned())];
        for (field, value) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = value {
                fields.push((field, path.clone()));
            }
        }
        fields
    }
}

/// Reads the PEM file `path` of parameter `field`, which must hold a `-----BEGIN ...{marker}`
/// block.
async fn read_pem(field: &str, path: &str, marker: &str) -> ConnectorResult<Vec<u8>> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| ConnectorError::invalid(field, format!("cannot read {path}: {e}")))?;
    let holds = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(marker));
    if !holds {
        return Err(ConnectorError::invalid(
            field,
            format!("{path} holds no PEM {}", marker.trim_end_matches('-')),
        ));
    }
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(result: ConnectorResult<TlsSettings>) -> String {
        match result {
            Err(ConnectorError::InvalidParameter { field, .. }) => field,
            other => panic!("expected an invalid parameter, got {other:?}"),
        }
    }

    #[test]
    fn the_mode_defaults_by_ca_file_and_files_follow_the_rules() {
        let none = TlsSettings::resolve(None, None, None, None).unwrap();
        assert_eq!(none.mode, SslMode::Preferred);
        let ca = TlsSettings::resolve(None, Some("/ca.pem"), None, None).unwrap();
        assert_eq!(ca.mode, SslMode::VerifyCa);
        let identity =
            TlsSettings::resolve(Some(SslMode::VerifyIdentity), Some("/ca.pem"), None, None)
                .unwrap();
        assert_eq!(identity.mode, SslMode::VerifyIdentity);
        let mutual = TlsSettings::resolve(
            Some(SslMode::Required),
            None,
            Some("/c.pem"),
            Some("/c.key"),
        )
        .unwrap();
        assert_eq!(
            mutual.metadata(),
            [
                ("ssl_mode", "required".to_owned()),
                ("cert_file", "/c.pem".to_owned()),
                ("key_file", "/c.key".to_owned())
            ]
        );
        for mode in [SslMode::Disabled, SslMode::Preferred, SslMode::Required] {
            assert_eq!(
                field(TlsSettings::resolve(
                    Some(mode),
                    Some("/ca.pem"),
                    None,
                    None
                )),
                "ca_file"
            );
        }
        assert_eq!(
            field(TlsSettings::resolve(None, Some(" "), None, None)),
            "ca_file"
        );
        assert_eq!(
            field(TlsSettings::resolve(None, None, Some("/c.pem"), None)),
            "key_file"
        );
        assert_eq!(
            field(TlsSettings::resolve(None, None, None, Some("/c.key"))),
            "cert_file"
        );
        assert_eq!(
            field(TlsSettings::resolve(
                Some(SslMode::Disabled),
                None,
                Some("/c.pem"),
                Some("/c.key")
            )),
            "cert_file"
        );
    }

    #[tokio::test]
    async fn files_are_read_naming_the_parameter_and_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let not_pem = dir.join("ca.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let options = MySqlConnectOptions::new();
        let tls = |path: &std::path::Path| {
            TlsSettings::resolve(None, Some(path.to_str().unwrap()), None, None).unwrap()
        };
        let err = tls(&not_pem).apply(options.clone()).await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidParameter { field, message }
                if field == "ca_file" && message.contains("ca.txt") && message.contains("no PEM")),
            "{err:?}"
        );
        let missing = dir.join("missing.pem");
        let err = tls(&missing).apply(options.clone()).await.unwrap_err();
        assert!(
            matches!(&err, ConnectorError::InvalidParameter { field, message }
                if field == "ca_file" && message.contains("missing.pem")),
            "{err:?}"
        );
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        tls(&ca).apply(options).await.unwrap();
    }
}

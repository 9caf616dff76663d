//! The gRPC connection to a connector, with errors that say what happened.

use kps_connector_core::proto;
use kps_connector_core::proto::connector_service_client::ConnectorServiceClient;
use kps_connector_core::testkit::StreamDecl;
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::{CliError, CliResult};

/// The TLS files of the connection flags: `--tls-ca` turns TLS on; `--tls-cert` and
/// `--tls-key` add a client certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the connector's certificate.
    pub ca: Option<PathBuf>,
    /// The client certificate (mutual TLS).
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether TLS is asked for.
    pub fn enabled(&self) -> bool {
        self.ca.is_some()
    }

    /// The client TLS config, reading the files now; errors name the flag and the file.
    fn client_config(&self) -> CliResult<Option<ClientTlsConfig>> {
        let Some(ca) = &self.ca else {
            if self.cert.is_some() || self.key.is_some() {
                return Err(CliError::Input(
                    "--tls-cert and --tls-key need --tls-ca".to_owned(),
                ));
            }
            return Ok(None);
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read("--tls-cert", cert)?,
                    read("--tls-key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(CliError::Input(
                    "--tls-cert and --tls-key go together".to_owned(),
                ));
            }
        }
        Ok(Some(config))
    }
}

fn read(flag: &str, path: &Path) -> CliResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| CliError::Input(format!("{flag} {}: cannot read: {e}", path.display())))
}

/// A connected client and the connector id it speaks for.
#[derive(Debug, Clone)]
pub struct Connection {
    client: ConnectorServiceClient<Channel>,
    endpoint: String,
    connector_id: String,
}

/// `host:port` or `http://host:port` as a URI.
pub fn endpoint_uri(address: &str) -> String {
    endpoint_uri_for(address, false)
}

/// `host:port` as `http://` or, with `tls`, `https://`; a URI with a scheme as given.
fn endpoint_uri_for(address: &str, tls: bool) -> String {
    if address.contains("://") {
        address.to_owned()
    } else if tls {
        format!("https://{address}")
    } else {
        format!("http://{address}")
    }
}

impl Connection {
    /// Connects to the connector at `address` over plaintext.
    pub async fn connect(address: &str, connector_id: Option<&str>) -> CliResult<Self> {
        Self::connect_with(address, connector_id, &TlsFiles::default()).await
    }

    /// Connects to the connector at `address`, over TLS when `tls` names a CA.
    pub async fn connect_with(
        address: &str,
        connector_id: Option<&str>,
        tls: &TlsFiles,
    ) -> CliResult<Self> {
        let connector_id = connector_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                CliError::Input("--connector-id (or CONNECTOR_INSTANCE_ID) is required".to_owned())
            })?
            .to_owned();
        let tls_config = tls.client_config()?;
        let endpoint = endpoint_uri_for(address, tls_config.is_some());
        let mut target = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .map_err(|e| CliError::Input(format!("--connector `{address}`: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(5));
        match tls_config {
            Some(config) => {
                if endpoint.starts_with("http://") {
                    return Err(CliError::Input(format!(
                        "--connector `{address}`: with --tls-ca use https:// or host:port"
                    )));
                }
                target = target
                    .tls_config(config)
                    .map_err(|e| CliError::Input(format!("TLS: {}", error_chain(&e))))?;
            }
            None if endpoint.starts_with("https://") => {
                return Err(CliError::Input(format!(
                    "--connector `{address}`: https:// needs --tls-ca"
                )));
            }
            None => {}
        }
        let channel = target.connect().await.map_err(|e| CliError::Unreachable {
            endpoint: endpoint.clone(),
            reason: error_chain(&e),
        })?;
        Ok(Self {
            client: ConnectorServiceClient::new(channel),
            endpoint,
            connector_id,
        })
    }

    /// The connector id.
    pub fn connector_id(&self) -> &str {
        &self.connector_id
    }

    /// The endpoint URI.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn refused(endpoint: &str, call: &'static str, status: tonic::Status) -> CliError {
        if status.code() == tonic::Code::Unavailable {
            return CliError::Unreachable {
                endpoint: endpoint.to_owned(),
                reason: status.message().to_owned(),
            };
        }
        // A failed TLS handshake or a broken connection: the transport's error, not the
        // connector's answer.
        if let Some(source) = std::error::Error::source(&status) {
            return CliError::Unreachable {
                endpoint: endpoint.to_owned(),
                reason: format!("{call}: {}", error_chain(source)),
            };
        }
        CliError::Refused {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// Every stream GetPayload STREAM lists.
    pub async fn streams(&mut self) -> CliResult<Vec<proto::Stream>> {
        let request = proto::GetPayloadRequest {
            connector_id: self.connector_id.clone(),
            kind: proto::PayloadKind::Stream as i32,
        };
        let response = self
            .client
            .get_payload(request)
            .await
            .map_err(|s| Self::refused(&self.endpoint, "GetPayload", s))?
            .into_inner();
        Ok(response
            .payloads
            .into_iter()
            .filter_map(|p| match p.object {
                Some(proto::payload::Object::Stream(s)) => Some(s),
                _ => None,
            })
            .collect())
    }

    /// Declares the whole stream set.
    pub async fn set_streams(&mut self, streams: Vec<proto::Stream>) -> CliResult<()> {
        let request = proto::SetPayloadRequest {
            connector_id: self.connector_id.clone(),
            payloads: streams
                .into_iter()
                .map(|s| proto::Payload {
                    object: Some(proto::payload::Object::Stream(s)),
                })
                .collect(),
        };
        self.client
            .set_payload(request)
            .await
            .map_err(|s| Self::refused(&self.endpoint, "SetPayload", s))?;
        Ok(())
    }

    /// Declares the whole stream set from test-kit declarations.
    pub async fn apply(&mut self, streams: &[StreamDecl]) -> CliResult<()> {
        self.set_streams(streams.iter().map(StreamDecl::to_proto).collect())
            .await
    }

    /// The config in force.
    pub async fn config(&mut self) -> CliResult<serde_json::Map<String, serde_json::Value>> {
        let request = proto::GetPayloadRequest {
            connector_id: self.connector_id.clone(),
            kind: proto::PayloadKind::Config as i32,
        };
        let response = self
            .client
            .get_payload(request)
            .await
            .map_err(|s| Self::refused(&self.endpoint, "GetPayload", s))?
            .into_inner();
        Ok(response
            .payloads
            .into_iter()
            .find_map(|p| match p.object {
                Some(proto::payload::Object::Config(c)) => Some(
                    kps_connector_core::grpc::convert::struct_to_json(c.metadata.as_ref()),
                ),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// Merges `update` into the config.
    pub async fn set_config(
        &mut self,
        update: &serde_json::Map<String, serde_json::Value>,
    ) -> CliResult<()> {
        let request = proto::SetPayloadRequest {
            connector_id: self.connector_id.clone(),
            payloads: vec![proto::Payload {
                object: Some(proto::payload::Object::Config(proto::Config {
                    metadata: Some(kps_connector_core::grpc::convert::json_to_struct(update)),
                })),
            }],
        };
        self.client
            .set_payload(request)
            .await
            .map_err(|s| Self::refused(&self.endpoint, "SetPayload", s))?;
        Ok(())
    }

    /// The current events.
    pub async fn events(&mut self) -> CliResult<Vec<proto::EventPayload>> {
        let request = proto::GetEventsRequest {
            connector_id: self.connector_id.clone(),
        };
        let response = self
            .client
            .get_events(request)
            .await
            .map_err(|s| Self::refused(&self.endpoint, "GetEvents", s))?
            .into_inner();
        Ok(response.event_payloads)
    }
}

/// An error and its causes, on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

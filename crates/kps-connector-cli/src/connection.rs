//! The gRPC connection to a connector, with errors that say what happened.

use kps_connector_core::proto;
use kps_connector_core::proto::connector_service_client::ConnectorServiceClient;
use kps_connector_core::testkit::StreamDecl;
use tonic::transport::Channel;

use crate::{CliError, CliResult};

/// A connected client and the connector id it speaks for.
#[derive(Debug, Clone)]
pub struct Connection {
    client: ConnectorServiceClient<Channel>,
    endpoint: String,
    connector_id: String,
}

/// `host:port` or `http://host:port` as a URI.
pub fn endpoint_uri(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

impl Connection {
    /// Connects to the connector at `address`.
    pub async fn connect(address: &str, connector_id: Option<&str>) -> CliResult<Self> {
        let connector_id = connector_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                CliError::Input("--connector-id (or CONNECTOR_INSTANCE_ID) is required".to_owned())
            })?
            .to_owned();
        let endpoint = endpoint_uri(address);
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
            .map_err(|e| CliError::Input(format!("--connector `{address}`: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| CliError::Unreachable {
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

    fn refused(call: &'static str, status: tonic::Status) -> CliError {
        if status.code() == tonic::Code::Unavailable {
            return CliError::Unreachable {
                endpoint: call.to_owned(),
                reason: status.message().to_owned(),
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
            .map_err(|s| Self::refused("GetPayload", s))?
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
            .map_err(|s| Self::refused("SetPayload", s))?;
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
            .map_err(|s| Self::refused("GetPayload", s))?
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
            .map_err(|s| Self::refused("SetPayload", s))?;
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
            .map_err(|s| Self::refused("GetEvents", s))?
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

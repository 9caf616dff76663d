//! The gRPC edge: the contract's `ConnectorService`, plus gRPC health and reflection.
//!
//! Only this module (with the transport's wire codec) sees prost and tonic types. Refusals are
//! gRPC errors whose code matches the ResponseCode and whose message names the field or stream.

pub mod convert;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::events::{Severity, State, alert_ids};
use crate::proto::connector_service_server::{ConnectorService, ConnectorServiceServer};
use crate::proto::{self, PayloadKind, ResponseCode};
use crate::runtime::Supervisor;
use crate::tls::{ServerTls, TlsError};
use convert::{direction_to_proto, event_to_proto, json_to_struct};
use validate::validate_request;

/// Applies a new log filter (the `log_level` config key); set by the binary's tracing setup.
pub type LogControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// How long GetPayload waits for the connector's discovery.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The contract's service over a [`Supervisor`].
pub struct ConnectorGrpc {
    supervisor: Arc<Supervisor>,
    apply_lock: tokio::sync::Mutex<()>,
    log_control: Option<LogControl>,
}

impl ConnectorGrpc {
    /// The service for `supervisor`; `log_control` applies `log_level` changes.
    pub fn new(supervisor: Arc<Supervisor>, log_control: Option<LogControl>) -> Self {
        Self {
            supervisor,
            apply_lock: tokio::sync::Mutex::new(()),
            log_control,
        }
    }

    fn check_identity(&self, connector_id: &str) -> Result<(), Status> {
        let own = &self.supervisor.deps().connector_id;
        if connector_id != own.as_ref() {
            return Err(Status::invalid_argument(format!(
                "connector_id: `{connector_id}` is not this connector's id (`{own}`)"
            )));
        }
        Ok(())
    }

    async fn streams_payload(&self) -> Vec<proto::Payload> {
        let deps = self.supervisor.deps();
        let subscribed = self.supervisor.streams();
        let mut streams: BTreeMap<String, proto::Stream> = subscribed
            .iter()
            .map(|e| {
                (
                    e.spec.id.clone(),
                    proto::Stream {
                        id: e.spec.id.clone(),
                        subscribed: true,
                        discovered: false,
                        direction: direction_to_proto(e.spec.direction) as i32,
                        transport_channel: e.spec.transport_channel.clone(),
                        metadata: Some(json_to_struct(&e.spec.metadata)),
                    },
                )
            })
            .collect();
        let params = subscribed
            .iter()
            .map(|e| (e.spec.id.clone(), e.params.clone()))
            .collect();
        let discovery = tokio::time::timeout(
            DISCOVERY_TIMEOUT,
            deps.connector.discover(deps.config.current(), params),
        )
        .await;
        match discovery {
            Ok(Ok(found)) => {
                deps.events
                    .resolve(alert_ids::DISCOVERY, "", "discovery works again");
                for d in found {
                    streams
                        .entry(d.id.clone())
                        .and_modify(|s| s.discovered = true)
                        .or_insert_with(|| proto::Stream {
                            id: d.id,
                            subscribed: false,
                            discovered: true,
                            direction: direction_to_proto(d.direction) as i32,
                            transport_channel: d.transport_channel,
                            metadata: Some(json_to_struct(&d.metadata)),
                        });
                }
            }
            Ok(Err(e)) => discovery_failed(deps, e.to_string()),
            Err(_) => discovery_failed(deps, format!("no answer within {DISCOVERY_TIMEOUT:?}")),
        }
        streams
            .into_values()
            .map(|s| proto::Payload {
                object: Some(proto::payload::Object::Stream(s)),
            })
            .collect()
    }
}

fn discovery_failed(deps: &crate::runtime::StreamDeps, reason: String) {
    tracing::warn!(%reason, "stream discovery failed");
    deps.events.alert(
        alert_ids::DISCOVERY,
        "",
        Severity::Warning,
        State::Unhealthy,
        format!("discovery failed: {reason}"),
    );
}

/// The status a SetPayload refused by validation returns: INVALID_ARGUMENT with the message
/// naming the field (the fuzz targets check every refusal through this same function).
pub(crate) fn refusal(message: String) -> Status {
    tracing::info!(%message, "SetPayload refused");
    Status::invalid_argument(message)
}

fn ok_status() -> Option<proto::ResponseStatus> {
    Some(proto::ResponseStatus {
        code: ResponseCode::Ok as i32,
        message: String::new(),
        details: Vec::new(),
    })
}

#[tonic::async_trait]
impl ConnectorService for ConnectorGrpc {
    async fn get_payload(
        &self,
        request: Request<proto::GetPayloadRequest>,
    ) -> Result<Response<proto::GetPayloadResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(&request.connector_id)?;
        let payloads = match PayloadKind::try_from(request.kind) {
            Ok(PayloadKind::Stream) => self.streams_payload().await,
            Ok(PayloadKind::Config) => {
                let config = self.supervisor.deps().config.current();
                vec![proto::Payload {
                    object: Some(proto::payload::Object::Config(proto::Config {
                        metadata: Some(json_to_struct(&config)),
                    })),
                }]
            }
            Ok(PayloadKind::Unspecified) => {
                return Err(Status::invalid_argument(
                    "kind: PAYLOAD_KIND_UNSPECIFIED; ask for STREAM or CONFIG",
                ));
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "kind: unknown payload kind {}; ask for STREAM or CONFIG",
                    request.kind
                )));
            }
        };
        Ok(Response::new(proto::GetPayloadResponse {
            status: ok_status(),
            payloads,
        }))
    }

    async fn set_payload(
        &self,
        request: Request<proto::SetPayloadRequest>,
    ) -> Result<Response<proto::SetPayloadResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(&request.connector_id)?;
        // One SetPayload at a time, so validation and application see the same state.
        let _guard = self.apply_lock.lock().await;
        let deps = self.supervisor.deps();
        let valid = validate_request(deps.connector.as_ref(), &deps.config, &request.payloads)
            .map_err(refusal)?;
        if let Some(config) = valid.config {
            if let (Some(control), Some(level)) = (
                &self.log_control,
                config
                    .get(crate::config::LOG_LEVEL_KEY)
                    .and_then(|v| v.as_str()),
            ) && let Err(e) = control(level)
            {
                return Err(Status::invalid_argument(format!("config.log_level: {e}")));
            }
            deps.config.replace(config);
            tracing::info!("dynamic config applied");
        }
        if let Some(streams) = valid.streams {
            self.supervisor.apply(streams).await;
        }
        Ok(Response::new(proto::SetPayloadResponse {
            status: ok_status(),
        }))
    }

    async fn get_events(
        &self,
        request: Request<proto::GetEventsRequest>,
    ) -> Result<Response<proto::GetEventsResponse>, Status> {
        let request = request.into_inner();
        self.check_identity(&request.connector_id)?;
        let event_payloads = self
            .supervisor
            .deps()
            .events
            .snapshot()
            .into_iter()
            .map(event_to_proto)
            .collect();
        Ok(Response::new(proto::GetEventsResponse {
            status: ok_status(),
            event_payloads,
        }))
    }
}

/// The gRPC server, its TLS (if any) set up before it serves: a certificate and a key that do
/// not belong together are a startup error, not a failed handshake later.
pub struct GrpcServer {
    server: tonic::transport::Server,
    tls: &'static str,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// A plaintext server, or with `tls` a TLS one (mutual TLS when `tls` has a client CA).
    pub fn new(tls: Option<&ServerTls>) -> Result<Self, TlsError> {
        let server = tonic::transport::Server::builder();
        let Some(tls) = tls else {
            return Ok(Self { server, tls: "off" });
        };
        let mut config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(tls.cert.pem(), tls.key.pem()),
        );
        let mut files = format!(
            "--tls-cert {}, --tls-key {}",
            tls.cert.path().display(),
            tls.key.path().display()
        );
        if let Some(ca) = &tls.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca.pem()));
            files.push_str(&format!(", --tls-client-ca {}", ca.path().display()));
        }
        let server = server.tls_config(config).map_err(|e| TlsError::Unusable {
            files,
            reason: error_chain(&e),
        })?;
        let mode = if tls.client_ca.is_some() {
            "mutual TLS"
        } else {
            "TLS"
        };
        Ok(Self { server, tls: mode })
    }

    /// Serves the contract, gRPC health and reflection on `listener` until `shutdown` fires.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        service: ConnectorGrpc,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<ConnectorServiceServer<ConnectorGrpc>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .build_v1();
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        tracing::info!(?addr, tls = self.tls, "gRPC server listening");
        let router = self
            .server
            .add_service(health_service)
            .add_service(ConnectorServiceServer::new(service));
        let router = match reflection {
            Ok(reflection) => router.add_service(reflection),
            Err(e) => {
                tracing::warn!(error = %e, "gRPC reflection unavailable");
                router
            }
        };
        router
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
    }
}

/// An error and its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
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

//! [`TestConnector`]: a connector running in this process, driven over its real gRPC contract.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::app::{RunningConnector, start};
use crate::connector::{Connector, Direction};
use crate::events::State;
use crate::grpc::convert::{direction_to_proto, json_to_struct};
use crate::options::{RuntimeOptions, TransportKind};
use crate::proto;
use crate::proto::connector_service_client::ConnectorServiceClient;

/// One stream as a test declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDecl {
    /// The stream id.
    pub id: String,
    /// Its direction.
    pub direction: Direction,
    /// The NATS subject.
    pub channel: String,
    /// The connector's parameters (a JSON object).
    pub metadata: Value,
}

impl StreamDecl {
    /// An ingress stream.
    pub fn ingress(id: impl Into<String>, channel: impl Into<String>, metadata: Value) -> Self {
        Self {
            id: id.into(),
            direction: Direction::Ingress,
            channel: channel.into(),
            metadata,
        }
    }

    /// An egress stream.
    pub fn egress(id: impl Into<String>, channel: impl Into<String>, metadata: Value) -> Self {
        Self {
            id: id.into(),
            direction: Direction::Egress,
            channel: channel.into(),
            metadata,
        }
    }

    /// As the contract's Stream message.
    pub fn to_proto(&self) -> proto::Stream {
        proto::Stream {
            id: self.id.clone(),
            subscribed: true,
            discovered: false,
            direction: direction_to_proto(self.direction) as i32,
            transport_channel: self.channel.clone(),
            metadata: Some(json_to_struct(
                self.metadata
                    .as_object()
                    .cloned()
                    .as_ref()
                    .unwrap_or(&Default::default()),
            )),
        }
    }

    /// As a Payload.
    pub fn to_payload(&self) -> proto::Payload {
        proto::Payload {
            object: Some(proto::payload::Object::Stream(self.to_proto())),
        }
    }
}

/// An event as tests look at it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventView {
    /// `status` or `alert`.
    pub kind: &'static str,
    /// The event id.
    pub id: String,
    /// The stream id (empty for the connector).
    pub stream_id: String,
    /// The state.
    pub state: State,
    /// The message.
    pub message: String,
    /// When it began.
    pub created_at: Option<SystemTime>,
}

/// Connects a gRPC client to `endpoint` (`http://host:port`), retrying for up to 10 seconds.
pub async fn grpc_client(
    endpoint: &str,
) -> Result<ConnectorServiceClient<Channel>, tonic::transport::Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ConnectorServiceClient::connect(endpoint.to_owned()).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Connects a gRPC client over TLS to `endpoint` (`https://127.0.0.1:port`; the host is the
/// name checked against the server's certificate), retrying for up to 10 seconds.
/// [`super::TestCertificates::grpc_client_tls`] makes `tls`.
pub async fn grpc_tls_client(
    endpoint: &str,
    tls: ClientTlsConfig,
) -> Result<ConnectorServiceClient<Channel>, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(ConnectorServiceClient::new(channel)),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A connector running in this process on ephemeral loopback ports, with a unique connector id
/// and its own state directory, against the test NATS server.
pub struct TestConnector<C: Connector + Clone> {
    connector: C,
    options: RuntimeOptions,
    running: Option<RunningConnector>,
    client: ConnectorServiceClient<Channel>,
    applied: Vec<StreamDecl>,
    _state_dir: Arc<tempfile::TempDir>,
}

impl<C: Connector + Clone> TestConnector<C> {
    /// Starts `connector` with core NATS.
    pub async fn start(connector: C) -> Self {
        Self::start_with(connector, |_| {}).await
    }

    /// Starts `connector` in JetStream mode.
    pub async fn start_jetstream(connector: C) -> Self {
        Self::start_with(connector, |o| o.transport = TransportKind::Jetstream).await
    }

    /// Starts `connector` after `adjust` changed the options.
    pub async fn start_with(connector: C, adjust: impl FnOnce(&mut RuntimeOptions)) -> Self {
        super::probe::NatsProbe::connect().await; // fails loudly when NATS is down
        let state_dir = Arc::new(tempfile::tempdir().expect("temporary state directory"));
        let id = super::unique_name("conn");
        let mut options =
            RuntimeOptions::for_tests(&id, &super::nats_url(), PathBuf::from(state_dir.path()));
        adjust(&mut options);
        let running = start(connector.clone(), options.clone(), None)
            .await
            .expect("connector starts");
        let client = grpc_client(&format!("http://{}", running.grpc_addr()))
            .await
            .expect("gRPC client connects");
        Self {
            connector,
            options,
            running: Some(running),
            client,
            applied: Vec::new(),
            _state_dir: state_dir,
        }
    }

    /// The connector instance id.
    pub fn connector_id(&self) -> &str {
        &self.options.connector_id
    }

    /// The gRPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.running().grpc_addr())
    }

    /// The metrics endpoint, `http://127.0.0.1:PORT`.
    pub fn metrics_endpoint(&self) -> String {
        format!("http://{}", self.running().metrics_addr())
    }

    fn running(&self) -> &RunningConnector {
        self.running.as_ref().expect("connector is running")
    }

    /// The raw gRPC client.
    pub fn client(&mut self) -> &mut ConnectorServiceClient<Channel> {
        &mut self.client
    }

    /// Declares the whole stream set (SetPayload with these streams).
    pub async fn apply(&mut self, streams: Vec<StreamDecl>) -> Result<(), tonic::Status> {
        let request = proto::SetPayloadRequest {
            connector_id: self.options.connector_id.clone(),
            payloads: streams.iter().map(StreamDecl::to_payload).collect(),
        };
        self.client.set_payload(request).await?;
        self.applied = streams;
        Ok(())
    }

    /// Merges `config` (a JSON object) into the dynamic config.
    pub async fn set_config(&mut self, config: Value) -> Result<(), tonic::Status> {
        let metadata = config.as_object().cloned().unwrap_or_default();
        let request = proto::SetPayloadRequest {
            connector_id: self.options.connector_id.clone(),
            payloads: vec![proto::Payload {
                object: Some(proto::payload::Object::Config(proto::Config {
                    metadata: Some(json_to_struct(&metadata)),
                })),
            }],
        };
        self.client.set_payload(request).await.map(|_| ())
    }

    /// The streams GetPayload STREAM lists.
    pub async fn streams(&mut self) -> Vec<proto::Stream> {
        let request = proto::GetPayloadRequest {
            connector_id: self.options.connector_id.clone(),
            kind: proto::PayloadKind::Stream as i32,
        };
        let response = self
            .client
            .get_payload(request)
            .await
            .expect("GetPayload STREAM");
        response
            .into_inner()
            .payloads
            .into_iter()
            .filter_map(|p| match p.object {
                Some(proto::payload::Object::Stream(s)) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// The current events.
    pub async fn events(&mut self) -> Vec<EventView> {
        fetch_events(&mut self.client, &self.options.connector_id).await
    }

    /// Waits until an event `id` of stream `stream_id` was recorded and returns all events;
    /// panics with the events seen after `timeout`.
    pub async fn wait_for_event(
        &mut self,
        stream_id: &str,
        id: &str,
        timeout: Duration,
    ) -> Vec<EventView> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events().await;
            if events
                .iter()
                .any(|e| e.id == id && e.stream_id == stream_id)
            {
                return events;
            }
            if Instant::now() >= deadline {
                panic!(
                    "no event {id} of stream {stream_id} within {timeout:?}; events: {events:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the stream's status is `state`; panics with the events seen after `timeout`.
    pub async fn wait_for_state(&mut self, stream_id: &str, state: State, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events().await;
            if has_status(&events, stream_id, state) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "stream {stream_id} did not reach {state:?} within {timeout:?}; events: {events:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prometheus text of the metrics endpoint.
    pub async fn metrics_text(&self) -> String {
        http_get(self.metrics_addr(), "/metrics").await.1
    }

    /// The metrics port's address.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        self.running().metrics_addr()
    }

    /// Stops gracefully (drains), then starts again with the same id and state directory and
    /// declares the same streams, as the platform does after a connector restart.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Stops gracefully (drains); [`TestConnector::start_again`] brings it back.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    /// Starts again after [`TestConnector::stop`], with the same id, state directory and streams.
    pub async fn start_again(&mut self) {
        let running = start(self.connector.clone(), self.options.clone(), None)
            .await
            .expect("connector starts again");
        self.client = grpc_client(&format!("http://{}", running.grpc_addr()))
            .await
            .expect("gRPC client connects");
        self.running = Some(running);
        let streams = std::mem::take(&mut self.applied);
        if !streams.is_empty() {
            self.apply(streams).await.expect("streams applied again");
        }
    }

    /// Stops gracefully.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }
}

/// GetEvents of `connector_id`, as [`EventView`]s.
pub(crate) async fn fetch_events(
    client: &mut ConnectorServiceClient<Channel>,
    connector_id: &str,
) -> Vec<EventView> {
    let request = proto::GetEventsRequest {
        connector_id: connector_id.to_owned(),
    };
    let response = client.get_events(request).await.expect("GetEvents");
    response
        .into_inner()
        .event_payloads
        .into_iter()
        .filter_map(event_view)
        .collect()
}

/// Whether `events` hold a status of `stream_id` in `state`.
pub(crate) fn has_status(events: &[EventView], stream_id: &str, state: State) -> bool {
    events
        .iter()
        .any(|e| e.kind == "status" && e.stream_id == stream_id && e.state == state)
}

/// A Status or Alert as an [`EventView`].
pub(crate) fn event_view(payload: proto::EventPayload) -> Option<EventView> {
    let state = |s: i32| match proto::State::try_from(s) {
        Ok(proto::State::Provisioning) => State::Provisioning,
        Ok(proto::State::Provisioned) => State::Provisioned,
        Ok(proto::State::Failed) => State::Failed,
        Ok(proto::State::Healthy) => State::Healthy,
        _ => State::Unhealthy,
    };
    let time = |t: Option<prost_types::Timestamp>| t.and_then(|t| SystemTime::try_from(t).ok());
    match payload.object? {
        proto::event_payload::Object::Status(s) => Some(EventView {
            kind: "status",
            id: s.id,
            stream_id: s.stream_id,
            state: state(s.state),
            message: s.message,
            created_at: time(s.created_at),
        }),
        proto::event_payload::Object::Alert(a) => Some(EventView {
            kind: "alert",
            id: a.id,
            stream_id: a.stream_id,
            state: state(a.state),
            message: a.message,
            created_at: time(a.created_at),
        }),
    }
}

/// A minimal HTTP/1.0 GET on loopback (the metrics port): the status code and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics port answers");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

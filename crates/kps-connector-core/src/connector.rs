//! The extension point: the [`Connector`] trait a connector crate implements, and what it is given.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::context::{DiscoveryContext, StreamContext};
use crate::error::{ConnectorError, ConnectorResult};
use crate::sink::Sink;
use crate::source::Source;

/// Which way a stream moves records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the outside system to the pipeline transport.
    Ingress,
    /// From the pipeline transport to the outside system.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`, as used in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a connector says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorInfo {
    /// Short name, e.g. `mqtt`; used in logs, metrics and the connector class.
    pub name: &'static str,
    /// One line for people.
    pub description: &'static str,
    /// The connector's version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// The directions it supports; a stream in another direction is refused.
    pub directions: &'static [Direction],
}

impl ConnectorInfo {
    /// Whether streams in `direction` are supported.
    pub fn supports(&self, direction: Direction) -> bool {
        self.directions.contains(&direction)
    }
}

/// A stream the connector found in its outside system (a Kafka topic, a MySQL table).
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredStream {
    /// The stream id the platform will see, e.g. the topic or table name.
    pub id: String,
    /// The direction this stream would have when subscribed.
    pub direction: Direction,
    /// A suggested transport channel, or empty.
    pub transport_channel: String,
    /// The stream metadata that would subscribe it (valid for the connector's parameter type).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// The trait a connector crate implements: everything that talks to its outside system, nothing else.
///
/// The core owns the gRPC contract, the stream set, retries, transport, batching, acks, events,
/// metrics and shutdown. A connector parses its typed [`Connector::Params`], opens a
/// [`Source`] for ingress streams and a [`Sink`] for egress streams, and may discover streams.
///
/// ```
/// use kps_connector_core::{async_trait, Connector, ConnectorInfo, ConnectorResult, Direction};
/// use kps_connector_core::{Sink, StreamContext, WriteOutcome, Bytes};
///
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Params { prefix: String }
///
/// struct Stdout;
/// struct StdoutSink(String);
///
/// #[async_trait]
/// impl Sink for StdoutSink {
///     async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
///         for r in records { println!("{}{}", self.0, String::from_utf8_lossy(r)); }
///         Ok(WriteOutcome::default())
///     }
/// }
///
/// #[async_trait]
/// impl Connector for Stdout {
///     type Params = Params;
///     fn info(&self) -> ConnectorInfo {
///         ConnectorInfo { name: "stdout", description: "prints records", version: "0.1.0",
///                         directions: &[Direction::Egress] }
///     }
///     async fn open_sink(&self, _ctx: StreamContext, p: &Params) -> ConnectorResult<Box<dyn Sink>> {
///         Ok(Box::new(StdoutSink(p.prefix.clone())))
///     }
/// }
/// ```
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// One stream's parameters (its metadata), deserialized with unknown fields refused
    /// (`#[serde(deny_unknown_fields)]`); its JSON Schema is the class's `streamParameterSchema`.
    type Params: DeserializeOwned + JsonSchema + Send + Sync + 'static;

    /// Name, description, version and supported directions.
    fn info(&self) -> ConnectorInfo;

    /// Checks parameters that deserialized for rules the type cannot express, per direction.
    /// Called for every stream of a SetPayload before anything changes; an error refuses the
    /// whole request with INVALID_ARGUMENT.
    fn validate(&self, direction: Direction, params: &Self::Params) -> ConnectorResult<()> {
        let _ = (direction, params);
        Ok(())
    }

    /// Checks a merged dynamic config before it is applied. The core handles `log_level` and
    /// `dead_letter_subject` itself; other keys are the connector's.
    fn validate_config(
        &self,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> ConnectorResult<()> {
        let _ = config;
        Ok(())
    }

    /// The JSON Schema of the dynamic config (the class's `configParameterSchema`).
    fn config_schema(&self) -> schemars::Schema {
        crate::config::default_config_schema()
    }

    /// Opens the outside system for an ingress stream. Called again (after backoff) whenever the
    /// previous source failed with a retryable error.
    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &Self::Params,
    ) -> ConnectorResult<Box<dyn Source>> {
        let _ = (ctx, params);
        Err(ConnectorError::invalid(
            "direction",
            "this connector has no ingress streams",
        ))
    }

    /// Opens the outside system for an egress stream. Called again (after backoff) whenever the
    /// previous sink failed with a retryable error.
    async fn open_sink(
        &self,
        ctx: StreamContext,
        params: &Self::Params,
    ) -> ConnectorResult<Box<dyn Sink>> {
        let _ = (ctx, params);
        Err(ConnectorError::invalid(
            "direction",
            "this connector has no egress streams",
        ))
    }

    /// Lists the streams available in the outside system (GetPayload STREAM shows them as
    /// discovered). The default discovers nothing.
    async fn discover(
        &self,
        ctx: DiscoveryContext<Self::Params>,
    ) -> ConnectorResult<Vec<DiscoveredStream>> {
        let _ = ctx;
        Ok(Vec::new())
    }
}

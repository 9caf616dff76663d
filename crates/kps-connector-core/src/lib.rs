//! # kps-connector-core
//!
//! The SDK every kps data connector is built on. A connector crate implements [`Connector`]
//! (a typed stream-parameter struct, a [`Source`] for ingress, a [`Sink`] for egress, optional
//! discovery) and its binary calls [`main`]. The core does the rest: the gRPC contract
//! (`connector.v1.ConnectorService`), the declarative stream set with one task per stream,
//! retries with backoff, batching and acknowledgements, the NATS transport (core NATS or
//! JetStream), events, Prometheus metrics, dynamic config and graceful shutdown.
//!
//! See the workspace's ARCHITECTURE.md for the flow of a record and who acknowledges what.

pub mod app;
pub mod backoff;
pub mod class;
pub mod config;
pub mod connector;
pub mod context;
pub mod error;
pub mod events;
#[cfg(feature = "testkit")]
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod options;
pub mod params;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod state;
pub mod tls;
pub mod transport;

#[cfg(feature = "testkit")]
pub mod testkit;

/// The generated protobuf types and gRPC client/server of the contract. Connector crates never
/// need these; `kpsctl` and the testkit use the client.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("connector.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/connector_descriptor.bin"));
}

pub use app::{RunningConnector, main, start};
pub use async_trait::async_trait;
pub use bytes::Bytes;
pub use connector::{Connector, ConnectorInfo, Direction, DiscoveredStream};
pub use context::{DiscoveryContext, StreamContext};
pub use error::{ConnectorError, ConnectorResult};
pub use events::{Severity, State};
pub use options::RuntimeOptions;
pub use params::{PasswordSource, Secret};
pub use sink::{PendingWrite, RejectedRecord, Sink, WriteOutcome};
pub use source::{Acknowledge, Source, SourceBatch};

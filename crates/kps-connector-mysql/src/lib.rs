//! # kps-connector-mysql
//!
//! The MySQL / MariaDB connector: a stream maps onto one table.
//!
//! - **Ingress** follows a table with a cursor (`incrementing`, `timestamp` or
//!   `timestamp+incrementing`) and publishes each new row as a JSON object; the next query runs
//!   while the rows of the last one are published, and the cursor is saved in the stream's
//!   state once the transport confirmed the rows ([`source`]).
//! - **Egress** writes JSON objects as rows, with multi-row INSERTs (or upserts), a batch's rows
//!   in one transaction; the next batches are written while a transaction commits, and share
//!   the next commit; records the database refuses are rejected one by one ([`sink`]).
//! - **Discovery** lists the tables of the databases in use ([`discover`]).
//!
//! The value mapping is in [`record`] (rows to JSON) and [`bind`] (JSON to rows); TLS to the
//! server in [`tls`].

pub mod bind;
pub mod connect;
pub mod cursor;
pub mod datetime;
pub mod discover;
pub mod error;
pub mod ident;
pub mod params;
pub mod record;
pub mod saver;
pub mod schema;
pub mod sink;
pub mod source;
pub mod tls;

use kps_connector_core::{
    ConnectorInfo, ConnectorResult, Direction, DiscoveredStream, DiscoveryContext, Sink, Source,
    StreamContext, async_trait,
};

pub use params::MysqlParams;

/// The MySQL connector.
#[derive(Debug, Clone)]
pub struct MysqlConnector {
    /// How long discovery waits for each database to answer.
    pub discovery_timeout: std::time::Duration,
}

impl Default for MysqlConnector {
    fn default() -> Self {
        Self {
            discovery_timeout: discover::DISCOVERY_CONNECT_TIMEOUT,
        }
    }
}

#[async_trait]
impl kps_connector_core::Connector for MysqlConnector {
    type Params = MysqlParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "mysql",
            description: "MySQL / MariaDB tables to NATS (cursor polling) and NATS to tables (insert or upsert)",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[Direction::Ingress, Direction::Egress],
        }
    }

    fn validate(&self, direction: Direction, params: &MysqlParams) -> ConnectorResult<()> {
        params::validate(direction, params)
    }

    fn validate_config(
        &self,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> ConnectorResult<()> {
        discover::validate_config(config)
    }

    fn config_schema(&self) -> schemars::Schema {
        discover::config_schema()
    }

    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &MysqlParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        let settings = params::IngressSettings::from_params(params)?;
        Ok(Box::new(source::MysqlSource::open(ctx, &settings).await?))
    }

    async fn open_sink(
        &self,
        ctx: StreamContext,
        params: &MysqlParams,
    ) -> ConnectorResult<Box<dyn Sink>> {
        let settings = params::EgressSettings::from_params(params)?;
        Ok(Box::new(sink::MysqlSink::open(ctx, &settings).await?))
    }

    async fn discover(
        &self,
        ctx: DiscoveryContext<MysqlParams>,
    ) -> ConnectorResult<Vec<DiscoveredStream>> {
        discover::discover(ctx, self.discovery_timeout).await
    }
}

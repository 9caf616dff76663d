//! # kps-connector-kafka
//!
//! The Kafka connector, built on rdkafka (librdkafka, built from source and linked statically).
//!
//! - Ingress ([`source`]): a consumer group member; a partition's offset is stored only after
//!   the transport confirmed the records before it, and committed periodically, on partition
//!   revocation and on shutdown. Order is kept per partition; delivery is at least once.
//! - Egress ([`sink`]): an idempotent producer (`acks=all`); a write returns once every record
//!   has its delivery report; a record the cluster refuses is rejected (alerted, dead-lettered).
//! - Discovery ([`discovery`]): the cluster's topics, internal ones left out.
//!
//! Parameters are in [`params::KafkaParams`]; the crate's README has the table.

pub mod discovery;
pub mod envelope;
pub mod key;
pub mod params;
pub mod sink;
pub mod source;

mod client;

use kps_connector_core::{
    Connector, ConnectorError, ConnectorInfo, ConnectorResult, Direction, DiscoveredStream,
    DiscoveryContext, Sink, Source, StreamContext, async_trait,
};
use serde_json::{Map, Value};

pub use params::KafkaParams;

/// The Kafka connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaConnector;

#[async_trait]
impl Connector for KafkaConnector {
    type Params = KafkaParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "kafka",
            description: "Kafka topics to and from NATS subjects: consumer groups with offsets stored after delivery, idempotent producer",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[Direction::Ingress, Direction::Egress],
        }
    }

    fn validate(&self, direction: Direction, params: &KafkaParams) -> ConnectorResult<()> {
        params.validate(direction)?;
        client::check_config(&client::plain_config(params, "kps-validate"))
    }

    fn validate_config(&self, config: &Map<String, Value>) -> ConnectorResult<()> {
        match config.get(discovery::DISCOVERY_BROKERS_KEY) {
            None => Ok(()),
            Some(Value::String(brokers)) => params::validate_brokers(brokers).map_err(|_| {
                ConnectorError::invalid(
                    discovery::DISCOVERY_BROKERS_KEY,
                    "must be host:port[,host:port]",
                )
            }),
            Some(_) => Err(ConnectorError::invalid(
                discovery::DISCOVERY_BROKERS_KEY,
                "must be a string host:port[,host:port]",
            )),
        }
    }

    fn config_schema(&self) -> schemars::Schema {
        let mut schema = kps_connector_core::config::default_config_schema();
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.insert(
                discovery::DISCOVERY_BROKERS_KEY.to_owned(),
                serde_json::json!({
                    "type": "string",
                    "description": "a Kafka cluster (host:port[,host:port]) whose topics are discovered besides those of the streams' clusters"
                }),
            );
        }
        schema
    }

    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &KafkaParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        source::open(ctx, params).await
    }

    async fn open_sink(
        &self,
        ctx: StreamContext,
        params: &KafkaParams,
    ) -> ConnectorResult<Box<dyn Sink>> {
        sink::open(ctx, params).await
    }

    async fn discover(
        &self,
        ctx: DiscoveryContext<KafkaParams>,
    ) -> ConnectorResult<Vec<DiscoveredStream>> {
        discovery::discover(ctx).await
    }
}

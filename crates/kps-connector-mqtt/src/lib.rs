//! # kps-connector-mqtt
//!
//! The MQTT connector (bidirectional, MQTT 3.1.1 over TCP or TLS, built on rumqttc).
//!
//! - **Ingress**: subscribes to a topic filter and publishes every MQTT message as one record on
//!   the stream's NATS subject. With qos >= 1 the message is acknowledged to the broker only after
//!   NATS confirmed it ([`source`]).
//! - **Egress**: publishes every record from the stream's NATS subject to a topic and confirms the
//!   NATS messages only after the broker confirmed every record ([`sink`]).
//!
//! Parameters are in [`params::MqttParams`]; the `json` envelope is in [`envelope`].
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     kps_connector_core::main(kps_connector_mqtt::MqttConnector::default())
//! }
//! ```

pub mod client;
pub mod envelope;
pub mod params;
pub mod sink;
pub mod source;

use kps_connector_core::{
    Connector, ConnectorInfo, ConnectorResult, Direction, Sink, Source, StreamContext, async_trait,
};

pub use params::{Envelope, MqttParams};
pub use sink::MqttSink;
pub use source::MqttSource;

/// The MQTT connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct MqttConnector;

#[async_trait]
impl Connector for MqttConnector {
    type Params = MqttParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "mqtt",
            description: "MQTT topics to NATS subjects and back (MQTT 3.1.1, qos 0/1/2, TLS)",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[Direction::Ingress, Direction::Egress],
        }
    }

    fn validate(&self, direction: Direction, params: &MqttParams) -> ConnectorResult<()> {
        params.validate(direction)
    }

    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &MqttParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        Ok(Box::new(MqttSource::open(ctx, params).await?))
    }

    async fn open_sink(
        &self,
        ctx: StreamContext,
        params: &MqttParams,
    ) -> ConnectorResult<Box<dyn Sink>> {
        Ok(Box::new(MqttSink::open(ctx, params).await?))
    }
}

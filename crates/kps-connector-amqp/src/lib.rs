//! # kps-connector-amqp
//!
//! The AMQP 0-9-1 (RabbitMQ) connector, built on amqprs (its connections run as tokio tasks).
//! Bidirectional:
//!
//! - **ingress** consumes a queue with manual acknowledgements and a prefetch window; a batch of
//!   deliveries is acknowledged (`basic.ack`, `multiple`) only after the transport confirmed its
//!   records, so a crash leaves them unacknowledged and RabbitMQ delivers them again. Under load
//!   the acknowledgements of several confirmed batches go out as one; once the stream has caught
//!   up, at once. A message that cannot be a record is rejected without requeue (the queue's
//!   dead-letter exchange gets it) and alerted.
//! - **egress** publishes each record to an exchange with publisher confirms, pipelined: a batch
//!   is sent without waiting for the confirms of the ones before it (up to four wait at once),
//!   and its confirmation resolves once the broker confirmed every record of it; unroutable
//!   records (`mandatory`) are refused (alerted, dead-lettered where configured); a nack fails
//!   the batch as retryable.
//!
//! See the crate's README.md for the parameters and the delivery guarantees.

pub mod address;
mod confirms;
pub mod connection;
pub mod envelope;
pub mod params;
pub mod routing;
pub mod sink;
pub mod source;
mod tls;

use kps_connector_core::{
    Connector, ConnectorInfo, ConnectorResult, Direction, Sink, Source, StreamContext, async_trait,
};

pub use params::{AmqpParams, Envelope, ExchangeType};
pub use sink::AmqpSink;
pub use source::AmqpSource;

/// The AMQP connector (stateless: every stream opens its own connection).
#[derive(Debug, Clone, Copy, Default)]
pub struct AmqpConnector;

#[async_trait]
impl Connector for AmqpConnector {
    type Params = AmqpParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "amqp",
            description: "AMQP 0-9-1 (RabbitMQ): consume queues into NATS, publish NATS records to exchanges",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[Direction::Ingress, Direction::Egress],
        }
    }

    fn validate(&self, direction: Direction, params: &AmqpParams) -> ConnectorResult<()> {
        params.validate(direction)
    }

    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &AmqpParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        Ok(Box::new(AmqpSource::open(ctx, params).await?))
    }

    async fn open_sink(
        &self,
        ctx: StreamContext,
        params: &AmqpParams,
    ) -> ConnectorResult<Box<dyn Sink>> {
        Ok(Box::new(AmqpSink::open(ctx, params).await?))
    }
}

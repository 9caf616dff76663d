//! The file connector, the smallest complete connector and the template for new ones: an
//! ingress stream tails a file line by line (each line one record, its position saved only
//! after the transport confirmed), an egress stream appends records as lines (fsync before the
//! write counts as confirmed).

mod params;
mod sink;
mod source;

use kps_connector_core::{
    Connector, ConnectorInfo, ConnectorResult, Direction, Sink, Source, StreamContext, async_trait,
};

pub use params::{FileParams, StartAt};

/// The file connector.
#[derive(Debug, Clone, Default)]
pub struct FileConnector;

#[async_trait]
impl Connector for FileConnector {
    type Params = FileParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "file",
            description: "tails a file line by line (ingress) and appends lines to a file (egress)",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[Direction::Ingress, Direction::Egress],
        }
    }

    fn validate(&self, direction: Direction, params: &FileParams) -> ConnectorResult<()> {
        params.validate(direction)
    }

    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &FileParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        Ok(Box::new(source::FileSource::open(ctx, params).await?))
    }

    async fn open_sink(
        &self,
        _ctx: StreamContext,
        params: &FileParams,
    ) -> ConnectorResult<Box<dyn Sink>> {
        Ok(Box::new(sink::FileSink::open(params).await?))
    }
}

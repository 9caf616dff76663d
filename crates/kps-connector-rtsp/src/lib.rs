//! The RTSP connector: camera video into pipelines. An ingress stream plays one RTSP URL with
//! [retina](https://docs.rs/retina) (RTP over TCP or UDP) and publishes its H.264 frames, one
//! record per frame, as an Annex B byte stream in which every keyframe carries SPS/PPS in front
//! (so the records of a stream concatenated are a playable `.h264` file), or wrapped in a JSON
//! envelope. Keyframes only and a `max_fps` cap are options. A lost camera is a retryable error:
//! the core reconnects with backoff and reports UNHEALTHY, then HEALTHY.
//!
//! Type INGRESS only: an egress stream is refused with INVALID_ARGUMENT naming the direction.

pub mod envelope;
pub mod params;
pub mod select;
pub mod session;
pub mod source;

use kps_connector_core::{
    Connector, ConnectorInfo, ConnectorResult, Direction, Source, StreamContext, async_trait,
};

pub use params::{Envelope, Output, RtpTransport, RtspParams};
pub use source::RtspSource;

/// The RTSP connector.
#[derive(Debug, Clone, Copy, Default)]
pub struct RtspConnector;

#[async_trait]
impl Connector for RtspConnector {
    type Params = RtspParams;

    fn info(&self) -> ConnectorInfo {
        ConnectorInfo {
            name: "rtsp",
            description: "camera video frames (H.264 over RTSP) into pipelines",
            version: env!("CARGO_PKG_VERSION"),
            directions: &[Direction::Ingress],
        }
    }

    fn validate(&self, _direction: Direction, params: &RtspParams) -> ConnectorResult<()> {
        params.validate().map(|_| ())
    }

    async fn open_source(
        &self,
        ctx: StreamContext,
        params: &RtspParams,
    ) -> ConnectorResult<Box<dyn Source>> {
        Ok(Box::new(RtspSource::open(ctx, params).await?))
    }
}

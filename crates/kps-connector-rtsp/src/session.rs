//! Opening an RTSP session with retina: DESCRIBE, SETUP of the first H.264 video stream over
//! TCP or UDP with Annex B framing and SPS/PPS before every keyframe, PLAY.

use std::time::Duration;

use kps_connector_core::{ConnectorError, ConnectorResult, Secret};
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions,
    Transport, UdpTransportOptions,
};
use retina::codec::{FrameFormat, ParametersRef};

use crate::params::RtpTransport;

/// How long DESCRIBE + SETUP + PLAY may take before the attempt counts as failed (retried).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// A playing session and what is known about its video stream.
pub struct Opened {
    /// The frames.
    pub demuxed: Demuxed,
    /// The index of the video stream in the presentation.
    pub stream_index: usize,
    /// The RTP clock rate of the video stream (90 kHz for H.264).
    pub clock_rate: u32,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("stream_index", &self.stream_index)
            .field("clock_rate", &self.clock_rate)
            .finish_non_exhaustive()
    }
}

/// The retina transport for `transport`.
pub fn retina_transport(transport: RtpTransport) -> Transport {
    match transport {
        RtpTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtpTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    }
}

/// Opens `url` and starts playing its first H.264 video stream. Unreachable cameras and
/// refused requests are retryable (the core reconnects with backoff); a presentation without
/// H.264 video is fatal.
pub async fn open(
    url: &url::Url,
    transport: RtpTransport,
    username: Option<&str>,
    password: Option<Secret>,
) -> ConnectorResult<Opened> {
    let creds = username.map(|username| Credentials {
        username: username.to_owned(),
        password: password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default(),
    });
    let options = SessionOptions::default()
        .creds(creds)
        .user_agent(format!("kps-connector-rtsp/{}", env!("CARGO_PKG_VERSION")));
    let attempt =
        async {
            let mut session = Session::describe(url.clone(), options)
                .await
                .map_err(|e| retryable(url, "describe", &e))?;
            let Some(stream_index) = session.streams().iter().position(|s| {
                s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264")
            }) else {
                let found: Vec<String> = session
                    .streams()
                    .iter()
                    .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                    .collect();
                return Err(ConnectorError::fatal(format!(
                    "{url} has no H.264 video stream (it offers {})",
                    found.join(", ")
                )));
            };
            let clock_rate = session.streams()[stream_index].clock_rate_hz();
            session
                .setup(
                    stream_index,
                    SetupOptions::default()
                        .transport(retina_transport(transport))
                        .frame_format(FrameFormat::SIMPLE),
                )
                .await
                .map_err(|e| retryable(url, "setup", &e))?;
            let playing = session
                .play(PlayOptions::default())
                .await
                .map_err(|e| retryable(url, "play", &e))?;
            let demuxed = playing
                .demuxed()
                .map_err(|e| ConnectorError::fatal(format!("{url}: cannot depacketize: {e}")))?;
            Ok(Opened {
                demuxed,
                stream_index,
                clock_rate,
            })
        };
    match tokio::time::timeout(OPEN_TIMEOUT, attempt).await {
        Ok(opened) => opened,
        Err(_) => Err(ConnectorError::retryable(format!(
            "{url}: no answer to describe/setup/play within {OPEN_TIMEOUT:?}"
        ))),
    }
}

/// The picture size of `demuxed`'s stream `index`, `(0, 0)` while unknown.
pub fn picture_size(demuxed: &Demuxed, index: usize) -> (u32, u32) {
    match demuxed.streams().get(index).and_then(|s| s.parameters()) {
        Some(ParametersRef::Video(video)) => video.pixel_dimensions(),
        _ => (0, 0),
    }
}

fn retryable(url: &url::Url, step: &str, error: &retina::Error) -> ConnectorError {
    ConnectorError::retryable(format!("{url}: rtsp {step} failed: {error}"))
}

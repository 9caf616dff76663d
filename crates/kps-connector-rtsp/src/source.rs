//! The ingress source: frames of one RTSP session become records, a batch being whatever frames
//! are already waiting. Nothing is acknowledged (a live camera cannot replay); a broken or
//! silent session is a retryable error, so the core reconnects with backoff.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use kps_connector_core::{
    Bytes, ConnectorError, ConnectorResult, Severity, Source, SourceBatch, StreamContext,
    async_trait,
};
use retina::client::Demuxed;
use retina::codec::{CodecItem, VideoFrame};
use tokio::time::Instant;

use crate::envelope::{self, FrameMeta};
use crate::params::{Envelope, Output, RtspParams};
use crate::select::{FrameFacts, Selector, Verdict};
use crate::session::{self, Opened};

/// A session that delivers no frame for this long is considered lost (reconnected).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The alert raised while frames are too large to publish.
pub const OVERSIZED_ALERT: &str = "rtsp-frame-too-large";

/// The names of this connector's counters (`kps_stream_connector_total{name=...}`).
pub mod counters {
    /// Frames received from the camera.
    pub const FRAMES_RECEIVED: &str = "rtsp_frames_received";
    /// Keyframes received from the camera.
    pub const KEYFRAMES_RECEIVED: &str = "rtsp_keyframes_received";
    /// Frames left out: waiting for a keyframe, not a keyframe, over `max_fps`, or too large.
    pub const FRAMES_SKIPPED: &str = "rtsp_frames_skipped";
    /// Frames left out because they were larger than `max_frame_bytes`.
    pub const FRAMES_OVERSIZED: &str = "rtsp_frames_oversized";
    /// Gaps in the RTP sequence numbers (each one or more lost packets).
    pub const RTP_SEQUENCE_GAPS: &str = "rtp_sequence_gaps";
    /// RTP packets lost in those gaps.
    pub const RTP_PACKETS_LOST: &str = "rtp_packets_lost";
}

/// Counts gathered during one `next_batch`, added to the metrics once per batch.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    keyframes: u64,
    skipped: u64,
    oversized: u64,
    gaps: u64,
    lost: u64,
}

/// One RTSP session as a [`Source`].
pub struct RtspSource {
    ctx: StreamContext,
    url: url::Url,
    demuxed: Demuxed,
    stream_index: usize,
    envelope: Envelope,
    max_frame_bytes: usize,
    selector: Selector,
    size: (u32, u32),
    /// Records selected but not yet returned (kept here so `next_batch` is cancel-safe).
    pending: Vec<Bytes>,
    /// An error met after some records were ready, returned by the next call.
    failed: Option<ConnectorError>,
    /// Counts not yet added to the metrics.
    tally: Tally,
    last_frame: Instant,
    oversized_alert: bool,
}

impl std::fmt::Debug for RtspSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtspSource")
            .field("url", &self.url.as_str())
            .field("stream_index", &self.stream_index)
            .finish_non_exhaustive()
    }
}

impl RtspSource {
    /// Connects to the camera and starts playing.
    pub async fn open(ctx: StreamContext, params: &RtspParams) -> ConnectorResult<Self> {
        let url = params.validate()?;
        let password = params.password().load().await?;
        let Opened {
            demuxed,
            stream_index,
            clock_rate,
        } = session::open(&url, params.transport, params.username.as_deref(), password).await?;
        let size = session::picture_size(&demuxed, stream_index);
        tracing::info!(
            url = %url,
            transport = ?params.transport,
            width = size.0,
            height = size.1,
            "rtsp session playing"
        );
        Ok(Self {
            ctx,
            url,
            demuxed,
            stream_index,
            envelope: params.envelope,
            max_frame_bytes: params.max_frame_bytes,
            selector: Selector::new(
                params.output == Output::Keyframes,
                params.max_fps,
                clock_rate,
            ),
            size,
            pending: Vec::new(),
            failed: None,
            tally: Tally::default(),
            last_frame: Instant::now(),
            oversized_alert: false,
        })
    }

    /// Turns one frame into a record, or counts why not.
    fn take_frame(&mut self, frame: VideoFrame) {
        let tally = &mut self.tally;
        tally.received += 1;
        if frame.is_random_access_point() {
            tally.keyframes += 1;
        }
        if frame.loss() > 0 {
            tally.gaps += 1;
            tally.lost += u64::from(frame.loss());
        }
        if frame.has_new_parameters() {
            self.size = session::picture_size(&self.demuxed, self.stream_index);
        }
        let facts = FrameFacts {
            keyframe: frame.is_random_access_point(),
            disposable: frame.is_disposable(),
            after_loss: frame.loss() > 0,
            pts: frame.timestamp().elapsed(),
        };
        if self.selector.decide(facts) != Verdict::Publish {
            self.tally.skipped += 1;
            return;
        }
        let meta = FrameMeta {
            pts: facts.pts,
            keyframe: facts.keyframe,
            width: self.size.0,
            height: self.size.1,
        };
        let record = envelope::wrap(self.envelope, frame.into_data(), meta);
        if record.len() > self.max_frame_bytes {
            self.selector.dropped_after_selection(facts);
            self.tally.skipped += 1;
            self.tally.oversized += 1;
            if !self.oversized_alert {
                self.oversized_alert = true;
                self.ctx.alert(
                    OVERSIZED_ALERT,
                    Severity::Warning,
                    format!(
                        "a {} byte frame is larger than max_frame_bytes ({}): skipped until the next keyframe",
                        record.len(),
                        self.max_frame_bytes
                    ),
                );
            }
            return;
        }
        if self.oversized_alert {
            self.oversized_alert = false;
            self.ctx
                .resolve_alert(OVERSIZED_ALERT, "frames fit in max_frame_bytes again");
        }
        self.pending.push(record);
    }

    /// Adds a batch's counts to the metrics (once per batch, never per frame).
    fn flush_counts(&mut self) {
        let tally = std::mem::take(&mut self.tally);
        let metrics = self.ctx.metrics();
        for (name, n) in [
            (counters::FRAMES_RECEIVED, tally.received),
            (counters::KEYFRAMES_RECEIVED, tally.keyframes),
            (counters::FRAMES_SKIPPED, tally.skipped),
            (counters::FRAMES_OVERSIZED, tally.oversized),
            (counters::RTP_SEQUENCE_GAPS, tally.gaps),
            (counters::RTP_PACKETS_LOST, tally.lost),
        ] {
            if n > 0 {
                metrics.count(name, n);
            }
        }
    }

    /// Reads until at least one record is ready (or an error), then takes whatever else is
    /// already waiting, up to `max_records`.
    async fn fill(&mut self, max_records: usize) -> ConnectorResult<()> {
        while self.pending.len() < max_records {
            let item = if self.pending.is_empty() {
                let deadline = self.last_frame + STALL_TIMEOUT;
                match tokio::time::timeout_at(deadline, self.demuxed.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        return Err(ConnectorError::retryable(format!(
                            "{}: no frame for {STALL_TIMEOUT:?}",
                            self.url
                        )));
                    }
                }
            } else {
                // Only what is ready now: never wait for more once a record is ready.
                match self.demuxed.next().now_or_never() {
                    Some(item) => item,
                    None => return Ok(()),
                }
            };
            match item {
                Some(Ok(CodecItem::VideoFrame(frame))) => {
                    self.last_frame = Instant::now();
                    self.take_frame(frame);
                }
                Some(Ok(_)) => {} // RTCP, or other streams (none are set up)
                Some(Err(e)) => {
                    return Err(ConnectorError::retryable(format!(
                        "{}: rtsp session broke: {e}",
                        self.url
                    )));
                }
                None => {
                    return Err(ConnectorError::retryable(format!(
                        "{}: the server ended the session",
                        self.url
                    )));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for RtspSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let max_records = max_records.max(1);
        let filled = self.fill(max_records).await;
        self.flush_counts();
        if let Err(e) = filled {
            if self.pending.is_empty() {
                return Err(e);
            }
            self.failed = Some(e);
        }
        Ok(SourceBatch::unacknowledged(std::mem::take(
            &mut self.pending,
        )))
    }
}

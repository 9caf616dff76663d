//! Ingress: tail a file, one record per line, the position saved after the transport confirmed.

use std::io::SeekFrom;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kps_connector_core::{
    Acknowledge, ConnectorError, ConnectorResult, Severity, Source, SourceBatch, StreamContext,
    async_trait, state::StateStore,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::params::{FileParams, StartAt};

/// The state key of the byte offset after the last confirmed line.
const OFFSET_KEY: &str = "offset";

/// Tails one file.
pub struct FileSource {
    ctx: StreamContext,
    path: String,
    file: tokio::fs::File,
    /// Bytes read but not yet returned as complete lines.
    pending: BytesMut,
    /// The file offset of the start of `pending`.
    offset: u64,
    poll_interval: Duration,
    max_line_bytes: usize,
}

impl FileSource {
    /// Opens the file at the saved position (or where `start` says).
    pub async fn open(ctx: StreamContext, params: &FileParams) -> ConnectorResult<Self> {
        let mut file = tokio::fs::File::open(&params.path)
            .await
            .map_err(|e| ConnectorError::retryable(format!("open {}: {e}", params.path)))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| ConnectorError::retryable(format!("stat {}: {e}", params.path)))?
            .len();
        let saved = load_offset(ctx.state()).await?;
        let mut offset = match (saved, params.start) {
            (Some(offset), _) => offset,
            (None, StartAt::Beginning) => 0,
            (None, StartAt::End) => len,
        };
        if offset > len {
            ctx.alert(
                "file-truncated",
                Severity::Warning,
                format!(
                    "{} is shorter than the saved position; reading from the start",
                    params.path
                ),
            );
            offset = 0;
        }
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(|e| ConnectorError::retryable(format!("seek {}: {e}", params.path)))?;
        Ok(Self {
            ctx,
            path: params.path.clone(),
            file,
            pending: BytesMut::with_capacity(64 * 1024),
            offset,
            poll_interval: Duration::from_millis(params.poll_interval_ms),
            max_line_bytes: params.max_line_bytes,
        })
    }

    /// Splits up to `max` complete lines off `pending`.
    fn take_lines(&mut self, max: usize) -> Vec<Bytes> {
        let mut lines = Vec::new();
        while lines.len() < max {
            let Some(newline) = self.pending.iter().position(|&b| b == b'\n') else {
                break;
            };
            let mut line = self.pending.split_to(newline + 1);
            self.offset += line.len() as u64;
            line.truncate(newline);
            if line.last() == Some(&b'\r') {
                line.truncate(newline - 1);
            }
            lines.push(line.freeze());
        }
        lines
    }
}

async fn load_offset(state: &StateStore) -> ConnectorResult<Option<u64>> {
    let Some(raw) = state.load(OFFSET_KEY).await? else {
        return Ok(None);
    };
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| ConnectorError::fatal("the saved file position is not a number"))
}

#[async_trait]
impl Source for FileSource {
    async fn next_batch(&mut self, max_records: usize) -> ConnectorResult<SourceBatch> {
        loop {
            let lines = self.take_lines(max_records);
            if !lines.is_empty() {
                let ack = SaveOffset {
                    state: self.ctx.state().clone(),
                    offset: self.offset,
                };
                return Ok(SourceBatch::new(lines, ack));
            }
            if self.pending.len() > self.max_line_bytes {
                return Err(ConnectorError::fatal(format!(
                    "a line of {} is longer than max_line_bytes ({})",
                    self.path, self.max_line_bytes
                )));
            }
            self.pending.reserve(64 * 1024);
            // `read_buf` is cancel-safe: bytes are in `pending` or still in the file.
            let read = self
                .file
                .read_buf(&mut self.pending)
                .await
                .map_err(|e| ConnectorError::retryable(format!("read {}: {e}", self.path)))?;
            if read == 0 {
                tokio::time::sleep(self.poll_interval).await;
            }
        }
    }
}

/// Saves the offset after a batch's last line.
struct SaveOffset {
    state: StateStore,
    offset: u64,
}

#[async_trait]
impl Acknowledge for SaveOffset {
    async fn ack(self: Box<Self>) -> ConnectorResult<()> {
        self.state.save(OFFSET_KEY, self.offset.to_string()).await
    }
}

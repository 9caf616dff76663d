//! Egress: append each record as a line; the write counts as confirmed after fsync.

use kps_connector_core::{Bytes, ConnectorError, ConnectorResult, Sink, WriteOutcome, async_trait};
use tokio::io::AsyncWriteExt;

use crate::params::FileParams;

/// Appends to one file.
pub struct FileSink {
    path: String,
    file: tokio::fs::File,
    buffer: Vec<u8>,
}

impl FileSink {
    /// Opens (creating if needed) the file for appending.
    pub async fn open(params: &FileParams) -> ConnectorResult<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&params.path)
            .await
            .map_err(|e| {
                ConnectorError::retryable(format!("open {} for appending: {e}", params.path))
            })?;
        Ok(Self {
            path: params.path.clone(),
            file,
            buffer: Vec::new(),
        })
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn write(&mut self, records: &[Bytes]) -> ConnectorResult<WriteOutcome> {
        let mut outcome = WriteOutcome::all_written();
        self.buffer.clear();
        for (index, record) in records.iter().enumerate() {
            if record.contains(&b'\n') {
                outcome.reject(
                    index,
                    "a record holding a newline would split into several lines",
                );
                continue;
            }
            self.buffer.extend_from_slice(record);
            self.buffer.push(b'\n');
        }
        let io =
            |e: std::io::Error| ConnectorError::retryable(format!("append to {}: {e}", self.path));
        self.file.write_all(&self.buffer).await.map_err(io)?;
        self.file.sync_data().await.map_err(io)?;
        Ok(outcome)
    }

    async fn close(&mut self) -> ConnectorResult<()> {
        self.file
            .sync_all()
            .await
            .map_err(|e| ConnectorError::retryable(format!("sync {}: {e}", self.path)))
    }
}

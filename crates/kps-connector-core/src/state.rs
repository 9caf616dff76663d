//! Where a source remembers its position (a cursor, an offset) across restarts.
//!
//! A [`StateStore`] is scoped to one stream. The file backend keeps one file per key under
//! `--state-dir`, written atomically (temporary file, fsync, rename).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::ConnectorError;

/// A key-value store for small position records.
#[async_trait]
pub trait StateBackend: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    async fn load(&self, key: &str) -> Result<Option<Bytes>, ConnectorError>;
    /// Stores `value` under `key`, durably, before returning.
    async fn save(&self, key: &str, value: Bytes) -> Result<(), ConnectorError>;
}

/// One stream's view of the state backend: keys are prefixed with the stream id.
#[derive(Clone)]
pub struct StateStore {
    backend: Arc<dyn StateBackend>,
    prefix: String,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl StateStore {
    /// A store for `stream_id` on `backend`.
    pub fn new(backend: Arc<dyn StateBackend>, stream_id: &str) -> Self {
        Self {
            backend,
            prefix: encode_key(stream_id),
        }
    }

    /// The value stored under `key` for this stream.
    pub async fn load(&self, key: &str) -> Result<Option<Bytes>, ConnectorError> {
        self.backend.load(&self.full_key(key)).await
    }

    /// Stores `value` under `key` for this stream.
    pub async fn save(&self, key: &str, value: impl Into<Bytes>) -> Result<(), ConnectorError> {
        self.backend.save(&self.full_key(key), value.into()).await
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}.{}", self.prefix, encode_key(key))
    }
}

/// Keys become file names and NATS KV keys: keep `[A-Za-z0-9_-]`, escape the rest as `=XX`.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// Keeps state in files under a directory.
#[derive(Debug, Clone)]
pub struct FileStateBackend {
    dir: PathBuf,
}

impl FileStateBackend {
    /// A backend writing under `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl StateBackend for FileStateBackend {
    async fn load(&self, key: &str) -> Result<Option<Bytes>, ConnectorError> {
        match tokio::fs::read(self.dir.join(key)).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ConnectorError::retryable(format!("read state {key}: {e}"))),
        }
    }

    async fn save(&self, key: &str, value: Bytes) -> Result<(), ConnectorError> {
        use tokio::io::AsyncWriteExt;
        let err = |e: std::io::Error| ConnectorError::retryable(format!("save state {key}: {e}"));
        tokio::fs::create_dir_all(&self.dir).await.map_err(err)?;
        let tmp = self.dir.join(format!(".{key}.tmp"));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(err)?;
        file.write_all(&value).await.map_err(err)?;
        file.sync_all().await.map_err(err)?;
        drop(file);
        tokio::fs::rename(&tmp, self.dir.join(key))
            .await
            .map_err(err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_state_survives_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn StateBackend> = Arc::new(FileStateBackend::new(dir.path()));
        let store = StateStore::new(backend.clone(), "orders/eu west");
        assert_eq!(store.load("cursor").await.unwrap(), None);
        store.save("cursor", "42").await.unwrap();
        let again = StateStore::new(backend, "orders/eu west");
        assert_eq!(
            again.load("cursor").await.unwrap().as_deref(),
            Some(&b"42"[..])
        );
        let other = StateStore::new(Arc::new(FileStateBackend::new(dir.path())), "orders");
        assert_eq!(other.load("cursor").await.unwrap(), None);
    }
}

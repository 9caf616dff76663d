//! Saving the durable cursor without putting a disk or KV write on every acknowledgement.
//!
//! A batch's [`Acknowledge`](kps_connector_core::Acknowledge) hands the cursor to a
//! [`CursorSaver`] task, which writes the newest cursor it has been given, one write at a
//! time: while a write is in progress later cursors replace each other, so a fast stream makes
//! a few writes per second instead of one per batch. The cursor saved is always one whose rows
//! the transport confirmed (it may lag behind, never lead): a crash repeats at most the rows
//! after it (at-least-once). [`CursorSaver::flush`] (on a clean close) waits until the last
//! cursor is written, so a clean stop repeats nothing.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use kps_connector_core::state::StateStore;
use kps_connector_core::{ConnectorError, ConnectorResult};
use tokio::sync::watch;

use crate::cursor::STATE_KEY;

/// The latest cursor handed over: a version number and the bytes to save.
type Latest = (u64, Option<Bytes>);

/// The writer task of one source.
#[derive(Debug)]
pub struct CursorSaver {
    handle: SaverHandle,
    saved: watch::Receiver<u64>,
}

/// What an acknowledgement holds to hand a cursor over.
#[derive(Debug, Clone)]
pub struct SaverHandle {
    latest: Arc<watch::Sender<Latest>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl CursorSaver {
    /// Starts the writer task for `state`.
    pub fn spawn(state: StateStore) -> Self {
        let (latest, mut wanted) = watch::channel::<Latest>((0, None));
        let (saved_tx, saved) = watch::channel(0u64);
        let failed = Arc::new(Mutex::new(None));
        let task_failed = failed.clone();
        tokio::spawn(async move {
            // Ends once the source and every acknowledgement holding a handle are gone, after
            // writing the last cursor it was given.
            while wanted.changed().await.is_ok() {
                let (version, bytes) = wanted.borrow_and_update().clone();
                let Some(bytes) = bytes else { continue };
                match state.save(STATE_KEY, bytes).await {
                    Ok(()) => {
                        *task_failed.lock().unwrap_or_else(PoisonError::into_inner) = None;
                        saved_tx.send_replace(version);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "saving the cursor failed");
                        *task_failed.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(e.to_string());
                    }
                }
            }
        });
        Self {
            handle: SaverHandle {
                latest: Arc::new(latest),
                failed,
            },
            saved,
        }
    }

    /// A handle for an acknowledgement.
    pub fn handle(&self) -> SaverHandle {
        self.handle.clone()
    }

    /// Waits until the newest cursor handed over is written.
    pub async fn flush(&mut self) -> ConnectorResult<()> {
        let target = self.handle.latest.borrow().0;
        while *self.saved.borrow_and_update() < target {
            if let Some(e) = self.handle.failure() {
                return Err(e);
            }
            if self.saved.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

impl SaverHandle {
    /// Hands `cursor` over to be written; reports an earlier write's failure, if any.
    pub fn save(&self, cursor: Bytes) -> ConnectorResult<()> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        self.latest.send_modify(|(version, bytes)| {
            *version += 1;
            *bytes = Some(cursor);
        });
        Ok(())
    }

    fn failure(&self) -> Option<ConnectorError> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|e| ConnectorError::retryable(format!("save the cursor: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slow_backend::Backend;

    mod slow_backend {
        use std::sync::Mutex;

        use bytes::Bytes;
        use kps_connector_core::ConnectorError;
        use kps_connector_core::state::StateBackend;

        /// Records every write, slowly.
        #[derive(Default)]
        pub struct Backend {
            pub writes: Mutex<Vec<Bytes>>,
        }

        #[kps_connector_core::async_trait]
        impl StateBackend for Backend {
            async fn load(&self, _key: &str) -> Result<Option<Bytes>, ConnectorError> {
                Ok(self.writes.lock().unwrap().last().cloned())
            }
            async fn save(&self, _key: &str, value: Bytes) -> Result<(), ConnectorError> {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                self.writes.lock().unwrap().push(value);
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn the_newest_cursor_is_written_and_flushed_with_few_writes() {
        let backend = Arc::new(Backend::default());
        let state = StateStore::new(backend.clone(), "s");
        let mut saver = CursorSaver::spawn(state.clone());
        let handle = saver.handle();
        for i in 0..100 {
            handle.save(Bytes::from(i.to_string())).unwrap();
        }
        saver.flush().await.unwrap();
        let writes = backend.writes.lock().unwrap().clone();
        assert_eq!(writes.last().map(|b| b.as_ref()), Some(&b"99"[..]));
        assert!(writes.len() < 10, "{} writes", writes.len());
        assert_eq!(
            state.load(STATE_KEY).await.unwrap().as_deref(),
            Some(&b"99"[..])
        );
    }
}

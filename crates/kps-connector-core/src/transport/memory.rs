//! An in-memory transport for the core's unit tests only; never the proof that a connector works.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Confirmation, Delivery, Subscription, Transport, TransportError};

type Members = Vec<mpsc::Sender<Bytes>>;

#[derive(Default)]
struct Inner {
    /// subject -> group -> members
    subscriptions: HashMap<String, HashMap<String, Members>>,
    dead_letters: Vec<(String, Bytes, String)>,
}

/// Delivers published messages to subscribers of the same subject (exact match), one member per
/// queue group, round robin.
#[derive(Clone, Default)]
pub struct MemoryTransport {
    inner: Arc<Mutex<Inner>>,
    round_robin: Arc<AtomicUsize>,
}

impl std::fmt::Debug for MemoryTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryTransport")
    }
}

impl MemoryTransport {
    /// An empty transport.
    pub fn new() -> Self {
        Self::default()
    }

    /// The dead letters published so far: (subject, message, reason).
    pub fn dead_letters(&self) -> Vec<(String, Bytes, String)> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dead_letters
            .clone()
    }

    fn targets(&self, subject: &str) -> Vec<mpsc::Sender<Bytes>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(groups) = inner.subscriptions.get_mut(subject) else {
            return Vec::new();
        };
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
        groups
            .values_mut()
            .filter_map(|members| {
                members.retain(|m| !m.is_closed());
                if members.is_empty() {
                    None
                } else {
                    Some(members[turn % members.len()].clone())
                }
            })
            .collect()
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn publish(
        &self,
        subject: &str,
        messages: Vec<Bytes>,
    ) -> Result<Confirmation, TransportError> {
        for message in messages {
            for target in self.targets(subject) {
                // A subscriber that went away is like NATS with nobody listening.
                let _ = target.send(message.clone()).await;
            }
        }
        Ok(Confirmation::confirmed())
    }

    async fn publish_dead_letter(
        &self,
        subject: &str,
        message: Bytes,
        reason: &str,
    ) -> Result<(), TransportError> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dead_letters
            .push((subject.to_owned(), message, reason.to_owned()));
        Ok(())
    }

    async fn subscribe(
        &self,
        subject: &str,
        group: &str,
        _durable: &str,
    ) -> Result<Box<dyn Subscription>, TransportError> {
        let (tx, rx) = mpsc::channel(1024);
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .subscriptions
            .entry(subject.to_owned())
            .or_default()
            .entry(group.to_owned())
            .or_default()
            .push(tx);
        Ok(Box::new(MemorySubscription { rx }))
    }

    fn max_message_bytes(&self) -> usize {
        1024 * 1024
    }

    fn is_connected(&self) -> bool {
        true
    }
}

struct MemorySubscription {
    rx: mpsc::Receiver<Bytes>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Delivery, TransportError>> {
        self.rx
            .recv()
            .await
            .map(|p| Ok(Delivery::unacknowledged(p)))
    }

    fn try_next(&mut self) -> Option<Result<Delivery, TransportError>> {
        self.rx
            .try_recv()
            .ok()
            .map(|p| Ok(Delivery::unacknowledged(p)))
    }

    async fn unsubscribe(&mut self) -> Result<(), TransportError> {
        self.rx.close();
        Ok(())
    }
}

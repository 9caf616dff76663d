//! The publisher confirms of one channel, shared by the batches waiting for theirs, and the
//! returned (unroutable) messages they carry.
//!
//! lapin hands a returned message to whichever confirm it completes next, and completes the
//! confirms of a `multiple` ack in no particular order. So a message may come on a confirm of
//! its own batch, of an earlier batch, or of a later one that the same ack completed. Every
//! confirm therefore puts what it carries in one list, and a batch claims the messages of its
//! own records from that list once it has seen every confirm up to its own last one, and every
//! later one already completed.
//!
//! Why that finds all of a batch's messages: the broker returns a message before it confirms
//! it, and in publish order. So when the ack arrives that completes the last confirm of the
//! batches up to this one, their returned messages wait in lapin ahead of any later batch's,
//! and there are no more of them than those batches have confirms in that ack: the first
//! confirms the ack completes take them, no later than that last confirm, and they are all
//! completed by the time the batch has seen its own.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use futures::FutureExt;
use lapin::message::BasicReturnMessage;
use lapin::{Confirmation, PublisherConfirm};

/// A channel's confirms not seen yet, and what the ones seen said.
pub(crate) struct Confirms {
    /// Whether the broker may return messages (mandatory publishes).
    returns: bool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Batches registered: the number of the newest one.
    batches: u64,
    /// Confirms not seen yet, in publish order, with their batch's number.
    unsettled: VecDeque<(u64, PublisherConfirm)>,
    /// Nacks seen, by batch number, until the batch takes its count.
    nacked: BTreeMap<u64, usize>,
    /// The channel failed while waiting for a confirm: every batch not settled fails.
    failed: Option<lapin::Error>,
    /// Returned messages seen and not claimed yet.
    returned: Vec<BasicReturnMessage>,
}

/// Returned messages that no batch sent on the channel can claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unclaimed(pub usize);

impl Confirms {
    /// Confirms of a channel whose publishes are `mandatory` (the broker may return them) or
    /// not.
    pub(crate) fn new(mandatory: bool) -> Self {
        Self {
            returns: mandatory,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Registers the confirms of a batch's publishes, in publish order; returns the batch's
    /// number.
    pub(crate) fn register(&self, confirms: Vec<PublisherConfirm>) -> u64 {
        let mut inner = self.lock();
        inner.batches += 1;
        let batch = inner.batches;
        inner
            .unsettled
            .extend(confirms.into_iter().map(|confirm| (batch, confirm)));
        batch
    }

    /// Waits for the confirm of every publish of batch `batch` and of the batches before it,
    /// then, when messages may come back, takes the confirms of later batches that are already
    /// in (see the module's documentation). Returns how many of the batch's publishes the
    /// broker nacked.
    pub(crate) async fn settle(&self, batch: u64) -> Result<usize, lapin::Error> {
        loop {
            let next = {
                let mut inner = self.lock();
                if let Some(error) = &inner.failed {
                    return Err(error.clone());
                }
                match inner.unsettled.front() {
                    Some((owner, _)) if *owner <= batch => inner.unsettled.pop_front(),
                    _ => None,
                }
            };
            let Some((owner, confirm)) = next else {
                break;
            };
            match confirm.await {
                Ok(confirmation) => self.lock().record(owner, confirmation),
                Err(error) => {
                    self.lock().failed = Some(error.clone());
                    return Err(error);
                }
            }
        }
        let mut inner = self.lock();
        if self.returns {
            // Confirms of later batches completed by the same acks may carry this batch's
            // messages; they are in by now, the others are skipped.
            let mut unsettled = std::mem::take(&mut inner.unsettled);
            unsettled.retain_mut(|(owner, confirm)| match confirm.now_or_never() {
                None => true,
                Some(Ok(confirmation)) => {
                    inner.record(*owner, confirmation);
                    false
                }
                Some(Err(error)) => {
                    inner.failed.get_or_insert(error);
                    false
                }
            });
            inner.unsettled = unsettled;
        }
        Ok(inner.nacked.remove(&batch).unwrap_or(0))
    }

    /// Takes the returned messages that `owner_of` maps to a record of batch `batch` (its
    /// index), leaving the others for the batches after it. Call once the batch is settled.
    /// Fails when `batch` is the newest and messages are left: no batch can claim them.
    pub(crate) fn claim(
        &self,
        batch: u64,
        mut owner_of: impl FnMut(&BasicReturnMessage) -> Option<usize>,
    ) -> Result<Vec<(usize, BasicReturnMessage)>, Unclaimed> {
        let mut inner = self.lock();
        if inner.returned.is_empty() {
            return Ok(Vec::new());
        }
        let mut claimed = Vec::new();
        let mut left = Vec::new();
        for message in inner.returned.drain(..) {
            match owner_of(&message) {
                Some(index) => claimed.push((index, message)),
                None => left.push(message),
            }
        }
        if !left.is_empty() && inner.batches == batch {
            return Err(Unclaimed(left.len()));
        }
        inner.returned = left;
        Ok(claimed)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn record(&mut self, batch: u64, confirmation: Confirmation) {
        let message = match confirmation {
            Confirmation::Ack(message) => message,
            Confirmation::Nack(message) => {
                *self.nacked.entry(batch).or_default() += 1;
                message
            }
            Confirmation::NotRequested => None,
        };
        self.returned.extend(message);
    }
}

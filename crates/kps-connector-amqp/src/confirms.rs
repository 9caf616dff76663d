//! The publisher confirms of one channel, shared by the batches waiting for theirs, and the
//! returned (unroutable) messages the broker sent back.
//!
//! After `confirm.select` the broker numbers a channel's publishes from 1 (their delivery tags;
//! a new channel starts again at 1) and confirms each with a `basic.ack` or a `basic.nack`,
//! which may cover every tag up to its own (`multiple`) and need not come in publish order. A
//! batch registers its publishes before it sends them, so it owns a contiguous range of tags.
//! It is settled once the broker confirmed every tag of it and of the batches before it.
//!
//! A returned message (`basic.return`, for a mandatory publish that no queue took) names no
//! delivery tag: it carries the routing key and the body. So every returned message goes into
//! one list, and a settled batch claims from that list the messages that match one of its
//! records, leaving the others for the batches after it.
//!
//! Why that finds all of a batch's messages: the broker returns a message before it confirms
//! it, on the same channel, and the channel's callbacks see the two in that order. So once a
//! batch and every batch before it are settled, every message they had returned is in the list
//! (with, possibly, messages of later batches, which those batches claim).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// A message the broker returned (unroutable, published `mandatory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Returned {
    /// The routing key it was published with.
    pub(crate) routing_key: String,
    /// The broker's reply code (312 NO_ROUTE).
    pub(crate) reply_code: u16,
    /// The broker's reply text.
    pub(crate) reply_text: String,
    /// Its body.
    pub(crate) body: Vec<u8>,
}

/// A channel's confirms: which delivery tags the broker confirmed, which batch owns each, and
/// the messages it returned.
pub(crate) struct Confirms {
    /// Whether the broker may return messages (mandatory publishes).
    returns: bool,
    inner: Mutex<Inner>,
    /// Woken whenever confirms come in or the channel fails.
    changed: Notify,
}

#[derive(Default)]
struct Inner {
    /// The delivery tag of the newest publish registered (0: none yet).
    published: u64,
    /// Every tag up to this one is confirmed and forgotten.
    floor: u64,
    /// Whether each tag after `floor` is confirmed (`floor + 1 + index`), up to `published`.
    confirmed: VecDeque<bool>,
    /// Batches not taken yet, oldest first.
    batches: VecDeque<Batch>,
    /// Batches registered: the number of the newest one.
    newest: u64,
    /// Why the channel failed, once it did: every batch not settled by then fails.
    failed: Option<String>,
    /// Returned messages seen and not claimed yet.
    returned: Vec<Returned>,
}

/// One batch's publishes: the tags after the previous batch's `last`, up to its own.
struct Batch {
    number: u64,
    last: u64,
    /// Tags of the batch the broker has not confirmed yet.
    unconfirmed: usize,
    /// Tags of the batch the broker nacked.
    nacked: usize,
    /// Whether the batch's waiter took its result.
    taken: bool,
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
            changed: Notify::new(),
        }
    }

    /// Registers a batch of `publishes` publishes, about to be sent in one go and before any
    /// other: they get the next delivery tags. Returns the batch's number.
    pub(crate) fn register(&self, publishes: usize) -> u64 {
        let mut inner = self.lock();
        inner.newest += 1;
        let number = inner.newest;
        inner.published += publishes as u64;
        inner
            .confirmed
            .extend(std::iter::repeat_n(false, publishes));
        let last = inner.published;
        inner.batches.push_back(Batch {
            number,
            last,
            unconfirmed: publishes,
            nacked: 0,
            taken: false,
        });
        number
    }

    /// The broker confirmed `tag` (and every tag before it, when `multiple`): acked, or nacked
    /// when `nack`. Tags confirmed already, or never published, are ignored.
    pub(crate) fn settle_tags(&self, tag: u64, multiple: bool, nack: bool) {
        let mut inner = self.lock();
        let Inner {
            published,
            floor,
            confirmed,
            batches,
            ..
        } = &mut *inner;
        if tag <= *floor || tag > *published {
            tracing::debug!(tag, "a confirm of an unknown delivery tag");
            return;
        }
        let first = if multiple { *floor + 1 } else { tag };
        let mut owner = batches.partition_point(|batch| batch.last < first);
        for tag in first..=tag {
            let Some(done) = confirmed.get_mut((tag - *floor - 1) as usize) else {
                break;
            };
            if *done {
                continue;
            }
            *done = true;
            while batches.get(owner).is_some_and(|batch| batch.last < tag) {
                owner += 1;
            }
            if let Some(batch) = batches.get_mut(owner) {
                batch.unconfirmed = batch.unconfirmed.saturating_sub(1);
                if nack {
                    batch.nacked += 1;
                }
            }
        }
        while confirmed.front() == Some(&true) {
            confirmed.pop_front();
            *floor += 1;
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// The broker returned `message` (it precedes the message's confirm).
    pub(crate) fn returned(&self, message: Returned) {
        if self.returns {
            self.lock().returned.push(message);
        }
    }

    /// The channel ended (`reason`): batches not settled yet fail.
    pub(crate) fn fail(&self, reason: String) {
        self.lock().failed.get_or_insert(reason);
        self.changed.notify_waiters();
    }

    /// Why the channel failed, if it did.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Waits until the broker confirmed every publish of batch `batch` and of the batches
    /// before it. Returns how many of the batch's publishes the broker nacked, or why the
    /// channel failed before they were all confirmed.
    pub(crate) async fn settle(&self, batch: u64) -> Result<usize, String> {
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            {
                let mut inner = self.lock();
                if let Some(nacked) = inner.take(batch) {
                    return Ok(nacked);
                }
                if let Some(reason) = &inner.failed {
                    return Err(reason.clone());
                }
            }
            changed.await;
        }
    }

    /// Takes the returned messages that `owner_of` maps to a record of batch `batch` (its
    /// index), leaving the others for the batches after it. Call once the batch is settled.
    /// Fails when `batch` is the newest and messages are left: no batch can claim them.
    pub(crate) fn claim(
        &self,
        batch: u64,
        mut owner_of: impl FnMut(&Returned) -> Option<usize>,
    ) -> Result<Vec<(usize, Returned)>, Unclaimed> {
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
        if !left.is_empty() && inner.newest == batch {
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
    /// The nacks of batch `batch` once it and every batch before it are confirmed (the batch is
    /// then taken, and forgotten with the ones before it).
    fn take(&mut self, batch: u64) -> Option<usize> {
        let mut nacked = 0;
        for entry in self.batches.iter_mut() {
            if entry.number > batch {
                break;
            }
            if entry.unconfirmed > 0 {
                return None;
            }
            if entry.number == batch {
                entry.taken = true;
                nacked = entry.nacked;
            }
        }
        while self.batches.front().is_some_and(|entry| entry.taken) {
            self.batches.pop_front();
        }
        Some(nacked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn returned(key: &str, body: &str) -> Returned {
        Returned {
            routing_key: key.to_owned(),
            reply_code: 312,
            reply_text: "NO_ROUTE".to_owned(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn batches_settle_once_they_and_the_ones_before_are_confirmed() {
        let confirms = Confirms::new(true);
        let a = confirms.register(3); // tags 1..=3
        let empty = confirms.register(0);
        let b = confirms.register(2); // tags 4..=5
        assert_eq!(confirms.settle(b).now_or_never(), None);
        // Out of order: 5 first, then 1, then everything up to 4 at once.
        confirms.settle_tags(5, false, false);
        confirms.settle_tags(1, false, false);
        assert_eq!(confirms.settle(a).now_or_never(), None);
        assert_eq!(confirms.settle(b).now_or_never(), None);
        confirms.settle_tags(4, true, false);
        assert_eq!(confirms.settle(a).now_or_never(), Some(Ok(0)));
        assert_eq!(confirms.settle(empty).now_or_never(), Some(Ok(0)));
        assert_eq!(confirms.settle(b).now_or_never(), Some(Ok(0)));
        // Everything is forgotten; late or unknown confirms are ignored.
        confirms.settle_tags(5, true, true);
        confirms.settle_tags(99, false, false);
        let c = confirms.register(1); // tag 6
        confirms.settle_tags(6, false, true);
        assert_eq!(confirms.settle(c).now_or_never(), Some(Ok(1)));
    }

    #[test]
    fn nacks_count_against_their_own_batch() {
        let confirms = Confirms::new(false);
        let a = confirms.register(2); // 1..=2
        let b = confirms.register(2); // 3..=4
        confirms.settle_tags(3, true, true); // nacks 1, 2 and 3
        confirms.settle_tags(4, false, false);
        assert_eq!(confirms.settle(a).now_or_never(), Some(Ok(2)));
        assert_eq!(confirms.settle(b).now_or_never(), Some(Ok(1)));
    }

    #[tokio::test]
    async fn a_waiting_batch_wakes_on_its_confirms_and_fails_with_the_channel() {
        let confirms = std::sync::Arc::new(Confirms::new(false));
        let a = confirms.register(1);
        let b = confirms.register(1);
        let waiter = {
            let confirms = confirms.clone();
            tokio::spawn(async move { confirms.settle(a).await })
        };
        tokio::task::yield_now().await;
        confirms.settle_tags(1, false, false);
        assert_eq!(waiter.await.expect("the waiter"), Ok(0));
        let waiter = {
            let confirms = confirms.clone();
            tokio::spawn(async move { confirms.settle(b).await })
        };
        tokio::task::yield_now().await;
        confirms.fail("the connection was lost".to_owned());
        assert_eq!(
            waiter.await.expect("the waiter"),
            Err("the connection was lost".to_owned())
        );
        assert_eq!(
            confirms.failure().as_deref(),
            Some("the connection was lost")
        );
    }

    #[test]
    fn a_settled_batch_stays_confirmed_when_the_channel_fails_afterwards() {
        let confirms = Confirms::new(false);
        let a = confirms.register(1);
        confirms.settle_tags(1, false, false);
        confirms.fail("the channel closed".to_owned());
        assert_eq!(confirms.settle(a).now_or_never(), Some(Ok(0)));
    }

    #[test]
    fn returned_messages_are_claimed_by_their_batch_and_left_for_later_ones() {
        let confirms = Confirms::new(true);
        let a = confirms.register(2);
        let b = confirms.register(2);
        confirms.returned(returned("k", "a1"));
        confirms.returned(returned("k", "b1"));
        confirms.settle_tags(4, true, false);
        let claimed = confirms
            .claim(a, |m| (m.body == b"a1").then_some(0))
            .expect("a claims");
        assert_eq!(claimed, vec![(0, returned("k", "a1"))]);
        let claimed = confirms
            .claim(b, |m| (m.body == b"b1").then_some(1))
            .expect("b claims");
        assert_eq!(claimed, vec![(1, returned("k", "b1"))]);
        // A message that matches nothing sent is an error for the newest batch.
        confirms.returned(returned("k", "stray"));
        assert_eq!(confirms.claim(b, |_| None), Err(Unclaimed(1)));
        // Nothing comes back without mandatory.
        let plain = Confirms::new(false);
        let c = plain.register(1);
        plain.returned(returned("k", "x"));
        assert_eq!(plain.claim(c, |_| None), Ok(Vec::new()));
    }
}

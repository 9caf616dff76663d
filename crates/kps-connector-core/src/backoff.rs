//! The one retry helper: exponential backoff with full jitter, interruptible by cancellation.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter: the n-th delay is uniform in `[base·2ⁿ / 2, base·2ⁿ]`,
/// capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff starting at `base` and never above `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay; each call doubles the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ms = fastrand::u64(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Starts again from `base` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Sleeps for the next delay; returns `false` if `cancel` fired first.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling + Duration::from_millis(1),
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(2));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(101));
    }

    #[tokio::test]
    async fn wait_returns_false_when_cancelled() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
        assert!(!backoff.wait(&cancel).await);
    }
}

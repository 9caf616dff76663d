//! Delivery accounting for fault and crash tests: what was sent against what arrived, with the
//! losses (must be zero), the duplicates and the late arrivals (both allowed by at-least-once)
//! counted so the test can report them.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// What arrived compared with what was sent. Records must be unique (tests number them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Records sent.
    pub sent: usize,
    /// Records received, duplicates included.
    pub received: usize,
    /// Records sent that never arrived.
    pub lost: usize,
    /// Arrivals of a record that had arrived before.
    pub duplicates: usize,
    /// First arrivals that came after a record sent later (redelivered after a fault).
    pub late: usize,
}

impl DeliveryReport {
    /// Compares `received` with `sent`.
    pub fn compare(sent: &[Bytes], received: &[Bytes]) -> Self {
        let position: HashMap<&Bytes, usize> =
            sent.iter().enumerate().map(|(i, r)| (r, i)).collect();
        let mut seen = HashSet::new();
        let mut duplicates = 0;
        let mut late = 0;
        let mut highest = 0;
        for record in received {
            if !seen.insert(record) {
                duplicates += 1;
                continue;
            }
            if let Some(&p) = position.get(record) {
                if p < highest {
                    late += 1;
                }
                highest = highest.max(p);
            }
        }
        let lost = sent.iter().filter(|r| !seen.contains(r)).count();
        Self {
            sent: sent.len(),
            received: received.len(),
            lost,
            duplicates,
            late,
        }
    }

    /// Panics naming the count if any record was lost.
    pub fn assert_none_lost(&self) {
        assert_eq!(
            self.lost, 0,
            "{} of {} records lost ({self})",
            self.lost, self.sent
        );
    }
}

impl std::fmt::Display for DeliveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sent, {} received, {} lost, {} duplicate(s), {} late",
            self.sent, self.received, self.lost, self.duplicates, self.late
        )
    }
}

/// Calls `next_batch` (which returns what arrived within its own short wait) until every one of
/// `sent` was seen at least once or `timeout` passed; returns everything that arrived, in order,
/// duplicates included, after `already` (records that had arrived before).
pub async fn collect_until_complete(
    sent: &[Bytes],
    already: &[Bytes],
    timeout: Duration,
    mut next_batch: impl AsyncFnMut() -> Vec<Bytes>,
) -> Vec<Bytes> {
    let wanted: HashSet<&Bytes> = sent.iter().collect();
    let mut seen: HashSet<Bytes> = already
        .iter()
        .filter(|r| wanted.contains(r))
        .cloned()
        .collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    while seen.len() < wanted.len() && Instant::now() < deadline {
        for record in next_batch().await {
            if wanted.contains(&record) {
                seen.insert(record.clone());
            }
            out.push(record);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn counts_losses_duplicates_and_late_arrivals() {
        let sent = [r("a"), r("b"), r("c"), r("d")];
        let received = [r("a"), r("c"), r("b"), r("c"), r("a")];
        let report = DeliveryReport::compare(&sent, &received);
        assert_eq!(
            report,
            DeliveryReport {
                sent: 4,
                received: 5,
                lost: 1,
                duplicates: 2,
                late: 1
            }
        );
        assert_eq!(
            report.to_string(),
            "4 sent, 5 received, 1 lost, 2 duplicate(s), 1 late"
        );
    }

    #[tokio::test]
    async fn collection_stops_once_everything_arrived() {
        let sent = vec![r("a"), r("b"), r("c")];
        let mut batches = vec![vec![r("c")], vec![r("b"), r("x")]].into_iter();
        let got = collect_until_complete(&sent, &[r("a")], Duration::from_secs(5), async || {
            batches.next().unwrap_or_default()
        })
        .await;
        assert_eq!(got, vec![r("c"), r("b"), r("x")]);
    }
}

//! Keep a decaying score per peer or address in a table bounded by least-recent update.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;

use firewall_common::BanReason;

use super::{Action, Source};

/// Score change of an [`Action::LowTolerance`] report: two in quick succession reach the default
/// disconnect threshold (-20); five all but reach the ban threshold (-50), so with the decay
/// between them the sixth bans.
pub const LOW_TOLERANCE_WEIGHT: f64 = -10.0;
/// Score change of an [`Action::MidTolerance`] report: eleven in quick succession ban.
pub const MID_TOLERANCE_WEIGHT: f64 = -5.0;
/// Score change of an [`Action::HighTolerance`] report: some fifty in quick succession ban.
pub const HIGH_TOLERANCE_WEIGHT: f64 = -1.0;

/// A score closer to 0 than this is 0: it no longer matters, so its entry may be dropped.
const NEGLIGIBLE_SCORE: f64 = 0.01;

impl Action {
    /// The score change of one report; `None` for [`Action::Fatal`], which bans whatever the
    /// score.
    pub const fn weight(self) -> Option<f64> {
        match self {
            Action::Fatal => None,
            Action::LowTolerance => Some(LOW_TOLERANCE_WEIGHT),
            Action::MidTolerance => Some(MID_TOLERANCE_WEIGHT),
            Action::HighTolerance => Some(HIGH_TOLERANCE_WEIGHT),
        }
    }
}

/// `score` after `elapsed_ms` of exponential decay toward 0 with the given half-life.
fn decay(score: f64, elapsed_ms: u64, half_life_ms: u64) -> f64 {
    // Precision loss converting milliseconds to f64 is irrelevant below 2^53 ms (285k years).
    let decayed = score * 0.5f64.powf(elapsed_ms as f64 / half_life_ms.max(1) as f64);
    if decayed.abs() < NEGLIGIBLE_SCORE {
        0.0
    } else {
        decayed
    }
}

/// What is known about one peer or address.
#[derive(Clone, Debug, Default)]
pub(super) struct Standing {
    /// Score as of `updated_ms`.
    score: f64,
    /// Time of the last update (UNIX ms).
    updated_ms: u64,
    /// A disconnect was issued and the score has not recovered above the threshold since.
    pub(super) disconnected: bool,
    /// Reports since the entry was created or last reset, by (source, reason): at most
    /// `Source::ALL.len() * BanReason::ALL.len()` keys.
    pub(super) reports: BTreeMap<(Source, BanReason), u32>,
    /// Addresses a peer was seen at, oldest first; bounded by the caller.
    pub(super) addresses: Vec<IpAddr>,
    /// Position in the table's update order.
    seq: u64,
}

impl Standing {
    /// The score at `now_ms`.
    pub(super) fn score_at(&self, now_ms: u64, half_life_ms: u64) -> f64 {
        decay(
            self.score,
            now_ms.saturating_sub(self.updated_ms),
            half_life_ms,
        )
    }

    /// Applies the decay up to `now_ms`, then adds `weight`; returns the new score.
    pub(super) fn add(&mut self, weight: f64, now_ms: u64, half_life_ms: u64) -> f64 {
        self.score = self.score_at(now_ms, half_life_ms) + weight;
        self.updated_ms = self.updated_ms.max(now_ms);
        self.score
    }

    /// Counts one report.
    pub(super) fn record(&mut self, source: Source, reason: BanReason) {
        let count = self.reports.entry((source, reason)).or_default();
        *count = count.saturating_add(1);
    }

    /// Reports counted since the last reset.
    pub(super) fn report_count(&self) -> u64 {
        self.reports.values().map(|&n| u64::from(n)).sum()
    }

    /// Forgets the score and the reports (after a ban); keeps the addresses.
    pub(super) fn reset(&mut self) {
        self.score = 0.0;
        self.disconnected = false;
        self.reports.clear();
    }

    /// Remembers `addr` as the most recent address, forgetting the oldest beyond `max`.
    pub(super) fn remember(&mut self, addr: IpAddr, max: usize) {
        self.addresses.retain(|known| *known != addr);
        self.addresses.push(addr);
        if self.addresses.len() > max {
            let excess = self.addresses.len() - max;
            self.addresses.drain(..excess);
        }
    }

    /// Summary of the reports for a ban's detail: "spam x2 from gossip, sync_abuse x1 from sync".
    pub(super) fn summary(&self) -> String {
        let parts: Vec<String> = self
            .reports
            .iter()
            .map(|((source, reason), n)| format!("{} x{n} from {}", reason.name(), source.name()))
            .collect();
        parts.join(", ")
    }
}

/// Standings by key, at most `capacity`; the least recently updated is evicted first.
#[derive(Debug)]
pub(super) struct ScoreTable<K> {
    entries: HashMap<K, Standing>,
    /// Update order: sequence number of each entry's last update to its key.
    order: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Copy + Eq + Hash> ScoreTable<K> {
    /// An empty table holding at most `capacity` entries (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// The standing of `key`, if kept.
    pub(super) fn get(&self, key: &K) -> Option<&Standing> {
        self.entries.get(key)
    }

    /// The standing of `key`, created if missing, moved to the most recently updated place.
    /// The second value is true when another entry was evicted to make room.
    pub(super) fn touch(&mut self, key: K) -> (&mut Standing, bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let existed = self.entries.contains_key(&key);
        let mut evicted = false;
        if !existed
            && self.entries.len() >= self.capacity
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
            evicted = true;
        }
        let standing = self.entries.entry(key).or_default();
        if existed {
            self.order.remove(&standing.seq);
        }
        standing.seq = seq;
        self.order.insert(seq, key);
        (standing, evicted)
    }

    /// Resets the score and reports of `key` (see [`Standing::reset`]), if kept.
    pub(super) fn reset(&mut self, key: &K) {
        if let Some(standing) = self.entries.get_mut(key) {
            standing.reset();
        }
    }

    /// Forgets `key`.
    pub(super) fn remove(&mut self, key: &K) {
        if let Some(standing) = self.entries.remove(key) {
            self.order.remove(&standing.seq);
        }
    }

    /// Number of entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_LIFE_MS: u64 = 1000;

    #[test]
    fn a_score_halves_every_half_life_and_vanishes_when_negligible() {
        let mut standing = Standing::default();
        assert_eq!(standing.add(-40.0, 0, HALF_LIFE_MS), -40.0);
        assert_eq!(standing.score_at(HALF_LIFE_MS, HALF_LIFE_MS), -20.0);
        assert_eq!(standing.score_at(2 * HALF_LIFE_MS, HALF_LIFE_MS), -10.0);
        assert_eq!(standing.score_at(20 * HALF_LIFE_MS, HALF_LIFE_MS), 0.0);
    }

    #[test]
    fn a_clock_that_goes_back_does_not_grow_the_score() {
        let mut standing = Standing::default();
        standing.add(-10.0, 5000, HALF_LIFE_MS);
        assert_eq!(standing.score_at(1000, HALF_LIFE_MS), -10.0);
    }

    #[test]
    fn remember_keeps_the_most_recent_addresses_without_duplicates() {
        let mut standing = Standing::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        for n in [1, 2, 1, 3, 4] {
            standing.remember(ip(n), 3);
        }
        assert_eq!(standing.addresses, [ip(1), ip(3), ip(4)]);
    }

    #[test]
    fn the_least_recently_updated_entry_is_evicted_when_full() {
        let mut table = ScoreTable::new(2);
        assert!(!table.touch(1u32).1);
        assert!(!table.touch(2).1);
        assert!(!table.touch(1).1);
        assert!(table.touch(3).1);
        assert_eq!(table.len(), 2);
        assert!(table.get(&1).is_some());
        assert!(table.get(&2).is_none());
        table.remove(&1);
        assert_eq!(table.len(), 1);
    }
}

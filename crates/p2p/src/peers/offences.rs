//! Remember past bans per target, and the peers banned from each IP, for escalation.

use std::collections::{BTreeMap, HashMap};

use libp2p::PeerId;

use super::BanTarget;

/// The offence history of one peer or address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct OffenceRecord {
    /// Bans of the target, counted from the first one still remembered.
    pub(super) count: u32,
    /// When the last of them began (UNIX ms); 0 if none.
    pub(super) last_ms: u64,
    /// For an IP: distinct peers banned while seen at it, with when (UNIX ms), oldest first.
    pub(super) peers: Vec<(PeerId, u64)>,
}

impl OffenceRecord {
    /// Bans still remembered at `now_ms`.
    pub(super) fn remembered(&self, now_ms: u64, memory_ms: u64) -> u32 {
        if now_ms.saturating_sub(self.last_ms) < memory_ms {
            self.count
        } else {
            0
        }
    }

    /// The last time anything was added to the record (UNIX ms).
    pub(super) fn latest_ms(&self) -> u64 {
        self.peers
            .iter()
            .map(|&(_, at)| at)
            .fold(self.last_ms, u64::max)
    }

    /// Nothing in the record is remembered any more at `now_ms`.
    pub(super) fn is_stale(&self, now_ms: u64, memory_ms: u64) -> bool {
        now_ms.saturating_sub(self.latest_ms()) >= memory_ms
    }

    /// Counts one more ban of the target at `now_ms`; returns its offence number (1 = first).
    pub(super) fn add_ban(&mut self, now_ms: u64, memory_ms: u64) -> u32 {
        self.count = self.remembered(now_ms, memory_ms).saturating_add(1);
        self.last_ms = now_ms;
        self.count
    }

    /// Notes that `peer` was banned while seen at this IP; keeps the `max` most recent distinct
    /// peers still remembered. Returns how many there are.
    pub(super) fn add_peer(
        &mut self,
        peer: PeerId,
        now_ms: u64,
        memory_ms: u64,
        max: usize,
    ) -> usize {
        self.peers
            .retain(|&(known, at)| known != peer && now_ms.saturating_sub(at) < memory_ms);
        self.peers.push((peer, now_ms));
        if self.peers.len() > max {
            let excess = self.peers.len() - max;
            self.peers.drain(..excess);
        }
        self.peers.len()
    }
}

/// Offence records by target, at most `capacity`; the least recently updated is evicted first.
#[derive(Debug)]
pub(super) struct OffenceTable {
    /// Record and its position in `order`.
    records: HashMap<BanTarget, (OffenceRecord, u64)>,
    /// Update order: sequence number of each record's last update to its target.
    order: BTreeMap<u64, BanTarget>,
    next_seq: u64,
    capacity: usize,
}

impl OffenceTable {
    /// An empty table holding at most `capacity` records (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            records: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    /// The record of `target`, if kept.
    pub(super) fn get(&self, target: &BanTarget) -> Option<&OffenceRecord> {
        self.records.get(target).map(|(record, _)| record)
    }

    /// Bans of `target` still remembered at `now_ms`.
    pub(super) fn remembered(&self, target: &BanTarget, now_ms: u64, memory_ms: u64) -> u32 {
        self.get(target)
            .map_or(0, |record| record.remembered(now_ms, memory_ms))
    }

    /// The target whose record [`OffenceTable::put`] of `target` would evict, if any.
    pub(super) fn next_eviction(&self, target: &BanTarget) -> Option<BanTarget> {
        if self.records.contains_key(target) || self.records.len() < self.capacity {
            return None;
        }
        self.order.first_key_value().map(|(_, oldest)| *oldest)
    }

    /// Stores `record` as the most recently updated; returns the target evicted to make room.
    pub(super) fn put(&mut self, target: BanTarget, record: OffenceRecord) -> Option<BanTarget> {
        let evicted = self.next_eviction(&target);
        if let Some(oldest) = &evicted {
            self.remove(oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some((_, old_seq)) = self.records.insert(target, (record, seq)) {
            self.order.remove(&old_seq);
        }
        self.order.insert(seq, target);
        evicted
    }

    /// Forgets the record of `target`.
    pub(super) fn remove(&mut self, target: &BanTarget) {
        if let Some((_, seq)) = self.records.remove(target) {
            self.order.remove(&seq);
        }
    }

    /// Removes the records nothing of which is remembered at `now_ms`, walking from the least
    /// recently updated and stopping at the first one still remembered. Returns their targets.
    pub(super) fn prune(&mut self, now_ms: u64, memory_ms: u64) -> Vec<BanTarget> {
        let mut pruned = Vec::new();
        while let Some((_, target)) = self.order.first_key_value() {
            let target = *target;
            match self.get(&target) {
                Some(record) if !record.is_stale(now_ms, memory_ms) => break,
                _ => {
                    self.remove(&target);
                    pruned.push(target);
                }
            }
        }
        pruned
    }

    /// Number of records.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::testing::peer;
    use ipnet::IpNet;
    use std::net::IpAddr;

    const MEMORY_MS: u64 = 1000;

    fn ip(n: u8) -> BanTarget {
        BanTarget::Address(IpNet::from(IpAddr::from([10, 0, 0, n])))
    }

    #[test]
    fn offences_count_up_and_are_forgotten_after_the_memory() {
        let mut record = OffenceRecord::default();
        assert_eq!(record.add_ban(10, MEMORY_MS), 1);
        assert_eq!(record.add_ban(20, MEMORY_MS), 2);
        assert_eq!(record.remembered(20 + MEMORY_MS - 1, MEMORY_MS), 2);
        assert_eq!(record.remembered(20 + MEMORY_MS, MEMORY_MS), 0);
        assert_eq!(record.add_ban(20 + MEMORY_MS, MEMORY_MS), 1);
    }

    #[test]
    fn banned_peers_per_ip_are_distinct_recent_and_bounded() {
        let peers: Vec<PeerId> = (0..4).map(peer).collect();
        let mut record = OffenceRecord::default();
        assert_eq!(record.add_peer(peers[0], 0, MEMORY_MS, 3), 1);
        assert_eq!(record.add_peer(peers[0], 1, MEMORY_MS, 3), 1);
        assert_eq!(record.add_peer(peers[1], 2, MEMORY_MS, 3), 2);
        // peers[0], last banned at 1, is forgotten; peers[1], banned at 2, is not yet.
        assert_eq!(record.add_peer(peers[2], MEMORY_MS + 1, MEMORY_MS, 3), 2);
        assert_eq!(record.add_peer(peers[3], MEMORY_MS + 1, MEMORY_MS, 3), 3);
        assert_eq!(record.add_peer(peers[0], MEMORY_MS + 1, MEMORY_MS, 3), 3);
        assert_eq!(record.peers.first().map(|p| p.0), Some(peers[2]));
    }

    #[test]
    fn the_table_evicts_the_least_recently_updated_and_prunes_stale_records() {
        let mut table = OffenceTable::new(2);
        let record = |at| OffenceRecord {
            count: 1,
            last_ms: at,
            peers: Vec::new(),
        };
        assert_eq!(table.put(ip(1), record(0)), None);
        assert_eq!(table.put(ip(2), record(500)), None);
        assert_eq!(table.next_eviction(&ip(3)), Some(ip(1)));
        assert_eq!(table.next_eviction(&ip(2)), None);
        assert_eq!(table.put(ip(3), record(600)), Some(ip(1)));
        assert_eq!(table.len(), 2);
        assert_eq!(table.prune(1500, MEMORY_MS), [ip(2)]);
        assert_eq!(table.remembered(&ip(3), 1500, MEMORY_MS), 1);
        assert_eq!(table.remembered(&ip(2), 1500, MEMORY_MS), 0);
    }
}

//! Hold the active bans, found by target, by address and by expiry, within a bound.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{Ban, BanTarget, Decision};

/// A ban taken out of the table.
#[derive(Debug)]
pub(super) struct Removed {
    /// The ban.
    pub(super) ban: Ban,
    /// Its nets that no other ban in the table lists: what the firewall may unblock.
    pub(super) released: Vec<IpNet>,
}

impl Removed {
    /// The decision that lifts the ban.
    pub(super) fn into_decision(self) -> Decision {
        Decision::Unban {
            target: self.ban.target,
            addresses: self.released,
        }
    }
}

/// Bans by target, at most `capacity`; a new ban in a full table evicts the one expiring first.
///
/// # Invariants
/// `expiry` holds `(until_ms, target)` of every ban, and `listed` maps every net of every ban's
/// `addresses` to the targets listing it (no empty lists).
#[derive(Debug)]
pub(super) struct BanTable {
    bans: HashMap<BanTarget, Ban>,
    expiry: BTreeSet<(u64, BanTarget)>,
    listed: HashMap<IpNet, Vec<BanTarget>>,
    capacity: usize,
}

impl BanTable {
    /// An empty table holding at most `capacity` bans (at least one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            bans: HashMap::new(),
            expiry: BTreeSet::new(),
            listed: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The ban of `target`, expired or not.
    pub(super) fn get(&self, target: &BanTarget) -> Option<&Ban> {
        self.bans.get(target)
    }

    /// The ban of `target` if it applies at `now_ms`.
    pub(super) fn active(&self, target: &BanTarget, now_ms: u64) -> Option<&Ban> {
        self.get(target).filter(|ban| ban.until_ms > now_ms)
    }

    /// The ban that [`BanTable::insert`] of a ban of `target` would evict, if any.
    pub(super) fn next_eviction(&self, target: &BanTarget) -> Option<&Ban> {
        if self.bans.contains_key(target) || self.bans.len() < self.capacity {
            return None;
        }
        self.expiry
            .first()
            .and_then(|(_, first)| self.bans.get(first))
    }

    /// Adds `ban`, replacing the ban of the same target if there is one, else evicting the ban
    /// expiring first if the table is full. Returns the replaced or evicted ban.
    pub(super) fn insert(&mut self, ban: Ban) -> Option<Removed> {
        let evicted = self.next_eviction(&ban.target).map(|first| first.target);
        let removed = evicted
            .or_else(|| self.bans.contains_key(&ban.target).then_some(ban.target))
            .and_then(|target| self.unindex(&target));
        for net in &ban.addresses {
            self.listed.entry(*net).or_default().push(ban.target);
        }
        self.expiry.insert((ban.until_ms, ban.target));
        self.bans.insert(ban.target, ban);
        removed.map(|ban| self.released(ban))
    }

    /// Takes the ban of `target` out.
    pub(super) fn remove(&mut self, target: &BanTarget) -> Option<Removed> {
        self.unindex(target).map(|ban| self.released(ban))
    }

    /// Takes out the ban expiring first if it has ended at `now_ms` (`until_ms <= now_ms`).
    pub(super) fn pop_expired(&mut self, now_ms: u64) -> Option<Removed> {
        let &(until_ms, target) = self.expiry.first()?;
        if until_ms > now_ms {
            return None;
        }
        self.remove(&target)
    }

    /// Active bans whose addresses hold `addr`, as an exact host net or inside a prefix.
    pub(super) fn covering(&self, addr: IpAddr, now_ms: u64) -> Vec<&Ban> {
        let max_prefix = IpNet::from(addr).max_prefix_len();
        let mut found: Vec<&Ban> = Vec::new();
        for prefix in 0..=max_prefix {
            let Ok(net) = IpNet::new(addr, prefix) else {
                continue;
            };
            for target in self.listed.get(&net.trunc()).into_iter().flatten() {
                if let Some(ban) = self.active(target, now_ms)
                    && !found.iter().any(|seen| seen.target == ban.target)
                {
                    found.push(ban);
                }
            }
        }
        found
    }

    /// Every ban that applies at `now_ms`, the first to expire first.
    pub(super) fn list(&self, now_ms: u64) -> Vec<Ban> {
        self.list_first(now_ms, usize::MAX).0
    }

    /// The first `max` bans that apply at `now_ms`, the first to expire first, and how many
    /// apply in all; only those listed are copied.
    pub(super) fn list_first(&self, now_ms: u64, max: usize) -> (Vec<Ban>, usize) {
        // `expiry` is ordered by end time: the bans that still apply follow the ended ones.
        let applying = || {
            self.expiry
                .iter()
                .skip_while(move |(until_ms, _)| *until_ms <= now_ms)
        };
        let first = applying()
            .take(max)
            .filter_map(|(_, target)| self.bans.get(target).cloned())
            .collect();
        (first, applying().count())
    }

    /// Number of bans, expired ones not yet taken out included.
    pub(super) fn len(&self) -> usize {
        self.bans.len()
    }

    /// Removes the ban of `target` from the map and from both indexes.
    fn unindex(&mut self, target: &BanTarget) -> Option<Ban> {
        let ban = self.bans.remove(target)?;
        self.expiry.remove(&(ban.until_ms, ban.target));
        for net in &ban.addresses {
            if let Some(targets) = self.listed.get_mut(net) {
                targets.retain(|listed| listed != target);
                if targets.is_empty() {
                    self.listed.remove(net);
                }
            }
        }
        Some(ban)
    }

    /// Pairs a removed ban with its nets that no ban still in the table lists.
    fn released(&self, ban: Ban) -> Removed {
        let released = ban
            .addresses
            .iter()
            .filter(|net| !self.listed.contains_key(net))
            .copied()
            .collect();
        Removed { ban, released }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::Source;
    use crate::peers::testing::peer;
    use firewall_common::BanReason;

    fn net(text: &str) -> IpNet {
        text.parse().expect("a valid net")
    }

    fn ban(target: BanTarget, addresses: &[&str], until_ms: u64) -> Ban {
        Ban {
            target,
            addresses: addresses.iter().map(|a| net(a)).collect(),
            reason: BanReason::Spam,
            source: Source::Gossip,
            since_ms: 0,
            until_ms,
            offence: 1,
            detail: String::new(),
        }
    }

    #[test]
    fn a_full_table_evicts_the_ban_expiring_first() {
        let mut table = BanTable::new(2);
        assert!(
            table
                .insert(ban(BanTarget::Peer(peer(1)), &["10.0.0.1/32"], 300))
                .is_none()
        );
        assert!(
            table
                .insert(ban(BanTarget::Peer(peer(2)), &["10.0.0.2/32"], 100))
                .is_none()
        );
        let evicted = table
            .insert(ban(BanTarget::Peer(peer(3)), &[], 200))
            .expect("the table is full");
        assert_eq!(evicted.ban.target, BanTarget::Peer(peer(2)));
        assert_eq!(evicted.released, [net("10.0.0.2/32")]);
        assert_eq!(table.len(), 2);
        assert!(
            table
                .covering("10.0.0.2".parse().expect("ip"), 0)
                .is_empty()
        );
    }

    #[test]
    fn a_bounded_listing_copies_the_first_to_expire_and_counts_every_active_ban() {
        let mut table = BanTable::new(8);
        for (i, until_ms) in [(1, 400), (2, 100), (3, 300), (4, 200)] {
            table.insert(ban(BanTarget::Peer(peer(i)), &[], until_ms));
        }
        let (first, total) = table.list_first(150, 2);
        let targets: Vec<_> = first.iter().map(|b| b.target).collect();
        assert_eq!(
            targets,
            [BanTarget::Peer(peer(4)), BanTarget::Peer(peer(3))],
            "the ban ended at 100 is left out"
        );
        assert_eq!(total, 3);
        assert_eq!(table.list(150).len(), 3);
        assert_eq!(table.list_first(400, 8), (Vec::new(), 0));
    }

    #[test]
    fn a_net_listed_by_two_bans_is_released_only_with_the_last() {
        let mut table = BanTable::new(8);
        table.insert(ban(BanTarget::Peer(peer(1)), &["10.0.0.1/32"], 100));
        table.insert(ban(
            BanTarget::Address(net("10.0.0.1/32")),
            &["10.0.0.1/32"],
            200,
        ));
        let first = table.pop_expired(100).expect("expired at until_ms");
        assert!(first.released.is_empty());
        assert!(table.pop_expired(199).is_none());
        let second = table.pop_expired(200).expect("expired at until_ms");
        assert_eq!(second.released, [net("10.0.0.1/32")]);
    }

    #[test]
    fn covering_finds_host_and_prefix_bans_that_are_still_active() {
        let mut table = BanTable::new(8);
        table.insert(ban(
            BanTarget::Address(net("192.0.2.0/24")),
            &["192.0.2.0/24"],
            100,
        ));
        table.insert(ban(BanTarget::Peer(peer(1)), &["192.0.2.7/32"], 50));
        let addr: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(table.covering(addr, 0).len(), 2);
        assert_eq!(table.covering(addr, 50).len(), 1);
        assert!(table.covering(addr, 100).is_empty());
        assert!(
            table
                .covering("192.0.3.7".parse().expect("ip"), 0)
                .is_empty()
        );
        assert_eq!(table.list(60).len(), 1);
    }

    #[test]
    fn replacing_a_ban_releases_only_the_nets_it_no_longer_lists() {
        let mut table = BanTable::new(1);
        let target = BanTarget::Peer(peer(1));
        table.insert(ban(target, &["10.0.0.1/32", "10.0.0.2/32"], 100));
        let replaced = table
            .insert(ban(target, &["10.0.0.2/32"], 400))
            .expect("the old ban is returned");
        assert_eq!(replaced.released, [net("10.0.0.1/32")]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&target).map(|b| b.until_ms), Some(400));
    }
}

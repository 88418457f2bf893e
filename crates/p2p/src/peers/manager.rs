//! Apply reports, issue, lift and persist bans: the [`PeerManager`].

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use firewall_common::BanReason;
use ipnet::IpNet;
use libp2p::PeerId;
use storage::{Column, Store, WriteBatch};
use types::codec::Encode;

use super::bans::BanTable;
use super::offences::{OffenceRecord, OffenceTable};
use super::score::{ScoreTable, Standing};
use super::store as records;
use super::{
    Action, Ban, BanTarget, Decision, Explanation, MAX_DETAIL_BYTES, OFFENDERS_PER_BAN,
    PeerCounters, PeerError, PeerManagerConfig, Report, Source,
};

/// [`PeerCounters::unbans`] label: the ban ran out.
const UNBAN_EXPIRED: &str = "expired";
/// [`PeerCounters::unbans`] label: an operator lifted the ban.
const UNBAN_OPERATOR: &str = "operator";
/// [`PeerCounters::unbans`] label: the ban made room for a new one in a full table.
const UNBAN_EVICTED: &str = "evicted";

/// How long a planned ban lasts.
#[derive(Clone, Copy, Debug)]
enum Length {
    /// Escalated by the target's remembered offences, and not ending before `not_before_ms`.
    Escalated { not_before_ms: u64 },
    /// Exactly this many milliseconds (an operator's choice).
    Fixed { ms: u64 },
}

/// A ban worked out but not applied yet, so that it can be persisted first.
#[derive(Debug)]
struct Plan {
    ban: Ban,
    /// The target's offence record after this ban; `None` leaves the record as it is.
    record: Option<OffenceRecord>,
}

/// Scores peers and addresses from reports and decides disconnects and bans.
///
/// See the [module documentation](super) for the rules. All methods are synchronous and cheap
/// (bounded by the table sizes); `report` and `expire` write to the store when a ban begins or
/// ends.
pub struct PeerManager {
    config: PeerManagerConfig,
    store: Arc<dyn Store>,
    peers: ScoreTable<PeerId>,
    addrs: ScoreTable<IpAddr>,
    bans: BanTable,
    offences: OffenceTable,
    /// Unbans of bans evicted outside [`PeerManager::report`] (operator bans, loading), handed
    /// out by the next [`PeerManager::expire`]; at most `max_bans`.
    pending: VecDeque<Decision>,
    counters: PeerCounters,
}

impl PeerManager {
    /// Loads persisted bans and offence history from `store` (columns `Column::Bans`, and
    /// `Column::Peers` for offence counts) dropping expired bans; a corrupt record is logged,
    /// counted and skipped (never a panic, never blocks startup).
    ///
    /// Fails on an invalid `config` or when the store cannot be read.
    pub fn open(
        store: Arc<dyn Store>,
        config: PeerManagerConfig,
        now_ms: u64,
    ) -> Result<PeerManager, PeerError> {
        config.validate()?;
        let mut manager = PeerManager {
            peers: ScoreTable::new(config.max_peers),
            addrs: ScoreTable::new(config.max_peers),
            bans: BanTable::new(config.max_bans),
            offences: OffenceTable::new(config.max_bans.saturating_mul(OFFENDERS_PER_BAN)),
            pending: VecDeque::new(),
            counters: PeerCounters::default(),
            config,
            store,
        };
        manager.load(now_ms)?;
        Ok(manager)
    }

    /// Remember that `peer` is connected from `addr` (bounded per peer). The time is not used:
    /// an address is remembered until newer ones push it out.
    pub fn connected(&mut self, peer: PeerId, addr: IpAddr, _now_ms: u64) {
        let (standing, evicted) = self.peers.touch(peer);
        standing.remember(addr.to_canonical(), self.config.max_addresses_per_peer);
        if evicted {
            count_eviction(&mut self.counters, "peer_scores");
        }
    }

    /// Forget a peer that disconnected if nothing is held against it any more (its score has
    /// decayed to 0); a peer with a negative score keeps it across reconnections.
    pub fn disconnected(&mut self, peer: PeerId, now_ms: u64) {
        let forgiven = self
            .peers
            .get(&peer)
            .is_some_and(|standing| standing.score_at(now_ms, self.config.half_life_ms) == 0.0);
        if forgiven {
            self.peers.remove(&peer);
        }
    }

    /// Apply a report; returns what the network and the firewall must do now.
    ///
    /// At most: an `Unban` of a ban evicted to make room, a `Disconnect` or a `Ban` of the peer
    /// or address, and, when this ban makes `address_ban_peers` peers banned from one IP, a `Ban`
    /// of that IP (with its own evictions).
    pub fn report(&mut self, report: Report, now_ms: u64) -> Vec<Decision> {
        let key = (report.source.name(), report.reason.name());
        *self.counters.reports.entry(key).or_default() += 1;
        let mut out = Vec::new();
        let mut batch = WriteBatch::new();
        match (report.peer, report.addr.map(|addr| addr.to_canonical())) {
            (Some(peer), addr) => {
                self.report_peer(peer, addr, &report, now_ms, &mut out, &mut batch);
            }
            (None, Some(addr)) => self.report_addr(addr, &report, now_ms, &mut out, &mut batch),
            (None, None) => self.counters.reports_without_target += 1,
        }
        self.write_or_count(batch, "persist a ban");
        out
    }

    /// Operator ban (reason `Manual` unless given; `ttl_ms` None = `ban_base_ms`, with no
    /// escalation).
    ///
    /// Returns `None`, and bans nothing, when the target is allowlisted: an address net inside
    /// the allowlist, or a peer whose every known address is allowlisted. A peer's ban blocks its
    /// known, non-allowlisted addresses. A target already banned gets the new reason, detail and
    /// end (keeping the addresses it blocks). The ban is persisted before it applies: on a store
    /// failure nothing changes. A ban evicted to make room is lifted by the next `expire`.
    pub fn ban(
        &mut self,
        target: BanTarget,
        reason: BanReason,
        ttl_ms: Option<u64>,
        detail: &str,
        now_ms: u64,
    ) -> Result<Option<Ban>, PeerError> {
        let target = normalize(target);
        let detail: String = detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let detail = bounded(detail);
        let mut addresses = match target {
            BanTarget::Peer(peer) => {
                let known = self
                    .peers
                    .get(&peer)
                    .map(|standing| standing.addresses.clone())
                    .unwrap_or_default();
                if !known.is_empty() && known.iter().all(|&a| self.is_allowlisted(a)) {
                    self.spare(&target, "ban", reason, Source::Operator);
                    return Ok(None);
                }
                self.blockable(&known)
            }
            BanTarget::Address(net) => {
                if self
                    .config
                    .allowlist
                    .iter()
                    .any(|allowed| allowed.contains(&net))
                {
                    self.spare(&target, "ban", reason, Source::Operator);
                    return Ok(None);
                }
                vec![net]
            }
        };
        let ms = ttl_ms.unwrap_or(self.config.ban_base_ms);
        let plan = match self.bans.get(&target) {
            Some(existing) => {
                let mut kept = existing.addresses.clone();
                addresses.retain(|net| !kept.contains(net));
                let room = self
                    .config
                    .max_addresses_per_peer
                    .saturating_sub(kept.len());
                kept.extend(addresses.into_iter().take(room));
                Plan {
                    ban: Ban {
                        target,
                        addresses: kept,
                        reason,
                        source: Source::Operator,
                        since_ms: now_ms,
                        until_ms: now_ms.saturating_add(ms),
                        offence: existing.offence,
                        detail,
                    },
                    record: None,
                }
            }
            None => self.plan(
                target,
                addresses,
                reason,
                Source::Operator,
                Length::Fixed { ms },
                detail,
                now_ms,
            ),
        };
        let mut batch = WriteBatch::new();
        self.persist(&plan, &mut batch);
        self.store.write(batch).map_err(|source| PeerError::Store {
            op: "persist a ban",
            source,
        })?;
        let mut out = Vec::new();
        self.apply(plan, &mut out);
        self.reset_score(&target);
        let mut ban = None;
        for decision in out {
            match decision {
                Decision::Ban(issued) => ban = Some(issued),
                other => self.defer(other),
            }
        }
        Ok(ban)
    }

    /// Operator unban: lifts the ban of `target` at once and resets its score (its offence
    /// history is kept, so a repeat offence still escalates). `None` if it was not banned. The
    /// removal is persisted first: on a store failure nothing changes.
    pub fn unban(
        &mut self,
        target: &BanTarget,
        now_ms: u64,
    ) -> Result<Option<Decision>, PeerError> {
        let target = normalize(*target);
        let Some(ban) = self.bans.get(&target) else {
            return Ok(None);
        };
        let remaining_ms = ban.until_ms.saturating_sub(now_ms);
        let mut batch = WriteBatch::new();
        batch.delete(Column::Bans, records::key(&target));
        self.store.write(batch).map_err(|source| PeerError::Store {
            op: "remove a ban",
            source,
        })?;
        let Some(removed) = self.bans.remove(&target) else {
            return Ok(None);
        };
        self.reset_score(&target);
        count_unban(&mut self.counters, UNBAN_OPERATOR);
        log::info!("peer manager: operator lifted the ban of {target}, {remaining_ms} ms early");
        Ok(Some(removed.into_decision()))
    }

    /// Expire bans whose time has come: returns Unban decisions (call every second). Also hands
    /// out the unbans of bans evicted by operator bans or at open, and forgets offence records
    /// older than the offence memory.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Decision> {
        let mut out: Vec<Decision> = self.pending.drain(..).collect();
        let mut batch = WriteBatch::new();
        while let Some(removed) = self.bans.pop_expired(now_ms) {
            batch.delete(Column::Bans, records::key(&removed.ban.target));
            count_unban(&mut self.counters, UNBAN_EXPIRED);
            log::debug!("peer manager: ban of {} expired", removed.ban.target);
            out.push(removed.into_decision());
        }
        for target in self.offences.prune(now_ms, self.config.offence_memory_ms) {
            batch.delete(Column::Peers, records::key(&target));
        }
        self.write_or_count(batch, "remove expired bans");
        out
    }

    /// Is this peer banned right now.
    pub fn is_peer_banned(&self, peer: &PeerId, now_ms: u64) -> bool {
        self.bans.active(&BanTarget::Peer(*peer), now_ms).is_some()
    }

    /// Is this address banned right now: inside any active ban's addresses, or inside an
    /// Address ban's net. Allowlisted → never.
    pub fn is_addr_banned(&self, addr: IpAddr, now_ms: u64) -> bool {
        let addr = addr.to_canonical();
        !self.is_allowlisted(addr) && !self.bans.covering(addr, now_ms).is_empty()
    }

    /// Adds a net to the allowlist: it is never banned from now on. Returns false when it was
    /// already there or the allowlist is full ([`super::MAX_ALLOWLIST`]).
    pub fn allow(&mut self, net: IpNet) -> bool {
        let net = net.trunc();
        if self.config.allowlist.contains(&net)
            || self.config.allowlist.len() >= super::MAX_ALLOWLIST
        {
            return false;
        }
        self.config.allowlist.push(net);
        true
    }

    /// The allowlist.
    pub fn allowlist(&self) -> &[IpNet] {
        &self.config.allowlist
    }

    /// Is this address inside the allowlist.
    pub fn is_allowlisted(&self, addr: IpAddr) -> bool {
        in_allowlist(&self.config.allowlist, addr.to_canonical())
    }

    /// Active bans, for listing, the first to expire first.
    pub fn bans(&self, now_ms: u64) -> Vec<Ban> {
        self.bans.list(now_ms)
    }

    /// The first `max` active bans, the first to expire first, and the number of active bans:
    /// a listing that copies at most `max` bans however many are in force.
    pub fn bans_first(&self, now_ms: u64, max: usize) -> (Vec<Ban>, usize) {
        self.bans.list_first(now_ms, max)
    }

    /// Score, reports, addresses, offences and ban of a peer; `None` if nothing is known of it.
    pub fn explain_peer(&self, peer: &PeerId, now_ms: u64) -> Option<Explanation> {
        let target = BanTarget::Peer(*peer);
        let standing = self.peers.get(peer);
        let ban = self.bans.active(&target, now_ms);
        let offences = self.remembered(&target, now_ms);
        if standing.is_none() && ban.is_none() && offences == 0 {
            return None;
        }
        let addresses = standing.map(|s| s.addresses.clone()).unwrap_or_default();
        Some(Explanation {
            score: standing.map_or(0.0, |s| s.score_at(now_ms, self.config.half_life_ms)),
            reports: standing.map(reports_by_name).unwrap_or_default(),
            allowlisted: !addresses.is_empty() && addresses.iter().all(|&a| self.is_allowlisted(a)),
            addresses,
            offences,
            bans: ban.into_iter().cloned().collect(),
        })
    }

    /// Score, reports, offences and every ban that blocks an address, and whether it is
    /// allowlisted; `None` if nothing is known of it.
    pub fn explain_addr(&self, addr: IpAddr, now_ms: u64) -> Option<Explanation> {
        let addr = addr.to_canonical();
        let standing = self.addrs.get(&addr);
        let bans: Vec<Ban> = self
            .bans
            .covering(addr, now_ms)
            .into_iter()
            .cloned()
            .collect();
        let offences = self.remembered(&BanTarget::Address(IpNet::from(addr)), now_ms);
        let allowlisted = self.is_allowlisted(addr);
        if standing.is_none() && bans.is_empty() && offences == 0 && !allowlisted {
            return None;
        }
        Some(Explanation {
            score: standing.map_or(0.0, |s| s.score_at(now_ms, self.config.half_life_ms)),
            reports: standing.map(reports_by_name).unwrap_or_default(),
            addresses: Vec::new(),
            allowlisted,
            offences,
            bans,
        })
    }

    /// The peer's score now (0 when none is kept).
    pub fn score(&self, peer: &PeerId, now_ms: u64) -> f64 {
        self.peers
            .get(peer)
            .map_or(0.0, |s| s.score_at(now_ms, self.config.half_life_ms))
    }

    /// Counts since open: reports, bans, unbans, disconnects, allowlisted spared, corrupt
    /// records, evictions, store errors.
    pub fn counters(&self) -> &PeerCounters {
        &self.counters
    }

    /// Scores a report about a peer.
    fn report_peer(
        &mut self,
        peer: PeerId,
        addr: Option<IpAddr>,
        report: &Report,
        now_ms: u64,
        out: &mut Vec<Decision>,
        batch: &mut WriteBatch,
    ) {
        if self.is_peer_banned(&peer, now_ms) {
            self.counters.reports_while_banned += 1;
            return;
        }
        let config = &self.config;
        let (standing, evicted) = self.peers.touch(peer);
        if evicted {
            count_eviction(&mut self.counters, "peer_scores");
        }
        if let Some(addr) = addr {
            standing.remember(addr, config.max_addresses_per_peer);
        }
        let (ban, score) = score_report(standing, report, config, now_ms);
        let disconnect = !ban && score <= config.disconnect_threshold && !standing.disconnected;
        if !ban && !disconnect {
            return;
        }
        let allowlisted = !standing.addresses.is_empty()
            && standing
                .addresses
                .iter()
                .all(|&a| in_allowlist(&config.allowlist, a));
        let target = BanTarget::Peer(peer);
        if allowlisted {
            standing.reset();
            let what = if ban { "ban" } else { "disconnect" };
            self.spare(&target, what, report.reason, report.source);
            return;
        }
        if disconnect {
            standing.disconnected = true;
            self.counters.disconnects += 1;
            log::debug!(
                "peer manager: disconnecting {peer}: score {score:.1} after {} from {}",
                report.reason.name(),
                report.source.name()
            );
            out.push(Decision::Disconnect {
                peer,
                reason: report.reason,
            });
            return;
        }
        let detail = detail(standing, report, score);
        let ips: Vec<IpAddr> = standing
            .addresses
            .iter()
            .copied()
            .filter(|&a| !in_allowlist(&config.allowlist, a))
            .collect();
        standing.reset();
        let addresses = ips.iter().map(|&ip| IpNet::from(ip)).collect();
        let length = Length::Escalated { not_before_ms: 0 };
        let plan = self.plan(
            target,
            addresses,
            report.reason,
            report.source,
            length,
            detail,
            now_ms,
        );
        self.persist(&plan, batch);
        self.apply(plan, out);
        for ip in ips {
            self.note_peer_ban(ip, peer, report, now_ms, out, batch);
        }
    }

    /// Scores a report about an address with no known peer.
    fn report_addr(
        &mut self,
        addr: IpAddr,
        report: &Report,
        now_ms: u64,
        out: &mut Vec<Decision>,
        batch: &mut WriteBatch,
    ) {
        if self.is_addr_banned(addr, now_ms) {
            self.counters.reports_while_banned += 1;
            return;
        }
        let config = &self.config;
        let (standing, evicted) = self.addrs.touch(addr);
        if evicted {
            count_eviction(&mut self.counters, "address_scores");
        }
        let (ban, score) = score_report(standing, report, config, now_ms);
        if !ban {
            return;
        }
        let detail = detail(standing, report, score);
        standing.reset();
        let net = IpNet::from(addr);
        let target = BanTarget::Address(net);
        if in_allowlist(&config.allowlist, addr) {
            self.spare(&target, "ban", report.reason, report.source);
            return;
        }
        let length = Length::Escalated { not_before_ms: 0 };
        let plan = self.plan(
            target,
            vec![net],
            report.reason,
            report.source,
            length,
            detail,
            now_ms,
        );
        self.persist(&plan, batch);
        self.apply(plan, out);
    }

    /// Notes that `peer` was banned while seen at `ip`, and bans `ip` itself when that makes
    /// `address_ban_peers` distinct peers within the offence memory.
    fn note_peer_ban(
        &mut self,
        ip: IpAddr,
        peer: PeerId,
        report: &Report,
        now_ms: u64,
        out: &mut Vec<Decision>,
        batch: &mut WriteBatch,
    ) {
        let net = IpNet::from(ip);
        let target = BanTarget::Address(net);
        let mut record = self.offences.get(&target).cloned().unwrap_or_default();
        let banned = record.add_peer(
            peer,
            now_ms,
            self.config.offence_memory_ms,
            self.config.address_ban_peers,
        );
        self.put_record(target, record, batch);
        let covering = self.bans.covering(ip, now_ms);
        let address_banned = covering
            .iter()
            .any(|ban| matches!(ban.target, BanTarget::Address(_)));
        if banned < self.config.address_ban_peers || address_banned {
            return;
        }
        // The address ban must not end before a peer ban that lists the same IP.
        let not_before_ms = covering.iter().map(|ban| ban.until_ms).max().unwrap_or(0);
        let detail = bounded(format!(
            "{banned} peers banned from {ip} within {} s; last {} {} from {}",
            self.config.offence_memory_ms / 1000,
            peer,
            report.reason.name(),
            report.source.name()
        ));
        let length = Length::Escalated { not_before_ms };
        let plan = self.plan(
            target,
            vec![net],
            report.reason,
            report.source,
            length,
            detail,
            now_ms,
        );
        self.persist(&plan, batch);
        self.apply(plan, out);
    }

    /// Works out a new ban of `target` (not yet banned).
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of a ban, each distinct"
    )]
    fn plan(
        &self,
        target: BanTarget,
        addresses: Vec<IpNet>,
        reason: BanReason,
        source: Source,
        length: Length,
        detail: String,
        now_ms: u64,
    ) -> Plan {
        let mut record = self.offences.get(&target).cloned().unwrap_or_default();
        let offence = record.add_ban(now_ms, self.config.offence_memory_ms);
        let until_ms = match length {
            Length::Escalated { not_before_ms } => now_ms
                .saturating_add(self.config.ban_duration_ms(offence))
                .max(not_before_ms),
            Length::Fixed { ms } => now_ms.saturating_add(ms),
        };
        Plan {
            ban: Ban {
                target,
                addresses,
                reason,
                source,
                since_ms: now_ms,
                until_ms,
                offence,
                detail,
            },
            record: Some(record),
        }
    }

    /// Adds the writes of `plan` to `batch`: the ban, the offence record, and the deletion of
    /// whatever applying the plan will evict.
    fn persist(&self, plan: &Plan, batch: &mut WriteBatch) {
        let target = &plan.ban.target;
        if let Some(evicted) = self.bans.next_eviction(target) {
            batch.delete(Column::Bans, records::key(&evicted.target));
        }
        batch.put(
            Column::Bans,
            records::key(target),
            records::encode_ban(&plan.ban),
        );
        if let Some(record) = &plan.record {
            if let Some(evicted) = self.offences.next_eviction(target) {
                batch.delete(Column::Peers, records::key(&evicted));
            }
            batch.put(Column::Peers, records::key(target), record.to_bytes());
        }
    }

    /// Applies a persisted plan; pushes the Unban of a replaced or evicted ban, then the Ban.
    fn apply(&mut self, plan: Plan, out: &mut Vec<Decision>) {
        let Plan { ban, record } = plan;
        if let Some(record) = record
            && self.offences.put(ban.target, record).is_some()
        {
            count_eviction(&mut self.counters, "offences");
        }
        if let Some(removed) = self.bans.insert(ban.clone()) {
            if removed.ban.target != ban.target {
                count_eviction(&mut self.counters, "bans");
                count_unban(&mut self.counters, UNBAN_EVICTED);
                log::warn!(
                    "peer manager: ban table full ({} bans); lifting the ban of {} early",
                    self.config.max_bans,
                    removed.ban.target
                );
                out.push(removed.into_decision());
            } else if !removed.released.is_empty() {
                // An ended ban not yet expired, replaced: unblock what the new one drops.
                count_unban(&mut self.counters, UNBAN_EXPIRED);
                out.push(removed.into_decision());
            }
        }
        *self.counters.bans.entry(ban.reason.name()).or_default() += 1;
        log::info!(
            "peer manager: banned {} until {} (offence {}, {}): {}",
            ban.target,
            ban.until_ms,
            ban.offence,
            ban.reason.name(),
            ban.detail
        );
        out.push(Decision::Ban(ban));
    }

    /// Stores an offence record (not part of a ban plan) and adds its writes to `batch`.
    fn put_record(&mut self, target: BanTarget, record: OffenceRecord, batch: &mut WriteBatch) {
        batch.put(Column::Peers, records::key(&target), record.to_bytes());
        if let Some(evicted) = self.offences.put(target, record) {
            batch.delete(Column::Peers, records::key(&evicted));
            count_eviction(&mut self.counters, "offences");
        }
    }

    /// Bans of `target` remembered at `now_ms`.
    fn remembered(&self, target: &BanTarget, now_ms: u64) -> u32 {
        self.offences
            .remembered(target, now_ms, self.config.offence_memory_ms)
    }

    /// The host nets of the addresses that may be blocked (not allowlisted).
    fn blockable(&self, addresses: &[IpAddr]) -> Vec<IpNet> {
        addresses
            .iter()
            .filter(|&&a| !self.is_allowlisted(a))
            .map(|&a| IpNet::from(a))
            .collect()
    }

    /// Counts and logs a ban or disconnect not issued because the target is allowlisted.
    fn spare(&mut self, target: &BanTarget, what: &str, reason: BanReason, source: Source) {
        self.counters.allowlisted_spared += 1;
        log::warn!(
            "peer manager: not issuing a {what} of allowlisted {target} ({} from {})",
            reason.name(),
            source.name()
        );
    }

    /// Resets the score of a peer or of a host address (after an operator ban or unban).
    fn reset_score(&mut self, target: &BanTarget) {
        match target {
            BanTarget::Peer(peer) => self.peers.reset(peer),
            BanTarget::Address(net) if net.prefix_len() == net.max_prefix_len() => {
                self.addrs.reset(&net.addr());
            }
            BanTarget::Address(_) => {}
        }
    }

    /// Queues a decision for the next `expire`, dropping the oldest beyond `max_bans` (only
    /// unbans are queued; a dropped one leaves kernel entries that expire on their own).
    fn defer(&mut self, decision: Decision) {
        if self.pending.len() >= self.config.max_bans {
            self.pending.pop_front();
        }
        self.pending.push_back(decision);
    }

    /// Writes `batch`; a failure is logged and counted (the decisions still apply in memory).
    fn write_or_count(&mut self, batch: WriteBatch, op: &str) {
        if batch.is_empty() {
            return;
        }
        if let Err(err) = self.store.write(batch) {
            self.counters.store_errors += 1;
            log::error!("peer manager: cannot {op}: {err}; it applies until the node restarts");
        }
    }

    /// Reads bans and offence records back from the store (see [`PeerManager::open`]).
    fn load(&mut self, now_ms: u64) -> Result<(), PeerError> {
        let store = Arc::clone(&self.store);
        let mut batch = WriteBatch::new();
        let mut bans = Vec::new();
        let corrupt = &mut self.counters.corrupt_records;
        records::for_each(
            &*store,
            Column::Bans,
            |key, value| match records::decode_ban(key, value) {
                Ok(ban) => bans.push(ban),
                Err(err) => {
                    *corrupt += 1;
                    log::warn!(
                        "peer manager: skipping a corrupt ban record ({err}); key {key:02x?}"
                    );
                }
            },
        )
        .map_err(|source| PeerError::Store {
            op: "load bans",
            source,
        })?;
        let mut offences = Vec::new();
        records::for_each(
            &*store,
            Column::Peers,
            |key, value| match records::decode_offences(key, value) {
                Ok(record) => offences.push(record),
                Err(err) => {
                    *corrupt += 1;
                    log::warn!(
                        "peer manager: skipping a corrupt offence record ({err}); key {key:02x?}"
                    );
                }
            },
        )
        .map_err(|source| PeerError::Store {
            op: "load offence records",
            source,
        })?;

        // Earliest end first, so that a full table keeps the bans that last longest.
        bans.sort_by_key(|ban| ban.until_ms);
        let loaded_bans = bans.len();
        for mut ban in bans {
            let key = records::key(&ban.target);
            if ban.until_ms <= now_ms {
                batch.delete(Column::Bans, key);
                continue;
            }
            // The allowlist may have grown since the ban was written.
            let before = ban.addresses.len();
            let allowlist = &self.config.allowlist;
            ban.addresses
                .retain(|net| !allowlist.iter().any(|allowed| allowed.contains(net)));
            if matches!(ban.target, BanTarget::Address(_)) && ban.addresses.is_empty() {
                batch.delete(Column::Bans, key);
                continue;
            }
            if ban.addresses.len() != before {
                batch.put(Column::Bans, key, records::encode_ban(&ban));
            }
            if let Some(removed) = self.bans.insert(ban) {
                batch.delete(Column::Bans, records::key(&removed.ban.target));
                count_eviction(&mut self.counters, "bans");
                count_unban(&mut self.counters, UNBAN_EVICTED);
                self.defer(removed.into_decision());
            }
        }

        // Least recently updated first, so that a full table keeps the most recent.
        offences.sort_by_key(|(_, record)| record.latest_ms());
        let memory_ms = self.config.offence_memory_ms;
        for (target, record) in offences {
            if record.is_stale(now_ms, memory_ms) {
                batch.delete(Column::Peers, records::key(&target));
            } else if let Some(evicted) = self.offences.put(target, record) {
                batch.delete(Column::Peers, records::key(&evicted));
                count_eviction(&mut self.counters, "offences");
            }
        }
        self.write_or_count(batch, "clean up loaded bans");
        log::info!(
            "peer manager: {} active bans and {} offence records loaded ({} stored bans read, {} \
             corrupt records skipped)",
            self.bans.len(),
            self.offences.len(),
            loaded_bans,
            self.counters.corrupt_records
        );
        Ok(())
    }
}

/// Applies one report to a standing: the first value says whether it calls for a ban (Fatal, or
/// the score at or under the ban threshold), the second is the new score. Also re-arms the
/// disconnect once the score has recovered above its threshold.
fn score_report(
    standing: &mut Standing,
    report: &Report,
    config: &PeerManagerConfig,
    now_ms: u64,
) -> (bool, f64) {
    standing.record(report.source, report.reason);
    let before = standing.score_at(now_ms, config.half_life_ms);
    if before > config.disconnect_threshold {
        standing.disconnected = false;
    }
    match report.action.weight() {
        None => (true, before),
        Some(weight) => {
            let score = standing.add(weight, now_ms, config.half_life_ms);
            (score <= config.ban_threshold, score)
        }
    }
}

/// The detail of an automatic ban: what crossed the line, and every report counted.
fn detail(standing: &Standing, report: &Report, score: f64) -> String {
    let head = match report.action {
        Action::Fatal => format!(
            "fatal {} from {}",
            report.reason.name(),
            report.source.name()
        ),
        _ => format!("score {score:.1}"),
    };
    bounded(format!(
        "{head} after {} reports: {}",
        standing.report_count(),
        standing.summary()
    ))
}

/// `text` cut to at most [`MAX_DETAIL_BYTES`] at a character boundary.
fn bounded(mut text: String) -> String {
    if text.len() > MAX_DETAIL_BYTES {
        let mut end = MAX_DETAIL_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Reports of a standing by (source, reason) names.
fn reports_by_name(standing: &Standing) -> BTreeMap<(&'static str, &'static str), u32> {
    standing
        .reports
        .iter()
        .map(|(&(source, reason), &n)| ((source.name(), reason.name()), n))
        .collect()
}

/// Whether `addr` (canonical) is inside `allowlist`.
fn in_allowlist(allowlist: &[IpNet], addr: IpAddr) -> bool {
    allowlist.iter().any(|net| net.contains(&addr))
}

/// The target with host bits cleared, and an IPv4-mapped IPv6 net of at least /96 as the IPv4
/// net it maps.
fn normalize(target: BanTarget) -> BanTarget {
    match target {
        BanTarget::Peer(_) => target,
        BanTarget::Address(net) => {
            let mapped = match net.addr().to_canonical() {
                IpAddr::V4(v4) if net.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), net.prefix_len() - 96).ok()
                }
                _ => None,
            };
            BanTarget::Address(mapped.unwrap_or(net).trunc())
        }
    }
}

/// Counts one entry evicted from `table`.
fn count_eviction(counters: &mut PeerCounters, table: &'static str) {
    *counters.evictions.entry(table).or_default() += 1;
}

/// Counts one ban ended by `cause`.
fn count_unban(counters: &mut PeerCounters, cause: &'static str) {
    *counters.unbans.entry(cause).or_default() += 1;
}

#[cfg(test)]
mod tests;

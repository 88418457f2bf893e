//! Turn what the node learns about peers into disconnects and escalating, persisted bans.
//!
//! Every part of the node reports a misbehaving peer (or, before any peer id is known, an
//! address) once, as a coarse [`Action`]. The [`PeerManager`] keeps a decaying score per peer and
//! per address; a score under the disconnect threshold closes the peer's connections, one under
//! the ban threshold (or a [`Action::Fatal`] report) bans it. The returned [`Decision`]s are what
//! libp2p and the firewall must do.
//!
//! # Design
//! - Sans-IO: no clock (every method takes `now_ms`, UNIX milliseconds) and no I/O but the
//!   [`storage::Store`] given to [`PeerManager::open`].
//! - Bans escalate: the n-th ban of a target within the offence memory lasts
//!   `ban_base * escalation^(n-1)`, capped. Offence history lives apart from the scores, so
//!   evicting a score never forgets a repeat offender.
//! - When enough distinct peers are banned from one IP, the IP itself is banned.
//! - Bans and offence history are written through the store on every change and read back by
//!   [`PeerManager::open`].
//!
//! # Invariants
//! - Every table is bounded by a [`PeerManagerConfig`] field: scores (`max_peers` peers and as
//!   many addresses), bans (`max_bans`), offence history ([`OFFENDERS_PER_BAN`] per ban slot),
//!   addresses per peer (`max_addresses_per_peer`).
//! - An allowlisted address is never banned, never blocked and never reported as banned.

mod bans;
mod manager;
mod offences;
mod score;
mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use firewall_common::BanReason;
use ipnet::IpNet;
use libp2p::PeerId;
use storage::StoreError;

pub use manager::PeerManager;
pub use score::{HIGH_TOLERANCE_WEIGHT, LOW_TOLERANCE_WEIGHT, MID_TOLERANCE_WEIGHT};

/// Offence-history entries kept per ban slot (`max_bans`): offences are remembered for days,
/// bans last minutes, so far more targets have a history than an active ban.
pub const OFFENDERS_PER_BAN: usize = 4;

/// Longest [`Ban::detail`], in bytes; longer text is cut at a character boundary.
pub const MAX_DETAIL_BYTES: usize = 256;

/// Largest accepted `max_addresses_per_peer` and `address_ban_peers`: the bound of the address
/// and peer lists in stored records.
pub const MAX_LIST_LEN: usize = 64;

/// How bad one report is (coarse, like Lighthouse's `PeerAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Misbehaviour that proves intent on its own (an operator's verdict): ban at once.
    Fatal,
    /// Misbehaviour an honest peer commits very rarely: [`LOW_TOLERANCE_WEIGHT`].
    LowTolerance,
    /// Misbehaviour an honest peer may commit now and then: [`MID_TOLERANCE_WEIGHT`].
    MidTolerance,
    /// Misbehaviour that is usually a fault of the network: [`HIGH_TOLERANCE_WEIGHT`].
    HighTolerance,
}

/// Which part of the node saw the misbehaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Gossipsub validation.
    Gossip,
    /// The block-sync protocol.
    Sync,
    /// The consensus engine (votes, proposals).
    Consensus,
    /// Connection handling (limits, floods).
    Connection,
    /// The transport handshake (Noise, identify).
    Handshake,
    /// An operator, through the admin API or the CLI.
    Operator,
}

impl Source {
    /// Every source, in code order.
    pub const ALL: [Source; 6] = [
        Source::Gossip,
        Source::Sync,
        Source::Consensus,
        Source::Connection,
        Source::Handshake,
        Source::Operator,
    ];

    /// Stable lower-case name, used in metrics, logs and ban details.
    pub const fn name(self) -> &'static str {
        match self {
            Source::Gossip => "gossip",
            Source::Sync => "sync",
            Source::Consensus => "consensus",
            Source::Connection => "connection",
            Source::Handshake => "handshake",
            Source::Operator => "operator",
        }
    }

    /// Stored code; fixed forever.
    const fn code(self) -> u8 {
        match self {
            Source::Gossip => 1,
            Source::Sync => 2,
            Source::Consensus => 3,
            Source::Connection => 4,
            Source::Handshake => 5,
            Source::Operator => 6,
        }
    }

    /// The source with this stored code, if any.
    const fn from_code(code: u8) -> Option<Source> {
        match code {
            1 => Some(Source::Gossip),
            2 => Some(Source::Sync),
            3 => Some(Source::Consensus),
            4 => Some(Source::Connection),
            5 => Some(Source::Handshake),
            6 => Some(Source::Operator),
            _ => None,
        }
    }
}

/// One report about a peer or an address.
///
/// At least one of `peer` and `addr` is set (a report with neither is counted and ignored). A
/// report with only `addr` (a connection flood, failed handshakes before any peer id is known)
/// scores the address; one with a peer scores the peer and remembers `addr` as its address.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The peer, once its id is known.
    pub peer: Option<PeerId>,
    /// The remote IP address, if known.
    pub addr: Option<IpAddr>,
    /// How bad it is.
    pub action: Action,
    /// Who saw it.
    pub source: Source,
    /// What it was; becomes the ban's reason if this report crosses the ban threshold.
    pub reason: BanReason,
}

/// What a ban applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanTarget {
    /// A peer id: libp2p refuses it, the firewall blocks its known addresses.
    Peer(PeerId),
    /// An address or prefix (always truncated to its prefix).
    Address(IpNet),
}

impl fmt::Display for BanTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanTarget::Peer(peer) => write!(f, "peer {peer}"),
            BanTarget::Address(net) => write!(f, "address {net}"),
        }
    }
}

/// An active ban.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// What is banned.
    pub target: BanTarget,
    /// What goes into the kernel blocklist: a peer's known IPs as /32 or /128 host nets
    /// (allowlisted ones removed), or the banned net itself.
    pub addresses: Vec<IpNet>,
    /// Why: the reason of the report that crossed the threshold, or the operator's.
    pub reason: BanReason,
    /// Who saw the report that crossed the threshold.
    pub source: Source,
    /// When the ban began (UNIX ms).
    pub since_ms: u64,
    /// When the ban ends (UNIX ms); the ban applies while `now_ms < until_ms`.
    pub until_ms: u64,
    /// 1 for a first ban, 2 for the second, ... within the offence memory (escalation).
    pub offence: u32,
    /// Why, for operators: e.g. "score -57.0 after 6 reports: invalid_signature x6 from
    /// gossip". At most [`MAX_DETAIL_BYTES`].
    pub detail: String,
}

/// What the network and the firewall must do after a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Close every connection to this peer (its score fell under the disconnect threshold).
    Disconnect {
        /// The peer.
        peer: PeerId,
        /// The reason of the report that crossed the threshold.
        reason: BanReason,
    },
    /// A new ban: libp2p must refuse and close, the firewall must block `addresses` until
    /// `until_ms`.
    Ban(Ban),
    /// A ban ended (expiry, operator, or evicted to make room): unblock these addresses. Nets that
    /// another active ban still lists are left out.
    Unban {
        /// What was banned.
        target: BanTarget,
        /// Nets to remove from the kernel blocklist.
        addresses: Vec<IpNet>,
    },
}

/// Limits, thresholds and durations of the peer manager.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerManagerConfig {
    /// Peers with a score kept (and as many addresses); the least recently updated is evicted.
    pub max_peers: usize,
    /// Active bans; when full, a new ban replaces the one expiring first.
    pub max_bans: usize,
    /// Addresses remembered per peer (the oldest is forgotten), at most [`MAX_LIST_LEN`].
    pub max_addresses_per_peer: usize,
    /// Milliseconds for a score to decay halfway toward 0.
    pub half_life_ms: u64,
    /// Score (negative, no unit) at or under which a peer is disconnected.
    pub disconnect_threshold: f64,
    /// Score (negative, no unit) at or under which a peer or address is banned.
    pub ban_threshold: f64,
    /// Milliseconds of a first ban, and of an operator ban without a TTL.
    pub ban_base_ms: u64,
    /// Longest escalated ban, milliseconds.
    pub ban_max_ms: u64,
    /// Factor by which each repeat ban within the offence memory is longer than the previous.
    pub ban_escalation: u32,
    /// Milliseconds after its last ban after which a target's offences are forgotten.
    pub offence_memory_ms: u64,
    /// Distinct peers banned from one IP within the offence memory that get the IP itself
    /// banned, at most [`MAX_LIST_LEN`].
    pub address_ban_peers: usize,
    /// Validator addresses: never banned, never blocked; at most [`MAX_ALLOWLIST`] (operators
    /// may add more at run time up to that bound).
    pub allowlist: Vec<IpNet>,
}

/// Most allowlist entries (configured and added at run time).
pub const MAX_ALLOWLIST: usize = 1024;

impl Default for PeerManagerConfig {
    fn default() -> Self {
        Self {
            max_peers: 4096,
            max_bans: 8192,
            max_addresses_per_peer: 8,
            half_life_ms: 10 * 60 * 1000,
            disconnect_threshold: -20.0,
            ban_threshold: -50.0,
            ban_base_ms: 10 * 60 * 1000,
            ban_max_ms: 24 * 60 * 60 * 1000,
            ban_escalation: 4,
            offence_memory_ms: 7 * 24 * 60 * 60 * 1000,
            address_ban_peers: 3,
            allowlist: Vec::new(),
        }
    }
}

impl PeerManagerConfig {
    /// Refuses settings under which the manager cannot keep its promises.
    fn validate(&self) -> Result<(), PeerError> {
        let invalid = |field, reason| Err(PeerError::InvalidConfig { field, reason });
        if self.max_peers == 0 {
            return invalid("max_peers", "must be at least 1");
        }
        if self.max_bans == 0 {
            return invalid("max_bans", "must be at least 1");
        }
        if !(1..=MAX_LIST_LEN).contains(&self.max_addresses_per_peer) {
            return invalid("max_addresses_per_peer", "must be between 1 and 64");
        }
        if !(1..=MAX_LIST_LEN).contains(&self.address_ban_peers) {
            return invalid("address_ban_peers", "must be between 1 and 64");
        }
        if self.half_life_ms == 0 {
            return invalid("half_life_ms", "must be at least 1 ms");
        }
        if !(self.disconnect_threshold.is_finite() && self.disconnect_threshold < 0.0) {
            return invalid("disconnect_threshold", "must be a negative number");
        }
        if !(self.ban_threshold.is_finite() && self.ban_threshold <= self.disconnect_threshold) {
            return invalid(
                "ban_threshold",
                "must be a number at or under disconnect_threshold",
            );
        }
        if self.ban_base_ms == 0 {
            return invalid("ban_base_ms", "must be at least 1 ms");
        }
        if self.ban_max_ms < self.ban_base_ms {
            return invalid("ban_max_ms", "must be at least ban_base_ms");
        }
        if self.ban_escalation == 0 {
            return invalid("ban_escalation", "must be at least 1");
        }
        Ok(())
    }

    /// Length of the `offence`-th ban: `ban_base * escalation^(offence-1)`, capped at `ban_max`.
    fn ban_duration_ms(&self, offence: u32) -> u64 {
        u64::from(self.ban_escalation)
            .checked_pow(offence.saturating_sub(1))
            .and_then(|factor| factor.checked_mul(self.ban_base_ms))
            .map_or(self.ban_max_ms, |ms| ms.min(self.ban_max_ms))
    }
}

/// Why a peer or an address is (or is not) treated as it is, for operators.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// Current score (0 when none is kept).
    pub score: f64,
    /// Reports since the score was created or last reset by a ban, by (source, reason) names.
    pub reports: BTreeMap<(&'static str, &'static str), u32>,
    /// For a peer: the addresses it was seen at, oldest first. Empty for an address.
    pub addresses: Vec<IpAddr>,
    /// For an address: it is allowlisted. For a peer: every known address is.
    pub allowlisted: bool,
    /// Bans remembered within the offence memory; the next ban is offence `offences + 1`.
    pub offences: u32,
    /// Active bans that apply: the peer's ban, or every ban whose addresses or net hold the
    /// address (listed even when the address is allowlisted, in which case they do not apply).
    pub bans: Vec<Ban>,
}

/// Counts since the manager was opened, for metrics and tests. Label values are bounded names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Reports received, by ([`Source::name`], [`BanReason::name`]).
    pub reports: BTreeMap<(&'static str, &'static str), u64>,
    /// Reports about a peer or an address that was already banned (counted, otherwise ignored).
    pub reports_while_banned: u64,
    /// Reports with neither a peer nor an address (ignored).
    pub reports_without_target: u64,
    /// Bans issued (automatic and by operators), by [`BanReason::name`].
    pub bans: BTreeMap<&'static str, u64>,
    /// Bans ended, by cause: `expired`, `operator`, `evicted`.
    pub unbans: BTreeMap<&'static str, u64>,
    /// Disconnect decisions.
    pub disconnects: u64,
    /// Bans and disconnects not issued because the target is allowlisted.
    pub allowlisted_spared: u64,
    /// Stored records that could not be decoded, skipped at open.
    pub corrupt_records: u64,
    /// Entries evicted to keep a table within its bound, by table: `peer_scores`,
    /// `address_scores`, `offences`, `bans`.
    pub evictions: BTreeMap<&'static str, u64>,
    /// Store writes that failed where the caller could not be told (reports, expiry).
    pub store_errors: u64,
}

/// A failure of the peer manager.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The store failed; the operation was not applied.
    #[error("peer manager: cannot {op}: {source}")]
    Store {
        /// What was being done: `load bans`, `persist a ban`, ...
        op: &'static str,
        /// What the store reported.
        source: StoreError,
    },
    /// A [`PeerManagerConfig`] field has a value the manager refuses.
    #[error("invalid peer manager setting `{field}`: {reason}")]
    InvalidConfig {
        /// Field name in [`PeerManagerConfig`].
        field: &'static str,
        /// What a valid value looks like.
        reason: &'static str,
    },
}

/// Helpers shared by the tests of this module.
#[cfg(test)]
mod testing {
    use libp2p::PeerId;

    /// A distinct, deterministic peer id for each `n` (a SHA-256 multihash).
    pub(super) fn peer(n: u32) -> PeerId {
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[0xab; 28]);
        bytes.extend_from_slice(&n.to_be_bytes());
        PeerId::from_bytes(&bytes).expect("a SHA-256 multihash is a valid peer id")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn all_lists_every_source_once_with_a_name_of_its_own() {
        let every = [
            Source::Gossip,
            Source::Sync,
            Source::Consensus,
            Source::Connection,
            Source::Handshake,
            Source::Operator,
        ];
        assert_eq!(every, Source::ALL);
        let names: BTreeSet<&str> = every.into_iter().map(Source::name).collect();
        assert_eq!(names.len(), every.len(), "no name twice");
    }
}

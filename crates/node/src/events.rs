//! What the node tells observers as it happens: final blocks, bans, sampled kernel drops. The
//! WebSocket stream of the API sends each as one JSON object with a `type` field.

use serde::Serialize;

/// Events buffered for each subscriber; a subscriber that falls further behind misses the
/// oldest (and is told how many).
pub const EVENT_BUFFER: usize = 1024;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A block was committed to the ledger.
    Block {
        /// Its height.
        height: u64,
        /// Its hash (hex).
        hash: String,
        /// The proposer's key (hex).
        proposer: String,
        /// Proposer's clock at proposal, ms since the UNIX epoch.
        time_ms: u64,
        /// Transactions in it.
        txs: usize,
    },
    /// A height became final here: the commit certificate and how long it took.
    Finality {
        /// The height.
        height: u64,
        /// The block's hash (hex).
        hash: String,
        /// The round it was decided in.
        round: u32,
        /// Validators whose precommits are in the certificate.
        signers: usize,
        /// Milliseconds from the block's proposal time to its commit here.
        latency_ms: u64,
        /// Equivocations surfaced while deciding it.
        evidence: usize,
    },
    /// A peer or an address was banned.
    Ban {
        /// `peer <id>` or `address <net>`.
        target: String,
        /// Addresses written to the kernel blocklist.
        addresses: Vec<String>,
        /// Why (a ban reason name).
        reason: &'static str,
        /// When the ban ends, ms since the UNIX epoch.
        until_ms: u64,
        /// 1 for a first ban, 2 for the second, ...
        offence: u32,
        /// The explanation.
        detail: String,
    },
    /// A ban ended.
    Unban {
        /// What was banned.
        target: String,
    },
    /// A packet the XDP filter dropped (sampled).
    Drop {
        /// Source address.
        source: String,
        /// Drop reason name.
        reason: &'static str,
        /// Destination port (0 when not TCP or UDP).
        port: u16,
        /// IP protocol number.
        protocol: u8,
    },
    /// This subscriber fell behind and missed events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

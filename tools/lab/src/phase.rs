//! The lab's phases: the quiet baseline and the attacks, in the order they always run, with
//! what each aims at and what it expects.

use serde::Serialize;

/// One phase of the scenario. The order of the variants is the running order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// No attack: the baseline.
    Quiet,
    /// UDP from spoofed sources in a range the operator blocked.
    UdpBlocked,
    /// UDP from one unblocked source over the per-source budget.
    UdpRate,
    /// TCP SYNs at the P2P port from 16 sources.
    Syn,
    /// Undersized QUIC Initials at the P2P port.
    QuicShort,
    /// Many libp2p connections from one address.
    ConnectFlood,
    /// Gossiped transactions with invalid signatures.
    GossipInvalidTx,
    /// Gossiped votes with invalid signatures.
    GossipInvalidVote,
    /// Gossip messages over the topic's size limit.
    GossipOversized,
    /// Committed transactions sent again.
    Replay,
    /// The byzantine validator double-votes and double-proposes.
    Equivocate,
    /// The last honest validator is killed and restarted.
    Restart,
}

/// A frame flood's parameters (`attacker flood`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flood {
    /// `--src`: the spoofed source address or range.
    pub src: &'static str,
    /// `--kind`.
    pub kind: &'static str,
    /// `--dst-port`.
    pub dst_port: u16,
    /// The drop reason the filter counts them under.
    pub reason: &'static str,
}

/// The range the operator blocks before [`Phase::UdpBlocked`] (TEST-NET-like space, never
/// routed: RFC 2544's 198.18.0.0/15).
pub const BLOCKED_RANGE: &str = "198.19.66.0/24";

impl Phase {
    /// Every phase, in running order.
    pub const ALL: [Phase; 12] = [
        Phase::Quiet,
        Phase::UdpBlocked,
        Phase::UdpRate,
        Phase::Syn,
        Phase::QuicShort,
        Phase::ConnectFlood,
        Phase::GossipInvalidTx,
        Phase::GossipInvalidVote,
        Phase::GossipOversized,
        Phase::Replay,
        Phase::Equivocate,
        Phase::Restart,
    ];

    /// The phases of `--bench`.
    pub const BENCH: [Phase; 5] = [
        Phase::Quiet,
        Phase::UdpBlocked,
        Phase::UdpRate,
        Phase::Syn,
        Phase::QuicShort,
    ];

    /// The name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Phase::Quiet => "quiet",
            Phase::UdpBlocked => "udp-blocked",
            Phase::UdpRate => "udp-rate",
            Phase::Syn => "syn",
            Phase::QuicShort => "quic-short",
            Phase::ConnectFlood => "connect-flood",
            Phase::GossipInvalidTx => "gossip-invalid-tx",
            Phase::GossipInvalidVote => "gossip-invalid-vote",
            Phase::GossipOversized => "gossip-oversized",
            Phase::Replay => "replay",
            Phase::Equivocate => "equivocate",
            Phase::Restart => "restart",
        }
    }

    /// The phase called `name`.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The `attacker` subcommand the phase runs, if any.
    pub const fn subcommand(self) -> Option<&'static str> {
        match self {
            Phase::Quiet | Phase::Restart => None,
            Phase::UdpBlocked | Phase::UdpRate | Phase::Syn | Phase::QuicShort => Some("flood"),
            Phase::ConnectFlood => Some("connect-flood"),
            Phase::GossipInvalidTx | Phase::GossipInvalidVote | Phase::GossipOversized => {
                Some("gossip")
            }
            Phase::Replay => Some("replay"),
            Phase::Equivocate => Some("equivocate"),
        }
    }

    /// The frame flood of a flood phase (all aimed at validator 0).
    pub const fn flood(self) -> Option<Flood> {
        let (src, kind, dst_port, reason) = match self {
            Phase::UdpBlocked => (BLOCKED_RANGE, "udp", 7000, "blocklisted"),
            Phase::UdpRate => ("198.19.77.7", "udp", 9000, "rate_limited"),
            Phase::Syn => ("198.19.88.0/28", "syn", 9000, "rate_limited"),
            Phase::QuicShort => ("198.19.99.0/24", "quic-short", 9000, "quic_short_initial"),
            _ => return None,
        };
        Some(Flood {
            src,
            kind,
            dst_port,
            reason,
        })
    }

    /// For a libp2p attack: the attacker namespace index, the validator it targets (of
    /// `validators`), and the ban reasons that count as the expected defence.
    pub fn libp2p(self, validators: usize) -> Option<(usize, usize, &'static [&'static str])> {
        match self {
            Phase::ConnectFlood => Some((0, 1, &["connection_flood", "handshake_failures"])),
            Phase::GossipInvalidTx => Some((1, 2 % validators, &["invalid_signature"])),
            Phase::GossipInvalidVote => Some((2, 3 % validators, &["invalid_signature"])),
            Phase::GossipOversized => Some((3, 0, &["malformed_message"])),
            Phase::Replay => Some((4, 1, &[])),
            _ => None,
        }
    }

    /// The `--kind` of a gossip attack.
    pub const fn gossip_kind(self) -> Option<&'static str> {
        match self {
            Phase::GossipInvalidTx => Some("invalid-tx"),
            Phase::GossipInvalidVote => Some("invalid-vote"),
            Phase::GossipOversized => Some("oversized"),
            _ => None,
        }
    }

    /// Whether its finality latency is held to the quiet phase's (attack phases, not the
    /// quiet baseline and not the restart, which is only reported).
    pub const fn latency_checked(self) -> bool {
        !matches!(self, Phase::Quiet | Phase::Restart)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_all_is_in_order() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_name(p.name()), Some(p));
        }
        assert!(Phase::ALL.windows(2).all(|w| w[0] < w[1]));
        assert!(Phase::BENCH.iter().skip(1).all(|p| p.flood().is_some()));
        assert_eq!(Phase::from_name("nope"), None);
    }

    #[test]
    fn every_attack_has_its_tool_and_target() {
        for p in Phase::ALL {
            match p.subcommand() {
                Some("flood") => assert!(p.flood().is_some(), "{p:?}"),
                Some(_) => assert!(p.libp2p(4).is_some() || p == Phase::Equivocate, "{p:?}"),
                None => assert!(matches!(p, Phase::Quiet | Phase::Restart)),
            }
        }
        let attackers: Vec<usize> = Phase::ALL
            .iter()
            .filter_map(|p| p.libp2p(4).map(|(a, _, _)| a))
            .collect();
        assert_eq!(
            attackers,
            [0, 1, 2, 3, 4],
            "one namespace per libp2p attack"
        );
        assert_eq!(Phase::GossipInvalidVote.libp2p(4).map(|t| t.1), Some(3));
    }
}

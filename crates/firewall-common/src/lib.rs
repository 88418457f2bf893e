//! Define the types, map names and codes that the XDP filter and its controller share.
//!
//! # Invariants
//! - Every struct here is `#[repr(C)]` with explicit padding, so the kernel and user space agree
//!   on its layout; the layout tests at the bottom pin sizes and offsets.
//! - Addresses and ports are kept in network byte order (`[u8; N]` arrays for addresses, so no
//!   conversion is ever needed on either side).
//! - The numeric values of [`Verdict`], [`Reason`] and [`BanReason`] are fixed forever: they are
//!   stored in pinned maps that outlive program versions, and exported as metric labels.
#![no_std]

pub mod bucket;
pub mod telemetry;

pub use bucket::TokenBucket;

/// Map names, shared so neither side ever repeats a string.
pub mod map_names {
    /// `Array<Config>` with one entry: the run-time policy.
    pub const CONFIG: &str = "CONFIG";
    /// `Array<u32>` indexed by destination port: [`crate::port_flags`] bits.
    pub const PORTS: &str = "PORTS";
    /// `LpmTrie<[u8; 4], AllowEntry>`: IPv4 sources that skip every check.
    pub const ALLOW_V4: &str = "ALLOW_V4";
    /// `LpmTrie<[u8; 16], AllowEntry>`: IPv6 sources that skip every check.
    pub const ALLOW_V6: &str = "ALLOW_V6";
    /// `HashMap<[u8; 4], BlockEntry>`: blocked IPv4 addresses (exact, /32).
    pub const BLOCK_V4: &str = "BLOCK_V4";
    /// `HashMap<[u8; 16], BlockEntry>`: blocked IPv6 addresses (exact, /128).
    pub const BLOCK_V6: &str = "BLOCK_V6";
    /// `LpmTrie<[u8; 4], BlockEntry>`: blocked IPv4 prefixes (shorter than /32).
    pub const BLOCK_NET_V4: &str = "BLOCK_NET_V4";
    /// `LpmTrie<[u8; 16], BlockEntry>`: blocked IPv6 prefixes (shorter than /128).
    pub const BLOCK_NET_V6: &str = "BLOCK_NET_V6";
    /// `LruHashMap<[u8; 16], RateState>`: per-source token buckets (see [`crate::rate_key_v4`]).
    pub const RATE: &str = "RATE";
    /// `PerCpuArray<Counter>` indexed by [`crate::stats_index`].
    pub const STATS: &str = "STATS";
    /// `RingBuf` of [`crate::DropEvent`].
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<TokenBucket>` with one entry: the per-CPU budget of drop events.
    pub const EVENT_BUDGET: &str = "EVENT_BUDGET";
    /// Every map the program pins, for listing and clean-up.
    pub const ALL: [&str; 12] = [
        CONFIG,
        PORTS,
        ALLOW_V4,
        ALLOW_V6,
        BLOCK_V4,
        BLOCK_V6,
        BLOCK_NET_V4,
        BLOCK_NET_V6,
        RATE,
        STATS,
        EVENTS,
        EVENT_BUDGET,
    ];
}

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "firewall";

/// Map sizes. Exact-address and prefix maps are allocated on demand (no pre-allocation), so a
/// large bound costs memory only when it is used.
pub mod limits {
    /// Blocked exact IPv4 addresses.
    pub const BLOCK_V4_MAX: u32 = 2 * 1024 * 1024;
    /// Blocked exact IPv6 addresses.
    pub const BLOCK_V6_MAX: u32 = 512 * 1024;
    /// Blocked IPv4 prefixes.
    pub const BLOCK_NET_V4_MAX: u32 = 64 * 1024;
    /// Blocked IPv6 prefixes.
    pub const BLOCK_NET_V6_MAX: u32 = 64 * 1024;
    /// Allowlisted IPv4 prefixes.
    pub const ALLOW_V4_MAX: u32 = 16 * 1024;
    /// Allowlisted IPv6 prefixes.
    pub const ALLOW_V6_MAX: u32 = 16 * 1024;
    /// Sources tracked by the rate limiter; the least recently seen are evicted first.
    pub const RATE_MAX: u32 = 128 * 1024;
    /// Entries of the PORTS map: one per port number.
    pub const PORTS_LEN: u32 = 65_536;
    /// Size of the drop-event ring buffer in bytes (a power of two, multiple of the page size).
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// Extension headers the IPv6 parser walks before it gives up and calls the packet malformed.
    pub const IPV6_EXT_HEADERS_MAX: usize = 6;
}

/// Bits of a PORTS entry.
pub mod port_flags {
    /// TCP to this port is protected: per-source packet and SYN budgets apply.
    pub const TCP: u32 = 1;
    /// UDP to this port is protected: the per-source packet budget applies.
    pub const UDP: u32 = 1 << 1;
    /// UDP to this port is QUIC: long-header Initials shorter than [`super::QUIC_MIN_INITIAL_BYTES`]
    /// are dropped.
    pub const QUIC: u32 = 1 << 2;
}

/// RFC 9000 §14.1: a client pads every UDP datagram carrying an Initial packet to at least 1200
/// bytes of UDP payload.
pub const QUIC_MIN_INITIAL_BYTES: usize = 1200;

/// What the program did with a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Passed to the kernel stack.
    Pass = 0,
    /// Dropped in the driver.
    Drop = 1,
    /// Would have been dropped, but the filter is in monitor mode: passed and counted.
    WouldDrop = 2,
}

impl Verdict {
    /// Number of verdicts.
    pub const COUNT: u32 = 3;
    /// Every verdict, in code order.
    pub const ALL: [Verdict; 3] = [Verdict::Pass, Verdict::Drop, Verdict::WouldDrop];

    /// Stable lower-case name, used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Drop => "drop",
            Verdict::WouldDrop => "would_drop",
        }
    }

    /// The verdict with this code, if any.
    pub const fn from_code(code: u32) -> Option<Verdict> {
        match code {
            0 => Some(Verdict::Pass),
            1 => Some(Verdict::Drop),
            2 => Some(Verdict::WouldDrop),
            _ => None,
        }
    }
}

/// Why the program reached its verdict.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// IP traffic that no rule matched.
    NoMatch = 0,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): always passed.
    NonIp = 1,
    /// Source in the allowlist: passed without any other check.
    Allowlisted = 2,
    /// Truncated or inconsistent Ethernet, VLAN, IP or transport header.
    Malformed = 3,
    /// Source in the blocklist (exact address or prefix) with an unexpired entry.
    Blocklisted = 4,
    /// Source over its packet or SYN budget for the protected ports.
    RateLimited = 5,
    /// IP fragment while the policy drops fragments.
    Fragment = 6,
    /// QUIC long-header Initial in a UDP datagram shorter than RFC 9000 allows.
    QuicShortInitial = 7,
}

impl Reason {
    /// Number of reasons.
    pub const COUNT: u32 = 8;
    /// Every reason, in code order.
    pub const ALL: [Reason; 8] = [
        Reason::NoMatch,
        Reason::NonIp,
        Reason::Allowlisted,
        Reason::Malformed,
        Reason::Blocklisted,
        Reason::RateLimited,
        Reason::Fragment,
        Reason::QuicShortInitial,
    ];

    /// Stable lower-case name, used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NoMatch => "no_match",
            Reason::NonIp => "non_ip",
            Reason::Allowlisted => "allowlisted",
            Reason::Malformed => "malformed",
            Reason::Blocklisted => "blocklisted",
            Reason::RateLimited => "rate_limited",
            Reason::Fragment => "fragment",
            Reason::QuicShortInitial => "quic_short_initial",
        }
    }

    /// The reason with this code, if any.
    pub const fn from_code(code: u32) -> Option<Reason> {
        match code {
            0 => Some(Reason::NoMatch),
            1 => Some(Reason::NonIp),
            2 => Some(Reason::Allowlisted),
            3 => Some(Reason::Malformed),
            4 => Some(Reason::Blocklisted),
            5 => Some(Reason::RateLimited),
            6 => Some(Reason::Fragment),
            7 => Some(Reason::QuicShortInitial),
            _ => None,
        }
    }
}

/// Index of the (verdict, reason) counter in the STATS map.
#[inline(always)]
pub const fn stats_index(verdict: Verdict, reason: Reason) -> u32 {
    verdict as u32 * Reason::COUNT + reason as u32
}

/// Length of the STATS map.
pub const STATS_LEN: u32 = Verdict::COUNT * Reason::COUNT;

/// Why an address was put on the blocklist. Stored in [`BlockEntry::reason`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BanReason {
    /// An operator blocked it by hand.
    Manual = 1,
    /// A peer sent messages with invalid signatures.
    InvalidSignature = 2,
    /// A peer sent malformed or oversized messages.
    MalformedMessage = 3,
    /// A peer sent more than its budget of messages.
    Spam = 4,
    /// An address opened too many connections.
    ConnectionFlood = 5,
    /// A peer abused the block-sync protocol.
    SyncAbuse = 6,
    /// An address failed too many handshakes.
    HandshakeFailures = 7,
    /// Gossipsub rejected a peer's messages.
    GossipRejected = 8,
}

impl BanReason {
    /// Every ban reason, in code order.
    pub const ALL: [BanReason; 8] = [
        BanReason::Manual,
        BanReason::InvalidSignature,
        BanReason::MalformedMessage,
        BanReason::Spam,
        BanReason::ConnectionFlood,
        BanReason::SyncAbuse,
        BanReason::HandshakeFailures,
        BanReason::GossipRejected,
    ];

    /// Stable lower-case name, used in metrics and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            BanReason::Manual => "manual",
            BanReason::InvalidSignature => "invalid_signature",
            BanReason::MalformedMessage => "malformed_message",
            BanReason::Spam => "spam",
            BanReason::ConnectionFlood => "connection_flood",
            BanReason::SyncAbuse => "sync_abuse",
            BanReason::HandshakeFailures => "handshake_failures",
            BanReason::GossipRejected => "gossip_rejected",
        }
    }

    /// The ban reason with this code, if any.
    pub const fn from_code(code: u32) -> Option<BanReason> {
        match code {
            1 => Some(BanReason::Manual),
            2 => Some(BanReason::InvalidSignature),
            3 => Some(BanReason::MalformedMessage),
            4 => Some(BanReason::Spam),
            5 => Some(BanReason::ConnectionFlood),
            6 => Some(BanReason::SyncAbuse),
            7 => Some(BanReason::HandshakeFailures),
            8 => Some(BanReason::GossipRejected),
            _ => None,
        }
    }
}

/// Filter mode, stored in [`Config::mode`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Drop what the rules say to drop.
    Enforce = 0,
    /// Count what would be dropped, per reason, and pass everything.
    Monitor = 1,
}

/// Bits of [`Config::flags`].
pub mod config_flags {
    /// Drop every IPv4 or IPv6 fragment (reason `fragment`).
    pub const DROP_FRAGMENTS: u32 = 1;
}

/// The run-time policy, entry 0 of the CONFIG map. A missing entry reads as all zeros: enforce
/// mode, no rate limits, fragments pass, no drop events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// A [`Mode`] code; any value other than `Monitor` enforces.
    pub mode: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// Packets per second per source to protected ports; 0 disables the packet budget.
    pub pkt_rate_pps: u64,
    /// Burst of the packet budget, in packets.
    pub pkt_burst: u64,
    /// New TCP connections (SYN without ACK) per second per source; 0 disables the SYN budget.
    pub syn_rate_pps: u64,
    /// Burst of the SYN budget, in SYNs.
    pub syn_burst: u64,
    /// Drop events per second per CPU sent to user space; 0 disables events.
    pub events_per_sec: u64,
    /// Burst of the event budget, in events.
    pub events_burst: u64,
}

impl Config {
    /// True when the filter only counts.
    #[inline(always)]
    pub const fn is_monitor(&self) -> bool {
        self.mode == Mode::Monitor as u32
    }

    /// True when fragments are dropped.
    #[inline(always)]
    pub const fn drops_fragments(&self) -> bool {
        self.flags & config_flags::DROP_FRAGMENTS != 0
    }
}

/// Value of the blocklist maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlockEntry {
    /// CLOCK_MONOTONIC nanoseconds after which the entry no longer matches; 0 = never expires.
    pub expires_at_ns: u64,
    /// CLOCK_MONOTONIC nanoseconds when the entry was written.
    pub created_at_ns: u64,
    /// A [`BanReason`] code.
    pub reason: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
}

impl BlockEntry {
    /// True when the entry still applies at `now_ns` (CLOCK_MONOTONIC).
    #[inline(always)]
    pub const fn is_active(&self, now_ns: u64) -> bool {
        self.expires_at_ns == 0 || now_ns < self.expires_at_ns
    }
}

/// Value of the allowlist maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AllowEntry {
    /// CLOCK_MONOTONIC nanoseconds when the entry was written.
    pub created_at_ns: u64,
}

/// Value of the RATE map: the budgets of one source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RateState {
    /// Every packet to a protected port.
    pub packets: TokenBucket,
    /// New TCP connections (SYN without ACK) to a protected port.
    pub syns: TokenBucket,
}

/// Key of the RATE map for an IPv4 source: the IPv4-mapped IPv6 address (`::ffff:a.b.c.d`).
#[inline(always)]
pub const fn rate_key_v4(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

/// Key of the RATE map for an IPv6 source: its /64 (the low 64 bits cleared), since one host
/// usually owns a whole /64.
#[inline(always)]
pub const fn rate_key_v6(addr: [u8; 16]) -> [u8; 16] {
    [
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7], 0, 0, 0, 0, 0, 0,
        0, 0,
    ]
}

/// One STATS counter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted (whole frames, as the driver saw them).
    pub bytes: u64,
}

/// A sampled drop (or would-drop) sent to user space through the EVENTS ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DropEvent {
    /// CLOCK_MONOTONIC nanoseconds of the drop.
    pub timestamp_ns: u64,
    /// Source address: IPv4 in the first 4 bytes (rest zero) or IPv6.
    pub addr: [u8; 16],
    /// A [`Reason`] code.
    pub reason: u32,
    /// For `blocklisted`, the matching entry's [`BanReason`] code; otherwise 0.
    pub ban_reason: u32,
    /// Destination port in host byte order; 0 when there is none (ICMP, fragments, malformed).
    pub dst_port: u16,
    /// 4 or 6; 0 when the IP version could not be read.
    pub family: u8,
    /// IP protocol number (6 TCP, 17 UDP, ...); 0 when unknown.
    pub protocol: u8,
    /// A [`Verdict`] code: `Drop` or `WouldDrop`.
    pub verdict: u8,
    /// Explicit padding; always 0.
    pub _pad0: u8,
    /// Explicit padding; always 0.
    pub _pad1: u16,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is #[repr(C)], made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllowEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TokenBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DropEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::telemetry::TelemetryConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::telemetry::HandshakeKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn shared_structs_have_fixed_layout() {
        assert_eq!(size_of::<Config>(), 56);
        assert_eq!(offset_of!(Config, pkt_rate_pps), 8);
        assert_eq!(offset_of!(Config, events_burst), 48);
        assert_eq!(size_of::<BlockEntry>(), 24);
        assert_eq!(offset_of!(BlockEntry, reason), 16);
        assert_eq!(size_of::<AllowEntry>(), 8);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(size_of::<RateState>(), 32);
        assert_eq!(offset_of!(RateState, syns), 16);
        assert_eq!(size_of::<Counter>(), 16);
        assert_eq!(size_of::<DropEvent>(), 40);
        assert_eq!(offset_of!(DropEvent, addr), 8);
        assert_eq!(offset_of!(DropEvent, reason), 24);
        assert_eq!(offset_of!(DropEvent, ban_reason), 28);
        assert_eq!(offset_of!(DropEvent, dst_port), 32);
        assert_eq!(offset_of!(DropEvent, family), 34);
        assert_eq!(offset_of!(DropEvent, protocol), 35);
        assert_eq!(offset_of!(DropEvent, verdict), 36);
        use telemetry::{HandshakeKey, KernelOffsets, RecordOffsets, TelemetryConfig};
        assert_eq!(size_of::<HandshakeKey>(), 20);
        assert_eq!(offset_of!(HandshakeKey, port), 16);
        assert_eq!(offset_of!(HandshakeKey, family), 18);
        assert_eq!(size_of::<RecordOffsets>(), 88);
        assert_eq!(size_of::<KernelOffsets>(), 40);
        assert_eq!(size_of::<telemetry::CodeRange>(), 16);
        assert_eq!(size_of::<TelemetryConfig>(), 200);
        assert_eq!(offset_of!(TelemetryConfig, p2p_port), 4);
        assert_eq!(offset_of!(TelemetryConfig, records), 8);
        assert_eq!(offset_of!(TelemetryConfig, kernel), 96);
        assert_eq!(offset_of!(TelemetryConfig, xdp_drop_sites), 136);
    }

    #[test]
    fn drop_indices_split_p2p_from_the_rest_and_clamp_unknown_reasons() {
        use telemetry::*;
        assert_eq!(drop_index(true, 3), 3);
        assert_eq!(drop_index(false, 3), DROP_REASON_SLOTS + 3);
        assert_eq!(drop_index(true, 0x0001_0002), DROP_REASON_OTHER);
        assert_eq!(drop_index(false, 10_000), SKB_DROPS_LEN - 1);
    }

    #[test]
    fn latency_buckets_are_powers_of_two_microseconds() {
        use telemetry::*;
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(999), 0);
        assert_eq!(latency_bucket(1_000), 1);
        assert_eq!(latency_bucket(1_999), 1);
        assert_eq!(latency_bucket(2_000), 2);
        assert_eq!(latency_bucket(1_000_000), 10);
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn codes_round_trip_and_stats_indices_are_dense() {
        for v in Verdict::ALL {
            assert_eq!(Verdict::from_code(v as u32), Some(v));
        }
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r as u32), Some(r));
        }
        for b in BanReason::ALL {
            assert_eq!(BanReason::from_code(b as u32), Some(b));
        }
        assert_eq!(Verdict::from_code(Verdict::COUNT), None);
        assert_eq!(Reason::from_code(Reason::COUNT), None);
        assert_eq!(BanReason::from_code(0), None);
        let mut seen = [false; STATS_LEN as usize];
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let i = stats_index(v, r) as usize;
                assert!(!seen[i], "index {i} used twice");
                seen[i] = true;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn block_entry_expires_at_its_deadline_and_zero_never_expires() {
        let e = BlockEntry {
            expires_at_ns: 100,
            ..Default::default()
        };
        assert!(e.is_active(99));
        assert!(!e.is_active(100));
        let forever = BlockEntry::default();
        assert!(forever.is_active(u64::MAX));
    }

    #[test]
    fn rate_keys_map_v4_and_truncate_v6_to_its_64() {
        assert_eq!(
            rate_key_v4([192, 0, 2, 1]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1]
        );
        let a = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 2, 9, 9, 9, 9, 9, 9, 9, 9];
        assert_eq!(
            rate_key_v6(a),
            [0x20, 1, 0xd, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}

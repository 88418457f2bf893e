//! The filter's decision in plain user-space Rust: on a frame's bytes, the reference the kernel
//! program is tested against; on a flow (source, protocol, port), the fallback filter for
//! connections where XDP cannot be loaded.
//!
//! # Invariants
//! For the same frame, rules, policy and clock, [`Model::decide`] returns the verdict and
//! reason the kernel program counts. The differential test in `tests/kernel.rs` checks this on
//! thousands of random and mutated frames.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use firewall_common::{
    BlockEntry, Config, QUIC_MIN_INITIAL_BYTES, RateState, Reason, TokenBucket, Verdict, limits,
    port_flags, rate_key_v4, rate_key_v6,
};
use ipnet::IpNet;

use crate::rules::{Policy, RuleSet, is_host, longest_match};

/// A verdict with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Pass, drop, or would-drop (monitor mode).
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
}

/// What the fallback filter knows of a packet or connection when it has no frame to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Source address.
    pub src: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    /// Destination port.
    pub dst_port: u16,
    /// A new TCP connection (SYN without ACK).
    pub syn: bool,
}

/// The reference filter: policy, ports, rules and per-source budgets.
#[derive(Clone, Debug, Default)]
pub struct Model {
    config: Config,
    ports: BTreeMap<u16, u32>,
    allow: Vec<IpNet>,
    block_exact: HashMap<IpAddr, BlockEntry>,
    block_prefix: Vec<(IpNet, BlockEntry)>,
    rate: HashMap<[u8; 16], RateState>,
}

struct Ip {
    addr: IpAddr,
    protocol: u8,
    l4: usize,
    ip_end: usize,
    fragment: bool,
    later_fragment: bool,
}

const QUIC_V1: u32 = 1;
const QUIC_V2: u32 = 0x6b33_43cf;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Ok(None): not IP. Err: malformed.
fn parse_ip(f: &[u8]) -> Result<Option<Ip>, ()> {
    let mut ethertype = be16(f, 12).ok_or(())?;
    let mut l3 = 14;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88a8 {
            break;
        }
        ethertype = be16(f, l3 + 2).ok_or(())?;
        l3 += 4;
    }
    match ethertype {
        0x0800 => parse_ipv4(f, l3).map(Some),
        0x86dd => parse_ipv6(f, l3).map(Some),
        _ => Ok(None),
    }
}

fn parse_ipv4(f: &[u8], l3: usize) -> Result<Ip, ()> {
    let h = f.get(l3..l3 + 20).ok_or(())?;
    if h[0] >> 4 != 4 {
        return Err(());
    }
    let hlen = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if hlen < 20 || total < hlen || l3 + total > f.len() {
        return Err(());
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let offset = frag & 0x1fff;
    Ok(Ip {
        addr: IpAddr::from([h[12], h[13], h[14], h[15]]),
        protocol: h[9],
        l4: l3 + hlen,
        ip_end: l3 + total,
        fragment: frag & 0x2000 != 0 || offset != 0,
        later_fragment: offset != 0,
    })
}

fn is_ext(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60)
}

fn parse_ipv6(f: &[u8], l3: usize) -> Result<Ip, ()> {
    let h = f.get(l3..l3 + 40).ok_or(())?;
    if h[0] >> 4 != 6 {
        return Err(());
    }
    let ip_end = l3 + 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
    if ip_end > f.len() {
        return Err(());
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut next = h[6];
    let mut off = l3 + 40;
    let (mut fragment, mut later_fragment) = (false, false);
    for _ in 0..limits::IPV6_EXT_HEADERS_MAX {
        if !is_ext(next) {
            break;
        }
        let b0 = *f.get(off).ok_or(())?;
        let b1 = *f.get(off + 1).ok_or(())?;
        let len = match next {
            51 => (usize::from(b1) + 2) * 4,
            44 => {
                let field = be16(f, off + 2).ok_or(())?;
                fragment = true;
                later_fragment = field >> 3 != 0;
                8
            }
            _ => (usize::from(b1) + 1) * 8,
        };
        next = b0;
        off += len;
        if off > ip_end {
            return Err(());
        }
    }
    if is_ext(next) {
        return Err(());
    }
    Ok(Ip {
        addr: IpAddr::from(src),
        protocol: next,
        l4: off,
        ip_end,
        fragment,
        later_fragment,
    })
}

/// (destination port, SYN without ACK, UDP payload length).
fn parse_l4(f: &[u8], ip: &Ip) -> Result<(u16, bool, usize), ()> {
    match ip.protocol {
        6 => {
            let t = f.get(ip.l4..ip.l4 + 20).ok_or(())?;
            let hlen = usize::from(t[12] >> 4) * 4;
            if ip.l4 + 20 > ip.ip_end || hlen < 20 || (!ip.fragment && ip.l4 + hlen > ip.ip_end) {
                return Err(());
            }
            Ok((u16::from_be_bytes([t[2], t[3]]), t[13] & 0x12 == 0x02, 0))
        }
        17 => {
            let u = f.get(ip.l4..ip.l4 + 8).ok_or(())?;
            if ip.l4 + 8 > ip.ip_end {
                return Err(());
            }
            let len = usize::from(u16::from_be_bytes([u[4], u[5]]));
            if !ip.fragment && (len < 8 || ip.l4 + len > ip.ip_end) {
                return Err(());
            }
            Ok((
                u16::from_be_bytes([u[2], u[3]]),
                false,
                len.saturating_sub(8),
            ))
        }
        _ => Ok((0, false, 0)),
    }
}

fn is_short_quic_initial(f: &[u8], payload: usize, payload_len: usize) -> bool {
    if payload_len >= QUIC_MIN_INITIAL_BYTES {
        return false;
    }
    let Some(h) = f.get(payload..payload + 5) else {
        return false;
    };
    if payload_len < 5 || h[0] & 0x80 == 0 {
        return false;
    }
    let version = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    let packet_type = (h[0] >> 4) & 0x03;
    (version == QUIC_V1 && packet_type == 0) || (version == QUIC_V2 && packet_type == 1)
}

impl Model {
    /// A model with this CONFIG entry, PORTS entries and rules.
    pub fn new(config: Config, ports: BTreeMap<u16, u32>, rules: &RuleSet) -> Model {
        let mut model = Model {
            config,
            ports,
            allow: rules.allow.iter().map(IpNet::trunc).collect(),
            ..Model::default()
        };
        for (net, entry) in &rules.block {
            if is_host(net) {
                model.block_exact.insert(net.addr(), *entry);
            } else {
                model.block_prefix.push((net.trunc(), *entry));
            }
        }
        model
    }

    /// A model of `policy` with `rules`.
    pub fn from_policy(policy: &Policy, rules: &RuleSet) -> Model {
        Model::new(policy.config(), policy.port_flags(), rules)
    }

    /// Replaces the policy (mode, budgets, ports); rules and budgets spent stay.
    pub fn set_policy(&mut self, policy: &Policy) {
        self.config = policy.config();
        self.ports = policy.port_flags();
    }

    /// Adds or replaces a block rule.
    pub fn block(&mut self, net: IpNet, entry: BlockEntry) {
        let net = net.trunc();
        if is_host(&net) {
            self.block_exact.insert(net.addr(), entry);
        } else {
            self.block_prefix.retain(|(n, _)| *n != net);
            self.block_prefix.push((net, entry));
        }
    }

    /// Removes the block rule for exactly `net`; false when there was none.
    pub fn unblock(&mut self, net: IpNet) -> bool {
        let net = net.trunc();
        if is_host(&net) {
            return self.block_exact.remove(&net.addr()).is_some();
        }
        let before = self.block_prefix.len();
        self.block_prefix.retain(|(n, _)| *n != net);
        self.block_prefix.len() != before
    }

    /// Allowlists a prefix.
    pub fn allow(&mut self, net: IpNet) {
        let net = net.trunc();
        if !self.allow.contains(&net) {
            self.allow.push(net);
        }
    }

    /// Removes the allow rule for exactly `net`; false when there was none.
    pub fn disallow(&mut self, net: IpNet) -> bool {
        let net = net.trunc();
        let before = self.allow.len();
        self.allow.retain(|n| *n != net);
        self.allow.len() != before
    }

    /// The verdict and reason for `frame` at CLOCK_MONOTONIC `now_ns`. Spends rate-limit
    /// tokens as the kernel does.
    pub fn decide(&mut self, frame: &[u8], now_ns: u64) -> Decision {
        let (drop, reason) = self.classify(frame, now_ns);
        self.decision(drop, reason)
    }

    /// The verdict and reason for a flow known only by its source, protocol and port (the
    /// fallback filter's view of a connection): the same rules in the same order, without the
    /// checks that need the frame (malformed headers, fragments, QUIC Initial size).
    pub fn decide_flow(&mut self, flow: &Flow, now_ns: u64) -> Decision {
        let (drop, reason) = match self.source_rules(flow.src, now_ns) {
            Some(decided) => decided,
            None => self.port_rules(flow, now_ns),
        };
        self.decision(drop, reason)
    }

    fn decision(&self, drop: bool, reason: Reason) -> Decision {
        let verdict = if !drop {
            Verdict::Pass
        } else if self.config.is_monitor() {
            Verdict::WouldDrop
        } else {
            Verdict::Drop
        };
        Decision { verdict, reason }
    }

    fn classify(&mut self, f: &[u8], now_ns: u64) -> (bool, Reason) {
        let ip = match parse_ip(f) {
            Ok(Some(ip)) => ip,
            Ok(None) => return (false, Reason::NonIp),
            Err(()) => return (true, Reason::Malformed),
        };
        if let Some(decided) = self.source_rules(ip.addr, now_ns) {
            return decided;
        }
        if ip.fragment && self.config.drops_fragments() {
            return (true, Reason::Fragment);
        }
        if ip.later_fragment {
            return (false, Reason::NoMatch);
        }
        let Ok((port, syn, udp_payload)) = parse_l4(f, &ip) else {
            return (true, Reason::Malformed);
        };
        let flags = self.ports.get(&port).copied().unwrap_or(0);
        if ip.protocol == 17
            && flags & port_flags::QUIC != 0
            && !ip.fragment
            && is_short_quic_initial(f, ip.l4 + 8, udp_payload)
        {
            return (true, Reason::QuicShortInitial);
        }
        let flow = Flow {
            src: ip.addr,
            protocol: ip.protocol,
            dst_port: port,
            syn,
        };
        self.port_rules(&flow, now_ns)
    }

    /// Allowlist, then blocklist: `Some` when one of them decides.
    fn source_rules(&self, src: IpAddr, now_ns: u64) -> Option<(bool, Reason)> {
        if longest_match(self.allow.iter().map(|n| (n, ())), src).is_some() {
            return Some((false, Reason::Allowlisted));
        }
        if self.is_blocked(src, now_ns) {
            return Some((true, Reason::Blocklisted));
        }
        None
    }

    /// Per-source budgets on protected ports.
    fn port_rules(&mut self, flow: &Flow, now_ns: u64) -> (bool, Reason) {
        let flags = self.ports.get(&flow.dst_port).copied().unwrap_or(0);
        let protected = (flow.protocol == 6 && flags & port_flags::TCP != 0)
            || (flow.protocol == 17 && flags & port_flags::UDP != 0);
        if protected && !self.within_budget(flow.src, flow.syn, now_ns) {
            return (true, Reason::RateLimited);
        }
        (false, Reason::NoMatch)
    }

    fn is_blocked(&self, addr: IpAddr, now_ns: u64) -> bool {
        if let Some(e) = self.block_exact.get(&addr)
            && e.is_active(now_ns)
        {
            return true;
        }
        longest_match(self.block_prefix.iter().map(|(n, e)| (n, *e)), addr)
            .is_some_and(|(_, e)| e.is_active(now_ns))
    }

    fn within_budget(&mut self, addr: IpAddr, syn: bool, now_ns: u64) -> bool {
        let c = self.config;
        if c.pkt_rate_pps == 0 && (c.syn_rate_pps == 0 || !syn) {
            return true;
        }
        let key = match addr {
            IpAddr::V4(a) => rate_key_v4(a.octets()),
            IpAddr::V6(a) => rate_key_v6(a.octets()),
        };
        let state = self.rate.entry(key).or_insert(RateState {
            packets: TokenBucket::full(now_ns, c.pkt_burst),
            syns: TokenBucket::full(now_ns, c.syn_burst),
        });
        if !state.packets.take(now_ns, c.pkt_rate_pps, c.pkt_burst) {
            return false;
        }
        !syn || state.syns.take(now_ns, c.syn_rate_pps, c.syn_burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{Packet, Transport, quic_initial, tcp_flags};
    use firewall_common::config_flags;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn decide(model: &mut Model, frame: &[u8]) -> (Verdict, Reason) {
        let d = model.decide(frame, 1_000);
        (d.verdict, d.reason)
    }

    #[test]
    fn rules_apply_in_order_allow_block_fragment_ports() {
        let block = BlockEntry {
            reason: 1,
            ..Default::default()
        };
        let rules = RuleSet {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            block: vec![
                ("10.1.2.3/32".parse().unwrap(), block),
                ("198.51.100.0/24".parse().unwrap(), block),
            ],
        };
        let config = Config {
            flags: config_flags::DROP_FRAGMENTS,
            ..Config::default()
        };
        let mut m = Model::new(config, BTreeMap::new(), &rules);
        let to = ip("192.0.2.1");
        let udp = |src| Packet::udp(ip(src), to, 1, 2, b"x").build();
        assert_eq!(
            decide(&mut m, &udp("10.1.2.3")),
            (Verdict::Pass, Reason::Allowlisted)
        );
        assert_eq!(
            decide(&mut m, &udp("198.51.100.9")),
            (Verdict::Drop, Reason::Blocklisted)
        );
        assert_eq!(
            decide(&mut m, &udp("203.0.113.1")),
            (Verdict::Pass, Reason::NoMatch)
        );
        let mut frag = Packet::udp(ip("203.0.113.1"), to, 1, 2, b"x");
        frag.ipv4_fragment = Some((0, true));
        assert_eq!(
            decide(&mut m, &frag.build()),
            (Verdict::Drop, Reason::Fragment)
        );
    }

    #[test]
    fn expired_block_entries_no_longer_match() {
        let expired = BlockEntry {
            expires_at_ns: 500,
            reason: 1,
            ..Default::default()
        };
        let rules = RuleSet {
            allow: vec![],
            block: vec![("192.0.2.9/32".parse().unwrap(), expired)],
        };
        let mut m = Model::new(Config::default(), BTreeMap::new(), &rules);
        let f = Packet::udp(ip("192.0.2.9"), ip("192.0.2.1"), 1, 2, b"").build();
        assert_eq!(m.decide(&f, 499).verdict, Verdict::Drop);
        assert_eq!(m.decide(&f, 500).verdict, Verdict::Pass);
    }

    #[test]
    fn short_quic_initials_and_syn_floods_are_caught_on_protected_ports() {
        let mut ports = BTreeMap::new();
        ports.insert(9000, port_flags::TCP | port_flags::UDP | port_flags::QUIC);
        let config = Config {
            syn_rate_pps: 1,
            syn_burst: 2,
            ..Config::default()
        };
        let mut m = Model::new(config, ports, &RuleSet::default());
        let (src, dst) = (ip("2001:db8::1"), ip("2001:db8::2"));
        let short = Packet::udp(src, dst, 5, 9000, &quic_initial(1199)).build();
        let full = Packet::udp(src, dst, 5, 9000, &quic_initial(1200)).build();
        assert_eq!(
            decide(&mut m, &short),
            (Verdict::Drop, Reason::QuicShortInitial)
        );
        assert_eq!(decide(&mut m, &full), (Verdict::Pass, Reason::NoMatch));
        let syn = Packet::tcp(src, dst, 5, 9000, tcp_flags::SYN).build();
        assert_eq!(decide(&mut m, &syn).0, Verdict::Pass);
        assert_eq!(decide(&mut m, &syn).0, Verdict::Pass);
        assert_eq!(decide(&mut m, &syn), (Verdict::Drop, Reason::RateLimited));
        let ack = Packet::tcp(src, dst, 5, 9000, tcp_flags::ACK).build();
        assert_eq!(decide(&mut m, &ack).0, Verdict::Pass);
    }

    #[test]
    fn the_flow_fallback_applies_the_same_rules_and_follows_edits() {
        let policy = Policy {
            syn_rate_pps: 1,
            syn_burst: 1,
            tcp_ports: vec![9000],
            ..Policy::default()
        };
        let mut m = Model::from_policy(&policy, &RuleSet::default());
        let flow = |src: &str, syn| Flow {
            src: ip(src),
            protocol: 6,
            dst_port: 9000,
            syn,
        };
        let verdict = |m: &mut Model, f: &Flow| {
            let d = m.decide_flow(f, 1_000);
            (d.verdict, d.reason)
        };
        assert_eq!(
            verdict(&mut m, &flow("192.0.2.9", true)),
            (Verdict::Pass, Reason::NoMatch)
        );
        assert_eq!(
            verdict(&mut m, &flow("192.0.2.9", true)),
            (Verdict::Drop, Reason::RateLimited)
        );
        let net: IpNet = "192.0.2.0/24".parse().unwrap();
        m.block(
            net,
            BlockEntry {
                reason: 1,
                ..Default::default()
            },
        );
        assert_eq!(
            verdict(&mut m, &flow("192.0.2.7", false)).1,
            Reason::Blocklisted
        );
        m.allow("192.0.2.7/32".parse().unwrap());
        assert_eq!(
            verdict(&mut m, &flow("192.0.2.7", false)).1,
            Reason::Allowlisted
        );
        assert!(m.disallow("192.0.2.7/32".parse().unwrap()));
        assert!(m.unblock(net));
        assert!(!m.unblock(net));
        assert_eq!(
            verdict(&mut m, &flow("192.0.2.7", false)).1,
            Reason::NoMatch
        );
        m.set_policy(&Policy {
            mode: firewall_common::Mode::Monitor,
            ..policy
        });
        assert_eq!(
            verdict(&mut m, &flow("192.0.2.9", true)),
            (Verdict::WouldDrop, Reason::RateLimited)
        );
    }

    #[test]
    fn truncated_frames_are_malformed_and_non_ip_passes() {
        let mut m = Model::default();
        let f = Packet::with(
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            Transport::Echo {
                payload: vec![1; 8],
            },
        )
        .build();
        for cut in 12..34 {
            assert_eq!(
                decide(&mut m, &f[..cut]).1,
                Reason::Malformed,
                "cut at {cut}"
            );
        }
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(decide(&mut m, &arp), (Verdict::Pass, Reason::NonIp));
    }
}

//! Rules and policy in user-space terms: CIDRs, block entries with reasons and expiry, the
//! run-time policy, and the explanation of a decision (`why`).

use std::{collections::BTreeMap, fmt, net::IpAddr, time::Duration};

use firewall_common::{AllowEntry, BanReason, BlockEntry, Config, Mode, config_flags, port_flags};
use ipnet::IpNet;

use crate::FirewallError;

/// Parses an address (`192.0.2.7`, a /32 or /128) or a CIDR (`198.51.100.0/24`). A CIDR with
/// host bits set is refused, since it is usually a typo. IPv4-mapped IPv6 (`::ffff:192.0.2.7`)
/// becomes the IPv4 net it names: those packets arrive as IPv4.
pub fn parse_net(input: &str) -> Result<IpNet, FirewallError> {
    let input = input.trim();
    let invalid = || FirewallError::InvalidCidr {
        input: input.to_string(),
    };
    let net = if input.contains('/') {
        input.parse::<IpNet>().map_err(|_| invalid())?
    } else {
        IpNet::from(input.parse::<IpAddr>().map_err(|_| invalid())?)
    };
    if net.trunc() != net {
        return Err(FirewallError::InvalidCidr {
            input: format!("{input} (host bits set; did you mean {}?)", net.trunc()),
        });
    }
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
            .map(IpNet::V4)
            .map_err(|_| invalid());
    }
    Ok(net)
}

/// True when the net covers exactly one address (and so lives in an exact-address map).
pub fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The run-time policy of one filter: mode, fragments, budgets, protected ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Enforce or only count.
    pub mode: Mode,
    /// Drop every IP fragment.
    pub drop_fragments: bool,
    /// Packets per second per source to protected ports (0 = no limit).
    pub pkt_rate_pps: u64,
    /// Burst of the packet budget, in packets.
    pub pkt_burst: u64,
    /// New TCP connections per second per source to protected TCP ports (0 = no limit).
    pub syn_rate_pps: u64,
    /// Burst of the SYN budget, in SYNs.
    pub syn_burst: u64,
    /// Sampled drop events per second per CPU (0 = none).
    pub events_per_sec: u64,
    /// Burst of drop events, in events.
    pub events_burst: u64,
    /// Protected TCP ports (the node's P2P ports).
    pub tcp_ports: Vec<u16>,
    /// Protected UDP ports.
    pub udp_ports: Vec<u16>,
    /// UDP ports that carry QUIC (also protected as UDP ports).
    pub quic_ports: Vec<u16>,
}

impl Default for Policy {
    /// Enforce, fragments pass, no protected ports, 100 drop events per second per CPU.
    fn default() -> Self {
        Policy {
            mode: Mode::Enforce,
            drop_fragments: false,
            pkt_rate_pps: 0,
            pkt_burst: 0,
            syn_rate_pps: 0,
            syn_burst: 0,
            events_per_sec: 100,
            events_burst: 100,
            tcp_ports: Vec::new(),
            udp_ports: Vec::new(),
            quic_ports: Vec::new(),
        }
    }
}

impl Policy {
    /// A node's policy: its P2P port protected for TCP and QUIC, 2000 packets/s (burst 4000) and
    /// 20 new connections/s (burst 40) per source, fragments dropped.
    pub fn node(p2p_port: u16) -> Policy {
        Policy {
            drop_fragments: true,
            pkt_rate_pps: 2_000,
            pkt_burst: 4_000,
            syn_rate_pps: 20,
            syn_burst: 40,
            tcp_ports: vec![p2p_port],
            quic_ports: vec![p2p_port],
            ..Policy::default()
        }
    }

    /// Checks the bounds the kernel program honours, so a typo is refused instead of clamped.
    pub fn validate(&self) -> Result<(), FirewallError> {
        use firewall_common::bucket::{BURST_MAX, RATE_MAX_PPS};
        for (name, rate, burst) in [
            ("packet", self.pkt_rate_pps, self.pkt_burst),
            ("SYN", self.syn_rate_pps, self.syn_burst),
            ("event", self.events_per_sec, self.events_burst),
        ] {
            if rate > RATE_MAX_PPS {
                return Err(FirewallError::InvalidPolicy(format!(
                    "{name} rate {rate}/s is above the maximum {RATE_MAX_PPS}/s"
                )));
            }
            if rate > 0 && !(1..=BURST_MAX).contains(&burst) {
                return Err(FirewallError::InvalidPolicy(format!(
                    "{name} burst {burst} must be between 1 and {BURST_MAX} when a rate is set"
                )));
            }
        }
        if self
            .tcp_ports
            .iter()
            .chain(&self.udp_ports)
            .chain(&self.quic_ports)
            .any(|p| *p == 0)
        {
            return Err(FirewallError::InvalidPolicy(
                "port 0 cannot be protected".into(),
            ));
        }
        Ok(())
    }

    /// The CONFIG map entry.
    pub fn config(&self) -> Config {
        Config {
            mode: self.mode as u32,
            flags: if self.drop_fragments {
                config_flags::DROP_FRAGMENTS
            } else {
                0
            },
            pkt_rate_pps: self.pkt_rate_pps,
            pkt_burst: self.pkt_burst,
            syn_rate_pps: self.syn_rate_pps,
            syn_burst: self.syn_burst,
            events_per_sec: self.events_per_sec,
            events_burst: self.events_burst,
        }
    }

    /// The PORTS map entries that are not zero.
    pub fn port_flags(&self) -> BTreeMap<u16, u32> {
        let mut ports = BTreeMap::new();
        for p in &self.tcp_ports {
            *ports.entry(*p).or_insert(0) |= port_flags::TCP;
        }
        for p in &self.udp_ports {
            *ports.entry(*p).or_insert(0) |= port_flags::UDP;
        }
        for p in &self.quic_ports {
            *ports.entry(*p).or_insert(0) |= port_flags::UDP | port_flags::QUIC;
        }
        ports
    }
}

/// What a rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleKind {
    /// Skip every check for this source.
    Allow(AllowEntry),
    /// Drop this source until the entry expires.
    Block(BlockEntry),
}

/// One rule as stored in the kernel maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The source address or prefix.
    pub net: IpNet,
    /// Allow or block, with its details.
    pub kind: RuleKind,
}

/// A whole rule set, for bulk loading and for the reference model.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Allowlisted prefixes.
    pub allow: Vec<IpNet>,
    /// Blocked addresses and prefixes.
    pub block: Vec<(IpNet, BlockEntry)>,
}

/// The entry whose prefix is the longest that contains `addr`, among `entries`.
pub fn longest_match<'a, T>(
    entries: impl IntoIterator<Item = (&'a IpNet, T)>,
    addr: IpAddr,
) -> Option<(IpNet, T)> {
    entries
        .into_iter()
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(net, t)| (*net, t))
}

/// Why the filter treats a source address the way it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Why {
    /// The address asked about.
    pub addr: IpAddr,
    /// CLOCK_MONOTONIC of the answer.
    pub now_ns: u64,
    /// The longest allowlisted prefix containing it.
    pub allow: Option<IpNet>,
    /// Its exact blocklist entry.
    pub exact: Option<BlockEntry>,
    /// The longest blocked prefix containing it (the only prefix the kernel consults).
    pub prefix: Option<(IpNet, BlockEntry)>,
}

impl Why {
    /// The rule that decides, as the kernel applies them: allowlist, then an unexpired exact
    /// entry, then the longest prefix if unexpired.
    pub fn deciding_block(&self) -> Option<(IpNet, BlockEntry)> {
        if self.allow.is_some() {
            return None;
        }
        if let Some(e) = self.exact
            && e.is_active(self.now_ns)
        {
            return Some((IpNet::from(self.addr), e));
        }
        self.prefix.filter(|(_, e)| e.is_active(self.now_ns))
    }
}

/// Formats a ban reason code for people, keeping unknown codes visible.
pub fn ban_reason_name(code: u32) -> String {
    match BanReason::from_code(code) {
        Some(r) => r.name().to_string(),
        None => format!("code_{code}"),
    }
}

/// Formats an expiry for people: `never`, `expired`, or the time left.
pub fn describe_expiry(expires_at_ns: u64, now_ns: u64) -> String {
    if expires_at_ns == 0 {
        "never".into()
    } else if expires_at_ns <= now_ns {
        "expired".into()
    } else {
        format!(
            "in {}s",
            Duration::from_nanos(expires_at_ns - now_ns).as_secs()
        )
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(net) = self.allow {
            return write!(f, "{}: PASS, allowlisted by {net}", self.addr);
        }
        match self.deciding_block() {
            Some((net, e)) => write!(
                f,
                "{}: DROP, blocked by {net} (reason {}, expires {})",
                self.addr,
                ban_reason_name(e.reason),
                describe_expiry(e.expires_at_ns, self.now_ns)
            )?,
            None => write!(f, "{}: no allow or block rule applies", self.addr)?,
        }
        for (net, e) in self
            .exact
            .map(|e| (IpNet::from(self.addr), e))
            .into_iter()
            .chain(self.prefix)
        {
            if !e.is_active(self.now_ns) {
                write!(f, "; expired entry {net} awaits sweeping")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_net_accepts_addresses_and_cidrs_and_refuses_the_rest() {
        assert_eq!(parse_net("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(parse_net("192.0.2.7/33").is_err());
        assert_eq!(
            parse_net("::ffff:192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_net("::ffff:192.0.2.0/120").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert!(parse_net("192.0.2").is_err());
        assert!(parse_net("").is_err());
        let err = parse_net("192.0.2.7/24").unwrap_err().to_string();
        assert!(err.contains("did you mean 192.0.2.0/24"), "{err}");
    }

    #[test]
    fn policy_validation_refuses_rates_without_bursts_and_port_zero() {
        assert!(Policy::node(30333).validate().is_ok());
        let p = Policy {
            pkt_rate_pps: 10,
            pkt_burst: 0,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let p = Policy {
            tcp_ports: vec![0],
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let p = Policy {
            syn_rate_pps: u64::MAX,
            syn_burst: 1,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn quic_ports_are_also_protected_udp_ports() {
        let flags = Policy::node(9000).port_flags();
        assert_eq!(
            flags[&9000],
            port_flags::TCP | port_flags::UDP | port_flags::QUIC
        );
    }

    #[test]
    fn why_prefers_allow_then_active_exact_then_longest_prefix() {
        let addr: IpAddr = "198.51.100.7".parse().unwrap();
        let active = BlockEntry {
            expires_at_ns: 0,
            reason: 4,
            ..Default::default()
        };
        let expired = BlockEntry {
            expires_at_ns: 5,
            reason: 2,
            ..Default::default()
        };
        let net: IpNet = "198.51.100.0/24".parse().unwrap();
        let why = Why {
            addr,
            now_ns: 10,
            allow: None,
            exact: Some(expired),
            prefix: Some((net, active)),
        };
        assert_eq!(why.deciding_block(), Some((net, active)));
        assert!(why.to_string().contains("reason spam"), "{why}");
        assert!(why.to_string().contains("awaits sweeping"), "{why}");
        let allowed = Why {
            allow: Some(net),
            ..why
        };
        assert_eq!(allowed.deciding_block(), None);
    }
}

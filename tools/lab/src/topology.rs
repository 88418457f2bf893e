//! The lab's network: a hub namespace with a bridge, and one namespace per validator, for the
//! byzantine validator, for the frame flood and for each libp2p attacker, each joined to the
//! bridge by a veth pair; and its removal, also of what a killed lab left.
//!
//! # Design
//! Every name carries the lab's pid (`xlab-<pid>-...`): namespaces and the nodes' filter
//! instances (named like their namespace) that a lab killed by SIGKILL left are recognised by
//! their dead pid and removed by the next run ([`remove_leftovers`]). Nothing is created in the
//! root namespace.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use firewall::netns;

/// Prefix of every namespace and filter instance of the lab.
pub const PREFIX: &str = "xlab-";
/// Prefix of the default data directories (`/tmp/xlab-<pid>`).
pub const DEFAULT_DIR_PREFIX: &str = "/tmp/xlab-";
/// The bridge in the hub namespace.
pub const BRIDGE: &str = "br0";
/// The interface inside every member namespace (the veth end the node's filter attaches to).
pub const IFACE: &str = "eth0";
/// The lab's subnet: 198.18.100.0/24 (RFC 2544 benchmarking space, never routed).
pub const SUBNET: [u8; 3] = [198, 18, 100];
/// Prefix length of [`SUBNET`].
pub const SUBNET_BITS: u8 = 24;
/// Last octet of the hub's address on the bridge (the lab's own sockets use it).
pub const HUB_OCTET: u8 = 254;
/// Last octet of the byzantine validator's address.
pub const BYZANTINE_OCTET: u8 = 50;
/// Last octet of the frame-flood source's address (its frames carry spoofed sources).
pub const FLOOD_OCTET: u8 = 100;
/// Last octet of the first libp2p attacker's address; attacker `k` has `101 + k`.
pub const ATTACKER_BASE_OCTET: u8 = 101;
/// Namespaces for libp2p attackers: connect-flood, three gossip kinds and replay, one each, so
/// each attack's ban is its own.
pub const ATTACKERS: usize = 5;
/// The P2P port of every node (TCP and QUIC).
pub const P2P_PORT: u16 = 9000;
/// The public API port of every node.
pub const API_PORT: u16 = 8080;
/// The admin API port of every node.
pub const ADMIN_PORT: u16 = 8081;
/// Most honest validators (their addresses are 198.18.100.1 to .16, below the byzantine one).
pub const MAX_VALIDATORS: usize = 16;

/// An address of the lab's subnet.
pub const fn lab_ip(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], octet)
}

/// Honest validator `i`'s address: 198.18.100.<i+1>.
pub fn validator_ip(i: usize) -> Ipv4Addr {
    // Validated to at most MAX_VALIDATORS (16) validators.
    lab_ip(u8::try_from(i + 1).unwrap_or(u8::MAX))
}

/// The MAC address given to a member's `eth0`: locally administered, the last four bytes its
/// IPv4 address, so the flood's `--dst-mac` is known without asking.
pub fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A namespace on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The namespace (`xlab-<pid>-<tag>`), also the filter instance of a node in it.
    pub ns: String,
    /// The veth end on the hub's side, enslaved to the bridge.
    pub tag: String,
    /// The address of its `eth0`.
    pub ip: Ipv4Addr,
}

impl Member {
    /// The MAC address of its `eth0`.
    pub fn mac(&self) -> [u8; 6] {
        mac_of(self.ip)
    }
}

/// Every namespace of one lab.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The hub: the bridge, and the lab's own sockets.
    pub hub: String,
    /// The honest validators.
    pub validators: Vec<Member>,
    /// The byzantine validator (equivocator).
    pub byzantine: Member,
    /// The source of the frame floods.
    pub flood: Member,
    /// The libp2p attackers.
    pub attackers: Vec<Member>,
}

impl Topology {
    /// The names and addresses of a lab run by process `pid` with `validators` honest ones.
    pub fn new(pid: u32, validators: usize) -> Topology {
        let member = |tag: String, ip| Member {
            ns: format!("{PREFIX}{pid}-{tag}"),
            tag,
            ip,
        };
        Topology {
            hub: format!("{PREFIX}{pid}-hub"),
            validators: (0..validators)
                .map(|i| member(format!("v{i}"), validator_ip(i)))
                .collect(),
            byzantine: member("byz".into(), lab_ip(BYZANTINE_OCTET)),
            flood: member("fl".into(), lab_ip(FLOOD_OCTET)),
            attackers: (0..ATTACKERS)
                .map(|k| {
                    let octet = ATTACKER_BASE_OCTET.saturating_add(k as u8);
                    member(format!("a{k}"), lab_ip(octet))
                })
                .collect(),
        }
    }

    /// The hub's address on the bridge.
    pub fn hub_ip(&self) -> Ipv4Addr {
        lab_ip(HUB_OCTET)
    }

    /// Every member namespace (not the hub).
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.validators
            .iter()
            .chain([&self.byzantine, &self.flood])
            .chain(&self.attackers)
    }

    /// Every namespace, the hub last.
    pub fn namespaces(&self) -> Vec<String> {
        self.members()
            .map(|m| m.ns.clone())
            .chain([self.hub.clone()])
            .collect()
    }

    /// Creates the hub with its bridge and every member joined to it, loopback up everywhere.
    pub fn create(&self) -> Result<()> {
        let hub = self.hub.as_str();
        let hub_addr = format!("{}/{SUBNET_BITS}", self.hub_ip());
        netns::ip(&["netns", "add", hub])?;
        netns::ip(&["-n", hub, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", hub, "link", "add", BRIDGE, "type", "bridge"])?;
        netns::ip(&["-n", hub, "addr", "add", &hub_addr, "dev", BRIDGE])?;
        netns::ip(&["-n", hub, "link", "set", BRIDGE, "up"])?;
        for m in self.members() {
            let ns = m.ns.as_str();
            netns::ip(&["netns", "add", ns])?;
            netns::ip(&[
                "-n", hub, "link", "add", &m.tag, "type", "veth", "peer", "name", IFACE, "netns",
                ns,
            ])?;
            netns::ip(&["-n", hub, "link", "set", &m.tag, "master", BRIDGE, "up"])?;
            let addr = format!("{}/{SUBNET_BITS}", m.ip);
            let mac = mac_text(m.mac());
            netns::ip(&["-n", ns, "link", "set", IFACE, "address", &mac])?;
            netns::ip(&["-n", ns, "addr", "add", &addr, "dev", IFACE])?;
            netns::ip(&["-n", ns, "link", "set", IFACE, "up"])?;
            netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// Kills what runs in the lab's namespaces, deletes the namespaces and removes the nodes'
    /// filter instances ([`netns::remove`]). Goes on after an error; returns the errors.
    pub fn teardown(&self) -> Vec<String> {
        self.namespaces()
            .iter()
            .filter_map(|ns| {
                netns::remove(ns)
                    .with_context(|| format!("removing the namespace {ns} and its filter"))
                    .err()
                    .map(|e| format!("{e:#}"))
            })
            .collect()
    }
}

/// Removes what labs killed before they could clean up left: their namespaces (and what runs in
/// them), their nodes' filter instances and their default data directories. Returns what it
/// removed.
pub fn remove_leftovers() -> Result<Vec<String>> {
    let mut removed =
        netns::remove_leftovers(PREFIX).context("removing what killed labs left behind")?;
    let tmp = Path::new(DEFAULT_DIR_PREFIX)
        .parent()
        .unwrap_or(Path::new("/tmp"));
    let dir_prefix = Path::new(DEFAULT_DIR_PREFIX)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Ok(entries) = std::fs::read_dir(tmp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Exactly `xlab-<pid>`: the default directory of a lab that is gone.
            let default_dir = netns::owner_pid(&dir_prefix, &name)
                .is_some_and(|pid| name == format!("{dir_prefix}{pid}"));
            if default_dir && netns::left_by_dead_run(&dir_prefix, &name) {
                let path = entry.path();
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                removed.push(format!("data directory {}", path.display()));
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use firewall::Instance;

    #[test]
    fn names_carry_the_pid_and_addresses_follow_the_plan() {
        let t = Topology::new(4242, 4);
        assert_eq!(t.hub, "xlab-4242-hub");
        assert_eq!(t.validators[0].ns, "xlab-4242-v0");
        assert_eq!(t.validators[3].ip, Ipv4Addr::new(198, 18, 100, 4));
        assert_eq!(t.byzantine.ns, "xlab-4242-byz");
        assert_eq!(t.byzantine.ip, Ipv4Addr::new(198, 18, 100, 50));
        assert_eq!(t.flood.ip, Ipv4Addr::new(198, 18, 100, 100));
        assert_eq!(t.attackers[0].ip, Ipv4Addr::new(198, 18, 100, 101));
        assert_eq!(t.attackers[4].ns, "xlab-4242-a4");
        assert_eq!(t.hub_ip(), Ipv4Addr::new(198, 18, 100, 254));
        let names = t.namespaces();
        assert_eq!(names.len(), 4 + 2 + ATTACKERS + 1);
        assert_eq!(names.last().map(String::as_str), Some("xlab-4242-hub"));
    }

    #[test]
    fn every_name_is_a_valid_instance_and_interface_name() {
        // The largest pid Linux hands out, and the most validators.
        let t = Topology::new(4_194_304, MAX_VALIDATORS);
        for m in t.members() {
            assert!(Instance::new(&m.ns).is_ok(), "{}", m.ns);
            assert!(m.tag.len() < 16, "interface name {}", m.tag);
        }
        assert!(validator_ip(MAX_VALIDATORS - 1).octets()[3] < BYZANTINE_OCTET);
    }

    #[test]
    fn macs_are_locally_administered_and_carry_the_address() {
        let mac = mac_of(Ipv4Addr::new(198, 18, 100, 1));
        assert_eq!(mac_text(mac), "02:00:c6:12:64:01");
        assert_eq!(mac[0] & 0b11, 0b10, "unicast, locally administered");
    }
}

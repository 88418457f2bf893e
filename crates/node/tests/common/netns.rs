//! Network namespaces for the privileged tests: [`XdpNamespace`], a node's namespace joined by a
//! veth pair to a peer's, where a [`LocalNet`] node runs with the XDP filter; and the pieces
//! every namespaced test uses (running `ip`, making a child join a namespace before exec, doing
//! something on a thread inside one, removing what killed runs left).
//!
//! # Design
//! - Names carry the test process's pid (`<prefix><pid>-...`): what a killed run left is
//!   recognised by its dead pid and removed by the next run of the same test.
//! - Children join their namespace with `setns(CLONE_NEWNET)` before exec rather than through
//!   `ip netns exec`, which remounts `/sys` and so hides bpffs: the node could not pin its filter
//!   where the tests (and `node firewall`) find it.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use firewall::{Instance, netns, program};

use super::LocalNet;

/// The veth end in the node's namespace, where the node attaches its filter.
pub const NODE_IFACE: &str = "node0";
/// The veth end in the peer's namespace.
pub const PEER_IFACE: &str = "peer0";
/// The addresses of [`NODE_IFACE`] and [`PEER_IFACE`] (a /24).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);

/// Runs `ip ARGS`, failing the test with its stderr when it fails.
pub fn ip(args: &[&str]) {
    if let Err(e) = netns::ip(args) {
        panic!("{e}");
    }
}

/// Makes `cmd` run in namespace `ns` and die when the thread that spawns it ends (see
/// [`netns::exec_in`]).
pub fn exec_in_netns(cmd: &mut Command, ns: &str) {
    netns::exec_in(cmd, ns).expect("the namespace exists");
}

/// Runs `f` on a thread inside namespace `ns` and returns its result; a panic in `f` is the
/// caller's.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    netns::in_netns(ns, f).expect("entering the namespace")
}

/// Kills the processes inside namespace `name` (never this one) and deletes it.
pub fn delete_netns(name: &str) {
    if let Err(e) = netns::delete(name) {
        eprintln!("removing namespace {name}: {e}");
    }
}

/// Removes what killed runs of a test whose names start with `prefix` left behind: the
/// processes in their namespaces, the namespaces, and their filter instances.
pub fn remove_leftovers(prefix: &str) {
    match netns::remove_leftovers(prefix) {
        Ok(removed) => {
            for what in removed {
                eprintln!("removed {what} left by a killed run");
            }
        }
        Err(e) => eprintln!("removing what killed runs left: {e}"),
    }
}

/// A node's network namespace (`<prefix><pid>-<n>-node`) joined by a veth pair to a peer's
/// (`<prefix><pid>-<n>-peer`): [`NODE_IFACE`] with [`NODE_IP`] on the node's side,
/// [`PEER_IFACE`] with [`PEER_IP`] on the other, loopback up in both; and the filter instance
/// `<prefix><pid>-<n>` the node attaches. Dropping it (test passed or not) kills what still
/// runs in the namespaces, deletes them (and so the veth), and removes the filter's pins.
pub struct XdpNamespace {
    pub node_ns: String,
    pub peer_ns: String,
    pub instance: Instance,
}

impl XdpNamespace {
    /// Removes what killed runs with `prefix` left, then creates the namespaces and the veth.
    pub fn new(prefix: &str) -> XdpNamespace {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_leftovers(prefix);
        let name = format!(
            "{prefix}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ns = XdpNamespace {
            node_ns: format!("{name}-node"),
            peer_ns: format!("{name}-peer"),
            instance: Instance::new(&name).expect("a valid instance name"),
        };
        // A dead run whose pid this process reused is not recognised above.
        let _ = program::detach(&ns.instance);
        for name in [&ns.node_ns, &ns.peer_ns] {
            delete_netns(name);
            ip(&["netns", "add", name]);
        }
        let (node, peer) = (ns.node_ns.as_str(), ns.peer_ns.as_str());
        ip(&[
            "-n", node, "link", "add", NODE_IFACE, "type", "veth", "peer", "name", PEER_IFACE,
            "netns", peer,
        ]);
        for (ns, dev, addr) in [(node, NODE_IFACE, NODE_IP), (peer, PEER_IFACE, PEER_IP)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// Starts node `i` of `net` inside the node's namespace with the filter on [`NODE_IFACE`]
    /// (`--iface`, `--instance`) and `extra` arguments. The node dies with the calling thread.
    pub fn start_node(&self, net: &mut LocalNet, i: usize, extra: &[&str]) {
        let mut args = vec!["--iface", NODE_IFACE, "--instance", self.instance.name()];
        args.extend_from_slice(extra);
        net.start_in_netns(i, &self.node_ns, &args);
    }

    /// Moves the calling thread into the node's namespace: its sockets reach the node's
    /// loopback listeners from here on.
    pub fn enter_node_ns(&self) {
        netns::enter(&self.node_ns).expect("entering the node's namespace");
    }

    /// Runs `f` on a thread inside the node's namespace.
    pub fn in_node_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.node_ns, f)
    }

    /// Runs `f` on a thread inside the peer's namespace.
    pub fn in_peer_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.peer_ns, f)
    }
}

impl Drop for XdpNamespace {
    fn drop(&mut self) {
        for ns in [&self.node_ns, &self.peer_ns] {
            delete_netns(ns);
        }
        if let Err(e) = program::detach(&self.instance) {
            eprintln!("removing filter {}: {e}", self.instance.name());
        }
    }
}

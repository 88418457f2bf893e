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

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use firewall::{Instance, program};

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
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes `cmd` run in namespace `ns` (network only: the mount namespace, and so bpffs, stay the
/// host's), and die (SIGKILL) when the thread that spawns it ends.
pub fn exec_in_netns(cmd: &mut Command, ns: &str) {
    let file = File::open(format!("/run/netns/{ns}")).expect("the namespace exists");
    // SAFETY: the closure runs in the forked child before exec and makes only two
    // async-signal-safe system calls, on a descriptor opened before the fork (and closed at exec).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `f` on a thread inside namespace `ns` and returns its result; a panic in `f` is the
/// caller's.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            firewall::netns::enter(ns).expect("entering the namespace");
            f()
        });
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Kills the processes inside namespace `name` (never this one) and deletes it.
pub fn delete_netns(name: &str) {
    if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>()
                && pid as u32 != std::process::id()
            {
                // SAFETY: kill has no memory preconditions; the pid runs in a namespace only
                // these tests create.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Whether `name` (`<prefix><pid>...`) belongs to a run whose process is gone.
pub fn left_by_dead_run(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes what killed runs of a test whose names start with `prefix` left behind: the
/// processes in their namespaces, the namespaces, and their filter instances.
pub fn remove_leftovers(prefix: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if left_by_dead_run(prefix, name) {
                eprintln!("removing namespace {name} left by a killed run");
                delete_netns(name);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(program::BPFFS) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if left_by_dead_run(prefix, &name)
                && let Ok(instance) = Instance::new(&name)
            {
                eprintln!("removing filter instance {name} left by a killed run");
                let _ = program::detach(&instance);
            }
        }
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
        firewall::netns::enter(&self.node_ns).expect("entering the node's namespace");
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

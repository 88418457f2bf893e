//! Named network namespaces (`ip netns add NAME`): enter one from the current thread, make a
//! child process start in one, and remove the namespaces (with their processes) that a killed
//! run left behind.
//!
//! # Design
//! - Threads and children join a namespace with `setns(CLONE_NEWNET)` rather than through
//!   `ip netns exec`, which remounts `/sys` and so hides bpffs: a node started that way could
//!   not pin its filter where the other tools find it. The mount namespace stays the host's.
//! - Namespaces created by a run carry its pid (`<prefix><pid>-...`), so what a run killed by
//!   SIGKILL left is recognised by its dead pid and removed by the next run
//!   ([`remove_leftovers`]).
//! - Creating, listing and deleting namespaces goes through iproute2 (`ip`), as an operator
//!   would do it by hand.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::{FirewallError, Instance, program};

/// Where iproute2 keeps the named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

fn netns_error(name: &str, source: std::io::Error) -> FirewallError {
    FirewallError::Netns {
        name: name.to_string(),
        source,
    }
}

/// Opens `/run/netns/<name>`, refusing names that would leave that directory.
fn open(name: &str) -> Result<File, FirewallError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(netns_error(
            name,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        ));
    }
    File::open(Path::new(NETNS_DIR).join(name)).map_err(|e| netns_error(name, e))
}

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
pub fn enter(name: &str) -> Result<(), FirewallError> {
    let file = open(name)?;
    // SAFETY: `file` is an open namespace file descriptor for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(netns_error(name, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes `cmd` start in namespace `name` (network only) and die (SIGKILL) when the thread that
/// spawns it ends: spawn from a thread that lives as long as the child should.
pub fn exec_in(cmd: &mut Command, name: &str) -> Result<(), FirewallError> {
    let file = open(name)?;
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
    Ok(())
}

/// Runs `f` on a new thread inside namespace `name` and returns its result; a panic in `f`
/// goes on in the caller.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, FirewallError> {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| enter(name).map(|()| f()));
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Runs `ip ARGS` (iproute2) and returns its standard output; fails with its standard error.
pub fn ip(args: &[&str]) -> Result<String, FirewallError> {
    let command = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| FirewallError::IpCommand {
            command: command(),
            message: format!("{e} (is iproute2 installed?)"),
        })?;
    if !out.status.success() {
        return Err(FirewallError::IpCommand {
            command: command(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The named namespaces, from `ip netns list`.
pub fn list() -> Result<Vec<String>, FirewallError> {
    Ok(parse_list(&ip(&["netns", "list"])?))
}

/// The names in the output of `ip netns list` (one per line, maybe followed by `(id: N)`).
fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The processes inside namespace `name` (`ip netns pids`); none when it does not exist.
pub fn pids(name: &str) -> Vec<libc::pid_t> {
    ip(&["netns", "pids", name])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills (SIGKILL) the processes inside namespace `name`, never the calling one, and deletes
/// the namespace (and so the interfaces in it). A namespace that does not exist is not an
/// error.
pub fn delete(name: &str) -> Result<(), FirewallError> {
    let me = std::process::id();
    for pid in pids(name) {
        if u32::try_from(pid).is_ok_and(|p| p != me) {
            // SAFETY: kill has no memory preconditions; the pid runs in a namespace of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if !Path::new(NETNS_DIR).join(name).exists() {
        return Ok(());
    }
    ip(&["netns", "del", name]).map(drop)
}

/// Two new namespaces joined by a veth pair, each end with an IPv4 address in one /24 and its
/// loopback up; both namespaces (and their processes) are removed on drop. For tests and
/// benchmarks that need real traffic between two stacks.
pub struct VethPair {
    /// The first namespace (holding `addr_a`).
    pub a: String,
    /// The second namespace.
    pub b: String,
}

impl VethPair {
    /// Creates namespaces `a` and `b`, the veth pair `veth_a` (in `a`) / `veth_b` (in `b`),
    /// and the addresses. What was created is removed again when a step fails.
    pub fn create(
        (a, veth_a, addr_a): (&str, &str, std::net::Ipv4Addr),
        (b, veth_b, addr_b): (&str, &str, std::net::Ipv4Addr),
    ) -> Result<VethPair, FirewallError> {
        ip(&["netns", "add", a])?;
        let pair = VethPair {
            a: a.to_string(),
            b: b.to_string(),
        };
        ip(&["netns", "add", b])?;
        ip(&[
            "link", "add", veth_a, "netns", a, "type", "veth", "peer", "name", veth_b, "netns", b,
        ])?;
        for (space, veth, addr) in [(a, veth_a, addr_a), (b, veth_b, addr_b)] {
            ip(&[
                "-n",
                space,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                veth,
            ])?;
            ip(&["-n", space, "link", "set", veth, "up"])?;
            ip(&["-n", space, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for space in [&self.a, &self.b] {
            if let Err(e) = delete(space) {
                log::warn!("removing namespace {space}: {e}");
            }
        }
    }
}

/// The pid in `name` when it is `<prefix><pid>` or `<prefix><pid>-...`.
pub fn owner_pid(prefix: &str, name: &str) -> Option<u32> {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse().ok())
}

/// Whether `name` (`<prefix><pid>...`) belongs to a run whose process is gone.
pub fn left_by_dead_run(prefix: &str, name: &str) -> bool {
    owner_pid(prefix, name).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes namespace `name` with the processes in it ([`delete`]), then the filter instance of
/// the same name (its pins under bpffs) when `name` is a valid instance name. Returns what it
/// removed, as `namespace NAME` and `filter instance NAME`; nothing when neither was there.
pub fn remove(name: &str) -> Result<Vec<String>, FirewallError> {
    let mut removed = Vec::new();
    let existed = Path::new(NETNS_DIR).join(name).exists();
    delete(name)?;
    if existed {
        removed.push(format!("namespace {name}"));
    }
    if let Ok(instance) = Instance::new(name)
        && program::detach(&instance)?
    {
        removed.push(format!("filter instance {name}"));
    }
    Ok(removed)
}

/// Removes what killed runs whose names start with `prefix` left behind: the processes in their
/// namespaces, the namespaces, and the filter instances (pins under bpffs) of the same names,
/// also those whose namespace is already gone ([`remove`]). Returns what it removed, as
/// `namespace NAME` and `filter instance NAME`.
pub fn remove_leftovers(prefix: &str) -> Result<Vec<String>, FirewallError> {
    let mut names = BTreeSet::new();
    names.extend(list()?);
    if let Ok(entries) = std::fs::read_dir(program::BPFFS) {
        names.extend(
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned()),
        );
    }
    let mut removed = Vec::new();
    for name in names.iter().filter(|n| left_by_dead_run(prefix, n)) {
        removed.extend(remove(name)?);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_outside_the_netns_directory_are_refused() {
        for name in ["", "a/b", "..", "."] {
            assert!(
                matches!(open(name), Err(FirewallError::Netns { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn the_owner_pid_is_the_number_after_the_prefix() {
        assert_eq!(owner_pid("xlab-", "xlab-123-hub"), Some(123));
        assert_eq!(owner_pid("xlab-", "xlab-123"), Some(123));
        assert_eq!(owner_pid("xlab-", "xnt-123-hub"), None);
        assert_eq!(owner_pid("xlab-", "xlab-hub"), None);
        assert_eq!(owner_pid("xlab-", "xlab--1-hub"), None);
    }

    #[test]
    fn a_live_pid_is_not_a_leftover_and_a_dead_one_is() {
        let me = std::process::id();
        assert!(!left_by_dead_run("t-", &format!("t-{me}-x")));
        // Above the kernel's largest pid (4194304), so no process has it.
        assert!(left_by_dead_run("t-", "t-4194305-x"));
        assert!(!left_by_dead_run("t-", "other-4194305-x"));
    }

    #[test]
    fn removing_what_is_not_there_removes_nothing() {
        // A dead pid: no run of this name can exist.
        let removed = remove("xnone-4194305-x").expect("nothing to remove is not an error");
        assert!(removed.is_empty(), "{removed:?}");
    }

    #[test]
    fn netns_list_output_is_parsed_with_or_without_ids() {
        let text = "xlab-9-v0 (id: 2)\nxlab-9-hub (id: 0)\nplain\n\n";
        assert_eq!(parse_list(text), ["xlab-9-v0", "xlab-9-hub", "plain"]);
    }
}

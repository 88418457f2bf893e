//! Enter a named network namespace (`ip netns add NAME`) from the current thread, without
//! leaving the host's mount namespace, so pinned paths under /sys/fs/bpf stay visible.

use std::{fs::File, os::fd::AsRawFd};

use crate::FirewallError;

/// Moves the calling thread into the network namespace `/run/netns/<name>`.
pub fn enter(name: &str) -> Result<(), FirewallError> {
    let err = |source| FirewallError::Netns {
        name: name.to_string(),
        source,
    };
    if name.is_empty() || name.contains('/') {
        return Err(err(std::io::Error::from(std::io::ErrorKind::InvalidInput)));
    }
    let file = File::open(format!("/run/netns/{name}")).map_err(err)?;
    // SAFETY: `file` is an open namespace file descriptor for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

//! The packet filter the node runs with: the XDP program (native or generic mode), the
//! user-space fallback, or none.
//!
//! # Design
//! With XDP, bans and operator rules live in the pinned kernel maps, and hostile packets die in
//! the driver. Without the privileges to load it, the node falls back to user space: the P2P
//! connection gate enforces the same bans and operator blocks, refusing a connection before its
//! handshake, but packets still reach the kernel stack. `--no-xdp` runs without the kernel
//! filter on purpose (the comparison the attack lab makes); bans are then enforced the same way
//! as in the fallback.

use std::sync::{Mutex, MutexGuard};

use firewall::{Instance, Maps};

/// How packets are filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    /// XDP in the driver.
    XdpNative,
    /// XDP in generic (skb) mode: after the driver, still before the stack.
    XdpGeneric,
    /// No kernel filter could be loaded: the connection gate enforces bans and blocks.
    Userspace,
    /// Turned off by the operator (`--no-xdp`): bans are enforced by the connection gate.
    Off,
}

impl FilterMode {
    /// Every mode, for metrics.
    pub const ALL: [FilterMode; 4] = [
        FilterMode::XdpNative,
        FilterMode::XdpGeneric,
        FilterMode::Userspace,
        FilterMode::Off,
    ];

    /// Stable name (API, metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            FilterMode::XdpNative => "xdp_native",
            FilterMode::XdpGeneric => "xdp_generic",
            FilterMode::Userspace => "userspace",
            FilterMode::Off => "off",
        }
    }

    /// Whether the kernel maps exist.
    pub const fn is_xdp(self) -> bool {
        matches!(self, FilterMode::XdpNative | FilterMode::XdpGeneric)
    }
}

/// The filter of a running node.
pub struct Filter {
    mode: FilterMode,
    iface: Option<String>,
    instance: Option<Instance>,
    maps: Option<Mutex<Maps>>,
}

impl Filter {
    /// An attached XDP filter (`mode` is the one the kernel gave).
    pub fn xdp(mode: FilterMode, iface: String, instance: Instance, maps: Maps) -> Filter {
        Filter {
            mode,
            iface: Some(iface),
            instance: Some(instance),
            maps: Some(Mutex::new(maps)),
        }
    }

    /// No kernel filter: the user-space fallback (`Userspace`) or turned off (`Off`).
    pub fn without_kernel(mode: FilterMode) -> Filter {
        Filter {
            mode,
            iface: None,
            instance: None,
            maps: None,
        }
    }

    /// The mode.
    pub fn mode(&self) -> FilterMode {
        self.mode
    }

    /// The interface the XDP program is attached to.
    pub fn iface(&self) -> Option<&str> {
        self.iface.as_deref()
    }

    /// The pinned instance.
    pub fn instance(&self) -> Option<&Instance> {
        self.instance.as_ref()
    }

    /// The kernel maps, when the XDP filter is attached.
    pub fn maps(&self) -> Option<MutexGuard<'_, Maps>> {
        self.maps
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }
}

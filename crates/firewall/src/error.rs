//! Errors of the firewall controller, each with what the operator can do about it.

use std::{io, path::PathBuf};

/// What can go wrong while loading, attaching or administering the filter.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("this operation needs root (CAP_BPF, CAP_NET_ADMIN): run it as root")]
    NotRoot,
    #[error(
        "bpffs is not mounted at {path} and mounting it failed ({source}): run `mount -t bpf bpf /sys/fs/bpf` as root"
    )]
    BpffsUnavailable { path: PathBuf, source: io::Error },
    #[error(
        "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): use a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf,
    #[error(
        "the XDP program was not built (AYA_BUILD_SKIP was set): rebuild without AYA_BUILD_SKIP"
    )]
    ProgramNotBuilt,
    #[error("unknown interface {iface:?}: check `ip link` (and --netns)")]
    UnknownInterface { iface: String },
    #[error("cannot enter network namespace {name:?}: {source} (is it listed by `ip netns`?)")]
    Netns { name: String, source: io::Error },
    #[error("`{command}` failed: {message}")]
    IpCommand { command: String, message: String },
    #[error(
        "loading the XDP program failed: {source} (if {dir} holds maps pinned by another version, `node firewall detach` removes them)"
    )]
    Load {
        dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the kernel rejected the XDP program: {source}")]
    Verifier {
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("attaching XDP to {iface} failed: native: {native}; generic: {generic}")]
    Attach {
        iface: String,
        native: String,
        generic: String,
    },
    #[error("attaching XDP to {iface} in {mode} mode failed: {source}")]
    AttachMode {
        iface: String,
        mode: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("replacing the program of the pinned link {path} failed: {source}")]
    Replace {
        path: PathBuf,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error(
        "instance {instance:?} is attached to interface index {ifindex}: detach it first, or use another --instance"
    )]
    AttachedElsewhere { instance: String, ifindex: u32 },
    #[error("opening the pinned link {path} failed: {source}")]
    PinnedLink {
        path: PathBuf,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error(
        "the kernel attached XDP through netlink, which cannot be pinned: needs Linux >= 5.9 (bpf_link for XDP)"
    )]
    NoXdpLink,
    #[error("pinning {path} failed: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<aya::pin::PinError>,
    },
    #[error(
        "no filter instance {instance:?} is loaded ({path} missing): run `node firewall attach` first"
    )]
    NotLoaded { instance: String, path: PathBuf },
    #[error("opening the pinned map {path}: {source}")]
    MapOpen {
        path: PathBuf,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("{op} on map {map} failed: {source}")]
    Map {
        op: &'static str,
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error(
        "invalid address or CIDR {input:?}: expected e.g. 192.0.2.7, 198.51.100.0/24 or 2001:db8::/32"
    )]
    InvalidCidr { input: String },
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl FirewallError {
    pub(crate) fn map(op: &'static str, map: &'static str, source: aya::maps::MapError) -> Self {
        FirewallError::Map {
            op,
            map,
            source: Box::new(source),
        }
    }
}

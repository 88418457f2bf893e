//! Share the layout of the kernel telemetry programs (tracepoints) with the node that reads them.
//!
//! # Design
//! The programs read kernel records and structures at offsets they cannot know when compiled
//! (Rust eBPF has no CO-RE relocations): user space reads each tracepoint's record layout from
//! tracefs and each kernel struct's member offsets from the kernel's BTF, and writes them into
//! [`TelemetryConfig`] before attaching anything. Every counter is in a per-CPU array, summed by
//! the reader, so the programs never contend for a cache line.

/// Map names of the telemetry object.
pub mod map_names {
    /// `Array<TelemetryConfig>` with one entry: offsets, the network namespace and the P2P port.
    pub const CONFIG: &str = "TELEMETRY_CONFIG";
    /// `PerCpuArray<u64>` indexed by [`crate::telemetry::drop_index`]: kernel stack drops.
    pub const SKB_DROPS: &str = "SKB_DROPS";
    /// `PerCpuArray<u64>` indexed by [`crate::telemetry::tcp`]: handshake and retransmit counts.
    pub const TCP: &str = "TCP";
    /// `HashMap<HandshakeKey, u64>`: inbound handshakes started and not yet completed, with the
    /// CLOCK_MONOTONIC nanoseconds of their first SYN.
    pub const HANDSHAKES: &str = "HANDSHAKES";
    /// `LruHashMap<u64, u64>`: socket buffer address -> CLOCK_MONOTONIC nanoseconds at which the
    /// stack received it, for P2P-port packets on their way to a socket.
    pub const RX_STAMPS: &str = "RX_STAMPS";
    /// `PerCpuArray<u64>`: the receive-latency histogram, [`crate::telemetry::LATENCY_BUCKETS`]
    /// buckets and then the sum of every sample in nanoseconds.
    pub const RX_LATENCY: &str = "RX_LATENCY";
}

/// The programs of the telemetry object, each with the tracepoint it attaches to.
pub mod programs {
    /// `skb:kfree_skb`: a packet dropped by the kernel stack, with its drop reason.
    pub const SKB_DROPS: (&str, &str, &str) = ("skb_drops", "skb", "kfree_skb");
    /// `net:netif_receive_skb`: a packet enters the stack (after XDP passed it).
    pub const RX: (&str, &str, &str) = ("rx", "net", "netif_receive_skb");
    /// `skb:skb_copy_datagram_iovec`: a packet's data is copied to a reading process.
    pub const RX_COPY: (&str, &str, &str) = ("rx_copy", "skb", "skb_copy_datagram_iovec");
    /// `sock:inet_sock_set_state`: a socket changes TCP state.
    pub const SOCK_STATE: (&str, &str, &str) = ("sock_state", "sock", "inet_sock_set_state");
    /// `tcp:tcp_retransmit_skb`: a TCP segment is sent again.
    pub const RETRANSMIT: (&str, &str, &str) = ("retransmit", "tcp", "tcp_retransmit_skb");
    /// `tcp:tcp_retransmit_synack`: a listener sends a SYN-ACK again.
    pub const RETRANSMIT_SYNACK: (&str, &str, &str) =
        ("retransmit_synack", "tcp", "tcp_retransmit_synack");
    /// Every program, in the order they are attached.
    pub const ALL: [(&str, &str, &str); 6] = [
        SKB_DROPS,
        RX,
        RX_COPY,
        SOCK_STATE,
        RETRANSMIT,
        RETRANSMIT_SYNACK,
    ];
}

/// Slots per port class in [`map_names::SKB_DROPS`]: one per core drop reason code.
pub const DROP_REASON_SLOTS: u32 = 256;
/// The slot of a reason code that does not fit (a subsystem's reason, or a newer kernel's).
pub const DROP_REASON_OTHER: u32 = DROP_REASON_SLOTS - 1;
/// Port classes of a drop: the P2P port, or anything else.
pub const DROP_PORT_CLASSES: u32 = 2;
/// Entries of [`map_names::SKB_DROPS`].
pub const SKB_DROPS_LEN: u32 = DROP_REASON_SLOTS * DROP_PORT_CLASSES;

/// Index of a drop in [`map_names::SKB_DROPS`]: P2P port first, then the rest.
pub const fn drop_index(p2p: bool, reason: u32) -> u32 {
    let slot = if reason < DROP_REASON_OTHER {
        reason
    } else {
        DROP_REASON_OTHER
    };
    if p2p { slot } else { DROP_REASON_SLOTS + slot }
}

/// Indices of [`map_names::TCP`].
pub mod tcp {
    /// Inbound handshakes started: a new SYN to the P2P port reached the stack.
    pub const STARTED: u32 = 0;
    /// Inbound handshakes completed: a socket on the P2P port went SYN_RECV -> ESTABLISHED.
    pub const COMPLETED: u32 = 1;
    /// Inbound handshakes that failed after the SYN_RECV socket existed (-> CLOSE).
    pub const FAILED: u32 = 2;
    /// Inbound handshakes started while [`super::map_names::HANDSHAKES`] was full: counted, not
    /// followed.
    pub const UNTRACKED: u32 = 3;
    /// Segments retransmitted on connections to or from the P2P port.
    pub const RETRANSMIT_SEGMENT: u32 = 4;
    /// SYN-ACKs retransmitted by the P2P listener.
    pub const RETRANSMIT_SYNACK: u32 = 5;
    /// Entries of the map.
    pub const LEN: u32 = 6;
}

/// Most inbound handshakes followed at once; more are counted as untracked.
pub const HANDSHAKES_MAX: u32 = 4096;
/// Most packets stamped on their way to a socket at once (least recently used evicted).
pub const RX_STAMPS_MAX: u32 = 16384;
/// Buckets of the receive-latency histogram: bucket 0 holds samples under 1 µs, bucket `i`
/// samples in [2^(i-1), 2^i) µs, the last one everything from 2^(LATENCY_BUCKETS - 2) µs up.
pub const LATENCY_BUCKETS: u32 = 24;
/// Entries of [`map_names::RX_LATENCY`]: the buckets, then the sum in nanoseconds.
pub const RX_LATENCY_LEN: u32 = LATENCY_BUCKETS + 1;

/// The histogram bucket of a latency in nanoseconds (see [`LATENCY_BUCKETS`]).
pub const fn latency_bucket(ns: u64) -> u32 {
    let mut us = ns / 1000;
    let mut bucket = 0;
    // A bounded loop the verifier unrolls: at most LATENCY_BUCKETS - 1 steps.
    while us > 0 && bucket < LATENCY_BUCKETS - 1 {
        us >>= 1;
        bucket += 1;
    }
    bucket
}

/// An inbound handshake: the remote address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct HandshakeKey {
    /// Remote address: IPv4 in the first 4 bytes (rest zero) or IPv6, network byte order.
    pub addr: [u8; 16],
    /// Remote port, host byte order.
    pub port: u16,
    /// 4 or 6.
    pub family: u16,
}

/// The offset of an optional record field the running kernel does not have.
pub const FIELD_ABSENT: u32 = u32::MAX;

/// Byte offsets of the fields the programs read in each tracepoint's record (from tracefs).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RecordOffsets {
    /// `skb:kfree_skb` `skbaddr`.
    pub kfree_skb_skbaddr: u32,
    /// `skb:kfree_skb` `rx_sk` (the receiving socket, when known), or [`FIELD_ABSENT`].
    pub kfree_skb_rx_sk: u32,
    /// `skb:kfree_skb` `protocol` (ethertype, host byte order).
    pub kfree_skb_protocol: u32,
    /// `skb:kfree_skb` `reason`.
    pub kfree_skb_reason: u32,
    /// `skb:kfree_skb` `location` (the address of the code that freed the packet).
    pub kfree_skb_location: u32,
    /// `tcp:tcp_retransmit_skb` `err` (non-zero: the retransmission failed), or
    /// [`FIELD_ABSENT`] on kernels without it.
    pub retransmit_err: u32,
    /// `net:netif_receive_skb` `skbaddr`.
    pub rx_skbaddr: u32,
    /// `skb:skb_copy_datagram_iovec` `skbaddr`.
    pub copy_skbaddr: u32,
    /// `sock:inet_sock_set_state` `skaddr`.
    pub state_skaddr: u32,
    /// `sock:inet_sock_set_state` `oldstate`.
    pub state_oldstate: u32,
    /// `sock:inet_sock_set_state` `newstate`.
    pub state_newstate: u32,
    /// `sock:inet_sock_set_state` `sport` (local port, host byte order).
    pub state_sport: u32,
    /// `sock:inet_sock_set_state` `dport` (remote port, host byte order).
    pub state_dport: u32,
    /// `sock:inet_sock_set_state` `family`.
    pub state_family: u32,
    /// `sock:inet_sock_set_state` `protocol`.
    pub state_protocol: u32,
    /// `sock:inet_sock_set_state` `daddr` (remote IPv4 address).
    pub state_daddr: u32,
    /// `sock:inet_sock_set_state` `daddr_v6` (remote IPv6 address).
    pub state_daddr_v6: u32,
    /// `tcp:tcp_retransmit_skb` `skaddr`.
    pub retransmit_skaddr: u32,
    /// `tcp:tcp_retransmit_skb` `sport`.
    pub retransmit_sport: u32,
    /// `tcp:tcp_retransmit_skb` `dport`.
    pub retransmit_dport: u32,
    /// `tcp:tcp_retransmit_synack` `skaddr` (the listener).
    pub synack_skaddr: u32,
    /// `tcp:tcp_retransmit_synack` `sport`.
    pub synack_sport: u32,
}

/// Byte offsets of the kernel struct members the programs read (from BTF).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `sk_buff.head`: start of the buffer.
    pub skb_head: u32,
    /// `sk_buff.data`: the current layer's header.
    pub skb_data: u32,
    /// `sk_buff.network_header`: offset of the IP header from `head`.
    pub skb_network_header: u32,
    /// `sk_buff.protocol`: ethertype, network byte order.
    pub skb_protocol: u32,
    /// `sk_buff.dev`: the device it arrived on.
    pub skb_dev: u32,
    /// `sk_buff.sk`: the owning socket.
    pub skb_sk: u32,
    /// `net_device.nd_net.net`: the device's network namespace.
    pub dev_net: u32,
    /// `sock.__sk_common.skc_net.net`: the socket's network namespace.
    pub sock_net: u32,
    /// `sock.__sk_common.skc_num`: the socket's local port, host byte order.
    pub sock_num: u32,
    /// `net.ns.inum`: the namespace's inode number (as in `/proc/<pid>/ns/net`).
    pub net_inum: u32,
}

/// Kernel functions whose packet frees are XDP drops (generic XDP, and veth running XDP on
/// socket buffers), not the stack's: `skb:kfree_skb` events from inside them are not counted.
pub const XDP_DROP_SITES: [&str; 4] = [
    "do_xdp_generic",
    "bpf_prog_run_generic_xdp",
    "veth_xdp_rcv_skb",
    "veth_xdp_rcv_one",
];

/// A kernel code address range `[start, end)`; all zero when unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CodeRange {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

/// Everything the programs need to know, written by user space before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    /// Inode of the node's network namespace: everything else on the host is ignored.
    pub netns_inode: u32,
    /// The P2P port, host byte order.
    pub p2p_port: u16,
    /// Explicit padding; always 0.
    pub _pad: u16,
    /// Tracepoint record offsets.
    pub records: RecordOffsets,
    /// Kernel struct offsets.
    pub kernel: KernelOffsets,
    /// Where the functions of [`XDP_DROP_SITES`] live (from `/proc/kallsyms`).
    pub xdp_drop_sites: [CodeRange; XDP_DROP_SITES.len()],
}

//! Count what the kernel stack does with the node's traffic after XDP passed it: drops by
//! reason, inbound TCP handshakes on the P2P port, retransmissions, and the time from the stack
//! receiving a P2P packet to the node reading it. Tracepoint programs, attached one by one.
//!
//! # Design
//! Tracepoints fire for every network namespace of the host, so each program first checks that
//! the packet's device or the socket belongs to the node's namespace (`net.ns.inum`). Record
//! fields and kernel struct members are read with `bpf_probe_read_kernel` at the offsets user
//! space wrote into `TELEMETRY_CONFIG` (see `firewall_common::telemetry`); a read that fails
//! skips the event. Counters are per-CPU.
//!
//! # Invariants
//! No program writes anything but its own maps, and each returns 0 on every path.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use firewall_common::telemetry::{
    FIELD_ABSENT, HANDSHAKES_MAX, HandshakeKey, LATENCY_BUCKETS, RX_LATENCY_LEN, RX_STAMPS_MAX,
    SKB_DROPS_LEN, TelemetryConfig, drop_index, latency_bucket, tcp,
};

const BPF_NOEXIST: u64 = 1;
const EEXIST: i32 = 17;

#[map]
static TELEMETRY_CONFIG: Array<TelemetryConfig> = Array::with_max_entries(1, 0);
#[map]
static SKB_DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SKB_DROPS_LEN, 0);
#[map]
static TCP: PerCpuArray<u64> = PerCpuArray::with_max_entries(tcp::LEN, 0);
#[map]
static HANDSHAKES: HashMap<HandshakeKey, u64> = HashMap::with_max_entries(HANDSHAKES_MAX, 0);
#[map]
static RX_STAMPS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(RX_STAMPS_MAX, 0);
#[map]
static RX_LATENCY: PerCpuArray<u64> = PerCpuArray::with_max_entries(RX_LATENCY_LEN, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const IPV6_HLEN: u64 = 40;
/// `sk_buff.network_header` when no network header was set (`(u16)~0`).
const HEADER_UNSET: u16 = 0xffff;
/// Bytes of the transport header read at once: both ports and, for TCP, the flags (byte 13).
const L4_READ: usize = 16;

/// Reads a `T` from kernel memory at `base + offset`.
#[inline(always)]
fn kread<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address itself and fails on a bad one; nothing
    // is dereferenced directly.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// Reads a `T` from the tracepoint's record at `offset`.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    // SAFETY: read_at goes through bpf_probe_read_kernel, which fails safely past the record.
    unsafe { ctx.read_at::<T>(offset as usize).ok() }
}

#[inline(always)]
fn monotonic_ns() -> u64 {
    // SAFETY: the helper takes no arguments and only reads the clock.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn config() -> Option<&'static TelemetryConfig> {
    TELEMETRY_CONFIG.get(0)
}

#[inline(always)]
fn count(map: &PerCpuArray<u64>, index: u32, by: u64) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by programs on this CPU, one at a time.
        unsafe { *slot += by };
    }
}

/// The network namespace inode of a `struct net *`.
#[inline(always)]
fn net_inum(cfg: &TelemetryConfig, net: u64) -> Option<u32> {
    kread::<u32>(net, cfg.kernel.net_inum)
}

#[inline(always)]
fn dev_in_netns(cfg: &TelemetryConfig, dev: u64) -> bool {
    kread::<u64>(dev, cfg.kernel.dev_net).and_then(|net| net_inum(cfg, net))
        == Some(cfg.netns_inode)
}

#[inline(always)]
fn sock_in_netns(cfg: &TelemetryConfig, sk: u64) -> bool {
    kread::<u64>(sk, cfg.kernel.sock_net).and_then(|net| net_inum(cfg, net))
        == Some(cfg.netns_inode)
}

/// What the programs need of a packet's IP and transport headers.
struct Packet {
    /// Source address (IPv4 in the first 4 bytes).
    src: [u8; 16],
    family: u16,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    /// A TCP segment carrying data (not a bare SYN, ACK or FIN).
    tcp_payload: bool,
}

/// Parses the headers at `ip` (a kernel address), an IPv4 or IPv6 header per `ethertype`.
/// IPv6 extension headers and IPv4 fragments after the first are not followed: no ports.
#[inline(always)]
fn parse(ip: u64, ethertype: u16) -> Option<Packet> {
    let mut src = [0u8; 16];
    let (family, protocol, l4, l4_len) = match ethertype {
        ETH_P_IP => {
            let head = kread::<[u8; 20]>(ip, 0)?;
            if head[0] >> 4 != 4 {
                return None;
            }
            let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
            if fragment_offset != 0 {
                return None;
            }
            src[..4].copy_from_slice(&head[12..16]);
            let ihl = ((head[0] & 0x0f) as u64) * 4;
            let total = u16::from_be_bytes([head[2], head[3]]) as u64;
            (4, head[9], ip + ihl, total.saturating_sub(ihl))
        }
        ETH_P_IPV6 => {
            let head = kread::<[u8; 8]>(ip, 0)?;
            src = kread::<[u8; 16]>(ip, 8)?;
            let payload = u16::from_be_bytes([head[4], head[5]]) as u64;
            (6, head[6], ip + IPV6_HLEN, payload)
        }
        _ => return None,
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Some(Packet {
            src,
            family,
            protocol,
            src_port: 0,
            dst_port: 0,
            tcp_flags: 0,
            tcp_payload: false,
        });
    }
    let l4 = kread::<[u8; L4_READ]>(l4, 0)?;
    let tcp = protocol == IPPROTO_TCP;
    let tcp_header = ((l4[12] >> 4) as u64) * 4;
    Some(Packet {
        src,
        family,
        protocol,
        src_port: u16::from_be_bytes([l4[0], l4[1]]),
        dst_port: u16::from_be_bytes([l4[2], l4[3]]),
        tcp_flags: if tcp { l4[13] } else { 0 },
        tcp_payload: tcp && l4_len > tcp_header,
    })
}

#[inline(always)]
fn is_p2p(cfg: &TelemetryConfig, packet: &Packet) -> bool {
    (packet.protocol == IPPROTO_TCP || packet.protocol == IPPROTO_UDP)
        && packet.dst_port == cfg.p2p_port
}

/// `skb:kfree_skb`: a packet the stack dropped, by reason and port class.
#[tracepoint]
pub fn skb_drops(ctx: TracePointContext) -> u32 {
    skb_drops_in(&ctx);
    0
}

#[inline(always)]
fn skb_drops_in(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let r = &cfg.records;
    // XDP's own drops (generic mode, veth) free a socket buffer too: they are the filter's,
    // counted by it, not the stack's. Checked first: it is the cheapest test, and a flood the
    // filter drops makes most of these events.
    let location = field::<u64>(ctx, r.kfree_skb_location)?;
    for site in cfg.xdp_drop_sites.iter() {
        if location >= site.start && location < site.end {
            return None;
        }
    }
    let skb = field::<u64>(ctx, r.kfree_skb_skbaddr)?;
    // The namespace of the receiving socket when the kernel names one, else of the device the
    // packet arrived on, else of the socket that owns it (a drop on the way out).
    let rx_sk = if r.kfree_skb_rx_sk == FIELD_ABSENT {
        0
    } else {
        field::<u64>(ctx, r.kfree_skb_rx_sk).unwrap_or(0)
    };
    let dev = kread::<u64>(skb, cfg.kernel.skb_dev).unwrap_or(0);
    let ours = if rx_sk != 0 {
        sock_in_netns(cfg, rx_sk)
    } else if dev != 0 {
        dev_in_netns(cfg, dev)
    } else {
        let sk = kread::<u64>(skb, cfg.kernel.skb_sk).unwrap_or(0);
        sk != 0 && sock_in_netns(cfg, sk)
    };
    if !ours {
        return None;
    }
    let reason = field::<u32>(ctx, r.kfree_skb_reason)?;
    let ethertype = field::<u16>(ctx, r.kfree_skb_protocol).unwrap_or(0);
    let head = kread::<u64>(skb, cfg.kernel.skb_head).unwrap_or(0);
    let network = kread::<u16>(skb, cfg.kernel.skb_network_header).unwrap_or(HEADER_UNSET);
    let p2p = head != 0
        && network != HEADER_UNSET
        && parse(head + network as u64, ethertype).is_some_and(|p| is_p2p(cfg, &p));
    count(&SKB_DROPS, drop_index(p2p, reason), 1);
    Some(())
}

/// `net:netif_receive_skb`: stamps TCP segments with data to the P2P port for the latency
/// histogram and starts following each new inbound handshake (a bare SYN to the P2P port).
#[tracepoint]
pub fn rx(ctx: TracePointContext) -> u32 {
    rx_in(&ctx);
    0
}

#[inline(always)]
fn rx_in(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let skb = field::<u64>(ctx, cfg.records.rx_skbaddr)?;
    let dev = kread::<u64>(skb, cfg.kernel.skb_dev)?;
    if !dev_in_netns(cfg, dev) {
        return None;
    }
    // The tracepoint fires before the stack resets the network header: `data` points at it.
    let data = kread::<u64>(skb, cfg.kernel.skb_data)?;
    let ethertype = u16::from_be(kread::<u16>(skb, cfg.kernel.skb_protocol)?);
    let packet = parse(data, ethertype)?;
    if !is_p2p(cfg, &packet) {
        return None;
    }
    let now = monotonic_ns();
    if packet.tcp_payload {
        // Only data is ever copied to a reader; a failed insert loses one latency sample.
        let _ = RX_STAMPS.insert(skb, now, 0);
    }
    if packet.protocol == IPPROTO_TCP
        && packet.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
    {
        let key = HandshakeKey {
            addr: packet.src,
            port: packet.src_port,
            family: packet.family,
        };
        match HANDSHAKES.insert(key, now, BPF_NOEXIST) {
            Ok(()) => count(&TCP, tcp::STARTED, 1),
            // EEXIST: a retransmitted SYN of a handshake already followed.
            Err(e) if e == -EEXIST => {}
            // The table is full: counted, not followed.
            Err(_) => {
                count(&TCP, tcp::STARTED, 1);
                count(&TCP, tcp::UNTRACKED, 1);
            }
        }
    }
    Some(())
}

/// `skb:skb_copy_datagram_iovec`: a stamped packet reaches a reader; records the latency.
#[tracepoint]
pub fn rx_copy(ctx: TracePointContext) -> u32 {
    rx_copy_in(&ctx);
    0
}

#[inline(always)]
fn rx_copy_in(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let skb = field::<u64>(ctx, cfg.records.copy_skbaddr)?;
    // SAFETY: the value is copied out at once; the entry may be removed concurrently, which
    // at worst records one sample twice.
    let stamped = unsafe { *RX_STAMPS.get(skb)? };
    let _ = RX_STAMPS.remove(skb);
    // A stale stamp (a buffer merged into another, its address reused, perhaps in another
    // namespace) must not count: the reading socket must be ours and on the P2P port.
    let sk = kread::<u64>(skb, cfg.kernel.skb_sk)?;
    if sk == 0 || kread::<u16>(sk, cfg.kernel.sock_num)? != cfg.p2p_port || !sock_in_netns(cfg, sk)
    {
        return None;
    }
    let ns = monotonic_ns().saturating_sub(stamped);
    count(&RX_LATENCY, latency_bucket(ns), 1);
    count(&RX_LATENCY, LATENCY_BUCKETS, ns);
    Some(())
}

/// `sock:inet_sock_set_state`: inbound handshakes on the P2P port completing or failing.
#[tracepoint]
pub fn sock_state(ctx: TracePointContext) -> u32 {
    sock_state_in(&ctx);
    0
}

#[inline(always)]
fn sock_state_in(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let r = &cfg.records;
    if field::<u16>(ctx, r.state_protocol)? != IPPROTO_TCP as u16
        || field::<u16>(ctx, r.state_sport)? != cfg.p2p_port
        || field::<i32>(ctx, r.state_oldstate)? != TCP_SYN_RECV
    {
        return None;
    }
    let outcome = match field::<i32>(ctx, r.state_newstate)? {
        TCP_ESTABLISHED => tcp::COMPLETED,
        TCP_CLOSE => tcp::FAILED,
        _ => return None,
    };
    if !sock_in_netns(cfg, field::<u64>(ctx, r.state_skaddr)?) {
        return None;
    }
    let family = field::<u16>(ctx, r.state_family)?;
    let addr = match family {
        AF_INET => {
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, r.state_daddr)?);
            addr
        }
        AF_INET6 => field::<[u8; 16]>(ctx, r.state_daddr_v6)?,
        _ => return None,
    };
    // A dual-stack listener reports an IPv4 peer as ::ffff:a.b.c.d; the SYN was IPv4.
    let v4_mapped = family == AF_INET6
        && addr[..10].iter().all(|b| *b == 0)
        && addr[10] == 0xff
        && addr[11] == 0xff;
    let (addr, family) = if v4_mapped {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&addr[12..]);
        (v4, 4)
    } else if family == AF_INET {
        (addr, 4)
    } else {
        (addr, 6)
    };
    let key = HandshakeKey {
        addr,
        port: field::<u16>(ctx, r.state_dport)?,
        family,
    };
    // Absent when it started while the table was full, or was already swept as abandoned.
    let _ = HANDSHAKES.remove(key);
    count(&TCP, outcome, 1);
    Some(())
}

/// `tcp:tcp_retransmit_skb`: a segment sent again on a connection to or from the P2P port.
#[tracepoint]
pub fn retransmit(ctx: TracePointContext) -> u32 {
    retransmit_in(&ctx);
    0
}

#[inline(always)]
fn retransmit_in(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let r = &cfg.records;
    let sport = field::<u16>(ctx, r.retransmit_sport)?;
    let dport = field::<u16>(ctx, r.retransmit_dport)?;
    if sport != cfg.p2p_port && dport != cfg.p2p_port {
        return None;
    }
    // A failed attempt sent nothing.
    if r.retransmit_err != FIELD_ABSENT && field::<i32>(ctx, r.retransmit_err)? != 0 {
        return None;
    }
    if !sock_in_netns(cfg, field::<u64>(ctx, r.retransmit_skaddr)?) {
        return None;
    }
    count(&TCP, tcp::RETRANSMIT_SEGMENT, 1);
    Some(())
}

/// `tcp:tcp_retransmit_synack`: the P2P listener sends a SYN-ACK again (no ACK came back).
#[tracepoint]
pub fn retransmit_synack(ctx: TracePointContext) -> u32 {
    retransmit_synack_in(&ctx);
    0
}

#[inline(always)]
fn retransmit_synack_in(ctx: &TracePointContext) -> Option<()> {
    let cfg = config()?;
    let r = &cfg.records;
    if field::<u16>(ctx, r.synack_sport)? != cfg.p2p_port {
        return None;
    }
    if !sock_in_netns(cfg, field::<u64>(ctx, r.synack_skaddr)?) {
        return None;
    }
    count(&TCP, tcp::RETRANSMIT_SYNACK, 1);
    Some(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! Filter every received frame in the driver: allowlist, blocklist, rate limits, malformed
//! headers, fragments and undersized QUIC Initials, with a counter on every exit.
//!
//! # Design
//! `firewall` is a thin entry; `classify` parses and decides, returning an [`Outcome`] instead of
//! an action; `finish` is the one place that turns an outcome into an action, applies monitor
//! mode, counts, and samples drop events. No path returns without passing through `finish`,
//! except the never-taken one where the CONFIG array has no entry 0.
//!
//! # Invariants
//! Every packet access goes through [`Frame::read`], which checks the bounds against
//! `data_end` first. Offsets are bounded scalars (VLAN count, IHL, a bounded walk of IPv6
//! extension headers), so the verifier can prove each access. The verifier's work is kept far
//! below its 1M-instruction limit (`tests/kernel.rs` holds it under 250k): avoid constants
//! that differ per path where an unknown value would do, and avoid `memcpy` of packet bytes
//! (read fields, not whole headers).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key as LpmKey},
    programs::XdpContext,
};
use firewall_common::{
    AllowEntry, BlockEntry, Config, Counter, DropEvent, QUIC_MIN_INITIAL_BYTES, RateState, Reason,
    STATS_LEN, TokenBucket, Verdict, limits, port_flags, rate_key_v4, rate_key_v6, stats_index,
};

const BPF_F_NO_PREALLOC: u32 = 1;

#[map]
static CONFIG: Array<Config> = Array::pinned(1, 0);
#[map]
static PORTS: Array<u32> = Array::pinned(limits::PORTS_LEN, 0);
#[map]
static ALLOW_V4: LpmTrie<[u8; 4], AllowEntry> = LpmTrie::pinned(limits::ALLOW_V4_MAX, 0);
#[map]
static ALLOW_V6: LpmTrie<[u8; 16], AllowEntry> = LpmTrie::pinned(limits::ALLOW_V6_MAX, 0);
#[map]
static BLOCK_V4: HashMap<[u8; 4], BlockEntry> =
    HashMap::pinned(limits::BLOCK_V4_MAX, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_V6: HashMap<[u8; 16], BlockEntry> =
    HashMap::pinned(limits::BLOCK_V6_MAX, BPF_F_NO_PREALLOC);
#[map]
static BLOCK_NET_V4: LpmTrie<[u8; 4], BlockEntry> = LpmTrie::pinned(limits::BLOCK_NET_V4_MAX, 0);
#[map]
static BLOCK_NET_V6: LpmTrie<[u8; 16], BlockEntry> = LpmTrie::pinned(limits::BLOCK_NET_V6_MAX, 0);
#[map]
static RATE: LruHashMap<[u8; 16], RateState> = LruHashMap::pinned(limits::RATE_MAX, 0);
#[map]
static STATS: PerCpuArray<Counter> = PerCpuArray::pinned(STATS_LEN, 0);
#[map]
static EVENTS: RingBuf = RingBuf::pinned(limits::EVENTS_BYTES, 0);
#[map]
static EVENT_BUDGET: PerCpuArray<TokenBucket> = PerCpuArray::pinned(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const VLAN_HLEN: usize = 4;
const VLAN_TAGS_MAX: usize = 2;
const IPV4_HLEN_MIN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;
const TCP_HLEN_MIN: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const UDP_HLEN: usize = 8;
const QUIC_V1: u32 = 1;
const QUIC_V2: u32 = 0x6b33_43cf;

#[xdp]
pub fn firewall(ctx: XdpContext) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    // An array map always holds its entry 0 (zeros until written), so this exit is never
    // taken. A default config here instead would double the paths the verifier explores (its
    // constants make every later branch known), which costs far more than it protects.
    let Some(config) = CONFIG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let bytes = frame.len() as u64;
    let outcome = classify(&frame, config);
    finish(bytes, config, &outcome)
}

/// Bounds-checked view of the frame.
struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    /// Reads a `T` at `offset`, or `None` when it would cross the end of the frame.
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let at = self.start + offset;
        if at + core::mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: the range [at, at + size_of::<T>()) lies inside the frame checked above, and
        // T is a plain integer or byte array read without alignment assumptions.
        Some(unsafe { core::ptr::read_unaligned(at as *const T) })
    }

    #[inline(always)]
    fn be16_at(&self, offset: usize) -> Option<u16> {
        self.read::<[u8; 2]>(offset).map(u16::from_be_bytes)
    }

    /// True when the frame holds at least `len` bytes. Written as a pointer comparison, which
    /// the verifier tracks; a comparison of lengths would not teach it anything.
    #[inline(always)]
    fn has(&self, len: usize) -> bool {
        self.start + len <= self.end
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// What the program decided, before monitor mode and counting.
struct Outcome {
    reason: Reason,
    drop: bool,
    family: u8,
    protocol: u8,
    dst_port: u16,
    ban_reason: u32,
    addr: [u64; 2],
}

impl Outcome {
    #[inline(always)]
    const fn pass(reason: Reason) -> Outcome {
        Outcome {
            reason,
            drop: false,
            family: 0,
            protocol: 0,
            dst_port: 0,
            ban_reason: 0,
            addr: [0; 2],
        }
    }
}

/// The source address and the facts the IP layer yields.
struct Ip {
    family: u8,
    /// Source address bytes in packet order, kept as two u64 so copies stay aligned moves:
    /// IPv4 in the first four bytes.
    addr: [u64; 2],
    protocol: u8,
    /// Offset of the transport header.
    l4: usize,
    /// Offset one past the IP payload (from the IP length field).
    ip_end: usize,
    fragment: bool,
    /// A non-first fragment carries no transport header.
    later_fragment: bool,
}

impl Ip {
    #[inline(always)]
    fn v4(&self) -> [u8; 4] {
        (self.addr[0] as u32).to_ne_bytes()
    }

    #[inline(always)]
    fn v6(&self) -> [u8; 16] {
        let (a, b) = (self.addr[0].to_ne_bytes(), self.addr[1].to_ne_bytes());
        [
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5],
            b[6], b[7],
        ]
    }
}

#[inline(always)]
fn classify(frame: &Frame, config: &Config) -> Outcome {
    let ip = match parse_ip(frame) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Outcome::pass(Reason::NonIp),
        Err(()) => {
            let mut out = Outcome::pass(Reason::Malformed);
            out.drop = true;
            return out;
        }
    };
    let mut out = Outcome {
        reason: Reason::NoMatch,
        drop: false,
        family: ip.family,
        protocol: ip.protocol,
        dst_port: 0,
        ban_reason: 0,
        addr: ip.addr,
    };
    // The transport header is read before the rules so that drop events carry the port; a
    // malformed one is judged only after the allow and block lists, as the model does.
    let l4 = if ip.later_fragment {
        Ok((0, false, 0))
    } else {
        parse_l4(frame, &ip)
    };
    if let Ok((dst_port, _, _)) = l4 {
        out.dst_port = dst_port;
    }

    if is_allowlisted(&ip) {
        out.reason = Reason::Allowlisted;
        return out;
    }
    if let Some(entry) = blocklist_entry(&ip) {
        out.reason = Reason::Blocklisted;
        out.ban_reason = entry.reason;
        out.drop = true;
        return out;
    }
    if ip.fragment && config.drops_fragments() {
        out.reason = Reason::Fragment;
        out.drop = true;
        return out;
    }
    if ip.later_fragment {
        return out;
    }

    let (dst_port, syn, udp_payload) = match l4 {
        Ok(l4) => l4,
        Err(()) => {
            out.reason = Reason::Malformed;
            out.drop = true;
            return out;
        }
    };
    if ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP {
        return out;
    }
    let flags = match PORTS.get(dst_port as u32) {
        Some(flags) => *flags,
        None => 0,
    };
    if flags == 0 {
        return out;
    }
    if ip.protocol == IPPROTO_UDP
        && flags & port_flags::QUIC != 0
        && !ip.fragment
        && is_short_quic_initial(frame, ip.l4 + UDP_HLEN, udp_payload)
    {
        out.reason = Reason::QuicShortInitial;
        out.drop = true;
        return out;
    }
    let protected = (ip.protocol == IPPROTO_TCP && flags & port_flags::TCP != 0)
        || (ip.protocol == IPPROTO_UDP && flags & port_flags::UDP != 0);
    if protected && !within_budget(&ip, syn, config) {
        out.reason = Reason::RateLimited;
        out.drop = true;
    }
    out
}

/// Parses Ethernet, up to two VLAN tags and the IP header. `Ok(None)` for non-IP frames,
/// `Err` for truncated or inconsistent headers.
#[inline(always)]
fn parse_ip(frame: &Frame) -> Result<Option<Ip>, ()> {
    let mut ethertype = frame.be16_at(ETH_HLEN - 2).ok_or(())?;
    let mut l3 = ETH_HLEN;
    for _ in 0..VLAN_TAGS_MAX {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = frame.be16_at(l3 + 2).ok_or(())?;
        l3 += VLAN_HLEN;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(frame, l3).map(Some),
        ETH_P_IPV6 => parse_ipv6(frame, l3).map(Some),
        _ => Ok(None),
    }
}

#[inline(always)]
fn parse_ipv4(frame: &Frame, l3: usize) -> Result<Ip, ()> {
    if !frame.has(l3 + IPV4_HLEN_MIN) {
        return Err(());
    }
    let version_ihl = frame.read::<u8>(l3).ok_or(())?;
    if version_ihl >> 4 != 4 {
        return Err(());
    }
    let header_len = ((version_ihl & 0x0f) as usize) * 4;
    let total_len = frame.be16_at(l3 + 2).ok_or(())? as usize;
    if header_len < IPV4_HLEN_MIN || total_len < header_len || !frame.has(l3 + total_len) {
        return Err(());
    }
    let frag = frame.be16_at(l3 + 6).ok_or(())?;
    let protocol = frame.read::<u8>(l3 + 9).ok_or(())?;
    let src = frame.read::<[u8; 4]>(l3 + 12).ok_or(())?;
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    Ok(Ip {
        family: 4,
        addr: [u32::from_ne_bytes(src) as u64, 0],
        protocol,
        l4: l3 + header_len,
        ip_end: l3 + total_len,
        fragment: more || offset != 0,
        later_fragment: offset != 0,
    })
}

#[inline(always)]
fn parse_ipv6(frame: &Frame, l3: usize) -> Result<Ip, ()> {
    if !frame.has(l3 + IPV6_HLEN) {
        return Err(());
    }
    if frame.read::<u8>(l3).ok_or(())? >> 4 != 6 {
        return Err(());
    }
    let payload_len = frame.be16_at(l3 + 4).ok_or(())? as usize;
    let ip_end = l3 + IPV6_HLEN + payload_len;
    if !frame.has(ip_end) {
        return Err(());
    }
    let addr = [
        frame.read::<u64>(l3 + 8).ok_or(())?,
        frame.read::<u64>(l3 + 16).ok_or(())?,
    ];
    let mut next = frame.read::<u8>(l3 + 6).ok_or(())?;
    let mut off = l3 + IPV6_HLEN;
    let mut fragment = false;
    let mut later_fragment = false;
    for _ in 0..limits::IPV6_EXT_HEADERS_MAX {
        let len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let ext: [u8; 2] = frame.read(off).ok_or(())?;
                next = ext[0];
                (ext[1] as usize + 1) * 8
            }
            IPV6_AH => {
                let ext: [u8; 2] = frame.read(off).ok_or(())?;
                next = ext[0];
                (ext[1] as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                let ext: [u8; 4] = frame.read(off).ok_or(())?;
                next = ext[0];
                fragment = true;
                later_fragment = u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0;
                8
            }
            _ => break,
        };
        off += len;
        if off > ip_end {
            return Err(());
        }
    }
    if matches!(
        next,
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT
    ) {
        // More extension headers than the walk allows: the transport header cannot be found.
        return Err(());
    }
    Ok(Ip {
        family: 6,
        addr,
        protocol: next,
        l4: off,
        ip_end,
        fragment,
        later_fragment,
    })
}

/// Reads the transport header: (destination port, TCP SYN without ACK, UDP payload length).
/// Protocols without ports yield port 0.
#[inline(always)]
fn parse_l4(frame: &Frame, ip: &Ip) -> Result<(u16, bool, usize), ()> {
    match ip.protocol {
        IPPROTO_TCP => {
            let tcp: [u8; TCP_HLEN_MIN] = frame.read(ip.l4).ok_or(())?;
            let header_len = ((tcp[12] >> 4) as usize) * 4;
            if ip.l4 + TCP_HLEN_MIN > ip.ip_end
                || header_len < TCP_HLEN_MIN
                || (!ip.fragment && ip.l4 + header_len > ip.ip_end)
            {
                return Err(());
            }
            let syn = tcp[13] & (TCP_SYN | TCP_ACK) == TCP_SYN;
            Ok((u16::from_be_bytes([tcp[2], tcp[3]]), syn, 0))
        }
        IPPROTO_UDP => {
            let udp: [u8; UDP_HLEN] = frame.read(ip.l4).ok_or(())?;
            if ip.l4 + UDP_HLEN > ip.ip_end {
                return Err(());
            }
            let udp_len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
            if !ip.fragment && (udp_len < UDP_HLEN || ip.l4 + udp_len > ip.ip_end) {
                return Err(());
            }
            Ok((
                u16::from_be_bytes([udp[2], udp[3]]),
                false,
                udp_len.saturating_sub(UDP_HLEN),
            ))
        }
        _ => Ok((0, false, 0)),
    }
}

/// True for a QUIC v1/v2 long-header Initial whose UDP payload is under RFC 9000's minimum.
#[inline(always)]
fn is_short_quic_initial(frame: &Frame, payload: usize, payload_len: usize) -> bool {
    if payload_len >= QUIC_MIN_INITIAL_BYTES {
        return false;
    }
    let Some(head) = frame.read::<[u8; 5]>(payload) else {
        return false;
    };
    if payload_len < 5 || head[0] & 0x80 == 0 {
        return false;
    }
    let version = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    let packet_type = (head[0] >> 4) & 0x03;
    (version == QUIC_V1 && packet_type == 0) || (version == QUIC_V2 && packet_type == 1)
}

#[inline(always)]
fn is_allowlisted(ip: &Ip) -> bool {
    if ip.family == 4 {
        ALLOW_V4.get(LpmKey::new(32, ip.v4())).is_some()
    } else {
        ALLOW_V6.get(LpmKey::new(128, ip.v6())).is_some()
    }
}

/// The unexpired blocklist entry for the source: the exact address first, then the longest
/// matching prefix.
#[inline(always)]
fn blocklist_entry(ip: &Ip) -> Option<BlockEntry> {
    let exact = if ip.family == 4 {
        // SAFETY: the value is copied out at once; a concurrent delete frees it only after an
        // RCU grace period, which cannot end while this program runs.
        unsafe { BLOCK_V4.get(ip.v4()) }.copied()
    } else {
        // SAFETY: as above.
        unsafe { BLOCK_V6.get(ip.v6()) }.copied()
    };
    let mut now = 0;
    if let Some(entry) = exact {
        // SAFETY: a helper without arguments or side effects.
        now = unsafe { bpf_ktime_get_coarse_ns() };
        if entry.is_active(now) {
            return Some(entry);
        }
    }
    let prefix = if ip.family == 4 {
        BLOCK_NET_V4.get(LpmKey::new(32, ip.v4())).copied()
    } else {
        BLOCK_NET_V6.get(LpmKey::new(128, ip.v6())).copied()
    };
    let entry = prefix?;
    if now == 0 {
        // SAFETY: as above.
        now = unsafe { bpf_ktime_get_coarse_ns() };
    }
    if entry.is_active(now) {
        Some(entry)
    } else {
        None
    }
}

/// Spends the source's packet token (and SYN token for a new TCP connection). False when over
/// budget.
#[inline(always)]
fn within_budget(ip: &Ip, syn: bool, config: &Config) -> bool {
    if config.pkt_rate_pps == 0 && (config.syn_rate_pps == 0 || !syn) {
        return true;
    }
    let key = if ip.family == 4 {
        rate_key_v4(ip.v4())
    } else {
        rate_key_v6(ip.v6())
    };
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let state = match RATE.get_ptr_mut(key) {
        Some(state) => state,
        None => {
            let fresh = RateState {
                packets: TokenBucket::full(now, config.pkt_burst),
                syns: TokenBucket::full(now, config.syn_burst),
            };
            // A full LRU map evicts its least recently used entry, so insert cannot fail for
            // lack of room; if it fails anyway, the packet is not charged.
            if RATE.insert(key, fresh, 0).is_err() {
                return true;
            }
            match RATE.get_ptr_mut(key) {
                Some(state) => state,
                None => return true,
            }
        }
    };
    // SAFETY: the pointer comes from a successful lookup in a map of RateState values and is
    // valid for the duration of this program run.
    let state = unsafe { &mut *state };
    if !state
        .packets
        .take(now, config.pkt_rate_pps, config.pkt_burst)
    {
        return false;
    }
    !syn || state.syns.take(now, config.syn_rate_pps, config.syn_burst)
}

/// Applies monitor mode, counts the packet under its verdict and reason, samples drop events,
/// and returns the XDP action. The only exit of the program.
#[inline(always)]
fn finish(bytes: u64, config: &Config, outcome: &Outcome) -> u32 {
    let verdict = if !outcome.drop {
        Verdict::Pass
    } else if config.is_monitor() {
        Verdict::WouldDrop
    } else {
        Verdict::Drop
    };
    if let Some(counter) = STATS.get_ptr_mut(stats_index(verdict, outcome.reason)) {
        // SAFETY: per-CPU slot of a map of Counter values; no other program run touches it
        // while this one runs on this CPU.
        let counter = unsafe { &mut *counter };
        counter.packets += 1;
        counter.bytes += bytes;
    }
    if outcome.drop {
        sample_event(config, verdict, outcome);
    }
    match verdict {
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Pass | Verdict::WouldDrop => xdp_action::XDP_PASS,
    }
}

/// Sends a drop event to user space if this CPU's event budget allows it.
#[inline(always)]
fn sample_event(config: &Config, verdict: Verdict, outcome: &Outcome) {
    if config.events_per_sec == 0 {
        return;
    }
    let Some(budget) = EVENT_BUDGET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: per-CPU slot of a map of TokenBucket values, used only by this CPU.
    let budget = unsafe { &mut *budget };
    if !budget.take(now, config.events_per_sec, config.events_burst) {
        return;
    }
    let event = DropEvent {
        timestamp_ns: now,
        // SAFETY: [u64; 2] and [u8; 16] have the same size and every bit pattern is valid.
        addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(outcome.addr) },
        reason: outcome.reason as u32,
        ban_reason: outcome.ban_reason,
        dst_port: outcome.dst_port,
        family: outcome.family,
        protocol: outcome.protocol,
        verdict: verdict as u8,
        _pad0: 0,
        _pad1: 0,
    };
    // A full ring loses the event; the counters still have the packet.
    let _ = EVENTS.output::<DropEvent>(&event, 0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

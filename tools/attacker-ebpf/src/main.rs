//! The attacker's XDP traffic generator: next source per frame, then redirect out of the veth.
//!
//! Run by BPF_PROG_TEST_RUN in live-frames mode, it gives each copy of the template frame the
//! next source address (and port) and redirects it out of the attacker's veth, so the peer
//! receives xdp_frames through `ndo_xdp_xmit`, without an skb.
//!
//! # Contract with user space (`tools/attacker/src/xdp.rs`)
//! - `TARGET[0]`: the ifindex of the interface to send through.
//! - `SOURCES[0..n]`: the source addresses, 16 bytes each (IPv4 in the first 4).
//! - `SETTINGS[0]`: n, the number of sources; 0 sends the template unchanged.
//! - The template is an untagged Ethernet frame carrying IPv4 (without options) or IPv6
//!   (without extension headers), UDP or TCP. Any other frame is sent unchanged.
//!
//! # Invariants
//! Live-frames mode does not restore a page's bytes when it reuses it, so a frame holds what the
//! previous run wrote. The program therefore never assumes the template's values: checksums are
//! updated incrementally (RFC 1624) from the address and port the frame holds now.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMap, PerCpuArray},
    programs::XdpContext,
};

/// Most source addresses (`SOURCES` entries); the attacker cycles through at most this many.
const SOURCES_MAX: u32 = 4096;
/// Source ports are `SPORT_BASE + index`, as in the attacker's AF_PACKET engine.
const SPORT_BASE: u16 = 10_000;

#[map]
static TARGET: DevMap = DevMap::with_max_entries(1, 0);
#[map]
static SOURCES: Array<[u8; 16]> = Array::with_max_entries(SOURCES_MAX, 0);
#[map]
static SETTINGS: Array<u32> = Array::with_max_entries(1, 0);
/// Index of the next source, per CPU (each CPU cycles through the whole range).
#[map]
static NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Offset of the checksum in the UDP and in the TCP header.
const UDP_CSUM: usize = 6;
const TCP_CSUM: usize = 16;

#[xdp]
pub fn generator(ctx: XdpContext) -> u32 {
    let frame = Frame {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    // A frame that cannot be rewritten goes out as it is.
    let _ = rewrite(&frame);
    match TARGET.redirect(0, 0) {
        Ok(action) => action,
        Err(_) => xdp_action::XDP_ABORTED,
    }
}

/// Bounds-checked view of the frame.
struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    /// A pointer to `size_of::<T>()` bytes at `offset`, or `None` past the end of the frame.
    #[inline(always)]
    fn at<T>(&self, offset: usize) -> Option<*mut T> {
        let at = self.start + offset;
        if at + core::mem::size_of::<T>() > self.end {
            return None;
        }
        Some(at as *mut T)
    }

    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        let at = self.at::<T>(offset)?;
        // SAFETY: `at` checked the range lies inside the frame; T is plain integer data read
        // without alignment assumptions.
        Some(unsafe { core::ptr::read_unaligned(at) })
    }

    #[inline(always)]
    fn write<T: Copy>(&self, offset: usize, value: T) -> Option<()> {
        let at = self.at::<T>(offset)?;
        // SAFETY: as in `read`; the frame's bytes are writable in XDP.
        unsafe { core::ptr::write_unaligned(at, value) };
        Some(())
    }
}

/// Replaces the source address and port with the next ones and fixes the checksums.
#[inline(always)]
fn rewrite(frame: &Frame) -> Option<()> {
    let count = *SETTINGS.get(0)?;
    if count == 0 {
        return None;
    }
    let next = NEXT.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot of a per-CPU array of u32; no other program run uses it meanwhile.
    let next = unsafe { &mut *next };
    let index = if *next < count { *next } else { 0 };
    *next = if index + 1 < count { index + 1 } else { 0 };
    let source = SOURCES.get(index)?;
    let sport = SPORT_BASE.wrapping_add(index as u16).to_be();

    let ethertype = u16::from_be(frame.read::<u16>(ETH_HLEN - 2)?);
    // Sum of the changed 16-bit words (RFC 1624: ~old + new), for the IP and L4 checksums.
    let mut diff = 0u32;
    let (protocol, l4) = if ethertype == ETH_P_IP {
        let l3 = ETH_HLEN;
        if frame.read::<u8>(l3)? != 0x45 {
            return None;
        }
        let new: [u16; 2] = [
            u16::from_ne_bytes([source[0], source[1]]),
            u16::from_ne_bytes([source[2], source[3]]),
        ];
        for (i, word) in new.iter().enumerate() {
            let at = l3 + 12 + 2 * i;
            diff += u32::from(!frame.read::<u16>(at)?) + u32::from(*word);
            frame.write(at, *word)?;
        }
        let csum = frame.read::<u16>(l3 + 10)?;
        frame.write(l3 + 10, fold(csum, diff))?;
        (frame.read::<u8>(l3 + 9)?, l3 + IPV4_HLEN)
    } else if ethertype == ETH_P_IPV6 {
        let l3 = ETH_HLEN;
        for i in 0..8 {
            let at = l3 + 8 + 2 * i;
            let word = u16::from_ne_bytes([source[2 * i], source[2 * i + 1]]);
            diff += u32::from(!frame.read::<u16>(at)?) + u32::from(word);
            frame.write(at, word)?;
        }
        (frame.read::<u8>(l3 + 6)?, l3 + IPV6_HLEN)
    } else {
        return None;
    };

    let csum_at = match protocol {
        IPPROTO_UDP => l4 + UDP_CSUM,
        IPPROTO_TCP => l4 + TCP_CSUM,
        _ => return None,
    };
    diff += u32::from(!frame.read::<u16>(l4)?) + u32::from(sport);
    frame.write(l4, sport)?;
    let csum = frame.read::<u16>(csum_at)?;
    if protocol == IPPROTO_UDP && csum == 0 {
        // An IPv4 UDP datagram without a checksum keeps none.
        return Some(());
    }
    let mut csum = fold(csum, diff);
    if protocol == IPPROTO_UDP && csum == 0 {
        csum = 0xffff;
    }
    frame.write(csum_at, csum)
}

/// The checksum `csum` updated by `diff`, the sum of ~old + new over the changed words
/// (RFC 1624, eqn. 3). Works in either byte order, as long as all words use the same one.
#[inline(always)]
fn fold(csum: u16, diff: u32) -> u16 {
    let mut sum = u32::from(!csum) + diff;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

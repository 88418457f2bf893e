//! Send bounded floods of crafted frames out of an interface in one of the lab's own network
//! namespaces. Every run stops at `--packets` or `--duration`, whichever comes first.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use firewall::frames::{Packet, quic_initial, tcp_flags};
use ipnet::IpNet;

/// Most packets one run may send.
const PACKETS_MAX: u64 = 100_000_000;
/// Longest run.
const DURATION_MAX: Duration = Duration::from_secs(600);
/// Frames handed to the kernel per sendmmsg call.
const BATCH: usize = 64;
/// Distinct source addresses cycled through, at most.
const SOURCES_MAX: u64 = 4096;

#[derive(Parser)]
#[command(
    name = "attacker",
    about = "Bounded flood generator for the lab's own namespaces"
)]
struct Args {
    /// Network namespace to send from (a name from `ip netns`).
    #[arg(long)]
    netns: Option<String>,
    /// Interface to send through.
    #[arg(long)]
    iface: String,
    /// Source addresses: an address or CIDR; the flood cycles through up to 4096 of them.
    #[arg(long, value_parser = parse_src)]
    src: IpNet,
    /// Destination address.
    #[arg(long)]
    dst: IpAddr,
    /// Destination MAC (the receiving interface's); broadcast when omitted.
    #[arg(long, default_value = "ff:ff:ff:ff:ff:ff")]
    dst_mac: String,
    /// Destination port.
    #[arg(long, default_value_t = 9000)]
    dst_port: u16,
    /// What to send.
    #[arg(long, value_enum, default_value = "udp")]
    kind: Kind,
    /// UDP payload bytes (for `udp`).
    #[arg(long, default_value_t = 18)]
    payload: usize,
    /// Stop after this many packets.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Stop after this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Packets per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pps: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// UDP datagrams.
    Udp,
    /// TCP SYNs.
    Syn,
    /// QUIC v1 Initials padded to only 200 bytes (RFC 9000 requires 1200).
    QuicShort,
}

fn parse_src(s: &str) -> Result<IpNet, String> {
    firewall::rules::parse_net(s).map_err(|e| e.to_string())
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid MAC {s:?}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("invalid MAC {s:?}: expected six hex bytes"))
}

fn frames(args: &Args) -> Result<Vec<Vec<u8>>> {
    let dst_mac = parse_mac(&args.dst_mac)?;
    let count = args.src.hosts().take(SOURCES_MAX as usize).count().max(1);
    let sources: Vec<IpAddr> = if args.src.prefix_len() == args.src.max_prefix_len() {
        vec![args.src.addr()]
    } else {
        args.src.hosts().take(count).collect()
    };
    if sources.iter().any(|s| s.is_ipv4() != args.dst.is_ipv4()) {
        bail!("--src and --dst must be the same IP family");
    }
    Ok(sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            let sport = 10_000 + (i % 50_000) as u16;
            let mut p = match args.kind {
                Kind::Udp => Packet::udp(
                    *src,
                    args.dst,
                    sport,
                    args.dst_port,
                    &vec![0x5a; args.payload],
                ),
                Kind::Syn => Packet::tcp(*src, args.dst, sport, args.dst_port, tcp_flags::SYN),
                Kind::QuicShort => {
                    Packet::udp(*src, args.dst, sport, args.dst_port, &quic_initial(200))
                }
            };
            p.dst_mac = dst_mac;
            p.build()
        })
        .collect())
}

fn open_socket(iface: &str) -> Result<i32> {
    let c_iface = std::ffi::CString::new(iface)?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 {
        bail!("unknown interface {iface:?} (check --netns)");
    }
    // SAFETY: plain socket creation; protocol 0 sends only and receives nothing.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        bail!(
            "AF_PACKET socket: {} (needs root)",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: addr is a valid sockaddr_ll of the given length.
    let rc = unsafe {
        libc::bind(
            fd,
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        bail!("binding to {iface}: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.packets > PACKETS_MAX || args.duration > DURATION_MAX {
        bail!("a flood is bounded to {PACKETS_MAX} packets and {DURATION_MAX:?}");
    }
    if let Some(ns) = &args.netns {
        firewall::netns::enter(ns)?;
    }
    let frames = frames(&args)?;
    let fd = open_socket(&args.iface)?;
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while sent < args.packets && started.elapsed() < args.duration {
        let want = (args.packets - sent).min(BATCH as u64) as usize;
        // SAFETY: mmsghdr is plain data; zeroed is valid before filling.
        let mut msgs: Vec<libc::mmsghdr> = (0..want)
            .map(|i| {
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iovecs[(next + i) % frames.len()];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs points to `want` initialised headers whose iovecs outlive the call.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), want as u32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENOBUFS) || err.raw_os_error() == Some(libc::EAGAIN)
            {
                std::thread::yield_now();
                continue;
            }
            bail!("sendmmsg: {err}");
        }
        sent += n as u64;
        next = (next + n as usize) % frames.len();
        if args.pps > 0 {
            let due = Duration::from_secs_f64(sent as f64 / args.pps as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sent {sent} packets in {secs:.2}s ({:.0} pps)",
        sent as f64 / secs
    );
    Ok(())
}

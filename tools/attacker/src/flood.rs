//! `attacker flood`: bounded floods of crafted frames (spoofed UDP, TCP SYNs, undersized QUIC
//! Initials) sent out of an interface of one of the lab's namespaces.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use firewall::frames::{Packet, quic_initial, tcp_flags};
use ipnet::IpNet;

use crate::{packet, xdp};

/// Most packets one run may send.
const PACKETS_MAX: u64 = 100_000_000;
/// Longest run.
const DURATION_MAX: Duration = Duration::from_secs(600);
/// Distinct source addresses cycled through, at most.
const SOURCES_MAX: usize = xdp::SOURCES_MAX;
/// Source ports are `SPORT_BASE + index of the source` (the generator does the same).
const SPORT_BASE: u16 = 10_000;

/// Options of `attacker flood`.
#[derive(Args)]
pub struct FloodArgs {
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
    /// How frames leave the interface.
    #[arg(long, value_enum, default_value = "packet")]
    engine: Engine,
    /// Run the sender on this CPU only.
    #[arg(long)]
    cpu: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Engine {
    /// AF_PACKET socket and sendmmsg: the frames are skbs, sent with `ndo_start_xmit`.
    Packet,
    /// XDP generator: BPF_PROG_TEST_RUN live frames redirected out of the interface, so the
    /// peer gets xdp_frames through `ndo_xdp_xmit`, as from a NIC driver. A veth peer accepts
    /// them only with an XDP program attached or GRO on (`ethtool -K DEV gro on`). `sent`
    /// counts the frames made; those the peer had no room for are freed (`ethtool -S DEV`,
    /// tx_queue_*_xdp_xmit_errors). With `--pps`, frames go in bursts every 100 ms.
    Xdp,
}

/// What a flood did.
pub struct Report {
    /// Frames sent (the xdp engine: made and handed to the interface).
    pub sent: u64,
    /// From the first frame to the last.
    pub took: Duration,
    /// Frames the interface counted out (tx_packets), when the engine reports it.
    pub taken: Option<u64>,
}

/// When a flood stops.
pub struct Bounds {
    /// Stop after this many packets.
    pub packets: u64,
    /// Stop after this long.
    pub duration: Duration,
    /// Packets per second (0: as fast as possible).
    pub pps: u64,
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

/// The source addresses of the flood: `--src` itself, or up to `SOURCES_MAX` of its hosts.
fn sources(args: &FloodArgs) -> Result<Vec<IpAddr>> {
    let sources: Vec<IpAddr> = if args.src.prefix_len() == args.src.max_prefix_len() {
        vec![args.src.addr()]
    } else {
        args.src.hosts().take(SOURCES_MAX).collect()
    };
    if sources.is_empty() {
        bail!("--src {} has no host addresses", args.src);
    }
    if sources.iter().any(|s| s.is_ipv4() != args.dst.is_ipv4()) {
        bail!("--src and --dst must be the same IP family");
    }
    Ok(sources)
}

/// The frame sent from the `index`th source.
fn frame(args: &FloodArgs, dst_mac: [u8; 6], src: IpAddr, index: usize) -> Vec<u8> {
    let sport = SPORT_BASE + (index % 50_000) as u16;
    let mut p = match args.kind {
        Kind::Udp => Packet::udp(
            src,
            args.dst,
            sport,
            args.dst_port,
            &vec![0x5a; args.payload],
        ),
        Kind::Syn => Packet::tcp(src, args.dst, sport, args.dst_port, tcp_flags::SYN),
        Kind::QuicShort => Packet::udp(src, args.dst, sport, args.dst_port, &quic_initial(200)),
    };
    p.dst_mac = dst_mac;
    p.build()
}

fn ifindex(iface: &str) -> Result<u32> {
    let c_iface = std::ffi::CString::new(iface)?;
    // SAFETY: valid C string.
    let ifindex = unsafe { libc::if_nametoindex(c_iface.as_ptr()) };
    if ifindex == 0 {
        bail!("unknown interface {iface:?} (check --netns)");
    }
    Ok(ifindex)
}

/// Restricts the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("--cpu {cpu}: no such CPU");
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the given size; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        bail!("--cpu {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `attacker flood`.
pub fn run(args: FloodArgs) -> Result<()> {
    if args.packets > PACKETS_MAX || args.duration > DURATION_MAX {
        bail!("a flood is bounded to {PACKETS_MAX} packets and {DURATION_MAX:?}");
    }
    let bounds = Bounds {
        packets: args.packets,
        duration: args.duration,
        pps: args.pps,
    };
    if let Some(cpu) = args.cpu {
        pin_to(cpu)?;
    }
    // This thread sends, so it is the one that enters the namespace: the interface's ifindex
    // (and, for the xdp engine, the DevMap entry) are resolved in the caller's namespace.
    if let Some(ns) = &args.netns {
        firewall::netns::enter(ns)?;
    }
    let dst_mac = parse_mac(&args.dst_mac)?;
    let sources = sources(&args)?;
    let ifindex = ifindex(&args.iface)?;
    let report = match args.engine {
        Engine::Packet => {
            let frames: Vec<Vec<u8>> = sources
                .iter()
                .enumerate()
                .map(|(i, src)| frame(&args, dst_mac, *src, i))
                .collect();
            packet::flood(&args.iface, ifindex, &frames, &bounds)?
        }
        Engine::Xdp => {
            let template = frame(&args, dst_mac, sources[0], 0);
            xdp::flood(&args.iface, ifindex, &template, &sources, &bounds)?
        }
    };
    let secs = report.took.as_secs_f64().max(1e-9);
    let sent = report.sent;
    println!(
        "sent {sent} packets in {secs:.2}s ({:.0} pps)",
        sent as f64 / secs
    );
    if let Some(taken) = report.taken {
        println!(
            "{} counted {taken} out ({:.0} pps): the frames its peer took",
            args.iface,
            taken as f64 / secs
        );
    }
    Ok(())
}

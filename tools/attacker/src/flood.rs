//! `attacker flood`: bounded floods of crafted frames (spoofed UDP, TCP SYNs, undersized QUIC
//! Initials) sent out of an interface of one of the lab's namespaces.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use firewall::frames::{Packet, quic_initial, tcp_flags};
use ipnet::IpNet;
use serde_json::json;

use crate::peer::RunArgs;
use crate::{packet, xdp};

/// Most packets one run may send.
const PACKETS_MAX: u64 = 100_000_000;
/// Distinct source addresses cycled through, at most.
const SOURCES_MAX: usize = xdp::SOURCES_MAX;
/// Source ports are `SPORT_BASE + index of the source` (the generator does the same), modulo
/// [`SPORTS`].
const SPORT_BASE: u16 = 10_000;
/// Distinct source ports, at most: `SPORT_BASE + SPORTS` stays under 65536.
const SPORTS: usize = 50_000;
/// Bytes of the undersized QUIC Initials (`--kind quic-short`): RFC 9000 pads a client's
/// Initial to at least 1200.
const QUIC_SHORT_BYTES: usize = 200;

/// Shortest run the rates are computed over, seconds (a flood of no time at all divides by it).
const SECS_MIN: f64 = 1e-9;

/// Options of `attacker flood`.
#[derive(Args)]
pub struct FloodArgs {
    /// `--netns` (the namespace to send from) and `--duration` (stop after this long).
    #[command(flatten)]
    run: RunArgs,
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
    /// QUIC v1 Initials padded to only 200 bytes (RFC 9000 requires 1200): [`QUIC_SHORT_BYTES`].
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
    let sport = SPORT_BASE + (index % SPORTS) as u16;
    let mut p = match args.kind {
        Kind::Udp => Packet::udp(
            src,
            args.dst,
            sport,
            args.dst_port,
            &vec![0x5a; args.payload],
        ),
        Kind::Syn => Packet::tcp(src, args.dst, sport, args.dst_port, tcp_flags::SYN),
        Kind::QuicShort => Packet::udp(
            src,
            args.dst,
            sport,
            args.dst_port,
            &quic_initial(QUIC_SHORT_BYTES),
        ),
    };
    p.dst_mac = dst_mac;
    p.build()
}

/// What a flood prints on stdout: `sent N packets in S.SSs (P pps)`, then, when the engine
/// reports it, `IFACE counted T out (P pps): the frames its peer took`, and last the JSON summary
/// `{"attack":"flood","sent":N,"secs":S,"pps":P[,"taken":T]}`. The benches and the lab parse the
/// first line: keep its form.
fn summary_lines(iface: &str, report: &Report) -> Vec<String> {
    let secs = report.took.as_secs_f64().max(SECS_MIN);
    let sent = report.sent;
    let pps = sent as f64 / secs;
    let mut lines = vec![format!("sent {sent} packets in {secs:.2}s ({pps:.0} pps)")];
    let mut summary = json!({
        "attack": "flood",
        "sent": sent,
        "secs": (secs * 1000.0).round() / 1000.0,
        "pps": pps.round() as u64,
    });
    if let Some(taken) = report.taken {
        lines.push(format!(
            "{iface} counted {taken} out ({:.0} pps): the frames its peer took",
            taken as f64 / secs
        ));
        summary["taken"] = json!(taken);
    }
    lines.push(summary.to_string());
    lines
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
    args.run.check()?;
    if args.packets > PACKETS_MAX {
        bail!("a flood is bounded to {PACKETS_MAX} packets");
    }
    let bounds = Bounds {
        packets: args.packets,
        duration: args.run.duration,
        pps: args.pps,
    };
    if let Some(cpu) = args.cpu {
        pin_to(cpu)?;
    }
    // This thread sends, so it is the one that enters the namespace: the interface's ifindex
    // (and, for the xdp engine, the DevMap entry) are resolved in the caller's namespace.
    if let Some(ns) = &args.run.netns {
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
    for line in summary_lines(&args.iface, &report) {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `attacker flood`'s options alone.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FloodArgs,
    }

    fn parse(extra: &[&str]) -> FloodArgs {
        let base = [
            "flood", "--iface", "veth0", "--src", "10.0.0.1", "--dst", "10.0.0.2",
        ];
        Cli::try_parse_from(base.iter().chain(extra))
            .expect("valid options")
            .args
    }

    #[test]
    fn the_common_options_are_checked() {
        let args = parse(&["--netns", "lab", "--duration", "2s"]);
        assert_eq!(args.run.netns.as_deref(), Some("lab"));
        assert_eq!(args.run.duration, Duration::from_secs(2));
        assert!(args.run.check().is_ok());
        assert!(parse(&["--duration", "0s"]).run.check().is_err());
        assert!(parse(&["--duration", "11m"]).run.check().is_err());
        let e = run(parse(&["--duration", "0s"])).expect_err("zero duration");
        assert!(format!("{e:#}").contains("--duration"), "{e:#}");
        let e = run(parse(&["--packets", &(PACKETS_MAX + 1).to_string()])).expect_err("bound");
        assert!(format!("{e:#}").contains("packets"), "{e:#}");
    }

    #[test]
    fn the_human_lines_come_first_and_the_json_summary_last() {
        let mut report = Report {
            sent: 40_000,
            took: Duration::from_secs(8),
            taken: None,
        };
        let lines = summary_lines("veth0", &report);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], "sent 40000 packets in 8.00s (5000 pps)");
        let json: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON");
        assert_eq!(
            json,
            json!({"attack": "flood", "sent": 40_000, "secs": 8.0, "pps": 5000})
        );
        report.taken = Some(20_000);
        let lines = summary_lines("veth0", &report);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "sent 40000 packets in 8.00s (5000 pps)");
        assert_eq!(
            lines[1],
            "veth0 counted 20000 out (2500 pps): the frames its peer took"
        );
        let json: serde_json::Value = serde_json::from_str(&lines[2]).expect("JSON");
        assert_eq!(json["taken"], 20_000);
    }
}

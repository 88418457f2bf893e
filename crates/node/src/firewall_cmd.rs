//! `node firewall ...`: attach, detach and administer the XDP filter through its pinned maps,
//! so a second process can administer a filter that the node (or another CLI) attached.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use firewall::{
    AttachMode, BanReason, Instance, Maps, Mode, Policy, Reason, RuleKind, Verdict,
    clock::now_ns,
    maps::event_addr,
    program,
    rules::{ban_reason_name, describe_expiry, parse_net},
};

#[derive(Args)]
pub struct FirewallArgs {
    /// Name of the filter instance: its pins live in /sys/fs/bpf/<instance>/.
    #[arg(
        long,
        global = true,
        default_value = "node",
        env = "NODE_FIREWALL_INSTANCE"
    )]
    instance: String,
    #[command(subcommand)]
    command: FirewallCommand,
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Load the filter and attach it to an interface (or replace the attached program in place).
    Attach(AttachArgs),
    /// Detach the filter and remove its pinned maps (rules and counters are lost).
    Detach,
    /// Block a source address or CIDR.
    Block {
        /// Address or CIDR, e.g. 198.51.100.7 or 2001:db8::/48.
        cidr: String,
        /// How long the block lasts (e.g. 90s, 10m, 2h); forever when omitted.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Why it is blocked.
        #[arg(long, value_enum, default_value = "manual")]
        reason: BanReasonArg,
    },
    /// Remove a block rule.
    Unblock { cidr: String },
    /// Allowlist a source address or CIDR: it skips every check.
    Allow { cidr: String },
    /// Remove an allow rule.
    Disallow { cidr: String },
    /// List every allow and block rule.
    List,
    /// Explain which rule applies to an address, why, and until when.
    Why { addr: IpAddr },
    /// Print the counters per verdict and reason.
    Stats,
    /// Live view: packets per second per verdict and reason, top dropped sources.
    Top {
        /// Stop after this many refreshes (default: run until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Switch between enforce and monitor (count only) mode.
    Mode {
        #[arg(value_enum)]
        mode: ModeArg,
    },
    /// Remove expired block entries (they already stopped matching in the kernel).
    Sweep,
    /// Print sampled drop events as they arrive.
    Events {
        /// Stop after this long.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
}

#[derive(Args)]
struct AttachArgs {
    /// Interface to attach to.
    #[arg(long)]
    iface: String,
    /// Network namespace of the interface (a name from `ip netns`).
    #[arg(long)]
    netns: Option<String>,
    /// XDP mode: auto tries native, then generic.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpModeArg,
    /// Start in monitor mode (count what would be dropped, pass everything).
    #[arg(long)]
    monitor: bool,
    /// Protected TCP port (repeatable): per-source packet and SYN budgets apply.
    #[arg(long = "tcp-port")]
    tcp_ports: Vec<u16>,
    /// Protected UDP port (repeatable).
    #[arg(long = "udp-port")]
    udp_ports: Vec<u16>,
    /// QUIC UDP port (repeatable): undersized Initials are dropped; also protected as UDP.
    #[arg(long = "quic-port")]
    quic_ports: Vec<u16>,
    /// Packets per second per source to protected ports (0: unlimited).
    #[arg(long, default_value_t = 0)]
    rate_pps: u64,
    /// Burst of the packet budget (default: twice the rate).
    #[arg(long)]
    rate_burst: Option<u64>,
    /// New TCP connections per second per source to protected ports (0: unlimited).
    #[arg(long, default_value_t = 0)]
    syn_pps: u64,
    /// Burst of the SYN budget (default: twice the rate).
    #[arg(long)]
    syn_burst: Option<u64>,
    /// Drop IP fragments.
    #[arg(long)]
    drop_fragments: bool,
    /// Drop events per second per CPU sent to `events` and `top` (0: none).
    #[arg(long, default_value_t = 100)]
    events_per_sec: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum XdpModeArg {
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Enforce,
    Monitor,
}

#[derive(Clone, Copy, ValueEnum)]
enum BanReasonArg {
    Manual,
    InvalidSignature,
    MalformedMessage,
    Spam,
    ConnectionFlood,
    SyncAbuse,
    HandshakeFailures,
    GossipRejected,
}

impl From<BanReasonArg> for BanReason {
    fn from(r: BanReasonArg) -> BanReason {
        match r {
            BanReasonArg::Manual => BanReason::Manual,
            BanReasonArg::InvalidSignature => BanReason::InvalidSignature,
            BanReasonArg::MalformedMessage => BanReason::MalformedMessage,
            BanReasonArg::Spam => BanReason::Spam,
            BanReasonArg::ConnectionFlood => BanReason::ConnectionFlood,
            BanReasonArg::SyncAbuse => BanReason::SyncAbuse,
            BanReasonArg::HandshakeFailures => BanReason::HandshakeFailures,
            BanReasonArg::GossipRejected => BanReason::GossipRejected,
        }
    }
}

fn default_burst(rate: u64, burst: Option<u64>) -> u64 {
    burst.unwrap_or(rate.saturating_mul(2).max(1))
}

pub fn run(args: FirewallArgs) -> Result<()> {
    let instance = Instance::new(&args.instance)?;
    let open = || Maps::open(&instance).map_err(anyhow::Error::from);
    match args.command {
        FirewallCommand::Attach(a) => attach(&instance, a),
        FirewallCommand::Detach => {
            if program::detach(&instance)? {
                println!("detached {} and removed its maps", instance.name());
            } else {
                println!("{} was not attached", instance.name());
            }
            Ok(())
        }
        FirewallCommand::Block { cidr, ttl, reason } => {
            let net = parse_net(&cidr)?;
            open()?.block(net, ttl, reason.into())?;
            let until = ttl.map_or("until unblocked".to_string(), |t| {
                format!("for {}", humantime::format_duration(t))
            });
            println!("blocked {net} {until}");
            Ok(())
        }
        FirewallCommand::Unblock { cidr } => {
            let net = parse_net(&cidr)?;
            if !open()?.unblock(net)? {
                bail!("no block rule for exactly {net}: see `node firewall list`");
            }
            println!("unblocked {net}");
            Ok(())
        }
        FirewallCommand::Allow { cidr } => {
            let net = parse_net(&cidr)?;
            open()?.allow(net)?;
            println!("allowed {net}");
            Ok(())
        }
        FirewallCommand::Disallow { cidr } => {
            let net = parse_net(&cidr)?;
            if !open()?.disallow(net)? {
                bail!("no allow rule for exactly {net}: see `node firewall list`");
            }
            println!("removed allow rule {net}");
            Ok(())
        }
        FirewallCommand::List => list(&open()?),
        FirewallCommand::Why { addr } => {
            println!("{}", open()?.why(addr)?);
            Ok(())
        }
        FirewallCommand::Stats => stats(&open()?),
        FirewallCommand::Top { count } => top(&open()?, count),
        FirewallCommand::Mode { mode } => {
            let mode = match mode {
                ModeArg::Enforce => Mode::Enforce,
                ModeArg::Monitor => Mode::Monitor,
            };
            open()?.set_mode(mode)?;
            println!("mode set to {mode:?}");
            Ok(())
        }
        FirewallCommand::Sweep => {
            let n = open()?.sweep()?;
            println!("removed {n} expired block entries");
            Ok(())
        }
        FirewallCommand::Events { duration } => events(&open()?, duration),
    }
}

fn attach(instance: &Instance, a: AttachArgs) -> Result<()> {
    if let Some(ns) = &a.netns {
        firewall::netns::enter(ns)?;
    }
    let policy = Policy {
        mode: if a.monitor {
            Mode::Monitor
        } else {
            Mode::Enforce
        },
        drop_fragments: a.drop_fragments,
        pkt_rate_pps: a.rate_pps,
        pkt_burst: default_burst(a.rate_pps, a.rate_burst),
        syn_rate_pps: a.syn_pps,
        syn_burst: default_burst(a.syn_pps, a.syn_burst),
        events_per_sec: a.events_per_sec,
        events_burst: a.events_per_sec.max(1),
        tcp_ports: a.tcp_ports,
        udp_ports: a.udp_ports,
        quic_ports: a.quic_ports,
    };
    let mode = match a.xdp_mode {
        XdpModeArg::Auto => AttachMode::Auto,
        XdpModeArg::Native => AttachMode::Native,
        XdpModeArg::Generic => AttachMode::Generic,
    };
    let attached = program::attach(instance, &a.iface, mode, Some(&policy))
        .with_context(|| format!("attaching the filter to {}", a.iface))?;
    if attached.replaced {
        println!(
            "replaced the program on {} ({} XDP) in place; rules and counters kept",
            attached.iface, attached.mode
        );
    } else {
        println!(
            "attached to {} in {} XDP mode; pinned under {}",
            attached.iface,
            attached.mode,
            instance.dir().display()
        );
    }
    if attached.mode == "generic" {
        eprintln!(
            "warning: generic (skb) XDP runs after the driver allocates an skb: slower than native"
        );
    }
    Ok(())
}

fn list(maps: &Maps) -> Result<()> {
    let now = now_ns();
    let rules = maps.list()?;
    if rules.is_empty() {
        println!("no rules");
    }
    for rule in rules {
        match rule.kind {
            RuleKind::Allow(_) => println!("allow  {:<43}", rule.net),
            RuleKind::Block(e) => println!(
                "block  {:<43} reason={:<18} expires={}{}",
                rule.net,
                ban_reason_name(e.reason),
                describe_expiry(e.expires_at_ns, now),
                if e.is_active(now) { "" } else { " (inactive)" }
            ),
        }
    }
    Ok(())
}

fn stats(maps: &Maps) -> Result<()> {
    let stats = maps.stats()?;
    let config = maps.config()?;
    println!(
        "mode: {}",
        if config.is_monitor() {
            "monitor"
        } else {
            "enforce"
        }
    );
    println!(
        "{:<11} {:<19} {:>14} {:>16}",
        "verdict", "reason", "packets", "bytes"
    );
    for (v, r, c) in stats.nonzero() {
        println!(
            "{:<11} {:<19} {:>14} {:>16}",
            v.name(),
            r.name(),
            c.packets,
            c.bytes
        );
    }
    Ok(())
}

fn top(maps: &Maps, count: Option<u64>) -> Result<()> {
    let mut events = maps.events()?;
    let mut previous = maps.stats()?;
    let mut sources: HashMap<(IpAddr, u32), u64> = HashMap::new();
    let tty = std::io::stdout().is_terminal();
    let mut rounds = 0u64;
    loop {
        let started = Instant::now();
        while let Some(left) = Duration::from_secs(1).checked_sub(started.elapsed()) {
            for e in events.poll(left) {
                *sources.entry((event_addr(&e), e.reason)).or_default() += 1;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let current = maps.stats()?;
        let delta = current.since(&previous);
        previous = current;
        let mut out = String::new();
        if tty {
            out.push_str("\x1b[2J\x1b[H");
        }
        out.push_str(&format!(
            "{:<11} {:<19} {:>12} {:>14}\n",
            "verdict", "reason", "pkt/s", "total"
        ));
        for v in Verdict::ALL {
            for r in Reason::ALL {
                let total = previous.get(v, r).packets;
                if total == 0 {
                    continue;
                }
                let rate = delta.get(v, r).packets as f64 / elapsed;
                out.push_str(&format!(
                    "{:<11} {:<19} {:>12.0} {:>14}\n",
                    v.name(),
                    r.name(),
                    rate,
                    total
                ));
            }
        }
        let mut top: Vec<_> = sources.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        out.push_str("top dropped sources (sampled events):\n");
        for ((addr, reason), n) in top.into_iter().take(10) {
            let reason = Reason::from_code(*reason).map_or("unknown", |r| r.name());
            out.push_str(&format!("  {addr:<40} {reason:<19} {n:>8}\n"));
        }
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(out.as_bytes())?;
        stdout.flush()?;
        rounds += 1;
        if count.is_some_and(|c| rounds >= c) {
            return Ok(());
        }
    }
}

fn events(maps: &Maps, duration: Option<Duration>) -> Result<()> {
    let mut events = maps.events()?;
    let started = Instant::now();
    loop {
        let left = match duration {
            Some(d) => match d.checked_sub(started.elapsed()) {
                Some(left) => left.min(Duration::from_secs(1)),
                None => return Ok(()),
            },
            None => Duration::from_secs(1),
        };
        for e in events.poll(left) {
            let reason = Reason::from_code(e.reason).map_or("unknown", |r| r.name());
            let verdict = Verdict::from_code(u32::from(e.verdict)).map_or("unknown", |v| v.name());
            let ban = if e.ban_reason != 0 {
                format!(" ban={}", ban_reason_name(e.ban_reason))
            } else {
                String::new()
            };
            println!(
                "{verdict} {reason} src={} proto={} dport={}{ban}",
                event_addr(&e),
                e.protocol,
                e.dst_port
            );
        }
    }
}

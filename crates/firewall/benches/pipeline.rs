//! XDP filter benchmark: in-kernel ns/packet, rule loading speed, veth flood vs iptables and nft.

use std::{
    collections::HashSet,
    env,
    error::Error,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use firewall::{
    AttachMode, BanReason, Instance, Maps, Policy, Reason, Verdict,
    frames::Packet,
    netns,
    program::{self, Loaded},
};
use firewall_common::bucket::{BURST_MAX, RATE_MAX_PPS};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::{Rng, SeedableRng, rngs::SmallRng};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The UDP port the policy protects (rate limit applies).
const PROTECTED_PORT: u16 = 9000;
/// Pin directory names of the filter instances the bench loads: part 1 compares two loaded
/// side by side, one with few rules and one with the large set.
const INSTANCE_EMPTY: &str = "bench-empty";
const INSTANCE_LARGE: &str = "bench-large";
const INSTANCE_FLOOD: &str = "bench-flood";

/// Part 1: each sample is one BPF_PROG_TEST_RUN of this many repeats; the median of `ROUNDS`
/// samples is reported.
const REPEAT: u32 = 100_000;
const ROUNDS: usize = 9;

/// Part 2: the bulk rule set.
const BULK_V4: u32 = 1_000_000;
const BULK_V6: u128 = 100_000;
const BULK_PREFIXES_PER_FAMILY: usize = 5_000;
const LOAD_TARGET_RULES: usize = 100_000;

/// Part 3: the lab.
const NS_A: &str = "fwb-a";
const NS_B: &str = "fwb-b";
const IFACE_A: &str = "fwb-va";
const IFACE_B: &str = "fwb-vb";
const ADDR_A: &str = "198.18.0.1/24";
const ADDR_B: &str = "198.18.0.2/24";
const DST_B: &str = "198.18.0.2";
/// The spoofed, blocked sources of every flood.
const FLOOD_SRC: &str = "198.19.7.0/24";
/// Each flood stops at whichever bound comes first; the generator makes up to ~9 Mpps here, so
/// the duration decides.
const FLOOD_PACKETS: u64 = 30_000_000;
const FLOOD_DURATION: &str = "2s";
/// Rounds of floods: each round floods once with every filter in turn; each row shows the
/// filter's best round. This VM has slow spells of several seconds in which everything, the
/// sender too, runs ~1.8x slower; they only ever slow a run down.
const FLOOD_ROUNDS: usize = 5;
/// The attacker's generator runs on `TX_CPU`, the receiving veth's NAPI thread on `RX_CPU`.
const TX_CPU: usize = 0;
const RX_CPU: usize = 1;
const NFT_TABLE: &str = "fwb_bench";
const IPT_COMMENT: &str = "fwb-bench";

/// Before each measurement, wait (at most `QUIET_WAIT`) until other work uses less than
/// `QUIET_PCT` percent of all CPUs: a build running alongside skews every figure.
const QUIET_PCT: f64 = 10.0;
const QUIET_WAIT: Duration = Duration::from_secs(15);

/// Runs as root under `cargo bench -p firewall --bench pipeline`. Without `--bench` (as under
/// `cargo test --all-targets`) it does nothing: it needs root and floods for half a minute.
fn main() -> ExitCode {
    if !env::args().any(|a| a == "--bench") {
        eprintln!(
            "pipeline bench: skipped (run it with `cargo bench -p firewall --bench pipeline`)"
        );
        return ExitCode::SUCCESS;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("pipeline bench: needs root (BPF, network namespaces); run it as root");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    let result = run();
    eprintln!(
        "pipeline bench took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> BenchResult<()> {
    test_run_and_loading()?;
    live_flood()
}

// ---------------------------------------------------------------------------------------------
// Parts 1 and 2: BPF_PROG_TEST_RUN and rule loading
// ---------------------------------------------------------------------------------------------

/// Removes an instance's pins when dropped, also on error or panic.
struct Pins(Instance);

impl Pins {
    /// The instance, with the pins of a previous (crashed) run removed.
    fn fresh(name: &str) -> BenchResult<Pins> {
        let instance = Instance::new(name)?;
        program::detach(&instance)?;
        Ok(Pins(instance))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        if let Err(e) = program::detach(&self.0) {
            eprintln!("warning: removing {}: {e}", self.0.dir().display());
        }
    }
}

fn bench_policy() -> Policy {
    Policy {
        udp_ports: vec![PROTECTED_PORT],
        pkt_rate_pps: RATE_MAX_PPS,
        pkt_burst: BURST_MAX,
        ..Policy::default()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address constant")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("CIDR constant")
}

/// One test frame and the action the filter must return for it.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: u32,
}

/// The rules the cases hit; present in both states.
const CASE_RULES: [&str; 3] = ["198.18.100.2/32", "198.19.7.0/24", "2001:2:0:100::2/128"];
/// Nets the random bulk prefixes must stay out of, so no case changes verdict.
const CASE_NETS: [&str; 2] = ["198.18.0.0/15", "2001:2::/48"];

fn cases() -> Vec<Case> {
    let udp = |src: &str, dst: &str| {
        Packet::udp(ip(src), ip(dst), 40_000, PROTECTED_PORT, &[0x5a; 18]).build()
    };
    vec![
        Case {
            name: "IPv4 UDP to protected port, unlisted (full pipeline + rate limit)",
            frame: udp("198.18.100.1", DST_B),
            expect: XDP_PASS,
        },
        Case {
            name: "IPv4 blocked exact source",
            frame: udp("198.18.100.2", DST_B),
            expect: XDP_DROP,
        },
        Case {
            name: "IPv4 source in a blocked prefix (/24)",
            frame: udp("198.19.7.9", DST_B),
            expect: XDP_DROP,
        },
        Case {
            name: "IPv6 UDP to protected port, unlisted (full pipeline + rate limit)",
            frame: udp("2001:2:0:100::1", "2001:2::2"),
            expect: XDP_PASS,
        },
        Case {
            name: "IPv6 blocked exact source",
            frame: udp("2001:2:0:100::2", "2001:2::2"),
            expect: XDP_DROP,
        },
    ]
}

/// The kernel's mean ns per run over one test run of `REPEAT` repeats, checking the action.
fn ns_per_packet(loaded: &Loaded, case: &Case) -> BenchResult<u64> {
    let (action, mean) = loaded.test_run_repeat(&case.frame, REPEAT)?;
    if action != case.expect {
        return Err(format!(
            "{:?}: the filter returned XDP action {action}, expected {} (rate limit too low?)",
            case.name, case.expect
        )
        .into());
    }
    Ok(mean.as_nanos() as u64)
}

/// Median ns per packet of every case on each program. Each round runs every case once on
/// each program in turn, so a slow patch of the machine hits both states alike.
fn measure<const N: usize>(programs: [&Loaded; N], cases: &[Case]) -> BenchResult<Vec<[u64; N]>> {
    for program in programs {
        for case in cases {
            program.test_run_repeat(&case.frame, REPEAT / 10)?;
        }
    }
    let mut samples = vec![[(); N].map(|()| Vec::with_capacity(ROUNDS)); cases.len()];
    for _ in 0..ROUNDS {
        for (case, per_program) in cases.iter().zip(&mut samples) {
            for (program, out) in programs.iter().zip(per_program.iter_mut()) {
                out.push(ns_per_packet(program, case)?);
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|per_program| {
            per_program.map(|mut v| {
                v.sort_unstable();
                v[v.len() / 2]
            })
        })
        .collect())
}

/// The large rule set: exact addresses in ranges the cases do not use, and random prefixes
/// of mixed lengths that do not overlap the cases' nets.
struct BulkSet {
    v4: Vec<IpNet>,
    v6: Vec<IpNet>,
    prefixes: Vec<IpNet>,
}

fn bulk_set() -> BulkSet {
    let base4 = u32::from(Ipv4Addr::new(10, 0, 0, 0));
    let v4 = (0..BULK_V4)
        .map(|i| IpNet::from(IpAddr::from(Ipv4Addr::from(base4 + i))))
        .collect();
    let base6 = u128::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0));
    let v6 = (0..BULK_V6)
        .map(|i| IpNet::from(IpAddr::from(Ipv6Addr::from(base6 + i))))
        .collect();
    let avoid: Vec<IpNet> = CASE_NETS.iter().map(|n| net(n)).collect();
    let overlaps = |n: &IpNet| {
        avoid
            .iter()
            .any(|a| a.contains(&n.network()) || n.contains(&a.network()))
    };
    let mut rng = SmallRng::seed_from_u64(0x6677_6221);
    let mut seen = HashSet::new();
    let mut prefixes = Vec::with_capacity(2 * BULK_PREFIXES_PER_FAMILY);
    for v6 in [false, true] {
        let mut count = 0;
        while count < BULK_PREFIXES_PER_FAMILY {
            let n = if v6 {
                // Global unicast 2000::/3, /24 to /64.
                let addr = (rng.random::<u128>() >> 3) | (1 << 125);
                let len = rng.random_range(24..=64);
                IpNet::V6(
                    Ipv6Net::new(addr.into(), len)
                        .expect("prefix length <= 128")
                        .trunc(),
                )
            } else {
                // 1.0.0.0 to 223.255.255.255, /12 to /28.
                let addr = rng.random_range(0x0100_0000..=0xdfff_ffffu32);
                let len = rng.random_range(12..=28);
                IpNet::V4(
                    Ipv4Net::new(addr.into(), len)
                        .expect("prefix length <= 32")
                        .trunc(),
                )
            };
            if !overlaps(&n) && seen.insert(n) {
                prefixes.push(n);
                count += 1;
            }
        }
    }
    BulkSet { v4, v6, prefixes }
}

/// Blocks every net in `nets` with one `Maps::block` each; returns the time taken.
fn block_all(maps: &mut Maps, nets: &[IpNet]) -> BenchResult<Duration> {
    let started = Instant::now();
    for n in nets {
        maps.block(*n, None, BanReason::Manual)?;
    }
    Ok(started.elapsed())
}

struct LoadRow {
    what: String,
    rules: usize,
    took: Duration,
    target: Option<Duration>,
}

/// A loaded program with the bench policy and the rules the cases hit.
fn load_with_case_rules(pins: &Pins) -> BenchResult<(Loaded, Maps)> {
    let loaded = program::load(&pins.0)?;
    let mut maps = loaded.maps()?;
    maps.apply_policy(&bench_policy())?;
    for rule in CASE_RULES {
        maps.block(net(rule), None, BanReason::Manual)?;
    }
    Ok((loaded, maps))
}

fn test_run_and_loading() -> BenchResult<()> {
    let empty_pins = Pins::fresh(INSTANCE_EMPTY)?;
    let large_pins = Pins::fresh(INSTANCE_LARGE)?;
    let (empty, empty_maps) = load_with_case_rules(&empty_pins)?;
    let (large, mut maps) = load_with_case_rules(&large_pins)?;

    eprintln!("part 2: building and loading the large rule set…");
    let bulk = bulk_set();
    let split = LOAD_TARGET_RULES;
    let first = block_all(&mut maps, &bulk.v4[..split])?;
    let rest_v4 = block_all(&mut maps, &bulk.v4[split..])?;
    let v6 = block_all(&mut maps, &bulk.v6)?;
    let prefixes = block_all(&mut maps, &bulk.prefixes)?;
    let loads = vec![
        LoadRow {
            what: format!("{} exact IPv4 into an empty map", group(split as u64)),
            rules: split,
            took: first,
            target: Some(Duration::from_secs(1)),
        },
        LoadRow {
            what: format!("{} exact IPv4", group(bulk.v4.len() as u64)),
            rules: bulk.v4.len(),
            took: first + rest_v4,
            target: None,
        },
        LoadRow {
            what: format!("{} exact IPv6", group(bulk.v6.len() as u64)),
            rules: bulk.v6.len(),
            took: v6,
            target: None,
        },
        LoadRow {
            what: format!(
                "{} prefixes (v4 /12-/28, v6 /24-/64)",
                group(bulk.prefixes.len() as u64)
            ),
            rules: bulk.prefixes.len(),
            took: prefixes,
            target: None,
        },
        LoadRow {
            what: "full set (all of the above)".into(),
            rules: bulk.v4.len() + bulk.v6.len() + bulk.prefixes.len(),
            took: first + rest_v4 + v6 + prefixes,
            target: None,
        },
    ];

    eprintln!("part 1: BPF_PROG_TEST_RUN on both programs…");
    let cases = cases();
    let background = settle()?;
    let ns = measure([&empty, &large], &cases)?;
    for m in [&empty_maps, &maps] {
        let rate_limited = m.stats()?.get(Verdict::Drop, Reason::RateLimited).packets;
        if rate_limited > 0 {
            return Err(
                format!("{rate_limited} test packets were rate limited; raise the budget").into(),
            );
        }
    }

    print_test_run_table(&cases, &ns, background);
    print_load_table(&loads);
    Ok(())
}

fn print_test_run_table(cases: &[Case], ns: &[[u64; 2]], background: f64) {
    println!();
    println!("PART 1: in-kernel cost per packet (BPF_PROG_TEST_RUN, the whole XDP program)");
    println!("  verdict      the XDP action the filter returned (checked on every run)");
    println!(
        "  empty ns     kernel's mean ns per run, median of {ROUNDS} test runs of {} repeats each,",
        group(REPEAT.into())
    );
    println!("               on a program whose maps hold only the 3 rules the frames hit");
    println!(
        "  large ns     the same on a second program that also has {} exact IPv4 + {} exact IPv6",
        group(BULK_V4.into()),
        group(BULK_V6 as u64)
    );
    println!(
        "               + {} prefixes; the runs alternate between the two programs",
        group(2 * BULK_PREFIXES_PER_FAMILY as u64)
    );
    println!("  large/empty  ratio of the two; target <= 2.00");
    println!(
        "  policy: UDP {PROTECTED_PORT} protected, {} pps per source (burst {}): the rate limiter runs, never drops",
        group(RATE_MAX_PPS),
        group(BURST_MAX)
    );
    println!(
        "  note: one frame repeated keeps its map entries in cache; traffic from many sources misses more"
    );
    println!("  other load on the machine just before measuring: {background:.0}% of all CPUs");
    println!(
        "{:<66} {:>7} {:>9} {:>9} {:>12}",
        "frame", "verdict", "empty ns", "large ns", "large/empty"
    );
    for (case, [empty, large]) in cases.iter().zip(ns) {
        let ratio = *large as f64 / (*empty).max(1) as f64;
        let verdict = if case.expect == XDP_PASS {
            "pass"
        } else {
            "drop"
        };
        let target = if ratio <= 2.0 { "ok" } else { "MISSED" };
        println!(
            "{:<66} {verdict:>7} {empty:>9} {large:>9} {ratio:>8.2} {target}",
            case.name
        );
    }
}

fn print_load_table(rows: &[LoadRow]) {
    println!();
    println!("PART 2: rule loading speed (Maps::block, one bpf() map update per rule, one thread)");
    println!("  rules    how many rules were inserted");
    println!("  ms       wall-clock time for all of them");
    println!("  rules/s  rules divided by that time");
    println!("  target   100,000 exact IPv4 rules in under 1 s");
    println!(
        "{:<46} {:>10} {:>9} {:>11}  target",
        "what", "rules", "ms", "rules/s"
    );
    for row in rows {
        let secs = row.took.as_secs_f64();
        let target = match row.target {
            Some(t) if row.took <= t => format!("< {} ms: ok", t.as_millis()),
            Some(t) => format!("< {} ms: MISSED", t.as_millis()),
            None => String::new(),
        };
        println!(
            "{:<46} {:>10} {:>9.0} {:>11}  {target}",
            row.what,
            group(row.rules as u64),
            secs * 1e3,
            group((row.rules as f64 / secs) as u64),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: live flood on a veth pair
// ---------------------------------------------------------------------------------------------

/// Runs a command and returns its stdout, or an error with its stderr.
fn cmd(program: &str, args: &[&str]) -> BenchResult<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {program}: {e} (is it installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside namespace `ns` (`ip netns exec`, fine for iptables, nft, ethtool and
/// sysfs).
fn in_ns(ns: &str, program: &str, args: &[&str]) -> BenchResult<String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    cmd("ip", &all)
}

/// Runs a command inside namespace B.
fn in_b(program: &str, args: &[&str]) -> BenchResult<String> {
    in_ns(NS_B, program, args)
}

fn ipt_rule(op: &str) -> Vec<&str> {
    vec![
        "-w",
        "-t",
        "raw",
        op,
        "PREROUTING",
        "-s",
        FLOOD_SRC,
        "-m",
        "comment",
        "--comment",
        IPT_COMMENT,
        "-j",
        "DROP",
    ]
}

/// The two namespaces and the veth pair; everything the bench created is removed on drop.
struct Lab {
    xdp: Instance,
    mac_b: String,
}

impl Lab {
    fn create() -> BenchResult<Lab> {
        let mut lab = Lab {
            xdp: Instance::new(INSTANCE_FLOOD)?,
            mac_b: String::new(),
        };
        lab.teardown();
        cmd("ip", &["netns", "add", NS_A])?;
        cmd("ip", &["netns", "add", NS_B])?;
        cmd(
            "ip",
            &[
                "-n", NS_A, "link", "add", IFACE_A, "type", "veth", "peer", "name", IFACE_B,
                "netns", NS_B,
            ],
        )?;
        for (ns, iface, addr) in [(NS_A, IFACE_A, ADDR_A), (NS_B, IFACE_B, ADDR_B)] {
            cmd("ip", &["-n", ns, "addr", "add", addr, "dev", iface])?;
            cmd("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            cmd("ip", &["-n", ns, "link", "set", iface, "up"])?;
        }
        // veth takes redirected xdp_frames (ndo_xdp_xmit) only when the receiving side has an
        // XDP program or GRO; GRO stays on for every run, as on a NIC.
        in_b("ethtool", &["-K", IFACE_B, "gro", "on"])?;
        // Threaded NAPI: all of the receiver's work runs in its own kernel thread.
        let threaded = format!("/sys/class/net/{IFACE_B}/threaded");
        in_b("sh", &["-c", &format!("echo 1 > {threaded}")])?;
        if in_b("cat", &[&threaded])?.trim() != "1" {
            return Err(format!("threaded NAPI did not turn on for {IFACE_B}").into());
        }
        let brief = cmd("ip", &["-n", NS_B, "-br", "link", "show", "dev", IFACE_B])?;
        lab.mac_b = brief
            .split_whitespace()
            .nth(2)
            .filter(|m| m.len() == 17 && m.matches(':').count() == 5)
            .ok_or_else(|| format!("no MAC address in `ip -br link` output {brief:?}"))?
            .to_string();
        Ok(lab)
    }

    /// Removes whatever this bench (or a crashed earlier run) left: the XDP pins, the filter
    /// rules in namespace B, then both namespaces with their veth pair.
    fn teardown(&self) {
        if let Err(e) = program::detach(&self.xdp) {
            eprintln!("warning: removing {}: {e}", self.xdp.dir().display());
        }
        if Path::new("/run/netns").join(NS_B).exists() {
            let _ = in_b("nft", &["delete", "table", "netdev", NFT_TABLE]);
            let _ = in_b("iptables", &ipt_rule("-D"));
        }
        for ns in [NS_A, NS_B] {
            if Path::new("/run/netns").join(ns).exists()
                && let Err(e) = cmd("ip", &["netns", "del", ns])
            {
                eprintln!("warning: {e}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Filter {
    Xdp,
    IptablesRaw,
    NftIngress,
    None,
}

impl Filter {
    const ALL: [Filter; 4] = [
        Filter::Xdp,
        Filter::IptablesRaw,
        Filter::NftIngress,
        Filter::None,
    ];

    fn name(self) -> &'static str {
        match self {
            Filter::Xdp => "XDP native, blocked /24",
            Filter::IptablesRaw => "iptables raw PREROUTING DROP",
            Filter::NftIngress => "nft netdev ingress DROP",
            Filter::None => "no filter (baseline)",
        }
    }

    fn counted_by(self) -> &'static str {
        match self {
            Filter::Xdp => "XDP STATS drop/blocklisted",
            Filter::IptablesRaw => "iptables rule counter",
            Filter::NftIngress => "nft rule counter",
            Filter::None => "veth rx_packets (stack)",
        }
    }

    fn install(self, lab: &Lab) -> BenchResult<()> {
        match self {
            Filter::Xdp => {
                let instance = lab.xdp.clone();
                // setns moves only the calling thread, so attach from a thread of its own.
                let attached = thread::spawn(move || {
                    netns::enter(NS_B)?;
                    program::attach(
                        &instance,
                        IFACE_B,
                        AttachMode::Native,
                        Some(&bench_policy()),
                    )
                })
                .join()
                .map_err(|_| "the XDP attach thread panicked")??;
                if attached.mode != "native" {
                    return Err(
                        format!("XDP attached in {} mode, not native", attached.mode).into(),
                    );
                }
                Maps::open(&lab.xdp)?.block(net(FLOOD_SRC), None, BanReason::Manual)?;
            }
            Filter::IptablesRaw => {
                in_b("iptables", &ipt_rule("-A"))?;
            }
            Filter::NftIngress => {
                let chain = format!(
                    "add chain netdev {NFT_TABLE} ingress {{ type filter hook ingress device \"{IFACE_B}\" priority -500 ; }}"
                );
                let rule = format!(
                    "add rule netdev {NFT_TABLE} ingress ip saddr {FLOOD_SRC} counter drop"
                );
                in_b("nft", &["add", "table", "netdev", NFT_TABLE])?;
                in_b("nft", &[&chain])?;
                in_b("nft", &[&rule])?;
            }
            Filter::None => {}
        }
        Ok(())
    }

    fn remove(self, lab: &Lab) -> BenchResult<()> {
        match self {
            Filter::Xdp => {
                program::detach(&lab.xdp)?;
            }
            Filter::IptablesRaw => {
                in_b("iptables", &ipt_rule("-D"))?;
            }
            Filter::NftIngress => {
                in_b("nft", &["delete", "table", "netdev", NFT_TABLE])?;
            }
            Filter::None => {}
        }
        Ok(())
    }

    /// The filter's cumulative count of dropped (for the baseline: received) packets.
    fn count(self, lab: &Lab) -> BenchResult<u64> {
        match self {
            Filter::Xdp => Ok(Maps::open(&lab.xdp)?
                .stats()?
                .get(Verdict::Drop, Reason::Blocklisted)
                .packets),
            Filter::IptablesRaw => {
                let listing = in_b(
                    "iptables",
                    &["-w", "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"],
                )?;
                let line = listing
                    .lines()
                    .find(|l| l.contains(IPT_COMMENT))
                    .ok_or("the bench's iptables rule is missing")?;
                first_number(line, "iptables -L")
            }
            Filter::NftIngress => {
                let listing = in_b("nft", &["list", "chain", "netdev", NFT_TABLE, "ingress"])?;
                let after = listing
                    .split("packets ")
                    .nth(1)
                    .ok_or("no counter in the nft listing")?;
                first_number(after, "nft list")
            }
            Filter::None => {
                let path = format!("/sys/class/net/{IFACE_B}/statistics/rx_packets");
                first_number(&in_b("cat", &[&path])?, "rx_packets")
            }
        }
    }
}

fn first_number(text: &str, what: &str) -> BenchResult<u64> {
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("no packet count in the {what} output {text:?}").into())
}

/// Removes a filter when dropped, so a failed run leaves nothing active for the next one.
struct Installed<'a>(Filter, &'a Lab);

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.remove(self.1) {
            eprintln!("warning: removing {}: {e}", self.0.name());
        }
    }
}

/// Aggregate CPU times from the first line of /proc/stat, in clock ticks.
#[derive(Clone, Copy)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> BenchResult<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .filter(|l| l.starts_with("cpu "))
            .ok_or("/proc/stat has no cpu line")?
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // user nice system idle iowait irq softirq steal (guest time is inside user)
        let [user, nice, system, idle, iowait, irq, softirq, steal, ..] = fields[..] else {
            return Err("/proc/stat cpu line is too short".into());
        };
        let busy = user + nice + system + irq + softirq;
        Ok(CpuTimes {
            busy,
            total: busy + idle + iowait + steal,
        })
    }

    /// Busy share of all CPUs from `earlier` to `self`, in percent.
    fn busy_percent_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

/// Waits until the machine is quiet (busy below `QUIET_PCT` of all CPUs over half a second), at
/// most `QUIET_WAIT`; returns the last busy share measured, in percent.
fn settle() -> BenchResult<f64> {
    let deadline = Instant::now() + QUIET_WAIT;
    loop {
        let before = CpuTimes::read()?;
        thread::sleep(Duration::from_millis(500));
        let busy = CpuTimes::read()?.busy_percent_since(before);
        if busy < QUIET_PCT || Instant::now() >= deadline {
            return Ok(busy);
        }
    }
}

/// The receiving veth's NAPI kernel threads (`napi/fwb-vb-<napi id>`), each pinned to `RX_CPU`.
fn pinned_napi_threads() -> BenchResult<Vec<i32>> {
    let prefix = format!("napi/{IFACE_B}-");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.starts_with(&prefix) {
            pin(pid, RX_CPU)?;
            pids.push(pid);
        }
    }
    if pids.is_empty() {
        return Err(format!("no {prefix}* thread: threaded NAPI is off on {IFACE_B}").into());
    }
    Ok(pids)
}

/// Restricts thread `pid` to `cpu`.
fn pin(pid: i32, cpu: usize) -> BenchResult<()> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` (RX_CPU) is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the given size.
    let rc = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "pinning thread {pid} to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

/// Total CPU time the threads `pids` have run, from the scheduler's exact count
/// (`/proc/PID/schedstat`, first field, ns).
fn threads_cpu(pids: &[i32]) -> BenchResult<Duration> {
    let mut total = Duration::ZERO;
    for pid in pids {
        let path = format!("/proc/{pid}/schedstat");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{path}: {e} (did the NAPI thread go away?)"))?;
        total += Duration::from_nanos(first_number(&text, "schedstat")?);
    }
    Ok(total)
}

/// Frames the receiving veth's ring accepted from `ndo_xdp_xmit` so far (the sum of
/// `tx_queue_*_xdp_xmit` in `ethtool -S` of the sending veth).
fn xdp_xmit_accepted() -> BenchResult<u64> {
    let stats = in_ns(NS_A, "ethtool", &["-S", IFACE_A])?;
    let mut total = None;
    for line in stats.lines() {
        let Some((name, value)) = line.trim().split_once(':') else {
            continue;
        };
        if name.starts_with("tx_queue_") && name.ends_with("_xdp_xmit") {
            *total.get_or_insert(0) += first_number(value, "ethtool -S")?;
        }
    }
    total.ok_or_else(|| format!("no tx_queue_*_xdp_xmit in `ethtool -S {IFACE_A}`").into())
}

/// One flood and what the receiver spent on it.
struct Flood {
    sent: u64,
    secs: f64,
    /// Frames the receiving veth's ring took; the others found it full.
    accepted: u64,
    /// CPU time of the receiving veth's NAPI thread(s) during the flood.
    rx_cpu: Duration,
    /// Busy share of all CPUs just before the flood, in percent.
    background: f64,
}

fn flood(attacker: &Path, lab: &Lab) -> BenchResult<Flood> {
    let packets = FLOOD_PACKETS.to_string();
    let tx_cpu = TX_CPU.to_string();
    let background = settle()?;
    let napi = pinned_napi_threads()?;
    let rx_before = threads_cpu(&napi)?;
    let accepted_before = xdp_xmit_accepted()?;
    let out = Command::new(attacker)
        .args([
            "flood", "--netns", NS_A, "--iface", IFACE_A, "--src", FLOOD_SRC, "--dst", DST_B,
        ])
        .args(["--engine", "xdp", "--cpu", &tx_cpu, "--dst-mac", &lab.mac_b])
        .args(["--packets", &packets, "--duration", FLOOD_DURATION])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", attacker.display()))?;
    let rx_cpu = threads_cpu(&napi)?.saturating_sub(rx_before);
    let accepted = xdp_xmit_accepted()?.saturating_sub(accepted_before);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "attacker {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    // "sent N packets in S.SSs (R pps)"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let (sent, secs) = match words[..] {
        ["sent", n, "packets", "in", s, ..] => (
            n.parse::<u64>().ok(),
            s.trim_end_matches('s').parse::<f64>().ok(),
        ),
        _ => (None, None),
    };
    let (Some(sent), Some(secs)) = (sent, secs.filter(|s| *s > 0.0)) else {
        return Err(format!("unexpected attacker output {stdout:?}").into());
    };
    if accepted == 0 {
        return Err(format!(
            "{IFACE_B} accepted none of the {sent} redirected frames (GRO off and no XDP program?)"
        )
        .into());
    }
    Ok(Flood {
        sent,
        secs,
        accepted,
        rx_cpu,
        background,
    })
}

/// One filter's floods: (flood, packets dropped) per round, or the first failure.
struct FloodRow {
    filter: Filter,
    runs: Vec<(Flood, u64)>,
    error: Option<String>,
}

impl FloodRow {
    /// The runs, slowest drop rate first.
    fn sorted(&self) -> Vec<&(Flood, u64)> {
        let mut runs: Vec<&(Flood, u64)> = self.runs.iter().collect();
        runs.sort_by(|a, b| drop_rate(a).total_cmp(&drop_rate(b)));
        runs
    }

    /// The run with the highest drop rate.
    fn best(&self) -> Option<&(Flood, u64)> {
        self.sorted().last().copied()
    }

    /// The median drop rate.
    fn median_rate(&self) -> Option<f64> {
        let runs = self.sorted();
        runs.get(runs.len() / 2).map(|r| drop_rate(r))
    }
}

fn drop_rate((flood, dropped): &(Flood, u64)) -> f64 {
    *dropped as f64 / flood.secs
}

fn flood_with(filter: Filter, attacker: &Path, lab: &Lab) -> BenchResult<(Flood, u64)> {
    filter.install(lab)?;
    let _installed = Installed(filter, lab);
    let before = filter.count(lab)?;
    let flood = flood(attacker, lab)?;
    let dropped = filter.count(lab)?.saturating_sub(before);
    Ok((flood, dropped))
}

/// Builds the attacker (release) into this bench's target directory, or takes `FWB_ATTACKER`.
fn attacker_binary() -> BenchResult<PathBuf> {
    if let Some(path) = env::var_os("FWB_ATTACKER") {
        return Ok(path.into());
    }
    // This binary is <target>/<profile>/deps/pipeline-<hash>.
    let exe = env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("cannot find the target directory; set FWB_ATTACKER to the attacker binary")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("part 3: building the attacker (cargo build --release -p attacker)…");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "attacker",
            "--bin",
            "attacker",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target)
        .status()?;
    if !status.success() {
        return Err("building the attacker failed; build it yourself and set FWB_ATTACKER".into());
    }
    Ok(target.join("release").join("attacker"))
}

fn live_flood() -> BenchResult<()> {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cpus < 2 {
        return Err(format!(
            "part 3 needs CPUs {TX_CPU} and {RX_CPU} (sender and receiver); {cpus} online"
        )
        .into());
    }
    let attacker = attacker_binary()?;
    eprintln!("part 3: creating {NS_A} and {NS_B}…");
    let lab = Lab::create()?;
    // The first seconds of flooding on a fresh lab ran up to 1.7x slower here, every filter alike.
    eprintln!("part 3: warm-up flood, not measured…");
    flood(&attacker, &lab)?;

    let mut rows: Vec<FloodRow> = Filter::ALL
        .into_iter()
        .map(|filter| FloodRow {
            filter,
            runs: Vec::new(),
            error: None,
        })
        .collect();
    for round in 1..=FLOOD_ROUNDS {
        for row in rows.iter_mut().filter(|r| r.error.is_none()) {
            eprintln!(
                "part 3: round {round}/{FLOOD_ROUNDS}: flooding with {}…",
                row.filter.name()
            );
            match flood_with(row.filter, &attacker, &lab) {
                Ok(run) => {
                    let (flood, dropped) = &run;
                    eprintln!(
                        "  sent/s {}, dropped/s {}, rx ns/drop {:.0}",
                        group((flood.sent as f64 / flood.secs) as u64),
                        group(drop_rate(&run) as u64),
                        flood.rx_cpu.as_nanos() as f64 / (*dropped).max(1) as f64
                    );
                    row.runs.push(run);
                }
                Err(e) => row.error = Some(e.to_string()),
            }
        }
    }
    let iptables_version = cmd("iptables", &["--version"]).unwrap_or_default();
    drop(lab);
    print_flood_table(&rows, iptables_version.trim());
    Ok(())
}

fn print_flood_table(rows: &[FloodRow], iptables_version: &str) {
    println!();
    println!(
        "PART 3: live flood, {NS_A}/{IFACE_A} -> {NS_B}/{IFACE_B} (veth), UDP from the 254 spoofed sources of the blocked {FLOOD_SRC}"
    );
    println!(
        "  sender: `attacker --engine xdp` on CPU {TX_CPU}, at most {} packets or {FLOOD_DURATION} per run: BPF_PROG_TEST_RUN",
        group(FLOOD_PACKETS)
    );
    println!(
        "    live frames (60-byte UDP, source address and port rewritten per frame) redirected through a"
    );
    println!(
        "    DevMap out of {IFACE_A}; {IFACE_B} receives xdp_frames through ndo_xdp_xmit, no skb, as XDP gets them from"
    );
    println!(
        "    a NIC driver. (The AF_PACKET engine, `--engine packet`, is not used here: veth copies its skbs"
    );
    println!(
        "    into a page before XDP runs, and their receive work runs in softirq on the sender's CPU.)"
    );
    println!(
        "  receiver: {IFACE_B} with GRO on (as NICs ship; veth takes xdp_frames only with GRO or an XDP program)"
    );
    println!(
        "    and threaded NAPI: all receive work (veth ring, XDP or skb + GRO + stack, page return) runs in"
    );
    println!("    the kernel thread napi/{IFACE_B}-*, pinned to CPU {RX_CPU}.");
    println!("  sent/s      frames the generator made per second (the attacker's report)");
    println!(
        "  taken/s     frames {IFACE_B}'s ring took (`ethtool -S {IFACE_A}` tx_queue_*_xdp_xmit); the rest found it"
    );
    println!(
        "              full and were freed by the sender, as a NIC misses frames it has no room for"
    );
    println!(
        "  dropped     packets the filter dropped, from the counter named in `counted by`; for the"
    );
    println!("              baseline, packets the stack received (and discarded: no UDP listener)");
    println!("  dropped/s   dropped divided by the attacker's run time");
    println!(
        "  range/s     lowest and highest dropped/s over {FLOOD_ROUNDS} rounds; each round floods once per filter in"
    );
    println!(
        "              turn, and each row shows the filter's best round: this VM has slow spells of several"
    );
    println!(
        "              seconds (everything, the sender too, ~1.8x slower), which only ever slow a run down"
    );
    println!(
        "  rx busy%    CPU time of the NAPI thread (/proc/PID/schedstat) over the run time: ~100 = the"
    );
    println!("              receiver was the bottleneck");
    println!(
        "  rx ns/drop  that CPU time divided by dropped: the receiver's whole cost per packet"
    );
    println!("  bg%         other load (all CPUs) just before the run");
    println!("  iptables: {iptables_version} (the raw rule is an nftables chain at priority -300)");
    println!(
        "{:<30} {:<27} {:>10} {:>10} {:>11} {:>10} {:>11} {:>8} {:>11} {:>4}",
        "filter",
        "counted by",
        "sent/s",
        "taken/s",
        "dropped",
        "dropped/s",
        "range/s",
        "rx busy%",
        "rx ns/drop",
        "bg%"
    );
    let mut figures = Vec::new();
    for row in rows {
        let (best, median) = match (&row.error, row.best(), row.median_rate()) {
            (Some(e), ..) => {
                println!("{:<30} failed: {e}", row.filter.name());
                continue;
            }
            (None, Some(best), Some(median)) => (best, median),
            _ => continue,
        };
        let (f, dropped) = best;
        let rate = drop_rate(best);
        let busy = 100.0 * f.rx_cpu.as_secs_f64() / f.secs;
        let ns = (*dropped > 0).then(|| f.rx_cpu.as_nanos() as f64 / *dropped as f64);
        figures.push((row.filter, rate, median, ns, busy));
        let rates = row.runs.iter().map(drop_rate);
        let (low, high) = rates.fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
        println!(
            "{:<30} {:<27} {:>10} {:>10} {:>11} {:>10} {:>11} {:>8.0} {:>11} {:>4.0}",
            row.filter.name(),
            row.filter.counted_by(),
            group((f.sent as f64 / f.secs) as u64),
            group((f.accepted as f64 / f.secs) as u64),
            group(*dropped),
            group(rate as u64),
            format!("{:.2}-{:.2}M", low / 1e6, high / 1e6),
            busy,
            ns.map_or("-".to_string(), |ns| format!("{ns:.0}")),
            f.background,
        );
    }
    let of = |filter| figures.iter().find(|(f, ..)| *f == filter);
    if let (Some(&(_, xdp, xdp_median, xdp_ns, xdp_busy)), Some(&(_, ipt, ipt_median, ipt_ns, _))) =
        (of(Filter::Xdp), of(Filter::IptablesRaw))
    {
        let ratio = xdp / ipt.max(1.0);
        println!(
            "XDP vs iptables raw, dropped/s of the best rounds: {ratio:.2}x (target >= 3x: {}); of the medians: {:.2}x",
            if ratio >= 3.0 { "ok" } else { "MISSED" },
            xdp_median / ipt_median.max(1.0)
        );
        if let (Some(xdp_ns), Some(ipt_ns)) = (xdp_ns, ipt_ns) {
            println!(
                "XDP vs iptables raw, receiver CPU per dropped packet (best rounds): {:.2}x less",
                ipt_ns / xdp_ns
            );
        }
        if xdp_busy < 90.0 {
            println!(
                "  note: the XDP receiver was busy only {xdp_busy:.0}% of the run; its drop rate is bounded by the sender"
            );
        }
    }
}

/// `1234567` as `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

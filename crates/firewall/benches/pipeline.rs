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
const FLOOD_PACKETS: u64 = 4_000_000;
const FLOOD_DURATION: &str = "8s";
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

/// Runs a command inside namespace B (`ip netns exec`, fine for iptables, nft and sysfs).
fn in_b(program: &str, args: &[&str]) -> BenchResult<String> {
    let mut all = vec!["netns", "exec", NS_B, program];
    all.extend_from_slice(args);
    cmd("ip", &all)
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
    softirq: u64,
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
            softirq: irq + softirq,
            total: busy + idle + iowait + steal,
        })
    }

    /// Busy share of all CPUs from `earlier` to `self`, in percent.
    fn busy_percent_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }

    fn since(self, earlier: CpuTimes) -> (Duration, Duration) {
        (
            ticks(self.busy.saturating_sub(earlier.busy)),
            ticks(self.softirq.saturating_sub(earlier.softirq)),
        )
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

fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / hz)
}

/// User plus system time of all waited-for children of this process.
fn children_cpu() -> Duration {
    // SAFETY: rusage is plain data; zeroed is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a writable rusage; RUSAGE_CHILDREN cannot fail with it.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One flood and the CPU it cost.
struct Flood {
    sent: u64,
    secs: f64,
    /// Non-idle CPU time of all CPUs (user+nice+system+irq+softirq) during the flood.
    busy: Duration,
    /// irq+softirq time of all CPUs during the flood.
    softirq: Duration,
    /// The attacker's own user+system time (rusage).
    attacker: Duration,
    /// Busy share of all CPUs just before the flood, in percent.
    background: f64,
}

fn flood(attacker: &Path, lab: &Lab) -> BenchResult<Flood> {
    let packets = FLOOD_PACKETS.to_string();
    let background = settle()?;
    let before_children = children_cpu();
    let before = CpuTimes::read()?;
    let out = Command::new(attacker)
        .args([
            "--netns", NS_A, "--iface", IFACE_A, "--src", FLOOD_SRC, "--dst", DST_B,
        ])
        .args([
            "--dst-mac",
            &lab.mac_b,
            "--packets",
            &packets,
            "--duration",
            FLOOD_DURATION,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", attacker.display()))?;
    let after = CpuTimes::read()?;
    let attacker_cpu = children_cpu().saturating_sub(before_children);
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
    let (busy, softirq) = after.since(before);
    Ok(Flood {
        sent,
        secs,
        busy,
        softirq,
        attacker: attacker_cpu,
        background,
    })
}

struct FloodRow {
    filter: Filter,
    result: BenchResult<(Flood, u64)>,
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
    let attacker = attacker_binary()?;
    eprintln!("part 3: creating {NS_A} and {NS_B}…");
    let lab = Lab::create()?;

    let mut rows = Vec::new();
    for filter in Filter::ALL {
        eprintln!("part 3: flooding with {}…", filter.name());
        let result = flood_with(filter, &attacker, &lab);
        rows.push(FloodRow { filter, result });
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
        "  each run: attacker (AF_PACKET sendmmsg, 60-byte frames), at most {} packets or {FLOOD_DURATION}",
        group(FLOOD_PACKETS)
    );
    println!("  sent/s     packets the attacker sent per second (its own report)");
    println!("  dropped    packets the filter dropped, from the counter named in `counted by`;");
    println!(
        "             for the baseline, packets the stack received and discarded (no UDP listener)"
    );
    println!("  dropped/s  dropped divided by the attacker's run time; drop% = dropped / sent");
    println!(
        "  rx ns A    receiver CPU ns per dropped packet, as asked: delta over the run of all CPUs'"
    );
    println!(
        "             user+nice+system+irq+softirq in /proc/stat, minus the attacker's user+sys"
    );
    println!("             (getrusage of the reaped child), divided by dropped");
    println!("  rx ns B    the same from the irq+softirq time of all CPUs only (no subtraction)");
    println!(
        "  Why two: veth delivers in softirq on the sending CPU, mostly in the attacker's own"
    );
    println!(
        "  context. Without CONFIG_IRQ_TIME_ACCOUNTING (tick accounting) that softirq time is charged"
    );
    println!(
        "  to the attacker's rusage, so A subtracts most of the receiver's work and undercounts."
    );
    println!(
        "  B counts softirq wherever it ran (attacker context or ksoftirqd) and leaves out the"
    );
    println!("  sender's process-context work; it is the better estimate of the receiver's cost.");
    println!(
        "  /proc/stat counts in 1/{} s ticks. bg% = other load (all CPUs) just before the run; A counts it too.",
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_CLK_TCK) }
    );
    println!(
        "  Drops/s on veth: the receiver runs in softirq on the sending CPU, so every row's rate is"
    );
    println!(
        "  about 1 / (sender + receiver ns per packet) on one CPU, and the sender's share dominates."
    );
    println!(
        "  XDP on veth gets skbs, not driver buffers: veth copies each skb with under 256 bytes of"
    );
    println!("  headroom (all AF_PACKET ones) into a page_pool page before the program runs.");
    println!("  iptables: {iptables_version} (the raw rule is an nftables chain at priority -300)");
    println!(
        "{:<30} {:<27} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8} {:>4}",
        "filter",
        "counted by",
        "sent/s",
        "dropped",
        "dropped/s",
        "drop%",
        "rx ns A",
        "rx ns B",
        "bg%"
    );
    let mut rates = Vec::new();
    for row in rows {
        match &row.result {
            Ok((f, dropped)) => {
                let per_drop = |ns: f64| {
                    if *dropped == 0 {
                        "-".to_string()
                    } else {
                        format!("{:.0}", ns / *dropped as f64)
                    }
                };
                let ns = |d: Duration| d.as_nanos() as f64;
                let rate = *dropped as f64 / f.secs;
                rates.push((row.filter, rate));
                println!(
                    "{:<30} {:<27} {:>10} {:>10} {:>10} {:>6.1} {:>8} {:>8} {:>4.0}",
                    row.filter.name(),
                    row.filter.counted_by(),
                    group((f.sent as f64 / f.secs) as u64),
                    group(*dropped),
                    group(rate as u64),
                    100.0 * *dropped as f64 / f.sent.max(1) as f64,
                    per_drop(ns(f.busy) - ns(f.attacker)),
                    per_drop(ns(f.softirq)),
                    f.background,
                );
            }
            Err(e) => println!("{:<30} failed: {e}", row.filter.name()),
        }
    }
    let rate_of = |filter| rates.iter().find(|(f, _)| *f == filter).map(|(_, r)| *r);
    if let (Some(xdp), Some(ipt)) = (rate_of(Filter::Xdp), rate_of(Filter::IptablesRaw)) {
        let ratio = xdp / ipt.max(1.0);
        println!(
            "XDP drops/s vs iptables raw: {ratio:.2}x (target >= 3x: {})",
            if ratio >= 3.0 { "ok" } else { "MISSED" }
        );
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

//! The `xdp` engine: BPF_PROG_TEST_RUN live frames sent out of the interface by XDP redirect.
//!
//! The generator (`tools/attacker-ebpf`) runs on copies of one template frame, rewrites each
//! copy's source and redirects it through a DevMap out of the interface, so the peer gets
//! xdp_frames through `ndo_xdp_xmit`, as from a NIC driver: no skb exists until the receiver
//! builds one.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Ebpf,
    maps::{Array, DevMap},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp},
};

use crate::flood::{Bounds, Report};

/// The generator object, built by build.rs (empty under `AYA_BUILD_SKIP=1`).
static GENERATOR: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/generator"));
const PROGRAM: &str = "generator";
/// Most sources the generator's `SOURCES` map holds (its `SOURCES_MAX`).
pub const SOURCES_MAX: usize = 4096;
/// Frames the kernel runs and flushes per batch: the most it takes (256). The kernel sizes the
/// test run's page pool ring by it; with 64, most pages coming back from the receiver overflow
/// that ring and go back to the page allocator, which made the XDP filter's receiver cost per
/// frame 1.6x higher here.
const LIVE_BATCH: u32 = 256;
/// Repeats of the first test run, before the rate is known.
const CHUNK_FIRST: u64 = 65_536;
/// Later test runs are sized to last about this long at the rate seen, or to the time left if
/// less, so `--duration` is overshot by little. Each run adds the program to the kernel's XDP
/// dispatcher and removes it again, two RCU grace periods (tens of ms) in which nothing is
/// sent; second-long runs keep that to a few percent.
const CHUNK_TIME: Duration = Duration::from_secs(1);
/// With `--pps`, one run of `pps × PACE_INTERVAL` frames per interval (bursts at full speed).
const PACE_INTERVAL: Duration = Duration::from_millis(100);

/// Floods through `iface` with copies of `template`, cycling the source through `sources`.
/// Call it from a thread inside the namespace of the interface: the DevMap resolves the
/// ifindex in the caller's namespace.
pub fn flood(
    iface: &str,
    ifindex: u32,
    template: &[u8],
    sources: &[IpAddr],
    bounds: &Bounds,
) -> Result<Report> {
    if GENERATOR.is_empty() {
        bail!("the XDP generator was not built (AYA_BUILD_SKIP was set); rebuild without it");
    }
    if sources.len() > SOURCES_MAX {
        bail!("at most {SOURCES_MAX} sources");
    }
    let mut ebpf = Ebpf::load(GENERATOR).context("loading the XDP generator object")?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM:?} in the generator object"))?
        .try_into()?;
    program.load().context("loading the XDP generator")?;

    let mut settings: Array<_, u32> = Array::try_from(map(&mut ebpf, "SETTINGS")?)?;
    settings.set(0, sources.len() as u32, 0)?;
    let mut table: Array<_, [u8; 16]> = Array::try_from(map(&mut ebpf, "SOURCES")?)?;
    for (i, source) in sources.iter().enumerate() {
        let mut bytes = [0u8; 16];
        match source {
            IpAddr::V4(a) => bytes[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => bytes = a.octets(),
        }
        table.set(i as u32, bytes, 0)?;
    }
    let mut target = DevMap::try_from(map(&mut ebpf, "TARGET")?)?;
    target
        .set(0, ifindex, None, 0)
        .context("writing the interface into the generator's DevMap")?;

    let program: &Xdp = ebpf
        .program(PROGRAM)
        .ok_or_else(|| anyhow!("no program {PROGRAM:?} in the generator object"))?
        .try_into()?;
    let run = |repeat: u64| -> Result<()> {
        let opts = TestRunOptions {
            data_in: Some(template),
            repeat: repeat as u32,
            attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
            ..TestRunOptions::default()
        };
        program
            .test_run(opts)
            .context("BPF_PROG_TEST_RUN in live-frames mode (kernel 5.18 or later)")?;
        Ok(())
    };

    let tx_before = tx_packets(iface)?;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut chunk = CHUNK_FIRST;
    let paced_chunk = (bounds.pps as f64 * PACE_INTERVAL.as_secs_f64()).max(1.0) as u64;
    while sent < bounds.packets && started.elapsed() < bounds.duration {
        let mut repeat = (bounds.packets - sent).min(chunk);
        if bounds.pps > 0 {
            repeat = repeat.min(paced_chunk);
        }
        let chunk_started = Instant::now();
        run(repeat)?;
        sent += repeat;
        // Size the next run to CHUNK_TIME (or the time left, if less) at the rate just seen.
        let rate = repeat as f64 / chunk_started.elapsed().as_secs_f64().max(1e-6);
        let left = bounds.duration.saturating_sub(started.elapsed());
        chunk = ((rate * CHUNK_TIME.min(left).as_secs_f64()) as u64)
            .clamp(u64::from(LIVE_BATCH), u64::from(u32::MAX));
        if bounds.pps > 0 {
            let due = Duration::from_secs_f64(sent as f64 / bounds.pps as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let took = started.elapsed();
    let taken = tx_packets(iface)?.saturating_sub(tx_before);
    // tx_packets also counts the namespace's own traffic (neighbour discovery and the like).
    if taken.saturating_mul(100) < sent {
        eprintln!(
            "warning: {iface} counted only {taken} of the {sent} frames out: a veth peer takes \
             them only with an XDP program attached or GRO on (ethtool -K PEER gro on)"
        );
    }
    Ok(Report {
        sent,
        took,
        taken: Some(taken),
    })
}

/// The interface's tx_packets, from the calling thread's namespace; veth counts there the
/// frames its peer's ring took from `ndo_xdp_xmit`.
fn tx_packets(iface: &str) -> Result<u64> {
    const PATH: &str = "/proc/thread-self/net/dev";
    let table = std::fs::read_to_string(PATH).with_context(|| format!("reading {PATH}"))?;
    // "  name: rx_bytes rx_packets errs drop fifo frame compressed multicast tx_bytes tx_packets"
    table
        .lines()
        .filter_map(|line| line.trim_start().split_once(':'))
        .find(|(name, _)| *name == iface)
        .and_then(|(_, counters)| counters.split_whitespace().nth(9)?.parse().ok())
        .ok_or_else(|| anyhow!("no tx_packets for {iface} in {PATH}"))
}

fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("no map {name:?} in the generator object"))
}

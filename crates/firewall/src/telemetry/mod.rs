//! Attach the kernel telemetry (tracepoint programs) for the node's network namespace and read
//! its counters: kernel stack drops by reason, inbound TCP handshakes and retransmissions on the
//! P2P port, and the receive-path latency histogram.
//!
//! # Design
//! The programs are optional one by one: [`Telemetry::start`] loads the object, then loads and
//! attaches each program, and records for each tracepoint whether it is attached or why not.
//! Only when nothing at all could be attached does it fail. The offsets the programs read at
//! come from tracefs (record layouts) and BTF (kernel structs), so one build serves every
//! kernel that has those fields. Inbound handshakes are followed in a bounded table: a SYN adds
//! its source, a completed handshake removes it, and [`Telemetry::sweep`] (every
//! [`SWEEP_INTERVAL`] in the node, and before each read) removes entries older than
//! [`HANDSHAKE_TIMEOUT`], counting them abandoned.
//!
//! The maps are not pinned: the telemetry belongs to the process that started it and is
//! detached when it stops.

pub mod btf;
pub mod tracefs;

use std::collections::HashMap as StdHashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::TracePoint,
};
use firewall_common::telemetry::{
    CodeRange, DROP_REASON_OTHER, FIELD_ABSENT, HANDSHAKES_MAX, HandshakeKey, KernelOffsets,
    LATENCY_BUCKETS, RecordOffsets, TelemetryConfig, XDP_DROP_SITES, drop_index, map_names,
    programs, tcp,
};

use crate::clock::now_ns;
use btf::Btf;

/// The telemetry programs, built by build.rs.
static TELEMETRY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/telemetry"));

/// An inbound handshake not completed within this long is counted abandoned: a handshake on a
/// working path takes milliseconds, and Linux gives up on an unanswered SYN-ACK after about a
/// minute, so 10 s separates a flood's half-open connections from slow peers.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the node sweeps the handshake table between scrapes.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Most entries one sweep visits: the table twice over (a walk restarted by the kernel's
/// deletions repeats entries).
const SWEEP_VISITS_MAX: usize = 2 * HANDSHAKES_MAX as usize;
/// The kernel's symbol table.
const KALLSYMS: &str = "/proc/kallsyms";
/// The network namespace of the calling thread.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";
/// Prefix of the kernel's drop reason names, removed for labels.
const DROP_REASON_PREFIX: &str = "SKB_DROP_REASON_";
/// Name of a drop reason slot the kernel's enum does not name.
pub const UNKNOWN_REASON: &str = "other";

/// Errors of the kernel telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The BTF is malformed.
    #[error("{0}")]
    Btf(String),
    /// The kernel's BTF lacks a type.
    #[error("the kernel's BTF has no type {name}")]
    BtfType { name: String },
    /// The kernel's BTF lacks a member.
    #[error("the kernel's BTF has no byte-aligned member {path} in {name}")]
    BtfMember { name: String, path: String },
    /// tracefs is missing or unreadable.
    #[error("{message}")]
    Tracefs { message: String },
    /// A tracepoint's record lacks a field a program reads.
    #[error("tracepoint {tracepoint} has no field {field}")]
    Field { tracepoint: String, field: String },
    /// The object is empty (built with AYA_BUILD_SKIP=1).
    #[error("the telemetry programs were not built (AYA_BUILD_SKIP=1?); rebuild without it")]
    NotBuilt,
    /// The object could not be loaded.
    #[error("loading the telemetry object failed: {source}")]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// A map could not be opened, read or written.
    #[error("telemetry map {name}: {message}")]
    Map { name: &'static str, message: String },
    /// No program could be attached.
    #[error("no telemetry program could be attached: {details}")]
    NothingAttached { details: String },
}

/// Whether one tracepoint's program is attached, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// `category:name`.
    pub tracepoint: String,
    /// `Ok` when attached; otherwise why not.
    pub result: Result<(), String>,
}

/// Kernel stack drops of one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropCount {
    /// The kernel's reason name, lowercase, without its prefix (`no_socket`).
    pub reason: String,
    /// Drops of packets to the P2P port.
    pub p2p: u64,
    /// Drops of every other packet of the namespace.
    pub other: u64,
}

/// Inbound handshakes on the P2P port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Handshakes {
    /// New SYNs (a retransmitted SYN is not a new handshake).
    pub started: u64,
    /// Sockets that reached ESTABLISHED.
    pub completed: u64,
    /// Not completed within [`HANDSHAKE_TIMEOUT`], or failed after the SYN_RECV socket existed.
    pub abandoned: u64,
    /// Started while the table was full: never followed to an end.
    pub untracked: u64,
    /// Followed and not ended yet.
    pub pending: u64,
}

/// The receive-latency histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Samples per bucket (see `firewall_common::telemetry::LATENCY_BUCKETS`): bucket 0 under
    /// 1 µs, bucket `i` under 2^i µs.
    pub buckets: Vec<u64>,
    /// Sum of every sample, nanoseconds.
    pub sum_ns: u64,
}

impl Latency {
    /// Upper bound of bucket `i` in seconds (`None` for the last, open one).
    pub fn upper_bound_seconds(i: usize) -> Option<f64> {
        (i + 1 < LATENCY_BUCKETS as usize).then(|| (1u64 << i) as f64 / 1e6)
    }
}

/// Everything the telemetry counted since it started; `None` where the programs that count it
/// are not attached (zeros would read as "nothing happened").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TelemetryCounts {
    /// Drops by reason, one entry per reason the kernel knows, in code order.
    pub drops: Option<Vec<DropCount>>,
    /// Inbound handshakes.
    pub handshakes: Option<Handshakes>,
    /// Segments retransmitted on P2P connections.
    pub retransmits: Option<u64>,
    /// SYN-ACKs the P2P listener retransmitted.
    pub synack_retransmits: Option<u64>,
    /// Stack-to-reader latency of TCP data on the P2P port.
    pub latency: Option<Latency>,
}

/// The attached telemetry of one process.
pub struct Telemetry {
    ebpf: Ebpf,
    attachments: Vec<Attachment>,
    /// (slot, label) for every slot the kernel names, plus the catch-all.
    reasons: Vec<(u32, String)>,
    /// Handshakes swept as abandoned.
    abandoned: u64,
    /// Handshakes followed and not ended at the last sweep.
    pending: u64,
    handshake_timeout: Duration,
}

impl Telemetry {
    /// Loads the programs for this process's network namespace and `p2p_port`, and attaches
    /// every one that can be. Fails only when none can.
    pub fn start(p2p_port: u16) -> Result<Telemetry, TelemetryError> {
        if TELEMETRY_OBJECT.is_empty() {
            return Err(TelemetryError::NotBuilt);
        }
        let tracefs = tracefs::ensure_mounted()?;
        let btf = Btf::from_kernel()?;
        // The calling thread's namespace: a thread may have entered another than the process's.
        let netns = std::fs::metadata(THREAD_NETNS).map_err(|source| TelemetryError::Read {
            path: THREAD_NETNS.into(),
            source,
        })?;
        let (records, unavailable) = record_offsets(&tracefs);
        let config = TelemetryConfig {
            netns_inode: netns.ino() as u32,
            p2p_port,
            _pad: 0,
            records,
            kernel: kernel_offsets(&btf)?,
            xdp_drop_sites: xdp_drop_sites(),
        };
        let reasons = drop_reasons(&btf);
        let mut ebpf =
            EbpfLoader::new()
                .load(TELEMETRY_OBJECT)
                .map_err(|source| TelemetryError::Load {
                    source: Box::new(source),
                })?;
        let mut config_map: Array<&mut MapData, TelemetryConfig> =
            Array::try_from(ebpf.map_mut(map_names::CONFIG).ok_or(TelemetryError::Map {
                name: map_names::CONFIG,
                message: "missing from the object".into(),
            })?)
            .map_err(|e| map_error(map_names::CONFIG, e))?;
        config_map
            .set(0, config, 0)
            .map_err(|e| map_error(map_names::CONFIG, e))?;
        let mut attachments = Vec::new();
        for (program, category, name) in programs::ALL {
            let result = match unavailable.get(program) {
                Some(why) => Err(why.clone()),
                None => attach(&mut ebpf, program, category, name),
            };
            attachments.push(Attachment {
                tracepoint: format!("{category}:{name}"),
                result,
            });
        }
        if attachments.iter().all(|a| a.result.is_err()) {
            let details = attachments
                .iter()
                .filter_map(|a| {
                    a.result
                        .as_ref()
                        .err()
                        .map(|e| format!("{}: {e}", a.tracepoint))
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(TelemetryError::NothingAttached { details });
        }
        Ok(Telemetry {
            ebpf,
            attachments,
            reasons,
            abandoned: 0,
            pending: 0,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// Counts a handshake abandoned after `timeout` instead of [`HANDSHAKE_TIMEOUT`].
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Per program: its tracepoint, how many times it ran and the nanoseconds it took in
    /// total, while the kernel's BPF statistics are on (`sysctl kernel.bpf_stats_enabled=1`).
    pub fn run_stats(&self) -> Vec<(String, u64, Duration)> {
        programs::ALL
            .iter()
            .filter_map(|(program, category, name)| {
                let tracepoint: &TracePoint = self.ebpf.program(program)?.try_into().ok()?;
                let info = tracepoint.info().ok()?;
                Some((
                    format!("{category}:{name}"),
                    info.run_count(),
                    info.run_time(),
                ))
            })
            .collect()
    }

    /// Each tracepoint, attached or why not, in attach order.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Whether `program` (one of `programs::ALL`) is attached.
    fn attached(&self, program: (&str, &str, &str)) -> bool {
        let tracepoint = format!("{}:{}", program.1, program.2);
        self.attachments
            .iter()
            .any(|a| a.tracepoint == tracepoint && a.result.is_ok())
    }

    /// Sums entry `index` of a per-CPU counter array over every CPU.
    fn per_cpu_total(&self, name: &'static str, index: u32) -> Result<u64, TelemetryError> {
        let values = self
            .per_cpu(name)?
            .get(&index, 0)
            .map_err(|e| map_error(name, e))?;
        Ok(values.iter().fold(0u64, |sum, v| sum.wrapping_add(*v)))
    }

    /// Reads every counter (summed over CPUs) after a sweep of the handshake table.
    pub fn read(&mut self) -> Result<TelemetryCounts, TelemetryError> {
        self.sweep()?;
        let mut counts = TelemetryCounts::default();
        if self.attached(programs::SKB_DROPS) {
            let mut drops = Vec::with_capacity(self.reasons.len());
            for (slot, reason) in &self.reasons {
                drops.push(DropCount {
                    reason: reason.clone(),
                    p2p: self.per_cpu_total(map_names::SKB_DROPS, drop_index(true, *slot))?,
                    other: self.per_cpu_total(map_names::SKB_DROPS, drop_index(false, *slot))?,
                });
            }
            counts.drops = Some(drops);
        }
        let tcp_count = |i: u32| self.per_cpu_total(map_names::TCP, i);
        if self.attached(programs::RX) && self.attached(programs::SOCK_STATE) {
            counts.handshakes = Some(Handshakes {
                started: tcp_count(tcp::STARTED)?,
                completed: tcp_count(tcp::COMPLETED)?,
                abandoned: self.abandoned + tcp_count(tcp::FAILED)?,
                untracked: tcp_count(tcp::UNTRACKED)?,
                pending: self.pending,
            });
        }
        if self.attached(programs::RETRANSMIT) {
            counts.retransmits = Some(tcp_count(tcp::RETRANSMIT_SEGMENT)?);
        }
        if self.attached(programs::RETRANSMIT_SYNACK) {
            counts.synack_retransmits = Some(tcp_count(tcp::RETRANSMIT_SYNACK)?);
        }
        if self.attached(programs::RX) && self.attached(programs::RX_COPY) {
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS as usize);
            for i in 0..LATENCY_BUCKETS {
                buckets.push(self.per_cpu_total(map_names::RX_LATENCY, i)?);
            }
            counts.latency = Some(Latency {
                buckets,
                sum_ns: self.per_cpu_total(map_names::RX_LATENCY, LATENCY_BUCKETS)?,
            });
        }
        Ok(counts)
    }

    fn per_cpu(&self, name: &'static str) -> Result<PerCpuArray<&MapData, u64>, TelemetryError> {
        let map = self.ebpf.map(name).ok_or(TelemetryError::Map {
            name,
            message: "missing from the object".into(),
        })?;
        PerCpuArray::try_from(map).map_err(|e| map_error(name, e))
    }

    /// Removes handshakes older than the timeout from the table, counting them abandoned, and
    /// counts those still pending. The node calls it every few seconds ([`SWEEP_INTERVAL`]) so
    /// the table never stays full of dead handshakes between scrapes.
    pub fn sweep(&mut self) -> Result<(), TelemetryError> {
        let name = map_names::HANDSHAKES;
        let cutoff = now_ns().saturating_sub(self.handshake_timeout.as_nanos() as u64);
        let map = self.ebpf.map_mut(name).ok_or(TelemetryError::Map {
            name,
            message: "missing from the object".into(),
        })?;
        let mut table: HashMap<&mut MapData, HandshakeKey, u64> =
            HashMap::try_from(map).map_err(|e| map_error(name, e))?;
        // When the kernel deletes the key a walk stands on, the walk starts again from the
        // first key: the set removes repeats, and the cap bounds the walk.
        let mut seen = std::collections::HashSet::new();
        let mut expired = Vec::new();
        let mut pending = 0u64;
        for entry in table.iter().take(SWEEP_VISITS_MAX) {
            let Ok((key, started_ns)) = entry else {
                break;
            };
            if !seen.insert(key) {
                continue;
            }
            if started_ns < cutoff {
                expired.push(key);
            } else {
                pending += 1;
            }
        }
        for key in expired {
            // Not found: the handshake completed meanwhile, and was counted so.
            if table.remove(&key).is_ok() {
                self.abandoned += 1;
            }
        }
        self.pending = pending;
        Ok(())
    }
}

fn map_error(name: &'static str, e: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Map {
        name,
        message: e.to_string(),
    }
}

/// Loads and attaches one program; the error says why it is not attached.
fn attach(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> Result<(), String> {
    let tracepoint: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the object"))?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    tracepoint
        .load()
        .map_err(|e| format!("the kernel rejected the program: {e}"))?;
    tracepoint
        .attach(category, name)
        .map_err(|e| format!("attaching failed: {e}"))?;
    Ok(())
}

/// The record offsets from tracefs, and for each program whose tracepoint lacks a field, why.
fn record_offsets(tracefs: &std::path::Path) -> (RecordOffsets, StdHashMap<&'static str, String>) {
    let mut records = RecordOffsets::default();
    let mut unavailable = StdHashMap::new();
    for (program, category, name) in programs::ALL {
        let found = tracefs::fields(tracefs, category, name).and_then(|fields| {
            let tracepoint = format!("{category}:{name}");
            // A field the program reads, checked to have the size it reads.
            let get = |field: &str, size: u32| match fields.get(field) {
                Some(f) if f.size == size => Ok(f.offset),
                Some(f) => Err(TelemetryError::Field {
                    tracepoint: tracepoint.clone(),
                    field: format!("{field} of {size} bytes (the kernel's has {})", f.size),
                }),
                None => Err(TelemetryError::Field {
                    tracepoint: tracepoint.clone(),
                    field: field.to_string(),
                }),
            };
            let optional = |field: &str, size: u32| match fields.get(field) {
                None => Ok(FIELD_ABSENT),
                Some(_) => get(field, size),
            };
            let r = &mut records;
            match program {
                p if p == programs::SKB_DROPS.0 => {
                    r.kfree_skb_skbaddr = get("skbaddr", 8)?;
                    r.kfree_skb_protocol = get("protocol", 2)?;
                    r.kfree_skb_reason = get("reason", 4)?;
                    r.kfree_skb_location = get("location", 8)?;
                    r.kfree_skb_rx_sk = optional("rx_sk", 8)?;
                }
                p if p == programs::RX.0 => r.rx_skbaddr = get("skbaddr", 8)?,
                p if p == programs::RX_COPY.0 => r.copy_skbaddr = get("skbaddr", 8)?,
                p if p == programs::SOCK_STATE.0 => {
                    r.state_skaddr = get("skaddr", 8)?;
                    r.state_oldstate = get("oldstate", 4)?;
                    r.state_newstate = get("newstate", 4)?;
                    r.state_sport = get("sport", 2)?;
                    r.state_dport = get("dport", 2)?;
                    r.state_family = get("family", 2)?;
                    r.state_protocol = get("protocol", 2)?;
                    r.state_daddr = get("daddr", 4)?;
                    r.state_daddr_v6 = get("daddr_v6", 16)?;
                }
                p if p == programs::RETRANSMIT.0 => {
                    r.retransmit_skaddr = get("skaddr", 8)?;
                    r.retransmit_sport = get("sport", 2)?;
                    r.retransmit_dport = get("dport", 2)?;
                    r.retransmit_err = optional("err", 4)?;
                }
                _ => {
                    r.synack_skaddr = get("skaddr", 8)?;
                    r.synack_sport = get("sport", 2)?;
                }
            }
            Ok(())
        });
        if let Err(e) = found {
            unavailable.insert(program, e.to_string());
        }
    }
    (records, unavailable)
}

/// Where the kernel's XDP drop sites are, from `/proc/kallsyms` (a function ends where the next
/// symbol starts). Without them (no kallsyms, addresses hidden) XDP's drops of socket buffers
/// are counted as the stack's `not_specified` drops, which the log says.
fn xdp_drop_sites() -> [CodeRange; XDP_DROP_SITES.len()] {
    let mut sites = [CodeRange::default(); XDP_DROP_SITES.len()];
    let text = match std::fs::read_to_string(KALLSYMS) {
        Ok(text) => text,
        Err(e) => {
            log::warn!(
                "kernel telemetry: cannot read {KALLSYMS} ({e}): XDP drops in generic mode and on veth count as kernel stack drops (not_specified)"
            );
            return sites;
        }
    };
    let (starts, found) = kallsyms_sites(&text);
    for (site, start) in sites.iter_mut().zip(found) {
        let Some(start) = start else { continue };
        let next = starts.partition_point(|a| *a <= start);
        if let Some(end) = starts.get(next) {
            *site = CodeRange { start, end: *end };
        }
    }
    if sites.iter().all(|s| s.start == 0) {
        log::warn!(
            "kernel telemetry: no XDP drop site found in {KALLSYMS} (addresses hidden by kernel.kptr_restrict?): XDP drops in generic mode and on veth count as kernel stack drops (not_specified)"
        );
    }
    sites
}

/// Every distinct non-zero symbol address of a kallsyms listing, sorted, and the address of
/// each function of [`XDP_DROP_SITES`] when listed.
fn kallsyms_sites(text: &str) -> (Vec<u64>, [Option<u64>; XDP_DROP_SITES.len()]) {
    let mut starts = Vec::new();
    let mut found = [None; XDP_DROP_SITES.len()];
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if addr == 0 {
            continue;
        }
        starts.push(addr);
        if let Some(i) = XDP_DROP_SITES.iter().position(|s| *s == name) {
            found[i].get_or_insert(addr);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    (starts, found)
}

/// The kernel struct offsets from BTF.
fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, TelemetryError> {
    Ok(KernelOffsets {
        skb_head: btf.offset_of("sk_buff", "head")?,
        skb_data: btf.offset_of("sk_buff", "data")?,
        skb_network_header: btf.offset_of("sk_buff", "network_header")?,
        skb_protocol: btf.offset_of("sk_buff", "protocol")?,
        skb_dev: btf.offset_of("sk_buff", "dev")?,
        skb_sk: btf.offset_of("sk_buff", "sk")?,
        dev_net: btf.offset_of("net_device", "nd_net.net")?,
        sock_net: btf.offset_of("sock", "__sk_common.skc_net.net")?,
        sock_num: btf.offset_of("sock", "__sk_common.skc_num")?,
        net_inum: btf.offset_of("net", "ns.inum")?,
    })
}

/// The drop reason labels: every core reason the kernel's enum names (lowercase, without the
/// prefix), in code order, then the catch-all slot. A kernel whose BTF lacks the enum gets every
/// slot named by its code (`code_<n>`).
fn drop_reasons(btf: &Btf) -> Vec<(u32, String)> {
    let named: Vec<(u32, String)> = btf
        .enum_values("skb_drop_reason")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| {
            let slot = u32::try_from(value)
                .ok()
                .filter(|v| *v < DROP_REASON_OTHER)?;
            let label = name.strip_prefix(DROP_REASON_PREFIX)?;
            (label != "MAX").then(|| (slot, label.to_ascii_lowercase()))
        })
        .collect();
    let mut reasons = if named.is_empty() {
        (0..DROP_REASON_OTHER)
            .map(|s| (s, format!("code_{s}")))
            .collect()
    } else {
        named
    };
    reasons.push((DROP_REASON_OTHER, UNKNOWN_REASON.to_string()));
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_give_each_drop_site_its_start_and_the_next_symbol_its_end() {
        let text = "ffffffff81e08a30 t veth_xdp_rcv_skb\n\
                    ffffffff81e09510 t veth_xdp_rcv_one\n\
                    0000000000000000 t hidden\n\
                    ffffffff81e09510 t alias_of_rcv_one\n\
                    ffffffff81e09960 t veth_xdp_rcv\n\
                    garbage line\n\
                    ffffffffc0001000 t do_xdp_generic\t[some_module]\n\
                    ffffffffc0001400 T next_one\t[some_module]\n";
        let (starts, found) = kallsyms_sites(text);
        assert_eq!(
            starts,
            vec![
                0xffffffff81e08a30,
                0xffffffff81e09510,
                0xffffffff81e09960,
                0xffffffffc0001000,
                0xffffffffc0001400
            ]
        );
        assert_eq!(found[0], Some(0xffffffffc0001000));
        assert_eq!(found[1], None);
        assert_eq!(found[2], Some(0xffffffff81e08a30));
        assert_eq!(found[3], Some(0xffffffff81e09510));
    }

    #[test]
    fn the_running_kernels_drop_sites_are_found_with_an_end_past_their_start() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: /proc/kallsyms shows addresses to root only");
            return;
        }
        let sites = xdp_drop_sites();
        assert!(sites.iter().any(|s| s.start != 0), "{sites:?}");
        for site in sites.iter().filter(|s| s.start != 0) {
            assert!(site.end > site.start, "{site:?}");
        }
    }
}

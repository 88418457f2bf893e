//! Gather the node's metrics for `/metrics`: the loop's counters, the kernel filter, RocksDB
//! and the process, written in the Prometheus text format.
//!
//! # Design
//! One job copies what the runtime counts into a plain [`RuntimeSnapshot`] (cheap clones of
//! counter maps), so the loop is held for microseconds. The slow reads happen outside it, on a
//! blocking thread: the kernel maps (walking every rule, so their cost grows with the rules),
//! RocksDB's properties and `/proc`. Then every family is written from the [`Snapshot`].
//!
//! Every family is always written with its `HELP` and `TYPE` lines, so the set of families is
//! fixed (`docs/metrics.md` lists it, and a test holds the two equal); a family whose source is
//! absent (no kernel filter, no database) or unreadable has no samples. Label values are fixed
//! names from the code, never an address or a peer id. The code has the whole list of values of
//! every label of its own counters (verdicts and reasons of the filter, ban reasons, filter
//! modes, gossip topics and results, gate rules, report sources, refusals and rejections), so
//! every series is written, zeros included, and exists from the start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use chain::mempool::{MempoolCounters, MempoolError};
use chain::{BlockError, LedgerCounters};
use consensus::{EngineCounters, Rejection};
use firewall::rules::RuleKind;
use firewall::telemetry::{Latency, Telemetry, TelemetryCounts};
use firewall::{BanReason, Reason, Verdict};
use p2p::NetworkCounters;
use p2p::gate::Refusal;
use p2p::peers::{PeerCounters, Source};
use storage::Store;

use crate::api::{Api, ApiError};
use crate::filter::{Filter, FilterMode};
use crate::metrics::{Exposition, Histogram, Kind};
use crate::process::{self, CpuStats, MemoryStats};
use crate::runtime::{Runtime, RuntimeStats};

/// Label value of a kernel block entry whose ban reason code this build does not know.
const UNKNOWN_BAN_REASON: &str = "unknown";

/// What the loop holds, copied in one job.
#[derive(Debug, Clone, Default)]
struct RuntimeSnapshot {
    consensus_height: u64,
    consensus_round: u32,
    stats: RuntimeStats,
    engine: EngineCounters,
    chain_height: u64,
    ledger: LedgerCounters,
    mempool_transactions: usize,
    mempool_bytes: usize,
    mempool_capacity: usize,
    mempool: MempoolCounters,
    peers_inbound: usize,
    peers_outbound: usize,
    /// Distinct connected peers, whatever the direction.
    peers_connected: usize,
    /// Validators in the current set.
    validators: usize,
    network: NetworkCounters,
    peers: PeerCounters,
    /// Active bans by ban reason name.
    bans_active: BTreeMap<&'static str, u64>,
}

impl RuntimeSnapshot {
    /// Copies the counters out of the loop.
    fn take<S: Store>(runtime: &mut Runtime<S>) -> RuntimeSnapshot {
        let stats = runtime.stats().clone();
        let engine = runtime.engine();
        let ledger = engine.ledger();
        let mempool = engine.mempool();
        let mut snapshot = RuntimeSnapshot {
            consensus_height: engine.height(),
            consensus_round: engine.round().unwrap_or(0),
            stats,
            engine: engine.counters().clone(),
            chain_height: ledger.height(),
            ledger: ledger.counters().clone(),
            mempool_transactions: mempool.len(),
            mempool_bytes: mempool.bytes(),
            mempool_capacity: mempool.config().max_txs,
            mempool: mempool.counters().clone(),
            validators: ledger.validators().active().count(),
            ..RuntimeSnapshot::default()
        };
        let network = runtime.network();
        // A peer counts once per direction, however many connections it holds.
        let peers: BTreeSet<(bool, p2p::PeerId)> = network
            .connections()
            .into_iter()
            .map(|c| (c.inbound, c.peer))
            .collect();
        snapshot.peers_inbound = peers.iter().filter(|(inbound, _)| *inbound).count();
        snapshot.peers_outbound = peers.len() - snapshot.peers_inbound;
        snapshot.peers_connected = peers
            .iter()
            .map(|(_, peer)| peer)
            .collect::<BTreeSet<_>>()
            .len();
        snapshot.network = network.counters().clone();
        snapshot.peers = network.peers().counters().clone();
        for ban in network.peers().bans(p2p::clock::now_ms()) {
            *snapshot.bans_active.entry(ban.reason.name()).or_default() += 1;
        }
        snapshot
    }
}

/// The kernel filter's state, read from its maps.
#[derive(Debug, Clone, Default)]
struct KernelSnapshot {
    /// Packets and bytes per (verdict, reason), summed over CPUs.
    stats: firewall::Stats,
    allow_rules: u64,
    block_rules: u64,
    /// Unexpired block entries by ban reason name.
    blocks_active: BTreeMap<&'static str, u64>,
    /// The filter drops (enforce mode) rather than only counting (monitor mode).
    enforcing: bool,
}

/// Whether the kernel maps could be read.
#[derive(Debug, Clone)]
enum Kernel {
    /// No XDP filter is attached.
    Absent,
    /// Attached, but its maps could not be read (logged).
    Unreadable,
    /// Attached and read.
    Read(KernelSnapshot),
}

impl Kernel {
    fn read(filter: &Filter) -> Kernel {
        let Some(maps) = filter.maps() else {
            return Kernel::Absent;
        };
        let read = || -> Result<KernelSnapshot, firewall::FirewallError> {
            let now_ns = firewall::clock::now_ns();
            let mut snapshot = KernelSnapshot {
                stats: maps.stats()?,
                enforcing: !maps.config()?.is_monitor(),
                ..KernelSnapshot::default()
            };
            for rule in maps.list()? {
                match rule.kind {
                    RuleKind::Allow(_) => snapshot.allow_rules += 1,
                    RuleKind::Block(entry) => {
                        snapshot.block_rules += 1;
                        if entry.is_active(now_ns) {
                            let reason = BanReason::from_code(entry.reason)
                                .map_or(UNKNOWN_BAN_REASON, BanReason::name);
                            *snapshot.blocks_active.entry(reason).or_default() += 1;
                        }
                    }
                }
            }
            Ok(snapshot)
        };
        match read() {
            Ok(snapshot) => Kernel::Read(snapshot),
            Err(e) => {
                log::warn!("metrics: cannot read the kernel filter's maps: {e}");
                Kernel::Unreadable
            }
        }
    }
}

/// What the kernel telemetry counted, read on the scrape's blocking thread.
#[derive(Debug, Clone)]
struct TelemetrySnapshot {
    /// Each tracepoint, and whether its program is attached.
    attached: Vec<(String, bool)>,
    /// The counters, unless they could not be read (logged).
    counts: Option<TelemetryCounts>,
}

impl TelemetrySnapshot {
    fn read(telemetry: &Mutex<Telemetry>) -> TelemetrySnapshot {
        let mut telemetry = match telemetry.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let attached = telemetry
            .attachments()
            .iter()
            .map(|a| (a.tracepoint.clone(), a.result.is_ok()))
            .collect();
        let counts = telemetry
            .read()
            .map_err(|e| log::warn!("metrics: cannot read the kernel telemetry: {e}"))
            .ok();
        TelemetrySnapshot { attached, counts }
    }
}

/// Everything one scrape writes.
#[derive(Debug, Clone)]
struct Snapshot {
    runtime: RuntimeSnapshot,
    filter_mode: FilterMode,
    kernel: Kernel,
    /// None without telemetry.
    telemetry: Option<TelemetrySnapshot>,
    /// Bytes per column family (empty without a database).
    columns: Vec<(&'static str, u64)>,
    cpu: Option<CpuStats>,
    memory: Option<MemoryStats>,
    open_fds: Option<u64>,
    version: &'static str,
    uptime_seconds: f64,
    rate_limited: u64,
    connections_open: u64,
    connections_refused: u64,
}

/// A reading of `/proc`, or `None` with the failure logged.
fn logged<T>(what: &str, result: Result<T, process::ProcessError>) -> Option<T> {
    result
        .map_err(|e| log::warn!("metrics: cannot read the process's {what}: {e}"))
        .ok()
}

/// Collects a snapshot of the node and writes it in the Prometheus text format.
pub async fn render(api: &Api) -> Result<String, ApiError> {
    let runtime = api.handle.call(RuntimeSnapshot::take).await?;
    let filter = api.filter.clone();
    let telemetry = api.telemetry.clone();
    let db = api.db.clone();
    let version = api.info.version;
    let uptime_ms = p2p::clock::now_ms().saturating_sub(api.info.started_ms);
    let rate_limited = api.limiter.refused();
    let (connections_open, connections_refused) =
        (api.connections.open(), api.connections.refused());
    let snapshot = tokio::task::spawn_blocking(move || Snapshot {
        runtime,
        filter_mode: filter.mode(),
        kernel: Kernel::read(&filter),
        telemetry: telemetry.map(|t| TelemetrySnapshot::read(&t)),
        columns: db.map(|db| db.column_sizes()).unwrap_or_default(),
        cpu: logged("CPU time", process::cpu()),
        memory: logged("memory", process::memory()),
        open_fds: logged("open files", process::open_fds()),
        version,
        uptime_seconds: uptime_ms as f64 / 1000.0,
        rate_limited,
        connections_open,
        connections_refused,
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(write(&snapshot))
}

/// Writes one counter per value of `label`: zeros for every name in `all`, then the counts.
fn by_label(
    out: &mut Exposition,
    name: &str,
    help: &str,
    label: &str,
    all: &[&'static str],
    counts: &BTreeMap<&'static str, u64>,
    kind: Kind,
) {
    let mut values: BTreeMap<&str, u64> = all.iter().map(|v| (*v, 0)).collect();
    values.extend(counts.iter().map(|(k, v)| (*k, *v)));
    out.family(name, kind, help);
    for (value, count) in values {
        out.sample(name, &[(label, value)], count as f64);
    }
}

/// Writes one counter per pair of label values: zeros for every pair of a name in `all[0]`
/// and a name in `all[1]`, then the counts.
fn by_pair(
    out: &mut Exposition,
    name: &str,
    help: &str,
    labels: [&str; 2],
    all: [&[&'static str]; 2],
    counts: &BTreeMap<(&'static str, &'static str), u64>,
) {
    let mut values: BTreeMap<(&str, &str), u64> = all[0]
        .iter()
        .flat_map(|a| all[1].iter().map(move |b| ((*a, *b), 0)))
        .collect();
    values.extend(counts.iter().map(|(k, v)| (*k, *v)));
    out.family(name, Kind::Counter, help);
    for ((a, b), count) in values {
        out.sample(name, &[(labels[0], a), (labels[1], b)], count as f64);
    }
}

/// A family with one unlabelled sample, or none when the value is unknown.
fn maybe(out: &mut Exposition, name: &str, kind: Kind, help: &str, value: Option<f64>) {
    out.family(name, kind, help);
    if let Some(value) = value {
        out.sample(name, &[], value);
    }
}

fn ban_reason_names() -> Vec<&'static str> {
    BanReason::ALL.iter().map(|r| r.name()).collect()
}

/// Writes every family of `s`.
fn write(s: &Snapshot) -> String {
    let mut out = Exposition::new();
    write_firewall(&mut out, s);
    write_telemetry(&mut out, s.telemetry.as_ref());
    write_p2p(&mut out, &s.runtime);
    write_consensus(&mut out, &s.runtime);
    write_chain_mempool_sync(&mut out, &s.runtime);
    write_storage_process_node(&mut out, s);
    out.finish()
}

fn write_firewall(out: &mut Exposition, s: &Snapshot) {
    let kernel = match &s.kernel {
        Kernel::Read(kernel) => Some(kernel),
        Kernel::Absent | Kernel::Unreadable => None,
    };
    for (name, help, bytes) in [
        (
            "firewall_packets_total",
            "Packets the XDP filter saw, by verdict and reason (summed over CPUs).",
            false,
        ),
        (
            "firewall_bytes_total",
            "Bytes of the packets the XDP filter saw, by verdict and reason (summed over CPUs).",
            true,
        ),
    ] {
        out.family(name, Kind::Counter, help);
        let Some(kernel) = kernel else { continue };
        for verdict in Verdict::ALL {
            for reason in Reason::ALL {
                let counter = kernel.stats.get(verdict, reason);
                let value = if bytes {
                    counter.bytes
                } else {
                    counter.packets
                };
                out.sample(
                    name,
                    &[("verdict", verdict.name()), ("reason", reason.name())],
                    value as f64,
                );
            }
        }
    }
    out.family(
        "firewall_rules",
        Kind::Gauge,
        "Rules in the kernel maps, by kind (expired blocks awaiting sweeping included).",
    );
    if let Some(kernel) = kernel {
        for (kind, count) in [("allow", kernel.allow_rules), ("block", kernel.block_rules)] {
            out.sample("firewall_rules", &[("kind", kind)], count as f64);
        }
    }
    let help = "Unexpired block entries in the kernel maps, by ban reason.";
    match kernel {
        Some(kernel) => by_label(
            out,
            "firewall_blocks_active",
            help,
            "reason",
            &ban_reason_names(),
            &kernel.blocks_active,
            Kind::Gauge,
        ),
        None => {
            out.family("firewall_blocks_active", Kind::Gauge, help);
        }
    }
    out.family(
        "firewall_mode",
        Kind::Gauge,
        "How packets are filtered: 1 for the current mode, 0 for the others.",
    );
    for mode in FilterMode::ALL {
        out.sample(
            "firewall_mode",
            &[("mode", mode.name())],
            f64::from(u8::from(mode == s.filter_mode)),
        );
    }
    let enforcing = match &s.kernel {
        Kernel::Read(kernel) => Some(kernel.enforcing),
        Kernel::Absent => Some(false),
        Kernel::Unreadable => None,
    };
    maybe(
        out,
        "firewall_enforcing",
        Kind::Gauge,
        "1 when the kernel filter drops what its rules match, 0 in monitor mode or without one.",
        enforcing.map(|e| f64::from(u8::from(e))),
    );
}

fn write_telemetry(out: &mut Exposition, t: Option<&TelemetrySnapshot>) {
    let counts = t.and_then(|t| t.counts.as_ref());
    out.family(
        "kernel_skb_drops_total",
        Kind::Counter,
        "Packets the kernel stack dropped in the node's network namespace after XDP passed them, by kernel drop reason and by port (p2p: to the P2P port).",
    );
    for drop in counts.and_then(|c| c.drops.as_deref()).unwrap_or_default() {
        for (port, value) in [("p2p", drop.p2p), ("other", drop.other)] {
            out.sample(
                "kernel_skb_drops_total",
                &[("port", port), ("reason", &drop.reason)],
                value as f64,
            );
        }
    }
    let handshakes = counts.and_then(|c| c.handshakes);
    out.family(
        "kernel_tcp_handshakes_total",
        Kind::Counter,
        "Inbound TCP handshakes on the P2P port, by result: started (a new SYN), completed, abandoned (not completed within 10 s, or failed), untracked (started while the table was full).",
    );
    if let Some(h) = handshakes {
        for (result, value) in [
            ("started", h.started),
            ("completed", h.completed),
            ("abandoned", h.abandoned),
            ("untracked", h.untracked),
        ] {
            out.sample(
                "kernel_tcp_handshakes_total",
                &[("result", result)],
                value as f64,
            );
        }
    }
    maybe(
        out,
        "kernel_tcp_handshakes_pending",
        Kind::Gauge,
        "Inbound TCP handshakes on the P2P port started and not yet completed or abandoned.",
        handshakes.map(|h| h.pending as f64),
    );
    out.family(
        "kernel_tcp_retransmits_total",
        Kind::Counter,
        "TCP retransmissions on the P2P port, by kind: segment (on a connection) or synack (by the listener, to a handshake that got no ACK).",
    );
    for (kind, value) in [
        ("segment", counts.and_then(|c| c.retransmits)),
        ("synack", counts.and_then(|c| c.synack_retransmits)),
    ] {
        if let Some(value) = value {
            out.sample(
                "kernel_tcp_retransmits_total",
                &[("kind", kind)],
                value as f64,
            );
        }
    }
    let help = "Seconds from the kernel stack receiving TCP data on the P2P port (right after XDP) to the node's read copying it from the socket.";
    match counts.and_then(|c| c.latency.as_ref()) {
        Some(latency) => {
            let bounds: Vec<f64> = (0..latency.buckets.len())
                .map_while(Latency::upper_bound_seconds)
                .collect();
            let over = latency
                .buckets
                .get(bounds.len()..)
                .map_or(0, |rest| rest.iter().sum());
            let histogram = Histogram::from_counts(
                &bounds,
                &latency.buckets,
                over,
                latency.sum_ns as f64 * 1e-9,
            );
            out.histogram("kernel_receive_latency_seconds", help, &histogram);
        }
        None => {
            out.family("kernel_receive_latency_seconds", Kind::Histogram, help);
        }
    }
    out.family(
        "kernel_telemetry_attached",
        Kind::Gauge,
        "Kernel telemetry programs, by tracepoint: 1 when attached, 0 when it could not be.",
    );
    for (tracepoint, attached) in t.map_or(&[][..], |t| &t.attached[..]) {
        out.sample(
            "kernel_telemetry_attached",
            &[("tracepoint", tracepoint)],
            f64::from(u8::from(*attached)),
        );
    }
}

fn write_p2p(out: &mut Exposition, r: &RuntimeSnapshot) {
    out.family(
        "p2p_peers",
        Kind::Gauge,
        "Connected peers, by who dialled (a peer with connections both ways counts in both).",
    );
    for (direction, count) in [("inbound", r.peers_inbound), ("outbound", r.peers_outbound)] {
        out.sample("p2p_peers", &[("direction", direction)], count as f64);
    }
    out.single(
        "p2p_peers_connected",
        Kind::Gauge,
        "Distinct connected peers, whatever the direction.",
        r.peers_connected as f64,
    );
    by_pair(
        out,
        "p2p_gossip_messages_total",
        "Gossip messages received, by topic and validation result.",
        ["topic", "result"],
        [
            &NetworkCounters::GOSSIP_TOPICS,
            &NetworkCounters::GOSSIP_RESULTS,
        ],
        &r.network.gossip,
    );
    let reasons = ban_reason_names();
    by_label(
        out,
        "p2p_bans_total",
        "Bans issued by the peer manager (automatic and by operators), by reason.",
        "reason",
        &reasons,
        &r.peers.bans,
        Kind::Counter,
    );
    by_label(
        out,
        "p2p_bans_active",
        "Bans in force, by reason.",
        "reason",
        &reasons,
        &r.bans_active,
        Kind::Gauge,
    );
    by_label(
        out,
        "p2p_connections_refused_total",
        "Connections refused by the connection gate before their handshake, by rule.",
        "rule",
        &Refusal::ALL.map(Refusal::name),
        &r.network.refused,
        Kind::Counter,
    );
    by_pair(
        out,
        "p2p_reports_total",
        "Misbehaviour reports received by the peer manager, by source and reason.",
        ["source", "reason"],
        [&Source::ALL.map(Source::name), &reasons],
        &r.peers.reports,
    );
    let n = &r.network;
    for (name, help, value) in [
        (
            "p2p_handshake_failures_total",
            "Inbound handshakes that failed.",
            n.handshake_failures,
        ),
        (
            "p2p_kernel_blocks_total",
            "Addresses of bans written to the kernel blocklist.",
            n.kernel_blocks,
        ),
        (
            "p2p_kernel_errors_total",
            "Kernel map writes for bans and the allowlist that failed.",
            n.kernel_errors,
        ),
        (
            "p2p_sync_requests_served_total",
            "Block-sync requests served.",
            n.sync_served,
        ),
    ] {
        out.single(name, Kind::Counter, help, value as f64);
    }
    by_label(
        out,
        "p2p_sync_requests_refused_total",
        "Block-sync requests refused, by reason.",
        "reason",
        &p2p::sync::Refusal::LABELS,
        &n.sync_refused,
        Kind::Counter,
    );
}

fn write_consensus(out: &mut Exposition, r: &RuntimeSnapshot) {
    out.single(
        "consensus_height",
        Kind::Gauge,
        "Height being decided.",
        r.consensus_height as f64,
    );
    out.single(
        "consensus_round",
        Kind::Gauge,
        "Round of the height being decided.",
        f64::from(r.consensus_round),
    );
    out.histogram(
        "consensus_finality_seconds",
        "Seconds from a block's proposal time to its commit here (blocks decided by voting).",
        &r.stats.finality,
    );
    let origins = ["sent", "received"];
    out.family(
        "consensus_proposals_total",
        Kind::Counter,
        "Proposals, by origin: sent by this node or received from the network.",
    );
    for (origin, count) in origins.iter().zip(r.stats.proposals) {
        out.sample(
            "consensus_proposals_total",
            &[("origin", origin)],
            count as f64,
        );
    }
    out.family(
        "consensus_votes_total",
        Kind::Counter,
        "Votes, by kind and origin: sent by this node or received from the network.",
    );
    for (kind, counts) in ["prevote", "precommit"].iter().zip(r.stats.votes) {
        for (origin, count) in origins.iter().zip(counts) {
            out.sample(
                "consensus_votes_total",
                &[("kind", kind), ("origin", origin)],
                count as f64,
            );
        }
    }
    out.single(
        "consensus_validators",
        Kind::Gauge,
        "Validators in the current set.",
        r.validators as f64,
    );
    out.single(
        "consensus_evidence_total",
        Kind::Counter,
        "Equivocations surfaced at finalization.",
        r.engine.evidence as f64,
    );
    out.single(
        "consensus_signing_refused_total",
        Kind::Counter,
        "Signatures the double-sign guard refused.",
        r.engine.signing_refused as f64,
    );
    by_label(
        out,
        "consensus_messages_rejected_total",
        "Consensus messages dropped on arrival, by reason.",
        "reason",
        &Rejection::LABELS,
        &r.engine.rejected,
        Kind::Counter,
    );
}

fn write_chain_mempool_sync(out: &mut Exposition, r: &RuntimeSnapshot) {
    out.single(
        "chain_height",
        Kind::Gauge,
        "Height of the last final block.",
        r.chain_height as f64,
    );
    out.single(
        "chain_blocks_committed_total",
        Kind::Counter,
        "Blocks committed since the node started.",
        r.ledger.blocks_committed as f64,
    );
    out.single(
        "chain_transactions_committed_total",
        Kind::Counter,
        "Transactions committed since the node started.",
        r.ledger.txs_committed as f64,
    );
    by_label(
        out,
        "chain_blocks_rejected_total",
        "Blocks the ledger refused, by reason.",
        "reason",
        &BlockError::LABELS,
        &r.ledger.blocks_rejected,
        Kind::Counter,
    );
    out.single(
        "mempool_transactions",
        Kind::Gauge,
        "Transactions pending in the mempool.",
        r.mempool_transactions as f64,
    );
    out.single(
        "mempool_bytes",
        Kind::Gauge,
        "Encoded bytes of the transactions pending in the mempool.",
        r.mempool_bytes as f64,
    );
    out.single(
        "mempool_capacity_transactions",
        Kind::Gauge,
        "Most transactions the mempool holds.",
        r.mempool_capacity as f64,
    );
    out.single(
        "mempool_accepted_total",
        Kind::Counter,
        "Transactions admitted to the mempool (replacements included).",
        r.mempool.accepted as f64,
    );
    by_label(
        out,
        "mempool_rejected_total",
        "Transactions the mempool refused, by reason.",
        "reason",
        &MempoolError::LABELS,
        &r.mempool.rejected,
        Kind::Counter,
    );
    out.single(
        "sync_peer_height",
        Kind::Gauge,
        "Highest height a peer reported.",
        r.stats.best_peer_height as f64,
    );
    out.single(
        "sync_behind_blocks",
        Kind::Gauge,
        "Blocks between the highest height a peer reported and this node's.",
        r.stats.best_peer_height.saturating_sub(r.chain_height) as f64,
    );
    out.single(
        "sync_blocks_applied_total",
        Kind::Counter,
        "Blocks applied from block sync or a gossiped certificate rather than by voting.",
        r.stats.synced_blocks as f64,
    );
}

fn write_storage_process_node(out: &mut Exposition, s: &Snapshot) {
    out.family(
        "storage_column_bytes",
        Kind::Gauge,
        "Bytes of each RocksDB column family: live SST files plus memtables.",
    );
    for (column, bytes) in &s.columns {
        out.sample("storage_column_bytes", &[("column", column)], *bytes as f64);
    }
    maybe(
        out,
        "process_cpu_seconds_total",
        Kind::Counter,
        "User and system CPU time of the node process, seconds.",
        s.cpu.map(|c| c.cpu_seconds),
    );
    maybe(
        out,
        "process_resident_memory_bytes",
        Kind::Gauge,
        "Resident memory of the node process, bytes.",
        s.memory.map(|m| m.resident_bytes as f64),
    );
    maybe(
        out,
        "process_virtual_memory_bytes",
        Kind::Gauge,
        "Virtual memory of the node process, bytes.",
        s.memory.map(|m| m.virtual_bytes as f64),
    );
    maybe(
        out,
        "process_open_fds",
        Kind::Gauge,
        "Open file descriptors of the node process.",
        s.open_fds.map(|n| n as f64),
    );
    maybe(
        out,
        "process_start_time_seconds",
        Kind::Gauge,
        "When the node process started, seconds since the UNIX epoch.",
        s.cpu.map(|c| c.start_time_seconds),
    );
    maybe(
        out,
        "process_threads",
        Kind::Gauge,
        "Threads of the node process.",
        s.cpu.map(|c| c.threads as f64),
    );
    out.family(
        "node_info",
        Kind::Gauge,
        "Always 1; the version of the node binary is a label.",
    );
    out.sample("node_info", &[("version", s.version)], 1.0);
    out.single(
        "node_uptime_seconds",
        Kind::Gauge,
        "Seconds since the node started.",
        s.uptime_seconds,
    );
    out.single(
        "api_rate_limited_total",
        Kind::Counter,
        "Public API requests refused with 429 (a client over its budget, or too many clients).",
        s.rate_limited as f64,
    );
    out.single(
        "api_connections_open",
        Kind::Gauge,
        "Open connections to the public and admin APIs, event streams included.",
        s.connections_open as f64,
    );
    out.single(
        "api_connections_refused_total",
        Kind::Counter,
        "API connections closed at once: over the total or the per-address connection bound.",
        s.connections_refused as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metrics reference; its table is the list of families.
    const DOC: &str = include_str!("../../../docs/metrics.md");

    /// (name, type, help) of each row of the tables in `docs/metrics.md` whose first cell is a
    /// code span.
    fn documented() -> BTreeMap<String, (String, String)> {
        let mut rows = BTreeMap::new();
        for line in DOC.lines() {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            let Some(name) = cells
                .first()
                .and_then(|c| c.trim().strip_prefix('`'))
                .and_then(|c| c.strip_suffix('`'))
            else {
                continue;
            };
            assert!(cells.len() >= 4, "row of {name} has too few cells: {line}");
            let previous = rows.insert(
                name.to_string(),
                (cells[1].trim().to_string(), cells[3].trim().to_string()),
            );
            assert!(previous.is_none(), "{name} is documented twice");
        }
        rows
    }

    /// (name, type, help) of each family in a rendered exposition.
    fn rendered(text: &str) -> BTreeMap<String, (String, String)> {
        let mut help = BTreeMap::new();
        let mut families = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, text) = rest.split_once(' ').unwrap();
                help.insert(name.to_string(), text.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let text = help.get(name).cloned().unwrap();
                let previous = families.insert(name.to_string(), (kind.to_string(), text));
                assert!(previous.is_none(), "{name} is written twice");
            }
        }
        families
    }

    /// A snapshot of a node that counted nothing, with no kernel filter, database or `/proc`.
    fn empty(filter_mode: FilterMode) -> Snapshot {
        Snapshot {
            runtime: RuntimeSnapshot::default(),
            filter_mode,
            kernel: Kernel::Absent,
            telemetry: None,
            columns: Vec::new(),
            cpu: None,
            memory: None,
            open_fds: None,
            version: "0.1.0",
            uptime_seconds: 0.0,
            rate_limited: 0,
            connections_open: 0,
            connections_refused: 0,
        }
    }

    /// Telemetry with one program missing and something counted everywhere.
    fn telemetry() -> TelemetrySnapshot {
        use firewall::telemetry::{DropCount, Handshakes};
        let mut buckets = vec![0; firewall_common::telemetry::LATENCY_BUCKETS as usize];
        buckets[0] = 1;
        buckets[3] = 2;
        *buckets.last_mut().unwrap() = 1;
        TelemetrySnapshot {
            attached: vec![
                ("skb:kfree_skb".into(), true),
                ("tcp:tcp_retransmit_synack".into(), false),
            ],
            counts: Some(TelemetryCounts {
                drops: Some(vec![
                    DropCount {
                        reason: "no_socket".into(),
                        p2p: 2,
                        other: 5,
                    },
                    DropCount {
                        reason: "other".into(),
                        p2p: 0,
                        other: 0,
                    },
                ]),
                handshakes: Some(Handshakes {
                    started: 10,
                    completed: 6,
                    abandoned: 3,
                    untracked: 1,
                    pending: 1,
                }),
                retransmits: Some(4),
                // Its program is not attached.
                synack_retransmits: None,
                latency: Some(Latency {
                    buckets,
                    sum_ns: 20_000_000_000,
                }),
            }),
        }
    }

    /// A snapshot with every source present and something counted everywhere.
    fn full() -> Snapshot {
        let mut runtime = RuntimeSnapshot {
            consensus_height: 8,
            consensus_round: 1,
            chain_height: 7,
            mempool_transactions: 2,
            mempool_bytes: 300,
            mempool_capacity: 50_000,
            peers_inbound: 1,
            peers_outbound: 2,
            ..RuntimeSnapshot::default()
        };
        runtime.stats.finality.observe(0.4);
        runtime.stats.votes = [[7, 14], [7, 14]];
        runtime.stats.best_peer_height = 9;
        runtime.engine.rejected.insert("vote_from_non_validator", 1);
        runtime.ledger.blocks_rejected.insert("wrong_parent", 1);
        runtime.mempool.rejected.insert("nonce_replay", 3);
        runtime.network.gossip.insert(("tx", "accept"), 5);
        runtime.network.refused.insert("per_ip", 1);
        runtime.network.sync_refused.insert("over_budget", 1);
        runtime.peers.reports.insert(("gossip", "spam"), 2);
        runtime.peers.bans.insert("spam", 1);
        runtime.bans_active.insert("spam", 1);
        let mut kernel = KernelSnapshot {
            allow_rules: 4,
            block_rules: 2,
            enforcing: true,
            ..KernelSnapshot::default()
        };
        kernel.blocks_active.insert("manual", 1);
        Snapshot {
            runtime,
            filter_mode: FilterMode::XdpGeneric,
            kernel: Kernel::Read(kernel),
            telemetry: Some(telemetry()),
            columns: vec![("blocks", 4096), ("meta", 0)],
            cpu: Some(CpuStats {
                cpu_seconds: 1.5,
                threads: 9,
                start_time_seconds: 1.7e9,
            }),
            memory: Some(MemoryStats {
                resident_bytes: 1 << 20,
                virtual_bytes: 1 << 30,
            }),
            open_fds: Some(12),
            version: "0.1.0",
            uptime_seconds: 3.5,
            rate_limited: 2,
            connections_open: 3,
            connections_refused: 1,
        }
    }

    #[test]
    fn every_family_is_documented_with_the_same_type_and_help_and_none_is_extra() {
        let doc = documented();
        assert!(!doc.is_empty(), "no table rows found in docs/metrics.md");
        for snapshot in [full(), empty(FilterMode::Off)] {
            let families = rendered(&write(&snapshot));
            let names: BTreeSet<&String> = families.keys().collect();
            let documented: BTreeSet<&String> = doc.keys().collect();
            assert_eq!(names, documented, "rendered vs documented families");
            for (name, (kind, help)) in &families {
                let (doc_kind, doc_help) = &doc[name];
                assert_eq!(kind, doc_kind, "type of {name}");
                assert_eq!(help, doc_help, "help of {name}");
            }
        }
    }

    #[test]
    fn counters_end_in_total_and_names_carry_their_area() {
        const AREAS: [&str; 11] = [
            "api_",
            "kernel_",
            "firewall_",
            "p2p_",
            "consensus_",
            "chain_",
            "mempool_",
            "sync_",
            "storage_",
            "process_",
            "node_",
        ];
        for (name, (kind, _)) in rendered(&write(&full())) {
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(
                AREAS.iter().any(|a| name.starts_with(a)),
                "{name} has no known area"
            );
        }
    }

    #[test]
    fn kernel_series_exist_at_zero_for_every_verdict_and_reason() {
        let text = write(&full());
        let pass = "firewall_packets_total{verdict=\"pass\",reason=\"no_match\"} 0\n";
        assert!(text.contains(pass), "{text}");
        let series = text
            .lines()
            .filter(|l| l.starts_with("firewall_bytes_total{"))
            .count();
        assert_eq!(series, Verdict::ALL.len() * Reason::ALL.len());
        assert!(text.contains("firewall_blocks_active{reason=\"manual\"} 1\n"));
        assert!(text.contains("firewall_blocks_active{reason=\"spam\"} 0\n"));
        assert!(text.contains("firewall_mode{mode=\"xdp_generic\"} 1\n"));
        assert!(text.contains("firewall_mode{mode=\"xdp_native\"} 0\n"));
        assert!(text.contains("firewall_enforcing 1\n"));
    }

    #[test]
    fn without_a_kernel_filter_its_families_have_no_samples_and_enforcing_is_zero() {
        let snapshot = empty(FilterMode::Userspace);
        let text = write(&snapshot);
        assert!(text.contains("# TYPE firewall_packets_total counter\n"));
        assert!(!text.contains("firewall_packets_total{"), "{text}");
        assert!(!text.contains("firewall_rules{"), "{text}");
        assert!(text.contains("firewall_mode{mode=\"userspace\"} 1\n"));
        assert!(text.contains("firewall_enforcing 0\n"));
        let unreadable = Snapshot {
            kernel: Kernel::Unreadable,
            ..snapshot
        };
        assert!(!write(&unreadable).contains("firewall_enforcing 0"));
    }

    #[test]
    fn telemetry_counts_become_samples_and_its_latency_a_cumulative_histogram() {
        let text = write(&full());
        for line in [
            "kernel_skb_drops_total{port=\"p2p\",reason=\"no_socket\"} 2\n",
            "kernel_skb_drops_total{port=\"other\",reason=\"no_socket\"} 5\n",
            "kernel_skb_drops_total{port=\"p2p\",reason=\"other\"} 0\n",
            "kernel_tcp_handshakes_total{result=\"abandoned\"} 3\n",
            "kernel_tcp_handshakes_pending 1\n",
            "kernel_tcp_retransmits_total{kind=\"segment\"} 4\n",
            "kernel_receive_latency_seconds_bucket{le=\"0.000001\"} 1\n",
            "kernel_receive_latency_seconds_bucket{le=\"0.000008\"} 3\n",
            "kernel_receive_latency_seconds_bucket{le=\"+Inf\"} 4\n",
            "kernel_receive_latency_seconds_sum 20\n",
            "kernel_telemetry_attached{tracepoint=\"tcp:tcp_retransmit_synack\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("kernel_tcp_retransmits_total{kind=\"synack\"}"),
            "{text}"
        );
        let without = write(&empty(FilterMode::Off));
        assert!(without.contains("# TYPE kernel_skb_drops_total counter\n"));
        assert!(!without.contains("kernel_skb_drops_total{"), "{without}");
    }

    #[test]
    fn runtime_counters_become_labelled_samples() {
        let text = write(&full());
        for line in [
            "consensus_votes_total{kind=\"precommit\",origin=\"received\"} 14\n",
            "consensus_finality_seconds_count 1\n",
            "p2p_gossip_messages_total{topic=\"tx\",result=\"accept\"} 5\n",
            "p2p_connections_refused_total{rule=\"per_ip\"} 1\n",
            "p2p_reports_total{source=\"gossip\",reason=\"spam\"} 2\n",
            "p2p_sync_requests_refused_total{reason=\"over_budget\"} 1\n",
            "consensus_messages_rejected_total{reason=\"vote_from_non_validator\"} 1\n",
            "chain_blocks_rejected_total{reason=\"wrong_parent\"} 1\n",
            "p2p_bans_total{reason=\"spam\"} 1\n",
            "p2p_bans_total{reason=\"manual\"} 0\n",
            "p2p_peers{direction=\"outbound\"} 2\n",
            "mempool_rejected_total{reason=\"nonce_replay\"} 3\n",
            "sync_behind_blocks 2\n",
            "storage_column_bytes{column=\"blocks\"} 4096\n",
            "node_info{version=\"0.1.0\"} 1\n",
            "process_cpu_seconds_total 1.5\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_series_of_the_runtime_labelled_counters_exists_at_zero_before_any_event() {
        let families = [
            (
                "p2p_gossip_messages_total",
                NetworkCounters::GOSSIP_TOPICS.len() * NetworkCounters::GOSSIP_RESULTS.len(),
                "{topic=\"unknown\",result=\"unknown_topic\"}",
            ),
            (
                "p2p_connections_refused_total",
                Refusal::ALL.len(),
                "{rule=\"banned\"}",
            ),
            (
                "p2p_reports_total",
                Source::ALL.len() * BanReason::ALL.len(),
                "{source=\"operator\",reason=\"manual\"}",
            ),
            (
                "p2p_sync_requests_refused_total",
                p2p::sync::Refusal::LABELS.len(),
                "{reason=\"bad_request\"}",
            ),
            (
                "consensus_messages_rejected_total",
                Rejection::LABELS.len(),
                "{reason=\"sync_certificate\"}",
            ),
            (
                "chain_blocks_rejected_total",
                BlockError::LABELS.len(),
                "{reason=\"state_error\"}",
            ),
            (
                "mempool_rejected_total",
                MempoolError::LABELS.len(),
                "{reason=\"full\"}",
            ),
            (
                "p2p_bans_total",
                BanReason::ALL.len(),
                "{reason=\"manual\"}",
            ),
        ];
        let before = write(&empty(FilterMode::Off));
        // Counting adds no series: it moves one of those written from the start.
        let after = write(&full());
        for (family, count, zero) in families {
            let samples = |text: &str| -> Vec<String> {
                text.lines()
                    .filter(|l| l.starts_with(&format!("{family}{{")))
                    .map(str::to_string)
                    .collect()
            };
            let zeros = samples(&before);
            assert_eq!(zeros.len(), count, "series of {family}: {zeros:#?}");
            assert!(
                zeros.iter().all(|l| l.ends_with(" 0")),
                "{family} before any event: {zeros:#?}"
            );
            assert!(
                zeros.contains(&format!("{family}{zero} 0")),
                "{family}{zero} 0 missing in {zeros:#?}"
            );
            assert_eq!(
                samples(&after).len(),
                count,
                "series of {family} once counted"
            );
        }
    }

    #[test]
    fn an_unreadable_proc_source_drops_only_its_samples() {
        let snapshot = Snapshot {
            cpu: None,
            ..full()
        };
        let text = write(&snapshot);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(!text.contains("\nprocess_cpu_seconds_total "), "{text}");
        assert!(!text.contains("\nprocess_threads "), "{text}");
        assert!(
            text.contains("\nprocess_resident_memory_bytes 1048576\n"),
            "{text}"
        );
    }
}

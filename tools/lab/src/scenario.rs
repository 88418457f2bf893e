//! One lab run: start the honest nodes, watch them, run the transaction stream and the phases,
//! judge each phase, make the final checks, and stop every child, also on Ctrl-C or SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::watch;

use crate::client::{Client, Endpoint};
use crate::judge::{self, names};
use crate::monitoring::{self, Monitor};
use crate::observe::{self, Shared, lock};
use crate::options::Options;
use crate::phase::{BLOCKED_RANGE, Phase};
use crate::procs::{Proc, Spawner};
use crate::prom::Metrics;
use crate::report::{Check, PhaseReport, Report};
use crate::setup::{BYZANTINE_STAKE, Chain, dial_addr};
use crate::stats::Quantiles;
use crate::topology::{IFACE, P2P_PORT, Topology, mac_text};
use crate::txstream::{self, Stream};

/// The nodes' log filter: info, but not the consensus library's per-vote lines.
const NODE_LOG: &str = "info,arc_malachitebft_core_consensus=warn";
/// Height every node reaches before the first phase.
const WARMUP_HEIGHT: u64 = 2;
/// The stream runs this long before the quiet phase, so the baseline is measured on a network
/// past its start (first blocks, empty mempools, cold caches).
const WARMUP: Duration = Duration::from_secs(5);
/// Longest wait for the network to reach [`WARMUP_HEIGHT`] (debug builds on two cores).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// A node gets this long after SIGTERM before SIGKILL.
const NODE_STOP_GRACE: Duration = Duration::from_secs(10);
/// An attacker gets this long past its `--duration` to exit by itself.
const ATTACKER_GRACE: Duration = Duration::from_secs(20);
/// The restart phase's pause between the kill and the new start.
const RESTART_PAUSE: Duration = Duration::from_secs(3);
/// Longest wait past the restart phase's duration for the node to catch up and sign.
const RESTART_GRACE: Duration = Duration::from_secs(45);
/// The restarted node has caught up when it is at most this many heights behind validator 0.
const CATCH_UP_SLACK: u64 = 1;
/// Longest wait past the equivocate phase's duration for the slashing to be committed.
const SLASH_GRACE: Duration = Duration::from_secs(20);
/// How often the lab polls while it waits for something.
const POLL: Duration = Duration::from_millis(500);
/// A flood's packet bound when it is unpaced (the attacker's own bound is 100 M).
const FLOOD_PACKET_BOUND: u64 = 20_000_000;
/// `attacker connect-flood --connections`.
const CONNECT_FLOOD_CONNECTIONS: u32 = 64;
/// `attacker connect-flood --rate`, per second: under the filter's 20 SYN/s per source, so the
/// node's ban, not the rate limit, stops it.
const CONNECT_FLOOD_RATE: u32 = 15;
/// `attacker replay --count`.
const REPLAY_COUNT: u32 = 50;
/// `attacker equivocate --max-offences`: more slots than a phase offers, so it double-proposes
/// at every turn it gets until the phase ends.
const EQUIVOCATE_MAX_OFFENCES: usize = 1000;
/// `attacker equivocate --vote-heights`: double votes at two heights, then double proposals only
/// (each offending height slashes a fifth of the stake, and with it the chance to propose).
const EQUIVOCATE_VOTE_HEIGHTS: usize = 2;
/// The stream's transactions whose heights the replay phase checks, at most.
const REPLAY_SAMPLE: usize = 50;
/// A transaction accepted this long ago is taken as committed when sampled for the replay check.
const REPLAY_SETTLED: Duration = Duration::from_secs(3);
/// Blocks fetched at once by the agreement check.
const AGREEMENT_CONCURRENCY: usize = 16;
/// Log lines shown when a child fails.
const LOG_TAIL: usize = 15;
/// Log lines quoted in a one-line check evidence (an attacker that failed).
const SHORT_LOG_TAIL: usize = 3;

/// The binaries the lab runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `node`.
    pub node: PathBuf,
    /// `attacker`.
    pub attacker: PathBuf,
}

/// What a lab run needs from its caller.
pub struct Context<'a> {
    /// The options.
    pub opts: &'a Options,
    /// The namespaces.
    pub topo: &'a Topology,
    /// The chain's files.
    pub chain: &'a Chain,
    /// The binaries.
    pub bins: &'a Binaries,
    /// The thread that starts children.
    pub spawner: &'a Spawner,
    /// The data directory of this run.
    pub dir: PathBuf,
    /// Prometheus's files and the operator's socket (`--monitoring`), until it starts.
    pub monitoring: Option<monitoring::Prepared>,
}

/// The measurements at one moment.
struct Snapshot {
    at: Instant,
    heights: Vec<Option<u64>>,
    metrics: Vec<Option<Metrics>>,
    bans_seen: usize,
}

/// What a phase set up before it started.
#[derive(Default)]
struct Prep {
    checks: Vec<Check>,
    /// Replay: committed transactions of the stream and their heights.
    committed: Vec<(String, u64)>,
    /// Equivocate and restart: stakes before.
    stakes: BTreeMap<String, u64>,
}

/// What a phase's action produced.
#[derive(Default)]
struct Acted {
    attacker: Option<Value>,
    checks: Vec<Check>,
}

/// A running lab.
struct Lab<'a> {
    ctx: Context<'a>,
    client: Client,
    endpoints: Vec<Endpoint>,
    shared: Shared,
    nodes: Vec<Option<Proc>>,
    attacker: Option<Proc>,
    stream: Option<Stream>,
    stop: watch::Sender<bool>,
    reports: Vec<PhaseReport>,
    current: Option<(Phase, Snapshot)>,
    final_checks: Vec<Check>,
    monitor: Option<Monitor>,
    monitoring: Option<monitoring::Summary>,
}

/// Runs the lab; returns its report (an error that ends it early is in `error`).
pub async fn run(ctx: Context<'_>) -> Report {
    let opts = ctx.opts.clone();
    let (stop, _) = watch::channel(false);
    let mut lab = match Lab::new(ctx, stop) {
        Ok(lab) => lab,
        Err(e) => return empty_report(&opts, format!("{e:#}")),
    };
    let outcome = tokio::select! {
        result = lab.scenario() => result.map(|()| None),
        signal = interrupted() => Ok(Some(signal)),
    };
    let (interrupted, error) = match outcome {
        Ok(None) => (false, None),
        Ok(Some(signal)) => {
            println!("\n{signal}: stopping the scenario, tearing down");
            lab.measure_interrupted().await;
            (true, None)
        }
        Err(e) => (false, Some(format!("{e:#}"))),
    };
    lab.shutdown().await;
    let mut report = Report {
        xdp: opts.xdp,
        validators: opts.validators,
        duration_secs: opts.duration.as_secs_f64(),
        tx_rate: opts.tx_rate,
        flood_pps: opts.flood_pps,
        phases: std::mem::take(&mut lab.reports),
        final_checks: std::mem::take(&mut lab.final_checks),
        stream: lab.stream.as_ref().map(Stream::stats).unwrap_or_default(),
        monitoring: lab.monitoring.take(),
        passed: false,
        interrupted,
        error,
        command: command_line(),
    };
    report.conclude();
    report
}

/// The report of a run that could not start.
pub fn empty_report(opts: &Options, error: String) -> Report {
    Report {
        xdp: opts.xdp,
        validators: opts.validators,
        duration_secs: opts.duration.as_secs_f64(),
        tx_rate: opts.tx_rate,
        flood_pps: opts.flood_pps,
        phases: Vec::new(),
        final_checks: Vec::new(),
        stream: Default::default(),
        monitoring: None,
        passed: false,
        interrupted: false,
        error: Some(error),
        command: command_line(),
    }
}

/// The lab's command line, as typed.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM, with the signal's name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

impl<'a> Lab<'a> {
    fn new(ctx: Context<'a>, stop: watch::Sender<bool>) -> Result<Lab<'a>> {
        let endpoints = ctx
            .topo
            .validators
            .iter()
            .zip(&ctx.chain.nodes)
            .map(|(m, files)| Endpoint::new(m.ip, files.token.clone()))
            .collect();
        let n = ctx.topo.validators.len();
        Ok(Lab {
            client: Client::new()?,
            endpoints,
            shared: observe::shared(n),
            nodes: (0..n).map(|_| None).collect(),
            attacker: None,
            stream: None,
            stop,
            reports: Vec::new(),
            current: None,
            final_checks: Vec::new(),
            monitor: None,
            monitoring: None,
            ctx,
        })
    }

    fn n(&self) -> usize {
        self.endpoints.len()
    }

    /// The whole scenario: Prometheus, nodes, observers, stream, phases, final checks and the
    /// monitoring check.
    async fn scenario(&mut self) -> Result<()> {
        if let Some(prepared) = self.ctx.monitoring.take() {
            let monitor = Monitor::start(
                prepared,
                self.ctx.spawner,
                &self.ctx.topo.hub,
                &self.ctx.dir,
                self.client.clone(),
                self.stop.subscribe(),
            )
            .await?;
            self.monitor = Some(monitor);
        }
        for i in 0..self.n() {
            self.start_node(i).await?;
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            tokio::spawn(observe::watch_events(
                i,
                e.clone(),
                self.shared.clone(),
                self.stop.subscribe(),
            ));
        }
        tokio::spawn(observe::poll_and_print(
            self.client.clone(),
            self.endpoints.clone(),
            self.shared.clone(),
            self.stop.subscribe(),
        ));
        self.wait_ready().await?;
        self.stream = Some(txstream::start(
            self.client.clone(),
            self.endpoints.clone(),
            self.ctx.chain.genesis.chain_id.clone(),
            self.ctx.chain.clients.clone(),
            self.ctx.opts.tx_rate,
            self.shared.clone(),
            self.stop.subscribe(),
        ));
        lock(&self.shared).phase = Some(("warm-up".into(), Instant::now()));
        let warm_up = tokio::time::sleep(WARMUP);
        match self.monitor.as_mut() {
            Some(monitor) => {
                let ((), up) = tokio::join!(warm_up, monitor.wait_up());
                up?;
            }
            None => warm_up.await,
        }
        for phase in self.ctx.opts.phases.clone() {
            self.run_phase(phase).await?;
        }
        lock(&self.shared).phase = Some(("final checks".into(), Instant::now()));
        println!("== final checks");
        let checks = self.final_checks().await;
        for c in &checks {
            println!("{}", c.line());
        }
        self.final_checks = checks;
        if let Some(monitor) = &self.monitor {
            println!("== monitoring");
            let (check, summary) = monitor.check().await;
            println!("{}", check.line());
            for line in summary.lines() {
                println!("{line}");
            }
            self.final_checks.push(check);
            self.monitoring = Some(summary);
        }
        Ok(())
    }

    /// Starts honest node `i` in its namespace.
    async fn start_node(&mut self, i: usize) -> Result<()> {
        let mut cmd = Command::new(&self.ctx.bins.node);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.ctx.chain.nodes[i].config)
            .env("RUST_LOG", NODE_LOG);
        // The node reads NODE_* variables as options: the config file alone decides here.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NODE_") {
                cmd.env_remove(key);
            }
        }
        let ns = self.ctx.topo.validators[i].ns.clone();
        let proc = self
            .ctx
            .spawner
            .launch(&format!("v{i}"), &ns, &self.ctx.dir, cmd, false)
            .await?;
        self.nodes[i] = Some(proc);
        lock(&self.shared).up[i] = true;
        Ok(())
    }

    /// Fails with the node's log when an honest node that should run has exited.
    fn check_nodes_run(&mut self) -> Result<()> {
        let up = lock(&self.shared).up.clone();
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(p) = node
                && up[i]
                && !p.running()
            {
                let status = p.child.try_wait().ok().flatten();
                bail!(
                    "validator {i} exited ({status:?}); last lines of {}:\n{}",
                    p.log.display(),
                    p.log_tail(LOG_TAIL).join("\n")
                );
            }
        }
        Ok(())
    }

    /// Waits until every node answers and has reached [`WARMUP_HEIGHT`].
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        lock(&self.shared).phase = Some(("start".into(), Instant::now()));
        loop {
            self.check_nodes_run()?;
            let heights = self.heights().await;
            if heights
                .iter()
                .all(|h| h.is_some_and(|h| h >= WARMUP_HEIGHT))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the validators did not reach height {WARMUP_HEIGHT} within {}s (heights {heights:?}); see the logs in {}",
                    STARTUP_TIMEOUT.as_secs(),
                    self.ctx.dir.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Asks each node that should be running with `read`; `None` for the others and for
    /// failed reads.
    async fn each_running<'s, T, F, Fut>(&'s self, read: F) -> Vec<Option<T>>
    where
        F: Fn(&'s Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let up = lock(&self.shared).up.clone();
        let reads = self.endpoints.iter().zip(up).map(|(e, up)| {
            let read = up.then(|| read(e));
            async move {
                match read {
                    Some(read) => read.await.ok(),
                    None => None,
                }
            }
        });
        futures::future::join_all(reads).await
    }

    async fn heights(&self) -> Vec<Option<u64>> {
        self.each_running(|e| self.client.height(e)).await
    }

    async fn snapshot(&self) -> Snapshot {
        let metrics = self.each_running(|e| self.client.metrics(e));
        let (heights, metrics) = futures::join!(self.heights(), metrics);
        Snapshot {
            at: Instant::now(),
            heights,
            metrics,
            bans_seen: lock(&self.shared).bans.len(),
        }
    }

    /// Runs one phase and records its report.
    async fn run_phase(&mut self, phase: Phase) -> Result<()> {
        self.check_nodes_run()?;
        println!(
            "== {} ({} s)",
            phase.name(),
            self.ctx.opts.duration.as_secs()
        );
        // The phase's bans include those its preparation made.
        let bans_before = lock(&self.shared).bans.len();
        let prep = self.prepare(phase).await;
        let mut start = self.snapshot().await;
        start.bans_seen = bans_before;
        lock(&self.shared).phase = Some((phase.name().to_string(), start.at));
        let planned_end = start.at + self.ctx.opts.duration;
        let heights_at_start = start.heights.clone();
        self.current = Some((phase, start));
        let acted = self.act(phase, planned_end, &heights_at_start).await?;
        let end = self.snapshot().await;
        let Some((_, start)) = self.current.take() else {
            bail!("the phase's start was lost");
        };
        let report = self.judge(phase, prep, acted, &start, &end).await;
        for c in &report.checks {
            println!("{}", c.line());
        }
        self.reports.push(report);
        Ok(())
    }

    /// What a phase sets up before it starts.
    async fn prepare(&mut self, phase: Phase) -> Prep {
        let mut prep = Prep::default();
        match phase {
            Phase::UdpBlocked => {
                let mut failures = Vec::new();
                for (i, e) in self.endpoints.iter().enumerate() {
                    if let Err(err) = self.client.block_net(e, BLOCKED_RANGE).await {
                        failures.push(format!("v{i}: {err:#}"));
                    }
                }
                prep.checks.push(Check::all_clear(
                    names::OPERATOR_BLOCK,
                    &failures,
                    format!(
                        "{BLOCKED_RANGE} blocked on all {} nodes through the admin API",
                        self.n()
                    ),
                ));
            }
            Phase::Replay => prep.committed = self.sample_committed().await,
            Phase::Equivocate | Phase::Restart => {
                prep.stakes = self
                    .client
                    .stakes(&self.endpoints[0])
                    .await
                    .unwrap_or_default();
            }
            _ => {}
        }
        prep
    }

    /// The validator the replay phase aims at.
    fn replay_target(&self) -> usize {
        Phase::Replay
            .libp2p(self.n())
            .map_or(0, |(_, target, _)| target)
    }

    /// Up to [`REPLAY_SAMPLE`] of the stream's latest settled transactions, with the heights
    /// they were committed at, as the replay's target answers.
    async fn sample_committed(&self) -> Vec<(String, u64)> {
        let Some(stream) = &self.stream else {
            return Vec::new();
        };
        let settled = Instant::now()
            .checked_sub(REPLAY_SETTLED)
            .unwrap_or_else(Instant::now);
        let hashes: Vec<String> = stream
            .stats()
            .hashes
            .iter()
            .rev()
            .filter(|(_, at)| *at <= settled)
            .take(REPLAY_SAMPLE)
            .map(|(h, _)| h.clone())
            .collect();
        let target = &self.endpoints[self.replay_target()];
        let mut out = Vec::new();
        for hash in hashes {
            if let Ok(Some(height)) = self.client.tx_height(target, &hash).await {
                out.push((hash, height));
            }
        }
        out
    }

    /// The phase's action: the attack (or the restart), and its waits.
    async fn act(
        &mut self,
        phase: Phase,
        planned_end: Instant,
        heights: &[Option<u64>],
    ) -> Result<Acted> {
        let mut acted = Acted::default();
        match phase {
            Phase::Quiet => sleep_until(planned_end).await,
            Phase::Restart => acted.checks = self.restart(planned_end, heights).await?,
            _ => {
                let (ns, args) = self.attack_args(phase);
                self.run_attacker(phase, &ns, args, planned_end, &mut acted)
                    .await?;
                if phase == Phase::Equivocate {
                    self.wait_slashed(planned_end + SLASH_GRACE).await;
                }
            }
        }
        Ok(acted)
    }

    /// The attacker's namespace and arguments for `phase`: `SUBCOMMAND --netns NS ...
    /// --duration D`.
    fn attack_args(&self, phase: Phase) -> (String, Vec<String>) {
        let topo = self.ctx.topo;
        let opts = self.ctx.opts;
        let genesis = self.ctx.chain.genesis_path.display().to_string();
        let multiaddr =
            |i: usize| dial_addr(topo.validators[i].ip, &self.ctx.chain.nodes[i].peer_id);
        let (ns, options): (&str, Vec<(&str, String)>) = if let Some(flood) = phase.flood() {
            let v0 = &topo.validators[0];
            let packets = if opts.flood_pps == 0 {
                FLOOD_PACKET_BOUND
            } else {
                opts.flood_pps
                    .saturating_mul(opts.duration.as_secs().max(1))
            };
            let options = vec![
                ("--iface", IFACE.to_string()),
                ("--src", flood.src.to_string()),
                ("--dst", v0.ip.to_string()),
                ("--dst-mac", mac_text(v0.mac())),
                ("--dst-port", flood.dst_port.to_string()),
                ("--kind", flood.kind.to_string()),
                ("--packets", packets.to_string()),
                ("--pps", opts.flood_pps.to_string()),
            ];
            (&topo.flood.ns, options)
        } else if phase == Phase::Equivocate {
            let mut options = vec![
                ("--genesis", genesis),
                ("--key", self.ctx.chain.byzantine_key.display().to_string()),
                ("--api", self.endpoints[0].api.clone()),
                ("--max-offences", EQUIVOCATE_MAX_OFFENCES.to_string()),
                ("--vote-heights", EQUIVOCATE_VOTE_HEIGHTS.to_string()),
            ];
            options.extend((0..self.n()).map(|i| ("--peer", multiaddr(i))));
            (&topo.byzantine.ns, options)
        } else if let Some((k, target, _)) = phase.libp2p(self.n()) {
            let ip = topo.validators[target].ip;
            let options = match phase {
                Phase::ConnectFlood => vec![
                    ("--target", format!("/ip4/{ip}/tcp/{P2P_PORT}")),
                    ("--connections", CONNECT_FLOOD_CONNECTIONS.to_string()),
                    ("--rate", CONNECT_FLOOD_RATE.to_string()),
                ],
                Phase::Replay => vec![
                    ("--genesis", genesis),
                    ("--peer", multiaddr(target)),
                    ("--api", self.endpoints[target].api.clone()),
                    ("--count", REPLAY_COUNT.to_string()),
                ],
                _ => vec![
                    ("--genesis", genesis),
                    ("--peer", multiaddr(target)),
                    (
                        "--kind",
                        phase.gossip_kind().unwrap_or_default().to_string(),
                    ),
                ],
            };
            (&topo.attackers[k].ns, options)
        } else {
            (&topo.flood.ns, Vec::new())
        };
        let mut args = vec![
            phase.subcommand().unwrap_or_default().to_string(),
            "--netns".to_string(),
            ns.to_string(),
        ];
        for (flag, value) in options {
            args.extend([flag.to_string(), value]);
        }
        args.extend([
            "--duration".to_string(),
            format!("{}ms", opts.duration.as_millis()),
        ]);
        (ns.to_string(), args)
    }

    /// Runs the attacker until it exits (it stops itself at `--duration`), at least until
    /// `planned_end`; records its summary and whether it ran cleanly.
    async fn run_attacker(
        &mut self,
        phase: Phase,
        ns: &str,
        args: Vec<String>,
        planned_end: Instant,
        acted: &mut Acted,
    ) -> Result<()> {
        let mut cmd = Command::new(&self.ctx.bins.attacker);
        cmd.args(&args);
        let proc = match self
            .ctx
            .spawner
            .launch(phase.name(), ns, &self.ctx.dir, cmd, true)
            .await
        {
            Ok(proc) => proc,
            Err(e) => {
                acted
                    .checks
                    .push(Check::new(names::ATTACKER, false, format!("{e:#}")));
                sleep_until(planned_end).await;
                return Ok(());
            }
        };
        self.attacker = Some(proc);
        sleep_until(planned_end).await;
        let Some(proc) = self.attacker.as_mut() else {
            return Ok(());
        };
        let status = proc.wait(ATTACKER_GRACE).await;
        let killed = status.is_none();
        if killed {
            proc.kill().await;
        }
        let output = proc.output();
        let tail = proc.log_tail(SHORT_LOG_TAIL).join(" | ");
        acted.attacker = judge::last_json(&output);
        let ok = status.is_some_and(|s| s.success()) && acted.attacker.is_some();
        let evidence = match status {
            None => format!(
                "still running {}s past its duration: killed",
                ATTACKER_GRACE.as_secs()
            ),
            Some(s) if !s.success() => format!("exited with {s}: {tail}"),
            Some(_) if acted.attacker.is_none() => format!("printed no summary: {tail}"),
            Some(_) => format!(
                "attacker {} exited 0",
                args.first().map_or("", String::as_str)
            ),
        };
        acted.checks.push(Check::new(names::ATTACKER, ok, evidence));
        self.attacker = None;
        Ok(())
    }

    /// Waits (up to `deadline`) for the byzantine validator's stake to fall.
    async fn wait_slashed(&self, deadline: Instant) {
        let byz = self.ctx.chain.byzantine.public_key().to_string();
        while Instant::now() < deadline {
            if let Ok(stakes) = self.client.stakes(&self.endpoints[0]).await
                && stakes.get(&byz).copied().unwrap_or(0) < BYZANTINE_STAKE
            {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The restart phase: SIGKILL the last honest validator, pause, start it again, and wait
    /// for it to catch up and sign a commit.
    async fn restart(
        &mut self,
        planned_end: Instant,
        heights: &[Option<u64>],
    ) -> Result<Vec<Check>> {
        let i = self.n() - 1;
        let key = self.ctx.chain.nodes[i].key.public_key().to_string();
        lock(&self.shared).up[i] = false;
        if let Some(p) = self.nodes[i].as_mut() {
            p.kill().await;
        }
        println!("  killed v{i} (SIGKILL) at height {:?}", heights[i]);
        tokio::time::sleep(RESTART_PAUSE).await;
        let from = self.client.height(&self.endpoints[0]).await.unwrap_or(0) + 1;
        self.start_node(i).await?;
        println!("  started v{i} again with the same config");
        let deadline = planned_end.max(Instant::now()) + RESTART_GRACE;
        let (mut caught_up, mut signed_at) = (None::<(u64, u64)>, None::<u64>);
        let mut next = from;
        loop {
            self.check_nodes_run()?;
            let reference = self.client.height(&self.endpoints[0]).await.ok();
            let mine = self.client.height(&self.endpoints[i]).await.ok();
            if caught_up.is_none()
                && let (Some(r), Some(m)) = (reference, mine)
                && m + CATCH_UP_SLACK >= r
            {
                caught_up = Some((m, r));
            }
            if signed_at.is_none() {
                let tip = reference.unwrap_or(0);
                while next <= tip {
                    match self.client.block(&self.endpoints[0], next).await {
                        Ok(block) if block.signers.contains(&key) => {
                            signed_at = Some(next);
                            break;
                        }
                        Ok(_) => next += 1,
                        Err(_) => break,
                    }
                }
            }
            let now = Instant::now();
            if (now >= planned_end && caught_up.is_some() && signed_at.is_some()) || now >= deadline
            {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let caught = match caught_up {
            Some((m, r)) => Check::new(
                names::CAUGHT_UP,
                true,
                format!("v{i} at {m} while v0 was at {r}"),
            ),
            None => Check::new(
                names::CAUGHT_UP,
                false,
                format!(
                    "v{i} did not reach v0's height within {}s",
                    RESTART_GRACE.as_secs()
                ),
            ),
        };
        let signed = match signed_at {
            Some(h) => Check::new(
                names::SIGNED_AGAIN,
                true,
                format!(
                    "v{i} signed the commit of height {h} (restarted when v0 was at {})",
                    from - 1
                ),
            ),
            None => Check::new(
                names::SIGNED_AGAIN,
                false,
                format!(
                    "v{i} signed no commit from height {from} to {}",
                    next.saturating_sub(1)
                ),
            ),
        };
        Ok(vec![caught, signed])
    }

    /// The phase's report: measurements and checks.
    async fn judge(
        &self,
        phase: Phase,
        prep: Prep,
        acted: Acted,
        start: &Snapshot,
        end: &Snapshot,
    ) -> PhaseReport {
        let opts = self.ctx.opts;
        let mut report = self.measure(phase, start, end);
        let mut checks = prep.checks;
        let (heights, _) = judge::heights(&start.heights, &end.heights);
        checks.push(heights);
        let quiet = self
            .reports
            .iter()
            .find(|r| r.phase == Phase::Quiet)
            .map(|r| r.finality.p50_ms);
        let (latency, ratio) = judge::latency(
            phase,
            report.finality.p50_ms,
            report.finality.count,
            quiet,
            opts.xdp,
        );
        checks.extend(latency);
        report.latency_ratio = ratio;
        checks.extend(acted.checks.iter().cloned());
        let bans_in_phase: Vec<(usize, String, Vec<String>)> = lock(&self.shared).bans
            [start.bans_seen..]
            .iter()
            .map(|b| (b.node, b.reason.clone(), b.addresses.clone()))
            .collect();
        if let Some(flood) = phase.flood() {
            let dropped = judge::delta_by(
                start.metrics[0].as_ref(),
                end.metrics[0].as_ref(),
                "firewall_packets_total",
                "reason",
                &[("verdict", "drop")],
            )
            .get(flood.reason)
            .copied()
            .unwrap_or(0);
            checks.push(judge::flood_drops(
                phase,
                flood.reason,
                acted.attacker.as_ref().and_then(|a| a["sent"].as_u64()),
                dropped,
                opts.xdp,
            ));
            if phase == Phase::Syn {
                checks.push(judge::stack_handshakes(&judge::delta_by(
                    start.metrics[0].as_ref(),
                    end.metrics[0].as_ref(),
                    "kernel_tcp_handshakes_total",
                    "result",
                    &[],
                )));
            }
        }
        if let Some((k, target, reasons)) = phase.libp2p(self.n())
            && !reasons.is_empty()
        {
            let ip = self.ctx.topo.attackers[k].ip;
            let why = self.client.why(&self.endpoints[target], ip).await.ok();
            let events: Vec<(String, Vec<String>)> = bans_in_phase
                .iter()
                .filter(|(node, _, _)| *node == target)
                .map(|(_, r, a)| (r.clone(), a.clone()))
                .collect();
            checks.push(judge::ban(
                target,
                ip,
                reasons,
                why.as_ref(),
                &events,
                opts.xdp,
            ));
            if phase == Phase::ConnectFlood {
                let drops = judge::delta_by(
                    start.metrics[target].as_ref(),
                    end.metrics[target].as_ref(),
                    "firewall_packets_total",
                    "reason",
                    &[("verdict", "drop")],
                )
                .get("blocklisted")
                .copied()
                .unwrap_or(0);
                checks.push(if opts.xdp {
                    Check::new(
                        names::KERNEL_DROPS,
                        drops > 0,
                        format!("v{target} dropped {drops} packets as blocklisted"),
                    )
                } else {
                    Check::na(names::KERNEL_DROPS, "n/a (no XDP)")
                });
            }
        }
        match phase {
            Phase::Replay => {
                checks.extend(self.judge_replay(&prep.committed, &acted, start, end).await)
            }
            Phase::Equivocate => checks.extend(
                self.judge_equivocate(&prep.stakes, acted.attacker.as_ref(), start, end)
                    .await,
            ),
            Phase::Restart => {
                let i = self.n() - 1;
                let key = self.ctx.chain.nodes[i].key.public_key().to_string();
                let after = self
                    .client
                    .stakes(&self.endpoints[0])
                    .await
                    .unwrap_or_default();
                let (before, now) = (prep.stakes.get(&key).copied(), after.get(&key).copied());
                checks.push(Check::new(
                    names::HONEST_STAKES,
                    before.is_some() && before == now,
                    format!(
                        "v{i}'s stake {before:?} before, {now:?} after: no evidence against it"
                    ),
                ));
            }
            _ => {}
        }
        report.attacker = acted.attacker;
        report.checks = checks;
        report
    }

    /// The replay phase's checks: the target's mempool refused at least the replays the
    /// attacker saw refused, the sampled transactions stayed at their heights, and the chain
    /// holds no more transactions than the stream got accepted.
    async fn judge_replay(
        &self,
        committed: &[(String, u64)],
        acted: &Acted,
        start: &Snapshot,
        end: &Snapshot,
    ) -> Vec<Check> {
        let target = self.replay_target();
        let rejected = judge::delta_by(
            start.metrics[target].as_ref(),
            end.metrics[target].as_ref(),
            "mempool_rejected_total",
            "reason",
            &[],
        );
        let replay_refusals = rejected.get("nonce_replay").copied().unwrap_or(0)
            + rejected.get("duplicate").copied().unwrap_or(0);
        let reported = acted.attacker.as_ref().map_or(0, |a| {
            ["nonce_replay", "duplicate"]
                .iter()
                .map(|r| a["reasons"][r].as_u64().unwrap_or(0))
                .sum::<u64>()
        });
        let replayed = acted
            .attacker
            .as_ref()
            .and_then(|a| a["fetched"].as_u64())
            .unwrap_or(0);
        let mut checks = vec![Check::new(
            names::REPLAYS_REFUSED,
            acted.attacker.is_some() && replay_refusals >= reported && replayed > 0,
            format!(
                "v{target} refused {replay_refusals} as nonce_replay/duplicate; the attacker replayed {replayed} and saw {reported} refused"
            ),
        )];
        let mut moved = Vec::new();
        for (hash, height) in committed {
            match self.client.tx_height(&self.endpoints[target], hash).await {
                Ok(Some(h)) if h == *height => {}
                other => moved.push(format!("{hash}: {height} -> {other:?}")),
            }
        }
        let stream = self.stream.as_ref().map(Stream::stats).unwrap_or_default();
        let chain_txs = end.metrics[target]
            .as_ref()
            .map_or(0.0, |m| m.sum("chain_transactions_committed_total", &[]))
            as u64;
        let bound = stream.accepted + stream.errors;
        checks.push(Check::new(
            names::NO_DOUBLE_COMMIT,
            moved.is_empty() && !committed.is_empty() && chain_txs <= bound,
            format!(
                "{} sampled transactions still at their heights{}; {chain_txs} committed <= {bound} the stream sent",
                committed.len(),
                if moved.is_empty() { String::new() } else { format!(", moved: {}", moved.join(", ")) }
            ),
        ));
        checks
    }

    /// The equivocate phase's checks.
    async fn judge_equivocate(
        &self,
        before: &BTreeMap<String, u64>,
        summary: Option<&Value>,
        start: &Snapshot,
        end: &Snapshot,
    ) -> Vec<Check> {
        let byz = self.ctx.chain.byzantine.public_key().to_string();
        let after = self
            .client
            .stakes(&self.endpoints[0])
            .await
            .unwrap_or_default();
        let stake = after.get(&byz).copied().unwrap_or(0);
        let evidence: u64 = start
            .metrics
            .iter()
            .zip(&end.metrics)
            .map(|(s, e)| {
                let s = s
                    .as_ref()
                    .map_or(0.0, |m| m.sum("consensus_evidence_total", &[]));
                let e = e
                    .as_ref()
                    .map_or(0.0, |m| m.sum("consensus_evidence_total", &[]));
                (e - s).max(0.0) as u64
            })
            .sum();
        let honest: Vec<String> = self
            .ctx
            .chain
            .nodes
            .iter()
            .map(|n| n.key.public_key().to_string())
            .collect();
        let changed: Vec<String> = honest
            .iter()
            .enumerate()
            .filter(|(_, k)| before.get(*k) != after.get(*k))
            .map(|(i, k)| format!("v{i} {:?} -> {:?}", before.get(k), after.get(k)))
            .collect();
        let signed = |kind: &str| summary.and_then(|v| v[kind].as_u64()).unwrap_or(0);
        let (votes, proposals) = (signed("double_votes"), signed("double_proposals"));
        vec![
            Check::new(
                names::DOUBLE_SIGNED,
                votes > 0 && proposals > 0,
                format!("it signed {votes} double votes and {proposals} double proposals"),
            ),
            Check::new(
                names::SLASHED,
                !after.is_empty() && stake < BYZANTINE_STAKE,
                format!("byzantine stake {stake} (genesis {BYZANTINE_STAKE})"),
            ),
            Check::new(
                names::EVIDENCE,
                evidence > 0,
                format!("consensus_evidence_total rose by {evidence} over the honest nodes"),
            ),
            if before.is_empty() {
                Check::new(
                    names::HONEST_STAKES,
                    false,
                    "the stakes before the phase were not read",
                )
            } else {
                Check::all_clear(
                    names::HONEST_STAKES,
                    &changed,
                    format!("{} honest stakes unchanged", honest.len()),
                )
            },
        ]
    }

    /// The measurements of a phase from `start` to `end` (no checks).
    fn measure(&self, phase: Phase, start: &Snapshot, end: &Snapshot) -> PhaseReport {
        let observed = lock(&self.shared);
        let latencies = observed.latencies(start.at, end.at);
        let finality_by_node = (0..self.n())
            .map(|i| Quantiles::of(&observed.node_latencies(i, start.at, end.at)))
            .collect();
        let (blocks, txs) = observed.committed(start.at, end.at);
        let mut bans = BTreeMap::new();
        for b in &observed.bans[start.bans_seen.min(observed.bans.len())..] {
            *bans.entry(b.reason.clone()).or_insert(0) += 1;
        }
        drop(observed);
        let secs = end.at.duration_since(start.at).as_secs_f64();
        let (mut kernel_drops, mut mempool_rejected) = (BTreeMap::new(), BTreeMap::new());
        for (s, e) in start.metrics.iter().zip(&end.metrics) {
            judge::add_counts(
                &mut kernel_drops,
                judge::delta_by(
                    s.as_ref(),
                    e.as_ref(),
                    "firewall_packets_total",
                    "reason",
                    &[("verdict", "drop")],
                ),
            );
            judge::add_counts(
                &mut mempool_rejected,
                judge::delta_by(
                    s.as_ref(),
                    e.as_ref(),
                    "mempool_rejected_total",
                    "reason",
                    &[],
                ),
            );
        }
        kernel_drops.retain(|_, v| *v > 0);
        mempool_rejected.retain(|_, v| *v > 0);
        let (_, advanced_min) = judge::heights(&start.heights, &end.heights);
        PhaseReport {
            phase,
            secs,
            heights_start: start.heights.clone(),
            heights_end: end.heights.clone(),
            advanced_min,
            blocks,
            finality: Quantiles::of(&latencies),
            finality_by_node,
            latency_ratio: None,
            tx_per_sec: if secs > 0.0 { txs as f64 / secs } else { 0.0 },
            committed_txs: txs,
            kernel_drops,
            bans,
            mempool_rejected,
            attacker: None,
            checks: Vec::new(),
            interrupted: false,
        }
    }

    /// After Ctrl-C: what the phase in progress measured so far.
    async fn measure_interrupted(&mut self) {
        if let Some((phase, start)) = self.current.take() {
            let end = self.snapshot().await;
            let mut report = self.measure(phase, &start, &end);
            report.interrupted = true;
            self.reports.push(report);
        }
    }

    /// The checks at the end: agreement, no honest validator blocked or banned, every node
    /// still running.
    async fn final_checks(&mut self) -> Vec<Check> {
        let mut checks = vec![self.agreement().await];
        let honest_ips: Vec<std::net::Ipv4Addr> =
            self.ctx.topo.validators.iter().map(|m| m.ip).collect();
        let mut blocked = Vec::new();
        let mut asked = 0;
        for (i, e) in self.endpoints.iter().enumerate() {
            for (j, ip) in honest_ips.iter().enumerate() {
                match self.client.why(e, *ip).await {
                    Ok(why) => {
                        asked += 1;
                        if why.blocked() {
                            blocked.push(format!("v{i} blocks v{j}: {why:?}"));
                        }
                    }
                    Err(err) => blocked.push(format!("v{i} did not answer why v{j}: {err:#}")),
                }
            }
        }
        checks.push(Check::all_clear(
            names::HONEST_NOT_BLOCKED,
            &blocked,
            format!("{asked} (node, validator) pairs: none blocked"),
        ));
        let peers: Vec<String> = self
            .ctx
            .chain
            .nodes
            .iter()
            .map(|n| n.peer_id.clone())
            .collect();
        let observed = lock(&self.shared);
        let named: Vec<String> = observed
            .bans
            .iter()
            .filter(|b| judge::names_honest(&b.target, &b.addresses, &honest_ips, &peers))
            .map(|b| format!("v{} banned {} ({})", b.node, b.target, b.reason))
            .collect();
        let total = observed.bans.len();
        drop(observed);
        checks.push(Check::all_clear(
            names::NO_HONEST_BAN,
            &named,
            format!("{total} ban events, none of an honest validator"),
        ));
        let ran = self.check_nodes_run();
        checks.push(Check::new(
            names::NODES_RAN,
            ran.is_ok(),
            ran.err()
                .map_or(format!("all {} honest nodes running", self.n()), |e| {
                    format!("{e:#}")
                }),
        ));
        checks
    }

    /// Every honest node has the same block hash at every height up to the lowest tip.
    async fn agreement(&self) -> Check {
        let heights = self.heights().await;
        if heights.iter().any(Option::is_none) {
            return Check::new(
                names::AGREEMENT,
                false,
                format!("not every node answers: heights {heights:?}"),
            );
        }
        let tip = heights.iter().flatten().min().copied().unwrap_or(0);
        let requests = (1..=tip).flat_map(|h| (0..self.n()).map(move |i| (h, i)));
        let answers: Vec<(u64, usize, Result<String>)> = futures::stream::iter(requests)
            .map(|(h, i)| async move {
                let hash = self
                    .client
                    .block(&self.endpoints[i], h)
                    .await
                    .map(|b| b.hash);
                (h, i, hash)
            })
            .buffer_unordered(AGREEMENT_CONCURRENCY)
            .collect()
            .await;
        let mut by_height: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        let mut errors = Vec::new();
        for (h, i, hash) in answers {
            match hash {
                Ok(hash) => {
                    by_height.entry(h).or_default().insert(hash);
                }
                Err(e) => errors.push(format!("v{i} height {h}: {e:#}")),
            }
        }
        let forks: Vec<String> = by_height
            .iter()
            .filter(|(_, hashes)| hashes.len() > 1)
            .take(3)
            .map(|(h, hashes)| format!("height {h}: {hashes:?}"))
            .collect();
        let ok = forks.is_empty() && errors.is_empty() && tip > 0;
        let evidence = if ok {
            format!(
                "heights 1..={tip} have the same hash on all {} nodes",
                self.n()
            )
        } else {
            forks
                .into_iter()
                .chain(errors.into_iter().take(3))
                .collect::<Vec<_>>()
                .join("; ")
        };
        Check::new(names::AGREEMENT, ok, evidence)
    }

    /// Stops the observers, the stream and the forwarder, the attacker, Prometheus, then the
    /// nodes (SIGTERM, SIGKILL after a grace).
    async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(mut a) = self.attacker.take() {
            a.kill().await;
        }
        if let Some(mut monitor) = self.monitor.take() {
            monitor.stop().await;
        }
        let stops = self
            .nodes
            .iter_mut()
            .flatten()
            .map(|p| p.stop(NODE_STOP_GRACE));
        let results = futures::future::join_all(stops).await;
        let killed: Vec<&str> = self
            .nodes
            .iter()
            .flatten()
            .zip(&results)
            .filter(|(_, (_, killed))| *killed)
            .map(|(p, _)| p.name.as_str())
            .collect();
        if !killed.is_empty() {
            eprintln!(
                "lab: {} needed SIGKILL {}s after SIGTERM",
                killed.join(", "),
                NODE_STOP_GRACE.as_secs()
            );
        }
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

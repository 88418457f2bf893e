//! What a run reports (violations, the final state hash, the faults that really happened,
//! finality latency) and the summary of many runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use types::Hash;

use crate::byzantine::Forgery;
use crate::network::NetworkStats;
use crate::oracle::{Caught, Violation};
use crate::scenario::Scenario;

/// A fault or recovery path a run exercised (not merely planned: each one happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Covered {
    /// Links with different fixed delays.
    Latency,
    /// Per-message jitter (reordering).
    Jitter,
    /// Messages lost at random.
    Loss,
    /// Messages dropped by a partition.
    Partition,
    /// A validator caught up through block sync.
    BlockSync,
    /// A validator crashed and restarted on its store.
    CrashRestart,
    /// A validator crashed inside an engine call, losing the messages of that call.
    CrashInsideCall,
    /// A validator crashed after signing votes at its current height (its WAL replays them).
    CrashWithVotesInWal,
    /// An equivocator sent conflicting twins.
    Equivocation,
    /// An honest commit carried evidence of equivocation.
    EvidenceCommitted,
    /// An equivocator's stake was slashed.
    Slashed,
    /// A silent validator dropped its messages.
    SilentValidator,
    /// A Byzantine proposer sent a forged block.
    InvalidProposal,
    /// An honest validator committed in a round after the first.
    RoundChange,
}

impl fmt::Display for Covered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Covered::Latency => "latency",
            Covered::Jitter => "jitter",
            Covered::Loss => "loss",
            Covered::Partition => "partition",
            Covered::BlockSync => "block sync",
            Covered::CrashRestart => "crash-restart",
            Covered::CrashInsideCall => "crash inside an engine call",
            Covered::CrashWithVotesInWal => "crash with votes in the WAL",
            Covered::Equivocation => "equivocation",
            Covered::EvidenceCommitted => "evidence committed",
            Covered::Slashed => "slashed",
            Covered::SilentValidator => "silent validator",
            Covered::InvalidProposal => "invalid proposal",
            Covered::RoundChange => "round change",
        })
    }
}

/// Counts of what happened in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Simulated time from start to end, milliseconds.
    pub sim_ms: u64,
    /// Events processed (deliveries, timers, faults, client ticks).
    pub events: u64,
    /// Ledger height of every validator at the end (0 for one that is down).
    pub heights: Vec<u64>,
    /// Network statistics.
    pub network: NetworkStats,
    /// Messages that arrived at a validator that was down.
    pub to_down_node: u64,
    /// Crashes.
    pub crashes: u64,
    /// Crashes inside an engine call.
    pub crashes_inside_call: u64,
    /// Crashes after the validator had signed votes at its current height.
    pub crashes_with_votes: u64,
    /// Restarts.
    pub restarts: u64,
    /// Blocks applied through block sync.
    pub synced_blocks: u64,
    /// Conflicting twins an equivocator sent.
    pub twins: u64,
    /// Messages a silent validator dropped.
    pub silenced: u64,
    /// Forged blocks a Byzantine proposer sent.
    pub forgeries: Vec<Forgery>,
    /// Offenders caught by honest commits.
    pub caught: BTreeMap<usize, Caught>,
    /// Bonded stake of each caught offender at genesis and at the end, in the ledger of the
    /// most advanced honest validator.
    pub stakes: BTreeMap<usize, (u64, u64)>,
    /// Honest commits in a round after the first.
    pub late_rounds: u64,
    /// Transactions the engines produced (slashing evidence).
    pub evidence_txs: u64,
    /// Transactions refused by a mempool.
    pub txs_refused: u64,
    /// Transactions in the most advanced honest ledger.
    pub txs_committed: u64,
    /// From the heal until every honest validator reached the liveness target, milliseconds.
    pub recovery_ms: Option<u64>,
}

/// Time from a validator entering a height to it committing that height, milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Finality {
    /// Heights entered after the faults healed.
    pub clean_ms: Vec<u64>,
    /// Heights entered after the faults healed and decided in their first round.
    pub first_round_ms: Vec<u64>,
    /// Heights entered while faults were active.
    pub faulty_ms: Vec<u64>,
    /// Mean delay of a delivered message in the run, milliseconds.
    pub mean_delay_ms: f64,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario run.
    pub scenario: Scenario,
    /// Whether the scenario is the one its seed draws (so the seed alone replays it).
    pub drawn: bool,
    /// Broken rules; empty when the run passed.
    pub violations: Vec<Violation>,
    /// Hash of the run's event trace and of every validator's final tip and state root.
    pub state_hash: Hash,
    /// Faults and recovery paths exercised.
    pub covered: BTreeSet<Covered>,
    /// Counts.
    pub stats: RunStats,
    /// Finality latency samples.
    pub finality: Finality,
}

impl Report {
    /// Whether every oracle held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The command that replays this run with its trace.
    pub fn replay_command(&self) -> String {
        if self.drawn {
            format!(
                "cargo run -p sim --release -- replay --seed {}",
                self.scenario.seed
            )
        } else {
            "rerun the test that built this scenario, with RUST_LOG=sim=debug".to_owned()
        }
    }

    /// Everything needed to understand a failure: scenario, violations, counts, replay command.
    pub fn failure_text(&self) -> String {
        let mut text = format!("FAILED {}\n", self.scenario);
        for v in &self.violations {
            text.push_str(&format!("\n  violation: {v}"));
        }
        text.push_str(&format!(
            "\n  {self}\n  replay: {}\n",
            self.replay_command()
        ));
        text
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "seed {}: {}, heights {:?} after {} ms simulated, {} events, {} messages ({} lost, {} partitioned), \
             {} txs committed, {} synced blocks, {} crashes, {} forgeries, caught {:?}, stakes {:?}, state {}",
            self.scenario.seed,
            if self.passed() { "passed" } else { "FAILED" },
            s.heights,
            s.sim_ms,
            s.events,
            s.network.sent,
            s.network.lost,
            s.network.partitioned,
            s.txs_committed,
            s.synced_blocks,
            s.crashes,
            s.forgeries.len(),
            s.caught.keys().collect::<Vec<_>>(),
            s.stakes,
            self.state_hash,
        )?;
        let covered: Vec<String> = self.covered.iter().map(Covered::to_string).collect();
        write!(f, "\n  covered: {}", covered.join(", "))
    }
}

/// Figures over many runs.
#[derive(Debug, Default)]
pub struct Summary {
    /// Runs added.
    pub runs: u64,
    /// Failed runs: seed, first violation, replay command.
    pub failures: Vec<(u64, String, String)>,
    /// How many runs exercised each fault.
    pub covered: BTreeMap<Covered, u64>,
    /// Finality of heights entered after the heal, in message delays (time / mean delay).
    clean_delays: Vec<f64>,
    /// The same, milliseconds.
    clean_ms: Vec<u64>,
    /// Finality of heights entered after the heal and decided in round 0, in message delays.
    first_round_delays: Vec<f64>,
    /// Finality of heights entered during faults, in message delays.
    faulty_delays: Vec<f64>,
    /// Recovery times after the heal, milliseconds.
    recovery_ms: Vec<u64>,
    /// Heights committed (most advanced honest validator), summed.
    heights: u64,
    /// Simulated time, summed, milliseconds.
    sim_ms: u64,
    /// Runs with an honest commit after the first round.
    late_round_runs: u64,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, report: &Report) {
        self.runs += 1;
        if let Some(v) = report.violations.first() {
            self.failures
                .push((report.scenario.seed, v.to_string(), report.replay_command()));
        }
        for c in &report.covered {
            *self.covered.entry(*c).or_default() += 1;
        }
        let f = &report.finality;
        if f.mean_delay_ms > 0.0 {
            self.clean_delays
                .extend(f.clean_ms.iter().map(|&ms| ms as f64 / f.mean_delay_ms));
            self.first_round_delays.extend(
                f.first_round_ms
                    .iter()
                    .map(|&ms| ms as f64 / f.mean_delay_ms),
            );
            self.faulty_delays
                .extend(f.faulty_ms.iter().map(|&ms| ms as f64 / f.mean_delay_ms));
        }
        self.clean_ms.extend(&f.clean_ms);
        self.recovery_ms.extend(report.stats.recovery_ms);
        self.heights += report.stats.heights.iter().max().copied().unwrap_or(0);
        self.sim_ms += report.stats.sim_ms;
        self.late_round_runs += u64::from(report.stats.late_rounds > 0);
    }

    /// Whether every run passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// `p50 x, p90 y, p99 z, max w` of `values`.
fn percentiles<T: Copy + PartialOrd + fmt::Display>(values: &[T], unit: &str) -> String {
    if values.is_empty() {
        return "no samples".to_owned();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {:.1}{unit}, p90 {:.1}{unit}, p99 {:.1}{unit}, max {:.1}{unit} ({} samples)",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0),
        sorted.len()
    )
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} runs, {} failed; {} heights in {:.1} s simulated",
            self.runs,
            self.failures.len(),
            self.heights,
            self.sim_ms as f64 / 1000.0
        )?;
        writeln!(
            f,
            "finality after heal: {}",
            percentiles(&self.clean_delays, " delays")
        )?;
        writeln!(
            f,
            "finality after heal: {}",
            percentiles(&self.clean_ms, " ms")
        )?;
        writeln!(
            f,
            "finality after heal, decided in round 0: {}",
            percentiles(&self.first_round_delays, " delays")
        )?;
        writeln!(
            f,
            "finality during faults: {}",
            percentiles(&self.faulty_delays, " delays")
        )?;
        writeln!(
            f,
            "recovery after heal (all honest gain the target heights): {}",
            percentiles(&self.recovery_ms, " ms")
        )?;
        writeln!(
            f,
            "runs with a commit after round 0: {}",
            self.late_round_runs
        )?;
        let covered: Vec<String> = self
            .covered
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        write!(f, "faults covered (runs): {}", covered.join(", "))?;
        for (seed, violation, replay) in &self.failures {
            write!(f, "\nFAILED seed {seed}: {violation}\n  replay: {replay}")?;
        }
        Ok(())
    }
}

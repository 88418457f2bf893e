//! The lab's results: named checks with their evidence, one record per phase, the final
//! table, the benchmark table, and the JSON report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::monitoring;
use crate::phase::Phase;
use crate::stats::Quantiles;
use crate::txstream::StreamStats;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Held.
    Pass,
    /// Did not hold.
    Fail,
    /// Not applicable in this run (a kernel check without XDP).
    Na,
    /// Measured and reported, not enforced.
    Info,
}

/// One named check with its one-line evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// What is checked (stable: tests look checks up by name).
    pub name: String,
    /// The outcome.
    pub status: Status,
    /// What was seen.
    pub evidence: String,
}

impl Check {
    /// Pass when `ok`, else fail.
    pub fn new(name: &str, ok: bool, evidence: impl Into<String>) -> Check {
        let status = if ok { Status::Pass } else { Status::Fail };
        Check {
            name: name.to_string(),
            status,
            evidence: evidence.into(),
        }
    }

    /// Pass when `problems` is empty (evidence `clear`), else fail listing them.
    pub fn all_clear(name: &str, problems: &[String], clear: impl Into<String>) -> Check {
        let evidence = if problems.is_empty() {
            clear.into()
        } else {
            problems.join("; ")
        };
        Check::new(name, problems.is_empty(), evidence)
    }

    /// A check that does not apply.
    pub fn na(name: &str, evidence: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            status: Status::Na,
            evidence: evidence.into(),
        }
    }

    /// A measurement that is only reported.
    pub fn info(name: &str, evidence: impl Into<String>) -> Check {
        Check {
            name: name.to_string(),
            status: Status::Info,
            evidence: evidence.into(),
        }
    }

    /// Whether it failed.
    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }

    /// One verdict line.
    pub fn line(&self) -> String {
        let tag = match self.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Na => "n/a ",
            Status::Info => "info",
        };
        format!("  {tag} {}: {}", self.name, self.evidence)
    }
}

/// What one phase measured and concluded.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Its length, seconds (the attack's duration plus any wait for the defence).
    pub secs: f64,
    /// Each honest node's final height at the start (`None`: not answering).
    pub heights_start: Vec<Option<u64>>,
    /// And at the end.
    pub heights_end: Vec<Option<u64>>,
    /// The least any running node advanced.
    pub advanced_min: u64,
    /// Blocks the reference node committed.
    pub blocks: u64,
    /// Finality latency over every node's finality events.
    pub finality: Quantiles,
    /// The same, node by node.
    pub finality_by_node: Vec<Quantiles>,
    /// Its median over the quiet phase's (attack phases).
    pub latency_ratio: Option<f64>,
    /// Transactions committed, per second.
    pub tx_per_sec: f64,
    /// Transactions committed.
    pub committed_txs: u64,
    /// Packets the kernel filters dropped, by reason, summed over the honest nodes.
    pub kernel_drops: BTreeMap<String, u64>,
    /// Ban events, by reason.
    pub bans: BTreeMap<String, u64>,
    /// Mempool refusals, by reason, summed over the honest nodes.
    pub mempool_rejected: BTreeMap<String, u64>,
    /// The attacker's summary (its last stdout line, parsed; a flood's `sent` line).
    pub attacker: Option<Value>,
    /// The checks.
    pub checks: Vec<Check>,
    /// Cut short by Ctrl-C (no checks then).
    pub interrupted: bool,
}

impl PhaseReport {
    /// Checks passed and failed.
    pub fn tally(&self) -> (usize, usize) {
        tally(&self.checks)
    }
}

/// Checks passed and failed in `checks`.
pub fn tally(checks: &[Check]) -> (usize, usize) {
    let passed = checks.iter().filter(|c| c.status == Status::Pass).count();
    let failed = checks.iter().filter(|c| c.failed()).count();
    (passed, failed)
}

/// One lab run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The XDP filter was on.
    pub xdp: bool,
    /// Honest validators.
    pub validators: usize,
    /// Each phase's planned length, seconds.
    pub duration_secs: f64,
    /// Transactions per second asked for.
    pub tx_rate: u32,
    /// Flood packets per second asked for (0: unpaced).
    pub flood_pps: u64,
    /// The phases run.
    pub phases: Vec<PhaseReport>,
    /// The checks made at the end.
    pub final_checks: Vec<Check>,
    /// The transaction stream's counters.
    pub stream: StreamStats,
    /// What the monitoring check saw (`--monitoring`, when the run got to its end).
    pub monitoring: Option<monitoring::Summary>,
    /// Every check passed (and the run was neither interrupted nor failed).
    pub passed: bool,
    /// Stopped by Ctrl-C or SIGTERM.
    pub interrupted: bool,
    /// The error that ended the run early, if any.
    pub error: Option<String>,
    /// The command line.
    pub command: String,
}

impl Report {
    /// Sets `passed` from the checks, the interruption and the error.
    pub fn conclude(&mut self) {
        let failed = self
            .phases
            .iter()
            .flat_map(|p| &p.checks)
            .chain(&self.final_checks)
            .any(Check::failed);
        self.passed = !failed && !self.interrupted && self.error.is_none();
    }

    /// The final table: one row per phase, then the final checks.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mode = if self.xdp {
            "with XDP"
        } else {
            "without XDP (--no-xdp)"
        };
        let _ = writeln!(
            out,
            "\nlab results, {} validators, {mode}:",
            self.validators
        );
        let _ = writeln!(
            out,
            "{:<20} {:>5} {:>8} {:>15} {:>7}  {:<34} {:<28} checks",
            "phase", "secs", "heights", "p50/p99 ms", "tx/s", "kernel drops", "bans"
        );
        for p in &self.phases {
            let (passed, failed) = p.tally();
            let checks = if p.interrupted {
                "interrupted".to_string()
            } else if failed == 0 {
                format!("{passed} ok")
            } else {
                format!("{passed} ok, {failed} FAILED")
            };
            let _ = writeln!(
                out,
                "{:<20} {:>5.0} {:>8} {:>15} {:>7.1}  {:<34} {:<28} {}",
                p.phase.name(),
                p.secs,
                format!("+{}", p.advanced_min),
                format!("{}/{}", p.finality.p50_ms, p.finality.p99_ms),
                p.tx_per_sec,
                counts(&p.kernel_drops),
                counts(&p.bans),
                checks
            );
        }
        for p in &self.phases {
            if let Some(summary) = &p.attacker {
                let _ = writeln!(out, "  attacker {}: {summary}", p.phase.name());
            }
        }
        if !self.final_checks.is_empty() {
            let _ = writeln!(out, "at the end:");
            for c in &self.final_checks {
                let _ = writeln!(out, "{}", c.line());
            }
        }
        if let Some(m) = &self.monitoring {
            for line in m.lines() {
                let _ = writeln!(out, "{line}");
            }
        }
        let failed: Vec<String> = self
            .phases
            .iter()
            .flat_map(|p| {
                p.checks
                    .iter()
                    .filter(|c| c.failed())
                    .map(move |c| format!("{}: {}", p.phase.name(), c.name))
            })
            .chain(
                self.final_checks
                    .iter()
                    .filter(|c| c.failed())
                    .map(|c| c.name.clone()),
            )
            .collect();
        let verdict = if let Some(e) = &self.error {
            format!("ERROR: {e}")
        } else if self.interrupted {
            "INTERRUPTED: the results above are what was measured so far".to_string()
        } else if failed.is_empty() {
            "every check passed".to_string()
        } else {
            format!("FAILED: {}", failed.join("; "))
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

/// `a=1 b=2` of the non-zero counts, or `-`.
fn counts(map: &BTreeMap<String, u64>) -> String {
    let parts: Vec<String> = map
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// The rate a flood reached (packets per second, rounded), from the `pps` of its JSON summary.
pub fn flood_pps(attacker: &Value) -> Option<u64> {
    let pps = attacker["pps"].as_f64()?;
    (pps.is_finite() && pps >= 0.0).then(|| pps.round() as u64)
}

/// The benchmark table: each phase with and without XDP.
pub fn bench_table(with: &Report, without: &Report, command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbenchmark, {} validators, {} s per phase, {} tx/s offered, flood {}:",
        with.validators,
        with.duration_secs,
        with.tx_rate,
        if with.flood_pps == 0 {
            "unpaced".to_string()
        } else {
            format!("{} pps", with.flood_pps)
        }
    );
    let _ = writeln!(
        out,
        "{:<12} | {:>13} {:>6} {:>7} {:>10} {:<30} | {:>13} {:>6} {:>7} {:>10}",
        "phase",
        "XDP p50/p99",
        "tx/s",
        "heights",
        "flood pps",
        "kernel drops",
        "no-XDP p50/99",
        "tx/s",
        "heights",
        "flood pps"
    );
    for phase in Phase::BENCH {
        let find = |r: &Report| r.phases.iter().find(|p| p.phase == phase).cloned();
        let cells = |p: Option<PhaseReport>| match p {
            Some(p) => [
                format!("{}/{}", p.finality.p50_ms, p.finality.p99_ms),
                format!("{:.1}", p.tx_per_sec),
                format!("+{}", p.advanced_min),
                p.attacker
                    .as_ref()
                    .and_then(flood_pps)
                    .map_or("-".into(), |pps| pps.to_string()),
                counts(&p.kernel_drops),
            ],
            None => ["-".into(), "-".into(), "-".into(), "-".into(), "-".into()],
        };
        let [a50, atx, ah, apps, drops] = cells(find(with));
        let [b50, btx, bh, bpps, _] = cells(find(without));
        let _ = writeln!(
            out,
            "{:<12} | {a50:>13} {atx:>6} {ah:>7} {apps:>10} {drops:<30} | {b50:>13} {btx:>6} {bh:>7} {bpps:>10}",
            phase.name()
        );
    }
    let _ = writeln!(out, "command: {command}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(phase: Phase, checks: Vec<Check>) -> PhaseReport {
        PhaseReport {
            phase,
            secs: 8.0,
            heights_start: vec![Some(10)],
            heights_end: vec![Some(30)],
            advanced_min: 20,
            blocks: 20,
            finality: Quantiles {
                count: 80,
                p50_ms: 30,
                p99_ms: 90,
                max_ms: 120,
            },
            finality_by_node: Vec::new(),
            latency_ratio: Some(1.1),
            tx_per_sec: 49.5,
            committed_txs: 396,
            kernel_drops: BTreeMap::from([
                ("rate_limited".into(), 5000),
                ("blocklisted".into(), 0),
            ]),
            bans: BTreeMap::new(),
            mempool_rejected: BTreeMap::new(),
            attacker: Some(serde_json::json!({
                "attack": "flood",
                "sent": 40000,
                "secs": 8.0,
                "pps": 4999.4
            })),
            checks,
            interrupted: false,
        }
    }

    fn report(phases: Vec<PhaseReport>) -> Report {
        Report {
            xdp: true,
            validators: 4,
            duration_secs: 8.0,
            tx_rate: 50,
            flood_pps: 5000,
            phases,
            final_checks: vec![Check::new("agreement", true, "h 1..=200 equal on 4 nodes")],
            stream: StreamStats::default(),
            monitoring: None,
            passed: false,
            interrupted: false,
            error: None,
            command: "lab".into(),
        }
    }

    #[test]
    fn a_run_passes_only_when_no_check_failed() {
        let ok = vec![
            Check::new("heights", true, "+20"),
            Check::na("kernel drops", "n/a (no XDP)"),
        ];
        let mut r = report(vec![phase(Phase::UdpRate, ok.clone())]);
        r.conclude();
        assert!(r.passed);
        let table = r.table();
        assert!(table.contains("udp-rate"), "{table}");
        assert!(table.contains("rate_limited=5000"), "{table}");
        assert!(!table.contains("blocklisted=0"), "{table}");
        assert!(table.contains("every check passed"), "{table}");
        let mut bad = ok;
        bad.push(Check::new("latency", false, "2.0x"));
        let mut r = report(vec![phase(Phase::UdpRate, bad)]);
        r.conclude();
        assert!(!r.passed);
        assert!(r.table().contains("FAILED: udp-rate: latency"));
        let c = Check::all_clear("x", &[], "none");
        assert_eq!((c.status, c.evidence.as_str()), (Status::Pass, "none"));
        let c = Check::all_clear("x", &["a".into(), "b".into()], "none");
        assert_eq!((c.status, c.evidence.as_str()), (Status::Fail, "a; b"));
        let mut r = report(vec![]);
        r.interrupted = true;
        r.conclude();
        assert!(!r.passed);
    }

    #[test]
    fn the_json_report_names_phases_and_check_statuses() {
        let r = report(vec![phase(
            Phase::QuicShort,
            vec![Check::info("latency", "1.1x")],
        )]);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["phases"][0]["phase"], "quic-short");
        assert_eq!(v["phases"][0]["checks"][0]["status"], "info");
        assert_eq!(v["phases"][0]["finality"]["p50_ms"], 30);
        assert_eq!(v["final_checks"][0]["status"], "pass");
    }

    #[test]
    fn the_bench_table_puts_both_runs_side_by_side_with_the_command() {
        let with = report(vec![phase(Phase::Quiet, vec![])]);
        let mut without = with.clone();
        without.xdp = false;
        let t = bench_table(&with, &without, "lab --bench");
        assert!(t.contains("quiet"), "{t}");
        assert!(t.contains("30/90"), "{t}");
        assert!(t.contains("4999"), "the flood's rate: {t}");
        assert!(t.ends_with("command: lab --bench\n"), "{t}");
    }
}

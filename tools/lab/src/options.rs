//! The lab's command line, and the checked options it turns into.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser;

use crate::monitoring;
use crate::phase::Phase;
use crate::topology::{DEFAULT_DIR_PREFIX, MAX_VALIDATORS};

/// Fewest honest validators: three of four are a quorum even with the byzantine one.
pub const MIN_VALIDATORS: usize = 4;
/// Shortest phase.
pub const MIN_PHASE: Duration = Duration::from_secs(3);
/// Longest phase (the attacker's own bound is 600 s).
pub const MAX_PHASE: Duration = Duration::from_secs(600);
/// Highest transaction rate of the stream, transactions per second.
pub const MAX_TX_RATE: u32 = 2_000;
/// Highest flood rate, packets per second.
pub const MAX_FLOOD_PPS: u64 = 10_000_000;
/// The filter's per-source packet budget on the protected ports, packets per second
/// (`firewall::Policy`'s lab preset): a bounded `--flood-pps` must exceed it, or the
/// `udp-rate` flood from one source is not over budget.
pub const SOURCE_BUDGET_PPS: u64 = 2_000;

/// Runs a network of validators in network namespaces, each behind the XDP filter, attacks it
/// one attack after another while a transaction stream runs, and checks each attack ended in
/// the expected defence. Needs root. Exit status: 0 when every check passed, 1 when one failed,
/// 2 on an error, 130 when interrupted.
#[derive(Parser, Debug)]
#[command(name = "lab", version)]
pub struct Cli {
    /// Honest validators (4 to 16).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Attacks to run, comma-separated, always in the lab's order after the quiet phase:
    /// udp-blocked, udp-rate, syn, quic-short, connect-flood, gossip-invalid-tx,
    /// gossip-invalid-vote, gossip-oversized, replay, equivocate, restart; or `all`.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub attacks: Vec<String>,
    /// Length of each phase (e.g. 20s, 1m).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Signed transfers per second of the transaction stream.
    #[arg(long, default_value_t = 50)]
    pub tx_rate: u32,
    /// Packets per second of each flood; 0: as fast as the sender goes (bounded by
    /// --duration and a packet bound).
    #[arg(long, default_value_t = 0)]
    pub flood_pps: u64,
    /// The validators' propose timeout of round 0, ms (the other timeouts scale with it).
    #[arg(long, default_value_t = 1000)]
    pub propose_timeout_ms: u64,
    /// Run the validators without the XDP filter (the comparison that shows what it does).
    #[arg(long)]
    pub no_xdp: bool,
    /// Benchmark: quiet and the four floods, once with the filter and once without, on fresh
    /// networks, in one table.
    #[arg(long, conflicts_with_all = ["no_xdp", "attacks"])]
    pub bench: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The data directory (keys, genesis, configs, databases, logs); must not exist. Default
    /// /tmp/xlab-<pid>.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the data directory at the end.
    #[arg(long)]
    pub keep: bool,
    /// Run Prometheus (Debian's `prometheus` package) in the lab, scraping every validator,
    /// reachable at --monitoring-listen; at the end, check that every target is up, every rule
    /// group is healthy and every dashboard panel's query returned data.
    #[arg(long, conflicts_with = "bench")]
    pub monitoring: bool,
    /// The monitoring directory: `prometheus/` (config, rules) and `grafana/dashboards/`.
    /// Default: the repository's deploy/monitoring.
    #[arg(long, requires = "monitoring")]
    pub monitoring_dir: Option<PathBuf>,
    /// The address, in the root namespace, that forwards to the lab's Prometheus (port 0: any
    /// free port; the lab prints the URL).
    #[arg(long, requires = "monitoring", default_value_t = monitoring::DEFAULT_LISTEN)]
    pub monitoring_listen: SocketAddr,
}

/// `--monitoring`'s checked options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringOptions {
    /// The monitoring directory (`prometheus/`, `grafana/dashboards/`).
    pub dir: PathBuf,
    /// Where the operator reaches Prometheus, in the root namespace.
    pub listen: SocketAddr,
}

/// Checked options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Honest validators.
    pub validators: usize,
    /// The phases, in running order, quiet first.
    pub phases: Vec<Phase>,
    /// Each phase's length.
    pub duration: Duration,
    /// Transactions per second.
    pub tx_rate: u32,
    /// Packets per second of a flood (0: unpaced).
    pub flood_pps: u64,
    /// Propose timeout, ms.
    pub propose_timeout_ms: u64,
    /// The XDP filter on.
    pub xdp: bool,
    /// Benchmark mode.
    pub bench: bool,
    /// JSON report file.
    pub report: Option<PathBuf>,
    /// Data directory.
    pub dir: PathBuf,
    /// Keep the data directory.
    pub keep: bool,
    /// Prometheus in the lab, when asked for.
    pub monitoring: Option<MonitoringOptions>,
}

impl Cli {
    /// Checks every option; errors say which and what is accepted.
    pub fn options(&self, pid: u32) -> Result<Options> {
        if !(MIN_VALIDATORS..=MAX_VALIDATORS).contains(&self.validators) {
            bail!(
                "--validators takes {MIN_VALIDATORS} to {MAX_VALIDATORS}, not {}",
                self.validators
            );
        }
        if !(MIN_PHASE..=MAX_PHASE).contains(&self.duration) {
            bail!(
                "--duration takes {} to {}, not {}",
                humantime::format_duration(MIN_PHASE),
                humantime::format_duration(MAX_PHASE),
                humantime::format_duration(self.duration)
            );
        }
        if !(1..=MAX_TX_RATE).contains(&self.tx_rate) {
            bail!(
                "--tx-rate takes 1 to {MAX_TX_RATE} transactions per second, not {}",
                self.tx_rate
            );
        }
        if self.flood_pps != 0 && !(2 * SOURCE_BUDGET_PPS..=MAX_FLOOD_PPS).contains(&self.flood_pps)
        {
            bail!(
                "--flood-pps takes 0 (unpaced) or {} to {MAX_FLOOD_PPS}: the udp-rate flood must be well over the filter's per-source budget of {SOURCE_BUDGET_PPS} pps",
                2 * SOURCE_BUDGET_PPS
            );
        }
        if !(10..=node::config::MAX_PROPOSE_TIMEOUT_MS).contains(&self.propose_timeout_ms) {
            bail!(
                "--propose-timeout-ms takes 10 to {}, not {}",
                node::config::MAX_PROPOSE_TIMEOUT_MS,
                self.propose_timeout_ms
            );
        }
        let phases = if self.bench {
            Phase::BENCH.to_vec()
        } else {
            parse_attacks(&self.attacks)?
        };
        let dir = match &self.dir {
            Some(dir) => std::path::absolute(dir)?,
            None => PathBuf::from(format!("{DEFAULT_DIR_PREFIX}{pid}")),
        };
        if dir.exists() {
            bail!(
                "--dir {} exists; the lab makes its own directory (and removes it at the end unless --keep): name a new one",
                dir.display()
            );
        }
        if let Some(report) = &self.report
            && report.is_dir()
        {
            bail!("--report {} is a directory; name a file", report.display());
        }
        let monitoring = if self.monitoring {
            let dir = match &self.monitoring_dir {
                Some(dir) => std::path::absolute(dir)?,
                None => monitoring::default_dir(),
            };
            monitoring::check_dir(&dir)?;
            Some(MonitoringOptions {
                dir,
                listen: self.monitoring_listen,
            })
        } else {
            None
        };
        Ok(Options {
            validators: self.validators,
            phases,
            duration: self.duration,
            tx_rate: self.tx_rate,
            flood_pps: self.flood_pps,
            propose_timeout_ms: self.propose_timeout_ms,
            xdp: !self.no_xdp,
            bench: self.bench,
            report: self.report.clone(),
            dir,
            keep: self.keep,
            monitoring,
        })
    }
}

/// The phases named by `--attacks`, in the lab's order, with the quiet phase first.
pub fn parse_attacks(names: &[String]) -> Result<Vec<Phase>> {
    let mut chosen = vec![Phase::Quiet];
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if name == "all" {
            chosen.extend(Phase::ALL);
            continue;
        }
        match Phase::from_name(name) {
            Some(phase) => chosen.push(phase),
            None => bail!(
                "--attacks: unknown attack {name:?}; known: {}, or all",
                Phase::ALL
                    .iter()
                    .filter(|p| **p != Phase::Quiet)
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    chosen.sort();
    chosen.dedup();
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(["lab"].iter().chain(args)).expect("parses")
    }

    #[test]
    fn defaults_run_every_phase_with_the_filter() {
        let o = cli(&[]).options(7).unwrap();
        assert_eq!(o.validators, 4);
        assert_eq!(o.phases, Phase::ALL.to_vec());
        assert_eq!(o.duration, Duration::from_secs(20));
        assert_eq!(
            (o.tx_rate, o.flood_pps, o.propose_timeout_ms),
            (50, 0, 1000)
        );
        assert!(o.xdp && !o.bench && !o.keep);
        assert_eq!(o.dir, PathBuf::from("/tmp/xlab-7"));
        assert_eq!(o.monitoring, None);
    }

    #[test]
    fn monitoring_takes_a_checked_directory_and_a_listen_address() {
        let o = cli(&["--monitoring"]).options(7).unwrap();
        let m = o.monitoring.expect("monitoring asked for");
        assert_eq!(m.dir, monitoring::default_dir());
        assert_eq!(m.listen, monitoring::DEFAULT_LISTEN);
        assert_eq!(m.listen.to_string(), "127.0.0.1:19090");
        let o = cli(&["--monitoring", "--monitoring-listen", "127.0.0.1:0"])
            .options(7)
            .unwrap();
        assert_eq!(o.monitoring.unwrap().listen.port(), 0);
        let empty = tempfile::tempdir().unwrap();
        let path = empty.path().to_str().unwrap();
        let err = cli(&["--monitoring", "--monitoring-dir", path])
            .options(7)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prometheus.yml"), "{err}");
        for args in [
            &["--monitoring-dir", path][..],
            &["--monitoring-listen", "127.0.0.1:9"][..],
            &["--monitoring", "--bench"][..],
        ] {
            let argv = ["lab"].iter().chain(args);
            assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
        }
    }

    #[test]
    fn attacks_run_in_the_lab_order_after_quiet() {
        let o = cli(&["--attacks", "restart,udp-blocked,restart"])
            .options(7)
            .unwrap();
        assert_eq!(o.phases, [Phase::Quiet, Phase::UdpBlocked, Phase::Restart]);
        let o = cli(&["--attacks", "quiet"]).options(7).unwrap();
        assert_eq!(o.phases, [Phase::Quiet]);
        let err = cli(&["--attacks", "udp,syn"]).options(7).unwrap_err();
        assert!(err.to_string().contains("unknown attack \"udp\""), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_range() {
        for (args, needle) in [
            (&["--validators", "3"][..], "--validators takes 4 to 16"),
            (&["--validators", "17"][..], "--validators takes 4 to 16"),
            (&["--duration", "1s"][..], "--duration takes 3s"),
            (&["--duration", "11m"][..], "--duration takes"),
            (&["--tx-rate", "0"][..], "--tx-rate takes 1"),
            (&["--flood-pps", "100"][..], "--flood-pps takes 0"),
            (
                &["--propose-timeout-ms", "5"][..],
                "--propose-timeout-ms takes 10",
            ),
        ] {
            let err = cli(args).options(7).unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        assert!(cli(&["--flood-pps", "4000"]).options(7).is_ok());
    }

    #[test]
    fn bench_runs_quiet_and_the_floods_and_excludes_other_choices() {
        let o = cli(&["--bench"]).options(7).unwrap();
        assert_eq!(o.phases, Phase::BENCH.to_vec());
        assert!(Cli::try_parse_from(["lab", "--bench", "--no-xdp"]).is_err());
        assert!(Cli::try_parse_from(["lab", "--bench", "--attacks", "syn"]).is_err());
    }

    #[test]
    fn an_existing_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let err = cli(&["--dir", path]).options(7).unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
        let fresh = dir.path().join("lab");
        let o = cli(&["--dir", fresh.to_str().unwrap()]).options(7).unwrap();
        assert_eq!(o.dir, fresh);
    }
}

//! `lab`: a network of validators in network namespaces, each behind the XDP filter, attacked
//! one attack after another while a transaction stream runs; a live summary every second, a
//! verdict per attack, a final table, and everything torn down at the end, on Ctrl-C, on error
//! and on panic (what a SIGKILLed lab leaves, the next run removes).
//!
//! # Design
//! The lab creates its namespaces, then moves its main thread into the hub namespace before any
//! other thread exists: the tokio runtime's threads inherit it, so every socket of the lab (HTTP,
//! WebSocket) reaches the nodes on the bridge and nothing touches the root namespace. Children
//! are forked by one long-lived thread ([`procs::Spawner`]) and die with the lab.

mod client;
mod judge;
mod monitoring;
mod observe;
mod options;
mod phase;
mod procs;
mod prom;
mod report;
mod scenario;
mod setup;
mod stats;
mod topology;
mod txstream;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::options::{Cli, Options};
use crate::phase::Phase;
use crate::procs::Spawner;
use crate::report::Report;
use crate::scenario::Binaries;
use crate::topology::Topology;

/// Exit status when a check failed.
const EXIT_FAILED: u8 = 1;
/// Exit status on an error (bad options, missing binaries, a network that would not start).
const EXIT_ERROR: u8 = 2;
/// Exit status after Ctrl-C or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;
/// Tokio worker threads: the lab's own work is light; the cores are the nodes'.
const WORKER_THREADS: usize = 2;
/// The build command that makes the binaries the lab runs.
const BUILD_COMMAND: &str = "cargo build -p node -p attacker -p lab";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lab: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode> {
    let pid = std::process::id();
    let opts = cli.options(pid)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (network namespaces, XDP, bpffs): run it as root, e.g. with sudo"
        );
    }
    let bins = locate_binaries()?;
    if opts.monitoring.is_some() {
        monitoring::check_installed()?;
    }
    check_attacker(&bins, &opts.phases)?;
    let removed = topology::remove_leftovers()?;
    if !removed.is_empty() {
        eprintln!("lab: removed what killed labs left: {}", removed.join(", "));
    }
    if opts.bench {
        return bench(&opts, &bins, pid);
    }
    let report = run_network(&opts, &bins, pid, &opts.dir)?;
    print!("{}", report.table());
    if let Some(path) = &opts.report {
        write_json(path, &serde_json::to_value(&report)?)?;
    }
    if !opts.keep && !report.passed {
        println!("(rerun with --keep to keep the nodes' and attackers' logs)");
    }
    Ok(exit_code(&[&report]))
}

/// The exit status of the runs: interrupted, error, failed check, or success.
fn exit_code(reports: &[&Report]) -> ExitCode {
    if reports.iter().any(|r| r.interrupted) {
        ExitCode::from(EXIT_INTERRUPTED)
    } else if reports.iter().any(|r| r.error.is_some()) {
        ExitCode::from(EXIT_ERROR)
    } else if reports.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `node` and `attacker`, next to this executable.
fn locate_binaries() -> Result<Binaries> {
    let exe = std::env::current_exe().context("locating the lab's own executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let find = |name: &str| -> Result<PathBuf> {
        let path = dir.join(name);
        if !path.is_file() {
            bail!(
                "`{name}` is not next to the lab ({} is missing): build the three with `{BUILD_COMMAND}`",
                path.display()
            );
        }
        Ok(path)
    };
    Ok(Binaries {
        node: find("node")?,
        attacker: find("attacker")?,
    })
}

/// Fails early, naming the phase, when the attacker lacks a subcommand a phase needs.
fn check_attacker(bins: &Binaries, phases: &[Phase]) -> Result<()> {
    let needed: BTreeSet<&str> = phases.iter().filter_map(|p| p.subcommand()).collect();
    for sub in needed {
        let ok = Command::new(&bins.attacker)
            .args([sub, "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let users: Vec<&str> = phases
                .iter()
                .filter(|p| p.subcommand() == Some(sub))
                .map(|p| p.name())
                .collect();
            bail!(
                "{} has no `{sub}` subcommand, which {} need(s): rebuild it (`{BUILD_COMMAND}`) or leave those out of --attacks",
                bins.attacker.display(),
                users.join(", ")
            );
        }
    }
    Ok(())
}

/// Removes the lab's namespaces (and what runs in them) and its data directory when dropped:
/// at the end of a run, and on an error or a panic.
struct Teardown<'a> {
    topo: &'a Topology,
    dir: &'a Path,
    keep: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        for e in self.topo.teardown() {
            eprintln!("lab: teardown: {e}");
        }
        if self.keep {
            println!("kept {}", self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("lab: removing {}: {e}", self.dir.display());
        }
    }
}

/// One network from creation to teardown, with data in `dir`.
fn run_network(opts: &Options, bins: &Binaries, pid: u32, dir: &Path) -> Result<Report> {
    let topo = Topology::new(pid, opts.validators);
    let _teardown = Teardown {
        topo: &topo,
        dir,
        keep: opts.keep,
    };
    // A dead lab whose pid this process reused left names that are ours now.
    for e in topo.teardown() {
        eprintln!("lab: removing a stale namespace: {e}");
    }
    topo.create().context("creating the lab's namespaces")?;
    let chain = setup::write(dir, &topo, opts)?;
    // The operator's socket is bound here, in the root namespace, where it stays.
    let monitoring = opts
        .monitoring
        .as_ref()
        .map(|m| monitoring::prepare(m, dir, &topo))
        .transpose()?;
    // Before any thread exists: every thread the lab starts from here on is in the hub.
    firewall::netns::enter(&topo.hub)?;
    println!(
        "lab: {} validators {}, namespaces {}{pid}-*, data in {}",
        opts.validators,
        if opts.xdp { "with XDP" } else { "WITHOUT XDP" },
        topology::PREFIX,
        dir.display()
    );
    println!(
        "lab: try `ip netns exec {} curl -s {}/v1/status` while it runs",
        topo.hub,
        client::Endpoint::new(topology::validator_ip(0), String::new()).api
    );
    let spawner = Spawner::new()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let ctx = scenario::Context {
        opts,
        topo: &topo,
        chain: &chain,
        bins,
        spawner: &spawner,
        dir: dir.to_path_buf(),
        monitoring,
    };
    let report = runtime.block_on(scenario::run(ctx));
    drop(runtime);
    // Its thread exits: any child still alive gets SIGKILL.
    drop(spawner);
    Ok(report)
}

/// `--bench`: quiet and the floods on a fresh network with XDP, then on one without.
fn bench(opts: &Options, bins: &Binaries, pid: u32) -> Result<ExitCode> {
    let mut with = opts.clone();
    with.xdp = true;
    with.dir = opts.dir.join("xdp");
    let mut without = opts.clone();
    without.xdp = false;
    without.dir = opts.dir.join("no-xdp");
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let first = run_network(&with, bins, pid, &with.dir)?;
    print!("{}", first.table());
    let second = if first.interrupted {
        None
    } else {
        let r = run_network(&without, bins, pid, &without.dir)?;
        print!("{}", r.table());
        Some(r)
    };
    if !opts.keep {
        let _ = std::fs::remove_dir_all(&opts.dir);
    }
    if let Some(second) = &second {
        print!(
            "{}",
            report::bench_table(&first, second, &scenario::command_line())
        );
    }
    if let Some(path) = &opts.report {
        let runs: Vec<&Report> = std::iter::once(&first).chain(second.as_ref()).collect();
        write_json(path, &serde_json::json!({ "bench": true, "runs": runs }))?;
    }
    // The run without the filter measures what the floods do to unprotected validators: its
    // failed checks are that measurement, so the status follows the run with XDP (and errors).
    let mut status = vec![&first];
    if let Some(second) = &second
        && (second.error.is_some() || second.interrupted)
    {
        status.push(second);
    }
    Ok(exit_code(&status))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .with_context(|| format!("writing the report {}", path.display()))?;
    println!("report written to {}", path.display());
    Ok(())
}

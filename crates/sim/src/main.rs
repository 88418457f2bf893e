//! The simulation's command line: sweep a range of seeds, or replay one seed with its trace.
//!
//! ```sh
//! cargo run -p sim --release -- sweep --seeds 0..10000
//! cargo run -p sim --release -- replay --seed 42
//! ```

use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Deterministic simulation of validators running consensus over a faulty network.
#[derive(Parser)]
#[command(name = "sim")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every seed of a range, prints each failure with its replay command and a summary
    /// (finality latency, faults covered); exits with 1 if any seed failed.
    Sweep {
        /// Seeds to run, `START..END` (END excluded).
        #[arg(long, value_parser = parse_range, default_value = "0..1000")]
        seeds: Range<u64>,
        /// Worker threads (each runs one seed at a time); defaults to the number of cores.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Runs one seed and prints its scenario, its trace (`RUST_LOG` overrides the default
    /// `sim=debug`; add `consensus=debug` for the engine's own log) and its report.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
    },
}

/// Parses `START..END`.
fn parse_range(text: &str) -> anyhow::Result<Range<u64>> {
    let (start, end) = text
        .split_once("..")
        .context("expected START..END, e.g. 0..10000")?;
    let start: u64 = start.parse().context("START is not a number")?;
    let end: u64 = end.parse().context("END is not a number")?;
    if start >= end {
        bail!("the range {start}..{end} is empty");
    }
    Ok(start..end)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sweep { seeds, threads } => {
            // The engines' warnings (invalid blocks, equivocations) are what the faults provoke;
            // a sweep reports failures and figures, and RUST_LOG brings the logs back.
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error"))
                .init();
            let threads = threads.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            let count = seeds.end - seeds.start;
            println!("sweeping {count} seeds {seeds:?} on {threads} threads");
            let started = Instant::now();
            let summary = sim::sweep(seeds, threads, |report| {
                if !report.passed() {
                    println!("{}", report.failure_text());
                }
            });
            let took = started.elapsed();
            println!("{summary}");
            println!(
                "wall time {:.1} s ({:.1} ms per seed on {threads} threads)",
                took.as_secs_f64(),
                took.as_secs_f64() * 1000.0 / count as f64
            );
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Replay { seed } => {
            env_logger::Builder::from_env(
                env_logger::Env::default().default_filter_or("sim=debug"),
            )
            .format_timestamp(None)
            .init();
            let scenario = sim::Scenario::from_seed(seed);
            println!("{scenario}");
            let report = sim::run(scenario);
            if report.passed() {
                println!("{report}");
                ExitCode::SUCCESS
            } else {
                println!("{}", report.failure_text());
                ExitCode::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_and_empty_ones_are_refused() {
        assert_eq!(parse_range("0..10000").expect("valid"), 0..10000);
        assert!(parse_range("5..5").is_err());
        assert!(parse_range("5").is_err());
        assert!(parse_range("a..9").is_err());
    }
}

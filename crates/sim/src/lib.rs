//! Simulate validators running the consensus engine over a faulty network, deterministically,
//! and check on every run that consensus is safe and live.
//!
//! # Design
//! A [`Scenario`] drawn from a seed fixes the validators, their stakes, which of them are
//! Byzantine (less than a third of the stake: equivocators, silent validators, invalid
//! proposers) and the faults (latency, jitter, loss, partitions that heal, crashes that restart
//! on the same store). [`run`] plays it on one thread with one seeded generator and simulated
//! time, and returns a [`Report`]: the oracles' violations, the faults that really happened,
//! finality latency, and a state hash that two runs of one seed must share.
//!
//! The oracles ([`oracle`]): agreement across honest validators and restarts, no honest
//! double-sign, only valid blocks final (no honest vote for a forged block, forged blocks never
//! committed, honest ledgers equal, the chain replays from genesis), evidence against an
//! equivocator leads to its slashing in every honest ledger within [`SLASH_BOUND_MS`], and
//! liveness: after the faults heal, every honest validator gains
//! [`scenario::LIVENESS_HEIGHTS`] heights within [`LIVENESS_BOUND_MS`] of simulated time.
//!
//! # Running
//! ```sh
//! cargo test -p sim                                      # 500 seeds, determinism, one test per fault
//! cargo run -p sim --release -- sweep --seeds 0..10000   # a longer sweep with its figures
//! cargo run -p sim --release -- replay --seed 42         # one seed: scenario, trace, report
//! ```
//! A failing seed prints its scenario, the broken rule and the `replay` command that reruns it.
//! The trace is the `sim` target of `log` at debug level (`RUST_LOG=sim=debug,consensus=debug`
//! adds the engine's own log).

pub mod byzantine;
pub mod client;
pub mod network;
pub mod oracle;
pub mod report;
pub mod scenario;
mod sim;
mod sweep;

pub use oracle::Violation;
pub use report::{Covered, Report, Summary};
pub use scenario::{Role, Scenario};
pub use sim::{
    LIVENESS_BOUND_MS, PART_BYTES, SLASH_BOUND_MS, SYNC_BATCH, engine_config, run, run_seed,
};
pub use sweep::sweep;

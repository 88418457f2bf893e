//! Consensus is safe and live under the simulated faults: 500 drawn seeds keep every oracle,
//! a seed replays to the same state, and each fault kind, forced on its own, really happens and
//! is survived.

use std::time::Instant;

use sim::scenario::{Crash, Partition, Split};
use sim::{Covered, Report, Role, Scenario};

/// Seeds of the suite's sweep.
const SEEDS: u64 = 500;
/// Threads of the suite's sweep (the build machine has two cores).
const THREADS: usize = 2;

/// Runs `scenario` and fails the test with the full report unless every oracle held.
fn run_passing(scenario: Scenario) -> Report {
    let report = sim::run(scenario);
    assert!(report.passed(), "{}", report.failure_text());
    println!("{report}");
    report
}

#[test]
fn five_hundred_drawn_seeds_keep_every_oracle() {
    let started = Instant::now();
    let summary = sim::sweep(0..SEEDS, THREADS, |report| {
        if !report.passed() {
            eprintln!("{}", report.failure_text());
        }
    });
    println!("{summary}");
    println!(
        "{SEEDS} seeds on {THREADS} threads in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        summary.passed(),
        "{} of {SEEDS} seeds failed (each is printed above with its replay command)",
        summary.failures.len()
    );
    for needed in [
        Covered::Loss,
        Covered::Partition,
        Covered::BlockSync,
        Covered::CrashRestart,
        Covered::CrashInsideCall,
        Covered::CrashWithVotesInWal,
        Covered::Equivocation,
        Covered::EvidenceCommitted,
        Covered::Slashed,
        Covered::SilentValidator,
        Covered::InvalidProposal,
        Covered::RoundChange,
    ] {
        assert!(
            summary.covered.contains_key(&needed),
            "no seed covered {needed}: {summary}"
        );
    }
}

/// Seeds run twice by the determinism test (drawn scenarios, so every kind of fault).
const REPLAYED_SEEDS: u64 = 8;

#[test]
fn a_seed_replays_to_the_same_final_state_hash() {
    let mut hashes = std::collections::BTreeSet::new();
    for seed in 0..REPLAYED_SEEDS {
        let first = sim::run_seed(seed);
        let second = sim::run_seed(seed);
        assert_eq!(first.state_hash, second.state_hash, "seed {seed}");
        assert_eq!(first.stats, second.stats, "seed {seed}");
        assert_eq!(first.violations, second.violations, "seed {seed}");
        hashes.insert(first.state_hash);
    }
    assert_eq!(
        hashes.len() as u64,
        REPLAYED_SEEDS,
        "two seeds gave the same run: the seed is not used"
    );
}

#[test]
fn an_equivocator_is_caught_by_evidence_in_a_commit_and_slashed() {
    let mut s = Scenario::calm(101, &[300, 300, 300, 200]);
    s.roles[3] = Role::Equivocator;
    s.split = Split {
        twins_to: vec![0, 1],
        witness: Some(2),
    };
    let report = run_passing(s);
    assert!(report.stats.twins > 0);
    assert!(
        report.covered.contains(&Covered::EvidenceCommitted),
        "{report}"
    );
    let (genesis, now) = report.stats.stakes[&3];
    assert!(now < genesis, "stake {now} not below genesis {genesis}");
}

#[test]
fn forged_blocks_of_an_invalid_proposer_are_never_committed() {
    // A heavy invalid proposer (just under a third of the stake) proposes often.
    let mut s = Scenario::calm(102, &[300, 300, 300, 400]);
    s.roles[3] = Role::InvalidProposer;
    s.heal_ms = 4_000;
    let report = run_passing(s);
    assert!(
        !report.stats.forgeries.is_empty(),
        "no forged block was sent: {report}"
    );
    assert!(report.covered.contains(&Covered::RoundChange), "{report}");
}

#[test]
fn a_silent_validator_does_not_stop_the_chain() {
    let mut s = Scenario::calm(103, &[300, 300, 300, 400]);
    s.roles[3] = Role::Silent;
    let report = run_passing(s);
    assert!(report.stats.silenced > 0);
    assert!(report.covered.contains(&Covered::RoundChange), "{report}");
}

#[test]
fn validators_crashed_mid_height_restart_from_their_wal_without_double_signing() {
    let mut s = Scenario::calm(104, &[300, 400, 500, 600, 700]);
    s.heal_ms = 3_000;
    s.crashes = vec![
        Crash {
            node: 1,
            at_ms: 700,
            restart_ms: 1_100,
            mid_call: true,
        },
        Crash {
            node: 4,
            at_ms: 1_300,
            restart_ms: 2_500,
            mid_call: false,
        },
    ];
    let report = run_passing(s);
    assert_eq!(report.stats.restarts, 2);
    assert!(
        report.covered.contains(&Covered::CrashInsideCall),
        "{report}"
    );
    assert!(
        report.covered.contains(&Covered::CrashWithVotesInWal),
        "{report}"
    );
}

#[test]
fn a_partitioned_minority_catches_up_by_block_sync_after_the_heal() {
    // The majority holds 1200 of 1600 stake: a quorum that goes on without the minority.
    let mut s = Scenario::calm(105, &[400, 400, 400, 200, 200]);
    s.heal_ms = 3_000;
    s.partitions = vec![Partition {
        start_ms: 200,
        end_ms: 2_500,
        groups: vec![0, 0, 0, 1, 1],
    }];
    let report = run_passing(s);
    assert!(report.stats.network.partitioned > 0);
    assert!(report.stats.synced_blocks > 0, "{report}");
}

#[test]
fn a_partition_without_a_quorum_stalls_then_recovers() {
    let mut s = Scenario::calm(106, &[300, 300, 300, 300]);
    s.heal_ms = 3_000;
    s.partitions = vec![Partition {
        start_ms: 300,
        end_ms: 2_800,
        groups: vec![0, 0, 1, 1],
    }];
    let report = run_passing(s);
    let longest = report.finality.faulty_ms.iter().max().copied().unwrap_or(0);
    assert!(
        longest >= 2_000,
        "no height waited out the partition (longest {longest} ms): {report}"
    );
    assert!(report.stats.recovery_ms.is_some(), "{report}");
}

#[test]
fn heavy_loss_and_jitter_do_not_stop_the_chain() {
    let mut s = Scenario::calm(107, &[200, 500, 300, 400, 600, 100]);
    s.loss_percent = 10;
    s.links.jitter_ms = 80;
    s.heal_ms = 4_000;
    let report = run_passing(s);
    assert!(report.stats.network.lost > 0);
    assert!(!report.finality.faulty_ms.is_empty(), "{report}");
}

//! Crash safety of commits: a writer process committing blocks to RocksDB is killed with
//! SIGKILL at random moments; after every kill the store opens, sits at a consistent height
//! that never goes back, and its tip and state root equal a replay of the same blocks from
//! genesis.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chain::Ledger;
use chain::testkit::TestChain;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use storage::{MemStore, RocksStore, Store, StoreOptions};

/// Environment variable that turns this test binary into the writer process.
const WRITER_ENV: &str = "CHAIN_CRASH_WRITER_DIR";
/// The writer stops on its own after this many blocks (a bound in case nobody kills it).
const WRITER_MAX_HEIGHT: u64 = 5_000;
/// Kill-and-reopen rounds.
const ROUNDS: usize = 10;

fn network() -> TestChain {
    TestChain::new(4, 40, 2026)
}

/// Commits the next block of the deterministic sequence: its content depends only on the
/// state, so a replay builds the very same blocks.
fn commit_next<S: Store>(ledger: &mut Ledger<S>, net: &TestChain) {
    let height = ledger.height() + 1;
    let accounts = net.accounts.len();
    let txs = (0..20u64)
        .map(|i| {
            let from = ((height * 7 + i * 3) as usize) % accounts;
            let to = (from + 1 + i as usize) % accounts;
            let nonce = ledger
                .account(&net.accounts[from].public_key())
                .expect("state readable")
                .nonce;
            (from, to, nonce)
        })
        .collect::<Vec<_>>();
    let mut seen = std::collections::HashSet::new();
    let txs: Vec<_> = txs
        .into_iter()
        .filter(|(from, _, _)| seen.insert(*from))
        .map(|(from, to, nonce)| net.transfer(from, to, nonce, 1 + height % 13))
        .collect();
    let last_commit = if height == 1 {
        None
    } else {
        ledger.commit_at(height - 1).expect("commit readable")
    };
    let proposer = net.validators[(height % 4) as usize].public_key();
    let time = net.genesis.time_ms + height * 1_000;
    let proposed = ledger
        .propose(proposer, time, last_commit, txs)
        .expect("proposes");
    assert!(proposed.skipped.is_empty(), "{:?}", proposed.skipped);
    let commit = net.commit(&proposed.executed.block);
    ledger.commit(proposed.executed, &commit).expect("commits");
}

#[test]
#[ignore = "entry point of the writer process that crash_safety starts and kills"]
fn crash_writer_process() {
    let Ok(dir) = std::env::var(WRITER_ENV) else {
        panic!("run by the crash_safety test with {WRITER_ENV} set");
    };
    let net = network();
    let store = RocksStore::open(dir.as_ref(), &StoreOptions::default()).expect("store opens");
    let mut ledger = Ledger::open(store, &net.genesis).expect("ledger opens");
    while ledger.height() < WRITER_MAX_HEIGHT {
        commit_next(&mut ledger, &net);
    }
}

#[test]
fn crash_safety_under_sigkill_during_commits() {
    let net = network();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut replay = Ledger::open(MemStore::new(), &net.genesis).expect("replay opens");
    let mut last_height = 0;
    let mut heights = Vec::new();
    for round in 0..ROUNDS {
        // Early rounds kill during open and genesis; later ones in the middle of commits.
        let delay = Duration::from_millis(match round {
            0 => 5,
            1 => 30,
            _ => rng.random_range(50..600),
        });
        let mut child = Command::new(std::env::current_exe().expect("test binary path"))
            .args([
                "--exact",
                "crash_writer_process",
                "--ignored",
                "--nocapture",
            ])
            .env(WRITER_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("writer starts");
        let started = Instant::now();
        while started.elapsed() < delay {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("writer exited early with {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().expect("reap the writer");

        let store = RocksStore::open(dir.path(), &StoreOptions::default())
            .expect("store opens after SIGKILL");
        let ledger = Ledger::open(store, &net.genesis)
            .unwrap_or_else(|e| panic!("round {round}: ledger does not open after SIGKILL: {e}"));
        let height = ledger.height();
        assert!(
            height >= last_height,
            "round {round}: height went back from {last_height} to {height}"
        );
        while replay.height() < height {
            commit_next(&mut replay, &net);
        }
        assert_eq!(ledger.tip_hash(), replay.tip_hash(), "round {round}");
        assert_eq!(ledger.tip().state_root, replay.tip().state_root);
        assert_eq!(
            ledger
                .account(&net.accounts[0].public_key())
                .expect("reads"),
            replay
                .account(&net.accounts[0].public_key())
                .expect("reads")
        );
        last_height = height;
        heights.push(height);
    }
    eprintln!("heights after each SIGKILL: {heights:?}");
    assert!(
        last_height > 10,
        "the writer committed too few blocks to exercise crashes: {heights:?}"
    );
}

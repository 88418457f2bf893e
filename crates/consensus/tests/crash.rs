//! Crash safety of consensus on RocksDB: a process running four validators is killed with
//! SIGKILL at random moments and started again on the same data directories, over and over.
//! Every vote and proposal it ever sent is logged before it is delivered; across all the runs no
//! validator may have sent two different messages for one height, round and step, the chain must
//! keep growing, and every validator's ledger must hold the same blocks.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chain::testkit::TestChain;
use consensus::{ConsensusMessage, Engine, EngineConfig, Output, Timeouts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use storage::{RocksStore, StoreOptions};
use types::{Decode, Encode};

/// Environment variable that turns this test binary into the validators' process.
const NODE_ENV: &str = "CONSENSUS_CRASH_DIR";
/// Kill-and-restart rounds.
const ROUNDS: usize = 8;
/// The process stops on its own after this many heights (a bound in case nobody kills it).
const MAX_HEIGHT: u64 = 100_000;
const VALIDATORS: usize = 4;

fn network() -> TestChain {
    TestChain::new(VALIDATORS, 4, 2027)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn config() -> EngineConfig {
    EngineConfig {
        timeouts: Timeouts {
            propose_ms: 200,
            propose_delta_ms: 50,
            prevote_ms: 100,
            prevote_delta_ms: 50,
            precommit_ms: 100,
            precommit_delta_ms: 50,
            rebroadcast_ms: 500,
            max_ms: 2_000,
            commit_ms: 0,
        },
        ..EngineConfig::default()
    }
}

fn open(dir: &Path, net: &TestChain, i: usize) -> Engine<RocksStore> {
    let store = RocksStore::open(&dir.join(format!("v{i}")), &StoreOptions::default())
        .expect("store opens");
    Engine::open(
        store,
        &net.genesis,
        net.validators[i].clone(),
        config(),
        now_ms(),
    )
    .expect("engine opens")
}

/// Feeds every lagging engine the blocks it misses from the most advanced one.
fn sync(engines: &mut [Engine<RocksStore>]) {
    let best = (0..engines.len())
        .max_by_key(|&i| engines[i].ledger().height())
        .expect("engines");
    let top = engines[best].ledger().height();
    for i in 0..engines.len() {
        while engines[i].ledger().height() < top {
            let h = engines[i].height();
            let block = engines[best]
                .ledger()
                .block(h)
                .expect("read")
                .expect("held");
            let commit = engines[best]
                .ledger()
                .commit_at(h)
                .expect("read")
                .expect("held");
            engines[i]
                .on_synced_block(block, commit, now_ms())
                .expect("block at the current height");
            if engines[i].height() == h {
                break;
            }
        }
    }
}

#[test]
#[ignore = "entry point of the validators' process that crash_safety starts and kills"]
fn crash_node_process() {
    let Ok(dir) = std::env::var(NODE_ENV) else {
        panic!("run by the crash safety test with {NODE_ENV} set");
    };
    let dir = Path::new(&dir);
    let net = network();
    let mut engines: Vec<_> = (0..VALIDATORS).map(|i| open(dir, &net, i)).collect();
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("sent.log"))
        .expect("log opens");
    sync(&mut engines);
    while engines[0].ledger().height() < MAX_HEIGHT {
        let mut sent = Vec::new();
        for (i, engine) in engines.iter_mut().enumerate() {
            sent.extend(engine.drain_outputs().into_iter().map(|out| (i, out)));
        }
        if sent.is_empty() {
            sync(&mut engines);
            let next = engines.iter().filter_map(|e| e.next_deadline()).min();
            if let Some(next) = next {
                let wait = next.saturating_sub(now_ms());
                std::thread::sleep(Duration::from_millis(wait));
            }
            let now = now_ms();
            for engine in &mut engines {
                engine.tick(now);
            }
            continue;
        }
        for (from, out) in sent {
            let Output::Broadcast(message) = out else {
                continue;
            };
            if matches!(
                message,
                ConsensusMessage::Vote(_) | ConsensusMessage::Proposal(_)
            ) {
                let bytes = message.to_bytes();
                let mut record = (bytes.len() as u32).to_be_bytes().to_vec();
                record.extend_from_slice(&bytes);
                log.write_all(&record).expect("log written");
            }
            let now = now_ms();
            for (to, engine) in engines.iter_mut().enumerate() {
                if to != from {
                    engine.on_message(message.clone(), now);
                }
            }
        }
    }
}

/// Every vote and proposal in the log, skipping a record torn by the kill.
fn read_log(path: &Path) -> Vec<ConsensusMessage> {
    let bytes = std::fs::read(path).expect("log readable");
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 4 + len {
            break;
        }
        out.push(ConsensusMessage::from_bytes(&rest[4..4 + len]).expect("a logged message"));
        rest = &rest[4 + len..];
    }
    out
}

#[test]
fn sigkill_and_restart_never_make_a_validator_sign_twice() {
    let net = network();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = StdRng::seed_from_u64(0xc0ffee);
    let mut heights = Vec::new();
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.random_range(800..2500));
        let mut child = Command::new(std::env::current_exe().expect("test binary path"))
            .args(["--exact", "crash_node_process", "--ignored", "--nocapture"])
            .env(NODE_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("validators start");
        let started = Instant::now();
        while started.elapsed() < delay {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("round {round}: the validators' process exited early with {status}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        let engines: Vec<_> = (0..VALIDATORS).map(|i| open(dir.path(), &net, i)).collect();
        let height = engines
            .iter()
            .map(|e| e.ledger().height())
            .min()
            .unwrap_or(0);
        for h in 1..=height {
            let hashes: Vec<_> = engines
                .iter()
                .map(|e| e.ledger().block(h).expect("read").expect("held").hash())
                .collect();
            assert!(
                hashes.windows(2).all(|w| w[0] == w[1]),
                "round {round}: validators disagree at height {h}"
            );
        }
        heights.push(
            engines
                .iter()
                .map(|e| e.ledger().height())
                .max()
                .unwrap_or(0),
        );
    }
    let mut slots: BTreeMap<(types::PublicKey, u64, u32, u8), Vec<u8>> = BTreeMap::new();
    let messages = read_log(&dir.path().join("sent.log"));
    for message in &messages {
        let (key, bytes) = match message {
            ConsensusMessage::Vote(v) => (
                (
                    v.vote.validator,
                    v.vote.height,
                    v.vote.round,
                    v.vote.kind as u8 + 1,
                ),
                v.vote.to_bytes(),
            ),
            ConsensusMessage::Proposal(p) => (
                (p.proposal.proposer, p.proposal.height, p.proposal.round, 0),
                p.proposal.to_bytes(),
            ),
            _ => continue,
        };
        let first = slots.entry(key).or_insert_with(|| bytes.clone());
        assert_eq!(
            *first, bytes,
            "validator {} signed two different messages for height {} round {} step {}",
            key.0, key.1, key.2, key.3
        );
    }
    eprintln!(
        "highest height after each SIGKILL: {heights:?}; {} messages logged",
        messages.len()
    );
    assert!(
        heights.windows(2).all(|w| w[0] <= w[1]),
        "heights never go back: {heights:?}"
    );
    assert!(
        heights.last().copied().unwrap_or(0) > heights[0] + 2,
        "the chain kept growing across restarts: {heights:?}"
    );
}

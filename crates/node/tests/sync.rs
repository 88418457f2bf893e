//! Validators on real libp2p swarms over loopback TCP: three of four make 100 blocks, then the
//! fourth starts from an empty store, catches up by block sync (checking every commit
//! certificate), joins consensus, and every node holds the same hash at every height.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::testkit::TestChain;
use consensus::{Engine, EngineConfig, Timeouts};
use node::runtime::{Progress, Runtime};
use p2p::{Multiaddr, Network, NetworkConfig};
use storage::MemStore;
use tokio::sync::{oneshot, watch};

/// Heights the first three validators make before the fourth starts.
const HEAD_START: u64 = 100;
/// Loopback addresses of this test's nodes: 127.0.9.1 to 127.0.9.4.
const IP_PREFIX: &str = "127.0.9";
const PORT: u16 = 19_000;

fn engine_config() -> EngineConfig {
    EngineConfig {
        timeouts: Timeouts::scaled(400),
        ..EngineConfig::default()
    }
}

fn addr(i: usize) -> Multiaddr {
    format!("/ip4/{IP_PREFIX}.{}/tcp/{PORT}", i + 1)
        .parse()
        .expect("valid multiaddr")
}

struct Running {
    progress: watch::Receiver<Progress>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Runtime<Arc<MemStore>>>,
}

fn start(test: &TestChain, i: usize) -> Running {
    let key = test.validators[i].clone();
    let store = Arc::new(MemStore::new());
    let mut engine = Engine::open(
        store.clone(),
        &test.genesis,
        key.clone(),
        engine_config(),
        p2p::clock::now_ms(),
    )
    .expect("engine opens");
    if i == 0 {
        // Transactions, so that synced blocks carry state changes.
        for nonce in 0..40 {
            engine
                .on_transaction(test.transfer(0, 1, nonce, 3))
                .expect("valid transfer");
        }
    }
    let mut config = NetworkConfig {
        listen: vec![addr(i)],
        bootstrap: (0..4)
            .filter(|j| *j != i)
            .map(|j| {
                let peer = p2p::peer_id_of(&test.validators[j]).expect("ed25519 key");
                addr(j).with(p2p::multiaddr::Protocol::P2p(peer))
            })
            .collect(),
        kademlia: false,
        heartbeat_ms: 200,
        ..NetworkConfig::default()
    };
    config.peers.allowlist = vec![format!("{IP_PREFIX}.0/24").parse().expect("valid net")];
    let sync = config.sync;
    let network = Network::new(&key, test.genesis.chain_id.clone(), store, config, None)
        .expect("network starts");
    let runtime = Runtime::new(engine, network, sync);
    let progress = runtime.progress();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(runtime.run(async move {
        let _ = stopped.await;
    }));
    Running {
        progress,
        stop,
        task,
    }
}

/// Waits until `done` holds for the node's progress.
async fn wait_until(
    running: &Running,
    what: &str,
    within: Duration,
    done: impl Fn(&Progress) -> bool,
) -> Progress {
    let deadline = Instant::now() + within;
    let mut progress = running.progress.clone();
    loop {
        let now = *progress.borrow();
        if done(&now) {
            return now;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what} not reached in {within:?}: {now:?}");
        let _ = tokio::time::timeout(left, progress.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_after_100_blocks_catches_up_by_sync_and_agrees_on_every_block() {
    let _ = env_logger::builder().is_test(true).try_init();
    let test = TestChain::new(4, 2, 11);
    let mut nodes: Vec<Running> = (0..3).map(|i| start(&test, i)).collect();
    let started = Instant::now();
    wait_until(&nodes[0], "the head start", Duration::from_secs(180), |p| {
        p.height >= HEAD_START
    })
    .await;
    eprintln!(
        "three validators made {HEAD_START} blocks in {:?}",
        started.elapsed()
    );

    let late = Instant::now();
    nodes.push(start(&test, 3));
    let target = nodes[0].progress.borrow().height;
    wait_until(&nodes[3], "catching up", Duration::from_secs(120), |p| {
        p.height >= target
    })
    .await;
    eprintln!(
        "the late node reached height {target} in {:?}",
        late.elapsed()
    );
    // Then it takes part: with one of the first three stopped, no quorum exists without it,
    // so every later block proves it voted.
    let stopped = nodes.remove(2);
    let _ = stopped.stop.send(());
    let stopped = stopped.task.await.expect("runtime task");
    let joined = stopped.engine().ledger().height();
    for node in &nodes {
        wait_until(
            node,
            "finality with the late node",
            Duration::from_secs(120),
            |p| p.height >= joined + 10,
        )
        .await;
    }
    eprintln!(
        "with validator 2 stopped at height {joined}, the late node helped finalize 10 more in {:?}",
        late.elapsed()
    );

    let mut runtimes = Vec::new();
    for node in nodes {
        let _ = node.stop.send(());
        runtimes.push(node.task.await.expect("runtime task"));
    }
    let common = runtimes
        .iter()
        .map(|r| r.engine().ledger().height())
        .min()
        .expect("three nodes");
    assert!(common >= joined + 10, "common height {common}");
    let late_key = test.validators[3].public_key();
    for height in 1..=common {
        let block = runtimes[0]
            .engine()
            .ledger()
            .block(height)
            .expect("readable")
            .expect("held");
        for (i, r) in runtimes.iter().chain([&stopped]).enumerate().skip(1) {
            let other = r.engine().ledger().block(height).expect("readable");
            if i == 3 && height > joined {
                assert_eq!(other, None, "the stopped node holds height {height}");
                continue;
            }
            assert_eq!(
                other.map(|b| b.hash()),
                Some(block.hash()),
                "node {i} differs at height {height}"
            );
        }
        if height > joined + 1 {
            let commit = block
                .last_commit
                .as_ref()
                .expect("a certificate of the parent");
            assert!(
                commit.signatures.iter().any(|s| s.validator == late_key),
                "the certificate of height {} lacks the late validator",
                height - 1
            );
        }
    }
    let state_root = runtimes[0].engine().ledger().tip().state_root;
    for r in &runtimes[1..] {
        assert_eq!(r.engine().ledger().tip().state_root, state_root);
    }
}

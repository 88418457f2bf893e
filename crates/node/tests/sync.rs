//! Validators on real libp2p swarms over loopback TCP: three of four make 100 blocks, then the
//! fourth starts from an empty store, catches up by block sync (checking every commit
//! certificate) and joins consensus; a validator stopped meanwhile restarts on its store and
//! catches up the same way; every node holds the same hash at every height, and no honest node
//! reported another.

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

fn start(test: &TestChain, i: usize, store: Arc<MemStore>) -> Running {
    let key = test.validators[i].clone();
    let mut engine = Engine::open(
        store.clone(),
        &test.genesis,
        key.clone(),
        engine_config(),
        p2p::clock::now_ms(),
    )
    .expect("engine opens");
    if i == 0 && engine.ledger().height() == 0 {
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

/// Waits until `done` holds for a node's progress (at most two minutes).
async fn wait_until(
    mut progress: watch::Receiver<Progress>,
    what: &str,
    done: impl Fn(&Progress) -> bool,
) -> Progress {
    let within = Duration::from_secs(120);
    let deadline = Instant::now() + within;
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

fn stop(running: Running) -> tokio::task::JoinHandle<Runtime<Arc<MemStore>>> {
    let _ = running.stop.send(());
    running.task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_restarted_nodes_catch_up_by_sync_join_consensus_and_agree_on_every_block() {
    let _ = env_logger::builder().is_test(true).try_init();
    let test = TestChain::new(4, 2, 11);
    let stores: Vec<Arc<MemStore>> = (0..4).map(|_| Arc::new(MemStore::new())).collect();
    let mut nodes: Vec<Option<Running>> = (0..4)
        .map(|i| (i < 3).then(|| start(&test, i, stores[i].clone())))
        .collect();
    let node = |nodes: &[Option<Running>], i: usize| -> watch::Receiver<Progress> {
        nodes[i].as_ref().expect("node running").progress.clone()
    };
    let started = Instant::now();
    wait_until(node(&nodes, 0), "the head start", |p| {
        p.height >= HEAD_START
    })
    .await;
    eprintln!(
        "three validators made {HEAD_START} blocks in {:?}",
        started.elapsed()
    );

    // A node that starts late catches up by sync.
    let late = Instant::now();
    nodes[3] = Some(start(&test, 3, stores[3].clone()));
    let target = node(&nodes, 0).borrow().height;
    wait_until(node(&nodes, 3), "catching up", |p| p.height >= target).await;
    eprintln!(
        "the late node reached height {target} in {:?}",
        late.elapsed()
    );

    // Then it takes part: with validator 2 stopped, no quorum exists without it, so every
    // block decided meanwhile proves it voted.
    let stopped = nodes[2].take().expect("node 2 running");
    let runtime = stop(stopped).await.expect("runtime task");
    let down_at = runtime.engine().ledger().height();
    // Dropping it closes its swarm and frees its address for the restart.
    drop(runtime);
    for i in [0, 1, 3] {
        wait_until(node(&nodes, i), "finality with the late node", |p| {
            p.height >= down_at + 10
        })
        .await;
    }
    eprintln!(
        "with validator 2 stopped at height {down_at}, the late node helped finalize 10 more in {:?}",
        late.elapsed()
    );

    // A node restarted on its own store catches up the same way and votes again.
    let restarted = Instant::now();
    nodes[2] = Some(start(&test, 2, stores[2].clone()));
    let target = node(&nodes, 0).borrow().height;
    wait_until(node(&nodes, 2), "the restarted node voting", |p| {
        p.height >= target && p.signed_height > target
    })
    .await;
    eprintln!(
        "the restarted node caught up {} heights and voted in {:?}",
        target - down_at,
        restarted.elapsed()
    );

    let mut runtimes = Vec::new();
    for running in nodes.into_iter().flatten() {
        runtimes.push(stop(running).await.expect("runtime task"));
    }
    let common = runtimes
        .iter()
        .map(|r| r.engine().ledger().height())
        .min()
        .expect("four nodes");
    assert!(common >= target, "common height {common}");
    let late_key = test.validators[3].public_key();
    for height in 1..=common {
        let block = runtimes[0]
            .engine()
            .ledger()
            .block(height)
            .expect("readable")
            .expect("held");
        for (i, r) in runtimes.iter().enumerate().skip(1) {
            let other = r.engine().ledger().block(height).expect("readable");
            assert_eq!(
                other.map(|b| b.hash()),
                Some(block.hash()),
                "node {i} differs at height {height}"
            );
        }
        // Validator 2 may have precommitted height `down_at + 1` before it stopped: from the
        // next certificate on, the late validator must be in each.
        if height > down_at + 2 && height <= down_at + 10 {
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
    // The same state after the common height (the nodes stopped at slightly different heights).
    let root_at = |r: &Runtime<Arc<MemStore>>| {
        r.engine()
            .ledger()
            .block(common)
            .expect("readable")
            .expect("held")
            .header
            .state_root
    };
    let state_root = root_at(&runtimes[0]);
    for r in &runtimes[1..] {
        assert_eq!(root_at(r), state_root);
    }
    // Honest traffic, syncing included, earned no one a report (allowlisting would only have
    // spared the ban, not the report) and no message was rejected.
    for (i, r) in runtimes.iter_mut().enumerate() {
        let network = r.network();
        let reports = &network.peers().counters().reports;
        assert!(
            reports.is_empty(),
            "node {i} reported its peers: {reports:?}"
        );
        let rejected: Vec<_> = network
            .counters()
            .gossip
            .iter()
            .filter(|((_, result), _)| *result != "accept" && *result != "ignore")
            .collect();
        assert!(rejected.is_empty(), "node {i} refused gossip: {rejected:?}");
    }
}

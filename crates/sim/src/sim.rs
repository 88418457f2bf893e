//! The simulation loop: validators running the consensus engine on in-memory stores, driven by
//! one event queue and one seeded random generator, with the scenario's faults injected.
//!
//! # Design
//! Time is simulated: it jumps to the next event or the next engine deadline, whichever comes
//! first (a timer wins a tie, then the lowest validator index). Nothing reads the wall clock,
//! nothing iterates a hash map, and one run is one thread, so a seed fixes the whole run. Every
//! processed event is hashed into a digest; with the final tips it makes the state hash that
//! two runs of a seed must share.
//!
//! Block sync is modelled as a reliable request-response stream: a validator that hears of a
//! height above its own asks a reachable peer that has its next block for up to
//! [`SYNC_BATCH`] blocks and their commits, and hands them to the engine in order.

use std::collections::BTreeSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chain::testkit::TestChain;
use consensus::message::ConsensusMessage;
use consensus::{Engine, EngineConfig, Output, Timeouts};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use storage::MemStore;
use types::{Block, Commit, Decode, Encode, Evidence, Hash, SignedTransaction};

use crate::byzantine::{Equivocator, InvalidProposer, Recipients};
use crate::client::{ACCOUNTS, Client, TX_INTERVAL_MS};
use crate::network::{EventQueue, Network};
use crate::oracle::{Oracles, Violation, heights};
use crate::report::{Covered, Finality, Report, RunStats};
use crate::scenario::{Role, Scenario};

/// The simulation starts this long after the genesis time, milliseconds.
const START_AFTER_GENESIS_MS: u64 = 1_000;
/// After the heal, honest validators must reach the liveness target within this long,
/// milliseconds of simulated time.
pub const LIVENESS_BOUND_MS: u64 = 30_000;
/// After the first honest commit carrying evidence against a validator, its slash must show in
/// every honest ledger within this long, milliseconds of simulated time.
pub const SLASH_BOUND_MS: u64 = 30_000;
/// Blocks per sync response.
pub const SYNC_BATCH: u64 = 16;
/// A sync request to a peer that is down or cut off is given up after this long, milliseconds.
const SYNC_TIMEOUT_MS: u64 = 500;
/// Bytes per block part (small, so blocks travel in several parts).
pub const PART_BYTES: usize = 512;
/// A run that processes more events than this is stopped as broken.
const MAX_EVENTS: u64 = 2_000_000;
/// An engine whose timer fires this many times at one instant is stuck.
const MAX_TICKS_AT_ONE_INSTANT: u32 = 1_000;
/// Mixed into the seed for the run's generator, so it differs from the scenario's.
const RUN_STREAM: u64 = 0x5157_5f72_756e_0001;

/// The engine configuration of every simulated validator: timeouts a few times the simulated
/// link delays (10 to 100 ms), so rounds that fail end quickly, and small parts, so every block
/// travels in several.
pub fn engine_config() -> EngineConfig {
    EngineConfig {
        timeouts: Timeouts {
            propose_ms: 300,
            propose_delta_ms: 100,
            prevote_ms: 200,
            prevote_delta_ms: 100,
            precommit_ms: 200,
            precommit_delta_ms: 100,
            rebroadcast_ms: 1_000,
            max_ms: 2_000,
            commit_ms: 30,
        },
        part_bytes: PART_BYTES,
        ..EngineConfig::default()
    }
}

/// Runs `scenario` to its end and reports. A panic inside the run is reported as a violation.
pub fn run(scenario: Scenario) -> Report {
    let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
        Simulation::new(scenario.clone()).map(Simulation::run)
    }));
    let violation = match attempt {
        Ok(Ok(report)) => return report,
        Ok(Err(violation)) => *violation,
        Err(panic) => Violation::Panicked(panic_message(panic.as_ref())),
    };
    Report {
        drawn: Scenario::from_seed(scenario.seed) == scenario,
        scenario,
        violations: vec![violation],
        state_hash: Hash::ZERO,
        covered: BTreeSet::new(),
        stats: RunStats::default(),
        finality: Finality::default(),
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Runs the scenario drawn from `seed`.
pub fn run_seed(seed: u64) -> Report {
    run(Scenario::from_seed(seed))
}

type SimEngine = Engine<Arc<MemStore>>;

/// Something that happens at a simulated instant.
#[derive(Debug)]
enum Event {
    /// An encoded consensus message arrives.
    Deliver {
        from: usize,
        to: usize,
        bytes: Arc<Vec<u8>>,
    },
    /// A transaction arrives.
    Transaction { to: usize, tx: SignedTransaction },
    /// `from` asks `to` for blocks from `height` on.
    SyncRequest { from: usize, to: usize, height: u64 },
    /// Blocks and commits arrive at `to` (empty: the request failed).
    SyncResponse {
        from: usize,
        to: usize,
        blocks: Vec<(Block, Commit)>,
    },
    /// Partition number `.0` of the scenario starts.
    Partition(usize),
    /// The current partition heals.
    Heal,
    /// Crash number `.0` of the scenario happens.
    Crash(usize),
    /// The validator of crash number `.0` restarts.
    Restart(usize),
    /// Every fault is over: loss stops, the liveness clock starts.
    FaultsHealed,
    /// The client sends its next transaction.
    ClientTick,
}

/// How a validator treats what its engine wants to send.
#[derive(Debug)]
enum Behaviour {
    Honest,
    Silent,
    Equivocate(Equivocator),
    Forge(InvalidProposer),
}

/// One validator: its key, its store (which survives crashes) and its engine (which does not).
struct Node {
    key: types::SecretKey,
    role: Role,
    behaviour: Behaviour,
    store: Arc<MemStore>,
    engine: Option<SimEngine>,
    /// A crash inside the next engine call is due.
    crash_pending: bool,
    /// A sync request is in flight.
    syncing: bool,
    /// When the engine entered its current height through its own commit (or at start).
    height_started_ms: Option<u64>,
}

impl Node {
    fn height(&self) -> u64 {
        self.engine.as_ref().map_or(0, |e| e.ledger().height())
    }
}

/// The liveness obligation, set when the faults heal.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    /// Ledger height every honest validator must reach.
    target: u64,
    /// When the faults healed (absolute simulated time).
    healed_ms: u64,
}

/// A run in progress.
struct Simulation {
    scenario: Scenario,
    chain: TestChain,
    rng: StdRng,
    start_ms: u64,
    now_ms: u64,
    queue: EventQueue<Event>,
    network: Network,
    nodes: Vec<Node>,
    oracles: Oracles,
    client: Client,
    stats: RunStats,
    finality: Finality,
    digest: Sha256,
    liveness: Option<Liveness>,
    /// Same node and instant of the last timer, and how many times it fired there.
    last_tick: (usize, u64, u32),
}

impl Simulation {
    fn new(scenario: Scenario) -> Result<Simulation, Box<Violation>> {
        scenario
            .check()
            .map_err(|e| Box::new(Violation::Setup(e.to_string())))?;
        let n = scenario.validators();
        let chain = TestChain::with_stakes(&scenario.stakes, ACCOUNTS, scenario.seed);
        let mut rng = StdRng::seed_from_u64(scenario.seed ^ RUN_STREAM);
        let network = Network::new(n, scenario.links, scenario.loss_percent, &mut rng);
        let start_ms = chain.genesis.time_ms + START_AFTER_GENESIS_MS;
        let keys = chain.validators.iter().map(|k| k.public_key()).collect();
        let honest = scenario.roles.iter().map(|r| r.is_honest()).collect();
        let mut nodes = Vec::with_capacity(n);
        for (i, key) in chain.validators.iter().enumerate() {
            let role = scenario.roles[i];
            let id = chain.genesis.chain_id.clone();
            let behaviour = match role {
                Role::Honest => Behaviour::Honest,
                Role::Silent => Behaviour::Silent,
                Role::Equivocator => {
                    Behaviour::Equivocate(Equivocator::new(key.clone(), id, &scenario.split, n))
                }
                Role::InvalidProposer => {
                    Behaviour::Forge(InvalidProposer::new(key.clone(), id, PART_BYTES))
                }
            };
            let store = Arc::new(MemStore::new());
            let engine = Engine::open(
                store.clone(),
                &chain.genesis,
                key.clone(),
                engine_config(),
                start_ms,
            )
            .map_err(|e| {
                Box::new(Violation::Engine {
                    node: i,
                    error: format!("open: {e}"),
                })
            })?;
            nodes.push(Node {
                key: key.clone(),
                role,
                behaviour,
                store,
                engine: Some(engine),
                crash_pending: false,
                syncing: false,
                height_started_ms: Some(start_ms),
            });
        }
        let mut queue = EventQueue::default();
        for (i, p) in scenario.partitions.iter().enumerate() {
            queue.push(start_ms + p.start_ms, Event::Partition(i));
            queue.push(start_ms + p.end_ms, Event::Heal);
        }
        for (i, c) in scenario.crashes.iter().enumerate() {
            queue.push(start_ms + c.at_ms, Event::Crash(i));
            queue.push(start_ms + c.restart_ms, Event::Restart(i));
        }
        queue.push(start_ms + TX_INTERVAL_MS, Event::ClientTick);
        // Scheduled last: restarts at the same instant come first.
        queue.push(start_ms + scenario.heal_ms, Event::FaultsHealed);
        let mut sim = Simulation {
            oracles: Oracles::new(keys, honest),
            scenario,
            chain,
            rng,
            start_ms,
            now_ms: start_ms,
            queue,
            network,
            nodes,
            client: Client::default(),
            stats: RunStats::default(),
            finality: Finality::default(),
            digest: Sha256::new(),
            liveness: None,
            last_tick: (usize::MAX, 0, 0),
        };
        for i in 0..n {
            sim.after_call(i, false);
        }
        Ok(sim)
    }

    fn run(mut self) -> Report {
        while self.oracles.violations().is_empty() && !self.finished() {
            if self.stats.events >= MAX_EVENTS {
                self.oracles.report(Violation::Setup(format!(
                    "more than {MAX_EVENTS} events: the run does not end"
                )));
                break;
            }
            self.stats.events += 1;
            let timer = self.next_timer();
            match (timer, self.queue.next_time()) {
                (Some((t, node)), Some(e)) if t <= e => self.fire_timer(t, node),
                (Some((t, node)), None) => self.fire_timer(t, node),
                (_, Some(_)) => {
                    if let Some((t, event)) = self.queue.pop() {
                        self.now_ms = self.now_ms.max(t);
                        self.handle(event);
                    }
                }
                (None, None) => break,
            }
            self.check_deadline();
        }
        self.finish()
    }

    /// Milliseconds since the start.
    fn elapsed(&self) -> u64 {
        self.now_ms - self.start_ms
    }

    fn honest(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role.is_honest())
    }

    /// Whether every running honest validator's ledger shows `offender` with less bonded stake
    /// than at genesis.
    fn slashed_everywhere(&self, offender: usize) -> bool {
        let key = self.chain.validators[offender].public_key();
        let genesis = self.scenario.stakes[offender];
        self.honest().all(|(_, n)| {
            n.engine
                .as_ref()
                .is_some_and(|e| e.ledger().validators().power(&key) < genesis)
        })
    }

    /// The run is over once every honest validator reached the liveness target and every
    /// caught offender is slashed in every honest ledger, or its time to be is up (the
    /// slashing oracle then judges at the end).
    fn finished(&self) -> bool {
        let Some(live) = self.liveness else {
            return false;
        };
        self.honest().all(|(_, n)| n.height() >= live.target)
            && self.oracles.caught().iter().all(|(&offender, c)| {
                self.now_ms > self.start_ms + c.at_ms + SLASH_BOUND_MS
                    || self.slashed_everywhere(offender)
            })
    }

    fn check_deadline(&mut self) {
        let Some(live) = self.liveness else {
            return;
        };
        let reached = self.honest().all(|(_, n)| n.height() >= live.target);
        if reached && self.stats.recovery_ms.is_none() {
            self.stats.recovery_ms = Some(self.now_ms - live.healed_ms);
        }
        let deadline = live.healed_ms + LIVENESS_BOUND_MS;
        if !reached && self.now_ms > deadline {
            let heights = self.honest().map(|(i, n)| (i, n.height())).collect();
            self.oracles.report(Violation::NoLiveness {
                target: live.target,
                deadline_ms: deadline - self.start_ms,
                heights,
            });
        }
    }

    /// The earliest engine deadline, and whose (lowest index on a tie).
    fn next_timer(&self) -> Option<(u64, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.engine
                    .as_ref()?
                    .next_deadline()
                    .map(|t| (t.max(self.now_ms), i))
            })
            .min()
    }

    fn fire_timer(&mut self, t: u64, node: usize) {
        self.now_ms = t;
        if self.last_tick.0 == node && self.last_tick.1 == t {
            self.last_tick.2 += 1;
            if self.last_tick.2 > MAX_TICKS_AT_ONE_INSTANT {
                self.oracles.report(Violation::Engine {
                    node,
                    error: format!("timer at {t} keeps firing without advancing"),
                });
                return;
            }
        } else {
            self.last_tick = (node, t, 1);
        }
        self.trace(b"tick", &[node as u64], &[]);
        if let Some(engine) = self.nodes[node].engine.as_mut() {
            engine.tick(t);
            self.after_call(node, false);
        }
    }

    /// Feeds the digest with one processed event.
    fn trace(&mut self, what: &[u8], numbers: &[u64], bytes: &[u8]) {
        self.digest.update(self.now_ms.to_be_bytes());
        self.digest.update(what);
        for n in numbers {
            self.digest.update(n.to_be_bytes());
        }
        self.digest.update(bytes);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, bytes } => self.deliver(from, to, &bytes),
            Event::Transaction { to, tx } => {
                self.trace(b"tx", &[to as u64], &tx.id().0);
                if let Some(engine) = self.nodes[to].engine.as_mut() {
                    if let Err(e) = engine.on_transaction(tx) {
                        log::trace!(target: "sim", "v{to} refused a transaction: {e}");
                        self.stats.txs_refused += 1;
                    }
                    self.after_call(to, false);
                }
            }
            Event::SyncRequest { from, to, height } => self.serve_sync(from, to, height),
            Event::SyncResponse { from, to, blocks } => self.apply_sync(from, to, blocks),
            Event::Partition(i) => {
                let groups = self.scenario.partitions[i].groups.clone();
                self.trace(b"partition", &[i as u64], &groups);
                log::info!(target: "sim", "{} ms: partition {groups:?}", self.elapsed());
                self.network.partition(&groups);
            }
            Event::Heal => {
                self.trace(b"heal", &[], &[]);
                log::info!(target: "sim", "{} ms: partition heals", self.elapsed());
                self.network.heal();
                self.sync_all();
            }
            Event::Crash(i) => {
                let c = self.scenario.crashes[i];
                self.trace(b"crash", &[c.node as u64], &[]);
                if c.mid_call {
                    log::info!(target: "sim", "{} ms: v{} will crash inside its next engine call", self.elapsed(), c.node);
                    self.nodes[c.node].crash_pending = true;
                } else {
                    self.crash(c.node, false);
                }
            }
            Event::Restart(i) => {
                let node = self.scenario.crashes[i].node;
                self.trace(b"restart", &[node as u64], &[]);
                if self.nodes[node].engine.is_some() {
                    // Its pending crash found no engine call to die in.
                    self.crash(node, false);
                }
                self.restart(node);
            }
            Event::FaultsHealed => {
                self.trace(b"healed", &[], &[]);
                self.network.heal();
                self.network.set_loss(0);
                let top = self.honest().map(|(_, n)| n.height()).max().unwrap_or(0);
                let target = top + self.scenario.liveness_heights;
                log::info!(target: "sim", "{} ms: faults healed; honest validators must reach height {target}", self.elapsed());
                self.liveness = Some(Liveness {
                    target,
                    healed_ms: self.now_ms,
                });
                self.sync_all();
            }
            Event::ClientTick => {
                self.trace(b"client", &[], &[]);
                self.client_tick();
                self.queue
                    .push(self.now_ms + TX_INTERVAL_MS, Event::ClientTick);
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) {
        self.trace(b"deliver", &[from as u64, to as u64], bytes);
        let Some(engine) = self.nodes[to].engine.as_mut() else {
            self.stats.to_down_node += 1;
            return;
        };
        let msg = match ConsensusMessage::from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.oracles.report(Violation::Undecodable {
                    from,
                    error: e.to_string(),
                });
                return;
            }
        };
        log::debug!(target: "sim", "{} ms: v{to} <- v{from} {}", self.now_ms - self.start_ms, Brief(&msg));
        let ahead = msg.height() > engine.height();
        engine.on_message(msg, self.now_ms);
        self.after_call(to, false);
        if ahead {
            self.maybe_sync(to);
        }
    }

    /// Drains the outputs of the engine call just made on `node` and acts on them, or kills
    /// the node if a crash inside this call was due.
    fn after_call(&mut self, node: usize, via_sync: bool) {
        let Some(engine) = self.nodes[node].engine.as_mut() else {
            return;
        };
        let outputs = engine.drain_outputs();
        if self.nodes[node].crash_pending {
            log::info!(target: "sim", "{} ms: v{node} crashes inside an engine call; {} outputs lost", self.elapsed(), outputs.len());
            self.stats.crashes_inside_call += 1;
            self.crash(node, true);
            return;
        }
        for output in outputs {
            match output {
                Output::Broadcast(msg) => self.broadcast(node, msg),
                Output::Transaction(tx) => self.engine_transaction(node, tx),
                Output::Committed {
                    height,
                    round,
                    hash,
                    evidence,
                } => self.committed(node, height, round, hash, &evidence, via_sync),
            }
        }
    }

    fn broadcast(&mut self, node: usize, msg: ConsensusMessage) {
        let sends = match &mut self.nodes[node].behaviour {
            Behaviour::Honest => {
                self.oracles.on_broadcast(node, &msg);
                vec![(Recipients::All, msg)]
            }
            Behaviour::Silent => {
                self.stats.silenced += 1;
                Vec::new()
            }
            Behaviour::Equivocate(e) => {
                let sends = e.rewrite(msg);
                self.stats.twins += sends.len() as u64 - 1;
                sends
            }
            Behaviour::Forge(f) => {
                let (msgs, forgery) = f.rewrite(msg, &mut self.rng);
                if let Some(forgery) = forgery {
                    log::info!(target: "sim", "{} ms: v{node} sends forged block {} at height {} ({})", self.elapsed(), forgery.hash, forgery.height, forgery.corruption);
                    self.oracles.on_forgery(forgery.clone());
                    self.stats.forgeries.push(forgery);
                }
                msgs.into_iter().map(|m| (Recipients::All, m)).collect()
            }
        };
        for (to, msg) in sends {
            self.send(node, to, &msg);
        }
    }

    fn send(&mut self, from: usize, to: Recipients, msg: &ConsensusMessage) {
        let bytes = Arc::new(msg.to_bytes());
        let targets: Vec<usize> = match to {
            Recipients::All => (0..self.nodes.len()).collect(),
            Recipients::Only(list) => list,
        };
        for to in targets.into_iter().filter(|&t| t != from) {
            if let Some(delay) = self.network.route(from, to, &mut self.rng) {
                let bytes = bytes.clone();
                self.queue
                    .push(self.now_ms + delay, Event::Deliver { from, to, bytes });
            }
        }
    }

    fn engine_transaction(&mut self, node: usize, tx: SignedTransaction) {
        if matches!(self.nodes[node].behaviour, Behaviour::Silent) {
            self.stats.silenced += 1;
            return;
        }
        log::info!(target: "sim", "{} ms: v{node} gossips transaction {} ({})", self.elapsed(), tx.id(), tx.tx.payload.label());
        self.stats.evidence_txs += 1;
        for to in 0..self.nodes.len() {
            if to == node {
                continue;
            }
            if let Some(delay) = self.network.route(node, to, &mut self.rng) {
                let tx = tx.clone();
                self.queue
                    .push(self.now_ms + delay, Event::Transaction { to, tx });
            }
        }
    }

    fn committed(
        &mut self,
        node: usize,
        height: u64,
        round: u32,
        hash: Hash,
        evidence: &[Evidence],
        via_sync: bool,
    ) {
        let n = &self.nodes[node];
        let block = n
            .engine
            .as_ref()
            .and_then(|e| e.ledger().block(height).ok().flatten());
        if log::log_enabled!(target: "sim", log::Level::Info) {
            let (txs, slashes) = block.as_ref().map_or((0, 0), |b| {
                let slashes = b
                    .txs
                    .iter()
                    .filter(|t| matches!(t.tx.payload, types::Payload::Slash(_)))
                    .count();
                (b.txs.len(), slashes)
            });
            log::info!(target: "sim", "{} ms: v{node} commits height {height} round {round} block {hash} \
                ({txs} txs, {slashes} slashes; {} evidence)", self.elapsed(), evidence.len());
        }
        if n.role.is_honest() {
            let stored = block.map(|b| b.hash());
            self.oracles.on_commit(node, height, hash, stored);
            self.oracles
                .on_evidence(node, height, evidence, self.now_ms - self.start_ms);
            self.stats.late_rounds += u64::from(round > 0);
            if let (Some(started), false) = (n.height_started_ms, via_sync) {
                let took = self.now_ms - started;
                let healed = self.start_ms + self.scenario.heal_ms;
                if started >= healed {
                    self.finality.clean_ms.push(took);
                    if round == 0 {
                        self.finality.first_round_ms.push(took);
                    }
                } else {
                    self.finality.faulty_ms.push(took);
                }
            }
        }
        self.nodes[node].height_started_ms = (!via_sync).then_some(self.now_ms);
    }

    fn crash(&mut self, node: usize, inside_call: bool) {
        let n = &mut self.nodes[node];
        let Some(engine) = n.engine.take() else {
            return;
        };
        let height = engine.height();
        drop(engine);
        n.crash_pending = false;
        n.syncing = false;
        n.height_started_ms = None;
        self.stats.crashes += 1;
        if self.oracles.signed_votes_at(node, height) {
            self.stats.crashes_with_votes += 1;
        }
        log::info!(target: "sim", "{} ms: v{node} crashes at height {height}{}", self.elapsed(),
            if inside_call { " inside an engine call" } else { "" });
    }

    fn restart(&mut self, node: usize) {
        let n = &self.nodes[node];
        match Engine::open(
            n.store.clone(),
            &self.chain.genesis,
            n.key.clone(),
            engine_config(),
            self.now_ms,
        ) {
            Ok(engine) => {
                log::info!(target: "sim", "{} ms: v{node} restarts at height {}", self.elapsed(), engine.height());
                self.nodes[node].engine = Some(engine);
                self.stats.restarts += 1;
                self.after_call(node, false);
                self.maybe_sync(node);
            }
            Err(e) => self.oracles.report(Violation::Engine {
                node,
                error: format!("reopen after crash: {e}"),
            }),
        }
    }

    fn sync_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.maybe_sync(i);
        }
    }

    /// Asks a reachable peer for the blocks `node` lacks, if one has them and no request is in
    /// flight.
    fn maybe_sync(&mut self, node: usize) {
        let n = &self.nodes[node];
        let Some(engine) = n.engine.as_ref() else {
            return;
        };
        if n.syncing {
            return;
        }
        let next = engine.height();
        let peers: Vec<usize> = (0..self.nodes.len())
            .filter(|&p| {
                p != node && self.network.connected(node, p) && self.nodes[p].height() >= next
            })
            .collect();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.rng.random_range(0..peers.len())];
        self.nodes[node].syncing = true;
        let delay = self.network.stream_delay(node, peer, &mut self.rng);
        self.queue.push(
            self.now_ms + delay,
            Event::SyncRequest {
                from: node,
                to: peer,
                height: next,
            },
        );
    }

    fn serve_sync(&mut self, from: usize, to: usize, height: u64) {
        self.trace(b"sync-request", &[from as u64, to as u64, height], &[]);
        let mut blocks = Vec::new();
        let reachable = self.network.connected(from, to);
        let delay = match (&self.nodes[to].engine, reachable) {
            (Some(engine), true) => {
                let ledger = engine.ledger();
                let last = ledger.height().min(height + SYNC_BATCH - 1);
                for h in height..=last {
                    match (ledger.block(h), ledger.commit_at(h)) {
                        (Ok(Some(b)), Ok(Some(c))) => blocks.push((b, c)),
                        other => {
                            self.oracles.report(Violation::Engine {
                                node: to,
                                error: format!("ledger block {h} unreadable: {other:?}"),
                            });
                            return;
                        }
                    }
                }
                self.network.stream_delay(to, from, &mut self.rng)
            }
            _ => SYNC_TIMEOUT_MS,
        };
        self.queue.push(
            self.now_ms + delay,
            Event::SyncResponse {
                from: to,
                to: from,
                blocks,
            },
        );
    }

    fn apply_sync(&mut self, from: usize, to: usize, blocks: Vec<(Block, Commit)>) {
        let first = blocks.first().map_or(0, |(b, _)| b.header.height);
        self.trace(
            b"sync-response",
            &[from as u64, to as u64, first, blocks.len() as u64],
            &[],
        );
        self.nodes[to].syncing = false;
        let mut applied = 0;
        for (block, commit) in blocks {
            let Some(engine) = self.nodes[to].engine.as_mut() else {
                return;
            };
            if block.header.height != engine.height() {
                continue;
            }
            let height = block.header.height;
            let result = engine.on_synced_block(block, commit, self.now_ms);
            let advanced = engine.height() > height;
            self.after_call(to, true);
            if let Err(e) = result {
                self.oracles.report(Violation::Engine {
                    node: to,
                    error: format!("refused block {height} synced from v{from}: {e}"),
                });
                return;
            }
            if !advanced {
                // A block at the current height with a commit certificate from an honest
                // ledger is final: the engine must take it.
                self.oracles.report(Violation::Engine {
                    node: to,
                    error: format!(
                        "block {height} synced from v{from} with its commit certificate was \
                         accepted but not committed (the engine stays at height {height})"
                    ),
                });
                return;
            }
            applied += 1;
        }
        if applied > 0 {
            log::info!(target: "sim", "{} ms: v{to} synced {applied} blocks from v{from}", self.elapsed());
            self.stats.synced_blocks += applied;
            self.nodes[to].height_started_ms = None;
            self.maybe_sync(to);
        }
    }

    /// The running honest validator with the highest ledger (lowest index on a tie).
    fn reference(&self) -> Option<usize> {
        self.honest()
            .filter(|(_, n)| n.engine.is_some())
            .max_by_key(|(i, n)| (n.height(), std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
    }

    fn client_tick(&mut self) {
        let now = self.now_ms;
        let Some(engine) = self.reference().and_then(|r| self.nodes[r].engine.as_ref()) else {
            return;
        };
        let ledger = engine.ledger();
        let accounts = &self.chain.accounts;
        let Some(tx) = self.client.next_transfer(&self.chain, now, |a| {
            ledger
                .account(&accounts[a].public_key())
                .ok()
                .map(|acc| acc.nonce)
        }) else {
            return;
        };
        for to in 0..self.nodes.len() {
            if let Some(delay) = self.network.client_delay(&mut self.rng) {
                let tx = tx.clone();
                self.queue.push(now + delay, Event::Transaction { to, tx });
            }
        }
    }

    fn finish(mut self) -> Report {
        let ledgers: Vec<(usize, &chain::Ledger<Arc<MemStore>>)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role.is_honest())
            .filter_map(|(i, n)| n.engine.as_ref().map(|e| (i, e.ledger())))
            .collect();
        // Judged only on a run that went to its end: one stopped early had no time to slash.
        let completed = self.oracles.violations().is_empty();
        self.oracles.check_ledgers(&self.chain.genesis, &ledgers);
        if completed {
            self.oracles.check_slashing(&self.scenario.stakes, &ledgers);
        }
        log::info!(target: "sim", "end at {} ms: honest heights {:?}", self.now_ms - self.start_ms, heights(&ledgers));
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(e) = &n.engine {
                log::info!(target: "sim", "v{i}: height {} round {:?}, {:?}", e.height(), e.round(), e.counters());
            }
        }

        let mut stats = std::mem::take(&mut self.stats);
        stats.sim_ms = self.now_ms - self.start_ms;
        stats.heights = self.nodes.iter().map(Node::height).collect();
        stats.network = self.network.stats().clone();
        stats.caught = self.oracles.caught().clone();
        if let Some(engine) = self.reference().and_then(|r| self.nodes[r].engine.as_ref()) {
            let ledger = engine.ledger();
            stats.txs_committed = (1..=ledger.height())
                .filter_map(|h| ledger.block(h).ok().flatten())
                .map(|b| b.txs.len() as u64)
                .sum();
            for &offender in stats.caught.keys() {
                let key = self.chain.validators[offender].public_key();
                let stake = ledger.validators().power(&key);
                stats
                    .stakes
                    .insert(offender, (self.scenario.stakes[offender], stake));
            }
        }

        let mut digest = std::mem::take(&mut self.digest);
        for n in &self.nodes {
            if let Some(e) = &n.engine {
                digest.update(e.ledger().height().to_be_bytes());
                digest.update(e.ledger().tip_hash().0);
                digest.update(e.ledger().tip().state_root.0);
            }
        }
        let state_hash = Hash(digest.finalize().into());

        let covered = self.covered(&stats);
        self.finality.mean_delay_ms = stats.network.mean_delay_ms();
        Report {
            drawn: Scenario::from_seed(self.scenario.seed) == self.scenario,
            violations: self.oracles.violations().to_vec(),
            scenario: self.scenario,
            state_hash,
            covered,
            stats,
            finality: self.finality,
        }
    }

    fn covered(&self, s: &RunStats) -> BTreeSet<Covered> {
        let links = &self.scenario.links;
        [
            (
                Covered::Latency,
                links.max_latency_ms > links.min_latency_ms,
            ),
            (Covered::Jitter, links.jitter_ms > 0),
            (Covered::Loss, s.network.lost > 0),
            (Covered::Partition, s.network.partitioned > 0),
            (Covered::BlockSync, s.synced_blocks > 0),
            (Covered::CrashRestart, s.restarts > 0),
            (Covered::CrashInsideCall, s.crashes_inside_call > 0),
            (Covered::CrashWithVotesInWal, s.crashes_with_votes > 0),
            (Covered::Equivocation, s.twins > 0),
            (Covered::EvidenceCommitted, !s.caught.is_empty()),
            (
                Covered::Slashed,
                s.stakes.values().any(|(genesis, now)| now < genesis),
            ),
            (Covered::SilentValidator, s.silenced > 0),
            (Covered::InvalidProposal, !s.forgeries.is_empty()),
            (Covered::RoundChange, s.late_rounds > 0),
        ]
        .into_iter()
        .filter(|(_, happened)| *happened)
        .map(|(c, _)| c)
        .collect()
    }
}

/// A one-line description of a consensus message, for the trace.
struct Brief<'a>(&'a ConsensusMessage);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = |h: &Hash| h.to_string()[..8].to_owned();
        match self.0 {
            ConsensusMessage::Proposal(p) => {
                let p = &p.proposal;
                write!(
                    f,
                    "proposal h{} r{} {} pol {:?}",
                    p.height,
                    p.round,
                    short(&p.block),
                    p.pol_round
                )
            }
            ConsensusMessage::Vote(v) => {
                let v = &v.vote;
                write!(
                    f,
                    "{:?} h{} r{} {}",
                    v.kind,
                    v.height,
                    v.round,
                    v.block.as_ref().map_or_else(|| "nil".to_owned(), short)
                )
            }
            ConsensusMessage::Part(p) => {
                let p = &p.part;
                write!(
                    f,
                    "part {}/{} h{} r{} {}",
                    p.index + 1,
                    p.count,
                    p.height,
                    p.round,
                    short(&p.block)
                )
            }
            ConsensusMessage::Polka(_) => write!(f, "polka certificate h{}", self.0.height()),
            ConsensusMessage::Round(_) => write!(f, "round certificate h{}", self.0.height()),
        }
    }
}

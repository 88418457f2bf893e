//! The validator's main loop: consensus, the network and block sync in one Tokio task.
//!
//! The engine is sans-IO; this loop feeds it gossip, timers and synced blocks, carries its
//! outputs to the network, rules on every gossip message for gossipsub (accept, ignore, reject
//! and report), serves block sync from the ledger, and catches up from peers when behind.
//!
//! Everything else reaches the loop through a [`Handle`]: a job is a closure that runs between
//! two events with the whole runtime in hand (the API's queries, transactions and bans), so
//! nothing is shared or locked and every answer is consistent with one moment of the ledger.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use consensus::{ConsensusMessage, Engine, Output};
use p2p::gossip::{Gossip, TopicKind};
use p2p::network::Validation;
use p2p::peers::{Action, Report, Source};
use p2p::sync::{Status, SyncRequest, SyncResponse, SyncedBlock};
use p2p::{BanReason, Network, NetworkEvent, PeerId};
use storage::Store;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use types::vote::VoteKind;
use types::{Encode, Hash};

use crate::events::{EVENT_BUFFER, Event};
use crate::metrics::Histogram;

/// How far above the height being decided consensus messages are taken and forwarded.
const FUTURE_HEIGHTS: u64 = 2;
/// Peers asked for their status in one round.
const STATUS_FANOUT: usize = 8;
/// Least time between two rounds of status requests, in milliseconds.
const MIN_STATUS_GAP_MS: u64 = 500;
/// Jobs waiting for the loop; a caller finding the queue full is told the node is busy.
pub const JOB_QUEUE: usize = 256;
/// Upper bounds of the finality latency histogram, seconds.
pub const FINALITY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0,
];

/// Work for the loop: runs between two events with the runtime in hand.
pub type Job<S> = Box<dyn FnOnce(&mut Runtime<S>) + Send>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The queue is full: the node is overloaded.
    #[error("the node is busy; try again shortly")]
    Busy,
    /// The loop has stopped.
    #[error("the node is shutting down")]
    Stopped,
}

/// Sends jobs to a running loop.
pub struct Handle<S: Store> {
    jobs: mpsc::Sender<Job<S>>,
}

impl<S: Store> Clone for Handle<S> {
    fn clone(&self) -> Self {
        Handle {
            jobs: self.jobs.clone(),
        }
    }
}

impl<S: Store + 'static> Handle<S> {
    /// Runs `f` in the loop and returns its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, HandleError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Runtime<S>) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job<S> = Box::new(move |runtime| {
            let _ = tx.send(f(runtime));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => HandleError::Busy,
            mpsc::error::TrySendError::Closed(_) => HandleError::Stopped,
        })?;
        rx.await.map_err(|_| HandleError::Stopped)
    }
}

/// What the loop counts for metrics, beyond the engine's and the network's own counters.
#[derive(Debug, Clone)]
pub struct RuntimeStats {
    /// Seconds from a block's proposal time to its commit here.
    pub finality: Histogram,
    /// Proposals, by origin: `[sent, received]`.
    pub proposals: [u64; 2],
    /// Votes, by (kind: prevote, precommit) and origin (sent, received).
    pub votes: [[u64; 2]; 2],
    /// Blocks applied from block sync (or a gossiped certificate) rather than by voting.
    pub synced_blocks: u64,
    /// Highest height a peer reported.
    pub best_peer_height: u64,
    /// When the last block was committed here (UNIX ms; 0: none since start).
    pub last_commit_ms: u64,
}

impl Default for RuntimeStats {
    fn default() -> Self {
        RuntimeStats {
            finality: Histogram::new(&FINALITY_BUCKETS),
            proposals: [0; 2],
            votes: [[0; 2]; 2],
            synced_blocks: 0,
            best_peer_height: 0,
            last_commit_ms: 0,
        }
    }
}

/// Index of an origin in [`RuntimeStats`]: sent by us, received from the network.
const SENT: usize = 0;
const RECEIVED: usize = 1;

/// What the loop publishes for observers (tests, the API): updated after every event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Height of the last final block.
    pub height: u64,
    /// Its hash.
    pub tip: Hash,
    /// Whether a peer reported a higher height than ours.
    pub syncing: bool,
    /// Connected peers.
    pub peers: usize,
    /// Height of the last vote or proposal this node signed (0: none yet).
    pub signed_height: u64,
}

/// Block-sync client state.
#[derive(Debug, Default)]
struct SyncClient {
    /// Latest status of each peer on our chain.
    statuses: HashMap<PeerId, Status>,
    /// The blocks request in flight: (request, peer).
    inflight: Option<(p2p::network::RequestId, PeerId)>,
    /// When peers were last asked for their status (UNIX ms).
    asked_ms: u64,
    /// Our height, and when it last changed (UNIX ms).
    height: u64,
    height_since_ms: u64,
}

impl SyncClient {
    fn best_height(&self) -> u64 {
        self.statuses.values().map(|s| s.height).max().unwrap_or(0)
    }
}

/// A validator (or follower) running on the network.
pub struct Runtime<S: Store> {
    engine: Engine<S>,
    network: Network,
    sync: SyncClient,
    max_blocks_per_request: u32,
    max_response_bytes: usize,
    status_interval: Duration,
    progress: watch::Sender<Progress>,
    events: broadcast::Sender<Event>,
    jobs: mpsc::Receiver<Job<S>>,
    job_sender: mpsc::Sender<Job<S>>,
    stats: RuntimeStats,
    /// Set while blocks taken from sync are committed: their latency is not finality's.
    from_sync: bool,
}

/// Milliseconds since the UNIX epoch: the engine's clock.
fn now_ms() -> u64 {
    p2p::clock::now_ms()
}

impl<S: Store> Runtime<S> {
    /// Wires an engine to a network.
    pub fn new(engine: Engine<S>, network: Network, sync: p2p::SyncLimits) -> Runtime<S> {
        let (progress, _) = watch::channel(Progress::default());
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (job_sender, jobs) = mpsc::channel(JOB_QUEUE);
        let mut runtime = Runtime {
            engine,
            network,
            sync: SyncClient::default(),
            max_blocks_per_request: sync.max_blocks_per_request,
            max_response_bytes: sync.max_response_bytes,
            status_interval: Duration::from_millis(sync.status_interval_ms),
            progress,
            events,
            jobs,
            job_sender,
            stats: RuntimeStats::default(),
            from_sync: false,
        };
        runtime.publish_progress();
        runtime
    }

    /// Follows the loop's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// A handle for sending jobs to the loop.
    pub fn handle(&self) -> Handle<S> {
        Handle {
            jobs: self.job_sender.clone(),
        }
    }

    /// The event stream; also carries events others send (the kernel drop sampler).
    pub fn events(&self) -> broadcast::Sender<Event> {
        self.events.clone()
    }

    /// What the loop counted.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// The engine.
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// The engine, for jobs that feed it (a transaction submitted through the API).
    pub fn engine_mut(&mut self) -> &mut Engine<S> {
        &mut self.engine
    }

    /// Gossips a transaction this node accepted from a client.
    pub fn broadcast_transaction(&mut self, tx: &types::SignedTransaction) {
        self.network.publish(TopicKind::Transactions, tx.to_bytes());
    }

    /// The network.
    pub fn network(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Runs until `shutdown` completes. A block being committed is always finished first: the
    /// loop only stops between two events.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Runtime<S> {
        tokio::pin!(shutdown);
        let mut status_timer = tokio::time::interval(self.status_interval);
        status_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = now_ms();
            let wait = self
                .engine
                .next_deadline()
                .map_or(Duration::from_secs(1), |at| {
                    Duration::from_millis(at.saturating_sub(now))
                });
            tokio::select! {
                _ = &mut shutdown => break,
                event = self.network.next() => self.on_network(event),
                _ = tokio::time::sleep(wait) => self.engine.tick(now_ms()),
                _ = status_timer.tick() => self.ask_status(),
                Some(job) = self.jobs.recv() => job(&mut self),
            }
            self.flush();
            self.publish_progress();
        }
        self
    }

    fn publish_progress(&mut self) {
        let ledger = self.engine.ledger();
        let progress = Progress {
            height: ledger.height(),
            tip: ledger.tip_hash(),
            syncing: self.sync.best_height() > ledger.height() + 1,
            peers: self.network.connected_peers().len(),
            signed_height: self.engine.last_signed().map_or(0, |s| s.height),
        };
        self.progress.send_if_modified(|p| {
            let changed = *p != progress;
            *p = progress;
            changed
        });
    }

    /// Carries the engine's outputs to the network.
    fn flush(&mut self) {
        for output in self.engine.drain_outputs() {
            match output {
                Output::Broadcast(message) => {
                    self.count_message(&message, SENT);
                    self.network
                        .publish(TopicKind::Consensus, message.to_bytes());
                }
                Output::Transaction(tx) => {
                    self.network.publish(TopicKind::Transactions, tx.to_bytes());
                }
                Output::Committed {
                    height,
                    round,
                    hash,
                    evidence,
                } => {
                    log::info!("height {height} final: {hash}");
                    self.committed(height, round, hash, evidence.len());
                    self.announce(height);
                }
            }
        }
    }

    /// Counts a consensus message by kind and origin.
    fn count_message(&mut self, message: &ConsensusMessage, origin: usize) {
        match message {
            ConsensusMessage::Proposal(_) => self.stats.proposals[origin] += 1,
            ConsensusMessage::Vote(vote) => {
                let kind = match vote.vote.kind {
                    VoteKind::Prevote => 0,
                    VoteKind::Precommit => 1,
                };
                self.stats.votes[kind][origin] += 1;
            }
            _ => {}
        }
    }

    /// Records a final block: latency, events.
    fn committed(&mut self, height: u64, round: u32, hash: Hash, evidence: usize) {
        let now = now_ms();
        self.stats.last_commit_ms = now;
        let ledger = self.engine.ledger();
        let Ok(Some(block)) = ledger.block(height) else {
            return;
        };
        let signers = ledger
            .commit_at(height)
            .ok()
            .flatten()
            .map_or(0, |c| c.signatures.len());
        let latency_ms = now.saturating_sub(block.header.time_ms);
        if !self.from_sync {
            self.stats.finality.observe(latency_ms as f64 / 1000.0);
        }
        let _ = self.events.send(Event::Block {
            height,
            hash: hash.to_string(),
            proposer: block.header.proposer.to_string(),
            time_ms: block.header.time_ms,
            txs: block.txs.len(),
        });
        let _ = self.events.send(Event::Finality {
            height,
            hash: hash.to_string(),
            round,
            signers,
            latency_ms,
            evidence,
        });
    }

    /// The proposer of a final block gossips it with its certificate, for nodes that follow
    /// the chain without taking part in consensus and for those that fell behind.
    fn announce(&mut self, height: u64) {
        let ledger = self.engine.ledger();
        let (Ok(Some(block)), Ok(Some(commit))) = (ledger.block(height), ledger.commit_at(height))
        else {
            return;
        };
        if block.header.proposer != self.engine.address() {
            return;
        }
        let bytes = SyncedBlock { block, commit }.to_bytes();
        self.network.publish(TopicKind::Blocks, bytes);
    }

    fn on_network(&mut self, event: NetworkEvent) {
        match event {
            NetworkEvent::Gossip { from, id, gossip } => {
                let kind = gossip.kind();
                let verdict = self.on_gossip(gossip);
                self.network.validated(&id, from, kind, verdict);
            }
            NetworkEvent::SyncRequest {
                request, channel, ..
            } => {
                let response = self.serve(request);
                self.network.respond(channel, response);
            }
            NetworkEvent::SyncResponse {
                peer,
                request,
                response,
            } => self.on_sync_response(peer, request, response),
            NetworkEvent::SyncFailed { request, .. } => {
                if self.sync.inflight.is_some_and(|(r, _)| r == request) {
                    self.sync.inflight = None;
                }
            }
            NetworkEvent::Connected(peer) => {
                self.network.request(&peer, SyncRequest::Status);
            }
            NetworkEvent::Disconnected(peer) => {
                self.sync.statuses.remove(&peer);
                if self.sync.inflight.is_some_and(|(_, p)| p == peer) {
                    self.sync.inflight = None;
                }
            }
            NetworkEvent::Banned(ban) => {
                let _ = self.events.send(Event::Ban {
                    target: ban.target.to_string(),
                    addresses: ban.addresses.iter().map(|a| a.to_string()).collect(),
                    reason: ban.reason.name(),
                    until_ms: ban.until_ms,
                    offence: ban.offence,
                    detail: ban.detail.clone(),
                });
            }
            NetworkEvent::Unbanned(target) => {
                let _ = self.events.send(Event::Unban {
                    target: target.to_string(),
                });
            }
        }
    }

    /// Rules on a gossip message that passed the relay checks.
    fn on_gossip(&mut self, gossip: Gossip) -> Validation {
        let now = now_ms();
        let height = self.engine.height();
        match gossip {
            Gossip::Transaction(tx) => match self.engine.on_transaction(tx) {
                Ok(_) => Validation::Accept,
                // Duplicates, stale nonces, a full mempool: state-dependent, no one's fault.
                Err(e) => {
                    log::debug!("transaction not taken: {e}");
                    Validation::Ignore
                }
            },
            Gossip::Consensus(message) => {
                self.count_message(&message, RECEIVED);
                let at = message.height();
                if at > height + 1 {
                    self.ask_status();
                }
                if at + 1 < height || at > height + FUTURE_HEIGHTS {
                    return Validation::Ignore;
                }
                self.engine.on_message(message, now);
                Validation::Accept
            }
            Gossip::Block(synced) => {
                // The next block to commit (consensus may be pausing before that height).
                let height = self.engine.ledger().height() + 1;
                let at = synced.block.header.height;
                if at > height {
                    self.ask_status();
                    return Validation::Ignore;
                }
                if at < height {
                    return Validation::Ignore;
                }
                let hash = synced.block.hash();
                if let Err(e) = self
                    .engine
                    .ledger()
                    .verify_commit(&synced.commit, &hash, at)
                {
                    log::debug!("gossiped block {at} has a bad certificate: {e}");
                    return Validation::Reject(Action::LowTolerance, BanReason::InvalidSignature);
                }
                let SyncedBlock { block, commit } = *synced;
                match self.engine.on_synced_block(block, commit, now) {
                    Ok(_) => self.stats.synced_blocks += 1,
                    Err(e) => log::warn!("gossiped block {at} not applied: {e}"),
                }
                self.from_sync = true;
                self.flush();
                self.from_sync = false;
                Validation::Accept
            }
        }
    }

    /// Answers a sync request from the ledger.
    fn serve(&self, request: SyncRequest) -> SyncResponse {
        let ledger = self.engine.ledger();
        match request {
            SyncRequest::Status => SyncResponse::Status(Status {
                genesis: ledger.genesis_hash(),
                height: ledger.height(),
                tip: ledger.tip_hash(),
            }),
            SyncRequest::Blocks { from, count } => {
                let mut blocks = Vec::new();
                let mut bytes = 0usize;
                let last = from
                    .saturating_add(u64::from(count.min(self.max_blocks_per_request)))
                    .min(ledger.height().saturating_add(1));
                for height in from.max(1)..last {
                    let (Ok(Some(block)), Ok(Some(commit))) =
                        (ledger.block(height), ledger.commit_at(height))
                    else {
                        break;
                    };
                    let synced = SyncedBlock { block, commit };
                    let size = synced.to_bytes().len();
                    if !blocks.is_empty() && bytes + size > self.max_response_bytes {
                        break;
                    }
                    bytes += size;
                    blocks.push(synced);
                }
                SyncResponse::Blocks(blocks)
            }
        }
    }

    /// Asks connected peers for their status, at most once per [`MIN_STATUS_GAP_MS`]: messages
    /// from later heights hint that we fell behind, and a burst of them must not turn into a
    /// burst of requests that would spend our peers' sync budgets.
    fn ask_status(&mut self) {
        let now = now_ms();
        if now.saturating_sub(self.sync.asked_ms) < MIN_STATUS_GAP_MS {
            return;
        }
        self.sync.asked_ms = now;
        for peer in self
            .network
            .connected_peers()
            .into_iter()
            .take(STATUS_FANOUT)
        {
            self.network.request(&peer, SyncRequest::Status);
        }
    }

    /// Requests the next blocks from a peer that has them, unless a request is in flight.
    /// A peer one block ahead is normal while a height is being decided; sync starts when a
    /// peer is two or more ahead, or one ahead while our height has not moved for a status
    /// interval (we missed the votes of a height the others finished).
    fn request_blocks(&mut self) {
        if self.sync.inflight.is_some() {
            return;
        }
        let ours = self.engine.ledger().height();
        let now = now_ms();
        if ours != self.sync.height {
            self.sync.height = ours;
            self.sync.height_since_ms = now;
        }
        let stalled = now.saturating_sub(self.sync.height_since_ms)
            >= self.status_interval.as_millis() as u64;
        let behind = if stalled { 1 } else { 2 };
        let Some((peer, theirs)) = self
            .sync
            .statuses
            .iter()
            .filter(|(_, s)| s.height >= ours + behind)
            .map(|(p, s)| (*p, s.height))
            .max_by_key(|(_, h)| *h)
        else {
            return;
        };
        let count = (theirs - ours).min(u64::from(self.max_blocks_per_request)) as u32;
        log::info!(
            "syncing blocks {} to {} from {peer}",
            ours + 1,
            ours + u64::from(count)
        );
        let request = self.network.request(
            &peer,
            SyncRequest::Blocks {
                from: ours + 1,
                count,
            },
        );
        self.sync.inflight = Some((request, peer));
    }

    fn on_sync_response(
        &mut self,
        peer: PeerId,
        request: p2p::network::RequestId,
        response: SyncResponse,
    ) {
        match response {
            SyncResponse::Status(status) => {
                if status.genesis == self.engine.ledger().genesis_hash() {
                    self.stats.best_peer_height = self.stats.best_peer_height.max(status.height);
                    self.sync.statuses.insert(peer, status);
                    self.request_blocks();
                } else {
                    log::warn!("{peer} is on another chain; not syncing from it");
                    self.sync.statuses.remove(&peer);
                }
            }
            SyncResponse::Blocks(blocks) => {
                if self.sync.inflight.is_some_and(|(r, _)| r == request) {
                    self.sync.inflight = None;
                }
                if blocks.is_empty() {
                    // Its status was stale; ask again later.
                    self.sync.statuses.remove(&peer);
                }
                for synced in blocks {
                    if !self.apply_synced(peer, synced) {
                        self.sync.statuses.remove(&peer);
                        return;
                    }
                }
                self.request_blocks();
            }
            SyncResponse::Refused(refusal) => {
                log::debug!("{peer} refused a sync request: {refusal:?}");
                if self.sync.inflight.is_some_and(|(r, _)| r == request) {
                    self.sync.inflight = None;
                }
            }
        }
    }

    /// Applies one synced block; false (and the peer reported) when it does not hold up.
    fn apply_synced(&mut self, peer: PeerId, synced: SyncedBlock) -> bool {
        // The next block to commit (consensus may be pausing before that height).
        let height = self.engine.ledger().height() + 1;
        let at = synced.block.header.height;
        if at < height {
            return true;
        }
        let hash = synced.block.hash();
        let proven = at == height
            && synced.commit.block == hash
            && self
                .engine
                .ledger()
                .verify_commit(&synced.commit, &hash, at)
                .is_ok();
        if !proven {
            log::warn!("{peer} sent block {at} without a valid certificate (need {height})");
            self.network.report(Report {
                peer: Some(peer),
                addr: None,
                action: Action::LowTolerance,
                source: Source::Sync,
                reason: BanReason::SyncAbuse,
            });
            return false;
        }
        let SyncedBlock { block, commit } = synced;
        let applied = self.engine.on_synced_block(block, commit, now_ms());
        self.from_sync = true;
        self.flush();
        self.from_sync = false;
        if let Err(e) = applied {
            log::warn!("synced block {at} not applied: {e}");
            return false;
        }
        self.stats.synced_blocks += 1;
        self.engine.ledger().height() >= height
    }
}

//! The validator's main loop: consensus, the network and block sync in one Tokio task.
//!
//! The engine is sans-IO; this loop feeds it gossip, timers and synced blocks, carries its
//! outputs to the network, rules on every gossip message for gossipsub (accept, ignore, reject
//! and report), serves block sync from the ledger, and catches up from peers when behind.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use consensus::{Engine, Output};
use p2p::gossip::{Gossip, TopicKind};
use p2p::network::Validation;
use p2p::peers::{Action, Report, Source};
use p2p::sync::{Status, SyncRequest, SyncResponse, SyncedBlock};
use p2p::{BanReason, Network, NetworkEvent, PeerId};
use storage::Store;
use tokio::sync::watch;
use types::{Encode, Hash};

/// How far above the height being decided consensus messages are taken and forwarded.
const FUTURE_HEIGHTS: u64 = 2;
/// Peers asked for their status in one round.
const STATUS_FANOUT: usize = 8;
/// Least time between two rounds of status requests, in milliseconds.
const MIN_STATUS_GAP_MS: u64 = 500;

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
}

/// Milliseconds since the UNIX epoch: the engine's clock.
fn now_ms() -> u64 {
    p2p::clock::now_ms()
}

impl<S: Store> Runtime<S> {
    /// Wires an engine to a network.
    pub fn new(engine: Engine<S>, network: Network, sync: p2p::SyncLimits) -> Runtime<S> {
        let (progress, _) = watch::channel(Progress::default());
        let mut runtime = Runtime {
            engine,
            network,
            sync: SyncClient::default(),
            max_blocks_per_request: sync.max_blocks_per_request,
            max_response_bytes: sync.max_response_bytes,
            status_interval: Duration::from_millis(sync.status_interval_ms),
            progress,
        };
        runtime.publish_progress();
        runtime
    }

    /// Follows the loop's progress.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// The engine.
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }

    /// The network.
    pub fn network(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Runs until `shutdown` completes.
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
            syncing: self.sync.best_height() > ledger.height(),
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
                    self.network
                        .publish(TopicKind::Consensus, message.to_bytes());
                }
                Output::Transaction(tx) => {
                    self.network.publish(TopicKind::Transactions, tx.to_bytes());
                }
                Output::Committed { height, hash, .. } => {
                    log::info!("height {height} final: {hash}");
                    self.announce(height);
                }
            }
        }
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
            NetworkEvent::Banned(_) | NetworkEvent::Unbanned(_) => {}
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
                if let Err(e) = self.engine.on_synced_block(block, commit, now) {
                    log::warn!("gossiped block {at} not applied: {e}");
                }
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
        let height = self.engine.height();
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
        if let Err(e) = self.engine.on_synced_block(block, commit, now_ms()) {
            log::warn!("synced block {at} not applied: {e}");
            return false;
        }
        self.flush();
        self.engine.height() > height
    }
}

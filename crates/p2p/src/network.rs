//! The swarm and the loop around it: transports, protocols, discovery, the checks a relay makes,
//! request budgets, and the peer manager's decisions carried out in libp2p and in the kernel.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns, noise, tcp, yamux};
use types::{ChainId, SecretKey};

use crate::clock::now_ms;
use crate::config::NetworkConfig;
use crate::gate::{Gate, Refusal, Refused, ip_of};
use crate::gossip::{self, Gossip, GossipError, TopicKind, Topics};
use crate::peers::{Action, Ban, BanTarget, Decision, PeerManager, Report, Source};
use crate::sync::{self, Refusal as SyncRefusal, SyncCodec, SyncRequest, SyncResponse};
use crate::{BanReason, KernelFilter, NetworkError};

/// Our id for a sync request we sent.
pub type RequestId = OutboundRequestId;

/// Kademlia's protocol name.
const KAD_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/xdp-node/kad/1");
/// Identify's protocol version string.
const IDENTIFY_VERSION: &str = "/xdp-node/1";
/// How often bans are checked for expiry and bootstrap peers re-dialled.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Bootstrap peers not connected are re-dialled this often.
const REDIAL: Duration = Duration::from_secs(5);
/// A Kademlia random walk runs this often.
const KAD_WALK: Duration = Duration::from_secs(60);
/// Peers found by discovery are dialled while fewer than this many are connected.
const TARGET_PEERS: usize = 16;
/// One spam report per peer at most this often.
const SPAM_REPORT_EVERY_MS: u64 = 1000;
/// Topic label of a gossip message on a topic this node does not know.
const UNKNOWN_TOPIC: &str = "unknown";
/// Result label of a gossip message on a topic this node does not know.
const UNKNOWN_TOPIC_RESULT: &str = "unknown_topic";
/// Result label of a gossip message over its sender's budget (dropped before any check).
const OVER_BUDGET_RESULT: &str = "over_budget";

/// The protocols of one node.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Bans and connection limits; first, so it rules before any other protocol sees a
    /// connection.
    gate: Gate,
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<SyncCodec>,
    kademlia: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// One open connection, for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The remote peer.
    pub peer: PeerId,
    /// Its address on this connection.
    pub address: Multiaddr,
    /// Whether the peer dialled us.
    pub inbound: bool,
}

/// What the network hands to the application.
#[derive(Debug)]
pub enum NetworkEvent {
    /// A gossip message that passed the relay checks; answer with [`Network::validated`].
    Gossip {
        /// The peer that sent it to us.
        from: PeerId,
        /// Its gossipsub id.
        id: MessageId,
        /// The message.
        gossip: Gossip,
    },
    /// A peer asks for sync data within its budget; answer with [`Network::respond`].
    SyncRequest {
        /// The peer.
        peer: PeerId,
        /// What it asks.
        request: SyncRequest,
        /// Where the answer goes.
        channel: ResponseChannel<SyncResponse>,
    },
    /// The answer to one of our requests.
    SyncResponse {
        /// The peer that answered.
        peer: PeerId,
        /// Our request.
        request: OutboundRequestId,
        /// Its answer.
        response: SyncResponse,
    },
    /// One of our requests failed (timeout, closed connection, unreadable answer).
    SyncFailed {
        /// The peer.
        peer: PeerId,
        /// Our request.
        request: OutboundRequestId,
    },
    /// The first connection to a peer opened.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// A ban was made and enforced.
    Banned(Ban),
    /// A ban ended.
    Unbanned(BanTarget),
}

/// The application's ruling on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validation {
    /// Valid: deliver and forward.
    Accept,
    /// Not useful (stale, duplicate, state-dependent): drop without blame.
    Ignore,
    /// Invalid: drop, and report the sender.
    Reject(Action, BanReason),
}

impl Validation {
    /// A stable label for metrics: the result of [`NetworkCounters::gossip`].
    pub const fn label(self) -> &'static str {
        match self {
            Validation::Accept => "accept",
            Validation::Ignore => "ignore",
            Validation::Reject(..) => "reject",
        }
    }
}

/// A token bucket: `rate` tokens per second up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
    last_report_ms: u64,
}

impl Bucket {
    fn new(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at_ms: now_ms,
            last_report_ms: 0,
        }
    }

    fn take(&mut self, rate: u32, burst: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.at_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether an overrun should be reported now (at most once per interval).
    fn report_due(&mut self, now_ms: u64) -> bool {
        if now_ms.saturating_sub(self.last_report_ms) >= SPAM_REPORT_EVERY_MS {
            self.last_report_ms = now_ms;
            true
        } else {
            false
        }
    }
}

/// Counters for metrics and tests. Labels are fixed names, never addresses or peer ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    /// Gossip messages received, by (topic, result): one of
    /// [`NetworkCounters::GOSSIP_TOPICS`] and one of [`NetworkCounters::GOSSIP_RESULTS`].
    pub gossip: BTreeMap<(&'static str, &'static str), u64>,
    /// Connections refused by the gate, by [`Refusal::name`].
    pub refused: BTreeMap<&'static str, u64>,
    /// Inbound handshakes that failed.
    pub handshake_failures: u64,
    /// Sync requests served (handed to the application).
    pub sync_served: u64,
    /// Sync requests refused, by [`sync::Refusal::label`].
    pub sync_refused: BTreeMap<&'static str, u64>,
    /// Sync requests or responses that could not be read.
    pub sync_malformed: u64,
    /// Messages we could not publish (no peers on the topic, for example), by topic.
    pub publish_failed: BTreeMap<&'static str, u64>,
    /// Bans carried out.
    pub bans: u64,
    /// Addresses written to the kernel blocklist.
    pub kernel_blocks: u64,
    /// Kernel map writes that failed.
    pub kernel_errors: u64,
    /// Longest time from a ban decision to the kernel map written, in microseconds.
    pub max_enforce_us: u64,
    /// Disconnections ordered by the peer manager.
    pub disconnects: u64,
}

impl NetworkCounters {
    /// Every topic label of [`NetworkCounters::gossip`]: each [`TopicKind::name`], then the one
    /// of a topic this node does not know.
    pub const GOSSIP_TOPICS: [&'static str; 4] = ["tx", "consensus", "block", UNKNOWN_TOPIC];

    /// Every result label of [`NetworkCounters::gossip`]: the application's ruling
    /// ([`Validation::label`]), a sender over its budget, the relay's refusals
    /// ([`GossipError::label`]), and a topic this node does not know.
    pub const GOSSIP_RESULTS: [&'static str; 9] = [
        "accept",
        "ignore",
        "reject",
        OVER_BUDGET_RESULT,
        "oversized",
        "malformed",
        "invalid_signature",
        "commit_mismatch",
        UNKNOWN_TOPIC_RESULT,
    ];
}

/// A node's network.
pub struct Network {
    swarm: Swarm<Behaviour>,
    chain: ChainId,
    topics: Topics,
    config: NetworkConfig,
    peers: PeerManager,
    kernel: Option<Box<dyn KernelFilter>>,
    gossip_budgets: HashMap<PeerId, Bucket>,
    sync_budgets: HashMap<PeerId, Bucket>,
    events: VecDeque<NetworkEvent>,
    housekeeping: tokio::time::Interval,
    /// Sequence number of the last consensus message published.
    publish_seq: u64,
    last_redial: Instant,
    last_walk: Instant,
    /// Whether a Kademlia walk has started since the node came up.
    walked: bool,
    counters: NetworkCounters,
    /// Open connections (bounded by the gate's total limit).
    connections: HashMap<ConnectionId, Connection>,
}

impl Network {
    /// Builds the swarm with the node's key, listens, subscribes to the chain's topics, dials
    /// the bootstrap peers, and re-applies persisted bans (and the allowlist) to libp2p and to
    /// the kernel filter, if there is one. Must be called within a Tokio runtime.
    pub fn new(
        key: &SecretKey,
        chain: ChainId,
        store: Arc<dyn storage::Store>,
        config: NetworkConfig,
        kernel: Option<Box<dyn KernelFilter>>,
    ) -> Result<Network, NetworkError> {
        let now = now_ms();
        let peers = PeerManager::open(store, config.peers.clone(), now)?;
        let keypair = crate::keypair_of(key)?;
        let topics = Topics::new(&chain);
        let gossip_config = gossip::config(config.heartbeat_ms)?;
        let mut builder_error = None;
        let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| NetworkError::Transport(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let local = key.public().to_peer_id();
                let mut gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Anonymous,
                    gossip_config,
                )?;
                gossipsub.with_peer_score(gossip::score_params(&topics), gossip::thresholds())?;
                let kademlia = config.kademlia.then(|| {
                    let mut kad = kad::Behaviour::with_config(
                        local,
                        kad::store::MemoryStore::new(local),
                        kad::Config::new(KAD_PROTOCOL),
                    );
                    kad.set_mode(Some(kad::Mode::Server));
                    kad
                });
                let mdns = if config.mdns {
                    match mdns::tokio::Behaviour::new(mdns::Config::default(), local) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            builder_error = Some(e.to_string());
                            None
                        }
                    }
                } else {
                    None
                };
                Ok(Behaviour {
                    gate: Gate::new(config.limits, config.peers.allowlist.clone()),
                    identify: identify::Behaviour::new(identify::Config::new(
                        IDENTIFY_VERSION.into(),
                        key.public(),
                    )),
                    gossipsub,
                    sync: request_response::Behaviour::new(
                        [(sync::PROTOCOL, ProtocolSupport::Full)],
                        request_response::Config::default().with_request_timeout(
                            Duration::from_millis(config.sync.request_timeout_ms),
                        ),
                    ),
                    kademlia: Toggle::from(kademlia),
                    mdns: Toggle::from(mdns),
                })
            })
            .map_err(|e| NetworkError::Transport(e.to_string()))?
            .with_swarm_config(|c| {
                c.with_idle_connection_timeout(Duration::from_millis(config.idle_timeout_ms))
            })
            .build();
        if let Some(e) = builder_error {
            return Err(NetworkError::Mdns(e));
        }
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut network = Network {
            swarm,
            chain,
            topics,
            config,
            peers,
            kernel,
            gossip_budgets: HashMap::new(),
            sync_budgets: HashMap::new(),
            events: VecDeque::new(),
            housekeeping,
            // Start where no earlier run of this node could have been: its current time.
            publish_seq: now.saturating_mul(1000),
            last_redial: Instant::now(),
            last_walk: Instant::now(),
            walked: false,
            counters: NetworkCounters::default(),
            connections: HashMap::new(),
        };
        network.start()?;
        Ok(network)
    }

    fn start(&mut self) -> Result<(), NetworkError> {
        for addr in self.config.listen.clone() {
            self.swarm
                .listen_on(addr.clone())
                .map_err(|e| NetworkError::Listen(format!("{addr}: {e}")))?;
        }
        for kind in TopicKind::ALL {
            self.swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(self.topics.topic(kind))
                .map_err(|e| NetworkError::Gossipsub(e.to_string()))?;
        }
        if let Some(kernel) = self.kernel.as_mut() {
            for net in &self.config.peers.allowlist {
                if let Err(e) = kernel.allow(*net) {
                    log::error!("cannot allowlist {net} in the kernel filter: {e}");
                    self.counters.kernel_errors += 1;
                }
            }
        }
        let now = now_ms();
        for ban in self.peers.bans(now) {
            self.enforce(&ban, now);
        }
        for addr in self.config.bootstrap.clone() {
            if let Some(kad) = self.swarm.behaviour_mut().kademlia.as_mut()
                && let Some(peer) = peer_of(&addr)
            {
                kad.add_address(&peer, addr.clone());
            }
            self.dial(addr);
        }
        Ok(())
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    /// Addresses the node listens on (known once the listeners are up).
    pub fn listeners(&self) -> Vec<Multiaddr> {
        self.swarm.listeners().cloned().collect()
    }

    /// Peers with at least one open connection.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.swarm.connected_peers().copied().collect()
    }

    /// Open connections.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.values().cloned().collect()
    }

    /// Allowlists a net at run time: never banned, never refused as banned, skips the
    /// per-address limits, and let through by the kernel filter. False when the allowlist is
    /// full or already holds it.
    pub fn allow(&mut self, net: IpNet) -> bool {
        let net = net.trunc();
        if !self.peers.allow(net) {
            return false;
        }
        self.swarm.behaviour_mut().gate.allow(net);
        if let Some(kernel) = self.kernel.as_mut()
            && let Err(e) = kernel.allow(net)
        {
            self.counters.kernel_errors += 1;
            log::error!("cannot allowlist {net} in the kernel filter: {e}");
        }
        true
    }

    /// Peers subscribed to a topic.
    pub fn topic_peers(&self, kind: TopicKind) -> usize {
        let hash = self.topics.topic(kind).hash();
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&hash))
            .count()
    }

    /// The counters.
    pub fn counters(&self) -> &NetworkCounters {
        &self.counters
    }

    /// The peer manager (scores, bans, explanations), read-only.
    pub fn peers(&self) -> &PeerManager {
        &self.peers
    }

    /// Dials an address (errors are logged: the peer may simply be down).
    pub fn dial(&mut self, addr: Multiaddr) {
        if let Err(e) = self.swarm.dial(addr.clone()) {
            log::debug!("dial {addr}: {e}");
        }
    }

    /// Publishes bytes on a topic (a consensus message gets this node's next sequence number
    /// in front). `false` when no peer could take them (none connected yet).
    pub fn publish(&mut self, kind: TopicKind, bytes: Vec<u8>) -> bool {
        let topic = self.topics.topic(kind).clone();
        let bytes = if kind == TopicKind::Consensus {
            self.publish_seq = self.publish_seq.wrapping_add(1);
            let mut framed = Vec::with_capacity(gossip::CONSENSUS_SEQ_BYTES + bytes.len());
            framed.extend_from_slice(&self.publish_seq.to_be_bytes());
            framed.extend_from_slice(&bytes);
            framed
        } else {
            bytes
        };
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => true,
            Err(e) => {
                log::debug!("publish on {}: {e}", kind.name());
                *self.counters.publish_failed.entry(kind.name()).or_default() += 1;
                false
            }
        }
    }

    /// The application's ruling on a gossip message it was handed.
    pub fn validated(&mut self, id: &MessageId, from: PeerId, kind: TopicKind, v: Validation) {
        let acceptance = match v {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Ignore => MessageAcceptance::Ignore,
            Validation::Reject(..) => MessageAcceptance::Reject,
        };
        self.gossip_result(kind.name(), v.label());
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &from, acceptance);
        if let Validation::Reject(action, reason) = v {
            self.report(Report {
                peer: Some(from),
                addr: None,
                action,
                source: Source::Gossip,
                reason,
            });
        }
    }

    /// Reports a peer or an address to the peer manager and carries out its decisions.
    pub fn report(&mut self, report: Report) {
        let now = now_ms();
        let decisions = self.peers.report(report, now);
        self.apply(decisions, now);
    }

    /// An operator ban (`ttl_ms` `None`: the configured base duration).
    pub fn ban(
        &mut self,
        target: BanTarget,
        reason: BanReason,
        ttl_ms: Option<u64>,
        detail: &str,
    ) -> Result<Option<Ban>, NetworkError> {
        let now = now_ms();
        let ban = self.peers.ban(target, reason, ttl_ms, detail, now)?;
        if let Some(ban) = &ban {
            self.apply(vec![Decision::Ban(ban.clone())], now);
        }
        Ok(ban)
    }

    /// Lifts a ban.
    pub fn unban(&mut self, target: &BanTarget) -> Result<bool, NetworkError> {
        let now = now_ms();
        match self.peers.unban(target, now)? {
            Some(decision) => {
                self.apply(vec![decision], now);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sends a sync request.
    pub fn request(&mut self, peer: &PeerId, request: SyncRequest) -> OutboundRequestId {
        self.swarm.behaviour_mut().sync.send_request(peer, request)
    }

    /// Answers a sync request.
    pub fn respond(&mut self, channel: ResponseChannel<SyncResponse>, response: SyncResponse) {
        if self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, response)
            .is_err()
        {
            log::debug!("sync response not sent: the requester is gone");
        }
    }

    /// The next event for the application. Cancel-safe: drive it in a `select!` loop.
    pub async fn next(&mut self) -> NetworkEvent {
        loop {
            if let Some(event) = self.events.pop_front() {
                return event;
            }
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = self.housekeeping.tick() => self.housekeep(),
            }
        }
    }

    fn housekeep(&mut self) {
        let now = now_ms();
        let decisions = self.peers.expire(now);
        self.apply(decisions, now);
        if self.last_redial.elapsed() >= REDIAL {
            self.last_redial = Instant::now();
            let connected = self.swarm.connected_peers().count();
            for addr in self.config.bootstrap.clone() {
                let redial = match peer_of(&addr) {
                    Some(peer) => !self.swarm.is_connected(&peer),
                    None => connected == 0,
                };
                if redial {
                    self.dial(addr);
                }
            }
        }
        if self.last_walk.elapsed() >= KAD_WALK {
            self.last_walk = Instant::now();
            if let Some(kad) = self.swarm.behaviour_mut().kademlia.as_mut() {
                // No known peers yet is normal for a node alone; the next walk retries.
                let _ = kad.bootstrap();
            }
        }
    }

    /// Carries out the peer manager's decisions.
    fn apply(&mut self, decisions: Vec<Decision>, now: u64) {
        for decision in decisions {
            match decision {
                Decision::Disconnect { peer, reason } => {
                    log::info!("disconnecting {peer}: {}", reason.name());
                    self.counters.disconnects += 1;
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Decision::Ban(ban) => {
                    self.enforce(&ban, now);
                    self.events.push_back(NetworkEvent::Banned(ban));
                }
                Decision::Unban { target, addresses } => {
                    log::info!("ban of {target:?} ended");
                    let gate = &mut self.swarm.behaviour_mut().gate;
                    if let BanTarget::Peer(peer) = &target {
                        gate.unban_peer(peer);
                    }
                    for net in &addresses {
                        gate.unban_net(*net);
                    }
                    if let BanTarget::Peer(peer) = &target {
                        self.swarm
                            .behaviour_mut()
                            .gossipsub
                            .remove_blacklisted_peer(peer);
                    }
                    if let Some(kernel) = self.kernel.as_mut() {
                        for net in &addresses {
                            if let Err(e) = kernel.unblock(*net) {
                                log::error!("cannot unblock {net} in the kernel filter: {e}");
                                self.counters.kernel_errors += 1;
                            }
                        }
                    }
                    self.events.push_back(NetworkEvent::Unbanned(target));
                }
            }
        }
    }

    /// Enforces a ban in libp2p and in the kernel, with the same expiry.
    fn enforce(&mut self, ban: &Ban, now: u64) {
        let decided = Instant::now();
        let ttl = Duration::from_millis(ban.until_ms.saturating_sub(now));
        if let Some(kernel) = self.kernel.as_mut() {
            for net in &ban.addresses {
                match kernel.block(*net, ttl, ban.reason) {
                    Ok(()) => self.counters.kernel_blocks += 1,
                    Err(e) => {
                        log::error!("cannot block {net} in the kernel filter: {e}");
                        self.counters.kernel_errors += 1;
                    }
                }
            }
        }
        let elapsed = decided.elapsed().as_micros() as u64;
        self.counters.max_enforce_us = self.counters.max_enforce_us.max(elapsed);
        let behaviour = self.swarm.behaviour_mut();
        for net in &ban.addresses {
            behaviour.gate.ban_net(*net, ban.until_ms);
        }
        match &ban.target {
            BanTarget::Peer(peer) => {
                behaviour.gate.ban_peer(*peer, ban.until_ms);
                behaviour.gossipsub.blacklist_peer(peer);
            }
            BanTarget::Address(net) => behaviour.gate.ban_net(*net, ban.until_ms),
        }
        self.counters.bans += 1;
        log::warn!(
            "banned {:?} until {} ({}): {}; kernel blocklist {:?} written in {elapsed} µs",
            ban.target,
            ban.until_ms,
            ban.reason.name(),
            ban.detail,
            ban.addresses,
        );
    }

    fn gossip_result(&mut self, kind: &'static str, result: &'static str) {
        *self.counters.gossip.entry((kind, result)).or_default() += 1;
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.on_sync(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gate(refused)) => self.on_refused(refused),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Some(kad) = self.swarm.behaviour_mut().kademlia.as_mut() {
                    for addr in info.listen_addrs {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kademlia(kad::Event::RoutingUpdated {
                peer,
                addresses,
                ..
            })) if !self.swarm.is_connected(&peer)
                && self.swarm.connected_peers().count() < TARGET_PEERS
                && !self.swarm.behaviour().gate.is_peer_banned(&peer) =>
            {
                self.dial(addresses.first().clone());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if let Some(kad) = self.swarm.behaviour_mut().kademlia.as_mut() {
                        kad.add_address(&peer, addr.clone());
                    }
                    if !self.swarm.is_connected(&peer)
                        && self.swarm.connected_peers().count() < TARGET_PEERS
                    {
                        self.dial(addr);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.connections.insert(
                    connection_id,
                    Connection {
                        peer: peer_id,
                        address: endpoint.get_remote_address().clone(),
                        inbound: endpoint.is_listener(),
                    },
                );
                if let Some(ip) = ip_of(endpoint.get_remote_address()) {
                    self.peers.connected(peer_id, ip, now_ms());
                }
                if num_established.get() == 1 {
                    self.events.push_back(NetworkEvent::Connected(peer_id));
                }
                if !self.walked {
                    // The first peer is someone to ask for more: start the walk now rather
                    // than at the first periodic one.
                    if let Some(kad) = self.swarm.behaviour_mut().kademlia.as_mut() {
                        self.walked = kad.bootstrap().is_ok();
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.connections.remove(&connection_id);
                if num_established > 0 {
                    return;
                }
                self.peers.disconnected(peer_id, now_ms());
                self.gossip_budgets.remove(&peer_id);
                self.sync_budgets.remove(&peer_id);
                self.events.push_back(NetworkEvent::Disconnected(peer_id));
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            // Refusals by the gate were reported when they were made.
            } if !matches!(error, libp2p::swarm::ListenError::Denied { .. }) => {
                self.counters.handshake_failures += 1;
                log::debug!("inbound handshake from {send_back_addr} failed: {error}");
                if let Some(ip) = ip_of(&send_back_addr) {
                    self.report(Report {
                        peer: None,
                        addr: Some(ip),
                        action: Action::MidTolerance,
                        source: Source::Handshake,
                        reason: BanReason::HandshakeFailures,
                    });
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => log::info!("listening on {address}"),
            _ => {}
        }
    }

    fn on_gossip(&mut self, from: PeerId, id: MessageId, message: gossipsub::Message) {
        let Some(kind) = self.topics.kind(&message.topic) else {
            self.gossip_result(UNKNOWN_TOPIC, UNKNOWN_TOPIC_RESULT);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            return;
        };
        let now = now_ms();
        let (rate, burst) = (self.config.gossip_msgs_per_sec, self.config.gossip_burst);
        let bucket = self
            .gossip_budgets
            .entry(from)
            .or_insert_with(|| Bucket::new(burst, now));
        if !bucket.take(rate, burst, now) {
            let due = bucket.report_due(now);
            self.gossip_result(kind.name(), OVER_BUDGET_RESULT);
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &from, MessageAcceptance::Ignore);
            if due {
                self.report(Report {
                    peer: Some(from),
                    addr: None,
                    action: Action::HighTolerance,
                    source: Source::Gossip,
                    reason: BanReason::Spam,
                });
            }
            return;
        }
        match gossip::check(kind, &message.data, &self.chain) {
            Ok(gossip) => self
                .events
                .push_back(NetworkEvent::Gossip { from, id, gossip }),
            Err(e) => {
                log::debug!("gossip from {from} on {}: {e}", kind.name());
                self.gossip_result(kind.name(), e.label());
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &from, MessageAcceptance::Reject);
                let (action, reason) = match e {
                    GossipError::InvalidSignature => {
                        (Action::LowTolerance, BanReason::InvalidSignature)
                    }
                    GossipError::CommitMismatch => {
                        (Action::LowTolerance, BanReason::MalformedMessage)
                    }
                    GossipError::Oversized { .. } | GossipError::Malformed(_) => {
                        (Action::MidTolerance, BanReason::MalformedMessage)
                    }
                };
                self.report(Report {
                    peer: Some(from),
                    addr: None,
                    action,
                    source: Source::Gossip,
                    reason,
                });
            }
        }
    }

    fn on_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_sync_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.events.push_back(NetworkEvent::SyncResponse {
                    peer,
                    request: request_id,
                    response,
                }),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let request_response::OutboundFailure::Io(e) = &error {
                    self.sync_malformed(peer, "response", e);
                }
                self.events.push_back(NetworkEvent::SyncFailed {
                    peer,
                    request: request_id,
                });
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if let request_response::InboundFailure::Io(e) = &error {
                    self.sync_malformed(peer, "request", e);
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A sync frame from `peer` that could not be read (over its size limit, or not decoding).
    fn sync_malformed(&mut self, peer: PeerId, what: &str, error: &std::io::Error) {
        log::debug!("unreadable sync {what} from {peer}: {error}");
        self.counters.sync_malformed += 1;
        self.report(Report {
            peer: Some(peer),
            addr: None,
            action: Action::MidTolerance,
            source: Source::Sync,
            reason: BanReason::MalformedMessage,
        });
    }

    fn on_sync_request(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        let now = now_ms();
        let limits = self.config.sync;
        let bucket = self
            .sync_budgets
            .entry(peer)
            .or_insert_with(|| Bucket::new(limits.request_burst, now));
        let refusal = if !bucket.take(limits.requests_per_sec, limits.request_burst, now) {
            Some((SyncRefusal::OverBudget, Action::HighTolerance))
        } else if matches!(request, SyncRequest::Blocks { count, .. }
            if count == 0 || count > limits.max_blocks_per_request)
        {
            Some((SyncRefusal::BadRequest, Action::MidTolerance))
        } else {
            None
        };
        match refusal {
            Some((refusal, action)) => {
                *self
                    .counters
                    .sync_refused
                    .entry(refusal.label())
                    .or_default() += 1;
                self.respond(channel, SyncResponse::Refused(refusal));
                self.report(Report {
                    peer: Some(peer),
                    addr: None,
                    action,
                    source: Source::Sync,
                    reason: BanReason::SyncAbuse,
                });
            }
            None => {
                self.counters.sync_served += 1;
                self.events.push_back(NetworkEvent::SyncRequest {
                    peer,
                    request,
                    channel,
                });
            }
        }
    }

    fn on_refused(&mut self, refused: Refused) {
        *self
            .counters
            .refused
            .entry(refused.refusal.name())
            .or_default() += 1;
        let action = match refused.refusal {
            Refusal::PerIp | Refusal::PerSubnet => Action::MidTolerance,
            Refusal::PerPeer => Action::HighTolerance,
            // Already banned, or pressure from everyone: nothing to pin on one address.
            Refusal::Banned | Refusal::Pending | Refusal::Total => return,
        };
        if !refused.inbound {
            return;
        }
        self.report(Report {
            peer: refused.peer,
            addr: refused.addr,
            action,
            source: Source::Connection,
            reason: BanReason::ConnectionFlood,
        });
    }
}

/// The peer id at the end of a multiaddr (`…/p2p/<id>`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use types::DecodeError;

    use super::*;

    /// Whether `labels` holds no value twice.
    fn distinct(labels: &[&str]) -> bool {
        labels.iter().collect::<BTreeSet<_>>().len() == labels.len()
    }

    #[test]
    fn gossip_topics_lists_the_label_of_every_topic_and_the_unknown_one_once() {
        let every = [
            TopicKind::Transactions,
            TopicKind::Consensus,
            TopicKind::Blocks,
        ];
        let labels: Vec<&str> = every
            .into_iter()
            .map(TopicKind::name)
            .chain([UNKNOWN_TOPIC])
            .collect();
        assert_eq!(labels, NetworkCounters::GOSSIP_TOPICS);
        assert!(distinct(&labels), "{labels:?}");
    }

    #[test]
    fn gossip_results_lists_the_label_of_every_ruling_and_refusal_once() {
        let rulings = [
            Validation::Accept,
            Validation::Ignore,
            Validation::Reject(Action::LowTolerance, BanReason::InvalidSignature),
        ];
        let refusals = [
            GossipError::Oversized {
                kind: TopicKind::Blocks,
                len: 2,
                max: 1,
            },
            GossipError::Malformed(DecodeError::UnexpectedEnd {
                needed: 2,
                remaining: 1,
            }),
            GossipError::InvalidSignature,
            GossipError::CommitMismatch,
        ];
        let labels: Vec<&str> = rulings
            .into_iter()
            .map(Validation::label)
            .chain([OVER_BUDGET_RESULT])
            .chain(refusals.iter().map(GossipError::label))
            .chain([UNKNOWN_TOPIC_RESULT])
            .collect();
        assert_eq!(labels, NetworkCounters::GOSSIP_RESULTS);
        assert!(distinct(&labels), "{labels:?}");
    }
}

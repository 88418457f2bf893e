//! Run real `Network`s in one process: each on its own loopback address, driven by a task that
//! accepts every gossip message, answers sync requests, forwards events to the test and runs the
//! test's commands; plus an in-memory kernel filter that records what it was told.
//!
//! # Design
//! - Every test takes its own `127.0.X.0/24` (`X` unique per test), so tests run in parallel.
//! - Outbound TCP dials on loopback leave from `127.0.0.1` whatever address the dialer listens
//!   on (libp2p binds a dial socket to `0.0.0.0:<listen port>`), so a node sees a peer at the
//!   peer's own address only on connections it dialled itself: tests that check a peer's
//!   address have the observer dial the peer.
//! - Waits are on events or on polled state, each with a deadline; no fixed sleeps.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use p2p::gossip::{Gossip, TopicKind};
use p2p::multiaddr::Protocol;
use p2p::network::RequestId;
use p2p::peers::{Ban, BanTarget};
use p2p::sync::{Status, SyncRequest, SyncResponse};
use p2p::{BanReason, KernelFilter, Multiaddr, Network, NetworkConfig, NetworkEvent, PeerId};
use storage::MemStore;
use tokio::sync::{mpsc, oneshot};
use types::{ChainId, Hash, SecretKey};

/// The TCP (and UDP) port every node listens on, each on its own address.
pub const PORT: u16 = 19_100;
/// The gossipsub heartbeat of every test node, in milliseconds.
pub const HEARTBEAT_MS: u64 = 100;
/// How often polled state is read again.
const POLL: Duration = Duration::from_millis(25);
/// What a node answers to a status request.
pub const STATUS: Status = Status {
    genesis: Hash([7; 32]),
    height: 0,
    tip: Hash([7; 32]),
};

/// One call the network made to its kernel filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelCall {
    /// `block(net, ttl, reason)`.
    Block {
        /// The net.
        net: IpNet,
        /// Its time to live.
        ttl: Duration,
        /// Why.
        reason: BanReason,
    },
    /// `unblock(net)`.
    Unblock(IpNet),
    /// `allow(net)`.
    Allow(IpNet),
}

/// A kernel filter that only records its calls; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct MockKernel {
    calls: Arc<Mutex<Vec<KernelCall>>>,
}

impl MockKernel {
    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<KernelCall> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The blocks of `net` so far.
    pub fn blocks_of(&self, net: IpNet) -> Vec<(Duration, BanReason)> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                KernelCall::Block {
                    net: n,
                    ttl,
                    reason,
                } if n == net => Some((ttl, reason)),
                _ => None,
            })
            .collect()
    }

    fn record(&self, call: KernelCall) -> Result<(), String> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(call);
        Ok(())
    }
}

impl KernelFilter for MockKernel {
    fn block(&mut self, net: IpNet, ttl: Duration, reason: BanReason) -> Result<(), String> {
        self.record(KernelCall::Block { net, ttl, reason })
    }

    fn unblock(&mut self, net: IpNet) -> Result<(), String> {
        self.record(KernelCall::Unblock(net))
    }

    fn allow(&mut self, net: IpNet) -> Result<(), String> {
        self.record(KernelCall::Allow(net))
    }
}

/// A [`NetworkEvent`] as the test sees it (the driver already answered what needs an answer).
#[derive(Debug, Clone)]
pub enum Event {
    /// A gossip message, accepted.
    Gossip {
        /// The peer that sent it.
        from: PeerId,
        /// The message.
        gossip: Gossip,
    },
    /// A sync request, answered with [`STATUS`] or no blocks.
    SyncRequest {
        /// The requester.
        peer: PeerId,
        /// Its request.
        request: SyncRequest,
    },
    /// The answer to one of our requests.
    SyncResponse {
        /// The peer.
        peer: PeerId,
        /// Our request.
        request: RequestId,
        /// Its answer.
        response: SyncResponse,
    },
    /// One of our requests failed.
    SyncFailed {
        /// The peer.
        peer: PeerId,
        /// Our request.
        request: RequestId,
    },
    /// First connection to a peer.
    Connected(PeerId),
    /// Last connection to a peer closed.
    Disconnected(PeerId),
    /// A ban was made.
    Banned(Ban),
    /// A ban ended.
    Unbanned(BanTarget),
}

type Command = Box<dyn FnOnce(&mut Network) + Send>;

/// A running network and what the test needs to observe and steer it.
pub struct Node {
    /// Its peer id.
    pub peer: PeerId,
    /// Its loopback address.
    pub ip: Ipv4Addr,
    /// Where it listens.
    pub listen: Multiaddr,
    /// Its store, to reopen it.
    pub store: Arc<MemStore>,
    /// Its kernel filter's record.
    pub kernel: MockKernel,
    /// Every event received so far, oldest first.
    pub history: Vec<Event>,
    pending: VecDeque<Event>,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    task: tokio::task::JoinHandle<()>,
}

/// `127.0.<net>.<host>`.
pub fn ip(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, host)
}

/// `/ip4/<ip>/tcp/<PORT>`.
pub fn tcp(ip: Ipv4Addr) -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(ip))
        .with(Protocol::Tcp(PORT))
}

/// `/ip4/<ip>/udp/<PORT>/quic-v1`.
pub fn quic(ip: Ipv4Addr) -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4(ip))
        .with(Protocol::Udp(PORT))
        .with(Protocol::QuicV1)
}

/// `ip/32`.
pub fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::from(std::net::IpAddr::V4(ip))
}

/// Settings for a test node on `ip`: TCP only, no Kademlia, a 100 ms heartbeat.
pub fn config(ip: Ipv4Addr) -> NetworkConfig {
    NetworkConfig {
        listen: vec![tcp(ip)],
        kademlia: false,
        heartbeat_ms: HEARTBEAT_MS,
        ..NetworkConfig::default()
    }
}

/// The test-chain key number `index` of this file's nodes (not validators) for `seed`.
pub fn node_key(seed: u64, index: u64) -> SecretKey {
    chain::testkit::derived_key(seed, "p2p-test-node", index)
}

/// The topic a gossip message came on.
pub fn kind_of(gossip: &Gossip) -> TopicKind {
    match gossip {
        Gossip::Transaction(_) => TopicKind::Transactions,
        Gossip::Consensus(_) => TopicKind::Consensus,
        Gossip::Block(_) => TopicKind::Blocks,
    }
}

impl Node {
    /// Starts a network with `key` on `ip` with `config`, over `store`.
    pub fn start(
        key: &SecretKey,
        chain: ChainId,
        ip: Ipv4Addr,
        store: Arc<MemStore>,
        config: NetworkConfig,
    ) -> Node {
        let kernel = MockKernel::default();
        let listen = config.listen.first().cloned().unwrap_or_else(|| tcp(ip));
        let mut network = Network::new(
            key,
            chain,
            store.clone(),
            config,
            Some(Box::new(kernel.clone())),
        )
        .expect("the network starts");
        let peer = network.local_peer_id();
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(command) => command(&mut network),
                        None => return,
                    },
                    event = network.next() => {
                        let event = drive(&mut network, event);
                        if event_tx.send(event).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Node {
            peer,
            ip,
            listen: listen.with(Protocol::P2p(peer)),
            store,
            kernel,
            history: Vec::new(),
            pending: VecDeque::new(),
            commands,
            events,
            task,
        }
    }

    /// Starts a network on a fresh store.
    pub fn fresh(key: &SecretKey, chain: ChainId, config: NetworkConfig) -> Node {
        let ip = config
            .listen
            .first()
            .and_then(|addr| {
                addr.iter().find_map(|p| match p {
                    Protocol::Ip4(ip) => Some(ip),
                    _ => None,
                })
            })
            .expect("a test node listens on an IPv4 address");
        Node::start(key, chain, ip, Arc::new(MemStore::new()), config)
    }

    /// Runs `f` on the network, between two events, and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Network) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Box::new(move |network: &mut Network| {
                let _ = tx.send(f(network));
            }))
            .expect("the driver runs");
        rx.await.expect("the driver answers")
    }

    /// Dials `addr`.
    pub async fn dial(&self, addr: Multiaddr) {
        self.call(move |n| n.dial(addr)).await;
    }

    /// Publishes `bytes` on `kind`; whether a peer could take them.
    pub async fn publish(&self, kind: TopicKind, bytes: Vec<u8>) -> bool {
        self.call(move |n| n.publish(kind, bytes)).await
    }

    /// Sends a sync request to `peer`.
    pub async fn request(&self, peer: PeerId, request: SyncRequest) -> RequestId {
        self.call(move |n| n.request(&peer, request)).await
    }

    /// The first event not yet taken that matches `what`, waiting up to `timeout` for one.
    pub async fn try_wait(
        &mut self,
        timeout: Duration,
        mut what: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        if let Some(i) = self.pending.iter().position(&mut what) {
            return self.pending.remove(i);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .ok()?
                .expect("the driver runs");
            self.history.push(event.clone());
            if what(&event) {
                return Some(event);
            }
            self.pending.push_back(event);
        }
    }

    /// Like [`Node::try_wait`], but a timeout fails the test, naming `label`.
    pub async fn wait(
        &mut self,
        timeout: Duration,
        label: &str,
        what: impl FnMut(&Event) -> bool,
    ) -> Event {
        match self.try_wait(timeout, what).await {
            Some(event) => event,
            None => panic!(
                "{} waited {timeout:?} for {label}; events so far: {:#?}",
                self.ip,
                self.history.iter().rev().take(20).collect::<Vec<_>>()
            ),
        }
    }

    /// Takes every event that arrived so far into the history (and leaves them untaken).
    pub fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.history.push(event.clone());
            self.pending.push_back(event);
        }
    }

    /// Polls `f` on the network until it returns `Some`, failing the test after `timeout`.
    pub async fn until<R: Send + 'static>(
        &self,
        timeout: Duration,
        label: &str,
        f: impl Fn(&mut Network) -> Option<R> + Send + Sync + Clone + 'static,
    ) -> R {
        let deadline = Instant::now() + timeout;
        loop {
            let g = f.clone();
            if let Some(r) = self.call(move |n| g(n)).await {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{} waited {timeout:?} for {label}",
                self.ip
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `peers` peers are on every topic.
    pub async fn until_topic_peers(&self, peers: usize) {
        self.until(Duration::from_secs(10), "topic peers", move |n| {
            TopicKind::ALL
                .iter()
                .all(|kind| n.topic_peers(*kind) >= peers)
                .then_some(())
        })
        .await;
    }

    /// The bans seen, oldest first.
    pub fn bans(&mut self) -> Vec<Ban> {
        self.drain();
        self.history
            .iter()
            .filter_map(|e| match e {
                Event::Banned(ban) => Some(ban.clone()),
                _ => None,
            })
            .collect()
    }

    /// Stops the network (its listeners close) and returns its store.
    pub async fn stop(self) -> Arc<MemStore> {
        self.task.abort();
        let _ = self.task.await;
        self.store
    }
}

/// `dialer` dials `listener`; waits until both see the connection.
pub async fn connect(dialer: &mut Node, listener: &mut Node) {
    dialer.dial(listener.listen.clone()).await;
    let (d, l) = (dialer.peer, listener.peer);
    let timeout = Duration::from_secs(10);
    dialer
        .wait(
            timeout,
            "the connection it dialled",
            |e| matches!(e, Event::Connected(p) if *p == l),
        )
        .await;
    listener
        .wait(
            timeout,
            "the connection dialled to it",
            |e| matches!(e, Event::Connected(p) if *p == d),
        )
        .await;
}

/// Accepts gossip and answers sync requests; returns what the test sees.
fn drive(network: &mut Network, event: NetworkEvent) -> Event {
    match event {
        NetworkEvent::Gossip { from, id, gossip } => {
            network.validated(&id, from, kind_of(&gossip), p2p::Validation::Accept);
            Event::Gossip { from, gossip }
        }
        NetworkEvent::SyncRequest {
            peer,
            request,
            channel,
        } => {
            let response = match request {
                SyncRequest::Status => SyncResponse::Status(STATUS),
                SyncRequest::Blocks { .. } => SyncResponse::Blocks(Vec::new()),
            };
            network.respond(channel, response);
            Event::SyncRequest { peer, request }
        }
        NetworkEvent::SyncResponse {
            peer,
            request,
            response,
        } => Event::SyncResponse {
            peer,
            request,
            response,
        },
        NetworkEvent::SyncFailed { peer, request } => Event::SyncFailed { peer, request },
        NetworkEvent::Connected(peer) => Event::Connected(peer),
        NetworkEvent::Disconnected(peer) => Event::Disconnected(peer),
        NetworkEvent::Banned(ban) => Event::Banned(ban),
        NetworkEvent::Unbanned(target) => Event::Unbanned(target),
    }
}

/// A bare gossipsub node, for attacks a [`Network`] refuses to make: it publishes on the chain's
/// topics with none of our size limits (1 MiB per message).
pub struct RawGossip {
    /// Its peer id.
    pub peer: PeerId,
    /// Where it listens.
    pub listen: Multiaddr,
    commands: mpsc::UnboundedSender<RawCommand>,
    task: tokio::task::JoinHandle<()>,
}

type RawSwarm = libp2p::Swarm<libp2p::gossipsub::Behaviour>;
type RawCommand = Box<dyn FnOnce(&mut RawSwarm) + Send>;

impl RawGossip {
    /// Largest message it sends, in bytes.
    pub const MAX_BYTES: usize = 1 << 20;

    /// Starts it with `key` on `ip`, subscribed to `chain`'s topics.
    pub fn start(key: &SecretKey, chain: &ChainId, ip: Ipv4Addr) -> RawGossip {
        use futures::StreamExt;
        use libp2p::gossipsub;

        let topics = p2p::gossip::Topics::new(chain);
        let config = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Anonymous)
            .heartbeat_interval(Duration::from_millis(100))
            .max_transmit_size(2 * Self::MAX_BYTES)
            .message_id_fn(|m: &gossipsub::Message| {
                use std::hash::{DefaultHasher, Hash as _, Hasher};
                let mut h = DefaultHasher::new();
                m.topic.as_str().hash(&mut h);
                m.data.hash(&mut h);
                gossipsub::MessageId::from(h.finish().to_be_bytes().to_vec())
            })
            .build()
            .expect("valid gossipsub config");
        let behaviour =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
                .expect("gossipsub behaviour");
        let keypair = p2p::keypair_of(key).expect("ed25519 key");
        let mut swarm: RawSwarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(move |_| behaviour)
            .expect("gossipsub behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for kind in TopicKind::ALL {
            swarm
                .behaviour_mut()
                .subscribe(topics.topic(kind))
                .expect("subscribes");
        }
        let listen = tcp(ip);
        swarm.listen_on(listen.clone()).expect("listens");
        let peer = *swarm.local_peer_id();
        let (commands, mut command_rx) = mpsc::unbounded_channel::<RawCommand>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(command) => command(&mut swarm),
                        None => return,
                    },
                    _ = swarm.select_next_some() => {}
                }
            }
        });
        RawGossip {
            peer,
            listen: listen.with(Protocol::P2p(peer)),
            commands,
            task,
        }
    }

    /// Runs `f` on the swarm and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RawSwarm) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Box::new(move |swarm: &mut RawSwarm| {
                let _ = tx.send(f(swarm));
            }))
            .expect("the driver runs");
        rx.await.expect("the driver answers")
    }

    /// Stops it.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

//! What the libp2p attacks share: the common options (`--netns`, `--duration`), the namespace and
//! runtime they run in, the genesis, and [`Peer`], a libp2p peer that behaves like an honest node
//! at genesis (it answers sync requests, accepts gossip) and re-dials its targets while not
//! connected, so that the only offence the targets see is the attack itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use p2p::network::{NetworkEvent, Validation, peer_of};
use p2p::sync::{Status, SyncRequest, SyncResponse};
use p2p::{Multiaddr, Network, NetworkConfig, PeerId};
use storage::MemStore;
use types::{Genesis, SecretKey};

/// Longest run of any attack.
pub const DURATION_MAX: Duration = Duration::from_secs(600);
/// While not connected, the target is re-dialled this often: once the attacker is banned, these
/// are the SYNs the kernel drops.
pub const REDIAL_EVERY: Duration = Duration::from_millis(500);
/// A progress line goes to stderr every this many units of an attack's work (messages published,
/// transactions replayed, dials settled).
pub const PROGRESS_EVERY: u64 = 10;

/// Options every attack takes.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Network namespace to run in (a name from `ip netns`); every socket is opened in it.
    #[arg(long)]
    pub netns: Option<String>,
    /// Stop after this long (at most 10 minutes).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
}

impl RunArgs {
    /// Checks the bounds.
    pub fn check(&self) -> Result<()> {
        if self.duration.is_zero() || self.duration > DURATION_MAX {
            bail!(
                "--duration {} is out of range: more than 0 and at most {}",
                humantime::format_duration(self.duration),
                humantime::format_duration(DURATION_MAX)
            );
        }
        Ok(())
    }

    /// Enters `--netns` (on the calling thread, before any other thread exists, so every thread
    /// and socket of the run is in it) and builds the single-threaded runtime the attack runs on.
    pub fn enter(&self) -> Result<tokio::runtime::Runtime> {
        if let Some(ns) = &self.netns {
            firewall::netns::enter(ns)?;
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    }
}

/// Options of the attacks that join the network as a peer.
#[derive(Args, Debug, Clone)]
pub struct PeerArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// The chain's genesis file (TOML): its chain id and hash.
    #[arg(long)]
    pub genesis: PathBuf,
    /// The validator to attack: `/ip4/IP/tcp/PORT[/p2p/PEERID]`.
    #[arg(long)]
    pub peer: Multiaddr,
}

impl PeerArgs {
    /// Checks the bounds and the address, and reads the genesis.
    pub fn load(&self) -> Result<Genesis> {
        self.run.check()?;
        if p2p::gate::ip_of(&self.peer).is_none() {
            bail!(
                "--peer {}: expected /ip4/IP/tcp/PORT[/p2p/PEERID]",
                self.peer
            );
        }
        read_genesis(&self.genesis)
    }
}

/// Checks that option `flag` is between 1 and `max`.
pub fn in_range(flag: &str, value: u64, max: u64) -> Result<()> {
    if value == 0 || value > max {
        bail!("{flag} {value} is out of range: 1 to {max}");
    }
    Ok(())
}

/// Reads and checks a genesis file, with the node's own rules.
pub fn read_genesis(path: &Path) -> Result<Genesis> {
    Ok(node::config::read_genesis(path)?.0)
}

/// Seconds since `started`, rounded to milliseconds (for the summary).
pub fn secs_since(started: Instant) -> f64 {
    (started.elapsed().as_millis() as f64) / 1000.0
}

/// A libp2p peer, honest in everything but what the attack sends.
pub struct Peer {
    /// The network (publish and request through it).
    pub network: Network,
    /// The key of the peer's identity (it also signs the attack's messages).
    pub key: SecretKey,
    /// The peers it dials, and re-dials while they are not connected.
    targets: Vec<Multiaddr>,
    /// The first target's peer id: from its address, or the first peer that connected.
    target_peer: Option<PeerId>,
    /// The status it answers with: a node at genesis.
    status: Status,
    started: Instant,
    last_dial: Instant,
    /// Connections opened to the targets.
    pub connections: u64,
    /// Dials made after the first, while not connected.
    pub redials: u64,
}

impl Peer {
    /// Starts the network with a fresh key and dials `target`. Must run inside the runtime.
    pub fn start(genesis: &Genesis, target: Multiaddr) -> Result<Peer> {
        Peer::start_with(SecretKey::generate(), genesis, vec![target])
    }

    /// Starts the network with the identity `key` and dials every one of `targets`. Must run
    /// inside the runtime.
    pub fn start_with(key: SecretKey, genesis: &Genesis, targets: Vec<Multiaddr>) -> Result<Peer> {
        let config = NetworkConfig {
            // Dialled here, on its own schedule, rather than as bootstrap peers.
            bootstrap: Vec::new(),
            kademlia: false,
            mdns: false,
            ..NetworkConfig::default()
        };
        let mut network = Network::new(
            &key,
            genesis.chain_id.clone(),
            Arc::new(MemStore::new()),
            config,
            None,
        )
        .context("starting the attacker's libp2p network")?;
        let started = Instant::now();
        let list: Vec<String> = targets.iter().map(Multiaddr::to_string).collect();
        eprintln!(
            "attacker peer {} dialling {}",
            network.local_peer_id(),
            list.join(", ")
        );
        for target in &targets {
            network.dial(target.clone());
        }
        let hash = genesis.hash();
        Ok(Peer {
            network,
            key,
            target_peer: targets.first().and_then(peer_of),
            targets,
            // Peers ask every node they meet for its status: a node at genesis is never synced
            // from.
            status: Status {
                genesis: hash,
                height: 0,
                tip: hash,
            },
            started,
            last_dial: started,
            connections: 0,
            redials: 0,
        })
    }

    /// The first target's peer id: from its address, or the first peer that connected.
    pub fn target_peer(&self) -> Option<PeerId> {
        self.target_peer
    }

    /// Whether the first target is connected.
    pub fn connected(&self) -> bool {
        match self.target_peer {
            Some(peer) => self.network.connected_peers().contains(&peer),
            None => false,
        }
    }

    /// Seconds since the start, for progress lines.
    pub fn secs(&self) -> f64 {
        secs_since(self.started)
    }

    /// Whether `target` needs a dial: its peer id (from its address) is not connected, or, for
    /// an address without one, the first target is not connected.
    fn lost(&self, target: &Multiaddr, connected: &[PeerId]) -> bool {
        match peer_of(target) {
            Some(peer) => !connected.contains(&peer),
            None => !self.connected(),
        }
    }

    /// Re-dials the targets that are not connected, when the last dial is [`REDIAL_EVERY`] old.
    pub fn redial_if_lost(&mut self) {
        if self.last_dial.elapsed() < REDIAL_EVERY {
            return;
        }
        let connected = self.network.connected_peers();
        let lost: Vec<Multiaddr> = self
            .targets
            .iter()
            .filter(|target| self.lost(target, &connected))
            .cloned()
            .collect();
        if lost.is_empty() {
            return;
        }
        self.last_dial = Instant::now();
        for target in lost {
            self.redials += 1;
            self.network.dial(target);
        }
    }

    /// Handles what an honest node would: accepts gossip, answers sync requests like a node at
    /// genesis, counts connections. Returns the events the attack may care about: the gossip
    /// (already accepted), connections, sync answers, failures, bans.
    pub fn handle(&mut self, event: NetworkEvent) -> Option<NetworkEvent> {
        match event {
            NetworkEvent::Gossip { from, id, gossip } => {
                self.network
                    .validated(&id, from, gossip.kind(), Validation::Accept);
                Some(NetworkEvent::Gossip { from, id, gossip })
            }
            NetworkEvent::SyncRequest {
                request, channel, ..
            } => {
                let response = match request {
                    SyncRequest::Status => SyncResponse::Status(self.status),
                    SyncRequest::Blocks { .. } => SyncResponse::Blocks(Vec::new()),
                };
                self.network.respond(channel, response);
                None
            }
            NetworkEvent::Connected(peer) => {
                if self.target_peer.is_none() {
                    self.target_peer = Some(peer);
                }
                self.connections += 1;
                eprintln!("{:.3}s: connected to {peer}", self.secs());
                Some(NetworkEvent::Connected(peer))
            }
            NetworkEvent::Disconnected(peer) => {
                eprintln!("{:.3}s: disconnected from {peer}", self.secs());
                Some(NetworkEvent::Disconnected(peer))
            }
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(duration: Duration) -> RunArgs {
        RunArgs {
            netns: None,
            duration,
        }
    }

    #[test]
    fn durations_are_bounded() {
        assert!(run_args(Duration::from_secs(10)).check().is_ok());
        assert!(run_args(DURATION_MAX).check().is_ok());
        assert!(run_args(Duration::ZERO).check().is_err());
        assert!(
            run_args(DURATION_MAX + Duration::from_secs(1))
                .check()
                .is_err()
        );
    }

    #[test]
    fn a_missing_or_invalid_genesis_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.toml");
        let e = read_genesis(&missing).expect_err("no file");
        assert!(format!("{e:#}").contains("cannot read the genesis file"));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "chain_id = 5").expect("write");
        let e = read_genesis(&bad).expect_err("not a genesis");
        assert!(format!("{e:#}").contains("is invalid"));
    }

    #[test]
    fn a_peer_address_needs_an_ip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let args = PeerArgs {
            run: run_args(Duration::from_secs(1)),
            genesis: dir.path().join("missing.toml"),
            peer: "/dns4/example.org/tcp/9000".parse().expect("multiaddr"),
        };
        let e = args.load().expect_err("no IP");
        assert!(format!("{e:#}").contains("expected /ip4/IP/tcp/PORT"));
    }
}

//! The node's network: a libp2p swarm (TCP + Noise + Yamux, and QUIC; identify; Kademlia and
//! mDNS discovery), gossip topics for transactions, consensus messages and final blocks, a
//! request-response protocol for block sync, connection limits, and the peer manager that turns
//! what the node learns about peers into bans enforced by libp2p and by the kernel blocklist.
//!
//! No chain logic lives here: relays check size, encoding and signatures ([`gossip::check`]);
//! the application rules on the rest and answers with [`Validation`].

pub mod clock;
pub mod config;
pub mod gate;
pub mod gossip;
pub mod network;
pub mod peers;
pub mod sync;

use std::time::Duration;

use ipnet::IpNet;
use thiserror::Error;

pub use config::{ConnectionLimits, NetworkConfig, SyncLimits};
pub use firewall_common::BanReason;
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use network::{Connection, Network, NetworkCounters, NetworkEvent, Validation};

/// The kernel blocklist, as the network sees it. The node implements it over the pinned XDP
/// maps; tests implement it in memory.
pub trait KernelFilter: Send {
    /// Blocks `net` for `ttl` (the entry stops matching by itself when it expires).
    fn block(&mut self, net: IpNet, ttl: Duration, reason: BanReason) -> Result<(), String>;
    /// Removes a block this network made.
    fn unblock(&mut self, net: IpNet) -> Result<(), String>;
    /// Allowlists `net`: the filter lets it through before any other rule.
    fn allow(&mut self, net: IpNet) -> Result<(), String>;
}

/// Why the network could not start.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The node key could not become a libp2p identity.
    #[error("node identity: {0}")]
    Identity(String),
    /// A transport could not be built.
    #[error("transport: {0}")]
    Transport(String),
    /// A listen address could not be used.
    #[error("cannot listen on {0}")]
    Listen(String),
    /// Gossipsub refused its configuration or a subscription.
    #[error("gossipsub: {0}")]
    Gossipsub(String),
    /// mDNS could not start (no multicast socket).
    #[error("mDNS: {0}")]
    Mdns(String),
    /// Persisted bans could not be read or written.
    #[error("peer store: {0}")]
    Peers(#[from] peers::PeerError),
}

impl From<String> for NetworkError {
    fn from(e: String) -> Self {
        NetworkError::Gossipsub(e)
    }
}

/// The libp2p identity of a node key (the same Ed25519 key signs consensus messages).
pub fn keypair_of(key: &types::SecretKey) -> Result<libp2p::identity::Keypair, NetworkError> {
    libp2p::identity::Keypair::ed25519_from_bytes(key.seed())
        .map_err(|e| NetworkError::Identity(e.to_string()))
}

/// The peer id of a node key.
pub fn peer_id_of(key: &types::SecretKey) -> Result<PeerId, NetworkError> {
    Ok(keypair_of(key)?.public().to_peer_id())
}

/// Whether a net is a single address (/32 or /128).
pub fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

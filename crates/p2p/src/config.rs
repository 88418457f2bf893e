//! Network settings. Every bound is a field with its unit and a default that suits a validator.

use libp2p::Multiaddr;

use crate::peers::PeerManagerConfig;

/// How the node joins and uses the network.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Addresses to listen on: TCP (`/ip4/0.0.0.0/tcp/9000`) and QUIC
    /// (`/ip4/0.0.0.0/udp/9000/quic-v1`) multiaddrs.
    pub listen: Vec<Multiaddr>,
    /// Peers dialled at start and re-dialled while not connected (`/ip4/…/tcp/…[/p2p/<id>]`).
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers through a Kademlia DHT seeded by the bootstrap peers.
    pub kademlia: bool,
    /// Find peers on the local network by multicast DNS.
    pub mdns: bool,
    /// Connection limits.
    pub limits: ConnectionLimits,
    /// Block-sync limits.
    pub sync: SyncLimits,
    /// Gossip messages per second one peer may send (all topics together) before the excess is
    /// ignored and reported as spam.
    pub gossip_msgs_per_sec: u32,
    /// Burst of that budget, in messages.
    pub gossip_burst: u32,
    /// Gossipsub heartbeat, in milliseconds.
    pub heartbeat_ms: u64,
    /// A connection with no protocol in use is closed after this many milliseconds.
    pub idle_timeout_ms: u64,
    /// Scores and bans.
    pub peers: PeerManagerConfig,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            kademlia: true,
            mdns: false,
            limits: ConnectionLimits::default(),
            sync: SyncLimits::default(),
            gossip_msgs_per_sec: 2000,
            gossip_burst: 4000,
            heartbeat_ms: 700,
            idle_timeout_ms: 60_000,
            peers: PeerManagerConfig::default(),
        }
    }
}

/// Connection limits. Allowlisted validator addresses count toward the totals but not toward
/// the per-address and per-subnet limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Established connections, both directions.
    pub max_established: u32,
    /// Inbound connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Established connections to one peer.
    pub max_per_peer: u32,
    /// Connections (pending and established) from one IP address.
    pub max_per_ip: u32,
    /// Connections from one IPv4 /24.
    pub max_per_v4_24: u32,
    /// Connections from one IPv6 /56.
    pub max_per_v6_56: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_established: 128,
            max_pending_incoming: 32,
            max_per_peer: 2,
            max_per_ip: 4,
            max_per_v4_24: 16,
            max_per_v6_56: 16,
        }
    }
}

/// What block sync serves and asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncLimits {
    /// Requests per second one peer may make.
    pub requests_per_sec: u32,
    /// Burst of that budget, in requests.
    pub request_burst: u32,
    /// Most blocks in one response.
    pub max_blocks_per_request: u32,
    /// Most bytes in one response (the server stops adding blocks before this).
    pub max_response_bytes: usize,
    /// An unanswered request fails after this many milliseconds.
    pub request_timeout_ms: u64,
    /// How often the node asks its peers for their status, in milliseconds.
    pub status_interval_ms: u64,
}

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            requests_per_sec: 20,
            request_burst: 40,
            max_blocks_per_request: 32,
            max_response_bytes: 16 * 1024 * 1024,
            request_timeout_ms: 10_000,
            status_interval_ms: 2_000,
        }
    }
}

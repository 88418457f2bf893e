//! The connection gate: a libp2p behaviour that refuses banned peers and addresses and enforces
//! the connection limits. An inbound connection from a banned address, or one over the limits
//! of its address or subnet, is refused before its handshake starts; a banned peer id is refused
//! once the handshake reveals it, and its open connections are closed when the ban is made.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};

use crate::clock::now_ms;
use crate::config::ConnectionLimits;

/// Which rule refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The peer or its address is banned.
    Banned,
    /// Too many connections from the address.
    PerIp,
    /// Too many connections from the address's /24 or /56.
    PerSubnet,
    /// Too many connections to the peer.
    PerPeer,
    /// Too many inbound handshakes at once.
    Pending,
    /// Too many connections in all.
    Total,
}

impl Refusal {
    /// Every rule, in code order.
    pub const ALL: [Refusal; 6] = [
        Refusal::Banned,
        Refusal::PerIp,
        Refusal::PerSubnet,
        Refusal::PerPeer,
        Refusal::Pending,
        Refusal::Total,
    ];

    /// A stable label for metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Refusal::Banned => "banned",
            Refusal::PerIp => "per_ip",
            Refusal::PerSubnet => "per_subnet",
            Refusal::PerPeer => "per_peer",
            Refusal::Pending => "pending",
            Refusal::Total => "total",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection refused: {}", self.name())
    }
}

impl std::error::Error for Refusal {}

/// A refused connection, reported to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The rule.
    pub refusal: Refusal,
    /// The remote IP, when the address has one.
    pub addr: Option<IpAddr>,
    /// The peer, once known.
    pub peer: Option<PeerId>,
    /// Inbound (true) or outbound.
    pub inbound: bool,
}

/// The IP of a multiaddr (`/ip4/…` or `/ip6/…` first component).
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// The /24 or /56 an address belongs to.
pub fn subnet_of(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(ip) => IpNet::V4(Ipv4Net::new(ip, 24).unwrap_or_default().trunc()),
        IpAddr::V6(ip) => IpNet::V6(Ipv6Net::new(ip, 56).unwrap_or_default().trunc()),
    }
}

/// The gate's state.
#[derive(Debug)]
pub struct Gate {
    limits: ConnectionLimits,
    allowlist: Vec<IpNet>,
    pending: HashMap<ConnectionId, Option<IpAddr>>,
    established: HashMap<ConnectionId, (PeerId, Option<IpAddr>)>,
    per_peer: HashMap<PeerId, HashSet<ConnectionId>>,
    per_ip: HashMap<IpAddr, u32>,
    per_subnet: HashMap<IpNet, u32>,
    banned_peers: HashMap<PeerId, u64>,
    banned_hosts: HashMap<IpAddr, u64>,
    banned_nets: Vec<(IpNet, u64)>,
    actions: VecDeque<ToSwarm<Refused, Infallible>>,
}

impl Gate {
    /// A gate with these limits; allowlisted addresses skip the per-address and per-subnet
    /// limits and are never refused as banned.
    pub fn new(limits: ConnectionLimits, allowlist: Vec<IpNet>) -> Gate {
        Gate {
            limits,
            allowlist,
            pending: HashMap::new(),
            established: HashMap::new(),
            per_peer: HashMap::new(),
            per_ip: HashMap::new(),
            per_subnet: HashMap::new(),
            banned_peers: HashMap::new(),
            banned_hosts: HashMap::new(),
            banned_nets: Vec::new(),
            actions: VecDeque::new(),
        }
    }

    /// Whether `ip` is an allowlisted validator address.
    pub fn is_allowlisted(&self, ip: IpAddr) -> bool {
        self.allowlist.iter().any(|net| net.contains(&ip))
    }

    /// Adds a net to the allowlist.
    pub fn allow(&mut self, net: IpNet) {
        if !self.allowlist.contains(&net) {
            self.allowlist.push(net);
        }
    }

    /// Refuses `peer` until `until_ms` (UNIX ms) and closes its connections now.
    pub fn ban_peer(&mut self, peer: PeerId, until_ms: u64) {
        self.banned_peers.insert(peer, until_ms);
        if self.per_peer.contains_key(&peer) {
            self.actions.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
        }
    }

    /// Refuses connections from `net` until `until_ms` and closes the open ones from it.
    pub fn ban_net(&mut self, net: IpNet, until_ms: u64) {
        let net = net.trunc();
        if crate::is_host(&net) {
            self.banned_hosts.insert(net.addr(), until_ms);
        } else {
            self.banned_nets.retain(|(n, _)| *n != net);
            self.banned_nets.push((net, until_ms));
        }
        let peers: HashSet<PeerId> = self
            .established
            .values()
            .filter(|(_, ip)| ip.is_some_and(|ip| net.contains(&ip)))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in peers {
            self.actions.push_back(ToSwarm::CloseConnection {
                peer_id: peer,
                connection: CloseConnection::All,
            });
        }
    }

    /// Lifts a peer ban.
    pub fn unban_peer(&mut self, peer: &PeerId) {
        self.banned_peers.remove(peer);
    }

    /// Lifts an address ban.
    pub fn unban_net(&mut self, net: IpNet) {
        let net = net.trunc();
        if crate::is_host(&net) {
            self.banned_hosts.remove(&net.addr());
        } else {
            self.banned_nets.retain(|(n, _)| *n != net);
        }
    }

    /// Whether `peer` is banned now.
    pub fn is_peer_banned(&self, peer: &PeerId) -> bool {
        self.banned_peers
            .get(peer)
            .is_some_and(|until| *until > now_ms())
    }

    /// Whether `ip` is banned now.
    pub fn is_ip_banned(&self, ip: IpAddr) -> bool {
        if self.is_allowlisted(ip) {
            return false;
        }
        let now = now_ms();
        self.banned_hosts.get(&ip).is_some_and(|until| *until > now)
            || self
                .banned_nets
                .iter()
                .any(|(net, until)| *until > now && net.contains(&ip))
    }

    /// Established connections.
    pub fn established(&self) -> usize {
        self.established.len()
    }

    /// Inbound connections in their handshake.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn refuse(
        &mut self,
        refusal: Refusal,
        addr: Option<IpAddr>,
        peer: Option<PeerId>,
        inbound: bool,
    ) -> ConnectionDenied {
        self.actions.push_back(ToSwarm::GenerateEvent(Refused {
            refusal,
            addr,
            peer,
            inbound,
        }));
        ConnectionDenied::new(refusal)
    }

    /// Checks the per-address and per-subnet limits for one more connection from `ip`.
    fn address_limits(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.is_ip_banned(ip) {
            return Err(Refusal::Banned);
        }
        if self.is_allowlisted(ip) {
            return Ok(());
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_per_ip {
            return Err(Refusal::PerIp);
        }
        let subnet_max = match ip {
            IpAddr::V4(_) => self.limits.max_per_v4_24,
            IpAddr::V6(_) => self.limits.max_per_v6_56,
        };
        if self.per_subnet.get(&subnet_of(ip)).copied().unwrap_or(0) >= subnet_max {
            return Err(Refusal::PerSubnet);
        }
        Ok(())
    }

    fn count(&mut self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
            *self.per_subnet.entry(subnet_of(ip)).or_default() += 1;
        }
    }

    fn uncount(&mut self, ip: Option<IpAddr>) {
        let Some(ip) = ip else { return };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        let subnet = subnet_of(ip);
        if let Some(n) = self.per_subnet.get_mut(&subnet) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_subnet.remove(&subnet);
            }
        }
    }

    /// Drops a connection that failed before it was established.
    fn forget(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            self.uncount(ip);
        }
        if let Some((peer, ip)) = self.established.remove(&id) {
            self.uncount(ip);
            if let Some(set) = self.per_peer.get_mut(&peer) {
                set.remove(&id);
                if set.is_empty() {
                    self.per_peer.remove(&peer);
                }
            }
        }
    }

    /// Checks a connection whose peer is now known (both directions).
    fn check_established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        ip: Option<IpAddr>,
        inbound: bool,
    ) -> Result<(), ConnectionDenied> {
        let spared = ip.is_some_and(|ip| self.is_allowlisted(ip));
        if self.is_peer_banned(&peer) && !spared {
            return Err(self.refuse(Refusal::Banned, ip, Some(peer), inbound));
        }
        if self.established.len() >= self.limits.max_established as usize {
            return Err(self.refuse(Refusal::Total, ip, Some(peer), inbound));
        }
        let to_peer = self.per_peer.get(&peer).map_or(0, HashSet::len);
        if to_peer >= self.limits.max_per_peer as usize {
            return Err(self.refuse(Refusal::PerPeer, ip, Some(peer), inbound));
        }
        if !inbound && let Some(ip) = ip {
            // Inbound connections were counted per address when they arrived.
            if let Err(refusal) = self.address_limits(ip) {
                return Err(self.refuse(refusal, Some(ip), Some(peer), inbound));
            }
            self.count(Some(ip));
        }
        self.established.insert(id, (peer, ip));
        self.per_peer.entry(peer).or_default().insert(id);
        Ok(())
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Refused;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let ip = ip_of(remote);
        if let Some(ip) = ip
            && let Err(refusal) = self.address_limits(ip)
        {
            return Err(self.refuse(refusal, Some(ip), None, true));
        }
        if self.pending.len() >= self.limits.max_pending_incoming as usize {
            return Err(self.refuse(Refusal::Pending, ip, None, true));
        }
        self.pending.insert(id, ip);
        self.count(ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let ip = self.pending.remove(&id).unwrap_or_else(|| ip_of(remote));
        if let Err(denied) = self.check_established(id, peer, ip, true) {
            self.uncount(ip);
            return Err(denied);
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        if let Some(peer) = peer
            && self.is_peer_banned(&peer)
        {
            return Err(self.refuse(Refusal::Banned, None, Some(peer), false));
        }
        Ok(Vec::new())
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_established(id, peer, ip_of(addr), false)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some((_, ip)) = self.established.remove(&connection_id) {
                    self.uncount(ip);
                }
                if let Some(set) = self.per_peer.get_mut(&peer_id) {
                    set.remove(&connection_id);
                    if set.is_empty() {
                        self.per_peer.remove(&peer_id);
                    }
                }
            }
            // A connection refused by another behaviour after this gate let it through, or one
            // whose handshake failed, ends in a failure event instead of `ConnectionClosed`.
            FromSwarm::ListenFailure(failure) => self.forget(failure.connection_id),
            FromSwarm::DialFailure(failure) => self.forget(failure.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Refused, THandlerInEvent<Self>>> {
        match self.actions.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn all_lists_every_rule_once_with_a_name_of_its_own() {
        let every = [
            Refusal::Banned,
            Refusal::PerIp,
            Refusal::PerSubnet,
            Refusal::PerPeer,
            Refusal::Pending,
            Refusal::Total,
        ];
        assert_eq!(every, Refusal::ALL);
        let names: BTreeSet<&str> = every.into_iter().map(Refusal::name).collect();
        assert_eq!(names.len(), every.len(), "no name twice");
    }
}

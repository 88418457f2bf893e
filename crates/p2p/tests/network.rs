//! Real networks in one process, over loopback TCP and QUIC: honest traffic flows unpunished,
//! each kind of misbehaviour ends in a ban enforced by libp2p and by the (mock) kernel filter,
//! bans expire and survive a restart, and allowlisted validators are never banned.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use chain::testkit::TestChain;
use common::{Event, KernelCall, Node, RawGossip, connect, host, ip, node_key};
use consensus::ConsensusMessage;
use consensus::message::{BlockPart, MAX_PART_BYTES, SignedPart};
use p2p::clock::now_ms;
use p2p::gossip::{self, Gossip, GossipError, TopicKind};
use p2p::peers::{Ban, BanTarget};
use p2p::sync::{Refusal, SyncRequest, SyncResponse};
use p2p::{BanReason, NetworkConfig, PeerId, SyncLimits};
use types::{ChainId, Decode, Domain, Encode, Hash, SignedVote, Vote, VoteKind};

/// Longest wait for something that takes a few round trips.
const SHORT: Duration = Duration::from_secs(10);
/// Longest an attacker keeps at it before the test gives up on the ban.
const ATTACK: Duration = Duration::from_secs(12);
/// Pause between two messages of an attacker.
const ATTACK_PACE: Duration = Duration::from_millis(50);
/// A ban long enough to outlast any test.
const LONG_BAN_MS: u64 = 60_000;

fn test_chain(seed: u64) -> TestChain {
    TestChain::new(4, 2, seed)
}

fn chain_id(test: &TestChain) -> ChainId {
    test.genesis.chain_id.clone()
}

/// A valid transfer, unique per `nonce`.
fn tx(test: &TestChain, nonce: u64) -> Vec<u8> {
    test.transfer(0, 1, nonce, 5).to_bytes()
}

/// A transfer whose signature's last bit is flipped.
fn forged_tx(test: &TestChain, nonce: u64) -> Vec<u8> {
    let mut bytes = tx(test, nonce);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bytes
}

/// A prevote of validator `validator` at `height` for the block `[block; 32]`, validly signed.
fn vote(test: &TestChain, validator: usize, height: u64, block: u8) -> Vec<u8> {
    let key = &test.validators[validator];
    let vote = Vote {
        height,
        round: 0,
        kind: VoteKind::Prevote,
        block: Some(Hash([block; 32])),
        validator: key.public_key(),
    };
    let signature = key.sign(Domain::Vote, &chain_id(test), &vote);
    ConsensusMessage::Vote(SignedVote { vote, signature }).to_bytes()
}

/// The encoding of a delivered message.
fn bytes_of(gossip: &Gossip) -> Vec<u8> {
    match gossip {
        Gossip::Transaction(tx) => tx.to_bytes(),
        Gossip::Consensus(message) => message.to_bytes(),
        Gossip::Block(block) => block.to_bytes(),
    }
}

/// Whether `e` delivers `bytes` from `from`.
fn is_gossip(e: &Event, from: PeerId, bytes: &[u8]) -> bool {
    matches!(e, Event::Gossip { from: f, gossip } if *f == from && bytes_of(gossip) == bytes)
}

fn is_ban(e: &Event) -> bool {
    matches!(e, Event::Banned(_))
}

/// An attacker and a victim that dialled it (so the victim sees the attacker's own address,
/// and re-dials it, which a ban must refuse too), connected and sharing the gossip topics; the
/// victim's bans last [`LONG_BAN_MS`].
async fn attacker_and_victim(net: u8, test: &TestChain) -> (Node, Node, Ipv4Addr) {
    let attacker_ip = ip(net, 2);
    let attacker = Node::fresh(
        &node_key(net.into(), 2),
        chain_id(test),
        common::config(attacker_ip),
    );
    let mut config = common::config(ip(net, 1));
    config.peers.ban_base_ms = LONG_BAN_MS;
    config.bootstrap = vec![attacker.listen.clone()];
    let mut victim = Node::fresh(&node_key(net.into(), 1), chain_id(test), config);
    let a = attacker.peer;
    victim
        .wait(
            SHORT,
            "the attacker",
            |e| matches!(e, Event::Connected(p) if *p == a),
        )
        .await;
    attacker.until_topic_peers(1).await;
    (attacker, victim, attacker_ip)
}

/// `attacker` gossips transactions with forged signatures until `victim` has seen `reports` of
/// them; fails if the victim bans anyone meanwhile or [`ATTACK`] passes.
async fn forge_until_seen_unbanned(
    victim: &mut Node,
    attacker: &Node,
    test: &TestChain,
    reports: u64,
) {
    let deadline = tokio::time::Instant::now() + ATTACK;
    let mut i = 0;
    loop {
        let seen = victim
            .call(|n| {
                n.counters()
                    .gossip
                    .get(&("tx", "invalid_signature"))
                    .copied()
                    .unwrap_or(0)
            })
            .await;
        if seen >= reports {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim saw {seen} invalid signatures in {ATTACK:?}"
        );
        attacker
            .publish(TopicKind::Transactions, forged_tx(test, i))
            .await;
        i += 1;
        assert!(victim.try_wait(ATTACK_PACE, is_ban).await.is_none());
    }
}

/// `victim`'s score of `peer` now.
async fn score(victim: &Node, peer: PeerId) -> f64 {
    victim.call(move |n| n.peers().score(&peer, now_ms())).await
}

/// `attacker` publishes `message(0)`, `message(1)`, ... on `kind` every [`ATTACK_PACE`] until
/// `victim` bans someone or [`ATTACK`] passes.
async fn gossip_until_banned(
    victim: &mut Node,
    attacker: &Node,
    kind: TopicKind,
    mut message: impl FnMut(u64) -> Vec<u8>,
) -> Option<Ban> {
    let deadline = tokio::time::Instant::now() + ATTACK;
    let mut i = 0;
    while tokio::time::Instant::now() < deadline {
        attacker.publish(kind, message(i)).await;
        i += 1;
        if let Some(Event::Banned(ban)) = victim.try_wait(ATTACK_PACE, is_ban).await {
            return Some(ban);
        }
    }
    None
}

/// The ban, or a failure that says what the victim did see of the attacker.
async fn expect_ban(victim: &mut Node, attacker: PeerId, ban: Option<Ban>, what: &str) -> Ban {
    match ban {
        Some(ban) => ban,
        None => {
            let (counters, explained, peer_counters) = victim
                .call(move |n| {
                    (
                        n.counters().clone(),
                        n.peers().explain_peer(&attacker, now_ms()),
                        n.peers().counters().clone(),
                    )
                })
                .await;
            victim.drain();
            let seen: Vec<_> = victim
                .history
                .iter()
                .filter(|e| !matches!(e, Event::Gossip { .. }))
                .collect();
            panic!(
                "no ban after {ATTACK:?} of {what}\nvictim counters: {counters:#?}\n\
                 attacker standing: {explained:#?}\npeer manager: {peer_counters:#?}\n\
                 events: {seen:#?}"
            )
        }
    }
}

/// Asserts that `victim`, which banned `attacker`, dropped it, refuses it when it dials in, and
/// never showed it as connected after the ban.
async fn assert_redial_refused(victim: &mut Node, attacker: &Node) {
    let peer = attacker.peer;
    victim
        .until(SHORT, "the attacker gone", move |n| {
            (!n.connected_peers().contains(&peer)).then_some(())
        })
        .await;
    let before = victim
        .call(|n| n.counters().refused.get("banned").copied().unwrap_or(0))
        .await;
    attacker.dial(victim.listen.clone()).await;
    victim
        .until(SHORT, "the re-dial refused as banned", move |n| {
            let now = n.counters().refused.get("banned").copied().unwrap_or(0);
            (now > before).then_some(())
        })
        .await;
    let connected = victim
        .call(move |n| n.connected_peers().contains(&peer))
        .await;
    assert!(!connected, "the banned attacker is connected");
    victim.drain();
    let banned_at = victim
        .history
        .iter()
        .position(is_ban)
        .expect("a ban was seen");
    let back: Vec<_> = victim.history[banned_at..]
        .iter()
        .filter(|e| matches!(e, Event::Connected(p) if *p == peer))
        .collect();
    assert!(back.is_empty(), "the banned attacker came back: {back:?}");
}

/// Asserts that the kernel got `net` blocked for the ban's duration (± 1 s), for `reason`.
fn assert_kernel_block(victim: &Node, net: ipnet::IpNet, ban: &Ban) {
    let blocks = victim.kernel.blocks_of(net);
    let duration = Duration::from_millis(ban.until_ms - ban.since_ms);
    assert!(
        blocks.iter().any(|(ttl, reason)| *reason == ban.reason
            && ttl.abs_diff(duration) <= Duration::from_secs(1)),
        "kernel blocks of {net}: {blocks:?}, expected {duration:?} for {:?}; all calls: {:?}",
        ban.reason,
        victim.kernel.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_traffic_is_never_penalized() {
    const NET: u8 = 20;
    const TXS: u64 = 100;
    const VOTES: u64 = 50;
    let test = test_chain(NET.into());
    let mut nodes: Vec<Node> = (0..3u8)
        .map(|i| {
            Node::fresh(
                &node_key(NET.into(), i.into()),
                chain_id(&test),
                common::config(ip(NET, i + 1)),
            )
        })
        .collect();
    {
        let (a, rest) = nodes.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        connect(&mut a[0], &mut b[0]).await;
        connect(&mut a[0], &mut c[0]).await;
        connect(&mut b[0], &mut c[0]).await;
    }
    for node in &nodes {
        node.until_topic_peers(2).await;
    }

    let mut published = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let i = i as u64;
        let mut mine = Vec::new();
        for n in 0..TXS {
            let bytes = tx(&test, i * 1000 + n);
            assert!(node.publish(TopicKind::Transactions, bytes.clone()).await);
            mine.push(bytes);
        }
        for n in 0..VOTES {
            let bytes = vote(&test, i as usize, i * 1000 + n + 1, 1);
            assert!(node.publish(TopicKind::Consensus, bytes.clone()).await);
            mine.push(bytes);
        }
        published.push(mine);
    }
    let peers: Vec<PeerId> = nodes.iter().map(|n| n.peer).collect();
    for node in &nodes {
        for peer in peers.iter().filter(|p| **p != node.peer) {
            node.request(*peer, SyncRequest::Status).await;
        }
    }

    for (i, node) in nodes.iter_mut().enumerate() {
        let me = node.peer;
        let mut expected: std::collections::HashSet<Vec<u8>> = published
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, mine)| mine.iter().cloned())
            .collect();
        while !expected.is_empty() {
            let Event::Gossip { gossip, .. } = node
                .wait(SHORT, "every message of the others", |e| {
                    matches!(e, Event::Gossip { .. })
                })
                .await
            else {
                unreachable!()
            };
            assert!(
                expected.remove(&bytes_of(&gossip)),
                "delivered twice or never sent: {gossip:?}"
            );
        }
        for peer in peers.iter().filter(|p| **p != me) {
            node.wait(SHORT, "a status answer", |e| {
                matches!(e, Event::SyncResponse { peer: p, response: SyncResponse::Status(s), .. }
                    if p == peer && *s == common::STATUS)
            })
            .await;
            node.wait(SHORT, "a status request", |e| {
                matches!(e, Event::SyncRequest { peer: p, request } if p == peer
                    && *request == SyncRequest::Status)
            })
            .await;
        }
    }
    // Nothing signals the absence of a late penalty (a duplicate, a score decay): give any
    // three gossipsub heartbeats to land.
    tokio::time::sleep(Duration::from_millis(3 * common::HEARTBEAT_MS)).await;
    for node in nodes.iter_mut() {
        for peer in peers.iter().filter(|p| **p != node.peer) {
            let s = score(node, *peer).await;
            assert!(s >= 0.0, "{} scores {peer} {s}", node.ip);
        }
        let (counters, reports) = node
            .call(|n| (n.counters().clone(), n.peers().counters().reports.clone()))
            .await;
        assert!(reports.is_empty(), "{}: reports {reports:?}", node.ip);
        let results: Vec<_> = counters.gossip.keys().map(|(_, result)| *result).collect();
        assert!(results.iter().all(|r| *r == "accept"), "{counters:?}");
        assert_eq!(counters.bans, 0, "{}: {counters:?}", node.ip);
        assert_eq!(counters.disconnects, 0, "{}: {counters:?}", node.ip);
        assert_eq!(counters.refused.values().sum::<u64>(), 0, "{counters:?}");
        assert_eq!(counters.handshake_failures, 0, "{counters:?}");
        node.drain();
        let bad: Vec<_> = node
            .history
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::Banned(_) | Event::Disconnected(_) | Event::SyncFailed { .. }
                )
            })
            .collect();
        assert!(bad.is_empty(), "{}: {bad:?}", node.ip);
        assert!(node.kernel.calls().is_empty(), "{:?}", node.kernel.calls());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_signatures_get_the_sender_banned_in_libp2p_and_in_the_kernel() {
    const NET: u8 = 21;
    let test = test_chain(NET.into());
    assert_eq!(
        gossip::check(
            TopicKind::Transactions,
            &forged_tx(&test, 0),
            &chain_id(&test)
        ),
        Err(GossipError::InvalidSignature)
    );
    let (attacker, mut victim, attacker_ip) = attacker_and_victim(NET, &test).await;
    let a = attacker.peer;

    let ban = gossip_until_banned(&mut victim, &attacker, TopicKind::Transactions, |i| {
        forged_tx(&test, i)
    })
    .await;
    let ban = expect_ban(&mut victim, a, ban, "invalid signatures").await;
    assert_eq!(ban.reason, BanReason::InvalidSignature, "{ban:?}");
    assert_eq!(ban.target, BanTarget::Peer(a), "{ban:?}");
    assert!(ban.addresses.contains(&host(attacker_ip)), "{ban:?}");
    assert_eq!(ban.until_ms - ban.since_ms, LONG_BAN_MS, "{ban:?}");
    assert_kernel_block(&victim, host(attacker_ip), &ban);
    let counters = victim.call(|n| n.counters().clone()).await;
    assert_eq!(counters.bans, 1, "{counters:?}");
    assert!(counters.gossip.get(&("tx", "invalid_signature")).copied() >= Some(1));
    assert_redial_refused(&mut victim, &attacker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_the_sender_banned_as_malformed() {
    const NET: u8 = 22;
    let test = test_chain(NET.into());
    let garbage = |i: u64| {
        let mut bytes = vec![0xee; 24];
        bytes.extend_from_slice(&i.to_be_bytes());
        bytes
    };
    assert!(matches!(
        gossip::check(TopicKind::Transactions, &garbage(0), &chain_id(&test)),
        Err(GossipError::Malformed(_))
    ));
    let (attacker, mut victim, attacker_ip) = attacker_and_victim(NET, &test).await;
    let a = attacker.peer;

    let ban = gossip_until_banned(&mut victim, &attacker, TopicKind::Transactions, garbage).await;
    let ban = expect_ban(&mut victim, a, ban, "malformed messages").await;
    assert_eq!(ban.reason, BanReason::MalformedMessage, "{ban:?}");
    assert_eq!(ban.target, BanTarget::Peer(a), "{ban:?}");
    assert!(ban.addresses.contains(&host(attacker_ip)), "{ban:?}");
    assert_kernel_block(&victim, host(attacker_ip), &ban);
    assert_redial_refused(&mut victim, &attacker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_get_the_sender_banned_as_malformed() {
    const NET: u8 = 23;
    let test = test_chain(NET.into());
    let chain = chain_id(&test);
    let oversized = |i: u64| {
        let mut bytes = vec![0x5a; gossip::MAX_TX_MESSAGE_BYTES + 1];
        bytes[..8].copy_from_slice(&i.to_be_bytes());
        bytes
    };
    assert!(oversized(0).len() < RawGossip::MAX_BYTES);
    assert!(matches!(
        gossip::check(TopicKind::Transactions, &oversized(0), &chain),
        Err(GossipError::Oversized { .. })
    ));
    let attacker_ip = ip(NET, 2);
    let attacker = RawGossip::start(&node_key(NET.into(), 2), &chain, attacker_ip);
    let mut config = common::config(ip(NET, 1));
    config.peers.ban_base_ms = LONG_BAN_MS;
    config.bootstrap = vec![attacker.listen.clone()];
    let mut victim = Node::fresh(&node_key(NET.into(), 1), chain.clone(), config);
    let a = attacker.peer;
    victim
        .wait(
            SHORT,
            "the attacker",
            |e| matches!(e, Event::Connected(p) if *p == a),
        )
        .await;
    let topic = p2p::gossip::Topics::new(&chain)
        .topic(TopicKind::Transactions)
        .clone();
    {
        let deadline = tokio::time::Instant::now() + SHORT;
        let hash = topic.hash();
        while !attacker
            .call({
                let hash = hash.clone();
                move |s| s.behaviour().all_peers().any(|(_, t)| t.contains(&&hash))
            })
            .await
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the victim's topics"
            );
            tokio::time::sleep(ATTACK_PACE).await;
        }
    }

    let publish = |bytes: Vec<u8>| {
        let topic = topic.clone();
        attacker.call(move |s| s.behaviour_mut().publish(topic, bytes).is_ok())
    };
    // The channel works: a short malformed message reaches the victim's checks.
    assert!(publish(vec![0xee; 32]).await);
    victim
        .until(SHORT, "the short malformed message", |n| {
            n.counters().gossip.get(&("tx", "malformed")).copied()
        })
        .await;

    let deadline = tokio::time::Instant::now() + ATTACK;
    let (mut ban, mut published) = (None, 0);
    while tokio::time::Instant::now() < deadline {
        published += u64::from(publish(oversized(published)).await);
        if let Some(Event::Banned(b)) = victim.try_wait(ATTACK_PACE, is_ban).await {
            ban = Some(b);
            break;
        }
    }
    let what = format!("{published} oversized messages sent");
    let ban = expect_ban(&mut victim, a, ban, &what).await;
    assert_eq!(ban.reason, BanReason::MalformedMessage, "{ban:?}");
    assert_eq!(ban.target, BanTarget::Peer(a), "{ban:?}");
    assert!(ban.addresses.contains(&host(attacker_ip)), "{ban:?}");
    assert_kernel_block(&victim, host(attacker_ip), &ban);
    attacker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_address_is_refused_past_the_limit_then_banned() {
    const NET: u8 = 24;
    /// Connections opened at most.
    const MAX_CONNECTIONS: usize = 40;
    let test = test_chain(NET.into());
    let mut config = common::config(ip(NET, 1));
    config.peers.ban_base_ms = LONG_BAN_MS;
    let limit = config.limits.max_per_ip as usize;
    let mut victim = Node::fresh(&node_key(NET.into(), 1), chain_id(&test), config);
    let flooder = ip(NET, 99);
    let target = SocketAddr::new(IpAddr::V4(victim.ip), common::PORT);

    // Hold every connection open: the first `limit` stay in their handshake and fill the
    // address's slots; the rest are refused when they arrive.
    let mut held = Vec::new();
    let mut ban = None;
    while held.len() < MAX_CONNECTIONS {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(flooder), 0))
            .expect("binds to the flooder's address");
        held.push(socket.connect(target).await.expect("the kernel accepts"));
        if let Some(Event::Banned(b)) = victim.try_wait(Duration::from_millis(20), is_ban).await {
            ban = Some(b);
            break;
        }
    }
    let Some(ban) = ban else {
        let counters = victim.call(|n| n.counters().clone()).await;
        panic!("no ban after {} connections: {counters:#?}", held.len());
    };
    assert_eq!(ban.target, BanTarget::Address(host(flooder)), "{ban:?}");
    // Refusals past the per-IP limit, not failed handshakes, get the address banned.
    assert_eq!(ban.reason, BanReason::ConnectionFlood, "{ban:?}");
    assert_eq!(ban.addresses, vec![host(flooder)], "{ban:?}");
    assert_kernel_block(&victim, host(flooder), &ban);
    let counters = victim.call(|n| n.counters().clone()).await;
    let per_ip = counters.refused.get("per_ip").copied().unwrap_or(0);
    assert_eq!(per_ip as usize, held.len() - limit, "{counters:?}");

    // Once banned, the address is refused before the per-IP count.
    for _ in 0..3 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(flooder), 0))
            .expect("binds");
        held.push(socket.connect(target).await.expect("the kernel accepts"));
    }
    victim
        .until(SHORT, "three refusals as banned", |n| {
            (n.counters().refused.get("banned").copied().unwrap_or(0) >= 3).then_some(())
        })
        .await;
    assert_eq!(victim.bans().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_requests_over_budget_or_out_of_bounds_are_refused_and_end_in_a_ban() {
    const NET: u8 = 25;
    const BATCH: usize = 10;
    let test = test_chain(NET.into());
    let mut config = common::config(ip(NET, 1));
    config.peers.ban_base_ms = LONG_BAN_MS;
    config.sync = SyncLimits {
        requests_per_sec: 1,
        request_burst: 4,
        ..SyncLimits::default()
    };
    let max = config.sync.max_blocks_per_request;
    let mut victim = Node::fresh(&node_key(NET.into(), 1), chain_id(&test), config);
    let mut attacker = Node::fresh(
        &node_key(NET.into(), 2),
        chain_id(&test),
        common::config(ip(NET, 2)),
    );
    connect(&mut victim, &mut attacker).await;
    let v = victim.peer;

    // Within the budget: two good requests are served, two out of bounds are refused.
    let cases = [
        (SyncRequest::Status, SyncResponse::Status(common::STATUS)),
        (
            SyncRequest::Blocks { from: 1, count: 1 },
            SyncResponse::Blocks(Vec::new()),
        ),
        (
            SyncRequest::Blocks { from: 1, count: 0 },
            SyncResponse::Refused(Refusal::BadRequest),
        ),
        (
            SyncRequest::Blocks {
                from: 1,
                count: max + 1,
            },
            SyncResponse::Refused(Refusal::BadRequest),
        ),
    ];
    for (request, expected) in cases {
        let id = attacker.request(v, request.clone()).await;
        let got = attacker
            .wait(
                SHORT,
                "the answer",
                |e| matches!(e, Event::SyncResponse { request, .. } if *request == id),
            )
            .await;
        let Event::SyncResponse { response, .. } = got else {
            unreachable!()
        };
        assert_eq!(response, expected, "for {request:?}");
    }

    // Over the budget: refused, and the attacker (reconnecting when dropped) ends up banned.
    let deadline = tokio::time::Instant::now() + ATTACK;
    let (mut over_budget, mut ban) = (0, None);
    while ban.is_none() && tokio::time::Instant::now() < deadline {
        let connected = attacker
            .call(move |n| n.connected_peers().contains(&v))
            .await;
        if !connected {
            attacker.dial(victim.listen.clone()).await;
            attacker
                .try_wait(SHORT, |e| matches!(e, Event::Connected(p) if *p == v))
                .await;
        }
        let mut ids = Vec::new();
        for _ in 0..BATCH {
            ids.push(attacker.request(v, SyncRequest::Status).await);
        }
        while !ids.is_empty() {
            let Some(event) = attacker
                .try_wait(SHORT, |e| match e {
                    Event::SyncResponse { request, .. } | Event::SyncFailed { request, .. } => {
                        ids.contains(request)
                    }
                    _ => false,
                })
                .await
            else {
                panic!("the attacker's requests were neither answered nor failed");
            };
            match event {
                Event::SyncResponse {
                    request, response, ..
                } => {
                    if response == SyncResponse::Refused(Refusal::OverBudget) {
                        over_budget += 1;
                    }
                    ids.retain(|id| *id != request);
                }
                Event::SyncFailed { peer, request } => {
                    assert_eq!(peer, v);
                    ids.retain(|id| *id != request);
                }
                _ => unreachable!(),
            }
        }
        if let Some(Event::Banned(b)) = victim.try_wait(Duration::ZERO, is_ban).await {
            ban = Some(b);
        }
    }
    assert!(over_budget > 0, "no request was refused as over budget");
    let ban = expect_ban(&mut victim, attacker.peer, ban, "sync requests").await;
    assert_eq!(ban.reason, BanReason::SyncAbuse, "{ban:?}");
    assert_eq!(ban.target, BanTarget::Peer(attacker.peer), "{ban:?}");
    let counters = victim.call(|n| n.counters().clone()).await;
    assert_eq!(
        counters.sync_refused.get("bad_request"),
        Some(&2),
        "{counters:?}"
    );
    assert!(
        counters.sync_refused.get("over_budget").copied() >= Some(1),
        "{counters:?}"
    );
    for net in &ban.addresses {
        assert_kernel_block(&victim, *net, &ban);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_expire_and_the_peer_can_connect_again() {
    const NET: u8 = 26;
    const BAN_MS: u64 = 3_000;
    let test = test_chain(NET.into());
    let mut attacker = Node::fresh(
        &node_key(NET.into(), 2),
        chain_id(&test),
        common::config(ip(NET, 2)),
    );
    let mut config = common::config(ip(NET, 1));
    config.peers.ban_base_ms = BAN_MS;
    let mut victim = Node::fresh(&node_key(NET.into(), 1), chain_id(&test), config);
    connect(&mut victim, &mut attacker).await;
    let a = attacker.peer;

    let ban = victim
        .call(move |n| n.ban(BanTarget::Peer(a), BanReason::Manual, None, "test"))
        .await
        .expect("the ban is stored")
        .expect("the peer is not allowlisted");
    assert_eq!(ban.until_ms - ban.since_ms, BAN_MS);
    assert_eq!(ban.addresses, vec![host(attacker.ip)]);
    victim.wait(SHORT, "the ban event", is_ban).await;
    assert_kernel_block(&victim, host(attacker.ip), &ban);
    victim
        .wait(
            SHORT,
            "the attacker disconnected",
            |e| matches!(e, Event::Disconnected(p) if *p == a),
        )
        .await;

    victim
        .wait(
            SHORT,
            "the end of the ban",
            |e| matches!(e, Event::Unbanned(BanTarget::Peer(p)) if *p == a),
        )
        .await;
    assert!(now_ms() >= ban.until_ms, "unbanned early");
    assert!(
        victim
            .kernel
            .calls()
            .contains(&KernelCall::Unblock(host(attacker.ip))),
        "{:?}",
        victim.kernel.calls()
    );

    connect(&mut victim, &mut attacker).await;
    attacker.until_topic_peers(1).await;
    let bytes = tx(&test, 1);
    assert!(
        attacker
            .publish(TopicKind::Transactions, bytes.clone())
            .await
    );
    victim
        .wait(SHORT, "gossip from the unbanned peer", |e| {
            is_gossip(e, a, &bytes)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_persist_across_a_restart_with_the_same_end() {
    const NET: u8 = 27;
    let test = test_chain(NET.into());
    let victim_key = node_key(NET.into(), 1);
    let mut attacker = Node::fresh(
        &node_key(NET.into(), 2),
        chain_id(&test),
        common::config(ip(NET, 2)),
    );
    let mut victim = Node::fresh(&victim_key, chain_id(&test), common::config(ip(NET, 1)));
    connect(&mut victim, &mut attacker).await;
    let a = attacker.peer;
    let ban = victim
        .call(move |n| {
            n.ban(
                BanTarget::Peer(a),
                BanReason::Manual,
                Some(LONG_BAN_MS),
                "test",
            )
        })
        .await
        .expect("the ban is stored")
        .expect("the peer is not allowlisted");
    victim.wait(SHORT, "the ban event", is_ban).await;
    let store = victim.stop().await;

    let started = now_ms();
    let mut config = common::config(ip(NET, 1));
    config.bootstrap = vec![attacker.listen.clone()];
    let mut victim = Node::start(&victim_key, chain_id(&test), ip(NET, 1), store, config);
    let blocks = victim.kernel.blocks_of(host(attacker.ip));
    assert_eq!(blocks.len(), 1, "{:?}", victim.kernel.calls());
    let (ttl, reason) = blocks[0];
    assert_eq!(reason, BanReason::Manual);
    let until = started + ttl.as_millis() as u64;
    assert!(
        until.abs_diff(ban.until_ms) <= 1_000,
        "re-applied until {until}, banned until {}",
        ban.until_ms
    );
    let bans = victim.call(|n| n.peers().bans(now_ms())).await;
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].target, BanTarget::Peer(a));
    assert_eq!(bans[0].until_ms, ban.until_ms);

    // Both the victim's own dial (bootstrap) and the attacker's are refused.
    victim
        .until(SHORT, "its bootstrap dial refused", |n| {
            (n.counters().refused.get("banned").copied() >= Some(1)).then_some(())
        })
        .await;
    attacker.dial(victim.listen.clone()).await;
    victim
        .until(SHORT, "the attacker's dial refused", |n| {
            (n.counters().refused.get("banned").copied() >= Some(2)).then_some(())
        })
        .await;
    victim.drain();
    assert!(
        !victim
            .history
            .iter()
            .any(|e| matches!(e, Event::Connected(p) if *p == a)),
        "{:?}",
        victim.history
    );
    let connected = victim.call(|n| n.connected_peers()).await;
    assert!(connected.is_empty(), "{connected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlisted_addresses_are_never_banned() {
    const NET: u8 = 28;
    /// Invalid messages the victim must see: enough for a ban without the allowlist.
    const REPORTS: u64 = 8;
    let test = test_chain(NET.into());
    let attacker_ip = ip(NET, 2);
    let attacker = Node::fresh(
        &node_key(NET.into(), 2),
        chain_id(&test),
        common::config(attacker_ip),
    );
    let mut config = common::config(ip(NET, 1));
    config.peers.allowlist = vec![host(attacker_ip)];
    config.bootstrap = vec![attacker.listen.clone()];
    let mut victim = Node::fresh(&node_key(NET.into(), 1), chain_id(&test), config);
    assert_eq!(
        victim.kernel.calls(),
        vec![KernelCall::Allow(host(attacker_ip))]
    );
    let a = attacker.peer;
    victim
        .wait(
            SHORT,
            "the attacker",
            |e| matches!(e, Event::Connected(p) if *p == a),
        )
        .await;
    attacker.until_topic_peers(1).await;

    forge_until_seen_unbanned(&mut victim, &attacker, &test, REPORTS).await;
    let (counters, spared, connected) = victim
        .call(move |n| {
            (
                n.counters().clone(),
                n.peers().counters().allowlisted_spared,
                n.connected_peers().contains(&a),
            )
        })
        .await;
    assert!(victim.bans().is_empty());
    assert_eq!(counters.bans, 0, "{counters:?}");
    assert_eq!(counters.disconnects, 0, "{counters:?}");
    assert!(spared >= 1, "the peer manager spared nothing");
    assert!(connected, "the allowlisted attacker was disconnected");
    assert_eq!(
        victim.kernel.calls(),
        vec![KernelCall::Allow(host(attacker_ip))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_allowlisted_at_run_time_is_spared_and_let_through_the_kernel() {
    const NET: u8 = 32;
    /// Invalid messages the victim must see: enough for a ban without the allowlist.
    const REPORTS: u64 = 8;
    let test = test_chain(NET.into());
    let (attacker, mut victim, attacker_ip) = attacker_and_victim(NET, &test).await;
    let a = attacker.peer;
    // The victim dialled the attacker: one outbound connection, listed with its address.
    let connections = victim.call(|n| n.connections()).await;
    assert!(
        connections.iter().any(|c| c.peer == a
            && !c.inbound
            && p2p::gate::ip_of(&c.address) == Some(attacker_ip.into())),
        "{connections:?}"
    );
    let inbound = attacker.call(|n| n.connections()).await;
    assert!(inbound.iter().all(|c| c.inbound), "{inbound:?}");

    let net = host(attacker_ip);
    assert!(victim.call(move |n| n.allow(net)).await);
    assert!(!victim.call(move |n| n.allow(net)).await, "added twice");
    assert!(victim.kernel.calls().contains(&KernelCall::Allow(net)));

    forge_until_seen_unbanned(&mut victim, &attacker, &test, REPORTS).await;
    assert!(victim.bans().is_empty());
    let connected = victim.call(move |n| n.connected_peers().contains(&a)).await;
    assert!(connected, "the allowlisted attacker was disconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaying_a_validly_signed_equivocation_is_not_misbehaviour() {
    const NET: u8 = 29;
    let test = test_chain(NET.into());
    let key = |i| node_key(NET.into(), i);
    let mut relay = Node::fresh(&key(1), chain_id(&test), common::config(ip(NET, 1)));
    let mut middle = Node::fresh(&key(2), chain_id(&test), common::config(ip(NET, 2)));
    let mut last = Node::fresh(&key(3), chain_id(&test), common::config(ip(NET, 3)));
    // relay - middle - last: the middle relays the equivocation it received to the last.
    connect(&mut middle, &mut relay).await;
    connect(&mut last, &mut middle).await;
    relay.until_topic_peers(1).await;
    middle.until_topic_peers(2).await;
    last.until_topic_peers(1).await;

    let first = vote(&test, 0, 7, 1);
    let second = vote(&test, 0, 7, 2);
    assert_ne!(first, second);
    assert!(relay.publish(TopicKind::Consensus, first.clone()).await);
    assert!(relay.publish(TopicKind::Consensus, second.clone()).await);
    for node in [&mut middle, &mut last] {
        for bytes in [&first, &second] {
            node.wait(
                SHORT,
                "both votes",
                |e| matches!(e, Event::Gossip { gossip, .. } if bytes_of(gossip) == *bytes),
            )
            .await;
        }
    }
    for (node, peer) in [(&middle, relay.peer), (&last, middle.peer)] {
        let s = score(node, peer).await;
        assert!(s >= 0.0, "{} scores {peer} {s}", node.ip);
    }
    for node in [&mut relay, &mut middle, &mut last] {
        let counters = node.call(|n| n.counters().clone()).await;
        assert_eq!(counters.bans, 0, "{counters:?}");
        assert_eq!(counters.disconnects, 0, "{counters:?}");
        assert!(node.bans().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_and_gossip_over_quic() {
    const NET: u8 = 30;
    let test = test_chain(NET.into());
    let quic_config = |ip: Ipv4Addr| NetworkConfig {
        listen: vec![common::quic(ip)],
        ..common::config(ip)
    };
    let mut a = Node::fresh(
        &node_key(NET.into(), 1),
        chain_id(&test),
        quic_config(ip(NET, 1)),
    );
    let mut b = Node::fresh(
        &node_key(NET.into(), 2),
        chain_id(&test),
        quic_config(ip(NET, 2)),
    );
    connect(&mut a, &mut b).await;
    a.until_topic_peers(1).await;
    let bytes = tx(&test, 3);
    assert!(a.publish(TopicKind::Transactions, bytes.clone()).await);
    let from = a.peer;
    b.wait(SHORT, "the transaction over QUIC", |e| {
        is_gossip(e, from, &bytes)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_part_of_the_largest_size_is_delivered_without_penalty() {
    const NET: u8 = 31;
    let test = test_chain(NET.into());
    let chain = chain_id(&test);
    let mut a = Node::fresh(
        &node_key(NET.into(), 1),
        chain.clone(),
        common::config(ip(NET, 1)),
    );
    let mut b = Node::fresh(
        &node_key(NET.into(), 2),
        chain.clone(),
        common::config(ip(NET, 2)),
    );
    connect(&mut b, &mut a).await;
    a.until_topic_peers(1).await;

    // A part as large as the consensus engine cuts by default (`part_bytes` = 64 KiB).
    let proposer = &test.validators[0];
    let part = BlockPart {
        height: 1,
        round: 0,
        proposer: proposer.public_key(),
        block: Hash([3; 32]),
        index: 0,
        count: 2,
        bytes: vec![0xab; MAX_PART_BYTES],
    };
    let smaller = {
        let part = BlockPart {
            bytes: vec![0xcd; MAX_PART_BYTES - 128],
            ..part.clone()
        };
        let signature = proposer.sign(Domain::BlockPart, &chain, &part);
        ConsensusMessage::Part(SignedPart { part, signature }).to_bytes()
    };
    let signature = proposer.sign(Domain::BlockPart, &chain, &part);
    let bytes = ConsensusMessage::Part(SignedPart { part, signature }).to_bytes();
    // The largest consensus message the application can hand to the network.
    assert_eq!(bytes.len(), ConsensusMessage::MAX_BYTES);

    // For the diagnosis: a part a little under the largest size is delivered.
    assert!(a.publish(TopicKind::Consensus, smaller.clone()).await);
    let from = a.peer;
    b.wait(SHORT, "a part 128 bytes under the largest", |e| {
        is_gossip(e, from, &smaller)
    })
    .await;
    assert!(a.publish(TopicKind::Consensus, bytes.clone()).await);
    let delivered = b.try_wait(SHORT, |e| is_gossip(e, from, &bytes)).await;
    assert!(
        delivered.is_some(),
        "a full-size block part ({} bytes, the largest consensus message) was not delivered, \
         one 128 bytes smaller was; receiver's counters: {:?}",
        bytes.len(),
        b.call(|n| n.counters().clone()).await
    );
    assert!(score(&b, from).await >= 0.0);
}

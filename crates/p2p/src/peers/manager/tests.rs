//! Behaviour of the peer manager, in virtual time, against an in-memory store.

use std::net::{IpAddr, Ipv4Addr};

use storage::{Entry, MemStore, StoreError};

use super::*;
use crate::peers::testing::peer;
use crate::peers::{LOW_TOLERANCE_WEIGHT, MID_TOLERANCE_WEIGHT};

const MINUTE_MS: u64 = 60_000;
const BASE_MS: u64 = 10 * MINUTE_MS;
/// A start time far from 0, as a UNIX clock would be.
const T0: u64 = 1_700_000_000_000;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a valid address")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a valid net")
}

/// A distinct public IPv4 address for each `n`.
fn nth_ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n))
}

fn open_with(store: &Arc<MemStore>, config: PeerManagerConfig, now_ms: u64) -> PeerManager {
    let store: Arc<dyn Store> = store.clone();
    PeerManager::open(store, config, now_ms).expect("opens")
}

fn manager() -> (PeerManager, Arc<MemStore>) {
    let store = Arc::new(MemStore::new());
    (open_with(&store, PeerManagerConfig::default(), T0), store)
}

fn about_peer(peer: PeerId, addr: Option<IpAddr>, action: Action, reason: BanReason) -> Report {
    Report {
        peer: Some(peer),
        addr,
        action,
        source: Source::Gossip,
        reason,
    }
}

fn about_addr(addr: IpAddr, action: Action) -> Report {
    Report {
        peer: None,
        addr: Some(addr),
        action,
        source: Source::Connection,
        reason: BanReason::ConnectionFlood,
    }
}

fn fatal(peer: PeerId) -> Report {
    about_peer(peer, None, Action::Fatal, BanReason::InvalidSignature)
}

fn low(peer: PeerId) -> Report {
    about_peer(peer, None, Action::LowTolerance, BanReason::Spam)
}

/// The only decision, which must be a ban.
fn only_ban(decisions: Vec<Decision>) -> Ban {
    match <[Decision; 1]>::try_from(decisions) {
        Ok([Decision::Ban(ban)]) => ban,
        other => panic!("expected one ban, got {other:?}"),
    }
}

fn stored(store: &MemStore, col: Column) -> Vec<Entry> {
    store.scan(col, &[], usize::MAX).expect("memory store")
}

#[test]
fn honest_peers_with_no_reports_are_never_disconnected() {
    let (mut pm, _) = manager();
    for n in 0..100 {
        pm.connected(peer(n), nth_ip(n), T0);
    }
    for minute in 0..120 {
        assert_eq!(pm.expire(T0 + minute * MINUTE_MS), []);
    }
    for n in 0..100 {
        assert_eq!(pm.score(&peer(n), T0 + 2 * 60 * MINUTE_MS), 0.0);
        assert!(!pm.is_peer_banned(&peer(n), T0));
        pm.disconnected(peer(n), T0 + 2 * 60 * MINUTE_MS);
        assert_eq!(pm.explain_peer(&peer(n), T0), None);
    }
    assert!(pm.bans(T0).is_empty());
    assert_eq!(pm.counters().disconnects, 0);
}

#[test]
fn a_fatal_report_bans_at_once_with_the_peers_addresses() {
    let (mut pm, store) = manager();
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    pm.connected(peer(1), ip("2001:db8::7"), T0);
    let ban = only_ban(pm.report(fatal(peer(1)), T0));
    assert_eq!(ban.target, BanTarget::Peer(peer(1)));
    assert_eq!(
        ban.addresses,
        [net("198.51.100.7/32"), net("2001:db8::7/128")]
    );
    assert_eq!(ban.reason, BanReason::InvalidSignature);
    assert_eq!(ban.source, Source::Gossip);
    assert_eq!((ban.since_ms, ban.until_ms), (T0, T0 + BASE_MS));
    assert_eq!(ban.offence, 1);
    assert_eq!(
        ban.detail,
        "fatal invalid_signature from gossip after 1 reports: invalid_signature x1 from gossip"
    );
    assert!(pm.is_peer_banned(&peer(1), T0));
    assert!(pm.is_addr_banned(ip("198.51.100.7"), T0));
    assert!(pm.is_addr_banned(ip("2001:db8::7"), T0));
    assert!(!pm.is_addr_banned(ip("198.51.100.8"), T0));
    assert_eq!(pm.counters().bans.get("invalid_signature"), Some(&1));
    assert_eq!(stored(&store, Column::Bans).len(), 1);
}

#[test]
fn low_tolerance_reports_disconnect_first_then_ban() {
    let (mut pm, _) = manager();
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    assert_eq!(pm.report(low(peer(1)), T0), []);
    assert_eq!(
        pm.report(low(peer(1)), T0),
        [Decision::Disconnect {
            peer: peer(1),
            reason: BanReason::Spam
        }]
    );
    assert_eq!(pm.report(low(peer(1)), T0), []);
    assert_eq!(pm.report(low(peer(1)), T0), []);
    let ban = only_ban(pm.report(low(peer(1)), T0));
    assert_eq!(ban.reason, BanReason::Spam);
    assert_eq!(ban.addresses, [net("198.51.100.7/32")]);
    assert_eq!(
        ban.detail,
        "score -50.0 after 5 reports: spam x5 from gossip"
    );
    assert_eq!(pm.score(&peer(1), T0), 0.0, "the score resets after a ban");
    assert_eq!(pm.counters().disconnects, 1);
}

#[test]
fn disconnect_is_issued_again_only_after_the_score_recovers() {
    let (mut pm, _) = manager();
    let half_life = PeerManagerConfig::default().half_life_ms;
    pm.report(low(peer(1)), T0);
    assert_eq!(pm.report(low(peer(1)), T0).len(), 1);
    let mid = about_peer(peer(1), None, Action::MidTolerance, BanReason::SyncAbuse);
    assert_eq!(pm.report(mid, T0), [], "still under the threshold");
    let later = T0 + 2 * half_life;
    assert_eq!(
        pm.score(&peer(1), later),
        (2.0 * LOW_TOLERANCE_WEIGHT + MID_TOLERANCE_WEIGHT) / 4.0
    );
    assert_eq!(pm.report(low(peer(1)), later), []);
    assert_eq!(pm.report(low(peer(1)), later).len(), 1, "fell again");
    assert_eq!(pm.counters().disconnects, 2);
}

#[test]
fn reports_spaced_by_several_half_lives_never_ban() {
    let (mut pm, _) = manager();
    let spacing = 3 * PeerManagerConfig::default().half_life_ms;
    for n in 0..1000 {
        assert_eq!(pm.report(low(peer(1)), T0 + n * spacing), []);
    }
    assert!(pm.score(&peer(1), T0 + 999 * spacing) > -20.0);
    assert!(pm.bans(T0 + 999 * spacing).is_empty());
}

#[test]
fn a_second_ban_lasts_four_times_the_first_capped_at_the_maximum() {
    let (mut pm, _) = manager();
    let cap = PeerManagerConfig::default().ban_max_ms;
    let mut now = T0;
    let mut lengths = Vec::new();
    for _ in 0..7 {
        let ban = only_ban(pm.report(fatal(peer(1)), now));
        lengths.push((ban.offence, ban.until_ms - ban.since_ms));
        now = ban.until_ms;
        assert_eq!(pm.expire(now).len(), 1);
    }
    assert_eq!(
        lengths,
        [
            (1, BASE_MS),
            (2, 4 * BASE_MS),
            (3, 16 * BASE_MS),
            (4, 64 * BASE_MS),
            (5, cap),
            (6, cap),
            (7, cap),
        ]
    );
}

#[test]
fn offences_are_forgotten_after_the_offence_memory() {
    let (mut pm, store) = manager();
    let memory = PeerManagerConfig::default().offence_memory_ms;
    let first = only_ban(pm.report(fatal(peer(1)), T0));
    pm.expire(first.until_ms);
    assert_eq!(stored(&store, Column::Peers).len(), 1);
    pm.expire(T0 + memory);
    assert!(
        stored(&store, Column::Peers).is_empty(),
        "stale records are deleted"
    );
    let again = only_ban(pm.report(fatal(peer(1)), T0 + memory));
    assert_eq!(again.offence, 1);
    assert_eq!(again.until_ms - again.since_ms, BASE_MS);
}

#[test]
fn expire_returns_unban_at_until_ms_and_not_before() {
    let (mut pm, store) = manager();
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    let ban = only_ban(pm.report(fatal(peer(1)), T0));
    assert_eq!(pm.expire(ban.until_ms - 1), []);
    assert!(pm.is_peer_banned(&peer(1), ban.until_ms - 1));
    assert!(!pm.is_peer_banned(&peer(1), ban.until_ms));
    assert_eq!(
        pm.expire(ban.until_ms),
        [Decision::Unban {
            target: BanTarget::Peer(peer(1)),
            addresses: vec![net("198.51.100.7/32")]
        }]
    );
    assert_eq!(pm.expire(ban.until_ms + 1), []);
    assert!(stored(&store, Column::Bans).is_empty());
    assert_eq!(pm.counters().unbans.get("expired"), Some(&1));
}

#[test]
fn reopen_from_a_mem_store_gives_the_same_bans_and_escalation() {
    let (mut pm, store) = manager();
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    let peer_ban = only_ban(pm.report(fatal(peer(1)), T0));
    for _ in 0..5 {
        pm.report(about_addr(ip("203.0.113.5"), Action::LowTolerance), T0);
    }
    let manual = pm
        .ban(
            BanTarget::Address(net("192.0.2.0/24")),
            BanReason::Manual,
            Some(60 * MINUTE_MS),
            "lab attacker",
            T0,
        )
        .expect("persisted")
        .expect("not allowlisted");
    assert_eq!(manual.detail, "lab attacker");
    let before = pm.bans(T0 + 1);
    assert_eq!(before.len(), 3);

    let reopened = open_with(&store, PeerManagerConfig::default(), T0 + 1);
    assert_eq!(reopened.bans(T0 + 1), before);
    assert!(reopened.is_addr_banned(ip("192.0.2.200"), T0 + 1));

    // After the first two bans have ended, the next ban of each target is its second offence.
    let after = peer_ban.until_ms;
    let mut reopened_later = open_with(&store, PeerManagerConfig::default(), after);
    assert_eq!(
        reopened_later.bans(after),
        [manual],
        "expired bans are dropped"
    );
    let second = only_ban(reopened_later.report(fatal(peer(1)), after));
    assert_eq!((second.offence, second.until_ms - after), (2, 4 * BASE_MS));
    let explained = reopened_later
        .explain_addr(ip("203.0.113.5"), after)
        .expect("remembered");
    assert_eq!((explained.offences, explained.bans.len()), (1, 0));
}

#[test]
fn corrupt_records_are_skipped_and_counted() {
    let store = Arc::new(MemStore::new());
    let good = Ban {
        target: BanTarget::Peer(peer(1)),
        addresses: vec![net("198.51.100.7/32")],
        reason: BanReason::Spam,
        source: Source::Gossip,
        since_ms: T0,
        until_ms: T0 + BASE_MS,
        offence: 1,
        detail: String::new(),
    };
    let mut batch = WriteBatch::new();
    batch.put(
        Column::Bans,
        records::key(&good.target),
        records::encode_ban(&good),
    );
    // A valid key with a truncated value, a key that is no peer id, a bad offence record.
    let mut truncated = records::encode_ban(&good);
    truncated.pop();
    batch.put(
        Column::Bans,
        records::key(&BanTarget::Peer(peer(2))),
        truncated,
    );
    batch.put(
        Column::Bans,
        vec![1, 0xff, 0xff],
        records::encode_ban(&good),
    );
    batch.put(
        Column::Peers,
        records::key(&BanTarget::Peer(peer(3))),
        vec![0; 3],
    );
    // Records of other kinds in the same columns are not ours and are not read.
    batch.put(Column::Peers, peer(4).to_bytes(), b"address book".to_vec());
    store.write(batch).expect("memory store");

    let pm = open_with(&store, PeerManagerConfig::default(), T0);
    assert_eq!(pm.counters().corrupt_records, 3);
    assert_eq!(pm.bans(T0), [good]);
}

#[test]
fn allowlisted_peer_and_address_are_never_banned() {
    let store = Arc::new(MemStore::new());
    let config = PeerManagerConfig {
        allowlist: vec![net("10.0.0.0/24")],
        ..PeerManagerConfig::default()
    };
    let mut pm = open_with(&store, config, T0);
    pm.connected(peer(1), ip("10.0.0.5"), T0);
    assert_eq!(pm.report(fatal(peer(1)), T0), []);
    for _ in 0..10 {
        assert_eq!(pm.report(low(peer(1)), T0), []);
    }
    assert_eq!(pm.report(about_addr(ip("10.0.0.9"), Action::Fatal), T0), []);
    let refused = pm.ban(BanTarget::Peer(peer(1)), BanReason::Manual, None, "", T0);
    assert_eq!(refused.ok().flatten(), None);
    let refused = pm.ban(
        BanTarget::Address(net("10.0.0.128/25")),
        BanReason::Manual,
        None,
        "",
        T0,
    );
    assert_eq!(refused.ok().flatten(), None);
    assert!(pm.bans(T0).is_empty());
    // The fatal report, five disconnects, the address report and the two operator bans.
    assert_eq!(pm.counters().allowlisted_spared, 9);
    assert_eq!(pm.counters().disconnects, 0);

    // A wider ban covers the allowlist, yet never the allowlisted addresses.
    pm.ban(
        BanTarget::Address(net("10.0.0.0/16")),
        BanReason::Manual,
        None,
        "",
        T0,
    )
    .expect("persisted")
    .expect("not inside the allowlist");
    assert!(!pm.is_addr_banned(ip("10.0.0.5"), T0));
    assert!(pm.is_addr_banned(ip("10.0.1.5"), T0));
    assert!(
        pm.explain_addr(ip("10.0.0.5"), T0)
            .expect("known")
            .allowlisted
    );
}

#[test]
fn mixed_addresses_block_only_the_non_allowlisted() {
    let store = Arc::new(MemStore::new());
    let config = PeerManagerConfig {
        allowlist: vec![net("10.0.0.5/32")],
        ..PeerManagerConfig::default()
    };
    let mut pm = open_with(&store, config, T0);
    pm.connected(peer(1), ip("10.0.0.5"), T0);
    let report = about_peer(
        peer(1),
        Some(ip("198.51.100.7")),
        Action::Fatal,
        BanReason::MalformedMessage,
    );
    let ban = only_ban(pm.report(report, T0));
    assert_eq!(ban.addresses, [net("198.51.100.7/32")]);
    assert!(pm.is_peer_banned(&peer(1), T0));
    assert!(!pm.is_addr_banned(ip("10.0.0.5"), T0));
    assert!(pm.is_addr_banned(ip("198.51.100.7"), T0));
}

#[test]
fn three_peers_banned_from_one_ip_ban_the_ip() {
    let (mut pm, _) = manager();
    let shared = ip("203.0.113.9");
    let host = net("203.0.113.9/32");
    for n in 0..3 {
        pm.connected(peer(n), shared, T0);
    }
    let first = only_ban(pm.report(fatal(peer(0)), T0));
    // A repeat offender: its second ban lasts longer than a first address ban would.
    pm.expire(first.until_ms);
    pm.report(fatal(peer(0)), first.until_ms);
    let later = first.until_ms + MINUTE_MS;
    only_ban(pm.report(fatal(peer(1)), later));
    let decisions = pm.report(fatal(peer(2)), later);
    let [Decision::Ban(third), Decision::Ban(address)] = decisions.as_slice() else {
        panic!("expected the peer's ban then the address's, got {decisions:?}");
    };
    assert_eq!(third.target, BanTarget::Peer(peer(2)));
    assert_eq!(address.target, BanTarget::Address(host));
    assert_eq!(address.addresses, [host]);
    assert_eq!(address.offence, 1);
    let longest_peer_ban = first.until_ms + 4 * BASE_MS;
    assert_eq!(
        address.until_ms, longest_peer_ban,
        "outlives every peer ban"
    );
    assert!(
        address
            .detail
            .starts_with("3 peers banned from 203.0.113.9")
    );

    // The peers' bans end first and leave the address blocked.
    for unban in pm.expire(later + BASE_MS) {
        assert!(matches!(unban, Decision::Unban { ref addresses, .. } if addresses.is_empty()));
    }
    assert!(pm.is_addr_banned(shared, later + BASE_MS));
    assert_eq!(
        pm.expire(address.until_ms),
        [
            Decision::Unban {
                target: BanTarget::Peer(peer(0)),
                addresses: Vec::new()
            },
            Decision::Unban {
                target: BanTarget::Address(host),
                addresses: vec![host]
            }
        ]
    );
    // A fourth peer from the same IP, within the memory, brings the address ban back, escalated.
    pm.connected(peer(3), shared, address.until_ms);
    let decisions = pm.report(fatal(peer(3)), address.until_ms);
    assert!(matches!(decisions.as_slice(), [_, Decision::Ban(b)] if b.offence == 2));
}

#[test]
fn address_reports_ban_the_address_without_disconnects() {
    let (mut pm, _) = manager();
    let flooder = ip("198.51.100.200");
    for _ in 0..4 {
        assert_eq!(pm.report(about_addr(flooder, Action::LowTolerance), T0), []);
    }
    let ban = only_ban(pm.report(about_addr(flooder, Action::LowTolerance), T0));
    assert_eq!(ban.target, BanTarget::Address(net("198.51.100.200/32")));
    assert_eq!(ban.addresses, [net("198.51.100.200/32")]);
    assert_eq!(ban.reason, BanReason::ConnectionFlood);
    assert_eq!(ban.source, Source::Connection);
    assert!(pm.is_addr_banned(flooder, T0));
    let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 200).to_ipv6_mapped());
    assert!(
        pm.is_addr_banned(mapped, T0),
        "IPv4-mapped IPv6 is the same address"
    );
}

#[test]
fn reports_for_an_already_banned_peer_or_address_return_nothing() {
    let (mut pm, _) = manager();
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    only_ban(pm.report(fatal(peer(1)), T0));
    assert_eq!(pm.report(fatal(peer(1)), T0 + 1), []);
    assert_eq!(pm.report(low(peer(1)), T0 + 1), []);
    assert_eq!(
        pm.report(about_addr(ip("198.51.100.7"), Action::Fatal), T0 + 1),
        []
    );
    assert_eq!(pm.counters().reports_while_banned, 3);
    assert_eq!(
        pm.counters().reports.get(&("gossip", "invalid_signature")),
        Some(&2)
    );
    assert_eq!(pm.bans(T0 + 1).len(), 1);
}

#[test]
fn is_addr_banned_honours_a_slash_24_address_ban() {
    let (mut pm, _) = manager();
    let ban = pm
        .ban(
            BanTarget::Address(net("192.0.2.77/24")),
            BanReason::Manual,
            None,
            "subnet",
            T0,
        )
        .expect("persisted")
        .expect("not allowlisted");
    assert_eq!(ban.target, BanTarget::Address(net("192.0.2.0/24")));
    assert_eq!(ban.addresses, [net("192.0.2.0/24")]);
    assert!(pm.is_addr_banned(ip("192.0.2.1"), T0));
    assert!(pm.is_addr_banned(ip("192.0.2.255"), T0));
    assert!(pm.is_addr_banned(ip("::ffff:192.0.2.9"), T0));
    assert!(!pm.is_addr_banned(ip("192.0.3.1"), T0));
    assert!(!pm.is_addr_banned(ip("192.0.2.1"), T0 + BASE_MS));
    let why = pm.explain_addr(ip("192.0.2.1"), T0).expect("banned");
    assert_eq!(why.bans, [ban]);
}

#[test]
fn a_full_ban_table_replaces_the_ban_expiring_first() {
    let store = Arc::new(MemStore::new());
    let config = PeerManagerConfig {
        max_bans: 2,
        ..PeerManagerConfig::default()
    };
    let mut pm = open_with(&store, config, T0);
    pm.connected(peer(1), ip("198.51.100.1"), T0);
    only_ban(pm.report(fatal(peer(1)), T0));
    only_ban(pm.report(fatal(peer(2)), T0 + 1));
    let decisions = pm.report(fatal(peer(3)), T0 + 2);
    assert_eq!(decisions.len(), 2);
    assert_eq!(
        decisions[0],
        Decision::Unban {
            target: BanTarget::Peer(peer(1)),
            addresses: vec![net("198.51.100.1/32")]
        }
    );
    assert!(!pm.is_peer_banned(&peer(1), T0 + 2));
    assert_eq!(stored(&store, Column::Bans).len(), 2);
    assert_eq!(pm.counters().evictions.get("bans"), Some(&1));

    // An operator ban evicts too; its unban comes with the next expire.
    pm.ban(
        BanTarget::Peer(peer(4)),
        BanReason::Manual,
        None,
        "",
        T0 + 3,
    )
    .expect("persisted");
    assert_eq!(
        pm.expire(T0 + 3),
        [Decision::Unban {
            target: BanTarget::Peer(peer(2)),
            addresses: Vec::new()
        }]
    );
}

#[test]
fn operator_ban_and_unban_round_trip() {
    let (mut pm, store) = manager();
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    pm.report(low(peer(1)), T0);
    let ban = pm
        .ban(
            BanTarget::Peer(peer(1)),
            BanReason::Manual,
            Some(5 * MINUTE_MS),
            "asked\nby ops",
            T0,
        )
        .expect("persisted")
        .expect("not allowlisted");
    assert_eq!(ban.source, Source::Operator);
    assert_eq!(ban.detail, "asked by ops");
    assert_eq!(ban.until_ms, T0 + 5 * MINUTE_MS);
    assert_eq!(pm.score(&peer(1), T0), 0.0);

    // Banning again extends the ban and keeps the offence.
    let longer = pm
        .ban(
            BanTarget::Peer(peer(1)),
            BanReason::Spam,
            Some(BASE_MS),
            "",
            T0 + 1,
        )
        .expect("persisted")
        .expect("not allowlisted");
    assert_eq!((longer.offence, longer.until_ms), (1, T0 + 1 + BASE_MS));
    assert_eq!(pm.bans(T0 + 1).len(), 1);

    assert_eq!(
        pm.unban(&BanTarget::Peer(peer(1)), T0 + 2)
            .expect("persisted"),
        Some(Decision::Unban {
            target: BanTarget::Peer(peer(1)),
            addresses: vec![net("198.51.100.7/32")]
        })
    );
    assert!(!pm.is_peer_banned(&peer(1), T0 + 2));
    assert!(stored(&store, Column::Bans).is_empty());
    assert_eq!(
        pm.unban(&BanTarget::Peer(peer(1)), T0 + 2).expect("no-op"),
        None
    );
    assert_eq!(pm.counters().unbans.get("operator"), Some(&1));
}

/// A store that reads as empty and refuses every write.
struct FailingStore;

impl Store for FailingStore {
    fn get(&self, _: Column, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    fn get_at_or_before(&self, _: Column, _: &[u8]) -> Result<Option<Entry>, StoreError> {
        Ok(None)
    }
    fn scan(&self, _: Column, _: &[u8], _: usize) -> Result<Vec<Entry>, StoreError> {
        Ok(Vec::new())
    }
    fn last(&self, _: Column) -> Result<Option<Entry>, StoreError> {
        Ok(None)
    }
    fn write(&self, _: WriteBatch) -> Result<(), StoreError> {
        Err(StoreError::Corrupt {
            column: "bans",
            detail: "disk full (test)".into(),
        })
    }
}

#[test]
fn a_failing_store_fails_operator_bans_but_not_automatic_ones() {
    let mut pm =
        PeerManager::open(Arc::new(FailingStore), PeerManagerConfig::default(), T0).expect("opens");
    let err = pm.ban(BanTarget::Peer(peer(1)), BanReason::Manual, None, "", T0);
    assert!(matches!(err, Err(PeerError::Store { .. })));
    assert!(pm.bans(T0).is_empty(), "nothing changed");
    only_ban(pm.report(fatal(peer(2)), T0));
    assert!(pm.is_peer_banned(&peer(2), T0));
    assert_eq!(pm.counters().store_errors, 1);
    assert!(pm.unban(&BanTarget::Peer(peer(2)), T0).is_err());
    assert!(pm.is_peer_banned(&peer(2), T0));
}

#[test]
fn explain_peer_gives_score_reports_addresses_and_ban() {
    let (mut pm, _) = manager();
    assert_eq!(pm.explain_peer(&peer(1), T0), None);
    pm.connected(peer(1), ip("198.51.100.7"), T0);
    pm.report(low(peer(1)), T0);
    let why = pm.explain_peer(&peer(1), T0).expect("known");
    assert_eq!(why.score, LOW_TOLERANCE_WEIGHT);
    assert_eq!(why.reports.get(&("gossip", "spam")), Some(&1));
    assert_eq!(why.addresses, [ip("198.51.100.7")]);
    assert!(!why.allowlisted && why.bans.is_empty() && why.offences == 0);
    let ban = only_ban(pm.report(fatal(peer(1)), T0));
    let why = pm.explain_peer(&peer(1), T0).expect("known");
    assert_eq!((why.offences, why.bans), (1, vec![ban]));
}

#[test]
fn tables_stay_within_bounds_under_100k_distinct_peers_and_addresses() {
    let store = Arc::new(MemStore::new());
    let config = PeerManagerConfig {
        max_peers: 64,
        max_bans: 32,
        max_addresses_per_peer: 2,
        ..PeerManagerConfig::default()
    };
    let mut pm = open_with(&store, config.clone(), T0);
    for n in 0..100_000u32 {
        let now = T0 + u64::from(n);
        pm.connected(peer(n), nth_ip(n), now);
        pm.connected(peer(n), nth_ip(n + 1), now);
        pm.connected(peer(n), nth_ip(n + 2), now);
        let action = if n % 10 == 0 {
            Action::Fatal
        } else {
            Action::LowTolerance
        };
        pm.report(about_peer(peer(n), None, action, BanReason::Spam), now);
        pm.report(about_addr(nth_ip(200_000 + n), action), now);
        if n % 1000 == 0 {
            pm.expire(now);
        }
    }
    assert!(pm.peers.len() <= config.max_peers);
    assert!(pm.addrs.len() <= config.max_peers);
    assert!(pm.bans.len() <= config.max_bans);
    assert!(pm.offences.len() <= config.max_bans * OFFENDERS_PER_BAN);
    assert!(pm.pending.len() <= config.max_bans);
    assert!(pm.bans(T0).iter().all(|b| b.addresses.len() <= 2));
    assert!(stored(&store, Column::Bans).len() <= config.max_bans);
    assert!(stored(&store, Column::Peers).len() <= config.max_bans * OFFENDERS_PER_BAN);
    assert!(pm.counters().evictions.get("bans").is_some_and(|&n| n > 0));
    assert!(
        pm.counters()
            .evictions
            .get("peer_scores")
            .is_some_and(|&n| n > 0)
    );
}

#[test]
fn invalid_configs_are_refused() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    for config in [
        PeerManagerConfig {
            max_bans: 0,
            ..PeerManagerConfig::default()
        },
        PeerManagerConfig {
            ban_threshold: -10.0,
            ..PeerManagerConfig::default()
        },
        PeerManagerConfig {
            max_addresses_per_peer: 1000,
            ..PeerManagerConfig::default()
        },
    ] {
        assert!(matches!(
            PeerManager::open(store.clone(), config, T0),
            Err(PeerError::InvalidConfig { .. })
        ));
    }
}

#[test]
fn an_allowlist_entry_added_at_run_time_spares_its_address_and_the_list_is_bounded() {
    let (mut m, _store) = manager();
    let attacker = ip("10.9.0.7");
    assert!(m.allow(net("10.9.0.0/24")));
    assert!(!m.allow(net("10.9.0.0/24")), "added twice");
    assert!(m.is_allowlisted(attacker));
    assert!(
        m.report(about_addr(attacker, Action::Fatal), 1_000)
            .is_empty()
    );
    assert!(!m.is_addr_banned(attacker, 1_000));
    for i in m.allowlist().len()..crate::peers::MAX_ALLOWLIST {
        assert!(m.allow(IpNet::from(nth_ip(i as u32))));
    }
    assert!(!m.allow(net("192.0.2.1/32")), "beyond the bound");
    assert_eq!(m.allowlist().len(), crate::peers::MAX_ALLOWLIST);
}

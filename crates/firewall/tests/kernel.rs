//! The kernel program on crafted frames (BPF_PROG_TEST_RUN): every verdict branch with its
//! counter, and a differential test against the user-space reference model.

mod common;

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use common::{TestFilter, XDP_DROP, XDP_PASS, privileged};
use firewall::{
    BanReason, Mode, Policy, Reason, RuleSet, Verdict,
    clock::now_ns,
    frames::{Packet, Transport, quic_initial, tcp_flags},
    model::Model,
};
use firewall_common::BlockEntry;
use rand::{Rng, SeedableRng, rngs::SmallRng, seq::IndexedRandom};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn net(s: &str) -> ipnet::IpNet {
    firewall::rules::parse_net(s).expect("test CIDR")
}

const DST4: &str = "192.0.2.1";
const DST6: &str = "2001:db8::1";
const P2P: u16 = 9000;

fn udp4(src: &str, port: u16) -> Vec<u8> {
    Packet::udp(ip(src), ip(DST4), 40000, port, b"payload").build()
}

fn udp6(src: &str, port: u16) -> Vec<u8> {
    Packet::udp(ip(src), ip(DST6), 40000, port, b"payload").build()
}

#[test]
fn the_verifier_accepts_the_program_with_headroom() {
    if !privileged("verifier_headroom") {
        return;
    }
    let f = TestFilter::new("verifier");
    let processed = f
        .loaded
        .verified_instructions()
        .expect("this kernel reports verified instructions");
    eprintln!("verifier processed {processed} instructions");
    // The kernel's limit is 1,000,000; a program near it breaks on the next small change.
    assert!(
        processed < 250_000,
        "verifier processed {processed} instructions"
    );
}

#[test]
fn non_ip_frames_pass_and_are_counted_as_non_ip() {
    if !privileged("non_ip_frames_pass") {
        return;
    }
    let f = TestFilter::new("nonip");
    let mut arp = udp4("198.51.100.1", 1);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(f.run(&arp), (XDP_PASS, Verdict::Pass, Reason::NonIp));
    let mut unknown = Packet::udp(ip("198.51.100.1"), ip(DST4), 1, 2, b"").build();
    unknown[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    assert_eq!(f.run(&unknown), (XDP_PASS, Verdict::Pass, Reason::NonIp));
}

#[test]
fn ipv4_and_ipv6_blocklists_drop_exact_addresses_and_prefixes() {
    if !privileged("blocklists_drop") {
        return;
    }
    let mut f = TestFilter::new("block");
    for cidr in [
        "198.51.100.7",
        "203.0.113.0/24",
        "2001:db8:bad::1",
        "2001:db8:dead::/48",
    ] {
        f.maps
            .block(net(cidr), None, BanReason::Spam)
            .expect("block");
    }
    let dropped = (XDP_DROP, Verdict::Drop, Reason::Blocklisted);
    assert_eq!(f.run(&udp4("198.51.100.7", 1)), dropped);
    assert_eq!(f.run(&udp4("203.0.113.200", 1)), dropped);
    assert_eq!(f.run(&udp6("2001:db8:bad::1", 1)), dropped);
    assert_eq!(f.run(&udp6("2001:db8:dead:1::9", 1)), dropped);
    let passed = (XDP_PASS, Verdict::Pass, Reason::NoMatch);
    assert_eq!(f.run(&udp4("198.51.100.8", 1)), passed);
    assert_eq!(f.run(&udp6("2001:db8:bad::2", 1)), passed);
    // TCP and ICMP from a blocked source die too.
    let syn = Packet::tcp(ip("198.51.100.7"), ip(DST4), 1, 80, tcp_flags::SYN).build();
    assert_eq!(f.run(&syn), dropped);
    let echo = Packet::with(
        ip("203.0.113.5"),
        ip(DST4),
        Transport::Echo {
            payload: vec![0; 8],
        },
    );
    assert_eq!(f.run(&echo.build()), dropped);
    // Unblocking restores the flow.
    assert!(f.maps.unblock(net("198.51.100.7")).expect("unblock"));
    assert_eq!(f.run(&udp4("198.51.100.7", 1)), passed);
}

#[test]
fn allowlist_passes_at_once_even_when_blocked_or_over_budget() {
    if !privileged("allowlist_passes") {
        return;
    }
    let mut f = TestFilter::new("allow");
    let policy = Policy {
        pkt_rate_pps: 1,
        pkt_burst: 1,
        udp_ports: vec![P2P],
        drop_fragments: true,
        ..Policy::default()
    };
    f.maps.apply_policy(&policy).expect("policy");
    f.maps
        .block(net("10.9.0.0/16"), None, BanReason::Manual)
        .expect("block");
    f.maps.allow(net("10.9.8.0/24")).expect("allow");
    f.maps.allow(net("2001:db8:1::/64")).expect("allow v6");
    for _ in 0..5 {
        assert_eq!(
            f.run(&udp4("10.9.8.7", P2P)),
            (XDP_PASS, Verdict::Pass, Reason::Allowlisted)
        );
    }
    let mut frag = Packet::udp(ip("10.9.8.7"), ip(DST4), 1, P2P, b"x");
    frag.ipv4_fragment = Some((100, false));
    assert_eq!(f.run(&frag.build()).2, Reason::Allowlisted);
    assert_eq!(f.run(&udp6("2001:db8:1::5", P2P)).2, Reason::Allowlisted);
    assert_eq!(f.run(&udp4("10.9.7.7", P2P)).2, Reason::Blocklisted);
}

#[test]
fn expired_bans_stop_matching_before_any_sweep() {
    if !privileged("expired_bans") {
        return;
    }
    let mut f = TestFilter::new("expiry");
    f.maps
        .block(
            net("198.51.100.9"),
            Some(Duration::from_millis(300)),
            BanReason::Manual,
        )
        .expect("block");
    f.maps
        .block(
            net("203.0.113.0/24"),
            Some(Duration::from_millis(300)),
            BanReason::Manual,
        )
        .expect("block");
    f.maps
        .block(
            net("2001:db8:bad::1"),
            Some(Duration::from_millis(300)),
            BanReason::Manual,
        )
        .expect("block");
    assert_eq!(f.run(&udp4("198.51.100.9", 1)).2, Reason::Blocklisted);
    assert_eq!(f.run(&udp4("203.0.113.4", 1)).2, Reason::Blocklisted);
    assert_eq!(f.run(&udp6("2001:db8:bad::1", 1)).2, Reason::Blocklisted);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        f.run(&udp4("198.51.100.9", 1)),
        (XDP_PASS, Verdict::Pass, Reason::NoMatch)
    );
    assert_eq!(f.run(&udp4("203.0.113.4", 1)).2, Reason::NoMatch);
    assert_eq!(f.run(&udp6("2001:db8:bad::1", 1)).2, Reason::NoMatch);
    assert_eq!(
        f.maps.list().expect("list").len(),
        3,
        "expired entries stay until swept"
    );
    assert_eq!(f.maps.sweep().expect("sweep"), 3);
    assert!(f.maps.list().expect("list").is_empty());
}

#[test]
fn vlan_qinq_ipv4_options_and_ipv6_extension_headers_are_parsed() {
    if !privileged("vlan_options_ext") {
        return;
    }
    let mut f = TestFilter::new("parse");
    f.maps
        .block(net("198.51.100.7"), None, BanReason::Manual)
        .expect("block");
    f.maps
        .block(net("2001:db8:bad::1"), None, BanReason::Manual)
        .expect("block");
    let mut p = Packet::udp(ip("198.51.100.7"), ip(DST4), 1, 2, b"x");
    p.ipv4_options = vec![1, 1, 1, 1, 0x94, 4, 0, 0];
    for vlans in [vec![], vec![(0x8100, 5)], vec![(0x88a8, 7), (0x8100, 5)]] {
        p.vlans = vlans.clone();
        assert_eq!(f.run(&p.build()).2, Reason::Blocklisted, "vlans {vlans:?}");
    }
    let mut p6 = Packet::udp(ip("2001:db8:bad::1"), ip(DST6), 1, 2, b"x");
    p6.vlans = vec![(0x88a8, 7), (0x8100, 5)];
    p6.ipv6_ext = vec![
        (0, vec![1, 4, 0, 0, 0, 0]),
        (60, vec![1, 4, 0, 0, 0, 0]),
        (43, vec![0, 0, 0, 0, 0, 0]),
    ];
    assert_eq!(f.run(&p6.build()).2, Reason::Blocklisted);
    // Three VLAN tags: not parsed as IP (the stack would not take it as IP either).
    p.vlans = vec![(0x88a8, 1), (0x8100, 2), (0x8100, 3)];
    assert_eq!(f.run(&p.build()), (XDP_PASS, Verdict::Pass, Reason::NonIp));
    // More extension headers than the walk allows: malformed.
    let mut deep = Packet::udp(ip("2001:db8::9"), ip(DST6), 1, 2, b"x");
    deep.ipv6_ext = (0..7).map(|_| (60u8, vec![1, 4, 0, 0, 0, 0])).collect();
    assert_eq!(
        f.run(&deep.build()),
        (XDP_DROP, Verdict::Drop, Reason::Malformed)
    );
}

#[test]
fn frames_truncated_at_every_offset_are_malformed_or_non_ip() {
    if !privileged("truncated_frames") {
        return;
    }
    let f = TestFilter::new("trunc");
    let mut v4 = Packet::udp(ip("198.51.100.1"), ip(DST4), 1, 2, b"0123456789");
    v4.vlans = vec![(0x8100, 3)];
    v4.ipv4_options = vec![1, 1, 1, 1];
    let mut v6 = Packet::tcp(ip("2001:db8::5"), ip(DST6), 1, 2, tcp_flags::SYN);
    v6.ipv6_ext = vec![(0, vec![1, 4, 0, 0, 0, 0]), (44, vec![0, 0, 0, 0, 0, 1])];
    for frame in [v4.build(), v6.build()] {
        assert_eq!(f.run(&frame), (XDP_PASS, Verdict::Pass, Reason::NoMatch));
        for cut in 14..frame.len() {
            let (action, verdict, reason) = f.run(&frame[..cut]);
            assert_eq!(
                (action, verdict, reason),
                (XDP_DROP, Verdict::Drop, Reason::Malformed),
                "cut at {cut} of {}",
                frame.len()
            );
        }
    }
    // Inconsistent lengths: IPv4 total length below the header, IHL below 5, UDP length beyond
    // the packet.
    let good = udp4("198.51.100.1", 1);
    let mut bad_total = good.clone();
    bad_total[16..18].copy_from_slice(&10u16.to_be_bytes());
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let mut bad_udp = good.clone();
    bad_udp[38..40].copy_from_slice(&500u16.to_be_bytes());
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    for frame in [bad_total, bad_ihl, bad_udp, bad_version] {
        assert_eq!(f.run(&frame), (XDP_DROP, Verdict::Drop, Reason::Malformed));
    }
}

#[test]
fn fragments_are_dropped_only_when_the_policy_says_so() {
    if !privileged("fragments") {
        return;
    }
    let mut f = TestFilter::new("frag");
    let mut first = Packet::udp(ip("198.51.100.1"), ip(DST4), 1, P2P, b"x");
    first.ipv4_fragment = Some((0, true));
    let mut later = Packet::udp(ip("198.51.100.1"), ip(DST4), 1, P2P, b"x");
    later.ipv4_fragment = Some((185, false));
    let mut v6 = Packet::udp(ip("2001:db8::5"), ip(DST6), 1, P2P, b"x");
    v6.ipv6_ext = vec![(44, vec![0x05, 0x00, 0, 0, 0, 1])];
    let frames = [first.build(), later.build(), v6.build()];
    for frame in &frames {
        assert_eq!(f.run(frame), (XDP_PASS, Verdict::Pass, Reason::NoMatch));
    }
    let policy = Policy {
        drop_fragments: true,
        ..Policy::default()
    };
    f.maps.apply_policy(&policy).expect("policy");
    for frame in &frames {
        assert_eq!(f.run(frame), (XDP_DROP, Verdict::Drop, Reason::Fragment));
    }
}

#[test]
fn quic_initials_under_1200_bytes_are_dropped_on_the_quic_port_only() {
    if !privileged("quic_initials") {
        return;
    }
    let mut f = TestFilter::new("quic");
    let policy = Policy {
        quic_ports: vec![P2P],
        ..Policy::default()
    };
    f.maps.apply_policy(&policy).expect("policy");
    for (src, dst) in [
        (ip("198.51.100.1"), ip(DST4)),
        (ip("2001:db8::5"), ip(DST6)),
    ] {
        let short = Packet::udp(src, dst, 1, P2P, &quic_initial(1199)).build();
        assert_eq!(
            f.run(&short),
            (XDP_DROP, Verdict::Drop, Reason::QuicShortInitial)
        );
        let full = Packet::udp(src, dst, 1, P2P, &quic_initial(1200)).build();
        assert_eq!(f.run(&full).2, Reason::NoMatch);
        let other_port = Packet::udp(src, dst, 1, P2P + 1, &quic_initial(100)).build();
        assert_eq!(f.run(&other_port).2, Reason::NoMatch);
        let mut short_header = quic_initial(100);
        short_header[0] = 0x40;
        let short_header = Packet::udp(src, dst, 1, P2P, &short_header).build();
        assert_eq!(f.run(&short_header).2, Reason::NoMatch);
    }
}

#[test]
fn rate_limits_drop_bursts_over_budget_per_source_and_per_ipv6_64() {
    if !privileged("rate_limits") {
        return;
    }
    let mut f = TestFilter::new("rate");
    let policy = Policy {
        pkt_rate_pps: 1,
        pkt_burst: 5,
        syn_rate_pps: 1,
        syn_burst: 2,
        tcp_ports: vec![P2P],
        udp_ports: vec![P2P],
        ..Policy::default()
    };
    f.maps.apply_policy(&policy).expect("policy");
    let frame = udp4("198.51.100.1", P2P);
    for i in 0..5 {
        assert_eq!(
            f.run(&frame).2,
            Reason::NoMatch,
            "packet {i} within the burst"
        );
    }
    assert_eq!(
        f.run(&frame),
        (XDP_DROP, Verdict::Drop, Reason::RateLimited)
    );
    // Another source has its own budget; other ports are not limited.
    assert_eq!(f.run(&udp4("198.51.100.2", P2P)).2, Reason::NoMatch);
    assert_eq!(f.run(&udp4("198.51.100.1", P2P + 1)).2, Reason::NoMatch);
    // SYNs: a tighter budget.
    let syn = Packet::tcp(ip("198.51.100.3"), ip(DST4), 1, P2P, tcp_flags::SYN).build();
    assert_eq!(f.run(&syn).2, Reason::NoMatch);
    assert_eq!(f.run(&syn).2, Reason::NoMatch);
    assert_eq!(f.run(&syn), (XDP_DROP, Verdict::Drop, Reason::RateLimited));
    let ack = Packet::tcp(ip("198.51.100.3"), ip(DST4), 1, P2P, tcp_flags::ACK).build();
    assert_eq!(
        f.run(&ack).2,
        Reason::NoMatch,
        "established traffic is not a new connection"
    );
    // IPv6 sources share the budget of their /64.
    for i in 0..5 {
        let src = format!("2001:db8:0:1::{:x}", i + 1);
        assert_eq!(f.run(&udp6(&src, P2P)).2, Reason::NoMatch);
    }
    assert_eq!(f.run(&udp6("2001:db8:0:1::99", P2P)).2, Reason::RateLimited);
    assert_eq!(f.run(&udp6("2001:db8:0:2::1", P2P)).2, Reason::NoMatch);
}

#[test]
fn monitor_mode_counts_would_drop_and_passes_everything() {
    if !privileged("monitor_mode") {
        return;
    }
    let mut f = TestFilter::new("monitor");
    f.maps
        .block(net("198.51.100.7"), None, BanReason::Manual)
        .expect("block");
    f.maps.set_mode(Mode::Monitor).expect("mode");
    assert_eq!(
        f.run(&udp4("198.51.100.7", 1)),
        (XDP_PASS, Verdict::WouldDrop, Reason::Blocklisted)
    );
    assert_eq!(
        f.run(&udp4("198.51.100.7", 1)[..20]),
        (XDP_PASS, Verdict::WouldDrop, Reason::Malformed)
    );
    f.maps.set_mode(Mode::Enforce).expect("mode");
    assert_eq!(f.run(&udp4("198.51.100.7", 1)).0, XDP_DROP);
}

#[test]
fn drop_events_carry_source_reason_and_port_and_are_rate_bounded() {
    if !privileged("drop_events") {
        return;
    }
    let mut f = TestFilter::new("events");
    let policy = Policy {
        events_per_sec: 1,
        events_burst: 3,
        ..Policy::default()
    };
    f.maps.apply_policy(&policy).expect("policy");
    f.maps
        .block(net("198.51.100.7"), None, BanReason::Spam)
        .expect("block");
    let mut events = f.maps.events().expect("events");
    let frame = udp4("198.51.100.7", 4242);
    for _ in 0..50 {
        f.loaded.test_run(&frame).expect("run");
    }
    let got = events.poll(Duration::from_millis(200));
    // test_run may spread runs over CPUs; each CPU has its own budget of 3.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        !got.is_empty() && got.len() <= 3 * cpus,
        "{} events",
        got.len()
    );
    let e = got[0];
    assert_eq!(firewall::maps::event_addr(&e), ip("198.51.100.7"));
    assert_eq!(e.reason, Reason::Blocklisted as u32);
    assert_eq!(e.ban_reason, BanReason::Spam as u32);
    assert_eq!((e.dst_port, e.protocol, e.family), (4242, 17, 4));
    assert_eq!(e.verdict, Verdict::Drop as u8);
}

// ---- Differential test: kernel against the reference model ----

const SOURCES: [&str; 10] = [
    "198.51.100.1",
    "198.51.100.2",
    "198.51.100.77",
    "203.0.113.5",
    "203.0.113.200",
    "10.1.2.3",
    "2001:db8::1",
    "2001:db8::2",
    "2001:db8:bad::7",
    "2001:db8:bad:1::9",
];
const NETS: [&str; 10] = [
    "198.51.100.1",
    "198.51.100.0/24",
    "198.51.100.64/26",
    "203.0.113.0/24",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "2001:db8::1",
    "2001:db8:bad::/48",
    "2001:db8:bad::7",
    "2001:db8::/32",
];
const PORTS: [u16; 4] = [9000, 9001, 53, 443];

fn random_rules(rng: &mut SmallRng, now: u64) -> RuleSet {
    let mut set = RuleSet::default();
    for cidr in NETS {
        match rng.random_range(0..6) {
            0 => set.allow.push(net(cidr)),
            1 | 2 => {
                let expires_at_ns = match rng.random_range(0..3) {
                    0 => 0,
                    1 => now - 1_000_000_000,
                    _ => now + 3_600_000_000_000,
                };
                let entry = BlockEntry {
                    expires_at_ns,
                    created_at_ns: now,
                    reason: rng.random_range(1..9),
                    _pad: 0,
                };
                set.block.push((net(cidr), entry));
            }
            _ => {}
        }
    }
    set
}

fn random_policy(rng: &mut SmallRng) -> Policy {
    // A rate of 1/s refills less than one token during one rule set's run (well under a
    // second), so both sides decide the same whatever their clocks read.
    Policy {
        mode: if rng.random_bool(0.2) {
            Mode::Monitor
        } else {
            Mode::Enforce
        },
        drop_fragments: rng.random_bool(0.5),
        pkt_rate_pps: 1,
        pkt_burst: rng.random_range(1..40),
        syn_rate_pps: 1,
        syn_burst: rng.random_range(1..10),
        tcp_ports: vec![9000],
        udp_ports: vec![9001],
        quic_ports: vec![9000],
        ..Policy::default()
    }
}

fn random_packet(rng: &mut SmallRng) -> Packet {
    let src = ip(SOURCES.choose(rng).copied().unwrap_or("198.51.100.1"));
    let dst = if src.is_ipv4() { ip(DST4) } else { ip(DST6) };
    let port = *PORTS.choose(rng).unwrap_or(&9000);
    let transport = match rng.random_range(0..6) {
        0 => Transport::Tcp {
            src_port: rng.random(),
            dst_port: port,
            flags: [
                tcp_flags::SYN,
                tcp_flags::ACK,
                tcp_flags::SYN | tcp_flags::ACK,
                0,
            ][rng.random_range(0..4)],
            payload: vec![0; rng.random_range(0..20)],
        },
        1 => Transport::Udp {
            src_port: rng.random(),
            dst_port: port,
            payload: quic_initial(*[5, 100, 1199, 1200, 1300].choose(rng).unwrap_or(&100)),
        },
        2 => Transport::Echo {
            payload: vec![1; rng.random_range(0..16)],
        },
        3 => Transport::Raw {
            protocol: rng.random(),
            bytes: (0..rng.random_range(0..24)).map(|_| rng.random()).collect(),
        },
        _ => Transport::Udp {
            src_port: rng.random(),
            dst_port: port,
            payload: (0..rng.random_range(0..40)).map(|_| rng.random()).collect(),
        },
    };
    let mut p = Packet::with(src, dst, transport);
    p.vlans = match rng.random_range(0..6) {
        0 => vec![(0x8100, 1)],
        1 => vec![(0x88a8, 1), (0x8100, 2)],
        _ => vec![],
    };
    if src.is_ipv4() {
        if rng.random_bool(0.2) {
            p.ipv4_options = vec![1; rng.random_range(1..40)];
        }
        if rng.random_bool(0.15) {
            p.ipv4_fragment = Some((rng.random_range(0..3), rng.random_bool(0.5)));
        }
    } else {
        for _ in 0..rng.random_range(0..4) {
            let kind = *[0u8, 43, 44, 51, 60].choose(rng).unwrap_or(&60);
            let body = if kind == 44 {
                vec![0, rng.random_range(0..3), 0, 0, 0, 1]
            } else {
                vec![1; rng.random_range(2..20)]
            };
            p.ipv6_ext.push((kind, body));
        }
    }
    p
}

fn mutate(rng: &mut SmallRng, frame: &mut Vec<u8>) {
    match rng.random_range(0..8) {
        0 => {
            let cut = rng.random_range(0..frame.len());
            frame.truncate(cut);
        }
        1 | 2 | 4 => {
            // Mostly header bytes, where the parser's decisions are.
            let end = frame.len().min(90);
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(12.min(end - 1)..end);
                frame[i] = rng.random();
            }
        }
        3 => frame.extend((0..rng.random_range(1..16)).map(|_| rng.random::<u8>())),
        _ => {}
    }
}

#[test]
fn kernel_verdicts_equal_the_reference_model_on_random_and_mutated_frames() {
    if !privileged("differential") {
        return;
    }
    let seed = std::env::var("FIREWALL_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f11e_u64);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut checked = 0;
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..16 {
        let mut f = TestFilter::new("diff");
        let now = now_ns();
        let rules = random_rules(&mut rng, now);
        let policy = random_policy(&mut rng);
        f.maps.apply_policy(&policy).expect("policy");
        f.maps.load_rule_set(&rules).expect("rules");
        let ports: BTreeMap<u16, u32> = policy.port_flags();
        let mut model = Model::new(policy.config(), ports, &rules);
        for i in 0..500 {
            let mut frame = random_packet(&mut rng).build();
            mutate(&mut rng, &mut frame);
            if frame.len() < 14 {
                // test_run needs a whole Ethernet header.
                continue;
            }
            let expected = model.decide(&frame, now_ns());
            let (action, verdict, reason) = f.run(&frame);
            assert_eq!(
                (verdict, reason),
                (expected.verdict, expected.reason),
                "seed {seed:#x} round {round} frame {i}: {frame:02x?}\nrules {rules:?}\npolicy {policy:?}"
            );
            let expected_action = if expected.verdict == Verdict::Drop {
                XDP_DROP
            } else {
                XDP_PASS
            };
            assert_eq!(action, expected_action);
            seen.insert((verdict, reason));
            checked += 1;
        }
    }
    assert!(checked > 7000, "only {checked} frames checked");
    // The generator must reach every branch, or the comparison proves little.
    for reason in Reason::ALL {
        assert!(
            seen.iter().any(|(_, r)| *r == reason),
            "no frame reached {reason:?}: {seen:?}"
        );
    }
    assert!(seen.iter().any(|(v, _)| *v == Verdict::WouldDrop));
}

#[test]
fn rules_read_back_from_the_maps_as_they_were_written() {
    if !privileged("rules_round_trip") {
        return;
    }
    let mut f = TestFilter::new("rules");
    let mut rng = SmallRng::seed_from_u64(7);
    let written = random_rules(&mut rng, now_ns());
    f.maps.load_rule_set(&written).expect("load rules");
    let mut read = f.maps.rule_set().expect("read rules");
    let mut expected = written.clone();
    for set in [&mut read, &mut expected] {
        set.allow.sort();
        set.block.sort_by_key(|(net, _)| *net);
    }
    assert!(!expected.allow.is_empty() && !expected.block.is_empty());
    assert_eq!(read.allow, expected.allow);
    assert_eq!(read.block, expected.block);
}

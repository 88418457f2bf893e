//! The filter attached to a real veth pair between two network namespaces, with real sockets:
//! blocked sources dropped (UDP, TCP, ICMP, IPv6) and allowed ones passing, in native and skb
//! mode; protected ports limited while others are untouched; bans surviving a controller
//! restart; in-place program replacement losing no packet; nothing left after detach.

mod common;

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{instance_name, privileged};
use firewall::{
    AttachMode, BanReason, Instance, Maps, Policy, Reason, Verdict, netns, program,
    rules::parse_net,
};
use socket2::{Domain, Socket, Type};

const A4: &str = "198.18.0.1";
const A4_BLOCKED: &str = "198.18.0.3";
const B4: &str = "198.18.0.2";
const A6: &str = "2001:2::1";
const A6_BLOCKED: &str = "2001:2::3";
const B6: &str = "2001:2::2";

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair: A sends, B carries the filter. Removed on drop.
struct Pair {
    ns_a: String,
    ns_b: String,
    veth_a: String,
    veth_b: String,
    instance: Instance,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let name = instance_name(tag);
        let n = name.split('-').nth(2).unwrap_or("0").to_string();
        let pid = std::process::id();
        // Interface names hold 15 bytes; namespace names carry the whole pid so a later run can
        // tell which ones a killed run left behind.
        let short = format!("{:07}{n}", pid % 10_000_000);
        let pair = Pair {
            ns_a: format!("fwt-{pid}-{n}-a"),
            ns_b: format!("fwt-{pid}-{n}-b"),
            veth_a: format!("fa{short}"),
            veth_b: format!("fb{short}"),
            instance: Instance::new(&name).expect("instance name"),
        };
        ip_cmd(&["netns", "add", &pair.ns_a]);
        ip_cmd(&["netns", "add", &pair.ns_b]);
        pair.create_link();
        pair
    }

    /// Creates the veth pair between the namespaces, with addresses and static neighbours.
    fn create_link(&self) {
        ip_cmd(&[
            "link",
            "add",
            &self.veth_a,
            "netns",
            &self.ns_a,
            "type",
            "veth",
            "peer",
            "name",
            &self.veth_b,
            "netns",
            &self.ns_b,
        ]);
        for (ns, dev, addrs) in [
            (
                &self.ns_a,
                &self.veth_a,
                vec![A4, A4_BLOCKED, A6, A6_BLOCKED],
            ),
            (&self.ns_b, &self.veth_b, vec![B4, B6]),
        ] {
            for addr in addrs {
                let prefix = if addr.contains(':') { "/64" } else { "/24" };
                let cidr = format!("{addr}{prefix}");
                let mut args = vec!["-n", ns, "addr", "add", &cidr, "dev", dev];
                if addr.contains(':') {
                    args.push("nodad");
                }
                ip_cmd(&args);
            }
            ip_cmd(&["-n", ns, "link", "set", dev, "up"]);
            ip_cmd(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Static neighbours: address resolution from a blocked source must not be what stops
        // its traffic.
        let mac_a = self.mac(&self.ns_a, &self.veth_a);
        let mac_b = self.mac(&self.ns_b, &self.veth_b);
        for (ns, dev, addr, mac) in [
            (&self.ns_a, &self.veth_a, B4, &mac_b),
            (&self.ns_a, &self.veth_a, B6, &mac_b),
            (&self.ns_b, &self.veth_b, A4, &mac_a),
            (&self.ns_b, &self.veth_b, A4_BLOCKED, &mac_a),
            (&self.ns_b, &self.veth_b, A6, &mac_a),
            (&self.ns_b, &self.veth_b, A6_BLOCKED, &mac_a),
        ] {
            ip_cmd(&[
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
    }

    fn mac(&self, ns: &str, dev: &str) -> String {
        let out = Command::new("ip")
            .args(["-n", ns, "-br", "link", "show", dev])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .expect("MAC in `ip -br link` output")
            .to_string()
    }

    /// Runs `f` on a thread inside namespace `ns`.
    fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = ns.to_string();
        std::thread::spawn(move || {
            netns::enter(&ns).expect("entering the test namespace");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    fn attach(&self, mode: AttachMode, policy: &Policy) -> firewall::Attached {
        let (instance, iface, policy) =
            (self.instance.clone(), self.veth_b.clone(), policy.clone());
        Pair::in_ns(&self.ns_b, move || {
            program::attach(&instance, &iface, mode, Some(&policy)).expect("attach")
        })
    }

    fn maps(&self) -> Maps {
        Maps::open(&self.instance).expect("open maps")
    }

    fn xdp_shown_on_b(&self) -> bool {
        let out = Command::new("ip")
            .args(["-n", &self.ns_b, "-d", "link", "show", &self.veth_b])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout).contains("xdp")
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = program::remove_pins(&self.instance);
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Sends `count` datagrams from `src` to `dst:port` inside namespace A; returns how many the
/// receiver in B got within a short wait.
fn udp_delivered(pair: &Pair, src: &str, dst: &str, port: u16, count: u32) -> u32 {
    let dst_addr = SocketAddr::new(dst.parse().expect("addr"), port);
    let receiver = Pair::in_ns(&pair.ns_b, move || {
        let bind: SocketAddr = if dst_addr.is_ipv6() {
            SocketAddr::new("::".parse().expect("addr"), port)
        } else {
            SocketAddr::new("0.0.0.0".parse().expect("addr"), port)
        };
        UdpSocket::bind(bind).expect("bind receiver")
    });
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let src_addr = SocketAddr::new(src.parse().expect("addr"), 0);
    Pair::in_ns(&pair.ns_a, move || {
        let sock = UdpSocket::bind(src_addr).expect("bind sender");
        for i in 0..count {
            sock.send_to(&i.to_be_bytes(), dst_addr).expect("send");
        }
    });
    let mut got = 0;
    let mut buf = [0u8; 64];
    while receiver.recv_from(&mut buf).is_ok() {
        got += 1;
    }
    got
}

/// True when a TCP connection from `src` to a listener in B succeeds within a second.
fn tcp_connects(pair: &Pair, src: &str, dst: &str, port: u16) -> bool {
    let dst_addr = SocketAddr::new(dst.parse().expect("addr"), port);
    let listener = Pair::in_ns(&pair.ns_b, move || {
        std::net::TcpListener::bind(dst_addr).expect("listen")
    });
    let src_addr = SocketAddr::new(src.parse().expect("addr"), 0);
    let ok = Pair::in_ns(&pair.ns_a, move || {
        let domain = if src_addr.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let sock = Socket::new(domain, Type::STREAM, None).expect("socket");
        sock.bind(&src_addr.into()).expect("bind");
        sock.connect_timeout(&dst_addr.into(), Duration::from_secs(1))
            .is_ok()
    });
    drop(listener);
    ok
}

fn pings(pair: &Pair, src: &str, dst: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", &pair.ns_a, "ping", "-c", "1", "-W", "1", "-I", src, dst,
        ])
        .output()
        .expect("ping (iputils-ping; run tools/bootstrap.sh)")
        .status
        .success()
}

fn blocked_sources_are_dropped_and_allowed_ones_pass(mode: AttachMode, tag: &str) {
    let pair = Pair::new(tag);
    let policy = Policy {
        pkt_rate_pps: 10,
        pkt_burst: 10,
        udp_ports: vec![7001],
        ..Policy::default()
    };
    let attached = pair.attach(mode, &policy);
    let expected_mode = if mode == AttachMode::Native {
        "native"
    } else {
        "generic"
    };
    assert_eq!(attached.mode, expected_mode);
    assert!(pair.xdp_shown_on_b());
    let mut maps = pair.maps();
    for cidr in [A4_BLOCKED, A6_BLOCKED] {
        maps.block(parse_net(cidr).expect("cidr"), None, BanReason::Manual)
            .expect("block");
    }
    let before = maps.stats().expect("stats");

    assert_eq!(
        udp_delivered(&pair, A4_BLOCKED, B4, 7000, 20),
        0,
        "blocked IPv4 UDP"
    );
    assert_eq!(
        udp_delivered(&pair, A4, B4, 7000, 20),
        20,
        "allowed IPv4 UDP"
    );
    assert_eq!(
        udp_delivered(&pair, A6_BLOCKED, B6, 7000, 20),
        0,
        "blocked IPv6 UDP"
    );
    assert_eq!(
        udp_delivered(&pair, A6, B6, 7000, 20),
        20,
        "allowed IPv6 UDP"
    );
    assert!(
        !tcp_connects(&pair, A4_BLOCKED, B4, 7002),
        "blocked IPv4 TCP"
    );
    assert!(tcp_connects(&pair, A4, B4, 7003), "allowed IPv4 TCP");
    assert!(
        !tcp_connects(&pair, A6_BLOCKED, B6, 7004),
        "blocked IPv6 TCP"
    );
    assert!(!pings(&pair, A4_BLOCKED, B4), "blocked ICMP");
    assert!(pings(&pair, A4, B4), "allowed ICMP");

    // The protected port is limited per source; other ports are untouched.
    let limited = udp_delivered(&pair, A4, B4, 7001, 100);
    assert!(
        (10..=25).contains(&limited),
        "protected port delivered {limited} of 100"
    );
    assert_eq!(
        udp_delivered(&pair, A4, B4, 7005, 100),
        100,
        "unprotected port"
    );

    let delta = maps.stats().expect("stats").since(&before);
    assert!(delta.get(Verdict::Drop, Reason::Blocklisted).packets >= 40 + 2);
    assert!(delta.get(Verdict::Drop, Reason::RateLimited).packets >= 86);

    assert!(program::detach(&pair.instance).expect("detach"));
    assert!(!pair.instance.dir().exists(), "pins left behind");
    assert!(!pair.xdp_shown_on_b(), "XDP still attached after detach");
    assert_eq!(
        udp_delivered(&pair, A4_BLOCKED, B4, 7000, 5),
        5,
        "traffic after detach"
    );
}

#[test]
fn native_mode_drops_blocked_sources_and_passes_the_rest() {
    if !privileged("native_mode") {
        return;
    }
    blocked_sources_are_dropped_and_allowed_ones_pass(AttachMode::Native, "nat");
}

#[test]
fn generic_mode_drops_blocked_sources_and_passes_the_rest() {
    if !privileged("generic_mode") {
        return;
    }
    blocked_sources_are_dropped_and_allowed_ones_pass(AttachMode::Generic, "gen");
}

#[test]
fn bans_survive_a_controller_restart_and_the_program_is_replaced_in_place() {
    if !privileged("bans_survive_restart") {
        return;
    }
    let pair = Pair::new("restart");
    let first = pair.attach(AttachMode::Auto, &Policy::default());
    assert!(!first.replaced);
    pair.maps()
        .block(
            parse_net(A4_BLOCKED).expect("cidr"),
            Some(Duration::from_secs(600)),
            BanReason::Spam,
        )
        .expect("block");
    // A new controller (nothing shared with the first but the pins) attaches again.
    let second = pair.attach(AttachMode::Auto, &Policy::default());
    assert!(
        second.replaced,
        "the second attach must replace, not stack, the program"
    );
    assert_eq!(second.mode, first.mode);
    let why = pair
        .maps()
        .why(A4_BLOCKED.parse().expect("addr"))
        .expect("why");
    assert!(why.deciding_block().is_some(), "{why}");
    assert_eq!(udp_delivered(&pair, A4_BLOCKED, B4, 7000, 10), 0);
    assert_eq!(udp_delivered(&pair, A4, B4, 7000, 10), 10);
}

#[test]
fn replacing_the_program_loses_no_packet_of_a_steady_stream() {
    if !privileged("replace_no_loss") {
        return;
    }
    let pair = Pair::new("swap");
    pair.attach(AttachMode::Native, &Policy::default());
    const COUNT: u64 = 20_000;
    let port = 7100;
    let receiver = Pair::in_ns(&pair.ns_b, move || {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
        // Room for the whole stream, so a reader starved by the test's program loads loses
        // nothing: SO_RCVBUFFORCE (root) ignores net.core.rmem_max.
        let bytes: libc::c_int = 64 << 20;
        // SAFETY: a valid socket and a c_int option value of the given size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &bytes as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
        let addr: SocketAddr = SocketAddr::new(B4.parse().expect("addr"), port);
        sock.bind(&addr.into()).expect("bind");
        UdpSocket::from(sock)
    });
    receiver
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while receiver.recv_from(&mut buf).is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let sending = Arc::new(AtomicBool::new(true));
    let still_sending = sending.clone();
    let ns_a = pair.ns_a.clone();
    let sender = std::thread::spawn(move || {
        netns::enter(&ns_a).expect("netns");
        let sock = UdpSocket::bind(SocketAddr::new(A4.parse().expect("addr"), 0)).expect("bind");
        let dst = SocketAddr::new(B4.parse().expect("addr"), port);
        let started = Instant::now();
        for i in 0..COUNT {
            sock.send_to(&i.to_be_bytes(), dst).expect("send");
            // 20k packets over about two seconds.
            let due = Duration::from_micros(i * 100);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        still_sending.store(false, Ordering::Relaxed);
    });
    let mut swaps = 0;
    while sending.load(Ordering::Relaxed) {
        let attached = pair.attach(AttachMode::Native, &Policy::default());
        assert!(attached.replaced);
        swaps += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    sender.join().expect("sender");
    reader.join().expect("reader");
    assert!(swaps >= 3, "only {swaps} replacements during the stream");
    assert_eq!(
        received.load(Ordering::Relaxed),
        COUNT,
        "packets lost across {swaps} replacements"
    );
    let stats = pair.maps().stats().expect("stats");
    assert!(stats.packets(Verdict::Pass) >= COUNT);
}

#[test]
fn attach_refuses_another_interface_and_recovers_from_a_vanished_one() {
    if !privileged("attach_elsewhere_and_vanished") {
        return;
    }
    let pair = Pair::new("moved");
    pair.attach(AttachMode::Native, &Policy::default());
    let (instance, ns_b) = (pair.instance.clone(), pair.ns_b.clone());
    let elsewhere = Pair::in_ns(&ns_b, move || {
        program::attach(&instance, "lo", AttachMode::Generic, None)
    });
    assert!(
        matches!(
            elsewhere,
            Err(firewall::FirewallError::AttachedElsewhere { .. })
        ),
        "{elsewhere:?}"
    );
    // The interface goes away (and comes back): the pinned link is stale, not a filter.
    ip_cmd(&["-n", &pair.ns_b, "link", "del", &pair.veth_b]);
    pair.create_link();
    assert_eq!(pair.instance.attached_ifindex().expect("fdinfo"), Some(0));
    let again = pair.attach(AttachMode::Native, &Policy::default());
    assert!(!again.replaced, "a stale link must not count as attached");
    assert!(pair.xdp_shown_on_b());
    assert_eq!(udp_delivered(&pair, A4, B4, 7000, 10), 10);
    pair.maps()
        .block(parse_net(A4).expect("cidr"), None, BanReason::Manual)
        .expect("block");
    assert_eq!(udp_delivered(&pair, A4, B4, 7000, 10), 0);
}

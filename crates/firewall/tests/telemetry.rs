//! The kernel telemetry on real traffic between two network namespaces: stack drops counted by
//! reason and port in the watched namespace only, inbound handshakes (IPv4 peers of a
//! dual-stack listener) followed to completion or abandonment, SYN-ACK retransmissions, receive latency samples for data the reader took, and
//! the XDP filter's own drops (native and generic) kept out of the stack's.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use common::{instance_name, privileged};
use firewall::telemetry::{Telemetry, TelemetryCounts};
use firewall::{
    AttachMode, BanReason, Instance, Maps, Policy, Reason, Verdict, netns, program,
    rules::parse_net,
};
use socket2::{Domain, Socket, Type};

const A4: &str = "198.18.9.1";
const B4: &str = "198.18.9.2";
/// The P2P port the telemetry watches in namespace A.
const P2P_PORT: u16 = 47_100;
/// A port nothing listens on, for drops that are not P2P.
const OTHER_PORT: u16 = 47_101;
const CONNECTIONS: usize = 3;
const P2P_DATAGRAMS: usize = 3;
const BYTES_PER_CONNECTION: usize = 600;
/// Datagrams the XDP filter drops in the last part.
const XDP_DROPPED: usize = 200;

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces A (watched) and B (traffic source) on a veth pair, removed on drop, and the name
/// of A's end of the pair.
fn namespaces() -> (netns::VethPair, String) {
    let name = instance_name("tele");
    let n = name.split('-').nth(2).unwrap_or("0").to_string();
    let pid = std::process::id();
    let short = format!("{:07}{n}", pid % 10_000_000);
    let veth_a = format!("ta{short}");
    let pair = netns::VethPair::create(
        (&format!("fwt-{pid}-{n}-a"), &veth_a, A4.parse().unwrap()),
        (
            &format!("fwt-{pid}-{n}-b"),
            &format!("tb{short}"),
            B4.parse().unwrap(),
        ),
    )
    .expect("creating the namespaces");
    (pair, veth_a)
}

fn send_datagrams(ns: &str, to: SocketAddr, count: usize) {
    netns::in_netns(ns, || {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("UDP socket");
        for _ in 0..count {
            socket.send_to(b"telemetry", to).expect("send");
        }
    })
    .expect("entering the namespace");
}

/// Reads until `done` holds or 5 s pass; returns the last reading.
fn read_until(
    telemetry: &mut Telemetry,
    done: impl Fn(&TelemetryCounts) -> bool,
) -> TelemetryCounts {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = telemetry.read().expect("reading the telemetry maps");
        if done(&counts) || Instant::now() > deadline {
            return counts;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A listener on `[::]:port` that takes IPv4 too: its sockets see IPv4 peers as
/// `::ffff:a.b.c.d`, which the handshake accounting must match to the IPv4 SYN.
fn dual_stack_listener(port: u16) -> TcpListener {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None).expect("IPv6 socket");
    socket.set_only_v6(false).expect("dual stack");
    let addr: SocketAddr = format!("[::]:{port}").parse().unwrap();
    socket.bind(&addr.into()).expect("binding the P2P port");
    socket.listen(16).expect("listening");
    socket.into()
}

fn drops(counts: &TelemetryCounts, reason: &str) -> (u64, u64) {
    counts
        .drops
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|d| d.reason == reason)
        .map_or((0, 0), |d| (d.p2p, d.other))
}

#[test]
fn telemetry_counts_drops_handshakes_and_latency_of_its_own_namespace_only() {
    if !privileged("telemetry_counts_drops_handshakes_and_latency_of_its_own_namespace_only") {
        return;
    }
    let (ns, veth_a) = namespaces();
    let a_p2p: SocketAddr = format!("{A4}:{P2P_PORT}").parse().unwrap();
    let (mut telemetry, listener) = netns::in_netns(&ns.a, || {
        let telemetry = Telemetry::start(P2P_PORT).expect("starting the telemetry");
        (telemetry, dual_stack_listener(P2P_PORT))
    })
    .expect("entering namespace A");
    telemetry.set_handshake_timeout(Duration::from_secs(1));
    for attachment in telemetry.attachments() {
        assert!(
            attachment.result.is_ok(),
            "{} not attached: {:?}",
            attachment.tracepoint,
            attachment.result
        );
    }

    // Completed handshakes, with data the server reads (latency samples).
    let server = std::thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = vec![0u8; BYTES_PER_CONNECTION];
            stream
                .read_exact(&mut buf)
                .expect("reading the client's bytes");
        }
        listener
    });
    netns::in_netns(&ns.b, || {
        for _ in 0..CONNECTIONS {
            let mut stream = TcpStream::connect_timeout(&a_p2p, Duration::from_secs(3))
                .expect("connecting to the P2P port");
            stream
                .write_all(&[7u8; BYTES_PER_CONNECTION])
                .expect("writing");
        }
    })
    .expect("entering namespace B");
    let listener = server.join().expect("server thread");

    // Stack drops: UDP to the P2P port and to another port (no UDP socket: no_socket) in A,
    // and the same in B, which must not count.
    send_datagrams(&ns.b, a_p2p, P2P_DATAGRAMS);
    send_datagrams(&ns.b, format!("{A4}:{OTHER_PORT}").parse().unwrap(), 2);
    send_datagrams(&ns.a, format!("{B4}:{P2P_PORT}").parse().unwrap(), 4);

    // An abandoned handshake: B drops the SYN-ACKs, so A's listener retransmits them and the
    // handshake never completes.
    let nft = |args: &str| run("ip", &["netns", "exec", &ns.b, "nft", args]);
    nft("add table inet telemetry_test");
    nft(
        "add chain inet telemetry_test input { type filter hook input priority 0; policy accept; }",
    );
    nft(&format!(
        "add rule inet telemetry_test input tcp sport {P2P_PORT} tcp flags & (syn | ack) == syn | ack drop"
    ));
    netns::in_netns(&ns.b, || {
        let refused = TcpStream::connect_timeout(&a_p2p, Duration::from_millis(2500));
        assert!(refused.is_err(), "the handshake completed despite the rule");
    })
    .expect("entering namespace B");

    let counts = read_until(&mut telemetry, |c| {
        c.handshakes.is_some_and(|h| h.abandoned >= 1)
            && c.latency
                .as_ref()
                .is_some_and(|l| l.buckets.iter().sum::<u64>() >= CONNECTIONS as u64)
    });
    drop(listener);
    let h = counts.handshakes.expect("handshakes counted");
    assert_eq!(h.started, CONNECTIONS as u64 + 1, "{counts:#?}");
    assert_eq!(h.completed, CONNECTIONS as u64, "{counts:#?}");
    assert_eq!(h.abandoned, 1, "{counts:#?}");
    assert_eq!((h.untracked, h.pending), (0, 0), "{counts:#?}");
    assert!(counts.synack_retransmits >= Some(1), "{counts:#?}");
    let (p2p, other) = drops(&counts, "no_socket");
    assert_eq!(
        p2p, P2P_DATAGRAMS as u64,
        "only A's drops to the P2P port: {counts:#?}"
    );
    assert!(other >= 2, "{counts:#?}");
    let latency = counts.latency.as_ref().expect("latency measured");
    assert!(
        latency.buckets.iter().sum::<u64>() >= CONNECTIONS as u64,
        "{counts:#?}"
    );
    assert!(latency.sum_ns > 0, "{counts:#?}");

    // The XDP filter's own drops (native on veth, and generic) free socket buffers too; they
    // are the filter's, not the stack's, and must not count as stack drops.
    let instance = Instance::new(&instance_name("telexdp")).expect("instance name");
    let _pins = Pins(instance.clone());
    for mode in [AttachMode::Native, AttachMode::Generic] {
        netns::in_netns(&ns.a, || {
            program::attach(&instance, &veth_a, mode, Some(&Policy::default()))
                .expect("attaching the filter in A")
        })
        .expect("entering namespace A");
        let mut maps = Maps::open(&instance).expect("opening the filter's maps");
        maps.block(parse_net(B4).unwrap(), None, BanReason::Manual)
            .expect("blocking B");
        let before = telemetry.read().expect("reading the telemetry");
        let dropped_before = maps
            .stats()
            .expect("stats")
            .get(Verdict::Drop, Reason::Blocklisted);
        send_datagrams(&ns.b, a_p2p, XDP_DROPPED);
        std::thread::sleep(Duration::from_millis(300));
        let after = telemetry.read().expect("reading the telemetry");
        let dropped = maps
            .stats()
            .expect("stats")
            .get(Verdict::Drop, Reason::Blocklisted)
            .packets
            - dropped_before.packets;
        assert_eq!(
            dropped, XDP_DROPPED as u64,
            "{mode:?}: the filter dropped B's datagrams"
        );
        assert_eq!(
            drops(&after, "no_socket").0,
            drops(&before, "no_socket").0,
            "{mode:?}"
        );
        let unspecified = |c: &TelemetryCounts| {
            let (p2p, other) = drops(c, "not_specified");
            p2p + other
        };
        assert!(
            unspecified(&after) - unspecified(&before) < XDP_DROPPED as u64 / 10,
            "{mode:?}: XDP drops counted as the stack's: {} -> {}",
            unspecified(&before),
            unspecified(&after)
        );
        program::detach(&instance).expect("detaching the filter");
    }
}

/// Removes a filter instance's pins when the test ends, passed or not.
struct Pins(Instance);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = program::remove_pins(&self.0);
    }
}

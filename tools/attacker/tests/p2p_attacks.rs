//! `attacker replay`, `attacker gossip` (every kind) and `attacker connect-flood` against one
//! `node run` validator with the XDP filter on its interface, each attack from its own network
//! namespace and address: replays are refused by the API and change nothing; each other attack
//! ends in a ban with its reason written to the kernel blocklist, after which the attacker's
//! packets are dropped there. Needs root (namespaces, XDP); under `CI=true` without root it fails.
//!
//! # Design
//! Namespaces are `xatk-<pid>-*`: a hub with a bridge (and an address for the test's own HTTP
//! client), the validator's, and one per attacker, each joined to the bridge by a veth pair
//! (`eth0` inside). A killed run is recognized by its dead pid and cleaned up by the next one.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use firewall::{BanReason, Instance, Maps, Reason, Verdict, netns, program};
use serde_json::Value;
use types::{Encode, Payload, SecretKey, Transaction};

/// Prefix of every namespace and filter instance of this test.
const PREFIX: &str = "xatk-";
/// The lab's /24: the validator is `.1`, the hub's client `.254`, attacker `i` is `.10 + i`.
const SUBNET: [u8; 3] = [10, 98, 0];
const NODE_HOST: u8 = 1;
const CLIENT_HOST: u8 = 254;
const ATTACKER_HOST_BASE: u8 = 10;
/// The validator's P2P and API ports.
const P2P_PORT: u16 = 9000;
const API_PORT: u16 = 8080;
/// The attacks, one namespace each, in this order.
const ATTACKS: [&str; 5] = [
    "replay",
    "invalid-tx",
    "invalid-vote",
    "oversized",
    "connect",
];
/// Transfers committed before the replay.
const TRANSFERS: u64 = 30;
/// Transactions replayed.
const REPLAYS: u64 = 20;
/// Run time of each gossip attack and of the connection flood.
const ATTACK_FOR: &str = "6s";
/// Time allowed for each wait.
const WAIT: Duration = Duration::from_secs(20);
/// The node's log filter.
const NODE_LOG: &str = "info,arc_malachitebft_core_consensus=warn,libp2p_gossipsub=error";
/// Lines of the node's log printed when the test fails.
const LOG_TAIL_LINES: usize = 40;

fn lab_ip(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], host)
}

fn attacker_ip(i: usize) -> Ipv4Addr {
    lab_ip(ATTACKER_HOST_BASE + i as u8)
}

/// True when the test can run; without root it says why, and under `CI=true` it fails.
fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = "the p2p attack test needs root (network namespaces, XDP)";
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why}; under CI=true a privileged test that cannot run is a failure"
    );
    eprintln!("SKIPPED: {why}");
    false
}

/// The `node` binary, built next to the attacker.
fn node_bin() -> PathBuf {
    let node = Path::new(env!("CARGO_BIN_EXE_attacker")).with_file_name("node");
    assert!(
        node.is_file(),
        "{} is missing: build it first (`cargo build -p node`)",
        node.display()
    );
    node
}

fn ip(args: &[&str]) {
    netns::ip(args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces, the validator and its files; dropping it removes them all.
struct Lab {
    hub: String,
    node_ns: String,
    attackers: Vec<String>,
    instance: Instance,
    node: Option<Child>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        netns::remove_leftovers(PREFIX).expect("removing what killed runs left");
        let pid = std::process::id();
        let name = |tag: &str| format!("{PREFIX}{pid}-{tag}");
        let lab = Lab {
            hub: name("hub"),
            node_ns: name("node"),
            attackers: (0..ATTACKS.len()).map(|i| name(&format!("a{i}"))).collect(),
            instance: Instance::new(&name("node")).expect("a valid instance name"),
            node: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ip(&["netns", "add", &lab.hub]);
        ip(&["-n", &lab.hub, "link", "set", "lo", "up"]);
        ip(&["-n", &lab.hub, "link", "add", "br0", "type", "bridge"]);
        let client = format!("{}/24", lab_ip(CLIENT_HOST));
        ip(&["-n", &lab.hub, "addr", "add", &client, "dev", "br0"]);
        ip(&["-n", &lab.hub, "link", "set", "br0", "up"]);
        let members = std::iter::once((lab.node_ns.clone(), "node".to_string(), lab_ip(NODE_HOST)))
            .chain(
                lab.attackers
                    .iter()
                    .enumerate()
                    .map(|(i, ns)| (ns.clone(), format!("a{i}"), attacker_ip(i))),
            );
        for (ns, port, addr) in members {
            ip(&["netns", "add", &ns]);
            ip(&[
                "-n", &lab.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &lab.hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `node init` for one validator, then `node run` in its namespace with the filter on
    /// `eth0`. Returns the genesis file and the validator's key.
    fn start_node(&mut self) -> (PathBuf, SecretKey) {
        let data = self.dir.path().join("net");
        let out = Command::new(node_bin())
            .args(["init", "--validators", "1", "--data-dir"])
            .arg(&data)
            .output()
            .expect("node init runs");
        assert!(out.status.success(), "node init: {out:?}");
        let seed = std::fs::read_to_string(data.join("node-0/identity.key")).expect("identity");
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(seed.trim(), &mut bytes).expect("64 hex digits");
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut cmd = Command::new(node_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(data.join("node-0/node.toml"))
            .args([
                "--listen",
                &format!("/ip4/{}/tcp/{P2P_PORT}", lab_ip(NODE_HOST)),
            ])
            .args(["--api-listen", &format!("{}:{API_PORT}", lab_ip(NODE_HOST))])
            .args(["--no-admin", "--iface", "eth0", "--instance"])
            .arg(self.instance.name())
            .args(["--on-exit", "detach", "--ban-secs", "120"])
            .args(["--propose-timeout-ms", "200"])
            .env("RUST_LOG", NODE_LOG)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        netns::exec_in(&mut cmd, &self.node_ns).expect("the node's namespace");
        self.node = Some(cmd.spawn().expect("node run starts"));
        (data.join("genesis.toml"), SecretKey::from_seed(bytes))
    }

    /// An HTTP request to the validator's API from the hub: status and body.
    fn http(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        let addr = SocketAddr::new(IpAddr::V4(lab_ip(NODE_HOST)), API_PORT);
        netns::in_netns(&self.hub, || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            let status = answer.split_whitespace().nth(1)?.parse().ok()?;
            let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
            Some((status, body.to_string()))
        })
        .expect("the hub's namespace")
    }

    fn json(&self, path: &str) -> Option<Value> {
        let (status, body) = self.http("GET", path, "")?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    fn height(&self) -> u64 {
        self.json("/v1/status")
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// Waits for `what`, failing the test (with the node's log) after [`WAIT`].
    fn wait<T>(&mut self, what: &str, mut f: impl FnMut(&Lab) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(t) = f(self) {
                return t;
            }
            if let Some(Ok(Some(status))) = self.node.as_mut().map(Child::try_wait) {
                panic!("the node exited: {status}");
            }
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn maps(&self) -> Maps {
        Maps::open(&self.instance).expect("the node's pinned maps")
    }

    /// The reason of the kernel block that decides for `addr` now, if any.
    fn kernel_block(&self, addr: Ipv4Addr) -> Option<BanReason> {
        self.maps()
            .why(IpAddr::V4(addr))
            .expect("the filter's rules")
            .deciding_block()
            .and_then(|(_, entry)| BanReason::from_code(entry.reason))
    }

    fn blocklisted_drops(&self) -> u64 {
        self.maps()
            .stats()
            .expect("the filter's counters")
            .get(Verdict::Drop, Reason::Blocklisted)
            .packets
    }

    /// Starts `attacker ARGS` in attacker namespace `i`.
    fn attacker(&self, i: usize, args: &[String]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_attacker"))
            .args(args)
            .args(["--netns", &self.attackers[i]])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the attacker starts")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut node) = self.node.take() {
            // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
            unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(node.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = node.kill();
            let _ = node.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!("----- node log, last {} lines -----", lines.len() - from);
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
        let _ = program::detach(&self.instance);
        for ns in self.attackers.iter().chain([&self.node_ns, &self.hub]) {
            if let Err(e) = netns::delete(ns) {
                eprintln!("removing namespace {ns}: {e}");
            }
        }
    }
}

/// Waits for an attacker and returns its summary (the last line of its stdout).
fn summary(name: &str, child: Child) -> Value {
    let out: Output = child.wait_with_output().expect("the attacker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "attacker {name}: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let value: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("attacker {name}: last line {last:?} is not JSON: {e}"));
    eprintln!("{name}: {value}");
    value
}

/// The value of the sample `name` (with its labels, exactly as exposed) in a metrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn count(value: &Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or(0)
}

#[test]
fn p2p_attacks_are_refused_or_banned_into_the_kernel() {
    if !privileged() {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::new();
    let (genesis, key) = lab.start_node();
    lab.wait("the validator makes a block", |lab| {
        (lab.height() >= 1).then_some(())
    });
    let peer = p2p::peer_id_of(&key).expect("an Ed25519 key is a peer id");
    let target = format!("/ip4/{}/tcp/{P2P_PORT}", lab_ip(NODE_HOST));
    let peer_addr = format!("{target}/p2p/{peer}");
    let api = format!("http://{}:{API_PORT}", lab_ip(NODE_HOST));
    let genesis_arg = genesis.display().to_string();

    // Commit transfers to replay.
    let chain = types::Genesis::from_toml(&std::fs::read_to_string(&genesis).expect("genesis"))
        .expect("a valid genesis")
        .chain_id;
    let to = SecretKey::from_seed([9; 32]).public_key();
    for nonce in 0..TRANSFERS {
        let tx = Transaction {
            chain_id: chain.clone(),
            sender: key.public_key(),
            nonce,
            fee: 1,
            payload: Payload::Transfer { to, amount: 1 },
        }
        .sign(&key);
        let body = format!("{{\"tx\":\"{}\"}}", hex::encode(tx.to_bytes()));
        let answer = lab.http("POST", "/v1/transactions", &body);
        assert_eq!(answer.as_ref().map(|a| a.0), Some(202), "{answer:?}");
    }
    let account = format!("/v1/accounts/{}", key.public_key());
    lab.wait("the transfers are committed", |lab| {
        let nonce = lab.json(&account)?["nonce"].as_u64()?;
        (nonce == TRANSFERS).then_some(())
    });

    // Replays: fetched by sync, refused by the API, nothing committed twice, no ban.
    let replay = lab.attacker(
        0,
        &[
            "replay".into(),
            "--genesis".into(),
            genesis_arg.clone(),
            "--peer".into(),
            peer_addr.clone(),
            "--api".into(),
            api.clone(),
            "--count".into(),
            REPLAYS.to_string(),
            "--duration".into(),
            "15s".into(),
        ],
    );
    let replay = summary("replay", replay);
    assert_eq!(count(&replay, "fetched"), REPLAYS, "{replay}");
    assert_eq!(count(&replay, "replayed"), REPLAYS, "{replay}");
    assert_eq!(replay["api"]["422"].as_u64(), Some(REPLAYS), "{replay}");
    assert_eq!(
        replay["reasons"]["nonce_replay"].as_u64(),
        Some(REPLAYS),
        "{replay}"
    );
    let height = lab.height();
    lab.wait("two more blocks after the replays", |lab| {
        (lab.height() >= height + 2).then_some(())
    });
    assert_eq!(
        lab.json(&account).and_then(|a| a["nonce"].as_u64()),
        Some(TRANSFERS),
        "a replay was committed"
    );
    assert_eq!(
        lab.kernel_block(attacker_ip(0)),
        None,
        "the replayer was banned"
    );
    let metrics = lab
        .http("GET", "/metrics", "")
        .map(|(_, body)| body)
        .unwrap_or_default();
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.contains("mempool_rejected_total")
                || l.contains("transactions_committed_total")
                || l.contains("p2p_gossip_messages_total{topic=\"tx\""))
    }) {
        eprintln!("after the replays: {line}");
    }
    assert_eq!(
        metric(&metrics, "chain_transactions_committed_total"),
        Some(TRANSFERS as f64),
        "a replay was committed"
    );
    let refused = metric(&metrics, "mempool_rejected_total{reason=\"nonce_replay\"}");
    assert!(
        refused.is_some_and(|n| n >= REPLAYS as f64),
        "the API replays are counted as nonce_replay refusals: {refused:?}"
    );

    // Bad gossip, the three kinds at once from three addresses.
    let drops_before = lab.blocklisted_drops();
    let gossips: Vec<(usize, Child)> = (1..=3)
        .map(|i| {
            let args = [
                "gossip",
                "--genesis",
                &genesis_arg,
                "--peer",
                &peer_addr,
                "--kind",
                ATTACKS[i],
                "--count",
                "20",
                "--duration",
                ATTACK_FOR,
            ]
            .map(String::from);
            (i, lab.attacker(i, &args))
        })
        .collect();
    for (i, child) in gossips {
        let result = summary(ATTACKS[i], child);
        assert!(count(&result, "published") > 0, "{result}");
        assert!(count(&result, "redials") > 0, "{result}");
        let expected = match ATTACKS[i] {
            "oversized" => BanReason::MalformedMessage,
            _ => BanReason::InvalidSignature,
        };
        assert_eq!(
            lab.kernel_block(attacker_ip(i)),
            Some(expected),
            "kernel block of the {} attacker",
            ATTACKS[i]
        );
    }
    let drops_after_gossip = lab.blocklisted_drops();
    assert!(
        drops_after_gossip > drops_before,
        "no re-dial of a banned gossip attacker was dropped in the kernel"
    );

    // The connection flood.
    let flood = lab.attacker(
        4,
        &[
            "connect-flood",
            "--target",
            &target,
            "--connections",
            "64",
            "--rate",
            "50",
            "--duration",
            ATTACK_FOR,
        ]
        .map(String::from),
    );
    let flood = summary("connect-flood", flood);
    assert_eq!(count(&flood, "attempted"), 64, "{flood}");
    assert!(count(&flood, "established") >= 1, "{flood}");
    assert!(count(&flood, "refused") >= 1, "{flood}");
    assert!(count(&flood, "unanswered") >= 1, "{flood}");
    let reason = lab.kernel_block(attacker_ip(4));
    assert!(
        matches!(
            reason,
            Some(BanReason::ConnectionFlood | BanReason::HandshakeFailures)
        ),
        "kernel block of the flooding address: {reason:?}"
    );
    assert!(lab.blocklisted_drops() > drops_after_gossip);

    // The validator kept working and logged every ban.
    let height = lab.height();
    lab.wait("two more blocks after the attacks", |lab| {
        (lab.height() >= height + 2).then_some(())
    });
    let log = lab.log();
    let bans: Vec<&str> = log.lines().filter(|l| l.contains("] banned ")).collect();
    for line in &bans {
        eprintln!("{line}");
    }
    assert!(bans.len() >= 4, "the node logged {} bans", bans.len());
    for (i, attack) in ATTACKS.iter().enumerate() {
        let out = Command::new(node_bin())
            .args(["firewall", "--instance", lab.instance.name(), "why"])
            .arg(attacker_ip(i).to_string())
            .output()
            .expect("node firewall why runs");
        assert!(out.status.success(), "node firewall why: {out:?}");
        eprintln!(
            "{attack} ({}): {}",
            attacker_ip(i),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    eprintln!("total {:?}", started.elapsed());
}

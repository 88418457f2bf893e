//! Four `node run` validators, each in its own network namespace with the XDP filter on its
//! interface, and an attacker on the same bridge: a peer gossiping transactions with invalid
//! signatures is banned by validator 0 and its re-dials die in XDP; a flood of plain TCP
//! connections is banned by validator 1 the same way; the validators keep making blocks and
//! none of them is ever blocked. One validator is configured with no peers and known to none:
//! it finds them by mDNS.
//!
//! # Design
//! - Everything lives in namespaces named `xnt-<pid>-*` (a hub with a bridge, one per node and
//!   one for the attacker) and filter instances of the same names; nothing is created in the
//!   root namespace. A run that was killed is recognized by its dead pid and cleaned up by the
//!   next one ([`common::netns::remove_leftovers`]).
//! - Child processes join their namespace before exec ([`common::netns::exec_in_netns`]).
//! - The libp2p attacker is this test binary re-executed inside the attacker namespace, running
//!   only [`ATTACKER_TEST`], which does nothing unless [`ROLE_ENV`] selects it.
//! - The test reads each node's pinned maps directly (bpffs is shared by every namespace) and
//!   each node's log for heights and ban lines.

mod common;

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chain::testkit::{TestChain, derived_key};
use firewall::{BanReason, Instance, Maps, Reason, Verdict, netns, program};
use p2p::gossip::{Gossip, GossipError, TopicKind};
use p2p::sync::{Status, SyncResponse};
use p2p::{Multiaddr, Network, NetworkConfig, NetworkEvent, Validation};
use storage::MemStore;
use types::Encode;

use common::netns::{delete_netns, exec_in_netns, ip, remove_leftovers};
use common::privileged;

/// Seed of the test chain (validator keys, genesis) and of the attacker's key.
const SEED: u64 = 5;
/// Validators in the chain.
const VALIDATORS: usize = 4;
/// Validator `i` has address `10.77.0.<i+1>`.
const SUBNET: [u8; 3] = [10, 77, 0];
/// The attacker's address.
const ATTACKER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 66);
/// The P2P port of every validator (the node's default).
const PORT: u16 = 9000;
/// Prefix of every namespace and filter instance of this test.
const PREFIX: &str = "xnt-";

/// Environment variable that turns [`ATTACKER_TEST`] into the attacker.
const ROLE_ENV: &str = "XDP_NODE_NETNS_ROLE";
const ATTACKER_ROLE: &str = "attacker";
/// Name of the test function that is the attacker when re-executed.
const ATTACKER_TEST: &str = "attacker_role_gossips_invalid_signatures_when_selected";

/// Invalid transactions the attacker publishes, one per [`PUBLISH_EVERY`].
const INVALID_TXS: usize = 20;
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The attacker re-dials this often while not connected.
const REDIAL_EVERY: Duration = Duration::from_millis(500);
/// How long the attacker keeps publishing and re-dialling.
const ATTACK_FOR: Duration = Duration::from_secs(10);

/// Plain TCP connections of the flood, one per [`FLOOD_EVERY`] (20/s: under the filter's SYN
/// budget, so it is the node's ban that stops them, not the rate limit).
const FLOOD_CONNECTIONS: usize = 40;
const FLOOD_EVERY: Duration = Duration::from_millis(50);
/// A connect that gets no answer within this is taken as dropped.
const FLOOD_CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// The flood stops after this many unanswered connects in a row: the source is blocked.
const FLOOD_GIVE_UP_AFTER: usize = 5;

/// The validator no other knows and that knows no other: it finds its peers by mDNS (every
/// validator runs it), so its reaching [`START_HEIGHT`] proves discovery on the bridge.
const MDNS_ONLY: usize = VALIDATORS - 1;
/// Height every validator reaches before the attacks.
const START_HEIGHT: u64 = 3;
/// Heights every validator makes after the attacks.
const MORE_HEIGHTS: u64 = 5;
/// A node gets this long after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The nodes' log filter: everything at info but the consensus library's per-vote lines, which
/// would fill the tails printed on failure (about 15 lines per block, 25 blocks a second here).
const NODE_LOG: &str = "info,arc_malachitebft_core_consensus=warn";
/// Lines of each log printed when the test fails.
const LOG_TAIL_LINES: usize = 40;

fn validator_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], i as u8 + 1)
}

/// Validator `i`'s TCP address with its peer id.
fn validator_addr(test: &TestChain, i: usize) -> Multiaddr {
    let peer = p2p::peer_id_of(&test.validators[i]).expect("an Ed25519 key is a peer id");
    format!("/ip4/{}/tcp/{PORT}/p2p/{peer}", validator_ip(i))
        .parse()
        .expect("valid multiaddr")
}

/// Transaction `nonce` with a flipped bit in its signature (the last byte).
fn forged_transaction(test: &TestChain, nonce: u64) -> Vec<u8> {
    let mut bytes = test.transfer(0, 1, nonce, 1).to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(
        p2p::gossip::check(TopicKind::Transactions, &bytes, &test.genesis.chain_id),
        Err(GossipError::InvalidSignature),
        "the forged transaction must decode and fail only its signature"
    );
    bytes
}

/// Polls `f` every 20 ms until it gives a value; panics with `what` after `within`.
fn wait_until<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `height N final:` in a node's log.
fn height_in(log: &str) -> u64 {
    log.lines()
        .filter_map(|line| line.split_once("] height ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(" final: "))
        .filter_map(|(n, _)| n.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The first ban line with `reason` in a node's log, and its kernel write time in µs.
fn ban_line(log: &str, reason: BanReason) -> Option<(String, u64)> {
    let tag = format!("({})", reason.name());
    log.lines()
        .filter(|line| line.contains("] banned ") && line.contains(&tag))
        .find_map(|line| {
            let (_, tail) = line.rsplit_once(" written in ")?;
            let us = tail.strip_suffix(" µs")?.trim().parse().ok()?;
            Some((line.to_string(), us))
        })
}

/// The namespaces, the running processes and their files. Dropping it stops the processes,
/// removes the filters, the namespaces and the files (and prints the logs when the test failed).
struct Lab {
    hub: String,
    validators: Vec<String>,
    attacker: String,
    instances: Vec<Instance>,
    processes: Vec<(String, Child)>,
    logs: Vec<(String, PathBuf)>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Creates the hub with its bridge, and one namespace per validator and for the attacker,
    /// each joined to the bridge by a veth pair (`eth0` inside).
    fn new() -> Lab {
        remove_leftovers(PREFIX);
        let pid = std::process::id();
        let ns = |tag: &str| format!("{PREFIX}{pid}-{tag}");
        let lab = Lab {
            hub: ns("hub"),
            validators: (0..VALIDATORS).map(|i| ns(&format!("v{i}"))).collect(),
            attacker: ns("atk"),
            instances: Vec::new(),
            processes: Vec::new(),
            logs: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        };
        ip(&["netns", "add", &lab.hub]);
        ip(&["-n", &lab.hub, "link", "set", "lo", "up"]);
        ip(&["-n", &lab.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lab.hub, "link", "set", "br0", "up"]);
        let members: Vec<(String, String, Ipv4Addr)> = (0..VALIDATORS)
            .map(|i| (lab.validators[i].clone(), format!("v{i}"), validator_ip(i)))
            .chain([(lab.attacker.clone(), "atk".to_string(), ATTACKER_IP)])
            .collect();
        for (name, port, addr) in members {
            ip(&["netns", "add", &name]);
            ip(&[
                "-n", &lab.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &name,
            ]);
            ip(&["-n", &lab.hub, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts validator `i`: `node run` in its namespace with the filter on `eth0`.
    fn start_validator(&mut self, test: &TestChain, i: usize) {
        let genesis = self.path("genesis.toml");
        if !genesis.exists() {
            std::fs::write(&genesis, test.genesis.to_toml()).expect("writing the genesis");
        }
        let key = self.path(&format!("v{i}.key"));
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(hex::encode(test.validators[i].seed()).as_bytes()))
            .expect("writing the key file");
        let instance = self.validators[i].clone();
        self.instances
            .push(Instance::new(&instance).expect("valid instance name"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_node"));
        cmd.arg("run")
            .arg("--data-dir")
            .arg(self.path(&format!("v{i}.db")))
            .arg("--genesis")
            .arg(&genesis)
            .arg("--key")
            .arg(&key)
            .args(["--iface", "eth0", "--instance", &instance])
            .args([
                "--no-kademlia",
                "--ban-secs",
                "120",
                "--propose-timeout-ms",
                "1000",
            ]);
        cmd.arg("--mdns");
        for j in 0..VALIDATORS {
            cmd.arg("--allow").arg(format!("{}/32", validator_ip(j)));
            if j != i && i != MDNS_ONLY && j != MDNS_ONLY {
                cmd.arg("--peer").arg(validator_addr(test, j).to_string());
            }
        }
        cmd.env("RUST_LOG", NODE_LOG);
        self.spawn(&format!("validator {i}"), cmd, &self.validators[i].clone());
    }

    /// Starts the libp2p attacker: this test binary, running only [`ATTACKER_TEST`].
    fn start_attacker(&mut self) -> usize {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--exact", ATTACKER_TEST, "--nocapture"])
            .env(ROLE_ENV, ATTACKER_ROLE)
            .env("RUST_LOG", "info");
        self.spawn("attacker", cmd, &self.attacker.clone());
        self.processes.len() - 1
    }

    fn spawn(&mut self, name: &str, mut cmd: Command, ns: &str) {
        let log_path = self.path(&format!("{}.log", name.replace(' ', "-")));
        let log = File::create(&log_path).expect("log file");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        exec_in_netns(&mut cmd, ns);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.processes.push((name.to_string(), child));
        self.logs.push((name.to_string(), log_path));
    }

    fn log(&self, name: &str) -> String {
        self.logs
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, path)| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    fn height(&self, i: usize) -> u64 {
        height_in(&self.log(&format!("validator {i}")))
    }

    /// Panics if a validator exited.
    fn assert_validators_run(&mut self) {
        for (name, child) in &mut self.processes {
            if name.starts_with("validator")
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("{name} exited: {status}");
            }
        }
    }

    /// Waits until every validator logged a final block at `height` or above.
    fn wait_for_heights(&mut self, heights: &[u64], within: Duration) -> Vec<u64> {
        wait_until(
            &format!("every validator at or above heights {heights:?}"),
            within,
            || {
                self.assert_validators_run();
                let now: Vec<u64> = (0..VALIDATORS).map(|i| self.height(i)).collect();
                now.iter().zip(heights).all(|(n, h)| n >= h).then_some(now)
            },
        )
    }

    fn maps(&self, i: usize) -> Maps {
        Maps::open(&self.instances[i]).expect("opening the node's pinned maps")
    }

    /// Waits for process `index` to exit by itself.
    fn wait_exit(&mut self, index: usize, within: Duration) -> std::process::ExitStatus {
        let (name, child) = &mut self.processes[index];
        let name = name.clone();
        wait_until(&format!("{name} exits"), within, || {
            child.try_wait().expect("waitpid")
        })
    }

    /// SIGTERM to every process still running, SIGKILL to those still there after the grace.
    /// Returns the names of the ones that needed SIGKILL.
    fn stop_all(&mut self) -> Vec<String> {
        for (_, child) in &mut self.processes {
            if let Ok(None) = child.try_wait() {
                // SAFETY: kill has no memory preconditions; the pid is our unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut killed = Vec::new();
        for (name, child) in &mut self.processes {
            loop {
                match child.try_wait() {
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Ok(None) => {
                        killed.push(name.clone());
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    _ => break,
                }
            }
        }
        killed
    }

    fn print_log_tails(&self) {
        for (name, path) in &self.logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!("----- {name}: last {} lines -----", lines.len() - from);
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_all();
        if std::thread::panicking() {
            self.print_log_tails();
        }
        for instance in &self.instances {
            if let Err(e) = program::detach(instance) {
                eprintln!("removing filter {}: {e}", instance.name());
            }
        }
        for ns in self.validators.iter().chain([&self.attacker, &self.hub]) {
            delete_netns(ns);
        }
    }
}

/// Packets validator `maps` dropped because their source was blocklisted.
fn blocklisted_drops(maps: &Maps) -> u64 {
    maps.stats()
        .expect("reading the filter's counters")
        .get(Verdict::Drop, Reason::Blocklisted)
        .packets
}

fn rate_limited_drops(maps: &Maps) -> u64 {
    maps.stats()
        .expect("reading the filter's counters")
        .get(Verdict::Drop, Reason::RateLimited)
        .packets
}

/// The reason code of the block that decides for `addr` now, if any.
fn kernel_block_reason(maps: &Maps, addr: Ipv4Addr) -> Option<u32> {
    maps.why(IpAddr::V4(addr))
        .expect("reading the filter's rules")
        .deciding_block()
        .map(|(_, entry)| entry.reason)
}

/// Plain TCP connections to `target`, paced, held open; stops early once the source is blocked.
/// Returns the connections that opened and how many connects went unanswered.
fn flood(target: SocketAddr) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::new();
    let (mut unanswered, mut in_a_row) = (0, 0);
    for _ in 0..FLOOD_CONNECTIONS {
        let started = Instant::now();
        match TcpStream::connect_timeout(&target, FLOOD_CONNECT_TIMEOUT) {
            Ok(stream) => {
                open.push(stream);
                in_a_row = 0;
            }
            Err(_) => {
                unanswered += 1;
                in_a_row += 1;
                if in_a_row >= FLOOD_GIVE_UP_AFTER {
                    break;
                }
            }
        }
        if let Some(wait) = FLOOD_EVERY.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    (open, unanswered)
}

#[test]
fn attackers_are_banned_into_the_kernel_while_honest_validators_keep_making_blocks() {
    if std::env::var(ROLE_ENV).is_ok() || !privileged("netns attack test") {
        return;
    }
    let started = Instant::now();
    let test = TestChain::new(VALIDATORS, 2, SEED);
    let mut lab = Lab::new();
    for i in 0..VALIDATORS {
        lab.start_validator(&test, i);
    }
    let heights = lab.wait_for_heights(&[START_HEIGHT; VALIDATORS], Duration::from_secs(40));
    eprintln!(
        "validators at heights {heights:?} after {:?}",
        started.elapsed()
    );
    let maps: Vec<Maps> = (0..VALIDATORS).map(|i| lab.maps(i)).collect();
    for i in 0..VALIDATORS {
        let log = lab.log(&format!("validator {i}"));
        assert!(
            log.contains("kernel telemetry attached for P2P port")
                && !log.contains("kernel telemetry NOT attached")
                && !log.contains("NOT attached ("),
            "validator {i} did not attach every telemetry program:\n{log}"
        );
    }

    // Attack 1: a libp2p peer gossips transactions with invalid signatures to validator 0.
    let before = blocklisted_drops(&maps[0]);
    let attack = Instant::now();
    let attacker = lab.start_attacker();
    let reason = wait_until(
        "validator 0 blocks the attacker in the kernel",
        Duration::from_secs(10),
        || kernel_block_reason(&maps[0], ATTACKER_IP),
    );
    let ban1_after = attack.elapsed();
    assert_eq!(
        BanReason::from_code(reason),
        Some(BanReason::InvalidSignature),
        "reason of validator 0's block"
    );
    let at_ban1 = blocklisted_drops(&maps[0]);
    let status = lab.wait_exit(attacker, ATTACK_FOR + Duration::from_secs(10));
    assert!(status.success(), "the attacker failed: {status}");
    let drops1 = blocklisted_drops(&maps[0]) - at_ban1;
    assert!(
        drops1 > 0,
        "no packet of the attacker's re-dials was dropped as blocklisted by validator 0"
    );
    let (line1, us1) = ban_line(&lab.log("validator 0"), BanReason::InvalidSignature)
        .expect("validator 0 logged the invalid_signature ban");
    let attacker_summary = lab
        .log("attacker")
        .lines()
        .filter(|l| l.starts_with("attacker:"))
        .collect::<Vec<_>>()
        .join("\n");

    // Attack 2: plain TCP connections to validator 1, none of which ever speaks.
    let before2 = blocklisted_drops(&maps[1]);
    let rate_limited_before = rate_limited_drops(&maps[1]);
    let attack = Instant::now();
    let ns = lab.attacker.clone();
    let target = SocketAddr::new(IpAddr::V4(validator_ip(1)), PORT);
    let flooder = std::thread::spawn(move || {
        netns::enter(&ns).expect("entering the attacker's namespace");
        flood(target)
    });
    let reason = wait_until(
        "validator 1 blocks the flooding address in the kernel",
        Duration::from_secs(10),
        || kernel_block_reason(&maps[1], ATTACKER_IP),
    );
    let ban2_after = attack.elapsed();
    let at_ban2 = blocklisted_drops(&maps[1]);
    let (open, unanswered) = flooder.join().expect("flood thread");
    let reason2 = BanReason::from_code(reason);
    assert!(
        matches!(
            reason2,
            Some(BanReason::ConnectionFlood | BanReason::HandshakeFailures)
        ),
        "reason of validator 1's block: {reason2:?}"
    );
    let drops2 = blocklisted_drops(&maps[1]) - at_ban2;
    assert!(
        drops2 > 0,
        "no packet of the flood was dropped as blocklisted by validator 1"
    );
    assert_eq!(
        rate_limited_drops(&maps[1]),
        rate_limited_before,
        "the flood was paced under the SYN budget: the rate limit must not be what stopped it"
    );
    let reason2 = reason2.expect("known reason");
    let (line2, us2) =
        ban_line(&lab.log("validator 1"), reason2).expect("validator 1 logged the flood ban");
    let opened = open.len();
    drop(open);

    // Honest validators keep working, and none of them is blocked anywhere.
    let after_attacks: Vec<u64> = (0..VALIDATORS).map(|i| lab.height(i)).collect();
    let target: Vec<u64> = after_attacks.iter().map(|h| h + MORE_HEIGHTS).collect();
    let heights = lab.wait_for_heights(&target, Duration::from_secs(40));
    for (i, m) in maps.iter().enumerate() {
        for j in 0..VALIDATORS {
            let why = m.why(IpAddr::V4(validator_ip(j))).expect("why");
            assert!(
                why.exact.is_none() && why.prefix.is_none(),
                "validator {i} has a block for validator {j}: {why}"
            );
            assert!(
                why.allow.is_some(),
                "validator {i} does not allow validator {j}"
            );
        }
    }
    drop(maps);
    let killed = lab.stop_all();

    eprintln!("attack 1 (invalid signatures to validator 0):");
    eprintln!("  {attacker_summary}");
    eprintln!("  kernel block after {ban1_after:?}; ban written in {us1} µs");
    eprintln!("  {line1}");
    eprintln!(
        "  Drop/Blocklisted on validator 0: {} until the test saw the block, +{drops1} after",
        at_ban1 - before
    );
    eprintln!("attack 2 (TCP connection flood to validator 1):");
    eprintln!("  {opened} connections opened, {unanswered} connects unanswered");
    eprintln!(
        "  kernel block ({}) after {ban2_after:?}; ban written in {us2} µs",
        reason2.name()
    );
    eprintln!("  {line2}");
    eprintln!(
        "  Drop/Blocklisted on validator 1: {} until the test saw the block, +{drops2} after",
        at_ban2 - before2
    );
    eprintln!("heights after the attacks {after_attacks:?}, then {heights:?}");
    eprintln!("needed SIGKILL after SIGTERM: {killed:?}");
    eprintln!("total {:?}", started.elapsed());
}

/// The attacker's side of attack 1, when the main test re-executes this binary inside the
/// attacker's namespace with [`ROLE_ENV`] set; otherwise nothing.
#[test]
fn attacker_role_gossips_invalid_signatures_when_selected() {
    if std::env::var(ROLE_ENV).as_deref() != Ok(ATTACKER_ROLE) {
        return;
    }
    let _ = env_logger::builder().try_init();
    let test = TestChain::new(VALIDATORS, 2, SEED);
    let key = derived_key(SEED, "attacker", 0);
    let target = validator_addr(&test, 0);
    let forged: Vec<Vec<u8>> = (0..INVALID_TXS as u64)
        .map(|n| forged_transaction(&test, n))
        .collect();
    let status = Status {
        genesis: test.genesis.hash(),
        height: 0,
        tip: test.genesis.hash(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let config = NetworkConfig {
            bootstrap: vec![target.clone()],
            kademlia: false,
            ..NetworkConfig::default()
        };
        let mut network = Network::new(
            &key,
            test.genesis.chain_id.clone(),
            Arc::new(MemStore::new()),
            config,
            None,
        )
        .expect("the attacker's network starts");
        let started = Instant::now();
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        let (mut sent, mut connections, mut redials) = (0, 0, 0);
        let mut last_dial = Instant::now();
        while started.elapsed() < ATTACK_FOR {
            tokio::select! {
                event = network.next() => match event {
                    NetworkEvent::Gossip { from, id, gossip } => {
                        let kind = match gossip {
                            Gossip::Transaction(_) => TopicKind::Transactions,
                            Gossip::Consensus(_) => TopicKind::Consensus,
                            Gossip::Block(_) => TopicKind::Blocks,
                        };
                        network.validated(&id, from, kind, Validation::Accept);
                    }
                    // Answered like a node at genesis, so the only offence is the signatures.
                    NetworkEvent::SyncRequest { channel, .. } => {
                        network.respond(channel, SyncResponse::Status(status));
                    }
                    NetworkEvent::Connected(peer) => {
                        connections += 1;
                        eprintln!("{:?}: connected to {peer}", started.elapsed());
                    }
                    NetworkEvent::Disconnected(peer) => {
                        eprintln!("{:?}: disconnected from {peer}", started.elapsed());
                    }
                    _ => {}
                },
                _ = tick.tick() => {
                    if sent < forged.len()
                        && network.topic_peers(TopicKind::Transactions) > 0
                        && network.publish(TopicKind::Transactions, forged[sent].clone())
                    {
                        sent += 1;
                        eprintln!("{:?}: published invalid transaction {sent}", started.elapsed());
                    }
                    if network.connected_peers().is_empty() && last_dial.elapsed() >= REDIAL_EVERY {
                        last_dial = Instant::now();
                        redials += 1;
                        network.dial(target.clone());
                    }
                }
            }
        }
        println!(
            "attacker: {connections} connections, {sent} invalid transactions published, \
             {redials} re-dials in {ATTACK_FOR:?}"
        );
    });
}

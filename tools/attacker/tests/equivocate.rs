//! `attacker equivocate` against four real `node run` validators on loopback: the byzantine
//! validator double-signs, the honest ones log the equivocation, slash its stake, punish no one
//! else, and keep finalizing. No root needed: no namespaces, no XDP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use types::{ChainId, Genesis, GenesisAccount, GenesisValidator, SecretKey};

/// Honest validators.
const HONEST: usize = 4;
/// Stake of each honest validator.
const HONEST_STAKE: u64 = 1_000_000;
/// Stake of the byzantine validator: the honest ones are a quorum without it.
const BYZANTINE_STAKE: u64 = 250_000;
/// Balance of each honest validator, for the fees of its slashing transactions.
const BALANCE: u64 = 1_000_000_000_000;
/// Height the network reaches before the attack.
const START_HEIGHT: u64 = 2;
/// Heights the network makes after the attack.
const MORE_HEIGHTS: u64 = 3;
/// Slots the attacker offends in.
const MAX_OFFENCES: &str = "12";
/// The attacker's longest run.
const ATTACK_FOR: &str = "20s";
/// Time allowed for each wait.
const WAIT: Duration = Duration::from_secs(20);
/// The nodes' log filter: the consensus library's per-vote lines would bury the rest.
const NODE_LOG: &str = "info,arc_malachitebft_core_consensus=warn,libp2p_gossipsub=error";
/// Lines of each log printed when the test fails.
const LOG_TAIL_LINES: usize = 30;

/// The `node` binary, built next to the attacker by a workspace `cargo test`.
fn node_bin() -> PathBuf {
    let attacker = Path::new(env!("CARGO_BIN_EXE_attacker"));
    let node = attacker.with_file_name("node");
    assert!(
        node.is_file(),
        "{} is missing: build it first (`cargo build -p node`, or run the workspace's tests)",
        node.display()
    );
    node
}

/// A port base in 20000..60000, 100 apart, likely different between concurrent runs.
fn port_base() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    20_000 + ((nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 400) as u16 * 100
}

/// Writes `key`'s seed as a key file (64 hex digits, mode 0600).
fn write_key(path: &Path, key: &SecretKey) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("a new key file");
    writeln!(file, "{}", hex::encode(key.seed())).expect("writing the key");
}

/// A blocking `GET` on loopback: the status and body.
fn get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

fn get_json(url: &str) -> Option<serde_json::Value> {
    let (status, body) = get(url)?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// A running `node run`, killed on drop; its stderr collected.
struct NodeProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Four honest validators and the byzantine one's key, in a temporary directory.
struct Net {
    dir: tempfile::TempDir,
    keys: Vec<SecretKey>,
    byzantine: SecretKey,
    base: u16,
    nodes: Vec<NodeProcess>,
}

impl Net {
    fn new() -> Net {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let keys: Vec<SecretKey> = (0..HONEST).map(|_| SecretKey::generate()).collect();
        let byzantine = SecretKey::generate();
        let genesis = Genesis::new(
            ChainId::new("equivocate-test").expect("a valid chain id"),
            p2p::clock::now_ms(),
            keys.iter()
                .map(|k| GenesisAccount {
                    key: k.public_key(),
                    balance: BALANCE,
                })
                .collect(),
            keys.iter()
                .map(|k| GenesisValidator {
                    key: k.public_key(),
                    stake: HONEST_STAKE,
                })
                .chain([GenesisValidator {
                    key: byzantine.public_key(),
                    stake: BYZANTINE_STAKE,
                }])
                .collect(),
        )
        .expect("a valid genesis");
        std::fs::write(dir.path().join("genesis.toml"), genesis.to_toml()).expect("genesis");
        for (i, key) in keys.iter().enumerate() {
            let node = dir.path().join(format!("node-{i}"));
            std::fs::create_dir(&node).expect("a node directory");
            write_key(&node.join("identity.key"), key);
        }
        write_key(&dir.path().join("byzantine.key"), &byzantine);
        Net {
            dir,
            keys,
            byzantine,
            base: port_base(),
            nodes: Vec::new(),
        }
    }

    fn genesis_path(&self) -> PathBuf {
        self.dir.path().join("genesis.toml")
    }

    fn p2p_addr(&self, i: usize) -> String {
        let peer = p2p::peer_id_of(&self.keys[i]).expect("an Ed25519 key is a peer id");
        format!(
            "/ip4/127.0.0.{}/tcp/{}/p2p/{peer}",
            i + 1,
            self.base + i as u16
        )
    }

    fn api(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.base + 50 + i as u16)
    }

    fn start(&mut self, node: &Path) {
        for i in 0..HONEST {
            let dir = self.dir.path().join(format!("node-{i}"));
            let mut command = Command::new(node);
            command
                .arg("run")
                .arg("--data-dir")
                .arg(&dir)
                .arg("--genesis")
                .arg(self.genesis_path())
                .arg("--key")
                .arg(dir.join("identity.key"))
                .args([
                    "--listen",
                    &format!("/ip4/127.0.0.{}/tcp/{}", i + 1, self.base + i as u16),
                ])
                .args(["--no-kademlia", "--no-xdp", "--no-admin"])
                .args(["--propose-timeout-ms", "200"])
                .args([
                    "--api-listen",
                    &format!("127.0.0.1:{}", self.base + 50 + i as u16),
                ]);
            for j in (0..HONEST).filter(|j| *j != i) {
                command.args(["--peer", &self.p2p_addr(j)]);
            }
            // Every node dials from 127.0.0.1: without the allowlist, the per-address
            // connection limit would count them all as one peer.
            command.args(["--allow", "127.0.0.0/8"]);
            let mut child = command
                .env("RUST_LOG", NODE_LOG)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("node run starts");
            let log = Arc::new(Mutex::new(Vec::new()));
            let stderr = child.stderr.take().expect("piped stderr");
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
            });
            self.nodes.push(NodeProcess { child, log });
        }
    }

    fn height(&self, i: usize) -> u64 {
        get_json(&format!("{}/v1/status", self.api(i)))
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// Stakes by key, from node `i`'s `/v1/validators`.
    fn stakes(&self, i: usize) -> Option<Vec<(String, u64)>> {
        let json = get_json(&format!("{}/v1/validators", self.api(i)))?;
        json["validators"]
            .as_array()?
            .iter()
            .map(|v| Some((v["key"].as_str()?.to_string(), v["stake"].as_u64()?)))
            .collect()
    }

    /// Waits for `f` to give a value; panics with `what` after [`WAIT`].
    fn wait<T>(&self, what: &str, mut f: impl FnMut(&Net) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(t) = f(self) {
                return t;
            }
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let log = node.log();
            let from = log.len().saturating_sub(LOG_TAIL_LINES);
            eprintln!("----- node {i}: last {} log lines -----", log.len() - from);
            for line in &log[from..] {
                eprintln!("{line}");
            }
        }
    }
}

#[test]
fn an_equivocating_validator_is_slashed_and_the_chain_keeps_finalizing() {
    let node = node_bin();
    let mut net = Net::new();
    net.start(&node);
    for i in 0..HONEST {
        net.wait(&format!("node {i} reaches height {START_HEIGHT}"), |n| {
            (n.height(i) >= START_HEIGHT).then_some(())
        });
    }

    let mut command = Command::new(env!("CARGO_BIN_EXE_attacker"));
    command
        .arg("equivocate")
        .arg("--genesis")
        .arg(net.genesis_path())
        .arg("--key")
        .arg(net.dir.path().join("byzantine.key"))
        .args(["--api", &net.api(0)])
        .args(["--duration", ATTACK_FOR, "--max-offences", MAX_OFFENCES]);
    for i in 0..HONEST {
        command.args(["--peer", &net.p2p_addr(i)]);
    }
    let out = command.output().expect("the attacker runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("----- attacker -----\n{stderr}");
    assert!(out.status.success(), "attacker failed: {}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let summary: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(summary["attack"], "equivocate");
    let double_votes = summary["double_votes"].as_u64().expect("double_votes");
    let double_proposals = summary["double_proposals"]
        .as_u64()
        .expect("double_proposals");
    assert!(double_votes > 0, "{summary}");
    assert_eq!(
        (double_votes + double_proposals).to_string(),
        MAX_OFFENCES,
        "the bound is reached before the duration: {summary}"
    );
    assert!(summary["heights"].as_array().is_some_and(|h| !h.is_empty()));

    let byzantine = net.byzantine.public_key().to_string();
    let stakes = net.wait("an honest node reports the byzantine stake slashed", |n| {
        let stakes = n.stakes(1)?;
        let stake = stakes.iter().find(|(k, _)| *k == byzantine)?.1;
        (stake < BYZANTINE_STAKE).then_some(stakes)
    });
    eprintln!("stakes after the attack: {stakes:?}");
    for key in &net.keys {
        let key = key.public_key().to_string();
        assert!(
            stakes.contains(&(key.clone(), HONEST_STAKE)),
            "honest validator {key} punished: {stakes:?}"
        );
    }
    let logged = net
        .nodes
        .iter()
        .flat_map(|n| n.log())
        .filter(|l| l.contains("equivocated at height"))
        .count();
    assert!(logged > 0, "no node logged the equivocation");

    let height = net.height(0);
    net.wait("the chain keeps finalizing after the attack", |n| {
        (0..HONEST)
            .all(|i| n.height(i) >= height + MORE_HEIGHTS)
            .then_some(())
    });
}

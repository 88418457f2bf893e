//! Shared by the node's integration tests: the privileged-test guard; local networks of
//! `node run` processes made by `node init`, started as they are or inside a network namespace
//! ([`netns`]); and the small clients the tests talk to them with (transfers, HTTP, JSON errors).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

pub mod netns;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use node::config::Config;
use reqwest::{RequestBuilder, StatusCode, header::HeaderMap};
use serde_json::Value;
use types::{Encode, Payload, PublicKey, SecretKey, SignedTransaction, Transaction};

/// True when the test can run. Without root it says why; under CI (`CI=true`) a privileged
/// test that cannot run fails instead of skipping.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = format!("{test} needs root (XDP attach, network namespaces): run the suite as root");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true a privileged test that cannot run is a failure");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// The node binary under test.
pub fn node_bin() -> &'static str {
    env!("CARGO_BIN_EXE_node")
}

/// A local network made by `node init --validators N` in a temporary directory, with random
/// ports. Nodes are started with [`LocalNet::start`]; every child is killed on drop.
pub struct LocalNet {
    pub dir: tempfile::TempDir,
    pub count: usize,
    pub base_port: u16,
    pub api_base_port: u16,
    pub nodes: Vec<Option<NodeProcess>>,
}

/// A running `node run`, killed (SIGKILL) on drop. Its stderr is collected in `log`.
pub struct NodeProcess {
    pub child: Child,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends a signal.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGTERM, asserts that the node exits successfully within 15 s, and returns its
    /// whole log.
    pub fn terminate(&mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(15))
            .expect("the node stops within 15 s of SIGTERM");
        assert!(status.success(), "exit status {status}");
        // The reader thread may lag the exit by a moment.
        std::thread::sleep(Duration::from_millis(200));
        self.log()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port base in 20000..60000, 100 apart: different for every call in one process (a
/// counter) and likely different between processes (pid and clock).
pub fn random_port_base() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().wrapping_mul(2_654_435_761)
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    20_000 + (seed.wrapping_add(n) % 400) as u16 * 100
}

impl LocalNet {
    /// Runs `node init --validators count`.
    pub fn init(count: usize) -> LocalNet {
        let dir = tempfile::tempdir().expect("temporary directory");
        let base = random_port_base();
        let (base_port, api_base_port) = (base, base + 50);
        let out = Command::new(node_bin())
            .args(["init", "--data-dir"])
            .arg(dir.path())
            .args(["--validators", &count.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .args(["--api-base-port", &api_base_port.to_string()])
            .output()
            .expect("node init runs");
        assert!(
            out.status.success(),
            "node init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LocalNet {
            dir,
            count,
            base_port,
            api_base_port,
            nodes: (0..count).map(|_| None).collect(),
        }
    }

    /// Directory of node `i`.
    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    /// Config file of node `i`.
    pub fn config(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("node.toml")
    }

    /// Base URL of node `i`'s public API.
    pub fn api(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.api_base_port + 2 * i as u16)
    }

    /// Base URL of node `i`'s admin API.
    pub fn admin(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.api_base_port + 2 * i as u16 + 1)
    }

    /// The admin token of node `i`.
    pub fn admin_token(&self, i: usize) -> String {
        std::fs::read_to_string(self.node_dir(i).join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string()
    }

    /// The identity seed of node `i`.
    pub fn key(&self, i: usize) -> types::SecretKey {
        let text =
            std::fs::read_to_string(self.node_dir(i).join("identity.key")).expect("identity");
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).expect("64 hex digits");
        types::SecretKey::from_seed(seed)
    }

    /// The genesis.
    pub fn genesis(&self) -> types::Genesis {
        let text = std::fs::read_to_string(self.dir.path().join("genesis.toml")).expect("genesis");
        types::Genesis::from_toml(&text).expect("valid genesis")
    }

    /// Node `i`'s configuration as written.
    pub fn load_config(&self, i: usize) -> Config {
        Config::load(&self.config(i)).expect("node init writes a valid node.toml")
    }

    /// Rewrites node `i`'s `node.toml` through `edit`.
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(&mut Config)) {
        let mut config = self.load_config(i);
        edit(&mut config);
        std::fs::write(self.config(i), config.to_toml().expect("a TOML config"))
            .expect("writing node.toml");
    }

    /// A transfer of `amount` to `to` from `key` with `nonce` and a fee of 1, signed for this
    /// network's chain.
    pub fn transfer(
        &self,
        key: &SecretKey,
        nonce: u64,
        to: PublicKey,
        amount: u64,
    ) -> SignedTransaction {
        Transaction {
            chain_id: self.genesis().chain_id,
            sender: key.public_key(),
            nonce,
            fee: 1,
            payload: Payload::Transfer { to, amount },
        }
        .sign(key)
    }

    /// Starts node `i` with `node run --config <its node.toml> --propose-timeout-ms 200` and
    /// `extra` arguments.
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        self.start_wrapped(i, &[], extra);
    }

    /// Like [`LocalNet::start`], run through `wrapper` (a program and its arguments, such as
    /// `setpriv --reuid=65534 ...`) when it is not empty.
    pub fn start_wrapped(&mut self, i: usize, wrapper: &[&str], extra: &[&str]) {
        let command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(node_bin());
                c
            }
            None => Command::new(node_bin()),
        };
        self.spawn(i, command, extra);
    }

    /// Like [`LocalNet::start`], inside network namespace `ns` (see [`netns::exec_in_netns`]:
    /// the node dies with the calling thread).
    pub fn start_in_netns(&mut self, i: usize, ns: &str, extra: &[&str]) {
        let mut command = Command::new(node_bin());
        netns::exec_in_netns(&mut command, ns);
        self.spawn(i, command, extra);
    }

    /// Spawns `command` (which runs the node binary) as node `i` with the arguments of
    /// [`LocalNet::start`], collecting its stderr.
    fn spawn(&mut self, i: usize, mut command: Command, extra: &[&str]) {
        let mut child = command
            .arg("run")
            .arg("--config")
            .arg(self.config(i))
            .args(["--propose-timeout-ms", "200"])
            .args(extra)
            .env(
                "RUST_LOG",
                "info,arc_malachitebft_core_consensus=warn,libp2p_gossipsub=error",
            )
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
        self.nodes[i] = Some(NodeProcess { child, log });
    }

    /// Prints the last `lines` lines of every started node's log to stderr.
    pub fn eprint_logs(&self, lines: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let log = node.log();
            let from = log.len().saturating_sub(lines);
            eprintln!("----- node {i}: last {} log lines -----", log.len() - from);
            for line in &log[from..] {
                eprintln!("{line}");
            }
        }
    }

    /// Node `i`'s process.
    pub fn node(&mut self, i: usize) -> &mut NodeProcess {
        self.nodes[i].as_mut().expect("node started")
    }

    /// Stops node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    /// Waits until node `i` answers `GET /health`.
    pub fn wait_healthy(&mut self, i: usize, timeout: Duration) {
        let url = format!("{}/health", self.api(i));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_get(&url).is_some_and(|(status, _)| status == 200) {
                return;
            }
            if let Some(node) = self.nodes[i].as_mut()
                && let Ok(Some(status)) = node.child.try_wait()
            {
                panic!("node {i} exited with {status}:\n{}", node.log().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.nodes[i].as_ref().map(|n| n.log()).unwrap_or_default();
        panic!(
            "node {i} not healthy within {timeout:?}:\n{}",
            log.join("\n")
        );
    }

    /// Node `i`'s `/v1/status` as JSON, if it answers.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let (status, body) = http_get(&format!("{}/v1/status", self.api(i)))?;
        (status == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// Node `i`'s final height, 0 when it does not answer.
    pub fn height(&self, i: usize) -> u64 {
        self.status(i)
            .and_then(|s| s["height"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until node `i` reaches `height`.
    pub fn wait_height(&self, i: usize, height: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.height(i) >= height {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.nodes[i].as_ref().map(|n| n.log()).unwrap_or_default();
        panic!(
            "node {i} did not reach height {height} within {timeout:?} (at {}):\n{}",
            self.height(i),
            log.join("\n")
        );
    }
}

/// The body of `POST /v1/transactions` submitting `tx`: `{"tx":"<hex of its encoding>"}`.
pub fn submit_body(tx: &SignedTransaction) -> String {
    format!("{{\"tx\":\"{}\"}}", hex::encode(tx.to_bytes()))
}

/// A blocking HTTP GET on loopback without a client library: (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    http_request("GET", url, "", "")
}

/// A blocking HTTP POST of a JSON body on loopback, with a bearer `token` if given: (status,
/// body).
pub fn http_post(url: &str, body: &str, token: Option<&str>) -> Option<(u16, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let headers = format!(
        "{auth}Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    http_request("POST", url, &headers, body)
}

/// One HTTP/1.1 request over a fresh TCP connection; `headers` are whole lines (each ending in
/// CRLF) after `Host` and `Connection`.
fn http_request(method: &str, url: &str, headers: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}\r\n{body}"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}

/// Sends `request` and reads the answer: its status, headers, and body as JSON (`Null` when
/// empty); fails the test when the body is not JSON.
pub async fn send(request: RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let response = request.send().await.expect("the request is answered");
    let status = response.status();
    let headers = response.headers().clone();
    let url = response.url().clone();
    let text = response.text().await.expect("a body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{url} answered {status} with non-JSON `{text}`: {e}"))
    };
    (status, headers, value)
}

/// The code of a JSON error answer (`{"error": {"code": ..., "message": ...}}`), empty if none.
pub fn error_code(value: &Value) -> &str {
    value["error"]["code"].as_str().unwrap_or_default()
}

/// The message of a JSON error answer, empty if none.
pub fn error_message(value: &Value) -> &str {
    value["error"]["message"].as_str().unwrap_or_default()
}

//! The admin API of real `node run` processes: operator blocks, allows and bans enforced by the
//! connection gate between two validators without XDP; the bearer token on every route; a
//! token file others can read keeping the admin API off; bad input answered with specific
//! codes; database checkpoints of a running validator that open as a store holding its blocks,
//! and their bound; and, as root, the same routes editing the XDP filter's kernel maps on a veth
//! inside a network namespace.
//!
//! # Design
//! - Each test makes its own network with [`LocalNet`] (`node init`, random ports) and edits
//!   the generated `node.toml` where it needs another setting.
//! - The privileged test starts the node inside the node's namespace of an [`XdpNamespace`]
//!   and moves its own thread (the only thread of its runtime) there too, so its HTTP requests
//!   reach the node's loopback listeners.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use firewall::Maps;
use node::api::admin::{CHECKPOINTS_DIR, MAX_CHECKPOINTS, ROUTES};
use node::config::{Config, OnExit};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use storage::{RocksStore, StoreOptions};

use common::netns::{NODE_IFACE, XdpNamespace};
use common::{LocalNet, error_code, error_message, privileged, send};

/// A node gets this long to answer `/health` after it starts.
const START_WITHIN: Duration = Duration::from_secs(90);
/// Lines of a node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// The network re-dials a bootstrap peer every 5 s; a peer still away after this long was
/// refused at least once.
const REFUSED_FOR: Duration = Duration::from_secs(8);
/// Two validators find each other (again) within this.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// One HTTP request, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a raw TCP probe waits for the node's first bytes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Operator blocks and bans of these tests, seconds.
const TTL_SECS: u64 = 600;
/// The multistream-select header a libp2p dialer opens a TCP connection with (length-prefixed).
const MULTISTREAM_HEADER: &[u8] = b"\x13/multistream/1.0.0\n";
/// Every validator of a local network listens on its own loopback address inside this net.
const LOOPBACK: &str = "127.0.0.0/8";
/// The validator reaches a height within this.
const HEIGHT_WITHIN: Duration = Duration::from_secs(60);
/// The admin route making a database checkpoint.
const CHECKPOINT: &str = "/v1/admin/db/checkpoint";

/// A [`LocalNet`] and an HTTP client; prints the end of every node's log when the test fails.
struct Lab {
    net: LocalNet,
    http: reqwest::Client,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.net.eprint_logs(LOG_TAIL_LINES);
        }
    }
}

impl Lab {
    /// `node init` of `validators` validators; `edit` may change each node's configuration
    /// before it is written back.
    fn init(validators: usize, edit: impl Fn(&mut Config)) -> Lab {
        let net = LocalNet::init(validators);
        for i in 0..validators {
            net.edit_config(i, &edit);
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("HTTP client");
        Lab { net, http }
    }

    /// Node `i`'s configuration as written.
    fn config(&self, i: usize) -> Config {
        self.net.load_config(i)
    }

    /// Node `i`'s peer id.
    fn peer_id(&self, i: usize) -> String {
        p2p::peer_id_of(&self.net.key(i))
            .expect("an Ed25519 key is a peer id")
            .to_string()
    }

    /// Node `i`'s P2P TCP address.
    fn p2p_addr(&self, i: usize) -> SocketAddr {
        let config = self.config(i);
        config
            .p2p
            .listen
            .iter()
            .find_map(|a| {
                let (ip, port) = a.strip_prefix("/ip4/")?.split_once("/tcp/")?;
                Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
            })
            .expect("a TCP listen address")
    }

    /// Starts every node and waits until each answers `/health`.
    fn start_all(&mut self) {
        for i in 0..self.net.count {
            self.net.start(i, &[]);
        }
        for i in 0..self.net.count {
            self.net.wait_healthy(i, START_WITHIN);
        }
    }

    /// A request to node `i`'s admin API, without credentials.
    fn admin_request(&self, i: usize, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.net.admin(i)))
    }

    /// An authorized admin request with an optional JSON body.
    async fn admin(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .admin_request(i, method, path)
            .bearer_auth(self.net.admin_token(i));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, _, value) = send(request).await;
        (status, value)
    }

    /// An authorized admin request that must succeed.
    async fn admin_ok(&self, i: usize, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.admin(i, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {value}");
        value
    }

    async fn public_get(&self, i: usize, path: &str) -> (StatusCode, Value) {
        let (status, _, value) = send(self.http.get(format!("{}{path}", self.net.api(i)))).await;
        (status, value)
    }

    /// The peer ids node `i` is connected to.
    async fn peers(&self, i: usize) -> Vec<String> {
        let (status, value) = self.public_get(i, "/v1/peers").await;
        assert_eq!(status, StatusCode::OK, "/v1/peers: {value}");
        value["peers"]
            .as_array()
            .expect("a peers list")
            .iter()
            .filter_map(|p| p["peer_id"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until node `i` is (or is not) connected to node `j`.
    async fn wait_connected(&self, i: usize, j: usize, connected: bool) {
        let peer = self.peer_id(j);
        let deadline = Instant::now() + CONNECT_WITHIN;
        while self.peers(i).await.contains(&peer) != connected {
            assert!(
                Instant::now() < deadline,
                "node {i} connected to node {j} is not {connected} within {CONNECT_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Checks for [`REFUSED_FOR`] that nodes `i` and `j` stay apart.
    async fn assert_stay_apart(&self, i: usize, j: usize) {
        let (peer_i, peer_j) = (self.peer_id(i), self.peer_id(j));
        let until = Instant::now() + REFUSED_FOR;
        while Instant::now() < until {
            assert!(
                !self.peers(i).await.contains(&peer_j),
                "node {j} got back to node {i}"
            );
            assert!(
                !self.peers(j).await.contains(&peer_i),
                "node {i} got back to node {j}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Opens a TCP connection to a libp2p listener and sends the multistream-select header: true
/// when the listener answers, false when it closes the connection unanswered (refused before
/// the handshake).
fn listener_answers(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).expect("TCP connect");
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .expect("timeout");
    if stream.write_all(MULTISTREAM_HEADER).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => buf[..n].windows(12).any(|w| w == b"/multistream"),
    }
}

/// Finds the ban with `target` in a `{"bans": [...]}` or a ban list.
fn ban_of<'a>(bans: &'a Value, target: &str) -> Option<&'a Value> {
    bans.as_array()?.iter().find(|b| b["target"] == target)
}

fn rule_of<'a>(firewall: &'a Value, kind: &str, net: &str) -> Option<&'a Value> {
    firewall["rules"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind && r["net"] == net)
}

/// Checks the JSON of an operator ban.
fn assert_operator_ban(ban: &Value, target: &str) {
    assert_eq!(ban["target"], target, "{ban}");
    assert_eq!(ban["reason"], "manual", "{ban}");
    assert_eq!(ban["source"], "operator", "{ban}");
    assert_eq!(ban["detail"], "operator via admin API", "{ban}");
    let (since, until) = (
        ban["since_ms"].as_u64().expect("since_ms"),
        ban["until_ms"].as_u64().expect("until_ms"),
    );
    assert_eq!(until - since, TTL_SECS * 1000, "{ban}");
    assert!(ban["offence"].as_u64().is_some_and(|o| o >= 1), "{ban}");
}

#[tokio::test]
async fn operator_blocks_bans_and_allows_are_enforced_by_the_connection_gate_without_xdp() {
    // The validators allowlist nothing here, so that one can block the other's address.
    let mut lab = Lab::init(2, |config| config.p2p.allow.clear());
    lab.start_all();
    lab.wait_connected(0, 1, true).await;
    let p2p0 = lab.p2p_addr(0);
    assert!(listener_answers(p2p0), "node 0's listener does not answer");

    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    assert_eq!(fw["mode"], "userspace", "{fw}");
    assert_eq!(fw["enforcement"], Value::Null, "{fw}");
    assert_eq!(fw["iface"], Value::Null, "{fw}");
    assert_eq!(fw["instance"], Value::Null, "{fw}");
    assert_eq!(fw["rules"], json!([]), "{fw}");
    assert_eq!(fw["bans"], json!([]), "{fw}");
    assert_eq!(fw["allowlist"], json!([]), "{fw}");

    // A blocked net is listed, explained, and lifted.
    let target = "address 198.51.100.0/24";
    let body = json!({"net": "198.51.100.0/24", "ttl_secs": TTL_SECS});
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/firewall/block", Some(body))
        .await;
    assert_operator_ban(&answer["ban"], target);
    assert_eq!(answer["ban"]["addresses"], json!(["198.51.100.0/24"]));
    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    assert!(ban_of(&fw["bans"], target).is_some(), "{fw}");
    let bans = lab
        .admin_ok(0, Method::GET, "/v1/admin/peers/bans", None)
        .await;
    assert_operator_ban(ban_of(&bans["bans"], target).expect("listed"), target);
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/198.51.100.7", None)
        .await;
    assert_eq!(why["address"], "198.51.100.7", "{why}");
    assert_eq!(why["decision"], "blocked", "{why}");
    assert_eq!(why["kernel"], Value::Null, "{why}");
    assert!(ban_of(&why["peers"]["bans"], target).is_some(), "{why}");
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/192.0.2.1", None)
        .await;
    assert_eq!(why["decision"], "none", "{why}");
    let unblock = json!({"net": "198.51.100.0/24"});
    let answer = lab
        .admin_ok(
            0,
            Method::POST,
            "/v1/admin/firewall/unblock",
            Some(unblock.clone()),
        )
        .await;
    assert_eq!(answer, json!({"net": "198.51.100.0/24", "removed": true}));
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/firewall/unblock", Some(unblock))
        .await;
    assert_eq!(answer["removed"], false);
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/198.51.100.7", None)
        .await;
    assert_eq!(why["decision"], "none", "{why}");

    // Blocking the net the other validator connects from closes its connection; its re-dials,
    // and a raw TCP connection from that net, are refused before any handshake; unblocked, it
    // comes back.
    let body = json!({"net": LOOPBACK, "ttl_secs": TTL_SECS});
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/firewall/block", Some(body))
        .await;
    assert_operator_ban(&answer["ban"], &format!("address {LOOPBACK}"));
    lab.wait_connected(0, 1, false).await;
    assert!(
        !listener_answers(p2p0),
        "a connection from a blocked net was answered"
    );
    lab.assert_stay_apart(0, 1).await;
    let answer = lab
        .admin_ok(
            0,
            Method::POST,
            "/v1/admin/firewall/unblock",
            Some(json!({"net": LOOPBACK})),
        )
        .await;
    assert_eq!(answer["removed"], true, "{answer}");
    lab.wait_connected(0, 1, true).await;
    assert!(listener_answers(p2p0), "an unblocked net is still refused");

    // A banned peer is dropped and kept out; unbanned, it comes back.
    let peer1 = lab.peer_id(1);
    let target = format!("peer {peer1}");
    let body = json!({"peer": peer1, "ttl_secs": TTL_SECS});
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/peers/ban", Some(body))
        .await;
    assert_operator_ban(&answer["ban"], &target);
    let addresses = answer["ban"]["addresses"].as_array().expect("addresses");
    assert!(!addresses.is_empty(), "{answer}");
    let seen_at = addresses[0]
        .as_str()
        .and_then(|a| a.strip_suffix("/32"))
        .expect("a host address")
        .to_string();
    assert!(seen_at.starts_with("127."), "{answer}");
    lab.wait_connected(0, 1, false).await;
    let bans = lab
        .admin_ok(0, Method::GET, "/v1/admin/peers/bans", None)
        .await;
    assert!(ban_of(&bans["bans"], &target).is_some(), "{bans}");
    let why = lab
        .admin_ok(
            0,
            Method::GET,
            &format!("/v1/admin/firewall/why/{seen_at}"),
            None,
        )
        .await;
    assert_eq!(why["decision"], "blocked", "{why}");
    assert!(ban_of(&why["peers"]["bans"], &target).is_some(), "{why}");
    lab.assert_stay_apart(0, 1).await;
    let unban = json!({"peer": peer1});
    let answer = lab
        .admin_ok(
            0,
            Method::POST,
            "/v1/admin/peers/unban",
            Some(unban.clone()),
        )
        .await;
    assert_eq!(answer, json!({"peer": peer1, "removed": true}));
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/peers/unban", Some(unban))
        .await;
    assert_eq!(answer["removed"], false);
    lab.wait_connected(0, 1, true).await;
    let bans = lab
        .admin_ok(0, Method::GET, "/v1/admin/peers/bans", None)
        .await;
    assert_eq!(bans, json!({"bans": []}));

    // An allowlisted net is listed, explained, and cannot be blocked.
    let allow = json!({"net": "203.0.113.0/24"});
    let answer = lab
        .admin_ok(
            0,
            Method::POST,
            "/v1/admin/firewall/allow",
            Some(allow.clone()),
        )
        .await;
    assert_eq!(answer, json!({"net": "203.0.113.0/24", "added": true}));
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/firewall/allow", Some(allow))
        .await;
    assert_eq!(answer["added"], false);
    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    assert_eq!(fw["allowlist"], json!(["203.0.113.0/24"]), "{fw}");
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/203.0.113.9", None)
        .await;
    assert_eq!(why["decision"], "allowed", "{why}");
    assert_eq!(why["peers"]["allowlisted"], true, "{why}");
    let (status, value) = lab
        .admin(
            0,
            Method::POST,
            "/v1/admin/firewall/block",
            Some(json!({"net": "203.0.113.8/29"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{value}");
    assert_eq!(error_code(&value), "allowlisted", "{value}");

    // Without the kernel filter there is no kernel mode to switch.
    for mode in ["enforce", "monitor"] {
        let (status, value) = lab
            .admin(
                0,
                Method::PUT,
                "/v1/admin/firewall/mode",
                Some(json!({"mode": mode})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{value}");
        assert_eq!(error_code(&value), "no_kernel_filter", "{value}");
    }
}

#[tokio::test]
async fn every_admin_route_requires_the_bearer_token() {
    let mut lab = Lab::init(1, |_| {});
    lab.start_all();
    let token = lab.net.admin_token(0);
    let wrong = "f".repeat(64);
    assert_ne!(token, wrong);
    let unknown = [
        ("GET", "/v1/admin/nope"),
        ("POST", "/v1/admin/firewall/nope"),
    ];
    for &(method, path) in ROUTES.iter().chain(&unknown) {
        let path = path.replace("{addr}", "192.0.2.1");
        let method: Method = method.parse().expect("an HTTP method");
        let attempts = [
            (None, "missing_token"),
            (Some(format!("Bearer {wrong}")), "invalid_token"),
            (
                Some(format!("Bearer {}", &token[..token.len() - 1])),
                "invalid_token",
            ),
            (Some(format!("Basic {token}")), "missing_token"),
            (Some(token.clone()), "missing_token"),
        ];
        for (authorization, expected) in attempts {
            let mut request = lab.admin_request(0, method.clone(), &path);
            if let Some(value) = &authorization {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let (status, headers, value) = send(request.json(&json!({}))).await;
            let attempt = format!("{method} {path} with {authorization:?}");
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{attempt}");
            assert_eq!(error_code(&value), expected, "{attempt}: {value}");
            let challenge = headers
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{attempt}: {challenge:?}");
        }
    }
    // With the token, each listed route is routed (whatever it says of an empty body).
    for &(method, path) in ROUTES {
        let path = path.replace("{addr}", "192.0.2.1");
        let method: Method = method.parse().expect("an HTTP method");
        let request = lab
            .admin_request(0, method.clone(), &path)
            .bearer_auth(&token);
        let (status, _, value) = send(request.json(&json!({}))).await;
        assert!(
            !matches!(error_code(&value), "not_found" | "method_not_allowed"),
            "{method} {path} is not routed: {status} {value}"
        );
    }
    // The public API serves none of them.
    let (status, value) = lab.public_get(0, "/v1/admin/firewall").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{value}");
}

#[tokio::test]
async fn admin_routes_refuse_bad_input_with_specific_codes() {
    let mut lab = Lab::init(1, |_| {});
    lab.start_all();
    let bad = StatusCode::BAD_REQUEST;
    let cases = [
        (
            "/v1/admin/firewall/block",
            json!({"net": "nope"}),
            "invalid_net",
        ),
        (
            "/v1/admin/firewall/block",
            json!({"net": "198.51.100.7/24"}),
            "invalid_net",
        ),
        (
            "/v1/admin/firewall/block",
            json!({"net": "198.51.100.0/24", "ttl_secs": 0}),
            "invalid_ttl",
        ),
        (
            "/v1/admin/firewall/block",
            json!({"net": "198.51.100.0/24", "reason": "spam"}),
            "invalid_json",
        ),
        (
            "/v1/admin/firewall/block",
            json!({"ttl_secs": 5}),
            "invalid_json",
        ),
        (
            "/v1/admin/firewall/unblock",
            json!({"net": "10.0.0.0/33"}),
            "invalid_net",
        ),
        (
            "/v1/admin/firewall/allow",
            json!({"net": ""}),
            "invalid_net",
        ),
        (
            "/v1/admin/peers/ban",
            json!({"peer": "12D3-not-a-peer"}),
            "invalid_peer_id",
        ),
        (
            "/v1/admin/peers/ban",
            json!({"peer": "x".repeat(1000)}),
            "invalid_peer_id",
        ),
        ("/v1/admin/peers/unban", json!({"peer": 7}), "invalid_json"),
        (
            "/v1/admin/peers/unban",
            json!({"peer": "nope"}),
            "invalid_peer_id",
        ),
    ];
    for (path, body, expected) in cases {
        let (status, value) = lab.admin(0, Method::POST, path, Some(body.clone())).await;
        assert_eq!(
            (status, error_code(&value)),
            (bad, expected),
            "{path} {body}: {value}"
        );
        assert!(!error_message(&value).is_empty(), "{value}");
    }
    let (status, value) = lab
        .admin(
            0,
            Method::PUT,
            "/v1/admin/firewall/mode",
            Some(json!({"mode": "off"})),
        )
        .await;
    assert_eq!(
        (status, error_code(&value)),
        (bad, "invalid_mode"),
        "{value}"
    );
    for addr in ["not-an-ip", "198.51.100.0%2F24", "300.1.1.1"] {
        let path = format!("/v1/admin/firewall/why/{addr}");
        let (status, value) = lab.admin(0, Method::GET, &path, None).await;
        assert_eq!(
            (status, error_code(&value)),
            (bad, "invalid_address"),
            "{path}: {value}"
        );
    }

    let token = lab.net.admin_token(0);
    let raw = |body: String, content_type: Option<&str>| {
        let mut request = lab
            .admin_request(0, Method::POST, "/v1/admin/firewall/block")
            .bearer_auth(&token)
            .body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        request
    };
    let json_type = Some("application/json");
    let (status, _, value) = send(raw("{\"net\": ".into(), json_type)).await;
    assert_eq!(
        (status, error_code(&value)),
        (bad, "invalid_json"),
        "{value}"
    );
    let unsupported = (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let body = "{\"net\": \"192.0.2.1\"}".to_string();
    let (status, _, value) = send(raw(body.clone(), Some("text/plain"))).await;
    assert_eq!((status, error_code(&value)), unsupported, "{value}");
    let (status, _, value) = send(raw(body, None)).await;
    assert_eq!((status, error_code(&value)), unsupported, "{value}");
    let limit = lab.config(0).api.max_body_bytes;
    let huge = json!({"net": "192.0.2.1", "pad": "x".repeat(limit)}).to_string();
    let (status, _, value) = send(raw(huge, json_type)).await;
    assert_eq!(
        (status, error_code(&value)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        "{value}"
    );

    let (status, value) = lab.admin(0, Method::GET, "/v1/admin/nope", None).await;
    assert_eq!(
        (status, error_code(&value)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{value}"
    );
    let (status, value) = lab
        .admin(0, Method::DELETE, "/v1/admin/firewall", None)
        .await;
    assert_eq!(
        (status, error_code(&value)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        "{value}"
    );
    // None of it blocked anything.
    let bans = lab
        .admin_ok(0, Method::GET, "/v1/admin/peers/bans", None)
        .await;
    assert_eq!(bans, json!({"bans": []}));
}

#[tokio::test]
async fn the_admin_api_stays_off_while_others_can_read_its_token_file() {
    let mut lab = Lab::init(1, |_| {});
    let config = lab.config(0);
    let token_file = config.admin_token_path();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644))
        .expect("chmod the token file");
    lab.start_all();
    let refused = TcpStream::connect_timeout(&config.admin.listen, PROBE_TIMEOUT)
        .expect_err("the admin API listens although others can read its token file");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    let log = lab.net.node(0).log();
    let line = log
        .iter()
        .find(|l| l.contains("chmod 600"))
        .unwrap_or_else(|| panic!("no log line says to chmod the token file"));
    assert!(line.contains(&token_file.display().to_string()), "{line}");
    let (status, _) = lab.public_get(0, "/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_checkpoint_of_a_running_validator_opens_and_holds_its_blocks_up_to_the_height() {
    let mut lab = Lab::init(1, |_| {});
    lab.start_all();
    lab.net.wait_height(0, 3, HEIGHT_WITHIN);
    let checkpoints = lab.net.node_dir(0).join(CHECKPOINTS_DIR);

    // No body at all.
    let request = lab
        .admin_request(0, Method::POST, CHECKPOINT)
        .bearer_auth(lab.net.admin_token(0));
    let (status, _, answer) = send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let height = answer["height"].as_u64().expect("a height");
    let created_ms = answer["created_ms"].as_u64().expect("a creation time");
    assert!(height >= 3, "{answer}");
    let path = PathBuf::from(answer["path"].as_str().expect("a path"));
    assert_eq!(path, checkpoints.join(format!("{height}-{created_ms}")));
    {
        let store = RocksStore::open(&path, &StoreOptions::test()).expect("the checkpoint opens");
        let ledger = chain::Ledger::open(Arc::new(store), &lab.net.genesis())
            .expect("the checkpoint holds the chain");
        assert!(ledger.height() >= height, "{} < {height}", ledger.height());
        for h in 1..=height {
            let block = ledger.block(h).expect("read a block");
            assert_eq!(block.map(|b| b.header.height), Some(h), "block {h}");
        }
    }

    // An empty JSON object is fine; anything in it is not.
    let (status, value) = lab
        .admin(0, Method::POST, CHECKPOINT, Some(json!({"name": "x"})))
        .await;
    assert_eq!(
        (status, error_code(&value)),
        (StatusCode::BAD_REQUEST, "invalid_json"),
        "{value}"
    );
    for _ in 1..MAX_CHECKPOINTS {
        let (status, value) = lab
            .admin(0, Method::POST, CHECKPOINT, Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
    }
    let (status, value) = lab
        .admin(0, Method::POST, CHECKPOINT, Some(json!({})))
        .await;
    assert_eq!(
        (status, error_code(&value)),
        (StatusCode::CONFLICT, "too_many_checkpoints"),
        "{value}"
    );
    assert!(error_message(&value).contains("remove old ones"), "{value}");
    let kept = std::fs::read_dir(&checkpoints)
        .expect("the checkpoints directory")
        .count();
    assert_eq!(kept, MAX_CHECKPOINTS);
    // Once the backup tooling removed one, the next is made.
    std::fs::remove_dir_all(&path).expect("remove a checkpoint");
    let (status, value) = lab.admin(0, Method::POST, CHECKPOINT, None).await;
    assert_eq!(status, StatusCode::CREATED, "{value}");
}

/// The block rule that decides for `addr` in the pinned maps, as (net, reason code).
fn kernel_block(maps: &Maps, addr: &str) -> Option<(String, u32)> {
    let addr: IpAddr = addr.parse().expect("an address");
    maps.why(addr)
        .expect("reading the filter's rules")
        .deciding_block()
        .map(|(net, entry)| (net.to_string(), entry.reason))
}

#[tokio::test]
async fn admin_routes_edit_the_kernel_filter_when_xdp_is_attached() {
    if !privileged("admin_routes_edit_the_kernel_filter_when_xdp_is_attached") {
        return;
    }
    // Declared before the lab: removed after its node stopped.
    let ns = XdpNamespace::new("xadm-");
    let instance = ns.instance.name().to_string();
    let mut lab = Lab::init(1, |config| config.firewall.on_exit = OnExit::Detach);
    ns.start_node(&mut lab.net, 0, &[]);
    // This thread is the runtime's only one: its sockets live in the namespace from here on.
    ns.enter_node_ns();
    lab.net.wait_healthy(0, START_WITHIN);
    let maps = Maps::open(&ns.instance).expect("the node pinned its maps");

    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    assert!(
        matches!(fw["mode"].as_str(), Some("xdp_native" | "xdp_generic")),
        "{fw}"
    );
    assert_eq!(fw["enforcement"], "enforce", "{fw}");
    assert_eq!(fw["iface"], NODE_IFACE, "{fw}");
    assert_eq!(fw["instance"], instance.as_str(), "{fw}");
    assert_eq!(fw["rules_truncated"], false, "{fw}");

    // An operator block is written into the kernel blocklist; unblocking removes it.
    let body = json!({"net": "198.51.100.0/24", "ttl_secs": TTL_SECS});
    let answer = lab
        .admin_ok(0, Method::POST, "/v1/admin/firewall/block", Some(body))
        .await;
    assert_operator_ban(&answer["ban"], "address 198.51.100.0/24");
    let manual = firewall::BanReason::Manual as u32;
    assert_eq!(
        kernel_block(&maps, "198.51.100.7"),
        Some(("198.51.100.0/24".to_string(), manual))
    );
    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    let rule = rule_of(&fw, "block", "198.51.100.0/24").unwrap_or_else(|| panic!("{fw}"));
    assert_eq!(rule["reason"], "manual", "{rule}");
    let left = rule["expires_in_secs"].as_u64().expect("a TTL");
    assert!((TTL_SECS - 60..=TTL_SECS).contains(&left), "{rule}");
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/198.51.100.7", None)
        .await;
    assert_eq!(why["decision"], "blocked", "{why}");
    assert_eq!(why["kernel"]["allow"], Value::Null, "{why}");
    assert_eq!(why["kernel"]["block"]["net"], "198.51.100.0/24", "{why}");
    assert_eq!(why["kernel"]["block"]["reason"], "manual", "{why}");
    assert!(
        why["kernel"]["block"]["expires_in_secs"].as_u64().is_some(),
        "{why}"
    );
    assert!(
        ban_of(&why["peers"]["bans"], "address 198.51.100.0/24").is_some(),
        "{why}"
    );
    let answer = lab
        .admin_ok(
            0,
            Method::POST,
            "/v1/admin/firewall/unblock",
            Some(json!({"net": "198.51.100.0/24"})),
        )
        .await;
    assert_eq!(answer["removed"], true, "{answer}");
    assert_eq!(kernel_block(&maps, "198.51.100.7"), None);
    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    assert!(rule_of(&fw, "block", "198.51.100.0/24").is_none(), "{fw}");
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/198.51.100.7", None)
        .await;
    assert_eq!(why["decision"], "none", "{why}");
    assert_eq!(
        why["kernel"],
        json!({"allow": null, "block": null}),
        "{why}"
    );

    // The kernel mode switches both ways.
    for mode in ["monitor", "enforce"] {
        let answer = lab
            .admin_ok(
                0,
                Method::PUT,
                "/v1/admin/firewall/mode",
                Some(json!({"mode": mode})),
            )
            .await;
        assert_eq!(answer, json!({"enforcement": mode}));
        let fw = lab
            .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
            .await;
        assert_eq!(fw["enforcement"], mode, "{fw}");
        let monitor = maps.config().expect("the filter's config").is_monitor();
        assert_eq!(monitor, mode == "monitor");
    }

    // An allow becomes a kernel allow rule.
    let answer = lab
        .admin_ok(
            0,
            Method::POST,
            "/v1/admin/firewall/allow",
            Some(json!({"net": "203.0.113.0/24"})),
        )
        .await;
    assert_eq!(answer["added"], true, "{answer}");
    let fw = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall", None)
        .await;
    let rule = rule_of(&fw, "allow", "203.0.113.0/24").unwrap_or_else(|| panic!("{fw}"));
    assert_eq!(rule["reason"], Value::Null, "{rule}");
    assert_eq!(rule["expires_in_secs"], Value::Null, "{rule}");
    let why = lab
        .admin_ok(0, Method::GET, "/v1/admin/firewall/why/203.0.113.5", None)
        .await;
    assert_eq!(why["decision"], "allowed", "{why}");
    assert_eq!(why["kernel"]["allow"], "203.0.113.0/24", "{why}");
    let kernel_allow = maps
        .why("203.0.113.5".parse().expect("an address"))
        .expect("reading the filter's rules")
        .allow;
    assert_eq!(
        kernel_allow.map(|n| n.to_string()).as_deref(),
        Some("203.0.113.0/24")
    );
}

//! `GET /metrics` of a real `node run`, scraped as Prometheus would: every family of
//! `docs/metrics.md` is there and parses, no label value is an address or a peer id, and the
//! counters move with blocks, transactions, refusals and a burst over the API's rate limit. As
//! root, a second test attaches the XDP filter to a veth in a namespace and watches the
//! filter's families move with real packets and an operator block.
//!
//! # Design
//! The privileged test puts the node in the node's namespace of an [`XdpNamespace`] and sends
//! from the peer's, on the other end of the veth. The test talks to the node from threads that
//! join its namespace.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::netns::{NODE_IP, PEER_IP, XdpNamespace};
use common::{LocalNet, http_get, http_post, privileged, submit_body};
use types::SecretKey;

/// The metrics reference: its tables list every family.
const DOC: &str = include_str!("../../../docs/metrics.md");
/// Sustained requests per second per client the node under test allows (above the test's own
/// polling of about 10 per second).
const API_RATE_PER_SEC: u32 = 20;
/// Request burst per client the node under test allows.
const API_BURST: u32 = 40;
/// Requests sent back to back to go over the burst.
const BURST_REQUESTS: u32 = 3 * API_BURST;
/// Height the node reaches before the first scrape.
const START_HEIGHT: u64 = 2;
/// Time between the two scrapes, at least.
const BETWEEN_SCRAPES: Duration = Duration::from_secs(3);
/// A nonce this far ahead of the account's is refused (`nonce_gap`; the mempool allows 64).
const FAR_NONCE: u64 = 1000;
/// Upper bound on waiting for the node to answer, reach a height, or count something.
const WAIT: Duration = Duration::from_secs(60);
/// Prefix of the namespaces and filter instance of the privileged test.
const PREFIX: &str = "xmt-";
/// UDP port the sender aims at: nothing listens there and the filter does not protect it.
const UDP_PORT: u16 = 9;
/// Datagrams sent in each round of the privileged test.
const DATAGRAMS: u64 = 50;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: each family's type and help, and the samples.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    help: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// Sum of the samples of `name` whose labels include every pair of `labels`; `None` when
    /// there is no such sample.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Scrape::sum`], failing the test when there is no such sample.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }
}

/// Parses a label set `k="v",...` (the part between braces), with the format's escapes.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, tail) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("no `=\"` in {rest:?}"))?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = tail.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?} in {tail:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err(format!("unterminated value in {tail:?}")),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        rest = &tail[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// The family a sample belongs to (histogram series carry a suffix).
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

/// Parses the text format strictly: every line a comment or `name{labels} value`, every
/// sample after its family's `TYPE` line.
fn parse(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or(format!("bad HELP: {line}"))?;
            scrape.help.insert(name.to_string(), help.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or(format!("bad TYPE: {line}"))?;
            if !["counter", "gauge", "histogram"].contains(&kind) {
                return Err(format!("unknown type: {line}"));
            }
            if scrape
                .types
                .insert(name.to_string(), kind.to_string())
                .is_some()
            {
                return Err(format!("family {name} typed twice"));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or(format!("no value: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| format!("bad value: {line}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or(format!("unclosed labels: {line}"))?;
                (
                    name,
                    parse_labels(inner).map_err(|e| format!("{e}: {line}"))?,
                )
            }
            None => (series, BTreeMap::new()),
        };
        let valid_name = name
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()));
        if name.is_empty() || !valid_name {
            return Err(format!("bad metric name: {line}"));
        }
        if !scrape.types.contains_key(family_of(name, &scrape.types)) {
            return Err(format!("sample before its TYPE line: {line}"));
        }
        scrape.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(scrape)
}

/// Family names of the tables in `docs/metrics.md` (rows whose first cell is a code span).
fn documented_families() -> BTreeSet<String> {
    DOC.lines()
        .filter_map(|line| line.trim().strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string())
        .collect()
}

/// Whether a label value could identify a host or a peer: an IP address (alone, with a port or
/// a prefix length) or a libp2p peer id.
fn identifies_someone(value: &str) -> bool {
    let host = value
        .split(['/', '%'])
        .next()
        .unwrap_or(value)
        .trim_start_matches('[');
    let host = host.split("]:").next().unwrap_or(host);
    host.parse::<IpAddr>().is_ok()
        || value.parse::<SocketAddr>().is_ok()
        || value.parse::<p2p::PeerId>().is_ok()
        || value.contains("/ip4/")
        || value.contains("/ip6/")
}

/// Checks what every scrape must satisfy; returns it parsed.
fn check_scrape(text: &str) -> Scrape {
    let scrape = parse(text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"));
    let documented = documented_families();
    assert!(!documented.is_empty(), "no families in docs/metrics.md");
    let typed: BTreeSet<String> = scrape.types.keys().cloned().collect();
    assert_eq!(typed, documented, "families with a TYPE line vs documented");
    let helped: BTreeSet<String> = scrape.help.keys().cloned().collect();
    assert_eq!(
        helped, documented,
        "families with a HELP line vs documented"
    );
    for sample in &scrape.samples {
        for (key, value) in &sample.labels {
            assert!(
                !identifies_someone(value),
                "{} has label {key}={value:?}, an address or a peer id",
                sample.name
            );
        }
    }
    scrape
}

/// The body submitting a signed transfer of 1 from `key` with `nonce`.
fn transfer(net: &LocalNet, key: &SecretKey, nonce: u64) -> String {
    let to = SecretKey::from_seed([7; 32]).public_key();
    submit_body(&net.transfer(key, nonce, to, 1))
}

/// Polls `get` for a scrape until `done` holds; fails after [`WAIT`].
fn scrape_until(
    what: &str,
    get: impl Fn() -> Option<(u16, String)>,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Some((200, text)) = get() {
            let scrape = check_scrape(&text);
            if done(&scrape) {
                return scrape;
            }
            last = text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?}\n{last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sets the public API's rate limit in node `i`'s config file.
fn set_rate_limit(net: &LocalNet, i: usize) {
    net.edit_config(i, |config| {
        config.api.rate_per_sec = API_RATE_PER_SEC;
        config.api.burst = API_BURST;
    });
}

#[test]
fn a_running_node_exports_every_documented_family_and_its_counters_move() {
    let mut net = LocalNet::init(1);
    set_rate_limit(&net, 0);
    net.start(0, &[]);
    net.wait_healthy(0, WAIT);
    net.wait_height(0, START_HEIGHT, WAIT);
    let metrics = format!("{}/metrics", net.api(0));
    let get = || http_get(&metrics);

    let first = scrape_until("the first scrape", get, |_| true);
    let started = Instant::now();
    assert_eq!(first.value("node_info", &[]), 1.0);
    assert_eq!(
        first.value("firewall_mode", &[("mode", "userspace")])
            + first.value("firewall_mode", &[("mode", "off")]),
        1.0,
        "a node without --iface filters in user space or not at all"
    );
    assert_eq!(first.value("firewall_enforcing", &[]), 0.0);
    assert_eq!(first.sum("firewall_packets_total", &[]), None);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root every telemetry program attaches (watching the test's own namespace).
        assert_eq!(first.sum("kernel_telemetry_attached", &[]), Some(6.0));
        assert!(first.sum("kernel_skb_drops_total", &[]).is_some());
        assert!(
            first
                .sum("kernel_receive_latency_seconds_count", &[])
                .is_some()
        );
    }

    // A transfer the mempool takes, and one it refuses for its nonce.
    let key = net.key(0);
    let transactions = format!("{}/v1/transactions", net.api(0));
    let (status, body) =
        http_post(&transactions, &transfer(&net, &key, 0), None).expect("POST answers");
    assert_eq!(status, 202, "{body}");
    let (status, body) =
        http_post(&transactions, &transfer(&net, &key, FAR_NONCE), None).expect("POST answers");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("transaction_rejected"), "{body}");

    scrape_until("the transfer is committed", get, |s| {
        s.value("chain_transactions_committed_total", &[]) >= 1.0
    });
    if let Some(rest) = BETWEEN_SCRAPES.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let second = scrape_until("the second scrape", get, |_| true);
    for (name, labels) in [
        ("consensus_height", &[][..]),
        ("chain_height", &[]),
        ("chain_blocks_committed_total", &[]),
        ("consensus_votes_total", &[("origin", "sent")]),
        ("consensus_finality_seconds_count", &[]),
        ("chain_transactions_committed_total", &[]),
        ("mempool_accepted_total", &[]),
        ("process_cpu_seconds_total", &[]),
        ("node_uptime_seconds", &[]),
    ] {
        let (before, after) = (first.value(name, labels), second.value(name, labels));
        assert!(
            after > before,
            "{name} {labels:?} did not move: {before} -> {after}"
        );
    }
    let rejected = |s: &Scrape| s.sum("mempool_rejected_total", &[]).unwrap_or(0.0);
    assert!(
        rejected(&second) > rejected(&first),
        "no mempool refusal counted"
    );
    assert_eq!(
        second.value("mempool_rejected_total", &[("reason", "nonce_gap")]),
        first
            .sum("mempool_rejected_total", &[("reason", "nonce_gap")])
            .unwrap_or(0.0)
            + 1.0
    );
    let columns: Vec<&Sample> = second
        .samples
        .iter()
        .filter(|s| s.name == "storage_column_bytes")
        .collect();
    assert!(!columns.is_empty(), "no storage_column_bytes sample");
    assert!(columns.iter().all(|s| s.value >= 0.0));
    for name in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        assert!(second.value(name, &[]) > 0.0, "{name}");
    }
    assert!(second.value("mempool_capacity_transactions", &[]) > 0.0);

    // A burst over the limit: refusals are answered 429 and counted.
    let limited_before = second.value("api_rate_limited_total", &[]);
    let health = format!("{}/health", net.api(0));
    let refused = (0..BURST_REQUESTS)
        .filter_map(|_| http_get(&health))
        .filter(|(status, _)| *status == 429)
        .count() as f64;
    assert!(refused > 0.0, "no request of the burst was refused");
    let after_burst = scrape_until("the burst's refusals are counted", get, |s| {
        s.value("api_rate_limited_total", &[]) >= limited_before + refused
    });
    assert!(after_burst.value("api_rate_limited_total", &[]) >= limited_before + refused);
}

/// A node inside an [`XdpNamespace`], the sender on the peer's side; dropping it stops the
/// node, then removes the namespaces and the filter, whether the test passed or not.
struct XdpLab {
    /// Dropped first: the node stops before its namespace goes.
    net: LocalNet,
    ns: XdpNamespace,
}

impl XdpLab {
    fn new() -> XdpLab {
        XdpLab {
            ns: XdpNamespace::new(PREFIX),
            net: LocalNet::init(1),
        }
    }

    /// Starts the node inside its namespace with the filter on the veth, and waits until it
    /// answers `/health` there.
    fn start(&mut self) {
        self.ns.start_node(&mut self.net, 0, &[]);
        let net = &mut self.net;
        self.ns.in_node_ns(|| net.wait_healthy(0, WAIT));
    }

    /// `GET` inside the node's namespace.
    fn get(&self, url: &str) -> Option<(u16, String)> {
        self.ns.in_node_ns(|| http_get(url))
    }

    fn scrape_until(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let url = format!("{}/metrics", self.net.api(0));
        scrape_until(what, || self.get(&url), done)
    }

    /// Sends [`DATAGRAMS`] UDP datagrams from the sender's side to the node.
    fn send_datagrams(&self) {
        self.ns.in_peer_ns(|| {
            let socket = UdpSocket::bind((PEER_IP, 0)).expect("binding on the sender's side");
            for _ in 0..DATAGRAMS {
                socket
                    .send_to(b"metrics test", (NODE_IP, UDP_PORT))
                    .expect("sending a datagram");
            }
        });
    }
}

impl Drop for XdpLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.net.eprint_logs(usize::MAX);
        }
    }
}

#[test]
fn the_filter_families_move_with_packets_on_an_attached_veth_and_an_operator_block() {
    if !privileged("metrics XDP test") {
        return;
    }
    let mut lab = XdpLab::new();
    lab.start();

    // Resolve the neighbour first, so no datagram waits on ARP.
    lab.send_datagrams();
    let first = lab.scrape_until("the first scrape", |_| true);
    let xdp = first.value("firewall_mode", &[("mode", "xdp_native")])
        + first.value("firewall_mode", &[("mode", "xdp_generic")]);
    assert_eq!(xdp, 1.0, "the filter runs in XDP");
    assert_eq!(first.value("firewall_enforcing", &[]), 1.0);
    let passed = |s: &Scrape| s.value("firewall_packets_total", &[("verdict", "pass")]);
    let blocked = |s: &Scrape| {
        s.value(
            "firewall_packets_total",
            &[("verdict", "drop"), ("reason", "blocklisted")],
        )
    };
    let block_rules = |s: &Scrape| s.value("firewall_rules", &[("kind", "block")]);
    assert_eq!(blocked(&first), 0.0);

    lab.send_datagrams();
    let second = lab.scrape_until("the datagrams pass and are counted", |s| {
        passed(s) >= passed(&first) + DATAGRAMS as f64
    });
    assert!(
        second.value("firewall_bytes_total", &[("verdict", "pass")])
            > first.value("firewall_bytes_total", &[("verdict", "pass")])
    );

    // An operator blocks the sender: a rule more, and its datagrams die in the driver.
    let block = format!("{}/v1/admin/firewall/block", lab.net.admin(0));
    let token = lab.net.admin_token(0);
    let body = format!("{{\"net\":\"{PEER_IP}/32\"}}");
    let (status, answer) = lab
        .ns
        .in_node_ns(|| http_post(&block, &body, Some(&token)))
        .expect("the admin API answers");
    assert_eq!(status, 200, "{answer}");
    lab.send_datagrams();
    let third = lab.scrape_until("the blocked datagrams are dropped and counted", |s| {
        blocked(s) >= DATAGRAMS as f64
    });
    assert_eq!(block_rules(&third), block_rules(&first) + 1.0);
    assert!(third.value("firewall_blocks_active", &[("reason", "manual")]) >= 1.0);
    assert!(third.value("p2p_bans_active", &[("reason", "manual")]) >= 1.0);
}

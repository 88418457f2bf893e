//! The node's lifecycle as an operator meets it: `node init`, the startup order, an orderly stop
//! on SIGTERM, and a restart after SIGKILL that resumes at the right height without signing
//! twice.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{LocalNet, node_bin, privileged};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn init_creates_a_local_network_with_private_identities_and_refuses_to_overwrite_it() {
    let net = LocalNet::init(3);
    let genesis = net.genesis();
    assert_eq!(genesis.validators.len(), 3);
    let keys: Vec<_> = (0..3).map(|i| net.key(i).public_key()).collect();
    for (i, key) in keys.iter().enumerate() {
        let dir = net.node_dir(i);
        assert_eq!(mode(&dir.join("identity.key")), 0o600);
        assert_eq!(mode(&dir.join("admin.token")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(genesis.validators.iter().any(|v| v.key == *key));
        assert!(
            genesis
                .accounts
                .iter()
                .any(|a| a.key == *key && a.balance > 0)
        );
        let config = node::config::Config::load(&dir.join("node.toml")).expect("valid config");
        assert_eq!(config.data_dir, dir);
        assert_eq!(config.p2p.peers.len(), 2, "every node knows the others");
        assert!(net.admin_token(i).len() >= 32);
    }
    let again = Command::new(node_bin())
        .args(["init", "--data-dir"])
        .arg(net.dir.path())
        .args(["--validators", "3"])
        .output()
        .expect("node init runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a network"));
    // The identities were not replaced.
    assert_eq!(net.key(0).public_key(), keys[0]);
}

#[test]
fn run_refuses_an_identity_that_others_can_read() {
    let net = LocalNet::init(1);
    let key = net.node_dir(0).join("identity.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(node_bin())
        .args(["run", "--config"])
        .arg(net.config(0))
        .output()
        .expect("node run runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("readable by others"), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
}

#[test]
fn run_refuses_an_unknown_config_field_with_its_place() {
    let net = LocalNet::init(1);
    let config = net.config(0);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("propose_timeout_ms = "));
    std::fs::write(
        &config,
        text.replace("propose_timeout_ms = ", "propose_timeout = "),
    )
    .unwrap();
    let out = Command::new(node_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("node run runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("propose_timeout"), "{stderr}");
}

/// Index of the first log line containing `needle`, at or after `from`.
fn position(log: &[String], needle: &str, from: usize) -> usize {
    log.iter()
        .skip(from)
        .position(|l| l.contains(needle))
        .map(|p| p + from)
        .unwrap_or_else(|| {
            panic!(
                "no log line with `{needle}` after line {from}:\n{}",
                log.join("\n")
            )
        })
}

#[test]
fn startup_steps_are_logged_in_order_and_sigterm_stops_the_node_cleanly() {
    let mut net = LocalNet::init(1);
    net.start(0, &["--no-xdp"]);
    net.wait_healthy(0, Duration::from_secs(60));
    net.wait_height(0, 3, Duration::from_secs(30));
    let node = net.node(0);
    let log = node.log();
    let mut at = 0;
    for step in 1..=8 {
        at = position(&log, &format!("[{step}/8]"), at);
    }
    position(&log, "XDP filter OFF", 0);
    position(&log, "public API on", at);

    let log = node.terminate();
    let stop = position(&log, "stopping:", 0);
    let consensus = position(&log, "consensus stopped at height", stop);
    let flushed = position(&log, "database flushed", consensus);
    position(&log, "swarm closed", flushed);

    // A restart resumes from the stored chain, not from genesis.
    let height = net.height(0);
    net.start(0, &["--no-xdp"]);
    net.wait_healthy(0, Duration::from_secs(60));
    let resumed = net.status(0).expect("status")["height"].as_u64().unwrap();
    assert!(
        resumed >= 3,
        "restarted at height {resumed}, had reached at least 3 ({height})"
    );
}

#[test]
fn a_validator_killed_with_sigkill_resumes_and_signs_again_without_double_signing() {
    let mut net = LocalNet::init(4);
    for i in 0..4 {
        net.start(i, &["--no-xdp"]);
    }
    for i in 0..4 {
        net.wait_healthy(i, Duration::from_secs(60));
    }
    net.wait_height(0, 5, Duration::from_secs(60));
    // Kill validator 3 twice at different moments; the other three (3/4 of the stake) go on.
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(150 * (round + 1) as u64));
        net.kill(3);
        let at = net.height(0);
        net.wait_height(0, at + 3, Duration::from_secs(30));
        net.start(3, &["--no-xdp"]);
        net.wait_healthy(3, Duration::from_secs(60));
        let target = net.height(0);
        net.wait_height(3, target, Duration::from_secs(30));
        // It votes again: its last signed height reaches the height it rejoined at.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let signed = net
                .status(3)
                .and_then(|s| s["signed_height"].as_u64())
                .unwrap_or(0);
            if signed > target {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "validator 3 did not sign after rejoining at {target} (last signed {signed}):\n{}",
                net.node(3).log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // No double sign: no evidence anywhere and every stake intact.
    net.wait_height(0, net.height(0) + 2, Duration::from_secs(30));
    for i in 0..4 {
        let (status, body) =
            common::http_get(&format!("{}/v1/validators", net.api(i))).expect("validators");
        assert_eq!(status, 200);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stakes: Vec<u64> = json["validators"]
            .as_array()
            .expect("validators list")
            .iter()
            .map(|v| v["stake"].as_u64().unwrap())
            .collect();
        assert_eq!(
            stakes,
            vec![stakes[0]; 4],
            "node {i} sees a slashed stake: {json}"
        );
        let (_, metrics) = common::http_get(&format!("{}/metrics", net.api(i))).expect("metrics");
        assert!(
            metrics.lines().any(|l| l == "consensus_evidence_total 0"),
            "node {i} surfaced evidence of an equivocation"
        );
    }
    // All four agree on the chain.
    let height = (0..4).map(|i| net.height(i)).min().unwrap();
    let hashes: Vec<String> = (0..4)
        .map(|i| {
            let (_, body) =
                common::http_get(&format!("{}/v1/blocks/{height}", net.api(i))).unwrap();
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["hash"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}

#[test]
fn without_the_privileges_for_xdp_the_node_runs_the_user_space_fallback_and_says_so() {
    if !privileged("without_the_privileges_for_xdp_the_node_runs_the_user_space_fallback") {
        return;
    }
    let mut net = LocalNet::init(1);
    // The node runs as nobody: it owns its data, but may not load BPF programs.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(net.dir.path())
        .status()
        .expect("chown runs");
    assert!(chown.success());
    net.start_wrapped(
        0,
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &["--iface", "lo", "--instance", "fallback-test"],
    );
    net.wait_healthy(0, Duration::from_secs(60));
    net.wait_height(0, 3, Duration::from_secs(30));
    let status = net.status(0).expect("status");
    assert_eq!(status["filter"]["mode"], "userspace", "{status}");
    let log = net.node(0).log();
    let line = position(&log, "XDP FILTER NOT LOADED", 0);
    assert!(log[line].contains("ERROR"), "said loudly: {}", log[line]);
    assert!(log[line].contains("USER-SPACE FALLBACK"), "{}", log[line]);
    assert!(
        !std::path::Path::new("/sys/fs/bpf/fallback-test").exists(),
        "nothing was pinned"
    );
}

#[test]
fn a_stopped_node_leaves_its_filter_and_bans_in_force_or_detaches_it_as_configured() {
    use common::netns::{PEER_IP, XdpNamespace};
    if !privileged("a_stopped_node_leaves_its_filter_and_bans_in_force") {
        return;
    }
    let ns = XdpNamespace::new("xlc-");
    let mut net = LocalNet::init(1);
    ns.start_node(&mut net, 0, &[]);
    let started = &mut net;
    ns.in_node_ns(|| started.wait_healthy(0, Duration::from_secs(60)));
    let (admin, token) = (net.admin(0), net.admin_token(0));
    let body = format!("{{\"net\":\"{PEER_IP}/32\"}}");
    let (status, answer) = ns
        .in_node_ns(|| {
            common::http_post(
                &format!("{admin}/v1/admin/firewall/block"),
                &body,
                Some(&token),
            )
        })
        .expect("the admin API answers");
    assert_eq!(status, 200, "{answer}");

    // Default `on_exit = "keep"`: after SIGTERM the program stays attached and the ban stays
    // in the kernel map while the node is down.
    let log = net.node(0).terminate();
    assert!(
        ns.instance.attached_link().is_some(),
        "the filter is still attached"
    );
    let maps = firewall::Maps::open(&ns.instance).expect("the pinned maps are there");
    let why = maps.why(PEER_IP.into()).expect("why");
    assert!(
        why.deciding_block().is_some(),
        "the ban is still in force: {why:?}"
    );
    drop(maps);
    position(&log, "left attached", 0);

    // Restarted, it takes over the pinned filter in place; with `--on-exit detach` it removes
    // it when it stops.
    ns.start_node(&mut net, 0, &["--on-exit", "detach"]);
    let started = &mut net;
    ns.in_node_ns(|| started.wait_healthy(0, Duration::from_secs(60)));
    position(
        &net.node(0).log(),
        "replaced the running program in place",
        0,
    );
    let log = net.node(0).terminate();
    assert!(
        ns.instance.attached_link().is_none(),
        "the filter is detached"
    );
    assert!(!ns.instance.dir().exists(), "its pins are gone");
    position(&log, "XDP filter detached", 0);
}

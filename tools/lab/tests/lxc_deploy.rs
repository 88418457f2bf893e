//! The Ansible deployment into LXC, for real: `deploy/lxc/lxc-lab.sh` creates four privileged
//! validator containers (the last one without systemd, so the plain-process fallback runs too),
//! then over SSH:
//! - `deploy.yml` builds nothing (it ships the `node` binary this `cargo test` built), creates
//!   each identity in its container, writes the genesis, configures and starts every node, and
//!   the validators finalize blocks with the XDP filter attached natively to each container's
//!   `eth0`;
//! - a second `deploy.yml` changes nothing;
//! - `upgrade.yml` replaces the binary one node at a time while the highest final height never
//!   stands still longer than [`MAX_FINALITY_GAP`], and an operator block written into each
//!   node's pinned maps before the upgrade is still there after it;
//! - `backup.yml` and `restore.yml` put a checkpoint of one node's database back, and that node
//!   catches up again;
//! - `health.yml` passes (every node, and all holding the same block);
//! - `teardown.yml` leaves no node running and no XDP program attached.
//!
//! The containers, their bridge and bpffs directories are removed at the end, also when the test
//! fails (and leftovers of a crashed run at the start). Needs root, `lxc`, `debootstrap` and the
//! Ansible venv that `tools/bootstrap.sh` installs; the base rootfs is built once (about a
//! minute) and cached in /var/cache/xdp-node/lxc.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Validator containers; the last one boots without systemd.
const CONTAINERS: usize = 4;
/// The container whose node runs as a plain process.
const PLAIN: usize = CONTAINERS - 1;
/// Longest time the highest final height of the network may stand still during the rolling
/// upgrade. One validator of four is down at a time, so the others keep a quorum; a restart
/// costs at most the rounds whose proposer is the stopped node (3 s propose timeout, growing
/// per round) and the restarted node's catch-up.
const MAX_FINALITY_GAP: Duration = Duration::from_secs(12);
/// How often the upgrade's finality monitor reads every node's status.
const MONITOR_PERIOD: Duration = Duration::from_millis(200);
/// Longest any one playbook may run.
const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// Blocks the network must finalize after the deployment before the test goes on.
const BLOCKS_AFTER_DEPLOY: u64 = 3;
/// How long those blocks may take.
const FINALITY_TIMEOUT: Duration = Duration::from_secs(60);
/// An address no container uses, blocked through the pinned maps before the upgrade.
const BLOCKED: &str = "10.97.0.250";
/// The Ansible venv of `tools/bootstrap.sh`.
const ANSIBLE_BIN: &str = "/var/cache/xdp-node/ansible/bin";
/// Where the role installs the node (`node_bin`) and its pin directory (`node_firewall_instance`).
const NODE_BIN: &str = "/usr/local/bin/xdp-node";
const INSTANCE: &str = "xdp-node";
/// The capabilities the node keeps (`node_capabilities`): CAP_NET_ADMIN (12), CAP_SYSLOG (34),
/// CAP_PERFMON (38), CAP_BPF (39).
const NODE_CAPABILITIES: u64 = 1 << 12 | 1 << 34 | 1 << 38 | 1 << 39;
/// The public API port (`node_api_port`).
const API_PORT: u16 = 8080;
/// Timeout of one HTTP request to a node.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of a failed command's output shown.
const LOG_TAIL: usize = 60;

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// True when the test can run; otherwise it says why, and under `CI=true` fails.
fn runnable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("needs root (privileged LXC containers, XDP)".to_string())
    } else if !Path::new("/usr/bin/lxc-start").exists()
        || !Path::new("/usr/sbin/debootstrap").exists()
    {
        Some("needs lxc and debootstrap: run tools/bootstrap.sh".to_string())
    } else if !Path::new(ANSIBLE_BIN).join("ansible-playbook").exists() {
        Some(format!(
            "needs ansible-playbook in {ANSIBLE_BIN}: run tools/bootstrap.sh"
        ))
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if under_ci() => {
            panic!("the LXC deployment test {why}; under CI=true that is a failure")
        }
        Some(why) => {
            eprintln!("SKIPPED: the LXC deployment test {why}");
            false
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ansible_dir() -> PathBuf {
    repo().join("deploy/ansible")
}

fn lxc_lab() -> PathBuf {
    repo().join("deploy/lxc/lxc-lab.sh")
}

/// The `node` binary next to `lab` (a workspace `cargo test` builds both).
fn node_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_lab")).with_file_name("node");
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p node` (a workspace `cargo test` does)",
        path.display()
    );
    path
}

fn name(i: usize) -> String {
    format!("xdpn-v{i}")
}

fn api(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 97, 0, 10 + i as u8], API_PORT))
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

/// Runs a command to completion within `timeout`, killing it after; returns its output.
fn run(command: &mut Command, timeout: Duration) -> Output {
    let what = format!("{command:?}");
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if Instant::now() > deadline {
            // The whole group: ansible-playbook's ssh children too.
            // SAFETY: kill has no memory preconditions; the group is the child's own.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what} ran longer than {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Runs a command that must succeed; returns its standard output.
fn must(command: &mut Command, timeout: Duration) -> String {
    let what = format!("{command:?}");
    let output = run(command, timeout);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        tail(&stdout),
        tail(&String::from_utf8_lossy(&output.stderr))
    );
    stdout
}

/// A command inside container `i`.
fn in_container(i: usize, args: &[&str]) -> Command {
    let mut command = Command::new("lxc-attach");
    command.args(["-n", &name(i), "--"]).args(args);
    command
}

/// Runs a playbook against the LXC lab's inventory; returns its output (the play recap last).
fn playbook(file: &str, extra: &[(&str, String)], limit: Option<&str>) -> String {
    let mut command = Command::new(Path::new(ANSIBLE_BIN).join("ansible-playbook"));
    command
        .current_dir(ansible_dir())
        .env(
            "PATH",
            format!("{ANSIBLE_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .args(["-i", "inventories/lxc-lab", file]);
    for (key, value) in extra {
        command.args(["-e", &format!("{key}={value}")]);
    }
    if let Some(host) = limit {
        command.args(["--limit", host]);
    }
    let started = Instant::now();
    let out = must(&mut command, PLAYBOOK_TIMEOUT);
    eprintln!(
        "{file}: {:.1?}\n{}",
        started.elapsed(),
        recap(&out).join("\n")
    );
    out
}

/// The PLAY RECAP lines of a playbook's output.
fn recap(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("PLAY RECAP"))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The `changed=N` count of every host in a recap.
fn changed(out: &str) -> Vec<(String, u64)> {
    recap(out)
        .iter()
        .filter_map(|line| {
            let host = line.split_whitespace().next()?.to_string();
            let n = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("changed="))?
                .parse()
                .ok()?;
            Some((host, n))
        })
        .collect()
}

/// GET `path` from a node's public API; None when it does not answer 200 with JSON.
fn get(addr: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8(response).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

fn status(i: usize) -> Option<Value> {
    get(api(i), "/v1/status")
}

fn height(status: &Value) -> u64 {
    status["height"].as_u64().expect("status.height")
}

/// The highest final height any node reports, asking all of them at once (a node that does not
/// answer costs one timeout, not one per node).
fn network_height() -> Option<u64> {
    std::thread::scope(|scope| {
        let asks: Vec<_> = (0..CONTAINERS)
            .map(|i| scope.spawn(move || status(i).map(|s| height(&s))))
            .collect();
        asks.into_iter()
            .filter_map(|ask| ask.join().ok().flatten())
            .max()
    })
}

/// Waits until every node has finalized `blocks` more blocks than the network had at the call.
fn wait_for_blocks(blocks: u64) {
    let start = network_height().unwrap_or(0);
    let deadline = Instant::now() + FINALITY_TIMEOUT;
    loop {
        let heights: Vec<Option<u64>> = (0..CONTAINERS)
            .map(|i| status(i).map(|s| height(&s)))
            .collect();
        if heights
            .iter()
            .all(|h| h.is_some_and(|h| h >= start + blocks))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the validators did not finalize {blocks} blocks past height {start} in {FINALITY_TIMEOUT:?}: {heights:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether the kernel runs an XDP program on container `i`'s eth0, and in which mode.
fn xdp_mode(i: usize) -> Option<String> {
    let out = must(
        &mut in_container(i, &["ip", "-json", "link", "show", "dev", "eth0"]),
        Duration::from_secs(10),
    );
    let links: Value = serde_json::from_str(&out).expect("ip -json output");
    let xdp = links.get(0)?.get("xdp")?;
    Some(xdp["mode"].to_string())
}

/// The node's capability bounding set in container `i` (`CapBnd` of its process).
fn node_bounding_set(i: usize) -> u64 {
    let pid = must(
        &mut in_container(i, &["pgrep", "-x", "xdp-node"]),
        Duration::from_secs(10),
    );
    let pid = pid.trim();
    assert!(
        pid.parse::<u32>().is_ok(),
        "{}: one node process, not {pid:?}",
        name(i)
    );
    let status = must(
        &mut in_container(i, &["cat", &format!("/proc/{pid}/status")]),
        Duration::from_secs(10),
    );
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd in /proc/<pid>/status")
        .trim();
    u64::from_str_radix(hex, 16).expect("CapBnd is hex")
}

/// The SHA-256 of a file inside container `i`.
fn sha256_in(i: usize, path: &str) -> String {
    must(
        &mut in_container(i, &["sha256sum", path]),
        Duration::from_secs(30),
    )
    .split_whitespace()
    .next()
    .expect("sha256sum output")
    .to_string()
}

fn sha256_here(path: &Path) -> String {
    must(Command::new("sha256sum").arg(path), Duration::from_secs(30))
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

/// The containers, their bridge and their bpffs directories: created by `up`, removed on drop
/// (also when the test fails).
struct Containers;

impl Containers {
    fn up() -> Containers {
        // Leftovers of a run that crashed before its teardown.
        must(
            Command::new("bash").arg(lxc_lab()).arg("down"),
            Duration::from_secs(120),
        );
        let containers = Containers;
        let started = Instant::now();
        must(
            Command::new("bash").arg(lxc_lab()).args([
                "up",
                &CONTAINERS.to_string(),
                "--plain",
                &PLAIN.to_string(),
            ]),
            Duration::from_secs(600),
        );
        eprintln!("{CONTAINERS} containers up in {:.1?}", started.elapsed());
        containers
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        // No panic here: this also runs while a failed test unwinds.
        match Command::new("bash").arg(lxc_lab()).arg("down").status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                eprintln!("lxc-lab.sh down failed ({status}): remove the containers by hand")
            }
            Err(e) => eprintln!("cannot run lxc-lab.sh down ({e}): remove the containers by hand"),
        }
    }
}

/// Reads every node's status every [`MONITOR_PERIOD`] on a thread; `stop` returns the longest
/// time the highest final height stood still, and the heights at start and end.
struct FinalityMonitor {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, u64, u64)>,
}

impl FinalityMonitor {
    fn start() -> FinalityMonitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let first = network_height().unwrap_or(0);
            let (mut best, mut since, mut longest) = (first, Instant::now(), Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                if let Some(h) = network_height()
                    && h > best
                {
                    best = h;
                    since = Instant::now();
                }
                longest = longest.max(since.elapsed());
                std::thread::sleep(MONITOR_PERIOD);
            }
            (longest, first, best)
        });
        FinalityMonitor { stop, thread }
    }

    fn stop(self) -> (Duration, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the monitor thread")
    }
}

#[test]
fn ansible_deploys_upgrades_backs_up_and_tears_down_validators_in_lxc_containers() {
    if !runnable() {
        return;
    }
    let node = node_binary();
    let controller = tempfile::tempdir().expect("controller state dir");
    let controller_dir = controller.path().to_string_lossy().into_owned();
    let containers = Containers::up();

    // Deploy, with the binary this test run built.
    let vars = |binary: &Path| {
        vec![
            ("node_controller_dir", controller_dir.clone()),
            (
                "node_prebuilt_binary",
                binary.to_string_lossy().into_owned(),
            ),
        ]
    };
    let first = playbook("deploy.yml", &vars(&node), None);
    assert!(
        changed(&first).iter().any(|(_, n)| *n > 0),
        "the first deploy changed nothing:\n{}",
        recap(&first).join("\n")
    );
    wait_for_blocks(BLOCKS_AFTER_DEPLOY);
    for i in 0..CONTAINERS {
        let status = status(i).expect("status");
        assert_eq!(status["filter"]["mode"], "xdp_native", "{}", name(i));
        assert_eq!(status["chain_id"], "lxc-lab", "{}", name(i));
        assert!(xdp_mode(i).is_some(), "{}: no XDP program on eth0", name(i));
    }
    let init = must(
        &mut in_container(PLAIN, &["cat", "/proc/1/comm"]),
        Duration::from_secs(10),
    );
    assert_eq!(
        init.trim(),
        "plain-init",
        "{} should boot without systemd",
        name(PLAIN)
    );
    // systemd's unit and the plain fallback's setpriv both leave the node these four only.
    for i in [0, PLAIN] {
        assert_eq!(
            node_bounding_set(i),
            NODE_CAPABILITIES,
            "{}: the node's capability bounding set",
            name(i)
        );
    }

    // Idempotent: a second deploy changes nothing anywhere.
    let second = playbook("deploy.yml", &vars(&node), None);
    let changes = changed(&second);
    assert_eq!(changes.len(), CONTAINERS + 1, "{changes:?}");
    assert!(
        changes.iter().all(|(_, n)| *n == 0),
        "the second deploy changed something: {changes:?}\n{}",
        tail(&second)
    );

    // An operator block in each node's pinned maps, which the upgrade must keep.
    for i in 0..CONTAINERS {
        must(
            &mut in_container(
                i,
                &[
                    NODE_BIN,
                    "firewall",
                    "--instance",
                    INSTANCE,
                    "block",
                    BLOCKED,
                ],
            ),
            Duration::from_secs(10),
        );
    }

    // The next release: the same program with another checksum, from a section that strip keeps.
    let next = controller.path().join("node-next");
    let marker = controller.path().join("release-marker");
    std::fs::write(&marker, "xdp-node upgrade test release\n").expect("writing the marker");
    must(
        Command::new("objcopy")
            .arg(format!(
                "--add-section=.xdpnode.release={}",
                marker.display()
            ))
            .arg("--set-section-flags=.xdpnode.release=noload,readonly")
            .arg(&node)
            .arg(&next),
        Duration::from_secs(60),
    );
    let started: Vec<u64> = (0..CONTAINERS)
        .map(|i| {
            status(i).expect("status")["started_ms"]
                .as_u64()
                .expect("started_ms")
        })
        .collect();
    let monitor = FinalityMonitor::start();
    let upgrade = playbook("upgrade.yml", &vars(&next), None);
    let (gap, from, to) = monitor.stop();
    eprintln!(
        "rolling upgrade: heights {from} -> {to}, longest time without a new final block {gap:.1?} (bound {MAX_FINALITY_GAP:?})"
    );
    assert!(
        gap <= MAX_FINALITY_GAP,
        "finality stopped for {gap:?} during the rolling upgrade (bound {MAX_FINALITY_GAP:?})"
    );
    assert!(to > from, "no block was finalized during the upgrade");
    let artifact = sha256_here(&controller.path().join("xdp-node"));
    for (i, started_ms) in started.iter().enumerate() {
        assert_eq!(
            sha256_in(i, NODE_BIN),
            artifact,
            "{} runs the new binary",
            name(i)
        );
        let now = status(i).expect("status after the upgrade");
        assert!(
            now["started_ms"].as_u64() > Some(*started_ms),
            "{} was not restarted",
            name(i)
        );
        let why = must(
            &mut in_container(
                i,
                &[NODE_BIN, "firewall", "--instance", INSTANCE, "why", BLOCKED],
            ),
            Duration::from_secs(10),
        );
        assert!(
            why.contains("DROP, blocked by"),
            "{}: the operator block did not survive the upgrade: {why}",
            name(i)
        );
    }
    assert!(
        changed(&upgrade)
            .iter()
            .filter(|(h, n)| h.starts_with("xdpn-") && *n > 0)
            .count()
            == CONTAINERS,
        "{}",
        recap(&upgrade).join("\n")
    );

    // Back up one node's database, then restore it from that backup while the node has signed
    // later heights than the backup holds: its newer double-sign guard must survive, it must sit
    // out the height it last signed, then sign again.
    let target = name(1);
    playbook("backup.yml", &vars(&next), Some(&target));
    let backups: Vec<PathBuf> = std::fs::read_dir(controller.path().join("backups").join(&target))
        .expect("the backup directory")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    wait_for_blocks(BLOCKS_AFTER_DEPLOY);
    let signed_before = status(1).expect("status")["signed_height"]
        .as_u64()
        .expect("signed_height");
    let mut restore_vars = vars(&next);
    restore_vars.push((
        "node_restore_from",
        backups[0].to_string_lossy().into_owned(),
    ));
    let restore = playbook("restore.yml", &restore_vars, Some(&target));
    assert!(
        restore.contains("the node sits out height"),
        "the restore did not carry the newer guard over:\n{}",
        tail(&restore)
    );
    let kept = must(
        &mut in_container(
            1,
            &["sh", "-c", "ls -d /var/lib/xdp-node/db.before-restore-*"],
        ),
        Duration::from_secs(10),
    );
    assert_eq!(
        kept.lines().count(),
        1,
        "the replaced database is kept aside: {kept}"
    );
    let deadline = Instant::now() + FINALITY_TIMEOUT;
    loop {
        let signed = status(1).and_then(|s| s["signed_height"].as_u64());
        if signed.is_some_and(|h| h > signed_before) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{target} did not sign past height {signed_before} after the restore: {signed:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for_blocks(BLOCKS_AFTER_DEPLOY);

    // Health, across the network.
    let health = playbook("health.yml", &vars(&next), None);
    assert!(
        health.contains("every validator holds block"),
        "{}",
        tail(&health)
    );

    // Teardown: nothing runs, no filter stays attached.
    playbook("teardown.yml", &vars(&next), None);
    for i in 0..CONTAINERS {
        assert_eq!(xdp_mode(i), None, "{}: XDP left attached", name(i));
        let left = run(
            &mut in_container(i, &["pgrep", "-x", "xdp-node"]),
            Duration::from_secs(10),
        );
        assert_eq!(
            left.status.code(),
            Some(1),
            "{}: pgrep finds the node still running (or lxc-attach failed): {}",
            name(i),
            String::from_utf8_lossy(&left.stderr)
        );
    }
    let again = playbook("teardown.yml", &vars(&next), None);
    assert!(
        changed(&again).iter().all(|(_, n)| *n == 0),
        "a second teardown changed something: {}",
        recap(&again).join("\n")
    );
    drop(containers);
}

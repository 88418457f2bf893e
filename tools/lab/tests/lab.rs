//! The lab end to end, a shorter scenario: four validators in network namespaces behind the XDP
//! filter, every attack the attacker has, a transaction stream; then, from the lab's JSON
//! report: every check passed, heights advanced in every phase, finality latency under attack
//! stayed within 1.5x of the quiet phase's, the attackers were blocked in the kernel with the
//! right reasons, the equivocator was slashed, and the restarted validator signed again. With
//! `--monitoring`: Prometheus scraped every validator, loaded every rule group, and every
//! dashboard panel's query returned data over the run.
//!
//! Needs root (namespaces, XDP) and the `node` and `attacker` binaries next to `lab` (a
//! workspace `cargo test` builds all three; else `cargo build -p node -p attacker -p lab`), and
//! for the monitoring part Debian's `prometheus` package.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Every phase, in the lab's order.
const PHASES: [&str; 12] = [
    "quiet",
    "udp-blocked",
    "udp-rate",
    "syn",
    "quic-short",
    "connect-flood",
    "gossip-invalid-tx",
    "gossip-invalid-vote",
    "gossip-oversized",
    "replay",
    "equivocate",
    "restart",
];
/// Each phase's length.
const PHASE: &str = "12s";
/// Flood rate: well over the per-source budget (2000 pps), bounded for a two-core machine.
const FLOOD_PPS: &str = "5000";
/// The whole lab may take this long before the test interrupts it.
const LAB_TIMEOUT: Duration = Duration::from_secs(480);
/// After SIGINT, the lab gets this long to tear down.
const TEARDOWN_GRACE: Duration = Duration::from_secs(30);
/// Lines of each log shown when the test fails.
const LOG_TAIL: usize = 25;
/// Prometheus, from Debian's `prometheus` package, which `--monitoring` runs.
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Under CI (`CI=true`) a test part that cannot run is a failure.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// True when the test can run. Without root it says why; under CI (`CI=true`) a privileged
/// test that cannot run fails instead of skipping.
fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let why = format!("{test} needs root (network namespaces, XDP): run the suite as root");
    if under_ci() {
        panic!("{why}; under CI=true a privileged test that cannot run is a failure");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// The binaries next to the lab.
fn sibling(name: &str) -> PathBuf {
    let lab = Path::new(env!("CARGO_BIN_EXE_lab"));
    let path = lab.with_file_name(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `cargo build -p node -p attacker -p lab` (a workspace `cargo test` does)",
        path.display()
    );
    path
}

/// True when Prometheus is installed. Without it the lab runs without `--monitoring` and says
/// so; under CI it fails instead.
fn prometheus_installed() -> bool {
    if Path::new(PROMETHEUS).is_file() {
        return true;
    }
    let why = format!(
        "{PROMETHEUS} is missing: install Debian's `prometheus` package (apt-get install --no-install-recommends prometheus)"
    );
    if under_ci() {
        panic!("{why}; under CI=true the lab's monitoring check must run");
    }
    eprintln!("SKIPPED the monitoring part of the lab test: {why}");
    false
}

fn checks(phase: &Value) -> &[Value] {
    phase["checks"].as_array().map_or(&[], Vec::as_slice)
}

/// The status of the check called `name` in `phase`.
fn status<'a>(phase: &'a Value, name: &str) -> &'a str {
    checks(phase)
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("missing")
}

fn print_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("----- {}: last lines -----", log.display());
        for line in &lines[lines.len().saturating_sub(LOG_TAIL)..] {
            eprintln!("{line}");
        }
    }
}

#[test]
fn the_lab_survives_every_attack_with_each_defence_in_place() {
    if !privileged("the lab's end-to-end test") {
        return;
    }
    sibling("node");
    sibling("attacker");
    let monitoring = prometheus_installed();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("lab");
    let report_path = tmp.path().join("report.json");
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    if monitoring {
        // Any free port: the test must not depend on the default one being free.
        command.args(["--monitoring", "--monitoring-listen", "127.0.0.1:0"]);
    }
    let child = command
        .args([
            "--attacks",
            "all",
            "--duration",
            PHASE,
            "--flood-pps",
            FLOOD_PPS,
        ])
        .arg("--report")
        .arg(&report_path)
        .arg("--dir")
        .arg(&dir)
        .arg("--keep")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the lab starts");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + LAB_TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return false;
            }
        }
        // SAFETY: kill has no memory preconditions; the pid is the lab, our child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        std::thread::sleep(TEARDOWN_GRACE);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        true
    });
    let output = child.wait_with_output().expect("the lab runs");
    let timed_out = watchdog.join().unwrap_or(false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The verdict lines and the table for the CI log, past the test harness's capture (which
    // takes only the print macros), so they show even when the test passes; the per-second
    // lines are left out.
    let mut shown: String = stdout
        .lines()
        .filter(|l| !l.starts_with('['))
        .map(|l| format!("{l}\n"))
        .collect();
    shown.push_str(&format!("{stderr}lab took {:?}\n", started.elapsed()));
    let _ = std::io::stderr().write_all(shown.as_bytes());
    let fail = |why: String| -> ! {
        print_logs(&dir);
        panic!("{why}");
    };
    if timed_out {
        fail(format!("the lab did not finish within {LAB_TIMEOUT:?}"));
    }
    if !output.status.success() {
        fail(format!("the lab exited with {}", output.status));
    }
    let text = std::fs::read_to_string(&report_path).expect("the lab wrote its report");
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");
    assert_eq!(report["passed"], true, "{text}");
    assert_eq!(report["xdp"], true);
    let ran: Vec<&Value> = report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .collect();
    assert_eq!(
        ran.iter()
            .map(|p| p["phase"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        PHASES,
        "every phase ran, in order"
    );
    for phase in &ran {
        let name = phase["phase"].as_str().unwrap_or_default();
        for c in checks(phase) {
            assert_ne!(c["status"], "fail", "{name}: {c}");
        }
        assert_eq!(status(phase, "heights advanced"), "pass", "{name}");
        assert!(phase["advanced_min"].as_u64() >= Some(2), "{name}: {phase}");
        let attack = !matches!(name, "quiet" | "restart");
        if attack {
            let ratio = phase["latency_ratio"].as_f64().unwrap_or(f64::INFINITY);
            assert!(
                ratio <= 1.5,
                "{name}: finality p50 {ratio:.2}x the quiet phase's"
            );
            assert_eq!(status(phase, "attacker ran"), "pass", "{name}");
        }
        match name {
            "udp-blocked" | "udp-rate" | "syn" | "quic-short" => {
                assert_eq!(status(phase, "kernel drops"), "pass", "{name}");
            }
            "connect-flood" | "gossip-invalid-tx" | "gossip-invalid-vote" | "gossip-oversized" => {
                assert_eq!(
                    status(phase, "ban"),
                    "pass",
                    "{name}: blocked in the kernel with its reason"
                );
            }
            "replay" => {
                assert_eq!(status(phase, "replays refused"), "pass");
                assert_eq!(status(phase, "no double commit"), "pass");
            }
            "equivocate" => {
                assert_eq!(
                    status(phase, "double signed"),
                    "pass",
                    "double votes and double proposals"
                );
                assert_eq!(status(phase, "equivocator slashed"), "pass");
                assert_eq!(status(phase, "honest stakes unchanged"), "pass");
            }
            "restart" => {
                assert_eq!(status(phase, "caught up"), "pass");
                assert_eq!(status(phase, "signed again"), "pass");
                assert_eq!(
                    status(phase, "honest stakes unchanged"),
                    "pass",
                    "no double signing"
                );
            }
            _ => {}
        }
    }
    let finals: Vec<&Value> = report["final_checks"]
        .as_array()
        .expect("final checks")
        .iter()
        .collect();
    for name in [
        "agreement",
        "honest validators not blocked",
        "no ban of an honest validator",
        "nodes kept running",
    ] {
        let c = finals.iter().find(|c| c["name"] == name);
        assert_eq!(
            c.map(|c| &c["status"]),
            Some(&Value::from("pass")),
            "{name}: {c:?}"
        );
    }
    if monitoring {
        let c = finals.iter().find(|c| c["name"] == "monitoring");
        assert_eq!(
            c.map(|c| &c["status"]),
            Some(&Value::from("pass")),
            "monitoring: {c:?}"
        );
        let m = &report["monitoring"];
        let queries = m["panel_queries"].as_u64().unwrap_or(0);
        assert!(queries > 0, "no panel query was evaluated: {m}");
        assert_eq!(m["panel_queries_with_data"].as_u64(), Some(queries), "{m}");
        assert!(m["rule_groups"].as_u64() > Some(0), "{m}");
        assert_eq!(
            m["targets"].as_array().map(Vec::len),
            Some(4),
            "one target per validator: {m}"
        );
    }
    let netns = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let prefix = format!("xlab-{pid}-");
    let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "the lab left namespaces behind: {left:?}");
}

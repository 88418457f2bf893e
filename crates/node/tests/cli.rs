//! `node firewall ...` as an operator runs it: against a filter attached in a namespace this
//! test creates, from separate processes, including bad input and missing privileges.

mod common;

use std::process::{Command, Output};

use common::netns::{NODE_IFACE, XdpNamespace};
use common::privileged;

fn node(instance: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["firewall", "--instance", instance])
        .args(args)
        .output()
        .expect("running the node binary")
}

/// `node firewall --instance ARGS[0] ARGS[1..]` as user nobody.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_node"))
        .args(["firewall", "--instance"])
        .args(args)
        .output()
        .expect("setpriv (util-linux)")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpected success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.trim().lines().count() <= 2,
        "error is not short: {stderr}"
    );
    stderr
}

#[test]
fn operator_commands_work_across_processes_and_refuse_bad_input() {
    if !privileged("operator_commands") {
        return;
    }
    let ns = XdpNamespace::new("xcli-");
    let i = ns.instance.name();
    let dir = format!("/sys/fs/bpf/{i}");

    // Nothing attached yet: commands say what to do.
    assert!(err(&node(i, &["list"])).contains("run `node firewall attach` first"));
    // An unknown interface leaves nothing behind.
    let e = err(&node(
        i,
        &["attach", "--netns", &ns.node_ns, "--iface", "nope0"],
    ));
    assert!(e.contains("unknown interface \"nope0\""), "{e}");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "half-attached instance left behind"
    );
    let e = err(&node(
        i,
        &["attach", "--netns", "no-such-ns", "--iface", NODE_IFACE],
    ));
    assert!(e.contains("cannot enter network namespace"), "{e}");

    let attach = [
        "attach",
        "--netns",
        &ns.node_ns,
        "--iface",
        NODE_IFACE,
        "--tcp-port",
        "9000",
    ];
    assert!(ok(&node(i, &attach)).contains("native XDP mode"));
    assert!(ok(&node(i, &attach)).contains("replaced the program"));

    assert!(err(&node(i, &["block", "198.51.100.7/24"])).contains("did you mean 198.51.100.0/24"));
    assert!(err(&node(i, &["block", "not-an-ip"])).contains("invalid address or CIDR"));
    let e = err(&node(
        i,
        &[
            "attach",
            "--netns",
            &ns.node_ns,
            "--iface",
            NODE_IFACE,
            "--rate-pps",
            "5",
            "--rate-burst",
            "0",
        ],
    ));
    assert!(e.contains("burst"), "{e}");

    ok(&node(
        i,
        &[
            "block",
            "198.51.100.0/24",
            "--ttl",
            "10m",
            "--reason",
            "spam",
        ],
    ));
    ok(&node(i, &["block", "2001:db8::bad"]));
    ok(&node(i, &["allow", "198.51.100.10"]));
    let list = ok(&node(i, &["list"]));
    assert!(
        list.contains("block  198.51.100.0/24") && list.contains("reason=spam"),
        "{list}"
    );
    assert!(
        list.contains("block  2001:db8::bad/128") && list.contains("expires=never"),
        "{list}"
    );
    assert!(list.contains("allow  198.51.100.10/32"), "{list}");
    let why = ok(&node(i, &["why", "198.51.100.7"]));
    assert!(
        why.contains("DROP, blocked by 198.51.100.0/24 (reason spam, expires in"),
        "{why}"
    );
    assert!(ok(&node(i, &["why", "198.51.100.10"])).contains("PASS, allowlisted"));
    assert!(ok(&node(i, &["why", "192.0.2.1"])).contains("no allow or block rule"));

    assert!(ok(&node(i, &["stats"])).contains("mode: enforce"));
    ok(&node(i, &["mode", "monitor"]));
    assert!(ok(&node(i, &["stats"])).contains("mode: monitor"));
    assert!(ok(&node(i, &["top", "--count", "1"])).contains("verdict"));

    ok(&node(i, &["unblock", "198.51.100.0/24"]));
    assert!(err(&node(i, &["unblock", "198.51.100.0/24"])).contains("no block rule"));
    ok(&node(i, &["disallow", "198.51.100.10"]));
    assert!(ok(&node(i, &["sweep"])).contains("removed 0 expired"));

    // Without root: a one-line error, not a crash.
    for args in [
        vec!["cli-nobody", "attach", "--iface", "lo"],
        vec![i, "list"],
    ] {
        let e = err(&as_nobody(&args));
        assert!(e.contains("needs root"), "{args:?}: {e}");
    }

    assert!(ok(&node(i, &["detach"])).contains("detached"));
    assert!(
        !std::path::Path::new(&dir).exists(),
        "pins left after detach"
    );
    let out = Command::new("ip")
        .args(["-n", &ns.node_ns, "-d", "link", "show", NODE_IFACE])
        .output()
        .expect("ip");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "XDP left attached"
    );
}

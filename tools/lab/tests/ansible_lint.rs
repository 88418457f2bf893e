//! The Ansible playbooks in `deploy/ansible`: every playbook passes `ansible-playbook
//! --syntax-check` against both inventories, and the whole tree passes `ansible-lint` with the
//! production profile (`deploy/ansible/.ansible-lint`).
//!
//! Needs the Ansible venv `tools/bootstrap.sh` installs: without it the tests say loudly that
//! they skipped, and under `CI=true` they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Ansible venv of `tools/bootstrap.sh`.
const ANSIBLE_BIN: &str = "/var/cache/xdp-node/ansible/bin";
/// Every playbook the deployment ships.
const PLAYBOOKS: [&str; 6] = [
    "deploy.yml",
    "upgrade.yml",
    "health.yml",
    "backup.yml",
    "restore.yml",
    "teardown.yml",
];
/// Both inventories.
const INVENTORIES: [&str; 2] = ["inventories/lxc-lab", "inventories/example"];

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/ansible")
}

/// The path of an Ansible tool, or None (having said why) when the venv is missing.
fn tool(name: &str) -> Option<PathBuf> {
    let path = Path::new(ANSIBLE_BIN).join(name);
    if path.exists() {
        return Some(path);
    }
    let why = format!("{} is missing: run tools/bootstrap.sh", path.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}; under CI=true that is a failure");
    }
    eprintln!("SKIPPED: {why}");
    None
}

fn ansible(tool: &Path) -> Command {
    let mut command = Command::new(tool);
    command
        .current_dir(ansible_dir())
        .env(
            "PATH",
            format!("{ANSIBLE_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"),
        )
        .env("ANSIBLE_NOCOLOR", "1")
        .env("NO_COLOR", "1");
    command
}

#[test]
fn the_shipped_playbooks_are_exactly_the_listed_ones() {
    let mut found: Vec<String> = std::fs::read_dir(ansible_dir())
        .expect("deploy/ansible")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    found.sort();
    let mut listed: Vec<String> = PLAYBOOKS.iter().map(|p| p.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "add a new playbook to PLAYBOOKS");
}

#[test]
fn every_playbook_passes_the_syntax_check_with_both_inventories() {
    let Some(playbook) = tool("ansible-playbook") else {
        return;
    };
    for inventory in INVENTORIES {
        for file in PLAYBOOKS {
            let out = ansible(&playbook)
                .args(["--syntax-check", "-i", inventory, file])
                .output()
                .expect("running ansible-playbook");
            assert!(
                out.status.success(),
                "{file} with {inventory}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn ansible_lint_passes_with_the_production_profile() {
    let Some(lint) = tool("ansible-lint") else {
        return;
    };
    let out = ansible(&lint)
        .args(["--strict", "--offline"])
        .output()
        .expect("running ansible-lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ansible-lint:\n{text}");
    assert!(
        text.contains("Profile 'production' was required, and it passed"),
        "ansible-lint did not check the production profile:\n{text}"
    );
}

//! `node genesis` as a deployment runs it: each host's `node init` prints its key, one genesis
//! is written from the keys, and every host copies it with `node init --genesis`; and the
//! refusals (existing file, duplicate, malformed or missing keys, too many validators).

use std::path::Path;
use std::process::{Command, Output};

use types::limits::MAX_VALIDATORS;
use types::{PublicKey, SecretKey};

fn node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(args)
        .env_remove("NODE_DATA_DIR")
        .output()
        .expect("running the node binary")
}

/// `node genesis --out OUT --chain-id lab` with `--validator` for each key, and `extra`.
fn genesis(out: &Path, keys: &[String], extra: &[&str]) -> Output {
    let out = out.to_str().expect("a UTF-8 path");
    let mut args = vec!["genesis", "--out", out, "--chain-id", "lab"];
    for key in keys {
        args.extend(["--validator", key.as_str()]);
    }
    args.extend(extra);
    node(&args)
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key(seed: u8) -> String {
    SecretKey::from_seed([seed; 32]).public_key().to_string()
}

#[test]
fn one_genesis_from_the_keys_each_host_printed_is_shared_by_every_host() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let hosts: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("host-{i}")))
        .collect();
    let mut keys = Vec::new();
    for dir in &hosts {
        let out = succeeded(&node(&["init", "--data-dir", dir.to_str().expect("UTF-8")]));
        let key = out
            .lines()
            .find_map(|l| l.strip_prefix("identity  "))
            .unwrap_or_else(|| panic!("no identity line in {out}"));
        keys.push(key.trim().to_string());
    }
    let file = tmp.path().join("genesis.toml");
    let out = succeeded(&genesis(
        &file,
        &keys,
        &["--stake", "500", "--balance", "70"],
    ));
    assert!(out.contains(&file.display().to_string()), "{out}");
    assert!(out.contains("3 validators"), "{out}");

    let (written, _) = node::config::read_genesis(&file).expect("a valid genesis");
    assert_eq!(written.chain_id.to_string(), "lab");
    // The file is canonical: the given keys, sorted.
    let mut given: Vec<PublicKey> = keys.iter().map(|k| k.parse().expect("a key")).collect();
    given.sort();
    let validators: Vec<_> = written
        .validators
        .iter()
        .map(|v| (v.key, v.stake))
        .collect();
    assert_eq!(
        validators,
        given.iter().map(|&k| (k, 500)).collect::<Vec<_>>()
    );
    let accounts: Vec<_> = written
        .accounts
        .iter()
        .map(|a| (a.key, a.balance))
        .collect();
    assert_eq!(accounts, given.iter().map(|&k| (k, 70)).collect::<Vec<_>>());

    for dir in &hosts {
        succeeded(&node(&[
            "init",
            "--data-dir",
            dir.to_str().expect("UTF-8"),
            "--genesis",
            file.to_str().expect("UTF-8"),
        ]));
        let (copied, _) =
            node::config::read_genesis(&dir.join("genesis.toml")).expect("a valid genesis");
        assert_eq!(copied.hash(), written.hash());
    }
}

#[test]
fn the_order_of_the_keys_does_not_change_the_validators() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let keys = [key(9), key(2), key(5)];
    let reversed: Vec<String> = keys.iter().rev().cloned().collect();
    let (a, b) = (tmp.path().join("a.toml"), tmp.path().join("b.toml"));
    succeeded(&genesis(&a, &keys, &[]));
    succeeded(&genesis(&b, &reversed, &[]));
    let (a, _) = node::config::read_genesis(&a).expect("a valid genesis");
    let (b, _) = node::config::read_genesis(&b).expect("a valid genesis");
    assert_eq!(a.validators, b.validators);
    assert_eq!(a.accounts, b.accounts);
    assert_eq!(a.validators.len(), 3);
}

#[test]
fn bad_keys_an_existing_file_and_too_many_validators_are_refused() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let file = tmp.path().join("genesis.toml");

    let err = failed(&genesis(&file, &[key(1), key(2), key(1)], &[]));
    assert!(
        err.contains(&format!("--validator {} is given twice", key(1))),
        "{err}"
    );
    let err = failed(&genesis(&file, &[key(1), "abc".into()], &[]));
    assert!(
        err.contains("--validator") && err.contains("'abc'"),
        "{err}"
    );
    let err = failed(&genesis(&file, &[], &[]));
    assert!(err.contains("--validator"), "{err}");
    let err = failed(&genesis(&file, &[key(1)], &["--stake", "0"]));
    assert!(err.contains("--stake"), "{err}");
    let many: Vec<String> = (0..=MAX_VALIDATORS)
        .map(|i| key(u8::try_from(i).expect("fewer than 256")))
        .collect();
    let err = failed(&genesis(&file, &many, &[]));
    assert!(err.contains(&format!("at most {MAX_VALIDATORS}")), "{err}");
    assert!(!file.exists(), "a refused genesis was written");

    succeeded(&genesis(&file, &[key(1)], &[]));
    let before = std::fs::read_to_string(&file).expect("read");
    let err = failed(&genesis(&file, &[key(2)], &[]));
    assert!(err.contains("remove it"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), before);
}

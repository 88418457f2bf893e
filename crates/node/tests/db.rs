//! `node db restore` as an operator runs it: the checkpoint's data comes back, the latest
//! double-sign guard found (the checkpoint's, the current database's, or one an earlier restore
//! kept aside) is kept, closing its height when it is newer than the restored ledger, the
//! replaced database is moved aside, and a database in use, a missing one (unless the operator
//! says to do without its guard) or a checkpoint of another chain is refused without touching
//! anything. The last test restores a checkpoint a running validator made through its admin
//! API.
//!
//! # Design
//! Most tests build the databases themselves (a ledger at genesis, a guard record and a marker
//! key, written with the crates the node uses), so each case is exact and fast; the checkpoint
//! is made with `RocksStore::checkpoint`, as the admin route makes it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use consensus::guard::{LastSigned, SignGuard, Step};
use storage::{Column, RocksStore, Store, StoreOptions, WriteBatch};
use types::{ChainId, Domain, Genesis, GenesisValidator, Hash, SecretKey};

use common::{LocalNet, http_post};

/// Key in the meta column telling the test's databases apart.
const MARKER: &[u8] = b"test/marker";
/// A node gets this long to answer `/health` after it starts.
const START_WITHIN: Duration = Duration::from_secs(90);
/// The validator reaches a height within this.
const HEIGHT_WITHIN: Duration = Duration::from_secs(60);

/// Runs `node db restore --data-dir DIR --from FROM`.
fn restore(dir: &Path, from: &Path) -> Output {
    restore_with(dir, from, &[])
}

/// Runs `node db restore --data-dir DIR --from FROM ARGS`.
fn restore_with(dir: &Path, from: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_node"))
        .args(["db", "restore", "--data-dir"])
        .arg(dir)
        .arg("--from")
        .arg(from)
        .args(args)
        .env_remove("NODE_DATA_DIR")
        .env_remove("NODE_GENESIS")
        .output()
        .expect("running the node binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "restore failed:\n{}\n{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "restore succeeded:\n{}", stdout(out));
    stderr(out)
}

fn genesis(chain: &str) -> Genesis {
    let key = SecretKey::from_seed([7; 32]).public_key();
    Genesis::new(
        ChainId::new(chain).expect("a valid chain id"),
        1_700_000_000_000,
        Vec::new(),
        vec![GenesisValidator { key, stake: 10 }],
    )
    .expect("a valid genesis")
}

/// A data directory holding the genesis of chain `test`.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = tmp.path().join("node");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("genesis.toml"), genesis("test").to_toml()).expect("genesis");
    (tmp, dir)
}

fn signed(height: u64, round: u32, step: Step) -> LastSigned {
    let chain = ChainId::new("test").expect("a valid chain id");
    LastSigned {
        height,
        round,
        step,
        digest: Hash([height as u8; 32]),
        signature: SecretKey::from_seed([7; 32]).sign(Domain::Vote, &chain, &height),
    }
}

/// Opens (or creates) the database at `path` holding chain `chain`.
fn open(path: &Path, chain: &str) -> Arc<RocksStore> {
    let db = Arc::new(RocksStore::open(path, &StoreOptions::test()).expect("open the database"));
    chain::Ledger::open(db.clone(), &genesis(chain)).expect("the ledger opens");
    db
}

/// Writes `marker` and the guard record `last` into `db`.
fn write(db: &Arc<RocksStore>, marker: &str, last: LastSigned) {
    let mut batch = WriteBatch::new();
    batch.put(Column::Meta, MARKER, marker.as_bytes());
    db.write(batch).expect("write the marker");
    SignGuard::load(db)
        .expect("the guard loads")
        .record(db, last)
        .expect("record the guard");
}

fn marker(db: &RocksStore) -> Option<String> {
    db.get(Column::Meta, MARKER)
        .expect("read the marker")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn guard(db: &RocksStore) -> Option<LastSigned> {
    SignGuard::load(db)
        .expect("the guard loads")
        .last()
        .copied()
}

/// The directories of `dir` whose name starts with `prefix`.
fn dirs_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("list the data dir")
        .map(|e| e.expect("an entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// A data directory whose `db` was checkpointed with `then` as guard and marker "checkpoint",
/// and went on to `now` and marker "current"; the checkpoint's path.
fn checkpointed(then: LastSigned, now: LastSigned) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (tmp, dir) = data_dir();
    let checkpoint = tmp.path().join("checkpoint");
    let db = open(&dir.join("db"), "test");
    write(&db, "checkpoint", then);
    db.checkpoint(&checkpoint).expect("checkpoint");
    write(&db, "current", now);
    (tmp, dir, checkpoint)
}

#[test]
fn a_restore_brings_back_the_checkpoint_keeps_the_newer_guard_and_the_old_db_aside() {
    let (then, now) = (signed(5, 0, Step::Prevote), signed(10, 1, Step::Precommit));
    let (_tmp, dir, checkpoint) = checkpointed(then, now);
    let out = succeeded(&restore(&dir, &checkpoint));
    assert!(out.contains("ledger at height 0"), "{out}");
    assert!(out.contains("swapped:"), "{out}");
    assert!(
        out.contains(&format!(
            "kept the replaced database's ({})",
            dir.join("db").display()
        )),
        "{out}"
    );
    assert!(
        out.contains("the checkpoint's: height 5 round 0 Prevote"),
        "{out}"
    );
    // The restored consensus log lost what the node signed at height 10: it sits that out.
    assert!(out.contains("sits out height 10"), "{out}");

    let restored = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(marker(&restored).as_deref(), Some("checkpoint"));
    assert_eq!(
        guard(&restored),
        Some(now.closing_height()),
        "the guard went back"
    );
    drop(restored);

    let aside = dirs_starting(&dir, "db.before-restore-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(out.contains(&aside[0].display().to_string()), "{out}");
    let old = RocksStore::open(&aside[0], &StoreOptions::test()).expect("open");
    assert_eq!(marker(&old).as_deref(), Some("current"));
    assert_eq!(guard(&old), Some(now));
    assert!(!dir.join("db.restoring").exists());
    // The checkpoint itself is left as it was.
    let source = RocksStore::open(&checkpoint, &StoreOptions::test()).expect("open");
    assert_eq!(guard(&source), Some(then));
}

#[test]
fn the_checkpoint_guard_is_kept_when_it_is_the_later_one() {
    let (then, now) = (signed(8, 2, Step::Prevote), signed(8, 1, Step::Precommit));
    let (_tmp, dir, checkpoint) = checkpointed(then, now);
    let out = succeeded(&restore(&dir, &checkpoint));
    assert!(out.contains("kept the checkpoint's"), "{out}");
    // Its own consensus log is as recent as its guard: nothing to sit out.
    assert!(!out.contains("sits out"), "{out}");
    let restored = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(guard(&restored), Some(then));
}

#[test]
fn without_a_current_database_the_restore_is_refused_unless_told_to_do_without_its_guard() {
    let (_tmp, dir, checkpoint) =
        checkpointed(signed(3, 0, Step::Proposal), signed(4, 0, Step::Proposal));
    std::fs::remove_dir_all(dir.join("db")).expect("remove the db");
    let err = failed(&restore(&dir, &checkpoint));
    assert!(
        err.contains("there is no database") && err.contains("--without-current-guard"),
        "{err}"
    );
    assert!(!dir.join("db").exists() && !dir.join("db.restoring").exists());

    let out = restore_with(&dir, &checkpoint, &["--without-current-guard"]);
    let printed = succeeded(&out);
    let warning = stderr(&out);
    assert!(
        warning.contains("WARNING") && warning.contains("without the current database's"),
        "{warning}"
    );
    assert!(printed.contains("no database to keep aside"), "{printed}");
    assert!(printed.contains("kept the checkpoint's"), "{printed}");
    let restored = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(guard(&restored), Some(signed(3, 0, Step::Proposal)));
    assert!(dirs_starting(&dir, "db.before-restore-").is_empty());
}

#[test]
fn doing_without_the_current_guard_is_refused_when_there_is_one() {
    let (_tmp, dir, checkpoint) =
        checkpointed(signed(3, 0, Step::Proposal), signed(4, 0, Step::Proposal));
    let err = failed(&restore_with(
        &dir,
        &checkpoint,
        &["--without-current-guard"],
    ));
    assert!(err.contains("drop --without-current-guard"), "{err}");
    let current = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(marker(&current).as_deref(), Some("current"));
    assert!(!dir.join("db.restoring").exists());
}

/// Makes `<dir>/db.before-restore-<ms>` a database of chain `test` holding `last`.
fn kept(dir: &Path, ms: u64, last: LastSigned) -> PathBuf {
    let path = dir.join(format!("db.before-restore-{ms}"));
    write(&open(&path, "test"), "kept", last);
    path
}

#[test]
fn the_guard_a_kept_database_holds_wins_when_it_is_the_latest() {
    let (_tmp, dir, checkpoint) =
        checkpointed(signed(3, 0, Step::Proposal), signed(4, 0, Step::Proposal));
    kept(&dir, 1, signed(2, 0, Step::Prevote));
    let latest = kept(&dir, 2, signed(9, 1, Step::Prevote));
    let out = succeeded(&restore(&dir, &checkpoint));
    assert!(
        out.contains(&format!(
            "kept the set-aside database's ({})",
            latest.display()
        )),
        "{out}"
    );
    assert!(out.contains("height 4 round 0 Proposal"), "{out}");
    assert!(out.contains("sits out height 9"), "{out}");
    let restored = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(
        guard(&restored),
        Some(signed(9, 1, Step::Prevote).closing_height())
    );
    assert_eq!(dirs_starting(&dir, "db.before-restore-").len(), 3);
}

#[test]
fn without_a_current_database_a_kept_one_still_gives_its_guard() {
    // What an interrupted restore of an earlier version left: `db` moved aside, no new one.
    let (_tmp, dir, checkpoint) =
        checkpointed(signed(3, 0, Step::Proposal), signed(4, 0, Step::Proposal));
    let aside = dir.join("db.before-restore-7");
    std::fs::rename(dir.join("db"), &aside).expect("move the db aside");
    let out = succeeded(&restore_with(
        &dir,
        &checkpoint,
        &["--without-current-guard"],
    ));
    assert!(
        out.contains(&format!(
            "kept the set-aside database's ({})",
            aside.display()
        )),
        "{out}"
    );
    let restored = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(
        guard(&restored),
        Some(signed(4, 0, Step::Proposal).closing_height())
    );
}

#[test]
fn a_kept_directory_that_is_no_database_is_refused_before_anything_changes() {
    let (_tmp, dir, checkpoint) =
        checkpointed(signed(3, 0, Step::Proposal), signed(4, 0, Step::Proposal));
    std::fs::create_dir(dir.join("db.before-restore-5")).expect("mkdir");
    let err = failed(&restore(&dir, &checkpoint));
    assert!(err.contains("is not a database"), "{err}");
    let current = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(marker(&current).as_deref(), Some("current"));
    assert!(!dir.join("db.restoring").exists());
}

#[test]
fn a_database_in_use_is_refused_and_left_untouched() {
    let (_tmp, dir, checkpoint) =
        checkpointed(signed(1, 0, Step::Prevote), signed(2, 0, Step::Prevote));
    let running = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    let err = failed(&restore(&dir, &checkpoint));
    assert!(err.contains("stop the node first"), "{err}");
    assert_eq!(marker(&running).as_deref(), Some("current"));
    assert!(!dir.join("db.restoring").exists());
    assert!(dirs_starting(&dir, "db.before-restore-").is_empty());
}

#[test]
fn a_checkpoint_of_another_chain_or_no_checkpoint_at_all_is_refused() {
    let (tmp, dir, _) = checkpointed(signed(1, 0, Step::Prevote), signed(2, 0, Step::Prevote));
    let other = tmp.path().join("other");
    let db = open(&other.join("db"), "another");
    db.checkpoint(&other.join("checkpoint"))
        .expect("checkpoint");
    drop(db);
    let err = failed(&restore(&dir, &other.join("checkpoint")));
    assert!(err.contains("does not hold a usable ledger"), "{err}");
    assert!(
        !dir.join("db.restoring").exists(),
        "the copy is left behind"
    );

    let err = failed(&restore(&dir, tmp.path()));
    assert!(err.contains("is not a database checkpoint"), "{err}");
    let err = failed(&restore(&dir, &dir.join("db")));
    assert!(err.contains("the database being replaced"), "{err}");

    std::fs::create_dir(dir.join("db.restoring")).expect("mkdir");
    let err = failed(&restore(&dir, &other.join("checkpoint")));
    assert!(err.contains("an earlier restore did not finish"), "{err}");
    // It says how to tell an unfinished copy from the replaced database.
    assert!(err.contains("`swapped: ...`"), "{err}");

    let current = RocksStore::open(&dir.join("db"), &StoreOptions::test()).expect("open");
    assert_eq!(marker(&current).as_deref(), Some("current"));
    assert!(dirs_starting(&dir, "db.before-restore-").is_empty());
}

#[test]
fn a_checkpoint_a_running_validator_made_restores_into_the_stopped_node() {
    let mut net = LocalNet::init(1);
    net.start(0, &[]);
    net.wait_healthy(0, START_WITHIN);
    net.wait_height(0, 3, HEIGHT_WITHIN);
    let url = format!("{}/v1/admin/db/checkpoint", net.admin(0));
    let (status, body) =
        http_post(&url, "{}", Some(&net.admin_token(0))).expect("the admin API answers");
    assert_eq!(status, 201, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let path = PathBuf::from(answer["path"].as_str().expect("a path"));
    let height = answer["height"].as_u64().expect("a height");
    // Blocks final after the answer are past the checkpoint.
    let answered_at = net.height(0);
    net.wait_height(0, answered_at + 2, HEIGHT_WITHIN);
    net.node(0).terminate();
    let stopped_at = {
        let db = RocksStore::open(&net.node_dir(0).join("db"), &StoreOptions::test())
            .expect("open the stopped node's db");
        chain::Ledger::open(Arc::new(db), &net.genesis())
            .expect("the ledger opens")
            .height()
    };

    let out = succeeded(&restore(&net.node_dir(0), &path));
    let restored: u64 = out
        .split("ledger at height ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no restored height in {out}"));
    assert!(
        (height..stopped_at).contains(&restored),
        "restored {restored}, checkpoint at {height}, stopped at {stopped_at}"
    );
    assert!(out.contains("kept the replaced database's"), "{out}");
    let db = Arc::new(
        RocksStore::open(&net.node_dir(0).join("db"), &StoreOptions::test()).expect("open"),
    );
    let last = guard(&db).expect("the validator signed");
    assert!(last.height >= stopped_at, "{last:?} at {stopped_at}");
    assert_eq!(
        (last.round, last.step),
        (u32::MAX, Step::Precommit),
        "the height it last signed is closed: {last:?}"
    );
    assert!(
        out.contains(&format!("sits out height {}", last.height)),
        "{out}"
    );
    let ledger = chain::Ledger::open(db.clone(), &net.genesis()).expect("the ledger opens");
    assert_eq!(ledger.height(), restored);
    for h in 1..=restored {
        assert!(ledger.block(h).expect("read").is_some(), "block {h}");
    }
}

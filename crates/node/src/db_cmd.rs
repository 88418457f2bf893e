//! `node db restore`: replace a stopped node's database with a copy of a checkpoint (made by
//! `POST /v1/admin/db/checkpoint`) without rolling back its double-sign guard.
//!
//! # Design
//! The guard lives in the database it protects, so restoring an older checkpoint would also
//! restore an older guard, and the validator could sign again at heights it already signed.
//! The restore therefore reads the guard of the current `<data_dir>/db` (opening it also proves
//! no node holds it) and of every `db.before-restore-*` an earlier restore kept, then holds the
//! current database's lock so no node opens it until the end. It copies the checkpoint into
//! `<data_dir>/db.restoring` (a real copy: a checkpoint's files are hard links into the live
//! database) and writes the latest guard found into the copy, unless the checkpoint's own is
//! later. A guard carried over from another database is newer than the checkpoint's consensus
//! WAL, which lost the votes and lock behind it: when its height is above the restored ledger,
//! it is written as the close of that height ([`LastSigned::closing_height`]), so the node
//! signs nothing more there and resumes at the next height. Then the two directories are
//! exchanged in one step (`renameat2(RENAME_EXCHANGE)`), so `db` is at every instant a whole
//! database, the old or the new, and the old one, now at `db.restoring`, is renamed to
//! `db.before-restore-<unix ms>`. The data directory is synced after each step.
//!
//! The lock held is RocksDB's own: a write lock on the database's `LOCK` file, taken as an
//! open file description lock once the database is closed. The database is not kept open
//! through the swap: RocksDB names its files by path, and closing it deletes every file under
//! that path it does not know, which after the exchange would be the restored database's.
//!
//! # Crash states
//! - Before the exchange: `db` is the current database, unchanged; `db.restoring`, if any, is
//!   an unfinished or finished copy. Remove `db.restoring` and restore again.
//! - After the exchange (the restore printed [`SWAPPED`]): `db` is the restored database with
//!   the guard carried over; `db.restoring` is the replaced one. Rename it to
//!   `db.before-restore-<unix ms>`: the restore is then complete.
//!
//! A leftover `db.restoring` is refused, with both cases explained. Renaming it to
//! `db.before-restore-<unix ms>` is safe in either: the next restore reads its guard, and
//! refuses a directory that does not open as a database, which is then an unfinished copy.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use consensus::guard::{LastSigned, SignGuard};
use storage::{RocksStore, StoreError, StoreOptions};
use types::Genesis;

use node::config::Config;

/// Where the copy of the checkpoint is built, under the data directory.
const RESTORING_DIR: &str = "db.restoring";
/// Name of a replaced database under the data directory, followed by the restore's UNIX ms.
const BEFORE_RESTORE_PREFIX: &str = "db.before-restore-";
/// The file every RocksDB directory (and so every checkpoint) holds.
const ROCKSDB_CURRENT: &str = "CURRENT";
/// The file of a RocksDB directory whose write lock the process using it holds.
const ROCKSDB_LOCK: &str = "LOCK";
/// Most files a checkpoint may hold: 100 000 SST files of RocksDB's default 64 MiB are over
/// 6 TiB, far beyond any database of this node.
const MAX_CHECKPOINT_FILES: usize = 100_000;
/// Most `db.before-restore-*` directories read: each is a whole database, and one is left by
/// each restore until the operator removes it.
const MAX_KEPT_DATABASES: usize = 32;
/// Mode of the directory the copy is built in: the node's data is its owner's alone.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Starts the line printed once `db` is the restored database and `db.restoring` the
/// replaced one; the operator tells the crash states apart by it.
const SWAPPED: &str = "swapped:";

/// Options of `node db`.
#[derive(Args, Debug)]
pub struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Subcommand, Debug)]
enum DbCommand {
    /// Replace a stopped node's database with a copy of a checkpoint; the latest double-sign
    /// guard found is kept, the replaced database is moved aside.
    Restore(RestoreArgs),
}

/// Options of `node db restore`.
#[derive(Args, Debug)]
struct RestoreArgs {
    /// The node's data directory (the database is its `db/`).
    #[arg(long, env = "NODE_DATA_DIR")]
    data_dir: PathBuf,
    /// The checkpoint to restore (a directory made by `POST /v1/admin/db/checkpoint`).
    #[arg(long = "from", value_name = "CHECKPOINT_DIR")]
    from: PathBuf,
    /// The chain's genesis file, to check the checkpoint holds this chain; default
    /// `<data_dir>/genesis.toml`.
    #[arg(long, env = "NODE_GENESIS")]
    genesis: Option<PathBuf>,
    /// Restore although `<data_dir>/db` is missing. This validator's latest double-sign guard
    /// is then lost (only the checkpoint's and those of `db.before-restore-*` directories are
    /// read): the node may sign again, differently, what it signed after the checkpoint was
    /// made, and be slashed for it. Keep it stopped until the network is past the height it
    /// last signed.
    #[arg(long)]
    without_current_guard: bool,
}

/// Runs `node db`.
pub fn run(args: DbArgs) -> Result<()> {
    match args.command {
        DbCommand::Restore(args) => restore(&args),
    }
}

/// A double-sign guard read from a database other than the checkpoint.
struct Found {
    /// Where it was read, for the operator: "the replaced database's (PATH)".
    source: String,
    /// The record, if that database held one.
    last: Option<LastSigned>,
}

/// What the copy of the checkpoint holds once prepared.
struct Prepared {
    /// Height of the restored ledger.
    height: u64,
    /// The guard the checkpoint came with.
    checkpoint_guard: Option<LastSigned>,
    /// Whether the guard carried over was written over the checkpoint's.
    carried: bool,
    /// The height the node sits out: the carried guard's, when above the restored ledger.
    sits_out: Option<u64>,
}

/// A write lock on a database's `LOCK` file, conflicting with the one RocksDB takes: while
/// it is held no node opens the database. Released when dropped.
#[derive(Debug)]
struct DbLock {
    _file: File,
}

fn restore(args: &RestoreArgs) -> Result<()> {
    let data_dir = absolute(&args.data_dir)?;
    let from = absolute(&args.from)?;
    let config = Config {
        data_dir: data_dir.clone(),
        genesis: args.genesis.clone(),
        ..Config::default()
    };
    let db_path = config.db_path();
    let restoring = data_dir.join(RESTORING_DIR);
    if !from.join(ROCKSDB_CURRENT).is_file() {
        bail!(
            "{} is not a database checkpoint (it has no {ROCKSDB_CURRENT} file); give a directory made by POST /v1/admin/db/checkpoint",
            from.display()
        );
    }
    if same_dir(&from, &db_path) || same_dir(&from, &restoring) {
        bail!(
            "{} is the database being replaced; restore from a checkpoint",
            from.display()
        );
    }
    if restoring.symlink_metadata().is_ok() {
        bail!(
            "{restoring} exists: an earlier restore did not finish. If its output has the line `{SWAPPED} ...`, {restoring} is the replaced database, holding the latest double-sign guard: rename it to {data}/{BEFORE_RESTORE_PREFIX}<unix ms> and the restore is complete. Otherwise it is an unfinished copy of the checkpoint: remove it and restore again. If the output is lost, rename it to {data}/{BEFORE_RESTORE_PREFIX}<unix ms> anyway: the next restore reads its guard, and refuses it if it does not open, as an unfinished copy (remove it then)",
            restoring = restoring.display(),
            data = data_dir.display()
        );
    }
    let genesis_path = config.genesis_path();
    let (genesis, _) = node::config::read_genesis(&genesis_path).with_context(|| {
        format!(
            "reading the chain's genesis {} (give --genesis FILE if the node uses another)",
            genesis_path.display()
        )
    })?;

    let current = read_current(&db_path)?;
    match (&current, args.without_current_guard) {
        (None, false) => bail!(
            "there is no database at {}, so this validator's latest double-sign guard cannot be carried over: the restored node would have only the checkpoint's (and those of {BEFORE_RESTORE_PREFIX}* directories), and may sign again, differently, what it signed since, and be slashed. If the database was moved, put it back at {}; if it is lost, restore again with --without-current-guard and keep the node stopped until the network is past the height it last signed",
            db_path.display(),
            db_path.display()
        ),
        (Some(_), true) => bail!(
            "{} exists: its double-sign guard is carried over; drop --without-current-guard",
            db_path.display()
        ),
        _ => {}
    }
    let mut found = Vec::new();
    if let Some((last, _)) = &current {
        found.push(Found {
            source: format!("the replaced database's ({})", db_path.display()),
            last: *last,
        });
    }
    found.extend(read_kept(&data_dir)?);
    let latest = latest(&found);

    let prepared = match prepare(&from, &restoring, &genesis, latest.map(|(_, last)| last)) {
        Ok(prepared) => prepared,
        Err(e) => {
            remove_copy(&restoring);
            return Err(e);
        }
    };

    let aside = match current {
        Some((_, lock)) => {
            let aside = swap(&data_dir, &db_path, &restoring)?;
            drop(lock);
            Some(aside)
        }
        None => {
            rename2(&restoring, &db_path, libc::RENAME_NOREPLACE).with_context(|| {
                format!(
                    "moving {restoring} to {db}; if {db} exists now, a node made it since the restore began: stop the node, move {db} out of the data directory and rename {restoring} to {db}",
                    restoring = restoring.display(),
                    db = db_path.display()
                )
            })?;
            sync_dir(&data_dir)?;
            None
        }
    };

    println!(
        "restored {} from {}: ledger at height {}",
        db_path.display(),
        from.display(),
        prepared.height
    );
    report_guards(&prepared, latest, &found);
    match aside {
        Some(aside) => println!(
            "replaced database kept at {}; remove it once the node runs well",
            aside.display()
        ),
        None => {
            println!("there was no database to keep aside");
            eprintln!(
                "WARNING: restored without the current database's double-sign guard (--without-current-guard): if this validator signed anything after the checkpoint was made, it may sign conflicting messages and be slashed. Keep it stopped until the network is past the height it last signed."
            );
        }
    }
    Ok(())
}

/// The latest of the guards found (by height, round, step; the first one found on a tie).
fn latest(found: &[Found]) -> Option<(&Found, LastSigned)> {
    found
        .iter()
        .fold(None, |best, candidate| match (best, candidate.last) {
            (None, Some(last)) => Some((candidate, last)),
            (Some((_, kept)), Some(last)) if last.point() > kept.point() => Some((candidate, last)),
            (best, _) => best,
        })
}

/// Prints which guard the restored database holds, where it came from, every guard found, and
/// the height the node sits out.
fn report_guards(prepared: &Prepared, latest: Option<(&Found, LastSigned)>, found: &[Found]) {
    let winner = match latest {
        Some((source, last)) if prepared.carried => {
            format!("kept {}: {}", source.source, describe(Some(&last)))
        }
        _ => format!(
            "kept the checkpoint's: {}",
            describe(prepared.checkpoint_guard.as_ref())
        ),
    };
    println!("double-sign guard: {winner}");
    println!(
        "  the checkpoint's: {}",
        describe(prepared.checkpoint_guard.as_ref())
    );
    for source in found {
        println!("  {}: {}", source.source, describe(source.last.as_ref()));
    }
    if let Some(height) = prepared.sits_out {
        println!(
            "the node sits out height {height}: the restored consensus log is older than what it signed there, so it signs nothing more at {height} and signs again from height {}",
            height.saturating_add(1)
        );
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Whether `a` and `b` name the same existing directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Reads the guard of the current database when there is one, then locks it against any node
/// until the returned lock is dropped; a database in use is refused.
fn read_current(db_path: &Path) -> Result<Option<(Option<LastSigned>, DbLock)>> {
    if db_path.symlink_metadata().is_err() {
        return Ok(None);
    }
    if !db_path.is_dir() {
        bail!(
            "{} is not a directory; move it away and restore again",
            db_path.display()
        );
    }
    let last = read_guard(
        db_path,
        "stop the node first",
        "if that database is damaged, move it out of the data directory and restore again with --without-current-guard (the node then does without its guard)",
    )?;
    // RocksDB released its lock on close; a node starting in between makes the lock below
    // fail, before anything changed.
    let lock = lock_db(db_path)?;
    Ok(Some((last, lock)))
}

/// Opens the database at `path`, reads its double-sign guard and closes it again. A database
/// in use is refused with `in_use` (what to do); `advice` follows any other failure.
fn read_guard(path: &Path, in_use: &str, advice: &str) -> Result<Option<LastSigned>> {
    let db = match RocksStore::open(path, &StoreOptions::default()) {
        Ok(db) => db,
        Err(StoreError::Locked { .. }) => {
            bail!("the database {} is in use: {in_use}", path.display())
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "opening {} to read its double-sign guard ({advice})",
                    path.display()
                )
            });
        }
    };
    let guard = SignGuard::load(&db).with_context(|| {
        format!(
            "reading the double-sign guard of {} ({advice})",
            path.display()
        )
    })?;
    Ok(guard.last().copied())
}

/// Takes the write lock RocksDB takes on `db_path`'s `LOCK` file, as an open file description
/// lock: it conflicts with a node's lock, including one in this process, and lasts until the
/// returned value is dropped.
fn lock_db(db_path: &Path) -> Result<DbLock> {
    let path = db_path.join(ROCKSDB_LOCK);
    let file = File::options()
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {} to lock the database", path.display()))?;
    // SAFETY: `flock` is a plain C struct of integers, for which all-zero bytes are valid.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the descriptor is open for the whole call and `lock` is a valid `flock` that
    // F_OFD_SETLK only reads.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
        let err = std::io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
            bail!(
                "the database {} is in use: stop the node first",
                db_path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    Ok(DbLock { _file: file })
}

/// Reads the guard of every `db.before-restore-*` directory in `data_dir` (an earlier restore
/// kept the replaced database there, and after some crashes it holds the latest guard).
fn read_kept(data_dir: &Path) -> Result<Vec<Found>> {
    let listing = || format!("listing {}", data_dir.display());
    let mut kept = Vec::new();
    for entry in std::fs::read_dir(data_dir).with_context(listing)? {
        let entry = entry.with_context(listing)?;
        if entry
            .file_name()
            .as_bytes()
            .starts_with(BEFORE_RESTORE_PREFIX.as_bytes())
        {
            if kept.len() == MAX_KEPT_DATABASES {
                bail!(
                    "{} holds more than {MAX_KEPT_DATABASES} {BEFORE_RESTORE_PREFIX}* directories: remove those of restores after which the node ran well, and restore again",
                    data_dir.display()
                );
            }
            kept.push(entry.path());
        }
    }
    kept.sort();
    kept.iter().map(|path| read_kept_guard(path)).collect()
}

/// Reads the guard of the database an earlier restore kept at `path`.
fn read_kept_guard(path: &Path) -> Result<Found> {
    let move_out = "it may hold this validator's latest double-sign guard; if it cannot be repaired, move it out of the data directory and restore again, and keep the node stopped until the network is past the height it last signed";
    if !path.join(ROCKSDB_CURRENT).is_file() {
        bail!(
            "{} is not a database (it has no {ROCKSDB_CURRENT} file), so its double-sign guard cannot be read: if it is an unfinished copy, remove it; otherwise {move_out}",
            path.display()
        );
    }
    let last = read_guard(
        path,
        "stop whatever uses it first",
        &format!("if it is an unfinished copy, remove it; otherwise {move_out}"),
    )?;
    Ok(Found {
        source: format!("the set-aside database's ({})", path.display()),
        last,
    })
}

/// Removes an unfinished copy, or says what to remove.
fn remove_copy(restoring: &Path) {
    if let Err(cleanup) = std::fs::remove_dir_all(restoring) {
        eprintln!(
            "could not remove {} ({cleanup}); remove it before restoring again",
            restoring.display()
        );
    }
}

/// Copies the checkpoint into `restoring`, checks it holds this chain, and writes `carried`
/// into it unless the checkpoint's guard is later; a carried guard above the restored ledger
/// is written as the close of its height. The copy is flushed and closed on return.
fn prepare(
    from: &Path,
    restoring: &Path,
    genesis: &Genesis,
    carried: Option<LastSigned>,
) -> Result<Prepared> {
    copy_checkpoint(from, restoring)?;
    let db = Arc::new(
        RocksStore::open(restoring, &StoreOptions::default()).with_context(|| {
            format!(
                "opening the copy of the checkpoint in {}",
                restoring.display()
            )
        })?,
    );
    let height = chain::Ledger::open(db.clone(), genesis)
        .with_context(|| {
            format!(
                "the checkpoint {} does not hold a usable ledger of chain {}",
                from.display(),
                genesis.chain_id
            )
        })?
        .height();
    let mut guard = SignGuard::load(&db).context("reading the checkpoint's double-sign guard")?;
    let checkpoint_guard = guard.last().copied();
    let writing = "writing the double-sign guard into the restored database";
    let carried = match carried {
        Some(last) if guard.merge(&db, last).context(writing)? => Some(last),
        _ => None,
    };
    let sits_out = match carried {
        Some(last) if last.height > height => {
            guard.record(&db, last.closing_height()).context(writing)?;
            Some(last.height)
        }
        _ => None,
    };
    db.flush()
        .with_context(|| format!("flushing {}", restoring.display()))?;
    Ok(Prepared {
        height,
        checkpoint_guard,
        carried: carried.is_some(),
        sits_out,
    })
}

/// Exchanges the current database at `db_path` with the prepared copy at `restoring`, then
/// moves the replaced one, now at `restoring`, to `db.before-restore-<unix ms>` and returns
/// that path. `db_path` is a whole database throughout; the data directory is synced after
/// each step.
fn swap(data_dir: &Path, db_path: &Path, restoring: &Path) -> Result<PathBuf> {
    if let Err(e) = rename2(db_path, restoring, libc::RENAME_EXCHANGE) {
        remove_copy(restoring);
        return Err(e).with_context(|| {
            format!(
                "exchanging {} with the prepared copy {}; nothing changed (the file system must support renameat2 RENAME_EXCHANGE, as ext4, xfs, btrfs and tmpfs do)",
                db_path.display(),
                restoring.display()
            )
        });
    }
    let finish = |aside: &str| {
        format!(
            "{} is the restored database and {} the replaced one: rename it to {aside} to finish",
            db_path.display(),
            restoring.display()
        )
    };
    let pattern = format!("{}/{BEFORE_RESTORE_PREFIX}<unix ms>", data_dir.display());
    sync_dir(data_dir).with_context(|| finish(&pattern))?;
    println!(
        "{SWAPPED} {} is the restored database; {} holds the replaced one until it is moved aside",
        db_path.display(),
        restoring.display()
    );
    let aside = data_dir.join(format!("{BEFORE_RESTORE_PREFIX}{}", p2p::clock::now_ms()));
    rename2(restoring, &aside, libc::RENAME_NOREPLACE)
        .with_context(|| format!("moving it aside; {}", finish(&pattern)))?;
    sync_dir(data_dir)?;
    Ok(aside)
}

/// `renameat2(from, to, flags)` on absolute or working-directory-relative paths.
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    let from = CString::new(from.as_os_str().as_bytes())?;
    let to = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated strings alive for the whole call; AT_FDCWD resolves
    // relative paths against the working directory.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Copies every file of the checkpoint `from` into the new directory `to` (its own copies,
/// not links, synced to disk); a checkpoint holds only regular files.
fn copy_checkpoint(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(PRIVATE_DIR_MODE)
        .create(to)
        .with_context(|| format!("creating {}", to.display()))?;
    let entries = std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))?;
    for (count, entry) in entries.enumerate() {
        if count == MAX_CHECKPOINT_FILES {
            bail!(
                "{} holds more than {MAX_CHECKPOINT_FILES} entries: not a checkpoint of this node",
                from.display()
            );
        }
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let source = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", source.display()))?;
        if !kind.is_file() {
            bail!(
                "{} is not a regular file: a checkpoint holds only files",
                source.display()
            );
        }
        let target = to.join(entry.file_name());
        std::fs::copy(&source, &target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        File::open(&target)
            .and_then(|file| file.sync_all())
            .with_context(|| format!("syncing {}", target.display()))?;
    }
    sync_dir(to)
}

/// Makes the entries of `dir` (new files, renames) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

/// A guard record for the operator.
fn describe(last: Option<&LastSigned>) -> String {
    match last {
        Some(last) if last.round == u32::MAX => {
            format!("height {} closed (nothing more signed there)", last.height)
        }
        Some(last) => format!(
            "height {} round {} {:?}",
            last.height, last.round, last.step
        ),
        None => "none".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use consensus::guard::Step;
    use types::{ChainId, Domain, Hash, SecretKey};

    use super::*;

    fn signed(height: u64, round: u32, step: Step) -> LastSigned {
        let chain = ChainId::new("t").expect("a valid chain id");
        LastSigned {
            height,
            round,
            step,
            digest: Hash([1; 32]),
            signature: SecretKey::from_seed([3; 32]).sign(Domain::Vote, &chain, &height),
        }
    }

    fn found(name: &str, last: Option<LastSigned>) -> Found {
        Found {
            source: name.to_string(),
            last,
        }
    }

    #[test]
    fn a_checkpoint_is_copied_not_linked() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let from = dir.path().join("checkpoint");
        std::fs::create_dir(&from).expect("mkdir");
        std::fs::write(from.join("000007.sst"), b"table").expect("write");
        std::fs::write(from.join(ROCKSDB_CURRENT), b"MANIFEST-000005\n").expect("write");
        let to = dir.path().join("copy");
        copy_checkpoint(&from, &to).expect("copied");
        for name in ["000007.sst", ROCKSDB_CURRENT] {
            let (a, b) = (
                std::fs::metadata(from.join(name)).expect("source"),
                std::fs::metadata(to.join(name)).expect("copy"),
            );
            assert_ne!(a.ino(), b.ino(), "{name} is a link, not a copy");
            assert_eq!(
                std::fs::read(from.join(name)).expect("source"),
                std::fs::read(to.join(name)).expect("copy")
            );
        }
        assert_eq!(
            std::fs::metadata(&to).expect("copy").mode() & 0o777,
            PRIVATE_DIR_MODE
        );
    }

    #[test]
    fn a_checkpoint_with_anything_but_files_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let from = dir.path().join("checkpoint");
        std::fs::create_dir_all(from.join("nested")).expect("mkdir");
        let err = copy_checkpoint(&from, &dir.path().join("copy")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err:#}");
    }

    #[test]
    fn a_copy_is_never_made_over_an_existing_directory() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let from = dir.path().join("checkpoint");
        std::fs::create_dir(&from).expect("mkdir");
        let err = copy_checkpoint(&from, dir.path()).unwrap_err();
        assert!(err.to_string().contains("creating"), "{err:#}");
    }

    #[test]
    fn the_swap_leaves_the_copy_at_db_and_the_old_database_aside() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (db, restoring) = (dir.path().join("db"), dir.path().join(RESTORING_DIR));
        for (path, content) in [(&db, "old"), (&restoring, "new")] {
            std::fs::create_dir(path).expect("mkdir");
            std::fs::write(path.join(ROCKSDB_CURRENT), content).expect("write");
        }
        let aside = swap(dir.path(), &db, &restoring).expect("swapped");
        let read = |path: &Path| std::fs::read_to_string(path.join(ROCKSDB_CURRENT)).ok();
        assert_eq!(read(&db).as_deref(), Some("new"));
        assert_eq!(read(&aside).as_deref(), Some("old"));
        assert!(
            aside
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(BEFORE_RESTORE_PREFIX.as_bytes())),
            "{}",
            aside.display()
        );
        assert!(!restoring.exists());
    }

    #[test]
    fn renames_never_replace_and_exchanges_need_both_sides() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::write(a.join("f"), "a").expect("write");
        std::fs::create_dir(&b).expect("mkdir");
        // A plain rename would replace the empty directory `b`.
        let err = rename2(&a, &b, libc::RENAME_NOREPLACE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
        std::fs::remove_dir(&b).expect("rmdir");
        let err = rename2(&a, &b, libc::RENAME_EXCHANGE).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(
            std::fs::read_to_string(a.join("f")).ok().as_deref(),
            Some("a")
        );
    }

    #[test]
    fn a_locked_database_is_refused_to_a_node_and_the_lock_to_a_database_in_use() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("db");
        drop(RocksStore::open(&path, &StoreOptions::test()).expect("create"));
        let lock = lock_db(&path).expect("locked");
        assert!(matches!(
            RocksStore::open(&path, &StoreOptions::test()),
            Err(StoreError::Locked { .. })
        ));
        drop(lock);
        let open = RocksStore::open(&path, &StoreOptions::test()).expect("open once unlocked");
        let err = lock_db(&path).unwrap_err();
        assert!(err.to_string().contains("stop the node first"), "{err:#}");
        drop(open);
    }

    #[test]
    fn the_latest_guard_wins_and_the_first_found_on_a_tie() {
        let all = [
            found("current", Some(signed(5, 0, Step::Precommit))),
            found("kept-1", None),
            found("kept-2", Some(signed(5, 1, Step::Proposal))),
            found("kept-3", Some(signed(5, 1, Step::Proposal))),
            found("kept-4", Some(signed(4, 9, Step::Precommit))),
        ];
        let (source, last) = latest(&all).expect("a guard");
        assert_eq!(
            (source.source.as_str(), last.point()),
            ("kept-2", (5, 1, Step::Proposal))
        );
        assert!(latest(&[found("current", None)]).is_none());
    }

    fn copy_with_guard(
        dir: &Path,
        checkpoint_guard: Option<LastSigned>,
    ) -> (PathBuf, PathBuf, Genesis) {
        let genesis = Genesis::new(
            ChainId::new("t").expect("a valid chain id"),
            1_700_000_000_000,
            Vec::new(),
            vec![types::GenesisValidator {
                key: SecretKey::from_seed([3; 32]).public_key(),
                stake: 10,
            }],
        )
        .expect("a valid genesis");
        let source =
            Arc::new(RocksStore::open(&dir.join("source"), &StoreOptions::test()).expect("create"));
        chain::Ledger::open(source.clone(), &genesis).expect("the ledger opens");
        if let Some(last) = checkpoint_guard {
            SignGuard::load(&source)
                .expect("the guard loads")
                .record(&source, last)
                .expect("recorded");
        }
        let checkpoint = dir.join("checkpoint");
        source.checkpoint(&checkpoint).expect("checkpoint");
        (checkpoint, dir.join(RESTORING_DIR), genesis)
    }

    fn guard_of(path: &Path) -> Option<LastSigned> {
        let db = RocksStore::open(path, &StoreOptions::test()).expect("open");
        SignGuard::load(&db).expect("loads").last().copied()
    }

    #[test]
    fn a_carried_guard_above_the_restored_ledger_closes_its_height() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (checkpoint, restoring, genesis) =
            copy_with_guard(dir.path(), Some(signed(1, 0, Step::Prevote)));
        let carried = signed(3, 2, Step::Prevote);
        let prepared = prepare(&checkpoint, &restoring, &genesis, Some(carried)).expect("prepared");
        assert_eq!(prepared.height, 0);
        assert!(prepared.carried);
        assert_eq!(prepared.sits_out, Some(3));
        assert_eq!(guard_of(&restoring), Some(carried.closing_height()));
    }

    #[test]
    fn the_checkpoint_guard_when_later_is_kept_as_it_is() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let checkpoint_guard = signed(3, 2, Step::Prevote);
        let (checkpoint, restoring, genesis) = copy_with_guard(dir.path(), Some(checkpoint_guard));
        let prepared = prepare(
            &checkpoint,
            &restoring,
            &genesis,
            Some(signed(3, 1, Step::Precommit)),
        )
        .expect("prepared");
        assert!(!prepared.carried);
        assert_eq!(prepared.sits_out, None);
        assert_eq!(guard_of(&restoring), Some(checkpoint_guard));
    }

    #[test]
    fn a_carried_guard_at_or_below_the_restored_ledger_is_written_as_it_is() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (checkpoint, restoring, genesis) = copy_with_guard(dir.path(), None);
        let carried = signed(0, 4, Step::Precommit);
        let prepared = prepare(&checkpoint, &restoring, &genesis, Some(carried)).expect("prepared");
        assert_eq!(prepared.height, 0);
        assert!(prepared.carried);
        assert_eq!(prepared.sits_out, None);
        assert_eq!(guard_of(&restoring), Some(carried));
    }
}

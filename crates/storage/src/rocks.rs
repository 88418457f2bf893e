//! Keep the store on disk in RocksDB, one column family per [`Column`].

use std::fmt;
use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::properties::{CUR_SIZE_ALL_MEM_TABLES, PropName, TOTAL_SST_FILES_SIZE};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    DBRawIterator, DEFAULT_COLUMN_FAMILY_NAME, ErrorKind, FlushOptions, Options, WriteOptions,
};

use crate::batch::Op;
use crate::error::SEVERAL_COLUMNS;
use crate::store::Entry;
use crate::{Column, SCHEMA_VERSION, SCHEMA_VERSION_KEY, Store, StoreError, WriteBatch};

/// Default bound on open SST files: half of the usual 1024 file-descriptor soft limit, leaving
/// the rest for sockets.
const DEFAULT_MAX_OPEN_FILES: i32 = 512;

/// Default size of the block cache shared by all columns, in bytes (64 MiB).
const DEFAULT_BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Open-file bound of the [`StoreOptions::test`] preset: tests hold tiny databases.
const TEST_MAX_OPEN_FILES: i32 = 64;

/// Block cache of the [`StoreOptions::test`] preset, in bytes (8 MiB).
const TEST_BLOCK_CACHE_BYTES: usize = 8 << 20;

/// Number of RocksDB info LOG files kept in the data dir; older ones are deleted.
const KEEP_LOG_FILES: usize = 5;

/// Message fragments of RocksDB's POSIX environment when the LOCK file is held: by another
/// process (`fcntl` refused) or by another handle in this process. Matching the whole phrase
/// matters: a bare "lock" would also match a data dir named `blocks`.
const LOCK_HELD_MESSAGES: [&str; 2] = ["While lock file", "lock hold by current process"];

/// Tuning and durability settings of a [`RocksStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Fsync the write-ahead log on every [`Store::write`]. With it off, a write survives a
    /// process crash but not a power loss.
    pub sync_writes: bool,
    /// Upper bound on SST files RocksDB keeps open; must be at least 1.
    pub max_open_files: i32,
    /// Capacity of the LRU block cache shared by all columns, in bytes.
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    /// Durable settings for a node: every write is fsynced.
    fn default() -> Self {
        Self {
            sync_writes: true,
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
        }
    }
}

impl StoreOptions {
    /// Fast settings for tests: no fsync, small cache.
    pub fn test() -> Self {
        Self {
            sync_writes: false,
            max_open_files: TEST_MAX_OPEN_FILES,
            block_cache_bytes: TEST_BLOCK_CACHE_BYTES,
        }
    }

    /// Rejects values that would leave RocksDB unbounded.
    fn validate(&self) -> Result<(), StoreError> {
        if self.max_open_files < 1 {
            return Err(StoreError::InvalidOption {
                name: "max_open_files",
                reason: "must be at least 1 (RocksDB reads -1 as unlimited)",
            });
        }
        Ok(())
    }

    /// RocksDB options for the database as a whole.
    fn db_options(&self, cache: &Cache) -> Options {
        let mut opts = column_options(cache);
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_open_files(self.max_open_files);
        opts.set_keep_log_file_num(KEEP_LOG_FILES);
        opts
    }
}

/// RocksDB options for each column family: LZ4 and the shared block cache.
fn column_options(cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    let mut opts = Options::default();
    // Snappy, RocksDB's default, is not compiled in; say which codec we use.
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_block_based_table_factory(&table);
    opts
}

/// A [`Store`] in a RocksDB directory.
///
/// # Invariants
/// Every [`Column`] is an open column family, and [`Column::Meta`] holds [`SCHEMA_VERSION`]
/// (checked by [`RocksStore::open`]).
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    sync_writes: bool,
}

impl fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("sync_writes", &self.sync_writes)
            .finish_non_exhaustive()
    }
}

impl RocksStore {
    /// Opens the store in `path`, creating the directory and any missing column family.
    ///
    /// A new directory is stamped with [`SCHEMA_VERSION`]; an existing one must carry it.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        options.validate()?;
        std::fs::create_dir_all(path).map_err(|source| StoreError::CreateDir {
            path: path.to_path_buf(),
            source,
        })?;

        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let db_opts = options.db_options(&cache);
        let column_opts = column_options(&cache);
        let descriptors = column_family_names(&db_opts, path)
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, column_opts.clone()));
        let db = DB::open_cf_descriptors(&db_opts, path, descriptors)
            .map_err(|source| open_error(path, source))?;

        let store = Self {
            db,
            path: path.to_path_buf(),
            sync_writes: options.sync_writes,
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Writes a consistent copy of the store into `dir` while it stays in use.
    ///
    /// `dir` must not exist; its parent must. Files are hard-linked where the file system allows,
    /// so a checkpoint on the same file system is cheap. The copy opens with [`RocksStore::open`].
    pub fn checkpoint(&self, dir: &Path) -> Result<(), StoreError> {
        Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(dir))
            .map_err(|source| StoreError::Checkpoint {
                dir: dir.to_path_buf(),
                source,
            })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes each column holds: its live SST files plus its memtables, by on-disk name, in
    /// [`Column::ALL`] order. A column whose sizes RocksDB does not report is left out.
    pub fn column_sizes(&self) -> Vec<(&'static str, u64)> {
        let mut sizes = Vec::with_capacity(Column::ALL.len());
        for col in Column::ALL {
            let Ok(cf) = self.cf(col) else { continue };
            let property = |name: &PropName| self.db.property_int_value_cf(cf, name).ok().flatten();
            if let (Some(sst), Some(memtables)) = (
                property(TOTAL_SST_FILES_SIZE),
                property(CUR_SIZE_ALL_MEM_TABLES),
            ) {
                sizes.push((col.name(), sst.saturating_add(memtables)));
            }
        }
        sizes
    }

    /// Writes every column's memtables to SST files and syncs the write-ahead log, waiting for
    /// both: after it, a restart replays nothing.
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut options = FlushOptions::default();
        options.set_wait(true);
        for col in Column::ALL {
            self.db
                .flush_cf_opt(self.cf(col)?, &options)
                .map_err(|source| StoreError::Backend {
                    op: "flush",
                    column: col.name(),
                    source,
                })?;
        }
        self.db
            .flush_wal(true)
            .map_err(|source| StoreError::Backend {
                op: "flush_wal",
                column: SEVERAL_COLUMNS,
                source,
            })
    }

    /// The column family of `col`.
    fn cf(&self, col: Column) -> Result<&ColumnFamily, StoreError> {
        self.db.cf_handle(col.name()).ok_or(StoreError::Corrupt {
            column: col.name(),
            detail: "the column family is missing from the open database".to_owned(),
        })
    }

    /// A raw iterator over `col` with default read options.
    fn iter(&self, col: Column) -> Result<DBRawIterator<'_>, StoreError> {
        Ok(self.db.raw_iterator_cf(self.cf(col)?))
    }

    /// Checks the schema version, and stamps it into a store that holds no data yet.
    ///
    /// A store is new when every column is empty rather than when the directory was just
    /// created, so a crash between creating the database and stamping it is harmless.
    fn check_schema(&self) -> Result<(), StoreError> {
        if let Some(bytes) = self.get(Column::Meta, SCHEMA_VERSION_KEY)? {
            let bytes: [u8; 4] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    column: Column::Meta.name(),
                    detail: format!("schema_version is {} bytes long, expected 4", bytes.len()),
                })?;
            let found = u32::from_be_bytes(bytes);
            if found != SCHEMA_VERSION {
                return Err(StoreError::SchemaMismatch {
                    path: self.path.clone(),
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
            return Ok(());
        }
        for col in Column::ALL {
            if self.last(col)?.is_some() {
                return Err(StoreError::Corrupt {
                    column: Column::Meta.name(),
                    detail: format!(
                        "schema_version is missing although column `{}` holds data, so this \
                         directory was not written by this node",
                        col.name()
                    ),
                });
            }
        }
        let mut batch = WriteBatch::new();
        batch.put(
            Column::Meta,
            SCHEMA_VERSION_KEY,
            SCHEMA_VERSION.to_be_bytes(),
        );
        self.write_with(batch, true)
    }

    /// Applies `batch` atomically, fsyncing the write-ahead log if `sync`.
    fn write_with(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut rocks_batch = rocksdb::WriteBatch::default();
        for op in batch.into_ops() {
            match op {
                Op::Put { col, key, value } => rocks_batch.put_cf(self.cf(col)?, key, value),
                Op::Delete { col, key } => rocks_batch.delete_cf(self.cf(col)?, key),
            }
        }
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync);
        self.db
            .write_opt(rocks_batch, &write_opts)
            .map_err(|source| StoreError::Backend {
                op: "write",
                column: SEVERAL_COLUMNS,
                source,
            })
    }
}

/// Column families to open: ours, plus any a newer build added, so that opening its directory
/// reports the schema version rather than RocksDB's "column families not opened".
fn column_family_names(db_opts: &Options, path: &Path) -> Vec<String> {
    let mut names: Vec<String> = Column::ALL.iter().map(|c| c.name().to_owned()).collect();
    // Listing fails when no database exists yet; then there is nothing extra to open, and any
    // other cause resurfaces, better worded, when the database is opened.
    if let Ok(existing) = DB::list_cf(db_opts, path) {
        for name in existing {
            if name != DEFAULT_COLUMN_FAMILY_NAME && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// Classifies an error of `DB::open`: a held LOCK file, or anything else.
fn open_error(path: &Path, source: rocksdb::Error) -> StoreError {
    let message: &str = source.as_ref();
    let locked = source.kind() == ErrorKind::IOError
        && LOCK_HELD_MESSAGES.iter().any(|m| message.contains(m));
    if locked {
        StoreError::Locked {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::Open {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Maps a read error of `op` on `col`.
fn read_error(op: &'static str, col: Column) -> impl FnOnce(rocksdb::Error) -> StoreError {
    move |source| StoreError::Backend {
        op,
        column: col.name(),
        source,
    }
}

/// The iterator's current entry, or `None` past either end; an I/O error stops the iterator,
/// and is reported here.
fn current(
    iter: &DBRawIterator<'_>,
    op: &'static str,
    col: Column,
) -> Result<Option<Entry>, StoreError> {
    match iter.item() {
        Some((key, value)) => Ok(Some((key.to_vec(), value.to_vec()))),
        None => iter.status().map(|()| None).map_err(read_error(op, col)),
    }
}

impl Store for RocksStore {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(col)?, key)
            .map_err(read_error("get", col))
    }

    fn get_at_or_before(&self, col: Column, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let mut iter = self.iter(col)?;
        iter.seek_for_prev(key);
        current(&iter, "seek_for_prev", col)
    }

    fn scan(&self, col: Column, start: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut entries = Vec::new();
        if limit == 0 {
            return Ok(entries);
        }
        let mut iter = self.iter(col)?;
        iter.seek(start);
        while let Some(entry) = current(&iter, "scan", col)? {
            entries.push(entry);
            if entries.len() == limit {
                break;
            }
            iter.next();
        }
        Ok(entries)
    }

    fn last(&self, col: Column) -> Result<Option<Entry>, StoreError> {
        let mut iter = self.iter(col)?;
        iter.seek_to_last();
        current(&iter, "seek_to_last", col)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.write_with(batch, self.sync_writes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{height_key, parse_height_key};
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    /// Environment variable that hands a data dir to a child test process.
    const CHILD_DIR_ENV: &str = "STORAGE_TEST_CHILD_DIR";

    /// Line the writer child prints once it has written enough to be worth killing. It starts a
    /// line of its own because the test harness prints the test's name without a newline.
    const CHILD_READY: &str = "storage-child-ready";

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("create temp dir")
    }

    fn open(path: &Path) -> RocksStore {
        RocksStore::open(path, &StoreOptions::test()).expect("open store")
    }

    fn put(store: &RocksStore, col: Column, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(col, key, value);
        store.write(batch).expect("write");
    }

    /// Runs the ignored test `name` of this binary in a child process with `dir` as its data dir.
    fn child_test(name: &str, dir: &Path) -> Command {
        let exe = std::env::current_exe().expect("path of the test binary");
        let mut cmd = Command::new(exe);
        cmd.args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir);
        cmd
    }

    fn child_dir() -> PathBuf {
        std::env::var_os(CHILD_DIR_ENV)
            .map(PathBuf::from)
            .expect("run only as a child of another test")
    }

    #[test]
    fn reopen_keeps_data_written_with_durable_options() {
        let dir = temp_dir();
        {
            let store = RocksStore::open(dir.path(), &StoreOptions::default()).expect("open");
            put(&store, Column::Blocks, &height_key(7), b"block 7");
        }
        let store = RocksStore::open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(
            store.get(Column::Blocks, &height_key(7)).expect("get"),
            Some(b"block 7".to_vec())
        );
        assert_eq!(store.path(), dir.path());
    }

    #[test]
    fn open_creates_missing_parent_directories() {
        let dir = temp_dir();
        let nested = dir.path().join("a").join("b").join("data");
        let store = open(&nested);
        put(&store, Column::Peers, b"p", b"1");
        assert!(nested.join("CURRENT").is_file());
    }

    #[test]
    fn new_store_is_stamped_with_the_schema_version() {
        let dir = temp_dir();
        let store = open(dir.path());
        assert_eq!(
            store.get(Column::Meta, SCHEMA_VERSION_KEY).expect("get"),
            Some(SCHEMA_VERSION.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn second_open_in_the_same_process_is_locked() {
        let dir = temp_dir();
        let _first = open(dir.path());
        let err = RocksStore::open(dir.path(), &StoreOptions::test()).expect_err("second open");
        assert!(
            matches!(&err, StoreError::Locked { path } if path == dir.path()),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("another process"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn lock_is_released_when_the_store_is_dropped() {
        let dir = temp_dir();
        drop(open(dir.path()));
        open(dir.path());
    }

    #[test]
    fn open_from_a_second_process_is_locked() {
        let dir = temp_dir();
        let _held = open(dir.path());
        let output = child_test("rocks::tests::child_expects_locked", dir.path())
            .output()
            .expect("run child test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The filter must have matched: an empty run would pass too.
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child did not see StoreError::Locked:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    #[ignore = "child half of open_from_a_second_process_is_locked"]
    fn child_expects_locked() {
        let dir = child_dir();
        let err = RocksStore::open(&dir, &StoreOptions::test()).expect_err("open while held");
        assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    }

    #[test]
    fn batches_are_all_or_nothing_after_sigkill() {
        let dir = temp_dir();
        let mut child = child_test("rocks::tests::child_writes_until_killed", dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn writer");
        let stdout = child.stdout.take().expect("child stdout is piped");
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line == CHILD_READY);
        assert!(ready, "writer exited before writing");
        // `Child::kill` sends SIGKILL: no destructor or flush runs in the writer.
        child.kill().expect("kill writer");
        child.wait().expect("reap writer");

        let store = open(dir.path());
        let tip = store
            .get(Column::Meta, b"tip")
            .expect("get")
            .as_deref()
            .and_then(parse_height_key)
            .expect("at least one batch survived");
        for col in [Column::Blocks, Column::Commits] {
            let heights: Vec<u64> = store
                .scan(col, b"", usize::MAX)
                .expect("scan")
                .iter()
                .map(|(k, _)| parse_height_key(k).expect("height key"))
                .collect();
            let expected: Vec<u64> = (0..=tip).collect();
            assert_eq!(heights, expected, "{col:?} disagrees with tip {tip}");
        }
    }

    #[test]
    #[ignore = "child half of batches_are_all_or_nothing_after_sigkill"]
    fn child_writes_until_killed() {
        /// Batches written before telling the parent to kill.
        const BATCHES_BEFORE_READY: u64 = 100;
        /// Bound on the batches written if the parent never kills (about 40 MB).
        const MAX_BATCHES: u64 = 100_000;
        let store = open(&child_dir());
        for h in 0..MAX_BATCHES {
            let mut batch = WriteBatch::new();
            batch.put(Column::Blocks, height_key(h), vec![0xab; 256]);
            batch.put(Column::Commits, height_key(h), vec![0xcd; 64]);
            batch.put(Column::Meta, b"tip", height_key(h));
            store.write(batch).expect("write");
            if h == BATCHES_BEFORE_READY {
                println!("\n{CHILD_READY}");
            }
        }
    }

    #[test]
    fn other_schema_version_is_refused_with_both_versions() {
        let dir = temp_dir();
        {
            let store = open(dir.path());
            put(
                &store,
                Column::Meta,
                SCHEMA_VERSION_KEY,
                &(SCHEMA_VERSION + 1).to_be_bytes(),
            );
        }
        let err = RocksStore::open(dir.path(), &StoreOptions::test()).expect_err("reopen");
        match &err {
            StoreError::SchemaMismatch {
                path,
                found,
                expected,
            } => {
                assert_eq!(path, dir.path());
                assert_eq!(*found, SCHEMA_VERSION + 1);
                assert_eq!(*expected, SCHEMA_VERSION);
            }
            other => panic!("expected SchemaMismatch, got {other:?}"),
        }
        assert!(err.to_string().contains("fresh data dir"), "{err}");
    }

    #[test]
    fn schema_version_of_the_wrong_length_is_corrupt() {
        let dir = temp_dir();
        {
            let store = open(dir.path());
            put(&store, Column::Meta, SCHEMA_VERSION_KEY, &[1]);
        }
        let err = RocksStore::open(dir.path(), &StoreOptions::test()).expect_err("reopen");
        assert!(
            matches!(err, StoreError::Corrupt { column: "meta", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn data_without_a_schema_version_is_refused() {
        let dir = temp_dir();
        {
            let store = open(dir.path());
            let mut batch = WriteBatch::new();
            batch.put(Column::Bans, b"ip", b"ban");
            batch.delete(Column::Meta, SCHEMA_VERSION_KEY);
            store.write(batch).expect("write");
        }
        let err = RocksStore::open(dir.path(), &StoreOptions::test()).expect_err("reopen");
        assert!(
            matches!(err, StoreError::Corrupt { column: "meta", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("`bans`"), "{err}");
    }

    #[test]
    fn newer_layout_with_an_extra_column_reports_the_schema_version() {
        let dir = temp_dir();
        {
            // Simulate a future build: one more column family and a higher version.
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            opts.set_compression_type(DBCompressionType::Lz4);
            let mut names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
            names.push("from_the_future");
            let db = DB::open_cf(&opts, dir.path(), names).expect("open raw db");
            let meta = db.cf_handle(Column::Meta.name()).expect("meta column");
            db.put_cf(meta, SCHEMA_VERSION_KEY, (SCHEMA_VERSION + 1).to_be_bytes())
                .expect("put version");
        }
        let err = RocksStore::open(dir.path(), &StoreOptions::test()).expect_err("open");
        assert!(matches!(err, StoreError::SchemaMismatch { .. }), "{err:?}");
    }

    #[test]
    fn checkpoint_holds_the_data_and_not_later_writes() {
        let dir = temp_dir();
        let copy = dir.path().join("checkpoint");
        let store = open(&dir.path().join("data"));
        put(&store, Column::Txs, b"before", b"1");
        store.checkpoint(&copy).expect("checkpoint");
        put(&store, Column::Txs, b"after", b"2");

        let snapshot = open(&copy);
        assert_eq!(
            snapshot.get(Column::Txs, b"before").expect("get"),
            Some(b"1".to_vec())
        );
        assert_eq!(snapshot.get(Column::Txs, b"after").expect("get"), None);
        assert_eq!(
            store.get(Column::Txs, b"after").expect("get"),
            Some(b"2".to_vec())
        );
    }

    #[test]
    fn column_sizes_cover_every_column_and_grow_with_writes() {
        let dir = temp_dir();
        let store = open(dir.path());
        let before = store.column_sizes();
        let names: Vec<&str> = before.iter().map(|(name, _)| *name).collect();
        let all: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, all);
        let size = |sizes: &[(&str, u64)], name: &str| {
            sizes.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
        };
        // Values that LZ4 cannot shrink, so the SST files hold about what was written.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for i in 0..100u32 {
            let value: Vec<u8> = (0..1024)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            put(&store, Column::Blocks, &i.to_be_bytes(), &value);
        }
        let written = store.column_sizes();
        assert!(
            size(&written, "blocks") > size(&before, "blocks"),
            "{before:?} -> {written:?}"
        );
        // Moved from memtables to SST files, the data is still counted.
        store.flush().expect("flush");
        let flushed = store.column_sizes();
        assert!(
            size(&flushed, "blocks").expect("blocks") >= 100 * 1024,
            "{flushed:?}"
        );
    }

    #[test]
    fn flush_writes_memtables_to_sst_files_that_a_reopen_reads() {
        let dir = temp_dir();
        {
            let store = open(dir.path());
            put(&store, Column::Txs, b"k", b"v");
            store.flush().expect("flush");
            let sst_files = std::fs::read_dir(dir.path())
                .expect("list data dir")
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
                .count();
            assert!(sst_files >= 1, "no SST file after a flush");
        }
        let store = open(dir.path());
        assert_eq!(
            store.get(Column::Txs, b"k").expect("get"),
            Some(b"v".to_vec())
        );
    }

    #[test]
    fn checkpoint_into_an_existing_dir_fails() {
        let dir = temp_dir();
        let store = open(&dir.path().join("data"));
        let existing = dir.path().join("existing");
        std::fs::create_dir(&existing).expect("create dir");
        let err = store.checkpoint(&existing).expect_err("checkpoint");
        assert!(
            matches!(&err, StoreError::Checkpoint { dir, .. } if *dir == existing),
            "{err:?}"
        );
    }

    #[test]
    fn open_on_a_regular_file_names_the_path_and_the_cause() {
        let dir = temp_dir();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"hello").expect("write file");
        let err = RocksStore::open(&file, &StoreOptions::test()).expect_err("open");
        assert!(
            matches!(&err, StoreError::CreateDir { path, .. } if *path == file),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("must be a directory"), "{message}");
    }

    #[test]
    fn damaged_dir_named_like_a_lock_is_an_open_error_not_locked() {
        // "blocks" contains "lock": classification must not match on that.
        let dir = temp_dir();
        let data = dir.path().join("blocks_LOCK");
        std::fs::create_dir(&data).expect("create dir");
        std::fs::write(data.join("CURRENT"), b"MANIFEST-000099\n").expect("write CURRENT");
        let err = RocksStore::open(&data, &StoreOptions::test()).expect_err("open");
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    }

    #[test]
    fn unbounded_max_open_files_is_rejected() {
        let dir = temp_dir();
        let options = StoreOptions {
            max_open_files: -1,
            ..StoreOptions::test()
        };
        let err = RocksStore::open(dir.path(), &options).expect_err("open");
        assert!(
            matches!(
                err,
                StoreError::InvalidOption {
                    name: "max_open_files",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

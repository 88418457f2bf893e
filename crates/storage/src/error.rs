//! Report storage failures with the facts an operator needs to act on them.

use std::path::PathBuf;

/// Column label for errors of operations that span several columns (batch writes).
pub(crate) const SEVERAL_COLUMNS: &str = "(several)";

/// Everything that can go wrong in a [`crate::Store`] or while opening one.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A [`crate::StoreOptions`] field has a value the store refuses.
    #[error("invalid storage option `{name}`: {reason}")]
    InvalidOption {
        /// Field name in [`crate::StoreOptions`].
        name: &'static str,
        /// What a valid value looks like.
        reason: &'static str,
    },

    /// The data directory could not be created.
    #[error(
        "cannot create the data dir {}: {source}; the path must be a directory (or not exist yet) \
         that this user can write",
        path.display()
    )]
    CreateDir {
        /// The data directory.
        path: PathBuf,
        /// What the file system reported.
        source: std::io::Error,
    },

    /// RocksDB refused to open the data directory for a reason other than a held lock.
    #[error(
        "cannot open the store at {}: {source}; check that the directory holds a database of this \
         node, that this user can read and write it, and that the disk is not full",
        path.display()
    )]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What RocksDB reported.
        source: rocksdb::Error,
    },

    /// Another process, or another store in this process, holds the directory's LOCK file.
    #[error(
        "another process (probably another node) is using {}; stop it or choose another data dir",
        path.display()
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
    },

    /// The directory was written under another on-disk layout.
    #[error(
        "the data dir {} was written by a node with storage schema version {found}, but this node \
         uses version {expected}; restore a backup made by this version or use a fresh data dir",
        path.display()
    )]
    SchemaMismatch {
        /// The data directory.
        path: PathBuf,
        /// Version stored in the directory.
        found: u32,
        /// Version this build reads and writes ([`crate::SCHEMA_VERSION`]).
        expected: u32,
    },

    /// A read or write failed inside RocksDB.
    #[error(
        "storage {op} on column `{column}` failed: {source}; the disk may be full or failing, see \
         the LOG file in the data dir"
    )]
    Backend {
        /// The operation: `get`, `seek`, `write`, ...
        op: &'static str,
        /// The column's on-disk name, or `(several)` for a batch.
        column: &'static str,
        /// What RocksDB reported.
        source: rocksdb::Error,
    },

    /// A consistent copy of the store could not be made.
    #[error(
        "cannot create a checkpoint in {}: {source}; the directory must not exist yet, and its \
         parent must exist and be writable",
        dir.display()
    )]
    Checkpoint {
        /// The directory the copy was to be written to.
        dir: PathBuf,
        /// What RocksDB reported.
        source: rocksdb::Error,
    },

    /// Stored data does not have the shape this build expects.
    #[error(
        "column `{column}` holds unexpected data: {detail}; restore a backup or use a fresh data dir"
    )]
    Corrupt {
        /// The column's on-disk name.
        column: &'static str,
        /// What was found instead of what was expected.
        detail: String,
    },
}

//! Keep the node's data in a key-value store with column families and atomic batches.
//!
//! One [`Store`] trait, two backends: [`RocksStore`] (RocksDB on disk, what the node runs) and
//! [`MemStore`] (ordered maps in memory, for tests and simulation). Both order keys bytewise, so
//! code written against the trait behaves the same on either.
//!
//! # Design
//! - Columns are a closed enum ([`Column`]); their names are on disk and never change.
//! - Writes go through [`WriteBatch`] only: a batch is applied atomically, and a later operation on
//!   a key wins over an earlier one in the same batch.
//! - Keys are raw bytes. Callers that key by height use [`keys::height_key`] (big-endian), so
//!   byte order equals numeric order.
//! - A RocksDB directory carries [`SCHEMA_VERSION`] in [`Column::Meta`]; opening a directory
//!   written under another version fails with [`StoreError::SchemaMismatch`] instead of
//!   misreading it.

mod batch;
mod column;
mod error;
pub mod keys;
mod mem;
mod rocks;
mod store;

pub use batch::WriteBatch;
pub use column::Column;
pub use error::StoreError;
pub use mem::MemStore;
pub use rocks::{RocksStore, StoreOptions};
pub use store::{Entry, Store};

/// Version of the on-disk layout (column names, key and value encodings).
///
/// Stored big-endian under [`SCHEMA_VERSION_KEY`] in [`Column::Meta`]. Bump it whenever the
/// meaning of stored bytes changes; a node refuses to open a directory with another version.
pub const SCHEMA_VERSION: u32 = 1;

/// Key in [`Column::Meta`] under which [`SCHEMA_VERSION`] is stored.
pub const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

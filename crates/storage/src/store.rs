//! Define the [`Store`] trait that every backend implements.

use std::sync::Arc;

use crate::{Column, StoreError, WriteBatch};

/// A key-value pair read from a store.
pub type Entry = (Vec<u8>, Vec<u8>);

/// An ordered key-value store with column families and atomic batch writes.
///
/// Keys compare bytewise (lexicographically on unsigned bytes) in every backend. Each read sees
/// a consistent view of one column; reads never return entries of another column.
pub trait Store: Send + Sync {
    /// The value stored under `key` in `col`, if any.
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The entry with the greatest key that is `<= key` in `col` (RocksDB's `seek_for_prev`).
    fn get_at_or_before(&self, col: Column, key: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Up to `limit` entries of `col` with key `>= start`, in ascending key order.
    fn scan(&self, col: Column, start: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// The entry with the greatest key in `col`.
    fn last(&self, col: Column) -> Result<Option<Entry>, StoreError>;

    /// Applies every operation of the batch atomically: after a crash (even SIGKILL, or power
    /// loss when the backend syncs writes) either all or none are visible. Later operations in
    /// the batch win over earlier ones on the same key.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;
}

impl<T: Store + ?Sized> Store for Arc<T> {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(col, key)
    }

    fn get_at_or_before(&self, col: Column, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        (**self).get_at_or_before(col, key)
    }

    fn scan(&self, col: Column, start: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        (**self).scan(col, start, limit)
    }

    fn last(&self, col: Column) -> Result<Option<Entry>, StoreError> {
        (**self).last(col)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        (**self).write(batch)
    }
}

//! Keep a store in memory: one ordered map per column, for tests and simulation.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::batch::Op;
use crate::store::Entry;
use crate::{Column, Store, StoreError, WriteBatch};

/// The maps of all columns, indexed by [`Column::index`].
type Columns = [BTreeMap<Vec<u8>, Vec<u8>>; Column::ALL.len()];

/// An in-memory [`Store`]: cheap, deterministic, and gone when dropped.
///
/// `Vec<u8>` keys in a `BTreeMap` compare bytewise, the same order RocksDB uses.
///
/// # Invariants
/// The sections that hold the lock only read, insert into and remove from `BTreeMap`s, none of
/// which panics (an allocation failure aborts the process), so the lock is never poisoned by this
/// type and a write is never left half-applied. A poisoned lock is therefore taken over as is.
#[derive(Debug, Default)]
pub struct MemStore {
    columns: RwLock<Columns>,
}

impl MemStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Columns> {
        self.columns.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, Columns> {
        self.columns.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Clones a borrowed map entry into an owned [`Entry`].
fn owned((key, value): (&Vec<u8>, &Vec<u8>)) -> Entry {
    (key.clone(), value.clone())
}

impl Store for MemStore {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read()[col.index()].get(key).cloned())
    }

    fn get_at_or_before(&self, col: Column, key: &[u8]) -> Result<Option<Entry>, StoreError> {
        let columns = self.read();
        let range = (Bound::Unbounded, Bound::Included(key));
        Ok(columns[col.index()]
            .range::<[u8], _>(range)
            .next_back()
            .map(owned))
    }

    fn scan(&self, col: Column, start: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        let columns = self.read();
        let range = (Bound::Included(start), Bound::Unbounded);
        Ok(columns[col.index()]
            .range::<[u8], _>(range)
            .take(limit)
            .map(owned)
            .collect())
    }

    fn last(&self, col: Column) -> Result<Option<Entry>, StoreError> {
        Ok(self.read()[col.index()].last_key_value().map(owned))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut columns = self.write_lock();
        for op in batch.into_ops() {
            match op {
                Op::Put { col, key, value } => {
                    columns[col.index()].insert(key, value);
                }
                Op::Delete { col, key } => {
                    columns[col.index()].remove(&key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn concurrent_readers_never_see_half_a_batch() {
        let store = Arc::new(MemStore::new());
        let writer = {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0u32..200 {
                    let mut batch = WriteBatch::new();
                    batch.put(Column::Blocks, b"a".to_vec(), i.to_be_bytes().to_vec());
                    batch.put(Column::Commits, b"a".to_vec(), i.to_be_bytes().to_vec());
                    store.write(batch).expect("mem write cannot fail");
                }
            })
        };
        for _ in 0..200 {
            // Hold one read guard so both columns come from the same instant.
            let columns = store.read();
            assert_eq!(
                columns[Column::Blocks.index()].get(&b"a"[..]),
                columns[Column::Commits.index()].get(&b"a"[..])
            );
        }
        writer.join().expect("writer thread panicked");
    }
}

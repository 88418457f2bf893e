//! Collect puts and deletes to apply atomically with [`crate::Store::write`].

use crate::Column;

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Set `key` to `value` in `col`.
    Put {
        col: Column,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Remove `key` from `col`; removing an absent key is not an error.
    Delete { col: Column, key: Vec<u8> },
}

/// An owned, backend-agnostic list of puts and deletes.
///
/// [`crate::Store::write`] applies all of them or none. Operations keep their order: a later
/// operation on the same key wins over an earlier one.
#[derive(Default, Clone, Debug)]
pub struct WriteBatch {
    ops: Vec<Op>,
    size_bytes: usize,
}

impl WriteBatch {
    /// Creates an empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in `col`.
    pub fn put(&mut self, col: Column, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.size_bytes = self.size_bytes.saturating_add(key.len() + value.len());
        self.ops.push(Op::Put { col, key, value });
    }

    /// Removes `key` from `col`.
    pub fn delete(&mut self, col: Column, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.size_bytes = self.size_bytes.saturating_add(key.len());
        self.ops.push(Op::Delete { col, key });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Sum of the lengths of all keys and values, in bytes; lets callers bound a batch.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// The operations, in the order they were added.
    pub(crate) fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_batch_is_empty() {
        let batch = WriteBatch::new();
        assert!(batch.is_empty());
        assert_eq!(batch.len(), 0);
        assert_eq!(batch.size_bytes(), 0);
    }

    #[test]
    fn len_and_size_count_every_operation() {
        let mut batch = WriteBatch::new();
        batch.put(Column::Blocks, b"key".to_vec(), b"value".to_vec());
        batch.delete(Column::Txs, &b"gone"[..]);
        batch.put(Column::Meta, Vec::new(), Vec::new());
        assert_eq!(batch.len(), 3);
        assert!(!batch.is_empty());
        assert_eq!(batch.size_bytes(), 3 + 5 + 4);
    }

    #[test]
    fn operations_keep_insertion_order() {
        let mut batch = WriteBatch::new();
        batch.put(Column::Peers, b"k".to_vec(), b"1".to_vec());
        batch.delete(Column::Peers, b"k".to_vec());
        assert_eq!(
            batch.into_ops(),
            [
                Op::Put {
                    col: Column::Peers,
                    key: b"k".to_vec(),
                    value: b"1".to_vec()
                },
                Op::Delete {
                    col: Column::Peers,
                    key: b"k".to_vec()
                },
            ]
        );
    }
}

//! Prove that every backend behaves the same: each case runs against MemStore and RocksStore.

use std::sync::Arc;

use storage::{Column, MemStore, RocksStore, Store, StoreOptions, WriteBatch};
use tempfile::TempDir;

/// A store under test and whatever must outlive it.
struct Backend {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

fn mem() -> Backend {
    Backend {
        store: Arc::new(MemStore::new()),
        _dir: None,
    }
}

fn rocks() -> Backend {
    let dir = tempfile::tempdir().expect("create temp dir");
    let store = RocksStore::open(dir.path(), &StoreOptions::test()).expect("open rocks store");
    Backend {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

/// Writes one put.
fn put(store: &dyn Store, col: Column, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(col, key, value);
    store.write(batch).expect("write");
}

/// Writes one delete.
fn delete(store: &dyn Store, col: Column, key: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.delete(col, key);
    store.write(batch).expect("write");
}

fn entry(key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (key.to_vec(), value.to_vec())
}

// ---- get, put, delete ----

fn get_of_missing_key_is_none(store: &dyn Store) {
    assert_eq!(store.get(Column::Blocks, b"nope").expect("get"), None);
}

fn put_then_get_returns_the_value(store: &dyn Store) {
    put(store, Column::Txs, b"k", b"v");
    assert_eq!(
        store.get(Column::Txs, b"k").expect("get"),
        Some(b"v".to_vec())
    );
}

fn put_overwrites_the_previous_value(store: &dyn Store) {
    put(store, Column::Txs, b"k", b"old");
    put(store, Column::Txs, b"k", b"new");
    assert_eq!(
        store.get(Column::Txs, b"k").expect("get"),
        Some(b"new".to_vec())
    );
}

fn empty_value_is_stored_and_distinct_from_absent(store: &dyn Store) {
    put(store, Column::Peers, b"k", b"");
    assert_eq!(
        store.get(Column::Peers, b"k").expect("get"),
        Some(Vec::new())
    );
}

fn delete_removes_the_key(store: &dyn Store) {
    put(store, Column::Bans, b"k", b"v");
    delete(store, Column::Bans, b"k");
    assert_eq!(store.get(Column::Bans, b"k").expect("get"), None);
}

fn delete_of_missing_key_is_not_an_error(store: &dyn Store) {
    delete(store, Column::Bans, b"never-written");
    assert_eq!(
        store.get(Column::Bans, b"never-written").expect("get"),
        None
    );
}

fn same_key_in_two_columns_is_two_entries(store: &dyn Store) {
    put(store, Column::Blocks, b"k", b"block");
    put(store, Column::Commits, b"k", b"commit");
    delete(store, Column::Blocks, b"k");
    assert_eq!(store.get(Column::Blocks, b"k").expect("get"), None);
    assert_eq!(
        store.get(Column::Commits, b"k").expect("get"),
        Some(b"commit".to_vec())
    );
}

// ---- batches ----

fn batch_applies_every_operation_across_columns(store: &dyn Store) {
    put(store, Column::Wal, b"stale", b"x");
    let mut batch = WriteBatch::new();
    batch.put(Column::Blocks, b"b", b"1");
    batch.put(Column::StateNodes, b"n", b"2");
    batch.put(Column::StateValues, b"v", b"3");
    batch.delete(Column::Wal, b"stale");
    store.write(batch).expect("write");
    assert_eq!(
        store.get(Column::Blocks, b"b").expect("get"),
        Some(b"1".to_vec())
    );
    assert_eq!(
        store.get(Column::StateNodes, b"n").expect("get"),
        Some(b"2".to_vec())
    );
    assert_eq!(
        store.get(Column::StateValues, b"v").expect("get"),
        Some(b"3".to_vec())
    );
    assert_eq!(store.get(Column::Wal, b"stale").expect("get"), None);
}

fn later_operation_in_a_batch_wins_on_the_same_key(store: &dyn Store) {
    let mut batch = WriteBatch::new();
    batch.put(Column::Meta, b"put-put", b"first");
    batch.put(Column::Meta, b"put-put", b"second");
    batch.put(Column::Meta, b"put-delete", b"x");
    batch.delete(Column::Meta, b"put-delete");
    batch.delete(Column::Meta, b"delete-put");
    batch.put(Column::Meta, b"delete-put", b"back");
    batch.put(Column::Meta, b"put-delete-put", b"1");
    batch.delete(Column::Meta, b"put-delete-put");
    batch.put(Column::Meta, b"put-delete-put", b"3");
    store.write(batch).expect("write");
    let get = |key: &[u8]| store.get(Column::Meta, key).expect("get");
    assert_eq!(get(b"put-put"), Some(b"second".to_vec()));
    assert_eq!(get(b"put-delete"), None);
    assert_eq!(get(b"delete-put"), Some(b"back".to_vec()));
    assert_eq!(get(b"put-delete-put"), Some(b"3".to_vec()));
}

fn empty_batch_changes_nothing(store: &dyn Store) {
    put(store, Column::Peers, b"k", b"v");
    store.write(WriteBatch::new()).expect("write");
    assert_eq!(
        store.scan(Column::Peers, b"", usize::MAX).expect("scan"),
        [entry(b"k", b"v")]
    );
}

// ---- get_at_or_before ----

/// Fills Commits with keys 10, 20, 30 and both neighbouring columns with keys around them.
fn fill_commits_and_neighbours(store: &dyn Store) {
    let mut batch = WriteBatch::new();
    for key in [[0x00], [0x05], [0x15], [0x40], [0xff]] {
        batch.put(Column::Blocks, key, b"blocks");
        batch.put(Column::BlockHashes, key, b"hashes");
    }
    for key in [0x10u8, 0x20, 0x30] {
        batch.put(Column::Commits, [key], [key]);
    }
    store.write(batch).expect("write");
}

fn get_at_or_before_returns_an_exact_hit(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert_eq!(
        store
            .get_at_or_before(Column::Commits, &[0x20])
            .expect("seek"),
        Some(entry(&[0x20], &[0x20]))
    );
}

fn get_at_or_before_between_keys_returns_the_lower_one(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert_eq!(
        store
            .get_at_or_before(Column::Commits, &[0x25])
            .expect("seek"),
        Some(entry(&[0x20], &[0x20]))
    );
    // A longer key sorts after its prefix.
    assert_eq!(
        store
            .get_at_or_before(Column::Commits, &[0x20, 0x00])
            .expect("seek"),
        Some(entry(&[0x20], &[0x20]))
    );
}

fn get_at_or_before_past_the_last_key_returns_the_last(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert_eq!(
        store
            .get_at_or_before(Column::Commits, &[0xff, 0xff])
            .expect("seek"),
        Some(entry(&[0x30], &[0x30]))
    );
}

fn get_at_or_before_the_first_key_is_none_not_another_column(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    // Blocks (declared just before Commits) holds 0x00 and 0x05: they must not leak in.
    assert_eq!(
        store
            .get_at_or_before(Column::Commits, &[0x0f])
            .expect("seek"),
        None
    );
    assert_eq!(
        store.get_at_or_before(Column::Commits, b"").expect("seek"),
        None
    );
}

fn get_at_or_before_in_an_empty_column_is_none(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert_eq!(
        store
            .get_at_or_before(Column::Txs, &[0xff; 16])
            .expect("seek"),
        None
    );
}

// ---- scan ----

fn scan_returns_keys_from_start_ascending_up_to_limit(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert_eq!(
        store.scan(Column::Commits, &[0x10], 2).expect("scan"),
        [entry(&[0x10], &[0x10]), entry(&[0x20], &[0x20])]
    );
    assert_eq!(
        store.scan(Column::Commits, &[0x11], 10).expect("scan"),
        [entry(&[0x20], &[0x20]), entry(&[0x30], &[0x30])]
    );
}

fn scan_with_limit_zero_is_empty(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert!(
        store
            .scan(Column::Commits, b"", 0)
            .expect("scan")
            .is_empty()
    );
}

fn scan_stays_inside_its_column(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    let all = store.scan(Column::Commits, b"", usize::MAX).expect("scan");
    let keys: Vec<Vec<u8>> = all.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [vec![0x10], vec![0x20], vec![0x30]]);
    assert!(
        store
            .scan(Column::Commits, &[0x31], 10)
            .expect("scan")
            .is_empty()
    );
}

fn scan_of_an_empty_column_is_empty(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert!(store.scan(Column::Txs, b"", 10).expect("scan").is_empty());
}

// ---- last ----

fn last_returns_the_greatest_key(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    assert_eq!(
        store.last(Column::Commits).expect("last"),
        Some(entry(&[0x30], &[0x30]))
    );
}

fn last_after_deleting_the_greatest_key_returns_the_next(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    delete(store, Column::Commits, &[0x30]);
    assert_eq!(
        store.last(Column::Commits).expect("last"),
        Some(entry(&[0x20], &[0x20]))
    );
}

fn last_of_an_empty_column_is_none(store: &dyn Store) {
    fill_commits_and_neighbours(store);
    for col in [Column::Txs, Column::Wal, Column::Bans] {
        assert_eq!(store.last(col).expect("last"), None, "{col:?}");
    }
}

// ---- binary keys ----

/// Keys with 0x00 and 0xff bytes, in bytewise order.
const BINARY_KEYS: [&[u8]; 11] = [
    b"",
    &[0x00],
    &[0x00, 0x00],
    &[0x00, 0xff],
    &[0x01],
    &[0x7f],
    &[0x80],
    &[0xff],
    &[0xff, 0x00],
    &[0xff, 0xff],
    &[0xff, 0xff, 0x00],
];

fn binary_keys_order_bytewise_as_unsigned(store: &dyn Store) {
    let mut batch = WriteBatch::new();
    // Written in reverse so the store, not the insertion order, sorts them.
    for (i, key) in BINARY_KEYS.iter().enumerate().rev() {
        batch.put(Column::StateNodes, *key, [i as u8]);
    }
    store.write(batch).expect("write");
    let keys: Vec<Vec<u8>> = store
        .scan(Column::StateNodes, b"", usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<Vec<u8>> = BINARY_KEYS.iter().map(|k| k.to_vec()).collect();
    assert_eq!(keys, expected);
    for (i, key) in BINARY_KEYS.iter().enumerate() {
        assert_eq!(
            store.get(Column::StateNodes, key).expect("get"),
            Some(vec![i as u8])
        );
    }
}

fn binary_keys_work_with_seeks_and_last(store: &dyn Store) {
    let mut batch = WriteBatch::new();
    for key in BINARY_KEYS {
        batch.put(Column::StateValues, key, key);
    }
    store.write(batch).expect("write");
    let seek = |key: &[u8]| {
        store
            .get_at_or_before(Column::StateValues, key)
            .expect("seek")
            .map(|(k, _)| k)
    };
    assert_eq!(seek(b""), Some(Vec::new()));
    assert_eq!(seek(&[0x00, 0x01]), Some(vec![0x00, 0x00]));
    assert_eq!(seek(&[0x7f, 0xff]), Some(vec![0x7f]));
    assert_eq!(seek(&[0xff, 0xfe]), Some(vec![0xff, 0x00]));
    assert_eq!(seek(&[0xff; 4]), Some(vec![0xff, 0xff, 0x00]));
    assert_eq!(
        store
            .last(Column::StateValues)
            .expect("last")
            .map(|(k, _)| k),
        Some(vec![0xff, 0xff, 0x00])
    );
    let from_80: Vec<Vec<u8>> = store
        .scan(Column::StateValues, &[0x80], 2)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(from_80, [vec![0x80], vec![0xff]]);
}

/// Generates one test per case and backend: `mem::<case>` and `rocks::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(
                #[test]
                fn $case() {
                    let backend = super::mem();
                    super::$case(&backend.store);
                }
            )*
        }
        mod rocks {
            $(
                #[test]
                fn $case() {
                    let backend = super::rocks();
                    super::$case(&backend.store);
                }
            )*
        }
    };
}

conformance!(
    get_of_missing_key_is_none,
    put_then_get_returns_the_value,
    put_overwrites_the_previous_value,
    empty_value_is_stored_and_distinct_from_absent,
    delete_removes_the_key,
    delete_of_missing_key_is_not_an_error,
    same_key_in_two_columns_is_two_entries,
    batch_applies_every_operation_across_columns,
    later_operation_in_a_batch_wins_on_the_same_key,
    empty_batch_changes_nothing,
    get_at_or_before_returns_an_exact_hit,
    get_at_or_before_between_keys_returns_the_lower_one,
    get_at_or_before_past_the_last_key_returns_the_last,
    get_at_or_before_the_first_key_is_none_not_another_column,
    get_at_or_before_in_an_empty_column_is_none,
    scan_returns_keys_from_start_ascending_up_to_limit,
    scan_with_limit_zero_is_empty,
    scan_stays_inside_its_column,
    scan_of_an_empty_column_is_empty,
    last_returns_the_greatest_key,
    last_after_deleting_the_greatest_key_returns_the_next,
    last_of_an_empty_column_is_none,
    binary_keys_order_bytewise_as_unsigned,
    binary_keys_work_with_seeks_and_last,
);

//! Throughput of the chain core, printed as a table: signature checks (single and batched),
//! mempool admission, apply + commit of blocks of transfers on RocksDB, and the cost of a state
//! root update as the state grows.
//!
//! Run: `cargo bench -p chain --bench chain` (add `-- quick` for a smaller, faster pass).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chain::Ledger;
use chain::mempool::{Mempool, MempoolConfig};
use chain::state::{StateKey, TreeStore};
use chain::testkit::{TestChain, derived_key};
use storage::{MemStore, RocksStore, Store, StoreOptions, WriteBatch};
use types::codec::Encode;
use types::{Account, BatchVerifier, Domain, SignedTransaction};

fn per_second(count: usize, elapsed: Duration) -> String {
    format!("{:>12.0}", count as f64 / elapsed.as_secs_f64())
}

fn millis(elapsed: Duration) -> String {
    format!("{:>9.2} ms", elapsed.as_secs_f64() * 1e3)
}

/// Signed transfers from `senders` accounts, `per_sender` nonces each.
fn transfers(net: &TestChain, senders: usize, per_sender: u64) -> Vec<SignedTransaction> {
    let mut txs = Vec::new();
    for nonce in 0..per_sender {
        for from in 0..senders {
            txs.push(net.transfer(from, (from + 1) % net.accounts.len(), nonce, 1));
        }
    }
    txs
}

fn signatures(quick: bool) {
    let count = if quick { 2_000 } else { 10_000 };
    let net = TestChain::new(1, count, 1);
    let txs = transfers(&net, count, 1);
    let started = Instant::now();
    for tx in &txs {
        tx.verify().expect("valid");
    }
    let single = started.elapsed();
    let started = Instant::now();
    let mut batch = BatchVerifier::new();
    for tx in &txs {
        batch.push(
            &tx.tx.sender,
            Domain::Transaction,
            &tx.tx.chain_id,
            &tx.tx,
            &tx.signature,
        );
    }
    batch.verify().expect("valid");
    let batched = started.elapsed();
    println!(
        "| signature checks, single           | {} /s |",
        per_second(count, single)
    );
    println!(
        "| signature checks, batch of {count:<6}  | {} /s |",
        per_second(count, batched)
    );
}

fn mempool(quick: bool) {
    let senders = if quick { 500 } else { 2_000 };
    let per_sender = 10;
    let net = TestChain::new(1, senders + 1, 2);
    let ledger = Ledger::open(MemStore::new(), &net.genesis).expect("opens");
    let txs = transfers(&net, senders, per_sender);
    let count = txs.len();
    let mut pool = Mempool::new(net.genesis.chain_id.clone(), MempoolConfig::default());
    let started = Instant::now();
    for chunk in txs.chunks(256) {
        for result in pool.insert_batch(chunk.to_vec(), &ledger) {
            result.expect("admitted");
        }
    }
    let batched = started.elapsed();
    let mut pool = Mempool::new(net.genesis.chain_id.clone(), MempoolConfig::default());
    let started = Instant::now();
    for tx in txs {
        pool.insert(tx, &ledger).expect("admitted");
    }
    let single = started.elapsed();
    println!(
        "| mempool inserts, one at a time     | {} /s |",
        per_second(count, single)
    );
    println!(
        "| mempool inserts, batches of 256    | {} /s |",
        per_second(count, batched)
    );
}

fn apply_and_commit(quick: bool) {
    let sizes: &[usize] = if quick { &[1_000] } else { &[1_000, 10_000] };
    for &size in sizes {
        let net = TestChain::new(4, size + 1, 3);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path(), &StoreOptions::default()).expect("opens");
        let mut ledger = Ledger::open(store, &net.genesis).expect("opens");
        let txs = transfers(&net, size, 1);
        let proposer = net.validators[0].public_key();
        let time = net.genesis.time_ms + 1_000;
        let block = ledger
            .propose(proposer, time, None, txs)
            .expect("proposes")
            .executed
            .block;
        assert_eq!(block.txs.len(), size);
        let commit = net.commit(&block);
        let started = Instant::now();
        let executed = ledger.execute(block, time).expect("valid");
        let validated = started.elapsed();
        let started = Instant::now();
        ledger.commit(executed, &commit).expect("commits");
        let committed = started.elapsed();
        println!(
            "| block of {size:>6} transfers: validate + apply | {} | commit (RocksDB, fsync) | {} |",
            millis(validated),
            millis(committed)
        );
    }
}

fn state_root(quick: bool) {
    let sizes: &[u64] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    const TOUCHED: u64 = 1_000;
    const BLOCKS: u64 = 10;
    const FILL_CHUNK: u64 = 100_000;
    for &size in sizes {
        let store = MemStore::new();
        let tree = TreeStore::new(&store);
        let mut version = 0;
        let mut filled = 0;
        let keys: Vec<_> = (0..size)
            .map(|i| derived_key(4, "bench", i).public_key())
            .collect();
        while filled < size {
            let end = (filled + FILL_CHUNK).min(size);
            let writes: BTreeMap<StateKey, Option<Vec<u8>>> = (filled..end)
                .map(|i| {
                    let account = Account {
                        balance: i,
                        nonce: 0,
                    };
                    (
                        StateKey::Account(keys[i as usize]),
                        Some(account.to_bytes()),
                    )
                })
                .collect();
            let mut batch = WriteBatch::new();
            tree.update(&writes, version, &mut batch).expect("updates");
            store.write(batch).expect("writes");
            version += 1;
            filled = end;
        }
        let mut total = Duration::ZERO;
        for block in 0..BLOCKS {
            let writes: BTreeMap<StateKey, Option<Vec<u8>>> = (0..TOUCHED)
                .map(|i| {
                    let index = (block * 7_919 + i * 104_729) % size;
                    let account = Account {
                        balance: block + 1,
                        nonce: block + 1,
                    };
                    (
                        StateKey::Account(keys[index as usize]),
                        Some(account.to_bytes()),
                    )
                })
                .collect();
            let mut batch = WriteBatch::new();
            let started = Instant::now();
            tree.update(&writes, version, &mut batch).expect("updates");
            total += started.elapsed();
            store.write(batch).expect("writes");
            version += 1;
        }
        println!(
            "| state root update, {TOUCHED} accounts touched, {size:>9} accounts | {} per block |",
            millis(total / BLOCKS as u32)
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    println!("| measure | value |");
    println!("|---|---|");
    signatures(quick);
    mempool(quick);
    apply_and_commit(quick);
    state_root(quick);
}

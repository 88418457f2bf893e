//! The steady transaction stream: signed transfers from the client accounts, round-robin, at
//! `--tx-rate`, posted to the running honest nodes.
//!
//! # Design
//! Each account keeps its own nonce counter and is always posted to the same node while that
//! node runs (account `k` to node `k mod N`), so its transactions reach one mempool in nonce
//! order; gossip spreads them. A refusal (422) re-reads the account's committed nonce. An
//! account with a request in flight is skipped for that tick, so a slow node never gets two of
//! its transactions out of order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use types::{ChainId, Encode, Payload, PublicKey, SecretKey, Transaction};

use crate::client::{Client, Endpoint, Submitted};
use crate::observe::{Shared, lock};

/// Fee of every transfer.
const FEE: u64 = 1;
/// Amount of every transfer.
const AMOUNT: u64 = 1;
/// Accepted transactions whose hashes are kept, at most.
pub const MAX_KEPT_HASHES: usize = 1_000_000;

/// What the stream did so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStats {
    /// Transactions posted.
    pub submitted: u64,
    /// Answered 202.
    pub accepted: u64,
    /// Refused (422), by mempool reason.
    pub refused: BTreeMap<String, u64>,
    /// Other answers and failed requests.
    pub errors: u64,
    /// Hashes of accepted transactions, with when they were accepted (oldest first).
    #[serde(skip)]
    pub hashes: Vec<(String, Instant)>,
}

/// One client account.
struct Account {
    key: SecretKey,
    public: String,
    nonce: u64,
    /// Its nonce must be re-read before the next transaction.
    resync: bool,
    busy: Arc<AtomicBool>,
}

/// The running stream.
pub struct Stream {
    /// Its counters.
    pub stats: Arc<Mutex<StreamStats>>,
}

impl Stream {
    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Transfer `nonce` of `key` to `to`, signed for `chain`, as the hex of its encoding.
pub fn transfer_hex(chain: &ChainId, key: &SecretKey, nonce: u64, to: PublicKey) -> String {
    let tx = Transaction {
        chain_id: chain.clone(),
        sender: key.public_key(),
        nonce,
        fee: FEE,
        payload: Payload::Transfer { to, amount: AMOUNT },
    }
    .sign(key);
    hex::encode(tx.to_bytes())
}

/// The node account `k` posts to: `k mod N`, or the next running one.
pub fn node_for(k: usize, up: &[bool]) -> Option<usize> {
    let n = up.len();
    (0..n).map(|d| (k + d) % n).find(|&i| up[i])
}

/// Starts the stream (until `stop`).
pub fn start(
    client: Client,
    endpoints: Vec<Endpoint>,
    chain: ChainId,
    keys: Vec<SecretKey>,
    rate: u32,
    shared: Shared,
    stop: watch::Receiver<bool>,
) -> Stream {
    let stats = Arc::new(Mutex::new(StreamStats::default()));
    let accounts: Vec<Arc<Mutex<Account>>> = keys
        .into_iter()
        .map(|key| {
            Arc::new(Mutex::new(Account {
                public: key.public_key().to_string(),
                key,
                nonce: 0,
                resync: false,
                busy: Arc::new(AtomicBool::new(false)),
            }))
        })
        .collect();
    tokio::spawn(run(
        client,
        endpoints,
        chain,
        accounts,
        rate,
        shared,
        stats.clone(),
        stop,
    ));
    Stream { stats }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the stream's fixed parts, passed once"
)]
async fn run(
    client: Client,
    endpoints: Vec<Endpoint>,
    chain: ChainId,
    accounts: Vec<Arc<Mutex<Account>>>,
    rate: u32,
    shared: Shared,
    stats: Arc<Mutex<StreamStats>>,
    mut stop: watch::Receiver<bool>,
) {
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let up = lock(&shared).up.clone();
        // The next account without a request in flight.
        let Some(k) = (0..accounts.len())
            .map(|d| (next + d) % accounts.len())
            .find(|&k| {
                accounts[k]
                    .lock()
                    .is_ok_and(|a| !a.busy.load(Ordering::Acquire))
            })
        else {
            continue;
        };
        next = (k + 1) % accounts.len();
        let Some(node) = node_for(k, &up) else {
            continue;
        };
        let to = accounts[(k + 1) % accounts.len()]
            .lock()
            .map(|a| a.key.public_key())
            .ok();
        let Some(to) = to else { continue };
        let (account, endpoint, client, chain, stats) = (
            accounts[k].clone(),
            endpoints[node].clone(),
            client.clone(),
            chain.clone(),
            stats.clone(),
        );
        let Ok(busy) = account.lock().map(|a| a.busy.clone()) else {
            continue;
        };
        busy.store(true, Ordering::Release);
        tokio::spawn(async move {
            send_one(&client, &endpoint, &chain, &account, to, &stats).await;
            busy.store(false, Ordering::Release);
        });
    }
}

/// Posts the account's next transfer and updates its nonce and the counters.
async fn send_one(
    client: &Client,
    endpoint: &Endpoint,
    chain: &ChainId,
    account: &Mutex<Account>,
    to: PublicKey,
    stats: &Mutex<StreamStats>,
) {
    let Some((key, public, mut nonce, resync)) = account
        .lock()
        .ok()
        .map(|a| (a.key.clone(), a.public.clone(), a.nonce, a.resync))
    else {
        return;
    };
    if resync {
        match client.nonce(endpoint, &public).await {
            Ok(n) => nonce = n,
            Err(_) => return,
        }
    }
    let hex = transfer_hex(chain, &key, nonce, to);
    let result = client.submit(endpoint, &hex).await;
    let (next_nonce, resync) = match &result {
        Ok(Submitted::Accepted(_)) => (nonce + 1, false),
        Ok(Submitted::Refused(_)) => (nonce, true),
        // Unknown whether it arrived: ask the node before the next one.
        _ => (nonce, true),
    };
    if let Ok(mut a) = account.lock() {
        a.nonce = next_nonce;
        a.resync = resync;
    }
    if let Ok(mut s) = stats.lock() {
        s.submitted += 1;
        match result {
            Ok(Submitted::Accepted(hash)) => {
                s.accepted += 1;
                if s.hashes.len() < MAX_KEPT_HASHES {
                    s.hashes.push((hash, Instant::now()));
                }
            }
            Ok(Submitted::Refused(reason)) => *s.refused.entry(reason).or_insert(0) += 1,
            _ => s.errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::{Decode, SignedTransaction};

    #[test]
    fn accounts_stay_on_their_node_and_move_on_only_while_it_is_down() {
        let up = [true, true, true, true];
        assert_eq!(node_for(5, &up), Some(1));
        assert_eq!(node_for(3, &up), Some(3));
        assert_eq!(node_for(3, &[true, true, true, false]), Some(0));
        assert_eq!(node_for(1, &[false, false]), None);
    }

    #[test]
    fn transfers_are_signed_canonical_transactions() {
        let chain: ChainId = "lab".parse().unwrap();
        let key = SecretKey::generate();
        let to = SecretKey::generate().public_key();
        let bytes = hex::decode(transfer_hex(&chain, &key, 7, to)).unwrap();
        let tx = SignedTransaction::from_bytes(&bytes).unwrap();
        tx.verify().unwrap();
        assert_eq!((tx.tx.nonce, tx.tx.fee), (7, FEE));
        assert_eq!(tx.tx.payload, Payload::Transfer { to, amount: AMOUNT });
    }
}

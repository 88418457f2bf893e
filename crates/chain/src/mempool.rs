//! Hold pending transactions for the next proposer: bounded, nonce-ordered per sender, and
//! checked against the committed state before they take room.
//!
//! # Design
//! Every transaction comes from a peer or a client, so each one is hostile until checked. Checks
//! run cheapest first: size, chain id, amounts, fee, duplicate id; then the signature (one batch
//! per [`Mempool::insert_batch`]); then the sender's account (nonce window, balance); then room.
//! Each refusal is a [`MempoolError`] with a stable [`label`](MempoolError::label), counted in
//! [`MempoolCounters::rejected`], and a [`PeerFault`] class the p2p layer turns into a penalty.
//!
//! When the pool is full, a transaction paying a strictly higher fee evicts the lowest-fee one,
//! and with it the same sender's later nonces, which could never execute without it. A sender's
//! own earlier nonces are never evicted to make room for its later one.
//!
//! The pool reads the state only through [`AccountSource`] and never writes it. After each
//! committed block, [`Mempool::update`] removes what the block included and re-checks every
//! sender against its new account. No clock and no I/O: the caller decides when to call.
//!
//! # Invariants
//! - `len() <= max_txs` and `bytes() <= max_bytes`; `bytes()` is the sum of the encoded sizes.
//! - Each entry sits in exactly one sender queue, under its nonce, and once in the fee index.
//! - A sender queue is never empty and holds nonces within
//!   `[account nonce, account nonce + max_nonce_gap]` of the account as last read, so at most
//!   `max_nonce_gap + 1` entries.
//! - When a sender's account was last read (at its last admitted insert, or at
//!   [`Mempool::update`]), the costs (fee plus spend) of all its pending transactions together
//!   fitted its balance.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use storage::Store;
use types::codec::{Decode, DecodeError, Encode};
use types::limits::MAX_TX_BYTES;
use types::{
    Account, BatchVerifier, ChainId, Domain, Payload, PublicKey, SignedTransaction, TxHash,
};

use crate::error::StateError;
use crate::ledger::Ledger;

/// Where the mempool reads committed accounts.
pub trait AccountSource {
    /// The account of `key` at the committed tip (empty if it was never written).
    fn account(&self, key: &PublicKey) -> Result<Account, StateError>;
}

impl<S: Store> AccountSource for Ledger<S> {
    fn account(&self, key: &PublicKey) -> Result<Account, StateError> {
        Ledger::account(self, key)
    }
}

/// Bounds and admission rules of the mempool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held, count.
    pub max_txs: usize,
    /// Most bytes held, as the sum of the transactions' encoded sizes.
    pub max_bytes: usize,
    /// How far ahead of the sender's account nonce a nonce may be, count (0: only the next
    /// one). Bounds one sender's pending transactions to `max_nonce_gap + 1`.
    pub max_nonce_gap: u64,
    /// Lowest fee admitted, balance units.
    pub min_fee: u64,
    /// Extra fee a transaction must pay to replace a pending one with the same sender and
    /// nonce, percent of the old fee.
    pub replace_bump_percent: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            // Two and a half full blocks of transactions (`MAX_BLOCK_TXS` is 20,000).
            max_txs: 50_000,
            // Eight full blocks of bytes (`MAX_BLOCK_BYTES` is 8 MiB); a small share of memory.
            max_bytes: 64 * 1024 * 1024,
            // Room for a client to queue a burst without waiting for each block.
            max_nonce_gap: 64,
            // Fees are a market; the pool's bounds and eviction price out spam instead.
            min_fee: 0,
            // Enough that replacing a transaction over and over costs the sender real fees.
            replace_bump_percent: 10,
        }
    }
}

impl MempoolConfig {
    /// Small bounds for tests: eight transactions, 4 KiB, nonce gap 4, fee at least 1.
    pub fn test() -> Self {
        Self {
            max_txs: 8,
            max_bytes: 4 * 1024,
            max_nonce_gap: 4,
            min_fee: 1,
            replace_bump_percent: 10,
        }
    }
}

/// How much a refused transaction says about the peer that relayed it.
///
/// - `Severe`: invalid whatever the state, so provably bad bytes: malformed, too large, for
///   another chain, a signature that does not verify, an amount of zero.
/// - `Minor`: invalid against our state or policy; an honest peer with another view may send
///   it, but so does a spammer: a nonce gap, a balance that does not cover it, a fee under the
///   minimum, an underpriced replacement, costs that overflow (more than any balance).
/// - `None`: honest races and local conditions: a replayed nonce (the block landed while it
///   travelled), a duplicate (gossip from several peers), a full pool, a state read failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFault {
    /// Nothing to hold against the peer.
    None,
    /// Possibly spam: penalise lightly.
    Minor,
    /// Provably invalid: penalise heavily.
    Severe,
}

/// Why a transaction was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum MempoolError {
    /// The bytes are not a canonical signed transaction.
    #[error("transaction does not decode: {0}")]
    Malformed(#[from] DecodeError),
    /// Larger than any transaction may be.
    #[error("transaction of {size} bytes exceeds the bound of {max} bytes")]
    TooLarge {
        /// Encoded size, bytes.
        size: usize,
        /// The bound, bytes.
        max: usize,
    },
    /// Signed for another chain.
    #[error("transaction is for chain {got}, this is {expected}")]
    WrongChain {
        /// This chain.
        expected: ChainId,
        /// The transaction's chain.
        got: ChainId,
    },
    /// A transfer, bond or unbond of nothing: it can never execute.
    #[error("amount must be positive")]
    ZeroAmount,
    /// The sender's signature does not verify.
    #[error("transaction signature does not verify")]
    BadSignature,
    /// The nonce was already used.
    #[error("nonce {nonce} already used (account nonce is {account_nonce})")]
    NonceReplay {
        /// The sender's next nonce.
        account_nonce: u64,
        /// The transaction's nonce.
        nonce: u64,
    },
    /// The nonce is too far ahead of the sender's.
    #[error("nonce {nonce} is more than {max_gap} ahead of the account nonce {account_nonce}")]
    NonceGap {
        /// The sender's next nonce.
        account_nonce: u64,
        /// The transaction's nonce.
        nonce: u64,
        /// How far ahead a nonce may be.
        max_gap: u64,
    },
    /// The same transaction is already pending.
    #[error("transaction {id} is already pending")]
    Duplicate {
        /// Its id.
        id: TxHash,
    },
    /// Another transaction with the same sender and nonce is pending, and this one does not
    /// pay enough more to replace it.
    #[error("replacement fee {new_fee} does not pay enough over the pending fee {old_fee}")]
    ReplacementUnderpriced {
        /// The pending transaction's fee.
        old_fee: u64,
        /// This transaction's fee.
        new_fee: u64,
    },
    /// The balance does not cover this transaction with the sender's other pending ones.
    #[error("balance {available} does not cover the {needed} pending transactions would take")]
    InsufficientBalance {
        /// Fee plus spend of this transaction and the sender's other pending ones.
        needed: u64,
        /// The sender's balance.
        available: u64,
    },
    /// Fee plus spend, alone or summed over the sender's pending transactions, overflows.
    #[error("fee plus amount overflows")]
    Overflow,
    /// The fee is below the pool's minimum.
    #[error("fee {fee} is below the minimum {min}")]
    FeeTooLow {
        /// The transaction's fee.
        fee: u64,
        /// The minimum.
        min: u64,
    },
    /// The pool is full and this transaction cannot take another's place: it does not pay
    /// more than the lowest fee, or room would take the sender's own earlier nonces.
    #[error("mempool is full; its lowest fee is {lowest_fee}")]
    Full {
        /// The lowest fee pending (0 if the pool is empty).
        lowest_fee: u64,
    },
    /// The state cannot be read (a local fault, not the transaction's).
    #[error(transparent)]
    State(#[from] StateError),
}

impl MempoolError {
    /// Every [`MempoolError::label`], so metrics can show each reason from the start.
    pub const LABELS: [&'static str; 14] = [
        "malformed",
        "too_large",
        "wrong_chain",
        "zero_amount",
        "bad_signature",
        "nonce_replay",
        "nonce_gap",
        "duplicate",
        "replacement_underpriced",
        "insufficient_balance",
        "overflow",
        "fee_too_low",
        "full",
        "state_error",
    ];

    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::TooLarge { .. } => "too_large",
            Self::WrongChain { .. } => "wrong_chain",
            Self::ZeroAmount => "zero_amount",
            Self::BadSignature => "bad_signature",
            Self::NonceReplay { .. } => "nonce_replay",
            Self::NonceGap { .. } => "nonce_gap",
            Self::Duplicate { .. } => "duplicate",
            Self::ReplacementUnderpriced { .. } => "replacement_underpriced",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::Overflow => "overflow",
            Self::FeeTooLow { .. } => "fee_too_low",
            Self::Full { .. } => "full",
            Self::State(_) => "state_error",
        }
    }

    /// What the refusal says about the peer that relayed the transaction (see [`PeerFault`]).
    pub fn peer_fault(&self) -> PeerFault {
        match self {
            Self::Malformed(_)
            | Self::TooLarge { .. }
            | Self::WrongChain { .. }
            | Self::ZeroAmount
            | Self::BadSignature => PeerFault::Severe,
            Self::NonceGap { .. }
            | Self::InsufficientBalance { .. }
            | Self::FeeTooLow { .. }
            | Self::ReplacementUnderpriced { .. }
            | Self::Overflow => PeerFault::Minor,
            Self::NonceReplay { .. }
            | Self::Duplicate { .. }
            | Self::Full { .. }
            | Self::State(_) => PeerFault::None,
        }
    }
}

/// Counts of what the mempool admitted, removed and refused, since it was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MempoolCounters {
    /// Transactions admitted (replacements included).
    pub accepted: u64,
    /// Pending transactions replaced by one with the same sender and nonce and a higher fee.
    pub replaced: u64,
    /// Pending transactions evicted to make room (with their senders' later nonces).
    pub evicted: u64,
    /// Pending transactions removed because a committed block included them.
    pub committed: u64,
    /// Pending transactions dropped because the sender's account moved past them: nonce used by
    /// another transaction, or cost no longer covered by the balance (with the later nonces).
    pub dropped_after_commit: u64,
    /// Pending transactions removed because they failed when a block was built (with the
    /// senders' later nonces).
    pub failed: u64,
    /// Refusals, by [`MempoolError::label`].
    pub rejected: BTreeMap<&'static str, u64>,
}

/// A pending transaction.
#[derive(Debug)]
struct Entry {
    tx: SignedTransaction,
    /// Encoded size, bytes.
    size: usize,
    /// Fee plus spend: what it takes from the sender's balance.
    cost: u64,
}

/// One sender's pending transactions.
#[derive(Debug)]
struct Queue {
    /// The account nonce as last read.
    account_nonce: u64,
    txs: BTreeMap<u64, TxHash>,
}

/// A transaction that passed the checks that need neither its signature nor the state.
struct Candidate {
    tx: SignedTransaction,
    id: TxHash,
    size: usize,
    cost: u64,
}

/// The pool of pending transactions. See the module documentation.
#[derive(Debug)]
pub struct Mempool {
    chain_id: ChainId,
    config: MempoolConfig,
    entries: HashMap<TxHash, Entry>,
    queues: BTreeMap<PublicKey, Queue>,
    /// Every entry as `(fee, id)`: the first one is evicted first.
    by_fee: BTreeSet<(u64, TxHash)>,
    bytes: usize,
    counters: MempoolCounters,
}

impl Mempool {
    /// An empty pool for transactions of `chain_id`.
    pub fn new(chain_id: ChainId, config: MempoolConfig) -> Self {
        Self {
            chain_id,
            config,
            entries: HashMap::new(),
            queues: BTreeMap::new(),
            by_fee: BTreeSet::new(),
            bytes: 0,
            counters: MempoolCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// Transactions pending.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Encoded bytes pending.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether transaction `id` is pending.
    pub fn contains(&self, id: &TxHash) -> bool {
        self.entries.contains_key(id)
    }

    /// The pending transaction `id`.
    pub fn get(&self, id: &TxHash) -> Option<&SignedTransaction> {
        self.entries.get(id).map(|e| &e.tx)
    }

    /// Counters since creation.
    pub fn counters(&self) -> &MempoolCounters {
        &self.counters
    }

    /// The nonce a client should use next for `sender`: the first one after the contiguous run
    /// of pending transactions starting at the account nonce as last read. `None` if nothing of
    /// the sender is pending (the account nonce is then the answer).
    pub fn pending_nonce(&self, sender: &PublicKey) -> Option<u64> {
        let queue = self.queues.get(sender)?;
        let mut next = queue.account_nonce;
        for &nonce in queue.txs.range(queue.account_nonce..).map(|(n, _)| n) {
            if nonce != next {
                break;
            }
            next = next.checked_add(1)?;
        }
        Some(next)
    }

    /// Admits one transaction after checking its signature and its sender's account.
    pub fn insert<A: AccountSource + ?Sized>(
        &mut self,
        tx: SignedTransaction,
        state: &A,
    ) -> Result<TxHash, MempoolError> {
        let size = tx.to_bytes().len();
        let result = self.insert_sized(tx, size, state);
        self.record(result)
    }

    /// Decodes and admits one transaction received as bytes.
    pub fn insert_bytes<A: AccountSource + ?Sized>(
        &mut self,
        bytes: &[u8],
        state: &A,
    ) -> Result<TxHash, MempoolError> {
        let result = if bytes.len() > MAX_TX_BYTES {
            Err(MempoolError::TooLarge {
                size: bytes.len(),
                max: MAX_TX_BYTES,
            })
        } else {
            match SignedTransaction::from_bytes(bytes) {
                // The encoding is canonical: its size is the length of these bytes.
                Ok(tx) => self.insert_sized(tx, bytes.len(), state),
                Err(e) => Err(e.into()),
            }
        };
        self.record(result)
    }

    /// Admits many transactions, in order, checking all their signatures in one batch. The
    /// results are in the order of `txs`; a bad one is refused alone.
    pub fn insert_batch<A: AccountSource + ?Sized>(
        &mut self,
        txs: Vec<SignedTransaction>,
        state: &A,
    ) -> Vec<Result<TxHash, MempoolError>> {
        let mut seen = HashSet::with_capacity(txs.len());
        let checked: Vec<Result<Candidate, MempoolError>> = txs
            .into_iter()
            .map(|tx| {
                let size = tx.to_bytes().len();
                let candidate = self.precheck(tx, size)?;
                if !seen.insert(candidate.id) {
                    return Err(MempoolError::Duplicate { id: candidate.id });
                }
                Ok(candidate)
            })
            .collect();

        let mut batch = BatchVerifier::new();
        let mut positions = Vec::with_capacity(checked.len());
        for (position, candidate) in checked.iter().enumerate() {
            if let Ok(c) = candidate {
                batch.push(
                    &c.tx.tx.sender,
                    Domain::Transaction,
                    &c.tx.tx.chain_id,
                    &c.tx.tx,
                    &c.tx.signature,
                );
                positions.push(position);
            }
        }
        let mut bad = vec![false; checked.len()];
        if let Err(indexes) = batch.verify() {
            for index in indexes {
                if let Some(&position) = positions.get(index) {
                    bad[position] = true;
                }
            }
        }

        checked
            .into_iter()
            .zip(bad)
            .map(|(candidate, bad)| {
                let result = match candidate {
                    Ok(_) if bad => Err(MempoolError::BadSignature),
                    Ok(c) => self.admit(c, state),
                    Err(e) => Err(e),
                };
                self.record(result)
            })
            .collect()
    }

    /// The transactions a proposer should try, in order: per sender only the contiguous run
    /// from the account nonce that the balance covers, across senders the highest fee first
    /// (ties by lowest id). At most `max_txs` transactions of at most `max_bytes` encoded bytes
    /// in total; a transaction that does not fit ends its sender's run. Deterministic. Reads
    /// the account of every sender with pending transactions.
    pub fn reap<A: AccountSource + ?Sized>(
        &self,
        max_txs: usize,
        max_bytes: usize,
        state: &A,
    ) -> Result<Vec<SignedTransaction>, StateError> {
        struct Run<'a> {
            txs: &'a BTreeMap<u64, TxHash>,
            nonce: u64,
            left: u64,
        }
        let mut runs = Vec::new();
        let mut heads = BinaryHeap::new();
        for (sender, queue) in &self.queues {
            let account = state.account(sender)?;
            if let Some((id, entry)) = self.at(&queue.txs, account.nonce) {
                heads.push((entry.tx.tx.fee, Reverse(id), runs.len()));
                runs.push(Run {
                    txs: &queue.txs,
                    nonce: account.nonce,
                    left: account.balance,
                });
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_txs
            && let Some((_, _, index)) = heads.pop()
        {
            let Some(run) = runs.get_mut(index) else {
                continue;
            };
            let Some((_, entry)) = self.at(run.txs, run.nonce) else {
                continue;
            };
            let Some(total) = bytes.checked_add(entry.size) else {
                continue;
            };
            if total > max_bytes || entry.cost > run.left {
                continue;
            }
            bytes = total;
            run.left -= entry.cost;
            out.push(entry.tx.clone());
            let Some(next) = run.nonce.checked_add(1) else {
                continue;
            };
            run.nonce = next;
            if let Some((id, entry)) = self.at(run.txs, next) {
                heads.push((entry.tx.tx.fee, Reverse(id), index));
            }
        }
        Ok(out)
    }

    /// After a block commits: removes the transactions it included, then re-checks every
    /// sender against its new account, dropping used nonces, transactions the balance no longer
    /// covers and everything after them. On a state failure the pool stays consistent but only
    /// partly re-checked; the next call finishes the job.
    pub fn update<A: AccountSource + ?Sized>(
        &mut self,
        committed: &[SignedTransaction],
        state: &A,
    ) -> Result<(), StateError> {
        for tx in committed {
            if self.remove_entry(&tx.id()).is_some() {
                self.counters.committed += 1;
            }
        }
        let senders: Vec<PublicKey> = self.queues.keys().copied().collect();
        for sender in senders {
            let account = state.account(&sender)?;
            self.revalidate(&sender, account);
        }
        Ok(())
    }

    /// Removes transactions that failed when a block was built (the `skipped` of
    /// [`Ledger::propose`](crate::Ledger::propose)), with their senders' later nonces. Returns
    /// how many were removed.
    pub fn remove_failed<'a>(&mut self, ids: impl IntoIterator<Item = &'a TxHash>) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(entry) = self.entries.get(id) {
                let (sender, nonce) = (entry.tx.tx.sender, entry.tx.tx.nonce);
                removed += self.remove_from(&sender, nonce);
            }
        }
        self.counters.failed += removed as u64;
        removed
    }

    /// Every check but the signature's, then admission.
    fn insert_sized<A: AccountSource + ?Sized>(
        &mut self,
        tx: SignedTransaction,
        size: usize,
        state: &A,
    ) -> Result<TxHash, MempoolError> {
        let candidate = self.precheck(tx, size)?;
        candidate
            .tx
            .verify()
            .map_err(|_| MempoolError::BadSignature)?;
        self.admit(candidate, state)
    }

    /// The checks that need neither the signature nor the state.
    fn precheck(&self, tx: SignedTransaction, size: usize) -> Result<Candidate, MempoolError> {
        if size > MAX_TX_BYTES {
            return Err(MempoolError::TooLarge {
                size,
                max: MAX_TX_BYTES,
            });
        }
        if tx.tx.chain_id != self.chain_id {
            return Err(MempoolError::WrongChain {
                expected: self.chain_id.clone(),
                got: tx.tx.chain_id.clone(),
            });
        }
        if matches!(
            tx.tx.payload,
            Payload::Transfer { amount: 0, .. }
                | Payload::Bond { amount: 0 }
                | Payload::Unbond { amount: 0 }
        ) {
            return Err(MempoolError::ZeroAmount);
        }
        if tx.tx.fee < self.config.min_fee {
            return Err(MempoolError::FeeTooLow {
                fee: tx.tx.fee,
                min: self.config.min_fee,
            });
        }
        let cost = tx
            .tx
            .fee
            .checked_add(tx.tx.payload.spend())
            .ok_or(MempoolError::Overflow)?;
        let id = tx.id();
        if self.entries.contains_key(&id) {
            return Err(MempoolError::Duplicate { id });
        }
        Ok(Candidate { tx, id, size, cost })
    }

    /// The checks against the sender's account and the pool's room, then the insertion.
    fn admit<A: AccountSource + ?Sized>(
        &mut self,
        candidate: Candidate,
        state: &A,
    ) -> Result<TxHash, MempoolError> {
        let id = candidate.id;
        // A batch may hold an earlier copy, admitted since its precheck.
        if self.entries.contains_key(&id) {
            return Err(MempoolError::Duplicate { id });
        }
        let (sender, nonce, fee) = (
            candidate.tx.tx.sender,
            candidate.tx.tx.nonce,
            candidate.tx.tx.fee,
        );
        let account = state.account(&sender)?;
        self.revalidate(&sender, account);
        if nonce < account.nonce {
            return Err(MempoolError::NonceReplay {
                account_nonce: account.nonce,
                nonce,
            });
        }
        let max_gap = self.config.max_nonce_gap;
        if nonce - account.nonce > max_gap {
            return Err(MempoolError::NonceGap {
                account_nonce: account.nonce,
                nonce,
                max_gap,
            });
        }

        let queue = self.queues.get(&sender);
        let replaced = queue
            .and_then(|q| q.txs.get(&nonce))
            .and_then(|old| self.entries.get(old).map(|e| (*old, e.size, e.tx.tx.fee)));
        if let Some((_, _, old_fee)) = replaced {
            let bump = 100u128.saturating_add(u128::from(self.config.replace_bump_percent));
            let enough = u128::from(fee) * 100 >= u128::from(old_fee).saturating_mul(bump);
            if fee <= old_fee || !enough {
                return Err(MempoolError::ReplacementUnderpriced {
                    old_fee,
                    new_fee: fee,
                });
            }
        }
        let mut needed = candidate.cost;
        let others = queue
            .iter()
            .flat_map(|q| &q.txs)
            .filter(|(n, _)| **n != nonce);
        for (_, other) in others {
            let cost = self.entries.get(other).map_or(0, |e| e.cost);
            needed = needed.checked_add(cost).ok_or(MempoolError::Overflow)?;
        }
        if needed > account.balance {
            return Err(MempoolError::InsufficientBalance {
                needed,
                available: account.balance,
            });
        }

        let victims = self.plan_room(&candidate, replaced.map(|(old, size, _)| (old, size)))?;
        if let Some((old, _, _)) = replaced {
            self.remove_entry(&old);
            self.counters.replaced += 1;
        }
        for victim in &victims {
            self.remove_entry(victim);
        }
        self.counters.evicted += victims.len() as u64;
        self.insert_entry(candidate, account.nonce);
        self.counters.accepted += 1;
        Ok(id)
    }

    /// What to evict so that `candidate` fits once `replaced` (id, size) is gone: the lowest
    /// fees first, each with its sender's later nonces. Changes nothing.
    fn plan_room(
        &self,
        candidate: &Candidate,
        replaced: Option<(TxHash, usize)>,
    ) -> Result<Vec<TxHash>, MempoolError> {
        let mut planned = HashSet::new();
        let mut count = self.entries.len() + 1;
        let mut bytes = self.bytes.saturating_add(candidate.size);
        if let Some((old, size)) = replaced {
            planned.insert(old);
            count -= 1;
            bytes = bytes.saturating_sub(size);
        }
        let full = || MempoolError::Full {
            lowest_fee: self.by_fee.first().map_or(0, |(fee, _)| *fee),
        };
        let tx = &candidate.tx.tx;
        let mut victims = Vec::new();
        let mut cheapest = self.by_fee.iter();
        while count > self.config.max_txs || bytes > self.config.max_bytes {
            let Some(&(fee, id)) = cheapest.next() else {
                return Err(full());
            };
            if planned.contains(&id) {
                continue;
            }
            if fee >= tx.fee {
                return Err(full());
            }
            let Some(victim) = self.entries.get(&id) else {
                continue;
            };
            let (sender, nonce) = (victim.tx.tx.sender, victim.tx.tx.nonce);
            if sender == tx.sender && nonce < tx.nonce {
                return Err(full());
            }
            let Some(queue) = self.queues.get(&sender) else {
                continue;
            };
            for later in queue.txs.range(nonce..).map(|(_, id)| *id) {
                if planned.insert(later) {
                    count = count.saturating_sub(1);
                    bytes = bytes.saturating_sub(self.entries.get(&later).map_or(0, |e| e.size));
                    victims.push(later);
                }
            }
        }
        Ok(victims)
    }

    /// Re-checks one sender's queue against `account`: drops used nonces, nonces past the gap,
    /// and from the first transaction the balance no longer covers, everything after it.
    fn revalidate(&mut self, sender: &PublicKey, account: Account) {
        let Some(queue) = self.queues.get_mut(sender) else {
            return;
        };
        queue.account_nonce = account.nonce;
        let last = account.nonce.saturating_add(self.config.max_nonce_gap);
        let mut drop: Vec<TxHash> = queue
            .txs
            .range(..account.nonce)
            .map(|(_, id)| *id)
            .collect();
        let mut spent = 0u64;
        let mut broken = false;
        for (&nonce, id) in queue.txs.range(account.nonce..) {
            if !broken {
                let cost = self.entries.get(id).map_or(0, |e| e.cost);
                match spent.checked_add(cost) {
                    Some(total) if total <= account.balance && nonce <= last => {
                        spent = total;
                        continue;
                    }
                    _ => broken = true,
                }
            }
            drop.push(*id);
        }
        for id in &drop {
            self.remove_entry(id);
        }
        self.counters.dropped_after_commit += drop.len() as u64;
    }

    /// Removes `sender`'s transactions from `nonce` on; returns how many.
    fn remove_from(&mut self, sender: &PublicKey, nonce: u64) -> usize {
        let ids: Vec<TxHash> = self
            .queues
            .get(sender)
            .map(|q| q.txs.range(nonce..).map(|(_, id)| *id).collect())
            .unwrap_or_default();
        for id in &ids {
            self.remove_entry(id);
        }
        ids.len()
    }

    /// The pending entry of a queue at `nonce`, with its id.
    fn at(&self, txs: &BTreeMap<u64, TxHash>, nonce: u64) -> Option<(TxHash, &Entry)> {
        let id = txs.get(&nonce)?;
        self.entries.get(id).map(|entry| (*id, entry))
    }

    fn insert_entry(&mut self, candidate: Candidate, account_nonce: u64) {
        let Candidate { tx, id, size, cost } = candidate;
        self.by_fee.insert((tx.tx.fee, id));
        self.bytes += size;
        let queue = self.queues.entry(tx.tx.sender).or_insert_with(|| Queue {
            account_nonce,
            txs: BTreeMap::new(),
        });
        queue.account_nonce = account_nonce;
        queue.txs.insert(tx.tx.nonce, id);
        self.entries.insert(id, Entry { tx, size, cost });
    }

    fn remove_entry(&mut self, id: &TxHash) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        let tx = &entry.tx.tx;
        self.by_fee.remove(&(tx.fee, *id));
        self.bytes = self.bytes.saturating_sub(entry.size);
        if let Some(queue) = self.queues.get_mut(&tx.sender) {
            if queue.txs.get(&tx.nonce) == Some(id) {
                queue.txs.remove(&tx.nonce);
            }
            if queue.txs.is_empty() {
                self.queues.remove(&tx.sender);
            }
        }
        Some(entry)
    }

    /// Counts a refusal.
    fn record(&mut self, result: Result<TxHash, MempoolError>) -> Result<TxHash, MempoolError> {
        if let Err(e) = &result {
            *self.counters.rejected.entry(e.label()).or_default() += 1;
        }
        result
    }

    /// Panics unless every invariant of the module documentation holds.
    #[cfg(test)]
    fn assert_invariants(&self) {
        assert!(self.entries.len() <= self.config.max_txs, "count bound");
        assert!(self.bytes <= self.config.max_bytes, "byte bound");
        assert_eq!(
            self.bytes,
            self.entries.values().map(|e| e.size).sum::<usize>(),
            "bytes match the entries"
        );
        assert_eq!(self.by_fee.len(), self.entries.len(), "fee index size");
        for (fee, id) in &self.by_fee {
            assert_eq!(self.entries.get(id).map(|e| e.tx.tx.fee), Some(*fee));
        }
        let mut queued = 0;
        for (sender, queue) in &self.queues {
            assert!(!queue.txs.is_empty(), "no empty queue");
            let gap = self.config.max_nonce_gap;
            assert!(queue.txs.len() as u64 <= gap + 1, "per-sender bound");
            for (nonce, id) in &queue.txs {
                let entry = self.entries.get(id).expect("queued id is an entry");
                assert_eq!((entry.tx.tx.sender, entry.tx.tx.nonce), (*sender, *nonce));
                assert!(*nonce >= queue.account_nonce && *nonce - queue.account_nonce <= gap);
                assert_eq!(entry.size, entry.tx.to_bytes().len());
            }
            queued += queue.txs.len();
        }
        assert_eq!(queued, self.entries.len(), "every entry is queued once");
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use types::{SecretKey, Transaction};

    use super::*;

    #[test]
    fn labels_lists_the_label_of_every_refusal_once() {
        let chain = |s: &str| s.parse::<ChainId>().expect("a valid chain id");
        let every = [
            MempoolError::Malformed(DecodeError::Oversized {
                what: "tx",
                len: 2,
                max: 1,
            }),
            MempoolError::TooLarge { size: 2, max: 1 },
            MempoolError::WrongChain {
                expected: chain("a"),
                got: chain("b"),
            },
            MempoolError::ZeroAmount,
            MempoolError::BadSignature,
            MempoolError::NonceReplay {
                account_nonce: 1,
                nonce: 0,
            },
            MempoolError::NonceGap {
                account_nonce: 0,
                nonce: 9,
                max_gap: 1,
            },
            MempoolError::Duplicate {
                id: types::Hash::ZERO,
            },
            MempoolError::ReplacementUnderpriced {
                old_fee: 1,
                new_fee: 1,
            },
            MempoolError::InsufficientBalance {
                needed: 2,
                available: 1,
            },
            MempoolError::Overflow,
            MempoolError::FeeTooLow { fee: 0, min: 1 },
            MempoolError::Full { lowest_fee: 1 },
            MempoolError::State(StateError::Tree("gone".into())),
        ];
        let labels: Vec<&str> = every.iter().map(MempoolError::label).collect();
        assert_eq!(labels, MempoolError::LABELS);
    }

    impl AccountSource for HashMap<PublicKey, Account> {
        fn account(&self, key: &PublicKey) -> Result<Account, StateError> {
            Ok(self.get(key).copied().unwrap_or_default())
        }
    }

    /// A state that cannot be read.
    struct Broken;

    impl AccountSource for Broken {
        fn account(&self, _: &PublicKey) -> Result<Account, StateError> {
            Err(StateError::Tree("node missing".into()))
        }
    }

    fn chain() -> ChainId {
        ChainId::new("test").expect("valid chain id")
    }

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed([seed; 32])
    }

    fn signed(from: &SecretKey, nonce: u64, fee: u64, payload: Payload) -> SignedTransaction {
        Transaction {
            chain_id: chain(),
            sender: from.public_key(),
            nonce,
            fee,
            payload,
        }
        .sign(from)
    }

    fn transfer(from: &SecretKey, nonce: u64, fee: u64, amount: u64) -> SignedTransaction {
        let to = key(200).public_key();
        signed(from, nonce, fee, Payload::Transfer { to, amount })
    }

    fn funded(keys: &[&SecretKey], balance: u64) -> HashMap<PublicKey, Account> {
        keys.iter()
            .map(|k| (k.public_key(), Account { balance, nonce: 0 }))
            .collect()
    }

    fn pool() -> Mempool {
        Mempool::new(chain(), MempoolConfig::test())
    }

    fn pool_with(config: MempoolConfig) -> Mempool {
        Mempool::new(chain(), config)
    }

    fn rejected(pool: &Mempool, label: &str) -> u64 {
        pool.counters().rejected.get(label).copied().unwrap_or(0)
    }

    fn transfer_size() -> usize {
        transfer(&key(1), 0, 1, 1).to_bytes().len()
    }

    #[test]
    fn a_valid_transaction_is_admitted_and_indexed() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let tx = transfer(&alice, 0, 2, 10);
        let id = pool.insert(tx.clone(), &state).expect("admitted");
        assert_eq!(id, tx.id());
        assert!(pool.contains(&id));
        assert_eq!(pool.get(&id), Some(&tx));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.bytes(), tx.to_bytes().len());
        assert_eq!(pool.pending_nonce(&alice.public_key()), Some(1));
        pool.assert_invariants();
    }

    #[test]
    fn valid_bytes_are_decoded_and_admitted() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let tx = transfer(&alice, 0, 2, 10);
        assert_eq!(
            pool.insert_bytes(&tx.to_bytes(), &state).ok(),
            Some(tx.id())
        );
        assert_eq!(pool.bytes(), tx.to_bytes().len());
    }

    #[test]
    fn malformed_bytes_are_a_severe_fault() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let mut bytes = transfer(&alice, 0, 2, 10).to_bytes();
        bytes.push(0);
        let err = pool
            .insert_bytes(&bytes, &state)
            .expect_err("trailing byte");
        assert!(matches!(
            err,
            MempoolError::Malformed(DecodeError::TrailingBytes { count: 1 })
        ));
        assert_eq!(err.peer_fault(), PeerFault::Severe);
        let err = pool
            .insert_bytes(&bytes[..40], &state)
            .expect_err("truncated");
        assert!(matches!(err, MempoolError::Malformed(_)));
        assert_eq!(rejected(&pool, "malformed"), 2);
        assert!(pool.is_empty());
    }

    #[test]
    fn oversized_bytes_are_refused_before_decoding() {
        let mut pool = pool();
        let err = pool
            .insert_bytes(&vec![0; MAX_TX_BYTES + 1], &HashMap::new())
            .expect_err("too large");
        assert!(matches!(
            err,
            MempoolError::TooLarge { size, max: MAX_TX_BYTES } if size == MAX_TX_BYTES + 1
        ));
        assert_eq!(err.peer_fault(), PeerFault::Severe);
    }

    #[test]
    fn a_transaction_for_another_chain_is_refused() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let tx = Transaction {
            chain_id: ChainId::new("other").expect("valid chain id"),
            sender: alice.public_key(),
            nonce: 0,
            fee: 2,
            payload: Payload::Bond { amount: 5 },
        }
        .sign(&alice);
        let err = pool.insert(tx, &state).expect_err("wrong chain");
        assert!(matches!(err, MempoolError::WrongChain { ref got, .. } if got.as_str() == "other"));
        assert_eq!(err.peer_fault(), PeerFault::Severe);
    }

    #[test]
    fn zero_amounts_are_refused() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        for payload in [
            Payload::Transfer {
                to: key(2).public_key(),
                amount: 0,
            },
            Payload::Bond { amount: 0 },
            Payload::Unbond { amount: 0 },
        ] {
            let err = pool
                .insert(signed(&alice, 0, 2, payload), &state)
                .expect_err("zero amount");
            assert!(matches!(err, MempoolError::ZeroAmount));
        }
        assert_eq!(rejected(&pool, "zero_amount"), 3);
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let (alice, mallory) = (key(1), key(2));
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let mut tx = transfer(&alice, 0, 2, 10);
        tx.signature = transfer(&alice, 0, 2, 10).tx.sign(&mallory).signature;
        let err = pool.insert(tx, &state).expect_err("forged");
        assert!(matches!(err, MempoolError::BadSignature));
        assert_eq!(err.peer_fault(), PeerFault::Severe);
        assert!(pool.is_empty());
    }

    #[test]
    fn a_forged_signature_in_a_batch_is_refused_alone() {
        let (alice, bob, mallory) = (key(1), key(2), key(3));
        let state = funded(&[&alice, &bob], 100);
        let mut pool = pool();
        let mut forged = transfer(&bob, 0, 3, 10);
        forged.signature = forged.tx.clone().sign(&mallory).signature;
        let batch = vec![
            transfer(&alice, 0, 2, 10),
            forged,
            transfer(&alice, 1, 2, 10),
            transfer(&bob, 1, 2, 10),
        ];
        let ids: Vec<TxHash> = batch.iter().map(SignedTransaction::id).collect();
        let results = pool.insert_batch(batch, &state);
        assert_eq!(results.len(), 4);
        assert_eq!(results[0].as_ref().ok(), Some(&ids[0]));
        assert!(matches!(results[1], Err(MempoolError::BadSignature)));
        assert_eq!(results[2].as_ref().ok(), Some(&ids[2]));
        // Bob's nonce 1 waits for a nonce 0 that never came: admitted, not reapable.
        assert_eq!(results[3].as_ref().ok(), Some(&ids[3]));
        assert_eq!(pool.len(), 3);
        assert_eq!(rejected(&pool, "bad_signature"), 1);
        assert_eq!(pool.counters().accepted, 3);
        pool.assert_invariants();
    }

    #[test]
    fn used_nonces_are_replays() {
        let alice = key(1);
        let mut state = funded(&[&alice], 100);
        state.insert(
            alice.public_key(),
            Account {
                balance: 100,
                nonce: 5,
            },
        );
        let mut pool = pool();
        let err = pool
            .insert(transfer(&alice, 4, 2, 10), &state)
            .expect_err("replay");
        assert!(matches!(
            err,
            MempoolError::NonceReplay {
                account_nonce: 5,
                nonce: 4
            }
        ));
        assert_eq!(err.peer_fault(), PeerFault::None);
    }

    #[test]
    fn nonces_past_the_gap_are_refused() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let gap = pool.config().max_nonce_gap;
        assert!(pool.insert(transfer(&alice, gap, 2, 1), &state).is_ok());
        let err = pool
            .insert(transfer(&alice, gap + 1, 2, 1), &state)
            .expect_err("gap");
        assert!(matches!(
            err,
            MempoolError::NonceGap { account_nonce: 0, nonce, max_gap } if nonce == gap + 1 && max_gap == gap
        ));
        assert_eq!(err.peer_fault(), PeerFault::Minor);
    }

    #[test]
    fn the_same_transaction_twice_is_a_duplicate() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let tx = transfer(&alice, 0, 2, 10);
        pool.insert(tx.clone(), &state).expect("first copy");
        let err = pool.insert(tx.clone(), &state).expect_err("second copy");
        assert!(matches!(err, MempoolError::Duplicate { id } if id == tx.id()));
        assert_eq!(err.peer_fault(), PeerFault::None);
        let other = transfer(&alice, 1, 2, 10);
        let results = pool.insert_batch(vec![tx, other.clone(), other], &state);
        assert!(matches!(results[0], Err(MempoolError::Duplicate { .. })));
        assert!(results[1].is_ok());
        assert!(matches!(results[2], Err(MempoolError::Duplicate { .. })));
        assert_eq!(rejected(&pool, "duplicate"), 3);
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn a_replacement_must_pay_the_fee_bump() {
        let alice = key(1);
        let state = funded(&[&alice], 1_000);
        let mut pool = pool();
        pool.insert(transfer(&alice, 0, 100, 10), &state)
            .expect("first");
        for fee in [100, 109] {
            let err = pool
                .insert(transfer(&alice, 0, fee, 11), &state)
                .expect_err("underpriced");
            assert!(matches!(
                err,
                MempoolError::ReplacementUnderpriced { old_fee: 100, new_fee } if new_fee == fee
            ));
            assert_eq!(err.peer_fault(), PeerFault::Minor);
        }
        // With no bump configured, the fee must still rise.
        let mut flat = pool_with(MempoolConfig {
            replace_bump_percent: 0,
            ..MempoolConfig::test()
        });
        flat.insert(transfer(&alice, 0, 5, 10), &state)
            .expect("first");
        assert!(flat.insert(transfer(&alice, 0, 5, 11), &state).is_err());
        assert!(flat.insert(transfer(&alice, 0, 6, 11), &state).is_ok());
    }

    #[test]
    fn a_replacement_with_the_bump_takes_the_slot() {
        let alice = key(1);
        let state = funded(&[&alice], 1_000);
        let mut pool = pool();
        let old = transfer(&alice, 0, 100, 10);
        pool.insert(old.clone(), &state).expect("first");
        let new = transfer(&alice, 0, 110, 10);
        pool.insert(new.clone(), &state).expect("replacement");
        assert!(!pool.contains(&old.id()));
        assert!(pool.contains(&new.id()));
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.counters().replaced, 1);
        assert_eq!(pool.counters().accepted, 2);
        pool.assert_invariants();
    }

    #[test]
    fn the_balance_must_cover_the_senders_pending_transactions() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        pool.insert(transfer(&alice, 0, 10, 50), &state)
            .expect("first");
        let err = pool
            .insert(transfer(&alice, 1, 10, 31), &state)
            .expect_err("over budget");
        assert!(matches!(
            err,
            MempoolError::InsufficientBalance {
                needed: 101,
                available: 100
            }
        ));
        assert_eq!(err.peer_fault(), PeerFault::Minor);
        assert!(pool.insert(transfer(&alice, 1, 10, 30), &state).is_ok());
        // A replacement counts instead of the one it replaces, not on top of it.
        assert!(pool.insert(transfer(&alice, 1, 11, 29), &state).is_ok());
    }

    #[test]
    fn costs_that_overflow_are_refused() {
        let alice = key(1);
        let state = funded(&[&alice], u64::MAX);
        let mut pool = pool();
        let err = pool
            .insert(transfer(&alice, 0, 2, u64::MAX), &state)
            .expect_err("fee plus amount");
        assert!(matches!(err, MempoolError::Overflow));
        pool.insert(transfer(&alice, 0, 2, u64::MAX - 2), &state)
            .expect("exactly the balance");
        let err = pool
            .insert(transfer(&alice, 1, 2, u64::MAX - 2), &state)
            .expect_err("pending sum");
        assert!(matches!(err, MempoolError::Overflow));
        assert_eq!(rejected(&pool, "overflow"), 2);
    }

    #[test]
    fn fees_below_the_minimum_are_refused() {
        let alice = key(1);
        let state = funded(&[&alice], 100);
        let mut pool = pool();
        let err = pool
            .insert(transfer(&alice, 0, 0, 10), &state)
            .expect_err("fee");
        assert!(matches!(err, MempoolError::FeeTooLow { fee: 0, min: 1 }));
        assert_eq!(err.peer_fault(), PeerFault::Minor);
    }

    #[test]
    fn a_state_failure_is_a_local_fault() {
        let alice = key(1);
        let mut pool = pool();
        let err = pool
            .insert(transfer(&alice, 0, 2, 10), &Broken)
            .expect_err("state");
        assert!(matches!(err, MempoolError::State(_)));
        assert_eq!(err.peer_fault(), PeerFault::None);
        assert_eq!(rejected(&pool, "state_error"), 1);
        assert!(pool.reap(10, 10_000, &Broken).is_ok(), "nothing to read");
        let state = funded(&[&alice], 100);
        pool.insert(transfer(&alice, 0, 2, 10), &state)
            .expect("admitted");
        assert!(pool.reap(10, 10_000, &Broken).is_err());
        assert!(pool.update(&[], &Broken).is_err());
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn every_reason_has_a_distinct_label_and_a_fault_class() {
        let reasons = [
            (
                MempoolError::Malformed(DecodeError::InvalidSignature),
                PeerFault::Severe,
            ),
            (
                MempoolError::TooLarge { size: 1, max: 0 },
                PeerFault::Severe,
            ),
            (
                MempoolError::WrongChain {
                    expected: chain(),
                    got: chain(),
                },
                PeerFault::Severe,
            ),
            (MempoolError::ZeroAmount, PeerFault::Severe),
            (MempoolError::BadSignature, PeerFault::Severe),
            (
                MempoolError::NonceReplay {
                    account_nonce: 1,
                    nonce: 0,
                },
                PeerFault::None,
            ),
            (
                MempoolError::NonceGap {
                    account_nonce: 0,
                    nonce: 9,
                    max_gap: 4,
                },
                PeerFault::Minor,
            ),
            (
                MempoolError::Duplicate { id: TxHash::ZERO },
                PeerFault::None,
            ),
            (
                MempoolError::ReplacementUnderpriced {
                    old_fee: 2,
                    new_fee: 2,
                },
                PeerFault::Minor,
            ),
            (
                MempoolError::InsufficientBalance {
                    needed: 2,
                    available: 1,
                },
                PeerFault::Minor,
            ),
            (MempoolError::Overflow, PeerFault::Minor),
            (MempoolError::FeeTooLow { fee: 0, min: 1 }, PeerFault::Minor),
            (MempoolError::Full { lowest_fee: 3 }, PeerFault::None),
            (
                MempoolError::State(StateError::Tree("gone".into())),
                PeerFault::None,
            ),
        ];
        let labels: BTreeSet<&str> = reasons.iter().map(|(e, _)| e.label()).collect();
        assert_eq!(labels.len(), reasons.len());
        for (error, fault) in &reasons {
            assert_eq!(error.peer_fault(), *fault, "{}", error.label());
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn a_full_pool_evicts_the_lowest_fee() {
        let keys: Vec<SecretKey> = (1..=9).map(key).collect();
        let state = funded(&keys.iter().collect::<Vec<_>>(), 1_000);
        let mut pool = pool();
        let max = pool.config().max_txs;
        for (i, k) in keys.iter().take(max).enumerate() {
            pool.insert(transfer(k, 0, 10 + i as u64, 1), &state)
                .expect("room");
        }
        let cheapest = transfer(&keys[0], 0, 10, 1).id();
        let err = pool
            .insert(transfer(&keys[max], 0, 10, 1), &state)
            .expect_err("does not pay more");
        assert!(matches!(err, MempoolError::Full { lowest_fee: 10 }));
        assert_eq!(err.peer_fault(), PeerFault::None);
        let richer = transfer(&keys[max], 0, 11, 1);
        pool.insert(richer.clone(), &state).expect("evicts");
        assert_eq!(pool.len(), max);
        assert!(!pool.contains(&cheapest));
        assert!(pool.contains(&richer.id()));
        assert_eq!(pool.counters().evicted, 1);
        pool.assert_invariants();
    }

    #[test]
    fn the_byte_bound_holds_and_may_take_several_evictions() {
        let keys: Vec<SecretKey> = (1..=5).map(key).collect();
        let state = funded(&keys.iter().collect::<Vec<_>>(), 1_000);
        let bond = |k: &SecretKey, fee: u64| signed(k, 0, fee, Payload::Bond { amount: 1 });
        let small = bond(&keys[0], 1).to_bytes().len();
        assert!(transfer_size() > small && transfer_size() <= 2 * small);
        let mut pool = pool_with(MempoolConfig {
            max_txs: 100,
            max_bytes: 3 * small,
            ..MempoolConfig::test()
        });
        for (i, k) in keys.iter().take(3).enumerate() {
            pool.insert(bond(k, 2 + i as u64), &state).expect("room");
        }
        assert_eq!(pool.bytes(), 3 * small);
        let err = pool
            .insert(bond(&keys[3], 2), &state)
            .expect_err("full in bytes");
        assert!(matches!(err, MempoolError::Full { lowest_fee: 2 }));
        // A transfer is larger than a bond: it takes the room of the two cheapest.
        let big = transfer(&keys[4], 0, 50, 1);
        pool.insert(big.clone(), &state).expect("evicts two");
        assert_eq!(pool.counters().evicted, 2);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.bytes(), small + transfer_size());
        assert!(pool.contains(&bond(&keys[2], 4).id()));
        pool.assert_invariants();
    }

    #[test]
    fn evicting_a_transaction_drops_its_senders_later_nonces() {
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let state = funded(&[&alice, &bob, &carol], 1_000);
        let mut pool = pool_with(MempoolConfig {
            max_txs: 4,
            ..MempoolConfig::test()
        });
        // Alice's nonce 0 is the cheapest; her nonces 1 and 2 pay well but depend on it.
        pool.insert(transfer(&alice, 0, 2, 1), &state).expect("a0");
        pool.insert(transfer(&alice, 1, 50, 1), &state).expect("a1");
        pool.insert(transfer(&alice, 2, 50, 1), &state).expect("a2");
        pool.insert(transfer(&bob, 0, 5, 1), &state).expect("b0");
        pool.insert(transfer(&carol, 0, 3, 1), &state)
            .expect("evicts alice");
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.counters().evicted, 3);
        assert_eq!(pool.pending_nonce(&alice.public_key()), None);
        pool.assert_invariants();
    }

    #[test]
    fn a_senders_own_earlier_nonces_are_never_evicted_for_it() {
        let (alice, bob) = (key(1), key(2));
        let state = funded(&[&alice, &bob], 1_000);
        let mut pool = pool_with(MempoolConfig {
            max_txs: 2,
            ..MempoolConfig::test()
        });
        pool.insert(transfer(&alice, 0, 2, 1), &state).expect("a0");
        pool.insert(transfer(&bob, 0, 5, 1), &state).expect("b0");
        let err = pool
            .insert(transfer(&alice, 1, 9, 1), &state)
            .expect_err("would evict its own nonce 0");
        assert!(matches!(err, MempoolError::Full { lowest_fee: 2 }));
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.counters().evicted, 0);
    }

    #[test]
    fn reap_orders_nonces_within_a_sender_and_fees_across_senders() {
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let state = funded(&[&alice, &bob, &carol], 1_000);
        let mut pool = pool();
        let a0 = transfer(&alice, 0, 2, 1);
        let a1 = transfer(&alice, 1, 30, 1);
        let b0 = transfer(&bob, 0, 10, 1);
        let b1 = transfer(&bob, 1, 1, 1);
        let c0 = transfer(&carol, 0, 5, 1);
        // Inserted out of order: nonce 1 before nonce 0.
        for tx in [&a1, &a0, &b1, &b0, &c0] {
            pool.insert(tx.clone(), &state).expect("admitted");
        }
        let reaped = pool.reap(100, usize::MAX, &state).expect("state");
        // b0 (10) first; then c0 (5) over a0 (2); a0 unlocks a1 (30); b1 (1) last.
        assert_eq!(reaped, vec![b0, c0, a0, a1, b1]);
        assert_eq!(
            pool.reap(100, usize::MAX, &state).expect("state"),
            reaped,
            "deterministic"
        );
    }

    #[test]
    fn reap_ties_break_by_lowest_id() {
        let (alice, bob) = (key(1), key(2));
        let state = funded(&[&alice, &bob], 1_000);
        let mut pool = pool();
        let a = transfer(&alice, 0, 7, 1);
        let b = transfer(&bob, 0, 7, 1);
        pool.insert(a.clone(), &state).expect("a");
        pool.insert(b.clone(), &state).expect("b");
        let mut expected = vec![a, b];
        expected.sort_by_key(SignedTransaction::id);
        assert_eq!(pool.reap(10, usize::MAX, &state).expect("state"), expected);
    }

    #[test]
    fn reap_leaves_gaps_out_and_respects_its_bounds() {
        let (alice, bob) = (key(1), key(2));
        let state = funded(&[&alice, &bob], 1_000);
        let mut pool = pool();
        let a0 = transfer(&alice, 0, 9, 1);
        let a1 = transfer(&alice, 1, 8, 1);
        let a3 = transfer(&alice, 3, 50, 1);
        let b2 = transfer(&bob, 2, 50, 1);
        for tx in [&a0, &a1, &a3, &b2] {
            pool.insert(tx.clone(), &state).expect("admitted");
        }
        assert_eq!(
            pool.reap(100, usize::MAX, &state).expect("state"),
            vec![a0.clone(), a1]
        );
        assert_eq!(
            pool.reap(1, usize::MAX, &state).expect("state"),
            vec![a0.clone()]
        );
        let size = transfer_size();
        assert_eq!(
            pool.reap(100, 2 * size - 1, &state).expect("state"),
            vec![a0]
        );
        assert!(pool.reap(0, usize::MAX, &state).expect("state").is_empty());
        assert!(pool.reap(100, size - 1, &state).expect("state").is_empty());
    }

    #[test]
    fn reap_stops_a_sender_at_what_its_balance_covers() {
        let alice = key(1);
        let mut state = funded(&[&alice], 100);
        let mut pool = pool();
        let a0 = transfer(&alice, 0, 10, 40);
        pool.insert(a0.clone(), &state).expect("a0");
        pool.insert(transfer(&alice, 1, 10, 40), &state)
            .expect("a1");
        // The balance shrank since (a block this pool has not been told about yet).
        state.insert(
            alice.public_key(),
            Account {
                balance: 60,
                nonce: 0,
            },
        );
        assert_eq!(pool.reap(10, usize::MAX, &state).expect("state"), vec![a0]);
    }

    #[test]
    fn update_removes_committed_transactions_and_used_nonces() {
        let (alice, bob) = (key(1), key(2));
        let mut state = funded(&[&alice, &bob], 1_000);
        let mut pool = pool();
        let a0 = transfer(&alice, 0, 2, 10);
        let a1 = transfer(&alice, 1, 2, 10);
        let a2 = transfer(&alice, 2, 2, 10);
        let b0 = transfer(&bob, 0, 2, 10);
        for tx in [&a0, &a1, &a2, &b0] {
            pool.insert(tx.clone(), &state).expect("admitted");
        }
        // The block holds a0 and, instead of our a1, another nonce-1 transaction of Alice's.
        let other_a1 = transfer(&alice, 1, 3, 10);
        state.insert(
            alice.public_key(),
            Account {
                balance: 1_000 - 12 - 13,
                nonce: 2,
            },
        );
        pool.update(&[a0.clone(), other_a1], &state).expect("state");
        assert!(!pool.contains(&a0.id()));
        assert!(!pool.contains(&a1.id()));
        assert!(pool.contains(&a2.id()));
        assert!(pool.contains(&b0.id()));
        assert_eq!(pool.counters().committed, 1);
        assert_eq!(pool.counters().dropped_after_commit, 1);
        assert_eq!(pool.pending_nonce(&alice.public_key()), Some(3));
        assert_eq!(
            pool.reap(10, usize::MAX, &state).expect("state"),
            vec![a2, b0]
        );
        pool.assert_invariants();
    }

    #[test]
    fn update_drops_what_the_new_balance_no_longer_covers() {
        let alice = key(1);
        let mut state = funded(&[&alice], 100);
        let mut pool = pool();
        let a0 = transfer(&alice, 0, 10, 20);
        let a1 = transfer(&alice, 1, 10, 20);
        let a2 = transfer(&alice, 2, 10, 5);
        for tx in [&a0, &a1, &a2] {
            pool.insert(tx.clone(), &state).expect("admitted");
        }
        // Another node's block spent most of the balance with a different nonce-0 transaction.
        state.insert(
            alice.public_key(),
            Account {
                balance: 40,
                nonce: 0,
            },
        );
        pool.update(&[], &state).expect("state");
        // a0 (30) fits; a1 would make 60: dropped, and a2 after it even though it would fit.
        assert_eq!(pool.len(), 1);
        assert!(pool.contains(&a0.id()));
        assert_eq!(pool.counters().dropped_after_commit, 2);
        pool.assert_invariants();
    }

    #[test]
    fn failed_transactions_are_removed_with_their_later_nonces() {
        let (alice, bob) = (key(1), key(2));
        let state = funded(&[&alice, &bob], 1_000);
        let mut pool = pool();
        let a0 = signed(&alice, 0, 2, Payload::Unbond { amount: 5 });
        let a1 = transfer(&alice, 1, 2, 1);
        let b0 = transfer(&bob, 0, 2, 1);
        for tx in [&a0, &a1, &b0] {
            pool.insert(tx.clone(), &state).expect("admitted");
        }
        assert_eq!(pool.remove_failed([&a0.id(), &TxHash::ZERO]), 2);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.counters().failed, 2);
        pool.assert_invariants();
    }

    #[test]
    fn pending_nonce_follows_the_contiguous_run_from_the_account_nonce() {
        let alice = key(1);
        let mut state = funded(&[&alice], 1_000);
        state.insert(
            alice.public_key(),
            Account {
                balance: 1_000,
                nonce: 3,
            },
        );
        let mut pool = pool();
        assert_eq!(pool.pending_nonce(&alice.public_key()), None);
        pool.insert(transfer(&alice, 5, 2, 1), &state).expect("5");
        assert_eq!(pool.pending_nonce(&alice.public_key()), Some(3));
        pool.insert(transfer(&alice, 3, 2, 1), &state).expect("3");
        pool.insert(transfer(&alice, 4, 2, 1), &state).expect("4");
        assert_eq!(pool.pending_nonce(&alice.public_key()), Some(6));
    }

    #[test]
    fn counters_track_every_outcome() {
        let (alice, bob) = (key(1), key(2));
        let mut state = funded(&[&alice, &bob], 1_000);
        let mut pool = pool_with(MempoolConfig {
            max_txs: 2,
            ..MempoolConfig::test()
        });
        let a0 = transfer(&alice, 0, 2, 1);
        pool.insert(a0.clone(), &state).expect("accepted");
        pool.insert(transfer(&alice, 0, 3, 1), &state)
            .expect("replaced");
        pool.insert(transfer(&bob, 0, 2, 1), &state)
            .expect("accepted");
        pool.insert(transfer(&bob, 1, 9, 1), &state)
            .expect_err("full: own earlier nonce");
        pool.insert(transfer(&alice, 1, 9, 1), &state)
            .expect("evicts bob's nonce 0");
        let a0_now = transfer(&alice, 0, 3, 1);
        state.insert(
            alice.public_key(),
            Account {
                balance: 996,
                nonce: 1,
            },
        );
        pool.update(&[a0_now], &state).expect("state");
        pool.insert(a0, &state).expect_err("replay");
        let expected = MempoolCounters {
            accepted: 4,
            replaced: 1,
            evicted: 1,
            committed: 1,
            dropped_after_commit: 0,
            failed: 0,
            rejected: BTreeMap::from([("full", 1), ("nonce_replay", 1)]),
        };
        assert_eq!(pool.counters(), &expected);
    }

    /// Random inserts (some forged, some batched), commits of reaped blocks, commits from
    /// elsewhere and failures; the invariants hold after every step. Returns a trace of every
    /// outcome, to compare two runs.
    fn simulate(seed: u64, steps: usize) -> (Vec<String>, MempoolCounters) {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys: Vec<SecretKey> = (1..=6).map(key).collect();
        let mut state = funded(&keys.iter().collect::<Vec<_>>(), 2_000);
        let size = transfer_size();
        let mut pool = pool_with(MempoolConfig {
            max_txs: 12,
            max_bytes: 10 * size,
            max_nonce_gap: 3,
            min_fee: 1,
            replace_bump_percent: 10,
        });
        let mut trace = Vec::new();
        let random_tx = |rng: &mut StdRng, state: &HashMap<PublicKey, Account>| {
            let from = &keys[rng.random_range(0..keys.len())];
            let account = state.account(&from.public_key()).unwrap_or_default();
            let nonce = (account.nonce + rng.random_range(0..6)).saturating_sub(1);
            let mut tx = transfer(
                from,
                nonce,
                rng.random_range(0..30),
                rng.random_range(0..400),
            );
            if rng.random_bool(0.05) {
                tx.signature = tx.tx.clone().sign(&keys[0]).signature;
            }
            tx
        };
        for _ in 0..steps {
            match rng.random_range(0..10) {
                0..=4 => {
                    let tx = random_tx(&mut rng, &state);
                    let outcome = pool.insert(tx, &state).map_err(|e| e.label());
                    trace.push(format!("{outcome:?}"));
                }
                5 | 6 => {
                    let n = rng.random_range(1..5);
                    let txs = (0..n).map(|_| random_tx(&mut rng, &state)).collect();
                    for outcome in pool.insert_batch(txs, &state) {
                        trace.push(format!("{:?}", outcome.map_err(|e| e.label())));
                    }
                }
                7 | 8 => {
                    let max_txs = rng.random_range(0..6);
                    let max_bytes = rng.random_range(0..6 * size);
                    let block = pool.reap(max_txs, max_bytes, &state).expect("state");
                    assert!(block.len() <= max_txs);
                    assert!(block.iter().map(|t| t.to_bytes().len()).sum::<usize>() <= max_bytes);
                    for tx in &block {
                        let account = state.entry(tx.tx.sender).or_default();
                        assert_eq!(tx.tx.nonce, account.nonce, "reaped in nonce order");
                        let cost = tx.tx.fee + tx.tx.payload.spend();
                        assert!(cost <= account.balance, "reaped within the balance");
                        account.balance -= cost;
                        account.nonce += 1;
                    }
                    // Now and then a transaction from elsewhere uses a nonce and balance too.
                    if rng.random_bool(0.3) {
                        let from = keys[rng.random_range(0..keys.len())].public_key();
                        let account = state.entry(from).or_default();
                        account.nonce += 1;
                        account.balance = account.balance.saturating_sub(rng.random_range(0..900));
                    }
                    pool.update(&block, &state).expect("state");
                    trace.push(format!("block of {}", block.len()));
                    for (sender, queue) in &pool.queues {
                        let account = state.account(sender).expect("state");
                        let pending: u64 = queue.txs.values().map(|id| pool.entries[id].cost).sum();
                        assert!(pending <= account.balance, "pending costs fit the balance");
                        assert!(
                            queue.txs.keys().all(|n| *n >= account.nonce),
                            "no used nonce"
                        );
                    }
                }
                _ => {
                    let block = pool.reap(3, usize::MAX, &state).expect("state");
                    if let Some(failed) = block.first() {
                        pool.remove_failed([&failed.id()]);
                        trace.push("failed".to_string());
                    }
                }
            }
            pool.assert_invariants();
        }
        (trace, pool.counters().clone())
    }

    #[test]
    fn random_operations_keep_every_invariant() {
        let (trace, counters) = simulate(7, 2_000);
        assert_eq!(simulate(7, 2_000).0, trace, "deterministic for a seed");
        // The run reached every path it means to check.
        assert!(counters.accepted > 0);
        assert!(counters.replaced > 0);
        assert!(counters.evicted > 0);
        assert!(counters.committed > 0);
        assert!(counters.dropped_after_commit > 0);
        assert!(counters.failed > 0);
        for label in [
            "bad_signature",
            "nonce_replay",
            "nonce_gap",
            "insufficient_balance",
            "fee_too_low",
            "full",
        ] {
            assert!(counters.rejected.contains_key(label), "{label} reached");
        }
    }
}

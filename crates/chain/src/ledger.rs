//! The ledger: the committed chain on a [`Store`], and the one place blocks are validated,
//! built and committed.
//!
//! # Design
//! Validation ([`Ledger::execute`]) applies a block to an overlay of the tip's state and yields
//! an [`Executed`] block: the block, its hash, and the storage writes of its state. Nothing is
//! written until [`Ledger::commit`], which writes the block, its commit certificate, its indexes,
//! its state and the new tip in one atomic batch. A crash at any moment therefore leaves the store
//! at the previous or the next height, never in between; [`Ledger::open`] checks it.
//!
//! # Storage layout
//! - `Blocks`: height (8 bytes, big-endian) → encoded block (height 0 holds the genesis header).
//! - `Commits`: height → encoded commit certificate of that block.
//! - `BlockHashes`: block hash → height.
//! - `Txs`: transaction id → height (8 bytes) and index in the block (4 bytes), big-endian.
//! - `StateNodes`, `StateValues`: the state tree (see [`crate::state`]).
//! - `Meta`: `genesis_hash` (32 bytes) and `tip` (height).

use std::collections::{BTreeMap, HashSet};

use storage::keys::{height_key, parse_height_key};
use storage::{Column, Store, WriteBatch};
use types::codec::{Decode, Encode};
use types::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
use types::{
    Account, BatchVerifier, Block, BlockHash, ChainId, Commit, Domain, Genesis, Hash, Header,
    PublicKey, SignedTransaction, TxHash, ValidatorSet, merkle_root_of_txs,
};

use crate::error::{BlockError, CommitError, LedgerError, StateError, TxError};
use crate::execute::{BlockContext, apply_tx, begin_block, end_block};
use crate::params::MAX_CLOCK_DRIFT_MS;
use crate::state::{Overlay, StateKey, StateProof, TreeStore};

const META_GENESIS_HASH: &[u8] = b"genesis_hash";
const META_TIP: &[u8] = b"tip";

/// A block that passed validation, with the writes that commit it.
#[derive(Debug)]
pub struct Executed {
    /// The block.
    pub block: Block,
    /// Its hash.
    pub hash: BlockHash,
    /// The validator set after it.
    pub validators_after: ValidatorSet,
    state_writes: WriteBatch,
    tip_before: BlockHash,
}

/// A block built by [`Ledger::propose`], and the candidates it left out.
#[derive(Debug)]
pub struct Proposed {
    /// The block, already validated.
    pub executed: Executed,
    /// Candidates refused, with the reason (the mempool drops them).
    pub skipped: Vec<(TxHash, TxError)>,
}

/// Where a committed transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLocation {
    /// Height of its block.
    pub height: u64,
    /// Index in the block.
    pub index: u32,
}

/// Counts of what the ledger did and refused.
#[derive(Debug, Clone, Default)]
pub struct LedgerCounters {
    /// Blocks committed since open.
    pub blocks_committed: u64,
    /// Transactions committed since open.
    pub txs_committed: u64,
    /// Blocks refused, by [`BlockError::label`].
    pub blocks_rejected: BTreeMap<&'static str, u64>,
}

/// The committed chain.
pub struct Ledger<S: Store> {
    store: S,
    chain_id: ChainId,
    genesis_hash: Hash,
    tip: Header,
    tip_hash: BlockHash,
    validators: ValidatorSet,
    counters: LedgerCounters,
}

impl<S: Store> Ledger<S> {
    /// Opens the chain in `store`, writing genesis first if the store is empty. Fails if the
    /// store holds another chain, or if its tip and state disagree.
    pub fn open(store: S, genesis: &Genesis) -> Result<Self, LedgerError> {
        let given = genesis.hash();
        match store.get(Column::Meta, META_GENESIS_HASH)? {
            None => write_genesis(&store, genesis)?,
            Some(bytes) => {
                let stored = Hash::from_bytes(&bytes).map_err(|source| LedgerError::Decode {
                    what: "genesis hash",
                    source,
                })?;
                if stored != given {
                    return Err(LedgerError::GenesisMismatch { stored, given });
                }
            }
        }
        let tip_bytes = store
            .get(Column::Meta, META_TIP)?
            .ok_or_else(|| LedgerError::Corrupt("genesis hash stored but no tip".into()))?;
        let height = parse_height_key(&tip_bytes)
            .ok_or_else(|| LedgerError::Corrupt("tip is not a height".into()))?;
        let block = read_block(&store, height)?
            .ok_or_else(|| LedgerError::Corrupt(format!("tip block {height} is missing")))?;
        let tip = block.header;
        let tree = TreeStore::new(&store);
        let root = tree.root(height)?;
        if root != tip.state_root {
            return Err(LedgerError::Corrupt(format!(
                "state root at height {height} is {root}, the header says {}",
                tip.state_root
            )));
        }
        let validators = tree.validators(height)?;
        let tip_hash = tip.hash();
        Ok(Ledger {
            store,
            chain_id: genesis.chain_id.clone(),
            genesis_hash: given,
            tip,
            tip_hash,
            validators,
            counters: LedgerCounters::default(),
        })
    }

    /// The chain id.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// The header of the last committed block.
    pub fn tip(&self) -> &Header {
        &self.tip
    }

    /// The hash of the last committed block.
    pub fn tip_hash(&self) -> BlockHash {
        self.tip_hash
    }

    /// The height of the last committed block.
    pub fn height(&self) -> u64 {
        self.tip.height
    }

    /// The validator set that votes on the next block.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The validator set that voted on block `height` (the state after `height - 1`).
    pub fn validators_for(&self, height: u64) -> Result<ValidatorSet, StateError> {
        TreeStore::new(&self.store).validators(height.saturating_sub(1))
    }

    /// The store (for other columns: WAL, peers, bans).
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Counters since open.
    pub fn counters(&self) -> &LedgerCounters {
        &self.counters
    }

    /// An account at the tip.
    pub fn account(&self, key: &PublicKey) -> Result<Account, StateError> {
        TreeStore::new(&self.store).account(key, self.tip.height)
    }

    /// Whether `offender` was already slashed for an offence at `height` (as of the tip).
    pub fn was_slashed(&self, offender: PublicKey, height: u64) -> Result<bool, StateError> {
        Ok(TreeStore::new(&self.store)
            .get::<u64>(&StateKey::Slashed { offender, height }, self.tip.height)?
            .is_some())
    }

    /// An account at the tip with its Merkle proof against the tip's state root.
    pub fn prove_account(&self, key: &PublicKey) -> Result<StateProof, StateError> {
        TreeStore::new(&self.store).prove(&StateKey::Account(*key), self.tip.height)
    }

    /// The block at `height`.
    pub fn block(&self, height: u64) -> Result<Option<Block>, LedgerError> {
        read_block(&self.store, height)
    }

    /// The block with hash `hash`.
    pub fn block_by_hash(&self, hash: &BlockHash) -> Result<Option<Block>, LedgerError> {
        match self.store.get(Column::BlockHashes, &hash.0)? {
            None => Ok(None),
            Some(bytes) => {
                let height = parse_height_key(&bytes)
                    .ok_or_else(|| LedgerError::Corrupt("block hash index".into()))?;
                self.block(height)
            }
        }
    }

    /// The commit certificate of block `height`.
    pub fn commit_at(&self, height: u64) -> Result<Option<Commit>, LedgerError> {
        match self.store.get(Column::Commits, &height_key(height))? {
            None => Ok(None),
            Some(bytes) => {
                Commit::from_bytes(&bytes)
                    .map(Some)
                    .map_err(|source| LedgerError::Decode {
                        what: "commit",
                        source,
                    })
            }
        }
    }

    /// Where a committed transaction is.
    pub fn tx_location(&self, id: &TxHash) -> Result<Option<TxLocation>, LedgerError> {
        match self.store.get(Column::Txs, &id.0)? {
            None => Ok(None),
            Some(bytes) if bytes.len() == 12 => {
                let mut height = [0u8; 8];
                height.copy_from_slice(&bytes[..8]);
                let mut index = [0u8; 4];
                index.copy_from_slice(&bytes[8..]);
                Ok(Some(TxLocation {
                    height: u64::from_be_bytes(height),
                    index: u32::from_be_bytes(index),
                }))
            }
            Some(_) => Err(LedgerError::Corrupt("transaction index entry".into())),
        }
    }

    /// Checks that `commit` proves block `hash` at `height` final: precommits of more than
    /// two thirds of the stake of the set that voted on it.
    pub fn verify_commit(
        &self,
        commit: &Commit,
        hash: &BlockHash,
        height: u64,
    ) -> Result<(), LedgerError> {
        let set = self.validators_for(height)?;
        Ok(verify_commit(&self.chain_id, &set, commit, hash, height)?)
    }

    /// Validates `block` as the next block, at local time `now_ms`.
    pub fn execute(&mut self, block: Block, now_ms: u64) -> Result<Executed, BlockError> {
        let result = self.execute_inner(block, now_ms);
        if let Err(e) = &result {
            *self.counters.blocks_rejected.entry(e.label()).or_default() += 1;
        }
        result
    }

    fn execute_inner(&self, block: Block, now_ms: u64) -> Result<Executed, BlockError> {
        let header = &block.header;
        let expected = self.tip.height + 1;
        if header.height != expected {
            return Err(BlockError::WrongHeight {
                expected,
                got: header.height,
            });
        }
        if header.parent != self.tip_hash {
            return Err(BlockError::WrongParent {
                expected: self.tip_hash,
                got: header.parent,
            });
        }
        if header.time_ms <= self.tip.time_ms {
            return Err(BlockError::TimeNotIncreasing {
                time_ms: header.time_ms,
                parent_ms: self.tip.time_ms,
            });
        }
        if header.time_ms > now_ms.saturating_add(MAX_CLOCK_DRIFT_MS) {
            return Err(BlockError::TimeInFuture {
                time_ms: header.time_ms,
                now_ms,
            });
        }
        if self.validators.power(&header.proposer) == 0 {
            return Err(BlockError::UnknownProposer(header.proposer));
        }
        if header.validators_hash != self.validators.hash() {
            return Err(BlockError::ValidatorsHashMismatch);
        }
        if block.txs.len() > MAX_BLOCK_TXS {
            return Err(BlockError::TooLarge {
                what: "transaction count",
            });
        }
        if block.to_bytes().len() > MAX_BLOCK_BYTES {
            return Err(BlockError::TooLarge { what: "bytes" });
        }
        if header.txs_root != merkle_root_of_txs(&block.txs) {
            return Err(BlockError::TxsRootMismatch);
        }
        if header.last_commit_hash != Block::commit_hash(block.last_commit.as_ref()) {
            return Err(BlockError::LastCommitHashMismatch);
        }
        match (&block.last_commit, self.tip.height) {
            (None, 0) => {}
            (Some(_), 0) => return Err(BlockError::UnexpectedLastCommit),
            (None, _) => return Err(BlockError::MissingLastCommit),
            (Some(commit), parent_height) => {
                let set = self.validators_for(parent_height)?;
                verify_commit(&self.chain_id, &set, commit, &self.tip_hash, parent_height)?;
            }
        }
        let mut seen = HashSet::with_capacity(block.txs.len());
        for stx in &block.txs {
            let id = stx.id();
            if !seen.insert(id) {
                return Err(BlockError::DuplicateTx(id));
            }
        }
        if let Err(bad) = verify_tx_signatures(&block.txs) {
            return Err(BlockError::Tx {
                index: bad[0],
                source: TxError::BadSignature,
            });
        }

        let ctx = BlockContext {
            chain_id: self.chain_id.clone(),
            height: header.height,
            proposer: header.proposer,
        };
        let mut overlay = Overlay::new(&self.store, self.tip.height);
        begin_block(&mut overlay, ctx.height)?;
        for (index, stx) in block.txs.iter().enumerate() {
            apply_tx(&mut overlay, &ctx, stx).map_err(|source| BlockError::Tx { index, source })?;
        }
        let (validators_after, computed, state_writes) = close_block(overlay, ctx.height)?;
        if computed != header.state_root {
            return Err(BlockError::StateRootMismatch {
                header: header.state_root,
                computed,
            });
        }
        Ok(Executed {
            hash: block.hash(),
            block,
            validators_after,
            state_writes,
            tip_before: self.tip_hash,
        })
    }

    /// Builds the next block from the first [`MAX_BLOCK_TXS`] of `candidates` (in order of
    /// preference), leaving out those that fail and stopping at the block bounds. Signatures are
    /// checked in one batch.
    pub fn propose(
        &self,
        proposer: PublicKey,
        time_ms: u64,
        last_commit: Option<Commit>,
        candidates: impl IntoIterator<Item = SignedTransaction>,
    ) -> Result<Proposed, BlockError> {
        let height = self.tip.height + 1;
        let ctx = BlockContext {
            chain_id: self.chain_id.clone(),
            height,
            proposer,
        };
        let mut overlay = Overlay::new(&self.store, self.tip.height);
        begin_block(&mut overlay, height)?;
        let mut txs = Vec::new();
        let mut skipped = Vec::new();
        let candidates: Vec<SignedTransaction> =
            candidates.into_iter().take(MAX_BLOCK_TXS).collect();
        let bad_signatures: HashSet<usize> = match verify_tx_signatures(&candidates) {
            Ok(()) => HashSet::new(),
            Err(bad) => bad.into_iter().collect(),
        };
        // Header, list prefixes and the commit certificate, with room to spare.
        let mut bytes = 64 * 1024;
        for (index, stx) in candidates.into_iter().enumerate() {
            if txs.len() == MAX_BLOCK_TXS {
                break;
            }
            let size = stx.to_bytes().len();
            if bytes + size > MAX_BLOCK_BYTES {
                break;
            }
            if bad_signatures.contains(&index) {
                skipped.push((stx.id(), TxError::BadSignature));
                continue;
            }
            match apply_tx(&mut overlay, &ctx, &stx) {
                Ok(()) => {
                    bytes += size;
                    txs.push(stx);
                }
                Err(TxError::State(e)) => return Err(e.into()),
                Err(e) => skipped.push((stx.id(), e)),
            }
        }
        let (validators_after, state_root, state_writes) = close_block(overlay, height)?;
        let header = Header {
            height,
            parent: self.tip_hash,
            time_ms,
            proposer,
            txs_root: merkle_root_of_txs(&txs),
            state_root,
            validators_hash: self.validators.hash(),
            last_commit_hash: Block::commit_hash(last_commit.as_ref()),
        };
        let block = Block {
            header,
            txs,
            last_commit,
        };
        Ok(Proposed {
            executed: Executed {
                hash: block.hash(),
                block,
                validators_after,
                state_writes,
                tip_before: self.tip_hash,
            },
            skipped,
        })
    }

    /// Commits an executed block with its commit certificate, atomically.
    pub fn commit(&mut self, executed: Executed, commit: &Commit) -> Result<(), LedgerError> {
        if executed.tip_before != self.tip_hash {
            return Err(LedgerError::Block(BlockError::WrongParent {
                expected: self.tip_hash,
                got: executed.tip_before,
            }));
        }
        let height = executed.block.header.height;
        verify_commit(
            &self.chain_id,
            &self.validators,
            commit,
            &executed.hash,
            height,
        )?;
        let mut batch = executed.state_writes;
        let key = height_key(height);
        batch.put(Column::Blocks, key, executed.block.to_bytes());
        batch.put(Column::Commits, key, commit.to_bytes());
        batch.put(Column::BlockHashes, executed.hash.0, key);
        for (index, stx) in executed.block.txs.iter().enumerate() {
            let mut location = Vec::with_capacity(12);
            location.extend_from_slice(&key);
            location.extend_from_slice(&(index as u32).to_be_bytes());
            batch.put(Column::Txs, stx.id().0, location);
        }
        batch.put(Column::Meta, META_TIP, key);
        self.store.write(batch)?;
        self.counters.blocks_committed += 1;
        self.counters.txs_committed += executed.block.txs.len() as u64;
        self.tip = executed.block.header;
        self.tip_hash = executed.hash;
        self.validators = executed.validators_after;
        Ok(())
    }

    /// Validates and commits a block with its certificate (block sync, replay).
    pub fn apply(&mut self, block: Block, commit: &Commit, now_ms: u64) -> Result<(), LedgerError> {
        let executed = self.execute(block, now_ms)?;
        self.commit(executed, commit)
    }
}

/// The genesis header: height 0, the genesis hash as parent, the first validator (by key) as
/// nominal proposer, no transactions.
pub fn genesis_header(genesis: &Genesis, state_root: Hash, validators: &ValidatorSet) -> Header {
    Header {
        height: 0,
        parent: genesis.hash(),
        time_ms: genesis.time_ms,
        proposer: genesis.validators[0].key,
        txs_root: merkle_root_of_txs(&[]),
        state_root,
        validators_hash: validators.hash(),
        last_commit_hash: Block::commit_hash(None),
    }
}

/// Ends a block applied to `overlay`: records its height, and returns the validator set after
/// it, its state root and the writes that persist its state.
fn close_block<S: Store + ?Sized>(
    mut overlay: Overlay<'_, S>,
    height: u64,
) -> Result<(ValidatorSet, Hash, WriteBatch), StateError> {
    end_block(&mut overlay, height);
    let validators = overlay.validators()?;
    let mut writes = WriteBatch::new();
    let root = overlay
        .tree()
        .update(overlay.writes(), height, &mut writes)?;
    Ok((validators, root, writes))
}

fn write_genesis<S: Store>(store: &S, genesis: &Genesis) -> Result<(), LedgerError> {
    let set = genesis
        .validator_set()
        .map_err(|source| LedgerError::Decode {
            what: "genesis validators",
            source,
        })?;
    let mut overlay = Overlay::new(store, 0);
    for account in &genesis.accounts {
        overlay.set_account(
            account.key,
            Account {
                balance: account.balance,
                nonce: 0,
            },
        );
    }
    overlay.set_validators(&set);
    overlay.set_height(0);
    let mut batch = WriteBatch::new();
    let root = overlay.tree().update(overlay.writes(), 0, &mut batch)?;
    let header = genesis_header(genesis, root, &set);
    let block = Block {
        header,
        txs: Vec::new(),
        last_commit: None,
    };
    let key = height_key(0);
    batch.put(Column::Blocks, key, block.to_bytes());
    batch.put(Column::BlockHashes, block.hash().0, key);
    batch.put(Column::Meta, META_GENESIS_HASH, genesis.hash().0);
    batch.put(Column::Meta, META_TIP, key);
    store.write(batch)?;
    Ok(())
}

fn read_block<S: Store>(store: &S, height: u64) -> Result<Option<Block>, LedgerError> {
    match store.get(Column::Blocks, &height_key(height))? {
        None => Ok(None),
        Some(bytes) => Block::from_bytes(&bytes)
            .map(Some)
            .map_err(|source| LedgerError::Decode {
                what: "block",
                source,
            }),
    }
}

/// Checks every transaction signature in one batch; the indexes of the bad ones.
fn verify_tx_signatures(txs: &[SignedTransaction]) -> Result<(), Vec<usize>> {
    let mut batch = BatchVerifier::new();
    for stx in txs {
        batch.push(
            &stx.tx.sender,
            Domain::Transaction,
            &stx.tx.chain_id,
            &stx.tx,
            &stx.signature,
        );
    }
    batch.verify()
}

/// Checks a commit certificate against the set that voted on the block.
pub fn verify_commit(
    chain: &ChainId,
    set: &ValidatorSet,
    commit: &Commit,
    hash: &BlockHash,
    height: u64,
) -> Result<(), CommitError> {
    if commit.height != height {
        return Err(CommitError::WrongHeight {
            expected: height,
            got: commit.height,
        });
    }
    if commit.block != *hash {
        return Err(CommitError::WrongBlock {
            expected: *hash,
            got: commit.block,
        });
    }
    let mut power = 0u64;
    let mut batch = BatchVerifier::new();
    for sig in &commit.signatures {
        let p = set.power(&sig.validator);
        if p == 0 {
            return Err(CommitError::UnknownSigner(sig.validator));
        }
        power += p;
        batch.push(
            &sig.validator,
            Domain::Vote,
            chain,
            &commit.vote_of(sig.validator),
            &sig.signature,
        );
    }
    if let Err(bad) = batch.verify() {
        return Err(CommitError::BadSignature(
            commit.signatures[bad[0]].validator,
        ));
    }
    if !set.is_quorum(power) {
        return Err(CommitError::NoQuorum {
            power,
            total: set.total_power(),
        });
    }
    Ok(())
}

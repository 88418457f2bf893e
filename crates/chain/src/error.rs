//! Typed errors of the chain: why a transaction, a block or a commit certificate is invalid.
//! Each has a stable label for metrics (`label()`), and the p2p layer can tell the peer that
//! sent it from an honest mistake (`is_peer_fault()`).

use storage::StoreError;
use types::{DecodeError, EvidenceError, Hash, PublicKey};

/// The stored state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// A stored record does not decode: the data directory is damaged.
    #[error(
        "state record {key} is corrupt ({source}); the data directory is damaged: restore a backup or resync"
    )]
    CorruptRecord {
        /// The record.
        key: String,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// The Merkle tree failed (a missing node means a damaged data directory).
    #[error("state tree: {0}")]
    Tree(String),
    /// A proof does not verify against the root.
    #[error("state proof does not verify: {0}")]
    BadProof(String),
}

/// Why a transaction cannot be applied to the state.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// Signed for another chain.
    #[error("transaction is for chain {got}, this is {expected}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The transaction's chain.
        got: String,
    },
    /// The signature does not verify.
    #[error("transaction signature does not verify")]
    BadSignature,
    /// The nonce was already used: a replay.
    #[error("nonce {got} already used (account nonce is {expected})")]
    NonceReplay {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The nonce is ahead of the account's: earlier transactions are missing.
    #[error("nonce {got} is ahead of the account nonce {expected}")]
    NonceGap {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The balance does not cover amount and fee.
    #[error("balance {available} does not cover {needed}")]
    InsufficientBalance {
        /// Amount plus fee.
        needed: u64,
        /// The sender's balance.
        available: u64,
    },
    /// An amount plus fee, or a credited balance, overflows.
    #[error("amount overflows")]
    Overflow,
    /// A transfer, bond or unbond of nothing.
    #[error("amount must be positive")]
    ZeroAmount,
    /// Unbond from an account that is not a validator.
    #[error("sender is not a validator")]
    NotValidator,
    /// Unbond of more than the stake.
    #[error("unbond of {amount} exceeds the stake of {stake}")]
    UnbondExceedsStake {
        /// The stake.
        stake: u64,
        /// The amount asked for.
        amount: u64,
    },
    /// The unbond would leave no validator with voting power.
    #[error("unbond would leave the validator set without voting power")]
    WouldHaltChain,
    /// A new validator cannot join a full set.
    #[error("the validator set is full")]
    ValidatorSetFull,
    /// The evidence is not a valid equivocation.
    #[error("invalid evidence: {0}")]
    Evidence(#[from] EvidenceError),
    /// The offence is older than the evidence window.
    #[error("evidence for height {height} is too old (oldest accepted: {oldest})")]
    EvidenceTooOld {
        /// Height of the offence.
        height: u64,
        /// Oldest height accepted now.
        oldest: u64,
    },
    /// The offence is not in the past.
    #[error("evidence for height {height} is not in the past")]
    EvidenceFromFuture {
        /// Height of the offence.
        height: u64,
    },
    /// The offender was not a validator at the offence's height.
    #[error("{offender} was not a validator at height {height}")]
    NotAValidatorThen {
        /// The accused.
        offender: PublicKey,
        /// Height of the offence.
        height: u64,
    },
    /// The offence was already punished.
    #[error("{offender} was already slashed for height {height}")]
    AlreadySlashed {
        /// The offender.
        offender: PublicKey,
        /// Height of the offence.
        height: u64,
    },
    /// The state cannot be read (a local fault, not the transaction's).
    #[error(transparent)]
    State(#[from] StateError),
}

impl TxError {
    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::WrongChain { .. } => "wrong_chain",
            Self::BadSignature => "bad_signature",
            Self::NonceReplay { .. } => "nonce_replay",
            Self::NonceGap { .. } => "nonce_gap",
            Self::InsufficientBalance { .. } => "insufficient_balance",
            Self::Overflow => "overflow",
            Self::ZeroAmount => "zero_amount",
            Self::NotValidator => "not_validator",
            Self::UnbondExceedsStake { .. } => "unbond_exceeds_stake",
            Self::WouldHaltChain => "would_halt_chain",
            Self::ValidatorSetFull => "validator_set_full",
            Self::Evidence(_) => "invalid_evidence",
            Self::EvidenceTooOld { .. } => "evidence_too_old",
            Self::EvidenceFromFuture { .. } => "evidence_from_future",
            Self::NotAValidatorThen { .. } => "not_a_validator_then",
            Self::AlreadySlashed { .. } => "already_slashed",
            Self::State(_) => "state_error",
        }
    }
}

/// Why a commit certificate does not prove a block final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// For another height.
    #[error("commit is for height {got}, expected {expected}")]
    WrongHeight {
        /// Expected height.
        expected: u64,
        /// The commit's height.
        got: u64,
    },
    /// For another block.
    #[error("commit is for block {got}, expected {expected}")]
    WrongBlock {
        /// Expected block.
        expected: Hash,
        /// The commit's block.
        got: Hash,
    },
    /// Signed by a key outside the validator set.
    #[error("commit signer {0} is not in the validator set")]
    UnknownSigner(PublicKey),
    /// A signature does not verify.
    #[error("commit signature of {0} does not verify")]
    BadSignature(PublicKey),
    /// The signers hold two thirds of the stake or less.
    #[error("commit signers hold {power} of {total} stake: not more than two thirds")]
    NoQuorum {
        /// Signers' stake.
        power: u64,
        /// Total stake.
        total: u64,
    },
}

/// Why a block is invalid.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// Not the next height.
    #[error("block height {got}, expected {expected}")]
    WrongHeight {
        /// The next height.
        expected: u64,
        /// The block's height.
        got: u64,
    },
    /// Its parent is not our tip.
    #[error("block parent {got} is not the tip {expected}")]
    WrongParent {
        /// The tip's hash.
        expected: Hash,
        /// The block's parent.
        got: Hash,
    },
    /// Its time is not after its parent's.
    #[error("block time {time_ms} ms is not after its parent's {parent_ms} ms")]
    TimeNotIncreasing {
        /// The block's time.
        time_ms: u64,
        /// The parent's time.
        parent_ms: u64,
    },
    /// Its time is too far ahead of the local clock.
    #[error(
        "block time {time_ms} ms is ahead of the local clock {now_ms} ms by more than the allowed drift"
    )]
    TimeInFuture {
        /// The block's time.
        time_ms: u64,
        /// The local clock.
        now_ms: u64,
    },
    /// Its proposer has no voting power.
    #[error("proposer {0} is not an active validator")]
    UnknownProposer(PublicKey),
    /// The header's validator set hash is not the current set's.
    #[error("header validator set hash does not match the current set")]
    ValidatorsHashMismatch,
    /// The header's transactions root does not match the body.
    #[error("header transactions root does not match the body")]
    TxsRootMismatch,
    /// The header's commit hash does not match the body.
    #[error("header last-commit hash does not match the body")]
    LastCommitHashMismatch,
    /// A block above height 1 without its parent's commit.
    #[error("block lacks the commit certificate of its parent")]
    MissingLastCommit,
    /// Block 1 with a commit (its parent is genesis, which has none).
    #[error("block 1 must not carry a commit certificate")]
    UnexpectedLastCommit,
    /// The parent's commit certificate is invalid.
    #[error("invalid commit certificate of the parent: {0}")]
    BadLastCommit(#[from] CommitError),
    /// More transactions or bytes than a block may hold.
    #[error("block exceeds its bounds ({what})")]
    TooLarge {
        /// Which bound.
        what: &'static str,
    },
    /// A transaction appears twice.
    #[error("transaction {0} appears twice in the block")]
    DuplicateTx(Hash),
    /// A transaction is invalid.
    #[error("transaction {index} is invalid: {source}")]
    Tx {
        /// Its position.
        index: usize,
        /// Why.
        source: TxError,
    },
    /// The header's state root is not the result of applying the block.
    #[error("header state root {header} differs from the computed {computed}")]
    StateRootMismatch {
        /// The header's root.
        header: Hash,
        /// The root computed by applying the block.
        computed: Hash,
    },
    /// The state cannot be read (a local fault, not the block's).
    #[error(transparent)]
    State(#[from] StateError),
}

impl BlockError {
    /// Every [`BlockError::label`], so metrics can show each reason from the start.
    pub const LABELS: [&'static str; 16] = [
        "wrong_height",
        "wrong_parent",
        "time_not_increasing",
        "time_in_future",
        "unknown_proposer",
        "validators_hash_mismatch",
        "txs_root_mismatch",
        "last_commit_hash_mismatch",
        "missing_last_commit",
        "unexpected_last_commit",
        "bad_last_commit",
        "too_large",
        "duplicate_tx",
        "invalid_tx",
        "state_root_mismatch",
        "state_error",
    ];

    /// A stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::WrongHeight { .. } => "wrong_height",
            Self::WrongParent { .. } => "wrong_parent",
            Self::TimeNotIncreasing { .. } => "time_not_increasing",
            Self::TimeInFuture { .. } => "time_in_future",
            Self::UnknownProposer(_) => "unknown_proposer",
            Self::ValidatorsHashMismatch => "validators_hash_mismatch",
            Self::TxsRootMismatch => "txs_root_mismatch",
            Self::LastCommitHashMismatch => "last_commit_hash_mismatch",
            Self::MissingLastCommit => "missing_last_commit",
            Self::UnexpectedLastCommit => "unexpected_last_commit",
            Self::BadLastCommit(_) => "bad_last_commit",
            Self::TooLarge { .. } => "too_large",
            Self::DuplicateTx(_) => "duplicate_tx",
            Self::Tx { .. } => "invalid_tx",
            Self::StateRootMismatch { .. } => "state_root_mismatch",
            Self::State(_) => "state_error",
        }
    }

    /// Whether the block itself is at fault (a peer that sent it misbehaved or is on another
    /// chain), as opposed to a local failure or a block that is merely not next.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(
            self,
            Self::State(_) | Self::WrongHeight { .. } | Self::WrongParent { .. }
        )
    }
}

/// Why the ledger cannot open or commit.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The state cannot be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The data directory holds another chain.
    #[error(
        "the data directory holds the chain with genesis {stored}, but the genesis file has hash {given}; use the right genesis file or another data directory"
    )]
    GenesisMismatch {
        /// The stored genesis hash.
        stored: Hash,
        /// The given file's hash.
        given: Hash,
    },
    /// Stored data contradicts itself.
    #[error("the data directory is inconsistent ({0}); restore a backup or resync from genesis")]
    Corrupt(String),
    /// A block to commit is invalid.
    #[error("invalid block: {0}")]
    Block(#[from] BlockError),
    /// A commit certificate is invalid.
    #[error("invalid commit certificate: {0}")]
    Commit(#[from] CommitError),
    /// Stored bytes do not decode.
    #[error("stored {what} does not decode ({source}); the data directory is damaged")]
    Decode {
        /// What was read.
        what: &'static str,
        /// Why it does not decode.
        source: DecodeError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lists_the_label_of_every_block_refusal_once() {
        let key = types::SecretKey::from_seed([1; 32]).public_key();
        let every = [
            BlockError::WrongHeight {
                expected: 2,
                got: 3,
            },
            BlockError::WrongParent {
                expected: Hash::ZERO,
                got: Hash::ZERO,
            },
            BlockError::TimeNotIncreasing {
                time_ms: 1,
                parent_ms: 1,
            },
            BlockError::TimeInFuture {
                time_ms: 9,
                now_ms: 1,
            },
            BlockError::UnknownProposer(key),
            BlockError::ValidatorsHashMismatch,
            BlockError::TxsRootMismatch,
            BlockError::LastCommitHashMismatch,
            BlockError::MissingLastCommit,
            BlockError::UnexpectedLastCommit,
            BlockError::BadLastCommit(CommitError::UnknownSigner(key)),
            BlockError::TooLarge { what: "txs" },
            BlockError::DuplicateTx(Hash::ZERO),
            BlockError::Tx {
                index: 0,
                source: TxError::ZeroAmount,
            },
            BlockError::StateRootMismatch {
                header: Hash::ZERO,
                computed: Hash::ZERO,
            },
            BlockError::State(StateError::Tree("gone".into())),
        ];
        let labels: Vec<&str> = every.iter().map(BlockError::label).collect();
        assert_eq!(labels, BlockError::LABELS);
        let distinct: std::collections::BTreeSet<&str> = labels.iter().copied().collect();
        assert_eq!(distinct.len(), labels.len(), "no label twice");
    }
}

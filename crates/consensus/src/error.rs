//! Errors of the consensus engine.

use thiserror::Error;
use types::Hash;

use crate::guard::GuardError;

/// Why the engine could not start or take an input.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The ledger could not be opened or written.
    #[error("ledger: {0}")]
    Ledger(#[from] chain::LedgerError),
    /// The store under the WAL or the guard failed.
    #[error("storage: {0}")]
    Store(#[from] storage::StoreError),
    /// The double-sign guard refused or could not be read.
    #[error("double-sign guard: {0}")]
    Guard(#[from] GuardError),
    /// A synced block is not for the height being decided.
    #[error("synced block at height {got} is not for the current height {current}")]
    NotCurrentHeight {
        /// The block's height.
        got: u64,
        /// The engine's height.
        current: u64,
    },
    /// A synced block's commit certificate names another block.
    #[error("the commit certificate names another block than the one it came with")]
    CommitMismatch,
    /// The core decided a block whose body this node does not hold.
    #[error("decided block {0} is not held")]
    DecidedBlockMissing(Hash),
    /// An inconsistency inside the engine (a message with no round, for example).
    #[error("internal consensus inconsistency")]
    Internal,
}

impl EngineError {
    /// A stable name for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ledger(_) => "ledger",
            Self::Store(_) => "storage",
            Self::Guard(_) => "sign_guard",
            Self::NotCurrentHeight { .. } => "not_current_height",
            Self::CommitMismatch => "commit_mismatch",
            Self::DecidedBlockMissing(_) => "decided_block_missing",
            Self::Internal => "internal",
        }
    }
}

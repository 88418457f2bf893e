//! Validate and apply blocks to the state, keep its Merkle root, and hold pending transactions
//! in a bounded mempool. No network and no clock of its own: time comes in as an argument.

pub mod error;
pub mod execute;
pub mod ledger;
pub mod mempool;
pub mod params;
pub mod state;
pub mod testkit;

pub use error::{BlockError, CommitError, LedgerError, StateError, TxError};
pub use ledger::{Executed, Ledger, LedgerCounters, Proposed, TxLocation};
pub use state::{StateKey, StateProof};

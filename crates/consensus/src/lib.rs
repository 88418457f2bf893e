//! BFT proof-of-stake consensus on Malachite's sans-IO Tendermint core.
//!
//! The core (`arc-malachitebft-core-consensus`, pinned exactly) decides; this crate supplies the
//! rest of the contract over our own types: the context (heights, block ids as values, Ed25519
//! votes and proposals over our canonical encoding, stake-weighted validator set and proposer
//! order), signing behind a persisted double-sign guard, the write-ahead log, block validity from
//! the ledger, blocks sent as signed parts, certificates published for liveness, synced blocks fed
//! with their commit certificates, and equivocation evidence turned into slashing transactions.
//!
//! No Malachite type appears in the public API. No clock, no network and no threads: the host
//! passes time and messages in and takes [`Output`]s out.

pub mod context;
pub mod engine;
pub mod error;
pub mod guard;
pub mod message;
pub mod wal;

pub use engine::{Engine, EngineConfig, EngineCounters, Output, Rejection, Timeouts};
pub use error::EngineError;
pub use message::ConsensusMessage;

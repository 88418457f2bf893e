//! Define the chain's data: transactions, blocks, votes, genesis, state records, their one
//! canonical encoding, hashes and Ed25519 signatures. No I/O.

pub mod account;
pub mod block;
pub mod chain_id;
pub mod codec;
pub mod crypto;
pub mod genesis;
pub mod hash;
pub mod limits;
pub mod tx;
pub mod vote;

pub use account::{Account, Validator, ValidatorSet};
pub use block::{Block, BlockHash, Header, merkle_root_of_txs};
pub use chain_id::ChainId;
pub use codec::{Decode, DecodeError, Encode};
pub use crypto::{BatchVerifier, Domain, PublicKey, SecretKey, Signature, SignatureError};
pub use genesis::{Genesis, GenesisAccount, GenesisError, GenesisValidator};
pub use hash::{Hash, Tag};
pub use tx::{Payload, SignedTransaction, Transaction, TxHash};
pub use vote::{
    Commit, CommitSig, Evidence, EvidenceError, Proposal, SignedProposal, SignedVote, Vote,
    VoteKind,
};

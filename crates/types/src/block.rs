//! Blocks: a header that commits to everything, and a body of transactions plus the parent's
//! commit certificate.

use crate::codec::{Decode, DecodeError, Encode, Reader, put_list, put_option};
use crate::crypto::PublicKey;
use crate::hash::{Hash, Tag, merkle_root};
use crate::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_TX_BYTES};
use crate::tx::SignedTransaction;
use crate::vote::Commit;

/// A block hash: the hash of its header.
pub type BlockHash = Hash;

/// The block header. Its hash names the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Height: genesis is 0, the first block 1.
    pub height: u64,
    /// Hash of the parent header (the genesis header's parent is the genesis document hash).
    pub parent: BlockHash,
    /// Proposer's clock, milliseconds since the Unix epoch; strictly increasing.
    pub time_ms: u64,
    /// The validator that proposed the block.
    pub proposer: PublicKey,
    /// Merkle root of the encoded signed transactions, in block order.
    pub txs_root: Hash,
    /// State root after applying this block.
    pub state_root: Hash,
    /// Hash of the validator set that votes on this block (the set in force before it).
    pub validators_hash: Hash,
    /// Hash of the body's commit certificate of the parent.
    pub last_commit_hash: Hash,
}

impl Header {
    /// The block hash.
    pub fn hash(&self) -> BlockHash {
        Hash::of(Tag::Header, self)
    }
}

impl Encode for Header {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.parent.encode_to(out);
        self.time_ms.encode_to(out);
        self.proposer.encode_to(out);
        self.txs_root.encode_to(out);
        self.state_root.encode_to(out);
        self.validators_hash.encode_to(out);
        self.last_commit_hash.encode_to(out);
    }
}

impl Decode for Header {
    const MAX_BYTES: usize = 8 + 32 + 8 + 32 + 4 * 32;
    const NAME: &'static str = "header";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Header {
            height: r.u64()?,
            parent: Hash::decode_from(r)?,
            time_ms: r.u64()?,
            proposer: PublicKey::decode_from(r)?,
            txs_root: Hash::decode_from(r)?,
            state_root: Hash::decode_from(r)?,
            validators_hash: Hash::decode_from(r)?,
            last_commit_hash: Hash::decode_from(r)?,
        })
    }
}

/// The Merkle root of encoded signed transactions, in order.
pub fn merkle_root_of_txs(txs: &[SignedTransaction]) -> Hash {
    let encoded: Vec<Vec<u8>> = txs.iter().map(Encode::to_bytes).collect();
    merkle_root(&encoded)
}

/// A block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Transactions, applied in order; any invalid one makes the block invalid.
    pub txs: Vec<SignedTransaction>,
    /// Commit certificate of the parent (`None` only for height 1, whose parent is genesis).
    pub last_commit: Option<Commit>,
}

impl Block {
    /// The block hash (its header's hash).
    pub fn hash(&self) -> BlockHash {
        self.header.hash()
    }

    /// The hash of a commit certificate as the header commits to it (also for none).
    pub fn commit_hash(commit: Option<&Commit>) -> Hash {
        let mut bytes = Vec::new();
        put_option(&mut bytes, commit);
        Hash::tagged(Tag::Commit, &[&bytes])
    }
}

impl Encode for Block {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.header.encode_to(out);
        put_list(out, &self.txs);
        put_option(out, self.last_commit.as_ref());
    }
}

/// Smallest encoding of a signed transaction (a bond with a one-byte chain id), used to bound
/// the declared transaction count by the bytes actually present.
const MIN_TX_BYTES: usize = 4 + 1 + 32 + 8 + 8 + 1 + 8 + 64;

impl Decode for Block {
    const MAX_BYTES: usize = MAX_BLOCK_BYTES;
    const NAME: &'static str = "block";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let header = Header::decode_from(r)?;
        let txs = r.list("block transactions", MAX_BLOCK_TXS, MIN_TX_BYTES)?;
        let last_commit = r.option("block last commit")?;
        Ok(Block {
            header,
            txs,
            last_commit,
        })
    }
}

// A full block of maximal transactions must fit the byte bound, or the two bounds disagree.
const _: () = assert!(MIN_TX_BYTES <= MAX_TX_BYTES);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain_id::ChainId;
    use crate::crypto::SecretKey;
    use crate::tx::{Payload, Transaction};

    fn block(txs: usize) -> Block {
        let key = SecretKey::from_seed([1; 32]);
        let txs: Vec<SignedTransaction> = (0..txs as u64)
            .map(|nonce| {
                Transaction {
                    chain_id: ChainId::new("t").expect("valid chain id"),
                    sender: key.public_key(),
                    nonce,
                    fee: 0,
                    payload: Payload::Bond { amount: 1 },
                }
                .sign(&key)
            })
            .collect();
        Block {
            header: Header {
                height: 1,
                parent: Hash::ZERO,
                time_ms: 1,
                proposer: key.public_key(),
                txs_root: merkle_root_of_txs(&txs),
                state_root: Hash::ZERO,
                validators_hash: Hash::ZERO,
                last_commit_hash: Block::commit_hash(None),
            },
            txs,
            last_commit: None,
        }
    }

    #[test]
    fn blocks_round_trip() {
        let b = block(3);
        assert_eq!(Block::from_bytes(&b.to_bytes()), Ok(b));
    }

    #[test]
    fn the_smallest_transaction_matches_min_tx_bytes() {
        assert_eq!(block(1).txs[0].to_bytes().len(), MIN_TX_BYTES);
    }

    #[test]
    fn the_block_hash_changes_with_every_header_field() {
        let b = block(0);
        let mut other = b.header.clone();
        other.time_ms += 1;
        assert_ne!(b.hash(), other.hash());
        let mut other = b.header.clone();
        other.state_root = Hash([1; 32]);
        assert_ne!(b.hash(), other.hash());
    }

    #[test]
    fn a_declared_transaction_count_beyond_the_bytes_is_rejected() {
        let mut bytes = block(0).header.to_bytes();
        bytes.extend_from_slice(&5u32.to_be_bytes());
        bytes.push(0);
        assert!(matches!(
            Block::from_bytes(&bytes),
            Err(DecodeError::UnexpectedEnd { .. })
        ));
    }
}

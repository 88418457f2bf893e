//! SHA-256 hashes with a domain tag per kind of object, and the binary Merkle root.
//!
//! # Design
//! SHA-256 (FIPS 180-4): the hash of the state tree (`jmt`'s SHA-256 tree) and of everything else
//! is the same function, it is hardware-accelerated on current x86 and ARM cores (the `sha2` crate
//! detects SHA-NI at run time), and every tool an operator might check a hash with knows it.
//! Every hash is `SHA-256(len(tag) || tag || data)` with a tag naming the kind of object, so bytes
//! of one kind can never be taken for another (a transaction id never equals a block hash of the
//! same bytes). The tags are listed in [`Tag`].

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::codec::{Decode, DecodeError, Encode, Reader};

/// The kinds of hashed objects; each tag is fixed forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Transaction id (over the unsigned transaction).
    Transaction,
    /// Block header.
    Header,
    /// Genesis document.
    Genesis,
    /// Merkle leaf.
    MerkleLeaf,
    /// Merkle inner node.
    MerkleNode,
    /// Root of an empty Merkle list.
    MerkleEmpty,
    /// Active validator set.
    ValidatorSet,
    /// Commit certificate.
    Commit,
    /// Evidence of misbehaviour.
    Evidence,
    /// Proposer selection draw.
    ProposerDraw,
    /// Write-ahead log record checksum.
    WalRecord,
    /// The exact bytes a validator signed (kept by its double-sign guard).
    SignedBytes,
}

impl Tag {
    /// The bytes of the tag.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::Transaction => b"xdp-node/tx",
            Self::Header => b"xdp-node/header",
            Self::Genesis => b"xdp-node/genesis",
            Self::MerkleLeaf => b"xdp-node/merkle-leaf",
            Self::MerkleNode => b"xdp-node/merkle-node",
            Self::MerkleEmpty => b"xdp-node/merkle-empty",
            Self::ValidatorSet => b"xdp-node/validator-set",
            Self::Commit => b"xdp-node/commit",
            Self::Evidence => b"xdp-node/evidence",
            Self::ProposerDraw => b"xdp-node/proposer-draw",
            Self::WalRecord => b"xdp-node/wal-record",
            Self::SignedBytes => b"xdp-node/signed-bytes",
        }
    }
}

/// A 32-byte SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash (the parent of the genesis header).
    pub const ZERO: Hash = Hash([0; 32]);

    /// `SHA-256(len(tag) || tag || parts...)`.
    pub fn tagged(tag: Tag, parts: &[&[u8]]) -> Hash {
        let tag = tag.as_bytes();
        let mut h = Sha256::new();
        h.update([tag.len() as u8]);
        h.update(tag);
        for part in parts {
            h.update(part);
        }
        Hash(h.finalize().into())
    }

    /// The hash of the canonical encoding of `value` under `tag`.
    pub fn of<T: Encode>(tag: Tag, value: &T) -> Hash {
        Hash::tagged(tag, &[&value.to_bytes()])
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", hex::encode(&self.0[..8]))
    }
}

/// Hex text that is not a 32-byte hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hex digits (a 32-byte hash)")]
pub struct ParseHashError;

impl FromStr for Hash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseHashError)?;
        Ok(Hash(out))
    }
}

impl Encode for Hash {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Hash {
    const MAX_BYTES: usize = 32;
    const NAME: &'static str = "hash";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Hash(r.array()?))
    }
}

/// The Merkle root of a list of leaves (RFC 6962 shape: the left subtree holds the largest power
/// of two below the count, so no leaf is ever duplicated and no two lists share a root).
pub fn merkle_root<T: AsRef<[u8]>>(leaves: &[T]) -> Hash {
    if leaves.is_empty() {
        return Hash::tagged(Tag::MerkleEmpty, &[]);
    }
    let hashes: Vec<Hash> = leaves
        .iter()
        .map(|leaf| Hash::tagged(Tag::MerkleLeaf, &[leaf.as_ref()]))
        .collect();
    subtree_root(&hashes)
}

fn subtree_root(hashes: &[Hash]) -> Hash {
    match hashes {
        [single] => *single,
        _ => {
            let split = hashes.len().next_power_of_two() / 2;
            let (left, right) = hashes.split_at(split);
            Hash::tagged(
                Tag::MerkleNode,
                &[&subtree_root(left).0, &subtree_root(right).0],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_tagged_input_matches_the_standard_function() {
        let mut expected = Sha256::new();
        expected.update([11u8]);
        expected.update(b"xdp-node/tx");
        expected.update(b"abc");
        let expected: [u8; 32] = expected.finalize().into();
        assert_eq!(Hash::tagged(Tag::Transaction, &[b"abc"]).0, expected);
    }

    #[test]
    fn different_tags_give_different_hashes_of_the_same_bytes() {
        assert_ne!(
            Hash::tagged(Tag::Transaction, &[b"x"]),
            Hash::tagged(Tag::Header, &[b"x"])
        );
    }

    #[test]
    fn merkle_root_depends_on_order_count_and_content() {
        let a = merkle_root(&[b"a", b"b", b"c"]);
        assert_ne!(a, merkle_root(&[b"b", b"a", b"c"]));
        assert_ne!(a, merkle_root(&[b"a", b"b"]));
        assert_ne!(a, merkle_root(&[b"a", b"b", b"c", b"c"]));
        assert_eq!(a, merkle_root(&[b"a", b"b", b"c"]));
        let empty: [&[u8]; 0] = [];
        assert_ne!(merkle_root(&empty), merkle_root(&[b""]));
    }

    #[test]
    fn merkle_root_of_one_leaf_is_the_leaf_hash() {
        assert_eq!(merkle_root(&[b"x"]), Hash::tagged(Tag::MerkleLeaf, &[b"x"]));
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = Hash::tagged(Tag::Genesis, &[b"g"]);
        assert_eq!(h.to_string().parse::<Hash>(), Ok(h));
        assert_eq!("zz".parse::<Hash>(), Err(ParseHashError));
    }
}

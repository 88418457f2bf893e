//! Ed25519 keys and signatures over domain-separated bytes, single and batched verification.
//!
//! # Design
//! Verification follows ZIP-215 (`ed25519-zebra`): the rules are fully specified, and batch
//! verification accepts exactly the signatures single verification accepts. Consensus needs both:
//! a block valid on one node must be valid on every node, however each node checked it.
//!
//! Signed bytes are `len(domain) || domain || encode(chain id) || encode(message)`. A signature
//! therefore verifies only for one kind of message ([`Domain`]) on one chain.
//!
//! Public keys are refused at decoding unless they are the canonical encoding of a curve point of
//! large order: a small-order key would let anyone forge signatures for it, and a non-canonical
//! one would give one account two names.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_zebra::batch;
use ed25519_zebra::{SigningKey, VerificationKey, VerificationKeyBytes};
use rand_core::{CryptoRng, OsRng, RngCore};

use crate::chain_id::ChainId;
use crate::codec::{Decode, DecodeError, Encode, Reader};

/// The kinds of signed messages; a signature for one never verifies for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// A transaction.
    Transaction,
    /// A consensus vote (prevote or precommit).
    Vote,
    /// A consensus block proposal.
    Proposal,
    /// A part of a proposed block, signed by its proposer.
    BlockPart,
}

impl Domain {
    /// The domain separation tag, fixed forever.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Self::Transaction => b"xdp-node/sign/tx/v1",
            Self::Vote => b"xdp-node/sign/vote/v1",
            Self::Proposal => b"xdp-node/sign/proposal/v1",
            Self::BlockPart => b"xdp-node/sign/block-part/v1",
        }
    }
}

/// The exact bytes signed for `message` of kind `domain` on `chain`.
pub fn signing_bytes<T: Encode>(domain: Domain, chain: &ChainId, message: &T) -> Vec<u8> {
    let tag = domain.tag();
    let mut out = Vec::with_capacity(64 + tag.len());
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    chain.encode_to(&mut out);
    message.encode_to(&mut out);
    out
}

/// An Ed25519 public key: the canonical encoding of a point of large order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Checks that `bytes` are a canonical, large-order point encoding.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<PublicKey, DecodeError> {
        let point =
            CompressedEdwardsY(bytes)
                .decompress()
                .ok_or(DecodeError::InvalidPublicKey {
                    reason: "not a curve point",
                })?;
        if point.compress().to_bytes() != bytes {
            return Err(DecodeError::InvalidPublicKey {
                reason: "non-canonical encoding",
            });
        }
        if point.is_small_order() {
            return Err(DecodeError::InvalidPublicKey {
                reason: "small-order point",
            });
        }
        Ok(PublicKey(bytes))
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Checks `signature` over `message` of kind `domain` on `chain`.
    pub fn verify<T: Encode>(
        &self,
        domain: Domain,
        chain: &ChainId,
        message: &T,
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = VerificationKey::try_from(VerificationKeyBytes::from(self.0))
            .map_err(|_| SignatureError)?;
        key.verify(
            &ed25519_zebra::Signature::from_bytes(&signature.0),
            &signing_bytes(domain, chain, message),
        )
        .map_err(|_| SignatureError)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.0[..6]))
    }
}

impl FromStr for PublicKey {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| DecodeError::InvalidPublicKey {
            reason: "expected 64 hex digits",
        })?;
        PublicKey::from_bytes(bytes)
    }
}

impl Encode for PublicKey {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for PublicKey {
    const MAX_BYTES: usize = 32;
    const NAME: &'static str = "public key";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        PublicKey::from_bytes(r.array()?)
    }
}

/// An Ed25519 signature whose scalar half is canonical (below the group order).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Checks that the scalar half is canonical.
    pub fn from_bytes(bytes: [u8; 64]) -> Result<Signature, DecodeError> {
        let mut s = [0u8; 32];
        s.copy_from_slice(&bytes[32..]);
        if Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).is_none() {
            return Err(DecodeError::InvalidSignature);
        }
        Ok(Signature(bytes))
    }

    /// The 64 signature bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..6]))
    }
}

impl Encode for Signature {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Signature {
    const MAX_BYTES: usize = 64;
    const NAME: &'static str = "signature";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Signature::from_bytes(r.array()?)
    }
}

/// A signature that does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct SignatureError;

/// An Ed25519 signing key (the 32-byte seed).
#[derive(Clone)]
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl SecretKey {
    /// The key derived from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        let key = SigningKey::from(seed);
        let public = PublicKey(VerificationKeyBytes::from(&key).into());
        SecretKey { key, public }
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> SecretKey {
        SecretKey::generate_with(OsRng)
    }

    /// A fresh key from `rng` (seeded in tests and simulation).
    pub fn generate_with<R: RngCore + CryptoRng>(mut rng: R) -> SecretKey {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        SecretKey::from_seed(seed)
    }

    /// The seed, for writing the key file.
    pub fn seed(&self) -> [u8; 32] {
        self.key.into()
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs `message` of kind `domain` on `chain`.
    pub fn sign<T: Encode>(&self, domain: Domain, chain: &ChainId, message: &T) -> Signature {
        let signature = self.key.sign(&signing_bytes(domain, chain, message));
        Signature(signature.to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {:?})", self.public)
    }
}

/// Verifies many signatures at once; on failure, finds which ones are bad.
#[derive(Default)]
pub struct BatchVerifier {
    items: Vec<batch::Item>,
}

impl BatchVerifier {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues one signature; its index in the batch is the number queued before it.
    pub fn push<T: Encode>(
        &mut self,
        key: &PublicKey,
        domain: Domain,
        chain: &ChainId,
        message: &T,
        signature: &Signature,
    ) {
        let bytes = signing_bytes(domain, chain, message);
        self.items.push(batch::Item::from((
            VerificationKeyBytes::from(key.0),
            ed25519_zebra::Signature::from_bytes(&signature.0),
            &bytes[..],
        )));
    }

    /// Signatures queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Checks every queued signature. `Ok` if all verify, else the indexes of those that do not
    /// (found by checking each one alone after the batch failed).
    pub fn verify(self) -> Result<(), Vec<usize>> {
        let mut verifier = batch::Verifier::new();
        for item in &self.items {
            verifier.queue(item.clone());
        }
        if verifier.verify(OsRng).is_ok() {
            return Ok(());
        }
        let bad: Vec<usize> = self
            .items
            .into_iter()
            .enumerate()
            .filter(|(_, item)| item.clone().verify_single().is_err())
            .map(|(i, _)| i)
            .collect();
        if bad.is_empty() {
            // Unreachable under ZIP-215 (batch and single verification agree); kept total.
            return Ok(());
        }
        Err(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(id: &str) -> ChainId {
        ChainId::new(id).expect("valid chain id")
    }

    #[test]
    fn a_signature_verifies_only_for_its_domain_chain_and_message() {
        let key = SecretKey::from_seed([7; 32]);
        let sig = key.sign(Domain::Transaction, &chain("a"), &42u64);
        let pk = key.public_key();
        assert_eq!(
            pk.verify(Domain::Transaction, &chain("a"), &42u64, &sig),
            Ok(())
        );
        assert!(pk.verify(Domain::Vote, &chain("a"), &42u64, &sig).is_err());
        assert!(
            pk.verify(Domain::Transaction, &chain("b"), &42u64, &sig)
                .is_err()
        );
        assert!(
            pk.verify(Domain::Transaction, &chain("a"), &43u64, &sig)
                .is_err()
        );
        let other = SecretKey::from_seed([8; 32]).public_key();
        assert!(
            other
                .verify(Domain::Transaction, &chain("a"), &42u64, &sig)
                .is_err()
        );
    }

    #[test]
    fn small_order_and_non_canonical_keys_are_rejected() {
        // The identity point (y = 1) has order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::from_bytes(identity),
            Err(DecodeError::InvalidPublicKey {
                reason: "small-order point"
            })
        );
        // y = p + 1 encodes the same point as y = 1, non-canonically.
        let mut non_canonical = [0xffu8; 32];
        non_canonical[0] = 0xee;
        non_canonical[31] = 0x7f;
        assert!(PublicKey::from_bytes(non_canonical).is_err());
        assert!(PublicKey::from_bytes(SecretKey::from_seed([1; 32]).public_key().0).is_ok());
    }

    #[test]
    fn signatures_with_a_non_canonical_scalar_are_rejected() {
        let mut bytes = [0u8; 64];
        bytes[32..].copy_from_slice(&[0xff; 32]);
        assert_eq!(
            Signature::from_bytes(bytes),
            Err(DecodeError::InvalidSignature)
        );
    }

    #[test]
    fn batch_verification_names_the_bad_signatures() {
        let id = chain("a");
        let mut batch = BatchVerifier::new();
        for i in 0..8u64 {
            let key = SecretKey::from_seed([i as u8; 32]);
            let signed = if i == 3 || i == 6 { i + 100 } else { i };
            let sig = key.sign(Domain::Transaction, &id, &signed);
            batch.push(&key.public_key(), Domain::Transaction, &id, &i, &sig);
        }
        assert_eq!(batch.verify(), Err(vec![3, 6]));
    }

    #[test]
    fn batch_verification_accepts_a_valid_batch() {
        let id = chain("a");
        let mut batch = BatchVerifier::new();
        for i in 0..8u64 {
            let key = SecretKey::from_seed([i as u8; 32]);
            let sig = key.sign(Domain::Vote, &id, &i);
            batch.push(&key.public_key(), Domain::Vote, &id, &i, &sig);
        }
        assert_eq!(batch.len(), 8);
        assert_eq!(batch.verify(), Ok(()));
    }

    #[test]
    fn the_seed_recreates_the_same_key() {
        let key = SecretKey::generate();
        assert_eq!(
            SecretKey::from_seed(key.seed()).public_key(),
            key.public_key()
        );
    }
}

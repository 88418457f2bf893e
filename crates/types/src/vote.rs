//! Signed consensus messages (votes, proposals), commit certificates, and evidence of
//! equivocation built from them.
//!
//! The consensus engine drives these; the chain needs them too: a block carries the commit
//! certificate of its parent, and equivocation evidence slashes its author's stake.

use crate::chain_id::ChainId;
use crate::codec::{Decode, DecodeError, Encode, Reader, check_ascending, put_list, put_option};
use crate::crypto::{Domain, PublicKey, Signature, SignatureError};
use crate::hash::Hash;
use crate::limits::MAX_VALIDATORS;

/// The two voting steps of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VoteKind {
    /// First step: support for a proposal seen this round.
    Prevote,
    /// Second step: commitment to a block after a quorum of prevotes.
    Precommit,
}

/// A vote by one validator for a block (or for nil) at a height and round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// Block height.
    pub height: u64,
    /// Round within the height.
    pub round: u32,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The block voted for; `None` is a nil vote.
    pub block: Option<Hash>,
    /// The voter.
    pub validator: PublicKey,
}

impl Encode for Vote {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.round.encode_to(out);
        out.push(match self.kind {
            VoteKind::Prevote => 0,
            VoteKind::Precommit => 1,
        });
        put_option(out, self.block.as_ref());
        self.validator.encode_to(out);
    }
}

impl Decode for Vote {
    const MAX_BYTES: usize = 8 + 4 + 1 + 33 + 32;
    const NAME: &'static str = "vote";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Vote {
            height: r.u64()?,
            round: r.u32()?,
            kind: match r.u8()? {
                0 => VoteKind::Prevote,
                1 => VoteKind::Precommit,
                tag => {
                    return Err(DecodeError::InvalidTag {
                        what: "vote kind",
                        tag,
                    });
                }
            },
            block: r.option("vote block")?,
            validator: PublicKey::decode_from(r)?,
        })
    }
}

/// A vote with its author's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// Signature by `vote.validator` in [`Domain::Vote`].
    pub signature: Signature,
}

impl SignedVote {
    /// Checks the signature of the vote's validator.
    pub fn verify(&self, chain: &ChainId) -> Result<(), SignatureError> {
        self.vote
            .validator
            .verify(Domain::Vote, chain, &self.vote, &self.signature)
    }
}

impl Encode for SignedVote {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.vote.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for SignedVote {
    const MAX_BYTES: usize = Vote::MAX_BYTES + 64;
    const NAME: &'static str = "signed vote";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedVote {
            vote: Vote::decode_from(r)?,
            signature: Signature::decode_from(r)?,
        })
    }
}

/// A proposer's claim that `block` is its proposal for a height and round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Block height.
    pub height: u64,
    /// Round within the height.
    pub round: u32,
    /// The round of the polka this proposal re-proposes, if any.
    pub pol_round: Option<u32>,
    /// Hash of the proposed block.
    pub block: Hash,
    /// The proposer.
    pub proposer: PublicKey,
}

impl Encode for Proposal {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.round.encode_to(out);
        put_option(out, self.pol_round.as_ref());
        self.block.encode_to(out);
        self.proposer.encode_to(out);
    }
}

impl Decode for Proposal {
    const MAX_BYTES: usize = 8 + 4 + 5 + 32 + 32;
    const NAME: &'static str = "proposal";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Proposal {
            height: r.u64()?,
            round: r.u32()?,
            pol_round: r.option("proposal pol round")?,
            block: Hash::decode_from(r)?,
            proposer: PublicKey::decode_from(r)?,
        })
    }
}

/// A proposal with its author's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// Signature by `proposal.proposer` in [`Domain::Proposal`].
    pub signature: Signature,
}

impl SignedProposal {
    /// Checks the signature of the proposer.
    pub fn verify(&self, chain: &ChainId) -> Result<(), SignatureError> {
        self.proposal
            .proposer
            .verify(Domain::Proposal, chain, &self.proposal, &self.signature)
    }
}

impl Encode for SignedProposal {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.proposal.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for SignedProposal {
    const MAX_BYTES: usize = Proposal::MAX_BYTES + 64;
    const NAME: &'static str = "signed proposal";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedProposal {
            proposal: Proposal::decode_from(r)?,
            signature: Signature::decode_from(r)?,
        })
    }
}

/// One validator's precommit signature inside a [`Commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSig {
    /// The signer.
    pub validator: PublicKey,
    /// Its precommit signature for the commit's height, round and block.
    pub signature: Signature,
}

impl Encode for CommitSig {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.validator.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for CommitSig {
    const MAX_BYTES: usize = 96;
    const NAME: &'static str = "commit signature";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(CommitSig {
            validator: PublicKey::decode_from(r)?,
            signature: Signature::decode_from(r)?,
        })
    }
}

/// A commit certificate: precommits for one block at one height and round. Valid when its
/// signers hold more than two thirds of the stake (checked by the chain against its validator set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Height of the committed block.
    pub height: u64,
    /// Round in which it was committed.
    pub round: u32,
    /// Hash of the committed block.
    pub block: Hash,
    /// Signatures, strictly ascending by validator key.
    pub signatures: Vec<CommitSig>,
}

impl Commit {
    /// The precommit a signer of this commit signed.
    pub fn vote_of(&self, validator: PublicKey) -> Vote {
        Vote {
            height: self.height,
            round: self.round,
            kind: VoteKind::Precommit,
            block: Some(self.block),
            validator,
        }
    }
}

impl Encode for Commit {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.round.encode_to(out);
        self.block.encode_to(out);
        put_list(out, &self.signatures);
    }
}

impl Decode for Commit {
    const MAX_BYTES: usize = 8 + 4 + 32 + 4 + MAX_VALIDATORS * CommitSig::MAX_BYTES;
    const NAME: &'static str = "commit";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let commit = Commit {
            height: r.u64()?,
            round: r.u32()?,
            block: Hash::decode_from(r)?,
            signatures: r.list("commit signatures", MAX_VALIDATORS, CommitSig::MAX_BYTES)?,
        };
        check_ascending("commit signatures", &commit.signatures, |s| s.validator)?;
        Ok(commit)
    }
}

/// Proof that one validator signed two conflicting messages for the same height and round.
///
/// Canonical form: the encoding of the first message sorts strictly before that of the second,
/// so one offence has one encoding and one hash. (Two identical messages are no offence:
/// [`Evidence::check_conflict`] refuses them and their encoding does not decode.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// Two votes of the same kind for different blocks.
    DoubleVote {
        /// The lexicographically smaller vote.
        first: SignedVote,
        /// The other vote.
        second: SignedVote,
    },
    /// Two proposals for different blocks.
    DoubleProposal {
        /// The lexicographically smaller proposal.
        first: SignedProposal,
        /// The other proposal.
        second: SignedProposal,
    },
}

/// Why a pair of messages is not evidence of equivocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The two messages differ in author, height, round or kind.
    #[error("the two messages are not for the same author, height, round and kind")]
    NotConflicting,
    /// The two messages name the same block.
    #[error("the two messages agree: no equivocation")]
    SameValue,
    /// One of the signatures does not verify.
    #[error("a signature of the evidence does not verify")]
    BadSignature,
}

impl Evidence {
    /// Evidence from two conflicting signed votes, in canonical order.
    pub fn double_vote(a: SignedVote, b: SignedVote) -> Evidence {
        if a.to_bytes() <= b.to_bytes() {
            Evidence::DoubleVote {
                first: a,
                second: b,
            }
        } else {
            Evidence::DoubleVote {
                first: b,
                second: a,
            }
        }
    }

    /// Evidence from two conflicting signed proposals, in canonical order.
    pub fn double_proposal(a: SignedProposal, b: SignedProposal) -> Evidence {
        if a.to_bytes() <= b.to_bytes() {
            Evidence::DoubleProposal {
                first: a,
                second: b,
            }
        } else {
            Evidence::DoubleProposal {
                first: b,
                second: a,
            }
        }
    }

    /// The validator the evidence accuses.
    pub fn offender(&self) -> PublicKey {
        match self {
            Self::DoubleVote { first, .. } => first.vote.validator,
            Self::DoubleProposal { first, .. } => first.proposal.proposer,
        }
    }

    /// The height of the offence.
    pub fn height(&self) -> u64 {
        match self {
            Self::DoubleVote { first, .. } => first.vote.height,
            Self::DoubleProposal { first, .. } => first.proposal.height,
        }
    }

    /// Checks that the two messages conflict (same author, height, round, kind; different
    /// blocks), without checking signatures.
    pub fn check_conflict(&self) -> Result<(), EvidenceError> {
        let (same_slot, same_value) = match self {
            Self::DoubleVote { first, second } => {
                let (a, b) = (&first.vote, &second.vote);
                (
                    a.validator == b.validator
                        && a.height == b.height
                        && a.round == b.round
                        && a.kind == b.kind,
                    a.block == b.block,
                )
            }
            Self::DoubleProposal { first, second } => {
                let (a, b) = (&first.proposal, &second.proposal);
                (
                    a.proposer == b.proposer && a.height == b.height && a.round == b.round,
                    a.block == b.block,
                )
            }
        };
        if !same_slot {
            return Err(EvidenceError::NotConflicting);
        }
        if same_value {
            return Err(EvidenceError::SameValue);
        }
        Ok(())
    }

    /// Checks the conflict and both signatures on `chain`.
    pub fn verify(&self, chain: &ChainId) -> Result<(), EvidenceError> {
        self.check_conflict()?;
        let signed = match self {
            Self::DoubleVote { first, second } => {
                first.verify(chain).and_then(|()| second.verify(chain))
            }
            Self::DoubleProposal { first, second } => {
                first.verify(chain).and_then(|()| second.verify(chain))
            }
        };
        signed.map_err(|_| EvidenceError::BadSignature)
    }
}

impl Encode for Evidence {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::DoubleVote { first, second } => {
                out.push(0);
                first.encode_to(out);
                second.encode_to(out);
            }
            Self::DoubleProposal { first, second } => {
                out.push(1);
                first.encode_to(out);
                second.encode_to(out);
            }
        }
    }
}

impl Decode for Evidence {
    const MAX_BYTES: usize = 1 + 2 * SignedProposal::MAX_BYTES;
    const NAME: &'static str = "evidence";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (evidence, ordered) = match r.u8()? {
            0 => {
                let first = SignedVote::decode_from(r)?;
                let second = SignedVote::decode_from(r)?;
                let ordered = first.to_bytes() < second.to_bytes();
                (Evidence::DoubleVote { first, second }, ordered)
            }
            1 => {
                let first = SignedProposal::decode_from(r)?;
                let second = SignedProposal::decode_from(r)?;
                let ordered = first.to_bytes() < second.to_bytes();
                (Evidence::DoubleProposal { first, second }, ordered)
            }
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: "evidence",
                    tag,
                });
            }
        };
        if !ordered {
            return Err(DecodeError::NotCanonicalOrder { what: "evidence" });
        }
        Ok(evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;
    use crate::hash::Tag;

    fn chain() -> ChainId {
        ChainId::new("test").expect("valid chain id")
    }

    fn signed_vote(key: &SecretKey, round: u32, block: &[u8]) -> SignedVote {
        let vote = Vote {
            height: 5,
            round,
            kind: VoteKind::Precommit,
            block: Some(Hash::tagged(Tag::Header, &[block])),
            validator: key.public_key(),
        };
        SignedVote {
            signature: key.sign(Domain::Vote, &chain(), &vote),
            vote,
        }
    }

    #[test]
    fn a_double_vote_is_valid_evidence_in_either_order() {
        let key = SecretKey::from_seed([3; 32]);
        let a = signed_vote(&key, 0, b"a");
        let b = signed_vote(&key, 0, b"b");
        let e1 = Evidence::double_vote(a.clone(), b.clone());
        let e2 = Evidence::double_vote(b, a);
        assert_eq!(e1, e2);
        assert_eq!(e1.verify(&chain()), Ok(()));
        assert_eq!(Evidence::from_bytes(&e1.to_bytes()), Ok(e1.clone()));
        assert_eq!(e1.offender(), key.public_key());
    }

    #[test]
    fn votes_in_different_rounds_or_for_the_same_block_are_not_evidence() {
        let key = SecretKey::from_seed([3; 32]);
        let e = Evidence::double_vote(signed_vote(&key, 0, b"a"), signed_vote(&key, 1, b"b"));
        assert_eq!(e.verify(&chain()), Err(EvidenceError::NotConflicting));
        let same = signed_vote(&key, 0, b"a");
        let e = Evidence::DoubleVote {
            first: same.clone(),
            second: same,
        };
        assert_eq!(e.check_conflict(), Err(EvidenceError::SameValue));
    }

    #[test]
    fn evidence_with_a_forged_signature_is_rejected() {
        let key = SecretKey::from_seed([3; 32]);
        let mut b = signed_vote(&key, 0, b"b");
        b.signature = signed_vote(&key, 0, b"c").signature;
        let e = Evidence::double_vote(signed_vote(&key, 0, b"a"), b);
        assert_eq!(e.verify(&chain()), Err(EvidenceError::BadSignature));
    }

    #[test]
    fn evidence_out_of_canonical_order_does_not_decode() {
        let key = SecretKey::from_seed([3; 32]);
        let Evidence::DoubleVote { first, second } =
            Evidence::double_vote(signed_vote(&key, 0, b"a"), signed_vote(&key, 0, b"b"))
        else {
            unreachable!("double_vote builds a DoubleVote");
        };
        let swapped = Evidence::DoubleVote {
            first: second,
            second: first,
        };
        assert_eq!(
            Evidence::from_bytes(&swapped.to_bytes()),
            Err(DecodeError::NotCanonicalOrder { what: "evidence" })
        );
    }

    #[test]
    fn commit_signatures_must_be_sorted_and_unique() {
        let key = SecretKey::from_seed([3; 32]);
        let sig = CommitSig {
            validator: key.public_key(),
            signature: signed_vote(&key, 0, b"a").signature,
        };
        let commit = Commit {
            height: 1,
            round: 0,
            block: Hash::ZERO,
            signatures: vec![sig.clone(), sig],
        };
        assert_eq!(
            Commit::from_bytes(&commit.to_bytes()),
            Err(DecodeError::NotCanonicalOrder {
                what: "commit signatures"
            })
        );
    }
}

//! What validators send each other for consensus, in our canonical encoding: signed proposals
//! and votes, the proposed block in signed parts, and the polka and round certificates that keep
//! rounds moving. The p2p layer carries [`ConsensusMessage`] as opaque bytes.

use malachite_core_types as mc;
use mc::{NilOrVal, RoundCertificateType, VoteType};
use types::codec::{Reader, check_ascending, put_bytes, put_list};
use types::limits::{MAX_BLOCK_BYTES, MAX_VALIDATORS};
use types::{
    BatchVerifier, Block, ChainId, CommitSig, Decode, DecodeError, Domain, Encode, Hash, PublicKey,
    SecretKey, Signature, SignatureError, SignedProposal, SignedVote, Vote as ChainVote, VoteKind,
};

use crate::context::{Address, BlockId, Ctx, Height, Proposal, Vote, round_of, wire_round};

/// Largest part of a block, in bytes.
pub const MAX_PART_BYTES: usize = 64 * 1024;
/// Most parts one block can be cut into.
pub const MAX_PARTS: usize = MAX_BLOCK_BYTES.div_ceil(1024);

/// One piece of a proposed block. The proposer signs every part, so a part can be checked on
/// arrival and no peer can poison a block being assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPart {
    /// Height of the block.
    pub height: u64,
    /// Round of the proposal the block belongs to.
    pub round: u32,
    /// The proposer (the signer).
    pub proposer: PublicKey,
    /// Hash of the whole block.
    pub block: Hash,
    /// Position of this part, below `count`.
    pub index: u32,
    /// Number of parts of the block.
    pub count: u32,
    /// The bytes of the block's encoding at this part's position.
    pub bytes: Vec<u8>,
}

impl Encode for BlockPart {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.round.encode_to(out);
        self.proposer.encode_to(out);
        self.block.encode_to(out);
        self.index.encode_to(out);
        self.count.encode_to(out);
        put_bytes(out, &self.bytes);
    }
}

impl Decode for BlockPart {
    const MAX_BYTES: usize = 8 + 4 + 32 + 32 + 4 + 4 + 4 + MAX_PART_BYTES;
    const NAME: &'static str = "block part";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let part = BlockPart {
            height: r.u64()?,
            round: r.u32()?,
            proposer: PublicKey::decode_from(r)?,
            block: Hash::decode_from(r)?,
            index: r.u32()?,
            count: r.u32()?,
            bytes: r.bytes("block part bytes", MAX_PART_BYTES)?.to_vec(),
        };
        if part.count == 0 || part.count as usize > MAX_PARTS {
            return Err(DecodeError::Invalid {
                what: "block part",
                reason: "part count out of range",
            });
        }
        if part.index >= part.count {
            return Err(DecodeError::Invalid {
                what: "block part",
                reason: "index not below count",
            });
        }
        if part.bytes.is_empty() {
            return Err(DecodeError::Empty {
                what: "block part bytes",
            });
        }
        Ok(part)
    }
}

/// A block part with its proposer's signature ([`Domain::BlockPart`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPart {
    /// The part.
    pub part: BlockPart,
    /// Signature by `part.proposer`.
    pub signature: Signature,
}

impl SignedPart {
    /// Checks the proposer's signature.
    pub fn verify(&self, chain: &ChainId) -> Result<(), SignatureError> {
        self.part
            .proposer
            .verify(Domain::BlockPart, chain, &self.part, &self.signature)
    }
}

impl Encode for SignedPart {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.part.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for SignedPart {
    const MAX_BYTES: usize = BlockPart::MAX_BYTES + 64;
    const NAME: &'static str = "signed block part";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SignedPart {
            part: BlockPart::decode_from(r)?,
            signature: Signature::decode_from(r)?,
        })
    }
}

/// Cuts `block` into parts of at most `part_bytes` bytes, each signed by `key` for `round`.
pub fn split_block(
    block: &Block,
    round: u32,
    key: &SecretKey,
    chain: &ChainId,
    part_bytes: usize,
) -> Vec<SignedPart> {
    let bytes = block.to_bytes();
    let part_bytes = part_bytes
        .max(bytes.len().div_ceil(MAX_PARTS))
        .clamp(1, MAX_PART_BYTES);
    let hash = block.hash();
    let count = bytes.len().div_ceil(part_bytes).max(1);
    bytes
        .chunks(part_bytes)
        .enumerate()
        .map(|(index, chunk)| {
            let part = BlockPart {
                height: block.header.height,
                round,
                proposer: key.public_key(),
                block: hash,
                index: index as u32,
                count: count as u32,
                bytes: chunk.to_vec(),
            };
            SignedPart {
                signature: key.sign(Domain::BlockPart, chain, &part),
                part,
            }
        })
        .collect()
}

/// Prevotes of more than two thirds of the stake for one block in one round: lets a validator
/// that missed them accept a re-proposal of that block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolkaCertificate {
    /// Height.
    pub height: u64,
    /// Round of the prevotes.
    pub round: u32,
    /// The block prevoted for.
    pub block: Hash,
    /// Prevote signatures, strictly ascending by validator.
    pub signatures: Vec<CommitSig>,
}

impl Encode for PolkaCertificate {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.round.encode_to(out);
        self.block.encode_to(out);
        put_list(out, &self.signatures);
    }
}

impl Decode for PolkaCertificate {
    const MAX_BYTES: usize = 8 + 4 + 32 + 4 + MAX_VALIDATORS * CommitSig::MAX_BYTES;
    const NAME: &'static str = "polka certificate";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let cert = PolkaCertificate {
            height: r.u64()?,
            round: r.u32()?,
            block: Hash::decode_from(r)?,
            signatures: r.list("polka signatures", MAX_VALIDATORS, CommitSig::MAX_BYTES)?,
        };
        check_ascending("polka signatures", &cert.signatures, |s| s.validator)?;
        Ok(cert)
    }
}

/// Why a round certificate moves validators to another round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundCertificateKind {
    /// Votes of more than a third of the stake from a higher round: skip to it.
    Skip,
    /// Precommits of more than two thirds of the stake in a round: go to the next one.
    Precommit,
}

/// One signed vote inside a round certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundVote {
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The block voted for, or nil.
    pub block: Option<Hash>,
    /// The voter.
    pub validator: PublicKey,
    /// The vote's signature.
    pub signature: Signature,
}

impl Encode for RoundVote {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.push(match self.kind {
            VoteKind::Prevote => 0,
            VoteKind::Precommit => 1,
        });
        types::codec::put_option(out, self.block.as_ref());
        self.validator.encode_to(out);
        self.signature.encode_to(out);
    }
}

impl Decode for RoundVote {
    const MAX_BYTES: usize = 1 + 33 + 32 + 64;
    const NAME: &'static str = "round vote";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(RoundVote {
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
            block: r.option("round vote block")?,
            validator: PublicKey::decode_from(r)?,
            signature: Signature::decode_from(r)?,
        })
    }
}

/// Votes that justify entering a new round: sent when entering it, so validators that missed
/// the votes follow instead of stalling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundCertificate {
    /// Height.
    pub height: u64,
    /// Round of the votes.
    pub round: u32,
    /// Skip or precommit certificate.
    pub kind: RoundCertificateKind,
    /// The votes, strictly ascending by (validator, kind).
    pub votes: Vec<RoundVote>,
}

impl Encode for RoundCertificate {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.height.encode_to(out);
        self.round.encode_to(out);
        out.push(match self.kind {
            RoundCertificateKind::Skip => 0,
            RoundCertificateKind::Precommit => 1,
        });
        put_list(out, &self.votes);
    }
}

impl Decode for RoundCertificate {
    const MAX_BYTES: usize = 8 + 4 + 1 + 4 + 2 * MAX_VALIDATORS * RoundVote::MAX_BYTES;
    const NAME: &'static str = "round certificate";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let height = r.u64()?;
        let round = r.u32()?;
        let kind = match r.u8()? {
            0 => RoundCertificateKind::Skip,
            1 => RoundCertificateKind::Precommit,
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: "round certificate kind",
                    tag,
                });
            }
        };
        let votes: Vec<RoundVote> = r.list("round votes", 2 * MAX_VALIDATORS, 97)?;
        check_ascending("round votes", &votes, |v| (v.validator, v.kind))?;
        Ok(RoundCertificate {
            height,
            round,
            kind,
            votes,
        })
    }
}

/// A consensus message between validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsensusMessage {
    /// A signed block proposal.
    Proposal(SignedProposal),
    /// A signed prevote or precommit.
    Vote(SignedVote),
    /// A signed part of a proposed block.
    Part(SignedPart),
    /// A polka certificate.
    Polka(PolkaCertificate),
    /// A round certificate.
    Round(RoundCertificate),
}

impl ConsensusMessage {
    /// The height the message is about.
    pub fn height(&self) -> u64 {
        match self {
            Self::Proposal(p) => p.proposal.height,
            Self::Vote(v) => v.vote.height,
            Self::Part(p) => p.part.height,
            Self::Polka(c) => c.height,
            Self::Round(c) => c.height,
        }
    }

    /// Checks every signature the message carries, without any chain state: what a relay can
    /// check before forwarding. Whether the signers are validators is the engine's business.
    pub fn verify(&self, chain: &ChainId) -> Result<(), SignatureError> {
        let mut batch = BatchVerifier::new();
        match self {
            Self::Proposal(p) => return p.verify(chain),
            Self::Vote(v) => return v.verify(chain),
            Self::Part(p) => return p.verify(chain),
            Self::Polka(c) => {
                for s in &c.signatures {
                    let vote = ChainVote {
                        height: c.height,
                        round: c.round,
                        kind: VoteKind::Prevote,
                        block: Some(c.block),
                        validator: s.validator,
                    };
                    batch.push(&s.validator, Domain::Vote, chain, &vote, &s.signature);
                }
            }
            Self::Round(c) => {
                for v in &c.votes {
                    let vote = ChainVote {
                        height: c.height,
                        round: c.round,
                        kind: v.kind,
                        block: v.block,
                        validator: v.validator,
                    };
                    batch.push(&v.validator, Domain::Vote, chain, &vote, &v.signature);
                }
            }
        }
        batch.verify().map_err(|_| SignatureError)
    }

    /// A stable name of the message kind, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Proposal(_) => "proposal",
            Self::Vote(_) => "vote",
            Self::Part(_) => "block_part",
            Self::Polka(_) => "polka_certificate",
            Self::Round(_) => "round_certificate",
        }
    }
}

impl Encode for ConsensusMessage {
    fn encode_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Proposal(p) => {
                out.push(0);
                p.encode_to(out);
            }
            Self::Vote(v) => {
                out.push(1);
                v.encode_to(out);
            }
            Self::Part(p) => {
                out.push(2);
                p.encode_to(out);
            }
            Self::Polka(c) => {
                out.push(3);
                c.encode_to(out);
            }
            Self::Round(c) => {
                out.push(4);
                c.encode_to(out);
            }
        }
    }
}

impl Decode for ConsensusMessage {
    const MAX_BYTES: usize = 1 + SignedPart::MAX_BYTES;
    const NAME: &'static str = "consensus message";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            0 => Self::Proposal(SignedProposal::decode_from(r)?),
            1 => Self::Vote(SignedVote::decode_from(r)?),
            2 => Self::Part(SignedPart::decode_from(r)?),
            3 => Self::Polka(PolkaCertificate::decode_from(r)?),
            4 => Self::Round(RoundCertificate::decode_from(r)?),
            tag => {
                return Err(DecodeError::InvalidTag {
                    what: "consensus message",
                    tag,
                });
            }
        })
    }
}

// Conversions between the wire forms and Malachite's.

pub(crate) fn vote_to_core(v: &SignedVote) -> mc::SignedVote<Ctx> {
    mc::SignedVote::new(Vote::from_wire(&v.vote), v.signature)
}

pub(crate) fn vote_from_core(v: &mc::SignedVote<Ctx>) -> Option<SignedVote> {
    Some(SignedVote {
        vote: v.message.to_wire()?,
        signature: v.signature,
    })
}

pub(crate) fn proposal_to_core(p: &SignedProposal) -> mc::SignedProposal<Ctx> {
    mc::SignedProposal::new(Proposal::from_wire(&p.proposal), p.signature)
}

pub(crate) fn proposal_from_core(p: &mc::SignedProposal<Ctx>) -> Option<SignedProposal> {
    Some(SignedProposal {
        proposal: p.message.to_wire()?,
        signature: p.signature,
    })
}

/// Signatures in canonical order: ascending by validator, one per validator.
pub(crate) fn sorted_signatures(
    signatures: impl Iterator<Item = (Address, Signature)>,
) -> Vec<CommitSig> {
    let mut out: Vec<CommitSig> = signatures
        .map(|(address, signature)| CommitSig {
            validator: address.0,
            signature,
        })
        .collect();
    out.sort_by_key(|s| s.validator);
    out.dedup_by_key(|s| s.validator);
    out
}

fn kind_to_core(kind: VoteKind) -> VoteType {
    match kind {
        VoteKind::Prevote => VoteType::Prevote,
        VoteKind::Precommit => VoteType::Precommit,
    }
}

fn kind_from_core(kind: VoteType) -> VoteKind {
    match kind {
        VoteType::Prevote => VoteKind::Prevote,
        VoteType::Precommit => VoteKind::Precommit,
    }
}

impl PolkaCertificate {
    pub(crate) fn to_core(&self) -> mc::PolkaCertificate<Ctx> {
        mc::PolkaCertificate {
            height: Height(self.height),
            round: round_of(self.round),
            value_id: BlockId(self.block),
            polka_signatures: self
                .signatures
                .iter()
                .map(|s| mc::PolkaSignature::new(Address(s.validator), s.signature))
                .collect(),
        }
    }

    pub(crate) fn from_core(cert: &mc::PolkaCertificate<Ctx>) -> Option<PolkaCertificate> {
        Some(PolkaCertificate {
            height: cert.height.0,
            round: wire_round(cert.round)?,
            block: cert.value_id.0,
            signatures: sorted_signatures(
                cert.polka_signatures
                    .iter()
                    .map(|s| (s.address, s.signature)),
            ),
        })
    }
}

impl RoundCertificate {
    pub(crate) fn to_core(&self) -> mc::RoundCertificate<Ctx> {
        mc::RoundCertificate {
            height: Height(self.height),
            round: round_of(self.round),
            cert_type: match self.kind {
                RoundCertificateKind::Skip => RoundCertificateType::Skip,
                RoundCertificateKind::Precommit => RoundCertificateType::Precommit,
            },
            round_signatures: self
                .votes
                .iter()
                .map(|v| {
                    mc::RoundSignature::new(
                        kind_to_core(v.kind),
                        match v.block {
                            None => NilOrVal::Nil,
                            Some(hash) => NilOrVal::Val(BlockId(hash)),
                        },
                        Address(v.validator),
                        v.signature,
                    )
                })
                .collect(),
        }
    }

    pub(crate) fn from_core(cert: &mc::RoundCertificate<Ctx>) -> Option<RoundCertificate> {
        let mut votes: Vec<RoundVote> = cert
            .round_signatures
            .iter()
            .map(|s| RoundVote {
                kind: kind_from_core(s.vote_type),
                block: match s.value_id {
                    NilOrVal::Nil => None,
                    NilOrVal::Val(id) => Some(id.0),
                },
                validator: s.address.0,
                signature: s.signature,
            })
            .collect();
        votes.sort_by_key(|v| (v.validator, v.kind));
        votes.dedup_by_key(|v| (v.validator, v.kind));
        Some(RoundCertificate {
            height: cert.height.0,
            round: wire_round(cert.round)?,
            kind: match cert.cert_type {
                RoundCertificateType::Skip => RoundCertificateKind::Skip,
                RoundCertificateType::Precommit => RoundCertificateKind::Precommit,
            },
            votes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use types::{Proposal as WireProposal, Vote as WireVote};

    fn chain() -> ChainId {
        ChainId::new("test").expect("valid id")
    }

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed([i; 32])
    }

    fn samples() -> Vec<ConsensusMessage> {
        let k = key(1);
        let vote = WireVote {
            height: 4,
            round: 1,
            kind: VoteKind::Precommit,
            block: Some(Hash([3; 32])),
            validator: k.public_key(),
        };
        let proposal = WireProposal {
            height: 4,
            round: 1,
            pol_round: Some(0),
            block: Hash([3; 32]),
            proposer: k.public_key(),
        };
        let part = BlockPart {
            height: 4,
            round: 1,
            proposer: k.public_key(),
            block: Hash([3; 32]),
            index: 1,
            count: 2,
            bytes: vec![1, 2, 3],
        };
        let mut sigs: Vec<CommitSig> = (1..4)
            .map(|i| CommitSig {
                validator: key(i).public_key(),
                signature: key(i).sign(Domain::Vote, &chain(), &vote),
            })
            .collect();
        sigs.sort_by_key(|s| s.validator);
        let mut votes: Vec<RoundVote> = (1..4)
            .map(|i| RoundVote {
                kind: VoteKind::Prevote,
                block: None,
                validator: key(i).public_key(),
                signature: key(i).sign(Domain::Vote, &chain(), &vote),
            })
            .collect();
        votes.sort_by_key(|v| (v.validator, v.kind));
        vec![
            ConsensusMessage::Vote(SignedVote {
                signature: k.sign(Domain::Vote, &chain(), &vote),
                vote,
            }),
            ConsensusMessage::Proposal(SignedProposal {
                signature: k.sign(Domain::Proposal, &chain(), &proposal),
                proposal,
            }),
            ConsensusMessage::Part(SignedPart {
                signature: k.sign(Domain::BlockPart, &chain(), &part),
                part,
            }),
            ConsensusMessage::Polka(PolkaCertificate {
                height: 4,
                round: 1,
                block: Hash([3; 32]),
                signatures: sigs,
            }),
            ConsensusMessage::Round(RoundCertificate {
                height: 4,
                round: 1,
                kind: RoundCertificateKind::Skip,
                votes,
            }),
        ]
    }

    #[test]
    fn verify_checks_every_signature_a_message_carries() {
        let prevote = |i: u8, block: Option<Hash>| WireVote {
            height: 4,
            round: 1,
            kind: VoteKind::Prevote,
            block,
            validator: key(i).public_key(),
        };
        let mut signatures: Vec<CommitSig> = (1..4)
            .map(|i| CommitSig {
                validator: key(i).public_key(),
                signature: key(i).sign(Domain::Vote, &chain(), &prevote(i, Some(Hash([3; 32])))),
            })
            .collect();
        signatures.sort_by_key(|s| s.validator);
        let mut votes: Vec<RoundVote> = (1..4)
            .map(|i| RoundVote {
                kind: VoteKind::Prevote,
                block: None,
                validator: key(i).public_key(),
                signature: key(i).sign(Domain::Vote, &chain(), &prevote(i, None)),
            })
            .collect();
        votes.sort_by_key(|v| (v.validator, v.kind));
        let mut messages = samples()[..3].to_vec();
        messages.push(ConsensusMessage::Polka(PolkaCertificate {
            height: 4,
            round: 1,
            block: Hash([3; 32]),
            signatures,
        }));
        messages.push(ConsensusMessage::Round(RoundCertificate {
            height: 4,
            round: 1,
            kind: RoundCertificateKind::Skip,
            votes,
        }));
        for message in messages {
            assert_eq!(message.verify(&chain()), Ok(()), "{}", message.label());
            assert!(
                message
                    .verify(&ChainId::new("other").expect("valid id"))
                    .is_err(),
                "{} verified under another chain id",
                message.label()
            );
            let mut bytes = message.to_bytes();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            if let Ok(tampered) = ConsensusMessage::from_bytes(&bytes) {
                assert!(tampered.verify(&chain()).is_err(), "{}", message.label());
            }
        }
    }

    #[test]
    fn every_message_kind_round_trips_through_its_encoding() {
        for message in samples() {
            let bytes = message.to_bytes();
            assert_eq!(ConsensusMessage::from_bytes(&bytes), Ok(message.clone()));
            for cut in 0..bytes.len() {
                assert!(
                    ConsensusMessage::from_bytes(&bytes[..cut]).is_err(),
                    "{} truncated at {cut} decoded",
                    message.label()
                );
            }
        }
    }

    #[test]
    fn parts_with_bad_index_count_or_order_are_refused() {
        let ConsensusMessage::Part(signed) = &samples()[2] else {
            unreachable!("sample 2 is a part")
        };
        for (index, count) in [(2, 2), (0, 0), (0, MAX_PARTS as u32 + 1)] {
            let mut part = signed.part.clone();
            part.index = index;
            part.count = count;
            assert!(
                BlockPart::from_bytes(&part.to_bytes()).is_err(),
                "{index}/{count}"
            );
        }
        let ConsensusMessage::Polka(polka) = &samples()[3] else {
            unreachable!("sample 3 is a polka certificate")
        };
        let mut reversed = polka.clone();
        reversed.signatures.reverse();
        assert!(PolkaCertificate::from_bytes(&reversed.to_bytes()).is_err());
    }

    #[test]
    fn split_parts_are_signed_and_reassemble_to_the_block() {
        let test = chain::testkit::TestChain::new(1, 2, 1);
        let ledger =
            chain::Ledger::open(storage::MemStore::new(), &test.genesis).expect("genesis opens");
        let txs = (0..5)
            .map(|n| test.transfer(0, 1, n, 10))
            .collect::<Vec<_>>();
        let block = ledger
            .propose(
                test.validators[0].public_key(),
                test.genesis.time_ms + 1,
                None,
                txs,
            )
            .expect("block builds")
            .executed
            .block;
        let k = key(1);
        let parts = split_block(&block, 0, &k, &chain(), 100);
        assert!(parts.len() > 1);
        let mut bytes = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.part.index as usize, i);
            assert_eq!(p.part.count as usize, parts.len());
            assert_eq!(p.part.block, block.hash());
            p.verify(&chain()).expect("signed by the proposer");
            bytes.extend_from_slice(&p.part.bytes);
        }
        assert_eq!(Block::from_bytes(&bytes), Ok(block));
        let mut forged = parts[0].clone();
        forged.part.bytes[0] ^= 1;
        assert!(forged.verify(&chain()).is_err());
    }

    #[test]
    fn mutated_messages_never_panic_and_what_decodes_re_encodes_to_its_input() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(4);
        let samples: Vec<Vec<u8>> = samples().iter().map(|m| m.to_bytes()).collect();
        for _ in 0..20_000 {
            let mut bytes = samples[rng.random_range(0..samples.len())].clone();
            for _ in 0..rng.random_range(1..4) {
                match rng.random_range(0..3) {
                    0 => {
                        let i = rng.random_range(0..bytes.len());
                        bytes[i] = rng.random();
                    }
                    1 => bytes.truncate(rng.random_range(0..bytes.len())),
                    _ => bytes.push(rng.random()),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            if let Ok(message) = ConsensusMessage::from_bytes(&bytes) {
                assert_eq!(message.to_bytes(), bytes);
            }
        }
    }
}

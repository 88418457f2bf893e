//! Byzantine behaviours, built outside an honest engine with the validator's own key: rewrite
//! what the engine broadcasts into equivocations or invalid proposals.
//!
//! A silent validator needs no code here: the simulation drops its outputs.

use std::collections::BTreeMap;
use std::fmt;

use consensus::message::{ConsensusMessage, SignedPart, split_block};
use rand::Rng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};
use types::{
    Block, ChainId, Decode, Domain, Encode, Hash, Proposal, SecretKey, SignedProposal, SignedVote,
};

use crate::scenario::Split;

/// Who receives a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// Every other validator.
    All,
    /// These validators (the sender is skipped if listed).
    Only(Vec<usize>),
}

/// Signs a conflicting twin of every vote and proposal: nil for a block vote, a block nobody
/// has for a nil vote, another block hash for a proposal. Originals go to one half of the
/// network and twins to the other; the witness, if any, receives both.
#[derive(Debug)]
pub struct Equivocator {
    key: SecretKey,
    chain: ChainId,
    originals_to: Vec<usize>,
    twins_to: Vec<usize>,
}

impl Equivocator {
    /// The equivocator holding `key`, among `n` validators split by `split`.
    pub fn new(key: SecretKey, chain: ChainId, split: &Split, n: usize) -> Equivocator {
        let mut originals_to: Vec<usize> = (0..n).filter(|i| !split.twins_to.contains(i)).collect();
        let mut twins_to = split.twins_to.clone();
        if let Some(w) = split.witness {
            originals_to.push(w);
            twins_to.push(w);
        }
        originals_to.sort_unstable();
        originals_to.dedup();
        twins_to.sort_unstable();
        twins_to.dedup();
        Equivocator {
            key,
            chain,
            originals_to,
            twins_to,
        }
    }

    /// What to send instead of `msg`: the original and its twin to their halves, or `msg` to
    /// everyone if it has no twin (it is not a vote or proposal signed by this validator).
    pub fn rewrite(&self, msg: ConsensusMessage) -> Vec<(Recipients, ConsensusMessage)> {
        let own = self.key.public_key();
        let twin = match &msg {
            ConsensusMessage::Vote(v) if v.vote.validator == own => {
                ConsensusMessage::Vote(self.twin_vote(v))
            }
            ConsensusMessage::Proposal(p) if p.proposal.proposer == own => {
                ConsensusMessage::Proposal(self.twin_proposal(p))
            }
            // Not signed by us (an engine relays others' messages too): nothing to twin.
            _ => return vec![(Recipients::All, msg)],
        };
        vec![
            (Recipients::Only(self.originals_to.clone()), msg),
            (Recipients::Only(self.twins_to.clone()), twin),
        ]
    }

    fn twin_vote(&self, signed: &SignedVote) -> SignedVote {
        twin_vote(&self.key, &self.chain, signed)
    }

    fn twin_proposal(&self, signed: &SignedProposal) -> SignedProposal {
        twin_proposal(&self.key, &self.chain, signed)
    }
}

/// A vote conflicting with `signed`, signed by `key` for the same height, round and kind: nil
/// for a block vote, a block nobody has for a nil vote. With `key` the author of `signed`, the
/// pair is equivocation evidence.
pub fn twin_vote(key: &SecretKey, chain: &ChainId, signed: &SignedVote) -> SignedVote {
    let mut vote = signed.vote.clone();
    vote.block = match vote.block {
        Some(_) => None,
        None => Some(fake_hash(&signed.vote.to_bytes())),
    };
    let signature = key.sign(Domain::Vote, chain, &vote);
    SignedVote { vote, signature }
}

/// A proposal conflicting with `signed`, signed by `key` for the same height and round: a
/// block nobody has. With `key` the author of `signed`, the pair is equivocation evidence.
pub fn twin_proposal(key: &SecretKey, chain: &ChainId, signed: &SignedProposal) -> SignedProposal {
    let mut proposal = signed.proposal.clone();
    proposal.block = fake_hash(&signed.proposal.to_bytes());
    let signature = key.sign(Domain::Proposal, chain, &proposal);
    SignedProposal {
        proposal,
        signature,
    }
}

/// A block hash derived from a message, so a rebroadcast gets the same twin.
fn fake_hash(message: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"sim/equivocation-twin");
    h.update(message);
    Hash(h.finalize().into())
}

/// How a forged block breaks the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Corruption {
    /// The header's state root is not the state after the block.
    StateRoot,
    /// The header's transaction root does not match the transactions.
    TxsRoot,
    /// The header names a parent that is not the tip.
    Parent,
    /// The header's time is an hour ahead of every clock.
    FutureTime,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Corruption::StateRoot => "wrong state root",
            Corruption::TxsRoot => "wrong transaction root",
            Corruption::Parent => "wrong parent",
            Corruption::FutureTime => "time an hour ahead",
        })
    }
}

/// A forged block sent in place of the engine's proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgery {
    /// Height of the block.
    pub height: u64,
    /// Hash of the forged block.
    pub hash: Hash,
    /// What is wrong with it.
    pub corruption: Corruption,
}

/// Parts and proposal of one (height, round) collected from the engine's outputs.
#[derive(Debug, Default)]
struct Assembly {
    proposal: Option<SignedProposal>,
    parts: BTreeMap<u32, SignedPart>,
}

/// The proposal and parts sent instead of the engine's for one (height, round).
#[derive(Debug)]
struct Forged {
    proposal: SignedProposal,
    parts: Vec<SignedPart>,
}

/// Holds back the proposal and parts its engine broadcasts, rebuilds the block from the parts,
/// corrupts its header, and sends a signed proposal and parts of the corrupted block instead.
#[derive(Debug)]
pub struct InvalidProposer {
    key: SecretKey,
    chain: ChainId,
    part_bytes: usize,
    assembling: BTreeMap<(u64, u32), Assembly>,
    forged: BTreeMap<(u64, u32), Forged>,
}

/// Assemblies kept at once; older ones are dropped (their round is long over).
const MAX_ASSEMBLIES: usize = 16;

impl InvalidProposer {
    /// The invalid proposer holding `key`; parts are cut at `part_bytes` like the engine's.
    pub fn new(key: SecretKey, chain: ChainId, part_bytes: usize) -> InvalidProposer {
        InvalidProposer {
            key,
            chain,
            part_bytes,
            assembling: BTreeMap::new(),
            forged: BTreeMap::new(),
        }
    }

    /// What to send instead of `msg` (maybe nothing yet), and the forgery it completed, if any.
    pub fn rewrite(
        &mut self,
        msg: ConsensusMessage,
        rng: &mut StdRng,
    ) -> (Vec<ConsensusMessage>, Option<Forgery>) {
        let slot = match &msg {
            ConsensusMessage::Proposal(p) => (p.proposal.height, p.proposal.round),
            ConsensusMessage::Part(p) => (p.part.height, p.part.round),
            _ => return (vec![msg], None),
        };
        if let Some(forged) = self.forged.get(&slot) {
            // A rebroadcast: resend the forged counterpart.
            let resend = match msg {
                ConsensusMessage::Proposal(_) => {
                    Some(ConsensusMessage::Proposal(forged.proposal.clone()))
                }
                ConsensusMessage::Part(p) => forged
                    .parts
                    .get(p.part.index as usize)
                    .cloned()
                    .map(ConsensusMessage::Part),
                _ => None,
            };
            return (resend.into_iter().collect(), None);
        }
        let assembly = self.assembling.entry(slot).or_default();
        match msg {
            ConsensusMessage::Proposal(p) => assembly.proposal = Some(p),
            ConsensusMessage::Part(p) => {
                assembly.parts.insert(p.part.index, p);
            }
            _ => {}
        }
        while self.assembling.len() > MAX_ASSEMBLIES {
            self.assembling.pop_first();
        }
        let Some((proposal, block)) = self.assembled(slot) else {
            return (Vec::new(), None);
        };
        self.assembling.remove(&slot);
        let (forged, forgery) = self.forge(proposal, block, rng);
        let mut out = vec![ConsensusMessage::Proposal(forged.proposal.clone())];
        out.extend(forged.parts.iter().cloned().map(ConsensusMessage::Part));
        self.forged.insert(slot, forged);
        while self.forged.len() > MAX_ASSEMBLIES {
            self.forged.pop_first();
        }
        (out, Some(forgery))
    }

    /// The engine's proposal and block of `slot`, once the proposal and every part are in.
    fn assembled(&self, slot: (u64, u32)) -> Option<(Proposal, Block)> {
        let assembly = self.assembling.get(&slot)?;
        let proposal = assembly.proposal.as_ref()?.proposal.clone();
        let hash = proposal.block;
        let parts: Vec<&SignedPart> = assembly
            .parts
            .values()
            .filter(|p| p.part.block == hash)
            .collect();
        let count = parts.first()?.part.count as usize;
        if parts.len() != count {
            return None;
        }
        let bytes: Vec<u8> = parts
            .iter()
            .flat_map(|p| p.part.bytes.iter().copied())
            .collect();
        match Block::from_bytes(&bytes) {
            Ok(block) if block.hash() == hash => Some((proposal, block)),
            other => {
                log::warn!(target: "sim", "parts of {hash} do not rebuild the block: {other:?}");
                None
            }
        }
    }

    fn forge(
        &self,
        mut proposal: Proposal,
        mut block: Block,
        rng: &mut StdRng,
    ) -> (Forged, Forgery) {
        let corruption = [
            Corruption::StateRoot,
            Corruption::TxsRoot,
            Corruption::Parent,
            Corruption::FutureTime,
        ][rng.random_range(0..4)];
        let header = &mut block.header;
        match corruption {
            Corruption::StateRoot => header.state_root = Hash(rng.random()),
            Corruption::TxsRoot => header.txs_root = Hash(rng.random()),
            Corruption::Parent => header.parent = Hash(rng.random()),
            Corruption::FutureTime => header.time_ms += 3_600_000,
        }
        let hash = block.hash();
        proposal.block = hash;
        let signature = self.key.sign(Domain::Proposal, &self.chain, &proposal);
        let parts = split_block(
            &block,
            proposal.round,
            &self.key,
            &self.chain,
            self.part_bytes,
        );
        let forgery = Forgery {
            height: proposal.height,
            hash,
            corruption,
        };
        let proposal = SignedProposal {
            proposal,
            signature,
        };
        (Forged { proposal, parts }, forgery)
    }
}

#[cfg(test)]
mod tests {
    use chain::Ledger;
    use chain::testkit::TestChain;
    use rand::SeedableRng;
    use storage::MemStore;
    use types::{Evidence, Vote, VoteKind};

    use super::*;

    fn chain() -> TestChain {
        TestChain::new(4, 4, 9)
    }

    fn signed_vote(key: &SecretKey, chain: &ChainId, block: Option<Hash>) -> SignedVote {
        let vote = Vote {
            height: 2,
            round: 0,
            kind: VoteKind::Prevote,
            block,
            validator: key.public_key(),
        };
        SignedVote {
            signature: key.sign(Domain::Vote, chain, &vote),
            vote,
        }
    }

    #[test]
    fn an_equivocator_sends_a_validly_signed_twin_to_the_other_half_and_relays_others_as_is() {
        let net = chain();
        let id = net.genesis.chain_id.clone();
        let split = Split {
            twins_to: vec![2, 3],
            witness: Some(1),
        };
        let e = Equivocator::new(net.validators[0].clone(), id.clone(), &split, 4);
        let own = signed_vote(&net.validators[0], &id, Some(Hash([5; 32])));
        let sends = e.rewrite(ConsensusMessage::Vote(own.clone()));
        let [
            (originals, ConsensusMessage::Vote(a)),
            (twins, ConsensusMessage::Vote(b)),
        ] = &sends[..]
        else {
            panic!("expected an original and a twin: {sends:?}");
        };
        assert_eq!(*originals, Recipients::Only(vec![0, 1]));
        assert_eq!(*twins, Recipients::Only(vec![1, 2, 3]));
        assert_eq!(*a, own);
        assert_eq!(b.vote.block, None);
        assert_eq!(b.verify(&id), Ok(()));
        assert_eq!(
            Evidence::double_vote(a.clone(), b.clone()).verify(&id),
            Ok(())
        );

        let relayed = ConsensusMessage::Vote(signed_vote(&net.validators[1], &id, None));
        assert_eq!(e.rewrite(relayed.clone()), vec![(Recipients::All, relayed)]);
    }

    #[test]
    fn an_invalid_proposer_sends_a_signed_forgery_once_every_part_is_in() {
        let net = chain();
        let id = net.genesis.chain_id.clone();
        let key = net.validators[0].clone();
        let ledger = Ledger::open(MemStore::new(), &net.genesis).expect("genesis");
        let txs = (0..3).map(|i| net.transfer(i, i + 1, 0, 5));
        let block = ledger
            .propose(key.public_key(), net.genesis.time_ms + 1, None, txs)
            .expect("proposes")
            .executed
            .block;
        let proposal = types::Proposal {
            height: 1,
            round: 0,
            pol_round: None,
            block: block.hash(),
            proposer: key.public_key(),
        };
        let proposal = SignedProposal {
            signature: key.sign(Domain::Proposal, &id, &proposal),
            proposal,
        };
        let parts = split_block(&block, 0, &key, &id, 128);
        assert!(parts.len() > 1);

        let mut forger = InvalidProposer::new(key, id.clone(), 128);
        let mut rng = StdRng::seed_from_u64(1);
        let (out, forgery) = forger.rewrite(ConsensusMessage::Proposal(proposal), &mut rng);
        assert!(out.is_empty() && forgery.is_none(), "held back");
        let mut sent = Vec::new();
        let mut forgery = None;
        for part in parts {
            let (out, f) = forger.rewrite(ConsensusMessage::Part(part), &mut rng);
            sent.extend(out);
            forgery = forgery.or(f);
        }
        let forgery = forgery.expect("forged after the last part");
        assert_ne!(forgery.hash, block.hash());
        let ConsensusMessage::Proposal(p) = &sent[0] else {
            panic!("the forged proposal goes first: {:?}", sent[0]);
        };
        assert_eq!(p.proposal.block, forgery.hash);
        assert_eq!(p.verify(&id), Ok(()));
        let bytes: Vec<u8> = sent[1..]
            .iter()
            .flat_map(|m| match m {
                ConsensusMessage::Part(p) => {
                    assert_eq!(p.verify(&id), Ok(()));
                    p.part.bytes.clone()
                }
                other => panic!("expected parts: {other:?}"),
            })
            .collect();
        let forged = Block::from_bytes(&bytes).expect("the parts rebuild the forged block");
        assert_eq!(forged.hash(), forgery.hash);
    }
}

//! The oracles: what must hold on every run, whatever the faults. Agreement, no honest
//! double-sign, only valid blocks final, evidence leads to slashing, and (checked by the
//! simulation's clock) liveness once the faults heal.
//!
//! # Design
//! The oracles watch two things: what honest engines emit as it happens (broadcasts, commits),
//! and the honest ledgers at the end of the run. The first catches a fault at the moment it
//! happens, with its time; the second catches what only shows in the stored chain (a block
//! committed through sync, a state root that differs).

use std::collections::BTreeMap;
use std::fmt;

use chain::Ledger;
use consensus::message::ConsensusMessage;
use storage::{MemStore, Store};
use types::{Evidence, Genesis, Hash, Proposal, PublicKey, Vote, VoteKind};

use crate::byzantine::Forgery;

/// The kind of a signed consensus message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SignedKind {
    /// A block proposal.
    Proposal,
    /// The parts of a proposed block.
    Part,
    /// A prevote.
    Prevote,
    /// A precommit.
    Precommit,
}

/// A message an honest validator signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signed {
    /// A vote.
    Vote(Vote),
    /// A proposal.
    Proposal(Proposal),
    /// A part of the block with this hash.
    Part(Hash),
}

/// A broken rule, with what is needed to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two honest validators committed different blocks at one height.
    Disagreement {
        /// The height.
        height: u64,
        /// First validator and the block it committed.
        first: (usize, Hash),
        /// The other validator and its block.
        second: (usize, Hash),
    },
    /// An honest validator signed two different messages for one slot.
    DoubleSign {
        /// The validator.
        node: usize,
        /// Height, round and kind of the slot.
        slot: (u64, u32, SignedKind),
        /// The first message.
        first: Box<Signed>,
        /// The second.
        second: Box<Signed>,
    },
    /// An honest validator voted for a forged block.
    VotedForForgery {
        /// The validator.
        node: usize,
        /// Its vote.
        vote: Box<Signed>,
    },
    /// A commit output does not match the ledger.
    CommitNotInLedger {
        /// The validator.
        node: usize,
        /// The height.
        height: u64,
        /// The hash of the commit output.
        committed: Hash,
        /// The hash in the ledger, if any.
        stored: Option<Hash>,
    },
    /// A forged block became final.
    InvalidBlockFinal {
        /// The validator whose ledger holds it.
        node: usize,
        /// The height.
        height: u64,
        /// The forged block.
        hash: Hash,
    },
    /// Two honest ledgers differ at a common height.
    LedgerMismatch {
        /// The height.
        height: u64,
        /// First validator and its block hash and state root.
        first: (usize, Hash, Hash),
        /// The other validator and its block hash and state root.
        second: (usize, Hash, Hash),
    },
    /// A final block does not validate when the chain is replayed on a fresh ledger.
    ReplayRefused {
        /// The height.
        height: u64,
        /// Why.
        error: String,
    },
    /// A commit carried evidence against an honest validator.
    HonestAccused {
        /// The validator whose commit carried it.
        node: usize,
        /// The accused.
        offender: usize,
    },
    /// An equivocator was caught but its stake was not slashed.
    NotSlashed {
        /// The equivocator.
        offender: usize,
        /// Height of the first commit that carried evidence against it.
        evidence_height: u64,
        /// The honest validator whose ledger shows no slash.
        node: usize,
        /// Its stake at genesis.
        genesis_stake: u64,
        /// Its stake in that ledger.
        stake: u64,
    },
    /// Honest validators did not reach the target height in time after the faults healed.
    NoLiveness {
        /// The height every honest validator had to reach.
        target: u64,
        /// The deadline, milliseconds after the start.
        deadline_ms: u64,
        /// Each honest validator and its ledger height at the deadline.
        heights: Vec<(usize, u64)>,
    },
    /// A message did not decode at its receiver.
    Undecodable {
        /// The sender.
        from: usize,
        /// The decoder's error.
        error: String,
    },
    /// An engine or ledger call failed where it must not.
    Engine {
        /// The validator.
        node: usize,
        /// What failed.
        error: String,
    },
    /// The scenario or the run itself is broken.
    Setup(String),
    /// Something panicked during the run.
    Panicked(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Disagreement {
                height,
                first,
                second,
            } => write!(
                f,
                "agreement: at height {height} v{} committed {} but v{} committed {}",
                first.0, first.1, second.0, second.1
            ),
            Violation::DoubleSign {
                node,
                slot,
                first,
                second,
            } => write!(
                f,
                "honest double-sign: v{node} signed two {:?} at height {} round {}: {first:?} then {second:?}",
                slot.2, slot.0, slot.1
            ),
            Violation::VotedForForgery { node, vote } => write!(
                f,
                "validity: honest v{node} voted for a forged block: {vote:?}"
            ),
            Violation::CommitNotInLedger {
                node,
                height,
                committed,
                stored,
            } => write!(
                f,
                "v{node} reported block {committed} committed at height {height}, its ledger holds {stored:?}"
            ),
            Violation::InvalidBlockFinal { node, height, hash } => write!(
                f,
                "validity: forged block {hash} is final at height {height} in v{node}'s ledger"
            ),
            Violation::LedgerMismatch {
                height,
                first,
                second,
            } => write!(
                f,
                "ledgers differ at height {height}: v{} has block {} state {}, v{} has block {} state {}",
                first.0, first.1, first.2, second.0, second.1, second.2
            ),
            Violation::ReplayRefused { height, error } => write!(
                f,
                "validity: final block {height} is refused when replayed from genesis: {error}"
            ),
            Violation::HonestAccused { node, offender } => {
                write!(f, "v{node} committed evidence against honest v{offender}")
            }
            Violation::NotSlashed {
                offender,
                evidence_height,
                node,
                genesis_stake,
                stake,
            } => write!(
                f,
                "slashing: evidence against v{offender} was committed at height {evidence_height}, \
                 yet v{node}'s ledger still gives it stake {stake} (genesis {genesis_stake})"
            ),
            Violation::NoLiveness {
                target,
                deadline_ms,
                heights,
            } => {
                let heights: Vec<String> =
                    heights.iter().map(|(v, h)| format!("v{v}: {h}")).collect();
                write!(
                    f,
                    "liveness: honest validators did not all reach height {target} by {deadline_ms} ms ({})",
                    heights.join(", ")
                )
            }
            Violation::Undecodable { from, error } => {
                write!(f, "a message from v{from} did not decode: {error}")
            }
            Violation::Engine { node, error } => write!(f, "v{node}: {error}"),
            Violation::Setup(what) => write!(f, "setup: {what}"),
            Violation::Panicked(what) => write!(f, "panicked: {what}"),
        }
    }
}

/// Evidence against one validator seen in honest commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caught {
    /// Height of the first commit that carried it.
    pub height: u64,
    /// When, milliseconds after the start.
    pub at_ms: u64,
    /// Commits that carried evidence against it (one per validator and height).
    pub commits: u64,
}

/// The oracles' memory of one run.
#[derive(Debug, Default)]
pub struct Oracles {
    /// Validator keys by index.
    keys: Vec<PublicKey>,
    honest: Vec<bool>,
    finalized: BTreeMap<u64, (usize, Hash)>,
    signed: BTreeMap<(usize, u64, u32, SignedKind), Signed>,
    forged: BTreeMap<Hash, Forgery>,
    caught: BTreeMap<usize, Caught>,
    violations: Vec<Violation>,
}

impl Oracles {
    /// Oracles for validators with `keys`, of which those flagged in `honest` are honest.
    pub fn new(keys: Vec<PublicKey>, honest: Vec<bool>) -> Oracles {
        Oracles {
            keys,
            honest,
            ..Oracles::default()
        }
    }

    /// Records a broken rule found outside the oracles (liveness, engine errors).
    pub fn report(&mut self, violation: Violation) {
        log::error!(target: "sim", "VIOLATION {violation}");
        self.violations.push(violation);
    }

    /// Everything broken so far.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Offenders caught by honest commits, by validator index.
    pub fn caught(&self) -> &BTreeMap<usize, Caught> {
        &self.caught
    }

    /// Forged blocks, by hash.
    pub fn forged(&self) -> &BTreeMap<Hash, Forgery> {
        &self.forged
    }

    /// An honest validator broadcast `msg`: two different messages it signed for one slot
    /// break the no-double-sign rule (for parts: parts of two blocks in one round), and a vote
    /// for a forged block breaks validity. Messages it relays for others are not its signatures.
    pub fn on_broadcast(&mut self, node: usize, msg: &ConsensusMessage) {
        let own = self.keys[node];
        let (slot, signed) = match msg {
            ConsensusMessage::Vote(v) if v.vote.validator == own => {
                let kind = match v.vote.kind {
                    VoteKind::Prevote => SignedKind::Prevote,
                    VoteKind::Precommit => SignedKind::Precommit,
                };
                (
                    (node, v.vote.height, v.vote.round, kind),
                    Signed::Vote(v.vote.clone()),
                )
            }
            ConsensusMessage::Proposal(p) if p.proposal.proposer == own => (
                (
                    node,
                    p.proposal.height,
                    p.proposal.round,
                    SignedKind::Proposal,
                ),
                Signed::Proposal(p.proposal.clone()),
            ),
            ConsensusMessage::Part(p) if p.part.proposer == own => (
                (node, p.part.height, p.part.round, SignedKind::Part),
                Signed::Part(p.part.block),
            ),
            _ => return,
        };
        if let Signed::Vote(Vote {
            block: Some(block), ..
        }) = &signed
            && self.forged.contains_key(block)
        {
            self.report(Violation::VotedForForgery {
                node,
                vote: Box::new(signed.clone()),
            });
        }
        match self.signed.get(&slot) {
            None => {
                self.signed.insert(slot, signed);
            }
            Some(first) if *first == signed => {}
            Some(first) => {
                let first = Box::new(first.clone());
                self.report(Violation::DoubleSign {
                    node,
                    slot: (slot.1, slot.2, slot.3),
                    first,
                    second: Box::new(signed),
                });
            }
        }
    }

    /// Whether honest validator `node` broadcast a vote at `height`.
    pub fn signed_votes_at(&self, node: usize, height: u64) -> bool {
        let slots = (node, height, 0, SignedKind::Proposal)
            ..=(node, height, u32::MAX, SignedKind::Precommit);
        self.signed
            .range(slots)
            .any(|((_, _, _, kind), _)| matches!(kind, SignedKind::Prevote | SignedKind::Precommit))
    }

    /// The Byzantine proposer sent a forged block.
    pub fn on_forgery(&mut self, forgery: Forgery) {
        self.forged.insert(forgery.hash, forgery);
    }

    /// An honest validator's engine reported block `hash` committed at `height`, and its
    /// ledger holds `stored` there.
    pub fn on_commit(&mut self, node: usize, height: u64, hash: Hash, stored: Option<Hash>) {
        if stored != Some(hash) {
            self.report(Violation::CommitNotInLedger {
                node,
                height,
                committed: hash,
                stored,
            });
        }
        if self.forged.contains_key(&hash) {
            self.report(Violation::InvalidBlockFinal { node, height, hash });
        }
        match self.finalized.get(&height) {
            None => {
                self.finalized.insert(height, (node, hash));
            }
            Some(&(_, first)) if first == hash => {}
            Some(&first) => self.report(Violation::Disagreement {
                height,
                first,
                second: (node, hash),
            }),
        }
    }

    /// An honest validator's commit at `height` carried `evidence`, at `at_ms`.
    pub fn on_evidence(&mut self, node: usize, height: u64, evidence: &[Evidence], at_ms: u64) {
        for e in evidence {
            let Some(offender) = self.keys.iter().position(|k| *k == e.offender()) else {
                self.report(Violation::Engine {
                    node,
                    error: format!("committed evidence against unknown {:?}", e.offender()),
                });
                continue;
            };
            if self.honest[offender] {
                self.report(Violation::HonestAccused { node, offender });
                continue;
            }
            self.caught
                .entry(offender)
                .and_modify(|c| c.commits += 1)
                .or_insert(Caught {
                    height,
                    at_ms,
                    commits: 1,
                });
        }
    }

    /// End of run: the honest ledgers agree at every common height on block hash and state
    /// root, hold no forged block, and replay from genesis on a fresh ledger.
    pub fn check_ledgers<S: Store>(&mut self, genesis: &Genesis, ledgers: &[(usize, &Ledger<S>)]) {
        let common = ledgers.iter().map(|(_, l)| l.height()).min().unwrap_or(0);
        let mut longest: Option<(usize, &Ledger<S>)> = None;
        for &(node, ledger) in ledgers {
            if longest.is_none_or(|(_, l)| ledger.height() > l.height()) {
                longest = Some((node, ledger));
            }
        }
        for height in 1..=common {
            let mut first: Option<(usize, Hash, Hash)> = None;
            for &(node, ledger) in ledgers {
                let header = match ledger.block(height) {
                    Ok(Some(block)) => block.header,
                    other => {
                        self.report(Violation::Engine {
                            node,
                            error: format!("ledger block {height} unreadable: {other:?}"),
                        });
                        return;
                    }
                };
                let this = (node, header.hash(), header.state_root);
                if self.forged.contains_key(&this.1) {
                    self.report(Violation::InvalidBlockFinal {
                        node,
                        height,
                        hash: this.1,
                    });
                }
                match first {
                    None => first = Some(this),
                    Some(f) if (f.1, f.2) == (this.1, this.2) => {}
                    Some(f) => {
                        self.report(Violation::LedgerMismatch {
                            height,
                            first: f,
                            second: this,
                        });
                        return;
                    }
                }
            }
        }
        if let Some((_, ledger)) = longest {
            self.replay(genesis, ledger);
        }
    }

    /// Replays every block of `ledger` with its commit on a fresh ledger.
    fn replay<S: Store>(&mut self, genesis: &Genesis, ledger: &Ledger<S>) {
        let mut fresh = match Ledger::open(MemStore::new(), genesis) {
            Ok(l) => l,
            Err(e) => {
                self.report(Violation::Setup(format!("fresh ledger: {e}")));
                return;
            }
        };
        for height in 1..=ledger.height() {
            let (block, commit) = match (ledger.block(height), ledger.commit_at(height)) {
                (Ok(Some(b)), Ok(Some(c))) => (b, c),
                other => {
                    self.report(Violation::ReplayRefused {
                        height,
                        error: format!("block or commit unreadable: {other:?}"),
                    });
                    return;
                }
            };
            if self.forged.contains_key(&block.hash()) {
                // Already reported by the ledger comparison.
                return;
            }
            let time = block.header.time_ms;
            if let Err(e) = fresh.apply(block, &commit, time) {
                self.report(Violation::ReplayRefused {
                    height,
                    error: e.to_string(),
                });
                return;
            }
        }
    }

    /// End of a completed run: each caught offender has less bonded stake than at genesis in
    /// every honest ledger.
    pub fn check_slashing<S: Store>(
        &mut self,
        genesis_stakes: &[u64],
        ledgers: &[(usize, &Ledger<S>)],
    ) {
        let caught: Vec<(usize, Caught)> = self.caught.iter().map(|(o, c)| (*o, *c)).collect();
        for (offender, c) in caught {
            for &(node, ledger) in ledgers {
                let stake = ledger.validators().power(&self.keys[offender]);
                if stake >= genesis_stakes[offender] {
                    self.report(Violation::NotSlashed {
                        offender,
                        evidence_height: c.height,
                        node,
                        genesis_stake: genesis_stakes[offender],
                        stake,
                    });
                }
            }
        }
    }
}

/// Honest validators' ledger heights, for reports.
pub fn heights<S: Store>(ledgers: &[(usize, &Ledger<S>)]) -> Vec<(usize, u64)> {
    ledgers.iter().map(|(n, l)| (*n, l.height())).collect()
}

#[cfg(test)]
mod tests {
    use types::{SecretKey, SignedVote};

    use super::*;

    fn keys() -> Vec<PublicKey> {
        (1..=4u8)
            .map(|i| SecretKey::from_seed([i; 32]).public_key())
            .collect()
    }

    /// A precommit at height 3, round 1 (signed by one fixed key: the oracles do not verify).
    fn signed_vote(validator: PublicKey, block: Option<Hash>) -> SignedVote {
        let key = SecretKey::from_seed([1; 32]);
        let vote = Vote {
            height: 3,
            round: 1,
            kind: VoteKind::Precommit,
            block,
            validator,
        };
        let signature = key.sign(types::Domain::Vote, &"t".parse().expect("chain id"), &vote);
        SignedVote { vote, signature }
    }

    fn vote(validator: PublicKey, block: Option<Hash>) -> ConsensusMessage {
        ConsensusMessage::Vote(signed_vote(validator, block))
    }

    #[test]
    fn two_different_votes_for_one_slot_are_a_double_sign_and_a_repeat_is_not() {
        let keys = keys();
        let mut o = Oracles::new(keys.clone(), vec![true; 4]);
        o.on_broadcast(0, &vote(keys[0], Some(Hash([1; 32]))));
        o.on_broadcast(0, &vote(keys[0], Some(Hash([1; 32]))));
        assert!(o.violations().is_empty());
        o.on_broadcast(0, &vote(keys[0], None));
        assert!(matches!(
            o.violations(),
            [Violation::DoubleSign { node: 0, .. }]
        ));
    }

    #[test]
    fn a_vote_relayed_for_another_validator_is_not_the_relayers_signature() {
        let keys = keys();
        let mut o = Oracles::new(keys.clone(), vec![true; 4]);
        o.on_broadcast(1, &vote(keys[0], Some(Hash([1; 32]))));
        o.on_broadcast(1, &vote(keys[0], None));
        assert!(o.violations().is_empty());
    }

    #[test]
    fn evidence_against_an_honest_validator_is_a_violation_and_against_a_byzantine_one_is_caught() {
        let keys = keys();
        let mut o = Oracles::new(keys.clone(), vec![true, true, true, false]);
        let evidence = |i: usize| {
            Evidence::double_vote(
                signed_vote(keys[i], Some(Hash([1; 32]))),
                signed_vote(keys[i], None),
            )
        };
        o.on_evidence(0, 4, &[evidence(3)], 900);
        assert!(o.violations().is_empty());
        assert_eq!(o.caught()[&3].height, 4);
        o.on_evidence(0, 5, &[evidence(1)], 1000);
        assert!(matches!(
            o.violations(),
            [Violation::HonestAccused {
                node: 0,
                offender: 1
            }]
        ));
    }

    #[test]
    fn two_blocks_committed_at_one_height_break_agreement() {
        let mut o = Oracles::new(keys(), vec![true; 4]);
        o.on_commit(0, 5, Hash([1; 32]), Some(Hash([1; 32])));
        o.on_commit(1, 5, Hash([1; 32]), Some(Hash([1; 32])));
        assert!(o.violations().is_empty());
        o.on_commit(2, 5, Hash([2; 32]), Some(Hash([2; 32])));
        assert!(matches!(
            o.violations(),
            [Violation::Disagreement { height: 5, .. }]
        ));
    }

    #[test]
    fn an_honest_vote_for_a_forgery_and_its_commit_break_validity() {
        let keys = keys();
        let mut o = Oracles::new(keys.clone(), vec![true; 4]);
        o.on_forgery(Forgery {
            height: 3,
            hash: Hash([9; 32]),
            corruption: crate::byzantine::Corruption::StateRoot,
        });
        o.on_broadcast(1, &vote(keys[1], Some(Hash([9; 32]))));
        o.on_commit(0, 3, Hash([9; 32]), Some(Hash([9; 32])));
        assert!(matches!(
            o.violations(),
            [
                Violation::VotedForForgery { node: 1, .. },
                Violation::InvalidBlockFinal { node: 0, .. }
            ]
        ));
    }
}

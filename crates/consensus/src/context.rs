//! Our types seen through Malachite's `Context`: heights, block ids as values, Ed25519-signed
//! votes and proposals over our canonical encoding, the stake-weighted validator set, and a
//! deterministic stake-weighted proposer order.
//!
//! Nothing outside this crate sees these types: the rest of the node speaks `types`.

use std::fmt;

use malachite_core_types as mc;
use mc::{NilOrVal, Round, VoteType};
use types::{
    ChainId, DecodeError, Encode, Hash, Proposal as WireProposal, PublicKey, SecretKey, Signature,
    Tag, Vote as WireVote, VoteKind,
};

use crate::message::BlockPart;

/// A validator's address: its public key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub PublicKey);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_string()[..12])
    }
}

impl mc::Address for Address {}

/// A block height.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u64);

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl mc::Height for Height {
    const ZERO: Self = Height(0);
    const INITIAL: Self = Height(1);

    fn increment_by(&self, n: u64) -> Self {
        Height(self.0.saturating_add(n))
    }

    fn decrement_by(&self, n: u64) -> Option<Self> {
        self.0.checked_sub(n).map(Height)
    }

    fn as_u64(&self) -> u64 {
        self.0
    }
}

/// What consensus decides on: the hash of a block. The block itself travels in parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub Hash);

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_string()[..12])
    }
}

impl mc::Value for BlockId {
    type Id = BlockId;

    fn id(&self) -> BlockId {
        *self
    }
}

/// The round of a wire message (always defined) as Malachite's round.
pub fn round_of(round: u32) -> Round {
    Round::new(round)
}

/// A defined Malachite round as a wire round; `None` for `Round::Nil`.
pub fn wire_round(round: Round) -> Option<u32> {
    round.as_u32()
}

/// A prevote or precommit, in the shape Malachite reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    /// Height voted at.
    pub height: Height,
    /// Round voted in.
    pub round: Round,
    /// Prevote or precommit.
    pub kind: VoteType,
    /// The block voted for, or nil.
    pub value: NilOrVal<BlockId>,
    /// The voter.
    pub validator: Address,
}

impl Vote {
    /// The wire form, whose encoding is what gets signed. `None` for a vote with no round.
    pub fn to_wire(&self) -> Option<WireVote> {
        Some(WireVote {
            height: self.height.0,
            round: wire_round(self.round)?,
            kind: match self.kind {
                VoteType::Prevote => VoteKind::Prevote,
                VoteType::Precommit => VoteKind::Precommit,
            },
            block: match self.value {
                NilOrVal::Nil => None,
                NilOrVal::Val(id) => Some(id.0),
            },
            validator: self.validator.0,
        })
    }

    /// From the wire form.
    pub fn from_wire(vote: &WireVote) -> Vote {
        Vote {
            height: Height(vote.height),
            round: round_of(vote.round),
            kind: match vote.kind {
                VoteKind::Prevote => VoteType::Prevote,
                VoteKind::Precommit => VoteType::Precommit,
            },
            value: match vote.block {
                None => NilOrVal::Nil,
                Some(hash) => NilOrVal::Val(BlockId(hash)),
            },
            validator: Address(vote.validator),
        }
    }
}

impl mc::Vote<Ctx> for Vote {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &NilOrVal<BlockId> {
        &self.value
    }

    fn take_value(self) -> NilOrVal<BlockId> {
        self.value
    }

    fn vote_type(&self) -> VoteType {
        self.kind
    }

    fn validator_address(&self) -> &Address {
        &self.validator
    }

    // Vote extensions are disabled: votes carry none and accept none.
    fn extension(&self) -> Option<&mc::SignedExtension<Ctx>> {
        None
    }

    fn take_extension(&mut self) -> Option<mc::SignedExtension<Ctx>> {
        None
    }

    fn extend(self, _extension: mc::SignedExtension<Ctx>) -> Self {
        self
    }
}

/// A block proposal, in the shape Malachite reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Height proposed at.
    pub height: Height,
    /// Round proposed in.
    pub round: Round,
    /// The proposed block.
    pub value: BlockId,
    /// Round of the polka that re-proposes the block, or nil.
    pub pol_round: Round,
    /// The proposer.
    pub proposer: Address,
}

impl Proposal {
    /// The wire form, whose encoding is what gets signed. `None` for a proposal with no round.
    pub fn to_wire(&self) -> Option<WireProposal> {
        Some(WireProposal {
            height: self.height.0,
            round: wire_round(self.round)?,
            pol_round: wire_round(self.pol_round),
            block: self.value.0,
            proposer: self.proposer.0,
        })
    }

    /// From the wire form.
    pub fn from_wire(proposal: &WireProposal) -> Proposal {
        Proposal {
            height: Height(proposal.height),
            round: round_of(proposal.round),
            value: BlockId(proposal.block),
            pol_round: proposal.pol_round.map_or(Round::Nil, round_of),
            proposer: Address(proposal.proposer),
        }
    }
}

impl mc::Proposal<Ctx> for Proposal {
    fn height(&self) -> Height {
        self.height
    }

    fn round(&self) -> Round {
        self.round
    }

    fn value(&self) -> &BlockId {
        &self.value
    }

    fn take_value(self) -> BlockId {
        self.value
    }

    fn pol_round(&self) -> Round {
        self.pol_round
    }

    fn validator_address(&self) -> &Address {
        &self.proposer
    }
}

impl mc::ProposalPart<Ctx> for BlockPart {
    fn is_first(&self) -> bool {
        self.index == 0
    }

    fn is_last(&self) -> bool {
        self.index + 1 == self.count
    }
}

/// A validator with voting power (its bonded stake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validator {
    /// Address (public key).
    pub address: Address,
    /// Voting power.
    pub power: u64,
}

impl mc::Validator<Ctx> for Validator {
    fn address(&self) -> &Address {
        &self.address
    }

    fn public_key(&self) -> &PublicKey {
        &self.address.0
    }

    fn voting_power(&self) -> u64 {
        self.power
    }
}

/// The validators with voting power at one height, ascending by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
    total: u64,
}

impl ValidatorSet {
    /// The active validators of the chain's set (those with bonded stake).
    pub fn from_chain(set: &types::ValidatorSet) -> ValidatorSet {
        let validators: Vec<Validator> = set
            .active()
            .map(|v| Validator {
                address: Address(v.key),
                power: v.stake,
            })
            .collect();
        let total = validators
            .iter()
            .fold(0u64, |sum, v| sum.saturating_add(v.power));
        ValidatorSet { validators, total }
    }

    /// The validators, ascending by address.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }
}

impl mc::ValidatorSet<Ctx> for ValidatorSet {
    fn count(&self) -> usize {
        self.validators.len()
    }

    fn total_voting_power(&self) -> u64 {
        self.total
    }

    fn get_by_address(&self, address: &Address) -> Option<&Validator> {
        self.validators
            .binary_search_by(|v| v.address.cmp(address))
            .ok()
            .map(|i| &self.validators[i])
    }

    fn get_by_index(&self, index: usize) -> Option<&Validator> {
        self.validators.get(index)
    }
}

/// Ed25519 over our canonical encodings (see `types::crypto`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl mc::SigningScheme for Ed25519 {
    type DecodingError = DecodeError;
    type Signature = Signature;
    type PublicKey = PublicKey;
    type PrivateKey = SecretKey;

    fn decode_signature(bytes: &[u8]) -> Result<Signature, DecodeError> {
        <Signature as types::Decode>::from_bytes(bytes)
    }

    fn encode_signature(signature: &Signature) -> Vec<u8> {
        signature.to_bytes()
    }

    fn decode_public_key(bytes: &[u8]) -> Result<PublicKey, DecodeError> {
        <PublicKey as types::Decode>::from_bytes(bytes)
    }

    fn encode_public_key(public_key: &PublicKey) -> Vec<u8> {
        public_key.to_bytes()
    }
}

/// Our consensus context: the chain id every signature is bound to.
#[derive(Clone, Debug)]
pub struct Ctx {
    chain_id: ChainId,
}

impl Ctx {
    /// The context of chain `chain_id`.
    pub fn new(chain_id: ChainId) -> Ctx {
        Ctx { chain_id }
    }

    /// The chain id signatures are bound to.
    pub fn chain_id(&self) -> &ChainId {
        &self.chain_id
    }
}

impl mc::Context for Ctx {
    type Address = Address;
    type Height = Height;
    type ProposalPart = BlockPart;
    type Proposal = Proposal;
    type Validator = Validator;
    type ValidatorSet = ValidatorSet;
    type Timeouts = mc::LinearTimeouts;
    type Value = BlockId;
    type Vote = Vote;
    type Extension = ();
    type SigningScheme = Ed25519;

    fn select_proposer<'a>(
        &self,
        validator_set: &'a ValidatorSet,
        height: Height,
        round: Round,
    ) -> &'a Validator {
        let index = proposer_index(validator_set.validators(), height.0, round.as_u32());
        &validator_set.validators()[index]
    }

    fn new_proposal(
        &self,
        height: Height,
        round: Round,
        value: BlockId,
        pol_round: Round,
        address: Address,
    ) -> Proposal {
        Proposal {
            height,
            round,
            value,
            pol_round,
            proposer: address,
        }
    }

    fn new_prevote(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote {
            height,
            round,
            kind: VoteType::Prevote,
            value: value_id,
            validator: address,
        }
    }

    fn new_precommit(
        &self,
        height: Height,
        round: Round,
        value_id: NilOrVal<BlockId>,
        address: Address,
    ) -> Vote {
        Vote {
            height,
            round,
            kind: VoteType::Precommit,
            value: value_id,
            validator: address,
        }
    }
}

/// Index of the proposer of `round` at `height` among `validators` (which must not be empty).
///
/// Each height draws a stake-weighted order of the validators without replacement, from a hash
/// of the height: round 0 goes to a validator with probability proportional to its stake, and
/// rounds `0..n` give every validator one turn, so a silent proposer costs at most one round
/// before an honest one is drawn. Rounds past `n` repeat the order. Integer arithmetic only:
/// every node computes the same order.
pub fn proposer_index(validators: &[Validator], height: u64, round: Option<u32>) -> usize {
    assert!(!validators.is_empty(), "a validator set is never empty");
    let n = validators.len();
    let turn = round.unwrap_or(0) as usize % n;
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut total: u128 = validators.iter().map(|v| u128::from(v.power)).sum();
    for draw in 0..=turn {
        let digest = Hash::tagged(
            Tag::ProposerDraw,
            &[&height.to_be_bytes(), &(draw as u64).to_be_bytes()],
        );
        let mut wide = [0u8; 16];
        wide.copy_from_slice(&digest.0[..16]);
        let mut target = u128::from_be_bytes(wide) % total.max(1);
        let mut pick = remaining.len() - 1;
        for (position, &index) in remaining.iter().enumerate() {
            let power = u128::from(validators[index].power);
            if target < power {
                pick = position;
                break;
            }
            target -= power;
        }
        let chosen = remaining.remove(pick);
        if draw == turn {
            return chosen;
        }
        total -= u128::from(validators[chosen].power);
    }
    unreachable!("the loop returns at its last draw")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(powers: &[u64]) -> Vec<Validator> {
        powers
            .iter()
            .enumerate()
            .map(|(i, &power)| Validator {
                address: Address(SecretKey::from_seed([i as u8 + 1; 32]).public_key()),
                power,
            })
            .collect()
    }

    #[test]
    fn proposer_order_is_deterministic_and_gives_every_validator_one_turn_per_n_rounds() {
        let validators = set(&[10, 1, 5, 100, 3]);
        for height in 1..50 {
            let order: Vec<usize> = (0..5)
                .map(|r| proposer_index(&validators, height, Some(r)))
                .collect();
            let again: Vec<usize> = (0..5)
                .map(|r| proposer_index(&validators, height, Some(r)))
                .collect();
            assert_eq!(order, again);
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4], "height {height}: {order:?}");
            assert_eq!(
                proposer_index(&validators, height, Some(5)),
                order[0],
                "round n repeats round 0"
            );
        }
    }

    #[test]
    fn round_zero_proposers_follow_stake() {
        let validators = set(&[1, 3, 6]);
        let mut counts = [0u32; 3];
        for height in 0..6000 {
            counts[proposer_index(&validators, height, Some(0))] += 1;
        }
        // Expected 600 / 1800 / 3600; allow a generous statistical margin.
        assert!((450..750).contains(&counts[0]), "{counts:?}");
        assert!((1600..2000).contains(&counts[1]), "{counts:?}");
        assert!((3350..3850).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn votes_and_proposals_round_trip_through_the_wire_form() {
        let key = SecretKey::from_seed([9; 32]).public_key();
        for value in [NilOrVal::Nil, NilOrVal::Val(BlockId(Hash([7; 32])))] {
            for kind in [VoteType::Prevote, VoteType::Precommit] {
                let vote = Vote {
                    height: Height(3),
                    round: Round::new(2),
                    kind,
                    value,
                    validator: Address(key),
                };
                let wire = vote.to_wire().expect("defined round");
                assert_eq!(Vote::from_wire(&wire), vote);
            }
        }
        for pol_round in [Round::Nil, Round::new(1)] {
            let proposal = Proposal {
                height: Height(3),
                round: Round::new(2),
                value: BlockId(Hash([1; 32])),
                pol_round,
                proposer: Address(key),
            };
            let wire = proposal.to_wire().expect("defined round");
            assert_eq!(Proposal::from_wire(&wire), proposal);
        }
    }

    #[test]
    fn validator_set_keeps_only_bonded_validators_and_finds_them_by_address() {
        use mc::ValidatorSet as _;
        let keys: Vec<PublicKey> = (1..=3u8)
            .map(|i| SecretKey::from_seed([i; 32]).public_key())
            .collect();
        let chain_set = types::ValidatorSet::new(vec![
            types::Validator {
                key: keys[0],
                stake: 5,
                unbonding: 0,
                release_height: 0,
            },
            types::Validator {
                key: keys[1],
                stake: 0,
                unbonding: 7,
                release_height: 10,
            },
            types::Validator {
                key: keys[2],
                stake: 9,
                unbonding: 0,
                release_height: 0,
            },
        ])
        .expect("valid set");
        let set = ValidatorSet::from_chain(&chain_set);
        assert_eq!(set.count(), 2);
        assert_eq!(set.total_voting_power(), 14);
        assert!(set.get_by_address(&Address(keys[1])).is_none());
        assert_eq!(
            set.get_by_address(&Address(keys[2])).map(|v| v.power),
            Some(9)
        );
    }
}

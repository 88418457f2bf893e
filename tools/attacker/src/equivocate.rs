//! `attacker equivocate`: a validator that double-signs. It joins the network with its own key,
//! relays gossip like any peer, and for every slot it sees the honest validators vote in, signs
//! two conflicting votes of its own; when it is the proposer of a round, it signs two proposals
//! for two blocks that do not exist. The honest validators should turn each pair into evidence
//! and a slashing transaction.
//!
//! # Design
//! [`Equivocator`] is sans-IO: consensus messages in, conflicting pairs out, with the slots it
//! has offended in (so each slot is offended once) and the validator set it draws proposers
//! from. [`run`] wires it to a [`Peer`] and publishes the pairs exactly as an honest node's
//! runtime publishes its own messages.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use consensus::ConsensusMessage;
use consensus::context::{self, proposer_index};
use p2p::Multiaddr;
use p2p::gossip::{Gossip, TopicKind};
use p2p::network::NetworkEvent;
use tokio::sync::watch;
use types::{
    ChainId, Domain, Encode, Genesis, Hash, Proposal, PublicKey, SecretKey, SignedProposal,
    SignedVote, Tag, Vote, VoteKind,
};

use crate::peer::{self, Peer, RunArgs, read_genesis};

/// Most offending slots one run may sign.
const OFFENCES_MAX: u64 = 10_000;
/// The validator set is read from `--api` this often.
const VALIDATORS_EVERY: Duration = Duration::from_secs(1);
/// One `/v1/validators` request fails after this long.
const API_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/v1/validators` answer read, bytes (a full set of validators is far smaller).
const API_BODY_MAX_BYTES: usize = 1024 * 1024;
/// After the last offence the swarm keeps running this long, so the last pair leaves.
const LINGER: Duration = Duration::from_secs(1);

/// Options of `attacker equivocate`.
#[derive(Args)]
pub struct EquivocateArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The chain's genesis file (TOML).
    #[arg(long)]
    genesis: PathBuf,
    /// The byzantine validator's identity: 64 hex digits of Ed25519 seed, mode 0600.
    #[arg(long)]
    key: PathBuf,
    /// An honest validator to connect to (`/ip4/IP/tcp/PORT/p2p/PEERID`); repeat for several.
    #[arg(long = "peer", value_name = "MULTIADDR", required = true)]
    peers: Vec<Multiaddr>,
    /// An honest node's public API (`http://IP:PORT`): the validator set is read from its
    /// `/v1/validators`, since slashing changes the stakes proposers are drawn by.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Stop after offending in this many (height, round, kind) slots.
    #[arg(long, default_value_t = 20)]
    max_offences: usize,
    /// Double-vote at this many heights only. Each offending height costs a fifth of the stake,
    /// and the stake is the chance of proposing: past these heights it only double-proposes,
    /// at every turn it gets (0: never double-votes).
    #[arg(long, default_value_t = 2)]
    vote_heights: usize,
}

/// What an offence is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffenceKind {
    /// Two votes of one kind for different blocks.
    DoubleVote,
    /// Two proposals for different blocks.
    DoubleProposal,
}

/// Two conflicting messages signed for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offence {
    /// Votes or proposals.
    pub kind: OffenceKind,
    /// Height of the slot.
    pub height: u64,
    /// Round of the slot.
    pub round: u32,
    /// The two messages.
    pub pair: [ConsensusMessage; 2],
}

/// A slot a validator signs at most once when honest: a vote kind, or the proposal (`None`).
type Slot = (u64, u32, Option<VoteKind>);

/// The double-signing logic, without I/O.
pub struct Equivocator {
    key: SecretKey,
    me: PublicKey,
    chain: ChainId,
    /// The validator set proposers are drawn from, in the consensus crate's order.
    validators: Vec<context::Validator>,
    /// Heights double-voted at (at most `max_vote_heights`).
    vote_heights: BTreeSet<u64>,
    max_vote_heights: usize,
    /// Slots offended in (at most `max_offences`).
    offended: BTreeSet<Slot>,
    max_offences: usize,
    /// Highest height a consensus message was seen for: older ones are stale.
    height: u64,
}

impl Equivocator {
    /// The equivocator holding `key` on `genesis`'s chain, signing in at most `max_offences`
    /// slots, double votes at no more than `max_vote_heights` heights. Fails when `key` is not a
    /// genesis validator.
    pub fn new(
        key: SecretKey,
        genesis: &Genesis,
        max_offences: usize,
        max_vote_heights: usize,
    ) -> Result<Equivocator> {
        let me = key.public_key();
        let set = genesis
            .validator_set()
            .context("the genesis validator set")?;
        if set.power(&me) == 0 {
            bail!(
                "the key {me} is not a validator of chain {}: only a validator's double votes are an offence",
                genesis.chain_id
            );
        }
        let mut equivocator = Equivocator {
            key,
            me,
            chain: genesis.chain_id.clone(),
            validators: Vec::new(),
            vote_heights: BTreeSet::new(),
            max_vote_heights,
            offended: BTreeSet::new(),
            max_offences,
            height: 0,
        };
        equivocator.set_validators(&set);
        Ok(equivocator)
    }

    /// Replaces the validator set proposers are drawn from (an empty set is ignored).
    pub fn set_validators(&mut self, set: &types::ValidatorSet) {
        let validators = context::ValidatorSet::from_chain(set).validators().to_vec();
        if !validators.is_empty() {
            self.validators = validators;
        }
    }

    /// Whether every allowed slot has been offended in.
    pub fn exhausted(&self) -> bool {
        self.offended.len() >= self.max_offences
    }

    /// The offences a consensus message from the network calls for: a double vote for the slot
    /// of another validator's vote, double proposals for the rounds this validator proposes in
    /// (the message's round, the next, and round 0 of the next height).
    pub fn on_message(&mut self, message: &ConsensusMessage) -> Vec<Offence> {
        let (height, round) = match message {
            ConsensusMessage::Vote(v) if v.vote.validator != self.me => {
                (v.vote.height, v.vote.round)
            }
            ConsensusMessage::Proposal(p) if p.proposal.proposer != self.me => {
                (p.proposal.height, p.proposal.round)
            }
            ConsensusMessage::Part(p) if p.part.proposer != self.me => {
                (p.part.height, p.part.round)
            }
            _ => return Vec::new(),
        };
        if height < self.height {
            return Vec::new();
        }
        self.height = height;
        let mut offences = Vec::new();
        if let ConsensusMessage::Vote(v) = message
            && self.is_validator(&v.vote.validator)
            && self.votes_at(height)
            && self.take((height, round, Some(v.vote.kind)))
        {
            self.vote_heights.insert(height);
            let [a, b] = double_vote(&self.key, &self.chain, &v.vote);
            offences.push(Offence {
                kind: OffenceKind::DoubleVote,
                height,
                round,
                pair: [ConsensusMessage::Vote(a), ConsensusMessage::Vote(b)],
            });
        }
        for (h, r) in [
            (height, round),
            (height, round.saturating_add(1)),
            (height + 1, 0),
        ] {
            if self.proposes(h, r) && self.take((h, r, None)) {
                let [a, b] = double_proposal(&self.key, &self.chain, h, r);
                offences.push(Offence {
                    kind: OffenceKind::DoubleProposal,
                    height: h,
                    round: r,
                    pair: [ConsensusMessage::Proposal(a), ConsensusMessage::Proposal(b)],
                });
            }
        }
        offences
    }

    fn is_validator(&self, key: &PublicKey) -> bool {
        self.validators.iter().any(|v| v.address.0 == *key)
    }

    /// Whether this validator is the proposer of `round` at `height`.
    fn proposes(&self, height: u64, round: u32) -> bool {
        !self.validators.is_empty()
            && self.validators[proposer_index(&self.validators, height, Some(round))]
                .address
                .0
                == self.me
    }

    /// Whether it double-votes at `height`: one of its vote heights, or room for another.
    fn votes_at(&self, height: u64) -> bool {
        self.vote_heights.contains(&height) || self.vote_heights.len() < self.max_vote_heights
    }

    /// Claims a slot: false when it was offended in already or the bound is reached.
    fn take(&mut self, slot: Slot) -> bool {
        !self.exhausted() && self.offended.insert(slot)
    }
}

/// Two votes by `key` for the slot of `seen` (another validator's vote) that conflict: one for
/// the block `seen` names and one for nil, or for nil and a block nobody has when `seen` is nil.
pub fn double_vote(key: &SecretKey, chain: &ChainId, seen: &Vote) -> [SignedVote; 2] {
    let vote = Vote {
        validator: key.public_key(),
        ..seen.clone()
    };
    let ours = SignedVote {
        signature: key.sign(Domain::Vote, chain, &vote),
        vote,
    };
    let twin = sim::byzantine::twin_vote(key, chain, &ours);
    [ours, twin]
}

/// Two proposals by `key` for `round` at `height`, for two different blocks nobody has.
pub fn double_proposal(
    key: &SecretKey,
    chain: &ChainId,
    height: u64,
    round: u32,
) -> [SignedProposal; 2] {
    let proposal = Proposal {
        height,
        round,
        pol_round: None,
        block: Hash::tagged(
            Tag::Header,
            &[
                b"attacker/equivocate",
                &height.to_be_bytes(),
                &round.to_be_bytes(),
            ],
        ),
        proposer: key.public_key(),
    };
    let first = SignedProposal {
        signature: key.sign(Domain::Proposal, chain, &proposal),
        proposal,
    };
    let twin = sim::byzantine::twin_proposal(key, chain, &first);
    [first, twin]
}

/// What a run did.
#[derive(Debug, Default)]
struct Tally {
    double_votes: u64,
    double_proposals: u64,
    heights: BTreeSet<u64>,
}

/// Runs `attacker equivocate`.
pub fn run(args: EquivocateArgs) -> Result<()> {
    args.run.check()?;
    peer::in_range(
        "--max-offences",
        u64::try_from(args.max_offences).unwrap_or(u64::MAX),
        OFFENCES_MAX,
    )?;
    let api = match &args.api {
        Some(url) => Some(validators_url(url)?),
        None => None,
    };
    let genesis = read_genesis(&args.genesis)?;
    let key = node::secret::read_key(&args.key).context("reading the validator key")?;
    let equivocator =
        Equivocator::new(key.clone(), &genesis, args.max_offences, args.vote_heights)?;
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let runtime = args.run.enter()?;
    let started = Instant::now();
    let tally = runtime.block_on(attack(&args, &genesis, key, equivocator, api))?;
    let json = serde_json::json!({
        "attack": "equivocate",
        "double_votes": tally.double_votes,
        "double_proposals": tally.double_proposals,
        "heights": tally.heights,
        "secs": peer::secs_since(started),
    });
    println!("{json}");
    Ok(())
}

/// `--api` checked, as the URL of its `/v1/validators`.
fn validators_url(api: &str) -> Result<reqwest::Url> {
    let base = reqwest::Url::parse(api).with_context(|| format!("--api {api:?} is not a URL"))?;
    if base.scheme() != "http" || base.host().is_none() {
        bail!("--api takes http://IP:PORT, got {api:?}");
    }
    base.join("/v1/validators")
        .with_context(|| format!("--api {api:?}"))
}

/// Joins the network as `key` and double-signs until the bound, the deadline or the end.
async fn attack(
    args: &EquivocateArgs,
    genesis: &Genesis,
    key: SecretKey,
    mut equivocator: Equivocator,
    api: Option<reqwest::Url>,
) -> Result<Tally> {
    let mut peer = Peer::start_with(key, genesis, args.peers.clone())?;
    let (set_tx, mut set_rx) = watch::channel(None);
    if let Some(url) = api {
        tokio::spawn(follow_validators(url, set_tx));
    }
    eprintln!(
        "equivocating as {} (peer {}) for up to {:?} or {} slots",
        peer.key.public_key(),
        peer.network.local_peer_id(),
        args.run.duration,
        args.max_offences
    );
    let mut tally = Tally::default();
    let mut redial = tokio::time::interval(peer::REDIAL_EVERY);
    let deadline = tokio::time::sleep(args.run.duration);
    tokio::pin!(deadline);
    while !equivocator.exhausted() {
        tokio::select! {
            _ = &mut deadline => break,
            _ = redial.tick() => peer.redial_if_lost(),
            Ok(()) = set_rx.changed() => {
                if let Some(set) = set_rx.borrow_and_update().as_ref() {
                    equivocator.set_validators(set);
                }
            }
            event = peer.network.next() => {
                let Some(message) = consensus_message(&mut peer, event) else {
                    continue;
                };
                for offence in equivocator.on_message(&message) {
                    publish(&mut peer, &offence, &mut tally);
                }
            }
        }
    }
    let linger = tokio::time::sleep(LINGER);
    tokio::pin!(linger);
    loop {
        tokio::select! {
            _ = &mut linger => break,
            event = peer.network.next() => {
                consensus_message(&mut peer, event);
            }
        }
    }
    eprintln!(
        "{:.3}s: stopped after {} double votes and {} double proposals",
        peer.secs(),
        tally.double_votes,
        tally.double_proposals
    );
    Ok(tally)
}

/// Handles a network event as [`Peer::handle`] does (an honest relay at genesis); returns the
/// consensus message to look at, if the event carried one.
fn consensus_message(peer: &mut Peer, event: NetworkEvent) -> Option<ConsensusMessage> {
    match peer.handle(event)? {
        NetworkEvent::Gossip {
            gossip: Gossip::Consensus(message),
            ..
        } => Some(message),
        NetworkEvent::Banned(ban) => {
            eprintln!(
                "{:.3}s: the attacker banned {:?}: {}",
                peer.secs(),
                ban.target,
                ban.detail
            );
            None
        }
        _ => None,
    }
}

/// Publishes both messages of an offence on the consensus topic, as honest nodes do.
fn publish(peer: &mut Peer, offence: &Offence, tally: &mut Tally) {
    let sent = offence
        .pair
        .iter()
        .filter(|m| peer.network.publish(TopicKind::Consensus, m.to_bytes()))
        .count();
    let what = match offence.kind {
        OffenceKind::DoubleVote => "double vote",
        OffenceKind::DoubleProposal => "double proposal",
    };
    if sent < offence.pair.len() {
        eprintln!(
            "{:.3}s: {what} at height {} round {}: only {sent} of 2 published (no peers?)",
            peer.secs(),
            offence.height,
            offence.round
        );
        return;
    }
    match offence.kind {
        OffenceKind::DoubleVote => tally.double_votes += 1,
        OffenceKind::DoubleProposal => tally.double_proposals += 1,
    }
    tally.heights.insert(offence.height);
    let detail = match &offence.pair[0] {
        ConsensusMessage::Vote(v) => format!(" ({:?})", v.vote.kind),
        _ => String::new(),
    };
    eprintln!(
        "{:.3}s: {what}{detail} at height {} round {}",
        peer.secs(),
        offence.height,
        offence.round
    );
}

/// Reads the validator set from `url` every [`VALIDATORS_EVERY`] into `sink`, until no one
/// listens. Failures are reported when they start and when they end.
async fn follow_validators(url: reqwest::Url, sink: watch::Sender<Option<types::ValidatorSet>>) {
    let client = match reqwest::Client::builder()
        .timeout(API_TIMEOUT)
        .no_proxy()
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot make an HTTP client for {url}: {e}; using the genesis stakes");
            return;
        }
    };
    let mut tick = tokio::time::interval(VALIDATORS_EVERY);
    let mut failing = false;
    while !sink.is_closed() {
        tick.tick().await;
        match fetch_validators(&client, &url).await {
            Ok(set) => {
                if failing {
                    eprintln!("{url} answers again");
                    failing = false;
                }
                sink.send_if_modified(|current| {
                    let changed = current.as_ref() != Some(&set);
                    *current = Some(set);
                    changed
                });
            }
            Err(e) if !failing => {
                eprintln!("cannot read the validator set from {url}: {e:#}");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// One `GET /v1/validators`, bounded in time and size.
async fn fetch_validators(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<types::ValidatorSet> {
    let mut response = client.get(url.clone()).send().await?.error_for_status()?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > API_BODY_MAX_BYTES {
            bail!("the answer is over {API_BODY_MAX_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    parse_validators(&body)
}

/// The set in a `/v1/validators` answer: `{"validators":[{"key":..,"stake":..},..],..}`.
fn parse_validators(body: &[u8]) -> Result<types::ValidatorSet> {
    let json: serde_json::Value = serde_json::from_slice(body).context("not JSON")?;
    let list = json["validators"]
        .as_array()
        .context("no `validators` list")?;
    let validators = list
        .iter()
        .map(|v| {
            let key: PublicKey = v["key"]
                .as_str()
                .context("a validator without a `key`")?
                .parse()
                .context("a validator key")?;
            let stake = v["stake"]
                .as_u64()
                .context("a validator without a `stake`")?;
            Ok(types::Validator {
                key,
                stake,
                unbonding: 0,
                release_height: 0,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    types::ValidatorSet::new(validators).context("the validator set")
}

#[cfg(test)]
mod tests {
    use types::{Evidence, GenesisValidator};

    use super::*;

    const HONEST: usize = 4;

    /// Four honest validators (1_000_000 each) and the byzantine one (250_000), last.
    fn keys_and_genesis() -> (Vec<SecretKey>, Genesis) {
        let keys: Vec<SecretKey> = (0..=HONEST as u8)
            .map(|i| SecretKey::from_seed([i + 1; 32]))
            .collect();
        let validators = keys
            .iter()
            .enumerate()
            .map(|(i, k)| GenesisValidator {
                key: k.public_key(),
                stake: if i == HONEST { 250_000 } else { 1_000_000 },
            })
            .collect();
        let genesis = Genesis::new(
            ChainId::new("equivocate").expect("valid id"),
            1,
            Vec::new(),
            validators,
        )
        .expect("valid genesis");
        (keys, genesis)
    }

    fn honest_vote(
        key: &SecretKey,
        chain: &ChainId,
        kind: VoteKind,
        block: Option<Hash>,
    ) -> SignedVote {
        let vote = Vote {
            height: 7,
            round: 1,
            kind,
            block,
            validator: key.public_key(),
        };
        SignedVote {
            signature: key.sign(Domain::Vote, chain, &vote),
            vote,
        }
    }

    #[test]
    fn double_votes_conflict_verify_and_make_evidence_for_block_and_nil_votes() {
        let (keys, genesis) = keys_and_genesis();
        let chain = &genesis.chain_id;
        let byzantine = &keys[HONEST];
        for block in [Some(Hash([9; 32])), None] {
            let seen = honest_vote(&keys[0], chain, VoteKind::Precommit, block);
            let [a, b] = double_vote(byzantine, chain, &seen.vote);
            assert_eq!(
                a.vote.block, block,
                "the first names what the honest vote names"
            );
            assert_ne!(a.vote.block, b.vote.block);
            assert!(
                a.vote.block.is_none() || b.vote.block.is_none(),
                "one is nil"
            );
            for v in [&a, &b] {
                assert_eq!(v.verify(chain), Ok(()));
                assert_eq!(v.vote.validator, byzantine.public_key());
                assert_eq!((v.vote.height, v.vote.round), (7, 1));
                assert_eq!(v.vote.kind, VoteKind::Precommit);
            }
            let evidence = Evidence::double_vote(a, b);
            assert_eq!(evidence.verify(chain), Ok(()));
            assert_eq!(evidence.offender(), byzantine.public_key());
            assert_eq!(evidence.height(), 7);
        }
    }

    #[test]
    fn double_proposals_conflict_verify_and_make_evidence() {
        let (keys, genesis) = keys_and_genesis();
        let chain = &genesis.chain_id;
        let [a, b] = double_proposal(&keys[HONEST], chain, 5, 2);
        assert_ne!(a.proposal.block, b.proposal.block);
        assert_eq!(a.verify(chain), Ok(()));
        assert_eq!(b.verify(chain), Ok(()));
        let evidence = Evidence::double_proposal(a, b);
        assert_eq!(evidence.verify(chain), Ok(()));
        assert_eq!(evidence.offender(), keys[HONEST].public_key());
        assert_eq!(evidence.height(), 5);
    }

    #[test]
    fn a_slot_is_offended_once_and_stale_slots_and_own_messages_never() {
        let (keys, genesis) = keys_and_genesis();
        let chain = genesis.chain_id.clone();
        let mut e =
            Equivocator::new(keys[HONEST].clone(), &genesis, 100, 100).expect("a validator");
        let votes = |e: &mut Equivocator, m: &SignedVote| {
            e.on_message(&ConsensusMessage::Vote(m.clone()))
                .into_iter()
                .filter(|o| o.kind == OffenceKind::DoubleVote)
                .count()
        };
        let prevote = honest_vote(&keys[0], &chain, VoteKind::Prevote, Some(Hash([1; 32])));
        assert_eq!(votes(&mut e, &prevote), 1);
        let other = honest_vote(&keys[1], &chain, VoteKind::Prevote, None);
        assert_eq!(votes(&mut e, &other), 0, "the slot is taken");
        let precommit = honest_vote(&keys[1], &chain, VoteKind::Precommit, None);
        assert_eq!(votes(&mut e, &precommit), 1, "another kind is another slot");
        let own = honest_vote(&keys[HONEST], &chain, VoteKind::Prevote, None);
        let mut own = own;
        own.vote.height = 8;
        assert!(e.on_message(&ConsensusMessage::Vote(own)).is_empty());
        let mut later = honest_vote(&keys[2], &chain, VoteKind::Prevote, None);
        later.vote.height = 9;
        later.signature = keys[2].sign(Domain::Vote, &chain, &later.vote);
        assert_eq!(votes(&mut e, &later), 1);
        assert_eq!(votes(&mut e, &precommit), 0, "height 7 is stale now");
        let outsider = SecretKey::from_seed([77; 32]);
        let mut stranger = honest_vote(&outsider, &chain, VoteKind::Precommit, None);
        stranger.vote.height = 9;
        assert_eq!(votes(&mut e, &stranger), 0, "not a validator's vote");
    }

    #[test]
    fn it_double_votes_at_its_first_vote_heights_only() {
        let (keys, genesis) = keys_and_genesis();
        let chain = genesis.chain_id.clone();
        let mut e = Equivocator::new(keys[HONEST].clone(), &genesis, 100, 2).expect("a validator");
        let mut voted_at = Vec::new();
        for height in 10..15u64 {
            for kind in [VoteKind::Prevote, VoteKind::Precommit] {
                let mut seen = honest_vote(&keys[0], &chain, kind, None);
                seen.vote.height = height;
                let offences = e.on_message(&ConsensusMessage::Vote(seen));
                if offences.iter().any(|o| o.kind == OffenceKind::DoubleVote) {
                    voted_at.push((height, kind));
                }
            }
        }
        assert_eq!(
            voted_at,
            [
                (10, VoteKind::Prevote),
                (10, VoteKind::Precommit),
                (11, VoteKind::Prevote),
                (11, VoteKind::Precommit)
            ]
        );
    }

    #[test]
    fn it_proposes_twice_exactly_when_the_consensus_order_makes_it_proposer() {
        let (keys, genesis) = keys_and_genesis();
        let chain = genesis.chain_id.clone();
        let me = keys[HONEST].public_key();
        let set = genesis.validator_set().expect("a set");
        let order = context::ValidatorSet::from_chain(&set);
        let mut e = Equivocator::new(keys[HONEST].clone(), &genesis, 1000, 0).expect("a validator");
        let mut proposals = 0;
        for height in 1..40u64 {
            let mut seen = honest_vote(&keys[0], &chain, VoteKind::Prevote, None);
            seen.vote.height = height;
            seen.vote.round = 0;
            for offence in e.on_message(&ConsensusMessage::Vote(seen)) {
                if offence.kind != OffenceKind::DoubleProposal {
                    continue;
                }
                let (h, r) = (offence.height, offence.round);
                let proposer = &order.validators()[proposer_index(order.validators(), h, Some(r))];
                assert_eq!(proposer.address.0, me, "height {h} round {r}");
                let [ConsensusMessage::Proposal(a), ConsensusMessage::Proposal(b)] = offence.pair
                else {
                    panic!("two proposals");
                };
                assert_eq!((a.proposal.height, a.proposal.round), (h, r));
                assert_eq!(Evidence::double_proposal(a, b).verify(&chain), Ok(()));
                proposals += 1;
            }
        }
        assert!(
            proposals > 0,
            "a fifth of the stake proposes some of 40 heights"
        );
    }

    #[test]
    fn the_bound_stops_it_and_a_non_validator_key_is_refused() {
        let (keys, genesis) = keys_and_genesis();
        let chain = genesis.chain_id.clone();
        let mut e = Equivocator::new(keys[HONEST].clone(), &genesis, 2, 2).expect("a validator");
        for kind in [VoteKind::Prevote, VoteKind::Precommit] {
            let seen = honest_vote(&keys[0], &chain, kind, None);
            e.on_message(&ConsensusMessage::Vote(seen));
        }
        assert!(e.exhausted());
        let mut seen = honest_vote(&keys[0], &chain, VoteKind::Prevote, None);
        seen.vote.round = 5;
        assert!(e.on_message(&ConsensusMessage::Vote(seen)).is_empty());
        let stranger = SecretKey::from_seed([77; 32]);
        let err = Equivocator::new(stranger, &genesis, 2, 2)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("not a validator"), "{err}");
    }

    #[test]
    fn validator_sets_are_read_from_the_api_answer() {
        let (keys, _) = keys_and_genesis();
        let body = format!(
            r#"{{"height":3,"total_stake":1200000,"validators":[{{"key":"{}","stake":1000000}},{{"key":"{}","stake":200000}}]}}"#,
            keys[0].public_key(),
            keys[HONEST].public_key()
        );
        let set = parse_validators(body.as_bytes()).expect("parses");
        assert_eq!(set.power(&keys[HONEST].public_key()), 200_000);
        assert_eq!(set.total_power(), 1_200_000);
        assert!(parse_validators(b"{}").is_err());
        assert!(parse_validators(br#"{"validators":[{"key":"zz","stake":1}]}"#).is_err());
        assert!(validators_url("https://x:1").is_err());
        assert_eq!(
            validators_url("http://198.18.100.1:8080")
                .expect("valid")
                .as_str(),
            "http://198.18.100.1:8080/v1/validators"
        );
    }
}

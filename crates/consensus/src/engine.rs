//! The engine: Malachite's state machine driven by our side of the contract.
//!
//! Sans-IO: the host passes in messages, transactions, synced blocks and the time, and takes out
//! [`Output`]s (messages to broadcast, transactions to gossip, committed blocks). Timers are kept
//! here; the host calls [`Engine::tick`] at [`Engine::next_deadline`].
//!
//! Every effect of the core is handled in [`Host::handle`]: signing goes through the double-sign
//! guard, each WAL append is written through before the core's next effect (so before anything
//! that depends on it is published), block validity comes from the ledger, and a decision is
//! committed to the ledger before the next height starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use chain::mempool::{Mempool, MempoolConfig, MempoolError};
use chain::params::EVIDENCE_MAX_AGE_BLOCKS;
use chain::{Executed, Ledger};
use malachite_core_consensus::{
    self as core, Effect, Input, LivenessMsg, LocallyProposedValue, Params, ProposedValue, Resume,
    SignedConsensusMsg, State, ValuePayload,
};
use malachite_core_types::{
    self as mc, CertificateError, CommitCertificate, ExtendedCommitCertificate,
    ExtendedCommitSignature, LinearTimeouts, NilOrVal, Round, SignedMessage, ThresholdParams,
    Timeout, TimeoutKind, ValidatorSet as _, Validity, ValueOrigin, ValueResponse,
    VoteExtensionPolicy, VoteType,
};
use storage::Store;
use types::{
    Block, Commit, Decode, Domain, Encode, Evidence, Genesis, Hash, Payload, PublicKey, SecretKey,
    SignedTransaction, Tag, Transaction, crypto::signing_bytes,
};

use crate::context::{Address, BlockId, Ctx, Height, ValidatorSet, round_of};
use crate::error::EngineError;
use crate::guard::{LastSigned, SignGuard, Step, Verdict};
use crate::message::{
    ConsensusMessage, PolkaCertificate, RoundCertificate, SignedPart, proposal_from_core,
    proposal_to_core, sorted_signatures, split_block, vote_from_core, vote_to_core,
};
use crate::wal::{Wal, WalEntry};

/// Round timeouts, in milliseconds. Round `r` waits `base + r * delta`, capped at `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Waiting for a proposal.
    pub propose_ms: u64,
    /// Added per round to the propose timeout.
    pub propose_delta_ms: u64,
    /// Waiting for prevotes after seeing 2/3+ of them for anything.
    pub prevote_ms: u64,
    /// Added per round to the prevote timeout.
    pub prevote_delta_ms: u64,
    /// Waiting for precommits after seeing 2/3+ of them for anything.
    pub precommit_ms: u64,
    /// Added per round to the precommit timeout.
    pub precommit_delta_ms: u64,
    /// Re-sending our last votes (and round certificate) when a round makes no progress.
    pub rebroadcast_ms: u64,
    /// Cap of every timeout.
    pub max_ms: u64,
    /// Pause between a commit and the start of the next height (Tendermint's
    /// `timeout_commit`): late precommits still arrive, and a lone validator does not turn
    /// blocks out as fast as the CPU allows. The next height never starts inside the call that
    /// committed, so the host flushes and serves its clients between any two heights.
    pub commit_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            propose_ms: 3000,
            propose_delta_ms: 500,
            prevote_ms: 1000,
            prevote_delta_ms: 500,
            precommit_ms: 1000,
            precommit_delta_ms: 500,
            rebroadcast_ms: 5000,
            max_ms: 60_000,
            commit_ms: 0,
        }
    }
}

impl Timeouts {
    /// Every timeout scaled from the round-0 propose timeout: prevote and precommit wait a
    /// third of it, each later round adds a sixth to each, stalled rounds re-send votes after
    /// the propose timeout, and the pause after a commit is a tenth of it.
    pub fn scaled(propose_ms: u64) -> Timeouts {
        Timeouts {
            propose_ms,
            propose_delta_ms: propose_ms / 6,
            prevote_ms: propose_ms / 3,
            prevote_delta_ms: propose_ms / 6,
            precommit_ms: propose_ms / 3,
            precommit_delta_ms: propose_ms / 6,
            rebroadcast_ms: propose_ms,
            max_ms: Timeouts::default().max_ms,
            commit_ms: propose_ms / 10,
        }
    }

    fn linear(&self) -> LinearTimeouts {
        use std::time::Duration;
        LinearTimeouts {
            propose: Duration::from_millis(self.propose_ms),
            propose_delta: Duration::from_millis(self.propose_delta_ms),
            prevote: Duration::from_millis(self.prevote_ms),
            prevote_delta: Duration::from_millis(self.prevote_delta_ms),
            precommit: Duration::from_millis(self.precommit_ms),
            precommit_delta: Duration::from_millis(self.precommit_delta_ms),
            rebroadcast: Duration::from_millis(self.rebroadcast_ms),
            max_timeout: Duration::from_millis(self.max_ms),
        }
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Round timeouts.
    pub timeouts: Timeouts,
    /// Mempool bounds and admission rules.
    pub mempool: MempoolConfig,
    /// Size of the parts a proposed block is cut into.
    pub part_bytes: usize,
    /// Most transactions this node puts in a block it proposes.
    pub max_block_txs: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            timeouts: Timeouts::default(),
            mempool: MempoolConfig::default(),
            part_bytes: 64 * 1024,
            max_block_txs: 5000,
        }
    }
}

/// What the engine asks of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send to every other validator.
    Broadcast(ConsensusMessage),
    /// A transaction this node made (a slashing): gossip it.
    Transaction(SignedTransaction),
    /// A block became final and is committed to the ledger.
    Committed {
        /// Its height.
        height: u64,
        /// The round it was decided in.
        round: u32,
        /// Its hash.
        hash: Hash,
        /// Equivocations seen while deciding it; each became a slashing transaction.
        evidence: Vec<Evidence>,
    },
}

/// Why a consensus message was dropped on arrival, before the state machine saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A message for the height just decided or an earlier one, arriving in the pause after
    /// the commit.
    DecidedHeight,
    /// A proposal for the current height from a key without voting power.
    ProposalFromNonValidator,
    /// A vote for the current height from a key without voting power.
    VoteFromNonValidator,
    /// A signature of a vote, proposal or part does not verify.
    InvalidSignature,
    /// A part for a height too far ahead, or with the future-part buffer full.
    PartTooFarAhead,
    /// A part whose proposer has no voting power.
    PartFromNonValidator,
    /// A part for a round beyond the lookahead.
    PartRoundTooFarAhead,
    /// A part of another block from a proposer already sending as many as it may.
    TooManyBlocksFromProposer,
    /// A part whose count of parts differs from the others of its block.
    InconsistentPartCount,
    /// A part that would make its block larger than a block may be.
    BlockTooLarge,
    /// A part that would exceed the memory for blocks being assembled.
    AssemblyMemoryFull,
    /// A synced block whose commit certificate the core refused.
    SyncCertificate,
}

impl Rejection {
    /// Every [`Rejection::label`], so metrics can show each reason from the start.
    pub const LABELS: [&'static str; 12] = [
        "decided_height",
        "proposal_from_non_validator",
        "vote_from_non_validator",
        "invalid_signature",
        "part_too_far_ahead",
        "part_from_non_validator",
        "part_round_too_far_ahead",
        "too_many_blocks_from_proposer",
        "inconsistent_part_count",
        "block_too_large",
        "assembly_memory_full",
        "sync_certificate",
    ];

    /// A stable label for metrics: the key of [`EngineCounters::rejected`].
    pub const fn label(self) -> &'static str {
        match self {
            Rejection::DecidedHeight => "decided_height",
            Rejection::ProposalFromNonValidator => "proposal_from_non_validator",
            Rejection::VoteFromNonValidator => "vote_from_non_validator",
            Rejection::InvalidSignature => "invalid_signature",
            Rejection::PartTooFarAhead => "part_too_far_ahead",
            Rejection::PartFromNonValidator => "part_from_non_validator",
            Rejection::PartRoundTooFarAhead => "part_round_too_far_ahead",
            Rejection::TooManyBlocksFromProposer => "too_many_blocks_from_proposer",
            Rejection::InconsistentPartCount => "inconsistent_part_count",
            Rejection::BlockTooLarge => "block_too_large",
            Rejection::AssemblyMemoryFull => "assembly_memory_full",
            Rejection::SyncCertificate => "sync_certificate",
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCounters {
    /// Messages dropped on arrival, by [`Rejection::label`].
    pub rejected: BTreeMap<&'static str, u64>,
    /// Inputs whose processing failed in the core, by reason.
    pub failed_inputs: BTreeMap<&'static str, u64>,
    /// Signatures the double-sign guard refused.
    pub signing_refused: u64,
    /// Proposed blocks that failed validation.
    pub invalid_blocks: u64,
    /// WAL entries replayed at start.
    pub wal_replayed: u64,
    /// Torn or corrupt WAL records dropped at start.
    pub wal_truncated: u64,
    /// Equivocations surfaced at finalization.
    pub evidence: u64,
    /// Heights decided.
    pub decided: u64,
}

/// Parts of one block being put together.
#[derive(Debug)]
struct Assembly {
    count: u32,
    parts: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
}

/// Most blocks a proposer may be assembling at one height and round (an honest one sends one).
const MAX_ASSEMBLIES_PER_PROPOSER: usize = 2;
/// Bytes of parts buffered for heights above the current one.
const MAX_FUTURE_PART_BYTES: usize = 32 * 1024 * 1024;
/// Wait before retrying the start of a height that failed (a WAL reset that could not be
/// written), milliseconds.
const START_RETRY_MS: u64 = 100;
/// How far ahead parts are buffered.
const FUTURE_HEIGHTS: u64 = 2;
/// Rounds ahead of ours whose proposals and parts are taken (the core's own lookahead).
const ROUND_LOOKAHEAD: u32 = core::MAX_FUTURE_ROUND_LOOKAHEAD;
/// Bytes of blocks being assembled at the current height.
const MAX_ASSEMBLY_BYTES: usize = 64 * 1024 * 1024;

/// Everything the effect handler needs: all of the engine but the core's state.
struct Host<S: Store> {
    ctx: Ctx,
    key: SecretKey,
    address: Address,
    config: EngineConfig,
    linear: LinearTimeouts,
    ledger: Ledger<S>,
    mempool: Mempool,
    wal: Wal,
    guard: SignGuard,
    now_ms: u64,
    /// Pending timers: (kind code, round) -> (timeout, deadline).
    timers: BTreeMap<(u8, i64), (Timeout, u64)>,
    outputs: Vec<Output>,
    /// Inputs to feed the core once the current one is done.
    queue: VecDeque<Input<Ctx>>,
    /// Validated blocks of the current height, by hash.
    blocks: BTreeMap<Hash, Executed>,
    /// Blocks of the current height that failed validation.
    invalid: BTreeSet<Hash>,
    /// Parts being assembled at the current height: (round, proposer, block) -> parts.
    assembling: BTreeMap<(u32, PublicKey, Hash), Assembly>,
    assembling_bytes: usize,
    /// The round the core is in.
    round: u32,
    /// Parts for the next heights, replayed when they start.
    future_parts: Vec<SignedPart>,
    future_bytes: usize,
    /// Proposals seen at the current height: (round, proposer) -> (block, pol round).
    proposals: BTreeMap<(u32, PublicKey), (Hash, Option<u32>)>,
    /// Proposed values already given to the core: (round, block).
    fed: BTreeSet<(u32, Hash)>,
    /// The certificate of the last committed height (for the next block's `last_commit`).
    last_commit: Option<Commit>,
    /// Offences seen and not yet slashed on chain: (offender, offence height) -> the evidence
    /// and the id of our slashing transaction while it is in the mempool.
    slashings: BTreeMap<(PublicKey, u64), (Evidence, Option<Hash>)>,
    /// Whether WAL entries are being replayed (no appends, no re-logging).
    replaying: bool,
    counters: EngineCounters,
    /// The next height and when it starts (UNIX ms), during the pause after a commit.
    next_start: Option<(u64, u64)>,
}

/// A validator's consensus engine over a ledger in store `S`.
pub struct Engine<S: Store> {
    state: State<Ctx>,
    host: Host<S>,
}

fn bump(map: &mut BTreeMap<&'static str, u64>, reason: &'static str) {
    *map.entry(reason).or_default() += 1;
}

impl EngineCounters {
    fn reject(&mut self, why: Rejection) {
        bump(&mut self.rejected, why.label());
    }
}

fn timer_key(t: &Timeout) -> (u8, i64) {
    let code = match t.kind {
        TimeoutKind::Propose => 0,
        TimeoutKind::Prevote => 1,
        TimeoutKind::Precommit => 2,
        TimeoutKind::Rebroadcast => 3,
        TimeoutKind::FinalizeHeight(_) => 4,
    };
    (code, t.round.as_i64())
}

/// The core's commit certificate in our form, signatures ascending by validator.
fn commit_of(cert: &CommitCertificate<Ctx>) -> Option<Commit> {
    Some(Commit {
        height: cert.height.0,
        round: cert.round.as_u32()?,
        block: cert.value_id.0,
        signatures: sorted_signatures(
            cert.commit_signatures
                .iter()
                .map(|s| (s.address, s.signature)),
        ),
    })
}

impl<S: Store> Engine<S> {
    /// Opens the ledger on `store` (writing genesis on first open), replays the WAL of the
    /// current height if any, and starts consensus at the ledger's height + 1.
    pub fn open(
        store: S,
        genesis: &Genesis,
        key: SecretKey,
        config: EngineConfig,
        now_ms: u64,
    ) -> Result<Engine<S>, EngineError> {
        let ledger = Ledger::open(store, genesis)?;
        let guard = SignGuard::load(ledger.store())?;
        let height = ledger.height() + 1;
        let (wal, recovered) = Wal::open(ledger.store(), height)?;
        let last_commit = match ledger.height() {
            0 => None,
            h => ledger.commit_at(h)?,
        };
        let ctx = Ctx::new(genesis.chain_id.clone());
        let address = Address(key.public_key());
        let set = ValidatorSet::from_chain(ledger.validators());
        let params = Params {
            address,
            threshold_params: ThresholdParams::default(),
            value_payload: ValuePayload::ProposalAndParts,
            enabled: true,
        };
        let state = State::new(ctx.clone(), Height(height), set, params, 4096, 1024);
        let host = Host {
            mempool: Mempool::new(genesis.chain_id.clone(), config.mempool.clone()),
            linear: config.timeouts.linear(),
            ctx,
            key,
            address,
            config,
            ledger,
            wal,
            guard,
            now_ms,
            timers: BTreeMap::new(),
            outputs: Vec::new(),
            queue: VecDeque::new(),
            blocks: BTreeMap::new(),
            invalid: BTreeSet::new(),
            assembling: BTreeMap::new(),
            assembling_bytes: 0,
            round: 0,
            future_parts: Vec::new(),
            future_bytes: 0,
            proposals: BTreeMap::new(),
            fed: BTreeSet::new(),
            last_commit,
            slashings: BTreeMap::new(),
            replaying: false,
            next_start: None,
            counters: EngineCounters {
                wal_truncated: recovered.truncated as u64,
                ..EngineCounters::default()
            },
        };
        let mut engine = Engine { state, host };
        engine.start_height(height)?;
        for block in recovered.blocks {
            engine.host.admit_block(block, None);
        }
        if !recovered.entries.is_empty() {
            log::info!(
                "replaying {} WAL entries of height {height}",
                recovered.entries.len()
            );
            let inputs: Vec<Input<Ctx>> =
                recovered.entries.iter().map(WalEntry::to_input).collect();
            engine.state.index_wal_entries(inputs.iter());
            engine.host.replaying = true;
            for input in inputs {
                engine.host.counters.wal_replayed += 1;
                engine.feed(input);
            }
            engine.host.replaying = false;
            engine.state.reset_entries_index();
        }
        engine.drain_queue();
        Ok(engine)
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger<S> {
        &self.host.ledger
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.host.mempool
    }

    /// The height consensus is working on (during the pause after a commit, the next one).
    pub fn height(&self) -> u64 {
        self.host
            .next_start
            .map_or(self.state.height().0, |(next, _)| next)
    }

    /// The current round, if started.
    pub fn round(&self) -> Option<u32> {
        self.state.round().as_u32()
    }

    /// This validator's key.
    pub fn address(&self) -> PublicKey {
        self.host.address.0
    }

    /// Counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.host.counters
    }

    /// The last message this validator signed.
    pub fn last_signed(&self) -> Option<&LastSigned> {
        self.host.guard.last()
    }

    /// The earliest timer deadline (the start of the next height included).
    pub fn next_deadline(&self) -> Option<u64> {
        let timers = self.host.timers.values().map(|(_, at)| *at);
        timers.chain(self.host.next_start.map(|(_, at)| at)).min()
    }

    /// Takes what the engine produced since the last call.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.host.outputs)
    }

    /// Fires every timer due at `now_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        self.host.now_ms = now_ms;
        if let Some((height, at)) = self.host.next_start
            && at <= now_ms
        {
            self.host.next_start = None;
            if let Err(e) = self.start_height(height) {
                log::error!("cannot start height {height}, retrying: {e}");
                let retry = now_ms.saturating_add(START_RETRY_MS);
                self.host.next_start = Some((height, retry));
            }
            self.drain_queue();
        }
        loop {
            let due = self
                .host
                .timers
                .iter()
                .filter(|(_, (_, at))| *at <= now_ms)
                .min_by_key(|(key, (_, at))| (*at, **key))
                .map(|(key, (timeout, _))| (*key, *timeout));
            let Some((key, timeout)) = due else { break };
            self.host.timers.remove(&key);
            self.feed(Input::TimeoutElapsed(timeout));
            self.drain_queue();
        }
    }

    /// A transaction for the mempool.
    pub fn on_transaction(&mut self, tx: SignedTransaction) -> Result<Hash, MempoolError> {
        self.host.mempool.insert(tx, &self.host.ledger)
    }

    /// A consensus message from the network.
    pub fn on_message(&mut self, message: ConsensusMessage, now_ms: u64) {
        self.host.now_ms = now_ms;
        // The core's height: during the pause after a commit, the next height's parts wait
        // with the other future parts and are replayed when it starts.
        let height = self.state.height().0;
        // Proposals and parts of the height just decided would be fed to the next one.
        if self.host.next_start.is_some() && message.height() <= height {
            self.host.counters.reject(Rejection::DecidedHeight);
            return;
        }
        match message {
            ConsensusMessage::Part(part) => self.host.on_part(part, height),
            ConsensusMessage::Proposal(p)
                if p.proposal.height == height
                    && self.host.ledger.validators().power(&p.proposal.proposer) == 0 =>
            {
                self.host
                    .counters
                    .reject(Rejection::ProposalFromNonValidator);
            }
            ConsensusMessage::Vote(v)
                if v.vote.height == height
                    && self.host.ledger.validators().power(&v.vote.validator) == 0 =>
            {
                self.host.counters.reject(Rejection::VoteFromNonValidator);
            }
            ConsensusMessage::Proposal(p) => {
                if p.proposal.height == height
                    && p.proposal.round <= self.host.round.saturating_add(ROUND_LOOKAHEAD)
                {
                    self.host.proposals.insert(
                        (p.proposal.round, p.proposal.proposer),
                        (p.proposal.block, p.proposal.pol_round),
                    );
                }
                self.feed(Input::Proposal(proposal_to_core(&p)));
                if p.proposal.height == height && self.host.blocks.contains_key(&p.proposal.block) {
                    self.host.feed_value(
                        p.proposal.round,
                        p.proposal.proposer,
                        p.proposal.block,
                        p.proposal.pol_round,
                    );
                }
            }
            ConsensusMessage::Vote(v) => self.feed(Input::Vote(vote_to_core(&v))),
            ConsensusMessage::Polka(c) => self.feed(Input::PolkaCertificate(c.to_core())),
            ConsensusMessage::Round(c) => self.feed(Input::RoundCertificate(c.to_core())),
        }
        self.drain_queue();
    }

    /// A block with its commit certificate from block sync. Only a block at exactly
    /// [`Engine::height`] is used; the host feeds later ones after this one commits.
    pub fn on_synced_block(
        &mut self,
        block: Block,
        commit: Commit,
        now_ms: u64,
    ) -> Result<(), EngineError> {
        self.host.now_ms = now_ms;
        // A synced block proves the chain moved on: no pause before its height.
        if let Some((next, at)) = self.host.next_start.take() {
            if let Err(e) = self.start_height(next) {
                self.host.next_start = Some((next, at));
                return Err(e);
            }
            self.drain_queue();
        }
        // Votes waiting behind the start may just have decided this very block.
        let at = block.header.height;
        if at <= self.host.ledger.height()
            && self
                .host
                .ledger
                .block(at)?
                .is_some_and(|held| held.hash() == block.hash())
        {
            return Ok(());
        }
        let height = self.height();
        if block.header.height != height || commit.height != height {
            return Err(EngineError::NotCurrentHeight {
                got: block.header.height,
                current: height,
            });
        }
        let hash = block.hash();
        if commit.block != hash {
            return Err(EngineError::CommitMismatch);
        }
        let certificate = ExtendedCommitCertificate {
            height: Height(commit.height),
            round: round_of(commit.round),
            value_id: BlockId(commit.block),
            commit_signatures: commit
                .signatures
                .iter()
                .map(|s| ExtendedCommitSignature::new(Address(s.validator), s.signature, None))
                .collect(),
        };
        let peer = core::PeerId::from_bytes(&[0, 0]).map_err(|_| EngineError::Internal)?;
        let response = ValueResponse::new(peer, block.to_bytes().into(), certificate);
        self.feed(Input::SyncValueResponse(response));
        self.drain_queue();
        Ok(())
    }

    /// Starts `height` with the ledger's validator set, moving the WAL and the caches to it.
    fn start_height(&mut self, height: u64) -> Result<(), EngineError> {
        // On opening, `Wal::open` has already moved the log to this height.
        if self.host.wal.height() != height {
            self.host.wal.reset(self.host.ledger.store(), height)?;
        }
        self.host.blocks.clear();
        self.host.invalid.clear();
        self.host.assembling.clear();
        self.host.assembling_bytes = 0;
        self.host.round = 0;
        self.host.proposals.clear();
        self.host.fed.clear();
        let set = ValidatorSet::from_chain(self.host.ledger.validators());
        self.feed(Input::StartHeight(
            Height(height),
            set,
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ));
        let parts = std::mem::take(&mut self.host.future_parts);
        self.host.future_bytes = 0;
        for part in parts {
            self.host.on_part(part, height);
        }
        Ok(())
    }

    /// Feeds one input to the core, handling its effects.
    fn feed(&mut self, input: Input<Ctx>) {
        let label = input_label(&input);
        let host = &mut self.host;
        let result: Result<(), core::Error<Ctx>> = core::process!(
            input: input,
            state: &mut self.state,
            metrics: &(),
            with: effect => host.handle(effect)
        );
        if let Err(e) = result {
            log::warn!("consensus input {label} failed: {e}");
            bump(&mut self.host.counters.failed_inputs, label);
        }
    }

    /// Feeds queued inputs. A finalized height schedules the next one after the commit pause
    /// ([`Timeouts::commit_ms`]); [`Engine::tick`] starts it, and the inputs queued behind it
    /// wait until then.
    fn drain_queue(&mut self) {
        while self.host.next_start.is_none()
            && let Some(input) = self.host.queue.pop_front()
        {
            if let Input::StartHeight(height, ..) = input {
                let at = self
                    .host
                    .now_ms
                    .saturating_add(self.host.config.timeouts.commit_ms);
                self.host.next_start = Some((height.0, at));
            } else {
                self.feed(input);
            }
        }
    }
}

fn input_label(input: &Input<Ctx>) -> &'static str {
    match input {
        Input::StartHeight(..) => "start_height",
        Input::Vote(_) => "vote",
        Input::Proposal(_) => "proposal",
        Input::PolkaCertificate(_) => "polka_certificate",
        Input::RoundCertificate(_) => "round_certificate",
        Input::Propose(_) => "propose",
        Input::TimeoutElapsed(_) => "timeout",
        Input::ProposedValue(..) => "proposed_value",
        Input::SyncValueResponse(_) => "sync_value",
    }
}

impl<S: Store> Host<S> {
    fn broadcast(&mut self, message: ConsensusMessage) {
        self.outputs.push(Output::Broadcast(message));
    }

    fn handle(&mut self, effect: Effect<Ctx>) -> Result<Resume<Ctx>, EngineError> {
        use malachite_core_consensus::Resumable;
        match effect {
            Effect::CancelAllTimeouts(r) => {
                self.timers.clear();
                Ok(r.resume_with(()))
            }
            Effect::CancelTimeout(timeout, r) => {
                self.timers.remove(&timer_key(&timeout));
                Ok(r.resume_with(()))
            }
            Effect::ScheduleTimeout(timeout, r) => {
                let after = self.linear.duration_for(timeout).as_millis() as u64;
                self.timers.insert(
                    timer_key(&timeout),
                    (timeout, self.now_ms.saturating_add(after)),
                );
                Ok(r.resume_with(()))
            }
            Effect::StartRound(_, round, _, _, r) => {
                self.round = round.as_u32().unwrap_or(0);
                Ok(r.resume_with(()))
            }
            Effect::PublishConsensusMsg(msg, r) => {
                self.publish(msg);
                Ok(r.resume_with(()))
            }
            Effect::PublishLivenessMsg(msg, r) => {
                match msg {
                    LivenessMsg::Vote(v) => {
                        if let Some(v) = vote_from_core(&v) {
                            self.broadcast(ConsensusMessage::Vote(v));
                        }
                    }
                    LivenessMsg::PolkaCertificate(c) => {
                        if let Some(c) = PolkaCertificate::from_core(&c) {
                            self.broadcast(ConsensusMessage::Polka(c));
                        }
                    }
                    LivenessMsg::SkipRoundCertificate(c) => {
                        if let Some(c) = RoundCertificate::from_core(&c) {
                            self.broadcast(ConsensusMessage::Round(c));
                        }
                    }
                }
                Ok(r.resume_with(()))
            }
            Effect::RepublishVote(v, r) => {
                if let Some(v) = vote_from_core(&v) {
                    self.broadcast(ConsensusMessage::Vote(v));
                }
                Ok(r.resume_with(()))
            }
            Effect::RepublishRoundCertificate(c, r) => {
                if let Some(c) = RoundCertificate::from_core(&c) {
                    self.broadcast(ConsensusMessage::Round(c));
                }
                Ok(r.resume_with(()))
            }
            Effect::GetValue(height, round, _, r) => {
                self.build_value(height.0, round);
                Ok(r.resume_with(()))
            }
            Effect::RestreamProposal(_, round, _, proposer, value, r) => {
                if proposer == self.address
                    && let Some(round) = round.as_u32()
                {
                    self.send_parts(value.0, round);
                }
                Ok(r.resume_with(()))
            }
            Effect::CertVerifiedSyncValue(response, proposer, r) => {
                self.on_synced_value(response, proposer);
                Ok(r.resume_with(()))
            }
            Effect::CertRejectedSyncValue(_, height, error, r) => {
                log::warn!("synced block at height {height} refused: {error}");
                self.counters.reject(Rejection::SyncCertificate);
                Ok(r.resume_with(()))
            }
            Effect::Decide(certificate, _, r) => {
                self.decide(&certificate)?;
                Ok(r.resume_with(()))
            }
            Effect::Finalize(certificate, _, evidence, r) => {
                self.finalize(&certificate, &evidence);
                Ok(r.resume_with(()))
            }
            Effect::SignVote(vote, r) => {
                let wire = vote.to_wire().ok_or(EngineError::Internal)?;
                let step = match wire.kind {
                    types::VoteKind::Prevote => Step::Prevote,
                    types::VoteKind::Precommit => Step::Precommit,
                };
                let signature =
                    self.sign_guarded(Domain::Vote, &wire, wire.height, wire.round, step)?;
                Ok(r.resume_with(SignedMessage::new(vote, signature)))
            }
            Effect::SignProposal(proposal, r) => {
                let wire = proposal.to_wire().ok_or(EngineError::Internal)?;
                let signature = self.sign_guarded(
                    Domain::Proposal,
                    &wire,
                    wire.height,
                    wire.round,
                    Step::Proposal,
                )?;
                Ok(r.resume_with(SignedMessage::new(proposal, signature)))
            }
            Effect::VerifySignature(msg, key, r) => {
                let chain = self.ctx.chain_id();
                let valid = match &msg.message {
                    core::ConsensusMsg::Vote(v) => v.to_wire().is_some_and(|w| {
                        key.verify(Domain::Vote, chain, &w, &msg.signature).is_ok()
                    }),
                    core::ConsensusMsg::Proposal(p) => p.to_wire().is_some_and(|w| {
                        key.verify(Domain::Proposal, chain, &w, &msg.signature)
                            .is_ok()
                    }),
                };
                if !valid {
                    self.counters.reject(Rejection::InvalidSignature);
                }
                Ok(r.resume_with(valid))
            }
            Effect::VerifyCommitCertificate(cert, set, thresholds, r) => {
                let signatures = cert
                    .commit_signatures
                    .iter()
                    .map(|s| (s.address, s.signature));
                let result = self.verify_commit(
                    cert.height,
                    cert.round,
                    cert.value_id,
                    signatures,
                    &set,
                    thresholds,
                );
                Ok(r.resume_with(result))
            }
            Effect::VerifyExtendedCommitCertificate(cert, set, thresholds, _, r) => {
                if let Some(s) = cert
                    .commit_signatures
                    .iter()
                    .find(|s| s.extension.is_some())
                {
                    return Ok(
                        r.resume_with(Err(CertificateError::UnexpectedVoteExtension(s.address)))
                    );
                }
                let signatures = cert
                    .commit_signatures
                    .iter()
                    .map(|s| (s.address, s.signature));
                let result = self.verify_commit(
                    cert.height,
                    cert.round,
                    cert.value_id,
                    signatures,
                    &set,
                    thresholds,
                );
                Ok(r.resume_with(result))
            }
            Effect::VerifyPolkaCertificate(cert, set, thresholds, r) => {
                let votes = cert.polka_signatures.iter().map(|s| {
                    (
                        s.address,
                        VoteType::Prevote,
                        NilOrVal::Val(cert.value_id),
                        s.signature,
                    )
                });
                let result = self.verify_votes(
                    cert.height,
                    cert.round,
                    votes,
                    &set,
                    |w, t| thresholds.quorum.is_met(w, t),
                    CertKind::Polka,
                );
                Ok(r.resume_with(result))
            }
            Effect::VerifyRoundCertificate(cert, set, thresholds, r) => {
                let precommit_only = cert.cert_type == mc::RoundCertificateType::Precommit;
                if precommit_only
                    && let Some(s) = cert
                        .round_signatures
                        .iter()
                        .find(|s| s.vote_type != VoteType::Precommit)
                {
                    return Ok(r.resume_with(Err(CertificateError::InvalidVoteType(s.address))));
                }
                let votes = cert
                    .round_signatures
                    .iter()
                    .map(|s| (s.address, s.vote_type, s.value_id, s.signature));
                let result = if precommit_only {
                    self.verify_votes(
                        cert.height,
                        cert.round,
                        votes,
                        &set,
                        |w, t| thresholds.quorum.is_met(w, t),
                        CertKind::Round,
                    )
                } else {
                    self.verify_votes(
                        cert.height,
                        cert.round,
                        votes,
                        &set,
                        |w, t| thresholds.honest.is_met(w, t),
                        CertKind::Round,
                    )
                };
                Ok(r.resume_with(result))
            }
            Effect::WalAppend(height, input, r) => {
                self.wal_append(height.0, &input)?;
                Ok(r.resume_with(()))
            }
            Effect::ExtendVote(_, _, _, _, r) => Ok(r.resume_with(None)),
            Effect::VerifyVoteExtension(_, _, _, _, _, _, r) => Ok(r.resume_with(Ok(()))),
        }
    }

    fn publish(&mut self, msg: SignedConsensusMsg<Ctx>) {
        match msg {
            SignedConsensusMsg::Vote(v) => {
                if let Some(v) = vote_from_core(&v) {
                    self.broadcast(ConsensusMessage::Vote(v));
                }
            }
            SignedConsensusMsg::Proposal(p) => {
                if let Some(wire) = proposal_from_core(&p) {
                    let (block, round) = (wire.proposal.block, wire.proposal.round);
                    self.proposals.insert(
                        (round, wire.proposal.proposer),
                        (block, wire.proposal.pol_round),
                    );
                    self.broadcast(ConsensusMessage::Proposal(wire));
                    if p.message.proposer == self.address {
                        self.send_parts(block, round);
                    }
                }
            }
        }
    }

    fn send_parts(&mut self, block: Hash, round: u32) {
        let Some(executed) = self.blocks.get(&block) else {
            log::warn!("cannot send the parts of block {block}: not held");
            return;
        };
        let parts = split_block(
            &executed.block,
            round,
            &self.key,
            self.ctx.chain_id(),
            self.config.part_bytes,
        );
        for part in parts {
            self.broadcast(ConsensusMessage::Part(part));
        }
    }

    /// Signs `message` unless the guard refuses, persisting the guard first.
    fn sign_guarded<T: Encode>(
        &mut self,
        domain: Domain,
        message: &T,
        height: u64,
        round: u32,
        step: Step,
    ) -> Result<types::Signature, EngineError> {
        let digest = self.signed_digest(domain, message);
        let verdict = self.guard.check(height, round, step, &digest);
        match verdict {
            Ok(Verdict::Reuse(signature)) => Ok(signature),
            Ok(Verdict::Sign) => {
                let signature = self.key.sign(domain, self.ctx.chain_id(), message);
                self.guard.record(
                    self.ledger.store(),
                    LastSigned {
                        height,
                        round,
                        step,
                        digest,
                        signature,
                    },
                )?;
                Ok(signature)
            }
            Err(e) => {
                log::error!("{e}");
                self.counters.signing_refused += 1;
                Err(EngineError::Guard(e))
            }
        }
    }

    /// The digest the double-sign guard records for `message` signed in `domain`.
    fn signed_digest<T: Encode>(&self, domain: Domain, message: &T) -> Hash {
        Hash::tagged(
            Tag::SignedBytes,
            &[&signing_bytes(domain, self.ctx.chain_id(), message)],
        )
    }

    fn wal_append(&mut self, height: u64, input: &Input<Ctx>) -> Result<(), EngineError> {
        if self.replaying || height != self.wal.height() {
            return Ok(());
        }
        match WalEntry::from_input(input) {
            Some(entry) => Ok(self.wal.append(self.ledger.store(), &entry)?),
            None => {
                log::debug!("not logging a {} input", input_label(input));
                Ok(())
            }
        }
    }

    /// Builds the block we propose at `height` and `round`, and queues it for the core.
    ///
    /// When the guard's last record is a proposal at exactly this height and round (a restart
    /// right after signing it), the block of that proposal is proposed again, so signing reuses
    /// the recorded signature; a new block would be refused as equivocation. If that block is
    /// lost, nothing is proposed in this round and its propose timeout moves the round on.
    fn build_value(&mut self, height: u64, round: Round) {
        if height != self.ledger.height() + 1 {
            return;
        }
        if let Some(signed) = self
            .guard
            .last()
            .filter(|l| l.step == Step::Proposal && l.height == height)
            .filter(|l| round.as_u32() == Some(l.round))
        {
            let (signed_round, digest) = (signed.round, signed.digest);
            match self.signed_block(height, signed_round, &digest) {
                Some(hash) => {
                    log::info!(
                        "proposing block {hash} again in round {signed_round} of height {height}: its proposal was signed before the restart"
                    );
                    self.queue
                        .push_back(Input::Propose(LocallyProposedValue::new(
                            Height(height),
                            round,
                            BlockId(hash),
                        )));
                }
                None => log::warn!(
                    "sitting out proposing in round {signed_round} of height {height}: a proposal was signed there before the restart and its block is neither logged for the height nor valid; the round moves on at its propose timeout"
                ),
            }
            return;
        }
        let time_ms = self.now_ms.max(self.ledger.tip().time_ms + 1);
        let candidates = match self.mempool.reap(
            self.config.max_block_txs,
            types::limits::MAX_BLOCK_BYTES / 2,
            &self.ledger,
        ) {
            Ok(txs) => txs,
            Err(e) => {
                log::error!("cannot read the state to fill a block: {e}");
                Vec::new()
            }
        };
        let proposed = match self.ledger.propose(
            self.address.0,
            time_ms,
            self.last_commit.clone(),
            candidates,
        ) {
            Ok(p) => p,
            Err(e) => {
                log::error!("cannot build a block at height {height}: {e}");
                return;
            }
        };
        if !proposed.skipped.is_empty() {
            let ids: Vec<Hash> = proposed.skipped.iter().map(|(id, _)| *id).collect();
            self.mempool.remove_failed(ids.iter());
        }
        let hash = proposed.executed.hash;
        if let Err(e) = self
            .wal
            .save_block(self.ledger.store(), &proposed.executed.block)
        {
            log::error!("cannot log the block to propose: {e}");
            return;
        }
        self.blocks.insert(hash, proposed.executed);
        self.queue
            .push_back(Input::Propose(LocallyProposedValue::new(
                Height(height),
                round,
                BlockId(hash),
            )));
    }

    /// The block, held or logged in the WAL for `height`, whose proposal by us at `height` and
    /// `round` without a polka round has the signed `digest`; kept for the core when valid.
    fn signed_block(&mut self, height: u64, round: u32, digest: &Hash) -> Option<Hash> {
        let proposal = |block: Hash| types::Proposal {
            height,
            round,
            pol_round: None,
            block,
            proposer: self.address.0,
        };
        let matches = |host: &Self, block: Hash| {
            host.signed_digest(Domain::Proposal, &proposal(block)) == *digest
        };
        if let Some(hash) = self.blocks.keys().copied().find(|h| matches(self, *h)) {
            return Some(hash);
        }
        let logged = match self.wal.blocks(self.ledger.store()) {
            Ok(blocks) => blocks,
            Err(e) => {
                log::error!("cannot read the blocks logged for height {height}: {e}");
                return None;
            }
        };
        let block = logged.into_iter().find(|b| matches(self, b.hash()))?;
        let hash = block.hash();
        self.admit_block(block, Some(hash)).then_some(hash)
    }

    /// Validates a block of the current height and keeps it; returns whether it is valid.
    fn admit_block(&mut self, block: Block, expected: Option<Hash>) -> bool {
        let hash = block.hash();
        if expected.is_some_and(|e| e != hash) {
            return false;
        }
        if self.blocks.contains_key(&hash) {
            return true;
        }
        if self.invalid.contains(&hash) {
            return false;
        }
        match self.ledger.execute(block, self.now_ms) {
            Ok(executed) => {
                self.blocks.insert(hash, executed);
                true
            }
            Err(e) => {
                log::warn!("block {hash} is invalid: {e}");
                self.counters.invalid_blocks += 1;
                self.invalid.insert(hash);
                false
            }
        }
    }

    /// Gives the core a complete proposed value (once per round and block).
    fn feed_value(&mut self, round: u32, proposer: PublicKey, block: Hash, pol: Option<u32>) {
        if !self.fed.insert((round, block)) {
            return;
        }
        let validity = Validity::from_bool(self.blocks.contains_key(&block));
        self.queue.push_back(Input::ProposedValue(
            ProposedValue {
                height: Height(self.ledger.height() + 1),
                round: round_of(round),
                valid_round: pol.map_or(Round::Nil, round_of),
                proposer: Address(proposer),
                value: BlockId(block),
                validity,
            },
            ValueOrigin::Consensus,
        ));
    }

    fn on_part(&mut self, signed: SignedPart, height: u64) {
        let part = &signed.part;
        if part.height < height {
            return;
        }
        if part.height > height {
            let size = part.bytes.len();
            if part.height <= height + FUTURE_HEIGHTS
                && self.future_bytes + size <= MAX_FUTURE_PART_BYTES
            {
                self.future_bytes += size;
                self.future_parts.push(signed);
            } else {
                self.counters.reject(Rejection::PartTooFarAhead);
            }
            return;
        }
        if self.ledger.validators().power(&part.proposer) == 0 {
            self.counters.reject(Rejection::PartFromNonValidator);
            return;
        }
        if part.round > self.round.saturating_add(ROUND_LOOKAHEAD) {
            self.counters.reject(Rejection::PartRoundTooFarAhead);
            return;
        }
        if signed.verify(self.ctx.chain_id()).is_err() {
            self.counters.reject(Rejection::InvalidSignature);
            return;
        }
        let key = (part.round, part.proposer, part.block);
        if self.blocks.contains_key(&part.block) || self.invalid.contains(&part.block) {
            let pol = self.pol_round_of(part.round, part.proposer);
            self.feed_value(part.round, part.proposer, part.block, pol);
            return;
        }
        if !self.assembling.contains_key(&key) {
            let same_proposer = self
                .assembling
                .keys()
                .filter(|(r, p, _)| *r == part.round && *p == part.proposer)
                .count();
            if same_proposer >= MAX_ASSEMBLIES_PER_PROPOSER {
                self.counters.reject(Rejection::TooManyBlocksFromProposer);
                return;
            }
            self.assembling.insert(
                key,
                Assembly {
                    count: part.count,
                    parts: BTreeMap::new(),
                    bytes: 0,
                },
            );
        }
        let Some(assembly) = self.assembling.get_mut(&key) else {
            return;
        };
        if assembly.count != part.count {
            self.counters.reject(Rejection::InconsistentPartCount);
            return;
        }
        if assembly.bytes + part.bytes.len() > types::limits::MAX_BLOCK_BYTES {
            self.counters.reject(Rejection::BlockTooLarge);
            return;
        }
        if self.assembling_bytes + part.bytes.len() > MAX_ASSEMBLY_BYTES {
            self.counters.reject(Rejection::AssemblyMemoryFull);
            return;
        }
        if assembly.parts.contains_key(&part.index) {
            return;
        }
        assembly.bytes += part.bytes.len();
        self.assembling_bytes += part.bytes.len();
        assembly.parts.insert(part.index, part.bytes.clone());
        if assembly.parts.len() < assembly.count as usize {
            return;
        }
        let Some(assembly) = self.assembling.remove(&key) else {
            return;
        };
        self.assembling_bytes -= assembly.bytes;
        let bytes: Vec<u8> = assembly.parts.into_values().flatten().collect();
        let (round, proposer, hash) = key;
        // The signer of the parts is the round's proposer; the header names whoever built the
        // block, which differs when a block is re-proposed in a later round.
        let Some(valid) = self.admit_bytes(&bytes, hash) else {
            return;
        };
        if !valid {
            self.counters.invalid_blocks += u64::from(!self.invalid.contains(&hash));
            self.invalid.insert(hash);
        }
        let pol = self.pol_round_of(round, proposer);
        self.feed_value(round, proposer, hash, pol);
    }

    /// Decodes and validates the bytes of block `hash`, logging its body in the WAL when valid.
    /// `None` when the body could not be logged: nothing may be given to the core then.
    fn admit_bytes(&mut self, bytes: &[u8], hash: Hash) -> Option<bool> {
        let valid = match Block::from_bytes(bytes) {
            Ok(block) => self.admit_block(block, Some(hash)),
            Err(e) => {
                log::warn!("block {hash} does not decode: {e}");
                false
            }
        };
        if valid
            && let Some(executed) = self.blocks.get(&hash)
            && let Err(e) = self.wal.save_block(self.ledger.store(), &executed.block)
        {
            log::error!("cannot log block {hash}: {e}");
            return None;
        }
        Some(valid)
    }

    /// The polka round of the proposal seen from `proposer` in `round`, if any.
    fn pol_round_of(&self, round: u32, proposer: PublicKey) -> Option<u32> {
        self.proposals
            .get(&(round, proposer))
            .and_then(|(_, pol)| *pol)
    }

    fn on_synced_value(&mut self, response: ValueResponse<Ctx>, proposer: Address) {
        let cert = &response.certificate;
        let hash = cert.value_id.0;
        // A block with a valid commit certificate is judged afresh, whatever was thought of it
        // earlier at this height.
        self.invalid.remove(&hash);
        let Some(valid) = self.admit_bytes(&response.value_bytes, hash) else {
            return;
        };
        self.queue.push_back(Input::ProposedValue(
            ProposedValue {
                height: cert.height,
                round: cert.round,
                valid_round: Round::Nil,
                proposer,
                value: cert.value_id,
                validity: Validity::from_bool(valid),
            },
            ValueOrigin::Sync,
        ));
    }

    fn decide(&mut self, certificate: &CommitCertificate<Ctx>) -> Result<(), EngineError> {
        let commit = commit_of(certificate).ok_or(EngineError::Internal)?;
        let hash = certificate.value_id.0;
        let executed = self
            .blocks
            .remove(&hash)
            .ok_or(EngineError::DecidedBlockMissing(hash))?;
        let txs = executed.block.txs.clone();
        self.ledger.commit(executed, &commit)?;
        if let Err(e) = self.mempool.update(&txs, &self.ledger) {
            log::error!(
                "cannot update the mempool after height {}: {e}",
                commit.height
            );
        }
        self.counters.decided += 1;
        self.last_commit = Some(commit);
        self.submit_slashings();
        Ok(())
    }

    fn finalize(
        &mut self,
        certificate: &CommitCertificate<Ctx>,
        evidence: &core::MisbehaviorEvidence<Ctx>,
    ) {
        let height = certificate.height.0;
        if let Some(commit) = commit_of(certificate)
            && self.ledger.height() == height
        {
            self.last_commit = Some(commit);
        }
        let mut found = Vec::new();
        for (_, pairs) in evidence.votes.iter() {
            for (a, b) in pairs {
                if let (Some(a), Some(b)) = (vote_from_core(a), vote_from_core(b)) {
                    found.push(Evidence::double_vote(a, b));
                }
            }
        }
        for (_, pairs) in evidence.proposals.iter() {
            for (a, b) in pairs {
                if let (Some(a), Some(b)) = (proposal_from_core(a), proposal_from_core(b)) {
                    found.push(Evidence::double_proposal(a, b));
                }
            }
        }
        let mut offences = BTreeSet::new();
        found.retain(|e| offences.insert((e.offender(), e.height())));
        self.counters.evidence += found.len() as u64;
        for e in &found {
            log::warn!(
                "validator {} equivocated at height {}",
                e.offender(),
                e.height()
            );
            self.slashings
                .entry((e.offender(), e.height()))
                .or_insert_with(|| (e.clone(), None));
        }
        self.submit_slashings();
        self.outputs.push(Output::Committed {
            height,
            round: certificate.round.as_u32().unwrap_or(0),
            hash: certificate.value_id.0,
            evidence: found,
        });
        self.queue.push_back(Input::StartHeight(
            Height(height + 1),
            ValidatorSet::from_chain(self.ledger.validators()),
            false,
            None,
            VoteExtensionPolicy::Disabled,
        ));
    }

    /// Makes sure every offence we saw and the chain has not punished yet has a slashing
    /// transaction of ours in the mempool: one per offender and offence height, re-made when
    /// the mempool dropped it (another validator's slashing of the same offence landing first
    /// makes ours fail, and the pool then drops our later nonces too).
    fn submit_slashings(&mut self) {
        let tip = self.ledger.height();
        let mut done = Vec::new();
        for (&(offender, height), _) in self.slashings.iter() {
            let expired = height.saturating_add(EVIDENCE_MAX_AGE_BLOCKS) <= tip;
            if expired || self.ledger.was_slashed(offender, height).unwrap_or(false) {
                done.push((offender, height));
            }
        }
        for key in done {
            self.slashings.remove(&key);
        }
        let sender = self.address.0;
        let keys: Vec<(PublicKey, u64)> = self.slashings.keys().copied().collect();
        for key in keys {
            let Some((evidence, pending)) = self.slashings.get(&key) else {
                continue;
            };
            if pending.is_some_and(|id| self.mempool.contains(&id)) {
                continue;
            }
            let nonce = match self.mempool.pending_nonce(&sender) {
                Some(n) => n,
                None => match self.ledger.account(&sender) {
                    Ok(a) => a.nonce,
                    Err(e) => {
                        log::error!("cannot read our account to submit a slashing: {e}");
                        return;
                    }
                },
            };
            let tx = Transaction {
                chain_id: self.ctx.chain_id().clone(),
                sender,
                nonce,
                fee: self.config.mempool.min_fee,
                payload: Payload::Slash(Box::new(evidence.clone())),
            }
            .sign(&self.key);
            match self.mempool.insert(tx.clone(), &self.ledger) {
                Ok(id) => {
                    log::info!("submitting the slashing of {} for height {}", key.0, key.1);
                    self.slashings.insert(key, (evidence.clone(), Some(id)));
                    self.outputs.push(Output::Transaction(tx));
                }
                Err(e) => log::warn!("slashing transaction refused by our mempool: {e}"),
            }
        }
    }

    /// Checks precommits for `value` by `signatures` make a commit certificate.
    #[allow(clippy::result_large_err)]
    fn verify_commit(
        &self,
        height: Height,
        round: Round,
        value: BlockId,
        signatures: impl Iterator<Item = (Address, types::Signature)>,
        set: &ValidatorSet,
        thresholds: ThresholdParams,
    ) -> Result<(), CertificateError<Ctx>> {
        let votes = signatures.map(|(a, s)| (a, VoteType::Precommit, NilOrVal::Val(value), s));
        self.verify_votes(
            height,
            round,
            votes,
            set,
            |w, t| thresholds.quorum.is_met(w, t),
            CertKind::Commit,
        )
    }

    /// Checks signed votes against `set`: known signers, no duplicates, valid signatures, and
    /// enough power by `enough(signed, total)`.
    // The error type is the one the core resumes with.
    #[allow(clippy::result_large_err)]
    fn verify_votes(
        &self,
        height: Height,
        round: Round,
        votes: impl Iterator<Item = (Address, VoteType, NilOrVal<BlockId>, types::Signature)>,
        set: &ValidatorSet,
        enough: impl Fn(u64, u64) -> bool,
        kind: CertKind,
    ) -> Result<(), CertificateError<Ctx>> {
        let mut seen = BTreeSet::new();
        let mut counted = BTreeSet::new();
        let mut signed: u64 = 0;
        let mut batch = types::BatchVerifier::new();
        let mut entries = Vec::new();
        for (address, vote_type, value, signature) in votes {
            let Some(validator) = set.get_by_address(&address) else {
                return Err(CertificateError::UnknownValidator(address));
            };
            if !seen.insert((address, vote_type == VoteType::Precommit)) {
                return Err(CertificateError::DuplicateVote(address));
            }
            let vote = crate::context::Vote {
                height,
                round,
                kind: vote_type,
                value,
                validator: address,
            };
            let Some(wire) = vote.to_wire() else {
                return Err(CertificateError::VerificationError(None));
            };
            batch.push(
                &address.0,
                Domain::Vote,
                self.ctx.chain_id(),
                &wire,
                &signature,
            );
            entries.push((address, signature, vote_type, value));
            if counted.insert(address) {
                signed = signed.saturating_add(validator.power);
            }
        }
        if let Err(bad) = batch.verify() {
            let (address, signature, vote_type, value) = entries[bad[0]];
            return Err(match kind {
                CertKind::Commit => CertificateError::InvalidCommitSignature(
                    mc::CommitSignature::new(address, signature),
                ),
                CertKind::Polka => CertificateError::InvalidPolkaSignature(
                    mc::PolkaSignature::new(address, signature),
                ),
                CertKind::Round => CertificateError::InvalidRoundSignature(
                    mc::RoundSignature::new(vote_type, value, address, signature),
                ),
            });
        }
        let total = mc::ValidatorSet::total_voting_power(set);
        if !enough(signed, total) {
            return Err(CertificateError::NotEnoughVotingPower {
                signed,
                total,
                expected: total / 3 * 2 + 1,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum CertKind {
    Commit,
    Polka,
    Round,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lists_the_label_of_every_rejection_once() {
        let every = [
            Rejection::DecidedHeight,
            Rejection::ProposalFromNonValidator,
            Rejection::VoteFromNonValidator,
            Rejection::InvalidSignature,
            Rejection::PartTooFarAhead,
            Rejection::PartFromNonValidator,
            Rejection::PartRoundTooFarAhead,
            Rejection::TooManyBlocksFromProposer,
            Rejection::InconsistentPartCount,
            Rejection::BlockTooLarge,
            Rejection::AssemblyMemoryFull,
            Rejection::SyncCertificate,
        ];
        let labels: Vec<&str> = every.into_iter().map(Rejection::label).collect();
        assert_eq!(labels, Rejection::LABELS);
        let distinct: std::collections::BTreeSet<&str> = labels.iter().copied().collect();
        assert_eq!(distinct.len(), labels.len(), "no label twice");
    }
}

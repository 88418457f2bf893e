//! Engines of several validators wired together in-process over a lossless, instant network.

use std::sync::Arc;

use chain::testkit::TestChain;
use consensus::guard::{SignGuard, Step};
use consensus::{ConsensusMessage, Engine, EngineConfig, Output, Timeouts};
use storage::{Column, MemStore, Store, WriteBatch};
use types::crypto::signing_bytes;
use types::{Domain, Hash, SignedVote, Tag, VoteKind};

struct Net {
    test: TestChain,
    stores: Vec<Arc<MemStore>>,
    engines: Vec<Option<Engine<Arc<MemStore>>>>,
    now: u64,
    /// A validator whose every prevote is followed by a conflicting one it also signed.
    equivocator: Option<usize>,
}

fn config() -> EngineConfig {
    EngineConfig {
        timeouts: Timeouts {
            propose_ms: 300,
            propose_delta_ms: 100,
            prevote_ms: 200,
            prevote_delta_ms: 100,
            precommit_ms: 200,
            precommit_delta_ms: 100,
            rebroadcast_ms: 1000,
            max_ms: 5000,
            commit_ms: 0,
        },
        ..EngineConfig::default()
    }
}

impl Net {
    fn new(stakes: &[u64]) -> Net {
        let test = TestChain::with_stakes(stakes, 4, 7);
        let now = test.genesis.time_ms + 1000;
        let stores: Vec<Arc<MemStore>> = stakes.iter().map(|_| Arc::new(MemStore::new())).collect();
        let mut net = Net {
            engines: Vec::new(),
            stores,
            test,
            now,
            equivocator: None,
        };
        for i in 0..stakes.len() {
            let engine = net.open(i);
            net.engines.push(Some(engine));
        }
        net
    }

    fn open(&self, i: usize) -> Engine<Arc<MemStore>> {
        Engine::open(
            self.stores[i].clone(),
            &self.test.genesis,
            self.test.validators[i].clone(),
            config(),
            self.now,
        )
        .expect("engine opens")
    }

    /// Delivers every output until quiet, then advances time to the next timer, until every
    /// running engine has committed `height` (or `steps` timer steps pass).
    fn run_to(&mut self, height: u64, steps: usize) {
        for _ in 0..steps {
            self.deliver_all(height);
            self.sync();
            if self
                .engines
                .iter()
                .flatten()
                .all(|e| e.ledger().height() >= height)
            {
                return;
            }
            let next = self
                .engines
                .iter()
                .flatten()
                .filter_map(|e| e.next_deadline())
                .min();
            let Some(next) = next else { return };
            self.now = self.now.max(next);
            for engine in self.engines.iter_mut().flatten() {
                engine.tick(self.now);
            }
        }
    }

    /// Feeds a lagging engine the blocks it misses from the most advanced one.
    fn sync(&mut self) {
        let Some(best) = (0..self.engines.len())
            .filter(|&i| self.engines[i].is_some())
            .max_by_key(|&i| self.engines[i].as_ref().map(|e| e.ledger().height()))
        else {
            return;
        };
        let source: Vec<_> = {
            let ledger = self.engines[best].as_ref().expect("present").ledger();
            (1..=ledger.height())
                .map(|h| {
                    (
                        ledger.block(h).expect("read").expect("held"),
                        ledger.commit_at(h).expect("read").expect("held"),
                    )
                })
                .collect()
        };
        for engine in self.engines.iter_mut().flatten() {
            while let Some((block, commit)) = source.get(engine.height() as usize - 1) {
                let before = engine.height();
                engine
                    .on_synced_block(block.clone(), commit.clone(), self.now)
                    .expect("synced block at the current height");
                if engine.height() == before {
                    break;
                }
            }
        }
    }

    fn deliver_all(&mut self, stop_at: u64) {
        while !self
            .engines
            .iter()
            .flatten()
            .all(|e| e.ledger().height() >= stop_at)
        {
            if !self.deliver_once() {
                return;
            }
        }
    }

    /// Delivers the outputs produced so far; false when there were none.
    fn deliver_once(&mut self) -> bool {
        {
            let mut sent = Vec::new();
            for (i, engine) in self.engines.iter_mut().enumerate() {
                if let Some(engine) = engine {
                    for out in engine.drain_outputs() {
                        sent.push((i, out));
                    }
                }
            }
            if sent.is_empty() {
                return false;
            }
            let mut extra = Vec::new();
            for (from, out) in &sent {
                if Some(*from) == self.equivocator
                    && let Output::Broadcast(ConsensusMessage::Vote(v)) = out
                    && v.vote.kind == VoteKind::Prevote
                {
                    let key = &self.test.validators[*from];
                    let mut vote = v.vote.clone();
                    vote.block = match vote.block {
                        Some(_) => None,
                        None => Some(Hash([0xee; 32])),
                    };
                    let signature = key.sign(Domain::Vote, &self.test.genesis.chain_id, &vote);
                    extra.push((
                        *from,
                        Output::Broadcast(ConsensusMessage::Vote(SignedVote { vote, signature })),
                    ));
                }
            }
            for (from, out) in sent.into_iter().chain(extra) {
                for (to, engine) in self.engines.iter_mut().enumerate() {
                    let Some(engine) = engine else { continue };
                    if to == from {
                        continue;
                    }
                    match &out {
                        Output::Broadcast(m) => engine.on_message(m.clone(), self.now),
                        Output::Transaction(tx) => {
                            let _ = engine.on_transaction(tx.clone());
                        }
                        Output::Committed { .. } => {}
                    }
                }
            }
        }
        true
    }

    /// Delivers until validator `i` has signed something at the height it is working on.
    fn deliver_until_signed_at_current_height(&mut self, i: usize) {
        for _ in 0..1000 {
            let engine = self.engines[i].as_ref().expect("up");
            if engine
                .last_signed()
                .is_some_and(|s| s.height == engine.height())
            {
                return;
            }
            let next = engine.ledger().height() + 1;
            if !self.deliver_once() {
                self.run_to(next, 1);
            }
        }
        panic!("validator {i} never signed at its current height");
    }

    fn heights(&self) -> Vec<u64> {
        self.engines
            .iter()
            .flatten()
            .map(|e| e.ledger().height())
            .collect()
    }
}

#[test]
fn four_validators_with_unequal_stakes_finalize_the_same_blocks() {
    let mut net = Net::new(&[10, 20, 30, 40]);
    for n in 0..4 {
        let tx = net.test.transfer(n, (n + 1) % 4, 0, 5);
        for engine in net.engines.iter_mut().flatten() {
            engine.on_transaction(tx.clone()).expect("valid transfer");
        }
    }
    net.run_to(5, 200);
    let heights = net.heights();
    assert!(heights.iter().all(|&h| h >= 5), "heights {heights:?}");
    let min = *heights.iter().min().expect("engines");
    for h in 1..=min {
        let hashes: Vec<_> = net
            .engines
            .iter()
            .flatten()
            .map(|e| {
                e.ledger()
                    .block(h)
                    .expect("readable")
                    .expect("present")
                    .hash()
            })
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "height {h}");
    }
    let txs: usize = (1..=min)
        .map(|h| {
            net.engines[0]
                .as_ref()
                .expect("up")
                .ledger()
                .block(h)
                .expect("ok")
                .expect("some")
                .txs
                .len()
        })
        .sum();
    assert_eq!(txs, 4, "every submitted transfer is committed once");
}

#[test]
fn a_restarted_validator_resumes_without_double_signing() {
    let mut net = Net::new(&[10, 10, 10, 10]);
    net.run_to(3, 100);
    net.engines[2] = None;
    net.run_to(6, 100);
    let reopened = net.open(2);
    net.engines[2] = Some(reopened);
    net.run_to(9, 200);
    let after = net.heights();
    assert!(
        after.iter().all(|&h| h >= 9),
        "restarted node caught up: {after:?}"
    );
    let last = net.engines[2]
        .as_ref()
        .expect("up")
        .last_signed()
        .expect("signed")
        .height;
    assert!(
        last >= 8,
        "the restarted validator signs again (last signed at {last})"
    );
    for e in net.engines.iter().flatten() {
        assert_eq!(e.counters().signing_refused, 0);
    }
}

#[test]
fn a_double_vote_is_surfaced_at_finalization_and_the_equivocator_is_slashed() {
    let mut net = Net::new(&[100, 100, 100, 100]);
    net.equivocator = Some(3);
    net.run_to(1, 100);
    net.equivocator = None;
    net.run_to(6, 200);
    let offender = net.test.validators[3].public_key();
    for engine in net.engines.iter().flatten() {
        if engine.address() != offender {
            assert!(
                engine.counters().evidence > 0,
                "evidence surfaced on every honest node"
            );
        }
        let stake = engine.ledger().validators().get(&offender).map(|v| v.stake);
        assert_eq!(
            stake,
            Some(80),
            "20% of the equivocator's stake is burned once"
        );
    }
}

/// Deletes every WAL record of the node's store: a lost or wiped log.
fn wipe_wal(store: &MemStore) {
    let keys: Vec<Vec<u8>> = store
        .scan(Column::Wal, &[], 100_000)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut batch = WriteBatch::new();
    for key in keys {
        batch.delete(Column::Wal, key);
    }
    store.write(batch).expect("wipe");
}

#[test]
fn with_its_wal_lost_a_restarted_validator_still_never_signs_a_conflicting_vote() {
    let mut net = Net::new(&[10, 10, 10, 10]);
    net.run_to(2, 100);
    // Stop every node in the middle of a height, after each has voted.
    for engine in net.engines.iter_mut().flatten() {
        engine.drain_outputs();
    }
    let signed_before: Vec<_> = net
        .engines
        .iter()
        .flatten()
        .map(|e| *e.last_signed().expect("signed"))
        .collect();
    for i in 0..4 {
        net.engines[i] = None;
        wipe_wal(&net.stores[i]);
    }
    for i in 0..4 {
        net.engines[i] = Some(net.open(i));
    }
    net.run_to(5, 300);
    for (i, engine) in net.engines.iter().flatten().enumerate() {
        let before = signed_before[i];
        // Whatever it signed after the restart came later than, or is identical to, what it had
        // signed before: the guard refused anything else.
        let after = engine.last_signed().expect("signed");
        assert!(
            (after.height, after.round, after.step) >= (before.height, before.round, before.step)
        );
    }
    assert!(net.heights().iter().all(|&h| h >= 5), "{:?}", net.heights());
}

#[test]
fn a_validator_killed_mid_height_replays_its_wal_and_reuses_its_recorded_votes() {
    let mut net = Net::new(&[10, 10, 10, 10]);
    net.run_to(2, 100);
    net.deliver_until_signed_at_current_height(1);
    let last = *net.engines[1]
        .as_ref()
        .expect("up")
        .last_signed()
        .expect("signed");
    assert_eq!(last.height, net.engines[1].as_ref().expect("up").height());
    net.engines[1] = None;
    let reopened = net.open(1);
    assert!(
        reopened.counters().wal_replayed > 0,
        "the WAL of the height was replayed"
    );
    assert_eq!(reopened.counters().signing_refused, 0);
    assert_eq!(reopened.last_signed().copied(), Some(last));
    net.engines[1] = Some(reopened);
    net.run_to(5, 300);
    assert!(net.heights().iter().all(|&h| h >= 5), "{:?}", net.heights());
    assert_eq!(
        net.engines[1]
            .as_ref()
            .expect("up")
            .counters()
            .signing_refused,
        0,
        "replay re-used recorded signatures instead of signing anew"
    );
}

#[test]
fn the_sign_guard_refuses_a_conflicting_vote_when_the_wal_is_lost() {
    let mut net = Net::new(&[10, 10, 10, 10]);
    net.run_to(1, 100);
    net.deliver_until_signed_at_current_height(1);
    net.engines[1] = None;
    wipe_wal(&net.stores[1]);
    // Isolated and later in time: without its log the node would now vote differently (nil on
    // a propose timeout, or a new block if it proposes).
    net.now += 5_000;
    let mut alone = net.open(1);
    for _ in 0..20 {
        let Some(at) = alone.next_deadline() else {
            break;
        };
        alone.tick(at);
        alone.drain_outputs();
    }
    assert!(
        alone.counters().signing_refused > 0,
        "the guard refused the conflicting message"
    );
}

#[test]
fn forged_parts_and_messages_from_non_validators_are_counted_and_dropped() {
    use consensus::message::{BlockPart, SignedPart};
    let mut net = Net::new(&[10, 10, 10, 10]);
    let engine = net.engines[0].as_mut().expect("up");
    let height = engine.height();
    let proposer = net.test.validators[1].clone();
    let chain = net.test.genesis.chain_id.clone();
    let part = |round: u32| BlockPart {
        height,
        round,
        proposer: proposer.public_key(),
        block: Hash([5; 32]),
        index: 0,
        count: 2,
        bytes: vec![1; 10],
    };
    let forged = SignedPart {
        signature: net.test.validators[2].sign(Domain::BlockPart, &chain, &part(0)),
        part: part(0),
    };
    engine.on_message(ConsensusMessage::Part(forged), net.now);
    let far = SignedPart {
        signature: proposer.sign(Domain::BlockPart, &chain, &part(1000)),
        part: part(1000),
    };
    engine.on_message(ConsensusMessage::Part(far), net.now);
    let outsider = types::SecretKey::from_seed([99; 32]);
    let mut stranger = part(0);
    stranger.proposer = outsider.public_key();
    let stranger = SignedPart {
        signature: outsider.sign(Domain::BlockPart, &chain, &stranger),
        part: stranger,
    };
    engine.on_message(ConsensusMessage::Part(stranger), net.now);
    let vote = types::Vote {
        height,
        round: 0,
        kind: VoteKind::Prevote,
        block: None,
        validator: outsider.public_key(),
    };
    engine.on_message(
        ConsensusMessage::Vote(SignedVote {
            signature: outsider.sign(Domain::Vote, &chain, &vote),
            vote,
        }),
        net.now,
    );
    let rejected = &engine.counters().rejected;
    assert_eq!(rejected.get("vote_from_non_validator"), Some(&1));
    assert_eq!(rejected.get("invalid_signature"), Some(&1));
    assert_eq!(rejected.get("part_round_too_far_ahead"), Some(&1));
    assert_eq!(rejected.get("part_from_non_validator"), Some(&1));
}

#[test]
fn a_lone_validator_decides_one_height_per_commit_pause_and_drops_stale_messages_meanwhile() {
    const PAUSE_MS: u64 = 100;
    let test = TestChain::with_stakes(&[10], 1, 9);
    let mut now = test.genesis.time_ms + 1000;
    let store = Arc::new(MemStore::new());
    let mut engine_config = config();
    engine_config.timeouts.commit_ms = PAUSE_MS;
    // Opening decides height 1 at once (it needs no one else) and returns.
    let mut engine = Engine::open(
        store,
        &test.genesis,
        test.validators[0].clone(),
        engine_config,
        now,
    )
    .expect("engine opens");
    assert_eq!(engine.ledger().height(), 1);
    assert_eq!(
        engine.height(),
        2,
        "the next height is named during the pause"
    );
    let proposal = engine
        .drain_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast(m @ ConsensusMessage::Proposal(_)) => Some(m),
            _ => None,
        })
        .expect("it proposed height 1");
    // During the pause the decided height's proposal is dropped, not fed to the next height.
    engine.on_message(proposal, now);
    assert_eq!(engine.counters().rejected.get("decided_height"), Some(&1));
    assert_eq!(engine.next_deadline(), Some(now + PAUSE_MS));
    // Before the pause ends nothing starts; at its end exactly one more height is decided.
    engine.tick(now + PAUSE_MS - 1);
    assert_eq!(engine.ledger().height(), 1);
    for expected in 2..=5 {
        now = engine.next_deadline().expect("the next start is scheduled");
        engine.tick(now);
        assert_eq!(engine.ledger().height(), expected);
        assert_eq!(engine.next_deadline(), Some(now + PAUSE_MS));
    }
    assert_eq!(engine.counters().invalid_blocks, 0);
}

/// A scan limit that takes every entry of a column.
const EVERY_ENTRY: usize = usize::MAX;

/// A store that keeps a copy of itself as it was right after the first proposal was signed: what
/// a validator killed at that moment finds on disk when it starts again.
#[derive(Default)]
struct CopyAtFirstProposal {
    live: MemStore,
    copy: std::sync::Mutex<Option<Arc<MemStore>>>,
}

impl CopyAtFirstProposal {
    fn copy(&self) -> Option<Arc<MemStore>> {
        self.copy.lock().expect("not poisoned").clone()
    }
}

impl Store for CopyAtFirstProposal {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, storage::StoreError> {
        self.live.get(col, key)
    }

    fn get_at_or_before(
        &self,
        col: Column,
        key: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, storage::StoreError> {
        self.live.get_at_or_before(col, key)
    }

    fn scan(
        &self,
        col: Column,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, storage::StoreError> {
        self.live.scan(col, start, limit)
    }

    fn last(&self, col: Column) -> Result<Option<(Vec<u8>, Vec<u8>)>, storage::StoreError> {
        self.live.last(col)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), storage::StoreError> {
        self.live.write(batch)?;
        let mut copy = self.copy.lock().expect("not poisoned");
        let signed_proposal = SignGuard::load(&self.live)
            .expect("guard reads")
            .last()
            .is_some_and(|last| last.step == Step::Proposal);
        if copy.is_none() && signed_proposal {
            let mut all = WriteBatch::new();
            for col in Column::ALL {
                for (key, value) in self.live.scan(col, &[], EVERY_ENTRY)? {
                    all.put(col, key, value);
                }
            }
            let store = MemStore::new();
            store.write(all)?;
            *copy = Some(Arc::new(store));
        }
        Ok(())
    }
}

/// A lone validator's store as it was right after it signed its proposal of height 1, and that
/// proposal's digest.
fn killed_after_signing_its_first_proposal(test: &TestChain, now: u64) -> (Arc<MemStore>, Hash) {
    let store = Arc::new(CopyAtFirstProposal::default());
    let engine = Engine::open(
        store.clone(),
        &test.genesis,
        test.validators[0].clone(),
        config(),
        now,
    )
    .expect("engine opens");
    assert_eq!(
        engine.ledger().height(),
        1,
        "a lone validator decides at once"
    );
    let copy = store.copy().expect("a proposal was signed");
    let last = *SignGuard::load(&*copy)
        .expect("guard reads")
        .last()
        .expect("signed");
    assert_eq!((last.height, last.round), (1, 0));
    (copy, last.digest)
}

/// The digest the guard records for `proposal`.
fn digest_of(test: &TestChain, proposal: &types::Proposal) -> Hash {
    Hash::tagged(
        Tag::SignedBytes,
        &[&signing_bytes(
            Domain::Proposal,
            &test.genesis.chain_id,
            proposal,
        )],
    )
}

#[test]
fn a_proposer_restarted_right_after_signing_its_proposal_proposes_the_same_block_again() {
    let test = TestChain::with_stakes(&[10], 1, 11);
    let now = test.genesis.time_ms + 1000;
    let (store, digest) = killed_after_signing_its_first_proposal(&test, now);
    // Later, so a block built afresh would differ from the one signed.
    let later = now + 5000;
    let mut engine = Engine::open(
        store,
        &test.genesis,
        test.validators[0].clone(),
        config(),
        later,
    )
    .expect("engine reopens");
    let proposal = engine
        .drain_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Proposal(p)) => Some(p),
            _ => None,
        })
        .expect("it proposed again");
    assert_eq!(digest_of(&test, &proposal.proposal), digest);
    assert_eq!(engine.counters().signing_refused, 0);
    assert_eq!(engine.ledger().height(), 1, "height 1 is final");
    let decided = engine.ledger().block(1).expect("read").expect("held");
    assert_eq!(decided.hash(), proposal.proposal.block);
    let at = engine.next_deadline().expect("height 2 is scheduled");
    engine.tick(at);
    assert_eq!(engine.ledger().height(), 2, "height 2 is final");
}

#[test]
fn a_proposer_restarted_after_signing_a_proposal_whose_block_is_lost_sits_out_that_round() {
    let test = TestChain::with_stakes(&[10], 1, 11);
    let now = test.genesis.time_ms + 1000;
    let (store, digest) = killed_after_signing_its_first_proposal(&test, now);
    wipe_wal(&store);
    let mut later = now + 5000;
    let mut engine = Engine::open(
        store,
        &test.genesis,
        test.validators[0].clone(),
        config(),
        later,
    )
    .expect("engine reopens");
    for _ in 0..20 {
        if engine.ledger().height() >= 2 {
            break;
        }
        later = engine.next_deadline().expect("something is scheduled");
        engine.tick(later);
    }
    assert_eq!(engine.ledger().height(), 2, "heights 1 and 2 are final");
    assert_eq!(engine.counters().signing_refused, 0);
    let proposals: Vec<types::Proposal> = engine
        .drain_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Broadcast(ConsensusMessage::Proposal(p)) => Some(p.proposal),
            _ => None,
        })
        .collect();
    assert!(
        proposals
            .iter()
            .all(|p| p.height != 1 || p.round > 0 && digest_of(&test, p) != digest),
        "height 1 was proposed only from round 1 on: {proposals:?}"
    );
}

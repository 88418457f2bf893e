//! The ledger end to end on both stores: genesis, blocks built and validated, every kind of
//! invalid block refused with its reason, staking and slashing, proofs, and reopening.

use chain::params::{SLASH_PERCENT, UNBONDING_BLOCKS};
use chain::testkit::TestChain;
use chain::{BlockError, CommitError, Ledger, LedgerError, TxError};
use storage::{MemStore, RocksStore, Store, StoreOptions};
use types::{
    Block, Domain, Evidence, Genesis, Hash, Payload, SignedTransaction, SignedVote, Vote, VoteKind,
};

const STEP_MS: u64 = 1_000;

fn now_after(ledger: &Ledger<impl Store>) -> u64 {
    ledger.tip().time_ms + STEP_MS
}

/// Proposes a block of `txs` by validator `proposer`, commits it, and returns it.
fn commit_block<S: Store>(
    ledger: &mut Ledger<S>,
    net: &TestChain,
    proposer: usize,
    txs: Vec<SignedTransaction>,
) -> Block {
    let last_commit = if ledger.height() == 0 {
        None
    } else {
        ledger.commit_at(ledger.height()).expect("readable")
    };
    let time = now_after(ledger);
    let proposed = ledger
        .propose(
            net.validators[proposer].public_key(),
            time,
            last_commit,
            txs,
        )
        .expect("proposes");
    assert!(proposed.skipped.is_empty(), "{:?}", proposed.skipped);
    let block = proposed.executed.block.clone();
    let commit = net.commit(&block);
    ledger.commit(proposed.executed, &commit).expect("commits");
    block
}

/// A valid next block of `txs`, not committed.
fn next_block<S: Store>(ledger: &Ledger<S>, net: &TestChain, txs: Vec<SignedTransaction>) -> Block {
    let last_commit = if ledger.height() == 0 {
        None
    } else {
        ledger.commit_at(ledger.height()).expect("readable")
    };
    ledger
        .propose(
            net.validators[0].public_key(),
            now_after(ledger),
            last_commit,
            txs,
        )
        .expect("proposes")
        .executed
        .block
}

fn mem_ledger(net: &TestChain) -> Ledger<MemStore> {
    Ledger::open(MemStore::new(), &net.genesis).expect("opens")
}

#[test]
fn genesis_is_written_once_and_never_changes() {
    let net = TestChain::new(4, 2, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = {
        let store = RocksStore::open(dir.path(), &StoreOptions::test()).expect("open");
        let ledger = Ledger::open(store, &net.genesis).expect("opens");
        (
            ledger.tip_hash(),
            ledger.tip().state_root,
            ledger.genesis_hash(),
        )
    };
    let store = RocksStore::open(dir.path(), &StoreOptions::test()).expect("reopen");
    let ledger = Ledger::open(store, &net.genesis).expect("reopens");
    assert_eq!(
        (
            ledger.tip_hash(),
            ledger.tip().state_root,
            ledger.genesis_hash()
        ),
        first
    );
    assert_eq!(ledger.height(), 0);
    assert_eq!(ledger.tip().parent, net.genesis.hash());
}

#[test]
fn a_store_of_another_chain_is_refused() {
    let net = TestChain::new(4, 2, 1);
    let other = TestChain::new(4, 2, 2);
    let store = std::sync::Arc::new(MemStore::new());
    Ledger::open(store.clone(), &net.genesis).expect("opens");
    let err = Ledger::open(store, &other.genesis).err().expect("refused");
    assert!(matches!(err, LedgerError::GenesisMismatch { .. }), "{err}");
}

#[test]
fn transfers_move_balances_bump_nonces_and_pay_the_proposer() {
    let net = TestChain::new(4, 3, 1);
    let mut ledger = mem_ledger(&net);
    let proposer = net.validators[2].public_key();
    let before = ledger.account(&proposer).expect("reads").balance;
    commit_block(
        &mut ledger,
        &net,
        2,
        vec![net.transfer(0, 1, 0, 500), net.transfer(0, 2, 1, 250)],
    );
    let a0 = ledger
        .account(&net.accounts[0].public_key())
        .expect("reads");
    assert_eq!(a0.balance, TestChain::BALANCE - 750 - 2);
    assert_eq!(a0.nonce, 2);
    let a1 = ledger
        .account(&net.accounts[1].public_key())
        .expect("reads");
    assert_eq!(a1.balance, TestChain::BALANCE + 500);
    assert_eq!(
        ledger.account(&proposer).expect("reads").balance,
        before + 2
    );
    let tx = net.transfer(0, 1, 0, 500);
    let location = ledger
        .tx_location(&tx.id())
        .expect("reads")
        .expect("indexed");
    assert_eq!((location.height, location.index), (1, 0));
    let block = ledger.block(1).expect("reads").expect("stored");
    assert_eq!(
        ledger.block_by_hash(&block.hash()).expect("reads"),
        Some(block)
    );
}

#[test]
fn the_same_blocks_give_the_same_roots_on_memory_and_rocksdb() {
    let net = TestChain::new(4, 4, 7);
    let mut mem = mem_ledger(&net);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path(), &StoreOptions::test()).expect("open");
    let mut rocks = Ledger::open(store, &net.genesis).expect("opens");
    assert_eq!(mem.tip_hash(), rocks.tip_hash());
    for height in 0..5u64 {
        let txs = vec![
            net.transfer(0, 1, height, 10 + height),
            net.transfer(2, 3, height, 7),
        ];
        let block = commit_block(&mut mem, &net, 1, txs);
        let commit = net.commit(&block);
        rocks
            .apply(block, &commit, now_after(&rocks) + 60_000)
            .expect("valid on the other store");
        assert_eq!(mem.tip_hash(), rocks.tip_hash());
        assert_eq!(mem.tip().state_root, rocks.tip().state_root);
    }
}

/// Replaces the block's transactions and fixes the transactions root, so validation reaches
/// the transactions themselves.
fn with_txs(mut block: Block, txs: Vec<SignedTransaction>) -> Block {
    block.header.txs_root = types::merkle_root_of_txs(&txs);
    block.txs = txs;
    block
}

#[test]
fn an_invalid_transaction_makes_the_whole_block_invalid() {
    let net = TestChain::new(4, 2, 1);
    let mut ledger = mem_ledger(&net);
    let good = net.transfer(0, 1, 0, 5);
    let replay = net.transfer(0, 1, 0, 6);
    let block = with_txs(next_block(&ledger, &net, vec![]), vec![good, replay]);
    let now = now_after(&ledger);
    let err = ledger.execute(block, now).expect_err("refused");
    assert!(
        matches!(
            err,
            BlockError::Tx {
                index: 1,
                source: TxError::NonceReplay { .. }
            }
        ),
        "{err}"
    );
    assert_eq!(
        ledger.counters().blocks_rejected.get("invalid_tx"),
        Some(&1)
    );
}

/// Breaks one field of a valid block.
type Breaker = Box<dyn Fn(&mut Block)>;

#[test]
fn each_broken_header_field_is_refused_with_its_reason() {
    let net = TestChain::new(4, 2, 1);
    let mut ledger = mem_ledger(&net);
    commit_block(&mut ledger, &net, 0, vec![]);
    let good = next_block(&ledger, &net, vec![net.transfer(0, 1, 0, 5)]);
    let now = now_after(&ledger);
    let outsider = net.accounts[0].public_key();
    let cases: Vec<(&str, Breaker)> = vec![
        ("wrong_height", Box::new(|b| b.header.height += 1)),
        (
            "wrong_parent",
            Box::new(|b| b.header.parent = Hash([1; 32])),
        ),
        ("time_not_increasing", Box::new(|b| b.header.time_ms = 0)),
        (
            "time_in_future",
            Box::new(|b| b.header.time_ms += 3_600_000),
        ),
        (
            "unknown_proposer",
            Box::new(move |b| b.header.proposer = outsider),
        ),
        (
            "validators_hash_mismatch",
            Box::new(|b| b.header.validators_hash = Hash([2; 32])),
        ),
        ("txs_root_mismatch", Box::new(|b| b.txs.clear())),
        (
            "last_commit_hash_mismatch",
            Box::new(|b| b.header.last_commit_hash = Hash([3; 32])),
        ),
        (
            "state_root_mismatch",
            Box::new(|b| b.header.state_root = Hash([4; 32])),
        ),
        (
            "invalid_tx",
            Box::new(|b| {
                b.txs[0].signature = types::Signature::from_bytes([0; 64]).expect("s=0");
                b.header.txs_root = types::merkle_root_of_txs(&b.txs);
            }),
        ),
        (
            "missing_last_commit",
            Box::new(|b| {
                b.last_commit = None;
                b.header.last_commit_hash = Block::commit_hash(None);
            }),
        ),
    ];
    for (label, break_it) in cases {
        let mut block = good.clone();
        break_it(&mut block);
        let err = ledger.execute(block, now).expect_err(label);
        assert_eq!(err.label(), label, "{err}");
    }
    assert!(ledger.execute(good, now).is_ok());
}

#[test]
fn a_commit_without_two_thirds_of_the_stake_is_refused() {
    let net = TestChain::new(4, 0, 1);
    let mut ledger = mem_ledger(&net);
    let block = next_block(&ledger, &net, vec![]);
    let weak = net.commit_by(&block, 0, &[0, 1]);
    let executed = ledger
        .execute(block.clone(), now_after(&ledger))
        .expect("valid");
    let err = ledger.commit(executed, &weak).expect_err("no quorum");
    assert!(
        matches!(
            err,
            LedgerError::Commit(CommitError::NoQuorum {
                power: 2000,
                total: 4000
            })
        ),
        "{err}"
    );
    let mut forged = net.commit_by(&block, 0, &[0, 1, 2]);
    forged.signatures[1].signature = forged.signatures[0].signature;
    let executed = ledger
        .execute(block.clone(), now_after(&ledger))
        .expect("valid");
    assert!(matches!(
        ledger.commit(executed, &forged),
        Err(LedgerError::Commit(CommitError::BadSignature(_)))
    ));
    let executed = ledger
        .execute(block.clone(), now_after(&ledger))
        .expect("valid");
    ledger
        .commit(executed, &net.commit_by(&block, 0, &[0, 1, 2]))
        .expect("three of four is a quorum");
}

fn double_vote(net: &TestChain, validator: usize, height: u64) -> Evidence {
    let key = &net.validators[validator];
    let vote = |block: Hash| {
        let vote = Vote {
            height,
            round: 0,
            kind: VoteKind::Prevote,
            block: Some(block),
            validator: key.public_key(),
        };
        SignedVote {
            signature: key.sign(Domain::Vote, &net.genesis.chain_id, &vote),
            vote,
        }
    };
    Evidence::double_vote(vote(Hash([1; 32])), vote(Hash([2; 32])))
}

#[test]
fn equivocation_evidence_slashes_the_offender_once() {
    let net = TestChain::new(4, 1, 1);
    let mut ledger = mem_ledger(&net);
    commit_block(&mut ledger, &net, 0, vec![]);
    let offender = net.validators[3].public_key();
    let evidence = double_vote(&net, 3, 1);
    let reporter = &net.accounts[0];
    let slash = net.tx(reporter, 0, 1, Payload::Slash(Box::new(evidence.clone())));
    let hash_before = ledger.validators().hash();
    commit_block(&mut ledger, &net, 0, vec![slash]);
    let stake = ledger.validators().power(&offender);
    assert_eq!(
        stake,
        TestChain::STAKE - TestChain::STAKE * SLASH_PERCENT / 100
    );
    assert_ne!(ledger.validators().hash(), hash_before);

    let again = net.tx(reporter, 1, 1, Payload::Slash(Box::new(evidence)));
    let proposed = ledger
        .propose(
            net.validators[0].public_key(),
            now_after(&ledger),
            None,
            vec![again],
        )
        .expect("proposes");
    assert!(matches!(
        proposed.skipped[0].1,
        TxError::AlreadySlashed { height: 1, .. }
    ));

    let future = net.tx(
        reporter,
        1,
        1,
        Payload::Slash(Box::new(double_vote(&net, 2, 9))),
    );
    let outsider_vote = {
        let mut e = double_vote(&net, 2, 1);
        if let Evidence::DoubleVote { second, .. } = &mut e {
            second.signature = types::Signature::from_bytes([0; 64]).expect("s=0");
        }
        net.tx(reporter, 1, 1, Payload::Slash(Box::new(e)))
    };
    let proposed = ledger
        .propose(
            net.validators[0].public_key(),
            now_after(&ledger),
            None,
            vec![future, outsider_vote],
        )
        .expect("proposes");
    let labels: Vec<&str> = proposed.skipped.iter().map(|(_, e)| e.label()).collect();
    assert_eq!(labels, ["evidence_from_future", "invalid_evidence"]);
}

#[test]
fn bonded_stake_votes_and_unbonded_stake_returns_after_the_unbonding_period() {
    let net = TestChain::new(4, 1, 1);
    let mut ledger = mem_ledger(&net);
    let newcomer = &net.accounts[0];
    commit_block(
        &mut ledger,
        &net,
        0,
        vec![net.tx(newcomer, 0, 1, Payload::Bond { amount: 600 })],
    );
    assert_eq!(ledger.validators().power(&newcomer.public_key()), 600);
    let unbond_height = ledger.height() + 1;
    commit_block(
        &mut ledger,
        &net,
        0,
        vec![net.tx(newcomer, 1, 1, Payload::Unbond { amount: 600 })],
    );
    assert_eq!(ledger.validators().power(&newcomer.public_key()), 0);
    let balance = ledger
        .account(&newcomer.public_key())
        .expect("reads")
        .balance;
    assert_eq!(balance, TestChain::BALANCE - 602);
    while ledger.height() + 1 < unbond_height + UNBONDING_BLOCKS {
        commit_block(&mut ledger, &net, 1, vec![]);
    }
    assert_eq!(
        ledger
            .account(&newcomer.public_key())
            .expect("reads")
            .balance,
        balance
    );
    commit_block(&mut ledger, &net, 1, vec![]);
    assert_eq!(
        ledger
            .account(&newcomer.public_key())
            .expect("reads")
            .balance,
        balance + 600
    );
    assert!(ledger.validators().get(&newcomer.public_key()).is_none());
}

#[test]
fn overflowing_and_unfunded_transactions_are_refused() {
    let net = TestChain::new(4, 2, 1);
    let ledger = mem_ledger(&net);
    let overflow = net.tx(
        &net.accounts[0],
        0,
        u64::MAX,
        Payload::Transfer {
            to: net.accounts[1].public_key(),
            amount: 1,
        },
    );
    let unfunded = net.transfer(1, 0, 0, TestChain::BALANCE);
    let gap = net.transfer(1, 0, 5, 1);
    let proposed = ledger
        .propose(
            net.validators[0].public_key(),
            now_after(&ledger),
            None,
            vec![overflow, unfunded, gap],
        )
        .expect("proposes");
    let labels: Vec<&str> = proposed.skipped.iter().map(|(_, e)| e.label()).collect();
    assert_eq!(labels, ["overflow", "insufficient_balance", "nonce_gap"]);
    assert!(proposed.executed.block.txs.is_empty());
}

#[test]
fn account_proofs_verify_against_the_tip_state_root() {
    let net = TestChain::new(4, 2, 1);
    let mut ledger = mem_ledger(&net);
    commit_block(&mut ledger, &net, 0, vec![net.transfer(0, 1, 0, 5)]);
    let key = net.accounts[1].public_key();
    let proof = ledger.prove_account(&key).expect("proves");
    proof.verify(ledger.tip().state_root).expect("verifies");
    let mut tampered = proof;
    tampered.value = Some(types::codec::Encode::to_bytes(&types::Account {
        balance: u64::MAX,
        nonce: 0,
    }));
    assert!(tampered.verify(ledger.tip().state_root).is_err());
    let absent = TestChain::new(1, 1, 99).accounts[0].public_key();
    let proof = ledger.prove_account(&absent).expect("proves absence");
    assert!(proof.value.is_none());
    proof
        .verify(ledger.tip().state_root)
        .expect("absence verifies");
}

#[test]
fn a_reopened_rocksdb_ledger_resumes_at_its_tip() {
    let net = TestChain::new(4, 2, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let (tip, root) = {
        let store = RocksStore::open(dir.path(), &StoreOptions::test()).expect("open");
        let mut ledger = Ledger::open(store, &net.genesis).expect("opens");
        for nonce in 0..3 {
            commit_block(&mut ledger, &net, 0, vec![net.transfer(0, 1, nonce, 1)]);
        }
        (ledger.tip_hash(), ledger.tip().state_root)
    };
    let store = RocksStore::open(dir.path(), &StoreOptions::test()).expect("reopen");
    let mut ledger = Ledger::open(store, &net.genesis).expect("reopens");
    assert_eq!((ledger.height(), ledger.tip_hash()), (3, tip));
    assert_eq!(ledger.tip().state_root, root);
    commit_block(&mut ledger, &net, 0, vec![net.transfer(0, 1, 3, 1)]);
}

#[test]
fn genesis_files_load_into_the_same_chain() {
    let net = TestChain::new(4, 2, 1);
    let reparsed = Genesis::from_toml(&net.genesis.to_toml()).expect("parses");
    let a = mem_ledger(&net);
    let b = Ledger::open(MemStore::new(), &reparsed).expect("opens");
    assert_eq!(a.tip_hash(), b.tip_hash());
}

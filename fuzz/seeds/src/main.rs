//! Write valid encodings of every fuzzed type as the fuzz targets' seed corpus.
//!
//! `fuzz-seeds DIR` writes `DIR/<target>/<seed>` for every target; `fuzz-seeds --list` prints
//! each target's name and the `-max_len` to fuzz it with. Keys come from fixed seeds, so every
//! run writes the same bytes. Each seed is checked to decode back to its value before it is
//! written: a seed the decoder refuses would only waste the fuzzer's time.
//!
//! This is its own crate because a fuzz target's crate links libFuzzer, whose C++ `main` would
//! replace ours.

use std::fmt::Debug;
use std::path::Path;
use std::{env, fs, io, process};

use types::limits::MAX_GENESIS_FILE_BYTES;
use types::{
    Account, Block, ChainId, Commit, CommitSig, Decode, Domain, Encode, Evidence, Genesis,
    GenesisAccount, GenesisValidator, Hash, Header, Payload, Proposal, SecretKey, SignedProposal,
    SignedTransaction, SignedVote, Tag, Transaction, Validator, ValidatorSet, Vote, VoteKind,
    merkle_root_of_txs,
};

/// Longest fuzz input, bytes. A target gets its type's bound capped at this: the block's bound
/// (8 MiB) and the binary genesis's (about 4 MB) would make every run slow, and 64 KiB already
/// holds about 400 transactions or 1600 genesis accounts, far more than any decoder path needs.
const MAX_LEN_CAP: usize = 64 * 1024;

/// Chain id of every seed.
const CHAIN: &str = "xdp-fuzz";

/// Height of the seed votes and proposals.
const HEIGHT: u64 = 7;

/// Genesis time of the seed documents, ms since the Unix epoch (2023-11-14).
const GENESIS_TIME_MS: u64 = 1_700_000_000_000;

/// One fuzz target: its name (as in `fuzz/Cargo.toml`), input bound and seeds.
struct Target {
    name: &'static str,
    max_bytes: usize,
    seeds: Vec<Seed>,
}

/// A named seed input.
type Seed = (&'static str, Vec<u8>);

impl Target {
    /// A target that decodes `T` from the whole input.
    fn binary<T: Decode>(name: &'static str, seeds: Vec<Seed>) -> Target {
        Target {
            name,
            max_bytes: T::MAX_BYTES,
            seeds,
        }
    }

    fn max_len(&self) -> usize {
        self.max_bytes.min(MAX_LEN_CAP)
    }
}

/// The encoding of `value`, checked to decode back to it.
fn seed<T: Encode + Decode + PartialEq + Debug>(name: &'static str, value: &T) -> Seed {
    let bytes = value.to_bytes();
    assert_eq!(
        T::from_bytes(&bytes).as_ref(),
        Ok(value),
        "seed {name} does not decode to itself"
    );
    (name, bytes)
}

/// A genesis file's text, checked to parse.
fn toml_seed(name: &'static str, text: String) -> Seed {
    if let Err(e) = Genesis::from_toml(&text) {
        panic!("seed {name} does not parse: {e}\n{text}");
    }
    (name, text.into_bytes())
}

fn chain() -> ChainId {
    ChainId::new(CHAIN).expect("valid chain id")
}

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

/// A stand-in block hash named by `label`.
fn block_hash(label: &[u8]) -> Hash {
    Hash::tagged(Tag::Header, &[label])
}

fn signed_tx(
    key: &SecretKey,
    chain_id: ChainId,
    nonce: u64,
    payload: Payload,
) -> SignedTransaction {
    Transaction {
        chain_id,
        sender: key.public_key(),
        nonce,
        fee: 1,
        payload,
    }
    .sign(key)
}

fn signed_vote(key: &SecretKey, kind: VoteKind, block: Option<Hash>) -> SignedVote {
    let vote = Vote {
        height: HEIGHT,
        round: 0,
        kind,
        block,
        validator: key.public_key(),
    };
    SignedVote {
        signature: key.sign(Domain::Vote, &chain(), &vote),
        vote,
    }
}

fn signed_proposal(key: &SecretKey, pol_round: Option<u32>, block: Hash) -> SignedProposal {
    let proposal = Proposal {
        height: HEIGHT,
        round: 1,
        pol_round,
        block,
        proposer: key.public_key(),
    };
    SignedProposal {
        signature: key.sign(Domain::Proposal, &chain(), &proposal),
        proposal,
    }
}

/// Precommits by `keys` for `block` at `height`, as a commit certificate.
fn commit(height: u64, block: Hash, keys: &[&SecretKey]) -> Commit {
    let mut commit = Commit {
        height,
        round: 0,
        block,
        signatures: Vec::new(),
    };
    for key in keys {
        let vote = commit.vote_of(key.public_key());
        commit.signatures.push(CommitSig {
            validator: key.public_key(),
            signature: key.sign(Domain::Vote, &chain(), &vote),
        });
    }
    commit.signatures.sort_by_key(|s| s.validator);
    commit
}

fn block(parent: Hash, height: u64, txs: Vec<SignedTransaction>, last: Option<Commit>) -> Block {
    let proposer = key(1).public_key();
    Block {
        header: Header {
            height,
            parent,
            time_ms: GENESIS_TIME_MS + height * 1000,
            proposer,
            txs_root: merkle_root_of_txs(&txs),
            state_root: block_hash(b"state"),
            validators_hash: block_hash(b"validators"),
            last_commit_hash: Block::commit_hash(last.as_ref()),
        },
        txs,
        last_commit: last,
    }
}

fn validator(key: &SecretKey, stake: u64, unbonding: u64, release_height: u64) -> Validator {
    Validator {
        key: key.public_key(),
        stake,
        unbonding,
        release_height,
    }
}

fn targets() -> Vec<Target> {
    let (k1, k2, k3, k4) = (key(1), key(2), key(3), key(4));

    let prevote_nil = signed_vote(&k1, VoteKind::Prevote, None);
    let precommit_a = signed_vote(&k1, VoteKind::Precommit, Some(block_hash(b"a")));
    let precommit_b = signed_vote(&k1, VoteKind::Precommit, Some(block_hash(b"b")));
    let proposal_a = signed_proposal(&k2, None, block_hash(b"a"));
    let proposal_b = signed_proposal(&k2, Some(0), block_hash(b"b"));
    let double_vote = Evidence::double_vote(precommit_a.clone(), precommit_b.clone());
    let double_proposal = Evidence::double_proposal(proposal_a.clone(), proposal_b.clone());

    let longest_chain_id = ChainId::new(&"z".repeat(32)).expect("valid chain id");
    let named_txs = [
        (
            "transfer",
            signed_tx(
                &k1,
                chain(),
                0,
                Payload::Transfer {
                    to: k2.public_key(),
                    amount: 250,
                },
            ),
        ),
        (
            "transfer_max",
            signed_tx(
                &k4,
                longest_chain_id,
                u64::MAX,
                Payload::Transfer {
                    to: k1.public_key(),
                    amount: u64::MAX,
                },
            ),
        ),
        (
            "bond",
            signed_tx(&k2, chain(), 1, Payload::Bond { amount: 100 }),
        ),
        (
            "unbond",
            signed_tx(&k3, chain(), 2, Payload::Unbond { amount: 40 }),
        ),
        (
            "slash_double_vote",
            signed_tx(
                &k3,
                chain(),
                3,
                Payload::Slash(Box::new(double_vote.clone())),
            ),
        ),
        (
            "slash_double_proposal",
            signed_tx(
                &k4,
                chain(),
                0,
                Payload::Slash(Box::new(double_proposal.clone())),
            ),
        ),
    ];
    let txs: Vec<SignedTransaction> = named_txs.iter().map(|(_, tx)| tx.clone()).collect();

    let first = block(block_hash(b"genesis"), 1, Vec::new(), None);
    let first_commit = commit(1, first.hash(), &[&k1, &k2, &k3]);
    let second = block(first.hash(), 2, txs, Some(first_commit.clone()));

    let validators = ValidatorSet::new(vec![
        validator(&k1, 100, 0, 0),
        validator(&k2, 50, 10, 20),
        validator(&k3, 0, 40, 30),
    ])
    .expect("valid validator set");

    let genesis = Genesis::new(
        chain(),
        GENESIS_TIME_MS,
        vec![
            GenesisAccount {
                key: k1.public_key(),
                balance: 1000,
            },
            GenesisAccount {
                key: k2.public_key(),
                balance: 500,
            },
            GenesisAccount {
                key: k4.public_key(),
                balance: 0,
            },
        ],
        vec![
            GenesisValidator {
                key: k1.public_key(),
                stake: 100,
            },
            GenesisValidator {
                key: k2.public_key(),
                stake: 50,
            },
        ],
    )
    .expect("valid genesis");
    let one_validator = Genesis::new(
        chain(),
        0,
        Vec::new(),
        vec![GenesisValidator {
            key: k3.public_key(),
            stake: 1,
        }],
    )
    .expect("valid genesis");
    // The same document as `genesis`, written by hand: comments, inline tables, another order.
    let handwritten = format!(
        "# seed\nvalidators = [\n  {{ key = \"{k2}\", stake = 50 }},\n  {{ key = \"{k1}\", stake = 100 }},\n]\n\
         time_ms = {GENESIS_TIME_MS}\nchain_id = \"{CHAIN}\"\n\n[[accounts]]\nkey = \"{k4}\"\nbalance = 0\n\n\
         [[accounts]]\nkey = \"{k2}\"\nbalance = 500\n\n[[accounts]]\nkey = \"{k1}\"\nbalance = 1_000\n",
        k1 = k1.public_key(),
        k2 = k2.public_key(),
        k4 = k4.public_key(),
    );

    vec![
        Target::binary::<SignedTransaction>(
            "signed_transaction",
            named_txs.iter().map(|(name, tx)| seed(name, tx)).collect(),
        ),
        Target::binary::<Transaction>(
            "transaction",
            named_txs
                .iter()
                .map(|(name, tx)| seed(name, &tx.tx))
                .collect(),
        ),
        Target::binary::<Block>(
            "block",
            vec![seed("first", &first), seed("with_txs_and_commit", &second)],
        ),
        Target::binary::<Header>(
            "header",
            vec![seed("first", &first.header), seed("second", &second.header)],
        ),
        Target::binary::<SignedVote>(
            "signed_vote",
            vec![
                seed("prevote_nil", &prevote_nil),
                seed("precommit", &precommit_a),
            ],
        ),
        Target::binary::<SignedProposal>(
            "signed_proposal",
            vec![
                seed("proposal", &proposal_a),
                seed("proposal_pol_round", &proposal_b),
            ],
        ),
        Target::binary::<Commit>(
            "commit",
            vec![
                seed("three_signatures", &first_commit),
                seed("empty", &commit(3, block_hash(b"c"), &[])),
            ],
        ),
        Target::binary::<Evidence>(
            "evidence",
            vec![
                seed("double_vote", &double_vote),
                seed("double_proposal", &double_proposal),
            ],
        ),
        Target::binary::<ValidatorSet>(
            "validator_set",
            vec![
                seed("three", &validators),
                seed("empty", &ValidatorSet::default()),
            ],
        ),
        Target::binary::<Account>(
            "account",
            vec![
                seed("zero", &Account::default()),
                seed(
                    "used",
                    &Account {
                        balance: 1000,
                        nonce: 3,
                    },
                ),
            ],
        ),
        Target::binary::<Genesis>(
            "genesis",
            vec![
                seed("three_accounts", &genesis),
                seed("one_validator", &one_validator),
            ],
        ),
        Target {
            name: "genesis_toml",
            max_bytes: MAX_GENESIS_FILE_BYTES,
            seeds: vec![
                toml_seed("printed", genesis.to_toml()),
                toml_seed("one_validator", one_validator.to_toml()),
                toml_seed("handwritten", handwritten),
            ],
        },
    ]
}

fn write_seeds(dir: &Path) -> io::Result<()> {
    for target in targets() {
        let target_dir = dir.join(target.name);
        fs::create_dir_all(&target_dir)?;
        for (name, bytes) in &target.seeds {
            fs::write(target_dir.join(name), bytes)?;
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "--list" => {
            for target in targets() {
                println!("{} {}", target.name, target.max_len());
            }
        }
        [dir] if !dir.starts_with('-') => {
            if let Err(e) = write_seeds(Path::new(dir)) {
                eprintln!("fuzz-seeds: cannot write the seeds under {dir}: {e}");
                process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: fuzz-seeds DIR    write the seed corpus of every target under DIR");
            eprintln!("       fuzz-seeds --list print each target and its -max_len");
            process::exit(2);
        }
    }
}

//! Deterministic fixtures for tests, benchmarks and simulation: keys from a seed, a genesis,
//! signed transfers and commit certificates signed by every validator.

use types::{
    Block, ChainId, Commit, CommitSig, Domain, Genesis, GenesisAccount, GenesisValidator, Hash,
    Payload, SecretKey, SignedTransaction, Tag, Transaction,
};

/// Validators and funded accounts with keys derived from a seed.
pub struct TestChain {
    /// Validator keys, in genesis order of creation (not sorted).
    pub validators: Vec<SecretKey>,
    /// Funded account keys.
    pub accounts: Vec<SecretKey>,
    /// The genesis document.
    pub genesis: Genesis,
}

/// The key number `index` of `role` derived from `seed`.
pub fn derived_key(seed: u64, role: &str, index: u64) -> SecretKey {
    let digest = Hash::tagged(
        Tag::Genesis,
        &[
            b"testkit",
            &seed.to_be_bytes(),
            role.as_bytes(),
            &index.to_be_bytes(),
        ],
    );
    SecretKey::from_seed(digest.0)
}

impl TestChain {
    /// Balance of every funded account.
    pub const BALANCE: u64 = 1_000_000_000;
    /// Stake of every validator.
    pub const STAKE: u64 = 1_000;

    /// `validators` validators (each also funded) and `accounts` funded accounts.
    pub fn new(validators: usize, accounts: usize, seed: u64) -> TestChain {
        TestChain::with_stakes(&vec![Self::STAKE; validators], accounts, seed)
    }

    /// Validators with the given stakes, and `accounts` funded accounts.
    pub fn with_stakes(stakes: &[u64], accounts: usize, seed: u64) -> TestChain {
        let validators: Vec<SecretKey> = (0..stakes.len() as u64)
            .map(|i| derived_key(seed, "validator", i))
            .collect();
        let accounts: Vec<SecretKey> = (0..accounts as u64)
            .map(|i| derived_key(seed, "account", i))
            .collect();
        let genesis = Genesis::new(
            ChainId::new("testkit").expect("a valid literal chain id"),
            1_700_000_000_000,
            validators
                .iter()
                .chain(&accounts)
                .map(|k| GenesisAccount {
                    key: k.public_key(),
                    balance: Self::BALANCE,
                })
                .collect(),
            validators
                .iter()
                .zip(stakes)
                .map(|(k, stake)| GenesisValidator {
                    key: k.public_key(),
                    stake: *stake,
                })
                .collect(),
        )
        .expect("test genesis parameters are valid");
        TestChain {
            validators,
            accounts,
            genesis,
        }
    }

    /// A signed transaction from account `from` with `payload`.
    pub fn tx(
        &self,
        from: &SecretKey,
        nonce: u64,
        fee: u64,
        payload: Payload,
    ) -> SignedTransaction {
        Transaction {
            chain_id: self.genesis.chain_id.clone(),
            sender: from.public_key(),
            nonce,
            fee,
            payload,
        }
        .sign(from)
    }

    /// A signed transfer between funded accounts `from` and `to` (indexes into `accounts`).
    pub fn transfer(&self, from: usize, to: usize, nonce: u64, amount: u64) -> SignedTransaction {
        self.tx(
            &self.accounts[from],
            nonce,
            1,
            Payload::Transfer {
                to: self.accounts[to].public_key(),
                amount,
            },
        )
    }

    /// A commit certificate for `block` signed by `signers` (indexes into `validators`).
    pub fn commit_by(&self, block: &Block, round: u32, signers: &[usize]) -> Commit {
        let mut commit = Commit {
            height: block.header.height,
            round,
            block: block.hash(),
            signatures: Vec::new(),
        };
        let mut signatures: Vec<CommitSig> = signers
            .iter()
            .map(|&i| {
                let key = &self.validators[i];
                CommitSig {
                    validator: key.public_key(),
                    signature: key.sign(
                        Domain::Vote,
                        &self.genesis.chain_id,
                        &commit.vote_of(key.public_key()),
                    ),
                }
            })
            .collect();
        signatures.sort_by_key(|s| s.validator);
        commit.signatures = signatures;
        commit
    }

    /// A commit certificate for `block` signed by every validator in round 0.
    pub fn commit(&self, block: &Block) -> Commit {
        let all: Vec<usize> = (0..self.validators.len()).collect();
        self.commit_by(block, 0, &all)
    }
}

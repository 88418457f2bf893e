//! `node genesis`: one genesis file from the public keys of validators that made their own
//! identities (`node init` on each host prints its key), so every host runs the same chain.
//!
//! # Design
//! [`from_keys`] is the one place a genesis is built from keys; `node init --validators` uses it
//! too. The document is canonical (entries sorted by key), so the order the keys are given in
//! does not change the file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use types::limits::MAX_VALIDATORS;
use types::{ChainId, Genesis, GenesisAccount, GenesisError, GenesisValidator, PublicKey};

/// Balance of each validator's account in a genesis made here, unless `--balance` says
/// otherwise.
pub const DEFAULT_BALANCE: u64 = 1_000_000_000_000;
/// Stake of each validator in a genesis made here, unless `--stake` says otherwise.
pub const DEFAULT_STAKE: u64 = 1_000_000;

/// Options of `node genesis`.
#[derive(Args, Debug)]
pub struct GenesisArgs {
    /// The genesis file to write; refused if it exists.
    #[arg(long)]
    out: PathBuf,
    /// The chain id.
    #[arg(long)]
    chain_id: ChainId,
    /// A validator's public key (64 hex digits, as `node init` prints it); repeat for each
    /// validator.
    #[arg(long = "validator", value_name = "PUBKEY", required = true)]
    validators: Vec<PublicKey>,
    /// Stake of each validator.
    #[arg(long, default_value_t = DEFAULT_STAKE, value_parser = clap::value_parser!(u64).range(1..))]
    stake: u64,
    /// Balance of each validator's account.
    #[arg(long, default_value_t = DEFAULT_BALANCE)]
    balance: u64,
}

/// Runs `node genesis`.
pub fn run(args: GenesisArgs) -> Result<()> {
    let keys = &args.validators;
    if keys.len() > MAX_VALIDATORS {
        bail!(
            "{} validators given; a genesis holds at most {MAX_VALIDATORS}",
            keys.len()
        );
    }
    for (i, key) in keys.iter().enumerate() {
        if let Some(j) = keys[..i].iter().position(|k| k == key) {
            bail!(
                "--validator {key} is given twice (occurrences {} and {}); list each validator once",
                j + 1,
                i + 1
            );
        }
    }
    let genesis = from_keys(args.chain_id.clone(), keys, args.stake, args.balance)
        .context("building the genesis (lower --stake or --balance)")?;
    let out = std::path::absolute(&args.out)
        .with_context(|| format!("resolving {}", args.out.display()))?;
    crate::init_cmd::write_new(&out, &genesis.to_toml(), 0o644)?;
    println!(
        "genesis {} with {} validators (chain {})",
        out.display(),
        genesis.validators.len(),
        genesis.chain_id
    );
    Ok(())
}

/// A genesis starting now whose validators are `keys`, each staking `stake` and owning an
/// account holding `balance`.
pub fn from_keys(
    chain_id: ChainId,
    keys: &[PublicKey],
    stake: u64,
    balance: u64,
) -> Result<Genesis, GenesisError> {
    Genesis::new(
        chain_id,
        p2p::clock::now_ms(),
        keys.iter()
            .map(|&key| GenesisAccount { key, balance })
            .collect(),
        keys.iter()
            .map(|&key| GenesisValidator { key, stake })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> PublicKey {
        types::SecretKey::from_seed([seed; 32]).public_key()
    }

    #[test]
    fn every_key_becomes_a_staked_validator_with_a_funded_account() {
        let keys = [key(3), key(1), key(2)];
        let chain = ChainId::new("testnet").expect("valid");
        let genesis = from_keys(chain.clone(), &keys, DEFAULT_STAKE, DEFAULT_BALANCE).expect("ok");
        assert_eq!(genesis.chain_id, chain);
        let mut sorted = keys.to_vec();
        sorted.sort();
        let validators: Vec<_> = genesis
            .validators
            .iter()
            .map(|v| (v.key, v.stake))
            .collect();
        let accounts: Vec<_> = genesis
            .accounts
            .iter()
            .map(|a| (a.key, a.balance))
            .collect();
        assert_eq!(
            validators,
            sorted
                .iter()
                .map(|&k| (k, DEFAULT_STAKE))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            accounts,
            sorted
                .iter()
                .map(|&k| (k, DEFAULT_BALANCE))
                .collect::<Vec<_>>()
        );
        assert!(genesis.time_ms > 0);
    }

    #[test]
    fn a_supply_over_the_protocol_bound_is_refused() {
        let chain = ChainId::new("testnet").expect("valid");
        let err = from_keys(chain, &[key(1), key(2)], u64::MAX / 2, u64::MAX / 2).unwrap_err();
        assert!(matches!(err, GenesisError::SupplyOverflow), "{err}");
    }
}

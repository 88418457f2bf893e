//! The genesis document: chain id, start time, initial balances, validators and stakes.
//!
//! Operators keep it as a TOML file. Its identity is the hash of its canonical encoding
//! (entries sorted by key), not of the text: reformatting or reordering the file never changes
//! the genesis hash, and nothing at run time does either.

use serde::{Deserialize, Serialize};

use crate::account::{Validator, ValidatorSet};
use crate::chain_id::ChainId;
use crate::codec::{Decode, DecodeError, Encode, Reader, check_ascending, put_list};
use crate::crypto::PublicKey;
use crate::hash::{Hash, Tag};
use crate::limits::{MAX_GENESIS_ACCOUNTS, MAX_GENESIS_FILE_BYTES, MAX_SUPPLY, MAX_VALIDATORS};

/// An initial balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenesisAccount {
    /// The account.
    pub key: PublicKey,
    /// Its balance.
    pub balance: u64,
}

/// An initial validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenesisValidator {
    /// The validator.
    pub key: PublicKey,
    /// Its bonded stake (its voting power); not part of any balance.
    pub stake: u64,
}

/// A checked genesis document: entries ascending by key and unique, 1 to [`MAX_VALIDATORS`]
/// validators with positive stake, total supply and time within TOML's `i64`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// The chain id every transaction and vote is signed for.
    pub chain_id: ChainId,
    /// Time of the genesis header, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Initial balances.
    pub accounts: Vec<GenesisAccount>,
    /// Initial validators.
    pub validators: Vec<GenesisValidator>,
}

/// Why a genesis document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// The file is larger than any genesis may be.
    #[error("genesis file of {len} bytes exceeds the bound of {max} bytes")]
    TooLarge {
        /// File length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Not TOML of the expected shape.
    #[error("genesis is not valid TOML of the expected shape: {0}")]
    Syntax(String),
    /// A field's value is invalid.
    #[error("genesis: {0}")]
    Field(#[from] DecodeError),
    /// The same key is listed twice.
    #[error("genesis lists {list} key {key} twice")]
    Duplicate {
        /// "accounts" or "validators".
        list: &'static str,
        /// The key.
        key: PublicKey,
    },
    /// No validator, or too many.
    #[error("genesis needs 1 to {max} validators, found {found}")]
    ValidatorCount {
        /// Validators listed.
        found: usize,
        /// The bound.
        max: usize,
    },
    /// Too many accounts.
    #[error("genesis lists {found} accounts, more than the bound of {max}")]
    AccountCount {
        /// Accounts listed.
        found: usize,
        /// The bound.
        max: usize,
    },
    /// A validator without stake.
    #[error("genesis validator {key} has zero stake")]
    ZeroStake {
        /// The validator.
        key: PublicKey,
    },
    /// Balances and stakes add up to more than [`MAX_SUPPLY`], or the time is beyond TOML's
    /// largest integer (`i64::MAX`).
    #[error(
        "genesis balances and stakes must add up to at most {MAX_SUPPLY}, and the time must not exceed {}",
        i64::MAX
    )]
    SupplyOverflow,
}

/// The largest integer a TOML file can hold.
const MAX_TOML_INTEGER: u64 = i64::MAX as u64;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesisFile {
    chain_id: String,
    time_ms: u64,
    #[serde(default)]
    accounts: Vec<AccountEntry>,
    validators: Vec<ValidatorEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountEntry {
    key: String,
    balance: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidatorEntry {
    key: String,
    stake: u64,
}

impl Genesis {
    /// The validator set at height 0: every genesis validator with its stake bonded.
    pub fn validator_set(&self) -> Result<ValidatorSet, DecodeError> {
        ValidatorSet::new(
            self.validators
                .iter()
                .map(|v| Validator {
                    key: v.key,
                    stake: v.stake,
                    unbonding: 0,
                    release_height: 0,
                })
                .collect(),
        )
    }

    /// Checks and sorts the entries; the result is canonical.
    pub fn new(
        chain_id: ChainId,
        time_ms: u64,
        mut accounts: Vec<GenesisAccount>,
        mut validators: Vec<GenesisValidator>,
    ) -> Result<Genesis, GenesisError> {
        if accounts.len() > MAX_GENESIS_ACCOUNTS {
            return Err(GenesisError::AccountCount {
                found: accounts.len(),
                max: MAX_GENESIS_ACCOUNTS,
            });
        }
        if validators.is_empty() || validators.len() > MAX_VALIDATORS {
            return Err(GenesisError::ValidatorCount {
                found: validators.len(),
                max: MAX_VALIDATORS,
            });
        }
        accounts.sort_by_key(|a| a.key);
        validators.sort_by_key(|v| v.key);
        if let Some(w) = accounts.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(GenesisError::Duplicate {
                list: "accounts",
                key: w[0].key,
            });
        }
        if let Some(w) = validators.windows(2).find(|w| w[0].key == w[1].key) {
            return Err(GenesisError::Duplicate {
                list: "validators",
                key: w[0].key,
            });
        }
        if let Some(v) = validators.iter().find(|v| v.stake == 0) {
            return Err(GenesisError::ZeroStake { key: v.key });
        }
        // The supply never grows, so this bounds every stake and voting power for good.
        let supply = accounts
            .iter()
            .map(|a| a.balance)
            .chain(validators.iter().map(|v| v.stake))
            .try_fold(0u64, u64::checked_add);
        if supply.is_none_or(|s| s > MAX_SUPPLY) || time_ms > MAX_TOML_INTEGER {
            return Err(GenesisError::SupplyOverflow);
        }
        Ok(Genesis {
            chain_id,
            time_ms,
            accounts,
            validators,
        })
    }

    /// Parses and checks a genesis file's text.
    pub fn from_toml(text: &str) -> Result<Genesis, GenesisError> {
        if text.len() > MAX_GENESIS_FILE_BYTES {
            return Err(GenesisError::TooLarge {
                len: text.len(),
                max: MAX_GENESIS_FILE_BYTES,
            });
        }
        let file: GenesisFile =
            toml::from_str(text).map_err(|e| GenesisError::Syntax(e.to_string()))?;
        let accounts = file
            .accounts
            .iter()
            .map(|a| {
                Ok(GenesisAccount {
                    key: a.key.parse()?,
                    balance: a.balance,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let validators = file
            .validators
            .iter()
            .map(|v| {
                Ok(GenesisValidator {
                    key: v.key.parse()?,
                    stake: v.stake,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Genesis::new(
            ChainId::new(&file.chain_id)?,
            file.time_ms,
            accounts,
            validators,
        )
    }

    /// The document as TOML text (what `node init` writes).
    pub fn to_toml(&self) -> String {
        let file = GenesisFile {
            chain_id: self.chain_id.to_string(),
            time_ms: self.time_ms,
            accounts: self
                .accounts
                .iter()
                .map(|a| AccountEntry {
                    key: a.key.to_string(),
                    balance: a.balance,
                })
                .collect(),
            validators: self
                .validators
                .iter()
                .map(|v| ValidatorEntry {
                    key: v.key.to_string(),
                    stake: v.stake,
                })
                .collect(),
        };
        toml::to_string(&file).expect("a genesis document always serializes to TOML")
    }

    /// The genesis hash: the identity of the chain.
    pub fn hash(&self) -> Hash {
        Hash::of(Tag::Genesis, self)
    }
}

impl Encode for GenesisAccount {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.key.encode_to(out);
        self.balance.encode_to(out);
    }
}

impl Decode for GenesisAccount {
    const MAX_BYTES: usize = 40;
    const NAME: &'static str = "genesis account";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(GenesisAccount {
            key: PublicKey::decode_from(r)?,
            balance: r.u64()?,
        })
    }
}

impl Encode for GenesisValidator {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.key.encode_to(out);
        self.stake.encode_to(out);
    }
}

impl Decode for GenesisValidator {
    const MAX_BYTES: usize = 40;
    const NAME: &'static str = "genesis validator";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(GenesisValidator {
            key: PublicKey::decode_from(r)?,
            stake: r.u64()?,
        })
    }
}

impl Encode for Genesis {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.chain_id.encode_to(out);
        self.time_ms.encode_to(out);
        put_list(out, &self.accounts);
        put_list(out, &self.validators);
    }
}

impl Decode for Genesis {
    const MAX_BYTES: usize =
        ChainId::MAX_BYTES + 8 + 8 + (MAX_GENESIS_ACCOUNTS + MAX_VALIDATORS) * 40;
    const NAME: &'static str = "genesis";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let chain_id = ChainId::decode_from(r)?;
        let time_ms = r.u64()?;
        let accounts: Vec<GenesisAccount> = r.list("genesis accounts", MAX_GENESIS_ACCOUNTS, 40)?;
        let validators: Vec<GenesisValidator> = r.list("genesis validators", MAX_VALIDATORS, 40)?;
        check_ascending("genesis accounts", &accounts, |a| a.key)?;
        check_ascending("genesis validators", &validators, |v| v.key)?;
        Genesis::new(chain_id, time_ms, accounts, validators).map_err(|_| DecodeError::Invalid {
            what: Self::NAME,
            reason: "breaks a genesis rule (validator count, zero stake or supply overflow)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn key(seed: u8) -> PublicKey {
        SecretKey::from_seed([seed; 32]).public_key()
    }

    fn sample() -> Genesis {
        Genesis::new(
            ChainId::new("xdp-local").expect("valid"),
            1_700_000_000_000,
            vec![
                GenesisAccount {
                    key: key(2),
                    balance: 500,
                },
                GenesisAccount {
                    key: key(1),
                    balance: 1000,
                },
            ],
            vec![GenesisValidator {
                key: key(1),
                stake: 100,
            }],
        )
        .expect("valid genesis")
    }

    #[test]
    fn the_file_round_trips_and_the_hash_ignores_formatting_and_order() {
        let genesis = sample();
        let text = genesis.to_toml();
        let parsed = Genesis::from_toml(&text).expect("parses");
        assert_eq!(parsed, genesis);
        assert_eq!(parsed.hash(), genesis.hash());
        let reordered = format!(
            "# a comment\nvalidators = [{{ key = \"{}\", stake = 100 }}]\ntime_ms = 1700000000000\nchain_id = \"xdp-local\"\n\n[[accounts]]\nkey = \"{}\"\nbalance = 1000\n[[accounts]]\nkey = \"{}\"\nbalance = 500\n",
            key(1),
            key(1),
            key(2)
        );
        assert_eq!(
            Genesis::from_toml(&reordered).expect("parses").hash(),
            genesis.hash()
        );
        assert_eq!(Genesis::from_bytes(&genesis.to_bytes()), Ok(genesis));
    }

    #[test]
    fn invalid_documents_get_typed_errors() {
        let k = key(1);
        let cases = [
            (
                "chain_id = \"x\"\ntime_ms = 0\nvalidators = []\n",
                "ValidatorCount",
            ),
            (
                &*format!(
                    "chain_id = \"x\"\ntime_ms = 0\nvalidators = [{{ key = \"{k}\", stake = 0 }}]\n"
                ),
                "ZeroStake",
            ),
            (
                &*format!(
                    "chain_id = \"x\"\ntime_ms = 0\nvalidators = [{{ key = \"{k}\", stake = 1 }}, {{ key = \"{k}\", stake = 2 }}]\n"
                ),
                "Duplicate",
            ),
            (
                &*format!(
                    "chain_id = \"x\"\ntime_ms = 0\naccounts = [{{ key = \"{k}\", balance = {} }}]\nvalidators = [{{ key = \"{k}\", stake = 1 }}]\n",
                    u64::MAX
                ),
                "SupplyOverflow",
            ),
            (
                &*format!(
                    "chain_id = \"x\"\ntime_ms = 0\naccounts = [{{ key = \"{k}\", balance = {} }}]\nvalidators = [{{ key = \"{k}\", stake = 1 }}]\n",
                    MAX_SUPPLY
                ),
                "SupplyOverflow",
            ),
            ("chain_id = \"X!\"\ntime_ms = 0\nvalidators = []\n", "Field"),
            ("chain_id = 3", "Syntax"),
            (
                &*format!(
                    "chain_id = \"x\"\ntime_ms = 0\nbogus = 1\nvalidators = [{{ key = \"{k}\", stake = 1 }}]\n"
                ),
                "Syntax",
            ),
        ];
        for (text, expected) in cases {
            let err = Genesis::from_toml(text).expect_err(text);
            assert!(
                format!("{err:?}").starts_with(expected),
                "{text}: expected {expected}, got {err:?}"
            );
        }
    }
}

//! The records the state holds: accounts and the validator set.

use crate::codec::{Decode, DecodeError, Encode, Reader, check_ascending, put_list};
use crate::crypto::PublicKey;
use crate::hash::{Hash, Tag};
use crate::limits::MAX_VALIDATORS;

/// An account's balance and the nonce its next transaction must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// Number of transactions applied from this account.
    pub nonce: u64,
}

impl Encode for Account {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.balance.encode_to(out);
        self.nonce.encode_to(out);
    }
}

impl Decode for Account {
    const MAX_BYTES: usize = 16;
    const NAME: &'static str = "account";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Account {
            balance: r.u64()?,
            nonce: r.u64()?,
        })
    }
}

/// A validator: its stake (its voting power) and stake on its way back to its balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validator {
    /// The validator's key (also its account).
    pub key: PublicKey,
    /// Bonded stake: the voting power.
    pub stake: u64,
    /// Unbonded stake not yet released: no voting power, still slashable.
    pub unbonding: u64,
    /// Height at which `unbonding` returns to the balance (meaningless when it is 0).
    pub release_height: u64,
}

impl Encode for Validator {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.key.encode_to(out);
        self.stake.encode_to(out);
        self.unbonding.encode_to(out);
        self.release_height.encode_to(out);
    }
}

impl Decode for Validator {
    const MAX_BYTES: usize = 32 + 24;
    const NAME: &'static str = "validator";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Validator {
            key: PublicKey::decode_from(r)?,
            stake: r.u64()?,
            unbonding: r.u64()?,
            release_height: r.u64()?,
        })
    }
}

/// Every validator with stake or unbonding stake, strictly ascending by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidatorSet {
    validators: Vec<Validator>,
}

impl ValidatorSet {
    /// A set from validators in any order; fails on duplicates or more than
    /// [`MAX_VALIDATORS`].
    pub fn new(mut validators: Vec<Validator>) -> Result<ValidatorSet, DecodeError> {
        validators.sort_by_key(|v| v.key);
        let set = ValidatorSet { validators };
        set.check()?;
        Ok(set)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.validators.len() > MAX_VALIDATORS {
            return Err(DecodeError::TooLong {
                what: "validator set",
                len: self.validators.len(),
                max: MAX_VALIDATORS,
            });
        }
        check_ascending("validator set", &self.validators, |v| v.key)?;
        let total = self.validators.iter().try_fold(0u64, |sum, v| {
            sum.checked_add(v.stake)?.checked_add(v.unbonding)
        });
        if total.is_none() {
            return Err(DecodeError::Invalid {
                what: "validator set",
                reason: "total stake overflows",
            });
        }
        Ok(())
    }

    /// All records, ascending by key (including those with only unbonding stake).
    pub fn all(&self) -> &[Validator] {
        &self.validators
    }

    /// Validators with voting power, ascending by key.
    pub fn active(&self) -> impl Iterator<Item = &Validator> {
        self.validators.iter().filter(|v| v.stake > 0)
    }

    /// The record of `key`.
    pub fn get(&self, key: &PublicKey) -> Option<&Validator> {
        self.validators
            .binary_search_by_key(key, |v| v.key)
            .ok()
            .map(|i| &self.validators[i])
    }

    /// Voting power of `key` (0 if not a validator).
    pub fn power(&self, key: &PublicKey) -> u64 {
        self.get(key).map_or(0, |v| v.stake)
    }

    /// Total voting power (cannot overflow: checked on construction).
    pub fn total_power(&self) -> u64 {
        self.active().map(|v| v.stake).sum()
    }

    /// Whether `power` is more than two thirds of the total.
    pub fn is_quorum(&self, power: u64) -> bool {
        u128::from(power) * 3 > u128::from(self.total_power()) * 2
    }

    /// Number of active validators.
    pub fn active_len(&self) -> usize {
        self.active().count()
    }

    /// Inserts or replaces the record of `validator.key`; removes it when it holds nothing.
    /// Fails when the set is full.
    pub fn upsert(&mut self, validator: Validator) -> Result<(), DecodeError> {
        let empty = validator.stake == 0 && validator.unbonding == 0;
        match self
            .validators
            .binary_search_by_key(&validator.key, |v| v.key)
        {
            Ok(i) if empty => {
                self.validators.remove(i);
            }
            Ok(i) => self.validators[i] = validator,
            Err(_) if empty => {}
            Err(i) => {
                if self.validators.len() >= MAX_VALIDATORS {
                    return Err(DecodeError::TooLong {
                        what: "validator set",
                        len: self.validators.len() + 1,
                        max: MAX_VALIDATORS,
                    });
                }
                self.validators.insert(i, validator);
            }
        }
        self.check()
    }

    /// The hash headers commit to: the active validators and their power.
    pub fn hash(&self) -> Hash {
        let mut bytes = Vec::new();
        let active: Vec<&Validator> = self.active().collect();
        crate::codec::put_len(&mut bytes, active.len());
        for v in active {
            v.key.encode_to(&mut bytes);
            v.stake.encode_to(&mut bytes);
        }
        Hash::tagged(Tag::ValidatorSet, &[&bytes])
    }
}

impl Encode for ValidatorSet {
    fn encode_to(&self, out: &mut Vec<u8>) {
        put_list(out, &self.validators);
    }
}

impl Decode for ValidatorSet {
    const MAX_BYTES: usize = 4 + MAX_VALIDATORS * Validator::MAX_BYTES;
    const NAME: &'static str = "validator set";
    fn decode_from(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let set = ValidatorSet {
            validators: r.list(Self::NAME, MAX_VALIDATORS, Validator::MAX_BYTES)?,
        };
        set.check()?;
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretKey;

    fn validator(seed: u8, stake: u64) -> Validator {
        Validator {
            key: SecretKey::from_seed([seed; 32]).public_key(),
            stake,
            unbonding: 0,
            release_height: 0,
        }
    }

    #[test]
    fn quorum_is_more_than_two_thirds_of_the_stake() {
        let set = ValidatorSet::new(vec![validator(1, 10), validator(2, 10), validator(3, 10)])
            .expect("valid set");
        assert!(!set.is_quorum(20));
        assert!(set.is_quorum(21));
    }

    #[test]
    fn duplicates_are_rejected_and_order_does_not_matter() {
        assert!(ValidatorSet::new(vec![validator(1, 1), validator(1, 2)]).is_err());
        let a = ValidatorSet::new(vec![validator(1, 1), validator(2, 2)]).expect("valid");
        let b = ValidatorSet::new(vec![validator(2, 2), validator(1, 1)]).expect("valid");
        assert_eq!(a, b);
        assert_eq!(ValidatorSet::from_bytes(&a.to_bytes()), Ok(a));
    }

    #[test]
    fn the_hash_covers_active_power_only() {
        let mut set = ValidatorSet::new(vec![validator(1, 5), validator(2, 5)]).expect("valid");
        let before = set.hash();
        let mut v = validator(1, 5);
        v.unbonding = 3;
        v.release_height = 9;
        set.upsert(v).expect("fits");
        assert_eq!(set.hash(), before);
        set.upsert(validator(1, 4)).expect("fits");
        assert_ne!(set.hash(), before);
    }

    #[test]
    fn empty_records_are_removed_and_a_full_set_refuses_newcomers() {
        let mut set = ValidatorSet::new(vec![validator(1, 5)]).expect("valid");
        set.upsert(validator(1, 0)).expect("removal");
        assert!(set.all().is_empty());
        let full: Vec<Validator> = (0..MAX_VALIDATORS as u8).map(|i| validator(i, 1)).collect();
        let mut set = ValidatorSet::new(full).expect("valid");
        assert!(set.upsert(validator(200, 1)).is_err());
    }
}

//! The state transition: what a block and each of its transactions do to the state.
//!
//! # Invariants
//! - Deterministic: the result depends only on the state and the block.
//! - All or nothing per transaction: every check runs before the first write, so a refused
//!   transaction leaves the overlay as it was (the proposer relies on it to skip bad ones).
//! - No coin is created: transfers move, fees go to the proposer, slashing burns. The genesis
//!   supply fits in `u64`, so credits cannot overflow; they are checked anyway.

use std::collections::BTreeMap;

use storage::Store;
use types::{Account, ChainId, Payload, PublicKey, SignedTransaction, Validator};

use crate::error::{StateError, TxError};
use crate::params::{EVIDENCE_MAX_AGE_BLOCKS, SLASH_PERCENT, UNBONDING_BLOCKS};
use crate::state::Overlay;

/// What a block's transactions need to know about the block.
#[derive(Debug, Clone)]
pub struct BlockContext {
    /// This chain.
    pub chain_id: ChainId,
    /// The block's height.
    pub height: u64,
    /// Receives the fees.
    pub proposer: PublicKey,
}

/// Opens a block: releases unbonded stake whose time has come.
pub fn begin_block<S: Store + ?Sized>(
    overlay: &mut Overlay<'_, S>,
    height: u64,
) -> Result<(), StateError> {
    let mut set = overlay.validators()?;
    let due: Vec<Validator> = set
        .all()
        .iter()
        .filter(|v| v.unbonding > 0 && v.release_height <= height)
        .copied()
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    for mut v in due {
        let mut account = overlay.account(&v.key)?;
        // Supply is conserved and fits in u64 (checked at genesis): this cannot saturate.
        account.balance = account.balance.saturating_add(v.unbonding);
        overlay.set_account(v.key, account);
        v.unbonding = 0;
        v.release_height = 0;
        set.upsert(v).map_err(|source| StateError::CorruptRecord {
            key: "validator set".into(),
            source,
        })?;
    }
    overlay.set_validators(&set);
    Ok(())
}

/// Closes a block: records its height in the state.
pub fn end_block<S: Store + ?Sized>(overlay: &mut Overlay<'_, S>, height: u64) {
    overlay.set_height(height);
}

/// Applies one transaction whose signature the caller has verified.
pub fn apply_tx<S: Store + ?Sized>(
    overlay: &mut Overlay<'_, S>,
    ctx: &BlockContext,
    stx: &SignedTransaction,
) -> Result<(), TxError> {
    let tx = &stx.tx;
    if tx.chain_id != ctx.chain_id {
        return Err(TxError::WrongChain {
            expected: ctx.chain_id.to_string(),
            got: tx.chain_id.to_string(),
        });
    }
    let mut sender = overlay.account(&tx.sender)?;
    if tx.nonce < sender.nonce {
        return Err(TxError::NonceReplay {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    if tx.nonce > sender.nonce {
        return Err(TxError::NonceGap {
            expected: sender.nonce,
            got: tx.nonce,
        });
    }
    let needed = tx
        .fee
        .checked_add(tx.payload.spend())
        .ok_or(TxError::Overflow)?;
    if sender.balance < needed {
        return Err(TxError::InsufficientBalance {
            needed,
            available: sender.balance,
        });
    }
    sender.balance -= needed;
    sender.nonce += 1;

    let mut accounts = Accounts::default();
    accounts.set(tx.sender, sender);
    let mut validators = None;
    let mut slashed = None;
    match &tx.payload {
        Payload::Transfer { to, amount } => {
            if *amount == 0 {
                return Err(TxError::ZeroAmount);
            }
            accounts.credit(overlay, *to, *amount)?;
        }
        Payload::Bond { amount } => {
            if *amount == 0 {
                return Err(TxError::ZeroAmount);
            }
            let mut set = overlay.validators()?;
            let mut v = set.get(&tx.sender).copied().unwrap_or(Validator {
                key: tx.sender,
                stake: 0,
                unbonding: 0,
                release_height: 0,
            });
            v.stake = v.stake.checked_add(*amount).ok_or(TxError::Overflow)?;
            set.upsert(v).map_err(|_| TxError::ValidatorSetFull)?;
            validators = Some(set);
        }
        Payload::Unbond { amount } => {
            if *amount == 0 {
                return Err(TxError::ZeroAmount);
            }
            let mut set = overlay.validators()?;
            let mut v = *set.get(&tx.sender).ok_or(TxError::NotValidator)?;
            if *amount > v.stake {
                return Err(TxError::UnbondExceedsStake {
                    stake: v.stake,
                    amount: *amount,
                });
            }
            v.stake -= amount;
            v.unbonding = v.unbonding.checked_add(*amount).ok_or(TxError::Overflow)?;
            v.release_height = ctx.height + UNBONDING_BLOCKS;
            set.upsert(v).map_err(|_| TxError::ValidatorSetFull)?;
            if set.total_power() == 0 {
                return Err(TxError::WouldHaltChain);
            }
            validators = Some(set);
        }
        Payload::Slash(evidence) => {
            let height = evidence.height();
            if height >= ctx.height {
                return Err(TxError::EvidenceFromFuture { height });
            }
            let oldest = ctx.height.saturating_sub(EVIDENCE_MAX_AGE_BLOCKS);
            if height < oldest {
                return Err(TxError::EvidenceTooOld { height, oldest });
            }
            evidence.verify(&ctx.chain_id)?;
            let offender = evidence.offender();
            // The set that voted at `height` is the state after block `height - 1`.
            let then = match height.checked_sub(1) {
                Some(version) => overlay.tree().validators(version)?.power(&offender),
                None => 0,
            };
            if then == 0 {
                return Err(TxError::NotAValidatorThen { offender, height });
            }
            if overlay.was_slashed(offender, height)? {
                return Err(TxError::AlreadySlashed { offender, height });
            }
            let mut set = overlay.validators()?;
            let mut v = *set
                .get(&offender)
                .ok_or(TxError::NotAValidatorThen { offender, height })?;
            v.stake -= slash_amount(v.stake);
            v.unbonding -= slash_amount(v.unbonding);
            set.upsert(v).map_err(|_| TxError::ValidatorSetFull)?;
            validators = Some(set);
            slashed = Some((offender, height));
        }
    }
    accounts.credit(overlay, ctx.proposer, tx.fee)?;

    accounts.write(overlay);
    if let Some(set) = validators {
        overlay.set_validators(&set);
    }
    if let Some((offender, height)) = slashed {
        overlay.mark_slashed(offender, height, ctx.height);
    }
    Ok(())
}

/// The part of `amount` a slash burns.
pub fn slash_amount(amount: u64) -> u64 {
    // u128: the product cannot overflow; the result is at most `amount`.
    (u128::from(amount) * u128::from(SLASH_PERCENT) / 100) as u64
}

/// Account changes of one transaction, kept aside until every check has passed.
#[derive(Default)]
struct Accounts {
    changed: BTreeMap<PublicKey, Account>,
}

impl Accounts {
    fn set(&mut self, key: PublicKey, account: Account) {
        self.changed.insert(key, account);
    }

    fn credit<S: Store + ?Sized>(
        &mut self,
        overlay: &Overlay<'_, S>,
        key: PublicKey,
        amount: u64,
    ) -> Result<(), TxError> {
        let mut account = match self.changed.get(&key) {
            Some(a) => *a,
            None => overlay.account(&key)?,
        };
        account.balance = account
            .balance
            .checked_add(amount)
            .ok_or(TxError::Overflow)?;
        self.changed.insert(key, account);
        Ok(())
    }

    fn write<S: Store + ?Sized>(self, overlay: &mut Overlay<'_, S>) {
        for (key, account) in self.changed {
            overlay.set_account(key, account);
        }
    }
}

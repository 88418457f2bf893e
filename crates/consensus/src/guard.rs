//! The double-sign guard: the last (height, round, step) this validator signed, persisted before
//! the signature leaves the process. It refuses any vote or proposal that goes back in that order
//! or differs from what was signed at the same point, even if the WAL is lost.

use storage::{Column, Store, WriteBatch};
use thiserror::Error;
use types::codec::Reader;
use types::{Decode, Encode, Hash, Signature};

const KEY: &[u8] = b"consensus/sign-guard";

/// The step of a signed message within a round, in the order a validator signs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A block proposal.
    Proposal,
    /// A prevote.
    Prevote,
    /// A precommit.
    Precommit,
}

impl Step {
    fn code(self) -> u8 {
        match self {
            Step::Proposal => 0,
            Step::Prevote => 1,
            Step::Precommit => 2,
        }
    }

    fn from_code(code: u8) -> Option<Step> {
        match code {
            0 => Some(Step::Proposal),
            1 => Some(Step::Prevote),
            2 => Some(Step::Precommit),
            _ => None,
        }
    }
}

/// The last message signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSigned {
    /// Height.
    pub height: u64,
    /// Round.
    pub round: u32,
    /// Step.
    pub step: Step,
    /// Hash of the exact bytes signed.
    pub digest: Hash,
    /// The signature given.
    pub signature: Signature,
}

impl LastSigned {
    /// The point signed, ordered as the guard orders them.
    pub fn point(&self) -> (u64, u32, Step) {
        (self.height, self.round, self.step)
    }

    /// This record moved to the last point of its height, `(height, u32::MAX, Precommit)`,
    /// with its digest and signature kept: a guard holding it refuses every message at that
    /// height and signs again from `height + 1`.
    ///
    /// A restore writes it when the record it carries over is newer than the restored
    /// consensus WAL: the votes and lock behind the record are lost with the newer WAL, and
    /// signing anything more at that height could contradict them (amnesia). The kept digest
    /// is of a message at the original point, whose signed bytes hold that round and step, so
    /// no message at the closing point has it unless it was signed there.
    pub fn closing_height(self) -> LastSigned {
        LastSigned {
            round: u32::MAX,
            step: Step::Precommit,
            ..self
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 + 1 + 32 + 64);
        self.height.encode_to(&mut out);
        self.round.encode_to(&mut out);
        out.push(self.step.code());
        self.digest.encode_to(&mut out);
        self.signature.encode_to(&mut out);
        out
    }

    fn decode(bytes: &[u8]) -> Option<LastSigned> {
        let mut r = Reader::new(bytes);
        let last = LastSigned {
            height: r.u64().ok()?,
            round: r.u32().ok()?,
            step: Step::from_code(r.u8().ok()?)?,
            digest: Hash::decode_from(&mut r).ok()?,
            signature: Signature::decode_from(&mut r).ok()?,
        };
        r.finish().ok()?;
        Some(last)
    }
}

/// What the guard says about a message about to be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never signed anything at or after this point: sign it.
    Sign,
    /// This exact message was signed already: give the same signature again.
    Reuse(Signature),
}

/// A signature the guard refused, and why.
#[derive(Debug, Error)]
pub enum GuardError {
    /// The message goes back before the last signed point.
    #[error(
        "refusing to sign {step:?} at height {height} round {round}: already signed {last:?} at height {last_height} round {last_round}"
    )]
    Regression {
        /// Refused height.
        height: u64,
        /// Refused round.
        round: u32,
        /// Refused step.
        step: Step,
        /// Last signed height.
        last_height: u64,
        /// Last signed round.
        last_round: u32,
        /// Last signed step.
        last: Step,
    },
    /// A different message at the same height, round and step as the last one signed.
    #[error(
        "refusing to sign a second, different {step:?} at height {height} round {round}: that would be equivocation"
    )]
    Conflict {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// Step.
        step: Step,
    },
    /// The stored guard record is unreadable: signing stays refused until an operator looks.
    #[error(
        "the double-sign guard record is corrupt; refusing to sign. Restore the data directory from a backup or remove the record only if this key has not signed since"
    )]
    Corrupt,
    /// The guard could not be read or persisted.
    #[error("double-sign guard storage: {0}")]
    Store(#[from] storage::StoreError),
}

/// The persisted last-signed record.
#[derive(Debug)]
pub struct SignGuard {
    last: Option<LastSigned>,
}

impl SignGuard {
    /// Loads the record from `store`.
    pub fn load<S: Store>(store: &S) -> Result<SignGuard, GuardError> {
        let last = match store.get(Column::Meta, KEY)? {
            None => None,
            Some(bytes) => Some(LastSigned::decode(&bytes).ok_or(GuardError::Corrupt)?),
        };
        Ok(SignGuard { last })
    }

    /// The last message signed, if any.
    pub fn last(&self) -> Option<&LastSigned> {
        self.last.as_ref()
    }

    /// Whether a message with `digest` at (`height`, `round`, `step`) may be signed.
    pub fn check(
        &self,
        height: u64,
        round: u32,
        step: Step,
        digest: &Hash,
    ) -> Result<Verdict, GuardError> {
        let Some(last) = &self.last else {
            return Ok(Verdict::Sign);
        };
        let point = (height, round, step);
        let last_point = last.point();
        if point > last_point {
            Ok(Verdict::Sign)
        } else if point == last_point && *digest == last.digest {
            Ok(Verdict::Reuse(last.signature))
        } else if point == last_point {
            Err(GuardError::Conflict {
                height,
                round,
                step,
            })
        } else {
            Err(GuardError::Regression {
                height,
                round,
                step,
                last_height: last.height,
                last_round: last.round,
                last: last.step,
            })
        }
    }

    /// Persists `signed` as the last signed message; the signature may be released only after.
    pub fn record<S: Store>(&mut self, store: &S, signed: LastSigned) -> Result<(), GuardError> {
        let mut batch = WriteBatch::new();
        batch.put(Column::Meta, KEY, signed.encode());
        store.write(batch)?;
        self.last = Some(signed);
        Ok(())
    }

    /// Keeps the later of the stored record and `other` (by height, round, step; `other` on the
    /// same point): persists `other` unless the stored record is strictly further along, and
    /// says whether it did. A restored database takes the guard of the one it replaces this
    /// way, so a restore never lets the validator sign again what it signed since.
    pub fn merge<S: Store>(&mut self, store: &S, other: LastSigned) -> Result<bool, GuardError> {
        if self.last.is_some_and(|last| last.point() > other.point()) {
            return Ok(false);
        }
        self.record(store, other)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::MemStore;

    fn sig(b: u8) -> Signature {
        types::SecretKey::from_seed([b; 32]).sign(
            types::Domain::Vote,
            &types::ChainId::new("t").expect("valid"),
            &1u64,
        )
    }

    fn signed(height: u64, round: u32, step: Step, d: u8) -> LastSigned {
        LastSigned {
            height,
            round,
            step,
            digest: Hash([d; 32]),
            signature: sig(d),
        }
    }

    #[test]
    fn guard_refuses_regressions_and_conflicts_and_reuses_identical_messages() {
        let store = MemStore::new();
        let mut guard = SignGuard::load(&store).expect("empty store");
        assert_eq!(
            guard.check(5, 0, Step::Prevote, &Hash([1; 32])).ok(),
            Some(Verdict::Sign)
        );
        guard
            .record(&store, signed(5, 1, Step::Prevote, 1))
            .expect("recorded");
        let reloaded = SignGuard::load(&store).expect("readable");
        for g in [&guard, &reloaded] {
            assert_eq!(
                g.check(5, 1, Step::Prevote, &Hash([1; 32])).ok(),
                Some(Verdict::Reuse(sig(1)))
            );
            assert!(matches!(
                g.check(5, 1, Step::Prevote, &Hash([2; 32])),
                Err(GuardError::Conflict { .. })
            ));
            assert!(matches!(
                g.check(5, 1, Step::Proposal, &Hash([2; 32])),
                Err(GuardError::Regression { .. })
            ));
            assert!(matches!(
                g.check(5, 0, Step::Precommit, &Hash([2; 32])),
                Err(GuardError::Regression { .. })
            ));
            assert!(matches!(
                g.check(4, 9, Step::Precommit, &Hash([2; 32])),
                Err(GuardError::Regression { .. })
            ));
            assert_eq!(
                g.check(5, 1, Step::Precommit, &Hash([2; 32])).ok(),
                Some(Verdict::Sign)
            );
            assert_eq!(
                g.check(6, 0, Step::Proposal, &Hash([2; 32])).ok(),
                Some(Verdict::Sign)
            );
        }
    }

    #[test]
    fn merge_keeps_the_later_record_and_takes_the_other_on_the_same_point() {
        let store = MemStore::new();
        let mut guard = SignGuard::load(&store).expect("empty store");
        assert!(
            guard
                .merge(&store, signed(5, 0, Step::Prevote, 1))
                .expect("merged")
        );
        assert!(
            !guard
                .merge(&store, signed(4, 9, Step::Precommit, 2))
                .expect("merged")
        );
        assert!(
            !guard
                .merge(&store, signed(5, 0, Step::Proposal, 3))
                .expect("merged")
        );
        assert_eq!(
            SignGuard::load(&store).expect("readable").last(),
            Some(&signed(5, 0, Step::Prevote, 1))
        );
        assert!(
            guard
                .merge(&store, signed(5, 0, Step::Prevote, 4))
                .expect("merged")
        );
        assert!(
            guard
                .merge(&store, signed(5, 1, Step::Proposal, 5))
                .expect("merged")
        );
        let reloaded = SignGuard::load(&store).expect("readable");
        assert_eq!(reloaded.last(), Some(&signed(5, 1, Step::Proposal, 5)));
        assert_eq!(guard.last(), reloaded.last());
    }

    #[test]
    fn a_closed_height_refuses_every_message_at_it_and_signs_from_the_next() {
        let store = MemStore::new();
        let mut guard = SignGuard::load(&store).expect("empty store");
        let kept = signed(7, 2, Step::Prevote, 1);
        guard
            .record(&store, kept.closing_height())
            .expect("recorded");
        let other = Hash([2; 32]);
        for round in [0, 1, 2, 3, u32::MAX - 1, u32::MAX] {
            for step in [Step::Proposal, Step::Prevote, Step::Precommit] {
                for digest in [&other, &kept.digest] {
                    // The kept digest is of the message signed at round 2, whose bytes
                    // say round 2: no message at the closing point itself has it.
                    let top = (round, step) == (u32::MAX, Step::Precommit);
                    if top && *digest == kept.digest {
                        continue;
                    }
                    let verdict = guard.check(7, round, step, digest);
                    assert!(
                        verdict.is_err(),
                        "round {round} {step:?} at the closed height: {verdict:?}"
                    );
                }
            }
        }
        assert_eq!(
            guard.check(8, 0, Step::Proposal, &other).ok(),
            Some(Verdict::Sign)
        );
        let closed = SignGuard::load(&store).expect("readable");
        assert_eq!(
            closed.last().map(|l| (l.point(), l.digest, l.signature)),
            Some(((7, u32::MAX, Step::Precommit), kept.digest, kept.signature))
        );
    }

    #[test]
    fn a_corrupt_guard_record_refuses_to_load() {
        let store = MemStore::new();
        let mut batch = WriteBatch::new();
        batch.put(Column::Meta, KEY, vec![1, 2, 3]);
        store.write(batch).expect("written");
        assert!(matches!(SignGuard::load(&store), Err(GuardError::Corrupt)));
    }
}

//! The chain's economic and safety rules. Changing one is a protocol change.

/// Share of an equivocator's stake (bonded and unbonding) burned per offence, percent.
pub const SLASH_PERCENT: u64 = 20;
/// Evidence older than this many blocks is refused (it must land while the stake is still
/// bonded or unbonding).
pub const EVIDENCE_MAX_AGE_BLOCKS: u64 = 1_000;
/// Blocks between an unbond and the release of the stake to the balance; longer than the
/// evidence window, so stake that misbehaved can still be slashed.
pub const UNBONDING_BLOCKS: u64 = EVIDENCE_MAX_AGE_BLOCKS + 1;
/// How far a block's time may run ahead of the local clock, milliseconds.
pub const MAX_CLOCK_DRIFT_MS: u64 = 10_000;

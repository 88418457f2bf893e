//! Token buckets in integer arithmetic, run the same way by the kernel program and the reference
//! model.
//!
//! # Design
//! Tokens are kept in nano-tokens (1 token = [`UNIT`]), so a refill is one multiplication of the
//! elapsed nanoseconds by the rate, with no division: the BPF verifier and the reference model
//! compute bit-identical results. Inputs are clamped so no product can overflow `u64`:
//! `ELAPSED_CAP_NS * RATE_MAX_PPS < 2^64` and `BURST_MAX * UNIT < 2^64`.
//!
//! Updates are not atomic across CPUs: two CPUs updating one source at the same instant can each
//! spend the same token. The error is bounded by the number of CPUs per refill, which is fine for
//! flood control.

/// Nano-tokens per token.
pub const UNIT: u64 = 1_000_000_000;
/// Highest rate honoured, in tokens per second; higher configured rates are clamped.
pub const RATE_MAX_PPS: u64 = 10_000_000;
/// Largest burst honoured, in tokens; larger configured bursts are clamped.
pub const BURST_MAX: u64 = 1_000_000;
/// Idle time after which a bucket is full whatever its rate (1000 s).
pub const ELAPSED_CAP_NS: u64 = 1_000_000_000_000;

/// One budget: tokens left and when they were last refilled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TokenBucket {
    /// Tokens left, in nano-tokens.
    pub tokens: u64,
    /// Clock (nanoseconds) of the last refill.
    pub last_ns: u64,
}

#[inline(always)]
const fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

#[inline(always)]
const fn capacity(burst: u64) -> u64 {
    let burst = if burst == 0 { 1 } else { burst };
    min(burst, BURST_MAX) * UNIT
}

impl TokenBucket {
    /// A bucket for a source seen for the first time at `now_ns`: full.
    #[inline(always)]
    pub const fn full(now_ns: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            tokens: capacity(burst),
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last call, then takes one token if there is one.
    /// Returns true when the packet is within budget. A rate of 0 means no limit.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate_pps: u64, burst: u64) -> bool {
        if rate_pps == 0 {
            return true;
        }
        let cap = capacity(burst);
        if now_ns > self.last_ns {
            let elapsed = min(now_ns - self.last_ns, ELAPSED_CAP_NS);
            let refill = elapsed * min(rate_pps, RATE_MAX_PPS);
            self.tokens = min(self.tokens.saturating_add(refill), cap);
            self.last_ns = now_ns;
        } else if self.tokens > cap {
            self.tokens = cap;
        }
        if self.tokens >= UNIT {
            self.tokens -= UNIT;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_passes_then_the_next_packet_is_over_budget() {
        let mut b = TokenBucket::full(0, 5);
        for _ in 0..5 {
            assert!(b.take(0, 10, 5));
        }
        assert!(!b.take(0, 10, 5));
    }

    #[test]
    fn refill_follows_the_rate_and_stops_at_the_burst() {
        let mut b = TokenBucket::full(0, 3);
        assert!(b.take(0, 10, 3));
        assert!(b.take(0, 10, 3));
        assert!(b.take(0, 10, 3));
        assert!(!b.take(0, 10, 3));
        // 10 per second: one token every 100 ms.
        assert!(!b.take(SEC / 20, 10, 3));
        assert!(b.take(SEC / 10, 10, 3));
        // A long idle time refills to the burst, never beyond.
        assert!(b.take(100 * SEC, 10, 3));
        assert!(b.take(100 * SEC, 10, 3));
        assert!(b.take(100 * SEC, 10, 3));
        assert!(!b.take(100 * SEC, 10, 3));
    }

    #[test]
    fn zero_rate_means_unlimited_and_extreme_inputs_do_not_overflow() {
        let mut b = TokenBucket::default();
        assert!(b.take(0, 0, 0));
        let mut b = TokenBucket::full(0, u64::MAX);
        assert!(b.take(u64::MAX, u64::MAX, u64::MAX));
        assert_eq!(b.tokens, BURST_MAX * UNIT - UNIT);
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let mut b = TokenBucket::full(10 * SEC, 1);
        assert!(b.take(10 * SEC, 1, 1));
        assert!(!b.take(5 * SEC, 1, 1));
        assert_eq!(b.last_ns, 10 * SEC);
    }
}

//! Quantiles of latency samples.

use serde::Serialize;

/// The summary of a set of samples (milliseconds): nearest-rank quantiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    /// Samples.
    pub count: usize,
    /// Median, ms (0 without samples).
    pub p50_ms: u64,
    /// 99th percentile, ms.
    pub p99_ms: u64,
    /// Largest, ms.
    pub max_ms: u64,
}

impl Quantiles {
    /// The quantiles of `samples` (in any order).
    pub fn of(samples: &[u64]) -> Quantiles {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Quantiles {
            count: sorted.len(),
            p50_ms: quantile(&sorted, 0.50),
            p99_ms: quantile(&sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or(0),
        }
    }
}

/// The nearest-rank `q` quantile (0 < q <= 1) of ascending `sorted`; 0 when it is empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // Nearest rank: the smallest sample with at least q of all samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let q = Quantiles::of(&samples);
        assert_eq!((q.count, q.p50_ms, q.p99_ms, q.max_ms), (100, 50, 99, 100));
        assert_eq!(quantile(&[7], 0.5), 7);
        assert_eq!(quantile(&[1, 2], 0.5), 1);
        assert_eq!(quantile(&[1, 2, 3], 0.5), 2);
        assert_eq!(quantile(&[1, 2, 3], 0.99), 3);
        assert_eq!(Quantiles::of(&[]), Quantiles::default());
    }
}

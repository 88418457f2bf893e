//! Run many seeds on a few threads (one run per thread at a time) and summarize.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::report::{Report, Summary};
use crate::sim::run_seed;

/// Runs every seed of `seeds` on `threads` threads, calls `on_report` with each report as it
/// completes, and returns the summary (failures in seed order).
pub fn sweep(seeds: Range<u64>, threads: usize, on_report: impl Fn(&Report) + Sync) -> Summary {
    let next = AtomicU64::new(seeds.start);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let report = run_seed(seed);
                    on_report(&report);
                    summary
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .add(&report);
                }
            });
        }
    });
    let mut summary = summary.into_inner().unwrap_or_else(PoisonError::into_inner);
    summary.failures.sort_by_key(|(seed, _, _)| *seed);
    summary
}

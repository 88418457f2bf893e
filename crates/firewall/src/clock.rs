//! Read the clock the kernel program uses for ban expiry and token buckets: CLOCK_MONOTONIC.
//!
//! # Design
//! The program reads `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, one tick of resolution):
//! a precise clock read (`bpf_ktime_get_boot_ns`) cost about a quarter of the receiver's time per
//! dropped packet in the flood benchmark. User space reads the precise CLOCK_MONOTONIC of the
//! same base, so a deadline written here takes effect in the kernel at most one tick (4 ms at
//! HZ=250) late. CLOCK_MONOTONIC does not count suspend, which servers do not do.

use std::time::Duration;

/// Nanoseconds of CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux kernel,
    // so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32).as_nanos() as u64
}

/// The deadline `ttl` from now, or 0 (never) for no TTL.
pub fn deadline_ns(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(ttl) => now_ns().saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64),
    }
}

//! Read CLOCK_BOOTTIME, the clock the kernel program uses for ban expiry and token buckets.

use std::time::Duration;

/// Nanoseconds of CLOCK_BOOTTIME: monotonic, and counting through suspend like the kernel's
/// `bpf_ktime_get_boot_ns`.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux kernel
    // this program supports, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32).as_nanos() as u64
}

/// The CLOCK_BOOTTIME deadline `ttl` from now, or 0 (never) for no TTL.
pub fn deadline_ns(ttl: Option<Duration>) -> u64 {
    match ttl {
        None => 0,
        Some(ttl) => boottime_ns().saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64),
    }
}

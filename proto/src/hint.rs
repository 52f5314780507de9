//! A prefetch hint: asks the processor to start loading the cache line holding a value,
//! without waiting for it. A plain load that misses holds up everything after it once the
//! processor's window of pending instructions is full (~300 instructions, far less than the
//! ~0.1 µs a miss to memory takes here); a prefetch retires at once. The replayer uses it for
//! records and statistics it will touch shortly (measured in the git history of `replayer/src/stats.rs`).
//!
//! Standard Rust's `std::hint::prefetch_read` is not stable, and the workspace forbids
//! `unsafe`, so the instruction comes from `safe_arch` on x86-64; elsewhere this does nothing.

/// Starts loading the cache line holding `value`.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    safe_arch::prefetch_t0(value);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

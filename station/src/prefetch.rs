//! A prefetch hint: the station's crate's one use of `unsafe`, shared by the
//! detector's flow table and the app's row table.
//!
//! A per-packet (or per-record) path knows, a few packets ahead, which cache lines it will
//! read (the next queue slots, a key's index slot, then its flow entry); a
//! prefetch instruction starts those loads without waiting for them, so the
//! misses of several packets are in flight together.
//!
//! Guarantees: [`prefetch`] is safe to call with any pointer, dangling, null
//! or unmapped: a prefetch instruction never faults, never reads into a
//! register and has no effect a program can observe but timing. On
//! architectures without the x86-64 instruction it does nothing.
//!
//! Not guaranteed: that the line arrives (the processor may drop the hint,
//! for example when the page is not mapped yet).
#![allow(unsafe_code)]

/// Asks the processor to bring the cache line holding `p` into all cache
/// levels (`PREFETCHT0`), without waiting for it.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, part of the x86-64 baseline) is a hint: it does not
    // access memory architecturally, so no address can make it fault or break an
    // invariant of the Rust memory model.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefetch_of_any_address_is_harmless() {
        let v = [1u8; 64];
        prefetch(v.as_ptr());
        prefetch(std::ptr::null::<u8>());
        prefetch(usize::MAX as *const u8);
        prefetch(v.as_ptr().wrapping_add(1 << 40));
        assert_eq!(v, [1u8; 64]);
    }
}

//! The app's one use of `unsafe`: advising transparent huge pages for the
//! aggregate table's large allocations (its row chunks and its index).
//!
//! With THP in `madvise` mode (`/sys/kernel/mm/transparent_hugepage/enabled`),
//! memory the program advised is mapped in 2 MiB pages where a whole
//! aligned 2 MiB of it lies in one mapping: first touching a million rows
//! is then about fifty page faults instead of twenty-seven thousand, and
//! the lookups' random reads miss the TLB less.
//!
//! Guarantees: [`advise_huge_pages`] is safe to call with any slice: it
//! changes no byte of memory and no address, only how the kernel backs the
//! pages (`MADV_HUGEPAGE` sets a flag on the mapping), and its failure
//! (a kernel without THP, `never` mode) is ignored.
//!
//! Not guaranteed: huge pages (the kernel may have none free, and the parts
//! of the range not covering a whole aligned 2 MiB stay in 4 KiB pages).
#![allow(unsafe_code)]

use std::ptr::NonNull;

/// Advises transparent huge pages for the pages that hold `v` (its first
/// byte's page to its last byte's page). Does nothing for less than 2 MiB.
pub fn advise_huge_pages<T>(v: &[T]) {
    const HUGE: usize = 2 << 20;
    let len = std::mem::size_of_val(v);
    if len < HUGE {
        return;
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |p| p as usize);
    let start = v.as_ptr() as usize / page * page;
    let end = (v.as_ptr() as usize + len).div_ceil(page) * page;
    let Some(base) = NonNull::new(start as *mut std::ffi::c_void) else {
        return;
    };
    // SAFETY: MADV_HUGEPAGE only sets a flag on the mappings of the range
    // (the pages of a live allocation, rounded out to whole pages of the
    // same mappings); it changes no contents and no addresses, so no Rust
    // object can observe it.
    let _ = unsafe { nix::sys::mman::madvise(base, end - start, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advised_memory_keeps_its_contents() {
        let mut v: Vec<u64> = (0..(1 << 20)).collect();
        advise_huge_pages(&v);
        v.push(7);
        advise_huge_pages(&v[1..]);
        advise_huge_pages::<u8>(&[]);
        assert!(v[..1 << 20].iter().enumerate().all(|(i, &x)| x == i as u64));
        assert_eq!(v[1 << 20], 7);
    }
}

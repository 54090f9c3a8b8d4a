//! The PF_RING source's calls into libpfring (`pfring-sys`), each behind a
//! safe function or method that states the contract it keeps: the pfring
//! module's one place with `unsafe`.
//!
//! Guarantees:
//! - A [`Ring`] holds a pointer `pfring_open` returned, is closed exactly once
//!   (on drop), and is used from one thread at a time (`&mut self`).
//! - A frame [`Ring::recv`] lends points into the ring and borrows the ring
//!   mutably: the next `pfring_recv`, which may reuse that memory, cannot run
//!   while the frame is alive.
//! - Strings from the library are copied out before they are handed on.
//!
//! Not guaranteed: that libpfring keeps its own documented contracts (a
//! frame pointer valid until the next `pfring_recv` on its ring, static
//! version strings).
// The balancer denies unsafe code; this module is the documented exception (DESIGN.md, Crates).
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::ptr::NonNull;

use pfring_sys as ffi;

/// The user library's version number (`0x080900` for 8.9.0), asked of the
/// library itself (not the headers this was built with).
#[must_use]
pub fn library_version() -> u32 {
    let mut v = 0u32;
    // SAFETY: pfring_version_noring writes one u32 through a valid pointer and keeps nothing.
    unsafe { ffi::pfring_version_noring(&mut v) };
    v
}

/// The libpcap libpfring reads files with, or `None` when it gives no name.
pub(super) fn pcap_lib_version() -> Option<String> {
    // SAFETY: pcap_lib_version returns a pointer to a static NUL-terminated string.
    let p = unsafe { ffi::pcap_lib_version() };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// The version of PF_RING ZC inside the library, `None` without ZC.
pub(super) fn zc_version() -> Option<String> {
    // SAFETY: pfring_zc_version returns a pointer to a static NUL-terminated string or NULL.
    let p = unsafe { ffi::pfring_zc_version() };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Whether the library holds a ZC licence (false: ZC runs in demo mode).
pub(super) fn zc_licensed() -> bool {
    // SAFETY: pfring_zc_check_license only reads the library's licence state.
    unsafe { ffi::pfring_zc_check_license() != 0 }
}

/// What one [`Ring::recv`] got (no `Debug`: bindgen's header has none).
// The header is returned by value on the stack, as the C API fills it: boxing it would allocate per frame.
#[allow(clippy::large_enum_variant)]
pub(super) enum Received<'r> {
    /// A frame: its header and its captured bytes, lent until the next `recv`.
    Frame(ffi::pfring_pkthdr, &'r [u8]),
    /// No frame; `pfring_recv`'s return code (0: nothing now, negative: an error).
    Code(i32),
}

/// An open PF_RING ring; closed on drop.
#[derive(Debug)]
pub(super) struct Ring(NonNull<ffi::pfring>);

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the pointer came from pfring_open, is closed exactly once (here), and
        // no frame borrowed from it outlives `&mut self` of the source that owns it.
        unsafe { ffi::pfring_close(self.0.as_ptr()) };
    }
}

// SAFETY: a ring opened without PF_RING_REENTRANT may be used from one thread at a
// time; the source is moved to the balancer thread and used only there (`&mut self`).
unsafe impl Send for Ring {}

impl Ring {
    /// `pfring_open(device, caplen, flags)`; `None` when the library refused
    /// (errno says why, read it at once).
    pub(super) fn open(device: &CString, caplen: u32, flags: u32) -> Option<Self> {
        // SAFETY: `device` is a NUL-terminated string alive for the call; pfring_open copies it.
        let raw = unsafe { ffi::pfring_open(device.as_ptr(), caplen, flags) };
        NonNull::new(raw).map(Ring)
    }

    /// Labels the ring in `/proc/net/pf_ring` (best effort: errors are ignored).
    pub(super) fn set_application_name(&mut self, name: &CStr) {
        let mut app = name.to_bytes_with_nul().to_vec();
        // SAFETY: the ring is open; `app` is NUL-terminated, alive for the call, and the library copies it.
        let _ = unsafe { ffi::pfring_set_application_name(self.0.as_ptr(), app.as_mut_ptr().cast()) };
    }

    /// Receive only (best effort: errors are ignored); call before [`Self::enable`].
    pub(super) fn set_recv_only(&mut self) {
        // SAFETY: the ring is open and not yet enabled, as pfring_set_socket_mode requires.
        let _ = unsafe { ffi::pfring_set_socket_mode(self.0.as_ptr(), ffi::socket_mode::recv_only_mode) };
    }

    /// `pfring_set_bpf_filter`: PF_RING's own capture filter (tcpdump syntax); its return code.
    pub(super) fn set_bpf_filter(&mut self, expr: &CStr) -> i32 {
        let mut text = expr.to_bytes_with_nul().to_vec();
        // SAFETY: the ring is open; `text` is NUL-terminated and alive for the
        // call (the library compiles it and keeps its own program).
        unsafe { ffi::pfring_set_bpf_filter(self.0.as_ptr(), text.as_mut_ptr().cast()) }
    }

    /// `pfring_enable_ring`: the documented step before `pfring_recv`; its return code.
    pub(super) fn enable(&mut self) -> i32 {
        // SAFETY: the ring is open; enabling it is the documented step before pfring_recv.
        unsafe { ffi::pfring_enable_ring(self.0.as_ptr()) }
    }

    /// `pfring_stats`, or `None` when the library gives none.
    pub(super) fn stats(&mut self) -> Option<ffi::pfring_stat> {
        let mut st = ffi::pfring_stat { recv: 0, drop: 0, shunt: 0 };
        // SAFETY: the ring is open and enabled; `st` is a valid pfring_stat the call fills.
        (unsafe { ffi::pfring_stats(self.0.as_ptr(), &mut st) } == 0).then_some(st)
    }

    /// One `pfring_recv` without waiting, the frame borrowed from the ring
    /// (`buffer_len` 0), its bytes cut at `snaplen`.
    pub(super) fn recv(&mut self, snaplen: u32) -> Received<'_> {
        let mut buf: *mut u8 = std::ptr::null_mut();
        // SAFETY: pfring_pkthdr is plain old data (integers and a raw pointer); all zeroes is valid.
        let mut hdr: ffi::pfring_pkthdr = unsafe { std::mem::zeroed() };
        // SAFETY: the ring is open and enabled, used by this thread only; buffer_len 0 asks
        // for a pointer into the ring, valid until the next pfring_recv on this ring.
        let rc = unsafe { ffi::pfring_recv(self.0.as_ptr(), &mut buf, 0, &mut hdr, 0) };
        if rc > 0 && !buf.is_null() {
            let caplen = hdr.caplen.min(snaplen);
            // SAFETY: on success PF_RING points `buf` at `caplen` readable bytes of the frame;
            // the slice borrows `self` mutably, so it ends before the next pfring_recv.
            let data = unsafe { std::slice::from_raw_parts(buf.cast_const(), caplen as usize) };
            return Received::Frame(hdr, data);
        }
        Received::Code(rc)
    }
}

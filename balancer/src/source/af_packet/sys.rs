//! The AF_PACKET source's system calls and the ring mapping: with
//! `pfring::sys`, the balancer's only modules with `unsafe` (as smoltcp keeps
//! its system calls in `phy/sys/`).
//!
//! Every function here is safe to call: each wraps one system call (or the
//! mapping) and states the contract it keeps, so the link watching, the
//! statistics and the ring walk around it stay under the crate's
//! `deny(unsafe_code)`.
//!
//! Guarantees:
//! - A socket option is passed to the kernel as a live value of its own type
//!   and size; a value the kernel writes back is of a type every bit pattern
//!   of which is valid (integers, `tpacket_stats_v3`).
//! - [`RingMap`] unmaps exactly what `mmap` returned, once, when dropped.
//! - [`RingMap::user_block`] lends a block's bytes only after an Acquire load
//!   of its status saw `TP_STATUS_USER`, and hands the block back to the kernel
//!   (a Release store of `TP_STATUS_KERNEL`) only through
//!   [`UserBlock::release`], which consumes the loan: no slice of the block
//!   outlives its hand-back.
//!
//! Not guaranteed: that the kernel keeps its side of the `TPACKET_V3`
//! protocol (it does not write a block whose status is `TP_STATUS_USER`);
//! that is the kernel's documented contract (Documentation/networking/packet_mmap.rst).
// The balancer denies unsafe code; this module is the documented exception (DESIGN.md, Crates).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// `tpacket_block_desc.hdr.bh1.block_status` (u32): offset in a block.
pub(super) const BLOCK_STATUS: usize = 8;
/// `tp_status` / `block_status` bits (linux/if_packet.h).
pub(super) const TP_STATUS_KERNEL: u32 = 0;
/// The block belongs to user space.
pub(super) const TP_STATUS_USER: u32 = 1;
/// `SIOCGHWTSTAMP` (linux/sockios.h): read a NIC's hardware timestamping setup.
const SIOCGHWTSTAMP: libc::c_ulong = 0x89b1;
/// `HWTSTAMP_FILTER_NONE` (linux/net_tstamp.h).
const HWTSTAMP_FILTER_NONE: libc::c_int = 0;

/// `tpacket_stats_v3` (a local copy so that it is `Default`).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(super) struct TpacketStatsV3 {
    /// Frames handed to the socket, dropped ones included.
    pub tp_packets: libc::c_uint,
    /// Frames dropped because the ring was full.
    pub tp_drops: libc::c_uint,
    /// Times the ring froze.
    pub tp_freeze_q_cnt: libc::c_uint,
}

/// A value `getsockopt` may write: every bit pattern of it is valid.
///
/// # Safety
/// Implement only for plain-old-data types (integers and `#[repr(C)]` structs
/// of integers) that have no invalid bit patterns.
unsafe trait SockOptOut: Copy + Default {}
// SAFETY: an integer; every bit pattern is valid.
unsafe impl SockOptOut for libc::c_int {}
// SAFETY: `#[repr(C)]` struct of three integers; every bit pattern is valid.
unsafe impl SockOptOut for TpacketStatsV3 {}

/// A new `AF_PACKET` socket that receives nothing yet (protocol 0: nothing
/// is queued on it before the ring exists; [`bind`] sets `ETH_P_ALL`):
/// `SOCK_RAW` (frames with their link-layer header) or, with `cooked`,
/// `SOCK_DGRAM` (the network layer, its protocol in the entry's `sockaddr_ll`).
///
/// # Errors
/// The OS error of `socket(2)` (`EPERM`/`EACCES` without `CAP_NET_RAW`).
pub(super) fn packet_socket(cooked: bool) -> io::Result<OwnedFd> {
    let kind = if cooked { libc::SOCK_DGRAM } else { libc::SOCK_RAW };
    // SAFETY: plain system call with integer arguments.
    let raw = unsafe { libc::socket(libc::AF_PACKET, kind | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `setsockopt(fd, level, opt, &value)`.
fn set_opt<T: Copy>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes that the kernel only reads.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(fd, level, opt)` into a zeroed `T`.
fn get_opt<T: SockOptOut>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is a live, writable `T` of `len` bytes; the kernel writes at most `len` bytes,
    // and any bytes it writes are a valid `T` (`SockOptOut`).
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, (&mut value as *mut T).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `setsockopt(SOL_PACKET, opt, value)` for an integer option.
///
/// # Errors
/// The OS error of `setsockopt(2)`.
pub(super) fn set_packet_int(fd: &OwnedFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_opt(fd, libc::SOL_PACKET, opt, &value)
}

/// `setsockopt(SOL_SOCKET, SO_ATTACH_FILTER)`: the kernel runs `program`
/// (classic BPF) on every frame before it reaches the socket's ring.
///
/// # Errors
/// The OS error (`EINVAL` for a program the kernel's checker refuses).
pub(super) fn attach_filter(fd: &OwnedFd, program: &[crate::filter::Insn]) -> io::Result<()> {
    // `struct sock_filter` and libpcap's `struct bpf_insn` have the same layout (Insn).
    let insns: Vec<libc::sock_filter> =
        program.iter().map(|i| libc::sock_filter { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect();
    let prog = libc::sock_fprog { len: insns.len() as u16, filter: insns.as_ptr().cast_mut() };
    // The kernel copies the program during the call; `insns` outlives it.
    set_opt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// `setsockopt(SOL_PACKET, PACKET_RX_RING, req)`: the kernel allocates the ring.
///
/// # Errors
/// The OS error (`EINVAL` for a geometry the kernel refuses, `ENOMEM`).
pub(super) fn set_rx_ring(fd: &OwnedFd, req: &libc::tpacket_req3) -> io::Result<()> {
    set_opt(fd, libc::SOL_PACKET, libc::PACKET_RX_RING, req)
}

/// `setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)`.
///
/// # Errors
/// The OS error of `setsockopt(2)`.
pub(super) fn add_membership(fd: &OwnedFd, mreq: &libc::packet_mreq) -> io::Result<()> {
    set_opt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, mreq)
}

/// `PACKET_STATISTICS` since the last read (the kernel resets them on each read).
///
/// # Errors
/// The OS error of `getsockopt(2)`.
pub(super) fn packet_statistics(fd: &OwnedFd) -> io::Result<TpacketStatsV3> {
    get_opt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS)
}

/// `SO_ERROR`: the pending socket error, cleared by the read (0 when none).
///
/// # Errors
/// The OS error of `getsockopt(2)`.
pub(super) fn socket_error(fd: &OwnedFd) -> io::Result<libc::c_int> {
    get_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR)
}

/// Binds `fd` to interface `ifindex` for `protocol` (network byte order).
///
/// # Errors
/// The OS error of `bind(2)` (`ENODEV` when the interface has just gone).
pub(super) fn bind(fd: &OwnedFd, ifindex: i32, protocol_be: u16) -> io::Result<()> {
    // SAFETY: an all-zero `sockaddr_ll` is valid (integers and a byte array).
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol_be;
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a live `sockaddr_ll` of the given length.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The interface index of `name`, or `None` when there is no such interface.
pub(super) fn ifindex_of(name: &str) -> Option<i32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index as i32)
}

/// The interface index `fd` is bound to now (`getsockname(2)`'s
/// `sll_ifindex`): the kernel keeps it across a rename of the interface and
/// sets it to -1 when the interface is deleted or moved to another network
/// namespace, so it says whether the socket still captures the device it was
/// bound to.
///
/// # Errors
/// The OS error of `getsockname(2)`.
pub(super) fn bound_ifindex(fd: &OwnedFd) -> io::Result<i32> {
    // SAFETY: an all-zero `sockaddr_ll` is valid (integers and a byte array).
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `sll` is a live, writable `sockaddr_ll` and `len` its size; the kernel writes at most `len` bytes.
    let rc = unsafe { libc::getsockname(fd.as_raw_fd(), (&mut sll as *mut libc::sockaddr_ll).cast(), &mut len) };
    if rc == 0 {
        Ok(sll.sll_ifindex)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The name of interface `ifindex` now, or `None` when there is none.
pub(super) fn name_of(ifindex: i32) -> Option<String> {
    let index = u32::try_from(ifindex).ok().filter(|i| *i != 0)?;
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` is a live, writable array of IF_NAMESIZE bytes, as `if_indextoname` requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success `if_indextoname` wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Whether the NIC `name` has hardware receive timestamping switched on
/// (`SIOCGHWTSTAMP` on `fd`); false when the ioctl fails.
pub(super) fn nic_stamps_rx(fd: &OwnedFd, name: &str) -> bool {
    #[repr(C)]
    #[derive(Default)]
    struct HwtstampConfig {
        flags: libc::c_int,
        tx_type: libc::c_int,
        rx_filter: libc::c_int,
    }
    #[repr(C)]
    struct IfreqData {
        name: [u8; libc::IFNAMSIZ],
        data: *mut HwtstampConfig,
        _pad: [u8; 16],
    }
    let mut config = HwtstampConfig::default();
    let mut ifr = IfreqData { name: [0; libc::IFNAMSIZ], data: &mut config, _pad: [0; 16] };
    let n = name.len().min(libc::IFNAMSIZ - 1);
    ifr.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: `ifr` is a properly laid out `struct ifreq` whose data pointer refers to a live `hwtstamp_config`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGHWTSTAMP as _, &mut ifr as *mut IfreqData) };
    rc == 0 && config.rx_filter != HWTSTAMP_FILTER_NONE
}

/// `poll(2)` on `fds` for at most `timeout_ms`; the number of descriptors with
/// events, 0 on timeout, negative on error (`EINTR`).
pub(super) fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> i32 {
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfd structs.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) }
}

/// Whether this process runs with effective user id 0.
#[cfg(test)]
pub(super) fn is_root() -> bool {
    // SAFETY: plain system call without arguments; it cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The mmap'ed `TPACKET_V3` ring of one socket: `block_count` blocks of
/// `block_size` bytes, shared with the kernel.
#[derive(Debug)]
pub(super) struct RingMap {
    base: NonNull<u8>,
    block_size: usize,
    block_count: usize,
}

impl RingMap {
    /// Maps the ring the kernel allocated for `fd` (`PACKET_RX_RING` done).
    ///
    /// # Errors
    /// `EINVAL` when `block_size` cannot hold a block header's status word at
    /// an aligned offset or the size overflows; else the OS error of `mmap(2)`
    /// (the kernel refuses a length that is not its ring's).
    pub(super) fn new(fd: &OwnedFd, block_size: usize, block_count: usize) -> io::Result<Self> {
        let len = block_size.checked_mul(block_count).filter(|&l| l > 0);
        let Some(len) = len.filter(|_| block_size & 3 == 0 && block_size >= BLOCK_STATUS + 4) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: maps the ring the kernel allocated for this socket; the kernel checks `len`
        // against it and returns a page-aligned address.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Self { base, block_size, block_count })
    }

    /// Start of block `i` (`i < block_count`).
    fn block(&self, i: usize) -> *mut u8 {
        assert!(i < self.block_count, "block {i} of a ring of {}", self.block_count);
        // `i < block_count`: the address stays inside the `block_count * block_size` mapping.
        self.base.as_ptr().wrapping_add(i * self.block_size)
    }

    /// Block `i` when its status says user space owns it, else `None`.
    ///
    /// # Panics
    /// When `i` is not a block of the ring.
    pub(super) fn user_block(&mut self, i: usize) -> Option<UserBlock<'_>> {
        let start = self.block(i);
        // SAFETY: the mapping is page aligned and `block_size` a multiple of 4 (checked in `new`), so
        // the status word is a valid, aligned u32 inside the mapping for as long as `&mut self` lives;
        // the kernel accesses it concurrently, which an atomic permits.
        let status = unsafe { AtomicU32::from_ptr(start.wrapping_add(BLOCK_STATUS).cast::<u32>()) };
        if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return None;
        }
        Some(UserBlock { start, len: self.block_size, _ring: PhantomData })
    }
}

// SAFETY: a RingMap owns its mapping alone (nothing else holds its address:
// a `UserBlock` borrows the map, so it cannot move while one lives), and
// munmap may be called from any thread; so it may move to another thread
// (the balancer closes rings it no longer reads on a thread of their own).
unsafe impl Send for RingMap {}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are exactly what mmap returned; no `UserBlock` borrows the
        // ring once its owner drops it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.block_size * self.block_count);
        }
    }
}

/// A block user space owns (its status was `TP_STATUS_USER`): the kernel
/// does not write it until [`UserBlock::release`].
#[derive(Debug)]
pub(super) struct UserBlock<'r> {
    start: *mut u8,
    len: usize,
    _ring: PhantomData<&'r mut RingMap>,
}

impl UserBlock<'_> {
    /// The block's bytes, lent until the block is released.
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `start..start + len` is one block of the live mapping (`'r` borrows the ring
        // mutably); its status said user, so the kernel does not write it, and `release`, the only
        // write, consumes `self` after every borrow of these bytes has ended.
        unsafe { std::slice::from_raw_parts(self.start, self.len) }
    }

    /// Hands the block back to the kernel (Release store of `TP_STATUS_KERNEL`).
    pub(super) fn release(self) {
        // SAFETY: as in `RingMap::user_block`: an aligned u32 inside the mapping; no slice of the
        // block is alive (`bytes` borrows `self`, consumed here).
        let status = unsafe { AtomicU32::from_ptr(self.start.wrapping_add(BLOCK_STATUS).cast::<u32>()) };
        status.store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_stats_struct_matches_the_kernel_one() {
        assert_eq!(std::mem::size_of::<TpacketStatsV3>(), std::mem::size_of::<libc::tpacket_stats_v3>());
        let bh1 = std::mem::offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(bh1 + std::mem::offset_of!(libc::tpacket_hdr_v1, block_status), BLOCK_STATUS);
    }
}

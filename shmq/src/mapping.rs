//! Shared file mappings, and race-free creation of fully initialised files.
//!
//! Guarantees:
//! - A [`Mapping`] is a `MAP_SHARED` mapping of a whole file, page-aligned, at
//!   least as long as the file was when mapped, and unmapped exactly once on drop.
//! - [`create_atomically`] never lets another process see a partially written
//!   file under the final name: the file is sized and initialised under a
//!   private temporary name (`.<name>.<pid>.<r>.tmp`, `r` random, created with `O_EXCL |
//!   O_NOFOLLOW`, so nothing planted is written through, and another name
//!   tried when one is taken) and then hard-linked to the
//!   final name, which fails if the name exists (`EEXIST`: another process won
//!   the race, and its file is complete). Where hard links are not supported,
//!   `renameat2(RENAME_NOREPLACE)` gives the same guarantee.
//! - Files are created with mode 0660, whatever the umask. The directory is
//!   the caller's: [`crate::files::prepare_dir`] creates or checks it first.
//! - Nothing is populated at map time: a mapping costs memory only for the
//!   pages touched. [`Mapping::populate`] (called when a producer attaches,
//!   and by nothing else) makes every page of the file resident and mapped
//!   writable in this process up front (`MADV_POPULATE_WRITE`, or one touch
//!   per page on kernels before 5.14). Callers map a file only after its
//!   header and size were validated from `pread`, so a planted huge or sparse
//!   file costs no memory. A new file is created sparse and only its header
//!   page is written, so two processes racing to create the same queue pay
//!   for one header page each, not for the whole queue.
//!
//! Not guaranteed: a file truncated by someone else while mapped makes accesses
//! past its new end raise `SIGBUS`; nothing in this crate truncates a file.
//! Populating is best effort, as `MAP_POPULATE` is: when the shared-memory
//! file system or the machine is out of memory it stops early, and a later
//! write to a page that could not be allocated raises `SIGBUS`.

use std::fs::{self, File};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::error::QueueError;
use crate::files::{self, FILE_MODE};

/// A shared mapping of a whole file.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a Mapping is an owned address range; mapping, accessing and unmapping
// it is valid from any thread of the process. All access to the memory goes
// through the owners (queue sides, counter pages), which uphold their own rules.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only hands out the base pointer and length; dereferencing
// them is the callers' `unsafe` responsibility.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps all `len` bytes of `file` shared, read-write or read-only.
    pub(crate) fn map(file: &File, len: usize, writable: bool, path: &Path) -> Result<Mapping, QueueError> {
        let nz = NonZeroUsize::new(len).ok_or_else(|| QueueError::SizeMismatch {
            path: path.to_path_buf(),
            expected: 1,
            actual: 0,
        })?;
        let prot = if writable { ProtFlags::PROT_READ | ProtFlags::PROT_WRITE } else { ProtFlags::PROT_READ };
        // Not populated here: only a producer needs the whole ring resident
        // ([`Mapping::populate`]); a consumer reads pages the producer wrote.
        let flags = MapFlags::MAP_SHARED;
        // SAFETY: we ask the kernel for a fresh address range (addr = None), so no
        // existing Rust object is aliased or replaced; the result is only used
        // through raw pointers and atomics bounded by `len`.
        let ptr = unsafe { mmap(None, nz, prot, flags, file, 0) }
            .map_err(|e| QueueError::io(path, "map", io::Error::from(e)))?;
        Ok(Mapping { ptr: ptr.cast::<u8>(), len })
    }

    /// Makes every page of the mapping resident and mapped writable in this
    /// process, so that no later access to it takes a major page fault or
    /// allocates: `MADV_POPULATE_WRITE` (Linux 5.14), else one atomic read per
    /// page (on a shared-memory file a read fault allocates the page too).
    /// Best effort: out of memory, it stops early (as `MAP_POPULATE` does).
    pub(crate) fn populate(&self) {
        self.populate_range(0, self.len);
    }

    /// [`Self::populate`] for the pages that hold bytes `off..off + len` of the
    /// mapping (clamped to it).
    pub(crate) fn populate_range(&self, off: usize, len: usize) {
        let page = page_size();
        let start = off.min(self.len) / page * page;
        let end = off.saturating_add(len).min(self.len);
        if end <= start {
            return;
        }
        let base = self.ptr.as_ptr().wrapping_add(start);
        // SAFETY: `start..end` lies inside this live mapping and `start` is
        // page-aligned; MADV_POPULATE_WRITE only faults pages in, it never
        // changes their contents or the mapping.
        let rc = unsafe { libc::madvise(base.cast(), end - start, libc::MADV_POPULATE_WRITE) };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return;
        }
        for off in (start..end).step_by(page) {
            let at = self.ptr.as_ptr().wrapping_add(off);
            // SAFETY: `off < end <= len`, so `at` is inside the mapping, which lives as
            // long as `self`; the byte is read atomically, as the peer may write it.
            let byte = unsafe { std::sync::atomic::AtomicU8::from_ptr(at) };
            byte.load(std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Advises transparent huge pages for the mapping (`MADV_HUGEPAGE`). Where
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled` is `advise` (or
    /// `within_size`, `always`), shared-memory pages of it are then 2 MiB:
    /// populating or first touching 16 MiB is 8 faults, not 4096, and the TLB
    /// covers the ring. Elsewhere (`never`, the default) it changes nothing.
    /// Best effort: a kernel without THP refuses it, and that is ignored.
    pub(crate) fn advise_huge_pages(&self) {
        // SAFETY: the range is exactly this live mapping; MADV_HUGEPAGE only
        // sets a flag on it, never its contents or its addresses.
        let _ = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, libc::MADV_HUGEPAGE) };
    }

    /// Base address (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; this is the only owner,
        // and every borrow handed out (`&Header`, slot slices) is tied to a
        // borrow of the owner, so none outlives this drop.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping").field("ptr", &self.ptr).field("len", &self.len).finish()
    }
}

/// The system's page size (4096 if it cannot be read).
fn page_size() -> usize {
    // SAFETY: sysconf only reads a system value; it has no pointer arguments.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096)
}

/// Whether [`create_atomically`] made the file or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// This call created the file.
    New,
    /// Another process created it first; it is complete.
    Existed,
}

/// Removes the temporary file when dropped.
struct TempGuard<'a>(&'a Path);

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// Creates `path` with `len` bytes, initialised by `init` through a shared
/// writable mapping, so that other processes see it only when complete. The
/// file is sparse: only the pages `init` writes cost memory.
pub(crate) fn create_atomically(path: &Path, len: usize, init: impl FnOnce(&Mapping)) -> Result<Created, QueueError> {
    // A name of its own, tried again under another name if taken (a
    // leftover, or a name a member of the directory's group made): nothing
    // planted is removed or written through.
    let (file, tmp) = files::create_temp(None, path, FILE_MODE).map_err(|e| QueueError::io(path, "create", e))?;
    let _guard = TempGuard(&tmp);
    file.set_len(len as u64).map_err(|e| QueueError::io(&tmp, "size", e))?;
    {
        let map = Mapping::map(&file, len, true, &tmp)?;
        init(&map);
    }
    drop(file);
    match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(Created::New),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Existed),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => rename_noreplace(&tmp, path),
        Err(e) => Err(QueueError::io(path, "link", e)),
    }
}

/// `renameat2(RENAME_NOREPLACE)`, for file systems without hard links.
fn rename_noreplace(from: &Path, to: &Path) -> Result<Created, QueueError> {
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| QueueError::io(p, "rename", io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL")))
    };
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call.
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, cf.as_ptr(), libc::AT_FDCWD, ct.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(Created::New);
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::AlreadyExists {
        Ok(Created::Existed)
    } else {
        Err(QueueError::io(to, "link", e))
    }
}

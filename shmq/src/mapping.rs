//! Shared file mappings, and race-free creation of fully initialised files.
//!
//! Guarantees:
//! - A [`Mapping`] is a `MAP_SHARED` mapping of a whole file, page-aligned, at
//!   least as long as the file was when mapped, and unmapped exactly once on drop.
//! - [`create_atomically`] never lets another process see a partially written
//!   file under the final name: the file is sized and initialised under a
//!   private temporary name (`.<name>.<pid>-<n>.tmp`) and then hard-linked to the
//!   final name, which fails if the name exists (`EEXIST`: another process won
//!   the race, and its file is complete). Where hard links are not supported,
//!   `renameat2(RENAME_NOREPLACE)` gives the same guarantee.
//! - Directories are created with mode 0770 and files with mode 0660, whatever
//!   the umask.
//!
//! Not guaranteed: a file truncated by someone else while mapped makes accesses
//! past its new end raise `SIGBUS`; nothing in this crate truncates a file.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::num::NonZeroUsize;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::error::QueueError;

/// Mode of queue directories.
pub const DIR_MODE: u32 = 0o770;
/// Mode of queue files and counter pages.
pub const FILE_MODE: u32 = 0o660;

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
        // Writable (producer/consumer) mappings are populated up front: the whole
        // ring is resident from the start (predictable memory, and no page fault
        // ever lands on the packet path). Read-only status mappings are not.
        let flags = if writable { MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE } else { MapFlags::MAP_SHARED };
        // SAFETY: we ask the kernel for a fresh address range (addr = None), so no
        // existing Rust object is aliased or replaced; the result is only used
        // through raw pointers and atomics bounded by `len`.
        let ptr = unsafe { mmap(None, nz, prot, flags, file, 0) }
            .map_err(|e| QueueError::io(path, "map", io::Error::from(e)))?;
        Ok(Mapping { ptr: ptr.cast::<u8>(), len })
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

/// Creates `dir` (and parents) if missing; a directory this call created gets
/// mode 0770 regardless of the umask.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), QueueError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| QueueError::io(dir, "create directory", e))?;
    // The umask may have narrowed the mode. Another user may have created the
    // directory first (then chmod fails with EPERM, and the mode is theirs).
    let _ = fs::set_permissions(dir, Permissions::from_mode(DIR_MODE));
    Ok(())
}

/// Whether [`create_atomically`] made the file or found it already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// This call created the file.
    New,
    /// Another process created it first; it is complete.
    Existed,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}-{}.tmp", std::process::id(), TMP_SEQ.fetch_add(1, Ordering::Relaxed)));
    path.with_file_name(name)
}

/// Removes the temporary file when dropped.
struct TempGuard<'a>(&'a Path);

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_file(self.0);
    }
}

/// Creates `path` with `len` bytes, initialised by `init` through a shared
/// writable mapping, so that other processes see it only when complete.
pub(crate) fn create_atomically(path: &Path, len: usize, init: impl FnOnce(&Mapping)) -> Result<Created, QueueError> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let tmp = temp_path(path);
    let file = match open_new(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left over from a dead process that had our pid; it is not in use.
            let _ = fs::remove_file(&tmp);
            open_new(&tmp)
        }
        other => other,
    }
    .map_err(|e| QueueError::io(&tmp, "create", e))?;
    let _guard = TempGuard(&tmp);
    file.set_permissions(Permissions::from_mode(FILE_MODE)).map_err(|e| QueueError::io(&tmp, "chmod", e))?;
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

fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path)
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

/// Opens an existing file read-write (or read-only) and returns it with its size.
pub(crate) fn open_file(path: &Path, writable: bool) -> Result<(File, u64), QueueError> {
    let file = OpenOptions::new().read(true).write(writable).open(path).map_err(|e| QueueError::io(path, "open", e))?;
    let len = file.metadata().map_err(|e| QueueError::io(path, "stat", e))?.len();
    Ok((file, len))
}

/// Reads up to the first 8 bytes of `file` as a native-endian u64 (0-padded),
/// for error messages about files too short to map.
pub(crate) fn first_word(file: &File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    let _ = file.read_at(&mut b, 0);
    u64::from_ne_bytes(b)
}

//! Pages of named `u64` counters in shared-memory files, written by one
//! process and read by status tools.
//!
//! ```text
//! offset      size    field
//!      0         8    magic b"CJCNTR01"
//!      8         4    layout version (1)
//!     12         4    count
//!     16   32*count    names, UTF-8, NUL-padded to 32 bytes each
//! 16+32*count 8*count  values, u64, 8-byte aligned
//! ```
//!
//! Guarantees: the file is created race-free (initialised under a temporary
//! name, then linked into place) with mode 0660 in a checked directory;
//! opening never follows a symbolic link or blocks, checks the descriptor
//! (regular file, owner for writers, mode; see [`crate::files`]) and then
//! magic, version, a count of at most [`MAX_COUNTERS`] and the size from
//! `pread` before mapping, then the names; a mismatch is a [`QueueError`];
//! names are never written
//! after creation; values are only accessed atomically (Relaxed: each value is
//! exact on its own, but two values read together are not a consistent
//! snapshot). Index out of range is a programming error and panics.

use std::fmt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use std::os::unix::fs::FileExt;

use crate::error::QueueError;
use crate::files::{self, Access};
use crate::mapping::{self, Mapping};

/// `b"CJCNTR01"` as a native-endian u64: the first 8 bytes of a counter page.
pub const COUNTER_MAGIC: u64 = u64::from_le_bytes(*b"CJCNTR01");
/// Layout version of counter pages.
pub const COUNTER_LAYOUT_VERSION: u32 = 1;
/// Longest counter name in bytes.
pub const COUNTER_NAME_LEN: usize = 32;

const VERSION_OFFSET: usize = 8;
const COUNT_OFFSET: usize = 12;
const NAMES_OFFSET: usize = 16;

fn values_offset(count: usize) -> usize {
    NAMES_OFFSET + COUNTER_NAME_LEN * count
}

/// Most counters a page may hold: bounds what a reader maps for a count it
/// finds in a file (a page of this many is 40 KiB).
pub const MAX_COUNTERS: u32 = 1024;

fn page_size(count: u64) -> u64 {
    NAMES_OFFSET as u64 + (COUNTER_NAME_LEN as u64 + 8) * count
}

/// A shared page of named u64 counters written by one process.
pub struct CounterPage {
    map: Mapping,
    path: PathBuf,
    names: Vec<String>,
}

impl fmt::Debug for CounterPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterPage").field("path", &self.path).field("names", &self.names).finish_non_exhaustive()
    }
}

/// The atomic `T` at byte `offset` of `map`.
///
/// # Safety
/// `offset + size_of::<T>() <= map.len()`, `offset` is a multiple of
/// `align_of::<T>()`, and the bytes there are only ever accessed atomically.
unsafe fn atomic_at<T>(map: &Mapping, offset: usize) -> &T {
    // SAFETY: the caller guarantees bounds, alignment (the base is page-aligned) and
    // atomic-only access; T is an atomic integer type, valid for any bit pattern,
    // and the mapping outlives the returned borrow.
    unsafe { &*map.as_ptr().wrapping_add(offset).cast::<T>() }
}

fn check_names(path: &Path, names: &[&str]) -> Result<(), QueueError> {
    let bad = |name: &str, reason| QueueError::CounterName { path: path.to_path_buf(), name: name.to_string(), reason };
    if names.len() > MAX_COUNTERS as usize {
        return Err(bad("", "more than 1024 counters"));
    }
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(bad(name, "empty"));
        }
        if name.len() > COUNTER_NAME_LEN {
            return Err(bad(name, "longer than 32 bytes"));
        }
        if name.contains('\0') {
            return Err(bad(name, "contains NUL"));
        }
        if names[..i].contains(name) {
            return Err(bad(name, "appears twice"));
        }
    }
    Ok(())
}

/// Validates the counter page at `path` (the descriptor, then the header read
/// with `pread`: magic, version, a count of at most [`MAX_COUNTERS`], the size)
/// and only then maps it.
fn open_page(path: &Path, access: Access) -> Result<(Mapping, Vec<String>), QueueError> {
    let (file, len) = files::open_checked(path, access)?;
    let p = || path.to_path_buf();
    if len < NAMES_OFFSET as u64 {
        let found = files::first_word(&file);
        if found != COUNTER_MAGIC {
            return Err(QueueError::NotACounterPage { path: p(), found, expected: COUNTER_MAGIC });
        }
        return Err(QueueError::Corrupt {
            path: p(),
            what: format!("only {len} bytes, shorter than the {NAMES_OFFSET}-byte header"),
        });
    }
    let mut head = [0u8; NAMES_OFFSET];
    file.read_exact_at(&mut head, 0).map_err(|e| QueueError::io(path, "read", e))?;
    let found = u64::from_ne_bytes(std::array::from_fn(|i| head[i]));
    if found != COUNTER_MAGIC {
        return Err(QueueError::NotACounterPage { path: p(), found, expected: COUNTER_MAGIC });
    }
    let u32_at = |o: usize| u32::from_ne_bytes([head[o], head[o + 1], head[o + 2], head[o + 3]]);
    let version = u32_at(VERSION_OFFSET);
    if version != COUNTER_LAYOUT_VERSION {
        return Err(QueueError::VersionMismatch { path: p(), found: version, expected: COUNTER_LAYOUT_VERSION });
    }
    let count = u32_at(COUNT_OFFSET);
    if count > MAX_COUNTERS {
        return Err(QueueError::Corrupt { path: p(), what: format!("{count} counters, more than {MAX_COUNTERS}") });
    }
    let expected = page_size(u64::from(count));
    if expected != len {
        return Err(QueueError::SizeMismatch { path: p(), expected, actual: len });
    }
    // At most page_size(MAX_COUNTERS) bytes, checked above.
    let map = Mapping::map(&file, len as usize, access == Access::Write, path)?;
    let mut names = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let mut raw = [0u8; COUNTER_NAME_LEN];
        let src = map.as_ptr().wrapping_add(NAMES_OFFSET + i * COUNTER_NAME_LEN);
        // SAFETY: the name field lies inside the mapping (size checked above); names
        // are written only before the file is linked into place and never after,
        // so nobody writes them concurrently.
        unsafe { ptr::copy_nonoverlapping(src, raw.as_mut_ptr(), COUNTER_NAME_LEN) };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(COUNTER_NAME_LEN);
        let name = std::str::from_utf8(&raw[..end])
            .map_err(|_| QueueError::Corrupt { path: p(), what: format!("counter name {i} is not UTF-8") })?;
        names.push(name.to_string());
    }
    Ok((map, names))
}

impl CounterPage {
    /// Opens or creates the page with these counter names.
    ///
    /// # Errors
    /// Another layout, other names, an invalid name (empty, over 32 bytes,
    /// containing NUL, repeated), or cannot be created.
    pub fn open_or_create(path: &Path, names: &[&str]) -> Result<CounterPage, QueueError> {
        check_names(path, names)?;
        if let Some(dir) = path.parent() {
            files::prepare_dir(dir)?;
        }
        let (map, found) = match open_page(path, Access::Write) {
            Err(QueueError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
                let len = page_size(names.len() as u64) as usize;
                mapping::create_atomically(path, len, |map| {
                    for (i, name) in names.iter().enumerate() {
                        let dst = map.as_ptr().wrapping_add(NAMES_OFFSET + i * COUNTER_NAME_LEN);
                        // SAFETY: the name field lies inside the fresh mapping of `len`
                        // bytes; name.len() <= 32 (checked); nobody else knows the
                        // temporary file.
                        unsafe { ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len()) };
                    }
                    // SAFETY: offsets 12 and 8 (4 bytes, aligned) and 0 (8 bytes) are
                    // inside the mapping; header words are only accessed atomically.
                    unsafe { atomic_at::<AtomicU32>(map, COUNT_OFFSET) }.store(names.len() as u32, Ordering::Relaxed);
                    // SAFETY: as above.
                    unsafe { atomic_at::<AtomicU32>(map, VERSION_OFFSET) }
                        .store(COUNTER_LAYOUT_VERSION, Ordering::Relaxed);
                    // SAFETY: as above.
                    unsafe { atomic_at::<AtomicU64>(map, 0) }.store(COUNTER_MAGIC, Ordering::Release);
                })?;
                open_page(path, Access::Write)?
            }
            other => other?,
        };
        if found.iter().map(String::as_str).ne(names.iter().copied()) {
            return Err(QueueError::CounterNamesMismatch {
                path: path.to_path_buf(),
                found,
                wanted: names.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(CounterPage { map, path: path.to_path_buf(), names: found })
    }

    /// The counter at `index`.
    ///
    /// # Panics
    /// `index` is not below the number of counters.
    #[inline]
    fn value(&self, index: usize) -> &AtomicU64 {
        assert!(
            index < self.names.len(),
            "counter index {index} out of range for {} ({} counters)",
            self.path.display(),
            self.names.len()
        );
        let offset = values_offset(self.names.len()) + 8 * index;
        // SAFETY: index < count, and open_page checked the file size equals
        // page_size(count), so the 8 bytes are inside the mapping; values_offset is
        // a multiple of 8; values are only ever accessed atomically.
        unsafe { atomic_at::<AtomicU64>(&self.map, offset) }
    }

    /// Adds `n` to counter `index` (wrapping).
    ///
    /// # Panics
    /// `index` is not below the number of counters.
    #[inline]
    pub fn add(&self, index: usize, n: u64) {
        self.value(index).fetch_add(n, Ordering::Relaxed);
    }

    /// Sets counter `index`.
    ///
    /// # Panics
    /// `index` is not below the number of counters.
    #[inline]
    pub fn set(&self, index: usize, v: u64) {
        self.value(index).store(v, Ordering::Relaxed);
    }

    /// Reads counter `index`.
    ///
    /// # Panics
    /// `index` is not below the number of counters.
    #[inline]
    pub fn get(&self, index: usize) -> u64 {
        self.value(index).load(Ordering::Relaxed)
    }

    /// The counter names, in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The file this page lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads every counter of a page by name, through a read-only mapping.
    /// Never follows a symbolic link and never blocks (a FIFO is refused); the
    /// owner is not checked, so a non-root member of the station's group may read.
    ///
    /// # Errors
    /// As [`CounterView::open`].
    pub fn read(path: &Path) -> Result<Vec<(String, u64)>, QueueError> {
        let view = CounterView::open(path)?;
        let values: Vec<u64> = (0..view.names.len()).filter_map(|i| view.get(i)).collect();
        Ok(view.names.into_iter().zip(values).collect())
    }
}

/// A counter page another process writes, opened once for reading (never
/// following a symbolic link, never blocking; the owner is not checked, so a
/// non-root member of the station's group may read), mapped read-only, then
/// each reading one atomic load ([`CounterPage::read`] reads every counter
/// once through one), for a reader that polls a counter often (cj-app reads its
/// workers' `flows_active` every 20 ms while idle: an open, a map and an
/// unmap for each reading cost it more than its own idle waiting did).
///
/// Guarantees: nothing can be written through it (the mapping is read-only
/// and it has no setter); a counter past the page's count reads as `None`.
///
/// Not guaranteed: a page whose file is later replaced (unlinked and made
/// again) is still the old file's: a reader that must follow a new file
/// opens a view again.
pub struct CounterView {
    map: Mapping,
    names: Vec<String>,
}

impl fmt::Debug for CounterView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterView").field("names", &self.names.len()).finish()
    }
}

impl CounterView {
    /// Opens the page at `path` for reading.
    ///
    /// # Errors
    /// Missing file, not a regular file, open to others, or not a counter page.
    pub fn open(path: &Path) -> Result<CounterView, QueueError> {
        let (map, names) = open_page(path, Access::Read)?;
        Ok(CounterView { map, names })
    }

    /// The index of the counter named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Reads counter `index` (None past the page's count).
    #[inline]
    pub fn get(&self, index: usize) -> Option<u64> {
        if index >= self.names.len() {
            return None;
        }
        // SAFETY: index < count and the size was checked at open, so the value is
        // inside the mapping, 8-byte aligned, and only ever accessed atomically (a
        // Relaxed atomic load from a read-only mapping is allowed).
        let v = unsafe { atomic_at::<AtomicU64>(&self.map, values_offset(self.names.len()) + 8 * index) };
        Some(v.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reads_each_counter_as_the_writer_sets_it_and_nothing_past_the_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("page");
        let page = CounterPage::open_or_create(&path, &["a", "flows_active", "c"]).unwrap();
        let view = CounterView::open(&path).unwrap();
        let i = view.index_of("flows_active").unwrap();
        assert_eq!((i, view.index_of("missing")), (1, None));
        assert_eq!(view.get(i), Some(0));
        // Written after the view was opened: one mapping, every reading current.
        page.set(1, 1_000_000);
        page.add(2, 7);
        assert_eq!((view.get(0), view.get(1), view.get(2), view.get(3)), (Some(0), Some(1_000_000), Some(7), None));
        assert!(CounterView::open(&dir.path().join("none")).is_err());
    }

    #[test]
    fn counters_roundtrip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/counters");
        let names = ["rx_packets", "rx_bytes", "dropped_full"];
        let page = CounterPage::open_or_create(&path, &names).unwrap();
        page.add(0, 5);
        page.add(0, 2);
        page.set(1, 1500);
        page.add(2, 1);
        assert_eq!((page.get(0), page.get(1), page.get(2)), (7, 1500, 1));
        let again = CounterPage::open_or_create(&path, &names).unwrap();
        again.add(2, 1);
        assert_eq!(page.get(2), 2, "both mappings see the same memory");
        let read = CounterPage::read(&path).unwrap();
        assert_eq!(
            read,
            vec![("rx_packets".to_string(), 7), ("rx_bytes".to_string(), 1500), ("dropped_full".to_string(), 2)]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let dmode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dmode, 0o770);
    }

    #[test]
    fn counters_name_mismatch_and_invalid_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters");
        CounterPage::open_or_create(&path, &["a", "b"]).unwrap();
        let e = CounterPage::open_or_create(&path, &["a", "c"]).unwrap_err();
        assert!(matches!(e, QueueError::CounterNamesMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("[a, b]") && msg.contains("[a, c]"), "{msg}");
        assert!(!msg.contains('\n'));
        let long = "x".repeat(33);
        for bad in [vec![""], vec![long.as_str()], vec!["a\0"], vec!["a", "a"]] {
            let e = CounterPage::open_or_create(&dir.path().join("other"), &bad).unwrap_err();
            assert!(matches!(e, QueueError::CounterName { .. }), "{e}");
        }
        // A 32-byte name fits exactly.
        let exact = "y".repeat(32);
        let p = CounterPage::open_or_create(&dir.path().join("exact"), &[exact.as_str()]).unwrap();
        assert_eq!(p.names(), &[exact]);
    }

    #[test]
    fn counters_reject_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        let write = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(crate::FILE_MODE)).unwrap();
        };
        write(b"hello, world, this is not a page");
        let e = CounterPage::read(&path).unwrap_err();
        assert!(matches!(e, QueueError::NotACounterPage { .. }), "{e}");
        write(b"tiny");
        let e = CounterPage::open_or_create(&path, &["a"]).unwrap_err();
        assert!(matches!(e, QueueError::NotACounterPage { .. }), "{e}");
        let e = CounterPage::read(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, QueueError::Io { .. }), "{e}");
        // A valid page cut short is a size mismatch, not a crash.
        let good = dir.path().join("good");
        CounterPage::open_or_create(&good, &["a", "b"]).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&good).unwrap();
        f.set_len(page_size(2) - 8).unwrap();
        let e = CounterPage::read(&good).unwrap_err();
        assert!(matches!(e, QueueError::SizeMismatch { .. }), "{e}");
    }

    #[test]
    #[should_panic(expected = "counter index 2 out of range")]
    fn counters_index_out_of_range_panics() {
        let dir = tempfile::tempdir().unwrap();
        let page = CounterPage::open_or_create(&dir.path().join("c"), &["a", "b"]).unwrap();
        page.add(2, 1);
    }
}

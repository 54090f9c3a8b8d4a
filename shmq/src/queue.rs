//! Queue files: creating, opening and validating them, the shared ring view
//! both sides use, and the counters anyone can read.
//!
//! Guarantees:
//! - [`QueueFile::open_or_create`] is race-free across processes: whoever comes
//!   first creates a fully initialised file, everyone else opens that file.
//! - Opening never follows a symbolic link or blocks, and checks the file on
//!   its descriptor (regular file, owner, mode; see [`crate::files`]) and then
//!   the header read with `pread` (magic, layout version, spec, file size equal
//!   to the spec's, `head <= tail <= head + capacity`) before the file is
//!   mapped: a hostile, huge or sparse file is refused without costing memory.
//!   A writable queue (a producer populates it whole when it attaches) larger
//!   than the machine's physical memory is refused with the figure. Every refusal is a [`QueueError`] whose message
//!   names the file, the difference and the fix.
//! - After a successful open, every slot address computed by [`Ring::slot`] lies
//!   inside the mapping, whatever the (possibly corrupt) indices say.
//!
//! Not guaranteed: the indices are validated once, at open; afterwards a peer
//! that writes nonsense cannot make an access leave the mapping (slot indices
//! are masked) but can make the other side read stale slots. The sum of all
//! queues' sizes is not checked against memory, only each queue's.
//! Single producer / single consumer is not enforced across
//! processes. Each queue must have at most one attached producer and one
//! attached consumer at a time (the deployment gives each queue to one
//! balancer thread and one worker); [`QueueStats`] shows the last pids.

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::consumer::Consumer;
use crate::error::QueueError;
use crate::files::{self, Access};
use crate::header::{Header, HeaderImage, HEADER_SIZE, QUEUE_LAYOUT_VERSION, QUEUE_MAGIC, SLOT_PREFIX};
use crate::mapping::{self, Mapping};
use crate::producer::Producer;
use crate::spec::QueueSpec;

/// Counters of a queue, readable at any time by anyone who can open the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages published by producers.
    pub enqueued: u64,
    /// Messages the producer dropped because the queue was full.
    pub dropped: u64,
    /// Messages released by consumers.
    pub dequeued: u64,
    /// Slots.
    pub capacity: u64,
    /// The producer marked the end of the stream.
    pub closed: bool,
    /// Pid of the last producer to attach (0: none yet).
    pub producer_pid: u32,
    /// Pid of the last consumer to attach.
    pub consumer_pid: u32,
    /// How many times a producer attached.
    pub producer_attaches: u32,
    /// How many times a consumer attached.
    pub consumer_attaches: u32,
}

impl QueueStats {
    /// Messages published but not yet released (the queue's fill).
    pub fn in_flight(&self) -> u64 {
        self.enqueued.saturating_sub(self.dequeued)
    }
}

/// The mapped queue file, shared by [`QueueFile`], [`Producer`] and [`Consumer`].
pub(crate) struct Ring {
    map: Mapping,
    path: PathBuf,
    spec: QueueSpec,
    mask: u64,
    slot_size: usize,
    payload_size: usize,
}

impl Ring {
    /// Opens and validates the queue at `path`; with `wanted`, also checks the spec.
    ///
    /// Everything is checked before the file is mapped: the descriptor (type,
    /// owner, mode: [`files::open_checked`]), then the header as read with
    /// `pread` (magic, version, spec, file size, indices), then, for a writable
    /// mapping (a producer's is populated), the size against physical memory.
    fn open(path: &Path, wanted: Option<QueueSpec>, access: Access) -> Result<Ring, QueueError> {
        let (file, len) = files::open_checked(path, access)?;
        let p = || path.to_path_buf();
        if len < HEADER_SIZE as u64 {
            let found = files::first_word(&file);
            if found != QUEUE_MAGIC {
                return Err(QueueError::NotAQueue { path: p(), found, expected: QUEUE_MAGIC });
            }
            return Err(QueueError::Corrupt {
                path: p(),
                what: format!("only {len} bytes, shorter than the {HEADER_SIZE}-byte header"),
            });
        }
        let h = HeaderImage::read(&file).map_err(|e| QueueError::io(path, "read", e))?;
        if h.magic != QUEUE_MAGIC {
            return Err(QueueError::NotAQueue { path: p(), found: h.magic, expected: QUEUE_MAGIC });
        }
        if h.version != QUEUE_LAYOUT_VERSION {
            return Err(QueueError::VersionMismatch { path: p(), found: h.version, expected: QUEUE_LAYOUT_VERSION });
        }
        let spec = QueueSpec { slot_size: h.slot_size, capacity: h.capacity };
        if let Err(reason) = spec.check() {
            return Err(QueueError::Corrupt {
                path: p(),
                what: format!("header says slot_size {} and capacity {}: {reason}", spec.slot_size, spec.capacity),
            });
        }
        if let Some(w) = wanted {
            if w != spec {
                return Err(QueueError::SpecMismatch {
                    path: p(),
                    found_slot_size: spec.slot_size,
                    found_capacity: spec.capacity,
                    wanted_slot_size: w.slot_size,
                    wanted_capacity: w.capacity,
                });
            }
        }
        if spec.file_size() != len {
            return Err(QueueError::SizeMismatch { path: p(), expected: spec.file_size(), actual: len });
        }
        if h.head > h.tail {
            return Err(QueueError::Corrupt {
                path: p(),
                what: format!("consumer index {} is past producer index {}", h.head, h.tail),
            });
        }
        if h.tail - h.head > u64::from(spec.capacity) {
            return Err(QueueError::Corrupt {
                path: p(),
                what: format!(
                    "producer index {} is {} past consumer index {}, more than the capacity {}",
                    h.tail,
                    h.tail - h.head,
                    h.head,
                    spec.capacity
                ),
            });
        }
        if access == Access::Write {
            check_memory(path, len)?;
        }
        // `spec.check()` passed, so the size fits in usize.
        let map_len = usize::try_from(len).map_err(|_| QueueError::Corrupt {
            path: p(),
            what: format!("{len} bytes cannot be mapped on this machine"),
        })?;
        let map = Mapping::map(&file, map_len, access == Access::Write, path)?;
        if access == Access::Write {
            // Before a producer populates: where shared memory may use
            // transparent huge pages on advice, the ring gets 2 MiB pages.
            map.advise_huge_pages();
        }
        Ok(Ring {
            map,
            path: p(),
            spec,
            mask: u64::from(spec.capacity) - 1,
            slot_size: spec.slot_size as usize,
            payload_size: spec.payload_size(),
        })
    }

    /// Every page resident and mapped writable in this process (the producer's
    /// attach; see [`Mapping::populate`]).
    pub(crate) fn populate(&self) {
        self.map.populate();
    }

    /// The pages of the `n` slots from position `from` on (wrapping; the
    /// whole ring when `n` reaches its capacity) resident and mapped writable
    /// in this process, and the header's page.
    pub(crate) fn populate_slots(&self, from: u64, n: u64) {
        let capacity = self.mask + 1;
        if n >= capacity {
            return self.populate();
        }
        self.map.populate_range(0, HEADER_SIZE);
        let idx = (from & self.mask) as usize;
        let n = n as usize;
        let first = n.min(capacity as usize - idx);
        self.map.populate_range(HEADER_SIZE + idx * self.slot_size, first * self.slot_size);
        self.map.populate_range(HEADER_SIZE, (n - first) * self.slot_size);
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned and exactly the file's size, which
        // `open` checked equals `spec.file_size()` >= HEADER_SIZE bytes; Header consists only of atomics, so a shared reference
        // is sound while other processes write it; it lives as long as `self.map`.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// Start of the slot holding position `pos`. Always inside the mapping:
    /// `pos & mask < capacity` and the file size was checked against the spec.
    pub(crate) fn slot(&self, pos: u64) -> *mut u8 {
        let idx = (pos & self.mask) as usize;
        debug_assert!(HEADER_SIZE + (idx + 1) * self.slot_size <= self.map.len());
        self.map.as_ptr().wrapping_add(HEADER_SIZE + idx * self.slot_size)
    }

    /// The length word at the start of a slot.
    pub(crate) fn len_word(&self, slot: *mut u8) -> &AtomicU32 {
        // SAFETY: `slot` comes from `Ring::slot`: inside the mapping (which outlives
        // the returned borrow of self), 8-byte aligned (page-aligned base, HEADER_SIZE
        // and slot_size multiples of 8), and this crate accesses length words only
        // atomically.
        unsafe { AtomicU32::from_ptr(slot.cast::<u32>()) }
    }

    /// Start of a slot's payload (`payload_size` bytes, inside the mapping).
    pub(crate) fn payload(&self, slot: *mut u8) -> *mut u8 {
        slot.wrapping_add(SLOT_PREFIX)
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.mask + 1
    }

    pub(crate) fn payload_size(&self) -> usize {
        self.payload_size
    }

    pub(crate) fn spec(&self) -> QueueSpec {
        self.spec
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn stats(&self) -> QueueStats {
        let h = self.header();
        let dequeued = h.consumer.0.head.load(Ordering::Relaxed);
        let closed = h.closed.load(Ordering::Relaxed) != 0;
        fence(Ordering::Acquire);
        QueueStats {
            enqueued: h.producer.0.enqueued.load(Ordering::Relaxed),
            dropped: h.producer.0.dropped.load(Ordering::Relaxed),
            dequeued,
            capacity: self.capacity(),
            closed,
            producer_pid: h.producer_pid.load(Ordering::Relaxed),
            consumer_pid: h.consumer_pid.load(Ordering::Relaxed),
            producer_attaches: h.producer_attaches.load(Ordering::Relaxed),
            consumer_attaches: h.consumer_attaches.load(Ordering::Relaxed),
        }
    }
}

/// Refuses a file of `bytes` that would not fit in physical memory once populated.
fn check_memory(path: &Path, bytes: u64) -> Result<(), QueueError> {
    match files::physical_memory() {
        Some(physical) if bytes > physical => {
            Err(QueueError::TooBigForMemory { path: path.to_path_buf(), bytes, physical })
        }
        _ => Ok(()),
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("path", &self.path).field("spec", &self.spec).finish_non_exhaustive()
    }
}

/// An opened queue file, not yet attached as producer or consumer.
#[derive(Debug)]
pub struct QueueFile {
    ring: Ring,
}

/// An end of a queue ([`QueueFile::lock_end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The one process that pushes.
    Producer = 0,
    /// The one process that pops.
    Consumer = 1,
}

/// This process's claim on one end of a queue, held while it lives
/// ([`QueueFile::lock_end`]).
#[derive(Debug)]
pub struct EndLock {
    _file: std::fs::File,
}

impl QueueFile {
    /// Opens the queue at `path`, creating it (and its directory) if absent.
    ///
    /// Creation is race-free: the file is initialised under a temporary name
    /// and hard-linked into place, so concurrent callers all end up with the same
    /// complete file. The directory is created with mode 0770, or checked if it
    /// exists ([`crate::files::prepare_dir`]); files get mode 0660.
    ///
    /// # Errors
    /// The spec is invalid or larger than physical memory; the directory or the
    /// file fails the safety checks; the file exists with another layout or
    /// spec, is not a queue, or cannot be created.
    pub fn open_or_create(path: &Path, spec: QueueSpec) -> Result<QueueFile, QueueError> {
        spec.check().map_err(|reason| QueueError::InvalidSpec {
            path: path.to_path_buf(),
            slot_size: spec.slot_size,
            capacity: spec.capacity,
            reason,
        })?;
        check_memory(path, spec.file_size())?;
        if let Some(dir) = path.parent() {
            files::prepare_dir(dir)?;
        }
        match Ring::open(path, Some(spec), Access::Write) {
            Err(QueueError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {}
            other => return other.map(|ring| QueueFile { ring }),
        }
        let len = usize::try_from(spec.file_size()).map_err(|_| QueueError::InvalidSpec {
            path: path.to_path_buf(),
            slot_size: spec.slot_size,
            capacity: spec.capacity,
            reason: crate::error::SpecError::TooLarge,
        })?;
        mapping::create_atomically(path, len, |map| {
            // SAFETY: the temporary mapping is page-aligned and `len >= HEADER_SIZE`;
            // Header consists only of atomics; nobody else knows the temporary file.
            let h = unsafe { &*map.as_ptr().cast::<Header>() };
            h.slot_size.store(spec.slot_size, Ordering::Relaxed);
            h.capacity.store(spec.capacity, Ordering::Relaxed);
            h.version.store(QUEUE_LAYOUT_VERSION, Ordering::Relaxed);
            h.magic.store(QUEUE_MAGIC, Ordering::Release);
        })?;
        Ring::open(path, Some(spec), Access::Write).map(|ring| QueueFile { ring })
    }

    /// Opens an existing queue of any spec (its directory and the file checked
    /// as by [`Self::open_or_create`]).
    ///
    /// # Errors
    /// Missing file, an unsafe directory or file, not a queue, another layout
    /// version, or a corrupt header.
    pub fn open_existing(path: &Path) -> Result<QueueFile, QueueError> {
        if let Some(dir) = path.parent() {
            files::check_dir(dir)?;
        }
        Ring::open(path, None, Access::Write).map(|ring| QueueFile { ring })
    }

    /// Reads the spec and counters of the queue at `path` through a read-only
    /// mapping (for status tools that may not write the file). Never follows a
    /// symbolic link and never blocks (a FIFO is refused); the owner is not
    /// checked, so a non-root member of the station's group may read.
    ///
    /// # Errors
    /// Missing file, not a regular file, open to others, not a queue, another
    /// layout version, or a corrupt header.
    pub fn read_stats(path: &Path) -> Result<(QueueSpec, QueueStats), QueueError> {
        let ring = Ring::open(path, None, Access::Read)?;
        Ok((ring.spec(), ring.stats()))
    }

    /// Claims one end of this queue for this process, until the returned
    /// lock is dropped (or the process ends, however it ends): an open file
    /// description of the queue file with an OFD write lock on that end's
    /// byte of the header (0: producer, 1: consumer), so the two ends never
    /// contend and a process may hold both. Call it before attaching that
    /// end: a queue has one producer and one consumer (module docs), and a
    /// second process attached as either end corrupts it.
    ///
    /// # Errors
    /// [`QueueError::EndTaken`] when another open file description holds it
    /// (another process is that end now); the file fails its checks or the
    /// lock cannot be asked for.
    pub fn lock_end(&self, end: End) -> Result<EndLock, QueueError> {
        let path = self.path();
        let (file, _) = files::open_checked(path, files::Access::Write)?;
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: end as libc::off_t,
            l_len: 1,
            l_pid: 0,
        };
        match nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(EndLock { _file: file }),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                let st = self.stats();
                let (name, pid) = match end {
                    End::Producer => ("producer", st.producer_pid),
                    End::Consumer => ("consumer", st.consumer_pid),
                };
                Err(QueueError::EndTaken { path: path.to_path_buf(), end: name, pid })
            }
            Err(e) => Err(QueueError::io(path, "fcntl(F_OFD_SETLK)", std::io::Error::from(e))),
        }
    }

    /// The queue's spec.
    pub fn spec(&self) -> QueueSpec {
        self.ring.spec()
    }

    /// The file this queue lives in.
    pub fn path(&self) -> &Path {
        self.ring.path()
    }

    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        self.ring.stats()
    }

    /// Attaches as the producer: records this pid, counts the attach, clears
    /// `closed`, and continues at the stored producer index (anything a
    /// previous producer pushed but never published is gone; everything it
    /// published stays queued). Populates the whole file first: no push
    /// takes a page fault.
    pub fn into_producer(self) -> Producer {
        Producer::attach(self.ring, u64::MAX)
    }

    /// [`Self::into_producer`] without populating: a page is allocated when
    /// a push first writes it (a page fault on the push). For a producer
    /// whose pushes may wait, as one reading a file: a tiny input then costs
    /// the pages it fills, not the whole ring.
    pub fn into_producer_unpopulated(self) -> Producer {
        Producer::attach(self.ring, 0)
    }

    /// [`Self::into_producer`] for a producer that will push at most `bound`
    /// messages, as one reading a file of known size: only the slots those
    /// pushes write (from the stored producer index on, at most the whole ring)
    /// are made resident now, so a short input costs the pages it can fill and
    /// a long one takes no page fault on a push.
    pub fn into_producer_for(self, bound: u64) -> Producer {
        Producer::attach(self.ring, bound)
    }

    /// Attaches as the consumer, continuing at the stored consumer index.
    ///
    /// Delivery is exactly-once for released messages and at-least-once for
    /// messages a previous consumer popped but did not release before it died:
    /// those are delivered again, in order, with nothing skipped.
    pub fn into_consumer(self) -> Consumer {
        Consumer::attach(self.ring)
    }
}

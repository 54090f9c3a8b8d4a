//! Queue files: creating, opening and validating them, the shared ring view
//! both sides use, and the counters anyone can read.
//!
//! Guarantees:
//! - [`QueueFile::open_or_create`] is race-free across processes: whoever comes
//!   first creates a fully initialised file, everyone else opens that file.
//! - Opening checks the magic, the layout version, the spec, the file size and
//!   the index order before any slot is touched; every mismatch is a
//!   [`QueueError`] whose message names the file, the difference and the fix.
//! - After a successful open, every slot address computed by [`Ring::slot`] lies
//!   inside the mapping, whatever the (possibly corrupt) indices say.
//!
//! Not guaranteed: single producer / single consumer is not enforced across
//! processes. Each queue must have at most one attached producer and one
//! attached consumer at a time (the deployment gives each queue to one
//! balancer thread and one worker); [`QueueStats`] shows the last pids.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, Ordering};

use crate::consumer::Consumer;
use crate::error::QueueError;
use crate::header::{Header, HEADER_SIZE, QUEUE_LAYOUT_VERSION, QUEUE_MAGIC, SLOT_PREFIX};
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
    fn open(path: &Path, wanted: Option<QueueSpec>, writable: bool) -> Result<Ring, QueueError> {
        let (file, len) = mapping::open_file(path, writable)?;
        let p = || path.to_path_buf();
        if len < HEADER_SIZE as u64 {
            let found = mapping::first_word(&file);
            if found != QUEUE_MAGIC {
                return Err(QueueError::NotAQueue { path: p(), found, expected: QUEUE_MAGIC });
            }
            return Err(QueueError::Corrupt {
                path: p(),
                what: format!("only {len} bytes, shorter than the {HEADER_SIZE}-byte header"),
            });
        }
        let map_len = usize::try_from(len).map_err(|_| QueueError::Corrupt {
            path: p(),
            what: format!("{len} bytes cannot be mapped on this machine"),
        })?;
        let map = Mapping::map(&file, map_len, writable, path)?;
        // SAFETY: the mapping is page-aligned and at least HEADER_SIZE bytes (checked
        // above); Header consists only of atomics, so a shared reference is sound
        // while other processes write it.
        let h = unsafe { &*map.as_ptr().cast::<Header>() };
        // Relaxed loads then an Acquire fence, here and in `stats`: the mapping
        // may be read-only (status tools), where only Relaxed atomic loads are
        // allowed; the fence gives the same ordering as Acquire loads would.
        let found = h.magic.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if found != QUEUE_MAGIC {
            return Err(QueueError::NotAQueue { path: p(), found, expected: QUEUE_MAGIC });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != QUEUE_LAYOUT_VERSION {
            return Err(QueueError::VersionMismatch { path: p(), found: version, expected: QUEUE_LAYOUT_VERSION });
        }
        let spec =
            QueueSpec { slot_size: h.slot_size.load(Ordering::Relaxed), capacity: h.capacity.load(Ordering::Relaxed) };
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
        // Head first: head(t1) <= tail(t1) <= tail(t2) holds in any valid queue.
        let head = h.consumer.0.head.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let tail = h.producer.0.tail.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if head > tail {
            return Err(QueueError::Corrupt {
                path: p(),
                what: format!("consumer index {head} is past producer index {tail}"),
            });
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

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: `open` checked the mapping is page-aligned and at least
        // HEADER_SIZE bytes; Header consists only of atomics, so a shared reference
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

impl QueueFile {
    /// Opens the queue at `path`, creating it (and its directory) if absent.
    ///
    /// Creation is race-free: the file is initialised under a temporary name
    /// and hard-linked into place, so concurrent callers all end up with the same
    /// complete file. Directories get mode 0770, files 0660.
    ///
    /// # Errors
    /// The file exists with another layout or spec, is not a queue, or cannot be created.
    pub fn open_or_create(path: &Path, spec: QueueSpec) -> Result<QueueFile, QueueError> {
        spec.check().map_err(|reason| QueueError::InvalidSpec {
            path: path.to_path_buf(),
            slot_size: spec.slot_size,
            capacity: spec.capacity,
            reason,
        })?;
        match Ring::open(path, Some(spec), true) {
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
        Ring::open(path, Some(spec), true).map(|ring| QueueFile { ring })
    }

    /// Opens an existing queue of any spec.
    ///
    /// # Errors
    /// Missing file, not a queue, or another layout version.
    pub fn open_existing(path: &Path) -> Result<QueueFile, QueueError> {
        Ring::open(path, None, true).map(|ring| QueueFile { ring })
    }

    /// Reads the spec and counters of the queue at `path` through a read-only
    /// mapping (for status tools that may not write the file).
    ///
    /// # Errors
    /// Missing file, not a queue, or another layout version.
    pub fn read_stats(path: &Path) -> Result<(QueueSpec, QueueStats), QueueError> {
        let ring = Ring::open(path, None, false)?;
        Ok((ring.spec(), ring.stats()))
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
    /// published stays queued).
    pub fn into_producer(self) -> Producer {
        Producer::attach(self.ring)
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

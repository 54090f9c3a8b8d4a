//! Errors of creating, opening and validating queue files and counter pages.
//!
//! Guarantees: every failure while setting up a queue or a counter page is one
//! of these variants (nothing in this crate panics or causes undefined behaviour
//! on a foreign, stale or corrupt file), and every variant's `Display` is a
//! single line that names the file, says what differs, and says how to fix it.
//! The hot-path errors ([`crate::Full`]) are zero-sized and live elsewhere.

use std::io;
use std::path::PathBuf;

const GIB: f64 = (1u64 << 30) as f64;

/// Why a [`crate::QueueSpec`] cannot describe a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `slot_size` is below 16 bytes (8 for the length word, 8 of payload).
    #[error("slot_size must be at least 16 bytes")]
    SlotTooSmall,
    /// `slot_size` is not a multiple of 8.
    #[error("slot_size must be a multiple of 8")]
    SlotNotMultipleOf8,
    /// `capacity` is zero or not a power of two.
    #[error("capacity must be a power of two (1, 2, 4, ...)")]
    CapacityNotPowerOfTwo,
    /// `slot_size * capacity` does not fit in this machine's address space.
    #[error("slot_size * capacity is too large to map")]
    TooLarge,
}

/// Errors opening or creating queues and counter pages.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Any other failure, described in words.
    #[error("{0}")]
    Other(String),

    /// A system call on `path` failed.
    #[error(
        "cannot {op} {}: {cause} (check that the queue directory exists or can be created, \
         and is writable by every station process: mode 0770, same group)",
        path.display()
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("open", "create", "map", ...).
        op: &'static str,
        /// The operating system's error.
        cause: io::Error,
    },

    /// The requested spec (or the spec stored in a file) is not valid.
    #[error(
        "invalid queue spec for {}: slot_size {slot_size}, capacity {capacity}: {reason}; \
         set CJ_SLOT_SIZE to a multiple of 8 of at least 16 and CJ_QUEUE_SLOTS to a power of two",
        path.display()
    )]
    InvalidSpec {
        /// The queue file.
        path: PathBuf,
        /// Slot size asked for (or found).
        slot_size: u32,
        /// Capacity asked for (or found).
        capacity: u32,
        /// What is wrong with it.
        reason: SpecError,
    },

    /// A file or directory in the shared place fails the safety checks: a
    /// symbolic link, not a regular file (or not a directory), owned by another
    /// user, or open to other users.
    #[error("refusing {}: {problem} (owner uid {uid}, mode {mode:04o}); {fix}", path.display())]
    Unsafe {
        /// The file or directory.
        path: PathBuf,
        /// Its owner (of the link itself, for a symbolic link).
        uid: u32,
        /// Its permission bits.
        mode: u32,
        /// What is wrong, in words.
        problem: String,
        /// How to fix it.
        fix: String,
    },

    /// The queue would need more memory than the machine has.
    #[error(
        "{} would need {bytes} bytes ({:.1} GiB) of memory but this machine has {physical} bytes \
         ({:.1} GiB); lower CJ_QUEUE_SLOTS, CJ_RECORD_QUEUE_SLOTS or CJ_SLOT_SIZE",
        path.display(),
        *bytes as f64 / GIB,
        *physical as f64 / GIB
    )]
    TooBigForMemory {
        /// The queue file.
        path: PathBuf,
        /// Its size (header and every slot).
        bytes: u64,
        /// This machine's physical memory.
        physical: u64,
    },

    /// The file does not start with the queue magic.
    #[error(
        "{} is not a shmq queue file (first 8 bytes {found:#018x}, expected {expected:#018x}); \
         remove it or point the queue directory elsewhere",
        path.display()
    )]
    NotAQueue {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes read as a native-endian u64 (0 when shorter).
        found: u64,
        /// The queue magic.
        expected: u64,
    },

    /// The file is a queue of another layout version.
    #[error(
        "{} has queue layout version {found} but this build uses version {expected}; \
         stop every process using it and remove the stale queue directory",
        path.display()
    )]
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// Version stored in the file.
        found: u32,
        /// Version of this build.
        expected: u32,
    },

    /// The file is a queue with another slot size or capacity.
    #[error(
        "{} has slot_size {found_slot_size} and capacity {found_capacity} but this process wants \
         slot_size {wanted_slot_size} and capacity {wanted_capacity}; remove the stale queue \
         directory or use the same CJ_SLOT_SIZE/CJ_QUEUE_SLOTS in every process",
        path.display()
    )]
    SpecMismatch {
        /// The file.
        path: PathBuf,
        /// Slot size stored in the file.
        found_slot_size: u32,
        /// Capacity stored in the file.
        found_capacity: u32,
        /// Slot size this process asked for.
        wanted_slot_size: u32,
        /// Capacity this process asked for.
        wanted_capacity: u32,
    },

    /// The file's size does not match what its header describes.
    #[error(
        "{} is {actual} bytes but its header describes {expected} bytes (truncated or corrupt); \
         stop every process using it and remove the stale file",
        path.display()
    )]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size the header implies.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },

    /// Another process holds this end of the queue ([`crate::QueueFile::lock_end`]).
    #[error(
        "{}: another process (pid {pid} attached last) is its {end} now, and two would corrupt it: stop that one \
         first, or give this one another CJ_CLUSTER_ID or CJ_SHM_DIR",
        path.display()
    )]
    EndTaken {
        /// The queue file.
        path: PathBuf,
        /// `producer` or `consumer`.
        end: &'static str,
        /// The pid the header names for that end (0: none).
        pid: u32,
    },

    /// The header holds impossible values.
    #[error("{} is corrupt: {what}; stop every process using it and remove the stale file", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is impossible.
        what: String,
    },

    /// The file does not start with the counter-page magic.
    #[error(
        "{} is not a shmq counter page (first 8 bytes {found:#018x}, expected {expected:#018x}); \
         remove it or point the counter path elsewhere",
        path.display()
    )]
    NotACounterPage {
        /// The file.
        path: PathBuf,
        /// The first 8 bytes read as a native-endian u64 (0 when shorter).
        found: u64,
        /// The counter-page magic.
        expected: u64,
    },

    /// A counter page exists with other counter names.
    #[error(
        "{} holds counters [{}] but this process wants [{}]; remove the stale counter page \
         (it is recreated on start) or run the same build in every process",
        path.display(),
        .found.join(", "),
        .wanted.join(", ")
    )]
    CounterNamesMismatch {
        /// The file.
        path: PathBuf,
        /// Names stored in the file.
        found: Vec<String>,
        /// Names this process asked for.
        wanted: Vec<String>,
    },

    /// A counter name cannot be stored.
    #[error(
        "counter name {name:?} for {} is invalid: {reason}; use 1 to 32 bytes without NUL, \
         each name once",
        path.display()
    )]
    CounterName {
        /// The file.
        path: PathBuf,
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl QueueError {
    pub(crate) fn io(path: &std::path::Path, op: &'static str, cause: io::Error) -> Self {
        QueueError::Io { path: path.to_path_buf(), op, cause }
    }
}

//! Cross-process single-producer single-consumer queues in shared-memory files,
//! and pages of named counters.
//!
//! A queue is one file (under `/dev/shm/conjure-<cluster>/` in production): a
//! `#[repr(C)]` header page followed by `capacity` fixed-size slots (see
//! [`header`] for the exact layout). Open it with [`QueueFile::open_or_create`],
//! then attach as [`Producer`] or [`Consumer`]:
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("q");
//! use shmq::{QueueFile, QueueSpec, QueueState};
//! let spec = QueueSpec { slot_size: 64, capacity: 1024 };
//! let mut tx = QueueFile::open_or_create(&path, spec)?.into_producer();
//! let mut rx = QueueFile::open_or_create(&path, spec)?.into_consumer();
//! tx.push(b"hello").unwrap();
//! tx.publish();                         // one Release store per batch
//! assert_eq!(rx.pop_with(|m| m.to_vec()), Some(b"hello".to_vec()));
//! rx.release();                         // one Release store per batch
//! tx.close();
//! assert_eq!(rx.state(), QueueState::Ended);
//! # Ok::<(), shmq::QueueError>(())
//! ```
//!
//! Guarantees:
//! - Published messages are delivered in order, none lost, none duplicated
//!   while the consumer lives; across consumer restarts delivery is
//!   exactly-once for released messages and at-least-once for popped but
//!   unreleased ones (they are delivered again, in order).
//! - Producers and consumers may restart independently and continue at the
//!   stored indices; nothing published is lost.
//! - A stale, foreign or corrupt file is a [`QueueError`], never undefined
//!   behaviour or a panic; a corrupt length word is clamped and counted.
//! - Files in the shared directory are hostile until checked ([`files`]): the
//!   directory is created with mode 0770 or must be a real directory owned by
//!   this user or root and not writable by others; files are opened without
//!   following links or blocking and checked on the descriptor (regular, owner,
//!   not open to others); headers are validated from `pread` before anything
//!   is mapped, so a planted file costs no memory.
//! - Nothing in shared memory is behind a Rust reference that a peer may write,
//!   except atomics and slots owned by the ring protocol.
//! - Push, publish, pop and release never allocate, lock or make system calls.
//! - Memory: creating a queue writes its header page only (the file is
//!   sparse); a producer makes the whole file resident when it attaches, so
//!   no push takes a page fault; a consumer maps it without populating and
//!   holds only the pages it has read.
//!
//! Callers must: attach at most one producer and one consumer per queue at a
//! time (across processes, [`QueueFile::lock_end`] claims an end: the station's
//! binaries take it before attaching, so a second one is refused in one line);
//! publish/release per batch (a push
//! that finds the queue full publishes, a pop that finds it empty releases, so
//! waiting after `Full`/`None` never deadlocks); never truncate a mapped file.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

mod consumer;
mod counters;
mod error;
pub mod files;
pub mod header;
mod mapping;
mod producer;
mod queue;
mod spec;
mod wait;

pub use consumer::{Consumer, QueueState};
pub use counters::{CounterPage, CounterView, COUNTER_LAYOUT_VERSION, COUNTER_MAGIC, COUNTER_NAME_LEN, MAX_COUNTERS};
pub use error::{QueueError, SpecError};
pub use files::{prepare_dir, DIR_MODE, FILE_MODE};
pub use header::{HEADER_SIZE, QUEUE_LAYOUT_VERSION, QUEUE_MAGIC};
pub use producer::{Full, Producer};
pub use queue::{End, EndLock, QueueFile, QueueStats};
pub use spec::QueueSpec;
pub use wait::{ParseWaitStrategyError, WaitStrategy, Waiter};

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

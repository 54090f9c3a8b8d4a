//! Cross-process single-producer single-consumer queues in shared-memory files,
//! and pages of named counters. (CONTRACT STUB: types and signatures are fixed;
//! bodies to be implemented.)
#![allow(clippy::todo, unused_variables, missing_debug_implementations)]

use std::path::Path;
use std::time::Duration;

/// Shape of a queue: how many slots of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Bytes per slot, including the queue's own per-slot length word.
    pub slot_size: u32,
    /// Number of slots; a power of two.
    pub capacity: u32,
}

/// Errors opening or creating queues and counter pages.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Placeholder until implemented.
    #[error("{0}")]
    Other(String),
}

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

/// An opened queue file, not yet attached as producer or consumer.
pub struct QueueFile {}

impl QueueFile {
    /// Opens the queue at `path`, creating it (and its directory) if absent.
    ///
    /// # Errors
    /// The file exists with another layout or spec, is not a queue, or cannot be created.
    pub fn open_or_create(path: &Path, spec: QueueSpec) -> Result<QueueFile, QueueError> {
        todo!()
    }
    /// Opens an existing queue of any spec.
    ///
    /// # Errors
    /// Missing file, not a queue, or another layout version.
    pub fn open_existing(path: &Path) -> Result<QueueFile, QueueError> {
        todo!()
    }
    /// The queue's spec.
    pub fn spec(&self) -> QueueSpec {
        todo!()
    }
    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        todo!()
    }
    /// Attaches as the producer.
    pub fn into_producer(self) -> Producer {
        todo!()
    }
    /// Attaches as the consumer, continuing at the stored consumer index.
    pub fn into_consumer(self) -> Consumer {
        todo!()
    }
}

/// The queue was full; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// What a consumer finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Messages are waiting.
    Ready,
    /// Nothing to read now.
    Empty,
    /// The producer closed the stream and everything was read.
    Ended,
}

/// The writing side.
pub struct Producer {}

impl Producer {
    /// Largest message in bytes.
    pub fn payload_size(&self) -> usize {
        todo!()
    }
    /// Fills the next free slot through `fill`, which returns the bytes used.
    ///
    /// # Errors
    /// `Full` when no slot is free; `fill` is not called.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<(), Full> {
        todo!()
    }
    /// Copies `msg` (truncated to `payload_size`) into the next free slot.
    ///
    /// # Errors
    /// `Full` when no slot is free.
    pub fn push(&mut self, msg: &[u8]) -> Result<(), Full> {
        todo!()
    }
    /// Makes everything pushed so far visible, with one release store.
    pub fn publish(&mut self) {
        todo!()
    }
    /// Counts `n` messages dropped for lack of room.
    pub fn count_dropped(&mut self, n: u64) {
        todo!()
    }
    /// Free slots now.
    pub fn free_slots(&mut self) -> usize {
        todo!()
    }
    /// Publishes and marks the end of the stream.
    pub fn close(&mut self) {
        todo!()
    }
    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        todo!()
    }
}

/// The reading side.
pub struct Consumer {}

impl Consumer {
    /// Reads the next message through `read`; the slot is kept until `release`.
    pub fn pop_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        todo!()
    }
    /// Gives every popped slot back to the producer, with one release store.
    pub fn release(&mut self) {
        todo!()
    }
    /// Ready, Empty, or Ended.
    pub fn state(&mut self) -> QueueState {
        todo!()
    }
    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        todo!()
    }
}

/// How a side waits for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin; lowest latency, burns the core.
    BusyPoll,
    /// Spin briefly, then yield, then sleep up to `max_sleep`.
    Backoff {
        /// Longest single sleep; bounds the added latency.
        max_sleep: Duration,
    },
}

/// Carries the wait state between calls.
pub struct Waiter {}

impl Waiter {
    /// A waiter with this strategy.
    pub fn new(strategy: WaitStrategy) -> Self {
        todo!()
    }
    /// Waits a little longer each call, as the strategy says.
    pub fn wait(&mut self) {
        todo!()
    }
    /// Back to the shortest wait (call after progress).
    pub fn reset(&mut self) {
        todo!()
    }
}

/// A shared page of named u64 counters written by one process.
pub struct CounterPage {}

impl CounterPage {
    /// Opens or creates the page with these counter names.
    ///
    /// # Errors
    /// Another layout, or cannot be created.
    pub fn open_or_create(path: &Path, names: &[&str]) -> Result<CounterPage, QueueError> {
        todo!()
    }
    /// Adds `n` to counter `index`.
    pub fn add(&self, index: usize, n: u64) {
        todo!()
    }
    /// Sets counter `index`.
    pub fn set(&self, index: usize, v: u64) {
        todo!()
    }
    /// Reads counter `index`.
    pub fn get(&self, index: usize) -> u64 {
        todo!()
    }
    /// Reads every counter of a page by name.
    ///
    /// # Errors
    /// Missing file or not a counter page.
    pub fn read(path: &Path) -> Result<Vec<(String, u64)>, QueueError> {
        todo!()
    }
}

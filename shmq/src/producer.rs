//! The writing side of a queue.
//!
//! Guarantees:
//! - Messages become visible to the consumer in push order, only at
//!   [`Producer::publish`] (or [`Producer::close`], or when a push finds the queue
//!   full, or on drop), with one Release store of the producer index per batch;
//!   the counters `enqueued` and `dropped` are stored before that Release store.
//! - A slot is written only while the producer owns it: between the consumer
//!   releasing it (observed by an Acquire load of the consumer index) and the
//!   producer publishing it.
//! - The consumer index is reloaded only when the ring looks full.
//! - Pushing never allocates, locks or makes a system call. Attaching
//!   populates the whole file in this process (its pages resident and mapped
//!   writable), so no push takes a page fault either; one attached with
//!   [`crate::QueueFile::into_producer_for`] populates the slots of as many
//!   pushes as its bound, one attached with
//!   [`crate::QueueFile::into_producer_unpopulated`] nothing.
//!
//! Not guaranteed: messages pushed but not yet published when the process dies
//! are lost (they were never sent); published ones are kept.

use std::fmt;
use std::slice;
use std::sync::atomic::Ordering;

use crate::queue::{QueueStats, Ring};

/// The queue was full; nothing was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("queue full")
    }
}

impl std::error::Error for Full {}

/// The writing side.
pub struct Producer {
    ring: Ring,
    /// Next position to write.
    tail: u64,
    /// Consumer index as last loaded; `tail - cached_head <= capacity`.
    cached_head: u64,
    /// Local counters, stored at publish.
    enqueued: u64,
    dropped: u64,
    /// What the last publish stored, to skip redundant stores.
    published_tail: u64,
    published_dropped: u64,
}

// A Producer may move to another thread (it owns its mapping; shared state is
// reached only through atomics and slots it owns by the ring protocol). It is
// not Clone, so there is one producer per attach.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Producer>();
};

impl Producer {
    /// Attaches, first making resident the slots of the next `populate` pushes
    /// (`u64::MAX`: the whole ring; 0: none).
    pub(crate) fn attach(ring: Ring, populate: u64) -> Producer {
        if populate > 0 {
            // Resident now: predictable memory, and no page fault (nor
            // allocation) on the packet path later.
            let from = ring.header().producer.0.tail.load(Ordering::Acquire);
            ring.populate_slots(from, populate);
        }
        let h = ring.header();
        h.producer_pid.store(std::process::id(), Ordering::Relaxed);
        // Reopened before the attach is counted (Release): a consumer that sees
        // the new count (Consumer::state_after) also sees the queue open.
        h.closed.store(0, Ordering::Release);
        h.producer_attaches.fetch_add(1, Ordering::Release);
        let tail = h.producer.0.tail.load(Ordering::Acquire);
        let enqueued = h.producer.0.enqueued.load(Ordering::Relaxed);
        let dropped = h.producer.0.dropped.load(Ordering::Relaxed);
        let cached_head = h.consumer.0.head.load(Ordering::Acquire);
        Producer { ring, tail, cached_head, enqueued, dropped, published_tail: tail, published_dropped: dropped }
    }

    /// Largest message in bytes.
    pub fn payload_size(&self) -> usize {
        self.ring.payload_size()
    }

    /// Position of the next message to push (messages ever pushed to this queue).
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// True when the ring has no free slot, reloading the consumer index if the
    /// cached one says so.
    #[inline]
    fn is_full(&mut self) -> bool {
        let cap = self.ring.capacity();
        if self.tail.wrapping_sub(self.cached_head) >= cap {
            self.cached_head = self.ring.header().consumer.0.head.load(Ordering::Acquire);
            return self.tail.wrapping_sub(self.cached_head) >= cap;
        }
        false
    }

    /// Fills the next free slot through `fill`, which returns the bytes used
    /// (values above [`Self::payload_size`] are clamped to it).
    ///
    /// The message is visible to the consumer after the next [`Self::publish`].
    /// When the queue is full this publishes everything pushed so far (so a
    /// producer that waits after `Full` cannot starve its consumer) and returns
    /// `Full`.
    ///
    /// # Errors
    /// `Full` when no slot is free; `fill` is not called.
    #[inline]
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<(), Full> {
        if self.is_full() {
            // Publish only what would otherwise be stuck; a producer that drops on
            // Full (and counts it) does not pay a store per dropped message.
            if self.tail != self.published_tail {
                self.publish();
            }
            return Err(Full);
        }
        let slot = self.ring.slot(self.tail);
        let payload_size = self.ring.payload_size();
        let used = {
            // SAFETY: the slot at `tail` is owned by the producer: the consumer has
            // released it (tail - head < capacity, head loaded with Acquire) and the
            // consumer reads it only after the producer's Release store of a tail past
            // it. The payload lies inside the mapping (Ring::slot), and `self` is
            // borrowed mutably for the slice's whole life, so no other reference exists.
            let buf = unsafe { slice::from_raw_parts_mut(self.ring.payload(slot), payload_size) };
            fill(buf).min(payload_size)
        };
        self.ring.len_word(slot).store(used as u32, Ordering::Relaxed);
        self.tail = self.tail.wrapping_add(1);
        self.enqueued = self.enqueued.wrapping_add(1);
        Ok(())
    }

    /// Copies `msg` (truncated to `payload_size`) into the next free slot.
    ///
    /// # Errors
    /// `Full` when no slot is free.
    #[inline]
    pub fn push(&mut self, msg: &[u8]) -> Result<(), Full> {
        self.push_with(|buf| {
            let n = msg.len().min(buf.len());
            buf[..n].copy_from_slice(&msg[..n]);
            n
        })
    }

    /// Makes everything pushed so far visible, with one release store.
    /// Also stores the `enqueued` and `dropped` counters.
    #[inline]
    pub fn publish(&mut self) {
        if self.tail == self.published_tail && self.dropped == self.published_dropped {
            return;
        }
        let line = &self.ring.header().producer.0;
        line.enqueued.store(self.enqueued, Ordering::Relaxed);
        line.dropped.store(self.dropped, Ordering::Relaxed);
        line.tail.store(self.tail, Ordering::Release);
        self.published_tail = self.tail;
        self.published_dropped = self.dropped;
    }

    /// Counts `n` messages dropped for lack of room (visible at the next publish).
    #[inline]
    pub fn count_dropped(&mut self, n: u64) {
        self.dropped = self.dropped.wrapping_add(n);
    }

    /// Slots in the ring.
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// Free slots now (reloads the consumer index).
    pub fn free_slots(&mut self) -> usize {
        self.cached_head = self.ring.header().consumer.0.head.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(self.cached_head);
        self.ring.capacity().saturating_sub(used) as usize
    }

    /// Publishes and marks the end of the stream. A producer that attaches later
    /// clears the mark and continues the stream.
    pub fn close(&mut self) {
        self.publish();
        self.ring.header().closed.store(1, Ordering::Release);
    }

    /// The queue file.
    pub fn path(&self) -> &std::path::Path {
        self.ring.path()
    }

    /// The queue's counters as published (local pushes not yet published are
    /// not included).
    pub fn stats(&self) -> QueueStats {
        self.ring.stats()
    }
}

impl Drop for Producer {
    /// Publishes what was pushed, so nothing pushed is silently lost.
    fn drop(&mut self) {
        self.publish();
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("ring", &self.ring)
            .field("tail", &self.tail)
            .field("published_tail", &self.published_tail)
            .field("cached_head", &self.cached_head)
            .finish_non_exhaustive()
    }
}

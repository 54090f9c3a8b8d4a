//! The reading side of a queue.
//!
//! Guarantees:
//! - Messages are read in the order they were published, each once per
//!   attach; none is skipped.
//! - A slot is read only while the consumer owns it: after an Acquire load of a
//!   producer index past it, and before the consumer's Release store of a
//!   consumer index past it ([`Consumer::release`]).
//! - The producer index is reloaded only when the ring looks empty.
//! - A corrupt length word (larger than the payload) never causes a panic or an
//!   out-of-bounds read: the message is clamped to the payload size and counted
//!   in [`Consumer::corrupt_slots`].
//! - Popping never allocates, locks or makes a system call.
//!
//! Delivery across restarts: exactly-once for released messages, at-least-once
//! for messages that were popped but not released when the consumer died (a new
//! consumer starts at the stored consumer index and sees them again, in order).
//! A consumer that must persist what it read before the producer may reuse the
//! slots ([`Consumer::hold_releases`]) releases only when it says so; it then
//! holds at most the queue's capacity, and its producer waits (or drops, by its
//! own policy) while every slot is held.

use std::fmt;
use std::slice;
use std::sync::atomic::Ordering;

use crate::queue::{QueueStats, Ring};

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

/// The reading side.
pub struct Consumer {
    ring: Ring,
    /// Next position to read.
    head: u64,
    /// Consumer index as last stored.
    released: u64,
    /// Producer index as last loaded; `head <= cached_tail` in a valid queue.
    cached_tail: u64,
    /// Slots whose length word exceeded the payload size.
    corrupt: u64,
    /// Release only on an explicit [`Consumer::release`] ([`Consumer::hold_releases`]).
    hold: bool,
}

// A Consumer may move to another thread (it owns its mapping; shared state is
// reached only through atomics and slots it owns by the ring protocol). It is
// not Clone, so there is one consumer per attach.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Consumer>();
};

impl Consumer {
    pub(crate) fn attach(ring: Ring) -> Consumer {
        let h = ring.header();
        h.consumer_pid.store(std::process::id(), Ordering::Relaxed);
        h.consumer_attaches.fetch_add(1, Ordering::Relaxed);
        let head = h.consumer.0.head.load(Ordering::Acquire);
        let cached_tail = h.producer.0.tail.load(Ordering::Acquire);
        Consumer { ring, head, released: head, cached_tail, corrupt: 0, hold: false }
    }

    /// Largest message in bytes.
    pub fn payload_size(&self) -> usize {
        self.ring.payload_size()
    }

    /// Position of the next message to read (messages ever popped from this
    /// queue, counting re-deliveries once).
    pub fn position(&self) -> u64 {
        self.head
    }

    /// From now on popped slots are given back only by an explicit
    /// [`Consumer::release`]: not when [`Consumer::pop_with`] finds nothing, not
    /// by [`Consumer::state`], not on drop. For a consumer that persists what it
    /// read first (a checkpoint) and must not let the producer overwrite a slot
    /// it may have to read again after a crash.
    pub fn hold_releases(&mut self) {
        self.hold = true;
    }

    /// Slots of the queue.
    pub fn capacity(&self) -> u64 {
        self.ring.capacity()
    }

    /// Messages popped but not yet released.
    pub fn unreleased(&self) -> u64 {
        self.head.wrapping_sub(self.released)
    }

    /// Messages the producer has published in this queue's life (its index).
    pub fn published(&self) -> u64 {
        self.ring.header().producer.0.tail.load(Ordering::Acquire)
    }

    /// Slots read by this consumer whose length word was larger than the
    /// payload size (a corrupt file or a misbehaving producer).
    pub fn corrupt_slots(&self) -> u64 {
        self.corrupt
    }

    /// True when a published message is waiting, reloading the producer index
    /// if the cached one says the ring is empty.
    #[inline]
    fn has_message(&mut self) -> bool {
        if self.cached_tail == self.head {
            self.cached_tail = self.ring.header().producer.0.tail.load(Ordering::Acquire);
            return self.cached_tail != self.head;
        }
        true
    }

    /// Reads the next message through `read`; the slot is kept until `release`.
    ///
    /// Returns `None` when nothing is published; it then first releases
    /// everything popped so far (so a consumer that waits after `None` cannot
    /// starve its producer).
    #[inline]
    pub fn pop_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if !self.has_message() {
            if !self.hold {
                self.release();
            }
            return None;
        }
        let slot = self.ring.slot(self.head);
        let payload_size = self.ring.payload_size();
        let raw = self.ring.len_word(slot).load(Ordering::Relaxed) as usize;
        let len = if raw > payload_size {
            self.corrupt = self.corrupt.wrapping_add(1);
            payload_size
        } else {
            raw
        };
        // SAFETY: the slot at `head` is owned by the consumer: the producer published
        // it (head < tail, tail loaded with Acquire, so its writes are visible) and
        // writes it again only after the consumer's Release store of a head past it,
        // which happens after `read` returns. `len <= payload_size`, so the slice lies
        // inside the mapping (Ring::slot); `self` is borrowed mutably meanwhile.
        let buf = unsafe { slice::from_raw_parts(self.ring.payload(slot), len) };
        let r = read(buf);
        self.head = self.head.wrapping_add(1);
        Some(r)
    }

    /// Gives every popped slot back to the producer, with one release store.
    #[inline]
    pub fn release(&mut self) {
        if self.head != self.released {
            self.ring.header().consumer.0.head.store(self.head, Ordering::Release);
            self.released = self.head;
        }
    }

    /// Ready, Empty, or Ended. When not Ready, everything popped is released.
    pub fn state(&mut self) -> QueueState {
        if self.has_message() {
            return QueueState::Ready;
        }
        if !self.hold {
            self.release();
        }
        let h = self.ring.header();
        if h.closed.load(Ordering::Acquire) == 0 {
            return QueueState::Empty;
        }
        // `close` stores the final tail before `closed`; re-check it now.
        if self.has_message() {
            QueueState::Ready
        } else {
            QueueState::Ended
        }
    }

    /// How many times a producer has attached to the queue (an Acquire load:
    /// a count that includes an attach shows that attach's reopening of the
    /// queue to [`Self::state`] read after it).
    pub fn producer_attaches(&self) -> u32 {
        self.ring.header().producer_attaches.load(Ordering::Acquire)
    }

    /// As [`Self::state`], except that the queue reads Empty, not Ended, while
    /// no producer has attached since the count `seen` (taken with
    /// [`Self::producer_attaches`] when the queue was found closed and drained
    /// by an earlier run): such a queue is waiting for the next run's producer,
    /// whose own close alone ends it.
    pub fn state_after(&mut self, seen: u32) -> QueueState {
        // The count first: a new attach seen here has reopened the queue
        // before `state` looks at `closed` (Producer::attach's order).
        let attaches = self.producer_attaches();
        match self.state() {
            QueueState::Ended if attaches == seen => QueueState::Empty,
            s => s,
        }
    }

    /// The queue's counters (`dequeued` counts released messages only).
    pub fn stats(&self) -> QueueStats {
        self.ring.stats()
    }
}

impl Drop for Consumer {
    /// Releases what was popped: a consumer that stops on purpose has handled it
    /// (unless it holds releases: then only what it released explicitly counts).
    fn drop(&mut self) {
        if !self.hold {
            self.release();
        }
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("ring", &self.ring)
            .field("head", &self.head)
            .field("released", &self.released)
            .field("cached_tail", &self.cached_tail)
            .finish_non_exhaustive()
    }
}

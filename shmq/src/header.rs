//! The on-file layout of a queue: a `#[repr(C)]` header page, then the slots.
//!
//! ```text
//! offset  size  field                     written by
//!      0     8  magic  b"CJSHMQ01"         creator, before the file is linked
//!      8     4  layout version             creator
//!     12     4  slot_size                  creator
//!     16     4  capacity (power of two)    creator
//!     20     4  closed (0/1)               producer (close / attach)
//!     24     4  producer_pid               producer at attach
//!     28     4  consumer_pid               consumer at attach
//!     32     4  producer_attaches          producer at attach
//!     36     4  consumer_attaches          consumer at attach
//!    128     8  tail (next position to publish)    producer, Release
//!    136     8  enqueued                           producer, before tail
//!    144     8  dropped                            producer, before tail
//!    256     8  head (next position to release)    consumer, Release
//!   4096        slot[0], slot[1], ... slot[capacity-1], `slot_size` bytes each
//! ```
//!
//! Each slot is `u32 length, u32 pad, payload[slot_size - 8]`. Positions are
//! monotonically increasing `u64`s; position `p` lives in slot `p & (capacity-1)`.
//! All integers are native-endian (queues never leave the host).
//!
//! Guarantees: the layout is fixed by `#[repr(C)]`, explicit 128-byte line
//! alignment (not the architecture-dependent `CachePadded`) and compile-time
//! offset assertions, so every build of this version agrees on it; the
//! producer's and the consumer's hot fields sit on different 128-byte lines;
//! every header field is an atomic, so a `&Header` into the shared mapping is
//! sound even while peers write it. Opening reads the header with `pread`
//! (`HeaderImage`) and validates it before the file is mapped.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// `b"CJSHMQ01"` as a little-endian u64: the first 8 bytes of every queue file.
pub const QUEUE_MAGIC: u64 = u64::from_le_bytes(*b"CJSHMQ01");
/// Layout version of the header and slots described above.
pub const QUEUE_LAYOUT_VERSION: u32 = 1;
/// Bytes reserved for the header; slots start at this offset.
pub const HEADER_SIZE: usize = 4096;
/// Bytes at the start of each slot before the payload (u32 length + u32 pad).
pub(crate) const SLOT_PREFIX: usize = 8;

/// One 128-byte-aligned line, so that two lines never share a cache line
/// (nor the adjacent-line prefetch pair on x86).
#[repr(C, align(128))]
pub(crate) struct Line<T>(pub(crate) T);

/// Fields written by the producer on the hot path.
#[repr(C)]
pub(crate) struct ProducerLine {
    /// Next position the producer will publish; everything below is readable.
    pub(crate) tail: AtomicU64,
    /// Messages published (equals `tail` in this version; kept as its own
    /// counter so status tools need not know that).
    pub(crate) enqueued: AtomicU64,
    /// Messages the producer dropped for lack of room.
    pub(crate) dropped: AtomicU64,
}

/// Fields written by the consumer on the hot path.
#[repr(C)]
pub(crate) struct ConsumerLine {
    /// Next position the consumer will release; everything below is free.
    pub(crate) head: AtomicU64,
}

/// The queue header at offset 0 of the file.
#[repr(C)]
pub(crate) struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) version: AtomicU32,
    pub(crate) slot_size: AtomicU32,
    pub(crate) capacity: AtomicU32,
    pub(crate) closed: AtomicU32,
    pub(crate) producer_pid: AtomicU32,
    pub(crate) consumer_pid: AtomicU32,
    pub(crate) producer_attaches: AtomicU32,
    pub(crate) consumer_attaches: AtomicU32,
    pub(crate) producer: Line<ProducerLine>,
    pub(crate) consumer: Line<ConsumerLine>,
}

// The layout above is the file format: pin it.
const _: () = {
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, slot_size) == 12);
    assert!(offset_of!(Header, capacity) == 16);
    assert!(offset_of!(Header, closed) == 20);
    assert!(offset_of!(Header, producer_pid) == 24);
    assert!(offset_of!(Header, consumer_pid) == 28);
    assert!(offset_of!(Header, producer_attaches) == 32);
    assert!(offset_of!(Header, consumer_attaches) == 36);
    assert!(offset_of!(Header, producer) == 128);
    assert!(offset_of!(ProducerLine, tail) == 0);
    assert!(offset_of!(ProducerLine, enqueued) == 8);
    assert!(offset_of!(ProducerLine, dropped) == 16);
    assert!(offset_of!(Header, consumer) == 256);
    assert!(offset_of!(ConsumerLine, head) == 0);
    assert!(size_of::<Header>() == 384);
    assert!(size_of::<Header>() <= HEADER_SIZE);
    assert!(std::mem::align_of::<Header>() <= HEADER_SIZE);
};

/// The fields of a header that opening validates, read from the file with
/// `pread` before anything is mapped (so a hostile file is refused before it
/// can cost memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HeaderImage {
    pub(crate) magic: u64,
    pub(crate) version: u32,
    pub(crate) slot_size: u32,
    pub(crate) capacity: u32,
    pub(crate) tail: u64,
    pub(crate) head: u64,
}

impl HeaderImage {
    /// Bytes read from the start of the file: the whole `Header`.
    pub(crate) const LEN: usize = size_of::<Header>();

    /// Reads the header from `file` (which must be at least [`Self::LEN`] bytes).
    ///
    /// Head is read before tail, as a consumer would: `head <= tail` then holds
    /// for any valid queue even while both sides run.
    pub(crate) fn read(file: &std::fs::File) -> std::io::Result<HeaderImage> {
        use std::os::unix::fs::FileExt;
        const HEAD: usize = offset_of!(Header, consumer) + offset_of!(ConsumerLine, head);
        const TAIL: usize = offset_of!(Header, producer) + offset_of!(ProducerLine, tail);
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, HEAD as u64)?;
        let mut b = [0u8; Self::LEN];
        file.read_exact_at(&mut b, 0)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from_ne_bytes(std::array::from_fn(|i| b[o + i]));
        Ok(HeaderImage {
            magic: u64_at(offset_of!(Header, magic)),
            version: u32_at(offset_of!(Header, version)),
            slot_size: u32_at(offset_of!(Header, slot_size)),
            capacity: u32_at(offset_of!(Header, capacity)),
            tail: u64_at(TAIL),
            head: u64::from_ne_bytes(head),
        })
    }
}

/// Byte offsets of a few fields, for tests that corrupt files on purpose.
#[cfg(test)]
pub(crate) mod offsets {
    pub(crate) const VERSION: usize = 8;
    pub(crate) const SLOT_SIZE: usize = 12;
    pub(crate) const CAPACITY: usize = 16;
    pub(crate) const HEAD: usize = 256;
    pub(crate) const TAIL: usize = 128;
}

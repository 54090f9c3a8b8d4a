//! The merge: flow records in, pmacct-style aggregate rows out.
//!
//! Guarantees:
//! - Every IP record is split into its two directions: a→b counted from
//!   `dir[0]` with src = `addr_a`/`port_a`, dst = `addr_b`/`port_b`; b→a from
//!   `dir[1]` with them swapped. A direction with zero packets yields no row.
//!   So the rows do not depend on which side a worker called the initiator,
//!   and parts of one flow (from several workers in round-robin mode, or cut by
//!   active timeouts) add up exactly to what one record of the whole flow gives.
//! - Rows are keyed by the chosen primitives only; primitives not chosen are
//!   zeroed in the key (the IP version too when neither host is chosen, so v4
//!   and v6 merge like in pmacct).
//! - PACKETS, BYTES (IP bytes), FRAME_BYTES are exact sums. FLOWS counts
//!   directional flows: a direction is counted once per record that has packets
//!   in that direction and does not end by active timeout (whose flow goes on in
//!   a later record). Not guaranteed: in round-robin mode a flow spread over
//!   several workers counts once per worker; a direction whose packets all fell
//!   in earlier active-timeout parts is not counted.
//! - Non-IP and malformed records never enter the flow table; they are summed in
//!   [`Totals`]. Records with an invalid kind or end reason never reach here
//!   (the intake counts and skips them).
//!
//! - Bounded memory: each table holds at most CJ_APP_MAX_ROWS rows plus one
//!   overflow row (`other` in every key column) that takes every direction
//!   whose key arrives once the table is full; `rows_overflowed` counts those
//!   directions. Totals, PACKETS/BYTES sums and rows already present stay
//!   exact. Not guaranteed: which keys get their own row once the limit is
//!   near (the first to arrive win), and FLOWS of the overflow row counts
//!   directions, not distinct keys.
//!
//! - Rows keep their insertion positions ([`RowTable`], the table of the app's
//!   own); a batch of records ([`Aggregate::add_batch`]) makes the same rows
//!   in the same positions as the same records one by one.
//!
//! Not on a hot path per packet, but per record: no allocation except when a
//! new row appears (a new chunk of rows, a doubled index) or a batch is the
//! largest yet (its hashed directions).

use station::record::{EndReason, FlowRecord, RecordKind};

use crate::containers::Containers;
use crate::interned::{Name, OuterAddr};
use crate::settings::{Primitive, Primitives};

/// The key of an aggregate row. Fields of primitives not chosen are zero.
///
/// The derived order (VLAN, IP version, src, dst, ports, protocol) is the tie
/// breaker when rows have equal bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Outer VLAN id.
    pub vlan: u16,
    /// 4 or 6; 0 when no host primitive is chosen.
    pub ip_version: u8,
    /// Source address (16-byte record form).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Name of the source's container (an id of its 32 NUL-padded bytes;
    /// [`Name::NONE`] when none). Ordered by the name's bytes.
    pub src_container: Name,
    /// Name of the destination's container.
    pub dst_container: Name,
    /// Tunnel kind byte (`FlowRecord::tunnel_kind`; 0: not tunnelled).
    pub tunnel: u8,
    /// IP version of the outer addresses (0 when none).
    pub outer_ip_version: u8,
    /// Outer source address of the direction (the tunnel's end at the sender;
    /// an id of its 16 bytes, ordered by them).
    pub outer_src: OuterAddr,
    /// Outer destination address of the direction.
    pub outer_dst: OuterAddr,
    /// VNI or GRE key (0 when none).
    pub tunnel_id: u32,
    /// The overflow row ([`Key::OVERFLOW`]): everything that came once the
    /// table was full; printed as `other` in every key column.
    pub overflow: bool,
}

impl std::hash::Hash for Key {
    /// Whole words rather than field by field and byte by byte (a few hasher
    /// calls per key); the ids of container names and outer addresses only
    /// when set (an id stands for one value: see interned.rs).
    /// A function of the fields alone, so equal keys hash alike.
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(u128::from_ne_bytes(self.src));
        h.write_u128(u128::from_ne_bytes(self.dst));
        h.write_u64(
            u64::from(self.vlan)
                | u64::from(self.ip_version) << 16
                | u64::from(self.src_port) << 24
                | u64::from(self.dst_port) << 40
                | u64::from(self.proto) << 56,
        );
        h.write_u64(
            u64::from(self.tunnel_id)
                | u64::from(self.tunnel) << 32
                | u64::from(self.outer_ip_version) << 40
                | u64::from(self.overflow) << 48,
        );
        let ids = u128::from(self.src_container.id())
            | u128::from(self.dst_container.id()) << 32
            | u128::from(self.outer_src.id()) << 64
            | u128::from(self.outer_dst.id()) << 96;
        if ids != 0 {
            h.write_u128(ids);
        }
    }
}

impl Key {
    /// The key of the overflow row: every field zero, `overflow` set.
    pub const OVERFLOW: Key = Key {
        vlan: 0,
        ip_version: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        proto: 0,
        src_container: Name::NONE,
        dst_container: Name::NONE,
        tunnel: 0,
        outer_ip_version: 0,
        outer_src: OuterAddr::NONE,
        outer_dst: OuterAddr::NONE,
        tunnel_id: 0,
        overflow: true,
    };
}

/// The counters of a row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Packets.
    pub packets: u64,
    /// IP bytes (pmacct's BYTES).
    pub ip_bytes: u64,
    /// Frame bytes.
    pub frame_bytes: u64,
    /// Directional flows (see the module doc).
    pub flows: u64,
    /// First packet time of the row's records, ns since the epoch (0: none).
    pub first_ns: u64,
    /// Last packet time of the row's records (0: none).
    pub last_ns: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.packets += other.packets;
        self.ip_bytes += other.ip_bytes;
        self.frame_bytes += other.frame_bytes;
        self.flows += other.flows;
        if other.first_ns != 0 && (self.first_ns == 0 || other.first_ns < self.first_ns) {
            self.first_ns = other.first_ns;
        }
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

/// A row's position with the leading part of its sort order inline: most
/// comparisons end on these words without touching the row (they are equal
/// only when the order's bytes they hold are; then the whole key decides).
///
/// Two forms, both 8-byte aligned, so the sorted entries become the
/// `(key, counters)` pairs in their own allocation. The whole lead (`N` =
/// 5, 48 bytes): the first 40 bytes of the order (IP bytes inverted, so
/// that ascending is bytes descending; VLAN, IP version, `src`,
/// `dst[..13]`, big-endian), five words compared in turn, each only when the
/// one before is equal: most comparisons end on the first two. Packed (`N`
/// = 1 or 2, 16 or 24 bytes, [`Packing`]): only the bytes of the first 48
/// ([`order_parts`], ports and protocol too) that differ somewhere in the
/// table, so a sort's passes move a third or half of the memory.
struct SortEntry<const N: usize = 5> {
    /// The order's leading bytes, whole or packed.
    lead: [u64; N],
    /// Position of the row in the table.
    row: u32,
}

impl SortEntry {
    fn new(i: usize, k: &Key, c: &Counters) -> Self {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&(!c.ip_bytes).to_be_bytes());
        b[8..10].copy_from_slice(&k.vlan.to_be_bytes());
        b[10] = k.ip_version;
        b[11..27].copy_from_slice(&k.src);
        b[27..].copy_from_slice(&k.dst[..13]);
        let mut lead = [0u64; 5];
        for (w, chunk) in lead.iter_mut().zip(b.chunks_exact(8)) {
            *w = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
        }
        SortEntry { lead, row: position(i) }
    }
}

/// A row's position as a sort entry holds it. Positions fit u32: a table's
/// rows are bounded by memory far below 2^32.
fn position(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// The first 48 bytes of a row's order as seven numbers, each the bytes of
/// its field in turn, most significant first: `!ip_bytes` (8 bytes, so
/// that ascending is bytes descending), VLAN and IP version (3), `src` (8
/// and 8), `dst` (8 and 8), source and destination ports and protocol (5):
/// the fields of [`Key`]'s derived order before the container names.
fn order_parts(k: &Key, c: &Counters) -> [u64; 7] {
    let half = |a: &[u8; 16], i: usize| u64::from_be_bytes(a[8 * i..8 * i + 8].try_into().unwrap_or_default());
    [
        !c.ip_bytes,
        u64::from(k.vlan) << 8 | u64::from(k.ip_version),
        half(&k.src, 0),
        half(&k.src, 1),
        half(&k.dst, 0),
        half(&k.dst, 1),
        u64::from(k.src_port) << 24 | u64::from(k.dst_port) << 8 | u64::from(k.proto),
    ]
}

/// Where the bytes of [`order_parts`] that differ among a table's rows go
/// in a packed lead: per part that has any, the span from its first such
/// byte to its last (the bytes between, equal in every row, come along),
/// spans in the parts' order, so that packed leads compare as the 48 bytes
/// do. Bytes equal in every row decide nothing, so leaving them out keeps
/// the order; equal packed leads mean equal first 48 bytes, and the whole
/// key decides as with the whole lead.
///
/// Guarantees: every byte that differs between two rows is in a span.
/// Not guaranteed: the fewest bytes (a span keeps the equal bytes inside it).
#[derive(Debug, Default)]
struct Packing {
    /// Per span and lead word it lands in (a span across the middle of a
    /// two-word lead is two): its part, the mask of its bits there, how far
    /// to rotate them left into place (they do not wrap). Those of the first
    /// lead word first.
    spans: [(usize, u64, u32); 8],
    /// Spans of the first lead word.
    first: usize,
    /// Spans in use.
    len: usize,
    /// Bytes of all spans.
    bytes: usize,
}

impl Packing {
    /// One pass over the rows: each one's parts XOR the first row's, ORed.
    fn of(agg: &Aggregate) -> Packing {
        let Some((k, c)) = agg.rows().next() else {
            return Packing::default();
        };
        let first = order_parts(k, c);
        let mut diff = [0u64; 7];
        for chunk in &agg.rows.chunks {
            for (k, c) in chunk {
                for (d, (p, f)) in diff.iter_mut().zip(order_parts(k, c).iter().zip(first.iter())) {
                    *d |= p ^ f;
                }
            }
        }
        let mut p = Packing::default();
        // Spans and their widths in bits, from the most significant.
        let spans = (0..7).filter(|&i| diff[i] != 0).map(|i| {
            let (high, low) = (diff[i].leading_zeros() / 8, diff[i].trailing_zeros() / 8);
            (i, 8 * low, 8 * (8 - high - low))
        });
        let bits: u32 = spans.clone().map(|s| s.2).sum();
        p.bytes = bits as usize / 8;
        if p.bytes > 16 {
            return p;
        }
        // Lead words: the last holds the least significant bits.
        let last = if p.bytes <= 8 { 0 } else { 1 };
        let mut top = bits;
        for (i, shift, width) in spans {
            let low = top - width;
            top = low;
            // `width` bits from bit `from` of the part to bit `to` of a lead word.
            let span = |from: u32, width: u32, to: u32| (i, (u64::MAX >> (64 - width)) << from, (64 + to - from) % 64);
            if low < 64 && low + width > 64 {
                // Across the two words: the span's high bits end the first, its low bits start the second.
                let high = low + width - 64;
                p.spans[p.len] = span(shift + width - high, high, 0);
                p.spans[p.len + 1] = span(shift, width - high, low);
                p.first = p.len + 1;
                p.len += 2;
            } else {
                p.spans[p.len] = span(shift, width, low % 64);
                p.len += 1;
                if low >= 64 || last == 0 {
                    p.first = p.len;
                }
            }
        }
        p
    }

    /// The packed lead of a row's parts (`N` words hold the spans: `bytes` <= 8 * `N`),
    /// right-aligned: the bytes above the spans are zero in every row.
    fn pack<const N: usize>(&self, parts: &[u64; 7]) -> [u64; N] {
        let (mut first, mut last) = (0u64, 0u64);
        for &(i, mask, rotate) in &self.spans[..self.first] {
            first |= (parts[i] & mask).rotate_left(rotate);
        }
        for &(i, mask, rotate) in &self.spans[self.first..self.len] {
            last |= (parts[i] & mask).rotate_left(rotate);
        }
        let mut lead = [0u64; N];
        lead[0] = first;
        lead[N - 1] |= last;
        lead
    }
}

/// Buckets of the radix sort up to this many entries are sorted by comparisons.
const SMALL_BUCKET: usize = 64;

/// Entries from which a sort's first buckets are sorted on two threads
/// ([`Aggregate::distribute`]): below this a thread costs more than half the work.
const PARALLEL_MIN: usize = 1 << 16;

/// Whether a sort may sort its first buckets on a second thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Threads {
    One,
    Two,
}

/// Whether this process may run on two CPUs or more (its affinity mask:
/// an app pinned to one core gains nothing from a second thread).
fn two_cpus() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Byte `depth` of an entry's lead (below `8 * N`).
fn lead_byte<const N: usize>(e: &SortEntry<N>, depth: usize) -> usize {
    (e.lead[depth / 8] >> (56 - 8 * (depth % 8))) as u8 as usize
}

/// The first of the `8 * N` inline bytes at or after `depth` in which the
/// entries of `v` differ (None: from `depth` on they are all equal).
fn first_difference<const N: usize>(v: &[SortEntry<N>], depth: usize) -> Option<usize> {
    let first = v.first()?.lead;
    let mut diff = [0u64; N];
    for e in v {
        for (d, (w, f)) in diff.iter_mut().zip(e.lead.iter().zip(first.iter())) {
            *d |= w ^ f;
        }
    }
    // Bytes before `depth` are equal by the caller's word; mask them in the first word.
    if depth >= 8 * N {
        return None;
    }
    diff[depth / 8] &= u64::MAX >> (8 * (depth % 8));
    (depth / 8..N).find(|&w| diff[w] != 0).map(|w| 8 * w + diff[w].leading_zeros() as usize / 8)
}

/// Rows per chunk of a [`RowTable`] (`1 << CHUNK_BITS`): 14 MiB of rows,
/// as many as the index has room for at first (two per slot of the
/// default record queue).
const CHUNK_BITS: u32 = 17;
/// Rows per chunk of a [`RowTable`].
const CHUNK: usize = 1 << CHUNK_BITS;
/// The smallest index: 16 slots (two cache lines).
const MIN_INDEX_BITS: u32 = 4;
/// Most rows a [`RowTable`] holds: positions + 1 fit a slot's 32 bits and
/// the index (twice the rows at most) fits 2^32 slots, so its bits are at
/// most the tag's 32. Far above CJ_APP_MAX_ROWS's largest value.
const MAX_TABLE_ROWS: usize = 1 << 31;
/// A reserved index ([`RowTable::reserve`]) is made once the rows are a
/// 1/`INDEX_JUMP` of its slots (four per 4 KiB page of it, so nearly every
/// page holds a row); until then the index doubles as rows come.
const INDEX_JUMP: usize = 128;
/// Index slots [`RowTable::prefetch_row`] looks at at most.
const PREFETCH_PROBE: usize = 4;

/// A row: its key and its counters.
type Row = (Key, Counters);

/// The rows of one aggregate table and their index.
///
/// This is the app's core, as the flow table is the detector's (every
/// direction of every record goes through it once), so it is written here
/// rather than taken from a crate, in the way of the detector's
/// (detector/src/flow_slab.rs): a general map cannot be told that its rows
/// must keep their insertion positions without a vector of its own beside
/// them, nor be probed a batch ahead with tags that spare the row reads.
///
/// Guarantees:
/// - Rows keep the position they were inserted at (0, 1, 2, ...) for the
///   table's life: nothing is removed. They live in chunks of [`CHUNK`]
///   rows, row `i` at offset `i % CHUNK` of chunk `i / CHUNK`, so growth
///   never moves a row past the first chunk. The first chunk grows fourfold
///   up to [`CHUNK`] rows, each time to new memory (its rows are moved, as
///   a `Vec`'s are), so a small table stays small; every later chunk is
///   reserved whole and never moves.
/// - The index is an array of 64-bit slots, a power of two, at most half
///   full (doubled before an insert would pass half), eight slots to a
///   cache line: a slot holds the top 32 bits of its key's hash (the tag)
///   and the row's position + 1 (0: empty). A probe starts at the slot the
///   top bits of the hash name and goes on linearly to the first empty slot;
///   a row is read only when its tag matches. The home is the tag's top
///   `bits` bits, so only a slot of a key with the same home can match
///   falsely: 1 in 2^(32 - bits) of those (a slot of another home has
///   another tag).
///   Since the tag alone places a slot, doubling the index reads the old
///   slots in order and neither a row nor a key hash.
/// - Keys are hashed with a per-process random seed (foldhash), as the
///   map before it did.
/// - [`RowTable::prefetch_index`] and [`RowTable::prefetch_row`] change
///   nothing but timing (see [`station::prefetch::prefetch`]), and so does
///   [`RowTable::prepare`] (the memory of rows to come made ready while the
///   app has nothing to read).
///
/// Not guaranteed: more than [`MAX_TABLE_ROWS`] rows (the caller bounds them).
#[derive(Clone)]
struct RowTable {
    /// Rows in insertion order, [`CHUNK`] per chunk; chunks past the rows
    /// may be reserved (empty, with room).
    chunks: Vec<Vec<Row>>,
    /// Rows.
    len: usize,
    /// Positions under this have their memory written ([`RowTable::prepare`]).
    prepared: usize,
    /// Slots: tag << 32 | position + 1; 0 is empty.
    index: Vec<u64>,
    /// `index.len() == 1 << bits`.
    bits: u32,
    /// The bits of the index [`RowTable::reserve`] asked for (made at
    /// [`INDEX_JUMP`]; [`MIN_INDEX_BITS`]: none).
    reserved_bits: u32,
    hasher: foldhash::fast::RandomState,
    /// Test builds: bits of the hash kept, so that tests can force equal
    /// tags and homes (every bit in normal use).
    #[cfg(test)]
    hash_mask: u64,
}

impl std::fmt::Debug for RowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowTable").field("len", &self.len).field("slots", &self.index.len()).finish()
    }
}

impl Default for RowTable {
    fn default() -> Self {
        RowTable {
            chunks: Vec::new(),
            len: 0,
            prepared: 0,
            index: empty_index(MIN_INDEX_BITS),
            bits: MIN_INDEX_BITS,
            reserved_bits: MIN_INDEX_BITS,
            hasher: foldhash::fast::RandomState::default(),
            #[cfg(test)]
            hash_mask: u64::MAX,
        }
    }
}

impl RowTable {
    fn len(&self) -> usize {
        self.len
    }

    /// The hash of `key` (its top 32 bits are the tag, and its top bits the home slot).
    #[inline]
    fn hash(&self, key: &Key) -> u64 {
        use std::hash::BuildHasher as _;
        let h = self.hasher.hash_one(key);
        #[cfg(test)]
        let h = h & self.hash_mask;
        h
    }

    /// The first slot a probe for `hash` reads.
    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> (64 - self.bits)) as usize
    }

    /// Starts loading the index line a probe for `hash` reads first.
    #[inline]
    fn prefetch_index(&self, hash: u64) {
        station::prefetch::prefetch(self.index.as_ptr().wrapping_add(self.home(hash)));
    }

    /// Starts loading the row a probe for `hash` would compare first (the
    /// first slot with its tag among the first [`PREFETCH_PROBE`]); reads the
    /// index (best once [`RowTable::prefetch_index`] had time to bring it).
    #[inline]
    fn prefetch_row(&self, hash: u64) {
        let tag = hash >> 32;
        let mask = self.index.len() - 1;
        let mut s = self.home(hash);
        for _ in 0..PREFETCH_PROBE {
            let v = self.index[s];
            if v == 0 {
                return;
            }
            if v >> 32 == tag {
                if let Some(row) = self.get((v as u32 - 1) as usize) {
                    // A row is 112 bytes: its first and its last byte's lines.
                    let p: *const Row = row;
                    station::prefetch::prefetch(p);
                    station::prefetch::prefetch(p.cast::<u8>().wrapping_add(size_of::<Row>() - 1));
                }
                return;
            }
            s = (s + 1) & mask;
        }
    }

    /// The position of the row of `key` (whose hash is `hash`), or the empty
    /// slot where it would go.
    #[inline]
    fn find(&self, hash: u64, key: &Key) -> Result<usize, usize> {
        let tag = hash >> 32;
        let mask = self.index.len() - 1;
        let mut s = self.home(hash);
        loop {
            let v = self.index[s];
            if v == 0 {
                return Err(s);
            }
            if v >> 32 == tag {
                let i = (v as u32 - 1) as usize;
                if self.get(i).is_some_and(|(k, _)| k == key) {
                    return Ok(i);
                }
            }
            s = (s + 1) & mask;
        }
    }

    /// The row at position `i`.
    #[inline]
    fn get(&self, i: usize) -> Option<&Row> {
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    /// The counters of the row at position `i`.
    #[inline]
    fn counters_mut(&mut self, i: usize) -> Option<&mut Counters> {
        self.chunks.get_mut(i >> CHUNK_BITS)?.get_mut(i & (CHUNK - 1)).map(|(_, c)| c)
    }

    /// Adds the row `key` (not in the table; `slot` is what [`RowTable::find`]
    /// gave for it, with no insert since) at the next position, returned.
    fn insert(&mut self, slot: usize, hash: u64, key: Key, c: Counters) -> usize {
        let pos = self.len;
        let slot = if (pos + 1) * 2 > self.index.len() {
            self.grow_index();
            self.empty_slot(hash)
        } else {
            slot
        };
        self.index[slot] = (hash >> 32) << 32 | (pos as u64 + 1);
        let chunk = pos >> CHUNK_BITS;
        if chunk == self.chunks.len() {
            self.chunks.push(Vec::new());
        }
        let rows = &mut self.chunks[chunk];
        if rows.len() == rows.capacity() {
            // The first chunk grows by four (a small table stays small);
            // every later one is made whole at once.
            let want = if chunk == 0 { (rows.capacity() * 4).clamp(16, CHUNK) } else { CHUNK };
            grow_chunk(rows, want);
        }
        rows.push((key, c));
        self.len += 1;
        pos
    }

    /// The first empty slot of `hash`'s probe.
    fn empty_slot(&self, hash: u64) -> usize {
        let mask = self.index.len() - 1;
        let mut s = self.home(hash);
        while self.index[s] != 0 {
            s = (s + 1) & mask;
        }
        s
    }

    /// Doubles the index, or makes the reserved one once the rows are a
    /// 1/[`INDEX_JUMP`] of it: the old slots in order, each placed by its tag.
    #[cold]
    fn grow_index(&mut self) {
        let bits = if self.reserved_bits > self.bits + 1 && self.len * INDEX_JUMP >= 1 << self.reserved_bits {
            self.reserved_bits
        } else {
            self.bits + 1
        };
        self.resize_index(bits);
    }

    /// An index of `1 << bits` slots holding the rows' slots (at most half full).
    fn resize_index(&mut self, bits: u32) {
        let old = std::mem::replace(&mut self.index, empty_index(bits));
        self.bits = bits;
        let mask = self.index.len() - 1;
        for v in old {
            if v != 0 {
                let mut s = (v >> (64 - bits)) as usize;
                while self.index[s] != 0 {
                    s = (s + 1) & mask;
                }
                self.index[s] = v;
            }
        }
    }

    /// Makes room for `rows` rows in all: an index that holds them without
    /// doubling past a 1/[`INDEX_JUMP`] of its slots (made then, or now when
    /// the rows are already that many: a table of a few rows keeps a small
    /// index, and every page of a reserved one holds rows), and the chunks'
    /// room (address space: pages are touched as rows come).
    fn reserve(&mut self, rows: usize) {
        let rows = rows.min(MAX_TABLE_ROWS);
        let bits = index_bits(rows);
        self.reserved_bits = self.reserved_bits.max(bits);
        if bits > self.bits && self.len * INDEX_JUMP >= 1 << bits {
            self.resize_index(bits);
        }
        for chunk in 0..rows.div_ceil(CHUNK) {
            if chunk == self.chunks.len() {
                self.chunks.push(Vec::new());
            }
            let want = if chunk == 0 { rows.min(CHUNK) } else { CHUNK };
            if self.chunks[chunk].capacity() < want {
                grow_chunk(&mut self.chunks[chunk], want);
            }
        }
    }

    /// Makes the memory of `rows` rows in all ready, a step at a time: the
    /// index grown to hold them without doubling on the way (one doubling a
    /// call), then room reserved for them ([`RowTable::reserve`]) and a row
    /// written in every page of it past the rows (overwritten when a row
    /// comes there), at most `pages` pages a call. Returns the pages written
    /// (a doubling counts the new index's); 0 once the memory of `rows` rows
    /// is ready.
    ///
    /// Why: a burst of new rows (a worker emitting every flow of its table
    /// at once: the end of a capture, a stop) otherwise pays, row by row, for
    /// the first touch of their pages (the kernel zeroing them) and for the
    /// index's doublings, while the records queue up and the worker waits:
    /// at 2,000,000 rows, 224 MB of rows and a 32 MiB index. Made ready while
    /// the app waits for records, that work is off their path. A call takes
    /// at most as long as a doubling the table's own growth would make at
    /// that size, or the writes of `pages` pages.
    ///
    /// The memory is the table's own: what `rows` rows take, within the
    /// caller's bound. The first chunk moves when it grows past its room (as
    /// a vector does); later chunks never move.
    fn prepare(&mut self, rows: usize, pages: usize) -> usize {
        /// Rows a page step covers: every page of the room gets a write.
        const STEP: usize = PAGE_BYTES / size_of::<Row>();
        const _: () = assert!(STEP > 0, "a row larger than a page: step by rows");
        let rows = rows.min(MAX_TABLE_ROWS);
        if pages == 0 {
            return 0;
        }
        if index_bits(rows) > self.bits {
            self.resize_index(self.bits + 1);
            return (self.index.len() * size_of::<u64>()).div_ceil(PAGE_BYTES);
        }
        if rows <= self.len.max(self.prepared) {
            return 0;
        }
        self.reserve(rows);
        let mut at = self.prepared.max(self.len);
        let mut written = 0;
        while at < rows && written < pages {
            let (chunk, i) = (at >> CHUNK_BITS, at & (CHUNK - 1));
            let Some(room) = self.chunks.get_mut(chunk) else { break };
            let filled = room.len();
            if i < filled {
                at += filled - i;
                continue;
            }
            let Some(slot) = room.spare_capacity_mut().get_mut(i - filled) else {
                // Past this chunk's room (a first chunk smaller than CHUNK): the next chunk's.
                at = (chunk + 1) << CHUNK_BITS;
                continue;
            };
            slot.write(Row::default());
            written += 1;
            // The next step, or the next chunk's first row: every page of the room is written.
            at = (at + STEP).min((chunk + 1) << CHUNK_BITS);
        }
        self.prepared = at.min(rows);
        written
    }

    /// Every row, in position order.
    fn iter(&self) -> impl Iterator<Item = &Row> {
        self.chunks.iter().flatten()
    }
}

/// A memory page.
const PAGE_BYTES: usize = 4096;

/// The bits of an index that holds `rows` rows at most half full.
fn index_bits(rows: usize) -> u32 {
    (rows.saturating_mul(2)).next_power_of_two().trailing_zeros().max(MIN_INDEX_BITS)
}

/// An index of `1 << bits` empty slots, every page of it written once.
///
/// A large zeroed vector is fresh pages (`calloc`), and the index's first
/// touch of a page is a read (a probe), which maps the shared zero page;
/// the insert after it faults again to get a page of its own. Written here,
/// each page faults once (a 2 MiB index at 20,000 rows: 1,008 faults before,
/// 512 after). Its pages are soon used anyway: an index is made for at
/// least a 1/[`INDEX_JUMP`] of its slots' rows (four to a page).
fn empty_index(bits: u32) -> Vec<u64> {
    /// Slots per page.
    const PAGE_SLOTS: usize = PAGE_BYTES / size_of::<u64>();
    let mut index = vec![0u64; 1 << bits];
    // black_box: the compiler cannot tell these stores of 0 are to zeroes.
    let slots = std::hint::black_box(&mut index[..]);
    for s in slots.iter_mut().step_by(PAGE_SLOTS) {
        *s = 0;
    }
    if let Some(s) = slots.last_mut() {
        *s = 0;
    }
    index
}

/// Makes room for `want` rows in `rows` (address space: its pages are
/// touched as rows come).
fn grow_chunk(rows: &mut Vec<Row>, want: usize) {
    rows.reserve_exact(want.saturating_sub(rows.len()));
}

/// One aggregate table.
///
/// Bounded: once it holds `max_rows` rows (CJ_APP_MAX_ROWS), a direction
/// whose key is not already a row is added to the overflow row
/// ([`Key::OVERFLOW`]) instead, and counted in [`Aggregate::overflowed`]. Rows
/// already present keep counting exactly, every total stays exact, and the
/// table never holds more than `max_rows + 1` rows.
///
/// Rows live in insertion order ([`RowTable`]: chunks of rows and an
/// index of them), so a row has a stable position and the rows changed since
/// the last [`Aggregate::drain_changes`] are a list of positions: the
/// checkpoint writes only those (checkpoint.rs).
#[derive(Clone, Debug)]
pub struct Aggregate {
    primitives: Primitives,
    rows: RowTable,
    max_rows: usize,
    overflowed: u64,
    /// Positions of the rows changed since the last `drain_changes`, each once.
    changed: Vec<u32>,
    /// Per position: in `changed`.
    marked: Vec<bool>,
    /// The directions of [`Aggregate::add_batch`]'s records, hashed ahead.
    pending: Vec<Pending>,
    /// Position of the overflow row once looked up or made (rows never
    /// move), so that a full table finds it without a hash or a probe.
    overflow_at: Option<u32>,
}

/// A direction of a record in [`Aggregate::add_batch`], its key hashed.
#[derive(Clone, Copy, Debug)]
struct Pending {
    key: Key,
    c: Counters,
    hash: u64,
    /// Which record of the batch, and which of its sides.
    record: u32,
    side: u8,
    /// Every container name and outer address of the key had an id when
    /// hashed (else they are looked up again when the direction is counted:
    /// an earlier record of the batch may have added them).
    known: bool,
}

/// Directions between the prefetch of a direction's row and its count in
/// [`Aggregate::add_batch`].
const ROW_AHEAD: usize = 8;
/// Directions between the prefetch of a direction's index line and that of its row.
const INDEX_AHEAD: usize = 8;

impl Aggregate {
    /// An empty table keyed by `primitives`, without a row limit.
    pub fn new(primitives: Primitives) -> Self {
        Aggregate {
            primitives,
            rows: RowTable::default(),
            max_rows: usize::MAX,
            overflowed: 0,
            changed: Vec::new(),
            marked: Vec::new(),
            pending: Vec::new(),
            overflow_at: None,
        }
    }

    /// Bounds the table to `max_rows` rows plus the overflow row.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows.max(1);
        self
    }

    /// Makes room for `rows` rows in all (at most the row limit and the
    /// overflow row), so that growing to them moves nothing: the index is
    /// not doubled on the way past a 1/128 of its size, where it is made
    /// whole (see [`RowTable::reserve`]); the rows' own memory is reserved
    /// and touched as rows come.
    pub fn reserve_rows(&mut self, rows: usize) {
        self.rows.reserve(rows.min(self.max_rows.saturating_add(1)));
    }

    /// Rows the table has room for without moving any (tests).
    #[cfg(test)]
    pub fn room_for_rows(&self) -> usize {
        self.rows.chunks.iter().map(Vec::capacity).sum()
    }

    /// Makes the memory of `coming` more rows ready (at most the row limit
    /// and the overflow row in all), a step of at most `pages` pages of rows
    /// or one doubling of the index a call; returns the pages written (0:
    /// ready). See [`RowTable::prepare`].
    pub fn prepare_rows(&mut self, coming: usize, pages: usize) -> usize {
        let rows = self.rows.len().saturating_add(coming).min(self.max_rows.saturating_add(1));
        self.rows.prepare(rows, pages)
    }

    /// Directions folded into the overflow row because the table was full
    /// (one per direction of a record whose key was not a row).
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// The primitives of the key.
    pub fn primitives(&self) -> Primitives {
        self.primitives
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// Adds both directions of an IP record (anything else is ignored: see [`Totals`]).
    pub fn add_ip(&mut self, r: &FlowRecord) {
        self.add_batch(std::slice::from_ref(r));
    }

    /// Adds each of `records` in turn (as [`Aggregate::add_ip`] one by
    /// one would: the same rows in the same positions), the cache misses of several directions in
    /// flight together (the DPDK bulk lookup, in the detector's
    /// `FlowTable::packet_ahead` way): every direction of the batch is keyed
    /// and hashed first, then each is counted in order while the index line
    /// of the one [`INDEX_AHEAD`] + [`ROW_AHEAD`] directions on is
    /// prefetched, and the row its slot names for the one [`ROW_AHEAD`] on.
    pub fn add_batch(&mut self, records: &[FlowRecord]) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        for (i, r) in records.iter().enumerate() {
            if r.record_kind() != Some(RecordKind::Ip) {
                continue;
            }
            for side in 0..2 {
                // Only looked up here: ids are added when the row is made.
                if let Some((key, c, known)) = self.direction(r, side, false) {
                    // A key not known is hashed (if at all) when counted.
                    let hash = if known { self.rows.hash(&key) } else { 0 };
                    pending.push(Pending { key, c, hash, record: i as u32, side: side as u8, known });
                }
            }
        }
        for p in pending.iter().take(INDEX_AHEAD + ROW_AHEAD) {
            self.rows.prefetch_index(p.hash);
        }
        for i in 0..pending.len() {
            if let Some(ahead) = pending.get(i + INDEX_AHEAD + ROW_AHEAD) {
                self.rows.prefetch_index(ahead.hash);
            }
            if let Some(ahead) = pending.get(i + ROW_AHEAD) {
                self.rows.prefetch_row(ahead.hash);
            }
            let p = pending[i];
            if p.known {
                self.count(p.key, p.hash, &p.c);
            } else if let Some((key, c, known)) =
                // Keyed again: a name new to this batch may have been given
                // its id (and a row) by an earlier direction of it. With room
                // every id is made; a full table makes none.
                self.direction(&records[p.record as usize], usize::from(p.side), self.room())
            {
                if known {
                    let hash = self.rows.hash(&key);
                    self.count(key, hash, &c);
                } else {
                    // Full, and a name or address never interned: in no row.
                    self.overflow(&c);
                }
            }
        }
        self.pending = pending;
    }

    /// The key and counters of side `side`'s direction of IP record `r`, and
    /// whether every container name and outer address in the key has an id
    /// (with `add`, new ones get one); None when the direction makes no row.
    #[inline]
    fn direction(&self, r: &FlowRecord, side: usize, add: bool) -> Option<(Key, Counters, bool)> {
        let closes = r.end() != Some(EndReason::ActiveTimeout);
        let d = &r.dir[side];
        // A side without packets here still closes its directional flow when
        // it had packets in an earlier (refreshed) part.
        if d.packets == 0 && !(closes && r.had_packets(side)) {
            return None;
        }
        let (src, dst, sport, dport, outer) = if side == 0 {
            (&r.addr_a, &r.addr_b, r.port_a, r.port_b, (&r.tunnel_addr_a, &r.tunnel_addr_b))
        } else {
            (&r.addr_b, &r.addr_a, r.port_b, r.port_a, (&r.tunnel_addr_b, &r.tunnel_addr_a))
        };
        let mut key = self.key(r, src, dst, sport, dport);
        // Names and outer addresses never seen are in no row: the key is
        // new, and they are added to the process's tables only when its
        // row can be made (so a full table adds none).
        let known = self.interned_key(&mut key, r, side, outer, add);
        let c = Counters {
            packets: d.packets,
            ip_bytes: d.ip_bytes,
            frame_bytes: d.frame_bytes,
            flows: u64::from(closes && r.had_packets(side)),
            first_ns: if d.packets > 0 { r.first_ns } else { 0 },
            last_ns: if d.packets > 0 { r.last_ns } else { 0 },
        };
        Some((key, c, known))
    }

    /// Adds `c` to the row of `key` (hash `hash`; every id of the key
    /// found), made when absent and the table not full, else to the overflow
    /// row; marks the row changed.
    #[inline]
    fn count(&mut self, key: Key, hash: u64, c: &Counters) {
        match self.rows.find(hash, &key) {
            Ok(i) => self.add_at(i, c),
            Err(slot) if self.room() => {
                let i = self.rows.insert(slot, hash, key, *c);
                self.mark(i);
            }
            Err(_) => self.overflow(c),
        }
    }

    /// Adds `c` to the overflow row (made when absent: rows = max_rows + 1
    /// at most), counts it in [`Aggregate::overflowed`] and marks the row changed.
    fn overflow(&mut self, c: &Counters) {
        self.overflowed += 1;
        if let Some(i) = self.overflow_at {
            return self.add_at(i as usize, c);
        }
        let hash = self.rows.hash(&Key::OVERFLOW);
        let i = match self.rows.find(hash, &Key::OVERFLOW) {
            Ok(i) => {
                self.add_at(i, c);
                i
            }
            Err(slot) => {
                let i = self.rows.insert(slot, hash, Key::OVERFLOW, *c);
                self.mark(i);
                i
            }
        };
        // Positions fit u32: a table holds at most MAX_TABLE_ROWS rows.
        self.overflow_at = Some(i as u32);
    }

    /// Whether a row may still be made: fewer than the row limit (and than
    /// [`MAX_TABLE_ROWS`] less the overflow row's place).
    #[inline]
    fn room(&self) -> bool {
        self.rows.len() < self.max_rows.min(MAX_TABLE_ROWS - 1)
    }

    /// Adds `c` to the row at position `i` and marks it changed.
    #[inline]
    fn add_at(&mut self, i: usize, c: &Counters) {
        if let Some(row) = self.rows.counters_mut(i) {
            row.add(c);
        }
        self.mark(i);
    }

    /// Marks the row at position `i` changed.
    #[inline]
    fn mark(&mut self, i: usize) {
        if i >= self.marked.len() {
            self.marked.resize(i + 1, false);
        }
        if !self.marked[i] {
            self.marked[i] = true;
            // Positions fit u32: a table holds at most MAX_TABLE_ROWS rows.
            self.changed.push(i as u32);
        }
    }

    /// Hands `each` the rows changed since the last call (each once, in the
    /// order they first changed), and forgets them: what a checkpoint after
    /// the previous one must add. The list of positions keeps its room for
    /// the next checkpoint's.
    fn drain_changes(&mut self, mut each: impl FnMut(&Key, &Counters)) {
        let mut changed = std::mem::take(&mut self.changed);
        for &i in &changed {
            if let Some(m) = self.marked.get_mut(i as usize) {
                *m = false;
            }
            if let Some((k, c)) = self.get_index(i as usize) {
                each(k, c);
            }
        }
        changed.clear();
        self.changed = changed;
    }

    /// [`Aggregate::drain_changes`] as a list.
    #[cfg(test)]
    pub fn take_changes(&mut self) -> Vec<(Key, Counters)> {
        let mut rows = Vec::new();
        self.drain_changes(|k, c| rows.push((*k, *c)));
        rows
    }

    /// Forgets the changed rows (a full checkpoint holds every row).
    pub fn clear_changes(&mut self) {
        self.changed.clear();
        self.marked.clear();
    }

    /// Sets the row of `key` to `c` (a checkpoint's row, replayed at load);
    /// the row limit is the checkpoint's, already checked when it was counted.
    fn put_row(&mut self, key: Key, c: Counters) {
        let hash = self.rows.hash(&key);
        match self.rows.find(hash, &key) {
            Ok(i) => {
                if let Some(row) = self.rows.counters_mut(i) {
                    *row = c;
                }
            }
            Err(slot) => {
                self.rows.insert(slot, hash, key, c);
            }
        }
    }

    /// The row at position `i`.
    fn get_index(&self, i: usize) -> Option<(&Key, &Counters)> {
        self.rows.get(i).map(|(k, c)| (k, c))
    }

    /// The container names and tunnel fields of a direction's key (outer
    /// source and destination of that direction), for the primitives chosen.
    /// Each is looked up once; with `add`, one without an id gets one.
    /// The result: whether every one has an id now (those that had not, without
    /// `add`, are left none).
    fn interned_key(
        &self,
        k: &mut Key,
        r: &FlowRecord,
        side: usize,
        (src, dst): (&[u8; 16], &[u8; 16]),
        add: bool,
    ) -> bool {
        let p = self.primitives;
        let mut known = true;
        // With `add` only intern (it finds first): one lookup per value.
        let mut name = |v: &[u8; 32]| {
            if add {
                return Name::intern(v);
            }
            Name::find(v).unwrap_or_else(|| {
                known = false;
                Name::NONE
            })
        };
        if p.has(Primitive::SrcContainer) {
            k.src_container = name(&r.ctr[side].name);
        }
        if p.has(Primitive::DstContainer) {
            k.dst_container = name(&r.ctr[1 - side].name);
        }
        let mut addr = |v: &[u8; 16]| {
            if add {
                return OuterAddr::intern(v);
            }
            OuterAddr::find(v).unwrap_or_else(|| {
                known = false;
                OuterAddr::NONE
            })
        };
        if p.has(Primitive::OuterSrcHost) {
            k.outer_src = addr(src);
        }
        if p.has(Primitive::OuterDstHost) {
            k.outer_dst = addr(dst);
        }
        if p.has(Primitive::Tunnel) {
            k.tunnel = r.tunnel_kind;
        }
        if p.has(Primitive::OuterSrcHost) || p.has(Primitive::OuterDstHost) {
            k.outer_ip_version = r.tunnel_ip_version;
        }
        if p.has(Primitive::TunnelId) && r.tunnel_flags & station::record::TUNNEL_HAS_ID != 0 {
            k.tunnel_id = r.tunnel_id;
        }
        known
    }

    fn key(&self, r: &FlowRecord, src: &[u8; 16], dst: &[u8; 16], sport: u16, dport: u16) -> Key {
        let p = self.primitives;
        let mut k = Key::default();
        if p.has(Primitive::Vlan) {
            k.vlan = r.vlan;
        }
        if p.has(Primitive::SrcHost) || p.has(Primitive::DstHost) {
            k.ip_version = r.ip_version;
        }
        if p.has(Primitive::SrcHost) {
            k.src = *src;
        }
        if p.has(Primitive::DstHost) {
            k.dst = *dst;
        }
        if p.has(Primitive::SrcPort) {
            k.src_port = sport;
        }
        if p.has(Primitive::DstPort) {
            k.dst_port = dport;
        }
        if p.has(Primitive::Proto) {
            k.proto = r.proto;
        }
        k
    }

    /// The counters of one row.
    #[cfg(test)]
    pub fn get(&self, key: &Key) -> Option<&Counters> {
        let i = self.rows.find(self.rows.hash(key), key).ok()?;
        self.rows.get(i).map(|(_, c)| c)
    }

    /// Every row, in the order they appeared (for queries that filter before sorting).
    pub fn rows(&self) -> impl Iterator<Item = (&Key, &Counters)> {
        self.rows.iter().map(|(k, c)| (k, c))
    }

    /// All rows, sorted by IP bytes descending, then by key: deterministic.
    ///
    /// When the bytes of the order's first 48 ([`order_parts`]) that differ
    /// among the rows are at most 16 ([`Packing`]: IPv4 tables, or IPv6 ones
    /// whose addresses share most bytes), the sort's entries hold only those
    /// (16 or 24 bytes), else the first 40 whole (48 bytes). One more pass
    /// over the rows finds them; the sort then moves a third or half of the
    /// memory, and rows equal in their first 40 bytes but not in their ports
    /// are ordered without reading their keys.
    pub fn sorted(&self) -> Vec<(&Key, &Counters)> {
        let packing = Packing::of(self);
        if packing.bytes <= 8 {
            self.sorted_packed::<1>(&packing)
        } else if packing.bytes <= 16 {
            self.sorted_packed::<2>(&packing)
        } else {
            let mut v = self.sort_entries();
            self.radix_sort(&mut v, 0, Threads::Two);
            self.rows_of(v)
        }
    }

    /// [`Aggregate::sorted`] with leads of `N` words packed by `packing`.
    fn sorted_packed<const N: usize>(&self, packing: &Packing) -> Vec<(&Key, &Counters)> {
        let mut v: Vec<SortEntry<N>> = Vec::with_capacity(self.len());
        // The first byte of the lead that differs (none when every row's
        // first 48 bytes are the same), counted as the entries are made: the
        // sort's first pass over them places them at once.
        let depth = 8 * N - packing.bytes;
        let counted = packing.bytes > 0;
        // Within the lead when nothing differs (the counts are then unused).
        let counted_byte = depth.min(8 * N - 1);
        let mut count = [0usize; 256];
        // Chunk by chunk, not through `rows()`: a slice's loop for each.
        for chunk in &self.rows.chunks {
            let at = v.len();
            v.extend(chunk.iter().enumerate().map(|(i, (k, c))| {
                let e = SortEntry { lead: packing.pack(&order_parts(k, c)), row: position(at + i) };
                count[lead_byte(&e, counted_byte)] += 1;
                e
            }));
        }
        if counted && v.len() > SMALL_BUCKET {
            self.distribute(&mut v, depth, &count, Threads::Two);
        } else {
            v.sort_unstable_by(|a, b| self.order(a, b));
        }
        self.rows_of(v)
    }

    /// Sorts `v`, whose entries share their first `depth` bytes of the
    /// order, in place: one byte at a time over the `8 * N` inline bytes
    /// (counts, then each entry swapped into its byte's bucket, American flag
    /// sort), a comparison sort for small buckets and past the inline bytes.
    /// The same order as [`Aggregate::order`], without its scattered
    /// tie-breaks on most of the way. Bytes that are the same in every entry
    /// of `v` (the high bytes of small counters, the zeros of an IPv4 address
    /// in its 16-byte form) are found in one pass and skipped, not counted
    /// one by one.
    fn radix_sort<const N: usize>(&self, v: &mut [SortEntry<N>], depth: usize, threads: Threads) {
        let Some(depth) = (v.len() > SMALL_BUCKET).then(|| first_difference(v, depth)).flatten() else {
            v.sort_unstable_by(|a, b| self.order(a, b));
            return;
        };
        let mut count = [0usize; 256];
        for e in v.iter() {
            count[lead_byte(e, depth)] += 1;
        }
        self.distribute(v, depth, &count, threads);
    }

    /// Moves the entries of `v` to the buckets of their byte at `depth`
    /// (`count`: how many have each), then sorts each bucket from the byte
    /// after: with [`Threads::Two`], at least [`PARALLEL_MIN`] entries and
    /// two CPUs to run on, the buckets of about half the entries on a thread
    /// of their own (`cj-app-sort`) while this one sorts the others (the
    /// order is the same: the buckets are disjoint and each is sorted alone).
    fn distribute<const N: usize>(&self, v: &mut [SortEntry<N>], depth: usize, count: &[usize; 256], threads: Threads) {
        let byte = |e: &SortEntry<N>| lead_byte(e, depth);
        let mut start = [0usize; 256];
        let mut next = [0usize; 256];
        let mut at = 0;
        for d in 0..256 {
            start[d] = at;
            next[d] = at;
            at += count[d];
        }
        for d in 0..256 {
            let end = start[d] + count[d];
            while next[d] < end {
                let b = byte(&v[next[d]]);
                if b == d {
                    next[d] += 1;
                } else {
                    v.swap(next[d], next[b]);
                    next[b] += 1;
                }
            }
        }
        let sort_buckets =
            |v: &mut [SortEntry<N>], buckets: std::ops::Range<usize>, from: usize, big: Option<usize>| {
                for d in buckets {
                    if count[d] > 1 {
                        let threads = if big == Some(d) { Threads::Two } else { Threads::One };
                        self.radix_sort(&mut v[start[d] - from..start[d] - from + count[d]], depth + 1, threads);
                    }
                }
            };
        if threads == Threads::One || v.len() < PARALLEL_MIN || !two_cpus() {
            return sort_buckets(v, 0..256, 0, None);
        }
        // A bucket of more than half the entries (small flows' bytes, all
        // alike) is split at its own next byte; the others are sorted here.
        let big = (0..256).max_by_key(|&d| count[d]).unwrap_or(0);
        if count[big] * 2 > v.len() {
            return sort_buckets(v, 0..256, 0, Some(big));
        }
        // Else at the bucket boundary nearest half the entries: the other
        // thread takes the buckets before it.
        let split = (1..256).min_by_key(|&d| start[d].abs_diff(v.len() / 2)).unwrap_or(1);
        #[cfg(test)]
        tests::SORT_SPLITS.with(|n| n.set(n.get() + 1));
        let (low, high) = v.split_at_mut(start[split]);
        // Taken by whichever thread gets to it: the other one, or this one when no thread could be made.
        let low = std::sync::Mutex::new(Some(low));
        let take = || low.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        std::thread::scope(|s| {
            let other = std::thread::Builder::new()
                .name("cj-app-sort".into())
                .spawn_scoped(s, || take().map(|low| sort_buckets(low, 0..split, 0, None)));
            sort_buckets(high, split..256, start[split], None);
            if let Ok(other) = other {
                other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            }
            if let Some(low) = take() {
                sort_buckets(low, 0..split, 0, None);
            }
        });
    }

    /// Bytes descending, then the key's order: the leads, then (when they
    /// are equal, and so are the bytes they hold) the whole keys.
    fn order<const N: usize>(&self, a: &SortEntry<N>, b: &SortEntry<N>) -> std::cmp::Ordering {
        a.lead.cmp(&b.lead).then_with(|| {
            let key = |e: &SortEntry<N>| self.get_index(e.row as usize).map(|(k, _)| k);
            key(a).cmp(&key(b))
        })
    }

    /// The rows of sorted entries, in their order (in the entries' allocation).
    fn rows_of<const N: usize>(&self, v: Vec<SortEntry<N>>) -> Vec<(&Key, &Counters)> {
        v.into_iter().filter_map(|e| self.get_index(e.row as usize)).collect()
    }

    /// The first `n` rows of [`Aggregate::sorted`], without sorting the rest.
    pub fn top(&self, n: usize) -> Vec<(&Key, &Counters)> {
        /// Up to this many (the printed summary's ten), one pass keeps the best in order.
        const FEW: usize = 64;
        if n == 0 {
            return Vec::new();
        }
        if n <= FEW {
            let mut best: Vec<SortEntry> = Vec::with_capacity(n + 1);
            for (i, (k, c)) in self.rows().enumerate() {
                let e = SortEntry::new(i, k, c);
                if best.len() == n && best.last().is_some_and(|w| self.order(&e, w).is_ge()) {
                    continue;
                }
                let at = best.partition_point(|b| self.order(b, &e).is_lt());
                best.insert(at, e);
                best.truncate(n);
            }
            return self.rows_of(best);
        }
        let mut v = self.sort_entries();
        if n < v.len() {
            v.select_nth_unstable_by(n - 1, |a, b| self.order(a, b));
            v.truncate(n);
        }
        v.sort_unstable_by(|a, b| self.order(a, b));
        self.rows_of(v)
    }

    fn sort_entries(&self) -> Vec<SortEntry> {
        self.rows().enumerate().map(|(i, (k, c))| SortEntry::new(i, k, c)).collect()
    }

    /// Sum of every row.
    #[cfg(test)]
    pub fn sum(&self) -> Counters {
        let mut t = Counters::default();
        for (_, c) in self.rows() {
            t.add(c);
        }
        t
    }
}

/// The checkpoint's form of a table: its settings and its rows, each row
/// one byte string of [`RowBytes`]'s encoding (a few copies per row, not a
/// serde call per byte of its key; streamed, never the whole table at once).
#[derive(serde::Serialize, serde::Deserialize)]
struct AggregateWire<R> {
    primitives: Primitives,
    max_rows: usize,
    overflowed: u64,
    rows: R,
}

/// Serializes a table's rows as a sequence of byte strings.
struct RowSeq<'a>(&'a Aggregate);

impl serde::Serialize for RowSeq<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = s.serialize_seq(Some(self.0.rows.len()))?;
        let mut row = RowBytes::default();
        let layout = RowLayout::of(self.0.primitives);
        for (k, c) in self.0.rows() {
            row.0.clear();
            row.push(layout, k, c);
            seq.serialize_element(&row)?;
        }
        seq.end()
    }
}

/// Deserializes a sequence of rows into one [`RowBytes`] (rows back to back).
struct RowList(RowBytes);

impl<'de> serde::Deserialize<'de> for RowList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RowList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of rows")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<RowList, A::Error> {
                let mut all = Vec::new();
                while let Some(row) = seq.next_element::<&'de [u8]>()? {
                    all.extend_from_slice(row);
                }
                Ok(RowList(RowBytes(all)))
            }
        }
        d.deserialize_seq(V)
    }
}

impl serde::Serialize for Aggregate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        AggregateWire {
            primitives: self.primitives,
            max_rows: self.max_rows,
            overflowed: self.overflowed,
            rows: RowSeq(self),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Aggregate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = AggregateWire::<RowList>::deserialize(d)?;
        let mut a = Aggregate::new(w.primitives).with_max_rows(w.max_rows);
        a.overflowed = w.overflowed;
        w.rows.0.replay(w.primitives, |k, c| a.put_row(k, c)).map_err(serde::de::Error::custom)?;
        Ok(a)
    }
}

/// The rows of a table changed since the previous checkpoint, with its overflow count.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct TableChanges {
    overflowed: u64,
    rows: RowBytes,
    /// Rows in `rows` (not saved: the bytes say it).
    #[serde(skip)]
    count: usize,
}

impl Aggregate {
    /// The rows changed since the last call, encoded; forgets them.
    ///
    /// Each row is encoded as it is met ([`Aggregate::drain_changes`]: no list
    /// of them is built), into bytes sized once for the rows' usual length.
    fn changes(&mut self) -> TableChanges {
        let layout = RowLayout::of(self.primitives);
        let overflowed = self.overflowed;
        let mut rows = RowBytes(Vec::with_capacity(self.changed.len() * ROW_BYTES_USUAL));
        let mut count = 0;
        self.drain_changes(|k, c| {
            rows.push(layout, k, c);
            count += 1;
        });
        TableChanges { overflowed, rows, count }
    }

    /// Replays changes saved by [`Aggregate::changes`]: each row as saved.
    fn apply(&mut self, t: TableChanges) -> Result<(), String> {
        self.overflowed = t.overflowed;
        let p = self.primitives;
        t.rows.replay(p, |k, c| self.put_row(k, c))
    }
}

/// Rows encoded back to back: per row a flags byte, the key fields of the
/// chosen primitives only (the others are zero in every key), then the
/// counters, little-endian. Compact where values allow, each choice in the
/// flags: an IPv4 address whose other 12 bytes are zero in 4 bytes (inner
/// and outer apart), the four counters in 4 bytes each when all fit, the
/// last packet time as 4 bytes after the first when the difference fits.
#[derive(Debug, Default)]
struct RowBytes(Vec<u8>);

/// Bytes a row of [`RowBytes`] usually takes (the default primitives with
/// IPv4 hosts, short counters and a short span: 43), rounded up: the room
/// reserved per changed row (longer rows only make the vector grow).
const ROW_BYTES_USUAL: usize = 48;

/// The row flags of [`RowBytes`].
mod row_flag {
    /// The overflow row.
    pub const OVERFLOW: u8 = 1;
    /// `src` and `dst` in 4 bytes each.
    pub const SHORT_HOSTS: u8 = 2;
    /// `outer_src` and `outer_dst` in 4 bytes each.
    pub const SHORT_OUTER: u8 = 4;
    /// Packets, IP bytes, frame bytes and flows in 4 bytes each.
    pub const SHORT_COUNTERS: u8 = 8;
    /// The last packet time as 4 bytes after the first.
    pub const SHORT_SPAN: u8 = 16;
    /// Every flag.
    pub const ALL: u8 = 31;
}

/// An address of `version` that fits 4 bytes (IPv4, the rest zero).
fn short_addr(version: u8, a: &[u8; 16]) -> bool {
    version == 4 && a[4..] == [0; 12]
}

/// `bit` if `on`, else no flag.
fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

/// How a table's rows are encoded in [`RowBytes`]: its primitives, and
/// whether they are the default set, whose usual row has a fixed layout
/// ([`RowBytes::push_five_tuple`]). Looked at once per save, not per row.
#[derive(Clone, Copy)]
struct RowLayout {
    p: Primitives,
    five_tuple: bool,
}

impl RowLayout {
    fn of(p: Primitives) -> Self {
        RowLayout { p, five_tuple: p == Primitives::default_set() }
    }
}

/// Bytes of the usual row of the default primitives
/// ([`RowBytes::push_five_tuple`]): flags, IP version, two IPv4 hosts, two
/// ports, the protocol, four 4-byte counters, the first packet time and a
/// 4-byte span.
const FIVE_TUPLE_ROW: usize = 1 + 1 + 4 + 4 + 2 + 2 + 1 + 4 * 4 + 8 + 4;

impl RowBytes {
    /// Appends the row of `k` and `c` of a table of `layout`'s primitives.
    #[inline]
    fn push(&mut self, layout: RowLayout, k: &Key, c: &Counters) {
        if !(layout.five_tuple && self.push_five_tuple(k, c)) {
            self.push_any(layout.p, k, c);
        }
    }

    /// Appends a row of the default primitives when it is the usual one
    /// (IPv4 hosts, counters and span in 4 bytes, no outer IPv4): the bytes
    /// [`RowBytes::push_any`] writes for it, composed at fixed places and
    /// appended in one fixed-size copy (most rows of most tables, so the
    /// checkpoint's cost on the intake's path is mostly this). Else appends
    /// nothing and says so.
    #[inline]
    fn push_five_tuple(&mut self, k: &Key, c: &Counters) -> bool {
        use row_flag as F;
        let short_hosts = short_addr(k.ip_version, &k.src) && short_addr(k.ip_version, &k.dst);
        let span = c.last_ns.wrapping_sub(c.first_ns);
        let short = (c.packets | c.ip_bytes | c.frame_bytes | c.flows | span) >> 32 == 0;
        // Outer IPv4 would set SHORT_OUTER (its addresses are zero unless
        // chosen, and reading them is a lookup): left to the general path.
        if !(short_hosts && short && k.outer_ip_version != 4) {
            return false;
        }
        // Checked above: the counters and the span fit 4 bytes.
        let u32s = [c.packets as u32, c.ip_bytes as u32, c.frame_bytes as u32, c.flows as u32, span as u32];
        let mut row = [0u8; FIVE_TUPLE_ROW];
        row[0] = flag(k.overflow, F::OVERFLOW) | F::SHORT_HOSTS | F::SHORT_COUNTERS | F::SHORT_SPAN;
        row[1] = k.ip_version;
        row[2..6].copy_from_slice(&k.src[..4]);
        row[6..10].copy_from_slice(&k.dst[..4]);
        row[10..12].copy_from_slice(&k.src_port.to_le_bytes());
        row[12..14].copy_from_slice(&k.dst_port.to_le_bytes());
        row[14] = k.proto;
        for (i, v) in u32s[..4].iter().enumerate() {
            row[15 + 4 * i..19 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        row[31..39].copy_from_slice(&c.first_ns.to_le_bytes());
        row[39..43].copy_from_slice(&u32s[4].to_le_bytes());
        self.0.extend_from_slice(&row);
        true
    }

    /// Appends the row of `k` and `c` of a table of `p`, whatever its fields.
    fn push_any(&mut self, p: Primitives, k: &Key, c: &Counters) {
        use row_flag as F;
        use Primitive as P;
        let hosts = p.has(P::SrcHost) || p.has(P::DstHost);
        let outer = p.has(P::OuterSrcHost) || p.has(P::OuterDstHost);
        let short_hosts = short_addr(k.ip_version, &k.src) && short_addr(k.ip_version, &k.dst);
        let (osrc, odst) = (k.outer_src.bytes(), k.outer_dst.bytes());
        let short_outer = short_addr(k.outer_ip_version, &osrc) && short_addr(k.outer_ip_version, &odst);
        let short_counters = (c.packets | c.ip_bytes | c.frame_bytes | c.flows) >> 32 == 0;
        let span = c.last_ns.wrapping_sub(c.first_ns);
        let short_span = span >> 32 == 0;
        let flags = flag(k.overflow, F::OVERFLOW)
            | flag(short_hosts, F::SHORT_HOSTS)
            | flag(short_outer, F::SHORT_OUTER)
            | flag(short_counters, F::SHORT_COUNTERS)
            | flag(short_span, F::SHORT_SPAN);
        // Fixed-size copies at a cursor in room made at the end of the
        // vector, cut to the row's length after (no row composed elsewhere
        // and copied in at a length known only at the end).
        let at = self.0.len();
        self.0.resize(at + ROW_BYTES_MAX, 0);
        let mut row = RowText { b: &mut self.0[at..], n: 0 };
        row.put([flags]);
        if p.has(P::Vlan) {
            row.put(k.vlan.to_le_bytes());
        }
        if hosts {
            row.put([k.ip_version]);
        }
        if p.has(P::SrcHost) {
            row.addr(&k.src, short_hosts);
        }
        if p.has(P::DstHost) {
            row.addr(&k.dst, short_hosts);
        }
        if p.has(P::SrcPort) {
            row.put(k.src_port.to_le_bytes());
        }
        if p.has(P::DstPort) {
            row.put(k.dst_port.to_le_bytes());
        }
        if p.has(P::Proto) {
            row.put([k.proto]);
        }
        if p.has(P::SrcContainer) {
            row.put(k.src_container.bytes());
        }
        if p.has(P::DstContainer) {
            row.put(k.dst_container.bytes());
        }
        if p.has(P::Tunnel) {
            row.put([k.tunnel]);
        }
        if outer {
            row.put([k.outer_ip_version]);
        }
        if p.has(P::OuterSrcHost) {
            row.addr(&osrc, short_outer);
        }
        if p.has(P::OuterDstHost) {
            row.addr(&odst, short_outer);
        }
        if p.has(P::TunnelId) {
            row.put(k.tunnel_id.to_le_bytes());
        }
        for v in [c.packets, c.ip_bytes, c.frame_bytes, c.flows] {
            if short_counters {
                // Checked above: fits.
                row.put((v as u32).to_le_bytes());
            } else {
                row.put(v.to_le_bytes());
            }
        }
        row.put(c.first_ns.to_le_bytes());
        if short_span {
            // Checked above: fits.
            row.put((span as u32).to_le_bytes());
        } else {
            row.put(c.last_ns.to_le_bytes());
        }
        let n = row.n;
        self.0.truncate(at + n);
    }

    /// Decodes every row in order and hands it to `put`.
    ///
    /// # Errors
    /// The bytes are not whole rows of `p`, or a row's flags are unknown.
    fn replay(&self, p: Primitives, mut put: impl FnMut(Key, Counters)) -> Result<(), String> {
        use row_flag as F;
        use Primitive as P;
        let hosts = p.has(P::SrcHost) || p.has(P::DstHost);
        let outer = p.has(P::OuterSrcHost) || p.has(P::OuterDstHost);
        let mut r = Reader { rest: &self.0, short: false };
        while !r.rest.is_empty() {
            let flags = r.byte();
            if flags & !F::ALL != 0 {
                return Err(format!("a row's flags are {flags}"));
            }
            let addr = |r: &mut Reader<'_>, short: bool| {
                if short {
                    let mut a = [0u8; 16];
                    a[..4].copy_from_slice(&r.take::<4>());
                    a
                } else {
                    r.take::<16>()
                }
            };
            let (short_hosts, short_outer) = (flags & F::SHORT_HOSTS != 0, flags & F::SHORT_OUTER != 0);
            let mut k = Key { overflow: flags & F::OVERFLOW != 0, ..Key::default() };
            if p.has(P::Vlan) {
                k.vlan = u16::from_le_bytes(r.take());
            }
            if hosts {
                k.ip_version = r.byte();
            }
            if p.has(P::SrcHost) {
                k.src = addr(&mut r, short_hosts);
            }
            if p.has(P::DstHost) {
                k.dst = addr(&mut r, short_hosts);
            }
            if p.has(P::SrcPort) {
                k.src_port = u16::from_le_bytes(r.take());
            }
            if p.has(P::DstPort) {
                k.dst_port = u16::from_le_bytes(r.take());
            }
            if p.has(P::Proto) {
                k.proto = r.byte();
            }
            if p.has(P::SrcContainer) {
                k.src_container = Name::intern(&r.take());
            }
            if p.has(P::DstContainer) {
                k.dst_container = Name::intern(&r.take());
            }
            if p.has(P::Tunnel) {
                k.tunnel = r.byte();
            }
            if outer {
                k.outer_ip_version = r.byte();
            }
            if p.has(P::OuterSrcHost) {
                k.outer_src = OuterAddr::intern(&addr(&mut r, short_outer));
            }
            if p.has(P::OuterDstHost) {
                k.outer_dst = OuterAddr::intern(&addr(&mut r, short_outer));
            }
            if p.has(P::TunnelId) {
                k.tunnel_id = u32::from_le_bytes(r.take());
            }
            let mut v = [0u64; 4];
            for x in &mut v {
                *x = if flags & F::SHORT_COUNTERS != 0 {
                    u64::from(u32::from_le_bytes(r.take()))
                } else {
                    u64::from_le_bytes(r.take())
                };
            }
            let first_ns = u64::from_le_bytes(r.take());
            let last_ns = if flags & F::SHORT_SPAN != 0 {
                first_ns.wrapping_add(u64::from(u32::from_le_bytes(r.take())))
            } else {
                u64::from_le_bytes(r.take())
            };
            if r.short {
                return Err(format!("{} bytes of rows end inside a row", self.0.len()));
            }
            let [packets, ip_bytes, frame_bytes, flows] = v;
            put(k, Counters { packets, ip_bytes, frame_bytes, flows, first_ns, last_ns });
        }
        Ok(())
    }
}

/// The room made for a row of [`RowBytes`] at the end of its vector: a row
/// is at most 1 + 2 + 1 + 4 × 16 + 2 × 32 + 2 + 2 + 1 + 1 + 1 + 4 key bytes
/// and 48 counter bytes (191; a test builds that row). The vector may grow
/// for the room where the row alone would have fitted: once, at most.
const ROW_BYTES_MAX: usize = 192;

/// One row of [`RowBytes`] being composed in its room at the end of the vector.
struct RowText<'a> {
    b: &'a mut [u8],
    n: usize,
}

impl RowText<'_> {
    #[inline(always)]
    fn put<const N: usize>(&mut self, v: [u8; N]) {
        // Within the room: the fields of a row add up to at most 191 bytes.
        debug_assert!(self.n + N <= self.b.len(), "a checkpoint row past its room (a bug: report it)");
        if let Some(to) = self.b.get_mut(self.n..self.n + N) {
            to.copy_from_slice(&v);
            self.n += N;
        }
    }

    #[inline(always)]
    fn addr(&mut self, a: &[u8; 16], short: bool) {
        if short {
            self.put([a[0], a[1], a[2], a[3]]);
        } else {
            self.put(*a);
        }
    }
}

/// Reads fixed-size fields off rows; past the end it reads zeros and says so (`short`).
struct Reader<'a> {
    rest: &'a [u8],
    /// A field was cut by the end of the bytes.
    short: bool,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.rest.len());
        self.short |= n < N;
        out[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        out
    }

    fn byte(&mut self) -> u8 {
        self.take::<1>()[0]
    }
}

impl serde::Serialize for RowBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RowBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RowBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string of rows")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<RowBytes, E> {
                Ok(RowBytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<RowBytes, E> {
                Ok(RowBytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Totals of the records of one queue (or of all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Valid records of every kind.
    pub records: u64,
    /// IP records.
    pub ip_records: u64,
    /// Directional flows (the FLOWS column summed).
    pub flows: u64,
    /// Packets in IP records.
    pub packets: u64,
    /// IP bytes in IP records.
    pub bytes: u64,
    /// Frame bytes in IP records.
    pub frame_bytes: u64,
    /// Non-IP records.
    pub non_ip_records: u64,
    /// Frames in non-IP records.
    pub non_ip_frames: u64,
    /// Frame bytes in non-IP records.
    pub non_ip_frame_bytes: u64,
    /// Malformed-IP records.
    pub malformed_records: u64,
    /// Frames in malformed records.
    pub malformed_frames: u64,
    /// Frame bytes in malformed records.
    pub malformed_frame_bytes: u64,
}

impl Totals {
    /// Adds a valid record.
    pub fn add(&mut self, r: &FlowRecord) {
        let frames = r.packets();
        let frame_bytes = r.dir[0].frame_bytes + r.dir[1].frame_bytes;
        self.records += 1;
        match r.record_kind() {
            Some(RecordKind::Ip) => {
                self.ip_records += 1;
                self.packets += frames;
                self.bytes += r.dir[0].ip_bytes + r.dir[1].ip_bytes;
                self.frame_bytes += frame_bytes;
                if r.end() != Some(EndReason::ActiveTimeout) {
                    self.flows += u64::from(r.had_packets(0)) + u64::from(r.had_packets(1));
                }
            }
            Some(RecordKind::NonIp) => {
                self.non_ip_records += 1;
                self.non_ip_frames += frames;
                self.non_ip_frame_bytes += frame_bytes;
            }
            Some(RecordKind::Malformed) => {
                self.malformed_records += 1;
                self.malformed_frames += frames;
                self.malformed_frame_bytes += frame_bytes;
            }
            None => {}
        }
    }

    /// Every frame the records account for: IP packets, non-IP and malformed frames.
    #[cfg(test)]
    pub fn frames(&self) -> u64 {
        self.packets + self.non_ip_frames + self.malformed_frames
    }

    /// Adds another queue's totals.
    pub fn merge(&mut self, o: &Totals) {
        self.records += o.records;
        self.ip_records += o.ip_records;
        self.flows += o.flows;
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.frame_bytes += o.frame_bytes;
        self.non_ip_records += o.non_ip_records;
        self.non_ip_frames += o.non_ip_frames;
        self.non_ip_frame_bytes += o.non_ip_frame_bytes;
        self.malformed_records += o.malformed_records;
        self.malformed_frames += o.malformed_frames;
        self.malformed_frame_bytes += o.malformed_frame_bytes;
    }
}

/// What a checkpoint adds to the previous one ([`Accounts::take_changes`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AccountsChanges<'a> {
    per_queue: std::borrow::Cow<'a, [Totals]>,
    containers: std::borrow::Cow<'a, Containers>,
    tables: Vec<TableChanges>,
}

impl AccountsChanges<'_> {
    /// Rows in it, every table: the changed rows of the flow tables and
    /// every row of the per-container flow tables (carried whole).
    pub fn rows(&self) -> usize {
        self.tables.iter().map(|t| t.count).sum::<usize>() + self.containers.log_rows()
    }
}

/// Everything the app has accounted: one merged table, or one per queue in
/// fan-out mode (where every worker sees every packet), plus per-queue totals.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Accounts {
    queues: Vec<u32>,
    fan_out: bool,
    tables: Vec<Aggregate>,
    per_queue: Vec<Totals>,
    containers: Containers,
    max_rows: usize,
}

impl Accounts {
    /// Accounts for the record queues `queues` (in intake order).
    pub fn new(primitives: Primitives, queues: &[u32], fan_out: bool) -> Self {
        let n_tables = if fan_out { queues.len().max(1) } else { 1 };
        Accounts {
            queues: queues.to_vec(),
            fan_out,
            tables: (0..n_tables).map(|_| Aggregate::new(primitives)).collect(),
            per_queue: vec![Totals::default(); queues.len()],
            containers: Containers::new(false),
            max_rows: usize::MAX,
        }
    }

    /// Keeps per-container flow logs too.
    pub fn with_container_logs(mut self, logs: bool) -> Self {
        self.containers = Containers::new(logs).with_max_rows(self.max_rows);
        self
    }

    /// Bounds every table to `max_rows` rows plus the overflow row (CJ_APP_MAX_ROWS).
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows;
        self.tables = self.tables.into_iter().map(|t| t.with_max_rows(max_rows)).collect();
        self.containers = self.containers.with_max_rows(max_rows);
        self
    }

    /// Makes room for `rows` rows in every table (see [`Aggregate::reserve_rows`]).
    pub fn reserve_rows(&mut self, rows: usize) {
        self.tables.iter_mut().for_each(|t| t.reserve_rows(rows));
    }

    /// Makes the memory of the rows coming from each queue ready (`coming`,
    /// in intake order: into that queue's table in fan-out mode, else all
    /// into the one table), a step of about `pages` pages a call (or one
    /// doubling of an index); returns the pages written (0: ready). See
    /// [`Aggregate::prepare_rows`].
    pub fn prepare_rows(&mut self, coming: &[usize], pages: usize) -> usize {
        if self.fan_out {
            let mut written = 0;
            for (t, &n) in self.tables.iter_mut().zip(coming) {
                if written >= pages {
                    break;
                }
                // A doubling of an index may pass what is left: the step ends there.
                written += t.prepare_rows(n, pages - written);
            }
            written
        } else {
            let all = coming.iter().fold(0usize, |a, &n| a.saturating_add(n));
            self.tables.first_mut().map_or(0, |t| t.prepare_rows(all, pages))
        }
    }

    /// Directions folded into overflow rows, every table (see [`Aggregate::overflowed`]).
    pub fn rows_overflowed(&self) -> u64 {
        self.tables.iter().map(Aggregate::overflowed).sum::<u64>()
            + self.containers.logs().map_or(0, |l| l.values().map(Aggregate::overflowed).sum())
    }

    /// Per-container totals (the first queue's records only in fan-out mode).
    pub fn containers(&self) -> &Containers {
        &self.containers
    }

    /// Adds a valid record read from the queue at index `qi` of the intake
    /// (the tests' way: the app adds a batch at a time).
    #[cfg(test)]
    pub fn add(&mut self, qi: usize, r: &FlowRecord) {
        self.add_batch(qi, std::slice::from_ref(r));
    }

    /// Adds the valid records `records`, read in turn from the queue at
    /// index `qi` of the intake: to its totals, the containers and the
    /// table, whose lookups are batched ([`Aggregate::add_batch`]: the rows
    /// of [`Aggregate::add_ip`] one record after another).
    pub fn add_batch(&mut self, qi: usize, records: &[FlowRecord]) {
        if let Some(t) = self.per_queue.get_mut(qi) {
            records.iter().for_each(|r| t.add(r));
        }
        if !self.fan_out || qi == 0 {
            records.iter().for_each(|r| self.containers.add(r));
        }
        let ti = if self.fan_out { qi } else { 0 };
        if let Some(table) = self.tables.get_mut(ti) {
            table.add_batch(records);
        }
    }

    /// What changed since the previous call, for a checkpoint that adds to
    /// the last one: the rows changed in every table (forgotten here), the
    /// totals and the containers whole.
    pub fn take_changes(&mut self) -> AccountsChanges<'_> {
        self.containers.clear_changes();
        let tables = self.tables.iter_mut().map(Aggregate::changes).collect();
        AccountsChanges {
            per_queue: std::borrow::Cow::Borrowed(&self.per_queue),
            containers: std::borrow::Cow::Borrowed(&self.containers),
            tables,
        }
    }

    /// Forgets what changed (a checkpoint of everything was saved).
    pub fn clear_changes(&mut self) {
        self.containers.clear_changes();
        self.tables.iter_mut().for_each(Aggregate::clear_changes);
    }

    /// Replays changes saved by [`Accounts::take_changes`].
    ///
    /// # Errors
    /// They are of other queues or tables, or their rows are damaged.
    pub fn apply_changes(&mut self, c: AccountsChanges<'_>) -> Result<(), String> {
        if c.per_queue.len() != self.per_queue.len() || c.tables.len() != self.tables.len() {
            return Err(format!(
                "changes of {} queue(s) and {} table(s) for {} and {}",
                c.per_queue.len(),
                c.tables.len(),
                self.per_queue.len(),
                self.tables.len()
            ));
        }
        self.per_queue = c.per_queue.into_owned();
        self.containers = c.containers.into_owned();
        for (t, changes) in self.tables.iter_mut().zip(c.tables) {
            t.apply(changes)?;
        }
        Ok(())
    }

    /// Rows in every table, the per-container flow tables too.
    pub fn rows(&self) -> usize {
        self.tables.iter().map(Aggregate::len).sum::<usize>() + self.containers.log_rows()
    }

    /// Whether there is one table per queue.
    pub fn fan_out(&self) -> bool {
        self.fan_out
    }

    /// Queue numbers, in intake order.
    pub fn queues(&self) -> &[u32] {
        &self.queues
    }

    /// The main table: the merged one, or the first queue's in fan-out mode.
    pub fn main_table(&self) -> &Aggregate {
        &self.tables[0]
    }

    /// In fan-out mode, each queue with its table.
    pub fn queue_tables(&self) -> Vec<(u32, &Aggregate)> {
        if self.fan_out {
            self.queues.iter().copied().zip(self.tables.iter()).collect()
        } else {
            Vec::new()
        }
    }

    /// Totals per queue, in intake order.
    pub fn per_queue(&self) -> &[Totals] {
        &self.per_queue
    }

    /// Totals over every queue (in fan-out mode every packet is in each queue).
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for q in &self.per_queue {
            t.merge(q);
        }
        t
    }

    /// Totals of what the main table shows: all queues, or the first in fan-out mode.
    pub fn main_totals(&self) -> Totals {
        if self.fan_out {
            self.per_queue.first().copied().unwrap_or_default()
        } else {
            self.totals()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use station::record::DirCounters;

    pub(crate) fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&a);
        b
    }

    fn dir(packets: u64, ip_bytes: u64) -> DirCounters {
        // Saturating: tests of the widest fields give counters near u64::MAX.
        DirCounters {
            packets,
            ip_bytes,
            frame_bytes: ip_bytes.saturating_add(packets.saturating_mul(14)),
            ..Default::default()
        }
    }

    /// A TCP record a(10.0.0.1:1234) -> b(10.0.0.2:80).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ip_record(
        a: [u8; 4],
        pa: u16,
        b: [u8; 4],
        pb: u16,
        proto: u8,
        ab: (u64, u64),
        ba: (u64, u64),
        end: EndReason,
    ) -> FlowRecord {
        FlowRecord {
            kind: RecordKind::Ip as u8,
            ip_version: 4,
            ethertype: 0x0800,
            proto,
            addr_a: v4(a),
            addr_b: v4(b),
            port_a: pa,
            port_b: pb,
            dir: [dir(ab.0, ab.1), dir(ba.0, ba.1)],
            end_reason: end as u8,
            ..Default::default()
        }
    }

    fn default_key(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, proto: u8) -> Key {
        Key {
            ip_version: 4,
            src: v4(src),
            dst: v4(dst),
            src_port: sp,
            dst_port: dp,
            proto,
            vlan: 0,
            ..Default::default()
        }
    }

    const A: [u8; 4] = [10, 0, 0, 1];
    const B: [u8; 4] = [10, 0, 0, 2];

    #[test]
    fn directional_split() {
        let mut agg = Aggregate::new(Primitives::default_set());
        agg.add_ip(&ip_record(A, 1234, B, 80, 6, (3, 180), (2, 1500), EndReason::EndOfFlow));
        assert_eq!(agg.len(), 2);
        let ab = agg.get(&default_key(A, 1234, B, 80, 6)).unwrap();
        assert_eq!((ab.packets, ab.ip_bytes, ab.frame_bytes, ab.flows), (3, 180, 180 + 42, 1));
        let ba = agg.get(&default_key(B, 80, A, 1234, 6)).unwrap();
        assert_eq!((ba.packets, ba.ip_bytes, ba.frame_bytes, ba.flows), (2, 1500, 1528, 1));
        // Sorted by bytes descending.
        let rows = agg.sorted();
        assert_eq!(*rows[0].0, default_key(B, 80, A, 1234, 6));
    }

    #[test]
    fn rows_sort_by_bytes_descending_then_by_the_whole_key_as_a_plain_sort_orders_them() {
        // Many ties on bytes, keys that differ in every byte the inline words
        // hold and past them (the last bytes of the destination, ports, VLAN).
        let p = Primitives::parse_list(["vlan", "src_host", "dst_host", "src_port", "dst_port", "proto"], "t").unwrap();
        let mut agg = Aggregate::new(p);
        let mut x = 7u32;
        for _ in 0..3000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let b = x.to_be_bytes();
            let mut r = ip_record(
                [10, b[0] & 3, 0, b[1] & 1],
                u16::from(b[2] & 3),
                [172, 16, b[3] & 1, b[0] >> 6],
                80,
                6 + (b[1] >> 7),
                (1, 40 + u64::from(b[2] >> 6) * 10),
                (1, 40),
                EndReason::IdleTimeout,
            );
            r.vlan = u16::from(b[3] >> 7);
            if b[1] & 0x40 != 0 {
                r.ip_version = 6;
                r.addr_a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, b[2] >> 7, 0, b[0] & 1];
            }
            agg.add_ip(&r);
        }
        let mut truth: Vec<(Key, Counters)> = agg.rows().map(|(k, c)| (*k, *c)).collect();
        truth.sort_by(|a, b| b.1.ip_bytes.cmp(&a.1.ip_bytes).then(a.0.cmp(&b.0)));
        let sorted: Vec<(Key, Counters)> = agg.sorted().into_iter().map(|(k, c)| (*k, *c)).collect();
        assert!(truth.len() > 200, "{} rows", truth.len());
        assert_eq!(sorted, truth);
        let top: Vec<(Key, Counters)> = agg.top(50).into_iter().map(|(k, c)| (*k, *c)).collect();
        assert_eq!(top, truth[..50]);
    }

    #[test]
    fn rows_with_equal_bytes_sort_by_container_name_not_by_arrival() {
        // Names arrive in reverse order, so their ids do too; the files must
        // still list them by name.
        let p = Primitives::parse_list(["src_container", "dst_container"], "t").unwrap();
        let mut agg = Aggregate::new(p);
        let names = ["zz-sort-test", "mm-sort-test", "aa-sort-test", ""];
        for (i, n) in names.iter().enumerate() {
            let mut r = ip_record(A, 1000 + i as u16, B, 80, 6, (1, 40), (0, 0), EndReason::IdleTimeout);
            r.ctr[0].name[..n.len()].copy_from_slice(n.as_bytes());
            agg.add_ip(&r);
        }
        let got: Vec<String> = agg
            .sorted()
            .into_iter()
            .map(|(k, _)| station::record::text_of(&k.src_container.bytes()).to_string())
            .collect();
        let mut truth: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        truth.sort();
        assert_eq!(got, truth);
    }

    /// How far apart the rows of [`random_table`] are: the random bits of
    /// IPv4 addresses (in 10/8), ports and byte counts; `v6` records in 4
    /// IPv6 instead, the last 12 bytes of each address random under `addr`'s
    /// low byte; VLANs 0-3 when `vlan`.
    #[derive(Clone, Copy, Debug)]
    struct Spread {
        addr: u32,
        port: u16,
        bytes: u64,
        v6: u8,
        vlan: bool,
    }

    /// A table of `n` random records (two directions each), with source
    /// container names from three (rows equal in the first 48 bytes of the
    /// order but not in the whole key).
    fn random_table(seed: u64, n: usize, s: Spread) -> Aggregate {
        let p = Primitives::parse_list(
            ["vlan", "src_host", "dst_host", "src_port", "dst_port", "proto", "src_container"],
            "t",
        )
        .unwrap();
        let mut agg = Aggregate::new(p);
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..n {
            let (r1, r2, r3) = (next(), next(), next());
            let a = (0x0a00_0000 | (r1 as u32 & s.addr)).to_be_bytes();
            let b = (0x0a00_0000 | ((r1 >> 32) as u32 & s.addr)).to_be_bytes();
            let mut r = ip_record(
                a,
                r2 as u16 & s.port,
                b,
                (r2 >> 16) as u16 & s.port,
                if r2 >> 63 == 0 { 6 } else { 17 },
                (1, 40 + (r3 & s.bytes)),
                (1, 40 + (r3 >> 32 & s.bytes)),
                EndReason::IdleTimeout,
            );
            if (r2 >> 32) as u8 % 4 < s.v6 {
                r.ip_version = 6;
                for (i, addr) in [&mut r.addr_a, &mut r.addr_b].into_iter().enumerate() {
                    let mut v6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                    for (j, byte) in v6[4..].iter_mut().enumerate() {
                        *byte = (next() as u8 & s.addr as u8) ^ (i + j) as u8;
                    }
                    *addr = v6;
                }
            }
            if s.vlan {
                r.vlan = (r2 >> 40) as u16 & 3;
            }
            r.ctr[0].name = station::record::fixed_text(["", "b-sort", "a-sort"][(r3 >> 60) as usize % 3]);
            agg.add_ip(&r);
        }
        agg
    }

    /// The rows by bytes descending, then by key, from `sort_by` of the rows themselves.
    fn plainly_sorted(agg: &Aggregate) -> Vec<(Key, Counters)> {
        let mut rows: Vec<(Key, Counters)> = agg.rows().map(|(k, c)| (*k, *c)).collect();
        rows.sort_by(|a, b| b.1.ip_bytes.cmp(&a.1.ip_bytes).then(a.0.cmp(&b.0)));
        rows
    }

    #[test]
    fn the_sort_orders_rows_as_a_plain_sort_whether_one_word_two_or_the_whole_lead_holds_them() {
        let one = Spread { addr: 0x3f, port: 0x7, bytes: 0x7, v6: 0, vlan: false };
        let two = Spread { addr: 0xffff, port: 0xffff, bytes: 0xfff, v6: 0, vlan: false };
        let whole = Spread { addr: 0xff, port: 0xff, bytes: 0xff, v6: 4, vlan: true };
        let mixed = Spread { addr: 0x0f, port: 0x3, bytes: 0x3, v6: 1, vlan: true };
        for (s, packed, tied) in
            [(one, 1..=8, true), (two, 9..=16, false), (whole, 17..=48, false), (mixed, 17..=48, true)]
        {
            let agg = random_table(0x5eed, 20_000, s);
            let width = Packing::of(&agg).bytes;
            assert!(packed.contains(&width), "{s:?}: {width} bytes vary");
            let truth = plainly_sorted(&agg);
            // Ties in the first 48 bytes (same addresses, ports and bytes, another container).
            let ties = truth
                .windows(2)
                .filter(|w| {
                    w[0].1.ip_bytes == w[1].1.ip_bytes && order_parts(&w[0].0, &w[0].1) == order_parts(&w[1].0, &w[1].1)
                })
                .count();
            assert!(ties > 0 || !tied, "{s:?}: no ties");
            let sorted: Vec<(Key, Counters)> = agg.sorted().into_iter().map(|(k, c)| (*k, *c)).collect();
            assert_eq!(sorted, truth, "{s:?}");
            let top: Vec<(Key, Counters)> = agg.top(100).into_iter().map(|(k, c)| (*k, *c)).collect();
            assert_eq!(top, truth[..100], "{s:?}");
        }
        // One row, and none.
        assert_eq!(random_table(1, 1, one).sorted().len(), 2);
        assert!(Aggregate::new(Primitives::default_set()).sorted().is_empty());
    }

    thread_local! {
        /// Sorts of this thread that split their buckets between two threads.
        pub(super) static SORT_SPLITS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_sort_large_enough_for_two_threads_orders_rows_as_a_plain_sort() {
        // Past PARALLEL_MIN: the first buckets are split between two threads
        // where the process may run on two CPUs (this machine and CI have two),
        // with packed leads and whole ones.
        let two = Spread { addr: 0xffff, port: 0xffff, bytes: 0xfff, v6: 0, vlan: false };
        let whole = Spread { addr: 0xff, port: 0xff, bytes: 0xff, v6: 4, vlan: true };
        for s in [two, whole] {
            let agg = random_table(0x7ead, PARALLEL_MIN + 4_000, s);
            assert!(agg.len() >= PARALLEL_MIN, "{} rows", agg.len());
            let splits = SORT_SPLITS.with(std::cell::Cell::get);
            let sorted: Vec<(Key, Counters)> = agg.sorted().into_iter().map(|(k, c)| (*k, *c)).collect();
            assert_eq!(sorted, plainly_sorted(&agg), "{s:?}");
            // The whole leads' bytes fall mostly in one bucket: split at a byte further on.
            let split = SORT_SPLITS.with(std::cell::Cell::get) > splits;
            assert!(split || !two_cpus(), "{s:?}: sorted on one thread with two CPUs to run on");
        }
    }

    #[test]
    fn a_rows_key_and_sort_entry_stay_the_sizes_the_readme_counts() {
        // README "The app's memory": a 64-byte key (names and outer addresses
        // as ids), 48-byte sort entries that become the sorted pairs in place.
        assert_eq!(std::mem::size_of::<Key>(), 64);
        // Packed entries (one or two words of lead) become the pairs in place too.
        assert_eq!(std::mem::size_of::<SortEntry>(), 48);
        assert_eq!(std::mem::size_of::<SortEntry<2>>(), 24);
        assert_eq!(std::mem::size_of::<SortEntry<1>>(), 16);
        for align in [std::mem::align_of::<SortEntry>(), std::mem::align_of::<SortEntry<1>>()] {
            assert_eq!(align, std::mem::align_of::<(&Key, &Counters)>());
        }
    }

    #[test]
    fn compact_rows_replay_every_key_and_counter_exactly_and_cut_rows_are_refused() {
        let p = Primitives::parse_list(Primitive::LISTED.map(Primitive::name), "t").unwrap();
        let mut agg = Aggregate::new(p).with_max_rows(30);
        for i in 0..40u64 {
            let mut r = ip_record([10, 0, 0, i as u8], 1, [10, 0, 1, 2], 2, 6, (1, 1), (0, 0), EndReason::IdleTimeout);
            // Counters and spans on both sides of 2^32, a last time before the first.
            let big = if i % 2 == 0 { u64::from(u32::MAX) + i } else { u64::from(u32::MAX) - i };
            r.dir[0] = station::record::DirCounters {
                packets: big,
                ip_bytes: big >> (i % 3),
                frame_bytes: i,
                ..Default::default()
            };
            (r.first_ns, r.last_ns) = match i % 3 {
                0 => (1_700_000_000_000_000_000, 1_700_000_000_000_000_000 + big),
                1 => (u64::MAX - 5, 3),
                _ => (0, 0),
            };
            match i % 4 {
                0 => r.addr_b[9] = 1, // IPv4 with bytes past the fourth: kept whole
                1 => {
                    r.ip_version = 6;
                    r.addr_a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8];
                }
                _ => {}
            }
            r.ctr[0].name = station::record::fixed_text(&format!("c{i}"));
            r.tunnel_kind = 1;
            r.tunnel_ip_version = if i % 3 == 0 { 6 } else { 4 };
            r.tunnel_addr_a = v4([192, 168, 0, i as u8]);
            r.tunnel_addr_b[15] = u8::from(i % 4 == 1);
            r.tunnel_id = u32::MAX;
            r.tunnel_flags = station::record::TUNNEL_HAS_ID;
            agg.add_ip(&r);
        }
        assert!(agg.overflowed() > 0);
        let mut bytes = RowBytes::default();
        let rows: Vec<(Key, Counters)> = agg.rows().map(|(k, c)| (*k, *c)).collect();
        // Where each row ends: the only cuts that are whole rows.
        let mut ends = std::collections::BTreeSet::new();
        for (k, c) in &rows {
            bytes.push(RowLayout::of(p), k, c);
            ends.insert(bytes.0.len());
        }
        let mut back = Vec::new();
        bytes.replay(p, |k, c| back.push((k, c))).unwrap();
        assert_eq!(back, rows);
        // The common row is compact: 1 + 35 key bytes of IPv4 hosts and outer
        // addresses, names and the rest, 16 of counters, 12 of times.
        let mut one = RowBytes::default();
        let (k, c) = rows
            .iter()
            .find(|(k, c)| {
                k.ip_version == 4
                    && k.dst[9] == 0
                    && c.first_ns == 0
                    && k.outer_ip_version == 4
                    && c.packets <= u64::from(u32::MAX)
                    && c.ip_bytes <= u64::from(u32::MAX)
                    && !k.overflow
            })
            .unwrap();
        one.push(RowLayout::of(p), k, c);
        assert_eq!(one.0.len(), 1 + 2 + 1 + 4 + 4 + 2 + 2 + 1 + 32 + 32 + 1 + 1 + 4 + 4 + 4 + 16 + 12);
        for cut in 1..bytes.0.len() {
            let part = RowBytes(bytes.0[..cut].to_vec());
            // A cut on a row boundary is whole rows; elsewhere it is refused.
            let mut n = 0;
            let replayed = part.replay(p, |_, _| n += 1);
            assert_eq!(replayed.is_ok(), ends.contains(&cut), "cut at {cut}");
            if replayed.is_ok() {
                assert_eq!(n, ends.range(..=cut).count(), "rows before the cut at {cut}");
            }
        }
        // The longest row (every field at its widest) fits its room and reads back.
        let mut r = ip_record([10, 0, 0, 1], 1, [10, 0, 1, 2], 2, 6, (1, 1), (0, 0), EndReason::IdleTimeout);
        r.ip_version = 6;
        r.addr_a = [0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        r.addr_b = [0x20, 1, 0xd, 0xb8, 0xff, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13];
        r.dir[0] = station::record::DirCounters {
            packets: u64::MAX,
            ip_bytes: u64::MAX - 1,
            frame_bytes: u64::MAX - 2,
            ..Default::default()
        };
        (r.first_ns, r.last_ns) = (1, u64::MAX);
        r.vlan = 4095;
        r.ctr[0].name = station::record::fixed_text(&"n".repeat(32));
        r.ctr[1].name = station::record::fixed_text(&"m".repeat(32));
        r.tunnel_kind = 1;
        r.tunnel_ip_version = 6;
        r.tunnel_addr_a = [0x20, 1, 0xd, 0xb8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 1];
        r.tunnel_addr_b = [0x20, 1, 0xd, 0xb8, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 2];
        r.tunnel_id = u32::MAX;
        r.tunnel_flags = station::record::TUNNEL_HAS_ID;
        let mut widest = Aggregate::new(p);
        widest.add_ip(&r);
        let (k, c) = widest.rows().next().map(|(k, c)| (*k, *c)).unwrap();
        let mut long = RowBytes::default();
        long.push(RowLayout::of(p), &k, &c);
        assert_eq!(long.0.len(), ROW_BYTES_MAX - 1);
        let mut back = Vec::new();
        long.replay(p, |k, c| back.push((k, c))).unwrap();
        assert_eq!(back, [(k, c)]);
        let last = RowBytes(bytes.0[..bytes.0.len() - 1].to_vec());
        assert!(last.replay(p, |_, _| {}).is_err());
        let mut bad = RowBytes(one.0.clone());
        bad.0[0] |= 0x80;
        assert!(bad.replay(p, |_, _| {}).is_err());
    }

    #[test]
    fn the_fast_encoding_of_a_row_is_the_general_encodings_bytes() {
        let five = Primitives::default_set();
        let sets = [
            five,
            Primitives::parse_list(Primitive::LISTED.map(Primitive::name), "t").unwrap(),
            Primitives::parse_list(["vlan", "src_host", "dst_host", "src_port", "dst_port", "proto"], "t").unwrap(),
            Primitives::parse_list(["src_host", "dst_host", "src_port", "dst_port"], "t").unwrap(),
            Primitives::parse_list(["proto"], "t").unwrap(),
            five.with_tunnel(),
        ];
        // xorshift64: many rows, the same ones every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let outer = [[0u8; 16], v4([172, 16, 0, 1]), [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]];
        let (mut fast_all, mut any_all) = (RowBytes::default(), RowBytes::default());
        let (mut fast_rows, mut fallbacks) = (0, 0);
        for _ in 0..50_000 {
            let (r, s, t) = (next(), next(), next());
            let addr = |x: u64, wide: bool| {
                let mut a = [0u8; 16];
                let n = if wide { 16 } else { 4 };
                for (i, b) in a[..n].iter_mut().enumerate() {
                    *b = (x.rotate_left(8 * i as u32) & 0xff) as u8;
                }
                a
            };
            // Mostly the usual row; else each way a row leaves the fast path.
            let wide = r % 8 == 0;
            let mut k = Key {
                vlan: (s >> 48) as u16,
                ip_version: [4, 4, 4, 4, 4, 6, 0, 5][(r >> 3) as usize % 8],
                src: addr(s, wide),
                dst: addr(t, wide),
                src_port: s as u16,
                dst_port: (t >> 16) as u16,
                proto: (s >> 24) as u8,
                tunnel: (t >> 32) as u8,
                outer_ip_version: [0, 0, 0, 4, 4, 6][(r >> 6) as usize % 6],
                outer_src: OuterAddr::intern(&outer[(r >> 9) as usize % 3]),
                outer_dst: OuterAddr::intern(&outer[(r >> 11) as usize % 3]),
                tunnel_id: (t >> 8) as u32,
                overflow: r >> 13 & 15 == 0,
                ..Key::default()
            };
            if r >> 17 & 63 == 0 {
                k = Key::OVERFLOW;
            }
            if r >> 23 & 15 == 0 {
                // IPv4 with a byte past the fourth: kept whole.
                k.dst[4 + (t as usize % 12)] = 1;
            }
            let edge = [0, 1, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX];
            let count = |x: u64, shift: u32| {
                if r >> shift & 7 == 0 {
                    edge[(x % 5) as usize]
                } else {
                    x >> 40
                }
            };
            let first_ns =
                if r >> 29 & 7 == 0 { edge[(s % 5) as usize] } else { 1_700_000_000_000_000_000 + (s >> 20) };
            let span = if r >> 32 & 7 == 0 { edge[(t % 5) as usize] } else { t >> 34 };
            let c = Counters {
                packets: count(s, 35),
                ip_bytes: count(t, 38),
                frame_bytes: count(s ^ t, 41),
                flows: count(s.rotate_left(7), 44),
                first_ns,
                last_ns: first_ns.wrapping_add(span),
            };
            let mut any = RowBytes::default();
            any.push_any(five, &k, &c);
            let mut fast = RowBytes::default();
            if fast.push_five_tuple(&k, &c) {
                assert_eq!(fast.0, any.0, "{k:?} {c:?}");
                assert_eq!(fast.0.len(), FIVE_TUPLE_ROW);
                fast_rows += 1;
            } else {
                assert!(fast.0.is_empty(), "{k:?} {c:?}");
                fallbacks += 1;
            }
            // Appended after what is there, through the layout, for every set.
            fast_all.push(RowLayout::of(five), &k, &c);
            any_all.push_any(five, &k, &c);
            for p in sets {
                let (mut by_layout, mut general) = (RowBytes::default(), RowBytes::default());
                by_layout.push(RowLayout::of(p), &k, &c);
                general.push_any(p, &k, &c);
                assert_eq!(by_layout.0, general.0, "{p:?} {k:?} {c:?}");
            }
        }
        assert_eq!(fast_all.0, any_all.0);
        assert!(fast_rows > 10_000 && fallbacks > 10_000, "{fast_rows} fast rows, {fallbacks} others");
    }

    #[test]
    fn zero_packet_direction_yields_no_row() {
        let mut agg = Aggregate::new(Primitives::default_set());
        agg.add_ip(&ip_record(A, 5000, B, 53, 17, (1, 60), (0, 0), EndReason::IdleTimeout));
        assert_eq!(agg.len(), 1);
        assert!(agg.get(&default_key(B, 53, A, 5000, 17)).is_none());
    }

    #[test]
    fn parts_with_opposite_initiators_merge_exactly() {
        // The whole flow, as one worker would see it.
        let whole = ip_record(A, 1234, B, 80, 6, (10, 1000), (8, 9000), EndReason::EndOfFlow);
        let mut one = Aggregate::new(Primitives::default_set());
        one.add_ip(&whole);

        // The same packets in three parts from different workers / an active timeout;
        // the second worker saw B first and calls B the initiator.
        let p1 = ip_record(A, 1234, B, 80, 6, (4, 400), (3, 3000), EndReason::ActiveTimeout);
        let p2 = ip_record(B, 80, A, 1234, 6, (5, 6000), (6, 600), EndReason::IdleTimeout);
        let p3 = ip_record(A, 1234, B, 80, 6, (0, 0), (0, 0), EndReason::ForcedEnd);
        let mut parts = Aggregate::new(Primitives::default_set());
        for p in [&p1, &p2, &p3] {
            parts.add_ip(p);
        }
        for key in [default_key(A, 1234, B, 80, 6), default_key(B, 80, A, 1234, 6)] {
            let (w, p) = (one.get(&key).unwrap(), parts.get(&key).unwrap());
            assert_eq!((w.packets, w.ip_bytes, w.frame_bytes), (p.packets, p.ip_bytes, p.frame_bytes));
        }
        assert_eq!(parts.len(), 2);
        assert_eq!(one.sum().packets, 18);
        assert_eq!(parts.sum().ip_bytes, one.sum().ip_bytes);
    }

    #[test]
    fn primitive_subsets_blank_the_rest() {
        let r1 = ip_record(A, 1234, B, 80, 6, (2, 100), (1, 50), EndReason::EndOfFlow);
        let r2 = ip_record(A, 999, [10, 0, 0, 3], 443, 6, (1, 40), (0, 0), EndReason::EndOfFlow);
        let mut u = ip_record(A, 53, B, 53, 17, (1, 70), (1, 90), EndReason::EndOfFlow);
        u.vlan = 7;

        let by_proto = Primitives::parse_list(["proto"], "test").unwrap();
        let mut agg = Aggregate::new(by_proto);
        for r in [&r1, &r2, &u] {
            agg.add_ip(r);
        }
        assert_eq!(agg.len(), 2);
        let tcp = agg.get(&Key { proto: 6, ..Default::default() }).unwrap();
        assert_eq!((tcp.packets, tcp.ip_bytes, tcp.flows), (4, 190, 3));

        let by_src = Primitives::parse_list(["src_host", "vlan"], "test").unwrap();
        let mut agg = Aggregate::new(by_src);
        for r in [&r1, &r2, &u] {
            agg.add_ip(r);
        }
        let a0 = agg.get(&Key { ip_version: 4, src: v4(A), ..Default::default() }).unwrap();
        assert_eq!((a0.packets, a0.ip_bytes), (3, 140));
        let a7 = agg.get(&Key { ip_version: 4, src: v4(A), vlan: 7, ..Default::default() }).unwrap();
        assert_eq!((a7.packets, a7.ip_bytes), (1, 70));
        let b0 = agg.get(&Key { ip_version: 4, src: v4(B), ..Default::default() }).unwrap();
        assert_eq!(b0.packets, 1);
        assert_eq!(agg.len(), 4);
    }

    #[test]
    fn non_ip_and_malformed_go_to_totals_only() {
        let mut acc = Accounts::new(Primitives::default_set(), &[0, 1], false);
        let arp = FlowRecord {
            kind: RecordKind::NonIp as u8,
            ethertype: 0x0806,
            dir: [dir(3, 0), dir(1, 0)],
            end_reason: EndReason::IdleTimeout as u8,
            ..Default::default()
        };
        let bad = FlowRecord {
            kind: RecordKind::Malformed as u8,
            ethertype: 0x0800,
            dir: [DirCounters { packets: 2, frame_bytes: 120, ..Default::default() }, DirCounters::default()],
            end_reason: EndReason::IdleTimeout as u8,
            ..Default::default()
        };
        acc.add(0, &arp);
        acc.add(1, &bad);
        acc.add(1, &ip_record(A, 1, B, 2, 17, (1, 30), (0, 0), EndReason::IdleTimeout));
        assert_eq!(acc.main_table().len(), 1);
        let t = acc.totals();
        assert_eq!((t.records, t.ip_records, t.packets, t.bytes), (3, 1, 1, 30));
        assert_eq!((t.non_ip_records, t.non_ip_frames, t.non_ip_frame_bytes), (1, 4, 56));
        assert_eq!((t.malformed_records, t.malformed_frames, t.malformed_frame_bytes), (1, 2, 120));
        assert_eq!(t.frames(), 7);
        assert_eq!(acc.per_queue()[0].records, 1);
        assert_eq!(acc.per_queue()[1].records, 2);
    }

    #[test]
    fn a_full_table_folds_new_keys_into_one_overflow_row_and_totals_stay_exact() {
        let mut agg = Aggregate::new(Primitives::default_set()).with_max_rows(3);
        let mut packets = 0;
        for port in 0..10u16 {
            // One direction each: ten distinct keys.
            agg.add_ip(&ip_record(
                A,
                1000 + port,
                B,
                80,
                6,
                (u64::from(port) + 1, 100),
                (0, 0),
                EndReason::IdleTimeout,
            ));
            packets += u64::from(port) + 1;
        }
        // A key that already has a row keeps counting in it.
        agg.add_ip(&ip_record(A, 1000, B, 80, 6, (5, 50), (0, 0), EndReason::IdleTimeout));
        packets += 5;
        assert_eq!(agg.len(), 4);
        assert_eq!(agg.overflowed(), 7);
        assert_eq!(agg.sum().packets, packets);
        assert_eq!(agg.get(&default_key(A, 1000, B, 80, 6)).unwrap().packets, 6);
        let other = agg.get(&Key::OVERFLOW).unwrap();
        assert_eq!((other.packets, other.flows), ((4..=10).sum::<u64>(), 7));
        let csv = crate::sinks::csv_text(&agg);
        assert!(csv.contains("\nother,other,other,other,other,"), "{csv}");
        for line in crate::sinks::json_text(&agg).lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    /// An IP record from A to B on `port` (one direction) whose source
    /// container is `name`.
    fn named_record(port: u16, name: &str) -> FlowRecord {
        let mut r = ip_record(A, port, B, 80, 6, (2, 100), (0, 0), EndReason::IdleTimeout);
        r.ctr[0].name = station::record::fixed_text(name);
        r
    }

    #[test]
    fn a_name_new_in_a_batch_is_interned_by_its_first_record_and_its_second_counts_in_the_same_row() {
        let p = Primitives::parse_list(["src_host", "dst_host", "src_port", "src_container"], "t").unwrap();
        let name = "batch-only-new-name-twice";
        let r = named_record(1000, name);
        assert_eq!(Name::find(&r.ctr[0].name), None, "the name is new to the process");
        let mut agg = Aggregate::new(p);
        agg.add_batch(&[r, r]);
        assert_eq!(agg.len(), 1, "one row for both records");
        assert_eq!(agg.overflowed(), 0);
        let id = Name::find(&r.ctr[0].name).expect("the first record interned the name");
        let (k, c) = agg.get_index(0).unwrap();
        assert_eq!(k.src_container, id);
        assert_eq!((c.packets, c.ip_bytes, c.flows), (4, 200, 2));
    }

    #[test]
    fn a_full_table_interns_no_name_that_is_new_in_the_batch_and_folds_it_into_the_overflow_row() {
        let p = Primitives::parse_list(["src_host", "dst_host", "src_port", "src_container"], "t").unwrap();
        let first = named_record(1000, "batch-full-first-new-name");
        let second = named_record(1001, "batch-full-second-new-name");
        assert_eq!(Name::find(&second.ctr[0].name), None, "the name is new to the process");
        let mut agg = Aggregate::new(p).with_max_rows(1);
        agg.add_batch(&[first, second]);
        assert_eq!(agg.len(), 2, "the first record's row and the overflow row");
        assert_eq!(agg.overflowed(), 1);
        assert!(Name::find(&first.ctr[0].name).is_some(), "the first record's row has its name");
        assert_eq!(Name::find(&second.ctr[0].name), None, "a full table adds no name");
        let other = agg.get(&Key::OVERFLOW).unwrap();
        assert_eq!((other.packets, other.flows), (2, 1));
    }

    #[test]
    fn fan_out_keeps_one_table_per_queue() {
        let mut acc = Accounts::new(Primitives::default_set(), &[4, 5], true);
        let r = ip_record(A, 1, B, 2, 17, (1, 30), (0, 0), EndReason::IdleTimeout);
        acc.add(0, &r);
        acc.add(1, &r);
        acc.add(1, &r);
        let tables = acc.queue_tables();
        assert_eq!(tables.len(), 2);
        assert_eq!((tables[0].0, tables[0].1.sum().packets), (4, 1));
        assert_eq!((tables[1].0, tables[1].1.sum().packets), (5, 2));
        assert_eq!(acc.main_table().sum().packets, 1);
        assert_eq!(acc.main_totals().packets, 1);
        assert_eq!(acc.totals().packets, 3);
    }

    #[test]
    fn rows_past_the_first_chunks_keep_their_positions_and_are_found_after_the_index_doubles() {
        // Reserved for part of the rows, then grown past it: chunks made
        // whole at once, the index doubled several times.
        for reserve in [0, CHUNK + 7] {
            let mut t = RowTable::default();
            t.reserve(reserve);
            let n = 2 * CHUNK + 3;
            let key = |i: usize| Key { src: v4((i as u32).to_be_bytes()), dst_port: i as u16, ..Key::default() };
            for i in 0..n {
                let k = key(i);
                let h = t.hash(&k);
                let slot = t.find(h, &k).unwrap_err();
                assert_eq!(t.insert(slot, h, k, Counters { packets: i as u64, ..Counters::default() }), i);
            }
            assert_eq!(t.len(), n);
            assert_eq!(t.index.len(), (2 * n).next_power_of_two());
            for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, n - 1] {
                let k = key(i);
                assert_eq!(t.find(t.hash(&k), &k), Ok(i));
                assert_eq!(t.get(i).map(|(k, c)| (*k, c.packets)), Some((key(i), i as u64)));
            }
            assert!(t.iter().enumerate().all(|(i, (k, c))| *k == key(i) && c.packets == i as u64));
        }
    }

    #[test]
    fn a_reserved_index_is_made_once_the_rows_are_a_128th_of_it_and_every_row_is_found() {
        let key = |i: usize| Key { src: v4((i as u32).to_be_bytes()), ..Key::default() };
        let fill = |t: &mut RowTable, n: usize| {
            for i in t.len()..n {
                let k = key(i);
                let h = t.hash(&k);
                let slot = t.find(h, &k).unwrap_err();
                assert_eq!(t.insert(slot, h, k, Counters::default()), i);
            }
        };
        // Room for 2^16 rows: an index of 2^17 slots, made at 1,024 rows.
        let (rows, slots) = (1 << 16, 1 << 17);
        let jump = slots / INDEX_JUMP;
        let mut t = RowTable::default();
        t.reserve(rows);
        assert_eq!(t.index.len(), 1 << MIN_INDEX_BITS, "no rows: the smallest index");
        fill(&mut t, jump);
        assert_eq!(t.index.len(), 2 * jump, "doubled as rows came");
        fill(&mut t, jump + 1);
        assert_eq!(t.index.len(), slots, "the reserved index");
        assert!((0..=jump).all(|i| t.find(t.hash(&key(i)), &key(i)) == Ok(i)));
        // A table already that full gets the reserved index at once; a
        // reservation it is not a 128th of waits.
        let mut u = RowTable::default();
        fill(&mut u, jump + 1);
        u.reserve(2 * rows);
        assert_eq!(u.index.len(), 4 * jump);
        u.reserve(rows);
        assert_eq!(u.index.len(), slots);
        assert!((0..=jump).all(|i| u.find(u.hash(&key(i)), &key(i)) == Ok(i)));
    }

    /// Minor page faults of this thread so far (other tests' threads do not count).
    fn thread_faults() -> i64 {
        use nix::sys::resource::{getrusage, UsageWho};
        getrusage(UsageWho::RUSAGE_THREAD).map(|u| u.minor_page_faults()).unwrap()
    }

    #[test]
    fn rows_made_ready_ahead_land_in_that_memory_without_a_page_fault_or_an_index_doubling() {
        let key = |i: usize| Key { src: v4((i as u32).to_be_bytes()), dst_port: i as u16, ..Key::default() };
        // Past the first chunk, into a third: 28 MiB of rows, an index of 2^20 slots (8 MiB).
        let n = 2 * CHUNK + 5;
        let mut t = RowTable::default();
        let (mut calls, mut pages) = (0, 0);
        loop {
            let slots = t.index.len();
            let written = t.prepare(n, 256);
            if t.index.len() != slots {
                assert_eq!(t.index.len(), 2 * slots, "one doubling a call");
                continue;
            }
            assert!(written <= 256, "at most the pages asked for in a call");
            if written == 0 {
                break;
            }
            (calls, pages) = (calls + 1, pages + written);
        }
        // A write in every page of the room: 14 MiB chunks of 4 KiB pages (a page may take two steps' writes).
        let room_pages = n * size_of::<Row>() / PAGE_BYTES;
        assert!(pages >= room_pages && calls >= room_pages / 256, "{pages} pages in {calls} calls");
        assert_eq!(t.prepare(n, 256), 0, "ready: nothing more to do");
        let index = t.index.len();
        assert_eq!(index, (2 * n).next_power_of_two(), "the index for every row, made before them");
        let rooms: Vec<_> = t.chunks.iter().map(|c| (c.as_ptr(), c.capacity())).collect();
        let before = thread_faults();
        for i in 0..n {
            let k = key(i);
            let h = t.hash(&k);
            let slot = t.find(h, &k).unwrap_err();
            assert_eq!(t.insert(slot, h, k, Counters { packets: i as u64, ..Counters::default() }), i);
        }
        let faults = thread_faults() - before;
        // Without the writes the rows fault about 7,000 times (fresh pages): a few may come from elsewhere.
        assert!(faults < 64, "{faults} page faults inserting {n} rows into memory made ready");
        assert_eq!(t.index.len(), index, "no doubling on the way");
        let after: Vec<_> = t.chunks.iter().map(|c| (c.as_ptr(), c.capacity())).collect();
        assert_eq!(after, rooms, "the rows are in the memory made ready (nothing moved)");
        assert!(t.iter().enumerate().all(|(i, (k, c))| *k == key(i) && c.packets == i as u64));
        assert!([0, CHUNK - 1, CHUNK, 2 * CHUNK, n - 1].iter().all(|&i| t.find(t.hash(&key(i)), &key(i)) == Ok(i)));
    }

    #[test]
    fn rows_made_ready_stay_within_the_row_limit_and_change_nothing_counted() {
        // Two tables fed the same records, one made ready for far more rows than its limit.
        let mut ready = Aggregate::new(Primitives::default_set()).with_max_rows(1000);
        let mut plain = Aggregate::new(Primitives::default_set()).with_max_rows(1000);
        while ready.prepare_rows(usize::MAX, 1 << 20) > 0 {}
        assert_eq!(ready.rows.index.len(), (2 * 1001usize).next_power_of_two(), "the limit's index, not more");
        let room = ready.room_for_rows();
        assert!(room < 4 * 1001, "room for {room} rows made ready under a limit of 1,000");
        for i in 0..1500u16 {
            let r = ip_record(
                [10, 0, (i >> 8) as u8, i as u8],
                1000 + i,
                B,
                80,
                6,
                (3, 120),
                (2, 90),
                EndReason::EndOfFlow,
            );
            ready.add_ip(&r);
            plain.add_ip(&r);
        }
        assert_eq!(ready.overflowed(), plain.overflowed());
        let text = |t: &Aggregate| crate::sinks::csv_text(t);
        assert_eq!(text(&ready), text(&plain), "the same rows, counters and order");
    }

    /// Record `i` of [`checkpoint_sample`].
    fn checkpoint_record(i: u8) -> FlowRecord {
        let mut r = ip_record(
            [10, 0, i % 4, 1],
            1000 + u16::from(i),
            [192, 168, 0, i % 3],
            443,
            6,
            (u64::from(i) + 1, 100 * u64::from(i) + 40),
            (u64::from(i % 2), 1500),
            EndReason::IdleTimeout,
        );
        r.first_ns = 1_700_000_000_000_000_000 + u64::from(i);
        r.last_ns = r.first_ns + 5_000_000_000 * u64::from(i);
        r.vlan = u16::from(i % 2) * 7;
        if i % 3 == 1 {
            r.ip_version = 6;
            r.addr_a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, i];
        }
        if i % 4 == 2 {
            r.ctr[0].name = station::record::fixed_text(&format!("golden-{i}"));
            r.tunnel_kind = 1;
            r.tunnel_ip_version = 4;
            r.tunnel_addr_a = v4([172, 16, 0, i]);
            r.tunnel_addr_b = v4([172, 16, 1, 1]);
            r.tunnel_id = 4242;
            r.tunnel_flags = station::record::TUNNEL_HAS_ID;
        }
        if i == 5 {
            r.dir[0].packets = u64::from(u32::MAX) + 9;
        }
        r
    }

    /// Record `i` of [`checkpoint_sample_five`]: IPv4 and IPv6 hosts, short
    /// and long spans, one counter past 32 bits (the fixed layout and its
    /// fallbacks, for the default primitives).
    fn checkpoint_record_five(i: u8) -> FlowRecord {
        let mut r = ip_record(
            [10, 1, i % 4, 1],
            2000 + u16::from(i),
            [192, 168, 1, i % 3],
            80,
            if i.is_multiple_of(2) { 6 } else { 17 },
            (u64::from(i) + 1, 100 * u64::from(i) + 40),
            (u64::from(i % 2), 1500),
            EndReason::IdleTimeout,
        );
        r.first_ns = 1_700_000_000_000_000_000 + u64::from(i);
        r.last_ns = r.first_ns + if i.is_multiple_of(2) { 1_000 * u64::from(i) } else { 5_000_000_000 * u64::from(i) };
        if i % 3 == 1 {
            r.ip_version = 6;
            r.addr_a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, i];
        }
        if i == 4 {
            r.dir[1].ip_bytes = u64::from(u32::MAX) + 3;
        }
        r
    }

    /// Accounts and a frame of changes as a checkpoint encodes them (the
    /// file's bincode options), from records of every kind of key.
    fn checkpoint_sample() -> (Vec<u8>, Vec<u8>) {
        let p = Primitives::parse_list(Primitive::LISTED.map(Primitive::name), "t").unwrap();
        checkpoint_sample_of(p, checkpoint_record)
    }

    /// [`checkpoint_sample`] for a table of the default primitives.
    fn checkpoint_sample_five() -> (Vec<u8>, Vec<u8>) {
        checkpoint_sample_of(Primitives::default_set(), checkpoint_record_five)
    }

    /// A table of `p` (at most 9 rows) saved whole after records 0-7 of
    /// `record`, and the frame of what records 3, 9, 10, 11 and 0 changed.
    fn checkpoint_sample_of(p: Primitives, record: fn(u8) -> FlowRecord) -> (Vec<u8>, Vec<u8>) {
        let mut acc = Accounts::new(p, &[3, 4], false).with_max_rows(9);
        for i in 0..8 {
            acc.add(usize::from(i % 2), &record(i));
        }
        let whole = bincode::serialize(&acc).unwrap();
        acc.clear_changes();
        for i in [3, 9, 10, 11, 0] {
            acc.add(usize::from(i % 2), &record(i));
        }
        let changes = bincode::serialize(&acc.take_changes()).unwrap();
        (whole, changes)
    }

    /// The bytes of the line of [`GOLDEN_V3`] tagged `tag`.
    fn golden(tag: &str) -> Vec<u8> {
        let hex = GOLDEN_V3.lines().find_map(|l| l.strip_prefix(tag)).unwrap().trim();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// The checkpoint of [`checkpoint_sample`] as the IndexMap table before
    /// this one wrote it (format v3; `WHOLE` and `CHANGES` lines in hex).
    const GOLDEN_V3: &str = include_str!("aggregate-checkpoint-v3.hex");

    #[test]
    fn a_checkpoint_is_the_bytes_the_previous_table_wrote_and_its_bytes_load_back() {
        let (whole, changes) = (golden("WHOLE "), golden("CHANGES "));
        // What this table writes, the previous one wrote (so it reads this one's files).
        let (w, c) = checkpoint_sample();
        assert_eq!(w, whole);
        assert_eq!(c, changes);
        // And what the previous one wrote loads here as the same accounts.
        use bincode::Options as _;
        let options = bincode::DefaultOptions::new().with_fixint_encoding().with_limit(1 << 20);
        let mut loaded: Accounts = options.deserialize(&whole).unwrap();
        let frame: AccountsChanges<'_> = options.deserialize(&changes).unwrap();
        loaded.apply_changes(frame).unwrap();
        // The same as this table's own accounts after both (built here, not loaded).
        let p = Primitives::parse_list(Primitive::LISTED.map(Primitive::name), "t").unwrap();
        let mut built = Accounts::new(p, &[3, 4], false).with_max_rows(9);
        for i in (0..8).chain([3, 9, 10, 11, 0]) {
            built.add(usize::from(i % 2), &checkpoint_record(i));
        }
        let rows = |a: &Accounts| a.main_table().rows().map(|(k, c)| (*k, *c)).collect::<Vec<_>>();
        assert_eq!(rows(&loaded), rows(&built));
        assert_eq!(rows(&built).len(), 10, "nine rows and the overflow row");
        assert!(built.main_table().overflowed() > 0);
        assert_eq!(loaded.totals(), built.totals());
        assert_eq!(bincode::serialize(&loaded).unwrap(), bincode::serialize(&built).unwrap());
    }

    #[test]
    fn a_checkpoint_of_the_default_primitives_is_the_bytes_the_encoder_before_the_fixed_layout_wrote() {
        let (w, c) = checkpoint_sample_five();
        assert_eq!(w, golden("WHOLE5 "));
        assert_eq!(c, golden("CHANGES5 "));
        // Rows in the fixed layout and rows that fall back to the general one.
        let mut acc = Accounts::new(Primitives::default_set(), &[3, 4], false).with_max_rows(9);
        for i in (0..8).chain([3, 9, 10, 11, 0]) {
            acc.add(usize::from(i % 2), &checkpoint_record_five(i));
        }
        let (mut fixed, mut general) = (0, 0);
        for (k, c) in acc.main_table().rows() {
            if RowBytes::default().push_five_tuple(k, c) {
                fixed += 1;
            } else {
                general += 1;
            }
        }
        assert!(fixed >= 2 && general >= 3, "{fixed} rows in the fixed layout, {general} not");
    }

    /// A direction's key as the model keeps it: values, not ids.
    type ModelKey = ([u8; 16], [u8; 16], u16, u16, [u8; 32], bool);

    fn model_key(k: &Key) -> ModelKey {
        (k.src, k.dst, k.src_port, k.dst_port, k.src_container.bytes(), k.overflow)
    }

    /// One record of the model check: hosts, ports, both sides' packets
    /// and bytes, and the source container's name (0: none).
    type ModelRecord = (u8, u16, u8, u16, (u64, u64), (u64, u64), u16);

    fn model_record(&(a, pa, b, pb, ab, ba, name): &ModelRecord) -> FlowRecord {
        let mut r = ip_record([10, 0, 0, a], pa, [10, 0, 1, b], pb, 6, ab, ba, EndReason::IdleTimeout);
        // Names from a wide range, so that most are new to the process when they come.
        if name != 0 {
            let text = format!("model-{name}-{}", u32::from(a) * 7 + u32::from(pb));
            r.ctr[0].name = station::record::fixed_text(&text);
            r.ctr[1].name = station::record::fixed_text(&format!("{text}-b"));
        }
        r
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

        /// The table against a model (a BTreeMap of values and a list of
        /// first arrivals): rows, positions, counters, the overflow row and
        /// its count, and the changed rows, whether records come one by one
        /// or in batches; hashes cut to a few bits or none force equal tags
        /// and probes through long runs of slots, and the index grows from
        /// its smallest size.
        #[test]
        fn the_table_keeps_the_rows_a_plain_map_would_in_arrival_order(
            records in proptest::collection::vec(
                (0..6u8, 0..4u16, 0..6u8, 0..3u16, (0..3u64, 0..2000u64), (0..3u64, 0..2000u64), 0..3000u16),
                0..300,
            ),
            max_rows in 1..80usize,
            mask in proptest::prop_oneof![
                proptest::strategy::Just(u64::MAX),
                proptest::strategy::Just(0xC000_0000_0000_0000u64),
                proptest::strategy::Just(0u64),
            ],
            cuts in proptest::collection::vec(1..40usize, 1..20),
            one_by_one in proptest::bool::ANY,
            take_at in proptest::collection::btree_set(0..300usize, 0..6),
        ) {
            let p = Primitives::parse_list(["src_host", "dst_host", "src_port", "dst_port", "src_container"], "t").unwrap();
            let mut agg = Aggregate::new(p).with_max_rows(max_rows);
            agg.rows.hash_mask = mask;
            let mut model: std::collections::BTreeMap<ModelKey, Counters> = Default::default();
            let mut order: Vec<ModelKey> = Vec::new();
            let mut overflowed = 0u64;
            let mut changed: Vec<ModelKey> = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < records.len() {
                let n = if one_by_one { 1 } else { (*cut.next().unwrap()).min(records.len() - at) };
                let batch: Vec<FlowRecord> = records[at..at + n].iter().map(model_record).collect();
                for (r, m) in batch.iter().zip(&records[at..at + n]) {
                    for side in 0..2 {
                        let d = r.dir[side];
                        if d.packets == 0 {
                            continue;
                        }
                        let (src, dst, sp, dp) = if side == 0 { (r.addr_a, r.addr_b, r.port_a, r.port_b) } else { (r.addr_b, r.addr_a, r.port_b, r.port_a) };
                        let name = if m.6 == 0 { [0; 32] } else { r.ctr[side].name };
                        let mut key: ModelKey = (src, dst, sp, dp, name, false);
                        if !model.contains_key(&key) && model.len() >= max_rows {
                            key = ([0; 16], [0; 16], 0, 0, [0; 32], true);
                            overflowed += 1;
                        }
                        let c = Counters { packets: d.packets, ip_bytes: d.ip_bytes, frame_bytes: d.frame_bytes, flows: 1, first_ns: 0, last_ns: 0 };
                        let row = model.entry(key).or_insert_with(|| { order.push(key); Counters::default() });
                        row.add(&c);
                        if !changed.contains(&key) {
                            changed.push(key);
                        }
                    }
                }
                if one_by_one {
                    agg.add_ip(&batch[0]);
                } else {
                    agg.add_batch(&batch);
                }
                at += n;
                if take_at.contains(&at) {
                    let got: Vec<ModelKey> = agg.take_changes().iter().map(|(k, _)| model_key(k)).collect();
                    proptest::prop_assert_eq!(got, std::mem::take(&mut changed));
                }
            }
            let rows: Vec<(ModelKey, Counters)> = agg.rows().map(|(k, c)| (model_key(k), *c)).collect();
            let want: Vec<(ModelKey, Counters)> = order.iter().map(|k| (*k, model[k])).collect();
            proptest::prop_assert_eq!(rows, want);
            proptest::prop_assert_eq!(agg.overflowed(), overflowed);
            proptest::prop_assert!(agg.len() <= max_rows + 1);
            // Every row is found by its key, and a key of no row is not.
            for (k, c) in agg.rows() {
                proptest::prop_assert_eq!(agg.get(k), Some(c));
            }
            let absent = Key { src_port: 9, ..Key::default() };
            proptest::prop_assert_eq!(agg.get(&absent), None);
        }

        /// The sort against `sort_by` of the rows on random tables: few or
        /// many bytes of the order differing (packed in one word, two, or
        /// the whole lead), IPv6, VLANs, ties on bytes and on the first 48
        /// bytes of the order.
        #[test]
        fn the_sort_orders_random_tables_as_a_plain_sort(
            seed in proptest::num::u64::ANY,
            n in 0..600usize,
            addr in proptest::prop_oneof![proptest::strategy::Just(0u32), proptest::strategy::Just(0x3), proptest::strategy::Just(0xff), proptest::strategy::Just(0xffff), proptest::strategy::Just(u32::MAX)],
            port in proptest::prop_oneof![proptest::strategy::Just(0u16), proptest::strategy::Just(0x3), proptest::strategy::Just(u16::MAX)],
            bytes in proptest::prop_oneof![proptest::strategy::Just(0u64), proptest::strategy::Just(0x3), proptest::strategy::Just(u64::from(u32::MAX))],
            v6 in 0..5u8,
            vlan in proptest::bool::ANY,
        ) {
            let agg = random_table(seed, n, Spread { addr, port, bytes, v6, vlan });
            let sorted: Vec<(Key, Counters)> = agg.sorted().into_iter().map(|(k, c)| (*k, *c)).collect();
            proptest::prop_assert_eq!(sorted, plainly_sorted(&agg));
        }
    }
}

//! The flow table's store: a slab of entries, a hand-written open-addressing
//! index, and one coarse timer wheel per timeout list.
//!
//! This is the product's core (every packet a worker reads goes through it
//! once), so it is written here rather than taken from a crate: a general
//! hash map stores a key, a value and a control byte per bucket in separate
//! arrays and cannot be told that an entry's key lives in the entry, nor be
//! probed with the tag bits we keep; the intrusive LRU list it replaces
//! ([`crate::lru_slab`]) wrote two neighbours' cache lines per packet.
//!
//! Guarantees:
//! - Entries are named by `u32` slab indices that stay valid until the entry
//!   is removed; removed slots are reused before the slab grows. Each entry has
//!   a hot part `E` (read and written per packet, laid out by its type), a
//!   cold part `C` (read when a flow starts or ends) and its wheel links.
//!   A caller that knows its keys a few lookups ahead prefetches what they
//!   will read in two steps ([`WheelSlab::prefetch_index`], then, once that
//!   line has come, [`WheelSlab::prefetch_entry`]), so that the cache misses
//!   of several lookups overlap; a prefetch changes nothing but timing.
//! - Growth never copies an entry: the slab is a list of chunks of
//!   [`CHUNK`] entries (each chunk three arrays: hot parts, cold parts,
//!   links), allocated one at a time as entries arrive, entry `i` at offset
//!   `i % CHUNK` of chunk `i / CHUNK`. Only the index is rebuilt when it
//!   grows (a pass over the slab that rehashes each live key into a new array
//!   of `u32` slots).
//! - The index is an array of `u32` slots, a power of two, doubled before an
//!   insert would take its load above 3/4 (so 4 to 10.7 bytes per live entry
//!   once grown), linear probing: a slot holds the entry's index and 5 bits of
//!   its hash, so a probe reads an entry only when those bits match (31 of 32
//!   mismatches cost no entry read). Removal shifts the following slots back
//!   (no tombstones). Keys are hashed once per packet with a per-table random
//!   seed ([`SlabEntry::hash_with`]).
//! - [`WheelSlab::new`] allocates an index for `min(limit, initial)` entries
//!   and no chunk; the first insert of each chunk allocates it (filled with
//!   that entry: a chunk's memory is written once, when it is allocated);
//!   never more than `limit` live entries (the last chunk may have room
//!   beyond). [`WheelSlab::memory_bytes`] counts every allocation of the
//!   table (chunks, their list, index, wheels). Nothing is allocated by find /
//!   insert / remove / expiry except a new chunk (every [`CHUNK`] inserts) and
//!   a grown index (at each doubling).
//! - Timeouts without per-packet list work: a packet only writes its entry's
//!   `seen_ns`. Each live entry is on one of `L` lists, each a timer wheel of
//!   buckets `G` nanoseconds wide (`G` a power of two, at least 2^20 ns,
//!   about timeout / 4096), holding the entry in the bucket of some time
//!   `K <= seen_ns`. [`WheelSlab::expired`] looks only at the buckets that
//!   end at or before `now - timeout` (and the one that contains it): an
//!   entry there is expired, or has been seen since and is moved to the bucket
//!   of its `seen_ns` (a second chance; each move follows at least one
//!   packet). So it finds **every** entry with `now - seen_ns >= timeout`, in
//!   O(expired + moved + entries last seen in the bucket of `now - timeout`);
//!   when the clock moved more than a turn of the wheel since the last call,
//!   one pass over every entry of the list.
//! - Eviction order ([`WheelSlab::oldest`]): after moving the entries seen
//!   since they were placed, the oldest non-empty bucket holds the least
//!   recently seen entries; of its first [`EVICT_SCAN`] entries (buckets keep
//!   the order entries were placed in) the least recently seen is returned.
//!   So the candidate is the least recently seen entry of its list when that
//!   bucket holds at most [`EVICT_SCAN`] entries, and otherwise one seen less
//!   than `G` after it (in a flood of one-packet flows, the oldest).
//!   O(EVICT_SCAN + moved).
//!
//! Not guaranteed: any order among entries of different lists, or among
//! entries of one bucket beyond the above.

use std::hash::Hash;

/// "No entry" in links and bucket heads.
const NIL: u32 = u32::MAX;
/// List tag of a free slot.
pub const FREE: u8 = u8::MAX;
/// `prev` of a bucket's first entry: this bit and the bucket's slot.
const HEAD: u32 = 1 << 31;
/// `next` of a bucket's last entry: this bit and the bucket's slot.
const END: u32 = 1 << 31;
/// Index slots: entry index + 1 in the low bits, hash tag above.
const IDX_BITS: u32 = 27;
const IDX_MASK: u32 = (1 << IDX_BITS) - 1;
/// Most entries a table can hold (an index slot keeps the entry index + 1 in 27 bits).
pub const MAX_ENTRIES: usize = (1 << IDX_BITS) - 2;
/// Entries of a chunk: `1 << CHUNK_BITS`.
const CHUNK_BITS: u32 = 10;
/// Entries of one chunk of the slab (the last one may be cut to the limit).
pub const CHUNK: usize = 1 << CHUNK_BITS;
/// Most buckets of a wheel.
const WHEEL_SLOTS_MAX: u64 = 4096;
/// Narrowest bucket: 2^20 ns (about 1 ms).
const MIN_SHIFT: u32 = 20;
/// Entries of the oldest bucket an eviction compares at most.
pub const EVICT_SCAN: usize = 4;
/// Index slots [`WheelSlab::prefetch_entry`] looks at at most.
pub const PREFETCH_PROBE: usize = 4;
/// Entries between the prefetch of an entry's new index slot and its write
/// when the index grows.
const REHASH_LAG: usize = 16;

/// What the slab needs of an entry's hot part.
pub trait SlabEntry: Copy {
    /// The lookup key.
    type Key: Copy + Eq + Hash;
    /// The cold part stored beside the entry.
    type Cold: Copy;
    /// The entry's key equals `key`, as far as the hot part tells.
    fn matches(&self, key: &Self::Key) -> bool;
    /// The rest of the key that lives in the cold part equals `key`'s; asked
    /// only when [`SlabEntry::matches`] is true, so that a key part rarely
    /// used (a tunnel) costs no cold read to the entries that lack it.
    #[inline]
    fn matches_cold(&self, _cold: &Self::Cold, _key: &Self::Key) -> bool {
        true
    }
    /// The entry's key (its cold part `cold`).
    fn key(&self, cold: &Self::Cold) -> Self::Key;
    /// Hash of `key` under `seed` (a good 64-bit mix: the low bits place the
    /// entry, the top 5 bits are its tag).
    fn hash_with(seed: u64, key: &Self::Key) -> u64;
    /// Clock when the entry was last seen (orders the wheels).
    fn seen_ns(&self) -> u64;
    /// The list tag ([`FREE`] for a free slot).
    fn list(&self) -> u8;
    /// Sets the list tag.
    fn set_list(&mut self, list: u8);
}

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

/// One timeout list: buckets of `1 << shift` ns, a ring of lists (first
/// entries in `heads`, last in `tails`), each in the order entries were placed.
#[derive(Debug)]
struct Wheel {
    timeout: u64,
    shift: u32,
    heads: Vec<u32>,
    tails: Vec<u32>,
    /// Every entry is in a bucket at or after this one (absolute bucket number).
    cursor: u64,
    /// A lower bound of the oldest occupied bucket found by an eviction.
    floor: u64,
    len: usize,
}

impl Wheel {
    fn new(timeout: u64) -> Self {
        let mut shift = MIN_SHIFT;
        while (timeout >> shift) + 3 > WHEEL_SLOTS_MAX {
            shift += 1;
        }
        let n = ((timeout >> shift) + 3).next_power_of_two();
        let (heads, tails) = (vec![NIL; n as usize], vec![NIL; n as usize]);
        Self { timeout, shift, heads, tails, cursor: 0, floor: 0, len: 0 }
    }

    #[inline]
    fn slot(&self, bucket: u64) -> usize {
        (bucket & (self.heads.len() as u64 - 1)) as usize
    }

    /// The bucket an entry last seen at `seen` belongs in (never before the cursor).
    #[inline]
    fn bucket_of(&self, seen: u64) -> u64 {
        (seen >> self.shift).max(self.cursor)
    }
}

/// [`CHUNK`] entries: three fixed-size arrays (so an offset below [`CHUNK`]
/// needs no bounds check), allocated once, filled with the entry that made
/// the slab allocate it; slots at or above the slab's `used` mean nothing.
#[derive(Debug)]
struct Chunk<E, C> {
    hot: Box<[E; CHUNK]>,
    cold: Box<[C; CHUNK]>,
    links: Box<[Link; CHUNK]>,
}

impl<E: Copy, C: Copy> Chunk<E, C> {
    /// Bytes of a chunk.
    const BYTES: usize = CHUNK * (size_of::<E>() + size_of::<C>() + size_of::<Link>());

    fn filled(hot: E, cold: C) -> Self {
        Self { hot: boxed(hot), cold: boxed(cold), links: boxed(Link { prev: NIL, next: NIL }) }
    }
}

/// A heap array of [`CHUNK`] copies of `v` (built on the heap, not the stack).
fn boxed<T: Copy>(v: T) -> Box<[T; CHUNK]> {
    match vec![v; CHUNK].into_boxed_slice().try_into() {
        Ok(b) => b,
        Err(_) => unreachable!("a Vec of CHUNK elements"),
    }
}

/// Chunk and offset of entry `i`.
#[inline]
fn at(i: u32) -> (usize, usize) {
    ((i >> CHUNK_BITS) as usize, i as usize & (CHUNK - 1))
}

/// Slab + open-addressing index + `L` timer wheels. See the module docs.
#[derive(Debug)]
pub struct WheelSlab<E: SlabEntry, C: Copy, const L: usize> {
    chunks: Vec<Chunk<E, C>>,
    /// Slots ever used (live or free), in chunk order.
    used: u32,
    index: Vec<u32>,
    mask: usize,
    free: u32,
    len: usize,
    limit: usize,
    seed: u64,
    wheels: [Wheel; L],
    /// Most slots in use before the last [`WheelSlab::clear`].
    peak: usize,
}

impl<E: SlabEntry<Cold = C>, C: Copy, const L: usize> WheelSlab<E, C, L> {
    /// Bytes of one entry: hot and cold parts and links (not the index).
    pub const ENTRY_BYTES: usize = size_of::<E>() + size_of::<C>() + size_of::<Link>();

    /// A table of at most `limit` entries (clamped to [`MAX_ENTRIES`]), with
    /// an index for `min(limit, initial)` allocated now (chunks come with the
    /// entries); list `l` expires entries
    /// `timeouts[l]` ns after they were last seen.
    ///
    /// # Panics
    /// If `limit` is zero or `L` is 0 or more than 254.
    pub fn new(limit: usize, initial: usize, timeouts: [u64; L]) -> Self {
        assert!(limit > 0, "table limit out of range");
        assert!(L > 0 && L < FREE as usize, "list count out of range");
        let limit = limit.min(MAX_ENTRIES);
        let reserve = limit.min(initial).max(1);
        let slots = Self::index_slots(reserve);
        Self {
            chunks: Vec::with_capacity(reserve.div_ceil(CHUNK)),
            used: 0,
            index: vec![0; slots],
            mask: slots - 1,
            free: NIL,
            len: 0,
            limit,
            seed: foldhash_seed(),
            wheels: timeouts.map(Wheel::new),
            peak: 0,
        }
    }

    /// Index slots for `n` live entries: a power of two, load at most 3/4.
    fn index_slots(n: usize) -> usize {
        (n.saturating_mul(4) / 3 + 1).next_power_of_two().max(16)
    }

    /// Allocates the next chunk, filled with `hot` and `cold`.
    #[cold]
    fn add_chunk(&mut self, hot: E, cold: C) {
        self.chunks.push(Chunk::filled(hot, cold));
    }

    #[inline]
    fn hot(&self, i: u32) -> &E {
        let (c, o) = at(i);
        &self.chunks[c].hot[o]
    }

    #[inline]
    fn hot_mut(&mut self, i: u32) -> &mut E {
        let (c, o) = at(i);
        &mut self.chunks[c].hot[o]
    }

    #[inline]
    fn lk(&self, i: u32) -> &Link {
        let (c, o) = at(i);
        &self.chunks[c].links[o]
    }

    #[inline]
    fn lk_mut(&mut self, i: u32) -> &mut Link {
        let (c, o) = at(i);
        &mut self.chunks[c].links[o]
    }

    /// The key of live entry `i`.
    #[inline]
    fn key_of(&self, i: u32) -> E::Key {
        let (c, o) = at(i);
        let ch = &self.chunks[c];
        ch.hot[o].key(&ch.cold[o])
    }

    /// Live entries.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// No live entry.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Live entries on list `list`.
    #[inline]
    pub fn list_len(&self, list: usize) -> usize {
        self.wheels[list].len
    }

    /// Entries the slab has room for without allocating a chunk.
    pub fn capacity(&self) -> usize {
        (self.chunks.len() * CHUNK).min(self.limit)
    }

    /// `len() == limit`: an insert would fail.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len >= self.limit
    }

    /// Slots ever used (live or free): indices below this are valid for
    /// [`Self::is_live`]; it shrinks only at [`Self::clear`] (to 0).
    #[inline]
    pub fn slots(&self) -> u32 {
        self.used
    }

    /// The most entries the table has held at once (slots are reused before
    /// the slab grows, so its slot count is that peak), over clears too.
    pub fn peak(&self) -> usize {
        self.peak.max(self.used as usize)
    }

    /// Removes every entry at once, keeping the room (what removing each
    /// would do, without an index probe per entry).
    pub fn clear(&mut self) {
        self.peak = self.peak();
        self.used = 0;
        self.index.fill(0);
        self.free = NIL;
        self.len = 0;
        for w in &mut self.wheels {
            w.heads.fill(NIL);
            w.tails.fill(NIL);
            w.len = 0;
        }
    }

    /// Whether slot `i` (below [`Self::slots`]) holds a live entry.
    #[inline]
    pub fn is_live(&self, i: u32) -> bool {
        self.hot(i).list() != FREE
    }

    /// The hash of `key`, for [`Self::find_hashed`] and [`Self::insert_hashed`].
    #[inline]
    pub fn hash_of(&self, key: &E::Key) -> u64 {
        E::hash_with(self.seed, key)
    }

    /// Starts loading the index line a lookup of `hash` reads first (see
    /// [`station::prefetch::prefetch`]); changes nothing but timing.
    #[inline]
    pub fn prefetch_index(&self, hash: u64) {
        station::prefetch::prefetch(&self.index[hash as usize & self.mask]);
    }

    /// Cache lines an entry's hot part can span: it starts at a multiple of
    /// its alignment, so at most `64 - align` bytes into a line.
    pub(crate) const HOT_LINES: usize = ((64 - align_of::<E>() % 64) % 64 + size_of::<E>()).saturating_sub(1) / 64 + 1;

    /// Starts loading the hot part of the entries a lookup of `hash` would
    /// compare its key with: those its probe sequence names with its tag, up
    /// to the first empty slot or [`PREFETCH_PROBE`] slots. Reads the index
    /// (best after [`Self::prefetch_index`] had time to bring its line);
    /// changes nothing but timing.
    ///
    /// Returns a hint for [`Self::find_hinted`]: the first entry so named
    /// plus one, 0 when none.
    #[inline(always)]
    pub fn prefetch_entry(&self, hash: u64) -> u32 {
        let tag = Self::tag(hash);
        let mut pos = hash as usize & self.mask;
        let mut hint = 0;
        for _ in 0..PREFETCH_PROBE {
            let s = self.index[pos];
            if s == 0 {
                break;
            }
            if s & !IDX_MASK == tag {
                let (c, o) = at((s & IDX_MASK) - 1);
                if let Some(ch) = self.chunks.get(c) {
                    // Every cache line of the hot part: its first byte and
                    // each 64 bytes on, as many as it can span at its
                    // alignment (a 96-byte entry aligned to 32 spans 2).
                    let hot: *const E = &ch.hot[o];
                    let first = hot.cast::<u8>();
                    for line in 0..Self::HOT_LINES {
                        station::prefetch::prefetch(first.wrapping_add(line * 64));
                    }
                }
                if hint == 0 {
                    hint = s & IDX_MASK;
                }
            }
            pos = (pos + 1) & self.mask;
        }
        hint
    }

    #[inline]
    fn tag(hash: u64) -> u32 {
        ((hash >> 59) as u32) << IDX_BITS
    }

    /// The entry with `key`, whose [`Self::hash_of`] is `hash`.
    #[inline(always)]
    pub fn find_hashed(&self, hash: u64, key: &E::Key) -> Option<u32> {
        let tag = Self::tag(hash);
        let mut pos = hash as usize & self.mask;
        loop {
            let s = self.index[pos];
            if s == 0 {
                return None;
            }
            if s & !IDX_MASK == tag {
                let i = (s & IDX_MASK) - 1;
                let (c, o) = at(i);
                let ch = &self.chunks[c];
                if ch.hot[o].matches(key) && ch.hot[o].matches_cold(&ch.cold[o], key) {
                    return Some(i);
                }
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// [`Self::find_hashed`], first trying the entry `hint` names (from
    /// [`Self::prefetch_entry`], made any time before: entries may have come
    /// and gone since). A live entry with `key` is the one (a key is in the
    /// slab at most once), so a right hint skips the second index probe;
    /// any other hint (0, a free slot, another key, a slot at or past
    /// [`Self::slots`]: never used, or emptied by [`Self::clear`], whose
    /// contents mean nothing) falls back to the probe.
    #[inline(always)]
    pub fn find_hinted(&self, hash: u64, hint: u32, key: &E::Key) -> Option<u32> {
        if hint != 0 && hint <= self.used {
            let i = hint - 1;
            let (c, o) = at(i);
            if let Some(ch) = self.chunks.get(c) {
                let e = &ch.hot[o];
                if e.list() != FREE && e.matches(key) && e.matches_cold(&ch.cold[o], key) {
                    return Some(i);
                }
            }
        }
        self.find_hashed(hash, key)
    }

    /// The entry with `key`.
    pub fn find(&self, key: &E::Key) -> Option<u32> {
        self.find_hashed(self.hash_of(key), key)
    }

    /// Hot part of entry `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn get(&self, i: u32) -> &E {
        self.hot(i)
    }

    /// Hot part of entry `i`, mutably (its key and list tag must not change).
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut E {
        self.hot_mut(i)
    }

    /// Cold part of entry `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn cold(&self, i: u32) -> &C {
        let (c, o) = at(i);
        &self.chunks[c].cold[o]
    }

    /// Both parts of entry `i`, mutably (its key and list tag must not change).
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn parts_mut(&mut self, i: u32) -> (&mut E, &mut C) {
        let (c, o) = at(i);
        let ch = &mut self.chunks[c];
        (&mut ch.hot[o], &mut ch.cold[o])
    }

    /// Inserts `hot` (whose key must not be present and must hash to `hash`)
    /// and `cold` on list `list`; returns its index, or `None` when full.
    ///
    /// # Panics
    /// If `list >= L`. Debug builds also check the hash and that the key is absent.
    pub fn insert_hashed(&mut self, hash: u64, hot: E, cold: C, list: usize) -> Option<u32> {
        debug_assert_eq!(hash, self.hash_of(&hot.key(&cold)), "hash of another key");
        debug_assert!(self.find(&hot.key(&cold)).is_none(), "duplicate key");
        if self.is_full() {
            return None;
        }
        if (self.len + 1) * 4 > self.index.len() * 3 {
            self.grow_index();
        }
        let link = Link { prev: NIL, next: NIL };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.lk(i).next;
            let (c, o) = at(i);
            let ch = &mut self.chunks[c];
            (ch.hot[o], ch.cold[o], ch.links[o]) = (hot, cold, link);
            i
        } else {
            let i = self.used;
            let (c, o) = at(i);
            if c == self.chunks.len() {
                self.add_chunk(hot, cold);
            }
            let ch = &mut self.chunks[c];
            (ch.hot[o], ch.cold[o], ch.links[o]) = (hot, cold, link);
            self.used += 1;
            i
        };
        self.index_insert(hash, i);
        self.link(i, list);
        self.len += 1;
        Some(i)
    }

    /// Moves entry `i` to list `list` (placed by its `seen_ns`); nothing when
    /// it is on that list already.
    #[inline]
    pub fn set_list(&mut self, i: u32, list: usize) {
        if usize::from(self.hot(i).list()) != list {
            self.unlink(i);
            self.link(i, list);
        }
    }

    /// Moves live entry `i` to the bucket of its `seen_ns` on its list (after
    /// its `seen_ns` went back).
    pub fn relink(&mut self, i: u32) {
        let list = usize::from(self.hot(i).list());
        self.unlink(i);
        self.link(i, list);
    }

    /// Removes entry `i`, returning its parts.
    ///
    /// # Panics
    /// If `i` is not a live entry.
    pub fn remove(&mut self, i: u32) -> (E, C) {
        let hot = *self.hot(i);
        assert!(hot.list() != FREE, "remove of a free slot");
        self.index_remove(self.hash_of(&self.key_of(i)), i);
        self.unlink(i);
        self.hot_mut(i).set_list(FREE);
        *self.lk_mut(i) = Link { prev: NIL, next: self.free };
        self.free = i;
        self.len -= 1;
        (hot, *self.cold(i))
    }

    /// Appends to `out` every entry of `list` not seen for the list's timeout
    /// at `now` (`now - seen_ns >= timeout`); they stay in the table (the
    /// caller removes them). Entries seen since they were placed move to the
    /// bucket of their `seen_ns`. See the module docs for the cost.
    pub fn expired(&mut self, list: usize, now: u64, out: &mut Vec<u32>) {
        let w = &self.wheels[list];
        let Some(edge) = now.checked_sub(w.timeout) else {
            return;
        };
        let target = edge >> w.shift;
        if target < w.cursor || w.len == 0 {
            self.wheels[list].cursor = self.wheels[list].cursor.max(target);
            return;
        }
        let n = w.heads.len() as u64;
        let first = target - (target - w.cursor).min(n - 1);
        for b in first..=target {
            let w = &self.wheels[list];
            let (s, shift, timeout) = (w.slot(b), w.shift, w.timeout);
            let mut i = w.heads[s];
            while i != NIL {
                let next = after(self.lk(i).next);
                let seen = self.hot(i).seen_ns();
                if now.saturating_sub(seen) >= timeout {
                    out.push(i);
                } else if self.wheels[list].slot(seen >> shift) != s {
                    self.unlink(i);
                    self.link(i, list);
                }
                i = next;
            }
        }
        let w = &mut self.wheels[list];
        w.cursor = target;
        w.floor = w.floor.max(target);
    }

    /// The entry of `list` to evict first (see the module docs), or `None`
    /// when the list is empty.
    pub fn oldest(&mut self, list: usize) -> Option<u32> {
        if self.wheels[list].len == 0 {
            return None;
        }
        let w = &self.wheels[list];
        let start = w.cursor.max(w.floor);
        // The lowest bucket an entry was moved to (a lower bound for `floor`).
        let mut moved_to = u64::MAX;
        // Every entry is in one of the wheel's slots; entries moved on the
        // first turn are where they belong on the second.
        for b in start..start + 2 * w.heads.len() as u64 {
            let w = &self.wheels[list];
            let s = w.slot(b);
            let mut i = w.heads[s];
            let (mut best, mut best_seen, mut compared) = (NIL, u64::MAX, 0);
            while i != NIL && compared < EVICT_SCAN {
                let next = after(self.lk(i).next);
                let seen = self.hot(i).seen_ns();
                let want = self.wheels[list].bucket_of(seen);
                if self.wheels[list].slot(want) != s {
                    moved_to = moved_to.min(want);
                    self.unlink(i);
                    self.link(i, list);
                } else {
                    compared += 1;
                    if seen < best_seen {
                        (best, best_seen) = (i, seen);
                    }
                }
                i = next;
            }
            if best != NIL {
                self.wheels[list].floor = b.min(moved_to).max(start);
                return Some(best);
            }
        }
        unreachable!("a non-empty wheel without an entry")
    }

    /// Calls `f` with every entry of `list`, bucket by bucket from the
    /// oldest (roughly least recently placed first), without collecting them.
    pub fn for_each(&self, list: usize, mut f: impl FnMut(&E, &C)) {
        let w = &self.wheels[list];
        let start = w.cursor.max(w.floor);
        for b in start..start + w.heads.len() as u64 {
            let mut i = w.heads[w.slot(b)];
            while i != NIL {
                let (c, o) = at(i);
                let ch = &self.chunks[c];
                f(&ch.hot[o], &ch.cold[o]);
                i = after(ch.links[o].next);
            }
        }
    }

    /// Bytes every allocation of the table holds now: the chunks (hot and
    /// cold parts and links of the slab's room) and their list, the index,
    /// the wheels. Excludes the allocator's own overhead.
    pub fn memory_bytes(&self) -> usize {
        self.chunks.len() * Chunk::<E, C>::BYTES
            + self.chunks.capacity() * size_of::<Chunk<E, C>>()
            + self.index.len() * size_of::<u32>()
            + self.wheels.iter().map(|w| 2 * w.heads.len() * size_of::<u32>()).sum::<usize>()
    }

    /// Appends entry `i` to the bucket of its `seen_ns` in wheel `list`.
    fn link(&mut self, i: u32, list: usize) {
        let seen = self.hot(i).seen_ns();
        let w = &mut self.wheels[list];
        let s = w.slot(w.bucket_of(seen));
        let tail = w.tails[s];
        w.tails[s] = i;
        w.len += 1;
        if tail == NIL {
            w.heads[s] = i;
            *self.lk_mut(i) = Link { prev: HEAD | s as u32, next: END | s as u32 };
        } else {
            self.lk_mut(tail).next = i;
            *self.lk_mut(i) = Link { prev: tail, next: END | s as u32 };
        }
        self.hot_mut(i).set_list(list as u8);
    }

    fn unlink(&mut self, i: u32) {
        let list = usize::from(self.hot(i).list());
        let Link { prev, next } = *self.lk(i);
        self.wheels[list].len -= 1;
        if prev & HEAD != 0 {
            self.wheels[list].heads[(prev & !HEAD) as usize] = after(next);
        } else {
            self.lk_mut(prev).next = next;
        }
        if next & END != 0 {
            self.wheels[list].tails[(next & !END) as usize] = if prev & HEAD != 0 { NIL } else { prev };
        } else {
            self.lk_mut(next).prev = prev;
        }
    }

    fn index_insert(&mut self, hash: u64, i: u32) {
        let mut pos = hash as usize & self.mask;
        while self.index[pos] != 0 {
            pos = (pos + 1) & self.mask;
        }
        self.index[pos] = Self::tag(hash) | (i + 1);
    }

    fn index_remove(&mut self, hash: u64, i: u32) {
        let want = Self::tag(hash) | (i + 1);
        let mut pos = hash as usize & self.mask;
        while self.index[pos] != want {
            debug_assert!(self.index[pos] != 0, "live entry missing from the index");
            pos = (pos + 1) & self.mask;
        }
        // Backward shift: move each following slot of the cluster into the
        // hole when its home position is not between the hole and it.
        let mut hole = pos;
        let mut j = pos;
        loop {
            j = (j + 1) & self.mask;
            let s = self.index[j];
            if s == 0 {
                break;
            }
            let k = (s & IDX_MASK) - 1;
            let home = self.hash_of(&self.key_of(k)) as usize & self.mask;
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.index[hole] = s;
                hole = j;
            }
        }
        self.index[hole] = 0;
    }

    /// Doubles the index and rehashes every live entry into it (the
    /// entries themselves stay where they are). The entries are read in
    /// slab order; each one's new slot is prefetched and written
    /// [`REHASH_LAG`] entries later, so that the random writes into the new
    /// index overlap (at 786,432 flows the new index is 8 MiB).
    #[cold]
    fn grow_index(&mut self) {
        let slots = self.index.len() * 2;
        self.index = vec![0; slots];
        self.mask = slots - 1;
        let mut lag = [(0u64, 0u32); REHASH_LAG];
        let mut n = 0;
        for i in 0..self.used {
            if self.is_live(i) {
                let h = self.hash_of(&self.key_of(i));
                self.prefetch_index(h);
                let (old_h, old_i) = std::mem::replace(&mut lag[n % REHASH_LAG], (h, i));
                if n >= REHASH_LAG {
                    self.index_insert(old_h, old_i);
                }
                n += 1;
            }
        }
        for k in n.saturating_sub(REHASH_LAG)..n {
            let (h, i) = lag[k % REHASH_LAG];
            self.index_insert(h, i);
        }
    }
}

/// The entry after one whose `next` link is `next` ([`NIL`] at a bucket's end).
#[inline]
fn after(next: u32) -> u32 {
    if next & END != 0 {
        NIL
    } else {
        next
    }
}

/// A per-table random seed (foldhash's per-process randomness, so runs differ).
fn foldhash_seed() -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::RandomState::default().hash_one(0x5eed_u64) | 1
}

/// A 64-bit mix of `words` under `seed`: folded 128-bit multiplies (the
/// construction of foldhash and wyhash), one per word.
#[inline]
pub fn mix_words(seed: u64, words: &[u64]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let fold = |a: u64, b: u64| {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    };
    let mut h = seed;
    for &w in words {
        h = fold(h ^ w, K);
    }
    fold(h, seed ^ K)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug)]
    struct T {
        key: u64,
        seen: u64,
        list: u8,
    }

    impl SlabEntry for T {
        type Key = u64;
        type Cold = u32;
        fn matches(&self, key: &u64) -> bool {
            self.key == *key
        }
        fn key(&self, _: &u32) -> u64 {
            self.key
        }
        fn hash_with(seed: u64, key: &u64) -> u64 {
            mix_words(seed, &[*key])
        }
        fn seen_ns(&self) -> u64 {
            self.seen
        }
        fn list(&self) -> u8 {
            self.list
        }
        fn set_list(&mut self, list: u8) {
            self.list = list;
        }
    }

    const MS: u64 = 1 << 20;

    fn ins(t: &mut WheelSlab<T, u32, 2>, key: u64, seen: u64, list: usize) -> u32 {
        let h = t.hash_of(&key);
        t.insert_hashed(h, T { key, seen, list: 0 }, key as u32, list).unwrap()
    }

    #[test]
    fn a_stale_hint_finds_what_the_probe_finds() {
        let mut t: WheelSlab<T, u32, 2> = WheelSlab::new(1000, 4, [30_000 * MS, 5_000 * MS]);
        let h = t.hash_of(&11);
        assert_eq!(t.prefetch_entry(h), 0, "nothing named yet");
        let a = ins(&mut t, 11, 1, 0);
        let hint = t.prefetch_entry(h);
        assert_eq!(hint, a + 1);
        assert_eq!(t.find_hinted(h, hint, &11), Some(a));
        // The entry gone: the hint names a free slot, then one reused by another key.
        let _ = t.remove(a);
        assert_eq!(t.find_hinted(h, hint, &11), None);
        let b = ins(&mut t, 22, 2, 0);
        assert_eq!(t.find_hinted(h, hint, &11), None);
        assert_eq!(t.find_hinted(t.hash_of(&22), hint, &22), Some(b));
        // The key back in another slot: found through the probe, from any hint.
        let _ = ins(&mut t, 33, 3, 0);
        let c = ins(&mut t, 11, 4, 0);
        for hint in [0, hint, b + 1, c + 1, 1 << 20] {
            assert_eq!(t.find_hinted(h, hint, &11), Some(c), "hint {hint}");
        }
        // A slot never used holds a copy of the entry that allocated its chunk
        // (not marked free): a hint naming it is not believed.
        let mut u: WheelSlab<T, u32, 2> = WheelSlab::new(1000, 4, [30_000 * MS, 5_000 * MS]);
        let h = u.hash_of(&11);
        let a = ins(&mut u, 11, 1, 0);
        assert_eq!(a, 0);
        assert_eq!(u.find_hinted(h, 2, &11), Some(0), "the copy in slot 1 is not the entry");
        // After clear no slot is used: a hint from before names nothing.
        let hint = u.prefetch_entry(h);
        u.clear();
        assert_eq!(u.find(&11), None);
        assert_eq!(u.find_hinted(h, hint, &11), None, "a hint from before clear");
    }

    #[test]
    fn keys_are_found_until_removed_and_freed_slots_are_reused() {
        let mut t: WheelSlab<T, u32, 2> = WheelSlab::new(1000, 4, [30_000 * MS, 5_000 * MS]);
        let idx: Vec<u32> = (0..1000u64).map(|k| ins(&mut t, k * 7919, k, 0)).collect();
        assert!(t.is_full());
        for k in 0..1000u64 {
            assert_eq!(t.find(&(k * 7919)), Some(idx[k as usize]));
        }
        // Remove every third key: the rest stay findable (backward shift keeps clusters whole).
        for k in (0..1000u64).step_by(3) {
            let (e, c) = t.remove(idx[k as usize]);
            assert_eq!((e.key, c), (k * 7919, (k * 7919) as u32));
        }
        for k in 0..1000u64 {
            assert_eq!(t.find(&(k * 7919)).is_some(), k % 3 != 0, "key {k}");
        }
        let again = ins(&mut t, 1, 0, 1);
        assert_eq!(again, idx[999], "the last freed slot is reused first");
        assert_eq!(t.len(), 1000 - 334 + 1);
        assert_eq!((t.list_len(0), t.list_len(1)), (666, 1));
    }

    #[test]
    fn growing_past_many_chunks_keeps_every_entry_where_it_was_and_findable() {
        let n = 3 * CHUNK as u64 + 17;
        let mut t: WheelSlab<T, u32, 2> = WheelSlab::new(n as usize, 4, [30_000 * MS, 5_000 * MS]);
        let first = ins(&mut t, 0, 0, 0);
        let before: *const T = t.get(first);
        let idx: Vec<u32> = (1..n).map(|k| ins(&mut t, k * 7919, k, 0)).collect();
        assert!(t.is_full());
        assert!(std::ptr::eq(before, t.get(first)), "an entry moved when the slab grew");
        assert_eq!(t.capacity(), n as usize, "room up to the limit");
        assert_eq!(t.find(&0), Some(first));
        for k in 1..n {
            assert_eq!(t.find(&(k * 7919)), Some(idx[k as usize - 1]), "key {k}");
        }
        // Memory: the chunks, the index (load at most 3/4) and the wheels, nothing else.
        let entry = size_of::<T>() + size_of::<u32>() + size_of::<Link>();
        let index = 4 * (n as usize * 4 / 3).next_power_of_two();
        let wheels = 2 * 2 * 4 * 4096;
        let chunks = 4 * CHUNK * entry;
        let m = t.memory_bytes();
        assert!(m >= chunks + index + wheels && m <= chunks + index + wheels + 4096, "{m}");
        for k in (1..n).step_by(2) {
            t.remove(idx[k as usize - 1]);
        }
        for k in 1..n {
            assert_eq!(t.find(&(k * 7919)).is_some(), k % 2 == 0, "key {k}");
        }
    }

    #[test]
    fn expiry_finds_every_timed_out_entry_and_keeps_the_others() {
        let timeout = 100 * MS;
        let mut t: WheelSlab<T, u32, 2> = WheelSlab::new(64, 64, [timeout, timeout]);
        let mut x = 12345u64;
        let mut seen = Vec::new();
        for k in 0..64u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = 1_000 * MS + x % (300 * MS);
            seen.push(s);
            ins(&mut t, k, 1_000 * MS, 0);
            // seen later than placed, as a packet does
            let i = t.find(&k).unwrap();
            t.get_mut(i).seen = s;
        }
        let mut now = 1_000 * MS;
        while now < 1_500 * MS {
            let mut out = Vec::new();
            t.expired(0, now, &mut out);
            for &i in &out {
                assert!(now - t.get(i).seen >= timeout);
                t.remove(i);
            }
            for k in 0..64u64 {
                let live = t.find(&k).is_some();
                assert_eq!(live, now - seen[k as usize].min(now) < timeout, "key {k} at {now}");
            }
            now += 7 * MS + 12345;
        }
    }

    #[test]
    fn the_eviction_candidate_is_the_least_recently_seen_entry() {
        let mut t: WheelSlab<T, u32, 2> = WheelSlab::new(64, 64, [30_000 * MS, 30_000 * MS]);
        for k in 0..10u64 {
            ins(&mut t, k, 1_000 * MS + k, 0);
        }
        // 0 and 1 are seen again much later: 2 is now the oldest, then 3.
        for k in [0u64, 1] {
            let i = t.find(&k).unwrap();
            t.get_mut(i).seen = 2_000 * MS + k;
        }
        let o = t.oldest(0).unwrap();
        assert_eq!(t.get(o).key, 2);
        t.remove(o);
        let o = t.oldest(0).unwrap();
        assert_eq!(t.get(o).key, 3);
        assert_eq!(t.oldest(1), None);
    }

    #[test]
    fn a_flood_of_entries_in_one_bucket_is_evicted_in_the_order_it_came() {
        let mut t: WheelSlab<T, u32, 2> = WheelSlab::new(1000, 1000, [30_000 * MS, 30_000 * MS]);
        // 1000 entries seen within one bucket's width, one nanosecond apart.
        for k in 0..1000u64 {
            ins(&mut t, k, 1_000 * MS + k, 0);
        }
        for k in 0..1000u64 {
            let o = t.oldest(0).unwrap();
            assert_eq!(t.get(o).key, k);
            t.remove(o);
        }
        assert!(t.is_empty());
    }
}

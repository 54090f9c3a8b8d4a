//! Container entry indices: given to container interfaces as the inventory
//! finds them, and taken back once no flow can hold them.
//!
//! A flow in a worker's table keeps the 14-bit index of each side's entry
//! and reads the entry through whatever snapshot the worker has when the
//! flow is emitted; so an index must keep meaning its container for as long
//! as any flow holds it. The shape is that of the capture indices'
//! "draining" ([`crate::capture`]), with flow counts instead of empty queues:
//!
//! - Each worker counts its flows per entry index ([`Holdings`]: one count
//!   per index, changed when a flow is created or leaves its table, never per
//!   packet) and reports, with [`crate::ReaderMark::report_held`], which
//!   indices it holds flows of, under the generation of the snapshot it
//!   attributes new flows with.
//! - An entry that no snapshot can attribute a new flow to any more (its
//!   container is not live and no capture index maps to it) is *retiring*
//!   from the first generation `U` whose snapshot does not attribute it
//!   ([`Entries::retire`]). It becomes free once every reader has reported,
//!   under generation `U` or a newer one, that it holds no flow of it
//!   ([`Entries::reclaim`], [`crate::Readers::unheld`]): from `U` on that
//!   reader attributes nothing new to it, so its count only goes down, and a
//!   report of none is final. A reader that ended (its table flushed) is not
//!   waited for; until the expected number of readers has joined, nothing is
//!   freed.
//! - A container seen again while its entry is retiring keeps its entry (it
//!   is attributable again, no longer retiring); a freed entry's key is
//!   forgotten, so a container seen after that gets an index like any new one.
//!
//! Guarantees:
//! - An index is given to another container only after every reader reported
//!   it holds no flow of the old one under a snapshot that no longer
//!   attributes it: a flow attributed under an old snapshot reads its own
//!   container from any newer one, after the container stopped. No timed hold.
//! - Free indices are reused before a new one is taken, least recently freed
//!   first: the snapshot's entry list (copied at each publication) stays as
//!   long as the most entries held at once, not as the containers ever seen.
//! - At most [`Entries::limit`] entries are held at once (running containers
//!   and stopped ones still held or not yet reported free); beyond that a new
//!   container is not attributed until one is freed.
//!
//! Not guaranteed: that a stopped container's index is freed soon: a worker
//! that never looks again (no batch, no idle check) or a flow that never ends
//! keeps it. Readers of other queue sets ([`crate::SourceMap::Follow`]) have
//! their own inventory, and their own indices.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Entry, FastMap, Readers, MAX_ENTRIES, NONE};

/// 64-bit words of a set of entry indices (14 bits: 16,384 indices).
pub const HELD_WORDS: usize = (MAX_ENTRIES + 1).div_ceil(64);

/// A reader's count of the flows it holds per entry index. Changed when a
/// flow gets or gives up an entry (per flow, not per packet); published by
/// [`crate::ReaderMark::report_held`], which writes only the words that
/// changed since its last report.
///
/// The counts (66 KiB) are allocated at the first entry held: a table that
/// never attributes a flow to a container (an offline run, a host without
/// containers) keeps none.
#[derive(Debug, Default)]
pub struct Holdings {
    /// One count per entry index; empty until the first entry is held.
    counts: Vec<u32>,
    /// Bit i: `counts[i] > 0` (empty while `counts` is).
    bits: Vec<u64>,
    /// Bit w: word w of `bits` changed since the last report.
    dirty: [u64; DIRTY_WORDS],
}

/// Words of [`Holdings`]' set of changed words.
const DIRTY_WORDS: usize = HELD_WORDS.div_ceil(64);

impl Holdings {
    /// One more flow side holds entry `entry` ([`NONE`]: nothing).
    #[inline]
    pub fn hold(&mut self, entry: u16) {
        if entry == NONE {
            return;
        }
        if self.counts.is_empty() {
            self.allocate();
        }
        let i = usize::from(entry) & MAX_ENTRIES;
        self.counts[i] += 1;
        if self.counts[i] == 1 {
            self.flip(i);
        }
    }

    /// One flow side less holds entry `entry` ([`NONE`]: nothing).
    #[inline]
    pub fn release(&mut self, entry: u16) {
        if entry == NONE {
            return;
        }
        let i = usize::from(entry) & MAX_ENTRIES;
        debug_assert!(self.count(entry) > 0, "entry {i} released more often than held");
        if self.count(entry) == 0 {
            return;
        }
        self.counts[i] -= 1;
        if self.counts[i] == 0 {
            self.flip(i);
        }
    }

    /// The counts and bits, at the first entry held.
    #[cold]
    fn allocate(&mut self) {
        self.counts = vec![0; MAX_ENTRIES + 1];
        self.bits = vec![0; HELD_WORDS];
    }

    #[inline]
    fn flip(&mut self, i: usize) {
        self.bits[i / 64] ^= 1 << (i % 64);
        self.dirty[i / 64 / 64] |= 1 << (i / 64 % 64);
    }

    /// Flow sides that hold entry `entry` now.
    pub fn count(&self, entry: u16) -> u32 {
        self.counts.get(usize::from(entry) & MAX_ENTRIES).copied().unwrap_or(0)
    }

    /// Bytes the counts take (none until the first entry is held).
    pub fn memory_bytes(&self) -> usize {
        self.counts.capacity() * size_of::<u32>() + self.bits.capacity() * size_of::<u64>()
    }

    /// How many entries some flow side holds now.
    pub fn entries_held(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Which words changed since the last call (bit w: word w).
    pub(crate) fn take_dirty(&mut self) -> [u64; DIRTY_WORDS] {
        std::mem::take(&mut self.dirty)
    }

    /// Word `w` of the set of held entries.
    pub(crate) fn word(&self, w: usize) -> u64 {
        self.bits.get(w).copied().unwrap_or(0)
    }
}

/// What one reader last reported of the entries it holds (see
/// [`crate::ReaderMark::report_held`]).
#[derive(Debug)]
pub(crate) struct HeldReport {
    /// The generation the words were reported under (0: none yet).
    generation: AtomicU64,
    words: Box<[AtomicU64]>,
}

impl Default for HeldReport {
    fn default() -> Self {
        Self { generation: AtomicU64::new(0), words: (0..HELD_WORDS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl HeldReport {
    /// The reader's side: the words that changed in any of `parts` (the set
    /// is their union), then the generation.
    pub(crate) fn publish(&self, generation: u64, parts: &mut [&mut Holdings]) {
        let mut dirty = [0u64; DIRTY_WORDS];
        for p in parts.iter_mut() {
            for (d, m) in dirty.iter_mut().zip(p.take_dirty()) {
                *d |= m;
            }
        }
        let mut stored = false;
        for (d, mut m) in dirty.into_iter().enumerate() {
            while m != 0 {
                let w = d * 64 + m.trailing_zeros() as usize;
                m &= m - 1;
                let v = parts.iter().fold(0, |acc, p| acc | p.word(w));
                self.words[w].store(v, Ordering::Relaxed);
                stored = true;
            }
        }
        // The words first, then the generation with Release: whoever reads this
        // generation with Acquire also sees these words (or newer ones).
        if stored || self.generation.load(Ordering::Relaxed) != generation {
            self.generation.store(generation, Ordering::Release);
        }
    }

    /// The inventory's side: true when this reader reported, under generation
    /// `since` or a newer one, that it holds no flow of entry `i`.
    ///
    /// A torn read is safe: the generation is read first (Acquire), so the
    /// words read after it are those of that report or of a later one (a
    /// report being written may have stored some words and not yet its
    /// generation). Every report from generation `since` on was made with a
    /// snapshot that attributes nothing new to `i`, so from the first such
    /// report on `i`'s bit only goes from 1 to 0: a 0 read in any of them is
    /// the truth then and stays it.
    pub(crate) fn holds_none_of(&self, i: u16, since: u64) -> bool {
        let g = self.generation.load(Ordering::Acquire);
        let i = usize::from(i) & MAX_ENTRIES;
        g != 0 && g >= since && self.words[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) == 0
    }
}

/// The key an entry is found again by: (netns inode, host veth, runtime id).
type Key = (u64, String, String);

fn key_of(e: &Entry) -> Key {
    (e.reference.netns, e.reference.veth_str().to_owned(), e.reference.id_str().to_owned())
}

/// The inventory's entries and the life of their indices (see the module docs).
#[derive(Debug)]
pub struct Entries {
    /// By index; 0 is "none". A free index holds an empty entry.
    list: Vec<Entry>,
    index: FastMap<Key, u16>,
    limit: usize,
    /// Entries no snapshot attributes any more -> the first generation whose snapshot did not.
    retiring: BTreeMap<u16, u64>,
    /// Free indices, least recently freed first.
    free: VecDeque<u16>,
    is_free: Vec<bool>,
    reclaimed: u64,
}

impl Entries {
    /// No entry yet; at most `limit` held at once (clamped to 1..=[`MAX_ENTRIES`]).
    pub fn new(limit: usize) -> Self {
        Self {
            list: vec![Entry::default()],
            index: FastMap::default(),
            limit: limit.clamp(1, MAX_ENTRIES),
            retiring: BTreeMap::new(),
            free: VecDeque::new(),
            is_free: vec![false],
            reclaimed: 0,
        }
    }

    /// Most entries held at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Every entry by index (index 0 and free ones empty).
    pub fn all(&self) -> &[Entry] {
        &self.list
    }

    /// Entries held now: live, or stopped and not yet freed.
    pub fn held(&self) -> usize {
        self.list.len() - 1 - self.free.len()
    }

    /// Entries freed so far (each reuse of an index counts once).
    pub fn reclaimed(&self) -> u64 {
        self.reclaimed
    }

    /// Entries no snapshot attributes and not yet freed.
    pub fn retiring(&self) -> usize {
        self.retiring.len()
    }

    /// The entry of `e`'s container interface: its own when already known
    /// (updated: a better name, MACs, addresses), else a free index, else a
    /// new one; [`NONE`] when [`Entries::limit`] entries are held.
    pub fn intern(&mut self, e: Entry) -> u16 {
        let key = key_of(&e);
        if let Some(&i) = self.index.get(&key) {
            let old = &mut self.list[usize::from(i)];
            // A container first seen by its cgroup (name = id) gets its runtime's name when
            // the runtime reports it; records built later (even of older flows) carry it.
            let named = |r: &station::record::ContainerRef| r.name_str() != r.id_str();
            if named(&e.reference) || !named(&old.reference) {
                old.reference.name = e.reference.name;
                old.runtime = e.runtime;
                old.image = e.image;
            }
            old.macs = e.macs;
            old.ips = e.ips;
            old.veth_ifindex = e.veth_ifindex;
            return i;
        }
        let i = if let Some(i) = self.free.pop_front() {
            self.is_free[usize::from(i)] = false;
            self.list[usize::from(i)] = e;
            i
        } else if self.list.len() <= self.limit {
            self.list.push(e);
            self.is_free.push(false);
            (self.list.len() - 1) as u16
        } else {
            return NONE;
        };
        self.index.insert(key, i);
        i
    }

    /// After building the snapshot of generation `generation`:
    /// `attributable[i]` says whether it can attribute a new flow to entry i
    /// (live, or named by a capture index). Entries it cannot start retiring
    /// (under this generation); retiring ones it can are held again.
    pub fn retire(&mut self, attributable: &[bool], generation: u64) {
        for i in 1..self.list.len() {
            if self.is_free[i] {
                continue;
            }
            let i16 = i as u16;
            if attributable.get(i).copied().unwrap_or(false) {
                self.retiring.remove(&i16);
            } else {
                self.retiring.entry(i16).or_insert(generation);
            }
        }
    }

    /// True when [`Entries::reclaim`] would free an entry now: a look at the
    /// readers' reports, no change (what the inventory polls, instead of
    /// scanning the host, while a container waits for an entry).
    pub fn reclaimable(&self, readers: &Readers) -> bool {
        if self.retiring.is_empty() {
            return false;
        }
        let candidates: Vec<(u16, u64)> = self.retiring.iter().map(|(i, g)| (*i, *g)).collect();
        readers.unheld(&candidates).into_iter().any(|free| free)
    }

    /// Frees every retiring entry that no reader holds any more (see the
    /// module docs); returns how many. Call before interning a scan's entries.
    pub fn reclaim(&mut self, readers: &Readers) -> usize {
        if self.retiring.is_empty() {
            return 0;
        }
        let candidates: Vec<(u16, u64)> = self.retiring.iter().map(|(i, g)| (*i, *g)).collect();
        let unheld = readers.unheld(&candidates);
        let mut n = 0;
        for ((i, _), free) in candidates.into_iter().zip(unheld) {
            if !free {
                continue;
            }
            self.retiring.remove(&i);
            let old = std::mem::take(&mut self.list[usize::from(i)]);
            self.index.remove(&key_of(&old));
            self.is_free[usize::from(i)] = true;
            self.free.push_back(i);
            self.reclaimed += 1;
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station::record::{fixed_text, ContainerRef};

    fn container(name: &str) -> Entry {
        Entry {
            reference: ContainerRef {
                netns: 4_026_532_000 + name.len() as u64,
                id: fixed_text(name),
                name: fixed_text(name),
                veth: fixed_text(&format!("v{name}")),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// `attributable` for a snapshot where exactly `live` are.
    fn only(e: &Entries, live: &[u16]) -> Vec<bool> {
        (0..e.all().len()).map(|i| live.contains(&(i as u16))).collect()
    }

    #[test]
    fn an_entry_held_by_one_reader_is_not_reused() {
        let readers = Readers::new(2);
        let (a, b) = (readers.join(), readers.join());
        let (mut ha, mut hb) = (Holdings::default(), Holdings::default());
        let mut e = Entries::new(2);
        let one = e.intern(container("one"));
        e.retire(&only(&e, &[one]), 1);
        ha.hold(one);
        // "one" stops at generation 2; reader a still holds a flow of it.
        e.retire(&only(&e, &[]), 2);
        a.report_held(2, &mut [&mut ha]);
        b.report_held(2, &mut [&mut hb]);
        assert_eq!(e.reclaim(&readers), 0);
        let two = e.intern(container("two"));
        assert_ne!(two, one, "a fresh index while one is held");
        assert_eq!(e.intern(container("three")), NONE, "two entries held at once: the limit");
        assert_eq!(e.all()[usize::from(one)].reference.name_str(), "one", "still readable");
        // The flow ends: freed, and "three" takes its index.
        ha.release(one);
        a.report_held(3, &mut [&mut ha]);
        assert_eq!(e.reclaim(&readers), 1);
        assert_eq!(e.intern(container("three")), one);
        assert_eq!((e.held(), e.reclaimed()), (2, 1));
    }

    #[test]
    fn an_entry_reported_free_under_an_old_generation_is_not_reused() {
        let readers = Readers::new(1);
        let a = readers.join();
        let mut ha = Holdings::default();
        let mut e = Entries::new(1);
        let one = e.intern(container("one"));
        e.retire(&only(&e, &[one]), 1);
        // Reader a, still on snapshot 1 (which attributes "one"), holds nothing of it yet.
        a.report_held(1, &mut [&mut ha]);
        e.retire(&only(&e, &[]), 2);
        assert_eq!(e.reclaim(&readers), 0, "under generation 1 a new flow may still take it");
        assert_eq!(e.intern(container("two")), NONE);
        a.report_held(2, &mut [&mut ha]);
        assert_eq!(e.reclaim(&readers), 1);
        assert_eq!(e.intern(container("two")), one);
    }

    #[test]
    fn an_entry_is_reused_once_every_reader_reported_it_free_under_a_new_enough_generation() {
        let readers = Readers::new(3);
        let (a, b) = (readers.join(), readers.join());
        let (mut ha, mut hb, mut hb2, mut hc) =
            (Holdings::default(), Holdings::default(), Holdings::default(), Holdings::default());
        let mut e = Entries::new(4);
        let one = e.intern(container("one"));
        let two = e.intern(container("two"));
        e.retire(&only(&e, &[one, two]), 1);
        e.retire(&only(&e, &[two]), 5);
        ha.hold(two);
        hb2.hold(two);
        a.report_held(5, &mut [&mut ha]);
        b.report_held(6, &mut [&mut hb, &mut hb2]);
        assert_eq!(e.reclaim(&readers), 0, "the third expected reader has not joined");
        let c = readers.join();
        assert_eq!(e.reclaim(&readers), 0, "the third has not reported");
        c.report_held(4, &mut [&mut hc]);
        assert_eq!(e.reclaim(&readers), 0, "the third reported under an older generation");
        c.report_held(5, &mut [&mut hc]);
        assert_eq!(e.reclaim(&readers), 1);
        // Free, least recently freed first, before a never used index.
        assert_eq!(e.intern(container("three")), one);
        assert_eq!(e.all()[usize::from(one)].reference.name_str(), "three");
        // A reader that ended is not waited for.
        e.retire(&only(&e, &[one]), 7);
        drop(c);
        ha.release(two);
        a.report_held(7, &mut [&mut ha]);
        assert_eq!(e.reclaim(&readers), 0, "b still holds two");
        hb2.release(two);
        b.report_held(7, &mut [&mut hb, &mut hb2]);
        assert_eq!(e.reclaim(&readers), 1);
        assert_eq!(e.reclaimed(), 2);
    }

    #[test]
    fn a_retiring_container_seen_again_keeps_its_entry_and_a_freed_one_gets_a_new_one() {
        let readers = Readers::new(1);
        let a = readers.join();
        let mut ha = Holdings::default();
        let mut e = Entries::new(4);
        let one = e.intern(container("one"));
        e.retire(&only(&e, &[]), 2);
        // Seen again before any report: the same entry, attributable again.
        assert_eq!(e.intern(container("one")), one);
        e.retire(&only(&e, &[one]), 3);
        a.report_held(3, &mut [&mut ha]);
        assert_eq!(e.reclaim(&readers), 0, "not retiring any more");
        e.retire(&only(&e, &[]), 4);
        a.report_held(4, &mut [&mut ha]);
        assert_eq!(e.reclaim(&readers), 1);
        assert_eq!(e.all()[usize::from(one)], Entry::default(), "a free entry reads as no container");
        // The key is forgotten: "one" back again is a new container taking the free index.
        let again = e.intern(container("one"));
        assert_eq!((again, e.reclaimed(), e.retiring()), (one, 1, 0));
    }

    #[test]
    fn holdings_count_flow_sides_and_report_only_what_changed() {
        let readers = Readers::new(1);
        let a = readers.join();
        let (mut h, mut other) = (Holdings::default(), Holdings::default());
        h.hold(3);
        h.hold(3);
        h.hold(NONE);
        other.hold(3);
        other.hold(700);
        assert_eq!((h.count(3), h.entries_held(), other.entries_held()), (2, 1, 2));
        a.report_held(1, &mut [&mut h, &mut other]);
        let holds_none = |i: u16, since: u64| readers.unheld(&[(i, since)])[0];
        assert!(!holds_none(3, 1) && !holds_none(700, 1) && holds_none(4, 1));
        assert!(!holds_none(4, 2), "not reported under generation 2 yet");
        h.release(3);
        h.release(3);
        a.report_held(2, &mut [&mut h, &mut other]);
        assert!(!holds_none(3, 2), "the other table still holds 3");
        other.release(3);
        other.release(700);
        a.report_held(2, &mut [&mut h, &mut other]);
        assert!(holds_none(3, 2) && holds_none(700, 2));
        assert_eq!(h.entries_held() + other.entries_held(), 0);
    }

    #[test]
    fn holdings_take_no_memory_until_a_container_entry_is_held() {
        let readers = Readers::new(1);
        let a = readers.join();
        let mut h = Holdings::default();
        h.hold(NONE);
        h.release(NONE);
        a.report_held(1, &mut [&mut h]);
        assert_eq!((h.memory_bytes(), h.count(5), h.entries_held()), (0, 0, 0), "an offline table keeps no counts");
        assert!(readers.unheld(&[(5, 1)])[0]);
        h.hold(5);
        assert_eq!(h.memory_bytes(), (MAX_ENTRIES + 1) * 4 + HELD_WORDS * 8);
        a.report_held(1, &mut [&mut h]);
        assert!(!readers.unheld(&[(5, 1)])[0]);
    }
}

//! A bounded slab of keyed entries, indexed by a hash table, threaded on
//! intrusive doubly-linked LRU lists.
//!
//! Guarantees:
//! - Entries live in one `Vec` (the slab) and are named by `u32` indices that
//!   stay valid until the entry is removed; removed slots go on a free list and
//!   are reused before the slab grows.
//! - The index is a `hashbrown::HashTable<u32>` of slab indices hashed by key
//!   (foldhash, seeded per table), so a key is stored once, in the slab.
//! - [`LruSlab::new`] reserves `min(limit, initial)` entries up front; the slab
//!   and the index grow by doubling, never past `limit`. Once the table has
//!   grown to its working size, find / insert / touch / remove allocate nothing.
//! - Every live entry is on exactly one of `L` lists. [`LruSlab::touch`] moves an
//!   entry to the tail of a list, so each list is ordered by the time of the last
//!   touch: [`LruSlab::oldest`] is the least recently touched entry, found in O(1).
//!   Expiry therefore costs O(expired), never a scan of the table.
//!
//! Not guaranteed: any order of entries across different lists.

use std::hash::{BuildHasher, Hash};

use hashbrown::HashTable;

/// "No entry" in links and list ends.
const NIL: u32 = u32::MAX;
/// List tag of a free slot.
const FREE: u8 = u8::MAX;

#[derive(Clone, Copy, Debug)]
struct Node<K, V> {
    key: K,
    val: V,
    prev: u32,
    next: u32,
    list: u8,
}

/// Slab + hash index + `L` intrusive LRU lists. See the module docs.
#[derive(Debug)]
pub struct LruSlab<K, V, const L: usize> {
    nodes: Vec<Node<K, V>>,
    free: u32,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    head: [u32; L],
    tail: [u32; L],
    len: usize,
    limit: usize,
}

impl<K: Copy + Eq + Hash, V: Copy, const L: usize> LruSlab<K, V, L> {
    /// Bytes of one slab entry (key, value, links, list tag).
    pub const ENTRY_BYTES: usize = core::mem::size_of::<Node<K, V>>();

    /// A table that holds at most `limit` entries, with room for
    /// `min(limit, initial)` reserved now.
    ///
    /// # Panics
    /// If `limit` is zero or does not fit in `u32` indices, or `L` is 0 or
    /// more than 254.
    pub fn new(limit: usize, initial: usize) -> Self {
        assert!(limit > 0 && limit < NIL as usize, "table limit out of range");
        assert!(L > 0 && L < FREE as usize, "list count out of range");
        let reserve = limit.min(initial).max(1);
        Self {
            nodes: Vec::with_capacity(reserve),
            free: NIL,
            index: HashTable::with_capacity(reserve),
            hasher: foldhash::fast::RandomState::default(),
            head: [NIL; L],
            tail: [NIL; L],
            len: 0,
            limit,
        }
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

    /// Most entries the table will hold.
    #[inline]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Entries the slab has room for without growing.
    pub fn capacity(&self) -> usize {
        self.nodes.capacity()
    }

    /// `len() == limit()`: an insert would fail.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len >= self.limit
    }

    /// The index of the entry with `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<u32> {
        self.find_hashed(self.hash_of(key), key)
    }

    /// The hash of `key`, to look up and then insert a missing key with one
    /// hashing ([`Self::find_hashed`], [`Self::insert_hashed`]).
    #[inline]
    pub fn hash_of(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// [`Self::find`] with the key's [`Self::hash_of`].
    #[inline]
    pub fn find_hashed(&self, hash: u64, key: &K) -> Option<u32> {
        let nodes = &self.nodes;
        self.index.find(hash, |&i| nodes[i as usize].key == *key).copied()
    }

    /// The key of entry `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn key(&self, i: u32) -> &K {
        &self.nodes[i as usize].key
    }

    /// The value of entry `i`.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn get(&self, i: u32) -> &V {
        &self.nodes[i as usize].val
    }

    /// The value of entry `i`, mutably.
    ///
    /// # Panics
    /// If `i` is out of range.
    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut V {
        &mut self.nodes[i as usize].val
    }

    /// The list entry `i` is on.
    #[inline]
    pub fn list_of(&self, i: u32) -> usize {
        usize::from(self.nodes[i as usize].list)
    }

    /// The least recently touched entry of `list`.
    #[inline]
    pub fn oldest(&self, list: usize) -> Option<u32> {
        let h = self.head[list];
        (h != NIL).then_some(h)
    }

    /// Inserts `key` (which must not be present) with `val` at the tail of
    /// `list`; returns its index, or `None` when the table is full.
    ///
    /// # Panics
    /// If `list >= L`. Debug builds also check the key is absent.
    pub fn insert(&mut self, key: K, val: V, list: usize) -> Option<u32> {
        self.insert_hashed(self.hash_of(&key), key, val, list)
    }

    /// [`Self::insert`] with the key's [`Self::hash_of`] (which must be `key`'s).
    ///
    /// # Panics
    /// As [`Self::insert`]; debug builds also check the hash.
    pub fn insert_hashed(&mut self, hash: u64, key: K, val: V, list: usize) -> Option<u32> {
        debug_assert_eq!(hash, self.hash_of(&key), "hash of another key");
        debug_assert!(self.find(&key).is_none(), "duplicate key");
        if self.is_full() {
            return None;
        }
        let node = Node { key, val, prev: NIL, next: NIL, list: list as u8 };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = node;
            i
        } else {
            if self.nodes.len() == self.nodes.capacity() {
                self.grow();
            }
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.index.insert_unique(hash, i, |&j| hasher.hash_one(nodes[j as usize].key));
        self.link_tail(i, list);
        self.len += 1;
        Some(i)
    }

    /// Moves entry `i` to the tail (most recent end) of `list`.
    #[inline]
    pub fn touch(&mut self, i: u32, list: usize) {
        let n = &self.nodes[i as usize];
        if usize::from(n.list) == list && n.next == NIL {
            return; // already the most recent of its list
        }
        self.unlink(i);
        self.link_tail(i, list);
    }

    /// Removes entry `i`, returning its key and value.
    ///
    /// # Panics
    /// If `i` is not a live entry.
    pub fn remove(&mut self, i: u32) -> (K, V) {
        let node = self.nodes[i as usize];
        assert!(node.list != FREE, "remove of a free slot");
        let hash = self.hasher.hash_one(node.key);
        match self.index.find_entry(hash, |&j| j == i) {
            Ok(entry) => {
                entry.remove();
            }
            Err(_) => unreachable!("live entry missing from the index"),
        }
        self.unlink(i);
        let n = &mut self.nodes[i as usize];
        n.list = FREE;
        n.prev = NIL;
        n.next = self.free;
        self.free = i;
        self.len -= 1;
        (node.key, node.val)
    }

    /// Doubles the slab (and index) capacity, up to `limit`.
    #[cold]
    fn grow(&mut self) {
        let cap = self.nodes.capacity().max(1);
        let target = cap.saturating_mul(2).min(self.limit);
        if target > self.nodes.len() {
            self.nodes.reserve_exact(target - self.nodes.len());
            let (nodes, hasher) = (&self.nodes, &self.hasher);
            self.index.reserve(target - self.index.len(), |&j| hasher.hash_one(nodes[j as usize].key));
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, list, .. } = self.nodes[i as usize];
        let list = usize::from(list);
        if prev == NIL {
            self.head[list] = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.tail[list] = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn link_tail(&mut self, i: u32, list: usize) {
        let t = self.tail[list];
        {
            let n = &mut self.nodes[i as usize];
            n.prev = t;
            n.next = NIL;
            n.list = list as u8;
        }
        if t == NIL {
            self.head[list] = i;
        } else {
            self.nodes[t as usize].next = i;
        }
        self.tail[list] = i;
    }

    /// Bytes the slab and its index hold now: the slab's capacity in nodes
    /// ([`Self::ENTRY_BYTES`] each), and the index's buckets (a `u32` and a
    /// control byte each; hashbrown keeps `capacity * 8 / 7` buckets rounded up
    /// to a power of two). Excludes the allocator's own overhead.
    pub fn memory_bytes(&self) -> usize {
        let buckets = (self.index.capacity() * 8 / 7).max(1).next_power_of_two();
        self.nodes.capacity() * Self::ENTRY_BYTES + buckets * (std::mem::size_of::<u32>() + 1)
    }

    /// Slots ever used (live or free): indices below this are valid for
    /// [`Self::is_live`]; it never shrinks.
    #[inline]
    pub fn slots(&self) -> u32 {
        self.nodes.len() as u32
    }

    /// Whether slot `i` (below [`Self::slots`]) holds a live entry.
    #[inline]
    pub fn is_live(&self, i: u32) -> bool {
        self.nodes[i as usize].list != FREE
    }

    /// Entries of `list` from oldest to newest (for tests and diagnostics).
    pub fn list_indices(&self, list: usize) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = self.head[list];
        while i != NIL {
            out.push(i);
            i = self.nodes[i as usize].next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_touch_remove_keep_lru_order() {
        let mut t: LruSlab<u64, u32, 2> = LruSlab::new(8, 2);
        let a = t.insert(10, 1, 0).unwrap();
        let b = t.insert(20, 2, 0).unwrap();
        let c = t.insert(30, 3, 1).unwrap();
        assert_eq!(t.find(&20), Some(b));
        assert_eq!(t.list_indices(0), vec![a, b]);
        t.touch(a, 0);
        assert_eq!(t.list_indices(0), vec![b, a]);
        t.touch(b, 1);
        assert_eq!(t.list_indices(0), vec![a]);
        assert_eq!(t.list_indices(1), vec![c, b]);
        assert_eq!(t.oldest(1), Some(c));
        assert_eq!(t.remove(c), (30, 3));
        assert_eq!(t.find(&30), None);
        assert_eq!(t.oldest(1), Some(b));
        // the freed slot is reused
        let d = t.insert(40, 4, 0).unwrap();
        assert_eq!(d, c);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn grows_by_doubling_up_to_limit_and_refuses_past_it() {
        let mut t: LruSlab<u32, (), 1> = LruSlab::new(5, 2);
        assert_eq!(t.capacity(), 2);
        for k in 0..5 {
            assert!(t.insert(k, (), 0).is_some());
        }
        assert!(t.capacity() <= 5);
        assert!(t.is_full());
        assert_eq!(t.insert(99, (), 0), None);
        for k in 0..5 {
            assert!(t.find(&k).is_some());
        }
    }

    #[test]
    fn many_inserts_and_removes_stay_consistent() {
        let mut t: LruSlab<u32, u32, 1> = LruSlab::new(1000, 16);
        for round in 0..5u32 {
            for k in 0..1000 {
                t.insert(k + round * 10_000, k, 0).unwrap();
            }
            // remove the oldest half
            for _ in 0..500 {
                let i = t.oldest(0).unwrap();
                t.remove(i);
            }
            for k in 500..1000 {
                assert!(t.find(&(k + round * 10_000)).is_some());
            }
            while let Some(i) = t.oldest(0) {
                t.remove(i);
            }
            assert!(t.is_empty());
        }
    }
}

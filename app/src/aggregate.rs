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
//! Not on a hot path per packet, but per record: no allocation except when a
//! new row appears.

use indexmap::IndexMap;
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
/// only when bytes, VLAN, IP version, source and the first 13 bytes of the
/// destination are; then the whole key decides).
///
/// The 40 leading bytes (IP bytes inverted, so that ascending is bytes
/// descending; VLAN, IP version, `src`, `dst[..13]`, big-endian) are five
/// words compared in turn, each only when the one before is equal: most
/// comparisons end on the first two. 48 bytes with 8-byte alignment, so the
/// sorted entries become the `(key, counters)` pairs in their own allocation.
struct SortEntry {
    /// `!ip_bytes`, VLAN, IP version, `src`, `dst[..13]`.
    lead: [u64; 5],
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
        // Positions fit u32: a table's rows are bounded by memory far below 2^32.
        SortEntry { lead, row: u32::try_from(i).unwrap_or(u32::MAX) }
    }
}

/// The first of the 40 inline bytes at or after `depth` in which the
/// entries of `v` differ (None: from `depth` on they are all equal).
fn first_difference(v: &[SortEntry], depth: usize) -> Option<usize> {
    let first = v.first()?.lead;
    let mut diff = [0u64; 5];
    for e in v {
        for (d, (w, f)) in diff.iter_mut().zip(e.lead.iter().zip(first.iter())) {
            *d |= w ^ f;
        }
    }
    // Bytes before `depth` are equal by the caller's word; mask them in the first word.
    if depth >= 40 {
        return None;
    }
    diff[depth / 8] &= u64::MAX >> (8 * (depth % 8));
    (depth / 8..5).find(|&w| diff[w] != 0).map(|w| 8 * w + diff[w].leading_zeros() as usize / 8)
}

/// One aggregate table.
///
/// Bounded: once it holds `max_rows` rows (CJ_APP_MAX_ROWS), a direction
/// whose key is not already a row is added to the overflow row
/// ([`Key::OVERFLOW`]) instead, and counted in [`Aggregate::overflowed`]. Rows
/// already present keep counting exactly, every total stays exact, and the
/// table never holds more than `max_rows + 1` rows.
///
/// Rows live in insertion order ([`IndexMap`]: one vector of rows and an
/// index of them), so a row has a stable position and the rows changed since
/// the last [`Aggregate::take_changes`] are a list of positions: the
/// checkpoint writes only those (checkpoint.rs).
#[derive(Clone, Debug)]
pub struct Aggregate {
    primitives: Primitives,
    rows: IndexMap<Key, Counters, foldhash::fast::RandomState>,
    max_rows: usize,
    overflowed: u64,
    /// Positions of the rows changed since the last `take_changes`, each once.
    changed: Vec<u32>,
    /// Per position: in `changed`.
    marked: Vec<bool>,
}

impl Aggregate {
    /// An empty table keyed by `primitives`, without a row limit.
    pub fn new(primitives: Primitives) -> Self {
        Aggregate {
            primitives,
            rows: IndexMap::default(),
            max_rows: usize::MAX,
            overflowed: 0,
            changed: Vec::new(),
            marked: Vec::new(),
        }
    }

    /// Bounds the table to `max_rows` rows plus the overflow row.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows.max(1);
        self
    }

    /// Makes room for `rows` rows in all (at most the row limit and the
    /// overflow row), so that growing to them moves nothing: the index is
    /// not rebuilt on the way, which reads every row's stored hash scattered
    /// over the table. Only the index is written at once; the rows' own
    /// memory is reserved and touched as rows come.
    pub fn reserve_rows(&mut self, rows: usize) {
        let want = rows.min(self.max_rows.saturating_add(1));
        self.rows.reserve(want.saturating_sub(self.rows.len()));
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
        self.rows.is_empty()
    }

    /// Adds both directions of an IP record (anything else is ignored: see [`Totals`]).
    pub fn add_ip(&mut self, r: &FlowRecord) {
        if r.record_kind() != Some(RecordKind::Ip) {
            return;
        }
        let closes = r.end() != Some(EndReason::ActiveTimeout);
        let sides = [
            (&r.dir[0], &r.addr_a, &r.addr_b, r.port_a, r.port_b, 0),
            (&r.dir[1], &r.addr_b, &r.addr_a, r.port_b, r.port_a, 1),
        ];
        let outer = [(&r.tunnel_addr_a, &r.tunnel_addr_b), (&r.tunnel_addr_b, &r.tunnel_addr_a)];
        for (d, src, dst, sport, dport, side) in sides {
            // A side without packets here still closes its directional flow when
            // it had packets in an earlier (refreshed) part.
            if d.packets == 0 && !(closes && r.had_packets(side)) {
                continue;
            }
            let mut key = self.key(r, src, dst, sport, dport);
            // Names and outer addresses never seen are in no row: the key is
            // new, and they are added to the process's tables only when its
            // row is created (so a full table adds none).
            let known = self.interned_key(&mut key, r, side, outer[side], false);
            let full = self.rows.len() >= self.max_rows;
            if !known && !full {
                self.interned_key(&mut key, r, side, outer[side], true);
            }
            let c = Counters {
                packets: d.packets,
                ip_bytes: d.ip_bytes,
                frame_bytes: d.frame_bytes,
                flows: u64::from(closes && r.had_packets(side)),
                first_ns: if d.packets > 0 { r.first_ns } else { 0 },
                last_ns: if d.packets > 0 { r.last_ns } else { 0 },
            };
            let key = if full && (!known || !self.rows.contains_key(&key)) {
                // Full: only the overflow row may still be created (rows = max_rows + 1 at most).
                self.overflowed += 1;
                Key::OVERFLOW
            } else {
                key
            };
            self.add_row(key, &c);
        }
    }

    /// Adds `c` to the row of `key` (created when absent) and marks it changed.
    fn add_row(&mut self, key: Key, c: &Counters) {
        if self.rows.len() == self.rows.capacity() {
            self.grow();
        }
        let (i, row) = match self.rows.entry(key) {
            indexmap::map::Entry::Occupied(o) => (o.index(), o.into_mut()),
            indexmap::map::Entry::Vacant(v) => (v.index(), v.insert(Counters::default())),
        };
        row.add(c);
        self.mark(i);
    }

    /// Makes room for four times the rows (at most the row limit and the
    /// overflow row) instead of the index's own doubling: each rebuild of
    /// the index reads every row's stored hash scattered over the table, and
    /// growing by four rebuilds half as often (a table that ends at 2M rows
    /// rebuilds twice past the first reservation instead of four times).
    #[cold]
    fn grow(&mut self) {
        let len = self.rows.len();
        let want = len.saturating_mul(4).max(16).min(self.max_rows.saturating_add(1));
        if want > len {
            self.rows.reserve(want - len);
        }
    }

    /// Marks the row at position `i` changed.
    fn mark(&mut self, i: usize) {
        if i >= self.marked.len() {
            self.marked.resize(i + 1, false);
        }
        if !self.marked[i] {
            self.marked[i] = true;
            // Positions fit u32: a table's rows are bounded by memory far below 2^32.
            self.changed.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
    }

    /// The rows changed since the last call (each once, in the order they
    /// first changed), and forgets them: what a checkpoint after the previous
    /// one must add.
    pub fn take_changes(&mut self) -> Vec<(&Key, &Counters)> {
        for &i in &self.changed {
            if let Some(m) = self.marked.get_mut(i as usize) {
                *m = false;
            }
        }
        let changed = std::mem::take(&mut self.changed);
        changed.into_iter().filter_map(|i| self.rows.get_index(i as usize)).collect()
    }

    /// Forgets the changed rows (a full checkpoint holds every row).
    pub fn clear_changes(&mut self) {
        self.changed.clear();
        self.marked.clear();
    }

    /// Sets the row of `key` to `c` (a checkpoint's row, replayed at load);
    /// the row limit is the checkpoint's, already checked when it was counted.
    fn put_row(&mut self, key: Key, c: Counters) {
        self.rows.insert(key, c);
    }

    /// The container names and tunnel fields of a direction's key (outer
    /// source and destination of that direction), for the primitives chosen.
    /// With `add`, names and addresses get ids when new; without, the
    /// result is whether every one already had one (those that had not are
    /// left none).
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
        let mut name = |v: &[u8; 32]| {
            if add {
                Name::intern(v)
            } else {
                Name::find(v).unwrap_or_else(|| {
                    known = false;
                    Name::NONE
                })
            }
        };
        if p.has(Primitive::SrcContainer) {
            k.src_container = name(&r.ctr[side].name);
        }
        if p.has(Primitive::DstContainer) {
            k.dst_container = name(&r.ctr[1 - side].name);
        }
        let mut addr = |v: &[u8; 16]| {
            if add {
                OuterAddr::intern(v)
            } else {
                OuterAddr::find(v).unwrap_or_else(|| {
                    known = false;
                    OuterAddr::NONE
                })
            }
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
        self.rows.get(key)
    }

    /// Every row, in the order they appeared (for queries that filter before sorting).
    pub fn rows(&self) -> impl Iterator<Item = (&Key, &Counters)> {
        self.rows.iter()
    }

    /// All rows, sorted by IP bytes descending, then by key: deterministic.
    pub fn sorted(&self) -> Vec<(&Key, &Counters)> {
        let mut v = self.sort_entries();
        self.radix_sort(&mut v, 0);
        self.rows_of(v)
    }

    /// Sorts `v`, whose entries share their first `depth` bytes of the
    /// order, in place: one byte at a time over the 40 inline bytes (counts,
    /// then each entry swapped into its byte's bucket, American flag sort),
    /// a comparison sort for small buckets and past the inline bytes. The same
    /// order as [`Aggregate::order`], without its scattered tie-breaks on
    /// most of the way. Bytes that are the same in every entry of `v` (the
    /// high bytes of small counters, the zeros of an IPv4 address in its
    /// 16-byte form) are found in one pass and skipped, not counted one by one.
    fn radix_sort(&self, v: &mut [SortEntry], depth: usize) {
        const SMALL: usize = 64;
        let Some(depth) = (v.len() > SMALL).then(|| first_difference(v, depth)).flatten() else {
            v.sort_unstable_by(|a, b| self.order(a, b));
            return;
        };
        let byte = |e: &SortEntry| (e.lead[depth / 8] >> (56 - 8 * (depth % 8))) as u8 as usize;
        let mut count = [0usize; 256];
        for e in v.iter() {
            count[byte(e)] += 1;
        }
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
        for d in 0..256 {
            if count[d] > 1 {
                self.radix_sort(&mut v[start[d]..start[d] + count[d]], depth + 1);
            }
        }
    }

    /// Bytes descending, then the key's order.
    fn order(&self, a: &SortEntry, b: &SortEntry) -> std::cmp::Ordering {
        a.lead.cmp(&b.lead).then_with(|| {
            let key = |e: &SortEntry| self.rows.get_index(e.row as usize).map(|(k, _)| k);
            key(a).cmp(&key(b))
        })
    }

    /// The rows of sorted entries, in their order (in the entries' allocation).
    fn rows_of(&self, v: Vec<SortEntry>) -> Vec<(&Key, &Counters)> {
        v.into_iter().filter_map(|e| self.rows.get_index(e.row as usize)).collect()
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
            for (i, (k, c)) in self.rows.iter().enumerate() {
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
        self.rows.iter().enumerate().map(|(i, (k, c))| SortEntry::new(i, k, c)).collect()
    }

    /// Sum of every row.
    #[cfg(test)]
    pub fn sum(&self) -> Counters {
        let mut t = Counters::default();
        for c in self.rows.values() {
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
        for (k, c) in &self.0.rows {
            row.0.clear();
            row.push(self.0.primitives, k, c);
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
    fn changes(&mut self) -> TableChanges {
        let p = self.primitives;
        let overflowed = self.overflowed;
        let mut rows = RowBytes::default();
        let changed = self.take_changes();
        let count = changed.len();
        for (k, c) in changed {
            rows.push(p, k, c);
        }
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

impl RowBytes {
    fn push(&mut self, p: Primitives, k: &Key, c: &Counters) {
        use row_flag as F;
        use Primitive as P;
        let hosts = p.has(P::SrcHost) || p.has(P::DstHost);
        let outer = p.has(P::OuterSrcHost) || p.has(P::OuterDstHost);
        let short_hosts = short_addr(k.ip_version, &k.src) && short_addr(k.ip_version, &k.dst);
        let (osrc, odst) = (k.outer_src.bytes(), k.outer_dst.bytes());
        let short_outer = short_addr(k.outer_ip_version, &osrc) && short_addr(k.outer_ip_version, &odst);
        let short_counters = [c.packets, c.ip_bytes, c.frame_bytes, c.flows].iter().all(|&v| v <= u64::from(u32::MAX));
        let span = c.last_ns.wrapping_sub(c.first_ns);
        let short_span = span <= u64::from(u32::MAX);
        let flags = [
            (k.overflow, F::OVERFLOW),
            (short_hosts, F::SHORT_HOSTS),
            (short_outer, F::SHORT_OUTER),
            (short_counters, F::SHORT_COUNTERS),
            (short_span, F::SHORT_SPAN),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |f, (_, bit)| f | bit);
        // Composed on the stack with fixed-size copies, appended in one copy.
        let mut row = RowText { b: [0; 192], n: 0 };
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
        self.0.extend_from_slice(&row.b[..row.n.min(row.b.len())]);
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

/// One row of [`RowBytes`] being composed: at most 1 + 2 + 1 + 4 × 16 +
/// 2 × 32 + 2 + 2 + 1 + 1 + 1 + 4 key bytes and 48 counter bytes (188).
struct RowText {
    b: [u8; 192],
    n: usize,
}

impl RowText {
    #[inline(always)]
    fn put<const N: usize>(&mut self, v: [u8; N]) {
        // Within the 192 bytes: the fields of a row add up to at most 188.
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

    /// Directions folded into overflow rows, every table (see [`Aggregate::overflowed`]).
    pub fn rows_overflowed(&self) -> u64 {
        self.tables.iter().map(Aggregate::overflowed).sum::<u64>()
            + self.containers.logs().map_or(0, |l| l.values().map(Aggregate::overflowed).sum())
    }

    /// Per-container totals (the first queue's records only in fan-out mode).
    pub fn containers(&self) -> &Containers {
        &self.containers
    }

    /// Adds a valid record read from the queue at index `qi` of the intake.
    pub fn add(&mut self, qi: usize, r: &FlowRecord) {
        if let Some(t) = self.per_queue.get_mut(qi) {
            t.add(r);
        }
        if !self.fan_out || qi == 0 {
            self.containers.add(r);
        }
        let ti = if self.fan_out { qi } else { 0 };
        if let Some(table) = self.tables.get_mut(ti) {
            table.add_ip(r);
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

    #[test]
    fn a_rows_key_and_sort_entry_stay_the_sizes_the_readme_counts() {
        // README "The app's memory": a 64-byte key (names and outer addresses
        // as ids), 48-byte sort entries that become the sorted pairs in place.
        assert_eq!(std::mem::size_of::<Key>(), 64);
        assert_eq!(std::mem::size_of::<SortEntry>(), 48);
        assert_eq!(std::mem::align_of::<SortEntry>(), std::mem::align_of::<(&Key, &Counters)>());
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
            bytes.push(p, k, c);
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
        one.push(p, k, c);
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
        let last = RowBytes(bytes.0[..bytes.0.len() - 1].to_vec());
        assert!(last.replay(p, |_, _| {}).is_err());
        let mut bad = RowBytes(one.0.clone());
        bad.0[0] |= 0x80;
        assert!(bad.replay(p, |_, _| {}).is_err());
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
}

//! A worker's table of tunnel endpoints (`CJ_DECAP`): the outer side of
//! decapsulated flows, interned so that a flow-table entry carries only a
//! 3-byte [`TunnelHandle`].
//!
//! Guarantees:
//! - One entry per distinct (kind, outer IP version, outer address at the
//!   inner key's `lo` end, outer address at its `hi` end, VNI or GRE key): both
//!   directions of an inner flow through one tunnel get one handle, so the
//!   flow table keys on the inner flow *and* its tunnel (as pmacct puts its
//!   tunnel primitives in the aggregation key): the same inner 5-tuple in two
//!   VNIs, or over two outer paths, is two flows.
//! - Bounded: at most [`MAX_TUNNEL_ENDPOINTS`] entries per worker (about 45
//!   bytes each with the index, 3 MB when full; grown as needed). When the
//!   table is full, a new endpoint pair's packets are still accounted as their
//!   inner flow, under a handle that keeps the kind only (the record has
//!   [`TUNNEL_ENDPOINTS_NOT_KEPT`] and zero outer addresses), and counted in
//!   [`TunnelStats::not_kept`].
//! - [`TunnelTable::resolve`] turns the handle the flow table wrote into a
//!   record (`tunnel_id`) into the record's tunnel fields; the worker resolves
//!   every record before it leaves ([`Resolve`]), so handles never leave the
//!   worker.
//!
//! Not guaranteed: entries are never removed while the worker runs (outer
//! endpoint pairs are the hosts of an overlay: few, and long-lived); a worker
//! that sees more distinct pairs than the bound keeps only the first ones.

use std::collections::HashMap;

use station::record::{FlowRecord, TUNNEL_ENDPOINTS_NOT_KEPT, TUNNEL_HAS_ID};
use wire::tunnel::{Tunnel, TunnelKind};
use wire::Direction;

use crate::record_sink::RecordSink;

/// Most endpoint pairs a worker keeps.
pub const MAX_TUNNEL_ENDPOINTS: usize = 65_536;

/// Bits of a handle that hold the slot (the kind is above them).
const SLOT_BITS: u32 = 21;

/// A flow's tunnel, as its flow-table key holds it: 24 bits, the kind in the
/// top 3 and the slot in the table + 1 below (0: endpoints not kept);
/// all zero ([`TunnelHandle::NONE`]) for a flow that is not tunnelled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TunnelHandle([u8; 3]);

impl TunnelHandle {
    /// Not tunnelled.
    pub const NONE: TunnelHandle = TunnelHandle([0; 3]);

    fn new(kind: TunnelKind, slot: u32) -> Self {
        Self::from_raw((u32::from(kind as u8) << SLOT_BITS) | slot)
    }

    /// The handle as a number below 2^24 (0 for [`TunnelHandle::NONE`]).
    pub fn raw(self) -> u32 {
        u32::from_be_bytes([0, self.0[0], self.0[1], self.0[2]])
    }

    /// The handle of a number [`TunnelHandle::raw`] gave (bits above 24 dropped).
    pub fn from_raw(v: u32) -> Self {
        let b = v.to_be_bytes();
        TunnelHandle([b[1], b[2], b[3]])
    }

    fn kind(self) -> Option<TunnelKind> {
        TunnelKind::from_u8((self.raw() >> SLOT_BITS) as u8)
    }

    fn slot(self) -> u32 {
        self.raw() & ((1 << SLOT_BITS) - 1)
    }
}

/// One endpoint pair: the outer addresses at the inner key's `lo` and `hi` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Ends {
    kind: TunnelKind,
    ip_version: u8,
    lo: [u8; 16],
    hi: [u8; 16],
    id: u32,
    has_id: bool,
}

/// Totals of a worker's decapsulation, for its stats page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelStats {
    /// Packets accounted as their inner flow.
    pub decapsulated: u64,
    /// Packets of an enabled tunnel accounted as their outer flow because
    /// their inside was not usable (`wire::tunnel::Decapsulated::Undecoded`).
    pub undecoded: u64,
    /// Endpoint pairs in the table.
    pub endpoints: u64,
    /// Decapsulated packets whose endpoint pair found the table full.
    pub not_kept: u64,
}

/// The table. See the module docs.
#[derive(Debug)]
pub struct TunnelTable {
    index: HashMap<Ends, u32, foldhash::fast::FixedState>,
    ends: Vec<Ends>,
    limit: usize,
    stats: TunnelStats,
}

impl Default for TunnelTable {
    fn default() -> Self {
        Self::with_limit(MAX_TUNNEL_ENDPOINTS)
    }
}

impl TunnelTable {
    /// A table of at most `limit` pairs (tests use small ones); at most
    /// 2^21 - 1, what a handle can name.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            index: HashMap::default(),
            ends: Vec::new(),
            limit: limit.min((1 << SLOT_BITS) - 1),
            stats: TunnelStats::default(),
        }
    }

    /// Totals so far.
    pub fn stats(&self) -> TunnelStats {
        TunnelStats { endpoints: self.ends.len() as u64, ..self.stats }
    }

    /// Counts a packet of an enabled tunnel that stays its outer flow.
    #[inline]
    pub fn undecoded(&mut self) {
        self.stats.undecoded += 1;
    }

    /// The handle of `t` for a decapsulated packet that travels `dir` in its
    /// inner flow's key (so the outer source is the address at the sender's
    /// end); counts the packet.
    pub fn intern(&mut self, t: &Tunnel, dir: Direction) -> TunnelHandle {
        self.stats.decapsulated += 1;
        let Some(kind) = t.kind else {
            return TunnelHandle::NONE;
        };
        let (lo, hi) = match dir {
            Direction::LoToHi => (t.src, t.dst),
            Direction::HiToLo => (t.dst, t.src),
        };
        let e = Ends { kind, ip_version: t.ip_version, lo, hi, id: t.id, has_id: t.has_id };
        if let Some(&slot) = self.index.get(&e) {
            return TunnelHandle::new(kind, slot);
        }
        if self.ends.len() >= self.limit {
            self.stats.not_kept += 1;
            return TunnelHandle::new(kind, 0);
        }
        self.ends.push(e);
        let slot = self.ends.len() as u32;
        self.index.insert(e, slot);
        TunnelHandle::new(kind, slot)
    }

    /// Fills the tunnel fields of a record whose `tunnel_id` holds a handle
    /// (the flow table's; `tunnel_kind` 0): kind, outer addresses at side
    /// a's and b's ends, VNI or key. A record without a handle is untouched.
    pub fn resolve(&self, r: &mut FlowRecord) {
        if r.tunnel_kind != 0 || r.tunnel_id == 0 {
            return;
        }
        let h = TunnelHandle::from_raw(r.tunnel_id);
        r.tunnel_id = 0;
        let Some(kind) = h.kind() else {
            return;
        };
        r.tunnel_kind = kind as u8;
        let Some(e) = (h.slot() as usize).checked_sub(1).and_then(|i| self.ends.get(i)) else {
            r.tunnel_flags = TUNNEL_ENDPOINTS_NOT_KEPT;
            return;
        };
        // Side a is the key's lo side when its (address, port) is not above b's
        // (wire::FlowKey's order).
        let a_is_lo = (r.addr_a, r.port_a) <= (r.addr_b, r.port_b);
        (r.tunnel_addr_a, r.tunnel_addr_b) = if a_is_lo { (e.lo, e.hi) } else { (e.hi, e.lo) };
        r.tunnel_ip_version = e.ip_version;
        if e.has_id {
            r.tunnel_id = e.id;
            r.tunnel_flags = TUNNEL_HAS_ID;
        }
    }
}

/// A sink that resolves each record's tunnel ([`TunnelTable::resolve`])
/// before handing it on.
#[derive(Debug)]
pub struct Resolve<'a, S: RecordSink> {
    /// The worker's tunnel table.
    pub tunnels: &'a TunnelTable,
    /// Where records go.
    pub sink: &'a mut S,
}

impl<S: RecordSink> RecordSink for Resolve<'_, S> {
    #[inline]
    fn emit(&mut self, mut rec: FlowRecord) {
        self.tunnels.resolve(&mut rec);
        self.sink.emit(rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(src: u8, dst: u8, id: u32) -> Tunnel {
        let mut t = Tunnel { kind: Some(TunnelKind::Vxlan), ip_version: 4, id, has_id: true, ..Tunnel::default() };
        t.src[..4].copy_from_slice(&[192, 168, 0, src]);
        t.dst[..4].copy_from_slice(&[192, 168, 0, dst]);
        t
    }

    #[test]
    fn both_directions_of_a_flow_share_a_handle_and_the_record_gets_each_sides_outer_address() {
        let mut t = TunnelTable::default();
        let h = t.intern(&tunnel(1, 2, 42), Direction::LoToHi);
        assert_eq!(t.intern(&tunnel(2, 1, 42), Direction::HiToLo), h);
        assert_ne!(t.intern(&tunnel(1, 2, 43), Direction::LoToHi), h, "another VNI, another tunnel");
        assert_eq!(t.stats(), TunnelStats { decapsulated: 3, undecoded: 0, endpoints: 2, not_kept: 0 });
        // A record whose side a is the key's hi side (10.0.0.9 > 10.0.0.1).
        let mut r = FlowRecord { tunnel_id: h.raw(), ..FlowRecord::default() };
        r.addr_a[..4].copy_from_slice(&[10, 0, 0, 9]);
        r.addr_b[..4].copy_from_slice(&[10, 0, 0, 1]);
        t.resolve(&mut r);
        assert_eq!(
            (r.tunnel(), r.tunnel_id, r.tunnel_flags, r.tunnel_ip_version),
            (Some(TunnelKind::Vxlan), 42, TUNNEL_HAS_ID, 4)
        );
        assert_eq!((r.tunnel_addr_a[3], r.tunnel_addr_b[3]), (2, 1));
        // Resolving twice changes nothing; a record without a handle is untouched.
        let once = r;
        t.resolve(&mut r);
        assert_eq!(r, once);
        let mut plain = FlowRecord::default();
        t.resolve(&mut plain);
        assert_eq!(plain, FlowRecord::default());
    }

    #[test]
    fn a_full_table_keeps_the_kind_and_counts_the_packets_whose_endpoints_it_does_not_keep() {
        let mut t = TunnelTable::with_limit(1);
        let kept = t.intern(&tunnel(1, 2, 1), Direction::LoToHi);
        let lost = t.intern(&tunnel(3, 4, 1), Direction::LoToHi);
        assert_eq!(t.intern(&tunnel(1, 2, 1), Direction::LoToHi), kept);
        assert_eq!(t.stats().not_kept, 1);
        let mut r = FlowRecord { tunnel_id: lost.raw(), ..FlowRecord::default() };
        t.resolve(&mut r);
        assert_eq!(
            (r.tunnel(), r.tunnel_flags, r.tunnel_addr_a, r.tunnel_id),
            (Some(TunnelKind::Vxlan), TUNNEL_ENDPOINTS_NOT_KEPT, [0; 16], 0)
        );
        assert_eq!(TunnelHandle::from_raw(kept.raw()), kept);
    }
}

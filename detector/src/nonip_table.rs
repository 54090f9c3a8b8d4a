//! The per-worker table of frames that are not IP flows: non-IP frames (ARP,
//! LLDP, ...) and malformed IP frames, so that every frame ends in a record.
//!
//! Guarantees:
//! - **Every frame given to [`NonIpTable::frame`] is counted in exactly one
//!   record**, of kind [`RecordKind::NonIp`] or [`RecordKind::Malformed`],
//!   keyed by (kind, canonical MAC pair, EtherType, VLAN, inner VLAN).
//! - Side `a` is the source MAC of the entry's first frame; `dir[0]` counts
//!   frames sent by `a`'s MAC. Both MACs are equal only for frames a host sends
//!   to itself; those count as a→b.
//! - IP bytes are always zero; frame bytes are wire lengths. Addresses, ports,
//!   IP version and protocol are zero.
//! - The same timing rules as the flow table: idle timeout (lazy on arrival and
//!   by [`NonIpTable::expire`], O(expired)), active timeout, and eviction of the
//!   least recently seen entry when [`NON_IP_TABLE_SIZE`] entries are held, and
//!   [`EndReason::ForcedEnd`] on [`NonIpTable::flush`].
//! - Entries are per capture point (the key includes the capture source) and
//!   both sides are attributed to containers when the entry is created, like
//!   flows (by capture interface, the container's side by the first frame's
//!   direction on it when the source knows it, else by MAC; see
//!   [`crate::flow_table::attribute`]), so per-container frame totals include
//!   ARP and the like.
//! - A packet-queue slot that cannot be read (corrupt metadata) is counted by
//!   [`NonIpTable::corrupt_slot`] as one malformed frame with zero MACs,
//!   EtherType 0 and 0 frame bytes, of no container.

use std::sync::Arc;

use inventory::entries::Holdings;
use inventory::Snapshot;
use station::record::{DirCounters, EndReason, FlowRecord, RecordKind};
use wire::{PacketSummary, L3};

use crate::flow_table::{attribute, hold, release, unpack, Attribution, Capture, TableConfig};
use crate::lru_slab::LruSlab;
use crate::record_sink::RecordSink;

/// Most (kind, MAC pair, EtherType, VLANs) entries a worker holds.
pub const NON_IP_TABLE_SIZE: usize = 4096;

/// The key of a non-IP entry: direction-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct NonIpKey {
    kind: u8,
    mac_lo: [u8; 6],
    mac_hi: [u8; 6],
    ethertype: u16,
    vlan: u16,
    vlan_inner: u16,
    source: u8,
}

/// Counters of one entry, by key side (0: sent by `mac_lo`).
#[derive(Clone, Copy, Debug)]
struct Entry {
    counters: [DirCounters; 2],
    first_ns: u64,
    last_ns: u64,
    seen_ns: u64,
    started_ns: u64,
    initiator_hi: bool,
    /// Containers by key side.
    ctr: [Attribution; 2],
}

/// The non-IP and malformed-frame table. See the module docs.
#[derive(Debug)]
pub struct NonIpTable {
    slab: LruSlab<NonIpKey, Entry, 1>,
    cfg: TableConfig,
    records: u64,
    evicted: u64,
    snap: Arc<Snapshot>,
    /// Entry sides per inventory entry (see [`crate::flow_table::FlowTable::holdings`]).
    held: Holdings,
}

impl NonIpTable {
    /// An empty table with the flow table's timeouts (its size is fixed).
    pub fn new(cfg: TableConfig) -> Self {
        Self {
            slab: LruSlab::new(NON_IP_TABLE_SIZE, 256),
            cfg,
            records: 0,
            evicted: 0,
            snap: Arc::default(),
            held: Holdings::default(),
        }
    }

    /// How many entry sides hold each inventory entry (see
    /// [`crate::flow_table::FlowTable::holdings`]).
    pub fn holdings(&self) -> &Holdings {
        &self.held
    }

    /// [`NonIpTable::holdings`], for a report.
    pub fn holdings_mut(&mut self) -> &mut Holdings {
        &mut self.held
    }

    /// The inventory snapshot (see [`crate::flow_table::FlowTable::set_snapshot`]).
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        self.snap = snap;
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Records emitted so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Entries evicted for lack of room so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Counts one frame whose summary is [`L3::NonIp`] or [`L3::Malformed`]
    /// (any other kind is counted as malformed).
    pub fn frame(&mut self, s: &PacketSummary, ts_ns: u64, frame_len: u32, now_ns: u64, sink: &mut impl RecordSink) {
        self.frame_from(Capture::on(0), s, ts_ns, frame_len, now_ns, sink);
    }

    /// [`NonIpTable::frame`] for a frame captured at `at`.
    pub fn frame_from(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        ts_ns: u64,
        frame_len: u32,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        let kind = match s.l3 {
            L3::NonIp => RecordKind::NonIp,
            _ => RecordKind::Malformed,
        };
        let k = (kind, s.ethertype, s.vlan, s.vlan_inner, Some(at));
        self.count(k, s.src_mac, s.dst_mac, ts_ns, frame_len, now_ns, sink);
    }

    /// Counts one unreadable packet-queue slot as a malformed frame of 0 bytes,
    /// of no capture interface and so of no container (its slot says nothing
    /// that can be trusted; before, it was taken as capture index 0's, which
    /// with `CJ_IFACE=containers` is a container's veth).
    pub fn corrupt_slot(&mut self, now_ns: u64, sink: &mut impl RecordSink) {
        self.count((RecordKind::Malformed, 0, 0, 0, None), [0; 6], [0; 6], now_ns, 0, now_ns, sink);
    }

    #[allow(clippy::too_many_arguments)]
    fn count(
        &mut self,
        (kind, ethertype, vlan, vlan_inner, at): (RecordKind, u16, u16, u16, Option<Capture>),
        src: [u8; 6],
        dst: [u8; 6],
        ts_ns: u64,
        frame_len: u32,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        let side = usize::from(src > dst);
        let (mac_lo, mac_hi) = if side == 0 { (src, dst) } else { (dst, src) };
        let source = at.map_or(0, |at| at.source);
        let key = NonIpKey { kind: kind as u8, mac_lo, mac_hi, ethertype, vlan, vlan_inner, source };
        let snap = &self.snap;
        let attributed = || {
            let Some(at) = at else { return [0, 0] };
            let (by_src, by_dst) = attribute(snap, at, &src, &dst, None);
            if side == 0 {
                [by_src, by_dst]
            } else {
                [by_dst, by_src]
            }
        };
        let fresh = Entry {
            counters: [DirCounters::default(); 2],
            first_ns: ts_ns,
            last_ns: ts_ns,
            seen_ns: now_ns,
            started_ns: now_ns,
            initiator_hi: side == 1,
            ctr: [0; 2],
        };
        let queue = self.cfg.queue;
        let hash = self.slab.hash_of(&key);
        let i = match self.slab.find_hashed(hash, &key) {
            Some(i) => {
                let e = self.slab.get_mut(i);
                if now_ns.saturating_sub(e.seen_ns) >= self.cfg.idle_ns {
                    sink.emit(record(&key, e, EndReason::IdleTimeout, queue, snap));
                    release(&mut self.held, e.ctr);
                    *e = Entry { ctr: attributed(), ..fresh };
                    hold(&mut self.held, e.ctr);
                    self.records += 1;
                } else if now_ns.saturating_sub(e.started_ns) >= self.cfg.active_ns {
                    sink.emit(record(&key, e, EndReason::ActiveTimeout, queue, snap));
                    *e = Entry { initiator_hi: e.initiator_hi, ctr: e.ctr, ..fresh };
                    self.records += 1;
                }
                i
            }
            None => {
                if self.slab.is_full() {
                    if let Some(v) = self.slab.oldest(0) {
                        let (k, e) = self.slab.remove(v);
                        release(&mut self.held, e.ctr);
                        sink.emit(record(&k, &e, EndReason::LackOfResources, queue, snap));
                        self.records += 1;
                        self.evicted += 1;
                    }
                }
                let ctr = attributed();
                hold(&mut self.held, ctr);
                match self.slab.insert_hashed(hash, key, Entry { ctr, ..fresh }, 0) {
                    Some(i) => i,
                    None => unreachable!("insert after eviction"),
                }
            }
        };
        let e = self.slab.get_mut(i);
        e.counters[side].add(0, frame_len, 0);
        e.first_ns = e.first_ns.min(ts_ns);
        e.last_ns = e.last_ns.max(ts_ns);
        e.seen_ns = now_ns;
        self.slab.touch(i, 0);
    }

    /// Ends every entry idle for the idle timeout at `now_ns`; O(expired).
    pub fn expire(&mut self, now_ns: u64, sink: &mut impl RecordSink) -> u64 {
        let mut n = 0;
        while let Some(i) = self.slab.oldest(0) {
            if now_ns.saturating_sub(self.slab.get(i).seen_ns) < self.cfg.idle_ns {
                break;
            }
            let (k, e) = self.slab.remove(i);
            release(&mut self.held, e.ctr);
            sink.emit(record(&k, &e, EndReason::IdleTimeout, self.cfg.queue, &self.snap));
            n += 1;
        }
        self.records += n;
        n
    }

    /// Ends every entry ([`EndReason::ForcedEnd`]).
    pub fn flush(&mut self, sink: &mut impl RecordSink) -> u64 {
        let mut n = 0;
        while let Some(i) = self.slab.oldest(0) {
            let (k, e) = self.slab.remove(i);
            release(&mut self.held, e.ctr);
            sink.emit(record(&k, &e, EndReason::ForcedEnd, self.cfg.queue, &self.snap));
            n += 1;
        }
        self.records += n;
        n
    }
}

fn record(key: &NonIpKey, e: &Entry, reason: EndReason, queue: u16, snap: &Snapshot) -> FlowRecord {
    let (a, b) = if e.initiator_hi { (1, 0) } else { (0, 1) };
    let mac = [key.mac_lo, key.mac_hi];
    FlowRecord {
        first_ns: e.first_ns,
        last_ns: e.last_ns,
        dir: [e.counters[a], e.counters[b]],
        mac_a: mac[a],
        mac_b: mac[b],
        vlan: key.vlan,
        vlan_inner: key.vlan_inner,
        ethertype: key.ethertype,
        queue,
        kind: key.kind,
        end_reason: reason as u8,
        source: key.source,
        ctr: [unpack(snap, e.ctr[a]), unpack(snap, e.ctr[b])],
        ..FlowRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow_table::tests::cfg;

    const S: u64 = 1_000_000_000;

    fn arp(src: u8, dst: u8) -> PacketSummary {
        PacketSummary {
            l3: L3::NonIp,
            ethertype: 0x0806,
            src_mac: [2, 0, 0, 0, 0, src],
            dst_mac: [2, 0, 0, 0, 0, dst],
            ..Default::default()
        }
    }

    #[test]
    fn non_ip_frames_are_counted_per_mac_pair_and_direction() {
        let mut t = NonIpTable::new(cfg());
        let mut out = Vec::new();
        t.frame(&arp(9, 1), S, 60, S, &mut out);
        t.frame(&arp(1, 9), S + 1, 60, S + 1, &mut out);
        t.frame(&arp(9, 1), S + 2, 64, S + 2, &mut out);
        let mut lldp = arp(9, 1);
        lldp.ethertype = 0x88cc;
        t.frame(&lldp, S + 3, 100, S + 3, &mut out);
        let mut bad = arp(9, 1);
        bad.l3 = L3::Malformed;
        bad.ethertype = 0x0800;
        t.frame(&bad, S + 4, 20, S + 4, &mut out);
        t.corrupt_slot(S + 5, &mut out);
        assert_eq!(t.len(), 4);
        t.flush(&mut out);
        assert_eq!(out.len(), 4);
        let r = out.iter().find(|r| r.ethertype == 0x0806).unwrap();
        assert_eq!(r.kind, RecordKind::NonIp as u8);
        assert_eq!(r.mac_a, [2, 0, 0, 0, 0, 9]);
        assert_eq!((r.dir[0].packets, r.dir[1].packets), (2, 1));
        assert_eq!(r.dir[0].frame_bytes, 124);
        assert_eq!(r.dir[0].ip_bytes, 0);
        assert_eq!((r.first_ns, r.last_ns), (S, S + 2));
        let m = out.iter().filter(|r| r.kind == RecordKind::Malformed as u8).count();
        assert_eq!(m, 2);
        let corrupt = out.iter().find(|r| r.kind == RecordKind::Malformed as u8 && r.ethertype == 0).unwrap();
        assert_eq!((corrupt.packets(), corrupt.dir[0].frame_bytes), (1, 0));
        assert_eq!(out.iter().map(|r| r.packets()).sum::<u64>(), 6);
    }

    #[test]
    fn non_ip_entries_expire_and_split_like_flows() {
        let mut t = NonIpTable::new(TableConfig { active_ns: 10 * S, ..cfg() });
        let mut out = Vec::new();
        for i in 0..15 {
            t.frame(&arp(9, 1), i * S, 60, i * S, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end(), Some(EndReason::ActiveTimeout));
        assert_eq!(out[0].packets(), 10);
        assert_eq!(t.expire(14 * S + 29 * S, &mut out), 0);
        assert_eq!(t.expire(14 * S + 30 * S, &mut out), 1);
        assert_eq!(out[1].end(), Some(EndReason::IdleTimeout));
        assert_eq!(out[1].packets(), 5);
    }

    #[test]
    fn an_unreadable_slot_is_no_containers_though_capture_index_0_is_a_containers_veth() {
        let veth0 = inventory::Entry {
            reference: station::record::ContainerRef {
                name: station::record::fixed_text("on-index-0"),
                ..Default::default()
            },
            macs: vec![[2, 0, 0, 0, 0, 0x10]],
            ..Default::default()
        };
        let mut t = NonIpTable::new(cfg());
        t.set_snapshot(Arc::new(inventory::snapshot_for_tests(&[(veth0, Some(0))])));
        let mut out = Vec::new();
        t.corrupt_slot(S, &mut out);
        t.flush(&mut out);
        assert_eq!(out.len(), 1);
        let names: Vec<&str> = out[0].ctr.iter().map(|c| c.name_str()).collect();
        assert_eq!(names, ["", ""], "the slot said nothing about where it was captured");
        assert_eq!((t.holdings().count(1), t.holdings().memory_bytes()), (0, 0));
    }

    #[test]
    fn the_entries_held_by_non_ip_frames_return_to_zero_however_they_leave() {
        // Client entry 1 (MAC ..:09), server entry 2 (MAC ..:ee).
        let mut t = NonIpTable::new(TableConfig { active_ns: 10 * S, ..cfg() });
        t.set_snapshot(crate::flow_table::tests::two_containers());
        let mut out = Vec::new();
        let held = |t: &NonIpTable| (t.holdings().count(1), t.holdings().count(2));
        t.frame(&arp(9, 0xee), S, 60, S, &mut out);
        t.frame(&arp(9, 0x77), S, 60, S, &mut out);
        assert_eq!(held(&t), (2, 1));
        // An active timeout keeps the attribution; an idle restart holds it anew.
        t.frame(&arp(9, 0xee), 12 * S, 60, 12 * S, &mut out);
        assert_eq!(held(&t), (2, 1));
        t.frame(&arp(9, 0xee), 50 * S, 60, 50 * S, &mut out);
        assert_eq!((out.len(), held(&t)), (2, (2, 1)));
        // Expiry, then eviction (a full table of frames of nobody's), then the flush.
        assert_eq!(t.expire(50 * S, &mut out), 1);
        assert_eq!(held(&t), (1, 1));
        for i in 0..NON_IP_TABLE_SIZE as u16 {
            let mut s = arp(1, 2);
            s.ethertype = i;
            t.frame(&s, 51 * S, 60, 51 * S, &mut out);
        }
        assert_eq!(out.last().unwrap().end(), Some(EndReason::LackOfResources));
        assert_eq!(held(&t), (0, 0));
        t.frame(&arp(0xee, 9), 52 * S, 60, 52 * S, &mut out);
        assert_eq!(held(&t), (1, 1));
        t.flush(&mut out);
        assert_eq!((held(&t), t.holdings().entries_held()), ((0, 0), 0));
    }

    #[test]
    fn full_non_ip_table_evicts() {
        let mut t = NonIpTable::new(cfg());
        let mut out = Vec::new();
        for i in 0..=NON_IP_TABLE_SIZE as u32 {
            let mut s = arp(1, 2);
            s.ethertype = i as u16;
            s.vlan = (i >> 16) as u16;
            t.frame(&s, S, 60, S, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end(), Some(EndReason::LackOfResources));
        assert_eq!(out[0].ethertype, 0);
        assert_eq!(t.evicted(), 1);
    }
}

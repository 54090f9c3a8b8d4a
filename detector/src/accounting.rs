//! A worker's accounting: every packet-queue slot it reads ends in exactly one
//! record.
//!
//! Guarantees (the accounting identity of DESIGN.md, per worker):
//! - Each slot given to [`Accounting::slot`] is counted once in
//!   [`FrameCounters::packets`] and once in exactly one of `ipv4`, `ipv6`,
//!   `non_ip`, `malformed` (so they sum to `packets`), and its packet is
//!   counted in exactly one record: IPv4/IPv6 frames in their flow
//!   ([`crate::flow_table`]; later IP fragments in their datagram's flow, with
//!   its ports, or when its first fragment never comes under ports 0/0: see
//!   [`crate::fragments`]), non-IP and malformed frames in the non-IP table
//!   ([`crate::nonip_table`]). A slot that `station::slot::read_packet` refuses
//!   (corrupt metadata) is a malformed frame of 0 bytes.
//! - After [`Accounting::flush`], the packets of all records emitted since the
//!   start equal `packets`, per direction.
//! - Timeouts are checked every [`CHECK_EVERY`] packets and on
//!   [`Accounting::idle`], not per packet; flows are also ended lazily when
//!   their next packet arrives, so record boundaries follow the flow clock
//!   ([`crate::clock`]) alone.
//! - Nothing is allocated per packet once the tables have grown.
//! - Attribution: the tables attribute new flows with the inventory snapshot
//!   given to [`Accounting::set_snapshot`] (the worker loads it once per
//!   batch, and again before a frame whose capture index the snapshot does
//!   not know: [`Accounting::knows_source`]); the frame's capture source
//!   and its direction there come from its slot metadata ([`Capture::of`]).
//! - Tunnels (`CJ_DECAP`, [`Accounting::with_decap`]): a packet of an enabled
//!   tunnel with a usable inner IP packet (`wire::tunnel::summarize_decap`) is
//!   counted as its **inner** flow instead of its outer one, keyed also by its
//!   tunnel ([`crate::tunnels`]: kind, outer endpoints, VNI or key): it is
//!   IPv4 or IPv6 by its inner packet, its IP bytes are the inner packet's,
//!   its frame bytes the captured frame's, and its record carries the tunnel.
//!   One that matched an enabled tunnel but whose inside is not usable is
//!   counted as its outer flow and in `tunnel_undecoded`. Either way it is in
//!   exactly one record. Flow divert (`crate::divert`) decides on the outer
//!   packet, before this.

use std::sync::Arc;
use std::time::Instant;

use inventory::Snapshot;

use station::slot::{read_packet, PacketMeta, PKT_FLAG_TRUNCATED};
use wire::{Direction, FlowKey, Fragment, PacketSummary, L3};

use crate::clock::FlowClock;
use crate::flow_table::{Capture, FlowTable, FrameTime, TableConfig, TableStats};
use crate::fragments::{FragmentStats, FragmentTable};
use crate::nonip_table::NonIpTable;
use crate::record_sink::RecordSink;
use crate::tunnels::{Resolve, TunnelHandle, TunnelStats, TunnelTable};
use wire::tunnel::{Decap, Decapsulated};

/// Packets between two timeout checks.
pub const CHECK_EVERY: u32 = 4096;
/// Flow-table slots looked at for refreshes ([`crate::flow_table::FlowTable::refresh`])
/// per timeout check while packets flow: about 0.1 ns per packet.
pub const REFRESH_BUDGET_BUSY: u32 = 512;
/// Slots looked at per idle check (every 100 ms of an empty queue): a full
/// table of 1 M flows is gone through in 1.6 s.
pub const REFRESH_BUDGET_IDLE: u32 = 65_536;

/// Frame totals of a worker, as its stats page names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameCounters {
    /// Slots read.
    pub packets: u64,
    /// Their wire bytes.
    pub bytes: u64,
    /// IPv4 frames.
    pub ipv4: u64,
    /// IPv6 frames.
    pub ipv6: u64,
    /// Non-IP frames.
    pub non_ip: u64,
    /// Malformed IP frames and unreadable slots.
    pub malformed: u64,
    /// Later IP fragments (offset > 0).
    pub fragments: u64,
    /// Frames cut to the slot size.
    pub truncated: u64,
    /// Unreadable slots (also in `malformed`).
    pub corrupt_slots: u64,
}

/// Flow table, non-IP table, flow clock and frame counters of one worker.
#[derive(Debug)]
pub struct Accounting {
    flows: FlowTable,
    other: NonIpTable,
    frags: FragmentTable,
    clock: FlowClock,
    counters: FrameCounters,
    since_check: u32,
    /// The inventory snapshot in use (the tables hold it too).
    snapshot: Arc<Snapshot>,
    /// Between [`Accounting::begin_batch`] and [`Accounting::end_batch`].
    in_batch: bool,
    /// CJ_DECAP: the tunnels decapsulated (off by default).
    decap: Decap,
    /// The outer endpoints of decapsulated flows.
    tunnels: TunnelTable,
}

impl Accounting {
    /// Empty tables with these settings.
    pub fn new(cfg: TableConfig) -> Self {
        Self::with_tables(FlowTable::new(cfg), NonIpTable::new(cfg))
    }

    /// From given tables (tests use small reserves).
    pub fn with_tables(flows: FlowTable, other: NonIpTable) -> Self {
        Self {
            flows,
            other,
            frags: FragmentTable::default(),
            clock: FlowClock::new(),
            counters: FrameCounters::default(),
            since_check: 0,
            snapshot: Arc::default(),
            in_batch: false,
            decap: Decap::default(),
            tunnels: TunnelTable::default(),
        }
    }

    /// Decapsulates the tunnels `decap` (CJ_DECAP) names from now on.
    pub fn with_decap(mut self, decap: Decap) -> Self {
        self.decap = decap;
        self
    }

    /// With this tunnel table instead of the default one (tests use small ones).
    pub fn with_tunnel_table(mut self, tunnels: TunnelTable) -> Self {
        self.tunnels = tunnels;
        self
    }

    /// Decapsulation totals so far.
    pub fn tunnel_stats(&self) -> TunnelStats {
        self.tunnels.stats()
    }

    /// With this fragment table instead of the default one (tests use small ones).
    pub fn with_fragment_table(mut self, frags: FragmentTable) -> Self {
        self.frags = frags;
        self
    }

    /// Generation of the inventory snapshot in use (0: none yet).
    pub fn snapshot_generation(&self) -> u64 {
        self.snapshot.generation
    }

    /// False when the snapshot in use does not know capture index `source`
    /// (a newer one does: see `inventory::capture`).
    #[inline]
    pub fn knows_source(&self, source: u8) -> bool {
        self.snapshot.knows_source(source)
    }

    /// Attributes new flows with `snap` from now on (a newer snapshot of the same inventory).
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        self.flows.set_snapshot(Arc::clone(&snap));
        self.other.set_snapshot(Arc::clone(&snap));
        self.snapshot = snap;
    }

    /// Frame totals so far.
    pub fn counters(&self) -> &FrameCounters {
        &self.counters
    }

    /// Flow table totals so far.
    pub fn flow_stats(&self) -> TableStats {
        self.flows.stats()
    }

    /// Reports to the inventory which entries the tables' flows hold, under
    /// the generation of the snapshot new flows are attributed with (see
    /// `inventory::entries`): only the words that changed since the last
    /// report are written.
    pub fn report_held(&mut self, mark: &inventory::ReaderMark) {
        let generation = self.snapshot.generation;
        mark.report_held(generation, &mut [self.flows.holdings_mut(), self.other.holdings_mut()]);
    }

    /// The flow table's bytes, room and peak flows ([`FlowTable::memory`]).
    pub fn flow_table_memory(&self) -> (usize, usize, usize) {
        self.flows.memory()
    }

    /// Fragment table totals so far.
    pub fn fragment_stats(&self) -> FragmentStats {
        self.frags.stats()
    }

    /// Records emitted so far by both tables.
    pub fn records(&self) -> u64 {
        self.flows.stats().records + self.other.records()
    }

    /// The flow clock now.
    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// From now on IP packets that are not fragments are counted in the flow
    /// table up to [`crate::flow_table::AHEAD`] packets later (their lookups
    /// overlap: [`FlowTable::packet_ahead`]), until [`Accounting::end_batch`];
    /// every other kind of frame, timeout check or flush counts them first.
    /// Records and totals are as without (their order between the flow and
    /// non-IP tables may differ).
    pub fn begin_batch(&mut self) {
        self.in_batch = true;
    }

    /// Counts the packets still in flight and goes back to counting each at once.
    pub fn end_batch(&mut self, sink: &mut impl RecordSink) {
        self.in_batch = false;
        self.flows.drain(sink);
    }

    /// Counts one packet-queue slot.
    #[inline]
    pub fn slot(&mut self, slot: &[u8], sink: &mut impl RecordSink) {
        match read_packet(slot) {
            Some((meta, frame)) if !self.decap.is_off() => {
                let d = wire::tunnel::summarize_decap(frame, meta.wire_len, &self.decap);
                self.decapsulated(&meta, &d, sink);
            }
            Some((meta, frame)) => {
                // A length taken from the frame (IPv4 total length 0 on TSO/BIG
                // TCP packets, IPv6 jumbograms) counts what the slot cut off too.
                let mut s = PacketSummary::default();
                wire::summarize_wire_into(&mut s, frame, meta.wire_len);
                // Decapsulation is off (the arm above): no tunnel to look for.
                self.outer(&meta, &s, sink);
            }
            None => {
                self.counters.packets += 1;
                self.counters.malformed += 1;
                self.counters.corrupt_slots += 1;
                let now = self.clock.now();
                self.other.corrupt_slot(now, sink);
                self.tick(sink);
            }
        }
    }

    /// Counts one frame (`frame`, the slot's bytes) of a slot already read
    /// and summarized (`wire::summarize_wire`, `s`): what
    /// [`Accounting::slot`] does after parsing, for a caller that needed the
    /// summary first (the divert verdict). A packet of an enabled tunnel is
    /// parsed again for its inside.
    #[inline]
    pub fn frame(&mut self, meta: &PacketMeta, frame: &[u8], s: &PacketSummary, sink: &mut impl RecordSink) {
        if self.decap.matches(s) {
            let d = wire::tunnel::summarize_decap(frame, meta.wire_len, &self.decap);
            return self.decapsulated(meta, &d, sink);
        }
        self.outer(meta, s, sink);
    }

    /// Counts one frame as its outer packet (not decapsulated).
    #[inline]
    fn outer(&mut self, meta: &PacketMeta, s: &PacketSummary, sink: &mut impl RecordSink) {
        if meta.flags & PKT_FLAG_TRUNCATED != 0 {
            self.counters.truncated += 1;
        }
        self.summary_from(Capture::of(meta), s, meta.ts_ns, meta.wire_len, sink);
    }

    /// Counts one frame as `wire::tunnel::summarize_decap` made it out.
    fn decapsulated(&mut self, meta: &PacketMeta, d: &Decapsulated, sink: &mut impl RecordSink) {
        if meta.flags & PKT_FLAG_TRUNCATED != 0 {
            self.counters.truncated += 1;
        }
        match d {
            Decapsulated::Plain(s) => self.summary_from(Capture::of(meta), s, meta.ts_ns, meta.wire_len, sink),
            Decapsulated::Undecoded(s) => {
                self.tunnels.undecoded();
                self.summary_from(Capture::of(meta), s, meta.ts_ns, meta.wire_len, sink);
            }
            Decapsulated::Inner(s, t) => {
                let (key, dir) = FlowKey::from_summary(s);
                let handle = self.tunnels.intern(t, dir);
                self.flows.set_tunnel(handle);
                self.ip_count(Capture::of(meta), s, &key, dir, meta.ts_ns, meta.wire_len, sink);
                // Timeouts and the fragment remainders they count are nobody's tunnel.
                self.flows.set_tunnel(TunnelHandle::NONE);
                self.tick(sink);
            }
        }
    }

    /// Counts one frame by its summary, timestamp and wire length.
    #[inline]
    pub fn summary(&mut self, s: &PacketSummary, ts_ns: u64, wire_len: u32, sink: &mut impl RecordSink) {
        self.summary_from(Capture::on(0), s, ts_ns, wire_len, sink);
    }

    /// [`Accounting::summary`] of a frame captured at `at`.
    #[inline(always)]
    pub fn summary_from(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        ts_ns: u64,
        wire_len: u32,
        sink: &mut impl RecordSink,
    ) {
        match s.l3 {
            // The common case straight to the flow table's look-ahead (as
            // ip_from would, without its fragment and batch checks again):
            // about 13 instructions a packet fewer than the way below (callgrind,
            // the whole detector on 400,000 frames of 10k flows: 573.9).
            L3::Ipv4 | L3::Ipv6 if self.in_batch && s.fragment == Fragment::None => {
                let (key, dir) = FlowKey::from_summary(s);
                self.ip_ahead(at, s, &key, dir, ts_ns, wire_len, sink);
                self.tick(sink);
            }
            L3::Ipv4 | L3::Ipv6 => {
                let (key, dir) = FlowKey::from_summary(s);
                self.ip_from(at, s, &key, dir, ts_ns, wire_len, sink);
            }
            L3::NonIp | L3::Malformed => self.non_ip_from(at, s, ts_ns, wire_len, sink),
        }
    }

    /// Counts one IP frame with its key already derived.
    #[inline]
    pub fn ip(
        &mut self,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        ts_ns: u64,
        wire_len: u32,
        sink: &mut impl RecordSink,
    ) {
        self.ip_from(Capture::on(0), s, key, dir, ts_ns, wire_len, sink);
    }

    /// [`Accounting::ip`] of a frame captured at `at`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn ip_from(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        ts_ns: u64,
        wire_len: u32,
        sink: &mut impl RecordSink,
    ) {
        self.ip_count(at, s, key, dir, ts_ns, wire_len, sink);
        self.tick(sink);
    }

    /// [`Accounting::ip_from`] without the timeout check.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn ip_count(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        ts_ns: u64,
        wire_len: u32,
        sink: &mut impl RecordSink,
    ) {
        if self.in_batch && s.fragment == Fragment::None {
            return self.ip_ahead(at, s, key, dir, ts_ns, wire_len, sink);
        }
        let now = self.count_ip(s, ts_ns, wire_len);
        let sink = &mut Resolve { tunnels: &self.tunnels, sink };
        let frame = FrameTime { ts_ns, wire_len };
        match s.fragment {
            Fragment::None => self.flows.packet_from(at, s, key, dir, frame, now, sink),
            Fragment::First => self.frags.first(at, s, key, dir, frame, now, &mut self.flows, sink),
            Fragment::Later => {
                self.counters.fragments += 1;
                self.frags.later(at, s, frame, now, &mut self.flows, sink);
            }
        }
    }

    /// An unfragmented IP frame of a batch: counted, then to the flow
    /// table's look-ahead (the common case, also taken straight from
    /// [`Accounting::summary_from`] without [`Accounting::ip_count`]'s checks).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn ip_ahead(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        ts_ns: u64,
        wire_len: u32,
        sink: &mut impl RecordSink,
    ) {
        let now = self.count_ip(s, ts_ns, wire_len);
        let frame = FrameTime { ts_ns, wire_len };
        self.flows.packet_ahead(at, s, key, dir, frame, now, &mut Resolve { tunnels: &self.tunnels, sink });
    }

    /// Counts an IP frame in the frame totals and advances the flow clock to
    /// its timestamp: the clock now.
    #[inline(always)]
    fn count_ip(&mut self, s: &PacketSummary, ts_ns: u64, wire_len: u32) -> u64 {
        let c = &mut self.counters;
        c.packets += 1;
        c.bytes += u64::from(wire_len);
        if s.ip_version == 6 {
            c.ipv6 += 1;
        } else {
            c.ipv4 += 1;
        }
        self.clock.packet(ts_ns)
    }

    /// Counts one non-IP or malformed frame.
    #[inline]
    pub fn non_ip(&mut self, s: &PacketSummary, ts_ns: u64, wire_len: u32, sink: &mut impl RecordSink) {
        self.non_ip_from(Capture::on(0), s, ts_ns, wire_len, sink);
    }

    /// [`Accounting::non_ip`] of a frame captured at `at`.
    #[inline]
    pub fn non_ip_from(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        ts_ns: u64,
        wire_len: u32,
        sink: &mut impl RecordSink,
    ) {
        let c = &mut self.counters;
        c.packets += 1;
        c.bytes += u64::from(wire_len);
        if s.l3 == L3::NonIp {
            c.non_ip += 1;
        } else {
            c.malformed += 1;
        }
        let now = self.clock.packet(ts_ns);
        self.other.frame_from(at, s, ts_ns, wire_len, now, sink);
        self.tick(sink);
    }

    #[inline]
    fn tick(&mut self, sink: &mut impl RecordSink) {
        self.since_check += 1;
        if self.since_check >= CHECK_EVERY {
            self.expire(sink);
        }
    }

    /// Ends the flows whose timeouts have passed on the flow clock, and
    /// exports the refresh of [`REFRESH_BUDGET_BUSY`] flow-table slots.
    pub fn expire(&mut self, sink: &mut impl RecordSink) -> u64 {
        self.expire_and_refresh(REFRESH_BUDGET_BUSY, sink)
    }

    fn expire_and_refresh(&mut self, refresh_budget: u32, sink: &mut impl RecordSink) -> u64 {
        self.since_check = 0;
        let now = self.clock.now();
        let sink = &mut Resolve { tunnels: &self.tunnels, sink };
        self.frags.expire(now, &mut self.flows, sink);
        let ended = self.flows.expire(now, sink) + self.other.expire(now, sink);
        self.flows.refresh(now, refresh_budget, sink);
        ended
    }

    /// Packets are flowing again (see [`FlowClock::busy`]).
    pub fn busy(&mut self) {
        self.clock.busy();
    }

    /// The packet queue is empty at wall instant `wall`: advance the clock as
    /// [`FlowClock::idle`] says and end what timed out.
    pub fn idle(&mut self, wall: Instant, sink: &mut impl RecordSink) -> u64 {
        self.clock.idle(wall);
        self.expire_and_refresh(REFRESH_BUDGET_IDLE, sink)
    }

    /// Ends every flow and non-IP entry ([`station::record::EndReason::ForcedEnd`]),
    /// after counting the later fragments still held ([`crate::fragments`]).
    pub fn flush(&mut self, sink: &mut impl RecordSink) -> u64 {
        let now = self.clock.now();
        let sink = &mut Resolve { tunnels: &self.tunnels, sink };
        self.frags.flush(now, &mut self.flows, sink);
        self.flows.flush(sink) + self.other.flush(sink)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use station::record::FlowRecord;
    use wire::L3;

    use super::*;
    use crate::flow_table::tests::{key_of, v4};
    use wire::ethernet::EtherType;
    use wire::ip_proto;
    use wire::tcp::flags as tcp_flags;

    const S: u64 = 1_000_000_000;

    /// A random frame: kind, endpoints from a small pool (so flows repeat and
    /// both directions occur), flags, fragment position, time step.
    #[derive(Clone, Debug)]
    struct Step {
        kind: u8,
        a: u8,
        b: u8,
        pa: u16,
        pb: u16,
        proto: u8,
        flags: u8,
        later_fragment: bool,
        len: u16,
        gap_ms: u64,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0u8..10,
            0u8..4,
            0u8..4,
            0u16..3,
            0u16..3,
            prop_oneof![Just(ip_proto::TCP), Just(ip_proto::UDP), Just(ip_proto::ICMP)],
            prop_oneof![
                Just(0u8),
                Just(tcp_flags::SYN),
                Just(tcp_flags::SYN | tcp_flags::ACK),
                Just(tcp_flags::ACK),
                Just(tcp_flags::FIN | tcp_flags::ACK),
                Just(tcp_flags::RST)
            ],
            any::<bool>(),
            20u16..1500,
            prop_oneof![Just(0u64), 0u64..2_000, 0u64..40_000],
        )
            .prop_map(|(kind, a, b, pa, pb, proto, flags, later_fragment, len, gap_ms)| Step {
                kind,
                a,
                b,
                pa,
                pb,
                proto,
                flags,
                later_fragment,
                len,
                gap_ms,
            })
    }

    fn summary_of(st: &Step) -> PacketSummary {
        let l3 = match st.kind {
            0 => L3::NonIp,
            1 => L3::Malformed,
            2 | 3 => L3::Ipv6,
            _ => L3::Ipv4,
        };
        let mut s =
            PacketSummary { l3, src_mac: [2, 0, 0, 0, 0, st.a], dst_mac: [2, 0, 0, 0, 0, st.b], ..Default::default() };
        match l3 {
            L3::Ipv4 | L3::Ipv6 => {
                let v6 = l3 == L3::Ipv6;
                s.ethertype = if v6 { EtherType::IPV6 } else { EtherType::IPV4 };
                s.ip_version = if v6 { 6 } else { 4 };
                s.src = if v6 { [st.a; 16] } else { v4([10, 0, 0, st.a]) };
                s.dst = if v6 { [st.b; 16] } else { v4([10, 0, 0, st.b]) };
                s.proto = st.proto;
                s.ip_len = u32::from(st.len);
                if st.later_fragment {
                    s.fragment = Fragment::Later;
                } else if st.proto != ip_proto::ICMP {
                    s.src_port = 1000 + st.pa;
                    s.dst_port = 1000 + st.pb;
                    if st.proto == ip_proto::TCP {
                        s.tcp_flags = st.flags;
                    }
                }
            }
            _ => s.ethertype = if l3 == L3::Malformed { EtherType::IPV4 } else { EtherType::ARP },
        }
        s
    }

    /// (packets, ip bytes, frame bytes) per directed endpoint pair.
    type Tally = HashMap<Directed, (u64, u64, u64)>;

    /// A directed endpoint pair: (kind, src, src port, dst, dst port, proto).
    type Directed = (u8, [u8; 16], u16, [u8; 16], u16, u8, [u8; 6], [u8; 6]);

    fn directed_of_summary(s: &PacketSummary) -> Directed {
        match s.l3 {
            L3::Ipv4 | L3::Ipv6 => (1, s.src, s.src_port, s.dst, s.dst_port, s.proto, [0; 6], [0; 6]),
            L3::NonIp => (2, [0; 16], s.ethertype, [0; 16], 0, 0, s.src_mac, s.dst_mac),
            L3::Malformed => (3, [0; 16], s.ethertype, [0; 16], 0, 0, s.src_mac, s.dst_mac),
        }
    }

    fn directed_of_record(r: &FlowRecord, d: usize) -> Directed {
        let (src, sp, dst, dp, ms, md) = if d == 0 {
            (r.addr_a, r.port_a, r.addr_b, r.port_b, r.mac_a, r.mac_b)
        } else {
            (r.addr_b, r.port_b, r.addr_a, r.port_a, r.mac_b, r.mac_a)
        };
        if r.kind == 1 {
            (1, src, sp, dst, dp, r.proto, [0; 6], [0; 6])
        } else {
            (r.kind, [0; 16], r.ethertype, [0; 16], 0, 0, ms, md)
        }
    }

    /// Feeds steps, returns (records, per-direction truth of (packets, ip bytes, frame bytes)).
    /// `batch`: as a worker does, between `begin_batch` and `end_batch`, this many steps at a
    /// time (IP lookups pipelined); 0: one at a time.
    fn run(steps: &[Step], limit: u32, use_wire_key: bool, batch: usize) -> (Vec<FlowRecord>, Tally, Accounting) {
        let cfg = TableConfig { idle_ns: 10 * S, active_ns: 25 * S, close_ns: 2 * S, refresh_ns: 0, limit, queue: 0 };
        let mut acct = Accounting::with_tables(FlowTable::with_reserve(cfg, 2), NonIpTable::new(cfg));
        let mut out = Vec::new();
        let mut truth: HashMap<Directed, (u64, u64, u64)> = HashMap::new();
        let mut ts = 1_700_000_000 * S;
        for (n, st) in steps.iter().enumerate() {
            if batch > 0 && n % batch == 0 {
                acct.end_batch(&mut out);
                acct.begin_batch();
            }
            ts += st.gap_ms * 1_000_000;
            let s = summary_of(st);
            let wire_len = u32::from(st.len) + 14;
            let t = truth.entry(directed_of_summary(&s)).or_default();
            t.0 += 1;
            t.1 += if matches!(s.l3, L3::Ipv4 | L3::Ipv6) { u64::from(s.ip_len) } else { 0 };
            t.2 += u64::from(wire_len);
            if use_wire_key || !matches!(s.l3, L3::Ipv4 | L3::Ipv6) {
                acct.summary(&s, ts, wire_len, &mut out);
            } else {
                let (k, d) = key_of(&s);
                acct.ip(&s, &k, d, ts, wire_len, &mut out);
            }
            if n % 7 == 0 {
                acct.expire(&mut out);
            }
        }
        acct.end_batch(&mut out);
        acct.flush(&mut out);
        (out, truth, acct)
    }

    fn check_identity(
        steps: &[Step],
        out: &[FlowRecord],
        truth: &HashMap<Directed, (u64, u64, u64)>,
        acct: &Accounting,
    ) {
        let c = acct.counters();
        assert_eq!(c.packets, steps.len() as u64);
        assert_eq!(c.ipv4 + c.ipv6 + c.non_ip + c.malformed, c.packets);
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), c.packets);
        assert_eq!(acct.records(), out.len() as u64);
        let mut got: HashMap<Directed, (u64, u64, u64)> = HashMap::new();
        for r in out {
            for d in 0..2 {
                if r.dir[d].packets == 0 {
                    continue;
                }
                let g = got.entry(directed_of_record(r, d)).or_default();
                g.0 += r.dir[d].packets;
                g.1 += r.dir[d].ip_bytes;
                g.2 += r.dir[d].frame_bytes;
            }
        }
        assert_eq!(&got, truth);
        let fs = acct.flow_stats();
        assert_eq!(fs.new, fs.expired + fs.evicted + fs.active);
        assert_eq!(fs.active, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn every_packet_in_exactly_one_record_per_direction(
            steps in proptest::collection::vec(step(), 1..400),
            limit in 1u32..12,
        ) {
            let (out, truth, acct) = run(&steps, limit, false, 0);
            check_identity(&steps, &out, &truth, &acct);
        }

        #[test]
        fn identity_holds_with_the_wire_key(
            steps in proptest::collection::vec(step(), 1..300),
            limit in 1u32..12,
        ) {
            let (out, truth, acct) = run(&steps, limit, true, 0);
            check_identity(&steps, &out, &truth, &acct);
        }

        #[test]
        fn identity_holds_when_lookups_are_pipelined_in_batches(
            steps in proptest::collection::vec(step(), 1..400),
            limit in 1u32..12,
            batch in 1usize..40,
        ) {
            let (out, truth, acct) = run(&steps, limit, true, batch);
            check_identity(&steps, &out, &truth, &acct);
        }
    }

    /// Real frames from the synthetic model, through slots, against the
    /// model's own truth (computed without parsing).
    #[test]
    fn sim_stream_through_slots_matches_the_model_truth() {
        use sim::{truth, SimSpec, SimTraffic};
        use station::slot::{write_packet, PacketMeta};
        let spec: SimSpec = "flows=300,packets=20000,v6=30,vlan=20,qinq=10,frag=20,nonip=5,seed=7".parse().unwrap();
        let cfg =
            TableConfig { idle_ns: 30 * S, active_ns: 300 * S, close_ns: 5 * S, refresh_ns: 0, limit: 1024, queue: 1 };
        let mut acct = Accounting::new(cfg);
        let mut out = Vec::new();
        let mut gen = SimTraffic::new(&spec);
        let mut frame = vec![0u8; 2048];
        let mut slot = vec![0u8; 2048 - 8];
        while let Some((ts, len)) = gen.next_frame(&mut frame) {
            let meta = PacketMeta { ts_ns: ts, wire_len: len as u32, ..Default::default() };
            let used = write_packet(&mut slot, meta, &frame[..len]);
            acct.slot(&slot[..used], &mut out);
        }
        acct.flush(&mut out);
        let t = truth(&spec);
        let c = *acct.counters();
        assert_eq!(c.packets, t.total_frames);
        assert_eq!(c.non_ip, t.non_ip_frames);
        assert_eq!(c.malformed, 0);
        assert_eq!(c.ipv4 + c.ipv6 + c.non_ip, c.packets);
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), t.total_frames);
        let (got, non_ip) = sim::rows_of_records(&out);
        assert_eq!(non_ip, t.non_ip_frames);
        assert_eq!(got.len(), t.rows.len());
        assert_eq!(got, t.rows);
        assert!(out.iter().any(|r| r.flags & station::record::FLAG_FRAGMENTS != 0));
    }

    /// The records of `frames` counted through slots by an accounting that decapsulates `decap`.
    fn run_slots(frames: &[(u64, Vec<u8>)], decap: wire::tunnel::Decap) -> (Vec<FlowRecord>, Accounting) {
        use station::slot::{write_packet, PacketMeta};
        let mut acct = Accounting::new(crate::flow_table::tests::cfg()).with_decap(decap);
        let mut out = Vec::new();
        let mut slot = vec![0u8; 2048];
        for (ts, f) in frames {
            let meta = PacketMeta { ts_ns: *ts, wire_len: f.len() as u32, ..Default::default() };
            let used = write_packet(&mut slot, meta, f);
            acct.slot(&slot[..used], &mut out);
        }
        acct.flush(&mut out);
        (out, acct)
    }

    /// An IPv4 header of `proto` from `src` to `dst` with `id` and the
    /// flags-and-offset field `frag`, then `payload` (checksum 0: not checked).
    fn ipv4_packet(proto: u8, src: [u8; 4], dst: [u8; 4], id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&frag.to_be_bytes());
        p.extend_from_slice(&[64, proto, 0, 0]);
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn a_fragment_remainder_ended_while_a_tunnelled_packet_is_counted_is_in_no_tunnel() {
        // The same inner later fragment (UDP, id 5, offset 800) carried twice in
        // IPIP, 40 s apart: the second finds the first's entry past its 30 s and
        // ends it while the tunnel of the packet in hand is set.
        let inner = ipv4_packet(17, [10, 0, 0, 1], [10, 0, 0, 2], 5, 100, &[0u8; 32]);
        let outer = ipv4_packet(4, [10, 9, 0, 7], [10, 9, 0, 8], 1, 0x4000, &inner);
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        frame.extend_from_slice(&outer);
        let frames = [(1000 * 1_000_000_000, frame.clone()), (1040 * 1_000_000_000, frame)];
        let (out, acct) = run_slots(&frames, wire::tunnel::Decap::parse("ipip").unwrap());
        let rows: Vec<_> = out.iter().filter(|r| r.packets() > 0).map(|r| (r.tunnel_kind, r.packets())).collect();
        assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 2, "{out:?}");
        assert!(rows.iter().all(|&(kind, _)| kind == 0), "remainders are in no tunnel: {out:?}");
        assert_eq!(acct.fragment_stats().unattributed, 2);
    }

    #[test]
    fn tunnelled_packets_count_as_their_inner_flows_with_their_tunnels_when_decap_is_on() {
        use sim::tunnel::{tunnel_capture, TunnelRow};
        use std::net::IpAddr;
        let (frames, truth) = tunnel_capture();
        let all = wire::tunnel::Decap::parse("vxlan,geneve,gre,ipip").unwrap();
        let (out, acct) = run_slots(&frames, all);
        // Directed rows of the records with their tunnels, in the truth's shape.
        let mut got: Vec<TunnelRow> = Vec::new();
        for r in &out {
            let outer = |a: &[u8; 16]| station::record::ip_from_bytes(r.tunnel_ip_version, a);
            let id = if r.tunnel_flags & station::record::TUNNEL_HAS_ID != 0 { r.tunnel_id } else { 0 };
            let name = r.tunnel().map_or("", wire::tunnel::TunnelKind::name);
            let (a, b): (IpAddr, IpAddr) = (r.ip_a().unwrap(), r.ip_b().unwrap());
            for (d, (src, dst, sp, dp, osrc, odst)) in [
                (0, (a, b, r.port_a, r.port_b, outer(&r.tunnel_addr_a), outer(&r.tunnel_addr_b))),
                (1, (b, a, r.port_b, r.port_a, outer(&r.tunnel_addr_b), outer(&r.tunnel_addr_a))),
            ] {
                if r.dir[d].packets == 0 {
                    continue;
                }
                let row = sim::TruthRow {
                    src,
                    dst,
                    src_port: sp,
                    dst_port: dp,
                    proto: r.proto,
                    vlan: r.vlan,
                    packets: r.dir[d].packets,
                    ip_bytes: r.dir[d].ip_bytes,
                    frame_bytes: r.dir[d].frame_bytes,
                };
                got.push(TunnelRow { tunnel: name, outer_src: osrc, outer_dst: odst, tunnel_id: id, row });
            }
        }
        got.sort();
        assert_eq!(got, truth.decapsulated);
        let c = acct.counters();
        assert_eq!((c.packets, c.bytes), (truth.frames, truth.frame_bytes), "the identity: every frame once");
        assert_eq!(c.ipv4 + c.ipv6 + c.non_ip + c.malformed, c.packets);
        let t = acct.tunnel_stats();
        assert_eq!(
            (t.decapsulated, t.undecoded, t.endpoints, t.not_kept),
            (truth.tunnel_packets, truth.undecoded, 7, 0)
        );

        // The divert path (a summary made first, then `frame`) counts the same records.
        let mut acct = Accounting::new(crate::flow_table::tests::cfg()).with_decap(all);
        let mut by_frame = Vec::new();
        for (ts, f) in &frames {
            let meta = station::slot::PacketMeta { ts_ns: *ts, wire_len: f.len() as u32, ..Default::default() };
            acct.frame(&meta, f, &wire::summarize_wire(f, meta.wire_len), &mut by_frame);
        }
        acct.flush(&mut by_frame);
        assert_eq!(by_frame, out);

        // Off: the outer flows, as before.
        let (out, acct) = run_slots(&frames, wire::tunnel::Decap::default());
        assert_eq!(sim::rows_of_records(&out), (truth.outer.clone(), 0));
        assert!(out.iter().all(|r| r.tunnel_kind == 0 && r.tunnel_addr_a == [0; 16] && r.tunnel_id == 0));
        assert_eq!(acct.tunnel_stats(), TunnelStats::default());

        // A table of one endpoint pair: the others keep their kind, lose their outer
        // addresses, and every packet is still counted in its inner flow.
        let mut acct = Accounting::new(crate::flow_table::tests::cfg())
            .with_decap(all)
            .with_tunnel_table(TunnelTable::with_limit(1));
        let mut out = Vec::new();
        for (ts, f) in &frames {
            let mut slot = vec![0u8; 2048];
            let used = station::slot::write_packet(
                &mut slot,
                station::slot::PacketMeta { ts_ns: *ts, wire_len: f.len() as u32, ..Default::default() },
                f,
            );
            acct.slot(&slot[..used], &mut out);
        }
        acct.flush(&mut out);
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), truth.frames);
        let not_kept = out.iter().filter(|r| r.tunnel_flags & station::record::TUNNEL_ENDPOINTS_NOT_KEPT != 0);
        assert!(
            not_kept.clone().count() > 0 && not_kept.clone().all(|r| r.tunnel_kind != 0 && r.tunnel_addr_a == [0; 16])
        );
        assert!(acct.tunnel_stats().not_kept > 0);
    }

    #[test]
    fn a_tso_packet_cut_by_its_slot_counts_its_size_on_the_wire() {
        use station::slot::{write_packet, PacketMeta};
        // IPv4 TCP 10.0.0.1:1000 -> 10.0.0.2:80, total length 0 (before segmentation).
        let mut frame = vec![0u8; 14 + 20 + 20 + 200];
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        frame[14..34].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        frame[34..38].copy_from_slice(&[0x03, 0xe8, 0x00, 0x50]);
        frame[46] = 0x50;
        let mut acct = Accounting::new(crate::flow_table::tests::cfg());
        let mut out = Vec::new();
        let mut slot = [0u8; 16 + 128];
        let wire_len = 14 + 65_000;
        let used = write_packet(&mut slot, PacketMeta { ts_ns: S, wire_len, ..Default::default() }, &frame);
        acct.slot(&slot[..used], &mut out);
        acct.flush(&mut out);
        assert_eq!((acct.counters().ipv4, acct.counters().truncated, acct.counters().bytes), (1, 1, 65_014));
        assert_eq!(out.len(), 1);
        let ip: u64 = out[0].dir.iter().map(|d| d.ip_bytes).sum();
        let frames: u64 = out[0].dir.iter().map(|d| d.frame_bytes).sum();
        assert_eq!((ip, frames), (65_000, 65_014));
    }

    #[test]
    fn corrupt_slots_are_malformed_frames_of_zero_bytes() {
        let mut acct = Accounting::new(crate::flow_table::tests::cfg());
        let mut out = Vec::new();
        let mut slot = [0u8; 20];
        slot[12] = 0xff; // cap_len = 255 > bytes in the slot
        acct.slot(&slot, &mut out);
        acct.slot(&[1, 2, 3], &mut out);
        acct.flush(&mut out);
        let c = acct.counters();
        assert_eq!((c.packets, c.malformed, c.corrupt_slots, c.bytes), (2, 2, 2, 0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].packets(), 2);
        assert_eq!(out[0].kind, station::record::RecordKind::Malformed as u8);
    }

    #[test]
    fn the_direction_in_a_slots_flags_says_which_side_of_a_flow_and_of_an_arp_frame_is_the_veths_container() {
        use station::slot::{write_packet, LinkDir, PacketMeta};
        // Captured on the client's veth (source 1); the client sends from 10.0.0.77
        // and MAC 02:00:00:00:00:4d, neither of which the inventory holds.
        let (x_mac, sv_mac) = ([2, 0, 0, 0, 0, 77], [2, 0, 0, 0, 0, 0xee]);
        let udp = |from: ([u8; 6], [u8; 4], u16), to: ([u8; 6], [u8; 4], u16)| {
            let mut f = Vec::new();
            f.extend_from_slice(&to.0);
            f.extend_from_slice(&from.0);
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0]);
            f.extend_from_slice(&from.1);
            f.extend_from_slice(&to.1);
            f.extend_from_slice(&from.2.to_be_bytes());
            f.extend_from_slice(&to.2.to_be_bytes());
            f.extend_from_slice(&[0, 8, 0, 0]);
            f
        };
        let (x, sv) = ((x_mac, [10, 0, 0, 77], 5000), (sv_mac, [10, 0, 0, 1], 53));
        let mut arp = vec![0xff; 6];
        arp.extend_from_slice(&x_mac);
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0u8; 28]);
        let frames = [
            (udp(x, sv), LinkDir::Inbound),
            (udp(x, sv), LinkDir::Inbound),
            (udp(sv, x), LinkDir::Outbound),
            (arp, LinkDir::Inbound),
        ];
        let run = |with_dir: bool| {
            let mut acct = Accounting::new(crate::flow_table::tests::cfg());
            acct.set_snapshot(crate::flow_table::tests::two_containers());
            let mut out = Vec::new();
            let mut slot = [0u8; 256];
            for (i, (f, dir)) in frames.iter().enumerate() {
                let flags = if with_dir { dir.flags() } else { 0 };
                let meta = PacketMeta {
                    ts_ns: S + i as u64,
                    wire_len: f.len() as u32,
                    source: 1,
                    flags,
                    ..Default::default()
                };
                let used = write_packet(&mut slot, meta, f);
                acct.slot(&slot[..used], &mut out);
            }
            acct.flush(&mut out);
            // Per record: (what the client sent, what it received), as the app adds up a veth's container.
            let mut client = Vec::new();
            for r in &out {
                let side = (0..2).find(|&i| r.ctr[i].attributed_by() == station::record::AttributedBy::Interface);
                let side = side.unwrap_or_else(|| panic!("no end by interface: {r:?}"));
                assert_eq!(r.ctr[side].name_str(), "client");
                client.push((r.kind, r.dir[side].packets, r.dir[1 - side].packets));
            }
            client.sort_unstable();
            client
        };
        let (ip, non_ip) = (station::record::RecordKind::Ip as u8, station::record::RecordKind::NonIp as u8);
        // The kernel's direction: the client sent the two datagrams and the ARP request, and received the reply.
        assert_eq!(run(true), vec![(ip, 2, 1), (non_ip, 1, 0)]);
        // Without it (a source that does not say), the guess by MAC takes the unknown sender for
        // someone else and the client for the receiver: in and out swap.
        assert_eq!(run(false), vec![(ip, 1, 2), (non_ip, 0, 1)]);
    }
}

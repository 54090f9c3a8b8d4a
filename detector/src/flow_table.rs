//! The per-worker table of bidirectional IP flows.
//!
//! In the style of retina's conntrack: each worker owns one table, keyed by the
//! direction-free [`wire::FlowKey`]; nothing is shared, nothing is locked.
//!
//! Guarantees:
//! - **Every packet given to [`FlowTable::packet`] is counted in exactly one
//!   record** handed to the [`RecordSink`]: the record of the flow part it
//!   belongs to, emitted when that part ends (idle or close timeout, active
//!   timeout, eviction, restart of the 5-tuple by a new SYN, or
//!   [`FlowTable::flush`]). Counters are per direction.
//! - Direction: side `a` of a record is the initiator. It is the source of the
//!   flow's first packet, except that a TCP SYN without ACK always decides (its
//!   source is `a`), and a SYN-ACK decides (its destination is `a`) unless a SYN
//!   already did. Decisions by SYN or SYN-ACK set [`FLAG_INITIATOR_BY_SYN`].
//!   A flow's later parts (after an active timeout) keep its initiator.
//! - Time: every decision compares `now_ns`, the worker's flow clock
//!   (monotonic), with the packet timestamps a flow keeps (no clock value is
//!   stored per flow): `first_ns`/`last_ns` of a record are the smallest and
//!   largest packet timestamps of the part, and a flow was last seen at the
//!   largest timestamp of its packets. Idle expiry: a flow whose last packet
//!   is `idle_ns` or more behind the clock ends with
//!   [`EndReason::IdleTimeout`]; a TCP flow that saw FIN from both sides or
//!   an RST moves to the closing list and ends `close_ns` after its last packet
//!   with [`EndReason::EndOfFlow`]. Expiry is checked lazily when a packet of
//!   the flow arrives (so record boundaries depend only on the clock, not on
//!   when [`FlowTable::expire`] runs) and by [`FlowTable::expire`], which
//!   ends every flow past its timeout, oldest first, and costs O(expired)
//!   plus the flows it moves in its timer wheels ([`crate::flow_slab`]): a
//!   packet only writes its flow's `last_ns`, no list is relinked per packet.
//!   (A packet whose timestamp is far behind the clock, e.g. from a second
//!   capture source lagging by more than the idle timeout, therefore ends its
//!   flow's part at once: more records, the same totals.)
//! - Active timeout: when a packet arrives `active_ns` or more after the
//!   current part's first packet, the part so far is emitted
//!   ([`EndReason::ActiveTimeout`]) and the entry restarts its counters; the
//!   new part starts with this packet.
//! - Counters are 32-bit per part and direction: a packet (or held
//!   fragments) that would take its direction's packets, IP bytes or frame
//!   bytes past `u32::MAX` first ends the part the same way (an
//!   [`EndReason::ActiveTimeout`] record; at least 4 GiB of one direction),
//!   so every packet and byte is still counted exactly once.
//! - Refresh (`CJ_REFRESH`): [`FlowTable::refresh`], called by the worker with
//!   a small budget every few thousand packets and a large one while idle,
//!   exports each live flow's part once its first packet is `refresh_ns` old, packets or not
//!   since (an interim [`EndReason::ActiveTimeout`] record of what it counted
//!   since its last export), so downstream counts are current to within about
//!   one interval. Every packet is still in exactly one record: the flow's
//!   later records carry only what came after. Records set [`FLAG_SEEN_A`] /
//!   [`FLAG_SEEN_B`] for the directions that had packets in any part, so a
//!   flow's last record may carry no packet and still say which directions
//!   the flow had.
//! - Full table: the least recently seen flow (of both lists) is emitted
//!   with [`EndReason::LackOfResources`] and counted in
//!   [`TableStats::evicted`]; the new flow then takes its place. Exactly the
//!   least recently seen when at most [`crate::flow_slab::EVICT_SCAN`] (4)
//!   flows were last seen in the oldest bucket of its timer wheel (about
//!   1/4096 of the timeout wide, at least 2^20 ns), else one seen less than a
//!   bucket's width after it ([`crate::flow_slab`]).
//! - Memory: entries live in a slab of chunks of 1,024 (see
//!   [`crate::flow_slab`]); `limit` entries at most, an index for
//!   `min(limit, 65536)` allocated up front, the chunks (116 KiB each) as
//!   flows arrive: growth never
//!   copies an entry, only the index is rebuilt when it doubles. One entry is
//!   [`FLOW_ENTRY_BYTES`] (116) bytes: a 96-byte hot part (key with its
//!   tunnel, packet times, 32-bit counters, attribution: exactly two cache
//!   lines, 32-byte aligned), 12 cold bytes (the MACs) and 8 bytes of wheel
//!   links; the index adds 4 to 10.7 bytes per flow (a `u32` per slot, load
//!   at most 3/4), the wheels 64 KiB and, once a flow is attributed to a
//!   container, the flows per inventory entry ([`FlowTable::holdings`]) 66
//!   KiB. [`FlowTable::memory`] counts every allocation of the table; at
//!   1,000,000 flows that is 124.5 bytes per flow, and a table grown to the
//!   default CJ_FLOW_TABLE_SIZE of 1,048,576 flows takes about 130 MB (0.6
//!   MB at start). Nothing is allocated
//!   per packet but a chunk every 1,024 new flows and the index at each
//!   doubling.
//! - Later fragments set [`FLAG_FRAGMENTS`] on the part that counts them:
//!   the accounting ([`crate::fragments`]) gives them their datagram's ports
//!   before they reach the table (or ports 0 when it never learns them), and
//!   hands fragments it held back as one [`HeldCounts`] to
//!   [`FlowTable::held_from`], which counts them as that many packets.
//!
//! - Flows are per capture point: the table key is the flow key and the
//!   capture source index (`PacketMeta::source`), so a frame seen on two
//!   interfaces (two container veths on one bridge) is counted once in each
//!   interface's flow, never twice in one.
//! - Attribution (DESIGN.md "Container attribution"): when a flow is created
//!   (a new entry, or a restart after idle time or a new SYN) each side is tied
//!   to a container of the current inventory [`Snapshot`]: the capture
//!   interface's container when the capture is on a container veth (which
//!   side is the container: by the frame's direction on the veth when the
//!   source knows it, else by MAC or address; see [`attribute`]), then by
//!   MAC, then by IP address. Later parts of the flow keep it; records carry
//!   it ([`station::record::ContainerRef`]) even after the container stopped
//!   (the table counts the flows holding each entry, [`FlowTable::holdings`],
//!   and the inventory reuses an entry only once no worker holds it).
//!   Attribution reads hash maps of the
//!   snapshot: no lock, no allocation. A frame's direction ([`Capture::dir`])
//!   is read only there: it is not part of the key, and the packets of a flow
//!   are counted by the side that sent them (by address), whatever their
//!   direction on the interface.
//!
//! Not guaranteed: that a flow is reported in one record (active timeouts,
//! evictions and restarts split it; the app merges parts by key).

use std::net::IpAddr;
use std::sync::Arc;

use inventory::entries::Holdings;
use inventory::Snapshot;
use station::record::{
    AttributedBy, ContainerRef, DirCounters, EndReason, FlowRecord, RecordKind, FLAG_FRAGMENTS, FLAG_INITIATOR_BY_SYN,
    FLAG_SEEN_A, FLAG_SEEN_B,
};
use station::slot::{LinkDir, PacketMeta};
use wire::ethernet::EtherType;
use wire::tcp::flags as tcp_flags;
use wire::{ip_proto, Direction, FlowKey, Fragment, PacketSummary};

use crate::flow_slab::{mix_words, SlabEntry, WheelSlab};
use crate::record_sink::RecordSink;
use crate::tunnels::TunnelHandle;

/// Entries the index is sized for up front at most.
pub const INITIAL_RESERVE: usize = 65_536;

/// List of open flows (idle timeout).
const OPEN: usize = 0;
/// List of closing TCP flows (close timeout).
const CLOSING: usize = 1;

/// Timeouts and size of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableConfig {
    /// CJ_FLOW_IDLE_TIMEOUT in nanoseconds.
    pub idle_ns: u64,
    /// CJ_FLOW_ACTIVE_TIMEOUT in nanoseconds.
    pub active_ns: u64,
    /// CJ_FLOW_TCP_CLOSE_TIMEOUT in nanoseconds.
    pub close_ns: u64,
    /// CJ_REFRESH in nanoseconds: a live flow's counts since its last export
    /// are exported ([`FlowTable::refresh`]) once they are this old; 0: never.
    pub refresh_ns: u64,
    /// CJ_FLOW_TABLE_SIZE: most flows held at once (at least 1).
    pub limit: u32,
    /// Queue number written into every record.
    pub queue: u16,
}

impl TableConfig {
    /// The table settings of a station configuration for the worker of `queue`.
    pub fn from_station(cfg: &station::config::StationConfig, queue: u32) -> Self {
        Self {
            idle_ns: duration_ns(cfg.flow_idle_timeout),
            active_ns: duration_ns(cfg.flow_active_timeout),
            close_ns: duration_ns(cfg.flow_tcp_close_timeout),
            refresh_ns: duration_ns(cfg.refresh),
            limit: cfg.flow_table_size.max(1),
            queue: queue as u16,
        }
    }
}

/// A duration in nanoseconds, saturating.
pub fn duration_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Totals of a table, for the worker's stats page.
///
/// `new - expired - evicted == active` at all times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Flows in the table now.
    pub active: u64,
    /// Flows created (a restart of an entry by idle time or a new SYN counts as new).
    pub new: u64,
    /// Flows ended by idle or close timeout, restart, or flush.
    pub expired: u64,
    /// Flows evicted because the table was full.
    pub evicted: u64,
    /// Records emitted (including active-timeout parts).
    pub records: u64,
}

/// The table key: the canonical flow key and the capture source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableKey {
    /// The direction-free flow key.
    pub key: FlowKey,
    /// `PacketMeta::source`: the capture interface's index.
    pub source: u8,
    /// The flow's tunnel (`CJ_DECAP`, [`crate::tunnels`]): part of the key,
    /// so one inner flow in two tunnels is two flows. 3 bytes, kept in the
    /// flow entry's hot part beside the attribution.
    pub tunnel: TunnelHandle,
}

/// Where a frame was captured: the capture source's index
/// (`PacketMeta::source`, part of the table key) and the frame's direction
/// on that interface (`PacketMeta::dir`), which only [`attribute`] reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capture {
    /// `PacketMeta::source`: the capture interface's index.
    pub source: u8,
    /// The frame's direction on that interface ([`LinkDir::Unknown`] when the source does not say).
    pub dir: LinkDir,
}

impl Capture {
    /// Source `source`, direction unknown (offline sources, tests).
    #[inline]
    pub const fn on(source: u8) -> Self {
        Self { source, dir: LinkDir::Unknown }
    }

    /// Where the frame of a slot with metadata `meta` was captured.
    #[inline]
    pub const fn of(meta: &PacketMeta) -> Self {
        Self { source: meta.source, dir: meta.dir() }
    }
}

/// A side's attribution packed in 16 bits: the snapshot entry index in the low
/// 14 bits, the [`AttributedBy`] in the top 2.
pub type Attribution = u16;

/// Packs an entry index and how it was found.
#[inline]
pub fn pack(entry: u16, by: AttributedBy) -> Attribution {
    if entry == inventory::NONE {
        0
    } else {
        (entry & 0x3fff) | ((by as u16) << 14)
    }
}

/// The entry index of a packed attribution ([`inventory::NONE`] for none).
#[inline]
pub fn entry_of(a: Attribution) -> u16 {
    a & 0x3fff
}

/// Counts a flow's two sides' entries as held (a flow that enters a table).
#[inline]
pub(crate) fn hold(held: &mut Holdings, ctr: [Attribution; 2]) {
    held.hold(entry_of(ctr[0]));
    held.hold(entry_of(ctr[1]));
}

/// Counts a flow's two sides' entries as let go (a flow that leaves a table).
#[inline]
pub(crate) fn release(held: &mut Holdings, ctr: [Attribution; 2]) {
    held.release(entry_of(ctr[0]));
    held.release(entry_of(ctr[1]));
}

/// The record form of a packed attribution.
#[inline]
pub fn unpack(snap: &Snapshot, a: Attribution) -> ContainerRef {
    if a == 0 {
        return ContainerRef::default();
    }
    let mut r = snap.entry(entry_of(a));
    r.by = (a >> 14) as u8;
    r
}

/// The IP address of a summary's 16-byte form.
#[inline]
fn ip_of(version: u8, b: &[u8; 16]) -> Option<IpAddr> {
    station::record::ip_from_bytes(version, b)
}

/// Attributes the sender (`src`) and receiver (`dst`) of a frame captured at
/// `at`: (sender, receiver). `ips` are (src, dst) addresses when IP.
///
/// Each side goes to the container whose MAC it has, else whose address. When
/// `at.source` is a container's veth, one side is that container instead
/// ([`AttributedBy::Interface`]): the veth is captured on the host (the
/// inventory maps the host end's name), so a frame the host end received
/// ([`LinkDir::Inbound`]) came from the container (the sender), and one the
/// host sent on it ([`LinkDir::Outbound`]) goes into the container (the
/// receiver). When the source does not know the direction, the side whose MAC
/// or address is the container's; else, when the sender is someone else or
/// unknown while the container's own MACs are known, the receiver; else the
/// sender: a guess that is wrong for a container sending from a MAC and an
/// address the inventory does not hold.
#[inline]
pub fn attribute(
    snap: &Snapshot,
    at: Capture,
    src_mac: &[u8; 6],
    dst_mac: &[u8; 6],
    ips: Option<(IpAddr, IpAddr)>,
) -> (Attribution, Attribution) {
    if snap.entries.len() <= 1 {
        return (0, 0); // no container known (an offline run): nothing to look up
    }
    let by_addr = |mac: &[u8; 6], ip: Option<IpAddr>| -> Attribution {
        // Group (broadcast, multicast) MACs are nobody's.
        let m = if mac[0] & 1 == 0 { snap.by_mac(mac) } else { inventory::NONE };
        if m != inventory::NONE {
            return pack(m, AttributedBy::Mac);
        }
        match ip {
            Some(ip) => pack(snap.by_ip(&ip), AttributedBy::Ip),
            None => 0,
        }
    };
    let (sip, dip) = match ips {
        Some((a, b)) => (Some(a), Some(b)),
        None => (None, None),
    };
    let mut src = by_addr(src_mac, sip);
    let mut dst = by_addr(dst_mac, dip);
    let veth = snap.by_source(at.source);
    if veth != inventory::NONE {
        // Which side of the frame is the container behind the capturing veth.
        let tied = pack(veth, AttributedBy::Interface);
        match at.dir {
            // The kernel's word: received on the host end, so sent by the container.
            LinkDir::Inbound => src = tied,
            // Sent by the host on its end: into the container.
            LinkDir::Outbound => dst = tied,
            // The side whose MAC or address is its own; else, when the sender is
            // known to be someone else or unknown while the container's own MACs
            // are known (a frame from the gateway), the receiver; else the sender.
            LinkDir::Unknown => {
                let knows_own = snap.entries.get(usize::from(veth)).is_some_and(|e| !e.macs.is_empty());
                if src & 0x3fff == veth {
                    src = tied;
                } else if dst & 0x3fff == veth || src != 0 || knows_own {
                    dst = tied;
                } else {
                    src = tied;
                }
            }
        }
    }
    (src, dst)
}

/// The hot part of one flow (part) in the table: its key, the state a packet
/// reads and writes, and the counters, in 96 bytes (32-byte aligned, so an
/// entry spans exactly two cache lines). Counters are by key side: index 0
/// counts packets sent by the key's `lo` side, 1 by its `hi` side; they are
/// 32-bit, and a packet that would take one past `u32::MAX` first ends the
/// part ([`Flow::fits`]). There is no clock field: the flow's last packet
/// time `last_ns` orders its timeouts and eviction, its part's first packet
/// time `first_ns` its active timeout and refresh.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Flow {
    key: FlowKey,
    /// `PacketMeta::source` of the table key.
    source: u8,
    /// The timeout list ([`OPEN`], [`CLOSING`], or [`crate::flow_slab::FREE`]).
    list: u8,
    /// TCP and export state: `FIN_A` / `FIN_B` (FIN seen from key side 0 / 1),
    /// `RST`, `EXPORTED_A << side` (the key side sent packets in an
    /// earlier, already exported part).
    state: u8,
    /// [`INITIATOR_HI`], the decision ([`DECIDED_SHIFT`]), [`FRAGMENTS`],
    /// [`MAC_FROM_SRC`] `<< side`.
    bits: u8,
    /// TCP flags ORed, by key side.
    tcp_flags: [u8; 2],
    /// Smallest packet timestamp of the part (`u64::MAX` while it has no packet).
    first_ns: u64,
    /// Largest packet timestamp of the flow: of this part, or of an earlier
    /// one while this part has no packet (kept across exports, so that it
    /// still says when the flow was last seen).
    last_ns: u64,
    packets: [u32; 2],
    ip_bytes: [u32; 2],
    frame_bytes: [u32; 2],
    /// Containers by key side (see [`attribute`]).
    ctr: [Attribution; 2],
    /// The key's tunnel (`CJ_DECAP`), part of the key.
    tunnel: TunnelHandle,
}

/// The cold part of a flow: read when a record is written, and written when
/// a side's MAC is first learnt from a frame it sent.
#[derive(Clone, Copy, Debug)]
struct Cold {
    mac: [[u8; 6]; 2],
}

/// [`Flow`] state bit: FIN from key side 0 (side 1: `FIN_A << 1`).
const FIN_A: u8 = 1;
/// [`Flow`] state bit: FIN from key side 1.
const FIN_B: u8 = 2;
/// [`Flow`] state bit: RST from either side.
const RST: u8 = 4;
/// [`Flow`] state bit: key side 0 had packets in an exported part (side 1: `EXPORTED_A << 1`).
const EXPORTED_A: u8 = 8;

/// [`Flow`] bit: the initiator is the key's `hi` side.
const INITIATOR_HI: u8 = 1;
/// [`Flow`] bits 1-2: how the initiator was decided: 0 by first packet, 1 by SYN-ACK, 2 by SYN.
const DECIDED_SHIFT: u8 = 1;
const DECIDED_MASK: u8 = 3 << DECIDED_SHIFT;
/// [`Flow`] bit: the part counts later fragments.
const FRAGMENTS: u8 = 8;
/// [`Flow`] bit: key side 0's MAC came from a frame it sent, not from a
/// destination field (side 1: `MAC_FROM_SRC << 1`).
const MAC_FROM_SRC: u8 = 16;
/// Bytes of one flow's entry: hot part, cold part and wheel links (the
/// index adds 4 to 10.7 bytes per flow: see the module docs).
pub const FLOW_ENTRY_BYTES: usize = FlowSlab::ENTRY_BYTES;

const _: () = assert!(size_of::<Flow>() == 96, "the hot part is 96 bytes: two cache lines at 32-byte alignment");
const _: () = assert!(std::mem::offset_of!(Flow, first_ns) == 48 && std::mem::offset_of!(Flow, packets) == 64);
const _: () = assert!(FLOW_ENTRY_BYTES <= 116, "the module docs promise 116 bytes per slab entry");
const _: () = assert!(size_of::<Facts>() == 20);
const _: () = assert!(FlowSlab::HOT_LINES == 2, "a flow's entry is prefetched as its two cache lines");

impl SlabEntry for Flow {
    type Key = TableKey;
    type Cold = Cold;

    #[inline(always)]
    fn matches(&self, k: &TableKey) -> bool {
        // Field by field without branches: the addresses as two 128-bit words.
        let (a, b) = (&self.key, &k.key);
        let addr = |x: &[u8; 16]| u128::from_ne_bytes(*x);
        (addr(&a.addr_lo) == addr(&b.addr_lo))
            & (addr(&a.addr_hi) == addr(&b.addr_hi))
            & ((a.port_lo, a.port_hi, a.proto, a.ip_version, a.vlan, a.vlan_inner, self.source)
                == (b.port_lo, b.port_hi, b.proto, b.ip_version, b.vlan, b.vlan_inner, k.source))
            & (self.tunnel == k.tunnel)
    }

    #[inline]
    fn key(&self, _cold: &Cold) -> TableKey {
        TableKey { key: self.key, source: self.source, tunnel: self.tunnel }
    }

    #[inline]
    fn hash_with(seed: u64, k: &TableKey) -> u64 {
        let halves = |b: &[u8; 16]| {
            let x = u128::from_le_bytes(*b);
            [x as u64, (x >> 64) as u64]
        };
        let key = &k.key;
        let rest = u64::from(key.port_lo)
            | u64::from(key.port_hi) << 16
            | u64::from(key.proto) << 32
            | u64::from(key.ip_version) << 40
            | u64::from(k.source) << 48;
        let vlans = u64::from(key.vlan) | u64::from(key.vlan_inner) << 16;
        let ([a0, a1], [b0, b1]) = (halves(&key.addr_lo), halves(&key.addr_hi));
        // The tunnel is left out: one inner flow in two tunnels is rare enough
        // that sharing a probe sequence costs nothing.
        mix_words(seed, &[a0, a1, b0, b1, rest, vlans])
    }

    #[inline]
    fn seen_ns(&self) -> u64 {
        self.last_ns
    }

    #[inline]
    fn list(&self) -> u8 {
        self.list
    }

    #[inline]
    fn set_list(&mut self, list: u8) {
        self.list = list;
    }
}

/// The flow table's store: flows on the open and the closing list.
type FlowSlab = WheelSlab<Flow, Cold, 2>;

impl Flow {
    fn new(tk: &TableKey, s: &Facts, side: usize, ts_ns: u64, snap: &Snapshot, list: u8) -> (Self, Cold) {
        let k = &tk.key;
        let addr = [&k.addr_lo, &k.addr_hi];
        let (by_sender, by_receiver) = attribute(
            snap,
            Capture { source: tk.source, dir: s.dir },
            &s.src_mac,
            &s.dst_mac,
            ip_of(k.ip_version, addr[side]).zip(ip_of(k.ip_version, addr[1 - side])),
        );
        let mut ctr = [0; 2];
        ctr[side] = by_sender;
        ctr[1 - side] = by_receiver;
        let mut mac = [[0u8; 6]; 2];
        mac[side] = s.src_mac;
        mac[1 - side] = s.dst_mac;
        let flow = Flow {
            key: tk.key,
            source: tk.source,
            list,
            state: 0,
            bits: (MAC_FROM_SRC << side) | if side == 1 { INITIATOR_HI } else { 0 },
            tcp_flags: [0; 2],
            first_ns: ts_ns,
            last_ns: ts_ns,
            packets: [0; 2],
            ip_bytes: [0; 2],
            frame_bytes: [0; 2],
            ctr,
            tunnel: tk.tunnel,
        };
        (flow, Cold { mac })
    }

    #[inline]
    fn initiator_hi(&self) -> bool {
        self.bits & INITIATOR_HI != 0
    }

    #[inline]
    fn decided(&self) -> u8 {
        (self.bits & DECIDED_MASK) >> DECIDED_SHIFT
    }

    #[inline]
    fn decide(&mut self, initiator_hi: bool, how: u8) {
        self.bits = (self.bits & !(INITIATOR_HI | DECIDED_MASK))
            | if initiator_hi { INITIATOR_HI } else { 0 }
            | (how << DECIDED_SHIFT);
    }

    /// Learns key side `side`'s MAC from a frame it sent, once.
    #[inline]
    fn learn_mac(&mut self, cold: &mut Cold, side: usize, src_mac: [u8; 6]) {
        if self.bits & (MAC_FROM_SRC << side) == 0 {
            cold.mac[side] = src_mac;
            self.bits |= MAC_FROM_SRC << side;
        }
    }

    /// Whether `packets` packets of `ip_bytes` IP and `frame_bytes` frame
    /// bytes sent by key side `side` fit the part's 32-bit counters.
    #[inline]
    fn fits(&self, side: usize, packets: u64, ip_bytes: u64, frame_bytes: u64) -> bool {
        let max = u64::from(u32::MAX);
        (u64::from(self.packets[side]) + packets <= max)
            & (u64::from(self.ip_bytes[side]) + ip_bytes <= max)
            & (u64::from(self.frame_bytes[side]) + frame_bytes <= max)
    }

    /// Counts one packet sent by key side `side`, unless one of the part's
    /// 32-bit counters would overflow: then it changes nothing and returns
    /// false (the caller ends the part and counts the packet in the next).
    #[inline]
    #[must_use]
    fn add(&mut self, cold: &mut Cold, s: &Facts, side: usize, ts_ns: u64, frame_len: u32) -> bool {
        let (packets, o1) = self.packets[side].overflowing_add(1);
        let (ip_bytes, o2) = self.ip_bytes[side].overflowing_add(s.ip_len);
        let (frame_bytes, o3) = self.frame_bytes[side].overflowing_add(frame_len);
        if o1 | o2 | o3 {
            return false;
        }
        let flags = s.tcp_flags;
        self.packets[side] = packets;
        self.ip_bytes[side] = ip_bytes;
        self.frame_bytes[side] = frame_bytes;
        self.tcp_flags[side] |= flags;
        self.first_ns = self.first_ns.min(ts_ns);
        self.last_ns = self.last_ns.max(ts_ns);
        self.learn_mac(cold, side, s.src_mac);
        if s.later {
            self.bits |= FRAGMENTS;
        }
        if flags != 0 {
            let syn = flags & tcp_flags::SYN != 0;
            let ack = flags & tcp_flags::ACK != 0;
            if syn && !ack {
                self.decide(side == 1, 2);
            } else if syn && ack && self.decided() < 1 {
                self.decide(side == 0, 1);
            }
            if flags & tcp_flags::FIN != 0 {
                self.state |= FIN_A << side;
            }
            if flags & tcp_flags::RST != 0 {
                self.state |= RST;
            }
        }
        true
    }

    /// Counts held later fragments sent by key side `side` (no TCP flags:
    /// fragments have none), `src_mac` the sender's MAC. They fit an empty
    /// part: the fragments held for one datagram are at most 8,192 of at
    /// most 65,535 bytes each, below 2^29 bytes (the sums saturate beyond).
    fn add_held(&mut self, cold: &mut Cold, held: &HeldCounts, side: usize, src_mac: [u8; 6]) {
        let add = |c: &mut u32, v: u64| *c = c.saturating_add(u32::try_from(v).unwrap_or(u32::MAX));
        add(&mut self.packets[side], held.packets);
        add(&mut self.ip_bytes[side], held.ip_bytes);
        add(&mut self.frame_bytes[side], held.frame_bytes);
        self.first_ns = self.first_ns.min(held.first_ns);
        self.last_ns = self.last_ns.max(held.last_ns);
        self.learn_mac(cold, side, src_mac);
        self.bits |= FRAGMENTS;
    }

    fn closing(&self) -> bool {
        self.state & RST != 0 || self.state & (FIN_A | FIN_B) == FIN_A | FIN_B
    }

    /// The part so far was exported: counters restart, with no packet yet
    /// (`first_ns` at its maximum until one comes; `last_ns` stays, the time
    /// the flow was last seen), the initiator, MACs and TCP state stay.
    fn export_part(&mut self) {
        for side in 0..2 {
            if self.packets[side] > 0 {
                self.state |= EXPORTED_A << side;
            }
        }
        self.packets = [0; 2];
        self.ip_bytes = [0; 2];
        self.frame_bytes = [0; 2];
        self.tcp_flags = [0; 2];
        self.first_ns = u64::MAX;
        self.bits &= !FRAGMENTS;
    }

    fn has_packets(&self) -> bool {
        (self.packets[0] | self.packets[1]) > 0
    }

    /// How long the part has been going at `now_ns`: since its first packet
    /// (0 while it has none).
    #[inline]
    fn part_age(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.first_ns)
    }

    fn counters(&self, side: usize) -> DirCounters {
        DirCounters {
            packets: u64::from(self.packets[side]),
            ip_bytes: u64::from(self.ip_bytes[side]),
            frame_bytes: u64::from(self.frame_bytes[side]),
            tcp_flags: self.tcp_flags[side],
            ..Default::default()
        }
    }

    fn record(&self, cold: &Cold, reason: EndReason, queue: u16, snap: &Snapshot) -> FlowRecord {
        let key = &self.key;
        let (a, b) = if self.initiator_hi() { (1, 0) } else { (0, 1) };
        let addr = [key.addr_lo, key.addr_hi];
        let port = [key.port_lo, key.port_hi];
        let mut flags = 0;
        if self.decided() > 0 {
            flags |= FLAG_INITIATOR_BY_SYN;
        }
        if self.bits & FRAGMENTS != 0 {
            flags |= FLAG_FRAGMENTS;
        }
        let seen = |side: usize| self.state & (EXPORTED_A << side) != 0 || self.packets[side] > 0;
        if seen(a) {
            flags |= FLAG_SEEN_A;
        }
        if seen(b) {
            flags |= FLAG_SEEN_B;
        }
        // A part without packets (all exported by refreshes) has no times: 0.
        let (first_ns, last_ns) = if self.has_packets() { (self.first_ns, self.last_ns) } else { (0, 0) };
        FlowRecord {
            seq: 0,
            first_ns,
            last_ns,
            dir: [self.counters(a), self.counters(b)],
            addr_a: addr[a],
            addr_b: addr[b],
            mac_a: cold.mac[a],
            mac_b: cold.mac[b],
            port_a: port[a],
            port_b: port[b],
            vlan: key.vlan,
            vlan_inner: key.vlan_inner,
            ethertype: if key.ip_version == 6 { EtherType::IPV6 } else { EtherType::IPV4 },
            queue,
            kind: RecordKind::Ip as u8,
            ip_version: key.ip_version,
            proto: key.proto,
            end_reason: reason as u8,
            flags,
            source: self.source,
            _pad: [0; 2],
            ctr: [unpack(snap, self.ctr[a]), unpack(snap, self.ctr[b])],
            // The handle; the worker resolves it into the tunnel fields (crate::tunnels).
            tunnel_id: self.tunnel.raw(),
            ..FlowRecord::default()
        }
    }
}

/// The key side that sent a packet of direction `dir`.
#[inline]
fn side_of(dir: Direction) -> usize {
    match dir {
        Direction::LoToHi => 0,
        Direction::HiToLo => 1,
    }
}

/// What later fragments held back by [`crate::fragments`] add to one
/// direction of a flow: packets, IP and frame bytes, first and last timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldCounts {
    /// Fragments.
    pub packets: u64,
    /// Their IP bytes.
    pub ip_bytes: u64,
    /// Their frame bytes.
    pub frame_bytes: u64,
    /// Smallest timestamp (ns since the Unix epoch).
    pub first_ns: u64,
    /// Largest timestamp.
    pub last_ns: u64,
}

/// When a frame was captured and how long it was on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameTime {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (frame bytes).
    pub wire_len: u32,
}

/// What counting a packet needs of its summary besides its key, in 20
/// bytes instead of a whole [`PacketSummary`], so that a packet waiting in
/// [`FlowTable::packet_ahead`]'s ring is copied with a few moves (a larger
/// one was a `memcpy` call). The addresses are the key's
/// ([`FlowKey::from_summary`] copies them).
#[derive(Clone, Copy, Debug)]
struct Facts {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ip_len: u32,
    /// TCP flags; 0 unless TCP.
    tcp_flags: u8,
    /// A later fragment.
    later: bool,
    /// The frame's direction on its capture interface (for [`attribute`]).
    dir: LinkDir,
}

impl Facts {
    #[inline]
    fn of(s: &PacketSummary, dir: LinkDir) -> Self {
        Facts {
            src_mac: s.src_mac,
            dst_mac: s.dst_mac,
            ip_len: s.ip_len,
            tcp_flags: if s.proto == ip_proto::TCP { s.tcp_flags } else { 0 },
            later: s.fragment == Fragment::Later,
            dir,
        }
    }

    /// A TCP SYN without ACK.
    #[inline]
    fn pure_syn(&self) -> bool {
        self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }
}

/// A worker's flow table. See the module docs for what it guarantees.
#[derive(Debug)]
pub struct FlowTable {
    /// The flows and what counting reads and writes.
    core: Core,
    /// Packets given to [`FlowTable::packet_ahead`] and not yet counted: a
    /// ring, oldest at `head`, `waiting` of them. Apart from `core`, so that
    /// a packet is counted where it waits, not copied out first.
    pending: [Pending; RING],
    head: usize,
    waiting: usize,
    /// The tunnel of the packets counted now ([`FlowTable::set_tunnel`]).
    tunnel: TunnelHandle,
}

/// The table's state without the ring of waiting packets.
#[derive(Debug)]
struct Core {
    slab: FlowSlab,
    cfg: TableConfig,
    stats: TableStats,
    snap: Arc<Snapshot>,
    /// Flow sides per inventory entry: held from a flow's creation until it
    /// leaves the table (see [`FlowTable::holdings`]).
    held: Holdings,
    /// Next slab slot [`FlowTable::refresh`] looks at.
    sweep: u32,
    /// Entries found expired, reused by [`FlowTable::expire`] and [`FlowTable::flush`].
    scratch: Vec<u32>,
}

/// Entries of the expiry scratch list kept between calls at most.
const SCRATCH_KEPT: usize = 4096;

/// Packets between the prefetch of a packet's index line and that of its
/// entry ([`FlowTable::packet_ahead`]).
pub const INDEX_AHEAD: usize = 4;
/// Packets between the prefetch of a packet's entry and its count.
pub const ENTRY_AHEAD: usize = 4;
/// Packets [`FlowTable::packet_ahead`] holds back at most.
pub const AHEAD: usize = INDEX_AHEAD + ENTRY_AHEAD;
/// Slots of the ring of waiting packets (a power of two: the modulo is a mask).
const RING: usize = (AHEAD + 1).next_power_of_two();

/// A packet whose lookup is in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    hash: u64,
    /// [`WheelSlab::prefetch_entry`]'s hint once its entry was prefetched, else 0.
    hint: u32,
    tk: TableKey,
    s: Facts,
    dir: Direction,
    frame: FrameTime,
    now_ns: u64,
}

impl Pending {
    /// A free slot of the ring.
    const EMPTY: Self = Pending {
        hash: 0,
        hint: 0,
        tk: TableKey {
            key: FlowKey {
                addr_lo: [0; 16],
                addr_hi: [0; 16],
                port_lo: 0,
                port_hi: 0,
                proto: 0,
                ip_version: 0,
                vlan: 0,
                vlan_inner: 0,
            },
            source: 0,
            tunnel: TunnelHandle::NONE,
        },
        s: Facts { src_mac: [0; 6], dst_mac: [0; 6], ip_len: 0, tcp_flags: 0, later: false, dir: LinkDir::Unknown },
        dir: Direction::LoToHi,
        frame: FrameTime { ts_ns: 0, wire_len: 0 },
        now_ns: 0,
    };
}

impl FlowTable {
    /// An empty table with an index for `min(cfg.limit, 65536)` entries.
    pub fn new(cfg: TableConfig) -> Self {
        Self::with_reserve(cfg, INITIAL_RESERVE)
    }

    /// An empty table with an index for `min(cfg.limit, reserve)` entries.
    pub fn with_reserve(cfg: TableConfig, reserve: usize) -> Self {
        let limit = cfg.limit.max(1) as usize;
        let mut timeouts = [0; 2];
        timeouts[OPEN] = cfg.idle_ns;
        timeouts[CLOSING] = cfg.close_ns;
        Self {
            core: Core {
                slab: FlowSlab::new(limit, reserve, timeouts),
                cfg,
                stats: TableStats::default(),
                snap: Arc::default(),
                held: Holdings::default(),
                sweep: 0,
                scratch: Vec::new(),
            },
            pending: [Pending::EMPTY; RING],
            head: 0,
            waiting: 0,
            tunnel: TunnelHandle::NONE,
        }
    }

    /// The inventory snapshot new flows are attributed with and records read
    /// their containers from (a newer one of the same inventory: an entry a
    /// flow holds is not reused while the flow is in the table, see
    /// [`FlowTable::holdings`]).
    pub fn set_snapshot(&mut self, snap: Arc<Snapshot>) {
        self.core.snap = snap;
    }

    /// How many flow sides hold each inventory entry: counted when a flow is
    /// created (or restarted) and when it leaves the table (expiry, eviction,
    /// restart, flush), never per packet. The worker reports it to the
    /// inventory ([`inventory::ReaderMark::report_held`]).
    pub fn holdings(&self) -> &Holdings {
        &self.core.held
    }

    /// [`FlowTable::holdings`], for a report (which notes what it published).
    pub fn holdings_mut(&mut self) -> &mut Holdings {
        &mut self.core.held
    }

    /// The tunnel of the packets [`FlowTable::packet_from`] and
    /// [`FlowTable::held_from`] count from now on (part of their key; the
    /// accounting sets it for a decapsulated packet and back to
    /// [`TunnelHandle::NONE`] after it).
    #[inline]
    pub fn set_tunnel(&mut self, tunnel: TunnelHandle) {
        self.tunnel = tunnel;
    }

    /// The tunnel packets are counted in now ([`FlowTable::set_tunnel`]).
    pub fn tunnel(&self) -> TunnelHandle {
        self.tunnel
    }

    /// The table's settings.
    pub fn config(&self) -> &TableConfig {
        &self.core.cfg
    }

    /// Totals so far.
    pub fn stats(&self) -> TableStats {
        TableStats { active: self.core.slab.len() as u64, ..self.core.stats }
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.core.slab.len()
    }

    /// Bytes every allocation of the table holds now (entries, index and
    /// wheels, see [`WheelSlab::memory_bytes`], the table's own scratch
    /// lists and its flows per inventory entry, [`Holdings::memory_bytes`]), the flows it has room for without allocating a chunk, and the
    /// most flows it has held at once (slab slots are reused before the slab
    /// grows, so its slot count is that peak).
    pub fn memory(&self) -> (usize, usize, usize) {
        let own = self.core.scratch.capacity() * size_of::<u32>() + self.core.held.memory_bytes();
        (self.core.slab.memory_bytes() + own, self.core.slab.capacity(), self.core.slab.peak())
    }

    /// No flow in the table.
    pub fn is_empty(&self) -> bool {
        self.core.slab.is_empty()
    }

    /// Counts one IP packet: `s` is its summary, `key`/`dir` its canonical key
    /// and direction (from [`FlowKey::from_summary`]), `frame` its timestamp
    /// and wire length, `now_ns` the flow clock.
    pub fn packet(
        &mut self,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        frame: FrameTime,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        self.packet_from(Capture::on(0), s, key, dir, frame, now_ns, sink);
    }

    /// [`FlowTable::packet`] for a frame captured at `at`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn packet_from(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        frame: FrameTime,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        self.drain(sink);
        let tk = TableKey { key: *key, source: at.source, tunnel: self.tunnel };
        let hash = self.core.slab.hash_of(&tk);
        self.core.packet_hashed(hash, 0, &tk, &Facts::of(s, at.dir), dir, frame, now_ns, sink);
    }

    /// [`FlowTable::packet_from`], counted [`AHEAD`] packets later, in a
    /// software pipeline (the DPDK bulk-lookup technique, one packet at a
    /// time): a packet is hashed as it comes and its index line prefetched;
    /// [`INDEX_AHEAD`] packets later (the line has come) its index slots are
    /// read and the entries they name prefetched; [`ENTRY_AHEAD`] packets
    /// later still it is counted, in the order given, so a packet counts
    /// after every earlier one (of its flow too). The cache misses of about
    /// [`AHEAD`] packets are in flight together. Every other method of the
    /// table first counts the packets waiting ([`FlowTable::drain`]), so
    /// records and totals are those of [`FlowTable::packet_from`]; only
    /// [`FlowTable::stats`] and [`FlowTable::len`] lag by the packets waiting
    /// until then, and a snapshot given by [`FlowTable::set_snapshot`]
    /// meanwhile attributes the flows those packets create.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn packet_ahead(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        frame: FrameTime,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        let n = self.waiting;
        // Written field by field into its slot, not built beside it and copied.
        let slot = &mut self.pending[(self.head + n) % RING];
        slot.tk = TableKey { key: *key, source: at.source, tunnel: self.tunnel };
        let hash = self.core.slab.hash_of(&slot.tk);
        slot.hash = hash;
        slot.hint = 0;
        slot.s = Facts::of(s, at.dir);
        slot.dir = dir;
        slot.frame = frame;
        slot.now_ns = now_ns;
        self.core.slab.prefetch_index(hash);
        if n >= INDEX_AHEAD {
            let p = &mut self.pending[(self.head + n - INDEX_AHEAD) % RING];
            p.hint = self.core.slab.prefetch_entry(p.hash);
        }
        if n < AHEAD {
            self.waiting = n + 1;
        } else {
            // Counted where it waits: the ring is not the part borrowed mutably.
            let p = &self.pending[self.head];
            self.head = (self.head + 1) % RING;
            self.core.packet_hashed(p.hash, p.hint, &p.tk, &p.s, p.dir, p.frame, p.now_ns, sink);
        }
    }

    /// Counts the packets [`FlowTable::packet_ahead`] holds, oldest first
    /// (prefetching the entries of those whose entry was not yet).
    #[inline]
    pub fn drain(&mut self, sink: &mut impl RecordSink) {
        let n = self.waiting;
        if n == 0 {
            return;
        }
        for k in n.saturating_sub(INDEX_AHEAD)..n {
            let p = &mut self.pending[(self.head + k) % RING];
            p.hint = self.core.slab.prefetch_entry(p.hash);
        }
        for k in 0..n {
            let p = &self.pending[(self.head + k) % RING];
            self.core.packet_hashed(p.hash, p.hint, &p.tk, &p.s, p.dir, p.frame, p.now_ns, sink);
        }
        self.waiting = 0;
    }

    /// Counts later fragments that were held back ([`crate::fragments`]) in
    /// the flow of `s` (a summary of one of them with the ports it is counted
    /// under), `key`/`dir` its key and direction: `held` is what they add in
    /// that direction, as if each had been given to [`FlowTable::packet_from`]
    /// (the part they land in gets [`FLAG_FRAGMENTS`]). Nothing when
    /// `held.packets` is 0.
    #[allow(clippy::too_many_arguments)]
    pub fn held_from(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        held: &HeldCounts,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        self.drain(sink);
        if held.packets == 0 {
            return;
        }
        let tk = TableKey { key: *key, source: at.source, tunnel: self.tunnel };
        let side = side_of(dir);
        let hash = self.core.slab.hash_of(&tk);
        let i = self.core.entry_for(hash, 0, &tk, &Facts::of(s, at.dir), side, held.first_ns, now_ns, sink);
        if !self.core.slab.get(i).fits(side, held.packets, held.ip_bytes, held.frame_bytes) {
            self.core.split(i, sink);
        }
        let (f, cold) = self.core.slab.parts_mut(i);
        f.add_held(cold, held, side, s.src_mac);
        let list = if f.closing() { CLOSING } else { OPEN };
        self.core.slab.set_list(i, list);
    }

    /// Exports what live flows counted since their last export, when that
    /// part started `refresh_ns` or more before `now_ns` ([`EndReason::ActiveTimeout`]
    /// records, as a NetFlow/IPFIX exporter's interim export): looks at the
    /// next `budget` slots of the slab, round robin, so that a call costs
    /// O(budget) and every flow is looked at once every `slots / budget`
    /// calls. A part without packets is not exported; the flow goes on with
    /// its key, initiator, MACs, TCP state and attribution. Returns the
    /// records emitted. No-op when `refresh_ns` is 0.
    pub fn refresh(&mut self, now_ns: u64, budget: u32, sink: &mut impl RecordSink) -> u64 {
        self.drain(sink);
        let slots = self.core.slab.slots();
        if self.core.cfg.refresh_ns == 0 || slots == 0 {
            return 0;
        }
        let mut n = 0;
        for _ in 0..budget.min(slots) {
            let i = self.core.sweep % slots;
            self.core.sweep = (i + 1) % slots;
            if !self.core.slab.is_live(i) {
                continue;
            }
            let f = self.core.slab.get(i);
            if !f.has_packets() || f.part_age(now_ns) < self.core.cfg.refresh_ns {
                continue;
            }
            self.core.split(i, sink);
            n += 1;
        }
        n
    }

    /// Ends every flow whose timeout has passed at `now_ns`; O(expired) (see
    /// [`crate::flow_slab`] for the flows it moves on the way). Returns the
    /// number of flows ended.
    pub fn expire(&mut self, now_ns: u64, sink: &mut impl RecordSink) -> u64 {
        self.drain(sink);
        let mut n = 0;
        let mut found = std::mem::take(&mut self.core.scratch);
        for (list, reason) in [(CLOSING, EndReason::EndOfFlow), (OPEN, EndReason::IdleTimeout)] {
            found.clear();
            self.core.slab.expired(list, now_ns, &mut found);
            // Oldest first, as their records would have come one by one.
            found.sort_unstable_by_key(|&i| (self.core.slab.get(i).last_ns, i));
            for &i in &found {
                let (f, cold) = self.core.slab.remove(i);
                release(&mut self.core.held, f.ctr);
                sink.emit(f.record(&cold, reason, self.core.cfg.queue, &self.core.snap));
                n += 1;
            }
        }
        self.core.scratch = found;
        // A scratch list grown by a large expiry is not kept.
        self.core.scratch.shrink_to(SCRATCH_KEPT);
        self.core.stats.records += n;
        self.core.stats.expired += n;
        n
    }

    /// Ends every flow ([`EndReason::ForcedEnd`]), roughly oldest first; the
    /// table is empty afterwards. Returns the number of flows ended.
    pub fn flush(&mut self, sink: &mut impl RecordSink) -> u64 {
        self.drain(sink);
        let mut n = 0;
        for list in [OPEN, CLOSING] {
            self.core.slab.for_each(list, |f, cold| {
                release(&mut self.core.held, f.ctr);
                sink.emit(f.record(cold, EndReason::ForcedEnd, self.core.cfg.queue, &self.core.snap));
                n += 1;
            });
        }
        self.core.slab.clear();
        self.core.stats.records += n;
        self.core.stats.expired += n;
        n
    }
}

impl Core {
    /// [`FlowTable::packet_from`] with the key's hash.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn packet_hashed(
        &mut self,
        hash: u64,
        hint: u32,
        tk: &TableKey,
        s: &Facts,
        dir: Direction,
        frame: FrameTime,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) {
        let FrameTime { ts_ns, wire_len: frame_len } = frame;
        let side = side_of(dir);
        let i = self.entry_for(hash, hint, tk, s, side, ts_ns, now_ns, sink);
        // One look-up of the entry for the whole update.
        let (f, cold) = self.slab.parts_mut(i);
        if !f.add(cold, s, side, ts_ns, frame_len) {
            // A counter would pass 32 bits: the part so far first.
            sink.emit(f.record(cold, EndReason::ActiveTimeout, self.cfg.queue, &self.snap));
            f.export_part();
            self.stats.records += 1;
            let counted = f.add(cold, s, side, ts_ns, frame_len);
            debug_assert!(counted, "one packet fits an empty part");
        }
        let list = if f.closing() { CLOSING } else { OPEN };
        if usize::from(f.list) != list {
            self.slab.set_list(i, list);
        }
    }

    /// The entry of `key` that a packet (summary `s`, sent by key side `side`,
    /// captured at `ts_ns`) counts in: ends the flow first when it timed out
    /// or a pure SYN restarts a closing one, emits the part so far on an
    /// active timeout, creates the flow (evicting the least recently seen
    /// when full) when absent. The caller counts and sets its list.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn entry_for(
        &mut self,
        hash: u64,
        hint: u32,
        key: &TableKey,
        s: &Facts,
        side: usize,
        ts_ns: u64,
        now_ns: u64,
        sink: &mut impl RecordSink,
    ) -> u32 {
        let queue = self.cfg.queue;
        match self.slab.find_hinted(hash, hint, key) {
            Some(i) => {
                let f = self.slab.get(i);
                let closing_list = usize::from(f.list) == CLOSING;
                let timeout = if closing_list { self.cfg.close_ns } else { self.cfg.idle_ns };
                if now_ns.saturating_sub(f.last_ns) >= timeout || (closing_list && s.pure_syn()) {
                    // The old flow ended before this packet: report it, start anew.
                    let reason = if closing_list { EndReason::EndOfFlow } else { EndReason::IdleTimeout };
                    let list = f.list;
                    let (f, cold) = self.slab.parts_mut(i);
                    sink.emit(f.record(cold, reason, queue, &self.snap));
                    let old = f.ctr;
                    (*f, *cold) = Flow::new(key, s, side, ts_ns, &self.snap, list);
                    release(&mut self.held, old);
                    hold(&mut self.held, f.ctr);
                    // Its last-seen time may have gone back (an older packet
                    // timestamp): back into the bucket of that time.
                    self.slab.relink(i);
                    self.stats.records += 1;
                    self.stats.expired += 1;
                    self.stats.new += 1;
                } else if f.part_age(now_ns) >= self.cfg.active_ns {
                    self.split(i, sink);
                }
                i
            }
            None => {
                if self.slab.is_full() {
                    self.evict_one(sink);
                }
                let (f, cold) = Flow::new(key, s, side, ts_ns, &self.snap, OPEN as u8);
                hold(&mut self.held, f.ctr);
                self.stats.new += 1;
                match self.slab.insert_hashed(hash, f, cold, OPEN) {
                    Some(i) => i,
                    None => unreachable!("insert after eviction"),
                }
            }
        }
    }

    /// Emits the part of flow `i` so far ([`EndReason::ActiveTimeout`]: an
    /// active timeout, or 32-bit counters that would overflow) and restarts
    /// its counters; the flow goes on.
    fn split(&mut self, i: u32, sink: &mut impl RecordSink) {
        let (f, cold) = self.slab.parts_mut(i);
        sink.emit(f.record(cold, EndReason::ActiveTimeout, self.cfg.queue, &self.snap));
        f.export_part();
        self.stats.records += 1;
    }

    /// Emits and removes the flow to evict: the least recently seen of the
    /// two lists' candidates ([`WheelSlab::oldest`]).
    #[cold]
    fn evict_one(&mut self, sink: &mut impl RecordSink) {
        let victim = match (self.slab.oldest(OPEN), self.slab.oldest(CLOSING)) {
            (Some(o), Some(c)) => {
                if self.slab.get(c).last_ns <= self.slab.get(o).last_ns {
                    c
                } else {
                    o
                }
            }
            (Some(o), None) => o,
            (None, Some(c)) => c,
            (None, None) => return,
        };
        let (f, cold) = self.slab.remove(victim);
        release(&mut self.held, f.ctr);
        sink.emit(f.record(&cold, EndReason::LackOfResources, self.cfg.queue, &self.snap));
        self.stats.records += 1;
        self.stats.evicted += 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use station::record::EndReason;
    use wire::L3;

    const S: u64 = 1_000_000_000;

    pub(crate) fn cfg() -> TableConfig {
        TableConfig { idle_ns: 30 * S, active_ns: 300 * S, close_ns: 5 * S, refresh_ns: 0, limit: 1000, queue: 3 }
    }

    /// The canonical key by hand (the `wire` rule: the smaller (addr, port)
    /// side is `lo`), so these tests do not depend on `wire`'s bodies.
    pub(crate) fn key_of(s: &PacketSummary) -> (FlowKey, Direction) {
        let src = (s.src, s.src_port);
        let dst = (s.dst, s.dst_port);
        let (lo, hi, dir) = if src <= dst { (src, dst, Direction::LoToHi) } else { (dst, src, Direction::HiToLo) };
        (
            FlowKey {
                addr_lo: lo.0,
                addr_hi: hi.0,
                port_lo: lo.1,
                port_hi: hi.1,
                proto: s.proto,
                ip_version: s.ip_version,
                vlan: s.vlan,
                vlan_inner: s.vlan_inner,
            },
            dir,
        )
    }

    pub(crate) fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0u8; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    pub(crate) fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> PacketSummary {
        PacketSummary {
            l3: L3::Ipv4,
            ethertype: 0x0800,
            src_mac: [2, 0, 0, 0, 0, src[3]],
            dst_mac: [2, 0, 0, 0, 0, dst[3]],
            ip_version: 4,
            src: v4(src),
            dst: v4(dst),
            proto: ip_proto::TCP,
            src_port: sport,
            dst_port: dport,
            ip_len: 60,
            tcp_flags: flags,
            ..Default::default()
        }
    }

    pub(crate) fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> PacketSummary {
        PacketSummary { proto: ip_proto::UDP, tcp_flags: 0, ip_len: 100, ..tcp(src, sport, dst, dport, 0) }
    }

    fn feed(t: &mut FlowTable, s: &PacketSummary, ts: u64, out: &mut Vec<FlowRecord>) {
        let (k, d) = key_of(s);
        t.packet(s, &k, d, FrameTime { ts_ns: ts, wire_len: s.ip_len + 14 }, ts, out);
    }

    const C: [u8; 4] = [10, 0, 0, 9];
    const SV: [u8; 4] = [10, 0, 0, 1];

    #[test]
    fn both_directions_merge_into_one_record() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        // client 10.0.0.9:40000 has the larger address: it is the key's hi side
        feed(&mut t, &udp(C, 40000, SV, 53), S, &mut out);
        feed(&mut t, &udp(SV, 53, C, 40000), S + 10, &mut out);
        feed(&mut t, &udp(C, 40000, SV, 53), S + 20, &mut out);
        assert_eq!(t.len(), 1);
        t.flush(&mut out);
        assert_eq!(out.len(), 1);
        let r = out[0];
        assert_eq!(r.end(), Some(EndReason::ForcedEnd));
        assert_eq!(r.addr_a, v4(C));
        assert_eq!(r.port_a, 40000);
        assert_eq!(r.addr_b, v4(SV));
        assert_eq!(r.port_b, 53);
        assert_eq!(r.dir[0].packets, 2);
        assert_eq!(r.dir[1].packets, 1);
        assert_eq!(r.dir[0].ip_bytes, 200);
        assert_eq!(r.dir[0].frame_bytes, 228);
        assert_eq!(r.mac_a, [2, 0, 0, 0, 0, 9]);
        assert_eq!(r.mac_b, [2, 0, 0, 0, 0, 1]);
        assert_eq!((r.first_ns, r.last_ns), (S, S + 20));
        assert_eq!(r.queue, 3);
        assert_eq!(r.kind, RecordKind::Ip as u8);
        assert_eq!(r.ethertype, 0x0800);
        assert_eq!(r.flags & FLAG_INITIATOR_BY_SYN, 0);
    }

    #[test]
    fn syn_decides_initiator_even_when_not_first() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        // server's packet seen first, then the client's SYN
        feed(&mut t, &tcp(SV, 80, C, 40000, tcp_flags::ACK), S, &mut out);
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::SYN), S + 1, &mut out);
        t.flush(&mut out);
        let r = out[0];
        assert_eq!((r.addr_a, r.port_a), (v4(C), 40000));
        assert_eq!(r.dir[0].tcp_flags, tcp_flags::SYN);
        assert_eq!(r.dir[1].tcp_flags, tcp_flags::ACK);
        assert_ne!(r.flags & FLAG_INITIATOR_BY_SYN, 0);
    }

    #[test]
    fn syn_ack_first_makes_its_destination_the_initiator() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        feed(&mut t, &tcp(SV, 80, C, 40000, tcp_flags::SYN | tcp_flags::ACK), S, &mut out);
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::ACK), S + 1, &mut out);
        t.flush(&mut out);
        let r = out[0];
        assert_eq!((r.addr_a, r.port_a), (v4(C), 40000));
        assert_eq!((r.addr_b, r.port_b), (v4(SV), 80));
        assert_eq!(r.dir[0].packets, 1);
        assert_eq!(r.dir[1].tcp_flags, tcp_flags::SYN | tcp_flags::ACK);
        assert_ne!(r.flags & FLAG_INITIATOR_BY_SYN, 0);
        // the SYN-ACK's destination MAC is a's MAC until a sends
        assert_eq!(r.mac_a, [2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn syn_ack_does_not_override_a_syn() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::SYN), S, &mut out);
        // a (weird) SYN-ACK from the client must not flip it
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::SYN | tcp_flags::ACK), S + 1, &mut out);
        t.flush(&mut out);
        assert_eq!(out[0].addr_a, v4(C));
        assert_eq!(out[0].dir[0].packets, 2);
    }

    #[test]
    fn idle_expiry_goes_oldest_first_and_only_past_timeout() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        for p in 0..5u16 {
            feed(&mut t, &udp(C, 1000 + p, SV, 53), S + u64::from(p) * S, &mut out);
        }
        // touch flow 0 again at 10 s: it becomes the most recent
        feed(&mut t, &udp(SV, 53, C, 1000), 10 * S, &mut out);
        // at 33.5 s, flows last seen at 2 s and 3 s are idle for >= 30 s;
        // 1000 was seen at 10 s, 1003 at 4 s, 1004 at 5 s
        assert_eq!(t.expire(33 * S + S / 2, &mut out), 2);
        let ports: Vec<u16> = out.iter().map(|r| r.port_a).collect();
        assert_eq!(ports, vec![1001, 1002]);
        assert_eq!(t.expire(35 * S, &mut out), 2);
        let ports: Vec<u16> = out.iter().map(|r| r.port_a).collect();
        assert_eq!(ports, vec![1001, 1002, 1003, 1004]);
        assert!(out.iter().all(|r| r.end() == Some(EndReason::IdleTimeout)));
        assert_eq!(t.len(), 1);
        // 1000: first packet client->server, so the client is a
        assert_eq!(t.expire(40 * S, &mut out), 1);
        assert_eq!(out[4].port_a, 1000);
        assert_eq!(out[4].packets(), 2);
    }

    #[test]
    fn a_refresh_exports_what_each_flow_counted_since_its_last_export_and_nothing_twice() {
        let mut t = FlowTable::new(TableConfig { refresh_ns: 10 * S, ..cfg() });
        let mut out = Vec::new();
        feed(&mut t, &udp(C, 5000, SV, 53), S, &mut out);
        feed(&mut t, &udp(SV, 53, C, 5000), 2 * S, &mut out);
        // Younger than the refresh: nothing yet.
        assert_eq!(t.refresh(10 * S, 1024, &mut out), 0);
        assert_eq!(t.refresh(11 * S, 1024, &mut out), 1);
        assert_eq!(out[0].end(), Some(EndReason::ActiveTimeout));
        assert_eq!((out[0].dir[0].packets, out[0].dir[1].packets), (1, 1));
        assert_eq!((out[0].first_ns, out[0].last_ns), (S, 2 * S));
        // An exported part without new packets is not exported again.
        assert_eq!(t.refresh(30 * S, 1024, &mut out), 0);
        // Later packets go into the next record only; the flow keeps its initiator.
        feed(&mut t, &udp(C, 5000, SV, 53), 31 * S, &mut out);
        assert_eq!(t.flush(&mut out), 1);
        let last = &out[1];
        assert_eq!(last.end(), Some(EndReason::ForcedEnd));
        assert_eq!((last.port_a, last.dir[0].packets, last.dir[1].packets), (5000, 1, 0));
        // Both directions had packets in the flow's life: both seen flags.
        assert_eq!(last.flags & (FLAG_SEEN_A | FLAG_SEEN_B), FLAG_SEEN_A | FLAG_SEEN_B);
        assert!(last.had_packets(1));
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), 3, "every packet in exactly one record");
    }

    #[test]
    fn a_flow_whose_every_packet_was_exported_ends_with_an_empty_record_that_says_its_directions() {
        let mut t = FlowTable::new(TableConfig { refresh_ns: 10 * S, ..cfg() });
        let mut out = Vec::new();
        feed(&mut t, &udp(C, 5000, SV, 53), S, &mut out);
        assert_eq!(t.refresh(12 * S, 1024, &mut out), 1);
        assert_eq!(t.expire(12 * S + 31 * S, &mut out), 1);
        let last = &out[1];
        assert_eq!((last.end(), last.packets()), (Some(EndReason::IdleTimeout), 0));
        assert_eq!((last.first_ns, last.last_ns), (0, 0), "no packet, no times");
        assert_eq!(last.flags & (FLAG_SEEN_A | FLAG_SEEN_B), FLAG_SEEN_A, "only the client sent");
    }

    #[test]
    fn a_refresh_looks_at_a_bounded_number_of_slots_per_call() {
        let mut t = FlowTable::new(TableConfig { refresh_ns: 10 * S, ..cfg() });
        let mut out = Vec::new();
        for port in 0..10u16 {
            feed(&mut t, &udp(C, 1000 + port, SV, 53), S, &mut out);
        }
        let mut exported = 0;
        for _ in 0..5 {
            let n = t.refresh(20 * S, 3, &mut out);
            assert!(n <= 3, "{n}");
            exported += n;
        }
        assert_eq!(exported, 10, "five calls of three slots went round all ten");
    }

    #[test]
    fn closing_flows_end_after_the_close_timeout() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::SYN), S, &mut out);
        feed(&mut t, &tcp(SV, 80, C, 40000, tcp_flags::SYN | tcp_flags::ACK), S, &mut out);
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::FIN | tcp_flags::ACK), 2 * S, &mut out);
        // one FIN: still open
        assert_eq!(t.expire(2 * S + 6 * S, &mut out), 0);
        feed(&mut t, &tcp(SV, 80, C, 40000, tcp_flags::FIN | tcp_flags::ACK), 9 * S, &mut out);
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::ACK), 9 * S, &mut out);
        // an open UDP flow seen earlier than the close must outlive it
        feed(&mut t, &udp(C, 5000, SV, 53), 8 * S, &mut out);
        assert_eq!(t.expire(13 * S, &mut out), 0);
        assert_eq!(t.expire(14 * S, &mut out), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end(), Some(EndReason::EndOfFlow));
        assert_eq!(out[0].packets(), 5);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rst_closes_at_once_and_a_new_syn_restarts_the_five_tuple() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::SYN), S, &mut out);
        feed(&mut t, &tcp(SV, 80, C, 40000, tcp_flags::RST | tcp_flags::ACK), S, &mut out);
        // port reuse before the close timeout: the old flow ends, a new one starts
        feed(&mut t, &tcp(C, 40000, SV, 80, tcp_flags::SYN), 2 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end(), Some(EndReason::EndOfFlow));
        assert_eq!(out[0].packets(), 2);
        t.flush(&mut out);
        assert_eq!(out[1].packets(), 1);
        assert_eq!(out[1].first_ns, 2 * S);
        let st = t.stats();
        assert_eq!((st.new, st.expired, st.active), (2, 2, 0));
    }

    #[test]
    fn lazy_idle_restart_on_arrival() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        feed(&mut t, &udp(C, 1, SV, 2), S, &mut out);
        feed(&mut t, &udp(C, 1, SV, 2), 40 * S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end(), Some(EndReason::IdleTimeout));
        assert_eq!(out[0].packets(), 1);
        t.flush(&mut out);
        assert_eq!(out[1].packets(), 1);
    }

    #[test]
    fn active_timeout_splits_without_losing_a_packet() {
        let mut t = FlowTable::new(TableConfig { active_ns: 10 * S, ..cfg() });
        let mut out = Vec::new();
        for i in 0..=25u64 {
            let s = if i % 2 == 0 { udp(C, 7, SV, 8) } else { udp(SV, 8, C, 7) };
            feed(&mut t, &s, S + i * S, &mut out);
        }
        t.flush(&mut out);
        let reasons: Vec<_> = out.iter().map(|r| r.end().unwrap()).collect();
        assert_eq!(reasons, vec![EndReason::ActiveTimeout, EndReason::ActiveTimeout, EndReason::ForcedEnd]);
        // parts: [1..=10], [11..=20], [21..=26] seconds
        assert_eq!(out[0].packets(), 10);
        assert_eq!(out[1].packets(), 10);
        assert_eq!(out[2].packets(), 6);
        assert_eq!(out[1].first_ns, 11 * S);
        assert_eq!(out[0].last_ns, 10 * S);
        let total: u64 = out.iter().map(|r| r.packets()).sum();
        assert_eq!(total, 26);
        // the initiator is kept across parts, even in a part that starts b->a
        assert!(out.iter().all(|r| r.addr_a == v4(C) && r.port_a == 7));
        let st = t.stats();
        assert_eq!((st.new, st.expired, st.records), (1, 1, 3));
    }

    #[test]
    fn full_table_evicts_least_recently_seen_and_counts_it() {
        let mut t = FlowTable::new(TableConfig { limit: 3, ..cfg() });
        let mut out = Vec::new();
        for p in 0..3u16 {
            feed(&mut t, &udp(C, p, SV, 53), S + u64::from(p), &mut out);
        }
        feed(&mut t, &udp(SV, 53, C, 0), S + 10, &mut out); // 0 is recent again
        feed(&mut t, &udp(C, 99, SV, 53), S + 20, &mut out); // evicts 1
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end(), Some(EndReason::LackOfResources));
        assert_eq!(out[0].port_a, 1);
        let st = t.stats();
        assert_eq!((st.evicted, st.active, st.new), (1, 3, 4));
        t.flush(&mut out);
        assert_eq!(out.iter().map(|r| r.packets()).sum::<u64>(), 5);
    }

    #[test]
    fn later_fragments_flag_the_record() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        let mut s = udp(C, 0, SV, 0);
        s.fragment = Fragment::Later;
        feed(&mut t, &s, S, &mut out);
        feed(&mut t, &udp(C, 5, SV, 6), S, &mut out);
        t.flush(&mut out);
        assert_eq!(out.len(), 2);
        let frag = out.iter().find(|r| r.port_a == 0).unwrap();
        assert_ne!(frag.flags & FLAG_FRAGMENTS, 0);
        let whole = out.iter().find(|r| r.port_a == 5).unwrap();
        assert_eq!(whole.flags & FLAG_FRAGMENTS, 0);
    }

    #[test]
    fn ipv6_addresses_and_ethertype() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        let mut s = udp(C, 1, SV, 2);
        s.l3 = L3::Ipv6;
        s.ip_version = 6;
        s.src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
        s.dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        feed(&mut t, &s, S, &mut out);
        t.flush(&mut out);
        assert_eq!(out[0].addr_a, s.src);
        assert_eq!(out[0].addr_b, s.dst);
        assert_eq!(out[0].ethertype, 0x86DD);
        assert_eq!(out[0].ip_version, 6);
    }

    fn feed_on(t: &mut FlowTable, source: u8, s: &PacketSummary, ts: u64, out: &mut Vec<FlowRecord>) {
        feed_at(t, Capture::on(source), s, ts, out);
    }

    fn feed_at(t: &mut FlowTable, at: Capture, s: &PacketSummary, ts: u64, out: &mut Vec<FlowRecord>) {
        let (k, d) = key_of(s);
        t.packet_from(at, s, &k, d, FrameTime { ts_ns: ts, wire_len: s.ip_len + 14 }, ts, out);
    }

    /// Client C behind veth `vc` (capture source 1, MAC as the helpers make it);
    /// server SV known by address only (another MAC).
    pub(crate) fn two_containers() -> Arc<Snapshot> {
        use inventory::Entry;
        use station::record::fixed_text;
        let e = |name: &str, mac: [u8; 6], ip: [u8; 4], veth: &str| Entry {
            reference: ContainerRef {
                netns: 4026531000 + u64::from(mac[5]),
                nsid: 1,
                id: fixed_text(name),
                name: fixed_text(name),
                veth: fixed_text(veth),
                ..Default::default()
            },
            macs: vec![mac],
            ips: vec![IpAddr::from(ip)],
            ..Default::default()
        };
        Arc::new(inventory::snapshot_for_tests(&[
            (e("client", [2, 0, 0, 0, 0, C[3]], C, "vc"), Some(1)),
            (e("server", [2, 0, 0, 0, 0, 0xee], SV, "vs"), None),
        ]))
    }

    #[test]
    fn both_ends_are_attributed_when_the_flow_is_created() {
        let mut t = FlowTable::new(cfg());
        t.set_snapshot(two_containers());
        let mut out = Vec::new();
        // Captured on the client's veth: the client by interface, the server by IP.
        feed_on(&mut t, 1, &udp(C, 5000, SV, 53), S, &mut out);
        feed_on(&mut t, 1, &udp(SV, 53, C, 5000), S + 1, &mut out);
        // The same flow captured elsewhere (source 0): its own record, client by MAC.
        feed_on(&mut t, 0, &udp(C, 5000, SV, 53), S + 2, &mut out);
        // Into the client on its veth, first packet from the server: the receiver is the veth's.
        feed_on(&mut t, 1, &udp(SV, 80, C, 6000), S + 3, &mut out);
        // A newer snapshot (the same inventory: an entry keeps its index while a flow holds it) changes nothing
        // for existing flows.
        let mut newer = (*two_containers()).clone();
        newer.generation = 9;
        newer.live.iter_mut().for_each(|l| *l = false);
        t.set_snapshot(Arc::new(newer));
        t.flush(&mut out);
        assert_eq!(out.len(), 3);
        let on_veth = out.iter().find(|r| r.source == 1 && r.port_a == 5000).unwrap();
        assert_eq!((on_veth.ctr[0].name_str(), on_veth.ctr[0].attributed_by()), ("client", AttributedBy::Interface));
        assert_eq!((on_veth.ctr[1].name_str(), on_veth.ctr[1].attributed_by()), ("server", AttributedBy::Ip));
        assert_eq!(on_veth.ctr[0].veth_str(), "vc");
        assert_eq!(on_veth.packets(), 2);
        let elsewhere = out.iter().find(|r| r.source == 0).unwrap();
        assert_eq!((elsewhere.ctr[0].name_str(), elsewhere.ctr[0].attributed_by()), ("client", AttributedBy::Mac));
        let inbound = out.iter().find(|r| r.port_a == 80).unwrap();
        assert_eq!((inbound.ctr[0].name_str(), inbound.ctr[0].attributed_by()), ("server", AttributedBy::Ip));
        assert_eq!((inbound.ctr[1].name_str(), inbound.ctr[1].attributed_by()), ("client", AttributedBy::Interface));
        // No snapshot: no containers.
        let mut plain = FlowTable::new(cfg());
        feed(&mut plain, &udp(C, 1, SV, 2), S, &mut out);
        plain.flush(&mut out);
        assert!(!out.last().unwrap().ctr[0].is_some() && !out.last().unwrap().ctr[1].is_some());
    }

    #[test]
    fn on_a_veth_the_frames_direction_says_which_side_is_the_container_whatever_its_addresses() {
        // The client (veth vc, source 1) sends from an address and a MAC the inventory does not hold.
        const X: [u8; 4] = [10, 0, 0, 77];
        let on = |dir| Capture { source: 1, dir };
        let mut t = FlowTable::new(cfg());
        t.set_snapshot(two_containers());
        let mut out = Vec::new();
        // Received on the host end: the container sent it.
        feed_at(&mut t, on(LinkDir::Inbound), &udp(X, 5000, SV, 53), S, &mut out);
        feed_at(&mut t, on(LinkDir::Outbound), &udp(SV, 53, X, 5000), S + 1, &mut out);
        // Sent by the host on its end: into the container, whatever the frame's
        // addresses say (here the client's own, as a looped-back copy would have).
        feed_at(&mut t, on(LinkDir::Outbound), &udp(C, 6000, SV, 7), S + 2, &mut out);
        // Through the look-ahead, which holds the packet back before counting it.
        let s = udp(X, 7000, SV, 53);
        let (k, d) = key_of(&s);
        t.packet_ahead(on(LinkDir::Inbound), &s, &k, d, FrameTime { ts_ns: S + 3, wire_len: 114 }, S + 3, &mut out);
        // Direction unknown (a source that does not say): the guess by MAC, which
        // takes the unknown sender for someone else and the client for the receiver.
        feed_at(&mut t, on(LinkDir::Unknown), &udp(X, 8000, SV, 53), S + 4, &mut out);
        t.flush(&mut out);
        let row = |port: u16| out.iter().find(|r| r.port_a == port).unwrap_or_else(|| panic!("{port}: {out:?}"));
        let who = |r: &FlowRecord, side: usize| (r.ctr[side].name_str().to_owned(), r.ctr[side].attributed_by());
        let client = ("client".to_owned(), AttributedBy::Interface);
        let server = ("server".to_owned(), AttributedBy::Ip);
        // Side a sent the first packet: X, the client.
        let sent = row(5000);
        assert_eq!((who(sent, 0), who(sent, 1)), (client.clone(), server.clone()));
        assert_eq!((sent.dir[0].packets, sent.dir[1].packets), (1, 1));
        // The client's own address went in: the receiver (side b) is the client.
        assert_eq!(who(row(6000), 1), client);
        assert_eq!(who(row(7000), 0), client);
        assert_eq!((who(row(8000), 0), who(row(8000), 1)), (("".to_owned(), AttributedBy::None), client));
    }

    #[test]
    fn counting_packets_ahead_gives_the_records_of_counting_each_at_once() {
        // A small table (evictions), short timeouts (idle, close, active
        // restarts), both directions, TCP flags: two tables fed the same packets.
        let cfg = TableConfig { limit: 24, active_ns: 20 * S, refresh_ns: 15 * S, ..cfg() };
        let (mut at_once, mut ahead) = (FlowTable::new(cfg), FlowTable::new(cfg));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut ts = S;
        for n in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ts += (x >> 40) % (S / 4);
            let port = 1000 + (x % 40) as u16;
            let flags = [0, tcp_flags::SYN, tcp_flags::ACK, tcp_flags::FIN | tcp_flags::ACK, tcp_flags::RST]
                [(x >> 8) as usize % 5];
            let s = if x & 1 == 0 { tcp(C, port, SV, 80, flags) } else { tcp(SV, 80, C, port, flags) };
            let (k, d) = key_of(&s);
            let frame = FrameTime { ts_ns: ts, wire_len: 74 };
            at_once.packet(&s, &k, d, frame, ts, &mut a);
            ahead.packet_ahead(Capture::on(0), &s, &k, d, frame, ts, &mut b);
            if n % 1000 == 999 {
                at_once.expire(ts, &mut a);
                ahead.expire(ts, &mut b);
                at_once.refresh(ts, 8, &mut a);
                ahead.refresh(ts, 8, &mut b);
            }
        }
        at_once.flush(&mut a);
        ahead.flush(&mut b);
        assert!(a.len() > 100, "{} records: the sequence should end many flows", a.len());
        assert_eq!(a, b);
        assert_eq!(at_once.stats(), ahead.stats());
        assert_eq!(a.iter().map(FlowRecord::packets).sum::<u64>(), 20_000);
    }

    #[test]
    fn a_flushed_table_keeps_its_peak_and_counts_new_flows_from_scratch() {
        let mut t = FlowTable::new(TableConfig { limit: 4, ..cfg() });
        let mut out = Vec::new();
        for p in 0..3u16 {
            feed(&mut t, &udp(C, p, SV, 53), S, &mut out);
        }
        assert_eq!(t.flush(&mut out), 3);
        assert_eq!((t.len(), t.memory().2), (0, 3), "empty, and the peak is still 3 flows");
        // The same keys again are new flows; a full table still evicts.
        for p in 0..5u16 {
            feed(&mut t, &udp(C, p, SV, 53), 2 * S + u64::from(p), &mut out);
        }
        assert_eq!(t.stats().evicted, 1);
        t.flush(&mut out);
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), 8);
        assert_eq!((out.len(), t.memory().2), (8, 4));
        assert_eq!(out[3].end(), Some(EndReason::LackOfResources));
        assert_eq!(out[3].port_a, 0, "the least recently seen of the new flows");
    }

    #[test]
    fn a_counter_that_would_pass_32_bits_ends_the_part_first_and_every_byte_is_counted_once() {
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        // 1 GiB "packets" (the summary's lengths are only numbers): the IP and
        // frame byte counters of a direction pass u32::MAX at the fourth.
        let big = PacketSummary { ip_len: 1 << 30, ..udp(C, 5000, SV, 53) };
        let (k, d) = key_of(&big);
        let (k_back, d_back) = key_of(&udp(SV, 53, C, 5000));
        for n in 0..9u64 {
            let frame = FrameTime { ts_ns: S + n, wire_len: (1 << 30) + 14 };
            t.packet(&big, &k, d, frame, S + n, &mut out);
            let back = FrameTime { ts_ns: S + n, wire_len: 64 };
            t.packet(&udp(SV, 53, C, 5000), &k_back, d_back, back, S + n, &mut out);
        }
        t.flush(&mut out);
        let reasons: Vec<_> = out.iter().map(|r| r.end().unwrap()).collect();
        assert_eq!(reasons, [EndReason::ActiveTimeout, EndReason::ActiveTimeout, EndReason::ForcedEnd]);
        // Parts of 3 big packets each; the other direction goes on in the same parts.
        let a: Vec<u64> = out.iter().map(|r| r.dir[0].packets).collect();
        assert_eq!(a, [3, 3, 3]);
        assert_eq!(out.iter().map(|r| r.dir[0].ip_bytes).sum::<u64>(), 9 << 30);
        assert_eq!(out.iter().map(|r| r.dir[0].frame_bytes).sum::<u64>(), 9 * ((1 << 30) + 14));
        assert_eq!(out.iter().map(|r| r.dir[1].packets).sum::<u64>(), 9);
        assert!(out.iter().all(|r| r.addr_a == v4(C) && r.first_ns <= r.last_ns));
        let st = t.stats();
        assert_eq!((st.new, st.records), (1, 3));
    }

    /// A container interface: its own netns and veth `v<name>`, one MAC, one address.
    fn container(name: &str, mac: [u8; 6], ip: [u8; 4]) -> inventory::Entry {
        use station::record::fixed_text;
        inventory::Entry {
            reference: ContainerRef {
                netns: 4_026_532_000 + u64::from(ip[3]),
                id: fixed_text(name),
                name: fixed_text(name),
                veth: fixed_text(&format!("v{name}")),
                ..Default::default()
            },
            macs: vec![mac],
            ips: vec![IpAddr::from(ip)],
            ..Default::default()
        }
    }

    /// An inventory that scans nothing of this host (see `Scanner::scan_found`),
    /// waiting for `readers` readers, holding at most `max_entries` entries.
    fn inventory_of(readers: usize, max_entries: usize) -> inventory::Scanner {
        let mut c = inventory::InventoryConfig::new("test");
        c.docker_socket = None;
        c.netns_dir = "/nonexistent".into();
        c.scan_proc = false;
        c.sources = inventory::SourceMap::Static(Vec::new());
        c.readers = readers;
        c.max_entries = max_entries;
        inventory::Scanner::new(c)
    }

    #[test]
    fn a_flow_reads_its_own_container_after_it_stopped_and_its_entry_is_reused_only_once_the_flow_left() {
        const LATE: [u8; 4] = [10, 0, 0, 0x33];
        const LATER: [u8; 4] = [10, 0, 0, 0x44];
        let client = container("client", [2, 0, 0, 0, 0, C[3]], C);
        let server = container("server", [2, 0, 0, 0, 0, 0xee], SV);
        let late = container("late", [2, 0, 0, 0, 0, LATE[3]], LATE);
        let later = container("later", [2, 0, 0, 0, 0, LATER[3]], LATER);
        // One worker; room for three entries held at once.
        let mut inv = inventory_of(1, 3);
        let mut t = FlowTable::new(cfg());
        let mut out = Vec::new();
        let s1 = Arc::new(inv.scan_found(vec![client.clone(), server.clone()]));
        let mark = s1.readers.join();
        // What the worker does after each batch and idle check.
        let report = |t: &mut FlowTable| {
            let g = t.core.snap.generation;
            mark.report_held(g, &mut [t.holdings_mut()]);
        };
        let ci = s1.by_ip(&IpAddr::from(C));
        assert_ne!(ci, inventory::NONE);
        t.set_snapshot(Arc::clone(&s1));
        feed(&mut t, &udp(C, 5000, SV, 53), S, &mut out);
        report(&mut t);
        assert_eq!(t.holdings().count(ci), 1);
        // The client stops; the worker takes the snapshot without it.
        t.set_snapshot(Arc::new(inv.scan_found(vec![server.clone()])));
        report(&mut t);
        // Two new containers: the first takes a fresh index (the client's flow holds its
        // entry), the second finds three entries held and is not attributed.
        let s3 = Arc::new(inv.scan_found(vec![server.clone(), late.clone(), later.clone()]));
        let li = s3.by_ip(&IpAddr::from(LATE));
        assert!(li != inventory::NONE && li != ci, "late took {li}, the client's flow holds {ci}");
        assert_eq!(s3.by_ip(&IpAddr::from(LATER)), inventory::NONE);
        assert_eq!(s3.entry(ci).name_str(), "client");
        assert_eq!((s3.entries_held, s3.entries_retiring, s3.entries_reclaimed), (3, 1, 0));
        t.set_snapshot(s3);
        report(&mut t);
        // The flow ends under the newest snapshot: it reads its own container.
        assert_eq!(t.expire(S + 31 * S, &mut out), 1);
        assert_eq!((out[0].ctr[0].name_str(), out[0].ctr[1].name_str()), ("client", "server"));
        assert_eq!(t.holdings().count(ci), 0);
        report(&mut t);
        // No flow holds the client's entry now: the next scan frees it and the later container takes it.
        let s4 = Arc::new(inv.scan_found(vec![server.clone(), late.clone(), later.clone()]));
        assert_eq!(s4.by_ip(&IpAddr::from(LATER)), ci);
        assert_eq!((s4.by_ip(&IpAddr::from(LATE)), s4.entry(ci).name_str()), (li, "later"));
        assert_eq!((s4.entries_held, s4.entries_retiring, s4.entries_reclaimed), (3, 0, 1));
        t.set_snapshot(s4);
        feed(&mut t, &udp(LATER, 1, SV, 53), 40 * S, &mut out);
        feed(&mut t, &udp(LATE, 2, SV, 53), 40 * S, &mut out);
        t.flush(&mut out);
        let names: Vec<(&str, &str)> = out[1..].iter().map(|r| (r.ctr[0].name_str(), r.ctr[1].name_str())).collect();
        assert_eq!(names, [("later", "server"), ("late", "server")]);
        assert_eq!(t.holdings().entries_held(), 0);
    }

    #[test]
    fn the_flows_held_per_entry_return_to_zero_however_the_flows_leave() {
        const X: [u8; 4] = [10, 0, 0, 50];
        // Client entry 1 (by MAC), server entry 2 (by address); room for two flows.
        let mut t = FlowTable::new(TableConfig { limit: 2, ..cfg() });
        t.set_snapshot(two_containers());
        let mut out = Vec::new();
        let held = |t: &FlowTable| (t.holdings().count(1), t.holdings().count(2));
        feed(&mut t, &udp(C, 1, SV, 53), S, &mut out);
        feed(&mut t, &udp(C, 2, SV, 53), S + 1, &mut out);
        assert_eq!(held(&t), (2, 2), "two flows, each holding both");
        // A third flow (an unknown host to the server) evicts the oldest.
        feed(&mut t, &udp(X, 3, SV, 53), S + 2, &mut out);
        assert_eq!(out.last().unwrap().end(), Some(EndReason::LackOfResources));
        assert_eq!(held(&t), (1, 2));
        // The second flow restarts after its idle timeout under a snapshot that
        // attributes nothing (the same entries, no MAC, address or veth of them):
        // its old sides are let go, the new part holds nothing.
        let stopped: Vec<(inventory::Entry, Option<u8>)> = two_containers().entries[1..]
            .iter()
            .map(|e| (inventory::Entry { macs: Vec::new(), ips: Vec::new(), ..e.clone() }, None))
            .collect();
        t.set_snapshot(Arc::new(inventory::snapshot_for_tests(&stopped)));
        feed(&mut t, &udp(C, 2, SV, 53), 40 * S, &mut out);
        assert_eq!(out.last().unwrap().end(), Some(EndReason::IdleTimeout));
        assert_eq!(held(&t), (0, 1));
        // Expiry ends the unknown host's flow.
        assert_eq!(t.expire(40 * S, &mut out), 1);
        assert_eq!(held(&t), (0, 0));
        // A new flow, ended by the flush at the end.
        t.set_snapshot(two_containers());
        feed(&mut t, &udp(C, 4, SV, 53), 41 * S, &mut out);
        assert_eq!(held(&t), (1, 1));
        t.flush(&mut out);
        assert_eq!((held(&t), t.holdings().entries_held()), ((0, 0), 0));
        // Every record names the containers its flow held.
        let named = out.iter().filter(|r| r.ctr[1].name_str() == "server").count();
        assert_eq!(named, 4, "{out:?}");
    }

    /// Random traffic of containers that start and stop (each start a new
    /// container at an address of its own), through a small table and an
    /// inventory that holds few entries, a worker that lags behind the
    /// inventory's snapshots by up to two, reporting after each step: every
    /// record names, by MAC or address, the container of that address, and
    /// the counts equal the flows' attributions.
    #[test]
    fn random_container_churn_never_names_another_container() {
        fn addr(n: u32) -> [u8; 4] {
            [10, 1 + (n / 200) as u8, 0, (n % 200 + 20) as u8]
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut inv = inventory_of(1, 6);
        let mut t = FlowTable::new(TableConfig { limit: 12, ..cfg() });
        let mut out = Vec::new();
        // Incarnations: (number, live); traffic comes from live and stopped ones.
        let mut made = 0u32;
        let mut live: Vec<u32> = Vec::new();
        let mut stopped: Vec<u32> = Vec::new();
        let mut snaps: Vec<Arc<Snapshot>> = vec![Arc::new(inv.scan_found(Vec::new()))];
        let mark = snaps[0].readers.join();
        let mut now = S;
        for step in 0..20_000u64 {
            match rnd(10) {
                0 => {
                    // A container starts or stops; the inventory scans.
                    if live.len() < 5 && (live.is_empty() || rnd(2) == 0) {
                        live.push(made);
                        made += 1;
                    } else {
                        let k = rnd(live.len() as u64) as usize;
                        stopped.push(live.remove(k));
                        if stopped.len() > 6 {
                            stopped.remove(0);
                        }
                    }
                    let found = live
                        .iter()
                        .map(|&n| {
                            let a = addr(n);
                            let mut e = container(&format!("c{n}"), [2, 0, 0, a[1], a[2], a[3]], a);
                            e.reference.netns = 4_026_540_000 + u64::from(n);
                            e
                        })
                        .collect();
                    snaps.push(Arc::new(inv.scan_found(found)));
                }
                1 => now += rnd(40) * S,
                2 => {
                    t.expire(now, &mut out);
                }
                _ => {
                    let pool: Vec<u32> = live.iter().chain(stopped.iter()).copied().collect();
                    if pool.len() < 2 {
                        continue;
                    }
                    let (a, b) = (pool[rnd(pool.len() as u64) as usize], pool[rnd(pool.len() as u64) as usize]);
                    let mut s = udp(addr(a), 1000 + rnd(3) as u16, addr(b), 53);
                    s.src_mac = [2, 0, 0, addr(a)[1], addr(a)[2], addr(a)[3]];
                    s.dst_mac = [2, 0, 0, addr(b)[1], addr(b)[2], addr(b)[3]];
                    let (k, d) = key_of(&s);
                    let at = Capture::on(0);
                    let frame = FrameTime { ts_ns: now, wire_len: 114 };
                    if rnd(2) == 0 {
                        t.packet_ahead(at, &s, &k, d, frame, now, &mut out);
                    } else {
                        t.packet_from(at, &s, &k, d, frame, now, &mut out);
                    }
                }
            }
            if step % 997 == 0 {
                t.flush(&mut out);
            }
            // The worker: a snapshot up to two behind the newest, then its report.
            let lag = rnd(3) as usize;
            let snap = Arc::clone(&snaps[snaps.len().saturating_sub(1 + lag)]);
            if snap.generation > t.core.snap.generation {
                t.drain(&mut out);
                t.set_snapshot(snap);
            }
            t.drain(&mut out);
            let g = t.core.snap.generation;
            mark.report_held(g, &mut [t.holdings_mut()]);
            for r in out.drain(..) {
                for (side, ip) in [(0, r.addr_a), (1, r.addr_b)] {
                    let c = r.ctr[side];
                    if c.is_some() {
                        let n = c.name_str().trim_start_matches('c').parse::<u32>().expect("a container's name");
                        assert_eq!(v4(addr(n)), ip, "step {step}: {} names {} for {ip:?}", side, c.name_str());
                    }
                }
            }
            let mut counts = std::collections::BTreeMap::<u16, u32>::new();
            for list in [OPEN, CLOSING] {
                t.core.slab.for_each(list, |f, _| {
                    for a in f.ctr {
                        if entry_of(a) != inventory::NONE {
                            *counts.entry(entry_of(a)).or_default() += 1;
                        }
                    }
                });
            }
            for e in 1..=8u16 {
                assert_eq!(t.holdings().count(e), counts.get(&e).copied().unwrap_or(0), "step {step}: entry {e}");
            }
        }
        assert!(inv.scan_found(Vec::new()).entries_reclaimed > 10);
    }

    #[test]
    fn entry_size_is_what_the_docs_say() {
        assert_eq!(FLOW_ENTRY_BYTES, 116);
    }
}

//! A worker's table of IP fragment ids: later fragments are counted in their
//! datagram's flow, with its ports, as pmacctd does.
//!
//! A later fragment (IPv4 offset > 0; IPv6 Fragment header offset > 0)
//! carries no transport header, so its summary has ports 0. The table
//! remembers, per datagram, the ports of its first fragment (offset 0, more
//! fragments), keyed by [`FragKey`]: source and destination address,
//! IP version, both VLAN ids, the identification (16 bits for IPv4, the 32
//! bits of the IPv6 Fragment header) and, for IPv4 only, the protocol (RFC
//! 791's datagram key; RFC 8200 keys an IPv6 datagram by its addresses and
//! id: its later fragments' protocol is the Fragment header's next header,
//! which is not the first fragment's upper layer when an extension header,
//! AH or Destination Options, follows the Fragment header, so a later
//! fragment takes its first fragment's protocol with its ports). The capture source is not
//! in the key: a datagram's ports are the same wherever it is seen, and each
//! fragment is still counted in the flow of its own capture point (a pcapng
//! whose fragments alternate between two interfaces gives each its rows).
//!
//! Guarantees:
//! - **Every fragment given to [`FragmentTable::first`] or
//!   [`FragmentTable::later`] is counted in exactly one record** of the flow
//!   table handed in, as one packet of its own direction with its own bytes
//!   and timestamp: a first fragment at once, in its flow; a later fragment
//!   whose first fragment was seen (within the timeout, same key) at once, in
//!   the datagram's flow (its summary with the first fragment's ports);
//!   a later fragment that comes before its first is held: its counts (not
//!   its bytes) wait in the datagram's entry, and are added to the
//!   datagram's flow when the first fragment comes ([`FragmentStats::attributed`]),
//!   or, when it does not come within the timeout, when the entry is evicted,
//!   or at [`FragmentTable::flush`], to the flow of ports 0/0
//!   (src, dst, proto, 0, 0) as before this table existed: the named
//!   remainder [`FragmentStats::unattributed`]. Held fragments keep their
//!   timestamps (the record's first/last times are theirs).
//! - Counters: `seen` (first and later fragments) and, of the later ones,
//!   `attributed + unattributed + held == later fragments seen` at all times;
//!   after [`FragmentTable::flush`] `held` is 0.
//! - Timeout: an entry lives [`FRAGMENT_TIMEOUT_NS`] (30 s, as Linux's
//!   `net.ipv4.ipfrag_time`; a constant, not a configuration variable) on the
//!   flow clock after the last fragment that touched it. Expiry is checked
//!   lazily when a fragment of the entry arrives (so attribution depends on
//!   the clock alone, not on when [`FragmentTable::expire`] runs) and by
//!   [`FragmentTable::expire`], which costs O(expired): the entries are on an
//!   LRU list ([`crate::lru_slab`]).
//! - Bound: at most [`FRAGMENT_TABLE_LIMIT`] (65,536) datagrams per worker;
//!   when full, the least recently touched entry is evicted
//!   ([`FragmentStats::evicted`]) and its held fragments go to the remainder.
//!   [`FRAGMENT_TABLE_RESERVE`] entries are reserved up front, growth by
//!   doubling; one entry is [`FRAGMENT_ENTRY_BYTES`] (at most 128) bytes in
//!   the slab plus 5 to 12 of index, so a grown table takes about 9 MB.
//!   Nothing is allocated per packet once the table has grown. Frames that
//!   are not fragments never touch the table.
//!
//! Not guaranteed:
//! - That fragments of one datagram reach one worker: the balancer's IP hash
//!   (`ZBALANCE_HASH_MODE=1`, addresses only) and fan-out keep them together;
//!   round-robin (`0`) spreads them, and a later fragment read by another
//!   worker than its first is a remainder there.
//! - Reassembly or any check of offsets, overlaps or lengths: a later
//!   fragment is attributed by its key alone; a datagram id reused within
//!   the timeout takes the ports of its newest first fragment.
//! - Attribution of held fragments of two capture points at once: when a
//!   later fragment comes from another capture source than the fragments
//!   held for its datagram, or in the other direction on it (or, IPv6, with
//!   another Fragment header next header: an id reused by another
//!   datagram), those are counted as the remainder at once.
//! - Where a held fragment is counted when its first fragment starts a new
//!   flow part (a restart after idle time): in the part that first fragment
//!   is in.

use wire::ethernet::EtherType;
use wire::{Direction, FlowKey, Fragment, PacketSummary, L3};

use crate::flow_table::{Capture, FlowTable, FrameTime, HeldCounts};
use crate::lru_slab::LruSlab;
use crate::record_sink::RecordSink;
use crate::tunnels::TunnelHandle;

/// How long a datagram's entry lives after its last fragment, on the flow
/// clock: 30 s, Linux's default `net.ipv4.ipfrag_time`.
pub const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;
/// Most datagrams a worker's table holds.
pub const FRAGMENT_TABLE_LIMIT: u32 = 65_536;
/// Entries reserved up front.
pub const FRAGMENT_TABLE_RESERVE: usize = 1024;

/// The one LRU list of the table.
const ALL: usize = 0;

/// A datagram: the fields its fragments share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Identification: IPv4 16 bits, IPv6 Fragment header 32 bits.
    pub id: u32,
    /// Outer VLAN id.
    pub vlan: u16,
    /// Inner VLAN id.
    pub vlan_inner: u16,
    /// IP protocol for IPv4; 0 for IPv6 (RFC 8200 keys a datagram without it).
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
}

impl FragKey {
    /// The datagram of a fragment's summary.
    #[inline]
    pub fn of(s: &PacketSummary) -> Self {
        Self {
            src: s.src,
            dst: s.dst,
            id: s.frag_id,
            vlan: s.vlan,
            vlan_inner: s.vlan_inner,
            proto: if s.ip_version == 6 { 0 } else { s.proto },
            ip_version: s.ip_version,
        }
    }
}

/// What the table knows of a datagram.
#[derive(Clone, Copy, Debug)]
struct Datagram {
    /// Later fragments waiting for the first one (source to destination).
    held: HeldCounts,
    /// Where the held fragments were captured (source and direction).
    held_at: Capture,
    /// Flow clock when a fragment last touched the entry.
    seen_ns: u64,
    /// MACs of the last held fragment (for a remainder's flow).
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    /// Ports of the first fragment (source, destination), when it came.
    src_port: u16,
    dst_port: u16,
    /// Protocol of the first fragment (its upper layer), when it came.
    proto: u8,
    /// Protocol of the held fragments (their own summary's, for a remainder's flow).
    held_proto: u8,
    /// The first fragment came.
    known: bool,
}

/// Bytes of one slab entry (key, datagram, links).
pub const FRAGMENT_ENTRY_BYTES: usize = LruSlab::<FragKey, Datagram, 1>::ENTRY_BYTES;

const _: () = assert!(FRAGMENT_ENTRY_BYTES <= 128, "the module docs promise at most 128 bytes per slab entry");

/// Totals of a table, for the worker's stats page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentStats {
    /// Fragments seen, first and later.
    pub seen: u64,
    /// Later fragments counted in their datagram's flow (with its ports).
    pub attributed: u64,
    /// Later fragments counted under ports 0/0: their first fragment did
    /// not come within the timeout, or their entry was evicted.
    pub unattributed: u64,
    /// Later fragments held now, waiting for their first fragment.
    pub held: u64,
    /// Entries evicted because the table was full.
    pub evicted: u64,
    /// Datagrams in the table now.
    pub datagrams: u64,
}

/// A worker's fragment table. See the module docs for what it guarantees.
#[derive(Debug)]
pub struct FragmentTable {
    slab: LruSlab<FragKey, Datagram, 1>,
    timeout_ns: u64,
    stats: FragmentStats,
}

impl Default for FragmentTable {
    /// [`FRAGMENT_TABLE_LIMIT`] datagrams, [`FRAGMENT_TIMEOUT_NS`].
    fn default() -> Self {
        Self::new(FRAGMENT_TABLE_LIMIT, FRAGMENT_TABLE_RESERVE, FRAGMENT_TIMEOUT_NS)
    }
}

impl FragmentTable {
    /// A table of at most `limit` datagrams (at least 1), `min(limit,
    /// reserve)` reserved, entries living `timeout_ns` after their last fragment.
    pub fn new(limit: u32, reserve: usize, timeout_ns: u64) -> Self {
        Self { slab: LruSlab::new(limit.max(1) as usize, reserve), timeout_ns, stats: FragmentStats::default() }
    }

    /// Totals so far.
    pub fn stats(&self) -> FragmentStats {
        FragmentStats { datagrams: self.slab.len() as u64, ..self.stats }
    }

    /// Counts a first fragment (`s.fragment == Fragment::First`) in its flow
    /// (`key`/`dir` from its summary) and remembers its ports; later
    /// fragments of its datagram held so far are counted in that flow too.
    #[allow(clippy::too_many_arguments)]
    pub fn first(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        key: &FlowKey,
        dir: Direction,
        frame: FrameTime,
        now_ns: u64,
        flows: &mut FlowTable,
        sink: &mut impl RecordSink,
    ) {
        self.stats.seen += 1;
        flows.packet_from(at, s, key, dir, frame, now_ns, sink);
        let i = self.entry(FragKey::of(s), now_ns, flows, sink);
        let d = self.slab.get_mut(i);
        d.known = true;
        (d.src_port, d.dst_port, d.proto) = (s.src_port, s.dst_port, s.proto);
        d.seen_ns = now_ns;
        let held = std::mem::take(&mut d.held);
        let held_at = d.held_at;
        self.slab.touch(i, ALL);
        if held.packets > 0 {
            self.stats.held -= held.packets;
            self.stats.attributed += held.packets;
            // As later fragments: no TCP flags of the first one's, and the part gets FLAG_FRAGMENTS.
            let later = PacketSummary { tcp_flags: 0, fragment: Fragment::Later, ..*s };
            flows.held_from(held_at, &later, key, dir, &held, now_ns, sink);
        }
    }

    /// Counts a later fragment (`s.fragment == Fragment::Later`, ports 0):
    /// in its datagram's flow when the first fragment's ports are known,
    /// else holds it (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub fn later(
        &mut self,
        at: Capture,
        s: &PacketSummary,
        frame: FrameTime,
        now_ns: u64,
        flows: &mut FlowTable,
        sink: &mut impl RecordSink,
    ) {
        self.stats.seen += 1;
        let i = self.entry(FragKey::of(s), now_ns, flows, sink);
        let d = self.slab.get_mut(i);
        d.seen_ns = now_ns;
        if d.known {
            let with_ports = PacketSummary { proto: d.proto, src_port: d.src_port, dst_port: d.dst_port, ..*s };
            self.slab.touch(i, ALL);
            self.stats.attributed += 1;
            let (key, dir) = FlowKey::from_summary(&with_ports);
            flows.packet_from(at, &with_ports, &key, dir, frame, now_ns, sink);
        } else {
            if d.held.packets > 0 && (d.held_at != at || d.held_proto != s.proto) {
                // Held fragments of another capture point, or (IPv6, whose key has
                // no protocol) of another next header: the remainder (see the docs).
                let (fk, d) = (*self.slab.key(i), *self.slab.get(i));
                self.remainder(&fk, &d, now_ns, flows, sink);
                self.slab.get_mut(i).held = HeldCounts::default();
            }
            let d = self.slab.get_mut(i);
            (d.held_at, d.held_proto) = (at, s.proto);
            let h = &mut d.held;
            if h.packets == 0 {
                h.first_ns = frame.ts_ns;
            }
            h.packets += 1;
            h.ip_bytes += u64::from(s.ip_len);
            h.frame_bytes += u64::from(frame.wire_len);
            h.first_ns = h.first_ns.min(frame.ts_ns);
            h.last_ns = h.last_ns.max(frame.ts_ns);
            (d.src_mac, d.dst_mac) = (s.src_mac, s.dst_mac);
            self.slab.touch(i, ALL);
            self.stats.held += 1;
        }
    }

    /// The entry of `fk`: an entry past its timeout is ended first (its held
    /// fragments to the remainder); a missing one is created (evicting the
    /// least recently touched when full). The caller touches it.
    fn entry(&mut self, fk: FragKey, now_ns: u64, flows: &mut FlowTable, sink: &mut impl RecordSink) -> u32 {
        let hash = self.slab.hash_of(&fk);
        if let Some(i) = self.slab.find_hashed(hash, &fk) {
            if now_ns.saturating_sub(self.slab.get(i).seen_ns) < self.timeout_ns {
                return i;
            }
            self.end(i, now_ns, flows, sink);
        }
        if self.slab.is_full() {
            if let Some(oldest) = self.slab.oldest(ALL) {
                self.end(oldest, now_ns, flows, sink);
                self.stats.evicted += 1;
            }
        }
        let fresh = Datagram {
            held: HeldCounts::default(),
            held_at: Capture::on(0),
            seen_ns: now_ns,
            src_mac: [0; 6],
            dst_mac: [0; 6],
            src_port: 0,
            dst_port: 0,
            proto: 0,
            held_proto: 0,
            known: false,
        };
        match self.slab.insert_hashed(hash, fk, fresh, ALL) {
            Some(i) => i,
            None => unreachable!("insert after eviction"),
        }
    }

    /// Removes entry `i`; its held fragments are counted under ports 0/0.
    fn end(&mut self, i: u32, now_ns: u64, flows: &mut FlowTable, sink: &mut impl RecordSink) {
        let (fk, d) = self.slab.remove(i);
        self.remainder(&fk, &d, now_ns, flows, sink);
    }

    /// Counts the held fragments of `d` under ports 0/0, in no tunnel (a
    /// remainder may be ended while another datagram's decapsulated packet
    /// is counted: it is not that packet's tunnel's).
    fn remainder(
        &mut self,
        fk: &FragKey,
        d: &Datagram,
        now_ns: u64,
        flows: &mut FlowTable,
        sink: &mut impl RecordSink,
    ) {
        if d.held.packets == 0 {
            return;
        }
        self.stats.held -= d.held.packets;
        self.stats.unattributed += d.held.packets;
        let s = PacketSummary {
            l3: if fk.ip_version == 6 { L3::Ipv6 } else { L3::Ipv4 },
            ethertype: if fk.ip_version == 6 { EtherType::IPV6 } else { EtherType::IPV4 },
            src_mac: d.src_mac,
            dst_mac: d.dst_mac,
            vlan: fk.vlan,
            vlan_inner: fk.vlan_inner,
            ip_version: fk.ip_version,
            src: fk.src,
            dst: fk.dst,
            proto: d.held_proto,
            fragment: Fragment::Later,
            frag_id: fk.id,
            ..PacketSummary::default()
        };
        let (key, dir) = FlowKey::from_summary(&s);
        let tunnel = flows.tunnel();
        flows.set_tunnel(TunnelHandle::NONE);
        flows.held_from(d.held_at, &s, &key, dir, &d.held, now_ns, sink);
        flows.set_tunnel(tunnel);
    }

    /// Ends the entries not touched for the timeout at `now_ns` (held
    /// fragments to the remainder); O(expired). Returns the entries ended.
    pub fn expire(&mut self, now_ns: u64, flows: &mut FlowTable, sink: &mut impl RecordSink) -> u64 {
        let mut n = 0;
        while let Some(i) = self.slab.oldest(ALL) {
            if now_ns.saturating_sub(self.slab.get(i).seen_ns) < self.timeout_ns {
                break;
            }
            self.end(i, now_ns, flows, sink);
            n += 1;
        }
        n
    }

    /// Ends every entry (held fragments to the remainder); the table is
    /// empty afterwards. Call before [`FlowTable::flush`].
    pub fn flush(&mut self, now_ns: u64, flows: &mut FlowTable, sink: &mut impl RecordSink) {
        while let Some(i) = self.slab.oldest(ALL) {
            self.end(i, now_ns, flows, sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use station::record::{FlowRecord, FLAG_FRAGMENTS};

    use super::*;
    use crate::accounting::Accounting;
    use crate::flow_table::tests::{cfg, udp, v4};

    const S: u64 = 1_000_000_000;
    const C: [u8; 4] = [10, 0, 0, 9];
    const SV: [u8; 4] = [10, 0, 0, 1];

    fn acct() -> Accounting {
        Accounting::new(cfg())
    }

    /// A fragment of datagram `id` from C:40000 to SV:53 (ports 0 when later).
    fn frag(position: Fragment, id: u32, ip_len: u32) -> PacketSummary {
        let (sp, dp) = if position == Fragment::Later { (0, 0) } else { (40000, 53) };
        PacketSummary { fragment: position, frag_id: id, ip_len, ..udp(C, sp, SV, dp) }
    }

    fn feed(a: &mut Accounting, s: &PacketSummary, ts: u64, out: &mut Vec<FlowRecord>) {
        a.summary(s, ts, s.ip_len + 14, out);
    }

    fn ports_and_packets(out: &[FlowRecord]) -> Vec<(u16, u16, u64)> {
        let mut v: Vec<_> = out.iter().filter(|r| r.packets() > 0).map(|r| (r.port_a, r.port_b, r.packets())).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn later_fragments_in_order_count_in_their_datagrams_flow_with_its_ports() {
        let mut a = acct();
        let mut out = Vec::new();
        feed(&mut a, &frag(Fragment::First, 7, 1500), S, &mut out);
        feed(&mut a, &frag(Fragment::Later, 7, 1500), S + 1, &mut out);
        feed(&mut a, &frag(Fragment::Later, 7, 300), S + 2, &mut out);
        a.flush(&mut out);
        assert_eq!(out.len(), 1, "one flow: {out:?}");
        let r = &out[0];
        assert_eq!((r.port_a, r.port_b, r.dir[0].packets, r.dir[0].ip_bytes), (40000, 53, 3, 3300));
        assert_eq!((r.first_ns, r.last_ns), (S, S + 2));
        assert_ne!(r.flags & FLAG_FRAGMENTS, 0);
        let st = a.fragment_stats();
        assert_eq!((st.seen, st.attributed, st.unattributed, st.held), (3, 2, 0, 0));
        assert_eq!(a.counters().fragments, 2);
    }

    #[test]
    fn later_fragments_before_their_first_are_held_and_counted_when_it_comes() {
        let mut a = acct();
        let mut out = Vec::new();
        feed(&mut a, &frag(Fragment::Later, 7, 300), S, &mut out);
        feed(&mut a, &frag(Fragment::Later, 7, 1500), S + 1, &mut out);
        assert_eq!(a.fragment_stats().held, 2);
        // Held fragments are in no flow yet, and a timeout check does not end them early.
        a.expire(&mut out);
        assert_eq!((out.len(), a.flow_stats().active), (0, 0));
        feed(&mut a, &frag(Fragment::First, 7, 1500), S + 2, &mut out);
        // Another datagram of the same flow, in order, joins the same record.
        feed(&mut a, &frag(Fragment::First, 8, 1500), S + 3, &mut out);
        feed(&mut a, &frag(Fragment::Later, 8, 100), S + 4, &mut out);
        a.flush(&mut out);
        assert_eq!(ports_and_packets(&out), vec![(40000, 53, 5)]);
        let r = &out[0];
        assert_eq!(r.dir[0].ip_bytes, 300 + 1500 + 1500 + 1500 + 100);
        assert_eq!(r.dir[0].frame_bytes, r.dir[0].ip_bytes + 5 * 14);
        assert_eq!((r.first_ns, r.last_ns), (S, S + 4), "held fragments keep their times");
        assert_ne!(r.flags & FLAG_FRAGMENTS, 0);
        let st = a.fragment_stats();
        assert_eq!((st.seen, st.attributed, st.unattributed, st.held), (5, 3, 0, 0));
    }

    #[test]
    fn a_later_fragment_whose_first_never_comes_is_the_remainder_after_the_timeout() {
        let mut a = acct();
        let mut out = Vec::new();
        feed(&mut a, &frag(Fragment::Later, 9, 500), S, &mut out);
        // A packet of another flow moves the clock past the fragment timeout.
        feed(&mut a, &udp(SV, 1, C, 2), S + FRAGMENT_TIMEOUT_NS, &mut out);
        a.expire(&mut out);
        let st = a.fragment_stats();
        assert_eq!((st.unattributed, st.held, st.datagrams), (1, 0, 0));
        // Its first fragment after that is a datagram of its own: nothing to add.
        feed(&mut a, &frag(Fragment::First, 9, 1500), S + FRAGMENT_TIMEOUT_NS + 1, &mut out);
        a.flush(&mut out);
        assert_eq!(ports_and_packets(&out), vec![(0, 0, 1), (1, 2, 1), (40000, 53, 1)]);
        let rest = out.iter().find(|r| r.port_a == 0).unwrap();
        assert_eq!((rest.addr_a, rest.addr_b, rest.proto), (v4(C), v4(SV), 17));
        assert_eq!((rest.first_ns, rest.dir[0].ip_bytes), (S, 500));
        assert_ne!(rest.flags & FLAG_FRAGMENTS, 0);
        assert_eq!(a.fragment_stats().attributed, 0);
    }

    #[test]
    fn a_known_datagram_is_forgotten_after_the_timeout_even_before_a_check_runs() {
        let mut a = acct();
        let mut out = Vec::new();
        feed(&mut a, &frag(Fragment::First, 3, 1500), S, &mut out);
        // No expire() between: the lazy check on arrival decides alone.
        feed(&mut a, &frag(Fragment::Later, 3, 200), S + FRAGMENT_TIMEOUT_NS, &mut out);
        a.flush(&mut out);
        assert_eq!(ports_and_packets(&out), vec![(0, 0, 1), (40000, 53, 1)]);
        assert_eq!(a.fragment_stats().unattributed, 1);
    }

    #[test]
    fn held_fragments_still_held_at_the_end_are_flushed_as_the_remainder() {
        let mut a = acct();
        let mut out = Vec::new();
        feed(&mut a, &frag(Fragment::Later, 1, 200), S, &mut out);
        feed(&mut a, &frag(Fragment::Later, 2, 200), S, &mut out);
        a.flush(&mut out);
        assert_eq!(ports_and_packets(&out), vec![(0, 0, 2)]);
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), a.counters().packets);
        let st = a.fragment_stats();
        assert_eq!((st.unattributed, st.held, st.datagrams), (2, 0, 0));
    }

    /// An IPv6 frame 2001:db8::1 -> ::2 with a Fragment header: UDP 40000 -> 9999 when `offset` is 0.
    fn ipv6_fragment(id: u32, offset8: u16, more: bool) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8 + 16];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&(8u16 + 16).to_be_bytes());
        f[20] = 44;
        f[21] = 64;
        f[22..24].copy_from_slice(&[0x20, 0x01]);
        f[37] = 1;
        f[38..40].copy_from_slice(&[0x20, 0x01]);
        f[53] = 2;
        f[54] = 17;
        f[56..58].copy_from_slice(&((offset8 << 3) | u16::from(more)).to_be_bytes());
        f[58..62].copy_from_slice(&id.to_be_bytes());
        if offset8 == 0 {
            f[62..66].copy_from_slice(&[0x9c, 0x40, 0x27, 0x0f]);
        }
        f
    }

    #[test]
    fn ipv6_fragments_are_matched_by_the_32_bit_id_of_the_fragment_header() {
        let mut a = acct();
        let mut out = Vec::new();
        let frames = [
            ipv6_fragment(0xcafe_0001, 3, false), // before its first
            ipv6_fragment(0xcafe_0001, 0, true),
            ipv6_fragment(0xbafe_0001, 3, false), // same low 16 bits, another datagram: no first
            ipv6_fragment(0xcafe_0002, 0, true),
            ipv6_fragment(0xcafe_0002, 3, false),
        ];
        for (i, f) in frames.iter().enumerate() {
            let s = wire::summarize(f);
            assert_eq!(s.l3, L3::Ipv6);
            a.summary(&s, S + i as u64, f.len() as u32, &mut out);
        }
        a.flush(&mut out);
        assert_eq!(ports_and_packets(&out), vec![(0, 0, 1), (40000, 9999, 4)]);
        assert!(out.iter().all(|r| r.ip_version == 6 && r.flags & FLAG_FRAGMENTS != 0));
        let st = a.fragment_stats();
        assert_eq!((st.seen, st.attributed, st.unattributed), (5, 2, 1));
    }

    /// An IPv6 frame 2001:db8::1 -> ::2 whose Fragment header is followed by a
    /// Destination Options header (RFC 8200's order): the first fragment
    /// (`offset8` 0) carries the options and UDP 40000 -> 9999; a later one
    /// only the Fragment header, whose next header is Destination Options (60).
    fn ipv6_fragment_with_options(offset8: u16, more: bool) -> Vec<u8> {
        let mut part = Vec::new();
        if offset8 == 0 {
            part.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // Destination Options (8 bytes) -> UDP
            part.extend_from_slice(&[0x9c, 0x40, 0x27, 0x0f, 0x04, 0xb8, 0, 0]);
            // UDP 40000 -> 9999
        }
        part.resize(600, b'x');
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + part.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[60, 0]);
        f.extend_from_slice(&((offset8 << 3) | u16::from(more)).to_be_bytes());
        f.extend_from_slice(&0xabc2u32.to_be_bytes());
        f.extend_from_slice(&part);
        f
    }

    #[test]
    fn ipv6_later_fragments_join_their_datagram_when_an_extension_header_follows_the_fragment_header() {
        // In order, and a later fragment before its first: one UDP flow each time.
        for order in [[0u16, 75], [75, 0]] {
            let mut a = acct();
            let mut out = Vec::new();
            for (i, offset8) in order.into_iter().enumerate() {
                let f = ipv6_fragment_with_options(offset8, offset8 == 0);
                let s = wire::summarize(&f);
                assert_eq!(s.proto, if offset8 == 0 { 17 } else { 60 }, "the parser's view of each fragment");
                a.summary(&s, S + i as u64, f.len() as u32, &mut out);
            }
            a.flush(&mut out);
            let rows: Vec<_> =
                out.iter().filter(|r| r.packets() > 0).map(|r| (r.proto, r.port_a, r.port_b, r.packets())).collect();
            assert_eq!(rows, vec![(17, 40000, 9999, 2)], "one datagram, one flow ({order:?}): {out:?}");
            let st = a.fragment_stats();
            assert_eq!((st.attributed, st.unattributed), (1, 0));
        }
        // A later fragment whose first never comes keeps its own protocol in the remainder.
        let mut a = acct();
        let mut out = Vec::new();
        let f = ipv6_fragment_with_options(75, false);
        a.summary(&wire::summarize(&f), S, f.len() as u32, &mut out);
        a.flush(&mut out);
        let rows: Vec<_> = out.iter().map(|r| (r.proto, r.port_a, r.port_b, r.packets())).collect();
        assert_eq!(rows, vec![(60, 0, 0, 1)]);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_touched_datagram_and_its_held_fragments_go_to_the_remainder() {
        let mut a = acct().with_fragment_table(FragmentTable::new(2, 2, FRAGMENT_TIMEOUT_NS));
        let mut out = Vec::new();
        feed(&mut a, &frag(Fragment::Later, 1, 100), S, &mut out);
        feed(&mut a, &frag(Fragment::First, 2, 1500), S + 1, &mut out);
        feed(&mut a, &frag(Fragment::Later, 1, 100), S + 2, &mut out); // 1 is the most recent again
        feed(&mut a, &frag(Fragment::First, 3, 1500), S + 3, &mut out); // evicts 2 (known, nothing held)
        assert_eq!((a.fragment_stats().evicted, a.fragment_stats().unattributed), (1, 0));
        feed(&mut a, &frag(Fragment::First, 4, 1500), S + 4, &mut out); // evicts 1 with two held
        let st = a.fragment_stats();
        assert_eq!((st.evicted, st.unattributed, st.held, st.datagrams), (2, 2, 0, 2));
        // 2 was forgotten: its later fragment is held until the end, then the remainder.
        feed(&mut a, &frag(Fragment::Later, 2, 100), S + 5, &mut out);
        // 1's first fragment comes too late for the evicted ones.
        feed(&mut a, &frag(Fragment::First, 1, 1500), S + 6, &mut out);
        a.flush(&mut out);
        assert_eq!(ports_and_packets(&out), vec![(0, 0, 3), (40000, 53, 4)]);
        assert_eq!(out.iter().map(FlowRecord::packets).sum::<u64>(), a.counters().packets);
        let st = a.fragment_stats();
        assert_eq!((st.seen, st.attributed + st.unattributed), (7, a.counters().fragments));
    }
}

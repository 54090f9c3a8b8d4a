//! Walking a `TPACKET_V3` ring: which block is next, where in it the walk
//! stands, and how an entry becomes a [`Frame`].
//!
//! Guarantees:
//! - A block is read only while user space owns it (through
//!   [`sys::UserBlock`]) and goes back to the kernel after the last frame
//!   borrowed from it was handed to the sink.
//! - Every read of a block is bounds-checked against the block: an entry whose
//!   offsets leave the block ends the walk of the block, and it and every entry
//!   the block still announced are counted as errors (never skipped silently,
//!   never read out of bounds).
//! - A VLAN tag the kernel took out of a frame is put back (see the parent
//!   module), in the caller's scratch buffer: no allocation per frame.
//! - On a [`Framing::Cooked`] ring (a `SOCK_DGRAM` socket: the entry holds
//!   the network layer) a frame is delivered in its Ethernet form, built in
//!   the same scratch buffer: both MACs zero, the EtherType the kernel gave
//!   in the entry's `sockaddr_ll`, then the captured bytes; its `wire_len`
//!   stays the kernel's `tp_len` (the network-layer length), as a raw IP
//!   capture file's does. An entry too short to hold its `sockaddr_ll` is
//!   counted as an error, like an entry whose offsets leave the block.
//! - Every frame carries its direction on the interface from the entry's
//!   `sockaddr_ll.sll_pkttype` (one byte read per frame): `PACKET_OUTGOING`
//!   is [`LinkDir::Outbound`] (the host sent it on the interface);
//!   `PACKET_HOST`, `PACKET_BROADCAST`, `PACKET_MULTICAST` and
//!   `PACKET_OTHERHOST` are [`LinkDir::Inbound`] (the interface received
//!   it); any other value (`PACKET_LOOPBACK`, which the kernel does not hand
//!   to a ring; `PACKET_USER`/`PACKET_KERNEL` of netlink monitors, which the
//!   station does not read), and an entry whose frame starts before the end
//!   of its `sockaddr_ll`, is [`LinkDir::Unknown`].
//!
//! Not guaranteed: that the counts and offsets the kernel wrote are sensible;
//! a block that lies is counted, not trusted.

use super::sys;
use crate::source::{Frame, LinkDir};

/// Ring layout offsets (bytes) of the kernel's `if_packet.h` structures, as in
/// smoltcp's `mod field`; a test checks them against the `libc` definitions.
pub(super) mod field {
    /// `tpacket_block_desc.hdr.bh1.num_pkts` (u32).
    pub const NUM_PKTS: usize = 12;
    /// `tpacket_block_desc.hdr.bh1.offset_to_first_pkt` (u32).
    pub const FIRST_PKT: usize = 16;
    /// Size of `tpacket_block_desc` up to the end of its header.
    pub const BLOCK_HDR_LEN: usize = 48;
    /// `tpacket3_hdr.tp_next_offset` (u32).
    pub const NEXT_OFFSET: usize = 0;
    /// `tpacket3_hdr.tp_sec` (u32).
    pub const SEC: usize = 4;
    /// `tpacket3_hdr.tp_nsec` (u32).
    pub const NSEC: usize = 8;
    /// `tpacket3_hdr.tp_snaplen` (u32).
    pub const SNAPLEN: usize = 12;
    /// `tpacket3_hdr.tp_len` (u32).
    pub const LEN: usize = 16;
    /// `tpacket3_hdr.tp_status` (u32).
    pub const STATUS: usize = 20;
    /// `tpacket3_hdr.tp_mac` (u16): offset of the frame from the entry.
    pub const MAC: usize = 24;
    /// `tpacket3_hdr.hv1.tp_vlan_tci` (u32).
    pub const VLAN_TCI: usize = 32;
    /// `tpacket3_hdr.hv1.tp_vlan_tpid` (u16).
    pub const VLAN_TPID: usize = 36;
    /// Size of `tpacket3_hdr`.
    pub const PKT_HDR_LEN: usize = 48;
    /// `sockaddr_ll.sll_protocol` (u16, network byte order) of the
    /// `sockaddr_ll` the kernel puts after the header, at
    /// `TPACKET_ALIGN(sizeof(tpacket3_hdr))` = 48 from the entry.
    pub const SLL_PROTOCOL: usize = 48 + 2;
    /// `sockaddr_ll.sll_pkttype` (u8) of that `sockaddr_ll`: the frame's
    /// direction (`PACKET_OUTGOING`, or how it was received).
    pub const SLL_PKTTYPE: usize = 48 + 10;
    /// End of that `sockaddr_ll` (20 bytes): where a frame may start at the earliest.
    pub const SLL_END: usize = 48 + 20;
}

/// What an entry of the ring holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::source) enum Framing {
    /// `SOCK_RAW` on an Ethernet-framed interface (`ARPHRD_ETHER`, and
    /// `ARPHRD_LOOPBACK`, whose header has zero MACs): the frame as it is on
    /// the interface, delivered as it is.
    Ethernet,
    /// `SOCK_DGRAM` on an interface without an Ethernet header (tun,
    /// WireGuard, PPP, IP tunnels): the network layer, its protocol in the
    /// entry's `sockaddr_ll`; delivered in Ethernet form.
    Cooked,
}

/// `tp_status` bits (linux/if_packet.h).
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// Where the walk of a user-owned block stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cursor {
    /// Entries not yet delivered.
    pub left: u32,
    /// Offset of the next entry from the block start.
    pub offset: usize,
}

impl Cursor {
    /// Starts the walk of a block from its header (nothing to walk when the
    /// block is shorter than its header).
    pub(super) fn start(block: &[u8]) -> Self {
        match block.get(..field::BLOCK_HDR_LEN) {
            Some(h) => Cursor { left: u32_at(h, field::NUM_PKTS), offset: u32_at(h, field::FIRST_PKT) as usize },
            None => Cursor { left: 0, offset: 0 },
        }
    }
}

/// The blocks of one socket's ring and where their walk stands.
#[derive(Debug)]
pub(super) struct BlockRing {
    map: sys::RingMap,
    block_count: usize,
    framing: Framing,
    /// Next block to look at.
    next_block: usize,
    /// The block being walked (`next_block`), once its status said user.
    cursor: Option<Cursor>,
}

impl BlockRing {
    /// The ring over `map`, walked from its first block; its entries are `framing`.
    pub(super) fn new(map: sys::RingMap, block_count: usize, framing: Framing) -> Self {
        Self { map, block_count, framing, next_block: 0, cursor: None }
    }

    /// Delivers up to `quota` frames from the current block, or from the next
    /// one if it is ready; hands a finished block back. Returns the frames delivered.
    pub(super) fn take(
        &mut self,
        quota: usize,
        source: u8,
        scratch: &mut [u8],
        errors: &mut u64,
        sink: &mut dyn FnMut(&Frame<'_>),
    ) -> usize {
        let b = self.next_block;
        let Some(block) = self.map.user_block(b) else { return 0 };
        let mut cursor = self.cursor.unwrap_or_else(|| Cursor::start(block.bytes()));
        let n = walk_block(block.bytes(), self.framing, &mut cursor, quota, source, scratch, errors, sink);
        if cursor.left == 0 {
            // Every loan of the block's bytes ended with the sink calls: give it back.
            block.release();
            self.cursor = None;
            self.next_block = if b + 1 == self.block_count { 0 } else { b + 1 };
        } else {
            self.cursor = Some(cursor);
        }
        n
    }
}

/// A frame's direction from its `sll_pkttype` (see the module docs).
#[inline]
fn link_dir(pkttype: u8) -> LinkDir {
    match pkttype {
        libc::PACKET_OUTGOING => LinkDir::Outbound,
        libc::PACKET_HOST | libc::PACKET_BROADCAST | libc::PACKET_MULTICAST | libc::PACKET_OTHERHOST => {
            LinkDir::Inbound
        }
        _ => LinkDir::Unknown,
    }
}

/// The native-endian u32 at `off` of a header slice.
#[inline]
fn u32_at(h: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes([h[off], h[off + 1], h[off + 2], h[off + 3]])
}

/// The native-endian u16 at `off` of a header slice.
#[inline]
fn u16_at(h: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([h[off], h[off + 1]])
}

/// Delivers up to `quota` entries of `block` (each holding `framing`) from
/// `cursor` on, advancing it. An entry whose offsets leave the block ends the
/// walk of the block: it and every entry the block still announced are
/// counted in `errors` (`cursor.left` becomes 0), so none is skipped silently.
#[allow(clippy::too_many_arguments)]
pub(super) fn walk_block(
    block: &[u8],
    framing: Framing,
    cursor: &mut Cursor,
    quota: usize,
    source: u8,
    scratch: &mut [u8],
    errors: &mut u64,
    sink: &mut dyn FnMut(&Frame<'_>),
) -> usize {
    let mut n = 0;
    while cursor.left > 0 && n < quota {
        let off = cursor.offset;
        let header = off.checked_add(field::PKT_HDR_LEN).and_then(|end| block.get(off..end));
        let Some(h) = header.filter(|_| off >= field::BLOCK_HDR_LEN) else {
            *errors += u64::from(cursor.left);
            cursor.left = 0;
            break;
        };
        let next = u32_at(h, field::NEXT_OFFSET);
        let sec = u32_at(h, field::SEC);
        let nsec = u32_at(h, field::NSEC);
        let snaplen = u32_at(h, field::SNAPLEN) as usize;
        let len = u32_at(h, field::LEN);
        let status = u32_at(h, field::STATUS);
        let mac = usize::from(u16_at(h, field::MAC));
        let tci = u32_at(h, field::VLAN_TCI);
        let tpid = u16_at(h, field::VLAN_TPID);
        let start = off + mac;
        let data = start.checked_add(snaplen).and_then(|end| block.get(start..end));
        let min_mac = if framing == Framing::Cooked { field::SLL_END } else { field::PKT_HDR_LEN };
        let Some(data) = data.filter(|_| mac >= min_mac) else {
            // This entry and every one after it in the block are unreadable: count them all.
            *errors += u64::from(cursor.left);
            cursor.left = 0;
            break;
        };
        let ts_ns = u64::from(sec) * 1_000_000_000 + u64::from(nsec);
        // The sockaddr_ll lies between the header and the frame when mac >= SLL_END (the kernel's
        // layout always; a smaller tp_mac on an Ethernet ring would make these bytes the frame's).
        let dir = match block.get(off + field::SLL_PKTTYPE) {
            Some(&t) if mac >= field::SLL_END => link_dir(t),
            _ => LinkDir::Unknown,
        };
        let frame = match framing {
            Framing::Cooked => {
                // The sockaddr_ll lies between the header and the frame (mac >= SLL_END, checked above).
                let protocol = block
                    .get(off + field::SLL_PROTOCOL..off + field::SLL_PROTOCOL + 2)
                    .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                let n = ethernet_form(data, protocol, scratch);
                Frame { ts_ns, wire_len: len, data: &scratch[..n], source, dir }
            }
            Framing::Ethernet => {
                // Same rule as libpcap: a non-zero TCI or the VALID bit (older kernels do not set it).
                let tagged = status & TP_STATUS_VLAN_VALID != 0 || tci != 0;
                let tagged_frame = if tagged {
                    let tpid =
                        if status & TP_STATUS_VLAN_TPID_VALID != 0 { tpid } else { wire::ethernet::EtherType::VLAN };
                    with_vlan_tag(data, tpid, tci as u16, scratch)
                } else {
                    None
                };
                match tagged_frame {
                    Some(d) => Frame { ts_ns, wire_len: len.saturating_add(4), data: d, source, dir },
                    None => Frame { ts_ns, wire_len: len, data, source, dir },
                }
            }
        };
        sink(&frame);
        n += 1;
        cursor.left -= 1;
        if cursor.left > 0 {
            if next == 0 {
                // The block says more entries follow but gives no way to them.
                *errors += u64::from(cursor.left);
                cursor.left = 0;
                break;
            }
            cursor.offset = off + next as usize;
        }
    }
    n
}

/// The Ethernet form of the network-layer bytes `data` whose protocol is
/// `protocol` (`wire::link::write_ethernet_form`'s, as the pcap source
/// delivers raw IP): both MACs zero, `protocol`, then as much of `data` as
/// `scratch` holds. Returns the bytes written.
fn ethernet_form(data: &[u8], protocol: u16, scratch: &mut [u8]) -> usize {
    let mut header = [0u8; wire::ethernet::HEADER_LEN];
    header[12..].copy_from_slice(&protocol.to_be_bytes());
    let h = header.len().min(scratch.len());
    scratch[..h].copy_from_slice(&header[..h]);
    let n = data.len().min(scratch.len() - h);
    scratch[h..h + n].copy_from_slice(&data[..n]);
    h + n
}

/// `data` with a VLAN tag (`tpid`, `tci`) inserted after the two MAC
/// addresses, built in `scratch`; `None` when the frame is shorter than the
/// MAC addresses or `scratch` is too small.
fn with_vlan_tag<'s>(data: &[u8], tpid: u16, tci: u16, scratch: &'s mut [u8]) -> Option<&'s [u8]> {
    let total = data.len().checked_add(4)?;
    if data.len() < 12 || scratch.len() < total {
        return None;
    }
    scratch[..12].copy_from_slice(&data[..12]);
    scratch[12..14].copy_from_slice(&tpid.to_be_bytes());
    scratch[14..16].copy_from_slice(&tci.to_be_bytes());
    scratch[16..total].copy_from_slice(&data[12..]);
    Some(&scratch[..total])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn field_offsets_match_the_kernel_structs() {
        let bh1 = offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(bh1 + offset_of!(libc::tpacket_hdr_v1, block_status), sys::BLOCK_STATUS);
        assert_eq!(bh1 + offset_of!(libc::tpacket_hdr_v1, num_pkts), field::NUM_PKTS);
        assert_eq!(bh1 + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt), field::FIRST_PKT);
        assert_eq!(std::mem::size_of::<libc::tpacket_block_desc>(), field::BLOCK_HDR_LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_next_offset), field::NEXT_OFFSET);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_sec), field::SEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_nsec), field::NSEC);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), field::SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), field::LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_status), field::STATUS);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), field::MAC);
        let hv1 = offset_of!(libc::tpacket3_hdr, hv1);
        assert_eq!(hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci), field::VLAN_TCI);
        assert_eq!(hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid), field::VLAN_TPID);
        assert_eq!(std::mem::size_of::<libc::tpacket3_hdr>(), field::PKT_HDR_LEN);
        // The sockaddr_ll at TPACKET_ALIGN(sizeof(tpacket3_hdr)) (TPACKET_ALIGNMENT 16).
        let sll_at = (std::mem::size_of::<libc::tpacket3_hdr>() + 15) & !15;
        assert_eq!(sll_at + offset_of!(libc::sockaddr_ll, sll_protocol), field::SLL_PROTOCOL);
        assert_eq!(sll_at + offset_of!(libc::sockaddr_ll, sll_pkttype), field::SLL_PKTTYPE);
        assert_eq!(sll_at + std::mem::size_of::<libc::sockaddr_ll>(), field::SLL_END);
    }

    #[test]
    fn vlan_tag_goes_back_after_the_macs() {
        let frame: Vec<u8> = (0u8..20).collect();
        let mut scratch = [0u8; 64];
        let out = with_vlan_tag(&frame, 0x88a8, 0x2064, &mut scratch).expect("fits");
        assert_eq!(out.len(), 24);
        assert_eq!(&out[..12], &frame[..12]);
        assert_eq!(&out[12..16], &[0x88, 0xa8, 0x20, 0x64]);
        assert_eq!(&out[16..], &frame[12..]);
        assert!(with_vlan_tag(&frame[..11], 0x8100, 1, &mut scratch).is_none());
        assert!(with_vlan_tag(&frame, 0x8100, 1, &mut scratch[..23]).is_none());
    }

    /// A test entry: (ts_sec, ts_nsec, tp_status, vlan tci, vlan tpid, frame bytes).
    type Entry = (u32, u32, u32, u32, u16, Vec<u8>);

    /// A block laid out as the kernel writes one.
    struct FakeBlock {
        bytes: Vec<u8>,
    }

    impl FakeBlock {
        fn new(size: usize, entries: &[Entry]) -> Self {
            let mut b = vec![0u8; size];
            let put32 = |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
            put32(&mut b, sys::BLOCK_STATUS, sys::TP_STATUS_USER);
            put32(&mut b, field::NUM_PKTS, entries.len() as u32);
            put32(&mut b, field::FIRST_PKT, 64);
            let mut off = 64;
            for (i, (sec, nsec, status, tci, tpid, data)) in entries.iter().enumerate() {
                let mac = 82; // as the kernel: header + sockaddr_ll, aligned, + 2 for IP alignment
                let len = (mac + data.len() + 15) & !15;
                let next = if i + 1 == entries.len() { 0 } else { len as u32 };
                put32(&mut b, off + field::NEXT_OFFSET, next);
                put32(&mut b, off + field::SEC, *sec);
                put32(&mut b, off + field::NSEC, *nsec);
                put32(&mut b, off + field::SNAPLEN, data.len() as u32);
                put32(&mut b, off + field::LEN, data.len() as u32);
                put32(&mut b, off + field::STATUS, *status);
                b[off + field::MAC..off + field::MAC + 2].copy_from_slice(&(mac as u16).to_ne_bytes());
                put32(&mut b, off + field::VLAN_TCI, *tci);
                b[off + field::VLAN_TPID..off + field::VLAN_TPID + 2].copy_from_slice(&tpid.to_ne_bytes());
                b[off + mac..off + mac + data.len()].copy_from_slice(data);
                off += len;
            }
            Self { bytes: b }
        }

        fn walk(&self, quota: usize, cursor: &mut Cursor, errors: &mut u64) -> Vec<(u64, u32, Vec<u8>)> {
            self.walk_framed(Framing::Ethernet, quota, cursor, errors)
        }

        fn walk_framed(
            &self,
            framing: Framing,
            quota: usize,
            cursor: &mut Cursor,
            errors: &mut u64,
        ) -> Vec<(u64, u32, Vec<u8>)> {
            let mut scratch = vec![0u8; self.bytes.len() + 18];
            let mut got = Vec::new();
            walk_block(&self.bytes, framing, cursor, quota, 3, &mut scratch, errors, &mut |f| {
                assert_eq!(f.source, 3);
                got.push((f.ts_ns, f.wire_len, f.data.to_vec()));
            });
            got
        }

        fn cursor(&self) -> Cursor {
            Cursor::start(&self.bytes)
        }
    }

    #[test]
    fn walk_delivers_entries_with_timestamps_and_vlan_tags_put_back() {
        let plain: Vec<u8> = (0..60).map(|i| i as u8).collect();
        let tagged: Vec<u8> = (0..100).map(|i| (i * 3) as u8).collect();
        let entries = vec![
            (10, 5, 0, 0, 0, plain.clone()),
            (11, 6, TP_STATUS_VLAN_VALID, 0x0064, 0, tagged.clone()),
            (12, 7, TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID, 0x00c8, 0x88a8, tagged.clone()),
        ];
        let block = FakeBlock::new(4096, &entries);
        let mut cursor = block.cursor();
        assert_eq!(cursor.left, 3);
        let mut errors = 0;
        // A quota of 2 stops the walk in the middle; the rest comes next time.
        let first = block.walk(2, &mut cursor, &mut errors);
        assert_eq!(first.len(), 2);
        assert_eq!(cursor.left, 1);
        let rest = block.walk(10, &mut cursor, &mut errors);
        assert_eq!((rest.len(), cursor.left, errors), (1, 0, 0));
        let all: Vec<_> = first.into_iter().chain(rest).collect();
        assert_eq!(all[0], (10_000_000_005, 60, plain));
        assert_eq!(all[1].0, 11_000_000_006);
        assert_eq!(all[1].1, 104);
        assert_eq!(&all[1].2[12..16], &[0x81, 0x00, 0x00, 0x64]);
        assert_eq!(&all[1].2[16..], &tagged[12..]);
        assert_eq!(all[2].1, 104);
        assert_eq!(&all[2].2[12..16], &[0x88, 0xa8, 0x00, 0xc8]);
    }

    #[test]
    fn a_cooked_entry_is_delivered_in_ethernet_form_with_the_kernels_protocol_and_length() {
        let v4: Vec<u8> = [0x45u8, 0, 0, 28].iter().copied().chain((0..24).map(|i| i as u8)).collect();
        let v6: Vec<u8> = [0x60u8, 0, 0, 0].iter().copied().chain((0..36).map(|i| i as u8)).collect();
        let mut block = FakeBlock::new(4096, &[(1, 2, 0, 0, 0, v4.clone()), (3, 4, 0, 0, 0, v6.clone())]);
        // The sockaddr_ll's protocol, as the kernel writes it for a SOCK_DGRAM ring.
        let second = 64 + ((82 + v4.len() + 15) & !15);
        for (off, proto) in [(64, 0x0800u16), (second, 0x86dd)] {
            block.bytes[off + field::SLL_PROTOCOL..off + field::SLL_PROTOCOL + 2].copy_from_slice(&proto.to_be_bytes());
        }
        let mut cursor = block.cursor();
        let mut errors = 0;
        let got = block.walk_framed(Framing::Cooked, 10, &mut cursor, &mut errors);
        assert_eq!(errors, 0);
        let mut want_v4 = vec![0u8; 12];
        want_v4.extend_from_slice(&[0x08, 0x00]);
        want_v4.extend_from_slice(&v4);
        let mut want_v6 = vec![0u8; 12];
        want_v6.extend_from_slice(&[0x86, 0xdd]);
        want_v6.extend_from_slice(&v6);
        // The wire length is the network layer's, as the kernel gave it (tp_len).
        assert_eq!(got, vec![(1_000_000_002, 28, want_v4), (3_000_000_004, 40, want_v6)]);
    }

    #[test]
    fn a_cooked_entry_without_room_for_its_sockaddr_ll_is_counted_not_read() {
        let mut block = FakeBlock::new(4096, &[(1, 0, 0, 0, 0, vec![0x45; 20])]);
        // tp_mac of 60: past the header but inside where the sockaddr_ll must be.
        block.bytes[64 + field::MAC..64 + field::MAC + 2].copy_from_slice(&60u16.to_ne_bytes());
        let mut cursor = block.cursor();
        let mut errors = 0;
        let got = block.walk_framed(Framing::Cooked, 10, &mut cursor, &mut errors);
        assert_eq!((got.len(), cursor.left, errors), (0, 0, 1));
        // The same entry on an Ethernet ring is readable (mac >= the header).
        let mut cursor = block.cursor();
        assert_eq!(block.walk(10, &mut cursor, &mut errors).len(), 1);
    }

    #[test]
    fn each_frame_carries_its_direction_from_the_entrys_pkttype() {
        // linux/if_packet.h numbers, independent of the libc constants the code uses.
        let kinds: Vec<(u8, LinkDir)> = vec![
            (0, LinkDir::Inbound),
            (1, LinkDir::Inbound),
            (2, LinkDir::Inbound),
            (3, LinkDir::Inbound),
            (4, LinkDir::Outbound),
            (5, LinkDir::Unknown),
            (7, LinkDir::Unknown),
        ];
        let entries: Vec<Entry> = kinds.iter().map(|_| (1, 0, 0, 0, 0, vec![0x45; 40])).collect();
        let mut block = FakeBlock::new(4096, &entries);
        let step = (82 + 40 + 15) & !15;
        for (i, (pkttype, _)) in kinds.iter().enumerate() {
            block.bytes[64 + i * step + field::SLL_PKTTYPE] = *pkttype;
        }
        for framing in [Framing::Ethernet, Framing::Cooked] {
            let mut cursor = block.cursor();
            let (mut errors, mut got) = (0, Vec::new());
            let mut scratch = vec![0u8; 4096];
            walk_block(&block.bytes, framing, &mut cursor, 64, 0, &mut scratch, &mut errors, &mut |f| got.push(f.dir));
            let want: Vec<LinkDir> = kinds.iter().map(|k| k.1).collect();
            assert_eq!((got, errors), (want, 0), "{framing:?}");
        }
        // A frame that starts inside where the sockaddr_ll would be (readable on an
        // Ethernet ring) has no pkttype to read: unknown, not its own bytes taken for one.
        let mut block = FakeBlock::new(4096, &[(1, 0, 0, 0, 0, vec![0x45; 40])]);
        block.bytes[64 + field::MAC..64 + field::MAC + 2].copy_from_slice(&50u16.to_ne_bytes());
        block.bytes[64 + field::SLL_PKTTYPE] = 4;
        let mut cursor = block.cursor();
        let (mut errors, mut got) = (0, Vec::new());
        let mut scratch = vec![0u8; 4096];
        walk_block(&block.bytes, Framing::Ethernet, &mut cursor, 8, 0, &mut scratch, &mut errors, &mut |f| {
            got.push(f.dir)
        });
        assert_eq!((got, errors), (vec![LinkDir::Unknown], 0));
    }

    #[test]
    fn walk_never_reads_outside_the_block() {
        let data = vec![0xabu8; 200];
        let mut block = FakeBlock::new(4096, &[(1, 0, 0, 0, 0, data.clone()), (2, 0, 0, 0, 0, data)]);
        // The second entry claims a snap length past the end of the block.
        let second = 64 + ((82 + 200 + 15) & !15);
        block.bytes[second + field::SNAPLEN..second + field::SNAPLEN + 4].copy_from_slice(&5000u32.to_ne_bytes());
        let mut cursor = block.cursor();
        let mut errors = 0;
        let got = block.walk(10, &mut cursor, &mut errors);
        // The second entry (the last of the block) is counted, never skipped silently.
        assert_eq!((got.len(), cursor.left, errors), (1, 0, 1));
        // A first-entry offset outside the block: both entries it announced are counted.
        let mut cursor = Cursor { left: 2, offset: 4090 };
        let got = block.walk(10, &mut cursor, &mut errors);
        assert_eq!((got.len(), cursor.left, errors), (0, 0, 3));
    }

    #[test]
    fn a_block_shorter_than_its_header_has_nothing_to_walk() {
        assert_eq!(Cursor::start(&[0u8; field::BLOCK_HDR_LEN - 1]), Cursor { left: 0, offset: 0 });
    }
}

//! The packet slot: what the balancer writes into a packet queue slot and a
//! detector worker reads. A fixed 16-byte [`PacketMeta`] then the frame bytes.
//!
//! Guarantees: `PacketMeta` is `#[repr(C)]` plain old data; `cap_len` never
//! exceeds the bytes that follow it in the slot; `wire_len` is the frame's
//! length on the wire even when the slot holds fewer bytes (snap length).
//! `flags` bits 1-2 carry the frame's direction on its capture interface
//! ([`LinkDir`]), both clear when the source does not know it: a slot
//! written before those bits existed reads as "unknown", and a reader that
//! predates them ignores them, so the queue layout
//! (`shmq::QUEUE_LAYOUT_VERSION`, which versions the queue's header and slot
//! framing, not this metadata) did not change with them.
//!
//! Not guaranteed: that every source knows the direction. AF_PACKET does
//! (the kernel's `sll_pkttype`); pcap files, `sim:` and PF_RING leave it
//! unknown.

use bytemuck::{Pod, Zeroable};

/// Size of [`PacketMeta`] in bytes.
pub const PACKET_META_SIZE: usize = 16;

/// Bytes of a packet-queue slot that are not frame: the queue's 8-byte length
/// word and the [`PacketMeta`]. Frame room = `CJ_SLOT_SIZE` - this.
pub const SLOT_OVERHEAD: u32 = 8 + PACKET_META_SIZE as u32;

/// `CJ_SLOT_SIZE=auto` without flow divert: a snap length. Its 232 bytes of
/// frame hold the headers the detector reads in common traffic (Ethernet
/// with two VLAN tags, IPv6 with a few extension headers, TCP with options,
/// and a VXLAN or Geneve tunnel's inner Ethernet, IP and transport headers),
/// and the lengths it counts come from the headers and `wire_len`, so cutting
/// the payload changes no count. A longer header chain (long Geneve options,
/// long IPv6 extension chains, a Jumbo Payload option past 232 bytes) is read
/// as far as captured, as with any capture's snap length: a larger
/// `CJ_SLOT_SIZE` reads it whole. An eighth of the 2048-byte slot: the
/// default packet queue is 16 MiB instead of 128 MiB, and the balancer copies
/// at most 232 bytes of a frame.
pub const SNAP_SLOT_SIZE: u32 = 256;

/// `CJ_SLOT_SIZE=auto` with flow divert (`CJ_TUN=yes`): whole frames, as the
/// divert writes the packets it selects to a tun device.
pub const DIVERT_SLOT_SIZE: u32 = 2048;

/// The smallest `CJ_SLOT_SIZE` accepted with flow divert: a frame of a
/// 1500-byte IP packet with Ethernet and two VLAN tags (1522 bytes) fits.
pub const DIVERT_MIN_SLOT_SIZE: u32 = (1522 + SLOT_OVERHEAD).div_ceil(8) * 8;

/// `flags` bit: the frame was cut to fit the slot (`cap_len < wire_len`).
pub const PKT_FLAG_TRUNCATED: u8 = 1;
/// `flags` bits of the frame's direction on its capture interface ([`LinkDir`]).
pub const PKT_FLAG_DIR_MASK: u8 = 0b110;
/// `flags` bit: the capture interface received the frame ([`LinkDir::Inbound`]).
pub const PKT_FLAG_INBOUND: u8 = 0b010;
/// `flags` bit: the capturing host sent the frame on the interface ([`LinkDir::Outbound`]).
pub const PKT_FLAG_OUTBOUND: u8 = 0b100;

/// A frame's direction on the interface it was captured on, as the capture
/// layer reports it; the two bits mean what pcapng's `epb_flags` bits 0-1 do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LinkDir {
    /// The source does not say (pcap files, `sim:`, PF_RING), or both bits
    /// are set (never written).
    #[default]
    Unknown = 0,
    /// The interface received it (AF_PACKET: `PACKET_HOST`,
    /// `PACKET_BROADCAST`, `PACKET_MULTICAST`, `PACKET_OTHERHOST`).
    Inbound = PKT_FLAG_INBOUND,
    /// The capturing host sent it on the interface (AF_PACKET: `PACKET_OUTGOING`).
    Outbound = PKT_FLAG_OUTBOUND,
}

impl LinkDir {
    /// Its `flags` bits.
    #[inline]
    pub const fn flags(self) -> u8 {
        self as u8
    }

    /// The direction `flags` carry.
    #[inline]
    pub const fn of_flags(flags: u8) -> Self {
        match flags & PKT_FLAG_DIR_MASK {
            PKT_FLAG_INBOUND => LinkDir::Inbound,
            PKT_FLAG_OUTBOUND => LinkDir::Outbound,
            _ => LinkDir::Unknown,
        }
    }
}

/// Metadata in front of every frame in a packet queue slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PacketMeta {
    /// Capture timestamp, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the frame on the wire.
    pub wire_len: u32,
    /// Bytes of the frame that follow in the slot.
    pub cap_len: u16,
    /// Index of the capture source within the balancer's source list (for `eth1,eth2`).
    pub source: u8,
    /// `PKT_FLAG_*` bits.
    pub flags: u8,
}

impl PacketMeta {
    /// The frame's direction on its capture interface (`flags` bits 1-2).
    #[inline]
    pub const fn dir(&self) -> LinkDir {
        LinkDir::of_flags(self.flags)
    }
}

const _: () = assert!(core::mem::size_of::<PacketMeta>() == PACKET_META_SIZE);
const _: () = assert!(PKT_FLAG_DIR_MASK & PKT_FLAG_TRUNCATED == 0);
const _: () = assert!(DIVERT_SLOT_SIZE >= DIVERT_MIN_SLOT_SIZE && DIVERT_MIN_SLOT_SIZE.is_multiple_of(8));

/// Writes `meta` and as much of `frame` as fits into `slot`; returns the
/// number of slot bytes used. Sets `cap_len` and the truncated flag.
pub fn write_packet(slot: &mut [u8], mut meta: PacketMeta, frame: &[u8]) -> usize {
    let room = frame_room(slot.len());
    let cap = frame.len().min(room);
    meta.cap_len = cap as u16;
    if cap < frame.len() {
        meta.flags |= PKT_FLAG_TRUNCATED;
    }
    if slot.len() < PACKET_META_SIZE {
        return 0;
    }
    slot[..PACKET_META_SIZE].copy_from_slice(bytemuck::bytes_of(&meta));
    slot[PACKET_META_SIZE..PACKET_META_SIZE + cap].copy_from_slice(&frame[..cap]);
    PACKET_META_SIZE + cap
}

/// Bytes of a frame that a slot whose payload is `slot_payload` bytes (a
/// queue slot less its length word) holds: what [`write_packet`] copies at most.
pub fn frame_room(slot_payload: usize) -> usize {
    slot_payload.saturating_sub(PACKET_META_SIZE).min(u16::MAX as usize)
}

/// Reads the metadata and the frame bytes from a slot; `None` when the slot
/// is shorter than its metadata says (a corrupt slot, never trusted).
pub fn read_packet(slot: &[u8]) -> Option<(PacketMeta, &[u8])> {
    let meta: PacketMeta = bytemuck::pod_read_unaligned(slot.get(..PACKET_META_SIZE)?);
    let frame = slot.get(PACKET_META_SIZE..PACKET_META_SIZE + usize::from(meta.cap_len))?;
    Some((meta, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slot_sizes_leave_the_frame_room_they_promise() {
        assert_eq!(SNAP_SLOT_SIZE - SLOT_OVERHEAD, 232);
        // 1552 - 24 = 1528 >= 1522 (14 + 2 x 4 + 1500); 1544 would leave 1520.
        assert_eq!(DIVERT_MIN_SLOT_SIZE, 1552);
        assert_eq!(DIVERT_SLOT_SIZE, 2048);
    }

    #[test]
    fn write_then_read_truncates_to_slot() {
        let mut slot = [0u8; 40];
        let frame: Vec<u8> = (0..100u8).collect();
        let used = write_packet(&mut slot, PacketMeta { ts_ns: 5, wire_len: 100, ..Default::default() }, &frame);
        assert_eq!(used, 40);
        let (meta, bytes) = read_packet(&slot).unwrap();
        assert_eq!(meta.cap_len, 24);
        assert_eq!(meta.wire_len, 100);
        assert_eq!(meta.flags & PKT_FLAG_TRUNCATED, PKT_FLAG_TRUNCATED);
        assert_eq!(bytes, &frame[..24]);
    }

    #[test]
    fn the_direction_rides_in_the_flags_beside_the_truncated_bit() {
        for dir in [LinkDir::Unknown, LinkDir::Inbound, LinkDir::Outbound] {
            let mut slot = [0u8; 40];
            let meta = PacketMeta { wire_len: 100, flags: dir.flags(), ..Default::default() };
            write_packet(&mut slot, meta, &[7u8; 100]);
            let (read, _) = read_packet(&slot).unwrap();
            assert_eq!((read.dir(), read.flags & PKT_FLAG_TRUNCATED), (dir, PKT_FLAG_TRUNCATED));
        }
        // pcapng's epb_flags bits 0-1 (01 inbound, 10 outbound), one place up.
        assert_eq!((LinkDir::Inbound.flags() >> 1, LinkDir::Outbound.flags() >> 1), (0b01, 0b10));
    }

    #[test]
    fn a_slot_without_direction_bits_or_with_both_reads_as_unknown() {
        // As written before the bits existed: only the truncated bit.
        assert_eq!(PacketMeta { flags: PKT_FLAG_TRUNCATED, ..Default::default() }.dir(), LinkDir::Unknown);
        assert_eq!(LinkDir::of_flags(PKT_FLAG_INBOUND | PKT_FLAG_OUTBOUND), LinkDir::Unknown);
        assert_eq!(LinkDir::of_flags(!PKT_FLAG_OUTBOUND), LinkDir::Inbound);
    }

    #[test]
    fn corrupt_slot_is_refused() {
        let mut slot = [0u8; 20];
        let meta = PacketMeta { cap_len: 500, ..Default::default() };
        slot[..16].copy_from_slice(bytemuck::bytes_of(&meta));
        assert!(read_packet(&slot).is_none());
    }
}

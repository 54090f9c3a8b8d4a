//! The packet slot: what the balancer writes into a packet queue slot and a
//! detector worker reads. A fixed 16-byte [`PacketMeta`] then the frame bytes.
//!
//! Guarantees: `PacketMeta` is `#[repr(C)]` plain old data; `cap_len` never
//! exceeds the bytes that follow it in the slot; `wire_len` is the frame's
//! length on the wire even when the slot holds fewer bytes (snap length).

use bytemuck::{Pod, Zeroable};

/// Size of [`PacketMeta`] in bytes.
pub const PACKET_META_SIZE: usize = 16;

/// `flags` bit: the frame was cut to fit the slot (`cap_len < wire_len`).
pub const PKT_FLAG_TRUNCATED: u8 = 1;

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

const _: () = assert!(core::mem::size_of::<PacketMeta>() == PACKET_META_SIZE);

/// Writes `meta` and as much of `frame` as fits into `slot`; returns the
/// number of slot bytes used. Sets `cap_len` and the truncated flag.
pub fn write_packet(slot: &mut [u8], mut meta: PacketMeta, frame: &[u8]) -> usize {
    let room = slot.len().saturating_sub(PACKET_META_SIZE).min(u16::MAX as usize);
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
    fn corrupt_slot_is_refused() {
        let mut slot = [0u8; 20];
        let meta = PacketMeta { cap_len: 500, ..Default::default() };
        slot[..16].copy_from_slice(bytemuck::bytes_of(&meta));
        assert!(read_packet(&slot).is_none());
    }
}

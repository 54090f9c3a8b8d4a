//! IPv4 header view.
//!
//! Guarantees: after [`Packet::check_len`] returns `Ok`, no accessor panics.
//! `check_len` requires the whole header (IHL*4 bytes, options included) to
//! be present and the length fields to be consistent (IHL at least 5, total
//! length at least IHL*4, or 0 with payload bytes present: see below). It
//! deliberately does **not** require the buffer
//! to hold the whole datagram: a capture truncated by a snap length still
//! yields a usable header, and [`Packet::payload`] returns whatever part of
//! the payload is present (never Ethernet padding beyond the total length).
//! The version nibble is not checked here; [`crate::summarize`] rejects
//! version != 4.
//!
//! Accounting: the IP byte count of a packet is its total length field,
//! as pmacct and IPFIX octetDeltaCount count it, whatever was captured.
//!
//! Total length 0 ([`Packet::len_from_frame`]): a packet handed to a capture
//! before segmentation offload (TSO, GSO, BIG TCP: larger than 65535 bytes,
//! or not yet given its length) carries 0; its length is the frame's. Such a
//! header is accepted when at least one byte follows it in the buffer, and
//! [`Packet::payload`] is then everything after the header. Total length 0
//! with nothing after the header, and a total length between 1 and IHL*4 - 1,
//! are malformed. Not guaranteed: trailing bytes after such a packet
//! (Ethernet padding of a frame under 60 bytes, an FCS the capture kept but
//! did not declare) count as part of it.
//!
//! Fragments: a packet is a fragment when MF is set or the fragment offset is
//! non-zero. The first fragment (offset 0, MF) carries the transport header
//! and its ports are parsed. Later fragments carry no transport header: their
//! summary has ports 0 (src, dst, proto, 0, 0) and the datagram's
//! [`Packet::ident`], by which the `detector` counts them in their datagram's
//! flow (with the first fragment's ports).
//! Options are skipped, never interpreted; the checksum is not verified.
use crate::{be16, be32, Error, Result};

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of the IPv4 header without options.
pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;

/// A read-only view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks it ([`Packet::check_len`]).
    ///
    /// # Errors
    /// As [`Packet::check_len`].
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 20 bytes, or fewer than IHL*4
    /// bytes, are present; [`Error::Malformed`] when IHL < 5, the total
    /// length is between 1 and IHL*4 - 1, or it is 0 and no byte follows the
    /// header.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(self.header_len());
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total = usize::from(self.total_len());
        if total != 0 && total < hl {
            return Err(Error::Malformed);
        }
        if len < hl {
            return Err(Error::Truncated);
        }
        if total == 0 && len == hl {
            return Err(Error::Malformed);
        }
        Ok(())
    }

    /// Whether the length is the frame's, not the header's: total length 0
    /// (segmentation offload, BIG TCP).
    #[inline]
    pub fn len_from_frame(&self) -> bool {
        self.total_len() == 0
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version nibble (4 for IPv4).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length field: header plus payload, in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification field.
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't Fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x4000 != 0
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x2000 != 0
    }

    /// Fragment offset in bytes (the field is in 8-byte units).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    /// Whether this packet is a fragment (MF set or non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x3fff != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as carried (never verified).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 4] {
        be32(self.buffer.as_ref(), field::SRC_ADDR.start).to_be_bytes()
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 4] {
        be32(self.buffer.as_ref(), field::DST_ADDR.start).to_be_bytes()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Options bytes (empty when IHL = 5).
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::DST_ADDR.end..usize::from(self.header_len())]
    }

    /// The payload bytes present: from the end of the header to the total
    /// length, cut short where the buffer ends (truncated capture). Ethernet
    /// padding beyond the total length is never included. With total length
    /// 0 ([`Packet::len_from_frame`]), everything after the header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b = self.buffer.as_ref();
        let end = if self.len_from_frame() { b.len() } else { usize::from(self.total_len()).min(b.len()) };
        &b[usize::from(self.header_len())..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 192.168.1.10 -> 93.184.216.34, TCP, DF, total length 60, IHL 5.
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x40, 0x81, 0xc0, 0xa8, 0x01, 0x0a, 0x5d, 0xb8,
        0xd8, 0x22,
    ];

    #[test]
    fn ipv4_golden_fields() {
        let p = Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 60);
        assert_eq!(p.ident(), 0x1c46);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert!(!p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 6);
        assert_eq!(p.checksum(), 0x4081);
        assert_eq!(p.src_addr(), [192, 168, 1, 10]);
        assert_eq!(p.dst_addr(), [93, 184, 216, 34]);
        assert!(p.options().is_empty());
        // Truncated capture: the header is usable, the payload is what is there.
        assert!(p.payload().is_empty());
    }

    #[test]
    fn ipv4_fragment_fields() {
        let mut h = HDR;
        h[6] = 0x20; // MF, offset 0
        h[7] = 0x00;
        let p = Packet::new_checked(&h[..]).unwrap();
        assert!(p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 0);
        h[6] = 0x00; // offset 185 * 8 = 1480
        h[7] = 0xb9;
        let p = Packet::new_checked(&h[..]).unwrap();
        assert!(!p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
    }

    #[test]
    fn ipv4_check_len_rules() {
        assert_eq!(Packet::new_checked(&HDR[..19]).unwrap_err(), Error::Truncated);
        let mut h = HDR;
        h[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&h[..]).unwrap_err(), Error::Malformed);
        let mut h = HDR;
        h[0] = 0x46; // IHL 6 (24 bytes) but 20 present
        assert_eq!(Packet::new_checked(&h[..]).unwrap_err(), Error::Truncated);
        let mut h = HDR;
        h[3] = 19; // total length below the header
        assert_eq!(Packet::new_checked(&h[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn total_length_zero_takes_the_length_of_the_frame() {
        // A TSO packet as captured before segmentation: total length 0.
        let mut b = [0u8; 64];
        b[..20].copy_from_slice(&HDR);
        b[2] = 0;
        b[3] = 0;
        b[20..24].copy_from_slice(&[0x04, 0x00, 0x01, 0xbb]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.len_from_frame());
        assert_eq!(p.payload().len(), 44);
        assert_eq!(&p.payload()[..4], &[0x04, 0x00, 0x01, 0xbb]);
        // Nothing after the header: plainly inconsistent.
        assert_eq!(Packet::new_checked(&b[..20]).unwrap_err(), Error::Malformed);
        // A length below the header stays malformed.
        b[3] = 1;
        assert_eq!(Packet::new_checked(&b[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn ipv4_options_skipped_and_padding_excluded() {
        let mut b = [0u8; 40];
        b[..20].copy_from_slice(&HDR);
        b[0] = 0x46; // 4 bytes of options
        b[3] = 30; // total length 30: 24 header + 6 payload, rest padding
        b[20..24].copy_from_slice(&[0x01, 0x01, 0x01, 0x00]); // NOP NOP NOP EOL
        b[24..30].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6]);
    }
}

//! UDP header view (also fits UDP-Lite, whose length field is a checksum
//! coverage instead).
//!
//! Guarantees: after [`Packet::check_len`] returns `Ok` (the 8-byte header is
//! present), no accessor panics. The length field is reported, not trusted:
//! [`Packet::payload`] is what the buffer holds after the header, up to the
//! length field when that is sane. The checksum is never verified.
use crate::{be16, Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer and checks it.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 8 bytes are present.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 8 bytes are present.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header + payload for UDP; coverage for UDP-Lite).
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    #[inline]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum as carried (never verified).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Payload present: after the header, up to the length field when it is
    /// at least 8, else everything captured; cut where the buffer ends.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b = self.buffer.as_ref();
        let len = usize::from(self.len());
        let end = if len >= HEADER_LEN { len.min(b.len()) } else { b.len() };
        &b[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DNS query 53124 -> 53, length 12 (4 bytes of payload), plus padding.
    const DGRAM: [u8; 14] = [0xcf, 0x84, 0x00, 0x35, 0x00, 0x0c, 0xbe, 0xef, 1, 2, 3, 4, 0, 0];

    #[test]
    fn udp_golden_fields() {
        let p = Packet::new_checked(&DGRAM[..]).unwrap();
        assert_eq!(p.src_port(), 53124);
        assert_eq!(p.dst_port(), 53);
        assert_eq!(p.len(), 12);
        assert!(!p.is_empty());
        assert_eq!(p.checksum(), 0xbeef);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        // Truncated capture: payload is what is there.
        let p = Packet::new_checked(&DGRAM[..10]).unwrap();
        assert_eq!(p.payload(), &[1, 2]);
        assert_eq!(Packet::new_checked(&DGRAM[..7]).unwrap_err(), Error::Truncated);
    }
}

//! ICMP (IPv4, protocol 1) and ICMPv6 (protocol 58) header view.
//!
//! Both share the first four bytes (type, code, checksum), so one view serves
//! both. Guarantees: after [`Packet::check_len`] returns `Ok` (4 bytes
//! present), no accessor panics. Flow keys carry ports 0 for ICMP and ICMPv6,
//! as pmacct does: type and code are available here but are not folded into
//! the key. The checksum is never verified.
use crate::{be16, Error, Result};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
}

/// Length of the common ICMP header (type, code, checksum).
pub const HEADER_LEN: usize = field::REST;

/// ICMPv4 Echo Reply type.
pub const V4_ECHO_REPLY: u8 = 0;
/// ICMPv4 Destination Unreachable type.
pub const V4_DEST_UNREACHABLE: u8 = 3;
/// ICMPv4 Echo Request type.
pub const V4_ECHO_REQUEST: u8 = 8;
/// ICMPv6 Echo Request type.
pub const V6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 Echo Reply type.
pub const V6_ECHO_REPLY: u8 = 129;
/// ICMPv6 Neighbor Solicitation type.
pub const V6_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 Neighbor Advertisement type.
pub const V6_NEIGHBOR_ADVERT: u8 = 136;

/// A read-only view of an ICMP or ICMPv6 message.
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
    /// [`Error::Truncated`] when fewer than 4 bytes are present.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 4 bytes are present.
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

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as carried (never verified).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Everything after the common header (e.g. echo identifier, sequence).
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::REST..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_golden_fields() {
        // Echo request, id 0x1234, seq 1.
        let b = [0x08, 0x00, 0xe5, 0xca, 0x12, 0x34, 0x00, 0x01];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), V4_ECHO_REQUEST);
        assert_eq!(p.msg_code(), 0);
        assert_eq!(p.checksum(), 0xe5ca);
        assert_eq!(p.rest(), &[0x12, 0x34, 0x00, 0x01]);
        assert_eq!(Packet::new_checked(&b[..3]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn icmpv6_golden_fields() {
        let b = [0x87, 0x00, 0x12, 0x34];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), V6_NEIGHBOR_SOLICIT);
        assert!(p.rest().is_empty());
    }
}

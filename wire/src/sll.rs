//! Linux cooked capture header, version 1 (`LINKTYPE_LINUX_SLL`, 113): what
//! `tcpdump -i any` wrote before libpcap 1.10.
//!
//! Guarantees: after [`Header::check_len`] returns `Ok` (the buffer holds the
//! 16-byte header), no accessor panics.
//!
//! Not guaranteed: the protocol field is returned as captured. For the link
//! layers the station meets (Ethernet, tun, WireGuard, PPP, loopback) it is an
//! EtherType; for a few others (`ARPHRD_NETLINK`, 802.2 LLC frames with
//! protocol 0x0004, ...) it is another number, which is never an IP EtherType,
//! so such frames count as non-IP.
use crate::{be16, Error, Result};

mod field {
    use core::ops::Range;
    pub const PACKET_TYPE: usize = 0;
    pub const ARPHRD_TYPE: usize = 2;
    pub const ADDR_LEN: usize = 4;
    pub const ADDR: Range<usize> = 6..14;
    pub const PROTOCOL: usize = 14;
    pub const PAYLOAD: usize = 16;
}

/// Length of the SLL header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of a Linux cooked (v1) header and what follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// Wraps a buffer and checks its length ([`Header::check_len`]).
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 16 bytes.
    pub fn new_checked(buffer: T) -> Result<Header<T>> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 16 bytes.
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

    /// Packet type: 0 to us, 1 broadcast, 2 multicast, 3 to another host, 4 sent by us.
    #[inline]
    pub fn packet_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PACKET_TYPE)
    }

    /// The interface's `ARPHRD_*` type (1 Ethernet, 65534 none, 772 loopback, ...).
    #[inline]
    pub fn arphrd_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ARPHRD_TYPE)
    }

    /// Length of the link-layer source address.
    #[inline]
    pub fn addr_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ADDR_LEN)
    }

    /// The address field (its first [`Header::addr_len`] bytes, at most 8, are meaningful).
    #[inline]
    pub fn addr(&self) -> [u8; 8] {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buffer.as_ref()[field::ADDR]);
        a
    }

    /// The protocol: an EtherType for the link layers the station meets.
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PROTOCOL)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Header<&'a T> {
    /// Everything after the 16-byte header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sent by us (4), ARPHRD_ETHER, 6-byte address, IPv4, then one payload byte.
    const SLL: [u8; 17] =
        [0x00, 0x04, 0x00, 0x01, 0x00, 0x06, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x00, 0x00, 0x08, 0x00, 0x45];

    #[test]
    fn sll_golden_fields() {
        let h = Header::new_checked(&SLL[..]).unwrap();
        assert_eq!(h.packet_type(), 4);
        assert_eq!(h.arphrd_type(), 1);
        assert_eq!(h.addr_len(), 6);
        assert_eq!(h.addr(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0]);
        assert_eq!(h.protocol(), 0x0800);
        assert_eq!(h.payload(), &[0x45]);
    }

    #[test]
    fn a_short_sll_header_is_truncated() {
        assert_eq!(Header::new_checked(&SLL[..15]).unwrap_err(), Error::Truncated);
        assert!(Header::new_checked(&SLL[..16]).unwrap().payload().is_empty());
    }
}

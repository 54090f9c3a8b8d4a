//! Linux cooked capture header, version 2 (`LINKTYPE_LINUX_SLL2`, 276): what
//! `tcpdump -i any` writes since libpcap 1.10.
//!
//! Guarantees: after [`Header::check_len`] returns `Ok` (the buffer holds the
//! 20-byte header), no accessor panics.
//!
//! Not guaranteed: as for [`crate::sll`], the protocol field is an EtherType
//! only for the usual link layers; other values count as non-IP.
use crate::{be16, be32, Error, Result};

mod field {
    use core::ops::Range;
    pub const PROTOCOL: usize = 0;
    pub const IFINDEX: usize = 4;
    pub const ARPHRD_TYPE: usize = 8;
    pub const PACKET_TYPE: usize = 10;
    pub const ADDR_LEN: usize = 11;
    pub const ADDR: Range<usize> = 12..20;
    pub const PAYLOAD: usize = 20;
}

/// Length of the SLL2 header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of a Linux cooked (v2) header and what follows it.
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
    /// [`Error::Truncated`] when the buffer is shorter than 20 bytes.
    pub fn new_checked(buffer: T) -> Result<Header<T>> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 20 bytes.
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

    /// The protocol: an EtherType for the link layers the station meets.
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Index of the interface the packet was captured on.
    #[inline]
    pub fn interface_index(&self) -> u32 {
        be32(self.buffer.as_ref(), field::IFINDEX)
    }

    /// The interface's `ARPHRD_*` type.
    #[inline]
    pub fn arphrd_type(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ARPHRD_TYPE)
    }

    /// Packet type: 0 to us, 1 broadcast, 2 multicast, 3 to another host, 4 sent by us.
    #[inline]
    pub fn packet_type(&self) -> u8 {
        self.buffer.as_ref()[field::PACKET_TYPE]
    }

    /// Length of the link-layer source address.
    #[inline]
    pub fn addr_len(&self) -> u8 {
        self.buffer.as_ref()[field::ADDR_LEN]
    }

    /// The address field (its first [`Header::addr_len`] bytes, at most 8, are meaningful).
    #[inline]
    pub fn addr(&self) -> [u8; 8] {
        let mut a = [0u8; 8];
        a.copy_from_slice(&self.buffer.as_ref()[field::ADDR]);
        a
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Header<&'a T> {
    /// Everything after the 20-byte header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IPv6, interface 3, ARPHRD_NONE (tun), to us, no address, then one payload byte.
    const SLL2: [u8; 21] =
        [0x86, 0xdd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xff, 0xfe, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x60];

    #[test]
    fn sll2_golden_fields() {
        let h = Header::new_checked(&SLL2[..]).unwrap();
        assert_eq!(h.protocol(), 0x86dd);
        assert_eq!(h.interface_index(), 3);
        assert_eq!(h.arphrd_type(), 0xfffe);
        assert_eq!(h.packet_type(), 0);
        assert_eq!(h.addr_len(), 0);
        assert_eq!(h.addr(), [0; 8]);
        assert_eq!(h.payload(), &[0x60]);
    }

    #[test]
    fn a_short_sll2_header_is_truncated() {
        assert_eq!(Header::new_checked(&SLL2[..19]).unwrap_err(), Error::Truncated);
        assert!(Header::new_checked(&SLL2[..20]).unwrap().payload().is_empty());
    }
}

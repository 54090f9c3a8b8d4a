//! BSD loopback headers: `LINKTYPE_NULL` (0) and `LINKTYPE_LOOP` (108), a
//! 4-byte address family before the network-layer packet.
//!
//! Guarantees: after [`Header::check_len`] returns `Ok` (4 bytes present), no
//! accessor panics. [`Header::family_host_order`] reads a `LINKTYPE_NULL`
//! family written in the capturing host's byte order, whichever it was (the
//! order that gives a value below 65536, as libpcap and Wireshark do);
//! [`Header::family_network_order`] reads `LINKTYPE_LOOP`'s big-endian one.
//! [`ethertype_of_family`] maps the IPv4 family (2) and the IPv6 families of
//! Linux (10), Windows (23), NetBSD/OpenBSD (24), FreeBSD (28) and macOS (30)
//! to their EtherTypes.
//!
//! Not guaranteed: other families (OSI, IPX, AppleTalk) are not decoded;
//! they map to EtherType 0 and count as non-IP.
use crate::ethernet::EtherType;
use crate::{be32, Error, Result};

mod field {
    pub const FAMILY: usize = 0;
    pub const PAYLOAD: usize = 4;
}

/// Length of the loopback header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A read-only view of a null/loop header and what follows it.
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
    /// [`Error::Truncated`] when the buffer is shorter than 4 bytes.
    pub fn new_checked(buffer: T) -> Result<Header<T>> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 4 bytes.
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

    /// The family of `LINKTYPE_LOOP` (big-endian).
    #[inline]
    pub fn family_network_order(&self) -> u32 {
        be32(self.buffer.as_ref(), field::FAMILY)
    }

    /// The family of `LINKTYPE_NULL`, written in the capturing host's byte
    /// order: read big-endian, and swapped when that gives 65536 or more.
    #[inline]
    pub fn family_host_order(&self) -> u32 {
        let v = self.family_network_order();
        if v > 0xffff {
            v.swap_bytes()
        } else {
            v
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Header<&'a T> {
    /// Everything after the 4-byte header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

/// The EtherType of an address family: 0x0800 for `AF_INET` (2), 0x86DD for
/// the `AF_INET6` values of the systems that write these captures, 0 otherwise.
#[inline]
pub const fn ethertype_of_family(family: u32) -> u16 {
    match family {
        2 => EtherType::IPV4,
        10 | 23 | 24 | 28 | 30 => EtherType::IPV6,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_family_in_either_byte_order() {
        let le = [0x02u8, 0x00, 0x00, 0x00, 0x45];
        let h = Header::new_checked(&le[..]).unwrap();
        assert_eq!(h.family_host_order(), 2);
        assert_eq!(h.payload(), &[0x45]);
        let be = [0x00u8, 0x00, 0x00, 0x1e];
        assert_eq!(Header::new_checked(&be[..]).unwrap().family_host_order(), 30);
    }

    #[test]
    fn loop_family_is_big_endian() {
        let b = [0x00u8, 0x00, 0x00, 0x18, 0x60];
        let h = Header::new_checked(&b[..]).unwrap();
        assert_eq!(h.family_network_order(), 24);
        assert_eq!(ethertype_of_family(h.family_network_order()), 0x86dd);
    }

    #[test]
    fn families_map_to_ethertypes() {
        assert_eq!(ethertype_of_family(2), 0x0800);
        for v6 in [10, 23, 24, 28, 30] {
            assert_eq!(ethertype_of_family(v6), 0x86dd);
        }
        assert_eq!(ethertype_of_family(7), 0);
    }

    #[test]
    fn a_short_loopback_header_is_truncated() {
        assert_eq!(Header::new_checked(&[2u8, 0, 0][..]).unwrap_err(), Error::Truncated);
    }
}

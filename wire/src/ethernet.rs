//! Ethernet II frame view.
//!
//! Guarantees: after [`Frame::check_len`] returns `Ok` (the buffer holds at
//! least the 14-byte header), no accessor panics. The frame check sequence is
//! not expected (captures strip it) and never verified. 802.3 length-field
//! frames (EtherType < 0x0600) are not decoded: the length is returned as the
//! EtherType and the frame counts as non-IP.
use crate::{be16, Error, Result};

mod field {
    use core::ops::Range;
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: usize = 12;
    pub const PAYLOAD: usize = 14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// EtherType values this crate names; anything else is `Unknown(value)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800.
    Ipv4,
    /// 0x0806.
    Arp,
    /// 0x86DD.
    Ipv6,
    /// 0x8100, IEEE 802.1Q customer tag.
    Vlan,
    /// 0x88A8, IEEE 802.1ad service tag.
    ServiceVlan,
    /// 0x9100, pre-standard QinQ service tag.
    QinQ9100,
    /// Any other value.
    Unknown(u16),
}

impl EtherType {
    /// Raw value of IPv4.
    pub const IPV4: u16 = 0x0800;
    /// Raw value of ARP.
    pub const ARP: u16 = 0x0806;
    /// Raw value of IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// Raw value of the 802.1Q tag.
    pub const VLAN: u16 = 0x8100;
    /// Raw value of the 802.1ad tag.
    pub const SERVICE_VLAN: u16 = 0x88A8;
    /// Raw value of the pre-standard QinQ tag.
    pub const QINQ_9100: u16 = 0x9100;
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            EtherType::IPV4 => EtherType::Ipv4,
            EtherType::ARP => EtherType::Arp,
            EtherType::IPV6 => EtherType::Ipv6,
            EtherType::VLAN => EtherType::Vlan,
            EtherType::SERVICE_VLAN => EtherType::ServiceVlan,
            EtherType::QINQ_9100 => EtherType::QinQ9100,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => EtherType::IPV4,
            EtherType::Arp => EtherType::ARP,
            EtherType::Ipv6 => EtherType::IPV6,
            EtherType::Vlan => EtherType::VLAN,
            EtherType::ServiceVlan => EtherType::SERVICE_VLAN,
            EtherType::QinQ9100 => EtherType::QINQ_9100,
            EtherType::Unknown(v) => v,
        }
    }
}

/// A read-only view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer and checks its length ([`Frame::check_len`]).
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 14 bytes.
    pub fn new_checked(buffer: T) -> Result<Frame<T>> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 14 bytes.
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

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        a
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 6] {
        let mut a = [0u8; 6];
        a.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        a
    }

    /// The EtherType (or TPID of the first VLAN tag), raw.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// Everything after the 14-byte header (VLAN tags included, if any).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn ethernet_golden_fields() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [0xff; 6]);
        assert_eq!(f.src_addr(), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(f.ethertype(), 0x0806);
        assert_eq!(EtherType::from(f.ethertype()), EtherType::Arp);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn ethernet_short_is_truncated() {
        assert_eq!(Frame::new_checked(&FRAME[..13]).unwrap_err(), Error::Truncated);
        assert!(Frame::new_checked(&FRAME[..14]).unwrap().payload().is_empty());
    }

    #[test]
    fn ethertype_roundtrip() {
        for v in [0x0800, 0x0806, 0x86DD, 0x8100, 0x88A8, 0x9100, 0x1234] {
            assert_eq!(u16::from(EtherType::from(v)), v);
        }
        assert_eq!(EtherType::from(0x1234), EtherType::Unknown(0x1234));
    }
}

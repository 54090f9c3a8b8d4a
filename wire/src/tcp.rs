//! TCP header view and flag constants.
//!
//! Guarantees: after [`Packet::check_len`] returns `Ok`, no accessor panics.
//! `check_len` requires the fixed 20-byte header and a data offset that is at
//! least 5 and within the buffer. For truncated captures, which may hold only
//! part of the header, [`peek_flags`] reads the flags byte (offset 13) alone;
//! ports come from [`crate::transport_ports`]. The checksum is never verified.
use crate::{be16, be32, Error, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ_NUM: usize = 4;
    pub const ACK_NUM: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
    pub const END: usize = 20;
}

/// Length of the TCP header without options.
pub const MIN_HEADER_LEN: usize = field::END;

/// TCP flag bits of the flags byte (offset 13).
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field significant.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// The flags byte of a TCP header prefix, if the prefix reaches offset 13.
/// Meant for truncated captures; never panics.
#[inline]
pub fn peek_flags(prefix: &[u8]) -> Option<u8> {
    prefix.get(field::FLAGS).copied()
}

/// A read-only view of a TCP segment.
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
    /// [`Error::Truncated`] when fewer than 20 bytes or fewer than the data
    /// offset are present; [`Error::Malformed`] when the data offset is < 5.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(self.header_len());
        if hl < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if len < hl {
            return Err(Error::Truncated);
        }
        Ok(())
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte (CWR ECE URG ACK PSH RST SYN FIN), see [`flags`].
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// SYN set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// ACK set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// FIN set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// RST set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// Window size.
    #[inline]
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WIN_SIZE)
    }

    /// Checksum as carried (never verified).
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// Options bytes.
    #[inline]
    pub fn options(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::END..usize::from(self.header_len())]
    }

    /// Segment payload present in the buffer.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SYN 51234 -> 443, seq 0x3b9aca00, data offset 6 (MSS 1460 option).
    const SYN: [u8; 24] = [
        0xc8, 0x22, 0x01, 0xbb, 0x3b, 0x9a, 0xca, 0x00, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa, 0xf0, 0x12, 0x34,
        0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];

    #[test]
    fn tcp_golden_fields() {
        let p = Packet::new_checked(&SYN[..]).unwrap();
        assert_eq!(p.src_port(), 51234);
        assert_eq!(p.dst_port(), 443);
        assert_eq!(p.seq_number(), 0x3b9a_ca00);
        assert_eq!(p.ack_number(), 0);
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.flags(), flags::SYN);
        assert!(p.syn() && !p.ack() && !p.fin() && !p.rst());
        assert_eq!(p.window_len(), 64240);
        assert_eq!(p.checksum(), 0x1234);
        assert_eq!(p.urgent_at(), 0);
        assert_eq!(p.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert!(p.payload().is_empty());
    }

    #[test]
    fn tcp_check_len_rules() {
        assert_eq!(Packet::new_checked(&SYN[..19]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&SYN[..23]).unwrap_err(), Error::Truncated);
        let mut s = SYN;
        s[12] = 0x40; // data offset 4
        assert_eq!(Packet::new_checked(&s[..]).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn tcp_peek_flags() {
        assert_eq!(peek_flags(&SYN[..14]), Some(flags::SYN));
        assert_eq!(peek_flags(&SYN[..13]), None);
    }
}

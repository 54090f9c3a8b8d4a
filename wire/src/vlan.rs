//! IEEE 802.1Q / 802.1ad VLAN tag view (the 4 bytes after a tag TPID).
//!
//! Guarantees: after [`Tag::check_len`] returns `Ok` (at least 4 bytes), no
//! accessor panics. The view starts at the TCI, i.e. just after the TPID that
//! announced the tag (the Ethernet EtherType or the previous tag's
//! EtherType). TPIDs recognised as tags: 0x8100 (C-tag), 0x88A8 (S-tag) and
//! 0x9100 (pre-standard S-tag), see [`is_tag_tpid`]. The VLAN id is the low
//! 12 bits of the TCI.
use crate::ethernet::EtherType;
use crate::{be16, Error, Result};

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// Length of one tag (TCI + inner EtherType).
pub const TAG_LEN: usize = field::PAYLOAD;

/// How many stacked tags [`crate::summarize`] walks before giving up; the first
/// two are recorded (outer, inner), the rest are skipped.
pub const MAX_TAGS: usize = 8;

/// Whether an EtherType value announces a VLAN tag.
#[inline]
pub const fn is_tag_tpid(ethertype: u16) -> bool {
    matches!(ethertype, EtherType::VLAN | EtherType::SERVICE_VLAN | EtherType::QINQ_9100)
}

/// A read-only view of one VLAN tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Tag<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Tag<T> {
        Tag { buffer }
    }

    /// Wraps a buffer and checks its length.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 4 bytes.
    pub fn new_checked(buffer: T) -> Result<Tag<T>> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 4 bytes.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < TAG_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Tag control information (PCP, DEI, VID).
    #[inline]
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI)
    }

    /// VLAN id: low 12 bits of the TCI.
    #[inline]
    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// The EtherType after this tag (may announce another tag).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Tag<&'a T> {
    /// Everything after this tag.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_golden_fields() {
        // PCP 5, DEI 1, VID 0xABC; inner EtherType IPv6.
        let b = [0xba, 0xbc, 0x86, 0xdd, 0x60];
        let t = Tag::new_checked(&b[..]).unwrap();
        assert_eq!(t.tci(), 0xbabc);
        assert_eq!(t.vlan_id(), 0x0abc);
        assert_eq!(t.pcp(), 5);
        assert!(t.dei());
        assert_eq!(t.ethertype(), 0x86dd);
        assert_eq!(t.payload(), &[0x60]);
    }

    #[test]
    fn vlan_short_is_truncated() {
        assert_eq!(Tag::new_checked(&[0u8; 3][..]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn tag_tpids() {
        assert!(is_tag_tpid(0x8100));
        assert!(is_tag_tpid(0x88a8));
        assert!(is_tag_tpid(0x9100));
        assert!(!is_tag_tpid(0x0800));
        assert!(!is_tag_tpid(0x9200));
    }
}

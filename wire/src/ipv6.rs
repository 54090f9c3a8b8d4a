//! IPv6 header view, extension header views and the bounded extension walk.
//!
//! Guarantees: after `check_len` returns `Ok`, no accessor of [`Packet`],
//! [`ExtHeader`] or [`FragmentHeader`] panics. [`walk_extensions`] never
//! panics on any input and visits at most [`MAX_EXT_HEADERS`] headers.
//!
//! [`Packet::check_len`] requires only the fixed 40-byte header: a capture cut
//! by a snap length still yields addresses and lengths. [`Packet::payload`]
//! returns the payload bytes present, bounded by the payload length field so
//! that Ethernet padding is never read as headers.
//!
//! Accounting: the IP byte count is payload length + 40. A jumbogram (payload
//! length 0 and a Hop-by-Hop header with a Jumbo Payload option, RFC 2675;
//! Linux BIG TCP sends them) has the length of its frame: see
//! [`Packet::jumbo_payload_len`] and [`crate::summarize`]. Its extension
//! headers are walked over the captured bytes. Not guaranteed: a packet with
//! payload length 0 and no Jumbo Payload option counts 40 bytes whatever
//! follows (a capture cannot tell its bytes from Ethernet padding).
//!
//! The extension walk follows Hop-by-Hop (0), Routing (43), Fragment (44),
//! Destination Options (60) and Authentication Header (51, whose length is
//! (len+2)*4 bytes instead of (len+1)*8). ESP (50) and No Next Header (59) end
//! the walk: they are the upper-layer protocol. A Fragment header with a
//! non-zero offset ends the walk too: later fragments carry no transport
//! header and have ports 0 (src, dst, proto, 0, 0), where proto is the
//! fragment header's next header; the `detector` counts them in their
//! datagram's flow by the Identification ([`UpperLayer::frag_id`]). A
//! Fragment header with offset 0 and M set marks the first fragment; offset 0
//! without M (an atomic fragment, RFC 6946) is not a fragment.
//!
//! When the fixed header is fine but an extension header is cut short (by the
//! capture or by a lying length), or the chain is longer than
//! [`MAX_EXT_HEADERS`], the walk stops: the protocol reported is the last
//! next-header value read from a header that was wholly present (i.e. the
//! type of the header that could not be walked), and there are no ports. The
//! packet stays IPv6 and is counted in that flow rather than lost.
use crate::ip_proto;
use crate::summary::Fragment;
use crate::{be16, be32, Error, Result};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Range<usize> = 8..24;
    pub const DST_ADDR: Range<usize> = 24..40;

    // Extension headers (generic and AH).
    pub const EXT_NEXT_HEADER: usize = 0;
    pub const EXT_LEN: usize = 1;
    // Fragment header.
    pub const FRAG_NEXT_HEADER: usize = 0;
    pub const FRAG_OFF_M: usize = 2;
    pub const FRAG_IDENT: usize = 4;
    pub const FRAG_END: usize = 8;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// Length of the fragment extension header.
pub const FRAGMENT_HEADER_LEN: usize = field::FRAG_END;

/// Most extension headers [`walk_extensions`] visits before it stops.
pub const MAX_EXT_HEADERS: usize = 8;

/// A read-only view of an IPv6 packet.
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
    /// [`Error::Truncated`] when fewer than 40 bytes are present.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Ensures no accessor will panic (the fixed header is present).
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 40 bytes are present.
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

    /// Version nibble (6 for IPv6).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TC_FLOW] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length field (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// The IP length as accounted: payload length + 40.
    #[inline]
    pub fn total_len(&self) -> u32 {
        u32::from(self.payload_len()) + HEADER_LEN as u32
    }

    /// The Jumbo Payload option's length when this is a jumbogram: payload
    /// length 0, next header Hop-by-Hop, and a Hop-by-Hop header (wholly
    /// present) carrying the option (type 0xC2, 4 bytes). `None` otherwise.
    pub fn jumbo_payload_len(&self) -> Option<u32> {
        if self.payload_len() != 0 || self.next_header() != ip_proto::HOPOPT {
            return None;
        }
        let rest = self.buffer.as_ref().get(HEADER_LEN..)?;
        ExtHeader::new_checked(rest, false).ok()?.jumbo_payload_len()
    }

    /// Next header of the fixed header.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        a
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        a
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload bytes present (extension headers included): up to the
    /// payload length, cut short where the buffer ends. For a jumbogram
    /// (payload length 0, next header Hop-by-Hop) everything captured.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let b = self.buffer.as_ref();
        let plen = usize::from(self.payload_len());
        let end = if plen == 0 && self.next_header() == ip_proto::HOPOPT {
            b.len()
        } else {
            (HEADER_LEN + plen).min(b.len())
        };
        &b[HEADER_LEN..end]
    }
}

/// Whether `next_header` names an extension header the walk steps over.
#[inline]
pub const fn is_walked_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_FRAG | ip_proto::IPV6_OPTS | ip_proto::AH
    )
}

/// A generic extension header (Hop-by-Hop, Routing, Destination Options) or
/// an Authentication Header: next header and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader<T: AsRef<[u8]>> {
    buffer: T,
    is_ah: bool,
}

impl<T: AsRef<[u8]>> ExtHeader<T> {
    /// Wraps a buffer without checking its length. `is_ah` selects AH's
    /// length rule ((len+2)*4 bytes) instead of the generic one ((len+1)*8).
    pub const fn new_unchecked(buffer: T, is_ah: bool) -> ExtHeader<T> {
        ExtHeader { buffer, is_ah }
    }

    /// Wraps a buffer and checks it ([`ExtHeader::check_len`]).
    ///
    /// # Errors
    /// As [`ExtHeader::check_len`].
    pub fn new_checked(buffer: T, is_ah: bool) -> Result<ExtHeader<T>> {
        let h = Self::new_unchecked(buffer, is_ah);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures no accessor will panic: the whole header, as long as its length
    /// field says, is present.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 2 bytes, or fewer than
    /// [`ExtHeader::header_len`] bytes, are present.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len <= field::EXT_LEN || len < self.header_len() {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The header after this one.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::EXT_NEXT_HEADER]
    }

    /// The raw length field.
    #[inline]
    pub fn len_field(&self) -> u8 {
        self.buffer.as_ref()[field::EXT_LEN]
    }

    /// The value of a Jumbo Payload option (type 0xC2, length 4) among this
    /// header's options, `None` when there is none. Meaningful for a
    /// Hop-by-Hop header; walks the options in bounds, never panics.
    pub fn jumbo_payload_len(&self) -> Option<u32> {
        const PAD1: u8 = 0;
        const JUMBO: u8 = 0xc2;
        let b = self.buffer.as_ref();
        let end = self.header_len().min(b.len());
        let mut at = field::EXT_LEN + 1;
        while at < end {
            let kind = b[at];
            if kind == PAD1 {
                at += 1;
                continue;
            }
            let len = usize::from(*b.get(at + 1)?);
            if at + 2 + len > end {
                return None;
            }
            if kind == JUMBO && len == 4 {
                return Some(be32(b, at + 2));
            }
            at += 2 + len;
        }
        None
    }

    /// This header's length in bytes.
    #[inline]
    pub fn header_len(&self) -> usize {
        let n = usize::from(self.len_field());
        if self.is_ah {
            (n + 2) * 4
        } else {
            (n + 1) * 8
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ExtHeader<&'a T> {
    /// Everything after this header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

/// The IPv6 Fragment extension header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> FragmentHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> FragmentHeader<T> {
        FragmentHeader { buffer }
    }

    /// Wraps a buffer and checks it.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 8 bytes are present.
    pub fn new_checked(buffer: T) -> Result<FragmentHeader<T>> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Ensures no accessor will panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when fewer than 8 bytes are present.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < FRAGMENT_HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The header after this one.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::FRAG_NEXT_HEADER]
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FRAG_OFF_M) & 0xfff8
    }

    /// More Fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FRAG_OFF_M) & 0x0001 != 0
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u32 {
        be32(self.buffer.as_ref(), field::FRAG_IDENT)
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> FragmentHeader<&'a T> {
    /// Everything after this header.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::FRAG_END..]
    }
}

/// Where the extension walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer<'a> {
    /// The upper-layer protocol (or, when `complete` is false, the type of the
    /// header the walk could not step over).
    pub proto: u8,
    /// Fragment position found in a Fragment header.
    pub fragment: Fragment,
    /// Identification of that Fragment header when `fragment` is First or
    /// Later; 0 otherwise (no Fragment header, or an atomic fragment).
    pub frag_id: u32,
    /// The upper-layer bytes present. Empty for later fragments and when the
    /// walk did not complete.
    pub payload: &'a [u8],
    /// Whether the upper layer was reached. False when an extension header
    /// was cut short or the chain exceeded [`MAX_EXT_HEADERS`].
    pub complete: bool,
}

/// Walks the extension headers starting at `payload` (the bytes after the
/// fixed header) whose type is `next_header`. Never panics; bounded by
/// [`MAX_EXT_HEADERS`].
pub fn walk_extensions(next_header: u8, payload: &[u8]) -> UpperLayer<'_> {
    let mut nh = next_header;
    let mut rest = payload;
    let mut fragment = Fragment::None;
    let mut frag_id = 0;
    let stopped = |nh, fragment, frag_id| UpperLayer { proto: nh, fragment, frag_id, payload: &[], complete: false };
    for _ in 0..MAX_EXT_HEADERS {
        match nh {
            ip_proto::IPV6_FRAG => {
                let Ok(f) = FragmentHeader::new_checked(rest) else {
                    return stopped(nh, fragment, frag_id);
                };
                nh = f.next_header();
                if f.frag_offset() != 0 {
                    let frag_id = f.ident();
                    return UpperLayer { proto: nh, fragment: Fragment::Later, frag_id, payload: &[], complete: true };
                }
                if f.more_frags() {
                    fragment = Fragment::First;
                    frag_id = f.ident();
                }
                rest = f.payload();
            }
            ip_proto::HOPOPT | ip_proto::IPV6_ROUTE | ip_proto::IPV6_OPTS | ip_proto::AH => {
                let Ok(h) = ExtHeader::new_checked(rest, nh == ip_proto::AH) else {
                    return stopped(nh, fragment, frag_id);
                };
                nh = h.next_header();
                let hl = h.header_len();
                rest = rest.get(hl..).unwrap_or(&[]);
            }
            // ESP, No Next Header and every upper-layer protocol end the walk.
            _ => return UpperLayer { proto: nh, fragment, frag_id, payload: rest, complete: true },
        }
    }
    if is_walked_extension(nh) {
        stopped(nh, fragment, frag_id)
    } else {
        UpperLayer { proto: nh, fragment, frag_id, payload: rest, complete: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed header: 2001:db8::1 -> 2001:db8::2, payload 16, next header UDP.
    const HDR: [u8; 40] = [
        0x60, 0x12, 0x34, 0x56, 0x00, 0x10, 0x11, 0x40, // ver/tc/flow, plen, nh, hlim
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, // src
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // dst
    ];

    #[test]
    fn ipv6_golden_fields() {
        let p = Packet::new_checked(&HDR[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x01);
        assert_eq!(p.flow_label(), 0x23456);
        assert_eq!(p.payload_len(), 16);
        assert_eq!(p.total_len(), 56);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr()[15], 1);
        assert_eq!(p.dst_addr()[15], 2);
        assert!(p.payload().is_empty());
        assert_eq!(Packet::new_checked(&HDR[..39]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn ext_header_lengths() {
        let generic = [17u8, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaa];
        let h = ExtHeader::new_checked(&generic[..], false).unwrap();
        assert_eq!(h.next_header(), 17);
        assert_eq!(h.header_len(), 16);
        assert_eq!(h.payload(), &[0xaa]);
        let h = ExtHeader::new_checked(&generic[..], true).unwrap();
        assert_eq!(h.header_len(), 12); // AH: (1 + 2) * 4
        assert_eq!(ExtHeader::new_checked(&generic[..15], false).unwrap_err(), Error::Truncated);
        assert_eq!(ExtHeader::new_checked(&[0u8][..], false).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn jumbo_payload_option_is_found() {
        // Payload length 0, next header Hop-by-Hop [-> TCP, Jumbo 0x12345], TCP ports.
        let mut b = [0u8; 60];
        b[..40].copy_from_slice(&HDR);
        b[4] = 0;
        b[5] = 0;
        b[6] = 0;
        b[40..48].copy_from_slice(&[6, 0, 0xc2, 4, 0x00, 0x01, 0x23, 0x45]);
        b[48..52].copy_from_slice(&[0x04, 0x00, 0x01, 0xbb]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.jumbo_payload_len(), Some(0x12345));
        assert_eq!(p.payload().len(), 20);
        // Pad1 and PadN around the option are stepped over (16-byte header).
        b[40..56].copy_from_slice(&[6, 1, 0, 0xc2, 4, 0x00, 0x01, 0x23, 0x45, 1, 5, 0, 0, 0, 0, 0]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().jumbo_payload_len(), Some(0x12345));
        // The option cut by the header's end, or the header cut by the buffer.
        b[40..48].copy_from_slice(&[6, 0, 0, 0xc2, 4, 0x00, 0x01, 0x23]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().jumbo_payload_len(), None);
        b[40..48].copy_from_slice(&[6, 0, 0xc2, 4, 0x00, 0x01, 0x23, 0x45]);
        assert_eq!(Packet::new_checked(&b[..47]).unwrap().jumbo_payload_len(), None);
        // No option, or a payload length: not a jumbogram.
        b[40..48].copy_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().jumbo_payload_len(), None);
        b[40..48].copy_from_slice(&[6, 0, 0xc2, 4, 0x00, 0x01, 0x23, 0x45]);
        b[5] = 12;
        assert_eq!(Packet::new_checked(&b[..]).unwrap().jumbo_payload_len(), None);
    }

    #[test]
    fn fragment_header_fields() {
        // next UDP, offset 1448 bytes (181 * 8), M = 1, ident 0xdeadbeef.
        let f = [17u8, 0, 0x05, 0xa9, 0xde, 0xad, 0xbe, 0xef];
        let h = FragmentHeader::new_checked(&f[..]).unwrap();
        assert_eq!(h.next_header(), 17);
        assert_eq!(h.frag_offset(), 1448);
        assert!(h.more_frags());
        assert_eq!(h.ident(), 0xdead_beef);
        assert_eq!(FragmentHeader::new_checked(&f[..7]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn walk_hop_by_hop_then_dest_opts_then_udp() {
        let b = [
            60u8, 0, 1, 4, 0, 0, 0, 0, // HBH -> DstOpts, PadN
            17, 0, 1, 4, 0, 0, 0, 0, // DstOpts -> UDP, PadN
            0x12, 0x34, 0x00, 0x35, // UDP ports
        ];
        let u = walk_extensions(0, &b);
        assert!(u.complete);
        assert_eq!(u.proto, 17);
        assert_eq!(u.fragment, Fragment::None);
        assert_eq!(u.payload, &[0x12, 0x34, 0x00, 0x35]);
    }

    #[test]
    fn walk_ah_uses_its_own_length_rule() {
        // AH with len 4 => 24 bytes, next TCP.
        let mut b = [0u8; 28];
        b[0] = 6;
        b[1] = 4;
        b[24..28].copy_from_slice(&[0, 80, 0x1f, 0x90]);
        let u = walk_extensions(51, &b);
        assert!(u.complete);
        assert_eq!(u.proto, 6);
        assert_eq!(u.payload, &[0, 80, 0x1f, 0x90]);
    }

    #[test]
    fn walk_esp_and_no_next_end_the_walk() {
        let u = walk_extensions(50, &[1, 2, 3]);
        assert!(u.complete);
        assert_eq!(u.proto, 50);
        let u = walk_extensions(0, &[59, 0, 1, 4, 0, 0, 0, 0]);
        assert!(u.complete);
        assert_eq!(u.proto, 59);
        assert!(u.payload.is_empty());
    }

    #[test]
    fn walk_truncated_reports_unwalked_header() {
        // HBH claims 16 bytes, 8 present.
        let u = walk_extensions(0, &[17, 1, 0, 0, 0, 0, 0, 0]);
        assert!(!u.complete);
        assert_eq!(u.proto, 0);
        assert!(u.payload.is_empty());
        // HBH fine, fragment header cut.
        let u = walk_extensions(0, &[44, 0, 1, 4, 0, 0, 0, 0, 17, 0]);
        assert!(!u.complete);
        assert_eq!(u.proto, 44);
    }

    #[test]
    fn walk_is_bounded() {
        // 20 chained destination-options headers: the walk stops after 8.
        let mut b = [0u8; 160];
        for h in b.chunks_mut(8) {
            h[0] = 60;
        }
        let u = walk_extensions(60, &b);
        assert!(!u.complete);
        assert_eq!(u.proto, 60);
    }

    #[test]
    fn walk_fragments() {
        let first = [17u8, 0, 0x00, 0x01, 0, 0, 0, 1, 0x04, 0x00, 0x00, 0x35];
        let u = walk_extensions(44, &first);
        assert_eq!(u.fragment, Fragment::First);
        assert_eq!(u.proto, 17);
        assert_eq!(u.payload, &[0x04, 0x00, 0x00, 0x35]);
        assert_eq!(u.frag_id, 1);
        let later = [17u8, 0, 0x00, 0x10, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        let u = walk_extensions(44, &later);
        assert_eq!(u.fragment, Fragment::Later);
        assert_eq!(u.proto, 17);
        assert!(u.payload.is_empty());
        assert_eq!(u.frag_id, 1);
        let atomic = [6u8, 0, 0x00, 0x00, 0, 0, 0, 1, 0x04, 0x00, 0x00, 0x35];
        let u = walk_extensions(44, &atomic);
        assert_eq!(u.fragment, Fragment::None);
        assert_eq!((u.proto, u.frag_id), (6, 0));
    }
}

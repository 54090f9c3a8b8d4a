//! Link types: which framing a captured frame has, and where its network
//! layer starts.
//!
//! Guarantees: [`LinkType::from_number`] knows Ethernet (1), Linux SLL (113)
//! and SLL2 (276), raw IP (101; 12 and 14 as the BSDs number it) and raw IPv4/IPv6 (228, 229), null (0) and
//! loop (108), and nothing else. [`network_layer`] and
//! [`write_ethernet_form`] never panic and never allocate, on any input: a
//! frame shorter than its framing's header has EtherType 0 and no payload
//! (it counts as non-IP, as a short Ethernet frame does). A raw IP frame is
//! IPv6 when its version nibble is 6 and IPv4 otherwise, so a raw IP frame
//! that is neither (or empty) is malformed IP, not non-IP.
//! [`crate::summarize_link`] of a frame equals [`crate::summarize`] of its
//! [`write_ethernet_form`]: the flow key and the IP length are the same
//! whatever the framing; MACs are zero and VLAN ids 0 unless the framing
//! carries an 802.1Q tag (SLL and SLL2 with protocol 0x8100).
//!
//! [`PcapLinkField`] decodes the 32-bit LinkType field of a pcap file header:
//! the link type in the low 16 bits and, when bit 26 (P) is set, the length of
//! the frame check sequence at the end of every packet in bits 28–31, in
//! 16-bit words (draft-ietf-opsawg-pcap, libpcap's `LT_FCS_LENGTH`). Bits
//! 16–25 and 27 are ignored, as readers must.
//!
//! Not guaranteed: link types with other framings (802.11, PPP with its own
//! header, DOCSIS, ...) are not decoded; a reader refuses them.
use crate::ethernet::{self, EtherType};
use crate::{null, sll, sll2};

/// A framing this crate decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET` (1): Ethernet II, possibly with VLAN tags.
    #[default]
    Ethernet,
    /// `LINKTYPE_LINUX_SLL` (113): Linux cooked capture v1, 16-byte header.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux cooked capture v2, 20-byte header.
    LinuxSll2,
    /// `LINKTYPE_RAW` (101): an IPv4 or IPv6 packet, no header.
    RawIp,
    /// `LINKTYPE_IPV4` (228): an IPv4 packet, no header.
    RawIpv4,
    /// `LINKTYPE_IPV6` (229): an IPv6 packet, no header.
    RawIpv6,
    /// `LINKTYPE_NULL` (0): 4-byte address family in the host's byte order.
    Null,
    /// `LINKTYPE_LOOP` (108): 4-byte address family, big-endian.
    Loop,
}

impl LinkType {
    /// What a reader says it supports, for error messages.
    pub const SUPPORTED: &'static str =
        "Ethernet (1), Linux SLL (113), Linux SLL2 (276), raw IP (101, 12, 14, 228, 229) and null/loop (0, 108)";

    /// The framing of a `LINKTYPE_*` number, `None` for any other.
    pub const fn from_number(n: u32) -> Option<LinkType> {
        Some(match n {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            // 12 and 14: DLT_RAW as OpenBSD and BSD/OS number it, found in
            // savefiles written there (libpcap reads both as LINKTYPE_RAW; tshark too).
            101 | 12 | 14 => LinkType::RawIp,
            228 => LinkType::RawIpv4,
            229 => LinkType::RawIpv6,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            _ => return None,
        })
    }

    /// The `LINKTYPE_*` number.
    pub const fn number(self) -> u16 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::RawIp => 101,
            LinkType::RawIpv4 => 228,
            LinkType::RawIpv6 => 229,
            LinkType::Null => 0,
            LinkType::Loop => 108,
        }
    }

    /// A short name for logs: `ethernet`, `linux-sll`, `raw-ip`, ...
    pub const fn name(self) -> &'static str {
        match self {
            LinkType::Ethernet => "ethernet",
            LinkType::LinuxSll => "linux-sll",
            LinkType::LinuxSll2 => "linux-sll2",
            LinkType::RawIp => "raw-ip",
            LinkType::RawIpv4 => "raw-ipv4",
            LinkType::RawIpv6 => "raw-ipv6",
            LinkType::Null => "null",
            LinkType::Loop => "loop",
        }
    }
}

/// The LinkType field of a pcap file header (32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PcapLinkField(pub u32);

impl PcapLinkField {
    /// The link type number: the low 16 bits.
    pub const fn number(self) -> u32 {
        self.0 & 0xffff
    }

    /// The framing, `None` when the link type is not one this crate decodes.
    pub const fn link_type(self) -> Option<LinkType> {
        LinkType::from_number(self.number())
    }

    /// Bytes of frame check sequence at the end of every packet: bits 28–31
    /// times 2 when bit 26 (P, "FCS length known") is set, else 0.
    pub const fn fcs_len(self) -> usize {
        if self.0 & 0x0400_0000 != 0 {
            ((self.0 >> 28) as usize) * 2
        } else {
            0
        }
    }
}

/// The network layer of a frame whose framing is not Ethernet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network<'a> {
    /// The EtherType the framing names (0 when it names none).
    pub ethertype: u16,
    /// The bytes after the framing's header.
    pub payload: &'a [u8],
}

/// Where the network layer of `frame` starts, for every framing but
/// Ethernet (`None`: its header, MACs and tags are parsed by
/// [`crate::summarize`]). Never panics.
pub fn network_layer(link: LinkType, frame: &[u8]) -> Option<Network<'_>> {
    const SHORT: Network<'static> = Network { ethertype: 0, payload: &[] };
    let raw = |ethertype| Network { ethertype, payload: frame };
    Some(match link {
        LinkType::Ethernet => return None,
        LinkType::LinuxSll => match sll::Header::new_checked(frame) {
            Ok(h) => Network { ethertype: h.protocol(), payload: h.payload() },
            Err(_) => SHORT,
        },
        LinkType::LinuxSll2 => match sll2::Header::new_checked(frame) {
            Ok(h) => Network { ethertype: h.protocol(), payload: h.payload() },
            Err(_) => SHORT,
        },
        LinkType::RawIp => match frame.first() {
            Some(b) if b >> 4 == 6 => raw(EtherType::IPV6),
            _ => raw(EtherType::IPV4),
        },
        LinkType::RawIpv4 => raw(EtherType::IPV4),
        LinkType::RawIpv6 => raw(EtherType::IPV6),
        LinkType::Null | LinkType::Loop => match null::Header::new_checked(frame) {
            Ok(h) => {
                let family = if link == LinkType::Null { h.family_host_order() } else { h.family_network_order() };
                Network { ethertype: null::ethertype_of_family(family), payload: h.payload() }
            }
            Err(_) => SHORT,
        },
    })
}

/// Writes the Ethernet II form of `frame` (framed as `link`) into `out`: for
/// Ethernet the frame itself, for the others a 14-byte header with both MACs
/// zero and the EtherType of [`network_layer`], then the network-layer bytes.
/// Returns the bytes written: the whole form, or as much of it as `out` holds.
/// Never panics, never allocates.
pub fn write_ethernet_form(link: LinkType, frame: &[u8], out: &mut [u8]) -> usize {
    let (header, payload) = match network_layer(link, frame) {
        None => (None, frame),
        Some(n) => {
            let mut h = [0u8; ethernet::HEADER_LEN];
            h[12..].copy_from_slice(&n.ethertype.to_be_bytes());
            (Some(h), n.payload)
        }
    };
    let mut at = 0;
    if let Some(h) = header {
        let n = h.len().min(out.len());
        out[..n].copy_from_slice(&h[..n]);
        at = n;
    }
    let n = payload.len().min(out.len() - at);
    out[at..at + n].copy_from_slice(&payload[..n]);
    at + n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_type_numbers_roundtrip() {
        for n in [0u32, 1, 101, 108, 113, 228, 229, 276] {
            let l = LinkType::from_number(n).unwrap();
            assert_eq!(u32::from(l.number()), n, "{}", l.name());
        }
        for n in [12u32, 14] {
            assert_eq!(LinkType::from_number(n), Some(LinkType::RawIp), "the BSDs' DLT_RAW {n}");
        }
        for n in [6u32, 105, 127, 147, 0x1_0001] {
            assert_eq!(LinkType::from_number(n), None, "{n}");
        }
    }

    #[test]
    fn pcap_link_field_fcs_bits() {
        // P clear: the FCS length bits mean nothing; Ethernet, no FCS.
        let f = PcapLinkField(0x3000_0001);
        assert_eq!(f.number(), 1);
        assert_eq!(f.link_type(), Some(LinkType::Ethernet));
        assert_eq!(f.fcs_len(), 0);
        // P set, 2 words: a 4-byte FCS.
        assert_eq!(PcapLinkField(0x2400_0001).fcs_len(), 4);
        assert_eq!(PcapLinkField(0x1400_0001).fcs_len(), 2);
        assert_eq!(PcapLinkField(0xf400_0071).number(), 113);
        assert_eq!(PcapLinkField(0xf400_0071).fcs_len(), 30);
        // Reserved bits are ignored.
        assert_eq!(PcapLinkField(0x0003_0001).link_type(), Some(LinkType::Ethernet));
        assert_eq!(PcapLinkField(147).link_type(), None);
    }

    #[test]
    fn short_framing_headers_have_no_network_layer() {
        for (link, n) in [(LinkType::LinuxSll, 15), (LinkType::LinuxSll2, 19), (LinkType::Null, 3), (LinkType::Loop, 3)]
        {
            let b = [0x08u8; 32];
            assert_eq!(network_layer(link, &b[..n]), Some(Network { ethertype: 0, payload: &[] }), "{link:?}");
        }
        assert_eq!(network_layer(LinkType::RawIp, &[]), Some(Network { ethertype: 0x0800, payload: &[] }));
        assert_eq!(network_layer(LinkType::Ethernet, &[1, 2, 3]), None);
    }

    #[test]
    fn raw_ip_version_nibble_picks_the_ethertype() {
        assert_eq!(network_layer(LinkType::RawIp, &[0x45, 0]).unwrap().ethertype, 0x0800);
        assert_eq!(network_layer(LinkType::RawIp, &[0x60, 0]).unwrap().ethertype, 0x86dd);
        assert_eq!(network_layer(LinkType::RawIp, &[0x00]).unwrap().ethertype, 0x0800);
        assert_eq!(network_layer(LinkType::RawIpv6, &[0x45]).unwrap().ethertype, 0x86dd);
        assert_eq!(network_layer(LinkType::RawIpv4, &[0x60]).unwrap().ethertype, 0x0800);
    }

    #[test]
    fn ethernet_form_of_each_framing() {
        let ip = [0x45u8, 0, 0, 20];
        let mut out = [0xaau8; 64];
        let n = write_ethernet_form(LinkType::RawIp, &ip, &mut out);
        assert_eq!(&out[..n], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0x45, 0, 0, 20]);
        let null = [2u8, 0, 0, 0, 0x45, 0, 0, 20];
        let n = write_ethernet_form(LinkType::Null, &null, &mut out);
        assert_eq!(&out[12..n], &[0x08, 0x00, 0x45, 0, 0, 20]);
        let eth = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x06, 1];
        let n = write_ethernet_form(LinkType::Ethernet, &eth, &mut out);
        assert_eq!(&out[..n], &eth);
        // Cut to the output buffer, never past it.
        let mut small = [0u8; 16];
        assert_eq!(write_ethernet_form(LinkType::RawIp, &[0x45; 40], &mut small), 16);
        assert_eq!(write_ethernet_form(LinkType::RawIp, &[0x45; 40], &mut small[..5]), 5);
        assert_eq!(write_ethernet_form(LinkType::Ethernet, &[0x45; 40], &mut []), 0);
    }
}

//! The per-packet summary: one pass over an Ethernet frame into a small
//! `Copy` struct that everything downstream uses.
//!
//! Guarantees of [`summarize`]: never panics and never allocates, on any
//! input; every frame gets exactly one [`L3`] class, so a caller can account
//! every packet:
//!
//! - fewer than 14 bytes: `L3::NonIp`, `ethertype` 0, everything else zero;
//! - MACs are always filled once the frame has 14 bytes;
//! - VLAN tags (TPID 0x8100, 0x88A8, 0x9100) are walked, at most
//!   [`crate::vlan::MAX_TAGS`]; the outer id goes to `vlan`, the second to
//!   `vlan_inner`, further tags are skipped. A cut tag, or a ninth tag, leaves
//!   the tag's TPID as `ethertype` and the frame is `L3::NonIp`;
//! - `ethertype` is the innermost EtherType; neither 0x0800 nor 0x86DD gives
//!   `L3::NonIp` (ARP, LLDP, ...);
//! - EtherType IPv4/IPv6 but an unusable header (version mismatch, IPv4 IHL
//!   < 5, total length < IHL*4, header bytes missing, IPv6 under 40 bytes):
//!   `L3::Malformed`, with `ip_version`, addresses, ports, `ip_len` all 0;
//! - otherwise `L3::Ipv4` / `L3::Ipv6` with addresses, `proto`, `ip_len` from
//!   the header (IPv4 total length, IPv6 payload length + 40, as pmacct
//!   counts), even if the capture is truncated. Ports (TCP, UDP, SCTP,
//!   UDP-Lite, DCCP) when the first 4 transport bytes are present, TCP flags
//!   when byte 13 is present, else 0. Later fragments have ports 0 and flags
//!   0 (see [`crate::ipv4`] and [`crate::ipv6`] for fragments and the IPv6
//!   extension walk, including what a cut extension chain gives). Fragments
//!   (first and later) carry their datagram's identification in `frag_id`
//!   (IPv4: 16 bits; IPv6 Fragment header: 32 bits), so that a meter can
//!   give later fragments the ports of their first (the `detector` does).
//! - lengths from the frame: an IPv4 packet with total length 0 and bytes
//!   after its header (TSO, GSO, BIG TCP) and an IPv6 jumbogram (payload
//!   length 0 with a Jumbo Payload option) have `ip_len_from_frame` set and
//!   `ip_len` = the bytes present from the IP header to the end of the
//!   buffer. [`summarize_wire`] adds the bytes the capture or the queue slot
//!   cut off (`wire_len - frame.len()`), so the count is the packet's size on
//!   the wire. A total length between 1 and IHL*4 - 1, or 0 with nothing after
//!   the header, stays `L3::Malformed`; [`summarize_wire`] also makes a
//!   jumbogram malformed whose Jumbo Payload value claims more bytes than the
//!   frame has on the wire.
//!
//! [`summarize_link`] does the same for the other framings of
//! [`crate::link::LinkType`]: it equals `summarize` of the frame's Ethernet
//! form (MACs zero), so keys and counts do not depend on the framing.
//!
//! The common frames (Ethernet, untagged or with one 802.1Q tag, carrying
//! IPv4 without options and not fragmented, or IPv6 straight to TCP or UDP)
//! are read at fixed offsets before the general walk; the unit tests compare
//! that path's summary and transport bytes with the general parser's on the
//! golden frames, every cut of them, and random frames near those shapes.
//!
//! Not guaranteed: [`summarize_wire`] assumes `wire_len` counts the frame's
//! bytes as given; a trailer the buffer does not hold (an FCS that was
//! stripped, or the difference between a non-Ethernet header and its 14-byte
//! Ethernet form) is counted in a length taken from the frame.
use crate::ethernet::{self, EtherType};
use crate::link::{self, LinkType};
use crate::{ip_proto, ipv4, ipv6, ports, shim, tcp, vlan};

/// What the frame carries at layer 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum L3 {
    /// IPv4 with a usable header.
    Ipv4,
    /// IPv6 with a usable header.
    Ipv6,
    /// Not IP (ARP, LLDP, unknown EtherType...).
    #[default]
    NonIp,
    /// The EtherType says IP but the header is not usable (short, bad version, bad length).
    Malformed,
}

/// Fragment position of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fragment {
    /// Not a fragment.
    #[default]
    None,
    /// First fragment (offset 0, more fragments): carries the ports.
    First,
    /// A later fragment: no transport header, ports are 0.
    Later,
}

/// The validated summary of one frame: everything downstream needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketSummary {
    /// Layer 3 kind.
    pub l3: L3,
    /// Innermost EtherType after VLAN tags.
    pub ethertype: u16,
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Outer VLAN id (12 bits), 0 = untagged. In QinQ the service tag.
    pub vlan: u16,
    /// Inner VLAN id of QinQ, 0 = none.
    pub vlan_inner: u16,
    /// 4, 6, or 0 when not IP.
    pub ip_version: u8,
    /// Source address (IPv4 in the first 4 bytes, rest zero).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// IP protocol (IPv6: upper-layer protocol after extension headers).
    pub proto: u8,
    /// Source port (TCP, UDP, SCTP, UDP-Lite, DCCP), else 0.
    pub src_port: u16,
    /// Destination port, likewise.
    pub dst_port: u16,
    /// IPv4 total length; IPv6 payload length + 40; when `ip_len_from_frame`,
    /// the bytes from the IP header to the end of the frame.
    pub ip_len: u32,
    /// The length is the frame's, not the header's (IPv4 total length 0 on a
    /// TSO/BIG TCP packet, an IPv6 jumbogram).
    pub ip_len_from_frame: bool,
    /// TCP flags byte, 0 when not TCP.
    pub tcp_flags: u8,
    /// Fragment position.
    pub fragment: Fragment,
    /// Identification of a fragment's datagram (`fragment` First or Later):
    /// the IPv4 header's 16-bit Identification, or the 32-bit Identification
    /// of the IPv6 Fragment header; 0 when not a fragment.
    pub frag_id: u32,
}

impl PacketSummary {
    /// Whether the frame carried a usable IPv4 or IPv6 header.
    #[inline]
    pub fn is_ip(&self) -> bool {
        matches!(self.l3, L3::Ipv4 | L3::Ipv6)
    }
}

/// Parses a whole Ethernet frame into a summary. Never panics, any input.
pub fn summarize(frame: &[u8]) -> PacketSummary {
    summarize_l4(frame).0
}

/// [`summarize`] of `frame`, the captured part of an Ethernet frame of
/// `wire_len` bytes on the wire: a length taken from the frame counts the
/// bytes that were not captured too. Never panics, any input.
pub fn summarize_wire(frame: &[u8], wire_len: u32) -> PacketSummary {
    let mut s = PacketSummary::default();
    summarize_wire_into(&mut s, frame, wire_len);
    s
}

/// Writes [`summarize_wire`]`(frame, wire_len)` into `s` (whatever it held):
/// for a caller that keeps the summary in place of its own.
// Inlined into its caller, the detector's per-packet path: the summary is
// then built in the caller's own frame, with no call and no copy of the
// summary (returned by value, even inlined, it was copied once: about 50
// instructions a packet with the call).
#[inline(always)]
pub fn summarize_wire_into(s: &mut PacketSummary, frame: &[u8], wire_len: u32) {
    *s = PacketSummary::default();
    summarize_into(s, frame);
    // Only a length taken from the frame changes.
    if s.ip_len_from_frame {
        frame_lengths(s, frame, wire_len);
    }
}

/// [`add_uncaptured`] for the summary `s` of the Ethernet frame `frame`
/// (`wire_len` bytes on the wire), then the one check a length taken from the
/// frame still allows: an IPv6 jumbogram whose Jumbo Payload option claims
/// more bytes than the frame has on the wire is malformed (RFC 2675: the
/// option's value is the packet's length less its 40-byte header).
#[inline]
pub(crate) fn frame_lengths(s: &mut PacketSummary, frame: &[u8], wire_len: u32) {
    let jumbo = s.ip_len_from_frame && s.l3 == L3::Ipv6;
    // Before the uncaptured bytes are added, `ip_len` is the captured bytes
    // from the IP header on: the header starts that far from the frame's end.
    let at = frame.len().saturating_sub(s.ip_len as usize);
    add_uncaptured(s, frame.len(), wire_len);
    if jumbo {
        let claim = ipv6::Packet::new_checked(&frame[at..]).ok().and_then(|ip| ip.jumbo_payload_len());
        if claim.is_some_and(|c| u64::from(c) + 40 > u64::from(s.ip_len)) {
            // As a header found unusable while parsing: the link layer kept, the rest zero.
            *s = PacketSummary {
                l3: L3::Malformed,
                ethertype: s.ethertype,
                src_mac: s.src_mac,
                dst_mac: s.dst_mac,
                vlan: s.vlan,
                vlan_inner: s.vlan_inner,
                ..PacketSummary::default()
            };
        }
    }
}

/// A length taken from the frame (`ip_len_from_frame`) counts the bytes of
/// the `wire_len`-byte frame that the `captured`-byte buffer does not hold.
#[inline]
pub(crate) fn add_uncaptured(s: &mut PacketSummary, captured: usize, wire_len: u32) {
    if s.ip_len_from_frame {
        let captured = u32::try_from(captured).unwrap_or(u32::MAX);
        s.ip_len = s.ip_len.saturating_add(wire_len.saturating_sub(captured));
    }
}

/// Parses a frame of any supported framing into a summary: for Ethernet
/// [`summarize`], for the others the same summary as of the frame's
/// Ethernet form ([`link::write_ethernet_form`]), MACs zero. Never panics.
pub fn summarize_link(link: LinkType, frame: &[u8]) -> PacketSummary {
    match link::network_layer(link, frame) {
        None => summarize(frame),
        Some(n) => {
            let mut s = PacketSummary::default();
            network(&mut s, n.ethertype, n.payload);
            s
        }
    }
}

/// Parses a whole Ethernet frame into a summary and returns the transport
/// bytes too (after the IP header and extensions, bounded by the IP length;
/// empty for later fragments and non-IP frames): the hook the tunnel
/// decapsulation ([`crate::tunnel`]) starts from. Never panics.
pub(crate) fn summarize_l4(frame: &[u8]) -> (PacketSummary, &[u8]) {
    let mut s = PacketSummary::default();
    let l4 = summarize_into(&mut s, frame);
    (s, l4)
}

/// [`summarize_l4`] into `s`, which must be `PacketSummary::default()`.
#[inline]
fn summarize_into<'a>(s: &mut PacketSummary, frame: &'a [u8]) -> &'a [u8] {
    if let Some(l4) = common_frame(s, frame) {
        return l4;
    }
    general(s, frame)
}

/// The common frames without the general parser's walk: Ethernet, untagged
/// or with one 802.1Q tag (TPID 0x8100), carrying IPv4 without options, not
/// a fragment, total length at least 20; or IPv6 whose next header is TCP or
/// UDP. Fills `s` (which must be `PacketSummary::default()`) and returns the
/// transport bytes, exactly as [`general`] would (the unit tests
/// `the_common_frame_path_gives_the_general_parsers_summary*` compare them on
/// golden frames, each of their cuts, and random frames); `None`, with `s`
/// untouched, for any other frame.
#[inline(always)]
fn common_frame<'a>(s: &mut PacketSummary, frame: &'a [u8]) -> Option<&'a [u8]> {
    let (h, _) = frame.split_first_chunk::<14>()?;
    if u16::from_be_bytes([h[12], h[13]]) == EtherType::VLAN {
        common_at::<18>(s, frame)
    } else {
        common_at::<14>(s, frame)
    }
}

/// [`common_frame`] with the IP header `AT` bytes in: 14 untagged, 18 after
/// one 802.1Q tag (a constant, so every offset is).
#[inline(always)]
fn common_at<'a, const AT: usize>(s: &mut PacketSummary, frame: &'a [u8]) -> Option<&'a [u8]> {
    let (h, ip) = frame.split_at_checked(AT)?;
    let ethertype = u16::from_be_bytes([h[AT - 2], h[AT - 1]]);
    let l4 = if ethertype == EtherType::IPV4 {
        common_ipv4(s, ip)?
    } else if ethertype == EtherType::IPV6 {
        common_ipv6(s, ip)?
    } else {
        return None;
    };
    s.dst_mac = head::<6>(&h[..6]);
    s.src_mac = head::<6>(&h[6..12]);
    if AT == 18 {
        s.vlan = u16::from_be_bytes([h[14], h[15]]) & 0x0fff;
    }
    s.ethertype = ethertype;
    transport(s, l4);
    Some(l4)
}

/// [`common_frame`]'s IPv4 part: `ip` from the IP header on.
#[inline(always)]
fn common_ipv4<'a>(s: &mut PacketSummary, ip: &'a [u8]) -> Option<&'a [u8]> {
    let (h, _) = ip.split_first_chunk::<{ ipv4::MIN_HEADER_LEN }>()?;
    // Version 4 with IHL 5, neither MF nor an offset, total length >= 20.
    let total = u16::from_be_bytes([h[2], h[3]]);
    if h[0] != 0x45 || (h[6] & 0x3f) | h[7] != 0 || usize::from(total) < ipv4::MIN_HEADER_LEN {
        return None;
    }
    let l4 = ip.get(ipv4::MIN_HEADER_LEN..usize::from(total).min(ip.len()))?;
    s.l3 = L3::Ipv4;
    s.ip_version = 4;
    s.src[..4].copy_from_slice(&h[12..16]);
    s.dst[..4].copy_from_slice(&h[16..20]);
    s.proto = h[9];
    s.ip_len = u32::from(total);
    Some(l4)
}

/// [`common_frame`]'s IPv6 part: `ip` from the IP header on.
#[inline(always)]
fn common_ipv6<'a>(s: &mut PacketSummary, ip: &'a [u8]) -> Option<&'a [u8]> {
    let (h, _) = ip.split_first_chunk::<{ ipv6::HEADER_LEN }>()?;
    let proto = h[6];
    if h[0] >> 4 != 6 || (proto != ip_proto::TCP && proto != ip_proto::UDP) {
        return None;
    }
    let plen = u16::from_be_bytes([h[4], h[5]]);
    let l4 = ip.get(ipv6::HEADER_LEN..(ipv6::HEADER_LEN + usize::from(plen)).min(ip.len()))?;
    s.l3 = L3::Ipv6;
    s.ip_version = 6;
    s.src = head::<16>(&h[8..24]);
    s.dst = head::<16>(&h[24..40]);
    s.proto = proto;
    s.ip_len = u32::from(plen) + ipv6::HEADER_LEN as u32;
    Some(l4)
}

/// The first `N` bytes of `b`, which holds at least `N` (a fixed-size
/// slice of a fixed-size array: the check folds away).
#[inline(always)]
fn head<const N: usize>(b: &[u8]) -> [u8; N] {
    b.first_chunk::<N>().copied().unwrap_or([0; N])
}

/// The general parser behind [`summarize_into`]: any framing, tags, options,
/// fragments and lengths.
#[inline]
fn general<'a>(s: &mut PacketSummary, frame: &'a [u8]) -> &'a [u8] {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return &[];
    };
    s.dst_mac = eth.dst_addr();
    s.src_mac = eth.src_addr();
    network(s, eth.ethertype(), eth.payload())
}

/// What follows the link layer's VLAN tags and shims (MPLS labels, a PPPoE
/// header: [`shim`]): the EtherType of what `rest` holds (the IP packet's
/// for IP under a shim, the shim's own otherwise) and the first two VLAN ids.
struct Walked<'a> {
    ethertype: u16,
    rest: &'a [u8],
    vlan: u16,
    vlan_inner: u16,
}

/// Walks VLAN tags from `ethertype`, then a shim after them, over `rest`.
#[inline]
fn walk(ethertype: u16, rest: &[u8]) -> Walked<'_> {
    let mut w = Walked { ethertype, rest, vlan: 0, vlan_inner: 0 };
    let mut tags = 0usize;
    while vlan::is_tag_tpid(w.ethertype) && tags < vlan::MAX_TAGS {
        let Ok(tag) = vlan::Tag::new_checked(w.rest) else {
            break;
        };
        match tags {
            0 => w.vlan = tag.vlan_id(),
            1 => w.vlan_inner = tag.vlan_id(),
            _ => {}
        }
        w.ethertype = tag.ethertype();
        w.rest = tag.payload();
        tags += 1;
    }
    if shim::is_shim(w.ethertype) {
        if let Some((ethertype, ip)) = shim::beneath(w.ethertype, w.rest) {
            w.ethertype = ethertype;
            w.rest = ip;
        }
    }
    w
}

/// Where the IP header of the Ethernet frame `frame` starts, after its VLAN
/// tags, MPLS labels or PPPoE header, as [`summarize`] finds it; `None` when
/// the frame carries no IP there.
pub fn ip_offset(frame: &[u8]) -> Option<usize> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let w = walk(eth.ethertype(), eth.payload());
    matches!(w.ethertype, EtherType::IPV4 | EtherType::IPV6).then(|| frame.len() - w.rest.len())
}

/// Walks VLAN tags and a shim from `ethertype` and parses the network layer
/// in `rest`; returns the transport bytes (see [`summarize_l4`]).
pub(crate) fn network<'a>(s: &mut PacketSummary, ethertype: u16, rest: &'a [u8]) -> &'a [u8] {
    let w = walk(ethertype, rest);
    s.vlan = w.vlan;
    s.vlan_inner = w.vlan_inner;
    s.ethertype = w.ethertype;
    match w.ethertype {
        EtherType::IPV4 => parse_ipv4(s, w.rest),
        EtherType::IPV6 => parse_ipv6(s, w.rest),
        _ => {
            s.l3 = L3::NonIp;
            &[]
        }
    }
}

fn parse_ipv4<'a>(s: &mut PacketSummary, b: &'a [u8]) -> &'a [u8] {
    let ip = match ipv4::Packet::new_checked(b) {
        Ok(ip) if ip.version() == 4 => ip,
        _ => {
            s.l3 = L3::Malformed;
            return &[];
        }
    };
    s.l3 = L3::Ipv4;
    s.ip_version = 4;
    s.src[..4].copy_from_slice(&ip.src_addr());
    s.dst[..4].copy_from_slice(&ip.dst_addr());
    s.proto = ip.protocol();
    if ip.len_from_frame() {
        s.ip_len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        s.ip_len_from_frame = true;
    } else {
        s.ip_len = u32::from(ip.total_len());
    }
    s.fragment = if ip.frag_offset() != 0 {
        Fragment::Later
    } else if ip.more_frags() {
        Fragment::First
    } else {
        Fragment::None
    };
    if s.fragment != Fragment::None {
        s.frag_id = u32::from(ip.ident());
    }
    if s.fragment == Fragment::Later {
        return &[];
    }
    let l4 = ip.payload();
    transport(s, l4);
    l4
}

fn parse_ipv6<'a>(s: &mut PacketSummary, b: &'a [u8]) -> &'a [u8] {
    let ip = match ipv6::Packet::new_checked(b) {
        Ok(ip) if ip.version() == 6 => ip,
        _ => {
            s.l3 = L3::Malformed;
            return &[];
        }
    };
    s.l3 = L3::Ipv6;
    s.ip_version = 6;
    s.src = ip.src_addr();
    s.dst = ip.dst_addr();
    if ip.jumbo_payload_len().is_some() {
        s.ip_len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        s.ip_len_from_frame = true;
    } else {
        s.ip_len = ip.total_len();
    }
    let upper = ipv6::walk_extensions(ip.next_header(), ip.payload());
    s.proto = upper.proto;
    s.fragment = upper.fragment;
    s.frag_id = upper.frag_id;
    // `upper.payload` is empty for later fragments and cut chains: ports stay 0.
    transport(s, upper.payload);
    upper.payload
}

#[inline]
fn transport(s: &mut PacketSummary, l4: &[u8]) {
    (s.src_port, s.dst_port) = ports::transport_ports(s.proto, l4);
    if s.proto == ip_proto::TCP {
        s.tcp_flags = tcp::peek_flags(l4).unwrap_or(0);
    }
}

/// The golden frames of the integration tests, for the unit tests below.
#[cfg(test)]
#[path = "../tests/common/frames.rs"]
#[rustfmt::skip]
mod golden_frames;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use super::golden_frames as frames;

    /// The general parser's summary and transport bytes.
    fn by_general(frame: &[u8]) -> (PacketSummary, &[u8]) {
        let mut s = PacketSummary::default();
        let l4 = general(&mut s, frame);
        (s, l4)
    }

    /// What `summarize_l4` gives (the common frame path first), and whether that path took it.
    fn by_common(frame: &[u8]) -> (PacketSummary, &[u8], bool) {
        let mut s = PacketSummary::default();
        match common_frame(&mut s, frame) {
            Some(l4) => (s, l4, true),
            None => {
                assert_eq!(s, PacketSummary::default(), "a frame the common path refuses leaves the summary untouched");
                let (s, l4) = summarize_l4(frame);
                (s, l4, false)
            }
        }
    }

    /// A frame near the common shapes: IPv4 or IPv6, untagged or with one
    /// tag, with the fields the common path tests drawn from their edge
    /// values, then cut.
    fn near_common() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            prop_oneof![
                Just(0x45u8),
                Just(0x46),
                Just(0x44),
                Just(0x55),
                Just(0x60),
                Just(0x6f),
                Just(0x40),
                any::<u8>()
            ],
            prop_oneof![Just(0u16), 1u16..60, Just(20), Just(40), 60u16..2000, any::<u16>()],
            prop_oneof![Just(0u8), Just(0x40), Just(0x20), Just(0x01), any::<u8>()],
            prop_oneof![Just(6u8), Just(17), Just(1), Just(0), Just(44), Just(132), any::<u8>()],
            prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), any::<u16>()],
            proptest::collection::vec(any::<u8>(), 0..140),
            any::<prop::sample::Index>(),
            prop_oneof![Just(0u16), Just(0x8100), Just(0x88a8), Just(0x9100)],
        )
            .prop_map(|(v6, ver, len, frag, proto, ethertype, tail, cut, tag)| {
                let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
                if tag != 0 {
                    f.extend_from_slice(&tag.to_be_bytes());
                    f.extend_from_slice(&[0xe0 | (ver & 0x1f), ver]);
                }
                f.extend_from_slice(&ethertype.to_be_bytes());
                if v6 {
                    f.extend_from_slice(&[ver, 0, 0, 0]);
                    f.extend_from_slice(&len.to_be_bytes());
                    f.extend_from_slice(&[proto, 64]);
                    f.extend((0..32).map(|i| i as u8));
                } else {
                    f.extend_from_slice(&[ver, 0]);
                    f.extend_from_slice(&len.to_be_bytes());
                    f.extend_from_slice(&[0x12, 0x34, frag, if frag == 0x01 { 0 } else { 0x07 }, 64, proto, 0, 0]);
                    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
                }
                f.extend_from_slice(&tail);
                let keep = cut.index(f.len() + 1);
                f.truncate(keep.max(f.len() / 2));
                f
            })
    }

    /// `frame` with `shim` (announced by `ethertype`) put before its IP header.
    fn shimmed(frame: &[u8], ethertype: u16, shim: &[u8]) -> Vec<u8> {
        let at = ip_offset(frame).expect("an IP frame");
        let mut f = frame[..at].to_vec();
        f[at - 2..at].copy_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(shim);
        f.extend_from_slice(&frame[at..]);
        f
    }

    #[test]
    fn ip_under_mpls_labels_or_a_pppoe_session_is_summarized_as_without_them_on_every_golden_frame() {
        let mut checked = 0;
        for (name, frame) in frames::ALL {
            let (plain, l4) = summarize_l4(frame);
            if !plain.is_ip() {
                continue;
            }
            let v6 = plain.ethertype == EtherType::IPV6;
            let labels = [0, 1, 0x00, 64, 0, 2, 0x01, 64];
            let mut pppoe = vec![0x11, 0, 0x12, 0x34, 0, 0];
            pppoe.extend_from_slice(if v6 { &[0x00, 0x57] } else { &[0x00, 0x21] });
            for (what, f) in [
                ("two MPLS labels", shimmed(frame, shim::MPLS_UNICAST, &labels)),
                ("one multicast MPLS label", shimmed(frame, shim::MPLS_MULTICAST, &labels[4..])),
                ("a PPPoE session", shimmed(frame, shim::PPPOE_SESSION, &pppoe)),
            ] {
                let (got, got_l4) = summarize_l4(&f);
                assert_eq!((got, got_l4), (plain, l4), "{name} under {what}");
                assert_eq!(ip_offset(&f), ip_offset(frame).map(|o| o + f.len() - frame.len()), "{name} under {what}");
                // The common path leaves them to the general parser, which agrees.
                assert_eq!(by_common(&f).0, by_general(&f).0, "{name} under {what}");
            }
            checked += 1;
        }
        assert!(checked >= 4, "golden IP frames checked: {checked}");
    }

    #[test]
    fn a_pseudowire_under_mpls_and_ppp_control_frames_are_non_ip_of_the_shims_ethertype() {
        let mut eompls = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0x47, 0, 1, 0x01, 64];
        eompls.extend_from_slice(&[0, 0, 0, 0]); // control word
        eompls.extend_from_slice(&[0x45; 40]);
        let s = summarize(&eompls);
        assert_eq!((s.l3, s.ethertype), (L3::NonIp, shim::MPLS_UNICAST));
        assert_eq!(ip_offset(&eompls), None);
        let mut lcp = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0x64, 0x11, 0, 0, 1, 0, 10, 0xc0, 0x21];
        lcp.extend_from_slice(&[1, 1, 0, 8, 0, 0, 0, 0]);
        let s = summarize(&lcp);
        assert_eq!((s.l3, s.ethertype), (L3::NonIp, shim::PPPOE_SESSION));
    }

    #[test]
    fn the_common_frame_path_gives_the_general_parsers_summary_on_every_golden_frame_and_cut() {
        let mut taken = 0;
        for (name, frame) in frames::ALL {
            for cut in 0..=frame.len() {
                let f = &frame[..cut];
                let (s, l4, fast) = by_common(f);
                assert_eq!((s, l4), by_general(f), "{name} cut to {cut} bytes");
                taken += usize::from(fast);
            }
        }
        assert!(taken > 100, "the common path took only {taken} of the golden frames and cuts");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 8192, ..ProptestConfig::default() })]

        #[test]
        fn the_common_frame_path_gives_the_general_parsers_summary(f in near_common()) {
            let (s, l4, _) = by_common(&f);
            prop_assert_eq!((s, l4), by_general(&f));
        }

        #[test]
        fn a_summary_written_in_place_over_another_is_the_summary_returned(
            f in near_common(), old in near_common(), extra in 0u32..70_000
        ) {
            // Whatever the place held before (another frame's summary, a jumbogram's length).
            let mut s = summarize_wire(&old, old.len() as u32 + extra);
            let wire_len = f.len() as u32 + extra;
            summarize_wire_into(&mut s, &f, wire_len);
            prop_assert_eq!(s, summarize_wire(&f, wire_len));
            // And, for a length taken from the header, the general parser's summary.
            if !s.ip_len_from_frame {
                prop_assert_eq!(s, by_general(&f).0);
            }
        }

        #[test]
        fn the_common_frame_path_gives_the_general_parsers_summary_on_random_bytes(
            f in proptest::collection::vec(any::<u8>(), 0..120)
        ) {
            let (s, l4, _) = by_common(&f);
            prop_assert_eq!((s, l4), by_general(&f));
        }
    }
}

//! Golden-bytes tests for the framings other than Ethernet (Linux SLL and
//! SLL2, raw IP, null/loop) and for lengths taken from the frame (TSO/BIG
//! TCP IPv4 with total length 0, IPv6 jumbograms): the same packets as the
//! Ethernet golden frames, each header written out byte by byte, give the
//! same summary (MACs zero) and so the same flow key and counts.
mod common;

use common::frames::*;
use wire::link::{write_ethernet_form, LinkType};
use wire::{summarize, summarize_link, summarize_wire, FlowKey, PacketSummary, L3};

/// SLL v1 header: sent by us, ARPHRD_ETHER, 6-byte address 52:54:00:12:34:56, protocol IPv4.
const SLL_V4: [u8; 16] =
    [0x00, 0x04, 0x00, 0x01, 0x00, 0x06, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x00, 0x00, 0x08, 0x00];
/// SLL v2 header: protocol IPv6, reserved, ifindex 7, ARPHRD_NONE (tun), to us, no address.
const SLL2_V6: [u8; 20] =
    [0x86, 0xdd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0xff, 0xfe, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
/// Null header written by a little-endian host: AF_INET.
const NULL_LE_V4: [u8; 4] = [0x02, 0x00, 0x00, 0x00];
/// Null header written by a big-endian host: AF_INET6 of macOS (30).
const NULL_BE_V6: [u8; 4] = [0x00, 0x00, 0x00, 0x1e];
/// Loop header (always big-endian): AF_INET6 of OpenBSD (24).
const LOOP_V6: [u8; 4] = [0x00, 0x00, 0x00, 0x18];

fn framed(header: &[u8], ethernet: &[u8]) -> Vec<u8> {
    let mut f = header.to_vec();
    f.extend_from_slice(&ethernet[14..]);
    f
}

/// The Ethernet summary with what a non-Ethernet framing cannot carry taken out.
fn without_macs(mut s: PacketSummary) -> PacketSummary {
    s.src_mac = [0; 6];
    s.dst_mac = [0; 6];
    s
}

/// `summarize_link` of the framed packet equals the Ethernet summary without
/// MACs, and equals `summarize` of the frame's Ethernet form.
fn check(link: LinkType, frame: &[u8], ethernet: &[u8]) {
    let want = without_macs(summarize(ethernet));
    let got = summarize_link(link, frame);
    assert_eq!(got, want, "{link:?}");
    assert_eq!(FlowKey::from_summary(&got), FlowKey::from_summary(&summarize(ethernet)), "{link:?}");
    let mut buf = [0u8; 256];
    let n = write_ethernet_form(link, frame, &mut buf);
    assert_eq!(summarize(&buf[..n]), want, "{link:?}: Ethernet form");
}

#[test]
fn linux_sll_ipv4_tcp_matches_its_ethernet_twin() {
    let f = framed(&SLL_V4, &TCP_SYN_V4);
    assert_eq!(f.len(), 76);
    check(LinkType::LinuxSll, &f, &TCP_SYN_V4);
    let s = summarize_link(LinkType::LinuxSll, &f);
    assert_eq!((s.l3, s.src_port, s.dst_port, s.ip_len), (L3::Ipv4, 51234, 443, 60));
}

#[test]
fn linux_sll2_ipv6_tcp_matches_its_ethernet_twin() {
    let f = framed(&SLL2_V6, &TCP_V6_DATA);
    check(LinkType::LinuxSll2, &f, &TCP_V6_DATA);
    let s = summarize_link(LinkType::LinuxSll2, &f);
    assert_eq!((s.l3, s.src_port, s.dst_port, s.ip_len), (L3::Ipv6, 443, 60000, 72));
}

#[test]
fn linux_sll_with_an_802_1q_tag_walks_the_tag() {
    // Protocol 0x8100, then TCI (VID 42) and IPv4, as libpcap rebuilds a tag.
    let mut f = SLL_V4.to_vec();
    f[14..16].copy_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&[0x00, 0x2a, 0x08, 0x00]);
    f.extend_from_slice(&TCP_SYN_V4[14..]);
    let s = summarize_link(LinkType::LinuxSll, &f);
    assert_eq!((s.l3, s.vlan, s.ethertype, s.src_port), (L3::Ipv4, 42, 0x0800, 51234));
}

#[test]
fn linux_sll_arp_is_non_ip_with_macs_zero() {
    let mut f = SLL_V4.to_vec();
    f[14..16].copy_from_slice(&[0x08, 0x06]);
    f.extend_from_slice(&ARP_REQUEST[14..42]);
    let s = summarize_link(LinkType::LinuxSll, &f);
    assert_eq!((s.l3, s.ethertype, s.src_mac, s.dst_mac), (L3::NonIp, 0x0806, [0; 6], [0; 6]));
}

#[test]
fn raw_ip_picks_the_version_from_the_packet() {
    check(LinkType::RawIp, &TCP_SYN_V4[14..], &TCP_SYN_V4);
    check(LinkType::RawIp, &UDP_V6_HBH_DSTOPT[14..], &UDP_V6_HBH_DSTOPT);
    check(LinkType::RawIpv4, &IPV4_FRAG_LATER[14..], &IPV4_FRAG_LATER);
    check(LinkType::RawIpv6, &IPV6_FRAG_FIRST[14..], &IPV6_FRAG_FIRST);
    // Neither version 4 nor 6 under a raw IP link type: malformed IP, counted.
    assert_eq!(summarize_link(LinkType::RawIp, &[0x00; 40]).l3, L3::Malformed);
    assert_eq!(summarize_link(LinkType::RawIp, &[]).l3, L3::Malformed);
    assert_eq!(summarize_link(LinkType::RawIpv6, &TCP_SYN_V4[14..]).l3, L3::Malformed);
}

#[test]
fn null_and_loop_read_the_address_family() {
    check(LinkType::Null, &framed(&NULL_LE_V4, &ICMP_ECHO_V4), &ICMP_ECHO_V4);
    check(LinkType::Null, &framed(&NULL_BE_V6, &ICMPV6_ECHO), &ICMPV6_ECHO);
    check(LinkType::Loop, &framed(&LOOP_V6, &TCP_V6_DATA), &TCP_V6_DATA);
    // An unknown family (AF_IPX = 23 is IPv6 on Windows; 7 is nothing) is non-IP, EtherType 0.
    let s = summarize_link(LinkType::Null, &framed(&[7, 0, 0, 0], &TCP_SYN_V4));
    assert_eq!((s.l3, s.ethertype), (L3::NonIp, 0));
}

#[test]
fn framing_headers_cut_short_are_non_ip_with_ethertype_0() {
    let f = framed(&SLL2_V6, &TCP_V6_DATA);
    for (link, n) in [(LinkType::LinuxSll, 15), (LinkType::LinuxSll2, 19), (LinkType::Null, 3), (LinkType::Loop, 0)] {
        let s = summarize_link(link, &f[..n]);
        assert_eq!(s, PacketSummary::default(), "{link:?}");
        assert_eq!(summarize(&[0u8; 14]), s, "{link:?}: same as a zero Ethernet header");
    }
}

#[test]
fn every_prefix_of_every_framing_is_safe_and_matches_the_ethernet_form() {
    let frames: [(LinkType, Vec<u8>); 5] = [
        (LinkType::LinuxSll, framed(&SLL_V4, &TCP_SYN_V4)),
        (LinkType::LinuxSll2, framed(&SLL2_V6, &UDP_V6_HBH_DSTOPT)),
        (LinkType::RawIp, TCP_V6_DATA[14..].to_vec()),
        (LinkType::Null, framed(&NULL_LE_V4, &IPV4_FRAG_FIRST)),
        (LinkType::Loop, framed(&LOOP_V6, &IPV6_FRAG_LATER)),
    ];
    let mut buf = [0u8; 256];
    for (link, f) in &frames {
        for n in 0..=f.len() {
            let m = write_ethernet_form(*link, &f[..n], &mut buf);
            assert_eq!(summarize_link(*link, &f[..n]), summarize(&buf[..m]), "{link:?} cut to {n}");
        }
    }
}

/// TCP_SYN_V4 turned into a TSO packet as captured before segmentation:
/// total length 0 and 1000 bytes of payload after the TCP header.
fn tso_v4() -> Vec<u8> {
    let mut f = TCP_SYN_V4.to_vec();
    f[16] = 0;
    f[17] = 0;
    f.resize(74 + 1000, 0x61);
    f
}

#[test]
fn ipv4_total_length_zero_counts_the_frame() {
    let f = tso_v4();
    let s = summarize(&f);
    assert_eq!((s.l3, s.ip_len, s.ip_len_from_frame), (L3::Ipv4, 20 + 40 + 1000, true));
    assert_eq!((s.src_port, s.dst_port), (51234, 443));
    // Cut by a snap length or a queue slot: the wire length still counts.
    let s = summarize_wire(&f[..128], f.len() as u32);
    assert_eq!((s.ip_len, s.src_port), (1060, 51234));
    let s = summarize_wire(&f[..128], 64_014 + 14);
    assert_eq!(s.ip_len, 64_014);
    // The same packet as raw IP and in SLL.
    assert_eq!(summarize_link(LinkType::RawIp, &f[14..]).ip_len, 1060);
    assert_eq!(summarize_link(LinkType::LinuxSll, &framed(&SLL_V4, &f)).ip_len, 1060);
    // A length from the header is never touched by the wire length.
    let s = summarize_wire(&TCP_SYN_V4, 9000);
    assert_eq!((s.ip_len, s.ip_len_from_frame), (60, false));
}

#[test]
fn inconsistent_ipv4_lengths_stay_malformed() {
    let f = tso_v4();
    // Total length 0 and nothing after the header.
    assert_eq!(summarize(&f[..34]).l3, L3::Malformed);
    // Total length 1..19: below the header.
    let mut g = f.clone();
    g[17] = 12;
    assert_eq!(summarize(&g).l3, L3::Malformed);
    assert_eq!(summarize_wire(&g, 70_000).ip_len, 0);
}

/// TCP_V6_DATA as a jumbogram: payload length 0, next header Hop-by-Hop with
/// a Jumbo Payload option of 70 000, the TCP segment (32 bytes captured).
fn jumbo_v6() -> Vec<u8> {
    let mut f = TCP_V6_DATA[..54].to_vec();
    f[18] = 0;
    f[19] = 0;
    f[20] = 0; // next header: Hop-by-Hop
    f.extend_from_slice(&[6, 0, 0xc2, 4, 0x00, 0x01, 0x11, 0x70]); // -> TCP, Jumbo 70 000
    f.extend_from_slice(&TCP_V6_DATA[54..]);
    f
}

#[test]
fn ipv6_jumbogram_counts_the_frame() {
    let f = jumbo_v6();
    let s = summarize(&f);
    assert_eq!((s.l3, s.proto, s.src_port, s.dst_port), (L3::Ipv6, 6, 443, 60000));
    assert_eq!((s.ip_len, s.ip_len_from_frame), (40 + 8 + 32, true));
    // On the wire it was 40 + 70 000 bytes: the capture kept 94.
    let s = summarize_wire(&f, 14 + 40 + 70_000);
    assert_eq!(s.ip_len, 70_040);
    assert_eq!(summarize_link(LinkType::RawIpv6, &f[14..]).ip_len, 80);
}

#[test]
fn an_ipv6_jumbogram_claiming_more_than_its_frame_is_malformed() {
    let f = jumbo_v6();
    // The option says 70 000 bytes after the header; the frame had 80 of IP on the wire.
    let bad = summarize_wire(&f, f.len() as u32);
    assert_eq!(
        bad,
        PacketSummary {
            l3: L3::Malformed,
            ethertype: 0x86dd,
            src_mac: bad.src_mac,
            dst_mac: bad.dst_mac,
            ..Default::default()
        }
    );
    // One byte short of the claim on the wire: malformed; the claim exactly: counted.
    assert_eq!(summarize_wire(&f, 14 + 40 + 70_000 - 1).l3, L3::Malformed);
    let s = summarize_wire(&f, 14 + 40 + 70_000);
    assert_eq!((s.l3, s.ip_len), (L3::Ipv6, 70_040));
    // The decapsulating parser, with no tunnel enabled, decides the same.
    let none = wire::tunnel::Decap::default();
    match wire::tunnel::summarize_decap(&f, f.len() as u32, &none) {
        wire::tunnel::Decapsulated::Plain(s) => assert_eq!(s.l3, L3::Malformed),
        other => panic!("not plain: {other:?}"),
    }
}

#[test]
fn ipv6_payload_length_zero_without_a_jumbo_option_counts_40() {
    // Payload length 0, next header TCP: no jumbo option, as before (40 bytes).
    let mut f = TCP_V6_DATA;
    f[18] = 0;
    f[19] = 0;
    let s = summarize_wire(&f, 70_000);
    assert_eq!((s.l3, s.ip_len, s.ip_len_from_frame), (L3::Ipv6, 40, false));
    // Hop-by-Hop without the option: 40 too.
    let mut g = jumbo_v6();
    g[56] = 1; // PadN instead of Jumbo
    let s = summarize_wire(&g, 70_000);
    assert_eq!((s.ip_len, s.ip_len_from_frame), (40, false));
}

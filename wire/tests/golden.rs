//! Golden-bytes tests: real frames (tests/common/frames.rs) through
//! `summarize`, every field checked against values read off the hex by hand.
mod common;

use common::frames::*;
use wire::{summarize, tcp, Direction, FlowKey, Fragment, PacketSummary, L3};

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0u8; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn v6(last: u8) -> [u8; 16] {
    let mut x = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    x[15] = last;
    x
}

const MAC_A: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const MAC_B: [u8; 6] = [0x00, 0x1b, 0x21, 0x3a, 0x4f, 0x01];

#[test]
fn golden_tcp_syn_ipv4() {
    let s = summarize(&TCP_SYN_V4);
    assert_eq!(
        s,
        PacketSummary {
            l3: L3::Ipv4,
            ethertype: 0x0800,
            src_mac: MAC_A,
            dst_mac: MAC_B,
            vlan: 0,
            vlan_inner: 0,
            ip_version: 4,
            src: v4([192, 168, 1, 10]),
            dst: v4([93, 184, 216, 34]),
            proto: 6,
            src_port: 51234,
            dst_port: 443,
            ip_len: 60,
            tcp_flags: tcp::flags::SYN,
            fragment: Fragment::None,
            frag_id: 0,
            ip_len_from_frame: false,
        }
    );
}

#[test]
fn golden_tcp_syn_and_synack_share_a_key() {
    let syn = summarize(&TCP_SYN_V4);
    let synack = summarize(&TCP_SYNACK_V4);
    assert_eq!(synack.tcp_flags, tcp::flags::SYN | tcp::flags::ACK);
    assert_eq!(synack.ip_len, 48);
    let (k1, d1) = FlowKey::from_summary(&syn);
    let (k2, d2) = FlowKey::from_summary(&synack);
    assert_eq!(k1, k2);
    assert_ne!(d1, d2);
    // 93.184.216.34 < 192.168.1.10 bytewise: the server is lo.
    assert_eq!(d1, Direction::HiToLo);
    assert_eq!((k1.port_lo, k1.port_hi), (443, 51234));
    assert_eq!(wire::zbalance_ip_hash(&syn), wire::zbalance_ip_hash(&synack));
    assert_eq!(wire::symmetric_5tuple_hash(&syn), wire::symmetric_5tuple_hash(&synack));
}

#[test]
fn golden_udp_ipv6_hop_by_hop_and_destination_options() {
    let s = summarize(&UDP_V6_HBH_DSTOPT);
    assert_eq!(
        s,
        PacketSummary {
            l3: L3::Ipv6,
            ethertype: 0x86dd,
            src_mac: MAC_A,
            dst_mac: MAC_B,
            vlan: 0,
            vlan_inner: 0,
            ip_version: 6,
            src: v6(1),
            dst: v6(2),
            proto: 17,
            src_port: 5353,
            dst_port: 53,
            ip_len: 28 + 40,
            tcp_flags: 0,
            fragment: Fragment::None,
            frag_id: 0,
            ip_len_from_frame: false,
        }
    );
}

#[test]
fn ipv6_ip_len_is_payload_plus_40() {
    for f in [&UDP_V6_HBH_DSTOPT[..], &IPV6_FRAG_FIRST[..], &IPV6_FRAG_LATER[..], &ICMPV6_ECHO[..], &TCP_V6_DATA[..]] {
        let payload_len = u32::from(u16::from_be_bytes([f[18], f[19]]));
        let s = summarize(f);
        assert_eq!(s.ip_len, payload_len + 40);
        // Untruncated golden frames: the frame is exactly Ethernet + IP.
        assert_eq!(s.ip_len as usize, f.len() - 14);
    }
}

#[test]
fn golden_ipv4_first_fragment_has_ports() {
    let s = summarize(&IPV4_FRAG_FIRST);
    assert_eq!(s.l3, L3::Ipv4);
    assert_eq!(s.fragment, Fragment::First);
    assert_eq!((s.src, s.dst), (v4([10, 1, 2, 3]), v4([10, 9, 8, 7])));
    assert_eq!((s.proto, s.src_port, s.dst_port), (17, 40000, 9999));
    assert_eq!(s.ip_len, 44);
    assert_eq!(s.frag_id, 0xbeef);
}

#[test]
fn golden_ipv4_later_fragment_has_ports_zero_and_ignores_padding() {
    let s = summarize(&IPV4_FRAG_LATER);
    assert_eq!(s.l3, L3::Ipv4);
    assert_eq!(s.fragment, Fragment::Later);
    assert_eq!((s.proto, s.src_port, s.dst_port, s.tcp_flags), (17, 0, 0, 0));
    assert_eq!(s.ip_len, 44);
    let (k, _) = FlowKey::from_summary(&s);
    assert_eq!((k.port_lo, k.port_hi, k.proto), (0, 0, 17));
    assert_eq!(s.frag_id, 0xbeef, "the first fragment's id: the detector finds its ports by it");
}

#[test]
fn golden_ipv6_fragments() {
    let first = summarize(&IPV6_FRAG_FIRST);
    assert_eq!(first.l3, L3::Ipv6);
    assert_eq!(first.fragment, Fragment::First);
    assert_eq!((first.proto, first.src_port, first.dst_port), (17, 40000, 9999));
    assert_eq!(first.ip_len, 40 + 8 + 24);
    let later = summarize(&IPV6_FRAG_LATER);
    assert_eq!(later.l3, L3::Ipv6);
    assert_eq!(later.fragment, Fragment::Later);
    assert_eq!((later.proto, later.src_port, later.dst_port), (17, 0, 0));
    assert_eq!((later.src, later.dst), (v6(1), v6(2)));
    assert_eq!((first.frag_id, later.frag_id), (0xcafe_0001, 0xcafe_0001), "32-bit ids of the Fragment header");
}

#[test]
fn golden_qinq_802_1ad_then_802_1q() {
    let s = summarize(&QINQ_UDP_V4);
    assert_eq!(s.l3, L3::Ipv4);
    assert_eq!(s.ethertype, 0x0800);
    assert_eq!((s.vlan, s.vlan_inner), (100, 200));
    assert_eq!((s.src, s.dst), (v4([172, 16, 0, 5]), v4([8, 8, 8, 8])));
    assert_eq!((s.proto, s.src_port, s.dst_port), (17, 53124, 53));
    assert_eq!(s.ip_len, 20 + 8 + 29);
    let (k, _) = FlowKey::from_summary(&s);
    assert_eq!((k.vlan, k.vlan_inner), (100, 200));
}

#[test]
fn golden_0x9100_tag_and_padding() {
    let s = summarize(&TAG_9100_TCP_V4);
    assert_eq!((s.l3, s.ethertype, s.vlan, s.vlan_inner), (L3::Ipv4, 0x0800, 7, 0));
    assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (22, 50022, tcp::flags::ACK));
    assert_eq!(s.ip_len, 40);
}

#[test]
fn triple_tag_records_two_and_skips_the_third() {
    // S-tag 10, C-tag 20, C-tag 30, then the IPv4 of TCP_SYN_V4.
    let mut f = [0u8; 74 + 12];
    f[..12].copy_from_slice(&TCP_SYN_V4[..12]);
    f[12..26].copy_from_slice(&[0x88, 0xa8, 0x00, 10, 0x81, 0x00, 0x00, 20, 0x81, 0x00, 0x00, 30, 0x08, 0x00]);
    f[26..].copy_from_slice(&TCP_SYN_V4[14..]);
    let s = summarize(&f);
    assert_eq!((s.l3, s.vlan, s.vlan_inner), (L3::Ipv4, 10, 20));
    assert_eq!((s.src_port, s.dst_port), (51234, 443));
}

#[test]
fn endless_tags_stop_as_non_ip() {
    let mut f = [0u8; 14 + 4 * 12];
    f[12] = 0x81;
    for t in f[14..].chunks_mut(4) {
        t.copy_from_slice(&[0x00, 0x05, 0x81, 0x00]);
    }
    let s = summarize(&f);
    assert_eq!((s.l3, s.ethertype, s.vlan, s.vlan_inner), (L3::NonIp, 0x8100, 5, 5));
}

#[test]
fn golden_arp_is_non_ip_with_macs() {
    let s = summarize(&ARP_REQUEST);
    assert_eq!(
        s,
        PacketSummary { l3: L3::NonIp, ethertype: 0x0806, src_mac: MAC_A, dst_mac: [0xff; 6], ..Default::default() }
    );
    assert_eq!(wire::zbalance_ip_hash(&s), 0);
}

#[test]
fn golden_icmp_has_ports_zero() {
    let s = summarize(&ICMP_ECHO_V4);
    assert_eq!((s.l3, s.proto, s.src_port, s.dst_port), (L3::Ipv4, 1, 0, 0));
    assert_eq!(s.ip_len, 36);
    let s = summarize(&ICMPV6_ECHO);
    assert_eq!((s.l3, s.proto, s.src_port, s.dst_port), (L3::Ipv6, 58, 0, 0));
    // The ICMP view still reads type and code.
    let icmp = wire::icmp::Packet::new_checked(&ICMPV6_ECHO[54..]).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (128, 0));
}

#[test]
fn golden_tcp_over_ipv6() {
    let s = summarize(&TCP_V6_DATA);
    assert_eq!((s.l3, s.proto, s.src_port, s.dst_port), (L3::Ipv6, 6, 443, 60000));
    assert_eq!(s.tcp_flags, tcp::flags::PSH | tcp::flags::ACK);
    assert_eq!(s.ip_len, 40 + 20 + 12);
}

// ---- truncated and malformed frames ----

#[test]
fn frames_under_14_bytes_are_non_ip_with_ethertype_0() {
    for n in 0..14 {
        assert_eq!(summarize(&TCP_SYN_V4[..n]), PacketSummary::default(), "len {n}");
    }
}

#[test]
fn cut_ip_header_is_malformed_but_keeps_macs() {
    for n in 14..34 {
        let s = summarize(&TCP_SYN_V4[..n]);
        assert_eq!(s.l3, L3::Malformed, "len {n}");
        assert_eq!((s.ethertype, s.src_mac, s.ip_version, s.ip_len), (0x0800, MAC_A, 0, 0));
    }
    for n in 14..54 {
        assert_eq!(summarize(&UDP_V6_HBH_DSTOPT[..n]).l3, L3::Malformed, "len {n}");
    }
}

#[test]
fn truncated_capture_keeps_header_length_and_ports_when_present() {
    // Header only: ip_len from the header, no ports.
    let s = summarize(&TCP_SYN_V4[..34]);
    assert_eq!((s.l3, s.ip_len, s.src_port, s.dst_port, s.tcp_flags), (L3::Ipv4, 60, 0, 0, 0));
    // 3 transport bytes: still no ports.
    assert_eq!(summarize(&TCP_SYN_V4[..37]).src_port, 0);
    // 4 transport bytes: ports, no flags.
    let s = summarize(&TCP_SYN_V4[..38]);
    assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (51234, 443, 0));
    // 14 transport bytes: flags too.
    let s = summarize(&TCP_SYN_V4[..48]);
    assert_eq!((s.src_port, s.tcp_flags, s.ip_len), (51234, tcp::flags::SYN, 60));
}

#[test]
fn cut_ipv6_extension_chain_stays_ipv6_without_ports() {
    // Fixed header complete, hop-by-hop cut after 4 bytes.
    let s = summarize(&UDP_V6_HBH_DSTOPT[..58]);
    assert_eq!((s.l3, s.proto, s.src_port, s.dst_port), (L3::Ipv6, 0, 0, 0));
    assert_eq!((s.src, s.dst, s.ip_len), (v6(1), v6(2), 68));
    // Hop-by-hop complete, destination options cut.
    let s = summarize(&UDP_V6_HBH_DSTOPT[..66]);
    assert_eq!((s.l3, s.proto, s.src_port), (L3::Ipv6, 60, 0));
    // Both complete, UDP cut to 2 bytes: proto known, ports 0.
    let s = summarize(&UDP_V6_HBH_DSTOPT[..72]);
    assert_eq!((s.l3, s.proto, s.src_port), (L3::Ipv6, 17, 0));
}

#[test]
fn ipv4_length_faults_are_malformed() {
    let mut f = TCP_SYN_V4;
    f[17] = 19; // total length 19 < header 20
    assert_eq!(summarize(&f).l3, L3::Malformed);
    let mut f = TCP_SYN_V4;
    f[14] = 0x44; // IHL 4
    assert_eq!(summarize(&f).l3, L3::Malformed);
    let mut f = TCP_SYN_V4;
    f[14] = 0x65; // version 6 under EtherType IPv4
    assert_eq!(summarize(&f).l3, L3::Malformed);
    let mut f = UDP_V6_HBH_DSTOPT;
    f[14] = 0x40; // version 4 under EtherType IPv6
    assert_eq!(summarize(&f).l3, L3::Malformed);
}

#[test]
fn ipv4_options_are_skipped() {
    // TCP_SYN_V4 with 4 bytes of IP options (NOP NOP NOP EOL).
    let mut f = [0u8; 78];
    f[..34].copy_from_slice(&TCP_SYN_V4[..34]);
    f[14] = 0x46;
    f[17] = 64;
    f[34..38].copy_from_slice(&[1, 1, 1, 0]);
    f[38..].copy_from_slice(&TCP_SYN_V4[34..]);
    let s = summarize(&f);
    assert_eq!((s.l3, s.ip_len, s.src_port, s.dst_port), (L3::Ipv4, 64, 51234, 443));
    assert_eq!(s.tcp_flags, tcp::flags::SYN);
}

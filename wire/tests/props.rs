//! Property tests: `summarize` never panics (arbitrary bytes, mutated and
//! truncated real frames), keys and hashes are direction-free.
mod common;

use common::frames::ALL;
use proptest::prelude::*;
use wire::{summarize, symmetric_5tuple_hash, zbalance_ip_hash, Direction, FlowKey, Fragment, PacketSummary, L3};

/// Everything a consumer does with one frame; must not panic.
fn exercise(frame: &[u8]) -> PacketSummary {
    let s = summarize(frame);
    let _ = FlowKey::from_summary(&s);
    let _ = zbalance_ip_hash(&s);
    let _ = symmetric_5tuple_hash(&s);
    // Invariants every summary holds.
    match s.l3 {
        L3::Ipv4 => assert_eq!(s.ip_version, 4),
        L3::Ipv6 => {
            assert_eq!(s.ip_version, 6);
            assert!(s.ip_len >= 40);
        }
        L3::NonIp | L3::Malformed => {
            assert_eq!(s.ip_version, 0);
            assert_eq!((s.src_port, s.dst_port, s.ip_len), (0, 0, 0));
        }
    }
    if frame.len() < 14 {
        assert_eq!(s, PacketSummary::default());
    }
    if s.fragment == Fragment::Later {
        assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (0, 0, 0));
    }
    s
}

fn any_summary() -> impl Strategy<Value = PacketSummary> {
    (
        prop_oneof![Just(L3::Ipv4), Just(L3::Ipv6)],
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        any::<(u16, u16, u8, u16, u16)>(),
        any::<bool>(),
    )
        .prop_map(|(l3, mut src, mut dst, (sp, dp, proto, vlan, vlan_inner), same_addr)| {
            let ip_version = if l3 == L3::Ipv4 { 4 } else { 6 };
            if l3 == L3::Ipv4 {
                src[4..].fill(0);
                dst[4..].fill(0);
            }
            if same_addr {
                dst = src;
            }
            PacketSummary {
                l3,
                ip_version,
                src,
                dst,
                src_port: sp,
                dst_port: dp,
                proto,
                vlan: vlan & 0xfff,
                vlan_inner: vlan_inner & 0xfff,
                ..Default::default()
            }
        })
}

fn reversed(s: &PacketSummary) -> PacketSummary {
    PacketSummary {
        src: s.dst,
        dst: s.src,
        src_port: s.dst_port,
        dst_port: s.src_port,
        src_mac: s.dst_mac,
        dst_mac: s.src_mac,
        ..*s
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn summarize_never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(&b);
    }

    #[test]
    fn summarize_never_panics_on_ip_like_bytes(
        et in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), Just(0x88a8), Just(0x9100)],
        b in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(&b);
        exercise(&f);
    }

    #[test]
    fn every_framing_never_panics_and_equals_its_ethernet_form(
        link in prop_oneof![
            Just(wire::link::LinkType::LinuxSll), Just(wire::link::LinkType::LinuxSll2),
            Just(wire::link::LinkType::RawIp), Just(wire::link::LinkType::RawIpv4),
            Just(wire::link::LinkType::RawIpv6), Just(wire::link::LinkType::Null),
            Just(wire::link::LinkType::Loop), Just(wire::link::LinkType::Ethernet),
        ],
        b in proptest::collection::vec(any::<u8>(), 0..200),
        wire_len in any::<u32>(),
    ) {
        let mut out = [0u8; 256];
        let n = wire::link::write_ethernet_form(link, &b, &mut out);
        let s = wire::summarize_link(link, &b);
        prop_assert_eq!(s, exercise(&out[..n]));
        let w = wire::summarize_wire(&out[..n], wire_len);
        prop_assert!(w.ip_len >= s.ip_len);
    }

    #[test]
    fn summarize_never_panics_on_mutated_frames(
        which in 0..ALL.len(),
        muts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut f = ALL[which].1.to_vec();
        for (i, v) in muts {
            let at = i.index(f.len());
            f[at] = v;
        }
        exercise(&f);
        let n = cut.index(f.len() + 1);
        exercise(&f[..n]);
    }

    #[test]
    fn truncating_a_real_frame_never_panics_and_keeps_macs(which in 0..ALL.len(), cut in any::<prop::sample::Index>()) {
        let f = ALL[which].1;
        let n = cut.index(f.len() + 1);
        let s = exercise(&f[..n]);
        if n >= 14 {
            prop_assert_eq!(&s.dst_mac[..], &f[..6]);
            prop_assert_eq!(&s.src_mac[..], &f[6..12]);
        }
    }

    #[test]
    fn key_is_symmetric(s in any_summary()) {
        let r = reversed(&s);
        let (k1, d1) = FlowKey::from_summary(&s);
        let (k2, d2) = FlowKey::from_summary(&r);
        prop_assert_eq!(k1, k2);
        if (s.src, s.src_port) == (s.dst, s.dst_port) {
            prop_assert_eq!((d1, d2), (Direction::LoToHi, Direction::LoToHi));
        } else {
            prop_assert_ne!(d1, d2);
        }
        prop_assert!((k1.addr_lo, k1.port_lo) <= (k1.addr_hi, k1.port_hi));
        prop_assert_eq!((k1.proto, k1.ip_version, k1.vlan, k1.vlan_inner),
                        (s.proto, s.ip_version, s.vlan, s.vlan_inner));
        // The direction says where the source went.
        let (src_addr, src_port) = match d1 {
            Direction::LoToHi => (k1.addr_lo, k1.port_lo),
            Direction::HiToLo => (k1.addr_hi, k1.port_hi),
        };
        prop_assert_eq!((src_addr, src_port), (s.src, s.src_port));
    }

    #[test]
    fn hashes_are_symmetric(s in any_summary()) {
        let r = reversed(&s);
        prop_assert_eq!(zbalance_ip_hash(&s), zbalance_ip_hash(&r));
        prop_assert_eq!(symmetric_5tuple_hash(&s), symmetric_5tuple_hash(&r));
    }

    #[test]
    fn real_frame_with_swapped_ends_gives_same_key(which in 0..ALL.len()) {
        // Swap the addresses and ports in the bytes of a real IP frame.
        let f = ALL[which].1;
        let s = summarize(f);
        prop_assume!(s.l3 == L3::Ipv4 || s.l3 == L3::Ipv6);
        let mut g = f.to_vec();
        let (l3, alen) = ip_offset(f, s.l3);
        let (sa, da) = if s.l3 == L3::Ipv4 { (l3 + 12, l3 + 16) } else { (l3 + 8, l3 + 24) };
        for i in 0..alen {
            g.swap(sa + i, da + i);
        }
        if s.src_port != 0 || s.dst_port != 0 {
            let l4 = find_ports(&g, s.src_port, s.dst_port);
            g.swap(l4, l4 + 2);
            g.swap(l4 + 1, l4 + 3);
        }
        let t = summarize(&g);
        let (k1, d1) = FlowKey::from_summary(&s);
        let (k2, d2) = FlowKey::from_summary(&t);
        prop_assert_eq!(k1, k2);
        prop_assert_ne!(d1, d2);
        prop_assert_eq!(zbalance_ip_hash(&s), zbalance_ip_hash(&t));
        prop_assert_eq!(symmetric_5tuple_hash(&s), symmetric_5tuple_hash(&t));
    }
}

/// Offset of the IP header after any VLAN tags, and the address length.
fn ip_offset(f: &[u8], l3: L3) -> (usize, usize) {
    let mut at = 12;
    while matches!(u16::from_be_bytes([f[at], f[at + 1]]), 0x8100 | 0x88a8 | 0x9100) {
        at += 4;
    }
    (at + 2, if l3 == L3::Ipv4 { 4 } else { 16 })
}

/// Offset of the (src, dst) port pair in the frame (last occurrence: the
/// transport header follows the addresses).
fn find_ports(f: &[u8], sp: u16, dp: u16) -> usize {
    let mut pat = [0u8; 4];
    pat[..2].copy_from_slice(&sp.to_be_bytes());
    pat[2..].copy_from_slice(&dp.to_be_bytes());
    f.windows(4).rposition(|w| w == pat).expect("ports in frame")
}

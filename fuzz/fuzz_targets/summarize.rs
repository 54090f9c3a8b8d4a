//! Fuzz target: any byte string through everything a station does with a
//! frame. Guarantees checked: nothing panics, and the summary's invariants
//! and the key/hash symmetry hold for every input; with every tunnel
//! decapsulated (`CJ_DECAP`), a frame is its own summary unless its inside
//! is a usable IP packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::tunnel::{summarize_decap, Decap, Decapsulated};
use wire::{summarize, summarize_wire, symmetric_5tuple_hash, zbalance_ip_hash, FlowKey, Fragment, PacketSummary, L3};

fuzz_target!(|frame: &[u8]| {
    let s = summarize(frame);
    let (key, dir) = FlowKey::from_summary(&s);
    let zb = zbalance_ip_hash(&s);
    let h = symmetric_5tuple_hash(&s);

    if frame.len() < 14 {
        assert_eq!(s, PacketSummary::default());
    }
    match s.l3 {
        L3::Ipv4 => assert_eq!(s.ip_version, 4),
        L3::Ipv6 => assert!(s.ip_version == 6 && s.ip_len >= 40),
        L3::NonIp | L3::Malformed => {
            assert_eq!((s.ip_version, s.src_port, s.dst_port, s.ip_len), (0, 0, 0, 0));
            assert_eq!(zb, 0);
        }
    }
    if s.fragment == Fragment::Later {
        assert_eq!((s.src_port, s.dst_port, s.tcp_flags), (0, 0, 0));
    }

    // The reply direction maps to the same key, the opposite direction, the same hashes.
    let r = PacketSummary { src: s.dst, dst: s.src, src_port: s.dst_port, dst_port: s.src_port, ..s };
    let (rkey, rdir) = FlowKey::from_summary(&r);
    assert_eq!(key, rkey);
    if (s.src, s.src_port) != (s.dst, s.dst_port) {
        assert_ne!(dir, rdir);
    }
    assert_eq!(zb, zbalance_ip_hash(&r));
    assert_eq!(h, symmetric_5tuple_hash(&r));

    let all = Decap { vxlan: Some(4789), geneve: Some(6081), gre: true, ipip: true };
    let wire_len = frame.len() as u32;
    match summarize_decap(frame, wire_len, &all) {
        Decapsulated::Plain(o) => {
            assert_eq!(o, summarize_wire(frame, wire_len));
            assert!(!all.matches(&o));
        }
        Decapsulated::Undecoded(o) => {
            assert_eq!(o, summarize_wire(frame, wire_len));
            assert!(all.matches(&o));
        }
        Decapsulated::Inner(i, t) => {
            assert!(i.is_ip() && t.kind.is_some() && all.matches(&s));
            assert_eq!((i.vlan, i.vlan_inner), (s.vlan, s.vlan_inner));
        }
    }
});

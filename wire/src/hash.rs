//! Symmetric packet hashes for spreading flows over queues.
//!
//! Guarantees: both functions are pure, never panic, never allocate, and give
//! the same value for both directions of a flow (swap source and destination
//! address and port: same hash). Non-IP and malformed summaries hash to a
//! fixed value, so a balancer keeps them on one queue.
//!
//! - [`zbalance_ip_hash`] reproduces PF_RING ZC's `pfring_zc_builtin_ip_hash`
//!   (zbalance_ipc `-m 1`), so a station queue gets the packets a zbalance
//!   queue would. Its distribution is as weak as the original's (a plain sum).
//! - [`symmetric_5tuple_hash`] hashes the canonical [`FlowKey`] (addresses,
//!   ports, protocol, IP version, both VLAN ids) through a multiply /
//!   xor-shift mixer: good spread, fixed seed, same value on every host and
//!   every run.
use crate::flow_key::FlowKey;
use crate::summary::{PacketSummary, L3};

/// PF_RING ZC's built-in IP hash: sum of source and destination address
/// (IPv6: sum of the 32-bit words of both), as zbalance_ipc mode 1 uses.
///
/// `pfring_zc_builtin_ip_hash` itself ships only in the closed
/// `libpfring_zc` binaries; its declaration (ntop/PF_RING
/// `userland/lib/pfring_zc.h`) documents "Hash input: <src ip, dst ip>". The
/// arithmetic matched here is PF_RING's open hash over the same parsed
/// fields, ntop/PF_RING `userland/lib/pfring_utils.c` `pfring_hash_pkt()` and
/// `kernel/pf_ring.c` `hash_pkt()` (commit dc0ae0d6, 2024-10-17), restricted
/// to the address terms:
///
/// - IPv4: `ip_src.v4 + ip_dst.v4`, where the parser stored
///   `ntohl(saddr)` / `ntohl(daddr)`: host-order values, wrapping `u32` sum;
/// - IPv6: `s6_addr32[0..4]` of source plus those of destination, where the
///   addresses were `memcpy`ed in network order and are read as native
///   32-bit words. On the little-endian hosts libpfring_zc ships for
///   (x86_64, aarch64) that is `u32::from_le_bytes` of each 4-byte group,
///   which is what this function uses on every host;
/// - anything else (non-IP, malformed): 0.
///
/// Symmetric by construction (addition commutes). VLAN, protocol and ports
/// are not inputs, as in the original.
pub fn zbalance_ip_hash(s: &PacketSummary) -> u32 {
    match s.l3 {
        L3::Ipv4 => word_be(&s.src, 0).wrapping_add(word_be(&s.dst, 0)),
        L3::Ipv6 => {
            let mut h = 0u32;
            for i in 0..4 {
                h = h.wrapping_add(word_le(&s.src, i * 4)).wrapping_add(word_le(&s.dst, i * 4));
            }
            h
        }
        L3::NonIp | L3::Malformed => 0,
    }
}

/// A direction-free hash of (addresses, ports, protocol, VLANs).
///
/// Computed over the canonical [`FlowKey`], so both directions agree; the IP
/// version is an input too. Non-IP summaries hash their (zero) key: one
/// fixed value per VLAN pair.
pub fn symmetric_5tuple_hash(s: &PacketSummary) -> u32 {
    let (k, _) = FlowKey::from_summary(s);
    let words = [
        half(&k.addr_lo, 0),
        half(&k.addr_lo, 8),
        half(&k.addr_hi, 0),
        half(&k.addr_hi, 8),
        u64::from(k.port_lo) | u64::from(k.port_hi) << 16 | u64::from(k.proto) << 32 | u64::from(k.ip_version) << 40,
        u64::from(k.vlan) | u64::from(k.vlan_inner) << 16,
    ];
    let mut h: u64 = SEED;
    for w in words {
        h = (h.rotate_left(23) ^ w).wrapping_mul(MUL);
    }
    let h = fmix64(h);
    (h ^ (h >> 32)) as u32
}

/// Fixed seed: the fractional part of the golden ratio.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Odd multiplier (splitmix64's first constant).
const MUL: u64 = 0xbf58_476d_1ce4_e5b9;

/// MurmurHash3's 64-bit finalizer: full avalanche.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[inline]
fn word_be(a: &[u8; 16], at: usize) -> u32 {
    u32::from_be_bytes([a[at], a[at + 1], a[at + 2], a[at + 3]])
}

#[inline]
fn word_le(a: &[u8; 16], at: usize) -> u32 {
    u32::from_le_bytes([a[at], a[at + 1], a[at + 2], a[at + 3]])
}

#[inline]
fn half(a: &[u8; 16], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&a[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(src: [u8; 4], dst: [u8; 4]) -> PacketSummary {
        let mut s = PacketSummary { l3: L3::Ipv4, ip_version: 4, ..Default::default() };
        s.src[..4].copy_from_slice(&src);
        s.dst[..4].copy_from_slice(&dst);
        s
    }

    #[test]
    fn zbalance_ipv4_is_host_order_sum() {
        // 10.0.0.1 = 0x0a000001, 10.0.0.2 = 0x0a000002.
        let s = v4([10, 0, 0, 1], [10, 0, 0, 2]);
        assert_eq!(zbalance_ip_hash(&s), 0x1400_0003);
        // Wrapping: 255.255.255.255 + 0.0.0.2 = 1.
        let s = v4([255, 255, 255, 255], [0, 0, 0, 2]);
        assert_eq!(zbalance_ip_hash(&s), 1);
    }

    #[test]
    fn zbalance_ipv6_is_native_word_sum() {
        let mut s = PacketSummary { l3: L3::Ipv6, ip_version: 6, ..Default::default() };
        // 2001:db8::1 -> 2001:db8::2
        s.src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        s.dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        // s6_addr32[0] on a little-endian host reads 0xb80d0120, twice;
        // s6_addr32[3] reads 0x01000000 and 0x02000000.
        let expect = 0xb80d_0120u32.wrapping_mul(2).wrapping_add(0x0100_0000).wrapping_add(0x0200_0000);
        assert_eq!(zbalance_ip_hash(&s), expect);
    }

    #[test]
    fn zbalance_non_ip_is_zero() {
        let mut s = v4([1, 2, 3, 4], [5, 6, 7, 8]);
        s.l3 = L3::NonIp;
        assert_eq!(zbalance_ip_hash(&s), 0);
        s.l3 = L3::Malformed;
        assert_eq!(zbalance_ip_hash(&s), 0);
    }

    /// `symmetric_5tuple_hash` of 10.0.0.1 <-> 10.0.0.2, ports 0, as released.
    const PINNED_10_0_0_1_TO_10_0_0_2: u32 = 620_036_483;

    #[test]
    fn five_tuple_hash_is_stable_and_spreads() {
        // Fixed seed: the same value on every host and run (pinned: a change of
        // seed or mixer moves flows between queues of running stations).
        let a = symmetric_5tuple_hash(&v4([10, 0, 0, 1], [10, 0, 0, 2]));
        assert_eq!(a, PINNED_10_0_0_1_TO_10_0_0_2);
        assert_eq!(a, symmetric_5tuple_hash(&v4([10, 0, 0, 2], [10, 0, 0, 1])));
        // Sequential sources spread evenly over 8 queues.
        let mut buckets = [0u32; 8];
        for i in 0..8192u32 {
            let mut s = v4([10, 0, 0, 1], [0; 4]);
            s.dst[..4].copy_from_slice(&(0xc0a8_0000 + i).to_be_bytes());
            s.src_port = 40000;
            s.dst_port = 443;
            buckets[(symmetric_5tuple_hash(&s) % 8) as usize] += 1;
        }
        for b in buckets {
            assert!((900..1150).contains(&b), "uneven: {buckets:?}");
        }
    }

    #[test]
    fn five_tuple_hash_sees_every_field() {
        let base = {
            let mut s = v4([10, 0, 0, 1], [10, 0, 0, 2]);
            s.proto = 6;
            s.src_port = 1000;
            s.dst_port = 80;
            s
        };
        let h = symmetric_5tuple_hash(&base);
        let variants = [
            PacketSummary { proto: 17, ..base },
            PacketSummary { src_port: 1001, ..base },
            PacketSummary { dst_port: 81, ..base },
            PacketSummary { vlan: 1, ..base },
            PacketSummary { vlan_inner: 1, ..base },
            PacketSummary { ip_version: 6, ..base },
        ];
        for v in variants {
            assert_ne!(symmetric_5tuple_hash(&v), h, "{v:?}");
        }
    }
}

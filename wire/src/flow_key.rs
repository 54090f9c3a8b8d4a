//! The canonical, direction-free flow key.
//!
//! Guarantees: for any summary `s` and the summary `r` of the reply (source
//! and destination address and port swapped, everything else equal),
//! `FlowKey::from_summary(&s).0 == FlowKey::from_summary(&r).0` and the two
//! directions are opposite, except when both ends are identical (same
//! address and port), where both are [`Direction::LoToHi`].
//!
//! Ordering: the sides are compared as (address bytes, port), address first,
//! lexicographically; the smaller one is `lo`. The key also holds the
//! protocol, the IP version and both VLAN ids, so the same 5-tuple on two
//! VLANs is two flows. A later fragment's summary has ports 0, so its key
//! has ports 0 too (see [`crate::ipv4`]); the `detector` keys it with its
//! datagram's ports when it knows them. For a non-IP summary the key is all zero apart from the
//! VLAN ids: callers key only `L3::Ipv4` / `L3::Ipv6` packets.
use crate::summary::PacketSummary;

/// Direction of a packet relative to its canonical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Source is the key's `lo` side.
    LoToHi,
    /// Source is the key's `hi` side.
    HiToLo,
}

impl Direction {
    /// The other direction.
    #[inline]
    pub fn reverse(self) -> Direction {
        match self {
            Direction::LoToHi => Direction::HiToLo,
            Direction::HiToLo => Direction::LoToHi,
        }
    }
}

/// Canonical, direction-free flow key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FlowKey {
    /// The smaller (address, port) side's address.
    pub addr_lo: [u8; 16],
    /// The larger side's address.
    pub addr_hi: [u8; 16],
    /// Port of the lo side.
    pub port_lo: u16,
    /// Port of the hi side.
    pub port_hi: u16,
    /// IP protocol.
    pub proto: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Outer VLAN id.
    pub vlan: u16,
    /// Inner VLAN id.
    pub vlan_inner: u16,
}

impl FlowKey {
    /// The canonical key of an IP packet and the packet's direction in it.
    pub fn from_summary(s: &PacketSummary) -> (FlowKey, Direction) {
        // Byte arrays compare as their big-endian numbers: two 128-bit
        // compares instead of a byte-wise `memcmp`.
        let addr = u128::from_be_bytes;
        let src_is_lo = (addr(s.src), s.src_port) <= (addr(s.dst), s.dst_port);
        let (addr_lo, port_lo, addr_hi, port_hi, dir) = if src_is_lo {
            (s.src, s.src_port, s.dst, s.dst_port, Direction::LoToHi)
        } else {
            (s.dst, s.dst_port, s.src, s.src_port, Direction::HiToLo)
        };
        (
            FlowKey {
                addr_lo,
                addr_hi,
                port_lo,
                port_hi,
                proto: s.proto,
                ip_version: s.ip_version,
                vlan: s.vlan,
                vlan_inner: s.vlan_inner,
            },
            dir,
        )
    }

    /// The lo side's IPv4 address, when this is an IPv4 key.
    #[inline]
    pub fn ipv4_lo(&self) -> Option<[u8; 4]> {
        (self.ip_version == 4).then(|| [self.addr_lo[0], self.addr_lo[1], self.addr_lo[2], self.addr_lo[3]])
    }

    /// The hi side's IPv4 address, when this is an IPv4 key.
    #[inline]
    pub fn ipv4_hi(&self) -> Option<[u8; 4]> {
        (self.ip_version == 4).then(|| [self.addr_hi[0], self.addr_hi[1], self.addr_hi[2], self.addr_hi[3]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::L3;

    fn v4(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> PacketSummary {
        let mut s = PacketSummary {
            l3: L3::Ipv4,
            ip_version: 4,
            proto: 6,
            src_port: sp,
            dst_port: dp,
            vlan: 7,
            ..Default::default()
        };
        s.src[..4].copy_from_slice(&src);
        s.dst[..4].copy_from_slice(&dst);
        s
    }

    #[test]
    fn key_orders_by_address_then_port() {
        let s = v4([10, 0, 0, 2], 80, [10, 0, 0, 1], 50000);
        let (k, d) = FlowKey::from_summary(&s);
        assert_eq!(d, Direction::HiToLo);
        assert_eq!(k.ipv4_lo(), Some([10, 0, 0, 1]));
        assert_eq!(k.port_lo, 50000);
        assert_eq!(k.ipv4_hi(), Some([10, 0, 0, 2]));
        assert_eq!(k.port_hi, 80);
        assert_eq!((k.proto, k.ip_version, k.vlan, k.vlan_inner), (6, 4, 7, 0));

        // Same address both ends: the port decides.
        let s = v4([10, 0, 0, 1], 9000, [10, 0, 0, 1], 80);
        let (k, d) = FlowKey::from_summary(&s);
        assert_eq!(d, Direction::HiToLo);
        assert_eq!((k.port_lo, k.port_hi), (80, 9000));
    }

    #[test]
    fn key_same_both_directions() {
        let a = v4([192, 168, 1, 10], 51234, [93, 184, 216, 34], 443);
        let b = v4([93, 184, 216, 34], 443, [192, 168, 1, 10], 51234);
        let (ka, da) = FlowKey::from_summary(&a);
        let (kb, db) = FlowKey::from_summary(&b);
        assert_eq!(ka, kb);
        assert_eq!(da, db.reverse());
    }

    #[test]
    fn identical_ends_are_lo_to_hi() {
        let s = v4([127, 0, 0, 1], 5, [127, 0, 0, 1], 5);
        assert_eq!(FlowKey::from_summary(&s).1, Direction::LoToHi);
    }
}

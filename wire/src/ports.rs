//! Transport ports: the first four bytes of the transport header of TCP (6),
//! UDP (17), DCCP (33), SCTP (132) and UDP-Lite (136) are source and
//! destination port, big-endian.
//!
//! Guarantees: never panics. Fewer than 4 bytes present, or any other
//! protocol (ICMP and ICMPv6 included, as pmacct does), gives ports (0, 0).
use crate::{be16, ip_proto};

/// Whether packets of `proto` carry ports in their first four bytes.
#[inline]
pub const fn carries_ports(proto: u8) -> bool {
    matches!(proto, ip_proto::TCP | ip_proto::UDP | ip_proto::DCCP | ip_proto::SCTP | ip_proto::UDPLITE)
}

/// Source and destination port of a transport header prefix, or (0, 0).
#[inline]
pub fn transport_ports(proto: u8, transport: &[u8]) -> (u16, u16) {
    if carries_ports(proto) && transport.len() >= 4 {
        (be16(transport, 0), be16(transport, 2))
    } else {
        (0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_each_protocol() {
        let h = [0x04, 0xd2, 0x16, 0x2e, 0xff];
        for p in [6, 17, 33, 132, 136] {
            assert_eq!(transport_ports(p, &h), (1234, 5678), "proto {p}");
            assert_eq!(transport_ports(p, &h[..3]), (0, 0), "proto {p}");
        }
        for p in [1, 58, 47, 50, 0] {
            assert_eq!(transport_ports(p, &h), (0, 0), "proto {p}");
        }
    }
}

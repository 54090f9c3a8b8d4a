//! MPLS label stacks (EtherType 0x8847, 0x8848) and PPPoE sessions (0x8864)
//! between the link layer and IP: the two shims a capture on a provider's
//! link carries most, read down to the IP packet they carry.
//!
//! Guarantees:
//! - [`beneath`] never panics, any input, and reads at most [`MAX_LABELS`]
//!   labels.
//! - An MPLS stack's payload (after the label with the bottom-of-stack bit)
//!   is IP when its first nibble is 4 or 6: a label stack does not say what
//!   it carries, and this is the guess pmacctd and tshark make.
//! - A PPPoE session's payload is IP when its PPP protocol is 0x0021 (IPv4)
//!   or 0x0057 (IPv6), RFC 1332 and RFC 5072, in two bytes or compressed to
//!   one (RFC 1661 5.1).
//! - The IP packet found is parsed as if it followed the link layer: its own
//!   lengths count (the labels and the PPPoE header are frame bytes, not IP
//!   bytes, as pmacctd counts them).
//!
//! Not guaranteed: a pseudowire (Ethernet over MPLS, with a control word or
//! without one whose first nibble is not 4 or 6), a stack of more than
//! [`MAX_LABELS`] labels, a stack cut before its last label and PPP control
//! frames (LCP, IPCP, ...) are non-IP frames of the shim's EtherType; PPPoE
//! discovery (0x8863) is non-IP.

/// MPLS unicast.
pub const MPLS_UNICAST: u16 = 0x8847;
/// MPLS multicast (upstream-assigned labels).
pub const MPLS_MULTICAST: u16 = 0x8848;
/// PPPoE session stage (RFC 2516).
pub const PPPOE_SESSION: u16 = 0x8864;

/// Length of one MPLS label stack entry.
pub const LABEL_LEN: usize = 4;
/// Labels [`beneath`] reads before it gives up (the walk of VLAN tags stops
/// at [`crate::vlan::MAX_TAGS`] alike).
pub const MAX_LABELS: usize = 8;
/// PPPoE header: version and type, code, session id, length (the PPP
/// protocol field follows: two bytes, or one when compressed).
pub const PPPOE_HEADER_LEN: usize = 6;

const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

/// Whether `ethertype` announces a shim [`beneath`] reads.
#[inline]
pub const fn is_shim(ethertype: u16) -> bool {
    matches!(ethertype, MPLS_UNICAST | MPLS_MULTICAST | PPPOE_SESSION)
}

/// For the shim announced by `ethertype` and the bytes after it: the
/// EtherType of the IP packet inside (IPv4 or IPv6) and its bytes; `None`
/// when it carries no IP, is cut short, or `ethertype` is no shim.
#[inline]
pub fn beneath(ethertype: u16, b: &[u8]) -> Option<(u16, &[u8])> {
    match ethertype {
        MPLS_UNICAST | MPLS_MULTICAST => {
            let mut rest = b;
            for _ in 0..MAX_LABELS {
                let (label, after) = rest.split_first_chunk::<LABEL_LEN>()?;
                rest = after;
                if label[2] & 0x01 != 0 {
                    // Bottom of the stack: the payload's first nibble says IP or not.
                    return match rest.first()? >> 4 {
                        4 => Some((crate::ethernet::EtherType::IPV4, rest)),
                        6 => Some((crate::ethernet::EtherType::IPV6, rest)),
                        _ => None,
                    };
                }
            }
            None
        }
        PPPOE_SESSION => {
            let (h, rest) = b.split_first_chunk::<PPPOE_HEADER_LEN>()?;
            // Version 1, type 1, code 0 (session data).
            if h[0] != 0x11 || h[1] != 0 {
                return None;
            }
            // The PPP protocol: two bytes, or one when compressed (RFC 1661 5.1:
            // an odd first byte is the whole field; RFC 2516 advises against it,
            // but scapy and some peers send it).
            let (proto, ip) = match *rest.first()? {
                p if p & 1 == 1 => (u16::from(p), &rest[1..]),
                _ => (u16::from_be_bytes([rest[0], *rest.get(1)?]), rest.get(2..)?),
            };
            match proto {
                PPP_IPV4 => Some((crate::ethernet::EtherType::IPV4, ip)),
                PPP_IPV6 => Some((crate::ethernet::EtherType::IPV6, ip)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethernet::EtherType;

    fn label(value: u32, bottom: bool) -> [u8; 4] {
        (value << 12 | u32::from(bottom) << 8 | 64).to_be_bytes()
    }

    #[test]
    fn one_label_over_ipv4_gives_the_ipv4_packet() {
        let mut b = label(16, true).to_vec();
        b.extend_from_slice(&[0x45, 0, 0, 20]);
        assert_eq!(beneath(MPLS_UNICAST, &b), Some((EtherType::IPV4, &b[4..])));
    }

    #[test]
    fn a_stack_of_labels_over_ipv6_gives_the_ipv6_packet() {
        let mut b = Vec::new();
        for l in [100, 200, 300] {
            b.extend_from_slice(&label(l, l == 300));
        }
        b.extend_from_slice(&[0x60, 0, 0, 0]);
        assert_eq!(beneath(MPLS_MULTICAST, &b), Some((EtherType::IPV6, &b[12..])));
    }

    #[test]
    fn a_pseudowire_control_word_a_cut_stack_and_a_stack_too_deep_carry_no_ip() {
        let mut cw = label(16, true).to_vec();
        cw.extend_from_slice(&[0, 0, 0, 0, 0x45]);
        assert_eq!(beneath(MPLS_UNICAST, &cw), None, "control word");
        assert_eq!(beneath(MPLS_UNICAST, &label(16, false)), None, "cut before the bottom label");
        assert_eq!(beneath(MPLS_UNICAST, &label(16, true)), None, "no payload");
        let mut deep = Vec::new();
        for i in 0..=MAX_LABELS {
            deep.extend_from_slice(&label(16, i == MAX_LABELS));
        }
        deep.push(0x45);
        assert_eq!(beneath(MPLS_UNICAST, &deep), None, "more labels than it reads");
        deep.drain(..LABEL_LEN);
        assert!(beneath(MPLS_UNICAST, &deep).is_some(), "exactly MAX_LABELS labels");
    }

    #[test]
    fn a_pppoe_session_gives_its_ip_packets_and_no_control_frames() {
        let frame = |proto: u16, code: u8| {
            let mut b = vec![0x11, code, 0x12, 0x34, 0, 30];
            b.extend_from_slice(&proto.to_be_bytes());
            b.extend_from_slice(&[0x45, 0]);
            b
        };
        let v4 = frame(0x0021, 0);
        assert_eq!(beneath(PPPOE_SESSION, &v4), Some((EtherType::IPV4, &v4[8..])));
        let v6 = frame(0x0057, 0);
        assert_eq!(beneath(PPPOE_SESSION, &v6), Some((EtherType::IPV6, &v6[8..])));
        assert_eq!(beneath(PPPOE_SESSION, &frame(0xc021, 0)), None, "LCP");
        assert_eq!(beneath(PPPOE_SESSION, &frame(0x0021, 0x09)), None, "not session data");
        // The protocol field compressed to one byte.
        let short = [0x11, 0, 0x12, 0x34, 0, 3, 0x21, 0x45, 0];
        assert_eq!(beneath(PPPOE_SESSION, &short), Some((EtherType::IPV4, &short[7..])));
        let short6 = [0x11, 0, 0x12, 0x34, 0, 3, 0x57, 0x60, 0];
        assert_eq!(beneath(PPPOE_SESSION, &short6), Some((EtherType::IPV6, &short6[7..])));
        assert_eq!(beneath(PPPOE_SESSION, &v4[..7]), None, "cut");
        assert_eq!(beneath(0x8863, &v4), None, "discovery");
    }
}

//! IP protocol names as pmacct 1.7.7's print plugin writes them, shared by the
//! app's output and the simulator's truth files so they compare line by line.
//!
//! Guarantees: [`proto_name`] returns exactly the string pmacct prints in its
//! CSV `PROTOCOL` column and JSON `ip_proto` value for the same protocol number:
//! the name from pmacct's `_protocols` table (`src/pmacct-data.h`) for numbers
//! 0..=133 (numbers as text where pmacct has no name, e.g. "0", "5"), and the
//! decimal number for 134..=255. In particular 6 "tcp", 17 "udp", 1 "icmp",
//! 58 "ipv6-icmp". (Table as checked by the app against pmacctd 1.7.7.)

use std::borrow::Cow;

/// pmacct 1.7.7 `_protocols[]`, indexed by protocol number.
#[rustfmt::skip]
const PMACCT_PROTOCOLS: [&str; 134] = [
    "0", "icmp", "igmp", "ggp", "ipencap", "5", "tcp", "7", "egp", "igp", // 0-9
    "10", "11", "12", "13", "14", "15", "16", "udp", "mux", "19", // 10-19
    "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", // 20-29
    "30", "31", "32", "33", "34", "35", "36", "37", "38", "39", // 30-39
    "40", "ipv6", "42", "ipv6-route", "ipv6-frag", "45", "rsvp", "gre", "48", "49", // 40-49
    "esp", "ah", "52", "53", "54", "mobile", "tlsp", "57", "ipv6-icmp", "ipv6-nonxt", // 50-59
    "ipv6-opts", "61", "62", "63", "64", "65", "66", "67", "68", "69", // 60-69
    "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", // 70-79
    "iso-ip", "81", "82", "vines", "84", "85", "86", "87", "eigrp", "ospf", // 80-89
    "90", "larp", "92", "ax.25", "ipip", "95", "96", "97", "encap", "99", // 90-99
    "100", "101", "pnni", "pim", "104", "105", "106", "107", "IPcomp", "109", // 100-109
    "110", "ipx-in-ip", "vrrp", "113", "114", "l2tp", "116", "117", "118", "119", // 110-119
    "120", "121", "122", "123", "isis", "125", "126", "127", "128", "129", // 120-129
    "130", "131", "sctp", "fc", // 130-133
];

/// The name pmacct prints for IP protocol `proto`.
pub fn proto_name(proto: u8) -> Cow<'static, str> {
    match PMACCT_PROTOCOLS.get(usize::from(proto)) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(proto.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_pmacct() {
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(17), "udp");
        assert_eq!(proto_name(1), "icmp");
        assert_eq!(proto_name(58), "ipv6-icmp");
        assert_eq!(proto_name(47), "gre");
        assert_eq!(proto_name(132), "sctp");
        assert_eq!(proto_name(133), "fc");
        assert_eq!(proto_name(4), "ipencap");
        assert_eq!(proto_name(0), "0");
        assert_eq!(proto_name(134), "134");
        assert_eq!(proto_name(200), "200");
        assert_eq!(proto_name(255), "255");
        for (i, name) in PMACCT_PROTOCOLS.iter().enumerate() {
            if name.bytes().all(|b| b.is_ascii_digit()) {
                assert_eq!(name.parse::<usize>().unwrap(), i);
            }
        }
    }
}

//! IP protocol numbers (IANA "Assigned Internet Protocol Numbers") this crate
//! names. A protocol not listed is still a plain `u8` value, never an error.

/// IPv6 Hop-by-Hop Options extension header.
pub const HOPOPT: u8 = 0;
/// Internet Control Message Protocol (IPv4).
pub const ICMP: u8 = 1;
/// Transmission Control Protocol.
pub const TCP: u8 = 6;
/// User Datagram Protocol.
pub const UDP: u8 = 17;
/// Datagram Congestion Control Protocol.
pub const DCCP: u8 = 33;
/// IPv6 Routing extension header.
pub const IPV6_ROUTE: u8 = 43;
/// IPv6 Fragment extension header.
pub const IPV6_FRAG: u8 = 44;
/// Encapsulating Security Payload (ends the IPv6 extension walk).
pub const ESP: u8 = 50;
/// Authentication Header.
pub const AH: u8 = 51;
/// ICMP for IPv6.
pub const ICMPV6: u8 = 58;
/// IPv6 No Next Header (ends the IPv6 extension walk).
pub const IPV6_NONXT: u8 = 59;
/// IPv6 Destination Options extension header.
pub const IPV6_OPTS: u8 = 60;
/// Stream Control Transmission Protocol.
pub const SCTP: u8 = 132;
/// UDP-Lite.
pub const UDPLITE: u8 = 136;

//! Zero-copy packet views, the canonical flow key and symmetric hashes.
//! (CONTRACT STUB: types are fixed; bodies to be implemented.)
#![forbid(unsafe_code)]

/// What the frame carries at layer 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum L3 {
    /// IPv4 with a usable header.
    Ipv4,
    /// IPv6 with a usable header.
    Ipv6,
    /// Not IP (ARP, LLDP, unknown EtherType...).
    #[default]
    NonIp,
    /// The EtherType says IP but the header is not usable (short, bad version, bad length).
    Malformed,
}

/// Fragment position of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fragment {
    /// Not a fragment.
    #[default]
    None,
    /// First fragment (offset 0, more fragments): carries the ports.
    First,
    /// A later fragment: no transport header, ports are 0.
    Later,
}

/// The validated summary of one frame: everything downstream needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketSummary {
    /// Layer 3 kind.
    pub l3: L3,
    /// Innermost EtherType after VLAN tags.
    pub ethertype: u16,
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Outer VLAN id (12 bits), 0 = untagged. In QinQ the service tag.
    pub vlan: u16,
    /// Inner VLAN id of QinQ, 0 = none.
    pub vlan_inner: u16,
    /// 4, 6, or 0 when not IP.
    pub ip_version: u8,
    /// Source address (IPv4 in the first 4 bytes, rest zero).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// IP protocol (IPv6: upper-layer protocol after extension headers).
    pub proto: u8,
    /// Source port (TCP, UDP, SCTP, UDP-Lite, DCCP), else 0.
    pub src_port: u16,
    /// Destination port, likewise.
    pub dst_port: u16,
    /// IPv4 total length; IPv6 payload length + 40.
    pub ip_len: u32,
    /// TCP flags byte, 0 when not TCP.
    pub tcp_flags: u8,
    /// Fragment position.
    pub fragment: Fragment,
}

/// Parses a whole Ethernet frame into a summary. Never panics, any input.
pub fn summarize(_frame: &[u8]) -> PacketSummary {
    todo!("wire helper")
}

/// Direction of a packet relative to its canonical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Source is the key's `lo` side.
    LoToHi,
    /// Source is the key's `hi` side.
    HiToLo,
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
    pub fn from_summary(_s: &PacketSummary) -> (FlowKey, Direction) {
        todo!("wire helper")
    }
}

/// PF_RING ZC's built-in IP hash: sum of source and destination address
/// (IPv6: sum of the 32-bit words of both), as zbalance_ipc mode 1 uses.
pub fn zbalance_ip_hash(_s: &PacketSummary) -> u32 {
    todo!("wire helper")
}

/// A direction-free hash of (addresses, ports, protocol, VLANs).
pub fn symmetric_5tuple_hash(_s: &PacketSummary) -> u32 {
    todo!("wire helper")
}

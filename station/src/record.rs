//! The FlowRecord: what a detector worker hands the app, one fixed-size
//! plain-old-data value per (part of a) flow.
//!
//! Guarantees: `FlowRecord` is `#[repr(C)]`, has no padding (bytemuck `Pod`), and
//! its size and field offsets are fixed by [`RECORD_LAYOUT_VERSION`]; a change
//! of layout bumps the version, and the record queue refuses to open with a
//! different one. Every packet a worker receives is counted in exactly one
//! record: IP packets in their flow, everything else in a [`RecordKind::NonIp`]
//! or [`RecordKind::Malformed`] record keyed by MACs and EtherType.
//! Every record also names its capture source (`source`) and, for each end,
//! the container it belongs to ([`ContainerRef`]: id, name, host veth, netns,
//! and how it was attributed), all zero when none.
//!
//! Tunnels (`CJ_DECAP`): a record of a decapsulated flow counts the inner
//! flow (addresses, ports, protocol, IP bytes of the inner packets; frame
//! bytes of the captured frames) and carries the tunnel in the `tunnel_*`
//! fields: its kind, the outer address at each side's end, and the VNI or GRE
//! key ([`TUNNEL_HAS_ID`]). All zero for a flow that is not tunnelled.
//!
//! Layout version 3 (352 bytes): version 2 (312 bytes: version 1 plus
//! `source` and `ctr`) plus the `tunnel_*` fields at the end. A
//! producer stamps the version into every record ([`FlowRecord::stamp_layout`],
//! the byte `_pad[0]`), and a consumer counts a record stamped with another
//! version as invalid ([`FlowRecord::check_layout`]): a record queue spec
//! (slot size, capacity) cannot tell two layouts of one size apart.
//!
//! Not guaranteed: a record that is not stamped (0, a producer that does not
//! stamp yet) is accepted, so only stamping producers are checked.

use bytemuck::{Pod, Zeroable};

/// Bumped whenever the layout of [`FlowRecord`] changes.
pub const RECORD_LAYOUT_VERSION: u32 = 3;

/// Counters of one direction of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct DirCounters {
    /// Packets (frames) seen in this direction.
    pub packets: u64,
    /// IP bytes: the IP total length (IPv4 total length, IPv6 payload length + 40),
    /// as pmacct and IPFIX octetDeltaCount count them. Zero for non-IP records.
    pub ip_bytes: u64,
    /// Frame bytes as on the wire (captured length before any truncation).
    pub frame_bytes: u64,
    /// TCP flags ORed over the direction's packets.
    pub tcp_flags: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 7],
}

impl DirCounters {
    /// Adds one packet.
    #[inline]
    pub fn add(&mut self, ip_bytes: u32, frame_bytes: u32, tcp_flags: u8) {
        self.packets += 1;
        self.ip_bytes += u64::from(ip_bytes);
        self.frame_bytes += u64::from(frame_bytes);
        self.tcp_flags |= tcp_flags;
    }

    /// Adds another direction's counters (merging parts of one flow).
    pub fn merge(&mut self, other: &DirCounters) {
        self.packets += other.packets;
        self.ip_bytes += other.ip_bytes;
        self.frame_bytes += other.frame_bytes;
        self.tcp_flags |= other.tcp_flags;
    }
}

/// What a record counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// An IP flow: addresses, ports (TCP/UDP/SCTP/UDP-Lite/DCCP; zero otherwise), protocol, VLANs.
    Ip = 1,
    /// Frames that are not IP (ARP, LLDP, ...), keyed by MACs, EtherType and VLANs.
    NonIp = 2,
    /// Frames whose EtherType says IP but whose IP header is not parseable,
    /// keyed like [`RecordKind::NonIp`]. Their IP byte count is zero.
    Malformed = 3,
}

impl RecordKind {
    /// Decodes the `kind` byte; `None` for an unknown value.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Ip),
            2 => Some(Self::NonIp),
            3 => Some(Self::Malformed),
            _ => None,
        }
    }
}

/// Why a flow record was emitted: the IPFIX flowEndReason codes (RFC 7011 / IANA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EndReason {
    /// No packet for the idle timeout.
    IdleTimeout = 1,
    /// The flow lived longer than the active timeout; it goes on in a new record.
    ActiveTimeout = 2,
    /// TCP FIN from both sides or RST.
    EndOfFlow = 3,
    /// Shutdown or end of stream (IPFIX "forced end").
    ForcedEnd = 4,
    /// Evicted because the flow table was full (IPFIX "lack of resources").
    LackOfResources = 5,
}

impl EndReason {
    /// Decodes the `end_reason` byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::IdleTimeout),
            2 => Some(Self::ActiveTimeout),
            3 => Some(Self::EndOfFlow),
            4 => Some(Self::ForcedEnd),
            5 => Some(Self::LackOfResources),
            _ => None,
        }
    }

    /// Short lowercase name for logs and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle",
            Self::ActiveTimeout => "active",
            Self::EndOfFlow => "end",
            Self::ForcedEnd => "forced",
            Self::LackOfResources => "evicted",
        }
    }
}

/// `flags` bit: the initiator was decided by a SYN (not only by who sent first).
pub const FLAG_INITIATOR_BY_SYN: u8 = 1;
/// `flags` bit: the record includes IP fragments other than the first: counted
/// in their datagram's flow with its ports when the worker saw the first
/// fragment (`detector::fragments`), else in a flow with ports 0.
pub const FLAG_FRAGMENTS: u8 = 2;
/// `flags` bit: side `a` sent packets in this record or in an earlier part of
/// the same flow. A flow's last record may count no packet at all (everything
/// was exported by refreshes, `CJ_REFRESH`): these two bits still say which
/// directions the flow had, so the app counts its directional flows exactly.
pub const FLAG_SEEN_A: u8 = 4;
/// `flags` bit: side `b` sent packets in this record or in an earlier part.
pub const FLAG_SEEN_B: u8 = 8;

/// `tunnel_flags` bit: `tunnel_id` holds the VNI (VXLAN, Geneve) or GRE key.
pub const TUNNEL_HAS_ID: u8 = 1;
/// `tunnel_flags` bit: the worker's table of tunnel endpoints was full when
/// the flow began, so the outer addresses and id are not kept (zero); the
/// kind is.
pub const TUNNEL_ENDPOINTS_NOT_KEPT: u8 = 2;

/// How an end of a record was tied to its container (`ContainerRef::by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AttributedBy {
    /// No container matched.
    None = 0,
    /// The frame was captured on the container's host veth (the capture
    /// interface): this end is the container whose veth saw the frame.
    Interface = 1,
    /// The end's MAC address is a container interface's MAC.
    Mac = 2,
    /// The end's IP address is a container interface's address.
    Ip = 3,
}

impl AttributedBy {
    /// Decodes the `by` byte (unknown values read as `None`).
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Interface,
            2 => Self::Mac,
            3 => Self::Ip,
            _ => Self::None,
        }
    }

    /// Short lowercase word for outputs.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Interface => "interface",
            Self::Mac => "mac",
            Self::Ip => "ip",
        }
    }
}

/// The container one end of a record belongs to, fixed size (80 bytes).
///
/// Text fields are UTF-8, NUL-padded, cut at their size (a cut never splits a
/// character). An all-zero value means "no container" (`by` = 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ContainerRef {
    /// Inode number of the container's network namespace (as `ls -iL
    /// /proc/PID/ns/net` or `/run/netns/NAME` shows it); 0 when none.
    pub netns: u64,
    /// The namespace's id as the capturing host's netns sees it
    /// (`ip netns list-id`); -1 when it has none.
    pub nsid: i32,
    /// An [`AttributedBy`] as u8.
    pub by: u8,
    /// Explicit padding; always zero.
    pub _pad: [u8; 3],
    /// Container id: Docker's short id (12 hex digits), a runtime's id from
    /// the cgroup path, or the name of a named netns.
    pub id: [u8; 16],
    /// Container name (Docker's name without the leading `/`, the netns name).
    pub name: [u8; 32],
    /// Host-side veth of the container's interface (IFNAMSIZ).
    pub veth: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ContainerRef>() == 80);

impl ContainerRef {
    /// Whether an end has a container.
    pub fn is_some(&self) -> bool {
        self.by != AttributedBy::None as u8
    }

    /// How the end was attributed.
    pub fn attributed_by(&self) -> AttributedBy {
        AttributedBy::from_u8(self.by)
    }

    /// The id as text.
    pub fn id_str(&self) -> &str {
        text_of(&self.id)
    }

    /// The name as text.
    pub fn name_str(&self) -> &str {
        text_of(&self.name)
    }

    /// The host veth's name as text.
    pub fn veth_str(&self) -> &str {
        text_of(&self.veth)
    }
}

/// Copies `s` into a NUL-padded fixed field, cut at a character boundary.
pub fn fixed_text<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

/// The text of a NUL-padded field (up to the first NUL; invalid UTF-8 reads as empty).
pub fn text_of(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).unwrap_or("")
}

/// One flow (or one part of a flow) as a worker reports it.
///
/// Side `a` is the initiator, side `b` the responder; `dir[0]` counts a→b and
/// `dir[1]` counts b→a. Addresses are 16 bytes: IPv4 in the first four, the
/// rest zero, with `ip_version` saying which. `ctr[0]` is side a's container,
/// `ctr[1]` side b's (see [`ContainerRef`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowRecord {
    /// Per-worker record sequence number, from 0; lets the app see gaps.
    pub seq: u64,
    /// Timestamp of the first packet, nanoseconds since the Unix epoch.
    pub first_ns: u64,
    /// Timestamp of the last packet.
    pub last_ns: u64,
    /// `dir[0]` = a→b (initiator to responder), `dir[1]` = b→a.
    pub dir: [DirCounters; 2],
    /// Initiator address.
    pub addr_a: [u8; 16],
    /// Responder address.
    pub addr_b: [u8; 16],
    /// Source MAC of the first a→b frame (or destination MAC of the first b→a frame).
    pub mac_a: [u8; 6],
    /// MAC of side b, likewise.
    pub mac_b: [u8; 6],
    /// Initiator port (0 where the protocol has none).
    pub port_a: u16,
    /// Responder port.
    pub port_b: u16,
    /// Outer VLAN id (802.1Q, or the 802.1ad service tag); 0 when untagged.
    pub vlan: u16,
    /// Inner VLAN id of a QinQ frame; 0 when none.
    pub vlan_inner: u16,
    /// EtherType of non-IP and malformed records; 0x0800 / 0x86DD for IP.
    pub ethertype: u16,
    /// Queue number of the worker that produced it (CJ_QUEUE_OFFSET + i).
    pub queue: u16,
    /// A [`RecordKind`] as u8.
    pub kind: u8,
    /// 4 or 6 for IP records, 0 otherwise.
    pub ip_version: u8,
    /// IP protocol number (TCP 6, UDP 17, ...).
    pub proto: u8,
    /// An [`EndReason`] as u8.
    pub end_reason: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Index of the capture interface in the balancer's source list
    /// (`PacketMeta::source`).
    pub source: u8,
    /// `_pad[0]`: the layout version its producer stamped
    /// ([`FlowRecord::stamp_layout`]), 0 when not stamped; `_pad[1]` always zero.
    pub _pad: [u8; 2],
    /// The containers of side a (`ctr[0]`) and side b (`ctr[1]`).
    pub ctr: [ContainerRef; 2],
    /// Tunnel (`CJ_DECAP`): the outer address at side a's end (the outer
    /// source of a's packets), 16-byte form; zero when not tunnelled.
    pub tunnel_addr_a: [u8; 16],
    /// The outer address at side b's end.
    pub tunnel_addr_b: [u8; 16],
    /// VNI (VXLAN, Geneve) or GRE key when `tunnel_flags` has
    /// [`TUNNEL_HAS_ID`]. Inside the detector, before the worker resolves it,
    /// the flow table's handle of the tunnel (`detector::tunnels`).
    pub tunnel_id: u32,
    /// A `wire::tunnel::TunnelKind` as u8; 0: not tunnelled.
    pub tunnel_kind: u8,
    /// 4 or 6: the outer IP version; 0 when not tunnelled.
    pub tunnel_ip_version: u8,
    /// `TUNNEL_*` bits.
    pub tunnel_flags: u8,
    /// Explicit padding; always zero.
    pub _pad_tunnel: u8,
}

/// Size of a [`FlowRecord`] in bytes (fixed by [`RECORD_LAYOUT_VERSION`]).
pub const FLOW_RECORD_SIZE: usize = core::mem::size_of::<FlowRecord>();

const _: () = assert!(FLOW_RECORD_SIZE == 352);

impl FlowRecord {
    /// The record's kind, if the byte is valid.
    pub fn record_kind(&self) -> Option<RecordKind> {
        RecordKind::from_u8(self.kind)
    }

    /// The record's end reason, if the byte is valid.
    pub fn end(&self) -> Option<EndReason> {
        EndReason::from_u8(self.end_reason)
    }

    /// The layout version the producer stamped into the record (`_pad[0]`);
    /// 0 when it did not stamp (producers built before the stamp existed).
    pub fn layout_version(&self) -> u8 {
        self._pad[0]
    }

    /// Stamps [`RECORD_LAYOUT_VERSION`] into the record; a producer calls it
    /// before pushing so that a consumer built with another layout refuses it.
    pub fn stamp_layout(&mut self) {
        self._pad[0] = RECORD_LAYOUT_VERSION as u8;
    }

    /// Checks the stamped layout version: `Ok` when it is this build's
    /// [`RECORD_LAYOUT_VERSION`] or not stamped (0).
    ///
    /// # Errors
    /// The version stamped, when another.
    pub fn check_layout(&self) -> Result<(), u8> {
        match self.layout_version() {
            0 => Ok(()),
            v if u32::from(v) == RECORD_LAYOUT_VERSION => Ok(()),
            v => Err(v),
        }
    }

    /// Whether side `side` (0: `a`, 1: `b`) of the flow sent packets, in this
    /// record or in an earlier part ([`FLAG_SEEN_A`] / [`FLAG_SEEN_B`]): a
    /// directional flow to count when the flow ends.
    pub fn had_packets(&self, side: usize) -> bool {
        self.dir[side & 1].packets > 0 || self.flags & (FLAG_SEEN_A << (side & 1)) != 0
    }

    /// Total packets in both directions.
    pub fn packets(&self) -> u64 {
        self.dir[0].packets + self.dir[1].packets
    }

    /// Side a's address as `IpAddr` (None for non-IP records).
    pub fn ip_a(&self) -> Option<std::net::IpAddr> {
        ip_from_bytes(self.ip_version, &self.addr_a)
    }

    /// The tunnel's kind, `None` when the flow is not tunnelled.
    pub fn tunnel(&self) -> Option<wire::tunnel::TunnelKind> {
        wire::tunnel::TunnelKind::from_u8(self.tunnel_kind)
    }

    /// Side b's address as `IpAddr` (None for non-IP records).
    pub fn ip_b(&self) -> Option<std::net::IpAddr> {
        ip_from_bytes(self.ip_version, &self.addr_b)
    }

    /// The record as bytes, for copying into a queue slot.
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::bytes_of(self)
    }

    /// Reads a record from a queue slot; `None` when the slot is too short.
    /// Copies, so the result never aliases shared memory.
    pub fn read_from(bytes: &[u8]) -> Option<Self> {
        let src = bytes.get(..FLOW_RECORD_SIZE)?;
        Some(bytemuck::pod_read_unaligned(src))
    }

    /// [`FlowRecord::read_from`] into `self` (one copy, in place); false,
    /// `self` unchanged, when the slot is too short.
    pub fn read_into(&mut self, bytes: &[u8]) -> bool {
        let Some(src) = bytes.get(..FLOW_RECORD_SIZE) else { return false };
        bytemuck::bytes_of_mut(self).copy_from_slice(src);
        true
    }
}

/// Builds an `IpAddr` from the record's 16-byte form.
pub fn ip_from_bytes(version: u8, bytes: &[u8; 16]) -> Option<std::net::IpAddr> {
    match version {
        4 => Some(std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
        6 => Some(std::net::IpAddr::from(*bytes)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_bytes() {
        let mut r = FlowRecord {
            seq: 7,
            kind: RecordKind::Ip as u8,
            ip_version: 4,
            proto: 6,
            port_a: 1234,
            port_b: 80,
            ..Default::default()
        };
        r.addr_a[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.dir[0].add(60, 74, 0x02);
        let bytes = r.as_bytes().to_vec();
        assert_eq!(FlowRecord::read_from(&bytes), Some(r));
        assert_eq!(FlowRecord::read_from(&bytes[..10]), None);
        assert_eq!(r.ip_a(), Some("10.0.0.1".parse().unwrap()));
        // In place, over another record: the same; a short slot leaves it as it was.
        let mut into = FlowRecord { seq: 99, port_a: 1, ..Default::default() };
        let before = into;
        assert!(!into.read_into(&bytes[..FLOW_RECORD_SIZE - 1]));
        assert_eq!(into, before);
        assert!(into.read_into(&bytes));
        assert_eq!(into, r);
    }

    #[test]
    fn a_record_stamped_with_another_layout_version_is_refused() {
        let mut r = FlowRecord::default();
        assert_eq!(r.check_layout(), Ok(()));
        r.stamp_layout();
        assert_eq!(u32::from(r.layout_version()), RECORD_LAYOUT_VERSION);
        let back = FlowRecord::read_from(r.as_bytes()).unwrap();
        assert_eq!(back.check_layout(), Ok(()));
        r._pad[0] = RECORD_LAYOUT_VERSION as u8 + 1;
        assert_eq!(r.check_layout(), Err(RECORD_LAYOUT_VERSION as u8 + 1));
    }

    #[test]
    fn container_fields_round_trip_and_cut_at_characters() {
        let mut r = FlowRecord::default();
        r.ctr[1] = ContainerRef {
            netns: 4026532000,
            nsid: 3,
            by: AttributedBy::Interface as u8,
            id: fixed_text("0123456789ab"),
            name: fixed_text("web-1"),
            veth: fixed_text("veth1234567"),
            ..Default::default()
        };
        let back = FlowRecord::read_from(r.as_bytes()).unwrap();
        assert_eq!(back.ctr[1].name_str(), "web-1");
        assert_eq!(back.ctr[1].id_str(), "0123456789ab");
        assert_eq!(back.ctr[1].veth_str(), "veth1234567");
        assert_eq!(back.ctr[1].attributed_by(), AttributedBy::Interface);
        assert!(!back.ctr[0].is_some());
        let long: [u8; 4] = fixed_text("aé€b");
        assert_eq!(text_of(&long), "aé");
    }
}

//! Deterministic synthetic traffic and its ground truth. (CONTRACT STUB.)
#![allow(clippy::todo, unused_variables)]

use std::net::IpAddr;
use std::path::Path;

/// What `sim:SPEC` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSpec {
    /// Number of flows.
    pub flows: u32,
    /// Total frames.
    pub packets: u64,
    /// Frame sizes and weights.
    pub sizes: Vec<(u16, u32)>,
    /// Share of IPv6 flows, percent.
    pub v6_percent: u8,
    /// Share of 802.1Q-tagged flows, percent.
    pub vlan_percent: u8,
    /// Share of QinQ flows, percent.
    pub qinq_percent: u8,
    /// Share of fragmented packets, percent.
    pub frag_percent: u8,
    /// Share of non-IP frames, percent.
    pub nonip_percent: u8,
    /// Seed.
    pub seed: u64,
    /// Packets per second; 0 = as fast as possible.
    pub rate_pps: u64,
}

impl std::str::FromStr for SimSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        todo!()
    }
}

/// One direction of one flow in the truth.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TruthRow {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Outer VLAN.
    pub vlan: u16,
    /// Packets.
    pub packets: u64,
    /// IP bytes.
    pub ip_bytes: u64,
    /// Frame bytes.
    pub frame_bytes: u64,
}

/// The ground truth of a generated stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Truth {
    /// Directional rows, sorted.
    pub rows: Vec<TruthRow>,
    /// Frames that are not IP.
    pub non_ip_frames: u64,
    /// All frames.
    pub total_frames: u64,
}

/// Generates the frames of a spec, one at a time, without allocating per frame.
#[derive(Debug)]
pub struct SimTraffic {}

impl SimTraffic {
    /// A generator for `spec`.
    pub fn new(spec: &SimSpec) -> Self {
        todo!()
    }
    /// Writes the next frame into `buf` (at least 1518 bytes); returns (timestamp ns, length).
    pub fn next_frame(&mut self, buf: &mut [u8]) -> Option<(u64, usize)> {
        todo!()
    }
}

/// The truth of `spec`, from the model.
pub fn truth(spec: &SimSpec) -> Truth {
    todo!()
}

/// Writes the spec's frames as a pcap file; returns the truth.
///
/// # Errors
/// I/O errors.
pub fn write_pcap(spec: &SimSpec, path: &Path, nanos: bool) -> std::io::Result<Truth> {
    todo!()
}

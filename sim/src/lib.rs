//! Deterministic synthetic traffic and its ground truth.
//!
//! `sim:SPEC` (in `CJ_IFACE`) names a stream of Ethernet frames that is a pure
//! function of the spec: the same spec gives the same bytes, in the same order,
//! with the same timestamps, on every machine. [`truth`] computes what an exact
//! flow meter must report for that stream from the model itself, never by
//! parsing the frames, so it is an independent check of the pipeline.
//!
//! The spec (`sim:SPEC`, its keys and defaults) is
//! [`station::simspec`], re-exported here: loading the configuration checks
//! it, and parsing it needs no random numbers. This crate adds what does: the
//! frames ([`SimTraffic`], [`write_pcap`]) and the truth ([`truth`]). It is a
//! normal dependency of the balancer only (`sim:` sources, `cj-balancer
//! generate`) and a dev-dependency elsewhere, so `rand`, `rand_chacha` and
//! `pcap-file` are in no other binary.
//!
//! # The model
//!
//! * Flows: TCP 60 %, UDP 35 %, ICMP (ICMPv6 for IPv6) 5 %. Clients are
//!   distinct addresses in 10.0.0.0/8 (fd00:0:0:1::/64), servers one of 1024
//!   addresses in 172.16.0.0/12 (fd00:0:0:2::/64) on well-known ports; every
//!   flow's 5-tuple is therefore distinct. Tags are chosen per flow.
//! * Frames: `packets * nonip / 100` ARP frames are spread evenly through the
//!   stream; the other frames are split over the flows (each gets
//!   `ip_frames / flows`, the first `ip_frames % flows` flows one more). Flows
//!   take turns in a seeded order reshuffled every round; each flow emits its
//!   packets in sequence, alternating direction, client first. TCP: SYN,
//!   SYN-ACK, ACK, then PSH-ACK, the last two FIN-ACK (one per side).
//!   ICMP: echo request / reply.
//! * Sizes: each packet draws a frame size from `sizes` (length including the
//!   14-byte Ethernet header and tags, excluding the FCS). A frame is never
//!   shorter than its headers (e.g. 74 bytes for untagged IPv6 TCP, 82 with
//!   QinQ): a smaller draw is raised to that, in the model and the truth alike.
//!   IPv4 total length = frame - 14 - 4 x tags; IPv6 payload length = that - 40.
//! * Fragments: a fragmented IPv4 UDP datagram is two frames of its flow, in
//!   the same direction, the first fragment before the later one (the later
//!   one is the flow's next frame): the first (MF, carries the UDP header,
//!   payload a multiple of 8) and the later one (an offset, no UDP header,
//!   the same IP identification) are both counted in the flow's row, with
//!   its ports, as pmacctd counts them and the detector does (DESIGN.md,
//!   "Flows": later fragments in their datagram's flow). The two frames are
//!   at most two rounds of the flows apart (about `2 * flows` frames), within
//!   the detector's 30 s fragment timeout at any `rate` of at least
//!   `flows / 15` packets per second.
//! * Checksums: the IPv4 header checksum is valid; TCP/UDP/ICMP checksums are 0.
//! * Timestamps: from 2026-01-01T00:00:00Z, frame i at `i * 1e9 / rate` ns
//!   (rate > 0) or `i * 1000` ns.
//!
//! [`SimTraffic`] keeps O(flows) state (about 100 bytes per flow) and
//! allocates nothing per frame; [`truth`] takes O(packets) time and O(flows)
//! memory.
#![deny(unsafe_code)]

pub mod tunnel;

use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use station::simspec::{SimSpec, MAX_FLOWS, MAX_FRAME_LEN, MIN_FRAME_LEN, SPEC_KEYS};

/// Timestamp of the first frame: 2026-01-01T00:00:00Z in nanoseconds.
pub const START_NS: u64 = 1_767_225_600_000_000_000;
/// Length of the ARP frames the model emits as non-IP traffic.
pub const ARP_FRAME_LEN: usize = 60;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;

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

/// Splits records into directed rows in the shape of [`Truth::rows`] (sorted),
/// and counts the frames of the non-IP and malformed records: what a test
/// compares with [`truth`]. Each record side a→b is `dir[0]`, b→a `dir[1]`; a
/// direction without packets gives no row; rows of one key are summed.
pub fn rows_of_records(records: &[station::record::FlowRecord]) -> (Vec<TruthRow>, u64) {
    let mut rows: std::collections::HashMap<RowKey, (u64, u64, u64)> = std::collections::HashMap::new();
    let mut non_ip = 0;
    for r in records {
        let (Some(a), Some(b)) = (r.ip_a(), r.ip_b()) else {
            non_ip += r.packets();
            continue;
        };
        for (d, (src, dst, sp, dp)) in [(0, (a, b, r.port_a, r.port_b)), (1, (b, a, r.port_b, r.port_a))] {
            if r.dir[d].packets > 0 {
                let e = rows.entry((src, dst, sp, dp, r.proto, r.vlan)).or_default();
                e.0 += r.dir[d].packets;
                e.1 += r.dir[d].ip_bytes;
                e.2 += r.dir[d].frame_bytes;
            }
        }
    }
    (rows_of_tally(rows), non_ip)
}

/// A directed row key: (src, dst, src port, dst port, proto, vlan).
type RowKey = (IpAddr, IpAddr, u16, u16, u8, u16);

/// Directed tallies of (packets, IP bytes, frame bytes) as sorted [`TruthRow`]s.
fn rows_of_tally(tally: impl IntoIterator<Item = (RowKey, (u64, u64, u64))>) -> Vec<TruthRow> {
    let mut v: Vec<TruthRow> = tally
        .into_iter()
        .map(|((src, dst, src_port, dst_port, proto, vlan), (packets, ip_bytes, frame_bytes))| TruthRow {
            src,
            dst,
            src_port,
            dst_port,
            proto,
            vlan,
            packets,
            ip_bytes,
            frame_bytes,
        })
        .collect();
    v.sort();
    v
}

impl Truth {
    /// Frames counted in rows (IP frames).
    pub fn ip_frames(&self) -> u64 {
        self.rows.iter().map(|r| r.packets).sum()
    }

    /// Writes the rows as CSV in pmacct's column names:
    /// `SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES`, with PROTOCOL
    /// as [`station::proto::proto_name`] and BYTES the IP bytes; rows in the
    /// order of [`Truth::rows`] (sorted). VLANs are not a column: rows that
    /// differ only by VLAN are printed separately. Written as [`write_pcap`]
    /// writes (a temporary file renamed over `path`, mode [`OUTPUT_MODE`]): a
    /// file or link planted as `path` is replaced, never written through.
    ///
    /// # Errors
    /// I/O errors; the temporary file is removed.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        // AtomicFile buffers; written through a temporary file of its own and renamed.
        let mut w = shmq::files::AtomicFile::create(path, OUTPUT_MODE)?;
        writeln!(w, "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES")?;
        for r in &self.rows {
            writeln!(
                w,
                "{},{},{},{},{},{},{}",
                r.src,
                r.dst,
                r.src_port,
                r.dst_port,
                station::proto::proto_name(r.proto),
                r.packets,
                r.ip_bytes
            )?;
        }
        w.commit(true).map(drop)
    }
}

// ---------------------------------------------------------------- the model

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tags {
    None,
    Vlan(u16),
    QinQ(u16, u16),
}

impl Tags {
    fn len(self) -> u16 {
        match self {
            Tags::None => 0,
            Tags::Vlan(_) => 4,
            Tags::QinQ(..) => 8,
        }
    }
    fn outer(self) -> u16 {
        match self {
            Tags::None => 0,
            Tags::Vlan(id) | Tags::QinQ(id, _) => id,
        }
    }
}

#[derive(Clone, Debug)]
struct FlowModel {
    v6: bool,
    proto: u8,
    tags: Tags,
    /// Client and server addresses (IPv4 in the first 4 bytes).
    addr: [[u8; 16]; 2],
    /// Client and server ports (0 for ICMP).
    port: [u16; 2],
    mac: [[u8; 6]; 2],
    isn: [u32; 2],
    /// Frames of this flow.
    packets: u64,
}

impl FlowModel {
    fn l2_len(&self) -> u16 {
        14 + self.tags.len()
    }
    fn l3_len(&self) -> u16 {
        if self.v6 {
            40
        } else {
            20
        }
    }
    fn l4_len(&self) -> u16 {
        if self.proto == TCP {
            20
        } else {
            8
        }
    }
    fn ip(&self, side: usize) -> IpAddr {
        let a = self.addr[side];
        if self.v6 {
            IpAddr::from(a)
        } else {
            IpAddr::from([a[0], a[1], a[2], a[3]])
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct PendingFrag {
    frame_len: u16,
    offset8: u16,
    dir: u8,
    ip_id: u16,
}

#[derive(Clone, Copy, Debug, Default)]
struct FlowState {
    /// Frames emitted.
    k: u64,
    /// Logical packets (datagrams) started.
    logical: u64,
    pending: Option<PendingFrag>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanKind {
    Whole { tcp_flags: u8 },
    FragFirst { udp_len: u16 },
    FragLater { offset8: u16 },
}

/// What one frame of a flow is, before any byte is written.
#[derive(Clone, Copy, Debug)]
struct Plan {
    dir: u8,
    frame_len: u16,
    /// IP total length (IPv6: payload length + 40).
    ip_len: u16,
    ip_id: u16,
    logical: u64,
    kind: PlanKind,
}

#[derive(Clone, Debug)]
struct Model {
    flows: Vec<FlowModel>,
    /// (size, cumulative weight)
    sizes: Vec<(u16, u64)>,
    total_weight: u64,
    seed: u64,
    frag_percent: u64,
    non_ip: u64,
    packets: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A per-packet random number that depends only on (seed, flow, index, salt),
/// so that the truth does not depend on the interleaving.
fn mix(seed: u64, flow: u64, k: u64, salt: u64) -> u64 {
    let mut x = splitmix(seed ^ salt.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    x = splitmix(x ^ flow);
    splitmix(x ^ k)
}

const TCP_PORTS: [u16; 8] = [80, 443, 22, 25, 8080, 8443, 993, 5201];
const UDP_PORTS: [u16; 8] = [53, 123, 443, 500, 4500, 5353, 51820, 1194];

const SALT_SIZE: u64 = 1;
const SALT_FRAG: u64 = 2;

impl Model {
    fn new(spec: &SimSpec) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let non_ip = non_ip_frames(spec);
        let ip_frames = spec.packets - non_ip;
        let nflows = u64::from(spec.flows.max(1));
        let (base, rem) = (ip_frames / nflows, ip_frames % nflows);
        let mut flows = Vec::with_capacity(nflows as usize);
        for f in 0..nflows {
            let v6 = rng.gen_range(0..100u8) < spec.v6_percent;
            let r = rng.gen_range(0..100u8);
            let proto = if r < 60 {
                TCP
            } else if r < 95 {
                UDP
            } else if v6 {
                ICMP6
            } else {
                ICMP
            };
            let r = rng.gen_range(0..100u8);
            let tags = if r < spec.qinq_percent {
                Tags::QinQ(rng.gen_range(1..=4094), rng.gen_range(1..=4094))
            } else if r < spec.qinq_percent + spec.vlan_percent {
                Tags::Vlan(rng.gen_range(1..=4094))
            } else {
                Tags::None
            };
            // A bijection on 24 bits: distinct flows get distinct clients.
            let idx = (f as u32).wrapping_mul(0x9E_3779) & 0xFF_FFFF;
            let server: u16 = rng.gen_range(1..=1024);
            let mut client_addr = [0u8; 16];
            let mut server_addr = [0u8; 16];
            if v6 {
                client_addr[..8].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1]);
                client_addr[13..].copy_from_slice(&idx.to_be_bytes()[1..]);
                server_addr[..8].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 2]);
                server_addr[14..].copy_from_slice(&server.to_be_bytes());
            } else {
                client_addr[..4].copy_from_slice(&(0x0A00_0000 | idx).to_be_bytes());
                server_addr[..4].copy_from_slice(&(0xAC10_0000 | u32::from(server)).to_be_bytes());
            }
            let port = match proto {
                TCP => [rng.gen_range(1024..=65535), TCP_PORTS[rng.gen_range(0..TCP_PORTS.len())]],
                UDP => [rng.gen_range(1024..=65535), UDP_PORTS[rng.gen_range(0..UDP_PORTS.len())]],
                _ => [0, 0],
            };
            let ib = idx.to_be_bytes();
            let sb = server.to_be_bytes();
            flows.push(FlowModel {
                v6,
                proto,
                tags,
                addr: [client_addr, server_addr],
                port,
                mac: [[0x02, 0, 0, ib[1], ib[2], ib[3]], [0x02, 0, 1, 0, sb[0], sb[1]]],
                isn: [rng.gen(), rng.gen()],
                packets: base + u64::from(f < rem),
            });
        }
        let mut acc = 0u64;
        let sizes: Vec<(u16, u64)> = spec
            .sizes
            .iter()
            .map(|&(s, w)| {
                acc += u64::from(w);
                (s, acc)
            })
            .collect();
        Self {
            flows,
            sizes,
            total_weight: acc.max(1),
            seed: spec.seed,
            frag_percent: u64::from(spec.frag_percent),
            non_ip,
            packets: spec.packets,
        }
    }

    fn draw_size(&self, f: usize, k: u64) -> u16 {
        let u = mix(self.seed, f as u64, k, SALT_SIZE) % self.total_weight;
        self.sizes.iter().find(|(_, cum)| u < *cum).map_or(MIN_FRAME_LEN as u16, |(s, _)| *s)
    }

    /// The next frame of flow `f`, advancing its state.
    fn plan(&self, f: usize, st: &mut FlowState) -> Plan {
        let m = &self.flows[f];
        let k = st.k;
        st.k += 1;
        let l2 = m.l2_len();
        if let Some(p) = st.pending.take() {
            return Plan {
                dir: p.dir,
                frame_len: p.frame_len,
                ip_len: p.frame_len - l2,
                ip_id: p.ip_id,
                logical: st.logical - 1,
                kind: PlanKind::FragLater { offset8: p.offset8 },
            };
        }
        let logical = st.logical;
        st.logical += 1;
        let dir = (logical % 2) as u8;
        let need = l2 + m.l3_len() + m.l4_len();
        let frame_len = self.draw_size(f, k).max(need);
        let ip_id = (logical as u16).wrapping_add(m.isn[0] as u16);
        if m.proto == UDP
            && !m.v6
            && self.frag_percent > 0
            && k + 1 < m.packets
            && mix(self.seed, f as u64, k, SALT_FRAG) % 100 < self.frag_percent
        {
            let l2l3 = l2 + 20;
            let payload1 = ((frame_len - l2l3) & !7).max(8);
            let frame1 = l2l3 + payload1;
            let frame2 = self.draw_size(f, k + 1).max(l2l3 + 1);
            let payload2 = frame2 - l2l3;
            st.pending = Some(PendingFrag { frame_len: frame2, offset8: payload1 / 8, dir, ip_id });
            return Plan {
                dir,
                frame_len: frame1,
                ip_len: frame1 - l2,
                ip_id,
                logical,
                kind: PlanKind::FragFirst { udp_len: payload1 + payload2 },
            };
        }
        let tcp_flags = if m.proto == TCP {
            let n = m.packets;
            match logical {
                0 => 0x02,
                1 => 0x12,
                k if n >= 4 && k >= n - 2 => 0x11,
                2 => 0x10,
                _ => 0x18,
            }
        } else {
            0
        };
        Plan { dir, frame_len, ip_len: frame_len - l2, ip_id, logical, kind: PlanKind::Whole { tcp_flags } }
    }

    fn is_non_ip(&self, i: u64) -> bool {
        if self.non_ip == 0 {
            return false;
        }
        let (n, t) = (u128::from(self.non_ip), u128::from(self.packets));
        (u128::from(i) + 1) * n / t > u128::from(i) * n / t
    }

    fn write_frame(&self, f: usize, p: &Plan, buf: &mut [u8]) -> usize {
        let m = &self.flows[f];
        let len = usize::from(p.frame_len);
        assert!(buf.len() >= len, "sim frame buffer of {} bytes is shorter than a {len}-byte frame", buf.len());
        let b = &mut buf[..len];
        b.fill(0);
        let (s, d) = (usize::from(p.dir), 1 - usize::from(p.dir));
        b[0..6].copy_from_slice(&m.mac[d]);
        b[6..12].copy_from_slice(&m.mac[s]);
        let mut o = 12;
        let put16 = |b: &mut [u8], o: &mut usize, v: u16| {
            b[*o..*o + 2].copy_from_slice(&v.to_be_bytes());
            *o += 2;
        };
        match m.tags {
            Tags::None => {}
            Tags::Vlan(id) => {
                put16(b, &mut o, 0x8100);
                put16(b, &mut o, id);
            }
            Tags::QinQ(outer, inner) => {
                put16(b, &mut o, 0x88A8);
                put16(b, &mut o, outer);
                put16(b, &mut o, 0x8100);
                put16(b, &mut o, inner);
            }
        }
        put16(b, &mut o, if m.v6 { 0x86DD } else { 0x0800 });
        if m.v6 {
            b[o] = 0x60;
            b[o + 4..o + 6].copy_from_slice(&(p.ip_len - 40).to_be_bytes());
            b[o + 6] = m.proto;
            b[o + 7] = 64;
            b[o + 8..o + 24].copy_from_slice(&m.addr[s]);
            b[o + 24..o + 40].copy_from_slice(&m.addr[d]);
            o += 40;
        } else {
            let frag: u16 = match p.kind {
                PlanKind::Whole { .. } => 0x4000,
                PlanKind::FragFirst { .. } => 0x2000,
                PlanKind::FragLater { offset8 } => offset8,
            };
            b[o] = 0x45;
            b[o + 2..o + 4].copy_from_slice(&p.ip_len.to_be_bytes());
            b[o + 4..o + 6].copy_from_slice(&p.ip_id.to_be_bytes());
            b[o + 6..o + 8].copy_from_slice(&frag.to_be_bytes());
            b[o + 8] = 64;
            b[o + 9] = m.proto;
            b[o + 12..o + 16].copy_from_slice(&m.addr[s][..4]);
            b[o + 16..o + 20].copy_from_slice(&m.addr[d][..4]);
            let sum = ipv4_checksum(&b[o..o + 20]);
            b[o + 10..o + 12].copy_from_slice(&sum.to_be_bytes());
            o += 20;
        }
        let (sport, dport) = (m.port[s], m.port[d]);
        match (p.kind, m.proto) {
            (PlanKind::FragLater { .. }, _) => {}
            (PlanKind::Whole { tcp_flags }, TCP) => {
                let seq = m.isn[s].wrapping_add(p.logical as u32);
                let ack = if tcp_flags & 0x10 != 0 { m.isn[d].wrapping_add(p.logical as u32) } else { 0 };
                b[o..o + 2].copy_from_slice(&sport.to_be_bytes());
                b[o + 2..o + 4].copy_from_slice(&dport.to_be_bytes());
                b[o + 4..o + 8].copy_from_slice(&seq.to_be_bytes());
                b[o + 8..o + 12].copy_from_slice(&ack.to_be_bytes());
                b[o + 12] = 0x50;
                b[o + 13] = tcp_flags;
                b[o + 14..o + 16].copy_from_slice(&0xFFFFu16.to_be_bytes());
            }
            (kind, UDP) => {
                let udp_len = match kind {
                    PlanKind::FragFirst { udp_len } => udp_len,
                    _ => p.ip_len - m.l3_len(),
                };
                b[o..o + 2].copy_from_slice(&sport.to_be_bytes());
                b[o + 2..o + 4].copy_from_slice(&dport.to_be_bytes());
                b[o + 4..o + 6].copy_from_slice(&udp_len.to_be_bytes());
            }
            _ => {
                // ICMP / ICMPv6 echo request (client) or reply (server).
                b[o] = match (m.v6, p.dir) {
                    (false, 0) => 8,
                    (false, _) => 0,
                    (true, 0) => 128,
                    (true, _) => 129,
                };
                b[o + 4..o + 6].copy_from_slice(&(f as u16).to_be_bytes());
                b[o + 6..o + 8].copy_from_slice(&((p.logical / 2) as u16).to_be_bytes());
            }
        }
        len
    }
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

fn non_ip_frames(spec: &SimSpec) -> u64 {
    (u128::from(spec.packets) * u128::from(spec.nonip_percent) / 100) as u64
}

fn write_arp(i: u64, buf: &mut [u8]) -> usize {
    assert!(buf.len() >= ARP_FRAME_LEN, "sim frame buffer shorter than an ARP frame");
    let b = &mut buf[..ARP_FRAME_LEN];
    b.fill(0);
    let mac = [0x02, 0, 2, 0, 0, 1];
    b[0..6].copy_from_slice(&[0xff; 6]);
    b[6..12].copy_from_slice(&mac);
    b[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    b[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    b[22..28].copy_from_slice(&mac);
    b[28..32].copy_from_slice(&[10, 255, 0, 1]);
    b[38..42].copy_from_slice(&[10, 255, (i >> 8) as u8, i as u8]);
    ARP_FRAME_LEN
}

/// Generates the frames of a spec, one at a time, without allocating per frame.
///
/// State is O(flows): the flow models, each flow's position in its sequence,
/// and the current round's order of flows.
#[derive(Debug)]
pub struct SimTraffic {
    model: Model,
    state: Vec<FlowState>,
    order: Vec<u32>,
    pos: usize,
    rng: ChaCha8Rng,
    frame: u64,
    rate: u64,
}

impl SimTraffic {
    /// A generator for `spec`.
    pub fn new(spec: &SimSpec) -> Self {
        let model = Model::new(spec);
        let n = model.flows.len();
        Self {
            state: vec![FlowState::default(); n],
            order: (0..n as u32).collect(),
            pos: n,
            rng: ChaCha8Rng::seed_from_u64(spec.seed ^ 0x005E_ED0F_0DE4),
            frame: 0,
            rate: spec.rate_pps,
            model,
        }
    }

    /// Frames still to come.
    pub fn remaining(&self) -> u64 {
        self.model.packets - self.frame
    }

    /// Timestamp of frame `i` in nanoseconds since the Unix epoch.
    fn timestamp(&self, i: u64) -> u64 {
        let off = if self.rate > 0 {
            (u128::from(i) * 1_000_000_000 / u128::from(self.rate)) as u64
        } else {
            i.saturating_mul(1000)
        };
        START_NS.saturating_add(off)
    }

    /// Writes the next frame into `buf` (at least 1518 bytes); returns (timestamp ns, length).
    ///
    /// `None` once the spec's `packets` frames have been produced.
    ///
    /// # Panics
    /// If `buf` is shorter than the frame: [`MAX_FRAME_LEN`] bytes always
    /// suffice, 1518 when no spec size is above 1518.
    pub fn next_frame(&mut self, buf: &mut [u8]) -> Option<(u64, usize)> {
        if self.frame >= self.model.packets {
            return None;
        }
        let i = self.frame;
        self.frame += 1;
        let ts = self.timestamp(i);
        if self.model.is_non_ip(i) {
            return Some((ts, write_arp(i, buf)));
        }
        loop {
            if self.pos >= self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.pos = 0;
            }
            let f = self.order[self.pos] as usize;
            self.pos += 1;
            if self.state[f].k < self.model.flows[f].packets {
                let plan = self.model.plan(f, &mut self.state[f]);
                return Some((ts, self.model.write_frame(f, &plan, buf)));
            }
        }
    }
}

/// The truth of `spec`, from the model.
pub fn truth(spec: &SimSpec) -> Truth {
    let model = Model::new(spec);
    let mut rows = Vec::new();
    for (f, m) in model.flows.iter().enumerate() {
        // Counters by direction: (packets, ip bytes, frame bytes); a later
        // fragment counts in its datagram's row like any other frame.
        // Clients are distinct per flow, so no two flows share a row.
        let mut acc = [(0u64, 0u64, 0u64); 2];
        let mut st = FlowState::default();
        for _ in 0..m.packets {
            let p = model.plan(f, &mut st);
            let e = &mut acc[usize::from(p.dir)];
            e.0 += 1;
            e.1 += u64::from(p.ip_len);
            e.2 += u64::from(p.frame_len);
        }
        for (dir, &(packets, ip_bytes, frame_bytes)) in acc.iter().enumerate() {
            if packets == 0 {
                continue;
            }
            let (s, d) = (dir, 1 - dir);
            rows.push(TruthRow {
                src: m.ip(s),
                dst: m.ip(d),
                src_port: m.port[s],
                dst_port: m.port[d],
                proto: m.proto,
                vlan: m.tags.outer(),
                packets,
                ip_bytes,
                frame_bytes,
            });
        }
    }
    rows.sort_unstable();
    Truth { rows, non_ip_frames: model.non_ip, total_frames: spec.packets }
}

/// Writes the spec's frames as a pcap file; returns the truth.
///
/// The file is written through [`shmq::files::AtomicFile`]: a new temporary
/// file beside `path` (`O_CREAT | O_EXCL | O_NOFOLLOW`, mode
/// [`OUTPUT_MODE`]), fsynced and renamed over `path`, so `path` is either
/// absent or complete, and a file or symbolic link planted under `path` or
/// any temporary name is replaced or refused, never written through. Link
/// type Ethernet, snap length 65535, timestamps in nanoseconds when `nanos`,
/// else microseconds (truncated).
///
/// # Errors
/// I/O errors; the temporary file is removed.
pub fn write_pcap(spec: &SimSpec, path: &Path, nanos: bool) -> std::io::Result<Truth> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::{DataLink, Endianness, TsResolution};
    let pcap_err = |e: pcap_file::PcapError| match e {
        pcap_file::PcapError::IoError(e) => e,
        e => std::io::Error::other(e),
    };
    let file = shmq::files::AtomicFile::create(path, OUTPUT_MODE)?;
    let header = PcapHeader {
        snaplen: 65535,
        datalink: DataLink::ETHERNET,
        ts_resolution: if nanos { TsResolution::NanoSecond } else { TsResolution::MicroSecond },
        endianness: Endianness::Little,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).map_err(pcap_err)?;
    let mut gen = SimTraffic::new(spec);
    let mut buf = [0u8; MAX_FRAME_LEN];
    while let Some((ts, len)) = gen.next_frame(&mut buf) {
        let pkt = PcapPacket::new(Duration::from_nanos(ts), len as u32, &buf[..len]);
        w.write_packet(&pkt).map_err(pcap_err)?;
    }
    // Dropped on any error above: the temporary file is removed.
    w.into_writer().commit(true)?;
    Ok(truth(spec))
}

/// Mode of the files this crate writes (captures and truth CSVs): the owner
/// writes, everyone reads, whatever the umask.
pub const OUTPUT_MODE: u32 = 0o644;

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn spec(s: &str) -> SimSpec {
        SimSpec::from_str(s).unwrap()
    }

    fn frames(s: &SimSpec) -> Vec<(u64, Vec<u8>)> {
        let mut g = SimTraffic::new(s);
        let mut buf = [0u8; MAX_FRAME_LEN];
        let mut out = Vec::new();
        while let Some((ts, len)) = g.next_frame(&mut buf) {
            out.push((ts, buf[..len].to_vec()));
        }
        out
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let s = spec("flows=50,packets=2000,v6=30,vlan=20,qinq=10,frag=20,nonip=3,seed=7");
        let a = frames(&s);
        assert_eq!(a.len(), 2000);
        assert_eq!(a, frames(&s));
        let b = frames(&SimSpec { seed: 8, ..s.clone() });
        assert_ne!(a, b);
        assert_eq!(truth(&s), truth(&s));
    }

    #[test]
    fn truth_totals_match_the_spec() {
        for s in [
            spec("flows=100,packets=10000"),
            spec("flows=7,packets=1001,nonip=10,frag=50,v6=50,qinq=20,vlan=20"),
            spec("flows=1000,packets=10"),
            spec("flows=1,packets=1"),
            spec("packets=0"),
        ] {
            let t = truth(&s);
            assert_eq!(t.total_frames, s.packets);
            assert_eq!(t.non_ip_frames, s.packets * u64::from(s.nonip_percent) / 100);
            assert_eq!(t.ip_frames() + t.non_ip_frames, s.packets, "{s}");
            let mut sorted = t.rows.clone();
            sorted.sort();
            assert_eq!(sorted, t.rows);
            // The generator agrees on counts and bytes.
            let f = frames(&s);
            assert_eq!(f.len() as u64, s.packets);
            let frame_bytes: u64 = f.iter().map(|(_, b)| b.len() as u64).sum();
            let arp = t.non_ip_frames * ARP_FRAME_LEN as u64;
            assert_eq!(t.rows.iter().map(|r| r.frame_bytes).sum::<u64>() + arp, frame_bytes);
        }
    }

    #[test]
    fn ip_lengths_follow_frame_lengths() {
        let s = spec("flows=20,packets=400,v6=50,vlan=30,qinq=30");
        for (_, f) in frames(&s) {
            let mut o = 12;
            let mut tags = 0;
            while matches!(u16::from_be_bytes([f[o], f[o + 1]]), 0x8100 | 0x88A8) {
                o += 4;
                tags += 1;
            }
            let et = u16::from_be_bytes([f[o], f[o + 1]]);
            let ip = &f[o + 2..];
            match et {
                0x0800 => {
                    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), f.len() - 14 - 4 * tags);
                    assert_eq!(ipv4_checksum(&ip[..20]), 0, "header checksum verifies");
                }
                0x86DD => assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), f.len() - 14 - 4 * tags - 40),
                other => panic!("ethertype {other:#x}"),
            }
        }
    }

    #[test]
    fn rows_are_directional_and_ports_follow_rules() {
        let s = spec("flows=30,packets=300,v6=0,vlan=0,frag=100");
        let t = truth(&s);
        // Port-less rows are ICMP only: later fragments are in their datagram's row.
        assert!(t.rows.iter().all(|r| r.src_port != 0 || r.proto == ICMP));
        // Frames with MF set and frames with an offset pair up, in order, with one id.
        let (mut mf, mut off) = (0u64, 0u64);
        let mut firsts = std::collections::HashMap::new();
        for (_, f) in frames(&s) {
            if u16::from_be_bytes([f[12], f[13]]) == 0x0800 {
                let fl = u16::from_be_bytes([f[20], f[21]]);
                let dgram = (f[26..34].to_vec(), u16::from_be_bytes([f[18], f[19]]));
                if fl & 0x2000 != 0 {
                    mf += 1;
                    firsts.insert(dgram, u16::from_be_bytes([f[34], f[35]]));
                } else if fl & 0x1FFF != 0 {
                    off += 1;
                    assert!(firsts.contains_key(&dgram), "a later fragment follows its first");
                }
            }
        }
        assert!(mf > 0, "some fragmented datagrams");
        assert_eq!(mf, off);
        // Every UDP packet, fragments included, is in a row with the flow's ports.
        let udp: u64 = t.rows.iter().filter(|r| r.proto == UDP).map(|r| r.packets).sum();
        let udp_frames = frames(&s).iter().filter(|(_, f)| f[12..14] == [0x08, 0x00] && f[23] == UDP).count();
        assert_eq!(udp, udp_frames as u64);
        assert!(t.rows.iter().filter(|r| r.proto == UDP).all(|r| r.src_port != 0 && r.dst_port != 0));
    }

    #[test]
    fn every_row_key_is_distinct() {
        let t = truth(&spec("flows=20000,packets=60000,v6=50,frag=50,vlan=20,qinq=20"));
        let mut keys: Vec<_> = t.rows.iter().map(|r| (r.src, r.dst, r.src_port, r.dst_port, r.proto, r.vlan)).collect();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n);
        // Every flow with two or more packets shows both directions.
        assert!(n >= 2 * 20000);
    }

    #[test]
    fn tcp_flows_open_and_close() {
        let s = spec("flows=1,packets=6,v6=0,vlan=0,seed=3");
        // Find a seed whose single flow is TCP.
        let s =
            (1..100).map(|seed| SimSpec { seed, ..s.clone() }).find(|s| Model::new(s).flows[0].proto == TCP).unwrap();
        let flags: Vec<u8> = frames(&s).iter().map(|(_, f)| f[14 + 20 + 13]).collect();
        assert_eq!(flags, [0x02, 0x12, 0x10, 0x18, 0x11, 0x11]);
        let t = truth(&s);
        assert_eq!(t.rows.len(), 2);
        assert!(t.rows.iter().all(|r| r.packets == 3));
    }

    #[test]
    fn timestamps_follow_rate() {
        let f = frames(&spec("flows=2,packets=3,rate=4"));
        let ts: Vec<u64> = f.iter().map(|(t, _)| *t).collect();
        assert_eq!(ts, [START_NS, START_NS + 250_000_000, START_NS + 500_000_000]);
        let f = frames(&spec("flows=2,packets=3"));
        assert_eq!(f[2].0, START_NS + 2000);
    }

    #[test]
    fn csv_has_pmacct_columns() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.csv");
        let t = truth(&spec("flows=5,packets=50,v6=50"));
        t.write_csv(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES"));
        assert_eq!(lines.count(), t.rows.len());
        let r = &t.rows[0];
        assert!(text.contains(&format!(
            "{},{},{},{},{},{},{}",
            r.src,
            r.dst,
            r.src_port,
            r.dst_port,
            station::proto::proto_name(r.proto),
            r.packets,
            r.ip_bytes
        )));
    }

    #[test]
    fn a_link_planted_as_the_capture_its_old_temporary_name_or_the_truth_is_never_written_through() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let victim = |n: &str| {
            let v = d.path().join(n);
            std::fs::write(&v, "victim").unwrap();
            std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o600)).unwrap();
            v
        };
        let (va, vb, vc) = (victim("va"), victim("vb"), victim("vc"));
        let pcap = d.path().join("x.pcap");
        let csv = d.path().join("x-truth.csv");
        std::os::unix::fs::symlink(&va, d.path().join("x.pcap.tmp")).unwrap();
        std::os::unix::fs::symlink(&vb, &pcap).unwrap();
        std::os::unix::fs::symlink(&vc, &csv).unwrap();
        let t = write_pcap(&spec("flows=3,packets=30"), &pcap, false).unwrap();
        t.write_csv(&csv).unwrap();
        for v in [&va, &vb, &vc] {
            assert_eq!(std::fs::read_to_string(v).unwrap(), "victim", "{}", v.display());
            assert_eq!(std::fs::metadata(v).unwrap().permissions().mode() & 0o7777, 0o600);
        }
        for p in [&pcap, &csv] {
            let m = std::fs::symlink_metadata(p).unwrap();
            assert!(m.file_type().is_file(), "{} is the new file, not the link", p.display());
            assert_eq!(m.permissions().mode() & 0o7777, OUTPUT_MODE);
        }
        assert!(std::fs::read_to_string(&csv).unwrap().starts_with("SRC_IP,"));
    }

    #[test]
    fn pcap_round_trip() {
        use pcap_file::pcap::PcapReader;
        let d = tempfile::tempdir().unwrap();
        let s = spec("flows=10,packets=500,nonip=2,vlan=30,qinq=10");
        for nanos in [true, false] {
            let p = d.path().join(format!("s{nanos}.pcap"));
            let t = write_pcap(&s, &p, nanos).unwrap();
            let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names.len(), if nanos { 1 } else { 2 }, "no temporary file is left: {names:?}");
            let want = frames(&s);
            let mut r = PcapReader::new(std::fs::File::open(&p).unwrap()).unwrap();
            assert_eq!(r.header().datalink, pcap_file::DataLink::ETHERNET);
            let mut n = 0;
            while let Some(pkt) = r.next_packet() {
                let pkt = pkt.unwrap();
                let (ts, bytes) = &want[n];
                assert_eq!(pkt.data.as_ref(), bytes.as_slice());
                assert_eq!(pkt.orig_len as usize, bytes.len());
                let got = pkt.timestamp.as_nanos() as u64;
                if nanos {
                    assert_eq!(got, *ts);
                } else {
                    assert_eq!(got, ts / 1000 * 1000);
                }
                n += 1;
            }
            assert_eq!(n as u64, s.packets);
            // The model's truth against the written frames, parsed by an
            // independent parser (the wire crate), row for row.
            let mut rows: std::collections::BTreeMap<RowKey, (u64, u64, u64)> = std::collections::BTreeMap::new();
            let mut non_ip = 0;
            let mut r = PcapReader::new(std::fs::File::open(&p).unwrap()).unwrap();
            while let Some(pkt) = r.next_packet() {
                let pkt = pkt.unwrap();
                let sm = wire::summarize(&pkt.data);
                let ip = |a: [u8; 16]| station::record::ip_from_bytes(sm.ip_version, &a);
                match (ip(sm.src), ip(sm.dst)) {
                    (Some(src), Some(dst)) => {
                        let e = rows.entry((src, dst, sm.src_port, sm.dst_port, sm.proto, sm.vlan)).or_default();
                        e.0 += 1;
                        e.1 += u64::from(sm.ip_len);
                        e.2 += u64::from(pkt.orig_len);
                    }
                    _ => non_ip += 1,
                }
            }
            let parsed = rows_of_tally(rows);
            assert_eq!(parsed, t.rows);
            assert_eq!(non_ip, t.non_ip_frames);
        }
    }
}

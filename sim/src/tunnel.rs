//! A small capture of tunnelled traffic with its truth both ways: as inner
//! flows with their tunnels (what `CJ_DECAP=vxlan,geneve,gre,ipip` must
//! report) and as outer flows (what a run without `CJ_DECAP` must report).
//!
//! The model, fixed (no seed): seven tunnels, each carrying three inner flows
//! (TCP: 3 packets client to server, SYN first, and 2 back; UDP: 2 and 1;
//! ICMP or ICMPv6 echo: 1 and 1), replies going through the reversed tunnel
//! (outer source and destination swapped):
//!
//! | tunnel  | outer          | id (VNI, key) | inside                |
//! |---------|----------------|---------------|-----------------------|
//! | vxlan   | IPv4, UDP 4789 | VNI 100       | Ethernet, IPv4        |
//! | vxlan   | IPv4, UDP 4789 | VNI 200       | the same inner flows  |
//! | geneve  | IPv6, UDP 6081 | VNI 300       | Ethernet, IPv4        |
//! | gre     | IPv4, key      | key 7         | IPv4                  |
//! | gre-teb | IPv4, no key   | none          | Ethernet, IPv6        |
//! | ipip    | IPv6 (proto 4) | none          | IPv4                  |
//! | ip6ip   | IPv4 (6in4)    | none          | IPv6                  |
//!
//! plus three packets of enabled tunnels whose inside is not usable, which
//! stay outer flows either way: two VXLAN packets carrying ARP and one GRE
//! version 1 (PPTP) packet. The second VXLAN tunnel carries the very inner
//! flows of the first, so a meter that does not key on the tunnel merges them.
//!
//! The truth is tallied from the model's own values (addresses, lengths),
//! never by parsing the frames. Checksums: IPv4 headers' are valid, the rest 0.
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::{TruthRow, START_NS};

/// One direction of a decapsulated flow in the truth: the inner row and its tunnel.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TunnelRow {
    /// The tunnel's name as outputs print it (`vxlan`, `geneve`, `gre`,
    /// `gre-teb`, `ipip`, `ip6ip`); empty for a packet that stays outer.
    pub tunnel: &'static str,
    /// Outer source address of this direction (None when not tunnelled).
    pub outer_src: Option<IpAddr>,
    /// Outer destination address.
    pub outer_dst: Option<IpAddr>,
    /// VNI or GRE key, 0 when none.
    pub tunnel_id: u32,
    /// The inner directed row (the outer one for a packet that stays outer).
    pub row: TruthRow,
}

/// The truth of [`tunnel_capture`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelTruth {
    /// With decapsulation: directed rows, sorted.
    pub decapsulated: Vec<TunnelRow>,
    /// Without: directed outer rows, sorted.
    pub outer: Vec<TruthRow>,
    /// Frames.
    pub frames: u64,
    /// Their bytes.
    pub frame_bytes: u64,
    /// Frames counted as their inner flow when decapsulated.
    pub tunnel_packets: u64,
    /// Frames of enabled tunnels that stay outer flows.
    pub undecoded: u64,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMP6: u8 = 58;
const GRE: u8 = 47;

#[derive(Clone, Copy)]
enum Kind {
    Vxlan,
    Geneve,
    Gre,
    GreTeb,
    Ipip,
    Ip6ip,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Vxlan => "vxlan",
            Kind::Geneve => "geneve",
            Kind::Gre => "gre",
            Kind::GreTeb => "gre-teb",
            Kind::Ipip => "ipip",
            Kind::Ip6ip => "ip6ip",
        }
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::from([a, b, c, d])
}

fn v6(net: u16, host: u16) -> IpAddr {
    IpAddr::from([0xfd00, net, 0, 0, 0, 0, 0, host])
}

fn ip_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An IPv4 or IPv6 packet (by the source's family) with a valid IPv4 header checksum.
fn ip(src: IpAddr, dst: IpAddr, proto: u8, ident: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + payload.len());
    if src.is_ipv4() {
        let total = (20 + payload.len()) as u16;
        b.extend_from_slice(&[0x45, 0]);
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&ident.to_be_bytes());
        b.extend_from_slice(&[0x40, 0, 64, proto, 0, 0]);
        b.extend(ip_bytes(src));
        b.extend(ip_bytes(dst));
        let sum = b.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
        let sum = (sum & 0xffff) + (sum >> 16);
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        b[10..12].copy_from_slice(&sum.to_be_bytes());
    } else {
        b.extend_from_slice(&[0x60, 0, 0, 0]);
        b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        b.extend_from_slice(&[proto, 64]);
        b.extend(ip_bytes(src));
        b.extend(ip_bytes(dst));
    }
    b.extend_from_slice(payload);
    b
}

fn eth(dst: [u8; 6], src: [u8; 6], family_of: IpAddr, payload: &[u8]) -> Vec<u8> {
    let ethertype: u16 = if family_of.is_ipv4() { 0x0800 } else { 0x86dd };
    eth_typed(dst, src, ethertype, payload)
}

fn eth_typed(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(14 + payload.len());
    b.extend_from_slice(&dst);
    b.extend_from_slice(&src);
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    b
}

/// A tunnel of the model.
struct Tun {
    kind: Kind,
    /// Outer endpoints: the client's side, the server's side.
    outer: (IpAddr, IpAddr),
    id: Option<u32>,
    /// Inner addresses: client, server.
    inner: (IpAddr, IpAddr),
}

/// One inner packet of the model.
struct Pkt {
    proto: u8,
    /// Sent by the client (else the server).
    from_client: bool,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    payload_len: usize,
}

/// The three inner flows of every tunnel, packet by packet.
fn conversation(v6: bool) -> Vec<Pkt> {
    let icmp = if v6 { ICMP6 } else { ICMP };
    let p = |proto, from_client, sport, dport, tcp_flags, payload_len| Pkt {
        proto,
        from_client,
        sport,
        dport,
        tcp_flags,
        payload_len,
    };
    vec![
        p(TCP, true, 40000, 80, 0x02, 0),
        p(TCP, false, 80, 40000, 0x12, 0),
        p(TCP, true, 40000, 80, 0x10, 0),
        p(UDP, true, 5353, 53, 0, 33),
        p(TCP, true, 40000, 80, 0x18, 120),
        p(TCP, false, 80, 40000, 0x18, 900),
        p(UDP, false, 53, 5353, 0, 77),
        p(icmp, true, 0, 0, 0, 56),
        p(UDP, true, 5353, 53, 0, 12),
        p(icmp, false, 0, 0, 0, 56),
    ]
}

fn transport(p: &Pkt) -> Vec<u8> {
    let body = vec![0x5a; p.payload_len];
    match p.proto {
        TCP => {
            let mut b = Vec::with_capacity(20 + body.len());
            b.extend_from_slice(&p.sport.to_be_bytes());
            b.extend_from_slice(&p.dport.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, p.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
            b.extend(body);
            b
        }
        UDP => udp(p.sport, p.dport, &body),
        proto => {
            let t = if proto == ICMP6 { [128, 129] } else { [8, 0] };
            let mut b = vec![if p.from_client { t[0] } else { t[1] }, 0, 0, 0, 0, 1, 0, 1];
            b.extend(body);
            b
        }
    }
}

const HOST_MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2]];
const INNER_MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 2, 1], [2, 0, 0, 0, 2, 2]];

/// The outer frame of an inner IP packet `inner` through `t`, sent from the
/// client's end when `from_client`; also the outer (ports, proto) for the truth.
fn encapsulate(t: &Tun, inner: &[u8], inner_v6: bool, from_client: bool, n: u16) -> (Vec<u8>, u16, u16, u8) {
    let (src, dst) = if from_client { t.outer } else { (t.outer.1, t.outer.0) };
    let side = usize::from(!from_client);
    let inner_eth = || eth_typed(INNER_MAC[1 - side], INNER_MAC[side], if inner_v6 { 0x86dd } else { 0x0800 }, inner);
    let sport = 49152 + (n % 7) * 1000 + u16::from(!from_client);
    let (payload, proto, ports) = match t.kind {
        Kind::Vxlan => {
            let vni = t.id.unwrap_or(0);
            let mut b = vec![0x08, 0, 0, 0];
            b.extend_from_slice(&(vni << 8).to_be_bytes());
            b.extend(inner_eth());
            (udp(sport, 4789, &b), UDP, (sport, 4789))
        }
        Kind::Geneve => {
            let vni = t.id.unwrap_or(0);
            // One 8-byte option (OptLen 2), protocol Transparent Ethernet Bridging.
            let mut b = vec![0x02, 0, 0x65, 0x58];
            b.extend_from_slice(&(vni << 8).to_be_bytes());
            b.extend_from_slice(&[0x01, 0x02, 0x03, 0x01, 0xaa, 0xbb, 0xcc, 0xdd]);
            b.extend(inner_eth());
            (udp(sport, 6081, &b), UDP, (sport, 6081))
        }
        Kind::Gre | Kind::GreTeb => {
            let teb = matches!(t.kind, Kind::GreTeb);
            let proto_type: u16 = if teb {
                0x6558
            } else if inner_v6 {
                0x86dd
            } else {
                0x0800
            };
            let mut b = vec![if t.id.is_some() { 0x20 } else { 0 }, 0];
            b.extend_from_slice(&proto_type.to_be_bytes());
            if let Some(k) = t.id {
                b.extend_from_slice(&k.to_be_bytes());
            }
            if teb {
                b.extend(inner_eth());
            } else {
                b.extend_from_slice(inner);
            }
            (b, GRE, (0, 0))
        }
        Kind::Ipip => (inner.to_vec(), 4, (0, 0)),
        Kind::Ip6ip => (inner.to_vec(), 41, (0, 0)),
    };
    let outer = ip(src, dst, proto, n, &payload);
    (eth(HOST_MAC[1 - side], HOST_MAC[side], src, &outer), ports.0, ports.1, proto)
}

/// The frames (timestamp, bytes) of the model and its truth.
pub fn tunnel_capture() -> (Vec<(u64, Vec<u8>)>, TunnelTruth) {
    let (h4a, h4b) = (v4(192, 168, 10, 1), v4(192, 168, 10, 2));
    let (h6a, h6b) = (v6(0x10, 1), v6(0x10, 2));
    let tunnels = [
        Tun { kind: Kind::Vxlan, outer: (h4a, h4b), id: Some(100), inner: (v4(10, 1, 0, 1), v4(10, 1, 0, 2)) },
        Tun { kind: Kind::Vxlan, outer: (h4a, h4b), id: Some(200), inner: (v4(10, 1, 0, 1), v4(10, 1, 0, 2)) },
        Tun { kind: Kind::Geneve, outer: (h6a, h6b), id: Some(300), inner: (v4(10, 2, 0, 1), v4(10, 2, 0, 2)) },
        Tun {
            kind: Kind::Gre,
            outer: (h4a, v4(192, 168, 10, 3)),
            id: Some(7),
            inner: (v4(10, 3, 0, 1), v4(10, 3, 0, 2)),
        },
        Tun { kind: Kind::GreTeb, outer: (h4b, v4(192, 168, 10, 3)), id: None, inner: (v6(0x4, 1), v6(0x4, 2)) },
        Tun { kind: Kind::Ipip, outer: (h6a, v6(0x10, 3)), id: None, inner: (v4(10, 5, 0, 1), v4(10, 5, 0, 2)) },
        Tun { kind: Kind::Ip6ip, outer: (h4a, v4(192, 168, 10, 4)), id: None, inner: (v6(0x6, 1), v6(0x6, 2)) },
    ];
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut inner_rows: Vec<(TunnelKey, (u64, u64, u64))> = Vec::new();
    let mut outer_rows: Vec<(RowKey, (u64, u64, u64))> = Vec::new();
    let one = |ip_len: usize, frame_len: usize| (1, ip_len as u64, frame_len as u64);
    let mut tunnel_packets = 0;
    // Interleave the tunnels packet by packet.
    let convs: Vec<Vec<Pkt>> = tunnels.iter().map(|t| conversation(t.inner.0.is_ipv6())).collect();
    let mut n: u16 = 0;
    for i in 0..convs[0].len() {
        for (t, conv) in tunnels.iter().zip(&convs) {
            let p = &conv[i];
            let (isrc, idst) = if p.from_client { t.inner } else { (t.inner.1, t.inner.0) };
            let inner = ip(isrc, idst, p.proto, n, &transport(p));
            let (frame, osp, odp, oproto) = encapsulate(t, &inner, isrc.is_ipv6(), p.from_client, n);
            let (osrc, odst) = if p.from_client { t.outer } else { (t.outer.1, t.outer.0) };
            let outer_ip_len = frame.len() - 14;
            add(
                &mut inner_rows,
                (t.kind.name(), Some(osrc), Some(odst), t.id.unwrap_or(0), (isrc, idst, p.sport, p.dport, p.proto)),
                one(inner.len(), frame.len()),
            );
            add(&mut outer_rows, (osrc, odst, osp, odp, oproto), one(outer_ip_len, frame.len()));
            tunnel_packets += 1;
            frames.push(frame);
            n += 1;
        }
    }
    // Enabled tunnels whose inside is not usable: outer flows either way.
    let arp = eth_typed([0xff; 6], INNER_MAC[0], 0x0806, &[0; 28]);
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    vx.extend(arp);
    let pptp = [0x30, 0x81, 0x88, 0x0b, 0, 0, 0, 0, 0, 0, 0, 1];
    let undecodable = [
        (h4a, h4b, UDP, 50000, 4789, udp(50000, 4789, &vx)),
        (h4b, h4a, UDP, 50001, 4789, udp(50001, 4789, &vx)),
        (h4a, v4(192, 168, 10, 9), GRE, 0, 0, pptp.to_vec()),
    ];
    for (src, dst, proto, sp, dp, payload) in &undecodable {
        let outer = ip(*src, *dst, *proto, n, payload);
        let frame = eth(HOST_MAC[1], HOST_MAC[0], *src, &outer);
        let key = (*src, *dst, *sp, *dp, *proto);
        add(&mut inner_rows, ("", None, None, 0, key), one(outer.len(), frame.len()));
        add(&mut outer_rows, key, one(outer.len(), frame.len()));
        frames.push(frame);
        n += 1;
    }
    let truth = TunnelTruth {
        decapsulated: {
            let mut v: Vec<TunnelRow> = inner_rows
                .into_iter()
                .map(|((tunnel, outer_src, outer_dst, tunnel_id, key), c)| TunnelRow {
                    tunnel,
                    outer_src,
                    outer_dst,
                    tunnel_id,
                    row: row(key, c),
                })
                .collect();
            v.sort();
            v
        },
        outer: {
            let mut v: Vec<TruthRow> = outer_rows.into_iter().map(|(k, c)| row(k, c)).collect();
            v.sort();
            v
        },
        frames: frames.len() as u64,
        frame_bytes: frames.iter().map(|f| f.len() as u64).sum(),
        tunnel_packets,
        undecoded: undecodable.len() as u64,
    };
    let stamped = frames.into_iter().enumerate().map(|(i, f)| (START_NS + i as u64 * 1_000_000, f)).collect();
    (stamped, truth)
}

/// (src, dst, src port, dst port, proto).
type RowKey = (IpAddr, IpAddr, u16, u16, u8);

/// (tunnel, outer src, outer dst, id, inner row key).
type TunnelKey = (&'static str, Option<IpAddr>, Option<IpAddr>, u32, RowKey);

fn add<K: PartialEq>(rows: &mut Vec<(K, (u64, u64, u64))>, key: K, c: (u64, u64, u64)) {
    match rows.iter_mut().find(|(k, _)| *k == key) {
        Some((_, t)) => {
            t.0 += c.0;
            t.1 += c.1;
            t.2 += c.2;
        }
        None => rows.push((key, c)),
    }
}

fn row((src, dst, src_port, dst_port, proto): RowKey, (packets, ip_bytes, frame_bytes): (u64, u64, u64)) -> TruthRow {
    TruthRow { src, dst, src_port, dst_port, proto, vlan: 0, packets, ip_bytes, frame_bytes }
}

/// Writes [`tunnel_capture`] as a pcap file (Ethernet, microsecond
/// timestamps) at `path`, through a temporary file renamed over it as
/// [`crate::write_pcap`] does (a planted file or link is never written
/// through); returns the truth.
///
/// # Errors
/// I/O errors; the temporary file is removed.
pub fn write_tunnel_pcap(path: &Path) -> std::io::Result<TunnelTruth> {
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    let (frames, truth) = tunnel_capture();
    // Through a temporary file of its own, renamed over `path` (as crate::write_pcap).
    let file = shmq::files::AtomicFile::create(path, crate::OUTPUT_MODE)?;
    let mut w = PcapWriter::new(file).map_err(std::io::Error::other)?;
    for (ts, f) in &frames {
        w.write_packet(&PcapPacket::new(Duration::from_nanos(*ts), f.len() as u32, f))
            .map_err(std::io::Error::other)?;
    }
    w.into_writer().commit(true)?;
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_has_every_tunnel_both_directions_and_the_undecodable_packets() {
        let (frames, t) = tunnel_capture();
        assert_eq!(t.frames, frames.len() as u64);
        assert_eq!(t.tunnel_packets + t.undecoded, t.frames);
        assert_eq!((t.tunnel_packets, t.undecoded), (70, 3));
        for name in ["vxlan", "geneve", "gre", "gre-teb", "ipip", "ip6ip"] {
            assert!(t.decapsulated.iter().any(|r| r.tunnel == name), "{name}");
        }
        // Every inner flow has both directions; the two VXLAN tunnels carry the same inner rows.
        let vx: Vec<_> = t.decapsulated.iter().filter(|r| r.tunnel == "vxlan").collect();
        assert_eq!(vx.len(), 12);
        assert_eq!(vx.iter().filter(|r| r.tunnel_id == 100).count(), 6);
        let sum = |rows: &mut dyn Iterator<Item = &TruthRow>| {
            rows.map(|r| (r.packets, r.frame_bytes)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        };
        assert_eq!(sum(&mut t.decapsulated.iter().map(|r| &r.row)), (t.frames, t.frame_bytes));
        assert_eq!(sum(&mut t.outer.iter()), (t.frames, t.frame_bytes));
    }
}

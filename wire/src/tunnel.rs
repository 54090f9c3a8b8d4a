//! Tunnel decapsulation (`CJ_DECAP`): VXLAN, Geneve, GRE (with inner IP or,
//! GRE-TEB, inner Ethernet) and IP-in-IP (IPv4 or IPv6 inside IPv4 or IPv6),
//! one level deep.
//!
//! Guarantees of [`summarize_decap`]: never panics and never allocates, on any
//! input. It gives exactly one of three outcomes for a frame:
//!
//! - [`Decapsulated::Plain`]: not a tunnel packet that [`Decap`] names (or
//!   decapsulation is off): the summary is [`crate::summarize_wire`]'s.
//! - [`Decapsulated::Inner`]: the summary of the **inner** packet (its
//!   addresses, ports, protocol, IP length, TCP flags, fragment position), and
//!   the [`Tunnel`]: kind, the outer source and destination address and the
//!   VNI (VXLAN, Geneve) or GRE key. MACs are the inner Ethernet header's
//!   (VXLAN, Geneve, GRE-TEB) or zero (GRE, IP-in-IP carry no inner Ethernet
//!   header); the VLAN ids are the outer frame's (inner tags are walked and
//!   ignored). A length taken from the inner frame counts the bytes the
//!   capture cut off, as [`crate::summarize_wire`] does.
//! - [`Decapsulated::Undecoded`]: the outer packet matched (the UDP
//!   destination port or IP protocol of an enabled tunnel) but its inside is
//!   not usable: the tunnel header is cut or malformed (VXLAN without the I
//!   flag, a Geneve version other than 0, GRE with version other than 0 or the
//!   routing bit, an unknown GRE or Geneve protocol type), the outer packet is
//!   a fragment, or the inner frame is not IP or not usable IP (ARP inside
//!   VXLAN, a cut inner header). The summary is the outer packet's: the
//!   caller accounts it as the outer flow and counts it.
//!
//! Matching: VXLAN and Geneve by the UDP destination port (RFC 7348 and RFC
//! 8926 assign 4789 and 6081; [`Decap`] may name others), GRE by IP protocol
//! 47, IP-in-IP by IP protocol 4 (IPv4 inside) and 41 (IPv6 inside). The inner
//! packet is parsed by the same code as an outer one ([`crate::summarize`] for
//! an inner Ethernet frame), and never decapsulated again.
//!
//! Not guaranteed: tunnels in other encapsulations (GTP, MPLS, NVGRE's
//! 24-bit VSID is reported as the 32-bit GRE key, ERSPAN, L2TP, WireGuard,
//! IPsec) are not decoded; a VXLAN-GPE or other protocol on a configured port
//! is taken as that port's tunnel and is undecoded when its header does not
//! fit. Checksums (GRE's, UDP's) are not verified.
use core::fmt;

use crate::ethernet::EtherType;
use crate::summary::{self, add_uncaptured};
use crate::{be16, be32, ip_proto, udp, PacketSummary, L3};

/// IANA port of VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// IANA port of Geneve (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;
/// IP protocol number of GRE.
pub const IPPROTO_GRE: u8 = 47;
/// IP protocol number of IPv4 encapsulation (IP-in-IP).
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol number of IPv6 encapsulation (6in4, IPv6-in-IPv6).
pub const IPPROTO_IPV6: u8 = 41;
/// EtherType of Transparent Ethernet Bridging (GRE-TEB, Geneve with an Ethernet inside).
pub const ETHERTYPE_TEB: u16 = 0x6558;

mod field {
    // VXLAN (RFC 7348): flags (I = 0x08), 3 reserved, VNI (24 bits), reserved.
    pub const VXLAN_FLAGS: usize = 0;
    pub const VXLAN_VNI: usize = 4;
    pub const VXLAN_LEN: usize = 8;
    // Geneve (RFC 8926): Ver(2) OptLen(6), O C Rsvd, Protocol Type, VNI(24) Rsvd, options.
    pub const GENEVE_VER_OPTLEN: usize = 0;
    pub const GENEVE_PROTO: usize = 2;
    pub const GENEVE_VNI: usize = 4;
    pub const GENEVE_LEN: usize = 8;
    // GRE (RFC 2784, 2890): C R K S ... Ver(3), Protocol Type, then optional
    // checksum+reserved (C), key (K), sequence number (S), 4 bytes each.
    pub const GRE_FLAGS: usize = 0;
    pub const GRE_PROTO: usize = 2;
    pub const GRE_LEN: usize = 4;
}

/// A kind of tunnel, as the record's `tunnel_kind` byte carries it (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TunnelKind {
    /// VXLAN (UDP, inner Ethernet, 24-bit VNI).
    Vxlan = 1,
    /// Geneve (UDP, inner Ethernet or IP, 24-bit VNI).
    Geneve = 2,
    /// GRE with an IP packet inside (optional 32-bit key).
    Gre = 3,
    /// GRE with an Ethernet frame inside (Transparent Ethernet Bridging, 0x6558; NVGRE).
    GreTeb = 4,
    /// IPv4 inside IPv4 or IPv6 (IP protocol 4).
    Ipip = 5,
    /// IPv6 inside IPv4 (6in4, SIT) or IPv6 (IP protocol 41).
    Ip6ip = 6,
}

impl TunnelKind {
    /// Every kind, by record byte.
    pub const ALL: [TunnelKind; 6] = [
        TunnelKind::Vxlan,
        TunnelKind::Geneve,
        TunnelKind::Gre,
        TunnelKind::GreTeb,
        TunnelKind::Ipip,
        TunnelKind::Ip6ip,
    ];

    /// The kind of a record byte; `None` for 0 (not tunnelled) and unknown values.
    pub fn from_u8(v: u8) -> Option<TunnelKind> {
        TunnelKind::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// The name outputs print: `vxlan`, `geneve`, `gre`, `gre-teb`, `ipip`, `ip6ip`.
    pub const fn name(self) -> &'static str {
        match self {
            TunnelKind::Vxlan => "vxlan",
            TunnelKind::Geneve => "geneve",
            TunnelKind::Gre => "gre",
            TunnelKind::GreTeb => "gre-teb",
            TunnelKind::Ipip => "ipip",
            TunnelKind::Ip6ip => "ip6ip",
        }
    }

    /// Whether the kind carries a VNI or key in [`Tunnel::id`] (VXLAN and
    /// Geneve always; GRE when the K bit is set: see [`Tunnel::has_id`]).
    pub const fn may_have_id(self) -> bool {
        matches!(self, TunnelKind::Vxlan | TunnelKind::Geneve | TunnelKind::Gre | TunnelKind::GreTeb)
    }
}

/// Which tunnels to decapsulate: the parsed `CJ_DECAP` (all off by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Decap {
    /// VXLAN on this UDP destination port.
    pub vxlan: Option<u16>,
    /// Geneve on this UDP destination port.
    pub geneve: Option<u16>,
    /// GRE (IP protocol 47).
    pub gre: bool,
    /// IP-in-IP (IP protocols 4 and 41).
    pub ipip: bool,
}

/// Why a `CJ_DECAP` value is refused (the station's configuration check
/// prints it after the variable, value and origin).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecapError(String);

impl fmt::Display for DecapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecapError {}

impl Decap {
    /// What `CJ_DECAP` accepts, for messages.
    pub const EXPECTED: &'static str = "empty (off) or a comma list of vxlan[:PORT], geneve[:PORT], gre, ipip \
                                        (ports 1 to 65535; defaults vxlan 4789, geneve 6081)";

    /// Whether nothing is decapsulated.
    pub fn is_off(&self) -> bool {
        *self == Decap::default()
    }

    /// Parses a `CJ_DECAP` value: empty or `off` for none, else a comma list
    /// of `vxlan`, `vxlan:PORT`, `geneve`, `geneve:PORT`, `gre`, `ipip`
    /// (ASCII case-insensitive, blanks around items ignored).
    ///
    /// # Errors
    /// An unknown item, a bad port, an item listed twice, or VXLAN and Geneve
    /// on one port; the message names the item and what is accepted.
    pub fn parse(text: &str) -> Result<Decap, DecapError> {
        let t = text.trim();
        let mut d = Decap::default();
        if t.is_empty() || t.eq_ignore_ascii_case("off") {
            return Ok(d);
        }
        for item in t.split(',').map(str::trim) {
            let (name, port) = match item.split_once(':') {
                Some((n, p)) => (n.trim(), Some(p.trim())),
                None => (item, None),
            };
            let name = name.to_ascii_lowercase();
            let twice = || DecapError(format!("{} ({name:?} is listed twice)", Decap::EXPECTED));
            let port_of = |default: u16| -> Result<u16, DecapError> {
                match port {
                    None => Ok(default),
                    Some(p) => match p.parse::<u16>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(DecapError(format!("{} ({item:?} has no valid port)", Decap::EXPECTED))),
                    },
                }
            };
            match name.as_str() {
                "vxlan" if d.vxlan.is_some() => return Err(twice()),
                "vxlan" => d.vxlan = Some(port_of(VXLAN_PORT)?),
                "geneve" if d.geneve.is_some() => return Err(twice()),
                "geneve" => d.geneve = Some(port_of(GENEVE_PORT)?),
                "gre" | "ipip" if port.is_some() => {
                    return Err(DecapError(format!("{} ({name} takes no port)", Decap::EXPECTED)))
                }
                "gre" if d.gre => return Err(twice()),
                "gre" => d.gre = true,
                "ipip" if d.ipip => return Err(twice()),
                "ipip" => d.ipip = true,
                _ => return Err(DecapError(format!("{} ({item:?} is not one of them)", Decap::EXPECTED))),
            }
        }
        if d.vxlan.is_some() && d.vxlan == d.geneve {
            return Err(DecapError(format!("{} (vxlan and geneve on one port)", Decap::EXPECTED)));
        }
        Ok(d)
    }

    /// Whether an outer summary is a packet of an enabled tunnel (by UDP
    /// destination port or IP protocol); cheap, for callers that already
    /// hold the outer summary.
    #[inline]
    pub fn matches(&self, s: &PacketSummary) -> bool {
        if !s.is_ip() {
            return false;
        }
        match s.proto {
            ip_proto::UDP => s.dst_port != 0 && (self.vxlan == Some(s.dst_port) || self.geneve == Some(s.dst_port)),
            IPPROTO_GRE => self.gre,
            IPPROTO_IPIP | IPPROTO_IPV6 => self.ipip,
            _ => false,
        }
    }
}

impl fmt::Display for Decap {
    /// The canonical `CJ_DECAP` form (`vxlan:4789,gre`), empty when off.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(p) = self.vxlan {
            write!(f, "{sep}vxlan:{p}")?;
            sep = ",";
        }
        if let Some(p) = self.geneve {
            write!(f, "{sep}geneve:{p}")?;
            sep = ",";
        }
        if self.gre {
            write!(f, "{sep}gre")?;
            sep = ",";
        }
        if self.ipip {
            write!(f, "{sep}ipip")?;
        }
        Ok(())
    }
}

/// The outer side of a decapsulated packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Tunnel {
    /// The tunnel kind; `None` only in a default value.
    pub kind: Option<TunnelKind>,
    /// 4 or 6: the outer IP version.
    pub ip_version: u8,
    /// Outer source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Outer destination address.
    pub dst: [u8; 16],
    /// VNI (VXLAN, Geneve: 24 bits) or GRE key (32 bits); 0 when none.
    pub id: u32,
    /// Whether the header carried `id` (GRE without the K bit carries none).
    pub has_id: bool,
}

/// What [`summarize_decap`] made of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decapsulated {
    /// Not a packet of an enabled tunnel: the frame's own summary.
    Plain(PacketSummary),
    /// A tunnel packet with a usable inner IP packet: the inner summary and the tunnel.
    Inner(PacketSummary, Tunnel),
    /// A tunnel packet whose inside is not usable: the outer summary.
    Undecoded(PacketSummary),
}

impl Decapsulated {
    /// The summary to account: the inner one for [`Decapsulated::Inner`], else the frame's.
    pub fn summary(&self) -> &PacketSummary {
        match self {
            Decapsulated::Plain(s) | Decapsulated::Inner(s, _) | Decapsulated::Undecoded(s) => s,
        }
    }
}

/// What the tunnel header says is inside.
enum Inside<'a> {
    Ethernet(&'a [u8]),
    Ip(u16, &'a [u8]),
}

/// Summarizes the Ethernet frame `frame` (the captured part of `wire_len`
/// bytes on the wire) and, when it is a packet of a tunnel `decap` enables,
/// its inner packet. See the module docs for the three outcomes. Never
/// panics, never allocates.
pub fn summarize_decap(frame: &[u8], wire_len: u32, decap: &Decap) -> Decapsulated {
    let (mut outer, l4) = summary::summarize_l4(frame);
    summary::frame_lengths(&mut outer, frame, wire_len);
    if !decap.matches(&outer) {
        return Decapsulated::Plain(outer);
    }
    if outer.fragment != crate::Fragment::None {
        return Decapsulated::Undecoded(outer);
    }
    let mut tunnel = Tunnel { ip_version: outer.ip_version, src: outer.src, dst: outer.dst, ..Tunnel::default() };
    let inside = match outer.proto {
        ip_proto::UDP => udp_tunnel(&outer, l4, decap, &mut tunnel),
        IPPROTO_GRE => gre(l4, &mut tunnel),
        IPPROTO_IPIP => {
            tunnel.kind = Some(TunnelKind::Ipip);
            Some(Inside::Ip(EtherType::IPV4, l4))
        }
        _ => {
            tunnel.kind = Some(TunnelKind::Ip6ip);
            Some(Inside::Ip(EtherType::IPV6, l4))
        }
    };
    let Some(inside) = inside else {
        return Decapsulated::Undecoded(outer);
    };
    let (mut inner, inner_bytes) = match inside {
        Inside::Ethernet(b) => (summary::summarize_l4(b).0, b.len()),
        Inside::Ip(ethertype, b) => {
            let mut s = PacketSummary::default();
            summary::network(&mut s, ethertype, b);
            (s, b.len())
        }
    };
    if !matches!(inner.l3, L3::Ipv4 | L3::Ipv6) {
        return Decapsulated::Undecoded(outer);
    }
    // The inner packet ends where the frame's capture ends: what the capture
    // cut off belongs to it.
    let cut = wire_len.saturating_sub(u32::try_from(frame.len()).unwrap_or(u32::MAX));
    add_uncaptured(&mut inner, inner_bytes, u32::try_from(inner_bytes).unwrap_or(u32::MAX).saturating_add(cut));
    inner.vlan = outer.vlan;
    inner.vlan_inner = outer.vlan_inner;
    inner.ethertype = outer.ethertype;
    Decapsulated::Inner(inner, tunnel)
}

/// VXLAN or Geneve by the UDP destination port.
fn udp_tunnel<'a>(outer: &PacketSummary, l4: &'a [u8], decap: &Decap, t: &mut Tunnel) -> Option<Inside<'a>> {
    let payload = udp::Packet::new_checked(l4).ok()?.payload();
    if decap.vxlan == Some(outer.dst_port) {
        t.kind = Some(TunnelKind::Vxlan);
        if payload.len() < field::VXLAN_LEN || payload[field::VXLAN_FLAGS] & 0x08 == 0 {
            return None;
        }
        t.id = be32(payload, field::VXLAN_VNI) >> 8;
        t.has_id = true;
        return Some(Inside::Ethernet(&payload[field::VXLAN_LEN..]));
    }
    t.kind = Some(TunnelKind::Geneve);
    if payload.len() < field::GENEVE_LEN || payload[field::GENEVE_VER_OPTLEN] >> 6 != 0 {
        return None;
    }
    let len = field::GENEVE_LEN + usize::from(payload[field::GENEVE_VER_OPTLEN] & 0x3f) * 4;
    let rest = payload.get(len..)?;
    t.id = be32(payload, field::GENEVE_VNI) >> 8;
    t.has_id = true;
    match be16(payload, field::GENEVE_PROTO) {
        ETHERTYPE_TEB => Some(Inside::Ethernet(rest)),
        e @ (EtherType::IPV4 | EtherType::IPV6) => Some(Inside::Ip(e, rest)),
        _ => None,
    }
}

/// GRE version 0 without routing (RFC 2784 with RFC 2890's key and sequence number).
fn gre<'a>(l4: &'a [u8], t: &mut Tunnel) -> Option<Inside<'a>> {
    t.kind = Some(TunnelKind::Gre);
    if l4.len() < field::GRE_LEN {
        return None;
    }
    let flags = be16(l4, field::GRE_FLAGS);
    let (c, r, k, s, version) =
        (flags & 0x8000 != 0, flags & 0x4000 != 0, flags & 0x2000 != 0, flags & 0x1000 != 0, flags & 7);
    if r || version != 0 {
        return None;
    }
    let mut at = field::GRE_LEN;
    if c {
        at += 4;
    }
    if k {
        t.id = be32(l4.get(..at + 4)?, at);
        t.has_id = true;
        at += 4;
    }
    if s {
        at += 4;
    }
    let rest = l4.get(at..)?;
    match be16(l4, field::GRE_PROTO) {
        ETHERTYPE_TEB => {
            t.kind = Some(TunnelKind::GreTeb);
            Some(Inside::Ethernet(rest))
        }
        e @ (EtherType::IPV4 | EtherType::IPV6) => Some(Inside::Ip(e, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut b = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, proto, 0, 0];
        b[2..4].copy_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&src);
        b.extend_from_slice(&dst);
        b.extend_from_slice(payload);
        b
    }

    fn ipv6(src: u8, dst: u8, next: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0x60, 0, 0, 0];
        b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        b.extend_from_slice(&[next, 64]);
        b.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src]);
        b.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, dst]);
        b.extend_from_slice(payload);
        b
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(payload);
        b
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = MAC_B.to_vec();
        b.extend_from_slice(&MAC_A);
        b.extend_from_slice(&ethertype.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    /// Inner TCP 10.0.0.1:40000 -> 10.0.0.2:80, SYN, in an Ethernet frame.
    fn inner_tcp() -> Vec<u8> {
        let mut tcp = vec![0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0];
        tcp.extend_from_slice(b"hello");
        ipv4([10, 0, 0, 1], [10, 0, 0, 2], 6, &tcp)
    }

    fn check_inner(d: Decapsulated, kind: TunnelKind, id: Option<u32>) -> (PacketSummary, Tunnel) {
        let Decapsulated::Inner(s, t) = d else { panic!("not decapsulated: {d:?}") };
        assert_eq!(t.kind, Some(kind));
        assert_eq!(t.has_id, id.is_some());
        assert_eq!(t.id, id.unwrap_or(0));
        assert_eq!((s.l3, s.proto, s.src_port, s.dst_port, s.tcp_flags), (L3::Ipv4, 6, 40000, 80, 0x02));
        assert_eq!((&s.src[..4], &s.dst[..4], s.ip_len), (&[10, 0, 0, 1][..], &[10, 0, 0, 2][..], 45));
        (s, t)
    }

    const ALL: Decap = Decap { vxlan: Some(VXLAN_PORT), geneve: Some(GENEVE_PORT), gre: true, ipip: true };

    #[test]
    fn vxlan_gives_the_inner_flow_its_vni_and_the_outer_endpoints() {
        let mut vx = vec![0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0];
        vx.extend(eth(0x0800, &inner_tcp()));
        let f = eth(0x0800, &ipv4([192, 168, 0, 1], [192, 168, 0, 2], 17, &udp(51000, 4789, &vx)));
        let (s, t) = check_inner(summarize_decap(&f, f.len() as u32, &ALL), TunnelKind::Vxlan, Some(0x123456));
        assert_eq!((&t.src[..4], &t.dst[..4], t.ip_version), (&[192, 168, 0, 1][..], &[192, 168, 0, 2][..], 4));
        // The inner Ethernet header's MACs.
        assert_eq!((s.src_mac, s.dst_mac), (MAC_A, MAC_B));
        // Off, or another port: the outer flow.
        let off = summarize_decap(&f, f.len() as u32, &Decap::default());
        assert_eq!(off, Decapsulated::Plain(crate::summarize(&f)));
        let other = Decap { vxlan: Some(8472), ..Decap::default() };
        assert!(matches!(summarize_decap(&f, f.len() as u32, &other), Decapsulated::Plain(_)));
        // Without the I flag: undecoded, the outer summary.
        let mut bad = f.clone();
        bad[14 + 20 + 8] = 0;
        assert_eq!(summarize_decap(&bad, bad.len() as u32, &ALL), Decapsulated::Undecoded(crate::summarize(&bad)));
    }

    #[test]
    fn geneve_skips_its_options_and_takes_ethernet_or_ip_inside() {
        let mut g = vec![0x02, 0, 0x65, 0x58, 0, 0, 7, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        g.extend(eth(0x0800, &inner_tcp()));
        let f = eth(0x86dd, &ipv6(1, 2, 17, &udp(1, 6081, &g)));
        let (_, t) = check_inner(summarize_decap(&f, f.len() as u32, &ALL), TunnelKind::Geneve, Some(7));
        assert_eq!((t.ip_version, t.src[15], t.dst[15]), (6, 1, 2));
        let mut g = vec![0x00, 0, 0x08, 0x00, 0, 0, 9, 0];
        g.extend(inner_tcp());
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, &udp(1, 6081, &g)));
        let (s, _) = check_inner(summarize_decap(&f, f.len() as u32, &ALL), TunnelKind::Geneve, Some(9));
        assert_eq!(s.src_mac, [0; 6]);
        // Version 1, options longer than the packet, an unknown protocol: undecoded.
        for (at, v) in [(0usize, 0x40u8), (0, 0x3f), (2, 0x12)] {
            let mut b = f.clone();
            b[14 + 20 + 8 + at] = v;
            assert!(matches!(summarize_decap(&b, b.len() as u32, &ALL), Decapsulated::Undecoded(_)), "{at} {v}");
        }
    }

    #[test]
    fn gre_with_checksum_key_and_sequence_number_and_gre_teb() {
        let mut g = vec![0xb0, 0, 0x08, 0x00, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 5];
        g.extend(inner_tcp());
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 47, &g));
        check_inner(summarize_decap(&f, f.len() as u32, &ALL), TunnelKind::Gre, Some(0xdead_beef));
        let mut g = vec![0, 0, 0x65, 0x58];
        g.extend(eth(0x0800, &inner_tcp()));
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 47, &g));
        check_inner(summarize_decap(&f, f.len() as u32, &ALL), TunnelKind::GreTeb, None);
        // Version 1 (PPTP), routing, ERSPAN, a cut key: undecoded.
        for g in
            [vec![0x00, 0x01, 0x08, 0x00], vec![0x40, 0, 0x08, 0x00], vec![0, 0, 0x88, 0xbe], vec![0x20, 0, 8, 0, 1]]
        {
            let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 47, &g));
            assert!(matches!(summarize_decap(&f, f.len() as u32, &ALL), Decapsulated::Undecoded(_)), "{g:?}");
        }
    }

    #[test]
    fn ip_in_ip_and_ipv6_in_ipv4() {
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 4, &inner_tcp()));
        check_inner(summarize_decap(&f, f.len() as u32, &ALL), TunnelKind::Ipip, None);
        let inner6 = ipv6(7, 8, 17, &udp(5353, 53, b"q"));
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 41, &inner6));
        let Decapsulated::Inner(s, t) = summarize_decap(&f, f.len() as u32, &ALL) else { panic!() };
        assert_eq!(
            (t.kind, s.l3, s.ip_version, s.src_port, s.dst_port, s.ip_len),
            (Some(TunnelKind::Ip6ip), L3::Ipv6, 6, 5353, 53, 49)
        );
        // IPv6 header declared inside IPv4 protocol 4: malformed inside, undecoded.
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 4, &inner6));
        assert!(matches!(summarize_decap(&f, f.len() as u32, &ALL), Decapsulated::Undecoded(_)));
    }

    #[test]
    fn a_non_ip_or_cut_inside_and_an_outer_fragment_stay_outer() {
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend(eth(0x0806, &[0; 28]));
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, &udp(1, 4789, &vx)));
        assert!(matches!(summarize_decap(&f, f.len() as u32, &ALL), Decapsulated::Undecoded(s) if s.dst_port == 4789));
        // Cut by the capture inside the inner IP header.
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend(eth(0x0800, &inner_tcp()));
        let f = eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, &udp(1, 4789, &vx)));
        let cut = &f[..14 + 20 + 8 + 8 + 14 + 10];
        assert!(matches!(summarize_decap(cut, f.len() as u32, &ALL), Decapsulated::Undecoded(_)));
        // Cut after the inner IP header: the inner flow, with its length from its header.
        let cut = &f[..14 + 20 + 8 + 8 + 14 + 34];
        check_inner(summarize_decap(cut, f.len() as u32, &ALL), TunnelKind::Vxlan, Some(1));
        // A first fragment of the outer packet.
        let mut frag = f.clone();
        frag[14 + 6] = 0x20;
        assert!(matches!(summarize_decap(&frag, frag.len() as u32, &ALL), Decapsulated::Undecoded(_)));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_after_a_tunnel_header_never_panic_and_only_inner_changes_the_summary(
            kind in 0usize..5,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
            cut in 0usize..200,
        ) {
            let f = match kind {
                0 => eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 17, &udp(1, 4789, &tail))),
                1 => eth(0x86dd, &ipv6(1, 2, 17, &udp(1, 6081, &tail))),
                2 => eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 47, &tail)),
                3 => eth(0x0800, &ipv4([1, 1, 1, 1], [2, 2, 2, 2], 4, &tail)),
                _ => eth(0x86dd, &ipv6(1, 2, 41, &tail)),
            };
            let b = &f[..cut.min(f.len())];
            match summarize_decap(b, f.len() as u32, &ALL) {
                Decapsulated::Plain(s) | Decapsulated::Undecoded(s) => {
                    proptest::prop_assert_eq!(s, crate::summarize_wire(b, f.len() as u32));
                }
                Decapsulated::Inner(s, t) => proptest::prop_assert!(s.is_ip() && t.kind.is_some()),
            }
        }
    }

    #[test]
    fn decap_values_parse_with_defaults_and_one_line_errors() {
        assert_eq!(Decap::parse("").unwrap(), Decap::default());
        assert!(Decap::parse(" off ").unwrap().is_off());
        assert_eq!(Decap::parse("vxlan,geneve,gre,ipip").unwrap(), ALL);
        let d = Decap::parse("VXLAN:8472, gre").unwrap();
        assert_eq!(d, Decap { vxlan: Some(8472), gre: true, ..Decap::default() });
        assert_eq!(d.to_string(), "vxlan:8472,gre");
        assert_eq!(Decap::parse(&ALL.to_string()).unwrap(), ALL);
        for bad in ["mpls", "vxlan:0", "vxlan:x", "gre:47", "gre,gre", "vxlan:6081,geneve", "vxlan,"] {
            let e = Decap::parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(Decap::EXPECTED) && !e.contains('\n'), "{bad}: {e}");
        }
    }
}

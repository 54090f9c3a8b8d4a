//! Captures in every link type the pcap source reads, checked against the
//! generator's truth: a generated Ethernet capture is rewritten, frame by
//! frame, into Linux SLL, SLL2, raw IP (101 and 228/229), null and loop
//! framing (and a pcapng mixing two framings, one per interface), and into
//! Ethernet with two MPLS labels or a PPPoE session header before every IP
//! packet, and each
//! runs through the whole pipeline. flows.csv equals the truth row for row
//! (PACKETS, BYTES), FRAME_BYTES are the rewritten frames' lengths (per row
//! where the framing changes every frame's length alike, in total
//! otherwise), and the identity holds. Raw IP and null/loop have no
//! equivalent of ARP: those frames are left out, so the run has no non-IP
//! frames. Ethernet with FCS bits in the link type is checked too: the FCS
//! is left out of the parsing and kept in the frame bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2e::{diff_rows, read_flows_csv, read_flows_csv_counters, read_json, run_pipeline, Cluster, RowKey};
use sim::{SimSpec, Truth};

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows;

/// IPv4 and IPv6, single VLAN tags, fragments, a few ARP frames.
const SPEC: &str = "flows=200,packets=12000,sizes=64:30/576:30/1514:40,v6=30,vlan=15,frag=10,nonip=2,seed=31";

struct Capture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    truth: Truth,
    /// (timestamp µs, frame) of the Ethernet capture.
    frames: Vec<(u64, Vec<u8>)>,
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ethernet.pcap");
        let spec: SimSpec = SPEC.parse().expect("spec");
        let truth = sim::write_pcap(&spec, &path, false).expect("write capture");
        let frames = read_pcap(&path);
        assert_eq!(frames.len() as u64, truth.total_frames);
        assert!(truth.non_ip_frames > 0, "the capture should include non-IP frames");
        Capture { dir: dir.path().to_path_buf(), _dir: dir, truth, frames }
    })
}

/// Reads a little-endian microsecond pcap (what `write_pcap` writes), by hand.
fn read_pcap(path: &Path) -> Vec<(u64, Vec<u8>)> {
    let b = std::fs::read(path).expect("read capture");
    assert_eq!(&b[..4], &0xa1b2_c3d4u32.to_le_bytes(), "a little-endian microsecond pcap");
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= b.len() {
        let ts = u64::from(u32_at(at)) * 1_000_000 + u64::from(u32_at(at + 4));
        let caplen = u32_at(at + 8) as usize;
        assert_eq!(caplen, u32_at(at + 12) as usize, "the generator writes whole frames");
        out.push((ts, b[at + 16..at + 16 + caplen].to_vec()));
        at += 16 + caplen;
    }
    out
}

/// Writes a little-endian microsecond pcap with this LinkType field.
fn write_pcap(path: &Path, linktype: u32, frames: &[(u64, Vec<u8>)]) {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (ts, d) in frames {
        for v in [(ts / 1_000_000) as u32, (ts % 1_000_000) as u32, d.len() as u32, d.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(d);
    }
    std::fs::write(path, f).expect("write rewritten capture");
}

fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
    let len = 12 + body.len().div_ceil(4) * 4;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b.extend_from_slice(body);
    b.resize(len - 4, 0);
    b.extend_from_slice(&(len as u32).to_le_bytes());
    b
}

/// Writes a pcapng: one interface per link type, frames as (interface, ts µs, bytes).
fn write_pcapng(path: &Path, linktypes: &[u16], frames: &[(u32, u64, Vec<u8>)]) {
    let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    let mut f = ng_block(0x0a0d_0d0a, &shb);
    for lt in linktypes {
        let mut idb = lt.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        f.extend(ng_block(1, &idb));
    }
    for (iface, ts, d) in frames {
        let mut epb = iface.to_le_bytes().to_vec();
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(*ts as u32).to_le_bytes());
        epb.extend_from_slice(&(d.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(d.len() as u32).to_le_bytes());
        epb.extend_from_slice(d);
        f.extend(ng_block(6, &epb));
    }
    std::fs::write(path, f).expect("write rewritten pcapng");
}

/// An Ethernet frame's EtherType after its VLAN tags, and where that layer starts.
fn network(frame: &[u8]) -> (u16, usize) {
    let mut at = 12;
    loop {
        let et = u16::from_be_bytes([frame[at], frame[at + 1]]);
        if matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            at += 4;
        } else {
            return (et, at + 2);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Sll,
    Sll2,
    Raw,
    RawV4V6,
    Null,
    Loop,
    /// Ethernet with two MPLS labels before every IP packet (after its VLAN tags).
    Mpls,
    /// Ethernet with every IP packet in a PPPoE session (after its VLAN tags).
    Pppoe,
}

/// The frame in `framing`, or `None` when the framing cannot carry it (non-IP
/// frames in raw IP and null/loop). SLL and SLL2 keep VLAN tags, as libpcap
/// rebuilds them; the others drop them.
fn rewrite(framing: Framing, frame: &[u8]) -> Option<(u16, Vec<u8>)> {
    let (et, l3) = network(frame);
    let ip = matches!(et, 0x0800 | 0x86dd);
    let (proto_at_12, after_macs) = (&frame[12..14], &frame[14..]);
    let mut out = Vec::with_capacity(frame.len() + 8);
    let linktype = match framing {
        Framing::Sll => {
            out.extend_from_slice(&[0x00, 0x00, 0x00, 0x01, 0x00, 0x06]);
            out.extend_from_slice(&frame[6..12]);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(proto_at_12);
            out.extend_from_slice(after_macs);
            113
        }
        Framing::Sll2 => {
            out.extend_from_slice(proto_at_12);
            out.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0x00, 0x01, 0x00, 0x06]);
            out.extend_from_slice(&frame[6..12]);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(after_macs);
            276
        }
        Framing::Raw | Framing::RawV4V6 if ip => {
            out.extend_from_slice(&frame[l3..]);
            match (framing, et) {
                (Framing::Raw, _) => 101,
                (_, 0x0800) => 228,
                _ => 229,
            }
        }
        Framing::Null | Framing::Loop if ip => {
            let family: u32 = if et == 0x0800 { 2 } else { 24 };
            let header = if framing == Framing::Null { family.to_le_bytes() } else { family.to_be_bytes() };
            out.extend_from_slice(&header);
            out.extend_from_slice(&frame[l3..]);
            if framing == Framing::Null {
                0
            } else {
                108
            }
        }
        Framing::Mpls | Framing::Pppoe => {
            out.extend_from_slice(&frame[..l3 - 2]);
            if !ip {
                out.extend_from_slice(&frame[l3 - 2..]);
                return Some((1, out));
            }
            if framing == Framing::Mpls {
                out.extend_from_slice(&[0x88, 0x47, 0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40]);
            } else {
                let len = u16::try_from(frame.len() - l3 + 2).expect("a frame's length");
                out.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x12, 0x34]);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(if et == 0x0800 { &[0x00, 0x21] } else { &[0x00, 0x57] });
            }
            out.extend_from_slice(&frame[l3..]);
            1
        }
        _ => return None,
    };
    Some((linktype, out))
}

/// Runs the pipeline on `path` and checks rows, frame bytes and the identity.
/// `frames`: every frame written; `ip_frame_bytes`: the FRAME_BYTES flows.csv
/// must have in total; `per_row_delta`: when every frame's length changed by
/// the same amount, the per-row FRAME_BYTES are checked too.
fn run_and_check(what: &str, path: &Path, frames: u64, non_ip: u64, ip_frame_bytes: u64, per_row_delta: Option<i64>) {
    let cap = capture();
    let iface = format!("pcap:{}", path.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("ZBALANCE_HASH_MODE", "1"), ("CJ_CORECOUNT", "2")]);
    let out = tempfile::tempdir().expect("out dir");
    run_pipeline(&cluster, out.path()).assert_success();
    let csv = out.path().join("flows.csv");
    if let Some(d) = diff_rows(&read_flows_csv(&csv), &truth_rows(&cap.truth)) {
        panic!("{what}: flows.csv differs from the truth:\n{d}");
    }
    let counters = read_flows_csv_counters(&csv);
    let total: u64 = counters.values().map(|c| c.frame_bytes).sum();
    assert_eq!(total, ip_frame_bytes, "{what}: FRAME_BYTES of the IP rows are the rewritten frames' lengths");
    if let Some(delta) = per_row_delta {
        let mut want: BTreeMap<RowKey, u64> = BTreeMap::new();
        for r in &cap.truth.rows {
            let key = (r.src, r.dst, r.src_port, r.dst_port, station::proto::proto_name(r.proto).to_string());
            *want.entry(key).or_default() += r.frame_bytes.saturating_add_signed(delta * r.packets as i64);
        }
        let got: BTreeMap<RowKey, u64> = counters.iter().map(|(k, c)| (k.clone(), c.frame_bytes)).collect();
        assert_eq!(got, want, "{what}: FRAME_BYTES per row");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{what}: {summary:#}");
    let terms = &summary["identity"]["terms"];
    assert_eq!(terms["received"].as_u64(), Some(frames), "{what}: received: {summary:#}");
    assert_eq!(terms["non_ip"].as_u64(), Some(non_ip), "{what}: non-IP frames: {summary:#}");
    assert_eq!(terms["malformed"].as_u64().unwrap_or(0), 0, "{what}: malformed: {summary:#}");
}

/// Rewrites the capture into `framing` as a pcap and checks it.
fn pcap_in(framing: Framing) {
    let cap = capture();
    let mut by_type: BTreeMap<u16, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    let mut ip_bytes = 0u64;
    let mut non_ip = 0u64;
    let mut n = 0u64;
    let mut written = Vec::new();
    for (ts, f) in &cap.frames {
        let Some((lt, g)) = rewrite(framing, f) else { continue };
        if matches!(network(f).0, 0x0800 | 0x86dd) {
            ip_bytes += g.len() as u64;
        } else {
            non_ip += 1;
        }
        n += 1;
        by_type.entry(lt).or_default();
        written.push((lt, *ts, g));
    }
    let name = format!("{framing:?}");
    if framing == Framing::RawV4V6 {
        // 228 and 229 are one link type per file: one pcapng interface each.
        let frames: Vec<(u32, u64, Vec<u8>)> =
            written.into_iter().map(|(lt, ts, g)| (u32::from(lt == 229), ts, g)).collect();
        let path = cap.dir.join("raw-v4-v6.pcapng");
        write_pcapng(&path, &[228, 229], &frames);
        run_and_check(&name, &path, n, non_ip, ip_bytes, None);
        return;
    }
    assert_eq!(by_type.len(), 1);
    let lt = *by_type.keys().next().expect("one link type");
    let frames: Vec<(u64, Vec<u8>)> = written.into_iter().map(|(_, ts, g)| (ts, g)).collect();
    let path = cap.dir.join(format!("{name}.pcap"));
    write_pcap(&path, u32::from(lt), &frames);
    let delta = match framing {
        Framing::Sll => Some(2),
        Framing::Sll2 => Some(6),
        Framing::Mpls | Framing::Pppoe => Some(8),
        _ => None,
    };
    if matches!(framing, Framing::Sll | Framing::Sll2 | Framing::Mpls | Framing::Pppoe) {
        assert_eq!(n, cap.truth.total_frames, "cooked captures keep every frame");
        assert_eq!(non_ip, cap.truth.non_ip_frames);
    } else {
        assert_eq!(non_ip, 0);
        assert_eq!(n, cap.truth.total_frames - cap.truth.non_ip_frames);
    }
    run_and_check(&name, &path, n, non_ip, ip_bytes, delta);
}

#[test]
fn a_linux_cooked_sll_capture_matches_the_truth() {
    pcap_in(Framing::Sll);
}

#[test]
fn a_linux_cooked_sll2_capture_matches_the_truth() {
    pcap_in(Framing::Sll2);
}

#[test]
fn a_raw_ip_capture_without_its_arp_frames_matches_the_truth() {
    pcap_in(Framing::Raw);
}

#[test]
fn raw_ipv4_and_ipv6_interfaces_of_one_pcapng_match_the_truth() {
    pcap_in(Framing::RawV4V6);
}

#[test]
fn ip_under_two_mpls_labels_matches_the_truth() {
    pcap_in(Framing::Mpls);
}

#[test]
fn ip_in_pppoe_sessions_matches_the_truth() {
    pcap_in(Framing::Pppoe);
}

#[test]
fn a_null_capture_matches_the_truth() {
    pcap_in(Framing::Null);
}

#[test]
fn a_loop_capture_matches_the_truth() {
    pcap_in(Framing::Loop);
}

/// One pcapng, two interfaces: SLL2 for even frames, Ethernet for odd ones.
#[test]
fn a_pcapng_with_a_framing_per_interface_matches_the_truth() {
    let cap = capture();
    let mut frames = Vec::new();
    let mut ip_bytes = 0u64;
    for (i, (ts, f)) in cap.frames.iter().enumerate() {
        let g = if i % 2 == 0 { rewrite(Framing::Sll2, f).expect("SLL2 carries everything").1 } else { f.clone() };
        if matches!(network(f).0, 0x0800 | 0x86dd) {
            ip_bytes += g.len() as u64;
        }
        frames.push(((i % 2) as u32, *ts, g));
    }
    let path = cap.dir.join("mixed.pcapng");
    write_pcapng(&path, &[276, 1], &frames);
    run_and_check("pcapng SLL2 + Ethernet", &path, cap.truth.total_frames, cap.truth.non_ip_frames, ip_bytes, None);
}

/// LinkType 0x24000001: Ethernet with a 4-byte FCS on every frame (bit 26
/// set, 2 words). The FCS is not parsed (an FCS after a TSO-style packet
/// would count); frame bytes are the frames as captured, FCS included.
#[test]
fn ethernet_with_fcs_bits_in_the_link_type_matches_the_truth() {
    let cap = capture();
    let mut ip_bytes = 0u64;
    let frames: Vec<(u64, Vec<u8>)> = cap
        .frames
        .iter()
        .map(|(ts, f)| {
            let mut g = f.clone();
            g.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
            if matches!(network(f).0, 0x0800 | 0x86dd) {
                ip_bytes += g.len() as u64;
            }
            (*ts, g)
        })
        .collect();
    let path = cap.dir.join("fcs.pcap");
    write_pcap(&path, 0x2400_0001, &frames);
    run_and_check("Ethernet with FCS", &path, cap.truth.total_frames, cap.truth.non_ip_frames, ip_bytes, Some(4));
}

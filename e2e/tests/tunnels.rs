//! Tunnel decapsulation (`CJ_DECAP`) through the whole pipeline, against the
//! generator's truth (`sim::tunnel`: VXLAN in two VNIs, Geneve over IPv6, GRE
//! with a key, GRE-TEB, IPv4-in-IPv6, IPv6-in-IPv4, and three packets of
//! enabled tunnels whose inside is not usable) and, as a second truth,
//! tshark's decoding of the same file.
//!
//! With `CJ_DECAP=vxlan,geneve,gre,ipip`, flows.csv has the tunnel columns
//! and its rows equal the inner flows with their tunnels (packets, IP bytes
//! of the inner packets, frame bytes of the captured frames); without it,
//! the header is the plain one and the rows are the outer flows. The
//! identity holds both ways, and the workers' `tunnel_*` counters say how
//! many packets were decapsulated and how many stayed outer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use e2e::{read_json, run_pipeline, Cluster};
use sim::tunnel::{write_tunnel_pcap, TunnelTruth};
use station::proto::proto_name;

/// Rows by their key columns: (PACKETS, BYTES, FRAME_BYTES).
type Rows = BTreeMap<Vec<String>, (u64, u64, u64)>;

/// (src, dst, src port, dst port, protocol, tunnel, outer src, outer dst, tunnel id).
type TunnelKey = (String, String, String, String, String, String, String, String, String);

/// Rows of a flows.csv by every key column (whatever the header names), with
/// (PACKETS, BYTES, FRAME_BYTES).
fn rows_by_header(path: &Path) -> (String, Rows) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name} in {header}"));
    let (p, b, f) = (at("PACKETS"), at("BYTES"), at("FRAME_BYTES"));
    let mut rows = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let v: Vec<&str> = line.split(',').collect();
        let n = |i: usize| v[i].parse::<u64>().unwrap_or_else(|e| panic!("{line}: {e}"));
        let e = rows.entry(v[..p].iter().map(|s| s.to_string()).collect()).or_insert((0, 0, 0));
        e.0 += n(p);
        e.1 += n(b);
        e.2 += n(f);
    }
    (header, rows)
}

fn tunnel_truth_rows(t: &TunnelTruth) -> Rows {
    let mut m = BTreeMap::new();
    for r in &t.decapsulated {
        let s = |a: Option<IpAddr>| a.map_or(String::new(), |a| a.to_string());
        let k: TunnelKey = (
            r.row.src.to_string(),
            r.row.dst.to_string(),
            r.row.src_port.to_string(),
            r.row.dst_port.to_string(),
            proto_name(r.row.proto).into_owned(),
            r.tunnel.to_string(),
            s(r.outer_src),
            s(r.outer_dst),
            r.tunnel_id.to_string(),
        );
        let k = vec![k.0, k.1, k.2, k.3, k.4, k.5, k.6, k.7, k.8];
        let e = m.entry(k).or_insert((0, 0, 0));
        e.0 += r.row.packets;
        e.1 += r.row.ip_bytes;
        e.2 += r.row.frame_bytes;
    }
    m
}

fn outer_truth_rows(t: &TunnelTruth) -> Rows {
    let mut m = BTreeMap::new();
    for r in &t.outer {
        let k = vec![
            r.src.to_string(),
            r.dst.to_string(),
            r.src_port.to_string(),
            r.dst_port.to_string(),
            proto_name(r.proto).into_owned(),
        ];
        let e = m.entry(k).or_insert((0, 0, 0));
        e.0 += r.packets;
        e.1 += r.ip_bytes;
        e.2 += r.frame_bytes;
    }
    m
}

/// Runs the pipeline over `pcap` with these extra variables; returns flows.csv's
/// header and rows, summary.json, and the (one) worker's stats page.
fn run(pcap: &Path, vars: &[(&str, &str)]) -> (String, Rows, serde_json::Value, BTreeMap<String, u64>) {
    let iface = format!("pcap:{}", pcap.display());
    let mut all = vec![("CJ_IFACE", iface.as_str())];
    all.extend_from_slice(vars);
    let cluster = Cluster::new(&all);
    let out = tempfile::tempdir().expect("out dir");
    let run = run_pipeline(&cluster, out.path());
    run.assert_success();
    let (header, rows) = rows_by_header(&out.path().join("flows.csv"));
    let page = station::naming::set_worker_stats_path(&cluster.cluster_dir(), 0, 0);
    let worker = shmq::CounterPage::read(&page).expect("the worker's stats page").into_iter().collect();
    (header, rows, read_json(&out.path().join("summary.json")), worker)
}

#[test]
fn decapsulated_runs_report_inner_flows_with_their_tunnels_and_plain_runs_the_outer_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("tunnels.pcap");
    let truth = write_tunnel_pcap(&pcap).expect("write capture");

    let (header, rows, summary, worker) = run(&pcap, &[("CJ_DECAP", "vxlan,geneve,gre,ipip")]);
    assert_eq!(
        header,
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,TUNNEL,OUTER_SRC_IP,OUTER_DST_IP,TUNNEL_ID,\
         PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END"
    );
    assert_eq!(rows, tunnel_truth_rows(&truth));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    assert_eq!(worker["tunnel_packets"], truth.tunnel_packets);
    assert_eq!(worker["tunnel_undecoded"], truth.undecoded);
    assert_eq!((worker["packets"], worker["bytes"]), (truth.frames, truth.frame_bytes));

    let (header, rows, summary, worker) = run(&pcap, &[]);
    assert_eq!(
        header,
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END"
    );
    assert_eq!(rows, outer_truth_rows(&truth));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    assert_eq!((worker["tunnel_packets"], worker["tunnel_undecoded"]), (0, 0));
}

/// Packets per (innermost source, innermost destination) as tshark decodes
/// the file: the last IPv4 or IPv6 layer of each frame.
fn tshark_inner_pairs(tshark: &Path, pcap: &Path) -> BTreeMap<(String, String), u64> {
    let o = Command::new(tshark)
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"])
        .args(["-e", "frame.protocols", "-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst"])
        .output()
        .expect("run tshark");
    assert!(o.status.success(), "tshark: {}", String::from_utf8_lossy(&o.stderr));
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let layers: Vec<&str> = f[0].split(':').collect();
        let last = layers.iter().rposition(|l| *l == "ip" || *l == "ipv6").expect("an IP layer");
        let (s, d) = if layers[last] == "ip" { (f[1], f[2]) } else { (f[3], f[4]) };
        let last_of =
            |v: &str| v.rsplit(',').next().unwrap_or_default().parse::<IpAddr>().expect("address").to_string();
        *m.entry((last_of(s), last_of(d))).or_default() += 1;
    }
    m
}

#[test]
fn tshark_finds_the_same_inner_packets_per_address_pair() {
    let Some(tshark) = e2e::peer_tool("tshark", "tshark") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("tunnels.pcap");
    let truth = write_tunnel_pcap(&pcap).expect("write capture");
    let (_, rows, _, _) = run(&pcap, &[("CJ_DECAP", "vxlan,geneve,gre,ipip")]);
    let mut ours: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (k, (packets, _, _)) in &rows {
        *ours.entry((k[0].clone(), k[1].clone())).or_default() += packets;
    }
    let theirs = tshark_inner_pairs(&tshark, &pcap);
    assert_eq!(ours, theirs, "flows.csv against tshark's innermost IP layers");
    assert_eq!(theirs.values().sum::<u64>(), truth.frames);
}

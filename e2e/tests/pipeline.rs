//! The whole pipeline (cj-balancer -> packet queues -> cj-detector -> record
//! queues -> cj-app) on a generated capture, checked against the generator's
//! ground truth: flows.csv equals the truth row for row (PACKETS, BYTES and
//! FRAME_BYTES; FLOWS too wherever each flow stays on one worker), in hash
//! modes 0 and 1 with one and two workers; in fan-out mode every worker's
//! table equals it. Also: hash mode 1 keeps each flow, both directions, on
//! one worker (one record per flow; round-robin or a one-way hash would make
//! two); the same capture as pcapng (converted by Wireshark's `editcap`) and
//! the `sim:` source give the truth too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use e2e::{diff_row_counters, diff_rows, read_flows_csv, read_flows_csv_counters, read_json, run_pipeline, Cluster};
use sim::{SimSpec, Truth};

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::{truth_rows, truth_rows_counters};

/// IPv4 and IPv6, VLAN and QinQ tags, many sizes, a few ARP frames.
const SPEC: &str =
    "flows=400,packets=60000,sizes=64:30/128:10/576:20/1000:10/1514:30,v6=25,vlan=15,qinq=5,nonip=1,seed=7";

struct Capture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    truth: Truth,
}

fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sample.pcap");
        let spec: SimSpec = SPEC.parse().expect("spec");
        let truth = sim::write_pcap(&spec, &path, false).expect("write capture");
        assert_eq!(truth.total_frames, 60000);
        assert!(truth.non_ip_frames > 0, "the capture should include non-IP frames");
        Capture { _dir: dir, path, truth }
    })
}

fn run_and_compare(mode: &str, cores: &str) {
    let cap = capture();
    let iface = format!("pcap:{}", cap.path.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("ZBALANCE_HASH_MODE", mode), ("CJ_CORECOUNT", cores)]);
    let out = tempfile::tempdir().expect("out dir");
    let run = run_pipeline(&cluster, out.path());
    run.assert_success();
    let want = truth_rows(&cap.truth);
    if mode == "2" {
        let n: u32 = cores.parse().expect("cores");
        for q in 0..n {
            let got = read_flows_csv(&out.path().join(format!("queue-{q}/flows.csv")));
            if let Some(d) = diff_rows(&got, &want) {
                panic!("fan-out, worker {q}: flows differ from the truth:\n{d}");
            }
        }
    }
    let got = read_flows_csv(&out.path().join("flows.csv"));
    if let Some(d) = diff_rows(&got, &want) {
        panic!("mode {mode}, {cores} worker(s): flows.csv differs from the truth:\n{d}");
    }
    // Frame bytes too; and FLOWS where each flow stays on one worker (in
    // round-robin mode a flow read by two workers counts once for each).
    let one_worker_per_flow = mode != "0" || cores == "1";
    compare_counters(
        &out.path().join("flows.csv"),
        &cap.truth,
        one_worker_per_flow,
        &format!("mode {mode}, {cores} worker(s)"),
    );
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "identity in summary.json: {summary:#}");
    let terms = &summary["identity"]["terms"];
    assert_eq!(terms["received"].as_u64(), Some(cap.truth.total_frames), "received: {summary:#}");
    assert_eq!(terms["non_ip"].as_u64(), Some(cap.truth.non_ip_frames), "non-IP frames: {summary:#}");
}

/// flows.csv's PACKETS, BYTES, FRAME_BYTES (and FLOWS when `flows`) against
/// the truth, row by row.
fn compare_counters(csv: &Path, truth: &Truth, flows: bool, what: &str) {
    let mut got = read_flows_csv_counters(csv);
    let mut want = truth_rows_counters(truth);
    if !flows {
        for c in got.values_mut().chain(want.values_mut()) {
            c.flows = 0;
        }
    }
    if let Some(d) = diff_row_counters(&got, &want) {
        panic!("{what}: the counters of {} differ from the truth:\n{d}", csv.display());
    }
}

/// Flows of the truth: its rows with direction taken away.
fn truth_flows(truth: &Truth) -> usize {
    let ends: BTreeSet<_> = truth
        .rows
        .iter()
        .map(|r| {
            let (a, b) = ((r.src, r.src_port), (r.dst, r.dst_port));
            (a.min(b), a.max(b), r.proto, r.vlan)
        })
        .collect();
    ends.len()
}

#[test]
fn round_robin_one_worker_matches_truth() {
    run_and_compare("0", "1");
}

#[test]
fn round_robin_two_workers_matches_truth() {
    run_and_compare("0", "2");
}

#[test]
fn ip_hash_one_worker_matches_truth() {
    run_and_compare("1", "1");
}

#[test]
fn ip_hash_two_workers_matches_truth() {
    run_and_compare("1", "2");
}

#[test]
fn fan_out_every_worker_matches_truth() {
    run_and_compare("2", "2");
}

/// N_QUEUE_SETS=2: each set gets every packet once. Two detectors (one per set,
/// each with its own app) each account the whole capture, exactly.
#[test]
fn two_queue_sets_each_match_truth() {
    let cap = capture();
    let iface = format!("pcap:{}", cap.path.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("N_QUEUE_SETS", "2"), ("CJ_CORECOUNT", "1")]);
    let outs = [tempfile::tempdir().expect("out 0"), tempfile::tempdir().expect("out 1")];
    let mut children = Vec::new();
    for (set, out) in outs.iter().enumerate() {
        let (set, core) = (set.to_string(), set.to_string());
        let mut det = cluster.command("cj-detector");
        det.env("CJ_QUEUE_SET", &set).env("CJ_COREBASE", &core);
        let mut app = cluster.command("cj-app");
        app.env("CJ_QUEUE_SET", &set).arg("--out").arg(out.path());
        for mut cmd in [det, app] {
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
            children.push(("set process", cmd.spawn().expect("spawn")));
        }
    }
    let mut bal = cluster.command("cj-balancer");
    bal.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    children.push(("cj-balancer", bal.spawn().expect("spawn balancer")));
    for o in e2e::wait_all(children, e2e::DEADLINE) {
        assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    let want = truth_rows(&cap.truth);
    for (set, out) in outs.iter().enumerate() {
        let got = read_flows_csv(&out.path().join("flows.csv"));
        if let Some(d) = diff_rows(&got, &want) {
            panic!("queue set {set}: flows.csv differs from the truth:\n{d}");
        }
        let summary = read_json(&out.path().join("summary.json"));
        assert_eq!(summary["identity"]["status"], "holds", "set {set}: {summary:#}");
    }
}

/// ZBALANCE_HASH_MODE=1 with two workers: every flow, both of its directions,
/// is read by one worker, so each flow is one record and each direction one
/// flow (FLOWS = 1 per directional row of the truth), and both workers have
/// some. Round-robin would split most flows over the two workers (two records
/// per flow, FLOWS = 2), and so would a hash that is not symmetric.
#[test]
fn ip_hash_keeps_each_flow_on_one_worker() {
    let cap = capture();
    let iface = format!("pcap:{}", cap.path.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("ZBALANCE_HASH_MODE", "1"), ("CJ_CORECOUNT", "2")]);
    let out = tempfile::tempdir().expect("out dir");
    run_pipeline(&cluster, out.path()).assert_success();
    compare_counters(&out.path().join("flows.csv"), &cap.truth, true, "mode 1, 2 workers");
    let summary = read_json(&out.path().join("summary.json"));
    let flows = truth_flows(&cap.truth) as u64;
    assert_eq!(summary["totals"]["ip_records"].as_u64(), Some(flows), "one record per flow: {summary:#}");
    let queues = summary["queues"].as_array().expect("queues in summary.json");
    assert_eq!(queues.len(), 2, "{summary:#}");
    for q in queues {
        let records = q["totals"]["ip_records"].as_u64().expect("ip_records of a queue");
        assert!(records > 0 && records < flows, "the hash spreads flows over both workers: {summary:#}");
    }
}

/// The capture converted to pcapng by Wireshark's `editcap` (a peer's writer,
/// not ours): the same truth, row for row, every counter.
#[test]
fn a_pcapng_capture_matches_the_truth() {
    let Some(editcap) = e2e::peer_tool("editcap", "wireshark-common (tshark depends on it)") else { return };
    let cap = capture();
    let dir = tempfile::tempdir().expect("tempdir");
    let pcapng = dir.path().join("sample.pcapng");
    let out = std::process::Command::new(editcap)
        .args(["-F", "pcapng"])
        .arg(&cap.path)
        .arg(&pcapng)
        .output()
        .expect("run editcap");
    assert!(out.status.success(), "editcap failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(&pcapng).expect("open pcapng"), &mut magic).expect("read");
    assert_eq!(magic, [0x0a, 0x0d, 0x0d, 0x0a], "editcap wrote a pcapng section header block");

    let iface = format!("pcap:{}", pcapng.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("ZBALANCE_HASH_MODE", "1"), ("CJ_CORECOUNT", "2")]);
    let out = tempfile::tempdir().expect("out dir");
    run_pipeline(&cluster, out.path()).assert_success();
    compare_counters(&out.path().join("flows.csv"), &cap.truth, true, "pcapng");
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    let terms = &summary["identity"]["terms"];
    assert_eq!(terms["received"].as_u64(), Some(cap.truth.total_frames), "{summary:#}");
    assert_eq!(terms["non_ip"].as_u64(), Some(cap.truth.non_ip_frames), "{summary:#}");
}

/// `CJ_IFACE=sim:SPEC`: the generator inside the balancer, no file; the
/// model's truth of the same spec, row for row, every counter, fragments included.
#[test]
fn the_sim_source_matches_its_truth() {
    const SIM: &str = "flows=300,packets=40000,sizes=64:30/576:30/1514:40,v6=25,vlan=15,qinq=5,frag=10,nonip=1,seed=23";
    let spec: SimSpec = SIM.parse().expect("spec");
    let truth = sim::truth(&spec);
    let iface = format!("sim:{SIM}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("ZBALANCE_HASH_MODE", "1"), ("CJ_CORECOUNT", "2")]);
    let out = tempfile::tempdir().expect("out dir");
    run_pipeline(&cluster, out.path()).assert_success();
    compare_counters(&out.path().join("flows.csv"), &truth, true, "sim source");
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    let terms = &summary["identity"]["terms"];
    assert_eq!(terms["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    assert_eq!(terms["non_ip"].as_u64(), Some(truth.non_ip_frames), "{summary:#}");
}

#[test]
fn a_capture_filter_on_a_file_keeps_only_its_flows_and_the_rest_is_never_received() {
    // Untagged frames: in a file a VLAN tag is in the frame, and tcpdump's `udp`
    // does not look past it (`vlan and udp` does).
    const SIM: &str = "flows=200,packets=20000,sizes=64:30/576:30/1514:40,v6=25,vlan=0,nonip=1,seed=31";
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("mixed.pcap");
    let truth = sim::write_pcap(&SIM.parse().expect("spec"), &pcap, false).expect("write capture");
    let udp_frames: u64 = truth.rows.iter().filter(|r| r.proto == 17).map(|r| r.packets).sum();
    assert!(udp_frames > 0 && udp_frames < truth.total_frames, "the capture mixes UDP with the rest");
    let iface = format!("pcap:{}", pcap.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_FILTER", "udp"), ("CJ_CORECOUNT", "2")]);
    let out = dir.path().join("out");
    run_pipeline(&cluster, &out).assert_success();
    let want: std::collections::BTreeMap<_, _> = truth_rows(&truth).into_iter().filter(|(k, _)| k.4 == "udp").collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.join("flows.csv")), &want) {
        panic!("flows.csv differs from the truth's UDP rows:\n{d}");
    }
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    // TCP, ICMP and ARP frames are nowhere in the identity: never received.
    assert_eq!(summary["identity"]["terms"]["received"].as_u64(), Some(udp_frames), "{summary:#}");
    assert_eq!(summary["identity"]["terms"]["non_ip"].as_u64(), Some(0), "{summary:#}");
    assert_eq!(summary["capture_filter"].as_str(), Some("udp"), "{summary:#}");

    // An expression libpcap refuses stops the balancer at once, in one line.
    let bad = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_FILTER", "udp and bogus_word")]);
    let o = bad.command("cj-balancer").output().expect("run cj-balancer");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("cj-balancer: CJ_FILTER=\"udp and bogus_word\": ") && err.lines().count() == 1, "{err}");
}

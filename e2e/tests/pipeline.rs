//! The whole pipeline (cj-balancer -> packet queues -> cj-detector -> record
//! queues -> cj-app) on a generated capture, checked against the generator's
//! ground truth: flows.csv equals the truth row for row, in hash modes 0 and 1
//! with one and two workers; in fan-out mode every worker's table equals it.

use std::path::PathBuf;
use std::sync::OnceLock;

use e2e::{diff_rows, read_flows_csv, read_json, run_pipeline, truth_rows, Cluster};
use station::sim::{SimSpec, Truth};

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
        let truth = station::sim::write_pcap(&spec, &path, false).expect("write capture");
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
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "identity in summary.json: {summary:#}");
    let terms = &summary["identity"]["terms"];
    assert_eq!(terms["received"].as_u64(), Some(cap.truth.total_frames), "received: {summary:#}");
    assert_eq!(terms["non_ip"].as_u64(), Some(cap.truth.non_ip_frames), "non-IP frames: {summary:#}");
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

//! A million concurrent flows through the whole pipeline (issue 9): one
//! worker whose flow table grows to hold them all, checked against the
//! generator's truth (flows.csv row for row: PACKETS, BYTES, FRAME_BYTES and
//! FLOWS), with the flow state the detector reports at exit at most 128 bytes
//! per flow (every allocation of the table over its peak flows, the issue's
//! aim, asserted on the reported figure as the issue asks), and the
//! detector's peak resident memory, measured by the kernel, within its queues
//! plus 8 MB plus those 128 bytes per flow.

use std::path::Path;
use std::process::{Command, Stdio};

use e2e::{diff_row_counters, read_flows_csv_counters, read_json, wait_all, Cluster, DEADLINE};
use sim::SimSpec;

#[path = "support/truth.rs"]
mod sim_truth;

/// The shape: 1,000,000 flows of 2 or 3 packets each, minimal frames.
const SPEC: &str = "flows=1000000,packets=2500000,sizes=64:100,v6=0,seed=9";
const FLOWS: usize = 1_000_000;
const TABLE: u64 = 1 << 20;
const QUEUE_SLOTS: u64 = 4096;
const SLOT: u64 = 128;
/// Room for a quarter of the records: the app drains them in a few large
/// batches (with 4,096 slots it falls behind by minutes at 1M rows).
const RECORD_SLOTS: u64 = 1 << 18;
const MB: u64 = 1 << 20;

/// (table bytes, peak flows, bytes per peak flow) of the worker's exit line
/// "(Core 0) flow state: B bytes for a peak of N flows, P B per peak flow".
fn flow_state(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("flow state:"))
        .unwrap_or_else(|| panic!("no flow state line in the detector's log:\n{stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().expect("number"))
        .collect();
    // "(Core 0) flow state: B bytes for a peak of N flows, P B per peak flow"
    match numbers[..] {
        [_core, bytes, peak, per_flow] => (bytes, peak, per_flow),
        _ => panic!("unexpected flow state line: {line}"),
    }
}

#[test]
fn a_million_concurrent_flows_are_counted_exactly_in_at_most_128_bytes_of_flow_state_each() {
    if !Path::new("/usr/bin/time").exists() {
        e2e::skip("needs /usr/bin/time (GNU time) to measure the detector's peak memory");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let capture = dir.path().join("million.pcap");
    // The release generator writes the capture (seconds, where the test
    // profile's generator would take minutes); the truth is the sim crate's.
    let gen = Command::new(e2e::bin("cj-balancer"))
        .args(["generate", SPEC])
        .arg(&capture)
        .output()
        .expect("run cj-balancer generate");
    assert!(gen.status.success(), "cj-balancer generate: {}", String::from_utf8_lossy(&gen.stderr));
    let spec: SimSpec = SPEC.parse().expect("spec");
    let truth = sim::truth(&spec);
    assert_eq!(truth.total_frames, 2_500_000);

    let iface = format!("pcap:{}", capture.display());
    let cluster = Cluster::new(&[
        ("CJ_IFACE", &iface),
        ("CJ_CORECOUNT", "1"),
        ("CJ_FLOW_TABLE_SIZE", &TABLE.to_string()),
        ("CJ_QUEUE_SLOTS", &QUEUE_SLOTS.to_string()),
        ("CJ_SLOT_SIZE", &SLOT.to_string()),
        ("CJ_RECORD_QUEUE_SLOTS", &RECORD_SLOTS.to_string()),
        // Rows are directional: 2,000,000 of them, none into the overflow row.
        ("CJ_APP_MAX_ROWS", "2500000"),
    ]);
    let out = tempfile::tempdir().expect("out");
    let report = dir.path().join("detector.time");
    let detector = cluster.timed_command("cj-detector", &report).spawn().expect("start detector");
    let mut app_cmd = cluster.command("cj-app");
    app_cmd.arg("--out").arg(out.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let app = app_cmd.spawn().expect("start app");
    let mut bal_cmd = cluster.command("cj-balancer");
    bal_cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let balancer = bal_cmd.spawn().expect("start balancer");
    let outs = wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], DEADLINE);
    for (name, o) in ["cj-balancer", "cj-detector", "cj-app"].iter().zip(&outs) {
        assert!(o.status.success(), "{name} exited {}: {}", o.status, String::from_utf8_lossy(&o.stderr));
    }
    let detector_log = String::from_utf8_lossy(&outs[1].stderr).into_owned();

    // Exact: every row of the truth, packets, bytes, frame bytes and flows.
    let got = read_flows_csv_counters(&out.path().join("flows.csv"));
    let want = sim_truth::truth_rows_counters(&truth);
    if let Some(d) = diff_row_counters(&got, &want) {
        panic!("flows.csv differs from the truth:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    assert_eq!(summary["totals"]["packets"].as_u64(), Some(truth.total_frames), "{summary:#}");

    // The flow state, as the detector reports it: about a million flows at
    // once (nothing evicted: the table has room for all), at most 128 B each.
    let (bytes, peak, per_flow) = flow_state(&detector_log);
    assert!(peak as usize >= FLOWS * 9 / 10, "the table held only {peak} flows at once:\n{detector_log}");
    assert!(peak <= TABLE, "peak {peak} above the table size");
    assert_eq!(per_flow, bytes / peak, "the line's division: {detector_log}");
    assert!(per_flow <= 128, "{per_flow} bytes of flow state per flow (aim: at most 128):\n{detector_log}");

    // And as the kernel measures it: the detector's peak resident memory
    // within its queues, 8 MB and those 128 bytes per flow.
    let packet_queue = 4096 + QUEUE_SLOTS * SLOT;
    let record_queue = 4096 + RECORD_SLOTS * u64::from(station::naming::RECORD_SLOT_SIZE);
    let bound = 8 * MB + packet_queue + record_queue + 128 * peak;
    let rss = e2e::peak_rss(&report);
    eprintln!(
        "cj-detector: {bytes} bytes of flow state for {peak} flows ({per_flow} B each), peak RSS {} MB, bound {} MB",
        rss / MB,
        bound / MB
    );
    assert!(rss <= bound, "cj-detector peaked at {rss} bytes, above {bound}:\n{detector_log}");
}

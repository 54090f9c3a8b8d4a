//! Queues made tiny so the balancer must drop: every frame is still accounted
//! for. The balancer runs alone on a 16-slot packet queue with
//! `CJ_ON_FULL=drop`: no consumer ever frees a slot, so exactly the first 16
//! frames of the capture are queued and every later one is dropped. Checked
//! against the generator (its frame count and the first 16 frames' lengths),
//! never one output against another: the drops in summary.json, the
//! balancer's stats line and `cj-app status` are each `total - 16`; flows.csv
//! holds exactly the first 16 IP frames (packets and frame bytes) and
//! summary.json their non-IP frames; received = in flows.csv + non-IP +
//! dropped at the queue.

use e2e::{read_flows_csv, read_flows_csv_counters, read_json, wait_all, Cluster, DEADLINE};
use sim::{SimSpec, SimTraffic, ARP_FRAME_LEN, MAX_FRAME_LEN};
use std::process::Stdio;

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows;

#[test]
fn tiny_queue_drops_are_counted_and_the_identity_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("burst.pcap");
    let spec: SimSpec = "flows=200,packets=20000,sizes=64:50/1514:50,v6=20,nonip=1,seed=3".parse().expect("spec");
    let truth = sim::write_pcap(&spec, &pcap, true).expect("write capture");
    // The queue's 16 slots hold the capture's first 16 frames: their lengths from the
    // generator. The model's ARP frames are 60 bytes, its IP frames at least 64.
    const SLOTS: u64 = 16;
    let mut gen = SimTraffic::new(&spec);
    let mut buf = [0u8; MAX_FRAME_LEN];
    let first: Vec<usize> = (0..SLOTS).map(|_| gen.next_frame(&mut buf).expect("a frame").1).collect();
    let first_non_ip = first.iter().filter(|&&l| l == ARP_FRAME_LEN).count() as u64;
    let first_ip_bytes: u64 = first.iter().filter(|&&l| l != ARP_FRAME_LEN).map(|&l| l as u64).sum();
    let dropped = truth.total_frames - SLOTS;
    let iface = format!("pcap:{}", pcap.display());
    let cluster = Cluster::new(&[
        ("CJ_IFACE", &iface),
        ("CJ_QUEUE_SLOTS", "16"),
        ("CJ_ON_FULL", "drop"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_LOG_INTERVAL", "1"),
    ]);

    // The balancer runs alone first: its 16-slot queue fills and the rest is dropped.
    let balancer =
        cluster.command("cj-balancer").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("balancer");
    let balancer = wait_all(vec![("cj-balancer", balancer)], DEADLINE).pop().expect("output");
    let balancer_err = String::from_utf8_lossy(&balancer.stderr).to_string();
    assert!(balancer.status.success(), "balancer failed: {balancer_err}");

    // Then the detector and the app drain what was queued and end.
    let out = tempfile::tempdir().expect("out");
    let detector =
        cluster.command("cj-detector").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("detector");
    let app = cluster
        .command("cj-app")
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("app");
    let outs = wait_all(vec![("cj-detector", detector), ("cj-app", app)], DEADLINE);
    for o in &outs {
        assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    }

    let flows = read_flows_csv(&out.path().join("flows.csv"));
    let in_flows: u64 = flows.values().map(|(p, _)| p).sum();
    let frame_bytes: u64 = read_flows_csv_counters(&out.path().join("flows.csv")).values().map(|c| c.frame_bytes).sum();
    let summary = read_json(&out.path().join("summary.json"));
    let identity = &summary["identity"];
    let queue_dropped = identity["terms"]["queue_dropped"].as_u64().expect("queue_dropped in summary.json");
    let non_ip = identity["terms"]["non_ip"].as_u64().expect("non_ip in summary.json");
    assert_eq!(queue_dropped, dropped, "every frame after the first {SLOTS} is dropped: {summary:#}");
    // Received is the generator's frame count (a file loses nothing before the balancer).
    assert_eq!(identity["terms"]["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    // What was accounted is exactly the first 16 frames.
    assert_eq!(non_ip, first_non_ip, "non-IP frames among the first {SLOTS} ({first:?})");
    assert_eq!(in_flows, SLOTS - first_non_ip, "IP frames among the first {SLOTS} ({first:?})");
    assert_eq!(frame_bytes, first_ip_bytes, "FRAME_BYTES of flows.csv vs the first {SLOTS} IP frames ({first:?})");
    // ... and a part of the truth, row by row: nothing invented.
    let want = truth_rows(&truth);
    for (key, (packets, bytes)) in &flows {
        let (tp, tb) = want.get(key).unwrap_or_else(|| panic!("flows.csv row {key:?} is not in the truth"));
        assert!(packets <= tp && bytes <= tb, "row {key:?}: {packets}/{bytes} > truth {tp}/{tb}");
    }
    assert_eq!(
        truth.total_frames,
        in_flows + non_ip + queue_dropped,
        "generated = in flows.csv ({in_flows}) + non-IP ({non_ip}) + dropped at queue ({queue_dropped})"
    );
    assert_eq!(identity["status"], "holds", "{summary:#}");

    // The drops are in the balancer's stats line ...
    let needle = format!("queue full {dropped}");
    assert!(balancer_err.contains(&needle), "balancer stats line should say `{needle}`:\n{balancer_err}");
    // ... and in `cj-app status`, read from the queue header.
    let status = cluster.command("cj-app").arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    let line =
        text.lines().find(|l| l.contains("pkt-0-0")).unwrap_or_else(|| panic!("no pkt-0-0 line in status:\n{text}"));
    // Columns: queue, enqueued, dequeued, dropped, ...
    let cols: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| cols.get(i).and_then(|c| c.parse::<u64>().ok());
    assert_eq!(
        (num(1), num(2), num(3)),
        (Some(SLOTS), Some(SLOTS), Some(dropped)),
        "enqueued, dequeued, dropped of: {line}"
    );
}

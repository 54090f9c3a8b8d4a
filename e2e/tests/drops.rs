//! Queues made tiny so the balancer must drop: every frame is still accounted
//! for. received (the generator's frame count) = packets in flows.csv +
//! non-IP frames + drops at the packet queue, and the drops show in the
//! balancer's stats line and in `cj-app status`.

use e2e::{read_flows_csv, read_json, wait_all, Cluster, DEADLINE};
use station::sim::SimSpec;
use std::process::Stdio;

#[test]
fn tiny_queue_drops_are_counted_and_the_identity_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("burst.pcap");
    let spec: SimSpec = "flows=200,packets=20000,sizes=64:50/1514:50,v6=20,nonip=1,seed=3".parse().expect("spec");
    let truth = station::sim::write_pcap(&spec, &pcap, true).expect("write capture");
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
    let summary = read_json(&out.path().join("summary.json"));
    let identity = &summary["identity"];
    let queue_dropped = identity["terms"]["queue_dropped"].as_u64().expect("queue_dropped in summary.json");
    let non_ip = identity["terms"]["non_ip"].as_u64().expect("non_ip in summary.json");
    assert!(queue_dropped > truth.total_frames / 2, "expected most frames dropped, got {queue_dropped}");
    // Received is the generator's frame count (a file loses nothing before the balancer).
    assert_eq!(identity["terms"]["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    // What was accounted is a part of the truth, row by row: nothing invented.
    assert!(non_ip <= truth.non_ip_frames, "non-IP {non_ip} > generated {}", truth.non_ip_frames);
    let want = e2e::truth_rows(&truth);
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
    let needle = format!("queue full {queue_dropped}");
    assert!(balancer_err.contains(&needle), "balancer stats line should say `{needle}`:\n{balancer_err}");
    // ... and in `cj-app status`, read from the queue header.
    let status = cluster.command("cj-app").arg("status").output().expect("status");
    let text = String::from_utf8_lossy(&status.stdout);
    let line =
        text.lines().find(|l| l.contains("pkt-0-0")).unwrap_or_else(|| panic!("no pkt-0-0 line in status:\n{text}"));
    // Columns: queue, enqueued, dequeued, dropped, ...
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.get(3).and_then(|c| c.parse::<u64>().ok()), Some(queue_dropped), "dropped column of: {line}");
}

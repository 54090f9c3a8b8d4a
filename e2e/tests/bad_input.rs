//! Bad input never crashes a process or loses count: a capture cut off in the
//! middle of a record is read up to the cut (the partial record is counted in
//! `source_errors`, the identity holds on what was received, and the run's
//! summary says `complete: false` with the count), and a file that is not a
//! capture is a one-line error.

use e2e::{read_flows_csv, read_json, run_pipeline, Cluster};
use sim::SimSpec;

/// Complete records in a classic little-endian pcap of `len` bytes, walking the
/// record headers (independent of the station's reader).
fn complete_records(bytes: &[u8], len: usize) -> u64 {
    let mut off = 24;
    let mut n = 0;
    while off + 16 <= len {
        let caplen = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().expect("4 bytes")) as usize;
        if off + 16 + caplen > len {
            break;
        }
        off += 16 + caplen;
        n += 1;
    }
    n
}

#[test]
fn a_capture_cut_mid_record_is_read_to_the_cut_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let full = dir.path().join("full.pcap");
    let spec: SimSpec = "flows=50,packets=5000,sizes=64:50/1514:50,seed=5".parse().expect("spec");
    sim::write_pcap(&spec, &full, false).expect("write capture");
    let bytes = std::fs::read(&full).expect("read capture");
    // Cut in the middle of a record's data, about two thirds in.
    let cut = bytes.len() * 2 / 3;
    let cut_path = dir.path().join("cut.pcap");
    std::fs::write(&cut_path, &bytes[..cut]).expect("write cut capture");
    let expected = complete_records(&bytes, cut);
    assert!(expected > 1000 && expected < 5000, "{expected}");

    let iface = format!("pcap:{}", cut_path.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "2")]);
    let out = dir.path().join("out");
    let run = run_pipeline(&cluster, &out);
    run.assert_success();
    let stderr = String::from_utf8_lossy(&run.balancer.stderr);
    assert!(stderr.contains("source errors 1"), "balancer should count the partial record:\n{stderr}");
    assert!(stderr.contains("truncated"), "balancer should say the capture is truncated:\n{stderr}");

    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    // The identity holds on what was received, but the capture was not read in full.
    assert_eq!(summary["complete"], false, "{summary:#}");
    assert_eq!(summary["source_errors"].as_u64(), Some(1), "{summary:#}");
    assert!(summary["incomplete_reason"].as_str().is_some_and(|r| r.contains("source_errors")), "{summary:#}");
    assert!(summary["identity"]["line"].as_str().is_some_and(|l| l.contains("1 unreadable record(s)")), "{summary:#}");
    let stdout = String::from_utf8_lossy(&run.app.stdout);
    assert!(stdout.contains("incomplete: the capture source had 1 unreadable record(s)"), "{stdout}");
    assert_eq!(summary["identity"]["terms"]["received"].as_u64(), Some(expected), "{summary:#}");
    let in_flows: u64 = read_flows_csv(&out.join("flows.csv")).values().map(|(p, _)| p).sum();
    assert_eq!(in_flows, expected);
}

#[test]
fn a_file_that_is_not_a_capture_is_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "this is not a capture file at all, just text\n".repeat(10)).expect("write");
    let iface = format!("pcap:{}", junk.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface)]);
    let out = cluster.command("cj-balancer").output().expect("run balancer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{stderr}");
    assert!(lines[0].contains("notes.txt") && lines[0].contains("not a pcap"), "{}", lines[0]);
}

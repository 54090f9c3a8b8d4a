//! Limits hold under floods and full disks, checked against independent truth:
//! the app's aggregate stops at CJ_APP_MAX_ROWS rows plus one overflow row
//! with totals equal to the generator's; a full output file system leaves
//! a `summary.json` that says the run is incomplete and why, and no temporary
//! file, and one that is enlarged during the run loses nothing; a flood of
//! millions of one-packet flows keeps every process within the memory bound
//! the README states ("The app's memory") with the identity exact.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{read_json, run_pipeline, wait_all, Cluster};
use sim::SimSpec;

/// One CSV row of the default aggregate: the five key columns as text, then PACKETS, BYTES.
type CsvRows = BTreeMap<[String; 5], (u64, u64)>;

/// Reads flows.csv without the harness's parser (which wants addresses in every row).
fn read_csv(path: &Path) -> CsvRows {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES")));
    let mut rows = BTreeMap::new();
    for line in lines {
        let c: Vec<&str> = line.split(',').collect();
        assert!(c.len() >= 7, "{line}");
        let key = [c[0], c[1], c[2], c[3], c[4]].map(str::to_owned);
        let prev = rows.insert(key, (c[5].parse().expect("packets"), c[6].parse().expect("bytes")));
        assert!(prev.is_none(), "a key twice: {line}");
    }
    rows
}

/// The generator's truth keyed like the CSV (VLANs merged).
fn truth_csv(spec: &SimSpec) -> CsvRows {
    let mut rows = BTreeMap::new();
    for r in sim::truth(spec).rows {
        let key = [
            r.src.to_string(),
            r.dst.to_string(),
            r.src_port.to_string(),
            r.dst_port.to_string(),
            station::proto::proto_name(r.proto).into_owned(),
        ];
        let slot: &mut (u64, u64) = rows.entry(key).or_default();
        slot.0 += r.packets;
        slot.1 += r.ip_bytes;
    }
    rows
}

#[test]
fn a_flood_beyond_the_row_limit_folds_into_one_overflow_row_and_totals_match_the_truth() {
    const MAX_ROWS: usize = 1000;
    let sim = "flows=4000,packets=16000,v6=20,vlan=0,seed=11";
    let spec: SimSpec = sim.parse().expect("spec");
    let truth = truth_csv(&spec);
    assert!(truth.len() > 2 * MAX_ROWS, "the flood must exceed the limit: {} keys", truth.len());
    let iface = format!("sim:{sim}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "2"), ("CJ_APP_MAX_ROWS", "1000")]);
    let out = tempfile::tempdir().expect("tempdir");
    let run = run_pipeline(&cluster, out.path());
    run.assert_success();

    let got = read_csv(&out.path().join("flows.csv"));
    assert_eq!(got.len(), MAX_ROWS + 1, "CJ_APP_MAX_ROWS rows plus the overflow row");
    let other = ["other"; 5].map(str::to_owned);
    let (other_packets, other_bytes) = *got.get(&other).expect("an overflow row `other`");
    // Every row of its own is exact; the overflow row holds the rest, so totals are exact.
    for (key, counts) in got.iter().filter(|(k, _)| **k != other) {
        assert_eq!(truth.get(key), Some(counts), "row {key:?}");
    }
    let sum = |rows: &CsvRows| rows.values().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    let (want_packets, want_bytes) = sum(&truth);
    assert_eq!(sum(&got), (want_packets, want_bytes));
    assert!(other_packets > 0 && other_bytes > 0);

    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["rows"].as_u64(), Some(MAX_ROWS as u64 + 1), "{summary:#}");
    assert_eq!(summary["max_rows"].as_u64(), Some(MAX_ROWS as u64), "{summary:#}");
    let folded = summary["rows_overflowed"].as_u64().expect("rows_overflowed");
    // At least one fold per key without a row of its own.
    assert!(folded >= (truth.len() - MAX_ROWS) as u64, "{folded} folds for {} keys", truth.len());
    assert_eq!(summary["totals"]["packets"].as_u64(), Some(want_packets), "{summary:#}");
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    assert_eq!(summary["complete"], true, "{summary:#}");
    let stdout = String::from_utf8_lossy(&run.app.stdout);
    assert!(stdout.contains("reached CJ_APP_MAX_ROWS=1000"), "{stdout}");
}

/// A small tmpfs mounted for the test, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallFs { dir })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_output_file_system_leaves_a_summary_marked_incomplete_and_no_temporary_file() {
    if !nix::unistd::geteuid().is_root() {
        e2e::skip("needs root to mount a small tmpfs");
        return;
    }
    let Some(fs) = SmallFs::mount("64k") else {
        e2e::skip("cannot mount a tmpfs here");
        return;
    };
    let sim = "flows=4000,packets=16000,seed=12";
    let iface = format!("sim:{sim}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface)]);
    let out = fs.dir.path().join("out");
    let run = run_pipeline(&cluster, &out);
    run.assert_success();
    let stderr = String::from_utf8_lossy(&run.app.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");

    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["complete"], false, "{summary:#}");
    let reason = summary["incomplete_reason"].as_str().expect("a reason");
    assert!(reason.contains("flow tables could not be written") && reason.contains("No space left"), "{reason}");
    // The counts are still right in the summary.
    let truth = sim::truth(&sim.parse().expect("spec"));
    let ip_packets: u64 = truth.rows.iter().map(|r| r.packets).sum();
    assert_eq!(summary["totals"]["packets"].as_u64(), Some(ip_packets), "{summary:#}");
    let names: Vec<String> =
        std::fs::read_dir(&out).expect("out").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "a temporary file was left: {names:?}");
}

#[test]
fn an_output_file_system_enlarged_during_the_run_loses_nothing() {
    if !nix::unistd::geteuid().is_root() {
        e2e::skip("needs root to mount a small tmpfs");
        return;
    }
    let Some(fs) = SmallFs::mount("1m") else {
        e2e::skip("cannot mount a tmpfs here");
        return;
    };
    // Paced (about 6 s) so the app refreshes while the source runs; flows end
    // after 1 s idle on the packet clock, so rows reach the app during the run
    // and its files pass 1 MB within the first seconds.
    let sim = "flows=60000,packets=60000,rate=10000,seed=13";
    let iface = format!("sim:{sim}");
    let cluster = Cluster::new(&[
        ("CJ_IFACE", &iface),
        ("CJ_ON_FULL", "wait"),
        ("CJ_FLOW_IDLE_TIMEOUT", "1"),
        ("CJ_FLOW_ACTIVE_TIMEOUT", "1"),
        ("CJ_REFRESH", "1"),
    ]);
    let out = fs.dir.path().join("out");
    std::fs::create_dir(&out).expect("create out");
    let app_log = tempfile::NamedTempFile::new().expect("app log");
    let spawn = |name: &str, stderr: Stdio| {
        let mut cmd = cluster.command(name);
        if name == "cj-app" {
            cmd.arg("--out").arg(&out);
        }
        cmd.stdout(Stdio::piped()).stderr(stderr).spawn().expect("start")
    };
    let detector = spawn("cj-detector", Stdio::piped());
    let app = spawn("cj-app", Stdio::from(app_log.reopen().expect("reopen log")));
    let balancer = spawn("cj-balancer", Stdio::piped());

    // Wait for the app to find the disk full, then give the file system room.
    let started = Instant::now();
    let full = loop {
        let log = std::fs::read_to_string(app_log.path()).unwrap_or_default();
        if log.contains("No space left on device") {
            break true;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let remounted =
        Command::new("mount").args(["-o", "remount,size=64m"]).arg(fs.dir.path()).status().is_ok_and(|s| s.success());
    let outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(60));
    let log = std::fs::read_to_string(app_log.path()).unwrap_or_default();
    assert!(full, "the app never found the 1 MB file system full:\n{log}");
    assert!(remounted, "mount -o remount,size=64m failed");
    for (name, o) in ["cj-balancer", "cj-detector", "cj-app"].iter().zip(&outs) {
        assert!(o.status.success(), "{name} exited {}: {}{log}", o.status, String::from_utf8_lossy(&o.stderr));
    }

    let spec: SimSpec = sim.parse().expect("spec");
    let want = truth_csv(&spec);
    let got = read_csv(&out.join("flows.csv"));
    assert_eq!(got.len(), want.len(), "rows");
    if let Some((key, counts)) = want.iter().find(|(k, c)| got.get(*k) != Some(c)) {
        panic!("row {key:?}: want {counts:?}, got {:?}", got.get(key));
    }
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["complete"], true, "{summary:#}");
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    let names: Vec<String> =
        std::fs::read_dir(&out).expect("out").map(|e| e.expect("entry").file_name().to_string_lossy().into()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "a temporary file was left: {names:?}");
}

const MB: u64 = 1 << 20;

#[test]
fn a_flood_of_one_packet_flows_keeps_every_process_within_the_stated_memory_bound() {
    if !Path::new("/usr/bin/time").exists() {
        e2e::skip("needs /usr/bin/time (GNU time) to measure each process's peak memory");
        return;
    }
    // The 10 M flows: about 12 s on 2 cores. The balancer's sim models
    // (about 110 B a flow) take 1.1 GB, the rest under 100 MB: well below
    // 2 GiB, so no memory-limited cgroup is needed.
    const FLOWS: u64 = 10_000_000;
    const WORKERS: u64 = 2;
    const TABLE: u64 = 16_384;
    const ROWS: u64 = 10_000;
    const QUEUE_SLOTS: u64 = 4096;
    const SLOT: u64 = 2048;
    const RECORD_SLOTS: u64 = 4096;
    let sim = format!("flows={FLOWS},packets={FLOWS},seed=14");
    let iface = format!("sim:{sim}");
    let cluster = Cluster::new(&[
        ("CJ_IFACE", &iface),
        ("CJ_CORECOUNT", &WORKERS.to_string()),
        ("CJ_FLOW_TABLE_SIZE", &TABLE.to_string()),
        ("CJ_APP_MAX_ROWS", &ROWS.to_string()),
        ("CJ_QUEUE_SLOTS", &QUEUE_SLOTS.to_string()),
        ("CJ_SLOT_SIZE", &SLOT.to_string()),
        ("CJ_RECORD_QUEUE_SLOTS", &RECORD_SLOTS.to_string()),
    ]);
    let out = tempfile::tempdir().expect("out");
    let reports = tempfile::tempdir().expect("reports");
    let report = |name: &str| reports.path().join(name);
    let detector = cluster.timed_command("cj-detector", &report("detector")).spawn().expect("start detector");
    let mut app_cmd = cluster.timed_command("cj-app", &report("app"));
    app_cmd.arg("--out").arg(out.path());
    let app = app_cmd.spawn().expect("start app");
    let balancer = cluster.timed_command("cj-balancer", &report("balancer")).spawn().expect("start balancer");
    let started = Instant::now();
    let outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(120));
    let took = started.elapsed();
    for (name, o) in ["cj-balancer", "cj-detector", "cj-app"].iter().zip(&outs) {
        assert!(o.status.success(), "{name} exited {}: {}", o.status, String::from_utf8_lossy(&o.stderr));
    }

    // The identity, exact: every packet in one record, every flow counted once.
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    assert_eq!(summary["complete"], true, "{summary:#}");
    assert_eq!(summary["totals"]["packets"].as_u64(), Some(FLOWS), "{summary:#}");
    assert_eq!(summary["totals"]["flows"].as_u64(), Some(FLOWS), "{summary:#}");
    assert_eq!(summary["rows"].as_u64(), Some(ROWS + 1), "{summary:#}");

    // The bounds of README "The app's memory", with this run's settings.
    let packet_queue = 4096 + QUEUE_SLOTS * SLOT;
    let record_queue = 4096 + RECORD_SLOTS * u64::from(station::naming::RECORD_SLOT_SIZE);
    let bounds = [
        ("balancer", 8 * MB + WORKERS * packet_queue + 120 * FLOWS),
        ("detector", 8 * MB + WORKERS * (packet_queue + record_queue + 128 * TABLE)),
        ("app", 25 * MB + WORKERS * record_queue + 650 * ROWS),
    ];
    let mut lines = Vec::new();
    for (name, bound) in bounds {
        let peak = e2e::peak_rss(&report(name));
        lines.push(format!("cj-{name}: peak {} MB, bound {} MB", peak / MB, bound / MB));
        assert!(peak <= bound, "cj-{name} peaked at {peak} bytes, above the stated bound {bound}");
    }
    eprintln!("{FLOWS} one-packet flows in {took:?}: {}", lines.join("; "));
}

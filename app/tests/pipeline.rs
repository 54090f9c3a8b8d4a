//! End-to-end tests of the real `cj-app` binary on real shared-memory queues:
//! hand-made FlowRecords are pushed by a producer (this test), a balancer stats
//! page, packet-queue headers and worker pages are written as the balancer and
//! detector would, and the app's files are checked against an expectation
//! written out by hand (not computed with the app's code).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use shmq::{CounterPage, QueueFile, QueueSpec};
use station::naming::{self, balancer_counter, worker_counter, BALANCER_COUNTERS, WORKER_COUNTERS};
use station::record::{DirCounters, EndReason, FlowRecord, RecordKind};

const CLUSTER: u32 = 7;
const REC_SLOTS: u32 = 1024;

fn rec_spec() -> QueueSpec {
    QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: REC_SLOTS }
}

fn pkt_spec() -> QueueSpec {
    QueueSpec { slot_size: 256, capacity: 16 }
}

fn dir(packets: u64, ip_bytes: u64, frame_bytes: u64) -> DirCounters {
    DirCounters { packets, ip_bytes, frame_bytes, ..Default::default() }
}

fn addr(s: &str) -> ([u8; 16], u8) {
    match s.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        std::net::IpAddr::V6(a) => (a.octets(), 6),
    }
}

#[allow(clippy::too_many_arguments)]
fn ip(a: &str, pa: u16, b: &str, pb: u16, proto: u8, ab: DirCounters, ba: DirCounters, end: EndReason) -> FlowRecord {
    let (addr_a, v) = addr(a);
    let (addr_b, _) = addr(b);
    FlowRecord {
        kind: RecordKind::Ip as u8,
        ip_version: v,
        ethertype: if v == 4 { 0x0800 } else { 0x86dd },
        addr_a,
        addr_b,
        port_a: pa,
        port_b: pb,
        proto,
        dir: [ab, ba],
        end_reason: end as u8,
        ..Default::default()
    }
}

fn non_ip(kind: RecordKind, frames: u64, bytes: u64) -> FlowRecord {
    FlowRecord {
        kind: kind as u8,
        ethertype: 0x0806,
        dir: [dir(frames, 0, bytes), DirCounters::default()],
        end_reason: EndReason::IdleTimeout as u8,
        ..Default::default()
    }
}

/// Pushes `records` (numbering their seq from 0) into record queue `q`, then closes it if asked.
fn produce(cluster: &Path, q: u32, records: &[FlowRecord], close: bool) {
    let mut p = QueueFile::open_or_create(&naming::record_queue_path(cluster, q), rec_spec()).unwrap().into_producer();
    for (i, r) in records.iter().enumerate() {
        let r = FlowRecord { seq: i as u64, queue: q as u16, ..*r };
        p.push(r.as_bytes()).unwrap();
    }
    p.publish();
    if close {
        p.close();
    }
}

/// Writes what the balancer and the workers would: pages and packet-queue headers.
fn balancer_side(cluster: &Path, received: u64, capture_dropped: u64, hash_mode: u64, dropped: &[u64], lost: &[u64]) {
    let page = CounterPage::open_or_create(&naming::balancer_stats_path(cluster), BALANCER_COUNTERS).unwrap();
    page.set(balancer_counter::RECEIVED, received);
    page.set(balancer_counter::CAPTURE_DROPPED, capture_dropped);
    page.set(balancer_counter::QUEUE_DROPPED, dropped.iter().sum());
    page.set(balancer_counter::SETS, 1);
    page.set(balancer_counter::QUEUES_PER_SET, dropped.len() as u64);
    page.set(balancer_counter::HASH_MODE, hash_mode);
    page.set(balancer_counter::ENDED, 1);
    for (q, &d) in dropped.iter().enumerate() {
        let mut p = QueueFile::open_or_create(&naming::packet_queue_path(cluster, 0, q as u32), pkt_spec())
            .unwrap()
            .into_producer();
        p.count_dropped(d);
        p.close();
    }
    for (q, &l) in lost.iter().enumerate() {
        let w = CounterPage::open_or_create(&naming::worker_stats_path(cluster, q as u32), WORKER_COUNTERS).unwrap();
        w.set(worker_counter::LOST_PACKETS, l);
        w.set(worker_counter::RECORDS_LOST, u64::from(l > 0));
        w.set(worker_counter::ENDED, 1);
    }
}

fn app(shm: &Path, queues: u32, hash_mode: u32) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cj-app"));
    c.env_clear()
        .env("CJ_SHM_DIR", shm)
        .env("CJ_CLUSTER_ID", CLUSTER.to_string())
        .env("CJ_CORECOUNT", queues.to_string())
        .env("CJ_QUEUE_OFFSET", "0")
        .env("ZBALANCE_HASH_MODE", hash_mode.to_string())
        .env("CJ_RECORD_QUEUE_SLOTS", REC_SLOTS.to_string())
        .env("CJ_LOG_INTERVAL", "0");
    c
}

fn run(c: &mut Command) -> Output {
    let out = c.output().unwrap();
    eprintln!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

/// The records of the main test, for two workers (queues 0 and 1).
fn two_worker_records() -> (Vec<FlowRecord>, Vec<FlowRecord>) {
    // One TCP flow seen in two parts: worker 0 cut it by active timeout calling
    // 10.0.0.1 the initiator; worker 1 saw the rest and called 10.0.0.2 the initiator.
    let tcp0 = ip("10.0.0.1", 40000, "10.0.0.2", 80, 6, dir(3, 300, 342), dir(2, 2000, 2028), EndReason::ActiveTimeout);
    let tcp1 = ip("10.0.0.2", 80, "10.0.0.1", 40000, 6, dir(4, 4000, 4056), dir(1, 100, 114), EndReason::EndOfFlow);
    // One-way IPv6 UDP.
    let udp6 = ip("2001:db8::1", 5353, "ff02::fb", 5353, 17, dir(5, 500, 570), dir(0, 0, 0), EndReason::IdleTimeout);
    // ICMP echo both ways (equal bytes: the key breaks the tie).
    let icmp = ip("192.168.1.10", 0, "8.8.8.8", 0, 1, dir(2, 168, 196), dir(2, 168, 196), EndReason::IdleTimeout);
    // GRE, named by pmacct.
    let gre = ip("10.1.1.1", 0, "10.2.2.2", 0, 47, dir(1, 44, 58), dir(0, 0, 0), EndReason::ForcedEnd);
    let arp = non_ip(RecordKind::NonIp, 3, 180);
    let bad = non_ip(RecordKind::Malformed, 1, 60);
    let invalid = FlowRecord { kind: 9, ..arp };
    (vec![tcp0, udp6, arp, invalid], vec![tcp1, icmp, gre, bad])
}

#[test]
fn run_merges_records_writes_pmacct_files_and_checks_the_identity() {
    let shm = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cluster = naming::cluster_dir(shm.path(), CLUSTER);
    let (q0, q1) = two_worker_records();
    produce(&cluster, 0, &q0, true);
    produce(&cluster, 1, &q1, true);
    // IP packets 10 + 10 (tcp) + 5 + 4 + 1 = 25 in flows... counted by hand:
    // tcp 3+2+4+1 = 10, udp6 5, icmp 4, gre 1 => 20 in flows; non-IP 3; malformed 1;
    // queue dropped 2 + 1; records lost 2 packets => received 29. Capture dropped 5 (outside).
    balancer_side(&cluster, 29, 5, 1, &[2, 1], &[0, 2]);

    let o = run(app(shm.path(), 2, 1).arg("--out").arg(out.path()).arg("--refresh").arg("0"));
    assert!(o.status.success(), "exit {:?}", o.status);

    let csv = std::fs::read_to_string(out.path().join("flows.csv")).unwrap();
    assert_eq!(
        csv,
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END\n\
         10.0.0.2,10.0.0.1,80,40000,tcp,6,6000,6084,1,0.000000,0.000000\n\
         2001:db8::1,ff02::fb,5353,5353,udp,5,500,570,1,0.000000,0.000000\n\
         10.0.0.1,10.0.0.2,40000,80,tcp,4,400,456,1,0.000000,0.000000\n\
         8.8.8.8,192.168.1.10,0,0,icmp,2,168,196,1,0.000000,0.000000\n\
         192.168.1.10,8.8.8.8,0,0,icmp,2,168,196,1,0.000000,0.000000\n\
         10.1.1.1,10.2.2.2,0,0,gre,1,44,58,1,0.000000,0.000000\n"
    );
    let json = std::fs::read_to_string(out.path().join("flows.json")).unwrap();
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(json.lines().count(), 6);
    assert!(json.starts_with("{\"event_type\": \"purge\", \"ip_src\": \"10.0.0.2\", \"ip_dst\": \"10.0.0.1\", \"port_src\": 80, \"port_dst\": 40000, \"ip_proto\": \"tcp\", \"packets\": 6, \"bytes\": 6000, "));
    assert_eq!(first["frame_bytes"], 6084);
    assert!(!out.path().join(".flows.csv.tmp").exists());

    let s = summary(out.path());
    eprintln!("summary.json: {s:#}");
    let id = &s["identity"];
    assert_eq!(id["status"], "holds", "{id}");
    assert_eq!(id["terms"]["received"], 29);
    assert_eq!(id["terms"]["accounted_in_flows"], 20);
    assert_eq!(id["terms"]["non_ip"], 3);
    assert_eq!(id["terms"]["malformed"], 1);
    assert_eq!(id["terms"]["queue_dropped"], 3);
    assert_eq!(id["terms"]["records_lost_packets"], 2);
    assert_eq!(id["terms"]["difference"], 0);
    assert_eq!(id["capture_dropped"], 5);
    assert_eq!(s["complete"], true);
    assert_eq!(s["records_invalid"], 1);
    assert_eq!(s["records_gap"], 0);
    assert_eq!(s["totals"]["packets"], 20);
    assert_eq!(s["totals"]["bytes"], 6000 + 500 + 400 + 168 * 2 + 44);
    assert_eq!(s["queues"][0]["intake"]["records"], 3);
    assert_eq!(s["queues"][1]["totals"]["malformed_frames"], 1);

    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(
        "identity holds: received 29 = in flows 20 + non-IP 3 + malformed 1 + queue dropped 3 + records lost 2; \
         dropped at capture (not received): 5"
    ));
    assert!(stdout.contains("top 6 of 6 rows by bytes:"));
    assert!(stdout.contains(&out.path().join("flows.csv").display().to_string()));
}

#[test]
fn broken_identity_and_sequence_gaps_are_reported() {
    let shm = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cluster = naming::cluster_dir(shm.path(), CLUSTER);
    let r = ip("10.0.0.1", 1, "10.0.0.2", 2, 17, dir(1, 30, 44), dir(0, 0, 0), EndReason::IdleTimeout);
    // seq 0, then 3: two records missing.
    let mut p = QueueFile::open_or_create(&naming::record_queue_path(&cluster, 0), rec_spec()).unwrap().into_producer();
    p.push(FlowRecord { seq: 0, ..r }.as_bytes()).unwrap();
    p.push(FlowRecord { seq: 3, ..r }.as_bytes()).unwrap();
    p.close();
    balancer_side(&cluster, 4, 0, 1, &[0], &[0]);

    let o = run(app(shm.path(), 1, 1).arg("--out").arg(out.path()).args(["--aggregate", "proto"]));
    // A broken identity is a failure: the files are written, the exit is 1.
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cj-app: the accounting identity is broken"));
    assert_eq!(
        std::fs::read_to_string(out.path().join("flows.csv")).unwrap(),
        "PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END\nudp,2,60,88,2,0.000000,0.000000\n"
    );
    let s = summary(out.path());
    assert_eq!(s["identity"]["status"], "broken");
    assert_eq!(s["identity"]["terms"]["difference"], 2);
    assert_eq!(s["records_gap"], 1);
    assert_eq!(s["records_missing"], 2);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(
        "IDENTITY BROKEN: received 4 vs accounted 2 (in flows 2 + non-IP 0 + malformed 0 + queue dropped 0 + records lost 0) \
         differ by 2; dropped at capture (not received): 0; 2 records missing from the record sequences (workers report 0 lost)"
    ));
    assert!(String::from_utf8_lossy(&o.stderr).contains("record sequence 3 where 1 was expected"));
}

#[test]
fn fan_out_writes_one_table_per_queue() {
    let shm = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cluster = naming::cluster_dir(shm.path(), CLUSTER);
    let r = ip("10.0.0.1", 1000, "10.0.0.2", 53, 17, dir(2, 100, 128), dir(1, 200, 214), EndReason::IdleTimeout);
    // Every worker sees every packet; queue 1 lost one to a full packet queue.
    produce(&cluster, 0, &[r], true);
    let r1 = FlowRecord { dir: [dir(1, 50, 64), dir(1, 200, 214)], ..r };
    produce(&cluster, 1, &[r1], true);
    balancer_side(&cluster, 3, 0, 2, &[0, 1], &[0, 0]);

    let o = run(app(shm.path(), 2, 2).arg("--out").arg(out.path()));
    assert!(o.status.success());
    let top = std::fs::read_to_string(out.path().join("flows.csv")).unwrap();
    let q0 = std::fs::read_to_string(out.path().join("queue-0/flows.csv")).unwrap();
    let q1 = std::fs::read_to_string(out.path().join("queue-1/flows.csv")).unwrap();
    assert_eq!(top, q0);
    assert!(q0.contains("10.0.0.1,10.0.0.2,1000,53,udp,2,100,128,1,0.000000,0.000000\n"));
    assert!(q1.contains("10.0.0.1,10.0.0.2,1000,53,udp,1,50,64,1,0.000000,0.000000\n"));
    assert!(out.path().join("queue-1/flows.json").exists());
    let s = summary(out.path());
    assert_eq!(s["fan_out"], true);
    assert_eq!(s["identity"]["status"], "holds", "{}", s["identity"]);
    assert_eq!(s["identity"]["per_queue"][1]["queue_dropped"], 1);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("fan-out (ZBALANCE_HASH_MODE=2)"), "{stdout}");
}

#[test]
fn app_alone_cannot_check_the_identity_and_sigterm_drains() {
    let shm = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cluster = naming::cluster_dir(shm.path(), CLUSTER);
    let r = ip("10.0.0.1", 1, "10.0.0.2", 2, 6, dir(1, 40, 54), dir(0, 0, 0), EndReason::IdleTimeout);
    // Queue left open: the app only stops on the signal.
    produce(&cluster, 0, &[r, r], false);
    let child = app(shm.path(), 1, 1)
        .arg("--out")
        .arg(out.path())
        .args(["--refresh", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the app has attached (its pid is in the queue header) and drained.
    let path = naming::record_queue_path(&cluster, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, st) = QueueFile::read_stats(&path).unwrap();
        if st.consumer_pid == child.id() && st.dequeued == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "app did not drain: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The refresh writes the files while the run goes on.
    while !out.path().join("summary.json").exists() {
        assert!(Instant::now() < deadline, "no refresh write");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(summary(out.path())["complete"], false);
    assert!(std::fs::read_to_string(out.path().join("flows.csv"))
        .unwrap()
        .contains(",tcp,2,80,108,2,0.000000,0.000000\n"));
    let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{:?}", o.status);
    assert!(stdout.contains("stopped before every queue ended"));
    assert!(stdout.contains("identity can't be checked: no balancer stats page at"));
    let s = summary(out.path());
    assert_eq!(s["complete"], false);
    assert_eq!(s["identity"]["status"], "unchecked");
    assert_eq!(s["totals"]["packets"], 2);
}

#[test]
fn bad_settings_exit_2_with_one_line() {
    let shm = tempfile::tempdir().unwrap();
    let o = run(app(shm.path(), 1, 1).args(["--aggregate", "src_host,src_mac"]));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "cj-app: unknown aggregation primitive \"src_mac\" in --aggregate; \
         valid primitives: src_host, dst_host, src_port, dst_port, proto, vlan, src_container, dst_container, \
         tunnel, outer_src_host, outer_dst_host, tunnel_id\n"
    );
    let o = run(app(shm.path(), 1, 1).arg("--bogus"));
    assert_eq!(o.status.code(), Some(2));
    let toml = shm.path().join("app.toml");
    std::fs::write(&toml, "[output]\nformats = [\"csv\"]\n[aggregate]\nprimitives = [\"vlan\", \"port\"]\n").unwrap();
    let o = run(app(shm.path(), 1, 1).env("CJ_STATION_CONFIG", &toml));
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("cj-app: unknown aggregation primitive \"port\" in "), "{err}");
    assert_eq!(err.lines().count(), 1);
    let o = run(app(shm.path(), 1, 1).env("CJ_CORECOUNT", "lots"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("cj-app: CJ_CORECOUNT=\"lots\""));
}

#[test]
fn status_shows_queues_and_counters() {
    let shm = tempfile::tempdir().unwrap();
    let cluster: PathBuf = naming::cluster_dir(shm.path(), CLUSTER);
    let r = ip("10.0.0.1", 1, "10.0.0.2", 2, 6, dir(1, 40, 54), dir(0, 0, 0), EndReason::IdleTimeout);
    produce(&cluster, 0, &[r, r, r], true);
    balancer_side(&cluster, 3, 0, 1, &[2], &[0]);

    let o = run(app(shm.path(), 1, 1).arg("status"));
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let me = std::process::id();
    let rec = text.lines().find(|l| l.trim_start().starts_with("rec-0")).expect("rec-0 line");
    let cells: Vec<&str> = rec.split_whitespace().collect();
    // rec-0 enqueued dequeued dropped fill (pct) closed producer consumer
    assert_eq!(&cells[..7], &["rec-0", "3", "0", "0", "3", "(0.3%)", "yes"], "{rec}");
    assert_eq!(cells.get(7), Some(&me.to_string().as_str()), "{rec}");
    let pkt = text.lines().find(|l| l.trim_start().starts_with("pkt-0-0")).expect("pkt line");
    assert_eq!(pkt.split_whitespace().nth(3), Some("2"), "{pkt}");
    assert!(text.contains("balancer: received=3 "), "{text}");
    assert!(text.contains("worker 0: packets=0 "), "{text}");
    // Nothing was attached or changed by status.
    let (_, st) = QueueFile::read_stats(&naming::record_queue_path(&cluster, 0)).unwrap();
    assert_eq!((st.dequeued, st.consumer_pid), (0, 0));

    let o = run(app(shm.path(), 1, 1).env("CJ_CLUSTER_ID", "98").arg("status"));
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "cj-app: no queues under {}: is the balancer or detector running with the same CJ_CLUSTER_ID and CJ_SHM_DIR?\n",
            shm.path().join("conjure-98").display()
        )
    );
}

#[test]
fn queues_left_by_a_finished_run_wait_for_the_next_detector() {
    let shm = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cluster = naming::cluster_dir(shm.path(), CLUSTER);
    let r = ip("10.0.0.1", 1, "10.0.0.2", 2, 17, dir(1, 30, 44), dir(0, 0, 0), EndReason::IdleTimeout);
    // Run 1: produced, closed, drained by an app.
    produce(&cluster, 0, &[r], true);
    let o = run(app(shm.path(), 1, 1).arg("--out").arg(out.path()));
    assert!(o.status.success());

    // Run 2: the app starts first and must not end on the stale closed queue.
    let child = app(shm.path(), 1, 1)
        .arg("--out")
        .arg(out.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let path = naming::record_queue_path(&cluster, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while QueueFile::read_stats(&path).unwrap().1.consumer_pid != child.id() {
        assert!(Instant::now() < deadline, "app did not attach");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // The detector of run 2 attaches, numbering on from its page (seq 1, 2).
    let mut p = QueueFile::open_or_create(&path, rec_spec()).unwrap().into_producer();
    for seq in [1, 2] {
        p.push(FlowRecord { seq, ..r }.as_bytes()).unwrap();
    }
    p.close();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stderr}");
    assert!(o.status.success());
    assert!(stderr.contains("was closed and drained by an earlier run; waiting for its detector worker to attach"));
    let s = summary(out.path());
    assert_eq!(s["complete"], true);
    assert_eq!(s["totals"]["packets"], 2);
    assert_eq!(s["records_gap"], 0);
}

//! End-to-end tests of the built `cj-detector` binary on real shared-memory
//! queues in a temporary CJ_SHM_DIR: core pinning as planned, clean stop on
//! SIGTERM, refusal of an impossible core plan, and the accounting identity
//! of a synthetic stream checked against the model's independent truth.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use shmq::{CounterPage, QueueFile, QueueSpec, QueueState};
use sim::{SimSpec, SimTraffic};
use station::config::StationConfig;
use station::naming;
use station::record::{EndReason, FlowRecord};
use station::slot::{write_packet, PacketMeta};

const BIN: &str = env!("CARGO_BIN_EXE_cj-detector");
const CLUSTER: u32 = 7;

/// The variables of a test run: CJ_COREBASE is the first core of the allowed
/// CPU set (one worker always fits), `extra` wins.
fn env_for(shm: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let first = station::coreplan::allowed_cpus().first().copied().unwrap_or(0).to_string();
    let mut env: Vec<(String, String)> = [
        ("CJ_SHM_DIR", shm.to_str().unwrap()),
        ("CJ_CLUSTER_ID", "7"),
        ("CJ_COREBASE", first.as_str()),
        ("CJ_CORECOUNT", "2"),
        ("CJ_QUEUE_SLOTS", "1024"),
        ("CJ_RECORD_QUEUE_SLOTS", "64"),
        ("CJ_FLOW_TABLE_SIZE", "4096"),
        ("CJ_LOG_INTERVAL", "1"),
        ("CJ_WAIT", "backoff"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

fn start(env: &[(String, String)]) -> Child {
    Command::new(BIN)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cj-detector")
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("cj-detector did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut s).unwrap();
    }
    s
}

fn page(path: &Path) -> HashMap<String, u64> {
    CounterPage::read(path).unwrap().into_iter().collect()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (tid, comm) of the process's threads.
fn threads(pid: u32) -> Vec<(String, String)> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let tid = e.ok()?.file_name().into_string().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
        Some((tid, comm.trim().to_string()))
    })
    .collect()
}

fn cpus_allowed_list(pid: u32, tid: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_string()).unwrap()
}

/// Variables of a core plan, as (name, value).
type PlanVars = Vec<(&'static str, String)>;

/// Two workers on the first two cores of the allowed CPU set that one core
/// plan can name (CJ_COREBASE, and CJ_SKIP_CORE over one core in between):
/// the cores and the variables; `None` (after [`skip`]) when no such pair exists.
fn two_allowed_cores() -> Option<([u32; 2], PlanVars)> {
    let allowed = station::coreplan::allowed_cpus();
    let pair = allowed.windows(2).find(|w| w[1] - w[0] <= 2);
    let Some(&[a, b]) = pair else {
        e2e::skip(&format!(
            "needs two cores of the allowed CPU set at most 2 apart (one core plan for two workers), have {}",
            station::coreplan::format_cpu_list(&allowed)
        ));
        return None;
    };
    let skip_core = if b == a + 2 { (a + 1).to_string() } else { "-1".to_owned() };
    let vars = vec![("CJ_COREBASE", a.to_string()), ("CJ_CORECOUNT", "2".to_owned()), ("CJ_SKIP_CORE", skip_core)];
    assert_eq!(station::coreplan::plan_cores(a, 2, (b == a + 2).then_some(a + 1)), vec![a, b]);
    Some(([a, b], vars))
}

#[test]
fn workers_are_pinned_to_their_planned_cores_and_sigterm_stops_cleanly() {
    let Some((cores, vars)) = two_allowed_cores() else { return };
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let shm = tempfile::tempdir().unwrap();
    let env = env_for(shm.path(), &vars);
    let dir = naming::cluster_dir(shm.path(), CLUSTER);
    let mut child = start(&env);
    let pid = child.id();
    // A worker creates its stats page after pinning itself.
    wait_for("both stats pages", Duration::from_secs(20), || {
        (0..2).all(|q| naming::worker_stats_path(&dir, q).exists())
    });
    let mut found = Vec::new();
    wait_for("both cj-worker threads", Duration::from_secs(10), || {
        found = threads(pid).into_iter().filter(|(_, c)| c.starts_with("cj-worker-")).collect();
        found.len() == 2
    });
    found.sort_by(|a, b| a.1.cmp(&b.1));
    for (q, (tid, comm)) in found.iter().enumerate() {
        assert_eq!(comm, &format!("cj-worker-{q}"));
        // Worker q (queue q) on the q-th core of the plan.
        assert_eq!(cpus_allowed_list(pid, tid), cores[q].to_string(), "thread {comm}");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert!(status.success(), "exit {status:?}, stderr:\n{err}");
    for q in 0..2 {
        let (_, st) = QueueFile::read_stats(&naming::record_queue_path(&dir, q)).unwrap();
        assert!(!st.closed, "rec-{q} closed by a signal: only the end of the stream closes it");
        let p = page(&naming::worker_stats_path(&dir, q));
        assert_eq!(p["ended"], 1);
        assert_eq!(p["packets"], 0);
    }
    assert!(err.contains("ended (signal)"), "{err}");
}

#[test]
fn a_core_beyond_the_machine_is_refused_with_one_line() {
    let shm = tempfile::tempdir().unwrap();
    let env = env_for(shm.path(), &[("CJ_COREBASE", "7"), ("CJ_CORECOUNT", "1")]);
    let mut child = start(&env);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cj-detector: core 7 "), "{err}");
    let allowed = station::coreplan::format_cpu_list(&station::coreplan::allowed_cpus());
    assert!(
        err.contains(&format!("allowed CPU set is {allowed}")) || err.contains(&format!("allowed CPU set {allowed}")),
        "{err}"
    );
    assert!(err.contains("CJ_COREBASE"), "{err}");
    // nothing was started, nothing created
    assert!(!naming::cluster_dir(shm.path(), CLUSTER).exists());
}

#[test]
fn a_config_error_is_one_line_and_exit_2() {
    let shm = tempfile::tempdir().unwrap();
    let env = env_for(shm.path(), &[("CJ_CORECOUNT", "two")]);
    let mut child = start(&env);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cj-detector: CJ_CORECOUNT=\"two\""), "{err}");
}

#[test]
fn help_and_version() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: cj-detector [--config FILE]"));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cj-detector "));
    let out = Command::new(BIN).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Drains the record queues until every one has ended.
fn drain(paths: Vec<PathBuf>, spec: QueueSpec) -> Vec<Vec<FlowRecord>> {
    drain_until(paths, spec, QueueState::Ended)
}

/// Drains the record queues until every one is in `until` (Ended, or Empty
/// for a queue a stopped worker left open).
fn drain_until(paths: Vec<PathBuf>, spec: QueueSpec, until: QueueState) -> Vec<Vec<FlowRecord>> {
    let mut rx: Vec<_> = paths.iter().map(|p| QueueFile::open_or_create(p, spec).unwrap().into_consumer()).collect();
    let mut out = vec![Vec::new(); rx.len()];
    let mut ended = vec![false; rx.len()];
    let t0 = Instant::now();
    while !ended.iter().all(|e| *e) {
        assert!(t0.elapsed() < Duration::from_secs(120), "record queues never ended");
        let mut progress = false;
        for (i, c) in rx.iter_mut().enumerate() {
            if ended[i] {
                continue;
            }
            while let Some(r) = c.pop_with(FlowRecord::read_from) {
                out[i].push(r.expect("a whole record in each slot"));
                progress = true;
            }
            c.release();
            if c.state() == until {
                ended[i] = true;
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

/// Room for the whole stream in every queue: no producer ever finds a queue full.
#[test]
fn synthetic_stream_end_to_end_matches_the_truth() {
    run_synthetic(
        &[("CJ_QUEUE_SLOTS", "32768"), ("CJ_RECORD_QUEUE_SLOTS", "16384")],
        "flows=2000,packets=60000,v6=25,vlan=20,qinq=5,frag=10,nonip=3,seed=11",
    );
}

/// Small packet and record queues: the test's producer waits for the
/// workers, and the workers wait for the test's record reader (backpressure,
/// no loss).
#[test]
fn synthetic_stream_with_backpressure_matches_the_truth() {
    run_synthetic(
        &[("CJ_QUEUE_SLOTS", "1024"), ("CJ_RECORD_QUEUE_SLOTS", "64")],
        "flows=2000,packets=60000,v6=25,vlan=20,qinq=5,frag=10,nonip=3,seed=12",
    );
}

/// A synthetic stream, spread round-robin over two packet queues (the
/// hardest case: every flow is seen in parts by both workers), through the
/// real binary; the records must match the model's truth exactly, per
/// direction, and the stats pages must show the accounting identity.
fn run_synthetic(queues: &[(&str, &str)], sim: &str) {
    let Some((_, cores)) = two_allowed_cores() else { return };
    let mut vars: Vec<(&str, &str)> = cores.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(queues);
    let shm = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let env = env_for(shm.path(), &vars);
    let cfg = StationConfig::load_from(&env, None).unwrap();
    let dir = cfg.cluster_dir();
    let pkt_spec = QueueSpec { slot_size: cfg.slot_size, capacity: cfg.queue_slots };
    let rec_spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: cfg.record_queue_slots };
    let mut tx: Vec<_> = (0..2)
        .map(|q| QueueFile::open_or_create(&naming::packet_queue_path(&dir, 0, q), pkt_spec).unwrap().into_producer())
        .collect();
    let rec_paths: Vec<PathBuf> = (0..2).map(|q| naming::record_queue_path(&dir, q)).collect();
    // The reader attaches first so it sees the stream from the start.
    let reader = std::thread::spawn(move || drain(rec_paths, rec_spec));

    let mut child = start(&env);
    let spec: SimSpec = sim.parse().unwrap();
    let truth = sim::truth(&spec);
    let mut gen = SimTraffic::new(&spec);
    let mut frame = vec![0u8; 2048];
    let mut n = 0u64;
    let mut per_queue = [0u64; 2];
    while let Some((ts, len)) = gen.next_frame(&mut frame) {
        // By IP addresses, as the balancer's hash mode 1: the fragments of a
        // datagram reach one worker, which counts them in the datagram's flow.
        let q = (wire::zbalance_ip_hash(&wire::summarize(&frame[..len])) % 2) as usize;
        per_queue[q] += 1;
        let meta = PacketMeta { ts_ns: ts, wire_len: len as u32, ..Default::default() };
        let waited = Instant::now();
        while tx[q].push_with(|slot| write_packet(slot, meta, &frame[..len])).is_err() {
            tx[q].publish();
            if let Some(st) = child.try_wait().unwrap() {
                panic!("cj-detector exited early: {st:?}\n{}", stderr_of(&mut child));
            }
            assert!(waited.elapsed() < Duration::from_secs(60), "packet queue {q} never drained");
            std::thread::sleep(Duration::from_micros(100));
        }
        n += 1;
        if n & 63 == 0 {
            tx[q].publish();
        }
    }
    for t in &mut tx {
        t.close();
    }
    let records = reader.join().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let err = stderr_of(&mut child);
    assert!(status.success(), "exit {status:?}, stderr:\n{err}");

    assert_eq!(n, truth.total_frames);
    // Diagnostics, shown when an assertion below fails.
    eprintln!("stderr of cj-detector:\n{err}");
    for (q, recs) in records.iter().enumerate() {
        let p = page(&naming::worker_stats_path(&dir, q as u32));
        let out_of_place: Vec<(usize, u64)> =
            recs.iter().enumerate().filter(|(i, r)| r.seq != *i as u64).map(|(i, r)| (i, r.seq)).take(10).collect();
        eprintln!(
            "queue {q}: {} records with {} packets; (index, seq) out of place: {out_of_place:?}; page {p:?}",
            recs.len(),
            recs.iter().map(FlowRecord::packets).sum::<u64>()
        );
    }
    let all: Vec<FlowRecord> = records.iter().flatten().copied().collect();
    assert_eq!(all.iter().map(FlowRecord::packets).sum::<u64>(), truth.total_frames);
    let (rows, non_ip) = sim::rows_of_records(&all);
    assert_eq!(non_ip, truth.non_ip_frames);
    assert_eq!(rows.len(), truth.rows.len());
    assert_eq!(rows, truth.rows);

    for (q, recs) in records.iter().enumerate() {
        // seq numbers are dense from 0, in queue order, all from this queue
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.seq, i as u64, "queue {q}");
            assert_eq!(u32::from(r.queue), q as u32);
        }
        let p = page(&naming::worker_stats_path(&dir, q as u32));
        assert_eq!(p["ended"], 1);
        assert_eq!(p["packets"], per_queue[q]);
        assert!(p["fragments"] > 0 && p["fragments_seen"] >= 2 * p["fragments"], "queue {q}: {p:?}");
        assert_eq!(p["fragments_attributed"], p["fragments"], "every later fragment with its datagram: {p:?}");
        assert_eq!(p["fragments_unattributed"], 0);
        assert_eq!(p["ipv4"] + p["ipv6"] + p["non_ip"] + p["malformed"], p["packets"]);
        assert_eq!(p["record_packets"] + p["lost_packets"], p["packets"]);
        assert_eq!(p["records_lost"], 0);
        assert_eq!(p["records"], recs.len() as u64);
        assert_eq!(p["flows_active"], 0);
        assert_eq!(p["flows_new"], p["flows_expired"] + p["flows_evicted"]);
    }
    assert!(err.contains("ended (packet queue ended)"), "{err}");
}

/// Pushes every frame of `sim` round-robin into the packet queues (waiting
/// when full); returns the frame count.
fn feed(tx: &mut [shmq::Producer], sim: &str, child: &mut Child) -> u64 {
    let spec: SimSpec = sim.parse().unwrap();
    let mut gen = SimTraffic::new(&spec);
    let mut frame = vec![0u8; 2048];
    let mut n = 0u64;
    while let Some((ts, len)) = gen.next_frame(&mut frame) {
        let q = (n % tx.len() as u64) as usize;
        let meta = PacketMeta { ts_ns: ts, wire_len: len as u32, ..Default::default() };
        let waited = Instant::now();
        while tx[q].push_with(|slot| write_packet(slot, meta, &frame[..len])).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("cj-detector exited early: {st:?}\n{}", stderr_of(child));
            }
            assert!(waited.elapsed() < Duration::from_secs(60), "packet queue {q} never drained");
            std::thread::sleep(Duration::from_micros(100));
        }
        n += 1;
    }
    for t in tx.iter_mut() {
        t.publish();
    }
    n
}

fn producers(dir: &Path, n: u32, spec: QueueSpec) -> Vec<shmq::Producer> {
    (0..n)
        .map(|q| QueueFile::open_or_create(&naming::packet_queue_path(dir, 0, q), spec).unwrap().into_producer())
        .collect()
}

/// Nobody drains the record queue: the worker waits (backpressure); on
/// SIGTERM it gives up after 5 s, counts what it could not queue in
/// `records_lost`/`lost_packets`, says so in one line, and still exits 0.
#[test]
fn stopping_with_an_undrained_record_queue_counts_the_loss() {
    let shm = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let env =
        env_for(shm.path(), &[("CJ_CORECOUNT", "1"), ("CJ_QUEUE_SLOTS", "8192"), ("CJ_RECORD_QUEUE_SLOTS", "16")]);
    let cfg = StationConfig::load_from(&env, None).unwrap();
    let dir = cfg.cluster_dir();
    let pkt_spec = QueueSpec { slot_size: cfg.slot_size, capacity: cfg.queue_slots };
    let mut tx = producers(&dir, 1, pkt_spec);
    let mut child = start(&env);
    // 500 flows each of 4 frames, 2 of them TCP FIN: the table stays small but
    // the ForcedEnd flush at the stop needs far more than 16 record slots.
    let n = feed(&mut tx, "flows=500,packets=2000,seed=3", &mut child);
    let stats = naming::worker_stats_path(&dir, 0);
    wait_for("all packets read", Duration::from_secs(20), || stats.exists() && page(&stats)["packets"] == n);
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let took = t0.elapsed();
    let err = stderr_of(&mut child);
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(took >= Duration::from_secs(5), "gave up after {took:?}");
    let p = page(&stats);
    assert_eq!(p["ended"], 1);
    assert_eq!(p["packets"], n);
    assert!(p["records_lost"] > 0, "{p:?}");
    assert_eq!(p["record_packets"] + p["lost_packets"], n, "{p:?}");
    assert_eq!(err.lines().filter(|l| l.contains("app is not draining rec-0")).count(), 1, "{err}");
    // What was queued is really there: exactly `records` records carrying
    // `record_packets` packets.
    let (_, st) = QueueFile::read_stats(&naming::record_queue_path(&dir, 0)).unwrap();
    assert!(!st.closed, "a signal leaves the record queue open");
    let rec_spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: 16 };
    let got = drain_until(vec![naming::record_queue_path(&dir, 0)], rec_spec, QueueState::Empty).remove(0);
    assert_eq!(got.len() as u64, p["records"]);
    assert_eq!(got.iter().map(FlowRecord::packets).sum::<u64>(), p["record_packets"]);
    let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
    let dense: Vec<u64> = (0..got.len() as u64).collect();
    assert_eq!(seqs, dense, "records queued are records 0.. in order, none overwritten");
}

/// A quiet live link: after the packet queue has been empty for a second the
/// flow clock follows wall time, so idle flows end without any new packet.
#[test]
fn idle_flows_of_a_quiet_link_expire_by_wall_time() {
    let shm = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let env =
        env_for(shm.path(), &[("CJ_CORECOUNT", "1"), ("CJ_FLOW_IDLE_TIMEOUT", "1"), ("CJ_FLOW_ACTIVE_TIMEOUT", "60")]);
    let cfg = StationConfig::load_from(&env, None).unwrap();
    let dir = cfg.cluster_dir();
    let pkt_spec = QueueSpec { slot_size: cfg.slot_size, capacity: cfg.queue_slots };
    let rec_spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: cfg.record_queue_slots };
    let mut tx = producers(&dir, 1, pkt_spec);
    let mut rx = QueueFile::open_or_create(&naming::record_queue_path(&dir, 0), rec_spec).unwrap().into_consumer();
    let mut child = start(&env);
    let n = feed(&mut tx, "flows=20,packets=100,seed=5", &mut child);
    // The queue stays open: only the clock can end these flows.
    let mut got: Vec<FlowRecord> = Vec::new();
    let t0 = Instant::now();
    while got.iter().map(FlowRecord::packets).sum::<u64>() < n {
        assert!(t0.elapsed() < Duration::from_secs(60), "flows never expired: {got:?}");
        while let Some(r) = rx.pop_with(FlowRecord::read_from) {
            got.push(r.unwrap());
        }
        rx.release();
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(t0.elapsed() >= Duration::from_millis(900), "expired before the clock could move");
    assert!(
        got.iter().all(|r| matches!(r.end(), Some(EndReason::IdleTimeout) | Some(EndReason::EndOfFlow))),
        "{got:?}"
    );
    assert_eq!(rx.state(), QueueState::Empty);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success());
    let p = page(&naming::worker_stats_path(&dir, 0));
    assert_eq!((p["packets"], p["record_packets"], p["flows_active"]), (n, n, 0));
}

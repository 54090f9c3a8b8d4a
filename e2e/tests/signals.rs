//! Stop signals against the generator's ground truth. `timeout DUR cmd`
//! (coreutils, without `--foreground`) sends SIGTERM to its child and then
//! again to the child's process group, so the child gets two SIGTERMs
//! microseconds apart; a second signal used to exit the detector (130) and
//! the app (1) at once: the detector's flows and the app's files were lost.
//! Now a repeat within a second of the first is the same stop request:
//!
//! - detector and app each sent SIGTERM twice back to back (the second as
//!   soon as the process has taken the first, so they are two deliveries),
//!   each started again: every process exits 0, the stopped app wrote its
//!   files (nothing in them above the truth), and at the end flows.csv
//!   equals the truth with no `worker_crash_lost`;
//! - the same with detector and app run under `timeout -s TERM` (and the
//!   balancer before them, so the timeouts fire mid-stream): the way
//!   operators run them; the kernel merges `timeout`'s two SIGTERMs when the
//!   second comes before the process took the first (standard signals do not
//!   queue), so this one may pass with the old rule too, the first never;
//! - a repeat more than a second after the first still exits at once: a
//!   detector flushing into a record queue a paced export drains slowly
//!   exits 130, then the app draining that queue exits 1 without its files
//!   (each stop would last 10 s or more longer: what a second signal is for).
//!
//! No pass or fail hangs on a duration shorter than several seconds: the
//! back-to-back signals are sent as fast as the test can, the late one 3 s
//! after the first to stops that last over 10 s (the app) and 80 s (the detector).

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{diff_rows, read_flows_csv, read_json, wait_all, Cluster};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use sim::SimSpec;

#[path = "support/truth.rs"]
mod sim_truth;
use sim_truth::truth_rows;

/// How long one wait of these tests may take.
const WAIT: Duration = Duration::from_secs(60);

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start station binary")
}

/// `name` on `cluster` under `timeout --preserve-status -s TERM SECS` (its
/// exit status is then the station binary's).
fn under_timeout(cluster: &Cluster, name: &str, secs: u32, args: &[&std::ffi::OsStr]) -> Command {
    let inner = cluster.command(name);
    let mut cmd = Command::new("timeout");
    cmd.args(["--preserve-status", "-s", "TERM", &secs.to_string()]).arg(inner.get_program()).args(args);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd
}

/// A paced stream (`sim`: 30,000 frames at 2,000 a second, 15 s), its truth, and a
/// cluster on one worker whose packet queue holds all of it (nothing is
/// dropped while no detector runs).
fn sim_cluster(sim: &str) -> (sim::Truth, Cluster) {
    let spec: SimSpec = sim.parse().expect("spec");
    let iface = format!("sim:{sim}");
    let cluster = Cluster::new(&[
        ("CJ_IFACE", iface.as_str()),
        ("ZBALANCE_HASH_MODE", "1"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_QUEUE_SLOTS", "32768"),
    ]);
    (sim::truth(&spec), cluster)
}

/// Counter `name` of worker 0's stats page (0 while there is none).
fn worker_counter(cluster: &Cluster, name: &str) -> u64 {
    let page = station::naming::set_worker_stats_path(&cluster.cluster_dir(), 0, 0);
    shmq::CounterPage::read(&page)
        .ok()
        .and_then(|p| p.into_iter().find(|(n, _)| n == name).map(|(_, v)| v))
        .unwrap_or(0)
}

/// Waits until worker 0 has read `n` packets (its counts go on across restarts).
fn wait_packets(cluster: &Cluster, n: u64) {
    let deadline = Instant::now() + WAIT;
    while worker_counter(cluster, "packets") < n {
        assert!(Instant::now() < deadline, "the detector read no {n} packets within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `sig` is pending for the process `pid` as a whole (`ShdPnd` in
/// /proc/PID/status): sent and not yet taken by any of its threads.
fn pending(pid: Pid, sig: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap_or(0);
    mask & (1 << (sig as i32 - 1)) != 0
}

/// SIGTERM to `child` twice, the second as soon as the process has taken the
/// first: two deliveries of one stop request, as `timeout` makes them (two
/// signals sent before the first is taken would be one: signals do not queue).
fn sigterm_twice(child: &Child) {
    let pid = Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("first SIGTERM");
    let deadline = Instant::now() + WAIT;
    while pending(pid, Signal::SIGTERM) {
        assert!(Instant::now() < deadline, "the process did not take SIGTERM within {WAIT:?}");
        std::thread::yield_now();
    }
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("second SIGTERM");
}

/// Waits for `child` to exit (killing it after [`WAIT`]) and collects it.
fn wait_exit(what: &str, mut child: Child) -> Output {
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect");
            panic!("{what} did not exit within {WAIT:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect")
}

/// What the app stopped mid-run left in `out`: its summary.json (checked:
/// not complete, identity not broken) and flows.csv (no row above the
/// truth), or why it is not there.
fn stopped_app_files(out: &Path, truth: &sim::Truth) -> Result<(), String> {
    let summary_path = out.join("summary.json");
    if !summary_path.exists() {
        return Err("no summary.json".into());
    }
    let summary = read_json(&summary_path);
    if summary["complete"] != false {
        return Err(format!("stopped mid-run, yet complete: the signal came after the end?\n{summary:#}"));
    }
    if summary["identity"]["status"] == "broken" {
        return Err(format!("identity broken:\n{summary:#}"));
    }
    let flows = out.join("flows.csv");
    if !flows.exists() {
        return Err("no flows.csv".into());
    }
    let want = truth_rows(truth);
    for (k, g) in &read_flows_csv(&flows) {
        let w = want.get(k).ok_or_else(|| format!("a row the truth does not have: {k:?}"))?;
        if g.0 > w.0 || g.1 > w.1 {
            return Err(format!("row {k:?} counts more than the truth: {g:?} > {w:?}"));
        }
    }
    Ok(())
}

/// The end of a run whose detector and app were each stopped once and
/// started again: flows.csv equals the truth, the identity holds with no
/// `worker_crash_lost`; then the stopped ones exited 0 and the stopped app
/// wrote its files.
fn check_run(
    truth: &sim::Truth,
    out: &Path,
    outs: &[Output],
    first_detector: &Output,
    first_app: &Output,
    first_app_files: Result<(), String>,
) {
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let all = format!(
        "--- balancer\n{}\n--- first detector ({})\n{}\n--- second detector\n{}\n--- first app ({})\n{}\n--- second app\n{}",
        err(&outs[0]),
        first_detector.status,
        err(first_detector),
        err(&outs[1]),
        first_app.status,
        err(first_app),
        err(&outs[2])
    );
    for o in outs {
        assert!(o.status.success(), "a process failed:\n{all}");
    }
    // The truth first: a detector that exited without its flush lost the flows of its table.
    if let Some(d) = diff_rows(&read_flows_csv(&out.join("flows.csv")), &truth_rows(truth)) {
        panic!("flows.csv differs from the truth:\n{d}\n{all}");
    }
    let summary = read_json(&out.join("summary.json"));
    let terms = &summary["identity"]["terms"];
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
    assert_eq!(terms["received"].as_u64(), Some(truth.total_frames), "{summary:#}\n{all}");
    assert_eq!(terms["worker_crash_lost"].as_u64(), Some(0), "{summary:#}\n{all}");
    assert!(first_detector.status.success(), "the first detector, sent SIGTERM twice, did not stop cleanly:\n{all}");
    assert!(first_app.status.success(), "the first app, sent SIGTERM twice, did not stop cleanly:\n{all}");
    if let Err(e) = first_app_files {
        panic!("the first app, sent SIGTERM twice, left no good files: {e}\n{all}");
    }
    assert!(err(&outs[2]).contains("continuing from"), "the second cj-app did not continue the checkpoint:\n{all}");
}

#[test]
fn a_detector_and_an_app_each_sent_sigterm_twice_back_to_back_stop_cleanly_and_lose_nothing() {
    let (truth, cluster) = sim_cluster("flows=200,packets=30000,sizes=64:50/1000:50,v6=20,vlan=10,seed=37,rate=2000");
    let out = tempfile::tempdir().expect("out dir");
    let app = |cluster: &Cluster| {
        let mut cmd = cluster.command("cj-app");
        cmd.arg("--out").arg(out.path());
        spawn(cmd)
    };
    let first_detector = spawn(cluster.command("cj-detector"));
    let first_app = app(&cluster);
    let balancer = spawn(cluster.command("cj-balancer"));

    wait_packets(&cluster, 3000);
    sigterm_twice(&first_detector);
    let first_detector = wait_exit("the first detector", first_detector);
    let detector = spawn(cluster.command("cj-detector"));

    wait_packets(&cluster, 12_000);
    sigterm_twice(&first_app);
    let first_app = wait_exit("the first app", first_app);
    let first_app_files = stopped_app_files(out.path(), &truth);
    let app = app(&cluster);

    let outs = wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], WAIT * 3);
    check_run(&truth, out.path(), &outs, &first_detector, &first_app, first_app_files);
}

#[test]
fn a_detector_and_an_app_run_under_timeout_stop_cleanly_and_lose_nothing() {
    let (truth, cluster) = sim_cluster("flows=200,packets=30000,sizes=64:50/1000:50,v6=20,vlan=10,seed=38,rate=2000");
    let out = tempfile::tempdir().expect("out dir");
    let out_args = [std::ffi::OsStr::new("--out"), out.path().as_os_str()];
    // The balancer first (an offline source fills the queues until a worker
    // reads them): the timeouts, counted from each process's start, fire
    // while the 15-second stream goes on.
    let balancer = spawn(cluster.command("cj-balancer"));
    let first_detector = spawn(under_timeout(&cluster, "cj-detector", 3, &[]));
    let first_app = spawn(under_timeout(&cluster, "cj-app", 6, &out_args));

    let first_detector = wait_exit("the first detector (timeout 3)", first_detector);
    let detector = spawn(cluster.command("cj-detector"));
    let first_app = wait_exit("the first app (timeout 6)", first_app);
    let first_app_files = stopped_app_files(out.path(), &truth);
    let mut cmd = cluster.command("cj-app");
    cmd.args(out_args);
    let app = spawn(cmd);

    let outs = wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], WAIT * 3);
    check_run(&truth, out.path(), &outs, &first_detector, &first_app, first_app_files);
}

/// Kills (SIGKILL) and reaps what still runs when dropped.
struct Reap(Vec<Child>);

impl Drop for Reap {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_signal_more_than_a_second_after_the_first_exits_the_detector_and_the_app_at_once() {
    // 20,000 flows, records only at the stop (timeouts of 30 s and more), a
    // 1,024-slot record queue and an export paced at 100 data records a
    // second that the app waits for: the detector's flush of 10,000 flows or
    // more takes over 80 s, and the app's drain of a full record queue over
    // 10 s. A collector socket that nobody reads takes the export.
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket for the export");
    let export = format!("ipfix://{}", collector.local_addr().expect("its address"));
    let cluster = Cluster::new(&[
        ("CJ_IFACE", "sim:flows=20000,packets=400000,seed=39,rate=20000"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_RECORD_QUEUE_SLOTS", "1024"),
        ("CJ_EXPORT", &export),
        ("CJ_EXPORT_RATE", "100"),
    ]);
    let out = tempfile::tempdir().expect("out dir");
    let mut app_cmd = cluster.command("cj-app");
    app_cmd.arg("--out").arg(out.path());
    let mut procs =
        Reap(vec![spawn(cluster.command("cj-detector")), spawn(app_cmd), spawn(cluster.command("cj-balancer"))]);
    let deadline = Instant::now() + WAIT;
    while worker_counter(&cluster, "flows_active") < 10_000 {
        assert!(Instant::now() < deadline, "the detector held no 10,000 flows within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }

    for (name, i, status) in [("cj-detector", 0, 130), ("cj-app", 1, 1)] {
        let pid = Pid::from_raw(procs.0[i].id() as i32);
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("first SIGTERM");
        std::thread::sleep(Duration::from_secs(3));
        nix::sys::signal::kill(pid, Signal::SIGTERM).expect("second SIGTERM");
        let deadline = Instant::now() + WAIT;
        let got = loop {
            if let Some(s) = procs.0[i].try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "{name} did not exit within {WAIT:?} of its second SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        std::io::Read::read_to_string(procs.0[i].stderr.as_mut().expect("stderr"), &mut log).expect("read stderr");
        assert_eq!(got.code(), Some(status), "{name}: a second SIGTERM 3 s after the first:\n{log}");
        let said = log.lines().find(|l| l.contains("exiting at once"));
        let said = said.unwrap_or_else(|| panic!("{name} said nothing of its forced exit:\n{log}"));
        eprintln!("{said}");
    }
    // The app exited before writing anything: its files are not there.
    for file in ["flows.csv", "summary.json"] {
        assert!(!out.path().join(file).exists(), "the app forced out wrote {file}");
    }
    drop(procs);
}

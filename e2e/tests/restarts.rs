//! Restarts against the generator's ground truth: a cj-app killed with SIGKILL
//! mid-stream and started again continues from its checkpoint, so at the end
//! flows.csv equals the truth row for row and the identity holds: nothing
//! lost, nothing counted twice. A detector killed mid-stream loses only the
//! flows of its table, named exactly in the identity. Before each kill the
//! process's `health` says healthy, after it not healthy (its heartbeat stops).
//! A balancer reading a capture file, killed (SIGKILL) or stopped (SIGTERM)
//! mid-file, resumes after what each of its queues holds, in round-robin and
//! IP-hash mode: flows.csv equals the truth with no named term (restarted
//! with another hash mode it refuses in one line); one whose loop stops making
//! progress (waiting on a full queue) with `CJ_WATCHDOG_SEC` set is ended by
//! its own watchdog (exit 70) and, started again, resumes exactly. A second
//! balancer, detector or app on queues another one holds is refused in one
//! line (exit 3). All three
//! killed at once mid-stream and restarted: the truth less exactly the named
//! `worker_crash_lost`. A second run on the queues of a finished one, its
//! detector started well before its balancer, equals the truth; a cj-app
//! started on a finished run's directory and stopped before any new run
//! leaves that run's files byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{diff_rows, read_flows_csv, read_json, wait_all, Cluster};
use nix::sys::signal::Signal;
use sim::SimSpec;

#[path = "support/truth.rs"]
mod sim_truth;
use sim_truth::truth_rows;

/// 20,000 frames paced at 5,000 per second (four seconds of stream), 200 flows
/// that live through several refresh intervals.
const SIM: &str = "flows=200,packets=20000,sizes=64:50/1000:50,v6=20,vlan=10,seed=31,rate=5000";

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start station binary")
}

/// Polls `NAME health` until its exit status says `healthy` (a deadline of 30 s).
fn wait_health(cluster: &Cluster, name: &str, healthy: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = cluster.command(name).arg("health").output().expect("run health");
        if out.status.success() == healthy {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} health still says {}after 30 s: {}",
            if healthy { "not healthy " } else { "healthy " },
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn app(cluster: &Cluster, out: &Path) -> Child {
    let mut cmd = cluster.command("cj-app");
    cmd.arg("--out").arg(out);
    spawn(cmd)
}

/// [`SIM`]'s truth and a cluster running it on one worker in hash mode 1, with
/// records every second (CJ_REFRESH=1) and packet queues that hold the whole
/// stream (nothing is dropped while a process is down), plus `vars`.
fn sim_cluster(vars: &[(&str, &str)]) -> (sim::Truth, Cluster) {
    let spec: SimSpec = SIM.parse().expect("spec");
    let iface = format!("sim:{SIM}");
    let mut all = vec![
        ("CJ_IFACE", iface.as_str()),
        ("ZBALANCE_HASH_MODE", "1"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_REFRESH", "1"),
        ("CJ_QUEUE_SLOTS", "32768"),
    ];
    all.extend_from_slice(vars);
    (sim::truth(&spec), Cluster::new(&all))
}

#[test]
fn an_app_killed_mid_stream_continues_from_its_checkpoint_and_matches_the_truth() {
    // A 64-slot record queue: the app checkpoints every 32 records, so it is
    // killed between checkpoints, with records read and not yet saved, as a
    // crash would find it.
    let (truth, cluster) = sim_cluster(&[("CJ_RECORD_QUEUE_SLOTS", "64")]);
    let out = tempfile::tempdir().expect("out dir");
    let checkpoint = out.path().join("checkpoint");
    let detector = spawn(cluster.command("cj-detector"));
    let mut first = app(&cluster, out.path());
    let balancer = spawn(cluster.command("cj-balancer"));

    // Kill it once it has released record-queue slots: they are in its
    // checkpoint and nowhere else (the queue will not give them again).
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.records_released() == 0 {
        assert!(Instant::now() < deadline, "cj-app released no record-queue slot within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(checkpoint.exists(), "slots were released with no checkpoint written");
    wait_health(&cluster, "cj-app", true);
    first.kill().expect("SIGKILL the first cj-app");
    let first = first.wait_with_output().expect("first cj-app");
    // Liveness by heartbeat: the killed app left its page, and health says it is gone.
    wait_health(&cluster, "cj-app", false);
    assert!(!first.status.success(), "the first cj-app was to be killed, it ended by itself");

    let second = app(&cluster, out.path());
    let outs = wait_all(
        vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", second)],
        Duration::from_secs(180),
    );
    let stderr = |i: usize| String::from_utf8_lossy(&outs[i].stderr).into_owned();
    let all = format!(
        "--- balancer\n{}\n--- detector\n{}\n--- first app\n{}\n--- second app\n{}",
        stderr(0),
        stderr(1),
        String::from_utf8_lossy(&first.stderr),
        stderr(2)
    );
    for o in &outs {
        assert!(o.status.success(), "a process failed:\n{all}");
    }
    let got = read_flows_csv(&out.path().join("flows.csv"));
    if let Some(d) = diff_rows(&got, &truth_rows(&truth)) {
        panic!("after the app's restart flows.csv differs from the truth:\n{d}\n{all}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
    assert_eq!(summary["identity"]["terms"]["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    assert_eq!(summary["identity"]["terms"]["queue_dropped"].as_u64(), Some(0), "{summary:#}");
    // And it was the checkpoint that made it so (not a run the kill missed).
    assert!(stderr(2).contains("continuing from"), "the second cj-app did not continue the checkpoint:\n{all}");
    // A run that read every queue to its end leaves no checkpoint: the next one starts from zero.
    assert!(!checkpoint.exists(), "the checkpoint outlived a complete run");
}

/// Records the detector has published into set 0's record queue 0 so far.
fn records_published(cluster: &Cluster) -> u64 {
    let rec = station::naming::set_record_queue_path(&cluster.cluster_dir(), 0, 0);
    shmq::QueueFile::read_stats(&rec).map_or(0, |(_, s)| s.enqueued)
}

#[test]
fn an_app_started_after_a_reboot_sets_the_last_runs_files_aside_and_counts_the_new_run_exactly() {
    let (truth, cluster) = sim_cluster(&[("CJ_RECORD_QUEUE_SLOTS", "64")]);
    let out = tempfile::tempdir().expect("out dir");
    let checkpoint = out.path().join("checkpoint");
    // The run before the reboot, cut off by it (SIGKILL) once the app has a checkpoint.
    let mut detector = spawn(cluster.command("cj-detector"));
    let mut first = app(&cluster, out.path());
    let mut balancer = spawn(cluster.command("cj-balancer"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.records_released() == 0 {
        assert!(Instant::now() < deadline, "cj-app released no record-queue slot within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    for child in [&mut balancer, &mut detector, &mut first] {
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    let old_checkpoint = std::fs::read(&checkpoint).expect("the killed app left its checkpoint");
    // The reboot: the queue directory under CJ_SHM_DIR is gone, the output directory stays.
    std::fs::remove_dir_all(cluster.cluster_dir()).expect("remove the queue directory");

    // The new run: its detector fills most of the (64-slot) record queue before the app
    // starts, so the new queue has had about as many records as the checkpoint read, or
    // more (the first app was killed after its first checkpoint, at 32 to 63).
    let mut detector = spawn(cluster.command("cj-detector"));
    let mut balancer = spawn(cluster.command("cj-balancer"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while records_published(&cluster) < 48 {
        if Instant::now() >= deadline {
            let _ = (detector.kill(), balancer.kill());
            let logs = [detector.wait_with_output(), balancer.wait_with_output()]
                .map(|o| o.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default());
            panic!("the new run's detector published fewer than 48 records within 60 s:\n{}", logs.join("\n---\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = app(&cluster, out.path());
    let outs = wait_all(
        vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", second)],
        Duration::from_secs(180),
    );
    let all: String = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned() + "\n---\n").collect();
    for o in &outs {
        assert!(o.status.success(), "a process of the new run failed:\n{all}");
    }
    // The new run alone, exactly: nothing of the old run's totals, nothing of the new run skipped.
    let got = read_flows_csv(&out.path().join("flows.csv"));
    if let Some(d) = diff_rows(&got, &truth_rows(&truth)) {
        panic!("after the reboot flows.csv differs from the new run's truth:\n{d}\n{all}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
    assert_eq!(summary["identity"]["terms"]["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    // And the last run's checkpoint is kept, byte for byte, in a previous-* directory.
    let kept: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("read the output directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("previous-")))
        .collect();
    assert_eq!(kept.len(), 1, "one previous-* directory: {kept:?}\n{all}");
    assert_eq!(std::fs::read(kept[0].join("checkpoint")).expect("the kept checkpoint"), old_checkpoint);
}

#[test]
fn a_detector_killed_mid_stream_loses_only_its_flows_and_the_identity_names_them() {
    // Nothing is dropped while no detector runs: the only loss is the killed worker's table.
    let (truth, cluster) = sim_cluster(&[]);
    let out = tempfile::tempdir().expect("out dir");
    let mut first = spawn(cluster.command("cj-detector"));
    let app = app(&cluster, out.path());
    let balancer = spawn(cluster.command("cj-balancer"));

    let page = station::naming::set_worker_stats_path(&cluster.cluster_dir(), 0, 0);
    let packets = || {
        shmq::CounterPage::read(&page)
            .ok()
            .and_then(|p| p.into_iter().find(|(n, _)| n == "packets").map(|(_, v)| v))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while packets() < 2000 {
        assert!(Instant::now() < deadline, "the detector read no 2,000 packets within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_health(&cluster, "cj-detector", true);
    first.kill().expect("SIGKILL the first cj-detector");
    let first = first.wait_with_output().expect("first cj-detector");
    wait_health(&cluster, "cj-detector", false);

    let second = spawn(cluster.command("cj-detector"));
    let outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", second), ("cj-app", app)], Duration::from_secs(180));
    let stderr = |i: usize| String::from_utf8_lossy(&outs[i].stderr).into_owned();
    let all = format!(
        "--- balancer\n{}\n--- first detector\n{}\n--- second detector\n{}\n--- app\n{}",
        stderr(0),
        String::from_utf8_lossy(&first.stderr),
        stderr(1),
        stderr(2)
    );
    for o in &outs {
        assert!(o.status.success(), "a process failed:\n{all}");
    }

    let summary = read_json(&out.path().join("summary.json"));
    let terms = &summary["identity"]["terms"];
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
    assert_eq!(terms["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    assert_eq!(terms["queue_dropped"].as_u64(), Some(0), "{summary:#}");
    let crash_lost = terms["worker_crash_lost"].as_u64().expect("worker_crash_lost term");
    assert!(crash_lost > 0, "the killed worker held live flows, yet no loss is named:\n{summary:#}\n{all}");
    // Against the truth: no row counts a packet twice, and what is missing is
    // exactly the named loss.
    let got = read_flows_csv(&out.path().join("flows.csv"));
    let want = truth_rows(&truth);
    for (k, g) in &got {
        let w = want.get(k).unwrap_or_else(|| panic!("a row the truth does not have: {k:?}"));
        assert!(g.0 <= w.0 && g.1 <= w.1, "row {k:?} counts more than the truth: {g:?} > {w:?}");
    }
    let sum = |m: &std::collections::BTreeMap<_, (u64, u64)>| m.values().map(|v| v.0).sum::<u64>();
    assert_eq!(sum(&got) + crash_lost, sum(&want), "flows.csv + worker_crash_lost vs the truth's IP packets");
}

/// Sends `signal` to `child` and collects it.
fn signal(child: Child, signal: Signal) -> std::process::Output {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).expect("signal a station binary");
    child.wait_with_output().expect("collect a signalled station binary")
}

/// Counters of the packet queues of set 0 in `dir`: (enqueued, capacity) each.
fn packet_queues(dir: &Path) -> Vec<(u64, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_name().to_str()?.starts_with("pkt-0-").then(|| e.path())
        })
        .filter_map(|p| shmq::QueueFile::read_stats(&p).ok().map(|(_, s)| (s.enqueued, s.capacity)))
        .collect()
}

#[test]
fn an_offline_balancer_killed_or_stopped_mid_file_resumes_after_what_its_queues_hold() {
    // 20,000 frames over two 1,024-slot queues: the balancer, started alone,
    // fills one queue and waits for a consumer there, with frames of its
    // current batch pushed and not yet published in the other: the kill lands
    // mid-file, and the two queues hold different parts of the stream.
    let spec: SimSpec = "flows=300,packets=20000,sizes=64:50/1000:50,v6=20,vlan=10,seed=41".parse().expect("spec");
    let dir = tempfile::tempdir().expect("capture dir");
    let file = dir.path().join("capture.pcap");
    let truth = sim::write_pcap(&spec, &file, false).expect("write capture");
    let iface = format!("pcap:{}", file.display());
    for mode in ["0", "1"] {
        for sig in [Signal::SIGKILL, Signal::SIGTERM] {
            let what = format!("ZBALANCE_HASH_MODE={mode}, {sig}");
            let cluster = Cluster::new(&[
                ("CJ_IFACE", iface.as_str()),
                ("ZBALANCE_HASH_MODE", mode),
                ("CJ_CORECOUNT", "2"),
                ("CJ_QUEUE_SLOTS", "1024"),
            ]);
            let out = tempfile::tempdir().expect("out dir");
            let first = spawn(cluster.command("cj-balancer"));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let queues = packet_queues(&cluster.cluster_dir());
                if queues.iter().any(|(enqueued, capacity)| enqueued >= capacity) {
                    break;
                }
                assert!(Instant::now() < deadline, "{what}: no packet queue filled within 60 s: {queues:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            let first = signal(first, sig);
            let held: u64 = packet_queues(&cluster.cluster_dir()).iter().map(|q| q.0).sum();
            assert!(held < truth.total_frames, "{what}: the first balancer published the whole file");

            // Another configuration would mix two streams in these queues: one line, exit 2, nothing sent.
            let other = if mode == "0" { "1" } else { "0" };
            let refused = cluster.command("cj-balancer").env("ZBALANCE_HASH_MODE", other).output().expect("run");
            let line = String::from_utf8_lossy(&refused.stderr);
            assert_eq!(refused.status.code(), Some(2), "{what}: another hash mode on restart: {line}");
            assert!(line.contains("cannot resume") && line.contains("ZBALANCE_HASH_MODE"), "{line}");
            assert_eq!(line.lines().count(), 1, "{line}");
            let after: u64 = packet_queues(&cluster.cluster_dir()).iter().map(|q| q.0).sum();
            assert_eq!(after, held, "{what}: the refused balancer sent frames");

            let detector = spawn(cluster.command("cj-detector"));
            let app = app(&cluster, out.path());
            let second = spawn(cluster.command("cj-balancer"));
            let outs = wait_all(
                vec![("cj-balancer", second), ("cj-detector", detector), ("cj-app", app)],
                Duration::from_secs(180),
            );
            let stderr = |i: usize| String::from_utf8_lossy(&outs[i].stderr).into_owned();
            let all = format!(
                "{what}\n--- first balancer\n{}\n--- second balancer\n{}\n--- detector\n{}\n--- app\n{}",
                String::from_utf8_lossy(&first.stderr),
                stderr(0),
                stderr(1),
                stderr(2)
            );
            for o in &outs {
                assert!(o.status.success(), "a process failed:\n{all}");
            }
            assert!(stderr(0).contains("resuming the unfinished stream"), "the second balancer did not resume:\n{all}");
            let got = read_flows_csv(&out.path().join("flows.csv"));
            if let Some(d) = diff_rows(&got, &truth_rows(&truth)) {
                panic!("after the balancer's restart flows.csv differs from the truth:\n{d}\n{all}");
            }
            let summary = read_json(&out.path().join("summary.json"));
            let terms = &summary["identity"]["terms"];
            assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
            assert_eq!(terms["received"].as_u64(), Some(truth.total_frames), "{summary:#}\n{all}");
            assert_eq!(terms["queue_dropped"].as_u64(), Some(0), "{summary:#}\n{all}");
            let enqueued: u64 = packet_queues(&cluster.cluster_dir()).iter().map(|q| q.0).sum();
            assert_eq!(enqueued, truth.total_frames, "{what}: the queues took a frame twice or missed one\n{all}");
        }
    }
}

#[test]
fn a_balancer_whose_loop_makes_no_progress_is_ended_by_its_own_watchdog_and_resumes_exactly() {
    // Outside systemd, CJ_WATCHDOG_SEC ends a process whose loop stopped feeding
    // it (exit 70, for the container's restart policy). A balancer started alone
    // on a file fills its 1,024-slot queue and waits there for a consumer: its
    // loop makes no progress, as a hung one would not.
    let spec: SimSpec = "flows=300,packets=20000,sizes=64:50/1000:50,v6=20,seed=43".parse().expect("spec");
    let dir = tempfile::tempdir().expect("capture dir");
    let file = dir.path().join("capture.pcap");
    let truth = sim::write_pcap(&spec, &file, false).expect("write capture");
    let iface = format!("pcap:{}", file.display());
    let cluster = Cluster::new(&[("CJ_IFACE", iface.as_str()), ("CJ_QUEUE_SLOTS", "1024")]);
    let out = tempfile::tempdir().expect("out dir");
    let mut first = cluster.command("cj-balancer");
    first.env("CJ_WATCHDOG_SEC", "2");
    let first = wait_all(vec![("cj-balancer", spawn(first))], Duration::from_secs(60)).remove(0);
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(station::notify::WATCHDOG_EXIT), "ended by its watchdog: {err}");
    assert!(err.contains("cj-balancer: no progress for 2 s (CJ_WATCHDOG_SEC)"), "{err}");
    let held: u64 = packet_queues(&cluster.cluster_dir()).iter().map(|q| q.0).sum();
    assert!(held > 0 && held < truth.total_frames, "the first balancer stopped mid-file: {held}");
    // Started again (as `restart: on-failure` does) with its consumers: the run equals the truth.
    let detector = spawn(cluster.command("cj-detector"));
    let app = app(&cluster, out.path());
    let second = spawn(cluster.command("cj-balancer"));
    let outs =
        wait_all(vec![("cj-balancer", second), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(180));
    let all: String = outs.iter().map(|o| String::from_utf8_lossy(&o.stderr).into_owned() + "\n---\n").collect();
    assert!(outs.iter().all(|o| o.status.success()), "a process failed:\n{all}");
    assert!(all.contains("resuming the unfinished stream"), "the second balancer did not resume:\n{all}");
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &truth_rows(&truth)) {
        panic!("after the watchdog's exit and a restart flows.csv differs from the truth:\n{d}\n{all}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
    assert_eq!(summary["identity"]["terms"]["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
}

#[test]
fn a_second_balancer_detector_or_app_on_the_same_queues_is_refused_in_one_line() {
    // One producer and one consumer per queue: a second of either corrupted the
    // queue before ("consumer index past producer index", garbage read as packets).
    // A stream paced over 60 s, so that the first three are all running when the seconds come.
    let cluster = Cluster::new(&[("CJ_IFACE", "sim:flows=50,packets=120000,sizes=64:100,seed=47,rate=2000")]);
    let out = tempfile::tempdir().expect("out dir");
    let second_out = tempfile::tempdir().expect("out dir");
    let first =
        [spawn(cluster.command("cj-balancer")), spawn(cluster.command("cj-detector")), app(&cluster, out.path())];
    let page = |name: &str| cluster.cluster_dir().join(name);
    for p in ["stats-balancer", "stats-worker-0", "stats-app"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !page(p).exists() {
            assert!(Instant::now() < deadline, "{p} never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for (name, args) in [
        ("cj-balancer", vec![]),
        ("cj-detector", vec![]),
        ("cj-app", vec!["--out".to_owned(), second_out.path().display().to_string()]),
    ] {
        let o = cluster.command(name).args(&args).output().expect("run a second one");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "a second {name}: {err}");
        assert!(err.contains("two would corrupt it: stop that one first"), "a second {name}: {err}");
        assert_eq!(err.lines().filter(|l| l.contains("corrupt")).count(), 1, "{err}");
    }
    for child in first {
        let _ = signal(child, Signal::SIGKILL);
    }
}

#[test]
fn all_three_killed_mid_stream_and_restarted_lose_only_the_named_worker_flows() {
    let (truth, cluster) = sim_cluster(&[("CJ_RECORD_QUEUE_SLOTS", "64")]);
    let out = tempfile::tempdir().expect("out dir");
    let detector = spawn(cluster.command("cj-detector"));
    let first_app = app(&cluster, out.path());
    let balancer = spawn(cluster.command("cj-balancer"));

    // Mid-stream: the app has released record-queue slots (they are in its
    // checkpoint only) and the worker has read 2,000 packets of 20,000.
    let dir = cluster.cluster_dir();
    let page = station::naming::set_worker_stats_path(&dir, 0, 0);
    let packets = || {
        shmq::CounterPage::read(&page)
            .ok()
            .and_then(|p| p.into_iter().find(|(n, _)| n == "packets").map(|(_, v)| v))
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.records_released() == 0 || packets() < 2000 {
        assert!(Instant::now() < deadline, "no record released and 2,000 packets read within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    for name in ["cj-balancer", "cj-detector", "cj-app"] {
        wait_health(&cluster, name, true);
    }
    let firsts: Vec<std::process::Output> =
        [balancer, detector, first_app].into_iter().map(|c| signal(c, Signal::SIGKILL)).collect();
    let received_then = shmq::CounterPage::read(&station::naming::balancer_stats_path(&dir))
        .expect("balancer page")
        .into_iter()
        .find(|(n, _)| n == "received")
        .map_or(0, |(_, v)| v);
    assert!(received_then < truth.total_frames, "the stream had ended before the kill");
    for name in ["cj-balancer", "cj-detector", "cj-app"] {
        wait_health(&cluster, name, false);
    }

    let detector = spawn(cluster.command("cj-detector"));
    let app = app(&cluster, out.path());
    let balancer = spawn(cluster.command("cj-balancer"));
    let outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(180));
    let stderr = |i: usize| String::from_utf8_lossy(&outs[i].stderr).into_owned();
    let first = |i: usize| String::from_utf8_lossy(&firsts[i].stderr).into_owned();
    let all = format!(
        "--- first balancer\n{}\n--- first detector\n{}\n--- first app\n{}\n--- balancer\n{}\n--- detector\n{}\n--- app\n{}",
        first(0),
        first(1),
        first(2),
        stderr(0),
        stderr(1),
        stderr(2)
    );
    for o in &outs {
        assert!(o.status.success(), "a process failed:\n{all}");
    }
    assert!(stderr(0).contains("resuming the unfinished stream"), "the balancer did not resume:\n{all}");
    assert!(stderr(2).contains("continuing from"), "the app did not continue its checkpoint:\n{all}");

    let summary = read_json(&out.path().join("summary.json"));
    let terms = &summary["identity"]["terms"];
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
    assert_eq!(terms["received"].as_u64(), Some(truth.total_frames), "{summary:#}\n{all}");
    assert_eq!(terms["queue_dropped"].as_u64(), Some(0), "{summary:#}\n{all}");
    let crash_lost = terms["worker_crash_lost"].as_u64().expect("worker_crash_lost term");
    let got = read_flows_csv(&out.path().join("flows.csv"));
    let want = truth_rows(&truth);
    for (k, g) in &got {
        let w = want.get(k).unwrap_or_else(|| panic!("a row the truth does not have: {k:?}\n{all}"));
        assert!(g.0 <= w.0 && g.1 <= w.1, "row {k:?} counts more than the truth: {g:?} > {w:?}\n{all}");
    }
    let sum = |m: &std::collections::BTreeMap<_, (u64, u64)>| m.values().map(|v| v.0).sum::<u64>();
    assert_eq!(sum(&got) + crash_lost, sum(&want), "flows.csv + worker_crash_lost vs the truth's IP packets\n{all}");
}

#[test]
fn an_app_started_again_on_a_finished_run_leaves_its_files_until_a_new_run_comes() {
    // A finished run (every queue closed and drained), then cj-app again on the
    // same output directory, with a refresh every second: it waits for a
    // detector that never comes and is stopped. The first run's files are the
    // truth's and must stay so (before, the refresh and the stop wrote an empty
    // table over them, and the checkpoint saved at the stop made the next
    // cj-app end at once with that empty table).
    let spec: SimSpec = "flows=50,packets=2000,seed=32".parse().expect("spec");
    let truth = sim::truth(&spec);
    let iface = format!("sim:{spec}");
    let cluster = Cluster::new(&[("CJ_IFACE", iface.as_str()), ("CJ_CORECOUNT", "1"), ("CJ_REFRESH", "1")]);
    let out = tempfile::tempdir().expect("out dir");
    e2e::run_pipeline(&cluster, out.path()).assert_success();
    let flows = out.path().join("flows.csv");
    if let Some(d) = diff_rows(&read_flows_csv(&flows), &truth_rows(&truth)) {
        panic!("the first run's flows.csv differs from the truth:\n{d}");
    }
    let files =
        ["flows.csv", "summary.json"].map(|f| (f, std::fs::read(out.path().join(f)).expect("first run's file")));

    let mut again = app(&cluster, out.path());
    let lines = e2e::stderr_lines(&mut again);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.lock().expect("lines").iter().any(|l| l.contains("closed and drained by an earlier run")) {
        assert!(Instant::now() < deadline, "cj-app did not say within 30 s that it waits for a new run");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Three refresh intervals waiting.
    std::thread::sleep(Duration::from_millis(3500));
    let stopped = signal(again, Signal::SIGTERM);
    let said = lines.lock().expect("lines").join("\n");
    assert!(stopped.status.success(), "cj-app stopped while waiting: {:?}\n{said}", stopped.status);
    for (name, before) in &files {
        let now = std::fs::read(out.path().join(name)).expect("file after the waiting cj-app");
        assert!(
            &now == before,
            "{name} was rewritten by a cj-app that read nothing:\n{}\n{said}",
            String::from_utf8_lossy(&now)
        );
    }
    assert!(!out.path().join("checkpoint").exists(), "a cj-app that read nothing left a checkpoint:\n{said}");

    // The next run on the same queues and directory is a whole run of its own.
    e2e::run_pipeline(&cluster, out.path()).assert_success();
    if let Some(d) = diff_rows(&read_flows_csv(&flows), &truth_rows(&truth)) {
        panic!("the run after the waiting cj-app differs from the truth:\n{d}");
    }
}

#[test]
fn a_run_on_the_queues_of_a_finished_one_waits_for_its_balancer_and_matches_the_truth() {
    // The detector starts before the balancer (the units' and compose's
    // order). On the packet queue a finished run left closed and drained it
    // ended at once, and the whole second run was lost (identity broken).
    let spec: SimSpec = "flows=50,packets=2000,seed=33".parse().expect("spec");
    let truth = sim::truth(&spec);
    let iface = format!("sim:{spec}");
    let cluster = Cluster::new(&[("CJ_IFACE", iface.as_str()), ("CJ_CORECOUNT", "1")]);
    let first = tempfile::tempdir().expect("out dir");
    e2e::run_pipeline(&cluster, first.path()).assert_success();

    let queue = cluster.cluster_dir().join("pkt-0-0");
    let attaches = || shmq::QueueFile::read_stats(&queue).expect("packet queue stats").1.consumer_attaches;
    let before = attaches();
    let out = tempfile::tempdir().expect("out dir");
    let detector = spawn(cluster.command("cj-detector"));
    let second = app(&cluster, out.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while attaches() == before {
        assert!(Instant::now() < deadline, "the second detector did not attach to its packet queue within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Time for a detector that takes the last run's close for its own to end.
    std::thread::sleep(Duration::from_millis(500));
    let balancer = spawn(cluster.command("cj-balancer"));
    let outs = wait_all(
        vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", second)],
        Duration::from_secs(180),
    );
    let all: String = outs.iter().map(|o| format!("{}\n", String::from_utf8_lossy(&o.stderr))).collect();
    for o in &outs {
        assert!(o.status.success(), "a process of the second run failed:\n{all}");
    }
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &truth_rows(&truth)) {
        panic!("the second run's flows.csv differs from the truth:\n{d}\n{all}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{all}");
}

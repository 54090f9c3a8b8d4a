//! Live capture (AF_PACKET TPACKET_V3) end to end on test hosts the tests
//! build themselves: a network namespace per test and a veth pair, the host end
//! captured by the station (cj-balancer with `CJ_IFACE=<host veth>`, cj-detector,
//! cj-app), the peer end inside the namespace, where `tcpreplay` replays a
//! generated capture whose ground truth is known.
//!
//! Checked:
//! - one veth at a bounded rate: nothing lost (the peer's kernel tx counter,
//!   the balancer's `received` and the generator agree), flows.csv equals the
//!   truth row for row, the balancer's wire bytes equal the truth's frame bytes
//!   (so the VLAN tags the kernel strips were put back, QinQ included), and the
//!   identity's terms add up;
//! - two veths in one `CJ_IFACE` list, replayed at once: totals exact;
//! - a ring made too small for a burst (`CJ_AFP_BLOCK_SIZE=4096`,
//!   `CJ_AFP_BLOCK_COUNT=2`, the balancer's core kept busy): the kernel's drops
//!   show as `capture_dropped` in the balancer's stats line, its stats page and
//!   `cj-app status`, and sent = accounted + dropped at capture + dropped at queue;
//! - an interface taken down and up again during the run: the balancer logs
//!   both transitions, keeps running and captures what comes after;
//! - an interface down when the balancer starts and brought up: no line says
//!   it is up "again".
//!
//! Needs root (network namespaces, veth, AF_PACKET), `ip` and `tcpreplay`;
//! without them each test is skipped by `e2e::skip`'s rule (a failure under
//! CI, elsewhere listed in `target/skipped-tests.txt`). Every namespace and
//! veth is deleted at the end, also when a test fails (a Drop guard). Traffic
//! stays inside the test's own veths, bounded in count and time.
//!
//! The processes are stopped in pipeline order (`e2e::live::Station::stop`): SIGTERM to the balancer (a
//! live source never ends), then to the detector (it flushes every flow and
//! closes its record queues), then to the app if it has not ended by itself
//! (it ends once every record queue ended and was drained).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::live::{have, is_root, run, Station, Stopped, TestHost};
use e2e::{diff_rows, peer_tool, read_flows_csv, read_json, wait_all, Cluster, RowKey};
use nix::sys::signal::Signal;
use sim::{SimSpec, Truth};

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows;

/// Rate at which the exact-count tests replay (well within what the pipeline holds).
const PPS: &str = "20000";

/// IPv4 and IPv6, 802.1Q and QinQ tags, many sizes up to 1514 bytes (tags
/// included, so every frame fits the veth's 1500-byte MTU), a few ARP frames.
const SPEC: &str =
    "flows=300,packets=30000,sizes=64:25/100:10/333:10/576:15/1000:10/1400:10/1514:20,v6=25,vlan=15,qinq=5,nonip=1,seed=11";

/// True when this process can build test hosts; otherwise says why the test is skipped.
fn can_build_hosts() -> bool {
    if !is_root() {
        e2e::skip("needs root (network namespaces, veth, AF_PACKET)");
        return false;
    }
    peer_tool("ip", "iproute2").is_some() && peer_tool("tcpreplay", "tcpreplay").is_some()
}

/// Kills (SIGKILL) every process whose environment has `CJ_SHM_DIR` = this
/// directory, when dropped: what a script started and a failing test left behind.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        let want = format!("CJ_SHM_DIR={}", self.0.display());
        let Ok(dir) = std::fs::read_dir("/proc") else { return };
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            let Ok(env) = std::fs::read(e.path().join("environ")) else { continue };
            if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Waits for replays and checks they succeeded.
fn finish_replays(children: Vec<(&str, Child)>) {
    for out in wait_all(children, Duration::from_secs(120)) {
        assert!(
            out.status.success(),
            "tcpreplay failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A process that keeps one core busy (killed on drop).
#[derive(Debug)]
struct Spinner(Child);

impl Spinner {
    fn on_core(core: u32) -> Option<Self> {
        if !have("taskset") {
            return None;
        }
        let child = Command::new("taskset")
            .args(["-c", &core.to_string(), "sh", "-c", "while :; do :; done"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Spinner(child))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A generated capture and its truth.
struct Capture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    truth: Truth,
}

fn capture(spec: &str) -> Capture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("live.pcap");
    let spec: SimSpec = spec.parse().expect("spec");
    let truth = sim::write_pcap(&spec, &path, false).expect("write capture");
    Capture { _dir: dir, path, truth }
}

/// Frame bytes on the wire: IP frames from the truth rows plus the ARP frames.
fn wire_bytes(t: &Truth) -> u64 {
    t.rows.iter().map(|r| r.frame_bytes).sum::<u64>() + t.non_ip_frames * sim::ARP_FRAME_LEN as u64
}

/// The identity in summary.json: every term must add up, and the verdict is
/// final. A live source never ends, so the run is stopped in order (balancer,
/// detector, app by SIGTERM); cj-app calls that final when the balancer process
/// is gone, every worker ended with its packet queue empty, and it drained
/// every record queue.
fn check_identity(
    cluster: &Cluster,
    summary: &serde_json::Value,
    received: u64,
    capture_dropped: u64,
) -> serde_json::Value {
    let id = &summary["identity"];
    let terms = &id["terms"];
    assert_eq!(terms["received"].as_u64(), Some(received), "identity received: {id:#}");
    assert_eq!(terms["difference"].as_i64(), Some(0), "identity difference: {id:#}");
    assert_eq!(id["capture_dropped"].as_u64(), Some(capture_dropped), "identity capture_dropped: {id:#}");
    assert_eq!(id["status"].as_str(), Some("holds"), "identity verdict: {id:#}");
    // The detector flushed every flow before the app drained: its page says so.
    let status = cluster.command("cj-app").arg("status").output().expect("cj-app status");
    let text = String::from_utf8_lossy(&status.stdout);
    let worker = text.lines().find(|l| l.starts_with("worker 0:")).unwrap_or_default();
    assert!(worker.split_whitespace().any(|kv| kv == "ended=1"), "worker 0 flushed and ended:\n{text}");
    // Stopped in order, the run is complete although its record queues stay open for a restart.
    assert_eq!(summary["complete"], true, "a live run stopped in order is complete: {summary:#}");
    assert!(summary["incomplete_reason"].is_null(), "{summary:#}");
    terms.clone()
}

fn sum_rows(maps: &[BTreeMap<RowKey, (u64, u64)>]) -> BTreeMap<RowKey, (u64, u64)> {
    let mut all = BTreeMap::new();
    for m in maps {
        for (k, v) in m {
            let slot = all.entry(k.clone()).or_insert((0, 0));
            slot.0 += v.0;
            slot.1 += v.1;
        }
    }
    all
}

#[test]
fn one_veth_replay_matches_the_truth() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture(SPEC);
    let host = TestHost::new("cjt");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);

    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
    let sent = host.tx_packets() - before;
    assert_eq!(sent, cap.truth.total_frames, "the peer veth sent every frame of the capture");
    let c = station.wait_for("received == sent", |c| c.received >= sent);
    assert_eq!(c.received, sent, "received exactly what was sent: {c:?}");
    assert_eq!((c.capture_dropped, c.queue_dropped), (0, 0), "no loss at {PPS} pps: {c:?}");
    // VLAN tags the kernel took out were put back: the wire bytes are the generator's.
    assert_eq!(c.received_bytes, wire_bytes(&cap.truth), "wire bytes (VLAN and QinQ tags put back)");

    let Stopped { balancer, out, .. } = station.stop();
    let berr = String::from_utf8_lossy(&balancer.stderr);
    assert!(berr.contains("AF_PACKET TPACKET_V3"), "start line names the ring: {berr}");
    assert!(berr.contains("timestamps: "), "start line says which timestamps: {berr}");
    let got = read_flows_csv(&out.path().join("flows.csv"));
    if let Some(d) = diff_rows(&got, &truth_rows(&cap.truth)) {
        panic!("flows.csv differs from the truth:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let terms = check_identity(&cluster, &summary, sent, 0);
    assert_eq!(terms["non_ip"].as_u64(), Some(cap.truth.non_ip_frames), "{terms:#}");
    eprintln!("one veth: {sent} frames replayed and accounted in {:.1?}", started.elapsed());
}

#[test]
fn two_veths_in_one_iface_list_are_both_counted() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let caps = [
        capture("flows=200,packets=20000,sizes=64:40/576:30/1514:30,v6=30,vlan=20,qinq=5,nonip=1,seed=21"),
        capture("flows=150,packets=15000,sizes=64:30/1000:40/1514:30,v6=20,vlan=10,qinq=10,seed=22"),
    ];
    let hosts = [TestHost::new("cjt"), TestHost::new("cjt")];
    let iface = format!("{},{}", hosts[0].host, hosts[1].host);
    let cluster = Cluster::live(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);

    let before: Vec<u64> = hosts.iter().map(TestHost::tx_packets).collect();
    finish_replays(vec![
        ("tcpreplay 1", hosts[0].replay(&caps[0].path, &["--pps", PPS, "--preload-pcap"])),
        ("tcpreplay 2", hosts[1].replay(&caps[1].path, &["--pps", PPS, "--preload-pcap"])),
    ]);
    let sent: u64 = hosts.iter().zip(&before).map(|(h, b)| h.tx_packets() - b).sum();
    let total: u64 = caps.iter().map(|c| c.truth.total_frames).sum();
    assert_eq!(sent, total, "the two peers sent every frame");
    let c = station.wait_for("received == sent", |c| c.received >= sent);
    assert_eq!(c.received, sent, "{c:?}");
    assert_eq!((c.capture_dropped, c.queue_dropped), (0, 0), "{c:?}");
    assert_eq!(c.received_bytes, caps.iter().map(|c| wire_bytes(&c.truth)).sum::<u64>());

    let Stopped { out, .. } = station.stop();
    let want = sum_rows(&[truth_rows(&caps[0].truth), truth_rows(&caps[1].truth)]);
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &want) {
        panic!("flows.csv differs from the two captures' truth:\n{d}");
    }
    check_identity(&cluster, &read_json(&out.path().join("summary.json")), sent, 0);
    eprintln!("two veths: {sent} frames replayed and accounted in {:.1?}", started.elapsed());
}

#[test]
fn a_ring_too_small_for_a_burst_counts_the_kernel_drops() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    // 30000 frames looped 10 times: 300000 frames at top speed into an 8 KiB ring.
    let cap = capture("flows=500,packets=30000,sizes=64:60/576:20/1514:20,v6=20,vlan=10,qinq=5,nonip=1,seed=31");
    let host = TestHost::new("cjt");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let balancer_core = cores.saturating_sub(1);
    let bcore = balancer_core.to_string();
    let cluster = Cluster::live(&[
        ("CJ_IFACE", &host.host),
        ("CJ_CORECOUNT", "1"),
        ("CJ_AFP_BLOCK_SIZE", "4096"),
        ("CJ_AFP_BLOCK_COUNT", "2"),
        ("CJ_BALANCER_CORE", &bcore),
        ("CJ_LOG_INTERVAL", "1"),
    ]);
    let station = Station::start(&cluster, &[]);
    let spinner = Spinner::on_core(balancer_core);
    if spinner.is_none() {
        eprintln!("note: taskset missing, the balancer's core is not kept busy (the tiny ring drops anyway)");
    }

    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--topspeed", "--loop=10", "--preload-pcap"]))]);
    let sent = host.tx_packets() - before;
    drop(spinner);
    assert!(sent >= 10 * cap.truth.total_frames * 9 / 10, "the peer sent most of the burst: {sent}");
    // Every frame that reached the socket is either received or a kernel drop.
    let c = station.wait_for("received + capture_dropped == sent", |c| c.received + c.capture_dropped >= sent);
    assert_eq!(c.received + c.capture_dropped, sent, "{c:?}");
    assert!(c.capture_dropped > 0, "an 8 KiB ring must drop at top speed: {c:?}");
    let (status_text, _) = station.status();
    assert!(
        status_text.contains(&format!("capture_dropped={}", c.capture_dropped)),
        "cj-app status shows the kernel drops:\n{status_text}"
    );

    let Stopped { balancer, out, .. } = station.stop();
    let berr = String::from_utf8_lossy(&balancer.stderr);
    assert!(
        berr.contains(&format!("capture {}", c.capture_dropped)),
        "the balancer's stats line shows capture {}:\n{berr}",
        c.capture_dropped
    );
    let in_flows: u64 = read_flows_csv(&out.path().join("flows.csv")).values().map(|(p, _)| p).sum();
    let summary = read_json(&out.path().join("summary.json"));
    let t = check_identity(&cluster, &summary, c.received, c.capture_dropped);
    let term = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("{k} in {t:#}"));
    assert_eq!(term("accounted_in_flows"), in_flows, "flows.csv packets are the identity's");
    assert_eq!(term("queue_dropped"), c.queue_dropped);
    let accounted = term("accounted_in_flows") + term("non_ip") + term("malformed") + term("records_lost_packets");
    assert_eq!(
        sent,
        accounted + c.capture_dropped + c.queue_dropped,
        "sent = accounted ({accounted}) + dropped at capture ({}) + dropped at queue ({})",
        c.capture_dropped,
        c.queue_dropped
    );
    eprintln!(
        "small ring: sent {sent}, accounted {accounted}, dropped at capture {}, at queue {} in {:.1?}",
        c.capture_dropped,
        c.queue_dropped,
        started.elapsed()
    );
}

#[test]
fn an_interface_that_goes_down_and_up_keeps_the_balancer_capturing() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture("flows=50,packets=5000,sizes=64:50/1514:50,v6=20,vlan=20,seed=41");
    let host = TestHost::new("cjt");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);

    // The balancer looks at the link every second: wait for it to have said each transition.
    let (down, up) = (format!("{} went down", host.host), format!("{} is up again", host.host));
    run(&["ip", "link", "set", &host.host, "down"]);
    host.wait_operstate("down");
    station.wait_balancer_lines("the balancer to see the link down", 1, |l| l.contains(&down));
    run(&["ip", "link", "set", &host.host, "up"]);
    host.wait_operstate("up");
    station.wait_balancer_lines("the balancer to see the link up", 1, |l| l.contains(&up));

    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
    let sent = host.tx_packets() - before;
    assert_eq!(sent, cap.truth.total_frames);
    let c = station.wait_for("received == sent", |c| c.received >= sent);
    assert_eq!(c.received, sent, "{c:?}");

    let Stopped { balancer, out, .. } = station.stop();
    let berr = String::from_utf8_lossy(&balancer.stderr);
    let down = berr.lines().filter(|l| l.contains(&host.host) && l.contains("went down")).count();
    let up = berr.lines().filter(|l| l.contains(&host.host) && l.contains("is up again")).count();
    assert_eq!((down, up), (1, 1), "one line per transition:\n{berr}");
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &truth_rows(&cap.truth)) {
        panic!("flows.csv after the interface came back differs from the truth:\n{d}");
    }
    eprintln!("down/up: {sent} frames after the link came back, in {:.1?}", started.elapsed());
}

#[test]
fn an_interface_down_at_start_is_not_said_to_be_up_again_at_its_first_up() {
    if !can_build_hosts() {
        return;
    }
    let host = TestHost::new("cjt");
    run(&["ip", "link", "set", &host.host, "down"]);
    host.wait_operstate("down");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);
    run(&["ip", "link", "set", &host.host, "up"]);
    host.wait_operstate("up");
    // The balancer looks at the link every second: wait for its line about the link up.
    let up = format!("{} is up", host.host);
    station.wait_balancer_lines("the balancer to see the link up", 1, |l| l.contains(&up));
    let Stopped { balancer, .. } = station.stop();
    let berr = String::from_utf8_lossy(&balancer.stderr);
    // It was never up while the balancer ran: nothing is "again".
    let again: Vec<&str> = berr.lines().filter(|l| l.contains(&host.host) && l.contains(" again")).collect();
    assert!(again.is_empty(), "{} was down from the start, yet:\n{}", host.host, again.join("\n"));
}

#[test]
fn a_balancer_restarted_mid_run_continues_its_counters_and_the_identity_holds() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture("flows=100,packets=4000,sizes=64:50/576:20/1514:30,v6=20,vlan=20,qinq=5,seed=51");
    let host = TestHost::new("cjt");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let mut station = Station::start(&cluster, &[]);
    let mut sent = 0;
    let mut earlier = Vec::new();
    // Three replays of the same capture: a clean stop (SIGTERM) and a crash (SIGKILL) of the
    // balancer between them, each once what was sent had been received.
    for signal in [Some(Signal::SIGTERM), Some(Signal::SIGKILL), None] {
        let before = host.tx_packets();
        finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
        sent += host.tx_packets() - before;
        let c = station.wait_for("received == sent", |c| c.received >= sent);
        assert_eq!(c.received, sent, "the balancer's received goes on across restarts: {c:?}");
        if let Some(signal) = signal {
            earlier.push(station.restart_balancer(signal));
        }
    }
    assert_eq!(sent, 3 * cap.truth.total_frames, "the peer sent three replays");
    let Stopped { balancer, out, .. } = station.stop();
    let berr = String::from_utf8_lossy(&balancer.stderr);
    assert!(berr.contains("continuing its counters"), "the last balancer says it continued: {berr}");
    let want: BTreeMap<RowKey, (u64, u64)> =
        truth_rows(&cap.truth).into_iter().map(|(k, (p, b))| (k, (3 * p, 3 * b))).collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &want) {
        panic!("flows.csv after two balancer restarts differs from three times the truth:\n{d}");
    }
    let terms = check_identity(&cluster, &read_json(&out.path().join("summary.json")), sent, 0);
    assert_eq!(terms["non_ip"].as_u64(), Some(3 * cap.truth.non_ip_frames), "{terms:#}");
    eprintln!("balancer restarts: {sent} frames over three balancers, accounted, in {:.1?}", started.elapsed());
}

#[test]
fn a_balancer_stopped_while_frames_keep_coming_stops_and_accounts_every_frame_it_took() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture("flows=50,packets=2000,sizes=64:50/576:30/1514:20,v6=20,vlan=10,seed=61");
    let host = TestHost::new("cjt");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);
    // Frames keep coming for 50 s (50 loops of 2,000 frames at 2,000 a second, a gap of
    // 0.5 ms between two): the balancer must stop on its signal while they do. Before,
    // its stop bound the socket to protocol 0, which the kernel takes as "keep the
    // protocol": the ring kept filling, and it waited for 30 ms without a frame, which
    // came only once the replay ended.
    let mut replay = host.replay(&cap.path, &["--pps", "2000", "--loop", "50"]);
    let flowing = station.wait_for("frames flowing", |c| c.received >= 2 * cap.truth.total_frames);
    let mut replaying_at_exit = false;
    let Stopped { out, .. } = station.stop_then(|| {
        replaying_at_exit = matches!(replay.try_wait(), Ok(None));
        let _ = replay.kill();
        let _ = replay.wait();
    });
    assert!(
        replaying_at_exit,
        "the balancer stopped only once frames stopped coming ({:.1?} after the start; {flowing:?})",
        started.elapsed()
    );
    // Every frame it took is accounted, and each is a frame of the capture.
    let summary = read_json(&out.path().join("summary.json"));
    let received = summary["identity"]["terms"]["received"].as_u64().expect("received");
    assert!(received >= flowing.received, "received {received} < {} seen before the stop", flowing.received);
    check_identity(&cluster, &summary, received, 0);
    let got = read_flows_csv(&out.path().join("flows.csv"));
    let truth = truth_rows(&cap.truth);
    for (k, &(p, b)) in &got {
        let &(tp, tb) = truth.get(k).unwrap_or_else(|| panic!("flows.csv has a row the capture lacks: {k:?}"));
        assert!(p <= 50 * tp && b <= 50 * tb, "{k:?}: {p} packets {b} bytes, more than 50 loops of {tp}/{tb}");
    }
    eprintln!("stop while frames come: {received} frames taken and accounted, in {:.1?}", started.elapsed());
}

#[test]
fn a_detector_stopped_and_restarted_mid_run_loses_nothing() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture("flows=100,packets=4000,sizes=64:50/576:20/1514:30,v6=20,vlan=20,seed=52");
    let host = TestHost::new("cjt");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let mut station = Station::start(&cluster, &[]);
    let mut sent = 0;
    // SIGTERM: the detector flushes every flow into the record queue and leaves it open;
    // the next one attaches where the packet queue stands (frames wait there meanwhile).
    for restart in [true, false] {
        let before = host.tx_packets();
        finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
        sent += host.tx_packets() - before;
        station.wait_for("received == sent", |c| c.received >= sent);
        if restart {
            let old = station.restart_detector(Signal::SIGTERM);
            assert!(old.status.success(), "the stopped detector exits 0: {}", String::from_utf8_lossy(&old.stderr));
        }
    }
    let Stopped { out, .. } = station.stop();
    let want: BTreeMap<RowKey, (u64, u64)> =
        truth_rows(&cap.truth).into_iter().map(|(k, (p, b))| (k, (2 * p, 2 * b))).collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &want) {
        panic!("flows.csv after a detector restart differs from twice the truth:\n{d}");
    }
    check_identity(&cluster, &read_json(&out.path().join("summary.json")), sent, 0);
    eprintln!("detector restart: {sent} frames, nothing lost, in {:.1?}", started.elapsed());
}

#[test]
fn the_one_command_live_run_stops_in_order_on_sigint_and_equals_the_truth() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture("flows=100,packets=4000,sizes=64:50/576:20/1514:30,v6=20,vlan=20,seed=61");
    let host = TestHost::new("cjt");
    let _lock = e2e::live::live_lock();
    // The script makes no queue directory of its own when CJ_SHM_DIR is given: the cluster's.
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let out = tempfile::tempdir().expect("out dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/run_pipeline.sh");
    let bin_dir = e2e::bin("cj-balancer").parent().expect("bin dir").to_path_buf();
    // `env --default-signal=INT`: SIGINT as a terminal gives it. A shell started in the
    // background of a non-interactive shell (as a CI runner may start `make test`) has SIGINT
    // ignored, and bash cannot trap a signal ignored on entry.
    let mut cmd = Command::new("env");
    cmd.args(["--default-signal=INT", "bash"]).arg(&script).env("BIN", &bin_dir).env("OUT", out.path());
    e2e::scrub_station_env(&mut cmd);
    cmd.env("CJ_SHM_DIR", cluster.shm.path());
    for (k, v) in &cluster.vars {
        cmd.env(k, v);
    }
    // Output into files, not pipes: the three processes inherit them, and a pipe held open
    // by a process left behind would keep a reader waiting for ever.
    let logs = tempfile::tempdir().expect("log dir");
    let (out_log, err_log) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut run = cmd
        .stdout(std::fs::File::create(&out_log).expect("stdout file"))
        .stderr(std::fs::File::create(&err_log).expect("stderr file"))
        .spawn()
        .expect("start run_pipeline.sh");
    // Whatever happens, nothing of this run outlives the test.
    let _reaper = Reaper(cluster.shm.path().to_path_buf());
    let stderr = || std::fs::read_to_string(&err_log).unwrap_or_default();
    let page = station::naming::balancer_stats_path(&cluster.cluster_dir());
    let received = || {
        shmq::CounterPage::read(&page)
            .ok()
            .and_then(|named| named.iter().find(|(k, _)| k == "received").map(|(_, v)| *v))
    };
    e2e::live::wait_until("the script's balancer to capture (its stats page)", || {
        assert!(run.try_wait().expect("try_wait").is_none(), "run_pipeline.sh exited at start:\n{}", stderr());
        received().is_some()
    });
    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
    let sent = host.tx_packets() - before;
    assert_eq!(sent, cap.truth.total_frames);
    e2e::live::wait_until("received == sent", || received().is_some_and(|r| r >= sent));
    // Ctrl-C: SIGINT to the command.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.id() as i32), Signal::SIGINT).expect("SIGINT");
    let mut status = None;
    e2e::live::wait_ok("run_pipeline.sh to stop the three and exit after SIGINT", || {
        status = run.try_wait().expect("try_wait");
        status.map(drop).ok_or_else(|| format!("still running; its stderr:\n{}", stderr()))
    });
    let status = status.expect("exited");
    let (stdout, stderr) = (std::fs::read_to_string(&out_log).unwrap_or_default(), stderr());
    assert!(status.success(), "run_pipeline.sh exits 0 after Ctrl-C: {status}\n{stdout}\n{stderr}");
    assert_eq!(received(), Some(sent), "received exactly what was sent");
    assert!(stdout.contains("identity holds"), "the summary is printed and the identity holds:\n{stdout}");
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &truth_rows(&cap.truth)) {
        panic!("flows.csv of the one-command run differs from the truth:\n{d}\n{stderr}");
    }
    check_identity(&cluster, &read_json(&out.path().join("summary.json")), sent, 0);
    eprintln!("one command: {sent} frames, stopped by SIGINT, in {:.1?}", started.elapsed());
}

#[test]
fn flows_csv_is_current_within_one_refresh_while_the_flows_go_on() {
    if !can_build_hosts() {
        return;
    }
    let started = Instant::now();
    let cap = capture("flows=100,packets=4000,sizes=64:50/576:20/1514:30,v6=20,vlan=20,seed=71");
    let host = TestHost::new("cjt");
    // CJ_REFRESH=1: live flows are exported every second and the app writes every second;
    // the flows themselves stay open (idle timeout 30 s) across both replays.
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1"), ("CJ_REFRESH", "1")]);
    let station = Station::start(&cluster, &[]);
    let flows_csv = station.out_dir().join("flows.csv");
    let mut sent = 0;
    for round in 1..=2u64 {
        let before = host.tx_packets();
        finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
        sent += host.tx_packets() - before;
        station.wait_for("received == sent", |c| c.received >= sent);
        // What was sent so far, while every flow is still open: the files say it within a refresh or two.
        let want: BTreeMap<RowKey, (u64, u64)> =
            truth_rows(&cap.truth).into_iter().map(|(k, (p, b))| (k, (round * p, round * b))).collect();
        e2e::live::wait_ok(&format!("flows.csv to hold replay {round} while the flows are open"), || {
            if !flows_csv.exists() {
                return Err("no flows.csv yet".into());
            }
            diff_rows(&read_flows_csv(&flows_csv), &want).map_or(Ok(()), Err)
        });
        // Mid-run, the summary written beside says the identity is in progress (not final).
        let summary_json = station.out_dir().join("summary.json");
        e2e::live::wait_ok("summary.json to say the identity is in progress", || {
            let text = std::fs::read_to_string(&summary_json).map_err(|e| format!("{e}"))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
            match v["identity"]["status"].as_str() {
                Some("in_progress") => Ok(()),
                other => Err(format!("identity.status is {other:?}")),
            }
        });
    }
    let Stopped { out, detector, .. } = station.stop();
    let want: BTreeMap<RowKey, (u64, u64)> =
        truth_rows(&cap.truth).into_iter().map(|(k, (p, b))| (k, (2 * p, 2 * b))).collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &want) {
        panic!("flows.csv at the end differs from twice the truth (a packet counted twice?):\n{d}");
    }
    // Every directional flow counted once, when it ended, though its interim parts were
    // exported: a UDP or ICMP flow stays one flow across both replays; each replay of a
    // TCP flow is a whole session (SYN ... FIN from both sides), so two flows.
    let counters = e2e::read_flows_csv_counters(&out.path().join("flows.csv"));
    let wrong: Vec<_> = counters.iter().filter(|(k, c)| c.flows != if k.4 == "tcp" { 2 } else { 1 }).take(5).collect();
    assert!(wrong.is_empty(), "FLOWS is 2 per TCP direction, 1 per other direction; first wrong: {wrong:?}");
    let derr = String::from_utf8_lossy(&detector.stderr);
    let terms = check_identity(&cluster, &read_json(&out.path().join("summary.json")), sent, 0);
    assert_eq!(terms["non_ip"].as_u64(), Some(2 * cap.truth.non_ip_frames), "{terms:#}\n{derr}");
    eprintln!("current counts: two replays, flows.csv current after each, in {:.1?}", started.elapsed());
}

#[test]
fn an_unknown_interface_or_a_bad_ring_size_is_one_line() {
    // No root needed: the interface is looked up before any socket is opened.
    let cluster = Cluster::new(&[("CJ_IFACE", "cjt-nosuch0")]);
    let out = cluster.command("cj-balancer").output().expect("run cj-balancer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.trim_end(), "cj-balancer: CJ_IFACE: no interface named cjt-nosuch0 (ip link shows the names)");

    let cluster = Cluster::new(&[("CJ_IFACE", "lo"), ("CJ_AFP_BLOCK_SIZE", "5000")]);
    let out = cluster.command("cj-balancer").output().expect("run cj-balancer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        r#"cj-balancer: CJ_AFP_BLOCK_SIZE="5000" (environment): expected a power of two from 4096 to 134217728"#
    );
}

#[test]
fn a_capture_filter_in_the_kernel_keeps_only_udp_and_the_rest_is_never_received() {
    if !can_build_hosts() {
        return;
    }
    // Untagged frames (a VLAN tag is taken out of the frame by veth's offload
    // before the kernel filter sees it, as on most NICs: the filter's own caveat).
    let cap = capture("flows=120,packets=3000,sizes=64:40/576:30/1400:30,v6=25,vlan=0,nonip=1,seed=29");
    let udp_frames: u64 = cap.truth.rows.iter().filter(|r| r.proto == 17).map(|r| r.packets).sum();
    assert!(udp_frames > 0 && udp_frames < cap.truth.total_frames, "the capture mixes UDP with the rest");
    let host = TestHost::new("cjf");
    let cluster = Cluster::live(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1"), ("CJ_FILTER", "udp")]);
    let station = Station::start(&cluster, &[]);

    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS, "--preload-pcap"]))]);
    let sent = host.tx_packets() - before;
    assert_eq!(sent, cap.truth.total_frames, "the peer veth sent every frame of the capture");
    let c = station.wait_for("received == the UDP frames", |c| c.received >= udp_frames);

    let Stopped { balancer, out, .. } = station.stop();
    assert_eq!(c.received, udp_frames, "received exactly the UDP frames: {c:?}");
    let berr = String::from_utf8_lossy(&balancer.stderr);
    assert!(berr.contains("capture filter \"udp\""), "the start line names the filter: {berr}");
    let got = read_flows_csv(&out.path().join("flows.csv"));
    let want: BTreeMap<RowKey, (u64, u64)> = truth_rows(&cap.truth).into_iter().filter(|(k, _)| k.4 == "udp").collect();
    if let Some(d) = diff_rows(&got, &want) {
        panic!("flows.csv differs from the truth's UDP rows:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    // The rest (TCP, ICMP, ARP) was never received: the identity holds on the UDP frames alone.
    let terms = check_identity(&cluster, &summary, udp_frames, 0);
    assert_eq!(terms["non_ip"].as_u64(), Some(0), "{terms:#}");
    assert_eq!(summary["capture_filter"].as_str(), Some("udp"), "{summary:#}");
}

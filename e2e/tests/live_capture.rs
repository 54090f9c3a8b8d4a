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
//!   both transitions, keeps running and captures what comes after.
//!
//! Needs root (network namespaces, veth, AF_PACKET), `ip` and `tcpreplay`;
//! elsewhere each test prints `SKIPPED: ...` and returns. Every namespace and
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
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use e2e::live::{have, is_root, run, try_run, Station, Stopped};
use e2e::{diff_rows, peer_tool, read_flows_csv, read_json, truth_rows, wait_all, Cluster, RowKey};
use station::sim::{SimSpec, Truth};

/// Rate at which the exact-count tests replay (well within what the pipeline holds).
const PPS: &str = "20000";

/// IPv4 and IPv6, 802.1Q and QinQ tags, many sizes up to 1514 bytes (tags
/// included, so every frame fits the veth's 1500-byte MTU), a few ARP frames.
const SPEC: &str =
    "flows=300,packets=30000,sizes=64:25/100:10/333:10/576:15/1000:10/1400:10/1514:20,v6=25,vlan=15,qinq=5,nonip=1,seed=11";

/// True when this process can build test hosts; otherwise says why the test is skipped.
fn can_build_hosts() -> bool {
    if !is_root() {
        eprintln!("SKIPPED: needs root for network namespaces");
        return false;
    }
    peer_tool("ip", "iproute2").is_some() && peer_tool("tcpreplay", "tcpreplay").is_some()
}

/// A network namespace holding the peer end of a veth pair whose host end the station captures.
/// Dropping it deletes both.
#[derive(Debug)]
struct TestHost {
    ns: String,
    host: String,
    peer: String,
}

impl TestHost {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 100_000;
        // Interface names stop at 15 characters.
        let h = TestHost { ns: format!("cjt-{pid}-{n}"), host: format!("cjh{pid}n{n}"), peer: format!("cjp{pid}n{n}") };
        run(&["ip", "netns", "add", &h.ns]);
        run(&["ip", "link", "add", &h.host, "type", "veth", "peer", "name", &h.peer, "netns", &h.ns]);
        // No IPv6 before the links come up: no ND/MLD frames to spoil exact counts.
        run(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", h.host)]);
        h.in_ns(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", h.peer)]);
        // Offloads that would merge or split frames; veth has no LRO. Without ethtool, veth's defaults
        // (GRO off) already keep frames as sent.
        if have("ethtool") {
            for feature in ["gro", "gso", "tso", "lro"] {
                try_run(&["ethtool", "-K", &h.host, feature, "off"]);
                try_run(&["ip", "netns", "exec", &h.ns, "ethtool", "-K", &h.peer, feature, "off"]);
            }
        }
        run(&["ip", "link", "set", &h.host, "up"]);
        h.in_ns(&["ip", "link", "set", &h.peer, "up"]);
        h.wait_operstate("up");
        h
    }

    /// Runs a command inside the namespace.
    fn in_ns(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        run(&all)
    }

    fn wait_operstate(&self, want: &str) {
        let path = format!("/sys/class/net/{}/operstate", self.host);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(&path).unwrap_or_default();
            if state.trim() == want {
                return;
            }
            assert!(Instant::now() < deadline, "{} operstate is {state:?}, not {want}", self.host);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The peer's kernel tx counter: frames that left it for the host end.
    fn tx_packets(&self) -> u64 {
        let text = self.in_ns(&["cat", &format!("/sys/class/net/{}/statistics/tx_packets", self.peer)]);
        text.trim().parse().unwrap_or_else(|e| panic!("tx_packets of {}: {e}: {text:?}", self.peer))
    }

    /// Starts tcpreplay on the peer end.
    fn replay(&self, file: &Path, rate: &[&str]) -> Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "tcpreplay", "-q", "-i", &self.peer]).args(rate).arg(file);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start tcpreplay")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes the peer, which deletes the pair.
        try_run(&["ip", "netns", "del", &self.ns]);
        try_run(&["ip", "link", "del", &self.host]);
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
    let truth = station::sim::write_pcap(&spec, &path, false).expect("write capture");
    Capture { _dir: dir, path, truth }
}

/// Frame bytes on the wire: IP frames from the truth rows plus the ARP frames.
fn wire_bytes(t: &Truth) -> u64 {
    t.rows.iter().map(|r| r.frame_bytes).sum::<u64>() + t.non_ip_frames * station::sim::ARP_FRAME_LEN as u64
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
    eprintln!("identity verdict: {} (complete: {})", id["status"], summary["complete"]);
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
    let host = TestHost::new();
    let cluster = Cluster::new(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);

    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS]))]);
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
    let hosts = [TestHost::new(), TestHost::new()];
    let iface = format!("{},{}", hosts[0].host, hosts[1].host);
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);

    let before: Vec<u64> = hosts.iter().map(TestHost::tx_packets).collect();
    finish_replays(vec![
        ("tcpreplay 1", hosts[0].replay(&caps[0].path, &["--pps", PPS])),
        ("tcpreplay 2", hosts[1].replay(&caps[1].path, &["--pps", PPS])),
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
    let host = TestHost::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let balancer_core = cores.saturating_sub(1);
    let bcore = balancer_core.to_string();
    let cluster = Cluster::new(&[
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
    let host = TestHost::new();
    let cluster = Cluster::new(&[("CJ_IFACE", &host.host), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);

    run(&["ip", "link", "set", &host.host, "down"]);
    host.wait_operstate("down");
    // The balancer looks at the link every second.
    std::thread::sleep(Duration::from_millis(1500));
    run(&["ip", "link", "set", &host.host, "up"]);
    host.wait_operstate("up");
    std::thread::sleep(Duration::from_millis(1500));

    let before = host.tx_packets();
    finish_replays(vec![("tcpreplay", host.replay(&cap.path, &["--pps", PPS]))]);
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

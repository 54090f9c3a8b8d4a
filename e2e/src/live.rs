//! A station on a live source, for the tests that capture from interfaces
//! they build themselves (`live_capture`, `containers`), and the few shell
//! helpers those tests share.
//!
//! [`Station::start`] spawns cj-detector, cj-app (writing into a private
//! output directory) and cj-balancer on a [`Cluster`], and returns once the
//! balancer has opened its capture (its stats page exists). The balancer
//! itself holds a live capture until every packet queue has its consumer
//! (the detector's workers attach after its inventory's first look), so no
//! frame sent after `start` returns can be dropped at a queue nobody reads;
//! a balancer that exits before that fails the test with its stderr.
//!
//! Stations are serialised: [`Station::start`] takes an exclusive lock
//! (`flock` on a file in the temp directory) that the station holds until it
//! is stopped or dropped, so no two live tests (of any test binary) replay
//! or spin at once on this machine's few cores. Use [`Cluster::live`] for
//! a live cluster: queues that hold a whole replay, stats lines every second.
//! When a test fails while a station runs, dropping it prints the three
//! processes' stderr (stats lines with queue fill included) into the test's
//! output, so a failure explains itself.
//!
//! A live source never ends, so the run is ended by [`Station::stop`] (or
//! [`Station::stop_then`]) in pipeline order: SIGTERM to the balancer, then to
//! the detector (it flushes every flow and closes its record queues), then to
//! the app (it ends by itself once every record queue ended and was drained;
//! the signal is then harmless). Each is waited for, at most
//! [`STOP_DEADLINE`], before the next is signalled; then every exit status
//! must be success, or the test fails with all three processes' stderr. What
//! is returned ([`Stopped`]) holds the three outputs and the output directory.
//!
//! Guaranteed: no process outlives its `Station`. When a test fails before
//! `stop` (or `stop` itself fails), dropping the `Station` kills and reaps
//! whatever still runs. Waits are bounded: the counter waits by [`SETTLE`],
//! the stop by [`STOP_DEADLINE`] per process.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{wait_all, Cluster};

/// How long the balancer may take to have received what was sent.
pub const SETTLE: Duration = Duration::from_secs(30);
/// How long one stopped process may take to exit.
pub const STOP_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a command (`args[0]` with the rest as arguments) and returns its stdout.
///
/// # Panics
/// When it cannot start or does not exit 0 (with its stderr).
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command whose failure is not fatal (cleanup, optional tuning),
/// its output discarded; true when it exited 0.
pub fn try_run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an optional tool is on PATH (or in /usr/sbin, /sbin). Unlike
/// [`crate::peer_tool`], a missing one is never a failure, not even under CI.
pub fn have(tool: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|d| Path::new(d).join(tool).is_file())
}

/// Whether this process runs as root (network namespaces, veths, AF_PACKET).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A network namespace holding the peer end of a veth pair whose host end a
/// station captures: the test host of the live tests. Dropping it deletes both.
///
/// Both ends come up with IPv6 off (no ND/MLD frames to spoil exact counts)
/// and, where `ethtool` exists, GRO, GSO, TSO and LRO off (frames stay as sent).
#[derive(Debug)]
pub struct TestHost {
    /// The namespace.
    pub ns: String,
    /// The host end (what the station captures).
    pub host: String,
    /// The peer end, inside the namespace (where replays are sent).
    pub peer: String,
}

impl TestHost {
    /// Creates the namespace and the pair (names made of `prefix`, the pid and a
    /// counter; at most 15 characters as interface names must be), and waits
    /// until the host end is up.
    ///
    /// # Panics
    /// When `ip` fails or the link does not come up within 10 s.
    pub fn new(prefix: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id() % 100_000;
        let h = TestHost {
            ns: format!("{prefix}-{pid}-{n}"),
            host: format!("{prefix}h{pid}n{n}"),
            peer: format!("{prefix}p{pid}n{n}"),
        };
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

    /// Runs a command inside the namespace and returns its stdout.
    ///
    /// # Panics
    /// As [`run`].
    pub fn in_ns(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Waits until the host end's operstate is `want`.
    ///
    /// # Panics
    /// When 10 s pass first.
    pub fn wait_operstate(&self, want: &str) {
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
    ///
    /// # Panics
    /// When the counter cannot be read.
    pub fn tx_packets(&self) -> u64 {
        let text = self.in_ns(&["cat", &format!("/sys/class/net/{}/statistics/tx_packets", self.peer)]);
        text.trim().parse().unwrap_or_else(|e| panic!("tx_packets of {}: {e}: {text:?}", self.peer))
    }

    /// Starts `tcpreplay -q` of `file` on the peer end with `rate` (e.g. `["--pps", "20000"]`).
    ///
    /// # Panics
    /// When tcpreplay cannot start.
    pub fn replay(&self, file: &Path, rate: &[&str]) -> Child {
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

/// The balancer's counters as `cj-app status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalancerCounters {
    /// Frames taken from the source.
    pub received: u64,
    /// Their bytes on the wire.
    pub received_bytes: u64,
    /// Frames the kernel dropped before the balancer saw them.
    pub capture_dropped: u64,
    /// Frames dropped because a worker's packet queue was full.
    pub queue_dropped: u64,
}

/// What a stopped station leaves: the three outputs and the app's output directory.
#[derive(Debug)]
pub struct Stopped {
    /// cj-balancer.
    pub balancer: Output,
    /// cj-detector.
    pub detector: Output,
    /// cj-app.
    pub app: Output,
    /// The directory cj-app wrote into (`--out`); removed when dropped.
    pub out: tempfile::TempDir,
}

/// The lock file that serialises live stations across test threads and
/// binaries; a test that runs a live station by other means holds it too.
pub fn live_lock() -> nix::fcntl::Flock<std::fs::File> {
    let path = std::env::temp_dir().join("cj-e2e-live.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()))
}

/// One station process and the thread that collects its stderr as it comes.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    /// None once [`Proc::finish`] took it.
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut cmd: Command, name: &'static str) -> Self {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        // Read as it comes: the pipe never fills (a blocked writer would stall the station),
        // and a test can wait for a line while the process runs.
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("stderr buffer").extend_from_slice(&buf[..n]);
            }
        });
        Proc { name, child: Some(child), stderr, reader: Some(reader) }
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr buffer")).into_owned()
    }

    /// Waits for the process (bounded by `deadline`) and its stderr to end.
    fn finish(mut self, deadline: Duration) -> Output {
        let child = self.child.take().expect("running");
        let mut out = wait_all(vec![(self.name, child)], deadline).pop().expect("output");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        out.stderr = std::mem::take(&mut *self.stderr.lock().expect("stderr buffer"));
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The three station processes on one cluster; any still running are killed on drop.
#[derive(Debug)]
pub struct Station<'c> {
    /// Held from start to drop: one live station at a time.
    _lock: nix::fcntl::Flock<std::fs::File>,
    cluster: &'c Cluster,
    out: Option<tempfile::TempDir>,
    balancer: Option<Proc>,
    detector: Option<Proc>,
    app: Option<Proc>,
}

impl<'c> Station<'c> {
    /// Waits for the live lock, then starts detector, app (`--out <private
    /// dir>` then `app_args`) and balancer on `cluster`; returns once the
    /// balancer captures (which it does only once every packet queue has its
    /// consumer).
    ///
    /// # Panics
    /// When a binary cannot start, or the balancer exits or has not opened
    /// its capture within [`SETTLE`].
    pub fn start(cluster: &'c Cluster, app_args: &[&str]) -> Self {
        let lock = live_lock();
        let spawn = |name: &'static str, args: &[&std::ffi::OsStr]| {
            let mut cmd = cluster.command(name);
            cmd.args(args);
            Proc::spawn(cmd, name)
        };
        let out = tempfile::tempdir().expect("out dir");
        let detector = spawn("cj-detector", &[]);
        let mut args: Vec<&std::ffi::OsStr> = vec!["--out".as_ref(), out.path().as_os_str()];
        args.extend(app_args.iter().map(std::ffi::OsStr::new));
        let app = spawn("cj-app", &args);
        let balancer = spawn("cj-balancer", &[]);
        let mut s = Station {
            _lock: lock,
            cluster,
            out: Some(out),
            balancer: Some(balancer),
            detector: Some(detector),
            app: Some(app),
        };
        // The balancer holds its capture until the workers are attached, then opens its
        // rings, then its stats page: once the page is there, it captures.
        let page = station::naming::balancer_stats_path(&cluster.cluster_dir());
        let deadline = Instant::now() + SETTLE;
        while !page.exists() {
            for p in [&mut s.balancer, &mut s.detector].into_iter().flatten() {
                if let Some(Ok(Some(status))) = p.child.as_mut().map(Child::try_wait) {
                    panic!("{} exited at start ({status}): {}", p.name, p.stderr_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "waited {SETTLE:?} for cj-balancer to open its capture (its stats page {})",
                page.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    /// Stops the balancer with `signal` (SIGTERM: a clean stop; SIGKILL: a
    /// crash), waits for it to exit, starts a new one on the same cluster and
    /// returns once that one captures (its start line is out). The old one's
    /// output is returned.
    ///
    /// # Panics
    /// When the old one does not exit within [`STOP_DEADLINE`], or the new
    /// one exits or does not start capturing within [`SETTLE`].
    pub fn restart_balancer(&mut self, signal: nix::sys::signal::Signal) -> Output {
        // The start line ("... -> N queue set(s) x M queue(s) in DIR ...") comes once the rings are open.
        Self::restart(self.cluster, &mut self.balancer, "cj-balancer", signal, " queue set(s) x ")
    }

    /// [`Station::restart_balancer`] for the detector: returns once the new
    /// one's workers started (its start line is out).
    ///
    /// # Panics
    /// As [`Station::restart_balancer`].
    pub fn restart_detector(&mut self, signal: nix::sys::signal::Signal) -> Output {
        Self::restart(self.cluster, &mut self.detector, "cj-detector", signal, " workers started ")
    }

    fn restart(
        cluster: &Cluster,
        slot: &mut Option<Proc>,
        name: &'static str,
        signal: nix::sys::signal::Signal,
        started: &str,
    ) -> Output {
        let old = slot.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(old.child.as_ref().expect("running").id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let out = old.finish(STOP_DEADLINE);
        *slot = Some(Proc::spawn(cluster.command(name), name));
        settle(|| {
            let p = slot.as_mut().expect("restarted");
            if let Some(Ok(Some(status))) = p.child.as_mut().map(Child::try_wait) {
                panic!("the restarted {name} exited ({status}): {}", p.stderr_text());
            }
            let text = p.stderr_text();
            if text.contains(started) {
                Ok(())
            } else {
                Err(format!(" for the restarted {name} to start; its stderr:\n{text}"))
            }
        });
        out
    }

    /// The directory cj-app writes into (`--out`), while it runs.
    pub fn out_dir(&self) -> &Path {
        self.out.as_ref().expect("output directory").path()
    }

    /// The balancer's stderr so far.
    pub fn balancer_stderr(&self) -> String {
        self.balancer.as_ref().map(Proc::stderr_text).unwrap_or_default()
    }

    /// The detector's stderr so far.
    pub fn detector_stderr(&self) -> String {
        self.detector.as_ref().map(Proc::stderr_text).unwrap_or_default()
    }

    /// Waits until the balancer's stderr has `count` lines for which `matches` holds.
    ///
    /// # Panics
    /// When [`SETTLE`] passes first (with `what` and the stderr so far).
    pub fn wait_balancer_lines(&self, what: &str, count: usize, matches: impl Fn(&str) -> bool) {
        settle(|| {
            let text = self.balancer_stderr();
            let n = text.lines().filter(|l| matches(l)).count();
            if n >= count {
                Ok(())
            } else {
                Err(format!(" for {what} ({n} of {count} lines); cj-balancer stderr:\n{text}"))
            }
        });
    }

    /// The balancer's `received` from its stats page (0 while unreadable).
    pub fn received(&self) -> u64 {
        let page = station::naming::balancer_stats_path(&self.cluster.cluster_dir());
        shmq::CounterPage::read(&page)
            .ok()
            .and_then(|named| named.iter().find(|(k, _)| k == "received").map(|(_, v)| *v))
            .unwrap_or(0)
    }

    /// Waits until the stats page's `received` is at least `want`, then half a
    /// second more (blocks are handed over within CJ_AFP_BLOCK_TIMEOUT_MS; with
    /// `containers`, other containers' frames count in `received` too), and
    /// returns `received` then.
    ///
    /// # Panics
    /// When [`SETTLE`] passes first.
    pub fn wait_received(&self, want: u64) -> u64 {
        settle(|| {
            let got = self.received();
            (got >= want).then_some(()).ok_or_else(|| format!(": received {got} of {want}"))
        });
        std::thread::sleep(Duration::from_millis(500));
        self.received()
    }

    /// `cj-app status` as text, and the balancer's counters from its `balancer:` line
    /// (zero where absent).
    pub fn status(&self) -> (String, BalancerCounters) {
        let out = self.cluster.command("cj-app").arg("status").output().expect("cj-app status");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut c = BalancerCounters::default();
        if let Some(line) = text.lines().find(|l| l.starts_with("balancer:")) {
            for kv in line.split_whitespace().skip(1) {
                let Some((k, v)) = kv.split_once('=') else { continue };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "received" => c.received = v,
                    "received_bytes" => c.received_bytes = v,
                    "capture_dropped" => c.capture_dropped = v,
                    "queue_dropped" => c.queue_dropped = v,
                    _ => {}
                }
            }
        }
        (text, c)
    }

    /// Waits until `done` holds for the counters of `cj-app status`, and returns them.
    ///
    /// # Panics
    /// When [`SETTLE`] passes first (with `what` and the last status).
    pub fn wait_for(&self, what: &str, done: impl Fn(&BalancerCounters) -> bool) -> BalancerCounters {
        settle(|| {
            let (text, c) = self.status();
            if done(&c) {
                Ok(c)
            } else {
                Err(format!(" for {what}; cj-app status:\n{text}"))
            }
        })
    }

    /// Stops the three in pipeline order (see the module's doc).
    ///
    /// # Panics
    /// When one does not exit within [`STOP_DEADLINE`] or exits other than 0.
    pub fn stop(self) -> Stopped {
        self.stop_then(|| {})
    }

    /// [`Station::stop`], calling `after_balancer_stopped` once the balancer
    /// has exited and before the detector is signalled (to read kernel
    /// counters when the capture has ended).
    ///
    /// # Panics
    /// As [`Station::stop`].
    pub fn stop_then(mut self, after_balancer_stopped: impl FnOnce()) -> Stopped {
        let stop_one = |slot: &mut Option<Proc>| -> Output {
            let p = slot.take().expect("running");
            // An app that already ended is a zombie until waited for: the signal is harmless.
            let pid = nix::unistd::Pid::from_raw(p.child.as_ref().expect("running").id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            p.finish(STOP_DEADLINE)
        };
        let balancer = stop_one(&mut self.balancer);
        after_balancer_stopped();
        let detector = stop_one(&mut self.detector);
        let app = stop_one(&mut self.app);
        for (name, o) in [("cj-balancer", &balancer), ("cj-detector", &detector), ("cj-app", &app)] {
            assert!(
                o.status.success(),
                "{name} failed ({}):\n--- balancer\n{}\n--- detector\n{}\n--- app\n{}{}",
                o.status,
                String::from_utf8_lossy(&balancer.stderr),
                String::from_utf8_lossy(&detector.stderr),
                String::from_utf8_lossy(&app.stderr),
                String::from_utf8_lossy(&app.stdout)
            );
        }
        let out = self.out.take().expect("output directory");
        Stopped { balancer, detector, app, out }
    }
}

impl Drop for Station<'_> {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        for slot in [&mut self.balancer, &mut self.detector, &mut self.app] {
            let Some(p) = slot.take() else { continue };
            let name = p.name;
            let text = {
                let mut p = p;
                if let Some(c) = p.child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                if let Some(r) = p.reader.take() {
                    let _ = r.join();
                }
                p.stderr_text()
            };
            if failing {
                eprintln!("--- {name} stderr (killed: the test failed)\n{text}");
            }
        }
    }
}

/// Waits until `cond` holds, looking every 50 ms.
///
/// # Panics
/// When [`SETTLE`] passes first, naming `what` was awaited.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    settle(|| if cond() { Ok(()) } else { Err(format!(" for {what}")) });
}

/// Waits until `probe` says `Ok`, looking every 50 ms.
///
/// # Panics
/// When [`SETTLE`] passes first, naming `what` and the probe's last complaint.
pub fn wait_ok(what: &str, mut probe: impl FnMut() -> Result<(), String>) {
    settle(|| probe().map_err(|why| format!(" for {what}: {why}")));
}

/// The running detector's inventory as it publishes it (`<cluster dir>/inventory`; empty until then).
pub fn inventory_text(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.cluster_dir().join("inventory")).unwrap_or_default()
}

/// Calls `probe` every 50 ms until it gives a value; panics with "waited
/// [`SETTLE`]" and its last complaint when that passes first.
fn settle<T>(mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "waited {SETTLE:?}{why}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

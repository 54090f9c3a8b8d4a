//! A station on a live source, for the tests that capture from interfaces
//! they build themselves (`live_capture`, `containers`), and the few shell
//! helpers those tests share.
//!
//! [`Station::start`] spawns cj-detector, cj-app (writing into a private
//! output directory) and cj-balancer on a [`Cluster`], and returns once the
//! balancer has opened its capture (its stats page exists) and half a second
//! more has passed (the detector's container inventory has had its first
//! look); a balancer that exits before that fails the test with its stderr.
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

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
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

/// The three station processes on one cluster; any still running are killed on drop.
#[derive(Debug)]
pub struct Station<'c> {
    cluster: &'c Cluster,
    out: Option<tempfile::TempDir>,
    balancer: Option<Child>,
    detector: Option<Child>,
    app: Option<Child>,
}

impl<'c> Station<'c> {
    /// Starts detector, app (`--out <private dir>` then `app_args`) and
    /// balancer on `cluster`; returns once the balancer captures.
    ///
    /// # Panics
    /// When a binary cannot start, or the balancer exits or has not opened
    /// its capture within 20 s.
    pub fn start(cluster: &'c Cluster, app_args: &[&str]) -> Self {
        let spawn = |name: &str, args: &[&std::ffi::OsStr]| {
            cluster
                .command(name)
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {name}: {e}"))
        };
        let out = tempfile::tempdir().expect("out dir");
        let detector = spawn("cj-detector", &[]);
        let mut args: Vec<&std::ffi::OsStr> = vec!["--out".as_ref(), out.path().as_os_str()];
        args.extend(app_args.iter().map(std::ffi::OsStr::new));
        let app = spawn("cj-app", &args);
        let balancer = spawn("cj-balancer", &[]);
        let mut s =
            Station { cluster, out: Some(out), balancer: Some(balancer), detector: Some(detector), app: Some(app) };
        // The balancer opens its rings before its stats page: once the page is there, it captures.
        let page = station::naming::balancer_stats_path(&cluster.cluster_dir());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !page.exists() {
            if let Some(Ok(Some(_))) = s.balancer.as_mut().map(Child::try_wait) {
                let out = s.balancer.take().expect("balancer").wait_with_output().expect("output");
                panic!("cj-balancer exited at start: {}", String::from_utf8_lossy(&out.stderr));
            }
            assert!(Instant::now() < deadline, "cj-balancer did not create {}", page.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        // The rings are open; let the detector's inventory take its first look.
        std::thread::sleep(Duration::from_millis(500));
        s
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
        let stop_one = |slot: &mut Option<Child>, name: &str| -> Output {
            let child = slot.take().expect("running");
            // An app that already ended is a zombie until waited for: the signal is harmless.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            wait_all(vec![(name, child)], STOP_DEADLINE).pop().expect("output")
        };
        let balancer = stop_one(&mut self.balancer, "cj-balancer");
        after_balancer_stopped();
        let detector = stop_one(&mut self.detector, "cj-detector");
        let app = stop_one(&mut self.app, "cj-app");
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
        for c in [&mut self.balancer, &mut self.detector, &mut self.app].into_iter().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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

//! Harness for end-to-end tests: starts the release binaries (built by
//! `make test`, found in `CJ_BIN_DIR` or `target/release`) on a private queue
//! directory under /dev/shm, waits for them with a deadline, and reads their
//! outputs. Truth comes from the generator's model (`sim::truth`, shaped by
//! `tests/support/truth.rs`: the generator is a dev-dependency only) or
//! from a peer tool, never from the pipeline itself. A station on a live
//! source, started and stopped in pipeline order, is in [`live`].
#![deny(unsafe_code)]

pub mod live;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any one pipeline run may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// Path of a station binary: from `CJ_BIN_DIR` when set (`make test` sets it
/// to `target/release`, built just before), else from a release build this
/// harness makes itself, once per test binary, into `target/e2e-bins` (its own
/// target directory: the `cargo test` that runs this holds the lock of the
/// usual one), so a plain `cargo test` from a fresh clone tests current binaries.
///
/// # Panics
/// When the binary is not in `CJ_BIN_DIR`, or the build fails.
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("CJ_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => build_release_bins(),
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: end-to-end tests use the release binaries; run `make test` (it builds them) or set CJ_BIN_DIR",
        path.display()
    );
    path
}

/// Builds the release binaries into `target/e2e-bins` once per process; returns their directory.
fn build_release_bins() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let target = root.join("target/e2e-bins");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--release", "--bins", "--quiet"])
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .map_err(|e| format!("cannot run cargo to build the station binaries: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build --release --bins failed ({status}); or run `make test`"));
            }
            Ok(target.join("release"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A private queue directory and the variables every process of one run gets.
#[derive(Debug)]
pub struct Cluster {
    /// The CJ_SHM_DIR of this run (removed on drop).
    pub shm: tempfile::TempDir,
    /// Extra CJ_* variables.
    pub vars: Vec<(String, String)>,
}

impl Cluster {
    /// A fresh cluster with the given variables on top of test defaults.
    pub fn new(vars: &[(&str, &str)]) -> Self {
        let shm = tempfile::Builder::new().prefix("station-test.").tempdir_in("/dev/shm").expect("tempdir in /dev/shm");
        let mut all: Vec<(String, String)> = vec![
            ("CJ_LOG_INTERVAL".into(), "0".into()),
            ("CJ_WAIT".into(), "backoff".into()),
            ("CJ_QUEUE_SLOTS".into(), "4096".into()),
            ("CJ_RECORD_QUEUE_SLOTS".into(), "4096".into()),
            ("CJ_FLOW_TABLE_SIZE".into(), "65536".into()),
        ];
        for (k, v) in vars {
            all.retain(|(ek, _)| ek != k);
            all.push(((*k).into(), (*v).into()));
        }
        Self { shm, vars: all }
    }

    /// A cluster for a live station ([`live::Station`]): packet queues of
    /// 65,536 slots (a whole test replay fits, whatever the scheduler does to
    /// the worker) and stats lines with queue fill every second, on top of
    /// [`Cluster::new`]'s defaults; `vars` win.
    pub fn live(vars: &[(&str, &str)]) -> Self {
        let mut all: Vec<(&str, &str)> = vec![("CJ_QUEUE_SLOTS", "65536"), ("CJ_LOG_INTERVAL", "1")];
        all.extend_from_slice(vars);
        Self::new(&all)
    }

    /// A command for a station binary with this cluster's environment
    /// (any CJ_* of the test's own environment removed first).
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(bin(name));
        scrub_station_env(&mut cmd);
        cmd.env("CJ_SHM_DIR", self.shm.path());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    /// [`Cluster::command`] run under `/usr/bin/time -v -o report` (read its
    /// peak RSS with [`peak_rss`]), stdout and stderr piped. It runs in a
    /// process group of its own, so [`wait_all`]'s kill at a deadline reaches
    /// the station binary under `time`, not only `time`.
    pub fn timed_command(&self, name: &str, report: &Path) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("/usr/bin/time");
        cmd.arg("-v").arg("-o").arg(report).arg(bin(name));
        scrub_station_env(&mut cmd);
        cmd.env("CJ_SHM_DIR", self.shm.path());
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        cmd
    }

    /// The cluster directory (`<shm>/conjure-98` unless CJ_CLUSTER_ID is set).
    pub fn cluster_dir(&self) -> PathBuf {
        let id = self.vars.iter().find(|(k, _)| k == "CJ_CLUSTER_ID").map_or("98", |(_, v)| v.as_str());
        self.shm.path().join(format!("conjure-{id}"))
    }

    /// Record-queue slots the app has released on set 0's queue 0 so far (0
    /// while the queue does not exist): each release follows a checkpoint.
    pub fn records_released(&self) -> u64 {
        let rec = station::naming::set_record_queue_path(&self.cluster_dir(), 0, 0);
        shmq::QueueFile::read_stats(&rec).map_or(0, |(_, s)| s.dequeued)
    }
}

/// Outputs of the three processes of one run.
#[derive(Debug)]
pub struct Run {
    /// cj-balancer.
    pub balancer: Output,
    /// cj-detector.
    pub detector: Output,
    /// cj-app.
    pub app: Output,
}

impl Run {
    /// Panics with every process's stderr unless all three exited 0.
    pub fn assert_success(&self) {
        for (name, out) in [("cj-balancer", &self.balancer), ("cj-detector", &self.detector), ("cj-app", &self.app)] {
            assert!(
                out.status.success(),
                "{name} failed ({}):\n--- balancer stderr\n{}\n--- detector stderr\n{}\n--- app stderr\n{}\n--- app stdout\n{}",
                out.status,
                String::from_utf8_lossy(&self.balancer.stderr),
                String::from_utf8_lossy(&self.detector.stderr),
                String::from_utf8_lossy(&self.app.stderr),
                String::from_utf8_lossy(&self.app.stdout),
            );
        }
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start station binary")
}

/// Waits for every child, killing all of them if the deadline passes.
///
/// # Panics
/// When the deadline passes.
pub fn wait_all(children: Vec<(&str, Child)>, deadline: Duration) -> Vec<Output> {
    let start = Instant::now();
    let mut children: Vec<(&str, Option<Child>)> = children.into_iter().map(|(n, c)| (n, Some(c))).collect();
    loop {
        let running: Vec<&str> = children
            .iter_mut()
            .filter_map(|(n, c)| {
                let child = c.as_mut()?;
                match child.try_wait() {
                    Ok(Some(_)) => None,
                    _ => Some(*n),
                }
            })
            .collect();
        if running.is_empty() {
            break;
        }
        if start.elapsed() > deadline {
            for (_, c) in children.iter_mut() {
                if let Some(c) = c.as_mut() {
                    // A child in a group of its own (Cluster::timed_command) takes
                    // what runs under it along; for any other child killpg fails
                    // harmlessly (no such group).
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(c.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = c.kill();
                }
            }
            let outs: Vec<String> = children
                .into_iter()
                .filter_map(|(n, c)| {
                    let o = c?.wait_with_output().ok()?;
                    Some(format!("--- {n} stderr\n{}", String::from_utf8_lossy(&o.stderr)))
                })
                .collect();
            panic!("still running after {deadline:?}: {running:?}\n{}", outs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    children.into_iter().map(|(_, c)| c.expect("child").wait_with_output().expect("collect output")).collect()
}

/// "Maximum resident set size (kbytes): N" of a `/usr/bin/time -v` report
/// ([`Cluster::timed_command`]), in bytes: the process's peak RSS (`ru_maxrss`).
pub fn peak_rss(report: &Path) -> u64 {
    let text = std::fs::read_to_string(report).unwrap_or_else(|e| panic!("read {}: {e}", report.display()));
    let kb = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .unwrap_or_else(|| panic!("no peak RSS in {text}"));
    kb.trim().parse::<u64>().expect("kbytes") * 1024
}

/// Runs detector, app and balancer on `cluster` (the balancer's source is
/// CJ_IFACE from the cluster's variables) with the app writing into `out`.
pub fn run_pipeline(cluster: &Cluster, out: &Path) -> Run {
    let detector = spawn(cluster.command("cj-detector"));
    let mut app_cmd = cluster.command("cj-app");
    app_cmd.arg("--out").arg(out);
    let app = spawn(app_cmd);
    let balancer = spawn(cluster.command("cj-balancer"));
    let mut outs = wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], DEADLINE);
    let app = outs.pop().expect("app");
    let detector = outs.pop().expect("detector");
    let balancer = outs.pop().expect("balancer");
    Run { balancer, detector, app }
}

/// The lines `child` writes to its (piped) stderr, gathered by a thread as
/// they come: a test waits for a line with a deadline, then reads them all.
///
/// # Panics
/// When the child's stderr was not piped or was taken.
pub fn stderr_lines(child: &mut Child) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("a piped stderr");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().expect("stderr lines").push(line);
        }
    });
    lines
}

/// Key of a row of the default aggregate: src, dst, src port, dst port, protocol name.
pub type RowKey = (IpAddr, IpAddr, u16, u16, String);

/// Reads the first seven columns of a pmacct-style CSV
/// (`SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES`) into a map.
///
/// # Panics
/// When the file is missing or a row is not of that form.
pub fn read_flows_csv(path: &Path) -> BTreeMap<RowKey, (u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES"),
        "unexpected header in {}: {header}",
        path.display()
    );
    let mut rows = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        assert!(f.len() >= 7, "short row in {}: {line}", path.display());
        let key = row_key(&f, line);
        let val: (u64, u64) = (
            f[5].parse().unwrap_or_else(|e| panic!("bad PACKETS in {line}: {e}")),
            f[6].parse().unwrap_or_else(|e| panic!("bad BYTES in {line}: {e}")),
        );
        let slot = rows.entry(key).or_insert((0, 0));
        slot.0 += val.0;
        slot.1 += val.1;
    }
    rows
}

/// The key of a flows.csv row of the default aggregate: its first five columns.
///
/// # Panics
/// When one of them does not parse.
fn row_key(f: &[&str], line: &str) -> RowKey {
    (
        f[0].parse().unwrap_or_else(|e| panic!("bad SRC_IP in {line}: {e}")),
        f[1].parse().unwrap_or_else(|e| panic!("bad DST_IP in {line}: {e}")),
        f[2].parse().unwrap_or_else(|e| panic!("bad SRC_PORT in {line}: {e}")),
        f[3].parse().unwrap_or_else(|e| panic!("bad DST_PORT in {line}: {e}")),
        f[4].to_string(),
    )
}

/// Describes how two row maps differ (first few differences), or `None` when equal.
pub fn diff_rows(got: &BTreeMap<RowKey, (u64, u64)>, want: &BTreeMap<RowKey, (u64, u64)>) -> Option<String> {
    diff_maps(got, want)
}

/// The first few differences between two maps of rows, or `None` when equal.
fn diff_maps<V: PartialEq + std::fmt::Debug>(got: &BTreeMap<RowKey, V>, want: &BTreeMap<RowKey, V>) -> Option<String> {
    if got == want {
        return None;
    }
    let mut lines = vec![format!("{} rows vs {} expected", got.len(), want.len())];
    for (k, v) in want {
        match got.get(k) {
            None => lines.push(format!("missing {k:?} {v:?}")),
            Some(g) if g != v => lines.push(format!("differs {k:?}: got {g:?} want {v:?}")),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            lines.push(format!("extra {k:?} {v:?}"));
        }
    }
    lines.truncate(12);
    Some(lines.join("\n"))
}

/// Every counter column of a flows.csv row of the default aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowCounters {
    /// PACKETS.
    pub packets: u64,
    /// BYTES (IP bytes).
    pub bytes: u64,
    /// FRAME_BYTES (length on the wire, tags included).
    pub frame_bytes: u64,
    /// FLOWS (directional flows).
    pub flows: u64,
}

/// Reads every column of a flows.csv of the default aggregate
/// (`SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS`,
/// then `TIMESTAMP_START,TIMESTAMP_END`, which this ignores) into a map; rows
/// of one key (one per VLAN) are summed.
///
/// # Panics
/// When the file is missing, has another header, or a row is not of that form.
pub fn read_flows_csv_counters(path: &Path) -> BTreeMap<RowKey, RowCounters> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert_eq!(
        header,
        "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END",
        "unexpected header in {}",
        path.display()
    );
    let mut rows = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 11, "row of {} is not 11 columns: {line}", path.display());
        let num =
            |i: usize, name: &str| -> u64 { f[i].parse().unwrap_or_else(|e| panic!("bad {name} in {line}: {e}")) };
        let key = row_key(&f, line);
        let slot: &mut RowCounters = rows.entry(key).or_default();
        slot.packets += num(5, "PACKETS");
        slot.bytes += num(6, "BYTES");
        slot.frame_bytes += num(7, "FRAME_BYTES");
        slot.flows += num(8, "FLOWS");
    }
    rows
}

/// Describes how two maps of [`RowCounters`] differ (first few
/// differences), or `None` when equal.
pub fn diff_row_counters(got: &BTreeMap<RowKey, RowCounters>, want: &BTreeMap<RowKey, RowCounters>) -> Option<String> {
    diff_maps(got, want)
}

/// Reads a JSON file.
///
/// # Panics
/// When missing or not JSON.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Finds a peer tool on PATH (or /usr/sbin). When it is missing the test is
/// skipped by [`skip`]'s rule: a failure under CI (`CI` set), where `.ci/run`
/// installs the peers; elsewhere a `SKIPPED` line and an entry in
/// [`skipped_tests_file`].
///
/// # Panics
/// Under CI when the tool is missing.
pub fn peer_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        skip(&format!("{name} is not installed (apt-get install {package}; .ci/run installs it)"));
    }
    found
}

/// The file that lists the tests which did not run, one `<test>: <reason>`
/// line each: `target/skipped-tests.txt` of this workspace. libtest hides a
/// passing test's output, so a `SKIPPED` line on stderr alone is never seen;
/// `make test` empties this file first and prints it at the end. The
/// balancer's and the detector's own tests append to the same file.
pub fn skipped_tests_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/skipped-tests.txt")
}

/// The running test as `<test binary>::<test path>` (`live_capture::one_veth_replay_matches_the_truth`):
/// libtest names each test's thread after the test.
pub fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // Cargo names test binaries `<name>-<16 hex digits>`.
            Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => name.to_owned(),
            _ => s,
        })
        .unwrap_or_else(|| "?".to_owned());
    let thread = std::thread::current();
    format!("{binary}::{}", thread.name().unwrap_or("?"))
}

/// The one skip rule for a test that needs root, Docker, a peer tool or a
/// core this machine lacks. Under CI (`CI` set) the test fails with `reason`:
/// CI must run everything. Elsewhere it prints `SKIPPED: <test>: <reason>` to
/// stderr and appends the same line to [`skipped_tests_file`], which
/// `make test` prints at the end. The caller then returns.
///
/// # Panics
/// Under CI, always.
pub fn skip(reason: &str) {
    let test = current_test();
    assert!(std::env::var_os("CI").is_none(), "{test}: under CI this test must run, but {reason}");
    record_skip(&test, reason);
}

/// A test that runs only when asked (it changes the whole machine, e.g.
/// reserves hugepages): never a failure, not even under CI, but listed like
/// every [`skip`].
pub fn skip_unless_asked(reason: &str) {
    record_skip(&current_test(), reason);
}

/// Prints the skip and appends it to [`skipped_tests_file`] (one short line,
/// written with `O_APPEND`: lines of concurrent tests do not interleave). A
/// file that cannot be written is said on stderr; the skip stands.
fn record_skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let line = format!("{test}: {reason}");
    eprintln!("SKIPPED: {line}");
    let path = skipped_tests_file();
    let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        f.write_all(format!("{line}\n").as_bytes())
    });
    if let Err(e) = written {
        eprintln!("cannot list the skip in {}: {e}", path.display());
    }
}

/// A program on PATH or in the sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Removes the test's own station variables (CJ_*, CONJURE_*, the zbalance
/// ones) from `cmd`'s environment, so only what the test sets reaches it.
pub fn scrub_station_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("CJ_") || k.starts_with("CONJURE_") || k == "ZBALANCE_HASH_MODE" || k == "N_QUEUE_SETS" {
            cmd.env_remove(k);
        }
    }
}

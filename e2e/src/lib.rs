//! Harness for end-to-end tests: starts the release binaries (built by
//! `make test`, found in `CJ_BIN_DIR` or `target/release`) on a private queue
//! directory under /dev/shm, waits for them with a deadline, and reads their
//! outputs. Truth comes from the generator's model (`station::sim::truth`) or
//! from a peer tool, never from the pipeline itself. A station on a live
//! source, started and stopped in pipeline order, is in [`live`].
#![deny(unsafe_code)]

pub mod live;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use station::sim::Truth;

/// How long any one pipeline run may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// Path of a station binary.
///
/// # Panics
/// When the binary was not built (run `make test`, which builds them first).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CJ_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release"));
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: end-to-end tests use the release binaries; run `make test` (it builds them) or set CJ_BIN_DIR",
        path.display()
    );
    path
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

    /// The cluster directory (`<shm>/conjure-98` unless CJ_CLUSTER_ID is set).
    pub fn cluster_dir(&self) -> PathBuf {
        let id = self.vars.iter().find(|(k, _)| k == "CJ_CLUSTER_ID").map_or("98", |(_, v)| v.as_str());
        self.shm.path().join(format!("conjure-{id}"))
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
        let key = (
            f[0].parse().unwrap_or_else(|e| panic!("bad SRC_IP in {line}: {e}")),
            f[1].parse().unwrap_or_else(|e| panic!("bad DST_IP in {line}: {e}")),
            f[2].parse().unwrap_or_else(|e| panic!("bad SRC_PORT in {line}: {e}")),
            f[3].parse().unwrap_or_else(|e| panic!("bad DST_PORT in {line}: {e}")),
            f[4].to_string(),
        );
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

/// The generator's truth in the same shape (VLANs merged, as the default aggregate has no VLAN).
pub fn truth_rows(truth: &Truth) -> BTreeMap<RowKey, (u64, u64)> {
    let mut rows = BTreeMap::new();
    for r in &truth.rows {
        let key = (r.src, r.dst, r.src_port, r.dst_port, station::proto::proto_name(r.proto).to_string());
        let slot = rows.entry(key).or_insert((0, 0));
        slot.0 += r.packets;
        slot.1 += r.ip_bytes;
    }
    rows
}

/// Describes how two row maps differ (first few differences), or `None` when equal.
pub fn diff_rows(got: &BTreeMap<RowKey, (u64, u64)>, want: &BTreeMap<RowKey, (u64, u64)>) -> Option<String> {
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

/// Reads a JSON file.
///
/// # Panics
/// When missing or not JSON.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Finds a peer tool on PATH (or /usr/sbin). When it is missing the test is
/// skipped with a plain message, except under CI (`CI` set), where `.ci/run`
/// installs the peers and a missing one is a failure.
///
/// # Panics
/// Under CI when the tool is missing.
pub fn peer_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = find_tool(name);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing under CI: .ci/run must install the {package} package"
        );
        eprintln!("SKIPPED: {name} not installed (apt-get install {package}); this check did not run");
    }
    found
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

//! A station on a paced `sim:` source, stopped by the test in pipeline order
//! one process at a time, so that the test can look at the running app after
//! the detector has flushed every flow: between the detector's end and the
//! app's, the app holds every record of the run and still answers `/metrics`
//! and `cj-app query`. Shared by `tests/metrics.rs` and `tests/query.rs`.
//!
//! Guaranteed: no process outlives the [`Paced`] (drop kills and reaps what
//! still runs, and prints the three stderr logs when the test is failing);
//! it holds the live-test lock ([`e2e::live::live_lock`]) from start to drop,
//! so no live or paced test of another binary competes for the cores; every
//! wait has a deadline and says what it waited for.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use e2e::Cluster;

/// How long any one wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(60);

/// The three processes of a paced run, their logs and the app's output directory.
#[derive(Debug)]
pub struct Paced<'c> {
    _lock: nix::fcntl::Flock<std::fs::File>,
    cluster: &'c Cluster,
    /// The app's `--out`.
    pub out: tempfile::TempDir,
    logs: tempfile::TempDir,
    procs: Vec<(&'static str, Option<Child>)>,
}

impl<'c> Paced<'c> {
    /// Starts detector, app (`--out` a private directory) and balancer on
    /// `cluster`, and returns once the app's start line is out.
    pub fn start(cluster: &'c Cluster) -> Self {
        let lock = e2e::live::live_lock();
        let out = tempfile::tempdir().expect("out dir");
        let logs = tempfile::tempdir().expect("log dir");
        let mut p = Paced { _lock: lock, cluster, out, logs, procs: Vec::new() };
        p.spawn("cj-detector", &[]);
        let out = p.out.path().to_path_buf();
        p.spawn("cj-app", &["--out".as_ref(), out.as_os_str()]);
        wait_for("the app's start line", || p.stderr("cj-app").contains("queries on "));
        p.spawn("cj-balancer", &[]);
        p
    }

    fn spawn(&mut self, name: &'static str, args: &[&std::ffi::OsStr]) {
        let err = std::fs::File::create(self.log(name)).expect("log file");
        let out = std::fs::File::create(self.log(name).with_extension("out")).expect("log file");
        let child = self
            .cluster
            .command(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.procs.push((name, Some(child)));
    }

    fn log(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.err"))
    }

    /// What `name` wrote on stderr so far.
    pub fn stderr(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }

    /// What `name` wrote on stdout so far.
    pub fn stdout(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name).with_extension("out")).unwrap_or_default()
    }

    /// `host:port` of the app's `/metrics` (from its start line).
    pub fn metrics_addr(&self) -> String {
        let text = self.stderr("cj-app");
        let at = text.find("metrics on http://").unwrap_or_else(|| panic!("no metrics endpoint in: {text}"));
        let rest = &text[at + "metrics on http://".len()..];
        rest[..rest.find("/metrics").expect("/metrics")].to_owned()
    }

    /// SIGTERM to `name`, then waits for it to exit; panics unless it exits 0.
    pub fn stop(&mut self, name: &str) -> ExitStatus {
        let (_, slot) = self.procs.iter_mut().find(|(n, _)| *n == name).expect("a process of the run");
        let mut child = slot.take().expect("still running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not exit within {WAIT:?} of SIGTERM:\n{}", self.stderr(name));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{name} exited {status}:\n{}", self.stderr(name));
        status
    }

    /// The cluster directory.
    pub fn cluster_dir(&self) -> PathBuf {
        self.cluster.cluster_dir()
    }

    /// Runs `cj-app` with `args` on the cluster; its stdout, which must be a success.
    pub fn cj_app(&self, args: &[&str]) -> String {
        let out = self.cluster.command("cj-app").args(args).output().expect("run cj-app");
        assert!(
            out.status.success(),
            "cj-app {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Paced<'_> {
    fn drop(&mut self) {
        for (name, slot) in &mut self.procs {
            if let Some(mut c) = slot.take() {
                let _ = c.kill();
                let _ = c.wait();
                if !std::thread::panicking() {
                    eprintln!("{name} was still running at the end of the test: killed");
                }
            }
        }
        if std::thread::panicking() {
            for name in ["cj-balancer", "cj-detector", "cj-app"] {
                eprintln!("--- {name} stderr\n{}", self.stderr(name));
            }
        }
    }
}

/// Waits (every 50 ms, at most [`WAIT`]) until `cond` holds.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < WAIT, "waited {WAIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on `addr`: the status line and the body.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n").expect("send request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    (head.to_owned(), body.to_owned())
}

/// One scrape of `/metrics`, parsed by `prometheus-parse`; checks the HTTP
/// answer and that the parser took every sample line (it skips lines it
/// cannot read, so a count that differs means a malformed line).
pub fn scrape(addr: &str) -> (String, prometheus_parse::Scrape) {
    let (head, body) = http_get(addr, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
    let parsed = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("parse /metrics");
    let sample_lines = body.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
    assert_eq!(parsed.samples.len(), sample_lines, "the parser skipped lines of:\n{body}");
    (body, parsed)
}

/// The value of the one sample of `name` whose labels include `labels`.
pub fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    let hits: Vec<&prometheus_parse::Sample> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(hits.len(), 1, "{name}{labels:?}: {} samples", hits.len());
    let v = match hits[0].value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{name}: unexpected {other:?}"),
    };
    assert!(v >= 0.0 && v.fract() == 0.0, "{name}: {v}");
    v as u64
}

/// `cj-app status` parsed: per queue (enqueued, dequeued, dropped, fill), and
/// the `key=value` counters of the `balancer:` and `worker N:` lines.
#[derive(Debug, Default)]
pub struct Status {
    /// By queue file name.
    pub queues: BTreeMap<String, [u64; 4]>,
    /// By `balancer` / `worker N`.
    pub pages: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Parses the text of `cj-app status`.
pub fn parse_status(text: &str) -> Status {
    let mut s = Status::default();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("  ") && t.len() >= 5 && (t[0].starts_with("pkt-") || t[0].starts_with("rec-")) {
            let n = |i: usize| t[i].parse::<u64>().unwrap_or_else(|_| panic!("status line {line:?}"));
            s.queues.insert(t[0].to_owned(), [n(1), n(2), n(3), n(4)]);
        } else if let Some((label, rest)) = line.split_once(": ") {
            if rest.contains('=') {
                let kv = rest
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("status line {line:?}"))))
                    .collect();
                s.pages.insert(label.to_owned(), kv);
            }
        }
    }
    s
}

/// `flows.csv` as (key columns, [PACKETS, BYTES, FRAME_BYTES, FLOWS]) by the header's names.
pub fn read_flows_csv(path: &Path) -> BTreeMap<Vec<String>, [u64; 4]> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let counters = ["PACKETS", "BYTES", "FRAME_BYTES", "FLOWS"];
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name} column"));
    let keys: Vec<usize> = ["SRC_IP", "DST_IP", "SRC_PORT", "DST_PORT", "PROTOCOL"].iter().map(|c| col(c)).collect();
    let vals: Vec<usize> = counters.iter().map(|c| col(c)).collect();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let k = keys.iter().map(|&i| f[i].to_owned()).collect();
            let v = [0, 1, 2, 3].map(|j| f[vals[j]].parse::<u64>().unwrap_or_else(|_| panic!("row {l:?}")));
            (k, v)
        })
        .collect()
}

/// The rows of a `cj-app query --json` answer, keyed like [`read_flows_csv`].
pub fn query_rows(answer: &serde_json::Value) -> BTreeMap<Vec<String>, [u64; 4]> {
    assert_eq!(answer["ok"], true, "{answer}");
    answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let k = ["src_host", "dst_host", "src_port", "dst_port", "proto"]
                .iter()
                .map(|c| r[c].as_str().unwrap_or_else(|| panic!("{c} in {r}")).to_owned())
                .collect();
            let v = ["packets", "bytes", "frame_bytes", "flows"].map(|c| r[c].as_u64().expect("counter"));
            (k, v)
        })
        .collect()
}

/// The variables of a paced run: `spec` paced, the metrics endpoint on a free
/// loopback port, flows reported every second (so the app has rows while
/// the source runs).
pub fn paced_cluster(spec: &str) -> Cluster {
    paced_cluster_with(spec, &[])
}

/// [`paced_cluster`] with `extra` variables.
pub fn paced_cluster_with(spec: &str, extra: &[(&str, &str)]) -> Cluster {
    let iface = format!("sim:{spec}");
    let mut vars = vec![
        ("CJ_IFACE", iface.as_str()),
        ("CJ_METRICS_ADDR", "0"),
        ("CJ_FLOW_IDLE_TIMEOUT", "1"),
        ("CJ_FLOW_ACTIVE_TIMEOUT", "1"),
        ("CJ_QUEUE_SLOTS", "65536"),
        ("CJ_CORECOUNT", "2"),
        ("CJ_COREBASE", "0"),
    ];
    vars.extend_from_slice(extra);
    Cluster::new(&vars)
}

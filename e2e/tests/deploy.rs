//! Deployment as operators run it, checked on this machine:
//!
//! - `units_pass_systemd_analyze_verify`: every `sysconfig/*.service` passes
//!   `systemd-analyze verify` without a single message (the units name
//!   `/opt/conjure`; the test verifies copies pointing at this checkout);
//! - `scripts_pass_shellcheck`: every shell script of the repository;
//! - `start_scripts_give_one_line_errors`: a malformed value in conjure.conf (the
//!   start scripts with `CONJURE_CONF` pointing at a bad file) stops the binary with
//!   one line naming the variable, the value and the file and line; the
//!   balancer's zc: preflight and on-reboot.sh's checks are one line too;
//! - `native_units_notify_systemd`: each native unit's `ExecStart=` command line,
//!   run under a `NOTIFY_SOCKET` this test listens on, with `WATCHDOG_USEC` set,
//!   sends `READY=1` (with a `STATUS=`), watchdog pings at half the timeout, and
//!   `STOPPING=1` on SIGTERM, and exits 0;
//! - `on_reboot_sets_up_a_test_host` (root): `on-reboot.sh` inside a network
//!   namespace of its own, against a veth there: `--dry-run` changes nothing at
//!   all, the real run turns GRO/GSO/TSO off, sets the veth promiscuous and up,
//!   creates the queue directory (owner and mode) and `tun<CJ_QUEUE_OFFSET+i>`; a
//!   second run changes nothing (state snapshots compared). Hugepages are not
//!   reserved there (`CJ_HUGEPAGES=0`);
//! - `on_reboot_refuses_a_link_file_or_foreign_directory_planted_as_the_queue_directory`
//!   (root): a symbolic link (to a directory, to a file), a file, or a directory of
//!   another user under the queue directory's name is refused (`--strict`: exit 1),
//!   and neither it nor what a link points to changes owner or mode;
//! - `a_link_planted_as_the_queue_directory_while_on_reboot_runs_is_never_chowned_or_chmodded`
//!   (root): the race a hostile user can win, made certain: `mkdir` and `mktemp`
//!   (wrappers first in `PATH`) plant a link to a victim file or directory under
//!   the queue directory's name after the script's check and before it creates
//!   the directory; the run fails (`--strict`: exit 1), and neither the link nor
//!   the victim changes owner or mode (before, `chown -h` took the link and
//!   `chmod 3770` followed it to the victim), and no fresh directory is left;
//! - `on_reboot_gives_the_queue_directory_cj_group` (root): with `CJ_GROUP` the
//!   directory has that group and mode 3770 (the binaries keep an existing
//!   directory's group), a second run changes nothing, and a `CJ_SHM_OWNER` group
//!   other than `CJ_GROUP` or root is refused in one line (exit 2);
//! - `on_reboot_reserves_hugepages` (root, opt-in with `CJ_TEST_HUGEPAGES=1`, since
//!   hugepages belong to the whole machine): 2 pages reserved and hugetlbfs mounted
//!   on a test directory (named with a trailing slash), a second run changes nothing,
//!   then both are given back;
//! - `compose_stack_processes_a_capture` (root, docker): builds the base image
//!   (debootstrap) and the builder image (this machine's Rust toolchain) when
//!   missing, `make container target=sim`, then `scripts/compose.sh up` runs the
//!   three containers on a generated capture and the app's flows.csv equals the
//!   generator's ground truth; `compose.sh down` at the end;
//! - `compose_services_stopped_and_started_mid_run_lose_nothing` (root, docker):
//!   the stack on a paced generator with health checks every second
//!   (`CONJURE_HEALTH_INTERVAL=1s`); balancer, detector and app each stopped
//!   (`docker stop`) and started (`docker start`) mid-stream in turn: while
//!   stopped, compose shows it exited and its `health` (run on the host) says
//!   not running; after, compose shows it healthy; at the end flows.csv equals
//!   the truth, the identity holds, nothing dropped. The two compose tests run
//!   one at a time and build the images once.
//!
//! Tests that need root, docker or a tool are skipped by `e2e::skip`'s rule:
//! a failure under CI (`CI` set), elsewhere a `SKIPPED` line listed in
//! `target/skipped-tests.txt`. The hugepages test runs only when asked
//! (`CJ_TEST_HUGEPAGES=1`) and is listed there otherwise, even under CI.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{diff_rows, read_flows_csv, skip};

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

/// A command with no CJ_* (nor zbalance) variable of the test's own environment,
/// and the binaries of this build.
fn clean(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    e2e::scrub_station_env(&mut cmd);
    let bin_dir = e2e::bin("cj-app").parent().expect("bin dir").to_path_buf();
    cmd.env("CJ_BIN_DIR", bin_dir);
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A conjure.conf for a test: the repository's defaults, then `lines`.
/// A directory for a test's hugetlbfs mount point: under /run, as
/// `CJ_HUGEPAGES_MOUNT` must be (below /dev, /mnt or /run).
fn hugepage_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/run").expect("a directory under /run")
}

fn write_conf(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut text = format!(". {}\n", repo().join("sysconfig/conjure.conf").display());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write conf");
    path
}

// ---------------------------------------------------------------- static checks

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = e2e::peer_tool("systemd-analyze", "systemd") else { return };
    let root = repo();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root.join("sysconfig")).expect("sysconfig") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "service") {
            // The units name the checkout as /opt/conjure; verify copies that name this one.
            let text = std::fs::read_to_string(&p).expect("read unit");
            let copy = dir.path().join(p.file_name().expect("name"));
            std::fs::write(&copy, text.replace("/opt/conjure", &root.display().to_string())).expect("write");
            units.push(copy);
        }
    }
    units.sort();
    let names: Vec<String> = units.iter().map(|u| u.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in [
        "conjure-app.service",
        "conjure-balancer.service",
        "conjure-detector.service",
        "conjure-docker.service",
        "conjure-setup.service",
    ] {
        assert!(names.iter().any(|n| n == want), "sysconfig/{want} is missing (have {names:?})");
    }
    // conjure-docker.service requires docker.service: verify says so when Docker
    // is not installed, which is this machine's gap, not the unit's.
    // systemd's system unit search path (systemd.unit(5)).
    let docker_unit = [
        "/etc/systemd/system/docker.service",
        "/run/systemd/system/docker.service",
        "/usr/local/lib/systemd/system/docker.service",
        "/usr/lib/systemd/system/docker.service",
        "/lib/systemd/system/docker.service",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !docker_unit {
        skip("conjure-docker.service not verified: docker.service is not installed (apt-get install docker.io)");
        units.retain(|u| !u.ends_with("conjure-docker.service"));
    }
    let out = Command::new(analyze).arg("verify").args(&units).current_dir(dir.path()).output().expect("run");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Messages about units outside ours (the host's own unit files) are not ours to fix.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("conjure")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify ({}):\n{text}", out.status);
    // Type=notify with a watchdog for the native units; restart on failure; hardening.
    for unit in ["conjure-balancer", "conjure-detector", "conjure-app"] {
        let text = std::fs::read_to_string(root.join(format!("sysconfig/{unit}.service"))).expect("unit");
        for key in [
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.lines().any(|l| l.starts_with(key)), "{unit}.service has no {key}");
        }
    }
}

#[test]
fn scripts_pass_shellcheck() {
    let Some(shellcheck) = e2e::peer_tool("shellcheck", "shellcheck") else { return };
    let root = repo();
    let mut scripts = vec![PathBuf::from("on-reboot.sh")];
    for dir in ["scripts", "e2e/deploy", ".ci"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in rd {
            let p = entry.expect("entry").path();
            let is_sh = p.extension().is_some_and(|e| e == "sh")
                || std::fs::read_to_string(&p)
                    .is_ok_and(|t| t.starts_with("#!/usr/bin/env bash") || t.starts_with("#!/bin/sh"));
            if p.is_file() && is_sh {
                scripts.push(p.strip_prefix(&root).expect("relative").to_path_buf());
            }
        }
    }
    scripts.sort();
    let out = Command::new(shellcheck).arg("-x").args(&scripts).current_dir(&root).output().expect("run shellcheck");
    assert!(
        out.status.success(),
        "shellcheck -x {scripts:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- start scripts

/// Runs `script` with CONJURE_CONF = a conf with `bad`; expects one line naming `must`.
fn one_line_error(script: &str, args: &[&str], lines: &[String], must: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = write_conf(dir.path(), "conjure.conf", lines);
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    let child = clean(repo().join(script))
        .args(args)
        .env("CONJURE_CONF", &conf)
        .env("CJ_SHM_DIR", shm.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start script");
    let out = e2e::wait_all(vec![(script, child)], Duration::from_secs(30)).pop().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{script} with {lines:?} should fail; stderr:\n{stderr}");
    let got: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(got.len(), 1, "{script} with {lines:?}: expected one line, got:\n{stderr}");
    for m in must {
        let m = m.replace("{conf}", &conf.display().to_string());
        assert!(got[0].contains(&m), "{script} with {lines:?}: `{}` should mention {m:?}", got[0]);
    }
}

#[test]
fn start_scripts_give_one_line_errors() {
    let sim = "CJ_IFACE=sim:flows=10,packets=100".to_string();
    // (script, the bad line, what the one line must name). Line 2 of the test's conf.
    let cases: &[(&str, &str, &[&str])] = &[
        ("scripts/start_detector.sh", "CJ_CORECOUNT=four", &["CJ_CORECOUNT=\"four\"", "{conf}:2", "expected"]),
        ("scripts/start_app.sh", "CJ_CORECOUNT=four", &["CJ_CORECOUNT=\"four\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_CORECOUNT=four", &["CJ_CORECOUNT=\"four\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_CORECOUNT=", &["CJ_CORECOUNT=\"\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "ZBALANCE_HASH_MODE=7", &["ZBALANCE_HASH_MODE=\"7\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "N_QUEUE_SETS=0", &["N_QUEUE_SETS=\"0\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_CLUSTER_ID=5000", &["CJ_CLUSTER_ID=\"5000\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_QUEUE_SLOTS=1000", &["CJ_QUEUE_SLOTS=\"1000\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_SLOT_SIZE=13", &["CJ_SLOT_SIZE=\"13\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_ON_FULL=maybe", &["CJ_ON_FULL=\"maybe\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_BALANCER_CORE=x", &["CJ_BALANCER_CORE=\"x\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_SKIP_CORE=one", &["CJ_SKIP_CORE=\"one\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_QUEUE_OFFSET=1024", &["CJ_QUEUE_OFFSET=\"1024\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_WAIT=sometimes", &["CJ_WAIT=\"sometimes\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_LOG_INTERVAL=-1", &["CJ_LOG_INTERVAL=\"-1\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_FLOW_IDLE_TIMEOUT=0", &["CJ_FLOW_IDLE_TIMEOUT=\"0\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_FLOW_ACTIVE_TIMEOUT=1", &["CJ_FLOW_ACTIVE_TIMEOUT=\"1\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_FLOW_TABLE_SIZE=10", &["CJ_FLOW_TABLE_SIZE=\"10\"", "{conf}:2"]),
        ("scripts/start_app.sh", "CJ_RECORD_QUEUE_SLOTS=3", &["CJ_RECORD_QUEUE_SLOTS=\"3\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_AFP_PROMISC=perhaps", &["CJ_AFP_PROMISC=\"perhaps\"", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_AFP_BLOCK_SIZE=1000", &["CJ_AFP_BLOCK_SIZE=\"1000\"", "{conf}:2"]),
        ("scripts/start_detector.sh", "CJ_UNKNOWN=1", &["CJ_UNKNOWN", "{conf}:2"]),
        ("scripts/start_balancer.sh", "CJ_IFACE=foo:bar", &["CJ_IFACE=\"foo:bar\"", "{conf}:2"]),
        (
            "scripts/start_app.sh",
            "CJ_STATION_CONFIG=/nonexistent/app.toml",
            &["CJ_STATION_CONFIG", "/nonexistent/app.toml"],
        ),
    ];
    for (script, bad, must) in cases {
        // The sim source first (line 2 is the bad value): the balancer would otherwise stop at CJ_IFACE.
        let mut lines = vec![(*bad).to_string()];
        if *script == "scripts/start_balancer.sh" && !bad.starts_with("CJ_IFACE") {
            lines.push(sim.clone());
        }
        one_line_error(script, &[], &lines, must);
    }
    // A conjure.conf that is not there.
    let out = clean(repo().join("scripts/start_detector.sh"))
        .env("CONJURE_CONF", "/nonexistent/conjure.conf")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.lines().count() == 1 && stderr.contains("CONJURE_CONF"), "{stderr}");
    // zc: preconditions are the balancer's own preflight, one line before anything is made: a
    // balancer built without PF_RING says so; one built with it names the missing module.
    if !Path::new("/proc/net/pf_ring").exists() {
        let direct = clean(e2e::bin("cj-balancer")).env("CJ_IFACE", "zc:cjtest0").output().expect("run");
        let pfring_built = !String::from_utf8_lossy(&direct.stderr).contains("--features pfring");
        let must: &[&str] = if pfring_built {
            &["CJ_IFACE=\"zc:cjtest0\"", "PF_RING kernel module", "modprobe pf_ring"]
        } else {
            &["PF_RING device cjtest0 needs cj-balancer built with `--features pfring`"]
        };
        one_line_error("scripts/start_balancer.sh", &[], &["CJ_IFACE=zc:cjtest0".into()], must);
    }
    // on-reboot.sh's own variables (a dry run: nothing is touched).
    for (bad, must) in [
        ("CJ_TUN=maybe", "CJ_TUN=\"maybe\""),
        ("CJ_HUGEPAGES=lots", "CJ_HUGEPAGES=\"lots\""),
        ("CJ_SHM_OWNER=nosuchuser:nosuchgroup", "CJ_SHM_OWNER=\"nosuchuser:nosuchgroup\""),
        ("CJ_HUGEPAGES_MOUNT=relative/path", "CJ_HUGEPAGES_MOUNT=\"relative/path\""),
        ("CJ_CORECOUNT=four", "CJ_CORECOUNT=\"four\""),
    ] {
        one_line_error("on-reboot.sh", &["--dry-run"], &[bad.to_string()], &[must, "expected"]);
    }
}

// ---------------------------------------------------------------- systemd notify

/// `ExecStart=` of a unit, with /opt/conjure replaced by this checkout.
fn exec_start(unit: &str) -> Vec<String> {
    let root = repo();
    let text = std::fs::read_to_string(root.join("sysconfig").join(unit)).expect("unit");
    let line =
        text.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap_or_else(|| panic!("{unit}: no ExecStart="));
    line.replace("/opt/conjure", &root.display().to_string()).split_whitespace().map(str::to_owned).collect()
}

/// Messages received on a notify socket, each datagram split into its lines.
struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
    got: Vec<(Instant, String)>,
}

impl NotifySocket {
    fn bind(dir: &Path, name: &str) -> Self {
        let path = dir.join(name);
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_nonblocking(true).expect("nonblocking");
        Self { sock, path, got: Vec::new() }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            for l in String::from_utf8_lossy(&buf[..n]).lines() {
                self.got.push((Instant::now(), l.to_owned()));
            }
        }
    }

    fn count(&self, what: &str) -> usize {
        self.got.iter().filter(|(_, l)| l == what).count()
    }

    fn has_prefix(&self, what: &str) -> bool {
        self.got.iter().any(|(_, l)| l.starts_with(what))
    }
}

#[test]
fn native_units_notify_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out");
    let conf = write_conf(
        dir.path(),
        "conjure.conf",
        &[
            // A paced synthetic source that outlives the test: it is stopped by SIGTERM.
            "CJ_IFACE=sim:flows=200,packets=100000000,rate=20000,seed=3".into(),
            "CJ_CORECOUNT=1".into(),
            "CJ_LOG_INTERVAL=1".into(),
            "CJ_QUEUE_SLOTS=4096".into(),
            "CJ_RECORD_QUEUE_SLOTS=4096".into(),
            "CJ_FLOW_TABLE_SIZE=65536".into(),
        ],
    );
    // 400 ms watchdog: a ping every 200 ms.
    let watchdog_usec = 400_000u64;
    let mut procs: Vec<(&str, Child, NotifySocket)> = Vec::new();
    // In unit order: app, detector (After=app), balancer (After=detector).
    for (unit, extra) in [
        ("conjure-app.service", vec!["--out".to_string(), out.display().to_string()]),
        ("conjure-detector.service", vec![]),
        ("conjure-balancer.service", vec![]),
    ] {
        let argv = exec_start(unit);
        let mut sock = NotifySocket::bind(dir.path(), &format!("{unit}.notify"));
        let child = clean(&argv[0])
            .args(&argv[1..])
            .args(&extra)
            .env("CONJURE_CONF", &conf)
            .env("CJ_SHM_DIR", shm.path())
            .env("NOTIFY_SOCKET", &sock.path)
            .env("WATCHDOG_USEC", watchdog_usec.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        // READY=1 before the next unit starts, as systemd orders Type=notify units.
        let start = Instant::now();
        while sock.count("READY=1") == 0 && start.elapsed() < Duration::from_secs(20) {
            sock.drain();
            for (_, _, earlier) in procs.iter_mut() {
                earlier.drain();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        procs.push((unit, child, sock));
        let (_, child, sock) = procs.last_mut().expect("just pushed");
        if sock.count("READY=1") == 0 {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().expect("stderr").read_to_string(&mut err);
            for (_, c, _) in procs.iter_mut() {
                let _ = c.kill();
            }
            panic!("{unit}: no READY=1 within 20 s; stderr:\n{err}");
        }
    }
    // Watchdog pings from each for 1.5 s: at least 4 at a 200 ms interval.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        for (_, _, sock) in procs.iter_mut() {
            sock.drain();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Pings are paced at about half the timeout, never a burst. Counted, not timed: when
    // this thread is slow to drain, pings queue in the socket and arrive together, but
    // their number cannot exceed one per 100 ms since READY=1 (a burst sends thousands).
    for (unit, _, sock) in &procs {
        let ready = sock.got.iter().find(|(_, l)| l == "READY=1").map(|(t, _)| *t).expect("READY=1 seen");
        let pings = sock.count("WATCHDOG=1") as u128;
        // (+4: READY=1 itself may have been drained late.)
        let most = ready.elapsed().as_millis() / 100 + 4;
        assert!(pings <= most, "{unit}: {pings} pings in {:?}: more than one per 100 ms", ready.elapsed());
    }
    // Stop in reverse order, as systemd stops them: balancer, detector, app.
    let mut results = Vec::new();
    while let Some((unit, child, mut sock)) = procs.pop() {
        let pid = child.id().to_string();
        run_ok(Command::new("kill").args(["-TERM", &pid]));
        let out = e2e::wait_all(vec![(unit, child)], Duration::from_secs(60)).pop().expect("output");
        sock.drain();
        results.push((unit, out, sock));
    }
    for (unit, out, sock) in &results {
        let lines: Vec<&str> = sock.got.iter().map(|(_, l)| l.as_str()).collect();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{unit} exited {}:\n{stderr}", out.status);
        assert_eq!(sock.count("READY=1"), 1, "{unit}: {lines:?}");
        assert!(sock.has_prefix("STATUS="), "{unit}: no STATUS= line: {lines:?}");
        let pings = sock.count("WATCHDOG=1");
        assert!(pings >= 4, "{unit}: {pings} watchdog pings in 1.5 s at a 200 ms interval: {lines:?}");
        assert!(sock.count("STOPPING=1") >= 1, "{unit}: no STOPPING=1 on SIGTERM: {lines:?}");
    }
    // The app wrote its files on the way out.
    assert!(out.join("flows.csv").exists(), "the app wrote no flows.csv");
}

// ---------------------------------------------------------------- on-reboot.sh

/// The on-reboot.sh tests look at machine-wide state (hugepages): one at a time.
static HOST_STATE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Removes the test's network namespace (and so its veth and tun devices).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn in_ns(ns: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    run_ok(&mut cmd)
}

/// Everything on-reboot.sh may change, as text.
fn snapshot(ns: &str, qdir: &Path, hugemnt: &Path) -> String {
    let mut s = String::new();
    s += &in_ns(ns, &["ethtool", "-k", "vcap0"]);
    s += &in_ns(ns, &["ip", "-d", "link", "show"]);
    s += &in_ns(ns, &["ip", "tuntap", "show"]);
    s += &match std::fs::metadata(qdir) {
        Ok(m) => {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            format!("qdir {} {}:{} {:o}\n", qdir.display(), m.uid(), m.gid(), m.permissions().mode())
        }
        Err(_) => format!("qdir {} absent\n", qdir.display()),
    };
    s += &std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default();
    s += &std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&hugemnt.display().to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    s
}

fn on_reboot(ns: &str, conf: &Path, args: &[&str]) -> (String, String) {
    let mut cmd = clean("ip");
    // Mounts made under `ip netns exec` vanish with its mount namespace: the shared-mount
    // step is checked by the compose test, which runs on-reboot.sh on the host.
    cmd.args(["netns", "exec", ns])
        .arg(repo().join("on-reboot.sh"))
        .args(args)
        .env("CONJURE_CONF", conf)
        .env("CONJURE_NETNS_DIRS", "");
    let out = cmd.output().expect("run on-reboot.sh");
    let (o, e) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "on-reboot.sh {args:?} failed ({}):\n{o}\n{e}", out.status);
    (o, e)
}

#[test]
fn on_reboot_sets_up_a_test_host() {
    let _host = HOST_STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !e2e::live::is_root() {
        skip("needs root (network namespaces, veth, tun devices)");
        return;
    }
    if e2e::peer_tool("ip", "iproute2").is_none() || e2e::peer_tool("ethtool", "ethtool").is_none() {
        return;
    }
    let ns = Netns(format!("cjdeploy{}", std::process::id()));
    run_ok(Command::new("ip").args(["netns", "add", &ns.0]));
    run_ok(Command::new("ip").args(["-n", &ns.0, "link", "add", "vcap0", "type", "veth", "peer", "name", "vpeer0"]));
    // veth starts with GRO off: turn it on so there is something to turn off.
    run_ok(Command::new("ip").args(["netns", "exec", &ns.0, "ethtool", "-K", "vcap0", "gro", "on"]));

    let dir = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    let huge = hugepage_dir();
    let hugemnt = huge.path().join("hugepages");
    let conf = write_conf(
        dir.path(),
        "conjure.conf",
        &[
            "CJ_IFACE=vcap0".into(),
            format!("CJ_SHM_DIR={}", shm.path().display()),
            "CJ_CLUSTER_ID=77".into(),
            "CJ_SHM_OWNER=nobody:nogroup".into(),
            "CJ_CORECOUNT=2".into(),
            "CJ_QUEUE_OFFSET=3".into(),
            "CJ_TUN=yes".into(),
            // Hugepages are global (not per namespace): on_reboot_reserves_hugepages, opt-in.
            "CJ_HUGEPAGES=0".into(),
            format!("CJ_HUGEPAGES_MOUNT={}", hugemnt.display()),
        ],
    );
    let qdir = shm.path().join("conjure-77");
    let hugepages_before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default();
    let host_links = || {
        ["tun3", "tun4", "vcap0"]
            .map(|n| Command::new("ip").args(["link", "show", "dev", n]).output().is_ok_and(|o| o.status.success()))
    };
    let host_links_before = host_links();

    // --dry-run: each step printed, nothing changed at all.
    let before = snapshot(&ns.0, &qdir, &hugemnt);
    let (dry, _) = on_reboot(&ns.0, &conf, &["--dry-run"]);
    assert_eq!(snapshot(&ns.0, &qdir, &hugemnt), before, "--dry-run changed something:\n{dry}");
    for step in [
        "would run: ethtool -K vcap0",
        "would run: ip link set dev vcap0 promisc on",
        &format!("would run: mkdir {}", qdir.display()),
        "would run: chown -h nobody:nogroup",
        "would run: chmod 3770",
        "would run: ip tuntap add mode tun name tun3",
        "would run: ip tuntap add mode tun name tun4",
    ] {
        assert!(dry.contains(step), "--dry-run does not show `{step}`:\n{dry}");
    }
    assert!(!hugemnt.exists(), "--dry-run created {}", hugemnt.display());

    // The real run.
    let (first, first_err) = on_reboot(&ns.0, &conf, &[]);
    let k = in_ns(&ns.0, &["ethtool", "-k", "vcap0"]);
    for feature in
        ["generic-receive-offload", "large-receive-offload", "generic-segmentation-offload", "tcp-segmentation-offload"]
    {
        let line =
            k.lines().find(|l| l.starts_with(&format!("{feature}:"))).unwrap_or_else(|| panic!("{feature}?\n{k}"));
        assert!(line.contains(": off"), "{line} after on-reboot.sh:\n{first}\n{first_err}");
    }
    let link = in_ns(&ns.0, &["ip", "-o", "link", "show", "dev", "vcap0"]);
    assert!(link.contains("PROMISC") && link.contains(",UP"), "vcap0 not promiscuous and up: {link}");
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(&qdir).expect("queue directory created");
        let nobody = run_ok(Command::new("id").args(["-u", "nobody"])).trim().parse::<u32>().expect("uid");
        let nogroup = run_ok(Command::new("getent").args(["group", "nogroup"]))
            .split(':')
            .nth(2)
            .and_then(|g| g.trim().parse::<u32>().ok())
            .expect("gid");
        assert_eq!((m.uid(), m.gid()), (nobody, nogroup), "owner of {}", qdir.display());
        assert_eq!(m.permissions().mode() & 0o7777, 0o3770, "mode of {}", qdir.display());
    }
    let tuns = in_ns(&ns.0, &["ip", "tuntap", "show"]);
    assert!(
        tuns.contains("tun3:") && tuns.contains("tun4:"),
        "tun3 and tun4 (CJ_QUEUE_OFFSET=3, CJ_CORECOUNT=2): {tuns}"
    );
    assert!(!tuns.contains("tun2:") && !tuns.contains("tun5:"), "{tuns}");
    // Nothing was made in the host's namespace (other tests may change its links meanwhile:
    // only the names this test uses are compared).
    assert_eq!(host_links(), host_links_before, "on-reboot.sh touched the host's namespace");

    // A second run changes nothing.
    let after_first = snapshot(&ns.0, &qdir, &hugemnt);
    let (second, _) = on_reboot(&ns.0, &conf, &[]);
    assert_eq!(snapshot(&ns.0, &qdir, &hugemnt), after_first, "the second run changed something:\n{second}");
    assert!(second.contains("changed 0 thing(s)") && !second.contains("run: "), "second run:\n{second}");
    let (dry2, _) = on_reboot(&ns.0, &conf, &["--dry-run"]);
    assert!(dry2.contains("would change 0 thing(s)"), "dry run after setup:\n{dry2}");

    assert_eq!(
        std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap_or_default(),
        hugepages_before,
        "hugepages must be as before the test"
    );
}

/// A conjure.conf under which on-reboot.sh acts on nothing but the queue directory
/// `shm`/conjure-77: no interface, hugepages, tun device or mount.
fn queue_dir_conf(dir: &Path, shm: &Path, extra: &[&str]) -> PathBuf {
    let mut lines = vec![
        "CJ_IFACE=pcap:/nonexistent.pcap".to_owned(),
        format!("CJ_SHM_DIR={}", shm.display()),
        "CJ_CLUSTER_ID=77".into(),
        "CJ_TUN=no".into(),
        "CJ_HUGEPAGES=0".into(),
    ];
    lines.extend(extra.iter().map(|l| l.to_string()));
    write_conf(dir, "conjure.conf", &lines)
}

/// on-reboot.sh on this host (no namespace: `queue_dir_conf` leaves it alone).
fn on_reboot_here(conf: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = clean(repo().join("on-reboot.sh"));
    cmd.args(args).env("CONJURE_CONF", conf).env("CONJURE_NETNS_DIRS", "");
    cmd.output().expect("run on-reboot.sh")
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid(), m.permissions().mode() & 0o7777)
}

fn gid_of(group: &str) -> u32 {
    run_ok(Command::new("getent").args(["group", group]))
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .expect("gid")
}

#[test]
fn on_reboot_refuses_a_link_file_or_foreign_directory_planted_as_the_queue_directory() {
    if !e2e::live::is_root() {
        skip("needs root (chown)");
        return;
    }
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    let conf = queue_dir_conf(dir.path(), shm.path(), &["CJ_SHM_OWNER=nobody:nogroup"]);
    let qdir = shm.path().join("conjure-77");
    let victim_dir = dir.path().join("victim-dir");
    let victim_file = dir.path().join("victim-file");
    std::fs::create_dir(&victim_dir).expect("mkdir");
    std::fs::write(&victim_file, "x").expect("write");
    for v in [&victim_dir, &victim_file] {
        std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let nobody = gid_of("nogroup");
    for what in ["a link to a directory", "a link to a file", "a file", "a directory of another user"] {
        let _ = std::fs::remove_file(&qdir).or_else(|_| std::fs::remove_dir(&qdir));
        match what {
            "a link to a directory" => symlink(&victim_dir, &qdir).expect("symlink"),
            "a link to a file" => symlink(&victim_file, &qdir).expect("symlink"),
            "a file" => std::fs::write(&qdir, "x").expect("write"),
            _ => {
                std::fs::create_dir(&qdir).expect("mkdir");
                std::fs::set_permissions(&qdir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
                chown(&qdir, Some(1), Some(1)).expect("chown");
            }
        }
        let before = [owner_and_mode(&qdir), owner_and_mode(&victim_dir), owner_and_mode(&victim_file)];
        let out = on_reboot_here(&conf, &["--strict"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(
            stderr.contains(&format!("could not: create {}", qdir.display()))
                || stderr.contains(&format!("could not: set up {}", qdir.display())),
            "{what}: {stderr}"
        );
        let after = [owner_and_mode(&qdir), owner_and_mode(&victim_dir), owner_and_mode(&victim_file)];
        assert_eq!(after, before, "{what}: on-reboot.sh changed the planted name or what it points to");
        assert_ne!(after[1].1, nobody, "{what}");
    }
}

#[test]
fn a_link_planted_as_the_queue_directory_while_on_reboot_runs_is_never_chowned_or_chmodded() {
    if !e2e::live::is_root() {
        skip("needs root (chown)");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // Shared like /dev/shm: root's, 1777.
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    std::fs::set_permissions(shm.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod shm");
    let conf = queue_dir_conf(dir.path(), shm.path(), &["CJ_SHM_OWNER=nobody:nogroup"]);
    let qdir = shm.path().join("conjure-77");
    let victim_dir = dir.path().join("victim-dir");
    let victim_file = dir.path().join("victim-file");
    std::fs::create_dir(&victim_dir).expect("mkdir");
    std::fs::write(&victim_file, "x").expect("write");
    for v in [&victim_dir, &victim_file] {
        std::fs::set_permissions(v, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let real = |tool: &str| run_ok(Command::new("sh").args(["-c", &format!("command -v {tool}")])).trim().to_owned();
    for victim in [&victim_file, &victim_dir] {
        let _ = std::fs::remove_file(&qdir).or_else(|_| std::fs::remove_dir(&qdir));
        // The user's link appears right after the check: when the script first makes a
        // directory (mkdir, or mktemp -d), the name is taken by a link.
        let wrappers = tempfile::tempdir().expect("wrappers");
        for tool in ["mkdir", "mktemp"] {
            let script = format!(
                "#!/bin/sh\n[ -e '{q}' ] || [ -L '{q}' ] || ln -s '{v}' '{q}'\nexec '{real}' \"$@\"\n",
                q = qdir.display(),
                v = victim.display(),
                real = real(tool)
            );
            let path = wrappers.path().join(tool);
            std::fs::write(&path, script).expect("write wrapper");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod wrapper");
        }
        let before = [owner_and_mode(victim), owner_and_mode(&victim_dir), owner_and_mode(&victim_file)];
        let mut cmd = clean(repo().join("on-reboot.sh"));
        let path = format!("{}:{}", wrappers.path().display(), std::env::var("PATH").unwrap_or_default());
        cmd.arg("--strict").env("CONJURE_CONF", &conf).env("CONJURE_NETNS_DIRS", "").env("PATH", path);
        let out = cmd.output().expect("run on-reboot.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(std::fs::symlink_metadata(&qdir).expect("planted").file_type().is_symlink(), "the wrapper planted");
        let link = owner_and_mode(&qdir);
        assert_eq!((link.0, link.1), (0, 0), "{}: the link's owner changed (chown -h): {stderr}", victim.display());
        let after = [owner_and_mode(victim), owner_and_mode(&victim_dir), owner_and_mode(&victim_file)];
        assert_eq!(
            after,
            before,
            "{}: on-reboot.sh changed what the planted link points to: {stderr}",
            victim.display()
        );
        assert_eq!(out.status.code(), Some(1), "--strict: the queue directory could not be made: {stderr}");
        let left: Vec<_> =
            std::fs::read_dir(shm.path()).expect("ls shm").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left.len(), 1, "only the planted link is left in CJ_SHM_DIR: {left:?}");
    }
}

#[test]
fn on_reboot_gives_the_queue_directory_cj_group() {
    if !e2e::live::is_root() {
        skip("needs root (chown)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    let qdir = shm.path().join("conjure-77");
    // CJ_SHM_OWNER as shipped (root:root): the directory still gets CJ_GROUP, which the
    // binaries keep on an existing directory.
    let conf = queue_dir_conf(dir.path(), shm.path(), &["CJ_GROUP=nogroup"]);
    let out = on_reboot_here(&conf, &["--strict"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(owner_and_mode(&qdir), (0, gid_of("nogroup"), 0o3770), "{}", String::from_utf8_lossy(&out.stdout));
    let again = on_reboot_here(&conf, &["--strict"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("changed 0 thing(s)"), "second run changed something");
    // A CJ_SHM_OWNER group that is neither CJ_GROUP nor root: one line, exit 2, nothing done.
    std::fs::remove_dir(&qdir).expect("rmdir");
    let conf = queue_dir_conf(dir.path(), shm.path(), &["CJ_GROUP=nogroup", "CJ_SHM_OWNER=root:daemon"]);
    let out = on_reboot_here(&conf, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.lines().count() == 1 && stderr.contains("CJ_SHM_OWNER=\"root:daemon\"") && stderr.contains("CJ_GROUP"),
        "{stderr}"
    );
    assert!(!qdir.exists(), "the queue directory was made despite the refusal");
}

/// Gives back what `on_reboot_reserves_hugepages` took, also when it fails.
struct Hugepages {
    before: String,
    mount: PathBuf,
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", self.before.trim());
    }
}

#[test]
fn on_reboot_reserves_hugepages() {
    let _host = HOST_STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if std::env::var("CJ_TEST_HUGEPAGES").map_or(true, |v| v != "1") {
        e2e::skip_unless_asked(
            "hugepages belong to the whole machine: set CJ_TEST_HUGEPAGES=1 to reserve 2 and give them back",
        );
        return;
    }
    if !e2e::live::is_root() {
        skip("needs root (hugepages)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/dev/shm").expect("shm");
    let before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").expect("nr_hugepages");
    let huge = hugepage_dir();
    let guard = Hugepages { before: before.clone(), mount: huge.path().join("hugepages") };
    let want = before.trim().parse::<u64>().expect("number") + 2;
    let conf = write_conf(
        dir.path(),
        "conjure.conf",
        &[
            "CJ_IFACE=pcap:/nonexistent.pcap".into(),
            format!("CJ_SHM_DIR={}", shm.path().display()),
            "CJ_TUN=no".into(),
            format!("CJ_HUGEPAGES={want}"),
            // A trailing slash: /proc/mounts has none, and a second run must still find the mount.
            format!("CJ_HUGEPAGES_MOUNT={}/", guard.mount.display()),
        ],
    );
    let run = || {
        run_ok(
            clean(repo().join("on-reboot.sh")).arg("--strict").env("CONJURE_CONF", &conf).env("CONJURE_NETNS_DIRS", ""),
        )
    };
    let first = run();
    let nr: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap().trim().parse().unwrap();
    assert!(nr >= want, "CJ_HUGEPAGES={want} reserved {nr}:\n{first}");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts.lines().any(|l| l.contains(&guard.mount.display().to_string()) && l.contains("hugetlbfs")),
        "no hugetlbfs at {}:\n{first}",
        guard.mount.display()
    );
    let second = run();
    assert!(second.contains("changed 0 thing(s)"), "second run:\n{second}");
    drop(guard);
    assert_eq!(std::fs::read_to_string("/proc/sys/vm/nr_hugepages").unwrap(), before, "hugepages given back");
}

// ---------------------------------------------------------------- docker

/// Makes sure dockerd answers; starts it when installed and not running.
fn docker_ready() -> bool {
    let ok = || {
        Command::new("docker")
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ok() {
        return true;
    }
    let Some(dockerd) = e2e::find_tool("dockerd") else {
        skip("dockerd is not installed (apt-get install docker.io; .ci/run installs it)");
        return false;
    };
    eprintln!("starting {} in the background (log: /var/log/station-test-dockerd.log)", dockerd.display());
    let log = std::fs::File::create("/var/log/station-test-dockerd.log").expect("dockerd log");
    // setsid -f: dockerd in a session of its own, left running for later tests and runs.
    let started = Command::new("setsid")
        .arg("-f")
        .arg(&dockerd)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .status()
        .expect("start dockerd");
    assert!(started.success(), "setsid -f dockerd: {started}");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("dockerd did not answer within 60 s: see /var/log/station-test-dockerd.log");
}

/// `compose.sh down` and the queue directory removed, whatever happened.
struct Stack {
    env: Vec<(String, String)>,
    shm: PathBuf,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Command {
        let mut cmd = clean(repo().join("scripts/compose.sh"));
        cmd.args(args).current_dir(repo());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "--timeout", "30"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.shm);
    }
}

/// The compose tests run one at a time (one image build, one stack); the
/// flag says the images are built.
static COMPOSE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);

/// Root, docker, debootstrap and docker-compose, then the images (once per
/// test binary): `None` when a prerequisite is missing (skipped).
fn compose_ready() -> Option<std::sync::MutexGuard<'static, bool>> {
    if !e2e::live::is_root() {
        skip("needs root (docker)");
        return None;
    }
    if e2e::peer_tool("docker", "docker.io").is_none()
        || e2e::peer_tool("debootstrap", "debootstrap").is_none()
        || e2e::peer_tool("docker-compose", "docker-compose").is_none()
        || !docker_ready()
    {
        return None;
    }
    let mut built = COMPOSE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !*built {
        build_images();
        *built = true;
    }
    Some(built)
}

/// The base and builder images, then `make container target=sim` on them.
fn build_images() {
    let root = repo();
    let started = Instant::now();
    // Base and builder images, made here (no registry), reused when present.
    let images = run_ok(Command::new(root.join("e2e/deploy/images.sh")).current_dir(&root));
    let mut names = images.lines();
    let (base, builder) = (names.next().expect("base image"), names.next().expect("builder image"));
    eprintln!("base and builder images ready after {:?}", started.elapsed());

    // The builder stage, tagged, so that it stays the cache of the next run while older
    // builds' stages become untagged and are pruned below (only images of docker/Dockerfile).
    run_ok(
        Command::new("docker")
            .args(["build", "-q", "-f", "docker/Dockerfile", "--target", "builder"])
            .args(["--build-arg", &format!("BUILDER_IMAGE={builder}"), "-t", "station-build-cache:latest", "."])
            .current_dir(&root),
    );
    // make container target=sim, as the README says, on those images.
    let build = Command::new("make")
        .args(["container", "target=sim", &format!("base_image={base}"), &format!("builder_image={builder}")])
        .current_dir(&root)
        .output()
        .expect("make container");
    if !build.status.success() {
        let text = format!("{}{}", String::from_utf8_lossy(&build.stdout), String::from_utf8_lossy(&build.stderr));
        let tail: Vec<&str> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!("make container target=sim failed:\n{}", tail.join("\n"));
    }
    eprintln!("conjure_sim built after {:?}", started.elapsed());
    // Each rebuild leaves the previous build's stages untagged: drop ours, and only ours.
    let _ = Command::new("docker")
        .args(["image", "prune", "-f", "--filter", "label=station.build=conjure"])
        .stdout(Stdio::null())
        .status();
    let inspect = run_ok(Command::new("docker").args(["image", "inspect", "--format", "{{.Size}}", "conjure_sim"]));
    let size: u64 = inspect.trim().parse().expect("image size");
    assert!(size < 400 << 20, "conjure_sim is {} MiB: runtime images must stay small", size >> 20);
    let has_cc = Command::new("docker")
        .args(["run", "--rm", "--entrypoint", "sh", "conjure_sim", "-c", "command -v cc || command -v cargo"])
        .output()
        .expect("docker run");
    assert!(!has_cc.status.success(), "conjure_sim contains a compiler: {}", String::from_utf8_lossy(&has_cc.stdout));
}

/// A compose stack of the test, with its data directory (mounted at
/// /var/lib/conjure) and conjure.conf; `down` first when dropped.
struct ComposeRun {
    stack: Stack,
    data: tempfile::TempDir,
    _huge: tempfile::TempDir,
    conf: PathBuf,
    _conf_dir: tempfile::TempDir,
}

impl ComposeRun {
    /// conjure.conf with CJ_IFACE=`iface` (and `extra` lines) for a
    /// stack of `workers` workers on the images, on-reboot.sh run as the unit
    /// does, and the stack's environment (`env` added); not started.
    fn new(name: &str, iface: &str, workers: usize, extra: &[String], env: &[(&str, &str)]) -> Self {
        let data = tempfile::Builder::new().prefix("station-deploy.").tempdir_in("/var/tmp").expect("data dir");
        let huge = hugepage_dir();
        let shm = PathBuf::from(format!("/dev/shm/station-deploy-{name}.{}", std::process::id()));
        std::fs::create_dir_all(&shm).expect("shm dir");
        // Not in the data directory: there it would be the containers' /var/lib/conjure/conjure.conf.
        let conf_dir = tempfile::tempdir().expect("conf dir");
        let mut lines = vec![
            format!("CJ_IFACE={iface}"),
            format!("CJ_SHM_DIR={}", shm.display()),
            format!("CJ_CORECOUNT={workers}"),
            "CJ_COREBASE=0".into(),
            "CJ_LOG_INTERVAL=0".into(),
            "CJ_QUEUE_SLOTS=4096".into(),
            "CJ_RECORD_QUEUE_SLOTS=4096".into(),
            "CJ_FLOW_TABLE_SIZE=65536".into(),
            "CJ_IMAGE=conjure_sim".into(),
            format!("CJ_HUGEPAGES_MOUNT={}", huge.path().join("hugepages").display()),
            // What on-reboot.sh must not do on the test machine: no tun devices, no hugepages.
            "CJ_TUN=no".into(),
            "CJ_HUGEPAGES=0".into(),
        ];
        lines.extend_from_slice(extra);
        let conf = write_conf(conf_dir.path(), "conjure.conf", &lines);
        // As conjure-docker.service does: on-reboot.sh first (here it creates the queue
        // directory and makes the netns directories the detector mounts rslave shared mounts).
        let setup = run_ok(clean(repo().join("on-reboot.sh")).arg("--strict").env("CONJURE_CONF", &conf));
        assert!(setup.contains("nothing left undone"), "on-reboot.sh:\n{setup}");
        let mut vars = vec![
            ("CONJURE_CONF".into(), conf.display().to_string()),
            ("CONJURE_DATA".into(), data.path().display().to_string()),
            ("CONJURE_ENV_FILE".into(), data.path().join("compose.env").display().to_string()),
            ("PF_RING_ETC".into(), data.path().join("pf_ring").display().to_string()),
            // No journald on a test machine without systemd.
            ("CONJURE_LOG_DRIVER".into(), "json-file".into()),
            ("COMPOSE_PROJECT_NAME".into(), format!("stationtest{name}{}", std::process::id())),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self { stack: Stack { env: vars, shm }, data, _huge: huge, conf, _conf_dir: conf_dir }
    }

    fn logs(&self) -> String {
        String::from_utf8_lossy(&self.stack.compose(&["logs", "--no-color"]).output().expect("logs").stdout)
            .into_owned()
    }

    /// The container of each service, in start order.
    fn containers(&self) -> Vec<(String, String)> {
        ["app", "detector", "balancer"]
            .iter()
            .map(|s| {
                let id = run_ok(&mut self.stack.compose(&["ps", "-q", s])).trim().to_string();
                assert!(!id.is_empty(), "no {s} container:\n{}", self.logs());
                (s.to_string(), id)
            })
            .collect()
    }

    /// Waits until every container has exited 0 with no automatic restart (a finite source ends the stream).
    fn wait_exited(&self, ids: &[(String, String)]) {
        let deadline = Instant::now() + Duration::from_secs(180);
        for (service, id) in ids {
            loop {
                let state = inspect(id, "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}");
                let mut it = state.split_whitespace();
                let (status, code, restarts) =
                    (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next().unwrap_or(""));
                assert_eq!(restarts, "0", "{service} failed and was restarted:\n{}", self.logs());
                if status == "exited" {
                    assert_eq!(code, "0", "{service} exited {code}:\n{}", self.logs());
                    break;
                }
                assert!(Instant::now() < deadline, "{service} still {status} after 180 s:\n{}", self.logs());
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// `docker inspect --format FORMAT ID`, trimmed.
fn inspect(id: &str, format: &str) -> String {
    run_ok(Command::new("docker").args(["inspect", "--format", format, id])).trim().to_string()
}

#[test]
fn compose_stack_processes_a_capture() {
    let Some(_images) = compose_ready() else { return };
    let started = Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let run = ComposeRun::new("compose", "pcap:/var/lib/conjure/capture.pcap", workers, &[], &[]);
    // A generated capture and its ground truth, in the directory mounted at /var/lib/conjure.
    let spec: sim::SimSpec =
        "flows=500,packets=50000,sizes=64:40/576:30/1500:30,v6=20,vlan=10,seed=21".parse().expect("spec");
    let truth = sim::write_pcap(&spec, &run.data.path().join("capture.pcap"), false).expect("write capture");

    // conjure.conf's variables reach compose: the detector's cpuset is the core plan,
    // the image is CJ_IMAGE, and the containers' environment has CJ_IFACE.
    let config = run_ok(&mut run.stack.compose(&["config"]));
    let plan = (0..workers).map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    assert!(
        config.contains(&format!("cpuset: '{plan}'"))
            || config.contains(&format!("cpuset: \"{plan}\""))
            || config.contains(&format!("cpuset: {plan}")),
        "no cpuset {plan} in:\n{config}"
    );
    assert!(config.contains("image: conjure_sim"), "{config}");
    let env_file = std::fs::read_to_string(run.data.path().join("compose.env")).expect("compose.env");
    assert!(env_file.lines().any(|l| l == "CJ_IFACE=pcap:/var/lib/conjure/capture.pcap"), "{env_file}");

    run_ok(&mut run.stack.compose(&["up"]));
    // The capture is finite: the balancer ends the stream, the detector flushes, the app writes and exits.
    run.wait_exited(&run.containers());
    let got = read_flows_csv(&run.data.path().join("out/flows.csv"));
    if let Some(d) = diff_rows(&got, &truth_rows(&truth)) {
        panic!("the compose stack's flows.csv differs from the ground truth:\n{d}\n{}", run.logs());
    }
    eprintln!("compose stack matched the ground truth ({} rows) after {:?}", got.len(), started.elapsed());
}

#[test]
fn compose_services_stopped_and_started_mid_run_lose_nothing() {
    let Some(_images) = compose_ready() else { return };
    let started = Instant::now();
    // A paced generator (60 s of stream at 1,000 frames a second), queues that
    // hold all of it while a consumer is stopped, and health checks every second.
    let sim_text = "flows=300,packets=60000,sizes=64:50/1000:50,v6=20,vlan=10,seed=23,rate=1000";
    let spec: sim::SimSpec = sim_text.parse().expect("spec");
    let truth = sim::truth(&spec);
    let run = ComposeRun::new(
        "restarts",
        &format!("sim:{sim_text}"),
        1,
        &["CJ_QUEUE_SLOTS=65536".into()],
        &[("CONJURE_HEALTH_INTERVAL", "1s")],
    );
    run_ok(&mut run.stack.compose(&["up"]));
    eprintln!("compose up returned after {:?}", started.elapsed());
    let ids = run.containers();
    let health = |id: &str| inspect(id, "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}");
    let wait_for = |service: &str, id: &str, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = health(id);
            if now == want {
                return;
            }
            assert!(Instant::now() < deadline, "{service}: still {now:?}, not {want:?}, after 60 s:\n{}", run.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The host's own `cj-<service> health` (heartbeats in the shared pages, across PID namespaces).
    let host_health = |service: &str| {
        clean(e2e::bin(&format!("cj-{service}")))
            .args(["health", "--config"])
            .arg(&run.conf)
            .output()
            .expect("health")
            .status
            .success()
    };
    let balancer_page = || {
        let dir = std::fs::read_dir(&run.stack.shm).ok()?.filter_map(Result::ok).find(|e| e.path().is_dir())?.path();
        let page = shmq::CounterPage::read(&station::naming::balancer_stats_path(&dir)).ok()?;
        let get = |n: &str| page.iter().find(|(k, _)| k == n).map_or(0, |(_, v)| *v);
        Some((get("received"), get("ended")))
    };
    for (service, id) in &ids {
        wait_for(service, id, "running healthy");
    }
    eprintln!("stack healthy after {:?}", started.elapsed());
    for (service, id) in [&ids[2], &ids[1], &ids[0]] {
        let (received, ended) = balancer_page().unwrap_or_default();
        assert!(
            ended == 0 && received < truth.total_frames,
            "the stream is no longer running before {service} is stopped (received {received}, ended {ended}): \
             the machine is too slow for this test's 60 s stream\n{}",
            run.logs()
        );
        run_ok(Command::new("docker").args(["stop", id]));
        // Stopped (docker stop returns once it is): not running, so compose shows no health but its exit,
        // and its heartbeat goes stale.
        assert_eq!(inspect(id, "{{.State.Status}}"), "exited", "{service} after docker stop");
        let ps = run_ok(&mut run.stack.compose(&["ps", service]));
        assert!(ps.contains("Exit 0") && !ps.contains("healthy"), "compose ps does not show {service} stopped:\n{ps}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while host_health(service) {
            assert!(Instant::now() < deadline, "cj-{service} health still says healthy 30 s after docker stop");
            std::thread::sleep(Duration::from_millis(200));
        }
        run_ok(Command::new("docker").args(["start", id]));
        wait_for(service, id, "running healthy");
        let ps = run_ok(&mut run.stack.compose(&["ps", service]));
        assert!(ps.contains("(healthy)"), "compose ps does not show {service} healthy again:\n{ps}");
        assert!(host_health(service), "cj-{service} health says not healthy while compose says healthy");
        eprintln!("{service} stopped and started again, healthy, after {:?}", started.elapsed());
    }
    run.wait_exited(&ids);
    let got = read_flows_csv(&run.data.path().join("out/flows.csv"));
    if let Some(d) = diff_rows(&got, &truth_rows(&truth)) {
        panic!("after docker stop/start of each service flows.csv differs from the ground truth:\n{d}\n{}", run.logs());
    }
    let summary = e2e::read_json(&run.data.path().join("out/summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}\n{}", run.logs());
    assert_eq!(summary["identity"]["terms"]["received"].as_u64(), Some(truth.total_frames), "{summary:#}");
    assert_eq!(summary["identity"]["terms"]["queue_dropped"].as_u64(), Some(0), "{summary:#}");
    eprintln!("compose restarts matched the ground truth ({} rows) after {:?}", got.len(), started.elapsed());
}

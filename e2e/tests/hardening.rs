//! A root station beside a hostile local user: an unprivileged user (created
//! by the test, removed after) plants directories, symbolic links and files
//! where the station will look, and the station refuses them with one line
//! naming the path, owner, mode and fix, or makes them harmless; the files the
//! user aimed at stay unchanged, and the user cannot read what the station
//! writes.
//!
//! Needs root (to create the user and to be the station the user attacks):
//! without root each test is skipped by [`e2e::skip`]'s rule (a failure
//! under CI, a listed `SKIPPED` line elsewhere).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use e2e::{run_pipeline, wait_all, Cluster};

#[path = "support/truth.rs"]
mod sim_truth;

/// A small finite source: 100 frames fit in one 4096-slot queue, so a
/// balancer alone finishes and exits.
const SIM: &str = "sim:flows=10,packets=100,seed=3";

/// `useradd`/`userdel` lock /etc/passwd; tests of this file run in parallel.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A local user created for one test and removed (with its group) on drop.
struct HostileUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl HostileUser {
    /// Creates the user, or returns `None` when not root (after [`e2e::skip`]:
    /// a failure under CI, a listed skip elsewhere).
    ///
    /// # Panics
    /// Not root under CI, or `useradd` fails.
    fn create() -> Option<HostileUser> {
        if !nix::unistd::geteuid().is_root() {
            e2e::skip("needs root: it creates a local user and runs the station as root beside it");
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("cjhostile{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        {
            let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
            let out = Command::new("useradd")
                .args(["--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", &name])
                .output()
                .expect("run useradd");
            assert!(out.status.success(), "useradd {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let user = nix::unistd::User::from_name(&name).expect("look up user").expect("user just created");
        Some(HostileUser { name, uid: user.uid.as_raw(), gid: user.gid.as_raw() })
    }

    /// Runs `program args` as this user (no supplementary groups).
    fn run(&self, program: &str, args: &[&Path]) -> Output {
        Command::new(program)
            .args(args)
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program} as {}: {e}", self.name))
    }

    /// Runs `program args` as this user and requires success.
    fn must(&self, program: &str, args: &[&Path]) {
        let out = self.run(program, args);
        assert!(out.status.success(), "{program} {args:?} as {}: {}", self.name, String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for HostileUser {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// A root-only file the user aims at, in a root-only directory.
struct Victim {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const VICTIM_TEXT: &str = "root's file: must never change\n";

impl Victim {
    fn new() -> Victim {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("victim");
        std::fs::write(&path, VICTIM_TEXT).expect("write victim");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod victim");
        Victim { _dir: dir, path }
    }

    fn assert_untouched(&self) {
        let meta = std::fs::metadata(&self.path).expect("victim still there");
        assert_eq!(std::fs::read_to_string(&self.path).expect("read victim"), VICTIM_TEXT, "victim changed");
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600), "victim's owner or mode changed");
    }
}

/// A cluster whose CJ_SHM_DIR is shared like /dev/shm (mode 1777), so the
/// user can create things in it.
fn shared_cluster(vars: &[(&str, &str)]) -> Cluster {
    let cluster = Cluster::new(vars);
    std::fs::set_permissions(cluster.shm.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod shm dir");
    cluster
}

/// Runs one station binary on `cluster` to its end (60 s at most); the app
/// writes into a private directory.
fn run_alone(cluster: &Cluster, bin: &str) -> Output {
    let out = tempfile::tempdir().expect("tempdir");
    let mut cmd = cluster.command(bin);
    if bin == "cj-app" {
        cmd.arg("--out").arg(out.path());
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    wait_all(vec![(bin, child)], Duration::from_secs(60)).pop().expect("output")
}

/// The process failed with exactly one non-empty stderr line, which contains every `words`.
fn assert_refused_in_one_line(bin: &str, out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{bin} should refuse, but exited {}: {stderr}", out.status);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{bin}: expected one line, got:\n{stderr}");
    for w in words {
        assert!(lines[0].contains(w), "{bin}: `{}` should say {w:?}", lines[0]);
    }
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_cluster_directory_a_user_made_first_is_refused_and_the_victims_untouched() {
    let Some(user) = HostileUser::create() else { return };
    let victim = Victim::new();
    let cluster = shared_cluster(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let dir = cluster.cluster_dir();
    user.must("mkdir", &[Path::new("-m"), Path::new("0777"), &dir]);
    // Links where the station writes: a queue, a stats page, the old fixed temp name.
    for name in ["pkt-0-0", "stats-balancer", ".sources.tmp", "rec-0"] {
        user.must("ln", &[Path::new("-s"), &victim.path, &dir.join(name)]);
    }
    let planted = names(&dir);

    let dir_text = dir.display().to_string();
    let uid_text = format!("owner uid {}", user.uid);
    let words = ["refusing", dir_text.as_str(), uid_text.as_str(), "mode 0777", "remove it", "chown it to uid 0"];
    for bin in ["cj-balancer", "cj-detector", "cj-app"] {
        let out = run_alone(&cluster, bin);
        assert_refused_in_one_line(bin, &out, &words);
    }
    victim.assert_untouched();
    assert_eq!(names(&dir), planted, "nothing was created in the user's directory");
    let meta = std::fs::symlink_metadata(&dir).expect("dir");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (user.uid, 0o777), "the user's directory is as it was");
}

#[test]
fn a_symlinked_cluster_directory_is_refused() {
    let Some(user) = HostileUser::create() else { return };
    let cluster = shared_cluster(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let dir = cluster.cluster_dir();
    let target = cluster.shm.path().join("user-owned");
    user.must("mkdir", &[Path::new("-m"), Path::new("0777"), &target]);
    user.must("ln", &[Path::new("-s"), &target, &dir]);

    let out = run_alone(&cluster, "cj-balancer");
    let dir_text = dir.display().to_string();
    assert_refused_in_one_line("cj-balancer", &out, &["refusing", dir_text.as_str(), "symbolic link", "remove it"]);
    assert!(names(&target).is_empty(), "nothing was created through the link: {:?}", names(&target));
    assert!(std::fs::symlink_metadata(&dir).expect("link").file_type().is_symlink());
}

#[test]
fn a_planted_temporary_link_in_the_output_directory_does_not_redirect_the_write() {
    let Some(user) = HostileUser::create() else { return };
    let victim = Victim::new();
    // Shared as /tmp is: root's, writable by every user, sticky (a directory
    // of the user's own is refused: see the tests below).
    let shared = tempfile::tempdir().expect("tempdir");
    let out = shared.path().join("out");
    std::fs::create_dir(&out).expect("mkdir out");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    // The fixed temporary names of earlier versions, and the probe.
    for name in [".summary.json.tmp", ".flows.csv.tmp", ".flows.json.tmp", ".cj-app.probe"] {
        user.must("ln", &[Path::new("-s"), &victim.path, &out.join(name)]);
    }

    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let run = run_pipeline(&cluster, &out);
    run.assert_success();
    victim.assert_untouched();
    let summary = out.join("summary.json");
    let meta = std::fs::symlink_metadata(&summary).expect("summary.json");
    assert!(meta.file_type().is_file(), "summary.json is the app's own file");
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644));
    let json = e2e::read_json(&summary);
    assert_eq!(json["identity"]["status"], "holds", "{json:#}");
    let left: Vec<String> = names(&out).into_iter().filter(|n| n.starts_with('.')).collect();
    assert_eq!(left, [".cj-app.probe", ".flows.csv.tmp", ".flows.json.tmp", ".summary.json.tmp"], "no temp file left");
}

#[test]
fn a_user_cannot_read_the_queues_of_a_root_station() {
    let Some(user) = HostileUser::create() else { return };
    let cluster = shared_cluster(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let out = run_alone(&cluster, "cj-balancer");
    assert!(out.status.success(), "balancer: {}", String::from_utf8_lossy(&out.stderr));
    let dir = cluster.cluster_dir();
    let queue = dir.join("pkt-0-0");
    let mode = |p: &Path| std::fs::symlink_metadata(p).expect("stat").mode() & 0o7777;
    assert_eq!((mode(&dir), mode(&queue)), (0o770, 0o660));
    let read = user.run("cat", &[&queue]);
    assert!(!read.status.success() && read.stdout.is_empty(), "the user read the packet queue");
    let list = user.run("ls", &[&dir]);
    assert!(!list.status.success(), "the user listed the cluster directory");
}

#[test]
fn cj_group_lets_its_members_run_status_without_root_and_others_still_get_nothing() {
    let Some(reader) = HostileUser::create() else { return };
    let Some(other) = HostileUser::create() else { return };
    // useradd --user-group: the reader's own group has the reader's name.
    let cluster = shared_cluster(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1"), ("CJ_GROUP", &reader.name)]);
    let out = tempfile::tempdir().expect("tempdir");
    let run = run_pipeline(&cluster, out.path());
    run.assert_success();
    let dir = cluster.cluster_dir();
    let meta = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        (m.uid(), m.gid(), m.mode() & 0o7777)
    };
    assert_eq!(meta(&dir), (0, reader.gid, 0o3770), "cluster directory: root, CJ_GROUP, set-group-ID and sticky 3770");
    for name in ["pkt-0-0", "rec-0", "stats-balancer", "stats-worker-0"] {
        assert_eq!(meta(&dir.join(name)), (0, reader.gid, 0o660), "{name}: root, CJ_GROUP, 0660");
    }
    // A copy of cj-app the users can execute: the build tree may sit under a directory only
    // root can enter (a CI checkout in a 0700 temporary directory).
    let bin_dir = tempfile::Builder::new().prefix("cj-bin.").tempdir_in("/tmp").expect("bin dir");
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod bin dir");
    let app = bin_dir.path().join("cj-app");
    std::fs::copy(e2e::bin("cj-app"), &app).expect("copy cj-app");
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).expect("chmod cj-app");
    let status_as = |user: &HostileUser| {
        let mut cmd = Command::new(&app);
        e2e::scrub_station_env(&mut cmd);
        cmd.env("CJ_SHM_DIR", cluster.shm.path());
        for (k, v) in &cluster.vars {
            cmd.env(k, v);
        }
        cmd.arg("status").uid(user.uid).gid(user.gid).stdin(Stdio::null());
        cmd.output().expect("run cj-app status")
    };
    let got = status_as(&reader);
    let stdout = String::from_utf8_lossy(&got.stdout);
    assert!(got.status.success(), "status as a CJ_GROUP member: {}", String::from_utf8_lossy(&got.stderr));
    assert!(stdout.contains("balancer"), "{stdout}");
    let denied = status_as(&other);
    assert!(
        !denied.status.success(),
        "a user outside CJ_GROUP ran status: {}",
        String::from_utf8_lossy(&denied.stdout)
    );
    let read = other.run("cat", &[&dir.join("pkt-0-0")]);
    assert!(!read.status.success() && read.stdout.is_empty(), "a user outside CJ_GROUP read the packet queue");
}

#[test]
fn a_cj_group_that_does_not_exist_is_a_one_line_config_error() {
    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_GROUP", "cj-no-such-group")]);
    for bin in ["cj-balancer", "cj-detector", "cj-app"] {
        let out = run_alone(&cluster, bin);
        assert_refused_in_one_line(bin, &out, &["CJ_GROUP", "cj-no-such-group", "there is no group"]);
    }
}

/// Mode bits and content of a file, to compare before and after.
fn file_state(path: &Path) -> (u32, u32, Vec<u8>) {
    let meta = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.mode() & 0o7777, std::fs::read(path).unwrap_or_default())
}

#[test]
fn generate_never_writes_through_a_link_a_user_planted_as_the_capture_its_temporary_name_or_the_truth() {
    let Some(user) = HostileUser::create() else { return };
    let victims = [Victim::new(), Victim::new(), Victim::new()];
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    // The user's output directory, as run_pipeline.sh's OUT may be.
    let out = shared.path().join("out");
    user.must("mkdir", &[Path::new("-m"), Path::new("0777"), &out]);
    let pcap = out.join("sample.pcap");
    let truth = out.join("sample-truth.csv");
    // The fixed temporary name of earlier versions, the capture and the truth themselves.
    for (name, v) in [("sample.pcap.tmp", &victims[0]), ("sample.pcap", &victims[1]), ("sample-truth.csv", &victims[2])]
    {
        user.must("ln", &[Path::new("-s"), &v.path, &out.join(name)]);
    }

    let mut cmd = Command::new(e2e::bin("cj-balancer"));
    e2e::scrub_station_env(&mut cmd);
    cmd.arg("generate").arg("flows=10,packets=200,seed=1").arg(&pcap).arg("--truth").arg(&truth);
    let got = cmd.stdin(Stdio::null()).output().expect("run cj-balancer generate");
    assert!(got.status.success(), "generate: {}", String::from_utf8_lossy(&got.stderr));
    for v in &victims {
        v.assert_untouched();
    }
    for p in [&pcap, &truth] {
        let meta = std::fs::symlink_metadata(p).expect("written");
        assert!(meta.file_type().is_file(), "{} is root's new file, not the user's link", p.display());
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o644), "{}", p.display());
    }
    let bytes = std::fs::read(&pcap).expect("read capture");
    assert_eq!(bytes.get(..4), Some(&[0xd4, 0xc3, 0xb2, 0xa1][..]), "a little-endian microsecond pcap");
    assert!(std::fs::read_to_string(&truth).expect("read truth").starts_with("SRC_IP,DST_IP,"));
}

/// Packet sockets (`/proc/net/packet`) bound to the interface of index `ifindex`.
fn packet_sockets_on(ifindex: u32) -> usize {
    let text = std::fs::read_to_string("/proc/net/packet").expect("read /proc/net/packet");
    // sk RefCnt Type Proto Iface R Rmem User Inode
    text.lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(4).and_then(|i| i.parse::<u32>().ok()) == Some(ifindex))
        .count()
}

#[test]
fn a_capture_list_a_cj_group_member_planted_is_not_trusted_and_lo_is_never_captured() {
    let Some(user) = HostileUser::create() else { return };
    let help = Command::new(e2e::bin("cj-balancer")).arg("--help").output().expect("cj-balancer --help");
    if !String::from_utf8_lossy(&help.stdout).contains("containers") {
        e2e::skip("this cj-balancer has no containers source");
        return;
    }
    // useradd --user-group: the user's own group, named as the user, is CJ_GROUP.
    let cluster = shared_cluster(&[
        ("CJ_IFACE", "containers"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_GROUP", &user.name),
        ("CJ_QUEUE_SLOTS", "65536"),
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    ]);
    // The cluster directory as on-reboot.sh makes it: root's, CJ_GROUP, 3770.
    let dir = cluster.cluster_dir();
    std::fs::create_dir(&dir).expect("mkdir cluster dir");
    std::os::unix::fs::chown(&dir, Some(0), Some(user.gid)).expect("chgrp cluster dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o3770)).expect("chmod cluster dir");
    // A member of CJ_GROUP plants a capture list naming the loopback interface.
    let capture = dir.join("capture");
    let plant =
        format!("printf 'generation 1\\n1 lo\\n' > '{}' && chmod 640 '{}'", capture.display(), capture.display());
    user.must("sh", &[Path::new("-c"), Path::new(&plant)]);
    assert_eq!(std::fs::symlink_metadata(&capture).expect("planted").uid(), user.uid);
    let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/ifindex").expect("lo ifindex").trim().parse().expect("n");
    let before = packet_sockets_on(lo);

    let station = e2e::live::Station::start(&cluster, &[]);
    // The detector writes its own list (root's) and the balancer says what it captures.
    let sources = dir.join("sources");
    e2e::live::wait_until("the balancer's sources file", || sources.exists());
    e2e::live::wait_until("the detector's own capture list", || {
        std::fs::symlink_metadata(&capture).is_ok_and(|m| m.uid() == 0)
    });
    // Loopback traffic the balancer would see if it captured lo: bounded, 50 datagrams.
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..50 {
        tx.send_to(b"loopback payload a root balancer must not capture", rx.local_addr().expect("addr")).expect("send");
    }
    // The kernel's word: no packet socket was opened on lo.
    assert_eq!(packet_sockets_on(lo), before, "a packet socket is bound to lo (the balancer captures it)");
    let listed = std::fs::read_to_string(&sources).expect("read sources");
    assert!(!listed.lines().any(|l| l.split_once(' ').is_some_and(|(_, n)| n == "lo")), "sources: {listed}");
    let list = std::fs::read_to_string(&capture).expect("read capture");
    assert!(!list.lines().any(|l| l.ends_with(" lo")), "the detector took over the planted list: {list}");
    let stopped = station.stop();
    assert_eq!(packet_sockets_on(lo), before);
    drop(stopped);
}

/// A root-only file with a secret line, in a root-only directory.
struct Secret {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

const SECRET_LINE: &str = "root:$6$SECRETHASH$abcdefghijklmnopqrstuvwxyz0123456789:19000:0:99999:7:::\n";

impl Secret {
    fn new() -> Secret {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shadow");
        std::fs::write(&path, SECRET_LINE).expect("write secret");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod secret");
        Secret { _dir: dir, path }
    }
}

/// Everything `out` printed does not hold a piece of the secret.
fn assert_no_secret(what: &str, out: &Output) {
    for text in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(text);
        assert!(!text.contains("SECRETHASH") && !text.contains("abcdefgh"), "{what} leaked the secret: {text}");
    }
}

/// Starts `cmd` and waits (at most 20 s) until it exits or `done` holds; kills it if it still runs.
fn start_until(mut cmd: Command, done: impl Fn() -> bool) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline && !done() && child.try_wait().expect("wait").is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().expect("wait").is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_config_file_another_user_owns_or_may_write_or_links_to_is_never_read() {
    let Some(user) = HostileUser::create() else { return };
    let secret = Secret::new();
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let p = |n: &str| shared.path().join(n);
    // The user's own file; root's file that others (or the group) may write; the user's link to a secret.
    let write_as_user = |path: &Path, text: &str| {
        let cmd = format!("printf '{text}' > '{}' && chmod 644 '{}'", path.display(), path.display());
        user.must("sh", &[Path::new("-c"), Path::new(&cmd)]);
    };
    write_as_user(&p("user.conf"), "CJ_CORECOUNT=3\\n");
    for (name, mode) in [("open.conf", 0o666), ("group.conf", 0o664)] {
        std::fs::write(p(name), "CJ_CORECOUNT=3\n").expect("write");
        std::fs::set_permissions(p(name), std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    user.must("ln", &[Path::new("-s"), &secret.path, &p("link.conf")]);
    let secret_before = file_state(&secret.path);

    for name in ["user.conf", "open.conf", "group.conf", "link.conf"] {
        for bin in ["cj-balancer", "cj-detector", "cj-app"] {
            let mut cmd = Command::new(e2e::bin(bin));
            e2e::scrub_station_env(&mut cmd);
            let got =
                cmd.arg("--config").arg(p(name)).arg("--print-config").stdin(Stdio::null()).output().expect("run");
            assert!(!got.status.success(), "{bin} --config {name} was read: {}", String::from_utf8_lossy(&got.stdout));
            assert_no_secret(&format!("{bin} --config {name}"), &got);
        }
    }

    // CJ_DIVERT_RULES (read by the detector at start; once read, it lists them in the cluster
    // directory) and CJ_STATION_CONFIG (the app's settings; once read, the app makes the
    // output directory they name).
    let chosen = tempfile::tempdir().expect("tempdir");
    let out_dir = chosen.path().join("out-the-user-chose");
    write_as_user(&p("user.rules"), "divert proto udp\\n");
    write_as_user(&p("user.toml"), &format!("[output]\\ndir = \\\"{}\\\"\\n", out_dir.display()));
    user.must("ln", &[Path::new("-s"), &secret.path, &p("link.rules")]);
    user.must("ln", &[Path::new("-s"), &secret.path, &p("link.toml")]);
    for name in ["user.rules", "link.rules"] {
        let path = p(name);
        let cluster = Cluster::new(&[
            ("CJ_IFACE", SIM),
            ("CJ_CORECOUNT", "1"),
            ("CJ_TUN", "yes"),
            ("CJ_TUN_OFFSET", "900"),
            ("CJ_DIVERT_RULES", path.to_str().expect("utf-8")),
        ]);
        let listing = station::naming::set_divert_rules_path(&cluster.cluster_dir(), 0);
        let got = start_until(cluster.command("cj-detector"), || listing.exists());
        assert!(!listing.exists(), "cj-detector read and listed the rules of {name}");
        assert!(!got.status.success(), "cj-detector started with CJ_DIVERT_RULES={name}");
        assert_no_secret(&format!("cj-detector CJ_DIVERT_RULES={name}"), &got);
    }
    for name in ["user.toml", "link.toml"] {
        let path = p(name);
        let cluster = Cluster::new(&[
            ("CJ_IFACE", SIM),
            ("CJ_CORECOUNT", "1"),
            ("CJ_STATION_CONFIG", path.to_str().expect("utf-8")),
        ]);
        let got = start_until(cluster.command("cj-app"), || out_dir.exists());
        assert!(!out_dir.exists(), "cj-app took its output directory from {name}");
        assert!(!got.status.success(), "cj-app started with CJ_STATION_CONFIG={name}");
        assert_no_secret(&format!("cj-app CJ_STATION_CONFIG={name}"), &got);
    }
    assert_eq!(file_state(&secret.path), secret_before, "the secret changed");
}

/// A root-only directory holding files under the app's output names, each
/// [`VICTIM_TEXT`] with mode 0600: where a user would like root's writes to go.
struct VictimDir {
    dir: tempfile::TempDir,
}

const OUTPUT_NAMES: [&str; 4] = ["flows.csv", "flows.json", "summary.json", "checkpoint"];

impl VictimDir {
    fn new() -> VictimDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in OUTPUT_NAMES {
            let p = dir.path().join(name);
            std::fs::write(&p, VICTIM_TEXT).expect("write victim");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod victim");
        }
        VictimDir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn assert_untouched(&self) {
        assert_eq!(names(self.path()), ["checkpoint", "flows.csv", "flows.json", "summary.json"], "names changed");
        for name in OUTPUT_NAMES {
            let p = self.path().join(name);
            let meta = std::fs::symlink_metadata(&p).expect("victim still there");
            assert_eq!(std::fs::read_to_string(&p).expect("read victim"), VICTIM_TEXT, "{name} changed");
            assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o600), "{name}: owner or mode changed");
        }
    }
}

/// A directory like /tmp: root's, mode 1777 (every user may create names in
/// it, none may rename or remove another's).
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    d
}

/// Starts cj-app alone on `cluster` writing into `out`, and returns once it
/// has started (its stats page exists: it made it after opening `--out`),
/// waiting for the record queues' producer.
fn start_app(cluster: &Cluster, out: &Path) -> std::process::Child {
    let mut cmd = cluster.command("cj-app");
    cmd.arg("--out").arg(out).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut app = cmd.spawn().expect("start cj-app");
    let page = cluster.cluster_dir().join("stats-app");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !page.exists() {
        if let Some(status) = app.try_wait().expect("wait cj-app") {
            let out = app.wait_with_output().expect("output");
            panic!("cj-app exited ({status}) before it started: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(std::time::Instant::now() < deadline, "cj-app did not start within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    app
}

/// Runs the detector and the balancer on `cluster` to their end, then waits for `app`.
fn finish_pipeline(cluster: &Cluster, app: std::process::Child) -> e2e::Run {
    let spawn = |name: &str| {
        cluster.command(name).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start station binary")
    };
    let detector = spawn("cj-detector");
    let balancer = spawn("cj-balancer");
    let mut outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(120));
    let app = outs.pop().expect("app");
    let detector = outs.pop().expect("detector");
    let balancer = outs.pop().expect("balancer");
    e2e::Run { balancer, detector, app }
}

#[test]
fn an_output_directory_that_is_a_users_link_is_refused_and_the_victim_untouched() {
    let Some(user) = HostileUser::create() else { return };
    let victim = VictimDir::new();
    let shared = shared_dir();
    let out = shared.path().join("out");
    user.must("ln", &[Path::new("-s"), victim.path(), &out]);

    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let run = run_pipeline(&cluster, &out);
    victim.assert_untouched();
    let out_text = out.display().to_string();
    let uid_text = format!("owner uid {}", user.uid);
    assert_refused_in_one_line(
        "cj-app",
        &run.app,
        &["--out", out_text.as_str(), "refusing", "symbolic link", uid_text.as_str(), "choose an --out"],
    );
    assert_eq!(run.app.status.code(), Some(2), "a refused --out is a usage error");
}

#[test]
fn an_output_directory_owned_by_another_user_is_refused() {
    let Some(user) = HostileUser::create() else { return };
    let shared = shared_dir();
    let out = shared.path().join("out");
    user.must("mkdir", &[Path::new("-m"), Path::new("0755"), &out]);
    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let run = run_pipeline(&cluster, &out);
    let out_text = out.display().to_string();
    let uid_text = format!("owned by uid {}", user.uid);
    assert_refused_in_one_line("cj-app", &run.app, &["--out", out_text.as_str(), uid_text.as_str(), "chown"]);
    assert!(names(&out).is_empty(), "nothing written into the user's directory: {:?}", names(&out));
}

#[test]
fn an_output_directory_swapped_for_a_link_after_the_start_keeps_every_write() {
    // The swap is made here, as root (only whoever can rename `--out` could
    // make it); the user is created for the root check and skip rule alone.
    let Some(_user) = HostileUser::create() else { return };
    let victim = VictimDir::new();
    let parent = tempfile::tempdir().expect("tempdir");
    let out = parent.path().join("out");
    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1")]);
    let app = start_app(&cluster, &out);
    // The name the app was given now leads to the victim's directory; the
    // directory it opened lives on under another name.
    let moved = parent.path().join("out.moved");
    std::fs::rename(&out, &moved).expect("rename out");
    std::os::unix::fs::symlink(victim.path(), &out).expect("plant link");
    let run = finish_pipeline(&cluster, app);
    run.assert_success();
    victim.assert_untouched();
    let json = e2e::read_json(&moved.join("summary.json"));
    assert_eq!(json["identity"]["status"], "holds", "{json:#}");
    assert!(moved.join("flows.csv").is_file(), "the files are in the directory the app opened");
}

#[test]
fn a_link_planted_as_queue_0_in_a_shared_output_directory_does_not_redirect_a_fan_out_table() {
    let Some(user) = HostileUser::create() else { return };
    let victim = VictimDir::new();
    let out = shared_dir();
    user.must("ln", &[Path::new("-s"), victim.path(), &out.path().join("queue-0")]);

    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1"), ("ZBALANCE_HASH_MODE", "2")]);
    let run = run_pipeline(&cluster, out.path());
    run.assert_success();
    victim.assert_untouched();
    // The table it could not write is named in summary.json, which is the app's own file.
    let json = e2e::read_json(&out.path().join("summary.json"));
    assert_eq!(json["complete"], false, "{json:#}");
    let reason = json["incomplete_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("queue-0") && reason.contains("symbolic link"), "{reason}");
    assert!(std::fs::symlink_metadata(out.path().join("queue-0")).expect("link").file_type().is_symlink());
}

#[test]
fn names_planted_under_the_apps_next_temporary_names_do_not_stop_its_output() {
    let Some(user) = HostileUser::create() else { return };
    let victim = VictimDir::new();
    let cap_dir = tempfile::tempdir().expect("tempdir");
    let pcap = cap_dir.path().join("cap.pcap");
    let spec: sim::SimSpec = "flows=40,packets=400,seed=11".parse().expect("spec");
    let truth = sim::write_pcap(&spec, &pcap, false).expect("write capture");
    let out = shared_dir();
    let iface = format!("pcap:{}", pcap.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "1")]);
    let app = start_app(&cluster, out.path());
    // The temporary names of the earlier form (`.<name>.<pid>.<n>.tmp`) this
    // process would use for its first 200 files, planted as links to the victim.
    let pid = app.id();
    let script = format!(
        "i=0; while [ $i -lt 200 ]; do for f in {names}; do ln -s {victim}/$f {out}/.$f.{pid}.$i.tmp || exit 1; done; \
         i=$((i+1)); done",
        names = OUTPUT_NAMES.join(" "),
        victim = victim.path().display(),
        out = out.path().display(),
    );
    user.must("sh", &[Path::new("-c"), Path::new(&script)]);
    let planted = names(out.path());
    assert_eq!(planted.len(), 800);

    let run = finish_pipeline(&cluster, app);
    run.assert_success();
    victim.assert_untouched();
    let got = e2e::read_flows_csv(&out.path().join("flows.csv"));
    if let Some(d) = e2e::diff_rows(&got, &sim_truth::truth_rows(&truth)) {
        panic!("flows.csv differs from the truth:\n{d}");
    }
    let json = e2e::read_json(&out.path().join("summary.json"));
    assert_eq!((&json["complete"], &json["identity"]["status"]), (&true.into(), &"holds".into()), "{json:#}");
    let left: Vec<String> = names(out.path()).into_iter().filter(|n| n.starts_with('.')).collect();
    assert_eq!(left, planted, "the planted links stay, and no temporary file of the app's is left");
}

#[test]
fn a_cj_shm_dir_owned_by_another_user_is_refused() {
    let Some(user) = HostileUser::create() else { return };
    let shared = shared_dir();
    let shm = shared.path().join("shm");
    user.must("mkdir", &[Path::new("-m"), Path::new("0755"), &shm]);
    let shm_text = shm.display().to_string();
    let cluster = Cluster::new(&[("CJ_IFACE", SIM), ("CJ_CORECOUNT", "1"), ("CJ_SHM_DIR", &shm_text)]);
    let uid_text = format!("owned by uid {}", user.uid);
    let words = ["refusing", shm_text.as_str(), "CJ_SHM_DIR", uid_text.as_str(), "set CJ_SHM_DIR"];
    for bin in ["cj-balancer", "cj-detector", "cj-app"] {
        let out = run_alone(&cluster, bin);
        assert_refused_in_one_line(bin, &out, &words);
    }
    assert!(names(&shm).is_empty(), "nothing was created in the user's directory: {:?}", names(&shm));
}

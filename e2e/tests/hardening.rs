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
    let shared = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let out = shared.path().join("out");
    user.must("mkdir", &[Path::new("-m"), Path::new("0777"), &out]);
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

//! The scripts see the configuration the binaries see: each script's view is
//! compared with `--print-config` on the same files and environment.
//!
//! - `every_binary_prints_the_same_configuration`: cj-balancer, cj-detector and
//!   cj-app print byte-identical `--print-config` text, and its core plan and file
//!   names are the ones written out here by hand for the inputs;
//! - `conjure_env_loads_what_print_config_prints_with_or_without_a_binary`:
//!   `conjure_env.sh`'s `cj_load_conf` (through a binary, and by sourcing the file
//!   as on-reboot.sh does before anything is installed) sets every variable to
//!   the value `--print-config` prints;
//! - `compose_gives_the_containers_what_print_config_prints`: `compose.sh env`
//!   (the env file and the compose variables, nothing run) against it;
//! - `healthcheck_follows_each_components_heartbeat`: healthcheck.sh (through
//!   `cj-<component> health`) is unhealthy with no page, healthy on a fresh
//!   heartbeat, unhealthy on one 10 s old, on the page `station::naming` names;
//! - `on_reboot_agrees_with_and_without_a_binary`: `on-reboot.sh --dry-run` prints
//!   the same steps either way, and refuses the same bad values (exit 2, one line
//!   naming the variable and value);
//! - `without_a_binary_conjure_conf_is_read_and_never_run`: a `$(...)`, backquote or
//!   `;` in conjure.conf (or in a file it includes) stops `on-reboot.sh --dry-run`
//!   with one line naming the file and line, with and without a binary, and the
//!   command in it never runs (its marker file is not created);
//! - `a_conf_others_may_write_is_refused_unread_with_and_without_a_binary`: a
//!   conjure.conf (or a file it includes) that the group or others may write
//!   stops `on-reboot.sh --dry-run` (exit 2, one line naming the file and the
//!   `chmod go-w` that fixes it) either way;
//! - `compose_down_stop_and_ps_run_without_reading_the_configuration`: with a broken
//!   conjure.conf (and with no binary at all) `compose.sh down`, `stop` and `ps`
//!   still run docker compose (a fake `docker` first in PATH records its
//!   arguments) with the project name and both compose files;
//! - `on_reboot_plans_follow_the_capture_source`: the `--dry-run` plan (with and
//!   without a binary) for `lo` as AF_PACKET (`CJ_AFP_PROMISC` yes and no), PF_RING
//!   and ZC RSS queues of `lo` (`pfring:lo@2`, `zc:lo@0`), a ZC cluster queue
//!   (`zc:5@0`) and `pfring:pcap:FILE`: which device is set up and made promiscuous.
//!
//! Inputs: `sysconfig/conjure.conf` as shipped, and a file that includes it and
//! sets non-default values (a quote in one), with an environment override on top.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

fn bin_dir() -> PathBuf {
    e2e::bin("cj-app").parent().expect("bin dir").to_path_buf()
}

/// A command with only the station variables of `env`.
fn clean(program: impl AsRef<std::ffi::OsStr>, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(program);
    e2e::scrub_station_env(&mut cmd);
    cmd.envs(env.iter().copied());
    cmd
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok_stdout(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// One input: its name, the conf file and the environment.
type Case = (&'static str, PathBuf, Vec<(&'static str, &'static str)>);

/// The inputs, and the directory that holds the written conf.
struct Inputs {
    _dir: tempfile::TempDir,
    cases: Vec<Case>,
}

/// sysconfig/conjure.conf as shipped; and a file including it with non-default
/// values, plus two environment overrides (which win over the file).
fn inputs() -> Inputs {
    let dir = tempfile::tempdir().expect("tempdir");
    let custom = dir.path().join("custom.conf");
    let text = format!(
        ". {}\nCJ_CLUSTER_ID=12\nCJ_COREBASE=2\nCJ_CORECOUNT=5\nCJ_SKIP_CORE=3\nCJ_QUEUE_OFFSET=4\n\
         N_QUEUE_SETS=2\nCJ_QUEUE_SET=1\nCJ_SHM_DIR=/tmp/cj-scripts-shm\nCJ_TUN=yes\nCJ_TUN_OFFSET=100\n\
         export CJ_IMAGE='station-test' ZBALANCE_HASH_MODE=0 # two at once\n:\nCJ_IP4_ADDR=\"it's 10.0.0.1\" # a quote and a space\nCJ_HUGEPAGES=0\n\
         CJ_HUGEPAGES_MOUNT=/mnt/cj-huge\nCJ_IFACE=sim:packets=10\n",
        repo().join("sysconfig/conjure.conf").display()
    );
    std::fs::write(&custom, text).expect("write conf");
    let shipped = repo().join("sysconfig/conjure.conf");
    Inputs {
        cases: vec![
            ("shipped", shipped, vec![]),
            ("custom", custom, vec![("CJ_CORECOUNT", "3"), ("CJ_BALANCER_CORE", "1")]),
        ],
        _dir: dir,
    }
}

fn print_config(bin: &str, conf: &Path, env: &[(&str, &str)]) -> String {
    ok_stdout(clean(e2e::bin(bin), env).arg("--config").arg(conf).arg("--print-config"))
}

/// Every name `--print-config` assigns.
fn names() -> Vec<String> {
    let mut names = Vec::new();
    for v in station::config::VARIABLES {
        names.push(v.name.to_owned());
        names.push(format!("CJ_ORIGIN_{}", v.name));
    }
    names.extend(station::cli::DERIVED_NAMES.iter().map(|s| s.to_string()));
    names
}

/// Runs `bash -c "$prelude; dump"` and returns the values of `names` it then holds
/// (unset names are absent).
fn bash_view(cmd: &mut Command, prelude: &str, names: &[String]) -> BTreeMap<String, String> {
    let dump = r#"for n in $CJ_TEST_NAMES; do if [ -n "${!n+set}" ]; then printf '%s\0%s\0' "$n" "${!n}"; fi; done"#;
    let out = output(cmd.arg("-c").arg(format!("{prelude}\n{dump}")).env("CJ_TEST_NAMES", names.join(" ")));
    assert!(out.status.success(), "bash {prelude:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let parts: Vec<&str> = text.split_terminator('\0').collect();
    parts.chunks(2).map(|kv| (kv[0].to_owned(), kv[1].to_owned())).collect()
}

/// What `--print-config` assigns, as sh reads it.
fn printed_view(printed: &str) -> BTreeMap<String, String> {
    let mut cmd = Command::new("bash");
    cmd.env("CJ_TEST_PRINTED", printed);
    bash_view(&mut cmd, r#"eval "$CJ_TEST_PRINTED""#, &names())
}

fn only_variables(view: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    view.iter().filter(|(k, _)| station::cli::is_variable(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[test]
fn every_binary_prints_the_same_configuration() {
    let inputs = inputs();
    for (name, conf, env) in &inputs.cases {
        let printed = print_config("cj-balancer", conf, env);
        for bin in ["cj-detector", "cj-app"] {
            assert_eq!(
                print_config(bin, conf, env),
                printed,
                "{name}: {bin} --print-config differs from cj-balancer's"
            );
        }
        let view = printed_view(&printed);
        let want: &[(&str, &str)] = if *name == "shipped" {
            &[
                ("CJ_CORECOUNT", "1"),
                ("CJ_ORIGIN_CJ_CORECOUNT", "FILE:51"),
                ("CJ_PLAN_BALANCER_CORE", ""),
                ("CJ_PLAN_WORKER_CORES", "0"),
                ("CJ_PLAN_WORKER_QUEUES", "0"),
                ("CJ_PLAN_SLOT_SIZE", "256"),
                ("CJ_PATH_CLUSTER_DIR", "/dev/shm/conjure-98"),
                ("CJ_PATH_BALANCER_STATS", "/dev/shm/conjure-98/stats-balancer"),
                ("CJ_PATH_WORKER_STATS", "/dev/shm/conjure-98/stats-worker-0"),
                ("CJ_PATH_RECORD_QUEUE", "/dev/shm/conjure-98/rec-0"),
            ]
        } else {
            // CJ_CORECOUNT=3 from the environment: cores 2, (3 skipped), 4, 5; queues 4..=6 of set 1.
            &[
                ("CJ_CORECOUNT", "3"),
                ("CJ_ORIGIN_CJ_CORECOUNT", "environment"),
                ("CJ_ORIGIN_CJ_COREBASE", "FILE:3"),
                ("CJ_IP4_ADDR", "it's 10.0.0.1"),
                ("CJ_PLAN_BALANCER_CORE", "1"),
                ("CJ_PLAN_WORKER_CORES", "2,4,5"),
                ("CJ_PLAN_WORKER_QUEUES", "4,5,6"),
                ("CJ_PATH_CLUSTER_DIR", "/tmp/cj-scripts-shm/conjure-12"),
                ("CJ_PATH_BALANCER_STATS", "/tmp/cj-scripts-shm/conjure-12/stats-balancer"),
                ("CJ_PATH_WORKER_STATS", "/tmp/cj-scripts-shm/conjure-12/stats-worker-1-4"),
                ("CJ_PATH_RECORD_QUEUE", "/tmp/cj-scripts-shm/conjure-12/rec-1-4"),
            ]
        };
        for (k, v) in want {
            let v = v.replace("FILE", &conf.display().to_string());
            assert_eq!(view.get(*k).map(String::as_str), Some(v.as_str()), "{name}: {k}\n{printed}");
        }
        assert_eq!(only_variables(&view).len(), station::config::VARIABLES.len(), "{name}: every variable is printed");
    }
}

/// A copy of the scripts and conjure.conf without any binary nearby: as on a host
/// where nothing is installed yet.
fn bare_checkout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for rel in ["on-reboot.sh", "scripts/conjure_env.sh", "sysconfig/conjure.conf"] {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(repo().join(rel), &to).unwrap_or_else(|e| panic!("copy {rel}: {e}"));
    }
    dir
}

/// A PATH without the station binaries.
const BARE_PATH: &str = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin";

fn assert_no_binary_on_bare_path() {
    for b in ["cj-balancer", "cj-detector", "cj-app"] {
        for d in BARE_PATH.split(':') {
            assert!(!Path::new(d).join(b).exists(), "{d}/{b} is installed: the no-binary case cannot be tested here");
        }
    }
}

#[test]
fn conjure_env_loads_what_print_config_prints_with_or_without_a_binary() {
    assert_no_binary_on_bare_path();
    let inputs = inputs();
    let bare = bare_checkout();
    for (name, conf, env) in &inputs.cases {
        let printed = printed_view(&print_config("cj-app", conf, env));
        // Through a binary: every name print-config assigns.
        let mut cmd = clean("bash", env);
        cmd.env("CJ_BIN_DIR", bin_dir()).env("CONJURE_CONF", conf);
        let prelude = format!(". {}/scripts/conjure_env.sh && cj_load_conf any", repo().display());
        let with_binary = bash_view(&mut cmd, &prelude, &names());
        assert_eq!(with_binary, printed, "{name}: cj_load_conf through a binary");
        // Without one: the file sourced as sh, the environment winning.
        let mut cmd = clean("bash", env);
        cmd.env("PATH", BARE_PATH).env("CONJURE_CONF", conf);
        let prelude = format!(". {}/scripts/conjure_env.sh && cj_load_conf any sh", bare.path().display());
        let variables: Vec<String> = station::config::VARIABLES.iter().map(|v| v.name.to_owned()).collect();
        let sourced = bash_view(&mut cmd, &prelude, &variables);
        assert_eq!(sourced, only_variables(&printed), "{name}: conjure.conf sourced as sh");
    }
}

#[test]
fn compose_gives_the_containers_what_print_config_prints() {
    let inputs = inputs();
    for (name, conf, env) in &inputs.cases {
        let printed = printed_view(&print_config("cj-detector", conf, env));
        let mut cmd = clean(repo().join("scripts/compose.sh"), env);
        cmd.env("CJ_BIN_DIR", bin_dir()).env("CONJURE_CONF", conf).arg("env");
        let text = ok_stdout(&mut cmd);
        let mut env_file = BTreeMap::new();
        let mut compose = BTreeMap::new();
        for line in text.lines() {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("{name}: not NAME=VALUE: {line}"));
            match k.strip_prefix("compose: ") {
                Some(k) => compose.insert(k.to_owned(), v.to_owned()),
                None => env_file.insert(k.to_owned(), v.to_owned()),
            };
        }
        assert_eq!(env_file, only_variables(&printed), "{name}: the containers' env file");
        let cpus = if *name == "shipped" { "0" } else { "2,4,5" };
        assert_eq!(compose.get("CJ_DETECTOR_CPUS").map(String::as_str), Some(cpus), "{name}: the detector's cpuset");
        let image = if *name == "shipped" { "conjure" } else { "station-test" };
        assert_eq!(compose.get("CJ_IMAGE").map(String::as_str), Some(image), "{name}");
        let mount = if *name == "shipped" { "/dev/hugepages" } else { "/mnt/cj-huge" };
        assert_eq!(compose.get("CJ_HUGEPAGES_MOUNT").map(String::as_str), Some(mount), "{name}");
    }
}

#[test]
fn healthcheck_follows_each_components_heartbeat() {
    use station::naming::{self, app_counter, balancer_counter, worker_counter};
    let shm = tempfile::Builder::new().prefix("station-health.").tempdir_in("/dev/shm").expect("shm");
    let shm_s = shm.path().display().to_string();
    let conf = repo().join("sysconfig/conjure.conf");
    let cluster = naming::cluster_dir(shm.path(), 21);
    for (set, sets) in [("0", "1"), ("1", "2")] {
        let env = [
            ("CJ_SHM_DIR", shm_s.as_str()),
            ("CJ_CLUSTER_ID", "21"),
            ("CJ_QUEUE_OFFSET", "3"),
            ("CJ_QUEUE_SET", set),
            ("N_QUEUE_SETS", sets),
        ];
        let set: u32 = set.parse().expect("set");
        for (component, file, names, beat) in [
            (
                "balancer",
                naming::balancer_stats_path(&cluster),
                naming::BALANCER_COUNTERS,
                balancer_counter::HEARTBEAT_MS,
            ),
            (
                "detector",
                naming::set_worker_stats_path(&cluster, set, 3),
                naming::WORKER_COUNTERS,
                worker_counter::HEARTBEAT_MS,
            ),
            ("app", naming::app_stats_path(&cluster, set), naming::APP_COUNTERS, app_counter::HEARTBEAT_MS),
        ] {
            let run = || {
                let mut cmd = clean(repo().join("scripts/healthcheck.sh"), &env);
                cmd.env("CJ_BIN_DIR", bin_dir()).env("CONJURE_CONF", &conf).arg(component);
                output(&mut cmd)
            };
            let _ = std::fs::remove_dir_all(&cluster);
            // No page: the process never started.
            let out = run();
            assert_eq!(out.status.code(), Some(1), "{component}: {}", String::from_utf8_lossy(&out.stderr));
            std::fs::create_dir_all(&cluster).expect("mkdir");
            let page = shmq::CounterPage::open_or_create(&file, names).expect("page");
            // A fresh heartbeat: healthy.
            page.set(beat, naming::heartbeat_ms());
            let out = run();
            assert!(out.status.success(), "{component} beating: {}", String::from_utf8_lossy(&out.stderr));
            // Ten seconds without a beat (a killed or hung process): unhealthy, whatever else is there.
            page.set(beat, naming::heartbeat_ms().saturating_sub(10_000));
            let out = run();
            assert_eq!(out.status.code(), Some(1), "{component} silent: {}", String::from_utf8_lossy(&out.stderr));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("{}: not running", file.display())), "{component}: {err}");
        }
    }
}

/// Runs on-reboot.sh --dry-run from `root` with CONJURE_CONF = `conf`.
fn on_reboot(root: &Path, conf: &Path, env: &[(&str, &str)], with_binary: bool) -> Output {
    let mut cmd = clean(root.join("on-reboot.sh"), env);
    cmd.arg("--dry-run").env("CONJURE_CONF", conf).env("CONJURE_NETNS_DIRS", "");
    if with_binary {
        cmd.env("CJ_BIN_DIR", bin_dir());
    } else {
        cmd.env("PATH", BARE_PATH);
    }
    output(&mut cmd)
}

#[test]
fn on_reboot_agrees_with_and_without_a_binary() {
    assert_no_binary_on_bare_path();
    let inputs = inputs();
    let bare = bare_checkout();
    for (name, conf, env) in &inputs.cases {
        let with = on_reboot(&repo(), conf, env, true);
        let without = on_reboot(bare.path(), conf, env, false);
        assert!(with.status.success(), "{name}: {}", String::from_utf8_lossy(&with.stderr));
        assert_eq!(with.status.code(), without.status.code(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&with.stdout),
            String::from_utf8_lossy(&without.stdout),
            "{name}: the steps"
        );
        assert_eq!(String::from_utf8_lossy(&with.stderr), String::from_utf8_lossy(&without.stderr), "{name}");
        if *name == "custom" {
            let text = format!("{}{}", String::from_utf8_lossy(&with.stdout), String::from_utf8_lossy(&with.stderr));
            // tun<CJ_TUN_OFFSET + CJ_QUEUE_OFFSET + i> for the 3 workers, and the queue directory.
            let tuns: &[&str] = if Path::new("/dev/net/tun").exists() { &["tun104", "tun105", "tun106"] } else { &[] };
            for tun in tuns {
                assert!(text.contains(&format!("{tun} ")) || text.contains(&format!(" {tun}\n")), "{tun}:\n{text}");
            }
            assert!(!text.contains("tun107"), "{text}");
            assert!(text.contains("/tmp/cj-scripts-shm/conjure-12"), "{text}");
        }
    }
    // The variables on-reboot.sh reads, out of range: both refuse them the same way.
    let dir = tempfile::tempdir().expect("tempdir");
    for bad in [
        &["CJ_TUN=maybe"][..],
        &["CJ_HUGEPAGES=lots"],
        &["CJ_HUGEPAGES=1048577"],
        &["CJ_HUGEPAGES_MOUNT=relative/path"],
        &["CJ_HUGEPAGES_MOUNT=/etc"],
        &["CJ_HUGEPAGES_MOUNT=/dev/../etc"],
        &["CJ_SHM_OWNER=root"],
        &["CJ_CORECOUNT=four"],
        &["CJ_CLUSTER_ID=5000"],
        &["CJ_TUN_OFFSET=2000000"],
        &["CJ_AFP_PROMISC=on"],
        &["CJ_CORECOUNT=30", "CJ_QUEUE_OFFSET=1000"],
    ] {
        let conf = dir.path().join("bad.conf");
        let mut text = format!(". {}\nCJ_IFACE=sim:packets=10\n", repo().join("sysconfig/conjure.conf").display());
        for line in bad {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text).expect("write");
        let (var, value) = bad.last().expect("line").split_once('=').expect("NAME=VALUE");
        let must = format!("{var}=\"{value}\"");
        for (how, out) in [
            ("with a binary", on_reboot(&repo(), &conf, &[], true)),
            ("without", on_reboot(bare.path(), &conf, &[], false)),
        ] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bad:?} {how}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert!(
                lines.len() == 1 && lines[0].contains(&must) && lines[0].contains("expected"),
                "{bad:?} {how}: {stderr}"
            );
        }
    }
}

#[test]
fn a_conf_others_may_write_is_refused_unread_with_and_without_a_binary() {
    use std::os::unix::fs::PermissionsExt;
    assert_no_binary_on_bare_path();
    let bare = bare_checkout();
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = repo().join("sysconfig/conjure.conf");
    let include = dir.path().join("include.conf");
    // Valid but for its mode.
    std::fs::write(&include, "CJ_IFACE=sim:packets=10\nCJ_CORECOUNT=3\n").expect("write");
    let via = dir.path().join("via.conf");
    std::fs::write(&via, format!(". {}\n. {}\n", shipped.display(), include.display())).expect("write");
    for mode in [0o664, 0o646] {
        std::fs::set_permissions(&include, std::fs::Permissions::from_mode(mode)).expect("chmod");
        for (how, out) in [
            ("without a binary", on_reboot(bare.path(), &via, &[], false)),
            ("with one", on_reboot(&repo(), &via, &[], true)),
        ] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "mode {mode:o} {how}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert!(
                lines.len() == 1
                    && lines[0].contains(&include.display().to_string())
                    && lines[0].contains("chmod go-w"),
                "mode {mode:o} {how}: {stderr}"
            );
        }
    }
}

#[test]
fn without_a_binary_conjure_conf_is_read_and_never_run() {
    assert_no_binary_on_bare_path();
    let bare = bare_checkout();
    let dir = tempfile::tempdir().expect("tempdir");
    let shipped = repo().join("sysconfig/conjure.conf");
    let marker = dir.path().join("ran");
    let m = marker.display();
    let include = dir.path().join("include.conf");
    for (i, bad) in [
        format!("CJ_FILTER=\"`touch {m}`\""),
        format!("CJ_FILTER=\"$(touch {m})\""),
        format!("CJ_FILTER=$(touch {m})"),
        format!("CJ_FILTER=x; touch {m}"),
        format!("CJ_FILTER=x && touch {m}"),
        format!("CJ_FILTER=x touch {m}"),
    ]
    .iter()
    .enumerate()
    {
        // Directly, and in a file the conf includes as /var/lib/conjure/conjure.conf is.
        let main = dir.path().join(format!("bad{i}.conf"));
        std::fs::write(&main, format!(". {}\nCJ_IFACE=sim:packets=10\n{bad}\n", shipped.display())).expect("write");
        let via = dir.path().join(format!("via{i}.conf"));
        std::fs::write(&include, format!("# an override file\n{bad}\n")).expect("write");
        std::fs::write(
            &via,
            format!(". {}\n[ -f {} ] && . {}\n", shipped.display(), include.display(), include.display()),
        )
        .expect("write");
        for (conf, at) in [(&main, format!("{}:3", main.display())), (&via, format!("{}:2", include.display()))] {
            for (how, out) in [
                ("without a binary", on_reboot(bare.path(), conf, &[], false)),
                ("with one", on_reboot(&repo(), conf, &[], true)),
            ] {
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{bad} {how}: {stderr}");
                let lines: Vec<&str> = stderr.lines().collect();
                assert!(
                    lines.len() == 1 && lines[0].contains(&at) && lines[0].contains("expected"),
                    "{bad} {how}: {stderr}"
                );
                assert!(!marker.exists(), "{bad} {how}: the command in conjure.conf ran");
            }
        }
    }
}

#[test]
fn compose_down_stop_and_ps_run_without_reading_the_configuration() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).expect("mkdir");
    let calls = dir.path().join("calls");
    std::fs::write(
        fake.join("docker"),
        format!("#!/bin/sh\necho \"COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME $*\" >>{}\n", calls.display()),
    )
    .expect("write");
    std::fs::set_permissions(fake.join("docker"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A typo in the override file: any binary refuses it, exit 2.
    let broken = dir.path().join("broken.conf");
    std::fs::write(&broken, format!(". {}\nCJ_CORECOUNT=four\n", repo().join("sysconfig/conjure.conf").display()))
        .expect("write");
    // And a checkout with no binary anywhere.
    let bare = bare_checkout();
    for rel in ["scripts/compose.sh", "docker/docker-compose.yaml", "docker/docker-compose.tun.yaml"] {
        let to = bare.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(repo().join(rel), &to).unwrap_or_else(|e| panic!("copy {rel}: {e}"));
    }
    let env_file = dir.path().join("run/compose.env");
    for (how, root, path) in [
        ("a broken conjure.conf", repo(), format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default())),
        ("no binary", bare.path().to_path_buf(), format!("{}:{BARE_PATH}", fake.display())),
    ] {
        for (args, project) in
            [(&["down", "--timeout", "30"][..], "conjure"), (&["stop"], "stationx"), (&["ps"], "conjure")]
        {
            let _ = std::fs::remove_file(&calls);
            let mut cmd = clean(root.join("scripts/compose.sh"), &[]);
            cmd.env("PATH", &path)
                .env("CONJURE_CONF", &broken)
                .env("CJ_BIN_DIR", bin_dir())
                .env("CONJURE_ENV_FILE", &env_file)
                .env_remove("COMPOSE_PROJECT_NAME")
                .args(args);
            if project != "conjure" {
                cmd.env("COMPOSE_PROJECT_NAME", project);
            }
            let out = output(&mut cmd);
            assert!(out.status.success(), "{how} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            let want = format!(
                "COMPOSE_PROJECT_NAME={project} compose version\nCOMPOSE_PROJECT_NAME={project} compose -f {} -f {} {}\n",
                root.join("docker/docker-compose.yaml").display(),
                root.join("docker/docker-compose.tun.yaml").display(),
                args.join(" ")
            );
            let got = std::fs::read_to_string(&calls).unwrap_or_default();
            assert_eq!(got, want, "{how} {args:?}: docker was not run as expected");
        }
    }
}

#[test]
fn on_reboot_plans_follow_the_capture_source() {
    assert_no_binary_on_bare_path();
    let bare = bare_checkout();
    let conf = repo().join("sysconfig/conjure.conf");
    let promisc = "would run: ip link set dev lo promisc on";
    let kept = "ok: lo: promiscuous mode left as it is (CJ_AFP_PROMISC=no)";
    let up = "ok: lo is up";
    let missing = "no such interface";
    let cluster = "is a ZC cluster queue";
    let not_if = "is not a network interface";
    // (CJ_IFACE, CJ_AFP_PROMISC, in the plan, not in the plan)
    for (iface, afp, has, lacks) in [
        ("lo", "yes", &[up, promisc][..], &[kept, missing][..]),
        ("lo", "no", &[up, kept], &[promisc, missing]),
        // CJ_AFP_PROMISC is AF_PACKET's: PF_RING and ZC sources are made promiscuous anyway.
        ("pfring:lo@2", "no", &[up, promisc], &[kept, missing]),
        ("zc:lo@0", "no", &[up, promisc, "configure the ZC driver for lo:"], &[kept, missing, cluster]),
        ("zc:5@0", "yes", &[cluster], &[up, promisc, missing, "ZC driver for 5"]),
        ("pfring:pcap:/nonexistent.pcap", "yes", &[not_if], &[up, promisc, missing]),
    ] {
        let env = [("CJ_IFACE", iface), ("CJ_AFP_PROMISC", afp), ("CJ_HUGEPAGES", "0")];
        let with = on_reboot(&repo(), &conf, &env, true);
        let without = on_reboot(bare.path(), &conf, &env, false);
        let text = format!("{}{}", String::from_utf8_lossy(&with.stdout), String::from_utf8_lossy(&with.stderr));
        let text2 = format!("{}{}", String::from_utf8_lossy(&without.stdout), String::from_utf8_lossy(&without.stderr));
        assert_eq!(text, text2, "{iface} CJ_AFP_PROMISC={afp}: with and without a binary");
        assert!(with.status.success(), "{iface}: {text}");
        for line in has {
            assert!(text.contains(line), "{iface} CJ_AFP_PROMISC={afp}: no `{line}` in the plan:\n{text}");
        }
        for line in lacks {
            assert!(!text.contains(line), "{iface} CJ_AFP_PROMISC={afp}: `{line}` in the plan:\n{text}");
        }
    }
}

#[test]
fn on_reboot_keeps_the_rss_queues_a_zc_queue_of_an_interface_reads() {
    // `zc:IF@N` reads RSS queue N: configuring the driver with one RSS queue
    // (as for `zc:IF`, queue 0) left no queue N to read.
    assert_no_binary_on_bare_path();
    let bare = bare_checkout();
    let conf = repo().join("sysconfig/conjure.conf");
    // A pf_ringcfg on the PATH (a dry run only looks for it).
    let tools = tempfile::tempdir().expect("tempdir");
    let fake = tools.path().join("pf_ringcfg");
    std::fs::write(&fake, "#!/bin/sh\nexit 1\n").expect("fake pf_ringcfg");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    for (iface, has, lacks) in [
        ("zc:lo", "would run: pf_ringcfg --configure-driver ixgbe --rss-queues 1\n", "reads RSS queue"),
        ("zc:lo@2", "would run: pf_ringcfg --configure-driver ixgbe\n", "--rss-queues"),
    ] {
        let env = [("CJ_IFACE", iface), ("CJ_HUGEPAGES", "0"), ("PF_DRIVER", "ixgbe")];
        let mut texts = Vec::new();
        for (root, path) in [
            (repo(), format!("{}:{}", tools.path().display(), std::env::var("PATH").unwrap_or_default())),
            (bare.path().to_path_buf(), format!("{}:{BARE_PATH}", tools.path().display())),
        ] {
            let mut cmd = clean(root.join("on-reboot.sh"), &env);
            cmd.arg("--dry-run").env("CONJURE_CONF", &conf).env("CONJURE_NETNS_DIRS", "").env("PATH", path);
            if root == repo() {
                cmd.env("CJ_BIN_DIR", bin_dir());
            }
            let out = output(&mut cmd);
            let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "{iface}: {text}");
            texts.push(text);
        }
        assert_eq!(texts[0], texts[1], "{iface}: with and without a binary");
        let text = &texts[0];
        assert!(text.contains(has), "{iface}: no `{has}` in the plan:\n{text}");
        assert!(!text.contains(lacks), "{iface}: `{lacks}` in the plan:\n{text}");
    }
}

//! Log severities as journald reads them. systemd hands a service a stderr
//! that is the journal's stream and says so in `JOURNAL_STREAM` (`DEV:INODE`
//! of that stream, systemd.exec(5)); journald then takes a leading `<N>` as the
//! line's priority (sd-daemon(3)). The test gives each process a file as
//! stderr and names that file in `JOURNAL_STREAM`, as systemd would name its
//! socket:
//! - a clean offline run: every line of every process carries a priority, and
//!   none is a warning or an error (`journalctl -p warning` would show nothing);
//! - a bad value: the one error line carries `<3>`;
//! - `JOURNAL_STREAM` naming something else (a process whose stderr was
//!   redirected away from the journal): no prefix at all.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use e2e::{wait_all, Cluster};

/// Starts `name` of `cluster` with its stderr in `log`, which `JOURNAL_STREAM` names
/// (or, with `other`, names a file that is not its stderr).
fn spawn_logged(cluster: &Cluster, name: &str, args: &[&str], log: &Path, other: Option<&Path>) -> Child {
    let file = File::create(log).expect("create log");
    let named = match other {
        Some(p) => std::fs::metadata(p).expect("stat"),
        None => file.metadata().expect("stat"),
    };
    let mut cmd = cluster.command(name);
    cmd.args(args)
        .env("JOURNAL_STREAM", format!("{}:{}", named.dev(), named.ino()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(file));
    cmd.spawn().expect("start station binary")
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).expect("read log").lines().map(str::to_owned).collect()
}

#[test]
fn under_journald_every_line_of_a_clean_run_is_informational() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::new(&[("CJ_IFACE", "sim:flows=50,packets=5000,seed=3"), ("CJ_LOG_INTERVAL", "1")]);
    let out = dir.path().join("out");
    let logs: Vec<_> = ["balancer", "detector", "app"].iter().map(|n| dir.path().join(n)).collect();
    let detector = spawn_logged(&cluster, "cj-detector", &[], &logs[1], None);
    let app = spawn_logged(&cluster, "cj-app", &["--out", out.to_str().expect("utf-8")], &logs[2], None);
    let balancer = spawn_logged(&cluster, "cj-balancer", &[], &logs[0], None);
    let outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(120));
    for (o, log) in outs.iter().zip(&logs) {
        assert!(o.status.success(), "{}: {}", log.display(), lines(log).join("\n"));
        let l = lines(log);
        assert!(!l.is_empty(), "{} wrote nothing", log.display());
        for line in &l {
            assert!(line.starts_with("<6>"), "{}: a line without the informational priority: {line}", log.display());
        }
    }
}

#[test]
fn under_journald_an_error_is_priority_3_and_elsewhere_no_prefix_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::new(&[("CJ_CORECOUNT", "four")]);
    for name in ["cj-balancer", "cj-detector", "cj-app"] {
        let log = dir.path().join(name);
        let o = spawn_logged(&cluster, name, &[], &log, None).wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(2));
        assert_eq!(
            lines(&log),
            [format!("<3>{name}: CJ_CORECOUNT=\"four\" (environment): expected a whole number from 1 to 1024")],
            "{name}"
        );
        // JOURNAL_STREAM set, but stderr is not that stream: plain lines.
        let elsewhere = dir.path().join(format!("{name}-elsewhere"));
        let o = spawn_logged(&cluster, name, &[], &elsewhere, Some(dir.path())).wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(2));
        let l = lines(&elsewhere);
        assert!(l.len() == 1 && l[0].starts_with(&format!("{name}: CJ_CORECOUNT")), "{name}: {l:?}");
    }
}

//! Bad configuration values stop each binary with one line that names the
//! variable, the value and what is expected, and a non-zero exit.

use e2e::Cluster;

fn one_line_error(bin: &str, vars: &[(&str, &str)], must_contain: &[&str]) {
    let cluster = Cluster::new(vars);
    let out = cluster.command(bin).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{bin} with {vars:?} should fail, stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{bin} with {vars:?}: expected one line, got:\n{stderr}");
    for s in must_contain {
        assert!(lines[0].contains(s), "{bin} with {vars:?}: `{}` should mention {s:?}", lines[0]);
    }
}

#[test]
fn a_word_for_corecount() {
    one_line_error("cj-detector", &[("CJ_CORECOUNT", "four")], &["CJ_CORECOUNT", "four", "environment", "expected"]);
    one_line_error(
        "cj-balancer",
        &[("CJ_CORECOUNT", "four"), ("CJ_IFACE", "sim:packets=10")],
        &["CJ_CORECOUNT", "four"],
    );
    one_line_error("cj-app", &[("CJ_CORECOUNT", "four")], &["CJ_CORECOUNT", "four"]);
}

#[test]
fn a_core_beyond_the_machine() {
    let beyond = (std::thread::available_parallelism().map_or(64, |n| n.get()) + 8).to_string();
    one_line_error("cj-detector", &[("CJ_COREBASE", &beyond)], &[&format!("core {beyond}"), "CJ_COREBASE"]);
}

#[test]
fn an_export_rate_below_what_pacing_takes() {
    one_line_error(
        "cj-app",
        &[("CJ_EXPORT_RATE", "50")],
        &["CJ_EXPORT_RATE=\"50\"", "from 100 to 1000000", "0 or empty for no pacing"],
    );
}

#[test]
fn an_export_behind_that_is_neither_wait_nor_drop() {
    one_line_error(
        "cj-app",
        &[("CJ_EXPORT_BEHIND", "skip")],
        &["CJ_EXPORT_BEHIND=\"skip\"", "expected wait (", "or drop ("],
    );
}

#[test]
fn an_unknown_hash_mode() {
    one_line_error(
        "cj-balancer",
        &[("ZBALANCE_HASH_MODE", "7"), ("CJ_IFACE", "sim:packets=10")],
        &["ZBALANCE_HASH_MODE", "7"],
    );
}

#[test]
fn capturing_the_tun_device_a_worker_writes_to_is_refused() {
    // The check is by name: no device is needed, and nothing is captured.
    one_line_error(
        "cj-balancer",
        &[("CJ_IFACE", "eth0,tun999998"), ("CJ_TUN", "yes"), ("CJ_TUN_OFFSET", "999997"), ("CJ_CORECOUNT", "2")],
        &["CJ_IFACE", "tun999998", "without end", "set CJ_TUN_OFFSET past them"],
    );
}

#[test]
fn a_missing_capture_file() {
    one_line_error(
        "cj-balancer",
        &[("CJ_IFACE", "pcap:/nonexistent/capture.pcap")],
        &["CJ_IFACE", "/nonexistent/capture.pcap"],
    );
}

/// CJ_SKIP_CORE="" means no core is skipped (as -1), never core 0: the
/// detector plans two workers on cores 0 and 1. Read from the plan it prints
/// when its workers start (an empty value taken as 0 would plan cores 1 and 2).
#[test]
fn an_empty_skip_core_is_not_core_zero() {
    use std::io::{BufRead as _, BufReader};
    let allowed = station::coreplan::allowed_cpus();
    if !(allowed.contains(&0) && allowed.contains(&1)) {
        e2e::skip(&format!(
            "needs cores 0 and 1 in the allowed CPU set (the plan must start at core 0), have {}",
            station::coreplan::format_cpu_list(&allowed)
        ));
        return;
    }
    let cluster = Cluster::new(&[
        ("CJ_SKIP_CORE", ""),
        ("CJ_COREBASE", "0"),
        ("CJ_CORECOUNT", "2"),
        ("CJ_IFACE", "sim:packets=10"),
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    ]);
    let mut detector = cluster
        .command("cj-detector")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cj-detector");
    // Lines of stderr in a thread: a detector that never starts its workers fails by the deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = detector.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let started = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(" workers started (queue->core: ") => break Some(line),
            Ok(_) => {}
            Err(_) => break None,
        }
    };
    let pid = nix::unistd::Pid::from_raw(detector.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let status = e2e::wait_all(vec![("cj-detector", detector)], e2e::DEADLINE).pop().expect("status").status;
    let all = reader.join().expect("stderr reader").join("\n");
    let started = started.unwrap_or_else(|| panic!("cj-detector never said its workers started:\n{all}"));
    assert!(
        started.starts_with("cj-detector: 2 workers started (queue->core: 0->core 0, 1->core 1), cluster dir "),
        "the plan of CJ_COREBASE=0 CJ_CORECOUNT=2 CJ_SKIP_CORE=\"\" is cores 0 and 1: {started}"
    );
    assert!(status.success(), "cj-detector stopped by SIGTERM: {status}\n{all}");
}

#[test]
fn a_config_file_value_names_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conjure.conf");
    std::fs::write(&conf, "# test\nCJ_CLUSTER_ID=99\nCJ_QUEUE_SLOTS=1000\n").expect("write");
    let cluster = Cluster::new(&[]);
    let mut cmd = cluster.command("cj-detector");
    cmd.env_remove("CJ_QUEUE_SLOTS").arg("--config").arg(&conf);
    let out = cmd.output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("CJ_QUEUE_SLOTS") && stderr.contains(&format!("{}:3", conf.display())), "{stderr}");
}

/// Runs `bin` with `args` under a deadline and returns its status and stderr
/// (a process blocked on a FIFO fails the test instead of hanging it).
fn run_bounded(bin: &str, vars: &[(&str, &str)], args: &[&str]) -> (std::process::ExitStatus, String) {
    let cluster = Cluster::new(vars);
    let child = cluster
        .command(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let out = e2e::wait_all(vec![(bin, child)], std::time::Duration::from_secs(20)).pop().expect("output");
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_one_line(bin: &str, status: std::process::ExitStatus, stderr: &str, must_contain: &[&str]) {
    assert!(!status.success(), "{bin} should fail, stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{bin}: expected one line, got:\n{stderr}");
    for s in must_contain {
        assert!(lines[0].contains(s), "{bin}: `{}` should mention {s:?}", lines[0]);
    }
}

#[test]
fn a_config_file_that_is_a_device_a_fifo_or_a_directory_is_one_line_and_never_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("conjure.conf");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let fifo_s = fifo.display().to_string();
    let dir_s = dir.path().display().to_string();
    for (path, kind) in [("/dev/zero", "character device"), (fifo_s.as_str(), "FIFO"), (dir_s.as_str(), "directory")] {
        for bin in ["cj-app", "cj-detector"] {
            let (status, stderr) = run_bounded(bin, &[], &["--config", path]);
            assert_one_line(bin, status, &stderr, &["--config", &format!("{path} is a {kind}, not a regular file")]);
        }
    }
    // An include of /dev/zero, from a regular file.
    let conf = dir.path().join("main.conf");
    std::fs::write(&conf, "CJ_CORECOUNT=1\n. /dev/zero\n").expect("write");
    let (status, stderr) = run_bounded("cj-app", &[], &["--config", &conf.display().to_string()]);
    assert_one_line("cj-app", status, &stderr, &[&format!("{}:2", conf.display()), "/dev/zero is a character device"]);
}

#[test]
fn a_config_file_over_one_mebibyte_is_one_line_with_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("big.conf");
    std::fs::write(&conf, "# padding padding padding padding\n".repeat(40_000)).expect("write");
    let (status, stderr) = run_bounded("cj-app", &[], &["--config", &conf.display().to_string()]);
    assert_one_line("cj-app", status, &stderr, &[&conf.display().to_string(), "larger than 1 MiB"]);
}

#[test]
fn an_interface_listed_twice_is_refused() {
    one_line_error("cj-balancer", &[("CJ_IFACE", "lo,lo")], &["CJ_IFACE", "lo,lo", "lo is listed twice"]);
}

#[test]
fn an_empty_or_unwritable_output_directory_is_one_line() {
    let (status, stderr) = run_bounded("cj-app", &[], &["--out", ""]);
    assert_one_line("cj-app", status, &stderr, &["--out \"\"", "expected an output directory"]);
    assert_eq!(status.code(), Some(2));
    let (status, stderr) = run_bounded("cj-app", &[], &["--out", "/proc"]);
    assert_one_line("cj-app", status, &stderr, &["--out /proc", "not writable"]);
    assert!(!stderr.contains("No such file"), "{stderr}");
    assert_eq!(status.code(), Some(2));
    let file = tempfile::NamedTempFile::new().expect("tempfile");
    let (status, stderr) = run_bounded("cj-app", &[], &["--out", &file.path().display().to_string()]);
    assert_one_line("cj-app", status, &stderr, &["not a directory"]);
}

#[test]
fn a_pfring_source_on_a_balancer_built_without_pf_ring_is_one_line_that_names_the_build() {
    // The release build under test has no `pfring` feature (make check-pfring builds that one);
    // the refusal comes at once, before any queue is made or any consumer waited for.
    for iface in ["pfring:eth9", "zc:eth9"] {
        let cluster = Cluster::new(&[("CJ_IFACE", iface)]);
        let child = cluster
            .command("cj-balancer")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start cj-balancer");
        let out =
            e2e::wait_all(vec![("cj-balancer", child)], std::time::Duration::from_secs(20)).pop().expect("output");
        let (status, stderr) = (out.status, String::from_utf8_lossy(&out.stderr).into_owned());
        assert_eq!(status.code(), Some(4), "{iface}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            "cj-balancer: PF_RING device eth9 needs cj-balancer built with `--features pfring`; \
             use an AF_PACKET interface, pcap:FILE or sim:SPEC",
            "{iface}"
        );
        assert!(!cluster.cluster_dir().exists(), "{iface}: no queue directory was made");
    }
}

/// The three binaries share one command line (station::cli): the same arguments
/// are refused with the same line and exit code 2, and the common flags work in each.
#[test]
fn every_binary_refuses_bad_arguments_the_same_way() {
    let cases: &[(&[&str], &str)] = &[
        (&["--config"], "--config needs a FILE (try --help)"),
        (&["--config="], "--config needs a FILE (try --help)"),
        (&["--frobnicate"], "unknown argument \"--frobnicate\" (try --help)"),
        (&["stray"], "unexpected argument \"stray\" (try --help)"),
        (&["--print-config", "stray"], "unexpected argument \"stray\" (try --help)"),
    ];
    for bin in ["cj-balancer", "cj-detector", "cj-app"] {
        for (args, line) in cases {
            let (status, stderr) = run_bounded(bin, &[], args);
            assert_eq!(status.code(), Some(2), "{bin} {args:?}: {stderr}");
            assert_eq!(stderr, format!("{bin}: {line}\n"), "{bin} {args:?}");
        }
        let cluster = Cluster::new(&[]);
        for flag in ["--help", "--version", "--print-config"] {
            let out = cluster.command(bin).arg(flag).output().expect("run");
            assert!(out.status.success() && !out.stdout.is_empty(), "{bin} {flag}: {out:?}");
        }
        let help = cluster.command(bin).arg("--help").output().expect("run");
        let help = String::from_utf8_lossy(&help.stdout);
        for needle in [station::cli::EXIT_CODES_HELP, station::cli::COMMON_OPTIONS_HELP] {
            assert!(help.contains(needle), "{bin} --help lacks:\n{needle}");
        }
    }
    // A bad value stops --print-config as it stops a run: one line, exit 2.
    let (status, stderr) = run_bounded("cj-detector", &[("CJ_HUGEPAGES", "lots")], &["--print-config"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_one_line("cj-detector", status, &stderr, &["CJ_HUGEPAGES=\"lots\" (environment): expected"]);
}

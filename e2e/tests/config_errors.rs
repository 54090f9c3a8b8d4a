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
fn an_unknown_hash_mode() {
    one_line_error(
        "cj-balancer",
        &[("ZBALANCE_HASH_MODE", "7"), ("CJ_IFACE", "sim:packets=10")],
        &["ZBALANCE_HASH_MODE", "7"],
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

#[test]
fn an_empty_skip_core_is_not_core_zero() {
    // CJ_SKIP_CORE="" means no core is skipped: the plan starts at core 0.
    let cluster = Cluster::new(&[("CJ_SKIP_CORE", ""), ("CJ_CORECOUNT", "1"), ("CJ_IFACE", "sim:packets=10")]);
    let out = cluster.command("cj-balancer").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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

//! `CJ_METRICS_ADDR`: cj-app's `/metrics` scraped during a paced run and
//! parsed with a real Prometheus text-format parser (`prometheus-parse`),
//! then, with the pipeline stopped in order (balancer, detector) and the app
//! still running, checked against independent readings: every queue and
//! page counter equals `cj-app status` (which reads the shared memory itself),
//! and every identity term and app total equals the `summary.json` the app
//! writes when it is then stopped; the export's message count equals the
//! datagrams a socket of the test's received, before and after the stop.

#[path = "support/paced.rs"]
mod paced;

use paced::{paced_cluster_with, parse_status, scrape, value, wait_for, Paced};

const SPEC: &str = "flows=60,packets=60000,sizes=64:40/576:30/1500:30,v6=20,nonip=2,seed=11,rate=5000";

#[test]
fn scraped_counters_parse_and_equal_cj_app_status_and_summary_json() {
    // The export goes to a socket of the test's, which counts the messages it gets.
    let collector = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the test's collector");
    let export = format!("ipfix://{}", collector.local_addr().expect("its address"));
    collector.set_read_timeout(Some(std::time::Duration::from_millis(200))).expect("timeout");
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let (received, done) = (std::sync::Arc::clone(&received), std::sync::Arc::clone(&done));
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if collector.recv(&mut buf).is_ok() {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let cluster = paced_cluster_with(SPEC, &[("CJ_EXPORT", &export)]);
    let mut run = Paced::start(&cluster);
    let addr = run.metrics_addr();
    assert!(addr.starts_with("127.0.0.1:"), "loopback by default: {addr}");

    // During the run: records arrive, the text parses, names follow the conventions.
    wait_for("the app's first records in /metrics", || {
        let (_, s) = scrape(&addr);
        s.samples.iter().any(|x| x.metric == "cj_app_records_total" && x.value != prometheus_parse::Value::Counter(0.0))
    });
    let (text, s) = scrape(&addr);
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let t: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(t[3] == "counter", t[2].ends_with("_total"), "counters and only counters end in _total: {line}");
    }
    for family in [
        "cj_packet_queue_enqueued_total",
        "cj_packet_queue_fill",
        "cj_worker_flows_active",
        "cj_worker_flows_evicted_total",
        "cj_balancer_received_frames_total",
        "cj_balancer_received_bytes_total",
        "cj_identity_frames_total",
        "cj_identity_status",
    ] {
        assert!(s.samples.iter().any(|x| x.metric == family), "{family} missing from:\n{text}");
    }
    assert_eq!(value(&s, "cj_balancer_running", &[]), 1);
    assert_eq!(value(&s, "cj_identity_status", &[("status", "in_progress")]), 1, "{text}");
    let (head, _) = paced::http_get(&addr, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // Stop in pipeline order; the app keeps running with every record.
    run.stop("cj-balancer");
    run.stop("cj-detector");
    wait_for("the app to drain every record queue", || {
        let (_, s) = scrape(&addr);
        let records: u64 = (0..2).map(|w| value(&s, "cj_worker_records_total", &[("worker", &w.to_string())])).sum();
        let fill: u64 = (0..2).map(|q| value(&s, "cj_record_queue_fill", &[("queue", &q.to_string())])).sum();
        fill == 0 && value(&s, "cj_app_records_total", &[]) == records
    });
    // Every export message the app counts has reached the test's socket (the
    // exporter sends what it holds within a second), and none was lost.
    wait_for("the export's messages to equal what the test's collector got", || {
        let (_, s) = scrape(&addr);
        let got = received.load(std::sync::atomic::Ordering::Relaxed);
        value(&s, "cj_app_export_messages_total", &[]) == got && got > 0
    });
    let status = parse_status(&run.cj_app(&["status"]));
    let (text, s) = scrape(&addr);
    assert_eq!(value(&s, "cj_app_export_records_dropped_total", &[]), 0, "{text}");
    // Unpaced, nothing is ever dropped for being behind; the family is there all the same.
    assert_eq!(value(&s, "cj_app_export_records_dropped_behind_total", &[]), 0, "{text}");
    assert_eq!(value(&s, "cj_app_export_send_errors_total", &[]), 0, "{text}");
    assert!(value(&s, "cj_app_export_records_sent_total", &[]) > 0, "{text}");

    // Against cj-app status: every queue header and page counter.
    for q in 0..2u32 {
        let ql = q.to_string();
        let l = [("set", "0"), ("queue", ql.as_str())];
        let [enq, deq, dropped, fill] = status.queues[&format!("pkt-0-{q}")];
        assert_eq!(value(&s, "cj_packet_queue_enqueued_total", &l), enq, "pkt-0-{q}");
        assert_eq!(value(&s, "cj_packet_queue_dequeued_total", &l), deq, "pkt-0-{q}");
        assert_eq!(value(&s, "cj_packet_queue_dropped_total", &l), dropped, "pkt-0-{q}");
        assert_eq!(value(&s, "cj_packet_queue_fill", &l), fill, "pkt-0-{q}");
        let [enq, deq, dropped, fill] = status.queues[&format!("rec-{q}")];
        assert_eq!(value(&s, "cj_record_queue_enqueued_total", &l), enq, "rec-{q}");
        assert_eq!(value(&s, "cj_record_queue_dequeued_total", &l), deq, "rec-{q}");
        assert_eq!(value(&s, "cj_record_queue_dropped_total", &l), dropped, "rec-{q}");
        assert_eq!(value(&s, "cj_record_queue_fill", &l), fill, "rec-{q}");
        let page = &status.pages[&format!("worker {q}")];
        let w = [("worker", ql.as_str())];
        for (counter, metric) in [
            ("packets", "cj_worker_packets_total"),
            ("bytes", "cj_worker_bytes_total"),
            ("flows_active", "cj_worker_flows_active"),
            ("flows_new", "cj_worker_flows_created_total"),
            ("flows_evicted", "cj_worker_flows_evicted_total"),
            ("records", "cj_worker_records_total"),
            ("lost_packets", "cj_worker_lost_packets_total"),
        ] {
            assert_eq!(value(&s, metric, &w), page[counter], "worker {q} {counter}");
        }
        assert_eq!(value(&s, "cj_worker_frames_by_kind_total", &[w[0], ("kind", "ipv6")]), page["ipv6"]);
    }
    let b = &status.pages["balancer"];
    for (counter, metric) in [
        ("received", "cj_balancer_received_frames_total"),
        ("received_bytes", "cj_balancer_received_bytes_total"),
        ("capture_dropped", "cj_balancer_capture_dropped_frames_total"),
        ("queue_dropped", "cj_balancer_queue_dropped_frames_total"),
        ("source_errors", "cj_balancer_source_errors_total"),
        ("ended", "cj_balancer_ended"),
    ] {
        assert_eq!(value(&s, metric, &[]), b[counter], "balancer {counter}");
    }
    assert_eq!(b["ended"], 2, "the balancer stopped on a signal");
    assert!(b["received"] > 0 && b["received"] < 60_000, "stopped mid-run: {b:?}");

    // The shipped Grafana dashboard asks only for families the app serves
    // (those of containers need a live capture of containers).
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana-dashboard.json"))
        .expect("docs/grafana-dashboard.json");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut asked = std::collections::BTreeSet::new();
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for (i, _) in expr.match_indices("cj_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                asked.insert(name);
            }
        }
    }
    assert!(asked.len() > 10, "{asked:?}");
    for name in asked.iter().filter(|n| !n.starts_with("cj_container_")) {
        assert!(s.samples.iter().any(|x| &x.metric == name), "the dashboard asks for {name}, which /metrics lacks");
    }

    // Against summary.json, written when the app stops now.
    run.stop("cj-app");
    let summary = e2e::read_json(&run.out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"], "holds", "{summary:#}");
    let terms = &summary["identity"]["terms"];
    let names: Vec<&String> =
        terms.as_object().expect("terms").keys().filter(|k| *k != "queue" && *k != "difference").collect();
    assert!(names.len() >= 7, "{terms}");
    for term in names {
        let got = value(&s, "cj_identity_frames_total", &[("queue", "all"), ("term", term)]);
        assert_eq!(Some(got), terms[term].as_u64(), "identity term {term}: {text}");
    }
    assert_eq!(value(&s, "cj_identity_difference_frames", &[("queue", "all")]), 0);
    assert_eq!(
        Some(value(&s, "cj_identity_capture_dropped_frames_total", &[])),
        summary["identity"]["capture_dropped"].as_u64()
    );
    assert_eq!(Some(value(&s, "cj_balancer_received_frames_total", &[])), terms["received"].as_u64());
    let totals = &summary["totals"];
    for (field, metric) in [
        ("records", "cj_app_records_total"),
        ("flows", "cj_app_flows_total"),
        ("packets", "cj_app_packets_total"),
        ("bytes", "cj_app_bytes_total"),
        ("frame_bytes", "cj_app_frame_bytes_total"),
        ("non_ip_frames", "cj_app_non_ip_frames_total"),
        ("malformed_frames", "cj_app_malformed_frames_total"),
    ] {
        assert_eq!(Some(value(&s, metric, &[])), totals[field].as_u64(), "totals.{field}");
    }
    assert_eq!(Some(value(&s, "cj_app_rows", &[])), summary["rows"].as_u64());
    assert_eq!(Some(value(&s, "cj_app_rows_overflowed_total", &[])), summary["rows_overflowed"].as_u64());
    assert!(totals["non_ip_frames"].as_u64() > Some(0), "the spec has non-IP frames: {summary:#}");
    // The app's last messages went out as it stopped: the collector got every one it counts.
    let sent = summary["export"]["messages"].as_u64().expect("export.messages");
    wait_for("the test's collector to get every message summary.json counts", || {
        received.load(std::sync::atomic::Ordering::Relaxed) == sent
    });
    assert_eq!(summary["export"]["records_dropped"].as_u64(), Some(0), "{summary:#}");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    counter.join().expect("the test's collector");
}

#[test]
fn a_non_loopback_metrics_address_is_refused_with_the_fix() {
    let cluster = e2e::Cluster::new(&[("CJ_METRICS_ADDR", "0.0.0.0:9464")]);
    let out = tempfile::tempdir().expect("out");
    let o = cluster.command("cj-app").arg("--out").arg(out.path()).output().expect("run cj-app");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "cj-app: CJ_METRICS_ADDR=\"0.0.0.0:9464\" (environment): expected a loopback address; 0.0.0.0 is not, and \
         /metrics has no authentication: write public:0.0.0.0:9464 to serve it to the network\n"
    );
}

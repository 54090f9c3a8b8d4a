//! `cj-app query` against a running app on a paced run: answers while the
//! source runs; then, with the pipeline stopped in order (balancer, detector)
//! and the app still running, the answer equals, row for row, the
//! `flows.csv` the app writes when it is stopped (and its filters and top-N
//! equal the same selections made on that file).

#[path = "support/paced.rs"]
mod paced;

use std::collections::BTreeMap;

use paced::{paced_cluster, query_rows, read_flows_csv, wait_for, Paced};

const SPEC: &str = "flows=80,packets=60000,sizes=64:40/576:30/1500:30,v6=20,seed=5,rate=5000";

fn query(run: &Paced<'_>, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["query", "--json"];
    all.extend_from_slice(args);
    let text = run.cj_app(&all);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("cj-app query answer {text:?}: {e}"))
}

#[test]
fn a_query_of_the_running_app_equals_the_flows_csv_it_then_writes() {
    let cluster = paced_cluster(SPEC);
    let mut run = Paced::start(&cluster);

    // While the source runs: rows come, and the sums are those of the rows.
    wait_for("rows in the app's answer", || query(&run, &[])["matched"]["rows"].as_u64() > Some(0));
    let live = query(&run, &[]);
    let rows = query_rows(&live);
    assert_eq!(live["matched"]["packets"].as_u64(), Some(rows.values().map(|v| v[0]).sum::<u64>()), "{live}");
    assert_eq!(live["ended"], false);

    run.stop("cj-balancer");
    run.stop("cj-detector");
    // The app drained every record queue (its totals are the workers' published packets).
    wait_for("the app to drain every record queue", || {
        let status = paced::parse_status(&run.cj_app(&["status"]));
        let queued: u64 = status.queues.iter().filter(|(k, _)| k.starts_with("rec-")).map(|(_, v)| v[3]).sum();
        let published: u64 =
            status.pages.iter().filter(|(k, _)| k.starts_with("worker")).map(|(_, p)| p["record_packets"]).sum();
        queued == 0 && query(&run, &[])["totals"]["packets"].as_u64() == Some(published)
    });
    let all = query(&run, &[]);
    let table = run.cj_app(&["query", "--top", "3", "--by", "packets"]);
    let top = query(&run, &["--top", "3", "--by", "packets"]);
    let udp = query(&run, &["--proto", "udp"]);
    let first_src = query_rows(&all).keys().next().expect("a row")[0].clone();
    let by_addr = query(&run, &["--addr", &first_src]);
    let port_443 = query(&run, &["--port", "443"]);
    run.stop("cj-app");

    let csv = read_flows_csv(&run.out.path().join("flows.csv"));
    assert!(!csv.is_empty());
    let got = query_rows(&all);
    if got != csv {
        let only_query: Vec<_> = got.iter().filter(|(k, v)| csv.get(*k) != Some(v)).take(5).collect();
        let only_csv: Vec<_> = csv.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(5).collect();
        panic!("query and flows.csv differ: query has {only_query:?}; flows.csv has {only_csv:?}");
    }
    let summary = e2e::read_json(&run.out.path().join("summary.json"));
    assert_eq!(all["totals"], summary["totals"], "the query's totals are summary.json's");
    assert_eq!(all["table_rows"].as_u64(), summary["rows"].as_u64());

    // Filters and top-N are the same selections made on flows.csv.
    let select = |keep: &dyn Fn(&Vec<String>) -> bool| -> BTreeMap<Vec<String>, [u64; 4]> {
        csv.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), *v)).collect()
    };
    assert_eq!(query_rows(&udp), select(&|k| k[4] == "udp"));
    assert!(!query_rows(&udp).is_empty(), "the spec has UDP flows");
    assert_eq!(query_rows(&by_addr), select(&|k| k[0] == first_src || k[1] == first_src));
    assert_eq!(query_rows(&port_443), select(&|k| k[2] == "443" || k[3] == "443"));
    let mut by_packets: Vec<(&Vec<String>, &[u64; 4])> = csv.iter().collect();
    by_packets.sort_by(|a, b| b.1[0].cmp(&a.1[0]));
    let top_rows = query_rows(&top);
    assert_eq!(top_rows.len(), 3);
    assert_eq!(top["matched"]["rows"].as_u64(), Some(csv.len() as u64));
    let third = by_packets[2].1[0];
    assert!(top_rows.values().all(|v| v[0] >= third), "top 3 by packets: {top_rows:?} vs {:?}", &by_packets[..3]);
    assert!(table.starts_with("SRC_IP "), "{table}");
    assert!(table.contains(&format!("3 of {} matching row(s), by packets", csv.len())), "{table}");
}

#[test]
fn a_query_without_a_running_app_says_what_to_check() {
    let cluster = e2e::Cluster::new(&[]);
    let o = cluster.command("cj-app").args(["query", "--top", "5"]).output().expect("run cj-app query");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("cj-app: cannot reach cj-app at "), "{err}");
    assert!(
        err.trim_end().ends_with("is cj-app running with the same CJ_CLUSTER_ID, CJ_SHM_DIR and CJ_QUEUE_SET?"),
        "{err}"
    );
    let o = cluster.command("cj-app").args(["query", "--by", "rows"]).output().expect("run cj-app query");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "cj-app: --by \"rows\": expected bytes or packets\n");
}

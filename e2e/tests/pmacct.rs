//! The same capture through pmacctd (pcap_savefile, the same aggregate, the
//! print plugin writing CSV) and through the station: identical rows.

use e2e::{diff_rows, peer_tool, read_flows_csv, run_pipeline, truth_rows, Cluster};
use station::sim::SimSpec;

#[test]
fn station_and_pmacctd_agree_row_for_row() {
    let Some(pmacctd) = peer_tool("pmacctd", "pmacct") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("peer.pcap");
    let spec: SimSpec =
        "flows=300,packets=30000,sizes=64:40/576:30/1514:30,v6=30,vlan=20,seed=11".parse().expect("spec");
    let truth = station::sim::write_pcap(&spec, &pcap, false).expect("write capture");

    let pmacct_csv = dir.path().join("pmacct.csv");
    let conf = dir.path().join("pmacctd.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\n\
             pcap_savefile: {}\n\
             aggregate: src_host, dst_host, src_port, dst_port, proto\n\
             plugins: print\n\
             print_output: csv\n\
             print_output_file: {}\n\
             print_refresh_time: 3600\n\
             plugin_buffer_size: 102400\n\
             plugin_pipe_size: 102400000\n",
            pcap.display(),
            pmacct_csv.display()
        ),
    )
    .expect("write pmacctd.conf");
    // Large plugin buffers: with the defaults pmacctd reads a file faster than its
    // print plugin drains the pipe and loses packets between the two.
    let out = std::process::Command::new(pmacctd).arg("-f").arg(&conf).output().expect("run pmacctd");
    assert!(out.status.success(), "pmacctd failed: {}", String::from_utf8_lossy(&out.stderr));
    let pmacct = read_flows_csv(&pmacct_csv);

    // pmacctd itself agrees with the generator's truth: the comparison means something.
    if let Some(d) = diff_rows(&pmacct, &truth_rows(&truth)) {
        panic!("pmacctd differs from the generator's truth:\n{d}");
    }

    let iface = format!("pcap:{}", pcap.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "2"), ("ZBALANCE_HASH_MODE", "1")]);
    let station_out = dir.path().join("station");
    let run = run_pipeline(&cluster, &station_out);
    run.assert_success();
    let station = read_flows_csv(&station_out.join("flows.csv"));
    if let Some(d) = diff_rows(&station, &pmacct) {
        panic!("station flows.csv differs from pmacctd's CSV:\n{d}");
    }
}

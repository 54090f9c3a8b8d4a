//! The same capture through pmacctd (pcap_savefile, the same aggregate, the
//! print plugin writing CSV) and through the station: identical rows, but for
//! one documented difference (QinQ).
//!
//! The capture has what real links carry beside plain frames: 802.1Q and
//! QinQ (802.1ad) tags, ARP (non-IP) frames and IPv4 UDP datagrams sent as
//! two fragments. What pmacctd does with each, as this test pins it:
//! - 802.1Q: the tag is skipped, the IP rows are the same as untagged;
//! - QinQ (an 802.1ad outer tag, 0x88a8): pmacctd 1.7 does not look inside,
//!   so those frames are in no row of its; the station accounts them like any
//!   other (the test leaves those flows out of the comparison with pmacctd and
//!   checks them against the truth alone);
//! - non-IP frames: not in any IP row (the station counts them as `non_ip`
//!   in the identity, outside flows.csv);
//! - later fragments: pmacctd counts them in their datagram's row (ports of
//!   the first fragment), and so does the station (DESIGN.md, "Flows"), so
//!   the rows are compared as they are: any difference but QinQ fails it.

use std::collections::BTreeMap;

use e2e::{diff_rows, peer_tool, read_flows_csv, run_pipeline, Cluster, RowKey};
use sim::SimSpec;

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows;

#[test]
fn station_and_pmacctd_agree_row_for_row() {
    let Some(pmacctd) = peer_tool("pmacctd", "pmacct") else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("peer.pcap");
    let spec: SimSpec =
        "flows=300,packets=30000,sizes=64:40/576:30/1514:30,v6=30,vlan=20,qinq=10,frag=10,nonip=2,seed=11"
            .parse()
            .expect("spec");
    let truth = sim::write_pcap(&spec, &pcap, false).expect("write capture");

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

    assert!(spec.frag_percent > 0, "the capture has fragmented datagrams");
    assert!(truth.non_ip_frames > 0, "the capture has non-IP frames");
    // pmacctd itself agrees with the generator's truth (later fragments in their
    // datagram's row, as both count them): the comparison means something.
    let truth_rows = truth_rows(&truth);
    // QinQ flows: 8 bytes of tags per frame, so 22 bytes of frame beyond the IP bytes.
    let qinq: Vec<RowKey> = truth
        .rows
        .iter()
        .filter(|r| r.frame_bytes - r.ip_bytes == 22 * r.packets)
        .map(|r| (r.src, r.dst, r.src_port, r.dst_port, station::proto::proto_name(r.proto).to_string()))
        .collect();
    assert!(!qinq.is_empty(), "the capture has QinQ flows");
    let without_qinq = |rows: &BTreeMap<RowKey, (u64, u64)>| -> BTreeMap<RowKey, (u64, u64)> {
        rows.iter().filter(|(k, _)| !qinq.contains(k)).map(|(k, v)| (k.clone(), *v)).collect()
    };
    if let Some(d) = diff_rows(&pmacct, &without_qinq(&truth_rows)) {
        panic!("pmacctd differs from the generator's truth:\n{d}");
    }

    let iface = format!("pcap:{}", pcap.display());
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_CORECOUNT", "2"), ("ZBALANCE_HASH_MODE", "1")]);
    let station_out = dir.path().join("station");
    let run = run_pipeline(&cluster, &station_out);
    run.assert_success();
    let station = read_flows_csv(&station_out.join("flows.csv"));
    if let Some(d) = diff_rows(&station, &truth_rows) {
        panic!("station flows.csv differs from the generator's truth:\n{d}");
    }
    if let Some(d) = diff_rows(&without_qinq(&station), &pmacct) {
        panic!("station flows.csv differs from pmacctd's CSV:\n{d}");
    }
}

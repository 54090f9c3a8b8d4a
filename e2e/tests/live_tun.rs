//! Live capture (AF_PACKET) on an interface without an Ethernet header: a tun
//! device in a network namespace of the test's own, with the whole station
//! (cj-balancer, cj-detector, cj-app) started inside that namespace.
//!
//! The test opens the tun itself (the `tun-tap` crate, no packet information:
//! every write is one IP packet that the kernel receives on the interface),
//! moves it into the namespace, and writes the IP packets of generated
//! traffic into it: the generator's frames with their Ethernet header (and
//! any padding) taken off. Checked against independent truth:
//! - the balancer's start line names the framing (raw IP, `ARPHRD_NONE`);
//! - the balancer received exactly the packets written, the kernel's
//!   interface counters (`rx_packets`, `rx_bytes`) equal what was written and
//!   the balancer's wire bytes equal `rx_bytes` (on a raw IP interface the
//!   frame is the IP packet);
//! - flows.csv equals the generator's truth row for row, FRAME_BYTES equal
//!   the IP bytes, and the identity holds;
//! - `CJ_FILTER` on that interface is refused in one line.
//!
//! Needs root (namespaces, tun, AF_PACKET) and `ip`; without them the test is
//! skipped by `e2e::skip`'s rule. The namespace (and with it the tun) is
//! deleted at the end, also when the test fails. The station runs inside the
//! namespace through wrappers (`ip netns exec NS <binary>`, which execs, so
//! the processes' ids are the binaries'), the test's `CJ_BIN_DIR`: this
//! binary has this one test, so no other test sees that setting.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use e2e::live::{is_root, run, try_run, wait_until, Station, Stopped};
use e2e::{diff_row_counters, peer_tool, read_flows_csv_counters, read_json, Cluster, RowCounters, RowKey};
use sim::SimSpec;

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows_counters;

/// IPv4 and IPv6, fragments, sizes up to a 1500-byte IP packet; no VLAN tags
/// and no ARP (a tun carries IP only).
const SPEC: &str =
    "flows=200,packets=12000,sizes=64:30/100:10/576:20/1000:10/1514:30,v6=30,frag=10,vlan=0,qinq=0,nonip=0,seed=41";

/// Packets written before the test waits for the balancer to have them all:
/// below the kernel's receive backlog (`netdev_max_backlog`, 1000), so no
/// packet is dropped between the tun and the capture.
const BATCH: u64 = 200;

/// A network namespace, deleted (with every interface in it) on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        try_run(&["ip", "netns", "del", &self.0]);
    }
}

impl Netns {
    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        run(&all)
    }

    fn counter(&self, iface: &str, name: &str) -> u64 {
        let text = self.exec(&["cat", &format!("/sys/class/net/{iface}/statistics/{name}")]);
        text.trim().parse().unwrap_or_else(|e| panic!("{name} of {iface}: {e}: {text:?}"))
    }
}

/// The IP packet of a generated Ethernet frame without VLAN tags: the bytes
/// after the 14-byte header, cut to the IP header's own length (padding off).
fn ip_packet(frame: &[u8]) -> &[u8] {
    let ip = &frame[14..];
    let len = match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => usize::from(u16::from_be_bytes([ip[2], ip[3]])),
        0x86dd => 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
        other => panic!("the spec has IP frames only, not EtherType {other:#06x}"),
    };
    &ip[..len]
}

/// Directory of wrappers that run each station binary inside `ns`.
fn wrappers(ns: &str, dir: &Path) {
    let real = e2e::bin("cj-balancer").parent().expect("binary directory").to_path_buf();
    for name in ["cj-balancer", "cj-detector", "cj-app"] {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).expect("wrapper");
        writeln!(f, "#!/bin/sh\nexec ip netns exec {ns} {} \"$@\"", real.join(name).display()).expect("wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

#[test]
fn a_tun_capture_equals_the_generators_truth_and_the_kernels_counters() {
    if !is_root() {
        e2e::skip("needs root (network namespaces, tun devices, AF_PACKET)");
        return;
    }
    if peer_tool("ip", "iproute2").is_none() {
        return;
    }
    let pid = std::process::id() % 100_000;
    let ns = Netns(format!("cjtun-{pid}"));
    run(&["ip", "netns", "add", &ns.0]);
    // No IPv6 in the namespace: no router solicitation or MLD report leaves the tun.
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    let name = format!("cjtun{pid}");
    let tun = tun_tap::Iface::without_packet_info(&name, tun_tap::Mode::Tun).expect("open a tun device");
    run(&["ip", "link", "set", &name, "netns", &ns.0]);
    ns.exec(&["ip", "link", "set", &name, "up"]);

    let bins = tempfile::tempdir().expect("wrapper dir");
    wrappers(&ns.0, bins.path());
    std::env::set_var("CJ_BIN_DIR", bins.path());

    // A capture filter is compiled for Ethernet frames: refused on this interface, in one line.
    let cluster = Cluster::live(&[("CJ_IFACE", &name), ("CJ_CORECOUNT", "1"), ("CJ_FILTER", "udp")]);
    let out = cluster.command("cj-balancer").output().expect("run cj-balancer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "CJ_FILTER on a tun must be refused: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("CJ_FILTER cannot be used") && err.contains(&name), "{err}");

    let spec: SimSpec = SPEC.parse().expect("spec");
    let truth = sim::truth(&spec);
    let cluster = Cluster::live(&[("CJ_IFACE", &name), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &[]);
    let rx_before = (ns.counter(&name, "rx_packets"), ns.counter(&name, "rx_bytes"));

    let mut traffic = sim::SimTraffic::new(&spec);
    let mut buf = vec![0u8; sim::MAX_FRAME_LEN];
    let (mut written, mut written_bytes) = (0u64, 0u64);
    while let Some((_, len)) = traffic.next_frame(&mut buf) {
        let packet = ip_packet(&buf[..len]);
        let n = tun.send(packet).expect("write to the tun");
        assert_eq!(n, packet.len(), "one write is one packet");
        written += 1;
        written_bytes += packet.len() as u64;
        if written % BATCH == 0 {
            wait_until(&format!("the balancer to receive the {written} packets written"), || {
                station.received() >= written
            });
        }
    }
    assert_eq!(written, truth.total_frames, "every generated frame was written");
    let c = station.wait_for("received == written", |c| c.received >= written);
    let rx = (ns.counter(&name, "rx_packets") - rx_before.0, ns.counter(&name, "rx_bytes") - rx_before.1);
    assert_eq!(rx, (written, written_bytes), "the kernel received on the tun what was written");
    assert_eq!(ns.counter(&name, "tx_packets"), 0, "nothing left the tun: the counts are the test's packets");
    assert_eq!(c.received, written, "received exactly what was written: {c:?}");
    assert_eq!((c.capture_dropped, c.queue_dropped), (0, 0), "{c:?}");
    assert_eq!(c.received_bytes, rx.1, "wire bytes on a raw IP interface are the kernel's rx_bytes: {c:?}");

    let Stopped { balancer, out, .. } = station.stop();
    let berr = String::from_utf8_lossy(&balancer.stderr);
    assert!(berr.contains("framing: raw IP (ARPHRD_NONE"), "the start line names the framing: {berr}");

    // The truth's frame bytes are Ethernet frames; on the tun a frame is its IP packet.
    let want: BTreeMap<RowKey, RowCounters> =
        truth_rows_counters(&truth).into_iter().map(|(k, v)| (k, RowCounters { frame_bytes: v.bytes, ..v })).collect();
    let got = read_flows_csv_counters(&out.path().join("flows.csv"));
    if let Some(d) = diff_row_counters(&got, &want) {
        panic!("flows.csv differs from the truth:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    assert_eq!(id["terms"]["received"].as_u64(), Some(written), "{id:#}");
    assert_eq!(id["terms"]["non_ip"].as_u64(), Some(0), "{id:#}");
    assert_eq!(id["terms"]["difference"].as_i64(), Some(0), "{id:#}");
    assert_eq!(id["status"].as_str(), Some("holds"), "{id:#}");
    drop(tun);
}

//! `CJ_EXPORT`: the app's IPFIX and NetFlow v9 export read by a real collector. `nfcapd`
//! (nfdump) listens on 127.0.0.1; the offline pipeline runs on a generated
//! capture (IPv4 and IPv6, VLANs, non-IP frames) exporting to it; nfcapd is
//! stopped (SIGTERM writes its file) and `nfdump -r` shows the flows: per
//! direction, packets and IP bytes per 5-tuple equal the generator's truth
//! and `flows.csv`, and `summary.json` counts every data record as exported.
//! The same run exports NetFlow v9 to a second nfcapd, which must see the
//! same flows. And pmacct's collector, `nfacctd` (print plugin, the station's
//! default aggregate), fed IPFIX by one run and NetFlow v9 by another
//! instance in the same run, writes CSV rows equal to the truth. A collector
//! restarted mid-run gets the templates again and decodes what follows. An
//! export paced with `CJ_EXPORT_RATE` brings 12,000 records of flows that end
//! together to an nfcapd with its default receive buffer whole (unpaced,
//! about 45% of them were lost there). With `CJ_EXPORT_BEHIND=drop` and a
//! rate far below such a burst, the app never holds the station back, its
//! flows.csv equals the truth, and what a socket of the test's receives
//! plus what the app counts dropped behind is every data record of the
//! truth, also when the app is stopped mid-run and started again from its
//! checkpoint (the counters go on). Also: a destination that is neither `ipfix://HOST:PORT` nor
//! `netflow9://HOST:PORT` is refused at start with one line naming the
//! accepted forms.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{diff_rows, read_flows_csv, read_json, run_pipeline, wait_all, Cluster, RowKey};
use sim::SimSpec;

#[path = "support/truth.rs"]
mod sim_truth;

use sim_truth::truth_rows;

/// IPv4 and IPv6, several sizes, VLAN tags and a few ARP frames.
const SPEC: &str = "flows=300,packets=20000,sizes=64:30/576:20/1000:20/1514:30,v6=30,vlan=10,nonip=1,seed=13";

/// nfcapd on 127.0.0.1; killed (SIGKILL) when dropped before [`Nfcapd::stop`].
struct Nfcapd {
    child: Option<Child>,
}

impl Nfcapd {
    fn start(nfcapd: &Path, dir: &Path) -> (Nfcapd, u16) {
        let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free UDP port").port();
        (Self::start_on(nfcapd, dir, port), port)
    }

    fn start_on(nfcapd: &Path, dir: &Path, port: u16) -> Nfcapd {
        // -B: room for a whole offline run's burst of an unpaced export.
        Self::start_with(nfcapd, dir, port, &["-B", "8388608"])
    }

    /// nfcapd with the kernel's default receive buffer (net.core.rmem_default, 208 KiB).
    fn start_default_buffer(nfcapd: &Path, dir: &Path) -> (Nfcapd, u16) {
        let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free UDP port").port();
        (Self::start_with(nfcapd, dir, port, &[]), port)
    }

    fn start_with(nfcapd: &Path, dir: &Path, port: u16, args: &[&str]) -> Nfcapd {
        // nfdump 1.7: -w DIR (older releases: -l DIR).
        let child = Command::new(nfcapd)
            .arg("-w")
            .arg(dir)
            .args(["-b", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nfcapd");
        let n = Nfcapd { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !udp_listening(port) {
            assert!(Instant::now() < deadline, "nfcapd did not listen on 127.0.0.1:{port} within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    /// SIGTERM (nfcapd writes and closes its file), then its output.
    fn stop(mut self) -> String {
        let child = self.child.take().expect("nfcapd runs");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let out = child.wait_with_output().expect("wait for nfcapd");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `/proc/net/udp` line of the socket bound to UDP 127.0.0.1:`port`, if any.
fn udp_socket_line(port: u16) -> Option<String> {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .ok()?
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&want))
        .map(str::to_owned)
}

/// Whether something has bound UDP 127.0.0.1:`port` (from /proc/net/udp, so
/// the check never takes the port itself).
fn udp_listening(port: u16) -> bool {
    udp_socket_line(port).is_some()
}

/// Waits until the collector on `port` has read every datagram from its
/// socket (its receive queue in /proc/net/udp is empty): everything the app
/// sent reached it before it is stopped.
fn wait_until_read(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = udp_socket_line(port).expect("the collector's socket");
        // Field 4 is tx_queue:rx_queue in hex.
        let rx = line.split_whitespace().nth(4).and_then(|q| q.split_once(':')).map(|(_, rx)| rx.to_owned());
        if rx.as_deref().is_some_and(|rx| u64::from_str_radix(rx, 16) == Ok(0)) {
            return;
        }
        assert!(Instant::now() < deadline, "the collector on port {port} did not read its datagrams: {line}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A destination port as nfdump prints it: a number, or `TYPE.CODE` for
/// ICMP (the port field holds TYPE * 256 + CODE; the station's ICMP flows have 0).
fn port(s: &str) -> Option<u16> {
    match s.split_once('.') {
        Some((t, c)) => Some(t.parse::<u16>().ok()? * 256 + c.parse::<u16>().ok()?),
        None => s.parse().ok(),
    }
}

/// Every flow in nfcapd's files, per direction: (src, dst, sport, dport, protocol name) -> (packets, bytes).
fn nfdump_rows(nfdump: &Path, dir: &Path) -> (BTreeMap<RowKey, (u64, u64)>, usize) {
    let mut rows = BTreeMap::new();
    let mut records = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read nfcapd's directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("nfcapd.")))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "nfcapd wrote no file into {}", dir.display());
    for f in files {
        let out = Command::new(nfdump)
            .arg("-r")
            .arg(&f)
            .args(["-q", "-N", "-6", "-o", "fmt:%sa,%da,%sp,%dp,%pr,%ipkt,%ibyt"])
            .output()
            .expect("run nfdump");
        assert!(out.status.success(), "nfdump -r {}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
        // A file with no flow (nfcapd rotates its file on the clock's 5-minute
        // marks, so a run across one can leave an empty last file) is one line
        // saying so.
        for line in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty() && l.trim() != "No matching flows")
        {
            let v: Vec<&str> = line.split(',').map(str::trim).collect();
            assert_eq!(v.len(), 7, "unexpected nfdump line: {line}");
            let proto = match v[4].parse::<u8>() {
                Ok(n) => station::proto::proto_name(n).to_string(),
                Err(_) => v[4].to_ascii_lowercase(),
            };
            let key: RowKey = (
                v[0].parse().unwrap_or_else(|e| panic!("source address in {line}: {e}")),
                v[1].parse().unwrap_or_else(|e| panic!("destination address in {line}: {e}")),
                v[2].parse().unwrap_or_else(|e| panic!("source port in {line}: {e}")),
                port(v[3]).unwrap_or_else(|| panic!("destination port in {line}")),
                proto,
            );
            let slot = rows.entry(key).or_insert((0, 0));
            slot.0 += v[5].parse::<u64>().unwrap_or_else(|e| panic!("packets in {line}: {e}"));
            slot.1 += v[6].parse::<u64>().unwrap_or_else(|e| panic!("bytes in {line}: {e}"));
            records += 1;
        }
    }
    (rows, records)
}

#[test]
fn nfdump_reads_every_exported_flow_per_direction_equal_to_the_truth_over_ipfix_and_netflow_v9() {
    let (Some(nfcapd), Some(nfdump)) = (e2e::peer_tool("nfcapd", "nfdump"), e2e::peer_tool("nfdump", "nfdump")) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let pcap = work.path().join("sample.pcap");
    let spec: SimSpec = SPEC.parse().expect("spec");
    let truth = sim::write_pcap(&spec, &pcap, false).expect("write capture");
    assert!(truth.rows.iter().any(|r| r.src.is_ipv6()), "the spec has IPv6 flows");
    assert!(truth.rows.iter().any(|r| r.src.is_ipv4()), "the spec has IPv4 flows");

    let flows_dir = work.path().join("nfcapd");
    let v9_dir = work.path().join("nfcapd-v9");
    std::fs::create_dir(&flows_dir).expect("mkdir");
    std::fs::create_dir(&v9_dir).expect("mkdir");
    let (collector, port) = Nfcapd::start(&nfcapd, &flows_dir);
    let (v9_collector, v9_port) = Nfcapd::start(&nfcapd, &v9_dir);
    let iface = format!("pcap:{}", pcap.display());
    let export = format!("ipfix://127.0.0.1:{port},netflow9://127.0.0.1:{v9_port}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_EXPORT", &export)]);
    let out = work.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let run = run_pipeline(&cluster, &out);
    run.assert_success();
    wait_until_read(port);
    wait_until_read(v9_port);
    let log = collector.stop();
    let v9_log = v9_collector.stop();

    let want = truth_rows(&truth);
    let (got, records) = nfdump_rows(&nfdump, &flows_dir);
    if let Some(d) = diff_rows(&got, &want) {
        panic!("nfdump's flows differ from the truth:\n{d}\nnfcapd said:\n{log}");
    }
    let (v9_got, v9_records) = nfdump_rows(&nfdump, &v9_dir);
    if let Some(d) = diff_rows(&v9_got, &want) {
        panic!("nfdump's flows from NetFlow v9 differ from the truth:\n{d}\nnfcapd said:\n{v9_log}");
    }
    assert_eq!(v9_records, records, "as many NetFlow v9 records as IPFIX ones");
    let csv = read_flows_csv(&out.join("flows.csv"));
    assert!(diff_rows(&csv, &want).is_none(), "flows.csv differs from the truth");

    let summary = read_json(&out.join("summary.json"));
    let export = &summary["export"];
    assert_eq!(export["records"].as_u64(), Some(records as u64), "summary.json export: {export:#}");
    // Each record went to both collectors.
    assert_eq!(export["records_exported"].as_u64(), Some(2 * records as u64), "summary.json export: {export:#}");
    assert_eq!(export["records_dropped"].as_u64(), Some(0), "summary.json export: {export:#}");
    assert!(log.contains("Sequence Errors: 0"), "nfcapd saw a sequence gap:\n{log}");
    assert!(v9_log.contains("Sequence Errors: 0"), "nfcapd saw a NetFlow v9 sequence gap:\n{v9_log}");
}

/// Flows that all end at once: 6,000 IPv4 flows in 30,000 frames 1 µs apart
/// (30 ms of stream: none times out), so every flow ends at the stream's end
/// and the app takes about 12,000 data records (one per direction) in one go.
/// Unpaced, nfcapd with its default buffer kept about 6,000 of them (45% lost).
const BURST: &str = "flows=6000,packets=30000,sizes=64:50/1000:50,v6=0,vlan=0,seed=5";

/// The pace for [`BURST`]: 1,000 data records a second. nfcapd's default
/// receive buffer (net.core.rmem_default, 212,992 bytes) holds 92 datagrams
/// of 1,400 bytes on loopback, 1,472 IPv4 records: about 1.5 s of this
/// traffic, so the collector may be descheduled over a second without a
/// loss. The run takes about 12 s.
const BURST_RATE: &str = "1000";

#[test]
fn a_paced_export_of_flows_ending_together_reaches_a_collector_with_the_default_buffer_whole() {
    let (Some(nfcapd), Some(nfdump)) = (e2e::peer_tool("nfcapd", "nfdump"), e2e::peer_tool("nfdump", "nfdump")) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let flows_dir = work.path().join("nfcapd");
    std::fs::create_dir(&flows_dir).expect("mkdir");
    let (collector, port) = Nfcapd::start_default_buffer(&nfcapd, &flows_dir);
    let spec: SimSpec = BURST.parse().expect("spec");
    let want = truth_rows(&sim::truth(&spec));
    assert!(want.len() >= 11_000, "the burst has {} directions, fewer than the test means", want.len());
    let iface = format!("sim:{BURST}");
    let export = format!("ipfix://127.0.0.1:{port}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_EXPORT", &export), ("CJ_EXPORT_RATE", BURST_RATE)]);
    let out = work.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let run = run_pipeline(&cluster, &out);
    run.assert_success();
    let app_log = String::from_utf8_lossy(&run.app.stderr);
    assert!(app_log.contains(&format!("paced at {BURST_RATE} data records/s")), "{app_log}");
    wait_until_read(port);
    let log = collector.stop();

    let (got, records) = nfdump_rows(&nfdump, &flows_dir);
    if let Some(d) = diff_rows(&got, &want) {
        panic!("nfdump's flows differ from the truth:\n{d}\nnfcapd said:\n{log}\ncj-app said:\n{app_log}");
    }
    assert!(diff_rows(&read_flows_csv(&out.join("flows.csv")), &want).is_none(), "flows.csv differs from the truth");
    let summary = read_json(&out.join("summary.json"));
    let export = &summary["export"];
    assert_eq!(export["records"].as_u64(), Some(records as u64), "summary.json export: {export:#}");
    assert_eq!(export["records_exported"].as_u64(), Some(records as u64), "summary.json export: {export:#}");
    assert_eq!(export["records_dropped"].as_u64(), Some(0), "summary.json export: {export:#}");
    assert_eq!(export["rate"].as_u64(), Some(1000), "summary.json export: {export:#}");
    assert!(log.contains("Sequence Errors: 0"), "nfcapd saw a sequence gap:\n{log}");
}

/// Flows that all end at once for an export that cannot keep up: 1,000
/// flows (IPv4 and IPv6) in 5,000 frames, about 2,000 data records taken
/// together, against [`BEHIND_RATE`].
const BEHIND: &str = "flows=1000,packets=5000,sizes=64:50/1000:50,v6=20,vlan=0,seed=7";

/// The lowest pace: the export holds at most 64 data records, so nearly all
/// of [`BEHIND`]'s are more than it holds (waiting, the app would take them
/// at this rate: about 20 s).
const BEHIND_RATE: &str = "100";

/// One data record as the test decodes it: (src, dst, sport, dport, protocol) and (packets, octets).
type Received = (RowKey, (u64, u64));

/// The data records of one IPFIX message (templates 256 and 257 as
/// `ipfix.rs` documents them: addresses, ports, protocol, then the
/// 8-byte packet and octet deltas), decoded by the test on its own.
fn ipfix_data_records(m: &[u8]) -> Vec<Received> {
    let be16 = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let be64 = |at: usize| u64::from_be_bytes(m[at..at + 8].try_into().expect("8 bytes"));
    assert!(m.len() >= 16 && be16(0) == 10 && usize::from(be16(2)) == m.len(), "not an IPFIX message: {m:?}");
    let mut out = Vec::new();
    let mut at = 16;
    while at + 4 <= m.len() {
        let (id, len) = (be16(at), usize::from(be16(at + 2)));
        assert!(len >= 4 && at + len <= m.len(), "a set overruns its message: {m:?}");
        let (alen, rlen) = match id {
            256 => (4, 82),
            257 => (16, 106),
            _ => {
                at += len;
                continue;
            }
        };
        let mut r = at + 4;
        while r + rlen <= at + len {
            let addr = |o: usize| -> std::net::IpAddr {
                if alen == 4 {
                    <[u8; 4]>::try_from(&m[o..o + 4]).expect("4 bytes").into()
                } else {
                    <[u8; 16]>::try_from(&m[o..o + 16]).expect("16 bytes").into()
                }
            };
            let p = r + 2 * alen;
            let key = (addr(r), addr(r + alen), be16(p), be16(p + 2), station::proto::proto_name(m[p + 4]).to_string());
            out.push((key, (be64(p + 5), be64(p + 13))));
            r += rlen;
        }
        at += len;
    }
    out
}

#[test]
fn a_paced_export_that_drops_behind_never_holds_the_station_and_counts_every_record_it_does_not_send() {
    let (got, e, app_log) = dropping_behind(&[]);
    let behind = e["records_dropped_behind"].as_u64().unwrap_or(0);
    assert!(behind > 0, "the burst is more than the export holds, yet none was dropped: {e:#}");
    // What the export holds (at least 64 data records) is sent, not dropped.
    assert!(got >= 64, "the collector got {got} data records: {e:#}");
    // The app never held the record queues back for the export.
    assert_eq!(e["intake_held_ms"].as_u64(), Some(0), "{e:#}\n{app_log}");
}

/// Record queues of 1,024 slots: the app asks for a checkpoint once it holds
/// 512 records of the burst, while the export holds records, and reads on
/// while the checkpoint waits for them (their export counted dropped behind).
#[test]
fn a_paced_export_that_drops_behind_counts_what_the_app_takes_while_a_checkpoint_waits() {
    let (_, e, _) = dropping_behind(&[("CJ_RECORD_QUEUE_SLOTS", "1024")]);
    assert!(e["records_dropped_behind"].as_u64() > Some(0), "{e:#}");
}

/// A collector that is a socket of the test's, read by a thread as datagrams
/// come: its `ipfix://` address, and what ends it and returns the data
/// records it received (once the last datagram has had 200 ms to arrive).
fn test_collector() -> (String, impl FnOnce() -> Vec<Received>) {
    let collector = UdpSocket::bind("127.0.0.1:0").expect("bind the test's collector");
    let export = format!("ipfix://{}", collector.local_addr().expect("its address"));
    collector.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut buf, mut got) = (vec![0u8; 65536], Vec::new());
            loop {
                match collector.recv(&mut buf) {
                    Ok(n) => got.extend(ipfix_data_records(&buf[..n])),
                    Err(_) if done.load(std::sync::atomic::Ordering::Relaxed) => return got,
                    Err(_) => {}
                }
            }
        })
    };
    (export, move || {
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        reader.join().expect("the test's collector")
    })
}

/// An app stopped (SIGTERM) mid-run after it had dropped records behind and
/// checkpointed them, then started again: its checkpoint counts those
/// records, so the second app never exports them; the run's summary.json
/// must still count them (received + dropped behind = every data record of
/// the truth), or they were dropped silently.
#[test]
fn a_paced_export_that_drops_behind_keeps_counting_what_it_dropped_across_a_restart() {
    restarted_dropping_behind(nix::sys::signal::Signal::SIGTERM);
}

/// The same with the first app killed (SIGKILL) after a checkpoint: at least
/// once, every data record of the truth was received or counted dropped
/// behind (what the first app read after its checkpoint is read again).
#[test]
fn a_paced_export_that_drops_behind_killed_and_restarted_received_or_counted_every_record() {
    restarted_dropping_behind(nix::sys::signal::Signal::SIGKILL);
}

/// Runs [`BEHIND`] at [`BEHIND_RATE`] with `CJ_EXPORT_BEHIND=drop` and
/// 64-slot record queues; the first cj-app gets `signal` just after its
/// first checkpoint, a second continues from its checkpoint to the end.
fn restarted_dropping_behind(signal: nix::sys::signal::Signal) {
    let graceful = signal == nix::sys::signal::Signal::SIGTERM;
    let (export, collected) = test_collector();
    let spec: SimSpec = BEHIND.parse().expect("spec");
    let want = truth_rows(&sim::truth(&spec));
    let should = want.len() as u64;
    let iface = format!("sim:{BEHIND}");
    // A 64-slot record queue: the first app checkpoints every 32 records and
    // reads at most 64 past its last checkpoint, so a stop finds most of the
    // burst still to come.
    let cluster = Cluster::new(&[
        ("CJ_IFACE", &iface),
        ("ZBALANCE_HASH_MODE", "1"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_QUEUE_SLOTS", "32768"),
        ("CJ_RECORD_QUEUE_SLOTS", "64"),
        ("CJ_EXPORT", &export),
        ("CJ_EXPORT_RATE", BEHIND_RATE),
        ("CJ_EXPORT_BEHIND", "drop"),
    ]);
    let out = tempfile::tempdir().expect("out dir");
    let spawn = |name: &str, args: &[&std::ffi::OsStr]| {
        let mut cmd = cluster.command(name);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("start a station binary")
    };
    let app_args = [std::ffi::OsStr::new("--out"), out.path().as_os_str()];
    let detector = spawn("cj-detector", &[]);
    let first = spawn("cj-app", &app_args);
    let balancer = spawn("cj-balancer", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.records_released() == 0 {
        assert!(Instant::now() < deadline, "cj-app released no record-queue slot within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = nix::unistd::Pid::from_raw(first.id() as i32);
    nix::sys::signal::kill(pid, signal).expect("signal the first cj-app");
    let first = first.wait_with_output().expect("first cj-app");
    let first_log = String::from_utf8_lossy(&first.stderr).into_owned();
    let mut dropped_before = None;
    if graceful {
        assert!(first.status.success(), "the first cj-app failed:\n{first_log}");
        let before = read_json(&out.path().join("summary.json"))["export"].clone();
        let n = before["records_dropped_behind"].as_u64().unwrap_or(0);
        assert!(n > 0, "the first cj-app dropped nothing behind, so this run shows nothing: {before:#}");
        dropped_before = Some(n);
    }
    let second = spawn("cj-app", &app_args);
    let outs = wait_all(
        vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", second)],
        Duration::from_secs(180),
    );
    let got = collected();
    let all = format!("--- first app\n{first_log}\n--- second app\n{}", String::from_utf8_lossy(&outs[2].stderr));
    for o in &outs {
        assert!(o.status.success(), "a process failed:\n{all}");
    }
    assert!(all.contains("continuing from"), "the second cj-app did not continue the checkpoint:\n{all}");
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &want) {
        panic!("flows.csv differs from the truth:\n{d}\n{all}");
    }
    // A graceful stop sends what the export holds before its checkpoint:
    // nothing arrives twice. Killed, what the first app sent after its
    // checkpoint is sent again.
    let mut seen = std::collections::BTreeSet::new();
    for (key, counts) in &got {
        assert_eq!(want.get(key), Some(counts), "a data record that is not a direction of the truth: {key:?}");
        assert!(seen.insert(key.clone()) || !graceful, "{key:?} arrived twice");
    }
    let e = read_json(&out.path().join("summary.json"))["export"].clone();
    let behind = e["records_dropped_behind"].as_u64().unwrap_or(0);
    let records = e["records"].as_u64().unwrap_or(0);
    let exported = e["records_exported"].as_u64().unwrap_or(0);
    let counted = format!("received {} ({} once) + dropped behind {behind}", got.len(), seen.len());
    let counted = format!("{counted} (the first app had counted {dropped_before:?}): {e:#}");
    assert_eq!(records, exported + behind, "{counted}");
    if graceful {
        assert_eq!(got.len() as u64 + behind, should, "{counted}");
        assert_eq!((records, exported), (should, got.len() as u64), "{counted}");
    } else {
        // Every direction of the truth was received, or counted dropped behind.
        assert!(seen.len() as u64 + behind >= should, "{counted}");
        assert!(records >= should, "{counted}");
    }
}

/// Runs [`BEHIND`] offline with the export paced at [`BEHIND_RATE`] and
/// `CJ_EXPORT_BEHIND=drop` (and `extra`) to a socket of the test's, and checks
/// what holds whatever the timing: flows.csv is the truth, each data record
/// received is a direction of the truth (once), and those received plus
/// those the app counts dropped behind are every data record of the truth.
/// Returns the data records received, `summary.json`'s export and the app's log.
fn dropping_behind(extra: &[(&str, &str)]) -> (usize, serde_json::Value, String) {
    let (export, collected) = test_collector();
    let spec: SimSpec = BEHIND.parse().expect("spec");
    let truth = sim::truth(&spec);
    let want = truth_rows(&truth);
    // Each truth row is one direction of one flow, and none times out: one data record each.
    let should = truth.rows.len() as u64;
    assert!(should >= 1_500, "the burst has {should} directions, fewer than the test means");
    let iface = format!("sim:{BEHIND}");
    let mut vars = vec![
        ("CJ_IFACE", iface.as_str()),
        ("CJ_EXPORT", &export),
        ("CJ_EXPORT_RATE", BEHIND_RATE),
        ("CJ_EXPORT_BEHIND", "drop"),
    ];
    vars.extend_from_slice(extra);
    let cluster = Cluster::new(&vars);
    let out = tempfile::tempdir().expect("out dir");
    let run = run_pipeline(&cluster, out.path());
    let got = collected();
    run.assert_success();
    let app_log = String::from_utf8_lossy(&run.app.stderr).into_owned();

    // The tables are exact, the export's drops notwithstanding.
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &want) {
        panic!("flows.csv differs from the truth:\n{d}\ncj-app said:\n{app_log}");
    }
    // What arrived is the truth's, each direction at most once.
    let mut seen = std::collections::BTreeSet::new();
    for (key, counts) in &got {
        assert_eq!(want.get(key), Some(counts), "a data record that is not a direction of the truth: {key:?}");
        assert!(seen.insert(key.clone()), "{key:?} arrived twice");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let e = summary["export"].clone();
    let behind = e["records_dropped_behind"].as_u64().unwrap_or_else(|| panic!("no records_dropped_behind: {e:#}"));
    // Received + counted dropped behind = every data record the truth has.
    assert_eq!(got.len() as u64 + behind, should, "received {} + dropped behind {behind}: {e:#}", got.len());
    assert_eq!(e["records"].as_u64(), Some(should), "{e:#}");
    assert_eq!(e["records_exported"].as_u64(), Some(got.len() as u64), "{e:#}");
    assert_eq!(e["records_dropped"].as_u64(), Some(0), "{e:#}");
    assert_eq!(e["behind"], "drop", "{e:#}");
    if behind > 0 {
        assert!(app_log.contains("not exported so far"), "no warning about the records not exported:\n{app_log}");
    }
    (got.len(), e, app_log)
}

/// The restarts test's paced stream: 20,000 frames at 5,000 a second, 200 flows.
const PACED: &str = "flows=200,packets=20000,sizes=64:50/1000:50,v6=20,vlan=10,seed=31,rate=5000";

#[test]
fn an_app_killed_after_a_checkpoint_had_sent_every_record_the_checkpoint_counts() {
    killed_after_a_checkpoint(None);
}

/// Paced, a checkpoint waits until the export has sent what it counts: the
/// records read ahead and still waiting for their turn are not in it.
#[test]
fn a_paced_app_killed_after_a_checkpoint_had_sent_every_record_the_checkpoint_counts() {
    killed_after_a_checkpoint(Some("1000"));
}

/// The first cj-app (exporting at `rate`, unpaced when None) is killed just
/// after its first checkpoint; the second continues it: the collector has at
/// least every record of the truth.
fn killed_after_a_checkpoint(rate: Option<&str>) {
    let (Some(nfcapd), Some(nfdump)) = (e2e::peer_tool("nfcapd", "nfdump"), e2e::peer_tool("nfdump", "nfdump")) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let flows_dir = work.path().join("nfcapd");
    std::fs::create_dir(&flows_dir).expect("mkdir");
    let (collector, port) = Nfcapd::start(&nfcapd, &flows_dir);
    let spec: SimSpec = PACED.parse().expect("spec");
    let iface = format!("sim:{PACED}");
    let export = format!("ipfix://127.0.0.1:{port}");
    // A 64-slot record queue: the app checkpoints every 32 records, and is
    // killed just after its first checkpoint, when records it has read (and
    // counted in that checkpoint) may still wait for the exporter's next message
    // (paced: for their turn behind the records read ahead).
    let cluster = Cluster::new(&[
        ("CJ_IFACE", &iface),
        ("ZBALANCE_HASH_MODE", "1"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_REFRESH", "1"),
        ("CJ_QUEUE_SLOTS", "32768"),
        ("CJ_RECORD_QUEUE_SLOTS", "64"),
        ("CJ_EXPORT", &export),
        ("CJ_EXPORT_RATE", rate.unwrap_or("0")),
    ]);
    let out = work.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let spawn = |name: &str, args: &[&std::ffi::OsStr]| {
        let mut cmd = cluster.command(name);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("start a station binary")
    };
    let app_args = [std::ffi::OsStr::new("--out"), out.as_os_str()];
    let detector = spawn("cj-detector", &[]);
    let mut first = spawn("cj-app", &app_args);
    let balancer = spawn("cj-balancer", &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while cluster.records_released() == 0 {
        assert!(Instant::now() < deadline, "cj-app released no record-queue slot within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().expect("SIGKILL the first cj-app");
    let first = first.wait_with_output().expect("first cj-app");
    let second = spawn("cj-app", &app_args);
    let outs = wait_all(
        vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", second)],
        Duration::from_secs(180),
    );
    let all = format!(
        "--- first app\n{}\n--- second app\n{}",
        String::from_utf8_lossy(&first.stderr),
        String::from_utf8_lossy(&outs[2].stderr)
    );
    for o in &outs {
        assert!(o.status.success(), "a process failed:\n{all}");
    }
    assert!(
        String::from_utf8_lossy(&outs[2].stderr).contains("continuing from"),
        "the second cj-app did not continue the checkpoint:\n{all}"
    );
    wait_until_read(port);
    let log = collector.stop();

    // At least once: every direction's packets and bytes reached the collector
    // (a record read after the checkpoint and sent before the kill is sent
    // again by the second app, so the collector may hold more, never less).
    let want = truth_rows(&sim::truth(&spec));
    assert!(diff_rows(&read_flows_csv(&out.join("flows.csv")), &want).is_none(), "flows.csv differs from the truth");
    let (got, _) = nfdump_rows(&nfdump, &flows_dir);
    let short: Vec<_> = want
        .iter()
        .filter(|(k, w)| got.get(*k).is_none_or(|g| g.0 < w.0 || g.1 < w.1))
        .map(|(k, w)| format!("{k:?}: truth {w:?}, collector {:?}", got.get(k)))
        .collect();
    assert!(
        short.is_empty(),
        "records lost from the export across the crash:\n{}\nnfcapd said:\n{log}\n{all}",
        short.join("\n")
    );
}

#[test]
fn an_export_destination_that_is_neither_ipfix_nor_netflow_v9_is_refused_with_the_accepted_forms() {
    let cluster = Cluster::new(&[("CJ_EXPORT", "netflow://127.0.0.1:2055")]);
    let out = tempfile::tempdir().expect("out");
    let o = cluster.command("cj-app").arg("--out").arg(out.path()).output().expect("run cj-app");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(
            "cj-app: CJ_EXPORT=\"netflow://127.0.0.1:2055\" (environment): expected ipfix://HOST:PORT or \
             netflow9://HOST:PORT, several separated by commas"
        ),
        "{err}"
    );
}

/// nfacctd on 127.0.0.1 with the print plugin writing `csv` (the default
/// aggregate, pmacct's CSV columns) every second: (child, port). Arrival time
/// as the flows' time (`nfacctd_time_new`): with the flows' own, older times
/// its NetFlow v9 cache was written only at exit.
fn start_nfacctd(nfacctd: &Path, dir: &Path, name: &str, csv: &Path) -> (Child, u16) {
    let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("a free UDP port").port();
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\n\
             nfacctd_ip: 127.0.0.1\n\
             nfacctd_port: {port}\n\
             aggregate: src_host, dst_host, src_port, dst_port, proto\n\
             plugins: print\n\
             print_output: csv\n\
             print_output_file: {}\n\
             nfacctd_time_new: true\n\
             print_refresh_time: 1\n\
             print_output_file_append: true\n",
            csv.display()
        ),
    )
    .expect("write nfacctd.conf");
    let child = Command::new(nfacctd)
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nfacctd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !udp_listening(port) {
        assert!(Instant::now() < deadline, "nfacctd did not listen on 127.0.0.1:{port} within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// SIGINT, then nfacctd's output.
fn stop_nfacctd(child: Child) -> String {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().expect("wait for nfacctd");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The rows of nfacctd's CSV so far: it appends what it aggregated every
/// second (`print_refresh_time: 1`), each time with a header line; the rows
/// of one key are summed.
fn nfacctd_rows(csv: &Path) -> BTreeMap<RowKey, (u64, u64)> {
    let Ok(text) = std::fs::read_to_string(csv) else { return BTreeMap::new() };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else { return BTreeMap::new() };
    let body: Vec<&str> = lines.filter(|l| *l != header).collect();
    let one = csv.with_extension("one-header.csv");
    std::fs::write(&one, format!("{header}\n{}\n", body.join("\n"))).expect("write the rows");
    read_flows_csv(&one)
}

#[test]
fn nfacctd_aggregates_the_ipfix_and_netflow_v9_exports_equal_to_the_truth() {
    let Some(nfacctd) = e2e::peer_tool("nfacctd", "pmacct") else { return };
    let work = tempfile::tempdir().expect("tempdir");
    let pcap = work.path().join("sample.pcap");
    let spec: SimSpec = SPEC.parse().expect("spec");
    let truth = sim::write_pcap(&spec, &pcap, false).expect("write capture");
    let (ipfix_csv, v9_csv) = (work.path().join("ipfix.csv"), work.path().join("v9.csv"));
    let (ipfix, ipfix_port) = start_nfacctd(&nfacctd, work.path(), "ipfix", &ipfix_csv);
    let (v9, v9_port) = start_nfacctd(&nfacctd, work.path(), "v9", &v9_csv);
    let iface = format!("pcap:{}", pcap.display());
    let export = format!("ipfix://127.0.0.1:{ipfix_port},netflow9://127.0.0.1:{v9_port}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_EXPORT", &export)]);
    let out = work.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    run_pipeline(&cluster, &out).assert_success();
    wait_until_read(ipfix_port);
    wait_until_read(v9_port);
    // nfacctd writes every second: wait (with a deadline) until both files hold
    // everything. Its NetFlow v9 instance sometimes keeps its cache until it
    // exits, so after 5 s the exit (SIGINT, which writes the cache) settles it.
    let want = truth_rows(&truth);
    let deadline = Instant::now() + Duration::from_secs(5);
    while [&ipfix_csv, &v9_csv].iter().any(|csv| nfacctd_rows(csv) != want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ipfix_log, v9_log) = (stop_nfacctd(ipfix), stop_nfacctd(v9));
    for (what, csv, log) in [("IPFIX", &ipfix_csv, &ipfix_log), ("NetFlow v9", &v9_csv, &v9_log)] {
        if let Some(d) = diff_rows(&nfacctd_rows(csv), &want) {
            panic!("nfacctd's rows from {what} differ from the truth:\n{d}\nnfacctd said:\n{log}");
        }
    }
}

#[test]
fn a_collector_restarted_mid_run_gets_the_templates_again_and_decodes_the_rest() {
    let (Some(nfcapd), Some(nfdump)) = (e2e::peer_tool("nfcapd", "nfdump"), e2e::peer_tool("nfdump", "nfdump")) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    // Eight seconds of paced traffic whose flows export every second
    // (CJ_REFRESH=1): several sends after the collector goes away.
    const SIM: &str = "flows=100,packets=40000,sizes=64:50/1000:50,v6=20,seed=17,rate=5000";
    let spec: SimSpec = SIM.parse().expect("spec");
    let truth = sim::truth(&spec);
    let (before, after) = (work.path().join("before"), work.path().join("after"));
    std::fs::create_dir(&before).expect("mkdir");
    std::fs::create_dir(&after).expect("mkdir");
    let (first, port) = Nfcapd::start(&nfcapd, &before);
    let iface = format!("sim:{SIM}");
    let export = format!("ipfix://127.0.0.1:{port}");
    let cluster = Cluster::new(&[("CJ_IFACE", &iface), ("CJ_EXPORT", &export), ("CJ_REFRESH", "1")]);
    let out = work.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let spawn = |name: &str, args: &[&Path]| {
        let mut cmd = cluster.command(name);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("start station binary")
    };
    let detector = spawn("cj-detector", &[]);
    let app = spawn("cj-app", &[Path::new("--out"), &out]);
    let balancer = spawn("cj-balancer", &[]);

    let summary_export = |key: &str| {
        std::fs::read_to_string(out.join("summary.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["export"][key].as_u64())
            .unwrap_or(0)
    };
    // The first collector takes some data, then goes away.
    let deadline = Instant::now() + Duration::from_secs(60);
    while summary_export("records_exported") == 0 {
        assert!(Instant::now() < deadline, "no record exported within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.stop();
    // The app notices (a refused send), so the next data goes after new templates.
    while summary_export("send_errors") == 0 {
        assert!(Instant::now() < deadline, "the app saw no failed send within 60 s of the collector going away");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = Nfcapd::start_on(&nfcapd, &after, port);
    let outs =
        wait_all(vec![("cj-balancer", balancer), ("cj-detector", detector), ("cj-app", app)], Duration::from_secs(120));
    for o in &outs {
        assert!(o.status.success(), "a process failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    wait_until_read(port);
    let log = second.stop();

    // The restarted collector decoded data (it had the templates), and nothing
    // it shows exceeds the truth: no record sent twice, none misread.
    let want = truth_rows(&truth);
    let (got, records) = nfdump_rows(&nfdump, &after);
    assert!(records > 0, "the restarted collector decoded no flow record:\n{log}");
    for (k, g) in &got {
        let w = want.get(k).unwrap_or_else(|| panic!("the restarted collector shows a flow the truth lacks: {k:?}"));
        assert!(g.0 <= w.0 && g.1 <= w.1, "{k:?}: {g:?} is more than the truth's {w:?}");
    }
    let summary = read_json(&out.join("summary.json"));
    let e = &summary["export"];
    assert_eq!(
        e["records_exported"].as_u64().unwrap_or(0) + e["records_dropped"].as_u64().unwrap_or(0),
        e["records"].as_u64().unwrap_or(u64::MAX),
        "every data record is either sent or counted dropped: {e:#}"
    );
}

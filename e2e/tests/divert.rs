//! Flow divert to tun devices (`CJ_TUN=yes`, README "Flow divert") end to
//! end: a generated capture replayed into a veth the station captures, rules
//! that select some flows by prefix, port and protocol, and a reader on the
//! workers' tun devices.
//!
//! Checked:
//! - the tun devices receive exactly the packets of the selected flows: per
//!   flow direction, packets and IP bytes equal the generator's truth, and no
//!   other packet appears (the IP packets are read back with an AF_PACKET
//!   socket on the devices: a tun device has one reader, the detector);
//! - `divert` flows are missing from flows.csv and `mirror` flows are in it
//!   whole; the identity holds with `diverted` as its own term, and
//!   `mirrored` is the mirrored flows' packets; summary.json's `divert` has,
//!   per rule and summed over the workers, the packets the tun devices got of
//!   that rule's flows and the truth's frame bytes;
//! - a rules file replaced mid-replay: every worker takes the new rules
//!   (its page's `divert_rules_generation`; the time it took is printed, not
//!   asserted: the reloader looks every 200 ms), the flows of
//!   a capture replayed before follow the old rules and those of one
//!   replayed after the new ones, per flow on the tun devices; the per-rule
//!   pages `divert-<q>` count each generation's rule 1, and `cj-app status`
//!   lists the rules; a malformed replacement keeps the rules in force and
//!   is logged once, naming file and line;
//! - a tun device that refuses every write (left down: `EIO`, the kernel
//!   counts each in the device's `rx_dropped`), at top speed: every mirrored
//!   and diverted packet is counted in `tun_dropped`, equal to the kernel's
//!   count and to the per-rule pages' sum, and the identity holds
//!   (received = accounted + diverted + counted drops): the worker never
//!   waits for the device;
//! - a `port` rule over a capture where a quarter of the UDP packets are
//!   fragmented datagrams: the tun devices get every frame of the selected
//!   flows, later fragments (no ports) included, in packets and IP bytes of
//!   the generator's truth, and flows.csv is the truth without those flows
//!   (no remainder row of a diverted datagram);
//! - 3,000 flows through one worker whose tables hold 1,024: verdicts of
//!   active flows are evicted (`divert_verdicts_evicted`) and decided again
//!   by the same rules, and the tun device still gets exactly the selected
//!   flows; flows.csv is the truth without them;
//! - a tun device deleted between two replays and created again before a
//!   third: the second replay's diverted packets are all counted in
//!   `tun_dropped` (`EBADFD`), and the device created again (read by its new
//!   ifindex) gets exactly the third replay's selected packets, per flow
//!   against the generator's truth; the identity holds;
//! - with real Docker containers (three on a network of their own, captured
//!   with `CJ_IFACE=containers`, UDP echo traffic between every two), the
//!   rule `divert container <the second one's name>`: the tun device gets
//!   exactly that container's IP packets, per direction twice what its host
//!   veth's kernel counters count (each packet is captured on its veth and on
//!   the peer container's), and containers.csv holds the rest of every veth's
//!   frames, so per container and direction `containers.csv + tun / 2` equals
//!   the veth's tx/rx delta, in packets and frame bytes; flows.csv has no row
//!   of that container; the identity holds with the diverted term;
//! - without root: a missing tun device stops the detector at start with one
//!   line saying how to create it, and a malformed rules file with one line
//!   naming file and line.
//!
//! The tun devices are the test's own: `tun<CJ_TUN_OFFSET+q>` with an offset
//! high enough that no station uses it (checked free first), created with
//! `ip tuntap add`, with IPv6 and forwarding off on them (what the detector
//! writes into them goes no further than their own input), and deleted at the
//! end, also when the test fails (a Drop guard). Root, `ip` and `tcpreplay`
//! are needed for the replay tests, and Docker and a static busybox for the
//! Docker test (`tests/support/docker.rs`, as `tests/containers.rs` uses);
//! without them a test is skipped by `e2e::skip`'s rule (a failure under CI).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::live::{inventory_text, is_root, run, try_run, wait_ok, wait_until, Station, Stopped, TestHost};
use e2e::{diff_rows, peer_tool, read_flows_csv, read_json, wait_all, Cluster, RowKey};
use sim::{SimSpec, Truth, TruthRow};

#[path = "support/docker.rs"]
mod docker_lab;

use docker_lab::{busybox, docker_available, finish_pings, Counters, DockerLab};

/// Replay rate: well within what the pipeline and the tun devices hold.
const PPS: &str = "10000";

/// IPv4 and IPv6, VLAN and QinQ tags (which the tun devices must not see), many sizes.
const SPEC: &str = "flows=240,packets=24000,sizes=64:25/200:15/576:20/1000:15/1400:25,v6=25,vlan=15,qinq=5,seed=41";

/// AF_PACKET's `sll_pkttype` of a frame the host sent (the kernel's own traffic on the device).
const PACKET_OUTGOING: u8 = 4;

/// The test's tun devices `tun<offset+q>`; deleted on drop.
#[derive(Debug)]
struct TunDevices {
    offset: u32,
    names: Vec<String>,
}

impl TunDevices {
    /// Creates `count` tun devices for queues 0..count at a free offset,
    /// brought up when `up` (a device left down refuses every write: `EIO`).
    fn new(count: u32, up: bool) -> Self {
        // Offsets from 900000 up, far from the tun0.. a station uses: a block
        // of 100 by pid, and within it the next free ones of this process
        // (the tests run on parallel threads: each call takes its own numbers
        // from the counter before looking, so two never pick the same).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = 900_000 + (std::process::id() % 1_000) * 100;
        let offset = (0..100)
            .map(|_| base + NEXT.fetch_add(count, std::sync::atomic::Ordering::Relaxed) % 100)
            .find(|&offset| {
                offset + count <= base + 100
                    && !(0..count).any(|q| Path::new(&format!("/sys/class/net/tun{}", offset + q)).exists())
            })
            .unwrap_or_else(|| {
                panic!("no {count} free tun numbers in tun{base}..tun{}: delete leftover test devices", base + 99)
            });
        let mut devs = TunDevices { offset, names: Vec::new() };
        for q in 0..count {
            let name = format!("tun{}", offset + q);
            run(&["ip", "tuntap", "add", "dev", &name, "mode", "tun"]);
            devs.names.push(name.clone());
            // What the detector writes goes no further than the device's own input.
            run(&["sysctl", "-qw", &format!("net.ipv6.conf.{name}.disable_ipv6=1")]);
            run(&["sysctl", "-qw", &format!("net.ipv4.conf.{name}.forwarding=0")]);
            if up {
                run(&["ip", "link", "set", &name, "up"]);
            }
        }
        devs
    }

    fn ifindex(name: &str) -> usize {
        let text = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).expect("ifindex");
        text.trim().parse().expect("ifindex number")
    }

    fn rx_packets(&self) -> u64 {
        self.stat("rx_packets")
    }

    /// The devices' `statistics/<what>`, summed.
    fn stat(&self, what: &str) -> u64 {
        self.names
            .iter()
            .map(|n| {
                std::fs::read_to_string(format!("/sys/class/net/{n}/statistics/{what}"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

impl Drop for TunDevices {
    fn drop(&mut self) {
        for n in &self.names {
            try_run(&["ip", "link", "del", n]);
        }
    }
}

/// What the reader saw: per flow direction (packets, IP bytes), and packets that were not IP.
#[derive(Debug, Default)]
struct Seen {
    rows: BTreeMap<RowKey, (u64, u64)>,
    packets: u64,
    not_ip: u64,
}

/// The direction key and IP length of a bare IP packet (as a tun device carries it).
fn row_of_ip(p: &[u8]) -> Option<(RowKey, u64)> {
    let ports = |proto: u8, l4: &[u8]| -> (u16, u16) {
        if matches!(proto, 6 | 17 | 132 | 136 | 33) && l4.len() >= 4 {
            (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]))
        } else {
            (0, 0)
        }
    };
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = u64::from(u16::from_be_bytes([p[2], p[3]]));
            let later_fragment = u16::from_be_bytes([p[6], p[7]]) & 0x1fff != 0;
            let src = IpAddr::from([p[12], p[13], p[14], p[15]]);
            let dst = IpAddr::from([p[16], p[17], p[18], p[19]]);
            let (sp, dp) = if later_fragment { (0, 0) } else { ports(p[9], p.get(ihl..)?) };
            Some(((src, dst, sp, dp, station::proto::proto_name(p[9]).to_string()), total))
        }
        6 if p.len() >= 40 => {
            let total = u64::from(u16::from_be_bytes([p[4], p[5]])) + 40;
            let src: [u8; 16] = p[8..24].try_into().ok()?;
            let dst: [u8; 16] = p[24..40].try_into().ok()?;
            let (sp, dp) = ports(p[6], &p[40..]);
            Some(((IpAddr::from(src), IpAddr::from(dst), sp, dp, station::proto::proto_name(p[6]).to_string()), total))
        }
        _ => None,
    }
}

/// Reads every packet the kernel receives on the given interfaces (an
/// AF_PACKET socket for all interfaces, filtered by ifindex: a tun device
/// has one reader, the detector, so its traffic is seen as received here).
struct TunReader {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TunReader {
    fn start(ifindexes: Vec<usize>) -> Self {
        use nix::sys::socket::{self, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType};
        let fd = socket::socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)
            .expect("AF_PACKET socket");
        // Room for a whole replay, whatever else the host receives meanwhile.
        socket::setsockopt(&fd, sockopt::RcvBufForce, &(256 << 20)).expect("SO_RCVBUFFORCE");
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &nix::sys::time::TimeVal::new(0, 100_000))
            .expect("SO_RCVTIMEO");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, Some(addr))) = socket::recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) else { continue };
                if !ifindexes.contains(&addr.ifindex()) || addr.pkttype() == PACKET_OUTGOING {
                    continue;
                }
                let mut seen = s.lock().expect("seen");
                seen.packets += 1;
                match row_of_ip(&buf[..n]) {
                    Some((key, len)) => {
                        assert_eq!(len, n as u64, "the IP length of {key:?} is what was written, no padding");
                        let e = seen.rows.entry(key).or_insert((0, 0));
                        e.0 += 1;
                        e.1 += len;
                    }
                    None => seen.not_ip += 1,
                }
            }
        });
        TunReader { seen, stop, thread: Some(thread) }
    }

    fn packets(&self) -> u64 {
        self.seen.lock().expect("seen").packets
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("reader thread");
        }
        std::mem::take(&mut *self.seen.lock().expect("seen"))
    }
}

impl Drop for TunReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn capture(spec: &str) -> (tempfile::TempDir, PathBuf, Truth) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("divert.pcap");
    let spec: SimSpec = spec.parse().expect("spec");
    let truth = sim::write_pcap(&spec, &path, false).expect("write capture");
    (dir, path, truth)
}

/// The most frequent server port (the lower of the two) among the truth's rows of `proto`.
fn busiest_port(truth: &Truth, proto: u8, skip: u16) -> u16 {
    let mut n: BTreeMap<u16, u64> = BTreeMap::new();
    for r in truth.rows.iter().filter(|r| r.proto == proto) {
        let p = r.src_port.min(r.dst_port);
        if p != skip {
            *n.entry(p).or_default() += 1;
        }
    }
    n.into_iter().max_by_key(|&(p, c)| (c, std::cmp::Reverse(p))).map(|(p, _)| p).expect("a port")
}

fn rows_where(truth: &Truth, keep: impl Fn(&TruthRow) -> bool) -> BTreeMap<RowKey, (u64, u64)> {
    let mut rows = BTreeMap::new();
    for r in truth.rows.iter().filter(|r| keep(r)) {
        let key = (r.src, r.dst, r.src_port, r.dst_port, station::proto::proto_name(r.proto).to_string());
        let e = rows.entry(key).or_insert((0, 0));
        e.0 += r.packets;
        e.1 += r.ip_bytes;
    }
    rows
}

fn in_ten_slash_eight(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v) if v.octets()[0] == 10)
}

#[test]
fn divert_and_mirror_rules_write_exactly_the_selected_flows_to_the_tun_devices() {
    if !is_root() {
        e2e::skip("needs root (network namespaces, veth, tun devices, AF_PACKET)");
        return;
    }
    if peer_tool("ip", "iproute2").is_none() || peer_tool("tcpreplay", "tcpreplay").is_none() {
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        e2e::skip("no /dev/net/tun (modprobe tun)");
        return;
    }
    let started = Instant::now();
    let (_dir, pcap, truth) = capture(SPEC);
    let tcp_port = busiest_port(&truth, 6, 0);
    let udp_port = busiest_port(&truth, 17, 0);
    // divert: UDP on the busiest UDP port with one end in 10/8 (so IPv6 flows of that port pass);
    // mirror: TCP on the busiest TCP port, any version.
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(
        &rules,
        format!(
            "# the test's rules\ndivert net 10.0.0.0/8 proto udp port {udp_port}\nmirror proto tcp port {tcp_port}  # mirrored\n"
        ),
    )
    .expect("write rules");
    let is_diverted = |r: &TruthRow| {
        r.proto == 17
            && (r.src_port == udp_port || r.dst_port == udp_port)
            && (in_ten_slash_eight(&r.src) || in_ten_slash_eight(&r.dst))
    };
    let is_mirrored = |r: &TruthRow| r.proto == 6 && (r.src_port == tcp_port || r.dst_port == tcp_port);
    let diverted = rows_where(&truth, is_diverted);
    let mirrored = rows_where(&truth, is_mirrored);
    assert!(!diverted.is_empty() && !mirrored.is_empty(), "the rules select flows of the capture");
    let count = |rows: &BTreeMap<RowKey, (u64, u64)>| rows.values().map(|v| v.0).sum::<u64>();

    let host = TestHost::new("cjd");
    let tuns = TunDevices::new(2, true);
    let rules_path = rules.display().to_string();
    let cluster = divert_cluster(&host, &tuns, 2, &rules_path, &[]);
    let ifindexes: Vec<usize> = tuns.names.iter().map(|n| TunDevices::ifindex(n)).collect();
    let reader = TunReader::start(ifindexes);
    let rx_before = tuns.rx_packets();
    let station = Station::start(&cluster, &[]);

    let before = host.tx_packets();
    for out in
        wait_all(vec![("tcpreplay", host.replay(&pcap, &["--pps", PPS, "--preload-pcap"]))], Duration::from_secs(120))
    {
        assert!(out.status.success(), "tcpreplay failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = host.tx_packets() - before;
    assert_eq!(sent, truth.total_frames, "the peer veth sent every frame of the capture");
    let c = station.wait_for("received == sent", |c| c.received >= sent);
    assert_eq!((c.received, c.capture_dropped, c.queue_dropped), (sent, 0, 0), "{c:?}");
    let Stopped { detector, out, .. } = station.stop();

    // Every packet the devices took reaches the reader.
    let want_on_tun = count(&diverted) + count(&mirrored);
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.packets() < tuns.rx_packets() - rx_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(tuns.rx_packets() - rx_before, want_on_tun, "the tun devices' rx_packets");
    let seen = reader.finish();
    assert_eq!(seen.not_ip, 0, "only IP packets on the tun devices");
    let mut want = diverted.clone();
    want.extend(mirrored.clone());
    if let Some(d) = diff_rows(&seen.rows, &want) {
        panic!("the tun devices' packets differ from the selected flows' truth:\n{d}");
    }

    // flows.csv: every flow but the diverted ones, mirrored ones whole.
    let rest = rows_where(&truth, |_| true).into_iter().filter(|(k, _)| !diverted.contains_key(k)).collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &rest) {
        panic!("flows.csv differs from the truth without the diverted flows:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    let terms = &id["terms"];
    assert_eq!(id["status"].as_str(), Some("holds"), "{id:#}");
    assert_eq!(terms["received"].as_u64(), Some(sent), "{id:#}");
    assert_eq!(terms["difference"].as_i64(), Some(0), "{id:#}");
    assert_eq!(terms["diverted"].as_u64(), Some(count(&diverted)), "{id:#}");
    assert_eq!(terms["mirrored"].as_u64(), Some(count(&mirrored)), "{id:#}");
    assert_eq!(terms["tun_dropped"].as_u64(), Some(0), "{id:#}");
    let line = id["line"].as_str().unwrap_or_default();
    assert!(line.contains(&format!("+ diverted {}", count(&diverted))), "{line}");

    // summary.json's per-rule figures, summed over the workers: rule1 (divert) and
    // rule2 (mirror) carry exactly the packets the tun devices got of their flows,
    // and the frames' wire bytes of the truth.
    let on_tun = |rows: &BTreeMap<RowKey, (u64, u64)>| {
        seen.rows.iter().filter(|(k, _)| rows.contains_key(*k)).map(|(_, v)| v.0).sum::<u64>()
    };
    let frame_bytes =
        |keep: &dyn Fn(&TruthRow) -> bool| truth.rows.iter().filter(|r| keep(r)).map(|r| r.frame_bytes).sum::<u64>();
    let divert = &summary["divert"];
    assert_eq!(divert["workers"], serde_json::json!([0, 1]), "{divert:#}");
    let rule = |slot: &str| {
        divert["rules"].as_array().into_iter().flatten().find(|r| r["slot"] == slot).cloned().unwrap_or_default()
    };
    let figures = |r: &serde_json::Value| {
        [
            "mirrored_packets",
            "mirrored_bytes",
            "diverted_packets",
            "diverted_bytes",
            "tun_dropped_packets",
            "tun_dropped_bytes",
        ]
        .map(|c| r[c].as_u64().unwrap_or(u64::MAX))
    };
    let (r1, r2) = (rule("rule1"), rule("rule2"));
    let text1 = r1["rule"].as_str().unwrap_or_default();
    assert!(text1.starts_with("divert") && text1.contains(&format!("port {udp_port}")), "{divert:#}");
    assert!(r2["rule"].as_str().unwrap_or_default().starts_with("mirror"), "{divert:#}");
    assert_eq!(
        figures(&r1),
        [0, 0, on_tun(&diverted), frame_bytes(&is_diverted), 0, 0],
        "rule1 in summary.json against the tun devices' packets of the diverted flows: {divert:#}"
    );
    assert_eq!(
        figures(&r2),
        [on_tun(&mirrored), frame_bytes(&is_mirrored), 0, 0, 0, 0],
        "rule2 in summary.json against the tun devices' packets of the mirrored flows: {divert:#}"
    );
    assert_eq!(on_tun(&diverted) + on_tun(&mirrored), seen.packets, "every packet on the tun devices is a rule's");
    assert_eq!(divert["rules"].as_array().map(Vec::len), Some(2), "no other slot counted: {divert:#}");
    let derr = String::from_utf8_lossy(&detector.stderr);
    assert!(derr.contains("flow divert on: 2 rule(s) from"), "{derr}");
    eprintln!(
        "divert: {sent} frames, {} diverted and {} mirrored to {} and {} in {:.1?}",
        count(&diverted),
        count(&mirrored),
        tuns.names[0],
        tuns.names[1],
        started.elapsed()
    );
}

#[test]
fn a_port_rule_diverts_whole_fragmented_datagrams_and_flows_csv_keeps_no_remainder_of_them() {
    if !live_ready() {
        return;
    }
    let started = Instant::now();
    // One UDP packet in four is a fragmented datagram (two frames: the first carries the ports).
    let (_dir, pcap, truth) =
        capture("flows=120,packets=12000,sizes=200:30/1000:40/1400:30,v6=0,vlan=15,frag=25,seed=81");
    let udp_port = busiest_port(&truth, 17, 0);
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(&rules, format!("divert proto udp port {udp_port}\n")).expect("write rules");
    let rules_path = rules.display().to_string();
    let is_diverted = |r: &TruthRow| r.proto == 17 && (r.src_port == udp_port || r.dst_port == udp_port);
    let diverted = rows_where(&truth, is_diverted);
    let count = |rows: &BTreeMap<RowKey, (u64, u64)>| rows.values().map(|v| v.0).sum::<u64>();
    let ip_bytes = |rows: &BTreeMap<RowKey, (u64, u64)>| rows.values().map(|v| v.1).sum::<u64>();

    let host = TestHost::new("cjf");
    let tuns = TunDevices::new(2, true);
    let cluster = divert_cluster(&host, &tuns, 2, &rules_path, &[]);
    let stats = pages(&cluster, 2, false);
    let (Stopped { out, .. }, seen, tun_rx, fragments) =
        replay_through_tuns(&host, &tuns, &cluster, &pcap, truth.total_frames, || page_sum(&stats, "fragments_seen"));
    let later: u64 = seen.rows.iter().filter(|(k, _)| k.2 == 0 && k.3 == 0).map(|(_, v)| v.0).sum();
    assert_eq!(
        (tun_rx, seen.packets, seen.rows.values().map(|v| v.1).sum::<u64>()),
        (count(&diverted), count(&diverted), ip_bytes(&diverted)),
        "the tun devices got every frame of the diverted flows, later fragments included (packets, IP bytes)"
    );
    let rest = rows_where(&truth, |_| true).into_iter().filter(|(k, _)| !diverted.contains_key(k)).collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &rest) {
        panic!("flows.csv differs from the truth without the diverted flows:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    assert_eq!(id["status"].as_str(), Some("holds"), "{id:#}");
    assert_eq!(id["terms"]["diverted"].as_u64(), Some(count(&diverted)), "{id:#}");
    assert!(fragments > 0 && later > 0, "the capture has later fragments of the rule's flows ({fragments}, {later})");
    eprintln!(
        "divert with fragments: {} frames of port {udp_port} diverted ({later} later fragments), in {:.1?}",
        count(&diverted),
        started.elapsed()
    );
}

#[test]
fn verdicts_evicted_from_a_full_table_are_decided_again_and_the_tun_device_still_gets_exactly_the_selected_flows() {
    if !live_ready() {
        return;
    }
    // 3,000 flows through one worker whose tables hold 1,024: verdicts of active flows are evicted.
    let (_dir, pcap, truth) = capture("flows=3000,packets=24000,sizes=64:60/576:40,v6=20,vlan=10,seed=91");
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(&rules, "divert proto udp net 10.0.0.0/8\n").expect("write rules");
    let rules_path = rules.display().to_string();
    let diverted = rows_where(&truth, |r| r.proto == 17 && (in_ten_slash_eight(&r.src) || in_ten_slash_eight(&r.dst)));
    let count = |rows: &BTreeMap<RowKey, (u64, u64)>| rows.values().map(|v| v.0).sum::<u64>();

    let host = TestHost::new("cje");
    let tuns = TunDevices::new(1, true);
    let cluster = divert_cluster(&host, &tuns, 1, &rules_path, &[("CJ_FLOW_TABLE_SIZE", "1024")]);
    let stats = pages(&cluster, 1, false);
    let (Stopped { out, .. }, seen, _, evicted) =
        replay_through_tuns(&host, &tuns, &cluster, &pcap, truth.total_frames, || {
            page_sum(&stats, "divert_verdicts_evicted")
        });
    assert!(evicted > 0, "the verdict table was full with active flows");
    if let Some(d) = diff_rows(&seen.rows, &diverted) {
        panic!("after {evicted} evictions the tun device's packets differ from the selected flows:\n{d}");
    }
    let rest = rows_where(&truth, |_| true).into_iter().filter(|(k, _)| !diverted.contains_key(k)).collect();
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &rest) {
        panic!("flows.csv differs from the truth without the diverted flows:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    assert_eq!(summary["identity"]["status"].as_str(), Some("holds"), "{summary:#}");
    assert_eq!(summary["identity"]["terms"]["diverted"].as_u64(), Some(count(&diverted)), "{summary:#}");
    eprintln!(
        "divert with a full verdict table: {evicted} verdicts of active flows evicted, {} diverted",
        count(&diverted)
    );
}

/// Replays `pcap` (its `frames` frames) on `host` into a station on `cluster`
/// whose tun devices are `tuns`; once the station received every frame,
/// reads `at_end` and stops it, then takes what the devices got (waiting up
/// to 10 s for the reader to see as many packets as their counters say
/// came). Returns the stopped station, what the reader saw, the devices'
/// `rx_packets` over the run, and `at_end`'s value.
fn replay_through_tuns(
    host: &TestHost,
    tuns: &TunDevices,
    cluster: &Cluster,
    pcap: &Path,
    frames: u64,
    at_end: impl FnOnce() -> u64,
) -> (Stopped, Seen, u64, u64) {
    let reader = TunReader::start(tuns.names.iter().map(|n| TunDevices::ifindex(n)).collect());
    let rx_before = tuns.rx_packets();
    let station = Station::start(cluster, &[]);
    let before = host.tx_packets();
    for out in
        wait_all(vec![("tcpreplay", host.replay(pcap, &["--pps", PPS, "--preload-pcap"]))], Duration::from_secs(120))
    {
        assert!(out.status.success(), "tcpreplay failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = host.tx_packets() - before;
    assert_eq!(sent, frames);
    let c = station.wait_for("received == sent", |c| c.received >= sent);
    assert_eq!((c.received, c.capture_dropped, c.queue_dropped), (sent, 0, 0), "{c:?}");
    let value = at_end();
    let stopped = station.stop();
    let tun_rx = tuns.rx_packets() - rx_before;
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.packets() < tun_rx && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    (stopped, reader.finish(), tun_rx, value)
}

/// A live station on `host` with `workers` workers, flow divert on to
/// `tuns`, the rules file `rules`, and `extra` variables.
fn divert_cluster(host: &TestHost, tuns: &TunDevices, workers: u32, rules: &str, extra: &[(&str, &str)]) -> Cluster {
    let (workers, offset) = (workers.to_string(), tuns.offset.to_string());
    let mut vars = vec![
        ("CJ_IFACE", host.host.as_str()),
        ("CJ_CORECOUNT", workers.as_str()),
        ("CJ_TUN", "yes"),
        ("CJ_TUN_OFFSET", offset.as_str()),
        ("CJ_DIVERT_RULES", rules),
    ];
    vars.extend_from_slice(extra);
    Cluster::live(&vars)
}

/// Root, `ip`, `tcpreplay` and `/dev/net/tun`, or the test is skipped (by `e2e::skip`'s rule).
fn live_ready() -> bool {
    if !is_root() {
        e2e::skip("needs root (network namespaces, veth, tun devices, AF_PACKET)");
        return false;
    }
    if peer_tool("ip", "iproute2").is_none() || peer_tool("tcpreplay", "tcpreplay").is_none() {
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        e2e::skip("no /dev/net/tun (modprobe tun)");
        return false;
    }
    true
}

/// The pages of queues 0..`count`: the workers' stats pages, or their per-rule divert pages.
fn pages(cluster: &Cluster, count: u32, divert: bool) -> Vec<PathBuf> {
    let dir = cluster.cluster_dir();
    (0..count)
        .map(|q| {
            if divert {
                station::naming::set_divert_page_path(&dir, 0, q)
            } else {
                station::naming::worker_stats_path(&dir, q)
            }
        })
        .collect()
}

/// Counter `name` of each page (0 where unreadable).
fn page_values(paths: &[PathBuf], name: &str) -> Vec<u64> {
    paths
        .iter()
        .map(|p| {
            shmq::CounterPage::read(p)
                .ok()
                .and_then(|c| c.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
                .unwrap_or(0)
        })
        .collect()
}

fn page_sum(paths: &[PathBuf], name: &str) -> u64 {
    page_values(paths, name).iter().sum()
}

/// Replaces the rules file whole (a new file renamed over it: the reloader never sees half of it).
fn replace_rules(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write rules");
    std::fs::rename(&tmp, path).expect("rename rules");
}

/// A flow's direction-free key, to tell two captures' flows apart.
fn flow_of(r: &TruthRow) -> (IpAddr, u16, IpAddr, u16, u8) {
    let (a, b) = ((r.src, r.src_port), (r.dst, r.dst_port));
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (lo.0, lo.1, hi.0, hi.1, r.proto)
}

#[test]
fn a_replaced_rules_file_applies_to_new_flows_and_a_malformed_one_keeps_the_rules_in_force() {
    if !live_ready() {
        return;
    }
    let started = Instant::now();
    let (_da, pcap_a, truth_a) = capture("flows=60,packets=6000,sizes=64:40/576:30/1400:30,v6=25,vlan=15,seed=51");
    let (_db, pcap_b, truth_b) = capture("flows=60,packets=6000,sizes=64:40/576:30/1400:30,v6=25,vlan=15,seed=52");
    let flows = |t: &Truth| t.rows.iter().map(flow_of).collect::<BTreeSet<_>>();
    assert!(flows(&truth_a).is_disjoint(&flows(&truth_b)), "the two captures share no flow");
    // Rules 1 divert A's UDP flows; rules 2 mirror B's TCP flows; rules 3 do not parse.
    let diverted = rows_where(&truth_a, |r| r.proto == 17);
    let mirrored = rows_where(&truth_b, |r| r.proto == 6);
    let count = |rows: &BTreeMap<RowKey, (u64, u64)>| rows.values().map(|v| v.0).sum::<u64>();
    assert!(count(&diverted) > 0 && count(&mirrored) > 0, "both captures have flows of the rules");
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(&rules, "# rules 1\ndivert proto udp\n").expect("write rules");
    let rules_path = rules.display().to_string();

    let host = TestHost::new("cjr");
    let tuns = TunDevices::new(2, true);
    let cluster = divert_cluster(&host, &tuns, 2, &rules_path, &[]);
    let (stats, divert_pages) = (pages(&cluster, 2, false), pages(&cluster, 2, true));
    let reader = TunReader::start(tuns.names.iter().map(|n| TunDevices::ifindex(n)).collect());
    let rx_before = tuns.rx_packets();
    let station = Station::start(&cluster, &[]);
    let replay = |pcap: &Path| {
        let before = host.tx_packets();
        for out in wait_all(
            vec![("tcpreplay", host.replay(pcap, &["--pps", PPS, "--preload-pcap"]))],
            Duration::from_secs(120),
        ) {
            assert!(out.status.success(), "tcpreplay failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        host.tx_packets() - before
    };
    let read_by_workers = || page_sum(&stats, "packets") + page_sum(&stats, "diverted_packets");

    let sent_a = replay(&pcap_a);
    assert_eq!(sent_a, truth_a.total_frames);
    wait_until("the workers read capture A", || read_by_workers() >= sent_a);
    assert_eq!(page_values(&stats, "divert_rules_generation"), vec![1, 1]);

    replace_rules(&rules, "# rules 2\nmirror proto tcp\n");
    let changed = Instant::now();
    wait_ok("every worker on rules generation 2", || {
        let g = page_values(&stats, "divert_rules_generation");
        if g.iter().all(|&g| g == 2) {
            Ok(())
        } else {
            Err(format!("the workers' divert_rules_generation: {g:?}"))
        }
    });
    // How long the swap took is reported, not asserted: the reloader looks every 200 ms, and a
    // timed assertion would fail on a loaded machine for no fault of the code.
    let took = changed.elapsed();
    // A malformed replacement: wait until the detector has said it refused it, then the rules
    // in force are still generation 2.
    replace_rules(&rules, "mirror proto tcp\ndivert prot udp\n");
    wait_until("the detector to refuse the malformed rules file", || {
        station.detector_stderr().contains("unknown selector \"prot\"")
    });
    assert_eq!(page_values(&stats, "divert_rules_generation"), vec![2, 2], "the malformed file was not taken");

    let sent_b = replay(&pcap_b);
    assert_eq!(sent_b, truth_b.total_frames);
    wait_until("the workers read capture B", || read_by_workers() >= sent_a + sent_b);
    let (status, _) = station.status();
    assert!(
        status.contains(&format!(
            "divert rules (divert-rules):\n  # generation 2 of {rules_path}\n  rule1 line 2 mirror proto tcp\n"
        )),
        "{status}"
    );
    assert!(status.contains("divert, per rule:\n  rule1: mirrored "), "{status}");
    let Stopped { detector, out, .. } = station.stop();

    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.packets() < tuns.rx_packets() - rx_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = reader.finish();
    assert_eq!(seen.not_ip, 0, "only IP packets on the tun devices");
    let mut want = diverted.clone();
    want.extend(mirrored.clone());
    if let Some(d) = diff_rows(&seen.rows, &want) {
        panic!("the tun devices' packets differ from A's UDP flows (rules 1) and B's TCP flows (rules 2):\n{d}");
    }
    // Slot rule1 counted rules 1's divert, then rules 2's mirror.
    assert_eq!(page_sum(&divert_pages, "rule1_diverted_packets"), count(&diverted));
    assert_eq!(page_sum(&divert_pages, "rule1_mirrored_packets"), count(&mirrored));
    assert_eq!(page_sum(&divert_pages, "rule2_mirrored_packets"), 0);
    let mut rest: BTreeMap<RowKey, (u64, u64)> =
        rows_where(&truth_a, |_| true).into_iter().filter(|(k, _)| !diverted.contains_key(k)).collect();
    rest.extend(rows_where(&truth_b, |_| true));
    if let Some(d) = diff_rows(&read_flows_csv(&out.path().join("flows.csv")), &rest) {
        panic!("flows.csv differs from the truth without A's diverted flows:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    assert_eq!(id["status"].as_str(), Some("holds"), "{id:#}");
    assert_eq!(id["terms"]["diverted"].as_u64(), Some(count(&diverted)), "{id:#}");
    assert_eq!(id["terms"]["mirrored"].as_u64(), Some(count(&mirrored)), "{id:#}");

    let derr = String::from_utf8_lossy(&detector.stderr);
    let bad: Vec<&str> = derr.lines().filter(|l| l.contains("CJ_DIVERT_RULES:")).collect();
    assert_eq!(
        bad,
        vec![format!(
            "cj-detector: CJ_DIVERT_RULES: {rules_path}:2: unknown selector \"prot\": expected net, port, proto or \
             container; keeping the 1 rule(s) of generation 2"
        )],
        "one line for the malformed file:\n{derr}"
    );
    assert!(derr.contains("1 rule(s), generation 2"), "{derr}");
    eprintln!(
        "divert reload: rules taken by both workers {took:?} after the change; {} diverted (A), {} mirrored (B) in {:.1?}",
        count(&diverted),
        count(&mirrored),
        started.elapsed()
    );
}

#[test]
fn a_tun_device_that_refuses_writes_counts_drops_and_the_worker_keeps_up() {
    if !live_ready() {
        return;
    }
    let started = Instant::now();
    let (_dir, pcap, truth) = capture("flows=200,packets=60000,sizes=64:60/1000:40,v6=25,seed=61");
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(&rules, "divert proto udp\nmirror\n").expect("write rules");
    let rules_path = rules.display().to_string();

    let host = TestHost::new("cjo");
    // Left down: the kernel refuses every write (EIO) and counts it in rx_dropped.
    let tuns = TunDevices::new(2, false);
    let cluster = divert_cluster(&host, &tuns, 2, &rules_path, &[]);
    let divert_pages = pages(&cluster, 2, true);
    let dropped_before = tuns.stat("rx_dropped");
    let station = Station::start(&cluster, &[]);
    let before = host.tx_packets();
    for out in
        wait_all(vec![("tcpreplay", host.replay(&pcap, &["--topspeed", "--preload-pcap"]))], Duration::from_secs(120))
    {
        assert!(out.status.success(), "tcpreplay failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = host.tx_packets() - before;
    assert_eq!(sent, truth.total_frames);
    let c = station.wait_for("received + capture_dropped == sent", |c| c.received + c.capture_dropped >= sent);
    let Stopped { detector, out, .. } = station.stop();

    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    let term = |k: &str| id["terms"][k].as_u64().unwrap_or_else(|| panic!("{k} in {id:#}"));
    assert_eq!(id["status"].as_str(), Some("holds"), "received = accounted + diverted + counted drops: {id:#}");
    assert_eq!(id["terms"]["difference"].as_i64(), Some(0), "{id:#}");
    assert_eq!(term("received"), c.received, "{id:#}");
    let (diverted, mirrored, dropped) = (term("diverted"), term("mirrored"), term("tun_dropped"));
    assert!(diverted > 0 && mirrored > 0, "{id:#}");
    assert_eq!(dropped, diverted + mirrored, "every write was refused and counted: {id:#}");
    assert_eq!(tuns.stat("rx_dropped") - dropped_before, dropped, "the kernel counted as many refusals");
    let per_rule: u64 =
        ["rule1_tun_dropped_packets", "rule2_tun_dropped_packets"].iter().map(|n| page_sum(&divert_pages, n)).sum();
    assert_eq!(per_rule, dropped, "the per-rule pages sum to the workers' tun_dropped");
    let derr = String::from_utf8_lossy(&detector.stderr);
    assert!(
        derr.lines().any(|l| l.contains("refused") && l.contains("(the device is down: `ip link set tun")),
        "{derr}"
    );
    eprintln!(
        "divert overflow: {sent} frames at top speed, {} received, {} dropped at capture, {} at queue; {dropped} refused \
         by the tun devices and counted, in {:.1?}",
        c.received,
        c.capture_dropped,
        c.queue_dropped,
        started.elapsed()
    );
}

#[test]
fn a_tun_device_deleted_mid_run_counts_the_refused_packets_and_gets_them_again_once_created_again() {
    if !live_ready() {
        return;
    }
    let started = Instant::now();
    let spec = |seed: u32| format!("flows=40,packets=3000,sizes=64:50/576:30/1400:20,v6=25,vlan=15,seed={seed}");
    let (_da, pcap_a, truth_a) = capture(&spec(71));
    let (_db, pcap_b, truth_b) = capture(&spec(72));
    let (_dc, pcap_c, truth_c) = capture(&spec(73));
    let udp = |t: &Truth| rows_where(t, |r| r.proto == 17);
    let count = |rows: &BTreeMap<RowKey, (u64, u64)>| rows.values().map(|v| v.0).sum::<u64>();
    let (udp_a, udp_b, udp_c) = (udp(&truth_a), udp(&truth_b), udp(&truth_c));
    assert!(count(&udp_a) > 0 && count(&udp_b) > 0 && count(&udp_c) > 0, "each capture has UDP flows");
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(&rules, "divert proto udp\n").expect("write rules");
    let rules_path = rules.display().to_string();

    let host = TestHost::new("cjx");
    let tuns = TunDevices::new(1, true);
    let name = tuns.names[0].clone();
    let cluster = divert_cluster(&host, &tuns, 1, &rules_path, &[]);
    let stats = pages(&cluster, 1, false);
    let read_by_workers = || page_sum(&stats, "packets") + page_sum(&stats, "diverted_packets");
    let replay = |pcap: &Path| {
        let before = host.tx_packets();
        for out in wait_all(
            vec![("tcpreplay", host.replay(pcap, &["--pps", PPS, "--preload-pcap"]))],
            Duration::from_secs(120),
        ) {
            assert!(out.status.success(), "tcpreplay failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        host.tx_packets() - before
    };
    let first = TunReader::start(vec![TunDevices::ifindex(&name)]);
    let station = Station::start(&cluster, &[]);

    // A: the device is there.
    let sent_a = replay(&pcap_a);
    wait_until("the worker read capture A", || read_by_workers() >= sent_a);
    // B: the device is deleted; every write is refused (EBADFD) and counted.
    run(&["ip", "link", "del", &name]);
    let sent_b = replay(&pcap_b);
    wait_until("the worker read capture B", || read_by_workers() >= sent_a + sent_b);
    assert_eq!(
        page_sum(&stats, "tun_dropped_packets"),
        count(&udp_b),
        "B's UDP packets, refused by the deleted device"
    );
    // C: the device exists again (a new one of the same name, a new ifindex).
    run(&["ip", "tuntap", "add", "dev", &name, "mode", "tun"]);
    run(&["sysctl", "-qw", &format!("net.ipv6.conf.{name}.disable_ipv6=1")]);
    run(&["sysctl", "-qw", &format!("net.ipv4.conf.{name}.forwarding=0")]);
    run(&["ip", "link", "set", &name, "up"]);
    let second = TunReader::start(vec![TunDevices::ifindex(&name)]);
    // The worker tries to attach again at most every 100 ms: more than that has passed
    // since its last try (in B) before C's first write (a lower bound; nothing is timed).
    std::thread::sleep(Duration::from_millis(300));
    let rx_before = tuns.rx_packets();
    let sent_c = replay(&pcap_c);
    assert_eq!((sent_a, sent_b, sent_c), (truth_a.total_frames, truth_b.total_frames, truth_c.total_frames));
    wait_until("the worker read capture C", || read_by_workers() >= sent_a + sent_b + sent_c);
    let Stopped { detector, out, .. } = station.stop();

    let deadline = Instant::now() + Duration::from_secs(10);
    while second.packets() < tuns.rx_packets() - rx_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (seen_a, seen_c) = (first.finish(), second.finish());
    if let Some(d) = diff_rows(&seen_a.rows, &udp_a) {
        panic!("the first device's packets differ from A's UDP flows:\n{d}");
    }
    assert_eq!(tuns.rx_packets() - rx_before, count(&udp_c), "the device created again took C's UDP packets");
    if let Some(d) = diff_rows(&seen_c.rows, &udp_c) {
        panic!("the device created again got other packets than C's UDP flows:\n{d}");
    }
    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    assert_eq!(id["status"].as_str(), Some("holds"), "{id:#}");
    assert_eq!(id["terms"]["diverted"].as_u64(), Some(count(&udp_a) + count(&udp_b) + count(&udp_c)), "{id:#}");
    assert_eq!(id["terms"]["tun_dropped"].as_u64(), Some(count(&udp_b)), "only B's were refused: {id:#}");
    let derr = String::from_utf8_lossy(&detector.stderr);
    assert!(
        derr.lines().any(|l| l.contains("refused") && l.contains("(the device was deleted: create it again")),
        "{derr}"
    );
    assert!(derr.contains(&format!("tun device {name} was deleted and exists again")), "{derr}");
    eprintln!(
        "divert, device deleted mid-run: {} of B's packets refused and counted, {} of C's on the new device, in {:.1?}",
        count(&udp_b),
        count(&udp_c),
        started.elapsed()
    );
}

#[test]
fn a_missing_tun_device_stops_the_detector_with_how_to_create_it() {
    // tun<999999+q> exists on no machine this runs on (checked); no root needed to find that out.
    if Path::new("/sys/class/net/tun999999").exists() {
        e2e::skip("tun999999 exists here");
        return;
    }
    let cluster = Cluster::new(&[("CJ_TUN", "yes"), ("CJ_TUN_OFFSET", "999999"), ("CJ_CORECOUNT", "1")]);
    let out = cluster.command("cj-detector").output().expect("run cj-detector");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err.lines().find(|l| l.contains("does not exist")).unwrap_or_default();
    assert_eq!(
        line,
        "cj-detector: cj-worker-0: tun device tun999999 does not exist: create it with \
         `ip tuntap add dev tun999999 mode tun && ip link set tun999999 up` \
         (on-reboot.sh does so for every worker with CJ_TUN=yes), or set CJ_TUN=no",
        "{err}"
    );
}

#[test]
fn a_malformed_rules_file_stops_the_detector_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("rules");
    std::fs::write(&rules, "# ok\nmirror port 53\ndivert proto tcp port eighty\n").expect("write");
    let path = rules.display().to_string();
    let cluster = Cluster::new(&[("CJ_TUN", "yes"), ("CJ_DIVERT_RULES", &path)]);
    let out = cluster.command("cj-detector").output().expect("run cj-detector");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("cj-detector: CJ_DIVERT_RULES: {path}:3: port \"eighty\": expected a port number from 0 to 65535")
    );
}

/// Ethernet header bytes of a frame on a Docker veth (no tag): frame bytes = IP bytes + this.
const ETHERNET_HEADER: u64 = 14;

#[test]
fn a_divert_rule_by_docker_container_name_diverts_exactly_that_containers_flows() {
    if !is_root() {
        e2e::skip("needs root (Docker, tun devices, AF_PACKET)");
        return;
    }
    if peer_tool("ip", "iproute2").is_none() {
        return;
    }
    if !Path::new("/dev/net/tun").exists() {
        e2e::skip("no /dev/net/tun (modprobe tun)");
        return;
    }
    if !docker_available() {
        return;
    }
    let Some(bb) = busybox() else { return };
    let started = Instant::now();
    let mut lab = DockerLab::new(&bb);
    for n in ["one", "two", "three"] {
        lab.start(n);
    }
    lab.quiet(&[0, 1, 2]);
    let name = |i: usize| lab.containers[i].0.clone();
    let ip = |i: usize| -> IpAddr { lab.containers[i].3.parse().expect("container address") };
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("divert.rules");
    std::fs::write(&rules, format!("divert container {}\n", name(1))).expect("write rules");
    let tuns = TunDevices::new(1, true);
    let offset = tuns.offset.to_string();
    let rules_path = rules.display().to_string();
    let cluster = Cluster::live(&[
        ("CJ_IFACE", "containers"),
        ("CJ_CORECOUNT", "1"),
        ("CJ_TUN", "yes"),
        ("CJ_TUN_OFFSET", &offset),
        ("CJ_DIVERT_RULES", &rules_path),
    ]);
    let reader = TunReader::start(tuns.names.iter().map(|n| TunDevices::ifindex(n)).collect());
    let rx_before = tuns.rx_packets();
    let station = Station::start(&cluster, &["--aggregate", "src_container,dst_container,proto"]);
    // Every veth captured and attributed by name before the first packet: a flow's
    // verdict is taken at its first packet.
    for (n, _, veth, _) in &lab.containers {
        wait_until(&format!("the detector's inventory to attribute {veth} to {n}"), || {
            let text = inventory_text(&cluster);
            text.lines().any(|l| l.contains(&format!(": docker {n} id=")) && l.contains(&format!(" veth={veth} ")))
                && text.lines().any(|l| l.starts_with("source ") && l.ends_with(&format!(": {veth} -> {n}")))
        });
    }
    let before: Vec<Counters> = (0..3).map(|i| lab.counters(i)).collect();
    finish_pings(vec![
        ("one->two", lab.ping(0, 1, 30, 100)),
        ("two->three", lab.ping(1, 2, 20, 1200)),
        ("three->one", lab.ping(2, 0, 25, 400)),
    ]);
    let read = || (0..3).map(|i| lab.counters(i).minus(before[i])).collect::<Vec<Counters>>();
    let frames: u64 = read().iter().map(|d| d.rx_packets + d.tx_packets).sum();
    station.wait_received(frames);
    let mut deltas = Vec::new();
    let Stopped { detector, out, .. } = station.stop_then(|| deltas = read());
    wait_until("the tun reader to have every packet the tun device took", || {
        reader.packets() >= tuns.rx_packets() - rx_before
    });
    let on_tun = tuns.rx_packets() - rx_before;
    let seen = reader.finish();
    assert_eq!(seen.not_ip, 0, "only IP packets on the tun device");
    assert!(seen.packets > 0 && seen.packets == on_tun, "the reader saw {} of {on_tun}", seen.packets);
    let derr = String::from_utf8_lossy(&detector.stderr);
    for k in seen.rows.keys() {
        assert!(k.0 == ip(1) || k.1 == ip(1), "only {}'s flows on the tun device: {k:?}\n{derr}", name(1));
    }
    // (packets, IP bytes) on the tun device from `src` to `dst` (None: any).
    let tun = |src: Option<IpAddr>, dst: Option<IpAddr>| {
        seen.rows
            .iter()
            .filter(|(k, _)| src.is_none_or(|s| k.0 == s) && dst.is_none_or(|d| k.1 == d))
            .fold((0u64, 0u64), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
    };
    let rows = read_containers_csv(&out.path().join("containers.csv"));
    for (i, d) in deltas.iter().enumerate() {
        let (n, _, veth, _) = &lab.containers[i];
        // Container two: every IP packet in and out is diverted (seen on its veth and the
        // peer's); the others: their packets with two diverted likewise.
        let (from, to) = if i == 1 {
            (tun(Some(ip(1)), None), tun(None, Some(ip(1))))
        } else {
            (tun(Some(ip(i)), Some(ip(1))), tun(Some(ip(1)), Some(ip(i))))
        };
        let row = rows.get(n).copied().unwrap_or_default();
        let frame = |(p, b): (u64, u64)| (p, b + ETHERNET_HEADER * p);
        let (from, to) = (frame(from), frame(to));
        assert_eq!(
            (2 * row.0 + to.0, 2 * row.1 + from.0, 2 * row.2 + to.1, 2 * row.3 + from.1),
            (2 * d.tx_packets, 2 * d.rx_packets, 2 * d.tx_bytes, 2 * d.rx_bytes),
            "{n} (veth {veth}): containers.csv (in, out packets, in, out bytes) {row:?} + the tun device's \
             packets to {to:?} and from {from:?} (each seen twice) vs kernel {d:?}\n{derr}"
        );
        assert!(from.0 > 0 && to.0 > 0, "{n} exchanged diverted packets both ways");
    }
    let flows = std::fs::read_to_string(out.path().join("flows.csv")).expect("flows.csv");
    assert!(!flows.contains(&name(1)), "flows.csv has no row of {}: {flows}", name(1));
    for i in [0, 2] {
        assert!(flows.lines().any(|l| l.contains(&name(i))), "flows.csv has {}'s flows: {flows}", name(i));
    }
    let summary = read_json(&out.path().join("summary.json"));
    let id = &summary["identity"];
    assert_eq!(id["status"].as_str(), Some("holds"), "{id:#}");
    assert_eq!(id["terms"]["difference"].as_i64(), Some(0), "{id:#}");
    assert_eq!(id["terms"]["diverted"].as_u64(), Some(on_tun), "{id:#}");
    assert_eq!(id["terms"]["tun_dropped"].as_u64(), Some(0), "{id:#}");
    let rule1 = &summary["divert"]["rules"][0];
    assert_eq!(rule1["rule"].as_str(), Some(format!("divert container {}", name(1)).as_str()), "{rule1:#}");
    assert_eq!(rule1["diverted_packets"].as_u64(), Some(on_tun), "{rule1:#}");
    eprintln!(
        "divert by container: {} of {frames} frames of {} diverted to {} in {:.1?}",
        on_tun,
        name(1),
        tuns.names[0],
        started.elapsed()
    );
}

/// One row of containers.csv: (packets in, packets out, frame bytes in, frame bytes out).
fn read_containers_csv(path: &Path) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("CONTAINER,ID,PACKETS_IN,PACKETS_OUT,FRAME_BYTES_IN,FRAME_BYTES_OUT"),
        "header: {header}"
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = |i: usize| -> u64 { f[i].parse().unwrap_or_else(|e| panic!("{l}: {e}")) };
            (f[0].to_owned(), (n(2), n(3), n(4), n(5)))
        })
        .collect()
}

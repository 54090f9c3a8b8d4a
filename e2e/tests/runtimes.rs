//! Container attribution of the runtimes other than Docker, end to end: one
//! test per runtime Debian packages (podman, LXC, containerd), each with a
//! real container of that runtime made from a local static busybox (no image
//! can be pulled).
//!
//! Each test has a bridge of its own (podman's: its network's) with a peer:
//! a named network namespace (`ip netns add`) whose veth is a port of the
//! bridge. The container joins the same bridge the runtime's own way:
//!
//! - `podman_container_totals_equal_its_veth_counters`: an image made with
//!   `podman import`, a podman network whose bridge the peer joins
//!   (CNI makes the bridge and puts the netns under `/run/netns`; the test
//!   turns off the hairpin mode CNI sets on the port, see README "Container
//!   attribution");
//! - `lxc_container_totals_equal_its_veth_counters`: `lxc-create -t busybox`
//!   with a veth on the bridge (`lxc.net.0.link`, `lxc.net.0.veth.pair`);
//! - `containerd_container_totals_equal_its_veth_counters`: an OCI image
//!   archive built here (a one-layer OCI layout) and `ctr image import`ed,
//!   `ctr run --with-ns network:/run/netns/NAME` into a netns the test wires
//!   with a veth, as a CNI bridge plugin does on a containerd or Kubernetes
//!   host. A containerd that answers on its default socket is used; else
//!   the test starts one and stops it at the end.
//!
//! Then the station runs with `CJ_IFACE=containers`, bounded UDP echo
//! exchanges go both ways between the container and the peer (threads that
//! `setns` into the namespaces: no tool inside the container), and the test
//! checks against what the runtime and the kernel say, never against the
//! station's own output:
//!
//! - the detector's inventory names the container with its runtime, the name
//!   and id the runtime reports (`podman inspect`, `lxc-info`, `ctr task ls`;
//!   ids of 64 hex digits shortened to 12 as the runtimes show them) and its
//!   host veth;
//! - `containers.csv` and `containers.json` have a row of that name and id
//!   whose PACKETS_IN/OUT and FRAME_BYTES_IN/OUT equal the deltas of the host
//!   veth's kernel counters (tx = into the container, rx = out of it), whose
//!   veth is that veth and whose netns is the inode of `/proc/<pid>/ns/net` of
//!   the container's process; the same for the peer namespace;
//! - `flows.csv` (aggregated by container names) has exactly two frames per
//!   datagram the container sent to the peer (one on each veth).
//!
//! CRI-O has no Debian package here, so no test starts one: its cgroup form
//! (`crio-<id>`) and its monitor (conmon, shared with podman, told apart by
//! podman's exit command) are covered by the unit tests of
//! `inventory::runtimes`, and the conmon path end to end by the podman test.
//!
//! Needs root, the runtime's package and `busybox-static`; without them a
//! test is skipped by `e2e::skip`'s rule (a failure under CI, where `.ci/run`
//! installs them). The tests run one at a time. Every container, image,
//! network, namespace, veth, bridge, iptables rule and daemon a test makes is
//! removed at the end, also when it fails (Drop guards). Docker is not asked
//! anything: the tests pass the same with `DOCKER_HOST` naming a hung socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::live::{have, inventory_text, run, try_run, wait_ok, wait_until, Station, Stopped};
use e2e::Cluster;

#[path = "support/docker.rs"]
mod docker_lab;

use docker_lab::{busybox, echo, finish_pings, until_quiet, Counters};

/// One test at a time: a `containers` capture sees every container of the host.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn pid4() -> u32 {
    std::process::id() % 10_000
}

/// Root, the runtime's program (from `package`) and a static busybox, or a skip.
fn prerequisites(program: &str, package: &str) -> Option<String> {
    if !e2e::live::is_root() {
        e2e::skip("needs root (network namespaces, veth, bridge, AF_PACKET, containers)");
        return None;
    }
    e2e::peer_tool(program, package)?;
    busybox()
}

/// A rootfs of one static busybox and the applets the containers run.
fn rootfs(busybox: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("rootfs");
    std::fs::create_dir_all(root.path().join("bin")).expect("bin");
    std::fs::copy(busybox, root.path().join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "cat"] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).expect("symlink");
    }
    root
}

/// `tar -c` of a directory's contents into `file`.
fn tar(dir: &Path, file: &Path) {
    run(&["tar", "-C", &dir.to_string_lossy(), "-cf", &file.to_string_lossy(), "."]);
}

/// A command run inside the netns of process `pid` (`nsenter`, util-linux).
fn in_netns_of(pid: u32, args: &[&str]) -> String {
    let target = pid.to_string();
    let mut all = vec!["nsenter", "-t", &target, "-n"];
    all.extend_from_slice(args);
    run(&all)
}

/// The inode of a netns file (`/proc/<pid>/ns/net`, `/run/netns/NAME`): the `NETNS` of a row.
fn netns_inode(path: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).ino()
}

/// The first three octets of test `tag`'s /24 (apart from `containers.rs`'s 10.20-219).
fn subnet(tag: u32) -> String {
    format!("10.{}.{}", 220 + tag, std::process::id() % 250)
}

/// The test's bridge and its peer: a named netns with a veth on the bridge.
/// Dropping it deletes them (after the runtime's guard let go of its container).
#[derive(Debug)]
struct Net {
    bridge: String,
    peer_ns: String,
    peer_veth: String,
    peer_ip: String,
    peer_up: bool,
    /// The bridge is this test's to delete (not the runtime's).
    owns_bridge: bool,
}

impl Net {
    /// The bridge (up, IPv6 off, forwarded by iptables): `bridge` when the
    /// runtime made it (its guard deletes it), else a new one (deleted on drop);
    /// `tag` tells the runtimes' nets apart (a digit). The peer comes with
    /// [`Net::add_peer`].
    fn new(tag: u32, bridge: Option<String>) -> Self {
        let pid = pid4();
        let net = Net {
            bridge: bridge.clone().unwrap_or_else(|| format!("cjrb{pid}t{tag}")),
            peer_ns: format!("cjr-peer-{pid}-{tag}"),
            peer_veth: format!("cjrp{pid}t{tag}"),
            peer_ip: format!("{}.250", subnet(tag)),
            peer_up: false,
            owns_bridge: bridge.is_none(),
        };
        if bridge.is_none() {
            run(&["ip", "link", "add", &net.bridge, "type", "bridge"]);
        }
        run(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", net.bridge)]);
        run(&["ip", "link", "set", &net.bridge, "up"]);
        // With br_netfilter loaded and a FORWARD policy of DROP (Docker sets one), bridged
        // frames pass iptables: let this bridge's own traffic through (removed on drop).
        if have("iptables") {
            try_run(&["iptables", "-I", "FORWARD", "1", "-i", &net.bridge, "-o", &net.bridge, "-j", "ACCEPT"]);
        }
        net
    }

    /// The peer: a named netns at `.250` with its veth on the bridge, IPv6 off before it is up.
    fn add_peer(&mut self) {
        let (ns, veth) = (self.peer_ns.clone(), self.peer_veth.clone());
        run(&["ip", "netns", "add", &ns]);
        self.peer_up = true;
        add_veth(&veth, &ns, &self.bridge, &format!("{}/24", self.peer_ip));
    }

    fn peer_path(&self) -> String {
        format!("/run/netns/{}", self.peer_ns)
    }
}

/// A veth `host` on `bridge` whose peer is `eth0` with `cidr` in netns `ns`;
/// IPv6 off on both ends before they come up (no ND/MLD frames to spoil exact counts).
fn add_veth(host: &str, ns: &str, bridge: &str, cidr: &str) {
    run(&["ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    run(&["sysctl", "-qw", &format!("net.ipv6.conf.{host}.disable_ipv6=1")]);
    for conf in ["eth0", "lo"] {
        run(&["ip", "netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv6.conf.{conf}.disable_ipv6=1")]);
    }
    run(&["ip", "link", "set", host, "master", bridge]);
    run(&["ip", "-n", ns, "addr", "add", cidr, "dev", "eth0"]);
    run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    run(&["ip", "link", "set", host, "up"]);
    wait_until(&format!("{host} to come up"), || {
        std::fs::read_to_string(format!("/sys/class/net/{host}/operstate")).unwrap_or_default().trim() == "up"
    });
}

impl Drop for Net {
    fn drop(&mut self) {
        if self.peer_up {
            try_run(&["ip", "netns", "del", &self.peer_ns]);
            try_run(&["ip", "link", "del", &self.peer_veth]);
        }
        if self.owns_bridge {
            try_run(&["ip", "link", "del", &self.bridge]);
        }
        if have("iptables") {
            try_run(&["iptables", "-D", "FORWARD", "-i", &self.bridge, "-o", &self.bridge, "-j", "ACCEPT"]);
        }
    }
}

/// A running container as its runtime reports it.
#[derive(Clone, Debug)]
struct Found {
    runtime: &'static str,
    /// The name the runtime shows.
    name: String,
    /// The id as the runtime shows it (12 digits of a 64-digit hex id).
    id: String,
    /// Its first process (host pid).
    pid: u32,
    /// Its host veth.
    veth: String,
    /// Its address on the bridge.
    ip: String,
}

/// Turns IPv6 off inside the container's netns (it came up with it: the
/// runtime made the link), then waits until neither veth's counters moved
/// for two seconds (at most 20 s: a link that just came up may still send a
/// frame or two).
fn settle_container(c: &Found, net: &Net) {
    for conf in ["all", "default", "eth0"] {
        in_netns_of(c.pid, &["sysctl", "-qw", &format!("net.ipv6.conf.{conf}.disable_ipv6=1")]);
    }
    run(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", c.veth)]);
    until_quiet(|| (Counters::read(&c.veth), Counters::read(&net.peer_veth)), Duration::from_secs(20));
}

/// One row of containers.csv or containers.json, by column.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    id: String,
    packets_in: u64,
    packets_out: u64,
    frame_bytes_in: u64,
    frame_bytes_out: u64,
    veths: String,
    netns: String,
}

fn read_containers_csv(path: &Path) -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name}: {header:?}"));
    let (c_name, c_id, c_pin, c_pout) = (col("CONTAINER"), col("ID"), col("PACKETS_IN"), col("PACKETS_OUT"));
    let (c_bin, c_bout, c_veths, c_netns) = (col("FRAME_BYTES_IN"), col("FRAME_BYTES_OUT"), col("VETHS"), col("NETNS"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let n = |i: usize| -> u64 { f[i].parse().unwrap_or_else(|e| panic!("{l}: {e}")) };
            let row = Row {
                id: f[c_id].to_owned(),
                packets_in: n(c_pin),
                packets_out: n(c_pout),
                frame_bytes_in: n(c_bin),
                frame_bytes_out: n(c_bout),
                veths: f[c_veths].to_owned(),
                netns: f[c_netns].to_owned(),
            };
            (f[c_name].to_owned(), row)
        })
        .collect()
}

fn read_containers_json(path: &Path) -> BTreeMap<String, Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let o: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
            let n = |k: &str| o[k].as_u64().unwrap_or_else(|| panic!("{k}: {l}"));
            let list = |k: &str| -> String {
                o[k].as_array()
                    .unwrap_or_else(|| panic!("{k}: {l}"))
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(";")
            };
            let row = Row {
                id: o["id"].as_str().unwrap_or_else(|| panic!("id: {l}")).to_owned(),
                packets_in: n("packets_in"),
                packets_out: n("packets_out"),
                frame_bytes_in: n("frame_bytes_in"),
                frame_bytes_out: n("frame_bytes_out"),
                veths: list("veths"),
                netns: list("netns"),
            };
            (o["name"].as_str().unwrap_or_else(|| panic!("name: {l}")).to_owned(), row)
        })
        .collect()
}

/// What the kernel and the runtime say one row must be.
fn expected(id: &str, veth: &str, netns: u64, d: Counters) -> Row {
    Row {
        id: id.to_owned(),
        packets_in: d.tx_packets,
        packets_out: d.rx_packets,
        frame_bytes_in: d.tx_bytes,
        frame_bytes_out: d.rx_bytes,
        veths: veth.to_owned(),
        netns: netns.to_string(),
    }
}

/// The run every runtime's test shares, once its container `c` is on `net`:
/// station, traffic both ways, and the checks of the module's doc.
fn attribute_and_check(c: &Found, net: &Net) {
    let started = Instant::now();
    settle_container(c, net);
    let container_netns = netns_inode(&format!("/proc/{}/ns/net", c.pid));
    let peer_netns = netns_inode(&net.peer_path());
    let cluster = Cluster::live(&[("CJ_IFACE", "containers"), ("CJ_CORECOUNT", "1")]);
    let station = Station::start(&cluster, &["--aggregate", "src_container,dst_container,proto"]);
    // The inventory knows the container by its runtime's name and id, on its veth.
    let listed = format!(": {} {} id={} veth={} netns={container_netns} ", c.runtime, c.name, c.id, c.veth);
    let source = format!(": {} -> {}", c.veth, c.name);
    wait_ok(&format!("the detector's inventory to list `{listed}` and `{source}`"), || {
        let text = inventory_text(&cluster);
        let ok = text.lines().any(|l| l.starts_with("container ") && l.contains(&listed))
            && text.lines().any(|l| l.starts_with("source ") && l.ends_with(&source));
        if ok {
            Ok(())
        } else {
            Err(format!("it lists:\n{text}"))
        }
    });
    for veth in [&c.veth, &net.peer_veth] {
        let capturing = format!("containers: capturing {veth} (source ");
        station.wait_balancer_lines(&format!("the balancer to capture {veth}"), 1, |l| l.contains(&capturing));
    }
    let read = || (Counters::read(&c.veth), Counters::read(&net.peer_veth));
    let before = read();
    let (to_peer, to_container) = (25, 15);
    finish_pings(vec![
        ("container -> peer", echo(&format!("/proc/{}/ns/net", c.pid), &net.peer_path(), &net.peer_ip, to_peer, 300)),
        ("peer -> container", echo(&net.peer_path(), &format!("/proc/{}/ns/net", c.pid), &c.ip, to_container, 1200)),
    ]);
    let delta = || {
        let now = read();
        (now.0.minus(before.0), now.1.minus(before.1))
    };
    let (dc, dp) = delta();
    let frames = dc.rx_packets + dc.tx_packets + dp.rx_packets + dp.tx_packets;
    station.wait_received(frames);
    // The final counters as the capture ends.
    let mut deltas = (dc, dp);
    let Stopped { detector, out, .. } = station.stop_then(|| deltas = delta());
    let (dc, dp) = deltas;
    let derr = String::from_utf8_lossy(&detector.stderr);
    let csv = read_containers_csv(&out.path().join("containers.csv"));
    let json = read_containers_json(&out.path().join("containers.json"));
    for (what, rows) in [("containers.csv", &csv), ("containers.json", &json)] {
        for (name, want) in [
            (&c.name, expected(&c.id, &c.veth, container_netns, dc)),
            (&net.peer_ns, expected(&net.peer_ns, &net.peer_veth, peer_netns, dp)),
        ] {
            let got = rows.get(name).unwrap_or_else(|| panic!("no row {name} in {what}: {rows:?}\n{derr}"));
            assert_eq!(got, &want, "{what}: {name} (kernel counters {:?})", if *name == c.name { dc } else { dp });
        }
    }
    assert!(dc.rx_packets >= u64::from(to_peer + to_container), "the container's traffic: {dc:?}");
    // Aggregated by container: every datagram from the container to the peer (its own
    // requests and its replies) is seen on both veths.
    let flows = std::fs::read_to_string(out.path().join("flows.csv")).expect("flows.csv");
    let row = format!("udp,{},{},", c.name, net.peer_ns);
    let line = flows.lines().find(|l| l.starts_with(&row)).unwrap_or_else(|| panic!("no {row}...: {flows}"));
    assert_eq!(line.split(',').nth(3), Some((2 * (to_peer + to_container)).to_string().as_str()), "{line}");
    eprintln!(
        "{}: {} (id {}) on {}: {} frames, totals equal the veth counters, in {:.1?}",
        c.runtime,
        c.name,
        c.id,
        c.veth,
        frames,
        started.elapsed()
    );
}

// ---------------------------------------------------------------- podman

/// A podman image, network (and the bridge CNI made for it) and container; removed on drop.
#[derive(Debug)]
struct Podman {
    image: String,
    network: String,
    name: String,
    bridge: Option<String>,
}

impl Drop for Podman {
    fn drop(&mut self) {
        try_run(&["podman", "rm", "-f", "-t", "0", &self.name]);
        try_run(&["podman", "network", "rm", "-f", &self.network]);
        // CNI's bridge plugin leaves the bridge behind.
        if let Some(b) = &self.bridge {
            try_run(&["ip", "link", "del", b]);
        }
        try_run(&["podman", "rmi", "-f", &self.image]);
    }
}

#[test]
fn podman_container_totals_equal_its_veth_counters() {
    let Some(bb) = prerequisites("podman", "podman") else { return };
    let _serial = serial();
    let pid = pid4();
    let mut pod = Podman {
        image: format!("localhost/cjrt-busybox:{pid}"),
        network: format!("cjrt-net-{pid}"),
        name: format!("cjrt-pod-{pid}"),
        bridge: None,
    };
    let root = rootfs(&bb);
    let archive = root.path().with_extension("tar");
    tar(root.path(), &archive);
    run(&["podman", "import", "-q", &archive.to_string_lossy(), &pod.image]);
    let _ = std::fs::remove_file(&archive);
    run(&[
        "podman",
        "network",
        "create",
        "--driver",
        "bridge",
        "--subnet",
        &format!("{}.0/24", subnet(1)),
        &pod.network,
    ]);
    // Limits at or below the test's own: without CAP_SYS_RESOURCE (some sandboxes) runc
    // cannot set podman's default of 1048576 open files.
    run(&[
        "podman",
        "run",
        "-d",
        "--name",
        &pod.name,
        "--network",
        &pod.network,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        &pod.image,
        "/bin/sleep",
        "600",
    ]);
    let inspect = |f: &str| run(&["podman", "inspect", "-f", f, &pod.name]).trim().to_owned();
    let full_id = inspect("{{.Id}}");
    assert_eq!(full_id.len(), 64, "podman's id: {full_id}");
    let found = Found {
        runtime: "podman",
        name: inspect("{{.Name}}"),
        id: full_id[..12].to_owned(),
        pid: inspect("{{.State.Pid}}").parse().expect("podman's pid"),
        veth: String::new(),
        ip: inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"),
    };
    assert_eq!(found.name, pod.name);
    // The network's bridge (made by CNI at the container's start) is the test's.
    let bridge = run(&["podman", "network", "inspect", "-f", "{{.NetworkInterface}}", &pod.network]).trim().to_owned();
    pod.bridge = Some(bridge.clone());
    let mut net = Net::new(1, Some(bridge));
    net.add_peer();
    // The container's host veth: the bridge's port that is not the peer's.
    let ports: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{}/brif", net.bridge))
        .expect("bridge ports")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|p| *p != net.peer_veth)
        .collect();
    assert_eq!(ports.len(), 1, "one podman veth on {}: {ports:?}", net.bridge);
    let found = Found { veth: ports[0].clone(), ..found };
    // CNI's bridge plugin puts podman's port in hairpin mode: the bridge sends the
    // container's own broadcasts (its ARP requests) back into it. The kernel counts such a
    // frame into the container; the station, which tells direction on a veth by MAC,
    // counts it out (README, "Container attribution"). Off here, as on the other runtimes'.
    run(&["ip", "link", "set", "dev", &found.veth, "type", "bridge_slave", "hairpin", "off"]);
    attribute_and_check(&found, &net);
    drop(net);
    drop(pod);
}

// ---------------------------------------------------------------- LXC

/// An LXC container; destroyed on drop.
#[derive(Debug)]
struct Lxc {
    name: String,
}

impl Drop for Lxc {
    fn drop(&mut self) {
        try_run(&["lxc-stop", "-k", "-n", &self.name]);
        try_run(&["lxc-destroy", "-f", "-n", &self.name]);
    }
}

#[test]
fn lxc_container_totals_equal_its_veth_counters() {
    let Some(_bb) = prerequisites("lxc-create", "lxc") else { return };
    let _serial = serial();
    const TAG: u32 = 2;
    let mut net = Net::new(TAG, None);
    let pid = pid4();
    let lxc = Lxc { name: format!("cjrt-lxc-{pid}") };
    let veth = format!("cjrl{pid}");
    let ip = format!("{}.2", subnet(TAG));
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("lxc.conf");
    std::fs::write(
        &conf,
        format!(
            "lxc.net.0.type = veth\nlxc.net.0.link = {}\nlxc.net.0.veth.pair = {veth}\nlxc.net.0.flags = up\n\
             lxc.net.0.ipv4.address = {ip}/24\nlxc.apparmor.profile = unconfined\n",
            net.bridge
        ),
    )
    .expect("lxc.conf");
    // The busybox template (busybox-static on PATH): a rootfs of symlinks to it.
    run(&["lxc-create", "-q", "-n", &lxc.name, "-t", "busybox", "-f", &conf.to_string_lossy()]);
    // Its init script asks DHCP (udhcpc) for ever: frames the test did not send. Nothing but mounts.
    let lxcpath = run(&["lxc-config", "lxc.lxcpath"]).trim().to_owned();
    let rcs = PathBuf::from(&lxcpath).join(&lxc.name).join("rootfs/etc/init.d/rcS");
    std::fs::write(&rcs, "#!/bin/sh\n/bin/mount -a\n").unwrap_or_else(|e| panic!("{}: {e}", rcs.display()));
    run(&["lxc-start", "-n", &lxc.name]);
    run(&["lxc-wait", "-n", &lxc.name, "-s", "RUNNING", "-t", "30"]);
    let info = |flag: &str| run(&["lxc-info", "-n", &lxc.name, flag, "-H"]).trim().to_owned();
    let found = Found {
        runtime: "lxc",
        name: run(&["lxc-info", "-n", &lxc.name])
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map_or_else(|| panic!("lxc-info names no container"), |n| n.trim().to_owned()),
        id: lxc.name.clone(),
        pid: info("-p").parse().expect("lxc-info's pid"),
        veth: veth.clone(),
        ip,
    };
    assert_eq!(found.name, lxc.name);
    net.add_peer();
    attribute_and_check(&found, &net);
    drop(lxc);
}

// ---------------------------------------------------------------- containerd

/// A containerd to talk to: the one on the default socket, or one this test
/// started (stopped on drop, after the test's namespace is emptied).
#[derive(Debug)]
struct Containerd {
    started: Option<Child>,
    _state: Option<tempfile::TempDir>,
}

impl Containerd {
    fn answers() -> bool {
        try_run(&["ctr", "--connect-timeout", "2s", "version"])
    }

    fn get() -> Self {
        if Self::answers() {
            return Self { started: None, _state: None };
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let me = Self { started: Some(child), _state: Some(dir) };
        wait_until("containerd to answer on its default socket", Self::answers);
        me
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(c) = self.started.as_mut() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

/// The test's containerd namespace, image, container and task, its netns and veth; removed on drop.
#[derive(Debug)]
struct Ctr {
    namespace: String,
    image: String,
    id: String,
    netns: String,
    veth: String,
}

impl Ctr {
    fn ctr(&self, args: &[&str]) -> String {
        let mut all = vec!["ctr", "-n", &self.namespace];
        all.extend_from_slice(args);
        run(&all)
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let ns = self.namespace.as_str();
        try_run(&["ctr", "-n", ns, "task", "kill", "-s", "SIGKILL", &self.id]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !try_run(&["ctr", "-n", ns, "task", "rm", &self.id]) && Instant::now() < deadline {
            if !try_run(&["ctr", "-n", ns, "task", "ls", "-q"]) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        try_run(&["ctr", "-n", ns, "task", "rm", "-f", &self.id]);
        try_run(&["ctr", "-n", ns, "container", "rm", &self.id]);
        try_run(&["ctr", "-n", ns, "image", "rm", &self.image]);
        try_run(&["ctr", "namespace", "rm", ns]);
        try_run(&["ip", "netns", "del", &self.netns]);
        try_run(&["ip", "link", "del", &self.veth]);
    }
}

/// `sha256:<hex>` and the size of a file, moved into the layout's blobs.
fn blob(layout: &Path, file: &Path) -> (String, u64) {
    let sum = run(&["sha256sum", &file.to_string_lossy()]);
    let hex = sum.split_whitespace().next().expect("sha256sum").to_owned();
    let size = std::fs::metadata(file).expect("blob").len();
    std::fs::rename(file, layout.join("blobs/sha256").join(&hex)).expect("blob");
    (format!("sha256:{hex}"), size)
}

/// An OCI image archive (image layout, one uncompressed layer) of `rootfs`, tagged `reference`.
fn oci_archive(rootfs: &Path, reference: &str, out: &Path) {
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    let layer = work.path().join("layer.tar");
    tar(rootfs, &layer);
    let (layer_digest, layer_size) = blob(&layout, &layer);
    let config = work.path().join("config.json");
    let config_json = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    std::fs::write(&config, config_json.to_string()).expect("config");
    let (config_digest, config_size) = blob(&layout, &config);
    let manifest = work.path().join("manifest.json");
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    std::fs::write(&manifest, manifest_json.to_string()).expect("manifest");
    let (manifest_digest, manifest_size) = blob(&layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": reference},
        }],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    tar(&layout, out);
}

#[test]
fn containerd_container_totals_equal_its_veth_counters() {
    let Some(bb) = prerequisites("ctr", "containerd") else { return };
    let _serial = serial();
    let daemon = Containerd::get();
    const TAG: u32 = 3;
    let mut net = Net::new(TAG, None);
    let pid = pid4();
    let ctr = Ctr {
        namespace: format!("cjrt-{pid}"),
        image: format!("localhost/cjrt-busybox:{pid}"),
        id: format!("cjrt-ctr-{pid}"),
        netns: format!("cjr-ctd-{pid}"),
        veth: format!("cjrc{pid}"),
    };
    let root = rootfs(&bb);
    let archive = root.path().with_extension("oci.tar");
    oci_archive(root.path(), &ctr.image, &archive);
    ctr.ctr(&["image", "import", &archive.to_string_lossy()]);
    let _ = std::fs::remove_file(&archive);
    // The pod network as a CNI bridge plugin makes it: a netns file under /run/netns and a
    // veth whose host end is a bridge port.
    let ip = format!("{}.2", subnet(TAG));
    run(&["ip", "netns", "add", &ctr.netns]);
    add_veth(&ctr.veth, &ctr.netns, &net.bridge, &format!("{ip}/24"));
    ctr.ctr(&[
        "run",
        "-d",
        "--with-ns",
        &format!("network:/run/netns/{}", ctr.netns),
        &ctr.image,
        &ctr.id,
        "/bin/sleep",
        "600",
    ]);
    // `ctr task ls`: TASK PID STATUS.
    let tasks = ctr.ctr(&["task", "ls"]);
    let task_pid: u32 = tasks
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&ctr.id.as_str()) && f.get(2) == Some(&"RUNNING")).then(|| f[1].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no running task {} in:\n{tasks}", ctr.id));
    let found = Found {
        runtime: "containerd",
        name: ctr.id.clone(),
        id: ctr.id.clone(),
        pid: task_pid,
        veth: ctr.veth.clone(),
        ip,
    };
    net.add_peer();
    attribute_and_check(&found, &net);
    drop(ctr);
    drop(daemon);
}

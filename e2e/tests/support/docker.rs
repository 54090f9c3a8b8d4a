//! Docker and echo helpers of the live tests, shared by `tests/containers.rs`
//! and `tests/divert.rs` (included with `#[path]`): a host interface's kernel
//! counters, bounded UDP echo exchanges and bursts between network namespaces (threads
//! that `setns` into them: no tool needed), and [`DockerLab`], a Docker
//! network, an image imported from a static busybox (no registry) and named
//! containers.
//!
//! Guaranteed: every container, network and image a [`DockerLab`] makes is
//! removed when it is dropped, also when the test fails; each echo exchange
//! and burst is bounded in count and time (a lost reply waits 1 s at most).
//! Not guaranteed: a dockerd that [`docker_available`] started is left
//! running for other tests; Docker and busybox are installed with apt-get
//! when missing, and without them the caller skips by `e2e::skip`'s rule.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use e2e::live::{have, run, try_run};

/// Kernel counters of an interface (host side).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Counters {
    pub fn read(ifname: &str) -> Self {
        let get = |what: &str| -> u64 {
            let p = format!("/sys/class/net/{ifname}/statistics/{what}");
            std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("{p}: {e}"))
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{p}: {e}"))
        };
        Self {
            rx_packets: get("rx_packets"),
            tx_packets: get("tx_packets"),
            rx_bytes: get("rx_bytes"),
            tx_bytes: get("tx_bytes"),
        }
    }

    pub fn minus(self, o: Self) -> Self {
        Self {
            rx_packets: self.rx_packets - o.rx_packets,
            tx_packets: self.tx_packets - o.tx_packets,
            rx_bytes: self.rx_bytes - o.rx_bytes,
            tx_bytes: self.tx_bytes - o.tx_bytes,
        }
    }
}

/// `count` UDP datagrams of `size` payload bytes from the netns file `from`
/// to a responder at `to_ip` in the netns file `to`, each answered by one of
/// half that size before the next is sent: [`bursts`] of one (bounded in count
/// and time). The answers are smaller so that a count that swaps a
/// container's in and out shows in its bytes.
pub fn echo(from: &str, to: &str, to_ip: &str, count: u32, size: usize) -> Traffic {
    bursts(from, to, to_ip, count, 1, size, size / 2 + 1)
}

/// `rounds` rounds from the netns file `from` to a responder at `to_ip` in the
/// netns file `to`: `burst` UDP datagrams of `size` payload bytes, answered by
/// one datagram of `reply` bytes once the responder has the whole burst. Unlike
/// an [`echo`], the two directions differ in packets and in bytes, so a count that
/// swaps them shows. Bounded in count and time, with room for a loaded machine:
/// a lost answer waits 5 s at most, the responder gives up after 10 s without
/// a datagram. `Traffic::count` is `rounds` (the answers).
pub fn bursts(from: &str, to: &str, to_ip: &str, rounds: u32, burst: u32, size: usize, reply: usize) -> Traffic {
    static PORT: AtomicU32 = AtomicU32::new(0);
    let port = 8000 + (PORT.fetch_add(1, Ordering::Relaxed) % 1000) as u16;
    let to_addr: std::net::SocketAddr = format!("{to_ip}:{port}").parse().expect("address");
    let burst = burst.max(1);
    let ready = std::sync::Arc::new(std::sync::Barrier::new(2));
    let r2 = std::sync::Arc::clone(&ready);
    let server = in_netns(to, move || {
        let sock = std::net::UdpSocket::bind(("0.0.0.0", port)).expect("bind responder");
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        r2.wait();
        let answer = vec![0xa5u8; reply];
        let mut buf = vec![0u8; 65536];
        let (mut got, mut answered) = (0, 0);
        while answered < rounds {
            let Ok((_, peer)) = sock.recv_from(&mut buf) else { break };
            got += 1;
            if got % burst == 0 {
                sock.send_to(&answer, peer).expect("answer");
                answered += 1;
            }
        }
        answered
    });
    let client = in_netns(from, move || {
        ready.wait();
        let sock = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind client");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let payload = vec![0x5au8; size];
        let mut buf = vec![0u8; 65536];
        let mut answered = 0;
        for _ in 0..rounds {
            for _ in 0..burst {
                sock.send_to(&payload, to_addr).expect("send");
            }
            if sock.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        answered
    });
    Traffic { server, client, count: rounds }
}

/// Runs `f` on a thread that joined the netns of the file `path` (setns affects only that thread).
pub fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// One echo exchange in progress.
#[derive(Debug)]
pub struct Traffic {
    pub server: std::thread::JoinHandle<u32>,
    pub client: std::thread::JoinHandle<u32>,
    pub count: u32,
}

pub fn finish_pings(exchanges: Vec<(&str, Traffic)>) {
    for (what, t) in exchanges {
        let answered = t.client.join().expect("client thread");
        let echoed = t.server.join().expect("server thread");
        assert_eq!((answered, echoed), (t.count, t.count), "{what}: every datagram echoed");
    }
}

/// Docker for the tests: the CLI (installed with apt-get when missing) and a
/// daemon (started when none answers; left running for other tests).
pub fn docker_available() -> bool {
    // A daemon that answers (local, or DOCKER_HOST's) is all the tests need.
    if have("docker") && try_run(&["docker", "info"]) {
        return true;
    }
    if !(have("docker") && have("dockerd")) && have("apt-get") {
        try_run(&["apt-get", "install", "-y", "-q", "docker.io"]);
    }
    if !(have("docker") && have("dockerd")) {
        e2e::skip("docker (its CLI and dockerd) is not installed (apt-get install docker.io)");
        return false;
    }
    if try_run(&["docker", "info"]) {
        return true;
    }
    let log = std::fs::File::create("/tmp/cj-test-dockerd.log").expect("dockerd log");
    let started = Command::new("setsid")
        .arg("dockerd")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .map(|mut c| std::thread::spawn(move || c.wait()));
    assert!(started.is_ok(), "cannot start dockerd");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !try_run(&["docker", "info"]) {
        assert!(Instant::now() < deadline, "dockerd did not answer within 60 s; see /tmp/cj-test-dockerd.log");
        std::thread::sleep(Duration::from_millis(250));
    }
    true
}

/// A static busybox (`busybox-static`), installed with apt-get when missing.
pub fn busybox() -> Option<String> {
    let is_static = |p: &str| {
        Command::new("file")
            .arg(p)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"))
            .unwrap_or(Path::new(p).exists())
    };
    if !is_static("/bin/busybox") && have("apt-get") {
        try_run(&["apt-get", "install", "-y", "-q", "busybox-static"]);
    }
    if is_static("/bin/busybox") {
        return Some("/bin/busybox".to_owned());
    }
    e2e::skip("no static busybox (apt-get install busybox-static)");
    None
}

/// A network, an image and containers made by a test; removed on drop.
#[derive(Debug)]
pub struct DockerLab {
    pub network: String,
    pub bridge: String,
    pub image: String,
    /// (name, pid, host veth, address)
    pub containers: Vec<(String, u32, String, String)>,
}

pub fn docker(args: &[&str]) -> String {
    let mut all = vec!["docker"];
    all.extend_from_slice(args);
    run(&all).trim().to_owned()
}

impl DockerLab {
    pub fn new(busybox: &str) -> Self {
        let pid = std::process::id() % 10_000;
        let subnet = std::process::id() % 200 + 20;
        let lab = DockerLab {
            network: format!("cjnet-{pid}"),
            bridge: format!("cjdb{pid}"),
            image: format!("cj-station-test-busybox:{pid}"),
            containers: Vec::new(),
        };
        // The image: a rootfs of one static busybox, imported (no registry).
        let root = tempfile::tempdir().expect("rootfs");
        std::fs::create_dir_all(root.path().join("bin")).expect("bin");
        std::fs::copy(busybox, root.path().join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).expect("symlink");
        }
        let mut tar = Command::new("tar")
            .args(["-C", root.path().to_str().expect("path"), "-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let import = Command::new("docker")
            .args(["import", "-", &lab.image])
            .stdin(tar.stdout.take().expect("tar stdout"))
            .output()
            .expect("docker import");
        assert!(tar.wait().is_ok_and(|s| s.success()), "tar of the rootfs");
        assert!(import.status.success(), "docker import: {}", String::from_utf8_lossy(&import.stderr));
        docker(&[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            &format!("10.{subnet}.0.0/24"),
            "-o",
            &format!("com.docker.network.bridge.name={}", lab.bridge),
            &lab.network,
        ]);
        // No IPv6 on the test's own bridge (no MLD reports flooded to the containers).
        run(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", lab.bridge)]);
        lab
    }

    /// Starts container `name` and returns its index.
    pub fn start(&mut self, name: &str) -> usize {
        let full = format!("cjd-{}-{name}", std::process::id() % 10_000);
        docker(&["run", "-d", "--name", &full, "--network", &self.network, &self.image, "/bin/sleep", "600"]);
        let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", &full]).parse().expect("pid");
        let ip = docker(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &full]);
        let peer: u32 = docker(&["exec", &full, "cat", "/sys/class/net/eth0/iflink"]).parse().expect("iflink");
        let veth = std::fs::read_dir("/sys/class/net")
            .expect("sysfs")
            .flatten()
            .find(|e| {
                std::fs::read_to_string(e.path().join("ifindex")).map(|s| s.trim() == peer.to_string()).unwrap_or(false)
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .unwrap_or_else(|| panic!("no host interface with ifindex {peer}"));
        // Docker leaves IPv6 on the host veth: it would send router solicitations and MLD
        // reports into the container for seconds. What it sent before this is before the test.
        run(&["sysctl", "-qw", &format!("net.ipv6.conf.{veth}.disable_ipv6=1")]);
        self.containers.push((full, pid, veth, ip));
        self.containers.len() - 1
    }

    pub fn ns(&self, i: usize) -> String {
        format!("/proc/{}/ns/net", self.containers[i].1)
    }

    pub fn ping(&self, from: usize, to: usize, count: u32, size: usize) -> Traffic {
        echo(&self.ns(from), &self.ns(to), &self.containers[to].3, count, size)
    }

    pub fn counters(&self, i: usize) -> Counters {
        Counters::read(&self.containers[i].2)
    }

    pub fn quiet(&self, which: &[usize]) -> Vec<Counters> {
        until_quiet(|| which.iter().map(|&i| self.counters(i)).collect::<Vec<_>>(), Duration::from_secs(15))
    }
}

/// Reads `read` every 100 ms until its value has not changed for two
/// seconds, or `limit` has passed (a link that just came up may still send a
/// frame or two); returns the last value. Changes are logged.
pub fn until_quiet<T: PartialEq + std::fmt::Debug>(read: impl Fn() -> T, limit: Duration) -> T {
    let deadline = Instant::now() + limit;
    let mut last = read();
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = read();
        if now != last {
            eprintln!("not quiet yet: {last:?} -> {now:?}");
            last = now;
            since = Instant::now();
        }
    }
    last
}

impl Drop for DockerLab {
    fn drop(&mut self) {
        for c in &self.containers {
            try_run(&["docker", "rm", "-f", &c.0]);
        }
        try_run(&["docker", "network", "rm", &self.network]);
        try_run(&["docker", "rmi", "-f", &self.image]);
    }
}

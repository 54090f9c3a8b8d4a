//! The variable table: every name the station reads from `conjure.conf` or the
//! environment, with its default, its group and a one-line meaning.
//!
//! This is where a variable is declared. It is read and checked in
//! `validate.rs` (`Raw::into_config`, in this table's order) into a
//! [`StationConfig`](super::StationConfig) field, which is where it is used.
//! `sysconfig/conjure.conf` lists the same names with the same defaults (a test
//! below compares them).
//!
//! # Guarantees
//!
//! Every name here is read by the loader (a test in `mod.rs` checks), and
//! `sysconfig/conjure.conf` assigns each its default exactly once.
//!
//! # Not guaranteed
//!
//! The `deployment` group is kept for the scripts: the binaries carry its
//! values (for `resolved`) but do not act on them.

/// One variable the station knows: its name, default and meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Name, e.g. `CJ_CORECOUNT`.
    pub name: &'static str,
    /// Default value, as written in `sysconfig/conjure.conf`.
    pub default: &'static str,
    /// Group in conjure.conf: `zbalance`, `detector`, `flows`, `application`, `paths`, `deployment`.
    pub group: &'static str,
    /// One-line description.
    pub help: &'static str,
}

const fn var(name: &'static str, default: &'static str, group: &'static str, help: &'static str) -> Variable {
    Variable { name, default, group, help }
}

/// Every variable the station reads (and the deployment placeholders it
/// tolerates), with defaults. `sysconfig/conjure.conf` lists the same.
pub const VARIABLES: &[Variable] = &[
    var(
        "CJ_IFACE",
        "",
        "zbalance",
        "capture source: pcap:FILE | sim:SPEC | IF | IF1,IF2 | containers | pfring:IF | zc:IF",
    ),
    var("CJ_CLUSTER_ID", "98", "zbalance", "cluster id (0..=1023): names the shared-memory queue directory"),
    var(
        "ZBALANCE_HASH_MODE",
        "1",
        "zbalance",
        "0 round-robin, 1 IP hash, 2 fan-out (zbalance_ipc -m; 3..=6 not supported)",
    ),
    var(
        "N_QUEUE_SETS",
        "1",
        "zbalance",
        "queue sets (1..=16), one full set of packet queues per consuming application",
    ),
    var("CJ_QUEUE_SLOTS", "65536", "zbalance", "slots per packet queue (power of two, 16..=16777216)"),
    var(
        "CJ_SLOT_SIZE",
        "auto",
        "zbalance",
        "bytes per packet slot: auto (256: the first 232 bytes of each frame, headers only; 2048 with CJ_TUN=yes) \
         or a multiple of 8, 64..=65536 (at least 1552 with CJ_TUN=yes); frame room = slot - 24",
    ),
    var(
        "CJ_ON_FULL",
        "auto",
        "zbalance",
        "full packet queue: auto (wait for pcap/unpaced sim, drop live) | drop | wait",
    ),
    var("CJ_BALANCER_CORE", "-1", "zbalance", "core for the balancer thread; -1 or empty: not pinned"),
    var(
        "CJ_AFP_BLOCK_SIZE",
        "1048576",
        "zbalance",
        "AF_PACKET ring block bytes per interface (power of two, 4096..=134217728; a frame must fit in a block)",
    ),
    var(
        "CJ_AFP_BLOCK_COUNT",
        "64",
        "zbalance",
        "AF_PACKET ring blocks per interface (2..=65536; size x count at most 16 GiB)",
    ),
    var(
        "CJ_AFP_BLOCK_TIMEOUT_MS",
        "10",
        "zbalance",
        "ms after which the kernel hands over a block that is not full (1..=60000)",
    ),
    var("CJ_AFP_PROMISC", "yes", "zbalance", "AF_PACKET interfaces in promiscuous mode: yes | no"),
    var(
        "CJ_FILTER",
        "",
        "zbalance",
        "capture filter in tcpdump syntax (e.g. udp, not port 22); empty: every frame. Frames it rejects are never received",
    ),
    var("CJ_COREBASE", "0", "detector", "first worker core"),
    var("CJ_CORECOUNT", "1", "detector", "worker count (1..=1024), one queue and one core each"),
    var("CJ_SKIP_CORE", "-1", "detector", "core the workers step over; -1 or empty: none"),
    var("CJ_QUEUE_OFFSET", "0", "detector", "queue of worker 0 (0..=1023); worker i reads queue CJ_QUEUE_OFFSET+i"),
    var("CJ_QUEUE_SET", "0", "detector", "queue set this detector reads (below N_QUEUE_SETS)"),
    var("CJ_WAIT", "backoff", "detector", "how consumers wait: busy | backoff"),
    var("CJ_LOG_INTERVAL", "5", "detector", "seconds between stats lines; 0: none"),
    var(
        "CJ_WATCHDOG_SEC",
        "0",
        "detector",
        "outside systemd (containers): a process whose loop makes no progress for this many seconds (1..=3600) exits \
         with status 70 for its restart policy to start it again, as a unit's WatchdogSec= does; 0: off",
    ),
    var(
        "CJ_TUN",
        "no",
        "detector",
        "flow divert: yes | no; yes: each worker writes the flows CJ_DIVERT_RULES selects to its tun device \
         (and on-reboot.sh creates the devices)",
    ),
    var("CJ_TUN_OFFSET", "0", "detector", "the worker of queue q writes to tun<CJ_TUN_OFFSET+q> (0..=1000000)"),
    var(
        "CJ_DIVERT_RULES",
        "",
        "detector",
        "file of divert/mirror rules (one a line), reloaded when it changes; empty: no rules",
    ),
    var("CJ_FLOW_IDLE_TIMEOUT", "30", "flows", "seconds without packets before a flow ends (1..=86400)"),
    var(
        "CJ_FLOW_ACTIVE_TIMEOUT",
        "300",
        "flows",
        "seconds after which a long flow is reported and goes on (>= idle, <= 604800)",
    ),
    var(
        "CJ_FLOW_TCP_CLOSE_TIMEOUT",
        "5",
        "flows",
        "seconds a TCP flow lingers after FIN from both sides or RST (0..=3600)",
    ),
    var("CJ_FLOW_TABLE_SIZE", "1048576", "flows", "flows per worker table (1024..=67108864)"),
    var(
        "CJ_REFRESH",
        "60",
        "flows",
        "seconds between exports of what each live flow counted, and between the app's writes (1..=86400)",
    ),
    var(
        "CJ_DECAP",
        "",
        "flows",
        "tunnels accounted as their inner flow (outer endpoints kept): comma list of vxlan[:PORT], \
         geneve[:PORT], gre, ipip; empty: off",
    ),
    var("CJ_RECORD_QUEUE_SLOTS", "65536", "application", "slots per record queue (power of two, 16..=16777216)"),
    var("CJ_STATION_CONFIG", "", "application", "path of the application's TOML configuration; empty: none"),
    var(
        "CJ_APP_MAX_ROWS",
        "1000000",
        "application",
        "rows per app aggregate table (1..=1000000000); then new keys fold into one overflow row `other`",
    ),
    var(
        "CJ_METRICS_ADDR",
        "",
        "application",
        "where cj-app serves Prometheus /metrics: PORT or 127.0.0.1:PORT (loopback), public:ADDR:PORT; empty: off",
    ),
    var(
        "CJ_EXPORT",
        "",
        "application",
        "flow collectors cj-app sends every flow record to: ipfix://HOST:PORT or netflow9://HOST:PORT, comma-separated; empty: off",
    ),
    var(
        "CJ_EXPORT_RATE",
        "0",
        "application",
        "most data records per second cj-app sends each CJ_EXPORT collector (100..=1000000; one per flow direction): \
         what the collector takes; 0 or empty: unpaced",
    ),
    var(
        "CJ_EXPORT_BEHIND",
        "wait",
        "application",
        "what a paced export does with more records than CJ_EXPORT_RATE sends: wait (the app takes records only as \
         fast as it sends them) or drop (the app keeps taking them and drops the export of those that do not fit, counted)",
    ),
    var(
        "CJ_SHM_DIR",
        "/dev/shm",
        "paths",
        "absolute directory for queues; they live in CJ_SHM_DIR/conjure-CJ_CLUSTER_ID",
    ),
    var(
        "CJ_GROUP",
        "",
        "paths",
        "group (name or gid) given to the queue directory and files the station creates, so its members \
         may run cj-app status and query without root; empty: none",
    ),
    var("PFRING_VER", "", "deployment", "PF_RING version for install_pfring.sh (not read by the binaries)"),
    var("PF_DRIVER", "", "deployment", "PF_RING ZC driver for install_pfring.sh (not read by the binaries)"),
    var("CJ_IP4_ADDR", "", "deployment", "station IPv4 address, for deployment scripts (not read by the binaries)"),
    var("CJ_IP6_ADDR", "", "deployment", "station IPv6 address, for deployment scripts (not read by the binaries)"),
    var(
        "CJ_HUGEPAGES",
        "",
        "deployment",
        "2 MiB hugepages on-reboot.sh reserves; empty: 1024 when CJ_IFACE is zc:..., else none; 0: none",
    ),
    var("CJ_HUGEPAGES_MOUNT", "/dev/hugepages", "deployment", "hugetlbfs mount point on-reboot.sh makes (under /dev, /mnt or /run)"),
    var(
        "CJ_SHM_OWNER",
        "root:root",
        "deployment",
        "owner:group of the queue directory on-reboot.sh creates (mode 3770)",
    ),
    var("CJ_IMAGE", "conjure", "deployment", "image the compose stack runs (make container tags it)"),
];

/// Whether `name` is in [`VARIABLES`].
pub(super) fn is_known(name: &str) -> bool {
    VARIABLES.iter().any(|v| v.name == name)
}

#[cfg(test)]
mod tests {
    use super::super::StationConfig;
    use super::*;
    use std::path::Path;

    #[test]
    fn sysconfig_conjure_conf_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sysconfig/conjure.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        // Every variable is assigned its documented default exactly once, in the file itself.
        for v in VARIABLES {
            let line =
                format!("{}={}", v.name, if v.default.is_empty() { "\"\"".to_owned() } else { v.default.to_owned() });
            let n = text
                .lines()
                .filter(|l| l.trim_start() == line || l.trim_start().starts_with(&format!("{line} ")))
                .count();
            assert_eq!(n, 1, "{} in conjure.conf", v.name);
        }
        assert!(text
            .lines()
            .any(|l| l.trim() == "[ -f /var/lib/conjure/conjure.conf ] && . /var/lib/conjure/conjure.conf"));
        let c = StationConfig::load_from(&[], Some(&path)).unwrap();
        if !Path::new("/var/lib/conjure/conjure.conf").exists() {
            let mut d = StationConfig::default();
            d.origins.clone_from(&c.origins);
            assert_eq!(c, d);
            assert!(c.origin("CJ_CORECOUNT").contains("conjure.conf:"));
        }
    }
}

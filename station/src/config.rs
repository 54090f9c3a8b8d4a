//! conjure.conf loading and validation.
//!
//! Every variable the station reads is listed in [`VARIABLES`] with its default;
//! `sysconfig/conjure.conf` holds the same list. Values come from three layers,
//! later ones winning: the defaults, a `--config FILE`, then the environment
//! (only variables in [`VARIABLES`] are read from it). The layers are merged with
//! the `config` crate; every value keeps its origin (`default`, `FILE:LINE` or
//! `environment`) so that an error can say where a bad value came from.
//!
//! # The file format
//!
//! A `--config` file is the shell subset a start script can also source with
//! `sh`: blank lines, `#` comments (also after a value), `NAME=VALUE`
//! assignments (optionally after `export `, several per line allowed), values
//! unquoted, in `'single'` or `"double"` quotes, and includes:
//! `. FILE`, `source FILE` (FILE must exist, as in `sh`), and
//! `[ -f FILE ] && . FILE` (also `-r`, `-e`, and `test -f FILE && . FILE`),
//! which include FILE only when it exists. Relative include paths are relative
//! to the current directory, as in `sh`. Nothing is expanded: `$`, backquotes,
//! `$(...)`, pipes, redirections and other commands are errors naming the file
//! and line. The no-op commands `true` and `:` are accepted. Includes nest at most [`MAX_INCLUDE_DEPTH`] deep and a file that
//! includes itself (directly or not) is an error.
//!
//! Every file (the `--config` file and each include) is opened with
//! `O_NONBLOCK`, `fstat`ed and read only when it is a regular file of at most
//! [`MAX_CONFIG_FILE_BYTES`] (1 MiB) of UTF-8: a FIFO, a device such as
//! `/dev/zero`, a directory or a larger file is a one-line error naming the
//! file, and reading never blocks or grows without bound. `[ -r FILE ]` is
//! tested with `access(2)`, never by opening FILE.
//!
//! Unknown `CJ_*` names in a file are errors (with a "did you mean" hint); other
//! unknown names are ignored, unless they look like a misspelt known name.
//! Unknown `CJ_*` names in the environment are ignored.
//!
//! # Guarantees
//!
//! [`StationConfig::load_from`] either returns a configuration in which every
//! value is inside its documented range, or the first bad value as a
//! [`ConfigError`] whose `Display` is one line:
//! `CJ_CORECOUNT="four" (environment): expected a whole number from 1 to 1024`.
//! `CJ_IFACE` is only checked by [`StationConfig::source`], so a process that does
//! not capture starts with an empty one; it refuses an interface listed twice.
//!
//! # Not guaranteed
//!
//! A file is read once, at start: a file replaced later is not seen, and a
//! regular file on a slow or hung network file system can still block the
//! read (a FIFO or device cannot).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::{Map, Source, Value, ValueKind};

/// A configuration value that is wrong, with where it came from and what is expected.
///
/// `Display` gives one line: `VAR="value" (origin): expected ...`. Errors that
/// are not about one variable (a file line that is not an assignment, an
/// unreadable file) have an empty `var` and display as
/// `origin: "text": expected ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Variable name, e.g. `CJ_CORECOUNT`.
    pub var: String,
    /// The value as given.
    pub value: String,
    /// Where it came from: `environment`, `/path/conjure.conf:12`, `default`.
    pub origin: String,
    /// What would be accepted.
    pub expected: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.var.is_empty() {
            write!(f, "{}: {:?}: expected {}", self.origin, self.value, self.expected)
        } else {
            write!(f, "{}={:?} ({}): expected {}", self.var, self.value, self.origin, self.expected)
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(var: &str, value: &str, origin: &str, expected: impl Into<String>) -> Self {
        Self { var: var.to_owned(), value: value.to_owned(), origin: origin.to_owned(), expected: expected.into() }
    }
}

/// ZBALANCE_HASH_MODE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashMode {
    /// 0: packets go to queues in turn.
    RoundRobin,
    /// 1: sum of source and destination IP, modulo the queue count.
    IpHash,
    /// 2: every queue gets every packet.
    FanOut,
}

impl HashMode {
    /// The ZBALANCE_HASH_MODE number (as zbalance_ipc -m and the stats page write it).
    pub fn number(self) -> u64 {
        match self {
            HashMode::RoundRobin => 0,
            HashMode::IpHash => 1,
            HashMode::FanOut => 2,
        }
    }
}

/// CJ_ON_FULL: what the balancer does when a packet queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for finite offline sources (pcap, unpaced sim), drop for live ones.
    Auto,
    /// Drop the packet and count it.
    Drop,
    /// Wait for room.
    Wait,
}

/// CJ_WAIT: how consumers and a waiting producer wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitMode {
    /// Spin.
    Busy,
    /// Spin, yield, then sleep briefly.
    Backoff,
}

impl WaitMode {
    /// The queue wait strategy of this mode (backoff sleeps at most 1 ms).
    pub fn strategy(self) -> shmq::WaitStrategy {
        match self {
            WaitMode::Busy => shmq::WaitStrategy::BusyPoll,
            WaitMode::Backoff => shmq::WaitStrategy::DEFAULT_BACKOFF,
        }
    }
}

/// What CJ_IFACE names.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// `pcap:FILE`
    Pcap(PathBuf),
    /// `sim:SPEC`
    Sim(crate::sim::SimSpec),
    /// `eth0` or `eth1,eth2` (AF_PACKET)
    Interfaces(Vec<String>),
    /// `containers`: the host veth of every container, followed as they come and go (AF_PACKET)
    Containers,
    /// `pfring:IF`
    PfRing(String),
    /// `zc:IF`
    Zc(String),
}

impl SourceSpec {
    /// A source that captures from this host's interfaces (it never ends by
    /// itself, and what it misses is gone): AF_PACKET, `containers`, PF_RING.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Interfaces(_) | Self::Containers | Self::PfRing(_) | Self::Zc(_))
    }
}

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
        "2048",
        "zbalance",
        "bytes per packet slot (multiple of 8, 64..=65536); frame room = slot - 24",
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
    var("CJ_COREBASE", "0", "detector", "first worker core"),
    var("CJ_CORECOUNT", "1", "detector", "worker count (1..=1024), one queue and one core each"),
    var("CJ_SKIP_CORE", "-1", "detector", "core the workers step over; -1 or empty: none"),
    var("CJ_QUEUE_OFFSET", "0", "detector", "queue of worker 0 (0..=1023); worker i reads queue CJ_QUEUE_OFFSET+i"),
    var("CJ_QUEUE_SET", "0", "detector", "queue set this detector reads (below N_QUEUE_SETS)"),
    var("CJ_WAIT", "backoff", "detector", "how consumers wait: busy | backoff"),
    var("CJ_LOG_INTERVAL", "5", "detector", "seconds between stats lines; 0: none"),
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
        "IPFIX collectors cj-app sends every flow record to: ipfix://HOST:PORT[,ipfix://HOST2:PORT2]; empty: off",
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
    var("CJ_HUGEPAGES_MOUNT", "/dev/hugepages", "deployment", "hugetlbfs mount point on-reboot.sh makes (absolute)"),
    var(
        "CJ_SHM_OWNER",
        "root:root",
        "deployment",
        "owner:group of the queue directory on-reboot.sh creates (mode 2770)",
    ),
    var("CJ_IMAGE", "conjure", "deployment", "image the compose stack runs (make container tags it)"),
];

/// How deep `. FILE` includes may nest.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Largest AF_PACKET ring per interface (CJ_AFP_BLOCK_SIZE x CJ_AFP_BLOCK_COUNT).
const MAX_AFP_RING_BYTES: u64 = 16 << 30;

/// Largest CJ_APP_MAX_ROWS.
const MAX_APP_ROWS: u64 = 1_000_000_000;

/// Highest core number accepted in core variables.
const MAX_CORE: u64 = 4095;

/// Every variable the station reads, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct StationConfig {
    /// CJ_IFACE, raw; see [`StationConfig::source`].
    pub iface: String,
    /// CJ_CLUSTER_ID
    pub cluster_id: u32,
    /// CJ_CORECOUNT
    pub corecount: u32,
    /// CJ_COREBASE
    pub corebase: u32,
    /// CJ_SKIP_CORE (empty or -1: none)
    pub skip_core: Option<u32>,
    /// CJ_QUEUE_OFFSET
    pub queue_offset: u32,
    /// ZBALANCE_HASH_MODE
    pub hash_mode: HashMode,
    /// N_QUEUE_SETS
    pub queue_sets: u32,
    /// CJ_QUEUE_SET: the set this detector reads.
    pub queue_set: u32,
    /// CJ_LOG_INTERVAL (zero: no stats lines)
    pub log_interval: Duration,
    /// CJ_SHM_DIR
    pub shm_dir: PathBuf,
    /// CJ_GROUP, resolved to a gid (None: empty); hand it to
    /// `shmq::files::set_group` at start.
    pub group: Option<u32>,
    /// CJ_QUEUE_SLOTS
    pub queue_slots: u32,
    /// CJ_SLOT_SIZE
    pub slot_size: u32,
    /// CJ_RECORD_QUEUE_SLOTS
    pub record_queue_slots: u32,
    /// CJ_ON_FULL
    pub on_full: OnFull,
    /// CJ_WAIT
    pub wait: WaitMode,
    /// CJ_BALANCER_CORE
    pub balancer_core: Option<u32>,
    /// CJ_AFP_BLOCK_SIZE: bytes per AF_PACKET ring block.
    pub afp_block_size: u32,
    /// CJ_AFP_BLOCK_COUNT: blocks per AF_PACKET ring.
    pub afp_block_count: u32,
    /// CJ_AFP_BLOCK_TIMEOUT_MS: the kernel retires a block that is not full after this.
    pub afp_block_timeout: Duration,
    /// CJ_AFP_PROMISC
    pub afp_promisc: bool,
    /// CJ_FLOW_IDLE_TIMEOUT
    pub flow_idle_timeout: Duration,
    /// CJ_FLOW_ACTIVE_TIMEOUT
    pub flow_active_timeout: Duration,
    /// CJ_FLOW_TCP_CLOSE_TIMEOUT
    pub flow_tcp_close_timeout: Duration,
    /// CJ_FLOW_TABLE_SIZE
    pub flow_table_size: u32,
    /// CJ_REFRESH: each live flow's counts since its last export are exported
    /// at least this often, and the app writes its files this often.
    pub refresh: Duration,
    /// CJ_STATION_CONFIG
    pub station_config: Option<PathBuf>,
    /// CJ_APP_MAX_ROWS: rows per app aggregate table before new keys fold
    /// into the overflow row.
    pub app_max_rows: u64,
    /// CJ_METRICS_ADDR, raw (empty: no metrics endpoint); checked by cj-app,
    /// the one process that serves it.
    pub metrics_addr: String,
    /// CJ_EXPORT, raw (empty: no flow export); checked by cj-app, the one
    /// process that exports.
    pub export: String,
    /// CJ_TUN: flow divert to tun devices on.
    pub tun: bool,
    /// CJ_TUN_OFFSET: the worker of queue q writes to `tun<tun_offset + q>`.
    pub tun_offset: u32,
    /// CJ_DIVERT_RULES: the rules file (None: no rules).
    pub divert_rules: Option<PathBuf>,
    /// Where each variable's value came from (`default`, `FILE:LINE`,
    /// `environment`), by variable name; see [`StationConfig::origin`].
    pub origins: BTreeMap<String, String>,
    /// Each variable's value as given (before parsing), by variable name; see
    /// [`StationConfig::resolved`].
    pub values: BTreeMap<String, String>,
}

impl Default for StationConfig {
    /// The documented defaults (every origin `default`).
    fn default() -> Self {
        #[allow(clippy::expect_used)]
        Self::load_from(&[], None).expect("the built-in defaults are valid")
    }
}

impl StationConfig {
    /// Loads from the process environment and an optional `--config` file.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                is_known(&k).then(|| (k, v.to_string_lossy().into_owned()))
            })
            .collect();
        Self::load_from(&env, config_file)
    }

    /// Loads from the given environment pairs and an optional file (defaults < file < environment).
    ///
    /// # Errors
    /// The first invalid value.
    pub fn load_from(env: &[(String, String)], config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let defaults: Map<String, Value> =
            VARIABLES.iter().map(|v| (v.name.to_owned(), string_value("default", v.default))).collect();
        let mut builder = config::Config::builder().add_source(MapSource(defaults));
        if let Some(path) = config_file {
            builder = builder.add_source(MapSource(read_conf_file(path)?));
        }
        let env_map: Map<String, Value> =
            env.iter().filter(|(k, _)| is_known(k)).map(|(k, v)| (k.clone(), string_value("environment", v))).collect();
        builder = builder.add_source(MapSource(env_map));
        let merged = builder
            .build()
            .and_then(|c| c.collect())
            .map_err(|e| ConfigError::new("", "", "configuration", format!("mergeable sources ({e})")))?;
        Raw::new(merged).into_config()
    }

    /// Parses and checks CJ_IFACE.
    ///
    /// # Errors
    /// Empty, unknown prefix, missing pcap file, bad sim spec.
    pub fn source(&self) -> Result<SourceSpec, ConfigError> {
        let origin = self.origin("CJ_IFACE");
        let raw = self.iface.as_str();
        let err = |expected: String| ConfigError::new("CJ_IFACE", raw, origin, expected);
        let s = raw.trim();
        if s.is_empty() {
            return Err(err("a source: pcap:FILE, sim:SPEC or an interface name".into()));
        }
        if let Some(file) = s.strip_prefix("pcap:") {
            let path = PathBuf::from(file);
            let ok = !file.is_empty() && path.is_file() && std::fs::File::open(&path).is_ok();
            return if ok { Ok(SourceSpec::Pcap(path)) } else { Err(err("an existing pcap/pcapng file".into())) };
        }
        if let Some(spec) = s.strip_prefix("sim:") {
            return spec.parse::<crate::sim::SimSpec>().map(SourceSpec::Sim).map_err(err);
        }
        if let Some(name) = s.strip_prefix("pfring:") {
            // PF_RING's own pcap device: pfring:pcap:FILE (tests the binding without the kernel module).
            if let Some(file) = name.strip_prefix("pcap:") {
                let ok = !file.is_empty() && Path::new(file).is_file();
                return if ok {
                    Ok(SourceSpec::PfRing(name.to_owned()))
                } else {
                    Err(err("pfring:pcap:FILE with an existing pcap file".into()))
                };
            }
            check_ifname(name).map_err(|e| err(format!("pfring:IF with {e}")))?;
            return Ok(SourceSpec::PfRing(name.to_owned()));
        }
        if let Some(name) = s.strip_prefix("zc:") {
            check_ifname(name).map_err(|e| err(format!("zc:IF with {e}")))?;
            return Ok(SourceSpec::Zc(name.to_owned()));
        }
        if s == "containers" {
            return Ok(SourceSpec::Containers);
        }
        if s.starts_with("containers:") {
            return Err(err("pcap:FILE, sim:SPEC, pfring:IF, zc:IF, containers or interface names".into()));
        }
        if let Some((prefix, _)) = s.split_once(':') {
            if !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphabetic()) && !s.contains(',') {
                return Err(err(format!(
                    "pcap:FILE, sim:SPEC, pfring:IF, zc:IF or interface names; '{prefix}:' is not a source kind"
                )));
            }
        }
        let mut names: Vec<String> = Vec::new();
        for name in s.split(',') {
            check_ifname(name).map_err(|e| err(format!("interface names separated by commas, each {e}")))?;
            if names.iter().any(|n| n == name) {
                return Err(err(format!(
                    "each interface once; {name} is listed twice (every frame of it would be counted twice): \
                     remove the repeat"
                )));
            }
            names.push(name.to_owned());
        }
        Ok(SourceSpec::Interfaces(names))
    }

    /// Where `var`'s value came from: `default`, `FILE:LINE` or `environment`.
    pub fn origin(&self, var: &str) -> &str {
        self.origins.get(var).map_or("default", String::as_str)
    }

    /// Every variable of [`VARIABLES`], in its order, with its value as given
    /// (before parsing: `CJ_WAIT=Busy` stays `Busy`) and its origin.
    pub fn resolved(&self) -> impl Iterator<Item = (&'static str, &str, &str)> {
        VARIABLES.iter().map(|v| {
            let value = self.values.get(v.name).map_or(v.default, String::as_str);
            (v.name, value, self.origin(v.name))
        })
    }

    /// `<CJ_SHM_DIR>/conjure-<CJ_CLUSTER_ID>`.
    pub fn cluster_dir(&self) -> PathBuf {
        crate::naming::cluster_dir(&self.shm_dir, self.cluster_id)
    }
    /// Queue numbers of the workers: CJ_QUEUE_OFFSET + i for i < CJ_CORECOUNT.
    pub fn worker_queues(&self) -> Vec<u32> {
        (0..self.corecount).map(|i| self.queue_offset + i).collect()
    }
}

/// Finds `--config FILE` or `--config=FILE` in the arguments (the last one wins;
/// scanning stops at `--`). `args` may include the program name.
pub fn parse_args_config(args: &[String]) -> Option<PathBuf> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            if let Some(v) = it.next() {
                found = Some(PathBuf::from(v));
            }
        } else if let Some(v) = a.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        }
    }
    found
}

/// Checks an interface name: 1 to 15 bytes, no `/`, no whitespace, no comma.
fn check_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.contains(',')
        && !name.contains(':')
        && !name.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err("1 to 15 characters without '/', ':' or whitespace".to_owned())
    }
}

fn is_known(name: &str) -> bool {
    VARIABLES.iter().any(|v| v.name == name)
}

fn string_value(origin: &str, s: &str) -> Value {
    Value::new(Some(&origin.to_owned()), ValueKind::String(s.to_owned()))
}

/// A ready map as a `config` source.
#[derive(Debug, Clone)]
struct MapSource(Map<String, Value>);

impl Source for MapSource {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }
    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// The merged values, read one variable at a time.
struct Raw {
    map: Map<String, Value>,
    origins: BTreeMap<String, String>,
    values: BTreeMap<String, String>,
}

/// A value and where it came from.
struct Item {
    var: &'static str,
    value: String,
    origin: String,
}

impl Item {
    fn err(&self, expected: impl Into<String>) -> ConfigError {
        ConfigError::new(self.var, &self.value, &self.origin, expected)
    }

    /// A whole number in `lo..=hi`.
    fn num(&self, lo: u64, hi: u64) -> Result<u64, ConfigError> {
        self.num_expected(lo, hi, &format!("a whole number from {lo} to {hi}"))
    }

    fn num_expected(&self, lo: u64, hi: u64, expected: &str) -> Result<u64, ConfigError> {
        let t = self.value.trim();
        if t.is_empty() {
            return Err(self.err(format!("{expected}; the value is empty")));
        }
        match t.parse::<u64>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(self.err(expected)),
        }
    }

    fn num32(&self, lo: u32, hi: u32) -> Result<u32, ConfigError> {
        self.num(u64::from(lo), u64::from(hi)).map(|n| n as u32)
    }

    /// A core number, or -1 / empty for none.
    fn core_or_none(&self) -> Result<Option<u32>, ConfigError> {
        let t = self.value.trim();
        if t.is_empty() || t == "-1" {
            return Ok(None);
        }
        let expected = format!("a core number from 0 to {MAX_CORE}, or -1 or empty for none");
        match t.parse::<u64>() {
            Ok(n) if n <= MAX_CORE => Ok(Some(n as u32)),
            _ => Err(self.err(expected)),
        }
    }

    /// A power of two in `lo..=hi`.
    fn pow2(&self, lo: u32, hi: u32) -> Result<u32, ConfigError> {
        let expected = format!("a power of two from {lo} to {hi}");
        let n = self.num_expected(u64::from(lo), u64::from(hi), &expected)?;
        if n.is_power_of_two() {
            Ok(n as u32)
        } else {
            Err(self.err(expected))
        }
    }

    /// Whole seconds in `lo..=hi`.
    fn secs(&self, lo: u64, hi: u64) -> Result<Duration, ConfigError> {
        self.num_expected(lo, hi, &format!("a whole number of seconds from {lo} to {hi}")).map(Duration::from_secs)
    }

    /// One of `choices` (ASCII case-insensitive).
    fn choice<T: Copy>(&self, choices: &[(&str, T)]) -> Result<T, ConfigError> {
        let t = self.value.trim();
        if let Some((_, v)) = choices.iter().find(|(name, _)| name.eq_ignore_ascii_case(t)) {
            return Ok(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        };
        if t.is_empty() {
            Err(self.err(format!("{expected}; the value is empty")))
        } else {
            Err(self.err(expected))
        }
    }
}

impl Raw {
    fn new(map: Map<String, Value>) -> Self {
        Self { map, origins: BTreeMap::new(), values: BTreeMap::new() }
    }

    fn get(&mut self, var: &'static str) -> Item {
        let (value, origin) = match self.map.get(var) {
            Some(v) => {
                let origin = v.origin().unwrap_or("default").to_owned();
                let value = match &v.kind {
                    ValueKind::String(s) => s.clone(),
                    ValueKind::Nil => String::new(),
                    other => other.to_string(),
                };
                (value, origin)
            }
            None => (String::new(), "default".to_owned()),
        };
        self.origins.insert(var.to_owned(), origin.clone());
        self.values.insert(var.to_owned(), value.clone());
        Item { var, value, origin }
    }

    fn into_config(mut self) -> Result<StationConfig, ConfigError> {
        let iface = self.get("CJ_IFACE").value;
        let cluster_id = self.get("CJ_CLUSTER_ID").num32(0, 1023)?;
        let corecount = self.get("CJ_CORECOUNT").num32(1, 1024)?;
        let corebase = self.get("CJ_COREBASE").num(0, MAX_CORE)? as u32;
        let skip_core = self.get("CJ_SKIP_CORE").core_or_none()?;
        let item = self.get("CJ_QUEUE_OFFSET");
        let queue_offset = item.num32(0, 1023)?;
        if queue_offset + corecount > 1024 {
            return Err(item.err(format!(
                "a whole number from 0 to {} with CJ_CORECOUNT={corecount}: queue numbers stop at 1023",
                1024 - corecount
            )));
        }
        let hash_mode = parse_hash_mode(&self.get("ZBALANCE_HASH_MODE"))?;
        let queue_sets = self.get("N_QUEUE_SETS").num32(1, 16)?;
        let item = self.get("CJ_QUEUE_SET");
        let queue_set = item.num_expected(
            0,
            u64::from(queue_sets - 1),
            &format!("a queue set below N_QUEUE_SETS={queue_sets}: a whole number from 0 to {}", queue_sets - 1),
        )? as u32;
        let log_interval = self.get("CJ_LOG_INTERVAL").secs(0, 86_400)?;
        let item = self.get("CJ_SHM_DIR");
        let shm_dir = PathBuf::from(item.value.trim());
        if !shm_dir.is_absolute() {
            return Err(item.err("an absolute directory path"));
        }
        let group = parse_group(&self.get("CJ_GROUP"))?;
        let queue_slots = self.get("CJ_QUEUE_SLOTS").pow2(16, 1 << 24)?;
        let item = self.get("CJ_SLOT_SIZE");
        let slot_expected = "a multiple of 8 from 64 to 65536";
        let slot_size = item.num_expected(64, 65_536, slot_expected)?;
        if slot_size % 8 != 0 {
            return Err(item.err(slot_expected));
        }
        let record_queue_slots = self.get("CJ_RECORD_QUEUE_SLOTS").pow2(16, 1 << 24)?;
        let on_full =
            self.get("CJ_ON_FULL").choice(&[("auto", OnFull::Auto), ("drop", OnFull::Drop), ("wait", OnFull::Wait)])?;
        let wait = self.get("CJ_WAIT").choice(&[("busy", WaitMode::Busy), ("backoff", WaitMode::Backoff)])?;
        let balancer_core = self.get("CJ_BALANCER_CORE").core_or_none()?;
        let afp_block_size = self.get("CJ_AFP_BLOCK_SIZE").pow2(4096, 1 << 27)?;
        let item = self.get("CJ_AFP_BLOCK_COUNT");
        let max_blocks = (MAX_AFP_RING_BYTES / u64::from(afp_block_size)).min(65_536);
        let afp_block_count = item.num_expected(
            2,
            max_blocks,
            &format!(
                "a whole number from 2 to {max_blocks} with CJ_AFP_BLOCK_SIZE={afp_block_size} \
                 (at most 65536 blocks and 16 GiB per ring)"
            ),
        )? as u32;
        let afp_block_timeout = Duration::from_millis(self.get("CJ_AFP_BLOCK_TIMEOUT_MS").num(1, 60_000)?);
        let afp_promisc = self.get("CJ_AFP_PROMISC").choice(&[("yes", true), ("no", false)])?;
        let flow_idle_timeout = self.get("CJ_FLOW_IDLE_TIMEOUT").secs(1, 86_400)?;
        let idle = flow_idle_timeout.as_secs();
        let item = self.get("CJ_FLOW_ACTIVE_TIMEOUT");
        let flow_active_timeout = Duration::from_secs(item.num_expected(
            idle,
            604_800,
            &format!("a whole number of seconds from CJ_FLOW_IDLE_TIMEOUT ({idle}) to 604800"),
        )?);
        let flow_tcp_close_timeout = self.get("CJ_FLOW_TCP_CLOSE_TIMEOUT").secs(0, 3600)?;
        let flow_table_size = self.get("CJ_FLOW_TABLE_SIZE").num32(1024, 1 << 26)?;
        let refresh = self.get("CJ_REFRESH").secs(1, 86_400)?;
        let sc = self.get("CJ_STATION_CONFIG").value;
        let station_config = (!sc.trim().is_empty()).then(|| PathBuf::from(sc.trim()));
        let app_max_rows = self.get("CJ_APP_MAX_ROWS").num(1, MAX_APP_ROWS)?;
        let metrics_addr = self.get("CJ_METRICS_ADDR").value.trim().to_owned();
        let export = self.get("CJ_EXPORT").value.trim().to_owned();
        let tun = self.get("CJ_TUN").choice(&[("yes", true), ("no", false)])?;
        let tun_offset = self.get("CJ_TUN_OFFSET").num32(0, 1_000_000)?;
        let dr = self.get("CJ_DIVERT_RULES").value;
        let divert_rules = (!dr.trim().is_empty()).then(|| PathBuf::from(dr.trim()));
        for v in ["PFRING_VER", "PF_DRIVER", "CJ_IP4_ADDR", "CJ_IP6_ADDR"] {
            self.get(v);
        }
        // Variables only the deployment scripts use (CJ_HUGEPAGES, ...) are not
        // parsed here, but keep their value and origin for `resolved`.
        for v in VARIABLES {
            if !self.values.contains_key(v.name) {
                self.get(v.name);
            }
        }
        Ok(StationConfig {
            iface,
            cluster_id,
            corecount,
            corebase,
            skip_core,
            queue_offset,
            hash_mode,
            queue_sets,
            queue_set,
            log_interval,
            shm_dir,
            group,
            queue_slots,
            slot_size: slot_size as u32,
            record_queue_slots,
            on_full,
            wait,
            balancer_core,
            afp_block_size,
            afp_block_count,
            afp_block_timeout,
            afp_promisc,
            flow_idle_timeout,
            flow_active_timeout,
            flow_tcp_close_timeout,
            flow_table_size,
            refresh,
            station_config,
            app_max_rows,
            metrics_addr,
            export,
            tun,
            tun_offset,
            divert_rules,
            origins: self.origins,
            values: self.values,
        })
    }
}

/// CJ_GROUP: empty for none, a gid (any number below 2^32 - 1), or the name
/// of a group that exists on this host.
fn parse_group(item: &Item) -> Result<Option<u32>, ConfigError> {
    let t = item.value.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if let Ok(gid) = t.parse::<u32>() {
        return if gid == u32::MAX { Err(item.err("a group name or a gid below 4294967295")) } else { Ok(Some(gid)) };
    }
    match nix::unistd::Group::from_name(t) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        Ok(None) => Err(item.err(format!(
            "the name or gid of a group that exists on this host; there is no group {t:?} \
             (create it with groupadd, or leave CJ_GROUP empty)"
        ))),
        Err(e) => Err(item.err(format!("a group name or gid; looking up {t:?} failed: {e}"))),
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    #[test]
    fn cj_group_is_empty_a_gid_or_an_existing_name() {
        let load = |v: &str| StationConfig::load_from(&[("CJ_GROUP".to_owned(), v.to_owned())], None);
        assert_eq!(StationConfig::default().group, None);
        assert_eq!(load("").unwrap().group, None);
        assert_eq!(load("1234").unwrap().group, Some(1234));
        assert_eq!(load("root").unwrap().group, Some(0));
        let e = load("no-such-group-cj").unwrap_err().to_string();
        assert!(e.contains("CJ_GROUP") && e.contains("there is no group") && !e.contains('\n'), "{e}");
    }
}

fn parse_hash_mode(item: &Item) -> Result<HashMode, ConfigError> {
    const EXPECTED: &str = "0 (round-robin), 1 (IP hash) or 2 (fan-out)";
    let t = item.value.trim();
    match t {
        "0" => Ok(HashMode::RoundRobin),
        "1" => Ok(HashMode::IpHash),
        "2" => Ok(HashMode::FanOut),
        "" => Err(item.err(format!("{EXPECTED}; the value is empty"))),
        _ => {
            let zbalance_only = match t {
                "3" => Some("fan-out + round-robin"),
                "4" => Some("GTP hash"),
                "5" => Some("GRE hash"),
                "6" => Some("interface X to queue X"),
                _ => None,
            };
            match zbalance_only {
                Some(name) => {
                    Err(item.err(format!("0, 1 or 2; {t} ({name}) is a zbalance_ipc mode that is not supported here")))
                }
                None => Err(item.err(EXPECTED)),
            }
        }
    }
}

// ---------------------------------------------------------------- the file reader

/// Reads a conjure.conf-style file (and its includes) into a map of values
/// whose origins are `FILE:LINE`.
fn read_conf_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let mut out = Map::new();
    let mut stack = Vec::new();
    let text = read_bounded(path).map_err(|e| {
        ConfigError::new("--config", &path.display().to_string(), "command line", format!("a readable file ({e})"))
    })?;
    read_conf_text(path, &text, &mut stack, &mut out)?;
    Ok(out)
}

/// Why a configuration file was not read ([`read_bounded`]); `Display` is one
/// clause naming the file, for the end of a [`ConfigError`].
#[derive(Debug, thiserror::Error)]
pub enum ConfFileError {
    /// `open(2)` failed.
    #[error("{path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `fstat(2)` or `read(2)` failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A FIFO, device, socket or directory.
    #[error("{path} is a {kind}, not a regular file: name a regular file")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// `FIFO`, `character device`, ...
        kind: &'static str,
    },
    /// Larger than [`MAX_CONFIG_FILE_BYTES`].
    #[error(
        "{path} is larger than {} ({MAX_CONFIG_FILE_BYTES} bytes): a configuration file is a few KiB",
        MAX_CONFIG_FILE_TEXT
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

/// Largest configuration file (`--config` and each include) read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;
const MAX_CONFIG_FILE_TEXT: &str = "1 MiB";

/// Reads a configuration file safely: opened with `O_NONBLOCK` (a FIFO never
/// blocks the open), `fstat`ed, refused unless a regular file, read to at most
/// [`MAX_CONFIG_FILE_BYTES`] (a file that grows meanwhile is refused too).
///
/// # Errors
/// The file cannot be opened or read, is not a regular file, is too large or
/// is not UTF-8.
pub fn read_bounded(path: &Path) -> Result<String, ConfFileError> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)
        .map_err(|source| ConfFileError::Open { path: path.to_path_buf(), source })?;
    let meta = file.metadata().map_err(|source| ConfFileError::Read { path: path.to_path_buf(), source })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(ConfFileError::NotRegular { path: path.to_path_buf(), kind });
    }
    if meta.len() > MAX_CONFIG_FILE_BYTES {
        return Err(ConfFileError::TooLarge { path: path.to_path_buf() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ConfFileError::Read { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfFileError::TooLarge { path: path.to_path_buf() });
    }
    String::from_utf8(bytes).map_err(|_| ConfFileError::NotText { path: path.to_path_buf() })
}

/// Parses the text of a configuration file named `name` (includes are read
/// from the file system, relative to the current directory) and returns the
/// variables it sets, as `(NAME, VALUE, FILE:LINE)` of the last assignment
/// of each, sorted by name.
/// For tools and the fuzz target; [`StationConfig::load_from`] is the loader.
///
/// # Errors
/// As a `--config` file: the first line that is not accepted.
pub fn parse_conf_text(name: &Path, text: &str) -> Result<Vec<(String, String, String)>, ConfigError> {
    let mut out = Map::new();
    read_conf_text(name, text, &mut Vec::new(), &mut out)?;
    let mut v: Vec<(String, String, String)> = out
        .into_iter()
        .map(|(k, val)| {
            let origin = val.origin().unwrap_or_default().to_owned();
            let value = match val.kind {
                ValueKind::String(s) => s,
                other => other.to_string(),
            };
            (k, value, origin)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn read_conf_text(
    path: &Path,
    text: &str,
    stack: &mut Vec<PathBuf>,
    out: &mut Map<String, Value>,
) -> Result<(), ConfigError> {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    stack.push(canonical);
    let name = path.display().to_string();
    for (i, line) in text.lines().enumerate() {
        let origin = format!("{name}:{}", i + 1);
        read_line(line.strip_suffix('\r').unwrap_or(line), &origin, stack, out)?;
    }
    stack.pop();
    Ok(())
}

const LINE_EXPECTED: &str =
    "NAME=VALUE, a # comment, \". FILE\" or \"[ -f FILE ] && . FILE\" (nothing is expanded or run)";

fn read_line(
    line: &str,
    origin: &str,
    stack: &mut Vec<PathBuf>,
    out: &mut Map<String, Value>,
) -> Result<(), ConfigError> {
    let words = match tokenize(line) {
        Ok(w) => w,
        Err(reason) => return Err(line_error(line, origin, reason)),
    };
    let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
    match texts.as_slice() {
        // `true` and `:` do nothing (conjure.conf ends with one for `set -e` scripts).
        [] | ["true"] | [":"] => Ok(()),
        [".", file] | ["source", file] => {
            let p = Path::new(file);
            if !p.exists() {
                return Err(ConfigError::new("", line.trim(), origin, "an include of an existing file (as in sh)"));
            }
            include(p, line, origin, stack, out)
        }
        ["[", test, f1, "]", "&&", dot, f2] | ["test", test, f1, "&&", dot, f2]
            if matches!(*test, "-f" | "-r" | "-e") && matches!(*dot, "." | "source") =>
        {
            if f1 != f2 {
                return Err(ConfigError::new(
                    "",
                    line.trim(),
                    origin,
                    "\"[ -f FILE ] && . FILE\" testing the file it includes",
                ));
            }
            let p = Path::new(f1);
            let present = match *test {
                "-f" => p.is_file(),
                // access(2), not open(2): opening a FIFO to test it would block.
                "-r" => nix::unistd::access(p, nix::unistd::AccessFlags::R_OK).is_ok(),
                _ => p.exists(),
            };
            if present {
                include(p, line, origin, stack, out)
            } else {
                Ok(())
            }
        }
        _ => {
            let assigns = match words.first() {
                Some(w) if w.text == "export" && w.assign.is_none() => &words[1..],
                _ => &words[..],
            };
            if assigns.is_empty() || assigns.iter().any(|w| w.assign.is_none()) {
                return Err(ConfigError::new("", line.trim(), origin, LINE_EXPECTED));
            }
            for w in assigns {
                let eq = w.assign.unwrap_or(0);
                let (key, value) = (&w.text[..eq], &w.text[eq + 1..]);
                assign(key, value, origin, out)?;
            }
            Ok(())
        }
    }
}

fn include(
    p: &Path,
    line: &str,
    origin: &str,
    stack: &mut Vec<PathBuf>,
    out: &mut Map<String, Value>,
) -> Result<(), ConfigError> {
    let canonical = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    if stack.contains(&canonical) {
        return Err(ConfigError::new(
            "",
            line.trim(),
            origin,
            "an include that does not loop back to an including file",
        ));
    }
    if stack.len() >= MAX_INCLUDE_DEPTH {
        return Err(ConfigError::new(
            "",
            line.trim(),
            origin,
            format!("includes nested at most {MAX_INCLUDE_DEPTH} deep"),
        ));
    }
    let text = read_bounded(p).map_err(|e| {
        ConfigError::new("", line.trim(), origin, format!("an include of a readable regular file ({e})"))
    })?;
    read_conf_text(p, &text, stack, out)
}

fn assign(key: &str, value: &str, origin: &str, out: &mut Map<String, Value>) -> Result<(), ConfigError> {
    if is_known(key) {
        out.insert(key.to_owned(), string_value(origin, value));
        return Ok(());
    }
    let hint = did_you_mean(key);
    if key.starts_with("CJ_") || hint.is_some() {
        let expected = match hint {
            Some(h) => format!("a variable the station knows; did you mean {h}?"),
            None => "a variable the station knows (see sysconfig/conjure.conf)".to_owned(),
        };
        return Err(ConfigError::new(key, value, origin, expected));
    }
    Ok(())
}

/// The known name closest to `key`, when it is close (a typo).
fn did_you_mean(key: &str) -> Option<&'static str> {
    VARIABLES.iter().map(|v| (edit_distance(key, v.name), v.name)).filter(|(d, _)| *d <= 2).min().map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A line that is not an assignment, include or comment; names the variable
/// when the line starts like an assignment.
fn line_error(line: &str, origin: &str, reason: &str) -> ConfigError {
    let t = line.trim_start();
    let t = t.strip_prefix("export ").map_or(t, str::trim_start);
    if let Some((key, value)) = t.split_once('=') {
        if is_name(key) {
            return ConfigError::new(key, value.trim_end(), origin, format!("a literal value ({reason})"));
        }
    }
    ConfigError::new("", line.trim(), origin, format!("{LINE_EXPECTED}; {reason}"))
}

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

/// A shell word after quote removal.
#[derive(Debug)]
struct Word {
    text: String,
    /// Index of the `=` when the word is an assignment `NAME=...` (NAME unquoted).
    assign: Option<usize>,
}

/// Splits a line into words the way `sh` would, refusing anything that `sh`
/// would expand or run.
fn tokenize(line: &str) -> Result<Vec<Word>, &'static str> {
    const EXPANSION: &str = "$ and backquotes are not expanded here";
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            break;
        }
        if first == '&' {
            chars.next();
            if chars.next() == Some('&') {
                words.push(Word { text: "&&".into(), assign: None });
                continue;
            }
            return Err("a background & is not allowed");
        }
        let mut text = String::new();
        // Whether everything so far in this word was unquoted (for NAME=).
        let mut plain = true;
        let mut assign = None;
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' | '&' => break,
                '\'' => {
                    chars.next();
                    plain = false;
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(ch) => text.push(ch),
                            None => return Err("a closing single quote"),
                        }
                    }
                }
                '"' => {
                    chars.next();
                    plain = false;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(ch @ ('$' | '`' | '"' | '\\')) => text.push(ch),
                                Some(ch) => {
                                    text.push('\\');
                                    text.push(ch);
                                }
                                None => return Err("a closing double quote"),
                            },
                            Some('$' | '`') => return Err(EXPANSION),
                            Some(ch) => text.push(ch),
                            None => return Err("a closing double quote"),
                        }
                    }
                }
                '\\' => {
                    chars.next();
                    plain = false;
                    match chars.next() {
                        Some(ch) => text.push(ch),
                        None => return Err("no line continuation"),
                    }
                }
                '$' | '`' => return Err(EXPANSION),
                ';' | '|' | '<' | '>' | '(' | ')' => return Err("one assignment or include per line: no ; | < > ( )"),
                '=' if plain && assign.is_none() => {
                    chars.next();
                    if is_name(&text) {
                        assign = Some(text.len());
                    }
                    plain = false;
                    text.push('=');
                }
                _ => {
                    chars.next();
                    text.push(c);
                }
            }
        }
        words.push(Word { text, assign });
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<StationConfig, ConfigError> {
        StationConfig::load_from(&env(pairs), None)
    }

    fn err_env(k: &str, v: &str) -> String {
        load_env(&[(k, v)]).unwrap_err().to_string()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = StationConfig::default();
        assert_eq!(c.iface, "");
        assert_eq!(c.cluster_id, 98);
        assert_eq!(c.corecount, 1);
        assert_eq!(c.corebase, 0);
        assert_eq!(c.skip_core, None);
        assert_eq!(c.queue_offset, 0);
        assert_eq!(c.hash_mode, HashMode::IpHash);
        assert_eq!(c.queue_sets, 1);
        assert_eq!(c.queue_set, 0);
        assert_eq!(c.log_interval, Duration::from_secs(5));
        assert_eq!(c.shm_dir, PathBuf::from("/dev/shm"));
        assert_eq!(c.queue_slots, 65536);
        assert_eq!(c.slot_size, 2048);
        assert_eq!(c.record_queue_slots, 65536);
        assert_eq!(c.on_full, OnFull::Auto);
        assert_eq!(c.wait, WaitMode::Backoff);
        assert_eq!(c.balancer_core, None);
        assert_eq!(c.flow_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.flow_active_timeout, Duration::from_secs(300));
        assert_eq!(c.flow_tcp_close_timeout, Duration::from_secs(5));
        assert_eq!(c.flow_table_size, 1 << 20);
        assert_eq!(c.station_config, None);
        assert_eq!(c.origin("CJ_CORECOUNT"), "default");
        assert_eq!(c.cluster_dir(), PathBuf::from("/dev/shm/conjure-98"));
        assert_eq!(c.worker_queues(), vec![0]);
    }

    #[test]
    fn environment_values_are_read_with_origin() {
        let c = load_env(&[("CJ_CORECOUNT", "4"), ("CJ_QUEUE_OFFSET", "2"), ("CJ_ON_FULL", "DROP")]).unwrap();
        assert_eq!(c.corecount, 4);
        assert_eq!(c.on_full, OnFull::Drop);
        assert_eq!(c.worker_queues(), vec![2, 3, 4, 5]);
        assert_eq!(c.origin("CJ_CORECOUNT"), "environment");
        assert_eq!(c.origin("CJ_COREBASE"), "default");
    }

    #[test]
    fn unknown_environment_variables_are_ignored() {
        let c = load_env(&[("CJ_NOT_A_THING", "x"), ("HOME", "/root"), ("CJ_COREBSE", "7")]).unwrap();
        assert_eq!(c, StationConfig::default());
    }

    #[test]
    fn bad_values_give_one_line_messages() {
        let cases: &[(&str, &str, &str)] = &[
            ("CJ_CORECOUNT", "four", r#"CJ_CORECOUNT="four" (environment): expected a whole number from 1 to 1024"#),
            ("CJ_CORECOUNT", "0", r#"CJ_CORECOUNT="0" (environment): expected a whole number from 1 to 1024"#),
            (
                "CJ_CORECOUNT",
                "",
                r#"CJ_CORECOUNT="" (environment): expected a whole number from 1 to 1024; the value is empty"#,
            ),
            ("CJ_CLUSTER_ID", "1024", r#"CJ_CLUSTER_ID="1024" (environment): expected a whole number from 0 to 1023"#),
            ("CJ_COREBASE", "-1", r#"CJ_COREBASE="-1" (environment): expected a whole number from 0 to 4095"#),
            (
                "CJ_SKIP_CORE",
                "x",
                r#"CJ_SKIP_CORE="x" (environment): expected a core number from 0 to 4095, or -1 or empty for none"#,
            ),
            (
                "CJ_BALANCER_CORE",
                "-2",
                r#"CJ_BALANCER_CORE="-2" (environment): expected a core number from 0 to 4095, or -1 or empty for none"#,
            ),
            (
                "CJ_QUEUE_OFFSET",
                "1024",
                r#"CJ_QUEUE_OFFSET="1024" (environment): expected a whole number from 0 to 1023"#,
            ),
            (
                "ZBALANCE_HASH_MODE",
                "3",
                r#"ZBALANCE_HASH_MODE="3" (environment): expected 0, 1 or 2; 3 (fan-out + round-robin) is a zbalance_ipc mode that is not supported here"#,
            ),
            (
                "ZBALANCE_HASH_MODE",
                "4",
                r#"ZBALANCE_HASH_MODE="4" (environment): expected 0, 1 or 2; 4 (GTP hash) is a zbalance_ipc mode that is not supported here"#,
            ),
            (
                "ZBALANCE_HASH_MODE",
                "9",
                r#"ZBALANCE_HASH_MODE="9" (environment): expected 0 (round-robin), 1 (IP hash) or 2 (fan-out)"#,
            ),
            ("N_QUEUE_SETS", "17", r#"N_QUEUE_SETS="17" (environment): expected a whole number from 1 to 16"#),
            (
                "CJ_QUEUE_SET",
                "1",
                r#"CJ_QUEUE_SET="1" (environment): expected a queue set below N_QUEUE_SETS=1: a whole number from 0 to 0"#,
            ),
            (
                "CJ_LOG_INTERVAL",
                "5s",
                r#"CJ_LOG_INTERVAL="5s" (environment): expected a whole number of seconds from 0 to 86400"#,
            ),
            ("CJ_SHM_DIR", "shm", r#"CJ_SHM_DIR="shm" (environment): expected an absolute directory path"#),
            (
                "CJ_QUEUE_SLOTS",
                "1000",
                r#"CJ_QUEUE_SLOTS="1000" (environment): expected a power of two from 16 to 16777216"#,
            ),
            ("CJ_QUEUE_SLOTS", "8", r#"CJ_QUEUE_SLOTS="8" (environment): expected a power of two from 16 to 16777216"#),
            (
                "CJ_RECORD_QUEUE_SLOTS",
                "3",
                r#"CJ_RECORD_QUEUE_SLOTS="3" (environment): expected a power of two from 16 to 16777216"#,
            ),
            ("CJ_SLOT_SIZE", "100", r#"CJ_SLOT_SIZE="100" (environment): expected a multiple of 8 from 64 to 65536"#),
            ("CJ_SLOT_SIZE", "56", r#"CJ_SLOT_SIZE="56" (environment): expected a multiple of 8 from 64 to 65536"#),
            ("CJ_ON_FULL", "block", r#"CJ_ON_FULL="block" (environment): expected auto, drop or wait"#),
            ("CJ_WAIT", "spin", r#"CJ_WAIT="spin" (environment): expected busy or backoff"#),
            (
                "CJ_FLOW_IDLE_TIMEOUT",
                "0",
                r#"CJ_FLOW_IDLE_TIMEOUT="0" (environment): expected a whole number of seconds from 1 to 86400"#,
            ),
            (
                "CJ_FLOW_ACTIVE_TIMEOUT",
                "10",
                r#"CJ_FLOW_ACTIVE_TIMEOUT="10" (environment): expected a whole number of seconds from CJ_FLOW_IDLE_TIMEOUT (30) to 604800"#,
            ),
            (
                "CJ_FLOW_TCP_CLOSE_TIMEOUT",
                "3601",
                r#"CJ_FLOW_TCP_CLOSE_TIMEOUT="3601" (environment): expected a whole number of seconds from 0 to 3600"#,
            ),
            (
                "CJ_FLOW_TABLE_SIZE",
                "100",
                r#"CJ_FLOW_TABLE_SIZE="100" (environment): expected a whole number from 1024 to 67108864"#,
            ),
        ];
        for (k, v, want) in cases {
            let got = err_env(k, v);
            assert_eq!(&got, want);
            assert!(!got.contains('\n'));
        }
    }

    #[test]
    fn cross_variable_rules() {
        let e = load_env(&[("CJ_CORECOUNT", "8"), ("CJ_QUEUE_OFFSET", "1020")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"CJ_QUEUE_OFFSET="1020" (environment): expected a whole number from 0 to 1016 with CJ_CORECOUNT=8: queue numbers stop at 1023"#
        );
        let c = load_env(&[("N_QUEUE_SETS", "3"), ("CJ_QUEUE_SET", "2")]).unwrap();
        assert_eq!((c.queue_sets, c.queue_set), (3, 2));
        let c = load_env(&[("CJ_FLOW_IDLE_TIMEOUT", "10"), ("CJ_FLOW_ACTIVE_TIMEOUT", "10")]).unwrap();
        assert_eq!(c.flow_active_timeout, Duration::from_secs(10));
    }

    #[test]
    fn af_packet_ring_variables() {
        let c = StationConfig::default();
        assert_eq!((c.afp_block_size, c.afp_block_count), (1 << 20, 64));
        assert_eq!((c.afp_block_timeout, c.afp_promisc), (Duration::from_millis(10), true));
        let c = load_env(&[
            ("CJ_AFP_BLOCK_SIZE", "4096"),
            ("CJ_AFP_BLOCK_COUNT", "2"),
            ("CJ_AFP_BLOCK_TIMEOUT_MS", "1"),
            ("CJ_AFP_PROMISC", "no"),
        ])
        .unwrap();
        assert_eq!((c.afp_block_size, c.afp_block_count), (4096, 2));
        assert_eq!((c.afp_block_timeout, c.afp_promisc), (Duration::from_millis(1), false));
        // 128 MiB blocks: at most 128 of them (16 GiB).
        let c = load_env(&[("CJ_AFP_BLOCK_SIZE", "134217728"), ("CJ_AFP_BLOCK_COUNT", "128")]).unwrap();
        assert_eq!(c.afp_block_count, 128);
        let e = |vars: &[(&str, &str)]| load_env(vars).unwrap_err().to_string();
        assert_eq!(
            e(&[("CJ_AFP_BLOCK_SIZE", "5000")]),
            r#"CJ_AFP_BLOCK_SIZE="5000" (environment): expected a power of two from 4096 to 134217728"#
        );
        assert_eq!(
            e(&[("CJ_AFP_BLOCK_SIZE", "2048")]),
            r#"CJ_AFP_BLOCK_SIZE="2048" (environment): expected a power of two from 4096 to 134217728"#
        );
        assert_eq!(
            e(&[("CJ_AFP_BLOCK_COUNT", "1")]),
            r#"CJ_AFP_BLOCK_COUNT="1" (environment): expected a whole number from 2 to 16384 with CJ_AFP_BLOCK_SIZE=1048576 (at most 65536 blocks and 16 GiB per ring)"#
        );
        assert!(e(&[("CJ_AFP_BLOCK_SIZE", "134217728"), ("CJ_AFP_BLOCK_COUNT", "129")])
            .contains("from 2 to 128 with CJ_AFP_BLOCK_SIZE=134217728"));
        assert_eq!(
            e(&[("CJ_AFP_BLOCK_TIMEOUT_MS", "0")]),
            r#"CJ_AFP_BLOCK_TIMEOUT_MS="0" (environment): expected a whole number from 1 to 60000"#
        );
        assert_eq!(e(&[("CJ_AFP_PROMISC", "on")]), r#"CJ_AFP_PROMISC="on" (environment): expected yes or no"#);
        assert_eq!(
            e(&[("CJ_AFP_PROMISC", "")]),
            r#"CJ_AFP_PROMISC="" (environment): expected yes or no; the value is empty"#
        );
    }

    #[test]
    fn skip_core_empty_or_minus_one_is_none_never_zero() {
        assert_eq!(load_env(&[("CJ_SKIP_CORE", "")]).unwrap().skip_core, None);
        assert_eq!(load_env(&[("CJ_SKIP_CORE", "-1")]).unwrap().skip_core, None);
        assert_eq!(load_env(&[("CJ_SKIP_CORE", "0")]).unwrap().skip_core, Some(0));
        assert_eq!(load_env(&[("CJ_SKIP_CORE", "3")]).unwrap().skip_core, Some(3));
        assert_eq!(load_env(&[("CJ_BALANCER_CORE", "")]).unwrap().balancer_core, None);
        assert_eq!(load_env(&[("CJ_BALANCER_CORE", "2")]).unwrap().balancer_core, Some(2));
    }

    #[test]
    fn station_config_empty_is_none() {
        assert_eq!(load_env(&[("CJ_STATION_CONFIG", "")]).unwrap().station_config, None);
        assert_eq!(
            load_env(&[("CJ_STATION_CONFIG", "/etc/station.toml")]).unwrap().station_config,
            Some(PathBuf::from("/etc/station.toml"))
        );
    }

    #[test]
    fn file_values_carry_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "c.conf",
            "# comment\n\nCJ_CORECOUNT=2\nexport CJ_COREBASE=\"3\"   # trailing comment\n  CJ_CLUSTER_ID='12'\nCJ_SHM_DIR=/tmp/x#notacomment\n",
        );
        let c = StationConfig::load_from(&[], Some(&p)).unwrap();
        assert_eq!((c.corecount, c.corebase, c.cluster_id), (2, 3, 12));
        assert_eq!(c.shm_dir, PathBuf::from("/tmp/x#notacomment"));
        assert_eq!(c.origin("CJ_CORECOUNT"), format!("{}:3", p.display()));
        assert_eq!(c.origin("CJ_COREBASE"), format!("{}:4", p.display()));
        assert_eq!(c.origin("CJ_CLUSTER_ID"), format!("{}:5", p.display()));

        let p = write(d.path(), "bad.conf", "\nCJ_CORECOUNT=four\n");
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(r#"CJ_CORECOUNT="four" ({}:2): expected a whole number from 1 to 1024"#, p.display())
        );
    }

    #[test]
    fn environment_beats_file_beats_default() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "c.conf", "CJ_CORECOUNT=2\nCJ_COREBASE=5\n");
        let c = StationConfig::load_from(&env(&[("CJ_CORECOUNT", "3")]), Some(&p)).unwrap();
        assert_eq!(c.corecount, 3);
        assert_eq!(c.origin("CJ_CORECOUNT"), "environment");
        assert_eq!(c.corebase, 5);
        assert_eq!(c.cluster_id, 98);
        // A bad file value is reported even if ... no: the environment replaces it.
        let p = write(d.path(), "c2.conf", "CJ_CORECOUNT=zero\n");
        assert_eq!(StationConfig::load_from(&env(&[("CJ_CORECOUNT", "3")]), Some(&p)).unwrap().corecount, 3);
        // Later lines win inside a file.
        let p = write(d.path(), "c3.conf", "CJ_CORECOUNT=2\nCJ_CORECOUNT=6\n");
        let c = StationConfig::load_from(&[], Some(&p)).unwrap();
        assert_eq!(c.corecount, 6);
        assert_eq!(c.origin("CJ_CORECOUNT"), format!("{}:2", p.display()));
    }

    #[test]
    fn quotes_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "q.conf",
            "CJ_IFACE='sim:flows=10,packets=20'\nCJ_STATION_CONFIG=\"/etc/a b.toml\"\nCJ_IP4_ADDR=\"a\\\"b\" CJ_IP6_ADDR=x'y'z\nCJ_SHM_DIR=\n",
        );
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
        // CJ_SHM_DIR= (empty) is not an absolute path.
        assert_eq!(e.to_string(), format!(r#"CJ_SHM_DIR="" ({}:4): expected an absolute directory path"#, p.display()));
        let p = write(
            d.path(),
            "q2.conf",
            "CJ_IFACE='sim:flows=10,packets=20'\nCJ_STATION_CONFIG=\"/etc/a b.toml\"\nCJ_IP4_ADDR=\"a\\\"b\" CJ_IP6_ADDR=x'y'z\n",
        );
        let c = StationConfig::load_from(&[], Some(&p)).unwrap();
        assert_eq!(c.iface, "sim:flows=10,packets=20");
        assert_eq!(c.station_config, Some(PathBuf::from("/etc/a b.toml")));
        assert_eq!(c.origin("CJ_IP6_ADDR"), format!("{}:3", p.display()));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let cases: &[(&str, &str)] = &[
            (
                "CJ_IFACE=$(hostname)\n",
                r#"CJ_IFACE="$(hostname)" ({F}:1): expected a literal value ($ and backquotes are not expanded here)"#,
            ),
            (
                "CJ_IFACE=\"$IF\"\n",
                r#"CJ_IFACE="\"$IF\"" ({F}:1): expected a literal value ($ and backquotes are not expanded here)"#,
            ),
            (
                "\nhello world\n",
                r#"{F}:2: "hello world": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run)"#,
            ),
            (
                "CJ_CORECOUNT = 2\n",
                r#"{F}:1: "CJ_CORECOUNT = 2": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run)"#,
            ),
            (
                "CJ_CORECOUNT=2; CJ_COREBASE=1\n",
                r#"CJ_CORECOUNT="2; CJ_COREBASE=1" ({F}:1): expected a literal value (one assignment or include per line: no ; | < > ( ))"#,
            ),
            ("CJ_IFACE='eth0\n", r#"CJ_IFACE="'eth0" ({F}:1): expected a literal value (a closing single quote)"#),
            (
                "CJ_COREBSE=2\n",
                r#"CJ_COREBSE="2" ({F}:1): expected a variable the station knows; did you mean CJ_COREBASE?"#,
            ),
            (
                "CJ_FROBNICATE=2\n",
                r#"CJ_FROBNICATE="2" ({F}:1): expected a variable the station knows (see sysconfig/conjure.conf)"#,
            ),
            (
                "N_QUEUE_SET=2\n",
                r#"N_QUEUE_SET="2" ({F}:1): expected a variable the station knows; did you mean N_QUEUE_SETS?"#,
            ),
            (
                "CJ_CORECOUNT=2 make\n",
                r#"{F}:1: "CJ_CORECOUNT=2 make": expected NAME=VALUE, a # comment, ". FILE" or "[ -f FILE ] && . FILE" (nothing is expanded or run)"#,
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let p = write(d.path(), &format!("s{i}.conf"), text);
            let got = StationConfig::load_from(&[], Some(&p)).unwrap_err().to_string();
            assert_eq!(got, want.replace("{F}", &p.display().to_string()), "case {i}");
        }
    }

    #[test]
    fn unknown_non_station_names_in_a_file_are_ignored() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "o.conf", "LD_LIBRARY_PATH=/usr/local/lib\nexport GOPATH=/go\n");
        assert_eq!(StationConfig::load_from(&[], Some(&p)).unwrap().corecount, 1);
    }

    #[test]
    fn includes_guarded_and_plain() {
        let d = tempfile::tempdir().unwrap();
        let over = write(d.path(), "over.conf", "CJ_CORECOUNT=7\n");
        let missing = d.path().join("missing.conf");
        let main = write(
            d.path(),
            "main.conf",
            &format!(
                "CJ_CORECOUNT=1\nCJ_COREBASE=2\n[ -f {} ] && . {}\n[ -r {} ] && . {}\ntest -e '{}' && source \"{}\"\n",
                over.display(),
                over.display(),
                missing.display(),
                missing.display(),
                missing.display(),
                missing.display()
            ),
        );
        let c = StationConfig::load_from(&[], Some(&main)).unwrap();
        assert_eq!(c.corecount, 7);
        assert_eq!(c.origin("CJ_CORECOUNT"), format!("{}:1", over.display()));
        assert_eq!(c.origin("CJ_COREBASE"), format!("{}:2", main.display()));

        let plain = write(d.path(), "plain.conf", &format!(". {}\nsource {}\n", over.display(), over.display()));
        assert_eq!(StationConfig::load_from(&[], Some(&plain)).unwrap().corecount, 7);

        // An unguarded include of a missing file fails, as in sh.
        let bad = write(d.path(), "bad.conf", &format!("\n. {}\n", missing.display()));
        let e = StationConfig::load_from(&[], Some(&bad)).unwrap_err();
        assert_eq!(e.origin, format!("{}:2", bad.display()));
        assert!(e.expected.contains("existing file"), "{e}");

        // The guard must test the file it includes.
        let odd = write(d.path(), "odd.conf", &format!("[ -f {} ] && . {}\n", over.display(), missing.display()));
        assert!(StationConfig::load_from(&[], Some(&odd)).unwrap_err().expected.contains("testing the file"));
    }

    #[test]
    fn include_loops_and_depth_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.conf");
        let b = d.path().join("b.conf");
        write(d.path(), "a.conf", &format!("CJ_CORECOUNT=2\n. {}\n", b.display()));
        write(d.path(), "b.conf", &format!("[ -f {} ] && . {}\n", a.display(), a.display()));
        let e = StationConfig::load_from(&[], Some(&a)).unwrap_err();
        assert_eq!(e.origin, format!("{}:1", b.display()));
        assert!(e.expected.contains("loop"), "{e}");

        // A chain deeper than the limit.
        for i in 0..=MAX_INCLUDE_DEPTH {
            let next = d.path().join(format!("d{}.conf", i + 1));
            write(d.path(), &format!("d{i}.conf"), &format!("[ -f {} ] && . {}\n", next.display(), next.display()));
        }
        let e = StationConfig::load_from(&[], Some(&d.path().join("d0.conf"))).unwrap_err();
        assert!(e.expected.contains("nested at most"), "{e}");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let e = StationConfig::load_from(&[], Some(Path::new("/nonexistent/conjure.conf"))).unwrap_err();
        assert_eq!(e.var, "--config");
        assert_eq!(e.origin, "command line");
        assert!(e
            .to_string()
            .starts_with(r#"--config="/nonexistent/conjure.conf" (command line): expected a readable file"#));
    }

    #[test]
    fn a_config_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo.conf");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, kind) in
            [(fifo.as_path(), "FIFO"), (Path::new("/dev/zero"), "character device"), (d.path(), "directory")]
        {
            let e = StationConfig::load_from(&[], Some(path)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    r#"--config={:?} (command line): expected a readable file ({} is a {kind}, not a regular file: name a regular file)"#,
                    path.display().to_string(),
                    path.display()
                )
            );
        }
        // An include of one, unguarded or guarded by -e / -r (a -f guard skips it, as in sh).
        for line in [format!(". {}", fifo.display()), format!("[ -r {0} ] && . {0}", fifo.display())] {
            let p = write(d.path(), "inc.conf", &format!("CJ_CORECOUNT=2\n{line}\n"));
            let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
            assert_eq!(e.origin, format!("{}:2", p.display()));
            assert!(e.to_string().contains(&format!("{} is a FIFO, not a regular file", fifo.display())), "{e}");
            assert!(!e.to_string().contains('\n'));
        }
        let p = write(d.path(), "guarded.conf", &format!("CJ_CORECOUNT=2\n[ -f {0} ] && . {0}\n", fifo.display()));
        assert_eq!(StationConfig::load_from(&[], Some(&p)).unwrap().corecount, 2);
        let p = write(d.path(), "zero.conf", "[ -e /dev/zero ] && . /dev/zero\n");
        assert!(StationConfig::load_from(&[], Some(&p))
            .unwrap_err()
            .to_string()
            .contains("/dev/zero is a character device"));
    }

    #[test]
    fn a_config_file_larger_than_one_mebibyte_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = write(d.path(), "big.conf", &"# padding\n".repeat((MAX_CONFIG_FILE_BYTES / 10 + 1) as usize));
        let e = StationConfig::load_from(&[], Some(&big)).unwrap_err().to_string();
        assert!(e.contains(&format!("{} is larger than 1 MiB (1048576 bytes)", big.display())), "{e}");
        let p = write(d.path(), "inc.conf", &format!(". {}\n", big.display()));
        let e = StationConfig::load_from(&[], Some(&p)).unwrap_err();
        assert_eq!(e.origin, format!("{}:1", p.display()));
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
        // Exactly the limit is read.
        let mut text = "# padding\n".repeat((MAX_CONFIG_FILE_BYTES / 10) as usize);
        text.push_str(&"#".repeat((MAX_CONFIG_FILE_BYTES as usize) - text.len() - 1));
        text.push('\n');
        let edge = write(d.path(), "edge.conf", &text);
        assert_eq!(std::fs::metadata(&edge).unwrap().len(), MAX_CONFIG_FILE_BYTES);
        assert!(StationConfig::load_from(&[], Some(&edge)).is_ok());
        let bin = d.path().join("bin.conf");
        std::fs::write(&bin, [0xff, 0xfe, b'\n']).unwrap();
        assert!(StationConfig::load_from(&[], Some(&bin)).unwrap_err().to_string().contains("is not UTF-8 text"));
    }

    #[test]
    fn parse_conf_text_gives_the_last_assignment_with_its_line() {
        let v =
            parse_conf_text(Path::new("t.conf"), "CJ_CORECOUNT=2\nCJ_CORECOUNT=3\nCJ_COREBASE=1\nOTHER=x\n").unwrap();
        assert_eq!(
            v,
            [
                ("CJ_COREBASE".to_owned(), "1".to_owned(), "t.conf:3".to_owned()),
                ("CJ_CORECOUNT".to_owned(), "3".to_owned(), "t.conf:2".to_owned())
            ]
        );
        assert!(parse_conf_text(Path::new("t.conf"), "x y\n").is_err());
    }

    #[test]
    fn the_app_row_limit_has_a_default_and_a_range() {
        assert_eq!(StationConfig::default().app_max_rows, 1_000_000);
        assert_eq!(load_env(&[("CJ_APP_MAX_ROWS", "10")]).unwrap().app_max_rows, 10);
        assert_eq!(
            err_env("CJ_APP_MAX_ROWS", "0"),
            r#"CJ_APP_MAX_ROWS="0" (environment): expected a whole number from 1 to 1000000000"#
        );
    }

    #[test]
    fn resolved_lists_every_variable_with_its_value_as_given_and_its_origin() {
        let env = vec![("CJ_WAIT".to_owned(), "Busy".to_owned())];
        let c = StationConfig::load_from(&env, None).unwrap();
        let all: Vec<_> = c.resolved().collect();
        assert_eq!(all.len(), VARIABLES.len());
        // Every variable is read by the loader (none falls back to the table's default unseen).
        for v in VARIABLES {
            assert!(c.values.contains_key(v.name), "{} is not read by the loader", v.name);
        }
        assert!(all.contains(&("CJ_WAIT", "Busy", "environment")));
        assert!(all.contains(&("CJ_CLUSTER_ID", "98", "default")));
    }

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

    #[test]
    fn source_kinds() {
        let with = |iface: &str| StationConfig { iface: iface.to_owned(), ..StationConfig::default() };
        assert_eq!(with("eth0").source().unwrap(), SourceSpec::Interfaces(vec!["eth0".into()]));
        assert_eq!(with("eth1,eth2").source().unwrap(), SourceSpec::Interfaces(vec!["eth1".into(), "eth2".into()]));
        assert_eq!(with("pfring:eth0").source().unwrap(), SourceSpec::PfRing("eth0".into()));
        assert_eq!(with("zc:99@0").source().unwrap(), SourceSpec::Zc("99@0".into()));
        let SourceSpec::Sim(s) = with("sim:flows=10,packets=100").source().unwrap() else { panic!() };
        assert_eq!((s.flows, s.packets), (10, 100));
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "x.pcap", "x");
        assert_eq!(with(&format!("pcap:{}", p.display())).source().unwrap(), SourceSpec::Pcap(p));
    }

    #[test]
    fn source_errors() {
        let with = |iface: &str| StationConfig { iface: iface.to_owned(), ..StationConfig::default() };
        let e = |iface: &str| with(iface).source().unwrap_err().to_string();
        assert_eq!(e(""), r#"CJ_IFACE="" (default): expected a source: pcap:FILE, sim:SPEC or an interface name"#);
        assert_eq!(
            e("pcap:/nonexistent.pcap"),
            r#"CJ_IFACE="pcap:/nonexistent.pcap" (default): expected an existing pcap/pcapng file"#
        );
        assert_eq!(e("pcap:/tmp"), r#"CJ_IFACE="pcap:/tmp" (default): expected an existing pcap/pcapng file"#);
        assert!(e("sim:bogus=1").starts_with(r#"CJ_IFACE="sim:bogus=1" (default): expected a key among flows"#));
        assert_eq!(with("containers").source().unwrap(), SourceSpec::Containers);
        assert!(e("containers:x").contains("containers or interface names"));
        assert!(e("foo:bar").contains("'foo:' is not a source kind"));
        assert_eq!(
            e("averyveryverylongname"),
            r#"CJ_IFACE="averyveryverylongname" (default): expected interface names separated by commas, each 1 to 15 characters without '/', ':' or whitespace"#
        );
        assert!(e("eth0,").contains("interface names"));
        assert_eq!(
            e("eth1,eth2,eth1"),
            r#"CJ_IFACE="eth1,eth2,eth1" (default): expected each interface once; eth1 is listed twice (every frame of it would be counted twice): remove the repeat"#
        );
        assert!(e("a/b").contains("interface names"));
        assert!(e("zc:").contains("zc:IF"));
        let c = StationConfig::load_from(&env(&[("CJ_IFACE", "")]), None).unwrap();
        assert!(c.source().unwrap_err().to_string().contains("(environment)"));
    }

    #[test]
    fn args_config() {
        let a = |v: &[&str]| parse_args_config(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(a(&["prog"]), None);
        assert_eq!(a(&["prog", "--config", "x.conf"]), Some(PathBuf::from("x.conf")));
        assert_eq!(a(&["prog", "--config=y.conf", "-v"]), Some(PathBuf::from("y.conf")));
        assert_eq!(a(&["prog", "--config=a", "--config", "b"]), Some(PathBuf::from("b")));
        assert_eq!(a(&["prog", "--config"]), None);
        assert_eq!(a(&["prog", "--", "--config", "z"]), None);
    }

    #[test]
    fn tokenizer_is_shell_like() {
        let w = tokenize(r#"export A="x y" B='$z' C=a\ b # c"#).unwrap();
        let t: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(t, ["export", "A=x y", "B=$z", "C=a b"]);
        assert!(w[1].assign.is_some() && w[0].assign.is_none());
        // A quoted name is not an assignment in sh.
        assert!(tokenize(r#""A"=1"#).unwrap()[0].assign.is_none());
        assert!(tokenize("A=`x`").is_err());
        assert!(tokenize("a & b").is_err());
    }
}

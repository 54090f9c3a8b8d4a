//! conjure.conf loading and validation.
//!
//! Every variable the station reads is listed in [`VARIABLES`] with its default;
//! `sysconfig/conjure.conf` holds the same list. Values come from three layers,
//! later ones winning: the defaults, a `--config FILE`, then the environment
//! (only variables in [`VARIABLES`] are read from it). Every value keeps its
//! origin (`default`, `FILE:LINE` or `environment`) so that an error can say
//! where a bad value came from.
//!
//! # Where to look
//!
//! One concern per file, so a variable can be followed from name to use:
//!
//! | file             | holds                                                                  |
//! |------------------|------------------------------------------------------------------------|
//! | `variables.rs`   | [`VARIABLES`]: every name, its default, group and one-line meaning     |
//! | `file.rs`        | the `--config` reader (a shell subset with includes), [`read_bounded`], [`open_operator_file`] |
//! | `mod.rs`         | the three layers merged, [`StationConfig`] and its enums               |
//! | `validate.rs`    | the check of each value (range, choice, cross-variable rules)          |
//! | `source.rs`      | [`SourceSpec`]: `CJ_IFACE` parsed by [`StationConfig::source`]         |
//!
//! A variable is read into a [`StationConfig`] field in `validate.rs`
//! (`Raw::into_config`, one line per variable, in table order) and used
//! through that field (`grep` the field name across the workspace).
//!
//! # Why no `config` crate
//!
//! The merge is three ordered maps, one `extend` each. The `config` crate
//! (crates.io) was used for that alone, and what it is good at does not apply
//! here: its file formats (TOML, YAML, JSON, INI) are not the shell subset that
//! `sh` must also source, its environment source reads a prefix while the
//! station reads exact names (`ZBALANCE_HASH_MODE`, `N_QUEUE_SETS`), and its
//! serde deserialisation would replace the errors below (value, origin, range
//! and the cross-variable rules) with its own. So it is not used.
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

mod file;
mod source;
mod validate;
mod variables;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use file::{parse_conf_text, read_bounded, ConfFileError, MAX_CONFIG_FILE_BYTES, MAX_INCLUDE_DEPTH};
pub use source::{open_capture, SourceSpec};
pub use validate::EXPORT_RATE_RANGE;
pub use variables::{Variable, VARIABLES};
// The opener of every file the operator names (configuration, settings, divert rules).
pub use file::{excerpt, open_operator_file, EXCERPT_CHARS};

use variables::is_known;

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
    /// The error for `var`=`value` (from `origin`), which should have been `expected`.
    pub fn new(var: &str, value: &str, origin: &str, expected: impl Into<String>) -> Self {
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

/// CJ_EXPORT_BEHIND: what a paced export (CJ_EXPORT_RATE) does when it holds
/// as many records as it may and more come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportBehind {
    /// cj-app takes records only as fast as it sends them: the record queues
    /// hold the rest back, and their backpressure reaches the detector and
    /// the balancer (the default).
    Wait,
    /// cj-app takes records at full speed (its tables and files stay exact)
    /// and drops the export of those that do not fit, counted.
    Drop,
}

impl ExportBehind {
    /// The value as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            ExportBehind::Wait => "wait",
            ExportBehind::Drop => "drop",
        }
    }
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

/// A value as given, with where it came from (`default`, `FILE:LINE`,
/// `environment`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Given {
    value: String,
    origin: String,
}

impl Given {
    fn new(value: &str, origin: &str) -> Self {
        Self { value: value.to_owned(), origin: origin.to_owned() }
    }
}

/// One layer of values (defaults, a file, the environment), by variable name.
type Layer = BTreeMap<String, Given>;

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
    /// CJ_WATCHDOG_SEC: outside systemd, a process whose loop makes no
    /// progress this long exits (`station::notify`); None: off.
    pub watchdog: Option<Duration>,
    /// CJ_SHM_DIR
    pub shm_dir: PathBuf,
    /// CJ_GROUP, resolved to a gid (None: empty); hand it to
    /// `shmq::files::set_group` at start.
    pub group: Option<u32>,
    /// CJ_QUEUE_SLOTS
    pub queue_slots: u32,
    /// CJ_SLOT_SIZE in force (`auto` resolved: [`crate::slot::SNAP_SLOT_SIZE`],
    /// or [`crate::slot::DIVERT_SLOT_SIZE`] with `CJ_TUN=yes`).
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
    /// CJ_FILTER, raw (empty: none); compiled by cj-balancer, the one process
    /// that captures (libpcap's compiler, see balancer/src/filter).
    pub filter: String,
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
    /// CJ_DECAP: the tunnels whose packets the detector accounts as their
    /// inner flow (`wire::tunnel`); off by default.
    pub decap: wire::tunnel::Decap,
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
    /// CJ_EXPORT_RATE: the most data records per second the export sends
    /// each collector (`None`: unpaced, the value 0 or empty); see
    /// [`EXPORT_RATE_RANGE`].
    pub export_rate: Option<u32>,
    /// CJ_EXPORT_BEHIND: a paced export that holds its bound either holds
    /// the intake back (`Wait`, the default) or drops the export of what does
    /// not fit, counted (`Drop`); no effect unpaced.
    pub export_behind: ExportBehind,
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
        // Later layers replace earlier ones, variable by variable: three ordered
        // maps, merged here by hand (see "Why no `config` crate" in the module doc).
        let mut merged: Layer =
            VARIABLES.iter().map(|v| (v.name.to_owned(), Given::new(v.default, "default"))).collect();
        if let Some(path) = config_file {
            merged.extend(file::read_conf_file(path)?);
        }
        merged.extend(env.iter().filter(|(k, _)| is_known(k)).map(|(k, v)| (k.clone(), Given::new(v, "environment"))));
        validate::Raw::new(merged).into_config()
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

/// Helpers of the tests of every configuration module.
#[cfg(test)]
mod test_support {
    use super::*;
    use std::io::Write as _;

    pub(super) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    pub(super) fn load_env(pairs: &[(&str, &str)]) -> Result<StationConfig, ConfigError> {
        StationConfig::load_from(&env(pairs), None)
    }

    pub(super) fn err_env(k: &str, v: &str) -> String {
        load_env(&[(k, v)]).unwrap_err().to_string()
    }

    pub(super) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
        assert_eq!(c.watchdog, None);
        assert_eq!(c.log_interval, Duration::from_secs(5));
        assert_eq!(c.shm_dir, PathBuf::from("/dev/shm"));
        assert_eq!(c.queue_slots, 65536);
        assert_eq!(c.slot_size, 256);
        assert_eq!(c.record_queue_slots, 65536);
        assert_eq!(c.on_full, OnFull::Auto);
        assert_eq!(c.wait, WaitMode::Backoff);
        assert_eq!(c.balancer_core, None);
        assert_eq!(c.flow_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.flow_active_timeout, Duration::from_secs(300));
        assert_eq!(c.flow_tcp_close_timeout, Duration::from_secs(5));
        assert_eq!(c.flow_table_size, 1 << 20);
        assert!(c.decap.is_off());
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
}

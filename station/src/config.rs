//! conjure.conf loading and validation. (CONTRACT STUB: types fixed; bodies to be implemented.)
#![allow(clippy::todo, unused_variables)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration value that is wrong, with where it came from and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?} ({origin}): expected {expected}")]
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

/// What CJ_IFACE names.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// `pcap:FILE`
    Pcap(PathBuf),
    /// `sim:SPEC`
    Sim(crate::sim::SimSpec),
    /// `eth0` or `eth1,eth2` (AF_PACKET)
    Interfaces(Vec<String>),
    /// `pfring:IF`
    PfRing(String),
    /// `zc:IF`
    Zc(String),
}

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
    /// CJ_FLOW_IDLE_TIMEOUT
    pub flow_idle_timeout: Duration,
    /// CJ_FLOW_ACTIVE_TIMEOUT
    pub flow_active_timeout: Duration,
    /// CJ_FLOW_TCP_CLOSE_TIMEOUT
    pub flow_tcp_close_timeout: Duration,
    /// CJ_FLOW_TABLE_SIZE
    pub flow_table_size: u32,
    /// CJ_STATION_CONFIG
    pub station_config: Option<PathBuf>,
}

impl StationConfig {
    /// Loads from the process environment and an optional `--config` file.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        todo!()
    }
    /// Loads from the given environment pairs and an optional file (defaults < file < environment).
    ///
    /// # Errors
    /// The first invalid value.
    pub fn load_from(env: &[(String, String)], config_file: Option<&Path>) -> Result<Self, ConfigError> {
        todo!()
    }
    /// Parses and checks CJ_IFACE.
    ///
    /// # Errors
    /// Empty, unknown prefix, missing pcap file, bad sim spec.
    pub fn source(&self) -> Result<SourceSpec, ConfigError> {
        todo!()
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

/// Finds `--config FILE` or `--config=FILE` in the arguments.
pub fn parse_args_config(args: &[String]) -> Option<PathBuf> {
    todo!()
}

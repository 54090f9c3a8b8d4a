//! The check of each value: `Raw::into_config` reads every variable of
//! [`VARIABLES`] from the merged layers, in the table's order, and turns it into
//! its [`StationConfig`] field, or into a [`ConfigError`] naming the variable,
//! the value as given, its origin and what would be accepted.
//!
//! # Guarantees
//!
//! Each value is checked on its own (range, power of two, choice) and against
//! the variables read before it (`CJ_QUEUE_OFFSET + CJ_CORECOUNT <= 1024`,
//! `CJ_QUEUE_SET < N_QUEUE_SETS`, active timeout at least the idle one, the
//! AF_PACKET ring at most 16 GiB); the first bad one is the error. One rule
//! looks ahead: `CJ_SLOT_SIZE` is checked in its place, but `auto` is resolved
//! and the size checked against flow divert once `CJ_TUN` is read. Every
//! variable's value as given and its origin are kept for
//! [`StationConfig::resolved`], also those only the scripts use.
//!
//! # Not guaranteed
//!
//! `CJ_IFACE` (see `source.rs`), `CJ_METRICS_ADDR` and `CJ_EXPORT` are kept
//! raw here and checked by the process that uses them. `CJ_GROUP` names a
//! group of this host at load time; a group removed later is not noticed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, ExportBehind, HashMode, Layer, OnFull, StationConfig, WaitMode, VARIABLES};

/// Largest AF_PACKET ring per interface (CJ_AFP_BLOCK_SIZE x CJ_AFP_BLOCK_COUNT).
const MAX_AFP_RING_BYTES: u64 = 16 << 30;

/// Largest CJ_APP_MAX_ROWS.
const MAX_APP_ROWS: u64 = 1_000_000_000;

/// CJ_EXPORT_RATE's range when it paces (0 or empty: unpaced), in data
/// records per second. Below 100 a paced checkpoint could wait seconds for a
/// handful of records (cj-app's export holds a tenth of a second of them, at
/// least 64); above a million the backlog's memory (a tenth of a second, about
/// 9 MB there) stops being small, and a collector that takes that much needs
/// no pacing.
pub const EXPORT_RATE_RANGE: std::ops::RangeInclusive<u32> = 100..=1_000_000;

/// Highest core number accepted in core variables.
const MAX_CORE: u64 = 4095;

/// The merged values, read one variable at a time.
pub(super) struct Raw {
    map: Layer,
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
    pub(super) fn new(map: Layer) -> Self {
        Self { map, origins: BTreeMap::new(), values: BTreeMap::new() }
    }

    fn get(&mut self, var: &'static str) -> Item {
        let (value, origin) = match self.map.get(var) {
            Some(given) => (given.value.clone(), given.origin.clone()),
            None => (String::new(), "default".to_owned()),
        };
        self.origins.insert(var.to_owned(), origin.clone());
        self.values.insert(var.to_owned(), value.clone());
        Item { var, value, origin }
    }

    pub(super) fn into_config(mut self) -> Result<StationConfig, ConfigError> {
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
        let watchdog = Some(self.get("CJ_WATCHDOG_SEC").secs(0, 3600)?).filter(|d| !d.is_zero());
        let item = self.get("CJ_SHM_DIR");
        let shm_dir = PathBuf::from(item.value.trim());
        if !shm_dir.is_absolute() {
            return Err(item.err("an absolute directory path"));
        }
        let group = parse_group(&self.get("CJ_GROUP"))?;
        let queue_slots = self.get("CJ_QUEUE_SLOTS").pow2(16, 1 << 24)?;
        // `auto` is resolved once CJ_TUN is read (below).
        let slot_item = self.get("CJ_SLOT_SIZE");
        let slot_given = parse_slot_size(&slot_item)?;
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
        let filter = self.get("CJ_FILTER").value.trim().to_owned();
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
        let item = self.get("CJ_DECAP");
        let decap = wire::tunnel::Decap::parse(&item.value).map_err(|e| item.err(e.to_string()))?;
        let sc = self.get("CJ_STATION_CONFIG").value;
        let station_config = (!sc.trim().is_empty()).then(|| PathBuf::from(sc.trim()));
        let app_max_rows = self.get("CJ_APP_MAX_ROWS").num(1, MAX_APP_ROWS)?;
        let metrics_addr = self.get("CJ_METRICS_ADDR").value.trim().to_owned();
        let export = self.get("CJ_EXPORT").value.trim().to_owned();
        let export_rate = parse_export_rate(&self.get("CJ_EXPORT_RATE"))?;
        let export_behind = parse_export_behind(&self.get("CJ_EXPORT_BEHIND"))?;
        let tun = self.get("CJ_TUN").choice(&[("yes", true), ("no", false)])?;
        let slot_size = resolve_slot_size(&slot_item, slot_given, tun)?;
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
            watchdog,
            shm_dir,
            group,
            queue_slots,
            slot_size,
            record_queue_slots,
            on_full,
            wait,
            balancer_core,
            afp_block_size,
            afp_block_count,
            afp_block_timeout,
            afp_promisc,
            filter,
            flow_idle_timeout,
            flow_active_timeout,
            flow_tcp_close_timeout,
            flow_table_size,
            refresh,
            decap,
            station_config,
            app_max_rows,
            metrics_addr,
            export,
            export_rate,
            export_behind,
            tun,
            tun_offset,
            divert_rules,
            origins: self.origins,
            values: self.values,
        })
    }
}

/// CJ_EXPORT_RATE: `None` (unpaced) for 0 or empty, else data records per
/// second in [`EXPORT_RATE_RANGE`].
fn parse_export_rate(item: &Item) -> Result<Option<u32>, ConfigError> {
    let t = item.value.trim();
    if t.is_empty() || t == "0" {
        return Ok(None);
    }
    let (lo, hi) = (*EXPORT_RATE_RANGE.start(), *EXPORT_RATE_RANGE.end());
    let expected = format!(
        "data records per second from {lo} to {hi} (what the CJ_EXPORT collectors take), or 0 or empty for no pacing"
    );
    item.num_expected(u64::from(lo), u64::from(hi), &expected).map(|n| Some(n as u32))
}

/// CJ_EXPORT_BEHIND: `wait` or `drop` (any case, spaces around ignored).
fn parse_export_behind(item: &Item) -> Result<ExportBehind, ConfigError> {
    let t = item.value.trim();
    [ExportBehind::Wait, ExportBehind::Drop].into_iter().find(|b| b.name().eq_ignore_ascii_case(t)).ok_or_else(|| {
        item.err(
            "wait (a paced export holds the intake back to CJ_EXPORT_RATE) or drop (the app keeps taking records \
             and drops, counted, the export of those that do not fit)",
        )
    })
}

/// CJ_SLOT_SIZE as given: `auto` (None) or a multiple of 8 in 64..=65536.
fn parse_slot_size(item: &Item) -> Result<Option<u32>, ConfigError> {
    if item.value.trim().eq_ignore_ascii_case("auto") {
        return Ok(None);
    }
    let expected = "auto or a multiple of 8 from 64 to 65536";
    let n = item.num_expected(64, 65_536, expected)?;
    if n % 8 != 0 {
        return Err(item.err(expected));
    }
    Ok(Some(n as u32))
}

/// The slot size in force: `auto` is a snap length without flow divert and
/// whole frames with it; an explicit size must hold whole frames with divert.
fn resolve_slot_size(item: &Item, given: Option<u32>, tun: bool) -> Result<u32, ConfigError> {
    use crate::slot::{DIVERT_MIN_SLOT_SIZE, DIVERT_SLOT_SIZE, SNAP_SLOT_SIZE};
    match given {
        None if tun => Ok(DIVERT_SLOT_SIZE),
        None => Ok(SNAP_SLOT_SIZE),
        Some(n) if tun && n < DIVERT_MIN_SLOT_SIZE => Err(item.err(format!(
            "auto or a multiple of 8 from {DIVERT_MIN_SLOT_SIZE} to 65536 with CJ_TUN=yes: the divert writes \
             whole frames to the tun device, and a slot of {n} bytes cuts frames at {} bytes",
            n - crate::slot::SLOT_OVERHEAD
        ))),
        Some(n) => Ok(n),
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

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

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
            (
                "CJ_SLOT_SIZE",
                "100",
                r#"CJ_SLOT_SIZE="100" (environment): expected auto or a multiple of 8 from 64 to 65536"#,
            ),
            (
                "CJ_SLOT_SIZE",
                "56",
                r#"CJ_SLOT_SIZE="56" (environment): expected auto or a multiple of 8 from 64 to 65536"#,
            ),
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
    fn slot_size_auto_is_a_snap_length_without_divert_and_whole_frames_with_it() {
        let slot = |vars: &[(&str, &str)]| load_env(vars).map(|c| c.slot_size);
        assert_eq!(slot(&[]), Ok(256));
        assert_eq!(slot(&[("CJ_SLOT_SIZE", "AUTO")]), Ok(256));
        assert_eq!(slot(&[("CJ_TUN", "yes")]), Ok(2048));
        assert_eq!(slot(&[("CJ_SLOT_SIZE", "512")]), Ok(512));
        assert_eq!(slot(&[("CJ_SLOT_SIZE", "1552"), ("CJ_TUN", "yes")]), Ok(1552));
        assert_eq!(slot(&[("CJ_SLOT_SIZE", "9216"), ("CJ_TUN", "yes")]), Ok(9216));
        let e = load_env(&[("CJ_SLOT_SIZE", "256"), ("CJ_TUN", "yes")]).unwrap_err().to_string();
        assert_eq!(
            e,
            r#"CJ_SLOT_SIZE="256" (environment): expected auto or a multiple of 8 from 1552 to 65536 with CJ_TUN=yes: the divert writes whole frames to the tun device, and a slot of 256 bytes cuts frames at 232 bytes"#
        );
        // The value as given is kept (`--print-config` shows `auto`), the size in force is resolved.
        let c = load_env(&[]).unwrap();
        assert_eq!(c.resolved().find(|(n, _, _)| *n == "CJ_SLOT_SIZE").map(|(_, v, _)| v), Some("auto"));
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
    fn decap_is_off_by_default_and_names_tunnels_with_ports() {
        use wire::tunnel::Decap;
        let c = load_env(&[("CJ_DECAP", "vxlan:8472,geneve,gre,ipip")]).unwrap();
        assert_eq!(c.decap, Decap { vxlan: Some(8472), geneve: Some(6081), gre: true, ipip: true });
        assert_eq!(c.origin("CJ_DECAP"), "environment");
        assert_eq!(load_env(&[("CJ_DECAP", "vxlan")]).unwrap().decap.vxlan, Some(4789));
        let e = err_env("CJ_DECAP", "vxlan,mpls");
        assert!(e.starts_with(r#"CJ_DECAP="vxlan,mpls" (environment): expected empty (off) or a comma list"#), "{e}");
        assert!(e.ends_with(r#"("mpls" is not one of them)"#) && !e.contains('\n'), "{e}");
        assert!(err_env("CJ_DECAP", "vxlan:70000").contains(r#"("vxlan:70000" has no valid port)"#));
    }

    #[test]
    fn a_paced_export_waits_when_behind_by_default_and_drops_only_when_told() {
        use super::super::ExportBehind;
        assert_eq!(StationConfig::default().export_behind, ExportBehind::Wait);
        assert_eq!(load_env(&[("CJ_EXPORT_BEHIND", "drop")]).unwrap().export_behind, ExportBehind::Drop);
        assert_eq!(load_env(&[("CJ_EXPORT_BEHIND", " DROP ")]).unwrap().export_behind, ExportBehind::Drop);
        assert_eq!(load_env(&[("CJ_EXPORT_BEHIND", "wait")]).unwrap().export_behind, ExportBehind::Wait);
        for v in ["", "skip", "dropped", "0"] {
            let e = err_env("CJ_EXPORT_BEHIND", v);
            assert!(
                e.starts_with(&format!(
                    r#"CJ_EXPORT_BEHIND="{v}" (environment): expected wait (a paced export holds the intake back"#
                )),
                "{e}"
            );
            assert!(e.contains("or drop (the app keeps taking records") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn the_export_rate_is_unpaced_by_default_and_paces_from_100_to_a_million_records_a_second() {
        assert_eq!(StationConfig::default().export_rate, None);
        assert_eq!(load_env(&[("CJ_EXPORT_RATE", "")]).unwrap().export_rate, None);
        assert_eq!(load_env(&[("CJ_EXPORT_RATE", "0")]).unwrap().export_rate, None);
        assert_eq!(load_env(&[("CJ_EXPORT_RATE", " 100 ")]).unwrap().export_rate, Some(100));
        assert_eq!(load_env(&[("CJ_EXPORT_RATE", "1000000")]).unwrap().export_rate, Some(1_000_000));
        let want = |v: &str| {
            format!(
                r#"CJ_EXPORT_RATE="{v}" (environment): expected data records per second from 100 to 1000000 (what the CJ_EXPORT collectors take), or 0 or empty for no pacing"#
            )
        };
        for v in ["99", "1000001", "5k", "-1", "1.5"] {
            assert_eq!(err_env("CJ_EXPORT_RATE", v), want(v));
        }
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
}

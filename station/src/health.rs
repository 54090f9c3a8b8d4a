//! Liveness by heartbeat, not by pid: the one judgement `cj-app status`, the
//! `health` subcommand of every binary and the compose health checks share.
//!
//! Every process renews `heartbeat_ms` on its stats page (the balancer's
//! `stats-balancer`, each worker's `stats-worker-<q>`, the app's `stats-app`)
//! at least every 100 ms while it runs, from the host's `CLOCK_MONOTONIC`
//! ([`crate::naming::heartbeat_ms`]), which every PID namespace shares.
//!
//! Guarantees:
//! - [`liveness`] is `Running` exactly when the page's heartbeat is at most
//!   [`HEARTBEAT_STALE_MS`] old and it has no end mark; a page whose process
//!   ended or was stopped says so (`ended` 1 or 2, written as it finishes,
//!   cleared by the next process before its first beat) from that moment,
//!   however fresh its last beat, a page with no heartbeat is `Unknown`, and one
//!   whose heartbeat is ahead of the clock by more than that (a page from
//!   before a reboot: the monotonic clock started again) is `FromAnotherBoot`,
//!   not running.
//! - [`check`] reads the pages of one role read-only (`CounterPage::read`:
//!   no attach, no file created) and is healthy only when every page of it is
//!   `Running`: the detector's with all its workers, a killed or hung process
//!   within [`HEARTBEAT_STALE_MS`] of its last beat. Its answer is one line.
//!
//! Not guaranteed: that a running process makes progress (a worker blocked
//! on a full record queue still beats); the stats lines and `cj-app status`
//! show the queues for that.

use std::fmt;
use std::path::PathBuf;

use crate::config::StationConfig;
use crate::naming::{self, HEARTBEAT_STALE_MS};

/// What a stats page says about its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// It beat within [`HEARTBEAT_STALE_MS`] (`age_ms` ago).
    Running {
        /// Milliseconds since its last beat.
        age_ms: u64,
    },
    /// Its input ended and it finished (`ended` = 1).
    Ended {
        /// Milliseconds since its last beat.
        age_ms: u64,
    },
    /// It was stopped by a signal (`ended` = 2).
    Stopped {
        /// Milliseconds since its last beat.
        age_ms: u64,
    },
    /// No recent beat and no end mark: killed, crashed or hung.
    NotRunning {
        /// Milliseconds since its last beat.
        age_ms: u64,
    },
    /// The page has no heartbeat (an older build, or never started).
    Unknown,
    /// Its heartbeat is ahead of this boot's monotonic clock: a page left from
    /// before a reboot (in a `CJ_SHM_DIR` that survives one), or not written
    /// by a station process.
    FromAnotherBoot,
}

impl Liveness {
    /// Whether the process runs.
    pub fn is_running(self) -> bool {
        matches!(self, Liveness::Running { .. })
    }
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |ms: u64| ms as f64 / 1000.0;
        match *self {
            Liveness::Running { age_ms } => write!(f, "running (beat {:.1}s ago)", s(age_ms)),
            Liveness::Ended { age_ms } => write!(f, "ended (last beat {:.1}s ago)", s(age_ms)),
            Liveness::Stopped { age_ms } => write!(f, "stopped (last beat {:.1}s ago)", s(age_ms)),
            Liveness::NotRunning { age_ms } => write!(f, "not running (last beat {:.1}s ago)", s(age_ms)),
            Liveness::Unknown => write!(f, "unknown (no heartbeat on this page)"),
            Liveness::FromAnotherBoot => {
                write!(f, "not running (its last beat is ahead of this boot's clock: a page from before a reboot)")
            }
        }
    }
}

/// Milliseconds since a heartbeat stamped `beat_ms` (`CLOCK_MONOTONIC`, as
/// [`naming::heartbeat_ms`]), at `now_ms`: None for no beat (0) and for a beat
/// more than [`HEARTBEAT_STALE_MS`] ahead of now (the clock restarted at a
/// reboot since the page was written, or something else wrote it): neither is
/// a process that runs.
pub fn beat_age_ms(beat_ms: u64, now_ms: u64) -> Option<u64> {
    if beat_ms == 0 || beat_ms > now_ms.saturating_add(HEARTBEAT_STALE_MS) {
        return None;
    }
    Some(now_ms.saturating_sub(beat_ms))
}

/// The liveness of the process behind a stats page (its counters by name), at `now_ms`.
pub fn liveness(counters: &[(String, u64)], now_ms: u64) -> Liveness {
    let get = |name: &str| counters.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let beat = get("heartbeat_ms").unwrap_or(0);
    if beat == 0 {
        return Liveness::Unknown;
    }
    let Some(age_ms) = beat_age_ms(beat, now_ms) else { return Liveness::FromAnotherBoot };
    // The end mark first: a process writes it as it finishes (a new one clears
    // it before its first beat), so a page that has it is done even while its
    // last beat is fresh.
    match get("ended").unwrap_or(0) {
        1 => Liveness::Ended { age_ms },
        2 => Liveness::Stopped { age_ms },
        _ if age_ms <= HEARTBEAT_STALE_MS => Liveness::Running { age_ms },
        _ => Liveness::NotRunning { age_ms },
    }
}

/// A process of the station.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// cj-balancer.
    Balancer,
    /// cj-detector (every worker of its queue set and queues).
    Detector,
    /// cj-app.
    App,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Balancer => "cj-balancer",
            Role::Detector => "cj-detector",
            Role::App => "cj-app",
        }
    }
}

/// The stats pages of `role` under `cfg`.
pub fn pages(role: Role, cfg: &StationConfig) -> Vec<PathBuf> {
    let dir = cfg.cluster_dir();
    match role {
        Role::Balancer => vec![naming::balancer_stats_path(&dir)],
        Role::Detector => {
            cfg.worker_queues().into_iter().map(|q| naming::set_worker_stats_path(&dir, cfg.queue_set, q)).collect()
        }
        Role::App => vec![naming::app_stats_path(&dir, cfg.queue_set)],
    }
}

/// Whether `role` runs under `cfg`, judged by the heartbeats of its pages at
/// `now_ms`: `Ok` with one line when every page beats, else `Err` with one
/// line naming the first page that does not and why.
///
/// # Errors
/// A page that cannot be read or whose process does not run.
pub fn check(role: Role, cfg: &StationConfig, now_ms: u64) -> Result<String, String> {
    let pages = pages(role, cfg);
    let mut oldest = 0;
    for page in &pages {
        let counters = shmq::CounterPage::read(page).map_err(|e| {
            format!(
                "not healthy: {e} ({} not started yet, or running with another CJ_CLUSTER_ID / CJ_SHM_DIR)",
                role.name()
            )
        })?;
        match liveness(&counters, now_ms) {
            Liveness::Running { age_ms } => oldest = oldest.max(age_ms),
            other => return Err(format!("not healthy: {}: {other}", page.display())),
        }
    }
    Ok(format!("healthy: {} page(s) beat, the oldest {:.1}s ago", pages.len(), oldest as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(beat: u64, ended: u64) -> Vec<(String, u64)> {
        vec![("ended".to_string(), ended), ("heartbeat_ms".to_string(), beat)]
    }

    #[test]
    fn liveness_comes_from_the_heartbeat_and_the_end_mark() {
        assert_eq!(liveness(&page(10_000, 0), 11_000), Liveness::Running { age_ms: 1000 });
        assert_eq!(liveness(&page(10_000, 0), 10_000 + HEARTBEAT_STALE_MS), Liveness::Running { age_ms: 3000 });
        assert_eq!(liveness(&page(10_000, 0), 20_000), Liveness::NotRunning { age_ms: 10_000 });
        assert_eq!(liveness(&page(10_000, 1), 20_000), Liveness::Ended { age_ms: 10_000 });
        assert_eq!(liveness(&page(10_000, 2), 20_000), Liveness::Stopped { age_ms: 10_000 });
        // Marked as it finished, a moment ago: done, not running (before, "running" for 3 s).
        assert_eq!(liveness(&page(10_000, 2), 10_100), Liveness::Stopped { age_ms: 100 });
        assert_eq!(liveness(&page(10_000, 1), 10_100), Liveness::Ended { age_ms: 100 });
        assert_eq!(liveness(&page(0, 0), 20_000), Liveness::Unknown);
        assert_eq!(liveness(&page(10_000, 0), 20_000).to_string(), "not running (last beat 10.0s ago)");
    }

    #[test]
    fn a_heartbeat_ahead_of_this_boots_clock_is_not_a_running_process() {
        // A page left from before a reboot: its beat is ten days ahead of the monotonic clock now.
        let ten_days = 10 * 86_400_000;
        for ended in [0, 1, 2] {
            let l = liveness(&page(ten_days, ended), 60_000);
            assert_eq!(l, Liveness::FromAnotherBoot);
            assert!(!l.is_running());
        }
        assert_eq!(beat_age_ms(ten_days, 60_000), None);
        // Two processes' clocks read a few milliseconds apart still beat.
        assert_eq!(liveness(&page(10_050, 0), 10_000), Liveness::Running { age_ms: 0 });
        assert_eq!(beat_age_ms(0, 60_000), None);
    }

    #[test]
    fn a_role_is_healthy_only_when_every_page_beats() {
        let shm = tempfile::tempdir().unwrap();
        let cfg = StationConfig { shm_dir: shm.path().to_path_buf(), corecount: 2, ..StationConfig::default() };
        let e = check(Role::Detector, &cfg, 5_000).unwrap_err();
        assert!(e.starts_with("not healthy: ") && e.contains("cj-detector not started yet"), "{e}");
        let names = naming::WORKER_COUNTERS;
        let mut made = Vec::new();
        for p in pages(Role::Detector, &cfg) {
            let page = shmq::CounterPage::open_or_create(&p, names).unwrap();
            page.set(naming::worker_counter::HEARTBEAT_MS, 4_000);
            made.push(page);
        }
        assert!(check(Role::Detector, &cfg, 5_000).unwrap().starts_with("healthy: 2 page(s)"));
        // One worker stops beating: the detector is not healthy.
        made[1].set(naming::worker_counter::HEARTBEAT_MS, 1_000);
        let e = check(Role::Detector, &cfg, 5_000).unwrap_err();
        assert!(e.contains("stats-worker-1: not running (last beat 4.0s ago)"), "{e}");
    }
}

//! The app's own cost, printed at exit: records read, CPU seconds of the
//! process (user + system, `getrusage(RUSAGE_SELF)`) and µs of CPU per record,
//! and its peak resident memory.
//!
//! Guarantees: the figures are the kernel's for this process, from its start
//! to the moment of the call: reading the record queues, aggregating, every
//! checkpoint and every file written, and the waiting (`CJ_WAIT`) while the
//! queues were empty. The line's form is stable (scripts/bench.sh reads it):
//! `cost: N records, S s CPU (U µs per record), peak RSS M MB`.
//!
//! Not guaranteed: what happens after the call (unmapping, exit) is not in it;
//! with no record read the per-record figure is `0.00`.

use std::fmt;
use std::time::Duration;

/// The process's resource usage so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub system: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
}

impl Usage {
    /// This process's usage now (zero when the kernel does not say).
    pub fn now() -> Self {
        use nix::sys::resource::{getrusage, UsageWho};
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(u) => Usage {
                user: timeval(u.user_time()),
                system: timeval(u.system_time()),
                max_rss_kib: u64::try_from(u.max_rss()).unwrap_or(0),
            },
            Err(_) => Usage::default(),
        }
    }

    /// CPU time, user + system.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    /// The cost line's text for `records` records.
    pub fn per_record(&self, records: u64) -> PerRecord {
        PerRecord { usage: *self, records }
    }
}

fn timeval(t: nix::sys::time::TimeVal) -> Duration {
    let secs = u64::try_from(t.tv_sec()).unwrap_or(0);
    let micros = u32::try_from(t.tv_usec()).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

/// `cost: N records, S s CPU (U µs per record), peak RSS M MB`.
#[derive(Clone, Copy, Debug)]
pub struct PerRecord {
    usage: Usage,
    records: u64,
}

impl fmt::Display for PerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.usage.cpu().as_secs_f64();
        // Lossy above 2^53 records, which no run reaches.
        #[allow(clippy::cast_precision_loss)]
        let per = if self.records == 0 { 0.0 } else { cpu * 1e6 / self.records as f64 };
        write!(
            f,
            "cost: {} records, {cpu:.3} s CPU ({per:.2} µs per record), peak RSS {} MB",
            self.records,
            self.usage.max_rss_kib / 1024
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_line_divides_cpu_seconds_by_records() {
        let u = Usage { user: Duration::from_millis(60), system: Duration::from_millis(24), max_rss_kib: 52 * 1024 };
        assert_eq!(
            u.per_record(100_000).to_string(),
            "cost: 100000 records, 0.084 s CPU (0.84 µs per record), peak RSS 52 MB"
        );
        assert_eq!(u.per_record(0).to_string(), "cost: 0 records, 0.084 s CPU (0.00 µs per record), peak RSS 52 MB");
    }

    #[test]
    fn the_usage_grows_with_work_done_by_this_process() {
        // Independent truth: the kernel's own clock for this process's CPU time.
        let before = Usage::now();
        let t0 = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap();
        let mut x = 0u64;
        while nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).unwrap() - t0
            < nix::sys::time::TimeSpec::from_duration(Duration::from_millis(30))
        {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let after = Usage::now();
        // getrusage ticks in timer-tick granularity at worst (ms); 30 ms of spinning shows.
        assert!(after.cpu() >= before.cpu() + Duration::from_millis(20), "{before:?} -> {after:?}");
        assert!(after.max_rss_kib > 0);
    }
}

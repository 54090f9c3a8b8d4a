//! The per-core stats line cj-detector prints every CJ_LOG_INTERVAL seconds.
//!
//! Guarantees: main reads the workers' stats pages and the packet and record
//! queue headers (never the workers' memory), computes rates from deltas, and
//! prints one line per worker to stderr, prefixed `(Core <queue>)`:
//!
//! ```text
//! (Core 0) packets 1234567 (812.3 kpps) v4 1200000 v6 30000 non-IP 4567 malformed 0 | flows active 1234 new 5678 expired 4444 evicted 0 | records 5000 lost 0 | queue fill 3.1% drops 12 | rec fill 0.0%
//! ```
//!
//! `queue drops` is the packet queue header's `dropped` (copies the balancer
//! could not queue); `queue fill`/`rec fill` are `(enqueued - dequeued) / capacity`.

use std::fmt::Write as _;
use std::time::Duration;

use shmq::QueueStats;
use station::naming::{worker_counter as wc, WORKER_COUNTERS};

/// The counters of one worker's stats page, by index of [`WORKER_COUNTERS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSnapshot(pub [u64; WORKER_COUNTERS.len()]);

impl WorkerSnapshot {
    /// From a page read by name (`shmq::CounterPage::read`); unknown names are
    /// ignored, missing ones are 0.
    pub fn from_named(values: &[(String, u64)]) -> Self {
        let mut s = [0u64; WORKER_COUNTERS.len()];
        for (name, v) in values {
            if let Some(i) = WORKER_COUNTERS.iter().position(|n| n == name) {
                s[i] = *v;
            }
        }
        Self(s)
    }

    /// Counter `i` (a [`station::naming::worker_counter`] index).
    pub fn get(&self, i: usize) -> u64 {
        self.0[i]
    }
}

/// One stats line. `prev` is the snapshot of the previous line, `elapsed` the
/// time since it.
pub fn line(
    queue: u32,
    cur: &WorkerSnapshot,
    prev: &WorkerSnapshot,
    elapsed: Duration,
    pkt: Option<&QueueStats>,
    rec: Option<&QueueStats>,
) -> String {
    let secs = elapsed.as_secs_f64();
    let dp = cur.get(wc::PACKETS).saturating_sub(prev.get(wc::PACKETS));
    let rate = if secs > 0.0 { dp as f64 / secs } else { 0.0 };
    let mut s = format!(
        "(Core {queue}) packets {} ({}) v4 {} v6 {} non-IP {} malformed {} | flows active {} new {} expired {} evicted {} | records {} lost {}",
        cur.get(wc::PACKETS),
        station::rate::format_rate(rate),
        cur.get(wc::IPV4),
        cur.get(wc::IPV6),
        cur.get(wc::NON_IP),
        cur.get(wc::MALFORMED),
        cur.get(wc::FLOWS_ACTIVE),
        cur.get(wc::FLOWS_NEW),
        cur.get(wc::FLOWS_EXPIRED),
        cur.get(wc::FLOWS_EVICTED),
        cur.get(wc::RECORDS),
        cur.get(wc::RECORDS_LOST),
    );
    match pkt {
        Some(q) => {
            let _ = write!(
                s,
                " | queue fill {:.1}% drops {}",
                station::rate::percent(q.in_flight(), q.capacity),
                q.dropped
            );
        }
        None => s.push_str(" | queue ?"),
    }
    if let Some(q) = rec {
        let _ = write!(s, " | rec fill {:.1}%", station::rate::percent(q.in_flight(), q.capacity));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_prefix_rate_and_fill() {
        let mut prev = WorkerSnapshot::default();
        prev.0[wc::PACKETS] = 1000;
        let named: Vec<(String, u64)> = vec![
            ("packets".into(), 3000),
            ("ipv4".into(), 2500),
            ("ipv6".into(), 400),
            ("non_ip".into(), 100),
            ("flows_active".into(), 7),
            ("records".into(), 9),
            ("whatever".into(), 1),
        ];
        let cur = WorkerSnapshot::from_named(&named);
        let pkt = QueueStats { enqueued: 3100, dequeued: 3000, capacity: 1000, dropped: 5, ..Default::default() };
        let l = line(4, &cur, &prev, Duration::from_secs(2), Some(&pkt), None);
        assert!(l.starts_with("(Core 4) packets 3000 (1.0 kpps) v4 2500 v6 400 non-IP 100 "), "{l}");
        assert!(l.contains("flows active 7 "), "{l}");
        assert!(l.ends_with("| queue fill 10.0% drops 5"), "{l}");
        assert!(!l.contains('\n'));
    }

    #[test]
    fn rates_have_units() {}
}

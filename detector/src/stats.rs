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
//! With flow divert on (`CJ_TUN=yes`) and rules loaded or packets written,
//! `| tun mirrored P (B B) diverted P (B B) dropped P (B B) rules gen G`
//! follows the records: packets and wire bytes mirrored, diverted and
//! dropped at the tun device, and the rule set in use.
//!
//! `queue drops` is the packet queue header's `dropped` (copies the balancer
//! could not queue); `queue fill`/`rec fill` are `(enqueued - dequeued) / capacity`.

use std::fmt::Write as _;
use std::time::Duration;

use shmq::QueueStats;
use station::naming::{worker_counter as wc, WORKER_COUNTERS};

/// The counters of one worker's stats page, by index of [`WORKER_COUNTERS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSnapshot(pub [u64; WORKER_COUNTERS.len()]);

impl Default for WorkerSnapshot {
    /// Every counter 0 (a hand-written impl: `Default` is derived for arrays of at most 32).
    fn default() -> Self {
        Self([0; WORKER_COUNTERS.len()])
    }
}

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
    // Flow divert (CJ_TUN=yes): only once it has rules or traffic, so the line is as it was without it.
    let (mp, dp, tp) = (cur.get(wc::MIRRORED_PACKETS), cur.get(wc::DIVERTED_PACKETS), cur.get(wc::TUN_DROPPED_PACKETS));
    if mp + dp + tp + cur.get(wc::DIVERT_RULES_GENERATION) > 0 {
        let _ = write!(
            s,
            " | tun mirrored {mp} ({} B) diverted {dp} ({} B) dropped {tp} ({} B) rules gen {}",
            cur.get(wc::MIRRORED_BYTES),
            cur.get(wc::DIVERTED_BYTES),
            cur.get(wc::TUN_DROPPED_BYTES),
            cur.get(wc::DIVERT_RULES_GENERATION)
        );
    }
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

    /// The rate in parentheses: packets of the interval over its seconds, in
    /// the unit its size calls for (hand-computed strings).
    #[test]
    fn rates_have_units() {
        let rate_of = |delta: u64, elapsed: Duration| {
            let prev = WorkerSnapshot::default();
            let mut cur = WorkerSnapshot::default();
            cur.0[wc::PACKETS] = delta;
            let l = line(0, &cur, &prev, elapsed, None, None);
            let start = l.find('(').and_then(|i| l[i + 1..].find('(').map(|j| i + 1 + j)).expect("a rate");
            let end = l[start..].find(')').expect("closed") + start;
            l[start + 1..end].to_owned()
        };
        let s = Duration::from_secs;
        // pps: whole packets per second, rounded.
        assert_eq!(rate_of(0, s(1)), "0 pps");
        assert_eq!(rate_of(1500, s(2)), "750 pps");
        assert_eq!(rate_of(999, s(1)), "999 pps");
        assert_eq!(rate_of(7, s(4)), "2 pps", "1.75 pps");
        // kpps from 1000 pps, one decimal.
        assert_eq!(rate_of(1000, s(1)), "1.0 kpps");
        assert_eq!(rate_of(24_690, s(2)), "12.3 kpps");
        assert_eq!(rate_of(999_000, s(1)), "999.0 kpps");
        // Mpps from 1,000,000 pps, two decimals.
        assert_eq!(rate_of(1_000_000, s(1)), "1.00 Mpps");
        assert_eq!(rate_of(12_345_678, s(5)), "2.47 Mpps");
        assert_eq!(rate_of(30_000_000, Duration::from_millis(500)), "60.00 Mpps");
        // No time elapsed (the first line): no rate, not a division by zero.
        assert_eq!(rate_of(5000, Duration::ZERO), "0 pps");
        // The delta, not the total: a counter that went back (a restarted worker) is 0.
        let mut prev = WorkerSnapshot::default();
        prev.0[wc::PACKETS] = 10_000;
        let mut cur = WorkerSnapshot::default();
        cur.0[wc::PACKETS] = 4_000;
        assert!(line(1, &cur, &prev, s(1), None, None).starts_with("(Core 1) packets 4000 (0 pps) "));
    }
}

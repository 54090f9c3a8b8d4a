//! The balancer's stats page and stats line.
//!
//! Guarantees: the page (`stats-balancer` in the cluster directory) holds
//! every term the accounting identity needs from the balancer, updated at
//! least once per batch, so `cj-app status` and the app can read it while the
//! balancer runs and after it exits.

use std::path::Path;
use std::time::Instant;

use shmq::{CounterPage, QueueError};
use station::naming::{balancer_counter as c, BALANCER_COUNTERS};

/// Running totals and their shared page.
pub struct BalancerStats {
    page: CounterPage,
    /// Frames taken from the source (by every run of this cluster since the last end of stream).
    pub received: u64,
    /// Their wire bytes.
    pub received_bytes: u64,
    /// What earlier runs counted (queue drops, capture drops, source errors):
    /// the page holds earlier + this run's.
    base: [u64; 3],
    /// `received` when this run started (earlier runs' frames).
    pub received_at_start: u64,
    last_line: Instant,
    last_received: u64,
}

impl std::fmt::Debug for BalancerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerStats").field("received", &self.received).finish()
    }
}

/// What [`BalancerStats::open`] found on the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continued {
    /// No earlier run, or the earlier one ended its stream: counting starts at zero.
    Fresh,
    /// An earlier run stopped (signal) or died (no end mark) without ending
    /// the stream: its queues still hold its frames, so its totals go on.
    From {
        /// Frames the earlier runs had received.
        received: u64,
    },
}

impl BalancerStats {
    /// Opens (or creates) the page. When an earlier balancer of this cluster
    /// stopped or died without ending the stream (`ended` is not 1), its
    /// totals are continued: the packet queues still count what it enqueued
    /// and dropped, so the identity's `received` must too. After an end of
    /// stream (or on a new page) they start at zero.
    ///
    /// # Errors
    /// The page cannot be created or has another layout.
    pub fn open(path: &Path, sets: u32, queues_per_set: u32, hash_mode: u64) -> Result<(Self, Continued), QueueError> {
        let page = CounterPage::open_or_create(path, BALANCER_COUNTERS)?;
        let continued = page.get(c::ENDED) != 1 && page.get(c::RECEIVED) > 0;
        if !continued {
            for i in 0..BALANCER_COUNTERS.len() {
                page.set(i, 0);
            }
        }
        page.set(c::ENDED, 0);
        page.set(c::SETS, u64::from(sets));
        page.set(c::QUEUES_PER_SET, u64::from(queues_per_set));
        page.set(c::HASH_MODE, hash_mode);
        let (received, received_bytes) = (page.get(c::RECEIVED), page.get(c::RECEIVED_BYTES));
        let base = [page.get(c::QUEUE_DROPPED), page.get(c::CAPTURE_DROPPED), page.get(c::SOURCE_ERRORS)];
        let how = if continued { Continued::From { received } } else { Continued::Fresh };
        let stats = Self {
            page,
            received,
            received_bytes,
            base,
            received_at_start: received,
            last_line: Instant::now(),
            last_received: received,
        };
        Ok((stats, how))
    }

    /// Stores the totals into the page.
    /// The arguments are this run's own counts; earlier runs' are added.
    pub fn store(&self, queue_dropped: u64, capture_dropped: u64, source_errors: u64) {
        self.page.set(c::RECEIVED, self.received);
        self.page.set(c::RECEIVED_BYTES, self.received_bytes);
        self.page.set(c::QUEUE_DROPPED, self.base[0] + queue_dropped);
        self.page.set(c::CAPTURE_DROPPED, self.base[1] + capture_dropped);
        self.page.set(c::SOURCE_ERRORS, self.base[2] + source_errors);
        self.page.set(c::HEARTBEAT_MS, station::naming::heartbeat_ms());
    }

    /// Marks a finished finite source.
    pub fn mark_ended(&self) {
        self.page.set(c::ENDED, 1);
    }

    /// Marks a balancer stopped by a signal (its queues left open): with the
    /// workers ended and the queues drained, the app can call the run final
    /// without judging process liveness across PID namespaces.
    pub fn mark_stopped(&self) {
        self.page.set(c::ENDED, 2);
    }

    /// The one-line summary, with the rate since the last line.
    pub fn line(
        &mut self,
        queue_dropped: u64,
        capture_dropped: u64,
        source_errors: u64,
        fills: &[(usize, u32, u64, u64)],
    ) -> String {
        let elapsed = self.last_line.elapsed().as_secs_f64().max(1e-9);
        let rate = (self.received - self.last_received) as f64 / elapsed;
        self.last_line = Instant::now();
        self.last_received = self.received;
        let mut fill = String::new();
        for (s, i, used, cap) in fills {
            fill.push_str(&format!(" pkt-{s}-{i}:{:.0}%", station::rate::percent(*used, *cap)));
        }
        format!(
            "cj-balancer: received {} ({}) bytes {}; dropped: queue full {}, capture {}; source errors {}; fill{}",
            self.received,
            station::rate::format_rate(rate),
            self.received_bytes,
            self.base[0] + queue_dropped,
            self.base[1] + capture_dropped,
            self.base[2] + source_errors,
            fill
        )
    }
}

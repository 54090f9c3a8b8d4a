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
    /// Frames taken from the source.
    pub received: u64,
    /// Their wire bytes.
    pub received_bytes: u64,
    last_line: Instant,
    last_received: u64,
}

impl std::fmt::Debug for BalancerStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerStats").field("received", &self.received).finish()
    }
}

impl BalancerStats {
    /// Opens (or creates) the page and resets it for this run.
    ///
    /// # Errors
    /// The page cannot be created or has another layout.
    pub fn open(path: &Path, sets: u32, queues_per_set: u32, hash_mode: u64) -> Result<Self, QueueError> {
        let page = CounterPage::open_or_create(path, BALANCER_COUNTERS)?;
        // A new balancer run starts its own totals: the queues keep theirs.
        for i in 0..BALANCER_COUNTERS.len() {
            page.set(i, 0);
        }
        page.set(c::SETS, u64::from(sets));
        page.set(c::QUEUES_PER_SET, u64::from(queues_per_set));
        page.set(c::HASH_MODE, hash_mode);
        Ok(Self { page, received: 0, received_bytes: 0, last_line: Instant::now(), last_received: 0 })
    }

    /// Stores the totals into the page.
    pub fn store(&self, queue_dropped: u64, capture_dropped: u64, source_errors: u64) {
        self.page.set(c::RECEIVED, self.received);
        self.page.set(c::RECEIVED_BYTES, self.received_bytes);
        self.page.set(c::QUEUE_DROPPED, queue_dropped);
        self.page.set(c::CAPTURE_DROPPED, capture_dropped);
        self.page.set(c::SOURCE_ERRORS, source_errors);
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
            queue_dropped,
            capture_dropped,
            source_errors,
            fill
        )
    }
}

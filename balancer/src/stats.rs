//! The balancer's stats page and stats line.
//!
//! Guarantees: the page (`stats-balancer` in the cluster directory) holds
//! every term the accounting identity needs from the balancer, updated at
//! least once per batch (after the batch is published, so the page never
//! counts a frame the queues do not have), so `cj-app status` and the app can
//! read it while the balancer runs and after it exits. A balancer resuming an
//! offline stream ([`crate::resume`]) counts its source again from the start;
//! the page keeps the earlier totals until the new count passes them, so it
//! never goes back.

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
    /// `received` as the page showed it when this run started (earlier runs' frames).
    pub received_at_start: u64,
    /// Resuming: what the page held at the start (`received`,
    /// `received_bytes`); the page shows the larger of these and the new count.
    floor: (u64, u64),
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
    /// No earlier run, or the earlier one ended its stream: counting starts at
    /// zero (the page says so, `sets` = 0, until [`BalancerStats::begin`]).
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
    /// began a stream (`sets` is set) and stopped or died without ending it
    /// (`ended` is not 1), its totals are continued: the packet queues still
    /// count what it enqueued and dropped, so the identity's `received` must
    /// too. After an end of stream (or on a new page) they start at zero, and
    /// the page says no stream has begun until [`Self::begin`].
    ///
    /// # Errors
    /// The page cannot be created or has another layout.
    pub fn open(path: &Path) -> Result<(Self, Continued), QueueError> {
        let page = CounterPage::open_or_create(path, BALANCER_COUNTERS)?;
        let continued = page.get(c::ENDED) != 1 && page.get(c::SETS) != 0;
        if !continued {
            for i in 0..BALANCER_COUNTERS.len() {
                page.set(i, 0);
            }
        }
        let (received, received_bytes) = (page.get(c::RECEIVED), page.get(c::RECEIVED_BYTES));
        let base = [page.get(c::QUEUE_DROPPED), page.get(c::CAPTURE_DROPPED), page.get(c::SOURCE_ERRORS)];
        let how = if continued { Continued::From { received } } else { Continued::Fresh };
        let stats = Self {
            page,
            received,
            received_bytes,
            base,
            received_at_start: received,
            floor: (0, 0),
            last_line: Instant::now(),
            last_received: received,
        };
        Ok((stats, how))
    }

    /// Marks the stream begun (or going on) with this layout, and this
    /// balancer running. Called after the resume record is written or
    /// checked: a balancer that dies or refuses before this leaves the page
    /// as it found it (a fresh stream, or the earlier balancer's end mark).
    pub fn begin(&self, sets: u32, queues_per_set: u32, hash_mode: u64) {
        self.page.set(c::ENDED, 0);
        self.page.set(c::QUEUES_PER_SET, u64::from(queues_per_set));
        self.page.set(c::HASH_MODE, hash_mode);
        self.page.set(c::SETS, u64::from(sets));
    }

    /// Resuming an offline stream: the source is read again from its start,
    /// so `received` counts from zero again (the page keeps the earlier
    /// totals until the new count passes them); the queue drops of the earlier
    /// runs are `queue_dropped` (from the queue headers, exact where the page
    /// may lag a killed balancer's last batch); capture drops and source
    /// errors are counted again by the source.
    pub fn resume(&mut self, queue_dropped: u64) {
        self.floor = (self.received, self.received_bytes);
        self.received_at_start = self.received;
        self.received = 0;
        self.received_bytes = 0;
        self.last_received = 0;
        self.base = [queue_dropped, 0, 0];
    }

    /// `received` as the page shows it.
    pub fn received_total(&self) -> u64 {
        self.received.max(self.floor.0)
    }

    /// Stores the totals into the page.
    /// The arguments are this run's own counts; earlier runs' are added.
    pub fn store(&self, queue_dropped: u64, capture_dropped: u64, source_errors: u64) {
        self.page.set(c::RECEIVED, self.received.max(self.floor.0));
        self.page.set(c::RECEIVED_BYTES, self.received_bytes.max(self.floor.1));
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
            self.received.max(self.floor.0),
            station::rate::format_rate(rate),
            self.received_bytes.max(self.floor.1),
            self.base[0] + queue_dropped,
            self.base[1] + capture_dropped,
            self.base[2] + source_errors,
            fill
        )
    }
}

//! The balancer's core: choose queues for each frame and copy it in.
//!
//! Guarantees: in every queue set, each frame goes to exactly one queue
//! (round robin or IP hash) or to every queue (fan-out); a copy that does not
//! fit is either counted as dropped at that queue (`OnFull::Drop`: the
//! balancer never waits, as on a live NIC where waiting would only move the
//! loss into the NIC, uncounted) or waited for (`OnFull::Wait`). Nothing is
//! allocated per frame and no system call is made per frame: queues are
//! published once per batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmq::{Full, Producer, WaitStrategy, Waiter};
use station::config::HashMode;
use station::slot::{write_packet, PacketMeta};

use crate::source::Frame;

/// Copies frames into the queue sets.
pub struct Dispatcher<'s> {
    /// `sets[s][i]`: queue i of set s.
    sets: Vec<Vec<Producer>>,
    /// Queue number of index i (CJ_QUEUE_OFFSET + i), as in the file names.
    queue_numbers: Vec<u32>,
    mode: HashMode,
    next_rr: usize,
    wait_when_full: bool,
    wait: WaitStrategy,
    stop: &'s AtomicBool,
    /// Copies dropped at full queues, all sets.
    pub queue_dropped: u64,
    /// When a queue last made the balancer wait, for a rate-limited log line.
    last_wait_log: Option<Instant>,
}

impl std::fmt::Debug for Dispatcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("sets", &self.sets.len())
            .field("mode", &self.mode)
            .field("queue_dropped", &self.queue_dropped)
            .finish()
    }
}

impl<'s> Dispatcher<'s> {
    /// A dispatcher over `sets` (every set has the same number of queues, at
    /// least one, numbered `queue_numbers`).
    pub fn new(
        sets: Vec<Vec<Producer>>,
        queue_numbers: Vec<u32>,
        mode: HashMode,
        wait_when_full: bool,
        wait: WaitStrategy,
        stop: &'s AtomicBool,
    ) -> Self {
        debug_assert!(sets.iter().all(|s| !s.is_empty() && s.len() == sets[0].len()));
        debug_assert!(sets.iter().all(|s| s.len() == queue_numbers.len()));
        Self {
            sets,
            queue_numbers,
            mode,
            next_rr: 0,
            wait_when_full,
            wait,
            stop,
            queue_dropped: 0,
            last_wait_log: None,
        }
    }

    /// Queues per set.
    pub fn queues_per_set(&self) -> usize {
        self.sets.first().map_or(0, Vec::len)
    }

    /// Copies one frame into its queue(s) in every set.
    #[inline]
    pub fn dispatch(&mut self, frame: &Frame<'_>) {
        let n = self.queues_per_set();
        let meta =
            PacketMeta { ts_ns: frame.ts_ns, wire_len: frame.wire_len, cap_len: 0, source: frame.source, flags: 0 };
        match self.mode {
            HashMode::RoundRobin => {
                let q = self.next_rr;
                self.next_rr = if q + 1 == n { 0 } else { q + 1 };
                self.copy_into_sets(q, meta, frame.data);
            }
            HashMode::IpHash => {
                let summary = wire::summarize(frame.data);
                let q = (wire::zbalance_ip_hash(&summary) as usize) % n;
                self.copy_into_sets(q, meta, frame.data);
            }
            HashMode::FanOut => {
                for q in 0..n {
                    self.copy_into_sets(q, meta, frame.data);
                }
            }
        }
    }

    #[inline]
    fn copy_into_sets(&mut self, q: usize, meta: PacketMeta, data: &[u8]) {
        for s in 0..self.sets.len() {
            let pushed = self.sets[s][q].push_with(|slot| write_packet(slot, meta, data));
            if pushed.is_err() {
                self.on_full(s, q, meta, data);
            }
        }
    }

    #[cold]
    fn on_full(&mut self, s: usize, q: usize, meta: PacketMeta, data: &[u8]) {
        if !self.wait_when_full {
            self.sets[s][q].count_dropped(1);
            self.queue_dropped += 1;
            return;
        }
        // Make what is queued visible so the consumer can make room.
        self.sets[s][q].publish();
        let mut waiter = Waiter::new(self.wait);
        let waiting_since = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                self.sets[s][q].count_dropped(1);
                self.queue_dropped += 1;
                return;
            }
            let pushed: Result<(), Full> = self.sets[s][q].push_with(|slot| write_packet(slot, meta, data));
            if pushed.is_ok() {
                return;
            }
            if waiting_since.elapsed() > Duration::from_secs(5)
                && self.last_wait_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5))
            {
                self.last_wait_log = Some(Instant::now());
                let stats = self.sets[s][q].stats();
                station::cj_warn!(
                    "cj-balancer: packet queue pkt-{s}-{} full for {}s, waiting for its consumer (pid {}); \
                     is cj-detector running with the same CJ_CLUSTER_ID? (CJ_ON_FULL=drop drops instead)",
                    self.queue_numbers[q],
                    waiting_since.elapsed().as_secs(),
                    stats.consumer_pid
                );
            }
            waiter.wait();
        }
    }

    /// Publishes every queue (one release store each).
    pub fn publish(&mut self) {
        for set in &mut self.sets {
            for p in set.iter_mut() {
                p.publish();
            }
        }
    }

    /// Publishes and marks the end of the stream on every queue.
    pub fn close(&mut self) {
        for set in &mut self.sets {
            for p in set.iter_mut() {
                p.close();
            }
        }
    }

    /// Fill of each queue as (set, queue number, used, capacity).
    pub fn fills(&self) -> Vec<(usize, u32, u64, u64)> {
        let mut out = Vec::new();
        for (s, set) in self.sets.iter().enumerate() {
            for (i, p) in set.iter().enumerate() {
                let st = p.stats();
                out.push((s, self.queue_numbers[i], st.in_flight(), st.capacity));
            }
        }
        out
    }
}

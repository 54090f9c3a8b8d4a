//! Whether every worker makes progress: what the detector's systemd watchdog
//! pings stand on (see `station::notify`).
//!
//! A worker progresses when, since the last look, its packet queue was drained
//! further (`dequeued` moved), or it has nothing to do (the queue is empty or
//! ended), or it is held back by the app (its record queue is full: restarting
//! the detector would not help). A worker whose queue holds packets that it has
//! not touched for longer than the window is stuck, and then no ping goes out
//! and systemd restarts the detector.
//!
//! Guarantees: reads only the queue headers (no process is asked, nothing is
//! written); a queue file that cannot be opened counts as "no progress known"
//! only until the window passes, so a detector whose queues vanished is not
//! kept alive forever.

use std::time::{Duration, Instant};

use crate::worker::WorkerSpec;

/// Per-worker state of the last look.
#[derive(Debug)]
struct Seen {
    queues: Option<(shmq::QueueFile, shmq::QueueFile)>,
    dequeued: u64,
    last_progress: Instant,
}

/// Tracks the workers' packet queues.
#[derive(Debug)]
pub struct Progress {
    seen: Vec<Seen>,
}

impl Progress {
    /// Starts tracking; every worker counts as progressing now.
    pub fn new(workers: usize) -> Self {
        let now = Instant::now();
        Self { seen: (0..workers).map(|_| Seen { queues: None, dequeued: 0, last_progress: now }).collect() }
    }

    /// Looks at every worker's queues; true when each one progressed within `window`.
    pub fn all_within(&mut self, specs: &[WorkerSpec], window: Duration) -> bool {
        let now = Instant::now();
        let mut ok = true;
        for (spec, seen) in specs.iter().zip(self.seen.iter_mut()) {
            if seen.queues.is_none() {
                let p = shmq::QueueFile::open_existing(&spec.packet_queue_path()).ok();
                let r = shmq::QueueFile::open_existing(&spec.record_queue_path()).ok();
                seen.queues = p.zip(r);
            }
            if let Some((p, r)) = &seen.queues {
                let (ps, rs) = (p.stats(), r.stats());
                let idle = ps.in_flight() == 0 || ps.closed;
                let held_by_app = rs.in_flight() >= rs.capacity;
                if idle || held_by_app || ps.dequeued != seen.dequeued {
                    seen.last_progress = now;
                }
                seen.dequeued = ps.dequeued;
            }
            ok &= now.duration_since(seen.last_progress) <= window;
        }
        ok
    }
}

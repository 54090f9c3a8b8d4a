//! The flow clock of a worker.
//!
//! Guarantees:
//! - The clock is packet time: the largest packet timestamp seen so far, so an
//!   offline run (pcap, synthetic source) expires flows the same way whatever
//!   the speed of the machine.
//! - It never goes backwards (a packet with an older timestamp leaves it as is).
//! - When the packet queue has been empty for [`IDLE_AFTER`] of wall time, the
//!   clock advances with wall time from the moment the queue became empty, so
//!   the idle flows of a quiet live link still expire. Offline, a pause of the
//!   producer longer than [`IDLE_AFTER`] therefore also moves the clock (only
//!   record boundaries change, never the totals).
//! - Reading it costs nothing; the wall clock is read only while the queue is
//!   empty, never per packet.

use std::time::{Duration, Instant};

/// Empty-queue time after which the clock follows wall time.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// A worker's flow clock. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct FlowClock {
    now_ns: u64,
    /// Wall instant the queue became empty and the clock then.
    idle_since: Option<(Instant, u64)>,
}

impl FlowClock {
    /// A clock at 0 (it jumps to the first packet's time).
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock now, nanoseconds since the Unix epoch.
    #[inline]
    pub fn now(&self) -> u64 {
        self.now_ns
    }

    /// A packet with timestamp `ts_ns` arrived; returns the clock.
    #[inline]
    pub fn packet(&mut self, ts_ns: u64) -> u64 {
        if ts_ns > self.now_ns {
            self.now_ns = ts_ns;
        }
        self.now_ns
    }

    /// The queue delivered packets again: stop following wall time.
    #[inline]
    pub fn busy(&mut self) {
        self.idle_since = None;
    }

    /// The queue is empty at wall instant `wall`; returns the clock, advanced
    /// by the wall time since the queue became empty once that is at least
    /// [`IDLE_AFTER`].
    pub fn idle(&mut self, wall: Instant) -> u64 {
        match self.idle_since {
            None => self.idle_since = Some((wall, self.now_ns)),
            Some((since, base)) => {
                let idle = wall.saturating_duration_since(since);
                if idle >= IDLE_AFTER {
                    let ns = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
                    self.now_ns = self.now_ns.max(base.saturating_add(ns));
                }
            }
        }
        self.now_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_packets_and_never_goes_back() {
        let mut c = FlowClock::new();
        assert_eq!(c.packet(100), 100);
        assert_eq!(c.packet(50), 100);
        assert_eq!(c.packet(200), 200);
    }

    #[test]
    fn follows_wall_time_only_after_a_second_of_empty_queue() {
        let mut c = FlowClock::new();
        c.packet(1_000);
        let t0 = Instant::now();
        assert_eq!(c.idle(t0), 1_000);
        assert_eq!(c.idle(t0 + Duration::from_millis(999)), 1_000);
        assert_eq!(c.idle(t0 + Duration::from_secs(3)), 1_000 + 3_000_000_000);
        // packets come back: they rule again, and the clock does not go back
        c.busy();
        assert_eq!(c.packet(2_000), 3_000_001_000);
        assert_eq!(c.idle(t0 + Duration::from_secs(4)), 3_000_001_000);
        assert_eq!(c.idle(t0 + Duration::from_secs(6)), 5_000_001_000);
    }
}

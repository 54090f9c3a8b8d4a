//! How a queue side waits for its peer.
//!
//! Guarantees: [`WaitStrategy::BusyPoll`] never leaves the CPU (one
//! `spin_loop` hint per call). [`WaitStrategy::Backoff`] spins for a few rounds
//! (1, 2, 4, ... 32 hints), then yields a few times, then sleeps starting at
//! 1 µs and doubling, never longer than `max_sleep` per call: the latency a
//! wait adds after the peer makes progress is bounded by `max_sleep` (plus the
//! scheduler's timer slack). [`Waiter::reset`] returns to the shortest wait.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a side waits for its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin; lowest latency, burns the core.
    BusyPoll,
    /// Spin briefly, then yield, then sleep up to `max_sleep`.
    Backoff {
        /// Longest single sleep; bounds the added latency.
        max_sleep: Duration,
    },
}

impl WaitStrategy {
    /// `Backoff` with the default `max_sleep` of 1 ms.
    pub const DEFAULT_BACKOFF: WaitStrategy = WaitStrategy::Backoff { max_sleep: Duration::from_millis(1) };
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::DEFAULT_BACKOFF
    }
}

/// A wait strategy that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid wait strategy {0:?}: expected \"busy\", \"backoff\" (sleeps up to 1ms), \
     or \"backoff:<N>us\" / \"backoff:<N>ms\""
)]
pub struct ParseWaitStrategyError(pub String);

impl FromStr for WaitStrategy {
    type Err = ParseWaitStrategyError;

    /// Parses `busy` (also `busypoll`, `spin`), `backoff`, or `backoff:<N>us` /
    /// `backoff:<N>ms` (case-insensitive, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseWaitStrategyError(s.to_string());
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "busy" | "busypoll" | "busy-poll" | "spin" => return Ok(WaitStrategy::BusyPoll),
            "backoff" => return Ok(WaitStrategy::DEFAULT_BACKOFF),
            _ => {}
        }
        let arg = t.strip_prefix("backoff:").ok_or_else(err)?;
        let (num, unit): (&str, fn(u64) -> Duration) = if let Some(n) = arg.strip_suffix("us") {
            (n, Duration::from_micros)
        } else if let Some(n) = arg.strip_suffix("ms") {
            (n, Duration::from_millis)
        } else {
            return Err(err());
        };
        let n: u64 = num.trim().parse().map_err(|_| err())?;
        Ok(WaitStrategy::Backoff { max_sleep: unit(n) })
    }
}

impl fmt::Display for WaitStrategy {
    /// The form [`FromStr`] accepts: `busy` or `backoff:<N>us`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitStrategy::BusyPoll => f.write_str("busy"),
            WaitStrategy::Backoff { max_sleep } => {
                write!(f, "backoff:{}us", max_sleep.as_micros())
            }
        }
    }
}

/// Spin rounds before yielding: round k spins 2^k times.
const SPIN_ROUNDS: u32 = 6;
/// Yields before sleeping.
const YIELD_ROUNDS: u32 = 4;
/// First sleep.
const FIRST_SLEEP: Duration = Duration::from_micros(1);

/// Carries the wait state between calls.
#[derive(Clone, Debug)]
pub struct Waiter {
    strategy: WaitStrategy,
    step: u32,
    sleep: Duration,
}

impl Waiter {
    /// A waiter with this strategy.
    pub fn new(strategy: WaitStrategy) -> Self {
        Waiter { strategy, step: 0, sleep: FIRST_SLEEP }
    }

    /// The strategy.
    pub fn strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Waits a little longer each call, as the strategy says.
    #[inline]
    pub fn wait(&mut self) {
        match self.strategy {
            WaitStrategy::BusyPoll => std::hint::spin_loop(),
            WaitStrategy::Backoff { max_sleep } => {
                if self.step < SPIN_ROUNDS {
                    for _ in 0..(1u32 << self.step) {
                        std::hint::spin_loop();
                    }
                    self.step += 1;
                } else if self.step < SPIN_ROUNDS + YIELD_ROUNDS || max_sleep.is_zero() {
                    std::thread::yield_now();
                    self.step = self.step.saturating_add(1);
                } else {
                    std::thread::sleep(self.sleep.min(max_sleep));
                    self.sleep = (self.sleep * 2).min(max_sleep);
                }
            }
        }
    }

    /// Back to the shortest wait (call after progress).
    #[inline]
    pub fn reset(&mut self) {
        self.step = 0;
        self.sleep = FIRST_SLEEP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn parse_wait_strategy() {
        assert_eq!("busy".parse(), Ok(WaitStrategy::BusyPoll));
        assert_eq!(" Backoff ".parse(), Ok(WaitStrategy::DEFAULT_BACKOFF));
        assert_eq!("backoff:250us".parse(), Ok(WaitStrategy::Backoff { max_sleep: Duration::from_micros(250) }));
        assert_eq!("backoff:5ms".parse(), Ok(WaitStrategy::Backoff { max_sleep: Duration::from_millis(5) }));
        for bad in ["", "sleep", "backoff:", "backoff:5", "backoff:xus", "busy:1ms"] {
            let e = bad.parse::<WaitStrategy>().unwrap_err();
            assert!(e.to_string().contains("expected \"busy\""), "{e}");
        }
        for s in [WaitStrategy::BusyPoll, WaitStrategy::DEFAULT_BACKOFF] {
            assert_eq!(s.to_string().parse(), Ok(s));
        }
    }

    #[test]
    fn backoff_sleep_is_bounded() {
        let max_sleep = Duration::from_millis(2);
        let mut w = Waiter::new(WaitStrategy::Backoff { max_sleep });
        for _ in 0..40 {
            w.wait();
        }
        assert_eq!(w.sleep, max_sleep, "sleep doubles up to max_sleep");
        let t = Instant::now();
        w.wait();
        let took = t.elapsed();
        // A sleep never ends early; how late it ends is the scheduler's (not asserted: timed
        // upper bounds fail on a loaded machine). The bound itself is `w.sleep`, checked above.
        assert!(took >= max_sleep, "{took:?}");
        w.reset();
        w.wait();
        assert_eq!((w.step, w.sleep), (1, FIRST_SLEEP), "reset spins first");
    }
}

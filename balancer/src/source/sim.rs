//! `sim:SPEC`: deterministic synthetic traffic from the `sim` crate.
//!
//! Guarantees: the same spec yields the same frames with the same timestamps,
//! so its ground truth (`sim::truth`) is exact; with `rate=N` frames
//! are released no faster than N per second of wall time (the timestamps stay
//! the model's), with `rate=0` as fast as the balancer takes them. A resumed
//! stream re-reads the frames its queues hold unpaced
//! ([`Source::unpaced_first`]).

use std::time::Instant;

use ::sim::{SimSpec, SimTraffic};

use super::{Frame, LinkDir, Poll, Source, SourceError, SourceStats};

/// A synthetic source.
#[derive(Debug)]
pub struct SimSource {
    traffic: SimTraffic,
    spec_text: String,
    rate_pps: u64,
    started: Option<Instant>,
    emitted: u64,
    /// Frames released before the pacing starts (a resumed stream's re-read part).
    unpaced: u64,
    buf: Box<[u8]>,
    ended: bool,
}

impl SimSource {
    /// A source for `spec`.
    pub fn new(spec: &SimSpec) -> Self {
        Self {
            traffic: SimTraffic::new(spec),
            spec_text: spec.to_string(),
            rate_pps: spec.rate_pps,
            started: None,
            emitted: 0,
            unpaced: 0,
            buf: vec![0u8; 16 * 1024].into_boxed_slice(),
            ended: false,
        }
    }

    /// Frames the pacing allows now.
    fn allowance(&mut self, max: usize) -> usize {
        if self.rate_pps == 0 {
            return max;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = (started.elapsed().as_nanos() * u128::from(self.rate_pps) / 1_000_000_000) as u64 + self.unpaced;
        (due.saturating_sub(self.emitted) as usize).min(max)
    }
}

impl Source for SimSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        if self.ended {
            return Ok(Poll::Ended);
        }
        let allowed = self.allowance(max);
        if allowed == 0 {
            return Ok(Poll::Idle);
        }
        let mut n = 0;
        while n < allowed {
            match self.traffic.next_frame(&mut self.buf) {
                Some((ts_ns, len)) => {
                    let frame =
                        Frame { ts_ns, wire_len: len as u32, data: &self.buf[..len], source: 0, dir: LinkDir::Unknown };
                    sink(&frame);
                    n += 1;
                }
                None => {
                    self.ended = true;
                    break;
                }
            }
        }
        self.emitted += n as u64;
        if n == 0 {
            Ok(Poll::Ended)
        } else {
            Ok(Poll::Frames(n))
        }
    }

    fn is_finite_offline(&self) -> bool {
        self.rate_pps == 0
    }

    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }

    fn unpaced_first(&mut self, frames: u64) {
        self.unpaced = frames;
    }

    fn describe(&self) -> String {
        format!("sim:{}", self.spec_text)
    }
}

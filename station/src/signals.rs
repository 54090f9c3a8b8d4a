//! SIGINT and SIGTERM for the three binaries: the first asks for a clean
//! stop, a repeat within a second is the same request delivered twice, a
//! repeat later than that is the operator insisting.
//!
//! `timeout DUR cmd` (coreutils, without `--foreground`) sends its signal to
//! the child and then again to the child's whole process group, so the child
//! gets two SIGTERMs microseconds apart; a shell that forwards the terminal's
//! SIGINT to a child that got it from the terminal too does the same. Taken
//! as "a second signal, exit at once", that double delivery cost the app its
//! final files and the detector its flush.
//!
//! Guarantees:
//! - [`install`] registers, for SIGINT and SIGTERM, a handler that sets the
//!   stop flag (`signal_hook::flag::register`: in the handler itself, as
//!   before, so a loop woken by the signal already sees the flag), and starts
//!   the thread `cj-signals`, which sees every signal after the handler has
//!   run and applies [`Watch::on_signal`]:
//!   - the first: nothing more (the flag is set);
//!   - one less than [`DUPLICATE_WINDOW`] (1 s) after the first: the same
//!     stop request, ignored (one line says so);
//!   - one at least 1 s after the first: what the binary chose ([`Repeat`]):
//!     exit at once with its status, after one line saying what is lost (a
//!     stderr that takes no line within 0.2 s does not hold the exit), or
//!     carry on stopping, after one line saying why.
//! - The window is counted from the first signal, not from the latest: a
//!   burst of signals never keeps the process from its forced exit.
//! - SIGINT and SIGTERM are one request: SIGTERM after SIGINT is a repeat.
//! - No `unsafe` here: the handler is signal-hook's (it only stores to the
//!   flag and writes a byte to the thread's pipe); the decision and the log
//!   line are made on the thread, outside any handler; the forced exit is
//!   `_exit` (`signal_hook::low_level::exit`): no destructors, no atexit
//!   handlers, nothing more written, as the handler's exit did before.
//!
//! Not guaranteed:
//! - The instants are those at which `cj-signals` sees each signal, not the
//!   deliveries': a thread kept off the CPU for over a second between two
//!   deliveries of one request would take the second for a repeat.
//! - Standard signals do not queue: two deliveries before the handler ran
//!   are one signal to the process, seen once.
//! - SIGKILL ends the process regardless (what it loses is each binary's
//!   SIGKILL contract: see DESIGN.md).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A repeat of the stop signal less than this after the first is the same
/// request delivered twice (`timeout`, a forwarding shell), not a second one.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(1);

/// What a binary does with a stop signal that comes at least
/// [`DUPLICATE_WINDOW`] after the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeat {
    /// Exit at once with `status`; `loses` completes "exiting at once
    /// (status N) ..." with what is lost, e.g. "without the final files".
    Exit {
        /// The exit status.
        status: u8,
        /// What the forced exit loses, said in the log line.
        loses: &'static str,
    },
    /// Go on stopping; `why` says why a forced exit would be worse.
    Ignore {
        /// Said in the log line.
        why: &'static str,
    },
}

/// What one stop signal is, given when the first came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The first: the stop flag is set, the clean stop goes on.
    First,
    /// Less than [`DUPLICATE_WINDOW`] after the first (this long): the same request.
    Duplicate(Duration),
    /// At least [`DUPLICATE_WINDOW`] after the first (this long): [`Repeat`] applies.
    Repeat(Duration),
}

/// The decision rule, on the instants of the signals: the state of the
/// `cj-signals` thread (tests construct it with instants of their own).
#[derive(Clone, Debug, Default)]
pub struct Watch {
    first: Option<Instant>,
}

impl Watch {
    /// A watch that has seen no signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies a signal seen at `now` (instants from one clock, in the
    /// order seen; an earlier `now` than the first counts as no time after it).
    pub fn on_signal(&mut self, now: Instant) -> Delivery {
        match self.first {
            None => {
                self.first = Some(now);
                Delivery::First
            }
            Some(first) => {
                let after = now.saturating_duration_since(first);
                if after < DUPLICATE_WINDOW {
                    Delivery::Duplicate(after)
                } else {
                    Delivery::Repeat(after)
                }
            }
        }
    }
}

/// Installing the stop-signal handling failed (the process should not run
/// unstoppable: the binaries exit 1, station::cli's runtime failure).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// sigaction refused.
    #[error("cannot install the {signal} handler: {source}")]
    Handler {
        /// SIGINT or SIGTERM.
        signal: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The OS refused the thread.
    #[error("cannot start thread cj-signals (SIGINT/SIGTERM): {0}")]
    Thread(std::io::Error),
}

/// Sets `stop` on the first SIGINT or SIGTERM and handles repeats as
/// `repeat` says (see the module docs); `program` prefixes the log lines.
///
/// # Errors
/// [`SignalError`] when a handler cannot be installed or the thread cannot start.
pub fn install(program: &'static str, stop: &Arc<AtomicBool>, repeat: Repeat) -> Result<(), SignalError> {
    let names = [(SIGINT, "SIGINT"), (SIGTERM, "SIGTERM")];
    for (sig, signal) in names {
        signal_hook::flag::register(sig, Arc::clone(stop)).map_err(|source| SignalError::Handler { signal, source })?;
    }
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|source| SignalError::Handler { signal: "SIGINT/SIGTERM", source })?;
    std::thread::Builder::new()
        .name("cj-signals".into())
        .spawn(move || {
            let mut watch = Watch::new();
            for sig in signals.forever() {
                let name = names.iter().find(|(s, _)| *s == sig).map_or("signal", |(_, n)| n);
                match watch.on_signal(Instant::now()) {
                    Delivery::First => {}
                    Delivery::Duplicate(after) => crate::cj_info!(
                        "{program}: {name} again {:.3} s after the first: the same stop request delivered twice (as \
                         `timeout` sends it), ignored; {}",
                        after.as_secs_f64(),
                        match repeat {
                            Repeat::Exit { .. } => "a second signal 1 s or more after the first exits at once",
                            Repeat::Ignore { .. } => "the stop goes on",
                        }
                    ),
                    Delivery::Repeat(after) => match repeat {
                        Repeat::Exit { status, loses } => say_then_exit(
                            format!(
                                "{program}: {name} again {:.1} s after the first: exiting at once (status {status}) \
                                 {loses}",
                                after.as_secs_f64()
                            ),
                            status,
                        ),
                        Repeat::Ignore { why } => crate::cj_warn!(
                            "{program}: {name} again {:.1} s after the first: ignored, still stopping ({why})",
                            after.as_secs_f64()
                        ),
                    },
                }
            }
        })
        .map_err(SignalError::Thread)?;
    Ok(())
}

/// Writes `line` (the last before a non-zero exit: error priority) and
/// exits with `status` (`_exit`). The line is written by a thread of its own
/// and waited for at most [`SAY_WAIT`]: a stderr nobody reads (a full pipe)
/// must not hold the exit the operator asked for.
fn say_then_exit(line: String, status: u8) -> ! {
    let (said, done) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new().name("cj-signals-log".into()).spawn(move || {
        crate::cj_error!("{line}");
        let _ = said.send(());
    });
    // A thread that could not start dropped `said`: no wait then.
    let _ = done.recv_timeout(SAY_WAIT);
    signal_hook::low_level::exit(i32::from(status))
}

/// How long a forced exit waits for its log line to be written.
const SAY_WAIT: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_signal_is_the_stop_request() {
        let t0 = Instant::now();
        assert_eq!(Watch::new().on_signal(t0), Delivery::First);
    }

    #[test]
    fn a_repeat_within_a_second_of_the_first_is_a_duplicate() {
        let t0 = Instant::now();
        let mut w = Watch::new();
        w.on_signal(t0);
        // `timeout`'s second delivery: microseconds later; a slow forwarder: most of a second.
        assert_eq!(w.on_signal(t0), Delivery::Duplicate(Duration::ZERO));
        assert_eq!(w.on_signal(at(t0, 1)), Delivery::Duplicate(Duration::from_millis(1)));
        assert_eq!(w.on_signal(at(t0, 999)), Delivery::Duplicate(Duration::from_millis(999)));
    }

    #[test]
    fn a_repeat_a_second_or_more_after_the_first_is_a_forced_request() {
        let t0 = Instant::now();
        let mut w = Watch::new();
        w.on_signal(t0);
        assert_eq!(w.on_signal(at(t0, 1000)), Delivery::Repeat(Duration::from_secs(1)));
        assert_eq!(w.on_signal(at(t0, 5000)), Delivery::Repeat(Duration::from_secs(5)));
    }

    #[test]
    fn the_window_counts_from_the_first_signal_not_the_latest_duplicate() {
        // Signals every 0.6 s: the second is a duplicate, the third (1.2 s
        // after the first) is a repeat, although only 0.6 s after the second.
        let t0 = Instant::now();
        let mut w = Watch::new();
        assert_eq!(w.on_signal(t0), Delivery::First);
        assert!(matches!(w.on_signal(at(t0, 600)), Delivery::Duplicate(_)));
        assert_eq!(w.on_signal(at(t0, 1200)), Delivery::Repeat(Duration::from_millis(1200)));
    }

    #[test]
    fn an_instant_before_the_first_counts_as_no_time_after_it() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = Watch::new();
        w.on_signal(t0);
        assert_eq!(w.on_signal(t0 - Duration::from_secs(3)), Delivery::Duplicate(Duration::ZERO));
    }
}

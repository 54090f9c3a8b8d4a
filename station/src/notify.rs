//! systemd service notifications (the `sd_notify` protocol, through the
//! `sd-notify` crate: pure Rust, no libsystemd) for the three binaries.
//!
//! A native unit (`sysconfig/conjure-*.service`, `Type=notify`) starts a
//! binary through its start script, which `exec`s it, so the binary is the
//! unit's main process and these messages are accepted:
//!
//! - `READY=1` (with a `STATUS=` line) once setup is done: queues attached,
//!   workers started, the source open;
//! - `WATCHDOG=1` at half of `WATCHDOG_USEC` (the unit's `WatchdogSec=`), sent
//!   from the loop that proves the process makes progress, never from a
//!   thread of its own (a timer thread would keep pinging for a stuck process);
//! - `STATUS=...` whenever a binary has something to show in `systemctl status`;
//! - `STOPPING=1` when a clean stop begins.
//!
//! Outside systemd (a container) the same watchdog runs in the process when
//! `CJ_WATCHDOG_SEC` is set ([`Notifier::with_own_watchdog`]): a thread
//! `cj-watchdog` exits the process with status [`WATCHDOG_EXIT`] (one line
//! first) once the loop has not called [`Notifier::alive`] for that long, so
//! that the container's restart policy (`restart: on-failure`) starts it
//! again, as systemd restarts a unit whose watchdog fired. It is armed from
//! [`Notifier::ready`] and disarmed by [`Notifier::stopping`] (a stop has its
//! own timeouts: compose's `stop_grace_period`). Docker does not act on an
//! unhealthy health check; this is what restarts a hung process there.
//!
//! Guarantees: without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`)
//! every call returns at once and sends nothing. A failed send is reported on
//! stderr once per process and otherwise ignored: a missing notification is
//! systemd's to report (the unit fails to start or the watchdog fires).
//! [`Notifier::alive`] costs one clock read when no ping is due, so it may sit
//! in a loop that runs once per batch, never per packet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// Exit status of a process its own watchdog ended (`EX_SOFTWARE`).
pub const WATCHDOG_EXIT: i32 = 70;

/// A connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    /// Program name for the one warning line (`cj-balancer`).
    program: &'static str,
    /// `NOTIFY_SOCKET` is set.
    enabled: bool,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on.
    ping_every: Option<Duration>,
    /// When the last `WATCHDOG=1` went out (or when this was created).
    last_ping: Instant,
    /// A send failed already (the warning is printed once).
    warned: bool,
    /// The in-process watchdog (`CJ_WATCHDOG_SEC`, outside systemd).
    own: Option<OwnWatchdog>,
}

/// What the loop shares with the `cj-watchdog` thread.
#[derive(Debug)]
struct OwnWatchdog {
    /// When the loop last proved progress, in ms since `epoch`.
    beat_ms: Arc<AtomicU64>,
    /// Watched only between `ready` and `stopping`.
    armed: Arc<AtomicBool>,
    epoch: Instant,
}

impl OwnWatchdog {
    fn beat(&self, now: Instant) {
        self.beat_ms.store(ms_since(self.epoch, now), Ordering::Relaxed);
    }
}

fn ms_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Whether a loop whose last beat was at `beat_ms` is overdue at `now_ms`.
fn overdue(beat_ms: u64, now_ms: u64, timeout: Duration) -> bool {
    now_ms.saturating_sub(beat_ms) > u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` in the environment.
    pub fn from_env(program: &'static str) -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let ping_every = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()).map(|d| d / 2);
        Self {
            program,
            enabled,
            ping_every: ping_every.filter(|_| enabled),
            last_ping: Instant::now(),
            warned: false,
            own: None,
        }
    }

    /// Outside systemd, with `timeout` (`CJ_WATCHDOG_SEC`): the watchdog in
    /// the process (module docs), armed at [`Notifier::ready`]. Under systemd
    /// (`NOTIFY_SOCKET` set) the unit's `WatchdogSec=` rules and this does
    /// nothing. A thread that cannot start costs one warning line.
    pub fn with_own_watchdog(self, timeout: Option<Duration>) -> Self {
        self.with_own_watchdog_ending(timeout, |line| {
            crate::cj_warn!("{line}");
            std::process::exit(WATCHDOG_EXIT)
        })
    }

    /// [`Notifier::with_own_watchdog`] calling `end` with the line to say (tests).
    fn with_own_watchdog_ending(mut self, timeout: Option<Duration>, end: fn(&str)) -> Self {
        let Some(timeout) = timeout.filter(|t| !t.is_zero() && !self.enabled) else { return self };
        let own = OwnWatchdog {
            beat_ms: Arc::new(AtomicU64::new(0)),
            armed: Arc::new(AtomicBool::new(false)),
            epoch: Instant::now(),
        };
        let (beat_ms, armed, epoch, program) =
            (Arc::clone(&own.beat_ms), Arc::clone(&own.armed), own.epoch, self.program);
        let spawned = std::thread::Builder::new().name("cj-watchdog".into()).spawn(move || loop {
            std::thread::sleep((timeout / 4).max(Duration::from_millis(10)));
            let now = ms_since(epoch, Instant::now());
            if armed.load(Ordering::Relaxed) && overdue(beat_ms.load(Ordering::Relaxed), now, timeout) {
                end(&format!(
                    "{program}: no progress for {} s (CJ_WATCHDOG_SEC): exiting with status {WATCHDOG_EXIT} for \
                     the restart policy to start it again",
                    timeout.as_secs()
                ));
                return;
            }
        });
        match spawned {
            Ok(_) => {
                self.ping_every = Some(timeout / 2);
                self.own = Some(own);
            }
            Err(e) => crate::cj_warn!("{}: warning: CJ_WATCHDOG_SEC: cannot start its thread ({e}): off", self.program),
        }
        self
    }

    /// True when running under a service manager that listens.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How often [`Notifier::alive`] pings: half the watchdog timeout, if there is one.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.ping_every
    }

    /// `READY=1` with a status line: setup is done.
    pub fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
        self.last_ping = Instant::now();
        if let Some(own) = &self.own {
            own.beat(self.last_ping);
            own.armed.store(true, Ordering::Relaxed);
        }
    }

    /// A `STATUS=` line for `systemctl status`.
    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// `STOPPING=1` with a status line: a clean stop has begun.
    pub fn stopping(&mut self, status: &str) {
        if let Some(own) = &self.own {
            own.armed.store(false, Ordering::Relaxed);
        }
        self.send(&[NotifyState::Stopping, NotifyState::Status(&one_line(status))]);
    }

    /// The caller made progress: sends `WATCHDOG=1` when half the watchdog
    /// timeout passed since the last ping. Cheap when nothing is due.
    pub fn alive(&mut self) {
        let Some(every) = self.ping_every else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(self.last_ping) >= every {
            self.last_ping = now;
            self.send(&[NotifyState::Watchdog]);
            if let Some(own) = &self.own {
                own.beat(now);
            }
        }
    }

    fn send(&mut self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            if !self.warned {
                self.warned = true;
                crate::cj_warn!("{}: warning: cannot notify systemd (NOTIFY_SOCKET): {e}", self.program);
            }
        }
    }
}

/// A status must be one line: the protocol separates assignments by newlines.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_one_line() {
        assert_eq!(one_line("a\nb\r\nc"), "a b  c");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_never_pings() {
        let mut n = Notifier {
            program: "test",
            enabled: false,
            ping_every: None,
            last_ping: Instant::now(),
            warned: false,
            own: None,
        };
        n.ready("x");
        n.alive();
        n.stopping("y");
        assert!(!n.warned);
        assert_eq!(n.watchdog_interval(), None);
    }

    #[test]
    fn alive_pings_only_when_due() {
        let mut n = Notifier {
            program: "test",
            enabled: false,
            ping_every: Some(Duration::from_secs(3600)),
            last_ping: Instant::now(),
            warned: false,
            own: None,
        };
        let before = n.last_ping;
        n.alive();
        assert_eq!(n.last_ping, before, "not due yet");
        // Due: the last ping lies a whole interval back, so `alive` pings and moves it.
        let long_ago = Instant::now() - Duration::from_secs(2);
        n.ping_every = Some(Duration::from_secs(1));
        n.last_ping = long_ago;
        n.alive();
        assert!(n.last_ping > long_ago, "a due ping must be sent and recorded");
    }

    #[test]
    fn a_loop_is_overdue_only_past_the_whole_timeout() {
        let t = Duration::from_secs(30);
        assert!(!overdue(1_000, 31_000, t), "exactly the timeout: not yet");
        assert!(overdue(1_000, 31_001, t));
        assert!(!overdue(5_000, 1_000, t), "a beat after the look (a race of the two threads): not overdue");
    }

    static ENDED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    #[test]
    fn the_own_watchdog_ends_a_process_that_stops_calling_alive_only_while_armed() {
        fn end(line: &str) {
            ENDED.lock().unwrap().push(line.to_owned());
        }
        let timeout = Some(Duration::from_millis(100));
        let mut n = Notifier::from_env("cj-test").with_own_watchdog_ending(timeout, end);
        if n.enabled() {
            return; // run under systemd: the unit's watchdog rules
        }
        assert_eq!(n.watchdog_interval(), Some(Duration::from_millis(50)), "the loop feeds it as systemd's");
        // Not armed before `ready`: nothing happens however long the loop takes to start.
        std::thread::sleep(Duration::from_millis(400));
        assert!(ENDED.lock().unwrap().is_empty());
        // Armed, and the loop never calls `alive` again: it ends the process, saying why.
        n.ready("up");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ENDED.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the watchdog never fired");
            std::thread::sleep(Duration::from_millis(20));
        }
        let line = ENDED.lock().unwrap()[0].clone();
        assert!(line.starts_with("cj-test: no progress for 0 s (CJ_WATCHDOG_SEC): exiting with status 70"), "{line}");
        // Off: no thread, no interval.
        let off = Notifier::from_env("cj-test").with_own_watchdog_ending(None, end);
        assert_eq!(off.watchdog_interval(), None);
    }
}

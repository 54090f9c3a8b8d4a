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
//! Guarantees: without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`)
//! every call returns at once and sends nothing. A failed send is reported on
//! stderr once per process and otherwise ignored: a missing notification is
//! systemd's to report (the unit fails to start or the watchdog fires).
//! [`Notifier::alive`] costs one clock read when no ping is due, so it may sit
//! in a loop that runs once per batch, never per packet.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

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
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` in the environment.
    pub fn from_env(program: &'static str) -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let ping_every = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()).map(|d| d / 2);
        Self { program, enabled, ping_every: ping_every.filter(|_| enabled), last_ping: Instant::now(), warned: false }
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
    }

    /// A `STATUS=` line for `systemctl status`.
    pub fn status(&mut self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    /// `STOPPING=1` with a status line: a clean stop has begun.
    pub fn stopping(&mut self, status: &str) {
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
        let mut n =
            Notifier { program: "test", enabled: false, ping_every: None, last_ping: Instant::now(), warned: false };
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
}

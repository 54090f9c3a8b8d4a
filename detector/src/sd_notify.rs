//! systemd readiness and watchdog notifications (`sd_notify` protocol), without
//! libsystemd and without unsafe code.
//!
//! Guarantees: when `NOTIFY_SOCKET` is unset (not under systemd, or
//! `Type=simple`), every call does nothing. Otherwise each call sends one
//! datagram (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...`) to that
//! socket, path or abstract (`@name`); failures are ignored, since a missing
//! notification is systemd's to report. Never called on a hot path.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager, if there is one.
#[derive(Debug)]
pub struct Notifier {
    sock: Option<(UnixDatagram, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` in the environment.
    pub fn from_env() -> Self {
        let path = std::env::var("NOTIFY_SOCKET").ok().filter(|p| !p.is_empty());
        let sock = path.and_then(|p| UnixDatagram::unbound().ok().map(|s| (s, p)));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        Self { sock, watchdog }
    }

    /// How often to send `WATCHDOG=1` (half the watchdog timeout), if asked.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    /// Sends `state` (e.g. `READY=1`).
    pub fn notify(&self, state: &str) {
        let Some((sock, path)) = &self.sock else {
            return;
        };
        let _ = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
            }
            None => sock.send_to(state.as_bytes(), path),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: Some((UnixDatagram::unbound().unwrap(), path.to_str().unwrap().to_string())),
            watchdog: Some(Duration::from_secs(10)),
        };
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn does_nothing_without_a_socket() {
        let n = Notifier { sock: None, watchdog: None };
        n.notify("READY=1");
        assert_eq!(n.watchdog_interval(), None);
    }
}

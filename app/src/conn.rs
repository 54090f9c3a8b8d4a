//! The connections of cj-app's service endpoints (`/metrics`, the query
//! socket): each served on a thread of its own, a few at once, with one
//! deadline for the whole request and one for the whole answer.
//!
//! Guarantees:
//! - No client can hold an endpoint for the others: every accepted connection
//!   is served on its own thread (`cj-metrics-conn`, `cj-query-conn`) while the
//!   endpoint's thread goes back to `accept(2)`.
//! - A request must be complete within [`REQUEST_DEADLINE`] of the connection
//!   being accepted, however it trickles in: [`Timed`] sets the socket's
//!   timeout to what is left of one deadline before every read (and write),
//!   so a client sending one byte a second is cut off like a silent one.
//!   The answer has its own total deadline (each endpoint says which).
//! - At most [`MAX_AT_ONCE`] connections of one endpoint are served at once;
//!   one accepted beyond that is closed at once, unread, and counted
//!   ([`refused`], exported as `cj_app_connections_refused_total{endpoint}`).
//!   A connection whose thread cannot be started is closed and counted the
//!   same way.
//!
//! Not guaranteed: fairness beyond the cap: [`MAX_AT_ONCE`] clients that each
//! use their whole deadline keep the others out for that long (they are
//! refused, not queued); the time the main loop takes to answer
//! ([`crate::control::ASK_TIMEOUT`]) comes on top of the request's deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections of one endpoint served at once.
pub const MAX_AT_ONCE: usize = 8;

/// Time a client has to send its whole request, from its connection's accept.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// Connections of `/metrics` refused (over the cap), since the app started.
static METRICS_REFUSED: AtomicU64 = AtomicU64::new(0);
/// Connections of the query socket refused, likewise.
static QUERY_REFUSED: AtomicU64 = AtomicU64::new(0);

/// One endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /metrics` (`crate::metrics`).
    Metrics,
    /// The query socket (`crate::query`).
    Query,
}

impl Endpoint {
    /// Its label value and thread name part.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Metrics => "metrics",
            Endpoint::Query => "query",
        }
    }

    fn refused(self) -> &'static AtomicU64 {
        match self {
            Endpoint::Metrics => &METRICS_REFUSED,
            Endpoint::Query => &QUERY_REFUSED,
        }
    }
}

/// Connections of `endpoint` refused since the app started (every endpoint of
/// that kind in this process).
pub fn refused(endpoint: Endpoint) -> u64 {
    endpoint.refused().load(Ordering::Relaxed)
}

/// A socket whose timeouts can be set (TCP or Unix stream).
pub trait Timeouts {
    /// `SO_RCVTIMEO`.
    fn read_timeout(&self, t: Duration) -> io::Result<()>;
    /// `SO_SNDTIMEO`.
    fn write_timeout(&self, t: Duration) -> io::Result<()>;
}

impl Timeouts for TcpStream {
    fn read_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
    fn write_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

impl Timeouts for UnixStream {
    fn read_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))
    }
    fn write_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_write_timeout(Some(t))
    }
}

/// A stream read and written against one deadline: before each call the
/// socket's timeout is set to what is left, and once nothing is left the call
/// fails with `TimedOut` without touching the socket.
#[derive(Debug)]
pub struct Timed<'a, S> {
    stream: &'a S,
    deadline: Instant,
}

impl<'a, S: Timeouts> Timed<'a, S> {
    /// `stream`, with `within` from now.
    pub fn new(stream: &'a S, within: Duration) -> Self {
        Timed { stream, deadline: Instant::now() + within }
    }

    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the connection's deadline passed"));
        }
        Ok(left)
    }
}

impl<'a, S: Timeouts> Read for Timed<'a, S>
where
    &'a S: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_timeout(self.left()?)?;
        let mut s = self.stream;
        s.read(buf)
    }
}

impl<'a, S: Timeouts> Write for Timed<'a, S>
where
    &'a S: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write_timeout(self.left()?)?;
        let mut s = self.stream;
        s.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut s = self.stream;
        s.flush()
    }
}

/// One served connection's place among the [`MAX_AT_ONCE`]; freed on drop
/// (also when its handler panics).
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves every connection of `incoming` with `handle` on a thread of its own,
/// at most [`MAX_AT_ONCE`] at once (see the module doc); returns when
/// `incoming` ends. Meant to run on the endpoint's own thread.
pub fn serve_each<S, I, F>(endpoint: Endpoint, incoming: I, handle: F)
where
    S: Send + 'static,
    I: Iterator<Item = io::Result<S>>,
    F: Fn(S) + Clone + Send + 'static,
{
    let active = Arc::new(AtomicUsize::new(0));
    for conn in incoming {
        let stream = match conn {
            Ok(stream) => stream,
            // Out of descriptors and the like: do not spin.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_AT_ONCE {
            active.fetch_sub(1, Ordering::AcqRel);
            endpoint.refused().fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        let slot = Slot(Arc::clone(&active));
        let handle = handle.clone();
        let started = std::thread::Builder::new().name(format!("cj-{}-conn", endpoint.name())).spawn(move || {
            let _slot = slot;
            handle(stream);
        });
        if started.is_err() {
            // The closure (with the stream and the slot) was dropped: closed and freed.
            endpoint.refused().fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Sends `byte` every 200 ms for up to 30 s (never 5 s of silence, never a
    /// whole request) and asserts the endpoint cut the connection off at its
    /// request deadline: not before it, and well before 20 s.
    pub(crate) fn assert_cut_off_while_trickling(mut w: impl Write, byte: &[u8]) {
        let t0 = Instant::now();
        let mut cut = None;
        for _ in 0..150 {
            if w.write_all(byte).is_err() {
                cut = Some(t0.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let cut = cut.expect("the trickling client was never cut off");
        assert!(cut >= REQUEST_DEADLINE, "cut off before its deadline: {cut:?}");
        assert!(cut < Duration::from_secs(20), "cut off only after {cut:?}");
    }

    #[test]
    fn a_timed_read_fails_once_the_deadline_passed_however_the_bytes_trickle() {
        let (a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            let mut b = b;
            // 20 s of one byte every 100 ms, unless the reader goes away first.
            for _ in 0..200 {
                if b.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let t0 = Instant::now();
        let mut timed = Timed::new(&a, Duration::from_millis(1500));
        let mut got = 0;
        let mut buf = [0u8; 1];
        let err = loop {
            match timed.read(&mut buf) {
                Ok(0) => panic!("the writer ended first"),
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        let waited = t0.elapsed();
        drop(a);
        writer.join().unwrap();
        assert!(got >= 2, "bytes did arrive before the deadline: {got}");
        assert!(matches!(err.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{err}");
        // The deadline is 1.5 s; the writer would go on for 20 s.
        assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15), "{waited:?}");
    }

    #[test]
    fn connections_beyond_the_cap_are_closed_at_once_and_counted_and_a_freed_slot_serves_again() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let before = refused(Endpoint::Query);
        // Each connection is held until its client closes it.
        std::thread::spawn(move || {
            serve_each(Endpoint::Query, listener.incoming(), |s: UnixStream| {
                let mut buf = [0u8; 16];
                while (&s).read(&mut buf).is_ok_and(|n| n > 0) {}
            })
        });
        let held: Vec<UnixStream> = (0..MAX_AT_ONCE).map(|_| UnixStream::connect(&path).unwrap()).collect();
        // Each held client is served: it can write and is not closed.
        for c in &held {
            (&*c).write_all(b"hello").unwrap();
        }
        let extra = UnixStream::connect(&path).unwrap();
        extra.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 1];
        assert_eq!((&extra).read(&mut buf).unwrap(), 0, "closed at once, not held until a timeout");
        assert!(refused(Endpoint::Query) > before);
        // Free one place: a new client is served again (held open, not closed).
        drop(held);
        let mut served = false;
        for _ in 0..300 {
            let c = UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            match (&c).read(&mut buf) {
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    served = true;
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        assert!(served, "no place came free after the held clients left");
    }
}

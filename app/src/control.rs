//! Questions from cj-app's service threads (`cj-metrics`, `cj-query`) to its
//! main loop, which alone owns the flow tables.
//!
//! Guarantees: the main loop answers between two polls of the record queues
//! ([`Control::answer_pending`] once per pass), so an answer is the state of
//! the tables after a whole batch, never halfway through a record, and the
//! tables need no lock. A thread waits at most [`ASK_TIMEOUT`] for its answer.
//!
//! Not guaranteed: an answer while the main loop writes a refresh of a very
//! large table (it then answers after the write, or the asker gives up).

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::Duration;

use crate::metrics::AppView;
use crate::query::{Request, Response};

/// How long a service thread waits for the main loop.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// One question, with where the answer goes.
#[derive(Debug)]
pub enum Ask {
    /// `cj-app query`.
    Query(Request, SyncSender<Response>),
    /// A scrape of `/metrics`.
    Metrics(SyncSender<AppView>),
}

/// A service thread's end.
#[derive(Clone, Debug)]
pub struct Asker(Sender<Ask>);

impl Asker {
    /// Asks for the app's part of a scrape; `None` when the main loop does
    /// not answer within [`ASK_TIMEOUT`] (or has ended).
    pub fn metrics(&self) -> Option<AppView> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.0.send(Ask::Metrics(tx)).ok()?;
        rx.recv_timeout(ASK_TIMEOUT).ok()
    }

    /// Asks a query; `None` as for [`Asker::metrics`].
    pub fn query(&self, request: Request) -> Option<Response> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.0.send(Ask::Query(request, tx)).ok()?;
        rx.recv_timeout(ASK_TIMEOUT).ok()
    }
}

/// The main loop's end.
#[derive(Debug)]
pub struct Control {
    rx: Receiver<Ask>,
}

impl Control {
    /// A new pair.
    pub fn new() -> (Control, Asker) {
        let (tx, rx) = mpsc::channel();
        (Control { rx }, Asker(tx))
    }

    /// Answers every question waiting, with `answer`; never blocks.
    pub fn answer_pending(&self, mut answer: impl FnMut(Ask)) {
        while let Ok(ask) = self.rx.try_recv() {
            answer(ask);
        }
    }
}

//! Questions from cj-app's service threads (`cj-metrics`, `cj-query`) to its
//! main loop, which alone owns the flow tables.
//!
//! Guarantees: the main loop answers between two polls of the record queues
//! ([`Control::answer_pending`] once per pass), so an answer is the state of
//! the tables after a whole batch, never halfway through a record, and the
//! tables need no lock. A thread waits at most [`ASK_TIMEOUT`] for its answer.
//!
//! - Queries cost the intake at most a tenth of the main loop while records
//!   come ([`Budget`]): after a query that took `t`, the next one waits `9t`
//!   unless the record queues are idle. Back-to-back queries of a group member
//!   (each about 40 ms at 1,000,000 rows) therefore slow the intake by at most
//!   10%, instead of stopping it; a waiting query keeps its place and its
//!   asker's [`ASK_TIMEOUT`]. Scrapes (`/metrics`) are cheap and not held.
//!
//! Not guaranteed: an answer while the main loop writes a refresh of a very
//! large table (it then answers after the write, or the asker gives up).

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::time::{Duration, Instant};

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
    /// Queries that wait for the [`Budget`], in the order asked.
    held: VecDeque<Ask>,
    budget: Budget,
}

impl Control {
    /// A new pair.
    pub fn new() -> (Control, Asker) {
        let (tx, rx) = mpsc::channel();
        (Control { rx, held: VecDeque::new(), budget: Budget::default() }, Asker(tx))
    }

    /// Answers the questions waiting, with `answer`; never blocks. Scrapes
    /// are answered at once; queries in order, as far as the [`Budget`] allows
    /// while `busy` (the record queues had records at the last poll).
    pub fn answer_pending(&mut self, busy: bool, mut answer: impl FnMut(Ask)) {
        while let Ok(ask) = self.rx.try_recv() {
            match ask {
                Ask::Metrics(_) => answer(ask),
                Ask::Query(..) => self.held.push_back(ask),
            }
        }
        while !self.held.is_empty() && self.budget.allows(Instant::now(), busy) {
            let Some(ask) = self.held.pop_front() else { break };
            let started = Instant::now();
            answer(ask);
            self.budget.spent(started, Instant::now());
        }
    }
}

/// The share of the main loop queries may take while records come: after a
/// query that took `t`, none before `9t` more has passed (at most 10%).
#[derive(Clone, Copy, Debug, Default)]
struct Budget {
    /// No query before this, unless the record queues are idle.
    next: Option<Instant>,
}

impl Budget {
    /// Parts of the loop that are not queries, per part that is.
    const REST: u32 = 9;

    fn allows(&self, now: Instant, busy: bool) -> bool {
        !busy || self.next.is_none_or(|next| now >= next)
    }

    fn spent(&mut self, started: Instant, ended: Instant) {
        self.next = Some(ended + ended.saturating_duration_since(started) * Self::REST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_holds_the_next_for_nine_times_its_cost_while_records_come() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = Budget::default();
        assert!(b.allows(t0, true), "the first query is answered at once");
        b.spent(t0, t0 + ms(40));
        assert!(!b.allows(t0 + ms(40), true), "right after a 40 ms query");
        assert!(!b.allows(t0 + ms(399), true), "before 9 x 40 ms more");
        assert!(b.allows(t0 + ms(400), true), "after 9 x 40 ms more: 10% of the loop");
        assert!(b.allows(t0 + ms(41), false), "idle queues: no wait");
    }

    #[test]
    fn held_queries_keep_their_order_and_scrapes_are_not_held() {
        let (mut control, asker) = Control::new();
        let q = |top: usize| {
            let (tx, _rx) = mpsc::sync_channel(1);
            Ask::Query(crate::query::Request { top: Some(top), ..Default::default() }, tx)
        };
        // A query just answered: the budget holds the next while busy.
        control.budget.next = Some(Instant::now() + Duration::from_secs(3600));
        for top in [1, 2, 3] {
            asker.0.send(q(top)).unwrap();
        }
        let (tx, _rx) = mpsc::sync_channel(1);
        asker.0.send(Ask::Metrics(tx)).unwrap();
        let seen = std::cell::RefCell::new(Vec::new());
        let note = |ask: Ask| {
            seen.borrow_mut().push(match ask {
                Ask::Query(r, _) => r.top.unwrap_or(0),
                Ask::Metrics(_) => 0,
            })
        };
        control.answer_pending(true, note);
        assert_eq!(*seen.borrow(), vec![0], "busy: only the scrape");
        control.answer_pending(false, note);
        assert_eq!(*seen.borrow(), vec![0, 1, 2, 3], "idle: the held queries, in order");
    }
}

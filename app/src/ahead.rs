//! The memory of the rows to come, made ready while cj-app waits for records.
//!
//! A worker emits the flows of its table when they end, and an offline
//! capture's flows mostly end together, at its end: a million flows become
//! two million new rows in a burst, and the app's intake of them paces the
//! worker's flush. Each new row's first touch of its memory (the kernel
//! zeroing a page) and the index's doublings were about a third of that
//! intake at 1M flows. The app is idle while the worker builds those flows,
//! and the worker's stats page says how many it holds: so, while idle, the
//! app makes the memory of those rows ready ([`crate::aggregate`]'s
//! `RowTable::prepare`).
//!
//! Guarantees:
//! - Only after a poll that read nothing (the record queues are empty), one
//!   step per such poll: at most [`STEP_PAGES`] pages of rows (a record that
//!   arrives meanwhile waits about a millisecond more), or one doubling of
//!   the index (no longer than the doubling the table's own growth would
//!   make at that size: 32 MiB at 2,000,000 rows).
//! - Rows to come: two (its directions) per flow in the tables of the
//!   workers whose record queues this app reads (`flows_active` of their
//!   stats pages, read at most every [`HINT_EVERY`] through a view kept
//!   mapped, opened again every [`REOPEN_EVERY`]), within the row limit
//!   (CJ_APP_MAX_ROWS) of each table in all.
//! - Only with the hosts and ports among the primitives: a flow's directions
//!   are then rows of their own (unless the same key was a row before), so the
//!   memory made ready is what the rows will take. With fewer primitives many
//!   flows share a row, and nothing is made ready.
//! - Counts, rows and files are the same with or without it: only where the
//!   app's time goes changes. A stats page that is missing or unreadable (a
//!   worker not started yet) counts as no flows.
//!
//! Not guaranteed: that the rows come. Flows whose keys are already rows, or
//! that a worker loses (a crash), leave memory made ready unused, up to the
//! row limit's worth: the same bound as the table's own growth.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::aggregate::Accounts;
use crate::settings::{Primitive, Primitives};

/// Pages of rows made ready per empty poll at most (4 MiB: about a millisecond here).
pub const STEP_PAGES: usize = 1024;

/// How often the workers' stats pages are read while idle.
pub const HINT_EVERY: Duration = Duration::from_millis(20);

/// How long a worker's stats page stays mapped before it is opened again (a
/// worker's page made anew, after the cluster directory was cleared, is then
/// followed).
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// The counter of a worker's stats page that holds the flows in its table.
const FLOWS_ACTIVE: &str = "flows_active";

/// Makes the memory of the rows to come ready while idle (see the module docs).
#[derive(Debug)]
pub struct Ahead {
    /// The stats page of each record queue's worker, in intake order; empty: off.
    pages: Vec<PathBuf>,
    /// Each page's view, the index of its `flows_active` and when it was
    /// opened (None: not opened, or not readable at the last try).
    views: Vec<Option<(shmq::CounterView, usize, Instant)>>,
    /// Rows to come per queue, from the last reading of the pages.
    coming: Vec<usize>,
    /// When the pages are read next.
    next_hint: Option<Instant>,
    /// Nothing left to make ready for the last reading.
    ready: bool,
}

impl Ahead {
    /// For the workers whose stats pages are `pages` (in intake order); off
    /// unless `primitives` hold both hosts and both ports.
    pub fn new(pages: Vec<PathBuf>, primitives: Primitives) -> Self {
        let per_flow = [Primitive::SrcHost, Primitive::DstHost, Primitive::SrcPort, Primitive::DstPort]
            .iter()
            .all(|&p| primitives.has(p));
        let pages = if per_flow { pages } else { Vec::new() };
        Ahead {
            coming: vec![0; pages.len()],
            views: pages.iter().map(|_| None).collect(),
            pages,
            next_hint: None,
            ready: true,
        }
    }

    /// After a poll that read nothing: reads the pages when due, then makes
    /// one step ready (at most [`STEP_PAGES`] pages of rows, or one doubling
    /// of an index). Returns the pages written.
    pub fn step(&mut self, accounts: &mut Accounts, now: Instant) -> usize {
        if self.pages.is_empty() {
            return 0;
        }
        if self.next_hint.is_none_or(|at| now >= at) {
            self.next_hint = Some(now + HINT_EVERY);
            let coming: Vec<usize> =
                (0..self.pages.len()).map(|i| self.flows_active(i, now).saturating_mul(2)).collect();
            if coming != self.coming {
                self.coming = coming;
                self.ready = false;
            }
        }
        if self.ready {
            return 0;
        }
        let written = accounts.prepare_rows(&self.coming, STEP_PAGES);
        self.ready = written == 0;
        written
    }
}

impl Ahead {
    /// The flows in the table of page `i`'s worker (0 when its page is
    /// missing, unreadable or has no such counter), through a view kept
    /// mapped for [`REOPEN_EVERY`].
    fn flows_active(&mut self, i: usize, now: Instant) -> usize {
        let (Some(view), Some(page)) = (self.views.get_mut(i), self.pages.get(i)) else { return 0 };
        if view.as_ref().is_none_or(|(_, _, opened)| now.saturating_duration_since(*opened) >= REOPEN_EVERY) {
            *view = shmq::CounterView::open(page).ok().and_then(|v| v.index_of(FLOWS_ACTIVE).map(|at| (v, at, now)));
        }
        view.as_ref().and_then(|(v, at, _)| v.get(*at)).map_or(0, |flows| usize::try_from(flows).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station::naming::{set_worker_stats_path, WORKER_COUNTERS};

    /// A worker's stats page under `dir` holding `flows` flows.
    fn worker_page(dir: &std::path::Path, flows: u64) -> (shmq::CounterPage, PathBuf) {
        let path = set_worker_stats_path(dir, 0, 0);
        let page = shmq::CounterPage::open_or_create(&path, WORKER_COUNTERS).unwrap();
        page.set(WORKER_COUNTERS.iter().position(|&n| n == FLOWS_ACTIVE).unwrap(), flows);
        (page, path)
    }

    /// Steps until nothing is left to do; returns the pages written.
    fn until_ready(a: &mut Ahead, acc: &mut Accounts, now: Instant) -> usize {
        let mut pages = 0;
        loop {
            let written = a.step(acc, now);
            if written == 0 {
                return pages;
            }
            pages += written;
        }
    }

    #[test]
    fn an_idle_app_makes_ready_two_rows_for_each_flow_a_worker_holds_and_follows_its_count() {
        let dir = tempfile::tempdir().unwrap();
        let (page, path) = worker_page(dir.path(), 50_000);
        let mut acc = Accounts::new(Primitives::default_set(), &[0], false).with_max_rows(1_000_000);
        let mut a = Ahead::new(vec![path], Primitives::default_set());
        let t0 = Instant::now();
        let pages = until_ready(&mut a, &mut acc, t0);
        // 100,000 rows of 112 bytes: 2,734 pages of rows, one write in each.
        assert!(pages >= 100_000 * 112 / 4096, "{pages} pages for 100,000 rows");
        assert!(acc.main_table().room_for_rows() >= 100_000);
        // More flows: read again once HINT_EVERY has passed, not before.
        page.set(WORKER_COUNTERS.iter().position(|&n| n == FLOWS_ACTIVE).unwrap(), 200_000);
        assert_eq!(a.step(&mut acc, t0), 0, "the page is read at most every HINT_EVERY");
        assert!(until_ready(&mut a, &mut acc, t0 + HINT_EVERY) > 0);
        assert!(acc.main_table().room_for_rows() >= 400_000);
        assert_eq!(acc.main_table().len(), 0, "no row was made");
    }

    #[test]
    fn in_fan_out_mode_each_queues_table_is_made_ready_for_its_own_workers_flows() {
        let dir = tempfile::tempdir().unwrap();
        let pages: Vec<PathBuf> = [(3, 30_000), (5, 1_000)]
            .iter()
            .map(|&(q, flows)| {
                let path = set_worker_stats_path(dir.path(), 0, q);
                let page = shmq::CounterPage::open_or_create(&path, WORKER_COUNTERS).unwrap();
                page.set(WORKER_COUNTERS.iter().position(|&n| n == FLOWS_ACTIVE).unwrap(), flows);
                path
            })
            .collect();
        let mut acc = Accounts::new(Primitives::default_set(), &[3, 5], true).with_max_rows(1_000_000);
        let mut a = Ahead::new(pages, Primitives::default_set());
        assert!(until_ready(&mut a, &mut acc, Instant::now()) > 0);
        let room: Vec<usize> = acc.queue_tables().iter().map(|(_, t)| t.room_for_rows()).collect();
        // Each at least its own two rows a flow; the second no more than its first chunk's worth.
        assert!(room[0] >= 60_000 && room[1] >= 2_000, "{room:?}");
        assert!(room[1] < 60_000, "the second queue's table made ready for the first's flows: {room:?}");
    }

    #[test]
    fn without_ports_or_a_readable_page_nothing_is_made_ready() {
        let dir = tempfile::tempdir().unwrap();
        let (_page, path) = worker_page(dir.path(), 50_000);
        let hosts = Primitives::parse_list(["src_host", "dst_host"], "test").unwrap();
        let mut acc = Accounts::new(hosts, &[0], false);
        let mut a = Ahead::new(vec![path], hosts);
        assert_eq!(until_ready(&mut a, &mut acc, Instant::now()), 0, "flows share rows without ports");
        let mut acc = Accounts::new(Primitives::default_set(), &[0], false);
        let mut a = Ahead::new(vec![dir.path().join("no-such-page")], Primitives::default_set());
        assert_eq!(until_ready(&mut a, &mut acc, Instant::now()), 0, "a missing page is no flows");
    }
}

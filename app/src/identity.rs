//! The accounting identity of DESIGN.md, checked from shared memory.
//!
//! For the queue set this app's detector reads:
//!
//! ```text
//! received (balancer page) = accounted_in_flows (packets of IP records)
//!                          + non_ip + malformed (frames of those records)
//!                          + queue_dropped (dropped in this set's packet-queue headers)
//!                          + records_lost_packets (workers' lost_packets)
//!                          + diverted (workers' diverted_packets: flow divert
//!                            handed them to a tun device instead of a flow)
//!                          + worker_crash_lost (a killed worker's flows: see
//!                            [`Terms::worker_crash_lost`])
//! ```
//!
//! `mirrored` and `tun_dropped` (workers' `mirrored_packets`,
//! `tun_dropped_packets`) are shown in the terms too but are not terms:
//! mirrored packets are also in flows, and tun drops are mirrored or diverted.
//!
//! `capture_dropped` is shown beside it: those packets were never received.
//! In fan-out mode every queue gets every packet, so the identity is checked
//! per queue: received = queue q's frames + dropped_q + lost_q.
//!
//! Guarantees: every term is reported, read through read-only mappings
//! (`QueueFile::read_stats`, `CounterPage::read`) without attaching; the
//! verdict is one of `holds`, `broken` (final and the sides differ),
//! `in_progress` (the pipeline has not ended: the difference is in flight), or
//! `unchecked` with the reason (no balancer page: the app runs alone; this
//! detector reads only part of the set; a packet queue header is missing).

use std::path::Path;

use shmq::{CounterPage, QueueFile};
use station::naming::{self, balancer_counter, worker_counter, BALANCER_COUNTERS, WORKER_COUNTERS};

use crate::aggregate::Totals;

/// What the app itself accounted, per record queue (intake order).
#[derive(Clone, Debug)]
pub struct AppSide<'a> {
    /// Queue numbers.
    pub queues: &'a [u32],
    /// Totals of the records read from each.
    pub totals: &'a [Totals],
    /// Records skipped over by sequence gaps, all queues.
    pub records_missing: u64,
    /// Every record queue ended and was drained.
    pub complete: bool,
    /// The app has just emptied every record queue (true when `complete`, and
    /// after the drain that follows SIGINT/SIGTERM).
    pub drained: bool,
    /// ZBALANCE_HASH_MODE = 2.
    pub fan_out: bool,
    /// CJ_QUEUE_SET.
    pub set: u32,
}

/// The identity terms of one queue (fan-out) or of the whole set.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Terms {
    /// Queue number (fan-out), or None for the whole set.
    pub queue: Option<u32>,
    /// Frames the balancer received.
    pub received: u64,
    /// Packets in IP flow records.
    pub accounted_in_flows: u64,
    /// Frames in non-IP records.
    pub non_ip: u64,
    /// Frames in malformed records.
    pub malformed: u64,
    /// Dropped at full packet queues (queue headers).
    pub queue_dropped: u64,
    /// Packets of records the workers could not queue.
    pub records_lost_packets: u64,
    /// Packets the workers diverted to their tun devices (not in flows).
    pub diverted: u64,
    /// Packets a killed worker had taken off its packet queue and not yet
    /// published in a record (the flows in its table when it died): packet
    /// queue releases minus the packets of the records the app read, lost
    /// records and diverted packets, for a worker whose page counts an unclean
    /// restart, once the run is final. Zero otherwise.
    pub worker_crash_lost: u64,
    /// Not a term: packets the workers mirrored to tun devices (also in flows).
    pub mirrored: u64,
    /// Not a term: mirrored or diverted packets the tun devices did not take.
    pub tun_dropped: u64,
    /// The sum of the six terms above.
    pub accounted: u64,
    /// received - accounted.
    pub difference: i64,
}

impl Terms {
    fn finish(mut self) -> Self {
        self.accounted = self.accounted_in_flows
            + self.non_ip
            + self.malformed
            + self.queue_dropped
            + self.records_lost_packets
            + self.diverted
            + self.worker_crash_lost;
        self.difference = self.received as i64 - self.accounted as i64;
        self
    }

    fn text(&self) -> String {
        let mut t = format!(
            "in flows {} + non-IP {} + malformed {} + queue dropped {} + records lost {}",
            self.accounted_in_flows, self.non_ip, self.malformed, self.queue_dropped, self.records_lost_packets
        );
        if self.worker_crash_lost > 0 {
            t += &format!(" + lost in killed workers {}", self.worker_crash_lost);
        }
        // Flow divert's term only when it has something: the line stays as it was without CJ_TUN.
        if self.diverted + self.mirrored + self.tun_dropped > 0 {
            t += &format!(
                " + diverted {} (mirrored {}, dropped at tun {})",
                self.diverted, self.mirrored, self.tun_dropped
            );
        }
        t
    }
}

/// The verdict with every term.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    /// `holds`, `broken`, `in_progress` or `unchecked`.
    pub status: &'static str,
    /// The line printed in the summary.
    pub line: String,
    /// Why it is unchecked.
    pub reason: Option<String>,
    /// The queue set.
    pub set: u32,
    /// Terms for the whole set (non-fan-out) or the first queue (fan-out).
    pub terms: Terms,
    /// Per-queue terms in fan-out mode.
    pub per_queue: Vec<Terms>,
    /// Lost in the capture layer; not received, so outside the identity.
    pub capture_dropped: u64,
    /// The balancer's source ended and it closed every queue.
    pub balancer_ended: bool,
    /// The balancer stopped on a signal (its page's `ended` = 2): a live
    /// capture that was stopped.
    pub balancer_stopped: bool,
    /// A live pipeline stopped in order: the balancer stopped, every worker
    /// flushed and ended with its packet queue empty, and the app drained
    /// every record queue. Everything captured is in the app's tables, so the
    /// run is complete although its record queues stay open for a restart.
    pub stopped_in_order: bool,
    /// Records skipped over by sequence gaps (a non-zero value explains a broken identity).
    pub records_missing: u64,
    /// Records the workers report lost (their sequence numbers are expected gaps).
    pub records_lost: u64,
    /// Unreadable capture records the balancer counted (`source_errors` on
    /// its page): a source that stopped on them was not read in full, and the
    /// run is incomplete.
    pub source_errors: u64,
}

fn counter(page: &[(String, u64)], name: &str) -> u64 {
    page.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
}

/// Computes the identity for `app` from the pages and headers under `cluster_dir`.
///
/// When the balancer counted unreadable capture records (`source_errors`),
/// the line says so: the terms hold on what was received, but the source was
/// not read in full.
pub fn check(cluster_dir: &Path, app: &AppSide<'_>) -> Identity {
    let mut id = check_terms(cluster_dir, app);
    if id.source_errors > 0 {
        id.line += &format!(
            "; the capture source had {} unreadable record(s) (source_errors): it was not read in full, \
             so the run is incomplete",
            id.source_errors
        );
    }
    id
}

fn check_terms(cluster_dir: &Path, app: &AppSide<'_>) -> Identity {
    let mut id = Identity {
        status: "unchecked",
        line: String::new(),
        reason: None,
        set: app.set,
        terms: Terms::default(),
        per_queue: Vec::new(),
        capture_dropped: 0,
        balancer_ended: false,
        balancer_stopped: false,
        stopped_in_order: false,
        records_missing: app.records_missing,
        records_lost: 0,
        source_errors: 0,
    };
    // App-side terms, known in every case.
    let app_terms = |qi: usize| {
        let t = app.totals.get(qi).copied().unwrap_or_default();
        Terms {
            queue: app.queues.get(qi).copied(),
            accounted_in_flows: t.packets,
            non_ip: t.non_ip_frames,
            malformed: t.malformed_frames,
            ..Terms::default()
        }
    };
    let mut all = Totals::default();
    for t in app.totals {
        all.merge(t);
    }
    id.terms = if app.fan_out {
        app_terms(0)
    } else {
        Terms {
            accounted_in_flows: all.packets,
            non_ip: all.non_ip_frames,
            malformed: all.malformed_frames,
            ..Terms::default()
        }
    };

    let page_path = naming::balancer_stats_path(cluster_dir);
    let page = match CounterPage::read(&page_path) {
        Ok(p) => p,
        Err(e) => {
            return unchecked(
                id,
                format!(
                    "no balancer stats page at {} ({e}): the app ran without a balancer \
                     (or with another CJ_CLUSTER_ID / CJ_SHM_DIR), so there is no received count",
                    page_path.display()
                ),
            )
        }
    };
    let b = |i: usize| counter(&page, BALANCER_COUNTERS[i]);
    let received = b(balancer_counter::RECEIVED);
    id.capture_dropped = b(balancer_counter::CAPTURE_DROPPED);
    id.balancer_ended = b(balancer_counter::ENDED) == 1;
    id.source_errors = b(balancer_counter::SOURCE_ERRORS);
    let queues_per_set = b(balancer_counter::QUEUES_PER_SET);
    let balancer_fan_out = b(balancer_counter::HASH_MODE) == station::config::HashMode::FanOut.number();
    if balancer_fan_out != app.fan_out {
        return unchecked(
            id,
            format!(
                "the balancer runs ZBALANCE_HASH_MODE={} but this app was configured with {}: \
                 set the same ZBALANCE_HASH_MODE for both",
                b(balancer_counter::HASH_MODE),
                if app.fan_out { "2 (fan-out)" } else { "a non-fan-out mode" }
            ),
        );
    }

    let mut per_queue = Vec::new();
    // A live pipeline stopped in order (balancer, detector, app) is final too:
    // the balancer says on its page that it stopped, every worker flushed and
    // ended with its packet queue empty, and the app drained every record
    // queue. (The pages, not process liveness: under compose each process has
    // its own PID namespace.)
    let balancer_stopped = b(balancer_counter::ENDED) == 2;
    id.balancer_stopped = balancer_stopped;
    let mut stopped_in_order = app.drained && (id.balancer_ended || balancer_stopped);
    for (qi, &q) in app.queues.iter().enumerate() {
        let pq = naming::packet_queue_path(cluster_dir, app.set, q);
        let (dropped, released) = match QueueFile::read_stats(&pq) {
            Ok((_, stats)) => {
                if stats.in_flight() != 0 {
                    stopped_in_order = false;
                }
                (stats.dropped, stats.dequeued)
            }
            Err(e) => return unchecked(id, format!("cannot read packet queue {}: {e}", pq.display())),
        };
        let worker = CounterPage::read(&naming::set_worker_stats_path(cluster_dir, app.set, q)).ok();
        let worker_value = |i: usize| worker.as_ref().map_or(0, |p| counter(p, WORKER_COUNTERS[i]));
        if worker_value(worker_counter::ENDED) != 1 {
            stopped_in_order = false;
        }
        let lost = worker_value(worker_counter::LOST_PACKETS);
        id.records_lost += worker_value(worker_counter::RECORDS_LOST);
        let diverted = worker_value(worker_counter::DIVERTED_PACKETS);
        let mine = app_terms(qi);
        // A killed worker's flows: what left the packet queue and reached no
        // record. Only for a worker that was killed, and only once it has ended
        // (before that, live flows hold packets too); any other difference
        // stays a broken identity.
        let worker_crash_lost =
            if worker_value(worker_counter::UNCLEAN_RESTARTS) > 0 && worker_value(worker_counter::ENDED) == 1 {
                released.saturating_sub(mine.accounted_in_flows + mine.non_ip + mine.malformed + lost + diverted)
            } else {
                0
            };
        per_queue.push(
            Terms {
                received,
                queue_dropped: dropped,
                records_lost_packets: lost,
                diverted,
                worker_crash_lost,
                mirrored: worker_value(worker_counter::MIRRORED_PACKETS),
                tun_dropped: worker_value(worker_counter::TUN_DROPPED_PACKETS),
                ..mine
            }
            .finish(),
        );
    }

    id.stopped_in_order = stopped_in_order;
    let final_ = (app.complete && id.balancer_ended) || stopped_in_order;
    let not_final = if !id.balancer_ended && !balancer_stopped {
        "identity not final yet (the balancer is still running)"
    } else {
        "identity not final (the app stopped before every record queue ended)"
    };
    let capture = format!("; dropped at capture (not received): {}", id.capture_dropped);
    let missing = if app.records_missing > 0 {
        format!(
            "; {} records missing from the record sequences (workers report {} lost)",
            app.records_missing, id.records_lost
        )
    } else {
        String::new()
    };
    if app.fan_out {
        id.terms = per_queue.first().cloned().unwrap_or_default();
        let bad: Vec<&Terms> = per_queue.iter().filter(|t| t.difference != 0).collect();
        let parts: Vec<String> = per_queue
            .iter()
            .map(|t| format!("queue {}: received {} = {}", t.queue.unwrap_or(0), t.received, t.text()))
            .collect();
        id.per_queue = per_queue.clone();
        if bad.is_empty() {
            id.status = if final_ { "holds" } else { "in_progress" };
            id.line = format!(
                "identity holds{} per queue (fan-out): {}{capture}{missing}",
                if final_ { "" } else { " so far" },
                parts.join("; ")
            );
        } else {
            let diffs: Vec<String> =
                bad.iter().map(|t| format!("queue {} differs by {}", t.queue.unwrap_or(0), t.difference)).collect();
            id.status = if final_ { "broken" } else { "in_progress" };
            id.line = format!(
                "{} (fan-out): {}: {}{capture}{missing}",
                if final_ { "IDENTITY BROKEN" } else { not_final },
                diffs.join(", "),
                parts.join("; ")
            );
        }
        return id;
    }

    // Non-fan-out: the app must see every queue of the set.
    let mine: Vec<u64> = app.queues.iter().map(|&q| u64::from(q)).collect();
    let whole: Vec<u64> = (0..queues_per_set).collect();
    if mine != whole {
        return unchecked(
            id,
            format!(
                "this detector reads queues {:?} of set {} but the balancer feeds {} queues: \
                 its received count covers all of them",
                app.queues, app.set, queues_per_set
            ),
        );
    }
    let mut t = Terms { received, ..id.terms.clone() };
    for q in &per_queue {
        t.queue_dropped += q.queue_dropped;
        t.records_lost_packets += q.records_lost_packets;
        t.diverted += q.diverted;
        t.worker_crash_lost += q.worker_crash_lost;
        t.mirrored += q.mirrored;
        t.tun_dropped += q.tun_dropped;
    }
    id.terms = t.finish();
    let t = &id.terms;
    if t.difference == 0 {
        id.status = if final_ { "holds" } else { "in_progress" };
        id.line = format!(
            "identity holds{}: received {} = {}{capture}{missing}",
            if final_ { "" } else { " so far" },
            t.received,
            t.text()
        );
    } else {
        id.status = if final_ { "broken" } else { "in_progress" };
        id.line = format!(
            "{}: received {} vs accounted {} ({}) differ by {}{capture}{missing}",
            if final_ { "IDENTITY BROKEN" } else { not_final },
            t.received,
            t.accounted,
            t.text(),
            t.difference
        );
    }
    id
}

fn unchecked(mut id: Identity, reason: String) -> Identity {
    id.status = "unchecked";
    id.line = format!("identity can't be checked: {reason}");
    id.reason = Some(reason);
    id
}

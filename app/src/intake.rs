//! Record intake: the app as the consumer of every record queue of its detector.
//!
//! Guarantees:
//! - Attaches to `rec-<q>` for every worker queue q (CJ_QUEUE_OFFSET + i),
//!   creating the queue file when the app starts first, so start order does not
//!   matter; continues at the queue's stored consumer index after a restart.
//! - Drains in batches of at most [`BATCH`] records per queue, round-robin over
//!   the queues, releasing the slots after each batch (one release store);
//!   [`Intake::poll_batch`] hands each batch's valid records at once, in the
//!   order read, and reads at most a given number per queue (cj-app's paced
//!   export takes only what it has room for).
//! - Every slot is copied out once, into the batch handed on (no reference
//!   into the shared slot outlives its pop); a slot too short for a
//!   record, or a record whose kind or end-reason byte is invalid, or an IP
//!   record whose IP version is not 4 or 6, is counted in `records_invalid` and
//!   skipped; nothing read from shared memory can make it panic.
//! - A record stamped with another FlowRecord layout version
//!   ([`FlowRecord::check_layout`]) is counted in `records_invalid` and
//!   skipped without reading its sequence number, with one warning per queue
//!   naming both versions. Not guaranteed: unstamped records (version byte 0)
//!   are accepted.
//! - Per queue, record sequence numbers are checked: a gap or a repeat is
//!   counted in `records_gap` (records skipped over in `records_missing`) and
//!   warned about once per queue; a sequence restarting at 0 is a producer
//!   restart, logged, not counted.
//! - [`Intake::poll_batch`] waits with the CJ_WAIT strategy only when every queue was
//!   empty in a whole round.
//! - Holding ([`Intake::hold_releases`], cj-app's checkpoint): slots are
//!   released only by [`Intake::release_all`], after the caller has saved what
//!   it read ([`Intake::saved`]); [`Intake::restore`] continues a saved intake
//!   exactly: it skips what the queue still holds of the saved records and
//!   refuses a queue that was re-created or read past the saved position.
//! - A queue ends when its producer closed it and everything was read. When
//!   every queue is found closed and drained by an earlier consumer at attach
//!   (left by a finished run), they are stale: the app waits for a producer to
//!   attach again instead of ending at once, so it may start before the
//!   detector. When only some are (an app restarted mid-run), those count as
//!   ended. Until a producer attaches, [`Intake::awaiting_new_run`] says so:
//!   cj-app then neither writes its files nor saves a checkpoint, so the
//!   files of the finished run are not replaced by an empty table.

use std::path::PathBuf;

use shmq::{Consumer, QueueFile, QueueSpec, QueueState, Waiter};
use station::config::StationConfig;
use station::naming;
use station::record::{FlowRecord, RecordKind, RECORD_LAYOUT_VERSION};

/// Records read from one queue before its slots are released and the next queue is served.
pub const BATCH: usize = 256;

/// A record queue that cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open record queue {path}: {source}")]
pub struct IntakeError {
    /// The queue file.
    pub path: PathBuf,
    /// Why.
    pub source: shmq::QueueError,
}

/// Counters of one queue's intake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IntakeStats {
    /// Valid records handed on.
    pub records: u64,
    /// Records skipped as invalid.
    pub records_invalid: u64,
    /// Sequence discontinuities (gaps and repeats).
    pub records_gap: u64,
    /// Records skipped over by forward gaps.
    pub records_missing: u64,
    /// The producer closed the queue and everything was read.
    pub ended: bool,
}

struct Source {
    queue: u32,
    path: PathBuf,
    consumer: Consumer,
    /// This app's claim on the queue's consumer end.
    _claim: shmq::EndLock,
    next_seq: Option<u64>,
    warned: bool,
    /// A record of another layout version was warned about.
    warned_layout: bool,
    stats: IntakeStats,
    /// Every queue was already closed and drained by an earlier consumer when
    /// the app attached (a finished run): this one does not count as ended until
    /// a producer attaches again (this is the producer-attach count seen then).
    stale: Option<u32>,
}

/// One queue's intake as saved in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    /// The queue number.
    pub queue: u32,
    /// Records popped from it (its consumer position) when saved.
    pub position: u64,
    /// The sequence number expected next.
    pub next_seq: Option<u64>,
    /// Its counters.
    pub stats: IntakeStats,
}

/// Why a saved intake cannot be continued.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Other queues than the saved ones.
    #[error("the checkpoint is of record queues {saved:?}, this cj-app reads {now:?}")]
    Queues {
        /// Saved.
        saved: Vec<u32>,
        /// Now.
        now: Vec<u32>,
    },
    /// Not the queue the checkpoint read: it holds fewer records than the
    /// checkpoint read, or no consumer ever released a slot of it although
    /// the checkpoint read records of it (a new queue that has already had
    /// more records than the old one).
    #[error(
        "{path}: the checkpoint read {saved} records of it, the queue has had {published}{}",
        if *.published < *.saved {
            ": the queue was re-created (a reboot, or its directory was cleared) since the checkpoint"
        } else {
            " and no reader ever gave one back: the queue was re-created since the checkpoint (a reboot, or its directory was cleared), or the app that saved it was killed before it gave any back (every record is still queued)"
        }
    )]
    Recreated {
        /// The queue file.
        path: String,
        /// Records read at the checkpoint.
        saved: u64,
        /// Records the queue has had.
        published: u64,
        /// No slot of the queue was ever released by a consumer.
        never_released: bool,
    },
    /// Released past the checkpoint: another consumer read it since, or the
    /// checkpoint is an older copy of the file.
    #[error(
        "{path}: records up to {released} were released by a consumer, the checkpoint read only {saved}: another cj-app read this queue since the checkpoint, or the checkpoint file is an older copy"
    )]
    ReadPast {
        /// The queue file.
        path: String,
        /// Records read at the checkpoint.
        saved: u64,
        /// Released by some consumer.
        released: u64,
    },
    /// Released past the checkpoint, whose file was cut inside a frame: it
    /// lost the saves that had released them.
    #[error(
        "{path}: records up to {released} were released, the checkpoint holds saves up to {saved} only: its file ends inside a frame (at byte {cut_at}), cut from outside or copied while written (a kill never leaves this), and lost the later saves"
    )]
    CutCheckpoint {
        /// The queue file.
        path: String,
        /// Records read at the last save the file holds whole.
        saved: u64,
        /// Released by some consumer.
        released: u64,
        /// Where the checkpoint file's cut frame starts.
        cut_at: u64,
    },
}

/// What one call of [`Intake::poll_batch`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// Read this many slots.
    Progress(usize),
    /// Nothing to read (after waiting a little).
    Idle,
    /// Every queue has ended and is drained.
    AllEnded,
}

/// The consumer side of every record queue.
pub struct Intake {
    sources: Vec<Source>,
    waiter: Waiter,
    /// Release only in [`Intake::release_all`].
    hold: bool,
    /// The records of the queue being read ([`Intake::poll_batch`]): [`BATCH`]
    /// places, the valid ones first.
    batch: Vec<FlowRecord>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").field("queues", &self.queues()).finish()
    }
}

impl Intake {
    /// Opens (or creates) and attaches to every record queue of `cfg`'s detector.
    ///
    /// # Errors
    /// A queue file exists with another layout, or cannot be created.
    pub fn attach(cfg: &StationConfig) -> Result<Self, IntakeError> {
        let dir = cfg.cluster_dir();
        let spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: cfg.record_queue_slots };
        let mut sources = Vec::new();
        for q in cfg.worker_queues() {
            let path = naming::set_record_queue_path(&dir, cfg.queue_set, q);
            let file =
                QueueFile::open_or_create(&path, spec).map_err(|source| IntakeError { path: path.clone(), source })?;
            // Held while the app runs: a second cj-app on these queues is refused (it would corrupt them).
            let claim =
                file.lock_end(shmq::End::Consumer).map_err(|source| IntakeError { path: path.clone(), source })?;
            let mut consumer = file.into_consumer();
            // A fresh queue starts at seq 0; after an app restart, continue from what comes.
            let next_seq = (consumer.stats().dequeued == 0).then_some(0);
            // The attach count before the state (Consumer::state_after).
            let attaches = consumer.producer_attaches();
            let stale = (consumer.state() == QueueState::Ended && consumer.stats().dequeued > 0).then_some(attaches);
            sources.push(Source {
                queue: q,
                path,
                consumer,
                _claim: claim,
                next_seq,
                warned: false,
                warned_layout: false,
                stats: IntakeStats::default(),
                stale,
            });
        }
        if sources.iter().all(|s| s.stale.is_some()) {
            for s in &sources {
                station::cj_info!(
                    "cj-app: {} was closed and drained by an earlier run; waiting for its detector worker to attach",
                    s.path.display()
                );
            }
        } else {
            // An app restarted mid-run: queues already finished stay finished.
            for s in &mut sources {
                s.stale = None;
            }
        }
        Ok(Intake {
            sources,
            waiter: Waiter::new(cfg.wait.strategy()),
            hold: false,
            batch: vec![FlowRecord::default(); BATCH],
        })
    }

    /// From now on slots are released only by [`Intake::release_all`].
    pub fn hold_releases(&mut self) {
        self.hold = true;
        for s in &mut self.sources {
            s.consumer.hold_releases();
        }
    }

    /// Whether some queue has half of its slots or more popped and not
    /// released: the caller should save and [`Intake::release_all`] now, before
    /// its producer has to wait for room.
    pub fn should_release(&self) -> bool {
        self.sources.iter().any(|s| s.consumer.unreleased() >= s.consumer.capacity() / 2)
    }

    /// Whether some queue has three quarters of its slots popped and not
    /// released: the intake should wait for the checkpoint that releases
    /// them rather than leave the producer no room.
    pub fn must_release(&self) -> bool {
        self.sources.iter().any(|s| s.consumer.unreleased() >= s.consumer.capacity() - s.consumer.capacity() / 4)
    }

    /// Whether some queue has records popped and not released.
    pub fn holding(&self) -> bool {
        self.sources.iter().any(|s| s.consumer.unreleased() > 0)
    }

    /// Gives every popped slot back to the producers.
    pub fn release_all(&mut self) {
        for s in &mut self.sources {
            s.consumer.release();
        }
    }

    /// What a checkpoint keeps of the intake.
    pub fn saved(&self) -> Vec<SavedQueue> {
        self.sources
            .iter()
            .map(|s| SavedQueue {
                queue: s.queue,
                position: s.consumer.position(),
                next_seq: s.next_seq,
                stats: s.stats,
            })
            .collect()
    }

    /// Continues a saved intake: the counters and sequence checks go on from
    /// `saved`, and records the checkpoint already read that the queue still
    /// holds (popped but not released when the app stopped) are skipped.
    /// Returns how many were skipped.
    ///
    /// `cut_at`: the checkpoint file was cut there ([`crate::checkpoint::Loaded::cut_at`]),
    /// which names the cause when a queue was read past the saved position.
    ///
    /// # Errors
    /// Other queues, a queue re-created since, or one read past the saved position.
    pub fn restore(&mut self, saved: &[SavedQueue], cut_at: Option<u64>) -> Result<u64, RestoreError> {
        self.check_restore(saved)?;
        // Check every queue before changing any.
        for (src, sv) in self.sources.iter_mut().zip(saved) {
            let path = src.path.display().to_string();
            let released = src.consumer.position();
            if released > sv.position {
                let saved = sv.position;
                return Err(match cut_at {
                    Some(cut_at) => RestoreError::CutCheckpoint { path, saved, released, cut_at },
                    None => RestoreError::ReadPast { path, saved, released },
                });
            }
        }
        let mut skipped = 0;
        for (src, sv) in self.sources.iter_mut().zip(saved) {
            while src.consumer.position() < sv.position {
                // Checked above: the queue has published past sv.position.
                if src.consumer.pop_with(|_| ()).is_none() {
                    break;
                }
                skipped += 1;
            }
            src.consumer.release();
            src.next_seq = sv.next_seq;
            src.stats = IntakeStats { ended: false, ..sv.stats };
            src.stale = None;
        }
        Ok(skipped)
    }

    /// The checks of [`Intake::restore`] that say `saved` is not of these
    /// queues at all (other queue numbers; a queue re-created since), before
    /// any queue is touched.
    ///
    /// # Errors
    /// [`RestoreError::Queues`] or [`RestoreError::Recreated`].
    pub fn check_restore(&self, saved: &[SavedQueue]) -> Result<(), RestoreError> {
        let now = self.queues();
        if saved.iter().map(|s| s.queue).ne(now.iter().copied()) {
            return Err(RestoreError::Queues { saved: saved.iter().map(|s| s.queue).collect(), now });
        }
        for (src, sv) in self.sources.iter().zip(saved) {
            let published = src.consumer.published();
            // No slot of it ever given back although the checkpoint read records: a
            // new queue (an app that failed to start on it attached, but never
            // released: attaches would not tell). On the checkpoint's own queue
            // (an app killed before its first release) every record the
            // checkpoint counted is still queued, so starting from zero on it is
            // exact too.
            let never_released = src.consumer.position() == 0;
            if published < sv.position || (never_released && sv.position > 0) {
                let path = src.path.display().to_string();
                return Err(RestoreError::Recreated { path, saved: sv.position, published, never_released });
            }
        }
        Ok(())
    }

    /// Whether every queue is still as a finished earlier run left it (closed
    /// and drained at attach, no producer attached since): nothing of a new
    /// run has come, and the output directory still holds that run's files.
    pub fn awaiting_new_run(&self) -> bool {
        self.sources.iter().all(|s| s.stale.is_some_and(|a| s.consumer.producer_attaches() == a))
    }

    /// The queue numbers, in intake order (the index is what `poll_batch` reports).
    pub fn queues(&self) -> Vec<u32> {
        self.sources.iter().map(|s| s.queue).collect()
    }

    /// Per-queue counters, in intake order.
    pub fn stats(&self) -> Vec<IntakeStats> {
        self.sources.iter().map(|s| s.stats).collect()
    }

    /// [`Intake::poll_batch`] handing the records one by one (the tests'
    /// way: the app takes a batch at a time).
    #[cfg(test)]
    pub fn poll(&mut self, mut sink: impl FnMut(usize, &FlowRecord)) -> Poll {
        self.poll_batch(BATCH, |qi, records| records.iter().for_each(|r| sink(qi, r)))
    }

    /// Reads one round (at most `limit` and at most [`BATCH`] records from
    /// each queue: cj-app's paced export takes no more than it has room for),
    /// handing the valid records of each queue's batch at once to `sink`, in
    /// the order read, with the queue's index; waits a little when there was
    /// nothing at all. A `limit` of 0 reads nothing and reports
    /// [`Poll::Idle`] without waiting.
    pub fn poll_batch(&mut self, limit: usize, mut sink: impl FnMut(usize, &[FlowRecord])) -> Poll {
        let limit = limit.min(BATCH);
        if limit == 0 {
            return Poll::Idle;
        }
        let mut read = 0;
        let mut live = 0;
        let mut batch = std::mem::take(&mut self.batch);
        for (qi, src) in self.sources.iter_mut().enumerate() {
            if src.stats.ended {
                continue;
            }
            let (mut n, mut kept) = (0, 0);
            while n < limit {
                // Copied once, from the slot straight into the batch's next place,
                // and checked there: a record that is not kept is overwritten by the next.
                let Some(whole) =
                    src.consumer.pop_with(|bytes| batch.get_mut(kept).is_some_and(|to| to.read_into(bytes)))
                else {
                    break;
                };
                n += 1;
                if src.accept(batch.get(kept).filter(|_| whole)) {
                    kept += 1;
                }
            }
            if kept > 0 {
                sink(qi, &batch[..kept]);
            }
            if n > 0 {
                if !self.hold {
                    src.consumer.release();
                }
                read += n;
                live += 1;
            } else if match src.stale {
                Some(seen) => src.consumer.state_after(seen),
                None => src.consumer.state(),
            } == QueueState::Ended
            {
                src.stats.ended = true;
            } else {
                live += 1;
            }
        }
        self.batch = batch;
        if read > 0 {
            self.waiter.reset();
            Poll::Progress(read)
        } else if live == 0 {
            Poll::AllEnded
        } else {
            self.waiter.wait();
            Poll::Idle
        }
    }
}

impl Source {
    /// Counts and checks a slot's record (`None`: the slot was too short);
    /// true when it is valid and handed on.
    fn accept(&mut self, slot: Option<&FlowRecord>) -> bool {
        let Some(r) = slot else {
            self.stats.records_invalid += 1;
            return false;
        };
        if let Err(version) = r.check_layout() {
            // Another layout: not even the sequence number can be trusted.
            self.stats.records_invalid += 1;
            if !self.warned_layout {
                self.warned_layout = true;
                station::cj_warn!(
                    "cj-app: warning: {}: records of FlowRecord layout version {version}, this cj-app reads version \
                     {RECORD_LAYOUT_VERSION}: they are counted as invalid and skipped; run cj-detector and cj-app \
                     of the same build",
                    self.path.display()
                );
            }
            return false;
        }
        // A readable record carries the producer's sequence even when its other bytes are bad.
        self.check_seq(r.seq);
        if valid(r) {
            self.stats.records += 1;
            true
        } else {
            self.stats.records_invalid += 1;
            false
        }
    }

    fn check_seq(&mut self, seq: u64) {
        match self.next_seq {
            Some(expected) if seq != expected => {
                if seq == 0 {
                    station::cj_info!(
                        "cj-app: {}: record sequence restarted at 0 (after {}): the detector worker restarted",
                        self.path.display(),
                        expected
                    );
                } else {
                    self.stats.records_gap += 1;
                    if seq > expected {
                        self.stats.records_missing += seq - expected;
                    }
                    if !self.warned {
                        self.warned = true;
                        station::cj_warn!(
                            "cj-app: warning: {}: record sequence {} where {} was expected ({}); \
                             further gaps on this queue are counted, not logged",
                            self.path.display(),
                            seq,
                            expected,
                            if seq > expected { "records missing" } else { "records repeated" }
                        );
                    }
                }
            }
            _ => {}
        }
        self.next_seq = Some(seq.wrapping_add(1));
    }
}

/// Whether a record's discriminant bytes are valid.
pub fn valid(r: &FlowRecord) -> bool {
    match (r.record_kind(), r.end()) {
        (Some(RecordKind::Ip), Some(_)) => matches!(r.ip_version, 4 | 6),
        (Some(_), Some(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station::record::EndReason;

    #[test]
    fn records_of_another_layout_version_are_counted_invalid_and_skipped() {
        let shm = tempfile::tempdir().unwrap();
        let cfg =
            StationConfig { shm_dir: shm.path().to_path_buf(), record_queue_slots: 16, ..StationConfig::default() };
        let mut intake = Intake::attach(&cfg).unwrap();
        let spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: 16 };
        let path = naming::set_record_queue_path(&cfg.cluster_dir(), 0, 0);
        let mut p = QueueFile::open_or_create(&path, spec).unwrap().into_producer();
        let mut ok = FlowRecord {
            kind: RecordKind::Ip as u8,
            ip_version: 4,
            end_reason: EndReason::IdleTimeout as u8,
            ..Default::default()
        };
        ok.stamp_layout();
        let mut other = FlowRecord { seq: 1, ..ok };
        other._pad[0] = RECORD_LAYOUT_VERSION as u8 + 1;
        let unstamped = FlowRecord { seq: 2, _pad: [0; 2], ..ok };
        for r in [ok, other, unstamped] {
            p.push(r.as_bytes()).unwrap();
        }
        p.publish();
        p.close();
        let mut got = Vec::new();
        while intake.poll(|_, r| got.push(r.seq)) != Poll::AllEnded {}
        assert_eq!(got, [0, 2]);
        let st = intake.stats()[0];
        // The skipped record's sequence number is not trusted: it shows as one record missing.
        assert_eq!((st.records, st.records_invalid, st.records_gap, st.records_missing), (2, 1, 1, 1));
    }

    fn record(seq: u64) -> FlowRecord {
        let mut r = FlowRecord {
            seq,
            kind: RecordKind::Ip as u8,
            ip_version: 4,
            end_reason: EndReason::IdleTimeout as u8,
            ..Default::default()
        };
        r.stamp_layout();
        r
    }

    #[test]
    fn a_restored_intake_skips_what_the_checkpoint_read_and_goes_on_with_the_rest() {
        let shm = tempfile::tempdir().unwrap();
        let cfg =
            StationConfig { shm_dir: shm.path().to_path_buf(), record_queue_slots: 64, ..StationConfig::default() };
        let spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: 64 };
        let path = naming::set_record_queue_path(&cfg.cluster_dir(), 0, 0);
        let mut p = QueueFile::open_or_create(&path, spec).unwrap().into_producer();
        let read = |intake: &mut Intake, upto: u64| {
            while intake.saved()[0].position < upto {
                intake.poll(|_, _| {});
            }
        };
        for seq in 0..4 {
            p.push(record(seq).as_bytes()).unwrap();
        }
        p.publish();
        // First app: reads 4 records and gives their slots back (after a checkpoint), then
        // reads 6 more, checkpoints all 10, and dies before releasing those (a SIGKILL).
        let mut first = Intake::attach(&cfg).unwrap();
        first.hold_releases();
        read(&mut first, 4);
        first.release_all();
        for seq in 4..10 {
            p.push(record(seq).as_bytes()).unwrap();
        }
        p.publish();
        read(&mut first, 10);
        let saved = first.saved();
        assert_eq!(saved[0].position, 10);
        drop(first);
        for seq in 10..15 {
            p.push(record(seq).as_bytes()).unwrap();
        }
        p.publish();
        p.close();
        // Second app: the queue still holds 11 of the 15; the 6 saved ones are skipped, not counted again.
        let mut second = Intake::attach(&cfg).unwrap();
        second.hold_releases();
        assert_eq!(second.restore(&saved, None).unwrap(), 6);
        let mut got = Vec::new();
        while second.poll(|_, r| got.push(r.seq)) != Poll::AllEnded {}
        assert_eq!(got, (10..15).collect::<Vec<_>>());
        let st = second.stats()[0];
        assert_eq!((st.records, st.records_gap, st.records_missing), (15, 0, 0));
        second.release_all();
        drop(second);
        // A checkpoint behind what was released since (another app read on) is refused.
        let mut third = Intake::attach(&cfg).unwrap();
        let e = third.restore(&saved, None).unwrap_err();
        assert!(matches!(e, RestoreError::ReadPast { saved: 10, released: 15, .. }), "{e}");
        // The same from a checkpoint file cut inside a frame: the cut is named as the cause.
        let e = third.restore(&saved, Some(4096)).unwrap_err();
        assert!(matches!(e, RestoreError::CutCheckpoint { saved: 10, released: 15, cut_at: 4096, .. }), "{e}");
        // One ahead of everything the queue ever had: the queue was re-created.
        let ahead = [SavedQueue { position: 99, ..saved[0] }];
        assert!(matches!(third.restore(&ahead, None).unwrap_err(), RestoreError::Recreated { published: 15, .. }));
        drop(third);
        // The queue re-created (a reboot) and already past the checkpoint's position before
        // any app read it: not the checkpoint's queue, though it has had enough records.
        std::fs::remove_dir_all(cfg.cluster_dir()).unwrap();
        let mut p = QueueFile::open_or_create(&path, spec).unwrap().into_producer();
        for seq in 0..20 {
            p.push(record(seq).as_bytes()).unwrap();
        }
        p.publish();
        let fourth = Intake::attach(&cfg).unwrap();
        // An app that attached and failed before reading (a refused checkpoint) leaves it so.
        drop(fourth);
        let mut fifth = Intake::attach(&cfg).unwrap();
        let e = fifth.restore(&saved, None).unwrap_err();
        assert!(matches!(e, RestoreError::Recreated { published: 20, never_released: true, .. }), "{e}");
        assert_eq!(fifth.saved()[0].position, 0, "nothing skipped: the refusal changes no queue");
    }

    #[test]
    fn a_limited_poll_reads_at_most_the_limit_from_each_queue_and_zero_reads_nothing() {
        let shm = tempfile::tempdir().unwrap();
        let cfg = StationConfig {
            shm_dir: shm.path().to_path_buf(),
            record_queue_slots: 64,
            corecount: 2,
            ..StationConfig::default()
        };
        let mut intake = Intake::attach(&cfg).unwrap();
        let spec = QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: 64 };
        for q in 0..2 {
            let path = naming::set_record_queue_path(&cfg.cluster_dir(), 0, q);
            let mut p = QueueFile::open_or_create(&path, spec).unwrap().into_producer();
            for seq in 0..10 {
                p.push(record(seq).as_bytes()).unwrap();
            }
            p.publish();
        }
        let mut got = [0usize; 2];
        assert_eq!(intake.poll_batch(0, |qi, r| got[qi] += r.len()), Poll::Idle);
        assert_eq!(got, [0, 0]);
        assert_eq!(intake.poll_batch(3, |qi, r| got[qi] += r.len()), Poll::Progress(6));
        assert_eq!(got, [3, 3]);
        assert_eq!(intake.poll_batch(100, |qi, r| got[qi] += r.len()), Poll::Progress(14));
        assert_eq!(got, [10, 10]);
    }

    #[test]
    fn invalid_bytes_are_rejected() {
        let ok = FlowRecord {
            kind: RecordKind::Ip as u8,
            ip_version: 4,
            end_reason: EndReason::IdleTimeout as u8,
            ..Default::default()
        };
        assert!(valid(&ok));
        assert!(!valid(&FlowRecord { kind: 9, ..ok }));
        assert!(!valid(&FlowRecord { end_reason: 0, ..ok }));
        assert!(!valid(&FlowRecord { ip_version: 5, ..ok }));
        assert!(valid(&FlowRecord { kind: RecordKind::NonIp as u8, ip_version: 0, ..ok }));
    }
}

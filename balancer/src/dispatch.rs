//! The balancer's core: choose queues for each frame and copy it in.
//!
//! Guarantees: in every queue set, each frame goes to exactly one queue
//! (round robin or IP hash) or to every queue (fan-out); a copy that does not
//! fit is either counted as dropped at that queue (`OnFull::Drop`: the
//! balancer never waits, as on a live NIC where waiting would only move the
//! loss into the NIC, uncounted) or waited for (`OnFull::Wait`). Nothing is
//! allocated per frame and no system call is made per frame: queues are
//! published once per batch.
//!
//! For a resumable (offline) source the queue of each frame depends only on
//! the frame and its place in the stream (round robin counts every frame the
//! dispatcher is given, the IP hash reads the frame), so a restarted
//! balancer that reads its source again from the start finds the same queue
//! for every frame: it skips, per queue, the frames that queue already holds
//! ([`Dispatcher::resume`]) and sends the rest. A resumable source's frame
//! that meets a full queue while the balancer is stopping is not dropped but
//! left unsent, with every later frame: the next balancer sends them.
//!
//! Not guaranteed: with more than one queue set, a stop (or a crash) between
//! the publishes of two sets leaves a frame in one set's queue and not yet in
//! the other's until the next balancer sends it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmq::{Full, Producer, WaitStrategy, Waiter};
use station::config::HashMode;
use station::slot::{write_packet, PacketMeta, PACKET_META_SIZE};

use crate::source::Frame;

/// A balancer waiting for room in a full queue (`OnFull::Wait`) resumes once
/// a `RESUME_AT`th of its slots is free.
const RESUME_AT: u64 = 8;

/// What the dispatcher copied into queue slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyCount {
    /// Frame bytes (not the slots' metadata).
    pub bytes: u64,
    /// Frames copied (a frame sent to several queues counts once per queue).
    pub copies: u64,
}

/// Copies frames into the queue sets.
pub struct Dispatcher<'s> {
    /// `sets[s][i]`: queue i of set s.
    sets: Vec<Vec<Producer>>,
    /// Queue number of index i (CJ_QUEUE_OFFSET + i), as in the file names.
    queue_numbers: Vec<u32>,
    mode: HashMode,
    next_rr: usize,
    wait_when_full: bool,
    wait: WaitStrategy,
    stop: &'s AtomicBool,
    /// Copies dropped at full queues, all sets.
    pub queue_dropped: u64,
    /// Frame bytes copied into queue slots, all sets (each frame's first
    /// `CJ_SLOT_SIZE - 24` bytes at most: the snap length), and the copies.
    pub copied: CopyCount,
    /// `held[s][i]`: frames of the stream still to be skipped for queue i of
    /// set s (that queue holds them from an earlier balancer).
    held: Vec<Vec<u64>>,
    /// Frames are left unsent rather than dropped when a queue is full while stopping.
    resumable: bool,
    /// A frame was left unsent while stopping: so is every later one.
    abandoned: bool,
    /// When a queue last made the balancer wait, for a rate-limited log line.
    last_wait_log: Option<Instant>,
}

impl std::fmt::Debug for Dispatcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("sets", &self.sets.len())
            .field("mode", &self.mode)
            .field("queue_dropped", &self.queue_dropped)
            .finish()
    }
}

impl<'s> Dispatcher<'s> {
    /// A dispatcher over `sets` (every set has the same number of queues, at
    /// least one, numbered `queue_numbers`).
    pub fn new(
        sets: Vec<Vec<Producer>>,
        queue_numbers: Vec<u32>,
        mode: HashMode,
        wait_when_full: bool,
        wait: WaitStrategy,
        stop: &'s AtomicBool,
    ) -> Self {
        debug_assert!(sets.iter().all(|s| !s.is_empty() && s.len() == sets[0].len()));
        debug_assert!(sets.iter().all(|s| s.len() == queue_numbers.len()));
        Self {
            sets,
            queue_numbers,
            mode,
            next_rr: 0,
            wait_when_full,
            wait,
            stop,
            queue_dropped: 0,
            copied: CopyCount::default(),
            held: Vec::new(),
            resumable: false,
            abandoned: false,
            last_wait_log: None,
        }
    }

    /// A resumable source (a file, a generator): a frame that meets a full
    /// queue while stopping is left unsent (for the next balancer) instead of
    /// dropped.
    pub fn set_resumable(&mut self) {
        self.resumable = true;
    }

    /// Resuming a stream whose queues already hold its first `held[s][i]`
    /// frames for queue i of set s: those are skipped, per queue, as the
    /// source is read again from its start.
    pub fn resume(&mut self, held: Vec<Vec<u64>>) {
        debug_assert!(held.len() == self.sets.len() && held.iter().all(|h| h.len() == self.queues_per_set()));
        self.held = held;
    }

    /// Frames still to be skipped (all queues): 0 once the resumed stream has
    /// caught up with every queue.
    pub fn held_remaining(&self) -> u64 {
        self.held.iter().flatten().sum()
    }

    /// Queues per set.
    pub fn queues_per_set(&self) -> usize {
        self.sets.first().map_or(0, Vec::len)
    }

    /// Copies one frame into its queue(s) in every set. True when the frame
    /// is now in the stream (some queue holds it, from an earlier balancer or
    /// now, or counted it dropped); false when it was left unsent while
    /// stopping.
    #[inline]
    pub fn dispatch(&mut self, frame: &Frame<'_>) -> bool {
        let n = self.queues_per_set();
        let meta = PacketMeta {
            ts_ns: frame.ts_ns,
            wire_len: frame.wire_len,
            cap_len: 0,
            source: frame.source,
            flags: frame.dir.flags(),
        };
        match self.mode {
            HashMode::RoundRobin => {
                let q = self.next_rr;
                self.next_rr = if q + 1 == n { 0 } else { q + 1 };
                self.copy_into_sets(q, meta, frame.data)
            }
            // One queue per set: every hash picks it, so the frame is not parsed.
            HashMode::IpHash if n == 1 => self.copy_into_sets(0, meta, frame.data),
            HashMode::IpHash => {
                let summary = wire::summarize(frame.data);
                let q = (wire::zbalance_ip_hash(&summary) as usize) % n;
                self.copy_into_sets(q, meta, frame.data)
            }
            HashMode::FanOut => {
                let mut taken = false;
                for q in 0..n {
                    taken |= self.copy_into_sets(q, meta, frame.data);
                }
                taken
            }
        }
    }

    /// Copies the frame into queue `q` of every set that does not hold it yet;
    /// true when some set holds it (or counted it dropped) afterwards.
    #[inline]
    fn copy_into_sets(&mut self, q: usize, meta: PacketMeta, data: &[u8]) -> bool {
        let mut taken = false;
        for s in 0..self.sets.len() {
            if let Some(held) = self.held.get_mut(s).and_then(|h| h.get_mut(q)).filter(|h| **h > 0) {
                *held -= 1;
                taken = true;
                continue;
            }
            if self.abandoned {
                continue;
            }
            let pushed = self.push(s, q, meta, data);
            taken |= pushed.is_ok() || self.on_full(s, q, meta, data);
        }
        taken
    }

    /// Writes the frame into the next slot of queue `q` of set `s`, counting
    /// the frame bytes copied.
    #[inline]
    fn push(&mut self, s: usize, q: usize, meta: PacketMeta, data: &[u8]) -> Result<(), Full> {
        let mut used = 0;
        self.sets[s][q].push_with(|slot| {
            used = write_packet(slot, meta, data);
            used
        })?;
        self.copied.bytes += used.saturating_sub(PACKET_META_SIZE) as u64;
        self.copied.copies += 1;
        Ok(())
    }

    /// A full queue: drop (and count), or wait for room (a [`RESUME_AT`]th of it). True when the frame
    /// went in or was counted dropped, false when it was left unsent.
    #[cold]
    fn on_full(&mut self, s: usize, q: usize, meta: PacketMeta, data: &[u8]) -> bool {
        if !self.wait_when_full {
            self.sets[s][q].count_dropped(1);
            self.queue_dropped += 1;
            return true;
        }
        // Make what is queued visible so the consumer can make room.
        self.sets[s][q].publish();
        let mut waiter = Waiter::new(self.wait);
        let waiting_since = Instant::now();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                if self.resumable {
                    // The next balancer reads the source again and sends it (and every later frame).
                    self.abandoned = true;
                    return false;
                }
                self.sets[s][q].count_dropped(1);
                self.queue_dropped += 1;
                return true;
            }
            // Resumes once an eighth of the queue is free, not at its first
            // free slot: a worker slower than the balancer (many flows) then
            // frees that much between two waits, so the balancer sleeps
            // through it instead of waking for every batch it releases
            // (flows1m: 0.25-0.35 s of balancer CPU -> 0.14-0.16 s).
            let room = self.sets[s][q].free_slots();
            if room as u64 * RESUME_AT >= self.sets[s][q].capacity() && self.push(s, q, meta, data).is_ok() {
                return true;
            }
            if waiting_since.elapsed() > Duration::from_secs(5)
                && self.last_wait_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5))
            {
                self.last_wait_log = Some(Instant::now());
                let stats = self.sets[s][q].stats();
                station::cj_warn!(
                    "cj-balancer: packet queue pkt-{s}-{} full for {}s, waiting for its consumer (pid {}); \
                     is cj-detector running with the same CJ_CLUSTER_ID? (CJ_ON_FULL=drop drops instead)",
                    self.queue_numbers[q],
                    waiting_since.elapsed().as_secs(),
                    stats.consumer_pid
                );
            }
            waiter.wait();
        }
    }

    /// Publishes every queue (one release store each).
    pub fn publish(&mut self) {
        for set in &mut self.sets {
            for p in set.iter_mut() {
                p.publish();
            }
        }
    }

    /// Publishes and marks the end of the stream on every queue.
    pub fn close(&mut self) {
        for set in &mut self.sets {
            for p in set.iter_mut() {
                p.close();
            }
        }
    }

    /// Fill of each queue as (set, queue number, used, capacity).
    pub fn fills(&self) -> Vec<(usize, u32, u64, u64)> {
        let mut out = Vec::new();
        for (s, set) in self.sets.iter().enumerate() {
            for (i, p) in set.iter().enumerate() {
                let st = p.stats();
                out.push((s, self.queue_numbers[i], st.in_flight(), st.capacity));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shmq::{QueueFile, QueueSpec};
    use station::slot::{read_packet, LinkDir, PKT_FLAG_TRUNCATED};

    const DATA: [u8; 60] = [0; 60];

    /// Frame `i` of a stream: its number in the timestamp.
    fn frame(i: u64) -> Frame<'static> {
        Frame { ts_ns: i, wire_len: 60, data: &DATA, source: 0, dir: LinkDir::Unknown }
    }

    /// Queues 0 and 1 of set `s` in `dir`.
    fn set(dir: &std::path::Path, s: u32) -> Vec<Producer> {
        let spec = QueueSpec { slot_size: 256, capacity: 64 };
        (0..2)
            .map(|q| QueueFile::open_or_create(&dir.join(format!("pkt-{s}-{q}")), spec).unwrap().into_producer())
            .collect()
    }

    /// The frame numbers queue `q` of set `s` holds, in order.
    fn frames_in(dir: &std::path::Path, s: u32, q: u32) -> Vec<u64> {
        let mut c = QueueFile::open_existing(&dir.join(format!("pkt-{s}-{q}"))).unwrap().into_consumer();
        let mut out = Vec::new();
        while let Some(ts) = c.pop_with(|slot| read_packet(slot).unwrap().0.ts_ns) {
            out.push(ts);
        }
        out
    }

    #[test]
    fn the_bytes_copied_are_each_frames_first_bytes_up_to_the_slots_frame_room() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let wait = WaitStrategy::Backoff { max_sleep: Duration::from_millis(1) };
        // Slots of 256 bytes: 232 of frame. Fan-out copies each frame into both queues.
        let mut d = Dispatcher::new(vec![set(dir.path(), 0)], vec![0, 1], HashMode::FanOut, true, wait, &stop);
        let big = [7u8; 1514];
        let lens = [60usize, 232, 233, 1514];
        for (i, &len) in lens.iter().enumerate() {
            d.dispatch(&Frame {
                ts_ns: i as u64,
                wire_len: len as u32,
                data: &big[..len],
                source: 0,
                dir: LinkDir::Unknown,
            });
        }
        d.publish();
        let want: u64 = lens.iter().map(|&l| l.min(256 - 24) as u64).sum::<u64>() * 2;
        assert_eq!(d.copied, CopyCount { bytes: want, copies: 8 });
        drop(d);
        // What a consumer finds in the slots agrees.
        let mut c = QueueFile::open_existing(&dir.path().join("pkt-0-1")).unwrap().into_consumer();
        let mut found = 0u64;
        while let Some(n) = c.pop_with(|slot| read_packet(slot).unwrap().1.len() as u64) {
            found += n;
        }
        assert_eq!(found * 2, want);
    }

    #[test]
    fn each_frames_direction_reaches_its_slot_beside_the_truncated_bit() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let wait = WaitStrategy::Backoff { max_sleep: Duration::from_millis(1) };
        let mut d = Dispatcher::new(vec![set(dir.path(), 0)], vec![0, 1], HashMode::RoundRobin, true, wait, &stop);
        let big = [7u8; 1514];
        // Round robin over two queues: frames 0 and 2 in queue 0; 1514 bytes are cut to 232.
        let sent = [(60, LinkDir::Inbound), (60, LinkDir::Unknown), (1514, LinkDir::Outbound)];
        for (i, &(len, way)) in sent.iter().enumerate() {
            d.dispatch(&Frame { ts_ns: i as u64, wire_len: len as u32, data: &big[..len], source: 2, dir: way });
        }
        d.publish();
        drop(d);
        let mut c = QueueFile::open_existing(&dir.path().join("pkt-0-0")).unwrap().into_consumer();
        let mut got = Vec::new();
        while let Some(m) = c.pop_with(|slot| read_packet(slot).unwrap().0) {
            got.push((m.source, m.dir(), m.flags & PKT_FLAG_TRUNCATED));
        }
        assert_eq!(got, vec![(2, LinkDir::Inbound, 0), (2, LinkDir::Outbound, PKT_FLAG_TRUNCATED)]);
    }

    #[test]
    fn a_balancer_waiting_for_a_full_queue_resumes_once_an_eighth_of_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let wait = WaitStrategy::Backoff { max_sleep: Duration::from_millis(1) };
        let mut q0 = set(dir.path(), 0);
        q0.truncate(1);
        let mut d = Dispatcher::new(vec![q0], vec![0], HashMode::RoundRobin, true, wait, &stop);
        // 64 slots: full after frames 0..64.
        assert!((0..64).all(|i| d.dispatch(&frame(i))));
        let mut c = QueueFile::open_existing(&dir.path().join("pkt-0-0")).unwrap().into_consumer();
        let mut take = |n: usize| {
            for _ in 0..n {
                while c.pop_with(|_| ()).is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            c.release();
        };
        std::thread::scope(|s| {
            let waiting = s.spawn(|| d.dispatch(&frame(64)));
            take(7);
            // 7 free slots of 64: still waiting (a broken rule would have
            // pushed within a few of its 1 ms waits).
            std::thread::sleep(Duration::from_millis(100));
            assert!(!waiting.is_finished(), "resumed with 7 of 64 slots free");
            take(1);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !waiting.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let resumed = waiting.is_finished();
            // Ends the wait should the rule be broken the other way.
            stop.store(true, Ordering::Relaxed);
            assert!(waiting.join().unwrap() && resumed, "not resumed with 8 of 64 slots free");
        });
        d.publish();
        drop(d);
        assert_eq!(frames_in(dir.path(), 0, 0), (8..65).collect::<Vec<_>>());
    }

    #[test]
    fn a_resumed_round_robin_stream_sends_each_queue_only_the_frames_it_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let wait = WaitStrategy::Backoff { max_sleep: Duration::from_millis(1) };
        // An earlier balancer died with frames 0..10 in set 0 (queue 0: 0, 2, .., 8;
        // queue 1: 1, 3, .., 9) and, not yet published in set 1, all but 0, 2, 4 and 1.
        let mut earlier =
            Dispatcher::new(vec![set(dir.path(), 0)], vec![0, 1], HashMode::RoundRobin, true, wait, &stop);
        for i in 0..10 {
            earlier.dispatch(&frame(i));
        }
        earlier.publish();
        drop(earlier);
        let mut set1 = set(dir.path(), 1);
        for (q, i) in [(0, 0), (0, 2), (0, 4), (1, 1)] {
            set1[q].push_with(|slot| write_packet(slot, PacketMeta { ts_ns: i, ..Default::default() }, &DATA)).unwrap();
        }
        drop(set1);

        // The restarted balancer reads the stream from frame 0 again.
        let sets = vec![set(dir.path(), 0), set(dir.path(), 1)];
        let mut resumed = Dispatcher::new(sets, vec![0, 1], HashMode::RoundRobin, true, wait, &stop);
        resumed.resume(vec![vec![5, 5], vec![3, 1]]);
        let taken = (0..14).filter(|&i| resumed.dispatch(&frame(i))).count();
        resumed.publish();
        assert_eq!(taken, 14, "every frame is in the stream once");
        assert_eq!(resumed.held_remaining(), 0);
        drop(resumed);
        // Round robin's rule: frame i belongs to queue i % 2 of each set, in order, once.
        for s in 0..2 {
            for q in 0..2u32 {
                let want: Vec<u64> = (0..14).filter(|i| i % 2 == u64::from(q)).collect();
                assert_eq!(frames_in(dir.path(), s, q), want, "set {s} queue {q}");
            }
        }
    }
}

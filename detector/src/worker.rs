//! A detector worker: one thread per planned core, named `cj-worker-<queue>`,
//! pinned to its core, reading one packet queue and writing one record queue.
//!
//! Guarantees:
//! - Start: every worker pins itself (core_affinity), opens its packet queue
//!   `pkt-<set>-<queue>` (consumer), its record queue `rec-<queue>` (producer)
//!   and its stats page `stats-worker-<queue>`, then meets the others and main
//!   at a [`Barrier`]. If any worker failed, all stand down before touching a
//!   packet (their queues are left as they were, not closed) and the failure
//!   is reported.
//! - Loop: pop up to [`BATCH`] slots, count each in the [`Accounting`]
//!   (parse, flow table, records; the flow-table lookups of a batch overlap:
//!   [`Accounting::begin_batch`]), release the slots with one store, publish
//!   the records, write the stats page. When the queue is empty the worker
//!   waits (`CJ_WAIT`), advances the flow clock and checks timeouts every
//!   [`IDLE_CHECK`].
//! - Records: numbered (`seq`) from the record queue's own producer position
//!   plus the stats page's `records_lost` (so a worker killed between
//!   publishing records and writing its page never reuses a number), in the
//!   order they are emitted, and published in
//!   batches. A full record queue makes the worker wait: backpressure, never a
//!   silent loss. Only while stopping on a signal does it give up: after
//!   [`SHUTDOWN_WAIT`] with the queue full and no progress it counts every remaining
//!   record in `records_lost` and its packets in `lost_packets` (their `seq`
//!   numbers are then gaps), and logs one line saying the app is not draining.
//! - End: when the packet queue has ended (closed by the producer and all
//!   read; a queue found closed and drained at start, left by a finished run
//!   whose worker ended, ends only when a producer has attached again and
//!   closed it: the detector starts before the balancer) or the stop flag is set (SIGINT/SIGTERM; the worker first processes
//!   what was already queued, at most one ring's worth), every flow is flushed
//!   as a record ([`station::record::EndReason::ForcedEnd`]), the records are
//!   published, the final totals are written to the stats page, and `ended` is
//!   set to 1. Only at the end of the input stream is the record queue closed
//!   (before `ended`, so a reader that sees it Ended also sees the final
//!   totals); a signal leaves it open for a restarted detector.
//! - Stats page (`station::naming::WORKER_COUNTERS`), written with plain
//!   stores after every batch, every idle check and at the end; one writer.
//!   Totals continue from the values already in the page (a restarted worker
//!   goes on counting), except `flows_active` (flows in the table now) and
//!   `ended`. At all times `ipv4 + ipv6 + non_ip + malformed == packets`; once
//!   `ended` is 1, `record_packets + lost_packets == packets`.
//! - Flow divert (`CJ_TUN=yes`, [`crate::divert`]): the worker opens its tun
//!   device before the gate (a missing one fails the start), takes a newer
//!   rule set once per batch, and hands each slot to [`Divert::slot`], which
//!   writes mirrored and diverted packets to the device and passes every slot
//!   but the diverted ones to the accounting: slots read = `packets` +
//!   `diverted_packets`. Its per-rule page `divert-<q>` is opened with the
//!   stats page and written with it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shmq::{CounterPage, Full, Producer, QueueFile, QueueSpec, QueueState, WaitStrategy, Waiter};
use station::config::StationConfig;
use station::naming::{self, worker_counter as wc, WORKER_COUNTERS};
use station::record::FlowRecord;

use crate::accounting::Accounting;
use crate::divert::{Divert, SharedRules};
use crate::error::DetectorError;
use crate::flow_table::TableConfig;
use crate::record_sink::RecordSink;

/// Slots popped before one release.
pub const BATCH: usize = 256;
/// Records pushed before one publish (also published after every batch).
pub const PUBLISH_EVERY: u32 = 64;
/// How often an idle worker advances its clock and checks timeouts.
pub const IDLE_CHECK: Duration = Duration::from_millis(100);
/// How long a stopping worker waits for room in a full record queue.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Least time between two log lines about the same condition.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Everything one worker needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerSpec {
    /// Worker index i (0-based).
    pub index: usize,
    /// Queue number: CJ_QUEUE_OFFSET + i.
    pub queue: u32,
    /// Planned core.
    pub core: u32,
    /// The cluster's directory.
    pub cluster_dir: PathBuf,
    /// CJ_QUEUE_SET.
    pub queue_set: u32,
    /// Packet queue shape (CJ_SLOT_SIZE, CJ_QUEUE_SLOTS).
    pub packet_spec: QueueSpec,
    /// Record queue shape (RECORD_SLOT_SIZE, CJ_RECORD_QUEUE_SLOTS).
    pub record_spec: QueueSpec,
    /// Flow table settings.
    pub table: TableConfig,
    /// CJ_DECAP: the tunnels whose packets count as their inner flow.
    pub decap: wire::tunnel::Decap,
    /// CJ_WAIT.
    pub wait: WaitStrategy,
    /// Flow divert (CJ_TUN=yes): `tun<CJ_TUN_OFFSET + queue>`; None: off.
    pub tun_device: Option<String>,
    /// The divert rules every worker reads (set by cj-detector from
    /// `divert::start`); None with a tun device: no rules, nothing diverted.
    pub divert_rules: Option<SharedRules>,
}

impl WorkerSpec {
    /// Worker `index` of configuration `cfg`, on planned core `core`.
    pub fn from_station(cfg: &StationConfig, index: usize, core: u32) -> Self {
        let queue = cfg.queue_offset + index as u32;
        Self {
            index,
            queue,
            core,
            cluster_dir: cfg.cluster_dir(),
            queue_set: cfg.queue_set,
            packet_spec: QueueSpec { slot_size: cfg.slot_size, capacity: cfg.queue_slots },
            record_spec: QueueSpec { slot_size: naming::RECORD_SLOT_SIZE, capacity: cfg.record_queue_slots },
            table: TableConfig::from_station(cfg, queue),
            decap: cfg.decap,
            wait: cfg.wait.strategy(),
            tun_device: cfg.tun.then(|| format!("tun{}", cfg.tun_offset + queue)),
            divert_rules: None,
        }
    }

    /// `pkt-<set>-<queue>`.
    pub fn packet_queue_path(&self) -> PathBuf {
        naming::packet_queue_path(&self.cluster_dir, self.queue_set, self.queue)
    }

    /// `rec-<queue>`.
    pub fn record_queue_path(&self) -> PathBuf {
        naming::set_record_queue_path(&self.cluster_dir, self.queue_set, self.queue)
    }

    /// `stats-worker-<queue>`.
    pub fn stats_path(&self) -> PathBuf {
        naming::set_worker_stats_path(&self.cluster_dir, self.queue_set, self.queue)
    }
}

/// The two-phase start shared by main and the workers.
#[derive(Debug)]
pub struct StartGate {
    barrier: Barrier,
    failed: AtomicBool,
    abort: AtomicBool,
}

impl StartGate {
    /// A gate for `workers` workers plus main.
    pub fn new(workers: usize) -> Self {
        Self { barrier: Barrier::new(workers + 1), failed: AtomicBool::new(false), abort: AtomicBool::new(false) }
    }

    /// Main's side: waits until every worker is set up, then lets them all go
    /// (returns true) or, if one failed, makes them all stand down (false).
    pub fn open(&self) -> bool {
        self.barrier.wait();
        let go = !self.failed.load(Ordering::SeqCst);
        self.abort.store(!go, Ordering::SeqCst);
        self.barrier.wait();
        go
    }

    /// A worker's side: reports its setup, waits for main's decision; true: go.
    fn pass(&self, setup_ok: bool) -> bool {
        if !setup_ok {
            self.failed.store(true, Ordering::SeqCst);
        }
        self.barrier.wait();
        self.barrier.wait();
        !self.abort.load(Ordering::SeqCst)
    }
}

/// Why a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndCause {
    /// The packet queue ended.
    QueueEnded,
    /// SIGINT or SIGTERM.
    Signal,
}

/// What a worker reports when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Its queue.
    pub queue: u32,
    /// Why it ended.
    pub cause: EndCause,
    /// Packets read in this run.
    pub packets: u64,
    /// Records published in this run.
    pub records: u64,
    /// Records lost in this run (stopping with a full record queue).
    pub records_lost: u64,
    /// From the first packet read to the last (zero when none was read):
    /// the time the packets took, without start-up and idle tail.
    pub packet_span: Duration,
}

/// Starts worker `spec` on its own thread `cj-worker-<queue>`.
///
/// # Errors
/// The OS refused the thread.
pub fn spawn(
    spec: WorkerSpec,
    gate: Arc<StartGate>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<WorkerSummary, DetectorError>>, DetectorError> {
    spawn_with_inventory(spec, gate, stop, None)
}

/// The container inventory's snapshot cell, shared by every worker.
pub type SharedSnapshot = Arc<inventory::arc_swap::ArcSwap<inventory::Snapshot>>;

/// [`spawn`] with the inventory whose snapshot attributes new flows (loaded
/// once per batch, without a lock).
///
/// # Errors
/// The OS refused the thread.
pub fn spawn_with_inventory(
    spec: WorkerSpec,
    gate: Arc<StartGate>,
    stop: Arc<AtomicBool>,
    inventory: Option<SharedSnapshot>,
) -> Result<JoinHandle<Result<WorkerSummary, DetectorError>>, DetectorError> {
    let queue = spec.queue;
    std::thread::Builder::new()
        .name(format!("cj-worker-{queue}"))
        .spawn(move || run(&spec, &gate, &stop, inventory.as_ref()))
        .map_err(|source| DetectorError::Spawn { queue, source })
}

/// What a worker opened before the gate.
struct Opened {
    consumer: shmq::Consumer,
    producer: Producer,
    page: CounterPage,
    divert: Divert,
    /// This worker's claims on the packet queue's consumer end and the record
    /// queue's producer end, held while it runs (a second detector on the
    /// same queues is refused: it would corrupt them).
    claims: [shmq::EndLock; 2],
}

/// Opens (or creates) the queue at `path` and claims `end` of it for this worker.
fn open_claimed(
    path: &std::path::Path,
    spec: shmq::QueueSpec,
    end: shmq::End,
) -> Result<(QueueFile, shmq::EndLock), shmq::QueueError> {
    let file = QueueFile::open_or_create(path, spec)?;
    let claim = file.lock_end(end)?;
    Ok((file, claim))
}

fn setup(spec: &WorkerSpec) -> Result<Opened, DetectorError> {
    let queue = spec.queue;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: spec.core as usize }) {
        return Err(DetectorError::Pin { queue, core: spec.core });
    }
    let path = spec.packet_queue_path();
    let (file, packets) = open_claimed(&path, spec.packet_spec, shmq::End::Consumer)
        .map_err(|source| DetectorError::PacketQueue { queue, path, source })?;
    let consumer = file.into_consumer();
    let path = spec.record_queue_path();
    let (file, records) = open_claimed(&path, spec.record_spec, shmq::End::Producer)
        .map_err(|source| DetectorError::RecordQueue { queue, path, source })?;
    let producer = file.into_producer();
    let path = spec.stats_path();
    let page = CounterPage::open_or_create(&path, WORKER_COUNTERS).map_err(|source| DetectorError::StatsPage {
        queue,
        path,
        source,
    })?;
    let rule_page =
        crate::divert::rule_page(spec).map_err(|(path, source)| DetectorError::StatsPage { queue, path, source })?;
    let divert = Divert::open(spec, rule_page).map_err(|source| DetectorError::Tun { queue, source })?;
    Ok(Opened { consumer, producer, page, divert, claims: [packets, records] })
}

/// Gives the accounting the inventory's current snapshot when it changed: one
/// lock-free load; the `Arc` is only cloned on a change.
#[inline]
fn refresh_snapshot(acct: &mut Accounting, inventory: Option<&SharedSnapshot>) {
    if let Some(inv) = inventory {
        let snap = inv.load();
        if snap.generation != acct.snapshot_generation() {
            acct.set_snapshot(inventory::arc_swap::Guard::into_inner(snap));
        }
    }
}

/// Where `PacketMeta::source` lies in a slot.
const SOURCE_AT: usize = std::mem::offset_of!(station::slot::PacketMeta, source);

/// One packet-queue slot. A frame of a capture index the snapshot in use does
/// not know (a container veth published since the batch began: see
/// `inventory::capture`) first makes the worker load the newest snapshot,
/// which knows it: one byte read and one array read per frame otherwise.
#[inline]
fn take(
    slot: &[u8],
    inventory: Option<&SharedSnapshot>,
    acct: &mut Accounting,
    divert: &mut Divert,
    out: &mut RecordOut<'_>,
) {
    if let (Some(inv), Some(&source)) = (inventory, slot.get(SOURCE_AT)) {
        if !acct.knows_source(source) {
            refresh_snapshot(acct, Some(inv));
            divert.refresh(Some(inv));
        }
    }
    divert.slot(slot, acct, out);
}

fn run(
    spec: &WorkerSpec,
    gate: &StartGate,
    stop: &AtomicBool,
    inventory: Option<&SharedSnapshot>,
) -> Result<WorkerSummary, DetectorError> {
    let opened = setup(spec);
    if !gate.pass(opened.is_ok()) {
        return Err(opened.err().unwrap_or(DetectorError::Aborted { queue: spec.queue }));
    }
    let Opened { mut consumer, producer, page, mut divert, claims: _claims } = opened?;
    let queue = spec.queue;
    // The packet queue as a finished run left it: closed, drained, and its
    // worker ended (not killed). This run's balancer has not attached yet (the
    // detector starts first): wait for it instead of ending at once on the
    // last run's close, which lost the whole run. The count before the state
    // (Consumer::state_after).
    let attaches = consumer.producer_attaches();
    let stale = (page.get(wc::ENDED) == 1 && consumer.state() == QueueState::Ended).then_some(attaches);
    if stale.is_some() {
        station::cj_info!(
            "(Core {queue}) packet queue {} was closed and drained by an earlier run; waiting for the balancer to attach",
            spec.packet_queue_path().display()
        );
    }

    let stats = StatsWriter::new(page, queue);
    // Published records are counted by the queue itself; the page may lag it after a crash.
    let seq = producer.position() + stats.base[wc::RECORDS_LOST];
    let mut out = RecordOut::new(producer, queue, seq, stop, spec.wait);
    let mut acct = Accounting::new(spec.table).with_decap(spec.decap);
    let mut waiter = Waiter::new(spec.wait);
    let mut last_idle_check: Option<Instant> = None;
    let mut corrupt_log = RateLimited::new();
    stats.write(&acct, &out, &divert, false);

    let (mut first_packet, mut last_packet): (Option<Instant>, Option<Instant>) = (None, None);
    // Reports how far this worker has read, so a released capture index is reused only after.
    let mark = inventory.map(|inv| inv.load().readers.join());
    let cause = loop {
        refresh_snapshot(&mut acct, inventory);
        divert.refresh(inventory);
        let mut n = 0;
        // Records become visible (published) only after the packet slots they
        // came from are released: a worker killed in between loses them as
        // part of its flows (worker_crash_lost), never counts a packet twice.
        // So a batch takes only as many slots as the record queue has room for.
        let batch = out.batch_room();
        if batch == 0 {
            // No room for this batch's records yet: wait once for the app (the stop check below still runs).
            out.make_room();
        }
        out.in_batch = true;
        acct.begin_batch();
        while n < batch {
            if consumer.pop_with(|slot| take(slot, inventory, &mut acct, &mut divert, &mut out)).is_none() {
                break;
            }
            n += 1;
        }
        // The batch's last packets are counted before its slots are released.
        acct.end_batch(&mut out);
        out.in_batch = false;
        if n > 0 {
            let now = Instant::now();
            first_packet.get_or_insert(now);
            last_packet = Some(now);
            consumer.release();
            acct.busy();
            waiter.reset();
            last_idle_check = None;
            out.publish();
            stats.write(&acct, &out, &divert, false);
            // Which container entries the flows hold (per flow changes only: most batches store nothing).
            if let Some(m) = &mark {
                acct.report_held(m);
            }
            let corrupt = acct.counters().corrupt_slots;
            if corrupt > corrupt_log.count && corrupt_log.ready() {
                station::cj_warn!(
                    "(Core {queue}) {} unreadable packet-queue slots counted as malformed ({corrupt} in all)",
                    corrupt - corrupt_log.count
                );
                corrupt_log.count = corrupt;
            }
        } else {
            let state = match stale {
                Some(seen) => consumer.state_after(seen),
                None => consumer.state(),
            };
            match state {
                QueueState::Ended => break EndCause::QueueEnded,
                QueueState::Ready => {}
                QueueState::Empty => {
                    // Every frame queued before the snapshot in use was loaded is counted.
                    if let Some(m) = &mark {
                        m.drained_under(acct.snapshot_generation());
                    }
                    let now = Instant::now();
                    let due = match last_idle_check {
                        None => true,
                        Some(t) => now.duration_since(t) >= IDLE_CHECK,
                    };
                    if due {
                        last_idle_check = Some(now);
                        acct.idle(now, &mut out);
                        out.publish();
                        stats.write(&acct, &out, &divert, false);
                    }
                    // After expiry: the entries of flows that ended are let go.
                    if let Some(m) = &mark {
                        acct.report_held(m);
                    }
                    waiter.wait();
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            // Process what was already queued when the signal came (at most one
            // ring's worth, so a balancer still writing cannot keep us here):
            // packets of a stopped pipeline end up in records, not in limbo.
            let budget = consumer.stats().capacity;
            let mut drained = 0u64;
            while drained < budget {
                let mut n = 0;
                let batch = out.batch_room();
                out.in_batch = true;
                acct.begin_batch();
                while n < batch
                    && consumer.pop_with(|slot| take(slot, inventory, &mut acct, &mut divert, &mut out)).is_some()
                {
                    n += 1;
                }
                acct.end_batch(&mut out);
                out.in_batch = false;
                if n == 0 {
                    if batch == 0 && out.make_room() {
                        continue;
                    }
                    break;
                }
                drained += n as u64;
                consumer.release();
                out.publish();
            }
            break EndCause::Signal;
        }
    };

    acct.flush(&mut out);
    out.publish();
    let corrupt = acct.counters().corrupt_slots;
    if corrupt > corrupt_log.count {
        station::cj_warn!(
            "(Core {queue}) {} unreadable packet-queue slots counted as malformed ({corrupt} in all)",
            corrupt - corrupt_log.count
        );
    }
    // Final totals first, then the close (a Release store: whoever sees the
    // queue Ended also sees these totals), then `ended`.
    stats.write(&acct, &out, &divert, false);
    // Only the end of the input stream ends the output stream: a worker stopped
    // by a signal leaves its record queue open, so the app keeps its totals and
    // a restarted detector carries on where this one stopped.
    out.finish(cause == EndCause::QueueEnded);
    stats.write(&acct, &out, &divert, true);
    let (table_bytes, _room, peak_flows) = acct.flow_table_memory();
    // What the flow state costs: every allocation of the table (entries,
    // index, wheels) over the most flows it held at once.
    if let Some(per_flow) = table_bytes.checked_div(peak_flows) {
        station::cj_info!(
            "(Core {queue}) flow state: {table_bytes} bytes for a peak of {peak_flows} flows, {per_flow} B per peak flow"
        );
    }
    Ok(WorkerSummary {
        queue,
        cause,
        packets: acct.counters().packets,
        records: out.records,
        records_lost: out.records_lost,
        packet_span: match (first_packet, last_packet) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        },
    })
}

/// A condition logged at most once per [`LOG_EVERY`].
struct RateLimited {
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    fn new() -> Self {
        Self { last: None, count: 0 }
    }

    fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Writes the stats page: this run's totals on top of the page's values at start.
struct StatsWriter {
    page: CounterPage,
    base: [u64; WORKER_COUNTERS.len()],
}

impl StatsWriter {
    fn new(page: CounterPage, queue: u32) -> Self {
        let mut base = [0u64; WORKER_COUNTERS.len()];
        for (i, b) in base.iter_mut().enumerate() {
            *b = page.get(i);
        }
        // A worker ran on this page (it has a heartbeat) and did not end: it was killed.
        if base[wc::HEARTBEAT_MS] != 0 && base[wc::ENDED] == 0 {
            base[wc::UNCLEAN_RESTARTS] += 1;
            station::cj_warn!(
                "(Core {queue}) the previous worker of queue {queue} did not end (killed, or its process died): \
                 the flows it held are lost; the app's identity counts their packets as worker_crash_lost"
            );
        }
        base[wc::FLOWS_ACTIVE] = 0;
        base[wc::ENDED] = 0;
        base[wc::HEARTBEAT_MS] = 0;
        base[wc::DIVERT_RULES_GENERATION] = 0;
        base[wc::TUNNEL_ENDPOINTS] = 0;
        Self { page, base }
    }

    fn write(&self, acct: &Accounting, out: &RecordOut<'_>, divert: &Divert, ended: bool) {
        let c = acct.counters();
        let f = acct.flow_stats();
        let mut v = [0u64; WORKER_COUNTERS.len()];
        v[wc::PACKETS] = c.packets;
        v[wc::BYTES] = c.bytes;
        v[wc::IPV4] = c.ipv4;
        v[wc::IPV6] = c.ipv6;
        v[wc::NON_IP] = c.non_ip;
        v[wc::MALFORMED] = c.malformed;
        v[wc::FRAGMENTS] = c.fragments;
        v[wc::TRUNCATED] = c.truncated;
        v[wc::FLOWS_ACTIVE] = f.active;
        v[wc::FLOWS_NEW] = f.new;
        v[wc::FLOWS_EXPIRED] = f.expired;
        v[wc::FLOWS_EVICTED] = f.evicted;
        v[wc::RECORDS] = out.records;
        v[wc::RECORDS_LOST] = out.records_lost;
        v[wc::RECORD_PACKETS] = out.record_packets;
        v[wc::LOST_PACKETS] = out.lost_packets;
        v[wc::ENDED] = u64::from(ended);
        v[wc::HEARTBEAT_MS] = station::naming::heartbeat_ms();
        let d = divert.counters();
        v[wc::MIRRORED_PACKETS] = d.mirrored_packets;
        v[wc::MIRRORED_BYTES] = d.mirrored_bytes;
        v[wc::DIVERTED_PACKETS] = d.diverted_packets;
        v[wc::DIVERTED_BYTES] = d.diverted_bytes;
        v[wc::TUN_DROPPED_PACKETS] = d.tun_dropped_packets;
        v[wc::TUN_DROPPED_BYTES] = d.tun_dropped_bytes;
        v[wc::DIVERT_RULES_GENERATION] = d.rules_generation;
        v[wc::DIVERT_VERDICTS_EVICTED] = d.verdicts_evicted;
        let fr = acct.fragment_stats();
        v[wc::FRAGMENTS_SEEN] = fr.seen;
        v[wc::FRAGMENTS_ATTRIBUTED] = fr.attributed;
        v[wc::FRAGMENTS_UNATTRIBUTED] = fr.unattributed;
        v[wc::FRAGMENT_IDS_EVICTED] = fr.evicted;
        let tu = acct.tunnel_stats();
        v[wc::TUNNEL_PACKETS] = tu.decapsulated;
        v[wc::TUNNEL_UNDECODED] = tu.undecoded;
        v[wc::TUNNEL_ENDPOINTS] = tu.endpoints;
        v[wc::TUNNEL_ENDPOINTS_NOT_KEPT] = tu.not_kept;
        for (i, x) in v.iter().enumerate() {
            self.page.set(i, self.base[i] + x);
        }
        divert.write_rule_counters();
    }
}

/// The worker's record sink: numbers records and queues them, waiting for
/// room (backpressure) unless stopping and out of patience.
struct RecordOut<'a> {
    producer: Producer,
    queue: u32,
    seq: u64,
    unpublished: u32,
    stop: &'a AtomicBool,
    waiter: Waiter,
    /// When a stopping worker started waiting for room.
    stop_wait_since: Option<Instant>,
    /// Stopping and out of patience: count the rest as lost.
    giving_up: bool,
    /// When the record queue was first found full in the current wait.
    full_since: Option<Instant>,
    full_log: RateLimited,
    records: u64,
    record_packets: u64,
    records_lost: u64,
    lost_packets: u64,
    /// Packet slots are being read and not yet released: publish nothing.
    in_batch: bool,
}

/// Records one packet slot can make the worker emit, as budgeted: the flow it
/// ends (a timeout) or exports (active timeout), one evicted for room, and the
/// like for fragments. A batch takes at most room / this many slots. A first
/// fragment that brings more held fragments than that with it may exceed the
/// budget: when the record queue then fills mid-batch, its records are
/// published before the batch's slots are released (the one case where a
/// worker killed at that moment could count packets twice).
const RECORDS_PER_SLOT: usize = 8;

impl<'a> RecordOut<'a> {
    /// How many packet slots the next batch may take: as many as the record
    /// queue has room for their records ([`RECORDS_PER_SLOT`] each), at most
    /// [`BATCH`]. Zero when the record queue is (nearly) full: then
    /// [`RecordOut::make_room`] first.
    fn batch_room(&mut self) -> usize {
        (self.producer.free_slots() / RECORDS_PER_SLOT).min(BATCH)
    }

    /// Publishes and waits once for the app to free room; false when stopping
    /// and out of patience.
    fn make_room(&mut self) -> bool {
        self.wait_for_room()
    }

    fn new(producer: Producer, queue: u32, seq: u64, stop: &'a AtomicBool, wait: WaitStrategy) -> Self {
        Self {
            producer,
            queue,
            seq,
            unpublished: 0,
            stop,
            waiter: Waiter::new(wait),
            stop_wait_since: None,
            giving_up: false,
            full_since: None,
            full_log: RateLimited::new(),
            records: 0,
            record_packets: 0,
            records_lost: 0,
            lost_packets: 0,
            in_batch: false,
        }
    }

    fn publish(&mut self) {
        if self.unpublished > 0 {
            self.producer.publish();
            self.unpublished = 0;
        }
    }

    /// Publishes what is left and, at the end of the stream, closes the record queue.
    fn finish(&mut self, close: bool) {
        self.publish();
        if close {
            self.producer.close();
        }
        if self.records_lost > 0 {
            station::cj_warn!(
                "(Core {}) {} records ({} packets) counted in records_lost: rec-{} stayed full",
                self.queue,
                self.records_lost,
                self.lost_packets,
                self.queue
            );
        }
    }

    fn lose(&mut self, rec: &FlowRecord) {
        self.records_lost += 1;
        self.lost_packets += rec.packets();
    }

    /// Waits once for room; returns false when the record must be counted lost.
    #[cold]
    fn wait_for_room(&mut self) -> bool {
        self.publish();
        if self.giving_up {
            return false;
        }
        let now = Instant::now();
        let full_since = *self.full_since.get_or_insert(now);
        if self.stop.load(Ordering::Relaxed) {
            let since = *self.stop_wait_since.get_or_insert(now);
            if now.duration_since(since) >= SHUTDOWN_WAIT {
                self.giving_up = true;
                station::cj_warn!(
                    "(Core {q}) stopping, but the app is not draining rec-{q}: still full after {}s; counting the remaining records as lost",
                    SHUTDOWN_WAIT.as_secs(),
                    q = self.queue
                );
                return false;
            }
        } else if now.duration_since(full_since) >= Duration::from_secs(1) && self.full_log.ready() {
            station::cj_warn!(
                "(Core {q}) record queue rec-{q} full for {}s: waiting for the app to drain it",
                now.duration_since(full_since).as_secs(),
                q = self.queue
            );
        }
        self.waiter.wait();
        true
    }
}

impl RecordSink for RecordOut<'_> {
    fn emit(&mut self, mut rec: FlowRecord) {
        // The app refuses records of another layout (DESIGN.md, "The app").
        rec.stamp_layout();
        rec.seq = self.seq;
        self.seq += 1;
        loop {
            match self.producer.push(rec.as_bytes()) {
                Ok(()) => {
                    self.records += 1;
                    self.record_packets += rec.packets();
                    self.unpublished += 1;
                    if self.unpublished >= PUBLISH_EVERY && !self.in_batch {
                        self.publish();
                    }
                    if self.full_since.is_some() {
                        self.full_since = None;
                        self.stop_wait_since = None;
                        self.waiter.reset();
                    }
                    return;
                }
                Err(Full) => {
                    if !self.wait_for_room() {
                        self.lose(&rec);
                        return;
                    }
                }
            }
        }
    }
}

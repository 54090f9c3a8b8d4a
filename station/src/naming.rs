//! Queue naming: where a cluster's queues and stats pages live in shared memory.
//!
//! Guarantees: every process derives the same paths from the same
//! configuration (`CJ_SHM_DIR`, `CJ_CLUSTER_ID`), so a balancer, detector and
//! app started in any order meet at the same files.

use std::path::{Path, PathBuf};

/// Directory of one cluster's queues: `<shm_dir>/conjure-<cluster>`.
pub fn cluster_dir(shm_dir: &Path, cluster_id: u32) -> PathBuf {
    shm_dir.join(format!("conjure-{cluster_id}"))
}

/// Packet queue `queue` of queue set `set`: `pkt-<set>-<queue>`.
pub fn packet_queue_path(cluster_dir: &Path, set: u32, queue: u32) -> PathBuf {
    cluster_dir.join(format!("pkt-{set}-{queue}"))
}

/// Record queue of the worker reading packet queue `queue` of set 0: `rec-<queue>`.
pub fn record_queue_path(cluster_dir: &Path, queue: u32) -> PathBuf {
    set_record_queue_path(cluster_dir, 0, queue)
}

/// Record queue of the worker reading packet queue `queue` of queue set `set`:
/// `rec-<queue>` for set 0 (the usual single detector), `rec-<set>-<queue>`
/// otherwise, so detectors reading different sets (N_QUEUE_SETS > 1) never
/// share a record queue.
pub fn set_record_queue_path(cluster_dir: &Path, set: u32, queue: u32) -> PathBuf {
    if set == 0 {
        cluster_dir.join(format!("rec-{queue}"))
    } else {
        cluster_dir.join(format!("rec-{set}-{queue}"))
    }
}

/// The balancer's stats page: `stats-balancer`.
pub fn balancer_stats_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("stats-balancer")
}

/// The app's stats page for queue set `set`: `stats-app` (set 0) or `stats-app-<set>`.
pub fn app_stats_path(cluster_dir: &Path, set: u32) -> PathBuf {
    if set == 0 {
        cluster_dir.join("stats-app")
    } else {
        cluster_dir.join(format!("stats-app-{set}"))
    }
}

/// Counters of the app's stats page, in page order: `heartbeat_ms` (as the
/// others'), `records` (valid records taken off the record queues), `ended`
/// (1: every record queue ended and was drained, 2: stopped by a signal) and
/// `identity` (the accounting identity at the last refresh or the end:
/// 0 not final or unchecked, 1 holds, 2 broken).
pub const APP_COUNTERS: &[&str] = &["heartbeat_ms", "records", "ended", "identity"];

/// Index of each app counter in [`APP_COUNTERS`].
pub mod app_counter {
    /// Last sign of life, [`super::heartbeat_ms`].
    pub const HEARTBEAT_MS: usize = 0;
    /// Valid records taken off the record queues.
    pub const RECORDS: usize = 1;
    /// 1 at the end of the stream, 2 stopped by a signal.
    pub const ENDED: usize = 2;
    /// 0 not final or unchecked, 1 holds, 2 broken.
    pub const IDENTITY: usize = 3;
}

/// The stats page of the worker reading queue `queue` of set 0: `stats-worker-<queue>`.
pub fn worker_stats_path(cluster_dir: &Path, queue: u32) -> PathBuf {
    set_worker_stats_path(cluster_dir, 0, queue)
}

/// The stats page of the worker reading queue `queue` of set `set`:
/// `stats-worker-<queue>` for set 0, `stats-worker-<set>-<queue>` otherwise.
pub fn set_worker_stats_path(cluster_dir: &Path, set: u32, queue: u32) -> PathBuf {
    if set == 0 {
        cluster_dir.join(format!("stats-worker-{queue}"))
    } else {
        cluster_dir.join(format!("stats-worker-{set}-{queue}"))
    }
}

/// The per-rule flow-divert page of the worker reading queue `queue` of set
/// `set` (only with `CJ_TUN=yes`): `divert-<queue>` for set 0,
/// `divert-<set>-<queue>` otherwise. Its counters are
/// [`divert_rule_counters`].
pub fn set_divert_page_path(cluster_dir: &Path, set: u32, queue: u32) -> PathBuf {
    if set == 0 {
        cluster_dir.join(format!("divert-{queue}"))
    } else {
        cluster_dir.join(format!("divert-{set}-{queue}"))
    }
}

/// The text file naming the rules of a divert page's slots (written by
/// cj-detector at every rules generation): `divert-rules` for set 0,
/// `divert-rules-<set>` otherwise. One header line `# generation G of FILE`,
/// then one line per rule: `rule<n> line <L> <rule text>`.
pub fn set_divert_rules_path(cluster_dir: &Path, set: u32) -> PathBuf {
    if set == 0 {
        cluster_dir.join("divert-rules")
    } else {
        cluster_dir.join(format!("divert-rules-{set}"))
    }
}

/// Rules counted each in a slot of their own on a divert page; the rules
/// after them share the `other` slot.
pub const DIVERT_RULE_SLOTS: usize = 64;

/// The counters of each slot of a divert page, in page order (a slot's
/// counters are `<slot>_<counter>`).
pub const DIVERT_SLOT_COUNTERS: &[&str] = &[
    "mirrored_packets",
    "mirrored_bytes",
    "diverted_packets",
    "diverted_bytes",
    "tun_dropped_packets",
    "tun_dropped_bytes",
];

/// The name of divert slot `slot`: `rule1` .. `rule64` (the n-th rule of the
/// file, comments and blank lines not counted), then `other`.
pub fn divert_slot_name(slot: usize) -> String {
    if slot < DIVERT_RULE_SLOTS {
        format!("rule{}", slot + 1)
    } else {
        "other".to_string()
    }
}

/// Every counter name of a divert page: for each of the
/// [`DIVERT_RULE_SLOTS`] + 1 slots, [`DIVERT_SLOT_COUNTERS`] prefixed by
/// [`divert_slot_name`] (`rule1_mirrored_packets`, ..., `other_tun_dropped_bytes`).
pub fn divert_rule_counters() -> Vec<String> {
    (0..=DIVERT_RULE_SLOTS)
        .flat_map(|s| DIVERT_SLOT_COUNTERS.iter().map(move |c| format!("{}_{c}", divert_slot_name(s))))
        .collect()
}

/// Counters of the balancer's stats page, in page order.
///
/// `received`: frames taken from the source (all sources summed); `received_bytes`:
/// their wire bytes; `capture_dropped`: frames the capture layer (kernel ring,
/// PF_RING) reports lost before the balancer saw them; `queue_dropped`: packet
/// copies dropped because a packet queue was full (summed over every queue of
/// every set; per-queue figures are in the queue headers); `source_errors`:
/// unreadable records in a capture (a truncated last record, a corrupt block),
/// each counted and skipped; `sets`: N_QUEUE_SETS; `queues_per_set`: queues in
/// each set; `hash_mode`: ZBALANCE_HASH_MODE; `ended`: 0 while the balancer
/// runs, 1 once a finite source is exhausted and every queue was closed, 2 once
/// it stopped on SIGINT/SIGTERM (queues left open for a restarted balancer);
/// `heartbeat_ms`: [`heartbeat_ms`] when the balancer last went round its
/// loop (at least once a millisecond while it runs, busy or idle).
pub const BALANCER_COUNTERS: &[&str] = &[
    "received",
    "received_bytes",
    "capture_dropped",
    "queue_dropped",
    "source_errors",
    "sets",
    "queues_per_set",
    "hash_mode",
    "ended",
    "heartbeat_ms",
];

/// Index of each balancer counter in [`BALANCER_COUNTERS`].
pub mod balancer_counter {
    /// Frames taken from the source.
    pub const RECEIVED: usize = 0;
    /// Their wire bytes.
    pub const RECEIVED_BYTES: usize = 1;
    /// Lost in the capture layer before the balancer saw them.
    pub const CAPTURE_DROPPED: usize = 2;
    /// Copies dropped at full packet queues.
    pub const QUEUE_DROPPED: usize = 3;
    /// Unreadable capture records.
    pub const SOURCE_ERRORS: usize = 4;
    /// N_QUEUE_SETS.
    pub const SETS: usize = 5;
    /// Queues per set.
    pub const QUEUES_PER_SET: usize = 6;
    /// ZBALANCE_HASH_MODE.
    pub const HASH_MODE: usize = 7;
    /// 0 running, 1 a finite source ended (queues closed), 2 stopped by a signal.
    pub const ENDED: usize = 8;
    /// Last sign of life, [`super::heartbeat_ms`].
    pub const HEARTBEAT_MS: usize = 9;
}

/// The clock of every heartbeat: `CLOCK_MONOTONIC` in milliseconds. It is one
/// clock for the whole host (PID and mount namespaces share it), so a reader
/// in another container compares it with its own reading: a page whose
/// heartbeat is older than [`HEARTBEAT_STALE_MS`] belongs to a process that
/// is gone or hung, whatever its pid says.
pub fn heartbeat_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1000) + (t.tv_nsec() as u64) / 1_000_000)
        .unwrap_or(0)
}

/// How old a heartbeat may be before its process counts as not running:
/// writers beat at least every 100 ms while they run (idle included).
pub const HEARTBEAT_STALE_MS: u64 = 3000;

/// Counters of a detector worker's stats page, in page order.
///
/// `packets`/`bytes`: frames read from the packet queue and their wire bytes;
/// `ipv4`, `ipv6`, `non_ip`, `malformed`: by layer-3 kind (they sum to `packets`);
/// `fragments`: later IP fragments (offset > 0); `truncated`: frames
/// cut to the slot size; `flows_active`: flows in the table now; `flows_new`,
/// `flows_expired`, `flows_evicted`: totals; `records`: records published;
/// `records_lost`: records that could not be queued before shutdown gave up
/// waiting (each counted, never silent); `record_packets`: packets carried by
/// published records; `ended`: 1 once the worker flushed and closed its record queue;
/// the flow-divert counters (all 0 unless CJ_TUN=yes) come last: `mirrored_*`,
/// `diverted_*` (diverted frames are not in `packets`), `tun_dropped_*`,
/// `divert_rules_generation`, `divert_verdicts_evicted`; then the fragment
/// table's (the detector's `fragments` module): `fragments_seen` (first and
/// later fragments), `fragments_attributed` (later fragments counted in
/// their datagram's flow, with its ports), `fragments_unattributed` (later
/// fragments counted under ports 0/0 because their first fragment never came
/// within the timeout or their entry was evicted), `fragment_ids_evicted`;
/// then, after `unclean_restarts`, tunnel decapsulation's (all 0 unless
/// CJ_DECAP is set): `tunnel_packets` (counted as their inner flow),
/// `tunnel_undecoded` (of an enabled tunnel, counted as their outer flow:
/// inside not usable), `tunnel_endpoints` (outer endpoint pairs the worker
/// keeps), `tunnel_endpoints_not_kept` (decapsulated packets whose pair
/// found that table full: counted without their outer addresses).
pub const WORKER_COUNTERS: &[&str] = &[
    "packets",
    "bytes",
    "ipv4",
    "ipv6",
    "non_ip",
    "malformed",
    "fragments",
    "truncated",
    "flows_active",
    "flows_new",
    "flows_expired",
    "flows_evicted",
    "records",
    "records_lost",
    "record_packets",
    "lost_packets",
    "ended",
    "heartbeat_ms",
    "mirrored_packets",
    "mirrored_bytes",
    "diverted_packets",
    "diverted_bytes",
    "tun_dropped_packets",
    "tun_dropped_bytes",
    "divert_rules_generation",
    "divert_verdicts_evicted",
    "fragments_seen",
    "fragments_attributed",
    "fragments_unattributed",
    "fragment_ids_evicted",
    "unclean_restarts",
    "tunnel_packets",
    "tunnel_undecoded",
    "tunnel_endpoints",
    "tunnel_endpoints_not_kept",
];

/// Index of each worker counter in [`WORKER_COUNTERS`].
pub mod worker_counter {
    /// Frames read.
    pub const PACKETS: usize = 0;
    /// Wire bytes read.
    pub const BYTES: usize = 1;
    /// IPv4 frames.
    pub const IPV4: usize = 2;
    /// IPv6 frames.
    pub const IPV6: usize = 3;
    /// Non-IP frames.
    pub const NON_IP: usize = 4;
    /// Malformed IP frames.
    pub const MALFORMED: usize = 5;
    /// Later fragments.
    pub const FRAGMENTS: usize = 6;
    /// Frames truncated to the slot.
    pub const TRUNCATED: usize = 7;
    /// Flows in the table now.
    pub const FLOWS_ACTIVE: usize = 8;
    /// Flows created.
    pub const FLOWS_NEW: usize = 9;
    /// Flows expired (any reason but eviction).
    pub const FLOWS_EXPIRED: usize = 10;
    /// Flows evicted for lack of room.
    pub const FLOWS_EVICTED: usize = 11;
    /// Records published.
    pub const RECORDS: usize = 12;
    /// Records lost at shutdown (record queue full and the app gone).
    pub const RECORDS_LOST: usize = 13;
    /// Packets carried by published records.
    pub const RECORD_PACKETS: usize = 14;
    /// Packets carried by lost records.
    pub const LOST_PACKETS: usize = 15;
    /// 1 once flushed and closed.
    pub const ENDED: usize = 16;
    /// Last sign of life, [`super::heartbeat_ms`].
    pub const HEARTBEAT_MS: usize = 17;
    /// Flow divert (CJ_TUN): frames of `mirror` flows copied to the tun
    /// device (also accounted in flows as usual).
    pub const MIRRORED_PACKETS: usize = 18;
    /// Their wire bytes.
    pub const MIRRORED_BYTES: usize = 19;
    /// Frames of `divert` flows: handed to the tun device instead of the
    /// flow table, so not in `packets` (a term of the identity of their own).
    pub const DIVERTED_PACKETS: usize = 20;
    /// Their wire bytes.
    pub const DIVERTED_BYTES: usize = 21;
    /// Mirrored or diverted frames the tun device did not take (its queue
    /// full, an error, or a frame cut to the slot).
    pub const TUN_DROPPED_PACKETS: usize = 22;
    /// Their wire bytes.
    pub const TUN_DROPPED_BYTES: usize = 23;
    /// Generation of the divert rule set the worker uses now (0: none).
    pub const DIVERT_RULES_GENERATION: usize = 24;
    /// Flow verdicts dropped from the worker's bounded verdict cache while
    /// their flow was still active (such a flow is decided again).
    pub const DIVERT_VERDICTS_EVICTED: usize = 25;
    /// IP fragments read, first and later (not diverted).
    pub const FRAGMENTS_SEEN: usize = 26;
    /// Later fragments counted in their datagram's flow, with its ports.
    pub const FRAGMENTS_ATTRIBUTED: usize = 27;
    /// Later fragments counted under ports 0/0 (the named remainder): their
    /// first fragment did not come within 30 s, or their datagram's entry
    /// was evicted. `fragments` - attributed - unattributed are held now.
    pub const FRAGMENTS_UNATTRIBUTED: usize = 28;
    /// Datagrams evicted from the worker's bounded fragment table.
    pub const FRAGMENT_IDS_EVICTED: usize = 29;
    /// Times a worker started on this page after one that did not end (killed,
    /// or its process died): the flows that one held are lost, and the app's
    /// identity counts their packets as `worker_crash_lost`.
    pub const UNCLEAN_RESTARTS: usize = 30;
    /// CJ_DECAP: packets counted as their inner flow.
    pub const TUNNEL_PACKETS: usize = 31;
    /// CJ_DECAP: packets of an enabled tunnel counted as their outer flow
    /// (the inside was cut, malformed, not IP, or the outer packet a fragment).
    pub const TUNNEL_UNDECODED: usize = 32;
    /// CJ_DECAP: outer endpoint pairs in the worker's tunnel table now.
    pub const TUNNEL_ENDPOINTS: usize = 33;
    /// CJ_DECAP: decapsulated packets whose endpoint pair found the table
    /// full (their records keep the tunnel kind, not the outer addresses).
    pub const TUNNEL_ENDPOINTS_NOT_KEPT: usize = 34;
}

/// Slot size of record queues: the queue's 8-byte length word plus one FlowRecord, rounded to 8.
pub const RECORD_SLOT_SIZE: u32 = ((8 + crate::record::FLOW_RECORD_SIZE as u32) + 7) & !7;

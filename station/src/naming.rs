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

/// Record queue of the worker reading packet queue `queue`: `rec-<queue>`.
pub fn record_queue_path(cluster_dir: &Path, queue: u32) -> PathBuf {
    cluster_dir.join(format!("rec-{queue}"))
}

/// The balancer's stats page: `stats-balancer`.
pub fn balancer_stats_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("stats-balancer")
}

/// The stats page of the worker reading queue `queue`: `stats-worker-<queue>`.
pub fn worker_stats_path(cluster_dir: &Path, queue: u32) -> PathBuf {
    cluster_dir.join(format!("stats-worker-{queue}"))
}

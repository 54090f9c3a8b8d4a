//! Resuming an offline stream after a balancer stopped (signal) or died
//! (SIGKILL) before its end: the resume record `resume-balancer` in the
//! cluster directory.
//!
//! When a stream begins, the balancer writes the record before it publishes
//! a frame: what the stream is read from (the source, and for a capture file
//! its size, modification time and inode), `ZBALANCE_HASH_MODE`, `CJ_FILTER`,
//! and for every packet queue of every set its position (messages ever
//! published) and drop count at that moment. The queue headers go on counting
//! what each queue took of the stream, published with one Release store per
//! queue, and survive any death of the balancer. A balancer that finds the
//! stream unfinished (the stats page's `ended` is not 1) and reads an offline
//! source (`pcap:`, `sim:`) compares the record with its own configuration
//! and, when they are the same stream, takes for each queue the frames it
//! holds of the stream (position + drops now − at the start), reads the
//! source again from the start and sends each frame only to the queues that
//! do not hold it ([`crate::dispatch::Dispatcher::resume`]).
//!
//! Guarantees: since a batch's publish across several queues is not atomic,
//! the positions are per queue, and the queue of a frame depends only on the
//! frame and its place in the stream, so every frame ends up exactly once in
//! its queue of every set, whatever moment the earlier balancer died at: the
//! accounting identity holds with no named term for the restart. A record of
//! another stream (another file or a changed one, another source, hash mode,
//! filter, set of queues), a missing record, or a queue that holds fewer of
//! the stream's frames than at its start (re-created) stops the balancer
//! with one line naming what differs and the fix: a balancer never mixes two
//! streams in one set of queues.
//!
//! Not guaranteed: live sources cannot be read again; a restarted live
//! balancer continues the counters (the frames that came while none ran were
//! never captured). A balancer killed between storing a queue's drop count
//! and its position (two stores, drops only with `CJ_ON_FULL=drop`) may have
//! one frame of that queue counted as dropped that was not.

use std::path::{Path, PathBuf};

use shmq::{CounterPage, Producer};
use station::config::{SourceSpec, StationConfig};

/// The resume record's file name in the cluster directory.
pub const RESUME_FILE: &str = "resume-balancer";

/// What names a stream, field by field (the record's first counters).
const FIELDS: [&str; 6] = ["source", "file_size", "file_mtime_ns", "file_inode", "hash_mode", "filter"];

/// What [`prepare`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Resume {
    /// A new stream (the record is written), or a live source: nothing to skip.
    Nothing,
    /// An unfinished offline stream: its queues hold `held[s][i]` frames of it
    /// (queue i of set s), and counted `queue_dropped` drops of it.
    From {
        /// Frames each queue holds.
        held: Vec<Vec<u64>>,
        /// Their drops since the stream began, all queues.
        queue_dropped: u64,
    },
}

/// Why an unfinished stream cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The record names another stream, or is missing or unreadable.
    #[error(
        "cannot resume the unfinished stream in {dir}: {what}; restart with the configuration it ran with, \
         or begin a new stream: stop cj-detector and cj-app and remove {dir} (or use another CJ_CLUSTER_ID)"
    )]
    Other {
        /// The cluster directory.
        dir: String,
        /// What differs, in words.
        what: String,
    },
    /// The record cannot be written.
    #[error("{0}")]
    Queue(#[from] shmq::QueueError),
}

/// The record's counter names for `sets` (queue numbers `queues`).
fn names(sets: usize, queues: &[u32]) -> Vec<String> {
    let mut names: Vec<String> = FIELDS.iter().map(|s| s.to_string()).collect();
    for s in 0..sets {
        for q in queues {
            names.push(format!("position-{s}-{q}"));
            names.push(format!("dropped-{s}-{q}"));
        }
    }
    names
}

/// FNV-1a: a stable 64-bit digest of a text (the same in every build, unlike
/// std's hasher), 0 kept for "none".
fn digest(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The stream's identity, in [`FIELDS`] order.
fn fingerprint(spec: &SourceSpec, config: &StationConfig) -> [u64; 6] {
    let (source, size, mtime, inode) = match spec {
        SourceSpec::Pcap(path) => {
            use std::os::unix::fs::MetadataExt;
            let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            let meta = std::fs::metadata(path).ok();
            let mtime =
                meta.as_ref().map_or(0, |m| (m.mtime() as u64).wrapping_mul(1_000_000_000) + m.mtime_nsec() as u64);
            (
                digest(&format!("pcap:{}", canonical.display())),
                meta.as_ref().map_or(0, |m| m.size()),
                mtime,
                meta.as_ref().map_or(0, |m| m.ino()),
            )
        }
        SourceSpec::Sim(sim) => (digest(&format!("sim:{sim}")), 0, 0, 0),
        other => (digest(&format!("{other:?}")), 0, 0, 0),
    };
    [source, size, mtime, inode, config.hash_mode.number(), digest(&config.filter)]
}

/// What each differing field means, for the error line.
fn differs(field: &str, was: u64, now: u64) -> String {
    match field {
        "source" => "it was read from another source (CJ_IFACE)".into(),
        "file_size" => format!("its capture file changed size ({was} bytes then, {now} now)"),
        "file_mtime_ns" => "its capture file was modified since".into(),
        "file_inode" => "its capture file was replaced since (another inode)".into(),
        "hash_mode" => format!("it ran with ZBALANCE_HASH_MODE={was}, this balancer with {now}"),
        _ => "it ran with another CJ_FILTER".into(),
    }
}

/// The record's path.
pub fn path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join(RESUME_FILE)
}

/// Writes a new stream's record (the queues' positions and drops now), or,
/// for an unfinished stream (`continued`) of an offline source, reads it and
/// says what the queues hold of the stream.
///
/// # Errors
/// [`ResumeError::Other`] for a record of another stream, a missing or
/// unreadable one, a queue re-created since; [`ResumeError::Queue`] when the
/// record cannot be written.
pub fn prepare(
    cluster_dir: &Path,
    spec: &SourceSpec,
    config: &StationConfig,
    sets: &[Vec<Producer>],
    queues: &[u32],
    continued: bool,
) -> Result<Resume, ResumeError> {
    let path = path(cluster_dir);
    let names = names(sets.len(), queues);
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let now = |p: &Producer| (p.position(), p.stats().dropped);
    let print = fingerprint(spec, config);
    if !continued {
        // A new stream: a new record (another layout may be there from an older one).
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(shmq::QueueError::Io { path: path.clone(), op: "remove", cause: e }.into());
            }
        }
        let page = CounterPage::open_or_create(&path, &name_refs)?;
        for (i, v) in print.iter().enumerate() {
            page.set(i, *v);
        }
        let mut i = FIELDS.len();
        for set in sets {
            for p in set {
                let (position, dropped) = now(p);
                page.set(i, position);
                page.set(i + 1, dropped);
                i += 2;
            }
        }
        return Ok(Resume::Nothing);
    }
    if spec.is_live() {
        return Ok(Resume::Nothing);
    }
    let other = |what: String| ResumeError::Other { dir: cluster_dir.display().to_string(), what };
    let record = CounterPage::read(&path).map_err(|e| {
        other(format!(
            "its resume record {} cannot be read ({e}): the balancer that began it kept none",
            path.display()
        ))
    })?;
    let found: Vec<&str> = record.iter().map(|(n, _)| n.as_str()).collect();
    if found.len() < FIELDS.len() || found[..FIELDS.len()] != FIELDS {
        return Err(other(format!("{} is not a resume record", path.display())));
    }
    for (i, field) in FIELDS.iter().enumerate() {
        if record[i].1 != print[i] {
            return Err(other(differs(field, record[i].1, print[i])));
        }
    }
    if found != name_refs {
        return Err(other(format!(
            "it ran on other packet queues ({} then, N_QUEUE_SETS={} x queues {queues:?} now)",
            found[FIELDS.len()..].iter().filter(|n| n.starts_with("position-")).count(),
            sets.len()
        )));
    }
    let mut held = Vec::with_capacity(sets.len());
    let mut queue_dropped = 0;
    let mut i = FIELDS.len();
    for set in sets {
        let mut row = Vec::with_capacity(set.len());
        for p in set {
            let (position, dropped) = now(p);
            let (position0, dropped0) = (record[i].1, record[i + 1].1);
            i += 2;
            if position < position0 || dropped < dropped0 {
                return Err(other(format!(
                    "packet queue {} holds fewer messages than when the stream began: it was re-created",
                    p.path().display()
                )));
            }
            row.push((position - position0) + (dropped - dropped0));
            queue_dropped += dropped - dropped0;
        }
        held.push(row);
    }
    Ok(Resume::From { held, queue_dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_stable_and_zero_means_none() {
        // FNV-1a test vectors.
        assert_eq!(digest("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(digest("foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(digest(""), 0);
    }
}

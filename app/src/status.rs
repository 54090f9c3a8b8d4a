//! `cj-app status`: the whole pipeline from the queue headers and stats pages.
//!
//! Guarantees: reads only, through read-only mappings (`QueueFile::read_stats`,
//! `CounterPage::read`); never attaches as producer or consumer, never
//! creates or changes a file, so it is safe beside a running pipeline. Lists
//! every `pkt-<set>-<q>` and `rec-<q>` file in the cluster directory, under the
//! names the station gives them (`rec-0-3` or `rec-03` is not `rec-3`, and is
//! ignored, as any other file), (sorted by
//! set and queue number) with enqueued, dequeued, dropped, fill (count and % of
//! capacity), closed, and the producer and consumer pids (as each saw its own
//! pid: in another PID namespace, a container's, the number means nothing
//! here); then the balancer's and each worker's counters and whether it runs,
//! judged by its page's heartbeat (`running`: it beat within
//! `HEARTBEAT_STALE_MS`; `not running`: older; `ended`/`stopped` from its end
//! mark), which is right across PID namespaces and after a crash.
//! With flow divert on (`CJ_TUN=yes`), a last section: the rules listed in
//! `divert-rules` (opened without following a link, a regular file of at
//! most [`crate::divert_pages::MAX_LISTING`] bytes) and, per worker, the counters of its page
//! `divert-<q>` for each rule slot that counted something.
//! A file that cannot be read is shown with the reason, not fatal.
//! A file of the station's names whose owner is neither root, the cluster
//! directory's owner (the station's user) nor the user running `status` is
//! not read ([`Trust`]): a member of the station's group may create names in
//! the directory, and its page would otherwise be shown to root as a worker's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use shmq::{CounterPage, QueueFile, QueueStats};

/// Whose files in a cluster directory are the station's: root's, the
/// directory owner's (the station's user: the station made it, or root when
/// `on-reboot.sh` did) and the reader's own. `cj-app status` reads no other
/// file, and `cj-app query` trusts no other socket or peer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Trust {
    /// The cluster directory's owner.
    pub station: u32,
    me: u32,
}

impl Trust {
    /// The rule for `dir`.
    ///
    /// # Errors
    /// The directory cannot be looked at.
    pub fn of(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let station = std::fs::symlink_metadata(dir)?.uid();
        Ok(Trust { station, me: nix::unistd::geteuid().as_raw() })
    }

    /// Whether a file or peer of `uid` is the station's.
    pub fn trusts(self, uid: u32) -> bool {
        uid == self.station || uid == 0 || uid == self.me
    }

    /// `None` when `path` is a file of a trusted owner, else why it is not read.
    fn refuses(self, path: &Path) -> Option<String> {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::symlink_metadata(path) {
            Ok(m) if !self.trusts(m.uid()) => Some(format!(
                "not read: owned by uid {}, neither root, the station's user (uid {}) nor you: not the station's file",
                m.uid(),
                self.station
            )),
            _ => None,
        }
    }
}

/// Why there is nothing to show.
#[derive(Debug, thiserror::Error)]
#[error(
    "no queues under {}: is the balancer or detector running with the same CJ_CLUSTER_ID and CJ_SHM_DIR?",
    dir.display()
)]
pub struct NoQueues {
    /// The cluster directory.
    pub dir: PathBuf,
}

/// A file of the cluster directory that `cj-app status` and the metrics read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Entry {
    Packet(u32, u32),
    /// (set, queue): `rec-<q>` is set 0, `rec-<set>-<q>` another set.
    Record(u32, u32),
    Balancer,
    /// (set, queue), named likewise.
    Worker(u32, u32),
    /// A worker's per-rule divert page `divert-<q>` / `divert-<set>-<q>`.
    Divert(u32, u32),
    /// The app's page of a queue set: `stats-app` (set 0), `stats-app-<set>`.
    App(u32),
}

/// `<q>` as (0, q), `<set>-<q>` as (set, q).
fn set_and_queue(rest: &str) -> Option<(u32, u32)> {
    match rest.split_once('-') {
        Some((s, q)) => Some((s.parse().ok()?, q.parse().ok()?)),
        None => Some((0, rest.parse().ok()?)),
    }
}

/// What a cluster-directory file name is (`None`: nothing these readers read).
/// Only the name the station itself gives that file counts: `rec-0-3`,
/// `stats-worker-03` or `rec-+3` would parse as queue 3 of set 0, but are not
/// `rec-3`, so they are nobody's file (a copy planted under such a name would
/// otherwise show as a second series with the same labels).
pub(crate) fn classify(name: &str) -> Option<Entry> {
    let entry = parse_name(name)?;
    let dir = Path::new("");
    let canonical = match entry {
        Entry::Packet(s, q) => station::naming::packet_queue_path(dir, s, q),
        Entry::Record(s, q) => station::naming::set_record_queue_path(dir, s, q),
        Entry::Balancer => station::naming::balancer_stats_path(dir),
        Entry::Worker(s, q) => station::naming::set_worker_stats_path(dir, s, q),
        Entry::Divert(s, q) => station::naming::set_divert_page_path(dir, s, q),
        Entry::App(s) => station::naming::app_stats_path(dir, s),
    };
    (canonical.as_os_str() == name).then_some(entry)
}

/// What `name` parses as, canonical or not.
fn parse_name(name: &str) -> Option<Entry> {
    if name == "stats-balancer" {
        return Some(Entry::Balancer);
    }
    if name == "stats-app" {
        return Some(Entry::App(0));
    }
    if let Some(set) = name.strip_prefix("stats-app-") {
        return set.parse().ok().map(Entry::App);
    }
    if let Some(q) = name.strip_prefix("stats-worker-") {
        return set_and_queue(q).map(|(s, q)| Entry::Worker(s, q));
    }
    if let Some((s, q)) = crate::divert_pages::page_name(name) {
        return Some(Entry::Divert(s, q));
    }
    if let Some(q) = name.strip_prefix("rec-") {
        return set_and_queue(q).map(|(s, q)| Entry::Record(s, q));
    }
    if let Some(rest) = name.strip_prefix("pkt-") {
        let (s, q) = rest.split_once('-')?;
        return Some(Entry::Packet(s.parse().ok()?, q.parse().ok()?));
    }
    None
}

fn pid_text(pid: u32) -> String {
    if pid == 0 {
        "-".to_string()
    } else {
        pid.to_string()
    }
}

/// Whether the process behind a stats page runs, from its heartbeat and end
/// mark, at `now_ms` ([`station::health::liveness`], which the `health`
/// subcommands share).
fn liveness(counters: &[(String, u64)], now_ms: u64) -> String {
    station::health::liveness(counters, now_ms).to_string()
}

fn queue_cells(name: &str, s: &QueueStats) -> Vec<String> {
    let fill = s.in_flight();
    let pct = if s.capacity > 0 { fill as f64 * 100.0 / s.capacity as f64 } else { 0.0 };
    vec![
        name.to_string(),
        s.enqueued.to_string(),
        s.dequeued.to_string(),
        s.dropped.to_string(),
        format!("{fill} ({pct:.1}%)"),
        if s.closed { "yes" } else { "no" }.to_string(),
        pid_text(s.producer_pid),
        pid_text(s.consumer_pid),
    ]
}

/// The status report of the cluster directory `dir`.
///
/// # Errors
/// The directory does not exist or holds no queue or stats file.
pub fn report(dir: &Path) -> Result<String, NoQueues> {
    let mut entries: Vec<(Entry, String)> = std::fs::read_dir(dir)
        .map_err(|_| NoQueues { dir: dir.to_path_buf() })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            classify(&name).map(|k| (k, name))
        })
        .collect();
    if entries.is_empty() {
        return Err(NoQueues { dir: dir.to_path_buf() });
    }
    entries.sort();
    let trust = Trust::of(dir).map_err(|_| NoQueues { dir: dir.to_path_buf() })?;

    let mut out = format!("cluster {}\n", dir.display());
    let mut rows = vec![["queue", "enqueued", "dequeued", "dropped", "fill", "closed", "producer", "consumer"]
        .map(String::from)
        .to_vec()];
    let mut problems = Vec::new();
    for (kind, name) in &entries {
        if matches!(kind, Entry::Packet(..) | Entry::Record(..)) {
            if let Some(why) = trust.refuses(&dir.join(name)) {
                problems.push(format!("{name}: {why}"));
                continue;
            }
            match QueueFile::read_stats(&dir.join(name)) {
                Ok((_, stats)) => rows.push(queue_cells(name, &stats)),
                Err(e) => problems.push(format!("{name}: unreadable: {e}")),
            }
        }
    }
    if rows.len() > 1 {
        let widths: Vec<usize> =
            (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
        for (ri, r) in rows.iter().enumerate() {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    if (1..=3).contains(&i) && ri > 0 {
                        format!("{c:>w$}", w = widths[i])
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect();
            let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        }
    }
    for p in problems {
        let _ = writeln!(out, "  {p}");
    }
    for (kind, name) in &entries {
        let label = match kind {
            Entry::Balancer => "balancer".to_string(),
            Entry::App(0) => "app".to_string(),
            Entry::App(set) => format!("app (set {set})"),
            Entry::Worker(0, q) => format!("worker {q}"),
            Entry::Worker(set, q) => format!("worker {q} (set {set})"),
            _ => continue,
        };
        if let Some(why) = trust.refuses(&dir.join(name)) {
            let _ = writeln!(out, "{label}: {why}");
            continue;
        }
        match CounterPage::read(&dir.join(name)) {
            Ok(counters) => {
                let kv: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(out, "{label}: {}", kv.join(" "));
                let _ = writeln!(out, "{label}: {}", liveness(&counters, station::naming::heartbeat_ms()));
                if matches!(kind, Entry::App(_)) {
                    let verdict = match counters.iter().find(|(k, _)| k == "identity").map(|(_, v)| *v) {
                        Some(1) => "holds",
                        Some(2) => "BROKEN (see summary.json, identity)",
                        _ => "not final yet",
                    };
                    let _ = writeln!(out, "{label}: accounting identity {verdict}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{label}: unreadable: {e}");
            }
        }
    }
    divert_section(dir, trust, &entries, &mut out);
    Ok(out)
}

/// One worker's per-rule lines: `  rule2: mirrored 10 pkts 1200 B, diverted 0 pkts 0 B, tun dropped 0 pkts 0 B`.
fn divert_lines(counters: &[(String, u64)]) -> Vec<String> {
    crate::divert_pages::slots(counters)
        .into_iter()
        .filter(|(_, c)| c.any())
        .map(|(slot, c)| {
            format!(
                "  {slot}: mirrored {} pkts {} B, diverted {} pkts {} B, tun dropped {} pkts {} B",
                c.mirrored_packets,
                c.mirrored_bytes,
                c.diverted_packets,
                c.diverted_bytes,
                c.tun_dropped_packets,
                c.tun_dropped_bytes
            )
        })
        .collect()
}

fn divert_section(dir: &Path, trust: Trust, entries: &[(Entry, String)], out: &mut String) {
    let mut listed = std::collections::BTreeSet::new();
    for (kind, name) in entries {
        let Entry::Divert(set, q) = *kind else { continue };
        if listed.insert(set) {
            let path = station::naming::set_divert_rules_path(dir, set);
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match trust.refuses(&path).map_or_else(|| crate::divert_pages::read_listing(&path), Err) {
                Ok(text) => {
                    let _ = writeln!(out, "divert rules ({file}):");
                    for l in text.lines() {
                        let _ = writeln!(out, "  {l}");
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "divert rules ({file}): unreadable: {e}");
                }
            }
        }
        let label = if set == 0 { format!("worker {q} divert") } else { format!("worker {q} (set {set}) divert") };
        if let Some(why) = trust.refuses(&dir.join(name)) {
            let _ = writeln!(out, "{label}: {why}");
            continue;
        }
        match CounterPage::read(&dir.join(name)) {
            Ok(counters) => {
                let lines = divert_lines(&counters);
                if lines.is_empty() {
                    let _ = writeln!(out, "{label}: nothing mirrored or diverted");
                } else {
                    let _ = writeln!(out, "{label}, per rule:");
                    for l in lines {
                        let _ = writeln!(out, "{l}");
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{label}: unreadable: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified_and_sorted() {
        assert_eq!(classify("pkt-1-10"), Some(Entry::Packet(1, 10)));
        assert_eq!(classify("rec-3"), Some(Entry::Record(0, 3)));
        assert_eq!(classify("rec-1-3"), Some(Entry::Record(1, 3)));
        assert_eq!(classify("stats-worker-2"), Some(Entry::Worker(0, 2)));
        assert_eq!(classify("stats-worker-1-2"), Some(Entry::Worker(1, 2)));
        assert_eq!(classify("stats-balancer"), Some(Entry::Balancer));
        assert_eq!(classify("divert-3"), Some(Entry::Divert(0, 3)));
        assert_eq!(classify("divert-1-3"), Some(Entry::Divert(1, 3)));
        assert_eq!(classify("divert-rules"), None);
        assert_eq!(classify("divert-rules-1"), None);
        assert_eq!(classify("pkt-x-1"), None);
        assert_eq!(classify("pkt-3"), None);
        assert_eq!(classify("app.sock"), None);
        assert_eq!(classify(".rec-1.tmp"), None);
        // Only the station's own names: the same (set, queue) written otherwise is nobody's file.
        for other in
            ["rec-0-3", "stats-worker-0-2", "divert-0-3", "stats-app-0", "rec-03", "rec-+3", "pkt-01-2", "pkt-1-+2"]
        {
            assert_eq!(classify(other), None, "{other}");
        }
        let mut v = vec![Entry::Record(0, 10), Entry::Packet(0, 10), Entry::Packet(0, 2), Entry::Record(0, 2)];
        v.sort();
        assert_eq!(v, vec![Entry::Packet(0, 2), Entry::Packet(0, 10), Entry::Record(0, 2), Entry::Record(0, 10)]);
    }

    #[test]
    fn divert_pages_show_the_rules_and_the_slots_that_counted() {
        let dir = tempfile::tempdir().unwrap();
        let names = station::naming::divert_rule_counters();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let page = CounterPage::open_or_create(&dir.path().join("divert-0"), &names).unwrap();
        page.set(2 * 6 + 2, 7);
        page.set(2 * 6 + 3, 700);
        page.set(64 * 6, 1);
        CounterPage::open_or_create(&dir.path().join("divert-1"), &names).unwrap();
        std::fs::write(dir.path().join("divert-rules"), "# generation 3 of /etc/r\nrule1 line 2 mirror port 53\n")
            .unwrap();
        let text = report(dir.path()).unwrap();
        let want = "divert rules (divert-rules):\n  # generation 3 of /etc/r\n  rule1 line 2 mirror port 53\n\
                    worker 0 divert, per rule:\n  \
                    rule3: mirrored 0 pkts 0 B, diverted 7 pkts 700 B, tun dropped 0 pkts 0 B\n  \
                    other: mirrored 1 pkts 0 B, diverted 0 pkts 0 B, tun dropped 0 pkts 0 B\n\
                    worker 1 divert: nothing mirrored or diverted\n";
        assert!(text.ends_with(want), "{text}");
    }

    #[test]
    fn pages_and_queues_of_a_foreign_owner_are_not_read() {
        // A member of the station's group can create names in the cluster
        // directory: its copy of a worker's page must not be shown as one.
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (chown)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let names = station::naming::WORKER_COUNTERS;
        let own = CounterPage::open_or_create(&dir.path().join("stats-worker-0"), names).unwrap();
        own.set(0, 11);
        let forged = CounterPage::open_or_create(&dir.path().join("stats-worker-1"), names).unwrap();
        forged.set(0, 999_999);
        let spec = shmq::QueueSpec { slot_size: 64, capacity: 8 };
        drop(QueueFile::open_or_create(&dir.path().join("rec-1"), spec).unwrap());
        let nobody = Some(nix::unistd::Uid::from_raw(65534));
        for name in ["stats-worker-1", "rec-1"] {
            nix::unistd::chown(&dir.path().join(name), nobody, None).unwrap();
        }
        let text = report(dir.path()).unwrap();
        assert!(text.contains(&format!("worker 0: {}=11 ", names[0])), "{text}");
        assert!(!text.contains("999999"), "the forged page was read:\n{text}");
        let refused = "not read: owned by uid 65534, neither root, the station's user (uid 0) nor you";
        assert!(text.contains(&format!("worker 1: {refused}")), "{text}");
        assert!(text.contains(&format!("rec-1: {refused}")), "{text}");
    }

    #[test]
    fn missing_dir_is_one_clear_line() {
        let e = report(Path::new("/dev/shm/conjure-98-nonexistent")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no queues under /dev/shm/conjure-98-nonexistent: is the balancer or detector running \
             with the same CJ_CLUSTER_ID and CJ_SHM_DIR?"
        );
    }
}

//! `CJ_IFACE=containers`: AF_PACKET capture on the host veth of every
//! container, following the detector's capture list as containers start and
//! stop, with no restart.
//!
//! The detector owns the container inventory (it needs every container's
//! names, MACs and addresses to attribute flows; the balancer needs only veth
//! names), assigns each container veth its `Frame::source` index and writes
//! the list to `<cluster dir>/capture` (`inventory::capture`). This source
//! runs no inventory: a thread `cj-capture-list` looks at that file every
//! [`LIST_POLL`] and hands a changed list to the packet thread through one
//! lock-free cell.
//!
//! Guarantees:
//! - At start (the list is read before the first poll) and whenever the list
//!   changes, rings are opened on the veths it names, with its indices, and
//!   closed on veths it no longer names (after delivering what their ring
//!   holds). A veth whose index changed is closed and opened again, unless
//!   its ring is still bound to it (below).
//! - A veth renamed while captured (`ip link set vethA name vethB`) keeps its
//!   ring: when the list drops a name and gives a name whose interface is the
//!   one a ring's socket is still bound to (its ifindex, which a rename keeps;
//!   `getsockname`), the ring is renamed and its frames re-tagged with the new
//!   name's index from the next frame read, without closing it, so no frame
//!   is missed (closing and opening lost the frames between: 75 of 3,002 in
//!   a probe). The detector gives a renamed veth a new index (its list and
//!   entries are by name): the old index stays in `sources`, as a closed
//!   ring's does, until the frames read under it are published; both
//!   indices name the same container. The same holds for a veth whose index
//!   alone changed.
//! - One line per ring let go, with why: deleted (its container stopped),
//!   no longer listed though it exists, or given another index. A veth that
//!   goes down or is gone while the list still names it is said after a
//!   second (see `af_packet`), not in the milliseconds a stopping container
//!   takes to leave the list.
//! - The balancer never picks an index: the detector has published what an
//!   index means before the list names it, so a container's first frames are
//!   attributed by its veth without any hold.
//! - `<cluster dir>/sources` says what is captured: written at start, after
//!   every opened ring, and after a closed ring's last frames were published
//!   to the packet queues (at the next poll, since the balancer publishes after
//!   each poll): the detector reuses an index only once this file stops
//!   naming it.
//! - A veth that cannot be opened is logged once and retried on the next list
//!   change or after a second, whichever comes first.
//! - Checking for a new list is one lock-free load per poll; nothing is
//!   allocated per frame.
//!
//! Not guaranteed: frames a container sends before its veth is in the list
//! and its ring is open are not seen (milliseconds after the link event); with
//! no detector running, the list does not follow new containers. A renamed
//! veth that has to wait for an index (255 captured) leaves the list before
//! its new name enters it: its ring is closed and opened again then. Flows
//! are keyed by capture index, so a flow that crosses a rename is two records
//! (the container's totals are exact).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use inventory::arc_swap::ArcSwap;
use inventory::capture::{self, CaptureList};
use station::config::StationConfig;

use super::af_packet::{AfPacketError, AfPacketSource, RingParams};
use super::{Frame, Poll, Source, SourceError, SourceStats};

/// How often the thread `cj-capture-list` looks at the capture list file.
pub const LIST_POLL: Duration = Duration::from_millis(10);

/// How long after a failed open a veth is tried again (if the list has not
/// changed meanwhile): a veth that just appeared may not be ready yet.
const RETRY: Duration = Duration::from_secs(1);

/// The list as the watcher last read it, with a number the packet thread compares.
#[derive(Debug, Default)]
struct Seen {
    /// Bumped on every change the watcher read.
    version: u64,
    list: CaptureList,
}

/// The `containers` source.
#[derive(Debug)]
pub struct ContainersSource {
    afp: AfPacketSource,
    list: Arc<ArcSwap<Seen>>,
    version: u64,
    cluster_dir: PathBuf,
    /// veth -> source index, captured now.
    assigned: BTreeMap<String, u8>,
    /// Rings closed in this poll: still named in `sources` until their frames are published.
    closing: Vec<(u8, String)>,
    /// veths that failed to open (logged once).
    failed: BTreeSet<String>,
    /// When to try the failed veths again.
    retry_at: Option<Instant>,
}

/// Reads the list file; errors are said once per distinct message.
fn read_list(dir: &Path, said: &mut Option<String>) -> Option<CaptureList> {
    match capture::read_capture(dir) {
        Ok(list) => {
            *said = None;
            list
        }
        Err(e) => {
            let msg = e.to_string();
            if said.as_deref() != Some(msg.as_str()) {
                station::cj_warn!("cj-balancer: containers: cannot read the capture list: {msg}");
                *said = Some(msg);
            }
            None
        }
    }
}

impl ContainersSource {
    /// Reads the detector's capture list, opens a ring on every veth it names
    /// and starts following it.
    ///
    /// # Errors
    /// A bad `CJ_AFP_*` value.
    pub fn open_configured(config: &StationConfig, filter: &[crate::filter::Insn]) -> Result<Self, AfPacketError> {
        let params = RingParams { filter: filter.to_vec(), ..RingParams::from_config(config) };
        let afp = AfPacketSource::open(&[], &params)?;
        let dir = config.cluster_dir();
        let mut said = None;
        let first = read_list(&dir, &mut said).unwrap_or_default();
        let cell = Arc::new(ArcSwap::from_pointee(Seen { version: 1, list: first }));
        let watched = Arc::clone(&cell);
        let watch_dir = dir.clone();
        let _ = std::thread::Builder::new().name("cj-capture-list".into()).spawn(move || {
            let path = capture::capture_path(&watch_dir);
            let stamp = |p: &Path| -> Option<(SystemTime, u64, u64)> {
                let m = std::fs::symlink_metadata(p).ok()?;
                Some((m.modified().ok()?, m.ino(), m.len()))
            };
            let mut last = stamp(&path);
            let mut version = 1;
            loop {
                std::thread::sleep(LIST_POLL);
                let now = stamp(&path);
                if now == last {
                    continue;
                }
                let Some(list) = read_list(&watch_dir, &mut said) else { continue };
                // A file that could not be read is read again at the next look.
                last = now;
                if list != watched.load().list {
                    version += 1;
                    watched.store(Arc::new(Seen { version, list }));
                }
            }
        });
        let mut s = Self {
            afp,
            list: cell,
            version: 0,
            cluster_dir: dir,
            assigned: BTreeMap::new(),
            closing: Vec::new(),
            failed: BTreeSet::new(),
            retry_at: None,
        };
        s.follow(&mut |_| {});
        s.write_sources();
        Ok(s)
    }

    /// Brings the rings in line with the list when it changed, or when a veth
    /// that failed to open is due to be tried again.
    fn follow(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) {
        if !self.closing.is_empty() {
            // The rings closed at the last poll: their frames are published now.
            self.closing.clear();
            self.write_sources();
        }
        let seen = self.list.load();
        let retry_due = self.retry_at.is_some_and(|t| Instant::now() >= t);
        if seen.version == self.version && !retry_due {
            return;
        }
        self.version = seen.version;
        self.retry_at = None;
        let want: BTreeMap<&str, u8> = seen.list.sources.iter().map(|(i, n)| (n.as_str(), *i)).collect();
        let mut gone: BTreeMap<String, u8> = self
            .assigned
            .iter()
            .filter(|(v, i)| want.get(v.as_str()) != Some(*i))
            .map(|(v, i)| (v.clone(), *i))
            .collect();
        // A veth renamed (or given another index) while captured: its ring is bound to the
        // device, which the rename keeps, so it is kept, renamed and re-tagged in place
        // instead of closed and opened again (which missed the frames between).
        let mut renames = Vec::new();
        for (v, i) in &want {
            if self.assigned.get(*v) == Some(i) {
                continue;
            }
            if let Some(old) = self.afp.captured_as(v) {
                if let Some(old_i) = gone.remove(&old) {
                    renames.push((old, old_i, (*v).to_owned(), *i));
                }
            }
        }
        // One settle for all of them, the other rings read meanwhile.
        let names: Vec<&str> = gone.keys().map(String::as_str).collect();
        let removed = self.afp.remove_all(&names, sink);
        for (v, i) in gone {
            self.assigned.remove(&v);
            self.closing.push((i, v));
        }
        for r in removed {
            let why = match want.get(r.name.as_str()) {
                Some(now) => {
                    format!("the detector's capture list gives it source {now} now (its ring is opened again)")
                }
                None if r.deleted => {
                    "it is gone (deleted: its container stopped, or moved to another network namespace) and the \
                     detector's capture list no longer names it"
                        .to_owned()
                }
                None => "the detector's capture list no longer names it, though it still exists (cj-detector \
                         --inventory shows what the detector sees)"
                    .to_owned(),
            };
            station::cj_info!(
                "cj-balancer: containers: stopped capturing {} (source {}): {why}; kernel counted {} frames, dropped \
                 {} (ring full), {} left in the ring unread",
                r.name,
                r.source,
                r.kernel.packets,
                r.kernel.drops,
                r.kernel.left
            );
        }
        for (old, _, _, _) in &renames {
            self.assigned.remove(old);
        }
        let mut kept = Vec::new();
        for (old, old_i, v, i) in renames {
            if !self.afp.rename(&old, &v, i) {
                continue; // (renamed again meanwhile: opened below as any new veth)
            }
            self.assigned.insert(v.clone(), i);
            if old_i != i {
                // Frames read as `old_i` are published: named in `sources` until the next poll, as a closed ring's.
                self.closing.push((old_i, old.clone()));
            }
            kept.push((old, old_i, v, i));
        }
        if !kept.is_empty() {
            self.write_sources();
        }
        for (old, old_i, v, i) in kept {
            if old == v {
                station::cj_info!(
                    "cj-balancer: containers: {v} is source {i} now (was {old_i}), as the detector's capture list \
                     says; its ring is kept"
                );
            } else {
                station::cj_info!(
                    "cj-balancer: containers: {old} was renamed {v} (the same interface): its ring is kept, no frame \
                     missed; its frames are source {i} from now on (were {old_i}), as the detector's capture list says"
                );
            }
        }
        let mut any_failed = false;
        let mut opened = Vec::new();
        for (v, i) in want {
            if self.assigned.contains_key(v) {
                continue;
            }
            match self.afp.add(v, i) {
                Ok(down) => {
                    self.failed.remove(v);
                    self.assigned.insert(v.to_owned(), i);
                    opened.push((v.to_owned(), i, down));
                }
                Err(e) => {
                    if self.failed.insert(v.to_owned()) {
                        station::cj_warn!("cj-balancer: containers: cannot capture {v}: {e}");
                    }
                    any_failed = true;
                }
            }
        }
        if !opened.is_empty() {
            // `sources` names them before the log says so.
            self.write_sources();
            for (v, i, down) in opened {
                match down {
                    None => station::cj_info!("cj-balancer: containers: capturing {v} (source {i})"),
                    Some(why) => station::cj_info!(
                        "cj-balancer: containers: capturing {v} (source {i}), down for now ({why}): its frames come \
                         once it is up"
                    ),
                }
            }
        }
        if any_failed {
            self.retry_at = Some(Instant::now() + RETRY);
        }
    }

    /// `sources`: what is captured, and the rings closed but not yet published.
    fn write_sources(&self) {
        let mut list: Vec<(u8, String)> = self.assigned.iter().map(|(v, i)| (*i, v.clone())).collect();
        list.extend(self.closing.iter().cloned());
        list.sort();
        if let Err(e) = inventory::sources::write_sources(&self.cluster_dir, &list) {
            station::cj_warn!(
                "cj-balancer: warning: cannot write the source list in {}: {e}",
                self.cluster_dir.display()
            );
        }
    }
}

impl Source for ContainersSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        self.follow(sink);
        self.afp.poll_batch(max, sink)
    }

    fn is_finite_offline(&self) -> bool {
        false
    }

    fn stats(&self) -> SourceStats {
        self.afp.stats()
    }

    fn finish(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) {
        self.afp.finish(sink);
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.assigned.keys().map(String::as_str).collect();
        format!(
            "containers (every container veth, following the detector's capture list; now {}: {}) via {}",
            names.len(),
            names.join(","),
            self.afp.describe()
        )
    }
}

//! `CJ_IFACE=containers`: AF_PACKET capture on the host veth of every
//! container the inventory knows (Docker, named netns, other runtimes),
//! following it as containers start and stop, with no restart.
//!
//! Guarantees:
//! - At start and whenever the inventory's snapshot changes (netlink link
//!   events, Docker events, a periodic rescan), rings are opened on new
//!   container veths and closed on veths that are gone (after delivering what
//!   their ring holds). Each veth gets a `Frame::source` index that no other
//!   veth gets while it is captured; a freed index is reused last (the one
//!   freed longest ago first).
//! - Before a new ring's frames are delivered, the source list file
//!   `<cluster dir>/sources` names it, and the frames wait [`HOLD`] in the
//!   ring so that the detector's inventory has read the list: a container's
//!   first frames are attributed by its veth.
//! - Frames a container sends before its veth's ring is open are not seen
//!   (the ring opens within milliseconds of the link event; a runtime starts
//!   the container's process after the veth is set up).
//! - A veth that cannot be opened is logged once and retried on the next
//!   inventory change or after a second, whichever comes first.
//! - Checking the snapshot is one lock-free load per poll; nothing is
//!   allocated per frame.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inventory::arc_swap::ArcSwap;
use inventory::{Inventory, InventoryConfig, Snapshot};
use station::config::StationConfig;

use super::af_packet::{AfPacketError, AfPacketSource, RingParams};
use super::{Frame, Poll, Source, SourceError, SourceStats};

/// How long a new ring's frames wait before they are delivered.
pub const HOLD: Duration = Duration::from_millis(100);

/// How long after a failed open a veth is tried again (if the inventory has
/// not changed meanwhile): a veth that just appeared may not be ready yet.
const RETRY: Duration = Duration::from_secs(1);

/// The `containers` source.
#[derive(Debug)]
pub struct ContainersSource {
    afp: AfPacketSource,
    inventory: Arc<ArcSwap<Snapshot>>,
    generation: u64,
    cluster_dir: PathBuf,
    /// veth -> source index.
    assigned: BTreeMap<String, u8>,
    free: VecDeque<u8>,
    /// veths that failed to open (logged once).
    failed: BTreeSet<String>,
    /// When to try the failed veths again.
    retry_at: Option<Instant>,
}

impl ContainersSource {
    /// Starts the inventory and opens a ring on every container veth it knows now.
    ///
    /// # Errors
    /// A bad `CJ_AFP_*` value.
    pub fn open_configured(config: &StationConfig) -> Result<Self, AfPacketError> {
        let afp = AfPacketSource::open(&[], &RingParams::from_config(config))?;
        let inv = Inventory::start(InventoryConfig::new("cj-balancer"));
        let mut s = Self {
            afp,
            inventory: inv.shared(),
            generation: 0,
            cluster_dir: config.cluster_dir(),
            assigned: BTreeMap::new(),
            free: (0..=254u8).collect(),
            failed: BTreeSet::new(),
            retry_at: None,
        };
        s.follow(&mut |_| {}, None);
        Ok(s)
    }

    /// Brings the rings in line with the snapshot when it changed, or when a
    /// veth that failed to open is due to be tried again.
    fn follow(&mut self, sink: &mut dyn FnMut(&Frame<'_>), hold: Option<Instant>) {
        let snap = self.inventory.load();
        let retry_due = self.retry_at.is_some_and(|t| Instant::now() >= t);
        if snap.generation == self.generation && !retry_due {
            return;
        }
        self.generation = snap.generation;
        self.retry_at = None;
        let want: BTreeSet<String> =
            snap.live_entries().map(|(_, e)| e.reference.veth_str().to_owned()).filter(|v| !v.is_empty()).collect();
        // A veth leaves the capture when it is gone, not when one snapshot misses it: a scan
        // that raced a container's start may lack a veth that is still there.
        let gone: Vec<String> = self
            .assigned
            .keys()
            .filter(|v| !want.contains(*v) && !Path::new("/sys/class/net").join(v).exists())
            .cloned()
            .collect();
        for v in gone {
            self.afp.remove(&v, sink);
            if let Some(i) = self.assigned.remove(&v) {
                self.free.push_back(i);
            }
        }
        let new: Vec<String> = want.iter().filter(|v| !self.assigned.contains_key(*v)).cloned().collect();
        if new.is_empty() {
            return;
        }
        let mut opened = Vec::new();
        for v in new {
            let Some(i) = self.free.pop_front() else {
                eprintln!("cj-balancer: containers: 255 veths captured already; {v} is not captured");
                continue;
            };
            self.assigned.insert(v.clone(), i);
            opened.push((v, i));
        }
        // The list first (with the new veths), then the rings.
        self.write_list();
        let mut any_failed = false;
        for (v, i) in opened {
            match self.afp.add(&v, i, hold) {
                Ok(()) => {
                    self.failed.remove(&v);
                    eprintln!("cj-balancer: containers: capturing {v} (source {i})");
                }
                Err(e) => {
                    self.assigned.remove(&v);
                    self.free.push_front(i);
                    if self.failed.insert(v.clone()) {
                        eprintln!("cj-balancer: containers: cannot capture {v}: {e}");
                    }
                    any_failed = true;
                }
            }
        }
        if any_failed {
            // The list named veths that are not captured: correct it, try again later.
            self.write_list();
            self.retry_at = Some(Instant::now() + RETRY);
        }
    }

    fn write_list(&self) {
        let list: Vec<(u8, String)> = self.assigned.iter().map(|(v, i)| (*i, v.clone())).collect();
        if let Err(e) = inventory::sources::write_sources(&self.cluster_dir, &list) {
            eprintln!("cj-balancer: warning: cannot write the source list in {}: {e}", self.cluster_dir.display());
        }
    }
}

impl Source for ContainersSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        self.follow(sink, Some(Instant::now() + HOLD));
        self.afp.poll_batch(max, sink)
    }

    fn is_finite_offline(&self) -> bool {
        false
    }

    fn stats(&self) -> SourceStats {
        self.afp.stats()
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.assigned.keys().map(String::as_str).collect();
        format!(
            "containers (every container veth, following the inventory; now {}: {}) via {}",
            names.len(),
            names.join(","),
            self.afp.describe()
        )
    }
}

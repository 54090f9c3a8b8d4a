//! The capture list (`CJ_IFACE=containers`): which container veths the
//! balancer captures, under which `PacketMeta::source` index. The detector's
//! inventory decides it ([`Assigner`]) and writes `<cluster dir>/capture`; the
//! balancer reads the file and opens and closes its rings to match, then says
//! what it captures in `<cluster dir>/sources` ([`crate::sources`]).
//!
//! Format: `generation G`, then one line per veth, `INDEX NAME`; written
//! atomically (`shmq::files::write_atomic`, mode 0640) and read with the
//! cluster directory's checked open (`O_NOFOLLOW`, a regular file, no
//! permission for others), at most [`MAX_FILE`] bytes, and only when root or
//! the reader's effective user owns it: with `CJ_GROUP` the group's members
//! may create files in the cluster directory, and a list one of them planted
//! would choose the interfaces a root balancer captures (the detector does
//! not take such a list over but writes its own over it; the balancer
//! captures nothing it names and warns once).
//!
//! Guarantees (the ordering is by construction, no timed hold):
//! - A new veth's index is in the snapshot the detector's workers read before
//!   the file names it, so before the balancer can open its ring: a worker that
//!   meets an index its snapshot does not know ([`crate::Snapshot::knows_source`])
//!   loads the newest snapshot and finds it there.
//! - A released index (its veth gone) keeps naming the released veth's entry
//!   until the balancer's `sources` no longer lists it (the balancer writes that
//!   after the ring's last frames are in the packet queues). From the next
//!   snapshot on the index is unknown, and it is given to another veth only
//!   once every reader ([`crate::Readers`]) has found its packet queue empty
//!   under that snapshot or a newer one: by then every frame of the old veth
//!   was counted, and no reader holds a snapshot that maps the index to it.
//! - Free indices are reused least recently freed first; an index held by a
//!   veth keeps it while the veth exists (also across a detector restart: the
//!   file's indices are taken over).
//!
//! Not guaranteed: with more than 255 container veths at once (or all free
//! indices still draining) a new veth waits for an index (one warning).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::{NONE, UNKNOWN};

/// Largest capture or source list file read (255 lines of an interface name and an index fit in 8 KiB).
pub const MAX_FILE: u64 = 64 * 1024;

/// Mode of the list files: the owner writes, the readers' group reads, others get nothing.
pub const LIST_MODE: u32 = 0o640;

/// `<cluster dir>/capture`.
pub fn capture_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("capture")
}

/// The capture list as the file holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureList {
    /// The generation of the detector's snapshot that first had this list.
    pub generation: u64,
    /// (index, veth name), by index.
    pub sources: Vec<(u8, String)>,
}

/// Writes the list atomically into the checked cluster directory.
///
/// # Errors
/// The directory is refused, or the file cannot be written or renamed.
pub fn write_capture(cluster_dir: &Path, list: &CaptureList) -> io::Result<()> {
    shmq::prepare_dir(cluster_dir).map_err(io::Error::other)?;
    let mut text = format!("generation {}\n", list.generation);
    for (i, name) in &list.sources {
        text.push_str(&format!("{i} {name}\n"));
    }
    shmq::files::write_atomic(&capture_path(cluster_dir), text.as_bytes(), LIST_MODE)
}

/// Reads the list; `Ok(None)` when there is no file.
///
/// # Errors
/// The file is refused by the checked open or by its owner (only root's or
/// this process's user's is trusted), larger than [`MAX_FILE`], or unreadable.
pub fn read_capture(cluster_dir: &Path) -> io::Result<Option<CaptureList>> {
    let Some(text) = read_list_file(&capture_path(cluster_dir), "the detector")? else { return Ok(None) };
    let mut list = CaptureList::default();
    for line in text.lines() {
        if let Some(g) = line.strip_prefix("generation ") {
            list.generation = g.trim().parse().unwrap_or(0);
        } else if let Some(entry) = parse_line(line) {
            list.sources.push(entry);
        }
    }
    Ok(Some(list))
}

/// One `INDEX NAME` line.
pub(crate) fn parse_line(line: &str) -> Option<(u8, String)> {
    let (i, n) = line.split_once(' ')?;
    let n = n.trim();
    if n.is_empty() {
        return None;
    }
    Some((i.parse().ok()?, n.to_owned()))
}

/// A list file of the cluster directory, opened with the checked open and
/// read up to [`MAX_FILE`] bytes; `Ok(None)` when it does not exist.
///
/// Trusted only when root or this process's effective user owns it (checked
/// on the descriptor, as writers check queue files:
/// `shmq::files::owned_by_us_or_root`): with `CJ_GROUP` the group's members
/// may create files in the cluster directory, and a list one of them made
/// would choose what a root balancer captures. Such a file is refused
/// (`QueueError::Unsafe`, naming `writer`, who writes it again) and never read.
pub(crate) fn read_list_file(path: &Path, writer: &str) -> io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt as _;
    if matches!(path.symlink_metadata(), Err(e) if e.kind() == io::ErrorKind::NotFound) {
        return Ok(None);
    }
    let (file, len) = shmq::files::open_checked(path, shmq::files::Access::Read).map_err(io::Error::other)?;
    let meta = file.metadata()?;
    if !shmq::files::owned_by_us_or_root(&meta) {
        return Err(io::Error::other(shmq::QueueError::Unsafe {
            path: path.to_path_buf(),
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
            problem: format!(
                "owned by uid {}, neither root nor this process's user: not written by the station (a member of \
                 CJ_GROUP may create files here), so not trusted",
                meta.uid()
            ),
            fix: format!("remove it ({writer} writes it again)"),
        }));
    }
    if len > MAX_FILE {
        return Err(io::Error::other(format!(
            "{} is {len} bytes, more than a list file holds ({MAX_FILE}); remove it (it is rewritten)",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(MAX_FILE).read_to_string(&mut text)?;
    Ok(Some(text))
}

/// What an [`Assigner::update`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Update {
    /// The capture list changed (a veth got or lost its index): write the file.
    pub list_changed: bool,
    /// A veth waits for an index while a released one drains: look again soon.
    pub recheck: bool,
}

/// Gives container veths their capture indices and takes them back (see the
/// module docs for the order of things).
#[derive(Debug)]
pub struct Assigner {
    /// veth -> (index, its entry now).
    assigned: BTreeMap<String, (u8, u16)>,
    /// Released indices the balancer may still capture -> the released veth's entry.
    retired: BTreeMap<u8, u16>,
    /// Released indices the balancer no longer captures -> the first generation
    /// whose snapshot does not know them.
    draining: BTreeMap<u8, u64>,
    /// Free indices, least recently freed first.
    free: VecDeque<u8>,
    /// veths that waited for an index (said once each).
    waiting: BTreeSet<String>,
}

impl Default for Assigner {
    fn default() -> Self {
        Self::resume(None, None)
    }
}

impl Assigner {
    /// Takes over the indices of an earlier detector's list (`previous`) and
    /// of what the balancer says it captures (`balancer`): a veth of the list
    /// keeps its index while it exists; every index either names is free only
    /// once released as any other.
    pub fn resume(previous: Option<&CaptureList>, balancer: Option<&[(u8, String)]>) -> Self {
        let mut s = Self {
            assigned: BTreeMap::new(),
            retired: BTreeMap::new(),
            draining: BTreeMap::new(),
            free: VecDeque::new(),
            waiting: BTreeSet::new(),
        };
        let mut taken = [false; 255];
        for (i, name) in previous.map(|l| l.sources.as_slice()).unwrap_or_default() {
            if usize::from(*i) < taken.len() && !taken[usize::from(*i)] && !s.assigned.contains_key(name) {
                taken[usize::from(*i)] = true;
                s.assigned.insert(name.clone(), (*i, NONE));
            }
        }
        for (i, _) in balancer.unwrap_or_default() {
            if usize::from(*i) < taken.len() && !taken[usize::from(*i)] {
                taken[usize::from(*i)] = true;
                s.retired.insert(*i, NONE);
            }
        }
        s.free = (0..=254u8).filter(|i| !taken[usize::from(*i)]).collect();
        s
    }

    /// Brings the assignment in line with the live container veths `live`
    /// (name, entry), for the snapshot of generation `generation` about to be
    /// published. `balancer` is the balancer's `sources` list (None: not
    /// readable, nothing is taken as released); `caught_up(g)` says whether
    /// every reader has emptied its queue under generation `g` or newer.
    pub fn update(
        &mut self,
        live: &[(String, u16)],
        balancer: Option<&[(u8, String)]>,
        caught_up: impl Fn(u64) -> bool,
        generation: u64,
    ) -> Update {
        let mut up = Update::default();
        // Drained: free again.
        let done: Vec<u8> = self.draining.iter().filter(|(_, g)| caught_up(**g)).map(|(i, _)| *i).collect();
        for i in done {
            self.draining.remove(&i);
            self.free.push_back(i);
        }
        // Released and no longer captured: unknown from this generation on.
        if let Some(captured) = balancer {
            let gone: Vec<u8> =
                self.retired.keys().filter(|i| !captured.iter().any(|(c, _)| c == *i)).copied().collect();
            for i in gone {
                self.retired.remove(&i);
                self.draining.insert(i, generation);
            }
        }
        // Veths gone: released.
        let live_names: BTreeSet<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
        let released: Vec<String> =
            self.assigned.keys().filter(|n| !live_names.contains(n.as_str())).cloned().collect();
        for name in released {
            if let Some((i, entry)) = self.assigned.remove(&name) {
                self.retired.insert(i, entry);
                up.list_changed = true;
            }
        }
        // Veths kept: their entry now; new veths: an index.
        for (name, entry) in live {
            if let Some(a) = self.assigned.get_mut(name) {
                a.1 = *entry;
                continue;
            }
            match self.free.pop_front() {
                Some(i) => {
                    self.assigned.insert(name.clone(), (i, *entry));
                    self.waiting.remove(name);
                    up.list_changed = true;
                }
                None => {
                    if self.waiting.insert(name.clone()) {
                        station::cj_warn!(
                            "cj-detector: inventory: warning: no free capture index for {name} (255 veths captured, \
                             or released ones still draining); it is captured once one is free"
                        );
                    }
                }
            }
        }
        self.waiting.retain(|n| live_names.contains(n.as_str()));
        up.recheck |= !self.draining.is_empty() && !self.waiting.is_empty();
        up
    }

    /// The capture list: (index, veth) by index.
    pub fn list(&self) -> Vec<(u8, String)> {
        let mut v: Vec<(u8, String)> = self.assigned.iter().map(|(n, (i, _))| (*i, n.clone())).collect();
        v.sort();
        v
    }

    /// The entry each index means now ([`UNKNOWN`] for free and draining ones), for 256 indices.
    pub fn by_source(&self) -> Vec<u16> {
        let mut v = vec![UNKNOWN; 256];
        for (i, e) in self.assigned.values() {
            v[usize::from(*i)] = *e;
        }
        for (i, e) in &self.retired {
            v[usize::from(*i)] = *e;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn live(v: &[(&str, u16)]) -> Vec<(String, u16)> {
        v.iter().map(|(n, e)| ((*n).to_owned(), *e)).collect()
    }

    #[test]
    fn round_trip_through_the_checked_open() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_capture(d.path()).unwrap(), None);
        let list = CaptureList { generation: 7, sources: vec![(0, "veth0".into()), (9, "vethab".into())] };
        write_capture(d.path(), &list).unwrap();
        assert_eq!(read_capture(d.path()).unwrap(), Some(list));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(capture_path(d.path())).unwrap().permissions().mode() & 0o777, LIST_MODE);
    }

    #[test]
    fn a_planted_symlink_or_an_open_file_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "generation 1\n0 eth0\n").unwrap();
        std::os::unix::fs::symlink(&victim, capture_path(d.path())).unwrap();
        assert!(read_capture(d.path()).is_err(), "a symbolic link is not followed");
        std::fs::remove_file(capture_path(d.path())).unwrap();
        std::fs::write(capture_path(d.path()), "generation 1\n0 eth0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(capture_path(d.path()), std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read_capture(d.path()).is_err(), "a file others may write is refused");
    }

    #[test]
    fn a_list_another_user_made_is_refused_unread() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(capture_path(d.path()), "generation 1\n1 lo\n").unwrap();
        std::fs::set_permissions(capture_path(d.path()), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_capture(d.path()).unwrap().is_some(), "root's own list is read");
        if std::os::unix::fs::chown(capture_path(d.path()), Some(1), Some(1)).is_err() {
            return; // giving a file to another user needs root
        }
        let e = read_capture(d.path()).unwrap_err().to_string();
        assert!(e.contains("owned by uid 1") && e.contains("remove it (the detector writes it again)"), "{e}");
        std::fs::write(d.path().join("sources"), "1 lo\n").unwrap();
        std::fs::set_permissions(d.path().join("sources"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(d.path().join("sources"), Some(1), Some(1)).unwrap();
        let e = crate::sources::read_sources(d.path()).unwrap_err().to_string();
        assert!(e.contains("owned by uid 1") && e.contains("the balancer writes it again"), "{e}");
    }

    #[test]
    fn a_file_larger_than_a_list_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(capture_path(d.path()), vec![b'x'; MAX_FILE as usize + 1]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(capture_path(d.path()), std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_capture(d.path()).is_err());
    }

    #[test]
    fn new_veths_get_distinct_indices_known_before_the_list_names_them() {
        let mut a = Assigner::default();
        let up = a.update(&live(&[("va", 1), ("vb", 2)]), Some(&[]), |_| true, 1);
        assert!(up.list_changed);
        assert_eq!(a.list(), vec![(0, "va".into()), (1, "vb".into())]);
        let map = a.by_source();
        assert_eq!((map[0], map[1], map[2]), (1, 2, UNKNOWN));
        // Nothing changed: the list stays.
        assert!(!a.update(&live(&[("va", 1), ("vb", 2)]), Some(&[]), |_| true, 2).list_changed);
    }

    #[test]
    fn a_released_index_is_reused_only_after_the_balancer_let_go_and_every_reader_drained() {
        // Only one index in play.
        let mut a = Assigner { free: VecDeque::from([0]), ..Default::default() };
        a.update(&live(&[("va", 1)]), Some(&[]), |_| true, 1);
        assert_eq!(a.list(), vec![(0, "va".into())]);
        // va goes, vb comes: index 0 still names va's entry while the balancer captures it.
        let captured = vec![(0u8, "va".to_owned())];
        let up = a.update(&live(&[("vb", 2)]), Some(&captured), |_| true, 2);
        // (A change of the balancer's list wakes the next look; nothing drains yet.)
        assert!(up.list_changed && !up.recheck);
        assert_eq!(a.list(), vec![]);
        assert_eq!(a.by_source()[0], 1, "va's last frames are still va's");
        // The balancer let go (generation 3): unknown from now on, not yet free.
        let drained_to = Cell::new(2u64);
        let up = a.update(&live(&[("vb", 2)]), Some(&[]), |g| drained_to.get() >= g, 3);
        assert!(up.recheck, "vb waits while index 0 drains: look again soon");
        assert_eq!(a.by_source()[0], UNKNOWN);
        assert_eq!(a.list(), vec![]);
        // Readers that drained under generation 2 only: still not free.
        a.update(&live(&[("vb", 2)]), Some(&[]), |g| drained_to.get() >= g, 4);
        assert_eq!(a.list(), vec![]);
        // Every reader drained under generation 3: vb gets index 0.
        drained_to.set(3);
        assert!(a.update(&live(&[("vb", 2)]), Some(&[]), |g| drained_to.get() >= g, 5).list_changed);
        assert_eq!(a.list(), vec![(0, "vb".into())]);
        assert_eq!(a.by_source()[0], 2);
    }

    #[test]
    fn an_unreadable_balancer_list_releases_nothing() {
        let mut a = Assigner { free: VecDeque::from([0]), ..Default::default() };
        a.update(&live(&[("va", 1)]), Some(&[]), |_| true, 1);
        a.update(&live(&[]), None, |_| true, 2);
        a.update(&live(&[("vb", 2)]), None, |_| true, 3);
        assert_eq!(a.by_source()[0], 1);
        assert_eq!(a.list(), vec![]);
    }

    #[test]
    fn free_indices_are_reused_least_recently_freed_first() {
        let mut a = Assigner::default();
        a.update(&live(&[("va", 1), ("vb", 2), ("vc", 3)]), Some(&[]), |_| true, 1);
        // vb, then va go; both let go by the balancer and drained.
        a.update(&live(&[("va", 1), ("vc", 3)]), Some(&[]), |_| true, 2);
        a.update(&live(&[("vc", 3)]), Some(&[]), |_| true, 3);
        a.update(&live(&[("vc", 3)]), Some(&[]), |_| true, 4);
        // New veths take the never used indices first, then 1 (freed first), then 0.
        let many: Vec<(String, u16)> = (0..254).map(|k| (format!("n{k}"), 10)).collect();
        let mut all = live(&[("vc", 3)]);
        all.extend(many);
        a.update(&all, Some(&[]), |_| true, 5);
        let list = a.list();
        let of = |i: u8| list.iter().find(|(j, _)| *j == i).map(|(_, n)| n.clone());
        assert_eq!(of(1).as_deref(), Some("n252"));
        assert_eq!(of(0).as_deref(), Some("n253"));
    }

    #[test]
    fn a_restarted_detector_keeps_the_indices_of_the_list_it_finds() {
        let prev = CaptureList { generation: 40, sources: vec![(3, "va".into()), (5, "vgone".into())] };
        let balancer = vec![(3u8, "va".to_owned()), (5, "vgone".to_owned()), (7, "vold".to_owned())];
        let mut a = Assigner::resume(Some(&prev), Some(&balancer));
        a.update(&live(&[("va", 1), ("vnew", 2)]), Some(&balancer), |_| true, 1);
        let list = a.list();
        assert!(list.contains(&(3, "va".into())), "{list:?}");
        let new = list.iter().find(|(_, n)| n == "vnew").unwrap().0;
        assert!(![3, 5, 7].contains(&new), "vnew got a free index: {list:?}");
        // The gone veth's and the balancer's other index are known (no container) until let go.
        let map = a.by_source();
        assert_eq!((map[3], map[5], map[7]), (1, NONE, NONE));
    }
}

//! The container inventory: host interfaces, network namespaces, and the
//! container each belongs to, kept current off the packet path and published
//! as immutable [`Snapshot`]s that packet threads read without locks.
//!
//! One process runs it: the detector, which attributes flows with it. For
//! `CJ_IFACE=containers` it also decides which container veths the balancer
//! captures and under which `PacketMeta::source` index, and says so in
//! `<cluster dir>/capture` ([`capture`]); the balancer only follows that list
//! and answers with what it captures (`<cluster dir>/sources`, [`sources`]).
//! With several queue sets, the detector of set 0 decides; the others read
//! the list ([`SourceMap::Follow`]).
//!
//! Sources of truth, all read only:
//! - rtnetlink ([`netlink`]): the host's links (veth, bridge, tun, physical),
//!   each veth's peer ifindex and peer netns id; inside each container netns
//!   (by nsid, without `setns`) its interfaces' MACs and addresses.
//! - named namespaces under `/run/netns/NAME` (a container named NAME, id NAME);
//! - the Docker Engine API ([`docker`]): id, name, image, labels, addresses,
//!   MACs and netns (`SandboxKey`, else `/proc/PID/ns/net`);
//! - other runtimes (containerd, CRI-O, podman, LXC) from `/proc` ([`runtimes`]):
//!   the cgroup path of each process in a netns of its own, and its runtime's
//!   monitor (conmon, the containerd shim, LXC's monitor) for the name and for
//!   paths that name no runtime. These come before named namespaces: a
//!   runtime's netns file under `/run/netns` (podman with CNI, containerd's
//!   CRI) is attributed to its container, not to the file's name.
//!
//! A netns is tied to its host veths by nsid: `RTM_GETNSID` on the netns file
//! gives the nsid the host uses for it, and each host veth's
//! `IFLA_LINK_NETNSID` names the netns of its peer.
//!
//! Guarantees:
//! - [`Inventory::start`] returns at once with a first snapshot taken from
//!   netlink, named namespaces and `/proc` (no Docker request: a slow or hung
//!   daemon never delays the packet threads), and for `containers` the first
//!   capture list written; a thread `cj-inventory` rescans on every link event
//!   (netlink `RTNLGRP_LINK`), every Docker answer, every change of the
//!   balancer's `sources` file, and every [`RESCAN_EVERY`] as a safety net.
//! - The Docker Engine API is asked only by its own thread `cj-inv-docker`
//!   (at start, on every Docker event and every [`RESCAN_EVERY`]); scans use
//!   its last answer. Docker names and images therefore come a moment after
//!   the first snapshot; a hung daemon costs one warning and its names.
//! - Readers call [`Inventory::shared`]`.load()`: no lock, no allocation.
//! - Capture indices: a snapshot knows an index before any process can see a
//!   frame of it (the capture list is written after the snapshot is
//!   published); a reader that meets an index its snapshot does not know
//!   ([`Snapshot::knows_source`]) loads the newest one. A released index is
//!   reused only after every [`Readers`] member has emptied its queue under a
//!   snapshot that no longer knows it (see [`capture`]). No timed hold.
//! - Container entries keep their index ([`Snapshot::entry`]) while any flow
//!   may hold it, so a flow attributed under an old snapshot still reads its
//!   container from any newer one, after the container stopped. A stopped
//!   container's index is given to another container only once every
//!   [`Readers`] member has reported, under a snapshot that no longer
//!   attributes it, that none of its flows holds it (see [`entries`]); free
//!   indices are reused before new ones. At most [`MAX_ENTRIES`] entries are
//!   held at once (running containers and stopped ones still held); beyond
//!   that new containers are not attributed until one is freed (a warning at
//!   once, then hourly). Each snapshot says how many are held, retiring and
//!   reclaimed so far.
//! - Failures of one source never stop the others: no Docker daemon, or no
//!   CAP_NET_ADMIN to look inside a netns, costs one warning line each and
//!   what that source would have added.
//!
//! Not guaranteed: a follower ([`SourceMap::Follow`]) reads the list within
//! [`SOURCES_POLL`] of a change and is not among the readers the owner waits
//! for: for it, new and reused indices are ordered by those delays only.
//! A container veth is captured from when the detector's scan
//! after its link event has published it and the balancer has read the list
//! (milliseconds): frames before that are not seen. A veth deleted and created
//! again under the same name between two scans keeps its index (the balancer
//! binds the name again), so frames of the old one still queued then may be
//! attributed to the new one. A stopped container's entry stays held while a
//! flow of it is in a worker's table (until the flow's idle timeout, eviction,
//! or the detector's end): on a host that starts many short-lived containers
//! at once the limit counts those too.
#![deny(unsafe_code)]

pub use arc_swap;

pub mod capture;
pub mod docker;
pub mod entries;
pub mod netlink;
pub mod runtimes;
pub mod sources;

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use station::record::{fixed_text, ContainerRef};

/// Periodic rescan (a safety net for events that were missed).
pub const RESCAN_EVERY: Duration = Duration::from_secs(5);
/// How often the balancer's source list file is looked at.
pub const SOURCES_POLL: Duration = Duration::from_millis(10);
/// How soon the inventory looks again while a veth waits for a capture index
/// (a scan), or a container for an entry (a look at the readers' reports; a
/// scan only once one would be freed: [`Scanner::waits_for_entries`]).
pub const RECHECK: Duration = Duration::from_millis(20);
/// Most container entries held at once (indices fit 14 bits).
pub const MAX_ENTRIES: usize = 16_383;
/// Entry index meaning "no container".
pub const NONE: u16 = 0;
/// [`Snapshot`]'s mark of a capture index it does not know (free, or released and draining).
pub const UNKNOWN: u16 = u16::MAX;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A container interface as the inventory knows it: one entry per (netns,
/// host veth), or per netns when it has no veth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Id, name, veth, netns and nsid as records carry them (`by` = 0).
    pub reference: ContainerRef,
    /// Runtime: `docker`, `netns`, `containerd`, `crio`, `podman`, `lxc`.
    pub runtime: &'static str,
    /// Image (Docker only).
    pub image: String,
    /// Host veth ifindex (0 when none).
    pub veth_ifindex: u32,
    /// The container-side MACs of this entry's interface(s).
    pub macs: Vec<[u8; 6]>,
    /// The container-side addresses.
    pub ips: Vec<IpAddr>,
}

/// An immutable view of the inventory.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Bumped on every publication.
    pub generation: u64,
    /// The entries by index; index 0 is "none". Entries of stopped
    /// containers stay while a flow may hold them (see [`entries`]); `live`
    /// says which are current; a freed index holds an empty entry.
    pub entries: Vec<Entry>,
    /// `live[i]`: entry i belongs to a running container now.
    pub live: Vec<bool>,
    /// The host's links: (ifindex, name, kind).
    pub links: Vec<(u32, String, String)>,
    /// The capture sources by index (`PacketMeta::source`).
    pub sources: Vec<(u8, String)>,
    /// The readers that report how far they have drained (shared by every
    /// snapshot of one inventory).
    pub readers: Arc<Readers>,
    /// Entries held when this snapshot was built: live, or stopped and not yet
    /// freed ([`entries::Entries::held`]).
    pub entries_held: usize,
    /// Of those, stopped ones waiting for the readers to let go.
    pub entries_retiring: usize,
    /// Entries freed for reuse so far.
    pub entries_reclaimed: u64,
    by_source: Vec<u16>,
    by_mac: FastMap<[u8; 6], u16>,
    by_ip: FastMap<IpAddr, u16>,
}

impl Snapshot {
    /// The entry of capture source `source` when it is a container's host veth.
    #[inline]
    pub fn by_source(&self, source: u8) -> u16 {
        match self.by_source.get(usize::from(source)) {
            Some(&e) if e != UNKNOWN => e,
            _ => NONE,
        }
    }

    /// False when this snapshot does not know what capture index `source`
    /// means (a newer one may): one array read, for every frame.
    #[inline]
    pub fn knows_source(&self, source: u8) -> bool {
        self.by_source.get(usize::from(source)).is_none_or(|&e| e != UNKNOWN)
    }

    /// The live entry whose interface has MAC `mac`.
    #[inline]
    pub fn by_mac(&self, mac: &[u8; 6]) -> u16 {
        self.by_mac.get(mac).copied().unwrap_or(NONE)
    }

    /// The live entry whose interface has address `ip`.
    #[inline]
    pub fn by_ip(&self, ip: &IpAddr) -> u16 {
        self.by_ip.get(ip).copied().unwrap_or(NONE)
    }

    /// The record form of entry `i` (all zero for [`NONE`] or an unknown index).
    #[inline]
    pub fn entry(&self, i: u16) -> ContainerRef {
        self.entries.get(usize::from(i)).map(|e| e.reference).unwrap_or_default()
    }

    /// The live entries.
    pub fn live_entries(&self) -> impl Iterator<Item = (u16, &Entry)> {
        self.entries.iter().enumerate().skip(1).filter(|(i, _)| self.live[*i]).map(|(i, e)| (i as u16, e))
    }

    /// Index of the live entry whose veth is `name`.
    pub fn by_veth_name(&self, name: &str) -> u16 {
        self.live_entries().find(|(_, e)| e.reference.veth_str() == name).map_or(NONE, |(i, _)| i)
    }
}

/// The readers of an inventory's snapshots that consume packet queues (the
/// detector's workers): each reports the newest snapshot generation under
/// which it found its queue empty, so a released capture index is given to
/// another veth only once no frame of the old one is left unread; and which
/// container entries its flows hold, so a stopped container's entry is
/// given to another only once no flow holds it ([`entries`]).
#[derive(Debug, Default)]
pub struct Readers {
    /// How many must have joined before any is taken as caught up.
    expected: usize,
    joined: Mutex<Vec<Weak<Mark>>>,
}

/// What one reader reports.
#[derive(Debug, Default)]
struct Mark {
    drained: AtomicU64,
    held: entries::HeldReport,
}

/// One reader's report (see [`Readers`]); dropping it takes the reader out.
#[derive(Debug)]
pub struct ReaderMark(Arc<Mark>);

impl ReaderMark {
    /// Call after finding the queue empty, with the generation of the snapshot
    /// loaded before looking (one relaxed load; a store only on a change).
    #[inline]
    pub fn drained_under(&self, generation: u64) {
        if self.0.drained.load(Ordering::Relaxed) != generation {
            self.0.drained.store(generation, Ordering::Release);
        }
    }

    /// Reports which entries the reader's flows hold (the union of `parts`,
    /// one per table), `generation` being that of the snapshot it attributes
    /// new flows with now. Writes only the words changed since the last
    /// report (none: at most one store, of a new generation).
    #[inline]
    pub fn report_held(&self, generation: u64, parts: &mut [&mut entries::Holdings]) {
        self.0.held.publish(generation, parts);
    }
}

impl Readers {
    /// A board that waits for `expected` readers to join.
    pub fn new(expected: usize) -> Self {
        Self { expected, joined: Mutex::new(Vec::new()) }
    }

    /// A new reader, drained under no generation yet.
    pub fn join(&self) -> ReaderMark {
        let mark = Arc::new(Mark::default());
        if let Ok(mut v) = self.joined.lock() {
            v.push(Arc::downgrade(&mark));
        }
        ReaderMark(mark)
    }

    /// True when every expected reader has joined and each one still running
    /// has drained under `generation` or a newer one.
    pub fn caught_up(&self, generation: u64) -> bool {
        let Ok(v) = self.joined.lock() else { return false };
        v.len() >= self.expected
            && v.iter().all(|w| w.upgrade().is_none_or(|m| m.drained.load(Ordering::Acquire) >= generation))
    }

    /// For each (entry, generation) of `candidates`: true when every expected
    /// reader has joined and each one still running has reported, under that
    /// generation or a newer one, that it holds no flow of the entry.
    pub fn unheld(&self, candidates: &[(u16, u64)]) -> Vec<bool> {
        let Ok(v) = self.joined.lock() else { return vec![false; candidates.len()] };
        if v.len() < self.expected {
            return vec![false; candidates.len()];
        }
        let running: Vec<Arc<Mark>> = v.iter().filter_map(Weak::upgrade).collect();
        candidates.iter().map(|&(i, since)| running.iter().all(|m| m.held.holds_none_of(i, since))).collect()
    }
}

/// What `PacketMeta::source` means.
#[derive(Clone, Debug)]
pub enum SourceMap {
    /// The index is the position in this list (`CJ_IFACE=IF1,IF2`, a PF_RING device).
    Static(Vec<String>),
    /// `CJ_IFACE=containers` with this cluster directory: [`Inventory::start`]
    /// assigns the indices and writes `capture`; a one-shot [`Scanner::scan`]
    /// reads the running detector's `capture`.
    Containers(PathBuf),
    /// `CJ_IFACE=containers` read by a detector that does not own the list
    /// (queue sets other than 0): every scan reads `capture`, and a change of
    /// the file wakes a scan.
    Follow(PathBuf),
}

/// What the inventory looks at.
#[derive(Clone, Debug)]
pub struct InventoryConfig {
    /// What capture indices mean.
    pub sources: SourceMap,
    /// How many [`Readers`] must join before a released capture index or a
    /// stopped container's entry may be reused.
    pub readers: usize,
    /// Most container entries held at once ([`MAX_ENTRIES`]; smaller only in tests).
    pub max_entries: usize,
    /// The Docker socket (None: Docker not asked).
    pub docker_socket: Option<PathBuf>,
    /// Where named namespaces live (`/run/netns`).
    pub netns_dir: PathBuf,
    /// Scan `/proc` for the namespaces of other runtimes' processes.
    pub scan_proc: bool,
    /// Prefix of log lines (`cj-detector`).
    pub log_prefix: &'static str,
}

impl InventoryConfig {
    /// Defaults: Docker at `DOCKER_HOST` or /var/run/docker.sock, /run/netns, /proc scanned.
    pub fn new(log_prefix: &'static str) -> Self {
        Self {
            sources: SourceMap::Static(Vec::new()),
            readers: 0,
            max_entries: MAX_ENTRIES,
            docker_socket: Some(docker::socket_path()),
            netns_dir: PathBuf::from("/run/netns"),
            scan_proc: true,
            log_prefix,
        }
    }
}

/// A namespace that may be a container's.
#[derive(Clone, Debug)]
struct Namespace {
    inode: u64,
    nsid: Option<i32>,
    id: String,
    name: String,
    runtime: &'static str,
    image: String,
    /// Addresses and MACs the runtime reports (used when the netns cannot be dumped).
    ips: Vec<IpAddr>,
    macs: Vec<[u8; 6]>,
}

/// Warnings said once each (`full`: first, then at most once per
/// [`FULL_REMIND`] while containers are refused).
#[derive(Debug, Default)]
struct Warned {
    docker: bool,
    dump: bool,
    full: Option<std::time::Instant>,
    netlink: bool,
    sources: bool,
}

/// How often the warning that the inventory is full is said again while new
/// containers are refused: a single line at the start would have scrolled
/// out of any log by the time an operator looks.
const FULL_REMIND: Duration = Duration::from_secs(3600);

/// The Docker daemon's last answer, shared by the thread that asks it and
/// the scanner (None: not answered yet).
type DockerView = Arc<std::sync::Mutex<Option<Vec<docker::DockerContainer>>>>;

/// The scanner's state between scans.
#[derive(Debug)]
pub struct Scanner {
    cfg: InventoryConfig,
    /// Set by [`Inventory::start`]: Docker's list comes from its thread, not from a request per scan.
    docker_view: Option<DockerView>,
    nl: Option<netlink::Rtnl>,
    entries: entries::Entries,
    /// The last scan found a container it could give no entry (the limit reached).
    refused: bool,
    generation: u64,
    warned: Warned,
    /// Set by [`Inventory::start`] for `containers`: this inventory assigns capture indices.
    assigner: Option<capture::Assigner>,
    /// What the last scan's assignment changed.
    update: capture::Update,
    readers: Arc<Readers>,
}

fn read_link_name(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<(String, PathBuf)> =
        rd.flatten().map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())).collect();
    v.sort();
    v
}

pub use runtimes::runtime_of_cgroup;
use runtimes::short_id;

/// Asks the daemon at `sock` for its running containers; the first failure
/// (and the first answer after failures) is said once, with `warned` as the state.
fn ask_docker(sock: &Path, warned: &mut bool, log_prefix: &str) -> Option<Vec<docker::DockerContainer>> {
    match docker::containers(sock) {
        Ok(list) => {
            if *warned {
                station::cj_info!("{log_prefix}: inventory: Docker at {} answers again", sock.display());
                *warned = false;
            }
            Some(list)
        }
        Err(e) => {
            if !*warned {
                *warned = true;
                station::cj_warn!(
                    "{log_prefix}: inventory: warning: Docker Engine API at {} not reachable ({e}); containers are \
                     found from named namespaces and cgroups only until it answers",
                    sock.display()
                );
            }
            None
        }
    }
}

impl Scanner {
    /// A scanner with no entries yet.
    pub fn new(cfg: InventoryConfig) -> Self {
        Self {
            docker_view: None,
            nl: None,
            entries: entries::Entries::new(cfg.max_entries),
            refused: false,
            generation: 0,
            warned: Warned::default(),
            assigner: None,
            update: capture::Update::default(),
            readers: Arc::new(Readers::new(cfg.readers)),
            cfg,
        }
    }

    fn warn(&self, msg: &str) {
        station::cj_warn!("{}: inventory: warning: {msg}", self.cfg.log_prefix);
    }

    fn rtnl(&mut self) -> Option<&mut netlink::Rtnl> {
        if self.nl.is_none() {
            match netlink::Rtnl::open() {
                Ok(n) => self.nl = Some(n),
                Err(e) => {
                    if !self.warned.netlink {
                        self.warned.netlink = true;
                        self.warn(&format!("no rtnetlink socket ({e}): interfaces and namespaces not scanned"));
                    }
                    return None;
                }
            }
        }
        self.nl.as_mut()
    }

    fn nsid_of(&mut self, f: &File) -> Option<i32> {
        self.rtnl()?.nsid_of(f).ok().flatten()
    }

    /// Asks the Docker daemon for its running containers; a failure warns
    /// once (and its recovery once) and gives None.
    fn ask_docker(&mut self, sock: &Path) -> Option<Vec<docker::DockerContainer>> {
        ask_docker(sock, &mut self.warned.docker, self.cfg.log_prefix)
    }

    fn namespaces(&mut self, own_inode: u64) -> Vec<Namespace> {
        let mut out: Vec<Namespace> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        seen.insert(own_inode);
        // Docker: the last answer of the Docker thread, or (one-shot scans) a request now.
        let listed = match (&self.docker_view, self.cfg.docker_socket.clone()) {
            (Some(view), _) => view.lock().map(|v| v.clone()).unwrap_or_default(),
            (None, Some(sock)) => self.ask_docker(&sock),
            (None, None) => None,
        };
        for c in listed.unwrap_or_default() {
            let file = c
                .sandbox_key
                .as_ref()
                .and_then(|p| File::open(p).ok())
                .or_else(|| (c.pid != 0).then(|| File::open(format!("/proc/{}/ns/net", c.pid)).ok())?);
            let Some(f) = file else { continue };
            let Ok(meta) = f.metadata() else { continue };
            if !seen.insert(meta.ino()) {
                continue;
            }
            let nsid = self.nsid_of(&f);
            out.push(Namespace {
                inode: meta.ino(),
                nsid,
                id: short_id(&c.id).to_owned(),
                name: c.name,
                runtime: "docker",
                image: c.image,
                ips: c.ips,
                macs: c.macs,
            });
        }
        // Other runtimes' processes, before named namespaces: a runtime that keeps its
        // netns under /run/netns (podman with CNI, containerd's CRI, `ip netns` wiring for
        // `ctr run --with-ns`) names its container, not the file.
        if self.cfg.scan_proc {
            let proc_root = Path::new("/proc");
            for (pid, dir) in read_link_name(proc_root) {
                if !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(dir.join("ns/net")) else { continue };
                if seen.contains(&meta.ino()) {
                    continue;
                }
                let Some(found) = runtimes::identify(proc_root, &dir, meta.ino()) else { continue };
                let Ok(f) = File::open(dir.join("ns/net")) else { continue };
                seen.insert(meta.ino());
                let nsid = self.nsid_of(&f);
                out.push(Namespace {
                    inode: meta.ino(),
                    nsid,
                    id: short_id(&found.id).to_owned(),
                    name: short_id(&found.name).to_owned(),
                    runtime: found.runtime,
                    image: String::new(),
                    ips: Vec::new(),
                    macs: Vec::new(),
                });
            }
        }
        // Named namespaces.
        for (name, path) in read_link_name(&self.cfg.netns_dir) {
            let Ok(f) = File::open(&path) else { continue };
            let Ok(meta) = f.metadata() else { continue };
            if !seen.insert(meta.ino()) {
                continue;
            }
            let nsid = self.nsid_of(&f);
            out.push(Namespace {
                inode: meta.ino(),
                nsid,
                id: name.clone(),
                name,
                runtime: "netns",
                image: String::new(),
                ips: Vec::new(),
                macs: Vec::new(),
            });
        }
        out
    }

    fn intern(&mut self, e: Entry) -> u16 {
        let i = self.entries.intern(e);
        if i == NONE && self.warned.full.is_none_or(|t| t.elapsed() >= FULL_REMIND) {
            self.warned.full = Some(std::time::Instant::now());
            self.warn(&format!(
                "{} container entries held at once (running containers, and stopped ones whose flows are still \
                 in the workers' tables); newer containers are not attributed, and with CJ_IFACE=containers not \
                 captured, until flows of stopped ones end: restart cj-detector to begin afresh (its flows are \
                 flushed, nothing counted is lost); said again hourly while it lasts",
                self.entries.limit()
            ));
        }
        i
    }

    /// Scans everything once and builds a snapshot.
    pub fn scan(&mut self) -> Snapshot {
        let own_inode = std::fs::metadata("/proc/self/ns/net").map(|m| m.ino()).unwrap_or(0);
        let links = self.rtnl().and_then(|n| n.links(None).ok()).unwrap_or_default();
        let namespaces = self.namespaces(own_inode);
        let mut found: Vec<Entry> = Vec::new();
        for ns in namespaces {
            // The netns's own view of its interfaces and addresses (needs CAP_NET_ADMIN over it).
            let (inner_links, inner_addrs) = match ns.nsid {
                Some(id) => {
                    let l = self.rtnl().map(|n| n.links(Some(id)));
                    let a = self.rtnl().map(|n| n.addresses(Some(id)));
                    match (l, a) {
                        (Some(Ok(l)), Some(Ok(a))) => (l, a),
                        (Some(Err(e)), _) | (_, Some(Err(e))) => {
                            if !self.warned.dump {
                                self.warned.dump = true;
                                self.warn(&format!(
                                    "cannot list the interfaces inside netns {} ({e}; needs CAP_NET_ADMIN): \
                                     MAC and IP attribution use what the runtime reports",
                                    ns.name
                                ));
                            }
                            (Vec::new(), Vec::new())
                        }
                        _ => (Vec::new(), Vec::new()),
                    }
                }
                None => (Vec::new(), Vec::new()),
            };
            let veths: Vec<&netlink::LinkInfoRow> =
                links.iter().filter(|l| ns.nsid.is_some() && l.link_netnsid == ns.nsid).collect();
            let base = |veth: &str| ContainerRef {
                netns: ns.inode,
                nsid: ns.nsid.unwrap_or(-1),
                id: record_id(&ns.id),
                name: fixed_text(&ns.name),
                veth: fixed_text(veth),
                ..Default::default()
            };
            if veths.is_empty() {
                if ns.ips.is_empty() && ns.macs.is_empty() && inner_addrs.is_empty() {
                    continue;
                }
                let mut ips: Vec<IpAddr> =
                    inner_addrs.iter().map(|(_, ip)| *ip).filter(|ip| !ip.is_loopback()).collect();
                ips.extend(ns.ips.iter().copied());
                let mut macs: Vec<[u8; 6]> =
                    inner_links.iter().filter_map(|l| l.mac.as_slice().try_into().ok()).collect();
                macs.extend(ns.macs.iter().copied());
                macs.retain(|m| *m != [0; 6]);
                let e = Entry {
                    reference: base(""),
                    runtime: ns.runtime,
                    image: ns.image.clone(),
                    veth_ifindex: 0,
                    macs,
                    ips,
                };
                found.push(e);
                continue;
            }
            for v in veths {
                let peer = v.link.and_then(|p| inner_links.iter().find(|l| l.index == p));
                let mut macs: Vec<[u8; 6]> = peer.and_then(|p| p.mac.as_slice().try_into().ok()).into_iter().collect();
                let mut ips: Vec<IpAddr> = match peer {
                    Some(p) => inner_addrs.iter().filter(|(i, _)| *i == p.index).map(|(_, ip)| *ip).collect(),
                    None => Vec::new(),
                };
                if peer.is_none() {
                    // No view inside: the runtime's addresses (exact when the container has one interface).
                    macs.extend(ns.macs.iter().copied());
                    ips.extend(ns.ips.iter().copied());
                }
                let e = Entry {
                    reference: base(&v.name),
                    runtime: ns.runtime,
                    image: ns.image.clone(),
                    veth_ifindex: v.index,
                    macs,
                    ips,
                };
                found.push(e);
            }
        }
        self.build(found, &links)
    }

    /// A scan that finds exactly the container interfaces `found` and no host
    /// link: the life of entries and snapshots without a host to scan (tests).
    pub fn scan_found(&mut self, found: Vec<Entry>) -> Snapshot {
        self.build(found, &[])
    }

    /// The next snapshot, of the container interfaces a scan found and the host's links.
    fn build(&mut self, found: Vec<Entry>, links: &[netlink::LinkInfoRow]) -> Snapshot {
        // Entries no reader holds any more are free before this scan's new containers want one.
        self.entries.reclaim(&self.readers);
        let live: Vec<u16> = found.into_iter().map(|e| self.intern(e)).collect();
        let refused = live.contains(&NONE);
        self.generation += 1;
        let all = self.entries.all();
        let mut snap = Snapshot {
            generation: self.generation,
            entries: all.to_vec(),
            live: vec![false; all.len()],
            links: links.iter().map(|l| (l.index, l.name.clone(), l.kind.clone())).collect(),
            ..Default::default()
        };
        for &i in &live {
            if i != NONE {
                snap.live[usize::from(i)] = true;
                let e = &all[usize::from(i)];
                for m in &e.macs {
                    snap.by_mac.insert(*m, i);
                }
                for ip in &e.ips {
                    snap.by_ip.insert(*ip, i);
                }
            }
        }
        self.update = capture::Update::default();
        self.map_sources(&mut snap, links);
        // What this snapshot can attribute a new flow to: the live entries (by
        // MAC, address, veth) and those a capture index still names (a released
        // veth's, until the balancer lets go of it). The others start retiring.
        let mut attributable = snap.live.clone();
        for &e in &snap.by_source {
            if let Some(a) = attributable.get_mut(usize::from(e)).filter(|_| e != NONE && e != UNKNOWN) {
                *a = true;
            }
        }
        self.entries.retire(&attributable, snap.generation);
        snap.entries_held = self.entries.held();
        snap.entries_retiring = self.entries.retiring();
        snap.entries_reclaimed = self.entries.reclaimed();
        // A container refused for lack of entries waits for a retiring one: the inventory
        // looks at the readers' reports every RECHECK and scans again once one would be
        // freed (Scanner::waits_for_entries), not at every RECHECK: an entry is let go only
        // when its last flow ends (its idle timeout at the soonest, or never).
        self.refused = refused;
        snap
    }

    /// The last scan refused a container for lack of entries while some retire:
    /// one is given as soon as the readers let go of a retiring one
    /// ([`Scanner::entries_reclaimable`]).
    pub fn waits_for_entries(&self) -> bool {
        self.refused && self.entries.retiring() > 0
    }

    /// True when a scan now would free a retiring entry (a look at the
    /// readers' reports: no scan, no change).
    pub fn entries_reclaimable(&self) -> bool {
        self.entries.reclaimable(&self.readers)
    }

    /// Fills the snapshot's capture sources (see [`SourceMap`]).
    fn map_sources(&mut self, snap: &mut Snapshot, links: &[netlink::LinkInfoRow]) {
        snap.readers = Arc::clone(&self.readers);
        let dir = match &self.cfg.sources {
            SourceMap::Static(list) => {
                // A fixed list: every index is known (those past the list name nothing).
                snap.by_source = vec![NONE; 256];
                snap.sources = list.iter().take(255).enumerate().map(|(i, n)| (i as u8, n.clone())).collect();
                for (i, name) in &snap.sources {
                    snap.by_source[usize::from(*i)] = snap.by_veth_name(name);
                }
                return;
            }
            SourceMap::Containers(dir) | SourceMap::Follow(dir) => dir.clone(),
        };
        let Some(assigner) = self.assigner.as_mut() else {
            // A one-shot view: the running detector's list.
            let list = capture::read_capture(&dir).ok().flatten().unwrap_or_default();
            snap.by_source = vec![UNKNOWN; 256];
            for (i, name) in list.sources {
                snap.by_source[usize::from(i)] = snap.by_veth_name(&name);
                snap.sources.push((i, name));
            }
            return;
        };
        // A veth leaves the capture when it is gone from the host, not when one scan
        // misses its container (a scan that raced a container's start).
        let mut live: Vec<(String, u16)> = snap
            .live_entries()
            .filter(|(_, e)| !e.reference.veth_str().is_empty())
            .map(|(i, e)| (e.reference.veth_str().to_owned(), i))
            .collect();
        let listed: Vec<(u8, String)> = assigner.list();
        let before = assigner.by_source();
        for (i, name) in &listed {
            if !live.iter().any(|(n, _)| n == name) && links.iter().any(|l| &l.name == name) {
                live.push((name.clone(), before[usize::from(*i)]));
            }
        }
        let balancer = match sources::read_sources(&dir) {
            Ok(list) => list,
            Err(e) => {
                if !self.warned.sources {
                    self.warned.sources = true;
                    station::cj_warn!(
                        "{}: inventory: warning: cannot read the balancer's source list ({e}); released capture \
                         indices are not reused until it can be read",
                        self.cfg.log_prefix
                    );
                }
                None
            }
        };
        let readers = Arc::clone(&self.readers);
        self.update = assigner.update(&live, balancer.as_deref(), |g| readers.caught_up(g), snap.generation);
        snap.by_source = assigner.by_source();
        snap.sources = assigner.list();
    }
}

/// Events that make the inventory thread rescan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wake {
    Link,
    Docker,
    Sources,
}

/// The running inventory: the shared snapshot and its refresher thread.
#[derive(Debug)]
pub struct Inventory {
    shared: Arc<ArcSwap<Snapshot>>,
}

impl Inventory {
    /// Takes a first snapshot (without asking Docker), then keeps it current
    /// on a thread `cj-inventory`; Docker is asked on a thread of its own.
    /// For [`SourceMap::Containers`] this inventory assigns the capture
    /// indices (taking over those of the `capture` file it finds) and writes
    /// the capture list after each snapshot that changed it.
    pub fn start(cfg: InventoryConfig) -> Self {
        let mut scanner = Scanner::new(cfg.clone());
        let docker_view: Option<DockerView> = cfg.docker_socket.as_ref().map(|_| DockerView::default());
        scanner.docker_view = docker_view.clone();
        let capture_dir = match &cfg.sources {
            SourceMap::Containers(dir) => Some(dir.clone()),
            SourceMap::Static(_) | SourceMap::Follow(_) => None,
        };
        if let Some(dir) = &capture_dir {
            // A list that cannot be read or is refused (another user's file) is not taken
            // over: the first list written replaces it.
            let previous = capture::read_capture(dir).unwrap_or_else(|e| {
                station::cj_warn!(
                    "{}: inventory: warning: not taking over the capture list ({e}); a new one is written",
                    cfg.log_prefix
                );
                None
            });
            let balancer = sources::read_sources(dir).ok().flatten();
            scanner.assigner = Some(capture::Assigner::resume(previous.as_ref(), balancer.as_deref()));
        }
        let first = scanner.scan();
        // The snapshot first, then the list that lets the balancer capture what it names.
        let mut writer =
            capture_dir.map(|dir| CaptureWriter { dir, dirty: true, warned: false, log_prefix: cfg.log_prefix });
        let first_list = capture::CaptureList { generation: first.generation, sources: first.sources.clone() };
        let shared = Arc::new(ArcSwap::from_pointee(first));
        if let Some(w) = writer.as_mut() {
            w.write(&first_list);
        }
        let (tx, rx) = crossbeam_channel::unbounded::<Wake>();
        // Link events.
        if let Ok(mut ev) = netlink::LinkEvents::open() {
            let tx = tx.clone();
            let _ = std::thread::Builder::new().name("cj-inv-links".into()).spawn(move || {
                while ev.wait().is_ok() {
                    if tx.send(Wake::Link).is_err() {
                        break;
                    }
                }
            });
        }
        if let (Some(sock), Some(view)) = (cfg.docker_socket.clone(), docker_view) {
            // Docker events wake the asking thread (reconnecting; quiet, the asking thread warns once).
            let (dtx, drx) = crossbeam_channel::unbounded::<()>();
            let events_sock = sock.clone();
            let _ = std::thread::Builder::new().name("cj-inv-dockev".into()).spawn(move || loop {
                // No daemon: look again later (the periodic request covers the rest).
                if std::os::unix::net::UnixStream::connect(&events_sock).is_err() {
                    std::thread::sleep(Duration::from_secs(2));
                    continue;
                }
                let _ = docker::follow_events(&events_sock, || {
                    let _ = dtx.send(());
                });
                // The stream ended (daemon restarting): ask again, then reconnect.
                if dtx.send(()).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            });
            // The asking thread: at start, on every event, every RESCAN_EVERY; each answer wakes a rescan.
            let tx = tx.clone();
            let log_prefix = cfg.log_prefix;
            let _ = std::thread::Builder::new().name("cj-inv-docker".into()).spawn(move || {
                let mut warned = false;
                loop {
                    let list = ask_docker(&sock, &mut warned, log_prefix);
                    let changed = match view.lock() {
                        Ok(mut v) => {
                            let changed = *v != list;
                            *v = list;
                            changed
                        }
                        Err(_) => break,
                    };
                    if changed && tx.send(Wake::Docker).is_err() {
                        break;
                    }
                    match drx.recv_timeout(RESCAN_EVERY) {
                        Ok(()) => {
                            // Let a burst of events settle (a container start is several events).
                            std::thread::sleep(Duration::from_millis(5));
                            while drx.try_recv().is_ok() {}
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => std::thread::sleep(RESCAN_EVERY),
                    }
                }
            });
        }
        // The balancer's source list (owner), or the owner's capture list (follower).
        let watched = match &cfg.sources {
            SourceMap::Containers(dir) => Some(sources::sources_path(dir)),
            SourceMap::Follow(dir) => Some(capture::capture_path(dir)),
            SourceMap::Static(_) => None,
        };
        if let Some(path) = watched {
            let tx = tx.clone();
            let _ = std::thread::Builder::new().name("cj-inv-sources".into()).spawn(move || {
                let stamp = |p: &Path| -> Option<(SystemTime, u64, u64)> {
                    let m = std::fs::symlink_metadata(p).ok()?;
                    Some((m.modified().ok()?, m.ino(), m.len()))
                };
                let mut last = stamp(&path);
                loop {
                    std::thread::sleep(SOURCES_POLL);
                    let now = stamp(&path);
                    if now != last {
                        last = now;
                        if tx.send(Wake::Sources).is_err() {
                            break;
                        }
                    }
                }
            });
        }
        drop(tx);
        let publish = Arc::clone(&shared);
        let _ = std::thread::Builder::new().name("cj-inventory".into()).spawn(move || {
            let mut scanned = std::time::Instant::now();
            loop {
                let waits = scanner.waits_for_entries();
                let wait = if scanner.update.recheck || waits { RECHECK } else { RESCAN_EVERY };
                let woken = match rx.recv_timeout(wait) {
                    Ok(w) => {
                        // Let a burst of events settle (a container start is several link changes).
                        if w != Wake::Sources {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        while rx.try_recv().is_ok() {}
                        true
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(wait);
                        false
                    }
                };
                // Waiting only for a container entry: the host is scanned again once a
                // reader let go of a retiring one (or at the periodic rescan), not every RECHECK.
                if !woken
                    && waits
                    && !scanner.update.recheck
                    && scanned.elapsed() < RESCAN_EVERY
                    && !scanner.entries_reclaimable()
                {
                    continue;
                }
                scanned = std::time::Instant::now();
                let snap = scanner.scan();
                let list = capture::CaptureList { generation: snap.generation, sources: snap.sources.clone() };
                publish.store(Arc::new(snap));
                if let Some(w) = writer.as_mut() {
                    w.dirty |= scanner.update.list_changed;
                    if w.dirty {
                        w.write(&list);
                    }
                }
            }
        });
        Self { shared }
    }

    /// The snapshot cell; readers `load()` it once per batch.
    pub fn shared(&self) -> Arc<ArcSwap<Snapshot>> {
        Arc::clone(&self.shared)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }
}

/// Writes the capture list; a failure is said once and the write tried again after the next scan.
#[derive(Debug)]
struct CaptureWriter {
    dir: PathBuf,
    dirty: bool,
    warned: bool,
    log_prefix: &'static str,
}

impl CaptureWriter {
    fn write(&mut self, list: &capture::CaptureList) {
        match capture::write_capture(&self.dir, list) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    station::cj_warn!(
                        "{}: inventory: warning: cannot write the capture list in {} ({e}); the balancer captures \
                         no new container veth until it can",
                        self.log_prefix,
                        self.dir.display()
                    );
                }
            }
        }
    }
}

/// A snapshot built by hand (tests, benchmarks): entries with their MACs,
/// addresses and source indices.
pub fn snapshot_for_tests(entries: &[(Entry, Option<u8>)]) -> Snapshot {
    let mut snap = Snapshot { generation: 1, entries: vec![Entry::default()], live: vec![false], ..Default::default() };
    snap.by_source = vec![NONE; 256];
    for (e, src) in entries {
        let i = snap.entries.len() as u16;
        for m in &e.macs {
            snap.by_mac.insert(*m, i);
        }
        for ip in &e.ips {
            snap.by_ip.insert(*ip, i);
        }
        if let Some(s) = src {
            snap.by_source[usize::from(*s)] = i;
            snap.sources.push((*s, e.reference.veth_str().to_owned()));
        }
        snap.entries.push(e.clone());
        snap.live.push(true);
    }
    snap
}

/// A runtime's id as the 16 bytes a record holds: itself when it fits;
/// longer, its first 7 bytes, `~` and 8 hex digits of a hash (FNV-1a, 32
/// bits) of the whole id, so that ids sharing their first 16 bytes (named
/// namespaces `site-a-frontend-1` and `site-a-frontend-2`, LXC names, ctr
/// task ids) stay two containers in the app's tables, which key rows by name
/// and id. Docker's ids are cut to 12 hex digits before this.
pub fn record_id(id: &str) -> [u8; 16] {
    if id.len() <= 16 {
        return fixed_text(id);
    }
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    let mut keep = 7;
    while !id.is_char_boundary(keep) {
        keep -= 1;
    }
    fixed_text(&format!("{}~{hash:08x}", &id[..keep]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_without_anything_is_empty_and_cheap() {
        let mut cfg = InventoryConfig::new("test");
        cfg.docker_socket = Some(PathBuf::from("/nonexistent/docker.sock"));
        cfg.netns_dir = PathBuf::from("/nonexistent");
        cfg.scan_proc = false;
        cfg.sources = SourceMap::Static(vec!["lo".into()]);
        let mut s = Scanner::new(cfg);
        let snap = s.scan();
        assert_eq!(snap.entries.len(), 1);
        assert!(snap.links.iter().any(|l| l.1 == "lo"));
        assert_eq!(snap.by_source(0), NONE);
        assert_eq!(snap.sources, vec![(0, "lo".to_owned())]);
        let again = s.scan();
        assert_eq!(again.generation, 2);
    }

    fn quiet_config(sources: SourceMap) -> InventoryConfig {
        let mut cfg = InventoryConfig::new("test");
        cfg.docker_socket = None;
        cfg.netns_dir = PathBuf::from("/nonexistent");
        cfg.scan_proc = false;
        cfg.sources = sources;
        cfg
    }

    #[test]
    fn a_static_list_knows_every_index_and_a_capture_list_only_its_own() {
        let snap = Scanner::new(quiet_config(SourceMap::Static(vec!["lo".into()]))).scan();
        assert!((0..=255).all(|i| snap.knows_source(i)));
        // A one-shot view of `containers` reads the running detector's list.
        let d = tempfile::tempdir().unwrap();
        let list = capture::CaptureList { generation: 3, sources: vec![(3, "lo".into())] };
        capture::write_capture(d.path(), &list).unwrap();
        let snap = Scanner::new(quiet_config(SourceMap::Containers(d.path().to_owned()))).scan();
        assert_eq!(snap.sources, vec![(3, "lo".to_owned())]);
        assert!(snap.knows_source(3));
        assert!(!snap.knows_source(4));
        assert_eq!(snap.by_source(4), NONE);
        // An assigning scan with no container veth knows no index; the one it took
        // over from the list is known until the balancer lets go of it.
        let gone = capture::CaptureList { generation: 3, sources: vec![(3, "cj-no-such-veth".into())] };
        let mut s = Scanner::new(quiet_config(SourceMap::Containers(d.path().to_owned())));
        s.assigner = Some(capture::Assigner::resume(Some(&gone), None));
        let snap = s.scan();
        assert!(snap.sources.is_empty());
        assert!(snap.knows_source(3) && !snap.knows_source(0));
        assert!(s.update.list_changed);
    }

    #[test]
    fn a_released_veths_entry_is_not_reused_while_its_capture_index_still_names_it() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Scanner::new(quiet_config(SourceMap::Containers(d.path().to_owned())));
        // No reader expected: an entry is free as soon as no snapshot attributes it.
        s.assigner = Some(capture::Assigner::resume(None, None));
        let client = Entry {
            reference: ContainerRef {
                netns: 4_026_532_001,
                id: fixed_text("client"),
                name: fixed_text("client"),
                veth: fixed_text("vc"),
                ..Default::default()
            },
            ..Default::default()
        };
        let snap = s.scan_found(vec![client]);
        let (i, entry) = (snap.sources[0].0, snap.by_veth_name("vc"));
        assert_ne!(entry, NONE);
        // The container is gone, but the balancer still captures its veth: the
        // index names the entry, which is not retiring.
        sources::write_sources(d.path(), &[(i, "vc".to_owned())]).unwrap();
        for _ in 0..2 {
            let snap = s.scan_found(vec![]);
            assert_eq!((snap.by_source(i), snap.entry(entry).name_str()), (entry, "client"));
            assert_eq!((snap.entries_held, snap.entries_retiring, snap.entries_reclaimed), (1, 0, 0));
        }
        // The balancer let go: unknown index, the entry retires, then is freed.
        sources::write_sources(d.path(), &[]).unwrap();
        let snap = s.scan_found(vec![]);
        assert_eq!((snap.entries_held, snap.entries_retiring, snap.entries_reclaimed), (1, 1, 0));
        let snap = s.scan_found(vec![]);
        assert_eq!((snap.entries_held, snap.entries_retiring, snap.entries_reclaimed), (0, 0, 1));
        assert_eq!(snap.entry(entry), ContainerRef::default());
    }

    #[test]
    fn a_container_refused_at_the_limit_does_not_rescan_the_host_while_a_flow_holds_the_stopped_entry() {
        let named = |name: &str, netns: u64| Entry {
            reference: ContainerRef {
                netns,
                id: fixed_text(name),
                name: fixed_text(name),
                veth: fixed_text(&format!("v{name}")),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut cfg = quiet_config(SourceMap::Static(Vec::new()));
        cfg.readers = 1;
        cfg.max_entries = 1;
        let mut s = Scanner::new(cfg);
        let snap = s.scan_found(vec![named("a", 1)]);
        let a = snap.by_veth_name("va");
        let reader = snap.readers.join();
        let mut held = entries::Holdings::default();
        held.hold(a);
        reader.report_held(snap.generation, &mut [&mut held]);
        // "a" stops while a flow holds its entry; "b" finds the one entry held.
        let snap = s.scan_found(vec![]);
        reader.report_held(snap.generation, &mut [&mut held]);
        let snap = s.scan_found(vec![named("b", 2)]);
        assert_eq!((snap.by_veth_name("vb"), snap.entries_retiring), (NONE, 1));
        reader.report_held(snap.generation, &mut [&mut held]);
        // Nothing a scan of the host finds can change that until the flow ends (its idle
        // timeout, or never): no full rescan every RECHECK meanwhile, only a look at the reports.
        for _ in 0..3 {
            let snap = s.scan_found(vec![named("b", 2)]);
            reader.report_held(snap.generation, &mut [&mut held]);
            assert!(!s.update.recheck, "a full rescan every {RECHECK:?} while the flow lasts");
            assert!(s.waits_for_entries() && !s.entries_reclaimable());
        }
        // The flow ends: the look at the reports says a scan would free the entry, and it does.
        held.release(a);
        reader.report_held(snap.generation + 3, &mut [&mut held]);
        assert!(s.entries_reclaimable());
        let snap = s.scan_found(vec![named("b", 2)]);
        assert_eq!((snap.by_veth_name("vb"), snap.entries_reclaimed), (a, 1));
        assert!(!s.waits_for_entries() && !s.entries_reclaimable());
    }

    #[test]
    fn readers_are_caught_up_once_all_joined_and_drained() {
        let r = Readers::new(2);
        assert!(!r.caught_up(1), "nobody joined yet");
        let a = r.join();
        let b = r.join();
        a.drained_under(5);
        assert!(!r.caught_up(5));
        b.drained_under(6);
        assert!(r.caught_up(5) && !r.caught_up(6));
        drop(a);
        assert!(r.caught_up(6), "a reader that ended is not waited for");
    }

    #[test]
    fn lookups_of_a_hand_made_snapshot() {
        let e = Entry {
            reference: ContainerRef { name: fixed_text("c1"), veth: fixed_text("veth1"), ..Default::default() },
            macs: vec![[2, 0, 0, 0, 0, 1]],
            ips: vec!["10.0.0.1".parse().unwrap()],
            ..Default::default()
        };
        let s = snapshot_for_tests(&[(e, Some(3))]);
        assert_eq!(s.by_source(3), 1);
        assert_eq!(s.by_source(4), NONE);
        assert_eq!(s.by_mac(&[2, 0, 0, 0, 0, 1]), 1);
        assert_eq!(s.by_ip(&"10.0.0.1".parse().unwrap()), 1);
        assert_eq!(s.entry(1).name_str(), "c1");
        assert_eq!(s.entry(9), ContainerRef::default());
        assert_eq!(s.by_veth_name("veth1"), 1);
    }

    #[test]
    fn ids_longer_than_a_record_holds_stay_apart() {
        let text = |b: [u8; 16]| station::record::text_of(&b).to_owned();
        let (a, b) = ("rv3-abcdefghijklmnopqrstuvwxyz-long-1", "rv3-abcdefghijklmnopqrstuvwxyz-long-2");
        assert_ne!(record_id(a), record_id(b), "two named namespaces sharing their first 16 bytes");
        assert_eq!(record_id(a), record_id(a), "the same id, the same bytes (stable)");
        assert!(text(record_id(a)).starts_with("rv3-abc~") && text(record_id(a)).len() == 16, "{}", text(record_id(a)));
        // What fits is kept as it is: Docker's 12-digit ids, short names.
        assert_eq!(text(record_id("0123456789ab")), "0123456789ab");
        assert_eq!(text(record_id("exactly16bytes!!")), "exactly16bytes!!");
        // A multi-byte character at the cut is not split.
        assert!(text(record_id("ééééééééééééé")).starts_with("ééé~"));
    }
}

//! Flow divert: the rules that pick flows out (`CJ_DIVERT_RULES`), their
//! reload while the station runs, and each worker's per-packet verdict and
//! write to its tun device (`CJ_TUN=yes`; README "Flow divert").
//!
//! Rules, one a line: `mirror` or `divert`, then any number of selectors,
//! all of which must match: `net CIDR` (either end's address in the prefix),
//! `port N` (either end's port), `proto tcp|udp|icmp|sctp|NUMBER` (`icmp` is
//! ICMP for IPv4 and ICMPv6 for IPv6), `container NAME-OR-ID` (either end
//! attributed to that container: its name, or its id or an id prefix of at
//! least 4 characters). `#` starts a comment. The first rule that matches
//! decides; a flow no rule matches passes untouched. A rule without
//! selectors matches every IP flow.
//!
//! Guarantees:
//! - Parsing ([`RuleSet::parse`]) refuses the whole file at the first bad
//!   line, with one line naming file and line (`rules.conf:3: unknown
//!   selector "prot": expected net, port, proto or container`), quoting at
//!   most a short printable piece of the line (`station::config::excerpt`).
//!   The file is read through [`read_rules_file`]: opened non-blocking,
//!   `fstat`ed (a regular file of at most [`MAX_RULES_BYTES`], owned by root
//!   or the detector's user, writable by no one else; a symbolic link only
//!   when root or that user owns it) before a byte is read, so a FIFO or
//!   device named there never blocks or floods the detector, and a file
//!   another user owns or may write never decides what leaves accounting.
//! - Reload ([`start`], [`Reloader`]): the thread `cj-divert-rules` reads the
//!   file every [`RELOAD_POLL`] and compares its bytes with the last ones
//!   read (so an edit in place, a rename over it and a symlink swap are all
//!   seen, whatever the file system's timestamp resolution); changed bytes
//!   are taken only when the next poll reads the same bytes again, so a file
//!   caught while it is written in place (a shell's `>` truncates it first,
//!   an editor may write it in pieces) is neither published half done (an
//!   emptied file was published as zero rules, and the flows that began in
//!   that poll kept "pass" for their life) nor refused for a cut line. A
//!   changed file that parses is published whole with `arc-swap` under the
//!   next generation, one line says so, and every worker takes it at its
//!   next batch: within two polls plus one batch, atomically, no worker
//!   stopped. A file that does not parse, cannot be read or is gone keeps
//!   the rules in force and logs one line (once per distinct problem) naming
//!   file and line. The first read at start follows the same rule (two reads
//!   a poll apart that agree; a file that changes at every read for 5 s
//!   stops the start with one line), so divert adds one poll to the start.
//! - Verdicts ([`Divert`]): a flow (canonical 5-tuple, VLANs, capture
//!   source) is decided once, by the rule set in force when its first packet
//!   is seen, and keeps that verdict until it ends, whatever rules come later.
//!   The flow table is not asked (its module is not this one's to change), so
//!   a flow "ends" here by the same idle timeout (`CJ_FLOW_IDLE_TIMEOUT`, on
//!   packet timestamps) or, for TCP, by a SYN without ACK after a FIN or RST.
//!   Verdicts live in a per-worker table bounded by `CJ_FLOW_TABLE_SIZE`; when
//!   it is full the least recently seen verdict goes, and if its flow was not
//!   idle that is counted (`divert_verdicts_evicted`): such a flow is decided
//!   again, by the rules then in force, at its next packet.
//! - Fragments: a later IP fragment (IPv4 or IPv6, no ports) takes the
//!   verdict its datagram's first fragment got (kept per worker by the
//!   fragment table's key, addresses, VLANs, identification and for IPv4 the
//!   protocol, plus the capture source; 30 s after the datagram's last
//!   fragment, at most 65,536 datagrams, least recent evicted), so the whole
//!   datagram is mirrored or diverted, or none of it. Before, later fragments
//!   were decided by themselves with ports 0: with a `port` rule the tun
//!   device got only first fragments, and a diverted datagram's later
//!   fragments were accounted as a remainder row with ports 0.
//! - Actions: `mirror` writes the packet's IP bytes to the tun device and
//!   the packet is accounted as usual; `divert` writes them and the packet
//!   is *not* accounted in a flow: it is counted in `diverted_packets`, a
//!   term of the accounting identity of its own. The Ethernet header and
//!   every VLAN tag are removed (a tun device carries bare IP); the bytes
//!   written are the IP packet's length (IPv4 total length, IPv6 payload
//!   length + 40), so Ethernet padding is not written. A write that the
//!   device refuses (queue full, any error) or a packet cut to the slot is
//!   counted in `tun_dropped_*` and never retried: the worker never waits.
//!   (Writes go into the kernel's input path: a device that is down refuses
//!   each with `EIO`, which is logged rate-limited with the command that
//!   brings it up; the kernel counts them in the device's `rx_dropped`.) A
//!   device deleted while attached refuses each with `EBADFD`, logged with
//!   the command that creates it again; once a device of that name exists
//!   again the worker attaches to it (tried at most every 100 ms, at a
//!   refused write) and writes that packet and the next ones to it. Before,
//!   the worker kept its dead descriptor: every later packet was refused
//!   until the detector restarted.
//! - Off (`CJ_TUN=no`, the default): [`Divert::off`] opens nothing,
//!   allocates nothing, and costs the worker one predictable branch per slot.
//! - No allocation per packet once the verdict table has grown.
//! - Per-rule counters (`CJ_TUN=yes`): each worker also writes the page
//!   `divert-<q>` (`station::naming::set_divert_page_path`), created like the
//!   stats pages, with the counters of the stats page's `mirrored_*`,
//!   `diverted_*` and `tun_dropped_*` per rule: `rule1_*` .. `rule64_*` (the
//!   n-th rule of the file, comments and blank lines not counted) and
//!   `other_*` for every rule after the 64th. Written with the stats page
//!   (after every batch); each counter summed over the slots equals the
//!   stats page's counter of that name (both continue across restarts from
//!   the values in the pages). The rules behind the slots are listed in the
//!   text file `divert-rules` of the cluster directory
//!   (`station::naming::set_divert_rules_path`), replaced atomically
//!   (`shmq::files::write_atomic`) at start and at every reload that
//!   publishes: `# generation G of FILE`, then `rule<n> line <L> <text>`.
//!
//! Not guaranteed:
//! - Flow ends other than idle and TCP reopen are not followed: a flow the
//!   flow table ends by its active timeout goes on under its verdict (right:
//!   it is the same flow); a TCP connection that closes and is reopened on
//!   the same 5-tuple without a SYN seen, within the idle timeout, keeps the
//!   old verdict.
//! - Later IP fragments carry no ports of their own. One whose datagram's
//!   first fragment was not seen within [`FRAGMENT_TIMEOUT_NS`] (it came
//!   first, went to another worker, or the datagram's entry was evicted from
//!   the [`FRAGMENT_TABLE_LIMIT`] kept) is decided as a flow of its own with
//!   ports 0, so a `port` rule does not match it.
//! - Non-IP and malformed frames are never mirrored or diverted.
//! - A writer that stops for longer than a poll part way through a file
//!   written in place: what it wrote so far has read the same twice and is
//!   taken (or refused). Replace the file by renaming a finished one over it.
//! - Per-rule counters: slot n of the page is the n-th rule of the rule set
//!   that *decided* the flow, whatever its generation; after a reload that
//!   reorders rules, flows decided earlier go on counting in their old slot.
//!   Rules after the 64th share the `other` slot.

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use inventory::arc_swap::ArcSwap;
use inventory::Snapshot;
use shmq::{CounterPage, QueueError};
use station::config::StationConfig;
use station::naming;
use station::record::ContainerRef;
use station::slot::{read_packet, PacketMeta};
use wire::tcp::flags as tcp_flags;
use wire::{ip_proto, FlowKey, PacketSummary};

use crate::accounting::Accounting;
use crate::flow_table::Capture;
use crate::fragments::{FragKey, FRAGMENT_TABLE_LIMIT, FRAGMENT_TIMEOUT_NS};
use crate::lru_slab::LruSlab;
use crate::record_sink::RecordSink;
use crate::tun::{Tun, TunError, WriteFailure};
use crate::worker::{SharedSnapshot, WorkerSpec};

/// How often the rules file is read.
pub const RELOAD_POLL: Duration = Duration::from_millis(200);
/// Largest rules file read.
pub const MAX_RULES_BYTES: u64 = 1 << 20;
/// Verdict table entries reserved at start (it grows to `CJ_FLOW_TABLE_SIZE`).
const INITIAL_VERDICTS: usize = 4096;
/// Least time between two log lines about refused tun writes.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// Least time between two attempts to attach again to a deleted tun device.
const REATTACH_EVERY: Duration = Duration::from_millis(100);
/// Shortest id prefix a `container` selector matches by.
const MIN_ID_PREFIX: usize = 4;

/// What a rule does with the flows it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A copy of each packet goes to the tun device; the flow is accounted as usual.
    Mirror,
    /// Each packet goes to the tun device instead of the flow table.
    Divert,
}

/// An address prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    version: u8,
    addr: [u8; 16],
    len: u8,
}

impl Cidr {
    /// Whether `addr` (of IP version `version`, IPv4 in the first 4 bytes) is in the prefix.
    #[inline]
    pub fn contains(&self, version: u8, addr: &[u8; 16]) -> bool {
        if version != self.version {
            return false;
        }
        let full = usize::from(self.len / 8);
        if addr[..full] != self.addr[..full] {
            return false;
        }
        let rest = self.len % 8;
        rest == 0 || (addr[full] ^ self.addr[full]) & (0xffu8 << (8 - rest)) == 0
    }

    fn parse(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{:?} is not an address prefix (ADDRESS or ADDRESS/LENGTH, IPv4 up to /32, IPv6 up to /128)",
                station::config::excerpt(text)
            )
        };
        let (a, l) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = a.parse().map_err(|_| bad())?;
        let (version, max, mut addr) = match ip {
            IpAddr::V4(v) => {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&v.octets());
                (4u8, 32u8, b)
            }
            IpAddr::V6(v) => (6u8, 128u8, v.octets()),
        };
        let len = match l {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|&n| n <= max && !l.starts_with('+')).ok_or_else(bad)?,
        };
        let prefix = Cidr { version, addr, len };
        // Bits set past the length are a typo more often than not: say so.
        let mut masked = addr;
        for (i, b) in masked.iter_mut().enumerate() {
            let bits = (usize::from(len)).saturating_sub(i * 8).min(8);
            *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        if masked != addr {
            addr = masked;
            let ip = match version {
                4 => IpAddr::from([addr[0], addr[1], addr[2], addr[3]]),
                _ => IpAddr::from(addr),
            };
            return Err(format!("{text:?} has address bits set past /{len} (the prefix is {ip}/{len})"));
        }
        Ok(prefix)
    }
}

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Either end's address is in the prefix.
    Net(Cidr),
    /// Either end's port is this.
    Port(u16),
    /// The protocol: (for IPv4, for IPv6).
    Proto(u8, u8),
    /// Either end belongs to this container (name, or id / id prefix).
    Container(String),
}

/// One line of the rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What to do.
    pub action: Action,
    /// All must match.
    pub selectors: Vec<Selector>,
    /// Its line in the file (1-based).
    pub line: usize,
    /// The rule as written, without its comment, whitespace collapsed.
    pub text: String,
}

/// A parsed rules file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// In file order; the first that matches decides.
    pub rules: Vec<Rule>,
    /// Bumped by every reload that published (0: no rules file).
    pub generation: u64,
    /// Some rule has a `container` selector (flows are then attributed).
    needs_containers: bool,
}

/// Why a rules file was refused; one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// A bad line.
    #[error("{}:{line}: {what}", file.display())]
    Line {
        /// The file.
        file: PathBuf,
        /// 1-based.
        line: usize,
        /// What is wrong and what is expected.
        what: String,
    },
    /// The file as a whole.
    #[error("{}: {what}", file.display())]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        what: String,
    },
}

fn proto_of(text: &str) -> Option<(u8, u8)> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some((6, 6)),
        "udp" => Some((17, 17)),
        "icmp" => Some((1, 58)),
        "sctp" => Some((132, 132)),
        n => n.parse::<u8>().ok().filter(|_| !n.starts_with('+')).map(|p| (p, p)),
    }
}

impl RuleSet {
    /// Parses a rules file's text (`file` names it in errors); generation 0.
    ///
    /// # Errors
    /// The first bad line: an unknown action or selector, a selector without
    /// its value, a value that does not parse.
    pub fn parse(text: &str, file: &Path) -> Result<RuleSet, RulesError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |what: String| RulesError::Line { file: file.to_path_buf(), line, what };
            let content = raw.split('#').next().unwrap_or("");
            let text = content.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut tokens = content.split_whitespace();
            let Some(first) = tokens.next() else { continue };
            let action = match first.to_ascii_lowercase().as_str() {
                "mirror" => Action::Mirror,
                "divert" => Action::Divert,
                _ => {
                    return Err(err(format!(
                        "expected \"mirror\" or \"divert\" first, found {:?}",
                        station::config::excerpt(first)
                    )))
                }
            };
            let mut selectors = Vec::new();
            while let Some(word) = tokens.next() {
                let kind = word.to_ascii_lowercase();
                if !matches!(kind.as_str(), "net" | "port" | "proto" | "container") {
                    return Err(err(format!(
                        "unknown selector {:?}: expected net, port, proto or container",
                        station::config::excerpt(word)
                    )));
                }
                let Some(value) = tokens.next() else {
                    let what = match kind.as_str() {
                        "net" => "an address prefix (10.0.0.0/8, 2001:db8::/32)",
                        "port" => "a port number (0..=65535)",
                        "proto" => "tcp, udp, icmp, sctp or a protocol number (0..=255)",
                        _ => "a container name or id",
                    };
                    return Err(err(format!("{kind:?} needs a value: {what}")));
                };
                selectors.push(match kind.as_str() {
                    "net" => Selector::Net(Cidr::parse(value).map_err(err)?),
                    "port" => Selector::Port(
                        value.parse::<u16>().ok().filter(|_| !value.starts_with('+')).ok_or_else(|| {
                            err(format!(
                                "port {:?}: expected a port number from 0 to 65535",
                                station::config::excerpt(value)
                            ))
                        })?,
                    ),
                    "proto" => {
                        let (v4, v6) = proto_of(value).ok_or_else(|| {
                            err(format!(
                                "proto {:?}: expected tcp, udp, icmp, sctp or a protocol number from 0 to 255",
                                station::config::excerpt(value)
                            ))
                        })?;
                        Selector::Proto(v4, v6)
                    }
                    _ => Selector::Container(value.to_owned()),
                });
            }
            rules.push(Rule { action, selectors, line, text });
        }
        let needs_containers = rules.iter().any(|r| r.selectors.iter().any(|s| matches!(s, Selector::Container(_))));
        Ok(RuleSet { rules, generation: 0, needs_containers })
    }

    /// The action of the first rule that matches the flow of packet `s`, or
    /// `None` (the flow passes). `ends` gives the containers of both ends;
    /// it is called at most once, and only when a `container` selector is
    /// reached.
    pub fn decide(&self, s: &PacketSummary, ends: impl FnOnce() -> [ContainerRef; 2]) -> Option<Action> {
        self.decide_rule(s, ends).map(|(_, a)| a)
    }

    /// As [`RuleSet::decide`], with the index of the deciding rule (0-based, in file order).
    pub fn decide_rule(&self, s: &PacketSummary, ends: impl FnOnce() -> [ContainerRef; 2]) -> Option<(usize, Action)> {
        let mut ends = Some(ends);
        let mut known: Option<[ContainerRef; 2]> = None;
        'rules: for (index, rule) in self.rules.iter().enumerate() {
            for sel in &rule.selectors {
                let ok = match sel {
                    Selector::Net(c) => c.contains(s.ip_version, &s.src) || c.contains(s.ip_version, &s.dst),
                    Selector::Port(p) => s.src_port == *p || s.dst_port == *p,
                    Selector::Proto(v4, v6) => s.proto == if s.ip_version == 6 { *v6 } else { *v4 },
                    Selector::Container(want) => {
                        if known.is_none() {
                            known = Some(ends.take().map(|f| f()).unwrap_or_default());
                        }
                        known.as_ref().is_some_and(|k| k.iter().any(|c| container_is(c, want)))
                    }
                };
                if !ok {
                    continue 'rules;
                }
            }
            return Some((index, rule.action));
        }
        None
    }

    /// The listing of `divert-rules`: `# generation G of FILE`, then one line
    /// per rule, `rule<n> line <L> <text>` (rules past the 64th share the
    /// `other` slot and say so).
    pub fn listing(&self, file: &Path) -> String {
        let mut out = format!("# generation {} of {}\n", self.generation, file.display());
        for (i, r) in self.rules.iter().enumerate() {
            let slot = station::naming::divert_slot_name(i);
            out.push_str(&format!("{slot} line {} {}\n", r.line, r.text));
        }
        out
    }

    /// Whether some rule has a `container` selector.
    pub fn needs_containers(&self) -> bool {
        self.needs_containers
    }
}

fn container_is(c: &ContainerRef, want: &str) -> bool {
    let (name, id) = (c.name_str(), c.id_str());
    if !name.is_empty() && name == want {
        return true;
    }
    !id.is_empty() && want.len() >= MIN_ID_PREFIX && (id.starts_with(want) || want.starts_with(id))
}

/// Reads a rules file: opened and checked by
/// [`station::config::open_operator_file`] (non-blocking, `fstat`ed first: a
/// regular file owned by root or this process's user that no one else may
/// write; a link another user owns is not followed) and read only then, at
/// most [`MAX_RULES_BYTES`].
///
/// # Errors
/// It is refused by that check, cannot be read, or is larger.
pub fn read_rules_file(path: &Path) -> Result<Vec<u8>, RulesError> {
    let err = |what: String| RulesError::File { file: path.to_path_buf(), what };
    let (file, meta) = station::config::open_operator_file(path).map_err(|e| {
        err(match e {
            station::config::ConfFileError::Open { source, .. } => format!("cannot open the rules file: {source}"),
            station::config::ConfFileError::Read { source, .. } => format!("cannot stat the rules file: {source}"),
            station::config::ConfFileError::NotRegular { .. } => "not a regular file: name a file of rules".into(),
            e => format!("refused, never read: {e}"),
        })
    })?;
    if meta.len() > MAX_RULES_BYTES {
        return Err(err(format!("{} bytes: a rules file may have at most {MAX_RULES_BYTES}", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_RULES_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read the rules file: {e}")))?;
    if bytes.len() as u64 > MAX_RULES_BYTES {
        return Err(err(format!("more than {MAX_RULES_BYTES} bytes: a rules file may have at most that")));
    }
    Ok(bytes)
}

/// The rule set every worker reads, replaced whole by the reloader.
#[derive(Clone)]
pub struct SharedRules(Arc<ArcSwap<RuleSet>>);

impl SharedRules {
    /// A cell holding `set`.
    pub fn new(set: RuleSet) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(set)))
    }

    /// The rule set in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.0.load_full()
    }

    /// Replaces the rule set (the workers take it at their next batch).
    pub fn publish(&self, set: RuleSet) {
        self.0.store(Arc::new(set));
    }
}

impl PartialEq for SharedRules {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SharedRules {}

impl std::fmt::Debug for SharedRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cur = self.0.load();
        write!(f, "SharedRules(generation {}, {} rules)", cur.generation, cur.rules.len())
    }
}

/// Reads the rules file and publishes each new version that parses.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    cell: SharedRules,
    /// The bytes last taken (parsed or not): unchanged bytes are not parsed again.
    last: Option<Vec<u8>>,
    /// Changed bytes read once and not taken yet: taken when the next read
    /// gives the same (a file being written in place is not read half done).
    pending: Option<Vec<u8>>,
    /// The problem last logged (logged once until it changes).
    last_problem: Option<String>,
    /// Where each published rule set is listed (`divert-rules`), if anywhere.
    listing: Option<PathBuf>,
}

impl Reloader {
    /// A reloader of `path` into `cell`; `loaded` are the bytes `cell`'s rules came from.
    pub fn new(path: &Path, cell: SharedRules, loaded: Option<Vec<u8>>) -> Self {
        Self { path: path.to_path_buf(), cell, last: loaded, pending: None, last_problem: None, listing: None }
    }

    /// Lists every rule set it publishes in `file` (see [`write_listing`]).
    pub fn listing_to(mut self, file: PathBuf) -> Self {
        self.listing = Some(file);
        self
    }

    /// Looks at the file once; returns the line to log when something happened.
    /// Changed bytes are taken (parsed, then published or refused) only when
    /// two polls in a row read them: a file caught while written in place (a
    /// shell's `>` truncates first, an editor may write in pieces) is neither
    /// published half done nor refused for a cut line.
    pub fn poll(&mut self) -> Option<String> {
        let cur = self.cell.current();
        let keeping = format!("keeping the {} rule(s) of generation {}", cur.rules.len(), cur.generation);
        let bytes = match read_rules_file(&self.path) {
            Ok(b) => b,
            Err(e) => {
                let line = format!("CJ_DIVERT_RULES: {e}; {keeping}");
                // A file that comes back with the same bytes is taken again.
                self.last = None;
                self.pending = None;
                return self.problem(line);
            }
        };
        if self.last.as_deref() == Some(&bytes[..]) {
            self.pending = None;
            return None;
        }
        if self.pending.as_deref() != Some(&bytes[..]) {
            // Changed since the last poll: maybe still being written.
            self.pending = Some(bytes);
            return None;
        }
        self.pending = None;
        let parsed = RuleSet::parse(&String::from_utf8_lossy(&bytes), &self.path);
        self.last = Some(bytes);
        match parsed {
            Ok(mut set) => {
                set.generation = cur.generation + 1;
                let line = format!(
                    "divert rules reloaded from {}: {} rule(s), generation {} (flows already seen keep their verdict)",
                    self.path.display(),
                    set.rules.len(),
                    set.generation
                );
                let listed = self.listing.as_deref().and_then(|l| write_listing(l, &set, &self.path).err());
                self.cell.publish(set);
                self.last_problem = None;
                Some(match listed {
                    Some(e) => format!("{line}; {e}"),
                    None => line,
                })
            }
            Err(e) => self.problem(format!("CJ_DIVERT_RULES: {e}; {keeping}")),
        }
    }

    fn problem(&mut self, line: String) -> Option<String> {
        if self.last_problem.as_deref() == Some(&line[..]) {
            return None;
        }
        self.last_problem = Some(line.clone());
        Some(line)
    }
}

/// Replaces `file` (`divert-rules`) with the listing of `set`, read from
/// `source`, atomically (mode `shmq::FILE_MODE`; the cluster directory is created and
/// checked as for the pages).
///
/// # Errors
/// One line naming the file and the cause; the rules stay in force.
pub fn write_listing(file: &Path, set: &RuleSet, source: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot write the rules listing {}: {e}", file.display());
    if let Some(dir) = file.parent() {
        shmq::files::prepare_dir(dir).map_err(|e| fail(&e))?;
    }
    shmq::files::write_atomic(file, set.listing(source).as_bytes(), shmq::FILE_MODE).map_err(|e| fail(&e))
}

/// Reads at start before the detector gives up on a rules file that keeps changing.
const START_READS: usize = 25;

/// The rules file's bytes at start, by the reloader's rule: taken once two
/// reads in a row (`pause` apart) agree, so a file caught while it is
/// written in place (emptied by a shell's `>`, or half written) is neither
/// taken as the first rule set (flows that start then would keep that
/// set's verdicts for life) nor refused for a cut line. `read` reads the
/// file, `pause` waits between reads (one [`RELOAD_POLL`]).
///
/// # Errors
/// A read fails, or [`START_READS`] reads found the file different each time.
fn read_settled(
    path: &Path,
    mut read: impl FnMut() -> Result<Vec<u8>, RulesError>,
    mut pause: impl FnMut(),
) -> Result<Vec<u8>, RulesError> {
    let mut last = read()?;
    for _ in 1..START_READS {
        pause();
        let now = read()?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    Err(RulesError::File {
        file: path.to_path_buf(),
        what: format!(
            "changed between every two of {START_READS} reads {} ms apart: write it elsewhere and rename it into place",
            RELOAD_POLL.as_millis()
        ),
    })
}

/// Loads the rules for `cfg` and starts their reloader: `None` when
/// `CJ_TUN=no`. With `CJ_TUN=yes` and no `CJ_DIVERT_RULES`, an empty rule
/// set that never changes.
///
/// # Errors
/// The rules file cannot be read or does not parse (one line naming file
/// and line), or the reloader thread cannot start.
pub fn start(cfg: &StationConfig) -> Result<Option<SharedRules>, RulesError> {
    if !cfg.tun {
        if let Some(p) = &cfg.divert_rules {
            station::cj_warn!("cj-detector: CJ_DIVERT_RULES={} is set but CJ_TUN=no: no flow is diverted", p.display());
        }
        return Ok(None);
    }
    let first = format!("tun{}", cfg.tun_offset + cfg.queue_offset);
    let Some(path) = &cfg.divert_rules else {
        station::cj_warn!("cj-detector: flow divert on ({first}...) but CJ_DIVERT_RULES is empty: nothing is diverted");
        return Ok(Some(SharedRules::new(RuleSet::default())));
    };
    let bytes = read_settled(path, || read_rules_file(path), || std::thread::sleep(RELOAD_POLL))?;
    let mut set = RuleSet::parse(&String::from_utf8_lossy(&bytes), path)?;
    set.generation = 1;
    let n = set.rules.len();
    let listing = station::naming::set_divert_rules_path(&cfg.cluster_dir(), cfg.queue_set);
    if let Err(e) = write_listing(&listing, &set, path) {
        station::cj_warn!("cj-detector: {e} (the per-rule counters are kept all the same)");
    }
    let cell = SharedRules::new(set);
    let mut reloader = Reloader::new(path, cell.clone(), Some(bytes)).listing_to(listing);
    std::thread::Builder::new()
        .name("cj-divert-rules".into())
        .spawn(move || loop {
            std::thread::sleep(RELOAD_POLL);
            if let Some(line) = reloader.poll() {
                station::cj_info!("cj-detector: {line}");
            }
        })
        .map_err(|e| RulesError::File {
            file: path.clone(),
            what: format!("cannot start thread cj-divert-rules: {e}"),
        })?;
    station::cj_info!(
        "cj-detector: flow divert on: {n} rule(s) from {} (generation 1, re-read every {} ms); worker q writes to tun<{}+q>",
        path.display(),
        RELOAD_POLL.as_millis(),
        cfg.tun_offset
    );
    Ok(Some(cell))
}

/// A worker's flow-divert totals, as its stats page names them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DivertCounters {
    /// Frames of `mirror` flows.
    pub mirrored_packets: u64,
    /// Their wire bytes.
    pub mirrored_bytes: u64,
    /// Frames of `divert` flows (not accounted in flows).
    pub diverted_packets: u64,
    /// Their wire bytes.
    pub diverted_bytes: u64,
    /// Mirrored or diverted frames not written to the tun device.
    pub tun_dropped_packets: u64,
    /// Their wire bytes.
    pub tun_dropped_bytes: u64,
    /// Generation of the rule set in use.
    pub rules_generation: u64,
    /// Verdicts of active flows dropped from the full verdict table.
    pub verdicts_evicted: u64,
}

/// A flow's verdict (0 pass, 1 mirror, 2 divert), when it was last seen, and
/// whether a TCP FIN or RST was seen.
#[derive(Clone, Copy, Debug)]
struct Verdict {
    action: u8,
    /// The deciding rule's slot on the divert page (0 when no rule decided).
    slot: u8,
    closing: bool,
    last_ns: u64,
}

fn code(a: Option<Action>) -> u8 {
    match a {
        None => 0,
        Some(Action::Mirror) => 1,
        Some(Action::Divert) => 2,
    }
}

fn action(code: u8) -> Option<Action> {
    match code {
        1 => Some(Action::Mirror),
        2 => Some(Action::Divert),
        _ => None,
    }
}

/// The flow-table key of a verdict: canonical flow key and capture source.
type VerdictKey = (FlowKey, u8);

/// A fragmented datagram (as the fragment table keys it) and its capture source.
type DatagramKey = (FragKey, u8);

/// The verdict a datagram's first fragment got, for its later fragments.
#[derive(Clone, Copy, Debug)]
struct DatagramVerdict {
    action: u8,
    slot: u8,
    last_ns: u64,
}

/// Datagram verdicts reserved at start (the table grows to [`FRAGMENT_TABLE_LIMIT`]).
const INITIAL_DATAGRAMS: usize = 256;

/// Where written packets go.
#[derive(Debug)]
enum Out {
    Tun(Tun),
    /// Tests: every packet written, and whether the next write fails.
    #[cfg(test)]
    Memory(Vec<Vec<u8>>, Option<WriteFailure>),
}

/// Slots of the per-rule page: one per rule up to [`naming::DIVERT_RULE_SLOTS`], then `other`.
const SLOTS: usize = naming::DIVERT_RULE_SLOTS + 1;
/// Counters per slot ([`naming::DIVERT_SLOT_COUNTERS`]).
const PER_SLOT: usize = 6;

/// The per-rule counters and the page they are written to.
#[derive(Debug)]
struct PerRule {
    /// This run's counts, per slot, in [`naming::DIVERT_SLOT_COUNTERS`] order.
    counts: [[u64; PER_SLOT]; SLOTS],
    /// Slots below this one have been counted in (the others are not rewritten).
    used: usize,
    page: Option<CounterPage>,
    /// The page's values at start (totals continue across restarts).
    base: Vec<u64>,
}

impl PerRule {
    fn new(page: Option<CounterPage>) -> Self {
        let base = match &page {
            Some(p) => (0..SLOTS * PER_SLOT).map(|i| p.get(i)).collect(),
            None => Vec::new(),
        };
        PerRule { counts: [[0; PER_SLOT]; SLOTS], used: 0, page, base }
    }

    #[inline]
    fn count(&mut self, slot: u8, action: Action, bytes: u64, dropped: bool) {
        let slot = usize::from(slot).min(SLOTS - 1);
        let c = &mut self.counts[slot];
        let at = match action {
            Action::Mirror => 0,
            Action::Divert => 2,
        };
        c[at] += 1;
        c[at + 1] += bytes;
        if dropped {
            c[4] += 1;
            c[5] += bytes;
        }
        self.used = self.used.max(slot + 1);
    }

    fn write(&self) {
        let Some(page) = &self.page else { return };
        for (s, c) in self.counts.iter().enumerate().take(self.used) {
            for (k, v) in c.iter().enumerate() {
                let i = s * PER_SLOT + k;
                page.set(i, self.base[i] + v);
            }
        }
    }
}

/// The on-state of a worker's divert.
#[derive(Debug)]
struct On {
    out: Out,
    device: String,
    queue: u32,
    rules: Option<SharedRules>,
    set: Arc<RuleSet>,
    snapshot: Option<Arc<Snapshot>>,
    snapshot_generation: u64,
    verdicts: LruSlab<VerdictKey, Verdict, 1>,
    /// First fragments' verdicts, which their later fragments (no ports) take.
    datagrams: LruSlab<DatagramKey, DatagramVerdict, 1>,
    per_rule: PerRule,
    idle_ns: u64,
    error_log: Option<Instant>,
    errors_unlogged: u64,
    last_errno: i32,
    /// When the worker last tried to attach again to its deleted device.
    reattach_tried: Option<Instant>,
}

/// A worker's flow divert: off, or its tun device, rules and verdicts.
#[derive(Debug)]
pub struct Divert {
    on: Option<Box<On>>,
    counters: DivertCounters,
}

impl Divert {
    /// Flow divert off: every slot goes to the accounting.
    pub fn off() -> Self {
        Divert { on: None, counters: DivertCounters::default() }
    }

    /// The divert of worker `spec`: off unless it has a tun device, which is
    /// opened now (before the worker's start gate). `page`: its per-rule page
    /// ([`rule_page`]), opened by the caller.
    ///
    /// # Errors
    /// The tun device cannot be used ([`TunError`], one line).
    pub fn open(spec: &WorkerSpec, page: Option<CounterPage>) -> Result<Self, TunError> {
        let Some(device) = &spec.tun_device else { return Ok(Self::off()) };
        let tun = Tun::open(device)?;
        let mut d = Self::with_out(
            Out::Tun(tun),
            device,
            spec.queue,
            spec.divert_rules.clone(),
            spec.table.idle_ns,
            spec.table.limit,
        );
        if let Some(on) = d.on.as_deref_mut() {
            on.per_rule = PerRule::new(page);
        }
        Ok(d)
    }

    /// Writes the per-rule counters to the page (with the stats page: after every batch).
    pub fn write_rule_counters(&self) {
        if let Some(on) = self.on.as_deref() {
            on.per_rule.write();
        }
    }

    fn with_out(out: Out, device: &str, queue: u32, rules: Option<SharedRules>, idle_ns: u64, limit: u32) -> Self {
        let set = rules.as_ref().map(SharedRules::current).unwrap_or_default();
        let limit = (limit as usize).max(1);
        let counters = DivertCounters { rules_generation: set.generation, ..DivertCounters::default() };
        Divert {
            on: Some(Box::new(On {
                out,
                device: device.to_owned(),
                queue,
                rules,
                set,
                snapshot: None,
                snapshot_generation: 0,
                verdicts: LruSlab::new(limit, INITIAL_VERDICTS.min(limit)),
                datagrams: LruSlab::new(FRAGMENT_TABLE_LIMIT as usize, INITIAL_DATAGRAMS),
                per_rule: PerRule::new(None),
                idle_ns,
                error_log: None,
                errors_unlogged: 0,
                last_errno: 0,
                reattach_tried: None,
            })),
            counters,
        }
    }

    /// Totals so far.
    pub fn counters(&self) -> &DivertCounters {
        &self.counters
    }

    /// Once per batch: takes a newer rule set and inventory snapshot when
    /// published (one lock-free load each; `Arc`s cloned only on a change).
    #[inline]
    pub fn refresh(&mut self, inventory: Option<&SharedSnapshot>) {
        let Some(on) = self.on.as_deref_mut() else { return };
        if let Some(r) = &on.rules {
            let cur = r.0.load();
            if cur.generation != on.set.generation {
                on.set = inventory::arc_swap::Guard::into_inner(cur);
                self.counters.rules_generation = on.set.generation;
            }
        }
        if let Some(inv) = inventory {
            let snap = inv.load();
            if snap.generation != on.snapshot_generation {
                on.snapshot_generation = snap.generation;
                on.snapshot = Some(inventory::arc_swap::Guard::into_inner(snap));
            }
        }
    }

    /// One packet-queue slot: written to the tun device when its flow's
    /// verdict says so; given to the accounting unless it was diverted.
    #[inline]
    pub fn slot(&mut self, slot: &[u8], acct: &mut Accounting, sink: &mut impl RecordSink) {
        if self.on.is_none() {
            return acct.slot(slot, sink);
        }
        self.slot_on(slot, acct, sink);
    }

    /// [`Divert::slot`] with divert on. Out of line: inlined, its frame and
    /// saved registers were paid by every slot, divert on or off.
    #[inline(never)]
    fn slot_on(&mut self, slot: &[u8], acct: &mut Accounting, sink: &mut impl RecordSink) {
        let Some((meta, frame)) = read_packet(slot) else {
            // A corrupt slot: the accounting counts it as malformed.
            return acct.slot(slot, sink);
        };
        // One parse serves the verdict and the accounting.
        let s = wire::summarize_wire(frame, meta.wire_len);
        if self.packet(&meta, frame, &s) != Some(Action::Divert) {
            acct.frame(&meta, frame, &s, sink);
        }
    }

    /// The verdict of the frame's flow, acted on (written and counted).
    fn packet(&mut self, meta: &PacketMeta, frame: &[u8], s: &PacketSummary) -> Option<Action> {
        let on = self.on.as_deref_mut()?;
        if !s.is_ip() {
            return None;
        }
        let (slot, act) = on.verdict(s, Capture::of(meta), meta.ts_ns, &mut self.counters)?;
        let c = &mut self.counters;
        let bytes = u64::from(meta.wire_len);
        match act {
            Action::Mirror => {
                c.mirrored_packets += 1;
                c.mirrored_bytes += bytes;
            }
            Action::Divert => {
                c.diverted_packets += 1;
                c.diverted_bytes += bytes;
            }
        }
        let written = match ip_packet(frame, s) {
            Some(ip) => on.write(ip),
            None => false,
        };
        if !written {
            c.tun_dropped_packets += 1;
            c.tun_dropped_bytes += bytes;
        }
        on.per_rule.count(slot, act, bytes, !written);
        Some(act)
    }
}

impl On {
    /// The verdict of the packet's flow and the per-rule slot of the rule
    /// that decided it. A later fragment (no ports) takes the verdict its
    /// datagram's first fragment got, when that was seen within
    /// [`FRAGMENT_TIMEOUT_NS`]; alone, it is decided as a flow of its own.
    #[inline]
    fn verdict(&mut self, s: &PacketSummary, at: Capture, ts_ns: u64, c: &mut DivertCounters) -> Option<(u8, Action)> {
        match s.fragment {
            wire::Fragment::None => self.flow_verdict(s, at, ts_ns, c),
            wire::Fragment::Later => match self.datagram_verdict(s, at, ts_ns) {
                Some(v) => v,
                None => self.flow_verdict(s, at, ts_ns, c),
            },
            wire::Fragment::First => {
                let v = self.flow_verdict(s, at, ts_ns, c);
                self.remember_datagram(s, at, ts_ns, v);
                v
            }
        }
    }

    /// The verdict of a later fragment's datagram, if its first fragment was seen.
    #[cold]
    fn datagram_verdict(&mut self, s: &PacketSummary, at: Capture, ts_ns: u64) -> Option<Option<(u8, Action)>> {
        let key: DatagramKey = (FragKey::of(s), at.source);
        let i = self.datagrams.find(&key)?;
        let v = self.datagrams.get_mut(i);
        if ts_ns.saturating_sub(v.last_ns) > FRAGMENT_TIMEOUT_NS {
            self.datagrams.remove(i);
            return None;
        }
        v.last_ns = v.last_ns.max(ts_ns);
        let (a, slot) = (v.action, v.slot);
        self.datagrams.touch(i, 0);
        Some(action(a).map(|a| (slot, a)))
    }

    /// Keeps a first fragment's verdict for the later fragments of its datagram.
    #[cold]
    fn remember_datagram(&mut self, s: &PacketSummary, at: Capture, ts_ns: u64, v: Option<(u8, Action)>) {
        let key: DatagramKey = (FragKey::of(s), at.source);
        let verdict =
            DatagramVerdict { action: code(v.map(|(_, a)| a)), slot: v.map_or(0, |(s, _)| s), last_ns: ts_ns };
        let hash = self.datagrams.hash_of(&key);
        if let Some(i) = self.datagrams.find_hashed(hash, &key) {
            *self.datagrams.get_mut(i) = verdict;
            self.datagrams.touch(i, 0);
            return;
        }
        if self.datagrams.is_full() {
            if let Some(o) = self.datagrams.oldest(0) {
                self.datagrams.remove(o);
            }
        }
        self.datagrams.insert_hashed(hash, key, verdict, 0);
    }

    /// The flow's verdict: remembered, or decided now by the rules in force.
    #[inline]
    fn flow_verdict(
        &mut self,
        s: &PacketSummary,
        at: Capture,
        ts_ns: u64,
        c: &mut DivertCounters,
    ) -> Option<(u8, Action)> {
        let (key, _) = FlowKey::from_summary(s);
        let vk: VerdictKey = (key, at.source);
        let tcp = s.proto == ip_proto::TCP;
        let syn_only = tcp && s.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        let ends = tcp && s.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0;
        let hash = self.verdicts.hash_of(&vk);
        if let Some(i) = self.verdicts.find_hashed(hash, &vk) {
            let v = self.verdicts.get_mut(i);
            let over = ts_ns.saturating_sub(v.last_ns) > self.idle_ns || (v.closing && syn_only);
            if !over {
                v.last_ns = v.last_ns.max(ts_ns);
                v.closing |= ends;
                let (a, slot) = (v.action, v.slot);
                self.verdicts.touch(i, 0);
                return action(a).map(|a| (slot, a));
            }
            // The flow ended: this packet starts a new one.
            self.verdicts.remove(i);
        }
        let snap = self.snapshot.as_deref();
        let decided = self.set.decide_rule(s, || containers_of(snap, at, s));
        let slot = decided.map_or(0, |(i, _)| i.min(SLOTS - 1) as u8);
        let decided = decided.map(|(_, a)| (slot, a));
        if self.verdicts.is_full() {
            if let Some(o) = self.verdicts.oldest(0) {
                if ts_ns.saturating_sub(self.verdicts.get(o).last_ns) <= self.idle_ns {
                    c.verdicts_evicted += 1;
                }
                self.verdicts.remove(o);
            }
        }
        let verdict = Verdict { action: code(decided.map(|(_, a)| a)), slot, closing: ends, last_ns: ts_ns };
        self.verdicts.insert_hashed(hash, vk, verdict, 0);
        decided
    }

    /// Writes one IP packet; false when the device did not take it. A
    /// device deleted since it was attached (`EBADFD`) is attached again
    /// once it exists again (tried at most every [`REATTACH_EVERY`]), and
    /// the packet written to it.
    #[inline]
    fn write(&mut self, ip: &[u8]) -> bool {
        let mut r = self.send(ip);
        if r == Err(WriteFailure::Error(libc::EBADFD)) && self.reattach() {
            r = self.send(ip);
        }
        match r {
            Ok(()) => true,
            Err(WriteFailure::Full) => false,
            Err(WriteFailure::Error(errno)) => {
                self.refused(errno);
                false
            }
        }
    }

    /// One write to the device (or, in tests, to memory).
    #[inline]
    fn send(&mut self, ip: &[u8]) -> Result<(), WriteFailure> {
        match &mut self.out {
            Out::Tun(t) => t.write(ip),
            #[cfg(test)]
            Out::Memory(v, fail) => match fail.take() {
                Some(f) => Err(f),
                None => {
                    v.push(ip.to_vec());
                    Ok(())
                }
            },
        }
    }

    /// The device this worker attached to was deleted (its descriptor says
    /// `EBADFD` for good): attaches to the device of that name if one exists
    /// again. True when it did.
    #[cold]
    fn reattach(&mut self) -> bool {
        if !matches!(self.out, Out::Tun(_)) {
            return false;
        }
        let now = Instant::now();
        if self.reattach_tried.is_some_and(|t| now.duration_since(t) < REATTACH_EVERY) {
            return false;
        }
        self.reattach_tried = Some(now);
        match Tun::open(&self.device) {
            Ok(tun) => {
                self.out = Out::Tun(tun);
                station::cj_info!(
                    "(Core {}) tun device {} was deleted and exists again: attached to it again (what it \
                     refused meanwhile is in tun_dropped)",
                    self.queue,
                    self.device
                );
                true
            }
            Err(_) => false,
        }
    }

    #[cold]
    fn refused(&mut self, errno: i32) {
        self.errors_unlogged += 1;
        self.last_errno = errno;
        let now = Instant::now();
        if self.error_log.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return;
        }
        self.error_log = Some(now);
        let hint = if self.last_errno == libc::EIO {
            format!(" (the device is down: `ip link set {} up`)", self.device)
        } else if self.last_errno == libc::EBADFD {
            format!(
                " (the device was deleted: create it again with `ip tuntap add dev {0} mode tun && ip link set {0} up`; \
                 the worker attaches to it again)",
                self.device
            )
        } else {
            String::new()
        };
        station::cj_warn!(
            "(Core {}) tun device {} refused {} packet(s) ({}){hint}: counted in tun_dropped",
            self.queue,
            self.device,
            self.errors_unlogged,
            std::io::Error::from_raw_os_error(self.last_errno)
        );
        self.errors_unlogged = 0;
    }
}

/// Opens or creates the per-rule page of worker `spec` (`divert-<q>`), as
/// the stats pages are: `None` when flow divert is off.
///
/// # Errors
/// The page cannot be created or has another layout ([`QueueError`]).
pub fn rule_page(spec: &WorkerSpec) -> Result<Option<CounterPage>, (PathBuf, QueueError)> {
    if spec.tun_device.is_none() {
        return Ok(None);
    }
    let path = naming::set_divert_page_path(&spec.cluster_dir, spec.queue_set, spec.queue);
    let names = naming::divert_rule_counters();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    match CounterPage::open_or_create(&path, &names) {
        Ok(p) => Ok(Some(p)),
        Err(e) => Err((path, e)),
    }
}

/// Both ends' containers of the packet's flow, as the flow table attributes them.
fn containers_of(snap: Option<&Snapshot>, at: Capture, s: &PacketSummary) -> [ContainerRef; 2] {
    let Some(snap) = snap else { return Default::default() };
    let ips =
        station::record::ip_from_bytes(s.ip_version, &s.src).zip(station::record::ip_from_bytes(s.ip_version, &s.dst));
    let (a, b) = crate::flow_table::attribute(snap, at, &s.src_mac, &s.dst_mac, ips);
    [crate::flow_table::unpack(snap, a), crate::flow_table::unpack(snap, b)]
}

/// The IP packet inside an Ethernet frame whose summary is `s` (VLAN tags,
/// MPLS labels or a PPPoE header skipped as the summary skipped them:
/// [`wire::ip_offset`]), without Ethernet padding; `None`
/// when the frame was cut before its end.
#[inline]
pub fn ip_packet<'a>(frame: &'a [u8], s: &PacketSummary) -> Option<&'a [u8]> {
    let off = wire::ip_offset(frame)?;
    frame.get(off..off.checked_add(s.ip_len as usize)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write as _;

    use station::slot::{write_packet, PacketMeta};

    use super::*;
    use crate::flow_table::TableConfig;

    const S: u64 = 1_000_000_000;

    fn parse(text: &str) -> Result<RuleSet, String> {
        RuleSet::parse(text, Path::new("rules.conf")).map_err(|e| e.to_string())
    }

    /// An Ethernet frame with `vlans` tags carrying IPv4 `proto` from a:ap to b:bp,
    /// `payload` bytes after the transport header, padded to 60 bytes.
    #[allow(clippy::too_many_arguments)]
    fn frame(vlans: &[u16], a: [u8; 4], ap: u16, b: [u8; 4], bp: u16, proto: u8, flags: u8, payload: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, b[3], 2, 0, 0, 0, 0, a[3]];
        for v in vlans {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let l4 = match proto {
            6 => 20,
            17 => 8,
            _ => 8,
        };
        let total = (20 + l4 + payload) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 1, 0, 0, 64, proto, 0, 0]);
        f.extend_from_slice(&a);
        f.extend_from_slice(&b);
        match proto {
            6 => {
                f.extend_from_slice(&ap.to_be_bytes());
                f.extend_from_slice(&bp.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
            }
            17 => {
                f.extend_from_slice(&ap.to_be_bytes());
                f.extend_from_slice(&bp.to_be_bytes());
                f.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
            _ => f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]),
        }
        f.extend(std::iter::repeat_n(0xab, payload));
        while f.len() < 60 {
            f.push(0);
        }
        f
    }

    fn slot_of(f: &[u8], ts_ns: u64) -> Vec<u8> {
        let mut slot = vec![0u8; 2048];
        let meta = PacketMeta { ts_ns, wire_len: f.len() as u32, cap_len: 0, source: 0, flags: 0 };
        let n = write_packet(&mut slot, meta, f);
        slot.truncate(n);
        slot
    }

    fn memory_divert(rules: &SharedRules, limit: u32) -> Divert {
        Divert::with_out(Out::Memory(Vec::new(), None), "tun-test", 0, Some(rules.clone()), 30 * S, limit)
    }

    fn written(d: &Divert) -> &Vec<Vec<u8>> {
        match &d.on.as_ref().expect("on").out {
            Out::Memory(v, _) => v,
            Out::Tun(_) => unreachable!(),
        }
    }

    fn accounting() -> Accounting {
        Accounting::new(TableConfig {
            idle_ns: 30 * S,
            active_ns: 300 * S,
            close_ns: 5 * S,
            refresh_ns: 0,
            limit: 1024,
            queue: 0,
        })
    }

    #[test]
    fn rules_parse_with_comments_blank_lines_and_every_selector() {
        let set = parse(
            "# divert the web\n\ndivert net 10.1.0.0/16 port 443 proto tcp  # https\n\
             mirror proto icmp\nmirror container web net 2001:db8::/32\ndivert\n",
        )
        .unwrap();
        assert_eq!(set.rules.len(), 4);
        assert_eq!(set.rules[0].line, 3);
        assert_eq!(set.rules[0].action, Action::Divert);
        assert_eq!(set.rules[0].selectors.len(), 3);
        assert_eq!(set.rules[1].selectors, vec![Selector::Proto(1, 58)]);
        assert_eq!(set.rules[3].selectors, vec![]);
        assert!(set.needs_containers());
        assert!(parse("").unwrap().rules.is_empty());
    }

    #[test]
    fn an_error_quotes_only_a_short_piece_of_the_line() {
        let secret = "root:$6$SECRETHASH$abcdefghijklmnopqrstuvwxyz0123456789:19000:0:99999:7:::";
        for text in [secret.to_owned(), format!("divert {secret}"), format!("divert net {secret}")] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(!e.contains("0123456789") && e.contains("...\""), "{e}");
        }
    }

    #[test]
    fn a_rules_file_others_may_write_is_refused_unread() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("rules.conf");
        std::fs::write(&f, "divert proto udp\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_rules_file(&f).unwrap(), b"divert proto udp\n");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = read_rules_file(&f).unwrap_err().to_string();
        assert!(e.contains("refused, never read") && e.contains("chmod go-w"), "{e}");
    }

    #[test]
    fn a_bad_line_is_one_error_naming_file_and_line() {
        let cases = [
            ("mirror\nredirect port 80\n", "rules.conf:2: expected \"mirror\" or \"divert\" first, found \"redirect\""),
            (
                "\n\ndivert prot tcp",
                "rules.conf:3: unknown selector \"prot\": expected net, port, proto or container",
            ),
            ("divert port", "rules.conf:1: \"port\" needs a value: a port number (0..=65535)"),
            ("divert port 65536", "rules.conf:1: port \"65536\": expected a port number from 0 to 65535"),
            ("divert port -1", "rules.conf:1: port \"-1\": expected a port number from 0 to 65535"),
            (
                "divert proto gre",
                "rules.conf:1: proto \"gre\": expected tcp, udp, icmp, sctp or a protocol number from 0 to 255",
            ),
            (
                "# c\nmirror net 10.0.0.0/33",
                "rules.conf:2: \"10.0.0.0/33\" is not an address prefix (ADDRESS or ADDRESS/LENGTH, IPv4 up to /32, IPv6 up to /128)",
            ),
            ("mirror net 10.0.0.1/8", "rules.conf:1: \"10.0.0.1/8\" has address bits set past /8 (the prefix is 10.0.0.0/8)"),
            ("mirror net", "rules.conf:1: \"net\" needs a value: an address prefix (10.0.0.0/8, 2001:db8::/32)"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn prefixes_match_by_their_length_and_version() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        let v4 = |a: [u8; 4]| {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&a);
            x
        };
        assert!(c.contains(4, &v4([10, 1, 200, 3])));
        assert!(!c.contains(4, &v4([10, 2, 0, 1])));
        assert!(!c.contains(6, &v4([10, 1, 0, 1])), "another version never matches");
        let c = Cidr::parse("10.1.2.128/25").unwrap();
        assert!(c.contains(4, &v4([10, 1, 2, 200])));
        assert!(!c.contains(4, &v4([10, 1, 2, 127])));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(4, &v4([1, 2, 3, 4])));
        let host = Cidr::parse("192.0.2.7").unwrap();
        assert!(host.contains(4, &v4([192, 0, 2, 7])) && !host.contains(4, &v4([192, 0, 2, 8])));
        let c6 = Cidr::parse("2001:db8::/32").unwrap();
        let a: std::net::Ipv6Addr = "2001:db8:5::1".parse().unwrap();
        assert!(c6.contains(6, &a.octets()));
    }

    #[test]
    fn the_first_matching_rule_decides_and_every_selector_must_match() {
        let set = parse("mirror port 53 proto udp\ndivert net 10.9.0.0/16\nmirror proto icmp\n").unwrap();
        let none = || [ContainerRef::default(), ContainerRef::default()];
        let sum = |f: &[u8]| wire::summarize(f);
        let dns = sum(&frame(&[], [10, 9, 0, 1], 5000, [10, 0, 0, 2], 53, 17, 0, 20));
        assert_eq!(set.decide(&dns, none), Some(Action::Mirror), "rule 1 before rule 2");
        let dns_tcp = sum(&frame(&[], [10, 9, 0, 1], 5000, [10, 0, 0, 2], 53, 6, 0x02, 0));
        assert_eq!(set.decide(&dns_tcp, none), Some(Action::Divert), "port 53 but not udp: rule 2 (net, either end)");
        let back = sum(&frame(&[], [10, 0, 0, 2], 53, [10, 9, 3, 3], 5000, 6, 0x12, 0));
        assert_eq!(set.decide(&back, none), Some(Action::Divert), "the prefix matches the destination too");
        let ping = sum(&frame(&[], [1, 1, 1, 1], 0, [2, 2, 2, 2], 0, 1, 0, 10));
        assert_eq!(set.decide(&ping, none), Some(Action::Mirror));
        let other = sum(&frame(&[], [1, 1, 1, 1], 80, [2, 2, 2, 2], 1234, 6, 0x02, 0));
        assert_eq!(set.decide(&other, none), None);
    }

    #[test]
    fn a_container_selector_matches_either_end_by_name_or_id_prefix() {
        let set = parse("divert container web\nmirror container 3f4e5d\n").unwrap();
        let s = wire::summarize(&frame(&[], [10, 0, 0, 1], 1000, [10, 0, 0, 2], 80, 6, 0x02, 0));
        let named = |name: &str, id: &str| ContainerRef {
            name: station::record::fixed_text(name),
            id: station::record::fixed_text(id),
            ..ContainerRef::default()
        };
        let mut asked = 0;
        let got = set.decide(&s, || {
            asked += 1;
            [ContainerRef::default(), named("web", "0123456789ab")]
        });
        assert_eq!((got, asked), (Some(Action::Divert), 1), "the ends are looked up once");
        assert_eq!(set.decide(&s, || [named("db", "3f4e5d6c7b8a"), ContainerRef::default()]), Some(Action::Mirror));
        assert_eq!(set.decide(&s, || [named("webby", "999999999999"), ContainerRef::default()]), None);
        let short = parse("divert container 3f4").unwrap();
        assert_eq!(
            short.decide(&s, || [named("db", "3f4e5d6c7b8a"), ContainerRef::default()]),
            None,
            "too short an id prefix"
        );
        let no_containers = parse("divert port 80").unwrap();
        assert_eq!(no_containers.decide(&s, || unreachable!("no container selector: no lookup")), Some(Action::Divert));
    }

    #[test]
    fn the_ip_packet_is_written_without_ethernet_header_tags_or_padding() {
        for vlans in [&[][..], &[100][..], &[100, 200][..]] {
            let f = frame(vlans, [10, 0, 0, 1], 1000, [10, 0, 0, 2], 53, 17, 0, 4);
            let s = wire::summarize(&f);
            let ip = ip_packet(&f, &s).unwrap();
            assert_eq!(ip.len(), 20 + 8 + 4, "the IP total length, no padding ({vlans:?})");
            assert_eq!(ip[0], 0x45);
            assert_eq!(&ip[12..16], &[10, 0, 0, 1]);
        }
        let f = frame(&[], [10, 0, 0, 1], 1000, [10, 0, 0, 2], 53, 17, 0, 200);
        let s = wire::summarize_wire(&f[..100], f.len() as u32);
        assert_eq!(ip_packet(&f[..100], &s), None, "a frame cut to the slot is not written");
    }

    #[test]
    fn diverted_packets_skip_the_accounting_mirrored_ones_do_not() {
        let rules =
            SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53\nmirror proto icmp\n").unwrap() });
        let mut d = memory_divert(&rules, 1024);
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        let frames = [
            frame(&[7], [10, 0, 0, 1], 5000, [10, 0, 0, 2], 53, 17, 0, 30),
            frame(&[], [10, 0, 0, 2], 53, [10, 0, 0, 1], 5000, 17, 0, 60),
            frame(&[], [10, 0, 0, 1], 0, [10, 0, 0, 3], 0, 1, 0, 10),
            frame(&[], [10, 0, 0, 1], 4000, [10, 0, 0, 3], 80, 6, 0x02, 0),
        ];
        for (i, f) in frames.iter().enumerate() {
            d.slot(&slot_of(f, i as u64 * S), &mut acct, &mut sink);
        }
        let c = *d.counters();
        assert_eq!((c.diverted_packets, c.mirrored_packets, c.tun_dropped_packets), (2, 1, 0));
        assert_eq!(c.diverted_bytes, (frames[0].len() + frames[1].len()) as u64);
        assert_eq!(acct.counters().packets, 2, "the mirrored ICMP and the passed TCP packet are accounted");
        assert_eq!(acct.counters().packets + c.diverted_packets, frames.len() as u64, "every slot once");
        let w = written(&d);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].len(), 20 + 8 + 30, "the VLAN-tagged frame's IP packet");
        assert_eq!(c.rules_generation, 1);
    }

    #[test]
    fn flows_keep_their_verdict_across_a_reload_and_new_flows_get_the_new_rules() {
        let rules = SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53").unwrap() });
        let mut d = memory_divert(&rules, 1024);
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        let old_dns = frame(&[], [10, 0, 0, 1], 5000, [10, 0, 0, 2], 53, 17, 0, 10);
        let old_web = frame(&[], [10, 0, 0, 1], 4000, [10, 0, 0, 2], 80, 6, 0x02, 0);
        d.refresh(None);
        d.slot(&slot_of(&old_dns, 0), &mut acct, &mut sink);
        d.slot(&slot_of(&old_web, 0), &mut acct, &mut sink);
        rules.publish(RuleSet { generation: 2, ..parse("divert port 80").unwrap() });
        d.refresh(None);
        assert_eq!(d.counters().rules_generation, 2);
        let new_dns = frame(&[], [10, 0, 0, 1], 5001, [10, 0, 0, 2], 53, 17, 0, 10);
        let new_web = frame(&[], [10, 0, 0, 1], 4001, [10, 0, 0, 2], 80, 6, 0x02, 0);
        for f in [&old_dns, &old_web, &new_dns, &new_web] {
            d.slot(&slot_of(f, S), &mut acct, &mut sink);
        }
        // Diverted: old dns twice (its verdict kept), new web once; not: old web, new dns.
        assert_eq!(d.counters().diverted_packets, 3);
        assert_eq!(acct.counters().packets, 3);
        // After the idle timeout the old dns flow has ended: its next packet is a new flow.
        d.slot(&slot_of(&old_dns, 40 * S), &mut acct, &mut sink);
        assert_eq!(d.counters().diverted_packets, 3);
        // A TCP flow that closed (RST) and opens again with a SYN is decided again too.
        let rst = frame(&[], [10, 0, 0, 1], 4000, [10, 0, 0, 2], 80, 6, 0x04, 0);
        d.slot(&slot_of(&rst, 41 * S), &mut acct, &mut sink);
        let before = d.counters().diverted_packets;
        d.slot(&slot_of(&old_web, 42 * S), &mut acct, &mut sink);
        assert_eq!(d.counters().diverted_packets, before + 1, "the reopened port-80 flow follows rules 2");
    }

    /// `f` (untagged IPv4) made a fragment of datagram `id`: the first (MF) or a later one.
    fn fragment(mut f: Vec<u8>, id: u16, first: bool) -> Vec<u8> {
        f[18..20].copy_from_slice(&id.to_be_bytes());
        f[20..22].copy_from_slice(&(if first { 0x2000u16 } else { 13 }).to_be_bytes());
        f
    }

    #[test]
    fn later_fragments_follow_the_verdict_of_their_datagrams_first_fragment() {
        let rules = SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53\nmirror port 80\n").unwrap() });
        let mut d = memory_divert(&rules, 1024);
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        let dns = |first| fragment(frame(&[], [10, 0, 0, 2], 53, [10, 0, 0, 1], 5000, 17, 0, 100), 7, first);
        let web = |first| fragment(frame(&[], [10, 0, 0, 2], 80, [10, 0, 0, 1], 5000, 17, 0, 100), 8, first);
        assert_eq!(wire::summarize(&dns(false)).fragment, wire::Fragment::Later);
        assert_eq!((wire::summarize(&dns(false)).src_port, wire::summarize(&dns(true)).src_port), (0, 53));
        for (i, f) in [dns(true), dns(false), web(true), web(false), web(false)].iter().enumerate() {
            d.slot(&slot_of(f, i as u64 * S), &mut acct, &mut sink);
        }
        let c = *d.counters();
        assert_eq!(
            (c.diverted_packets, c.mirrored_packets),
            (2, 3),
            "the DNS datagram's later fragment is diverted with its first, the web one's mirrored"
        );
        assert_eq!(acct.counters().packets, 3, "only the mirrored datagram is accounted");
        assert_eq!(written(&d).len(), 5);
        // A later fragment whose first was never seen is decided alone (ports 0: neither rule).
        d.slot(
            &slot_of(&fragment(frame(&[], [10, 0, 0, 2], 53, [10, 0, 0, 1], 5000, 17, 0, 100), 9, false), 9 * S),
            &mut acct,
            &mut sink,
        );
        assert_eq!((d.counters().diverted_packets, d.counters().mirrored_packets), (2, 3));
        // A datagram id seen again after the fragment timeout is another datagram.
        d.slot(&slot_of(&dns(false), 100 * S), &mut acct, &mut sink);
        assert_eq!(d.counters().diverted_packets, 2, "the old verdict has expired");
    }

    /// An IPv6 fragment (Fragment header, then UDP 53 -> 5000 in the first) of datagram `id`.
    fn fragment6(id: u32, first: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        let body: Vec<u8> = if first {
            let mut u = vec![0, 53, 0x13, 0x88, 0, 108, 0, 0];
            u.resize(8 + 96, 0);
            u
        } else {
            vec![0; 40]
        };
        let plen = (8 + body.len()) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[44, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
        let off_flags: u16 = if first { 1 } else { 13 << 3 };
        f.extend_from_slice(&[17, 0]);
        f.extend_from_slice(&off_flags.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&body);
        f
    }

    #[test]
    fn later_ipv6_fragments_follow_their_first_fragment_too() {
        let rules = SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53").unwrap() });
        let mut d = memory_divert(&rules, 1024);
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        let (first, later) = (wire::summarize(&fragment6(7, true)), wire::summarize(&fragment6(7, false)));
        assert_eq!(
            (first.fragment, first.src_port, later.fragment, later.src_port),
            (wire::Fragment::First, 53, wire::Fragment::Later, 0)
        );
        for (i, f) in [fragment6(7, true), fragment6(7, false), fragment6(8, false)].iter().enumerate() {
            d.slot(&slot_of(f, i as u64 * S), &mut acct, &mut sink);
        }
        assert_eq!(d.counters().diverted_packets, 2, "datagram 7 whole; datagram 8's first was never seen");
        assert_eq!(acct.counters().packets, 1);
        assert_eq!(written(&d).iter().map(Vec::len).collect::<Vec<_>>(), vec![40 + 8 + 104, 40 + 8 + 40]);
    }

    #[test]
    fn a_full_verdict_table_evicts_the_least_recent_and_counts_active_ones() {
        let rules = SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53").unwrap() });
        let mut d = memory_divert(&rules, 2);
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        for port in 1..=3u16 {
            d.slot(&slot_of(&frame(&[], [10, 0, 0, 1], port, [10, 0, 0, 2], 53, 17, 0, 1), S), &mut acct, &mut sink);
        }
        assert_eq!(d.counters().verdicts_evicted, 1);
        // An idle flow's verdict going is no eviction.
        d.slot(&slot_of(&frame(&[], [10, 0, 0, 1], 9, [10, 0, 0, 2], 53, 17, 0, 1), 100 * S), &mut acct, &mut sink);
        assert_eq!(d.counters().verdicts_evicted, 1);
        assert_eq!(d.counters().diverted_packets, 4);
    }

    #[test]
    fn a_full_tun_queue_drops_and_counts_without_waiting() {
        let rules = SharedRules::new(RuleSet { generation: 1, ..parse("mirror").unwrap() });
        let mut d = memory_divert(&rules, 16);
        if let Some(on) = d.on.as_deref_mut() {
            on.out = Out::Memory(Vec::new(), Some(WriteFailure::Full));
        }
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        let f = frame(&[], [10, 0, 0, 1], 1, [10, 0, 0, 2], 2, 17, 0, 1);
        d.slot(&slot_of(&f, 0), &mut acct, &mut sink);
        d.slot(&slot_of(&f, 0), &mut acct, &mut sink);
        let c = d.counters();
        assert_eq!((c.mirrored_packets, c.tun_dropped_packets, c.tun_dropped_bytes), (2, 1, f.len() as u64));
        assert_eq!(written(&d).len(), 1);
        assert_eq!(acct.counters().packets, 2, "mirrored packets are accounted whether written or not");
    }

    #[test]
    fn per_rule_counters_sum_to_the_worker_totals_and_rules_past_64_share_other() {
        let mut text: String = (0..70).map(|i| format!("mirror port {}\n", 1000 + i)).collect();
        text.insert_str(0, "# first\ndivert port 53\n");
        let rules = SharedRules::new(RuleSet { generation: 1, ..parse(&text).unwrap() });
        let dir = tempfile::tempdir().unwrap();
        let names = naming::divert_rule_counters();
        assert_eq!(names.len(), 65 * 6);
        assert_eq!(
            (names[0].as_str(), names[names.len() - 1].as_str()),
            ("rule1_mirrored_packets", "other_tun_dropped_bytes")
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let path = dir.path().join("divert-0");
        let mut d = memory_divert(&rules, 1024);
        d.on.as_deref_mut().unwrap().per_rule = PerRule::new(Some(CounterPage::open_or_create(&path, &names).unwrap()));
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        let dns = frame(&[], [10, 0, 0, 1], 5000, [10, 0, 0, 2], 53, 17, 0, 30);
        let r2 = frame(&[], [10, 0, 0, 1], 5000, [10, 0, 0, 2], 1000, 17, 0, 30);
        let r70 = frame(&[], [10, 0, 0, 1], 5000, [10, 0, 0, 2], 1068, 17, 0, 30);
        let r71 = frame(&[], [10, 0, 0, 1], 5000, [10, 0, 0, 2], 1069, 17, 0, 30);
        for f in [&dns, &dns, &r2, &r70, &r71] {
            d.slot(&slot_of(f, S), &mut acct, &mut sink);
        }
        if let Some(on) = d.on.as_deref_mut() {
            on.out = Out::Memory(Vec::new(), Some(WriteFailure::Full));
        }
        d.slot(&slot_of(&r2, S), &mut acct, &mut sink);
        d.write_rule_counters();
        let page: BTreeMap<String, u64> = CounterPage::read(&path).unwrap().into_iter().collect();
        let n = dns.len() as u64;
        assert_eq!((page["rule1_diverted_packets"], page["rule1_diverted_bytes"]), (2, 2 * n));
        assert_eq!((page["rule2_mirrored_packets"], page["rule2_tun_dropped_packets"]), (2, 1));
        assert_eq!(page["rule64_mirrored_packets"], 0, "rule 64 is port 1062");
        assert_eq!(page["other_mirrored_packets"], 2, "rules 70 and 71");
        let c = d.counters();
        for (name, total) in [
            ("mirrored_packets", c.mirrored_packets),
            ("diverted_packets", c.diverted_packets),
            ("tun_dropped_bytes", c.tun_dropped_bytes),
        ] {
            let sum: u64 = page.iter().filter(|(k, _)| k.ends_with(name)).map(|(_, v)| v).sum();
            assert_eq!(sum, total, "{name}");
        }
        let listing = rules.current().listing(Path::new("/etc/r"));
        assert!(listing
            .starts_with("# generation 1 of /etc/r\nrule1 line 2 divert port 53\nrule2 line 3 mirror port 1000\n"));
        assert!(listing.ends_with("other line 72 mirror port 1069\n"), "{listing}");
    }

    #[test]
    fn off_passes_every_slot_to_the_accounting() {
        let mut d = Divert::off();
        let mut acct = accounting();
        let mut sink: Vec<station::record::FlowRecord> = Vec::new();
        d.refresh(None);
        d.slot(&slot_of(&frame(&[], [10, 0, 0, 1], 1, [10, 0, 0, 2], 53, 17, 0, 1), 0), &mut acct, &mut sink);
        assert_eq!(acct.counters().packets, 1);
        assert_eq!(*d.counters(), DivertCounters::default());
    }

    #[test]
    fn the_reloader_publishes_new_rules_and_keeps_them_on_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules");
        std::fs::write(&path, "divert port 53\n").unwrap();
        let cell = SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53\n").unwrap() });
        let listing = dir.path().join("divert-rules");
        let mut r = Reloader::new(&path, cell.clone(), Some(b"divert port 53\n".to_vec())).listing_to(listing.clone());
        assert_eq!(r.poll(), None, "unchanged");
        // Same length, same second: the bytes decide, not the timestamps.
        std::fs::write(&path, "divert port 54\n").unwrap();
        assert_eq!(r.poll(), None, "changed: taken when the next poll reads the same");
        let line = r.poll().expect("reloaded");
        assert!(line.contains("1 rule(s), generation 2"), "{line}");
        assert_eq!(cell.current().rules[0].selectors, vec![Selector::Port(54)]);
        let listed = std::fs::read_to_string(&listing).unwrap();
        assert_eq!(listed, format!("# generation 2 of {}\nrule1 line 1 divert port 54\n", path.display()));
        // A malformed file keeps the rules and says where, once.
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"mirror proto udp\nmirror port http\n").unwrap();
        drop(f);
        assert_eq!(r.poll(), None);
        let line = r.poll().expect("an error line");
        assert_eq!(
            line,
            format!(
                "CJ_DIVERT_RULES: {}:2: port \"http\": expected a port number from 0 to 65535; keeping the 1 rule(s) of generation 2",
                path.display()
            )
        );
        assert_eq!(r.poll(), None, "logged once");
        assert_eq!(cell.current().generation, 2);
        // A file that is gone keeps them too.
        std::fs::remove_file(&path).unwrap();
        let line = r.poll().expect("gone");
        assert!(line.contains("cannot open the rules file") && line.contains("keeping the 1 rule(s)"), "{line}");
        // Replaced by rename: taken.
        let tmp = dir.path().join("rules.new");
        std::fs::write(&tmp, "mirror proto icmp\ndivert net 10.0.0.0/8\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(r.poll(), None);
        assert!(r.poll().expect("reloaded").contains("2 rule(s), generation 3"));
        assert_eq!(cell.current().rules.len(), 2);
    }

    #[test]
    fn a_rules_file_caught_half_written_in_place_is_not_published_until_it_reads_the_same_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules");
        std::fs::write(&path, "divert port 53\n").unwrap();
        let cell = SharedRules::new(RuleSet { generation: 1, ..parse("divert port 53\n").unwrap() });
        let mut r = Reloader::new(&path, cell.clone(), Some(b"divert port 53\n".to_vec()));
        // `cat new > rules` (or an editor writing in place): truncated, nothing written yet.
        std::fs::write(&path, "").unwrap();
        assert_eq!(r.poll(), None, "an emptied file is not taken at its first read");
        // Written part way, cut inside a line.
        std::fs::write(&path, "mirror proto udp\ndivert net 10.").unwrap();
        assert_eq!(r.poll(), None, "a file still changing is neither taken nor refused");
        let cur = cell.current();
        assert_eq!((cur.generation, cur.rules.len()), (1, 1), "the rules in force are kept meanwhile");
        // Done: taken once two reads one poll apart agree.
        std::fs::write(&path, "mirror proto udp\ndivert net 10.0.0.0/8\n").unwrap();
        assert_eq!(r.poll(), None, "first read of the finished file");
        let line = r.poll().expect("taken at the second read");
        assert!(line.contains("2 rule(s), generation 2"), "{line}");
        assert_eq!(cell.current().rules.len(), 2);
        assert_eq!(r.poll(), None, "unchanged since");
        // A malformed file is refused the same way: once it is stable, once.
        std::fs::write(&path, "mirror prot udp\n").unwrap();
        assert_eq!(r.poll(), None);
        assert!(r.poll().expect("refused").contains("unknown selector \"prot\""));
        assert_eq!(r.poll(), None, "logged once");
        assert_eq!(cell.current().generation, 2);
    }

    #[test]
    fn a_rules_file_caught_half_written_at_start_is_taken_only_once_two_reads_agree() {
        let path = Path::new("rules.conf");
        let finished = b"mirror proto udp\ndivert net 10.0.0.0/8\n".to_vec();
        // Emptied by `>`, then half written, then finished: what the reads of the file saw.
        let mut seen =
            vec![Vec::new(), b"mirror proto udp\ndivert net 10.".to_vec(), finished.clone(), finished.clone()]
                .into_iter();
        let mut pauses = 0;
        let got = read_settled(path, || Ok(seen.next().unwrap_or_default()), || pauses += 1).unwrap();
        assert_eq!((got, pauses), (finished, 3), "taken at the first two reads that agree, a pause apart");
        // Settled at once: one pause (the start's one poll).
        let mut pauses = 0;
        assert_eq!(read_settled(path, || Ok(b"divert port 53\n".to_vec()), || pauses += 1).unwrap().len(), 15);
        assert_eq!(pauses, 1);
        // A file that never settles stops the start with one line naming it.
        let mut n = 0u8;
        let e = read_settled(
            path,
            || {
                n += 1;
                Ok(vec![n])
            },
            || {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("rules.conf: changed between every two of 25 reads") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_rules_file_that_is_not_a_regular_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read_rules_file(&fifo).unwrap_err().to_string();
        assert!(e.ends_with("not a regular file: name a file of rules"), "{e}");
        let e = read_rules_file(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn start_refuses_a_malformed_file_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules");
        std::fs::write(&path, "mirror\nmirror net nowhere\n").unwrap();
        let env =
            vec![("CJ_TUN".to_owned(), "yes".to_owned()), ("CJ_DIVERT_RULES".to_owned(), path.display().to_string())];
        let cfg = StationConfig::load_from(&env, None).unwrap();
        let e = start(&cfg).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2: \"nowhere\" is not an address prefix", path.display())), "{e}");
        let off = StationConfig::load_from(&[], None).unwrap();
        assert!(start(&off).unwrap().is_none(), "CJ_TUN=no: nothing");
    }
}

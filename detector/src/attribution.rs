//! Starts the container inventory for a live capture and hands its snapshot
//! cell to the workers (DESIGN.md "Container attribution").
//!
//! The detector is the one process that runs the inventory: it is the one
//! that needs what the inventory knows (names, MACs, addresses, for every
//! flow and every divert rule), and it keeps the balancer a lean fast path
//! (no netlink dumps, `/proc` walks or Docker client there). For
//! `CJ_IFACE=containers` it tells the balancer what to capture through
//! `<cluster dir>/capture` (`inventory::capture`).
//!
//! Guarantees:
//! - For a live source (`CJ_IFACE` = interfaces, `containers`, `pfring:IF`,
//!   `zc:IF`) the inventory is started once, before the workers. The map from
//!   `PacketMeta::source` to interfaces is the order of `CJ_IFACE` (the
//!   balancer numbers its interfaces the same way; a PF_RING device is 0), or
//!   for `containers` the inventory's own assignment, whose first capture
//!   list is written before the workers attach, so before the balancer
//!   captures anything.
//! - The workers join the inventory's readers ([`inventory::Readers`], one
//!   per worker): a released capture index waits until each has drained.
//! - With several queue sets (`N_QUEUE_SETS`) the detector of set 0 owns the
//!   capture list; the others follow it (`inventory::SourceMap::Follow`).
//!
//! Not guaranteed: a detector of another queue set reads the list within
//! 10 ms of a change and is not among the readers the owner waits for, so its
//! first frames of a new veth may be attributed by MAC or address instead,
//! and a reused index is ordered for it by those delays only.
//! - The inventory is published as text in `<cluster dir>/inventory` within
//!   [`PUBLISH_POLL`] of each change (for operators and tests; nothing reads
//!   it to decide anything): one line per live container interface and per
//!   capture source, then `entries held H retiring R reclaimed N` (container
//!   entries held now, of which stopped ones waiting for the workers' flows to
//!   let go, and entries freed for reuse so far: `inventory::entries`), then
//!   `generation G`.
//! - The workers report which container entries their flows hold (after each
//!   batch and idle look), so a stopped container's entry is reused only
//!   once none does.
//! - Test knob, not for operators: [`TEST_MAX_ENTRIES_VAR`] set to a number
//!   below 16,383 makes the inventory hold at most that many entries at once
//!   (one warning line says so), so an end-to-end test can go past the limit
//!   with a handful of namespaces.
//! - Offline sources (`pcap:`, `sim:`) have nothing to do with this host's
//!   containers: no inventory, records carry no containers.

use inventory::{Inventory, InventoryConfig, Snapshot, SourceMap};
use station::config::{SourceSpec, StationConfig};

use crate::worker::SharedSnapshot;

/// The test knob that lowers the most container entries held at once (see the module docs).
pub const TEST_MAX_ENTRIES_VAR: &str = "CJ_TEST_MAX_CONTAINER_ENTRIES";

/// The value of [`TEST_MAX_ENTRIES_VAR`], when set and valid (an invalid one is said and ignored).
fn test_max_entries() -> Option<usize> {
    let v = std::env::var(TEST_MAX_ENTRIES_VAR).ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=inventory::MAX_ENTRIES).contains(&n) => Some(n),
        _ => {
            station::cj_warn!(
                "cj-detector: warning: {TEST_MAX_ENTRIES_VAR}={v:?} ignored: set it to a number from 1 to {} \
                 (a test knob), or unset it",
                inventory::MAX_ENTRIES
            );
            None
        }
    }
}

/// How often the published view (`<cluster dir>/inventory`) is compared with the snapshot.
pub const PUBLISH_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// What capture indices mean for `cfg`'s source (None: an offline source).
fn source_map(cfg: &StationConfig) -> Option<SourceMap> {
    Some(match cfg.source().ok()? {
        // One detector owns the capture list: the one of queue set 0.
        SourceSpec::Containers if cfg.queue_set == 0 => SourceMap::Containers(cfg.cluster_dir()),
        SourceSpec::Containers => SourceMap::Follow(cfg.cluster_dir()),
        SourceSpec::Interfaces(list) => SourceMap::Static(list),
        SourceSpec::PfRing(dev) | SourceSpec::Zc(dev) => SourceMap::Static(vec![dev]),
        SourceSpec::Pcap(_) | SourceSpec::Sim(_) => return None,
    })
}

/// One scan of the inventory as text (`cj-detector --inventory`); for
/// `containers`, the capture indices of the running detector's list.
pub fn describe(cfg: &StationConfig) -> String {
    let mut icfg = InventoryConfig::new("cj-detector");
    icfg.sources = match source_map(cfg) {
        // A one-shot view reads the running detector's list.
        Some(SourceMap::Containers(dir)) => SourceMap::Follow(dir),
        other => other.unwrap_or(SourceMap::Static(Vec::new())),
    };
    describe_snapshot(&inventory::Scanner::new(icfg).scan())
}

/// A snapshot as text: one line per live container interface, one per capture source.
pub fn describe_snapshot(snap: &Snapshot) -> String {
    let mut s = String::new();
    for (i, e) in snap.live_entries() {
        let r = &e.reference;
        let macs: Vec<String> =
            e.macs.iter().map(|m| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")).collect();
        let ips: Vec<String> = e.ips.iter().map(ToString::to_string).collect();
        s += &format!(
            "container {i}: {} {} id={} veth={} netns={} nsid={} macs={} ips={}{}\n",
            e.runtime,
            r.name_str(),
            r.id_str(),
            if r.veth_str().is_empty() { "-" } else { r.veth_str() },
            r.netns,
            r.nsid,
            macs.join(","),
            ips.join(","),
            if e.image.is_empty() { String::new() } else { format!(" image={}", e.image) }
        );
    }
    for (i, name) in &snap.sources {
        let c = snap.by_source(*i);
        let who = if c == inventory::NONE { "no container".to_owned() } else { snap.entry(c).name_str().to_owned() };
        s += &format!("source {i}: {name} -> {who}\n");
    }
    s
}

/// The inventory for `cfg`'s source, or `None` for an offline source.
pub fn start(cfg: &StationConfig) -> Option<SharedSnapshot> {
    let mut icfg = InventoryConfig::new("cj-detector");
    icfg.sources = source_map(cfg)?;
    // One reader per worker (one per planned core).
    icfg.readers = cfg.corecount as usize;
    if let Some(n) = test_max_entries() {
        icfg.max_entries = n;
        station::cj_warn!(
            "cj-detector: inventory: test knob {TEST_MAX_ENTRIES_VAR}={n}: at most {n} container entries held at once"
        );
    }
    let inv = Inventory::start(icfg);
    let snap = inv.snapshot();
    station::cj_info!(
        "cj-detector: inventory: {} container interface(s), {} capture source(s) on container veths",
        snap.live_entries().count(),
        snap.sources.iter().filter(|(i, _)| snap.by_source(*i) != inventory::NONE).count()
    );
    let shared = inv.shared();
    let watched = shared.clone();
    let dir = cfg.cluster_dir();
    let _ = std::thread::Builder::new().name("cj-inv-publish".into()).spawn(move || {
        let mut published = 0;
        let mut warned = false;
        loop {
            let snap = watched.load_full();
            if snap.generation != published {
                let text = format!(
                    "{}entries held {} retiring {} reclaimed {}\ngeneration {}\n",
                    describe_snapshot(&snap),
                    snap.entries_held,
                    snap.entries_retiring,
                    snap.entries_reclaimed,
                    snap.generation
                );
                let written = shmq::prepare_dir(&dir)
                    .map_err(std::io::Error::other)
                    .and_then(|()| shmq::files::write_atomic(&dir.join("inventory"), text.as_bytes(), 0o644));
                match written {
                    Ok(()) => published = snap.generation,
                    Err(e) if !warned => {
                        warned = true;
                        station::cj_warn!(
                            "cj-detector: warning: cannot publish the inventory in {}: {e}",
                            dir.display()
                        );
                    }
                    Err(_) => {}
                }
            }
            std::thread::sleep(PUBLISH_POLL);
        }
    });
    Some(shared)
}

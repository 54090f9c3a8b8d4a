//! PF_RING sources (feature `pfring`): `pfring:IF` (a standard PF_RING
//! socket), `zc:IF` (a ZC device or a ZC cluster queue such as `zc:99@0`) and
//! PF_RING's own pcap device, `pfring:pcap:FILE`.
//!
//! All three go through the standard PF_RING API: `pfring_open`,
//! `pfring_enable_ring`, then `pfring_recv` with `buffer_len` 0 (the frame is
//! borrowed from the ring, never copied here) and `wait_for_packet` 0 (the
//! balancer's own loop waits: [`Poll::Idle`] when nothing is there). `zc:IF`
//! is opened as `pfring_open("zc:IF")`, as zbalance's single-queue mode and
//! `pfcount -i zc:IF` do, so packets come straight from the NIC's DMA
//! buffers; the ZC cluster API (`pfring_zc_*`) is not used.
//!
//! Guarantees:
//! - each frame is delivered with its capture timestamp in ns: the ring's
//!   `timestamp_ns` when it has one (hardware or PF_RING's nanosecond clock),
//!   else the header's `timeval`, else (ZC without timestamps) the wall clock
//!   read once per batch;
//! - `pfring_stats` drops (`drop`: lost in the ring before the balancer read
//!   them) are reported as [`SourceStats::capture_dropped`], read once per
//!   batch, so they join the accounting identity as AF_PACKET's do;
//! - an open that fails is explained, in one line, by its cause and its fix:
//!   kernel module not loaded, library and module versions differ, no ZC
//!   driver on the interface, no hugepages, a missing interface or ZC cluster,
//!   missing privileges. See [`Host`] and [`diagnose_open`]: they read `/proc`
//!   and `/sys` under a root directory, so they are tested on fake trees;
//! - ZC without a licence runs in demo mode: a warning at open, and the end of
//!   the demo (`PF_RING_ERROR_END_OF_DEMO_MODE`) stops the source with
//!   [`PfRingError::DemoEnded`].
//!
//! The pcap device needs no kernel module (libpfring reads the file through
//! libpcap), which is how the binding is tested on machines without PF_RING's
//! kernel side. It reports no capture statistics (libpfring gives none for
//! files), and libpcap hands it microsecond timestamps even from
//! nanosecond-resolution files.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::ptr::NonNull;

use pfring_sys as sys;

use super::{Frame, Poll, Source, SourceError, SourceStats};

/// Capture length asked of PF_RING (the dispatcher keeps what fits a slot).
const SNAPLEN: u32 = 65_535;

/// What was opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `pfring:IF`: the PF_RING kernel module's socket.
    Standard,
    /// `zc:IF` or `zc:CLUSTER@QUEUE`.
    Zc,
    /// `pfring:pcap:FILE`: PF_RING's pcap module over a file.
    PcapFile,
}

impl Kind {
    /// The kind and the device string `pfring_open` takes for a CJ_IFACE value's
    /// device part: `pfring:eth0` gives `eth0`, `pfring:pcap:/x.pcap` gives
    /// `pcap:/x.pcap`, `zc:eth1` gives `zc:eth1`.
    #[must_use]
    pub fn device_for(spec_device: &str, zc: bool) -> (Self, String) {
        if zc {
            let dev = spec_device.strip_prefix("zc:").unwrap_or(spec_device);
            (Self::Zc, format!("zc:{dev}"))
        } else if spec_device.starts_with("pcap:") {
            (Self::PcapFile, spec_device.to_owned())
        } else {
            (Self::Standard, spec_device.to_owned())
        }
    }
}

/// Why a PF_RING source cannot go on, with the fix; one line each.
#[derive(Debug, thiserror::Error)]
pub enum PfRingError {
    /// `/proc/net/pf_ring` does not exist.
    #[error(
        "cannot open PF_RING device {device}: PF_RING kernel module not loaded (no /proc/net/pf_ring): \
         modprobe pf_ring (scripts/install_pfring.sh installs it)"
    )]
    ModuleNotLoaded {
        /// The device.
        device: String,
    },
    /// The user library and the kernel module are different releases.
    #[error(
        "cannot open PF_RING device {device}: library {library} and kernel module {module} differ (Wrong RING version): \
         install the same release of both (PFRING_VER=<version> scripts/install_pfring.sh), then rmmod pf_ring && modprobe pf_ring"
    )]
    VersionMismatch {
        /// The device.
        device: String,
        /// libpfring's version (and slot version).
        library: String,
        /// The module's, from /proc/net/pf_ring/info.
        module: String,
    },
    /// The interface is not driven by a PF_RING ZC driver.
    #[error(
        "cannot open zc:{iface}: {iface} has no PF_RING ZC driver (/proc/net/pf_ring/dev/{iface}/info says \
         Polling Mode: {mode}): load the ZC driver with pf_ringcfg --configure-driver {driver} --rss-queues 1, \
         or capture with pfring:{iface} or CJ_IFACE={iface}"
    )]
    NoZcDriver {
        /// The interface.
        iface: String,
        /// The polling mode PF_RING reports (`NAPI`, or `unknown`).
        mode: String,
        /// The kernel driver bound to the interface (for pf_ringcfg), or `<driver>`.
        driver: String,
    },
    /// ZC needs hugepages and none are reserved.
    #[error(
        "cannot open {device}: PF_RING ZC needs hugepages and none are reserved (HugePages_Total 0 in /proc/meminfo): \
         echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages and mount -t hugetlbfs nodev /dev/hugepages \
         (on-reboot.sh does it at boot)"
    )]
    NoHugepages {
        /// The device.
        device: String,
    },
    /// A `zc:CLUSTER@QUEUE` whose cluster does not exist.
    #[error(
        "cannot open {device}: ZC cluster {cluster} queue {queue} not found: start its owner first \
         (zbalance_ipc -c {cluster} ...) and use a queue id it created"
    )]
    NoZcCluster {
        /// The device.
        device: String,
        /// Cluster id.
        cluster: String,
        /// Queue id.
        queue: String,
    },
    /// No such network interface.
    #[error("cannot open PF_RING device {device}: interface {iface} does not exist (ip link shows the names)")]
    NoSuchInterface {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Not allowed.
    #[error(
        "cannot open PF_RING device {device}: {cause}: run cj-balancer as root or with CAP_NET_ADMIN and CAP_NET_RAW"
    )]
    Permission {
        /// The device.
        device: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The pcap device cannot read the file.
    #[error(
        "cannot open {file} through PF_RING's pcap device: {cause}; check CJ_IFACE=pfring:pcap:FILE names a readable pcap file"
    )]
    PcapFile {
        /// The file.
        file: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// Anything else `pfring_open` or `pfring_enable_ring` refused.
    #[error("cannot {call} PF_RING device {device}: {cause}")]
    Open {
        /// `open` or `enable`.
        call: &'static str,
        /// The device.
        device: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// ZC's demo mode ended.
    #[error(
        "{device}: PF_RING ZC demo mode ended: without a licence ZC runs 5 minutes; install a ZC licence \
         for this NIC (ntop shop, /etc/pf_ring/) or use pfring:IF"
    )]
    DemoEnded {
        /// The device.
        device: String,
    },
    /// `pfring_recv` failed.
    #[error("{device}: pfring_recv failed with {code} ({name})")]
    Recv {
        /// The device.
        device: String,
        /// PF_RING's error code.
        code: i32,
        /// Its name.
        name: &'static str,
    },
    /// The device name holds a NUL byte.
    #[error("PF_RING device {0:?} contains a NUL byte")]
    Name(String),
}

/// The host's `/proc` and `/sys`, under a root (`/` in production, a
/// temporary tree in tests).
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self::at("/")
    }
}

impl Host {
    /// `/proc` and `/sys` under `root`.
    #[must_use]
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel)).ok()
    }

    /// The PF_RING kernel module is loaded (`/proc/net/pf_ring` exists).
    #[must_use]
    pub fn module_loaded(&self) -> bool {
        self.path("proc/net/pf_ring").is_dir()
    }

    /// The module's version and slot version from `/proc/net/pf_ring/info`
    /// (`PF_RING Version : 8.9.0 (...)`, `Slot version : 21`).
    #[must_use]
    pub fn module_version(&self) -> Option<(String, Option<u32>)> {
        let info = self.read("proc/net/pf_ring/info")?;
        let version = info_field(&info, "PF_RING Version")?.split_whitespace().next()?.to_owned();
        let slot = info_field(&info, "Slot version").and_then(|v| v.parse().ok());
        Some((version, slot))
    }

    /// `HugePages_Total` from `/proc/meminfo`.
    #[must_use]
    pub fn hugepages_total(&self) -> Option<u64> {
        info_field(&self.read("proc/meminfo")?, "HugePages_Total")?.parse().ok()
    }

    /// `Polling Mode` of `/proc/net/pf_ring/dev/IF/info` (`NAPI/ZC` with a ZC driver).
    #[must_use]
    pub fn polling_mode(&self, iface: &str) -> Option<String> {
        info_field(&self.read(&format!("proc/net/pf_ring/dev/{iface}/info"))?, "Polling Mode").map(str::to_owned)
    }

    /// The interface exists (`/sys/class/net/IF`).
    #[must_use]
    pub fn interface_exists(&self, iface: &str) -> bool {
        self.path(&format!("sys/class/net/{iface}")).exists()
    }

    /// The kernel driver bound to the interface (`/sys/class/net/IF/device/driver`).
    #[must_use]
    pub fn driver(&self, iface: &str) -> Option<String> {
        let link = std::fs::read_link(self.path(&format!("sys/class/net/{iface}/device/driver"))).ok()?;
        link.file_name().map(|n| n.to_string_lossy().into_owned())
    }
}

/// The value of `Key : value` or `Key: value` in a /proc text file.
fn info_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The library's version as `8.9.0`.
fn version_string(num: u32) -> String {
    let (major, minor, patch) = sys::version_parts(num);
    format!("{major}.{minor}.{patch}")
}

/// The interface part of a device: `eth1@2` gives `eth1`.
fn iface_of(dev: &str) -> &str {
    dev.split('@').next().unwrap_or(dev)
}

/// Explains a failed `pfring_open(device)` of `kind`, given the OS error it
/// left, the library's version number, and the host.
#[must_use]
pub fn diagnose_open(host: &Host, kind: Kind, device: &str, cause: std::io::Error, library: u32) -> PfRingError {
    let dev = device.to_owned();
    if kind == Kind::PcapFile {
        let file = device.strip_prefix("pcap:").unwrap_or(device).to_owned();
        let cause = match std::fs::File::open(&file) {
            Err(e) => e,
            Ok(_) => std::io::Error::new(std::io::ErrorKind::InvalidData, "not a capture libpcap can read"),
        };
        return PfRingError::PcapFile { file, cause };
    }
    let zc_name = device.strip_prefix("zc:");
    let cluster_queue = zc_name.and_then(|n| {
        let (c, q) = n.split_once('@')?;
        c.bytes().all(|b| b.is_ascii_digit()).then(|| (c.to_owned(), q.to_owned()))
    });
    if !host.module_loaded() {
        return PfRingError::ModuleNotLoaded { device: dev };
    }
    if let Some((module, slot)) = host.module_version() {
        let lib = version_string(library);
        let slot_differs = slot.is_some_and(|s| s != sys::RING_FLOWSLOT_VERSION);
        if module != lib || slot_differs {
            let show = |v: String, s: Option<u32>| match s {
                Some(s) => format!("{v} (slot version {s})"),
                None => v,
            };
            return PfRingError::VersionMismatch {
                device: dev,
                library: show(lib, Some(sys::RING_FLOWSLOT_VERSION)),
                module: show(module, slot),
            };
        }
    }
    // EPERM, EACCES
    if matches!(cause.raw_os_error(), Some(1 | 13)) {
        return PfRingError::Permission { device: dev, cause };
    }
    match (kind, cluster_queue) {
        (Kind::Zc, Some((cluster, queue))) => {
            if host.hugepages_total() == Some(0) {
                return PfRingError::NoHugepages { device: dev };
            }
            PfRingError::NoZcCluster { device: dev, cluster, queue }
        }
        (Kind::Zc, None) => {
            let iface = iface_of(zc_name.unwrap_or(device)).to_owned();
            if !host.interface_exists(&iface) {
                return PfRingError::NoSuchInterface { device: dev, iface };
            }
            let mode = host.polling_mode(&iface);
            if !mode.as_deref().is_some_and(|m| m.contains("ZC")) {
                let driver = host.driver(&iface).unwrap_or_else(|| "<driver>".to_owned());
                return PfRingError::NoZcDriver { iface, mode: mode.unwrap_or_else(|| "unknown".to_owned()), driver };
            }
            if host.hugepages_total() == Some(0) {
                return PfRingError::NoHugepages { device: dev };
            }
            PfRingError::Open { call: "open", device: dev, cause }
        }
        _ => {
            let iface = iface_of(device).to_owned();
            if iface != "any" && !host.interface_exists(&iface) {
                return PfRingError::NoSuchInterface { device: dev, iface };
            }
            PfRingError::Open { call: "open", device: dev, cause }
        }
    }
}

/// The name of a `PF_RING_ERROR_*` code.
#[must_use]
pub fn error_name(code: i32) -> &'static str {
    match code {
        sys::PF_RING_ERROR_GENERIC => "PF_RING_ERROR_GENERIC",
        sys::PF_RING_ERROR_INVALID_ARGUMENT => "PF_RING_ERROR_INVALID_ARGUMENT",
        sys::PF_RING_ERROR_NO_PKT_AVAILABLE => "PF_RING_ERROR_NO_PKT_AVAILABLE",
        sys::PF_RING_ERROR_WRONG_CONFIGURATION => "PF_RING_ERROR_WRONG_CONFIGURATION",
        sys::PF_RING_ERROR_END_OF_DEMO_MODE => "PF_RING_ERROR_END_OF_DEMO_MODE",
        sys::PF_RING_ERROR_NOT_SUPPORTED => "PF_RING_ERROR_NOT_SUPPORTED",
        sys::PF_RING_ERROR_INVALID_LIB_VERSION => "PF_RING_ERROR_INVALID_LIB_VERSION",
        sys::PF_RING_ERROR_UNKNOWN_ADAPTER => "PF_RING_ERROR_UNKNOWN_ADAPTER",
        sys::PF_RING_ERROR_NOT_ENOUGH_MEMORY => "PF_RING_ERROR_NOT_ENOUGH_MEMORY",
        sys::PF_RING_ERROR_INVALID_STATUS => "PF_RING_ERROR_INVALID_STATUS",
        sys::PF_RING_ERROR_RING_NOT_ENABLED => "PF_RING_ERROR_RING_NOT_ENABLED",
        sys::PF_RING_ERROR_BAD_IFNAME => "PF_RING_ERROR_BAD_IFNAME",
        sys::PF_RING_ERROR_MOD_NOT_LOADED => "PF_RING_ERROR_MOD_NOT_LOADED",
        sys::PF_RING_ERROR_UNABLE_TO_MAP => "PF_RING_ERROR_UNABLE_TO_MAP",
        sys::PF_RING_ERROR_UNABLE_TO_GET_INFO => "PF_RING_ERROR_UNABLE_TO_GET_INFO",
        sys::PF_RING_ERROR_MMAP_FAILURE => "PF_RING_ERROR_MMAP_FAILURE",
        sys::PF_RING_ERROR_INIT_FAILURE => "PF_RING_ERROR_INIT_FAILURE",
        _ => "unknown PF_RING error",
    }
}

/// The user library's version number (`0x080900` for 8.9.0), asked of the
/// library itself (not the headers this was built with).
#[must_use]
pub fn library_version() -> u32 {
    let mut v = 0u32;
    // SAFETY: pfring_version_noring writes one u32 through a valid pointer and keeps nothing.
    unsafe { sys::pfring_version_noring(&mut v) };
    v
}

/// An open, enabled ring; closed on drop.
#[derive(Debug)]
struct Ring(NonNull<sys::pfring>);

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: the pointer came from pfring_open, is closed exactly once (here), and
        // no frame borrowed from it outlives `&mut self` of the source that owns it.
        unsafe { sys::pfring_close(self.0.as_ptr()) };
    }
}

// SAFETY: a ring opened without PF_RING_REENTRANT may be used from one thread at a
// time; the source is moved to the balancer thread and used only there (`&mut self`).
unsafe impl Send for Ring {}

/// A PF_RING source.
#[derive(Debug)]
pub struct PfRingSource {
    ring: Ring,
    kind: Kind,
    device: String,
    stats: SourceStats,
    ended: bool,
}

impl PfRingSource {
    /// Opens and enables `device` as `pfring_open` names it (`eth0`, `zc:eth1`,
    /// `zc:99@0`, `pcap:/x.pcap`).
    ///
    /// # Errors
    /// The device cannot be opened or enabled: [`PfRingError`] says why and what to do.
    pub fn open(kind: Kind, device: &str) -> Result<Self, PfRingError> {
        Self::open_on(&Host::default(), kind, device)
    }

    /// [`Self::open`] with the host's `/proc` and `/sys` under `host` (for the diagnosis).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_on(host: &Host, kind: Kind, device: &str) -> Result<Self, PfRingError> {
        let name = CString::new(device).map_err(|_| PfRingError::Name(device.to_owned()))?;
        let flags = match kind {
            Kind::PcapFile => 0,
            Kind::Standard | Kind::Zc => sys::PF_RING_PROMISC | sys::PF_RING_TIMESTAMP,
        };
        // Some failures are explained by libpfring on stderr only: errno is what we get.
        // SAFETY: `name` is a NUL-terminated string alive for the call; pfring_open copies it.
        let raw = unsafe { sys::pfring_open(name.as_ptr(), SNAPLEN, flags) };
        let Some(ptr) = NonNull::new(raw) else {
            let cause = std::io::Error::last_os_error();
            return Err(diagnose_open(host, kind, device, cause, library_version()));
        };
        let ring = Ring(ptr);
        if kind != Kind::PcapFile {
            let mut app = *b"cj-balancer\0";
            // SAFETY: the ring is open; `app` is NUL-terminated and the library copies it.
            // Best effort: the name only labels the ring in /proc/net/pf_ring.
            let _ = unsafe { sys::pfring_set_application_name(ring.0.as_ptr(), app.as_mut_ptr().cast()) };
            // SAFETY: the ring is open and not yet enabled, as pfring_set_socket_mode requires.
            let _ = unsafe { sys::pfring_set_socket_mode(ring.0.as_ptr(), sys::socket_mode::recv_only_mode) };
        }
        // SAFETY: the ring is open; enabling it is the documented step before pfring_recv.
        let rc = unsafe { sys::pfring_enable_ring(ring.0.as_ptr()) };
        if rc != 0 {
            let cause = std::io::Error::last_os_error();
            return Err(PfRingError::Open { call: "enable", device: device.to_owned(), cause });
        }
        // SAFETY: pfring_zc_check_license only reads the library's licence state.
        if kind == Kind::Zc && unsafe { sys::pfring_zc_check_license() } == 0 {
            eprintln!(
                "cj-balancer: {device}: PF_RING ZC runs in demo mode (no licence for this NIC): \
                 capture stops after 5 minutes; install a ZC licence or use pfring:IF"
            );
        }
        Ok(Self { ring, kind, device: device.to_owned(), stats: SourceStats::default(), ended: false })
    }

    /// Reads `pfring_stats` into `capture_dropped` (files have none).
    fn refresh_stats(&mut self) {
        if self.kind == Kind::PcapFile {
            return;
        }
        let mut st = sys::pfring_stat { recv: 0, drop: 0, shunt: 0 };
        // SAFETY: the ring is open and enabled; `st` is a valid pfring_stat the call fills.
        if unsafe { sys::pfring_stats(self.ring.0.as_ptr(), &mut st) } == 0 {
            self.stats.capture_dropped = st.drop;
        }
    }
}

/// The frame's timestamp in ns: PF_RING's ns stamp, else the timeval, else `fallback`.
fn timestamp_ns(hdr: &sys::pfring_pkthdr, fallback: u64) -> u64 {
    let ns = hdr.extended_hdr.timestamp_ns;
    if ns != 0 {
        return ns;
    }
    let (sec, usec) = (hdr.ts.tv_sec, hdr.ts.tv_usec);
    if sec == 0 && usec == 0 {
        return fallback;
    }
    (sec.max(0) as u64).saturating_mul(1_000_000_000).saturating_add(usec.max(0) as u64 * 1000)
}

impl Source for PfRingSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        if self.ended {
            return Ok(Poll::Ended);
        }
        let now_ns =
            || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut fallback: Option<u64> = None;
        let mut n = 0usize;
        let mut outcome = Ok(());
        while n < max {
            let mut buf: *mut u8 = std::ptr::null_mut();
            // SAFETY: pfring_pkthdr is plain old data (integers and a raw pointer); all zeroes is valid.
            let mut hdr: sys::pfring_pkthdr = unsafe { std::mem::zeroed() };
            // SAFETY: the ring is open and enabled, used by this thread only; buffer_len 0 asks
            // for a pointer into the ring, valid until the next pfring_recv on this ring.
            let rc = unsafe { sys::pfring_recv(self.ring.0.as_ptr(), &mut buf, 0, &mut hdr, 0) };
            if rc > 0 && !buf.is_null() {
                let caplen = hdr.caplen.min(SNAPLEN);
                // SAFETY: on success PF_RING points `buf` at `caplen` readable bytes of the
                // frame; the slice lives only until `sink` returns, before the next pfring_recv.
                let data = unsafe { std::slice::from_raw_parts(buf.cast_const(), caplen as usize) };
                let ts_ns = timestamp_ns(&hdr, 0);
                let ts_ns = if ts_ns == 0 { *fallback.get_or_insert_with(now_ns) } else { ts_ns };
                sink(&Frame { ts_ns, wire_len: hdr.len.max(caplen), data, source: 0 });
                n += 1;
                continue;
            }
            if rc == 0 {
                break;
            }
            if self.kind == Kind::PcapFile {
                // The pcap device returns libpcap's PCAP_ERROR_BREAK (-2) at the end of the file.
                self.ended = true;
                if rc != -2 {
                    self.stats.errors += 1;
                }
                break;
            }
            outcome = Err(match rc {
                sys::PF_RING_ERROR_END_OF_DEMO_MODE => PfRingError::DemoEnded { device: self.device.clone() },
                code => PfRingError::Recv { device: self.device.clone(), code, name: error_name(code) },
            });
            self.ended = true;
            break;
        }
        self.refresh_stats();
        outcome.map_err(SourceError::from)?;
        Ok(if n > 0 {
            Poll::Frames(n)
        } else if self.ended {
            Poll::Ended
        } else {
            Poll::Idle
        })
    }

    fn is_finite_offline(&self) -> bool {
        self.kind == Kind::PcapFile
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn describe(&self) -> String {
        let version = version_string(library_version());
        match self.kind {
            Kind::Standard => format!("pfring:{} (PF_RING {version})", self.device),
            Kind::Zc => format!("{} (PF_RING {version}, ZC {})", self.device, zc_version().unwrap_or_default()),
            Kind::PcapFile => format!("pfring:{} (PF_RING {version} pcap device, {})", self.device, pcap_version()),
        }
    }
}

/// The libpcap libpfring reads files with, e.g. `libpcap version 1.10.3 (with TPACKET_V3)`.
#[must_use]
pub fn pcap_version() -> String {
    // SAFETY: pcap_lib_version returns a pointer to a static NUL-terminated string.
    let p = unsafe { sys::pcap_lib_version() };
    if p.is_null() {
        return "libpcap".to_owned();
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The version of PF_RING ZC inside the library, e.g. `8.9.0`.
#[must_use]
pub fn zc_version() -> Option<String> {
    // SAFETY: pfring_zc_version returns a pointer to a static NUL-terminated string or NULL.
    let p = unsafe { sys::pfring_zc_version() };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::source::pcap::PcapSource;

    /// Every frame of a source: (timestamp, wire length, bytes), and the final stats.
    fn drain(source: &mut dyn Source) -> (Vec<(u64, u32, Vec<u8>)>, SourceStats) {
        let mut frames = Vec::new();
        loop {
            let polled = source
                .poll_batch(64, &mut |f| frames.push((f.ts_ns, f.wire_len, f.data.to_vec())))
                .expect("source fails");
            match polled {
                Poll::Frames(_) => {}
                Poll::Ended => break,
                Poll::Idle => panic!("a file source went idle"),
            }
        }
        (frames, source.stats())
    }

    fn capture(dir: &Path, nanos: bool) -> (PathBuf, ::sim::Truth) {
        let spec: ::sim::SimSpec =
            "flows=200,packets=5000,sizes=64:30/576:30/1500:40,v6=20,vlan=10,seed=7".parse().unwrap();
        let path = dir.join(if nanos { "ns.pcap" } else { "us.pcap" });
        let truth = ::sim::write_pcap(&spec, &path, nanos).unwrap();
        (path, truth)
    }

    /// PF_RING's pcap device (no kernel module needed) gives exactly the frames
    /// the balancer's own pcap reader gives.
    #[test]
    fn pcap_device_gives_the_same_frames_as_the_pcap_source() {
        let dir = tempfile::tempdir().unwrap();
        let (path, truth) = capture(dir.path(), false);
        let device = format!("pcap:{}", path.display());
        let (kind, dev) = Kind::device_for(&device, false);
        assert_eq!((kind, dev.as_str()), (Kind::PcapFile, device.as_str()));

        let mut ours = PcapSource::open(&path).unwrap();
        let mut theirs = PfRingSource::open(kind, &dev).unwrap();
        assert!(theirs.is_finite_offline());
        assert!(theirs.describe().starts_with("pfring:pcap:"), "{}", theirs.describe());
        let (expected, _) = drain(&mut ours);
        let (got, stats) = drain(&mut theirs);

        assert_eq!(got.len() as u64, truth.total_frames);
        assert_eq!(got.len(), expected.len());
        let bytes = |v: &[(u64, u32, Vec<u8>)]| v.iter().map(|f| u64::from(f.1)).sum::<u64>();
        assert_eq!(bytes(&got), bytes(&expected));
        assert!(got == expected, "frames differ (timestamps, lengths or bytes)");
        assert_eq!(stats, SourceStats::default());
        // After the end it stays ended.
        assert_eq!(theirs.poll_batch(8, &mut |_| panic!("frame after the end")).unwrap(), Poll::Ended);
    }

    /// A nanosecond capture: the same frames; libpcap hands PF_RING microseconds.
    #[test]
    fn pcap_device_reads_nanosecond_captures_at_microsecond_precision() {
        let dir = tempfile::tempdir().unwrap();
        let (path, truth) = capture(dir.path(), true);
        let mut ours = PcapSource::open(&path).unwrap();
        let mut theirs = PfRingSource::open(Kind::PcapFile, &format!("pcap:{}", path.display())).unwrap();
        let (expected, _) = drain(&mut ours);
        let (got, _) = drain(&mut theirs);
        assert_eq!(got.len() as u64, truth.total_frames);
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!((g.1, &g.2), (e.1, &e.2));
            assert_eq!(g.0, e.0 / 1000 * 1000);
        }
    }

    #[test]
    fn pcap_device_on_a_missing_file_says_so() {
        let err = PfRingSource::open(Kind::PcapFile, "pcap:/nonexistent/x.pcap").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::PcapFile { .. }), "{msg}");
        assert!(msg.contains("/nonexistent/x.pcap") && msg.contains("No such file"), "{msg}");
        assert!(!msg.contains('\n'));
    }

    /// A fake host: /proc and /sys files under a temporary root.
    struct FakeHost {
        dir: tempfile::TempDir,
    }

    impl FakeHost {
        fn new() -> Self {
            Self { dir: tempfile::tempdir().unwrap() }
        }
        fn file(&self, rel: &str, text: &str) -> &Self {
            let p = self.dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
            self
        }
        fn dir(&self, rel: &str) -> &Self {
            std::fs::create_dir_all(self.dir.path().join(rel)).unwrap();
            self
        }
        fn driver(&self, iface: &str, driver: &str) -> &Self {
            let drv = self.dir.path().join("sys/bus/pci/drivers").join(driver);
            std::fs::create_dir_all(&drv).unwrap();
            let dev = self.dir.path().join("sys/class/net").join(iface).join("device");
            std::fs::create_dir_all(&dev).unwrap();
            std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();
            self
        }
        fn module(&self, version: &str, slot: u32) -> &Self {
            self.file(
                "proc/net/pf_ring/info",
                &format!(
                    "PF_RING Version          : {version} (dev:abcdef)\nTotal rings              : 0\n\n\
                     Standard (non ZC) Options\nRing slots               : 65536\nSlot version             : {slot}\n"
                ),
            )
        }
        fn meminfo(&self, hugepages: u64) -> &Self {
            self.file("proc/meminfo", &format!("MemTotal:       16000000 kB\nHugePages_Total:    {hugepages}\n"))
        }
        fn host(&self) -> Host {
            Host::at(self.dir.path())
        }
    }

    fn lib() -> u32 {
        sys::RING_VERSION_NUM
    }

    fn lib_version() -> String {
        version_string(lib())
    }

    fn einval() -> std::io::Error {
        std::io::Error::from_raw_os_error(22)
    }

    #[test]
    fn no_proc_net_pf_ring_means_the_module_is_not_loaded() {
        let fake = FakeHost::new();
        fake.dir("sys/class/net/eth0");
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth0", einval(), lib());
        assert!(matches!(err, PfRingError::ModuleNotLoaded { .. }));
        assert_eq!(
            err.to_string(),
            "cannot open PF_RING device eth0: PF_RING kernel module not loaded (no /proc/net/pf_ring): \
             modprobe pf_ring (scripts/install_pfring.sh installs it)"
        );
        let err = diagnose_open(&fake.host(), Kind::Zc, "zc:eth0", einval(), lib());
        assert!(matches!(err, PfRingError::ModuleNotLoaded { .. }));
    }

    #[test]
    fn module_and_library_of_different_releases() {
        let fake = FakeHost::new();
        fake.module("8.4.0", sys::RING_FLOWSLOT_VERSION - 1).dir("sys/class/net/eth0");
        assert_eq!(fake.host().module_version(), Some(("8.4.0".into(), Some(sys::RING_FLOWSLOT_VERSION - 1))));
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth0", einval(), lib());
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::VersionMismatch { .. }), "{msg}");
        assert!(msg.contains(&format!("library {}", lib_version())), "{msg}");
        assert!(msg.contains("kernel module 8.4.0"), "{msg}");
        assert!(msg.contains("scripts/install_pfring.sh"), "{msg}");

        // Same release: not a mismatch; the interface is missing instead.
        let fake = FakeHost::new();
        fake.module(&lib_version(), sys::RING_FLOWSLOT_VERSION);
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth9@1", einval(), lib());
        assert!(matches!(&err, PfRingError::NoSuchInterface { iface, .. } if iface == "eth9"), "{err}");
    }

    #[test]
    fn zc_on_an_interface_without_a_zc_driver() {
        let fake = FakeHost::new();
        fake.module(&lib_version(), sys::RING_FLOWSLOT_VERSION)
            .driver("eth1", "ixgbe")
            .file("proc/net/pf_ring/dev/eth1/info", "Name:         eth1\nIndex:        4\nPolling Mode: NAPI\n")
            .meminfo(1024);
        assert_eq!(fake.host().polling_mode("eth1").as_deref(), Some("NAPI"));
        assert_eq!(fake.host().driver("eth1").as_deref(), Some("ixgbe"));
        let err = diagnose_open(&fake.host(), Kind::Zc, "zc:eth1@0", einval(), lib());
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::NoZcDriver { .. }), "{msg}");
        assert!(msg.contains("pf_ringcfg --configure-driver ixgbe --rss-queues 1"), "{msg}");
        assert!(msg.contains("Polling Mode: NAPI"), "{msg}");
    }

    #[test]
    fn zc_without_hugepages() {
        let fake = FakeHost::new();
        fake.module(&lib_version(), sys::RING_FLOWSLOT_VERSION)
            .driver("eth1", "ixgbe")
            .file("proc/net/pf_ring/dev/eth1/info", "Name:         eth1\nPolling Mode: NAPI/ZC\n")
            .meminfo(0);
        let err = diagnose_open(&fake.host(), Kind::Zc, "zc:eth1", einval(), lib());
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::NoHugepages { .. }), "{msg}");
        assert!(msg.contains("nr_hugepages") && msg.contains("hugetlbfs"), "{msg}");

        // With hugepages, the OS error is reported as it is.
        fake.meminfo(512);
        let err = diagnose_open(&fake.host(), Kind::Zc, "zc:eth1", einval(), lib());
        assert!(matches!(err, PfRingError::Open { call: "open", .. }), "{err}");
    }

    #[test]
    fn zc_cluster_queue_that_does_not_exist() {
        let fake = FakeHost::new();
        fake.module(&lib_version(), sys::RING_FLOWSLOT_VERSION).meminfo(1024);
        let err = diagnose_open(&fake.host(), Kind::Zc, "zc:99@0", einval(), lib());
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::NoZcCluster { .. }), "{msg}");
        assert!(msg.contains("zbalance_ipc -c 99"), "{msg}");
        fake.meminfo(0);
        let err = diagnose_open(&fake.host(), Kind::Zc, "zc:99@0", einval(), lib());
        assert!(matches!(err, PfRingError::NoHugepages { .. }), "{err}");
    }

    #[test]
    fn permission_denied() {
        let fake = FakeHost::new();
        fake.module(&lib_version(), sys::RING_FLOWSLOT_VERSION).dir("sys/class/net/eth0");
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth0", std::io::Error::from_raw_os_error(1), lib());
        assert!(matches!(err, PfRingError::Permission { .. }), "{err}");
        assert!(err.to_string().contains("CAP_NET_ADMIN"));
    }

    #[test]
    fn demo_mode_and_recv_errors_read_as_one_line() {
        let demo = PfRingError::DemoEnded { device: "zc:eth1".into() };
        assert!(demo.to_string().contains("5 minutes"), "{demo}");
        assert_eq!(error_name(sys::PF_RING_ERROR_END_OF_DEMO_MODE), "PF_RING_ERROR_END_OF_DEMO_MODE");
        let e = PfRingError::Recv { device: "eth0".into(), code: -7, name: error_name(-7) };
        assert_eq!(e.to_string(), "eth0: pfring_recv failed with -7 (PF_RING_ERROR_NOT_SUPPORTED)");
    }

    /// On this machine: without the kernel module, `pfring:IF` is explained, not a bare errno.
    #[test]
    fn standard_ring_on_this_host_is_explained() {
        if Host::default().module_loaded() {
            eprintln!(
                "SKIPPED: the PF_RING kernel module is loaded here; the not-loaded message is tested on fake trees"
            );
            return;
        }
        let err = PfRingSource::open(Kind::Standard, "lo").unwrap_err();
        assert!(matches!(err, PfRingError::ModuleNotLoaded { .. }), "{err}");
        let err = PfRingSource::open(Kind::Zc, "zc:lo").unwrap_err();
        assert!(matches!(err, PfRingError::ModuleNotLoaded { .. }), "{err}");
    }

    #[test]
    fn info_fields() {
        let text = "PF_RING Version          : 8.9.0 (dev:x)\nPolling Mode: NAPI/ZC\nHugePages_Total:    0\n";
        assert_eq!(info_field(text, "PF_RING Version"), Some("8.9.0 (dev:x)"));
        assert_eq!(info_field(text, "Polling Mode"), Some("NAPI/ZC"));
        assert_eq!(info_field(text, "HugePages_Total"), Some("0"));
        assert_eq!(info_field(text, "Missing"), None);
        assert_eq!(Kind::device_for("eth0", false), (Kind::Standard, "eth0".into()));
        assert_eq!(Kind::device_for("eth0@1", true), (Kind::Zc, "zc:eth0@1".into()));
        assert_eq!(Kind::device_for("zc:eth0", true), (Kind::Zc, "zc:eth0".into()));
    }
}

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
//! Not guaranteed: frames still in the PF_RING ring when the balancer stops
//! on a signal are not read out (no [`Source::finish`] here, unlike
//! AF_PACKET's: it could not be tested here, without PF_RING's kernel module),
//! nor counted as dropped. A frame's direction on the interface is not
//! carried ([`LinkDir::Unknown`]): PF_RING's extended header has one
//! (`rx_direction`, 1 received, 0 transmitted), left unread because no
//! machine of this project's tests has the kernel module to check it
//! against; so `pfring:VETH` on a container's veth attributes by the MAC
//! guess of `detector::flow_table::attribute`, not by the kernel's direction.
//!
//! The pcap device needs no kernel module (libpfring reads the file through
//! libpcap), which is how the binding is tested on machines without PF_RING's
//! kernel side. It reports no capture statistics (libpfring gives none for
//! files), and libpcap hands it microsecond timestamps even from
//! nanosecond-resolution files.
//!
//! Unsafe code: every call into libpfring is in `sys` (safe wrappers with
//! their contracts); the diagnosis of a failed open is in `diagnose`. This
//! module and `diagnose` are under the crate's `deny(unsafe_code)`.

mod diagnose;
mod sys;

use std::ffi::CString;

use pfring_sys as ffi;

pub use diagnose::{diagnose_open, error_name, Host};
pub use sys::library_version;

use super::{Frame, LinkDir, Poll, Source, SourceError, SourceStats};
use diagnose::version_string;

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
    /// PF_RING refused `CJ_FILTER`.
    #[error(
        "PF_RING device {device}: pfring_set_bpf_filter refused CJ_FILTER={expr:?} (code {rc}): \
         is the PF_RING library built with BPF support (libpcap)?"
    )]
    Filter {
        /// The device.
        device: String,
        /// The expression.
        expr: String,
        /// pfring_set_bpf_filter's return code.
        rc: i32,
    },
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

/// A PF_RING source.
#[derive(Debug)]
pub struct PfRingSource {
    ring: sys::Ring,
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
            Kind::Standard | Kind::Zc => ffi::PF_RING_PROMISC | ffi::PF_RING_TIMESTAMP,
        };
        // Some failures are explained by libpfring on stderr only: errno is what we get.
        let Some(mut ring) = sys::Ring::open(&name, SNAPLEN, flags) else {
            let cause = std::io::Error::last_os_error();
            return Err(diagnose_open(host, kind, device, cause, library_version()));
        };
        if kind != Kind::PcapFile {
            // Best effort: the name only labels the ring in /proc/net/pf_ring.
            ring.set_application_name(c"cj-balancer");
            ring.set_recv_only();
        }
        if ring.enable() != 0 {
            let cause = std::io::Error::last_os_error();
            return Err(PfRingError::Open { call: "enable", device: device.to_owned(), cause });
        }
        if kind == Kind::Zc && !sys::zc_licensed() {
            station::cj_warn!(
                "cj-balancer: {device}: PF_RING ZC runs in demo mode (no licence for this NIC): \
                 capture stops after 5 minutes; install a ZC licence or use pfring:IF"
            );
        }
        Ok(Self { ring, kind, device: device.to_owned(), stats: SourceStats::default(), ended: false })
    }

    /// Hands `CJ_FILTER` to PF_RING's own filter.
    ///
    /// # Errors
    /// PF_RING refuses it.
    pub fn set_filter(&mut self, expr: &str) -> Result<(), PfRingError> {
        let err = |rc| PfRingError::Filter { device: self.device.clone(), expr: expr.to_owned(), rc };
        let text = CString::new(expr).map_err(|_| err(-1))?;
        match self.ring.set_bpf_filter(&text) {
            0 => Ok(()),
            rc => Err(err(rc)),
        }
    }

    /// Reads `pfring_stats` into `capture_dropped` (files have none).
    fn refresh_stats(&mut self) {
        if self.kind == Kind::PcapFile {
            return;
        }
        if let Some(st) = self.ring.stats() {
            self.stats.capture_dropped = st.drop;
        }
    }
}

/// The frame's timestamp in ns: PF_RING's ns stamp, else the timeval, else `fallback`.
fn timestamp_ns(hdr: &ffi::pfring_pkthdr, fallback: u64) -> u64 {
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
            let rc = match self.ring.recv(SNAPLEN) {
                sys::Received::Frame(hdr, data) => {
                    let ts_ns = timestamp_ns(&hdr, 0);
                    let ts_ns = if ts_ns == 0 { *fallback.get_or_insert_with(now_ns) } else { ts_ns };
                    sink(&Frame {
                        ts_ns,
                        wire_len: hdr.len.max(data.len() as u32),
                        data,
                        source: 0,
                        dir: LinkDir::Unknown,
                    });
                    n += 1;
                    continue;
                }
                sys::Received::Code(rc) => rc,
            };
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
                ffi::PF_RING_ERROR_END_OF_DEMO_MODE => PfRingError::DemoEnded { device: self.device.clone() },
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
    sys::pcap_lib_version().unwrap_or_else(|| "libpcap".to_owned())
}

/// The version of PF_RING ZC inside the library, e.g. `8.9.0`.
#[must_use]
pub fn zc_version() -> Option<String> {
    sys::zc_version()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

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

    const SPEC: &str = "flows=200,packets=5000,sizes=64:30/576:30/1500:40,v6=20,vlan=10,seed=7";

    fn capture(dir: &Path, nanos: bool) -> (PathBuf, ::sim::Truth) {
        let spec: ::sim::SimSpec = SPEC.parse().unwrap();
        let path = dir.join(if nanos { "ns.pcap" } else { "us.pcap" });
        let truth = ::sim::write_pcap(&spec, &path, nanos).unwrap();
        (path, truth)
    }

    /// The generator's own frames, as written into the capture: (timestamp cut
    /// to microseconds, length, bytes): the truth the PF_RING device is held to,
    /// independent of the balancer's pcap reader.
    fn generated() -> Vec<(u64, u32, Vec<u8>)> {
        let mut gen = ::sim::SimTraffic::new(&SPEC.parse().unwrap());
        let mut buf = vec![0u8; ::sim::MAX_FRAME_LEN];
        let mut frames = Vec::new();
        while let Some((ts, len)) = gen.next_frame(&mut buf) {
            frames.push((ts / 1000 * 1000, len as u32, buf[..len].to_vec()));
        }
        frames
    }

    /// PF_RING's pcap device (no kernel module needed) gives exactly the frames
    /// the generator wrote, and the same as the balancer's own pcap reader.
    #[test]
    fn pcap_device_gives_the_generators_frames() {
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

        let want = generated();
        assert_eq!(got.len() as u64, truth.total_frames);
        assert_eq!(want.len() as u64, truth.total_frames);
        assert!(got == want, "PF_RING's frames differ from the generator's (timestamps, lengths or bytes)");
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
        let mut theirs = PfRingSource::open(Kind::PcapFile, &format!("pcap:{}", path.display())).unwrap();
        let (got, _) = drain(&mut theirs);
        assert_eq!(got.len() as u64, truth.total_frames);
        assert!(got == generated(), "PF_RING's frames differ from the generator's");
    }

    /// CJ_FILTER through PF_RING's own filter: exactly the generator's frames
    /// that libpcap's matcher passes.
    #[test]
    fn pcap_device_applies_the_capture_filter() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = capture(dir.path(), false);
        let mut theirs = PfRingSource::open(Kind::PcapFile, &format!("pcap:{}", path.display())).unwrap();
        theirs.set_filter("udp").unwrap();
        let (got, _) = drain(&mut theirs);
        let filter = crate::filter::Filter::compile("udp").unwrap().unwrap();
        let want: Vec<_> = generated().into_iter().filter(|f| filter.matches(&f.2, f.1)).collect();
        assert!(!want.is_empty() && want.len() < generated().len());
        assert!(got == want, "PF_RING passed {} frames, the filter {}", got.len(), want.len());
    }

    #[test]
    fn pcap_device_on_a_missing_file_says_so() {
        let err = PfRingSource::open(Kind::PcapFile, "pcap:/nonexistent/x.pcap").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::PcapFile { .. }), "{msg}");
        assert!(msg.contains("/nonexistent/x.pcap") && msg.contains("No such file"), "{msg}");
        assert!(!msg.contains('\n'));
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
    fn device_strings() {
        assert_eq!(Kind::device_for("eth0", false), (Kind::Standard, "eth0".into()));
        assert_eq!(Kind::device_for("eth0@1", true), (Kind::Zc, "zc:eth0@1".into()));
        assert_eq!(Kind::device_for("zc:eth0", true), (Kind::Zc, "zc:eth0".into()));
    }
}

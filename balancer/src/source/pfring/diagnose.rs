//! Why a PF_RING open failed: the host's `/proc` and `/sys` read under a root
//! directory (`/` in production, a fake tree in tests), and the one-line
//! [`PfRingError`] that names the cause and the fix.
//!
//! Guarantees: the diagnosis only reads files (no PF_RING call, no `unsafe`),
//! so every branch is tested on fake trees; a file that cannot be read is
//! "not there", never an error of its own.
//!
//! Not guaranteed: that the first cause found is the only one (the checks run
//! in a fixed order: module, versions, privileges, then the device kind's own
//! needs).

use std::path::PathBuf;

use pfring_sys as ffi;

use super::{Kind, PfRingError};

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
pub(super) fn version_string(num: u32) -> String {
    let (major, minor, patch) = ffi::version_parts(num);
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
        let slot_differs = slot.is_some_and(|s| s != ffi::RING_FLOWSLOT_VERSION);
        if module != lib || slot_differs {
            let show = |v: String, s: Option<u32>| match s {
                Some(s) => format!("{v} (slot version {s})"),
                None => v,
            };
            return PfRingError::VersionMismatch {
                device: dev,
                library: show(lib, Some(ffi::RING_FLOWSLOT_VERSION)),
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
        ffi::PF_RING_ERROR_GENERIC => "PF_RING_ERROR_GENERIC",
        ffi::PF_RING_ERROR_INVALID_ARGUMENT => "PF_RING_ERROR_INVALID_ARGUMENT",
        ffi::PF_RING_ERROR_NO_PKT_AVAILABLE => "PF_RING_ERROR_NO_PKT_AVAILABLE",
        ffi::PF_RING_ERROR_WRONG_CONFIGURATION => "PF_RING_ERROR_WRONG_CONFIGURATION",
        ffi::PF_RING_ERROR_END_OF_DEMO_MODE => "PF_RING_ERROR_END_OF_DEMO_MODE",
        ffi::PF_RING_ERROR_NOT_SUPPORTED => "PF_RING_ERROR_NOT_SUPPORTED",
        ffi::PF_RING_ERROR_INVALID_LIB_VERSION => "PF_RING_ERROR_INVALID_LIB_VERSION",
        ffi::PF_RING_ERROR_UNKNOWN_ADAPTER => "PF_RING_ERROR_UNKNOWN_ADAPTER",
        ffi::PF_RING_ERROR_NOT_ENOUGH_MEMORY => "PF_RING_ERROR_NOT_ENOUGH_MEMORY",
        ffi::PF_RING_ERROR_INVALID_STATUS => "PF_RING_ERROR_INVALID_STATUS",
        ffi::PF_RING_ERROR_RING_NOT_ENABLED => "PF_RING_ERROR_RING_NOT_ENABLED",
        ffi::PF_RING_ERROR_BAD_IFNAME => "PF_RING_ERROR_BAD_IFNAME",
        ffi::PF_RING_ERROR_MOD_NOT_LOADED => "PF_RING_ERROR_MOD_NOT_LOADED",
        ffi::PF_RING_ERROR_UNABLE_TO_MAP => "PF_RING_ERROR_UNABLE_TO_MAP",
        ffi::PF_RING_ERROR_UNABLE_TO_GET_INFO => "PF_RING_ERROR_UNABLE_TO_GET_INFO",
        ffi::PF_RING_ERROR_MMAP_FAILURE => "PF_RING_ERROR_MMAP_FAILURE",
        ffi::PF_RING_ERROR_INIT_FAILURE => "PF_RING_ERROR_INIT_FAILURE",
        _ => "unknown PF_RING error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ffi::RING_VERSION_NUM
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
        fake.module("8.4.0", ffi::RING_FLOWSLOT_VERSION - 1).dir("sys/class/net/eth0");
        assert_eq!(fake.host().module_version(), Some(("8.4.0".into(), Some(ffi::RING_FLOWSLOT_VERSION - 1))));
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth0", einval(), lib());
        let msg = err.to_string();
        assert!(matches!(err, PfRingError::VersionMismatch { .. }), "{msg}");
        assert!(msg.contains(&format!("library {}", lib_version())), "{msg}");
        assert!(msg.contains("kernel module 8.4.0"), "{msg}");
        assert!(msg.contains("scripts/install_pfring.sh"), "{msg}");

        // Same release: not a mismatch; the interface is missing instead.
        let fake = FakeHost::new();
        fake.module(&lib_version(), ffi::RING_FLOWSLOT_VERSION);
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth9@1", einval(), lib());
        assert!(matches!(&err, PfRingError::NoSuchInterface { iface, .. } if iface == "eth9"), "{err}");
    }

    #[test]
    fn zc_on_an_interface_without_a_zc_driver() {
        let fake = FakeHost::new();
        fake.module(&lib_version(), ffi::RING_FLOWSLOT_VERSION)
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
        fake.module(&lib_version(), ffi::RING_FLOWSLOT_VERSION)
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
        fake.module(&lib_version(), ffi::RING_FLOWSLOT_VERSION).meminfo(1024);
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
        fake.module(&lib_version(), ffi::RING_FLOWSLOT_VERSION).dir("sys/class/net/eth0");
        let err = diagnose_open(&fake.host(), Kind::Standard, "eth0", std::io::Error::from_raw_os_error(1), lib());
        assert!(matches!(err, PfRingError::Permission { .. }), "{err}");
        assert!(err.to_string().contains("CAP_NET_ADMIN"));
    }

    #[test]
    fn demo_mode_and_recv_errors_read_as_one_line() {
        let demo = PfRingError::DemoEnded { device: "zc:eth1".into() };
        assert!(demo.to_string().contains("5 minutes"), "{demo}");
        assert_eq!(error_name(ffi::PF_RING_ERROR_END_OF_DEMO_MODE), "PF_RING_ERROR_END_OF_DEMO_MODE");
        let e = PfRingError::Recv { device: "eth0".into(), code: -7, name: error_name(-7) };
        assert_eq!(e.to_string(), "eth0: pfring_recv failed with -7 (PF_RING_ERROR_NOT_SUPPORTED)");
    }

    #[test]
    fn info_fields() {
        let text = "PF_RING Version          : 8.9.0 (dev:x)\nPolling Mode: NAPI/ZC\nHugePages_Total:    0\n";
        assert_eq!(info_field(text, "PF_RING Version"), Some("8.9.0 (dev:x)"));
        assert_eq!(info_field(text, "Polling Mode"), Some("NAPI/ZC"));
        assert_eq!(info_field(text, "HugePages_Total"), Some("0"));
        assert_eq!(info_field(text, "Missing"), None);
    }
}

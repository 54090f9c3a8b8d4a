//! `CJ_IFACE`: what the balancer captures from, parsed into a [`SourceSpec`]
//! by [`StationConfig::source`].
//!
//! # Guarantees
//!
//! A `SourceSpec` names an existing pcap file, a valid `sim:` spec (parsed by
//! [`SimSpec`](crate::simspec::SimSpec), which lives in this crate because
//! this check needs it) or interface names of 1 to 15 characters, each listed
//! once; anything else is a one-line [`ConfigError`].
//!
//! # Not guaranteed
//!
//! That a named interface exists, or that a pcap file is one: the source
//! that opens it says so.

use std::path::{Path, PathBuf};

use super::{ConfigError, StationConfig};

/// What CJ_IFACE names.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceSpec {
    /// `pcap:FILE`
    Pcap(PathBuf),
    /// `sim:SPEC`
    Sim(crate::simspec::SimSpec),
    /// `eth0` or `eth1,eth2` (AF_PACKET)
    Interfaces(Vec<String>),
    /// `containers`: the host veth of every container, followed as they come and go (AF_PACKET)
    Containers,
    /// `pfring:IF`
    PfRing(String),
    /// `zc:IF`
    Zc(String),
}

impl SourceSpec {
    /// A source that captures from this host's interfaces (it never ends by
    /// itself, and what it misses is gone): AF_PACKET, `containers`, PF_RING.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Interfaces(_) | Self::Containers | Self::PfRing(_) | Self::Zc(_))
    }
}

/// Opens the capture file of `CJ_IFACE=pcap:FILE` for reading, and checks on
/// the open file that it is a regular file. The open does not block
/// (`O_NONBLOCK`, which reads of a regular file ignore): a FIFO put in the
/// file's place between a look at the path and the open would otherwise hang
/// the process until some writer opened it, deaf to SIGTERM.
///
/// # Errors
/// The file cannot be opened, or is not a regular file (a FIFO, a device, a
/// directory).
pub fn open_capture(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let not_regular = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, a device or a directory): give a pcap or pcapng file",
        )
    };
    // A look at the path first, so that a device is never opened (an open may
    // act: /dev/watchdog's arms it); then the open file itself (a FIFO swapped in).
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(flags.bits()).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

impl StationConfig {
    /// Parses and checks CJ_IFACE.
    ///
    /// # Errors
    /// Empty, unknown prefix, missing pcap file, bad sim spec.
    pub fn source(&self) -> Result<SourceSpec, ConfigError> {
        let origin = self.origin("CJ_IFACE");
        let raw = self.iface.as_str();
        let err = |expected: String| ConfigError::new("CJ_IFACE", raw, origin, expected);
        let s = raw.trim();
        if s.is_empty() {
            return Err(err("a source: pcap:FILE, sim:SPEC or an interface name".into()));
        }
        if let Some(file) = s.strip_prefix("pcap:") {
            let path = PathBuf::from(file);
            let ok = !file.is_empty() && open_capture(&path).is_ok();
            return if ok { Ok(SourceSpec::Pcap(path)) } else { Err(err("an existing pcap/pcapng file".into())) };
        }
        if let Some(spec) = s.strip_prefix("sim:") {
            return spec.parse::<crate::simspec::SimSpec>().map(SourceSpec::Sim).map_err(err);
        }
        if let Some(name) = s.strip_prefix("pfring:") {
            // PF_RING's own pcap device: pfring:pcap:FILE (tests the binding without the kernel module).
            if let Some(file) = name.strip_prefix("pcap:") {
                let ok = !file.is_empty() && Path::new(file).is_file();
                return if ok {
                    Ok(SourceSpec::PfRing(name.to_owned()))
                } else {
                    Err(err("pfring:pcap:FILE with an existing pcap file".into()))
                };
            }
            check_ifname(name).map_err(|e| err(format!("pfring:IF with {e}")))?;
            self.not_a_divert_device(&[name]).map_err(err)?;
            return Ok(SourceSpec::PfRing(name.to_owned()));
        }
        if let Some(name) = s.strip_prefix("zc:") {
            check_ifname(name).map_err(|e| err(format!("zc:IF with {e}")))?;
            return Ok(SourceSpec::Zc(name.to_owned()));
        }
        if s == "containers" {
            return Ok(SourceSpec::Containers);
        }
        if s.starts_with("containers:") {
            return Err(err("pcap:FILE, sim:SPEC, pfring:IF, zc:IF, containers or interface names".into()));
        }
        if let Some((prefix, _)) = s.split_once(':') {
            if !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphabetic()) && !s.contains(',') {
                return Err(err(format!(
                    "pcap:FILE, sim:SPEC, pfring:IF, zc:IF or interface names; '{prefix}:' is not a source kind"
                )));
            }
        }
        let mut names: Vec<String> = Vec::new();
        for name in s.split(',') {
            check_ifname(name).map_err(|e| err(format!("interface names separated by commas, each {e}")))?;
            if names.iter().any(|n| n == name) {
                return Err(err(format!(
                    "each interface once; {name} is listed twice (every frame of it would be counted twice): \
                     remove the repeat"
                )));
            }
            names.push(name.to_owned());
        }
        self.not_a_divert_device(&names).map_err(err)?;
        Ok(SourceSpec::Interfaces(names))
    }

    /// With flow divert on, none of `names` may be a tun device a worker
    /// writes to (`tun<CJ_TUN_OFFSET + queue>`): every packet mirrored or
    /// diverted to it would be captured again, written again, and so on
    /// without end (one UDP packet sent out such a device came back as 302
    /// frames in 4 s, until the station was stopped).
    fn not_a_divert_device<S: AsRef<str>>(&self, names: &[S]) -> Result<(), String> {
        if !self.tun {
            return Ok(());
        }
        let devices: Vec<String> =
            self.worker_queues().iter().map(|q| format!("tun{}", u64::from(self.tun_offset) + u64::from(*q))).collect();
        let Some(name) = names.iter().map(AsRef::as_ref).find(|n| devices.iter().any(|d| d == n)) else {
            return Ok(());
        };
        Err(format!(
            "interfaces other than the tun devices flow divert writes to (CJ_TUN=yes: {}..{}, tun<CJ_TUN_OFFSET + \
             queue>): capturing {name} would capture every packet mirrored or diverted to it again, without end; \
             set CJ_TUN_OFFSET past them",
            devices[0],
            devices[devices.len() - 1]
        ))
    }
}

/// Checks an interface name: 1 to 15 bytes, no `/`, no whitespace, no comma.
fn check_ifname(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && !name.contains('/')
        && !name.contains(',')
        && !name.contains(':')
        && !name.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err("1 to 15 characters without '/', ':' or whitespace".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn source_kinds() {
        let with = |iface: &str| StationConfig { iface: iface.to_owned(), ..StationConfig::default() };
        assert_eq!(with("eth0").source().unwrap(), SourceSpec::Interfaces(vec!["eth0".into()]));
        assert_eq!(with("eth1,eth2").source().unwrap(), SourceSpec::Interfaces(vec!["eth1".into(), "eth2".into()]));
        assert_eq!(with("pfring:eth0").source().unwrap(), SourceSpec::PfRing("eth0".into()));
        assert_eq!(with("zc:99@0").source().unwrap(), SourceSpec::Zc("99@0".into()));
        let SourceSpec::Sim(s) = with("sim:flows=10,packets=100").source().unwrap() else { panic!() };
        assert_eq!((s.flows, s.packets), (10, 100));
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "x.pcap", "x");
        assert_eq!(with(&format!("pcap:{}", p.display())).source().unwrap(), SourceSpec::Pcap(p));
    }

    #[test]
    fn source_errors() {
        let with = |iface: &str| StationConfig { iface: iface.to_owned(), ..StationConfig::default() };
        let e = |iface: &str| with(iface).source().unwrap_err().to_string();
        assert_eq!(e(""), r#"CJ_IFACE="" (default): expected a source: pcap:FILE, sim:SPEC or an interface name"#);
        assert_eq!(
            e("pcap:/nonexistent.pcap"),
            r#"CJ_IFACE="pcap:/nonexistent.pcap" (default): expected an existing pcap/pcapng file"#
        );
        assert_eq!(e("pcap:/tmp"), r#"CJ_IFACE="pcap:/tmp" (default): expected an existing pcap/pcapng file"#);
        assert!(e("sim:bogus=1").starts_with(r#"CJ_IFACE="sim:bogus=1" (default): expected a key among flows"#));
        assert_eq!(with("containers").source().unwrap(), SourceSpec::Containers);
        assert!(e("containers:x").contains("containers or interface names"));
        assert!(e("foo:bar").contains("'foo:' is not a source kind"));
        assert_eq!(
            e("averyveryverylongname"),
            r#"CJ_IFACE="averyveryverylongname" (default): expected interface names separated by commas, each 1 to 15 characters without '/', ':' or whitespace"#
        );
        assert!(e("eth0,").contains("interface names"));
        assert_eq!(
            e("eth1,eth2,eth1"),
            r#"CJ_IFACE="eth1,eth2,eth1" (default): expected each interface once; eth1 is listed twice (every frame of it would be counted twice): remove the repeat"#
        );
        assert!(e("a/b").contains("interface names"));
        assert!(e("zc:").contains("zc:IF"));
        let c = StationConfig::load_from(&env(&[("CJ_IFACE", "")]), None).unwrap();
        assert!(c.source().unwrap_err().to_string().contains("(environment)"));
    }

    #[test]
    fn capturing_a_tun_device_the_workers_write_to_is_refused() {
        // Queues 2 and 3 write to tun7 and tun8: capturing either would capture every packet they
        // mirror or divert again, and write it again, without end.
        let cfg = |iface: &str, tun: bool| StationConfig {
            iface: iface.to_owned(),
            tun,
            tun_offset: 5,
            queue_offset: 2,
            corecount: 2,
            ..StationConfig::default()
        };
        for iface in ["tun8", "eth0,tun7", "pfring:tun7"] {
            let e = cfg(iface, true).source().unwrap_err().to_string();
            assert!(e.starts_with(&format!("CJ_IFACE=\"{iface}\" (default): expected interfaces other than")), "{e}");
            assert!(e.contains("set CJ_TUN_OFFSET past them"), "{e}");
            assert!(!e.contains('\n'));
        }
        assert!(cfg("tun6,tun9", true).source().is_ok(), "no worker writes to these");
        assert!(cfg("tun7", false).source().is_ok(), "flow divert off");
        assert!(cfg("containers", true).source().is_ok());
    }
}

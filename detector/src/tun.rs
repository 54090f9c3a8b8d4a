//! A worker's tun device: opened once at start, written without blocking.
//!
//! Guarantees:
//! - [`Tun::open`] attaches to an *existing* tun device (`ip tuntap add dev
//!   NAME mode tun`, which `on-reboot.sh` runs with `CJ_TUN=yes`) through the
//!   `tun-tap` crate, without packet information (`IFF_NO_PI`: every write is
//!   one bare IP packet) and non-blocking. It never creates a device: a name
//!   that does not exist, names another kind of interface, or cannot be
//!   attached is a [`TunError`] whose message is one line naming the device,
//!   the cause and the command that fixes it.
//! - [`Tun::write`] is one `write(2)` of one IP packet and never blocks: a
//!   full device queue (`EAGAIN`, `ENOBUFS`) is [`WriteFailure::Full`], every
//!   other refusal [`WriteFailure::Error`] with its errno; the caller counts
//!   both as dropped at the tun device. Nothing is allocated.
//!
//! Not guaranteed: that the kernel delivers what it accepted. A packet the
//! device took may still be dropped behind it (the receiving stack's
//! backlog, routing, `rp_filter`); the device's own `rx_dropped` counts
//! those, not this station.

use std::io::ErrorKind;
use std::path::Path;

/// Where Linux shows network interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// Why a worker cannot use its tun device; each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The kernel's tun driver has no control device here.
    #[error(
        "cannot open tun device {name}: no /dev/net/tun (load the driver with `modprobe tun`; in a container, \
         map the device: `--device /dev/net/tun`)"
    )]
    NoControlDevice {
        /// The device's name.
        name: String,
    },
    /// No interface of that name.
    #[error(
        "tun device {name} does not exist: create it with `ip tuntap add dev {name} mode tun && ip link set {name} up` \
         (on-reboot.sh does so for every worker with CJ_TUN=yes), or set CJ_TUN=no"
    )]
    Missing {
        /// The device's name.
        name: String,
    },
    /// An interface of that name that is not a tun/tap device.
    #[error(
        "{name} is not a tun device (it has no {SYS_CLASS_NET}/{name}/tun_flags): choose another CJ_TUN_OFFSET, \
         or delete it and create a tun device with `ip tuntap add dev {name} mode tun`"
    )]
    NotTun {
        /// The device's name.
        name: String,
    },
    /// The kernel refused the attachment.
    #[error("cannot attach to tun device {name}: {source}{}", attach_hint(name, source))]
    Attach {
        /// The device's name.
        name: String,
        /// What `TUNSETIFF` (or the open) said.
        source: std::io::Error,
    },
    /// The descriptor could not be made non-blocking.
    #[error("cannot make tun device {name} non-blocking: {source}")]
    NonBlocking {
        /// The device's name.
        name: String,
        /// What the ioctl said.
        source: std::io::Error,
    },
}

fn attach_hint(name: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            " (cj-detector needs CAP_NET_ADMIN, or a device made for its user: \
             `ip tuntap add dev {name} mode tun user USER`)"
        ),
        Some(libc::EBUSY) => " (another process holds it: another cj-detector with the same CJ_TUN_OFFSET?)".into(),
        Some(libc::EINVAL) => format!(
            " (it is a tap or multi-queue device: recreate it with `ip link del {name} && ip tuntap add dev {name} mode tun`)"
        ),
        _ => String::new(),
    }
}

/// Why one packet was not written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFailure {
    /// The device's queue is full (`EAGAIN`/`ENOBUFS`): dropped, counted.
    Full,
    /// Another refusal (the errno): dropped, counted, logged rate-limited.
    Error(i32),
}

/// One attached tun device.
#[derive(Debug)]
pub struct Tun {
    iface: tun_tap::Iface,
}

impl Tun {
    /// Attaches to the existing tun device `name`, without packet
    /// information, non-blocking.
    ///
    /// # Errors
    /// See [`TunError`]: no `/dev/net/tun`, no such interface, not a tun
    /// device, the kernel refused (privilege, in use, tap or multi-queue), or
    /// the descriptor could not be made non-blocking.
    pub fn open(name: &str) -> Result<Self, TunError> {
        let name_owned = || name.to_owned();
        let sys = Path::new(SYS_CLASS_NET).join(name);
        if !sys.exists() {
            return Err(TunError::Missing { name: name_owned() });
        }
        if !sys.join("tun_flags").exists() {
            return Err(TunError::NotTun { name: name_owned() });
        }
        if !Path::new("/dev/net/tun").exists() {
            return Err(TunError::NoControlDevice { name: name_owned() });
        }
        // TUNSETIFF on a name that exists attaches to that device; it would
        // create one only if the name were free, which was checked above
        // (a race with `ip link del` creates a device that ends with us).
        let iface = tun_tap::Iface::without_packet_info(name, tun_tap::Mode::Tun)
            .map_err(|source| TunError::Attach { name: name_owned(), source })?;
        iface.set_non_blocking().map_err(|source| TunError::NonBlocking { name: name_owned(), source })?;
        Ok(Tun { iface })
    }

    /// The device's name as the kernel gave it.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// Writes one IP packet; never blocks.
    ///
    /// # Errors
    /// [`WriteFailure::Full`] when the device's queue is full, else
    /// [`WriteFailure::Error`] with the errno.
    #[inline]
    pub fn write(&self, packet: &[u8]) -> Result<(), WriteFailure> {
        match self.iface.send(packet) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Err(WriteFailure::Full),
            Err(e) => match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) => Err(WriteFailure::Full),
                Some(n) => Err(WriteFailure::Error(n)),
                None => Err(WriteFailure::Error(0)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_says_how_to_create_it() {
        let e = Tun::open("cjnosuchtun0").unwrap_err().to_string();
        assert_eq!(
            e,
            "tun device cjnosuchtun0 does not exist: create it with `ip tuntap add dev cjnosuchtun0 mode tun && \
             ip link set cjnosuchtun0 up` (on-reboot.sh does so for every worker with CJ_TUN=yes), or set CJ_TUN=no"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn an_interface_that_is_not_a_tun_device_is_refused() {
        // The loopback interface exists everywhere and is no tun device.
        let e = Tun::open("lo").unwrap_err().to_string();
        assert!(e.starts_with("lo is not a tun device"), "{e}");
    }

    #[test]
    fn attach_errors_name_the_likely_cause() {
        let e = TunError::Attach { name: "tun3".into(), source: std::io::Error::from_raw_os_error(16) };
        assert!(e.to_string().contains("another cj-detector with the same CJ_TUN_OFFSET?"), "{e}");
        let e = TunError::Attach { name: "tun3".into(), source: std::io::Error::from_raw_os_error(1) };
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
    }
}

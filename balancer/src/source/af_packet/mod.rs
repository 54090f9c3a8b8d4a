//! `IF` or `IF1,IF2,...`: live capture with AF_PACKET `TPACKET_V3` mmap rings.
//!
//! One ring per interface (`CJ_AFP_BLOCK_SIZE` x `CJ_AFP_BLOCK_COUNT` bytes,
//! blocks retired by the kernel after `CJ_AFP_BLOCK_TIMEOUT_MS`), all read by
//! the balancer's one thread: ready blocks are drained round robin, one block
//! per interface per turn, and `poll(2)` waits a few milliseconds when no ring
//! has anything. [`Frame::source`] is the interface's index in the list
//! (the `containers` source adds and removes rings at run time with stable
//! indices of its own); the list is written to `<cluster dir>/sources` for
//! the detector's attribution.
//!
//! Guarantees:
//! - Every frame the kernel puts in a ring is handed to the sink exactly once,
//!   with the kernel's timestamp (hardware when the NIC stamps and the socket
//!   asked for it, software otherwise), `wire_len` = the length on the wire and
//!   the captured bytes (`tp_snaplen`; shorter than `wire_len` only when a
//!   frame is larger than a block).
//! - A VLAN tag the kernel took out of the frame (its metadata says so) is put
//!   back after the MAC addresses, with its TPID (0x8100 when the kernel does
//!   not report one), and counts in `wire_len`: flows are keyed by VLAN as on
//!   the wire. The copy goes into a per-source scratch buffer (no allocation).
//! - Frames the kernel could not put in a ring (`PACKET_STATISTICS` `tp_drops`)
//!   are [`SourceStats::capture_dropped`]; the kernel's counters are read and
//!   accumulated at least every 100 ms while busy, on every idle round, and
//!   when the source is dropped. When capture stops ([`Source::finish`], the
//!   balancer stopped by a signal; an interface the `containers` source lets
//!   go) the socket's filter is replaced by one that takes no frame (the
//!   kernel neither rings nor counts a frame a socket filter refuses), the
//!   ring is read until the kernel has retired the block it was filling (the
//!   block timeout and 20 ms more), and a frame the kernel counted into the
//!   ring that never came out of it is counted in `capture_dropped` too:
//!   received + dropped equals the kernel's count. So a stop takes that long
//!   whatever traffic still comes (binding the socket to protocol 0 instead,
//!   as before, is "keep the protocol" to the kernel: the ring kept filling
//!   and a balancer on a busy link never stopped). Interfaces let go together
//!   settle together, the other rings read meanwhile, and their sockets are
//!   closed by a thread of their own (a packet socket's close waits for an
//!   RCU grace period, 20 to 300 ms here): 24 container veths let go at once
//!   stopped every other capture for over a second before. At the end every
//!   ring's socket is closed at once, on threads of their own.
//! - Every frame carries its direction on its interface, as the kernel
//!   says it in the ring entry (`sll_pkttype`): [`super::LinkDir::Outbound`]
//!   for a frame the host sent on it (`PACKET_OUTGOING`; on a container's
//!   host veth, a frame into the container), [`super::LinkDir::Inbound`] for
//!   one it received (from the container). One byte read per frame, no
//!   system call. See `ring` for the values.
//! - On a loopback interface the kernel hands every frame over twice (going
//!   out and coming in): the outgoing copy is not taken
//!   (`PACKET_IGNORE_OUTGOING`, Linux 4.20; before, a warning says frames count
//!   twice), as libpcap does; every frame of `lo` is then inbound. A ring entry whose offsets point outside its
//!   block is counted in [`SourceStats::errors`] and the rest of that block is
//!   skipped (never read out of bounds).
//! - An interface that goes down, loses its carrier or disappears does not
//!   stop the source: one line is logged per transition and capture goes on
//!   when it is back (an interface deleted and created again is bound again,
//!   also when that happened between two looks at the link, a second apart).
//!   A first up of an interface that was down at start says "up", not "up
//!   again". The source never ends by itself.
//! - An interface renamed while captured stays captured: a packet socket is
//!   bound by ifindex, which a rename keeps (`getsockname` says whether the
//!   socket is still bound to its device: the kernel unbinds it when the
//!   device is deleted or leaves the network namespace, never on a rename).
//!   For a fixed list the log says so, link states are looked up under the
//!   new name, and the ring keeps its configured name and index; an
//!   interface that later takes the configured name is captured instead
//!   (the list names interfaces). The `containers` source renames the ring
//!   in place when the capture list follows the rename ([`AfPacketSource::rename`]).
//! - Rings of the `containers` source say a veth that went down or is gone
//!   only when it stays so for a second while the capture list still names
//!   it: a stopping container's veth goes down, is deleted and leaves the
//!   list within milliseconds, and its one line is the one that lets its
//!   ring go (said by the `containers` source, with the reason).
//! - Nothing is allocated and no system call is made per frame.
//! - Framing, from the interface's `ARPHRD_*` type (`/sys/class/net/IF/type`):
//!   Ethernet (`ARPHRD_ETHER`) and loopback (`ARPHRD_LOOPBACK`, an Ethernet
//!   header with zero MACs) are read with a `SOCK_RAW` socket and delivered
//!   as captured, `wire_len` counting the 14-byte header. Interfaces without
//!   an Ethernet header ([`COOKED`]: tun and WireGuard (`ARPHRD_NONE`),
//!   `ARPHRD_RAWIP`, PPP, IPIP/SIT/GRE tunnels) are read with a `SOCK_DGRAM`
//!   socket: the kernel hands the network layer and names its protocol, and
//!   the frame is delivered in its Ethernet form (MACs zero, that protocol as
//!   EtherType, the captured bytes), the form the pcap source gives a raw IP
//!   capture; `wire_len` is the network-layer length (`tp_len`), so frame
//!   bytes are what the interface carried and what its kernel counters count.
//!   Any other type is the one-line [`AfPacketError::UnsupportedLink`];
//!   `CJ_FILTER` on a `SOCK_DGRAM` interface is [`AfPacketError::FilterOnCooked`]
//!   (the program is compiled for Ethernet frames). The start line names
//!   each interface's framing.
//!
//! Not guaranteed: frames the NIC or driver dropped before the kernel saw them
//! (see `ethtool -S`); frames merged by GRO/LRO arrive as one large frame (turn
//! the offloads off, see the README). On a `SOCK_DGRAM` interface a VLAN tag
//! the kernel reports is not put back (such interfaces carry none), and the
//! framing of a type that can be read both ways is the table's, not probed.
//!
//! Unsafe code: the ring is memory shared with the kernel, and capturing
//! takes system calls with C structs; all of that is in `sys` (with
//! `pfring::sys`, the balancer's only modules with `unsafe`). `ring` walks
//! the blocks through `sys`'s safe block loans; this module (link watching,
//! statistics, the diagnosis of a failed open, the [`Source`] impl) and
//! `ring` are under the crate's `deny(unsafe_code)`.

mod ring;
mod sys;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use station::config::StationConfig;

use super::{Frame, Poll, Source, SourceStats};

/// `ETH_P_ALL` in network byte order, for `socket` and `bind`.
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// `tp_frame_size`: TPACKET_V3 packs variable-size entries, this only sets the
/// kernel's frame count; entries may be as large as a block.
const FRAME_SIZE: u32 = 2048;
/// How long one idle round waits in `poll(2)`.
const POLL_TIMEOUT_MS: i32 = 5;
/// Kernel counters are read at least this often while frames flow.
const STATS_EVERY: Duration = Duration::from_millis(100);
/// Link states are looked at this often.
const LINK_EVERY: Duration = Duration::from_secs(1);

/// Ring geometry and socket options, from `CJ_AFP_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingParams {
    /// Bytes per block (a power of two, at least a page).
    pub block_size: u32,
    /// Blocks per ring.
    pub block_count: u32,
    /// Milliseconds after which the kernel hands over a block that is not full.
    pub block_timeout_ms: u32,
    /// Put the interfaces in promiscuous mode.
    pub promisc: bool,
    /// `CJ_FILTER`'s program, attached in the kernel to every ring (empty: none).
    pub filter: Vec<crate::filter::Insn>,
}

impl RingParams {
    /// The values of `CJ_AFP_BLOCK_SIZE`, `CJ_AFP_BLOCK_COUNT`,
    /// `CJ_AFP_BLOCK_TIMEOUT_MS` and `CJ_AFP_PROMISC`.
    pub fn from_config(c: &StationConfig) -> Self {
        Self {
            block_size: c.afp_block_size,
            block_count: c.afp_block_count,
            block_timeout_ms: c.afp_block_timeout.as_millis() as u32,
            promisc: c.afp_promisc,
            filter: Vec::new(),
        }
    }

    /// Bytes of one ring.
    pub fn ring_bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.block_count)
    }
}

/// Why an interface cannot be captured; one variant per failing step.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// A `CJ_AFP_*` variable is invalid.
    #[error("{0}")]
    Config(#[from] station::config::ConfigError),
    /// `if_nametoindex` does not know the name.
    #[error("CJ_IFACE: no interface named {name} (ip link shows the names)")]
    NoInterface {
        /// The name as given.
        name: String,
    },
    /// The interface's framing is not one the station reads.
    #[error(
        "CJ_IFACE: {name} has link type {link_type} (ARPHRD_*, /sys/class/net/{name}/type), which the station does \
         not read; it captures Ethernet, loopback and raw IP interfaces (tun, WireGuard, PPP, IP tunnels): capture \
         it with tcpdump -w and read the file with pcap:FILE if tcpdump decodes it"
    )]
    UnsupportedLink {
        /// The interface.
        name: String,
        /// `/sys/class/net/IF/type` (ARPHRD_*).
        link_type: u32,
    },
    /// `CJ_FILTER` on an interface read with `SOCK_DGRAM`, where the kernel
    /// would run the Ethernet program over network-layer bytes.
    #[error(
        "CJ_IFACE={name}: CJ_FILTER cannot be used on this {framing} interface (the filter is compiled for Ethernet \
         frames and the kernel would run it over the network layer); unset CJ_FILTER or capture an Ethernet interface"
    )]
    FilterOnCooked {
        /// The interface.
        name: String,
        /// Its framing's name, e.g. `raw IP (ARPHRD_NONE)`.
        framing: &'static str,
    },
    /// More interfaces than [`Frame::source`] can number.
    #[error("CJ_IFACE: {count} interfaces; one balancer captures at most 255")]
    TooMany {
        /// How many were listed.
        count: usize,
    },
    /// `socket(AF_PACKET)` failed for lack of privilege.
    #[error(
        "CJ_IFACE={name}: capturing needs CAP_NET_RAW ({cause}); run cj-balancer as root or \
         `setcap cap_net_raw,cap_net_admin+ep cj-balancer`"
    )]
    Permission {
        /// The interface.
        name: String,
        /// The OS error.
        cause: io::Error,
    },
    /// A setup call failed.
    #[error("CJ_IFACE={name}: {call} failed: {cause}{hint}")]
    Setup {
        /// The interface.
        name: String,
        /// The call, e.g. `setsockopt(PACKET_RX_RING)`.
        call: &'static str,
        /// The OS error.
        cause: io::Error,
        /// What to do about it (starts with "; " or is empty).
        hint: String,
    },
}

/// An interface type the station reads: its `ARPHRD_*` number, its name in
/// the start line and how its frames are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkKind {
    /// `ARPHRD_*` (linux/if_arp.h).
    pub arphrd: u16,
    /// For the start line and errors.
    pub name: &'static str,
    /// `SOCK_RAW` and delivered as captured, or `SOCK_DGRAM` and delivered in Ethernet form.
    framing: ring::Framing,
}

/// `ARPHRD_LOOPBACK`.
const LOOPBACK_ARPHRD: u16 = 772;

/// Ethernet-framed types: read with `SOCK_RAW`, delivered as captured.
pub const ETHERNET_FRAMED: [LinkKind; 2] = [
    LinkKind { arphrd: 1, name: "Ethernet (ARPHRD_ETHER)", framing: ring::Framing::Ethernet },
    LinkKind {
        arphrd: LOOPBACK_ARPHRD,
        name: "loopback (ARPHRD_LOOPBACK, Ethernet header, MACs zero)",
        framing: ring::Framing::Ethernet,
    },
];

/// Types without an Ethernet header: read with `SOCK_DGRAM` (network layer
/// and protocol from the kernel), delivered in Ethernet form.
pub const COOKED: [LinkKind; 8] = [
    LinkKind { arphrd: 0xfffe, name: "raw IP (ARPHRD_NONE: tun, WireGuard)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 519, name: "raw IP (ARPHRD_RAWIP)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 512, name: "PPP (ARPHRD_PPP)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 768, name: "IPIP tunnel (ARPHRD_TUNNEL)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 769, name: "IPv6 tunnel (ARPHRD_TUNNEL6)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 776, name: "SIT tunnel (ARPHRD_SIT)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 778, name: "GRE tunnel (ARPHRD_IPGRE)", framing: ring::Framing::Cooked },
    LinkKind { arphrd: 823, name: "IPv6 GRE tunnel (ARPHRD_IP6GRE)", framing: ring::Framing::Cooked },
];

impl LinkKind {
    /// The kind of `ARPHRD_*` number `arphrd`, `None` for a type the station does not read.
    pub fn of(arphrd: u32) -> Option<LinkKind> {
        ETHERNET_FRAMED.iter().chain(COOKED.iter()).find(|k| u32::from(k.arphrd) == arphrd).copied()
    }

    /// True when read with `SOCK_DGRAM` and delivered in Ethernet form.
    pub fn is_cooked(self) -> bool {
        self.framing == ring::Framing::Cooked
    }

    /// How the start line says it: `Ethernet (ARPHRD_ETHER)`, or for a cooked
    /// type its name and how it is read.
    fn describe(self) -> String {
        if self.is_cooked() {
            format!("{}, read as network layer (SOCK_DGRAM) in Ethernet form, MACs zero", self.name)
        } else {
            self.name.to_owned()
        }
    }
}

/// What the link looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Up (or `unknown`, which virtual devices report when they work).
    Up,
    /// Down, no carrier, dormant: the word from `operstate` or the error.
    Down,
    /// The interface no longer exists; the socket is unbound.
    Gone,
}

/// The kernel's `PACKET_STATISTICS`, accumulated (each read resets them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames the kernel handed to the socket, including the dropped ones.
    pub packets: u64,
    /// Frames dropped because the ring was full.
    pub drops: u64,
    /// Times the ring froze (every block owned by user space).
    pub freeze_q_cnt: u64,
    /// Frames the kernel put in the ring that were never read out of it
    /// (counted when capture stops: see [`AfPacketSource::settle`]).
    pub left: u64,
}

/// A ring [`AfPacketSource::remove_all`] let go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// The interface's name.
    pub name: String,
    /// Its `Frame::source`.
    pub source: u8,
    /// Its kernel counters, final.
    pub kernel: KernelStats,
    /// Its socket was no longer bound to its interface: the interface was
    /// deleted (or moved to another network namespace).
    pub deleted: bool,
}

/// One interface: socket, ring, walk position, link state and counters.
struct Ring {
    name: String,
    ifindex: i32,
    kind: LinkKind,
    // Declared before `fd`: the mapping is released before the socket is closed.
    blocks: ring::BlockRing,
    fd: OwnedFd,
    link: Link,
    /// `operstate` (or the error) that set `link`, and when.
    link_why: String,
    link_since: Instant,
    /// The link has been up since the ring was opened: a later up is "up
    /// again", a first one only "up".
    was_up: bool,
    /// Opened for the `containers` source, which follows the detector's
    /// capture list: a veth that goes down or is deleted is said only when it
    /// stays so for [`LINK_EVERY`] while the list still names it (a stopping
    /// container's veth goes down, is deleted and leaves the list within
    /// milliseconds: its one line is the one that lets its ring go).
    managed: bool,
    /// A managed ring's down or deleted state was logged: its next up is said.
    said_down: bool,
    /// No interface has `name` any more, but the socket is still bound to the
    /// device it was bound to, which now has this name (the kernel keeps a
    /// packet socket's binding across a rename).
    renamed_to: Option<String>,
    promisc: bool,
    kernel: KernelStats,
    /// Frames read out of the ring and handed to the sink.
    delivered: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .field("link", &self.link)
            .field("renamed_to", &self.renamed_to)
            .field("kernel", &self.kernel)
            .finish()
    }
}

/// The live source over one or more interfaces.
#[derive(Debug)]
pub struct AfPacketSource {
    rings: Vec<Ring>,
    /// `Frame::source` of each ring (its position for a fixed list; stable
    /// indices given by the `containers` source otherwise).
    sources: Vec<u8>,
    /// Kernel counters of rings removed at run time.
    retired: KernelStats,
    pollfds: Vec<libc::pollfd>,
    /// Frames with a VLAN tag put back are rebuilt here.
    scratch: Box<[u8]>,
    /// Ring that gets the next turn.
    next_ring: usize,
    params: RingParams,
    timestamps: &'static str,
    errors: u64,
    last_stats: Instant,
    last_link: Instant,
}

fn os_err(name: &str, call: &'static str, hint: impl Into<String>) -> AfPacketError {
    AfPacketError::Setup { name: name.to_owned(), call, cause: io::Error::last_os_error(), hint: hint.into() }
}

/// `/sys/class/net/NAME/operstate` as a link state (`Gone` when the file is missing).
fn read_link(name: &str) -> (Link, String) {
    match std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")) {
        Ok(s) => {
            let word = s.trim().to_owned();
            let link = if word == "up" || word == "unknown" { Link::Up } else { Link::Down };
            (link, word)
        }
        Err(_) => (Link::Gone, "gone".to_owned()),
    }
}

/// Checks that `name` exists, has a framing the station reads and may be
/// captured: its ifindex, its [`LinkKind`] (Ethernet when its type cannot be
/// read) and a packet socket of that framing that receives nothing yet
/// (protocol 0: nothing is queued on it before the ring exists; bind sets
/// ETH_P_ALL).
fn check_interface(name: &str, filter: bool) -> Result<(i32, LinkKind, OwnedFd), AfPacketError> {
    let ifindex = sys::ifindex_of(name).ok_or_else(|| AfPacketError::NoInterface { name: name.to_owned() })?;
    let mut kind = ETHERNET_FRAMED[0];
    if let Ok(t) = std::fs::read_to_string(format!("/sys/class/net/{name}/type")) {
        if let Ok(link_type) = t.trim().parse::<u32>() {
            kind = LinkKind::of(link_type)
                .ok_or_else(|| AfPacketError::UnsupportedLink { name: name.to_owned(), link_type })?;
        }
    }
    if filter && kind.is_cooked() {
        return Err(AfPacketError::FilterOnCooked { name: name.to_owned(), framing: kind.name });
    }
    let fd = sys::packet_socket(kind.is_cooked()).map_err(|cause| {
        if matches!(cause.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            AfPacketError::Permission { name: name.to_owned(), cause }
        } else {
            AfPacketError::Setup { name: name.to_owned(), call: "socket(AF_PACKET)", cause, hint: "".into() }
        }
    })?;
    Ok((ifindex, kind, fd))
}

/// Everything [`AfPacketSource::open`] checks before it opens a ring, without
/// capturing anything: the balancer calls it before it waits for its
/// consumers, so a wrong name or a missing privilege is said at once.
///
/// # Errors
/// As [`AfPacketSource::open`] for a missing, unsupported or forbidden
/// interface (and `CJ_FILTER`, when `filter`, on one read with `SOCK_DGRAM`).
pub fn preflight(names: &[String], filter: bool) -> Result<(), AfPacketError> {
    if names.len() > 255 {
        return Err(AfPacketError::TooMany { count: names.len() });
    }
    for name in names {
        check_interface(name, filter)?;
    }
    Ok(())
}

impl Ring {
    /// Socket, TPACKET_V3 ring, mapping, binding and promiscuous mode for `name`.
    fn open(name: &str, params: &RingParams) -> Result<(Self, bool), AfPacketError> {
        let (ifindex, kind, fd) = check_interface(name, !params.filter.is_empty())?;

        let version = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        sys::set_packet_int(&fd, libc::PACKET_VERSION, version).map_err(|_| {
            os_err(name, "setsockopt(PACKET_VERSION, TPACKET_V3)", "; TPACKET_V3 needs Linux 3.2 or later")
        })?;
        // Hardware timestamps where the NIC provides them; the kernel falls back to software per frame.
        let hw_requested =
            sys::set_packet_int(&fd, libc::PACKET_TIMESTAMP, libc::SOF_TIMESTAMPING_RAW_HARDWARE as libc::c_int)
                .is_ok();

        let frames_per_block = params.block_size / FRAME_SIZE;
        let req = libc::tpacket_req3 {
            tp_block_size: params.block_size,
            tp_block_nr: params.block_count,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: frames_per_block * params.block_count,
            tp_retire_blk_tov: params.block_timeout_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        let mib = params.ring_bytes() as f64 / f64::from(1u32 << 20);
        sys::set_rx_ring(&fd, &req).map_err(|cause| {
            let geometry = format!("{} blocks of {} bytes ({mib:.1} MiB)", params.block_count, params.block_size);
            let hint = if cause.raw_os_error() == Some(libc::EINVAL) {
                format!(
                    "; the kernel refused a ring of {geometry}: CJ_AFP_BLOCK_SIZE must be a multiple of the page \
                     size (getconf PAGESIZE)"
                )
            } else {
                format!("; no memory for a ring of {geometry}: lower CJ_AFP_BLOCK_COUNT or CJ_AFP_BLOCK_SIZE")
            };
            AfPacketError::Setup { name: name.to_owned(), call: "setsockopt(PACKET_RX_RING)", cause, hint }
        })?;
        let map = sys::RingMap::new(&fd, params.block_size as usize, params.block_count as usize).map_err(|cause| {
            AfPacketError::Setup {
                name: name.to_owned(),
                call: "mmap of the ring",
                cause,
                hint: format!("; the ring is {mib:.1} MiB: lower CJ_AFP_BLOCK_COUNT"),
            }
        })?;
        if !params.filter.is_empty() {
            // Before bind: no frame the filter rejects ever reaches the ring.
            sys::attach_filter(&fd, &params.filter).map_err(|cause| AfPacketError::Setup {
                name: name.to_owned(),
                call: "setsockopt(SO_ATTACH_FILTER)",
                cause,
                hint: "; the kernel refused CJ_FILTER's program".into(),
            })?;
        }
        if kind.arphrd == LOOPBACK_ARPHRD {
            // Loopback hands every frame to packet sockets twice, going out and
            // coming in: keep the one coming in, as libpcap does on `lo`.
            if let Err(e) = sys::set_packet_int(&fd, libc::PACKET_IGNORE_OUTGOING, 1) {
                station::cj_warn!(
                    "cj-balancer: warning: {name}: setsockopt(PACKET_IGNORE_OUTGOING) failed ({e}; Linux 4.20 or \
                     later has it): every frame on this loopback interface is counted twice"
                );
            }
        }
        let (link, word) = read_link(name);
        let ring = Ring {
            name: name.to_owned(),
            ifindex,
            kind,
            blocks: ring::BlockRing::new(map, params.block_count as usize, kind.framing),
            fd,
            link,
            link_why: format!("operstate {word}"),
            link_since: Instant::now(),
            was_up: link == Link::Up,
            managed: false,
            said_down: false,
            renamed_to: None,
            promisc: params.promisc,
            kernel: KernelStats::default(),
            delivered: 0,
        };
        ring.bind().map_err(|cause| AfPacketError::Setup {
            name: name.to_owned(),
            call: "bind",
            cause,
            hint: "; the interface may have just been removed".into(),
        })?;
        let hw = hw_requested && sys::nic_stamps_rx(&ring.fd, name);
        Ok((ring, hw))
    }

    /// Binds the socket to `self.ifindex` for every protocol and adds promiscuous membership.
    fn bind(&self) -> io::Result<()> {
        sys::bind(&self.fd, self.ifindex, ETH_P_ALL_BE)?;
        if self.promisc {
            let mreq = libc::packet_mreq {
                mr_ifindex: self.ifindex,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            sys::add_membership(&self.fd, &mreq)?;
        }
        Ok(())
    }

    /// Adds the kernel's counters since the last read.
    fn read_kernel_stats(&mut self) {
        if let Ok(st) = sys::packet_statistics(&self.fd) {
            self.kernel.packets += u64::from(st.tp_packets);
            self.kernel.drops += u64::from(st.tp_drops);
            self.kernel.freeze_q_cnt += u64::from(st.tp_freeze_q_cnt);
        }
    }

    /// Takes the pending socket error (clearing it); `ENETDOWN` means the interface went down.
    fn take_socket_error(&mut self) -> Option<io::Error> {
        match sys::socket_error(&self.fd) {
            Ok(0) => None,
            Ok(e) => Some(io::Error::from_raw_os_error(e)),
            Err(e) => Some(e),
        }
    }

    /// Whether the socket is still bound to the device it was bound to
    /// (`getsockname`: the kernel keeps the binding across a rename and drops
    /// it when the device is deleted or leaves the network namespace), and
    /// that device's name now.
    fn bound_name(&self) -> Option<String> {
        if sys::bound_ifindex(&self.fd).ok()? != self.ifindex {
            return None;
        }
        sys::name_of(self.ifindex)
    }

    /// How the log names the interface: its name, and its name now when it was renamed.
    fn label(&self) -> String {
        match &self.renamed_to {
            Some(now) => format!("{} (renamed {now})", self.name),
            None => self.name.clone(),
        }
    }

    /// Records a change of link state and, for a ring of a fixed list, logs it.
    fn set_link(&mut self, link: Link, why: &str) {
        if link == self.link {
            return;
        }
        self.link = link;
        why.clone_into(&mut self.link_why);
        self.link_since = Instant::now();
        if self.managed {
            // Said (or not) by `say_managed`, at the next look.
            return;
        }
        let label = self.label();
        match link {
            Link::Up if self.was_up => station::cj_info!("cj-balancer: {label} is up again ({why}); capturing"),
            Link::Up => station::cj_info!("cj-balancer: {label} is up ({why}); capturing"),
            Link::Down => station::cj_warn!(
                "cj-balancer: {label} went down ({why}); the balancer keeps running and captures again when it is up"
            ),
            Link::Gone => station::cj_warn!(
                "cj-balancer: {label} is gone ({why}: deleted, or moved to another network namespace); the balancer \
                 keeps running and captures an interface named {} when one appears",
                self.name
            ),
        }
        self.was_up |= link == Link::Up;
    }

    /// For a ring of the `containers` source: says a down or deleted veth that
    /// the capture list still names once it has been so for [`LINK_EVERY`],
    /// and its coming up after that.
    fn say_managed(&mut self) {
        if !self.managed {
            return;
        }
        let (name, why) = (&self.name, &self.link_why);
        match self.link {
            Link::Up => {
                if std::mem::take(&mut self.said_down) {
                    station::cj_info!("cj-balancer: containers: {name} is up again ({why}); capturing");
                }
                self.was_up = true;
            }
            _ if self.said_down || self.link_since.elapsed() < LINK_EVERY => {}
            Link::Down => {
                self.said_down = true;
                station::cj_warn!(
                    "cj-balancer: containers: {name} went down ({why}) and the detector's capture list still names \
                     it; captured again when it is up"
                );
            }
            Link::Gone => {
                self.said_down = true;
                station::cj_warn!(
                    "cj-balancer: containers: {name} is gone ({why}: deleted, or moved to another network namespace) \
                     but the detector's capture list still names it; its ring is closed when the list drops it (is \
                     cj-detector running?)"
                );
            }
        }
    }

    /// Looks at the link; binds again to an interface that was deleted and
    /// created anew; follows a rename.
    fn check_link(&mut self) {
        self.look_at_link();
        self.say_managed();
    }

    /// [`Ring::check_link`] but the saying of a managed ring's state.
    fn look_at_link(&mut self) {
        let index = sys::ifindex_of(&self.name);
        if index.is_none() {
            // No interface has the name: renamed, if the socket is still bound to its device.
            if let Some(now) = self.bound_name() {
                if self.renamed_to.as_deref() != Some(now.as_str()) {
                    if !self.managed {
                        // (The `containers` source says it when the capture list follows.)
                        station::cj_info!(
                            "cj-balancer: {} was renamed {now} (ifindex {}): still captured, as {}; an interface \
                             named {} that appears is captured instead",
                            self.name,
                            self.ifindex,
                            self.name,
                            self.name
                        );
                    }
                    self.renamed_to = Some(now.clone());
                }
                let (link, word) = read_link(&now);
                self.set_link(link, &format!("operstate {word}"));
                return;
            }
        }
        let (link, word) = read_link(&self.name);
        let why =
            if link == Link::Gone { "no interface has that name".to_owned() } else { format!("operstate {word}") };
        if index == Some(self.ifindex) {
            if let Some(was) = self.renamed_to.take() {
                if !self.managed {
                    station::cj_info!(
                        "cj-balancer: {} has its name back (it was {was}); captured as before",
                        self.name
                    );
                }
            }
        }
        // A device of that name with another index was deleted and created
        // anew, perhaps between two looks (never seen gone), or another device
        // took the name of this one, which was renamed: the socket must be
        // bound to the device of the name.
        let recreated = link != Link::Gone && index.is_some_and(|i| i != self.ifindex);
        if link == Link::Gone || (self.link != Link::Gone && !recreated) {
            self.set_link(link, &why);
            return;
        }
        let Some(index) = index else { return };
        let old = self.ifindex;
        self.ifindex = index;
        match self.bind() {
            Ok(()) => {
                match self.renamed_to.take() {
                    Some(was) => station::cj_info!(
                        "cj-balancer: a new interface named {} (ifindex {index}) appeared: captured instead of \
                         ifindex {old} (renamed {was}), which is no longer captured",
                        self.name
                    ),
                    None => {
                        station::cj_info!("cj-balancer: {} is back (ifindex {index}); socket bound again", self.name)
                    }
                }
                // Said once: a link that never looked gone is "back", not "up again".
                self.link = link;
                self.link_since = Instant::now();
                self.was_up |= link == Link::Up;
                self.said_down = false;
            }
            Err(e) => station::cj_warn!("cj-balancer: {} is back but cannot be bound again: {e}", self.name),
        }
    }
}

/// A classic BPF program that takes no frame (`ret #0`): attached when
/// capture stops ([`AfPacketSource::settle`]).
const TAKE_NONE: [crate::filter::Insn; 1] = [crate::filter::Insn { code: 0x06, jt: 0, jf: 0, k: 0 }];

impl AfPacketSource {
    /// Opens `names` with the ring variables (`CJ_AFP_*`) of this process's
    /// configuration: the environment and its `--config FILE`, as the balancer read them.
    ///
    /// # Errors
    /// As [`AfPacketSource::open`], and a bad `CJ_AFP_*` value.
    pub fn open_configured(
        names: &[String],
        config: &StationConfig,
        filter: &[crate::filter::Insn],
    ) -> Result<Self, AfPacketError> {
        let params = RingParams { filter: filter.to_vec(), ..RingParams::from_config(config) };
        let source = Self::open(names, &params)?;
        // The detector maps `Frame::source` to interfaces (and so to containers) with this list.
        if let Err(e) = inventory::sources::write_sources(&config.cluster_dir(), &source.interfaces()) {
            station::cj_warn!(
                "cj-balancer: warning: cannot write the source list in {}: {e}",
                config.cluster_dir().display()
            );
        }
        Ok(source)
    }

    /// Opens a ring on every interface of `names`, in order.
    ///
    /// # Errors
    /// An interface does not exist or has a framing the station does not
    /// read (or `CJ_FILTER` is set for one read with `SOCK_DGRAM`), capture
    /// is not permitted, or the kernel refuses the ring.
    pub fn open(names: &[String], params: &RingParams) -> Result<Self, AfPacketError> {
        if names.len() > 255 {
            return Err(AfPacketError::TooMany { count: names.len() });
        }
        let mut rings = Vec::with_capacity(names.len());
        let mut hw = Vec::new();
        for name in names {
            let (ring, stamps) = Ring::open(name, params)?;
            if stamps {
                hw.push(name.as_str());
            }
            rings.push(ring);
        }
        let timestamps = if hw.is_empty() {
            "software (no NIC with hardware receive timestamping on)"
        } else if hw.len() == rings.len() {
            "hardware (NIC receive timestamping on)"
        } else {
            "hardware where the NIC stamps, software elsewhere"
        };
        for r in &rings {
            if r.link != Link::Up {
                station::cj_info!(
                    "cj-balancer: {} is down (operstate {}); capturing when it comes up",
                    r.name,
                    read_link(&r.name).1
                );
            }
        }
        let pollfds =
            rings.iter().map(|r| libc::pollfd { fd: r.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        Ok(Self {
            sources: (0..rings.len()).map(|i| i as u8).collect(),
            retired: KernelStats::default(),
            rings,
            pollfds,
            // A frame is at most a block: room for a VLAN tag put back or an Ethernet header put in front.
            scratch: vec![0u8; params.block_size as usize + wire::ethernet::HEADER_LEN].into_boxed_slice(),
            next_ring: 0,
            params: params.clone(),
            timestamps,
            errors: 0,
            last_stats: Instant::now(),
            last_link: Instant::now(),
        })
    }

    fn read_kernel_stats(&mut self) {
        for r in &mut self.rings {
            r.read_kernel_stats();
        }
        self.last_stats = Instant::now();
    }

    /// The interfaces captured now, with their `Frame::source` indices.
    pub fn interfaces(&self) -> Vec<(u8, String)> {
        self.sources.iter().zip(&self.rings).map(|(i, r)| (*i, r.name.clone())).collect()
    }

    /// Starts capturing `name` as source `source`, for the `containers`
    /// source (its link changes are said as [`Ring::say_managed`] does);
    /// returns its `operstate` when it is not up.
    ///
    /// # Errors
    /// As [`AfPacketSource::open`].
    pub fn add(&mut self, name: &str, source: u8) -> Result<Option<String>, AfPacketError> {
        let (mut ring, _) = Ring::open(name, &self.params)?;
        ring.managed = true;
        let down = (ring.link != Link::Up).then(|| ring.link_why.clone());
        self.pollfds.push(libc::pollfd { fd: ring.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        self.rings.push(ring);
        self.sources.push(source);
        Ok(down)
    }

    /// The name of the ring whose socket is bound to the device named `name`
    /// now (for a device renamed while captured: its old name).
    pub fn captured_as(&self, name: &str) -> Option<String> {
        let ifindex = sys::ifindex_of(name)?;
        self.rings
            .iter()
            .find(|r| r.ifindex == ifindex && sys::bound_ifindex(&r.fd).ok() == Some(ifindex))
            .map(|r| r.name.clone())
    }

    /// Renames the ring captured as `old` to `new` and gives its frames
    /// source index `source` from now on, without closing it: the frames it
    /// holds are read as `source`. For a device renamed (or given another
    /// index) while captured: its socket is bound by ifindex, which a rename
    /// keeps, so no frame is missed. False when no ring named `old` is on the
    /// device named `new`.
    pub fn rename(&mut self, old: &str, new: &str, source: u8) -> bool {
        // By name and device: while devices swap names, two rings may bear one name for a moment.
        let ifindex = sys::ifindex_of(new);
        let Some(i) = self.rings.iter().position(|r| r.name == old && Some(r.ifindex) == ifindex) else {
            return false;
        };
        let r = &mut self.rings[i];
        new.clone_into(&mut r.name);
        r.renamed_to = None;
        self.sources[i] = source;
        true
    }

    /// Stops capturing each of `names` that is captured, after delivering what
    /// their rings hold (one settle for all of them, the other rings read
    /// meanwhile, so their frames keep coming); their kernel counters stay in
    /// [`Source::stats`]. Their sockets are closed by a thread of their own:
    /// a packet socket's close waits for the kernel's RCU grace period (20 to
    /// 300 ms each on this project's test machine), which the capture loop
    /// must not spend while the other rings fill. Returns what it removed
    /// (the caller says it).
    pub fn remove_all(&mut self, names: &[&str], sink: &mut dyn FnMut(&Frame<'_>)) -> Vec<Removed> {
        let which: Vec<usize> =
            self.rings.iter().enumerate().filter(|(_, r)| names.contains(&r.name.as_str())).map(|(i, _)| i).collect();
        if which.is_empty() {
            return Vec::new();
        }
        self.settle(&which, sink);
        let mut gone = Vec::with_capacity(which.len());
        let mut removed = Vec::with_capacity(which.len());
        for &i in which.iter().rev() {
            let ring = self.rings.remove(i);
            let source = self.sources.remove(i);
            self.pollfds.remove(i);
            self.retired.packets += ring.kernel.packets;
            self.retired.drops += ring.kernel.drops;
            self.retired.freeze_q_cnt += ring.kernel.freeze_q_cnt;
            self.retired.left += ring.kernel.left;
            removed.push(Removed {
                name: ring.name.clone(),
                source,
                kernel: ring.kernel,
                deleted: sys::bound_ifindex(&ring.fd).ok() != Some(ring.ifindex),
            });
            gone.push(ring);
        }
        if self.next_ring >= self.rings.len() {
            self.next_ring = 0;
        }
        // Closed elsewhere; a thread that cannot start drops them here, as before.
        let _ = std::thread::Builder::new().name("cj-ring-close".into()).spawn(move || drop(gone));
        removed.reverse();
        removed
    }

    /// Stops rings `which` taking frames (each socket's filter replaced by
    /// [`TAKE_NONE`]), then delivers what every ring holds until none of
    /// `which` has had a frame for the block timeout and 20 ms more (the
    /// kernel retires the block it was filling once the timeout passes),
    /// reads their kernel counters a last time, and counts the frames the
    /// kernel put in one of them that never came out of it
    /// ([`KernelStats::left`], part of `capture_dropped`).
    fn settle(&mut self, which: &[usize], sink: &mut dyn FnMut(&Frame<'_>)) {
        for &i in which {
            let r = &self.rings[i];
            // A filter that refuses every frame: from here the kernel puts none in
            // the ring and counts none in tp_packets. (A bind to protocol 0 keeps
            // the socket's protocol: frames kept coming.)
            if let Err(e) = sys::attach_filter(&r.fd, &TAKE_NONE) {
                station::cj_warn!(
                    "cj-balancer: warning: {}: setsockopt(SO_ATTACH_FILTER) to stop capture failed ({e}): frames \
                     keep arriving until the ring has been quiet for {} ms",
                    r.name,
                    self.params.block_timeout_ms + 20
                );
            }
        }
        let quiet = Duration::from_millis(u64::from(self.params.block_timeout_ms) + 20);
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            let mut settling = 0;
            for i in 0..self.rings.len() {
                let taken =
                    self.rings[i].blocks.take(usize::MAX, self.sources[i], &mut self.scratch, &mut self.errors, sink);
                self.rings[i].delivered += taken as u64;
                if which.contains(&i) {
                    settling += taken;
                }
            }
            if settling > 0 {
                last = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for &i in which {
            let r = &mut self.rings[i];
            r.read_kernel_stats();
            // tp_packets counts the dropped frames too.
            let into_ring = r.kernel.packets.saturating_sub(r.kernel.drops);
            r.kernel.left = into_ring.saturating_sub(r.delivered);
        }
    }

    /// One round over the rings, a block (or what is left of the quota) each, round robin.
    fn drain(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> usize {
        let count = self.rings.len();
        let mut delivered = 0;
        let mut empty_turns = 0;
        while delivered < max && empty_turns < count {
            let i = self.next_ring;
            self.next_ring = if i + 1 == count { 0 } else { i + 1 };
            let n =
                self.rings[i].blocks.take(max - delivered, self.sources[i], &mut self.scratch, &mut self.errors, sink);
            self.rings[i].delivered += n as u64;
            if n == 0 {
                empty_turns += 1;
            } else {
                empty_turns = 0;
                delivered += n;
            }
        }
        delivered
    }

    /// Waits in `poll(2)` for a ring to have a block, noting errors (interface down).
    fn wait(&mut self) {
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        let rc = sys::poll(&mut self.pollfds, POLL_TIMEOUT_MS);
        if rc <= 0 {
            return; // timeout, or EINTR: the caller looks at its stop flag
        }
        for (i, p) in self.pollfds.iter().enumerate() {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0 {
                continue;
            }
            let ring = &mut self.rings[i];
            if let Some(e) = ring.take_socket_error() {
                let why = if e.raw_os_error() == Some(libc::ENETDOWN) { "ENETDOWN".to_owned() } else { e.to_string() };
                ring.set_link(Link::Down, &why);
            }
        }
    }
}

impl Source for AfPacketSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, super::SourceError> {
        if self.last_link.elapsed() >= LINK_EVERY {
            self.last_link = Instant::now();
            for r in &mut self.rings {
                r.check_link();
            }
        }
        let mut n = self.drain(max, sink);
        if n == 0 {
            self.wait();
            n = self.drain(max, sink);
        }
        if n == 0 || self.last_stats.elapsed() >= STATS_EVERY {
            self.read_kernel_stats();
        }
        Ok(if n == 0 { Poll::Idle } else { Poll::Frames(n) })
    }

    fn is_finite_offline(&self) -> bool {
        false
    }

    fn stats(&self) -> SourceStats {
        SourceStats {
            capture_dropped: self.retired.drops
                + self.retired.left
                + self.rings.iter().map(|r| r.kernel.drops + r.kernel.left).sum::<u64>(),
            errors: self.errors,
        }
    }

    fn finish(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) {
        let all: Vec<usize> = (0..self.rings.len()).collect();
        self.settle(&all, sink);
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.rings.iter().map(|r| r.name.as_str()).collect();
        let framing = match self.rings.first() {
            Some(first) if self.rings.iter().all(|r| r.kind == first.kind) => first.kind.describe(),
            _ => self.rings.iter().map(|r| format!("{} {}", r.name, r.kind.describe())).collect::<Vec<_>>().join("; "),
        };
        format!(
            "{} (AF_PACKET TPACKET_V3, ring {} x {} KiB per interface, block timeout {} ms, {}; framing: {}; timestamps: {})",
            names.join(","),
            self.params.block_count,
            self.params.block_size / 1024,
            self.params.block_timeout_ms,
            if self.params.promisc { "promiscuous" } else { "not promiscuous" },
            framing,
            self.timestamps
        )
    }
}

impl Drop for AfPacketSource {
    fn drop(&mut self) {
        self.read_kernel_stats();
        for r in &self.rings {
            station::cj_info!(
                "cj-balancer: {}: kernel counted {} frames, dropped {} (ring full), ring froze {} times, {} left in \
                 the ring unread",
                r.name,
                r.kernel.packets,
                r.kernel.drops,
                r.kernel.freeze_q_cnt,
                r.kernel.left
            );
        }
        // Each close waits for an RCU grace period: all at once, not one after another
        // (a stop with 16 container veths took 444 ms, 22-29 ms a socket).
        let rings = std::mem::take(&mut self.rings);
        std::thread::scope(|s| {
            for r in rings {
                // A thread that cannot start drops its ring here.
                let _ = std::thread::Builder::new().name("cj-ring-close".into()).spawn_scoped(s, move || drop(r));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::LinkDir;
    use e2e::skip;

    #[test]
    fn an_unknown_interface_is_one_line_naming_it() {
        let params =
            RingParams { block_size: 1 << 16, block_count: 4, block_timeout_ms: 10, promisc: true, filter: Vec::new() };
        let e = AfPacketSource::open(&["cjt-nosuch0".to_owned()], &params).unwrap_err();
        assert_eq!(e.to_string(), "CJ_IFACE: no interface named cjt-nosuch0 (ip link shows the names)");
    }

    #[test]
    fn ethernet_loopback_and_raw_ip_types_are_read_and_others_refused() {
        // linux/if_arp.h numbers, independent of the table.
        for (arphrd, cooked) in [(1, false), (772, false), (65534, true), (519, true), (512, true), (768, true)] {
            let kind = LinkKind::of(arphrd).unwrap_or_else(|| panic!("ARPHRD {arphrd} is read"));
            assert_eq!(kind.is_cooked(), cooked, "{}", kind.name);
        }
        // ARPHRD_IEEE80211_RADIOTAP, ARPHRD_CAN, ARPHRD_INFINIBAND, ARPHRD_IEEE802154.
        for arphrd in [803, 280, 32, 804] {
            assert_eq!(LinkKind::of(arphrd), None, "ARPHRD {arphrd}");
        }
        let e = AfPacketError::UnsupportedLink { name: "can0".into(), link_type: 280 };
        let line = e.to_string();
        assert!(!line.contains('\n') && line.contains("can0 has link type 280"), "{line}");
        assert!(line.contains("pcap:FILE"), "the error names the way out: {line}");
    }

    /// Root only: captures its own UDP datagrams on the loopback interface.
    #[test]
    fn loopback_capture_as_root() {
        if !sys::is_root() {
            skip("needs root (CAP_NET_RAW) to open an AF_PACKET ring");
            return;
        }
        let params =
            RingParams { block_size: 1 << 16, block_count: 4, block_timeout_ms: 5, promisc: false, filter: Vec::new() };
        let mut src = AfPacketSource::open(&["lo".to_owned()], &params).expect("ring on lo");
        assert!(!src.is_finite_offline());
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let payload = b"cj-af-packet-loopback-test-payload";
        for _ in 0..5 {
            tx.send_to(payload, rx.local_addr().expect("addr")).expect("send");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        // Each datagram once (loopback hands it to packet sockets going out
        // and coming in; the outgoing copy is ignored, as libpcap does): the
        // polling goes on for a while after the fifth, to see no sixth.
        let mut seen = 0;
        let mut quiet_until = deadline;
        while Instant::now() < deadline.min(quiet_until) {
            src.poll_batch(64, &mut |f| {
                if f.data.windows(payload.len()).any(|w| w == payload) {
                    // 14 Ethernet + 20 IPv4 + 8 UDP.
                    assert_eq!(f.wire_len as usize, 42 + payload.len());
                    assert_eq!(f.data.len(), f.wire_len as usize);
                    seen += 1;
                }
            })
            .expect("poll");
            if seen >= 5 && quiet_until == deadline {
                quiet_until = Instant::now() + Duration::from_millis(200);
            }
        }
        assert_eq!(seen, 5, "the five datagrams were captured once each (lo's rx_packets and tcpdump -i lo: 5)");
        assert_eq!(src.stats().capture_dropped, 0);
        assert!(src.describe().starts_with("lo (AF_PACKET TPACKET_V3"));
        assert!(src.describe().contains("framing: loopback (ARPHRD_LOOPBACK"), "{}", src.describe());
    }

    /// Polls `src` for `d`, counting the frames that carry `payload`.
    /// `ip ARGS`, which must succeed.
    fn ip(args: &[&str]) {
        assert!(std::process::Command::new("ip").args(args).status().is_ok_and(|s| s.success()), "ip {args:?}");
    }

    /// A test's network namespace (made afresh) and its host-side link, both
    /// deleted when dropped.
    struct TestNetns(&'static str, &'static str);

    impl TestNetns {
        fn add(ns: &'static str, host: &'static str) -> Self {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).status();
            ip(&["netns", "add", ns]);
            TestNetns(ns, host)
        }
    }

    impl Drop for TestNetns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["link", "del", self.1]).status();
            let _ = std::process::Command::new("ip").args(["netns", "del", self.0]).status();
        }
    }

    fn frames_with(src: &mut AfPacketSource, payload: &[u8], d: Duration) -> usize {
        let mut seen = 0;
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            src.poll_batch(64, &mut |f| seen += usize::from(f.data.windows(payload.len()).any(|w| w == payload)))
                .expect("poll");
        }
        seen
    }

    #[test]
    fn frames_in_the_block_the_kernel_is_filling_are_delivered_when_capture_stops() {
        if !sys::is_root() {
            skip("needs root (CAP_NET_RAW) to open an AF_PACKET ring");
            return;
        }
        // A block timeout of 1.5 s: the five datagrams wait in the open block.
        let params = RingParams {
            block_size: 1 << 16,
            block_count: 4,
            block_timeout_ms: 1500,
            promisc: false,
            filter: Vec::new(),
        };
        let mut src = AfPacketSource::open(&["lo".to_owned()], &params).expect("ring on lo");
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let payload = b"cj-af-packet-finish-payload";
        for _ in 0..5 {
            tx.send_to(payload, rx.local_addr().expect("addr")).expect("send");
        }
        // The block is not retired yet (unless this thread stalled for 1.5 s:
        // then some come here, and the stop delivers the rest).
        let before = frames_with(&mut src, payload, Duration::from_millis(100));
        let mut seen = 0;
        src.finish(&mut |f| seen += usize::from(f.data.windows(payload.len()).any(|w| w == payload)));
        assert_eq!(before + seen, 5, "every frame the kernel put in the ring, at the latest at the stop");
        assert_eq!(src.stats().capture_dropped, 0, "nothing left in the ring");
    }

    #[test]
    fn an_interface_deleted_and_created_again_between_two_looks_is_captured_again() {
        if !sys::is_root() {
            skip("needs root (network namespaces, veth, AF_PACKET)");
            return;
        }
        let (ns, host, peer) = ("cjt-recreate", "cjtrc0", "cjtrc1");
        let _cleanup = TestNetns::add(ns, host);
        let make = || {
            ip(&["link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns]);
            ip(&["link", "set", host, "up"]);
            ip(&["-n", ns, "link", "set", peer, "up"]);
            ip(&["addr", "add", "10.211.0.1/24", "dev", host]);
            ip(&["neigh", "replace", "10.211.0.2", "lladdr", "02:00:00:00:02:11", "dev", host]);
        };
        make();
        let params =
            RingParams { block_size: 1 << 16, block_count: 4, block_timeout_ms: 5, promisc: false, filter: Vec::new() };
        let mut src = AfPacketSource::open(&[host.to_owned()], &params).expect("ring on the veth");
        // Deleted and made again at once: the source looks at the link once a second, and never sees it gone.
        ip(&["link", "del", host]);
        make();
        let payload = b"cj-af-packet-recreated-veth-payload";
        frames_with(&mut src, payload, Duration::from_millis(2500));
        let tx = std::net::UdpSocket::bind("10.211.0.1:0").expect("bind on the new veth");
        for _ in 0..5 {
            tx.send_to(payload, "10.211.0.2:9").expect("send");
        }
        assert_eq!(frames_with(&mut src, payload, Duration::from_secs(1)), 5, "the new veth's five datagrams");
    }

    #[test]
    fn an_interface_renamed_while_captured_stays_captured_until_a_new_one_takes_its_name() {
        if !sys::is_root() {
            skip("needs root (network namespaces, veth, AF_PACKET)");
            return;
        }
        let (ns, host, peer, renamed) = ("cjt-rename", "cjtrn0", "cjtrn1", "cjtrn9");
        // Deleting the namespace deletes both pairs (each has its peer there), whatever their host names.
        let _cleanup = TestNetns::add(ns, host);
        let make = |peer: &str, net: &str| {
            ip(&["link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns]);
            ip(&["link", "set", host, "up"]);
            ip(&["-n", ns, "link", "set", peer, "up"]);
            ip(&["addr", "add", &format!("{net}.1/24"), "dev", host]);
            ip(&["neigh", "replace", &format!("{net}.2"), "lladdr", "02:00:00:00:02:13", "dev", host]);
        };
        make(peer, "10.213.0");
        let params =
            RingParams { block_size: 1 << 16, block_count: 4, block_timeout_ms: 5, promisc: false, filter: Vec::new() };
        let mut src = AfPacketSource::open(&[host.to_owned()], &params).expect("ring on the veth");
        let send = |from: &str, to: &str, payload: &[u8]| {
            let tx = std::net::UdpSocket::bind(format!("{from}:0")).expect("bind on the veth");
            for _ in 0..5 {
                tx.send_to(payload, format!("{to}:9")).expect("send");
            }
        };
        // Renamed while up; the source looks at the link once a second.
        ip(&["link", "set", host, "name", renamed]);
        let payload = b"cj-af-packet-renamed-veth-payload";
        frames_with(&mut src, payload, Duration::from_millis(1500));
        assert_eq!(src.rings[0].renamed_to.as_deref(), Some(renamed), "{:?}", src.rings[0]);
        assert_eq!((src.rings[0].link, src.rings[0].name.as_str()), (Link::Up, host), "up, under its configured name");
        send("10.213.0.1", "10.213.0.2", payload);
        assert_eq!(frames_with(&mut src, payload, Duration::from_secs(1)), 5, "the renamed veth's five datagrams");
        // An interface that takes the configured name is captured instead.
        make("cjtrn2", "10.214.0");
        frames_with(&mut src, payload, Duration::from_millis(1500));
        assert_eq!(src.rings[0].renamed_to, None, "{:?}", src.rings[0]);
        let fresh = b"cj-af-packet-new-veth-payload";
        send("10.213.0.1", "10.213.0.2", payload);
        send("10.214.0.1", "10.214.0.2", fresh);
        let (mut old_ones, mut new_ones) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            src.poll_batch(64, &mut |f| {
                old_ones += usize::from(f.data.windows(payload.len()).any(|w| w == payload));
                new_ones += usize::from(f.data.windows(fresh.len()).any(|w| w == fresh));
            })
            .expect("poll");
        }
        assert_eq!((old_ones, new_ones), (0, 5), "the new veth's five datagrams, none of the renamed one's");
    }

    #[test]
    fn frames_the_host_sends_on_a_veth_are_outbound_and_those_it_receives_inbound_as_its_counters_say() {
        if !sys::is_root() {
            skip("needs root (network namespaces, veth, AF_PACKET)");
            return;
        }
        use std::process::Command;
        let sysctl = |args: &[&str]| {
            assert!(Command::new("sysctl").arg("-qw").args(args).status().is_ok_and(|s| s.success()), "{args:?}")
        };
        let (ns, host, peer) = ("cjt-direction", "cjtdr0", "cjtdr1");
        let _cleanup = TestNetns::add(ns, host);
        ip(&["link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns]);
        // No IPv6 (ND, MLD): only the test's frames cross the pair.
        sysctl(&[&format!("net.ipv6.conf.{host}.disable_ipv6=1")]);
        ip(&["netns", "exec", ns, "sysctl", "-qw", &format!("net.ipv6.conf.{peer}.disable_ipv6=1")]);
        ip(&["addr", "add", "10.212.0.1/24", "dev", host]);
        ip(&["-n", ns, "addr", "add", "10.212.0.2/24", "dev", peer]);
        ip(&["-n", ns, "link", "set", peer, "up"]);
        ip(&["link", "set", host, "up"]);
        let params =
            RingParams { block_size: 1 << 16, block_count: 4, block_timeout_ms: 5, promisc: false, filter: Vec::new() };
        let mut src = AfPacketSource::open(&[host.to_owned()], &params).expect("ring on the veth");
        let counter = |what: &str| -> u64 {
            let path = format!("/sys/class/net/{host}/statistics/{what}");
            std::fs::read_to_string(&path).expect("counter").trim().parse().expect("number")
        };
        // Whatever came with the link going up is not the test's.
        frames_with(&mut src, b"-", Duration::from_millis(300));
        let (rx0, tx0) = (counter("rx_packets"), counter("tx_packets"));
        // Out of the host: the datagrams (and its ARP); back in: the peer's ARP
        // traffic and an ICMP port unreachable per datagram (rate-limited).
        let tx = std::net::UdpSocket::bind("10.212.0.1:0").expect("bind on the veth");
        for _ in 0..5 {
            tx.send_to(b"cj-af-packet-direction-payload", "10.212.0.2:9").expect("send");
        }
        let (mut outbound, mut inbound, mut unknown) = (0u64, 0u64, 0u64);
        let (mut udp_out, mut icmp_in) = (0u64, 0u64);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            src.poll_batch(64, &mut |f| {
                // IPv4 protocol byte of an untagged frame.
                let proto = (f.data.len() > 23 && f.data[12..14] == [8, 0]).then(|| f.data[23]);
                match f.dir {
                    LinkDir::Outbound => outbound += 1,
                    LinkDir::Inbound => inbound += 1,
                    LinkDir::Unknown => unknown += 1,
                }
                udp_out += u64::from(proto == Some(17) && f.dir == LinkDir::Outbound);
                icmp_in += u64::from(proto == Some(1) && f.dir == LinkDir::Inbound);
            })
            .expect("poll");
            let (rx, tx) = (counter("rx_packets") - rx0, counter("tx_packets") - tx0);
            let done = (inbound, outbound) == (rx, tx) && udp_out == 5 && icmp_in > 0;
            if done || Instant::now() >= deadline {
                // The kernel's counters of the host end: tx what it sent, rx what it received.
                assert_eq!((outbound, inbound, unknown), (tx, rx, 0), "captured (out, in, unknown) vs kernel (tx, rx)");
                assert_eq!(udp_out, 5, "the five datagrams went out");
                assert!(icmp_in > 0, "an ICMP port unreachable came in");
                break;
            }
        }
    }
}

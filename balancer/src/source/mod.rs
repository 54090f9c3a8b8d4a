//! Packet sources: where the balancer takes frames from.
//!
//! Guarantees: a source hands out whole frames with their capture timestamp
//! (nanoseconds since the Unix epoch) and their length on the wire; it never
//! allocates per frame; every frame it cannot deliver is counted in
//! [`SourceStats`] (capture drops reported by the capture layer, unreadable
//! capture records), never dropped silently. Live sources (AF_PACKET, PF_RING)
//! plug in here as further implementations of [`Source`].

pub mod af_packet;
pub mod containers;
pub mod pcap;
#[cfg(feature = "pfring")]
pub mod pfring;
pub mod sim;
pub mod zc_host;

use station::config::{SourceSpec, StationConfig};
pub use station::slot::LinkDir;

/// One frame as the source delivers it; borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture timestamp, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Length on the wire (may exceed `data.len()` when the capture was cut).
    pub wire_len: u32,
    /// Captured bytes, starting at the Ethernet header.
    pub data: &'a [u8],
    /// Index of the interface within a multi-interface source.
    pub source: u8,
    /// Its direction on that interface, when the source knows it (AF_PACKET
    /// does; pcap files, `sim:` and PF_RING say [`LinkDir::Unknown`]).
    pub dir: LinkDir,
}

/// What one poll produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    /// This many frames were delivered.
    Frames(usize),
    /// Nothing now (a paced or live source); poll again later.
    Idle,
    /// A finite source is exhausted.
    Ended,
}

/// Counters a source keeps about frames it could not deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Frames lost in the capture layer before the balancer saw them.
    pub capture_dropped: u64,
    /// Unreadable records in a capture file (each skipped and counted).
    pub errors: u64,
}

/// Errors that stop a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The capture file cannot be opened.
    #[error("cannot open capture {path}: {cause}; check CJ_IFACE=pcap:FILE names a readable file")]
    Open {
        /// The file.
        path: String,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The file is not a pcap or pcapng capture (or is empty, or too short for a header).
    #[error("{path}: {detail}")]
    NotACapture {
        /// The file.
        path: String,
        /// What is wrong, in words, and the fix.
        detail: String,
    },
    /// The capture's link type is not one the station decodes.
    #[error(
        "{path}: link type {linktype}{place} is not supported; the station reads {}",
        wire::link::LinkType::SUPPORTED
    )]
    LinkType {
        /// The file.
        path: String,
        /// The link type number (the low 16 bits of the pcap LinkType field).
        linktype: u32,
        /// Where it was declared: empty for a pcap file, ` (pcapng interface N)`.
        place: String,
    },
    /// The capture is corrupt in the middle (not just truncated at the end).
    #[error("{path}: corrupt capture at byte {offset} ({detail}); {delivered} frames before it were delivered")]
    Corrupt {
        /// The file.
        path: String,
        /// Byte offset of the bad block.
        offset: usize,
        /// What the parser said.
        detail: String,
        /// Frames delivered before.
        delivered: u64,
    },
    /// The source kind needs a build or a host feature not present.
    #[error("{0}")]
    #[cfg_attr(feature = "pfring", allow(dead_code))] // with PF_RING built in, every source kind is supported
    Unsupported(String),
    /// The host lacks what a `zc:` source needs (module, hugepages, ZC driver; the fix in the message).
    #[error("{0}")]
    #[cfg_attr(not(feature = "pfring"), allow(dead_code))] // zc: sources need the pfring feature
    ZcHost(String),
    /// An AF_PACKET interface cannot be captured (cause and fix in the message).
    #[error("{0}")]
    AfPacket(#[from] af_packet::AfPacketError),
    /// A PF_RING device cannot be opened or read (cause and fix in the message).
    #[cfg(feature = "pfring")]
    #[error("{0}")]
    PfRing(#[from] pfring::PfRingError),
}

/// A packet source.
pub trait Source {
    /// Delivers up to `max` frames to `sink`.
    ///
    /// # Errors
    /// A condition that stops the source (a corrupt capture).
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError>;

    /// True for a source that ends by itself (a file, an unpaced simulation):
    /// with `CJ_ON_FULL=auto` the balancer waits for room instead of dropping.
    fn is_finite_offline(&self) -> bool;

    /// Counters of undeliverable frames.
    fn stats(&self) -> SourceStats;

    /// A resumed stream reads its source again from the start: the first
    /// `frames` frames (those the queues already hold) are not paced. Sources
    /// without pacing ignore it.
    fn unpaced_first(&mut self, frames: u64) {
        let _ = frames;
    }

    /// A short description for logs: `pcap:/x.pcap`, `sim:...`.
    fn describe(&self) -> String;

    /// Called once when the balancer stops on a signal, before its last
    /// counts: the source takes nothing new in, delivers to `sink` what it had
    /// already taken (frames waiting in its buffers) and brings
    /// [`Source::stats`] up to date. Sources that buffer nothing do nothing.
    fn finish(&mut self, sink: &mut dyn FnMut(&Frame<'_>)) {
        let _ = sink;
    }
}

/// Checks what can be checked of a live source without capturing (names,
/// link types, privileges, support built in, what a `zc:` source needs from the
/// host: see [`zc_host`]), so that its errors come before the balancer holds for
/// its consumers. Offline sources are checked when opened.
///
/// # Errors
/// As [`open`] for those conditions; [`SourceError::ZcHost`] for `zc:`.
pub fn preflight(spec: &SourceSpec, config: &StationConfig) -> Result<(), SourceError> {
    match spec {
        SourceSpec::Interfaces(ifaces) => Ok(af_packet::preflight(ifaces, !config.filter.trim().is_empty())?),
        #[cfg(not(feature = "pfring"))]
        SourceSpec::PfRing(dev) | SourceSpec::Zc(dev) => {
            let _ = config;
            Err(pfring_not_built(dev))
        }
        #[cfg(feature = "pfring")]
        SourceSpec::Zc(dev) => {
            let value = |var: &str| config.values.get(var).map_or("", String::as_str);
            zc_host::check(std::path::Path::new("/"), dev, value("CJ_HUGEPAGES_MOUNT"), value("PF_DRIVER"))
                .map_err(SourceError::ZcHost)
        }
        _ => Ok(()),
    }
}

/// Opens the source CJ_IFACE names.
///
/// # Errors
/// The source cannot be opened, or needs support not built in.
pub fn open(
    spec: &SourceSpec,
    config: &StationConfig,
    filter: Option<&crate::filter::Filter>,
) -> Result<Box<dyn Source>, SourceError> {
    let program = filter.map_or(&[][..], crate::filter::Filter::insns);
    match spec {
        SourceSpec::Pcap(path) => Ok(Box::new(pcap::PcapSource::open(path)?)),
        SourceSpec::Sim(sim) => Ok(Box::new(sim::SimSource::new(sim))),
        SourceSpec::Containers => Ok(Box::new(containers::ContainersSource::open_configured(config, program)?)),
        SourceSpec::Interfaces(ifaces) => {
            Ok(Box::new(af_packet::AfPacketSource::open_configured(ifaces, config, program)?))
        }
        #[cfg(feature = "pfring")]
        SourceSpec::PfRing(dev) | SourceSpec::Zc(dev) => {
            let (kind, device) = pfring::Kind::device_for(dev, matches!(spec, SourceSpec::Zc(_)));
            let mut source = pfring::PfRingSource::open(kind, &device)?;
            if let Some(f) = filter {
                source.set_filter(f.expr())?;
            }
            Ok(Box::new(source))
        }
        #[cfg(not(feature = "pfring"))]
        SourceSpec::PfRing(dev) | SourceSpec::Zc(dev) => Err(pfring_not_built(dev)),
    }
}

#[cfg(not(feature = "pfring"))]
fn pfring_not_built(dev: &str) -> SourceError {
    SourceError::Unsupported(format!(
        "PF_RING device {dev} needs cj-balancer built with `--features pfring`; use an AF_PACKET interface, pcap:FILE or sim:SPEC"
    ))
}

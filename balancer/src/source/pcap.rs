//! `pcap:FILE`: classic pcap (micro- and nanosecond) and pcapng captures,
//! read with the `pcap-parser` crate through a fixed-size buffer.
//!
//! Guarantees: frames come out in file order with nanosecond timestamps
//! (pcapng interface resolution and offset applied); a record cut short at the
//! end of the file is counted in `errors` and ends the stream; a corrupt block
//! in the middle stops the source with [`SourceError::Corrupt`] after every
//! frame before it was delivered. Memory is the read buffer, whatever the file size.

use std::fs::File;
use std::path::Path;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, Linktype, PcapBlockOwned, PcapError};

use super::{Frame, Poll, Source, SourceError, SourceStats};

/// Read buffer: large enough for any frame, small enough to stay in cache-friendly territory.
const BUFFER_SIZE: usize = 1 << 20;

/// Per pcapng interface: timestamp units and offset.
#[derive(Clone, Copy, Debug)]
struct NgInterface {
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp.
    offset_sec: i64,
    linktype: i32,
}

/// A capture file source.
pub struct PcapSource {
    reader: Box<dyn PcapReaderIterator + Send>,
    path: String,
    /// Legacy pcap: nanosecond timestamps.
    legacy_nanos: bool,
    /// pcapng interfaces of the current section.
    ng_interfaces: Vec<NgInterface>,
    stats: SourceStats,
    delivered: u64,
    ended: bool,
}

impl std::fmt::Debug for PcapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapSource").field("path", &self.path).field("delivered", &self.delivered).finish()
    }
}

impl PcapSource {
    /// Opens a capture file.
    ///
    /// # Errors
    /// The file cannot be opened or is not a capture.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let display = path.display().to_string();
        let file = File::open(path).map_err(|cause| SourceError::Open { path: display.clone(), cause })?;
        let reader = create_reader(BUFFER_SIZE, file)
            .map_err(|e| SourceError::NotACapture { path: display.clone(), detail: format!("{e:?}") })?;
        Ok(Self {
            reader,
            path: display,
            legacy_nanos: false,
            ng_interfaces: Vec::new(),
            stats: SourceStats::default(),
            delivered: 0,
            ended: false,
        })
    }
}

impl Source for PcapSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        if self.ended {
            return Ok(Poll::Ended);
        }
        let mut delivered = 0usize;
        while delivered < max {
            let (consumed, outcome) = match self.reader.next() {
                Ok((offset, block)) => {
                    let outcome = match block {
                        PcapBlockOwned::LegacyHeader(header) => {
                            if header.network != Linktype::ETHERNET {
                                return Err(SourceError::LinkType {
                                    path: self.path.clone(),
                                    linktype: header.network.0,
                                });
                            }
                            self.legacy_nanos = header.is_nanosecond_precision();
                            None
                        }
                        PcapBlockOwned::Legacy(b) => {
                            let frac =
                                if self.legacy_nanos { u64::from(b.ts_usec) } else { u64::from(b.ts_usec) * 1000 };
                            let frame = Frame {
                                ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                                wire_len: b.origlen.max(b.caplen),
                                data: b.data.get(..b.caplen as usize).unwrap_or(b.data),
                                source: 0,
                            };
                            sink(&frame);
                            Some(())
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                            self.ng_interfaces.clear();
                            None
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            if idb.linktype != Linktype::ETHERNET {
                                return Err(SourceError::LinkType {
                                    path: self.path.clone(),
                                    linktype: idb.linktype.0,
                                });
                            }
                            self.ng_interfaces.push(NgInterface {
                                units_per_sec: idb.ts_resolution().unwrap_or(1_000_000),
                                offset_sec: idb.ts_offset(),
                                linktype: idb.linktype.0,
                            });
                            None
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            let iface = self.ng_interfaces.get(epb.if_id as usize).copied().unwrap_or(NgInterface {
                                units_per_sec: 1_000_000,
                                offset_sec: 0,
                                linktype: 1,
                            });
                            debug_assert_eq!(iface.linktype, 1);
                            let ts_units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                            let frame = Frame {
                                ts_ns: ts_to_ns(ts_units, iface.units_per_sec, iface.offset_sec),
                                wire_len: epb.origlen.max(epb.caplen),
                                data: epb.data.get(..epb.caplen as usize).unwrap_or(epb.data),
                                source: epb.if_id.min(255) as u8,
                            };
                            sink(&frame);
                            Some(())
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            let iface = self.ng_interfaces.first().copied();
                            if let Some(i) = iface {
                                debug_assert_eq!(i.linktype, 1);
                            }
                            let frame = Frame {
                                ts_ns: 0,
                                wire_len: spb.origlen.max(spb.data.len() as u32),
                                data: spb.data.get(..spb.origlen as usize).unwrap_or(spb.data),
                                source: 0,
                            };
                            sink(&frame);
                            Some(())
                        }
                        PcapBlockOwned::NG(_) => None,
                    };
                    (offset, outcome)
                }
                Err(PcapError::Eof) => {
                    self.ended = true;
                    break;
                }
                Err(PcapError::Incomplete(_)) => {
                    if self.reader.refill().is_err() {
                        self.stats.errors += 1;
                        self.ended = true;
                        break;
                    }
                    continue;
                }
                Err(PcapError::UnexpectedEof) => {
                    // A record cut off at the end of the file: the capture was
                    // interrupted. Count it, deliver nothing of it, end.
                    self.stats.errors += 1;
                    self.ended = true;
                    break;
                }
                Err(e) => {
                    let detail = format!("{e:?}");
                    self.stats.errors += 1;
                    self.ended = true;
                    return Err(SourceError::Corrupt {
                        path: self.path.clone(),
                        offset: self.reader.consumed(),
                        detail,
                        delivered: self.delivered,
                    });
                }
            };
            self.reader.consume(consumed);
            if outcome.is_some() {
                delivered += 1;
                self.delivered += 1;
            }
        }
        if delivered == 0 && self.ended {
            Ok(Poll::Ended)
        } else {
            Ok(Poll::Frames(delivered))
        }
    }

    fn is_finite_offline(&self) -> bool {
        true
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }

    fn describe(&self) -> String {
        format!("pcap:{}", self.path)
    }
}

/// Converts a pcapng timestamp in `units_per_sec` units to ns since the epoch.
fn ts_to_ns(units: u64, units_per_sec: u64, offset_sec: i64) -> u64 {
    let units_per_sec = units_per_sec.max(1);
    let secs = units / units_per_sec;
    let rem = units % units_per_sec;
    let frac_ns = (u128::from(rem) * 1_000_000_000 / u128::from(units_per_sec)) as u64;
    let secs = (secs as i64).saturating_add(offset_sec).max(0) as u64;
    secs.saturating_mul(1_000_000_000).saturating_add(frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_timestamps_in_any_resolution() {
        assert_eq!(ts_to_ns(1_500_000, 1_000_000, 0), 1_500_000_000);
        assert_eq!(ts_to_ns(1_500_000_001, 1_000_000_000, 0), 1_500_000_001);
        assert_eq!(ts_to_ns(3, 2, 10), 11_500_000_000);
    }
}

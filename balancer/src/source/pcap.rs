//! `pcap:FILE`: classic pcap (micro- and nanosecond) and pcapng captures,
//! read through a fixed-size buffer: pcapng with the `pcap-parser` crate,
//! classic pcap records (a 16-byte header and the bytes; 24 in the
//! "modified" format) parsed straight from the buffer, with the same outcomes
//! for cut, oversized and unreadable records as the crate's reader.
//!
//! Guarantees: frames come out in file order with nanosecond timestamps
//! (pcapng interface resolution, a power of ten or of two, and offset
//! applied); a record cut short at the
//! end of the file is counted in `errors` and ends the stream; a corrupt block
//! in the middle stops the source with [`SourceError::Corrupt`] after every
//! frame before it was delivered (in pcapng also a packet of an interface the
//! section did not declare, and a timestamp resolution too fine for a u64). Memory is the read buffer, whatever the file size.
//!
//! Link types (`wire::link`): Ethernet (1), Linux SLL (113) and SLL2 (276),
//! raw IP (101, 12, 14, 228, 229) and null/loop (0, 108), per interface in pcapng (one
//! file may mix them). Any other is a one-line [`SourceError::LinkType`]
//! naming the number, before a frame of that file or interface is delivered.
//! A pcap LinkType field with the FCS bits (bit 26 set, bits 28–31 the length
//! in 16-bit words) is decoded: the FCS is cut off the bytes delivered, the
//! wire length stays as captured; with bit 26 clear the bits are ignored
//! (0x30000001 is plain Ethernet). Frames of the other framings are delivered
//! in their Ethernet form (`wire::link::write_ethernet_form`: MACs zero, the
//! framing's EtherType, the network-layer bytes), built in a buffer of the
//! source's own that grows only for a larger frame, so the balancer's hash and
//! the detector's parser read them as Ethernet; their wire length stays the
//! captured one, so frame bytes are the bytes as captured.
//!
//! Errors are words, never a parser's debug dump: an empty file says it is
//! empty, a file too short for a header says so, another format is "not a
//! pcap or pcapng capture" with the `editcap` fix, and a bad block names what
//! is wrong with it.
//!
//! Not guaranteed: the pcapng `if_fcslen` and `epb_flags` FCS options are not
//! read (pcapng frames are taken as captured without an FCS), nor
//! `epb_flags`' direction bits or a Linux cooked header's packet type: every
//! frame's direction is [`LinkDir::Unknown`] (offline captures are not
//! attributed to containers, the one use of it). A length taken
//! from the frame (`wire::summarize_wire`: IPv4 total length 0, IPv6
//! jumbograms) of a non-Ethernet frame that was cut (snap length, queue slot)
//! or carries a Linux cooked header is off by the difference between the
//! framing's header and 14 bytes (SLL +2, SLL2 +6, raw IP -14, null/loop -10
//! when cut); Ethernet frames count exactly.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{create_reader, parse_pcap_header, PcapBlockOwned, PcapError, PcapHeader};
use wire::link::{write_ethernet_form, LinkType, PcapLinkField};

use super::{Frame, LinkDir, Poll, Source, SourceError, SourceStats};

/// Read buffer: large enough for any frame, small enough to stay in cache-friendly territory.
const BUFFER_SIZE: usize = 1 << 20;

/// First size of the buffer for Ethernet forms (grows for a larger frame).
const FORM_BUFFER_SIZE: usize = (1 << 16) + 64;

/// How the frames of a pcap file or of one pcapng interface are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Link {
    kind: LinkType,
    /// Bytes of FCS at the end of every frame (0: none or unknown).
    fcs_len: usize,
}

const ETHERNET: Link = Link { kind: LinkType::Ethernet, fcs_len: 0 };

/// Per pcapng interface: timestamp units and offset.
#[derive(Clone, Copy, Debug)]
struct NgInterface {
    /// Timestamp units per second.
    units_per_sec: u64,
    /// Seconds added to every timestamp.
    offset_sec: i64,
    link: Link,
    /// Its snap length (`u32::MAX` when the IDB says 0: none): a Simple
    /// Packet Block holds at most this much of its frame, then padding.
    snaplen: u32,
}

/// Classic pcap records read straight from a buffer of the file's bytes.
struct Records {
    file: File,
    /// The file header, taken into account before the first frame.
    header: Option<PcapHeader>,
    buf: Box<[u8]>,
    /// The bytes not yet parsed: `buf[start..end]`.
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: usize,
    /// A read returned 0 bytes: no more will come.
    exhausted: bool,
    big_endian: bool,
    /// 16, or 24 in the "modified" format.
    header_len: usize,
}

impl Records {
    /// Moves the unparsed bytes to the buffer's start and reads more after them.
    fn refill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        let n = loop {
            match self.file.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        self.exhausted = n == 0;
        self.end += n;
        Ok(())
    }
}

/// A capture file source.
pub struct PcapSource {
    /// pcapng (and classic pcap when not read directly).
    reader: Option<Box<dyn PcapReaderIterator + Send>>,
    /// Classic pcap, read directly.
    records: Option<Records>,
    path: String,
    /// Legacy pcap: nanosecond timestamps.
    legacy_nanos: bool,
    /// Legacy pcap: the file's framing.
    legacy_link: Link,
    /// pcapng interfaces of the current section.
    ng_interfaces: Vec<NgInterface>,
    /// pcapng: the current section is big-endian.
    ng_big_endian: bool,
    /// pcapng: the timestamp of the last packet with one (a Simple Packet
    /// Block has none and takes this one).
    ng_last_ns: u64,
    /// Ethernet forms of frames of other framings.
    form: Vec<u8>,
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
    /// The file cannot be opened, is empty, or is not a capture.
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let display = path.display().to_string();
        let file =
            station::config::open_capture(path).map_err(|cause| SourceError::Open { path: display.clone(), cause })?;
        let size = file.metadata().map(|m| m.len()).ok();
        if size == Some(0) {
            return Err(SourceError::NotACapture {
                path: display,
                detail: "the file is empty (0 bytes): there is no capture in it; check the capture was written".into(),
            });
        }
        let (reader, records) = match classic_header(&file) {
            Some((header, big_endian, header_len)) => {
                let mut file = file;
                let start = header.size();
                file.seek(SeekFrom::Start(start as u64))
                    .map_err(|cause| SourceError::Open { path: display.clone(), cause })?;
                let records = Records {
                    file,
                    header: Some(header),
                    buf: vec![0u8; BUFFER_SIZE].into_boxed_slice(),
                    start: 0,
                    end: 0,
                    offset: start,
                    exhausted: false,
                    big_endian,
                    header_len,
                };
                (None, Some(records))
            }
            None => {
                let reader = create_reader(BUFFER_SIZE, file)
                    .map_err(|e| SourceError::NotACapture { path: display.clone(), detail: open_error(&e, size) })?;
                (Some(reader), None)
            }
        };
        Ok(Self {
            reader,
            records,
            path: display,
            legacy_nanos: false,
            legacy_link: ETHERNET,
            ng_interfaces: Vec::new(),
            ng_big_endian: false,
            ng_last_ns: 0,
            form: Vec::new(),
            stats: SourceStats::default(),
            delivered: 0,
            ended: false,
        })
    }
}

/// A classic pcap file's header (read at offset 0 without moving the file's
/// offset), whether its records are big-endian, and their header length;
/// None for anything else (pcapng, a short or unknown header, a file that
/// cannot be read at an offset), which the crate's reader then opens.
fn classic_header(file: &File) -> Option<(PcapHeader, bool, usize)> {
    let mut head = [0u8; 24];
    let mut got = 0;
    while got < head.len() {
        match file.read_at(&mut head[got..], got as u64) {
            Ok(0) => return None,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let (_, header) = parse_pcap_header(&head).ok()?;
    let header_len = if header.is_modified_format() { 24 } else { 16 };
    Some((header.clone(), header.is_bigendian(), header_len))
}

/// What `create_reader` said, in words.
fn open_error<I>(e: &PcapError<I>, size: Option<u64>) -> String {
    let size = size.map_or_else(String::new, |n| format!(" ({n} bytes)"));
    match e {
        PcapError::Eof => format!("the file is empty{size}: there is no capture in it; check the capture was written"),
        PcapError::Incomplete(_) | PcapError::UnexpectedEof => format!(
            "the file{size} is shorter than a pcap or pcapng header: not a complete capture; check the capture was written"
        ),
        PcapError::ReadError => format!("the file{size} cannot be read; check it is a regular, readable file"),
        _ => "not a pcap or pcapng capture (no pcap or pcapng header at its start); convert it with `editcap -F pcap`"
            .into(),
    }
}

/// What the parser found wrong with a block, in words.
fn block_error<I>(e: &PcapError<I>) -> &'static str {
    use pcap_parser::nom::error::ErrorKind;
    match e {
        PcapError::BufferTooSmall => "a block is larger than the 1 MiB read buffer",
        PcapError::ReadError => "the file could not be read",
        PcapError::HeaderNotRecognized => "a section header is not recognized",
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => match kind {
            ErrorKind::Verify => "a block's length is invalid: below its header's size, or its two copies differ",
            ErrorKind::Tag => "a block's type or magic number is not valid here",
            ErrorKind::Eof | ErrorKind::Complete => "a block is shorter than its own fields",
            _ => "a block is malformed",
        },
        PcapError::Eof | PcapError::UnexpectedEof | PcapError::Incomplete(_) => "a block is cut short",
    }
}

/// The framing of a pcap file header's LinkType field.
fn legacy_link_of(path: &str, raw: u32) -> Result<Link, SourceError> {
    let field = PcapLinkField(raw);
    match field.link_type() {
        Some(kind) => Ok(Link { kind, fcs_len: field.fcs_len() }),
        None => Err(SourceError::LinkType { path: path.to_string(), linktype: field.number(), place: String::new() }),
    }
}

/// The framing of a pcapng interface.
fn ng_link(path: &str, raw: i32, interface: usize) -> Result<Link, SourceError> {
    let number = (raw as u32) & 0xffff;
    match LinkType::from_number(number) {
        Some(kind) => Ok(Link { kind, fcs_len: 0 }),
        None => Err(SourceError::LinkType {
            path: path.to_string(),
            linktype: number,
            place: format!(" (pcapng interface {interface})"),
        }),
    }
}

/// The bytes to deliver of one record: cut to what was captured, the FCS
/// cut off, in Ethernet form (in `form`) when the framing is another.
fn frame_bytes<'a>(link: Link, data: &'a [u8], caplen: u32, wire_len: u32, form: &'a mut Vec<u8>) -> &'a [u8] {
    let data = data.get(..caplen as usize).unwrap_or(data);
    let keep = data.len().min((wire_len as usize).saturating_sub(link.fcs_len));
    let data = &data[..keep];
    if link.kind == LinkType::Ethernet {
        return data;
    }
    let need = data.len() + wire::ethernet::HEADER_LEN;
    if form.len() < need {
        form.resize(need.max(FORM_BUFFER_SIZE).next_power_of_two(), 0);
    }
    let n = write_ethernet_form(link.kind, data, form);
    &form[..n]
}

impl PcapSource {
    /// `poll_batch` for classic pcap read directly: the outcomes of the
    /// crate's reader (a record cut at the end: counted, the end; one larger
    /// than the buffer: corrupt; a read error: counted, the end).
    fn poll_records(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        let Self { records, path, legacy_nanos, legacy_link, form, stats, delivered: total, ended, .. } = self;
        let Some(r) = records.as_mut() else { return Ok(Poll::Ended) };
        if let Some(header) = &r.header {
            // Taken only once resolved: an unsupported link type stays an error on every poll.
            let (link, nanos) = (legacy_link_of(path, header.network.0 as u32)?, header.is_nanosecond_precision());
            (*legacy_link, *legacy_nanos, r.header) = (link, nanos, None);
        }
        let (link, header_len, big_endian) = (*legacy_link, r.header_len, r.big_endian);
        let frac_unit: u64 = if *legacy_nanos { 1 } else { 1000 };
        let mut delivered = 0usize;
        while delivered < max {
            let avail = &r.buf[r.start..r.end];
            let mut need = header_len;
            if let Some(h) = avail.first_chunk::<16>() {
                let word = |i: usize| {
                    let w = u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
                    if big_endian {
                        w.swap_bytes()
                    } else {
                        w
                    }
                };
                let caplen = word(8);
                need = header_len + caplen as usize;
                if let Some(data) = avail.get(header_len..need) {
                    let wire_len = word(12).max(caplen);
                    let frame = Frame {
                        ts_ns: u64::from(word(0)) * 1_000_000_000 + u64::from(word(4)) * frac_unit,
                        wire_len,
                        // Plain Ethernet: the record's bytes as they are (caplen <= wire_len, no FCS to cut).
                        data: if link == ETHERNET { data } else { frame_bytes(link, data, caplen, wire_len, form) },
                        source: 0,
                        dir: LinkDir::Unknown,
                    };
                    sink(&frame);
                    r.start += need;
                    r.offset += need;
                    delivered += 1;
                    *total += 1;
                    continue;
                }
            }
            // Not a whole record in the buffer.
            if r.exhausted {
                if !avail.is_empty() {
                    // A record cut off at the end of the file: the capture was
                    // interrupted. Count it, deliver nothing of it, end.
                    stats.errors += 1;
                }
                *ended = true;
                break;
            }
            if avail.len() >= header_len && need >= BUFFER_SIZE {
                stats.errors += 1;
                *ended = true;
                return Err(SourceError::Corrupt {
                    path: path.clone(),
                    offset: r.offset,
                    detail: block_error::<&[u8]>(&PcapError::BufferTooSmall).to_string(),
                    delivered: *total,
                });
            }
            if r.refill().is_err() {
                stats.errors += 1;
                *ended = true;
                break;
            }
        }
        if delivered == 0 && *ended {
            Ok(Poll::Ended)
        } else {
            Ok(Poll::Frames(delivered))
        }
    }
}

impl Source for PcapSource {
    fn poll_batch(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        let polled = self.poll_file(max, sink);
        if matches!(polled, Err(SourceError::LinkType { .. })) {
            // The rest of the file is not read: the run is incomplete, as for
            // a corrupt block (source_errors), not a clean end of the capture.
            self.stats.errors += 1;
            self.ended = true;
        }
        polled
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

impl PcapSource {
    /// [`Source::poll_batch`] before a refused link type is counted.
    fn poll_file(&mut self, max: usize, sink: &mut dyn FnMut(&Frame<'_>)) -> Result<Poll, SourceError> {
        if self.ended {
            return Ok(Poll::Ended);
        }
        if self.records.is_some() {
            return self.poll_records(max, sink);
        }
        let Some(reader) = self.reader.as_mut() else { return Ok(Poll::Ended) };
        let mut delivered = 0usize;
        while delivered < max {
            let (consumed, outcome) = match reader.next() {
                Ok((offset, block)) => {
                    // Ok(Some(())): a frame delivered; Ok(None): a block without
                    // one; Err: what makes the block corrupt.
                    let outcome: Result<Option<()>, String> = 'block: {
                        Ok(match block {
                            PcapBlockOwned::LegacyHeader(header) => {
                                self.legacy_link = legacy_link_of(&self.path, header.network.0 as u32)?;
                                self.legacy_nanos = header.is_nanosecond_precision();
                                None
                            }
                            PcapBlockOwned::Legacy(b) => {
                                let frac =
                                    if self.legacy_nanos { u64::from(b.ts_usec) } else { u64::from(b.ts_usec) * 1000 };
                                let wire_len = b.origlen.max(b.caplen);
                                let frame = Frame {
                                    ts_ns: u64::from(b.ts_sec) * 1_000_000_000 + frac,
                                    wire_len,
                                    data: frame_bytes(self.legacy_link, b.data, b.caplen, wire_len, &mut self.form),
                                    source: 0,
                                    dir: LinkDir::Unknown,
                                };
                                sink(&frame);
                                Some(())
                            }
                            PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                                self.ng_interfaces.clear();
                                self.ng_big_endian = shb.big_endian();
                                None
                            }
                            PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                                let link = ng_link(&self.path, idb.linktype.0, self.ng_interfaces.len())?;
                                let Some(units_per_sec) = units_per_sec(idb.if_tsresol) else {
                                    break 'block Err(format!(
                                    "interface {} has a timestamp resolution (if_tsresol {:#04x}) finer than a u64 can count",
                                    self.ng_interfaces.len(),
                                    idb.if_tsresol
                                ));
                                };
                                self.ng_interfaces.push(NgInterface {
                                    units_per_sec,
                                    offset_sec: idb.ts_offset(),
                                    link,
                                    snaplen: if idb.snaplen == 0 { u32::MAX } else { idb.snaplen },
                                });
                                None
                            }
                            PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                                let p = NgPacket {
                                    if_id: epb.if_id,
                                    ts_units: (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low),
                                    caplen: epb.caplen,
                                    origlen: epb.origlen,
                                    data: epb.data,
                                };
                                let (ifs, last, form) = (&self.ng_interfaces, &mut self.ng_last_ns, &mut self.form);
                                if let Err(detail) = deliver_ng(ifs, last, form, &p, sink) {
                                    break 'block Err(detail);
                                }
                                Some(())
                            }
                            PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                                let Some((link, snaplen)) = self.ng_interfaces.first().map(|i| (i.link, i.snaplen))
                                else {
                                    break 'block Err(
                                        "a simple packet block comes before any interface is declared".into()
                                    );
                                };
                                // `data` holds the frame's captured bytes and the block's
                                // padding to 32 bits: the frame is `origlen` bytes, of which
                                // the interface's snap length was captured (the spec's rule).
                                let wire_len = spb.origlen;
                                let caplen = spb.origlen.min(snaplen).min(spb.data.len() as u32);
                                let frame = Frame {
                                    // A Simple Packet Block has no timestamp: the last one seen.
                                    ts_ns: self.ng_last_ns,
                                    wire_len,
                                    data: frame_bytes(link, spb.data, caplen, wire_len, &mut self.form),
                                    source: 0,
                                    dir: LinkDir::Unknown,
                                };
                                sink(&frame);
                                Some(())
                            }
                            // The crate reads an unknown block's type as little-endian.
                            PcapBlockOwned::NG(Block::Unknown(ub))
                                if (if self.ng_big_endian { ub.block_type.swap_bytes() } else { ub.block_type })
                                    == OBSOLETE_PACKET_BLOCK =>
                            {
                                let (ifs, last, form) = (&self.ng_interfaces, &mut self.ng_last_ns, &mut self.form);
                                let delivered = NgPacket::obsolete(ub.data, self.ng_big_endian)
                                    .and_then(|p| deliver_ng(ifs, last, form, &p, sink));
                                if let Err(detail) = delivered {
                                    break 'block Err(detail);
                                }
                                Some(())
                            }
                            PcapBlockOwned::NG(_) => None,
                        })
                    };
                    (offset, outcome)
                }
                Err(PcapError::Eof) => {
                    self.ended = true;
                    break;
                }
                Err(PcapError::Incomplete(_)) => {
                    if reader.refill().is_err() {
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
                // A corrupt block: the one error below.
                Err(e) => (0, Err(block_error(&e).to_string())),
            };
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(detail) => {
                    self.stats.errors += 1;
                    self.ended = true;
                    return Err(SourceError::Corrupt {
                        path: self.path.clone(),
                        offset: reader.consumed(),
                        detail,
                        delivered: self.delivered,
                    });
                }
            };
            reader.consume(consumed);
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
}

/// Block type of the pcapng Packet Block, obsolete since 2012 (the Enhanced
/// Packet Block replaced it) but still in captures of old tools and read by
/// tshark and pmacctd; the pcap crate leaves it an unknown block.
const OBSOLETE_PACKET_BLOCK: u32 = 2;

/// A pcapng packet of an interface: an Enhanced Packet Block's, or an
/// obsolete Packet Block's (draft-tuexen-opsawg-pcapng, appendix A:
/// interface id (16 bits), drops count (16), timestamp (high and low 32
/// bits), captured length, packet length, then the captured bytes).
struct NgPacket<'a> {
    if_id: u32,
    ts_units: u64,
    caplen: u32,
    origlen: u32,
    data: &'a [u8],
}

impl<'a> NgPacket<'a> {
    /// Reads an obsolete Packet Block's `body` in the section's byte order;
    /// what makes it corrupt otherwise.
    fn obsolete(body: &'a [u8], big_endian: bool) -> Result<Self, String> {
        let Some((head, rest)) = body.split_first_chunk::<20>() else {
            return Err(format!("a packet block of {} bytes is shorter than its 20-byte header", body.len()));
        };
        let u16_at = |i: usize| {
            let b = [head[i], head[i + 1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_at = |i: usize| {
            let b = [head[i], head[i + 1], head[i + 2], head[i + 3]];
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let caplen = u32_at(12);
        let Some(data) = rest.get(..caplen as usize) else {
            return Err(format!("a packet block claims {caplen} captured bytes but holds {}", rest.len()));
        };
        Ok(Self {
            if_id: u32::from(u16_at(0)),
            ts_units: (u64::from(u32_at(4)) << 32) | u64::from(u32_at(8)),
            caplen,
            origlen: u32_at(16),
            data,
        })
    }
}

/// Hands `p` to `sink` in the framing of its interface (of `interfaces`), at
/// its time in the interface's resolution (kept in `last_ns`, for a Simple
/// Packet Block after it); a packet of an undeclared interface is corrupt.
/// (Of `PcapSource`'s fields, not a method: its reader is borrowed meanwhile.)
fn deliver_ng(
    interfaces: &[NgInterface],
    last_ns: &mut u64,
    form: &mut Vec<u8>,
    p: &NgPacket<'_>,
    sink: &mut dyn FnMut(&Frame<'_>),
) -> Result<(), String> {
    let Some(&iface) = interfaces.get(p.if_id as usize) else {
        return Err(format!("a packet names interface {} but the section declares {}", p.if_id, interfaces.len()));
    };
    let wire_len = p.origlen.max(p.caplen);
    *last_ns = ts_to_ns(p.ts_units, iface.units_per_sec, iface.offset_sec);
    sink(&Frame {
        ts_ns: *last_ns,
        wire_len,
        data: frame_bytes(iface.link, p.data, p.caplen, wire_len, form),
        source: p.if_id.min(255) as u8,
        dir: LinkDir::Unknown,
    });
    Ok(())
}

/// Timestamp units per second of a pcapng interface's `if_tsresol` (6,
/// microseconds, when the option is absent): bit 7 clear, a power of ten;
/// set, a power of two. None when it is too fine for a u64. (pcap-parser
/// 0.17's `ts_resolution` checks the byte before masking bit 7 and so
/// refuses every power of two.)
fn units_per_sec(tsresol: u8) -> Option<u64> {
    let e = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(e)
    } else {
        1u64.checked_shl(e)
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

    /// IPv4 UDP 10.0.0.1:1000 -> 10.0.0.2:2000, total length 32 (4 bytes of data).
    const IP: [u8; 32] = [
        0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0x03, 0xe8, 0x07, 0xd0, 0, 12, 0, 0, 1, 2,
        3, 4,
    ];

    /// A little-endian microsecond pcap with one record per frame (caplen = origlen).
    fn pcap(linktype: u32, frames: &[&[u8]]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        f.extend_from_slice(&2u16.to_le_bytes());
        f.extend_from_slice(&4u16.to_le_bytes());
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&linktype.to_le_bytes());
        for (i, d) in frames.iter().enumerate() {
            f.extend_from_slice(&(i as u32 + 1).to_le_bytes());
            f.extend_from_slice(&0u32.to_le_bytes());
            f.extend_from_slice(&(d.len() as u32).to_le_bytes());
            f.extend_from_slice(&(d.len() as u32).to_le_bytes());
            f.extend_from_slice(d);
        }
        f
    }

    fn ng_block(kind: u32, body: &[u8]) -> Vec<u8> {
        let len = 12 + body.len().div_ceil(4) * 4;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(body);
        b.resize(len - 4, 0);
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b
    }

    /// A pcapng with one IDB per link type and one EPB per (interface, frame).
    fn pcapng(linktypes: &[u16], frames: &[(u32, &[u8])]) -> Vec<u8> {
        let mut shb = 0x1a2b_3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut f = ng_block(0x0a0d_0d0a, &shb);
        for lt in linktypes {
            let mut idb = lt.to_le_bytes().to_vec();
            idb.extend_from_slice(&[0, 0]);
            idb.extend_from_slice(&0u32.to_le_bytes());
            f.extend(ng_block(1, &idb));
        }
        for (iface, d) in frames {
            let mut epb = iface.to_le_bytes().to_vec();
            epb.extend_from_slice(&[0; 8]);
            epb.extend_from_slice(&(d.len() as u32).to_le_bytes());
            epb.extend_from_slice(&(d.len() as u32).to_le_bytes());
            epb.extend_from_slice(d);
            f.extend(ng_block(6, &epb));
        }
        f
    }

    /// Every frame the source delivers (data, wire length, source), or its error.
    fn read_all(bytes: &[u8]) -> Result<Vec<(Vec<u8>, u32, u8)>, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        std::fs::write(&path, bytes).unwrap();
        let mut src = PcapSource::open(&path).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        loop {
            let poll = src
                .poll_batch(64, &mut |f| out.push((f.data.to_vec(), f.wire_len, f.source)))
                .map_err(|e| e.to_string())?;
            if poll == Poll::Ended {
                return Ok(out);
            }
        }
    }

    /// What a reader made of a capture: (timestamp, bytes, wire length) of
    /// each frame, records counted unreadable, and the error that stopped it.
    type Outcome = (Vec<(u64, Vec<u8>, u32)>, u64, Option<String>);

    /// The source's outcome on `bytes`.
    fn source_outcome(bytes: &[u8]) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        std::fs::write(&path, bytes).unwrap();
        let mut src = PcapSource::open(&path).unwrap();
        let mut frames = Vec::new();
        loop {
            match src.poll_batch(3, &mut |f| frames.push((f.ts_ns, f.data.to_vec(), f.wire_len))) {
                Ok(Poll::Ended) => return (frames, src.stats().errors, None),
                Ok(_) => {}
                Err(e) => {
                    let error = e.to_string().replace(&path.display().to_string(), "c");
                    return (frames, src.stats().errors, Some(error));
                }
            }
        }
    }

    /// The outcome of the `pcap-parser` crate's own streaming reader on an
    /// Ethernet classic pcap: the peer the source's direct reading must equal.
    fn crate_outcome(bytes: &[u8]) -> Outcome {
        let mut reader = create_reader(BUFFER_SIZE, std::io::Cursor::new(bytes.to_vec())).unwrap();
        let (mut frames, mut nanos) = (Vec::new(), false);
        loop {
            match reader.next() {
                Ok((n, PcapBlockOwned::LegacyHeader(h))) => {
                    nanos = h.is_nanosecond_precision();
                    reader.consume(n);
                }
                Ok((n, PcapBlockOwned::Legacy(b))) => {
                    let frac = if nanos { u64::from(b.ts_usec) } else { u64::from(b.ts_usec) * 1000 };
                    let data = b.data.get(..b.caplen as usize).unwrap_or(b.data).to_vec();
                    frames.push((u64::from(b.ts_sec) * 1_000_000_000 + frac, data, b.origlen.max(b.caplen)));
                    reader.consume(n);
                }
                Ok(_) => panic!("a classic pcap has only its header and records"),
                Err(PcapError::Eof) => return (frames, 0, None),
                Err(PcapError::Incomplete(_)) => {
                    if reader.refill().is_err() {
                        return (frames, 1, None);
                    }
                }
                Err(PcapError::UnexpectedEof) => return (frames, 1, None),
                Err(e) => {
                    let (delivered, detail) = (frames.len(), block_error(&e));
                    let error = format!(
                        "c: corrupt capture at byte {} ({detail}); {delivered} frames before it were delivered",
                        reader.consumed()
                    );
                    return (frames, 1, Some(error));
                }
            }
        }
    }

    /// `file` (a little-endian classic pcap with 16-byte record headers) in
    /// another byte order, timestamp precision or record header length.
    fn variant(file: &[u8], big_endian: bool, nanos: bool, modified: bool) -> Vec<u8> {
        let magic: u32 = match (nanos, modified) {
            (_, true) => 0xa1b2_cd34,
            (true, false) => 0xa1b2_3c4d,
            (false, false) => 0xa1b2_c3d4,
        };
        let swap = |b: &[u8]| -> Vec<u8> {
            if big_endian {
                b.iter().rev().copied().collect()
            } else {
                b.to_vec()
            }
        };
        let mut out = swap(&magic.to_le_bytes());
        for field in [4..6, 6..8, 8..12, 12..16, 16..20, 20..24] {
            out.extend(swap(&file[field]));
        }
        let mut at = 24;
        while at + 16 <= file.len() {
            let caplen = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
            for w in 0..4 {
                out.extend(swap(&file[at + 4 * w..at + 4 * w + 4]));
            }
            if modified {
                out.extend_from_slice(&[0xee; 8]);
            }
            let end = (at + 16 + caplen).min(file.len());
            out.extend_from_slice(&file[at + 16..end]);
            at = end;
        }
        out
    }

    #[test]
    fn classic_pcap_records_are_read_as_the_pcap_parser_crate_reads_them_whole_cut_or_oversized() {
        let eth = |n: usize| -> Vec<u8> { (0..n).map(|i| i as u8).collect() };
        let frames = [eth(60), eth(0), eth(200), eth(14)];
        let mut file = pcap(1, &frames.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // The second record says 300 bytes on the wire, 0 captured.
        let second = 24 + 16 + 60;
        file[second + 12..second + 16].copy_from_slice(&300u32.to_le_bytes());
        file[second + 4..second + 8].copy_from_slice(&999_999u32.to_le_bytes());
        for (be, nanos, modified) in
            [(false, false, false), (true, false, false), (false, true, false), (false, false, true)]
        {
            let whole = variant(&file, be, nanos, modified);
            assert_eq!(crate_outcome(&whole).0.len(), 4, "the peer reads every frame");
            // Cut at every length: whole records delivered, a cut one counted, the end.
            for cut in 24..=whole.len() {
                let bytes = &whole[..cut];
                assert_eq!(source_outcome(bytes), crate_outcome(bytes), "{be} {nanos} {modified}, cut at {cut}");
            }
        }
        // A record larger than the read buffer, in a file larger than it: corrupt at its offset.
        let mut big = pcap(1, &[&eth(60)]);
        big.extend_from_slice(&[0; 8]);
        big.extend_from_slice(&(2u32 << 20).to_le_bytes());
        big.extend_from_slice(&(2u32 << 20).to_le_bytes());
        big.resize(3 << 19, 0);
        let outcome = source_outcome(&big);
        assert!(outcome.2.as_deref().is_some_and(|e| e.contains("at byte 100 (")), "{outcome:?}");
        assert_eq!((outcome.0.len(), outcome.1, &outcome.2), (1, 1, &crate_outcome(&big).2));
    }

    fn ethernet_form(payload: &[u8], ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn every_supported_link_type_is_delivered_in_ethernet_form_with_its_captured_length() {
        let mut sll = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&IP);
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 3, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        sll2.extend_from_slice(&IP);
        let mut null = vec![2, 0, 0, 0];
        null.extend_from_slice(&IP);
        let mut lo = vec![0, 0, 0, 2];
        lo.extend_from_slice(&IP);
        for (lt, frame) in [
            (113, &sll[..]),
            (276, &sll2[..]),
            (101, &IP[..]),
            (12, &IP[..]),
            (14, &IP[..]),
            (228, &IP[..]),
            (0, &null[..]),
            (108, &lo[..]),
        ] {
            let got = read_all(&pcap(lt, &[frame])).unwrap();
            assert_eq!(got, vec![(ethernet_form(&IP, 0x0800), frame.len() as u32, 0)], "link type {lt}");
            let s = wire::summarize(&got[0].0);
            assert_eq!((s.l3, s.src_port, s.dst_port, s.ip_len), (wire::L3::Ipv4, 1000, 2000, 32), "link type {lt}");
        }
    }

    #[test]
    fn fcs_bits_in_the_link_type_are_decoded() {
        let mut eth = ethernet_form(&IP, 0x0800);
        eth[0] = 2;
        let mut with_fcs = eth.clone();
        with_fcs.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        // P set, 2 words: 4 bytes of FCS cut off, the wire length kept.
        let got = read_all(&pcap(0x2400_0001, &[&with_fcs])).unwrap();
        assert_eq!(got, vec![(eth.clone(), with_fcs.len() as u32, 0)]);
        // P clear (0x30000001): plain Ethernet, nothing cut.
        let got = read_all(&pcap(0x3000_0001, &[&with_fcs])).unwrap();
        assert_eq!(got, vec![(with_fcs.clone(), with_fcs.len() as u32, 0)]);
    }

    #[test]
    fn other_link_types_are_a_one_line_error_naming_the_number() {
        let e = read_all(&pcap(147, &[&IP])).unwrap_err();
        assert!(e.contains("link type 147 is not supported"), "{e}");
        assert!(e.contains("Linux SLL (113)") && e.contains("raw IP (101, 12, 14, 228, 229)"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = read_all(&pcapng(&[1, 105], &[(0, &IP)])).unwrap_err();
        assert!(e.contains("link type 105 (pcapng interface 1) is not supported"), "{e}");
    }

    #[test]
    fn a_link_type_refused_after_frames_were_read_counts_as_a_source_error() {
        let eth = ethernet_form(&IP, 0x0800);
        let mut f = pcapng(&[1], &[(0, &eth)]);
        f.extend(pcapng(&[105], &[(0, &eth)]));
        let (frames, errors, error) = source_outcome(&f);
        assert_eq!(frames.len(), 1, "the frames before the refused section are read");
        assert_eq!(errors, 1, "the rest of the file was not read: the run is incomplete");
        assert!(error.is_some_and(|e| e.contains("link type 105")));
        let (frames, errors, _) = source_outcome(&pcap(147, &[&IP]));
        assert_eq!((frames.len(), errors), (0, 1), "refused at the first header");
    }

    #[test]
    fn an_obsolete_packet_block_is_read_as_an_enhanced_one() {
        let eth = ethernet_form(&IP, 0x0800);
        let mut f = pcapng(&[1, 1], &[]);
        let mut opb = 1u16.to_le_bytes().to_vec(); // interface 1
        opb.extend_from_slice(&7u16.to_le_bytes()); // drops
        opb.extend_from_slice(&0u32.to_le_bytes());
        opb.extend_from_slice(&3_000_000u32.to_le_bytes()); // 3 s in microseconds
        opb.extend_from_slice(&(eth.len() as u32 - 6).to_le_bytes());
        opb.extend_from_slice(&(eth.len() as u32).to_le_bytes());
        opb.extend_from_slice(&eth[..eth.len() - 6]);
        f.extend(ng_block(2, &opb));
        let (frames, errors, error) = source_outcome(&f);
        assert_eq!((errors, error), (0, None));
        assert_eq!(frames, vec![(3_000_000_000, eth[..eth.len() - 6].to_vec(), eth.len() as u32)]);
        // One that claims more bytes than it holds is corrupt, not read past its end.
        let mut bad = pcapng(&[1], &[]);
        let mut body = opb.clone();
        body[0] = 0;
        body[12..16].copy_from_slice(&1000u32.to_le_bytes());
        bad.extend(ng_block(2, &body));
        let (frames, errors, error) = source_outcome(&bad);
        assert_eq!((frames.len(), errors), (0, 1));
        assert!(error.is_some_and(|e| e.contains("claims 1000 captured bytes")));
    }

    #[test]
    fn an_obsolete_packet_block_of_a_big_endian_section_is_read_too() {
        let eth = ethernet_form(&IP, 0x0800);
        let block = |kind: u32, body: &[u8]| {
            let len = 12 + body.len().div_ceil(4) * 4;
            let mut b = kind.to_be_bytes().to_vec();
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend_from_slice(body);
            b.resize(len - 4, 0);
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b
        };
        let mut shb = 0x1a2b_3c4du32.to_be_bytes().to_vec();
        shb.extend_from_slice(&1u16.to_be_bytes());
        shb.extend_from_slice(&0u16.to_be_bytes());
        shb.extend_from_slice(&u64::MAX.to_be_bytes());
        let mut f = block(0x0a0d_0d0a, &shb);
        let mut idb = 1u16.to_be_bytes().to_vec();
        idb.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        f.extend(block(1, &idb));
        let mut opb = 0u16.to_be_bytes().to_vec();
        opb.extend_from_slice(&0u16.to_be_bytes());
        opb.extend_from_slice(&0u32.to_be_bytes());
        opb.extend_from_slice(&2_000_000u32.to_be_bytes());
        opb.extend_from_slice(&(eth.len() as u32).to_be_bytes());
        opb.extend_from_slice(&(eth.len() as u32).to_be_bytes());
        opb.extend_from_slice(&eth);
        f.extend(block(2, &opb));
        let (frames, errors, error) = source_outcome(&f);
        assert_eq!((errors, error), (0, None));
        assert_eq!(frames, vec![(2_000_000_000, eth.clone(), eth.len() as u32)]);
    }

    #[test]
    fn a_simple_packet_block_holds_at_most_its_interfaces_snap_length_then_padding() {
        let eth = ethernet_form(&IP, 0x0800);
        let mut f = pcapng(&[], &[]);
        let mut idb = 1u16.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&37u32.to_le_bytes()); // snap length 37
        f.extend(ng_block(1, &idb));
        let mut spb = (eth.len() as u32).to_le_bytes().to_vec();
        spb.extend_from_slice(&eth[..37]);
        f.extend(ng_block(3, &spb)); // padded to 40
        let (frames, errors, _) = source_outcome(&f);
        assert_eq!(errors, 0);
        assert_eq!(frames, vec![(0, eth[..37].to_vec(), eth.len() as u32)], "37 bytes captured, not the padding");
    }

    #[test]
    fn a_simple_packet_block_is_its_original_length_without_padding_at_the_last_timestamp() {
        let eth = ethernet_form(&IP, 0x0800);
        assert_ne!(eth.len() % 4, 0, "a frame the block pads");
        let mut f = pcapng(&[], &[]);
        f.extend(ng_idb_with_tsresol(6));
        f.extend(ng_epb(0, 5_000_000, &eth));
        let mut spb = (eth.len() as u32).to_le_bytes().to_vec();
        spb.extend_from_slice(&eth);
        f.extend(ng_block(3, &spb));
        let (frames, errors, _) = source_outcome(&f);
        assert_eq!(errors, 0);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], (5_000_000_000, eth.clone(), eth.len() as u32), "no padding, the EPB's time");
    }

    #[test]
    fn a_fifo_in_place_of_the_capture_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pcap");
        assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
        use std::os::unix::fs::OpenOptionsExt;
        // On a thread: an open that blocks (the defect) fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || tx.send(PcapSource::open(&p).map(|_| ()).map_err(|e| e.to_string())));
        let got = rx.recv_timeout(std::time::Duration::from_secs(20)).expect("the open blocked on the FIFO");
        let e = got.unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        // Unblock an open still waiting, so the thread ends.
        let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&path);
    }

    #[test]
    fn pcapng_link_types_are_per_interface() {
        let eth = ethernet_form(&IP, 0x0800);
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&IP);
        let got = read_all(&pcapng(&[1, 101, 113], &[(0, &eth), (1, &IP), (2, &sll)])).unwrap();
        assert_eq!(
            got,
            vec![(eth.clone(), 46, 0), (eth.clone(), 32, 1), (eth, 48, 2)],
            "each frame in the framing of its interface"
        );
    }

    /// An IDB of Ethernet with an `if_tsresol` option.
    fn ng_idb_with_tsresol(tsresol: u8) -> Vec<u8> {
        let mut idb = 1u16.to_le_bytes().to_vec();
        idb.extend_from_slice(&[0, 0]);
        idb.extend_from_slice(&0u32.to_le_bytes());
        idb.extend_from_slice(&9u16.to_le_bytes()); // if_tsresol
        idb.extend_from_slice(&1u16.to_le_bytes());
        idb.extend_from_slice(&[tsresol, 0, 0, 0]);
        idb.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        ng_block(1, &idb)
    }

    /// An EPB of interface `if_id` at `units` timestamp units.
    fn ng_epb(if_id: u32, units: u64, d: &[u8]) -> Vec<u8> {
        let mut epb = if_id.to_le_bytes().to_vec();
        epb.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(units as u32).to_le_bytes());
        epb.extend_from_slice(&(d.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(d.len() as u32).to_le_bytes());
        epb.extend_from_slice(d);
        ng_block(6, &epb)
    }

    #[test]
    fn pcapng_timestamps_follow_the_interfaces_resolution_in_powers_of_ten_and_of_two() {
        let eth = ethernet_form(&IP, 0x0800);
        // (if_tsresol, units per second): 10^-9, 2^-10 (bit 7 set), 2^-20, 10^-3.
        for (tsresol, per_sec) in [(9u8, 1_000_000_000u64), (0x8a, 1024), (0x94, 1 << 20), (3, 1000)] {
            let mut f = pcapng(&[], &[]);
            f.extend(ng_idb_with_tsresol(tsresol));
            f.extend(ng_epb(0, 1000 * per_sec, &eth));
            f.extend(ng_epb(0, 1100 * per_sec + per_sec / 2, &eth));
            let (frames, errors, error) = source_outcome(&f);
            let ts: Vec<u64> = frames.iter().map(|f| f.0).collect();
            assert_eq!(ts, vec![1_000_000_000_000, 1_100_500_000_000], "if_tsresol {tsresol:#04x}");
            assert_eq!((errors, error), (0, None));
        }
        // Too fine for a u64 (10^20, 2^64): a one-line error before any frame of it.
        for tsresol in [20u8, 0xc0] {
            let mut f = pcapng(&[], &[]);
            f.extend(ng_idb_with_tsresol(tsresol));
            f.extend(ng_epb(0, 1, &eth));
            let (frames, _, error) = source_outcome(&f);
            assert!(frames.is_empty());
            let error = error.expect("refused");
            assert!(error.contains("corrupt capture") && error.contains("if_tsresol"), "{error}");
        }
    }

    #[test]
    fn a_pcapng_packet_of_an_undeclared_interface_is_a_corrupt_block_not_an_ethernet_frame() {
        let eth = ethernet_form(&IP, 0x0800);
        // Interface 0 is raw IP; the second packet names interface 1, which no IDB declared.
        let mut f = pcapng(&[101], &[(0, &IP)]);
        f.extend(ng_epb(1, 0, &IP));
        let (frames, errors, error) = source_outcome(&f);
        assert_eq!(frames.iter().map(|f| f.1.clone()).collect::<Vec<_>>(), vec![eth], "the frame before it");
        assert_eq!(errors, 1);
        let error = error.expect("refused");
        assert!(error.contains("corrupt capture") && error.contains("interface 1"), "{error}");
        // A simple packet block before any interface is declared: the same.
        let mut f = pcapng(&[], &[]);
        let mut spb = (IP.len() as u32).to_le_bytes().to_vec();
        spb.extend_from_slice(&IP);
        f.extend(ng_block(3, &spb));
        let (frames, _, error) = source_outcome(&f);
        assert!(frames.is_empty());
        assert!(error.expect("refused").contains("before any interface"));
    }

    #[test]
    fn an_empty_file_says_it_is_empty() {
        let e = read_all(&[]).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        assert!(!e.contains("editcap"), "{e}");
        let e = read_all(b"hello, this is not a capture at all").unwrap_err();
        assert!(e.contains("not a pcap or pcapng capture"), "{e}");
    }

    #[test]
    fn a_short_or_corrupt_pcapng_block_is_described_in_words() {
        let mut f = pcapng(&[1], &[(0, &ethernet_form(&IP, 0x0800))]);
        // A block whose length (6) is below the 12-byte minimum.
        f.extend_from_slice(&[6, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0]);
        f.extend(ng_block(6, &[0; 40]));
        let e = read_all(&f).unwrap_err();
        assert!(e.contains("corrupt capture") && e.contains("1 frames before it"), "{e}");
        assert!(!e.contains("NomError") && !e.contains('[') && !e.contains("Verify"), "{e}");
        // Two lengths that differ.
        let mut f = pcapng(&[1], &[]);
        let mut bad = ng_block(6, &[0; 40]);
        let n = bad.len();
        bad[n - 4] = 0x7c;
        f.extend(bad);
        let e = read_all(&f).unwrap_err();
        assert!(!e.contains("NomError") && !e.contains('['), "{e}");
    }
}

//! Print files in pmacct's print-plugin formats, written atomically.
//!
//! Guarantees:
//! - `flows.csv` is what pmacct 1.7.7 writes with `print_output: csv` for the
//!   same aggregate: a header of the chosen primitives in pmacct's column order
//!   (VLAN, SRC_IP, DST_IP, SRC_PORT, DST_PORT, PROTOCOL) then `PACKETS,BYTES`,
//!   followed by extra columns `FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END`
//!   (the first and last packet of the row's records, seconds since the epoch
//!   with microseconds, as pmacct prints them with `timestamps_since_epoch`;
//!   `0.000000` when unknown). Addresses as glibc's
//!   `inet_ntop` prints them (IPv6 compressed per RFC 5952, `::a.b.c.d` and
//!   `::ffff:a.b.c.d` forms), ports and VLAN in decimal, the protocol by pmacct's
//!   name (see [`station::proto::proto_name`]). BYTES = IP bytes.
//! - `flows.json` is JSON lines like pmacct's `print_output: json`: one object
//!   per row, keys in pmacct's order (`event_type`, `vlan`, `ip_src`, `ip_dst`,
//!   `port_src`, `port_dst`, `ip_proto` (always a string), `packets`, `bytes`)
//!   then `frame_bytes`, `flows`, `timestamp_start`, `timestamp_end`.
//! - Rows are sorted by BYTES descending, then by key: the same input gives
//!   byte-identical files. A table is sorted once for its CSV and JSON files;
//!   numbers and addresses are formatted without `fmt`, by hand (integers as
//!   std prints them, addresses as glibc's `inet_ntop`; tested against std's
//!   `Display` and serde_json on random rows), by one formatter for both files.
//! - Every file is streamed (rows composed straight into 1 MiB block-aligned
//!   pieces, each one write(2), direct to the disk where the file system
//!   allows: a table is never held whole as text, and a large file does not
//!   pass through the page cache; see [`shmq::files::AtomicFile`]; the
//!   pieces of a table of 32,768 rows or more are written by a thread of
//!   their own while the next are composed, at most one per file waiting) to a
//!   temporary file of this process's own in the
//!   same directory (`.<name>.<pid>.<r>.tmp`, `r` random, created
//!   exclusively, never through a symbolic link, another name tried when one
//!   is taken), fsynced and renamed over the target, so a reader never sees a
//!   partial file and nothing planted in a shared `--out` directory can
//!   redirect or stop the write. Files get mode 0644.
//! - Every file and directory is made relative to the output directory's
//!   descriptor ([`OutDir`], opened and judged once at start by
//!   [`crate::summary::check_out_dir`]); `queue-<q>/` and `containers/` are
//!   opened with `O_NOFOLLOW | O_DIRECTORY` (a link planted there is refused,
//!   naming it), judged as `--out` is, and made when absent with mode
//!   [`out_dir_mode`] whatever the umask. The directory's name (or a parent)
//!   swapped for a link after the start sends nothing elsewhere.
//!
//! Not guaranteed: an output directory its group or other users may write
//! (it must then be sticky, as `/tmp` is) lets them create names in it: a
//! name they take first (`flows.csv` made by someone else, in a sticky
//! directory a non-root app cannot replace; `queue-0` as a link) makes that
//! write fail with a line naming it, never go elsewhere.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use shmq::files::{DirFd, Purpose};

use crate::aggregate::{Aggregate, Counters, Key};
use crate::settings::{Formats, Primitive, Primitives};
use station::proto::proto_name;

/// A file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct WriteError {
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

/// Formats an address of a key as pmacct does (glibc `inet_ntop`).
#[cfg(test)]
fn format_addr(ip_version: u8, bytes: &[u8; 16]) -> String {
    let mut out = Vec::with_capacity(46);
    push_addr(&mut out, ip_version, bytes);
    // Only ASCII digits, hex digits, dots and colons were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends an address as glibc `inet_ntop` prints it (nothing for a version
/// other than 4 or 6).
fn push_addr(out: &mut Vec<u8>, ip_version: u8, b: &[u8; 16]) {
    match ip_version {
        4 => push_v4(out, [b[0], b[1], b[2], b[3]]),
        6 => push_v6(out, b),
        _ => {}
    }
}

/// Dotted quad, appended in one copy (see [`quad_text`]).
fn push_v4(out: &mut Vec<u8>, a: [u8; 4]) {
    let mut text = [0u8; 16];
    let n = quad_text(a, &mut text);
    out.extend_from_slice(&text[..n]);
}

/// Writes a dotted quad at the start of `to` and returns its length: each
/// octet's text and dot from [`OCTETS`] in one 4-byte copy (three octets and
/// their dots take at most 12 bytes; the last copy 4 more). The one dotted
/// quad formatter ([`Row::v4`], [`push_v4`], an IPv6 address's dotted tail).
#[inline(always)]
fn quad_text(a: [u8; 4], to: &mut [u8; 16]) -> usize {
    let mut n = 0;
    for (i, octet) in a.into_iter().enumerate() {
        let (text, len) = OCTETS[usize::from(octet)];
        if let Some(to) = to.get_mut(n..n + 4) {
            to.copy_from_slice(&text);
        }
        n += usize::from(len) + usize::from(i < 3);
    }
    n
}

/// An IPv6 address's text as glibc `inet_ntop`, appended in one copy (see [`v6_text`]).
fn push_v6(out: &mut Vec<u8>, b: &[u8; 16]) {
    let mut text = [0u8; 48];
    let n = v6_text(b, &mut text);
    out.extend_from_slice(&text[..n]);
}

/// Writes an IPv6 address at the start of `to` as glibc `inet_ntop6` prints
/// it and returns its length (at most 45): the longest run (first on ties)
/// of two or more zero words becomes `::`; `::a.b.c.d` and `::ffff:a.b.c.d`
/// keep a dotted tail. (Rust's `Ipv6Addr` `Display` differs for
/// `::a.b.c.d`.) Each word is one 4-byte copy of its hex digits, leading
/// zeros shifted out; the one IPv6 formatter ([`Row::v6`], [`push_v6`]).
#[inline(always)]
fn v6_text(b: &[u8; 16], to: &mut [u8; 48]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let words: [u16; 8] = std::array::from_fn(|i| u16::from_be_bytes([b[2 * i], b[2 * i + 1]]));
    // Longest run of zero words, the first one on ties: (start, length).
    let (mut best, mut cur) = ((0usize, 0usize), (0usize, 0usize));
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            cur = if cur.1 == 0 { (i, 1) } else { (cur.0, cur.1 + 1) };
            if cur.1 > best.1 {
                best = cur;
            }
        } else {
            cur = (0, 0);
        }
    }
    let (base, len) = if best.1 >= 2 { best } else { (8, 0) };
    // `::a.b.c.d` or `::ffff:a.b.c.d`: the last two words as a dotted quad.
    let dotted = base == 0 && (len == 6 || (len == 5 && words[5] == 0xffff));
    let mut n = 0;
    // Every write below ends by byte 45 (39 for eight words): the `get_mut`s always hold.
    for (i, &w) in words.iter().enumerate() {
        if i >= base && i < base + len {
            if i == base {
                if let Some(at) = to.get_mut(n) {
                    *at = b':';
                }
                n += 1;
            }
            continue;
        }
        if i != 0 {
            if let Some(at) = to.get_mut(n) {
                *at = b':';
            }
            n += 1;
        }
        if i == 6 && dotted {
            let mut quad = [0u8; 16];
            let q = quad_text([b[12], b[13], b[14], b[15]], &mut quad);
            if let Some(at) = to.get_mut(n..n + 16) {
                at.copy_from_slice(&quad);
            }
            return (n + q).min(to.len());
        }
        // The digits after the leading zeros (one for 0), first in the lowest byte.
        let digits = (4 - w.leading_zeros() as usize / 4).max(1);
        let text = u32::from_le_bytes([3, 2, 1, 0].map(|s| HEX[usize::from(w >> (4 * s) & 0xf)])) >> (8 * (4 - digits));
        if let Some(at) = to.get_mut(n..n + 4) {
            at.copy_from_slice(&text.to_le_bytes());
        }
        n += digits;
    }
    if len > 0 && base + len == 8 {
        if let Some(at) = to.get_mut(n) {
            *at = b':';
        }
        n += 1;
    }
    n.min(to.len())
}

/// Appends an unsigned integer in decimal (off the flow files' path: their
/// numbers are [`Row::num`]'s).
fn push_u64(out: &mut Vec<u8>, v: u64) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// A constant field's text of at most 48 bytes (a column's JSON key, a
/// protocol's name), copied into a row with one fixed-size copy (see
/// [`Text`]; a call into `memcpy` for a short variable length costs more than
/// the copy).
#[derive(Clone, Copy)]
struct Short {
    b: [u8; 48],
    n: usize,
}

impl Short {
    const EMPTY: Short = Short { b: [0; 48], n: 0 };

    /// `bytes` when they fit (None: longer than 48 bytes).
    fn of(bytes: &[u8]) -> Option<Short> {
        let mut s = Short::EMPTY;
        s.b.get_mut(..bytes.len())?.copy_from_slice(bytes);
        s.n = bytes.len();
        Some(s)
    }
}

/// Each octet's decimal text (4 bytes, the dot after it included) and its length without the dot.
const OCTETS: [([u8; 4], u8); 256] = {
    let mut t = [([0u8; 4], 0u8); 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        t[i] = if o >= 100 {
            ([b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10, b'.'], 3)
        } else if o >= 10 {
            ([b'0' + o / 10, b'0' + o % 10, b'.', 0], 2)
        } else {
            ([b'0' + o, b'.', 0, 0], 1)
        };
        i += 1;
    }
    t
};

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The CSV header for `primitives`.
pub fn csv_header(primitives: Primitives) -> String {
    let mut cols: Vec<&str> = primitives.iter().map(Primitive::csv_header).collect();
    cols.extend(["PACKETS", "BYTES", "FRAME_BYTES", "FLOWS", "TIMESTAMP_START", "TIMESTAMP_END"]);
    cols.join(",")
}

/// Every key column of the overflow row (CJ_APP_MAX_ROWS reached).
pub const OVERFLOW_FIELD: &str = "other";

/// The value of one primitive of a key, as pmacct prints it (`other` in the overflow row).
pub fn field(p: Primitive, k: &Key) -> String {
    let mut out = Vec::with_capacity(46);
    push_field(&mut out, p, k);
    // Every field is text: addresses and numbers are ASCII, names are `str`s.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`field`]'s text.
fn push_field(out: &mut Vec<u8>, p: Primitive, k: &Key) {
    if k.overflow {
        out.extend_from_slice(OVERFLOW_FIELD.as_bytes());
        return;
    }
    match p {
        Primitive::Vlan => push_u64(out, u64::from(k.vlan)),
        Primitive::SrcHost => push_addr(out, k.ip_version, &k.src),
        Primitive::DstHost => push_addr(out, k.ip_version, &k.dst),
        Primitive::SrcPort => push_u64(out, u64::from(k.src_port)),
        Primitive::DstPort => push_u64(out, u64::from(k.dst_port)),
        Primitive::Proto => out.extend_from_slice(proto_name(k.proto).as_bytes()),
        Primitive::SrcContainer => out.extend_from_slice(station::record::text_of(&k.src_container.bytes()).as_bytes()),
        Primitive::DstContainer => out.extend_from_slice(station::record::text_of(&k.dst_container.bytes()).as_bytes()),
        Primitive::Tunnel => {
            out.extend_from_slice(wire::tunnel::TunnelKind::from_u8(k.tunnel).map_or("", |t| t.name()).as_bytes())
        }
        Primitive::OuterSrcHost => push_addr(out, k.outer_ip_version, &k.outer_src.bytes()),
        Primitive::OuterDstHost => push_addr(out, k.outer_ip_version, &k.outer_dst.bytes()),
        Primitive::TunnelId => push_u64(out, u64::from(k.tunnel_id)),
    }
}

/// Whether a CSV cell must be quoted (RFC 4180: it holds a comma, a quote or a line break).
fn needs_csv_quotes(field: &[u8]) -> bool {
    field.iter().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
}

/// Appends `field` as a quoted CSV cell, its quotes doubled.
fn push_csv_quoted(out: &mut Vec<u8>, field: &[u8]) {
    out.push(b'"');
    for &b in field {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// Whether a primitive's text never needs JSON escaping: addresses, numbers
/// and pmacct's protocol names (checked by a test), so its field can be
/// formatted straight into the JSON line and copied from there to the CSV row.
fn json_plain(p: Primitive) -> bool {
    !matches!(p, Primitive::SrcContainer | Primitive::DstContainer | Primitive::Tunnel)
}

/// One column of a table, worked out once per table rather than once per row.
struct Column {
    p: Primitive,
    /// `, "<key>": ` in the JSON line.
    key: Short,
    /// The JSON value is a string whose text needs no escaping: the quotes
    /// are written around the field (escaped text brings its own).
    quoted: bool,
}

/// A table's columns and what their fields are made of.
struct RowShape {
    cols: Vec<Column>,
    /// pmacct's name of each protocol number ([`proto_names`]).
    protos: &'static [Short; 256],
}

/// pmacct's name of each protocol number as a [`Short`], built once per process.
fn proto_names() -> &'static [Short; 256] {
    static NAMES: std::sync::OnceLock<[Short; 256]> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| std::array::from_fn(|p| Short::of(proto_name(p as u8).as_bytes()).unwrap_or(Short::EMPTY)))
}

impl RowShape {
    fn new(primitives: Primitives) -> Self {
        let cols = primitives
            .iter()
            .map(|p| Column {
                p,
                // Keys are a few words of ASCII (settings.rs): they fit.
                key: Short::of(format!(", \"{}\": ", p.json_key()).as_bytes()).unwrap_or(Short::EMPTY),
                quoted: json_plain(p) && p.is_text(),
            })
            .collect();
        RowShape { cols, protos: proto_names() }
    }
}

/// Room kept after a chunk's [`CHUNK`] bytes for the row that crosses it:
/// more than the longest row can take (every column, IPv6 addresses, two
/// 32-byte container names with every byte escaped: under 1.5 KiB, see the
/// tests) plus the 48 bytes a field's fixed-size copy touches.
const ROW_ROOM: usize = 4096;

/// Bytes a table's buffer starts with per row, before it grows (a row with
/// IPv4 addresses takes about 80 in CSV, 250 as JSON).
const ROW_USUAL: usize = 128;

/// One file's text being composed: rows go straight into the buffer that
/// write(2) is handed (no row is composed elsewhere and copied in), each
/// through a [`Row`] cursor over the [`ROW_ROOM`] bytes after the text. The
/// buffer is sized for the table's rows (a small table's file takes a few
/// pages) and grows before a row could pass its end, up to [`CHUNK`] +
/// [`ROW_ROOM`] bytes (zeroed memory, see [`shmq::files::AlignedBuf`]),
/// block-aligned so that the file can take its pieces without a copy into
/// the page cache ([`shmq::files::AtomicFile`]'s direct writes).
///
/// The pages of the room ahead of the text are written (a byte each, past
/// the text) before a row is composed there, [`TOUCH_AHEAD`] bytes at a
/// time: a CSV row copies fields from the JSON row's room 48 bytes at a
/// time, past what that row wrote, and such a read of a fresh page mapped
/// the zero page, which the JSON row's write then faulted on again (167 of
/// the 680 faults of a 20,000-row table's files).
struct Text {
    b: shmq::files::AlignedBuf,
    n: usize,
    /// Every page of `b` under this offset has been written (`n <= ready`).
    ready: usize,
}

/// Bytes of a [`Text`]'s buffer whose pages are written at once ahead of its rows.
const TOUCH_AHEAD: usize = 64 * 1024;
/// A memory page (a [`Text`]'s buffer starts at one: [`shmq::files::DIRECT_ALIGN`]).
const PAGE: usize = 4096;

impl Text {
    /// A buffer for a file of `rows` rows that is written (`on`), else an empty one.
    fn new(on: bool, rows: usize) -> Self {
        let len = if on { rows.saturating_mul(ROW_USUAL).min(CHUNK) + ROW_ROOM } else { 0 };
        Text { b: shmq::files::AlignedBuf::new(len), n: 0, ready: 0 }
    }

    /// Makes room for a row: [`ROW_ROOM`] bytes after the text (the buffer
    /// grown fourfold, to at most [`CHUNK`] + [`ROW_ROOM`], its text kept),
    /// their pages written.
    #[inline(always)]
    fn room_for_row(&mut self) {
        if self.n + ROW_ROOM > self.ready {
            self.prepare();
        }
    }

    /// [`Text::room_for_row`] past the pages written so far.
    #[cold]
    fn prepare(&mut self) {
        let len = self.b.bytes().len();
        if self.n + ROW_ROOM > len {
            let want = (len * 4).min(CHUNK + ROW_ROOM).max(self.n + ROW_ROOM);
            let mut b = shmq::files::AlignedBuf::new(want);
            b.bytes_mut()[..self.n].copy_from_slice(&self.b.bytes()[..self.n]);
            self.b = b;
            self.ready = self.n;
        }
        let (from, to) = (self.ready.max(self.n), (self.n + ROW_ROOM + TOUCH_AHEAD).min(self.b.bytes().len()));
        // A byte at `from` and at each page start after it, all past the
        // text; black_box: the compiler cannot tell what they held.
        let room = std::hint::black_box(&mut self.b.bytes_mut()[from..to]);
        let mut at = 0;
        while let Some(b) = room.get_mut(at) {
            *b = 0;
            at = (from + at) / PAGE * PAGE + PAGE - from;
        }
        self.ready = to;
    }

    /// The [`ROW_ROOM`] bytes after the text, to compose a row in (None
    /// before [`Text::room_for_row`]); [`Text::keep`] adds what it wrote.
    #[inline(always)]
    fn row(&mut self) -> Option<Row<'_>> {
        let room = self.b.bytes_mut().get_mut(self.n..self.n + ROW_ROOM)?;
        Some(Row::at_start(room.try_into().ok()?))
    }

    /// Keeps the `n` bytes a [`Row`] of [`Text::row`] wrote.
    #[inline(always)]
    fn keep(&mut self, n: usize) {
        self.n += n;
    }

    /// The text so far.
    #[cfg(test)]
    fn text(&self) -> &[u8] {
        &self.b.bytes()[..self.n]
    }

    /// Hands the text to `p` once it holds at least `at` bytes: whole
    /// [`shmq::files::DIRECT_ALIGN`] blocks of it, the rest (less than a
    /// block) kept at the start of the buffer the text goes on in; with `at`
    /// 0, all of it.
    fn hand_on<P: Pieces>(&mut self, p: &mut P, at: usize) -> io::Result<()> {
        if self.n >= at.max(1) {
            let whole = if at == 0 { self.n } else { self.n - self.n % shmq::files::DIRECT_ALIGN };
            let b = std::mem::replace(&mut self.b, shmq::files::AlignedBuf::new(0));
            self.b = p.take(b, whole, self.n - whole)?;
            self.n -= whole;
            // Another buffer, perhaps: only the tail's pages are known written.
            self.ready = self.n;
        }
        Ok(())
    }
}

/// Where a [`Text`]'s pieces go: written at once by any [`io::Write`], or
/// handed whole to the writer thread ([`Behind`]).
trait Pieces {
    /// Takes the first `len` bytes of `b`; returns the buffer the text goes
    /// on in, which starts with the `tail` bytes that followed them.
    fn take(&mut self, b: shmq::files::AlignedBuf, len: usize, tail: usize) -> io::Result<shmq::files::AlignedBuf>;
}

impl<W: io::Write> Pieces for W {
    fn take(&mut self, mut b: shmq::files::AlignedBuf, len: usize, tail: usize) -> io::Result<shmq::files::AlignedBuf> {
        let bytes = b.bytes_mut();
        self.write_all(&bytes[..len])?;
        bytes.copy_within(len..len + tail, 0);
        Ok(b)
    }
}

/// Buffers of one file that may wait for or be in the writer thread's
/// write(2) at once, besides the one being composed: while one piece goes
/// to the disk (a direct write returns when the disk has it: 1 MiB took
/// about 0.6 ms here), the next is composed.
const BEHIND: usize = 1;

/// Rows of a table whose files are written by [`write_rows_behind`]'s
/// thread, at least: about 8 MiB of files (a file's first pieces cost it
/// new buffers, a few hundred page faults, as much time as a few direct
/// writes; each piece after that saves a write's wait).
const BEHIND_ROWS: usize = 8 * CHUNK / (2 * ROW_USUAL);

/// A piece on its way to the writer thread: the file, the buffer, its length.
type Piece = (Side, shmq::files::AlignedBuf, usize);

/// One file's side of the writer thread ([`write_behind`]): pieces go to it
/// whole, their buffers come back to be composed into again.
struct Behind {
    side: Side,
    to: std::sync::mpsc::SyncSender<Piece>,
    back: std::sync::mpsc::Receiver<shmq::files::AlignedBuf>,
    /// Buffers made besides the first, at most [`BEHIND`].
    made: usize,
}

impl Behind {
    /// The writer thread is gone: it failed (its error is the one reported).
    fn gone() -> io::Error {
        io::Error::other("the writer thread stopped")
    }
}

impl Pieces for Behind {
    fn take(&mut self, b: shmq::files::AlignedBuf, len: usize, tail: usize) -> io::Result<shmq::files::AlignedBuf> {
        use std::sync::mpsc::TryRecvError;
        let mut next = match self.back.try_recv() {
            Ok(next) => next,
            Err(TryRecvError::Empty) if self.made < BEHIND => {
                self.made += 1;
                shmq::files::AlignedBuf::new(b.bytes().len())
            }
            Err(TryRecvError::Empty) => self.back.recv().map_err(|_| Self::gone())?,
            Err(TryRecvError::Disconnected) => return Err(Self::gone()),
        };
        if next.bytes().len() < b.bytes().len() {
            // Made before the text's buffer grew.
            next = shmq::files::AlignedBuf::new(b.bytes().len());
        }
        next.bytes_mut()[..tail].copy_from_slice(&b.bytes()[len..len + tail]);
        self.to.send((self.side, b, len)).map_err(|_| Self::gone())?;
        Ok(next)
    }
}

/// The writer thread: writes the pieces to their files in the order they
/// come and sends each buffer back to its side; stops at the first error,
/// which it returns (the composer then finds the thread gone).
fn write_behind<W: io::Write>(
    files: [Option<&mut W>; 2],
    pieces: std::sync::mpsc::Receiver<Piece>,
    back: [std::sync::mpsc::Sender<shmq::files::AlignedBuf>; 2],
) -> Result<(), (Side, io::Error)> {
    let [mut csv, mut json] = files;
    for (side, b, len) in pieces {
        let file = if side == Side::Csv { csv.as_deref_mut() } else { json.as_deref_mut() };
        let file = file.ok_or_else(|| (side, io::Error::other("a piece for a file not written (a bug: report it)")))?;
        file.write_all(&b.bytes()[..len]).map_err(|e| (side, e))?;
        // The composer may be done and gone: the buffer is then freed.
        let _ = back[side as usize].send(b);
    }
    Ok(())
}

/// As [`write_rows`], the pieces written by a thread of their own (named
/// `cj-app-writer`) while the next are composed (composing both files on two
/// threads was tried: more CPU, no less time); where no thread can be
/// started, as [`write_rows`]. The files' bytes are the same either way.
fn write_rows_behind<W: io::Write + Send>(
    table: &Aggregate,
    order: &[(&Key, &Counters)],
    mut csv: Option<&mut W>,
    mut json: Option<&mut W>,
) -> Result<(), (Side, io::Error)> {
    use std::sync::mpsc;
    let (to, pieces) = mpsc::sync_channel::<Piece>(2 * (BEHIND + 1));
    let (csv_back, csv_returned) = mpsc::channel();
    let (json_back, json_returned) = mpsc::channel();
    let (has_csv, has_json) = (csv.is_some(), json.is_some());
    std::thread::scope(|s| {
        let files = [csv.as_deref_mut(), json.as_deref_mut()];
        let spawned = std::thread::Builder::new()
            .name("cj-app-writer".into())
            .spawn_scoped(s, move || write_behind(files, pieces, [csv_back, json_back]));
        let writer = match spawned {
            Ok(writer) => writer,
            Err(_) => return Err(None),
        };
        let behind = |side, back| Behind { side, to: to.clone(), back, made: 0 };
        let (mut c, mut j) = (behind(Side::Csv, csv_returned), behind(Side::Json, json_returned));
        drop(to);
        let composed = write_rows(
            table,
            order,
            if has_csv { Some(&mut c) } else { None },
            if has_json { Some(&mut j) } else { None },
        );
        // Ends the writer's loop once it has written every piece sent.
        drop((c, j));
        let written = writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        // The writer's error is the cause; the composer's then only says it was gone.
        written.and(composed).map_err(Some)
    })
    .or_else(|e| match e {
        Some(e) => Err(e),
        None => write_rows(table, order, csv, json),
    })
}

/// A row being composed into a fixed-size room (a [`Text`]'s, or a spare
/// one for a file that is not written), by fixed-size copies of [`Short`]
/// fields where a call into `memcpy` for a short variable length would cost
/// more than the copy. The room's length is a constant and the cursor a
/// local, so each write is one comparison with a constant (a cursor in a
/// [`Text`], which each byte stored might alias, was reloaded and checked
/// against the buffer's bounds again at every field: a third of a row's
/// instructions).
struct Row<'a> {
    b: &'a mut [u8; ROW_ROOM],
    n: usize,
    /// False once a write would have run past the room: the row is invalid
    /// from then on (later writes that fit may still land in the room; the
    /// caller discards the row and reports an error).
    ok: bool,
}

/// The seconds of a column's last stamp and their text (at most 11 digits,
/// its length in the last byte), kept from row to row: the stamps of a
/// table mostly fall in a few seconds (an offline capture's span; the
/// purges of a refresh interval), so most are formatted once.
#[derive(Clone, Copy)]
struct Seconds {
    secs: u64,
    text: [u8; 16],
}

impl Seconds {
    /// None yet (u64::MAX ns are 18,446,744,073 s: never a stamp's seconds).
    const NONE: Seconds = Seconds { secs: u64::MAX, text: [0; 16] };
}

impl<'a> Row<'a> {
    /// A row at the start of `b`.
    #[inline(always)]
    fn at_start(b: &'a mut [u8; ROW_ROOM]) -> Self {
        Row { b, n: 0, ok: true }
    }

    /// The row's `M` bytes at the cursor when they fit in the room.
    #[inline(always)]
    fn at<const M: usize>(&mut self) -> Option<&mut [u8; M]> {
        if self.n <= ROW_ROOM - M {
            // Checked just above: n + M <= ROW_ROOM.
            return (&mut self.b[self.n..self.n + M]).try_into().ok();
        }
        self.ok = false;
        None
    }

    /// The text so far.
    #[cfg(test)]
    fn text(&self) -> &[u8] {
        &self.b[..self.n]
    }

    /// A field's text: 48 bytes are copied, `f.n` kept.
    #[inline(always)]
    fn put(&mut self, f: &Short) {
        if let Some(to) = self.at::<48>() {
            *to = f.b;
            self.n += f.n;
        }
    }

    /// Appends `v` in decimal, formatted in place (the app's one integer
    /// formatter for the flow files): eight digits at a time ([`digits8`]),
    /// the first group without its leading zeros.
    #[inline(always)]
    fn num(&mut self, v: u64) {
        const E8: u64 = 100_000_000;
        let Some(to) = self.at::<24>() else { return };
        // The groups of eight digits below the first (at most two: u64 < 10^20).
        let (lead, groups, rest) = if v < E8 {
            (v, 0, 0)
        } else if v < E8 * E8 {
            (v / E8, 1, v % E8)
        } else {
            (v / (E8 * E8), 2, v % (E8 * E8))
        };
        // lead < 10^8 (u64::MAX / 10^16 < 1845), rest < 10^16.
        let d = digits8(lead as u32);
        // Leading zero digits are the low zero bytes of `d` (at most 7: one digit for 0).
        let skip = (d.trailing_zeros() / 8).min(7) as usize;
        to[..8].copy_from_slice(&((d | ASCII_ZEROS) >> (8 * skip)).to_le_bytes());
        let mut n = 8 - skip;
        if groups == 2 {
            to[n..n + 8].copy_from_slice(&(digits8((rest / E8) as u32) | ASCII_ZEROS).to_le_bytes());
            n += 8;
        }
        if groups >= 1 {
            to[n..n + 8].copy_from_slice(&(digits8((rest % E8) as u32) | ASCII_ZEROS).to_le_bytes());
            n += 8;
        }
        self.n += n;
    }

    /// Appends a dotted quad ([`quad_text`]).
    #[inline(always)]
    fn v4(&mut self, a: [u8; 4]) {
        if let Some(to) = self.at::<16>() {
            self.n += quad_text(a, to);
        }
    }

    /// Appends an IPv6 address as glibc `inet_ntop` prints it ([`v6_text`]).
    #[inline(always)]
    fn v6(&mut self, a: &[u8; 16]) {
        if let Some(to) = self.at::<48>() {
            self.n += v6_text(a, to);
        }
    }

    /// Appends a time in ns since the epoch as pmacct prints it with
    /// `timestamps_since_epoch`: seconds and microseconds (`1733440000.123456`);
    /// the seconds' text copied from `seen` when they are its seconds, else
    /// formatted and kept there.
    #[inline(always)]
    fn stamp(&mut self, ns: u64, seen: &mut Seconds) {
        let secs = ns / 1_000_000_000;
        if secs == seen.secs {
            if let Some(to) = self.at::<16>() {
                *to = seen.text;
                self.n += usize::from(seen.text[15]);
            }
        } else {
            let start = self.n;
            self.num(secs);
            if let Some(text) = self.b.get(start..start + 16) {
                seen.text.copy_from_slice(text);
                // At most 11 digits: the last byte is free for the length.
                seen.text[15] = (self.n - start) as u8;
                seen.secs = secs;
            }
        }
        let Some(to) = self.at::<8>() else { return };
        // The microseconds (< 10^6) as eight digits, the first two (zeros) shifted out.
        let micros = digits8((ns % 1_000_000_000 / 1000) as u32) | ASCII_ZEROS;
        *to = ((micros >> 16) << 8 | u64::from(b'.')).to_le_bytes();
        self.n += 7;
    }

    /// Appends the text `from` got since its position `start` (at most 48
    /// bytes: a number, a stamp, a dotted quad or an IPv6
    /// address (at most 45)) with one fixed-size copy.
    #[inline(always)]
    fn again(&mut self, from: &Row, start: usize) {
        let n = from.n.wrapping_sub(start);
        match from.b.get(start..start + 48) {
            Some(text) if n <= 48 => {
                if let Some(to) = self.at::<48>() {
                    to.copy_from_slice(text);
                    self.n += n;
                }
            }
            _ => self.ok = false,
        }
    }

    /// Constant text (a fixed-size copy).
    #[inline(always)]
    fn lit<const M: usize>(&mut self, t: &[u8; M]) {
        if let Some(to) = self.at::<M>() {
            *to = *t;
            self.n += M;
        }
    }

    #[inline(always)]
    fn byte(&mut self, c: u8) {
        if let Some(to) = self.at::<1>() {
            to[0] = c;
            self.n += 1;
        }
    }

    fn bytes(&mut self, t: &[u8]) {
        match self.b.get_mut(self.n..self.n + t.len()) {
            Some(to) => {
                to.copy_from_slice(t);
                self.n += t.len();
            }
            None => self.ok = false,
        }
    }
}

/// `'0'` in every byte of a word.
const ASCII_ZEROS: u64 = 0x3030_3030_3030_3030;

/// The eight decimal digits of `v` < 10^8 (leading zeros kept), one a byte
/// as numbers 0 to 9, the first digit in the lowest byte: stored
/// little-endian after `| ASCII_ZEROS`, the text. Split in lanes of one
/// word (4 + 4 digits, then 2 + 2 in each, then 1 + 1), each division by a
/// multiplication that is exact in its lane's range: about 15 instructions
/// where two digits at a time took 11 per pair. Hand-written because it is
/// the formatter of every number of the flow files (checked against std's
/// `Display` by the tests).
#[inline(always)]
fn digits8(v: u32) -> u64 {
    let v = u64::from(v);
    // Lanes of 32 bits: the first four digits low, the last four high.
    let x = (v / 10_000) | ((v % 10_000) << 32);
    // n * 10486 >> 20 = n / 100 for n < 43,699 (each lane < 10^4; no carry between lanes).
    let hundreds = ((x * 10_486) >> 20) & 0x0000_007f_0000_007f;
    // Lanes of 16 bits: each 32-bit lane's first two digits low, last two high.
    let x = ((x - hundreds * 100) << 16) | hundreds;
    // n * 103 >> 10 = n / 10 for n < 179 (each lane < 100).
    let tens = ((x * 103) >> 10) & 0x000f_000f_000f_000f;
    ((x - tens * 10) << 8) | tens
}

/// What [`compose`] reuses from row to row.
struct Scratch {
    /// A field formatted into a vector ([`push_field`]).
    field: Vec<u8>,
    /// Its JSON string form.
    escaped: Vec<u8>,
    /// The last seconds of the first and last packet stamps.
    first: Seconds,
    last: Seconds,
}

/// Every key column of the overflow row, as a field.
const OTHER: Short = {
    let mut s = Short::EMPTY;
    let t = OVERFLOW_FIELD.as_bytes();
    let mut i = 0;
    while i < t.len() {
        s.b[i] = t[i];
        i += 1;
    }
    s.n = t.len();
    s
};

/// Appends one row with its newline to `csv` (a `flows.csv` row, when `CSV`)
/// and to `json` (a JSON line with pmacct's keys and separators, when
/// `JSON`): each field is formatted once, in place in the first file's text,
/// and copied from there to the CSV's when both are written. The one
/// formatter of both files, for one of them or both at once.
#[inline(always)]
fn compose<'a, const CSV: bool, const JSON: bool>(
    csv: &mut Row<'a>,
    json: &mut Row<'a>,
    shape: &RowShape,
    k: &Key,
    c: &Counters,
    sc: &mut Scratch,
) {
    if JSON {
        json.lit(b"{\"event_type\": \"purge\"");
    }
    for col in &shape.cols {
        let p = col.p;
        // pmacct quotes every field of the overflow row ("other").
        let quoted = JSON && (col.quoted || k.overflow);
        if JSON {
            json.put(&col.key);
            if quoted {
                json.byte(b'"');
            }
        }
        let first = if JSON { &mut *json } else { &mut *csv };
        let start = first.n;
        let in_place = match p {
            _ if k.overflow => {
                first.put(&OTHER);
                true
            }
            Primitive::SrcHost | Primitive::DstHost if k.ip_version == 4 => {
                let a = if p == Primitive::SrcHost { &k.src } else { &k.dst };
                first.v4([a[0], a[1], a[2], a[3]]);
                true
            }
            Primitive::SrcHost | Primitive::DstHost if k.ip_version == 6 => {
                first.v6(if p == Primitive::SrcHost { &k.src } else { &k.dst });
                true
            }
            Primitive::SrcPort => {
                first.num(u64::from(k.src_port));
                true
            }
            Primitive::DstPort => {
                first.num(u64::from(k.dst_port));
                true
            }
            Primitive::Vlan => {
                first.num(u64::from(k.vlan));
                true
            }
            Primitive::TunnelId => {
                first.num(u64::from(k.tunnel_id));
                true
            }
            Primitive::Proto => {
                first.put(shape.protos.get(usize::from(k.proto)).unwrap_or(&Short::EMPTY));
                true
            }
            _ => false,
        };
        if in_place {
            if CSV && JSON {
                csv.again(json, start);
            }
        } else {
            sc.field.clear();
            push_field(&mut sc.field, p, k);
            if CSV {
                if needs_csv_quotes(&sc.field) {
                    // A container name may hold a comma, a quote or a newline (a
                    // named netns, an interface name): quoted as RFC 4180 says.
                    sc.escaped.clear();
                    push_csv_quoted(&mut sc.escaped, &sc.field);
                    csv.bytes(&sc.escaped);
                } else {
                    csv.bytes(&sc.field);
                }
            }
            if JSON {
                if json_plain(p) {
                    json.bytes(&sc.field);
                } else {
                    sc.escaped.clear();
                    // Fields are text (see `field`).
                    push_json_str(&mut sc.escaped, std::str::from_utf8(&sc.field).unwrap_or_default());
                    json.bytes(&sc.escaped);
                }
            }
        }
        if quoted {
            json.byte(b'"');
        }
        if CSV {
            csv.byte(b',');
        }
    }
    // A counter or a stamp after its JSON text `$key`, then `$end` in each file.
    macro_rules! value {
        ($key:expr, $first:ident => $put:expr, $csv_end:expr) => {
            if JSON {
                json.lit($key);
            }
            let $first = if JSON { &mut *json } else { &mut *csv };
            let start = $first.n;
            $put;
            if CSV {
                if JSON {
                    csv.again(json, start);
                }
                csv.byte($csv_end);
            }
        };
    }
    value!(b", \"packets\": ", f => f.num(c.packets), b',');
    value!(b", \"bytes\": ", f => f.num(c.ip_bytes), b',');
    value!(b", \"frame_bytes\": ", f => f.num(c.frame_bytes), b',');
    value!(b", \"flows\": ", f => f.num(c.flows), b',');
    value!(b", \"timestamp_start\": \"", f => f.stamp(c.first_ns, &mut sc.first), b',');
    value!(b"\", \"timestamp_end\": \"", f => f.stamp(c.last_ns, &mut sc.last), b'\n');
    if JSON {
        json.lit(b"\"}\n");
    }
}

/// The whole CSV file.
#[cfg(test)]
pub fn csv_text(table: &Aggregate) -> String {
    let mut out = Vec::new();
    write_rows(table, &table.sorted(), Some(&mut out), None::<&mut Vec<u8>>).map_err(|(_, e)| e).unwrap();
    String::from_utf8(out).unwrap()
}

/// The whole JSON-lines file.
#[cfg(test)]
pub fn json_text(table: &Aggregate) -> String {
    let mut out = Vec::new();
    write_rows(table, &table.sorted(), None::<&mut Vec<u8>>, Some(&mut out)).map_err(|(_, e)| e).unwrap();
    String::from_utf8(out).unwrap()
}

/// Text is handed to the files in pieces of about this size, block-aligned:
/// one write(2) each, straight from the buffer the rows were composed in (a
/// piece this large bypasses the file's own buffer, and is written directly
/// to the disk where it can: [`shmq::files::AtomicFile::DIRECT_MIN`]).
const CHUNK: usize = shmq::files::AtomicFile::DIRECT_MIN;

/// Rows whose memory is prefetched ahead of the row being formatted (see
/// [`prefetch_row`]): a row takes about 150 ns to format, so a few rows
/// ahead cover a miss to memory.
const AHEAD: usize = 8;

/// Which file of a table a write failed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Csv,
    Json,
}

/// Streams the rows of `table` in `order` (from [`Aggregate::sorted`]) as
/// `flows.csv` to `csv` and as JSON lines to `json` (either may be absent),
/// in one pass: each row is read from the table once for both.
fn write_rows<C: Pieces, J: Pieces>(
    table: &Aggregate,
    order: &[(&Key, &Counters)],
    csv: Option<&mut C>,
    json: Option<&mut J>,
) -> Result<(), (Side, io::Error)> {
    match (csv, json) {
        (Some(c), Some(j)) => write_rows_to::<true, true, _, _>(table, order, c, j),
        (Some(c), None) => write_rows_to::<true, false, _, _>(table, order, c, &mut io::sink()),
        (None, Some(j)) => write_rows_to::<false, true, _, _>(table, order, &mut io::sink(), j),
        (None, None) => Ok(()),
    }
}

/// [`write_rows`] for the files `CSV` and `JSON` say (the other writer is not used).
fn write_rows_to<const CSV: bool, const JSON: bool, C: Pieces, J: Pieces>(
    table: &Aggregate,
    order: &[(&Key, &Counters)],
    csv: &mut C,
    json: &mut J,
) -> Result<(), (Side, io::Error)> {
    let p = table.primitives();
    let (mut ct, mut jt) = (Text::new(CSV, order.len()), Text::new(JSON, order.len()));
    // Rooms for a file that is not written (compose never touches them).
    let (mut spare_csv, mut spare_json) = ([0u8; ROW_ROOM], [0u8; ROW_ROOM]);
    // A row that does not fit is an error, never a cut or a panic.
    let too_long = |side| (side, io::Error::other(format!("a row longer than {ROW_ROOM} bytes (a bug: report it)")));
    if CSV {
        ct.room_for_row();
        let mut r = ct.row().ok_or_else(|| too_long(Side::Csv))?;
        r.bytes(csv_header(p).as_bytes());
        r.byte(b'\n');
        let (n, ok) = (r.n, r.ok);
        if !ok {
            return Err(too_long(Side::Csv));
        }
        ct.keep(n);
    }
    let shape = RowShape::new(p);
    let mut sc = Scratch {
        field: Vec::with_capacity(64),
        escaped: Vec::with_capacity(64),
        first: Seconds::NONE,
        last: Seconds::NONE,
    };
    for (i, (k, c)) in order.iter().enumerate() {
        if let Some(&(k, c)) = order.get(i + AHEAD) {
            prefetch_row(k, c);
        }
        if CSV {
            ct.room_for_row();
        }
        if JSON {
            jt.room_for_row();
        }
        let (cn, jn) = {
            let mut cr = if CSV { ct.row().ok_or_else(|| too_long(Side::Csv))? } else { Row::at_start(&mut spare_csv) };
            let mut jr =
                if JSON { jt.row().ok_or_else(|| too_long(Side::Json))? } else { Row::at_start(&mut spare_json) };
            compose::<CSV, JSON>(&mut cr, &mut jr, &shape, k, c, &mut sc);
            // Unreachable while ROW_ROOM holds the longest row (tested).
            if !cr.ok {
                return Err(too_long(Side::Csv));
            }
            if !jr.ok {
                return Err(too_long(Side::Json));
            }
            (cr.n, jr.n)
        };
        ct.keep(cn);
        jt.keep(jn);
        ct.hand_on(csv, CHUNK).map_err(|e| (Side::Csv, e))?;
        jt.hand_on(json, CHUNK).map_err(|e| (Side::Json, e))?;
    }
    ct.hand_on(csv, 0).map_err(|e| (Side::Csv, e))?;
    jt.hand_on(json, 0).map_err(|e| (Side::Json, e))
}

/// Prefetches the cache lines of a row that formatting reads: the rows come
/// in sorted order, scattered over the table. A prefetch does not hold up
/// the formatting the way a load does; the loads of a batch of 128 rows
/// read ahead (the way before) stalled on their misses, a quarter of the
/// formatting's time at 2,000,000 rows.
#[inline(always)]
fn prefetch_row(k: &Key, c: &Counters) {
    // The first and last byte of each cover all of it while it is at most a cache line.
    const _: () = assert!(std::mem::size_of::<Key>() <= 64 && std::mem::size_of::<Counters>() <= 64);
    let (k, c) = (std::ptr::from_ref(k).cast::<u8>(), std::ptr::from_ref(c).cast::<u8>());
    // A key or counters may cross a line.
    station::prefetch::prefetch(k);
    station::prefetch::prefetch(k.wrapping_add(std::mem::size_of::<Key>() - 1));
    station::prefetch::prefetch(c);
    station::prefetch::prefetch(c.wrapping_add(std::mem::size_of::<Counters>() - 1));
}

/// Writes `containers.csv` / `containers.json` into `dir` as `formats` say,
/// and with flow logs on, `containers/<name>.csv|json` per container; returns
/// the paths written.
///
/// # Errors
/// As [`write_atomic`].
pub fn write_containers(
    dir: &DirFd,
    c: &crate::containers::Containers,
    formats: Formats,
) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    if formats.csv {
        written.push(write_atomic(dir, "containers.csv", crate::containers::csv_text(c).as_bytes())?);
    }
    if formats.json {
        written.push(write_atomic(dir, "containers.json", crate::containers::json_text(c).as_bytes())?);
    }
    if let Some(logs) = c.logs() {
        let sub = subdir(dir, "containers")?;
        for ((name, id), table) in logs {
            // The names as before (`with_extension`: a dotted name loses its last part).
            let base = std::path::Path::new(&crate::containers::log_file_name(name, id)).to_path_buf();
            let named = |ext: &str| base.with_extension(ext).to_string_lossy().into_owned();
            written.extend(write_table_files(&sub, table, formats, (&named("csv"), &named("json")), (0, &mut None))?);
        }
    }
    Ok(written)
}

/// Mode of every file the app writes.
pub const OUT_FILE_MODE: u32 = 0o644;

/// The output directory, held open as a descriptor: the app opens `--out`
/// once at start ([`crate::summary::check_out_dir`]) and makes, replaces
/// and removes every file and directory under it relative to that
/// descriptor, so that the directory's name (or a parent's) swapped for a
/// link after the start cannot send a write elsewhere.
pub type OutDir = DirFd;

/// What the output directory is called in refusals ([`DirFd::open_trusted`]).
pub const OUT_PURPOSE: Purpose<'static> = Purpose {
    what: "output directory",
    choose: "or choose an --out that only root or cj-app's user can change",
    // Only the directory and the links on the way: after the start nothing
    // depends on the path (summary::check_out_dir says why).
    ancestors: false,
};

/// Mode of the directories the app makes (`--out` when absent, `queue-<q>/`,
/// `containers/`), whatever the umask: 0755 like its files' 0644, or 0750
/// with the readers' group `CJ_GROUP` (which they then get), so that only
/// the group reads them.
pub fn out_dir_mode() -> u32 {
    if shmq::files::group().is_some() {
        0o750
    } else {
        0o755
    }
}

/// The directory `name` in `dir` (made when absent with [`out_dir_mode`]),
/// never through a link, judged as `--out` is.
///
/// # Errors
/// It is a link, not a directory, someone else's or open to others, or cannot be made.
pub fn subdir(dir: &DirFd, name: &str) -> Result<DirFd, WriteError> {
    let what = format!("{} directory {name}/", OUT_PURPOSE.what);
    dir.subdir(name, out_dir_mode(), &Purpose { what: &what, ..OUT_PURPOSE })
        .map_err(|e| WriteError { path: dir.path().join(name), source: io::Error::other(e.to_string()) })
}

/// A file being replaced atomically ([`shmq::files::AtomicFile`]: a
/// temporary file of this process's own beside it, under a random name,
/// created with `O_CREAT | O_EXCL | O_NOFOLLOW` relative to the directory's
/// descriptor, renamed over the target by [`AtomicFile::commit`]), its
/// errors naming the file. Dropped without a commit, the temporary file is
/// removed.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    out: shmq::files::AtomicFile,
}

impl AtomicFile {
    /// Creates the temporary file for `name` in `dir`
    /// (`.<name>.<pid>.<r>.tmp`, `r` random, `O_CREAT | O_EXCL |
    /// O_NOFOLLOW`, mode 0644 whatever the umask): a file or link planted
    /// under a name it tries is never written through, and another name is tried.
    ///
    /// # Errors
    /// The temporary file cannot be created.
    pub fn create(dir: &DirFd, name: &str) -> Result<Self, WriteError> {
        Self::create_with_mode(dir, name, OUT_FILE_MODE)
    }

    /// As [`AtomicFile::create`] with another mode (the checkpoint's 0600).
    ///
    /// # Errors
    /// As [`AtomicFile::create`].
    pub fn create_with_mode(dir: &DirFd, name: &str, mode: u32) -> Result<Self, WriteError> {
        let path = dir.path().join(name);
        let out = shmq::files::AtomicFile::create_in(dir, name, mode)
            .map_err(|source| WriteError { path: path.clone(), source })?;
        Ok(AtomicFile { path, out })
    }

    /// Flushes, fsyncs and renames the temporary file over the target (a
    /// symbolic link planted as the target is replaced, its target untouched).
    ///
    /// # Errors
    /// Any of these steps fails; the temporary file is removed.
    pub fn commit(self) -> Result<(), WriteError> {
        self.commit_file(true).map(drop)
    }

    /// As [`AtomicFile::commit`], fsynced or not, and returns the file, open
    /// for writing at its end (the checkpoint appends to it).
    ///
    /// # Errors
    /// As [`AtomicFile::commit`].
    pub fn commit_file(self, sync: bool) -> Result<File, WriteError> {
        let AtomicFile { path, out } = self;
        out.commit(sync).map_err(|source| WriteError { path, source })
    }

    /// Writes `bytes` at `offset` of what was written so far (a length
    /// known only at the end), after handing on what is buffered.
    ///
    /// # Errors
    /// The buffered bytes or these cannot be written.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.out.write_at(offset, bytes)
    }

    /// The error for this file.
    pub fn error(&self, source: io::Error) -> WriteError {
        WriteError { path: self.path.clone(), source }
    }
}

impl io::Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes `contents` to `name` in `dir` atomically, safe in a directory
/// others can write: a temporary file of this process's own
/// ([`AtomicFile`]), written, fsynced and renamed over `name`. A file or
/// symbolic link planted under any name is never written through; a link
/// planted as `name` itself is replaced, its target untouched; on any error
/// the temporary file is removed. Returns the file's path.
///
/// # Errors
/// The file cannot be created, written, synced or renamed.
pub fn write_atomic(dir: &DirFd, name: &str, contents: &[u8]) -> Result<PathBuf, WriteError> {
    let mut f = AtomicFile::create(dir, name)?;
    io::Write::write_all(&mut f, contents).map_err(|e| f.error(e))?;
    let path = f.path.clone();
    f.commit().map(|()| path)
}

/// Writes `table` as CSV to `csv` and JSON lines to `json`, as `formats` say,
/// each streamed into its temporary file, both in one pass over the rows
/// sorted once; the first `top` rows of that order are copied into `kept`
/// (left as it is when no file is written: nothing was sorted).
fn write_table_files(
    dir: &DirFd,
    table: &Aggregate,
    formats: Formats,
    (csv, json): (&str, &str),
    (top, kept): (usize, &mut Option<Vec<(Key, Counters)>>),
) -> Result<Vec<PathBuf>, WriteError> {
    if !formats.csv && !formats.json {
        return Ok(Vec::new());
    }
    let order = table.sorted();
    if top > 0 {
        *kept = Some(order.iter().take(top).map(|&(k, c)| (*k, *c)).collect());
    }
    let mut csv_file = if formats.csv { Some(AtomicFile::create(dir, csv)?) } else { None };
    let mut json_file = if formats.json { Some(AtomicFile::create(dir, json)?) } else { None };
    let written = if order.len() >= BEHIND_ROWS {
        write_rows_behind(table, &order, csv_file.as_mut(), json_file.as_mut())
    } else {
        write_rows(table, &order, csv_file.as_mut(), json_file.as_mut())
    };
    if let Err((side, e)) = written {
        let name = if side == Side::Csv { csv } else { json };
        return Err(WriteError { path: dir.path().join(name), source: e });
    }
    let mut written = Vec::new();
    for f in [csv_file, json_file].into_iter().flatten() {
        let path = f.path.clone();
        f.commit()?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `flows.csv` / `flows.json` of `table` into `dir` as `formats` say;
/// returns the paths written. With `top` > 0 and a file written, the first
/// `top` rows of the files' order are copied into `kept` (the printed
/// summary's top table: [`Aggregate::top`] without another pass over the rows).
///
/// # Errors
/// As [`write_atomic`].
pub fn write_table(
    dir: &DirFd,
    table: &Aggregate,
    formats: Formats,
    kept: (usize, &mut Option<Vec<(Key, Counters)>>),
) -> Result<Vec<PathBuf>, WriteError> {
    write_table_files(dir, table, formats, ("flows.csv", "flows.json"), kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::{ip_record, v4};
    use station::record::EndReason;
    use std::net::Ipv6Addr;

    /// xorshift64 from `seed`: random inputs reproducible without a dependency.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn ipv6_like_glibc_inet_ntop() {
        // Expected strings from glibc's inet_ntop (python socket.inet_ntop) and pmacctd's CSV.
        for (input, want) in [
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8:0:0:1::2", "2001:db8::1:0:0:2"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::0.1.0.0", "::0.1.0.0"),
            ("::ffff:0:1.2.3.4", "::ffff:0:102:304"),
            ("::1", "::1"),
            ("::", "::"),
            ("1::", "1::"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("0:0:0:0:0:1:0:0", "::1:0:0"),
            ("1:0:1:0:1:0:1:0", "1:0:1:0:1:0:1:0"),
            ("fe80::1", "fe80::1"),
            ("ff02::1", "ff02::1"),
            ("2001:db8::ab:cd", "2001:db8::ab:cd"),
        ] {
            assert_eq!(format_addr(6, &v6(input)), want, "{input}");
            // In a row, after other text, as the flow files write it.
            let mut room = [0u8; ROW_ROOM];
            let mut r = Row::at_start(&mut room);
            r.bytes(b"x,");
            r.v6(&v6(input));
            assert!(r.ok);
            assert_eq!(r.text(), format!("x,{want}").as_bytes(), "{input}");
        }
        assert_eq!(format_addr(4, &v4([192, 168, 1, 10])), "192.168.1.10");
    }

    #[test]
    fn addresses_print_as_std_display_prints_random_ones() {
        use std::net::Ipv4Addr;
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let mut checked_v6 = 0;
        for _ in 0..200_000 {
            let v4 = (next() as u32).to_be_bytes();
            assert_eq!(format_addr(4, &v4_16(v4)), Ipv4Addr::from(v4).to_string());
            // Words zero half the time (runs of every length) and of every width otherwise.
            let words: [u16; 8] = std::array::from_fn(|_| {
                let r = next();
                if r & 1 == 0 {
                    0
                } else {
                    (r >> 16) as u16 >> (r >> 8 & 15)
                }
            });
            let a = Ipv6Addr::from(words);
            // std prints `::a.b.c.d` as hex words where glibc keeps the dotted
            // tail: that class is checked against glibc's strings above.
            if words[..6] == [0; 6] {
                continue;
            }
            assert_eq!(format_addr(6, &a.octets()), a.to_string(), "{words:x?}");
            checked_v6 += 1;
        }
        assert!(checked_v6 > 190_000);
    }

    fn v4_16(a: [u8; 4]) -> [u8; 16] {
        v4(a)
    }

    #[test]
    fn a_small_tables_buffer_takes_a_few_pages_and_grows_with_its_text_before_a_row_could_pass_its_end() {
        let mut t = Text::new(true, 3);
        assert!(t.b.bytes().len() <= 2 * ROW_ROOM, "{} bytes for 3 rows", t.b.bytes().len());
        let mut want = Vec::new();
        for i in 0..20_000u64 {
            t.room_for_row();
            assert!(t.b.bytes().len() - t.n >= ROW_ROOM, "room for a row after {} bytes", t.n);
            let mut r = t.row().unwrap();
            r.num(i * 7919);
            r.byte(b',');
            assert!(r.ok);
            let n = r.n;
            t.keep(n);
            want.extend_from_slice(format!("{},", i * 7919).as_bytes());
        }
        assert_eq!(t.text(), &want[..]);
        assert!(t.b.bytes().len() <= CHUNK + ROW_ROOM + shmq::files::DIRECT_ALIGN);
    }

    #[test]
    fn numbers_stamps_and_quads_read_as_std_prints_them() {
        // Every power of ten and its neighbours, the ends of u64, then random values of every width.
        let mut values: Vec<u64> = vec![0, 1, 9, u64::MAX, u64::MAX - 1];
        for p in (0..20).map(|e| 10u64.pow(e)) {
            values.extend([p - 1, p, p + 1]);
        }
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        values.extend((0..100_000).map(|_| {
            let x = next();
            x >> (x % 64)
        }));
        let mut rooms = [[0u8; ROW_ROOM]; 4];
        let [a, b, c, d] = &mut rooms;
        let (mut t, mut again, mut stamp, mut q) =
            (Row::at_start(a), Row::at_start(b), Row::at_start(c), Row::at_start(d));
        let mut seen = Seconds::NONE;
        for v in values {
            // In place after some text, then copied again from there, as a row's fields are.
            (t.n, again.n, stamp.n, q.n) = (7, 0, 0, 0);
            t.num(v);
            again.again(&t, 7);
            assert_eq!(&t.text()[7..], v.to_string().as_bytes(), "{v}");
            assert_eq!(again.text(), v.to_string().as_bytes(), "{v}");
            let mut text = Vec::new();
            push_u64(&mut text, v);
            assert_eq!(text, v.to_string().as_bytes(), "{v}");
            // Against std's formatting of seconds and microseconds.
            let want = format!("{}.{:06}", v / 1_000_000_000, v % 1_000_000_000 / 1000);
            stamp.stamp(v, &mut seen);
            assert_eq!(stamp.text(), want.as_bytes(), "{v}");
            let a = (v as u32).to_be_bytes();
            q.v4(a);
            assert_eq!(q.text(), std::net::Ipv4Addr::from(a).to_string().as_bytes());
            assert!(t.ok && again.ok && stamp.ok && q.ok);
        }
        // Every number below 10^8 (the first group of digits, which drops its
        // leading zeros) and each width's ends.
        for v in (0..100_000_000u64).step_by(97).chain([99_999_999, 10_000_000, 9_999_999]) {
            t.n = 0;
            t.num(v);
            assert_eq!(t.text(), v.to_string().as_bytes(), "{v}");
        }
        // Every column's JSON key text fits the fixed copies of a row.
        for p in Primitive::LISTED {
            let shape = RowShape::new(Primitives::parse_list([p.name()], "t").unwrap());
            assert!(shape.cols.iter().all(|c| c.key.n > 4), "{p:?}");
        }
    }

    #[test]
    fn stamps_in_the_same_second_as_the_one_before_or_not_read_as_std_prints_them() {
        let mut room = [0u8; ROW_ROOM];
        let mut r = Row::at_start(&mut room);
        let mut seen = Seconds::NONE;
        let mut want = String::new();
        // Repeats, neighbours across a second, seconds whose text changes length, u64's end.
        for ns in [
            0,
            0,
            999,
            999_999_999,
            1_000_000_000,
            1_999_999_999,
            9_999_999_999,
            10_000_000_000,
            1_767_225_600_055_233_000,
            1_767_225_600_257_913_000,
            1_767_225_601_000_000_000,
            1_767_225_600_999_999_999,
            u64::MAX,
            u64::MAX - 1,
            5,
        ] {
            r.stamp(ns, &mut seen);
            r.byte(b',');
            want.push_str(&format!("{}.{:06},", ns / 1_000_000_000, ns % 1_000_000_000 / 1000));
        }
        assert!(r.ok);
        assert_eq!(std::str::from_utf8(r.text()).unwrap(), want);
    }

    #[test]
    fn rows_of_every_column_with_the_longest_fields_are_written_in_one_pass_as_each_file_alone() {
        // Every primitive, IPv6 inner and outer addresses, 32-byte names of
        // characters JSON escapes, counters and times of every width: the
        // longest rows there are.
        let p = Primitives::parse_list(Primitive::LISTED.map(Primitive::name), "t").unwrap();
        let mut t = Aggregate::new(p);
        for i in 0..40u8 {
            let mut r = ip_record(
                [10, 0, 0, i],
                u16::MAX - u16::from(i),
                [10, 0, 1, i],
                9,
                i.wrapping_mul(37),
                (u64::MAX >> i, u64::MAX >> (i / 2)),
                (u64::from(i) << 40, 40),
                EndReason::IdleTimeout,
            );
            r.vlan = 4095 - u16::from(i);
            if i % 2 == 0 {
                r.ip_version = 6;
                r.addr_a = v6("2001:db8:1:2:3:4:5:6");
                r.addr_b = v6("fe80::ffff:1:2:3");
            }
            let name: String =
                (0..32).map(|n| char::from(if i % 3 == 0 { 1 + (n + i) % 31 } else { b'a' + n % 26 })).collect();
            r.ctr[0].name = station::record::fixed_text(&name);
            r.ctr[1].name =
                if i % 3 == 0 { r.ctr[0].name } else { station::record::fixed_text("\"\\\"\\\"\\\"\\\"\\\"\\") };
            r.tunnel_kind = 1 + i % 4;
            r.tunnel_ip_version = 6;
            r.tunnel_addr_a = v6("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff");
            r.tunnel_addr_b = v6("2001:db8:1111:2222:3333:4444:5555:6666");
            r.tunnel_id = u32::MAX - u32::from(i);
            r.tunnel_flags = station::record::TUNNEL_HAS_ID;
            (r.first_ns, r.last_ns) = (u64::MAX >> (i % 7), u64::MAX);
            t.add_ip(&r);
        }
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        write_rows(&t, &t.sorted(), Some(&mut csv), Some(&mut json)).map_err(|(_, e)| e).unwrap();
        assert_eq!(String::from_utf8(csv).unwrap(), csv_text(&t));
        let both = String::from_utf8(json).unwrap();
        assert_eq!(both, json_text(&t));
        let longest = both.lines().map(str::len).max().unwrap_or(0);
        // The room kept for a row holds the longest with half of it to spare.
        assert!((700..ROW_ROOM / 2 - 48).contains(&longest), "the longest row has {longest} bytes");
        for line in both.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }

    /// The cells of one RFC 4180 record (quoted cells unquoted, `""` a quote).
    fn rfc4180_cells(line: &str) -> Vec<String> {
        let (mut cells, mut cell, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                ('"', _) => quoted = !quoted,
                (',', false) => cells.push(std::mem::take(&mut cell)),
                (c, _) => cell.push(c),
            }
        }
        cells.push(cell);
        cells
    }

    #[test]
    fn container_names_with_commas_quotes_or_line_breaks_are_quoted_cells_in_flows_csv() {
        let p = Primitives::parse_list(["src_container", "dst_container", "proto"], "t").unwrap();
        let mut t = Aggregate::new(p);
        let names = ["web,1", "say \"hi\"", "two\nlines", "plain"];
        for (i, name) in names.iter().enumerate() {
            let mut r =
                ip_record([10, 0, 0, i as u8], 1000, [10, 0, 1, 1], 80, 6, (1, 100), (1, 60), EndReason::EndOfFlow);
            r.ctr[0].name = station::record::fixed_text(name);
            r.ctr[1].name = station::record::fixed_text("db");
            t.add_ip(&r);
        }
        let text = csv_text(&t);
        // Records, not lines: a quoted line break stays inside its cell.
        let mut records = Vec::new();
        let mut pending = String::new();
        for line in text.split_inclusive('\n') {
            pending.push_str(line);
            if pending.matches('"').count().is_multiple_of(2) {
                records.push(rfc4180_cells(pending.trim_end_matches('\n')));
                pending.clear();
            }
        }
        let header = &records[0];
        let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("{name} in {text}"));
        let (src, dst) = (col("SRC_CONTAINER"), col("DST_CONTAINER"));
        let mut seen: Vec<String> = Vec::new();
        for r in &records[1..] {
            assert_eq!(r.len(), header.len(), "{r:?} in\n{text}");
            if r[dst] == "db" {
                seen.push(r[src].clone());
            }
        }
        seen.sort();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(seen, want, "{text}");
    }

    #[test]
    fn random_rows_of_every_column_read_as_std_and_serde_json_print_their_fields() {
        use std::net::{Ipv4Addr, Ipv6Addr};
        let mut next = xorshift(0x853c_49e6_748f_ea9bu64);
        // Addresses whose first word is not zero: std's Display and glibc agree on them.
        let addr = |v6: bool, next: &mut dyn FnMut() -> u64| -> [u8; 16] {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&next().to_be_bytes());
            b[8..].copy_from_slice(&(next() >> (next() % 64)).to_be_bytes());
            if v6 {
                b[0] |= 0x20;
            } else {
                b[4..].fill(0);
            }
            b
        };
        let p = Primitives::parse_list(Primitive::LISTED.map(Primitive::name), "t").unwrap();
        let mut t = Aggregate::new(p).with_max_rows(1500);
        for _ in 0..1000 {
            let r0 = next();
            // Every width up to 40 bits: the overflow row's sums stay within u64.
            let width = |v: u64, r: u64| v >> (24 + r % 40);
            let mut r = ip_record(
                [0; 4],
                r0 as u16,
                [0; 4],
                (r0 >> 16) as u16,
                (r0 >> 32) as u8,
                (width(next(), r0 >> 40), width(next(), r0 >> 46)),
                (width(next(), r0 >> 52), width(next(), r0 >> 58)),
                EndReason::IdleTimeout,
            );
            let v6 = r0 & 1 == 0;
            r.ip_version = if v6 { 6 } else { 4 };
            (r.addr_a, r.addr_b) = (addr(v6, &mut next), addr(v6, &mut next));
            r.vlan = (next() % 4096) as u16;
            for c in &mut r.ctr {
                // Any ASCII, controls, quotes and backslashes included; not a
                // newline, which would split the CSV row (pmacct's CSV does not quote).
                let len = next() % 33;
                let name: String =
                    (0..len).map(|_| char::from((next() % 127) as u8 + 1)).filter(|&c| c != '\n').collect();
                c.name = station::record::fixed_text(&name);
            }
            r.tunnel_kind = (next() % 5) as u8;
            if r.tunnel_kind != 0 {
                let outer6 = next() & 1 == 0;
                r.tunnel_ip_version = if outer6 { 6 } else { 4 };
                (r.tunnel_addr_a, r.tunnel_addr_b) = (addr(outer6, &mut next), addr(outer6, &mut next));
                r.tunnel_id = next() as u32;
                r.tunnel_flags = station::record::TUNNEL_HAS_ID;
            }
            r.first_ns = next();
            r.last_ns = r.first_ns.saturating_add(next() >> 20);
            t.add_ip(&r);
        }
        assert!(t.overflowed() > 0, "the overflow row is among the rows");
        // Both files in one pass, as the app writes them at the defaults (the
        // CSV's fields copied from the JSON's), checked below against std and
        // serde_json; each file written alone is the same text.
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        write_rows(&t, &t.sorted(), Some(&mut csv), Some(&mut json)).map_err(|(_, e)| e).unwrap();
        let (csv, json) = (String::from_utf8(csv).unwrap(), String::from_utf8(json).unwrap());
        assert_eq!(csv, csv_text(&t));
        assert_eq!(json, json_text(&t));
        let (mut csv_lines, mut json_lines) = (csv.lines().skip(1), json.lines());
        let ip = |version: u8, b: &[u8; 16]| match version {
            4 => Ipv4Addr::from([b[0], b[1], b[2], b[3]]).to_string(),
            6 => Ipv6Addr::from(*b).to_string(),
            _ => String::new(),
        };
        // pmacct's print plugin order (vlan, ip_src, ip_dst, port_src,
        // port_dst, ip_proto: see `json_lines_match_pmacct_keys` and
        // e2e/tests/pmacct.rs), then the station's own columns as the README
        // lists them; written out here, not taken from the code under test.
        const ORDER: [(Primitive, &str); 12] = [
            (Primitive::Vlan, "vlan"),
            (Primitive::SrcHost, "ip_src"),
            (Primitive::DstHost, "ip_dst"),
            (Primitive::SrcPort, "port_src"),
            (Primitive::DstPort, "port_dst"),
            (Primitive::Proto, "ip_proto"),
            (Primitive::SrcContainer, "container_src"),
            (Primitive::DstContainer, "container_dst"),
            (Primitive::Tunnel, "tunnel"),
            (Primitive::OuterSrcHost, "outer_ip_src"),
            (Primitive::OuterDstHost, "outer_ip_dst"),
            (Primitive::TunnelId, "tunnel_id"),
        ];
        let quote = |text: &str| serde_json::to_string(text).unwrap();
        for (k, c) in t.sorted() {
            let mut cells = Vec::new();
            // The raw line as pmacct writes it: `"key": value` joined by `, `.
            let mut line = String::from("{\"event_type\": \"purge\"");
            for (col, key) in ORDER {
                let (text, number) = match col {
                    _ if k.overflow => ("other".to_string(), false),
                    Primitive::Vlan => (k.vlan.to_string(), true),
                    Primitive::SrcHost => (ip(k.ip_version, &k.src), false),
                    Primitive::DstHost => (ip(k.ip_version, &k.dst), false),
                    Primitive::SrcPort => (k.src_port.to_string(), true),
                    Primitive::DstPort => (k.dst_port.to_string(), true),
                    // pmacct prints ip_proto as a string, known name or number.
                    Primitive::Proto => (proto_name(k.proto).to_string(), false),
                    Primitive::SrcContainer => (station::record::text_of(&k.src_container.bytes()).to_string(), false),
                    Primitive::DstContainer => (station::record::text_of(&k.dst_container.bytes()).to_string(), false),
                    Primitive::Tunnel => {
                        (wire::tunnel::TunnelKind::from_u8(k.tunnel).map_or("", |t| t.name()).to_string(), false)
                    }
                    Primitive::OuterSrcHost => (ip(k.outer_ip_version, &k.outer_src.bytes()), false),
                    Primitive::OuterDstHost => (ip(k.outer_ip_version, &k.outer_dst.bytes()), false),
                    Primitive::TunnelId => (k.tunnel_id.to_string(), true),
                };
                let value = if number { text.clone() } else { quote(&text) };
                line.push_str(&format!(", \"{key}\": {value}"));
                // RFC 4180: a cell with a comma, a quote or a line break is quoted, its quotes doubled.
                let special = text.contains([',', '"', '\n', '\r']);
                cells.push(if special { format!("\"{}\"", text.replace('"', "\"\"")) } else { text });
            }
            let stamp = |ns: u64| format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1000);
            for (key, v) in
                [("packets", c.packets), ("bytes", c.ip_bytes), ("frame_bytes", c.frame_bytes), ("flows", c.flows)]
            {
                line.push_str(&format!(", \"{key}\": {v}"));
                cells.push(v.to_string());
            }
            for (key, ns) in [("timestamp_start", c.first_ns), ("timestamp_end", c.last_ns)] {
                line.push_str(&format!(", \"{key}\": \"{}\"", stamp(ns)));
                cells.push(stamp(ns));
            }
            line.push('}');
            assert_eq!(csv_lines.next(), Some(cells.join(",").as_str()));
            assert_eq!(json_lines.next(), Some(line.as_str()));
        }
        assert_eq!((csv_lines.next(), json_lines.next()), (None, None), "more lines than rows");
    }

    #[test]
    fn every_protocol_name_is_json_text_without_escapes() {
        // What `json_plain` assumes of the proto column; serde_json is the truth.
        for proto in 0..=255u8 {
            let name = proto_name(proto);
            assert_eq!(serde_json::to_string(&name).unwrap(), format!("\"{name}\""), "protocol {proto}");
        }
    }

    /// A table of `n` TCP rows of distinct keys and counts.
    fn many_rows(n: u32) -> Aggregate {
        let mut t = Aggregate::new(Primitives::default_set()).with_max_rows(2 * n as usize + 2);
        for i in 0..n {
            let [a, b, c, d] = i.to_be_bytes();
            let r = ip_record(
                [10, b, c, d],
                1024 + a as u16,
                [172, 16, c, d],
                443,
                6,
                (1 + u64::from(i) % 7, 60 + u64::from(i)),
                (2, 80),
                EndReason::IdleTimeout,
            );
            t.add_ip(&r);
        }
        t
    }

    #[test]
    fn files_written_behind_the_composing_in_many_pieces_hold_the_bytes_written_in_place() {
        // 30,000 rows: about 2.7 MB of CSV and 8 MB of JSON, several pieces each.
        let t = many_rows(15_000);
        let order = t.sorted();
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        write_rows_behind(&t, &order, Some(&mut csv), Some(&mut json)).map_err(|(_, e)| e).unwrap();
        assert!(json.len() > 3 * CHUNK, "{} bytes of JSON", json.len());
        // Every row once, none lost or doubled at a piece's edge: the header
        // and a line per row, each JSON line an object.
        let lines = |b: &[u8]| b.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count();
        assert_eq!((lines(&csv), lines(&json)), (order.len() + 1, order.len()));
        assert!(json
            .split(|&c| c == b'\n')
            .filter(|l| !l.is_empty())
            .all(|l| serde_json::from_slice::<serde_json::Value>(l).is_ok_and(|v| v.is_object())));
        assert_eq!(String::from_utf8(csv).unwrap(), csv_text(&t));
        assert_eq!(String::from_utf8(json).unwrap(), json_text(&t));
        // One file alone, either one.
        let (mut csv, mut json) = (Vec::new(), Vec::new());
        write_rows_behind(&t, &order, Some(&mut csv), None).map_err(|(_, e)| e).unwrap();
        write_rows_behind(&t, &order, None, Some(&mut json)).map_err(|(_, e)| e).unwrap();
        assert_eq!(String::from_utf8(csv).unwrap(), csv_text(&t));
        assert_eq!(String::from_utf8(json).unwrap(), json_text(&t));
    }

    /// A file that takes `left` bytes, then fails every write.
    struct Failing {
        left: usize,
    }

    impl io::Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.left {
                return Err(io::Error::other("disk full (test)"));
            }
            self.left -= buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_file_the_writer_thread_cannot_write_is_the_error_named_and_the_composing_stops() {
        let t = many_rows(15_000);
        let order = t.sorted();
        for (fail_csv, side) in [(true, Side::Csv), (false, Side::Json)] {
            let mut ok = Failing { left: usize::MAX };
            let mut bad = Failing { left: CHUNK + 1 };
            let (c, j) = if fail_csv { (&mut bad, &mut ok) } else { (&mut ok, &mut bad) };
            let (got, e) = write_rows_behind(&t, &order, Some(c), Some(j)).unwrap_err();
            assert_eq!((got, e.to_string()), (side, "disk full (test)".to_owned()));
        }
    }

    #[test]
    fn csv_matches_pmacct_rows() {
        // Rows pmacctd 1.7.7 wrote for the same packets (print_output: csv),
        // plus our FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END columns.
        let mut t = Aggregate::new(Primitives::default_set());
        let mut tcp = ip_record([10, 0, 0, 1], 1234, [10, 0, 0, 2], 80, 6, (1, 40), (1, 140), EndReason::EndOfFlow);
        (tcp.first_ns, tcp.last_ns) = (1_733_440_000_123_456_789, 1_733_440_001_000_000_999);
        t.add_ip(&tcp);
        t.add_ip(&ip_record([192, 168, 1, 10], 0, [8, 8, 8, 8], 0, 1, (1, 84), (0, 0), EndReason::IdleTimeout));
        t.add_ip(&ip_record([10, 1, 1, 1], 0, [10, 2, 2, 2], 0, 47, (1, 44), (0, 0), EndReason::IdleTimeout));
        let mut v6rec = ip_record([0; 4], 0, [0; 4], 0, 58, (1, 64), (0, 0), EndReason::IdleTimeout);
        v6rec.ip_version = 6;
        v6rec.addr_a = v6("fe80::1");
        v6rec.addr_b = v6("ff02::1");
        t.add_ip(&v6rec);
        let mut odd = ip_record([10, 0, 0, 5], 0, [10, 0, 0, 6], 0, 200, (1, 30), (0, 0), EndReason::IdleTimeout);
        odd.vlan = 3;
        t.add_ip(&odd);
        assert_eq!(
            csv_text(&t),
            "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END\n\
             10.0.0.2,10.0.0.1,80,1234,tcp,1,140,154,1,1733440000.123456,1733440001.000000\n\
             192.168.1.10,8.8.8.8,0,0,icmp,1,84,98,1,0.000000,0.000000\n\
             fe80::1,ff02::1,0,0,ipv6-icmp,1,64,78,1,0.000000,0.000000\n\
             10.1.1.1,10.2.2.2,0,0,gre,1,44,58,1,0.000000,0.000000\n\
             10.0.0.1,10.0.0.2,1234,80,tcp,1,40,54,1,1733440000.123456,1733440001.000000\n\
             10.0.0.5,10.0.0.6,0,0,200,1,30,44,1,0.000000,0.000000\n"
        );
        let with_vlan = Primitives::parse_list(["proto", "vlan", "dst_port", "src_host"], "t").unwrap();
        assert_eq!(
            csv_header(with_vlan),
            "VLAN,SRC_IP,DST_PORT,PROTOCOL,PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END"
        );
    }

    #[test]
    fn json_lines_match_pmacct_keys() {
        let p = Primitives::parse_list(["src_host", "dst_host", "src_port", "dst_port", "proto", "vlan"], "t").unwrap();
        let mut t = Aggregate::new(p);
        let mut r = ip_record([10, 0, 0, 5], 7, [10, 0, 0, 6], 9, 200, (2, 60), (0, 0), EndReason::IdleTimeout);
        r.vlan = 7;
        t.add_ip(&r);
        assert_eq!(
            json_text(&t),
            "{\"event_type\": \"purge\", \"vlan\": 7, \"ip_src\": \"10.0.0.5\", \"ip_dst\": \"10.0.0.6\", \
             \"port_src\": 7, \"port_dst\": 9, \"ip_proto\": \"200\", \"packets\": 2, \"bytes\": 60, \
             \"frame_bytes\": 88, \"flows\": 1, \"timestamp_start\": \"0.000000\", \"timestamp_end\": \"0.000000\"}\n"
        );
        let line = json_text(&t);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["ip_proto"], "200");
    }

    #[test]
    fn decapsulated_records_give_each_direction_its_outer_source_and_destination() {
        let mut r = ip_record([10, 1, 0, 1], 40000, [10, 1, 0, 2], 80, 6, (3, 240), (2, 980), EndReason::EndOfFlow);
        r.tunnel_kind = 1;
        r.tunnel_ip_version = 4;
        r.tunnel_addr_a = v4([192, 168, 10, 1]);
        r.tunnel_addr_b = v4([192, 168, 10, 2]);
        r.tunnel_id = 100;
        r.tunnel_flags = station::record::TUNNEL_HAS_ID;
        let plain = ip_record([10, 9, 0, 1], 1, [10, 9, 0, 2], 2, 17, (1, 30), (0, 0), EndReason::IdleTimeout);
        let mut t = Aggregate::new(Primitives::default_set().with_tunnel());
        t.add_ip(&r);
        t.add_ip(&plain);
        assert_eq!(
            csv_text(&t),
            "SRC_IP,DST_IP,SRC_PORT,DST_PORT,PROTOCOL,TUNNEL,OUTER_SRC_IP,OUTER_DST_IP,TUNNEL_ID,\
             PACKETS,BYTES,FRAME_BYTES,FLOWS,TIMESTAMP_START,TIMESTAMP_END\n\
             10.1.0.2,10.1.0.1,80,40000,tcp,vxlan,192.168.10.2,192.168.10.1,100,2,980,1008,1,0.000000,0.000000\n\
             10.1.0.1,10.1.0.2,40000,80,tcp,vxlan,192.168.10.1,192.168.10.2,100,3,240,282,1,0.000000,0.000000\n\
             10.9.0.1,10.9.0.2,1,2,udp,,,,0,1,30,44,1,0.000000,0.000000\n"
        );
        let first: serde_json::Value = serde_json::from_str(json_text(&t).lines().next().unwrap()).unwrap();
        assert_eq!(
            (&first["tunnel"], &first["outer_ip_src"], &first["tunnel_id"]),
            (&"vxlan".into(), &"192.168.10.2".into(), &100.into())
        );
        // Without the tunnel primitives the columns and keys are as before.
        assert!(!csv_text(&Aggregate::new(Primitives::default_set())).contains("TUNNEL"));
    }

    #[test]
    fn atomic_write_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let out = DirFd::open(dir.path()).unwrap();
        let sub = subdir(&out, "sub").unwrap();
        let p = dir.path().join("sub/flows.csv");
        assert_eq!(write_atomic(&sub, "flows.csv", b"x\n").unwrap(), p);
        write_atomic(&sub, "flows.csv", b"y\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "y\n");
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["flows.csv"]);
    }

    #[test]
    fn a_planted_temporary_link_in_the_output_directory_does_not_redirect_the_write() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        // The fixed temporary name of earlier versions, and the target itself.
        symlink(&victim, dir.path().join(".summary.json.tmp")).unwrap();
        symlink(&victim, dir.path().join("summary.json")).unwrap();
        let p = dir.path().join("summary.json");
        write_atomic(&DirFd::open(dir.path()).unwrap(), "summary.json", b"{}\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file(), "the link was replaced by a file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}\n");
    }
}

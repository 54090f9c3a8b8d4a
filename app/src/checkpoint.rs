//! The app's checkpoint: its accounts together with its record-queue read
//! positions, so that a restarted cj-app continues the totals with nothing lost
//! and nothing counted twice (DESIGN.md "Restarts").
//!
//! Guarantees:
//! - cj-app holds the record-queue slots it has read until they are in a
//!   checkpoint: it saves `<out dir>/checkpoint` (the accounts, per queue
//!   the read position, the expected sequence number and the intake
//!   counters, and the export's counters, ipfix.rs) and only then releases
//!   the slots. It saves when a queue has half of its
//!   slots held, when the queues go quiet with records held (at most once a
//!   second), at every refresh (CJ_REFRESH) and when stopped by a signal.
//!   With a paced export (`CJ_EXPORT_RATE`) also once a second while records
//!   are held, and each save waits until the export has sent the records it
//!   counts (ipfix.rs), taking no records meanwhile. With
//!   `CJ_EXPORT_BEHIND=drop` as unpaced: the save waits for the export the
//!   same way but the app takes records meanwhile, their export counted
//!   dropped behind, until a queue has three quarters of its slots held.
//! - The file is a whole checkpoint followed by changes: the first save of a
//!   run writes every row (a temporary file of its own, renamed over the old
//!   one), each later save appends one frame with the rows changed since the
//!   save before (and the totals, the containers and the read positions
//!   whole), so a save costs what changed, not the whole table. When the
//!   frames hold more rows than twice the table, the next save writes the
//!   whole checkpoint again (so the file stays within about three times the
//!   table's rows). A SIGKILL at any point leaves the previous checkpoint or
//!   the new one: a frame cut short by the kill is ignored at load (its slots
//!   were not released: the queue still holds them for the next cj-app), and
//!   a frame that could not be appended whole is cut off again, the next save
//!   writing the whole checkpoint.
//! - Every frame is checksummed (format v4). The file is the 16-byte magic
//!   (`cj-app ckpt v4`), then frames, each a 16-byte header (the body's
//!   length as a u64, the body's CRC-32, and the CRC-32 of those 12 bytes,
//!   little-endian) and the body (bincode). The CRC is computed as the body
//!   is streamed, and the header is written at its place once the body is in
//!   the file; until then the place holds 16 bytes of 0xff. Load reads the
//!   frames in order and, for each:
//!   - the file ends, or ends within the header: the frames before are the
//!     checkpoint (a frame cut short by a kill);
//!   - the header is the 16 0xff bytes: the same (killed before the header
//!     was written);
//!   - the header fails its own CRC: refused as damaged, naming the frame and
//!     its byte. A damaged length is never taken for a frame cut short;
//!   - the header is right and the file ends before the body does: the frames
//!     before are the checkpoint. A kill never leaves this (the header comes
//!     after the body); a file cut from outside does, and if the frame's
//!     slots had been released the queue's released position is past the
//!     checkpoint's, which the intake refuses naming the cut and its byte
//!     ([`Loaded::cut_at`], `RestoreError::CutCheckpoint`);
//!   - the body fails its CRC: refused as damaged, naming the frame.
//!
//!   The first frame must be whole: it is renamed into place only once
//!   complete, so one cut short or unfinished is refused too.
//!
//!   So a flipped bit anywhere (magic, length, CRCs, body) is refused with the
//!   one-line error that says to move the file away, never loaded as other
//!   counts (a test flips every bit of a three-save checkpoint with containers:
//!   35,064 refused of 35,064; the v3 code loaded 10,047 of 34,872 as other
//!   counts), and a file cut at any byte loads the saves it holds whole, or is
//!   refused when cut in its first frame. The v4 and v3 magics are three bits
//!   apart, so a flipped bit never makes a v4 file read as v3.
//! - A v3 checkpoint (the format before, frames without checksums) loads as
//!   it did (an upgraded cj-app continues its totals); the run's first save
//!   writes the whole checkpoint as v4.
//! - The export's counters are the last field of every frame: a checkpoint
//!   saved before they were kept (v3, or v4 before then) ends each frame
//!   where they would begin, loads as it did, and continues the export's
//!   counters from zero.
//! - A cj-app started with a checkpoint in its output directory loads it,
//!   skips the records the queues still hold that the checkpoint has already
//!   counted, and goes on: its files, totals and identity are those of one
//!   uninterrupted run.
//! - A run that reads every queue to its end writes its files, saves its final
//!   positions, gives the slots back and then removes the checkpoint: the
//!   next run starts from zero (killed before the removal, the next start
//!   agrees with the queues and writes the same files again).
//! - A checkpoint that does not fit this run (other queues, queue set,
//!   aggregation primitives, fan-out, row limit, container logs or record
//!   layout; a queue read by someone else since; a damaged or unsafe file)
//!   stops cj-app with a one-line error naming the fix: the totals it holds
//!   are neither overwritten nor silently ignored. One whose queues were
//!   re-created (a reboot) is moved aside with the last run's files
//!   (`previous.rs`) and the run starts from zero.
//! - The file is written with mode 0600 and opened with the station's checked
//!   open (`shmq::files::DirFd::open_checked`: no symbolic link followed, a
//!   regular file of this user or root, nothing for others; a refusal's fix
//!   names 0600), saved, loaded and removed relative to the output
//!   directory's descriptor ([`Place`]: the directory's name swapped for a
//!   link after the start changes nothing), and decoded with its own
//!   length as the limit: a damaged file cannot make cj-app allocate without
//!   bound.
//!
//! Not guaranteed:
//! - IPFIX export is at least once across a crash: records read after the last
//!   checkpoint are exported again by the restarted app (the collector sees
//!   them twice); the files and totals are exact.
//! - A save costs the rows changed since the last one (encoding and
//!   appending them), with the default 65536-slot record queues at most once
//!   per 32768 records of a queue, plus once per refresh and at a signal; the
//!   whole table is written at the first save of a run and when the frames
//!   outgrow it (per-container flow logs, when kept, are written whole at every
//!   save). The CRC is summed over pieces of 64 KiB (a frame) or 256 KiB (a
//!   whole save, handed to the file unbuffered) into which a save's small
//!   writes are gathered ([`Summed`]): about 2 ns a row (crc32fast alone,
//!   measured on this VM), where summing each small write would cost 15.
//! - Damage CRC-32 cannot see: it sees every flipped bit and every burst of
//!   up to 32 bits in a frame; other damage (many scattered bits) passes a
//!   frame's check with a chance of about one in four billion, and damage
//!   that writes a whole header as 16 bytes of 0xff drops that frame and
//!   the ones after it as a kill would.
//! - Damage in a v3 file: it has no checksums, so a flipped bit in a row's
//!   counters loads as another count until the run's first save replaces it
//!   with v4 (a review flipped every bit of a one-flow v3 checkpoint: 86 of
//!   394 loaded).
//! - A power loss: the checkpoint is not fsynced, because the record queues
//!   (in memory, under CJ_SHM_DIR) do not survive one either; a checkpoint
//!   whose queues were re-created is moved aside, as above.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use station::record::RECORD_LAYOUT_VERSION;

use crate::aggregate::{Accounts, AccountsChanges};
use crate::intake::SavedQueue;
use crate::ipfix::SavedExport;
use crate::settings::Primitives;

/// The file name, in the output directory.
pub const FILE_NAME: &str = "checkpoint";

/// The file's mode: the accounts are the station's own business.
const MODE: u32 = 0o600;

/// The first bytes of the file: what it is, and the encoding's version.
/// (v2: length-prefixed frames, the first whole, the others changes;
/// v3: compact rows, see aggregate.rs `RowBytes`; v4: v3's frames, each
/// with a header that holds the body's CRC-32 and one of its own.)
const MAGIC: &[u8; 16] = b"cj-app ckpt v4\n\0";

/// The first bytes of a v3 file: read (its bodies are v4's), never written.
/// Three bits from [`MAGIC`], so a flipped bit makes neither of the other.
const MAGIC_V3: &[u8; 16] = b"cj-app ckpt v3\n\0";

/// What must be the same for a checkpoint to continue in this run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fit {
    /// FlowRecord layout version of the build.
    pub record_layout: u32,
    /// The cluster directory (CJ_SHM_DIR, CJ_CLUSTER_ID).
    pub cluster_dir: String,
    /// CJ_QUEUE_SET.
    pub queue_set: u32,
    /// The aggregation primitives.
    pub primitives: Primitives,
    /// One table per queue.
    pub fan_out: bool,
    /// CJ_APP_MAX_ROWS.
    pub max_rows: u64,
    /// Per-container flow logs.
    pub container_logs: bool,
}

/// The first frame: everything.
#[derive(Serialize, Deserialize)]
struct Body<A> {
    fit: Fit,
    intake: Vec<SavedQueue>,
    accounts: A,
    /// The export's counters (None: no export). Last, so that a body saved
    /// before it was kept ([`OldBody`]) is one this body's decoding finds cut
    /// short, never one it misreads.
    export: Option<SavedExport>,
}

/// Every later frame: what changed since the frame before.
#[derive(Serialize, Deserialize)]
struct Changes<'a> {
    intake: Vec<SavedQueue>,
    #[serde(borrow)]
    accounts: AccountsChanges<'a>,
    /// The export's counters, whole (None: no export).
    export: Option<SavedExport>,
}

/// A first frame saved before the export's counters were kept (v3, and v4
/// until then): read, never written.
#[derive(Serialize, Deserialize)]
struct OldBody<A> {
    fit: Fit,
    intake: Vec<SavedQueue>,
    accounts: A,
}

/// A later frame saved before the export's counters were kept.
#[derive(Serialize, Deserialize)]
struct OldChanges<'a> {
    intake: Vec<SavedQueue>,
    #[serde(borrow)]
    accounts: AccountsChanges<'a>,
}

/// What a checkpoint holds.
#[derive(Debug)]
pub struct Loaded {
    /// The intake, per queue.
    pub intake: Vec<SavedQueue>,
    /// The accounts.
    pub accounts: Accounts,
    /// The export's counters at the save (None: no export then, or saved
    /// before they were kept).
    pub export: Option<SavedExport>,
    /// The byte at which the file ends inside a frame's body whose header is
    /// whole: a file cut from outside (a kill never leaves this shape: the
    /// header is written after the body), which may have lost saves whose
    /// records were released. None when the file ends where a save ends or
    /// where a kill left it.
    pub cut_at: Option<u64>,
}

/// A checkpoint that cannot be read or used, or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Unsafe or unreadable.
    #[error("checkpoint {path}: {reason}; move it away to start from zero (its totals are then not continued)")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Made by another configuration.
    #[error(
        "checkpoint {path} was made with {field} {saved}, this run has {now}: start cj-app with the configuration \
         that made it, or move it away to start from zero"
    )]
    Misfit {
        /// The file.
        path: PathBuf,
        /// Which setting.
        field: &'static str,
        /// In the file.
        saved: String,
        /// Now.
        now: String,
    },
    /// Cannot be written.
    #[error("cannot write checkpoint {path}: {cause}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
}

/// Where a checkpoint is: a name in a directory held open as a descriptor
/// (the output directory, opened once at start), so that it is saved,
/// loaded and removed there whatever happens to the directory's name.
#[derive(Debug)]
pub struct Place {
    dir: shmq::files::DirFd,
    name: String,
}

impl Place {
    /// The checkpoint of the output directory `out`.
    ///
    /// # Errors
    /// No descriptor left to hold it.
    pub fn in_dir(out: &shmq::files::DirFd) -> std::io::Result<Place> {
        Ok(Place { dir: out.try_clone()?, name: FILE_NAME.into() })
    }

    /// The file at `path` (tests: any name).
    #[cfg(test)]
    pub fn at(path: &Path) -> Place {
        let dir = shmq::files::DirFd::open(path.parent().unwrap()).unwrap();
        Place { dir, name: path.file_name().unwrap().to_str().unwrap().into() }
    }

    /// Its path, for messages.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }
}

/// Saves checkpoints of one run: the first whole, the next ones as frames
/// of changes appended to it (see the module doc).
#[derive(Debug)]
pub struct Saver {
    place: Place,
    /// `place`'s path, for messages.
    path: PathBuf,
    /// The file saved last, open at its end; None: the next save writes it whole.
    file: Option<File>,
    /// Its length.
    len: u64,
    /// Rows in it, every frame.
    rows: usize,
}

/// Rows the frames may hold beyond twice the table before a whole save.
const SLACK_ROWS: usize = 4096;

impl Saver {
    /// The saver of the checkpoint at `place`; its first save writes it whole.
    pub fn new(place: Place) -> Self {
        Saver { path: place.path(), place, file: None, len: 0, rows: 0 }
    }

    /// Saves `accounts`, `intake` and the export's counters: appends what
    /// changed since the last save, or writes everything anew (the first
    /// save, after a failed one, or when the frames outgrow the table).
    ///
    /// # Errors
    /// The file cannot be written (the caller decides whether to release
    /// anyway); the next save then writes everything.
    pub fn save(
        &mut self,
        fit: &Fit,
        intake: Vec<SavedQueue>,
        export: Option<SavedExport>,
        accounts: &mut Accounts,
    ) -> Result<(), CheckpointError> {
        let live = accounts.rows();
        if let Some(mut file) = self.file.take() {
            let changes = accounts.take_changes();
            let rows = changes.rows();
            if self.rows + rows <= 2 * live + SLACK_ROWS {
                return match append_frame(&mut file, &Changes { intake, accounts: changes, export }) {
                    Ok(len) => {
                        self.len += len;
                        self.rows += rows;
                        self.file = Some(file);
                        Ok(())
                    }
                    Err(e) => {
                        // Cut the partial frame off (a load would ignore it anyway); the next save is whole.
                        let _ = file.set_len(self.len);
                        Err(CheckpointError::Write { path: self.path.clone(), cause: e.to_string() })
                    }
                };
            }
        }
        accounts.clear_changes();
        let write = |cause: String| CheckpointError::Write { path: self.path.clone(), cause };
        let mut f = crate::sinks::AtomicFile::create_with_mode(&self.place.dir, &self.place.name, MODE)
            .map_err(|e| write(e.source.to_string()))?;
        // Streamed (the table is never encoded whole in memory) and summed as
        // it goes; the frame's header is written at its place once known,
        // before the rename. The pieces are as large as the file's own buffer,
        // so they pass it straight to write(2) (`shmq::files::AtomicFile::UNBUFFERED_MIN`).
        let mut start = [0; MAGIC.len() + HEADER];
        start[..MAGIC.len()].copy_from_slice(MAGIC);
        start[MAGIC.len()..].copy_from_slice(&UNFINISHED);
        let mut body = Summed::new(&mut f, shmq::files::AtomicFile::BUFFER, &start);
        bincode::serialize_into(&mut body, &Body { fit: fit.clone(), intake, accounts: &*accounts, export })
            .map_err(|e| write(e.to_string()))?;
        let (len, crc) = body.finish().map_err(|e| write(e.to_string()))?;
        f.write_at(MAGIC.len() as u64, &header(len, crc)).map_err(|e| write(e.to_string()))?;
        // Not fsynced: a power loss also loses the record queues (in memory), so a
        // synced checkpoint could not be continued anyway; atomic for processes is what counts.
        let file = f.commit_file(false).map_err(|e| write(e.source.to_string()))?;
        self.file = Some(file);
        self.len = (MAGIC.len() + HEADER) as u64 + len;
        self.rows = live;
        Ok(())
    }
}

/// A frame's header (v4): the body's length (u64), the body's CRC-32 (u32),
/// and the CRC-32 of those 12 bytes (u32), little-endian.
const HEADER: usize = 16;

/// What holds a frame header's place while its body is written: no header
/// that [`header`] makes (its length would pass any file), so a frame cut
/// off before its header was written is one no load takes ([`next_frame`]).
const UNFINISHED: [u8; HEADER] = [0xff; HEADER];

/// The header of a body of `len` bytes whose CRC-32 is `crc`.
fn header(len: u64, crc: u32) -> [u8; HEADER] {
    let mut h = [0; HEADER];
    h[..8].copy_from_slice(&len.to_le_bytes());
    h[8..12].copy_from_slice(&crc.to_le_bytes());
    let own = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&own.to_le_bytes());
    h
}

/// A writer that gathers a frame's small writes (a serializer's, two a row)
/// into a buffer and hands them on, summed (CRC-32), in pieces of the
/// buffer's size; a write as large as the buffer passes summed as it is.
///
/// Why its own buffer: a CRC over each small write costs about 15 ns a row
/// (a table lookup a byte), over 64 KiB pieces about 2 ns (measured with
/// crc32fast on this VM); the copy into the buffer is the one the file's
/// own buffer would make.
struct Summed<W: std::io::Write> {
    out: W,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` passed on but not summed (the magic and
    /// the header's place).
    unsummed: usize,
    crc: crc32fast::Hasher,
    /// Bytes summed (or buffered to be).
    len: u64,
}

impl<W: std::io::Write> Summed<W> {
    /// Sums what is written to `out` after `start` (passed on first, not summed).
    fn new(out: W, capacity: usize, start: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(start.len()));
        buf.extend_from_slice(start);
        Summed { out, buf, unsummed: start.len(), crc: crc32fast::Hasher::new(), len: 0 }
    }

    /// Sums the buffer and hands it on.
    fn drain(&mut self) -> std::io::Result<()> {
        self.crc.update(&self.buf[self.unsummed..]);
        self.unsummed = 0;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Hands on what is buffered; returns the length and the CRC-32 of what
    /// was summed.
    fn finish(mut self) -> std::io::Result<(u64, u32)> {
        self.drain()?;
        self.out.flush()?;
        Ok((self.len, self.crc.finalize()))
    }
}

impl<W: std::io::Write> std::io::Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    #[inline]
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.len() > self.buf.capacity() - self.buf.len() {
            self.drain()?;
        }
        if buf.len() < self.buf.capacity() {
            self.buf.extend_from_slice(buf);
        } else {
            self.crc.update(buf);
            self.out.write_all(buf)?;
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.drain()?;
        self.out.flush()
    }
}

/// Appends one frame to `file`: its header ([`header`]) and its bincode
/// encoding, streamed and summed in one pass (its rows, already encoded,
/// pass to the file in one write); the header is written at its place once
/// the body is in the file, as [`Saver::save`] does for a whole checkpoint.
/// Until then the place holds [`UNFINISHED`]. Returns the bytes appended.
///
/// # Errors
/// A write fails (part of the frame may be in the file).
fn append_frame(file: &mut File, body: &impl Serialize) -> std::io::Result<u64> {
    use std::io::Seek as _;
    use std::os::unix::fs::FileExt as _;
    let at = file.stream_position()?;
    let mut out = Summed::new(&mut *file, FRAME_BUFFER, &UNFINISHED);
    bincode::serialize_into(&mut out, body).map_err(std::io::Error::other)?;
    let (len, crc) = out.finish()?;
    file.write_all_at(&header(len, crc), at)?;
    Ok(HEADER as u64 + len)
}

/// The buffer of a frame's small fields ([`append_frame`]).
const FRAME_BUFFER: usize = 64 * 1024;

/// Why a frame is refused ([`next_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    /// The header's own CRC is wrong (its length cannot be trusted).
    Header,
    /// The body's CRC is wrong.
    Body,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Damage::Header => "fails its header checksum",
            Damage::Body => "fails its checksum",
        })
    }
}

/// What the rest of a checkpoint file holds next ([`next_frame`]).
enum Next<'a> {
    /// A whole frame's body.
    Frame(&'a [u8]),
    /// No frame left whole: the file ends, or ends within a header, or at a
    /// header never written (a kill's shapes, and the end of every file).
    End,
    /// A right header whose body the file does not hold whole: only a cut
    /// from outside leaves this (the header is written after the body).
    CutBody,
}

/// The next frame's body of `rest` (format `v4`, else v3), or why none is
/// left whole: none at all, or one cut short (the rule in the module doc).
///
/// # Errors
/// A v4 frame whose header or body fails its checksum.
fn next_frame<'a>(rest: &mut &'a [u8], v4: bool) -> Result<Next<'a>, Damage> {
    if !v4 {
        // v3: a length and the body, nothing to check them by (a kill could leave either).
        let Some((len, body)) = rest.split_first_chunk::<8>() else { return Ok(Next::End) };
        let Some(len) = usize::try_from(u64::from_le_bytes(*len)).ok().filter(|&n| n <= body.len()) else {
            return Ok(Next::End);
        };
        let (frame, tail) = body.split_at(len);
        *rest = tail;
        return Ok(Next::Frame(frame));
    }
    // The file ends, or ends within a header, or at a header never written: cut short.
    let Some((h, body)) = rest.split_first_chunk::<HEADER>() else { return Ok(Next::End) };
    if *h == UNFINISHED {
        return Ok(Next::End);
    }
    let [l0, l1, l2, l3, l4, l5, l6, l7, c0, c1, c2, c3, o0, o1, o2, o3] = *h;
    if crc32fast::hash(&h[..12]) != u32::from_le_bytes([o0, o1, o2, o3]) {
        return Err(Damage::Header);
    }
    // A header that is right, its body not all there: cut short (see the module doc).
    let len = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
    let Some(len) = usize::try_from(len).ok().filter(|&n| n <= body.len()) else { return Ok(Next::CutBody) };
    let (frame, tail) = body.split_at(len);
    if crc32fast::hash(frame) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err(Damage::Body);
    }
    *rest = tail;
    Ok(Next::Frame(frame))
}

/// Loads the checkpoint at `path`, or `None` when there is none.
///
/// # Errors
/// Unsafe (a link, not a regular file, another owner, writable by others),
/// unreadable, damaged, or made by a configuration other than `fit`.
pub fn load(place: &Place, fit: &Fit) -> Result<Option<Loaded>, CheckpointError> {
    let path = &place.path();
    let unusable = |reason: String| CheckpointError::Unusable { path: path.to_path_buf(), reason };
    if !place.dir.exists(&place.name).map_err(|e| unusable(e.to_string()))? {
        return Ok(None);
    }
    // The station's checked open, relative to the directory's descriptor: no
    // link followed, a regular file of this user's (or root's), closed to others.
    let (file, len) =
        place.dir.open_checked(&place.name, shmq::files::Access::Write, MODE).map_err(|e| unusable(e.to_string()))?;
    let mut bytes = Vec::new();
    // The length just checked bounds the read (a file that grows meanwhile is cut there).
    file.take(len).read_to_end(&mut bytes).map_err(|e| unusable(e.to_string()))?;
    decode(path, &bytes, fit).map(Some)
}

/// The checkpoint `bytes` read from `path` ([`load`]).
///
/// # Errors
/// Damaged, or made by a configuration other than `fit`.
fn decode(path: &Path, bytes: &[u8], fit: &Fit) -> Result<Loaded, CheckpointError> {
    let unusable = |reason: String| CheckpointError::Unusable { path: path.to_path_buf(), reason };
    // v4, or v3 (no checksums: read as before; the run's first save writes v4).
    let (mut rest, v4): (&[u8], bool) =
        match (bytes.strip_prefix(MAGIC.as_slice()), bytes.strip_prefix(MAGIC_V3.as_slice())) {
            (Some(encoded), _) => (encoded, true),
            (None, Some(encoded)) => (encoded, false),
            (None, None) => {
                return Err(unusable(
                    "not a cj-app checkpoint of a version this cj-app reads (its first bytes differ)".into(),
                ))
            }
        };
    use bincode::Options as _;
    let options = bincode::DefaultOptions::new().with_fixint_encoding().with_limit(bytes.len() as u64);
    // Frame `n` (from 1) of the rest, or a refusal naming it and its place.
    let (total, mut n) = (bytes.len(), 0);
    let mut cut_at = None;
    let mut next = || {
        n += 1;
        let at = total - rest.len();
        match next_frame(&mut rest, v4) {
            Ok(Next::Frame(frame)) => Ok(Some(frame)),
            Ok(Next::End) => Ok(None),
            Ok(Next::CutBody) => {
                cut_at = Some(at as u64);
                Ok(None)
            }
            Err(d) => Err(format!("damaged (frame {n}, at byte {at}, {d})")),
        }
    };
    let Some(first) = next().map_err(unusable)? else {
        return Err(unusable("damaged (cut short in its first frame)".into()));
    };
    // A frame saved before the export's counters were kept ends where they
    // would begin: decoded as such only when the current form does not fit.
    let body: Body<Accounts> = options.deserialize(first).or_else(|e| {
        let old: OldBody<Accounts> = options.deserialize(first).map_err(|_| unusable(format!("damaged ({e})")))?;
        Ok(Body { fit: old.fit, intake: old.intake, accounts: old.accounts, export: None })
    })?;
    check_fit(path, &body.fit, fit)?;
    let (mut intake, mut accounts, mut export) = (body.intake, body.accounts, body.export);
    // Frames of changes, in order; one cut short by a kill while it was
    // appended was never followed by a release of its slots: ignored.
    while let Some(frame) = next().map_err(unusable)? {
        let changes: Changes<'_> = options.deserialize(frame).or_else(|e| {
            let old: OldChanges<'_> = options.deserialize(frame).map_err(|_| unusable(format!("damaged ({e})")))?;
            Ok(Changes { intake: old.intake, accounts: old.accounts, export: None })
        })?;
        accounts.apply_changes(changes.accounts).map_err(|e| unusable(format!("damaged ({e})")))?;
        intake = changes.intake;
        export = changes.export;
    }
    accounts.clear_changes();
    Ok(Loaded { intake, accounts, export, cut_at })
}

/// Removes the checkpoint (a run that read every queue to its end).
///
/// # Errors
/// It exists and cannot be removed.
pub fn remove(place: &Place) -> Result<(), CheckpointError> {
    match place.dir.remove(&place.name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CheckpointError::Write { path: place.path(), cause: format!("cannot remove it: {e}") }),
    }
}

fn check_fit(path: &Path, saved: &Fit, now: &Fit) -> Result<(), CheckpointError> {
    let misfit = |field: &'static str, saved: String, now: String| {
        Err(CheckpointError::Misfit { path: path.to_path_buf(), field, saved, now })
    };
    if saved.record_layout != now.record_layout {
        return misfit("record layout version", saved.record_layout.to_string(), now.record_layout.to_string());
    }
    if saved.cluster_dir != now.cluster_dir {
        return misfit("cluster directory", saved.cluster_dir.clone(), now.cluster_dir.clone());
    }
    if saved.queue_set != now.queue_set {
        return misfit("CJ_QUEUE_SET", saved.queue_set.to_string(), now.queue_set.to_string());
    }
    if saved.primitives != now.primitives {
        return misfit("aggregate primitives", saved.primitives.to_string(), now.primitives.to_string());
    }
    if saved.fan_out != now.fan_out {
        return misfit("fan-out", saved.fan_out.to_string(), now.fan_out.to_string());
    }
    if saved.max_rows != now.max_rows {
        return misfit("CJ_APP_MAX_ROWS", saved.max_rows.to_string(), now.max_rows.to_string());
    }
    if saved.container_logs != now.container_logs {
        return misfit("container_logs", saved.container_logs.to_string(), now.container_logs.to_string());
    }
    Ok(())
}

/// What this build and configuration need of a checkpoint.
pub fn fit_of(cfg: &station::config::StationConfig, settings: &crate::settings::Settings, fan_out: bool) -> Fit {
    Fit {
        record_layout: RECORD_LAYOUT_VERSION,
        cluster_dir: cfg.cluster_dir().display().to_string(),
        queue_set: cfg.queue_set,
        primitives: settings.primitives,
        fan_out,
        max_rows: cfg.app_max_rows,
        container_logs: settings.container_logs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use station::record::{EndReason, FlowRecord, RecordKind};

    fn fit() -> Fit {
        Fit {
            record_layout: 1,
            cluster_dir: "/dev/shm/conjure-1".into(),
            queue_set: 0,
            primitives: Primitives::default_set(),
            fan_out: false,
            max_rows: 10,
            container_logs: false,
        }
    }

    fn accounts() -> Accounts {
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false);
        let r = FlowRecord {
            kind: RecordKind::Ip as u8,
            ip_version: 4,
            proto: 17,
            end_reason: EndReason::IdleTimeout as u8,
            ..Default::default()
        };
        let mut r = r;
        r.dir[0].packets = 3;
        r.dir[0].ip_bytes = 300;
        r.dir[0].frame_bytes = 342;
        a.add(1, &r);
        a
    }

    /// One whole save, as the first of a run.
    fn save(path: &Path, fit: &Fit, intake: Vec<SavedQueue>, accounts: &Accounts) -> Result<(), CheckpointError> {
        Saver::new(Place::at(path)).save(fit, intake, None, &mut accounts.clone())
    }

    /// The TCP flow from port 1000 + `i` to port 80, `k` packets each way.
    fn flow_record(i: u16, k: u64) -> station::record::FlowRecord {
        crate::aggregate::tests::ip_record(
            [10, 0, 0, 1],
            1000 + i,
            [10, 0, 0, 2],
            80,
            6,
            (k, 40 * k),
            (k, 60 * k),
            EndReason::EndOfFlow,
        )
    }

    /// `n` TCP flows from port 1000 + `from` on, `k` packets each way.
    fn add_flows(a: &mut Accounts, from: u16, n: u16, k: u64) {
        for i in from..from + n {
            a.add(usize::from(i % 2), &flow_record(i, k));
        }
    }

    /// Everything a restart must keep, as text: the flow table's CSV, the totals, the containers.
    fn state(a: &Accounts) -> String {
        format!(
            "{}{:?}{:?}{:?}",
            crate::sinks::csv_text(a.main_table()),
            a.per_queue(),
            a.rows_overflowed(),
            a.containers().rows().collect::<Vec<_>>()
        )
    }

    fn position(n: u64) -> Vec<SavedQueue> {
        vec![SavedQueue { queue: 0, position: n, next_seq: Some(n), stats: Default::default() }]
    }

    /// A v3 checkpoint (the format before the checksums) as the v3 saver
    /// wrote it, built here in memory: the magic, then per save a u64 length
    /// (little-endian) and the bincode encoding, the first save whole, each
    /// later one the changes since the save before.
    struct V3(Vec<u8>);

    impl V3 {
        fn frame(&mut self, body: Vec<u8>) {
            self.0.extend((body.len() as u64).to_le_bytes());
            self.0.extend(body);
        }

        /// The first save of a run.
        fn whole(fit: &Fit, intake: Vec<SavedQueue>, accounts: &mut Accounts) -> V3 {
            accounts.clear_changes();
            let mut v3 = V3(MAGIC_V3.to_vec());
            v3.frame(bincode::serialize(&OldBody { fit: fit.clone(), intake, accounts: &*accounts }).unwrap());
            v3
        }

        /// A later save.
        fn changes(&mut self, intake: Vec<SavedQueue>, accounts: &mut Accounts) {
            self.frame(bincode::serialize(&OldChanges { intake, accounts: accounts.take_changes() }).unwrap());
        }
    }

    /// Flows in and out of a container (per-container flow logs kept), and
    /// plain ones: `n` flows from port 1000 + `from` on, `k` packets each way.
    fn add_mixed(a: &mut Accounts, from: u16, n: u16, k: u64) {
        use station::record::{fixed_text, AttributedBy};
        for i in from..from + n {
            let mut r = flow_record(i, k);
            if i % 3 == 0 {
                r.ctr[0].by = AttributedBy::Interface as u8;
                r.ctr[0].name = fixed_text(if i % 2 == 0 { "web" } else { "db" });
            }
            a.add(usize::from(i % 2), &r);
        }
    }

    #[test]
    fn a_v3_checkpoint_loads_the_accounts_it_holds_and_the_next_save_writes_v4() {
        // V3 wrote the v3 saver's bytes (checked against it while it was the saver).
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let mut a =
            Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000).with_container_logs(true);
        add_mixed(&mut a, 0, 20, 1);
        let mut v3 = V3::whole(&fit, position(20), &mut a);
        let mut lens = vec![v3.0.len()];
        let mut states = vec![state(&a)];
        for (round, n) in [(1u16, 5u16), (2, 7)] {
            add_mixed(&mut a, 10 * round, n, 2);
            v3.changes(position(20 + u64::from(round)), &mut a);
            lens.push(v3.0.len());
            states.push(state(&a));
        }
        put(&p, &v3.0);
        let mut loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!(loaded.intake, position(22));
        assert_eq!(state(&loaded.accounts), states[2]);
        // v3's rule for a frame cut short, as before: cut in its body, or its
        // length still the u64::MAX written first, the save before loads.
        put(&p, &v3.0[..lens[2] - 1]);
        assert_eq!(state(&load(&Place::at(&p), &fit).unwrap().unwrap().accounts), states[1]);
        let mut unfinished = v3.0.clone();
        unfinished[lens[1]..lens[1] + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        put(&p, &unfinished);
        assert_eq!(state(&load(&Place::at(&p), &fit).unwrap().unwrap().accounts), states[1]);
        // The run's first save writes the loaded accounts whole, as v4, and they load back.
        put(&p, &v3.0);
        let mut saver = Saver::new(Place::at(&p));
        saver.save(&fit, loaded.intake.clone(), None, &mut loaded.accounts).unwrap();
        add_mixed(&mut loaded.accounts, 40, 3, 1);
        add_mixed(&mut a, 40, 3, 1);
        saver.save(&fit, position(23), None, &mut loaded.accounts).unwrap();
        let file = std::fs::read(&p).unwrap();
        assert_eq!(&file[..MAGIC.len()], MAGIC, "the next save writes v4");
        let again = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!(again.intake, position(23));
        assert_eq!(state(&again.accounts), state(&a));
    }

    #[test]
    fn the_export_counters_are_kept_and_a_checkpoint_saved_before_they_were_loads_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = fit();
        let mut a = accounts();
        let mut saver = Saver::new(Place::at(&p));
        let first = SavedExport {
            records: 10,
            records_exported: 6,
            records_dropped_behind: 4,
            messages: 3,
            ..Default::default()
        };
        saver.save(&fit, position(10), Some(first), &mut a).unwrap();
        assert_eq!(load(&Place::at(&p), &fit).unwrap().unwrap().export, Some(first));
        // A frame of changes carries them whole.
        add_flows(&mut a, 0, 3, 1);
        let second = SavedExport { records: 30, records_dropped_behind: 24, intake_held_ms: 7, ..first };
        saver.save(&fit, position(20), Some(second), &mut a).unwrap();
        let loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!((loaded.intake, loaded.export), (position(20), Some(second)));
        assert_eq!(state(&loaded.accounts), state(&a));
        // v4 as saved before the counters were kept: each frame ends after the accounts.
        let mut a = accounts();
        a.clear_changes();
        let whole = bincode::serialize(&OldBody { fit: fit.clone(), intake: position(5), accounts: &a }).unwrap();
        add_flows(&mut a, 0, 2, 1);
        let changes = bincode::serialize(&OldChanges { intake: position(6), accounts: a.take_changes() }).unwrap();
        let mut old = MAGIC.to_vec();
        for body in [whole, changes] {
            old.extend(header(body.len() as u64, crc32fast::hash(&body)));
            old.extend(body);
        }
        put(&p, &old);
        let loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!((loaded.intake, loaded.export), (position(6), None));
        assert_eq!(state(&loaded.accounts), state(&a));
    }

    #[test]
    fn the_v3_and_v4_magics_differ_in_more_than_one_bit() {
        let bits: u32 = MAGIC.iter().zip(MAGIC_V3).map(|(a, b)| (a ^ b).count_ones()).sum();
        assert!(bits >= 2, "a flipped bit would make a v4 file v3 (no checksums): {bits} bit(s) apart");
    }

    /// What a save left: the file's length after it, the positions and the state saved.
    struct Saved {
        len: usize,
        intake: Vec<SavedQueue>,
        state: String,
    }

    /// A checkpoint of three saves at `p` (a whole one and two frames of
    /// changes; flows in and out of containers, container flow logs): the
    /// file's bytes, and what each save left.
    fn three_saves(p: &Path, fit: &Fit) -> (Vec<u8>, Vec<Saved>) {
        let mut a =
            Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000).with_container_logs(true);
        let mut saver = Saver::new(Place::at(p));
        let mut saves = Vec::new();
        for (round, (from, n)) in [(0, 6), (4, 4), (2, 3)].into_iter().enumerate() {
            add_mixed(&mut a, from, n, round as u64 + 1);
            let intake = position(100 + round as u64);
            saver.save(fit, intake.clone(), None, &mut a).unwrap();
            let len = std::fs::metadata(p).unwrap().len() as usize;
            saves.push(Saved { len, intake, state: state(&a) });
        }
        (std::fs::read(p).unwrap(), saves)
    }

    /// Writes `bytes` as the checkpoint at `p` (mode 0600, as saved).
    fn put(p: &Path, bytes: &[u8]) {
        std::fs::write(p, bytes).unwrap();
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_checkpoint_is_refused_and_never_loads_as_other_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let (full, saves) = three_saves(&p, &fit);
        let last = saves.last().unwrap();
        let (mut refused, mut unchanged, mut other) = (0, 0, Vec::new());
        // Decoded as `load` decodes the bytes it reads (no file written each time).
        for bit in 0..full.len() * 8 {
            let mut flipped = full.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            match decode(&p, &flipped, &fit) {
                Err(_) => refused += 1,
                Ok(l) if l.intake == last.intake && state(&l.accounts) == last.state => unchanged += 1,
                Ok(_) => other.push(bit),
            }
        }
        let bits = full.len() * 8;
        assert!(
            other.is_empty(),
            "of {bits} flipped bits, {} loaded as other counts (the first: bit {:?}), {unchanged} loaded unchanged, {refused} were refused",
            other.len(),
            other.first()
        );
        assert_eq!(refused, bits, "{unchanged} of {bits} flipped bits loaded unchanged: bytes no checksum covers");
    }

    #[test]
    fn a_whole_frame_whose_length_is_damaged_is_refused_not_taken_for_one_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let (full, saves) = three_saves(&p, &fit);
        // The last frame's length with its top bit set: longer than the file,
        // as a frame cut short by a kill would look without the header's CRC.
        let mut long = full.clone();
        long[saves[1].len + 7] ^= 0x80;
        put(&p, &long);
        let e = load(&Place::at(&p), &fit).unwrap_err().to_string();
        let at = saves[1].len;
        assert!(
            e.contains(&format!("damaged (frame 3, at byte {at}, fails its header checksum); move it away")),
            "{e}"
        );
        // A flipped bit in a row's counters of the same frame.
        let mut counted = full.clone();
        counted[full.len() - 30] ^= 0x01;
        put(&p, &counted);
        let e = load(&Place::at(&p), &fit).unwrap_err().to_string();
        assert!(e.contains("damaged (frame 3, at byte") && e.contains("fails its checksum"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn a_checkpoint_cut_at_any_byte_loads_the_saves_it_holds_whole_or_is_refused_in_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let (full, saves) = three_saves(&p, &fit);
        // Decoded as `load` decodes the bytes it reads (no file written each time).
        for cut in 0..=full.len() {
            // The last save wholly before the cut; none: the cut is in the first frame.
            let want = saves.iter().rev().find(|s| s.len <= cut);
            match (decode(&p, &full[..cut], &fit), want) {
                (Err(_), None) => {}
                (Ok(l), Some(w)) => {
                    assert_eq!(l.intake, w.intake, "cut at {cut} of {}", full.len());
                    assert_eq!(state(&l.accounts), w.state, "cut at {cut} of {}", full.len());
                }
                (Err(e), Some(w)) => panic!("cut at {cut}, after a save that ends at {}: refused ({e})", w.len),
                (Ok(_), None) => panic!("cut at {cut}, inside the first frame (ends at {}): loaded", saves[0].len),
            }
        }
    }

    #[test]
    fn the_frames_checksum_is_crc_32_streamed_in_any_pieces() {
        // The CRC-32 (IEEE, ISO-HDLC) check value of "123456789", from the
        // catalogue of CRCs; a piece as large as the buffer passes unbuffered.
        let mut out = Vec::new();
        let mut summed = Summed::new(&mut out, 4, b"ab");
        for piece in [&b"1"[..], b"23456", b"78", b"9"] {
            std::io::Write::write_all(&mut summed, piece).unwrap();
        }
        assert_eq!(summed.finish().unwrap(), (9, 0xCBF4_3926));
        assert_eq!(out, b"ab123456789", "the start passed on, not summed");
    }

    #[test]
    fn a_streamed_frame_is_its_checked_header_then_the_bincode_encoding_of_the_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false);
        // Rows beyond the frame's buffer: they pass to the file in one summed write.
        add_flows(&mut a, 0, 1000, 2);
        let mut twin = a.clone();
        let mut file = File::create(dir.path().join("f")).unwrap();
        let n = append_frame(&mut file, &Changes { intake: position(300), accounts: a.take_changes(), export: None })
            .unwrap();
        // Against bincode's own encoding of the same changes, whole in memory,
        // and the header spelled out: length, the body's CRC, the CRC of those 12 bytes.
        let body = bincode::serialize(&Changes { intake: position(300), accounts: twin.take_changes(), export: None })
            .unwrap();
        assert!(body.len() > FRAME_BUFFER);
        let mut want = (body.len() as u64).to_le_bytes().to_vec();
        want.extend(crc32fast::hash(&body).to_le_bytes());
        want.extend(crc32fast::hash(&want).to_le_bytes());
        want.extend(body);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), want);
        assert_eq!(n, want.len() as u64);
    }

    #[test]
    fn later_saves_append_only_the_changed_rows_and_load_as_one_whole_save() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, ..fit() };
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000);
        let mut saver = Saver::new(Place::at(&p));
        add_flows(&mut a, 0, 2000, 1);
        saver.save(&fit, position(2000), None, &mut a).unwrap();
        let whole = std::fs::metadata(&p).unwrap().len();
        // Ten new flows and ten more packets of old ones: 40 rows changed of 4020.
        add_flows(&mut a, 2000, 10, 1);
        add_flows(&mut a, 0, 10, 3);
        saver.save(&fit, position(2020), None, &mut a).unwrap();
        let appended = std::fs::metadata(&p).unwrap().len() - whole;
        assert!(appended * 20 < whole, "appended {appended} bytes to a whole save of {whole}");
        let loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!(loaded.intake, position(2020));
        assert_eq!(state(&loaded.accounts), state(&a));
        // The same as a whole save of the same accounts.
        let q = dir.path().join("whole");
        save(&q, &fit, position(2020), &a).unwrap();
        assert_eq!(state(&load(&Place::at(&q), &fit).unwrap().unwrap().accounts), state(&a));
    }

    #[test]
    fn a_frame_cut_short_by_a_kill_is_ignored_and_the_save_before_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, ..fit() };
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000);
        let mut saver = Saver::new(Place::at(&p));
        add_flows(&mut a, 0, 100, 1);
        saver.save(&fit, position(100), None, &mut a).unwrap();
        add_flows(&mut a, 100, 100, 1);
        saver.save(&fit, position(200), None, &mut a).unwrap();
        let at_second = state(&a);
        let second_len = std::fs::metadata(&p).unwrap().len();
        add_flows(&mut a, 0, 50, 2);
        saver.save(&fit, position(250), None, &mut a).unwrap();
        let full = std::fs::read(&p).unwrap();
        // In the header, the header whole and no body, in the body, one byte short.
        for cut in [second_len + 3, second_len + 8, second_len + 16, second_len + 20, full.len() as u64 - 1] {
            std::fs::write(&p, &full[..usize::try_from(cut).unwrap()]).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            let loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
            assert_eq!(loaded.intake, position(200), "cut at {cut}");
            assert_eq!(state(&loaded.accounts), at_second, "cut at {cut}");
            // A right header with its body cut is a cut from outside, and says where;
            // a file ending in a header is what a kill leaves too.
            let cut_body = cut >= second_len + HEADER as u64;
            assert_eq!(loaded.cut_at, cut_body.then_some(second_len), "cut at {cut}");
        }
        // Killed after the last frame's body, before its header replaced the
        // bytes that held its place: that frame is not taken either.
        let mut unfinished = full.clone();
        let at = usize::try_from(second_len).unwrap();
        unfinished[at..at + HEADER].copy_from_slice(&UNFINISHED);
        std::fs::write(&p, &unfinished).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!(loaded.intake, position(200));
        assert_eq!(state(&loaded.accounts), at_second);
        assert_eq!(loaded.cut_at, None, "a kill's shape is not a cut");
        // The file as written loads the last save.
        std::fs::write(&p, &full).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let loaded = load(&Place::at(&p), &fit).unwrap().unwrap();
        assert_eq!((loaded.intake, loaded.cut_at), (position(250), None));
    }

    #[test]
    fn rows_changed_again_and_again_make_a_whole_save_before_the_file_outgrows_three_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, ..fit() };
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000);
        let mut saver = Saver::new(Place::at(&p));
        add_flows(&mut a, 0, 5000, 1);
        saver.save(&fit, position(5000), None, &mut a).unwrap();
        let whole = std::fs::metadata(&p).unwrap().len();
        let mut largest = 0;
        for round in 0..20 {
            add_flows(&mut a, 0, 5000, 1);
            saver.save(&fit, position(10_000 + round), None, &mut a).unwrap();
            largest = largest.max(std::fs::metadata(&p).unwrap().len());
        }
        assert!(largest <= 3 * whole + 3 * 4096 * 90, "{largest} bytes for a table of {whole}");
        assert_eq!(state(&load(&Place::at(&p), &fit).unwrap().unwrap().accounts), state(&a));
    }

    #[test]
    fn container_flow_logs_carried_by_every_frame_count_towards_a_whole_save() {
        use crate::aggregate::tests::ip_record;
        use station::record::{fixed_text, AttributedBy};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let mut a =
            Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000).with_container_logs(true);
        let in_container = |i: u16| {
            let mut r =
                ip_record([10, 0, 0, 1], 1000 + i, [10, 0, 0, 2], 80, 6, (1, 40), (1, 60), EndReason::EndOfFlow);
            r.ctr[0].by = AttributedBy::Interface as u8;
            r.ctr[0].name = fixed_text("web");
            r
        };
        for i in 0..3000 {
            a.add(usize::from(i % 2), &in_container(i));
        }
        assert!(a.containers().log_rows() > 0);
        let mut saver = Saver::new(Place::at(&p));
        saver.save(&fit, position(3000), None, &mut a).unwrap();
        let whole = std::fs::metadata(&p).unwrap().len();
        // One changed flow a save: each frame still carries the whole flow log.
        let mut largest = 0;
        for round in 0..20u16 {
            a.add(0, &in_container(round));
            saver.save(&fit, position(3001 + u64::from(round)), None, &mut a).unwrap();
            largest = largest.max(std::fs::metadata(&p).unwrap().len());
        }
        assert!(largest <= 3 * whole + 3 * 4096 * 90, "{largest} bytes for a checkpoint of {whole}");
        assert_eq!(state(&load(&Place::at(&p), &fit).unwrap().unwrap().accounts), state(&a));
    }

    #[test]
    fn a_saved_checkpoint_loads_back_the_same_accounts_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        assert!(load(&Place::at(&p), &fit()).unwrap().is_none());
        let saved = vec![SavedQueue { queue: 0, position: 7, next_seq: Some(7), stats: Default::default() }];
        save(&p, &fit(), saved.clone(), &accounts()).unwrap();
        let got = load(&Place::at(&p), &fit()).unwrap().unwrap();
        assert_eq!(got.intake, saved);
        assert_eq!(got.accounts.per_queue(), accounts().per_queue());
        assert_eq!(got.accounts.main_totals(), accounts().main_totals());
        remove(&Place::at(&p)).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn a_checkpoint_of_another_configuration_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        save(&p, &fit(), Vec::new(), &accounts()).unwrap();
        let e = load(&Place::at(&p), &Fit { max_rows: 11, ..fit() }).unwrap_err();
        assert!(e.to_string().contains("CJ_APP_MAX_ROWS 10, this run has 11"), "{e}");
    }

    #[test]
    fn a_checkpoint_of_the_previous_format_is_refused_with_the_line_that_says_to_move_it_away() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        save(&p, &fit(), Vec::new(), &accounts()).unwrap();
        let mut old = std::fs::read(&p).unwrap();
        old[..MAGIC.len()].copy_from_slice(b"cj-app ckpt v2\n\0");
        std::fs::write(&p, &old).unwrap();
        let e = load(&Place::at(&p), &fit()).unwrap_err().to_string();
        assert!(
            e.contains("not a cj-app checkpoint of a version this cj-app reads") && e.contains("move it away"),
            "{e}"
        );
    }

    #[test]
    fn damaged_truncated_linked_and_shared_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        save(&p, &fit(), Vec::new(), &accounts()).unwrap();
        let good = std::fs::read(&p).unwrap();
        // Every truncation and a flipped length byte: an error, never a panic or a huge allocation.
        for cut in [MAGIC.len() - 1, MAGIC.len(), MAGIC.len() + 3, good.len() - 1] {
            std::fs::write(&p, &good[..cut]).unwrap();
            assert!(load(&Place::at(&p), &fit()).is_err(), "cut at {cut}");
        }
        let mut big = good.clone();
        for b in &mut big[MAGIC.len()..MAGIC.len() + 8] {
            *b = 0xff;
        }
        std::fs::write(&p, &big).unwrap();
        assert!(load(&Place::at(&p), &fit()).is_err());
        // A link is never followed.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, &good).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(load(&Place::at(&p), &fit()).unwrap_err().to_string().contains("symbolic link"));
        std::fs::remove_file(&p).unwrap();
        // Writable by others.
        std::fs::write(&p, &good).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        let e = load(&Place::at(&p), &fit()).unwrap_err().to_string();
        assert!(e.contains("open to every user") && e.contains("(the station's mode is 0600)"), "{e}");
        if nix::unistd::geteuid().is_root() {
            // Another user's: the fix names the checkpoint's own mode, not a queue file's.
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
            let e = load(&Place::at(&p), &fit()).unwrap_err().to_string();
            assert!(e.contains("remove it (the station recreates it, mode 0600)"), "{e}");
        }
    }
}

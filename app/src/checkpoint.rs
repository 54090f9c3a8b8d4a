//! The app's checkpoint: its accounts together with its record-queue read
//! positions, so that a restarted cj-app continues the totals with nothing lost
//! and nothing counted twice (DESIGN.md "Restarts").
//!
//! Guarantees:
//! - cj-app holds the record-queue slots it has read until they are in a
//!   checkpoint: it saves `<out dir>/checkpoint` (the accounts, and per queue
//!   the read position, the expected sequence number and the intake counters)
//!   and only then releases the slots. It saves when a queue has half of its
//!   slots held, when the queues go quiet with records held (at most once a
//!   second), at every refresh (CJ_REFRESH) and when stopped by a signal.
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
//!   layout; a queue re-created or read by someone else since; a damaged or
//!   unsafe file) stops cj-app with a one-line error naming the fix: the totals
//!   it holds are neither overwritten nor silently ignored.
//! - The file is written with mode 0600 and opened with the station's checked
//!   open (`shmq::files::open_checked`: no symbolic link followed, a regular
//!   file of this user or root, nothing for others), and decoded with its own
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
//!   save).
//! - Damage inside a frame's bytes: there is no checksum, so a flipped bit in
//!   a row's counters loads as another count (a review flipped every bit of a
//!   one-flow checkpoint: 86 of 394 loaded); damage that breaks the frames'
//!   structure, and a cut first frame, are refused.
//! - A power loss: the checkpoint is not fsynced, because the record queues
//!   (in memory, under CJ_SHM_DIR) do not survive one either; a checkpoint
//!   whose queues were re-created is refused, as above.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use station::record::RECORD_LAYOUT_VERSION;

use crate::aggregate::{Accounts, AccountsChanges};
use crate::intake::SavedQueue;
use crate::settings::Primitives;

/// The file name, in the output directory.
pub const FILE_NAME: &str = "checkpoint";

/// The file's mode: the accounts are the station's own business.
const MODE: u32 = 0o600;

/// The first bytes of the file: what it is, and the encoding's version.
/// (v2: length-prefixed frames, the first whole, the others changes;
/// v3: compact rows, see aggregate.rs `RowBytes`.)
const MAGIC: &[u8; 16] = b"cj-app ckpt v3\n\0";

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
}

/// Every later frame: what changed since the frame before.
#[derive(Serialize, Deserialize)]
struct Changes<'a> {
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

/// The checkpoint file of an output directory.
pub fn path(out_dir: &Path) -> PathBuf {
    out_dir.join(FILE_NAME)
}

/// Saves checkpoints of one run: the first whole, the next ones as frames
/// of changes appended to it (see the module doc).
#[derive(Debug)]
pub struct Saver {
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
    /// The saver of the checkpoint at `path`; its first save writes it whole.
    pub fn new(path: &Path) -> Self {
        Saver { path: path.to_path_buf(), file: None, len: 0, rows: 0 }
    }

    /// Saves `accounts` and `intake`: appends what changed since the last
    /// save, or writes everything anew (the first save, after a failed one, or
    /// when the frames outgrow the table).
    ///
    /// # Errors
    /// The file cannot be written (the caller decides whether to release
    /// anyway); the next save then writes everything.
    pub fn save(&mut self, fit: &Fit, intake: Vec<SavedQueue>, accounts: &mut Accounts) -> Result<(), CheckpointError> {
        let live = accounts.rows();
        if let Some(mut file) = self.file.take() {
            let changes = accounts.take_changes();
            let rows = changes.rows();
            if self.rows + rows <= 2 * live + SLACK_ROWS {
                return match append_frame(&mut file, &Changes { intake, accounts: changes }) {
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
        let mut f =
            crate::sinks::AtomicFile::create_with_mode(&self.path, MODE).map_err(|e| write(e.source.to_string()))?;
        // Streamed (the table is never encoded whole in memory); the frame's
        // length is written at its place once known, before the rename.
        let mut body = Counted { out: &mut f, len: 0 };
        body.out.write_all(MAGIC).and_then(|()| body.out.write_all(&[0; 8])).map_err(|e| write(e.to_string()))?;
        bincode::serialize_into(&mut body, &Body { fit: fit.clone(), intake, accounts: &*accounts })
            .map_err(|e| write(e.to_string()))?;
        let len = body.len;
        f.write_at(MAGIC.len() as u64, &len.to_le_bytes()).map_err(|e| write(e.to_string()))?;
        // Not fsynced: a power loss also loses the record queues (in memory), so a
        // synced checkpoint could not be continued anyway; atomic for processes is what counts.
        let file = f.commit_file(false).map_err(|e| write(e.source.to_string()))?;
        self.file = Some(file);
        self.len = MAGIC.len() as u64 + 8 + len;
        self.rows = live;
        Ok(())
    }
}

/// A writer that counts what passes.
struct Counted<'a, W> {
    out: &'a mut W,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.out.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Appends one frame to `file`: its length (u64, little-endian) and its
/// bincode encoding, streamed in one pass (its rows, already encoded, pass to
/// the file in one write); the length is written at its place once known, as
/// [`Saver::save`] does for a whole checkpoint. Until then it reads
/// `u64::MAX`: a frame cut off there is one no load takes ([`next_frame`]).
/// Returns the bytes appended.
///
/// # Errors
/// A write fails (part of the frame may be in the file).
fn append_frame(file: &mut File, body: &impl Serialize) -> std::io::Result<u64> {
    use std::io::Seek as _;
    use std::os::unix::fs::FileExt as _;
    let at = file.stream_position()?;
    let mut out = std::io::BufWriter::with_capacity(FRAME_BUFFER, &mut *file);
    out.write_all(&u64::MAX.to_le_bytes())?;
    let mut counted = Counted { out: &mut out, len: 0 };
    bincode::serialize_into(&mut counted, body).map_err(std::io::Error::other)?;
    let len = counted.len;
    out.flush()?;
    drop(out);
    file.write_all_at(&len.to_le_bytes(), at)?;
    Ok(8 + len)
}

/// The buffer of a frame's small fields ([`append_frame`]).
const FRAME_BUFFER: usize = 64 * 1024;

/// The next frame of `rest`, or `None` when none is left whole (none at all,
/// or one cut short).
fn next_frame<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, body) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    if len > body.len() {
        return None;
    }
    let (frame, tail) = body.split_at(len);
    *rest = tail;
    Some(frame)
}

/// Loads the checkpoint at `path`, or `None` when there is none.
///
/// # Errors
/// Unsafe (a link, not a regular file, another owner, writable by others),
/// unreadable, damaged, or made by a configuration other than `fit`.
pub fn load(path: &Path, fit: &Fit) -> Result<Option<Loaded>, CheckpointError> {
    let unusable = |reason: String| CheckpointError::Unusable { path: path.to_path_buf(), reason };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    // The station's checked open: no link followed, a regular file of this
    // user's (or root's), closed to others.
    let (file, len) =
        shmq::files::open_checked(path, shmq::files::Access::Write).map_err(|e| unusable(e.to_string()))?;
    let mut bytes = Vec::new();
    // The length just checked bounds the read (a file that grows meanwhile is cut there).
    file.take(len).read_to_end(&mut bytes).map_err(|e| unusable(e.to_string()))?;
    let Some(encoded) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(unusable("not a cj-app checkpoint of this version (its first bytes differ)".into()));
    };
    use bincode::Options as _;
    let options = bincode::DefaultOptions::new().with_fixint_encoding().with_limit(len);
    let mut rest = encoded;
    let Some(first) = next_frame(&mut rest) else {
        return Err(unusable("damaged (cut short in its first frame)".into()));
    };
    let body: Body<Accounts> = options.deserialize(first).map_err(|e| unusable(format!("damaged ({e})")))?;
    check_fit(path, &body.fit, fit)?;
    let (mut intake, mut accounts) = (body.intake, body.accounts);
    // Frames of changes, in order; one cut short by a kill while it was
    // appended was never followed by a release of its slots: ignored.
    while let Some(frame) = next_frame(&mut rest) {
        let changes: Changes<'_> = options.deserialize(frame).map_err(|e| unusable(format!("damaged ({e})")))?;
        accounts.apply_changes(changes.accounts).map_err(|e| unusable(format!("damaged ({e})")))?;
        intake = changes.intake;
    }
    accounts.clear_changes();
    Ok(Some(Loaded { intake, accounts }))
}

/// Removes the checkpoint (a run that read every queue to its end).
///
/// # Errors
/// It exists and cannot be removed.
pub fn remove(path: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CheckpointError::Write { path: path.to_path_buf(), cause: format!("cannot remove it: {e}") }),
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
        Saver::new(path).save(fit, intake, &mut accounts.clone())
    }

    /// `n` TCP flows from port 1000 + `from` on, `k` packets each way.
    fn add_flows(a: &mut Accounts, from: u16, n: u16, k: u64) {
        use crate::aggregate::tests::ip_record;
        for i in from..from + n {
            a.add(
                usize::from(i % 2),
                &ip_record(
                    [10, 0, 0, 1],
                    1000 + i,
                    [10, 0, 0, 2],
                    80,
                    6,
                    (k, 40 * k),
                    (k, 60 * k),
                    EndReason::EndOfFlow,
                ),
            );
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

    const MAGIC_V3: &[u8; 16] = b"cj-app ckpt v3\n\0";

    impl V3 {
        fn frame(&mut self, body: Vec<u8>) {
            self.0.extend((body.len() as u64).to_le_bytes());
            self.0.extend(body);
        }

        /// The first save of a run.
        fn whole(fit: &Fit, intake: Vec<SavedQueue>, accounts: &mut Accounts) -> V3 {
            accounts.clear_changes();
            let mut v3 = V3(MAGIC_V3.to_vec());
            v3.frame(bincode::serialize(&Body { fit: fit.clone(), intake, accounts: &*accounts }).unwrap());
            v3
        }

        /// A later save.
        fn changes(&mut self, intake: Vec<SavedQueue>, accounts: &mut Accounts) {
            self.frame(bincode::serialize(&Changes { intake, accounts: accounts.take_changes() }).unwrap());
        }
    }

    /// Flows in and out of a container (per-container flow logs kept), and
    /// plain ones: `n` flows from port 1000 + `from` on, `k` packets each way.
    fn add_mixed(a: &mut Accounts, from: u16, n: u16, k: u64) {
        use crate::aggregate::tests::ip_record;
        use station::record::{fixed_text, AttributedBy};
        for i in from..from + n {
            let mut r = ip_record(
                [10, 0, 0, 1],
                1000 + i,
                [10, 0, 0, 2],
                80,
                6,
                (k, 40 * k),
                (k, 60 * k),
                EndReason::EndOfFlow,
            );
            if i % 3 == 0 {
                r.ctr[0].by = AttributedBy::Interface as u8;
                r.ctr[0].name = fixed_text(if i % 2 == 0 { "web" } else { "db" });
            }
            a.add(usize::from(i % 2), &r);
        }
    }

    #[test]
    fn the_test_v3_encoder_writes_the_bytes_the_v3_saver_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let mut a =
            Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000).with_container_logs(true);
        add_mixed(&mut a, 0, 20, 1);
        let mut b = a.clone();
        let mut saver = Saver::new(&p);
        saver.save(&fit, position(20), &mut a).unwrap();
        let mut v3 = V3::whole(&fit, position(20), &mut b);
        for (round, n) in [(1u16, 5u16), (2, 7)] {
            add_mixed(&mut a, 10 * round, n, 2);
            add_mixed(&mut b, 10 * round, n, 2);
            saver.save(&fit, position(20 + u64::from(round)), &mut a).unwrap();
            v3.changes(position(20 + u64::from(round)), &mut b);
        }
        assert_eq!(std::fs::read(&p).unwrap(), v3.0);
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
        let mut saver = Saver::new(p);
        let mut saves = Vec::new();
        for (round, (from, n)) in [(0, 6), (4, 4), (2, 3)].into_iter().enumerate() {
            add_mixed(&mut a, from, n, round as u64 + 1);
            let intake = position(100 + round as u64);
            saver.save(fit, intake.clone(), &mut a).unwrap();
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
    fn a_checkpoint_cut_at_any_byte_loads_the_saves_it_holds_whole_or_is_refused_in_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let fit = Fit { max_rows: 1_000_000, container_logs: true, ..fit() };
        let (full, saves) = three_saves(&p, &fit);
        for cut in 0..=full.len() {
            put(&p, &full[..cut]);
            // The last save wholly before the cut; none: the cut is in the first frame.
            let want = saves.iter().rev().find(|s| s.len <= cut);
            match (load(&p, &fit), want) {
                (Err(_), None) => {}
                (Ok(Some(l)), Some(w)) => {
                    assert_eq!(l.intake, w.intake, "cut at {cut} of {}", full.len());
                    assert_eq!(state(&l.accounts), w.state, "cut at {cut} of {}", full.len());
                }
                (Err(e), Some(w)) => panic!("cut at {cut}, after a save that ends at {}: refused ({e})", w.len),
                (Ok(_), None) => panic!("cut at {cut}, inside the first frame (ends at {}): loaded", saves[0].len),
                (Ok(None), Some(_)) => panic!("cut at {cut}: no checkpoint found"),
            }
        }
    }

    #[test]
    fn a_streamed_frame_is_its_length_then_the_bincode_encoding_of_the_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false);
        add_flows(&mut a, 0, 300, 2);
        let mut twin = a.clone();
        let mut file = File::create(dir.path().join("f")).unwrap();
        let n = append_frame(&mut file, &Changes { intake: position(300), accounts: a.take_changes() }).unwrap();
        // Against bincode's own encoding of the same changes, whole in memory.
        let body = bincode::serialize(&Changes { intake: position(300), accounts: twin.take_changes() }).unwrap();
        let mut want = (body.len() as u64).to_le_bytes().to_vec();
        want.extend(body);
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), want);
        assert_eq!(n, want.len() as u64);
    }

    #[test]
    fn later_saves_append_only_the_changed_rows_and_load_as_one_whole_save() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let fit = Fit { max_rows: 1_000_000, ..fit() };
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000);
        let mut saver = Saver::new(&p);
        add_flows(&mut a, 0, 2000, 1);
        saver.save(&fit, position(2000), &mut a).unwrap();
        let whole = std::fs::metadata(&p).unwrap().len();
        // Ten new flows and ten more packets of old ones: 40 rows changed of 4020.
        add_flows(&mut a, 2000, 10, 1);
        add_flows(&mut a, 0, 10, 3);
        saver.save(&fit, position(2020), &mut a).unwrap();
        let appended = std::fs::metadata(&p).unwrap().len() - whole;
        assert!(appended * 20 < whole, "appended {appended} bytes to a whole save of {whole}");
        let loaded = load(&p, &fit).unwrap().unwrap();
        assert_eq!(loaded.intake, position(2020));
        assert_eq!(state(&loaded.accounts), state(&a));
        // The same as a whole save of the same accounts.
        let q = dir.path().join("whole");
        save(&q, &fit, position(2020), &a).unwrap();
        assert_eq!(state(&load(&q, &fit).unwrap().unwrap().accounts), state(&a));
    }

    #[test]
    fn a_frame_cut_short_by_a_kill_is_ignored_and_the_save_before_it_loads() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let fit = Fit { max_rows: 1_000_000, ..fit() };
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000);
        let mut saver = Saver::new(&p);
        add_flows(&mut a, 0, 100, 1);
        saver.save(&fit, position(100), &mut a).unwrap();
        add_flows(&mut a, 100, 100, 1);
        saver.save(&fit, position(200), &mut a).unwrap();
        let at_second = state(&a);
        let second_len = std::fs::metadata(&p).unwrap().len();
        add_flows(&mut a, 0, 50, 2);
        saver.save(&fit, position(250), &mut a).unwrap();
        let full = std::fs::read(&p).unwrap();
        for cut in [second_len + 3, second_len + 8, second_len + 20, full.len() as u64 - 1] {
            std::fs::write(&p, &full[..usize::try_from(cut).unwrap()]).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            let loaded = load(&p, &fit).unwrap().unwrap();
            assert_eq!(loaded.intake, position(200), "cut at {cut}");
            assert_eq!(state(&loaded.accounts), at_second, "cut at {cut}");
        }
        // Killed after the last frame's body, before its length replaced the
        // u64::MAX written first: that frame is not taken either.
        let mut unfinished = full.clone();
        let at = usize::try_from(second_len).unwrap();
        unfinished[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &unfinished).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let loaded = load(&p, &fit).unwrap().unwrap();
        assert_eq!(loaded.intake, position(200));
        assert_eq!(state(&loaded.accounts), at_second);
        // The file as written loads the last save.
        std::fs::write(&p, &full).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_eq!(load(&p, &fit).unwrap().unwrap().intake, position(250));
    }

    #[test]
    fn rows_changed_again_and_again_make_a_whole_save_before_the_file_outgrows_three_tables() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let fit = Fit { max_rows: 1_000_000, ..fit() };
        let mut a = Accounts::new(Primitives::default_set(), &[0, 1], false).with_max_rows(1_000_000);
        let mut saver = Saver::new(&p);
        add_flows(&mut a, 0, 5000, 1);
        saver.save(&fit, position(5000), &mut a).unwrap();
        let whole = std::fs::metadata(&p).unwrap().len();
        let mut largest = 0;
        for round in 0..20 {
            add_flows(&mut a, 0, 5000, 1);
            saver.save(&fit, position(10_000 + round), &mut a).unwrap();
            largest = largest.max(std::fs::metadata(&p).unwrap().len());
        }
        assert!(largest <= 3 * whole + 3 * 4096 * 90, "{largest} bytes for a table of {whole}");
        assert_eq!(state(&load(&p, &fit).unwrap().unwrap().accounts), state(&a));
    }

    #[test]
    fn container_flow_logs_carried_by_every_frame_count_towards_a_whole_save() {
        use crate::aggregate::tests::ip_record;
        use station::record::{fixed_text, AttributedBy};
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
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
        let mut saver = Saver::new(&p);
        saver.save(&fit, position(3000), &mut a).unwrap();
        let whole = std::fs::metadata(&p).unwrap().len();
        // One changed flow a save: each frame still carries the whole flow log.
        let mut largest = 0;
        for round in 0..20u16 {
            a.add(0, &in_container(round));
            saver.save(&fit, position(3001 + u64::from(round)), &mut a).unwrap();
            largest = largest.max(std::fs::metadata(&p).unwrap().len());
        }
        assert!(largest <= 3 * whole + 3 * 4096 * 90, "{largest} bytes for a checkpoint of {whole}");
        assert_eq!(state(&load(&p, &fit).unwrap().unwrap().accounts), state(&a));
    }

    #[test]
    fn a_saved_checkpoint_loads_back_the_same_accounts_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert!(load(&p, &fit()).unwrap().is_none());
        let saved = vec![SavedQueue { queue: 0, position: 7, next_seq: Some(7), stats: Default::default() }];
        save(&p, &fit(), saved.clone(), &accounts()).unwrap();
        let got = load(&p, &fit()).unwrap().unwrap();
        assert_eq!(got.intake, saved);
        assert_eq!(got.accounts.per_queue(), accounts().per_queue());
        assert_eq!(got.accounts.main_totals(), accounts().main_totals());
        remove(&p).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn a_checkpoint_of_another_configuration_is_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        save(&p, &fit(), Vec::new(), &accounts()).unwrap();
        let e = load(&p, &Fit { max_rows: 11, ..fit() }).unwrap_err();
        assert!(e.to_string().contains("CJ_APP_MAX_ROWS 10, this run has 11"), "{e}");
    }

    #[test]
    fn a_checkpoint_of_the_previous_format_is_refused_with_the_line_that_says_to_move_it_away() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        save(&p, &fit(), Vec::new(), &accounts()).unwrap();
        let mut old = std::fs::read(&p).unwrap();
        old[..MAGIC.len()].copy_from_slice(b"cj-app ckpt v2\n\0");
        std::fs::write(&p, &old).unwrap();
        let e = load(&p, &fit()).unwrap_err().to_string();
        assert!(e.contains("not a cj-app checkpoint of this version") && e.contains("move it away"), "{e}");
    }

    #[test]
    fn damaged_truncated_linked_and_shared_checkpoints_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        save(&p, &fit(), Vec::new(), &accounts()).unwrap();
        let good = std::fs::read(&p).unwrap();
        // Every truncation and a flipped length byte: an error, never a panic or a huge allocation.
        for cut in [MAGIC.len() - 1, MAGIC.len(), MAGIC.len() + 3, good.len() - 1] {
            std::fs::write(&p, &good[..cut]).unwrap();
            assert!(load(&p, &fit()).is_err(), "cut at {cut}");
        }
        let mut big = good.clone();
        for b in &mut big[MAGIC.len()..MAGIC.len() + 8] {
            *b = 0xff;
        }
        std::fs::write(&p, &big).unwrap();
        assert!(load(&p, &fit()).is_err());
        // A link is never followed.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, &good).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&target, &p).unwrap();
        assert!(load(&p, &fit()).unwrap_err().to_string().contains("symbolic link"));
        std::fs::remove_file(&p).unwrap();
        // Writable by others.
        std::fs::write(&p, &good).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
        assert!(load(&p, &fit()).unwrap_err().to_string().contains("open to every user"));
    }
}

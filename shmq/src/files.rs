//! Files in shared places, hostile until checked: the queue directory, opening
//! queue files and counter pages, and exclusive temporary files.
//!
//! A station runs as root and meets its peers in a world-writable place
//! (`/dev/shm`); anyone may have been there first. So:
//!
//! Guarantees:
//! - [`prepare_dir`] creates the queue directory with mode 0770 (whatever the
//!   umask), or accepts an existing one only if it is a real directory (never a
//!   symbolic link: opened with `O_NOFOLLOW | O_DIRECTORY`), owned by this
//!   process's effective user or by root, and not writable by others; the
//!   check is made on the open descriptor (`fstat`), not on the name.
//! - Queue files and counter pages are opened with `O_NOFOLLOW | O_CLOEXEC |
//!   O_NONBLOCK` and checked on the descriptor before anything is read or
//!   mapped: a regular file (a FIFO, socket or device is refused without
//!   blocking), with no permission for others (`mode & 0o007 == 0`), and for
//!   writers owned by this process's effective user or by root. Read-only
//!   readers (status tools, possibly a non-root member of the station's group)
//!   skip the owner check: they change nothing and bound everything they read.
//! - Readers' group (`CJ_GROUP`, set once per process with [`set_group`]):
//!   the queue directory this process creates, and the queue files and counter
//!   pages it creates, are given that group on the descriptor (`fchown`) before
//!   they are visible under their names, with the same modes 0660 and 0770
//!   plus set-group-ID and the sticky bit on the directory (3770, as
//!   `on-reboot.sh` makes it), so that everything else created there (the
//!   query socket, `sources`, `inventory`) gets the group too, and the group's
//!   members may run `cj-app status` and `cj-app query` without root, but
//!   cannot remove or rename what the station's user made there (without the
//!   sticky bit a member could unlink `app.sock` and bind its own).
//!   With a group set, an existing directory or file whose group grants any
//!   permission must have that group, this process's effective group or root's
//!   group 0: one that lets another group in is refused. The owner must still
//!   be this process's user or root, and others still get nothing.
//! - Every refusal is one [`QueueError::Unsafe`] line naming the path, the
//!   owner's uid, the mode, what is wrong and the fix.
//! - [`prepare_dir`] also judges `CJ_SHM_DIR` (the queue directory's parent)
//!   and every directory above it, by [`DirFd::open_trusted`]'s walk: each is
//!   owned by this process's effective user or root, and writable by its
//!   group or others only when sticky (`/`, `/tmp`, `/dev/shm` pass); a
//!   symbolic link on the way is followed only when owned by this user or
//!   root. So nobody else can rename the queue directory and put a link in
//!   its place between the checks and the opens by name that follow (queue
//!   files, counter pages, the socket). This is the smaller of the two ways
//!   to close that hole: opening every queue file relative to the checked
//!   directory's descriptor would change every opener in the station.
//! - [`DirFd`] holds a directory open: [`DirFd::open_trusted`] reaches it
//!   by the walk above (making missing directories with an explicit mode,
//!   whatever the umask), [`DirFd::subdir`] opens or makes a directory in it
//!   without following a link, [`DirFd::open_checked`] opens a file in it as
//!   [`open_checked`] does, and files are created, renamed and removed
//!   relative to its descriptor (`openat`/`renameat`/`unlinkat`), so the
//!   directory's name swapped for a link later sends nothing elsewhere
//!   (cj-app's output directory).
//! - Every refusal is one [`QueueError::Unsafe`] line naming the path, the
//!   owner's uid, the mode, what is wrong and the fix (the file's own mode,
//!   for a file).
//! - [`write_atomic`] and the streaming [`AtomicFile`] write a file through a
//!   temporary name of this process's own (`.<name>.<pid>.<r>.tmp`, `r` 64
//!   random bits from `getrandom(2)`, so nobody can plant a file or link
//!   under a name ahead; created with `O_CREAT | O_EXCL | O_NOFOLLOW`
//!   relative to the directory's descriptor, another random name tried when
//!   one is taken, at most 16), fsync it and rename it over the target: a
//!   file or symbolic link planted under any name is refused or replaced,
//!   never written through, and no temporary file is left behind on error.
//!   Queue files and counter pages are made under such names too.
//!
//! Not guaranteed: a directory or file that exists already keeps its group
//! ([`set_group`] applies to what this process creates: remove the cluster
//! directory, or `chgrp -R`, after setting `CJ_GROUP`); parents of the queue
//! directory that [`prepare_dir`] creates get the group too but the operator
//! must make `CJ_SHM_DIR` itself searchable by the group. Files are opened by
//! name inside the checked queue directory; since only its owner (or root)
//! and its group can change its entries, and only root and this user can
//! change the directories above it, a name cannot be swapped by others
//! between the check and the open. A member of `CJ_GROUP` may create names
//! in the queue directory: a name it takes is refused (a file of another
//! owner) or skipped (a temporary name), never written through.

use std::ffi::OsString;
use std::fs::{DirBuilder, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::QueueError;

/// Mode of queue directories.
pub const DIR_MODE: u32 = 0o770;
/// Mode of queue files and counter pages.
pub const FILE_MODE: u32 = 0o660;

/// How a queue file or counter page is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read-write, to attach or to create: owner, mode and type are checked.
    Write,
    /// Read-only, for status tools: mode and type are checked, not the owner.
    Read,
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Whether a file's owner is one the station trusts: this process's user or root.
pub fn owned_by_us_or_root(meta: &Metadata) -> bool {
    meta.uid() == euid() || meta.uid() == 0
}

/// No readers' group: [`GROUP`] holds a gid below 2^32 or this.
const NO_GROUP: u64 = u64::MAX;

/// The readers' group of this process ([`set_group`]).
static GROUP: AtomicU64 = AtomicU64::new(NO_GROUP);

/// Sets the readers' group (`CJ_GROUP`, resolved to a gid by the station's
/// configuration) for the rest of this process: directories, queue files and
/// counter pages created afterwards get this group, and the checks accept an
/// existing one with it (see the module docs). `None` (the default): files get
/// the creating process's group and the group is not checked.
///
/// Call it once at start, before any queue is opened (each station binary does,
/// right after loading its configuration); a later call applies to files
/// created or checked afterwards only.
pub fn set_group(gid: Option<u32>) {
    GROUP.store(gid.map_or(NO_GROUP, u64::from), Ordering::Relaxed);
}

/// The readers' group set with [`set_group`], if any.
pub fn group() -> Option<u32> {
    u32::try_from(GROUP.load(Ordering::Relaxed)).ok()
}

/// Gives the file or directory open as `fd` the readers' group, if one is set
/// (`fchown(fd, -1, gid)`; the owner stays).
fn apply_group(fd: &File, path: &Path) -> Result<(), QueueError> {
    let Some(gid) = group() else { return Ok(()) };
    nix::unistd::fchown(fd.as_raw_fd(), None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
        QueueError::Other(format!(
            "cannot give {} the group CJ_GROUP (gid {gid}): {e} (a non-root station can only use a group it is a \
                 member of: add its user to the group or unset CJ_GROUP)",
            path.display()
        ))
    })
}

/// With a readers' group set, refuses `meta` when its group has permissions and
/// is neither that group, this process's effective group nor root's.
fn check_group(path: &Path, meta: &Metadata, what: &str) -> Result<(), QueueError> {
    let Some(want) = group() else { return Ok(()) };
    let gid = meta.gid();
    let egid = nix::unistd::getegid().as_raw();
    if meta.mode() & 0o070 == 0 || gid == want || gid == egid || gid == 0 {
        return Ok(());
    }
    Err(refuse(
        path,
        meta,
        format!("{what} open to group {gid}, which is neither CJ_GROUP (gid {want}), this process's group (gid {egid}) nor root's"),
        format!("run chgrp {want} {} or remove it (the station creates it with CJ_GROUP)", path.display()),
    ))
}

/// The word for a file type, for messages.
fn type_word(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a regular file"
    }
}

fn refuse(path: &Path, meta: &Metadata, problem: String, fix: String) -> QueueError {
    QueueError::Unsafe { path: path.to_path_buf(), uid: meta.uid(), mode: meta.mode() & 0o7777, problem, fix }
}

/// The refusal for a name that `O_NOFOLLOW`/`O_DIRECTORY` (or the kernel, for
/// sockets) would not open, described from `lstat`; `None` when `lstat` does
/// not explain it (the caller then reports the open error).
fn refuse_by_name(path: &Path, want_dir: bool) -> Option<QueueError> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let t = meta.file_type();
    if t.is_symlink() {
        return Some(refuse(
            path,
            &meta,
            "a symbolic link, and the station never follows a link it finds here".into(),
            "remove it (the station creates what it needs)".into(),
        ));
    }
    let wrong_type = if want_dir { !t.is_dir() } else { !t.is_file() };
    wrong_type.then(|| {
        let want = if want_dir { "a directory" } else { "a regular file" };
        refuse(path, &meta, format!("{}, not {want}", type_word(&meta)), "remove it".into())
    })
}

/// How [`judge_dir`] judges a directory.
#[derive(Clone, Copy, Debug)]
enum DirRule<'a> {
    /// The queue directory: its owner is this process's user or root, and
    /// others may not write it at all (its group may: that is `CJ_GROUP`,
    /// checked by [`check_group`]).
    Queue,
    /// A directory the station writes in or passes through (`CJ_SHM_DIR` and
    /// the directories above it, the app's `--out` and the directories it
    /// makes under it): its owner is this process's user or root, and its group
    /// and others may write it only when it is sticky (as `/tmp` and
    /// `/dev/shm` are), because then nobody but root and an entry's owner can
    /// rename or remove that entry: nobody else can swap a name the station
    /// made or passes through for a link to another place.
    Path(&'a Purpose<'a>),
}

/// What a trusted path leads to, for [`DirFd::open_trusted`]'s messages.
#[derive(Clone, Copy, Debug)]
pub struct Purpose<'a> {
    /// The directory at the end, as an operator knows it (`"output directory"`).
    pub what: &'a str,
    /// The other way out, ending the fix (`"or choose an --out only root or cj-app's user can change"`).
    pub choose: &'a str,
    /// Whether the directories on the way are judged too, not only the one at
    /// the end and the links on the way: needed where files are opened by
    /// path later (the queue directory's), not where everything is made
    /// relative to the descriptor the walk returns (the app's `--out`).
    pub ancestors: bool,
}

/// Judges a directory open as `meta` by `rule`: one [`QueueError::Unsafe`]
/// line naming what is wrong and the fix, or `Ok`.
fn judge_dir(dir: &Path, meta: &Metadata, what: &str, rule: DirRule<'_>) -> Result<(), QueueError> {
    let me = euid();
    match rule {
        DirRule::Queue => {
            if !owned_by_us_or_root(meta) {
                return Err(refuse(
                    dir,
                    meta,
                    format!("{what} owned by uid {}, neither this process's user (uid {me}) nor root", meta.uid()),
                    format!("remove it (the station creates it, mode 0770) or chown it to uid {me}"),
                ));
            }
            if meta.mode() & 0o002 != 0 {
                return Err(refuse(
                    dir,
                    meta,
                    format!("{what} writable by every user"),
                    format!("run chmod o-rwx {} (the station's mode is 0770) or remove it", dir.display()),
                ));
            }
            check_group(dir, meta, what)
        }
        DirRule::Path(purpose) => {
            if !owned_by_us_or_root(meta) {
                return Err(refuse(
                    dir,
                    meta,
                    format!(
                        "{what} owned by uid {}, neither this process's user (uid {me}) nor root, so that user could \
                         put a link to another place in it",
                        meta.uid()
                    ),
                    format!("chown it to uid {me} (or root), {}", purpose.choose),
                ));
            }
            let mode = meta.mode();
            let writers = match (mode & 0o020 != 0, mode & 0o002 != 0) {
                _ if mode & 0o1000 != 0 => None,
                (true, true) => Some("its group and every user"),
                (true, false) => Some("its group"),
                (false, true) => Some("every user"),
                (false, false) => None,
            };
            match writers {
                Some(who) => Err(refuse(
                    dir,
                    meta,
                    format!(
                        "{what} writable by {who} without the sticky bit, so they could rename what is in it and \
                         put a link in its place"
                    ),
                    format!("run chmod go-w {} (or chmod +t, as /tmp is), {}", dir.display(), purpose.choose),
                )),
                None => Ok(()),
            }
        }
    }
}

/// Checks the owner and mode of the queue directory open as `meta`.
fn check_dir_meta(dir: &Path, meta: &Metadata) -> Result<(), QueueError> {
    judge_dir(dir, meta, "queue directory", DirRule::Queue)
}

fn open_dir(dir: &Path) -> Result<File, QueueError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => {
                refuse_by_name(dir, true).unwrap_or_else(|| QueueError::io(dir, "open directory", e))
            }
            _ => QueueError::io(dir, "open directory", e),
        })
}

/// What [`prepare_dir`] says of `CJ_SHM_DIR` and the directories above it.
const SHM_PURPOSE: Purpose<'static> = Purpose {
    what: "CJ_SHM_DIR (the directory that holds the queue directory)",
    choose: "or set CJ_SHM_DIR to a directory only root or this user can change (/dev/shm is one)",
    ancestors: true,
};

/// Creates the queue directory `dir` (and missing parents) with mode 0770, or
/// checks the one that is already there: a real directory, not a symbolic
/// link, owned by this process's effective user or root, not writable by others
/// (and, with a readers' group set, not open to another group: [`set_group`]).
/// A directory it creates gets the readers' group, if one is set; so do the
/// missing parents it creates (mode 0770, whatever the umask).
/// `CJ_SHM_DIR` (the parent of `dir`) and every directory above it are
/// judged first ([`DirFd::open_trusted`] with every directory on the way):
/// owned by this user or root, writable by group or others only when sticky,
/// no link of another user's on the way; else one line naming it and the fix.
///
/// [`crate::QueueFile::open_or_create`] and [`crate::CounterPage::open_or_create`]
/// call it for their file's directory; other writers into the cluster
/// directory should call it before writing there.
///
/// # Errors
/// [`QueueError::Unsafe`] for a directory that fails the checks (one line with
/// the path, owner, mode and fix), [`QueueError::Io`] when it cannot be created.
pub fn prepare_dir(dir: &Path) -> Result<(), QueueError> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    // CJ_SHM_DIR and every directory above it (missing ones are created,
    // mode 0770): only root and this user may be able to change them, so that
    // nobody else can swap the queue directory's name for a link to another
    // place after the checks below (the queue files are opened by name).
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirFd::open_trusted(parent, Some(DIR_MODE), &SHM_PURPOSE)?;
    }
    let created = match DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(QueueError::io(dir, "create directory", e)),
    };
    let fd = open_dir(dir)?;
    if created {
        apply_group(&fd, dir)?;
        // The umask may have narrowed the mode; set it on the descriptor (fchmod).
        // With a readers' group, set-group-ID too, so that what any process
        // creates in it (the query socket, `sources`, `inventory`) has the group,
        // and sticky, so that the group's members (who may create there) cannot
        // unlink or rename the station's files (`app.sock` replaced by theirs).
        let mode = if group().is_some() { DIR_MODE | 0o3000 } else { DIR_MODE };
        fd.set_permissions(Permissions::from_mode(mode)).map_err(|e| QueueError::io(dir, "chmod", e))?;
    }
    let meta = fd.metadata().map_err(|e| QueueError::io(dir, "stat", e))?;
    check_dir_meta(dir, &meta)
}

/// Checks an existing queue directory as [`prepare_dir`] does, creating nothing.
pub(crate) fn check_dir(dir: &Path) -> Result<(), QueueError> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirFd::open_trusted(parent, None, &SHM_PURPOSE)?;
    }
    let fd = open_dir(dir)?;
    let meta = fd.metadata().map_err(|e| QueueError::io(dir, "stat", e))?;
    check_dir_meta(dir, &meta)
}

/// Opens an existing queue file or counter page without following a symbolic
/// link or blocking, checks it on the descriptor (see the module docs), and
/// returns it with its size.
pub fn open_checked(path: &Path, access: Access) -> Result<(File, u64), QueueError> {
    open_checked_in(None, path, path, access, FILE_MODE)
}

/// As [`open_checked`], for `name` in `dir` (`None`: as a path), shown as
/// `shown` in messages, whose fix names `mode` as the station's mode of it.
fn open_checked_in(
    dir: Option<&DirFd>,
    name: &Path,
    shown: &Path,
    access: Access,
    mode: u32,
) -> Result<(File, u64), QueueError> {
    use nix::fcntl::OFlag;
    let rw = if access == Access::Write { OFlag::O_RDWR } else { OFlag::O_RDONLY };
    let flags = rw | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file =
        open_at(dir.map(AsRawFd::as_raw_fd), name, flags, 0).map(File::from).map_err(|e| match e.raw_os_error() {
            // ELOOP: a symbolic link; ENXIO: a socket (or a FIFO opened for writing).
            Some(libc::ELOOP | libc::ENXIO | libc::EOPNOTSUPP) => {
                refuse_by_name(shown, false).unwrap_or_else(|| QueueError::io(shown, "open", e))
            }
            _ => QueueError::io(shown, "open", e),
        })?;
    let path = shown;
    let meta = file.metadata().map_err(|e| QueueError::io(path, "stat", e))?;
    if !meta.file_type().is_file() {
        return Err(refuse(path, &meta, format!("{}, not a regular file", type_word(&meta)), "remove it".into()));
    }
    let me = euid();
    if access == Access::Write && !owned_by_us_or_root(&meta) {
        return Err(refuse(
            path,
            &meta,
            format!("owned by uid {}, neither this process's user (uid {me}) nor root", meta.uid()),
            format!("remove it (the station recreates it, mode {mode:04o})"),
        ));
    }
    if meta.mode() & 0o007 != 0 {
        return Err(refuse(
            path,
            &meta,
            "open to every user (permission bits for others are set)".into(),
            format!("run chmod o-rwx {} (the station's mode is {mode:04o}) or remove it", path.display()),
        ));
    }
    check_group(path, &meta, "file")?;
    Ok((file, meta.len()))
}

/// `openat(dir, name, flags | O_CLOEXEC, mode)` (`dir` `None`: the current
/// directory, so `name` may be any path).
fn open_at(dir: Option<RawFd>, name: &Path, flags: nix::fcntl::OFlag, mode: u32) -> io::Result<OwnedFd> {
    let mode = nix::sys::stat::Mode::from_bits_truncate(mode);
    let fd = nix::fcntl::openat(dir, name, flags | nix::fcntl::OFlag::O_CLOEXEC, mode)?;
    // SAFETY: openat just returned this descriptor, open and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A directory held open as a descriptor: the files a process makes in it
/// are created, renamed and removed relative to the descriptor
/// (`openat`/`renameat`/`unlinkat`), never by a path that could lead
/// elsewhere once the directory's name or a parent is swapped for a link.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    /// The path it was opened by, for messages.
    path: PathBuf,
}

/// Symbolic links [`DirFd::open_trusted`] follows at most (the kernel's own limit).
const MAX_LINKS: u32 = 40;

impl DirFd {
    /// Opens the directory at `path`, following symbolic links: for a
    /// directory the caller trusts as a path ([`write_atomic`]'s callers).
    ///
    /// # Errors
    /// It cannot be opened as a directory.
    pub fn open(path: &Path) -> io::Result<DirFd> {
        let shown = if path.as_os_str().is_empty() { Path::new(".") } else { path };
        let fd = open_at(None, shown, nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY, 0)?;
        Ok(DirFd { fd, path: path.to_path_buf() })
    }

    /// Opens the directory at `path` by a walk from `/` (a relative `path`
    /// from the current directory's absolute path) that trusts nothing it
    /// finds: the directory at the end (and, with [`Purpose::ancestors`],
    /// every directory on the way) must be owned by this process's user or
    /// root and writable by its group or others only when sticky
    /// (`judge_dir`: `/`, `/tmp` and `/dev/shm` pass), and a symbolic link
    /// on the way is followed only when owned by this user or root (with
    /// `ancestors`, the directory holding it passed already, so nobody else
    /// can replace it; without, another user who could replace it can only
    /// put a link of their own there, which is refused), its target walked
    /// and judged the same way. Every step is
    /// `openat(O_PATH | O_NOFOLLOW)` on the directory before and `fstat`ed,
    /// so what is judged is what is used.
    ///
    /// With `create` (a mode), missing directories are made with that mode
    /// whatever the umask (`mkdirat`, then `fchmod`) and, with a readers'
    /// group set ([`set_group`]), that group.
    ///
    /// # Errors
    /// [`QueueError::Unsafe`] for a directory or link that fails the checks
    /// (one line with the path, owner, mode and fix); [`QueueError::Io`]
    /// for one that cannot be opened or made (`ENOTDIR`: a component is not
    /// a directory).
    pub fn open_trusted(path: &Path, create: Option<u32>, purpose: &Purpose<'_>) -> Result<DirFd, QueueError> {
        use nix::fcntl::OFlag;
        use std::collections::VecDeque;
        use std::path::Component;
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_err(|e| QueueError::io(path, "find the current directory", e))?.join(path)
        };
        let parts = |p: &Path| -> Vec<OsString> {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some(OsString::from("..")),
                    _ => None,
                })
                .collect()
        };
        let ancestor = format!("directory on the way to the {}", purpose.what);
        let root = PathBuf::from("/");
        let open_root = || -> Result<(File, PathBuf), QueueError> {
            let fd = open_at(None, &root, OFlag::O_PATH | OFlag::O_DIRECTORY, 0)
                .map_err(|e| QueueError::io(&root, "open directory", e))?;
            Ok((File::from(fd), root.clone()))
        };
        let judge = |f: &File, shown: &Path, last: bool| -> Result<(), QueueError> {
            let meta = f.metadata().map_err(|e| QueueError::io(shown, "stat", e))?;
            let what = if last { purpose.what } else { ancestor.as_str() };
            judge_dir(shown, &meta, what, DirRule::Path(purpose))
        };
        let mut todo: VecDeque<OsString> = parts(&abs).into();
        let mut stack = vec![open_root()?];
        if purpose.ancestors && !todo.is_empty() {
            judge(&stack[0].0, &root, false)?;
        }
        let mut links = 0;
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                // The parent of a directory this walk entered: judged on the way in.
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let (cur, cur_path) = stack.last().map(|(f, p)| (f, p.clone())).unwrap_or_else(|| unreachable!());
            let shown = cur_path.join(&name);
            let cur_fd = cur.as_raw_fd();
            let step = |made: bool| -> io::Result<File> {
                let flags = if made { OFlag::O_RDONLY | OFlag::O_DIRECTORY } else { OFlag::O_PATH };
                open_at(Some(cur_fd), Path::new(&name), flags | OFlag::O_NOFOLLOW, 0).map(File::from)
            };
            let file = match (step(false), create) {
                (Ok(f), _) => f,
                (Err(e), Some(mode)) if e.kind() == io::ErrorKind::NotFound => {
                    match nix::sys::stat::mkdirat(
                        Some(cur_fd),
                        Path::new(&name),
                        nix::sys::stat::Mode::from_bits_truncate(mode),
                    ) {
                        Ok(()) => {
                            // Ours: the mode whatever the umask, and the readers' group.
                            let f = step(true).map_err(|e| QueueError::io(&shown, "open directory", e))?;
                            apply_group(&f, &shown)?;
                            f.set_permissions(Permissions::from_mode(mode))
                                .map_err(|e| QueueError::io(&shown, "chmod", e))?;
                            f
                        }
                        // Made meanwhile by someone else: judged as found.
                        Err(nix::errno::Errno::EEXIST) => {
                            step(false).map_err(|e| QueueError::io(&shown, "open directory", e))?
                        }
                        Err(e) => return Err(QueueError::io(&shown, "create directory", e.into())),
                    }
                }
                (Err(e), _) => return Err(QueueError::io(&shown, "open directory", e)),
            };
            let meta = file.metadata().map_err(|e| QueueError::io(&shown, "stat", e))?;
            let t = meta.file_type();
            if t.is_dir() {
                if purpose.ancestors && !todo.is_empty() {
                    judge(&file, &shown, false)?;
                }
                stack.push((file, shown));
            } else if t.is_symlink() {
                if !owned_by_us_or_root(&meta) {
                    return Err(refuse(
                        &shown,
                        &meta,
                        format!(
                            "a symbolic link owned by uid {}, neither this process's user (uid {}) nor root, on \
                             the way to the {}",
                            meta.uid(),
                            euid(),
                            purpose.what
                        ),
                        format!("remove it or name the directory it leads to, {}", purpose.choose),
                    ));
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(QueueError::io(&shown, "open directory", io::Error::from_raw_os_error(libc::ELOOP)));
                }
                let target = nix::fcntl::readlinkat(Some(file.as_raw_fd()), "")
                    .map_err(|e| QueueError::io(&shown, "read link", e.into()))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    stack.truncate(1);
                }
                for part in parts(&target).into_iter().rev() {
                    todo.push_front(part);
                }
            } else {
                return Err(QueueError::io(&shown, "open directory", io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
        }
        let (last, last_path) = stack.pop().unwrap_or_else(|| unreachable!());
        judge(&last, &last_path, true)?;
        // A descriptor that can list and write (an O_PATH one cannot).
        let fd = open_at(Some(last.as_raw_fd()), Path::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
            .map_err(|e| QueueError::io(&last_path, "open directory", e))?;
        Ok(DirFd { fd, path: path.to_path_buf() })
    }

    /// The path it was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `name` in this one without following a link
    /// (`O_NOFOLLOW | O_DIRECTORY`), making it when absent with `mode`
    /// whatever the umask (and the readers' group, if one is set), and
    /// judges it as [`DirFd::open_trusted`] does.
    ///
    /// # Errors
    /// It is a link or not a directory, fails the checks, or cannot be made.
    pub fn subdir(&self, name: &str, mode: u32, purpose: &Purpose<'_>) -> Result<DirFd, QueueError> {
        use nix::fcntl::OFlag;
        let shown = self.path.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
        let open = || open_at(Some(self.fd.as_raw_fd()), Path::new(name), flags, 0).map(File::from);
        let refused = |e: io::Error| match e.raw_os_error() {
            Some(libc::ELOOP | libc::ENOTDIR) => {
                refuse_by_name(&shown, true).unwrap_or_else(|| QueueError::io(&shown, "open directory", e))
            }
            _ => QueueError::io(&shown, "open directory", e),
        };
        let file = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match nix::sys::stat::mkdirat(
                    Some(self.fd.as_raw_fd()),
                    name,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                ) {
                    Ok(()) => {
                        let f = open().map_err(refused)?;
                        apply_group(&f, &shown)?;
                        f.set_permissions(Permissions::from_mode(mode))
                            .map_err(|e| QueueError::io(&shown, "chmod", e))?;
                        f
                    }
                    Err(nix::errno::Errno::EEXIST) => open().map_err(refused)?,
                    Err(e) => return Err(QueueError::io(&shown, "create directory", e.into())),
                }
            }
            Err(e) => return Err(refused(e)),
        };
        let meta = file.metadata().map_err(|e| QueueError::io(&shown, "stat", e))?;
        judge_dir(&shown, &meta, purpose.what, DirRule::Path(purpose))?;
        Ok(DirFd { fd: OwnedFd::from(file), path: shown })
    }

    /// [`open_checked`] for the file `name` in this directory, of the
    /// station's mode `mode` (named in the fix of a refusal).
    ///
    /// # Errors
    /// As [`open_checked`].
    pub fn open_checked(&self, name: &str, access: Access, mode: u32) -> Result<(File, u64), QueueError> {
        open_checked_in(Some(self), Path::new(name), &self.path.join(name), access, mode)
    }

    /// Whether `name` exists in this directory (as anything, a link not followed).
    pub fn exists(&self, name: &str) -> io::Result<bool> {
        match nix::sys::stat::fstatat(Some(self.fd.as_raw_fd()), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the name `name` from this directory (`unlinkat`: a link is
    /// removed, never its target).
    ///
    /// # Errors
    /// As `unlinkat(2)` (`NotFound` when absent).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        nix::unistd::unlinkat(Some(self.fd.as_raw_fd()), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(io::Error::from)
    }

    /// A second descriptor of the same directory.
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn try_clone(&self) -> io::Result<DirFd> {
        Ok(DirFd { fd: self.fd.try_clone()?, path: self.path.clone() })
    }

    /// The names of the entries of this directory (`.` and `..` included),
    /// listed relative to the descriptor.
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn names(&self) -> io::Result<Vec<std::ffi::CString>> {
        use nix::fcntl::OFlag;
        let mut list = nix::dir::Dir::openat(
            Some(self.fd.as_raw_fd()),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok(list.iter().flatten().map(|e| e.file_name().to_owned()).collect())
    }

    /// Removes the temporary files (`.<name>.<pid>.<r>.tmp`, `temp_name`)
    /// that a killed process left in this directory: regular files owned by
    /// this process's user whose pid no longer runs. A process killed while it
    /// wrote a file leaves its temporary copy behind, and nothing else ever
    /// removes it (a copy of flows.json can be hundreds of MB). Files of other
    /// users, links, and the files of a process that runs are left alone.
    /// Listed, checked and removed relative to the descriptor. Returns how
    /// many were removed. Not for a directory that a process of another PID
    /// namespace writes in too (its pid means nothing here).
    pub fn remove_stale_temps(&self) -> usize {
        use nix::fcntl::AtFlags;
        let Ok(names) = self.names() else { return 0 };
        let me = euid();
        let mut removed = 0;
        for name in names {
            let Some(pid) = name.to_str().ok().and_then(temp_pid) else { continue };
            // A link is not followed (and not removed).
            let Ok(st) =
                nix::sys::stat::fstatat(Some(self.fd.as_raw_fd()), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
            if !regular || st.st_uid != me || pid <= 0 {
                continue;
            }
            let gone =
                matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
            if gone
                && nix::unistd::unlinkat(
                    Some(self.fd.as_raw_fd()),
                    name.as_c_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                )
                .is_ok()
            {
                removed += 1;
            }
        }
        removed
    }
}

impl AsRawFd for DirFd {
    fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
        self.fd.as_raw_fd()
    }
}

/// Creates a new file exclusively (`O_CREAT | O_EXCL | O_NOFOLLOW`) with
/// `mode` (set on the descriptor, whatever the umask), open for reading and writing.
/// A file of the queue files' mode [`FILE_MODE`] (queue files and counter
/// pages, under their temporary names) first gets the readers' group, if one
/// is set ([`set_group`]); files of other modes (`sources`, `inventory`, the
/// app's outputs, 0644) keep the creator's group, or the directory's when it is
/// set-group-ID.
/// `name` is relative to the directory `dir` (`None`: the current directory,
/// so `name` may be any path).
fn create_exclusive_at(dir: Option<RawFd>, name: &Path, mode: u32) -> io::Result<File> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let file = File::from(open_at(dir, name, flags, mode)?);
    let gid = group().filter(|_| mode == FILE_MODE);
    let grouped = gid.map_or(Ok(()), |gid| {
        nix::unistd::fchown(file.as_raw_fd(), None, Some(nix::unistd::Gid::from_raw(gid))).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "cannot give it the group CJ_GROUP (gid {gid}): {e}; a non-root station can only use a group \
                     it is a member of: add its user to the group or unset CJ_GROUP"
                ),
            )
        })
    });
    // The mode after fchown, which may clear set-id bits.
    if let Err(e) = grouped.and_then(|()| file.set_permissions(Permissions::from_mode(mode))) {
        let _ = nix::unistd::unlinkat(dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(file)
}

/// How many names [`create_temp`] tries before it gives up: each is taken
/// only by a leftover or, against odds of one in 2^64, by someone who
/// guessed it, so a few always suffice; the bound keeps a broken file system
/// from looping.
const TEMP_TRIES: u32 = 16;

/// Creates a temporary file for `target` (a path, or a name in `dir`)
/// exclusively ([`create_exclusive_at`]) under a new [`temp_name`], trying
/// another name when one is taken (`EEXIST`: a leftover or a planted file or
/// link, never written through) up to [`TEMP_TRIES`] times; returns the file
/// and its name (in `dir`, or beside `target`).
pub(crate) fn create_temp(dir: Option<RawFd>, target: &Path, mode: u32) -> io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..TEMP_TRIES {
        let tmp = target.with_file_name(temp_name(target.file_name().unwrap_or_default()));
        match create_exclusive_at(dir, &tmp, mode) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::AlreadyExists.into()))
}

/// This machine's physical memory in bytes (`_SC_PHYS_PAGES * _SC_PAGESIZE`),
/// `None` when the system does not say.
pub(crate) fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system values; it has no pointer arguments.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let (pages, page) = (u64::try_from(pages).ok()?, u64::try_from(page).ok()?);
    pages.checked_mul(page).filter(|&b| b > 0)
}

/// 64 unpredictable bits (`getrandom(2)`); should the kernel not answer, a
/// mix of the time, the pid and a counter (then only unique: [`create_temp`]
/// still never writes through a planted name, and tries another).
fn random_u64() -> u64 {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes that outlive the call; the kernel writes at most 8.
    let got = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if got == 8 {
        return u64::from_ne_bytes(b);
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    now ^ (u64::from(std::process::id()) << 32) ^ FALLBACK.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

/// `.<name>.<pid>.<r>.tmp`: `r` is 16 random hex digits, so no other user can
/// know the name ahead and plant a file or link under it; the pid lets
/// [`DirFd::remove_stale_temps`] find the leftovers of dead processes.
pub(crate) fn temp_name(name: &std::ffi::OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{:016x}.tmp", std::process::id(), random_u64()));
    tmp
}

/// The pid in a temporary name of [`temp_name`]'s form (`.<name>.<pid>.<r>.tmp`,
/// `r` hex digits; the decimal counters of earlier versions are hex digits too).
fn temp_pid(name: &str) -> Option<i32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let mut fields = inner.rsplitn(3, '.');
    let (n, pid, file) = (fields.next()?, fields.next()?, fields.next()?);
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let hex = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(n) && digits(pid) && !file.is_empty()).then(|| pid.parse().ok()).flatten()
}

/// [`DirFd::remove_stale_temps`] of the directory at `dir` (0 when it cannot be opened).
pub fn remove_stale_temps(dir: &Path) -> usize {
    DirFd::open(dir).map_or(0, |d| d.remove_stale_temps())
}

/// Replaces `path` with `contents` atomically and safely in a directory others
/// may write: the bytes go to a new temporary file of this process's own
/// (`.<name>.<pid>.<r>.tmp`, `r` random, `O_CREAT | O_EXCL | O_NOFOLLOW`,
/// `mode`), which is fsynced and renamed over `path` (a rename replaces a
/// symbolic link itself, never its target). The directory must exist.
/// [`AtomicFile`] streams.
///
/// # Errors
/// The temporary file cannot be created (16 random names all taken:
/// `AlreadyExists`), written or synced, or the rename fails; the temporary
/// file is removed in every case.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    // Written whole: no buffer to copy through.
    let mut f = AtomicFile::create_buffered(path, mode, 0)?;
    f.write_all(contents)?;
    f.commit(true).map(drop)
}

/// A file replaced atomically, its contents streamed: written through a
/// buffer of [`AtomicFile::BUFFER`] bytes (a piece of
/// [`AtomicFile::UNBUFFERED_MIN`] or more, with nothing buffered, goes to
/// write(2) as it is) into a temporary file of this
/// process's own beside `path`, then (optionally fsynced and) renamed over
/// `path` by [`AtomicFile::commit`]. Dropped without a commit, the temporary
/// file is removed, whatever was written.
///
/// Guarantees: the temporary name is `.<name>.<pid>.<r>.tmp` (`r`: 64
/// random bits, so no other user can know it ahead), created with
/// `O_CREAT | O_EXCL | O_NOFOLLOW` with exactly `mode`, whatever the umask
/// (set on the descriptor), relative to the directory's descriptor: the
/// kernel creates a new regular file or fails, so a file or symbolic link
/// planted under that name is refused, never written through, and another
/// random name is tried (at most 16 in all) (no check of the owner after the create: only this user or
/// root could change it, and a file system that maps owners, such as NFS with
/// root squashing, would be refused for nothing); a link planted as `path` is
/// replaced by the rename, its target untouched. A reader of `path` sees the
/// old file or the whole new one.
///
/// Pieces of at least [`AtomicFile::DIRECT_MIN`] whole blocks at block
/// boundaries (from an [`AlignedBuf`]) are written directly (`O_DIRECT`) where
/// the file system takes them, the rest through the page cache; the bytes of
/// the file are the same either way. Large files get their blocks allocated
/// ahead (`fallocate`, see the source of `reserve`).
///
/// The file is created, renamed over the target and (uncommitted) removed
/// relative to one descriptor of its directory: [`AtomicFile::create_in`]
/// takes a [`DirFd`] the caller checked; [`AtomicFile::create`] opens the
/// directory of `path` once, following links (a path the caller trusts).
///
/// Not guaranteed: with [`AtomicFile::create`] the directory is trusted as a
/// path when opened (it must exist); without
/// `sync` a power loss may leave an empty or partial file under `path`; a file
/// written directly is not in the page cache afterwards.
#[derive(Debug)]
pub struct AtomicFile {
    /// The directory of both names (the temporary one and the target).
    dir: DirFd,
    /// The target's name in `dir`.
    name: PathBuf,
    /// The target as a path, for messages.
    path: PathBuf,
    /// The temporary file's name in `dir`; empty once renamed (nothing for drop to remove).
    tmp: PathBuf,
    out: Option<io::BufWriter<File>>,
    /// Bytes handed to the writer so far (written or buffered).
    len: u64,
    /// The file's blocks are allocated up to here (see [`AtomicFile::reserve`]).
    reserved: u64,
    /// An allocation was asked for (blocks past the end may be held).
    reserving: bool,
    /// An allocation failed: the writes allocate as they go.
    stopped: bool,
    /// `O_DIRECT` is set on the descriptor now.
    direct: bool,
    /// A direct write or `O_DIRECT` was refused: never again.
    no_direct: bool,
}

impl AtomicFile {
    /// Bytes buffered before a write(2); a larger write goes to the file directly.
    /// At 256 KiB a system call's fixed cost is a few hundredths of its copy's.
    pub const BUFFER: usize = 256 * 1024;

    /// The shortest bytes [`Write::write_all`] hands to write(2) as they are
    /// when nothing is buffered, rather than copying them into the buffer
    /// first (std's `BufWriter` does so only from [`AtomicFile::BUFFER`]
    /// on): a caller's whole piece (the app's last piece of a file, under
    /// 1 MiB) is one write(2) either way, and the copy cost the buffer's
    /// pages their first faults (63 for a 252 KB piece). Half the buffer, so
    /// that smaller writes (the checkpoint's 64 KiB) are still gathered.
    pub const UNBUFFERED_MIN: usize = Self::BUFFER / 2;

    /// The smallest piece written directly (`O_DIRECT`, see
    /// `write_direct` in the source): each direct write is one request the
    /// disk completes before write(2) returns, and below 1 MiB the requests'
    /// own cost shows (710 MB took twice the system time in 256 KiB writes).
    pub const DIRECT_MIN: usize = 1 << 20;

    /// Creates the temporary file beside `path` (whose directory must exist)
    /// with `mode` (see the type's docs), written through a buffer of
    /// [`AtomicFile::BUFFER`] bytes.
    ///
    /// # Errors
    /// The name exists (`AlreadyExists`) or the file cannot be created.
    pub fn create(path: &Path, mode: u32) -> io::Result<Self> {
        Self::create_buffered(path, mode, Self::BUFFER)
    }

    /// Creates the temporary file for `name` in the directory `dir` (open
    /// as a descriptor: the temporary file is created, renamed and removed
    /// relative to it, whatever happens to the directory's name meanwhile),
    /// as [`AtomicFile::create`] does.
    ///
    /// # Errors
    /// As [`AtomicFile::create`].
    pub fn create_in(dir: &DirFd, name: &str, mode: u32) -> io::Result<Self> {
        let shown = dir.path().join(name);
        Self::create_at(dir.try_clone()?, Path::new(name), shown, mode, Self::BUFFER)
    }

    /// As [`AtomicFile::create`], with a buffer of `capacity` bytes (0: every
    /// write goes to the file as it comes, for a caller that writes whole).
    fn create_buffered(path: &Path, mode: u32, capacity: usize) -> io::Result<Self> {
        let dir = DirFd::open(path.parent().unwrap_or(Path::new("")))?;
        let name = Path::new(path.file_name().ok_or(io::ErrorKind::InvalidInput)?);
        Self::create_at(dir, name, path.to_path_buf(), mode, capacity)
    }

    /// The temporary file for `name` in `dir` ([`create_temp`]).
    fn create_at(dir: DirFd, name: &Path, path: PathBuf, mode: u32, capacity: usize) -> io::Result<Self> {
        let (file, tmp) = create_temp(Some(dir.as_raw_fd()), name, mode)?;
        // From here on, drop removes the temporary file.
        let mut this = AtomicFile {
            dir,
            name: name.to_path_buf(),
            path,
            tmp,
            out: None,
            len: 0,
            reserved: 0,
            reserving: false,
            stopped: false,
            direct: false,
            no_direct: false,
        };
        this.out = Some(io::BufWriter::with_capacity(capacity, file));
        Ok(this)
    }

    /// The target as a path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Allocates the file's blocks ahead of bytes about to be written past
    /// what is allocated: `fallocate(FALLOC_FL_KEEP_SIZE)` in steps that double
    /// from 1 MiB up to 64 MiB, once the file is larger than one buffer.
    ///
    /// Why: on ext4 (and XFS) every page written into a hole takes a delayed
    /// block reservation in write(2) and a block allocation at writeback; a
    /// preallocated range skips both (measured on ext4 in 256 KiB writes and
    /// an fsync: 72 MB took a quarter less system time, 355 MB a third). The steps keep
    /// the calls few for any size and the overshoot below half the file;
    /// [`AtomicFile::commit`] gives the blocks past the end back. Small files
    /// never call it. An error (a file system without `fallocate`, or full) is
    /// not reported here: allocation is then left to the writes, which report
    /// a full disk themselves.
    fn reserve(&mut self, upto: u64) {
        const STEP_MIN: u64 = 1 << 20;
        const STEP_MAX: u64 = 64 << 20;
        if self.stopped || upto <= self.reserved || upto <= Self::BUFFER as u64 {
            return;
        }
        let Some(out) = self.out.as_ref() else { return };
        let step = self.reserved.clamp(STEP_MIN, STEP_MAX).max(upto - self.reserved);
        let (Ok(offset), Ok(len)) = (i64::try_from(self.reserved), i64::try_from(step)) else { return };
        self.reserving = true;
        let reserved = nix::fcntl::fallocate(
            out.get_ref().as_raw_fd(),
            nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        );
        // Failed (possibly after allocating part of the range): never again.
        match reserved {
            Ok(()) => self.reserved += step,
            Err(_) => self.stopped = true,
        }
    }

    /// Sets or clears `O_DIRECT` on the descriptor (`fcntl(F_SETFL)`).
    fn set_direct(&mut self, on: bool) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        if self.direct == on {
            return Ok(());
        }
        let out = self.out.as_ref().ok_or(io::ErrorKind::BrokenPipe)?;
        let fd = out.get_ref().as_raw_fd();
        let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
        let flags = if on { flags | OFlag::O_DIRECT } else { flags - OFlag::O_DIRECT };
        fcntl(fd, FcntlArg::F_SETFL(flags))?;
        self.direct = on;
        Ok(())
    }

    /// Writes `buf` straight from its memory to the disk (`O_DIRECT`) when it
    /// can: a piece of at least [`AtomicFile::DIRECT_MIN`] bytes, a whole
    /// number of [`DIRECT_ALIGN`] blocks starting at such a boundary in memory
    /// ([`AlignedBuf`]) and in the file, nothing buffered before it. Returns
    /// how many bytes of `buf` it wrote (0: none); the caller writes the rest
    /// through the page cache.
    ///
    /// Why: a buffered write copies every byte into a page-cache page that is
    /// allocated, charged, written back and reclaimed; for a file of hundreds
    /// of megabytes that the app does not read again, that costs more than the
    /// formatting (measured on ext4 in a VM: 710 MB took 0.25-2.2 s of system
    /// time buffered with an fsync, depending on whether the pages had to be
    /// found first, and 0.08 s direct in 1 MiB writes). The file is then not
    /// in the page cache: its first reader reads it from the disk.
    fn write_direct(&mut self, buf: &[u8]) -> io::Result<usize> {
        let aligned = |v: usize| v.is_multiple_of(DIRECT_ALIGN);
        let buffered = self.out.as_ref().is_none_or(|o| !o.buffer().is_empty());
        if self.no_direct
            || buffered
            || buf.len() < Self::DIRECT_MIN
            || !aligned(buf.len())
            || !aligned(buf.as_ptr() as usize)
            || !self.len.is_multiple_of(DIRECT_ALIGN as u64)
        {
            return Ok(0);
        }
        if self.set_direct(true).is_err() {
            // A file system without direct I/O.
            self.no_direct = true;
            return Ok(0);
        }
        let out = self.out.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        let mut done = 0;
        // Whole blocks at block boundaries only: a short write that ends
        // elsewhere leaves the rest to the page cache.
        while done < buf.len() && aligned(done) {
            match out.get_mut().write(&buf[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A device whose blocks are larger than DIRECT_ALIGN, or a file
                // system that takes the flag but not the write: nothing was
                // written, and the page cache takes this and every later piece.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.no_direct = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Writes `bytes` at `offset` of what was written so far (a length known
    /// only at the end), after handing on what is buffered.
    ///
    /// # Errors
    /// The buffered bytes or these cannot be written.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        self.set_direct(false)?;
        let out = self.out.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
        out.flush()?;
        out.get_ref().write_all_at(bytes, offset)
    }

    /// Hands on what is buffered, gives back blocks allocated past the end,
    /// fsyncs when `sync`, and renames the temporary file over the target.
    /// Returns the file, open for ordinary (not direct) writing at its end (a
    /// caller may append).
    ///
    /// # Errors
    /// Any of these steps fails; the temporary file is then removed.
    pub fn commit(mut self, sync: bool) -> io::Result<File> {
        self.set_direct(false)?;
        let out = self.out.take().ok_or(io::ErrorKind::BrokenPipe)?;
        let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        if self.reserving {
            // Frees the blocks allocated beyond the end (the size is unchanged).
            file.set_len(self.len)?;
        }
        if sync {
            file.sync_all()?;
        }
        let dir = Some(self.dir.as_raw_fd());
        nix::fcntl::renameat(dir, self.tmp.as_path(), dir, self.name.as_path())?;
        self.tmp = PathBuf::new();
        Ok(file)
    }

    /// Whether `O_DIRECT` is set now (tests).
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct
    }
}

impl AtomicFile {
    /// Copies `buf` into the buffer when it fits there (and no direct write
    /// is on): nothing to reserve or write directly until the buffer is
    /// full, so a serializer's small writes (a whole checkpoint's rows, two
    /// each) cost a copy each, not this file's accounting. False: not taken.
    #[inline]
    fn buffered(&mut self, buf: &[u8]) -> io::Result<bool> {
        match self.out.as_mut() {
            Some(out) if !self.direct && buf.len() <= out.capacity() - out.buffer().len() => {
                // Fits: a copy, no write(2).
                out.write_all(buf)?;
                self.len += buf.len() as u64;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buffered(buf)? {
            return Ok(buf.len());
        }
        self.reserve(self.len + buf.len() as u64);
        let direct = self.write_direct(buf)?;
        if direct > 0 {
            self.len += direct as u64;
            return Ok(direct);
        }
        self.set_direct(false)?;
        let n = self.out.as_mut().ok_or(io::ErrorKind::BrokenPipe)?.write(buf)?;
        self.len += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.len() < Self::UNBUFFERED_MIN && self.buffered(buf)? {
            return Ok(());
        }
        self.reserve(self.len + buf.len() as u64);
        let direct = self.write_direct(buf)?;
        self.len += direct as u64;
        if let Some(rest) = buf.get(direct..).filter(|r| !r.is_empty()) {
            self.set_direct(false)?;
            let out = self.out.as_mut().ok_or(io::ErrorKind::BrokenPipe)?;
            if out.buffer().is_empty() && rest.len() >= Self::UNBUFFERED_MIN {
                out.get_mut().write_all(rest)?;
            } else {
                out.write_all(rest)?;
            }
            self.len += rest.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.set_direct(false)?;
        self.out.as_mut().map_or(Ok(()), io::BufWriter::flush)
    }
}

/// The alignment of direct writes, in memory and in the file: the largest
/// logical block size of common disks (a larger one makes the first direct
/// write fail with `EINVAL`, and the file is written through the page cache).
pub const DIRECT_ALIGN: usize = 4096;

/// Zeroed bytes starting at a [`DIRECT_ALIGN`] boundary, a whole number of
/// blocks long: pieces of it that are whole blocks can be written directly
/// ([`AtomicFile`]).
///
/// The bytes are a zeroed vector's (`calloc`: a large one is fresh pages the
/// kernel zeroes as they are first touched, never filled by the process), a
/// block longer than asked, used from its first block boundary.
pub struct AlignedBuf {
    bytes: Vec<u8>,
    /// Where the aligned bytes start in `bytes`.
    start: usize,
    /// Aligned bytes (whole blocks).
    len: usize,
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl AlignedBuf {
    /// At least `len` zeroed bytes (rounded up to whole blocks).
    pub fn new(len: usize) -> Self {
        let len = len.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        if len == 0 {
            return AlignedBuf { bytes: Vec::new(), start: 0, len: 0 };
        }
        let bytes = vec![0u8; len + DIRECT_ALIGN];
        // At most DIRECT_ALIGN - 1 for bytes; should the address not tell,
        // the start stays unaligned and the writes go through the page cache
        // (AtomicFile checks the address), with the same bytes in the file.
        let start = bytes.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        AlignedBuf { bytes, start, len }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// The bytes, to write into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            // Not committed: the buffered tail is dropped unwritten and the file removed.
            if let Some(out) = self.out.take() {
                drop(out.into_parts());
            }
            let _ = nix::unistd::unlinkat(
                Some(self.dir.as_raw_fd()),
                self.tmp.as_path(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Reads up to the first 8 bytes of `file` as a native-endian u64 (0-padded),
/// for error messages about files too short to hold a header.
pub(crate) fn first_word(file: &File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    let _ = file.read_at(&mut b, 0);
    u64::from_ne_bytes(b)
}

#[cfg(test)]
mod stale_temp_tests {
    use super::*;

    #[test]
    fn temporary_files_of_dead_processes_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A pid above any pid_max (2^22): no process has it.
        let dead = ".flows.json.99999999.3.tmp";
        let live = format!(".flows.csv.{}.0.tmp", std::process::id());
        for name in [dead, live.as_str(), "flows.csv", ".notes.tmp", ".flows.json.x.3.tmp"] {
            std::fs::write(d.join(name), b"x").unwrap();
        }
        let target = d.join("kept-target");
        std::fs::write(&target, b"t").unwrap();
        std::os::unix::fs::symlink(&target, d.join(".summary.json.99999998.1.tmp")).unwrap();
        if nix::unistd::geteuid().is_root() {
            // Another user's leftover: not this process's to remove.
            let foreign = d.join(".flows.csv.99999997.2.tmp");
            std::fs::write(&foreign, b"x").unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), None).unwrap();
        }
        assert_eq!(remove_stale_temps(d), 1);
        let mut left: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert!(!left.contains(&dead.to_owned()), "{left:?}");
        for kept in [live.as_str(), "flows.csv", ".notes.tmp", ".flows.json.x.3.tmp", ".summary.json.99999998.1.tmp"] {
            assert!(left.contains(&kept.to_owned()), "{kept} was removed: {left:?}");
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"t");
        assert_eq!(temp_pid(".flows.json.123.4.tmp"), Some(123));
        assert_eq!(temp_pid(".123.4.tmp"), None);
    }
}

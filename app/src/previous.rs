//! The files of a run whose record queues are gone (a reboot, or a queue
//! directory cleared), moved aside so that the new run can start.
//!
//! After a reboot the queue directory under `CJ_SHM_DIR` is new, and the
//! checkpoint in the output directory can never be continued: its queues do
//! not exist any more (`intake::RestoreError::Recreated`). Refusing to start
//! then kept cj-app restarting under systemd until an operator moved the
//! checkpoint away, while the detector waited and a live balancer dropped.
//! The last run's files are the record of what it counted before the reboot:
//! they are kept, not overwritten.
//!
//! Guarantees:
//! - [`set_aside`] moves the checkpoint and every file and directory cj-app
//!   writes in the output directory (`flows.*`, `summary.json`,
//!   `containers.*`, `containers/`, `queue-<q>/`) that exists into a new
//!   directory `previous-<unix seconds>` (`-2`, `-3`, ... when that exists)
//!   made in the output directory as cj-app makes its directories
//!   (`sinks::subdir`), and returns its path.
//! - Everything is done relative to the output directory's descriptor
//!   (`mkdirat`, `renameat`), as every other write of the app
//!   (`shmq::files::DirFd`): a name swapped for a link meanwhile is moved as
//!   a link, never followed.
//! - Nothing else in the output directory is touched, nor an entry of those
//!   names that another user owns (a shared sticky `--out`).
//!
//! Not guaranteed: a file cj-app did not write there is not moved; an
//! operator's tool that reads `flows.csv` sees the new run's first refresh,
//! not the old file, once it is written.

use std::os::unix::io::AsRawFd as _;
use std::path::PathBuf;

use shmq::files::DirFd;

/// What cj-app writes in its output directory, besides the checkpoint.
const OUTPUTS: [&str; 6] =
    ["flows.csv", "flows.json", "summary.json", "containers.csv", "containers.json", "containers"];

/// Moves the last run's checkpoint (`checkpoint`, its name in `out`) and
/// files into a new `previous-<secs>` directory in `out` and returns its path.
///
/// # Errors
/// The directory cannot be made, or a file cannot be moved (what was moved
/// before stays moved; the checkpoint moves first, so a run that starts after
/// a partial move starts from zero and overwrites no checkpoint).
pub fn set_aside(out: &DirFd, checkpoint: &str) -> std::io::Result<PathBuf> {
    let fd = out.as_raw_fd();
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut dir = format!("previous-{secs}");
    let mut n = 1;
    while out.exists(&dir)? {
        if n == 100 {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{dir} exists")));
        }
        n += 1;
        dir = format!("previous-{secs}-{n}");
    }
    // Made as the app makes its directories (mode 0755, or 0750 with CJ_GROUP's
    // group, whatever the umask) and judged as it judges them.
    let made = crate::sinks::subdir(out, &dir).map_err(std::io::Error::other)?;
    let mut names = vec![checkpoint.to_owned()];
    names.extend(OUTPUTS.iter().map(|s| (*s).to_owned()));
    for name in out.names()? {
        let name = name.to_string_lossy().into_owned();
        if name.strip_prefix("queue-").is_some_and(|q| !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit())) {
            names.push(name);
        }
    }
    let me = nix::unistd::geteuid().as_raw();
    for name in names {
        // Only this user's (or root's): in a shared sticky --out another user's
        // file of that name is theirs, and the kernel would refuse to move it.
        let st = match nix::sys::stat::fstatat(Some(fd), name.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if st.st_uid == me || st.st_uid == 0 {
            nix::fcntl::renameat(Some(fd), name.as_str(), Some(made.as_raw_fd()), name.as_str())?;
        }
    }
    Ok(made.path().to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_runs_checkpoint_and_files_move_aside_and_nothing_else_does() {
        let out = tempfile::tempdir().unwrap();
        let o = out.path();
        for f in ["checkpoint", "flows.csv", "flows.json", "summary.json", "notes.txt", "queue-x"] {
            std::fs::write(o.join(f), f).unwrap();
        }
        std::fs::create_dir(o.join("queue-3")).unwrap();
        std::fs::write(o.join("queue-3/flows.csv"), "q3").unwrap();
        std::os::unix::fs::symlink("/nonexistent-victim", o.join("flows.json.link")).unwrap();
        let d = DirFd::open(o).unwrap();
        let dir = set_aside(&d, "checkpoint").unwrap();
        assert!(dir.starts_with(o) && dir.file_name().unwrap().to_string_lossy().starts_with("previous-"));
        for f in ["checkpoint", "flows.csv", "flows.json", "summary.json"] {
            assert_eq!(std::fs::read_to_string(dir.join(f)).unwrap(), f);
            assert!(!o.join(f).exists(), "{f} moved");
        }
        assert_eq!(std::fs::read_to_string(dir.join("queue-3/flows.csv")).unwrap(), "q3");
        assert!(o.join("notes.txt").exists() && o.join("queue-x").exists(), "not cj-app's: left");
        // A second one in the same second gets a directory of its own.
        std::fs::write(o.join("checkpoint"), "again").unwrap();
        let second = set_aside(&d, "checkpoint").unwrap();
        assert_ne!(second, dir);
        assert_eq!(std::fs::read_to_string(second.join("checkpoint")).unwrap(), "again");
    }
}

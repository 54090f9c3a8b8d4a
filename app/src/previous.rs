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
//!   in the output directory, by `rename` (no copy; a symbolic link is moved
//!   as a link, never followed), and returns it.
//! - Nothing else in the output directory is touched.
//!
//! Not guaranteed: a file cj-app did not write there is not moved; an
//! operator's tool that reads `flows.csv` sees the new run's first refresh,
//! not the old file, once it is written.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

/// What cj-app writes in its output directory, besides the checkpoint.
const OUTPUTS: [&str; 6] =
    ["flows.csv", "flows.json", "summary.json", "containers.csv", "containers.json", "containers"];

/// Moves the last run's checkpoint and files into a new `previous-<secs>`
/// directory under `out` and returns it.
///
/// # Errors
/// The directory cannot be created, or a file cannot be moved (what was
/// moved before stays moved; the checkpoint moves first, so a run that starts
/// after a partial move starts from zero and overwrites no checkpoint).
pub fn set_aside(out: &Path, checkpoint: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut dir = out.join(format!("previous-{secs}"));
    let mut n = 1;
    loop {
        // rwxr-xr-x whatever the umask: as readable as the files it holds.
        match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => {
                n += 1;
                dir = out.join(format!("previous-{secs}-{n}"));
            }
            Err(e) => return Err(e),
        }
    }
    let mut names: Vec<String> = OUTPUTS.iter().map(|s| (*s).to_owned()).collect();
    for entry in std::fs::read_dir(out)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.strip_prefix("queue-").is_some_and(|q| !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit())) {
            names.push(name);
        }
    }
    if let Some(name) = checkpoint.file_name() {
        std::fs::rename(checkpoint, dir.join(name))?;
    }
    for name in names {
        let from = out.join(&name);
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, dir.join(&name))?;
        }
    }
    Ok(dir)
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
        let dir = set_aside(o, &o.join("checkpoint")).unwrap();
        assert!(dir.starts_with(o) && dir.file_name().unwrap().to_string_lossy().starts_with("previous-"));
        for f in ["checkpoint", "flows.csv", "flows.json", "summary.json"] {
            assert_eq!(std::fs::read_to_string(dir.join(f)).unwrap(), f);
            assert!(!o.join(f).exists(), "{f} moved");
        }
        assert_eq!(std::fs::read_to_string(dir.join("queue-3/flows.csv")).unwrap(), "q3");
        assert!(o.join("notes.txt").exists() && o.join("queue-x").exists(), "not cj-app's: left");
        // A second one in the same second gets a directory of its own.
        std::fs::write(o.join("checkpoint"), "again").unwrap();
        let second = set_aside(o, &o.join("checkpoint")).unwrap();
        assert_ne!(second, dir);
        assert_eq!(std::fs::read_to_string(second.join("checkpoint")).unwrap(), "again");
    }
}

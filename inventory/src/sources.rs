//! The balancer's source list: which interface each `PacketMeta::source`
//! index names, in the file `<cluster dir>/sources`.
//!
//! Format: one line per interface, `INDEX NAME`, written atomically (a
//! temporary file renamed over the old one, mode 0640) by the balancer at
//! start and on every change of its capture. For `CJ_IFACE=IF1,IF2` the index
//! is the position in the list, which the detector knows from the same
//! variable. For `CJ_IFACE=containers` the indices are the detector's
//! ([`crate::capture`]), and this file is the balancer's word on what it
//! captures: an index it no longer lists has had its last frames put in the
//! packet queues, which is when the detector may start to drain it.
//! Read with the checked open, at most [`crate::capture::MAX_FILE`] bytes, and
//! trusted only when root or the reading process's user owns it (a file a
//! `CJ_GROUP` member made there is refused, never read).

use std::io;
use std::path::{Path, PathBuf};

/// `<cluster dir>/sources`.
pub fn sources_path(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("sources")
}

/// Writes the list atomically (`shmq::files::write_atomic`: a planted file or
/// link is never written through) into the checked cluster directory.
///
/// # Errors
/// The file cannot be written or renamed.
pub fn write_sources(cluster_dir: &Path, list: &[(u8, String)]) -> io::Result<()> {
    shmq::prepare_dir(cluster_dir).map_err(io::Error::other)?;
    let mut text = String::new();
    for (i, name) in list {
        text.push_str(&format!("{i} {name}\n"));
    }
    shmq::files::write_atomic(&sources_path(cluster_dir), text.as_bytes(), crate::capture::LIST_MODE)
}

/// Reads the list; `Ok(None)` when there is no file.
///
/// # Errors
/// The file is refused by the checked open or by its owner (only root's or
/// this process's user's is trusted), too large, or unreadable.
pub fn read_sources(cluster_dir: &Path) -> io::Result<Option<Vec<(u8, String)>>> {
    let Some(text) = crate::capture::read_list_file(&sources_path(cluster_dir), "the balancer")? else {
        return Ok(None);
    };
    Ok(Some(text.lines().filter_map(crate::capture::parse_line).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_sources(d.path()).unwrap().is_none());
        write_sources(d.path(), &[(0, "veth0".into()), (7, "vethab".into())]).unwrap();
        assert_eq!(read_sources(d.path()).unwrap().unwrap(), vec![(0, "veth0".into()), (7, "vethab".into())]);
    }

    #[test]
    fn a_planted_symlink_is_replaced_never_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, sources_path(d.path())).unwrap();
        write_sources(d.path(), &[(0, "veth0".into())]).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(sources_path(d.path())).unwrap().file_type().is_symlink());
        assert_eq!(read_sources(d.path()).unwrap().unwrap(), vec![(0, "veth0".into())]);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

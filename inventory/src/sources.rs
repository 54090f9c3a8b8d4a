//! The balancer's source list: which interface each `PacketMeta::source`
//! index names, in the file `<cluster dir>/sources`.
//!
//! Format: one line per interface, `INDEX NAME`, written atomically (a
//! temporary file renamed over the old one) by the balancer at start and on
//! every change of a `containers` capture. Indices are never reused for
//! another interface while the balancer runs, so a record keeps naming the
//! interface that saw its frames. The detector reads the file when it
//! changes; when it is missing, it falls back to the order of `CJ_IFACE`.

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
    shmq::files::write_atomic(&sources_path(cluster_dir), text.as_bytes(), 0o644)
}

/// Reads the list; `None` when there is no file.
pub fn read_sources(cluster_dir: &Path) -> Option<Vec<(u8, String)>> {
    let text = std::fs::read_to_string(sources_path(cluster_dir)).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let (i, n) = l.split_once(' ')?;
                Some((i.parse().ok()?, n.trim().to_owned()))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        assert!(read_sources(d.path()).is_none());
        write_sources(d.path(), &[(0, "veth0".into()), (7, "vethab".into())]).unwrap();
        assert_eq!(read_sources(d.path()).unwrap(), vec![(0, "veth0".into()), (7, "vethab".into())]);
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
        assert_eq!(read_sources(d.path()).unwrap(), vec![(0, "veth0".into())]);
        // No temporary file is left behind.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}

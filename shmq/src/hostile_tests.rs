//! Unit tests with hostile files: what another local user could plant in the
//! shared directory (symbolic links, FIFOs, files open to everyone or owned by
//! someone else, huge sparse files, crafted headers) is refused with one line
//! naming the path, the owner, the mode and the fix, before anything is mapped.

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::files::{write_atomic, AtomicFile};
use crate::header::offsets;
use crate::*;

fn spec(slot_size: u32, capacity: u32) -> QueueSpec {
    QueueSpec { slot_size, capacity }
}

/// A private directory on tmpfs (where queues live in production) when there
/// is one, so memory measurements see what a populated mapping would cost.
fn shm_tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap()
}

/// (temp dir, cluster directory inside it (not created), queue path in it).
fn cluster() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = shm_tempdir();
    let dir = d.path().join("conjure-1");
    let q = dir.join("pkt-0-0");
    (d, dir, q)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

/// Asserts `e` is an `Unsafe` refusal of `path` whose one line says `words`.
fn assert_refused(e: &QueueError, path: &Path, words: &[&str]) {
    assert!(matches!(e, QueueError::Unsafe { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.contains(&path.display().to_string()), "names the path: {msg}");
    assert!(msg.contains("owner uid") && msg.contains("mode "), "names owner and mode: {msg}");
    for w in words {
        assert!(msg.contains(w), "says {w:?}: {msg}");
    }
}

/// Resident memory of this process in KiB (`VmRSS` in /proc/self/status).
fn vm_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs `f` on another thread and fails the test if it takes over 10 s
/// (instead of hanging the whole test run on a blocking open).
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("blocked for 10 s")
}

#[test]
fn a_symlinked_queue_file_is_refused_and_its_target_untouched() {
    let (d, dir, q) = cluster();
    // The link points at a valid queue elsewhere, which a naive open would use.
    let elsewhere = d.path().join("elsewhere/pkt");
    QueueFile::open_or_create(&elsewhere, spec(64, 16)).unwrap();
    let before = fs::read(&elsewhere).unwrap();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    std::os::unix::fs::symlink(&elsewhere, &q).unwrap();
    for e in [
        QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(),
        QueueFile::open_existing(&q).unwrap_err(),
        QueueFile::read_stats(&q).unwrap_err(),
    ] {
        assert_refused(&e, &q, &["symbolic link", "remove it"]);
    }
    let page = dir.join("stats-balancer");
    std::os::unix::fs::symlink(&elsewhere, &page).unwrap();
    assert_refused(&CounterPage::open_or_create(&page, &["a"]).unwrap_err(), &page, &["symbolic link"]);
    assert_refused(&CounterPage::read(&page).unwrap_err(), &page, &["symbolic link"]);
    assert_eq!(fs::read(&elsewhere).unwrap(), before, "the link's target is untouched");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let (_d, dir, q) = cluster();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    let page = dir.join("stats-worker-0");
    for p in [&q, &page] {
        nix::unistd::mkfifo(p.as_path(), nix::sys::stat::Mode::from_bits_truncate(0o660)).unwrap();
    }
    let (q2, page2) = (q.clone(), page.clone());
    let errors = within_10s(move || {
        [
            QueueFile::read_stats(&q2).unwrap_err(),
            QueueFile::open_existing(&q2).unwrap_err(),
            QueueFile::open_or_create(&q2, spec(64, 16)).unwrap_err(),
            CounterPage::read(&page2).unwrap_err(),
            CounterPage::open_or_create(&page2, &["a"]).unwrap_err(),
        ]
    });
    for (i, e) in errors.iter().enumerate() {
        let path = if i < 3 { &q } else { &page };
        assert_refused(e, path, &["a FIFO, not a regular file", "remove it"]);
    }
}

#[test]
fn a_queue_file_open_to_other_users_is_refused() {
    let (_d, _dir, q) = cluster();
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    for mode in [0o664, 0o666, 0o661] {
        chmod(&q, mode);
        for e in [
            QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(),
            QueueFile::open_existing(&q).unwrap_err(),
            QueueFile::read_stats(&q).unwrap_err(),
        ] {
            assert_refused(&e, &q, &["open to every user", "chmod o-rwx", &format!("mode {mode:04o}")]);
        }
    }
    chmod(&q, 0o660);
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    let page = q.with_file_name("stats-balancer");
    CounterPage::open_or_create(&page, &["a"]).unwrap();
    chmod(&page, 0o644);
    assert_refused(&CounterPage::open_or_create(&page, &["a"]).unwrap_err(), &page, &["every user"]);
    assert_refused(&CounterPage::read(&page).unwrap_err(), &page, &["every user"]);
}

#[test]
fn a_queue_file_owned_by_another_user_is_refused_to_writers_only() {
    if !is_root() {
        eprintln!("SKIPPED: a_queue_file_owned_by_another_user_is_refused_to_writers_only needs root (chown)");
        return;
    }
    let (_d, _dir, q) = cluster();
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    let page = q.with_file_name("stats-balancer");
    CounterPage::open_or_create(&page, &["a"]).unwrap();
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    for p in [&q, &page] {
        nix::unistd::chown(p.as_path(), nobody, None).unwrap();
    }
    for e in [QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(), QueueFile::open_existing(&q).unwrap_err()] {
        assert_refused(&e, &q, &["owned by uid 65534", "owner uid 65534", "remove it"]);
    }
    let e = CounterPage::open_or_create(&page, &["a"]).unwrap_err();
    assert_refused(&e, &page, &["owned by uid 65534"]);
    // A read-only status reader may be another user (a member of the group).
    assert_eq!(QueueFile::read_stats(&q).unwrap().0, spec(64, 16));
    assert_eq!(CounterPage::read(&page).unwrap(), vec![("a".to_string(), 0)]);
}

#[test]
fn a_cluster_directory_writable_by_others_is_refused_and_left_empty() {
    let (_d, dir, q) = cluster();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let e = QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err();
    assert_refused(&e, &dir, &["queue directory writable by every user", "mode 0777", "chmod o-rwx"]);
    let e = CounterPage::open_or_create(&dir.join("stats-balancer"), &["a"]).unwrap_err();
    assert_refused(&e, &dir, &["writable by every user"]);
    assert_refused(&QueueFile::open_existing(&q).unwrap_err(), &dir, &["writable by every user"]);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "nothing created in it");
    // Mode 1777 (sticky, like /dev/shm itself) is still writable by others.
    chmod(&dir, 0o1777);
    assert_refused(&QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(), &dir, &["mode 1777"]);
    chmod(&dir, 0o770);
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
}

#[test]
fn a_cluster_directory_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("SKIPPED: a_cluster_directory_owned_by_another_user_is_refused needs root (chown)");
        return;
    }
    let (_d, dir, q) = cluster();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    nix::unistd::chown(dir.as_path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let e = QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err();
    assert_refused(&e, &dir, &["owned by uid 65534", "owner uid 65534", "mode 0770", "remove it", "chown it to uid 0"]);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn a_symlinked_cluster_directory_is_refused() {
    let (d, dir, q) = cluster();
    let target = d.path().join("elsewhere");
    fs::create_dir(&target).unwrap();
    chmod(&target, 0o770);
    std::os::unix::fs::symlink(&target, &dir).unwrap();
    for e in [
        QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(),
        QueueFile::open_existing(&q).unwrap_err(),
        CounterPage::open_or_create(&dir.join("stats-balancer"), &["a"]).unwrap_err(),
    ] {
        assert_refused(&e, &dir, &["symbolic link"]);
    }
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "nothing created in the link's target");
    // A plain file where the directory should be is refused as well.
    fs::remove_file(&dir).unwrap();
    fs::write(&dir, b"").unwrap();
    assert_refused(
        &QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(),
        &dir,
        &["a regular file, not a directory"],
    );
}

#[test]
fn the_cluster_directory_is_created_0770_whatever_the_umask() {
    let (_d, dir, q) = cluster();
    prepare_dir(&dir).unwrap();
    prepare_dir(&dir).unwrap();
    let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, DIR_MODE);
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    assert_eq!(fs::metadata(&q).unwrap().permissions().mode() & 0o7777, FILE_MODE);
}

#[test]
fn a_file_of_the_wrong_size_is_refused() {
    let (_d, _dir, q) = cluster();
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    let f = OpenOptions::new().write(true).open(&q).unwrap();
    f.set_len(spec(64, 16).file_size() + 4096).unwrap();
    for e in [QueueFile::open_existing(&q).unwrap_err(), QueueFile::read_stats(&q).unwrap_err()] {
        assert!(matches!(e, QueueError::SizeMismatch { expected: 5120, actual: 9216, .. }), "{e}");
        assert!(!e.to_string().contains('\n'));
    }
}

#[test]
fn a_sparse_gigabyte_file_is_refused_without_using_memory() {
    const GIB: u64 = 1 << 30;
    let (_d, dir, q) = cluster();
    prepare_dir(&dir).unwrap();
    let before = vm_rss_kib();
    let plant = |header: &[u8], len: u64| {
        let _ = fs::remove_file(&q);
        let f = OpenOptions::new().write(true).create_new(true).open(&q).unwrap();
        chmod(&q, 0o660);
        f.set_len(len).unwrap();
        f.write_all_at(header, 0).unwrap();
    };
    // All zeros: not a queue.
    plant(&[], GIB);
    for e in [QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(), QueueFile::open_existing(&q).unwrap_err()] {
        assert!(matches!(e, QueueError::NotAQueue { .. }), "{e}");
    }
    // A valid header of a small queue on a huge file: the size does not match.
    let small = {
        let p = dir.join("small");
        QueueFile::open_or_create(&p, spec(64, 16)).unwrap();
        let mut h = vec![0u8; HEADER_SIZE];
        OpenOptions::new().read(true).open(&p).unwrap().read_exact_at(&mut h, 0).unwrap();
        h
    };
    plant(&small, GIB);
    for e in [
        QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(),
        QueueFile::open_existing(&q).unwrap_err(),
        QueueFile::read_stats(&q).unwrap_err(),
    ] {
        assert!(matches!(e, QueueError::SizeMismatch { expected: 5120, actual: GIB, .. }), "{e}");
    }
    // A consistent gigabyte queue that is not the one asked for.
    let mut big = small.clone();
    big[offsets::SLOT_SIZE..offsets::SLOT_SIZE + 4].copy_from_slice(&65536u32.to_ne_bytes());
    big[offsets::CAPACITY..offsets::CAPACITY + 4].copy_from_slice(&16384u32.to_ne_bytes());
    plant(&big, spec(65536, 16384).file_size());
    let e = QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err();
    assert!(matches!(e, QueueError::SpecMismatch { found_slot_size: 65536, .. }), "{e}");
    // A gigabyte counter page.
    let page = dir.join("stats-balancer");
    let f = OpenOptions::new().write(true).create_new(true).open(&page).unwrap();
    chmod(&page, 0o660);
    f.set_len(GIB).unwrap();
    let mut h = COUNTER_MAGIC.to_ne_bytes().to_vec();
    h.extend(COUNTER_LAYOUT_VERSION.to_ne_bytes());
    h.extend(((GIB - 16) as u32 / 40).to_ne_bytes());
    f.write_all_at(&h, 0).unwrap();
    let e = CounterPage::open_or_create(&page, &["a"]).unwrap_err();
    assert!(matches!(&e, QueueError::Corrupt { what, .. } if what.contains("more than 1024")), "{e}");
    let grown = vm_rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "resident memory grew by {grown} KiB");
}

#[test]
fn indices_further_apart_than_the_capacity_are_refused() {
    let (_d, _dir, q) = cluster();
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    let f = OpenOptions::new().write(true).open(&q).unwrap();
    let set_tail = |t: u64| f.write_all_at(&t.to_ne_bytes(), offsets::TAIL as u64).unwrap();
    for tail in [1u64 << 40, 17] {
        set_tail(tail);
        for e in [
            QueueFile::open_or_create(&q, spec(64, 16)).unwrap_err(),
            QueueFile::open_existing(&q).unwrap_err(),
            QueueFile::read_stats(&q).unwrap_err(),
        ] {
            assert!(matches!(e, QueueError::Corrupt { .. }), "{e}");
            let msg = e.to_string();
            assert!(msg.contains("more than the capacity 16") && msg.contains("remove the stale file"), "{msg}");
        }
    }
    // Exactly full is valid.
    set_tail(16);
    QueueFile::open_existing(&q).unwrap();
}

#[test]
fn a_spec_larger_than_physical_memory_is_refused_with_the_figure() {
    let (_d, dir, q) = cluster();
    let huge = spec(65536, 1 << 24); // 1 TiB, within CJ_SLOT_SIZE and CJ_QUEUE_SLOTS ranges
    let physical = crate::files::physical_memory().expect("physical memory");
    if physical >= huge.file_size() {
        eprintln!("SKIPPED: this machine has {physical} bytes of memory, more than 1 TiB");
        return;
    }
    let e = QueueFile::open_or_create(&q, huge).unwrap_err();
    assert!(
        matches!(e, QueueError::TooBigForMemory { bytes, physical: p, .. } if bytes == huge.file_size() && p == physical),
        "{e}"
    );
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(&huge.file_size().to_string()) && msg.contains(&physical.to_string()), "{msg}");
    assert!(msg.contains("1024.0 GiB") && msg.contains("CJ_QUEUE_SLOTS"), "{msg}");
    assert!(!dir.exists(), "nothing was created");
}

#[test]
fn a_counter_page_with_a_huge_count_is_refused() {
    let (_d, _dir, q) = cluster();
    let page = q.with_file_name("stats-balancer");
    CounterPage::open_or_create(&page, &["a", "b"]).unwrap();
    let f = OpenOptions::new().write(true).open(&page).unwrap();
    f.write_all_at(&u32::MAX.to_ne_bytes(), 12).unwrap();
    for e in [CounterPage::read(&page).unwrap_err(), CounterPage::open_or_create(&page, &["a", "b"]).unwrap_err()] {
        assert!(matches!(&e, QueueError::Corrupt { what, .. } if what.contains("4294967295 counters")), "{e}");
    }
    let names: Vec<String> = (0..1025).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let e = CounterPage::open_or_create(&q.with_file_name("other"), &refs).unwrap_err();
    assert!(matches!(e, QueueError::CounterName { .. }), "{e}");
}

#[test]
fn atomic_writes_never_follow_a_planted_link_and_leave_no_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    let target = d.path().join("sources");
    // Links under the fixed temporary names older versions used.
    for name in [".sources.tmp", ".sources.0.tmp"] {
        std::os::unix::fs::symlink(&victim, d.path().join(name)).unwrap();
    }
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    write_atomic(&target, b"0 eth0\n", 0o644).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(fs::read_to_string(&target).unwrap(), "0 eth0\n");
    let meta = fs::symlink_metadata(&target).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
    let mut names: Vec<String> =
        fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, [".sources.0.tmp", ".sources.tmp", "sources", "victim"]);
    // A failed write (no such directory) leaves nothing behind either.
    assert!(write_atomic(&d.path().join("missing/x"), b"x", 0o644).is_err());
}

/// `len` bytes of a pattern that repeats only every 251 bytes (a prime), so a
/// piece written twice or dropped shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 251 % 26) as u8).collect()
}

#[test]
fn a_streamed_file_appears_whole_at_commit_with_its_mode_and_no_blocks_past_its_end() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("flows.csv");
    // 5 MiB and a bit, in pieces of every size around the buffer's and
    // around the unbuffered one's (after an empty buffer and after a
    // buffered piece): the allocation ahead takes steps of 1, 1, 2 and 4
    // MiB, 8 in all.
    let want = pattern(5 * 1024 * 1024 + 12_345);
    let mut f = AtomicFile::create(&target, 0o600).unwrap();
    let mut rest = &want[..];
    let (buffer, unbuffered) = (AtomicFile::BUFFER, AtomicFile::UNBUFFERED_MIN);
    for size in [1, buffer - 1, buffer + 1, unbuffered, 3 * buffer, 7, unbuffered, unbuffered - 1].iter().cycle() {
        let (piece, tail) = rest.split_at((*size).min(rest.len()));
        f.write_all(piece).unwrap();
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    assert!(!target.exists(), "visible before the commit");
    drop(f.commit(true).unwrap());
    assert!(fs::read(&target).unwrap() == want, "the file differs from what was written");
    let meta = fs::symlink_metadata(&target).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    // The blocks allocated ahead beyond the end were given back (kernel's count of 512-byte blocks).
    let allocated = meta.blocks() * 512;
    assert!(allocated <= meta.len() + 64 * 1024, "{allocated} bytes allocated for a file of {}", meta.len());
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "a temporary file was left");
}

#[test]
fn a_streamed_file_dropped_without_commit_leaves_nothing() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let mut f = AtomicFile::create(&d.path().join("flows.json"), 0o644).unwrap();
    f.write_all(&pattern(3 * AtomicFile::BUFFER)).unwrap();
    drop(f);
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
}

#[test]
fn a_streamed_file_is_written_whatever_links_are_planted_under_guessable_temporary_names() {
    let d = tempfile::tempdir().unwrap();
    let victim = d.path().join("victim");
    fs::write(&victim, "keep").unwrap();
    // Links under every name of the earlier, counted form this process could use.
    for n in 0..256 {
        std::os::unix::fs::symlink(&victim, d.path().join(format!(".out.{}.{n}.tmp", std::process::id()))).unwrap();
    }
    let mut f = AtomicFile::create(&d.path().join("out"), 0o644).unwrap();
    std::io::Write::write_all(&mut f, b"new").unwrap();
    f.commit(false).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
    assert_eq!(fs::read_to_string(d.path().join("out")).unwrap(), "new");
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 258, "the links, the victim and the file, nothing else");
}

#[test]
fn a_temporary_name_is_new_each_time_and_unpredictable() {
    let names: std::collections::HashSet<_> = (0..1000).map(|_| crate::files::temp_name("out".as_ref())).collect();
    assert_eq!(names.len(), 1000);
    let one = crate::files::temp_name("out".as_ref()).into_string().unwrap();
    let r = one.strip_suffix(".tmp").unwrap().rsplit('.').next().unwrap();
    assert_eq!(r.len(), 16, "{one}");
}

#[test]
fn small_writes_between_large_and_direct_ones_land_in_order() {
    use crate::files::{AlignedBuf, DIRECT_ALIGN};
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("checkpoint");
    let want = pattern(3 * AtomicFile::DIRECT_MIN + 5 * DIRECT_ALIGN + 777);
    let mut f = AtomicFile::create(&target, 0o600).unwrap();
    let mut buf = AlignedBuf::new(AtomicFile::DIRECT_MIN);
    let mut rest = &want[..];
    // Pieces of every kind in turn: tiny (copied into the buffer), one past
    // the buffer's room, one of UNBUFFERED_MIN, a whole direct piece from an
    // aligned buffer, through write_all and write alike.
    let sizes = [1, 7, 8, AtomicFile::BUFFER + 3, 40, AtomicFile::UNBUFFERED_MIN, 5, AtomicFile::DIRECT_MIN, 9];
    for (i, &size) in sizes.iter().cycle().enumerate() {
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        if size == AtomicFile::DIRECT_MIN {
            buf.bytes_mut()[..piece.len()].copy_from_slice(piece);
            f.write_all(&buf.bytes()[..piece.len()]).unwrap();
        } else if i % 2 == 0 {
            f.write_all(piece).unwrap();
        } else {
            let mut p = piece;
            while !p.is_empty() {
                let n = f.write(p).unwrap();
                p = &p[n..];
            }
        }
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    f.commit(true).unwrap();
    assert!(fs::read(&target).unwrap() == want, "the file differs from what was written");
}

#[test]
fn aligned_pieces_go_to_the_disk_directly_and_the_committed_file_appends_as_usual() {
    use crate::files::{AlignedBuf, DIRECT_ALIGN};
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    let target = d.path().join("flows.json");
    // Whole blocks only: the last piece is written directly too.
    let want = pattern(4 * AtomicFile::DIRECT_MIN + 2 * DIRECT_ALIGN);
    let mut buf = AlignedBuf::new(AtomicFile::DIRECT_MIN + DIRECT_ALIGN);
    let mut f = AtomicFile::create(&target, 0o644).unwrap();
    let mut direct = false;
    // Whole aligned pieces of two lengths from the smallest direct one, and
    // after the first a length written at the front.
    let mut rest = &want[..];
    for blocks in [AtomicFile::DIRECT_MIN / DIRECT_ALIGN, AtomicFile::DIRECT_MIN / DIRECT_ALIGN + 1].iter().cycle() {
        let n = (blocks * DIRECT_ALIGN).min(rest.len());
        let (piece, tail) = rest.split_at(n);
        buf.bytes_mut()[..n].copy_from_slice(piece);
        f.write_all(&buf.bytes()[..n]).unwrap();
        direct |= f.is_direct();
        if rest.len() == want.len() {
            f.write_at(3, b"LEN").unwrap();
        }
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    // The file system of the temporary directory may not take direct writes
    // (then every piece went through the page cache, as the fallback should).
    let supports = {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new().write(true).create(true).custom_flags(libc::O_DIRECT).open(d.path().join("probe"))
    };
    let _ = fs::remove_file(d.path().join("probe"));
    assert_eq!(direct, supports.is_ok(), "direct writes used: {direct}");
    // The committed file is open for ordinary writes, and takes an append.
    let mut file = f.commit(true).unwrap();
    let flags = nix::fcntl::fcntl(std::os::unix::io::AsRawFd::as_raw_fd(&file), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    assert_eq!(flags & libc::O_DIRECT, 0, "O_DIRECT is still set on the committed file");
    file.write_all(b"appended").unwrap();
    drop(file);
    let mut expect = want.clone();
    expect[3..6].copy_from_slice(b"LEN");
    expect.extend_from_slice(b"appended");
    assert!(fs::read(&target).unwrap() == expect, "the file differs from what was written");
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "a temporary file was left");
}

#[test]
fn a_cj_shm_dir_another_user_owns_or_everyone_may_write_is_refused_and_a_sticky_one_is_not() {
    let d = shm_tempdir();
    let shm = d.path().join("shm");
    fs::create_dir(&shm).unwrap();
    let dir = shm.join("conjure-1");
    chmod(&shm, 0o777);
    let e = prepare_dir(&dir).unwrap_err().to_string();
    assert!(e.starts_with(&format!("refusing {}: CJ_SHM_DIR", shm.display())), "{e}");
    assert!(e.contains("writable by its group and every user without the sticky bit"), "{e}");
    assert!(!dir.exists(), "nothing made in it");
    chmod(&shm, 0o1777);
    prepare_dir(&dir).unwrap();
    if is_root() {
        fs::remove_dir(&dir).unwrap();
        chmod(&shm, 0o755);
        std::os::unix::fs::chown(&shm, Some(65534), None).unwrap();
        let e = prepare_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534, neither this process's user (uid 0) nor root"), "{e}");
        assert!(e.contains("set CJ_SHM_DIR to a directory only root or this user can change"), "{e}");
        assert!(!dir.exists(), "nothing made in it");
    }
}

#[test]
fn a_trusted_path_follows_only_links_of_this_user_or_root() {
    use crate::files::{DirFd, Purpose};
    let purpose = Purpose { what: "output directory", choose: "or choose another", ancestors: true };
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // A link of this user's, in a directory only this user can change: followed.
    fs::create_dir(real.join("sub")).unwrap();
    let fd = DirFd::open_trusted(&link.join("../link/sub/.."), None, &purpose).unwrap();
    assert_eq!(fd.path(), link.join("../link/sub/.."));
    if is_root() {
        nix::unistd::fchownat(
            None,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let e = DirFd::open_trusted(&link, Some(0o755), &purpose).unwrap_err().to_string();
        assert!(e.starts_with(&format!("refusing {}: a symbolic link owned by uid 65534", link.display())), "{e}");
        let e = DirFd::open_trusted(&link.join("made"), Some(0o755), &purpose).unwrap_err().to_string();
        assert!(e.contains("symbolic link owned by uid 65534"), "{e}");
        assert!(!real.join("made").exists(), "nothing made through the link");
    }
    // Missing directories are made with the mode asked, whatever the umask.
    let made = DirFd::open_trusted(&real.join("x/y"), Some(0o750), &purpose).unwrap();
    drop(made);
    assert_eq!(fs::metadata(real.join("x")).unwrap().permissions().mode() & 0o7777, 0o750);
    let file = real.join("f");
    fs::write(&file, "x").unwrap();
    assert!(DirFd::open_trusted(&file, None, &purpose).is_err());
}

#[test]
fn names_a_group_member_plants_under_temporary_names_do_not_stop_a_queue_being_made() {
    let (_d, dir, q) = cluster();
    prepare_dir(&dir).unwrap();
    // Directories (which remove_file cannot remove) under every name of the
    // earlier, counted form this process could use for the queue.
    for n in 0..256 {
        fs::create_dir(dir.join(format!(".pkt-0-0.{}.{n}.tmp", std::process::id()))).unwrap();
    }
    QueueFile::open_or_create(&q, spec(64, 16)).unwrap();
    let left = fs::read_dir(&dir).unwrap().count();
    assert_eq!(left, 257, "the planted names and the queue, no temporary file");
}

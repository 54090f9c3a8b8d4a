//! Unit tests of the queue: ring logic, validation of files, restart semantics,
//! and an in-process threaded stress test with sequence numbers.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::header::offsets;
use crate::*;

fn spec(slot_size: u32, capacity: u32) -> QueueSpec {
    QueueSpec { slot_size, capacity }
}

fn pair(path: &Path, s: QueueSpec) -> (Producer, Consumer) {
    let p = QueueFile::open_or_create(path, s).unwrap().into_producer();
    let c = QueueFile::open_or_create(path, s).unwrap().into_consumer();
    (p, c)
}

fn pop_vec(c: &mut Consumer) -> Option<Vec<u8>> {
    c.pop_with(|m| m.to_vec())
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conjure-1/pkt-0-0");
    (dir, path)
}

/// [`tmp`] on tmpfs (`/dev/shm`, where queues live), for tests of what the
/// file holds (`st_blocks` counts its pages there): without it they fail.
fn shm_tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir_in("/dev/shm")
        .expect("/dev/shm (tmpfs) is needed: these tests measure a queue's pages on it");
    let path = dir.path().join("conjure-1/pkt-0-0");
    (dir, path)
}

#[test]
fn wraparound_keeps_order_and_content() {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(32, 4));
    let mut next_push = 0u64;
    let mut next_pop = 0u64;
    // Batches of 1..=4 through a 4-slot ring: every slot is reused many times.
    for round in 0..1000u64 {
        let batch = round % 4 + 1;
        for _ in 0..batch {
            let len = (next_push % 17) as usize + 8;
            let mut msg = vec![next_push as u8; len];
            msg[..8].copy_from_slice(&next_push.to_le_bytes());
            p.push(&msg).unwrap();
            next_push += 1;
        }
        p.publish();
        while let Some(m) = pop_vec(&mut c) {
            assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), next_pop);
            assert_eq!(m.len(), (next_pop % 17) as usize + 8);
            assert!(m[8..].iter().all(|&b| b == next_pop as u8));
            next_pop += 1;
        }
        c.release();
    }
    assert_eq!(next_pop, next_push);
    assert_eq!(p.position(), next_push);
    assert_eq!(c.position(), next_push);
    let st = c.stats();
    assert_eq!((st.enqueued, st.dequeued, st.dropped), (next_push, next_push, 0));
}

#[test]
fn full_queue_refuses_and_publishes() {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(16, 4));
    assert_eq!(p.free_slots(), 4);
    for i in 0..4u8 {
        p.push(&[i]).unwrap();
    }
    assert_eq!(p.free_slots(), 0);
    let mut called = false;
    assert_eq!(
        p.push_with(|_| {
            called = true;
            1
        }),
        Err(Full)
    );
    assert!(!called, "fill must not run when full");
    // Full published the batch, so the consumer sees it without an explicit publish.
    assert_eq!(pop_vec(&mut c), Some(vec![0]));
    // Popped but not released: still full for the producer.
    assert_eq!(p.push(&[9]), Err(Full));
    c.release();
    assert_eq!(p.free_slots(), 1);
    p.push(&[4]).unwrap();
    assert_eq!(p.push(&[5]), Err(Full));
    p.count_dropped(1);
    p.publish();
    let got: Vec<_> = std::iter::from_fn(|| pop_vec(&mut c)).collect();
    assert_eq!(got, vec![vec![1], vec![2], vec![3], vec![4]]);
    let st = p.stats();
    assert_eq!((st.enqueued, st.dropped, st.dequeued), (5, 1, 5));
}

#[test]
fn empty_queue_and_unpublished_messages() {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(16, 8));
    assert_eq!(pop_vec(&mut c), None);
    assert_eq!(c.state(), QueueState::Empty);
    p.push(b"a").unwrap();
    assert_eq!(pop_vec(&mut c), None, "not visible before publish");
    assert_eq!(p.stats().enqueued, 0);
    p.publish();
    assert_eq!(c.state(), QueueState::Ready);
    assert_eq!(pop_vec(&mut c), Some(b"a".to_vec()));
    assert_eq!(c.stats().dequeued, 0, "not released yet");
    assert_eq!(pop_vec(&mut c), None);
    assert_eq!(c.stats().dequeued, 1, "an empty pop releases");
}

#[test]
fn over_long_messages_are_truncated() {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(24, 4));
    assert_eq!(p.payload_size(), 16);
    assert_eq!(c.payload_size(), 16);
    let long: Vec<u8> = (0..40).collect();
    p.push(&long).unwrap();
    p.push_with(|buf| {
        assert_eq!(buf.len(), 16);
        buf.fill(7);
        1000
    })
    .unwrap();
    p.push(&[]).unwrap();
    p.publish();
    assert_eq!(pop_vec(&mut c), Some(long[..16].to_vec()));
    assert_eq!(pop_vec(&mut c), Some(vec![7; 16]));
    assert_eq!(pop_vec(&mut c), Some(vec![]));
    assert_eq!(c.corrupt_slots(), 0);
}

#[test]
fn corrupt_length_word_is_clamped_and_counted() {
    let (_d, path) = tmp();
    let s = spec(32, 4);
    let (mut p, mut c) = pair(&path, s);
    p.push(b"first").unwrap();
    p.push(b"second").unwrap();
    p.publish();
    // Slot 0 starts right after the header page.
    write_at(&path, HEADER_SIZE as u64, &u32::MAX.to_ne_bytes());
    write_at(&path, HEADER_SIZE as u64 + 32, &25u32.to_ne_bytes());
    let m = pop_vec(&mut c).unwrap();
    assert_eq!(m.len(), 24);
    assert_eq!(&m[..5], b"first");
    assert_eq!(pop_vec(&mut c).unwrap().len(), 24);
    assert_eq!(c.corrupt_slots(), 2);
}

#[test]
fn spec_mismatch_is_a_clear_error() {
    let (_d, path) = tmp();
    QueueFile::open_or_create(&path, spec(64, 16)).unwrap();
    let e = QueueFile::open_or_create(&path, spec(128, 16)).unwrap_err();
    match &e {
        QueueError::SpecMismatch {
            found_slot_size: 64,
            wanted_slot_size: 128,
            found_capacity: 16,
            wanted_capacity: 16,
            ..
        } => {}
        other => panic!("unexpected {other:?}"),
    }
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("CJ_SLOT_SIZE/CJ_QUEUE_SLOTS"), "{msg}");
    // Opening without a spec works and reports the stored one.
    let q = QueueFile::open_existing(&path).unwrap();
    assert_eq!(q.spec(), spec(64, 16));
    assert_eq!(QueueFile::read_stats(&path).unwrap().0, spec(64, 16));
}

#[test]
fn invalid_spec_is_refused_before_creating() {
    let (_d, path) = tmp();
    for (s, reason) in [
        (spec(8, 4), SpecError::SlotTooSmall),
        (spec(36, 4), SpecError::SlotNotMultipleOf8),
        (spec(64, 3), SpecError::CapacityNotPowerOfTwo),
        (spec(64, 0), SpecError::CapacityNotPowerOfTwo),
    ] {
        let e = QueueFile::open_or_create(&path, s).unwrap_err();
        assert!(matches!(e, QueueError::InvalidSpec { reason: r, .. } if r == reason), "{e}");
        assert!(e.to_string().contains("CJ_SLOT_SIZE"), "{e}");
    }
    assert!(!path.exists());
}

#[test]
fn not_a_queue_file_is_a_clear_error() {
    let (_d, path) = tmp();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    for junk in [vec![0xabu8; 10_000], b"tiny".to_vec(), vec![]] {
        std::fs::write(&path, &junk).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE)).unwrap();
        for e in
            [QueueFile::open_or_create(&path, spec(64, 16)).unwrap_err(), QueueFile::open_existing(&path).unwrap_err()]
        {
            assert!(matches!(e, QueueError::NotAQueue { .. }), "{e}");
            assert!(e.to_string().contains("is not a shmq queue file"), "{e}");
        }
    }
    let e = QueueFile::open_existing(&path.with_file_name("missing")).unwrap_err();
    assert!(matches!(&e, QueueError::Io { op: "open", .. }), "{e}");
}

#[test]
fn other_version_size_or_header_is_a_clear_error() {
    let (_d, path) = tmp();
    QueueFile::open_or_create(&path, spec(64, 16)).unwrap();
    write_at(&path, offsets::VERSION as u64, &99u32.to_ne_bytes());
    let e = QueueFile::open_existing(&path).unwrap_err();
    assert!(matches!(e, QueueError::VersionMismatch { found: 99, expected: 1, .. }), "{e}");
    write_at(&path, offsets::VERSION as u64, &1u32.to_ne_bytes());

    write_at(&path, offsets::CAPACITY as u64, &3u32.to_ne_bytes());
    let e = QueueFile::open_existing(&path).unwrap_err();
    assert!(matches!(e, QueueError::Corrupt { .. }), "{e}");
    write_at(&path, offsets::CAPACITY as u64, &32u32.to_ne_bytes());
    let e = QueueFile::open_existing(&path).unwrap_err();
    assert!(matches!(e, QueueError::SizeMismatch { .. }), "{e}");
    write_at(&path, offsets::CAPACITY as u64, &16u32.to_ne_bytes());
    write_at(&path, offsets::SLOT_SIZE as u64, &64u32.to_ne_bytes());

    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(spec(64, 16).file_size() - 64).unwrap();
    let e = QueueFile::open_or_create(&path, spec(64, 16)).unwrap_err();
    assert!(matches!(e, QueueError::SizeMismatch { .. }), "{e}");
    f.set_len(spec(64, 16).file_size()).unwrap();

    write_at(&path, offsets::HEAD as u64, &5u64.to_ne_bytes());
    let e = QueueFile::open_existing(&path).unwrap_err();
    assert!(matches!(e, QueueError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("past producer index"), "{e}");
    write_at(&path, offsets::HEAD as u64, &0u64.to_ne_bytes());
    QueueFile::open_existing(&path).unwrap();
}

#[test]
fn close_then_ended_after_drain() {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(16, 8));
    p.push(b"x").unwrap();
    p.push(b"y").unwrap();
    p.close();
    assert!(c.stats().closed);
    assert_eq!(c.state(), QueueState::Ready);
    assert_eq!(pop_vec(&mut c), Some(b"x".to_vec()));
    assert_eq!(c.state(), QueueState::Ready);
    assert_eq!(pop_vec(&mut c), Some(b"y".to_vec()));
    assert_eq!(c.state(), QueueState::Ended);
    assert_eq!(c.stats().dequeued, 2, "Ended releases");
    // A producer that re-attaches reopens the stream.
    drop(p);
    let mut p = QueueFile::open_existing(&path).unwrap().into_producer();
    assert_eq!(c.state(), QueueState::Empty);
    p.push(b"z").unwrap();
    p.publish();
    assert_eq!(c.state(), QueueState::Ready);
    assert_eq!(pop_vec(&mut c), Some(b"z".to_vec()));
}

#[test]
fn reattach_continues_at_stored_positions() {
    let (_d, path) = tmp();
    let s = spec(16, 16);
    let (mut p, mut c) = pair(&path, s);
    for i in 0..10u8 {
        p.push(&[i]).unwrap();
    }
    p.count_dropped(3);
    drop(p); // publishes
    for i in 0..3u8 {
        assert_eq!(pop_vec(&mut c), Some(vec![i]));
    }
    c.release();
    assert_eq!(pop_vec(&mut c), Some(vec![3]));
    assert_eq!(pop_vec(&mut c), Some(vec![4]));
    // Simulate a crash: no release, no Drop.
    std::mem::forget(c);

    let mut p = QueueFile::open_existing(&path).unwrap().into_producer();
    assert_eq!(p.position(), 10);
    p.push(&[10]).unwrap();
    p.publish();
    let mut c = QueueFile::open_existing(&path).unwrap().into_consumer();
    assert_eq!(c.position(), 3, "continues at the stored head");
    let got: Vec<_> = std::iter::from_fn(|| pop_vec(&mut c)).collect();
    let want: Vec<_> = (3..=10u8).map(|i| vec![i]).collect();
    assert_eq!(got, want, "unreleased 3 and 4 are delivered again, nothing lost");
    let st = c.stats();
    assert_eq!((st.enqueued, st.dequeued, st.dropped), (11, 11, 3));
    assert_eq!((st.producer_attaches, st.consumer_attaches), (2, 2));
    assert_eq!(st.producer_pid, std::process::id());
    assert_eq!(st.consumer_pid, std::process::id());
}

#[test]
fn file_and_directory_modes() {
    use std::os::unix::fs::PermissionsExt;
    let (_d, path) = tmp();
    QueueFile::open_or_create(&path, spec(16, 2)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o660);
    assert_eq!(mode(path.parent().unwrap()), 0o770);
    let leftovers: Vec<_> =
        std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("pkt-0-0")]);
}

#[test]
fn concurrent_creation_yields_one_file() {
    for round in 0..20 {
        let (_d, path) = tmp();
        let path = path.with_file_name(format!("rec-{round}"));
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    barrier.wait();
                    QueueFile::open_or_create(&path, spec(32, 8)).unwrap()
                });
            }
        });
        let n = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(n, 1, "no temporary files left behind");
    }
}

/// Sends `n` sequence numbers through a ring of `capacity` slots between two
/// threads and checks order, no loss, no duplicate, and the counters.
fn stress(n: u64, capacity: u32, wait: WaitStrategy, batch: u64) {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(16, capacity));
    // Set when the consumer returns or panics, so a failing consumer makes the
    // test fail instead of leaving the producer waiting forever.
    let consumer_gone = AtomicBool::new(false);
    struct Gone<'a>(&'a AtomicBool);
    impl Drop for Gone<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = Waiter::new(wait);
            let mut seq = 0u64;
            while seq < n && !consumer_gone.load(Ordering::Relaxed) {
                match p.push(&seq.to_le_bytes()) {
                    Ok(()) => {
                        seq += 1;
                        if seq - seq / batch * batch == 0 {
                            p.publish();
                        }
                        w.reset();
                    }
                    Err(Full) => w.wait(),
                }
            }
            p.close();
        });
        s.spawn(|| {
            let _gone = Gone(&consumer_gone);
            let mut w = Waiter::new(wait);
            let mut expected = 0u64;
            loop {
                match c.pop_with(|m| u64::from_le_bytes(m.try_into().expect("8 bytes"))) {
                    Some(seq) => {
                        assert_eq!(seq, expected, "order, loss or duplicate");
                        expected += 1;
                        if expected - expected / batch * batch == 0 {
                            c.release();
                        }
                        w.reset();
                    }
                    None => match c.state() {
                        QueueState::Ended => break,
                        _ => w.wait(),
                    },
                }
            }
            assert_eq!(expected, n);
            let st = c.stats();
            assert_eq!((st.enqueued, st.dequeued, st.dropped), (n, n, 0));
            assert!(st.closed);
        });
    });
}

#[test]
fn stress_threads_small_ring() {
    stress(3_000_000, 64, WaitStrategy::BusyPoll, 16);
}

#[test]
fn stress_threads_single_slot_backoff() {
    stress(100_000, 1, WaitStrategy::DEFAULT_BACKOFF, 1);
}

#[test]
fn stress_threads_unbatched_odd_batch() {
    stress(500_000, 8, WaitStrategy::DEFAULT_BACKOFF, 7);
}

#[test]
fn a_holding_consumer_gives_slots_back_only_when_it_releases() {
    let (_d, path) = tmp();
    let (mut p, mut c) = pair(&path, spec(32, 4));
    c.hold_releases();
    for i in 0..4u8 {
        p.push(&[i]).unwrap();
    }
    p.publish();
    for i in 0..4u8 {
        assert_eq!(pop_vec(&mut c), Some(vec![i]));
    }
    // Nothing left: a holding consumer still owns every slot, so the producer is full.
    assert_eq!(pop_vec(&mut c), None);
    assert_eq!(c.state(), QueueState::Empty);
    assert_eq!(c.unreleased(), 4);
    assert!(p.push(&[9]).is_err(), "a held slot was handed back to the producer");
    // A consumer that dies holding slots (dropped here) leaves them to its successor.
    drop(c);
    let mut again = QueueFile::open_or_create(&path, spec(32, 4)).unwrap().into_consumer();
    assert_eq!(again.position(), 0);
    assert_eq!(again.published(), 4);
    assert_eq!(pop_vec(&mut again), Some(vec![0]));
    again.hold_releases();
    again.release();
    assert_eq!(again.unreleased(), 0);
    assert_eq!(again.stats().dequeued, 1);
    p.push(&[4]).unwrap();
}

/// The kernel's `Rss` of this process's mappings of `path` (`/proc/self/smaps`), in KiB.
fn mapped_rss_kib(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.display().to_string();
    let mut mine = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // A mapping's first line: range perms offset dev inode [path].
            mine = line.ends_with(&format!(" {name}"));
        } else if mine && first == "Rss:" {
            kib += words.next().unwrap().parse::<u64>().unwrap();
        }
    }
    kib
}

/// Bytes the file system allocated to the file (`st_blocks`), in KiB.
fn allocated_kib(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() / 2
}

#[test]
fn only_a_producer_makes_the_queue_resident_creating_and_consuming_cost_the_header_page() {
    // On tmpfs, where queues live: st_blocks counts the pages the file holds.
    let (_dir, path) = shm_tmp();
    let s = spec(256, 4096); // 1 MiB of slots
    let file_kib = s.file_size() / 1024;
    let created = QueueFile::open_or_create(&path, s).unwrap();
    assert!(allocated_kib(&path) <= 4, "creating wrote {} KiB of a {file_kib} KiB file", allocated_kib(&path));
    let mut c = created.into_consumer();
    assert!(mapped_rss_kib(&path) <= 8, "a consumer's mapping has {} KiB resident", mapped_rss_kib(&path));
    assert_eq!(pop_vec(&mut c), None);
    let mut p = QueueFile::open_existing(&path).unwrap().into_producer();
    assert_eq!(allocated_kib(&path), file_kib, "the producer's attach allocates the whole file");
    // The producer's mapping holds every page, the consumer's still only what it touched.
    let mapped = mapped_rss_kib(&path);
    assert!((file_kib..=file_kib + 8).contains(&mapped), "both mappings hold {mapped} KiB of {file_kib} KiB");
    p.push(b"x").unwrap();
    p.publish();
    assert_eq!(pop_vec(&mut c), Some(b"x".to_vec()));
}

/// The `VmFlags` of this process's mappings of `path` (`/proc/self/smaps`), one list per mapping.
fn mapped_vm_flags(path: &Path) -> Vec<Vec<String>> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = format!(" {}", path.display());
    let mut mine = false;
    let mut out = Vec::new();
    for line in smaps.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if mine {
                out.push(flags.split_whitespace().map(str::to_owned).collect());
            }
        } else if line.contains('-') && line.split_whitespace().count() >= 5 {
            mine = line.ends_with(&name);
        }
    }
    out
}

#[test]
fn both_sides_mappings_of_a_queue_ask_for_transparent_huge_pages() {
    // `hg` in VmFlags is the kernel's record of MADV_HUGEPAGE, whatever shmem_enabled says.
    let (_d, path) = tmp();
    let s = spec(256, 4096);
    let p = QueueFile::open_or_create(&path, s).unwrap().into_producer();
    let c = QueueFile::open_existing(&path).unwrap().into_consumer();
    let flags = mapped_vm_flags(&path);
    assert_eq!(flags.len(), 2, "the producer's and the consumer's mapping: {flags:?}");
    assert!(flags.iter().all(|f| f.iter().any(|x| x == "hg")), "{flags:?}");
    drop((p, c));
    assert!(mapped_vm_flags(&path).is_empty(), "both sides unmapped");
}

#[test]
fn an_unpopulated_producer_allocates_only_the_pages_it_writes() {
    let (_dir, path) = shm_tmp();
    let s = spec(256, 4096); // 16 slots a page, 1 MiB of slots
    let mut p = QueueFile::open_or_create(&path, s).unwrap().into_producer_unpopulated();
    assert!(allocated_kib(&path) <= 4, "attaching allocated {} KiB", allocated_kib(&path));
    for i in 0..32u32 {
        p.push(&i.to_le_bytes()).unwrap();
    }
    p.publish();
    // The header page and the two pages of slots 0..32.
    assert_eq!(allocated_kib(&path), 12, "32 pushes of 256-byte slots");
    let mut c = QueueFile::open_existing(&path).unwrap().into_consumer();
    let got: Vec<u32> = std::iter::from_fn(|| c.pop_with(|m| u32::from_le_bytes(m.try_into().unwrap()))).collect();
    assert_eq!(got, (0..32).collect::<Vec<_>>());
}

#[test]
fn a_producer_with_a_bound_makes_resident_the_slots_that_bound_can_fill_from_its_position() {
    let (_dir, path) = shm_tmp();
    let s = spec(256, 4096); // 16 slots a page, 256 pages of slots
                             // 40 frames at most: the header page and the three pages of slots 0..40.
    drop(QueueFile::open_or_create(&path, s).unwrap().into_producer_for(40));
    assert_eq!(allocated_kib(&path), 16, "a bound of 40 256-byte slots");
    // A producer that continues at position 4090 with a bound of 20 wraps: slots
    // 4090..4096 (the last page) and 0..14 (resident already).
    let mut p = QueueFile::open_existing(&path).unwrap().into_producer_unpopulated();
    let mut c = QueueFile::open_existing(&path).unwrap().into_consumer();
    for _ in 0..4090u32 {
        p.push(&[0]).unwrap();
        p.publish();
        assert!(c.pop_with(|_| ()).is_some());
    }
    drop((p, c));
    // Every page is in the file by now: give the slots' pages back (the header
    // page keeps the position), so the file shows what the bound populates.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let slots_len = i64::try_from(s.file_size() - 4096).unwrap();
    nix::fcntl::fallocate(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
        4096,
        slots_len,
    )
    .unwrap();
    assert_eq!(allocated_kib(&path), 4, "only the header page is left");
    drop(QueueFile::open_existing(&path).unwrap().into_producer_for(20));
    assert_eq!(
        allocated_kib(&path),
        4 + 4 + 4,
        "the header page, the page of slots 4080..4096 and the page of slots 0..16"
    );
    // A bound past the capacity makes the whole file resident.
    let whole = path.with_file_name("pkt-0-1");
    drop(QueueFile::open_or_create(&whole, s).unwrap().into_producer_for(u64::MAX / 2));
    assert_eq!(allocated_kib(&whole), 4 + 1024, "the header page and 1 MiB of slots");
}

#[test]
fn a_queue_a_finished_run_left_ends_again_only_after_a_new_producer_closes_it() {
    let (_d, path) = tmp();
    let s = spec(64, 8);
    let (mut p, mut c) = pair(&path, s);
    p.push(b"last run").unwrap();
    p.close();
    assert_eq!(pop_vec(&mut c).as_deref(), Some(&b"last run"[..]));
    assert_eq!(c.state(), QueueState::Ended);
    drop((p, c));

    // The next run's consumer starts first and finds it closed and drained.
    let mut c = QueueFile::open_or_create(&path, s).unwrap().into_consumer();
    let seen = c.producer_attaches();
    assert_eq!(c.state(), QueueState::Ended, "the plain state is the last run's end");
    assert_eq!(c.state_after(seen), QueueState::Empty, "waiting for the next run's producer");
    let mut p = QueueFile::open_or_create(&path, s).unwrap().into_producer();
    assert_eq!(c.state_after(seen), QueueState::Empty, "attached and open: nothing yet");
    p.push(b"this run").unwrap();
    p.publish();
    assert_eq!(c.state_after(seen), QueueState::Ready);
    assert_eq!(pop_vec(&mut c).as_deref(), Some(&b"this run"[..]));
    p.close();
    assert_eq!(c.state_after(seen), QueueState::Ended, "the new producer's close ends it");
}

#[test]
fn an_end_of_a_queue_is_claimed_by_one_open_file_at_a_time_and_the_two_ends_apart() {
    let (_d, path) = tmp();
    let q = QueueFile::open_or_create(&path, spec(64, 16)).unwrap();
    let producer = q.lock_end(End::Producer).unwrap();
    // Another claim of the same end (another process's open file, here a second one of
    // this process: OFD locks belong to the open file) is refused, naming the end.
    let other = QueueFile::open_existing(&path).unwrap();
    let e = other.lock_end(End::Producer).unwrap_err();
    assert!(matches!(e, QueueError::EndTaken { end: "producer", .. }), "{e}");
    assert!(e.to_string().contains("is its producer now, and two would corrupt it"), "{e}");
    // The consumer end is apart: the same process or another may hold it.
    let consumer = other.lock_end(End::Consumer).unwrap();
    assert!(matches!(q.lock_end(End::Consumer).unwrap_err(), QueueError::EndTaken { end: "consumer", .. }));
    // Let go (a process that ends lets go the same way): the next claim succeeds.
    drop(producer);
    let again = other.lock_end(End::Producer).unwrap();
    drop((again, consumer));
    q.lock_end(End::Consumer).unwrap();
}

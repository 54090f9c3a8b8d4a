//! Helpers of `scripts/bench.sh` (`make bench`) that belong in Rust, not in
//! bash: the exactness check and the memcpy baseline of the balancer.
//!
//! ```text
//! bench-tools flows-equal TRUTH_CSV FLOWS_CSV
//! bench-tools memcpy CAPTURE --slot-size BYTES --slots N [--passes N]
//! ```
//!
//! `flows-equal` reads both files with the harness's reader
//! ([`e2e::read_flows_csv`]: the pmacct-style columns `SRC_IP,...,PACKETS,BYTES`,
//! rows of one key summed) and compares them with [`e2e::diff_rows`], the same
//! code the end-to-end tests use against the generator's truth. The truth is
//! the CSV `cj-balancer generate SPEC FILE --truth CSV` writes; the other file
//! is the app's flows.csv or pmacctd's print CSV. It prints `equal (N rows)`
//! and exits 0, or `differs: ...` and the first differences (one per line) and
//! exits 1.
//!
//! `memcpy` reads a pcap file into memory and copies every frame's bytes, as
//! the balancer copies them into a packet slot (capped by the slot's frame
//! room, `station::slot::frame_room`, at the frame's offset), into a ring of
//! `--slots` slots of `--slot-size` bytes (the default packet queue's shape,
//! from `cj-balancer --print-config`). One untimed pass first touches the ring
//! and the file's bytes; then it reports the fastest of `--passes` timed
//! passes as one line of `key=value` words: `frames`, `frame_bytes` (the
//! frames' bytes in the file), `copied_bytes` (what one pass copies),
//! `ring_bytes`, `seconds`, `gbps` (copied bytes per second, 1e9).
//!
//! Guarantees: the equality is the tests' equality (same reader, same
//! comparison), never a re-derivation; the copy moves exactly the bytes
//! stated, and the ring is kept alive past the timing so the copies cannot be
//! optimised away.
//! Not guaranteed: the memcpy figure is a wall-clock time on a shared
//! machine (the bench prints it beside the balancer's, from the same run, as
//! information); pcapng captures are refused (the bench writes pcap).
//!
//! Errors (a missing file, a bad row, a bad argument) are one line on stderr
//! that names the fix, exit 2.

#![deny(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: bench-tools flows-equal TRUTH_CSV FLOWS_CSV\n       \
                     bench-tools memcpy CAPTURE --slot-size BYTES --slots N [--passes N]";

fn main() -> ExitCode {
    // The harness's readers panic on bad input (they serve tests); here a
    // panic is one line naming what failed, exit 2 (as a usage error).
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown error");
        eprintln!("bench-tools: {}", msg.replace('\n', "; "));
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = std::panic::catch_unwind(|| match args.first().map(String::as_str) {
        Some("flows-equal") => flows_equal(&args[1..]),
        Some("memcpy") => memcpy(&args[1..]),
        _ => Err(USAGE.to_string()),
    });
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(msg)) => {
            eprintln!("bench-tools: {msg}");
            ExitCode::from(2)
        }
        Err(_) => ExitCode::from(2),
    }
}

/// `flows-equal TRUTH FLOWS`: exit 0 and `equal (N rows)`, or exit 1 and the differences.
fn flows_equal(args: &[String]) -> Result<ExitCode, String> {
    let [truth, flows] = args else {
        return Err(format!("flows-equal takes two files (truth, then flows)\n{USAGE}"));
    };
    let (verdict, equal) = compare(Path::new(truth), Path::new(flows))?;
    println!("{verdict}");
    Ok(if equal { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The verdict line(s) of comparing a flows CSV with the truth, and whether they are equal.
///
/// # Errors
/// A file is missing. (A malformed row panics in the harness's reader.)
fn compare(truth: &Path, flows: &Path) -> Result<(String, bool), String> {
    for p in [truth, flows] {
        if !p.is_file() {
            return Err(format!(
                "no file {}: give the truth CSV (cj-balancer generate --truth) and a flows CSV",
                p.display()
            ));
        }
    }
    let want = e2e::read_flows_csv(truth);
    let got = e2e::read_flows_csv(flows);
    Ok(match e2e::diff_rows(&got, &want) {
        None => (format!("equal ({} rows)", want.len()), true),
        Some(d) => (format!("differs: {d}"), false),
    })
}

/// The options of `memcpy`.
struct CopyArgs {
    capture: String,
    slot_size: usize,
    slots: usize,
    passes: usize,
}

fn parse_copy_args(args: &[String]) -> Result<CopyArgs, String> {
    let mut a = CopyArgs { capture: String::new(), slot_size: 0, slots: 0, passes: 3 };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
            v.parse().map_err(|_| format!("{name} {v}: not a whole number of bytes or slots"))
        };
        match arg.as_str() {
            "--slot-size" => a.slot_size = num("--slot-size")?,
            "--slots" => a.slots = num("--slots")?,
            "--passes" => a.passes = num("--passes")?,
            s if s.starts_with("--") => return Err(format!("unknown option {s}\n{USAGE}")),
            s if a.capture.is_empty() => a.capture = s.to_string(),
            s => return Err(format!("one capture only, not also {s}\n{USAGE}")),
        }
    }
    let spec = shmq::QueueSpec {
        slot_size: u32::try_from(a.slot_size).map_err(|_| format!("--slot-size {} is too large", a.slot_size))?,
        capacity: u32::try_from(a.slots).map_err(|_| format!("--slots {} is too large", a.slots))?,
    };
    if a.capture.is_empty() {
        return Err(format!("memcpy needs a capture\n{USAGE}"));
    }
    spec.check().map_err(|e| {
        format!(
            "--slot-size {} --slots {}: not a queue shape ({e}); take them from cj-balancer --print-config",
            a.slot_size, a.slots
        )
    })?;
    if a.passes == 0 {
        return Err("--passes 0: give at least one timed pass".into());
    }
    Ok(a)
}

/// `memcpy CAPTURE ...`: the time of copying the capture's frames into a ring of packet slots.
fn memcpy(args: &[String]) -> Result<ExitCode, String> {
    let a = parse_copy_args(args)?;
    let file = std::fs::read(&a.capture).map_err(|e| format!("cannot read capture {}: {e}", a.capture))?;
    let frames = frame_spans(&file).map_err(|e| format!("{}: {e}", a.capture))?;

    let spec = shmq::QueueSpec { slot_size: a.slot_size as u32, capacity: a.slots as u32 };
    // Where the balancer puts a frame in a slot: after the queue's length word
    // and the packet's metadata, at most the slot's frame room (a snap length).
    let offset = station::slot::SLOT_OVERHEAD as usize;
    let room = station::slot::frame_room(spec.payload_size());
    let frame_bytes: usize = frames.iter().map(|&(_, len)| len).sum();
    let copied_bytes: usize = frames.iter().map(|&(_, len)| len.min(room)).sum();
    let mut ring = vec![0u8; a.slot_size * a.slots];

    let copy_all = |ring: &mut [u8]| {
        for (i, &(start, len)) in frames.iter().enumerate() {
            let n = len.min(room);
            let at = (i & (a.slots - 1)) * a.slot_size + offset;
            ring[at..at + n].copy_from_slice(&file[start..start + n]);
        }
        std::hint::black_box(&ring);
    };
    copy_all(&mut ring); // untimed: faults the ring in, reads the file's bytes once
    let mut best = f64::INFINITY;
    for _ in 0..a.passes {
        let t0 = Instant::now();
        copy_all(&mut ring);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(&ring);
    println!(
        "frames={} frame_bytes={frame_bytes} copied_bytes={copied_bytes} ring_bytes={} seconds={best:.6} gbps={:.2}",
        frames.len(),
        ring.len(),
        copied_bytes as f64 / best / 1e9
    );
    Ok(ExitCode::SUCCESS)
}

/// The (offset, length) of every frame's captured bytes in a pcap file.
fn frame_spans(file: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let (mut rest, parser) = pcap_file::pcap::PcapParser::new(file).map_err(|e| {
        format!(
            "not a pcap file ({e}); the bench writes pcap (cj-balancer generate), convert pcapng with editcap -F pcap"
        )
    })?;
    let mut spans = Vec::new();
    while !rest.is_empty() {
        let (next, packet) =
            parser.next_raw_packet(rest).map_err(|e| format!("frame {} is cut or corrupt ({e})", spans.len() + 1))?;
        let len = packet.data.len();
        let end = file.len() - next.len();
        spans.push((end - len, len));
        rest = next;
    }
    Ok(spans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn capture(dir: &Path) -> (std::path::PathBuf, sim::Truth) {
        let spec =
            sim::SimSpec::from_str("flows=300,packets=3000,sizes=64:40/576:30/1514:30,v6=20,vlan=10,nonip=5,seed=7")
                .expect("spec");
        let path = dir.join("c.pcap");
        let truth = sim::write_pcap(&spec, &path, false).expect("write capture");
        (path, truth)
    }

    #[test]
    fn every_frame_of_a_generated_capture_is_found_with_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, truth) = capture(dir.path());
        let file = std::fs::read(&path).expect("read");
        let spans = frame_spans(&file).expect("a pcap file");
        assert_eq!(spans.len() as u64, truth.total_frames);
        let ip: u64 = truth.rows.iter().map(|r| r.frame_bytes).sum();
        let non_ip = truth.non_ip_frames * sim::ARP_FRAME_LEN as u64;
        assert!(truth.non_ip_frames > 0, "the capture should include non-IP frames");
        assert_eq!(spans.iter().map(|&(_, len)| len as u64).sum::<u64>(), ip + non_ip);
    }

    #[test]
    fn a_cut_capture_is_an_error_naming_the_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = capture(dir.path());
        let file = std::fs::read(&path).expect("read");
        let err = frame_spans(&file[..file.len() - 3]).expect_err("a cut file");
        assert!(err.contains("cut or corrupt"), "{err}");
    }

    #[test]
    fn the_truth_equals_itself_and_a_changed_count_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, truth) = capture(dir.path());
        let want = dir.path().join("truth.csv");
        truth.write_csv(&want).expect("write truth");
        let (verdict, equal) = compare(&want, &want).expect("compare");
        assert!(equal, "{verdict}");

        // One packet more in the first row of a copy: not equal, and that row is named.
        let text = std::fs::read_to_string(&want).expect("read truth");
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mut f: Vec<String> = lines[1].split(',').map(String::from).collect();
        f[5] = (f[5].parse::<u64>().expect("PACKETS") + 1).to_string();
        lines[1] = f.join(",");
        let got = dir.path().join("flows.csv");
        std::fs::write(&got, lines.join("\n")).expect("write copy");
        let (verdict, equal) = compare(&want, &got).expect("compare");
        assert!(!equal, "{verdict}");
        assert!(verdict.contains(&format!("{}, {}", f[2], f[3])), "the changed row should be named: {verdict}");
    }

    #[test]
    fn a_missing_file_is_an_error_not_a_verdict() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = compare(&dir.path().join("none.csv"), &dir.path().join("none.csv")).expect_err("missing");
        assert!(err.contains("no file"), "{err}");
    }
}

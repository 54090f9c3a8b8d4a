//! Two real processes exchange sequence-numbered messages through a small
//! shared-memory queue; midway the consumer is killed with SIGKILL and
//! replaced, and later the producer too. Every message must arrive in order,
//! with no gap, and the queue's counters must balance.
//!
//! The helper processes are this test binary itself, re-executed with
//! `SHMQ_SEQPIPE_ROLE=producer|consumer` and the filter `seqpipe_helper`
//! (which is a no-op in a normal test run).
//!
//! Check design: message `seq` is pushed at queue position `seq`, so each
//! process verifies `seq == position` for every message it sees. A restarted
//! consumer starts at the stored consumer index; messages the killed consumer
//! had popped but not released are delivered again (at-least-once for
//! unreleased messages), and they still satisfy `seq == position`. A restarted
//! producer continues at the stored producer index; pushes its predecessor had
//! not published are simply pushed again.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shmq::{QueueFile, QueueSpec, QueueState, WaitStrategy, Waiter};

const ROLE_ENV: &str = "SHMQ_SEQPIPE_ROLE";
const PATH_ENV: &str = "SHMQ_SEQPIPE_PATH";
const N_ENV: &str = "SHMQ_SEQPIPE_N";
const SPEC: QueueSpec = QueueSpec { slot_size: 48, capacity: 4096 };
const BATCH: usize = 64;
const WAIT: WaitStrategy = WaitStrategy::Backoff { max_sleep: Duration::from_micros(200) };

/// Message `seq`: 16 to 40 bytes, words derived from `seq`.
fn word(seq: u64, i: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i)
}

fn msg_len(seq: u64) -> usize {
    16 + 8 * (seq % 4) as usize
}

fn fill(buf: &mut [u8], seq: u64) -> usize {
    let len = msg_len(seq);
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for i in 1..len / 8 {
        buf[i * 8..i * 8 + 8].copy_from_slice(&word(seq, i as u64).to_le_bytes());
    }
    len
}

fn check(m: &[u8]) -> Result<u64, String> {
    let seq = u64::from_le_bytes(m.get(..8).ok_or("short message")?.try_into().unwrap());
    if m.len() != msg_len(seq) {
        return Err(format!("seq {seq}: length {} != {}", m.len(), msg_len(seq)));
    }
    for i in 1..m.len() / 8 {
        let w = u64::from_le_bytes(m[i * 8..i * 8 + 8].try_into().unwrap());
        if w != word(seq, i as u64) {
            return Err(format!("seq {seq}: word {i} corrupt"));
        }
    }
    Ok(seq)
}

fn report(line: String) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "SEQPIPE {line}").unwrap();
    out.flush().unwrap();
}

fn run_producer(path: &Path, n: u64) {
    let mut p = QueueFile::open_or_create(path, SPEC).unwrap().into_producer();
    let start = p.position();
    report(format!("producer start={start}"));
    let mut w = Waiter::new(WAIT);
    let mut seq = start;
    while seq < n {
        let mut pushed = 0;
        while pushed < BATCH && seq < n {
            if p.push_with(|buf| fill(buf, seq)).is_err() {
                break;
            }
            seq += 1;
            pushed += 1;
        }
        p.publish();
        if pushed == 0 {
            w.wait();
        } else {
            w.reset();
        }
    }
    p.close();
    report(format!("producer done sent={seq}"));
}

fn run_consumer(path: &Path) {
    let mut c = QueueFile::open_or_create(path, SPEC).unwrap().into_consumer();
    let start = c.position();
    report(format!("consumer start={start}"));
    let mut w = Waiter::new(WAIT);
    let mut last = None;
    loop {
        let mut got = 0;
        while got < BATCH {
            let pos = c.position();
            let Some(r) = c.pop_with(check) else { break };
            let seq = r.unwrap_or_else(|e| panic!("at position {pos}: {e}"));
            assert_eq!(seq, pos, "sequence number != queue position");
            last = Some(seq);
            got += 1;
        }
        c.release();
        if got > 0 {
            w.reset();
            continue;
        }
        match c.state() {
            QueueState::Ended => break,
            QueueState::Ready => {}
            QueueState::Empty => w.wait(),
        }
    }
    let st = c.stats();
    report(format!(
        "consumer end start={start} last={} enqueued={} dequeued={} dropped={} corrupt={}",
        last.map_or(-1, |s| s as i64),
        st.enqueued,
        st.dequeued,
        st.dropped,
        c.corrupt_slots()
    ));
}

/// The helper process entry point; does nothing in a normal test run.
#[test]
fn seqpipe_helper() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    // Die with the test that started us, so a failing test leaves no helper behind.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes two integers and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } == 1 {
        return; // the parent is already gone
    }
    let path = std::env::var(PATH_ENV).expect(PATH_ENV);
    let n: u64 = std::env::var(N_ENV).expect(N_ENV).parse().unwrap();
    match role.as_str() {
        "producer" => run_producer(Path::new(&path), n),
        "consumer" => run_consumer(Path::new(&path)),
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, path: &Path, n: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["seqpipe_helper", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(PATH_ENV, path)
        .env(N_ENV, n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn describe(role: &str, out: &Output) -> String {
    format!(
        "{role} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `key=value` from the helper's `SEQPIPE <prefix> ...` line.
fn field(out: &Output, prefix: &str, key: &str) -> i64 {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        // libtest may print "test seqpipe_helper ... " on the same line first.
        .find_map(|l| {
            let rest = &l[l.find("SEQPIPE ")? + 8..];
            rest.starts_with(prefix).then_some(rest)
        })
        .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

/// Polls the queue's counters until `pred` holds; fails at once if one of
/// the running helpers exits early (a failed check), killing the others.
fn wait_for(
    path: &Path,
    what: &str,
    running: &mut [(&str, &mut Child)],
    pred: impl Fn(&shmq::QueueStats) -> bool,
) -> shmq::QueueStats {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((_, st)) = QueueFile::read_stats(path) {
            if pred(&st) {
                return st;
            }
        }
        let exited = running.iter_mut().position(|(_, c)| c.try_wait().unwrap().is_some());
        if exited.is_some() || Instant::now() > deadline {
            let mut report = format!("while waiting for {what}:");
            for (role, child) in running.iter_mut() {
                let _ = child.kill();
                let mut out = String::new();
                if let Some(o) = child.stdout.as_mut() {
                    let _ = std::io::Read::read_to_string(o, &mut out);
                }
                if let Some(e) = child.stderr.as_mut() {
                    let _ = std::io::Read::read_to_string(e, &mut out);
                }
                let status = child.wait().unwrap();
                report.push_str(&format!("\n--- {role}: {status}\n{out}"));
            }
            panic!("{report}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn kill(mut child: Child, role: &str) {
    use std::os::unix::process::ExitStatusExt;
    child.kill().unwrap(); // SIGKILL
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(9), "{}", describe(role, &out));
}

/// Waits for both helpers; when one fails (or time runs out) the other is
/// killed, so a failing side cannot leave its peer waiting forever.
fn wait_both(mut producer: Child, mut consumer: Child) -> (Output, Output) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p = producer.try_wait().unwrap();
        let c = consumer.try_wait().unwrap();
        let failed = [p, c].iter().any(|s| s.is_some_and(|s| !s.success()));
        if (p.is_some() && c.is_some()) || failed || Instant::now() > deadline {
            let _ = producer.kill();
            let _ = consumer.kill();
            return (producer.wait_with_output().unwrap(), consumer.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn ten_million_messages_two_processes_survive_sigkill() {
    let n: u64 = 10_000_000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conjure-7/pkt-0-0");

    // Both create the queue at once: creation must be race-free.
    let mut producer = spawn("producer", &path, n);
    let mut consumer = spawn("consumer", &path, n);

    let at_kill = wait_for(
        &path,
        "the first consumer to release n/3",
        &mut [("producer 1", &mut producer), ("consumer 1", &mut consumer)],
        |s| s.dequeued >= n / 3,
    );
    kill(consumer, "consumer 1");
    assert!(at_kill.enqueued < n, "consumer must be killed mid-stream");
    let head_after_kill = QueueFile::read_stats(&path).unwrap().1.dequeued;
    let mut consumer = spawn("consumer", &path, n);

    wait_for(
        &path,
        "the producer to publish n/2",
        &mut [("producer 1", &mut producer), ("consumer 2", &mut consumer)],
        |s| s.enqueued >= n / 2,
    );
    kill(producer, "producer 1");
    let tail_after_kill = QueueFile::read_stats(&path).unwrap().1.enqueued;
    assert!(tail_after_kill < n, "producer must be killed mid-stream");
    let producer = spawn("producer", &path, n);

    let (p_out, c_out) = wait_both(producer, consumer);
    assert!(p_out.status.success(), "{}", describe("producer 2", &p_out));
    assert!(c_out.status.success(), "{}", describe("consumer 2", &c_out));

    assert_eq!(
        field(&p_out, "producer start", "start"),
        tail_after_kill as i64,
        "restarted producer continues at the stored producer index"
    );
    assert_eq!(field(&p_out, "producer done", "sent"), n as i64);
    assert_eq!(
        field(&c_out, "consumer end", "start"),
        head_after_kill as i64,
        "restarted consumer continues at the stored consumer index"
    );
    assert_eq!(field(&c_out, "consumer end", "last"), n as i64 - 1);
    assert_eq!(field(&c_out, "consumer end", "corrupt"), 0);

    let (_, st) = QueueFile::read_stats(&path).unwrap();
    assert_eq!((st.enqueued, st.dequeued, st.dropped), (n, n, 0));
    assert!(st.closed);
    assert_eq!((st.producer_attaches, st.consumer_attaches), (2, 2));
    eprintln!(
        "{n} messages across processes in {:.1?} (consumer killed at head {head_after_kill}, \
         producer killed at tail {tail_after_kill})",
        started.elapsed()
    );
}

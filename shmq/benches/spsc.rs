//! Throughput of a queue between two threads: 64-byte messages, producer
//! pushes and publishes per batch, consumer pops and releases per batch.
//! Both threads start behind a barrier; the time is the producer's first push
//! to the consumer's last pop. Reports messages per second. The two-thread
//! figures need two otherwise idle cores (both sides busy-poll); the
//! same-thread figure is the queue's own cost per message.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shmq::{QueueFile, QueueSpec, WaitStrategy, Waiter};

const MSG: [u8; 64] = [0x5a; 64];

fn run(iters: u64, capacity: u32, batch: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench-q");
    let spec = QueueSpec { slot_size: 72, capacity };
    let mut p = QueueFile::open_or_create(&path, spec).unwrap().into_producer();
    let mut c = QueueFile::open_or_create(&path, spec).unwrap().into_consumer();
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut w = Waiter::new(WaitStrategy::BusyPoll);
            let mut sum = 0u64;
            barrier.wait();
            let mut got = 0u64;
            let mut unreleased = 0u64;
            while got < iters {
                match c.pop_with(|m| m[0] as u64 + m.len() as u64) {
                    Some(v) => {
                        sum = sum.wrapping_add(v);
                        got += 1;
                        unreleased += 1;
                        if unreleased == batch {
                            unreleased = 0;
                            c.release();
                        }
                    }
                    None => w.wait(),
                }
            }
            c.release();
            let end = Instant::now();
            std::hint::black_box(sum);
            end
        });
        let mut w = Waiter::new(WaitStrategy::BusyPoll);
        barrier.wait();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut unpublished = 0u64;
        while sent < iters {
            if p.push(&MSG).is_ok() {
                sent += 1;
                unpublished += 1;
                if unpublished == batch {
                    unpublished = 0;
                    p.publish();
                }
            } else {
                w.wait();
            }
        }
        p.publish();
        consumer.join().unwrap() - start
    })
}

fn spsc(cr: &mut Criterion) {
    let mut g = cr.benchmark_group("spsc_64B");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for (capacity, batch) in [(4096u32, 32u64), (4096, 1), (256, 32)] {
        g.bench_with_input(
            BenchmarkId::new(format!("cap{capacity}"), format!("batch{batch}")),
            &(capacity, batch),
            |b, &(capacity, batch)| b.iter_custom(|iters| run(iters.max(1), capacity, batch)),
        );
    }
    g.finish();
}

/// Same thread, batches of 32: the queue's own cost per message, without
/// cross-core cache traffic or scheduling (robust on a loaded machine).
fn same_thread(cr: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench-q1");
    let spec = QueueSpec { slot_size: 72, capacity: 4096 };
    let mut p = QueueFile::open_or_create(&path, spec).unwrap().into_producer();
    let mut c = QueueFile::open_or_create(&path, spec).unwrap().into_consumer();
    let mut g = cr.benchmark_group("same_thread_64B");
    g.throughput(Throughput::Elements(32));
    g.bench_function("push32_publish_pop32_release", |b| {
        b.iter(|| {
            for _ in 0..32 {
                p.push(&MSG).unwrap();
            }
            p.publish();
            let mut sum = 0u64;
            while let Some(v) = c.pop_with(|m| m[0] as u64 + m.len() as u64) {
                sum = sum.wrapping_add(v);
            }
            c.release();
            sum
        })
    });
    g.finish();
}

criterion_group!(benches, spsc, same_thread);
criterion_main!(benches);

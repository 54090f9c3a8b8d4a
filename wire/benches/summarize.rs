//! ns/packet of `summarize` (and of the key and hashes on top) for a minimal
//! 64-byte IPv4 TCP frame and an 86-byte IPv6 TCP frame. Reports rates,
//! never pass/fail on time.
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use wire::{summarize, symmetric_5tuple_hash, zbalance_ip_hash, FlowKey};

#[rustfmt::skip]
#[path = "../tests/common/frames.rs"]
mod frames;

fn bench(c: &mut Criterion) {
    let cases: [(&str, &[u8]); 3] = [
        ("tcp_v4_64B", &frames::TAG_9100_TCP_V4[..]),
        ("tcp_v4_64B_untagged", &untagged_64()),
        ("tcp_v6_86B", &frames::TCP_V6_DATA[..]),
    ];
    let mut g = c.benchmark_group("summarize");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in cases {
        g.bench_function(name, |b| b.iter(|| summarize(black_box(frame))));
    }
    g.finish();

    let mut g = c.benchmark_group("summarize+key+hashes");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = summarize(black_box(frame));
                let (k, d) = FlowKey::from_summary(&s);
                (k, d, zbalance_ip_hash(&s), symmetric_5tuple_hash(&s))
            })
        });
    }
    g.finish();
}

/// TCP ACK over IPv4, no tag, padded to the 64-byte minimum (with FCS room).
fn untagged_64() -> [u8; 64] {
    let mut f = [0u8; 64];
    let t = &frames::TAG_9100_TCP_V4;
    f[..12].copy_from_slice(&t[..12]);
    f[12..54].copy_from_slice(&t[16..58]);
    f
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! ns/packet of `summarize` (and of the key and hashes on top) for a minimal
//! 64-byte IPv4 TCP frame and an 86-byte IPv6 TCP frame, and of
//! `tunnel::summarize_decap` (CJ_DECAP) on a plain frame and on the same TCP
//! frame inside VXLAN. Reports rates, never pass/fail on time.
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use wire::tunnel::{summarize_decap, Decap};
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

    let all = Decap { vxlan: Some(4789), geneve: Some(6081), gre: true, ipip: true };
    let plain = untagged_64();
    let vxlan = vxlan_of(&plain[..54]);
    let mut g = c.benchmark_group("summarize_decap");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tcp_v4_64B_off", |b| b.iter(|| summarize_decap(black_box(&plain), 64, &Decap::default())));
    g.bench_function("tcp_v4_64B_all_on", |b| b.iter(|| summarize_decap(black_box(&plain), 64, &all)));
    g.bench_function("vxlan_tcp_v4_all_on", |b| {
        b.iter(|| summarize_decap(black_box(&vxlan), vxlan.len() as u32, &all))
    });
    g.finish();
}

/// `inner` (an Ethernet frame) in VXLAN over IPv4 UDP.
fn vxlan_of(inner: &[u8]) -> Vec<u8> {
    let udp_len = 8 + 8 + inner.len();
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 192, 168, 0, 1, 192, 168, 0, 2]);
    f[16..18].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0xc3, 0x50, 0x12, 0xb5]);
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x08, 0, 0, 0, 0, 0, 100, 0]);
    f.extend_from_slice(inner);
    f
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

//! Packets per second through the flow table, warmed, for 10 k and 1 M flows.
//!
//! Each iteration feeds a fixed pseudo-random sequence of packets (both
//! directions, a few TCP flags) drawn from N flows into a table that already
//! holds all N, with timeouts far away: the steady state of a busy worker
//! (hash lookup, counter update; no list is relinked per packet). No parsing, no queues.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use detector::flow_table::{FlowTable, FrameTime, TableConfig};
use detector::record_sink::CountingSink;
use wire::{Direction, FlowKey, PacketSummary, L3};

const PACKETS_PER_ITER: usize = 100_000;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

fn flows(n: usize) -> Vec<(PacketSummary, FlowKey)> {
    (0..n as u32)
        .map(|i| {
            let mut src = [0u8; 16];
            src[..4].copy_from_slice(&(0x0a00_0000 | i).to_be_bytes());
            let mut dst = [0u8; 16];
            dst[..4].copy_from_slice(&[192, 168, (i >> 8) as u8, i as u8 | 1]);
            let s = PacketSummary {
                l3: L3::Ipv4,
                ethertype: 0x0800,
                ip_version: 4,
                src,
                dst,
                proto: if i % 3 == 0 { 17 } else { 6 },
                src_port: 1024 + (i % 50_000) as u16,
                dst_port: 443,
                ip_len: 576,
                tcp_flags: 0x10,
                ..Default::default()
            };
            let (lo, hi) = if (src, s.src_port) <= (dst, s.dst_port) {
                ((src, s.src_port), (dst, s.dst_port))
            } else {
                ((dst, s.dst_port), (src, s.src_port))
            };
            let key = FlowKey {
                addr_lo: lo.0,
                addr_hi: hi.0,
                port_lo: lo.1,
                port_hi: hi.1,
                proto: s.proto,
                ip_version: 4,
                vlan: 0,
                vlan_inner: 0,
            };
            (s, key)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_table");
    group.throughput(Throughput::Elements(PACKETS_PER_ITER as u64));
    group.sample_size(10);
    for n in [10_000usize, 1_000_000] {
        let fl = flows(n);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let seq: Vec<(u32, Direction)> = (0..PACKETS_PER_ITER)
            .map(|_| {
                let r = xorshift(&mut rng);
                let d = if r & 1 == 0 { Direction::LoToHi } else { Direction::HiToLo };
                ((r >> 1) as usize % n, d)
            })
            .map(|(i, d)| (i as u32, d))
            .collect();
        let s = 1_000_000_000u64;
        let cfg = TableConfig {
            idle_ns: 3600 * s,
            active_ns: 3600 * s,
            close_ns: 3600 * s,
            refresh_ns: 0,
            limit: (2 * n) as u32,
            queue: 0,
        };
        let mut table = FlowTable::new(cfg);
        let mut sink = CountingSink::default();
        let mut ts = 1_700_000_000 * s;
        for (sum, key) in &fl {
            table.packet(sum, key, Direction::LoToHi, FrameTime { ts_ns: ts, wire_len: 590 }, ts, &mut sink);
        }
        group.bench_with_input(BenchmarkId::new("packets", n), &n, |b, _| {
            b.iter(|| {
                for &(i, d) in &seq {
                    ts += 100;
                    let (sum, key) = &fl[i as usize];
                    table.packet(sum, key, d, FrameTime { ts_ns: ts, wire_len: 590 }, ts, &mut sink);
                }
            })
        });
        assert_eq!(table.len(), n);
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

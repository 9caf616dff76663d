//! TransportMessage encoding and decoding per record size and records per message.

#![allow(missing_docs)] // criterion_group! generates undocumented functions

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kps_connector_core::transport::wire;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    for size in [100usize, 1_000, 10_000] {
        for per_message in [1usize, 64] {
            let records: Vec<Bytes> = (0..per_message)
                .map(|_| Bytes::from(vec![7u8; size]))
                .collect();
            let id = format!("{size}B x{per_message}");
            group.throughput(Throughput::Elements(per_message as u64));
            group.bench_with_input(BenchmarkId::new("encode", &id), &records, |b, records| {
                b.iter(|| wire::encode(1_700_000_000_000_000_000, records))
            });
            let encoded = wire::encode(1_700_000_000_000_000_000, &records);
            group.bench_with_input(BenchmarkId::new("decode", &id), &encoded, |b, encoded| {
                b.iter(|| wire::decode(encoded.clone()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

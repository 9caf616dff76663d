//! The core's own overhead per record: source -> batcher -> in-memory transport -> acks, with
//! no outside system and no network. What any connector adds on top is its client library.

#![allow(missing_docs)] // criterion_group! generates undocumented functions

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const RECORDS: u64 = 200_000;

fn core_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("core_path");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS));
    for (size, batch) in [(100usize, 256usize), (100, 1), (10_000, 256)] {
        group.bench_function(
            BenchmarkId::new("ingress", format!("{size}B batch{batch}")),
            |b| b.iter(|| runtime.block_on(kps_benches::run_ingress(size, RECORDS, batch))),
        );
    }
    group.finish();
}

criterion_group!(benches, core_path);
criterion_main!(benches);

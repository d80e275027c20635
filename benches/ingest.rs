//! Ingest throughput: spans/s and bytes/s for batches of 1,000 spans, per
//! durability mode ("without sync" = Buffered, "with sync" = GroupCommit),
//! on a fresh store per sample.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use span_sessions::workload::{Workload, WorkloadConfig};
use span_sessions::{Durability, ResourceSpans, SessionStore};

const BATCH: usize = 1000;

fn batches(n: usize, seed: u64, span_bytes: usize) -> Vec<Vec<ResourceSpans>> {
    Workload::new(WorkloadConfig {
        seed,
        projects: 4,
        sessions: usize::MAX,
        turns: (1, 20),
        spans_per_trace: (3, 30),
        span_bytes,
        concurrent_sessions: 64,
        ..WorkloadConfig::default()
    })
    .batches(BATCH)
    .take(n)
    .collect()
}

fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(BATCH as u64));
    for (label, durability) in [
        ("without_sync", Durability::Buffered),
        ("with_sync_group_commit", Durability::GroupCommit),
    ] {
        let span_bytes = 500;
        group.bench_function(
            BenchmarkId::new(label, format!("{span_bytes}B_x{BATCH}")),
            |b| {
                let mut seed = 0;
                b.iter_custom(|iters| {
                    seed += 1;
                    let data = batches(iters as usize, seed, span_bytes);
                    let dir = tempfile::tempdir().unwrap();
                    let store = SessionStore::options()
                        .durability(durability)
                        .open(dir.path())
                        .unwrap();
                    let t = Instant::now();
                    for batch in &data {
                        let r = store.append(batch).unwrap();
                        assert!(r.rejected.is_empty());
                    }
                    let elapsed = t.elapsed();
                    drop(store);
                    elapsed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);

//! Ingest throughput, spans/s and bytes/s, against the SQLite baseline.
//!
//! For ~500 B and ~4 KiB spans and batches of 1, 100 and 1,000 spans:
//!
//! - `without_sync_buffered`: `Durability::Buffered` (written to the OS,
//!   not fsynced), against `sqlite_normal` (WAL, `synchronous=NORMAL`,
//!   which does not fsync a commit either): the CPU cost.
//! - `with_sync_sync` and `with_sync_group_commit`: `Durability::Sync` and
//!   `GroupCommit` (fsynced before `append` returns), against
//!   `sqlite_full` (WAL, `synchronous=FULL`): the cost of durability.
//!
//! `ingest_concurrent_4x_500B` has four appender threads share one store
//! (and four SQLite connections share one database), which is where group
//! commit differs from sync.
//!
//! Every sample appends the same realistic spans
//! (`WorkloadConfig::realistic`) into a fresh, empty store; one iteration
//! is one `append` of one batch (one transaction for SQLite), and each
//! sample ends with a read, which indexes whatever span-sessions still
//! holds pending (`StoreOptions::index_batch_bytes`): the time covers
//! making every span queryable. Bytes are the encoded span records
//! (`workload::encoded_bytes`).
//!
//! A sample of those bursts is a fraction of a second of appends: a few
//! index groups at most (`StoreOptions::index_batch_spans`,
//! `index_batch_bytes`) and fewer spans than a checkpoint takes
//! (`checkpoint_spans`, `checkpoint_bytes`), so they cannot show the steady
//! state. `ingest_sustained` can: one iteration, and one sample, is a whole
//! ingest of 500,000 ~500 B spans or 300,000 ~4 KiB spans
//! (`SPAN_SESSIONS_BENCH_SUSTAINED_500B`,
//! `SPAN_SESSIONS_BENCH_SUSTAINED_4KIB`) in batches of 1,000 by one
//! appender, into a fresh store, with the read at the end: many groups
//! indexed beside the appends, and several checkpoints. It compares
//! `with_sync_group_commit` with `sqlite_full` (the same promise) and
//! `sqlite_normal`; the parameter is the span size. Criterion warns that it
//! is "unable to complete 10 samples" in its target time: that is how it
//! takes one iteration per sample in flat sampling, as intended here.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod support;

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use span_sessions::{Durability, ResourceSpans, SessionStore};
use support::BatchPool;
use support::sqlite::{self, Synchronous};

/// The engines and modes compared, as bench function names.
#[derive(Clone, Copy)]
enum Engine {
    SpanSessions(Durability),
    Sqlite(Synchronous),
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::SpanSessions(Durability::Buffered) => "without_sync_buffered",
            Engine::SpanSessions(Durability::Sync) => "with_sync_sync",
            Engine::SpanSessions(_) => "with_sync_group_commit",
            Engine::Sqlite(s) => s.label(),
        }
    }
}

const ENGINES: [Engine; 5] = [
    Engine::SpanSessions(Durability::Buffered),
    Engine::SpanSessions(Durability::Sync),
    Engine::SpanSessions(Durability::GroupCommit),
    Engine::Sqlite(Synchronous::Normal),
    Engine::Sqlite(Synchronous::Full),
];

/// An empty store of either engine in a fresh temporary directory.
enum Target {
    SpanSessions(Box<SessionStore>),
    /// One connection per appender thread (a `Connection` is `Send`, not `Sync`).
    Sqlite(Vec<Mutex<rusqlite::Connection>>),
}

/// `StoreOptions::direct_writes` (default on); `SPAN_SESSIONS_BENCH_DIRECT=0`
/// turns it off, to compare the two in one sitting.
fn direct_writes() -> bool {
    std::env::var("SPAN_SESSIONS_BENCH_DIRECT").map_or(true, |v| v != "0")
}

fn fresh(engine: Engine, dir: &std::path::Path, connections: usize) -> Target {
    match engine {
        Engine::SpanSessions(d) => Target::SpanSessions(Box::new(
            SessionStore::options()
                .durability(d)
                .direct_writes(direct_writes())
                .open(dir)
                .unwrap(),
        )),
        Engine::Sqlite(s) => {
            let path = dir.join("sqlite.db");
            Target::Sqlite(
                (0..connections)
                    .map(|_| Mutex::new(sqlite::open(&path, s)))
                    .collect(),
            )
        }
    }
}

fn append(target: &Target, thread: usize, batch: &[ResourceSpans]) {
    match target {
        Target::SpanSessions(store) => {
            let r = store.append(batch).unwrap();
            assert!(r.rejected.is_empty());
        }
        Target::Sqlite(conns) => {
            sqlite::append(&conns[thread].lock().unwrap(), batch);
        }
    }
}

/// Makes sure the timed work includes indexing: span-sessions indexes
/// appended spans in groups (`StoreOptions::index_batch_bytes`) and before
/// any read, so a read ends the measurement with every span indexed, as
/// SQLite's are once its inserts commit.
fn visible(target: &Target) {
    if let Target::SpanSessions(store) = target {
        assert!(!store.projects().unwrap().is_empty());
    }
}

/// Times appending the first `iters` batches of `pool` with `threads`
/// appenders (thread `t` appends batches `t`, `t + threads`, ...).
fn run(engine: Engine, pool: &mut BatchPool, iters: u64, threads: usize) -> Duration {
    let batches = pool.take(iters as usize);
    let dir = tempfile::tempdir().unwrap();
    let target = fresh(engine, dir.path(), threads);
    let elapsed = if threads == 1 {
        let t = Instant::now();
        for b in batches {
            append(&target, 0, b);
        }
        visible(&target);
        t.elapsed()
    } else {
        let barrier = Barrier::new(threads + 1);
        let t = std::thread::scope(|s| {
            for thread in 0..threads {
                let (target, barrier) = (&target, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for b in batches.iter().skip(thread).step_by(threads) {
                        append(target, thread, b);
                    }
                });
            }
            barrier.wait();
            Instant::now()
        });
        // The scope joined every appender.
        visible(&target);
        t.elapsed()
    };
    drop(target);
    elapsed
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
}

fn bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    engine: Engine,
    pool: &mut BatchPool,
    threads: usize,
) {
    let bytes = pool.mean_batch_bytes();
    group.throughput(Throughput::ElementsAndBytes {
        elements: pool.batch as u64,
        bytes,
    });
    group.bench_function(BenchmarkId::new(engine.label(), pool.batch), |b| {
        b.iter_custom(|iters| run(engine, pool, iters, threads));
    });
}

fn ingest(c: &mut Criterion) {
    for (span_bytes, size) in [(500, "500B"), (4096, "4KiB")] {
        let mut group = c.benchmark_group(format!("ingest_{size}"));
        configure(&mut group);
        for batch in [1, 100, 1000] {
            let mut pool = BatchPool::new(1, span_bytes, batch);
            for engine in ENGINES {
                bench(&mut group, engine, &mut pool, 1);
            }
        }
        group.finish();
    }
}

fn ingest_concurrent(c: &mut Criterion) {
    const THREADS: usize = 4;
    let mut group = c.benchmark_group(format!("ingest_concurrent_{THREADS}x_500B"));
    configure(&mut group);
    for batch in [1, 100, 1000] {
        let mut pool = BatchPool::new(2, 500, batch);
        for engine in [
            Engine::SpanSessions(Durability::Sync),
            Engine::SpanSessions(Durability::GroupCommit),
            Engine::Sqlite(Synchronous::Full),
        ] {
            bench(&mut group, engine, &mut pool, THREADS);
        }
    }
    group.finish();
}

/// Spans per second beyond every engine here: criterion's target time is
/// ten samples at this rate, so that it never fits a second iteration (a
/// second whole ingest) into a sample.
const FASTER_THAN_ANY: f64 = 1_000_000.0;

fn ingest_sustained(c: &mut Criterion) {
    const BATCH: usize = 1000;
    let mut group = c.benchmark_group("ingest_sustained");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    // Any warm-up time is over after one iteration, one whole ingest.
    group.warm_up_time(Duration::from_millis(1));
    for (span_bytes, size, var, default) in [
        (500, "500B", "SPAN_SESSIONS_BENCH_SUSTAINED_500B", 500_000),
        (4096, "4KiB", "SPAN_SESSIONS_BENCH_SUSTAINED_4KIB", 300_000),
    ] {
        let batches = support::env_number(var, default)
            .div_ceil(BATCH as u64)
            .max(1);
        let spans = batches * BATCH as u64;
        // Generated once, for every engine; the first batches are those of
        // `ingest_{size}`'s batches of 1,000.
        let mut pool = BatchPool::new(1, span_bytes, BATCH);
        group.throughput(Throughput::ElementsAndBytes {
            elements: spans,
            bytes: pool.bytes(batches as usize),
        });
        group.measurement_time(Duration::from_secs_f64(
            10.0 * spans as f64 / FASTER_THAN_ANY,
        ));
        for engine in [
            Engine::SpanSessions(Durability::GroupCommit),
            Engine::Sqlite(Synchronous::Normal),
            Engine::Sqlite(Synchronous::Full),
        ] {
            group.bench_function(BenchmarkId::new(engine.label(), size), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run(engine, &mut pool, batches, 1)).sum());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, ingest, ingest_concurrent, ingest_sustained);
criterion_main!(benches);

//! Ingest loop for profiling: `cargo run --release --example ingest_profile -- [spans]`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/cpu.rs"]
mod cpu;
use cpu::{cpu_ticks, sys_ticks, written_bytes};

use std::time::Instant;

use span_sessions::workload::{Workload, WorkloadConfig};
use span_sessions::{Durability, SessionStore};

fn env_number(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let spans: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300_000);
    let durability = match std::env::args().nth(2).as_deref() {
        Some("sync") => Durability::Sync,
        Some("group") => Durability::GroupCommit,
        _ => Durability::Buffered,
    };
    let wide = std::env::var_os("WIDE").is_some();
    // REALISTIC=1: the benchmarks' workload (`WorkloadConfig::realistic`);
    // SPAN_BYTES sets its span size (500 by default).
    let span_bytes: usize = std::env::var("SPAN_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let cfg = if std::env::var_os("REALISTIC").is_some() {
        WorkloadConfig::realistic(7, usize::MAX, span_bytes)
    } else {
        WorkloadConfig {
            sessions: usize::MAX,
            projects: if wide { 1 } else { 4 },
            turns: if wide { (1, 2) } else { (1, 20) },
            spans_per_trace: if wide { (3, 12) } else { (3, 30) },
            concurrent_sessions: if wide { 256 } else { 64 },
            ..WorkloadConfig::default()
        }
    };
    // BATCH=n: spans per append (1,000 by default).
    let batch = env_number("BATCH").unwrap_or(1000).max(1);
    let batches: Vec<_> = Workload::new(cfg)
        .batches(batch)
        .take(spans / batch)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // INDEX_BATCH=bytes: `StoreOptions::index_batch_bytes` (0: index every
    // batch); CACHE_MB: `cache_bytes`; CHECKPOINT_MB: `checkpoint_bytes`;
    // CHECKPOINT_SPANS: `checkpoint_spans`.
    let mut options = SessionStore::options().durability(durability);
    if let Some(bytes) = env_number("INDEX_BATCH") {
        options = options.index_batch_bytes(bytes);
    }
    // INDEX_SPANS: `index_batch_spans`.
    if let Some(spans) = env_number("INDEX_SPANS") {
        options = options.index_batch_spans(spans);
    }
    if let Some(mb) = env_number("CACHE_MB") {
        options = options.cache_bytes(mb << 20);
    }
    // DIRECT=0: write the log through the page cache
    // (`StoreOptions::direct_writes(false)`).
    if env_number("DIRECT") == Some(0) {
        options = options.direct_writes(false);
    }
    if let Some(mb) = env_number("CHECKPOINT_MB") {
        options = options.checkpoint_bytes((mb as u64) << 20);
    }
    if let Some(spans) = env_number("CHECKPOINT_SPANS") {
        options = options.checkpoint_spans(spans as u64);
    }
    // KEEP=dir: ingest into `dir` and leave the store there. READ_TRACES=n:
    // then time n `trace` reads (see `read_traces`).
    let path = std::env::var_os("KEEP").map_or_else(|| dir.path().to_path_buf(), Into::into);
    let store = options.open(&path).unwrap();
    // THREADS=1: print the CPU time of the calling thread and of all the
    // others (indexing threads come and go) during the ingest, the part of
    // each spent in the kernel, and the bytes passed to write system calls
    // (the log's and the index's writes).
    let threads_before =
        std::env::var_os("THREADS").map(|_| (cpu_ticks(), sys_ticks(), written_bytes()));
    let t = Instant::now();
    let mut n = 0;
    for b in &batches {
        n += store.append(b).unwrap().accepted;
    }
    let appended = t.elapsed();
    // As the benchmarks do: the time until a read sees every span (it
    // waits for the spans still being indexed).
    assert!(!store.projects().unwrap().is_empty());
    let el = t.elapsed();
    if let Some((before, sys_before, written_before)) = threads_before {
        let (after, sys_after) = (cpu_ticks(), sys_ticks());
        println!(
            "  written by write system calls (log and index files): {:.1} MB",
            (written_bytes() - written_before) as f64 / 1e6
        );
        let (main, all) = (after.0 - before.0, after.1 - before.1);
        let (main_sys, all_sys) = (sys_after.0 - sys_before.0, sys_after.1 - sys_before.1);
        println!(
            "  CPU: calling thread {} ms ({} ms of it in the kernel), all other threads {} ms ({} ms in the kernel); {} full groups",
            main * 10,
            main_sys * 10,
            (all - main) * 10,
            (all_sys - main_sys) * 10,
            store.full_groups()
        );
    }
    let reads = env_number("READ_TRACES").unwrap_or(0);
    let store = (reads > 0).then_some(store);
    println!(
        "{n} spans in {el:?}: {:.0} spans/s (appends {appended:?}, then the wait for indexing {:?})",
        n as f64 / el.as_secs_f64(),
        el - appended
    );
    if let Some(store) = store {
        read_traces(&store, &batches, reads);
    }
}

/// READ_TRACES=n: after ingest, reads n traces spread over the whole
/// ingest with `SessionStore::trace` (its spans come from the log) and
/// prints the median and 90th percentile (the first read, which waits
/// for the last group to be indexed, is not counted).
fn read_traces(store: &SessionStore, batches: &[Vec<span_sessions::ResourceSpans>], n: usize) {
    let ids: Vec<_> = batches
        .iter()
        .flat_map(|b| b.iter().flat_map(|r| r.spans.iter().map(|s| s.trace_id)))
        .collect();
    let step = (ids.len() / n).max(1);
    store.trace(ids[0]).unwrap();
    let mut times: Vec<_> = ids
        .iter()
        .step_by(step)
        .map(|id| {
            let t = Instant::now();
            let trace = store.trace(*id).unwrap();
            let el = t.elapsed();
            assert!(trace.is_some());
            el
        })
        .collect();
    times.sort();
    println!(
        "trace(): median {:?}, p90 {:?} over {} reads",
        times[times.len() / 2],
        times[times.len() * 9 / 10],
        times.len()
    );
}

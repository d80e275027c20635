//! Resident memory of an ingest run, for BENCHMARKS.md's memory statement:
//! `cargo run --release --example ingest_memory -- [spans] [cache MiB] [span bytes]`
//! (defaults 2,000,000 spans, 64 MiB, 500 B).
//!
//! Streams realistic batches of 1,000 spans (nothing is generated ahead,
//! so the generator holds one batch at a time) into a fresh store with
//! `Durability::GroupCommit` and the given redb cache, and prints the
//! process's resident memory from `/proc/self/status` as it goes: `anon`
//! is heap (redb's cache, buffers, the generator), `file` is mapped file
//! pages (the log's sealed segments and redb's file), `peak` is VmHWM;
//! each line also gives the ingest rate over its last 250,000 spans.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use span_sessions::workload::{Workload, WorkloadConfig, encoded_bytes};
use span_sessions::{Durability, SessionStore};

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn report(label: &str, spans: usize, rate: f64) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{label:>6} {spans:>9} spans ({rate:>7.0} spans/s): rss {:7.1} MiB (anon {:7.1}, file {:7.1}), peak {:7.1} MiB",
        mib(status_kib("VmRSS:")),
        mib(status_kib("RssAnon:")),
        mib(status_kib("RssFile:")),
        mib(status_kib("VmHWM:")),
    );
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let spans = arg(1, 2_000_000);
    let cache_mib = arg(2, 64);
    let span_bytes = arg(3, 500);
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::options()
        .durability(Durability::GroupCommit)
        .cache_bytes(cache_mib << 20)
        .open(dir.path())
        .unwrap();
    println!("redb cache {cache_mib} MiB, ~{span_bytes} B spans, batches of 1,000");
    report("start", 0, 0.0);
    let t = Instant::now();
    let (mut n, mut bytes) = (0, 0);
    let mut next_report = 250_000;
    let mut lap = Instant::now();
    for batch in Workload::new(WorkloadConfig::realistic(11, usize::MAX, span_bytes)).batches(1000)
    {
        if n >= spans {
            break;
        }
        bytes += encoded_bytes(&batch);
        n += store.append(&batch).unwrap().accepted;
        if n >= next_report {
            report("ingest", n, 250_000.0 / lap.elapsed().as_secs_f64());
            lap = Instant::now();
            next_report += 250_000;
        }
    }
    let el = t.elapsed();
    store.close().unwrap();
    report("closed", n, 0.0);
    println!(
        "{n} spans ({:.0} MiB encoded) in {el:.1?}: {:.0} spans/s",
        bytes as f64 / f64::from(1 << 20),
        n as f64 / el.as_secs_f64()
    );
}

//! Session-history read latency on an existing store, for profiling:
//! `cargo run --release --example history_profile -- DIR TURNS [ITERS]`.
//! Builds nothing: DIR must hold a store with a session of exactly TURNS
//! turns made by the benchmarks' probe workload (`benches/support`), for
//! example a copy of `target/bench-stores/query-*/span-sessions`. Prints
//! the median of ITERS (default 2,000) full reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use span_sessions::SessionStore;
use span_sessions::workload::Workload;

// The benches' fixtures, for the probe sessions' workload.
#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("DIR"));
    let turns: usize = args.next().expect("TURNS").parse().expect("a number");
    let iters: usize = args.next().map_or(2_000, |s| s.parse().expect("a number"));
    let cfg = support::stores::probe_config(turns);
    let first = Workload::new(cfg).next().expect("a trace");
    let store = SessionStore::open(&dir).unwrap();
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        let h = store
            .session_history(&first.project, &first.session_id)
            .unwrap();
        times.push(t.elapsed());
        assert_eq!(h.len(), turns);
        std::hint::black_box(h);
    }
    times.sort();
    println!(
        "{} turns: median {:?}, p10 {:?}, p90 {:?} over {iters} reads",
        turns,
        times[iters / 2],
        times[iters / 10],
        times[iters * 9 / 10]
    );
}

//! `trace` latency on an existing store: `cargo run --release --example
//! trace_profile -- DIR [CALLS] [TURNS]`. Opens the store in DIR (for
//! example a copy of the query bench's, `target/bench-stores/query-*/span-sessions`),
//! takes the first session of `project-0` with TURNS traces (default 100;
//! else the one with the most) among the 50 with the most, reads its
//! largest trace CALLS times (default 20,000) and prints the median.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use span_sessions::{SessionQuery, SessionSort, SessionStore};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: trace_profile DIR [CALLS] [TURNS]");
    let calls: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000)
        .max(1);
    let turns: u64 = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let store = SessionStore::options().open(&dir).unwrap();
    let query = SessionQuery {
        sort: SessionSort::NumTraces,
        descending: true,
        limit: 50,
        ..SessionQuery::default()
    };
    let page = store.sessions("project-0", &query).unwrap();
    let session = page
        .items
        .iter()
        .find(|s| s.num_traces == turns)
        .unwrap_or(&page.items[0]);
    let history = store
        .session_history("project-0", &session.session_id)
        .unwrap();
    let turn = history.iter().max_by_key(|t| t.num_spans).unwrap();
    println!(
        "session {} ({} turns), trace of {} spans",
        session.session_id,
        history.len(),
        turn.num_spans
    );
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let trace = store.trace(turn.trace_id).unwrap().unwrap();
        std::hint::black_box(&trace);
        times.push(t.elapsed());
    }
    times.sort();
    println!("median {:?} over {calls} calls", times[calls / 2]);
}

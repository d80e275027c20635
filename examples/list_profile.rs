//! Session-list pages on an existing store, by start time, by number of
//! traces (largest first) and by last activity: `cargo run --release
//! --example list_profile -- DIR [PROJECT]`. DIR is a store directory (for
//! example a copy of the query bench's, `target/bench-stores/query-*/span-sessions`);
//! each first page of 50 is read 50 times and the median printed with the
//! number of turns on the page (every summary's latency quantiles read
//! each of its turns).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

use span_sessions::{SessionQuery, SessionSort, SessionStore};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: list_profile DIR [PROJECT]");
    let project = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "project-0".to_owned());
    let store = SessionStore::options().open(&dir).unwrap();
    for (sort, descending) in [
        (SessionSort::StartTime, false),
        (SessionSort::NumTraces, true),
        (SessionSort::EndTime, true),
    ] {
        let query = SessionQuery {
            sort,
            descending,
            limit: 50,
            ..SessionQuery::default()
        };
        let mut times = Vec::new();
        let mut turns = 0;
        for _ in 0..50 {
            let t = Instant::now();
            let page = store.sessions(&project, &query).unwrap();
            times.push(t.elapsed());
            turns = page.items.iter().map(|s| s.num_traces).sum::<u64>();
        }
        times.sort();
        println!(
            "{sort:?}{}: median {:?}, {turns} turns on the page",
            if descending { " descending" } else { "" },
            times[times.len() / 2]
        );
    }
}

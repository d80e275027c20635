//! Session-list query latencies on a store of 100,000 sessions and about
//! 1,000,000 spans: `cargo run --release --example query_profile [DIR]`.
//! The store is built once in DIR (default `target/query-profile-store`)
//! and reused; each query runs 200 times and the median is printed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use span_sessions::workload::{Workload, WorkloadConfig};
use span_sessions::{
    Durability, ResourceSpans, SessionFilter, SessionQuery, SessionSort, SessionStore, Span,
    SpanId, TraceId,
};

fn median(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..200 {
        let t = Instant::now();
        n = f();
        times.push(t.elapsed());
    }
    times.sort();
    (times[times.len() / 2], n)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/query-profile-store"));
    let fresh = !dir.join("index.redb").exists();
    let store = SessionStore::options()
        .durability(Durability::Buffered)
        .open(&dir)
        .unwrap();
    if fresh {
        let t = Instant::now();
        let mut spans = 0;
        for b in Workload::new(WorkloadConfig {
            sessions: 100_000,
            projects: 1,
            turns: (1, 2),
            spans_per_trace: (3, 12),
            concurrent_sessions: 256,
            ..WorkloadConfig::default()
        })
        .batches(1000)
        {
            spans += store.append(&b).unwrap().accepted;
        }
        // Five sessions mention a rare word.
        for i in 0..5u8 {
            let span = Span::new(
                TraceId([0xee, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]),
                SpanId([1; 8]),
                None,
                "agent",
                1_767_225_600_000_000_000 + u64::from(i),
                1_767_225_600_000_000_100,
            )
            .with_attribute("session.id", format!("rare-{i}"))
            .with_attribute("input.value", "Do you ship to Zanzibar?");
            store
                .append(&[ResourceSpans::for_project("project-0", vec![span])])
                .unwrap();
        }
        store.sync().unwrap();
        println!("built {spans} spans in {:?}", t.elapsed());
    }
    let stats = store.project_stats("project-0").unwrap().unwrap();
    println!(
        "store: {} sessions, {} traces, {} spans",
        stats.sessions, stats.traces, stats.spans
    );
    let page = |filter: SessionFilter, sort: SessionSort| {
        let q = SessionQuery {
            sort,
            filter,
            ..SessionQuery::default()
        };
        store.sessions("project-0", &q).unwrap().items.len()
    };
    let cases: Vec<(&str, SessionFilter, SessionSort)> = vec![
        (
            "first page by start",
            SessionFilter::default(),
            SessionSort::StartTime,
        ),
        (
            "first page by tokens",
            SessionFilter::default(),
            SessionSort::TotalTokens,
        ),
        (
            "rare term 'zanzibar'",
            SessionFilter {
                search: Some("zanzibar".into()),
                ..SessionFilter::default()
            },
            SessionSort::StartTime,
        ),
        (
            "common term 'password'",
            SessionFilter {
                search: Some("password".into()),
                ..SessionFilter::default()
            },
            SessionSort::StartTime,
        ),
        (
            "has errors",
            SessionFilter {
                has_errors: Some(true),
                ..SessionFilter::default()
            },
            SessionSort::StartTime,
        ),
    ];
    for (name, filter, sort) in cases {
        let (t, n) = median(|| page(filter.clone(), sort));
        println!("{name:<28} median {t:>10.3?} ({n} sessions)");
    }
}

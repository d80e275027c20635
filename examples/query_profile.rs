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
    if store.session("project-0", "long-100").unwrap().is_none() {
        // One session of 100 turns of 3 spans, for the history latency.
        let mut spans = Vec::new();
        for t in 0..100u64 {
            let mut id = [0xdd; 16];
            id[8..].copy_from_slice(&t.to_be_bytes());
            let start = 1_767_225_600_000_000_000 + t * 60_000_000_000;
            let root = Span::new(
                TraceId(id),
                SpanId([1; 8]),
                None,
                "agent",
                start,
                start + 900,
            )
            .with_attribute("session.id", "long-100")
            .with_attribute(
                "input.value",
                format!("question number {t} about the invoice"),
            )
            .with_attribute("output.value", format!("answer number {t}: it was paid"));
            for c in 2..4u8 {
                spans.push(
                    Span::new(
                        TraceId(id),
                        SpanId([c; 8]),
                        Some(SpanId([1; 8])),
                        "llm",
                        start + 1,
                        start + 800,
                    )
                    .with_attribute("openinference.span.kind", "LLM")
                    .with_attribute("llm.token_count.total", 100i64),
                );
            }
            spans.push(root);
        }
        store
            .append(&[ResourceSpans::for_project("project-0", spans)])
            .unwrap();
        store.sync().unwrap();
    }
    let (t, n) = median(|| {
        store
            .session_history("project-0", "long-100")
            .unwrap()
            .len()
    });
    println!(
        "{:<28} median {t:>10.3?} ({n} turns)",
        "history of 100 turns"
    );
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

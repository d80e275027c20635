#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Readers on other threads while appends run: every answer is a
//! consistent snapshot made of whole batches (contract rules 4 and 8,
//! DESIGN.md "Concurrency"). Each test runs for a bounded time (~1 s).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{sid, tid};
use span_sessions::{
    Durability, ResourceSpans, SessionQuery, SessionSort, SessionStore, Span, StatusCode,
    StoreOptions, TraceStatus,
};

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SessionStore>();
};

/// Spans per trace: a root and `K - 1` LLM children, the last one an error.
const K: u64 = 5;
const PROMPT: u64 = 3;
const COMPLETION: u64 = 2;
/// Tokens of one whole trace.
const TRACE_TOTAL: u64 = (K - 1) * (PROMPT + COMPLETION);

const SESSIONS: [&str; 3] = ["s0", "s1", "s2"];

/// Trace number `n` of `session`: one batch holding all its spans.
fn whole_trace(n: u64, session: &str) -> Vec<ResourceSpans> {
    let start = n * 1_000;
    let mut spans = vec![
        Span::new(tid(n), sid(1), None, "agent", start, start + 500)
            .with_attribute("session.id", session)
            .with_attribute("input.value", format!("question {n}"))
            .with_attribute("output.value", format!("answer {n}")),
    ];
    for c in 2..=K {
        let mut child = Span::new(
            tid(n),
            sid(c),
            Some(sid(1)),
            "llm",
            start + c,
            start + 10 * c,
        )
        .with_attribute("openinference.span.kind", "LLM")
        .with_attribute("llm.token_count.prompt", i64::try_from(PROMPT).unwrap())
        .with_attribute(
            "llm.token_count.completion",
            i64::try_from(COMPLETION).unwrap(),
        );
        if c == K {
            child = child.with_status(StatusCode::Error, "rate limited");
        }
        spans.push(child);
    }
    // Two resource groups, so a batch is not one homogeneous list.
    let tail = spans.split_off(2);
    vec![
        ResourceSpans::for_project("p", spans),
        ResourceSpans::for_project("p", tail),
    ]
}

/// Checks one reader pass; returns the number of traces seen per session.
fn check_snapshot_answers(store: &SessionStore, last_seen: &mut BTreeMap<String, u64>) {
    for s in SESSIONS {
        if let Some(sum) = store.session("p", s).unwrap() {
            let n = sum.num_traces;
            assert!(n > 0, "{s}: a listed session without traces");
            assert_eq!(
                sum.tokens.total,
                n * TRACE_TOTAL,
                "{s}: {n} traces but {} tokens: a partial batch is visible",
                sum.tokens.total
            );
            assert_eq!(sum.tokens.prompt, n * (K - 1) * PROMPT, "{s}");
            assert_eq!(sum.tokens.completion, n * (K - 1) * COMPLETION, "{s}");
            assert_eq!(sum.num_traces_with_error, n, "{s}: error count");
            assert!(
                sum.first_input.is_some() && sum.last_output.is_some(),
                "{s}"
            );
            let prev = last_seen.get(s).copied().unwrap_or(0);
            assert!(n >= prev, "{s}: went back from {prev} to {n} traces");
            last_seen.insert(s.to_owned(), n);
        }
        let history = store.session_history("p", s).unwrap();
        let seen = last_seen.get(s).copied().unwrap_or(0);
        assert!(
            u64::try_from(history.len()).unwrap() >= seen,
            "{s}: history of {} turns after a summary of {seen}",
            history.len()
        );
        for turn in &history {
            assert_eq!(turn.num_spans, K, "{s}: a turn with a partial span count");
            assert_eq!(turn.tokens.total, TRACE_TOTAL, "{s}: partial tokens");
            assert_eq!(turn.status, TraceStatus::Error, "{s}");
            assert!(!turn.root_missing, "{s}: a trace without its root");
        }
        if let Some(last) = history.last()
            && let Some(trace) = store.trace(last.trace_id).unwrap()
        {
            assert_eq!(
                u64::try_from(trace.spans.len()).unwrap(),
                K,
                "{s}: trace view"
            );
            assert_eq!(trace.session_id.as_deref(), Some(s));
        }
    }
    let list = store
        .sessions(
            "p",
            &SessionQuery {
                sort: SessionSort::TotalTokens,
                descending: true,
                limit: 10,
                ..SessionQuery::default()
            },
        )
        .unwrap();
    for sum in list.items {
        assert_eq!(
            sum.tokens.total,
            sum.num_traces * TRACE_TOTAL,
            "session list"
        );
    }
}

#[test]
fn session_store_is_send_and_sync() {
    fn shared<T: Send + Sync + 'static>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    shared(&store);
}

#[test]
fn readers_see_whole_batches_while_one_writer_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreOptions::default()
        .durability(Durability::Buffered)
        .segment_bytes(64 << 10)
        .open(dir.path())
        .unwrap();
    let stop = AtomicBool::new(false);
    let passes = AtomicU64::new(0);
    let appended = std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut last_seen = BTreeMap::new();
                while !stop.load(Ordering::Acquire) {
                    check_snapshot_answers(&store, &mut last_seen);
                    passes.fetch_add(1, Ordering::Relaxed);
                }
                // One more pass after the last append.
                check_snapshot_answers(&store, &mut last_seen);
            });
        }
        let writer = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_millis(1000);
            let mut n = 0u64;
            while Instant::now() < deadline && n < 5_000 {
                n += 1;
                let session = SESSIONS[usize::try_from(n).unwrap() % SESSIONS.len()];
                let r = store.append(&whole_trace(n, session)).unwrap();
                assert_eq!(r.accepted, usize::try_from(K).unwrap());
            }
            stop.store(true, Ordering::Release);
            n
        });
        writer.join().unwrap()
    });
    assert!(appended > 10, "only {appended} appends in a second");
    assert!(passes.load(Ordering::Relaxed) > 0, "readers never ran");
    let total: u64 = SESSIONS
        .iter()
        .map(|s| store.session("p", s).unwrap().map_or(0, |x| x.num_traces))
        .sum();
    assert_eq!(total, appended);
}

#[test]
fn concurrent_appenders_share_group_commits_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreOptions::default()
        .durability(Durability::GroupCommit)
        .open(dir.path())
        .unwrap();
    let stop = AtomicBool::new(false);
    let counts: Vec<u64> = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut last_seen = BTreeMap::new();
            while !stop.load(Ordering::Acquire) {
                check_snapshot_answers(&store, &mut last_seen);
            }
        });
        let writers: Vec<_> = (0..3u64)
            .map(|w| {
                let store = &store;
                scope.spawn(move || {
                    let session = SESSIONS[usize::try_from(w).unwrap()];
                    let deadline = Instant::now() + Duration::from_millis(700);
                    let mut n = 0u64;
                    while Instant::now() < deadline && n < 2_000 {
                        n += 1;
                        // Trace numbers interleave between writers, never collide.
                        let t = n * 3 + w;
                        let r = store.append(&whole_trace(t, session)).unwrap();
                        assert_eq!(r.accepted, usize::try_from(K).unwrap());
                        // An exporter retry now and then: all duplicates.
                        if n.is_multiple_of(7) {
                            let r = store.append(&whole_trace(t, session)).unwrap();
                            assert_eq!(
                                (r.accepted, r.duplicates),
                                (0, usize::try_from(K).unwrap())
                            );
                        }
                    }
                    n
                })
            })
            .collect();
        let counts = writers.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Release);
        reader.join().unwrap();
        counts
    });
    for (w, n) in counts.iter().enumerate() {
        let s = store.session("p", SESSIONS[w]).unwrap().unwrap();
        assert_eq!(s.num_traces, *n, "writer {w}");
        assert_eq!(s.tokens.total, n * TRACE_TOTAL, "writer {w}");
        assert_eq!(
            u64::try_from(store.session_history("p", SESSIONS[w]).unwrap().len()).unwrap(),
            *n
        );
    }
}

/// Writer `w`'s batch `n` in `several_readers_...`: two whole traces, one in
/// session `w{w}-a` and one in `w{w}-b`, so a snapshot that shows one
/// without the other shows half a batch.
fn paired_batch(w: u64, n: u64) -> Vec<ResourceSpans> {
    // Trace ids from 1: an all-zero trace id is rejected.
    let mut batch = whole_trace(n * 8 + w * 2 + 1, &format!("w{w}-a"));
    batch.extend(whole_trace(n * 8 + w * 2 + 2, &format!("w{w}-b")));
    batch
}

/// One reader pass over single snapshots (the session list and the project
/// figures each read one); returns the traces the project holds.
fn check_paired_snapshot(
    store: &SessionStore,
    writers: u64,
    last: &mut BTreeMap<String, u64>,
) -> u64 {
    let list = store
        .sessions(
            "p",
            &SessionQuery {
                sort: SessionSort::NumTraces,
                descending: true,
                limit: 100,
                ..SessionQuery::default()
            },
        )
        .unwrap();
    assert!(list.next_cursor.is_none(), "more sessions than expected");
    let mut counts = BTreeMap::new();
    for sum in &list.items {
        let n = sum.num_traces;
        assert_eq!(
            sum.tokens.total,
            n * TRACE_TOTAL,
            "{}: partial tokens",
            sum.session_id
        );
        assert_eq!(
            sum.num_traces_with_error, n,
            "{}: error count",
            sum.session_id
        );
        let prev = last.get(&sum.session_id).copied().unwrap_or(0);
        assert!(
            n >= prev,
            "{}: went back from {prev} to {n} traces",
            sum.session_id
        );
        last.insert(sum.session_id.clone(), n);
        counts.insert(sum.session_id.clone(), n);
    }
    for w in 0..writers {
        let a = counts.get(&format!("w{w}-a")).copied().unwrap_or(0);
        let b = counts.get(&format!("w{w}-b")).copied().unwrap_or(0);
        assert_eq!(
            a, b,
            "writer {w}: one snapshot shows half of a batch ({a} vs {b} traces)"
        );
    }
    let Some(stats) = store.project_stats("p").unwrap() else {
        return 0;
    };
    assert_eq!(stats.traces % 2, 0, "{stats:?}: an odd number of traces");
    assert_eq!(stats.spans, stats.traces * K, "{stats:?}: a partial trace");
    assert_eq!(stats.tokens.total, stats.traces * TRACE_TOTAL, "{stats:?}");
    let prev = last.get("").copied().unwrap_or(0);
    assert!(
        stats.traces >= prev,
        "project went back from {prev} to {} traces",
        stats.traces
    );
    last.insert(String::new(), stats.traces);
    // A session's turns and the last trace: whole as well.
    let s = format!("w{}-b", stats.traces % writers);
    let history = store.session_history("p", &s).unwrap();
    for turn in &history {
        assert_eq!(turn.num_spans, K, "{s}: a turn with a partial span count");
        assert_eq!(turn.tokens.total, TRACE_TOTAL, "{s}: partial tokens");
    }
    if let Some(last_turn) = history.last() {
        let trace = store.trace(last_turn.trace_id).unwrap().unwrap();
        assert_eq!(
            u64::try_from(trace.spans.len()).unwrap(),
            K,
            "{s}: trace view"
        );
    }
    stats.traces
}

/// The concurrency bullet: several reader threads against several
/// group-commit writers (with checkpoints and segment rolls under way) for a
/// bounded time. Every read is of whole batches, every summary consistent
/// with its own counts, nothing goes backwards, and the whole run finishes:
/// a watchdog fails the test if the threads do not (a deadlock).
#[test]
fn several_readers_and_group_commit_writers_see_whole_batches_without_deadlock() {
    readers_against_group_commit_writers(
        StoreOptions::default()
            .segment_bytes(64 << 10)
            .checkpoint_bytes(32 << 10),
    );
}

/// The same with 1 MiB index groups (the smallest handed to a thread of
/// their own) and no checkpoints: appends hand a group to the indexing
/// thread now and then, while readers wait for it and writers check
/// idempotency against it.
#[test]
fn readers_and_writers_see_whole_batches_while_groups_are_indexed_in_the_background() {
    readers_against_group_commit_writers(
        StoreOptions::default()
            .index_batch_bytes(1 << 20)
            .checkpoint_bytes(u64::MAX),
    );
}

fn readers_against_group_commit_writers(options: StoreOptions) {
    const WRITERS: u64 = 3;
    const READERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        options
            .durability(Durability::GroupCommit)
            .open(dir.path())
            .unwrap(),
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let driver = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let store = &*store;
            let stop = AtomicBool::new(false);
            let (counts, observed) = std::thread::scope(|scope| {
                let readers: Vec<_> = (0..READERS)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut last = BTreeMap::new();
                            let mut seen = Vec::new();
                            while !stop.load(Ordering::Acquire) {
                                seen.push(check_paired_snapshot(store, WRITERS, &mut last));
                            }
                            seen.push(check_paired_snapshot(store, WRITERS, &mut last));
                            seen
                        })
                    })
                    .collect();
                let writers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        scope.spawn(move || {
                            let deadline = Instant::now() + Duration::from_millis(1500);
                            let mut n = 0u64;
                            while Instant::now() < deadline && n < 3_000 {
                                let r = store.append(&paired_batch(w, n)).unwrap();
                                assert_eq!(r.accepted, usize::try_from(2 * K).unwrap());
                                n += 1;
                                if w == 0 && n.is_multiple_of(50) {
                                    store.sync().unwrap();
                                }
                            }
                            n
                        })
                    })
                    .collect();
                let counts: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
                stop.store(true, Ordering::Release);
                let observed: Vec<Vec<u64>> =
                    readers.into_iter().map(|h| h.join().unwrap()).collect();
                (counts, observed)
            });
            let _ = done_tx.send((counts, observed));
        })
    };
    let Ok((counts, observed)) = done_rx.recv_timeout(Duration::from_secs(120)) else {
        // A panicking thread ends the driver without a result: report that
        // panic rather than a deadlock.
        if driver.is_finished() {
            driver.join().unwrap();
        }
        panic!("readers and writers did not finish within 120 s: a deadlock");
    };
    driver.join().unwrap();
    let total: u64 = counts.iter().sum();
    assert!(total > 3 * WRITERS, "only {total} batches appended");
    for (w, n) in counts.iter().enumerate() {
        for half in ["a", "b"] {
            let s = store
                .session("p", &format!("w{w}-{half}"))
                .unwrap()
                .unwrap();
            assert_eq!(s.num_traces, *n, "writer {w}, session {half}");
        }
    }
    let stats = store.project_stats("p").unwrap().unwrap();
    assert_eq!(stats.traces, 2 * total);
    // Every reader ran, and at least one read landed while writes were under
    // way (neither empty nor final), so the checks above saw concurrency.
    let passes: usize = observed.iter().map(Vec::len).sum();
    assert!(observed.iter().all(|o| !o.is_empty()), "a reader never ran");
    assert!(
        observed.iter().flatten().any(|&t| t > 0 && t < 2 * total),
        "no reader saw the store mid-run in {passes} passes"
    );
    for o in &observed {
        assert_eq!(o.last().copied(), Some(2 * total), "a reader's final pass");
    }
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    eprintln!(
        "{WRITERS} group-commit writers appended {total} batches while {READERS} readers \
         made {passes} passes"
    );
}

/// `stats()` while appends run: each segment's live and dead bytes add up
/// to its size, and, with nothing deleted, every byte but the segment
/// header is a live span frame (the segment list and the live bytes are
/// read from the same log).
#[test]
fn stats_during_appends_count_every_frame_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreOptions::default()
        .durability(Durability::Buffered)
        .segment_bytes(16 << 10)
        .open(dir.path())
        .unwrap();
    let stop = AtomicBool::new(false);
    let checks = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut checks = 0u64;
            while !stop.load(Ordering::Acquire) {
                let stats = store.stats().unwrap();
                for s in &stats.segments {
                    assert_eq!(s.live_bytes + s.dead_bytes, s.bytes, "{s:?}");
                    assert_eq!(s.dead_bytes, 32, "{s:?}");
                }
                assert_eq!(
                    stats.log_bytes,
                    stats.segments.iter().map(|s| s.bytes).sum::<u64>()
                );
                checks += 1;
            }
            checks
        });
        for n in 1..=600u64 {
            let session = SESSIONS[usize::try_from(n).unwrap() % SESSIONS.len()];
            store.append(&whole_trace(n, session)).unwrap();
        }
        stop.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    assert!(checks > 0, "the reader never ran");
    let stats = store.stats().unwrap();
    assert!(
        stats.segments.len() > 3,
        "{} segments",
        stats.segments.len()
    );
    assert_eq!(stats.spans, 600 * K);
}

/// Searches running while `rebuild_indexes` replaces the tables find every
/// acknowledged session (rule 8). The rebuild used to drop the search
/// postings held in memory before it committed the rebuilt tables, and
/// searches in between paired an empty buffer with the old tables, which
/// lacked those postings: every search in that window found nothing.
#[test]
fn searches_during_a_rebuild_find_every_acknowledged_session() {
    // Checkpoints far apart: the postings stay in memory.
    let dir = tempfile::tempdir().unwrap();
    let store = StoreOptions::default()
        .durability(Durability::Buffered)
        .checkpoint_bytes(1 << 30)
        .checkpoint_spans(1 << 30)
        .open(dir.path())
        .unwrap();
    let sessions = 40;
    let mut t = 1u64;
    // Each round adds to what the rebuild replays; the window opened
    // from about the tenth round on here (every search in it found 0).
    for round in 0..16u64 {
        let needle = format!("needle{round}q");
        for j in 0..sessions {
            // Long texts, so that the rebuild's replay takes a while.
            let mut text: String = (0..400u64)
                .map(|w| {
                    format!(
                        "{:x} ",
                        ((round * 1_000_003 + j * 7919 + w * 104_729) * 2_654_435_761)
                            & 0xffff_ffff
                    )
                })
                .collect();
            text.push_str(&needle);
            let root = Span::new(tid(t), sid(1), None, "agent", t * 10 + 1, t * 10 + 5)
                .with_attribute("session.id", format!("r{round}-{j}"))
                .with_attribute("input.value", text);
            store
                .append(&[ResourceSpans::for_project("p", vec![root])])
                .unwrap();
            t += 1;
        }
        // Indexes the appended spans; their postings are held in memory.
        store.session("p", "r0-0").unwrap();
        let query = SessionQuery {
            limit: 100,
            filter: span_sessions::SessionFilter {
                search: Some(needle),
                ..Default::default()
            },
            ..SessionQuery::default()
        };
        let stop = AtomicBool::new(false);
        let short = std::thread::scope(|s| {
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut short = Vec::new();
                        while !stop.load(Ordering::Acquire) {
                            let found = store.sessions("p", &query).unwrap().items.len();
                            if found != usize::try_from(sessions).unwrap() {
                                short.push(found);
                            }
                        }
                        short
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(2));
            store.rebuild_indexes().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            stop.store(true, Ordering::Release);
            readers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert!(
            short.is_empty(),
            "round {round}: {} searches found fewer than {sessions} sessions: {:?}",
            short.len(),
            &short[..short.len().min(10)]
        );
    }
}

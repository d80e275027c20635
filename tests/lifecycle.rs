//! Deletes and retention: exact summaries after a delete, vanishing
//! sessions and projects, late spans of deleted traces, privacy deletes,
//! retention that keeps sessions whole, and crash consistency of a
//! tombstone (a crash at every byte of it reopens to before or after).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{copy_dir, dir_bytes, search, segments};

use std::fs;
use std::path::{Path, PathBuf};

use common::tid;
use span_sessions::{
    DeleteReport, Durability, ResourceSpans, RetentionPolicy, SessionFilter, SessionQuery,
    SessionStore, Span, SpanId, StoreOptions, TraceId,
};

fn options() -> StoreOptions {
    SessionStore::options()
        .durability(Durability::Buffered)
        .checkpoint_bytes(u64::MAX)
}

/// A one-span trace `n` in `session` of `project`, starting at `start`.
fn turn(project: &str, session: Option<&str>, n: u64, start: u64) -> ResourceSpans {
    let mut span = Span::new(tid(n), SpanId([1; 8]), None, "agent", start, start + 10)
        .with_attribute("input.value", format!("question {n}"))
        .with_attribute("output.value", format!("answer {n}"));
    if let Some(s) = session {
        span = span.with_attribute("session.id", s);
    }
    ResourceSpans::for_project(project, vec![span])
}

fn with_user(mut rs: ResourceSpans, user: &str) -> ResourceSpans {
    for s in &mut rs.spans {
        *s = s.clone().with_attribute("user.id", user);
    }
    rs
}

fn report(sessions: u64, traces: u64, spans: u64) -> DeleteReport {
    DeleteReport {
        sessions,
        traces,
        spans,
    }
}

#[test]
fn deleting_a_sessions_first_trace_refolds_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    for (n, start) in [(1, 100), (2, 200), (3, 300)] {
        store.append(&[turn("p", Some("s"), n, start)]).unwrap();
    }
    assert_eq!(store.delete_trace(tid(1)).unwrap(), report(0, 1, 1));
    let s = store.session("p", "s").unwrap().unwrap();
    assert_eq!(s.num_traces, 2);
    assert_eq!(s.start_time_unix_nano, 200);
    assert_eq!(s.first_input.unwrap().value, "question 2");
    // The last trace: end and last output move back.
    assert_eq!(store.delete_trace(tid(3)).unwrap(), report(0, 1, 1));
    let s = store.session("p", "s").unwrap().unwrap();
    assert_eq!(s.end_time_unix_nano, 210);
    assert_eq!(s.last_output.unwrap().value, "answer 2");
    let stats = store.project_stats("p").unwrap().unwrap();
    assert_eq!((stats.sessions, stats.traces, stats.spans), (1, 1, 1));
    assert!(store.trace(tid(1)).unwrap().is_none());
    // Deleting what does not exist deletes nothing.
    assert_eq!(store.delete_trace(tid(1)).unwrap(), report(0, 0, 0));
    assert_eq!(
        store.delete_session("p", "nope").unwrap(),
        DeleteReport::default()
    );
}

#[test]
fn a_session_without_traces_vanishes_everywhere_and_so_does_its_project() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    store.append(&[turn("p", Some("gone"), 1, 100)]).unwrap();
    store.append(&[turn("p", Some("gone"), 2, 150)]).unwrap();
    store.append(&[turn("q", Some("kept"), 3, 200)]).unwrap();
    assert_eq!(search(&store, "p", "question 1"), vec!["gone"]);
    assert_eq!(store.delete_session("p", "gone").unwrap(), report(1, 2, 2));
    assert_eq!(store.session("p", "gone").unwrap(), None);
    assert!(store.session_history("p", "gone").unwrap().is_empty());
    // The search postings stay (a superset index); verification drops them.
    assert!(search(&store, "p", "question 1").is_empty());
    assert_eq!(
        store.session_count("p", &SessionFilter::default()).unwrap(),
        0
    );
    // p held nothing else: it is forgotten.
    assert_eq!(store.projects().unwrap(), vec!["q"]);
    assert_eq!(store.project_stats("p").unwrap(), None);
    // The same session id comes back as a new session.
    store.append(&[turn("p", Some("gone"), 4, 400)]).unwrap();
    let s = store.session("p", "gone").unwrap().unwrap();
    assert_eq!((s.num_traces, s.start_time_unix_nano), (1, 400));
    assert_eq!(search(&store, "p", "question"), vec!["gone"]);
    assert_eq!(store.projects().unwrap(), vec!["p", "q"]);
}

#[test]
fn spans_of_a_deleted_trace_that_arrive_later_are_stored_as_a_new_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    let root = turn("p", Some("s"), 1, 100);
    let child = Span::new(
        tid(1),
        SpanId([2; 8]),
        Some(SpanId([1; 8])),
        "llm",
        105,
        106,
    );
    store.append(std::slice::from_ref(&root)).unwrap();
    assert_eq!(store.delete_trace(tid(1)).unwrap(), report(1, 1, 1));
    // A late child: a new trace of one span, its root missing, sessionless.
    let r = store
        .append(&[ResourceSpans::for_project("p", vec![child])])
        .unwrap();
    assert_eq!((r.accepted, r.duplicates), (1, 0));
    let t = store.trace(tid(1)).unwrap().unwrap();
    assert_eq!(t.spans.len(), 1);
    assert_eq!(t.session_id, None);
    // An exporter retry of the deleted root is stored again too.
    let r = store.append(&[root]).unwrap();
    assert_eq!((r.accepted, r.duplicates), (1, 0));
    let h = store.session_history("p", "s").unwrap();
    assert_eq!((h.len(), h[0].num_spans, h[0].root_missing), (1, 2, false));
    // The same holds after a replay of the whole log.
    drop(store);
    let store = options().open(dir.path()).unwrap();
    store.rebuild_indexes().unwrap();
    assert_eq!(store.session_history("p", "s").unwrap(), h);
}

#[test]
fn delete_user_removes_their_sessions_in_every_project_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    store
        .append(&[with_user(turn("p", Some("a"), 1, 100), "alice")])
        .unwrap();
    // A later trace of alice's session without a user id goes with it.
    store.append(&[turn("p", Some("a"), 2, 200)]).unwrap();
    store
        .append(&[with_user(turn("q", Some("a2"), 3, 100), "alice")])
        .unwrap();
    store
        .append(&[with_user(turn("q", None, 4, 100), "alice")])
        .unwrap();
    // Bob's session, with a later trace that names alice: bob's, kept.
    store
        .append(&[with_user(turn("p", Some("b"), 5, 100), "bob")])
        .unwrap();
    store
        .append(&[with_user(turn("p", Some("b"), 6, 200), "alice")])
        .unwrap();
    assert_eq!(store.delete_user("alice").unwrap(), report(2, 4, 4));
    assert_eq!(store.session("p", "a").unwrap(), None);
    assert_eq!(store.session("q", "a2").unwrap(), None);
    assert!(store.trace(tid(4)).unwrap().is_none());
    assert_eq!(store.session("p", "b").unwrap().unwrap().num_traces, 2);
    assert_eq!(store.projects().unwrap(), vec!["p"]);
}

#[test]
fn delete_project_removes_its_traces_with_and_without_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    store.append(&[turn("p", Some("s"), 1, 100)]).unwrap();
    store.append(&[turn("p", None, 2, 100)]).unwrap();
    store.append(&[turn("q", Some("s"), 3, 100)]).unwrap();
    assert_eq!(store.delete_project("p").unwrap(), report(1, 2, 2));
    assert_eq!(store.projects().unwrap(), vec!["q"]);
    assert!(store.session("q", "s").unwrap().is_some());
}

#[test]
fn retention_keeps_sessions_with_recent_activity_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    // "live": an old first trace, a recent last one. "old": all old.
    store.append(&[turn("p", Some("live"), 1, 100)]).unwrap();
    store.append(&[turn("p", Some("live"), 2, 900)]).unwrap();
    store.append(&[turn("p", Some("old"), 3, 150)]).unwrap();
    store.append(&[turn("p", Some("old"), 4, 200)]).unwrap();
    store.append(&[turn("p", None, 5, 100)]).unwrap(); // sessionless, old
    store.append(&[turn("p", None, 6, 950)]).unwrap(); // sessionless, recent
    let policy = RetentionPolicy {
        now_unix_nano: 1_000,
        max_age_nanos: Some(500),
        ..RetentionPolicy::default()
    };
    assert_eq!(store.retain(&policy).unwrap(), report(1, 3, 3));
    assert_eq!(store.session("p", "old").unwrap(), None);
    let live = store.session("p", "live").unwrap().unwrap();
    assert_eq!((live.num_traces, live.start_time_unix_nano), (2, 100));
    assert!(store.trace(tid(5)).unwrap().is_none());
    assert!(store.trace(tid(6)).unwrap().is_some());
    // Running it again finds nothing more.
    assert_eq!(store.retain(&policy).unwrap(), DeleteReport::default());
}

/// "Older than now - max_age" is strict: a session or a sessionless trace
/// whose last activity is exactly the cutoff is kept.
#[test]
fn retention_keeps_what_ends_exactly_at_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    // One-span traces of 10 ns; the cutoff is 1,000 - 500 = 500.
    store.append(&[turn("p", Some("edge"), 1, 490)]).unwrap(); // ends at 500
    store.append(&[turn("p", Some("old"), 2, 489)]).unwrap(); // ends at 499
    store.append(&[turn("p", None, 3, 490)]).unwrap(); // sessionless, ends at 500
    store.append(&[turn("p", None, 4, 489)]).unwrap(); // sessionless, ends at 499
    let policy = RetentionPolicy {
        now_unix_nano: 1_000,
        max_age_nanos: Some(500),
        ..RetentionPolicy::default()
    };
    assert_eq!(store.retain(&policy).unwrap(), report(1, 2, 2));
    assert!(store.session("p", "edge").unwrap().is_some());
    assert_eq!(store.session("p", "old").unwrap(), None);
    assert!(store.trace(tid(3)).unwrap().is_some());
    assert!(store.trace(tid(4)).unwrap().is_none());
}

#[test]
fn retention_by_count_keeps_the_newest_sessions_per_project() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    for (n, project) in [(1u64, "p"), (2, "q")] {
        for i in 0..5u64 {
            let id = n * 100 + i;
            store
                .append(&[turn(project, Some(&format!("s{i}")), id, 100 * i)])
                .unwrap();
        }
    }
    let per_project = RetentionPolicy {
        max_sessions: Some(2),
        ..RetentionPolicy::default()
    };
    let only_q = RetentionPolicy {
        project: Some("q".into()),
        max_sessions: Some(1),
        ..RetentionPolicy::default()
    };
    assert_eq!(store.retain(&only_q).unwrap(), report(4, 4, 4));
    assert_eq!(store.retain(&per_project).unwrap(), report(3, 3, 3));
    let ids = |p: &str| -> Vec<String> {
        let q = SessionQuery {
            limit: 100,
            ..SessionQuery::default()
        };
        let page = store.sessions(p, &q).unwrap();
        page.items.into_iter().map(|s| s.session_id).collect()
    };
    assert_eq!(ids("p"), vec!["s4", "s3"]);
    assert_eq!(ids("q"), vec!["s4"]);
}

/// A retention run larger than one round (1,024 targets) finishes.
#[test]
fn retention_runs_in_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    let batch: Vec<ResourceSpans> = (0..2_500u64)
        .map(|i| {
            let session = (i % 2 == 0).then(|| format!("s{i}"));
            turn("p", session.as_deref(), i + 1, i)
        })
        .collect();
    store.append(&batch).unwrap();
    let policy = RetentionPolicy {
        now_unix_nano: 2_500,
        max_age_nanos: Some(500),
        ..RetentionPolicy::default()
    };
    // Traces ending before 2,000 (start < 1,990) go.
    assert_eq!(store.retain(&policy).unwrap(), report(995, 1990, 1990));
    assert_eq!(store.project_stats("p").unwrap().unwrap().traces, 510);
}

// ------------------------------------------------------------ crashes

fn last_segment(dir: &Path) -> PathBuf {
    common::segments(dir).pop().unwrap()
}

/// Every answer that a delete can change.
fn answers(store: &SessionStore, traces: &[TraceId]) -> String {
    let mut out = format!("{:?}\n", store.projects().unwrap());
    for p in ["p", "q"] {
        let q = SessionQuery {
            limit: 1000,
            ..SessionQuery::default()
        };
        out += &format!("{:?}\n", store.sessions(p, &q).unwrap().items);
        out += &format!("{:?}\n", store.project_stats(p).unwrap());
        out += &format!("{:?}\n", search(store, p, "question"));
        for s in ["s0", "s1"] {
            out += &format!("{:?}\n", store.session_history(p, s).unwrap());
        }
    }
    for t in traces {
        out += &format!("{:?}\n", store.trace(*t).unwrap());
    }
    out
}

/// A crash at every point of a delete: the tombstone cut at every byte
/// (from not written at all to complete), with the index as it was
/// before the delete or as the live store left it. Every state reopens
/// to the answers from before the delete or after it, never a mix.
#[test]
fn a_crash_at_every_step_of_a_delete_reopens_to_before_or_after() {
    type Delete = fn(&SessionStore) -> DeleteReport;
    let deletes: [(&str, Delete); 4] = [
        ("first trace", |s| s.delete_trace(tid(1)).unwrap()),
        ("session", |s| s.delete_session("p", "s0").unwrap()),
        ("user", |s| s.delete_user("u").unwrap()),
        ("project", |s| s.delete_project("q").unwrap()),
    ];
    let traces: Vec<TraceId> = (1..=6).map(tid).collect();
    for (name, delete) in deletes {
        let dir = tempfile::tempdir().unwrap();
        let store = options().open(dir.path()).unwrap();
        for n in 1..=6u64 {
            let project = if n == 6 { "q" } else { "p" };
            let rs = turn(project, Some(&format!("s{}", n % 2)), n, 100 * n);
            store.append(&[with_user(rs, "u")]).unwrap();
        }
        store.sync().unwrap();
        let before = answers(&store, &traces);
        let before_dir = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), before_dir.path());
        let seg = last_segment(dir.path());
        let len_before = fs::metadata(&seg).unwrap().len();
        let r = delete(&store);
        assert!(r.traces > 0, "{name}");
        let after = answers(&store, &traces);
        assert_ne!(before, after, "{name}");
        let len_after = fs::metadata(&seg).unwrap().len();
        // The live directory as a crash right after the call would leave it.
        let after_dir = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), after_dir.path());
        drop(store);
        let seg_name = seg.file_name().unwrap().to_owned();
        for cut in len_before..=len_after {
            for index_from in [before_dir.path(), after_dir.path()] {
                let work = tempfile::tempdir().unwrap();
                copy_dir(after_dir.path(), work.path());
                fs::copy(
                    index_from.join("index.redb"),
                    work.path().join("index.redb"),
                )
                .unwrap();
                let log = work.path().join("log").join(&seg_name);
                fs::OpenOptions::new()
                    .write(true)
                    .open(&log)
                    .unwrap()
                    .set_len(cut)
                    .unwrap();
                let store = options()
                    .open(work.path())
                    .unwrap_or_else(|e| panic!("{name}, cut at {cut}: {e}"));
                let got = answers(&store, &traces);
                let want = if cut == len_after { &after } else { &before };
                assert!(
                    got == *want,
                    "{name}, cut at {cut} of {len_before}..={len_after}: a mix"
                );
            }
        }
    }
}

// ------------------------------------------------------------ compaction

/// A crash at every step of a compaction (after each batch of copies,
/// after the remap commit, once durable, after each removed segment, and
/// with the copies cut at every 23rd byte) reopens with the same answers,
/// and the reopened store passes `verify` (its indexes equal a rebuild
/// from what is left of the log).
#[test]
fn a_crash_at_every_step_of_a_compaction_keeps_the_answers() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || options().segment_bytes(4096);
    let store = opts().open(dir.path()).unwrap();
    let traces: Vec<TraceId> = (1..=60).map(tid).collect();
    for n in 1..=60u64 {
        let project = if n % 3 == 0 { "q" } else { "p" };
        let session = format!("s{}", n % 12);
        let rs = turn(
            project,
            (n % 5 != 0).then_some(session.as_str()),
            n,
            100 * n,
        );
        store
            .append(&[with_user(rs, &format!("u{}", n % 4))])
            .unwrap();
    }
    for s in 2..12 {
        store.delete_session("p", &format!("s{s}")).unwrap();
    }
    store.delete_user("u3").unwrap();
    store.sync().unwrap();
    let before = answers(&store, &traces);
    let stats = store.stats().unwrap();
    let durable_end = stats.log_bytes + stats.segments[0].base_lsn;
    let mut images: Vec<(span_sessions::CompactStep, tempfile::TempDir)> = Vec::new();
    let report = store
        .compact_with_crash_points(&mut |step| {
            let image = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), image.path());
            images.push((step, image));
        })
        .unwrap();
    assert!(report.segments_dropped > 0, "{report:?}");
    assert_eq!(answers(&store, &traces), before);
    let after_segments = segments(dir.path());
    drop(store);
    // Opens a copy (an open may finish an interrupted compaction).
    let check = |path: &Path, what: &str| {
        let work = tempfile::tempdir().unwrap();
        copy_dir(path, work.path());
        let store = opts()
            .open(work.path())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(answers(&store, &traces) == before, "{what}: answers differ");
        let v = store.verify().unwrap();
        assert!(v.is_ok(), "{what}: {:?}", v.problems);
        // And a compaction after it changes nothing either.
        store.compact().unwrap();
        assert!(
            answers(&store, &traces) == before,
            "{what}: answers differ after compacting"
        );
        let v = store.verify().unwrap();
        assert!(v.is_ok(), "{what}, compacted again: {:?}", v.problems);
    };
    let steps: Vec<_> = images.iter().map(|(s, _)| *s).collect();
    assert!(
        steps.contains(&span_sessions::CompactStep::Durable),
        "{steps:?}"
    );
    for (step, image) in &images {
        check(image.path(), &format!("crash after {step:?}"));
    }
    // Removal cut short after each file (oldest first).
    let (_, durable) = images
        .iter()
        .find(|(s, _)| *s == span_sessions::CompactStep::Durable)
        .unwrap();
    let all = segments(durable.path());
    let first_kept = after_segments[0].file_name().unwrap().to_owned();
    let dropped = all
        .iter()
        .take_while(|p| p.file_name().unwrap() != first_kept)
        .count();
    assert_eq!(dropped, report.segments_dropped);
    for removed in 0..=dropped {
        let work = tempfile::tempdir().unwrap();
        copy_dir(durable.path(), work.path());
        for p in segments(work.path()).iter().take(removed) {
            fs::remove_file(p).unwrap();
        }
        check(
            work.path(),
            &format!("{removed} of {dropped} segments removed"),
        );
    }
    // Copies torn anywhere (before they were made durable).
    let (_, copied) = images
        .iter()
        .rfind(|(s, _)| *s == span_sessions::CompactStep::Remapped)
        .unwrap();
    let last = segments(copied.path()).pop().unwrap();
    let base: u64 = last.file_stem().unwrap().to_string_lossy().parse().unwrap();
    let len = fs::metadata(&last).unwrap().len();
    let low = durable_end.saturating_sub(base).max(32);
    for cut in (low..len).step_by(23).chain([len]) {
        let work = tempfile::tempdir().unwrap();
        copy_dir(copied.path(), work.path());
        let seg = work.path().join("log").join(last.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        check(work.path(), &format!("copies cut at {cut} of {len}"));
    }
}

/// Space: after deleting 90% of the sessions and compacting (log and
/// index), the log is exactly as large as a fresh store's holding only what
/// is left, and the index and the directory no larger than 1.1x a fresh
/// store's. (redb's compaction frees whole pages but does not merge the
/// part-empty leaves deletes leave behind: without `compact_index`
/// rewriting the tables whose leaves are a fifth or more empty, the index
/// stayed about twice a fresh one.) Prints the figures
/// (`cargo test --test lifecycle space -- --nocapture`).
#[test]
fn space_after_deleting_ninety_percent_and_compacting() {
    use span_sessions::workload::{Workload, WorkloadConfig};
    let cfg = WorkloadConfig {
        sessions: 400,
        ..WorkloadConfig::default()
    };
    let batches: Vec<Vec<ResourceSpans>> = Workload::new(cfg).batches(200).collect();
    let opts = || {
        SessionStore::options()
            .segment_bytes(1 << 20)
            .durability(Durability::Buffered)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = opts().open(dir.path()).unwrap();
    for b in &batches {
        store.append(b).unwrap();
    }
    let full = {
        store.sync().unwrap();
        dir_bytes(dir.path())
    };
    let mut deleted = DeleteReport::default();
    for p in store.projects().unwrap() {
        let q = SessionQuery {
            limit: 100_000,
            ..SessionQuery::default()
        };
        for (i, s) in store.sessions(&p, &q).unwrap().items.iter().enumerate() {
            if i % 10 != 0 {
                deleted.add(store.delete_session(&p, &s.session_id).unwrap());
            }
        }
    }
    // Every session's summary and history, before and after compacting.
    let everything = |store: &SessionStore| {
        let mut out = Vec::new();
        for p in store.projects().unwrap() {
            let q = SessionQuery {
                limit: 100_000,
                ..SessionQuery::default()
            };
            for s in store.sessions(&p, &q).unwrap().items {
                let history = store.session_history(&p, &s.session_id).unwrap();
                out.push(format!("{s:?}\n{history:?}"));
            }
            out.push(format!("{:?}", store.project_stats(&p).unwrap()));
        }
        out
    };
    let before = everything(&store);
    let report = store.compact().unwrap();
    store.compact_index().unwrap();
    assert_eq!(everything(&store), before);
    assert!(store.verify().unwrap().problems.is_empty());
    let kept: Vec<Vec<ResourceSpans>> = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|rs| ResourceSpans {
                    resource: rs.resource.clone(),
                    spans: rs
                        .spans
                        .iter()
                        .filter(|s| store.trace(s.trace_id).unwrap().is_some())
                        .cloned()
                        .collect(),
                })
                .filter(|rs| !rs.spans.is_empty())
                .collect::<Vec<_>>()
        })
        .filter(|b| !b.is_empty())
        .collect();
    let stats = store.stats().unwrap();
    store.close().unwrap();
    let compacted = dir_bytes(dir.path());

    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = opts().open(fresh_dir.path()).unwrap();
    for b in &kept {
        fresh.append(b).unwrap();
    }
    let fresh_stats = fresh.stats().unwrap();
    fresh.close().unwrap();
    let fresh_bytes = dir_bytes(fresh_dir.path());
    let ratio = compacted as f64 / fresh_bytes as f64;
    println!(
        "full {full} B; deleted {deleted:?}; {report:?}; after: {compacted} B \
         (log {} B, index {} B); fresh: {fresh_bytes} B (log {} B, index {} B); ratio {ratio:.3}",
        stats.log_bytes, stats.index_bytes, fresh_stats.log_bytes, fresh_stats.index_bytes
    );
    assert!(deleted.traces > 0);
    assert_eq!(stats.log_bytes, fresh_stats.log_bytes);
    assert!(
        stats.index_bytes as f64 <= 1.1 * fresh_stats.index_bytes as f64,
        "compacted index is {} B, a fresh one {} B",
        stats.index_bytes,
        fresh_stats.index_bytes
    );
    assert!(ratio <= 1.1, "compacted store is {ratio:.3}x a fresh one");
}

/// Readers running during a compaction keep working: `trace` (which
/// follows LSNs into the log) and the session list never fail and always
/// give the same answers while segments are rewritten and removed.
#[test]
fn readers_keep_working_during_compaction() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(options().segment_bytes(4096).open(dir.path()).unwrap());
    for n in 1..=200u64 {
        let s = format!("s{}", n % 40);
        store.append(&[turn("p", Some(&s), n, n)]).unwrap();
    }
    for s in 0..36 {
        store.delete_session("p", &format!("s{s}")).unwrap();
    }
    let kept: Vec<TraceId> = (1..=200u64).filter(|n| n % 40 >= 36).map(tid).collect();
    let want: Vec<_> = kept.iter().map(|t| store.trace(*t).unwrap()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, done, kept, want) = (
                Arc::clone(&store),
                Arc::clone(&done),
                kept.clone(),
                want.clone(),
            );
            std::thread::spawn(move || {
                let mut rounds = 0u64;
                while !done.load(Ordering::Acquire) || rounds == 0 {
                    for (t, w) in kept.iter().zip(&want) {
                        assert_eq!(&store.trace(*t).unwrap(), w);
                    }
                    assert_eq!(store.session("p", "s39").unwrap().unwrap().num_traces, 5);
                    rounds += 1;
                }
                rounds
            })
        })
        .collect();
    let before = segments(dir.path()).len();
    let report = store.compact().unwrap();
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(report.segments_dropped > 0 && segments(dir.path()).len() < before);
}

/// A compaction cut short after its copies were written, before its index
/// pointed at them, leaves the copies in the log: the reopen's replay
/// meets them, and must leave the index a rebuild would build. Then live
/// spans fill the segment that holds the copies, so the next compaction's
/// cut falls between the originals and those copies and copies the
/// originals again. `verify` (which rebuilds the index from the log and
/// compares every table, log positions included) called the store damaged
/// when the replay had kept the originals and a rebuild took the first
/// copies.
#[test]
fn a_compaction_after_one_cut_short_leaves_an_index_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || options().segment_bytes(4096);
    let store = opts().open(dir.path()).unwrap();
    for n in 1..=60u64 {
        let session = format!("s{}", n % 12);
        store
            .append(&[turn("p", Some(&session), n, 100 * n)])
            .unwrap();
    }
    for s in 2..12 {
        store.delete_session("p", &format!("s{s}")).unwrap();
    }
    store.sync().unwrap();
    let mut images: Vec<(span_sessions::CompactStep, tempfile::TempDir)> = Vec::new();
    store
        .compact_with_crash_points(&mut |step| {
            let image = tempfile::tempdir().unwrap();
            copy_dir(dir.path(), image.path());
            images.push((step, image));
        })
        .unwrap();
    drop(store);
    let (_, copied) = images
        .iter()
        .find(|(s, _)| *s == span_sessions::CompactStep::Copied)
        .unwrap();
    let store = opts().open(copied.path()).unwrap();
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "after the reopen: {:?}", v.problems);
    for n in 1000..1100u64 {
        store
            .append(&[turn("p", Some("fresh"), n, 100 * n)])
            .unwrap();
    }
    let read = |store: &SessionStore| {
        (1..=60u64)
            .chain(1000..1100)
            .map(|n| store.trace(tid(n)).unwrap().map(|t| t.spans))
            .collect::<Vec<_>>()
    };
    let before = read(&store);
    let report = store.compact().unwrap();
    assert!(report.segments_dropped > 0, "{report:?}");
    assert_eq!(before, read(&store));
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "after a second compaction: {:?}", v.problems);
    store.rebuild_indexes().unwrap();
    assert_eq!(before, read(&store));
}

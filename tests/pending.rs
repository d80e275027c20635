#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Deferred indexing (`StoreOptions::index_batch_bytes`): appends write the
//! log and leave the spans pending; every read indexes what is pending
//! first. These tests fail if a read could miss an acknowledged batch
//! (contract rule 8), if idempotency or the spans-per-trace limit forgot
//! pending spans, or if pending spans were lost by a crash.

mod common;

use common::copy_dir;

use common::{Gate, GatedSync, sid, snapshot, tid};
use span_sessions::{
    Durability, ResourceSpans, SessionFilter, SessionQuery, SessionStore, Span, StoreOptions,
};

/// Never indexes on its own: only reads, checkpoints and other writes do.
/// `spans`, each with an attribute of `bytes` bytes of padding.
fn padded(spans: Vec<Span>, bytes: usize) -> Vec<Span> {
    spans
        .into_iter()
        .map(|s| s.with_attribute("padding", "x".repeat(bytes)))
        .collect()
}

fn lazy() -> StoreOptions {
    SessionStore::options()
        .durability(Durability::Buffered)
        .index_batch_bytes(usize::MAX)
}

fn turn(t: u64, session: &str, start: u64, text: &str) -> Vec<Span> {
    let root = Span::new(tid(t), sid(t * 100), None, "agent", start, start + 50)
        .with_attribute("session.id", session)
        .with_attribute("user.id", "ada")
        .with_attribute("input.value", format!("question {text}"))
        .with_attribute("output.value", format!("answer {text}"));
    let child = Span::new(
        tid(t),
        sid(t * 100 + 1),
        Some(sid(t * 100)),
        "llm",
        start + 1,
        start + 40,
    )
    .with_attribute("openinference.span.kind", "LLM")
    .with_attribute("llm.token_count.prompt", 7i64)
    .with_attribute("llm.token_count.completion", 3i64);
    vec![child, root]
}

fn put(store: &SessionStore, spans: Vec<Span>) -> span_sessions::AppendReport {
    store
        .append(&[ResourceSpans::for_project("p", spans)])
        .unwrap()
}

type Read = fn(&SessionStore);

/// Every read path, each checking that it sees the batch
/// `turn(1, "s1", 1_000, "alpha")`.
fn read_paths() -> [(&'static str, Read); 9] {
    [
        ("session_history", |s| {
            let turns = s.session_history("p", "s1").unwrap();
            assert_eq!(turns.len(), 1);
            assert_eq!(
                turns[0].input.as_ref().map(|v| v.value.as_str()),
                Some("question alpha")
            );
        }),
        ("session_history_page", |s| {
            let page = s.session_history_page("p", "s1", 10, None).unwrap();
            assert_eq!(page.items.len(), 1);
        }),
        ("session", |s| {
            let summary = s.session("p", "s1").unwrap().unwrap();
            assert_eq!(summary.num_traces, 1);
            assert_eq!(summary.tokens.total, 10);
        }),
        ("sessions", |s| {
            let page = s.sessions("p", &SessionQuery::default()).unwrap();
            assert_eq!(page.items.len(), 1);
        }),
        ("session_count with search", |s| {
            let filter = SessionFilter {
                search: Some("ALPHA".into()),
                ..SessionFilter::default()
            };
            assert_eq!(s.session_count("p", &filter).unwrap(), 1);
        }),
        ("project_stats", |s| {
            let stats = s.project_stats("p").unwrap().unwrap();
            assert_eq!(stats.spans, 2);
        }),
        ("trace", |s| {
            let trace = s.trace(tid(1)).unwrap().unwrap();
            assert_eq!(trace.spans.len(), 2);
        }),
        ("projects", |s| {
            assert_eq!(s.projects().unwrap(), vec!["p".to_owned()]);
        }),
        ("stats", |s| {
            let st = s.stats().unwrap();
            assert_eq!((st.sessions, st.traces, st.spans), (1, 1, 2));
        }),
    ]
}

#[test]
fn every_read_sees_batches_that_are_still_pending() {
    // One fresh store per read path, so that no earlier read indexed the
    // batch on the path's behalf.
    for (what, read) in read_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = lazy().open(dir.path()).unwrap();
        assert_eq!(put(&store, turn(1, "s1", 1_000, "alpha")).accepted, 2);
        // The index file has not been written since the open: the batch is
        // pending, yet the read must see it.
        read(&store);
        println!("{what}: ok");
    }
}

/// The same while the batch is being indexed on a thread of its own: the
/// batch (over 1 MiB) fills a 1 MiB group, which `append` hands off before
/// it returns; every read must wait for it.
#[test]
fn every_read_sees_batches_being_indexed_in_the_background() {
    for (what, read) in read_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::options()
            .durability(Durability::Buffered)
            .index_batch_bytes(1 << 20)
            .open(dir.path())
            .unwrap();
        let spans = padded(turn(1, "s1", 1_000, "alpha"), 600_000);
        assert_eq!(put(&store, spans).accepted, 2);
        read(&store);
        println!("{what}: ok");
    }
}

#[test]
fn pending_and_indexed_spans_are_both_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().open(dir.path()).unwrap();
    assert_eq!(put(&store, turn(1, "s1", 1_000, "a")).accepted, 2);
    // Same spans again while the first copy is pending.
    let again = put(&store, turn(1, "s1", 1_000, "a"));
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    // A read indexes them; a third copy is a duplicate of indexed spans.
    assert_eq!(store.session("p", "s1").unwrap().unwrap().num_traces, 1);
    let third = put(&store, turn(1, "s1", 1_000, "a"));
    assert_eq!((third.accepted, third.duplicates), (0, 2));
    // A duplicate inside one batch, of a span that is pending.
    let mut spans = turn(2, "s1", 2_000, "b");
    spans.extend(turn(2, "s1", 2_000, "b"));
    let fourth = put(&store, spans);
    assert_eq!((fourth.accepted, fourth.duplicates), (2, 2));
    assert_eq!(store.project_stats("p").unwrap().unwrap().spans, 4);
    assert_eq!(store.trace(tid(2)).unwrap().unwrap().spans.len(), 2);
}

#[test]
fn the_spans_per_trace_limit_counts_pending_spans() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().max_spans_per_trace(3).open(dir.path()).unwrap();
    let span = |s: u64| Span::new(tid(1), sid(s), Some(sid(1)), "x", s, s + 1);
    assert_eq!(put(&store, vec![span(2), span(3)]).accepted, 2);
    let r = put(&store, vec![span(4), span(5)]);
    assert_eq!(r.accepted, 1);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(r.rejected[0].span_id, sid(5));
    // Indexed now; the limit still holds.
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().spans.len(), 3);
    let r = put(&store, vec![span(6)]);
    assert_eq!((r.accepted, r.rejected.len()), (0, 1));
}

#[test]
fn a_crash_with_spans_pending_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().open(dir.path()).unwrap();
    for t in 1..=20 {
        put(&store, turn(t, &format!("s{}", t % 3), t * 1_000, "x"));
    }
    // What a process killed now leaves on disk: the log holds every
    // batch, the index none of them (nothing was read or checkpointed).
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    let traces: Vec<_> = (1..=20).map(tid).collect();
    let reopened = SessionStore::open(crashed.path()).unwrap();
    assert_eq!(reopened.open_report().frames_replayed, 40);
    assert_eq!(
        snapshot(&reopened, &traces, &[], &[]),
        snapshot(&store, &traces, &[], &[])
    );
    assert!(reopened.verify().unwrap().is_ok());
}

#[test]
fn indexing_in_groups_gives_the_same_answers_as_indexing_every_batch() {
    let answers = |opts: StoreOptions| {
        let dir = tempfile::tempdir().unwrap();
        let store = opts.open(dir.path()).unwrap();
        for t in 1..=60 {
            // Children and roots of a trace arrive in separate batches.
            let mut spans = turn(t, &format!("s{}", t % 7), (t % 13) * 1_000 + t, "x");
            let root = spans.pop().unwrap();
            put(&store, spans);
            put(&store, vec![root]);
        }
        let traces: Vec<_> = (1..=60).map(tid).collect();
        snapshot(&store, &traces, &[], &[])
    };
    let every_batch = answers(SessionStore::options().index_batch_bytes(0));
    assert_eq!(
        answers(SessionStore::options().index_batch_bytes(1 << 10)),
        every_batch
    );
    assert_eq!(answers(lazy()), every_batch);
}

/// Regression (found by the model test): an append made only of
/// duplicates leaves nothing pending but remembers the trace's span ids;
/// a delete must not leave that memory behind, or the deleted spans,
/// appended again, would be taken for duplicates.
#[test]
fn spans_deleted_after_a_duplicate_only_append_can_be_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().open(dir.path()).unwrap();
    assert_eq!(put(&store, turn(1, "s1", 1_000, "a")).accepted, 2);
    assert_eq!(store.session("p", "s1").unwrap().unwrap().num_traces, 1);
    assert_eq!(put(&store, turn(1, "s1", 1_000, "a")).duplicates, 2);
    store.delete_trace(tid(1)).unwrap();
    assert!(store.trace(tid(1)).unwrap().is_none());
    let again = put(&store, turn(1, "s1", 1_000, "a"));
    assert_eq!((again.accepted, again.duplicates), (2, 0));
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().spans.len(), 2);
}

/// The homes of new traces (`trace_homes`) are written at checkpoints, not
/// with each group: until then every path must find those traces through
/// the homes held in memory (a later group's spans, duplicates, `trace`,
/// deletes, and a replay that meets a tombstone), or a trace would be
/// split in two, a duplicate stored, or a delete miss its victim.
#[test]
fn traces_whose_homes_are_not_written_yet_are_found_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().checkpoint_bytes(u64::MAX).open(dir.path()).unwrap();
    let mut spans = turn(1, "s1", 1_000, "a");
    let root = spans.pop().unwrap();
    put(&store, spans);
    // Indexed: the trace's record is in the table, its home in memory.
    assert_eq!(store.stats().unwrap().traces, 1);
    put(&store, vec![root.clone()]);
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().spans.len(), 2);
    let st = store.stats().unwrap();
    assert_eq!((st.traces, st.spans), (1, 2), "one trace, not two");
    let again = put(&store, turn(1, "s1", 1_000, "a"));
    assert_eq!((again.accepted, again.duplicates), (0, 2));

    // A trace first seen after the last write of homes, then deleted.
    put(&store, turn(2, "s2", 2_000, "b"));
    assert_eq!(store.session("p", "s2").unwrap().unwrap().num_traces, 1);
    assert_eq!(store.delete_trace(tid(2)).unwrap().traces, 1);
    assert!(store.trace(tid(2)).unwrap().is_none());
    put(&store, turn(3, "s1", 3_000, "c"));
    let traces: Vec<_> = (1..=3).map(tid).collect();
    let before = snapshot(&store, &traces, &[], &[("p", "s2")]);
    assert_eq!(before.traces.iter().filter(|(_, t)| t.is_some()).count(), 2);

    // Replays (verify's scratch index, a rebuild, a reopen after a crash)
    // meet trace 2's spans and then its tombstone while its home is still
    // in memory.
    assert!(store.verify().unwrap().is_ok());
    store.rebuild_indexes().unwrap();
    assert_eq!(snapshot(&store, &traces, &[], &[("p", "s2")]), before);
    put(&store, turn(2, "s2", 4_000, "d"));
    store.delete_trace(tid(2)).unwrap();
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    let reopened = SessionStore::open(crashed.path()).unwrap();
    assert!(reopened.open_report().frames_replayed > 0);
    assert_eq!(snapshot(&reopened, &traces, &[], &[("p", "s2")]), before);
}

/// An append that fills a group of 1 MiB or more hands it to a thread of
/// its own and returns; the appends after it (until the next group is
/// full) run while that group is being indexed: idempotency and the
/// spans-per-trace limit must count the group's spans, which the indexes
/// may not hold yet.
#[test]
fn appends_made_while_a_group_is_indexed_count_its_spans() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::options()
        .durability(Durability::Buffered)
        .index_batch_bytes(1 << 20)
        .max_spans_per_trace(3)
        .open(dir.path())
        .unwrap();
    let span = |t: u64, k: u64| {
        let parent = (k > 0).then(|| sid(t * 10));
        Span::new(
            tid(t),
            sid(t * 10 + k),
            parent,
            "step",
            t * 100 + k,
            t * 100 + 50,
        )
        .with_attribute("session.id", format!("s{}", t % 50))
        .with_attribute("padding", "x".repeat(1_100))
    };
    let rounds = 20u64;
    for round in 0..rounds {
        let traces: Vec<u64> = (round * 500 + 1..=round * 500 + 500).collect();
        // Two spans of each of 500 new traces: over 1 MiB with what the
        // previous round left pending, a group handed to its own thread.
        let first: Vec<Span> = traces
            .iter()
            .flat_map(|&t| [span(t, 0), span(t, 1)])
            .collect();
        assert_eq!(put(&store, first).accepted, 1_000);
        // At once, most likely while that group is being indexed, in
        // batches too small to fill the next group: the same spans again,
        // and two more of each trace, of which the limit admits one.
        for chunk in traces.chunks(50) {
            let batch: Vec<Span> = chunk
                .iter()
                .flat_map(|&t| [span(t, 0), span(t, 1), span(t, 2), span(t, 3)])
                .collect();
            let r = put(&store, batch);
            assert_eq!(
                (r.accepted, r.duplicates, r.rejected.len()),
                (50, 100, 50),
                "round {round}"
            );
        }
    }
    for t in [1, 777, rounds * 500] {
        let ids: Vec<_> = store
            .trace(tid(t))
            .unwrap()
            .unwrap()
            .spans
            .iter()
            .map(|s| s.span.span_id)
            .collect();
        assert_eq!(ids, vec![sid(t * 10), sid(t * 10 + 1), sid(t * 10 + 2)]);
    }
    let stats = store.project_stats("p").unwrap().unwrap();
    assert_eq!((stats.traces, stats.spans), (rounds * 500, rounds * 1_500));
    assert!(store.verify().unwrap().is_ok());
}

/// A checkpoint is taken once `checkpoint_spans` spans have been appended
/// since the last one, however few bytes they are: a crash then replays
/// only the spans appended after it.
#[test]
fn a_checkpoint_is_taken_every_checkpoint_spans_spans() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy()
        .checkpoint_bytes(u64::MAX)
        .checkpoint_spans(10)
        .open(dir.path())
        .unwrap();
    let replayed_after_crash = || {
        // A read first: it waits for the indexing thread, and so for a
        // checkpoint that thread is taking.
        store.stats().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), crashed.path());
        let reopened = SessionStore::open(crashed.path()).unwrap();
        reopened.open_report().frames_replayed
    };
    // Two spans a turn: four turns stay under the bound.
    for t in 1..=4 {
        put(&store, turn(t, "s1", t * 1_000, "x"));
    }
    assert_eq!(replayed_after_crash(), 8);
    // The fifth reaches ten spans: checkpointed.
    put(&store, turn(5, "s1", 5_000, "x"));
    assert_eq!(replayed_after_crash(), 0);
    // Counting starts again from that checkpoint.
    for t in 6..=9 {
        put(&store, turn(t, "s2", t * 1_000, "y"));
    }
    assert_eq!(replayed_after_crash(), 8);
    put(&store, turn(10, "s2", 10_000, "y"));
    assert_eq!(replayed_after_crash(), 0);
}

/// A group of pending spans is indexed once it holds `index_batch_spans`
/// spans, however few bytes they are, or `index_batch_bytes` bytes,
/// however few spans; either way every answer stays the same.
#[test]
fn a_group_is_full_at_index_batch_spans_or_index_batch_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().index_batch_spans(10).open(dir.path()).unwrap();
    // Two spans a turn: four turns stay under the bound.
    for t in 1..=4 {
        put(&store, turn(t, "s1", t * 1_000, "x"));
    }
    assert_eq!(store.full_groups(), 0);
    put(&store, turn(5, "s1", 5_000, "x"));
    assert_eq!(store.full_groups(), 1, "ten spans fill a group");
    for t in 6..=9 {
        put(&store, turn(t, "s1", t * 1_000, "x"));
    }
    assert_eq!(store.full_groups(), 1, "counting starts again");
    put(&store, turn(10, "s1", 10_000, "x"));
    assert_eq!(store.full_groups(), 2);
    assert_eq!(store.session("p", "s1").unwrap().unwrap().num_traces, 10);

    let dir = tempfile::tempdir().unwrap();
    let store = lazy()
        .index_batch_bytes(4 << 10)
        .index_batch_spans(usize::MAX)
        .open(dir.path())
        .unwrap();
    let padded = |t: u64| padded(turn(t, "s2", t * 1_000, "y"), 1_500);
    put(&store, padded(1));
    assert_eq!(store.full_groups(), 0, "about 3 KiB");
    put(&store, padded(2));
    assert_eq!(store.full_groups(), 1, "about 6 KiB fill a 4 KiB group");
    assert_eq!(store.session("p", "s2").unwrap().unwrap().num_traces, 2);
}

/// While no group is being indexed, a group a quarter full (by spans or
/// by bytes) is handed to the indexing thread at once rather than left to
/// fill, if it is large enough for a thread of its own
/// (`own_thread_bytes`); every answer stays the same.
#[test]
fn an_idle_indexing_thread_takes_a_group_a_quarter_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy()
        .index_batch_spans(40)
        .own_thread_bytes(0)
        .open(dir.path())
        .unwrap();
    // Two spans a turn: four turns are under a quarter of 40.
    for t in 1..=4 {
        put(&store, turn(t, "s1", t * 1_000, "x"));
    }
    assert_eq!(store.full_groups(), 0);
    put(&store, turn(5, "s1", 5_000, "x"));
    assert_eq!(store.full_groups(), 1, "ten spans are a quarter of 40");
    assert_eq!(store.session("p", "s1").unwrap().unwrap().num_traces, 5);

    // Not below `own_thread_bytes`: such a group would be indexed by the
    // append itself, which is what waiting for a full one spares it.
    let dir = tempfile::tempdir().unwrap();
    let store = lazy().index_batch_spans(40).open(dir.path()).unwrap();
    for t in 1..=19 {
        put(&store, turn(t, "s3", t * 1_000, "x"));
    }
    assert_eq!(store.full_groups(), 0, "38 small spans");
    put(&store, turn(20, "s3", 20_000, "x"));
    assert_eq!(store.full_groups(), 1, "40 spans fill the group");

    // By bytes: a quarter of 40,000 is two turns of two ~3.4 KB spans.
    let dir = tempfile::tempdir().unwrap();
    let store = lazy()
        .index_batch_bytes(40_000)
        .index_batch_spans(usize::MAX)
        .own_thread_bytes(0)
        .open(dir.path())
        .unwrap();
    let padded = |t: u64| padded(turn(t, "s2", t * 1_000, "y"), 3_000);
    put(&store, padded(1));
    assert_eq!(store.full_groups(), 0, "about 7 KB");
    put(&store, padded(2));
    assert_eq!(store.full_groups(), 1, "about 14 KB");
    assert_eq!(store.session("p", "s2").unwrap().unwrap().num_traces, 2);
    assert_eq!(store.session_history("p", "s2").unwrap().len(), 2);
}

/// A group also closes once the texts it holds in memory (root inputs and
/// outputs) reach 8 MiB, however large `index_batch_bytes` is: spans that
/// are large because of their inputs and outputs make smaller groups.
#[test]
fn a_group_holding_8_mib_of_root_texts_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = lazy()
        .index_batch_spans(usize::MAX)
        .open(dir.path())
        .unwrap();
    // Each turn's root has an input and an output of about 1 MiB each.
    let text = "x".repeat(1 << 20);
    for t in 1..=3 {
        put(&store, turn(t, "s1", t * 1_000, &text));
    }
    assert_eq!(store.full_groups(), 0, "about 6 MiB held");
    put(&store, turn(4, "s1", 4_000, &text));
    assert_eq!(store.full_groups(), 1, "about 8 MiB held");
    let s = store.session("p", "s1").unwrap().unwrap();
    assert_eq!(s.num_traces, 4);
}

/// A group full by its span count while the group before it is still
/// being indexed goes on taking appends (the appends do not wait) until
/// it holds four times `index_batch_spans`; then the append that fills it
/// waits for the group before it and hands it off. Every answer stays the
/// same.
#[test]
fn a_full_group_grows_while_the_group_before_it_is_indexed() {
    full_group_grows(
        |o| o.index_batch_bytes(usize::MAX).index_batch_spans(4),
        |t| turn(t, "s", t * 1_000, "x"),
    );
}

/// The same with groups full by their encoded bytes (spans large because
/// of their attributes, which a group does not hold): such a group grows
/// too, up to four times `index_batch_bytes`.
#[test]
fn a_group_full_by_bytes_grows_while_the_group_before_it_is_indexed() {
    // Each span is 3,000 bytes of padding and less than 428 of the rest:
    // four spans (two turns) fill 12,000 bytes and two do not; sixteen
    // reach four times that and fourteen do not, as with the span counts
    // above.
    full_group_grows(
        |o| o.index_batch_spans(usize::MAX).index_batch_bytes(12_000),
        |t| padded(turn(t, "s", t * 1_000, "x"), 3_000),
    );
}

/// Turns of two spans, in groups full at four spans (by `options`) and
/// capped at sixteen, while the indexing thread is held in a checkpoint.
fn full_group_grows(options: fn(StoreOptions) -> StoreOptions, turn_of: fn(u64) -> Vec<Span>) {
    let dir = tempfile::tempdir().unwrap();
    let gate = std::sync::Arc::new(Gate::default());
    let store = options(
        SessionStore::options()
            .durability(Durability::Buffered)
            .file_system(std::sync::Arc::new(GatedSync {
                gate: std::sync::Arc::clone(&gate),
                indexing_thread_only: false,
                files: "index.redb",
            })),
    )
    .own_thread_bytes(0)
    .checkpoint_spans(20)
    .open(dir.path())
    .unwrap();
    // Groups of two turns (two spans each) until turn 10 reaches the
    // checkpoint, which the indexing thread takes after its group: its
    // index fsync waits at the closed gate, so that thread stays busy.
    for t in 1..=9 {
        put(&store, turn_of(t));
    }
    // A read indexes everything first: no group is being indexed when the
    // gate closes (redb may fsync the index outside checkpoints too).
    assert_eq!(store.session("p", "s").unwrap().unwrap().num_traces, 9);
    gate.set_closed(true);
    // Should an append wait for the gate before the end (the behaviour
    // under test broken), the gate opens after a while and the counts
    // below fail, rather than the test hanging.
    {
        let gate = std::sync::Arc::clone(&gate);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(20));
            gate.set_closed(false);
        });
    }
    put(&store, turn_of(10));
    let handed_off = store.full_groups();
    // Two to fourteen pending spans: full from four on, not capped, not
    // handed off (and no checkpoint is due before twenty).
    for t in 11..=17 {
        put(&store, turn_of(t));
        assert_eq!(store.full_groups(), handed_off, "turn {t}");
    }
    // The sixteenth span caps the group: that append waits for the group
    // before it (the gate opens while it waits) and hands it off.
    let opener = {
        let gate = std::sync::Arc::clone(&gate);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            gate.set_closed(false);
        })
    };
    put(&store, turn_of(18));
    opener.join().unwrap();
    assert_eq!(store.full_groups(), handed_off + 1);
    let s = store.session("p", "s").unwrap().unwrap();
    assert_eq!(s.num_traces, 18);
    let history = store.session_history("p", "s").unwrap();
    assert_eq!(history.len(), 18);
    assert!(
        history
            .windows(2)
            .all(|w| w[0].start_time_unix_nano < w[1].start_time_unix_nano)
    );
}

/// An exporter's retry that races its first try (group commit): the first
/// append has written its spans and waits for the log's fsync, and the
/// retry finds every span a duplicate of those. The retry is acknowledged
/// only once they are durable, as the first try is: an `Ok` before then
/// would be a promise a power loss could break.
#[test]
fn a_retry_of_spans_not_yet_durable_returns_once_they_are() {
    let gate = std::sync::Arc::new(Gate::default());
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SessionStore::options()
            .durability(Durability::GroupCommit)
            .file_system(std::sync::Arc::new(GatedSync {
                gate: std::sync::Arc::clone(&gate),
                indexing_thread_only: false,
                files: ".seg",
            }))
            .open(dir.path())
            .unwrap(),
    );
    let batch = || {
        vec![ResourceSpans::for_project(
            "p",
            vec![Span::new(tid(1), sid(1), None, "root", 10, 20).with_attribute("session.id", "s")],
        )]
    };
    // The first try writes its span, then waits at the gate in its fsync.
    gate.set_closed(true);
    let first = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || store.append(&batch()))
    };
    assert!(gate.someone_waits(std::time::Duration::from_secs(10)));
    let retry = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || store.append(&batch()))
    };
    // The retry must not return while the span is not durable.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        assert!(
            !retry.is_finished(),
            "the retry was acknowledged before the fsync"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    gate.set_closed(false);
    let first = first.join().unwrap().unwrap();
    let retry = retry.join().unwrap().unwrap();
    assert_eq!((first.accepted, first.duplicates), (1, 0));
    assert_eq!((retry.accepted, retry.duplicates), (0, 1));
}

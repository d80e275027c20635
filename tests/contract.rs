#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The semantic contract (DESIGN.md section 1, rules 1-9), one group of
//! tests per rule. Each test fails if its rule breaks.

mod common;

use common::{SORTS, assert_invalid_input, history_all, list_all, sid, snapshot, tid};
use span_sessions::{
    AppendReport, AttributeValue, Durability, Event, IoValue, KeyValue, LatencyQuantiles, Link,
    ResourceSpans, SessionIdSource, SessionQuery, SessionSort, SessionStore, SessionSummary, Span,
    SpanId, StatusCode, StoreOptions, Tokens, TraceId, TraceStatus, Turn,
};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

fn open() -> (TempDir, SessionStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    (dir, store)
}

fn open_with(opts: StoreOptions) -> (TempDir, SessionStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = opts.open(dir.path()).unwrap();
    (dir, store)
}

/// A span of trace `t` with id `s` and optional parent `p`, all numbers.
fn sp(t: u64, s: u64, p: Option<u64>, start: u64, end: u64) -> Span {
    Span::new(tid(t), sid(s), p.map(sid), format!("span-{s}"), start, end)
}

fn llm(span: Span, prompt: i64, completion: i64) -> Span {
    span.with_attribute("openinference.span.kind", "LLM")
        .with_attribute("llm.token_count.prompt", prompt)
        .with_attribute("llm.token_count.completion", completion)
}

fn put(store: &SessionStore, project: &str, spans: Vec<Span>) -> AppendReport {
    store
        .append(&[ResourceSpans::for_project(project, spans)])
        .unwrap()
}

fn io(value: &str, mime: &str) -> Option<IoValue> {
    Some(IoValue::new(value, mime))
}

fn text(value: &str) -> Option<IoValue> {
    io(value, "text/plain")
}

fn tokens(prompt: u64, completion: u64, total: u64) -> Tokens {
    Tokens {
        prompt,
        completion,
        total,
    }
}

fn summary(store: &SessionStore, project: &str, session: &str) -> SessionSummary {
    store
        .session(project, session)
        .unwrap()
        .unwrap_or_else(|| panic!("session ({project}, {session}) is missing"))
}

fn session_ids(store: &SessionStore, project: &str) -> Vec<String> {
    let mut ids: Vec<String> = list_all(store, project, SessionSort::StartTime, false, 1000)
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    ids.sort();
    ids
}

fn trace_session(store: &SessionStore, t: u64) -> Option<String> {
    store.trace(tid(t)).unwrap().unwrap().session_id
}

fn history_ids(store: &SessionStore, project: &str, session: &str) -> Vec<TraceId> {
    store
        .session_history(project, session)
        .unwrap()
        .iter()
        .map(|t| t.trace_id)
        .collect()
}

fn only_turn(store: &SessionStore, project: &str, session: &str) -> Turn {
    let h = store.session_history(project, session).unwrap();
    assert_eq!(h.len(), 1, "history of ({project}, {session}): {h:#?}");
    h.into_iter().next().unwrap()
}

fn assert_session_gone(store: &SessionStore, project: &str, session: &str) {
    assert_eq!(store.session(project, session).unwrap(), None);
    assert!(store.session_history(project, session).unwrap().is_empty());
    assert!(
        !session_ids(store, project).contains(&session.to_owned()),
        "({project}, {session}) is still listed"
    );
}

fn close_float(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// A small deterministic generator for shuffles (no randomness in tests).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next()).unwrap() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ---------------------------------------------------------------- rule 1

#[test]
fn rule1_same_session_id_in_two_projects_is_two_sessions() {
    let (_d, store) = open();
    put(
        &store,
        "p1",
        vec![llm(sp(1, 1, None, 100, 200), 1, 1).with_attribute("session.id", "s")],
    );
    put(
        &store,
        "p2",
        vec![llm(sp(2, 1, None, 300, 500), 10, 10).with_attribute("session.id", "s")],
    );
    let a = summary(&store, "p1", "s");
    let b = summary(&store, "p2", "s");
    assert_eq!((a.project.as_str(), a.num_traces), ("p1", 1));
    assert_eq!((b.project.as_str(), b.num_traces), ("p2", 1));
    assert_eq!(a.tokens, tokens(1, 1, 2));
    assert_eq!(b.tokens, tokens(10, 10, 20));
    assert_eq!(
        (a.start_time_unix_nano, a.end_time_unix_nano),
        (100, 200),
        "p1's session must not see p2's trace"
    );
    assert_eq!(history_ids(&store, "p1", "s"), vec![tid(1)]);
    assert_eq!(history_ids(&store, "p2", "s"), vec![tid(2)]);
    let l1 = list_all(&store, "p1", SessionSort::StartTime, true, 10);
    assert_eq!(l1, vec![a]);
    let l2 = list_all(&store, "p2", SessionSort::StartTime, true, 10);
    assert_eq!(l2, vec![b]);
    assert_eq!(store.projects().unwrap(), vec!["p1", "p2"]);
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().project, "p1");
    assert_eq!(store.trace(tid(2)).unwrap().unwrap().project, "p2");
}

#[test]
fn rule1_project_defaults_to_default() {
    let (_d, store) = open();
    let no_resource = ResourceSpans {
        resource: vec![],
        spans: vec![sp(1, 1, None, 10, 20).with_attribute("session.id", "s1")],
    };
    let blank = ResourceSpans::for_project("   ", vec![sp(2, 1, None, 30, 40)]);
    let non_string = ResourceSpans {
        resource: vec![KeyValue::new("openinference.project.name", 5i64)],
        spans: vec![sp(3, 1, None, 50, 60).with_attribute("session.id", "s1")],
    };
    let padded = ResourceSpans::for_project("  p  ", vec![sp(4, 1, None, 70, 80)]);
    let r = store
        .append(&[no_resource, blank, non_string, padded])
        .unwrap();
    assert_eq!(r.accepted, 4);
    assert_eq!(store.projects().unwrap(), vec!["default", "p"]);
    let s = summary(&store, "default", "s1");
    assert_eq!(s.num_traces, 2);
    for (t, p) in [(1, "default"), (2, "default"), (3, "default"), (4, "p")] {
        let tr = store.trace(tid(t)).unwrap().unwrap();
        assert_eq!(tr.project, p, "trace {t}");
        assert_eq!(tr.spans[0].project, p, "stored span of trace {t}");
    }
}

#[test]
fn rule1_trace_project_is_the_roots_even_when_the_root_arrives_last() {
    let (_d, store) = open();
    // The child arrives first, under project b, carrying the session id.
    put(
        &store,
        "b",
        vec![llm(sp(1, 2, Some(1), 20, 30), 3, 4).with_attribute("session.id", "s")],
    );
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().project, "b");
    assert_eq!(summary(&store, "b", "s").num_traces, 1);
    // The root arrives under project a: the trace (and its session) moves.
    put(
        &store,
        "a",
        vec![sp(1, 1, None, 10, 40).with_attribute("input.value", "hi")],
    );
    let tr = store.trace(tid(1)).unwrap().unwrap();
    assert_eq!(tr.project, "a");
    assert_eq!(tr.session_id.as_deref(), Some("s"));
    let s = summary(&store, "a", "s");
    assert_eq!(s.num_traces, 1);
    assert_eq!(s.tokens, tokens(3, 4, 7));
    assert_eq!(s.first_input, text("hi"));
    assert_session_gone(&store, "b", "s");
    assert!(list_all(&store, "b", SessionSort::StartTime, true, 10).is_empty());
    // Both projects hold stored spans.
    assert_eq!(store.projects().unwrap(), vec!["a", "b"]);
    // Each stored span keeps the project it was appended under.
    let projects: Vec<&str> = tr.spans.iter().map(|s| s.project.as_str()).collect();
    assert_eq!(projects, vec!["a", "b"]);
}

#[test]
fn rule1_trace_project_without_root_is_the_earliest_spans() {
    let (_d, store) = open();
    put(
        &store,
        "x",
        vec![sp(1, 5, Some(99), 50, 60).with_attribute("session.id", "s")],
    );
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().project, "x");
    put(&store, "y", vec![sp(1, 6, Some(98), 30, 40)]);
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().project, "y");
    assert_eq!(summary(&store, "y", "s").num_traces, 1);
    assert_session_gone(&store, "x", "s");
    // Equal starts: the smaller span id is the earlier span.
    put(&store, "z", vec![sp(1, 4, Some(97), 30, 35)]);
    assert_eq!(store.trace(tid(1)).unwrap().unwrap().project, "z");
    assert_eq!(summary(&store, "z", "s").num_traces, 1);
    assert_session_gone(&store, "y", "s");
}

// ---------------------------------------------------------------- rule 2

#[test]
fn rule2_session_id_keys_are_tried_in_order() {
    let (_d, store) = open();
    type Case<'a> = (u64, Vec<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            1,
            vec![("session.id", "a"), ("gen_ai.conversation.id", "b")],
            Some("a"),
        ),
        (
            2,
            vec![
                ("gen_ai.conversation.id", "b"),
                ("metadata", r#"{"session_id": "m"}"#),
            ],
            Some("b"),
        ),
        (
            3,
            vec![(
                "metadata",
                r#"{"thread_id": "mt", "conversation_id": "mc", "session_id": "ms"}"#,
            )],
            Some("ms"),
        ),
        (
            4,
            vec![(
                "metadata",
                r#"{"thread_id": "mt", "conversation_id": "mc"}"#,
            )],
            Some("mc"),
        ),
        (5, vec![("metadata", r#"{"thread_id": "mt"}"#)], Some("mt")),
        (6, vec![("metadata", "not json")], None),
        (7, vec![("metadata", r#"{"other": "x"}"#)], None),
        (8, vec![("metadata", r#"["session_id"]"#)], None),
        (9, vec![("langfuse.session.id", "lf")], None),
    ];
    let mut spans = Vec::new();
    for (t, attrs, _) in &cases {
        let mut s = sp(*t, 1, None, *t * 10, *t * 10 + 5);
        for (k, v) in attrs {
            s = s.with_attribute(*k, *v);
        }
        spans.push(s);
    }
    put(&store, "p", spans);
    for (t, _, want) in &cases {
        assert_eq!(trace_session(&store, *t).as_deref(), *want, "trace {t}");
    }
    assert_eq!(session_ids(&store, "p"), vec!["a", "b", "mc", "ms", "mt"]);
    for s in ["a", "b", "mc", "ms", "mt"] {
        assert_eq!(summary(&store, "p", s).num_traces, 1, "session {s}");
    }
}

#[test]
fn rule2_non_string_ids_are_stringified() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20).with_attribute("session.id", 7i64),
            sp(2, 1, None, 30, 40).with_attribute("session.id", true),
            sp(3, 1, None, 50, 60).with_attribute("session.id", "7"),
            sp(4, 1, None, 70, 80).with_attribute("metadata", r#"{"session_id": 12}"#),
            sp(5, 1, None, 90, 95).with_attribute("metadata", r#"{"conversation_id": true}"#),
            sp(6, 1, None, 96, 97).with_attribute("gen_ai.conversation.id", 12i64),
        ],
    );
    assert_eq!(trace_session(&store, 1).as_deref(), Some("7"));
    assert_eq!(trace_session(&store, 2).as_deref(), Some("True"));
    assert_eq!(trace_session(&store, 4).as_deref(), Some("12"));
    assert_eq!(trace_session(&store, 5).as_deref(), Some("True"));
    assert_eq!(session_ids(&store, "p"), vec!["12", "7", "True"]);
    assert_eq!(history_ids(&store, "p", "7"), vec![tid(1), tid(3)]);
    assert_eq!(history_ids(&store, "p", "True"), vec![tid(2), tid(5)]);
    assert_eq!(history_ids(&store, "p", "12"), vec![tid(4), tid(6)]);
}

#[test]
fn rule2_ids_are_trimmed_and_empty_means_none() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20).with_attribute("session.id", "  s \t"),
            sp(2, 1, None, 30, 40).with_attribute("session.id", "s"),
            sp(3, 1, None, 50, 60).with_attribute("session.id", ""),
            sp(4, 1, None, 70, 80)
                .with_attribute("session.id", "   ")
                .with_attribute("gen_ai.conversation.id", " c "),
            sp(5, 1, None, 90, 95)
                .with_attribute("metadata", r#"{"session_id": "  ", "thread_id": " t "}"#),
            // Empty on the root, an id on the child: no conflict, the child's id wins.
            sp(6, 1, None, 100, 110).with_attribute("session.id", " "),
            sp(6, 2, Some(1), 101, 105).with_attribute("session.id", "s"),
            sp(7, 1, None, 120, 130).with_attribute("metadata", r#"{"session_id": null}"#),
        ],
    );
    assert_eq!(trace_session(&store, 1).as_deref(), Some("s"));
    assert_eq!(trace_session(&store, 3), None);
    assert_eq!(trace_session(&store, 4).as_deref(), Some("c"));
    assert_eq!(trace_session(&store, 5).as_deref(), Some("t"));
    assert_eq!(trace_session(&store, 6).as_deref(), Some("s"));
    assert_eq!(trace_session(&store, 7), None);
    assert_eq!(session_ids(&store, "p"), vec!["c", "s", "t"]);
    assert_eq!(history_ids(&store, "p", "s"), vec![tid(1), tid(2), tid(6)]);
    for turn in store.session_history("p", "s").unwrap() {
        assert!(
            turn.conflicting_session_ids.is_empty(),
            "an empty id is no id, so no conflict: {turn:?}"
        );
    }
    assert_eq!(store.session("p", "").unwrap(), None);
    assert_eq!(store.session("p", "  s \t").unwrap(), None);
}

fn custom_sources() -> Vec<SessionIdSource> {
    vec![
        SessionIdSource::Attribute("langfuse.session.id".into()),
        SessionIdSource::MetadataField("chat_id".into()),
    ]
}

fn custom_source_spans() -> Vec<Span> {
    vec![
        sp(1, 1, None, 10, 20)
            .with_attribute("session.id", "ignored")
            .with_attribute("langfuse.session.id", "lf"),
        sp(2, 1, None, 30, 40).with_attribute("session.id", "x"),
        sp(3, 1, None, 50, 60)
            .with_attribute("metadata", r#"{"chat_id": "c9", "session_id": "no"}"#),
        sp(4, 1, None, 70, 80).with_attribute("langfuse.session.id", 5i64),
    ]
}

#[test]
fn rule2_custom_session_id_sources_replace_the_defaults() {
    let (_d, store) = open_with(StoreOptions::default().session_id_sources(custom_sources()));
    put(&store, "p", custom_source_spans());
    assert_eq!(trace_session(&store, 1).as_deref(), Some("lf"));
    assert_eq!(trace_session(&store, 2), None);
    assert_eq!(trace_session(&store, 3).as_deref(), Some("c9"));
    assert_eq!(trace_session(&store, 4).as_deref(), Some("5"));
    assert_eq!(session_ids(&store, "p"), vec!["5", "c9", "lf"]);
}

#[test]
fn rule2_changing_the_sources_on_reopen_reindexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreOptions::default()
        .session_id_sources(custom_sources())
        .open(dir.path())
        .unwrap();
    put(&store, "p", custom_source_spans());
    let before = snapshot(&store, &[tid(1), tid(2), tid(3), tid(4)], &["p"], &[]);
    store.close().unwrap();

    // Same sources: same answers, nothing rebuilt.
    let store = StoreOptions::default()
        .session_id_sources(custom_sources())
        .open(dir.path())
        .unwrap();
    assert_eq!(store.open_report().index_rebuilt, None);
    let after = snapshot(&store, &[tid(1), tid(2), tid(3), tid(4)], &["p"], &[]);
    assert_eq!(before, after);
    store.close().unwrap();

    // The default sources: ids come from session.id / metadata session_id now.
    let store = SessionStore::open(dir.path()).unwrap();
    let why = store
        .open_report()
        .index_rebuilt
        .clone()
        .unwrap_or_default();
    assert!(why.contains("session id sources"), "{why:?}");
    assert_eq!(store.open_report().frames_replayed, 4);
    assert_eq!(trace_session(&store, 1).as_deref(), Some("ignored"));
    assert_eq!(trace_session(&store, 2).as_deref(), Some("x"));
    assert_eq!(trace_session(&store, 3).as_deref(), Some("no"));
    assert_eq!(trace_session(&store, 4), None);
    assert_eq!(session_ids(&store, "p"), vec!["ignored", "no", "x"]);
}

// ---------------------------------------------------------------- rule 3

#[test]
fn rule3_an_id_on_a_child_pulls_in_the_whole_trace() {
    let (_d, store) = open();
    let root = sp(1, 1, None, 10, 100)
        .with_attribute("input.value", "q")
        .with_attribute("output.value", "a");
    let child = llm(sp(1, 2, Some(1), 20, 50), 5, 5).with_attribute("session.id", "s");
    let grandchild = llm(sp(1, 3, Some(2), 30, 120), 1, 2);

    put(&store, "p", vec![root.clone()]);
    assert!(session_ids(&store, "p").is_empty());
    assert_eq!(trace_session(&store, 1), None);

    put(&store, "p", vec![child.clone()]);
    let turn = only_turn(&store, "p", "s");
    assert_eq!(turn.num_spans, 2);
    assert_eq!(turn.input, text("q"));
    assert_eq!(turn.output, text("a"));
    assert!(!turn.root_missing);
    assert_eq!(turn.tokens, tokens(5, 5, 10));

    put(&store, "p", vec![grandchild.clone()]);
    let turn = only_turn(&store, "p", "s");
    assert_eq!(turn.num_spans, 3);
    assert_eq!(
        (turn.start_time_unix_nano, turn.end_time_unix_nano),
        (10, 120)
    );
    assert_eq!(turn.tokens, tokens(6, 7, 13));
    let s = summary(&store, "p", "s");
    assert_eq!(s.tokens, tokens(6, 7, 13));
    assert_eq!((s.start_time_unix_nano, s.end_time_unix_nano), (10, 120));
    let tr = store.trace(tid(1)).unwrap().unwrap();
    assert_eq!(tr.session_id.as_deref(), Some("s"));
    assert_eq!(tr.spans.len(), 3);

    // Same shape, spans in the other order, in a second trace of the session.
    let t2 = |s: Span| Span {
        trace_id: tid(2),
        start_time_unix_nano: s.start_time_unix_nano + 1000,
        end_time_unix_nano: s.end_time_unix_nano + 1000,
        ..s
    };
    put(&store, "p", vec![t2(grandchild)]);
    assert_eq!(trace_session(&store, 2), None);
    put(&store, "p", vec![t2(child)]);
    put(&store, "p", vec![t2(root)]);
    let h = store.session_history("p", "s").unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[1].trace_id, tid(2));
    assert_eq!(h[1].num_spans, 3);
    assert_eq!(h[1].input, text("q"));
    assert_eq!(h[1].root_span_id, sid(1));
    assert!(!h[1].root_missing);
    assert_eq!(summary(&store, "p", "s").tokens, tokens(12, 14, 26));
}

#[test]
fn rule3_conflicting_ids_the_roots_wins_and_the_others_are_recorded() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 2, Some(1), 5, 10).with_attribute("session.id", "x"),
            sp(1, 3, Some(1), 6, 10).with_attribute("session.id", "a"),
            sp(1, 4, Some(1), 7, 10).with_attribute("gen_ai.conversation.id", "x"),
        ],
    );
    // Before the root: the earliest span's id wins.
    let turn = only_turn(&store, "p", "x");
    assert_eq!(turn.conflicting_session_ids, vec!["a"]);
    put(
        &store,
        "p",
        vec![sp(1, 1, None, 10, 20).with_attribute("session.id", "r")],
    );
    let turn = only_turn(&store, "p", "r");
    assert_eq!(turn.conflicting_session_ids, vec!["a", "x"]);
    assert_eq!(trace_session(&store, 1).as_deref(), Some("r"));
    assert_session_gone(&store, "p", "x");
    assert_session_gone(&store, "p", "a");
    assert_eq!(session_ids(&store, "p"), vec!["r"]);
}

/// Rules 3 and 4 past what a trace remembers: a root carrying `s-root`
/// and 17 children carrying `s-00` ... `s-16`. Whatever the order and
/// batching of the spans, the turn lists the same losers (of the 16
/// smallest ids, the winner left out) and says that more were carried;
/// a compaction, which moves frames so that a replay meets them in
/// another order, changes nothing, and `verify` and a rebuild agree.
#[test]
fn rule3_and_rule4_hold_for_more_conflicting_ids_than_a_trace_remembers() {
    let spans = || {
        let mut v: Vec<Span> = (0..17u64)
            .map(|i| {
                sp(1, 10 + i, Some(1), 100 + i, 101 + i)
                    .with_attribute("session.id", format!("s-{i:02}"))
                    .with_attribute("pad", "x".repeat(300))
            })
            .collect();
        v.push(sp(1, 1, None, 100, 200).with_attribute("session.id", "s-root"));
        v
    };
    // "s-root" sorts after "s-15": the 16 smallest are s-00 ... s-15.
    let want: Vec<String> = (0..16).map(|i| format!("s-{i:02}")).collect();
    let orders: [fn(&mut Vec<Span>); 3] = [
        |_| {},
        |v| v.reverse(),
        |v| v.sort_by_key(|s| (s.span_id.0[7] * 7) % 18),
    ];
    for (n, order) in orders.iter().enumerate() {
        for one_at_a_time in [true, false] {
            let (_d, store) = open_with(SessionStore::options().segment_bytes(4096));
            let mut v = spans();
            order(&mut v);
            if one_at_a_time {
                for (i, span) in v.into_iter().enumerate() {
                    put(&store, "p", vec![span]);
                    // Filler traces between them, deleted below, so that
                    // the compaction moves the trace's frames.
                    put(
                        &store,
                        "p",
                        vec![
                            sp(100 + i as u64, 1, None, 1, 2)
                                .with_attribute("pad", "y".repeat(1000)),
                        ],
                    );
                }
            } else {
                put(&store, "p", v);
            }
            let turn = only_turn(&store, "p", "s-root");
            let case = format!("order {n}, one at a time: {one_at_a_time}");
            assert_eq!(turn.conflicting_session_ids, want, "{case}");
            assert!(turn.conflicting_session_ids_truncated, "{case}");
            if one_at_a_time {
                for i in 0..18 {
                    store.delete_trace(tid(100 + i)).unwrap();
                }
                assert!(store.compact().unwrap().frames_copied > 0, "{case}");
                assert_eq!(only_turn(&store, "p", "s-root"), turn, "{case}");
                assert_eq!(
                    store.verify().unwrap().problems,
                    Vec::<String>::new(),
                    "{case}"
                );
                store.rebuild_indexes().unwrap();
                assert_eq!(only_turn(&store, "p", "s-root"), turn, "{case}");
            }
        }
    }
    // Sixteen ids in all (s-02 ... s-16 and s-root) are remembered whole,
    // and not flagged.
    let (_d, store) = open();
    put(&store, "p", spans().into_iter().skip(2).collect());
    let turn = only_turn(&store, "p", "s-root");
    let all: Vec<String> = (2..17).map(|i| format!("s-{i:02}")).collect();
    assert_eq!(turn.conflicting_session_ids, all);
    assert!(!turn.conflicting_session_ids_truncated);
}

#[test]
fn rule3_without_a_root_the_earliest_span_carrying_an_id_wins() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 9, Some(99), 30, 40).with_attribute("session.id", "b"),
            sp(1, 8, Some(99), 20, 40).with_attribute("session.id", "a"),
            sp(1, 1, Some(99), 10, 40),
            sp(1, 7, Some(99), 20, 40).with_attribute("session.id", "c"),
        ],
    );
    let turn = only_turn(&store, "p", "c");
    assert_eq!(turn.conflicting_session_ids, vec!["a", "b"]);
    assert!(turn.root_missing);
    assert_eq!(turn.root_span_id, sid(1));
    // A span of the same trace with an id that is already known: no new conflict.
    put(
        &store,
        "p",
        vec![sp(1, 10, Some(99), 50, 60).with_attribute("session.id", "a")],
    );
    assert_eq!(
        only_turn(&store, "p", "c").conflicting_session_ids,
        vec!["a", "b"]
    );
    // The winner's id on another span is not a conflict.
    put(
        &store,
        "p",
        vec![sp(1, 11, Some(99), 50, 60).with_attribute("session.id", "c")],
    );
    assert_eq!(
        only_turn(&store, "p", "c").conflicting_session_ids,
        vec!["a", "b"]
    );
}

#[test]
fn rule3_a_root_arriving_last_moves_the_trace_to_its_session() {
    let (_d, store) = open();
    // Trace 1: children in session a. Trace 2: a whole trace of session a.
    put(
        &store,
        "p",
        vec![
            llm(sp(1, 2, Some(1), 110, 150), 10, 0).with_attribute("session.id", "a"),
            sp(1, 3, Some(2), 120, 130)
                .with_attribute("session.id", "a")
                .with_attribute("user.id", "u1")
                .with_status(StatusCode::Error, "boom"),
            llm(sp(2, 1, None, 300, 400), 1, 0)
                .with_attribute("session.id", "a")
                .with_attribute("input.value", "two")
                .with_attribute("output.value", "two out"),
            // Trace 3: the only trace of session c, its root will carry d.
            sp(3, 2, Some(1), 510, 520).with_attribute("session.id", "c"),
        ],
    );
    let a = summary(&store, "p", "a");
    assert_eq!(a.num_traces, 2);
    assert_eq!(a.num_traces_with_error, 1);
    assert_eq!(a.tokens, tokens(11, 0, 11));
    assert_eq!(a.user_id.as_deref(), Some("u1"));
    assert_eq!((a.start_time_unix_nano, a.end_time_unix_nano), (110, 400));
    assert_eq!(summary(&store, "p", "c").num_traces, 1);

    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 100, 200)
                .with_attribute("session.id", "b")
                .with_attribute("input.value", "hello")
                .with_attribute("output.value", "bye"),
            sp(3, 1, None, 500, 600).with_attribute("session.id", "d"),
        ],
    );
    // Session a lost trace 1: its summary is trace 2's alone.
    let a = summary(&store, "p", "a");
    let expect_a = SessionSummary {
        project: "p".into(),
        session_id: "a".into(),
        num_traces: 1,
        num_traces_with_error: 0,
        tokens: tokens(1, 0, 1),
        start_time_unix_nano: 300,
        end_time_unix_nano: 400,
        first_input: text("two"),
        last_output: text("two out"),
        user_id: None,
        trace_latency_ms: LatencyQuantiles {
            p50: 0.0001,
            p99: 0.0001,
        },
    };
    assert_summary_eq(&a, &expect_a);
    assert_eq!(history_ids(&store, "p", "a"), vec![tid(2)]);
    // Session b gained it, with the conflict recorded.
    let b = summary(&store, "p", "b");
    let expect_b = SessionSummary {
        project: "p".into(),
        session_id: "b".into(),
        num_traces: 1,
        num_traces_with_error: 1,
        tokens: tokens(10, 0, 10),
        start_time_unix_nano: 100,
        end_time_unix_nano: 200,
        first_input: text("hello"),
        last_output: text("bye"),
        user_id: Some("u1".into()),
        trace_latency_ms: LatencyQuantiles {
            p50: 0.0001,
            p99: 0.0001,
        },
    };
    assert_summary_eq(&b, &expect_b);
    let turn = only_turn(&store, "p", "b");
    assert_eq!(turn.conflicting_session_ids, vec!["a"]);
    assert!(!turn.root_missing);
    assert_eq!(turn.num_spans, 3);
    // Session c lost its only trace: it is gone.
    assert_session_gone(&store, "p", "c");
    assert_eq!(
        only_turn(&store, "p", "d").conflicting_session_ids,
        vec!["c"]
    );
    assert_eq!(session_ids(&store, "p"), vec!["a", "b", "d"]);
    for sort in SORTS {
        let l = list_all(&store, "p", sort, true, 10);
        assert_eq!(l.len(), 3, "{sort:?}");
        for s in l {
            assert_eq!(
                Some(&s),
                store.session("p", &s.session_id).unwrap().as_ref()
            );
        }
    }
}

fn assert_summary_eq(got: &SessionSummary, want: &SessionSummary) {
    let strip = |s: &SessionSummary| SessionSummary {
        trace_latency_ms: LatencyQuantiles::default(),
        ..s.clone()
    };
    assert_eq!(strip(got), strip(want));
    assert!(
        close_float(got.trace_latency_ms.p50, want.trace_latency_ms.p50)
            && close_float(got.trace_latency_ms.p99, want.trace_latency_ms.p99),
        "latency {:?}, want {:?}",
        got.trace_latency_ms,
        want.trace_latency_ms
    );
}

// ---------------------------------------------------------------- rule 4

/// A scenario touching most features: projects, sessions, conflicts,
/// missing and late roots, tokens, errors, users, duplicates.
fn scenario() -> Vec<(&'static str, Span)> {
    let mut v = vec![
        // Trace 1, session s1, project p.
        (
            "p",
            sp(1, 1, None, 1000, 5000)
                .with_attribute("session.id", "s1")
                .with_attribute("input.value", "hi")
                .with_attribute("output.value", "hello"),
        ),
        (
            "p",
            llm(sp(1, 2, Some(1), 1100, 2000), 10, 20).with_attribute("user.id", "u1"),
        ),
        (
            "p",
            sp(1, 3, Some(2), 1200, 6000).with_status(StatusCode::Error, "x"),
        ),
        // Trace 2, root missing, session from metadata.
        (
            "p",
            llm(sp(2, 5, Some(4), 3000, 3500), 1, 1)
                .with_attribute("metadata", r#"{"thread_id": "s1"}"#)
                .with_attribute("input.value", "orphan"),
        ),
        ("p", sp(2, 6, Some(5), 3100, 3200)),
        // Trace 3, conflicting ids, root carries s2.
        (
            "p",
            sp(3, 1, None, 500, 900)
                .with_attribute("session.id", "s2")
                .with_status(StatusCode::Ok, ""),
        ),
        (
            "p",
            sp(3, 2, Some(1), 600, 700).with_attribute("session.id", "s1"),
        ),
        (
            "p",
            sp(3, 3, Some(1), 600, 950)
                .with_attribute("gen_ai.operation.name", "chat")
                .with_attribute("gen_ai.usage.input_tokens", 7i64)
                .with_attribute("gen_ai.usage.output_tokens", 8i64),
        ),
        // Trace 4 in project q, same session id s1.
        (
            "q",
            sp(4, 1, None, 700, 800)
                .with_attribute("session.id", "s1")
                .with_attribute("user.id", "uq"),
        ),
        // Trace 5, mixed projects: the root's (q) wins.
        (
            "p",
            sp(5, 2, Some(1), 50, 60).with_attribute("session.id", "s3"),
        ),
        ("q", sp(5, 1, None, 40, 70)),
        // Trace 6: no session at all.
        ("default", sp(6, 1, None, 10, 20)),
        // Trace 7: equal start as trace 1.
        (
            "p",
            sp(7, 1, None, 1000, 1001)
                .with_attribute("session.id", "s1")
                .with_attribute("output.value", "{}")
                .with_attribute("output.mime_type", "application/json"),
        ),
    ];
    // Duplicates (exact copies, as exporters resend them).
    let dups: Vec<(&'static str, Span)> = vec![v[1].clone(), v[3].clone(), v[9].clone()];
    v.extend(dups);
    v
}

fn scenario_traces() -> Vec<TraceId> {
    (1..=8).map(tid).collect()
}

const SCENARIO_SESSIONS: [(&str, &str); 6] = [
    ("p", "s1"),
    ("p", "s2"),
    ("p", "s3"),
    ("q", "s1"),
    ("q", "s3"),
    ("default", "s1"),
];

fn append_in_batches(store: &SessionStore, items: &[(&'static str, Span)], sizes: &[usize]) {
    let mut at = 0;
    let mut k = 0;
    while at < items.len() {
        let n = sizes[k % sizes.len()].max(1).min(items.len() - at);
        k += 1;
        let batch: Vec<ResourceSpans> = items[at..at + n]
            .iter()
            .map(|(p, s)| ResourceSpans::for_project(*p, vec![s.clone()]))
            .collect();
        store.append(&batch).unwrap();
        at += n;
    }
}

#[test]
fn rule4_order_and_batching_do_not_change_any_answer() {
    let items = scenario();
    let reference = {
        let (_d, store) = open();
        append_in_batches(&store, &items, &[items.len()]);
        snapshot(&store, &scenario_traces(), &["p", "q"], &SCENARIO_SESSIONS)
    };
    type Order = (String, Vec<(&'static str, Span)>, Vec<usize>);
    let mut orders: Vec<Order> = vec![
        ("one by one".into(), items.clone(), vec![1]),
        (
            "reversed, one by one".into(),
            items.iter().rev().cloned().collect(),
            vec![1],
        ),
        (
            "reversed, one batch".into(),
            items.iter().rev().cloned().collect(),
            vec![100],
        ),
    ];
    for seed in 0..12u64 {
        let mut rng = Lcg(seed);
        let mut v = items.clone();
        rng.shuffle(&mut v);
        let sizes: Vec<usize> = (0..5).map(|_| 1 + rng.below(5)).collect();
        orders.push((format!("shuffle seed {seed}, batches {sizes:?}"), v, sizes));
    }
    for (name, order, sizes) in orders {
        let (_d, store) = open();
        append_in_batches(&store, &order, &sizes);
        let got = snapshot(&store, &scenario_traces(), &["p", "q"], &SCENARIO_SESSIONS);
        assert_eq!(got, reference, "order: {name}");
    }
    // A few facts of the reference, so that equal answers are also right ones.
    let (_d, store) = open();
    append_in_batches(&store, &items, &[3]);
    assert_eq!(history_ids(&store, "p", "s1"), vec![tid(1), tid(7), tid(2)]);
    assert_eq!(history_ids(&store, "p", "s2"), vec![tid(3)]);
    assert_eq!(history_ids(&store, "q", "s1"), vec![tid(4)]);
    assert_eq!(history_ids(&store, "q", "s3"), vec![tid(5)]);
    assert_session_gone(&store, "p", "s3");
    assert_eq!(store.trace(tid(6)).unwrap().unwrap().session_id, None);
    let s1 = summary(&store, "p", "s1");
    assert_eq!(s1.tokens, tokens(11, 21, 32));
    assert_eq!(s1.num_traces_with_error, 1);
    assert_eq!(s1.user_id.as_deref(), Some("u1"));
    assert_eq!(s1.first_input, text("hi"));
    // Traces 1 and 7 start together; 7 is later by trace id.
    assert_eq!(s1.last_output, io("{}", "application/json"));
    assert_eq!(summary(&store, "p", "s2").tokens, tokens(7, 8, 15));
    // Trace 6 (project default) carries no session id, but default holds stored spans.
    assert_eq!(reference.projects, vec!["default", "p", "q"]);
}

#[test]
fn rule4_the_project_list_does_not_depend_on_arrival_order() {
    // A child appended under project x carries the session id; its root,
    // appended under project y, decides the trace's project.
    let child = sp(1, 2, Some(1), 20, 30).with_attribute("session.id", "s");
    let root = sp(1, 1, None, 10, 40);
    let child_first = {
        let (_d, store) = open();
        put(&store, "x", vec![child.clone()]);
        put(&store, "y", vec![root.clone()]);
        snapshot(&store, &[tid(1)], &["x", "y"], &[("x", "s"), ("y", "s")])
    };
    let root_first = {
        let (_d, store) = open();
        put(&store, "y", vec![root]);
        put(&store, "x", vec![child]);
        snapshot(&store, &[tid(1)], &["x", "y"], &[("x", "s"), ("y", "s")])
    };
    assert_eq!(child_first, root_first);
    assert_eq!(
        root_first.projects,
        vec!["x", "y"],
        "both projects hold stored spans"
    );
}

#[test]
fn rule4_duplicates_are_counted_and_change_nothing() {
    let (_d, store) = open();
    let spans = vec![
        sp(1, 1, None, 10, 20)
            .with_attribute("session.id", "s")
            .with_attribute("input.value", "first"),
        llm(sp(1, 2, Some(1), 11, 15), 3, 4).with_status(StatusCode::Error, "e"),
        sp(2, 1, None, 30, 40).with_attribute("session.id", "s"),
    ];
    let r = put(&store, "p", spans.clone());
    assert_eq!((r.accepted, r.duplicates, r.rejected.len()), (3, 0, 0));
    let ids = [tid(1), tid(2)];
    let before = snapshot(&store, &ids, &["p", "other"], &[("p", "s")]);

    // The same batch again.
    let r = put(&store, "p", spans.clone());
    assert_eq!((r.accepted, r.duplicates, r.rejected.len()), (0, 3, 0));
    assert_eq!(
        snapshot(&store, &ids, &["p", "other"], &[("p", "s")]),
        before
    );

    // A copy carrying different content (and another project): first stored wins.
    let altered = Span {
        attributes: vec![
            KeyValue::new("session.id", "t"),
            KeyValue::new("input.value", "second"),
            KeyValue::new("user.id", "u"),
        ],
        ..spans[0].clone()
    };
    let r = put(
        &store,
        "other",
        vec![altered, llm(sp(1, 2, Some(1), 1, 99), 100, 100)],
    );
    assert_eq!((r.accepted, r.duplicates), (0, 2));
    assert_eq!(
        snapshot(&store, &ids, &["p", "other"], &[("p", "s")]),
        before
    );
    assert_eq!(store.projects().unwrap(), vec!["p"]);

    // Copies inside one batch: one stored, the rest counted.
    let new = sp(3, 1, None, 50, 60).with_attribute("session.id", "s");
    let r = put(&store, "p", vec![new.clone(), new.clone(), new]);
    assert_eq!((r.accepted, r.duplicates), (1, 2));
    let s = summary(&store, "p", "s");
    assert_eq!(s.num_traces, 3);
    assert_eq!(s.num_traces_with_error, 1);
    assert_eq!(s.tokens, tokens(3, 4, 7));
    assert_eq!(store.trace(tid(3)).unwrap().unwrap().spans.len(), 1);
    assert_eq!(
        store.session_history("p", "s").unwrap()[0].input,
        text("first")
    );
}

#[test]
fn rule4_reopen_keeps_every_answer_and_still_deduplicates() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || StoreOptions::default().segment_bytes(4096);
    let items = scenario();
    let padding = "x".repeat(300);
    // Enough spans with padding to roll several 4 KiB segments.
    let mut extra = Vec::new();
    for t in 100..160u64 {
        extra.push((
            "p",
            llm(sp(t, 1, None, t * 100, t * 100 + 50), 1, 2)
                .with_attribute("session.id", format!("bulk-{}", t % 7))
                .with_attribute("input.value", padding.clone()),
        ));
    }
    let mut traces = scenario_traces();
    traces.extend((100..160).map(tid));
    let store = opts().open(dir.path()).unwrap();
    append_in_batches(&store, &items, &[4]);
    append_in_batches(&store, &extra, &[5]);
    let before = snapshot(&store, &traces, &["p", "q"], &SCENARIO_SESSIONS);
    store.close().unwrap();

    let store = opts().open(dir.path()).unwrap();
    assert_eq!(
        snapshot(&store, &traces, &["p", "q"], &SCENARIO_SESSIONS),
        before,
        "answers changed across close + open"
    );
    let all: Vec<ResourceSpans> = items
        .iter()
        .chain(&extra)
        .map(|(p, s)| ResourceSpans::for_project(*p, vec![s.clone()]))
        .collect();
    let r = store.append(&all).unwrap();
    assert_eq!(
        r.accepted, 0,
        "spans stored before the reopen must be duplicates"
    );
    assert_eq!(r.duplicates, all.len());
    // New spans after the reopen, then a drop without close.
    put(
        &store,
        "p",
        vec![sp(1, 50, Some(1), 1500, 1600).with_attribute("user.id", "late")],
    );
    let before = snapshot(&store, &traces, &["p", "q"], &SCENARIO_SESSIONS);
    drop(store);
    let store = opts().open(dir.path()).unwrap();
    assert_eq!(
        snapshot(&store, &traces, &["p", "q"], &SCENARIO_SESSIONS),
        before
    );
    // Another segment size on reopen does not change the answers either.
    drop(store);
    let store = SessionStore::open(dir.path()).unwrap();
    assert_eq!(
        snapshot(&store, &traces, &["p", "q"], &SCENARIO_SESSIONS),
        before
    );
    // rebuild_indexes recreates the same answers from the log alone.
    store.rebuild_indexes().unwrap();
    assert_eq!(
        snapshot(&store, &traces, &["p", "q"], &SCENARIO_SESSIONS),
        before
    );
}

#[test]
fn rule4_a_second_open_of_the_same_directory_is_refused() {
    let (dir, store) = open();
    let second = SessionStore::open(dir.path());
    assert!(second.is_err(), "two stores on one directory");
    drop(store);
}

// ---------------------------------------------------------------- rule 5

#[test]
fn rule5_a_turn_summarises_its_trace() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 100, 400)
                .with_attribute("session.id", "s")
                .with_attribute("input.value", "question")
                .with_attribute("output.value", r#"{"a": 1}"#)
                .with_attribute("output.mime_type", "application/json")
                .with_status(StatusCode::Ok, ""),
            sp(1, 2, Some(1), 150, 500)
                .with_attribute("input.value", "child input")
                .with_attribute("output.value", "child output"),
            sp(1, 3, Some(1), 90, 120),
        ],
    );
    let want = Turn {
        trace_id: tid(1),
        start_time_unix_nano: 90,
        end_time_unix_nano: 500,
        root_span_id: sid(1),
        input: text("question"),
        output: io(r#"{"a": 1}"#, "application/json"),
        tokens: Tokens::default(),
        status: TraceStatus::Ok,
        num_spans: 3,
        root_missing: false,
        conflicting_session_ids: vec![],
        conflicting_session_ids_truncated: false,
    };
    let turn = only_turn(&store, "p", "s");
    assert_eq!(turn, want);
    assert!(close_float(turn.latency_ms(), 0.00041));
    assert!(!turn.has_error());

    // Root without input or output: the children's are not used.
    put(
        &store,
        "p",
        vec![
            sp(2, 1, None, 1000, 2000).with_attribute("session.id", "t"),
            sp(2, 2, Some(1), 1100, 1200)
                .with_attribute("input.value", "child input")
                .with_attribute("output.value", "child output")
                .with_status(StatusCode::Ok, ""),
            sp(2, 3, Some(1), 1100, 1200).with_status(StatusCode::Error, "bad"),
        ],
    );
    let turn = only_turn(&store, "p", "t");
    assert_eq!((&turn.input, &turn.output), (&None, &None));
    assert_eq!(turn.status, TraceStatus::Error);
    assert!(turn.has_error());

    // Non-string input is stringified; no status at all is Unset.
    put(
        &store,
        "p",
        vec![
            sp(3, 1, None, 3000, 3000)
                .with_attribute("session.id", "u")
                .with_attribute("input.value", 42i64)
                .with_attribute("input.mime_type", "application/json"),
        ],
    );
    let turn = only_turn(&store, "p", "u");
    assert_eq!(turn.input, io("42", "application/json"));
    assert_eq!(turn.status, TraceStatus::Unset);
    assert_eq!(turn.latency_ms(), 0.0);

    // The trace view: spans in (start, span id) order, each with its resource.
    let tr = store.trace(tid(1)).unwrap().unwrap();
    let order: Vec<SpanId> = tr.spans.iter().map(|s| s.span.span_id).collect();
    assert_eq!(order, vec![sid(3), sid(1), sid(2)]);
    assert!(tr.spans.iter().all(|s| s.project == "p"
        && s.resource == vec![KeyValue::new("openinference.project.name", "p")]));
    assert_eq!(store.trace(tid(42)).unwrap(), None);
}

#[test]
fn rule5_a_missing_root_has_a_stand_in_until_it_arrives() {
    let (_d, store) = open();
    // c (parent m missing) arrives alone: it stands in.
    put(
        &store,
        "p",
        vec![
            sp(1, 20, Some(10), 40, 50)
                .with_attribute("session.id", "s")
                .with_attribute("input.value", "c in"),
        ],
    );
    let turn = only_turn(&store, "p", "s");
    assert!(turn.root_missing);
    assert_eq!(turn.root_span_id, sid(20));
    assert_eq!(turn.input, text("c in"));

    // m (c's parent, its own parent 1 missing) arrives: now m stands in.
    put(
        &store,
        "p",
        vec![sp(1, 10, Some(1), 45, 60).with_attribute("output.value", "m out")],
    );
    let turn = only_turn(&store, "p", "s");
    assert!(turn.root_missing);
    assert_eq!(turn.root_span_id, sid(10));
    assert_eq!((turn.input, turn.output), (None, text("m out")));

    // Another orphan with an equal start and a smaller id: it stands in,
    // and the earlier span whose parent is stored (c) does not.
    put(
        &store,
        "p",
        vec![
            sp(1, 9, Some(2), 45, 46).with_attribute("input.value", "o in"),
            sp(1, 11, Some(1), 47, 48),
        ],
    );
    let turn = only_turn(&store, "p", "s");
    assert!(turn.root_missing);
    assert_eq!(turn.root_span_id, sid(9));
    assert_eq!(turn.input, text("o in"));

    // The root arrives last: it replaces the stand-in.
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 30, 70)
                .with_attribute("input.value", "root in")
                .with_attribute("output.value", "root out"),
        ],
    );
    let turn = only_turn(&store, "p", "s");
    assert!(!turn.root_missing);
    assert_eq!(turn.root_span_id, sid(1));
    assert_eq!(turn.input, text("root in"));
    assert_eq!(turn.output, text("root out"));
    assert_eq!(turn.num_spans, 5);
    assert_eq!(
        (turn.start_time_unix_nano, turn.end_time_unix_nano),
        (30, 70)
    );
    let s = summary(&store, "p", "s");
    assert_eq!(s.first_input, text("root in"));
    assert_eq!(s.last_output, text("root out"));
}

#[test]
fn rule5_the_root_is_the_earliest_span_without_a_parent() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 5, None, 20, 30)
                .with_attribute("session.id", "s")
                .with_attribute("input.value", "late root"),
            sp(1, 6, None, 10, 30).with_attribute("input.value", "early root"),
            sp(1, 4, None, 10, 30).with_attribute("input.value", "early root, small id"),
        ],
    );
    let turn = only_turn(&store, "p", "s");
    assert!(!turn.root_missing);
    assert_eq!(turn.root_span_id, sid(4));
    assert_eq!(turn.input, text("early root, small id"));
}

#[test]
fn rule5_a_blank_mime_type_means_text_plain() {
    // An empty or blank `*.mime_type` is as good as none: text/plain.
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20)
                .with_attribute("session.id", "s")
                .with_attribute("input.value", "question")
                .with_attribute("input.mime_type", "  ")
                .with_attribute("output.value", "answer")
                .with_attribute("output.mime_type", ""),
        ],
    );
    let turn = only_turn(&store, "p", "s");
    assert_eq!(
        (turn.input, turn.output),
        (text("question"), text("answer"))
    );
    let s = summary(&store, "p", "s");
    assert_eq!(
        (s.first_input, s.last_output),
        (text("question"), text("answer"))
    );
}

#[test]
fn rule5_tokens_come_from_llm_spans_only() {
    let (_d, store) = open();
    let kv = |s: Span, k: &str, v: i64| s.with_attribute(k, v);
    put(
        &store,
        "p",
        vec![
            // A chain carrying its children's cumulative counts: ignored.
            kv(
                kv(
                    sp(1, 1, None, 0, 100)
                        .with_attribute("session.id", "s")
                        .with_attribute("openinference.span.kind", "CHAIN"),
                    "llm.token_count.prompt",
                    600,
                ),
                "llm.token_count.total",
                1000,
            ),
            // OpenInference LLM, total defaults to prompt + completion.
            llm(sp(1, 2, Some(1), 1, 2), 10, 5),
            // Explicit total wins.
            kv(
                llm(sp(1, 3, Some(1), 1, 2), 1, 2),
                "llm.token_count.total",
                4,
            ),
            // GenAI chat, text_completion, generate_content.
            kv(
                kv(
                    sp(1, 4, Some(1), 1, 2).with_attribute("gen_ai.operation.name", "chat"),
                    "gen_ai.usage.input_tokens",
                    3,
                ),
                "gen_ai.usage.output_tokens",
                4,
            ),
            kv(
                sp(1, 5, Some(1), 1, 2).with_attribute("gen_ai.operation.name", "text_completion"),
                "gen_ai.usage.input_tokens",
                100,
            ),
            kv(
                sp(1, 6, Some(1), 1, 2).with_attribute("gen_ai.operation.name", "generate_content"),
                "gen_ai.usage.output_tokens",
                1000,
            ),
            // GenAI embeddings: not an LLM span.
            kv(
                sp(1, 7, Some(1), 1, 2).with_attribute("gen_ai.operation.name", "embeddings"),
                "gen_ai.usage.input_tokens",
                10_000,
            ),
            // No kind at all: not an LLM span.
            kv(sp(1, 8, Some(1), 1, 2), "llm.token_count.total", 100_000),
            // OpenInference counts win over GenAI usage on one span.
            kv(
                kv(
                    llm(sp(1, 9, Some(1), 1, 2), 20_000, 0),
                    "gen_ai.usage.input_tokens",
                    9,
                ),
                "gen_ai.usage.output_tokens",
                30_000,
            ),
            // An AGENT with counts: ignored.
            llm(sp(1, 10, Some(1), 1, 2), 7, 7).with_attribute("openinference.span.kind", "x"),
        ],
    );
    // The last span has kind LLM first (find_attribute takes the first).
    let want = tokens(
        10 + 1 + 3 + 100 + 20_000 + 7,
        5 + 2 + 4 + 1000 + 7,
        15 + 4 + 7 + 100 + 1000 + 20_000 + 14,
    );
    assert_eq!(only_turn(&store, "p", "s").tokens, want);
    assert_eq!(summary(&store, "p", "s").tokens, want);
    // A second trace adds up.
    put(
        &store,
        "p",
        vec![llm(sp(2, 1, None, 200, 300), 1, 1).with_attribute("session.id", "s")],
    );
    assert_eq!(
        summary(&store, "p", "s").tokens,
        tokens(want.prompt + 1, want.completion + 1, want.total + 2)
    );
    let list = list_all(&store, "p", SessionSort::TotalTokens, true, 5);
    assert_eq!(list[0].tokens.total, want.total + 2);
}

#[test]
fn rule5_errors_are_counted_per_trace() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 0, 10).with_attribute("session.id", "s"),
            sp(1, 2, Some(1), 1, 2).with_status(StatusCode::Error, "a"),
            sp(1, 3, Some(1), 1, 2).with_status(StatusCode::Error, "b"),
            sp(2, 1, None, 20, 30)
                .with_attribute("session.id", "s")
                .with_status(StatusCode::Ok, ""),
            sp(3, 1, None, 40, 50).with_attribute("session.id", "s"),
        ],
    );
    let s = summary(&store, "p", "s");
    assert_eq!((s.num_traces, s.num_traces_with_error), (3, 1));
    let statuses: Vec<TraceStatus> = store
        .session_history("p", "s")
        .unwrap()
        .iter()
        .map(|t| t.status)
        .collect();
    assert_eq!(
        statuses,
        vec![TraceStatus::Error, TraceStatus::Ok, TraceStatus::Unset]
    );
    // An error arriving later flips trace 2; its duplicate does not count twice.
    let late = sp(2, 2, Some(1), 21, 22).with_status(StatusCode::Error, "late");
    put(&store, "p", vec![late.clone()]);
    put(&store, "p", vec![late]);
    let s = summary(&store, "p", "s");
    assert_eq!((s.num_traces, s.num_traces_with_error), (3, 2));
    // A trace moving out of the session takes its error with it.
    put(
        &store,
        "p",
        vec![
            sp(1, 5, Some(1), 3, 4)
                .with_attribute("session.id", "other")
                .with_status(StatusCode::Ok, ""),
        ],
    );
    assert_eq!(
        trace_session(&store, 1).as_deref(),
        Some("s"),
        "root's id wins"
    );
    assert_eq!(summary(&store, "p", "s").num_traces_with_error, 2);
}

// ---------------------------------------------------------------- rule 6

#[test]
fn rule6_the_session_summary_is_exact() {
    let (_d, store) = open();
    let s =
        |t: u64, start: u64, end: u64| sp(t, 1, None, start, end).with_attribute("session.id", "s");
    let batches = vec![
        // Trace 2: input and output, a late user id on a child.
        vec![
            s(2, 2000, 12000)
                .with_attribute("input.value", "i2")
                .with_attribute("output.value", "o2"),
            llm(sp(2, 2, Some(1), 2500, 3000), 10, 1).with_attribute("user.id", "u-late"),
        ],
        // Trace 4: the latest, input but no output, an error.
        vec![
            s(4, 5000, 6000)
                .with_attribute("input.value", "i4")
                .with_status(StatusCode::Error, "e"),
        ],
        // Trace 1: the earliest, no input, an empty user id.
        vec![
            s(1, 1000, 3000)
                .with_attribute("output.value", "o1")
                .with_attribute("user.id", "  "),
            llm(sp(1, 2, Some(1), 1000, 1100), 5, 0),
        ],
        // Trace 3: the earliest user id, on a child.
        vec![
            s(3, 1100, 1400).with_attribute("output.value", "o3"),
            sp(3, 2, Some(1), 1200, 1300).with_attribute("user.id", " u-early "),
        ],
    ];
    for b in batches {
        put(&store, "p", b);
    }
    // Latencies (ms): 0.002, 0.01, 0.001, 0.0003 -> sorted 0.0003 0.001 0.002 0.01.
    let want = SessionSummary {
        project: "p".into(),
        session_id: "s".into(),
        num_traces: 4,
        num_traces_with_error: 1,
        tokens: tokens(15, 1, 16),
        start_time_unix_nano: 1000,
        end_time_unix_nano: 12000,
        first_input: text("i2"),
        last_output: text("o2"),
        user_id: Some("u-early".into()),
        trace_latency_ms: LatencyQuantiles {
            p50: 0.0015,
            p99: 0.002 + 0.97 * 0.008,
        },
    };
    let got = summary(&store, "p", "s");
    assert_summary_eq(&got, &want);
    assert_eq!(got.duration_nanos(), 11000);
    assert_eq!(
        history_ids(&store, "p", "s"),
        vec![tid(1), tid(3), tid(2), tid(4)]
    );
    for sort in SORTS {
        for desc in [false, true] {
            assert_eq!(list_all(&store, "p", sort, desc, 1), vec![got.clone()]);
        }
    }
}

#[test]
fn rule6_user_id_ties_break_by_trace_id_then_span_id() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(2, 1, None, 500, 600)
                .with_attribute("session.id", "s")
                .with_attribute("user.id", "from-trace-2"),
            sp(3, 1, None, 500, 600)
                .with_attribute("session.id", "s")
                .with_attribute("user.id", "from-trace-3"),
        ],
    );
    assert_eq!(
        summary(&store, "p", "s").user_id.as_deref(),
        Some("from-trace-2")
    );
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 400, 600).with_attribute("session.id", "s"),
            sp(1, 3, Some(1), 500, 501).with_attribute("user.id", "span-3"),
            sp(1, 2, Some(1), 500, 501).with_attribute("user.id", 17i64),
        ],
    );
    assert_eq!(summary(&store, "p", "s").user_id.as_deref(), Some("17"));
    put(
        &store,
        "p",
        vec![
            sp(9, 1, None, 499, 600)
                .with_attribute("session.id", "s")
                .with_attribute("user.id", "earliest"),
        ],
    );
    assert_eq!(
        summary(&store, "p", "s").user_id.as_deref(),
        Some("earliest")
    );
}

#[test]
fn rule6_latency_quantiles_interpolate_linearly() {
    let (_d, store) = open();
    // Latencies 1..=10 ms and one of 1000 ms.
    let mut spans = Vec::new();
    for t in 1..=10u64 {
        spans.push(
            sp(
                t,
                1,
                None,
                t * 10_000_000_000,
                t * 10_000_000_000 + t * 1_000_000,
            )
            .with_attribute("session.id", "s"),
        );
    }
    spans.push(sp(11, 1, None, 500_000_000_000, 501_000_000_000).with_attribute("session.id", "s"));
    put(&store, "p", spans);
    let q = summary(&store, "p", "s").trace_latency_ms;
    // numpy: sorted [1..10, 1000]; p50 = x[5] = 6; p99 at 9.9 = 10 + 0.9 * 990.
    assert!(close_float(q.p50, 6.0), "{q:?}");
    assert!(close_float(q.p99, 10.0 + 0.9 * 990.0), "{q:?}");
    // A single trace: both quantiles are its latency.
    put(
        &store,
        "p",
        vec![sp(20, 1, None, 0, 2_500_000).with_attribute("session.id", "one")],
    );
    let q = summary(&store, "p", "one").trace_latency_ms;
    assert!(close_float(q.p50, 2.5) && close_float(q.p99, 2.5), "{q:?}");
}

#[test]
fn rule6_last_output_moves_when_its_trace_gains_an_earlier_span() {
    // Trace 1 (start 100) holds the last output; a late child starting at
    // 10 moves trace 1 before trace 2 (start 50), whose output is now last.
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 100, 110)
                .with_attribute("session.id", "s")
                .with_attribute("output.value", "one"),
            sp(2, 1, None, 50, 60)
                .with_attribute("session.id", "s")
                .with_attribute("output.value", "two"),
        ],
    );
    assert_eq!(summary(&store, "p", "s").last_output, text("one"));
    put(&store, "p", vec![sp(1, 2, Some(1), 10, 20)]);
    assert_eq!(history_ids(&store, "p", "s"), vec![tid(1), tid(2)]);
    let s = summary(&store, "p", "s");
    assert_eq!(s.start_time_unix_nano, 10);
    assert_eq!(s.last_output, text("two"));
}

// ---------------------------------------------------------------- rule 7

#[test]
fn rule7_history_is_ordered_by_start_then_trace_id() {
    let (_d, store) = open();
    let starts = [(1u64, 30u64), (5, 10), (3, 20), (2, 10), (9, 10)];
    for (t, start) in starts {
        put(
            &store,
            "p",
            vec![sp(t, 1, Some(100), start, start + 1).with_attribute("session.id", "s")],
        );
    }
    assert_eq!(
        history_ids(&store, "p", "s"),
        vec![tid(2), tid(5), tid(9), tid(3), tid(1)]
    );
    // An earlier span of trace 1 arrives: trace 1 moves to the front.
    put(&store, "p", vec![sp(1, 2, Some(100), 5, 6)]);
    assert_eq!(
        history_ids(&store, "p", "s"),
        vec![tid(1), tid(2), tid(5), tid(9), tid(3)]
    );
    assert_eq!(summary(&store, "p", "s").start_time_unix_nano, 5);
}

/// Sessions in project p with ties on every sort key, a few in project q.
fn sessions_with_ties(store: &SessionStore) {
    // (session, [(start, end, tokens)] per trace)
    type Plan<'a> = (&'a str, Vec<(u64, u64, i64)>);
    let plan: Vec<Plan<'_>> = vec![
        ("a", vec![(100, 200, 5)]),
        ("b", vec![(100, 200, 5)]),
        ("c", vec![(100, 300, 1), (150, 160, 4)]),
        ("d", vec![(50, 150, 0)]),
        ("e", vec![(300, 400, 5), (310, 320, 0), (330, 340, 0)]),
        ("f", vec![(50, 400, 10)]),
        ("g", vec![(200, 300, 2), (250, 260, 3)]),
        ("h", vec![(400, 400, 0)]),
        ("i", vec![(10, 20, 7)]),
        ("j", vec![(10, 20, 7)]),
        ("k", vec![(0, 1000, 0), (1, 2, 0)]),
    ];
    let mut t = 0u64;
    let mut spans = Vec::new();
    for (s, traces) in &plan {
        for (start, end, tok) in traces {
            t += 1;
            spans.push(llm(sp(t, 1, None, *start, *end), *tok, 0).with_attribute("session.id", *s));
        }
    }
    put(store, "p", spans);
    put(
        store,
        "q",
        vec![
            sp(1000, 1, None, 0, 1).with_attribute("session.id", "a"),
            sp(1001, 1, None, 0, 1).with_attribute("session.id", "zz"),
        ],
    );
}

fn sort_key(s: &SessionSummary, sort: SessionSort) -> u64 {
    match sort {
        SessionSort::StartTime => s.start_time_unix_nano,
        SessionSort::EndTime => s.end_time_unix_nano,
        SessionSort::NumTraces => s.num_traces,
        SessionSort::TotalTokens => s.tokens.total,
        SessionSort::Duration => s.duration_nanos(),
        _ => panic!("a sort key this test does not know: {sort:?}"),
    }
}

#[test]
fn rule7_session_list_pages_concatenate_to_the_sorted_list() {
    let (_d, store) = open();
    sessions_with_ties(&store);
    let all: Vec<SessionSummary> = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
        .iter()
        .map(|s| summary(&store, "p", s))
        .collect();
    assert_eq!(summary(&store, "p", "c").tokens.total, 5);
    assert_eq!(summary(&store, "p", "e").num_traces, 3);
    for sort in SORTS {
        let mut want = all.clone();
        want.sort_by(|x, y| {
            (sort_key(x, sort), &x.session_id).cmp(&(sort_key(y, sort), &y.session_id))
        });
        for desc in [false, true] {
            let want: Vec<SessionSummary> = if desc {
                want.iter().rev().cloned().collect()
            } else {
                want.clone()
            };
            for limit in [1, 2, 3, 4, 5, 10, 11, 12, 1000] {
                let got = list_all(&store, "p", sort, desc, limit);
                let got_ids: Vec<&str> = got.iter().map(|s| s.session_id.as_str()).collect();
                let want_ids: Vec<&str> = want.iter().map(|s| s.session_id.as_str()).collect();
                assert_eq!(
                    got_ids, want_ids,
                    "{sort:?} descending={desc} limit={limit}"
                );
                assert_eq!(got, want, "{sort:?} descending={desc} limit={limit}");
            }
        }
    }
    // The default query: newest first, 50 per page.
    let page = store.sessions("p", &SessionQuery::default()).unwrap();
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        page.items,
        list_all(&store, "p", SessionSort::StartTime, true, 1000)
    );
    // Project q is separate, and an unknown project is empty.
    let q: Vec<String> = list_all(&store, "q", SessionSort::EndTime, false, 1)
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(q, vec!["a", "zz"]);
    assert!(list_all(&store, "nope", SessionSort::EndTime, false, 1).is_empty());
}

#[test]
fn rule7_ties_order_by_session_id_bytes_and_zero_limits_still_page() {
    let (_d, store) = open();
    let ids = ["b", "a\u{1}", "é", "ab", "Z", "a", "a b", "\u{10FFFF}"];
    let spans: Vec<Span> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            sp(u64::try_from(i).unwrap() + 1, 1, None, 100, 200).with_attribute("session.id", *id)
        })
        .collect();
    put(&store, "p", spans);
    let mut want: Vec<&str> = ids.to_vec();
    want.sort_unstable();
    assert_eq!(
        want,
        vec!["Z", "a", "a\u{1}", "a b", "ab", "b", "é", "\u{10FFFF}"]
    );
    for sort in SORTS {
        for limit in [0, 1, 3] {
            let got: Vec<String> = list_all(&store, "p", sort, false, limit)
                .into_iter()
                .map(|s| s.session_id)
                .collect();
            assert_eq!(got, want, "{sort:?} ascending, limit {limit}");
            let got: Vec<String> = list_all(&store, "p", sort, true, limit)
                .into_iter()
                .map(|s| s.session_id)
                .collect();
            let rev: Vec<&str> = want.iter().rev().copied().collect();
            assert_eq!(got, rev, "{sort:?} descending, limit {limit}");
        }
    }
    // A limit of 0 pages like a limit of 1 in a history too.
    put(
        &store,
        "p",
        vec![sp(50, 1, None, 300, 400).with_attribute("session.id", "a")],
    );
    assert_eq!(
        history_all(&store, "p", "a", 0),
        store.session_history("p", "a").unwrap()
    );
}

#[test]
fn rule7_a_cursor_is_refused_by_any_other_query() {
    let (_d, store) = open();
    sessions_with_ties(&store);
    put(
        &store,
        "other",
        vec![sp(900, 1, None, 5, 6).with_attribute("session.id", "k")],
    );
    for n in 0..3 {
        put(
            &store,
            "p",
            vec![sp(800 + n, 1, None, 1_000 + n, 1_001 + n).with_attribute("session.id", "long")],
        );
        put(
            &store,
            "other",
            vec![sp(700 + n, 1, None, 1_000 + n, 1_001 + n).with_attribute("session.id", "long")],
        );
    }
    let q = |sort, descending, cursor: Option<String>| SessionQuery {
        sort,
        descending,
        limit: 2,
        cursor,
        ..SessionQuery::default()
    };
    let list = store
        .sessions("p", &q(SessionSort::StartTime, false, None))
        .unwrap()
        .next_cursor
        .unwrap();
    let history = store
        .session_history_page("p", "long", 1, None)
        .unwrap()
        .next_cursor
        .unwrap();
    // Each goes on in its own query.
    assert!(
        store
            .sessions("p", &q(SessionSort::StartTime, false, Some(list.clone())))
            .is_ok()
    );
    assert_eq!(
        store
            .session_history_page("p", "long", 1, Some(&history))
            .unwrap()
            .items
            .len(),
        1
    );
    // Another sort, direction or project, or a history, refuses a list's
    // cursor (before, a start time cursor walked the traces order).
    for (project, sort, descending) in [
        ("p", SessionSort::NumTraces, false),
        ("p", SessionSort::StartTime, true),
        ("other", SessionSort::StartTime, false),
    ] {
        let r = store.sessions(project, &q(sort, descending, Some(list.clone())));
        assert_invalid_input(
            r,
            &format!("list cursor in {project} {sort:?} {descending}"),
        );
    }
    assert_invalid_input(
        store.session_history_page("p", "long", 1, Some(&list)),
        "list cursor in a history",
    );
    // Another session's or project's history, or a list, refuses a
    // history's cursor, even one of a session that does not exist.
    for (project, session) in [("other", "long"), ("p", "k"), ("p", "missing")] {
        let r = store.session_history_page(project, session, 1, Some(&history));
        assert_invalid_input(r, &format!("history cursor in {project}/{session}"));
    }
    assert_invalid_input(
        store.sessions(
            "p",
            &q(SessionSort::StartTime, false, Some(history.clone())),
        ),
        "history cursor in a list",
    );
}

#[test]
fn rule7_session_list_cursors_are_stable_under_appends() {
    let (_d, store) = open();
    sessions_with_ties(&store);
    let q = |cursor: Option<String>| SessionQuery {
        sort: SessionSort::StartTime,
        descending: false,
        limit: 4,
        cursor,
        ..SessionQuery::default()
    };
    let first = store.sessions("p", &q(None)).unwrap();
    let seen: Vec<String> = first.items.iter().map(|s| s.session_id.clone()).collect();
    assert_eq!(seen, vec!["k", "i", "j", "d"]);
    // New sessions: one before the cursor, one after everything.
    put(
        &store,
        "p",
        vec![
            sp(500, 1, None, 0, 5).with_attribute("session.id", "before"),
            sp(501, 1, None, 10_000, 10_005).with_attribute("session.id", "after"),
        ],
    );
    let mut rest = Vec::new();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let page = store.sessions("p", &q(Some(c))).unwrap();
        rest.extend(page.items.into_iter().map(|s| s.session_id));
        cursor = page.next_cursor;
    }
    assert_eq!(rest, vec!["f", "a", "b", "c", "g", "e", "h", "after"]);
}

#[test]
fn rule7_history_pages_concatenate_to_the_history() {
    let (_d, store) = open();
    let starts = [40u64, 10, 10, 30, 20, 10, 50];
    let spans: Vec<Span> = starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            sp(u64::try_from(i).unwrap() + 1, 1, None, *start, start + 5)
                .with_attribute("session.id", "s")
        })
        .collect();
    put(&store, "p", spans);
    let full = store.session_history("p", "s").unwrap();
    assert_eq!(full.len(), 7);
    for limit in 1..=9 {
        assert_eq!(history_all(&store, "p", "s", limit), full, "limit {limit}");
    }
    // A new turn before the cursor is not returned on later pages; one after is.
    let first = store.session_history_page("p", "s", 3, None).unwrap();
    let ids: Vec<TraceId> = first.items.iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, vec![tid(2), tid(3), tid(6)]);
    put(
        &store,
        "p",
        vec![
            sp(100, 1, None, 0, 1).with_attribute("session.id", "s"),
            sp(101, 1, None, 60, 61).with_attribute("session.id", "s"),
        ],
    );
    let mut rest = Vec::new();
    let mut cursor = first.next_cursor;
    while let Some(c) = cursor {
        let page = store.session_history_page("p", "s", 3, Some(&c)).unwrap();
        rest.extend(page.items.iter().map(|t| t.trace_id));
        cursor = page.next_cursor;
    }
    assert_eq!(rest, vec![tid(5), tid(4), tid(1), tid(7), tid(101)]);
    // Unknown sessions have an empty history.
    assert!(store.session_history("p", "nope").unwrap().is_empty());
    let empty = store.session_history_page("p", "nope", 3, None).unwrap();
    assert!(empty.items.is_empty() && empty.next_cursor.is_none());
}

#[test]
fn rule7_a_full_last_page_has_no_next_cursor() {
    // `next_cursor` is `None` when the page is the last, also when it is full.
    let (_d, store) = open();
    for (t, s) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
        put(
            &store,
            "p",
            vec![
                sp(t, 1, None, t * 10, t * 10 + t)
                    .with_attribute("session.id", s)
                    .with_attribute("input.value", "refund"),
                sp(10 + t, 1, None, 100 + t, 105 + t).with_attribute("session.id", "h"),
            ],
        );
    }
    // History: 4 turns in pages of 2, and in one page of 4.
    let first = store.session_history_page("p", "h", 2, None).unwrap();
    let cursor = first.next_cursor.expect("a second page");
    let last = store
        .session_history_page("p", "h", 2, Some(&cursor))
        .unwrap();
    let ids: Vec<TraceId> = last.items.iter().map(|t| t.trace_id).collect();
    assert_eq!(ids, vec![tid(13), tid(14)]);
    assert_eq!(last.next_cursor, None, "history: the last page is full");
    let whole = store.session_history_page("p", "h", 4, None).unwrap();
    assert_eq!((whole.items.len(), whole.next_cursor), (4, None));
    // Session list: 5 sessions (4 with "refund"), every order, with and
    // without a search.
    for sort in SORTS {
        for descending in [false, true] {
            for (search, n) in [(None, 5), (Some("refund".to_owned()), 4)] {
                let q = SessionQuery {
                    sort,
                    descending,
                    limit: n - 2,
                    filter: span_sessions::SessionFilter {
                        search: search.clone(),
                        ..Default::default()
                    },
                    ..SessionQuery::default()
                };
                let ctx = format!("{sort:?} descending={descending} search={search:?}");
                let first = store.sessions("p", &q).unwrap();
                let cursor = first.next_cursor.clone().expect("a second page");
                let q2 = SessionQuery {
                    cursor: Some(cursor),
                    limit: 2,
                    ..q.clone()
                };
                let last = store.sessions("p", &q2).unwrap();
                assert_eq!(last.items.len(), 2, "{ctx}");
                assert_eq!(last.next_cursor, None, "{ctx}: the last page is full");
                let whole = store
                    .sessions("p", &SessionQuery { limit: n, ..q })
                    .unwrap();
                assert_eq!((whole.items.len(), whole.next_cursor), (n, None), "{ctx}");
            }
        }
    }
}

#[test]
fn rule7_garbage_cursors_are_invalid_input() {
    let (_d, store) = open();
    sessions_with_ties(&store);
    let garbage = ["not a cursor", "", "zz", "0", "-1", "ééé", "0x12345678"];
    for sort in SORTS {
        for descending in [false, true] {
            for c in garbage {
                let q = SessionQuery {
                    sort,
                    descending,
                    limit: 3,
                    cursor: Some(c.to_owned()),
                    ..SessionQuery::default()
                };
                assert_invalid_input(store.sessions("p", &q), &format!("sessions cursor {c:?}"));
            }
        }
    }
    for c in garbage
        .iter()
        .chain(&["00ff", "00000000000000000000000000"])
    {
        for session in ["a", "nope"] {
            assert_invalid_input(
                store.session_history_page("p", session, 3, Some(c)),
                &format!("history cursor {c:?} of {session}"),
            );
        }
    }
}

// ---------------------------------------------------------------- rule 8

#[test]
fn rule8_every_query_sees_a_batch_when_append_returns() {
    for durability in [
        Durability::Sync,
        Durability::GroupCommit,
        Durability::Buffered,
    ] {
        let (_d, store) = open_with(StoreOptions::default().durability(durability));
        for i in 0..20u64 {
            let t = i + 1;
            let r = put(
                &store,
                "p",
                vec![
                    llm(sp(t, 1, None, i * 100, i * 100 + 50), 1, 1)
                        .with_attribute("session.id", "s")
                        .with_attribute("output.value", format!("out {i}")),
                ],
            );
            assert_eq!(r.accepted, 1);
            let s = summary(&store, "p", "s");
            assert_eq!(s.num_traces, i + 1, "{durability:?}");
            assert_eq!(s.tokens.total, 2 * (i + 1));
            assert_eq!(s.last_output, text(&format!("out {i}")));
            assert_eq!(
                store.session_history("p", "s").unwrap().len(),
                usize::try_from(i).unwrap() + 1
            );
            assert_eq!(store.trace(tid(t)).unwrap().unwrap().spans.len(), 1);
            assert_eq!(
                list_all(&store, "p", SessionSort::NumTraces, true, 1)[0].num_traces,
                i + 1
            );
            // A span joining an existing trace is visible at once too.
            put(
                &store,
                "p",
                vec![sp(t, 2, Some(1), i * 100 + 1, i * 100 + 60)],
            );
            assert_eq!(only_turn_of(&store, t).num_spans, 2);
            assert_eq!(only_turn_of(&store, t).end_time_unix_nano, i * 100 + 60);
        }
    }
}

fn only_turn_of(store: &SessionStore, t: u64) -> Turn {
    store
        .session_history("p", "s")
        .unwrap()
        .into_iter()
        .find(|x| x.trace_id == tid(t))
        .unwrap()
}

#[test]
fn rule8_another_thread_sees_the_batch_after_append_returns() {
    let (_d, store) = open();
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            for n in rx {
                // The writer may be further on; it is never behind what was sent.
                let s = summary(&store, "p", "s");
                assert!(
                    s.num_traces >= n,
                    "{} traces seen after {n} appends",
                    s.num_traces
                );
                assert_eq!(store.trace(tid(n)).unwrap().unwrap().spans.len(), 1);
            }
        });
        for n in 1..=30u64 {
            put(
                &store,
                "p",
                vec![sp(n, 1, None, n, n + 1).with_attribute("session.id", "s")],
            );
            tx.send(n).unwrap();
        }
        drop(tx);
        reader.join().unwrap();
    });
}

// ---------------------------------------------------------------- rule 9

fn long(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

#[test]
fn rule9_bad_spans_are_rejected_with_reasons_and_the_rest_is_stored() {
    let (_d, store) = open_with(StoreOptions::default().max_span_bytes(8192));
    let good1 = sp(1, 1, None, 10, 20).with_attribute("session.id", "s");
    let good2 = sp(2, 1, None, 30, 40).with_attribute("session.id", "s");
    let bad_trace = Span::new(TraceId([0; 16]), sid(1), None, "zero trace", 1, 2)
        .with_attribute("session.id", "s");
    let bad_span = Span::new(tid(3), SpanId([0; 8]), None, "zero span", 1, 2)
        .with_attribute("session.id", "s");
    let bad_parent = Span::new(tid(4), sid(1), Some(SpanId([0; 8])), "zero parent", 1, 2)
        .with_attribute("session.id", "s");
    let long_session = sp(5, 1, None, 1, 2).with_attribute("session.id", long('s', 4097));
    let long_meta_session = sp(6, 1, None, 1, 2).with_attribute(
        "metadata",
        format!(r#"{{"session_id": "{}"}}"#, long('m', 4097)),
    );
    let long_user = sp(7, 1, None, 1, 2)
        .with_attribute("session.id", "s")
        .with_attribute("user.id", long('u', 4097));
    let oversize = sp(8, 1, None, 1, 2)
        .with_attribute("session.id", "s")
        .with_attribute("input.value", long('x', 10_000));
    // A good span in the same trace as a bad one.
    let good3 = llm(sp(7, 2, Some(1), 3, 4), 2, 2);
    let long_project = sp(9, 1, None, 1, 2).with_attribute("session.id", "s");
    let batch = vec![
        ResourceSpans::for_project(
            "p",
            vec![
                bad_trace.clone(),
                good1,
                bad_span.clone(),
                bad_parent.clone(),
                long_session.clone(),
            ],
        ),
        ResourceSpans::for_project(long('P', 4097), vec![long_project.clone()]),
        ResourceSpans::for_project(
            "p2",
            vec![
                long_meta_session.clone(),
                good2,
                long_user.clone(),
                oversize.clone(),
                good3,
            ],
        ),
    ];
    let r = store.append(&batch).unwrap();
    assert_eq!(r.accepted, 3, "{r:#?}");
    assert_eq!(r.duplicates, 0);
    let mut got: Vec<(TraceId, SpanId)> =
        r.rejected.iter().map(|x| (x.trace_id, x.span_id)).collect();
    got.sort();
    let mut want: Vec<(TraceId, SpanId)> = [
        &bad_trace,
        &bad_span,
        &bad_parent,
        &long_session,
        &long_project,
        &long_meta_session,
        &long_user,
        &oversize,
    ]
    .iter()
    .map(|s| (s.trace_id, s.span_id))
    .collect();
    want.sort();
    assert_eq!(got, want);
    for x in &r.rejected {
        assert!(
            !x.reason.trim().is_empty(),
            "a rejection without a reason: {x:?}"
        );
    }
    // The good spans are stored; nothing of the bad ones is.
    assert_eq!(store.projects().unwrap(), vec!["p", "p2"]);
    assert_eq!(summary(&store, "p", "s").num_traces, 1);
    assert_eq!(summary(&store, "p2", "s").num_traces, 1);
    for t in [3, 4, 5, 6, 8, 9] {
        assert_eq!(store.trace(tid(t)).unwrap(), None, "trace {t}");
    }
    assert_eq!(store.trace(TraceId([0; 16])).unwrap(), None);
    let t7 = store.trace(tid(7)).unwrap().unwrap();
    assert_eq!(t7.spans.len(), 1);
    assert_eq!(t7.session_id, None);
    assert_eq!(session_ids(&store, "p"), vec!["s"]);
    assert_eq!(session_ids(&store, "p2"), vec!["s"]);
}

#[test]
fn rule9_a_rejected_copy_does_not_block_a_valid_one() {
    let (_d, store) = open_with(StoreOptions::default().max_span_bytes(4096));
    let valid = sp(1, 1, None, 10, 20)
        .with_attribute("session.id", "s")
        .with_attribute("input.value", "small");
    let oversize = Span {
        attributes: vec![
            KeyValue::new("session.id", "s"),
            KeyValue::new("input.value", long('x', 10_000)),
        ],
        ..valid.clone()
    };
    let r = put(&store, "p", vec![oversize, valid]);
    assert_eq!((r.accepted, r.duplicates, r.rejected.len()), (1, 0, 1));
    assert_eq!(only_turn(&store, "p", "s").input, text("small"));
}

#[test]
fn rule9_ids_of_exactly_the_limit_are_accepted() {
    let (_d, store) = open();
    let project = long('p', 4096);
    let session = long('s', 4096);
    let user = long('u', 4096);
    let span = sp(1, 1, None, 1, 2)
        .with_attribute("session.id", format!("  {session}  "))
        .with_attribute("user.id", user.clone());
    let r = store
        .append(&[ResourceSpans::for_project(project.clone(), vec![span])])
        .unwrap();
    assert_eq!((r.accepted, r.rejected.len()), (1, 0), "{:?}", r.rejected);
    let s = summary(&store, &project, &session);
    assert_eq!(s.user_id, Some(user));
    assert_eq!(store.projects().unwrap(), vec![project]);
}

#[test]
fn rule9_a_fully_rejected_batch_leaves_no_trace() {
    let (dir, store) = open_with(StoreOptions::default().max_span_bytes(4096));
    let items = scenario();
    append_in_batches(&store, &items, &[5]);
    let mut traces = scenario_traces();
    traces.push(tid(77));
    let extra_sessions = {
        let mut v = SCENARIO_SESSIONS.to_vec();
        v.extend([("p", "new"), ("new-project", "new"), ("p", "s9")]);
        v
    };
    let before = snapshot(&store, &traces, &["p", "q", "new-project"], &extra_sessions);
    let bad = vec![
        ResourceSpans::for_project(
            "new-project",
            vec![
                Span::new(TraceId([0; 16]), sid(1), None, "x", 1, 2)
                    .with_attribute("session.id", "new"),
                Span::new(tid(77), SpanId([0; 8]), None, "x", 1, 2)
                    .with_attribute("session.id", "new"),
            ],
        ),
        ResourceSpans::for_project(
            "p",
            vec![
                // Into existing trace 1, which would change its session and tokens.
                llm(sp(1, 99, Some(1), 0, 99_999), 5, 5)
                    .with_attribute("session.id", long('n', 5000)),
                llm(sp(1, 98, None, 0, 99_999), 5, 5)
                    .with_attribute("session.id", "s9")
                    .with_attribute("user.id", long('u', 5000)),
                sp(1, 97, Some(0), 0, 1).with_attribute("input.value", long('i', 5000)),
                Span::new(tid(77), sid(1), Some(SpanId([0; 8])), "x", 1, 2),
            ],
        ),
        ResourceSpans::for_project(long('P', 4097), vec![sp(77, 2, None, 1, 2)]),
    ];
    let r = store.append(&bad).unwrap();
    assert_eq!(
        (r.accepted, r.duplicates, r.rejected.len()),
        (0, 0, 7),
        "{r:#?}"
    );
    let after = snapshot(&store, &traces, &["p", "q", "new-project"], &extra_sessions);
    assert_eq!(after, before);

    // Empty batches are fine and change nothing either.
    assert_eq!(store.append(&[]).unwrap(), AppendReport::default());
    assert_eq!(
        store.append(&[ResourceSpans::default()]).unwrap(),
        AppendReport::default()
    );
    assert_eq!(
        snapshot(&store, &traces, &["p", "q", "new-project"], &extra_sessions),
        before
    );
    // Nothing of the rejected batch reaches the log either: a reopen replays
    // the log and gives the same answers.
    drop(store);
    let store = StoreOptions::default()
        .max_span_bytes(4096)
        .open(dir.path())
        .unwrap();
    assert_eq!(
        snapshot(&store, &traces, &["p", "q", "new-project"], &extra_sessions),
        before
    );
    store.rebuild_indexes().unwrap();
    assert_eq!(
        snapshot(&store, &traces, &["p", "q", "new-project"], &extra_sessions),
        before
    );
}

/// A span that is its own parent, and two spans that are each other's
/// parent: no span lacks a stored parent, so nothing can stand in as root.
#[test]
fn rule9_parent_cycles_are_stored_or_rejected_and_the_store_stays_usable() {
    let cases: Vec<(&str, Vec<Span>)> = vec![
        (
            "its own parent",
            vec![sp(1, 1, Some(1), 5, 6).with_attribute("session.id", "w")],
        ),
        (
            "a two-span cycle",
            vec![
                sp(1, 1, Some(2), 5, 6).with_attribute("session.id", "w"),
                sp(1, 2, Some(1), 5, 7),
            ],
        ),
    ];
    for (name, spans) in cases {
        for one_by_one in [false, true] {
            let (dir, store) = open();
            let batches: Vec<Vec<Span>> = if one_by_one {
                spans.iter().map(|s| vec![s.clone()]).collect()
            } else {
                vec![spans.clone()]
            };
            let mut accepted = 0;
            for b in batches {
                let r = store
                    .append(&[ResourceSpans::for_project("p", b)])
                    .unwrap_or_else(|e| {
                        panic!("{name} (one by one: {one_by_one}): append failed: {e:?}")
                    });
                accepted += r.accepted;
            }
            let h = store.session_history("p", "w").unwrap();
            let tr = store.trace(tid(1)).unwrap();
            assert_eq!(tr.map_or(0, |t| t.spans.len()), accepted, "{name}");
            if accepted > 0 {
                assert_eq!(h.len(), 1, "{name}");
                assert_eq!(h[0].num_spans, u64::try_from(accepted).unwrap(), "{name}");
                assert!(h[0].root_missing, "{name}: no span lacks a parent");
            }
            // The store still takes appends.
            let r = put(
                &store,
                "p",
                vec![sp(2, 1, None, 1, 2).with_attribute("session.id", "w")],
            );
            assert_eq!(r.accepted, 1, "{name}");
            // And it reopens (the log replays the cycle) with the same answers.
            let before = snapshot(&store, &[tid(1), tid(2)], &["p"], &[("p", "w")]);
            drop(store);
            let store = SessionStore::open(dir.path())
                .unwrap_or_else(|e| panic!("{name}: the store no longer opens: {e:?}"));
            let after = snapshot(&store, &[tid(1), tid(2)], &["p"], &[("p", "w")]);
            assert_eq!(after, before, "{name}: answers changed across a reopen");
        }
    }
}

#[test]
fn rule9_odd_input_does_not_panic() {
    let (_d, store) = open();
    let weird: Vec<Span> = vec![
        sp(1, 1, None, u64::MAX, u64::MAX).with_attribute("session.id", "w"),
        sp(1, 2, Some(1), 0, u64::MAX),
        sp(2, 1, None, 100, 10).with_attribute("session.id", "w"), // ends before it starts
        Span::new(tid(5), sid(1), None, "", 0, 0)
            .with_attribute(
                "session.id",
                AttributeValue::DoubleArray(vec![f64::NAN, 1.0]),
            )
            .with_attribute("input.value", AttributeValue::Double(f64::INFINITY))
            .with_attribute("output.value", AttributeValue::StringArray(vec![])),
        llm(sp(6, 1, None, 1, 2), i64::MAX, i64::MAX).with_attribute("session.id", "w"),
        llm(sp(6, 2, Some(1), 1, 2), -5, i64::MIN).with_attribute("llm.token_count.total", -1i64),
        sp(7, 1, None, 1, 2)
            .with_attribute("metadata", "[1, 2]")
            .with_attribute("user.id", AttributeValue::BoolArray(vec![true])),
        sp(8, 1, None, 1, 2).with_attribute("metadata", "null"),
        sp(9, 1, None, 1, 2).with_attribute("metadata", "7"),
        sp(10, 1, None, 1, 2).with_attribute("metadata", r#"{"session_id": {"a": 1}}"#),
        sp(11, 1, None, 1, 2).with_attribute("metadata", r#"{"session_id": [1, "x"]}"#),
        sp(12, 1, None, 1, 2).with_attribute("metadata", r#"{"session_id": 1.5e300}"#),
        sp(13, 1, None, 1, 2).with_attribute("metadata", AttributeValue::Int(3)),
        sp(14, 1, None, 1, 2).with_attribute("session.id", "会话-🙂\u{0}\n"),
        Span {
            events: vec![Event {
                time_unix_nano: 7,
                name: "exception".into(),
                attributes: vec![KeyValue::new("exception.message", "x")],
            }],
            links: vec![Link {
                trace_id: tid(1),
                span_id: sid(1),
                attributes: vec![],
            }],
            ..sp(15, 1, None, 1, 2).with_attribute("session.id", "w")
        },
        sp(16, u64::MAX, Some(u64::MAX - 1), 1, 2).with_attribute("session.id", "w"),
    ];
    let n = weird.len();
    let mut ids: Vec<TraceId> = weird.iter().map(|s| s.trace_id).collect();
    ids.dedup();
    let r = store
        .append(&[ResourceSpans {
            resource: vec![
                KeyValue::new(
                    "openinference.project.name",
                    AttributeValue::IntArray(vec![]),
                ),
                KeyValue::new("service.name", "svc"),
            ],
            spans: weird,
        }])
        .unwrap();
    assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    assert_eq!(r.accepted, n);
    let snap = snapshot(&store, &ids, &["default"], &[("default", "w")]);
    assert!(snap.projects.contains(&"default".to_owned()));
    for (_, tr) in &snap.traces {
        if let Some(tr) = tr {
            assert!(!tr.spans.is_empty());
        }
    }
    let w = summary(&store, "default", "w");
    assert!(w.num_traces >= 1);
    for c in [f64::is_nan, f64::is_infinite] {
        assert!(!c(w.trace_latency_ms.p50) && !c(w.trace_latency_ms.p99));
    }
    // The store still works afterwards.
    put(
        &store,
        "default",
        vec![sp(100, 1, None, 1, 2).with_attribute("session.id", "w")],
    );
    assert_eq!(summary(&store, "default", "w").num_traces, w.num_traces + 1);
}

// ------------------------------------- review: ids and facts from attributes

/// Rule 2: a non-string id is stringified as Phoenix does, with Python's
/// `str()` (reference §1.2). Python writes floats with `repr`: an exponent
/// always has a sign and at least two digits, and NaN is `nan`.
#[test]
fn rule2_float_ids_are_stringified_as_python_str() {
    let (_d, store) = open();
    // (value, str(value) in Python 3)
    let cases: [(f64, &str); 7] = [
        (1.0, "1.0"),
        (-0.0, "-0.0"),
        (1e20, "1e+20"),
        (1e16, "1e+16"),
        (1.5e-7, "1.5e-07"),
        (f64::NAN, "nan"),
        (f64::INFINITY, "inf"),
    ];
    let spans = cases
        .iter()
        .zip(1u64..)
        .map(|((v, _), t)| sp(t, 1, None, t * 10, t * 10 + 5).with_attribute("session.id", *v))
        .collect();
    put(&store, "p", spans);
    let got: Vec<(f64, Option<String>)> = cases
        .iter()
        .zip(1u64..)
        .map(|((v, _), t)| (*v, trace_session(&store, t)))
        .collect();
    let want: Vec<(f64, Option<String>)> = cases
        .iter()
        .map(|(v, s)| (*v, Some((*s).to_owned())))
        .collect();
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
}

/// Rule 2: an array id is `str()` of a Python list, whose items are
/// `repr`s: a string holding `'` is quoted with `"`, a backslash is
/// doubled, and floats print as Python prints them.
#[test]
fn rule2_array_ids_are_stringified_as_python_str() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20).with_attribute(
                "session.id",
                AttributeValue::StringArray(vec!["it's".into(), "a\\b".into()]),
            ),
            sp(2, 1, None, 30, 40).with_attribute(
                "session.id",
                AttributeValue::DoubleArray(vec![1e20, f64::NAN]),
            ),
        ],
    );
    // Python: str(["it's", "a\\b"]) == '["it\'s", \'a\\\\b\']'
    assert_eq!(
        trace_session(&store, 1).as_deref(),
        Some(r#"["it's", 'a\\b']"#)
    );
    // Python: str([1e20, float("nan")]) == "[1e+20, nan]"
    assert_eq!(trace_session(&store, 2).as_deref(), Some("[1e+20, nan]"));
}

/// Rule 2: ids are trimmed as Python's `str.strip()` trims them (reference
/// §1.2: `str(session_id).strip()`), which also removes the ASCII
/// information separators U+001C..U+001F (`'\x1f'.isspace()` is True).
#[test]
fn rule2_ids_are_trimmed_of_every_character_python_strips() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20).with_attribute("session.id", "\u{1c}s\u{1f}"),
            // Nothing but separators: empty, so the next source is used.
            sp(2, 1, None, 30, 40)
                .with_attribute("session.id", "\u{1d}\u{1e}")
                .with_attribute("gen_ai.conversation.id", "c"),
            sp(3, 1, None, 50, 60)
                .with_attribute("session.id", "u")
                .with_attribute("user.id", "\u{1f}alice\u{1c}"),
        ],
    );
    assert_eq!(trace_session(&store, 1).as_deref(), Some("s"));
    assert_eq!(trace_session(&store, 2).as_deref(), Some("c"));
    assert_eq!(summary(&store, "p", "u").user_id.as_deref(), Some("alice"));
}

/// Rule 2: a non-string value of a `metadata` JSON field is stringified
/// as Python's `str()` stringifies what `json.loads` gives: integers of
/// any size exactly, floats as Python prints them, lists and objects as
/// Python's list and dict reprs.
#[test]
fn rule2_metadata_values_are_stringified_as_python_str() {
    let (_d, store) = open();
    let cases: [(&str, &str); 6] = [
        (
            r#"{"session_id": 123456789012345678901234567890}"#,
            "123456789012345678901234567890",
        ),
        (r#"{"session_id": 1e20}"#, "1e+20"),
        (r#"{"session_id": 1.5e-7}"#, "1.5e-07"),
        (r#"{"session_id": 1.0}"#, "1.0"),
        (r#"{"session_id": [1, "a"]}"#, "[1, 'a']"),
        (r#"{"thread_id": {"k": "v"}}"#, "{'k': 'v'}"),
    ];
    let spans = cases
        .iter()
        .zip(1u64..)
        .map(|((m, _), t)| sp(t, 1, None, t * 10, t * 10 + 5).with_attribute("metadata", *m))
        .collect();
    put(&store, "p", spans);
    let got: Vec<(&str, Option<String>)> = cases
        .iter()
        .zip(1u64..)
        .map(|((m, _), t)| (*m, trace_session(&store, t)))
        .collect();
    let want: Vec<(&str, Option<String>)> = cases
        .iter()
        .map(|(m, s)| (*m, Some((*s).to_owned())))
        .collect();
    assert_eq!(got, want);
}

/// Rule 2: `metadata` is the JSON string OpenInference's Python
/// instrumentation writes with `json.dumps`, which writes a float NaN or
/// infinity as `NaN` / `Infinity` (its default `allow_nan=True`); the
/// session id in such metadata must still be found.
#[test]
fn rule2_metadata_written_by_python_json_dumps_is_read() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20)
                .with_attribute("metadata", r#"{"thread_id": "t-1", "temperature": NaN}"#),
            sp(2, 1, None, 30, 40)
                .with_attribute("metadata", r#"{"session_id": "s-2", "max": Infinity}"#),
        ],
    );
    assert_eq!(trace_session(&store, 1).as_deref(), Some("t-1"));
    assert_eq!(trace_session(&store, 2).as_deref(), Some("s-2"));
}

/// Rule 5: a non-string `input.value` / `output.value` is JSON-dumped and
/// its mime type is `application/json`, as Phoenix stores it (reference
/// §2, `spans`: "A non-string `input.value` is JSON-dumped and
/// `input.mime_type` is forced to `application/json`").
#[test]
fn rule5_non_string_io_values_are_json() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 10, 20)
                .with_attribute("session.id", "s")
                .with_attribute("input.value", true)
                .with_attribute(
                    "output.value",
                    AttributeValue::StringArray(vec!["a".into(), "b".into()]),
                ),
        ],
    );
    let turn = only_turn(&store, "p", "s");
    // Python: json.dumps(True) == "true"; json.dumps(["a", "b"]) == '["a", "b"]'
    assert_eq!(turn.input, io("true", "application/json"));
    assert_eq!(turn.output, io(r#"["a", "b"]"#, "application/json"));
}

/// Rule 5: an LLM span has `openinference.span.kind` = LLM. Phoenix reads
/// the kind with `SpanKind(value)`, whose `_missing_` upper-cases an ASCII
/// value ("llm" is LLM) and maps anything else to UNKNOWN: " LLM " with
/// surrounding spaces is UNKNOWN there, so its tokens do not count.
#[test]
fn rule5_a_span_kind_with_surrounding_spaces_is_not_llm() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 0, 100).with_attribute("session.id", "s"),
            llm(sp(1, 2, Some(1), 1, 2), 10, 5),
        ],
    );
    let padded = {
        let mut s = sp(1, 4, Some(1), 1, 2).with_attribute("openinference.span.kind", " LLM ");
        s.attributes
            .push(KeyValue::new("llm.token_count.prompt", 7i64));
        s
    };
    put(&store, "p", vec![padded]);
    assert_eq!(only_turn(&store, "p", "s").tokens, tokens(10, 5, 15));
}

/// Rule 5: `gen_ai.operation.name` makes an LLM span "under the GenAI
/// conventions", i.e. when the span names no OpenInference kind. Phoenix
/// merges the GenAI-derived kind with `setdefault` (reference §1.2:
/// `decode_otlp_span` ... "using `setdefault`"), so an explicit
/// `openinference.span.kind` of CHAIN or AGENT stays what it is and its
/// (typically cumulative) usage is not counted.
#[test]
fn rule5_an_explicit_openinference_kind_wins_over_the_genai_operation() {
    let (_d, store) = open();
    put(
        &store,
        "p",
        vec![
            sp(1, 1, None, 0, 100)
                .with_attribute("session.id", "s")
                .with_attribute("openinference.span.kind", "AGENT")
                .with_attribute("gen_ai.operation.name", "chat")
                .with_attribute("gen_ai.usage.input_tokens", 10i64)
                .with_attribute("gen_ai.usage.output_tokens", 5i64),
            sp(1, 2, Some(1), 1, 2)
                .with_attribute("gen_ai.operation.name", "chat")
                .with_attribute("gen_ai.usage.input_tokens", 10i64)
                .with_attribute("gen_ai.usage.output_tokens", 5i64),
        ],
    );
    assert_eq!(only_turn(&store, "p", "s").tokens, tokens(10, 5, 15));
}

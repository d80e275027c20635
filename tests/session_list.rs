//! The sessions list (issue 4): sorted, filtered, searched, paged, checked
//! against a model that recomputes everything from the spans.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::fold;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use span_sessions::{
    ResourceSpans, SessionFilter, SessionQuery, SessionSort, SessionStore, Span, SpanId,
    StatusCode, TraceId,
};

const WORDS: &[&str] = &[
    "ΟΔΟΣΑ",
    "refund",
    "Invoice",
    "GPU",
    "naïve",
    "Ünïcödé",
    "日本語のテキスト",
    "straße",
    "ΑΒΓ",
    "emoji🙂ok",
    "latency",
    "p99",
    "deploy",
    "x",
];

/// One generated turn: a root span (input/output/user/error) and an LLM child.
#[derive(Debug, Clone)]
struct TurnSpec {
    project: u8,
    session: u8,
    start: u64,
    dur: u64,
    input: String,
    output: String,
    user: Option<u8>,
    error: bool,
    tokens: u64,
}

fn words() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), 0..4).prop_map(|w| w.join(" "))
}

/// A few words, or now and then words around 72 KB of filler: a group
/// holding one queues its search postings on a thread of its own (beside
/// the table writes), a group of short texts in place.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => words(),
        1 => (words(), words()).prop_map(|(a, b)| format!("{a} {}{b}", "lorem ipsum ".repeat(6_000))),
    ]
}

fn turn() -> impl Strategy<Value = TurnSpec> {
    (
        0u8..2,
        0u8..6,
        0u64..1_000,
        0u64..300,
        text(),
        text(),
        prop::option::of(0u8..3),
        prop::bool::weighted(0.2),
        0u64..50,
    )
        .prop_map(
            |(project, session, start, dur, input, output, user, error, tokens)| TurnSpec {
                project,
                session,
                start,
                dur,
                input,
                output,
                user,
                error,
                tokens,
            },
        )
}

fn spans_of(i: usize, t: &TurnSpec) -> Vec<(String, Span)> {
    let mut tid = [0u8; 16];
    tid[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    let tid = TraceId(tid);
    let project = format!("p{}", t.project);
    let mut root = Span::new(tid, SpanId([1; 8]), None, "agent", t.start, t.start + t.dur)
        .with_attribute("session.id", format!("s{}", t.session))
        .with_attribute("input.value", t.input.clone())
        .with_attribute("output.value", t.output.clone());
    if let Some(u) = t.user {
        root = root.with_attribute("user.id", format!("u{u}"));
    }
    if t.error {
        root = root.with_status(StatusCode::Error, "boom");
    }
    let child = Span::new(
        tid,
        SpanId([2; 8]),
        Some(SpanId([1; 8])),
        "llm",
        t.start + 1,
        t.start + 2,
    )
    .with_attribute("openinference.span.kind", "LLM")
    .with_attribute("llm.token_count.total", i64::try_from(t.tokens).unwrap());
    vec![(project.clone(), child), (project, root)]
}

/// The model's view of a session.
#[derive(Debug, Clone, Default)]
struct ModelSession {
    id: String,
    traces: Vec<(u64, u64, usize)>, // start, end, turn index
    errors: u64,
    tokens: u64,
    texts: Vec<String>,
    user: Option<(u64, usize, String)>,
}

impl ModelSession {
    fn start(&self) -> u64 {
        self.traces.iter().map(|t| t.0).min().unwrap_or(0)
    }
    fn end(&self) -> u64 {
        self.traces.iter().map(|t| t.1).max().unwrap_or(0)
    }
    fn sort_value(&self, sort: SessionSort) -> u64 {
        match sort {
            SessionSort::StartTime => self.start(),
            SessionSort::EndTime => self.end(),
            SessionSort::NumTraces => self.traces.len() as u64,
            SessionSort::TotalTokens => self.tokens,
            SessionSort::Duration => self.end() - self.start(),
            _ => unreachable!(),
        }
    }
}

fn model(turns: &[TurnSpec], project: u8) -> Vec<ModelSession> {
    let mut m: BTreeMap<u8, ModelSession> = BTreeMap::new();
    for (i, t) in turns.iter().enumerate() {
        if t.project != project {
            continue;
        }
        let s = m.entry(t.session).or_default();
        s.id = format!("s{}", t.session);
        // The LLM child spans [start + 1, start + 2].
        s.traces
            .push((t.start, (t.start + t.dur).max(t.start + 2), i));
        s.errors += u64::from(t.error);
        s.tokens += t.tokens;
        s.texts.push(t.input.clone());
        s.texts.push(t.output.clone());
        if let Some(u) = t.user {
            // First user by span start; ties by trace id (= turn index order).
            let cand = (t.start, i, format!("u{u}"));
            if s.user
                .as_ref()
                .is_none_or(|cur| (cand.0, cand.1) < (cur.0, cur.1))
            {
                s.user = Some(cand);
            }
        }
    }
    m.into_values().collect()
}

fn passes(s: &ModelSession, f: &SessionFilter) -> bool {
    if let Some((a, b)) = f.time_range
        && (s.start() > b || s.end() < a)
    {
        return false;
    }
    if let Some(u) = &f.user_id
        && s.user.as_ref().map(|x| &x.2) != Some(u)
    {
        return false;
    }
    let n = s.traces.len() as u64;
    if f.min_traces.is_some_and(|m| n < m) || f.max_traces.is_some_and(|m| n > m) {
        return false;
    }
    if f.has_errors.is_some_and(|e| e != (s.errors > 0)) {
        return false;
    }
    if let Some(term) = &f.search {
        let term = fold(term);
        if !term.is_empty() && !s.texts.iter().any(|t| fold(t).contains(&term)) {
            return false;
        }
    }
    true
}

fn sort_strategy() -> impl Strategy<Value = SessionSort> {
    prop::sample::select(vec![
        SessionSort::StartTime,
        SessionSort::EndTime,
        SessionSort::NumTraces,
        SessionSort::TotalTokens,
        SessionSort::Duration,
    ])
}

fn search_term() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        prop::sample::select(vec![
            "REFUND",
            "invoice",
            "naÏve",
            "ünï",
            "日本語",
            "テキ",
            "STRASSE",
            "straße",
            "αβγ",
            "ΟΔΟΣ",
            "οδος",
            "🙂",
            "p9",
            "zzz-absent",
            "x",
            " ",
            "ate",
        ])
        .prop_map(|s| Some(s.to_owned())),
    ]
}

fn filter_strategy() -> impl Strategy<Value = SessionFilter> {
    (
        prop::option::of((0u64..1200, 0u64..600).prop_map(|(a, w)| (a, a + w))),
        prop::option::of((0u8..3).prop_map(|u| format!("u{u}"))),
        prop::option::of(1u64..4),
        prop::option::of(1u64..6),
        prop::option::of(any::<bool>()),
        search_term(),
    )
        .prop_map(
            |(time_range, user_id, min_traces, max_traces, has_errors, search)| SessionFilter {
                time_range,
                user_id,
                min_traces,
                max_traces,
                has_errors,
                search,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// Pages concatenated equal the model's sorted, filtered list, for any
    /// arrival order, sort, direction, filter and page size.
    #[test]
    fn pages_concatenate_to_the_models_list(
        turns in prop::collection::vec(turn(), 1..40),
        order_seed in any::<u64>(),
        batch in 1usize..20,
        queries in prop::collection::vec(
            (sort_strategy(), any::<bool>(), filter_strategy(), 1usize..7), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let mut spans: Vec<(String, Span)> =
            turns.iter().enumerate().flat_map(|(i, t)| spans_of(i, t)).collect();
        // Deterministic shuffle from the seed.
        let mut x = order_seed | 1;
        for i in (1..spans.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            spans.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for chunk in spans.chunks(batch) {
            let groups: Vec<ResourceSpans> = chunk
                .iter()
                .map(|(p, s)| ResourceSpans::for_project(p.clone(), vec![s.clone()]))
                .collect();
            store.append(&groups).unwrap();
        }
        for (sort, descending, filter, limit) in queries {
            for project in 0u8..2 {
                let mut expected: Vec<ModelSession> = model(&turns, project)
                    .into_iter()
                    .filter(|s| passes(s, &filter))
                    .collect();
                expected.sort_by(|a, b| {
                    let ka = (a.sort_value(sort), a.id.clone());
                    let kb = (b.sort_value(sort), b.id.clone());
                    if descending { kb.cmp(&ka) } else { ka.cmp(&kb) }
                });
                let mut got = Vec::new();
                let mut cursor = None;
                loop {
                    let q = SessionQuery { sort, descending, limit, cursor, filter: filter.clone() };
                    let page = store.sessions(&format!("p{project}"), &q).unwrap();
                    prop_assert!(page.items.len() <= limit);
                    got.extend(page.items);
                    match page.next_cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                    prop_assert!(got.len() <= expected.len() + limit, "runaway paging");
                }
                let got_ids: Vec<_> = got.iter().map(|s| s.session_id.clone()).collect();
                let want_ids: Vec<_> = expected.iter().map(|s| s.id.clone()).collect();
                prop_assert_eq!(&got_ids, &want_ids, "sort {:?} desc {} filter {:?}", sort, descending, filter);
                for (g, w) in got.iter().zip(&expected) {
                    prop_assert_eq!(g.num_traces, w.traces.len() as u64);
                    prop_assert_eq!(g.num_traces_with_error, w.errors);
                    prop_assert_eq!(g.tokens.total, w.tokens);
                    prop_assert_eq!(g.start_time_unix_nano, w.start());
                    prop_assert_eq!(g.end_time_unix_nano, w.end());
                    prop_assert_eq!(g.user_id.clone(), w.user.as_ref().map(|u| u.2.clone()));
                }
                let count = store.session_count(&format!("p{project}"), &filter).unwrap();
                prop_assert_eq!(count, expected.len() as u64);
            }
        }
    }
}

#[test]
fn project_stats_match_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    let turns: Vec<TurnSpec> = (0..20u64)
        .map(|i| TurnSpec {
            project: 0,
            session: (i % 4) as u8,
            start: i * 10,
            dur: 5,
            input: "hello".into(),
            output: "world".into(),
            user: None,
            error: false,
            tokens: i,
        })
        .collect();
    for (i, t) in turns.iter().enumerate() {
        let groups: Vec<ResourceSpans> = spans_of(i, t)
            .into_iter()
            .map(|(p, s)| ResourceSpans::for_project(p, vec![s]))
            .collect();
        store.append(&groups).unwrap();
    }
    let st = store.project_stats("p0").unwrap().unwrap();
    assert_eq!((st.sessions, st.traces, st.spans), (4, 20, 40));
    assert_eq!(st.tokens.total, (0..20).sum::<u64>());
    // Session k spans [10k, 10k + 160 + 5]: every duration is 165 ns.
    assert!((st.session_duration_ms.p50 - 165e-6).abs() < 1e-12);
    assert!(store.project_stats("nope").unwrap().is_none());
}

/// Appends the spans of `turns` (project 0 unless set), one trace each.
fn append_turns(store: &SessionStore, turns: &[TurnSpec]) {
    for (i, t) in turns.iter().enumerate() {
        let groups: Vec<ResourceSpans> = spans_of(i, t)
            .into_iter()
            .map(|(p, s)| ResourceSpans::for_project(p, vec![s]))
            .collect();
        store.append(&groups).unwrap();
    }
}

fn plain_turn(session: u8, start: u64, dur: u64, input: &str) -> TurnSpec {
    TurnSpec {
        project: 0,
        session,
        start,
        dur,
        input: input.into(),
        output: "ok".into(),
        user: None,
        error: false,
        tokens: 7,
    }
}

/// Every page of a query, concatenated (session ids).
fn walk(store: &SessionStore, mut q: SessionQuery) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let page = store.sessions("p0", &q).unwrap();
        out.extend(page.items.into_iter().map(|s| s.session_id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

/// Searched sessions tied on the sort key are ordered by session id, in
/// both directions and across pages (the search's own sorting path).
#[test]
fn searched_sessions_tied_on_the_sort_key_order_by_session_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    // One trace each, 7 tokens, 10 ns: tied on traces, tokens, duration.
    let turns: Vec<TurnSpec> = [3u8, 0, 5, 1, 4, 2]
        .iter()
        .enumerate()
        .map(|(i, s)| plain_turn(*s, 100 * i as u64, 10, "refund please"))
        .collect();
    append_turns(&store, &turns);
    let sorted: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    for sort in [
        SessionSort::NumTraces,
        SessionSort::TotalTokens,
        SessionSort::Duration,
    ] {
        for descending in [false, true] {
            for limit in [1, 4, 10] {
                let q = SessionQuery {
                    sort,
                    descending,
                    limit,
                    cursor: None,
                    filter: SessionFilter {
                        search: Some("REFUND".into()),
                        ..SessionFilter::default()
                    },
                };
                let mut want = sorted.clone();
                if descending {
                    want.reverse();
                }
                assert_eq!(
                    walk(&store, q),
                    want,
                    "{sort:?} descending={descending} limit={limit}"
                );
            }
        }
    }
}

/// The time-range window is inclusive at both ends: a session meets it
/// when `[start, end]` and the window share a single instant.
#[test]
fn time_range_bounds_are_inclusive() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    append_turns(&store, &[plain_turn(0, 100, 100, "x")]); // s0 spans [100, 200]
    for (window, kept) in [
        ((200, 300), true),
        ((0, 100), true),
        ((150, 150), true),
        ((201, 300), false),
        ((0, 99), false),
    ] {
        let filter = SessionFilter {
            time_range: Some(window),
            ..SessionFilter::default()
        };
        let q = SessionQuery {
            filter: filter.clone(),
            ..SessionQuery::default()
        };
        let want: Vec<String> = if kept { vec!["s0".into()] } else { vec![] };
        assert_eq!(walk(&store, q), want, "window {window:?}");
        assert_eq!(store.session_count("p0", &filter).unwrap(), u64::from(kept));
    }
}

/// Search is for the term as given: surrounding whitespace is part of it.
#[test]
fn search_keeps_the_whitespace_around_a_term() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    append_turns(
        &store,
        &[
            plain_turn(0, 100, 10, "refund"),
            plain_turn(1, 200, 10, "full refund"),
        ],
    );
    for (term, want) in [
        (" refund", vec!["s1"]),
        ("refund", vec!["s1", "s0"]),
        ("refund ", vec![]),
    ] {
        let filter = SessionFilter {
            search: Some(term.into()),
            ..SessionFilter::default()
        };
        let q = SessionQuery {
            filter: filter.clone(),
            ..SessionQuery::default()
        };
        assert_eq!(walk(&store, q), want, "search {term:?}");
        assert_eq!(
            store.session_count("p0", &filter).unwrap(),
            want.len() as u64
        );
    }
}

/// Session duration p50 and p99 interpolate linearly between ranks.
#[test]
fn project_stats_duration_quantiles_differ() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    // Ten sessions lasting 10, 20, ..., 100 ns.
    let turns: Vec<TurnSpec> = (0..10u8)
        .map(|i| plain_turn(i, 1_000 * u64::from(i), 10 * (u64::from(i) + 1), "x"))
        .collect();
    append_turns(&store, &turns);
    let st = store.project_stats("p0").unwrap().unwrap();
    assert_eq!(st.sessions, 10);
    assert!((st.session_duration_ms.p50 - 55e-6).abs() < 1e-12, "{st:?}");
    assert!(
        (st.session_duration_ms.p99 - 99.1e-6).abs() < 1e-12,
        "{st:?}"
    );
}

/// Walking pages while another thread appends never skips or repeats a
/// session whose sort value did not change.
#[test]
fn cursor_walk_is_stable_under_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SessionStore::open(dir.path()).unwrap());
    // 200 fixed sessions with distinct starts; the writer adds new sessions
    // and new turns to the "hot" ones, which may move.
    let fixed: Vec<TurnSpec> = (0..200u64)
        .map(|i| TurnSpec {
            project: 0,
            session: 0,
            start: 1_000 + i,
            dur: 1,
            input: String::new(),
            output: String::new(),
            user: None,
            error: false,
            tokens: 0,
        })
        .collect();
    for (i, t) in fixed.iter().enumerate() {
        let mut spans = spans_of(i, t);
        for (_, s) in &mut spans {
            s.attributes.retain(|kv| kv.key != "session.id");
            s.attributes.push(span_sessions::KeyValue::new(
                "session.id",
                format!("fixed-{i:03}"),
            ));
        }
        let groups: Vec<ResourceSpans> = spans
            .into_iter()
            .map(|(p, s)| ResourceSpans::for_project(p, vec![s]))
            .collect();
        store.append(&groups).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = Arc::clone(&store);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut i = 10_000usize;
            while !stop.load(Ordering::Relaxed) {
                let t = TurnSpec {
                    project: 0,
                    session: 0,
                    start: (i as u64 * 7919) % 3_000,
                    dur: 3,
                    input: "hot".into(),
                    output: String::new(),
                    user: None,
                    error: false,
                    tokens: 1,
                };
                let mut spans = spans_of(i, &t);
                for (_, s) in &mut spans {
                    s.attributes.retain(|kv| kv.key != "session.id");
                    s.attributes.push(span_sessions::KeyValue::new(
                        "session.id",
                        format!("hot-{}", i % 50),
                    ));
                }
                let groups: Vec<ResourceSpans> = spans
                    .into_iter()
                    .map(|(p, s)| ResourceSpans::for_project(p, vec![s]))
                    .collect();
                store.append(&groups).unwrap();
                i += 1;
            }
        })
    };
    for sort in [SessionSort::StartTime, SessionSort::NumTraces] {
        for descending in [false, true] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let q = SessionQuery {
                    sort,
                    descending,
                    limit: 7,
                    cursor,
                    filter: SessionFilter::default(),
                };
                let page = store.sessions("p0", &q).unwrap();
                seen.extend(
                    page.items
                        .into_iter()
                        .map(|s| s.session_id)
                        .filter(|id| id.starts_with("fixed-")),
                );
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), seen.len(), "a fixed session was repeated");
            assert_eq!(seen.len(), 200, "a fixed session was skipped");
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// Characters whose lowercase depends on their context (`Σ`), that
/// lowercase to more than one character (`İ`), that are their own case
/// (`ß`, `日`, `🙂`), or that lowercase to another script's letter (the
/// Kelvin sign).
const TRICKY: &[char] = &[
    'a', 'B', 'Σ', 'σ', 'ς', 'Ο', 'δ', 'İ', 'i', 'ß', 'S', '日', ' ', '🙂', 'K', 'k', 'ǅ',
];

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    /// Search finds a session by any piece of a root input taken verbatim,
    /// or lowercased, by the trigram index (three characters or more) and
    /// by the scan of short terms alike.
    #[test]
    fn a_verbatim_piece_of_an_input_is_always_found(
        text in prop::collection::vec(prop::sample::select(TRICKY), 1..24),
        from in any::<prop::sample::Index>(),
        len in 1usize..12,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        let input: String = text.iter().collect();
        let root = Span::new(TraceId([7; 16]), SpanId([1; 8]), None, "agent", 1, 2)
            .with_attribute("session.id", "s")
            .with_attribute("input.value", input.clone());
        store.append(&[ResourceSpans::for_project("p", vec![root])]).unwrap();
        let start = from.index(text.len());
        let piece: String = text[start..(start + len).min(text.len())].iter().collect();
        let lower: String = piece.chars().flat_map(char::to_lowercase).collect();
        for term in [&piece, &lower] {
            let found = common::search(&store, "p", term);
            prop_assert_eq!(found, vec!["s".to_owned()], "{:?} in {:?}", term, input);
        }
    }
}

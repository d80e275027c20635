//! Limits and hostile input: each case is stored or rejected by a
//! documented rule (docs/RELIABILITY.md, "Limits"), with a reason, and
//! nothing panics or allocates without bound.
//!
//! The big cases run at a reduced size in CI; `SPAN_SESSIONS_BIG_TRACE_SPANS`
//! and `SPAN_SESSIONS_BIG_SESSION_TRACES` set the sizes (100,000 each in
//! the long run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod reliability;

use std::time::Instant;

use reliability::env_bound;
use span_sessions::{
    AttributeValue, Durability, MAX_ID_BYTES, MAX_IO_TEXT_BYTES, ResourceSpans, SessionQuery,
    SessionStore, Span, SpanId, StatusCode, TraceId,
};

fn tid(n: u64) -> TraceId {
    let mut b = [0u8; 16];
    b[0] = 0x7e;
    b[8..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

fn sid(n: u64) -> SpanId {
    let mut b = n.to_be_bytes();
    b[0] = 0x5d;
    SpanId(b)
}

fn store(dir: &std::path::Path) -> SessionStore {
    SessionStore::options()
        .durability(Durability::Buffered)
        .open(dir)
        .unwrap()
}

fn one(project: &str, span: Span) -> Vec<ResourceSpans> {
    vec![ResourceSpans::for_project(project, vec![span])]
}

#[test]
fn a_10_mib_input_value_is_stored_and_read_back_and_a_larger_span_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let big = "x".repeat(10 << 20);
    let span = Span::new(tid(1), sid(1), None, "agent", 1, 2)
        .with_attribute("session.id", "big")
        .with_attribute("input.value", big.as_str())
        .with_attribute("output.value", "ok");
    let t = Instant::now();
    let r = s.append(&one("p", span)).unwrap();
    assert_eq!(r.accepted, 1, "{:?}", r.rejected);
    let turns = s.session_history("p", "big").unwrap();
    assert_eq!(turns[0].input.as_ref().unwrap().value.len(), 10 << 20);
    let summary = s.session("p", "big").unwrap().unwrap();
    assert_eq!(summary.first_input.unwrap().value.len(), 10 << 20);
    let trace = s.trace(tid(1)).unwrap().unwrap();
    assert_eq!(
        trace.spans[0]
            .span
            .attribute("input.value")
            .and_then(AttributeValue::as_str)
            .map(str::len),
        Some(10 << 20)
    );
    // Search over the 10 MiB text works too.
    let q = SessionQuery {
        filter: span_sessions::SessionFilter {
            search: Some("xxxx".into()),
            ..Default::default()
        },
        ..SessionQuery::default()
    };
    assert_eq!(s.sessions("p", &q).unwrap().items.len(), 1);
    eprintln!(
        "10 MiB input value: stored and read back in {:?}",
        t.elapsed()
    );

    // Over `max_span_bytes` (16 MiB by default): rejected with the reason,
    // and the rest of the batch is stored.
    let huge = Span::new(tid(2), sid(1), None, "agent", 1, 2)
        .with_attribute("input.value", "y".repeat(17 << 20));
    let fine = Span::new(tid(3), sid(1), None, "agent", 1, 2);
    let r = s
        .append(&[ResourceSpans::for_project("p", vec![huge, fine])])
        .unwrap();
    assert_eq!(r.accepted, 1);
    assert_eq!(r.rejected.len(), 1);
    assert!(
        r.rejected[0].reason.contains("more than the limit"),
        "{:?}",
        r.rejected
    );
    assert!(s.trace(tid(2)).unwrap().is_none());
    assert!(s.trace(tid(3)).unwrap().is_some());
    drop(s);
    // And all of it survives a reopen (replay of a 10 MiB frame).
    let s = store(dir.path());
    assert_eq!(s.session("p", "big").unwrap().unwrap().num_traces, 1);
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn a_trace_of_many_spans_is_stored_in_batches_and_reads_back() {
    let n = env_bound("SPAN_SESSIONS_BIG_TRACE_SPANS", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let t = Instant::now();
    let trace = tid(7);
    let batch = env_bound("SPAN_SESSIONS_BIG_TRACE_BATCH", 1_000);
    for chunk in 0..n.div_ceil(batch) {
        let spans: Vec<Span> = (chunk * batch..((chunk + 1) * batch).min(n))
            .map(|i| {
                let parent = if i == 0 { None } else { Some(sid(0)) };
                let mut sp = Span::new(trace, sid(i), parent, "step", 1_000 + i, 2_000 + i)
                    .with_attribute("session.id", "long-trace");
                if i % 10 == 1 {
                    sp = sp
                        .with_attribute("openinference.span.kind", "LLM")
                        .with_attribute("llm.token_count.total", 3i64);
                }
                sp
            })
            .collect();
        let r = s.append(&[ResourceSpans::for_project("p", spans)]).unwrap();
        assert!(r.rejected.is_empty());
    }
    let appended = t.elapsed();
    let t = Instant::now();
    let tr = s.trace(trace).unwrap().unwrap();
    assert_eq!(tr.spans.len() as u64, n);
    let summary = s.session("p", "long-trace").unwrap().unwrap();
    assert_eq!(summary.num_traces, 1);
    // Spans 1, 11, 21, ... are LLM spans of 3 tokens each.
    assert_eq!(summary.tokens.total, 3 * ((n + 8) / 10));
    let turns = s.session_history("p", "long-trace").unwrap();
    assert_eq!(turns[0].num_spans, n);
    eprintln!(
        "trace of {n} spans: appended in batches of {batch} in {appended:?}, read back in {:?}",
        t.elapsed()
    );
}

#[test]
fn a_session_of_many_traces_is_paged_and_summarised() {
    let n = env_bound("SPAN_SESSIONS_BIG_SESSION_TRACES", 20_000);
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let t = Instant::now();
    let batch = 1_000;
    for chunk in 0..n.div_ceil(batch) {
        let spans: Vec<Span> = (chunk * batch..((chunk + 1) * batch).min(n))
            .map(|i| {
                Span::new(
                    tid(i + 1),
                    sid(1),
                    None,
                    "turn",
                    1_000 * i,
                    1_000 * i + 10 + i % 100,
                )
                .with_attribute("session.id", "long-session")
                .with_attribute("input.value", format!("q{i}"))
                .with_attribute("output.value", format!("a{i}"))
            })
            .collect();
        s.append(&[ResourceSpans::for_project("p", spans)]).unwrap();
    }
    let appended = t.elapsed();
    let t = Instant::now();
    let summary = s.session("p", "long-session").unwrap().unwrap();
    assert_eq!(summary.num_traces, n);
    assert_eq!(summary.first_input.unwrap().value, "q0");
    assert_eq!(summary.last_output.unwrap().value, format!("a{}", n - 1));
    let summarised = t.elapsed();
    // Paged in constant memory: 500 turns a page.
    let t = Instant::now();
    let mut cursor: Option<String> = None;
    let mut seen = 0u64;
    let mut last_start = None;
    loop {
        let page = s
            .session_history_page("p", "long-session", 500, cursor.as_deref())
            .unwrap();
        for turn in &page.items {
            assert!(last_start <= Some(turn.start_time_unix_nano));
            last_start = Some(turn.start_time_unix_nano);
        }
        seen += page.items.len() as u64;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, n);
    eprintln!(
        "session of {n} traces: appended in {appended:?}, summary in {summarised:?}, paged in {:?}",
        t.elapsed()
    );
}

#[test]
fn ids_over_the_limit_are_rejected_with_a_reason_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let long = "s".repeat(64 << 10);
    let cases = vec![
        Span::new(tid(1), sid(1), None, "a", 1, 2).with_attribute("session.id", long.as_str()),
        Span::new(tid(2), sid(1), None, "a", 1, 2).with_attribute("user.id", long.as_str()),
        Span::new(tid(3), sid(1), None, "a", 1, 2)
            .with_attribute("session.id", "s".repeat(MAX_ID_BYTES).as_str()),
        Span::new(TraceId([0; 16]), sid(1), None, "a", 1, 2),
        Span::new(tid(4), SpanId([0; 8]), None, "a", 1, 2),
        Span::new(tid(5), sid(1), Some(SpanId([0; 8])), "a", 1, 2),
    ];
    let r = s.append(&[ResourceSpans::for_project("p", cases)]).unwrap();
    assert_eq!(r.accepted, 1, "{:?}", r.rejected);
    let reasons: Vec<&str> = r.rejected.iter().map(|x| x.reason.as_str()).collect();
    assert!(
        reasons[0].contains("session id is 65536 bytes"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("user.id is 65536 bytes"), "{reasons:?}");
    assert!(reasons[2].contains("trace_id is all zeros"), "{reasons:?}");
    assert!(reasons[3].contains("span_id is all zeros"), "{reasons:?}");
    assert!(
        reasons[4].contains("parent_span_id is all zeros"),
        "{reasons:?}"
    );
    // A session id of exactly the limit is stored.
    assert!(s.session("p", &"s".repeat(MAX_ID_BYTES)).unwrap().is_some());
    // A project name over the limit rejects its spans.
    let r = s
        .append(&one(
            &"p".repeat(MAX_ID_BYTES + 1),
            Span::new(tid(6), sid(1), None, "a", 1, 2),
        ))
        .unwrap();
    assert!(r.rejected[0].reason.contains("project name"), "{r:?}");
}

#[test]
fn empty_strings_and_control_characters_are_stored_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let ctl = "\u{0}\u{1}\t\r\u{7f}\u{1b}[31m\u{202e}";
    let spans = vec![
        // An empty session id is no session id (rule 2): the trace is
        // stored without a session.
        Span::new(tid(1), sid(1), None, "", 1, 2).with_attribute("session.id", ""),
        // Whitespace around an id is trimmed; control characters inside
        // are kept as given.
        Span::new(tid(2), sid(1), None, ctl, 1, 2)
            .with_attribute("session.id", format!("  a{ctl}b\n"))
            .with_attribute("", "")
            .with_attribute("input.value", ctl)
            .with_attribute("metadata", "{\"session_id\": \"\\u0000\"}"),
        // A metadata attribute nested deeper than the JSON parser allows
        // is not a session id source, and is stored as given.
        Span::new(tid(3), sid(1), None, "deep", 1, 2).with_attribute(
            "metadata",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
    ];
    let r = s.append(&[ResourceSpans::for_project("", spans)]).unwrap();
    assert_eq!(r.accepted, 3, "{:?}", r.rejected);
    // An empty project name is the default project.
    assert_eq!(s.projects().unwrap(), vec!["default".to_owned()]);
    assert!(s.trace(tid(1)).unwrap().is_some());
    let id = format!("a{ctl}b");
    let turns = s.session_history("default", &id).unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].input.as_ref().unwrap().value, ctl);
    assert_eq!(s.trace(tid(2)).unwrap().unwrap().spans[0].span.name, ctl);
    let listed = s
        .sessions("default", &SessionQuery::default())
        .unwrap()
        .items;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn extreme_timestamps_and_end_before_start_are_stored_and_durations_saturate() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let spans = vec![
        Span::new(tid(1), sid(1), None, "zero", 0, 0).with_attribute("session.id", "t"),
        Span::new(tid(2), sid(1), None, "max", u64::MAX, u64::MAX)
            .with_attribute("session.id", "t"),
        Span::new(tid(3), sid(1), None, "backwards", 5_000, 1_000)
            .with_attribute("session.id", "t"),
        Span::new(tid(4), sid(1), None, "full", 0, u64::MAX)
            .with_attribute("session.id", "t")
            .with_status(StatusCode::Error, "x"),
    ];
    let r = s.append(&[ResourceSpans::for_project("p", spans)]).unwrap();
    assert_eq!(r.accepted, 4);
    let summary = s.session("p", "t").unwrap().unwrap();
    assert_eq!(summary.num_traces, 4);
    assert_eq!(summary.start_time_unix_nano, 0);
    assert_eq!(summary.end_time_unix_nano, u64::MAX);
    assert_eq!(summary.num_traces_with_error, 1);
    assert!(summary.trace_latency_ms.p99.is_finite());
    assert!(summary.trace_latency_ms.p50 >= 0.0);
    let turns = s.session_history("p", "t").unwrap();
    let order: Vec<u64> = turns.iter().map(|t| t.start_time_unix_nano).collect();
    assert_eq!(order, vec![0, 0, 5_000, u64::MAX]);
    for sort in [
        span_sessions::SessionSort::Duration,
        span_sessions::SessionSort::EndTime,
    ] {
        let q = SessionQuery {
            sort,
            ..SessionQuery::default()
        };
        assert_eq!(s.sessions("p", &q).unwrap().items.len(), 1);
    }
    assert!(s.project_stats("p").unwrap().is_some());
    assert!(s.verify().unwrap().is_ok());
}

#[test]
fn token_counts_near_the_top_of_u64_saturate_in_every_sum() {
    // Three turns of one session, each an LLM child under a root; the
    // first two claim i64::MAX tokens each (together 2^64 - 2), the third 5.
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let turn = |n: u64, tokens: i64| {
        vec![
            Span::new(tid(n), sid(1), None, "agent", n * 10, n * 10 + 5)
                .with_attribute("session.id", "big"),
            Span::new(tid(n), sid(2), Some(sid(1)), "llm", n * 10 + 1, n * 10 + 4)
                .with_attribute("openinference.span.kind", "LLM")
                .with_attribute("llm.token_count.prompt", tokens)
                .with_attribute("llm.token_count.total", tokens),
        ]
    };
    let spans: Vec<Span> = [(1, i64::MAX), (2, i64::MAX), (3, 5)]
        .into_iter()
        .flat_map(|(n, t)| turn(n, t))
        .collect();
    // One batch: the project's changes are summed before they are stored.
    let r = s.append(&[ResourceSpans::for_project("p", spans)]).unwrap();
    assert_eq!(r.accepted, 6);
    let check = |s: &SessionStore| {
        let session = s.session("p", "big").unwrap().unwrap();
        assert_eq!(
            session.tokens.total,
            u64::MAX,
            "session: {:?}",
            session.tokens
        );
        assert_eq!(session.tokens.prompt, u64::MAX);
        let project = s.project_stats("p").unwrap().unwrap();
        // The sum of the changes wrapped in i64 before: a total of 3.
        assert_eq!(
            project.tokens.total,
            u64::MAX,
            "project: {:?}",
            project.tokens
        );
        assert_eq!(project.tokens.prompt, u64::MAX);
        assert_eq!(project.tokens.completion, 0);
        assert_eq!((project.traces, project.spans, project.sessions), (3, 6, 1));
    };
    check(&s);
    assert!(s.verify().unwrap().is_ok());
    // A rebuild from the log sums them the same way.
    s.rebuild_indexes().unwrap();
    check(&s);
}

#[test]
fn otlp_with_invalid_utf8_is_rejected_whole_with_a_reason() {
    use prost::Message;
    use proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use proto::tonic::trace::v1 as pb;
    use span_sessions::otlp::{self, proto};
    let span = pb::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "n".into(),
        attributes: vec![KeyValue {
            key: "session.id".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("s".into())),
            }),
            ..KeyValue::default()
        }],
        ..pb::Span::default()
    };
    let req = otlp::ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            scope_spans: vec![pb::ScopeSpans {
                spans: vec![span],
                ..pb::ScopeSpans::default()
            }],
            ..pb::ResourceSpans::default()
        }],
    };
    let mut bytes = req.encode_to_vec();
    assert!(otlp::decode_protobuf(&bytes).is_ok());
    // Turn the session id "s" into an invalid UTF-8 byte.
    let at = bytes.iter().rposition(|&b| b == b's').unwrap();
    bytes[at] = 0xff;
    let err = otlp::decode_protobuf(&bytes).unwrap_err();
    assert!(err.to_string().to_lowercase().contains("utf"), "{err}");
    // OTLP/JSON: invalid UTF-8 in the body is a decode error too.
    let mut json = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01010101010101010101010101010101","spanId":"0202020202020202","name":"X"}]}]}]}"#.to_vec();
    assert!(otlp::decode_json(&json).is_ok());
    let at = json.iter().position(|&b| b == b'X').unwrap();
    json[at] = 0xc3; // a lone lead byte
    assert!(otlp::decode_json(&json).is_err());
}

#[test]
fn spans_beyond_the_per_trace_limit_are_rejected_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionStore::options()
        .max_spans_per_trace(100)
        .open(dir.path())
        .unwrap();
    let trace = tid(9);
    let mut accepted = 0;
    let mut rejected = Vec::new();
    for chunk in 0..4u64 {
        let mut spans: Vec<Span> = (chunk * 40..chunk * 40 + 40)
            .map(|i| Span::new(trace, sid(i), None, "s", i, i + 1))
            .collect();
        // Another trace in the same batch is not affected.
        spans.push(Span::new(tid(10 + chunk), sid(1), None, "other", 1, 2));
        // A retry of a stored span stays a duplicate, not a rejection.
        spans.push(Span::new(trace, sid(0), None, "s", 0, 1));
        let r = s.append(&[ResourceSpans::for_project("p", spans)]).unwrap();
        accepted += r.accepted;
        rejected.extend(r.rejected);
    }
    assert_eq!(accepted, 100 + 4);
    assert_eq!(rejected.len(), 60);
    assert!(rejected.iter().all(|r| r.trace_id == trace), "{rejected:?}");
    assert!(
        rejected[0].reason.contains("the most a trace may hold"),
        "{:?}",
        rejected[0]
    );
    assert_eq!(s.trace(trace).unwrap().unwrap().spans.len(), 100);
    drop(s);
    // The limit is enforced when spans arrive; replaying the log never
    // meets more than the limit.
    let s = SessionStore::open(dir.path()).unwrap();
    assert!(s.verify().unwrap().is_ok());
}

/// The default limit itself ([`span_sessions::MAX_SPANS_PER_TRACE`]): a
/// trace of a million spans with realistic timestamps, then one more span.
/// Without the limit, a trace of about two million spans made its index
/// record undecodable ("LimitExceeded"), failing every later append to it.
/// About 4 s here (batches of 100,000 spans).
#[test]
fn a_trace_at_the_default_limit_still_works_and_refuses_more() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let trace = tid(11);
    let base = 1_767_225_600_000_000_000u64;
    let n = span_sessions::MAX_SPANS_PER_TRACE as u64;
    let t = Instant::now();
    for chunk in 0..n.div_ceil(100_000) {
        let spans: Vec<Span> = (chunk * 100_000..((chunk + 1) * 100_000).min(n))
            .map(|i| {
                Span::new(
                    trace,
                    sid(i),
                    Some(sid(0)),
                    "s",
                    base + i * 1_000_000,
                    base + i * 1_000_000 + 5,
                )
            })
            .collect();
        let r = s.append(&[ResourceSpans::for_project("p", spans)]).unwrap();
        assert!(r.rejected.is_empty());
    }
    let r = s
        .append(&one(
            "p",
            Span::new(trace, sid(n), Some(sid(0)), "s", base, base + 1),
        ))
        .unwrap();
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(s.trace(trace).unwrap().unwrap().spans.len() as u64, n);
    eprintln!("a trace of {n} spans: {:?}", t.elapsed());
}

/// An input or output that comes to more than `MAX_IO_TEXT_BYTES` as text
/// is rejected with a reason, though the span is under `max_span_bytes`:
/// a turn holds it as text, and 12,000,000 booleans (12 MB encoded) are
/// 72 MB of text, past the 64 MiB a turn is read back with. Such a span
/// was stored, and the next span of its trace poisoned the store, which
/// then would not open again. The store goes on as before, and texts up
/// to the limit, with 16 conflicting ids of the longest length, work in
/// every path (a later span of the trace, a session summary, verify, a
/// reopen).
#[test]
fn an_input_too_long_as_text_is_rejected_and_one_at_the_limit_works() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let bools = Span::new(tid(1), sid(1), None, "agent", 1, 2)
        .with_attribute("session.id", "s")
        .with_attribute(
            "input.value",
            AttributeValue::BoolArray(vec![true; 12_000_000]),
        );
    let r = s.append(&one("p", bools)).unwrap();
    assert_eq!(r.accepted, 0);
    assert!(
        r.rejected[0].reason.contains("input.value"),
        "{:?}",
        r.rejected
    );
    // The rest of the store is untouched and takes more.
    let other = Span::new(tid(2), sid(1), None, "x", 1, 2).with_attribute("session.id", "t");
    assert_eq!(s.append(&one("p", other)).unwrap().accepted, 1);
    assert!(s.verify().unwrap().is_ok());
    drop(s);

    // At the limit, with the largest span the store takes: input and output
    // of MAX_IO_TEXT_BYTES each (one byte more is refused), then 16
    // children carrying the longest session ids, then one more span.
    let s = SessionStore::options()
        .durability(Durability::Buffered)
        .max_span_bytes(u32::MAX)
        .open(dir.path())
        .unwrap();
    let over = Span::new(tid(3), sid(1), None, "r", 1, 2)
        .with_attribute("output.value", "o".repeat(MAX_IO_TEXT_BYTES + 1));
    let r = s.append(&one("p", over)).unwrap();
    assert!(
        r.rejected[0].reason.contains("output.value"),
        "{:?}",
        r.rejected
    );
    let root = Span::new(tid(3), sid(1), None, "r", 1, 2)
        .with_attribute("session.id", "big")
        .with_attribute("input.value", "i".repeat(MAX_IO_TEXT_BYTES - 100))
        .with_attribute("input.mime_type", "m".repeat(100))
        .with_attribute("output.value", "o".repeat(MAX_IO_TEXT_BYTES));
    assert_eq!(s.append(&one("p", root)).unwrap().accepted, 1);
    let children: Vec<Span> = (0..16u64)
        .map(|i| {
            Span::new(tid(3), sid(10 + i), Some(sid(1)), "c", 1, 2).with_attribute(
                "session.id",
                format!("{i:04}{}", "z".repeat(MAX_ID_BYTES - 4)),
            )
        })
        .collect();
    let r = s
        .append(&[ResourceSpans::for_project("p", children)])
        .unwrap();
    assert_eq!(r.accepted, 16, "{:?}", r.rejected);
    let late = Span::new(tid(3), sid(99), Some(sid(1)), "late", 1, 2);
    assert_eq!(s.append(&one("p", late)).unwrap().accepted, 1);
    let h = s.session_history("p", "big").unwrap();
    assert_eq!(
        (h[0].num_spans, h[0].conflicting_session_ids.len()),
        (18, 16)
    );
    assert_eq!(
        s.session("p", "big")
            .unwrap()
            .unwrap()
            .first_input
            .unwrap()
            .value
            .len(),
        MAX_IO_TEXT_BYTES - 100
    );
    assert!(s.verify().unwrap().is_ok());
    drop(s);
    let s = store(dir.path());
    assert_eq!(s.session_history("p", "big").unwrap()[0].num_spans, 18);
}

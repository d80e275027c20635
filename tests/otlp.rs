//! `span_sessions::otlp`: OTLP requests (protobuf and OTLP/JSON) into the
//! store, the attribute mapping, partial success and malformed requests.
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prost::Message;
use span_sessions::otlp::proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue as PbKeyValue, KeyValueList, any_value::Value,
};
use span_sessions::otlp::proto::tonic::trace::v1::span::{Event, Link};
use span_sessions::otlp::{self, DecodeError, IngestOptions};
use span_sessions::{
    AttributeValue, SessionStore, SpanId, SpanKind, StatusCode, TraceId, TraceStatus,
};

mod support;
use support::{request, session_request, span, span_id, string, trace_id};

fn store() -> (tempfile::TempDir, SessionStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    (dir, store)
}

fn kv(key: &str, v: Value) -> PbKeyValue {
    PbKeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn any(v: Value) -> AnyValue {
    AnyValue { value: Some(v) }
}

fn tid(n: u64) -> TraceId {
    TraceId(trace_id(n).try_into().unwrap())
}

fn sid(n: u64) -> SpanId {
    SpanId(span_id(n).try_into().unwrap())
}

/// What a store answers, for "unchanged" checks.
fn snapshot(s: &SessionStore) -> (Vec<String>, Vec<(u64, u64, u64)>) {
    let projects = s.projects().unwrap();
    let stats = projects
        .iter()
        .map(|p| {
            let st = s.project_stats(p).unwrap().unwrap();
            (st.sessions, st.traces, st.spans)
        })
        .collect();
    (projects, stats)
}

#[test]
fn protobuf_request_round_trips_into_sessions() {
    let (_d, s) = store();
    let body = session_request("chat", "conv-1", 1, 3).encode_to_vec();
    let req = otlp::decode_protobuf(&body).unwrap();
    let report = otlp::export(&s, req, &IngestOptions::default()).unwrap();
    assert_eq!((report.accepted, report.duplicates), (6, 0));
    assert!(report.rejected.is_empty());
    assert_eq!(report.partial_success(), None);
    assert_eq!(report.response().partial_success, None);

    let turns = s.session_history("chat", "conv-1").unwrap();
    assert_eq!(turns.len(), 3);
    for (i, t) in turns.iter().enumerate() {
        assert_eq!(t.trace_id, tid(1 + i as u64));
        assert_eq!(
            t.input.as_ref().unwrap().value,
            format!("question {i} in conv-1")
        );
        assert_eq!(t.tokens.total, 15);
        assert!(!t.root_missing);
    }
    // Exporters retry: the same request again changes nothing.
    let req = otlp::decode_protobuf(&body).unwrap();
    let again = otlp::export(&s, req, &IngestOptions::default()).unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 6));
    assert_eq!(s.session_history("chat", "conv-1").unwrap(), turns);
}

#[test]
fn every_attribute_value_type_is_mapped() {
    let (_d, s) = store();
    let attrs = vec![
        kv("session.id", Value::StringValue("types".into())),
        kv("s", Value::StringValue("text".into())),
        kv("b", Value::BoolValue(true)),
        kv("i", Value::IntValue(-42)),
        kv("d", Value::DoubleValue(2.5)),
        kv("bytes", Value::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])),
        kv(
            "strs",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    any(Value::StringValue("a".into())),
                    any(Value::StringValue("b".into())),
                ],
            }),
        ),
        kv(
            "bools",
            Value::ArrayValue(ArrayValue {
                values: vec![any(Value::BoolValue(false))],
            }),
        ),
        kv(
            "ints",
            Value::ArrayValue(ArrayValue {
                values: vec![any(Value::IntValue(1)), any(Value::IntValue(2))],
            }),
        ),
        kv(
            "doubles",
            Value::ArrayValue(ArrayValue {
                values: vec![any(Value::DoubleValue(0.5))],
            }),
        ),
        kv(
            "empty_array",
            Value::ArrayValue(ArrayValue { values: vec![] }),
        ),
        kv(
            "mixed",
            Value::ArrayValue(ArrayValue {
                values: vec![any(Value::IntValue(1)), any(Value::StringValue("x".into()))],
            }),
        ),
        kv(
            "kv",
            Value::KvlistValue(KeyValueList {
                values: vec![
                    kv("z", Value::IntValue(1)),
                    kv(
                        "a",
                        Value::ArrayValue(ArrayValue {
                            values: vec![any(Value::BoolValue(true))],
                        }),
                    ),
                ],
            }),
        ),
        PbKeyValue {
            key: "no_value".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
    ];
    let mut root = span(trace_id(7), span_id(1), vec![], "root", 10, 20, attrs);
    root.kind = 3;
    root.status = Some(span_sessions::otlp::proto::tonic::trace::v1::Status {
        code: 2,
        message: "boom".into(),
    });
    root.events = vec![Event {
        time_unix_nano: 15,
        name: "exception".into(),
        attributes: vec![kv("exception.message", Value::StringValue("boom".into()))],
        ..Default::default()
    }];
    root.links = vec![Link {
        trace_id: trace_id(8),
        span_id: span_id(3),
        attributes: vec![kv("link.kind", Value::StringValue("follows".into()))],
        ..Default::default()
    }];
    let req = otlp::decode_protobuf(&request("types", vec![root]).encode_to_vec()).unwrap();
    otlp::export(&s, req, &IngestOptions::default()).unwrap();

    let t = s.trace(tid(7)).unwrap().unwrap();
    let sp = &t.spans[0].span;
    let get = |k: &str| sp.attribute(k).cloned();
    assert_eq!(get("s"), Some(AttributeValue::String("text".into())));
    assert_eq!(get("b"), Some(AttributeValue::Bool(true)));
    assert_eq!(get("i"), Some(AttributeValue::Int(-42)));
    assert_eq!(get("d"), Some(AttributeValue::Double(2.5)));
    assert_eq!(
        get("bytes"),
        Some(AttributeValue::String("3q2+7w==".into()))
    );
    assert_eq!(
        get("strs"),
        Some(AttributeValue::StringArray(vec!["a".into(), "b".into()]))
    );
    assert_eq!(get("bools"), Some(AttributeValue::BoolArray(vec![false])));
    assert_eq!(get("ints"), Some(AttributeValue::IntArray(vec![1, 2])));
    assert_eq!(get("doubles"), Some(AttributeValue::DoubleArray(vec![0.5])));
    assert_eq!(
        get("empty_array"),
        Some(AttributeValue::StringArray(vec![]))
    );
    assert_eq!(
        get("mixed"),
        Some(AttributeValue::String(r#"[1,"x"]"#.into()))
    );
    assert_eq!(
        get("kv"),
        Some(AttributeValue::String(r#"{"a":[true],"z":1}"#.into()))
    );
    assert_eq!(get("no_value"), None);
    // The scope, kind, status, events and links.
    assert_eq!(
        get("otel.scope.name"),
        Some(AttributeValue::String("tests".into()))
    );
    assert_eq!(
        get("otel.scope.version"),
        Some(AttributeValue::String("1.0".into()))
    );
    assert_eq!(sp.kind, SpanKind::Client);
    assert_eq!(sp.status.code, StatusCode::Error);
    assert_eq!(sp.status.message, "boom");
    assert_eq!(sp.events.len(), 1);
    assert_eq!(sp.events[0].name, "exception");
    assert_eq!(sp.links[0].trace_id, tid(8));
    assert_eq!(sp.links[0].span_id, sid(3));
    // Resource attributes are kept with the span.
    assert!(
        t.spans[0]
            .resource
            .iter()
            .any(|kv| kv.key == "service.name")
    );
    assert_eq!(t.project, "types");
    let turns = s.session_history("types", "types").unwrap();
    assert_eq!(turns[0].status, TraceStatus::Error);
}

#[test]
fn project_comes_from_the_resource_else_default_unless_overridden() {
    let (_d, s) = store();
    let named = session_request("named", "s", 1, 1);
    let mut unnamed = session_request("x", "s", 10, 1);
    unnamed.resource_spans[0].resource = None;
    otlp::export(&s, named.clone(), &IngestOptions::default()).unwrap();
    otlp::export(&s, unnamed, &IngestOptions::default()).unwrap();
    assert_eq!(s.projects().unwrap(), ["default", "named"]);

    let mut other = session_request("named", "s", 20, 1);
    other.resource_spans[0].scope_spans[0].spans[0].attributes[0] = string("session.id", "s2");
    let report = otlp::export(&s, other, &IngestOptions::new().project("forced")).unwrap();
    assert_eq!(report.accepted, 2);
    assert_eq!(s.projects().unwrap(), ["default", "forced", "named"]);
    assert_eq!(s.session_history("forced", "s2").unwrap().len(), 1);
    let t = s.trace(tid(20)).unwrap().unwrap();
    let project_attrs: Vec<_> = t.spans[0]
        .resource
        .iter()
        .filter(|kv| kv.key == "openinference.project.name")
        .collect();
    assert_eq!(
        project_attrs.len(),
        1,
        "the override replaces the resource's project"
    );
}

#[test]
fn bad_ids_are_rejected_per_span_and_the_rest_is_stored() {
    let (_d, s) = store();
    let mut req = session_request("p", "s", 1, 4);
    {
        let spans = &mut req.resource_spans[0].scope_spans[0].spans;
        spans[0].trace_id.truncate(15); // turn 0 root
        spans[2].trace_id = vec![0; 16]; // turn 1 root
        spans[3].parent_span_id = vec![1, 2, 3]; // turn 1 child
        spans[5].span_id = vec![]; // turn 2 child
        spans[6].links = vec![Link {
            trace_id: vec![1; 4],
            span_id: span_id(9),
            ..Default::default()
        }]; // turn 3 root
        spans[7].parent_span_id = vec![0; 8]; // turn 3 child: all-zero parent = root
    }
    let report = otlp::export(&s, req, &IngestOptions::default()).unwrap();
    assert_eq!(report.accepted, 3, "{report:?}");
    let reasons: Vec<&str> = report.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "trace_id is 15 bytes, expected 16",
            "trace_id is all zeros",
            "parent_span_id is 3 bytes, expected 8 (or none for a root span)",
            "span_id is 0 bytes, expected 8",
            "link 0 has a 4-byte trace_id and a 8-byte span_id, expected 16 and 8",
        ]
    );
    assert_eq!(
        report.rejected[0].trace_id.len(),
        30,
        "the id as sent, in hex"
    );
    let p = report.partial_success().unwrap();
    assert_eq!(p.rejected_spans, 5);
    assert!(p.error_message.starts_with("5 span(s) rejected: "));
    assert!(
        p.error_message.ends_with("; and 2 more"),
        "{}",
        p.error_message
    );

    // What passed is stored: turn 0's child, turn 2's root, turn 3's child (as a root).
    let trace3 = s.trace(tid(4)).unwrap().unwrap();
    assert_eq!(trace3.spans.len(), 1);
    assert_eq!(trace3.spans[0].span.parent_span_id, None);
    assert!(
        s.trace(tid(1)).unwrap().unwrap().spans[0]
            .span
            .parent_span_id
            .is_some()
    );
    assert_eq!(s.project_stats("p").unwrap().unwrap().spans, 3);
}

#[test]
fn malformed_protobuf_is_an_error_and_stores_nothing() {
    let (_d, s) = store();
    otlp::export(
        &s,
        session_request("p", "s", 1, 1),
        &IngestOptions::default(),
    )
    .unwrap();
    let before = snapshot(&s);

    let body = session_request("bad", "s", 100, 2).encode_to_vec();
    // Cut inside the last field: truncated.
    for cut in [body.len() - 1, body.len() - 5, body.len() / 2, 3] {
        match otlp::decode_protobuf(&body[..cut]) {
            Err(DecodeError::Protobuf { reason }) => assert!(!reason.is_empty()),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
    // Garbage.
    assert!(matches!(
        otlp::decode_protobuf(&[0xff; 32]),
        Err(DecodeError::Protobuf { .. })
    ));

    // Invalid UTF-8 in a string field, even deep inside: the whole request.
    let mut bad = body.clone();
    let at = bad.windows(6).position(|w| w == b"answer").unwrap();
    bad[at + 1] = 0xc3; // a lead byte followed by ASCII
    let err = otlp::decode_protobuf(&bad).unwrap_err();
    assert!(matches!(err, DecodeError::InvalidUtf8 { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("not valid UTF-8") && text.contains("whole request"),
        "{text}"
    );
    assert_eq!(snapshot(&s), before);
}

#[test]
fn otlp_json_follows_the_protobuf_json_mapping() {
    let (_d, s) = store();
    // Hand-written as the spec describes it: camelCase, hex ids (any case),
    // 64-bit integers as strings or numbers, enums as integers, bytes as base64.
    let body = br#"{
      "resourceSpans": [{
        "resource": {"attributes": [
          {"key": "openinference.project.name", "value": {"stringValue": "json-proj"}}
        ]},
        "scopeSpans": [{
          "scope": {"name": "hand", "version": "2"},
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "name": "root",
              "kind": 2,
              "startTimeUnixNano": "1544712660000000000",
              "endTimeUnixNano": 1544712661000000000,
              "status": {"code": 1},
              "attributes": [
                {"key": "session.id", "value": {"stringValue": "js-1"}},
                {"key": "input.value", "value": {"stringValue": "hello"}},
                {"key": "n.str", "value": {"intValue": "9007199254740993"}},
                {"key": "n.num", "value": {"intValue": 7}},
                {"key": "raw", "value": {"bytesValue": "AAEC"}},
                {"key": "arr", "value": {"arrayValue": {"values": [{"doubleValue": 1.5}]}}},
                {"key": "obj", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": false}}]}}},
                {"key": "empty", "value": {}}
              ],
              "unknownField": "ignored"
            },
            {
              "traceId": "5b8efff798038103d269b633813fc60c",
              "spanId": "eee19b7ec3c1b175",
              "parentSpanId": "eee19b7ec3c1b174",
              "name": "llm",
              "startTimeUnixNano": "1544712660100000000",
              "endTimeUnixNano": "1544712660900000000",
              "attributes": [
                {"key": "openinference.span.kind", "value": {"stringValue": "LLM"}},
                {"key": "llm.token_count.total", "value": {"intValue": "30"}}
              ]
            }
          ]
        }]
      }]
    }"#;
    let req = otlp::decode_json(body).unwrap();
    let report = otlp::export(&s, req, &IngestOptions::default()).unwrap();
    assert_eq!(report.accepted, 2);
    let turns = s.session_history("json-proj", "js-1").unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].tokens.total, 30);
    assert_eq!(turns[0].status, TraceStatus::Ok);
    let id: TraceId = "5b8efff798038103d269b633813fc60c".parse().unwrap();
    let t = s.trace(id).unwrap().unwrap();
    let root = &t.spans[0].span;
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.start_time_unix_nano, 1_544_712_660_000_000_000);
    assert_eq!(root.end_time_unix_nano, 1_544_712_661_000_000_000);
    assert_eq!(
        root.attribute("n.str"),
        Some(&AttributeValue::Int(9_007_199_254_740_993))
    );
    assert_eq!(root.attribute("n.num"), Some(&AttributeValue::Int(7)));
    assert_eq!(
        root.attribute("raw"),
        Some(&AttributeValue::String("AAEC".into()))
    );
    assert_eq!(
        root.attribute("arr"),
        Some(&AttributeValue::DoubleArray(vec![1.5]))
    );
    assert_eq!(
        root.attribute("obj"),
        Some(&AttributeValue::String(r#"{"k":false}"#.into()))
    );
    assert_eq!(root.attribute("empty"), None);
    assert_eq!(t.spans[1].span.parent_span_id, Some(root.span_id));

    // An empty request is valid and stores nothing.
    let empty = otlp::export(
        &s,
        otlp::decode_json(b"{}").unwrap(),
        &IngestOptions::default(),
    )
    .unwrap();
    assert_eq!((empty.accepted, empty.rejected.len()), (0, 0));
}

#[test]
fn json_and_protobuf_of_one_request_store_the_same_spans() {
    let (_d1, a) = store();
    let (_d2, b) = store();
    let req = session_request("same", "s", 1, 3);
    let pb = otlp::decode_protobuf(&req.encode_to_vec()).unwrap();
    let js = otlp::decode_json(&serde_json::to_vec(&req).unwrap()).unwrap();
    assert_eq!(pb, js);
    otlp::export(&a, pb, &IngestOptions::default()).unwrap();
    otlp::export(&b, js, &IngestOptions::default()).unwrap();
    for n in 1..=3 {
        let ta = a.trace(tid(n)).unwrap().unwrap();
        let tb = b.trace(tid(n)).unwrap().unwrap();
        assert_eq!(ta.spans, tb.spans);
    }
}

#[test]
fn malformed_json_is_an_error_with_its_position() {
    let cases: [(&[u8], &str); 5] = [
        (b"{\"resourceSpans\": [", "EOF"),
        (b"\n\n  nope", "expected"),
        (
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}"#,
            "invalid",
        ),
        (
            br#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SERVER"}]}]}]}"#,
            "is not the name of a span kind",
        ),
        (b"{\"resourceSpans\": []} trailing", "trailing"),
    ];
    for (body, needle) in cases {
        match otlp::decode_json(body) {
            Err(e @ DecodeError::Json { line, column, .. }) => {
                assert!(line >= 1 && column >= 1);
                let text = e.to_string();
                assert!(text.contains(needle), "{text}");
                assert!(
                    text.starts_with("invalid OTLP/JSON request at line"),
                    "{text}"
                );
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    // Invalid UTF-8 in JSON is a JSON error too.
    assert!(matches!(
        otlp::decode_json(b"{\"resourceSpans\": \"\xff\"}"),
        Err(DecodeError::Json { .. })
    ));
}

#[test]
fn conversion_alone_does_no_io() {
    let mut req = session_request("conv", "s", 1, 1);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![0; 8];
    let c = otlp::to_resource_spans(req, &IngestOptions::default());
    assert_eq!(c.batch.len(), 1);
    assert_eq!(c.batch[0].spans.len(), 1);
    assert_eq!(c.batch[0].project(), "conv");
    assert_eq!(c.rejected.len(), 1);
    assert_eq!(c.rejected[0].reason, "span_id is all zeros");
}

/// A span's record holds its resource's attributes: a request of many
/// spans under a large resource would store its resource that many times
/// (a 1 MiB resource over 2,000 spans wrote 2 GB). Past
/// `MAX_RESOURCE_COPY_BYTES` per request, the spans of the resource that
/// crosses it are rejected with the reason; the rest of the request is
/// stored.
#[test]
fn a_large_resource_over_many_spans_is_rejected_not_stored_many_times() {
    let (_d, store) = store();
    let small = session_request("small", "s", 1, 2);
    let mut big = request("big", Vec::new());
    let huge = "r".repeat(1 << 20);
    let per = 1 << 20;
    let n = otlp::MAX_RESOURCE_COPY_BYTES / per + 1;
    let spans = (0..n as u64)
        .map(|i| {
            span(
                trace_id(1_000 + i),
                span_id(1),
                vec![],
                "root",
                10,
                20,
                vec![],
            )
        })
        .collect();
    big.resource_spans[0].scope_spans[0].spans = spans;
    big.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(string("host.description", &huge));
    let mut req = small.clone();
    req.resource_spans.extend(big.resource_spans);
    let report = otlp::export(&store, req, &IngestOptions::new()).unwrap();
    assert_eq!(report.accepted, 4, "the small resource's spans are stored");
    assert_eq!(report.rejected.len(), n);
    assert!(
        report.rejected[0].reason.contains("resource"),
        "{:?}",
        report.rejected[0]
    );
    assert_eq!(store.projects().unwrap(), vec!["small"]);
    let stats = store.stats().unwrap();
    let log_bytes: u64 = stats.segments.iter().map(|s| s.bytes).sum();
    assert!(log_bytes < 1 << 20, "{log_bytes} bytes of log");
    // Just under the limit, the same resource is stored with its spans.
    let mut fits = request("fits", Vec::new());
    fits.resource_spans[0].scope_spans[0].spans = (0..2)
        .map(|i| {
            span(
                trace_id(5_000 + i),
                span_id(1),
                vec![],
                "root",
                10,
                20,
                vec![],
            )
        })
        .collect();
    fits.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(string("host.description", &huge));
    let report = otlp::export(&store, fits, &IngestOptions::new()).unwrap();
    assert_eq!((report.accepted, report.rejected.len()), (2, 0));
}

/// `from_resource_spans` is the inverse of `to_resource_spans`: realistic
/// spans (events, links, every attribute type the generator makes) come
/// back as they were, through protobuf too.
#[test]
fn from_resource_spans_gives_back_what_to_resource_spans_takes() {
    use span_sessions::workload::{Workload, WorkloadConfig};
    let cfg = WorkloadConfig::realistic(11, usize::MAX, 500);
    for batch in Workload::new(cfg).batches(300).take(5) {
        let request = otlp::from_resource_spans(&batch);
        let back = otlp::to_resource_spans(request.clone(), &IngestOptions::new());
        assert!(back.rejected.is_empty());
        assert_eq!(back.batch, batch);
        let wire = otlp::decode_protobuf(&request.encode_to_vec()).unwrap();
        assert_eq!(
            otlp::to_resource_spans(wire, &IngestOptions::new()).batch,
            batch
        );
    }
}

/// README's "From Rust" snippet, in a function returning the crate's
/// `Result`: a body that does not decode is `InvalidInput`.
#[test]
fn decode_errors_convert_to_the_crates_error() {
    fn receive(
        store: &SessionStore,
        body: &[u8],
    ) -> span_sessions::Result<otlp::ExportTraceServiceResponse> {
        let request = otlp::decode_protobuf(body)?; // or otlp::decode_json(&body)?
        let report = otlp::export(store, request, &IngestOptions::default())?;
        Ok(report.response())
    }
    let (_d, store) = store();
    let ok = receive(&store, &session_request("p", "s", 1, 1).encode_to_vec()).unwrap();
    assert_eq!(ok.partial_success, None);
    let err = receive(&store, b"\xff\xff\xff").unwrap_err();
    assert_eq!(err.kind(), span_sessions::ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("invalid OTLP protobuf request"),
        "{err}"
    );
}

/// Rule 2 over OTLP: `metadata` sent as a key-value list (not a JSON
/// string) still names the session, and a non-string field is stringified
/// as Python's `str()` would (`str(1e20) == "1e+20"`), as is a value
/// sent as `session.id` (`str(float("nan")) == "nan"`). (A kvlist is kept
/// as its JSON text, where a NaN double is the string `"NaN"`.)
#[test]
fn metadata_as_a_kvlist_names_the_session_stringified_like_python() {
    let (_d, s) = store();
    let metadata = |field: &str, v: Value| {
        kv(
            "metadata",
            Value::KvlistValue(KeyValueList {
                values: vec![kv(field, v)],
            }),
        )
    };
    let spans = vec![
        span(
            trace_id(1),
            span_id(1),
            vec![],
            "r",
            10,
            20,
            vec![metadata("thread_id", Value::StringValue(" t ".into()))],
        ),
        span(
            trace_id(2),
            span_id(1),
            vec![],
            "r",
            30,
            40,
            vec![metadata("session_id", Value::IntValue(42))],
        ),
        span(
            trace_id(3),
            span_id(1),
            vec![],
            "r",
            50,
            60,
            vec![metadata("session_id", Value::DoubleValue(1e20))],
        ),
        span(
            trace_id(4),
            span_id(1),
            vec![],
            "r",
            90,
            95,
            vec![kv("session.id", Value::DoubleValue(f64::NAN))],
        ),
    ];
    let req = otlp::decode_protobuf(&request("p", spans).encode_to_vec()).unwrap();
    otlp::export(&s, req, &IngestOptions::default()).unwrap();
    let got: Vec<Option<String>> = (1..=4)
        .map(|t| s.trace(tid(t)).unwrap().unwrap().session_id)
        .collect();
    let want = ["t", "42", "1e+20", "nan"].map(|x| Some(x.to_owned()));
    assert_eq!(got, want);
}

/// Rule 1 over OTLP: the project is the first non-empty string value of
/// the resource's `openinference.project.name` (reference §1.1: "the
/// resource attribute `openinference.project.name` (the first non-empty
/// `string_value`)"), not `default` because an earlier copy of the key
/// is empty or not a string.
#[test]
fn project_is_the_first_non_empty_string_project_name() {
    use span_sessions::otlp::proto::tonic::resource::v1::Resource;
    let (_d, s) = store();
    for (t, first) in [
        (1u64, Value::StringValue(String::new())),
        (2, Value::IntValue(5)),
    ] {
        let mut req = request(
            "ignored",
            vec![span(
                trace_id(t),
                span_id(1),
                vec![],
                "r",
                10,
                20,
                vec![string("session.id", "s")],
            )],
        );
        req.resource_spans[0].resource = Some(Resource {
            attributes: vec![
                kv("openinference.project.name", first),
                kv(
                    "openinference.project.name",
                    Value::StringValue("chat".into()),
                ),
            ],
            ..Default::default()
        });
        otlp::export(&s, req, &IngestOptions::default()).unwrap();
    }
    assert_eq!(s.projects().unwrap(), vec!["chat".to_owned()]);
    assert_eq!(s.trace(tid(1)).unwrap().unwrap().project, "chat");
    assert_eq!(s.trace(tid(2)).unwrap().unwrap().project, "chat");
}

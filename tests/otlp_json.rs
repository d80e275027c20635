//! `otlp::decode_json`: the protobuf JSON mapping as OTLP writes it, read
//! into the same request as the protobuf body, with the mapping's special
//! forms (doubles as strings, URL-safe base64, unknown members, enums by
//! name).
#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use span_sessions::otlp::ExportTraceServiceRequest;
use span_sessions::otlp::proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use span_sessions::otlp::proto::tonic::resource::v1::Resource;
use span_sessions::otlp::proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status,
    span::{self, Event, Link},
    status,
};
use span_sessions::otlp::{self, DecodeError};

/// The value of the one attribute of the one span `body`'s `value` is put in.
fn attribute(value_json: &str) -> Result<Option<Value>, DecodeError> {
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c",
        "spanId":"eee19b7ec3c1b174","attributes":[{{"key":"a","value":{value_json}}}]}}]}}]}}]}}"#
    );
    let req = otlp::decode_json(body.as_bytes())?;
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    Ok(span.attributes[0]
        .value
        .as_ref()
        .and_then(|v| v.value.clone()))
}

#[test]
fn doubles_may_be_the_mappings_strings() {
    let double = |json: &str| match attribute(json) {
        Ok(Some(Value::DoubleValue(d))) => d,
        other => panic!("{json}: {other:?}"),
    };
    assert!(double(r#"{"doubleValue":"NaN"}"#).is_nan());
    assert_eq!(double(r#"{"doubleValue":"Infinity"}"#), f64::INFINITY);
    assert_eq!(double(r#"{"doubleValue":"-Infinity"}"#), f64::NEG_INFINITY);
    assert_eq!(double(r#"{"doubleValue":"1.5e3"}"#), 1500.0);
    assert_eq!(double(r#"{"doubleValue":-2}"#), -2.0);
    assert_eq!(double(r#"{"doubleValue":2.25}"#), 2.25);
    // Exactly: serde_json's default parser gave ...971e299 for this one.
    assert_eq!(
        double(r#"{"doubleValue":1.1040597497261973e299}"#),
        1.104_059_749_726_197_3e299
    );
    // Rust's own spellings of the special values are not the mapping's.
    for bad in [r#""inf""#, r#""nan""#, r#""infinity""#, r#""1.5x""#, "true"] {
        let json = format!(r#"{{"doubleValue":{bad}}}"#);
        assert!(
            matches!(attribute(&json), Err(DecodeError::Json { .. })),
            "{json}"
        );
    }
}

#[test]
fn bytes_may_be_either_base64_alphabet_padded_or_not() {
    for text in ["+/+/ABA=", "-_-_ABA", "+/+/ABA"] {
        let json = format!(r#"{{"bytesValue":"{text}"}}"#);
        assert_eq!(
            attribute(&json).unwrap(),
            Some(Value::BytesValue(vec![0xfb, 0xff, 0xbf, 0x00, 0x10])),
            "{text}"
        );
    }
    let err = attribute(r#"{"bytesValue":"no spaces"}"#).unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
}

#[test]
fn an_any_values_unknown_and_null_members_are_skipped() {
    // Unknown members, before or after the value, whatever they hold.
    assert_eq!(
        attribute(r#"{"x":[1,{"y":[]}],"stringValue":"s","z":null}"#).unwrap(),
        Some(Value::StringValue("s".into()))
    );
    // stringValueStrindex is for profiles: a trace receiver treats it as absent.
    assert_eq!(attribute(r#"{"stringValueStrindex":3}"#).unwrap(), None);
    // A null member is no value; of two members, the later one.
    assert_eq!(attribute(r#"{"stringValue":null}"#).unwrap(), None);
    assert_eq!(
        attribute(r#"{"boolValue":true,"intValue":"7"}"#).unwrap(),
        Some(Value::IntValue(7))
    );
    assert_eq!(
        attribute(r#"{"intValue":8,"stringValue":null}"#).unwrap(),
        Some(Value::IntValue(8))
    );
    assert_eq!(attribute("{}").unwrap(), None);
    // A member of the wrong type is an error, not a skip.
    for bad in [
        r#"{"intValue":"x"}"#,
        r#"{"intValue":9223372036854775808}"#,
        r#"{"boolValue":"true"}"#,
        r#"{"arrayValue":{"values":{}}}"#,
        r#""s""#,
    ] {
        assert!(
            matches!(attribute(bad), Err(DecodeError::Json { .. })),
            "{bad}"
        );
    }
}

#[test]
fn ids_are_hex_in_either_case_and_times_numbers_or_strings() {
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
        "traceId":"5B8EFFF798038103d269b633813fc60c","spanId":"0xeee19b7ec3c1b174",
        "startTimeUnixNano":18446744073709551615,"endTimeUnixNano":"18446744073709551615",
        "events":[{"timeUnixNano":"5","name":"e"}],
        "links":[{"traceId":"00000000000000000000000000000001","spanId":"0000000000000002","flags":1}]
    }]}]}]}"#;
    let req = otlp::decode_json(body).unwrap();
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(
        span.trace_id,
        [
            0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
            0xc6, 0x0c
        ]
    );
    assert_eq!(
        span.span_id,
        [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
    );
    assert_eq!(span.start_time_unix_nano, u64::MAX);
    assert_eq!(span.end_time_unix_nano, u64::MAX);
    assert_eq!(span.events[0].time_unix_nano, 5);
    assert_eq!(span.links[0].span_id, [0, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(span.links[0].flags, 1);
    for bad in [
        r#""traceId":"abc""#,
        r#""traceId":"zz""#,
        r#""startTimeUnixNano":-1"#,
        r#""startTimeUnixNano":"18446744073709551616""#,
    ] {
        let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{bad}}}]}}]}}]}}"#);
        assert!(
            matches!(
                otlp::decode_json(body.as_bytes()),
                Err(DecodeError::Json { .. })
            ),
            "{bad}"
        );
    }
}

/// The kind and status code of the one span of a body whose span has
/// `members` (JSON object members, without braces).
fn kind_and_code(members: &str) -> Result<(i32, Option<i32>), DecodeError> {
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{members}}}]}}]}}]}}"#);
    let req = otlp::decode_json(body.as_bytes())?;
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    Ok((span.kind, span.status.as_ref().map(|s| s.code)))
}

#[test]
fn enums_may_be_numbers_or_the_names_of_their_values() {
    assert_eq!(
        kind_and_code(r#""kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_ERROR"}"#)
            .unwrap(),
        (2, Some(2))
    );
    assert_eq!(
        kind_and_code(r#""kind":5,"status":{"code":1,"message":"m"}"#).unwrap(),
        (5, Some(1))
    );
    // Protobuf enums are open: an unknown number is kept as it is.
    assert_eq!(kind_and_code(r#""kind":42"#).unwrap(), (42, None));
    for (name, value) in [
        ("SPAN_KIND_UNSPECIFIED", 0),
        ("SPAN_KIND_INTERNAL", 1),
        ("SPAN_KIND_CLIENT", 3),
        ("SPAN_KIND_PRODUCER", 4),
        ("SPAN_KIND_CONSUMER", 5),
    ] {
        assert_eq!(
            kind_and_code(&format!(r#""kind":"{name}""#)).unwrap().0,
            value
        );
    }
    for (name, value) in [("STATUS_CODE_UNSET", 0), ("STATUS_CODE_OK", 1)] {
        let members = format!(r#""status":{{"code":"{name}"}}"#);
        assert_eq!(kind_and_code(&members).unwrap().1, Some(value));
    }
    // The null status is no status.
    assert_eq!(kind_and_code(r#""status":null"#).unwrap(), (0, None));
    for bad in [
        r#""kind":"SERVER""#,
        r#""kind":"span_kind_server""#,
        r#""kind":2147483648"#,
        r#""kind":-2147483649"#,
        r#""kind":1.5"#,
        r#""status":{"code":"STATUS_CODE_FAILED"}"#,
        r#""status":{"code":true}"#,
    ] {
        match kind_and_code(bad) {
            Err(e @ DecodeError::Json { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("span kind") || text.contains("status code"),
                    "{bad}: {text}"
                );
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// `body` with every span's kind and status code that names a known value
/// written as that name, as protobuf's own JSON printers write enums.
fn enums_by_name(body: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let spans = v["resourceSpans"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .flat_map(|rs| rs["scopeSpans"].as_array_mut().into_iter().flatten())
        .flat_map(|ss| ss["spans"].as_array_mut().into_iter().flatten());
    for sp in spans {
        let kind = sp["kind"].as_i64().and_then(|k| i32::try_from(k).ok());
        if let Some(k) = kind.and_then(|k| span::SpanKind::try_from(k).ok()) {
            sp["kind"] = k.as_str_name().into();
        }
        let code = sp["status"]["code"]
            .as_i64()
            .and_then(|c| i32::try_from(c).ok());
        if let Some(c) = code.and_then(|c| status::StatusCode::try_from(c).ok()) {
            sp["status"]["code"] = c.as_str_name().into();
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        Just(AnyValue { value: None }),
        any::<String>().prop_map(|s| AnyValue {
            value: Some(Value::StringValue(s))
        }),
        any::<bool>().prop_map(|b| AnyValue {
            value: Some(Value::BoolValue(b))
        }),
        any::<i64>().prop_map(|i| AnyValue {
            value: Some(Value::IntValue(i))
        }),
        // Finite: the crate's serializer writes a NaN as null.
        (-1e300f64..1e300).prop_map(|d| AnyValue {
            value: Some(Value::DoubleValue(d))
        }),
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| AnyValue {
            value: Some(Value::BytesValue(b))
        }),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            proptest::collection::vec(key_value(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values }))
            }),
        ]
    })
}

fn key_value(value: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    ("[a-z.]{0,8}", proptest::option::of(value)).prop_map(|(key, value)| KeyValue {
        key,
        value,
        ..Default::default()
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(key_value(any_value()), 0..4)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..=max)
}

fn span() -> impl Strategy<Value = Span> {
    (
        (bytes(16), bytes(8), bytes(8), any::<String>(), any::<u32>()),
        (any::<String>(), -1i32..7, any::<u64>(), any::<u64>()),
        (attributes(), any::<u32>(), any::<u32>(), any::<u32>()),
        proptest::collection::vec(
            (any::<u64>(), any::<String>(), attributes(), any::<u32>()),
            0..3,
        ),
        proptest::collection::vec(
            (
                bytes(16),
                bytes(8),
                any::<String>(),
                attributes(),
                any::<u32>(),
            ),
            0..3,
        ),
        proptest::option::of((any::<String>(), 0i32..3)),
    )
        .prop_map(|(ids, what, attrs, events, links, status)| Span {
            trace_id: ids.0,
            span_id: ids.1,
            parent_span_id: ids.2,
            trace_state: ids.3,
            flags: ids.4,
            name: what.0,
            kind: what.1,
            start_time_unix_nano: what.2,
            end_time_unix_nano: what.3,
            attributes: attrs.0,
            dropped_attributes_count: attrs.1,
            dropped_events_count: attrs.2,
            dropped_links_count: attrs.3,
            events: events
                .into_iter()
                .map(|(time_unix_nano, name, attributes, dropped)| Event {
                    time_unix_nano,
                    name,
                    attributes,
                    dropped_attributes_count: dropped,
                })
                .collect(),
            links: links
                .into_iter()
                .map(|(trace_id, span_id, trace_state, attributes, flags)| Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count: flags / 2,
                    flags,
                })
                .collect(),
            status: status.map(|(message, code)| Status { message, code }),
        })
}

fn request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (
        proptest::option::of((any::<String>(), any::<String>(), attributes())),
        proptest::collection::vec(span(), 0..3),
        any::<String>(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope: scope.map(|(name, version, attributes)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count: 0,
            }),
            spans,
            schema_url,
        });
    let entity_ref = (
        "[a-z]{0,3}",
        "[a-z]{0,3}",
        proptest::collection::vec("[a-z.]{0,5}", 0..3),
        proptest::collection::vec("[a-z.]{0,5}", 0..3),
    )
        .prop_map(|(schema_url, kind, id_keys, description_keys)| EntityRef {
            schema_url,
            r#type: kind,
            id_keys,
            description_keys,
        });
    let resource_spans = (
        proptest::option::of((
            attributes(),
            any::<u32>(),
            proptest::collection::vec(entity_ref, 0..3),
        )),
        proptest::collection::vec(scope_spans, 0..3),
        any::<String>(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource: resource.map(|(attributes, dropped, entity_refs)| Resource {
                attributes,
                dropped_attributes_count: dropped,
                entity_refs,
            }),
            scope_spans,
            schema_url,
        });
    proptest::collection::vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// A request as Python's `json_format.MessageToJson(...,
/// preserving_proto_field_name=True)` writes it, with `null`s and a
/// `uint32` as a string: read, not taken for an empty request (which was
/// answered 200 with nothing stored).
#[test]
fn snake_case_names_nulls_and_string_counts_are_read() {
    let body = br#"{"resource_spans":[{
      "resource":{"attributes":[{"key":"openinference.project.name","value":{"string_value":"p"}}],
                  "entity_refs":[{"type":"service","id_keys":["service.name"]}]},
      "scope_spans":[{"scope":null,"spans":[{
        "trace_id":"5b8efff798038103d269b633813fc60c","span_id":"eee19b7ec3c1b174",
        "parent_span_id":null,"trace_state":null,"flags":"257","dropped_attributes_count":"0",
        "name":"agent","start_time_unix_nano":"1000","end_time_unix_nano":2000,"events":null,
        "attributes":[{"key":"session.id","value":{"string_value":"s-1"}}]
      }]}]
    }]}"#;
    let req = otlp::decode_json(body).unwrap();
    let rs = &req.resource_spans[0];
    assert_eq!(
        rs.resource.as_ref().unwrap().entity_refs[0].id_keys,
        ["service.name"]
    );
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(
        (
            span.flags,
            span.start_time_unix_nano,
            span.end_time_unix_nano
        ),
        (257, 1000, 2000)
    );
    assert!(span.parent_span_id.is_empty() && span.events.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let store = span_sessions::SessionStore::open(dir.path()).unwrap();
    let report = otlp::export(&store, req, &otlp::IngestOptions::default()).unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!(store.session_history("p", "s-1").unwrap().len(), 1);
}

/// Fields that are not an `AnyValue`'s members, whose default value the
/// mapping lets a writer leave out or write as `null`.
const PLAIN_FIELDS: [&str; 27] = [
    "resourceSpans",
    "scopeSpans",
    "spans",
    "schemaUrl",
    "attributes",
    "droppedAttributesCount",
    "entityRefs",
    "type",
    "idKeys",
    "descriptionKeys",
    "name",
    "version",
    "traceId",
    "spanId",
    "traceState",
    "parentSpanId",
    "flags",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "events",
    "droppedEventsCount",
    "links",
    "droppedLinksCount",
    "timeUnixNano",
    "message",
    "code",
];

/// The `uint32` fields, which the mapping lets a writer send as strings.
const UINT32_FIELDS: [&str; 4] = [
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "flags",
];

/// Applies `f` to every object of `v`, innermost first.
fn each_object(
    v: &mut serde_json::Value,
    f: &mut impl FnMut(&mut serde_json::Map<String, serde_json::Value>),
) {
    match v {
        serde_json::Value::Object(map) => {
            for (_, child) in map.iter_mut() {
                each_object(child, f);
            }
            f(map);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| each_object(i, f)),
        _ => {}
    }
}

/// The 64-bit integer fields, which a JSON printer writes as strings.
const INT64_FIELDS: [&str; 3] = ["startTimeUnixNano", "endTimeUnixNano", "timeUnixNano"];

/// The default value of field `k` as a JSON printer would write it: `"0"`
/// only for a 64-bit integer (a string field holding "0" is not a default).
fn is_default(k: &str, v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.is_empty() || (s == "0" && INT64_FIELDS.contains(&k)),
        serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Bool(b) => !b,
        _ => false,
    }
}

/// `body` rewritten member by member by `f`.
fn rewrite(
    body: &[u8],
    mut f: impl FnMut(&mut serde_json::Map<String, serde_json::Value>),
) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(body).unwrap();
    each_object(&mut v, &mut f);
    serde_json::to_vec(&v).unwrap()
}

/// The proto's own name of a lowerCamelCase field name.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The forms of `body` the mapping also allows, each named.
fn other_forms(body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("enums by name", enums_by_name(body)),
        (
            "snake_case names",
            rewrite(body, |m| {
                *m = std::mem::take(m)
                    .into_iter()
                    .map(|(k, v)| (snake(&k), v))
                    .collect();
            }),
        ),
        (
            "uint32 as strings",
            rewrite(body, |m| {
                for (k, v) in m.iter_mut() {
                    if UINT32_FIELDS.contains(&k.as_str()) && v.is_number() {
                        *v = v.to_string().into();
                    }
                }
            }),
        ),
        (
            "defaults as null",
            rewrite(body, |m| {
                for (k, v) in m.iter_mut() {
                    if PLAIN_FIELDS.contains(&k.as_str()) && is_default(k, v) {
                        *v = serde_json::Value::Null;
                    }
                }
            }),
        ),
        (
            "defaults left out",
            rewrite(body, |m| {
                m.retain(|k, v| !(PLAIN_FIELDS.contains(&k.as_str()) && is_default(k, v)));
            }),
        ),
    ]
}

proptest! {
    /// Any request, written as OTLP/JSON by `opentelemetry-proto`'s own
    /// serializer, reads back as the same request; and so does every other
    /// form of it the protobuf JSON mapping allows (and the OpenTelemetry
    /// Collector reads): enums by name, the proto's snake_case field names,
    /// `uint32` fields as strings, default values written as `null` or left
    /// out. Each form is decoded within its memory estimate.
    #[test]
    fn a_request_written_as_otlp_json_reads_back_the_same(req in request()) {
        let body = serde_json::to_vec(&req).unwrap();
        let back = otlp::decode_json(&body);
        prop_assert_eq!(back.as_ref().ok(), Some(&req), "{}", String::from_utf8_lossy(&body));
        for (form, other) in other_forms(&body) {
            let back = otlp::decode_json(&other);
            prop_assert_eq!(
                back.as_ref().ok(),
                Some(&req),
                "{}: {}",
                form,
                String::from_utf8_lossy(&other)
            );
            let checked = span_sessions::fuzzing::otlp_json(&other);
            prop_assert!(checked.is_ok(), "{}: {:?}", form, checked);
        }
    }
}

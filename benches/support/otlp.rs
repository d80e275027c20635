//! The workload's spans as OTLP requests, for the receiver bench: the
//! public model mapped field by field onto `opentelemetry-proto`'s types
//! (what an OpenTelemetry SDK would send for the same spans).

use span_sessions::otlp::ExportTraceServiceRequest;
use span_sessions::otlp::proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue as PbKeyValue, any_value::Value,
};
use span_sessions::otlp::proto::tonic::resource::v1::Resource;
use span_sessions::otlp::proto::tonic::trace::v1::{
    ResourceSpans as PbResourceSpans, ScopeSpans, Span as PbSpan, Status as PbStatus, span,
};
use span_sessions::{AttributeValue, KeyValue, ResourceSpans, SpanKind, StatusCode};

fn any(v: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn array(values: Vec<Option<AnyValue>>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: values.into_iter().flatten().collect(),
    })
}

fn value(v: &AttributeValue) -> Option<AnyValue> {
    any(match v {
        AttributeValue::String(s) => Value::StringValue(s.clone()),
        AttributeValue::Bool(b) => Value::BoolValue(*b),
        AttributeValue::Int(i) => Value::IntValue(*i),
        AttributeValue::Double(d) => Value::DoubleValue(*d),
        AttributeValue::StringArray(a) => array(
            a.iter()
                .map(|s| any(Value::StringValue(s.clone())))
                .collect(),
        ),
        AttributeValue::BoolArray(a) => {
            array(a.iter().map(|b| any(Value::BoolValue(*b))).collect())
        }
        AttributeValue::IntArray(a) => array(a.iter().map(|i| any(Value::IntValue(*i))).collect()),
        AttributeValue::DoubleArray(a) => {
            array(a.iter().map(|d| any(Value::DoubleValue(*d))).collect())
        }
    })
}

fn attributes(attrs: &[KeyValue]) -> Vec<PbKeyValue> {
    attrs
        .iter()
        .map(|kv| PbKeyValue {
            key: kv.key.clone(),
            value: value(&kv.value),
            ..Default::default()
        })
        .collect()
}

fn kind(k: SpanKind) -> i32 {
    (match k {
        SpanKind::Unspecified => span::SpanKind::Unspecified,
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }) as i32
}

fn status_code(c: StatusCode) -> i32 {
    match c {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    }
}

/// One OTLP request holding `batch`: a `ResourceSpans` per resource, its
/// spans under one instrumentation scope.
pub fn request(batch: &[ResourceSpans]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: batch
            .iter()
            .map(|rs| PbResourceSpans {
                resource: Some(Resource {
                    attributes: attributes(&rs.resource),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: rs
                        .spans
                        .iter()
                        .map(|s| PbSpan {
                            trace_id: s.trace_id.0.to_vec(),
                            span_id: s.span_id.0.to_vec(),
                            parent_span_id: s
                                .parent_span_id
                                .map_or_else(Vec::new, |p| p.0.to_vec()),
                            name: s.name.clone(),
                            kind: kind(s.kind),
                            start_time_unix_nano: s.start_time_unix_nano,
                            end_time_unix_nano: s.end_time_unix_nano,
                            attributes: attributes(&s.attributes),
                            events: s
                                .events
                                .iter()
                                .map(|e| span::Event {
                                    time_unix_nano: e.time_unix_nano,
                                    name: e.name.clone(),
                                    attributes: attributes(&e.attributes),
                                    ..Default::default()
                                })
                                .collect(),
                            links: s
                                .links
                                .iter()
                                .map(|l| span::Link {
                                    trace_id: l.trace_id.0.to_vec(),
                                    span_id: l.span_id.0.to_vec(),
                                    attributes: attributes(&l.attributes),
                                    ..Default::default()
                                })
                                .collect(),
                            status: Some(PbStatus {
                                code: status_code(s.status.code),
                                message: s.status.message.clone(),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

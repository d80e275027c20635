//! The public model back into OTLP: [`from_resource_spans`], re-exported
//! as `otlp::from_resource_spans`.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue as PbKeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans as PbResourceSpans, ScopeSpans, Span as PbSpan, Status as PbStatus, span,
};

use crate::model::{AttributeValue, KeyValue, ResourceSpans, SpanKind, StatusCode};

fn any_of(v: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn pb_array(values: Vec<Option<AnyValue>>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: values.into_iter().flatten().collect(),
    })
}

fn pb_value(v: &AttributeValue) -> Option<AnyValue> {
    any_of(match v {
        AttributeValue::String(s) => Value::StringValue(s.clone()),
        AttributeValue::Bool(b) => Value::BoolValue(*b),
        AttributeValue::Int(i) => Value::IntValue(*i),
        AttributeValue::Double(d) => Value::DoubleValue(*d),
        AttributeValue::StringArray(a) => pb_array(
            a.iter()
                .map(|s| any_of(Value::StringValue(s.clone())))
                .collect(),
        ),
        AttributeValue::BoolArray(a) => {
            pb_array(a.iter().map(|b| any_of(Value::BoolValue(*b))).collect())
        }
        AttributeValue::IntArray(a) => {
            pb_array(a.iter().map(|i| any_of(Value::IntValue(*i))).collect())
        }
        AttributeValue::DoubleArray(a) => {
            pb_array(a.iter().map(|d| any_of(Value::DoubleValue(*d))).collect())
        }
    })
}

fn pb_attributes(attrs: &[KeyValue]) -> Vec<PbKeyValue> {
    attrs
        .iter()
        .map(|kv| PbKeyValue {
            key: kv.key.clone(),
            value: pb_value(&kv.value),
            ..Default::default()
        })
        .collect()
}

fn pb_kind(k: SpanKind) -> i32 {
    (match k {
        SpanKind::Unspecified => span::SpanKind::Unspecified,
        SpanKind::Internal => span::SpanKind::Internal,
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }) as i32
}

fn pb_status_code(c: StatusCode) -> i32 {
    match c {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    }
}

/// The OTLP request that holds `batch`, the inverse of
/// [`to_resource_spans`](super::otlp::to_resource_spans): a `ResourceSpans` per resource, its spans under
/// one instrumentation scope without a name, every field mapped as it is
/// (for forwarding stored spans to another OTLP receiver, or sending them
/// to one). [`to_resource_spans`](super::otlp::to_resource_spans) gives `batch` back.
pub fn from_resource_spans(batch: &[ResourceSpans]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: batch
            .iter()
            .map(|rs| PbResourceSpans {
                resource: Some(Resource {
                    attributes: pb_attributes(&rs.resource),
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
                            kind: pb_kind(s.kind),
                            start_time_unix_nano: s.start_time_unix_nano,
                            end_time_unix_nano: s.end_time_unix_nano,
                            attributes: pb_attributes(&s.attributes),
                            events: s
                                .events
                                .iter()
                                .map(|e| span::Event {
                                    time_unix_nano: e.time_unix_nano,
                                    name: e.name.clone(),
                                    attributes: pb_attributes(&e.attributes),
                                    ..Default::default()
                                })
                                .collect(),
                            links: s
                                .links
                                .iter()
                                .map(|l| span::Link {
                                    trace_id: l.trace_id.0.to_vec(),
                                    span_id: l.span_id.0.to_vec(),
                                    attributes: pb_attributes(&l.attributes),
                                    ..Default::default()
                                })
                                .collect(),
                            status: Some(PbStatus {
                                code: pb_status_code(s.status.code),
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

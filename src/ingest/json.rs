//! OTLP/JSON read in one pass, straight into the prost types.
//!
//! `opentelemetry-proto`'s serde derives read `AnyValue` through
//! `#[serde(flatten)]`, and serde implements `flatten` by first copying
//! every field of the object (its whole subtree, unknown fields included)
//! into a buffer of its own generic `Content` values, then reading the
//! value from that buffer; a nested value is copied again at each level.
//! A 4 MB body of array values nested 20 deep, with an unknown field of
//! 2,000,000 numbers at the bottom, took 1.3 GB to decode that way, far
//! past the budget that [`super::estimate::json`] checks. The types here
//! read the same JSON with no buffering: a known field is read into its
//! prost field, an unknown one skipped with `IgnoredAny`, and each array
//! straight into the prost message's vector, so a body allocates only what
//! it decodes into, which [`super::estimate::json`] bounds by following
//! these types' member names.
//!
//! What they accept is the protobuf JSON mapping as OTLP uses it, and as
//! the OpenTelemetry Collector reads it: lowerCamelCase field names or the
//! proto's own snake_case ones (`scope_spans`, `string_value`), trace and
//! span ids as hex strings, integers as strings or numbers, doubles as numbers or as the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"` (or a number in a string), bytes as
//! standard or URL-safe base64 with or without padding, enums as integers
//! or by their value's name (`"SPAN_KIND_SERVER"`, as protobuf's own JSON
//! printers write them and the OpenTelemetry Collector reads them),
//! unknown fields ignored, and `null` for any field as its default value
//! (an absent message, an empty string or list, zero).

use std::fmt;
use std::marker::PhantomData;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    self as common, EntityRef as PbEntityRef, InstrumentationScope, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans as PbResourceSpans, ScopeSpans as PbScopeSpans, Span as PbSpan, Status, span,
    status,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// An `ExportTraceServiceRequest` as OTLP/JSON writes it.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct Request {
    #[serde(
        alias = "resource_spans",
        deserialize_with = "vec_of::<ResourceSpans, _, _>"
    )]
    resource_spans: Vec<PbResourceSpans>,
}

impl From<Request> for ExportTraceServiceRequest {
    fn from(r: Request) -> Self {
        ExportTraceServiceRequest {
            resource_spans: r.resource_spans,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ResourceSpans {
    resource: Option<Resource>,
    #[serde(alias = "scope_spans", deserialize_with = "vec_of::<ScopeSpans, _, _>")]
    scope_spans: Vec<PbScopeSpans>,
    #[serde(alias = "schema_url", deserialize_with = "or_default")]
    schema_url: String,
}

impl From<ResourceSpans> for PbResourceSpans {
    fn from(r: ResourceSpans) -> Self {
        PbResourceSpans {
            resource: r.resource.map(Into::into),
            scope_spans: r.scope_spans,
            schema_url: r.schema_url,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Resource {
    #[serde(deserialize_with = "vec_of::<KeyValue, _, _>")]
    attributes: Vec<common::KeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "or_default")]
    dropped_attributes_count: U32,
    #[serde(alias = "entity_refs", deserialize_with = "vec_of::<EntityRef, _, _>")]
    entity_refs: Vec<PbEntityRef>,
}

impl From<Resource> for PbResource {
    fn from(r: Resource) -> Self {
        PbResource {
            attributes: r.attributes,
            dropped_attributes_count: r.dropped_attributes_count.0,
            entity_refs: r.entity_refs,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct EntityRef {
    #[serde(alias = "schema_url", deserialize_with = "or_default")]
    schema_url: String,
    #[serde(rename = "type", deserialize_with = "or_default")]
    kind: String,
    #[serde(alias = "id_keys", deserialize_with = "or_default")]
    id_keys: Vec<String>,
    #[serde(alias = "description_keys", deserialize_with = "or_default")]
    description_keys: Vec<String>,
}

impl From<EntityRef> for PbEntityRef {
    fn from(e: EntityRef) -> Self {
        PbEntityRef {
            schema_url: e.schema_url,
            r#type: e.kind,
            id_keys: e.id_keys,
            description_keys: e.description_keys,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ScopeSpans {
    scope: Option<Scope>,
    #[serde(deserialize_with = "vec_of::<Span, _, _>")]
    spans: Vec<PbSpan>,
    #[serde(alias = "schema_url", deserialize_with = "or_default")]
    schema_url: String,
}

impl From<ScopeSpans> for PbScopeSpans {
    fn from(s: ScopeSpans) -> Self {
        PbScopeSpans {
            scope: s.scope.map(Into::into),
            spans: s.spans,
            schema_url: s.schema_url,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Scope {
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "or_default")]
    version: String,
    #[serde(deserialize_with = "vec_of::<KeyValue, _, _>")]
    attributes: Vec<common::KeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "or_default")]
    dropped_attributes_count: U32,
}

impl From<Scope> for InstrumentationScope {
    fn from(s: Scope) -> Self {
        InstrumentationScope {
            name: s.name,
            version: s.version,
            attributes: s.attributes,
            dropped_attributes_count: s.dropped_attributes_count.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Span {
    #[serde(alias = "trace_id", deserialize_with = "or_default")]
    trace_id: Hex,
    #[serde(alias = "span_id", deserialize_with = "or_default")]
    span_id: Hex,
    #[serde(alias = "trace_state", deserialize_with = "or_default")]
    trace_state: String,
    #[serde(alias = "parent_span_id", deserialize_with = "or_default")]
    parent_span_id: Hex,
    #[serde(deserialize_with = "or_default")]
    flags: U32,
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "or_default")]
    kind: Enum<SpanKindNames>,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "or_default")]
    start_time_unix_nano: U64,
    #[serde(alias = "end_time_unix_nano", deserialize_with = "or_default")]
    end_time_unix_nano: U64,
    #[serde(deserialize_with = "vec_of::<KeyValue, _, _>")]
    attributes: Vec<common::KeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "or_default")]
    dropped_attributes_count: U32,
    #[serde(deserialize_with = "vec_of::<Event, _, _>")]
    events: Vec<span::Event>,
    #[serde(alias = "dropped_events_count", deserialize_with = "or_default")]
    dropped_events_count: U32,
    #[serde(deserialize_with = "vec_of::<Link, _, _>")]
    links: Vec<span::Link>,
    #[serde(alias = "dropped_links_count", deserialize_with = "or_default")]
    dropped_links_count: U32,
    status: Option<SpanStatus>,
}

impl From<Span> for PbSpan {
    fn from(s: Span) -> Self {
        PbSpan {
            trace_id: s.trace_id.0,
            span_id: s.span_id.0,
            trace_state: s.trace_state,
            parent_span_id: s.parent_span_id.0,
            flags: s.flags.0,
            name: s.name,
            kind: s.kind.0,
            start_time_unix_nano: s.start_time_unix_nano.0,
            end_time_unix_nano: s.end_time_unix_nano.0,
            attributes: s.attributes,
            dropped_attributes_count: s.dropped_attributes_count.0,
            events: s.events,
            dropped_events_count: s.dropped_events_count.0,
            links: s.links,
            dropped_links_count: s.dropped_links_count.0,
            status: s.status.map(|st| Status {
                message: st.message,
                code: st.code.0,
            }),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SpanStatus {
    #[serde(deserialize_with = "or_default")]
    message: String,
    #[serde(deserialize_with = "or_default")]
    code: Enum<StatusCodeNames>,
}

/// The names of an enum's values, for [`Enum`].
trait EnumNames {
    /// What the field is, for errors.
    const WHAT: &'static str;
    /// The value named `name`, if one is.
    fn value(name: &str) -> Option<i32>;
}

/// `Span.kind`'s value names.
#[derive(Default)]
struct SpanKindNames;

impl EnumNames for SpanKindNames {
    const WHAT: &'static str = "a span kind";
    fn value(name: &str) -> Option<i32> {
        span::SpanKind::from_str_name(name).map(|k| k as i32)
    }
}

/// `Status.code`'s value names.
#[derive(Default)]
struct StatusCodeNames;

impl EnumNames for StatusCodeNames {
    const WHAT: &'static str = "a status code";
    fn value(name: &str) -> Option<i32> {
        status::StatusCode::from_str_name(name).map(|c| c as i32)
    }
}

/// An enum field: the number of its value (any 32-bit integer: protobuf
/// enums are open), or the name of one of its values.
#[derive(Default)]
struct Enum<N>(i32, PhantomData<N>);

impl<'de, N: EnumNames> Deserialize<'de> for Enum<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<N>(PhantomData<N>);
        impl<N: EnumNames> Visitor<'_> for V<N> {
            type Value = Enum<N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{}: an integer or the name of a value", N::WHAT)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Enum<N>, E> {
                i32::try_from(v)
                    .map(|v| Enum(v, PhantomData))
                    .map_err(|_| E::custom(format!("{v} is out of range for {}", N::WHAT)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Enum<N>, E> {
                i32::try_from(v)
                    .map(|v| Enum(v, PhantomData))
                    .map_err(|_| E::custom(format!("{v} is out of range for {}", N::WHAT)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Enum<N>, E> {
                N::value(s)
                    .map(|v| Enum(v, PhantomData))
                    .ok_or_else(|| E::custom(format!("{s:?} is not the name of {}", N::WHAT)))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Event {
    #[serde(alias = "time_unix_nano", deserialize_with = "or_default")]
    time_unix_nano: U64,
    #[serde(deserialize_with = "or_default")]
    name: String,
    #[serde(deserialize_with = "vec_of::<KeyValue, _, _>")]
    attributes: Vec<common::KeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "or_default")]
    dropped_attributes_count: U32,
}

impl From<Event> for span::Event {
    fn from(e: Event) -> Self {
        span::Event {
            time_unix_nano: e.time_unix_nano.0,
            name: e.name,
            attributes: e.attributes,
            dropped_attributes_count: e.dropped_attributes_count.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Link {
    #[serde(alias = "trace_id", deserialize_with = "or_default")]
    trace_id: Hex,
    #[serde(alias = "span_id", deserialize_with = "or_default")]
    span_id: Hex,
    #[serde(alias = "trace_state", deserialize_with = "or_default")]
    trace_state: String,
    #[serde(deserialize_with = "vec_of::<KeyValue, _, _>")]
    attributes: Vec<common::KeyValue>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "or_default")]
    dropped_attributes_count: U32,
    #[serde(deserialize_with = "or_default")]
    flags: U32,
}

impl From<Link> for span::Link {
    fn from(l: Link) -> Self {
        span::Link {
            trace_id: l.trace_id.0,
            span_id: l.span_id.0,
            trace_state: l.trace_state,
            attributes: l.attributes,
            dropped_attributes_count: l.dropped_attributes_count.0,
            flags: l.flags.0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValue {
    #[serde(deserialize_with = "or_default")]
    key: String,
    value: Option<AnyValue>,
}

impl From<KeyValue> for common::KeyValue {
    fn from(kv: KeyValue) -> Self {
        common::KeyValue {
            key: kv.key,
            value: kv.value.map(|v| v.0),
            // Profiles only; a trace's attribute names its key in `key`.
            key_strindex: 0,
        }
    }
}

impl From<AnyValue> for common::AnyValue {
    fn from(v: AnyValue) -> Self {
        v.0
    }
}

/// Reads a JSON array of `T` into a vector of what `T` converts into, one
/// element at a time: no vector of `T` is built first (whose elements
/// would then be copied into a second vector, both alive at once).
fn vec_of<'de, T, U, D>(d: D) -> Result<Vec<U>, D::Error>
where
    T: Deserialize<'de> + Into<U>,
    D: Deserializer<'de>,
{
    struct V<T, U>(PhantomData<fn() -> (T, U)>);
    impl<'de, T: Deserialize<'de> + Into<U>, U> Visitor<'de> for V<T, U> {
        type Value = Vec<U>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<U>, A::Error> {
            // No size hint: a hostile hint could reserve without bound, and
            // serde_json gives none anyway.
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<T>()? {
                out.push(item.into());
            }
            Ok(out)
        }
        /// `null`: no elements.
        fn visit_unit<E: de::Error>(self) -> Result<Vec<U>, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V::<T, U>(PhantomData))
}

/// A field that may be `null`, which the mapping reads as the field's
/// default value.
fn or_default<'de, T, D>(d: D) -> Result<T, D::Error>
where
    T: Deserialize<'de> + Default,
    D: Deserializer<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ArrayValue {
    #[serde(deserialize_with = "vec_of::<AnyValue, _, _>")]
    values: Vec<common::AnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValueList {
    #[serde(deserialize_with = "vec_of::<KeyValue, _, _>")]
    values: Vec<common::KeyValue>,
}

/// An `AnyValue`, read member by member: the last known member present
/// (and not `null`) is its value, unknown members are skipped, and no
/// member at all is the empty value.
struct AnyValue(common::AnyValue);

/// The members an `AnyValue` object may have.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum AnyMember {
    #[serde(alias = "string_value")]
    StringValue,
    #[serde(alias = "bool_value")]
    BoolValue,
    #[serde(alias = "int_value")]
    IntValue,
    #[serde(alias = "double_value")]
    DoubleValue,
    #[serde(alias = "array_value")]
    ArrayValue,
    #[serde(alias = "kvlist_value")]
    KvlistValue,
    #[serde(alias = "bytes_value")]
    BytesValue,
    /// `stringValueStrindex` (profiles only: a receiver of traces treats
    /// it as absent) and anything else.
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an OTLP AnyValue object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValue, A::Error> {
                let mut value = None;
                while let Some(member) = map.next_key::<AnyMember>()? {
                    let read = match member {
                        AnyMember::StringValue => {
                            map.next_value::<Option<String>>()?.map(Value::StringValue)
                        }
                        AnyMember::BoolValue => {
                            map.next_value::<Option<bool>>()?.map(Value::BoolValue)
                        }
                        AnyMember::IntValue => map
                            .next_value::<Option<I64>>()?
                            .map(|i| Value::IntValue(i.0)),
                        AnyMember::DoubleValue => map
                            .next_value::<Option<F64>>()?
                            .map(|f| Value::DoubleValue(f.0)),
                        AnyMember::ArrayValue => map
                            .next_value::<Option<ArrayValue>>()?
                            .map(|a| Value::ArrayValue(common::ArrayValue { values: a.values })),
                        AnyMember::KvlistValue => map
                            .next_value::<Option<KeyValueList>>()?
                            .map(|l| Value::KvlistValue(common::KeyValueList { values: l.values })),
                        AnyMember::BytesValue => map
                            .next_value::<Option<Base64>>()?
                            .map(|b| Value::BytesValue(b.0)),
                        AnyMember::Other => {
                            map.next_value::<IgnoredAny>()?;
                            None
                        }
                    };
                    if read.is_some() {
                        value = read;
                    }
                }
                Ok(AnyValue(common::AnyValue { value }))
            }
        }
        d.deserialize_map(V)
    }
}

/// Bytes as a hex string (trace and span ids), either case, `0x` allowed.
#[derive(Default)]
struct Hex(Vec<u8>);

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hex;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string of hex digits")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Hex, E> {
                let digits = s.strip_prefix("0x").unwrap_or(s).as_bytes();
                if !digits.len().is_multiple_of(2) {
                    return Err(E::custom(format!(
                        "invalid hex id {s:?}: an odd number of digits"
                    )));
                }
                let nibble = |c: u8| char::from(c).to_digit(16);
                // Exactly the bytes' room (a collect would round it up).
                let mut bytes = Vec::with_capacity(digits.len() / 2);
                for pair in digits.chunks_exact(2) {
                    match (nibble(pair[0]), nibble(pair[1])) {
                        (Some(h), Some(l)) => bytes.push((h * 16 + l) as u8),
                        _ => {
                            return Err(E::custom(format!(
                                "invalid hex id {s:?}: not a hex digit"
                            )));
                        }
                    }
                }
                Ok(Hex(bytes))
            }
        }
        d.deserialize_str(V)
    }
}

/// A `fixed64`/`uint64` field: a number, or a string of one.
#[derive(Default)]
struct U64(u64);

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = U64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an unsigned 64-bit integer, or a string of one")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<U64, E> {
                Ok(U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<U64, E> {
                u64::try_from(v)
                    .map(U64)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<U64, E> {
                s.parse()
                    .map(U64)
                    .map_err(|_| E::custom(format!("{s:?} is not an unsigned 64-bit integer")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `uint32` field: a number, or a string of one.
#[derive(Default)]
struct U32(u32);

impl<'de> Deserialize<'de> for U32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let U64(v) = U64::deserialize(d)?;
        u32::try_from(v)
            .map(U32)
            .map_err(|_| de::Error::custom(format!("{v} is out of range for a 32-bit integer")))
    }
}

/// An `int64` field: a number, or a string of one.
struct I64(i64);

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = I64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 64-bit integer, or a string of one")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<I64, E> {
                Ok(I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<I64, E> {
                i64::try_from(v)
                    .map(I64)
                    .map_err(|_| E::custom(format!("{v} is out of range for a 64-bit integer")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<I64, E> {
                s.parse()
                    .map(I64)
                    .map_err(|_| E::custom(format!("{s:?} is not a 64-bit integer")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `double` field: a number, `"NaN"`, `"Infinity"`, `"-Infinity"`, or a
/// number in a string.
struct F64(f64);

impl<'de> Deserialize<'de> for F64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, or \"NaN\", \"Infinity\" or \"-Infinity\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F64, E> {
                Ok(F64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F64, E> {
                Ok(F64(v as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<F64, E> {
                match s {
                    "NaN" => Ok(F64(f64::NAN)),
                    "Infinity" => Ok(F64(f64::INFINITY)),
                    "-Infinity" => Ok(F64(f64::NEG_INFINITY)),
                    // Rust's parser also takes "inf" and "nan", which the
                    // mapping does not: only digits, signs, '.' and exponents.
                    _ if s
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
                    {
                        s.parse()
                            .map(F64)
                            .map_err(|_| E::custom(format!("{s:?} is not a number")))
                    }
                    _ => Err(E::custom(format!("{s:?} is not a number"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A `bytes` field: base64, standard or URL-safe, padded or not.
struct Base64(Vec<u8>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Base64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Base64, E> {
                super::value::base64_decode(s)
                    .map(Base64)
                    .ok_or_else(|| E::custom("invalid base64 in a bytes value"))
            }
        }
        d.deserialize_str(V)
    }
}

//! An upper bound of the memory an OTLP request body decodes into,
//! computed without decoding it.
//!
//! A request's body is limited in bytes, but what it decodes into is not:
//! prost and serde build a struct for every message, and an empty message
//! takes two bytes of protobuf (`{}` in JSON) but a few hundred bytes of
//! memory. A 20 MiB body of empty spans (20 KB gzipped) made a receiver
//! allocate 4.1 GB. The decoders therefore walk the body first, without
//! allocating, charging each message it holds the size of its struct
//! times the room a vector may hold for it (four for a repeated field's
//! first element, two for each later one) and each string or bytes field
//! its length, and refuse a body whose charge
//! is over [`budget`].
//!
//! The protobuf walk knows the OTLP trace schema (which field of which
//! message holds which message); so does the JSON scan (which member of
//! which message holds which message), which does not parse but follows
//! objects, arrays and member names byte by byte, and charges what it
//! cannot place as the largest message. Both need only be upper bounds of
//! what the decoders build before they stop: on malformed input they stop
//! or go on, and leave the error to the decoder.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

/// How many times its size a body may decode into (plus [`BUDGET_FLOOR`]).
/// Realistic requests of 512 spans are estimated at 1.4 (~4 KiB spans) to
/// 3.8 (~500 B) times their protobuf and 1.3 to 2.5 times their JSON;
/// spans of no attributes or of up to 50 small integer ones, the densest
/// realistic shape, at 13 to 16 times their protobuf (which decodes into
/// 8 to 10 times its size) and 2.7 to 4.1 times their JSON (checked in
/// the tests below).
pub(crate) const BUDGET_FACTOR: u64 = 32;

/// Bytes any body may decode into, however small.
pub(crate) const BUDGET_FLOOR: u64 = 1 << 20;

/// The most a body of `len` bytes may decode into.
pub(crate) fn budget(len: usize) -> u64 {
    (len as u64)
        .saturating_mul(BUDGET_FACTOR)
        .saturating_add(BUDGET_FLOOR)
}

/// The OTLP trace messages a walk tells apart.
#[derive(Clone, Copy, Debug)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Msg {
    /// The size of the message's struct.
    fn size(self) -> u64 {
        (match self {
            Msg::Request => size_of::<ExportTraceServiceRequest>(),
            Msg::ResourceSpans => size_of::<ResourceSpans>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::EntityRef => size_of::<EntityRef>(),
            Msg::ScopeSpans => size_of::<ScopeSpans>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::Span => size_of::<Span>(),
            Msg::Event => size_of::<span::Event>(),
            Msg::Link => size_of::<span::Link>(),
            Msg::Status => size_of::<Status>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::ArrayValue => size_of::<ArrayValue>(),
            Msg::KeyValueList => size_of::<KeyValueList>(),
        }) as u64
    }

    /// The message field `field` of this message holds, if it holds one.
    fn child(self, field: u64) -> Option<Msg> {
        Some(match (self, field) {
            (Msg::Request, 1) => Msg::ResourceSpans,
            (Msg::ResourceSpans, 1) => Msg::Resource,
            (Msg::ResourceSpans, 2) => Msg::ScopeSpans,
            (Msg::Resource, 1) => Msg::KeyValue,
            (Msg::Resource, 3) => Msg::EntityRef,
            (Msg::ScopeSpans, 1) => Msg::Scope,
            (Msg::ScopeSpans, 2) => Msg::Span,
            (Msg::Scope, 3) => Msg::KeyValue,
            (Msg::Span, 9) => Msg::KeyValue,
            (Msg::Span, 11) => Msg::Event,
            (Msg::Span, 13) => Msg::Link,
            (Msg::Span, 15) => Msg::Status,
            (Msg::Event, 3) => Msg::KeyValue,
            (Msg::Link, 4) => Msg::KeyValue,
            (Msg::KeyValue, 2) => Msg::AnyValue,
            (Msg::AnyValue, 5) => Msg::ArrayValue,
            (Msg::AnyValue, 6) => Msg::KeyValueList,
            (Msg::ArrayValue, 1) => Msg::AnyValue,
            (Msg::KeyValueList, 1) => Msg::KeyValue,
            _ => return None,
        })
    }

    /// True when field `field` of this message is a singular message,
    /// which prost holds in its parent's struct (an `Option`, or a variant
    /// of a `oneof`), not in a vector of its own: it costs no bytes beyond
    /// the parent's, however often it is sent (prost merges repeats).
    fn singular(self, field: u64) -> bool {
        matches!(
            (self, field),
            (Msg::ResourceSpans, 1)
                | (Msg::ScopeSpans, 1)
                | (Msg::Span, 15)
                | (Msg::KeyValue, 2)
                | (Msg::AnyValue, 5 | 6)
        )
    }

    /// True when field `field` of this message is a repeated string.
    fn repeated_string(self, field: u64) -> bool {
        matches!((self, field), (Msg::EntityRef, 3 | 4))
    }

    /// The largest struct of them all (what the JSON scan charges).
    fn largest() -> u64 {
        [
            Msg::Request,
            Msg::ResourceSpans,
            Msg::Resource,
            Msg::EntityRef,
            Msg::ScopeSpans,
            Msg::Scope,
            Msg::Span,
            Msg::Event,
            Msg::Link,
            Msg::Status,
            Msg::KeyValue,
            Msg::AnyValue,
            Msg::ArrayValue,
            Msg::KeyValueList,
        ]
        .into_iter()
        .map(Msg::size)
        .max()
        .unwrap_or(0)
    }
}

/// The least room a string or bytes field's buffer has (std's `RawVec`
/// gives a vector of bytes room for at least 8 once it allocates, and
/// prost reserves a field's length in an empty one).
const MIN_BYTES_ROOM: u64 = 8;

/// Nesting prost refuses past (its recursion limit is 100).
const MAX_DEPTH: u32 = 100;

/// An upper bound of the memory `body`, a protobuf
/// `ExportTraceServiceRequest`, decodes into. On a body that is not
/// well-formed protobuf it bounds what the decoder builds before it stops:
/// the walk reads the fields in the decoder's order and charges each one as
/// it reaches it, and it stops where the decoder stops (a truncated or
/// overlong field, an unknown wire type, an unmatched group end, nesting
/// past the decoder's limit), so what it charged by then covers what the
/// decoder holds by then. (Before, a malformed body had no estimate and was
/// decoded unchecked: a 1 MB body of empty spans with five bad bytes at its
/// end took 135 MB before the decoder failed.)
pub(crate) fn protobuf(body: &[u8]) -> u64 {
    let mut total = Msg::Request.size();
    let _ = walk(body, Msg::Request, 0, &mut total);
    total
}

fn varint(r: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = r.split_first()?;
        *r = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Elements a vector's first allocation holds (std's `RawVec` starts at 4
/// for elements of up to 1 KiB, and every struct here is smaller).
const FIRST_ROOM: u64 = 4;

/// What follows a field's key, read past.
enum Value<'a> {
    /// A varint or a fixed-size scalar.
    Scalar,
    /// The bytes of a length-delimited field.
    Delimited(&'a [u8]),
    /// The start or the end of a group.
    StartGroup,
    EndGroup,
}

/// Reads past the value of a field of `wire_type`; `None` when the bytes
/// end first or the wire type is unknown.
fn value<'a>(r: &mut &'a [u8], wire_type: u64) -> Option<Value<'a>> {
    Some(match wire_type {
        0 => {
            varint(r)?;
            Value::Scalar
        }
        1 => {
            *r = r.get(8..)?;
            Value::Scalar
        }
        5 => {
            *r = r.get(4..)?;
            Value::Scalar
        }
        2 => {
            let len = usize::try_from(varint(r)?).ok()?;
            let field = r.get(..len)?;
            *r = r.get(len..)?;
            Value::Delimited(field)
        }
        3 => Value::StartGroup,
        4 => Value::EndGroup,
        _ => return None,
    })
}

fn walk(mut r: &[u8], msg: Msg, depth: u32, total: &mut u64) -> Option<()> {
    // Message fields of this message seen so far (their numbers are all
    // below 64): the first element of a repeated field allocates room for
    // `FIRST_ROOM`, each later one for at most two (the vector doubles).
    let mut seen = 0u64;
    while !r.is_empty() {
        let key = varint(&mut r)?;
        match value(&mut r, key & 7)? {
            Value::Scalar => {}
            Value::Delimited(field) => match msg.child(key >> 3) {
                Some(child) if depth < MAX_DEPTH => {
                    let bit = 1u64 << ((key >> 3) & 63);
                    let room = if msg.singular(key >> 3) {
                        0
                    } else if seen & bit == 0 {
                        FIRST_ROOM
                    } else {
                        2
                    };
                    seen |= bit;
                    *total = total.saturating_add(room * child.size());
                    walk(field, child, depth + 1, total)?;
                }
                Some(_) => return None,
                // A string or bytes field: its buffer, held in the
                // message's struct, except in a repeated field's vector
                // (EntityRef's keys), which needs room for the `String`.
                None => {
                    // Only known fields, all numbered below 64, may mark
                    // `seen`: an unknown field 65 must not pass for field 1.
                    let room = if msg.repeated_string(key >> 3) {
                        let bit = 1u64 << ((key >> 3) & 63);
                        let first = seen & bit == 0;
                        seen |= bit;
                        if first { FIRST_ROOM } else { 2 }
                    } else {
                        0
                    };
                    let bytes = (field.len() as u64).max(MIN_BYTES_ROOM);
                    *total = total
                        .saturating_add(bytes)
                        .saturating_add(room * size_of::<String>() as u64);
                }
            },
            // A group: OTLP has none, and prost steps over one as an
            // unknown field (allocating nothing for it); so does the walk,
            // lest a group make it give up and leave the rest unbounded.
            Value::StartGroup => r = skip_group(r, depth)?,
            // An end of group without a start: the decoder refuses it.
            Value::EndGroup => return None,
        }
    }
    Some(())
}

/// `r` after the group whose start was just read, or `None` when it does
/// not end (or nests past [`MAX_DEPTH`]).
fn skip_group(mut r: &[u8], depth: u32) -> Option<&[u8]> {
    if depth >= MAX_DEPTH {
        return None;
    }
    loop {
        let key = varint(&mut r)?;
        match value(&mut r, key & 7)? {
            Value::Scalar | Value::Delimited(_) => {}
            Value::StartGroup => r = skip_group(r, depth + 1)?,
            Value::EndGroup => return Some(r),
        }
    }
}

/// What a JSON value at some place in a request decodes into, as the
/// crate's OTLP/JSON reader (`super::json`) reads it.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// An object of this message: its members are the message's fields.
    Message(Msg),
    /// An array of this message's objects (a repeated message field).
    Messages(Msg),
    /// An array of strings (a repeated string field).
    Strings,
    /// A number, bool, string or bytes, held in its parent's struct (a
    /// string's bytes are charged with the body's length); an object or
    /// array here is a type error, which stops the reader at once.
    Scalar,
    /// An unknown member: the reader skips it, keeping nothing of it.
    Skipped,
    /// Anything at all: every object and array in it is charged as room
    /// for four of the largest message. For what the scan cannot place: a
    /// member whose name has escapes, or a message written as an array
    /// (serde's derives read a struct from its fields in order).
    Unknown,
}

impl Msg {
    /// What the member `name` of this message's JSON object holds.
    fn member(self, name: &[u8]) -> Slot {
        use Slot::{Message, Messages, Scalar, Skipped, Strings};
        match (self, name) {
            (Msg::Request, b"resourceSpans") => Messages(Msg::ResourceSpans),
            (Msg::ResourceSpans, b"resource") => Message(Msg::Resource),
            (Msg::ResourceSpans, b"scopeSpans") => Messages(Msg::ScopeSpans),
            (Msg::Resource, b"attributes") => Messages(Msg::KeyValue),
            (Msg::Resource, b"entityRefs") => Messages(Msg::EntityRef),
            (Msg::EntityRef, b"idKeys" | b"descriptionKeys") => Strings,
            (Msg::ScopeSpans, b"scope") => Message(Msg::Scope),
            (Msg::ScopeSpans, b"spans") => Messages(Msg::Span),
            (Msg::Scope | Msg::Span | Msg::Event | Msg::Link, b"attributes") => {
                Messages(Msg::KeyValue)
            }
            (Msg::Span, b"events") => Messages(Msg::Event),
            (Msg::Span, b"links") => Messages(Msg::Link),
            (Msg::Span, b"status") => Message(Msg::Status),
            (Msg::KeyValue, b"value") => Message(Msg::AnyValue),
            (Msg::AnyValue, b"arrayValue") => Message(Msg::ArrayValue),
            (Msg::AnyValue, b"kvlistValue") => Message(Msg::KeyValueList),
            (Msg::ArrayValue, b"values") => Messages(Msg::AnyValue),
            (Msg::KeyValueList, b"values") => Messages(Msg::KeyValue),
            (Msg::ResourceSpans | Msg::ScopeSpans | Msg::EntityRef, b"schemaUrl")
            | (Msg::Resource | Msg::Scope | Msg::Event | Msg::Link, b"droppedAttributesCount")
            | (Msg::EntityRef, b"type")
            | (Msg::Scope, b"name" | b"version")
            | (Msg::Span | Msg::Link, b"traceId" | b"spanId" | b"traceState" | b"flags")
            | (
                Msg::Span,
                b"parentSpanId"
                | b"name"
                | b"kind"
                | b"startTimeUnixNano"
                | b"endTimeUnixNano"
                | b"droppedAttributesCount"
                | b"droppedEventsCount"
                | b"droppedLinksCount",
            )
            | (Msg::Event, b"timeUnixNano" | b"name")
            | (Msg::Status, b"message" | b"code")
            | (Msg::KeyValue, b"key")
            | (
                Msg::AnyValue,
                b"stringValue" | b"boolValue" | b"intValue" | b"doubleValue" | b"bytesValue",
            ) => Scalar,
            _ => Skipped,
        }
    }
}

/// Longer than any field name the reader knows, in either spelling.
const CAMEL_MAX: usize = 32;

/// A member's name as [`Msg::member`] knows it: the reader takes the
/// proto's snake_case field names as well as their lowerCamelCase (each
/// `_` and the lowercase letter after it become that letter in
/// uppercase). A name that cannot be one of those comes back as it is.
/// Mixed spellings (`dropped_attributesCount`) may then match a field the
/// reader skips: charged, never missed.
fn camel<'a>(name: &'a [u8], buf: &'a mut [u8; CAMEL_MAX]) -> &'a [u8] {
    if !name.contains(&b'_') || name.len() > CAMEL_MAX {
        return name;
    }
    let mut n = 0;
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        let next = name.get(i + 1).copied();
        let out = match next {
            Some(c) if b == b'_' && c.is_ascii_lowercase() => {
                i += 1;
                c.to_ascii_uppercase()
            }
            _ => b,
        };
        if let Some(slot) = buf.get_mut(n) {
            *slot = out;
        }
        n += 1;
        i += 1;
    }
    buf.get(..n).unwrap_or(name)
}

/// One open object or array of the JSON scan.
#[derive(Clone, Copy, Debug)]
struct Open {
    /// What the object's members or the array's elements are: for an
    /// object, `Message(m)`; for an array, what each element is.
    holds: Slot,
    /// An object: true while the next string is a member's name.
    object: bool,
    expect_name: bool,
    /// An object: the slot of the member whose value comes next.
    member: Slot,
    /// An array: elements begun so far.
    elements: u64,
}

/// Nesting serde_json refuses past (its recursion limit is 128): the scan
/// stops there, since the reader stops before anything that follows.
const MAX_JSON_DEPTH: usize = 130;

/// An upper bound of the memory `body`, an OTLP/JSON request, decodes
/// into, as the crate's reader (`super::json`) reads it: each object
/// charged the size of the message it is, each element of a repeated
/// field the room a vector may hold for it (four for the first, two for
/// each later one, as the protobuf walk does), the body's length for the
/// bytes of every string, and the longest escaped string again for the
/// parser's scratch copy (twice: it grows by doubling). Unknown members cost nothing (the reader skips
/// them); what the scan cannot place is charged as the largest message
/// ([`Slot::Unknown`]). A scan of bytes, not a parse: on malformed input
/// it stays an upper bound of what the reader builds before it stops.
pub(crate) fn json(body: &[u8]) -> u64 {
    let largest = FIRST_ROOM * Msg::largest();
    let string = size_of::<String>() as u64;
    let mut total = Msg::Request.size().saturating_add(body.len() as u64);
    let mut stack: Vec<Open> = Vec::with_capacity(16);
    let mut longest_escaped = 0u64;
    let mut i = 0usize;
    while let Some(&b) = body.get(i) {
        i += 1;
        match b {
            b'"' => {
                // The string's bytes, to the closing quote.
                let start = i;
                let mut escaped = false;
                while let Some(&c) = body.get(i) {
                    i += 1;
                    if c == b'\\' {
                        escaped = true;
                        i += 1;
                    } else if c == b'"' {
                        break;
                    }
                }
                let text = body.get(start..i.saturating_sub(1)).unwrap_or(&[]);
                if escaped {
                    longest_escaped = longest_escaped.max(text.len() as u64);
                }
                match stack.last_mut() {
                    Some(top) if top.object && top.expect_name => {
                        top.member = match top.holds {
                            Slot::Message(m) if !escaped => {
                                let mut buf = [0u8; CAMEL_MAX];
                                m.member(camel(text, &mut buf))
                            }
                            Slot::Message(_) | Slot::Unknown => Slot::Unknown,
                            _ => Slot::Skipped,
                        };
                    }
                    Some(top) if !top.object => {
                        top.elements += 1;
                        if matches!(top.holds, Slot::Strings | Slot::Unknown) {
                            let room = if top.elements == 1 { FIRST_ROOM } else { 2 };
                            total = total.saturating_add(room * string);
                        }
                    }
                    _ => {}
                }
            }
            b'{' | b'[' => {
                if stack.len() >= MAX_JSON_DEPTH {
                    break;
                }
                let array = b == b'[';
                // What this value is, from where it stands.
                let (slot, room) = match stack.last_mut() {
                    None => (Slot::Message(Msg::Request), 0),
                    // A singular message: held in its parent's struct.
                    Some(top) if top.object => (top.member, 0),
                    Some(top) => {
                        top.elements += 1;
                        let room = if top.elements == 1 { FIRST_ROOM } else { 2 };
                        match top.holds {
                            Slot::Messages(m) => (Slot::Message(m), room),
                            other => (other, room),
                        }
                    }
                };
                let holds = match (slot, array) {
                    (Slot::Message(m), false) => {
                        total = total.saturating_add(room * m.size());
                        Slot::Message(m)
                    }
                    // A message written as an array of its fields.
                    (Slot::Message(m), true) => {
                        total = total.saturating_add(room.max(1) * m.size());
                        Slot::Unknown
                    }
                    (Slot::Messages(m), true) => Slot::Messages(m),
                    (Slot::Strings, true) => Slot::Strings,
                    (Slot::Unknown, _) => {
                        total = total.saturating_add(largest);
                        Slot::Unknown
                    }
                    // A type error (the reader stops here) or a skipped
                    // member: nothing of it is kept.
                    _ => Slot::Skipped,
                };
                stack.push(Open {
                    holds,
                    object: !array,
                    expect_name: !array,
                    member: Slot::Skipped,
                    elements: 0,
                });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(top) = stack.last_mut() {
                    top.expect_name = false;
                }
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.expect_name = top.object;
                    top.member = Slot::Skipped;
                }
            }
            // A number, `true`, `false` or `null` as an array's element.
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                if let Some(top) = stack.last_mut()
                    && !top.object
                {
                    top.elements += 1;
                }
                while body.get(i).is_some_and(|c| {
                    !matches!(c, b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t')
                }) {
                    i += 1;
                }
            }
            _ => {}
        }
    }
    // serde_json's scratch buffer for escaped strings grows by doubling.
    total.saturating_add(2 * longest_escaped)
}

/// The bytes a decoded request holds: its structs and every heap
/// allocation under them, at their capacities: what the estimates bound
/// (checked by the tests below and by the OTLP fuzz targets).
pub(crate) fn held_bytes(r: &ExportTraceServiceRequest) -> u64 {
    fn vec<T>(v: &[T], cap: usize) -> u64 {
        let _ = v;
        (cap * size_of::<T>()) as u64
    }
    fn s(x: &str, cap: usize) -> u64 {
        let _ = x;
        cap as u64
    }
    fn any(v: &AnyValue) -> u64 {
        match &v.value {
            Some(any_value::Value::StringValue(x)) => s(x, x.capacity()),
            Some(any_value::Value::BytesValue(b)) => b.capacity() as u64,
            Some(any_value::Value::ArrayValue(a)) => {
                vec(&a.values, a.values.capacity()) + a.values.iter().map(any).sum::<u64>()
            }
            Some(any_value::Value::KvlistValue(l)) => kvs(&l.values),
            _ => 0,
        }
    }
    fn kvs(k: &Vec<KeyValue>) -> u64 {
        vec(k, k.capacity())
            + k.iter()
                .map(|kv| s(&kv.key, kv.key.capacity()) + kv.value.as_ref().map_or(0, any))
                .sum::<u64>()
    }
    let mut n = size_of::<ExportTraceServiceRequest>() as u64
        + vec(&r.resource_spans, r.resource_spans.capacity());
    for rs in &r.resource_spans {
        n += s(&rs.schema_url, rs.schema_url.capacity());
        if let Some(res) = &rs.resource {
            n += kvs(&res.attributes) + vec(&res.entity_refs, res.entity_refs.capacity());
            for e in &res.entity_refs {
                n += (e.schema_url.capacity() + e.r#type.capacity()) as u64;
                for keys in [&e.id_keys, &e.description_keys] {
                    n += vec(keys, keys.capacity())
                        + keys.iter().map(|k| s(k, k.capacity())).sum::<u64>();
                }
            }
        }
        n += vec(&rs.scope_spans, rs.scope_spans.capacity());
        for ss in &rs.scope_spans {
            n += s(&ss.schema_url, ss.schema_url.capacity());
            if let Some(sc) = &ss.scope {
                n += sc.name.capacity() as u64 + sc.version.capacity() as u64;
                n += kvs(&sc.attributes);
            }
            n += vec(&ss.spans, ss.spans.capacity());
            for sp in &ss.spans {
                n += (sp.trace_id.capacity()
                    + sp.span_id.capacity()
                    + sp.parent_span_id.capacity()
                    + sp.trace_state.capacity()
                    + sp.name.capacity()) as u64;
                n += kvs(&sp.attributes);
                n += vec(&sp.events, sp.events.capacity());
                for e in &sp.events {
                    n += e.name.capacity() as u64 + kvs(&e.attributes);
                }
                n += vec(&sp.links, sp.links.capacity());
                for l in &sp.links {
                    n += (l.trace_id.capacity() + l.span_id.capacity()) as u64;
                    n += l.trace_state.capacity() as u64 + kvs(&l.attributes);
                }
                n += sp
                    .status
                    .as_ref()
                    .map_or(0, |st| st.message.capacity() as u64);
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Workload, WorkloadConfig};
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use proptest::prelude::*;
    use prost::Message;

    /// The crate's OTLP/JSON reader, without the estimate's check.
    fn read_json(body: &[u8]) -> serde_json::Result<ExportTraceServiceRequest> {
        serde_json::from_slice::<super::super::json::Request>(body).map(Into::into)
    }

    fn realistic(span_bytes: usize) -> Vec<ExportTraceServiceRequest> {
        let cfg = WorkloadConfig::realistic(7, usize::MAX, span_bytes);
        Workload::new(cfg)
            .batches(512)
            .take(8)
            .map(|b| crate::otlp::from_resource_spans(&b))
            .collect()
    }

    /// What realistic requests come to, against their bodies: far under
    /// the budget, and never under what they decode into.
    #[test]
    fn realistic_requests_are_well_within_the_budget() {
        for span_bytes in [500, 4096] {
            for r in realistic(span_bytes) {
                let pb = r.encode_to_vec();
                let js = serde_json::to_vec(&r).unwrap_or_default();
                let decoded =
                    held_bytes(&ExportTraceServiceRequest::decode(pb.as_slice()).unwrap());
                let p = protobuf(&pb);
                let j = json(&js);
                assert!(p >= decoded, "protobuf {p} < decoded {decoded}");
                let from_json = held_bytes(&read_json(&js).unwrap());
                assert!(j >= from_json, "json {j} < decoded {from_json}");
                let pr = p as f64 / pb.len() as f64;
                let jr = j as f64 / js.len() as f64;
                // The figures BUDGET_FACTOR's documentation gives.
                assert!(
                    pr < 5.0 && jr < 4.0,
                    "{span_bytes} B spans: {pr:.1}x, {jr:.1}x"
                );
                assert!(p <= budget(pb.len()) && j <= budget(js.len()));
            }
        }
    }

    /// Empty spans: two bytes each on the wire.
    fn empty_spans(n: usize) -> Vec<u8> {
        let spans: Vec<u8> = [0x12u8, 0x00].repeat(n);
        let wrap = |field: u8, inner: &[u8]| {
            let mut v = vec![field];
            prost::encoding::encode_varint(inner.len() as u64, &mut v);
            v.extend_from_slice(inner);
            v
        };
        wrap(0x0a, &wrap(0x12, &spans))
    }

    #[test]
    fn a_body_of_empty_messages_is_refused_before_it_is_decoded() {
        let body = empty_spans(1 << 19);
        let estimated = protobuf(&body);
        assert!(estimated > budget(body.len()), "{estimated}");
        let decoded = held_bytes(&ExportTraceServiceRequest::decode(body.as_slice()).unwrap());
        assert!(estimated >= decoded);
        assert!(
            decoded > 100 * body.len() as u64,
            "{decoded} for {}",
            body.len()
        );
        match crate::otlp::decode_protobuf(&body) {
            Err(crate::otlp::DecodeError::TooLarge { estimated: e, .. }) => {
                assert_eq!(e, estimated)
            }
            other => panic!("{other:?}"),
        }
        // An unknown group field (which prost steps over) before them does
        // not make the walk give up.
        let mut grouped = vec![0x7b, 0x08, 0x01, 0x7c]; // field 15: start, a varint, end
        grouped.extend_from_slice(&body);
        assert!(ExportTraceServiceRequest::decode(grouped.as_slice()).is_ok());
        assert!(matches!(
            crate::otlp::decode_protobuf(&grouped),
            Err(crate::otlp::DecodeError::TooLarge { .. })
        ));
        let js = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec!["{}"; 1 << 19].join(",")
        );
        assert!(matches!(
            crate::otlp::decode_json(js.as_bytes()),
            Err(crate::otlp::DecodeError::TooLarge { .. })
        ));
        // Empty attributes, and values nested in arrays, the same.
        let span = Span {
            attributes: vec![KeyValue::default(); 1 << 16],
            ..Default::default()
        };
        let r = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let body = r.encode_to_vec();
        assert!(body.len() < 200_000);
        assert!(protobuf(&body) >= held_bytes(&r));
    }

    /// One resource and scope holding `spans`.
    fn request_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Spans of many small attributes, as instrumentations write them
    /// (token counts, flags): well within the budget in both encodings.
    /// The JSON scan charged every object as the largest message before,
    /// and refused 512 spans of five integer attributes (181 KB); both
    /// charged each attribute's value room for four `AnyValue`s, which
    /// prost holds inside the `KeyValue`, and put such protobuf at 32.3 to
    /// 32.8 times its size, over the budget from 2 MiB on.
    #[test]
    fn small_attributes_are_well_within_the_budget() {
        for n in [0usize, 5, 20, 50] {
            let int = |j: usize| KeyValue {
                key: format!("k{j}"),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(1)),
                }),
                ..Default::default()
            };
            let span = Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "llm".into(),
                attributes: (0..n).map(int).collect(),
                ..Default::default()
            };
            let request = request_of(vec![span; 512]);
            let pb = request.encode_to_vec();
            let p = protobuf(&pb);
            let decoded = held_bytes(&ExportTraceServiceRequest::decode(pb.as_slice()).unwrap());
            assert!(p >= decoded, "{n}: protobuf {p} < decoded {decoded}");
            let ratio = p as f64 / pb.len() as f64;
            assert!(ratio < 20.0, "{n} attributes, protobuf: {ratio:.1}x");
            let js = serde_json::to_vec(&request).unwrap();
            let j = json(&js);
            let decoded = held_bytes(&read_json(&js).unwrap());
            assert!(j >= decoded, "{n}: json {j} < decoded {decoded}");
            let ratio = j as f64 / js.len() as f64;
            assert!(ratio < 6.0, "{n} attributes, JSON: {ratio:.1}x");
            assert!(crate::otlp::decode_json(&js).is_ok());
        }
    }

    /// What the scan cannot place is charged as the largest message:
    /// messages written as arrays of their fields (serde's derives read
    /// them), and member names with escapes. Unknown members cost nothing:
    /// the reader keeps nothing of them.
    #[test]
    fn json_the_scan_cannot_place_is_charged_in_full() {
        let wrap = |spans: &str| {
            format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#)
        };
        let spans =
            |r: &ExportTraceServiceRequest| r.resource_spans[0].scope_spans[0].spans.clone();
        // Spans as empty arrays: each one a whole span.
        let small = wrap(&vec!["[]"; 1000].join(","));
        let back = read_json(small.as_bytes()).unwrap();
        assert_eq!(spans(&back).len(), 1000);
        assert!(json(small.as_bytes()) >= held_bytes(&back));
        let big = wrap(&vec!["[]"; 1 << 19].join(","));
        assert!(matches!(
            crate::otlp::decode_json(big.as_bytes()),
            Err(crate::otlp::DecodeError::TooLarge { .. })
        ));
        // A span's fields in order, its attributes included.
        let attrs = vec![r#"{"key":"k","value":{"intValue":"1"}}"#; 100].join(",");
        let seq = wrap(&format!(
            r#"["0a0b","0c0d","","",0,"n",1,"1","2",[{attrs}]]"#
        ));
        let back = read_json(seq.as_bytes()).unwrap();
        assert_eq!(spans(&back)[0].attributes.len(), 100);
        assert_eq!(spans(&back)[0].span_id, [0x0c, 0x0d]);
        assert!(json(seq.as_bytes()) >= held_bytes(&back));
        // A name with an escape is the name it spells.
        let escaped = wrap(&format!(
            r#"{{"\u0061ttributes":[{}]}}"#,
            vec![r#"{"key":"k","value":{"kvlistValue":{}}}"#; 1000].join(",")
        ));
        let back = read_json(escaped.as_bytes()).unwrap();
        assert_eq!(spans(&back)[0].attributes.len(), 1000);
        assert!(json(escaped.as_bytes()) >= held_bytes(&back));
        // An unknown member of half a million objects.
        let unknown = wrap(&format!(
            r#"{{"junk":[{}]}}"#,
            vec!["{}"; 1 << 19].join(",")
        ));
        let j = json(unknown.as_bytes());
        assert!(j < 2 * unknown.len() as u64, "{j} for {}", unknown.len());
        assert_eq!(
            spans(&crate::otlp::decode_json(unknown.as_bytes()).unwrap()).len(),
            1
        );
    }

    fn any_value() -> impl Strategy<Value = AnyValue> {
        let leaf = prop_oneof![
            Just(AnyValue { value: None }),
            ".{0,12}".prop_map(|s| AnyValue {
                value: Some(Value::StringValue(s))
            }),
            any::<i64>().prop_map(|i| AnyValue {
                value: Some(Value::IntValue(i))
            }),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| AnyValue {
                value: Some(Value::BytesValue(b))
            }),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|values| AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values }))
                }),
                proptest::collection::vec((".{0,4}", inner), 0..4).prop_map(|kv| AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList {
                        values: kv
                            .into_iter()
                            .map(|(key, v)| KeyValue {
                                key,
                                value: Some(v),
                                ..Default::default()
                            })
                            .collect(),
                    }))
                }),
            ]
        })
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        proptest::collection::vec((".{0,6}", proptest::option::of(any_value())), 0..6).prop_map(
            |kv| {
                kv.into_iter()
                    .map(|(key, value)| KeyValue {
                        key,
                        value,
                        ..Default::default()
                    })
                    .collect()
            },
        )
    }

    fn a_span() -> impl Strategy<Value = Span> {
        (
            proptest::collection::vec(any::<u8>(), 0..17),
            ".{0,8}",
            attributes(),
            proptest::collection::vec((".{0,4}", attributes()), 0..3),
            proptest::collection::vec(attributes(), 0..2),
            proptest::option::of(".{0,6}"),
        )
            .prop_map(|(id, name, attributes, events, links, status)| Span {
                trace_id: id.clone(),
                span_id: id,
                name,
                attributes,
                events: events
                    .into_iter()
                    .map(|(name, attributes)| span::Event {
                        name,
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                links: links
                    .into_iter()
                    .map(|attributes| span::Link {
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                status: status.map(|message| Status {
                    message,
                    ..Default::default()
                }),
                ..Default::default()
            })
    }

    fn a_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
        proptest::collection::vec(
            (
                proptest::option::of(attributes()),
                proptest::collection::vec(
                    (
                        proptest::option::of((".{0,4}", attributes())),
                        proptest::collection::vec(a_span(), 0..6),
                    ),
                    0..3,
                ),
            ),
            0..3,
        )
        .prop_map(|rss| ExportTraceServiceRequest {
            resource_spans: rss
                .into_iter()
                .map(|(resource, scopes)| ResourceSpans {
                    resource: resource.map(|attributes| Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .map(|(scope, spans)| ScopeSpans {
                            scope: scope.map(|(name, attributes)| InstrumentationScope {
                                name,
                                attributes,
                                ..Default::default()
                            }),
                            spans,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        })
    }

    /// Whether the walk reads `body` to its end (`false`: it stopped at a
    /// flaw).
    fn walks_through(body: &[u8]) -> bool {
        let mut total = 0;
        walk(body, Msg::Request, 0, &mut total).is_some()
    }

    /// A malformed body is charged for what precedes its flaw, which the
    /// decoder builds before it stops: empty spans followed by five bad
    /// bytes were decoded unchecked (135 MB for 1 MB) and are now refused.
    /// A small malformed body still gets the decoder's own reason.
    #[test]
    fn a_malformed_body_is_charged_for_what_precedes_its_flaw() {
        let wrap = |field: u8, inner: &[u8]| {
            let mut v = vec![field];
            prost::encoding::encode_varint(inner.len() as u64, &mut v);
            v.extend_from_slice(inner);
            v
        };
        let spans: Vec<u8> = [0x12u8, 0x00].repeat(1 << 19);
        // A bad field after the first resource's spans.
        let mut tail = wrap(0x0a, &wrap(0x12, &spans));
        tail.extend_from_slice(&[0x0a, 0xff, 0xff, 0xff, 0x0f]);
        // The last span claims more bytes than its scope holds.
        let mut flawed = spans.clone();
        flawed.extend_from_slice(&[0x12, 0x05, 0x00]);
        let deep = wrap(0x0a, &wrap(0x12, &flawed));
        for body in [tail, deep] {
            assert!(!walks_through(&body));
            assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_err());
            assert!(protobuf(&body) > budget(body.len()));
            assert!(matches!(
                crate::otlp::decode_protobuf(&body),
                Err(crate::otlp::DecodeError::TooLarge { .. })
            ));
        }
        // Cut short, the first field claims more bytes than the body has:
        // the decoder stops before it builds anything, and so does the
        // walk's charge.
        let whole = empty_spans(1 << 19);
        let cut = &whole[..whole.len() - 1];
        assert!(protobuf(cut) <= budget(cut.len()));
        assert!(matches!(
            crate::otlp::decode_protobuf(cut),
            Err(crate::otlp::DecodeError::Protobuf { .. })
        ));
        let small = empty_spans(10);
        match crate::otlp::decode_protobuf(&small[..small.len() - 1]) {
            Err(crate::otlp::DecodeError::Protobuf { reason }) => {
                assert!(reason.contains("underflow"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Values nested around the decoder's recursion limit: the walk stops
    /// exactly where the decoder does.
    #[test]
    fn the_walk_stops_at_the_decoders_nesting_limit() {
        let mut stopped = Vec::new();
        // Each array is two messages deep (an `AnyValue` and its
        // `ArrayValue`) under the request's five.
        for depth in 40..56 {
            let mut v = AnyValue {
                value: Some(Value::IntValue(1)),
            };
            for _ in 0..depth {
                v = AnyValue {
                    value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
                };
            }
            let r = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            attributes: vec![KeyValue {
                                key: "a".into(),
                                value: Some(v),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let body = r.encode_to_vec();
            let decodes = ExportTraceServiceRequest::decode(body.as_slice()).is_ok();
            assert_eq!(walks_through(&body), decodes, "{depth} deep");
            if !decodes {
                stopped.push(depth);
            }
        }
        assert!(!stopped.is_empty() && stopped.len() < 16, "{stopped:?}");
    }

    proptest! {
        /// Where the walk stops at a flaw, the decoder fails too (so the
        /// charge up to the flaw covers what it builds): realistic requests
        /// cut, with bytes flipped, or with bytes inserted.
        #[test]
        fn where_the_walk_stops_the_decoder_fails(
            r in a_request(),
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            byte in any::<u8>(),
        ) {
            let mut body = r.encode_to_vec();
            if !body.is_empty() {
                let i = at.index(body.len());
                match edit {
                    0 => body.truncate(i),
                    1 => body[i] ^= byte | 1,
                    _ => body.insert(i, byte),
                }
            }
            if !walks_through(&body) {
                prop_assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_err());
            }
        }

        /// Both estimates bound what any request decodes into.
        #[test]
        fn the_estimates_are_at_least_what_a_request_decodes_into(r in a_request()) {
            let pb = r.encode_to_vec();
            let decoded = ExportTraceServiceRequest::decode(pb.as_slice()).unwrap();
            let real = held_bytes(&decoded);
            let p = protobuf(&pb);
            prop_assert!(p >= real, "protobuf estimate {} < {}", p, real);
            if let Ok(js) = serde_json::to_vec(&r)
                && let Ok(back) = read_json(&js)
            {
                let j = json(&js);
                prop_assert!(j >= held_bytes(&back), "json estimate {} < {}", j, held_bytes(&back));
            }
        }

        /// Any bytes: an estimate or none, never a panic.
        #[test]
        fn any_bytes_are_estimated_without_a_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = protobuf(&b);
            let _ = json(&b);
        }
    }
}

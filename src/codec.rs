//! The only user of bincode: how records and index values become bytes.
//!
//! Every log frame carries a tag byte naming the record type and encoding
//! version, so that a switch away from bincode 2 (unmaintained,
//! RUSTSEC-2025-0141) is a change to this file plus a new tag, and old
//! segments stay readable by dispatching on the tag.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{KeyValue, Span, StoredSpan};

/// Largest payload any decode may claim. Guards against corrupted length
/// prefixes asking for gigabytes (bincode preallocates on length).
pub(crate) const MAX_DECODE_BYTES: usize = 64 << 20;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_DECODE_BYTES>>;

const CONFIG: Config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();

/// Frame tag of a span record: `StoredSpan`, bincode 2 standard config via serde.
pub(crate) const TAG_SPAN_V1: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Appends the encoding of a span record to `buf`; returns the frame tag.
#[cfg(test)]
pub(crate) fn encode_span(span: &StoredSpan, buf: &mut Vec<u8>) -> Result<u8, DecodeError> {
    encode_span_parts(&span.project, &span.resource, &span.span, buf)
}

/// Borrowed mirror of [`StoredSpan`]: serializes to the same bytes without
/// cloning the caller's span.
#[derive(Serialize)]
struct StoredSpanRef<'a> {
    project: &'a str,
    resource: &'a [KeyValue],
    span: &'a Span,
}

/// Like [`encode_span`], from the parts of a record.
pub(crate) fn encode_span_parts(
    project: &str,
    resource: &[KeyValue],
    span: &Span,
    buf: &mut Vec<u8>,
) -> Result<u8, DecodeError> {
    let rec = StoredSpanRef {
        project,
        resource,
        span,
    };
    bincode::serde::encode_into_std_write(&rec, buf, CONFIG)
        .map_err(|e| DecodeError(format!("cannot encode span: {e}")))?;
    Ok(TAG_SPAN_V1)
}

/// Decodes a span record from a frame's tag and payload.
pub(crate) fn decode_span(tag: u8, payload: &[u8]) -> Result<StoredSpan, DecodeError> {
    match tag {
        TAG_SPAN_V1 => decode_exact(payload),
        other => Err(DecodeError(format!("unknown frame tag {other}"))),
    }
}

/// Encodes an index value.
pub(crate) fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding into a Vec fails only if serde's Serialize impl fails,
    // which derived impls of our own types never do.
    bincode::serde::encode_to_vec(value, CONFIG).unwrap_or_default()
}

/// Decodes an index value; the whole slice must be consumed.
pub(crate) fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    decode_exact(bytes)
}

fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, CONFIG)
        .map_err(|e| DecodeError(format!("cannot decode: {e}")))?;
    if used != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the record",
            bytes.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Span, SpanId, TraceId};

    fn sample() -> StoredSpan {
        StoredSpan {
            project: "p".into(),
            resource: vec![],
            span: Span::new(TraceId([1; 16]), SpanId([2; 8]), None, "root", 10, 20)
                .with_attribute("session.id", "s1")
                .with_attribute("llm.token_count.total", 42i64),
        }
    }

    #[test]
    fn span_round_trips() {
        let mut buf = Vec::new();
        let tag = encode_span(&sample(), &mut buf).ok();
        assert_eq!(tag, Some(TAG_SPAN_V1));
        assert_eq!(decode_span(TAG_SPAN_V1, &buf), Ok(sample()));
    }

    #[test]
    fn unknown_tag_and_trailing_bytes_are_errors() {
        let mut buf = Vec::new();
        assert!(encode_span(&sample(), &mut buf).is_ok());
        assert!(decode_span(99, &buf).is_err());
        buf.push(0);
        assert!(decode_span(TAG_SPAN_V1, &buf).is_err());
    }

    #[test]
    fn huge_length_prefix_is_rejected_not_allocated() {
        // A string length prefix claiming u64::MAX bytes.
        let bytes = [0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode_value::<String>(&bytes).is_err());
    }

    /// Golden bytes: a format change must be deliberate (bump the tag).
    #[test]
    fn span_encoding_is_stable() {
        let rec = StoredSpan {
            project: "p".into(),
            resource: vec![],
            span: Span::new(TraceId([1; 16]), SpanId([2; 8]), None, "r", 1, 2),
        };
        let mut buf = Vec::new();
        assert!(encode_span(&rec, &mut buf).is_ok());
        let mut expected = vec![1, b'p', 0];
        expected.extend_from_slice(&[1; 16]);
        expected.extend_from_slice(&[2; 8]);
        expected.extend_from_slice(&[0, 1, b'r', 0, 1, 2, 0, 0, 0, 0, 0]);
        assert_eq!(buf, expected);
    }
}

//! The only user of bincode: how records and index values become bytes.
//!
//! Every log frame carries a tag byte naming the record type and encoding
//! version, so that a switch away from bincode 2 (unmaintained,
//! RUSTSEC-2025-0141) is a change to this file plus a new tag, and old
//! segments stay readable by dispatching on the tag.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::index::facts::{self, FactKeys, SessionIdSource};
use crate::index::trace::{SpanHead, SpanInfo};
use crate::model::{
    AttributeValue, Event, KeyValue, Link, Span, SpanId, SpanKind, StatusCode, StoredSpan, TraceId,
};

/// Largest payload any decode may claim. Guards against corrupted length
/// prefixes asking for gigabytes (bincode preallocates on length).
pub(crate) const MAX_DECODE_BYTES: usize = 64 << 20;

type Config = Configuration<LittleEndian, Varint, Limit<MAX_DECODE_BYTES>>;

const CONFIG: Config = bincode::config::standard().with_limit::<MAX_DECODE_BYTES>();

/// Frame tag of a span record: `StoredSpan`, bincode 2 standard config via serde.
pub(crate) const TAG_SPAN_V1: u8 = 1;

/// Frame tag of a delete record (a tombstone): `DeleteRecord`, bincode 2
/// standard config via serde.
pub(crate) const TAG_DELETE_V1: u8 = 2;

/// A tombstone: the traces it names are deleted whole, in one index
/// transaction. Victims are resolved (from a session, project or user)
/// before the record is written, so that a replay deletes exactly the
/// spans of these traces that precede the record, whatever else the log
/// holds then (which keeps replay exact after compaction moves frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeleteRecord {
    /// Trace ids, sorted, distinct.
    pub traces: Vec<[u8; 16]>,
}

/// A decoded log frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LogRecord {
    Span(Box<StoredSpan>),
    Delete(DeleteRecord),
}

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

/// Like [`encode_span`], from the parts of a record.
///
/// This is the ingest hot path, so it writes bincode 2's wire format
/// (standard config: varint integers, little-endian) directly instead of
/// going through serde, which cost about a fifth of an append. The bytes
/// are identical to `bincode::serde` encoding a [`StoredSpan`]; the test
/// `direct_encoding_matches_bincode` checks that on generated spans, and
/// `decode_span` reads the same format directly.
pub(crate) fn encode_span_parts<W: Sink>(
    project: &str,
    resource: &[KeyValue],
    span: &Span,
    buf: &mut W,
) -> Result<u8, DecodeError> {
    put_prefix(buf, project, resource);
    put_span_body(buf, span);
    Ok(TAG_SPAN_V1)
}

/// What a span record holds before its span: the project and the
/// resource's attributes, the same bytes for every span of one resource
/// ([`encoded_prefix_len`] of them).
pub(crate) fn put_prefix(w: &mut impl Sink, project: &str, resource: &[KeyValue]) {
    put_str(w, project);
    put_attributes(w, resource);
}

/// The rest of a span record after [`put_prefix`]: the span itself
/// ([`encoded_body_len`] bytes).
pub(crate) fn put_span_body(w: &mut impl Sink, span: &Span) {
    w.put_all(&span.trace_id.0);
    w.put_all(&span.span_id.0);
    match span.parent_span_id {
        None => w.put(0),
        Some(p) => {
            w.put(1);
            w.put_all(&p.0);
        }
    }
    put_str(w, &span.name);
    put_varint(w, span_kind_index(span.kind));
    put_time(w, span.start_time_unix_nano);
    put_time(w, span.end_time_unix_nano);
    put_varint(w, status_index(span.status.code));
    put_str(w, &span.status.message);
    put_attributes(w, &span.attributes);
    put_len(w, span.events.len());
    for e in &span.events {
        put_time(w, e.time_unix_nano);
        put_str(w, &e.name);
        put_attributes(w, &e.attributes);
    }
    put_len(w, span.links.len());
    for l in &span.links {
        w.put_all(&l.trace_id.0);
        w.put_all(&l.span_id.0);
        put_attributes(w, &l.attributes);
    }
}

/// The number of bytes [`encode_span_parts`] writes for a span, counted
/// without writing them.
#[cfg(test)]
pub(crate) fn encoded_span_len(project: &str, resource: &[KeyValue], span: &Span) -> usize {
    encoded_prefix_len(project, resource) + encoded_body_len(span)
}

/// The number of bytes [`put_prefix`] writes.
pub(crate) fn encoded_prefix_len(project: &str, resource: &[KeyValue]) -> usize {
    str_len(project) + attributes_len(resource)
}

/// The number of bytes [`put_span_body`] writes for `span`, summed from
/// the lengths of its parts (counting each byte [`put_span_body`] would
/// write, through a sink that only counts, cost the appending thread
/// more).
pub(crate) fn encoded_body_len(span: &Span) -> usize {
    let fixed = 16 + 8 + 1 + span.parent_span_id.map_or(0, |_| 8);
    let mut n = fixed
        + str_len(&span.name)
        + varint_len(span_kind_index(span.kind))
        + varint_len(span.start_time_unix_nano)
        + varint_len(span.end_time_unix_nano)
        + varint_len(status_index(span.status.code))
        + str_len(&span.status.message)
        + attributes_len(&span.attributes)
        + varint_len(span.events.len() as u64)
        + varint_len(span.links.len() as u64);
    for e in &span.events {
        n += varint_len(e.time_unix_nano) + str_len(&e.name) + attributes_len(&e.attributes);
    }
    for l in &span.links {
        n += 16 + 8 + attributes_len(&l.attributes);
    }
    n
}

/// The bytes [`put_varint`] writes for `v`.
#[inline(always)]
fn varint_len(v: u64) -> usize {
    if v < 251 {
        1
    } else if v <= u64::from(u16::MAX) {
        3
    } else if v <= u64::from(u32::MAX) {
        5
    } else {
        9
    }
}

/// The bytes [`put_str`] writes for `s`.
#[inline(always)]
fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

/// The bytes [`put_attributes`] writes for `attrs`.
fn attributes_len(attrs: &[KeyValue]) -> usize {
    let mut n = varint_len(attrs.len() as u64);
    for kv in attrs {
        // The key, and the value's variant index (below 251).
        n += str_len(&kv.key) + 1;
        n += match &kv.value {
            AttributeValue::String(s) => str_len(s),
            AttributeValue::Bool(_) => 1,
            AttributeValue::Int(i) => varint_len(zigzag(*i)),
            AttributeValue::Double(_) => 8,
            AttributeValue::StringArray(v) => {
                varint_len(v.len() as u64) + v.iter().map(|s| str_len(s)).sum::<usize>()
            }
            AttributeValue::BoolArray(v) => varint_len(v.len() as u64) + v.len(),
            AttributeValue::IntArray(v) => {
                varint_len(v.len() as u64) + v.iter().map(|i| varint_len(zigzag(*i))).sum::<usize>()
            }
            AttributeValue::DoubleArray(v) => varint_len(v.len() as u64) + 8 * v.len(),
        };
    }
    n
}

/// The number of bytes a list of attributes takes in a span record (the
/// resource's are written into every span's record), counted without
/// writing them.
#[cfg(feature = "otlp")]
pub(crate) fn encoded_attributes_len(attrs: &[KeyValue]) -> usize {
    attributes_len(attrs)
}

/// Where the hand-written encoders write: a buffer (or, in tests, a
/// `ByteCount`).
pub(crate) trait Sink {
    /// Writes one byte.
    fn put(&mut self, b: u8);
    /// Writes bytes.
    fn put_all(&mut self, b: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, b: u8) {
        self.push(b);
    }
    #[inline]
    fn put_all(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

/// A [`Sink`] that only counts the bytes (the tests' measure of what the
/// lengths summed from parts, [`encoded_span_len`], must give).
#[cfg(test)]
pub(crate) struct ByteCount(pub(crate) usize);

#[cfg(test)]
impl Sink for ByteCount {
    #[inline]
    fn put(&mut self, _: u8) {
        self.0 += 1;
    }
    #[inline]
    fn put_all(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
}

/// bincode 2 varint: one byte below 251, else a marker and 2, 4 or 8 bytes.
/// Inlined for the one-byte case (lengths, tags, kinds: most varints of a
/// span), which a call cost several times over in a profile of appends.
#[inline]
pub(crate) fn put_varint(w: &mut impl Sink, v: u64) {
    if v < 251 {
        w.put(v as u8);
    } else {
        put_wide_varint(w, v);
    }
}

/// [`put_varint`] of a value of 251 or more, out of line.
#[inline(never)]
fn put_wide_varint(w: &mut impl Sink, v: u64) {
    put_wide_varint_inline(w, v);
}

/// [`put_varint`] of a value of 251 or more: its marker and its bytes in
/// one write (one capacity check, not two).
#[inline(always)]
fn put_wide_varint_inline(w: &mut impl Sink, v: u64) {
    if let Ok(v) = u16::try_from(v) {
        let [a, b] = v.to_le_bytes();
        w.put_all(&[251, a, b]);
    } else if let Ok(v) = u32::try_from(v) {
        let [a, b, c, d] = v.to_le_bytes();
        w.put_all(&[252, a, b, c, d]);
    } else {
        put_nine_byte_varint(w, v);
    }
}

/// [`put_varint`] of a value above `u32::MAX`: the marker and the eight
/// bytes in one write.
#[inline(always)]
fn put_nine_byte_varint(w: &mut impl Sink, v: u64) {
    let [a, b, c, d, e, f, g, h] = v.to_le_bytes();
    w.put_all(&[253, a, b, c, d, e, f, g, h]);
}

/// [`put_varint`] (the same bytes) with every form inline: for the hot
/// loops whose values are often wide (a span fact's LSN, token counts).
#[inline(always)]
pub(crate) fn put_varint_inline(w: &mut impl Sink, v: u64) {
    if v < 251 {
        w.put(v as u8);
    } else {
        put_wide_varint_inline(w, v);
    }
}

/// [`put_varint`] (the same bytes) for a value usually above `u32::MAX`,
/// as times in nanoseconds since the epoch are: that case inline, without
/// the one-byte test and the call.
#[inline(always)]
pub(crate) fn put_time(w: &mut impl Sink, v: u64) {
    if v > u64::from(u32::MAX) {
        put_nine_byte_varint(w, v);
    } else {
        put_varint(w, v);
    }
}

/// The length of a sequence or string, as bincode writes it.
pub(crate) fn put_len(w: &mut impl Sink, n: usize) {
    put_varint(w, n as u64);
}

fn put_i64(w: &mut impl Sink, v: i64) {
    put_varint(w, zigzag(v));
}

/// Zigzag, as bincode encodes signed varints.
#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// A string: its length, then its bytes.
#[inline]
pub(crate) fn put_str(w: &mut impl Sink, s: &str) {
    put_len(w, s.len());
    w.put_all(s.as_bytes());
}

fn span_kind_index(k: SpanKind) -> u64 {
    match k {
        SpanKind::Unspecified => 0,
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn status_index(c: StatusCode) -> u64 {
    match c {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    }
}

fn put_attributes(w: &mut impl Sink, attrs: &[KeyValue]) {
    put_len(w, attrs.len());
    for kv in attrs {
        put_str(w, &kv.key);
        match &kv.value {
            AttributeValue::String(s) => match u8::try_from(s.len()) {
                // The variant and a one-byte length in one write (one
                // capacity check, not two: most values are short).
                Ok(n) if n < 251 => {
                    w.put_all(&[0, n]);
                    w.put_all(s.as_bytes());
                }
                _ => {
                    w.put(0);
                    put_str(w, s);
                }
            },
            AttributeValue::Bool(b) => w.put_all(&[1, u8::from(*b)]),
            AttributeValue::Int(i) => {
                w.put(2);
                put_i64(w, *i);
            }
            AttributeValue::Double(d) => {
                w.put(3);
                w.put_all(&d.to_le_bytes());
            }
            AttributeValue::StringArray(v) => {
                w.put(4);
                put_len(w, v.len());
                for s in v {
                    put_str(w, s);
                }
            }
            AttributeValue::BoolArray(v) => {
                w.put(5);
                put_len(w, v.len());
                for b in v {
                    w.put(u8::from(*b));
                }
            }
            AttributeValue::IntArray(v) => {
                w.put(6);
                put_len(w, v.len());
                for i in v {
                    put_i64(w, *i);
                }
            }
            AttributeValue::DoubleArray(v) => {
                w.put(7);
                put_len(w, v.len());
                for d in v {
                    w.put_all(&d.to_le_bytes());
                }
            }
        }
    }
}

/// A cursor over bytes in bincode 2's standard wire format (the one
/// [`encode_value`] writes: varint integers, little-endian), for index
/// values that hot read paths decode field by field instead of through
/// serde, borrowing strings from the stored bytes rather than allocating
/// them. It accepts what `bincode::serde` accepts for these field types
/// (including non-minimal varints) and rejects the rest with an error;
/// decoders built on it are checked against bincode by property tests.
pub(crate) struct WireReader<'a> {
    rest: &'a [u8],
}

/// bincode 2 varint markers: the value follows in 2, 4 or 8 bytes.
const VARINT_U16: u8 = 251;
const VARINT_U32: u8 = 252;
const VARINT_U64: u8 = 253;

fn truncated() -> DecodeError {
    DecodeError("cannot decode: unexpected end of value".to_owned())
}

impl<'a> WireReader<'a> {
    /// A reader over `bytes`.
    #[inline]
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(truncated());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A fixed-size byte array (`u8`s and `[u8; N]` are not varints).
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// One byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// A varint `u64`. The one-byte form (below 251: lengths, counts,
    /// small numbers) is read inline; the others out of line, so that the
    /// read paths' decoders (turns, spans) keep this inlined.
    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        match self.one_byte_varint() {
            Some(b) => Ok(u64::from(b)),
            None => self.u64_wide(),
        }
    }

    /// A varint `u64` most often in its nine-byte form (a time in
    /// nanoseconds): that form is read inline, the others as
    /// [`Self::u64`] reads them.
    #[inline(always)]
    pub(crate) fn time(&mut self) -> Result<u64, DecodeError> {
        if let Some((&VARINT_U64, rest)) = self.rest.split_first()
            && let Some((bytes, rest)) = rest.split_first_chunk::<8>()
        {
            self.rest = rest;
            return Ok(u64::from_le_bytes(*bytes));
        }
        self.u64()
    }

    /// The tag of an `Option` and, for `Some`, the `N` bytes that follow,
    /// as [`Self::option`] and [`Self::array`] read them, inline.
    #[inline(always)]
    pub(crate) fn option_array<const N: usize>(&mut self) -> Result<Option<[u8; N]>, DecodeError> {
        match self.rest.split_first() {
            Some((0, rest)) => {
                self.rest = rest;
                Ok(None)
            }
            Some((1, rest)) => match rest.split_first_chunk::<N>() {
                Some((bytes, rest)) => {
                    self.rest = rest;
                    Ok(Some(*bytes))
                }
                None => Err(truncated()),
            },
            _ => self.option().map(|_| None),
        }
    }

    /// A varint in its one-byte form, consumed; `None` (nothing consumed)
    /// for a wider form or at the end.
    #[inline(always)]
    fn one_byte_varint(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        if b >= VARINT_U16 {
            return None;
        }
        self.rest = rest;
        Some(b)
    }

    #[inline(never)]
    fn u64_wide(&mut self) -> Result<u64, DecodeError> {
        match self.u8()? {
            b @ 0..VARINT_U16 => Ok(u64::from(b)),
            VARINT_U16 => Ok(u64::from(u16::from_le_bytes(self.array()?))),
            VARINT_U32 => Ok(u64::from(u32::from_le_bytes(self.array()?))),
            VARINT_U64 => Ok(u64::from_le_bytes(self.array()?)),
            b => Err(DecodeError(format!(
                "cannot decode: invalid varint marker {b} for a u64"
            ))),
        }
    }

    /// A varint `u32` (serde enum variant indexes are these). The
    /// one-byte form (every variant index) is read inline, as
    /// [`Self::u64`] reads it.
    #[inline(always)]
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        match self.one_byte_varint() {
            Some(b) => Ok(u32::from(b)),
            None => self.u32_wide(),
        }
    }

    #[inline(never)]
    fn u32_wide(&mut self) -> Result<u32, DecodeError> {
        match self.u8()? {
            b @ 0..VARINT_U16 => Ok(u32::from(b)),
            VARINT_U16 => Ok(u32::from(u16::from_le_bytes(self.array()?))),
            VARINT_U32 => Ok(u32::from_le_bytes(self.array()?)),
            b => Err(DecodeError(format!(
                "cannot decode: invalid varint marker {b} for a u32"
            ))),
        }
    }

    /// A varint `i64` (zigzag, as bincode writes signed integers).
    #[inline]
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let v = self.u64()?;
        // Zigzag: even values are the non-negative ones.
        let half = (v >> 1) as i64;
        Ok(if v & 1 == 0 { half } else { !half })
    }

    /// An `f64`: its eight bytes, little-endian.
    #[inline]
    pub(crate) fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// A `bool`: exactly 0 or 1.
    #[inline]
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError(format!("cannot decode: invalid bool {b}"))),
        }
    }

    /// The tag of an `Option`: true for `Some` (its value follows).
    #[inline]
    pub(crate) fn option(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(DecodeError(format!(
                "cannot decode: invalid Option tag {b}"
            ))),
        }
    }

    /// The element count of a sequence. Each element takes at least
    /// `min_element_bytes` (at least 1), so a count the remaining bytes
    /// cannot hold is rejected before anything is allocated for it.
    #[inline(always)]
    pub(crate) fn len(&mut self, min_element_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n)
            .map_err(|_| DecodeError(format!("cannot decode: length {n} out of range")))?;
        if n.saturating_mul(min_element_bytes.max(1)) > self.rest.len() {
            return Err(truncated());
        }
        Ok(n)
    }

    /// A string, borrowed from the input; invalid UTF-8 is an error.
    #[inline]
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n)
            .map_err(|_| DecodeError(format!("cannot decode: length {n} out of range")))?;
        std::str::from_utf8(self.take(n)?)
            .map_err(|e| DecodeError(format!("cannot decode: invalid UTF-8: {e}")))
    }

    /// Steps over a string without checking it.
    #[inline(always)]
    fn skip_str(&mut self) -> Result<(), DecodeError> {
        self.str_bytes().map(|_| ())
    }

    /// A string's bytes, borrowed from the input and not UTF-8-checked.
    #[inline(always)]
    fn str_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n)
            .map_err(|_| DecodeError(format!("cannot decode: length {n} out of range")))?;
        self.take(n)
    }

    /// Like [`Self::str`], but a string equal to one of `known` is
    /// returned as that `&'static str` without a UTF-8 check.
    #[inline]
    pub(crate) fn str_or(&mut self, known: &[&'static str]) -> Result<&'a str, DecodeError> {
        let before = self.rest;
        let n = self.u64()?;
        for k in known {
            if k.len() as u64 == n
                && let Some(rest) = self.rest.strip_prefix(k.as_bytes())
            {
                self.rest = rest;
                return Ok(k);
            }
        }
        self.rest = before;
        self.str()
    }

    /// Succeeds when every byte was consumed.
    #[inline]
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError(format!(
                "{} trailing bytes after the record",
                self.rest.len()
            )))
        }
    }
}

/// Decodes a span record from a frame's tag and payload.
pub(crate) fn decode_span(tag: u8, payload: &[u8]) -> Result<StoredSpan, DecodeError> {
    match tag {
        TAG_SPAN_V1 => decode_span_wire(payload),
        other => Err(DecodeError(format!("unknown frame tag {other}"))),
    }
}

/// The trace and span ids of a span record, read without decoding the
/// rest: the project and resource attributes before them are stepped over
/// (not UTF-8-checked, nothing allocated), what follows them is not read.
/// For scans that need only which span a frame holds (what is live in a
/// segment, what compaction copies), where a whole decode cost most of the
/// scan. Bytes the whole decoder accepts give the ids it gives; a payload
/// damaged after the ids is not noticed here (the frame's CRC is checked
/// by the log, and `verify` decodes every span).
pub(crate) fn span_ids(tag: u8, payload: &[u8]) -> Result<([u8; 16], [u8; 8]), DecodeError> {
    if tag != TAG_SPAN_V1 {
        return Err(DecodeError(format!("unknown frame tag {tag}")));
    }
    let mut r = WireReader::new(payload);
    r.skip_str()?;
    skip_attributes(&mut r)?;
    Ok((r.array()?, r.array()?))
}

/// Steps over encoded attributes: nothing allocated, strings not
/// UTF-8-checked (what `read_attributes` would reject for that alone is
/// accepted).
fn skip_attributes(r: &mut WireReader<'_>) -> Result<(), DecodeError> {
    let n = r.len(MIN_KEY_VALUE_BYTES)?;
    for _ in 0..n {
        r.skip_str()?;
        skip_value(r)?;
    }
    Ok(())
}

/// Steps over one encoded attribute value, as [`skip_attributes`] does.
#[inline(always)]
fn skip_value(r: &mut WireReader<'_>) -> Result<(), DecodeError> {
    match r.u32()? {
        0 => r.skip_str()?,
        1 => {
            r.bool()?;
        }
        2 => {
            r.u64()?;
        }
        3 => {
            r.take(8)?;
        }
        4 => {
            for _ in 0..r.len(1)? {
                r.skip_str()?;
            }
        }
        5 => {
            for _ in 0..r.len(1)? {
                r.bool()?;
            }
        }
        6 => {
            for _ in 0..r.len(1)? {
                r.u64()?;
            }
        }
        7 => {
            let m = r.len(8)?;
            r.take(m.saturating_mul(8))?;
        }
        i => return Err(bad_variant("AttributeValue", i)),
    }
    Ok(())
}

/// The fewest bytes an encoded [`KeyValue`] takes: a key length, a
/// variant index and at least one byte of value.
const MIN_KEY_VALUE_BYTES: usize = 3;
/// An [`Event`]: a time, a name length and an attribute count.
const MIN_EVENT_BYTES: usize = 3;
/// A [`Link`]: two ids and an attribute count.
const MIN_LINK_BYTES: usize = 16 + 8 + 1;
/// Elements reserved up front for a sequence; longer ones grow as they
/// are read, so a corrupt count cannot reserve more than the bytes it
/// actually decodes.
const MAX_RESERVE: usize = 1024;

/// Decodes a span record (the payload of a [`TAG_SPAN_V1`] frame) in
/// bincode 2's wire format directly, the mirror of
/// [`encode_span_parts`]: every read of a span (a trace, verify,
/// compaction, export) goes through here. Through serde it
/// cost about 13,000 instructions per ~500 B span, most of them serde's
/// visitors around each attribute; this takes about 5,800. Accepts exactly what
/// `bincode::serde` accepts for a [`StoredSpan`] (property-tested in
/// `span_wire_tests`) and returns the same value.
fn decode_span_wire(payload: &[u8]) -> Result<StoredSpan, DecodeError> {
    let mut out = empty_span();
    decode_span_wire_into(payload, &mut out)?;
    Ok(out)
}

/// A span with no strings, attributes, events or links (nothing allocated):
/// what [`decode_span_into`] decodes into.
pub(crate) fn empty_span() -> StoredSpan {
    StoredSpan {
        project: String::new(),
        resource: Vec::new(),
        span: Span::new(TraceId([0; 16]), SpanId([0; 8]), None, "", 0, 0),
    }
}

/// [`decode_span`] into `out`, a span from [`empty_span`], written field by
/// field in place: a reader that decodes many spans into a vector (a trace)
/// would otherwise move each whole span several times on the way there.
/// On success `out` holds what `decode_span` returns; after an error it
/// holds parts of the record.
pub(crate) fn decode_span_into(
    tag: u8,
    payload: &[u8],
    out: &mut StoredSpan,
) -> Result<(), DecodeError> {
    match tag {
        TAG_SPAN_V1 => decode_span_wire_into(payload, out),
        other => Err(DecodeError(format!("unknown frame tag {other}"))),
    }
}

/// The body of [`decode_span_wire`]: every field of `out` is written.
fn decode_span_wire_into(payload: &[u8], out: &mut StoredSpan) -> Result<(), DecodeError> {
    let mut t = TextReader::new(payload);
    out.project = t.str()?.to_owned();
    out.resource = read_attributes(&mut t)?;
    let r = &mut t.r;
    let span = &mut out.span;
    span.trace_id = TraceId(r.array()?);
    span.span_id = SpanId(r.array()?);
    span.parent_span_id = if r.option()? {
        Some(SpanId(r.array()?))
    } else {
        None
    };
    span.name = t.str()?.to_owned();
    let r = &mut t.r;
    span.kind = span_kind(r)?;
    span.start_time_unix_nano = r.u64()?;
    span.end_time_unix_nano = r.u64()?;
    span.status.code = status_code(r)?;
    span.status.message = t.str()?.to_owned();
    span.attributes = read_attributes(&mut t)?;
    let n = t.r.len(MIN_EVENT_BYTES)?;
    let mut events = Vec::with_capacity(n.min(MAX_RESERVE));
    for _ in 0..n {
        events.push(Event {
            time_unix_nano: t.r.u64()?,
            name: t.str()?.to_owned(),
            attributes: read_attributes(&mut t)?,
        });
    }
    span.events = events;
    let n = t.r.len(MIN_LINK_BYTES)?;
    let mut links = Vec::with_capacity(n.min(MAX_RESERVE));
    for _ in 0..n {
        links.push(Link {
            trace_id: TraceId(t.r.array()?),
            span_id: SpanId(t.r.array()?),
            attributes: read_attributes(&mut t)?,
        });
    }
    span.links = links;
    t.r.finish()
}

/// A [`WireReader`] over a whole span record whose strings are UTF-8-checked
/// a stretch of the record at a time rather than one by one: a string not
/// in the stretch checked last starts a new one, the record's ASCII bytes
/// from the string's start on (strings, their lengths, variant indexes and
/// small numbers are all ASCII, so a stretch mostly runs from one id, time
/// or large number to the next and holds several strings), and a string in
/// it is a slice of it, which needs only its two ends to be character
/// boundaries. `core`'s check is fast on long runs and costs several
/// instructions a byte on short strings, which most of a span's are. A
/// string with other than ASCII in it is checked alone, as before.
///
/// Gives exactly [`WireReader::str`]'s strings and errors: a slice of a
/// checked `&str` holds the string's own bytes, and a string that is not
/// one (not valid UTF-8 on its own, or past where the stretch stops) is
/// checked alone, as `str` checks it.
struct TextReader<'a> {
    /// Reads the record; its rest is always a suffix of `record`.
    r: WireReader<'a>,
    /// The whole record.
    record: &'a [u8],
    /// Where `text` starts in `record`.
    text_at: usize,
    /// `record[text_at..text_at + text.len()]`, checked.
    text: &'a str,
}

impl<'a> TextReader<'a> {
    fn new(record: &'a [u8]) -> Self {
        TextReader {
            r: WireReader::new(record),
            record,
            text_at: 0,
            text: "",
        }
    }

    /// [`WireReader::str`], through the checked stretch.
    #[inline(always)]
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.r.u64()?;
        let n = usize::try_from(n)
            .map_err(|_| DecodeError(format!("cannot decode: length {n} out of range")))?;
        let at = self.record.len() - self.r.rest.len();
        let bytes = self.r.take(n)?;
        if let Some(s) = at
            .checked_sub(self.text_at)
            .and_then(|from| self.text.get(from..from.saturating_add(n)))
        {
            return Ok(s);
        }
        self.check_from(at, bytes)
    }

    /// `bytes`, the string at `at` of the record, when it is not in the
    /// checked stretch: a new stretch from there if it starts past the
    /// old one's end, else (or if it is not in the new one either) a
    /// check of the string alone.
    #[inline(never)]
    fn check_from(&mut self, at: usize, bytes: &'a [u8]) -> Result<&'a str, DecodeError> {
        if at >= self.text_at.saturating_add(self.text.len()) {
            let tail = self.record.get(at..).unwrap_or_default();
            let ascii = tail.get(..ascii_prefix(tail)).unwrap_or_default();
            self.text_at = at;
            // ASCII is UTF-8: this check cannot fail, and is `core`'s fast
            // one (the bytes are all ASCII).
            self.text = std::str::from_utf8(ascii).unwrap_or_default();
            if let Some(s) = self.text.get(..bytes.len()) {
                return Ok(s);
            }
        }
        std::str::from_utf8(bytes)
            .map_err(|e| DecodeError(format!("cannot decode: invalid UTF-8: {e}")))
    }
}

fn span_kind(r: &mut WireReader<'_>) -> Result<SpanKind, DecodeError> {
    Ok(match r.u32()? {
        0 => SpanKind::Unspecified,
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        i => return Err(bad_variant("SpanKind", i)),
    })
}

fn status_code(r: &mut WireReader<'_>) -> Result<StatusCode, DecodeError> {
    Ok(match r.u32()? {
        0 => StatusCode::Unset,
        1 => StatusCode::Ok,
        2 => StatusCode::Error,
        i => return Err(bad_variant("StatusCode", i)),
    })
}

/// A span record read for what the indexes take of it and nothing else
/// ([`FactsScratch::read`]), as a fresh scratch reads it: the project,
/// the span's facts ([`SpanInfo`]) and its session id with `sources`,
/// those `keys` was made with. For checks against the whole decoder.
pub(crate) fn decode_span_facts(
    tag: u8,
    payload: &[u8],
    keys: &FactKeys<'_>,
    sources: &[SessionIdSource],
) -> Result<(String, SpanInfo, Option<String>), DecodeError> {
    FactsScratch::new().read(tag, payload, keys, |f| f.facts(sources))
}

/// A span record read for its facts ([`FactsScratch::read`]): the
/// project, what [`SpanInfo`] takes besides attributes, and the first
/// attribute of each key of the [`FactKeys`] it was read with, in its
/// slot (an [`facts::Attributes`]). String values are borrowed from the
/// record.
pub(crate) struct SpanFacts<'a> {
    /// The span's project.
    pub(crate) project: &'a str,
    /// Its ids, times and status.
    pub(crate) head: SpanHead,
    slots: &'a [Slot<'a>],
    /// The [`facts::slot_bit`]s of the slots that hold a value.
    filled: u64,
    others: &'a [AttributeValue],
    keys: &'a FactKeys<'a>,
}

impl SpanFacts<'_> {
    /// The span's facts, with its user id, and its session id with
    /// `sources` (those the [`FactKeys`] it was read with were made with).
    pub(crate) fn facts(&self, sources: &[SessionIdSource]) -> (String, SpanInfo, Option<String>) {
        (
            self.project.to_owned(),
            SpanInfo::of_parts(self.head, self, facts::user_id(self)),
            facts::session_id(self, sources),
        )
    }

    #[inline(always)]
    fn value(&self, slot: usize) -> Option<facts::Value<'_>> {
        match self.slots.get(slot)? {
            Slot::Absent => None,
            Slot::Str(s) => Some(facts::Value::Str(s)),
            Slot::Other(i) => self.others.get(*i).map(facts::Value::of),
        }
    }
}

impl facts::Attributes for SpanFacts<'_> {
    #[inline(always)]
    fn fact(&self, f: facts::Fact) -> Option<facts::Value<'_>> {
        self.value(f.slot())
    }

    /// Source `i` of the sources [`Self::keys`] was made with: its key is
    /// that source's.
    #[inline(always)]
    fn source(&self, i: usize, _: &str) -> Option<facts::Value<'_>> {
        self.value(self.keys.source_slot(i)?)
    }

    #[inline(always)]
    fn any_source(&self) -> bool {
        self.filled & self.keys.source_bits() != 0
    }
}

/// What a [`SpanFacts`] holds of one key: nothing (the span has no
/// attribute with it), a string value borrowed from the record, or the
/// place of another value among those the scratch decoded.
#[derive(Clone, Copy, Debug)]
enum Slot<'p> {
    Absent,
    Str(&'p str),
    Other(usize),
}

/// Slots a span read for its facts holds on the stack: as many as the
/// facts' own keys and four more keys of session-id sources (the default
/// sources name three); more sources' keys take slots on the heap.
const STACK_SLOTS: usize = 16;

/// Where a replay reads spans for their facts, one after another
/// ([`FactsScratch::read`]): the project of the span read last (spans
/// nearly always name the one before's, which is then neither checked
/// nor copied again) and the kept values that are not strings, reused
/// from span to span. A replay reads millions of spans; an earlier reader
/// built each span's kept attributes as a span (every key and string
/// value copied, then looked up again by key for each fact, the input and
/// output copied once more), most of the reading thread's work.
pub(crate) struct FactsScratch {
    /// The project of the span read last.
    project: String,
    /// The bytes of the last span's project and resource, which the
    /// spans of one resource share: a span that starts with them has that
    /// project, and its resource is not walked again (the same bytes step
    /// over alike, and every length check in them passed with fewer bytes
    /// after them than any span holds). Empty after a failed read.
    prefix: Vec<u8>,
    /// Kept values that are not strings.
    others: Vec<AttributeValue>,
}

impl FactsScratch {
    /// Empty buffers.
    pub(crate) fn new() -> Self {
        FactsScratch {
            project: String::new(),
            prefix: Vec::new(),
            others: Vec::new(),
        }
    }

    /// Reads the span record `payload` (frame tag `tag`) for what the
    /// indexes take of it and nothing else, and gives it to `then`: the
    /// project, ids, parent, kind, times, status code and the first
    /// attribute of each key `keys` holds (those read of a span without a
    /// parent only when it has none). The name, status message, resource,
    /// other attributes, events and links are stepped over. The whole
    /// record is still walked, so a payload the whole decoder finds cut
    /// short, too long or holding an unknown variant is an error here
    /// too; what is stepped over is not UTF-8-checked (the frame's CRC is
    /// checked by the log, and `verify` decodes every span whole). Bytes
    /// the whole decoder accepts give the facts of the span it gives
    /// (property-tested in `span_wire_tests`, and fuzzed by the
    /// `record_decode` target).
    pub(crate) fn read<R>(
        &mut self,
        tag: u8,
        payload: &[u8],
        keys: &FactKeys<'_>,
        then: impl FnOnce(&SpanFacts<'_>) -> R,
    ) -> Result<R, DecodeError> {
        if tag != TAG_SPAN_V1 {
            return Err(DecodeError(format!("unknown frame tag {tag}")));
        }
        let mut stack = [Slot::Absent; STACK_SLOTS];
        let mut heap = Vec::new();
        let slots = match stack.get_mut(..keys.slots()) {
            Some(slots) => slots,
            None => {
                heap.resize(keys.slots(), Slot::Absent);
                &mut heap[..]
            }
        };
        let (head, filled) = read_facts(
            &mut self.project,
            &mut self.prefix,
            slots,
            &mut self.others,
            payload,
            keys,
        )?;
        Ok(then(&SpanFacts {
            project: &self.project,
            head,
            slots,
            filled,
            others: &self.others,
            keys,
        }))
    }
}

/// The body of [`FactsScratch::read`]: the project into `project`, each
/// kept attribute's first value into its slot of `slots` (a value that is
/// not a string into `others`), the rest returned with the
/// [`facts::slot_bit`]s of the slots filled.
#[inline(always)]
fn read_facts<'p>(
    project: &mut String,
    prefix: &mut Vec<u8>,
    slots: &mut [Slot<'p>],
    others: &mut Vec<AttributeValue>,
    payload: &'p [u8],
    keys: &FactKeys<'_>,
) -> Result<(SpanHead, u64), DecodeError> {
    let mut r = WireReader::new(payload);
    match payload.get(prefix.len()..) {
        // The last span's project and resource.
        Some(rest) if !prefix.is_empty() && payload.starts_with(prefix) => r.rest = rest,
        _ => {
            prefix.clear();
            // Spans of a replay nearly always name the project the one
            // before did: then it is neither checked nor copied again.
            let name = r.str_bytes()?;
            if project.as_bytes() != name {
                let name = std::str::from_utf8(name)
                    .map_err(|e| DecodeError(format!("cannot decode: invalid UTF-8: {e}")))?;
                project.clear();
                project.push_str(name);
            }
            skip_attributes(&mut r)?;
            if let Some(read) = payload.get(..payload.len() - r.rest.len()) {
                prefix.extend_from_slice(read);
            }
        }
    }
    let trace_id = r.array()?;
    let span_id = r.array()?;
    let parent = r.option_array::<8>()?;
    r.skip_str()?;
    // The kind checked as `span_kind` checks it, inline.
    match r.u32()? {
        0..=5 => {}
        i => return Err(bad_variant("SpanKind", i)),
    }
    let start = r.time()?;
    let end = r.time()?;
    let status = match r.u32()? {
        0 => StatusCode::Unset,
        1 => StatusCode::Ok,
        2 => StatusCode::Error,
        i => return Err(bad_variant("StatusCode", i)),
    };
    r.skip_str()?;
    let root = parent.is_none();
    let n = r.len(MIN_KEY_VALUE_BYTES)?;
    others.clear();
    let mut filled = 0;
    for _ in 0..n {
        let key = r.str_bytes()?;
        let Some(slot) = keys.find_slot(key, root) else {
            skip_value(&mut r)?;
            continue;
        };
        // A later attribute of a key already kept is read (and checked)
        // all the same, and dropped: the facts read the first.
        let value = match r.u32()? {
            // As `WireReader::str` and `read_value_of` read them, inline.
            0 => Slot::Str(
                std::str::from_utf8(r.str_bytes()?)
                    .map_err(|e| DecodeError(format!("cannot decode: invalid UTF-8: {e}")))?,
            ),
            variant => {
                let value = match variant {
                    // As `WireReader::i64` reads it (zigzag), inline.
                    2 => {
                        let v = r.u64()?;
                        let half = (v >> 1) as i64;
                        AttributeValue::Int(if v & 1 == 0 { half } else { !half })
                    }
                    _ => read_value_of(variant, &mut r)?,
                };
                others.push(value);
                Slot::Other(others.len() - 1)
            }
        };
        if let Some(s @ Slot::Absent) = slots.get_mut(slot) {
            *s = value;
            filled |= facts::slot_bit(slot);
        }
    }
    for _ in 0..r.len(MIN_EVENT_BYTES)? {
        r.u64()?;
        r.skip_str()?;
        skip_attributes(&mut r)?;
    }
    for _ in 0..r.len(MIN_LINK_BYTES)? {
        r.array::<16>()?;
        r.array::<8>()?;
        skip_attributes(&mut r)?;
    }
    r.finish()?;
    let head = SpanHead {
        trace_id,
        span_id,
        parent,
        start,
        end,
        status,
    };
    Ok((head, filled))
}

fn bad_variant(what: &str, index: u32) -> DecodeError {
    DecodeError(format!("cannot decode: no {what} variant {index}"))
}

/// How many bytes `bytes` starts with that are ASCII (below 0x80), looked
/// at eight at a time.
fn ascii_prefix(bytes: &[u8]) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut n = 0;
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let high = u64::from_le_bytes(word) & HIGH;
        if high != 0 {
            return n + high.trailing_zeros() as usize / 8;
        }
        n += 8;
    }
    let rest = words.remainder();
    n + rest.iter().position(|&b| b >= 0x80).unwrap_or(rest.len())
}

/// The mirror of `put_attributes`.
fn read_attributes(t: &mut TextReader<'_>) -> Result<Vec<KeyValue>, DecodeError> {
    let n = t.r.len(MIN_KEY_VALUE_BYTES)?;
    let mut attrs = Vec::with_capacity(n.min(MAX_RESERVE));
    for _ in 0..n {
        let key = t.str()?.to_owned();
        let value = read_value(t)?;
        attrs.push(KeyValue { key, value });
    }
    Ok(attrs)
}

/// One encoded attribute value: [`read_value_of`] of its variant index,
/// strings read through `t`'s checked stretch.
fn read_value(t: &mut TextReader<'_>) -> Result<AttributeValue, DecodeError> {
    Ok(match t.r.u32()? {
        0 => AttributeValue::String(t.str()?.to_owned()),
        4 => {
            let n = t.r.len(1)?;
            let mut out = Vec::with_capacity(n.min(MAX_RESERVE));
            for _ in 0..n {
                out.push(t.str()?.to_owned());
            }
            AttributeValue::StringArray(out)
        }
        variant => read_value_of(variant, &mut t.r)?,
    })
}

/// The value that follows variant index `variant`.
fn read_value_of(variant: u32, r: &mut WireReader<'_>) -> Result<AttributeValue, DecodeError> {
    Ok(match variant {
        0 => AttributeValue::String(r.str()?.to_owned()),
        1 => AttributeValue::Bool(r.bool()?),
        2 => AttributeValue::Int(r.i64()?),
        3 => AttributeValue::Double(r.f64()?),
        4 => AttributeValue::StringArray(read_seq(r, 1, |r| Ok(r.str()?.to_owned()))?),
        5 => AttributeValue::BoolArray(read_seq(r, 1, WireReader::bool)?),
        6 => AttributeValue::IntArray(read_seq(r, 1, WireReader::i64)?),
        7 => AttributeValue::DoubleArray(read_seq(r, 8, WireReader::f64)?),
        i => return Err(bad_variant("AttributeValue", i)),
    })
}

/// A sequence of elements of at least `min_bytes` bytes each.
fn read_seq<'a, T>(
    r: &mut WireReader<'a>,
    min_bytes: usize,
    mut element: impl FnMut(&mut WireReader<'a>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let n = r.len(min_bytes)?;
    let mut out = Vec::with_capacity(n.min(MAX_RESERVE));
    for _ in 0..n {
        out.push(element(r)?);
    }
    Ok(out)
}

/// Encodes a delete record; returns the frame tag.
pub(crate) fn encode_delete(rec: &DeleteRecord, buf: &mut Vec<u8>) -> Result<u8, DecodeError> {
    bincode::serde::encode_into_std_write(rec, buf, CONFIG)
        .map_err(|e| DecodeError(format!("cannot encode delete record: {e}")))?;
    Ok(TAG_DELETE_V1)
}

/// Decodes any log frame from its tag and payload.
pub(crate) fn decode_record(tag: u8, payload: &[u8]) -> Result<LogRecord, DecodeError> {
    match tag {
        TAG_SPAN_V1 => decode_span_wire(payload).map(|s| LogRecord::Span(Box::new(s))),
        TAG_DELETE_V1 => decode_exact(payload).map(LogRecord::Delete),
        other => Err(DecodeError(format!("unknown frame tag {other}"))),
    }
}

/// Encodes an index value.
pub(crate) fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    with_encoded(value, <[u8]>::to_vec)
}

/// A scratch buffer kept beyond this many bytes is given back after use,
/// so one huge value does not pin its memory to the thread.
const SCRATCH_KEEP: usize = 1 << 20;

std::thread_local! {
    /// Where [`with_encoded`] encodes: reused, so that encoding an index
    /// value needs neither an allocation nor a sizing pass.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An index value written in bincode 2's wire format directly, not
/// through serde: `put` appends exactly the bytes [`encode_value`] gives
/// for the same value (property-tested in `index::wire`). Serde writes a
/// `[u8; 8]` one byte at a time through the writer, and encoding turns
/// and trace records that way was about a twelfth of the indexing
/// thread's instructions.
pub(crate) trait Wire {
    /// Appends the value's encoding to `w`.
    fn put(&self, w: &mut Vec<u8>);
}

/// [`encode_value`] for a [`Wire`] value.
#[cfg(test)]
pub(crate) fn encode_wire<T: Wire>(value: &T) -> Vec<u8> {
    with_wire(value, <[u8]>::to_vec)
}

/// [`with_encoded`] for a [`Wire`] value.
pub(crate) fn with_wire<T: Wire, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    with_scratch(|buf| value.put(buf), f)
}

/// Calls `f` with the encoding of an index value (the bytes
/// [`encode_value`] returns), encoded once into a per-thread buffer.
/// (Sizing the value first and then encoding it into an exact `Vec`, as
/// this used to, ran bincode's serde path twice.)
pub(crate) fn with_encoded<T: Serialize, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    let encode = |buf: &mut Vec<u8>| {
        // Encoding into a Vec fails only if serde's Serialize impl fails,
        // which derived impls of our own types never do.
        if bincode::serde::encode_into_std_write(value, buf, CONFIG).is_err() {
            buf.clear();
        }
    };
    with_scratch(encode, f)
}

/// Calls `f` with what `encode` writes into the (cleared) per-thread buffer.
fn with_scratch<R>(encode: impl FnOnce(&mut Vec<u8>), f: impl FnOnce(&[u8]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            encode(&mut buf);
            let out = f(&buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            out
        }
        // `f` encoding another value: a buffer of its own.
        Err(_) => {
            let mut buf = Vec::new();
            encode(&mut buf);
            f(&buf)
        }
    })
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

    /// Every span kind, in variant order.
    pub(super) const ALL_SPAN_KINDS: [SpanKind; 6] = [
        SpanKind::Unspecified,
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    fn via_serde(rec: &StoredSpan) -> Vec<u8> {
        bincode::serde::encode_to_vec(rec, CONFIG).unwrap_or_default()
    }

    #[test]
    fn direct_encoding_matches_bincode() {
        use crate::model::{Event, Link, Status};
        let values = [
            AttributeValue::String("héllo".into()),
            AttributeValue::String("x".repeat(300)),
            AttributeValue::Bool(true),
            AttributeValue::Int(0),
            AttributeValue::Int(-1),
            AttributeValue::Int(250),
            AttributeValue::Int(i64::MIN),
            AttributeValue::Int(i64::MAX),
            AttributeValue::Double(-0.5),
            AttributeValue::Double(f64::NAN),
            AttributeValue::StringArray(vec!["a".into(), String::new()]),
            AttributeValue::BoolArray(vec![true, false]),
            AttributeValue::IntArray(vec![1, -70_000, 1 << 40]),
            AttributeValue::DoubleArray(vec![1.0, f64::INFINITY]),
        ];
        let attrs: Vec<KeyValue> = values
            .iter()
            .enumerate()
            .map(|(i, v)| KeyValue::new(format!("k{i}"), v.clone()))
            .collect();
        let times = [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        for (i, kind) in ALL_SPAN_KINDS.iter().enumerate() {
            let mut span = Span::new(
                TraceId([i as u8 + 1; 16]),
                SpanId([7; 8]),
                (i % 2 == 0).then_some(SpanId([3; 8])),
                "name",
                times[i % times.len()],
                times[(i + 3) % times.len()],
            );
            span.kind = *kind;
            span.status = Status {
                code: [StatusCode::Unset, StatusCode::Ok, StatusCode::Error][i % 3],
                message: "m".repeat(i * 100),
            };
            span.attributes = attrs.clone();
            span.events = vec![Event {
                time_unix_nano: times[i % times.len()],
                name: "exception".into(),
                attributes: attrs[..i].to_vec(),
            }];
            span.links = vec![Link {
                trace_id: TraceId([9; 16]),
                span_id: SpanId([8; 8]),
                attributes: attrs[i..].to_vec(),
            }];
            let rec = StoredSpan {
                project: "p".repeat(i * 60),
                resource: attrs[..i].to_vec(),
                span,
            };
            let mut direct = Vec::new();
            assert!(encode_span(&rec, &mut direct).is_ok());
            assert_eq!(direct, via_serde(&rec), "case {i}");
            assert_eq!(
                encoded_span_len(&rec.project, &rec.resource, &rec.span),
                direct.len(),
                "case {i}"
            );
            // NaN != NaN, so compare the decoded record by re-encoding it.
            let decoded = decode_span(TAG_SPAN_V1, &direct).map(|d| via_serde(&d));
            assert_eq!(decoded, Ok(direct.clone()), "case {i}");
        }
    }

    /// Golden bytes of a tombstone: the count, then the ids.
    #[test]
    fn delete_encoding_is_stable_and_round_trips() {
        let rec = DeleteRecord {
            traces: vec![[3; 16], [4; 16]],
        };
        let mut buf = Vec::new();
        assert_eq!(encode_delete(&rec, &mut buf).ok(), Some(TAG_DELETE_V1));
        let mut expected = vec![2];
        expected.extend_from_slice(&[3; 16]);
        expected.extend_from_slice(&[4; 16]);
        assert_eq!(buf, expected);
        assert_eq!(
            decode_record(TAG_DELETE_V1, &buf),
            Ok(LogRecord::Delete(rec))
        );
        // A span frame is not a delete, and the reverse.
        assert!(decode_span(TAG_DELETE_V1, &buf).is_err());
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

#[cfg(test)]
mod wire_tests {
    use proptest::prelude::*;

    use super::*;

    /// The varint writer before the marker and the bytes were written
    /// together: the model the current writers must match byte for byte.
    fn model_varint(w: &mut Vec<u8>, v: u64) {
        if v < 251 {
            w.push(v as u8);
        } else if let Ok(v) = u16::try_from(v) {
            w.push(251);
            w.extend_from_slice(&v.to_le_bytes());
        } else if let Ok(v) = u32::try_from(v) {
            w.push(252);
            w.extend_from_slice(&v.to_le_bytes());
        } else {
            w.push(253);
            w.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Values on both sides of every varint form's bounds.
    fn any_varint() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..300u64,
            65_000..70_000u64,
            (u64::from(u32::MAX) - 300)..(u64::from(u32::MAX) + 300),
            any::<u64>(),
            Just(u64::MAX),
        ]
    }

    proptest! {
        /// `put_varint`, `put_time` and `put_varint_inline` write the model's bytes (which are
        /// bincode's), after whatever the buffer held, and read back.
        #[test]
        fn varint_writers_write_the_models_bytes(
            values in proptest::collection::vec(any_varint(), 0..8),
            before in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let mut model = before.clone();
            let mut varint = before.clone();
            let mut time = before.clone();
            let mut inline = before.clone();
            for &v in &values {
                model_varint(&mut model, v);
                put_varint(&mut varint, v);
                put_time(&mut time, v);
                put_varint_inline(&mut inline, v);
                prop_assert_eq!(encode_value(&v), {
                    let mut one = Vec::new();
                    put_time(&mut one, v);
                    one
                });
            }
            prop_assert_eq!(&varint, &model);
            prop_assert_eq!(&time, &model);
            prop_assert_eq!(&inline, &model);
            let mut r = WireReader::new(&time[before.len()..]);
            for &v in &values {
                prop_assert_eq!(r.u64().ok(), Some(v));
            }
            prop_assert!(r.finish().is_ok());
        }
    }

    /// Every varint form bincode reads (including non-minimal ones) reads
    /// the same here, and the forms it rejects are rejected.
    #[test]
    fn varints_read_like_bincode() {
        let cases: &[&[u8]] = &[
            &[0],
            &[250],
            &[251, 0, 0],
            &[251, 0xff, 0xff],
            &[252, 1, 0, 0, 0],
            &[252, 0xff, 0xff, 0xff, 0xff],
            &[253, 1, 2, 3, 4, 5, 6, 7, 8],
            &[254, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            &[255],
            &[251, 0],
            &[253, 1, 2, 3],
            &[],
        ];
        for bytes in cases {
            let mut r = WireReader::new(bytes);
            let direct = r.u64().and_then(|v| r.finish().map(|()| v));
            assert_eq!(direct.ok(), decode_value::<u64>(bytes).ok(), "{bytes:?}");
            let mut r = WireReader::new(bytes);
            let direct = r.u32().and_then(|v| r.finish().map(|()| v));
            assert_eq!(direct.ok(), decode_value::<u32>(bytes).ok(), "{bytes:?}");
        }
    }

    #[test]
    fn strings_are_checked_and_borrowed() {
        let ok = encode_value(&"héllo".to_owned());
        assert_eq!(WireReader::new(&ok).str().ok(), Some("héllo"));
        // Invalid UTF-8, a length past the end.
        for bad in [&[2u8, 0xc3, 0x28][..], &[5, b'a']] {
            assert!(WireReader::new(bad).str().is_err());
            assert!(decode_value::<String>(bad).is_err());
        }
        // A known string is matched whole; anything else is read normally.
        let known = &["text/plain"];
        for s in ["text/plain", "text/plaim", "text/plai", "text/plain!", ""] {
            let bytes = encode_value(&s.to_owned());
            let mut r = WireReader::new(&bytes);
            assert_eq!(r.str_or(known).ok(), Some(s));
            assert!(r.finish().is_ok());
        }
        let bad = [
            10, b't', b'e', b'x', b't', b'/', 0xff, b'l', b'a', b'i', b'n',
        ];
        assert!(WireReader::new(&bad).str_or(known).is_err());
    }

    #[test]
    fn bools_options_and_lengths() {
        assert_eq!(WireReader::new(&[1]).bool().ok(), Some(true));
        assert!(WireReader::new(&[2]).bool().is_err());
        assert_eq!(WireReader::new(&[0]).option().ok(), Some(false));
        assert!(WireReader::new(&[2]).option().is_err());
        // Three elements of at least one byte each need three bytes.
        assert!(WireReader::new(&[3, 0, 0]).len(1).is_err());
        assert_eq!(WireReader::new(&[3, 0, 0, 0]).len(1).ok(), Some(3));
        assert!(WireReader::new(&[1, 0]).finish().is_err());
    }
}

#[cfg(test)]
mod span_wire_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::Status;

    /// What bincode's serde path makes of `bytes`, re-encoded (NaN != NaN,
    /// so decoded spans are compared by their bytes).
    fn via_bincode(bytes: &[u8]) -> Option<Vec<u8>> {
        decode_exact::<StoredSpan>(bytes)
            .ok()
            .map(|s| bincode::serde::encode_to_vec(&s, CONFIG).unwrap_or_default())
    }

    fn direct(bytes: &[u8]) -> Option<Vec<u8>> {
        decode_span_wire(bytes)
            .ok()
            .map(|s| bincode::serde::encode_to_vec(&s, CONFIG).unwrap_or_default())
    }

    fn u64s() -> impl Strategy<Value = u64> {
        prop_oneof![
            0..300u64,
            0..70_000u64,
            any::<u32>().prop_map(u64::from),
            any::<u64>()
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z.]{0,12}", ".{0,4}", "x{250,260}"]
    }

    fn value() -> impl Strategy<Value = AttributeValue> {
        prop_oneof![
            text().prop_map(AttributeValue::String),
            any::<bool>().prop_map(AttributeValue::Bool),
            any::<i64>().prop_map(AttributeValue::Int),
            any::<f64>().prop_map(AttributeValue::Double),
            proptest::collection::vec(text(), 0..4).prop_map(AttributeValue::StringArray),
            proptest::collection::vec(any::<bool>(), 0..4).prop_map(AttributeValue::BoolArray),
            proptest::collection::vec(any::<i64>(), 0..4).prop_map(AttributeValue::IntArray),
            proptest::collection::vec(any::<f64>(), 0..4).prop_map(AttributeValue::DoubleArray),
        ]
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        proptest::collection::vec(
            (text(), value()).prop_map(|(key, value)| KeyValue { key, value }),
            0..6,
        )
    }

    prop_compose! {
        fn stored_span()(
            project in text(),
            resource in attributes(),
            (trace, id, parent) in (any::<[u8; 16]>(), any::<[u8; 8]>(), proptest::option::of(any::<[u8; 8]>())),
            name in text(),
            (kind, code) in (0..6u8, 0..3u8),
            (start, end) in (u64s(), u64s()),
            message in text(),
            attrs in attributes(),
            events in proptest::collection::vec((u64s(), text(), attributes()), 0..3),
            links in proptest::collection::vec((any::<[u8; 16]>(), any::<[u8; 8]>(), attributes()), 0..3),
        ) -> StoredSpan {
            let codes = [StatusCode::Unset, StatusCode::Ok, StatusCode::Error];
            StoredSpan {
                project,
                resource,
                span: Span {
                    trace_id: TraceId(trace),
                    span_id: SpanId(id),
                    parent_span_id: parent.map(SpanId),
                    name,
                    kind: super::tests::ALL_SPAN_KINDS[usize::from(kind)],
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    status: Status { code: codes[usize::from(code)], message },
                    attributes: attrs,
                    events: events
                        .into_iter()
                        .map(|(time_unix_nano, name, attributes)| Event { time_unix_nano, name, attributes })
                        .collect(),
                    links: links
                        .into_iter()
                        .map(|(t, s, attributes)| Link { trace_id: TraceId(t), span_id: SpanId(s), attributes })
                        .collect(),
                },
            }
        }
    }

    /// Keys the span facts read (and the session-id sources below name),
    /// and some they do not.
    fn fact_key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "openinference.span.kind",
                "gen_ai.operation.name",
                "llm.token_count.prompt",
                "llm.token_count.completion",
                "llm.token_count.total",
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.output_tokens",
                "user.id",
                "input.value",
                "input.mime_type",
                "output.value",
                "output.mime_type",
                "session.id",
                "gen_ai.conversation.id",
                "metadata",
                "langfuse.session.id",
            ])
            .prop_map(str::to_owned),
            text(),
        ]
    }

    /// Values such keys hold: kinds, operations, counts (also as text),
    /// ids, metadata objects, and any other value.
    fn fact_value() -> impl Strategy<Value = AttributeValue> {
        prop_oneof![
            prop::sample::select(vec![
                "LLM",
                " llm ",
                "CHAIN",
                "chat",
                "embeddings",
                "12",
                "application/json",
                r#"{"session_id": "m1"}"#,
                r#"{"thread_id": 7, "conversation_id": " "}"#,
            ])
            .prop_map(|s| AttributeValue::String(s.to_owned())),
            (0..1_000i64).prop_map(AttributeValue::Int),
            value(),
        ]
    }

    /// Session-id sources: the defaults, or a list of one's own.
    fn sources() -> impl Strategy<Value = Vec<crate::index::facts::SessionIdSource>> {
        use crate::index::facts::SessionIdSource;
        prop_oneof![
            Just(SessionIdSource::defaults()),
            proptest::collection::vec(
                prop_oneof![
                    fact_key().prop_map(SessionIdSource::Attribute),
                    prop::sample::select(vec!["session_id", "thread_id", "x"])
                        .prop_map(|f| SessionIdSource::MetadataField(f.to_owned())),
                ],
                0..3,
            ),
            // Enough sources of their own keys to take more slots than a
            // read holds on the stack.
            proptest::collection::vec(
                prop_oneof![
                    fact_key().prop_map(SessionIdSource::Attribute),
                    "[a-z]{1,3}".prop_map(SessionIdSource::Attribute),
                ],
                4..10,
            ),
        ]
    }

    /// An edit of a valid encoding: a byte replaced, bytes cut off, or a
    /// byte inserted.
    #[derive(Debug, Clone)]
    enum Edit {
        Set(usize, u8),
        Truncate(usize),
        Insert(usize, u8),
    }

    /// Applies `edits` in order, each at its position modulo the length.
    fn apply_edits(bytes: &mut Vec<u8>, edits: Vec<Edit>) {
        for e in edits {
            match e {
                Edit::Set(i, b) if !bytes.is_empty() => {
                    let i = i % bytes.len();
                    bytes[i] = b;
                }
                Edit::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
                Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
                Edit::Set(..) => {}
            }
        }
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            any::<usize>().prop_map(Edit::Truncate),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        ]
    }

    /// Every byte of a span using every attribute type, an event and a
    /// link, replaced in turn by values that are invalid somewhere (a
    /// bool or option tag of 2, variant indexes past the last, varint
    /// markers): the direct decoder accepts exactly what bincode accepts.
    #[test]
    fn agrees_with_bincode_on_every_single_byte_edit() {
        let values = [
            AttributeValue::String("s".into()),
            AttributeValue::Bool(true),
            AttributeValue::Int(-3),
            AttributeValue::Double(0.5),
            AttributeValue::StringArray(vec!["a".into()]),
            AttributeValue::BoolArray(vec![false, true]),
            AttributeValue::IntArray(vec![7]),
            AttributeValue::DoubleArray(vec![1.5]),
        ];
        let attrs: Vec<KeyValue> = values.into_iter().map(|v| KeyValue::new("k", v)).collect();
        let mut span = Span::new(
            TraceId([1; 16]),
            SpanId([2; 8]),
            Some(SpanId([3; 8])),
            "n",
            5,
            6,
        );
        span.kind = SpanKind::Consumer;
        span.status.code = StatusCode::Error;
        span.attributes = attrs.clone();
        span.events = vec![Event {
            time_unix_nano: 9,
            name: "e".into(),
            attributes: attrs[..2].to_vec(),
        }];
        span.links = vec![Link {
            trace_id: TraceId([4; 16]),
            span_id: SpanId([5; 8]),
            attributes: attrs[2..].to_vec(),
        }];
        let rec = StoredSpan {
            project: "p".into(),
            resource: attrs,
            span,
        };
        let mut bytes = Vec::new();
        assert!(encode_span(&rec, &mut bytes).is_ok());
        assert_eq!(decode_span_wire(&bytes).ok(), Some(rec));
        let mut rejected = 0;
        for i in 0..bytes.len() {
            for b in [0, 1, 2, 3, 5, 6, 8, 9, 250, 251, 252, 253, 254, 255] {
                let mut edited = bytes.clone();
                edited[i] = b;
                let expected = via_bincode(&edited);
                rejected += usize::from(expected.is_none());
                assert_eq!(direct(&edited), expected, "byte {i} set to {b}");
            }
        }
        // The edits reach the error paths, not only valid variants.
        assert!(rejected > bytes.len());
    }

    /// The bytes of a string in a record: ASCII, any text, any bytes at
    /// all (mostly not UTF-8), a long ASCII run.
    fn string_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-z. ]{0,20}".prop_map(String::into_bytes),
            ".{0,6}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..10),
            "x{0,40}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        /// `TextReader::str` gives what `WireReader::str` gives, string by
        /// string, strings or errors, whatever lies between the strings
        /// (ASCII or not) and wherever the record is cut short.
        #[test]
        fn text_reader_reads_strings_as_wire_reader(
            parts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..4), string_bytes()),
                0..12,
            ),
            cut in any::<proptest::sample::Index>(),
            cut_short in any::<bool>(),
        ) {
            let mut rec = Vec::new();
            for (gap, text) in &parts {
                rec.extend_from_slice(gap);
                put_varint(&mut rec, text.len() as u64);
                rec.extend_from_slice(text);
            }
            if cut_short {
                rec.truncate(cut.index(rec.len() + 1));
            }
            let mut wire = WireReader::new(&rec);
            let mut text = TextReader::new(&rec);
            for (gap, _) in &parts {
                let a = wire.take(gap.len()).map(<[u8]>::to_vec);
                let b = text.r.take(gap.len()).map(<[u8]>::to_vec);
                prop_assert_eq!(&a, &b);
                if a.is_err() {
                    break;
                }
                let a = wire.str();
                let b = text.str();
                prop_assert_eq!(&a, &b);
                if a.is_err() {
                    break;
                }
            }
            prop_assert_eq!(wire.rest, text.r.rest);
        }

        #[test]
        fn ascii_prefix_is_the_bytes_below_0x80(
            bytes in proptest::collection::vec(
                prop_oneof![8 => 0u8..0x80, 1 => any::<u8>()],
                0..40,
            ),
        ) {
            let want = bytes.iter().position(|&b| b >= 0x80).unwrap_or(bytes.len());
            prop_assert_eq!(ascii_prefix(&bytes), want);
        }

        #[test]
        fn decodes_what_bincode_decodes(rec in stored_span()) {
            let mut bytes = Vec::new();
            prop_assert!(encode_span(&rec, &mut bytes).is_ok());
            let expected = via_bincode(&bytes);
            prop_assert!(expected.is_some());
            prop_assert_eq!(direct(&bytes), expected);
            // What `append` counts for validation and announces to the log
            // before encoding, summed from the parts' lengths as it is,
            // and as each byte is counted.
            prop_assert_eq!(encoded_span_len(&rec.project, &rec.resource, &rec.span), bytes.len());
            let mut counted = ByteCount(0);
            put_prefix(&mut counted, &rec.project, &rec.resource);
            prop_assert_eq!(encoded_prefix_len(&rec.project, &rec.resource), counted.0);
            let mut prefix = Vec::new();
            put_prefix(&mut prefix, &rec.project, &rec.resource);
            prop_assert!(bytes.starts_with(&prefix));
            let mut counted = ByteCount(0);
            put_span_body(&mut counted, &rec.span);
            prop_assert_eq!(encoded_body_len(&rec.span), counted.0);
            prop_assert_eq!(prefix.len() + counted.0, bytes.len());
        }

        /// Corrupt payloads: the direct decoder accepts exactly what
        /// bincode accepts, decodes it to the same span, and never panics.
        #[test]
        fn agrees_with_bincode_on_corrupt_bytes(
            rec in stored_span(),
            edits in proptest::collection::vec(edit(), 1..4),
        ) {
            let mut bytes = Vec::new();
            prop_assert!(encode_span(&rec, &mut bytes).is_ok());
            apply_edits(&mut bytes, edits);
            prop_assert_eq!(direct(&bytes), via_bincode(&bytes));
        }

        #[test]
        fn agrees_with_bincode_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(direct(&bytes), via_bincode(&bytes));
        }

        /// A span read for its facts has the facts of the whole span:
        /// the same `SpanInfo`, session id (whatever the sources) and
        /// project, for every span and for any edit of one the whole
        /// decoder takes.
        #[test]
        fn facts_decode_gives_the_facts_of_the_whole_span(
            mut rec in stored_span(),
            mut facts in proptest::collection::vec((fact_key(), fact_value()), 0..8),
            metadata in proptest::option::of(prop::sample::select(vec![
                r#"{"session_id": "m1"}"#,
                r#"{"thread_id": 7, "conversation_id": " "}"#,
                "not json",
            ])),
            (shuffle, sources) in (any::<u64>(), sources()),
            edits in proptest::collection::vec(edit(), 0..3),
        ) {
            use crate::index::facts::session_id;
            // The fact attributes go among the span's own, in an order of
            // the seed's choosing (a key may repeat: the first one counts).
            if let Some(m) = metadata {
                facts.push(("metadata".to_owned(), AttributeValue::String(m.to_owned())));
            }
            for (i, (key, value)) in facts.into_iter().enumerate() {
                let at = usize::try_from(shuffle.rotate_left(u32::try_from(i).unwrap_or(0) * 7) % 64)
                    .unwrap_or(0)
                    .min(rec.span.attributes.len());
                rec.span.attributes.insert(at, KeyValue { key, value });
            }
            let mut bytes = Vec::new();
            prop_assert!(encode_span(&rec, &mut bytes).is_ok());
            apply_edits(&mut bytes, edits);
            let Ok(whole) = decode_span_wire(&bytes) else {
                return Ok(());
            };
            let fact_keys = FactKeys::new(&sources);
            let read = decode_span_facts(TAG_SPAN_V1, &bytes, &fact_keys, &sources);
            prop_assert!(read.is_ok(), "{:?}", read.err());
            let Ok((project, info, id)) = read else { return Ok(()) };
            prop_assert_eq!(&project, &whole.project);
            prop_assert_eq!(info, SpanInfo::of(&whole.span));
            prop_assert_eq!(id, session_id(&whole.span, &sources));
            prop_assert!(decode_span_facts(TAG_DELETE_V1, &bytes, &fact_keys, &sources).is_err());
        }

        /// Spans read for their facts one after another through one
        /// scratch give what reading each afresh gives: nothing of the
        /// span before is left (its project, its kept attributes or their
        /// values, whatever their kinds), and a failed read is a failure
        /// either way.
        #[test]
        fn facts_read_after_another_span_is_a_fresh_read(
            (a, b) in (stored_span(), stored_span()),
            (fa, fb) in (
                proptest::collection::vec((fact_key(), fact_value()), 0..8),
                proptest::collection::vec((fact_key(), fact_value()), 0..8),
            ),
            sources in sources(),
            edits in proptest::collection::vec(edit(), 0..3),
        ) {
            let encoded = |mut rec: StoredSpan, facts: Vec<(String, AttributeValue)>| {
                for (i, (key, value)) in facts.into_iter().enumerate() {
                    let at = (i * 3).min(rec.span.attributes.len());
                    rec.span.attributes.insert(at, KeyValue { key, value });
                }
                let mut bytes = Vec::new();
                encode_span(&rec, &mut bytes).map(|_| bytes)
            };
            // The second span under the first's project and resource too
            // (the bytes a read may step over as the last span's).
            let shared = StoredSpan {
                project: a.project.clone(),
                resource: a.resource.clone(),
                span: b.span.clone(),
            };
            let (Ok(first), Ok(mut second), Ok(third)) =
                (encoded(a, fa), encoded(b, fb.clone()), encoded(shared, fb))
            else {
                return Err(TestCaseError::fail("a generated span did not encode"));
            };
            let mut third_edited = third.clone();
            apply_edits(&mut third_edited, edits.clone());
            apply_edits(&mut second, edits);
            let fact_keys = FactKeys::new(&sources);
            let form = |read: Result<(String, SpanInfo, Option<String>), DecodeError>| {
                read.map_err(|e| e.to_string())
            };
            prop_assert!(decode_span_facts(TAG_SPAN_V1, &first, &fact_keys, &sources).is_ok());
            let mut scratch = FactsScratch::new();
            for bytes in [
                &first, &second, &first, &second, &second, &first, &third, &third_edited, &third,
                &first, &third_edited,
            ] {
                let read = scratch.read(TAG_SPAN_V1, bytes, &fact_keys, |f| f.facts(&sources));
                prop_assert_eq!(
                    form(read),
                    form(decode_span_facts(TAG_SPAN_V1, bytes, &fact_keys, &sources))
                );
            }
        }

        /// `WireReader::time` and `option_array` read what `u64`, and
        /// `option` then `array`, read, from any bytes (the forms they
        /// read inline among them), leaving the same rest, and fail where
        /// those fail.
        #[test]
        fn inline_readers_read_as_the_plain_ones(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..12),
                (any::<u64>(), 0..12usize).prop_map(|(v, cut)| {
                    let mut b = vec![VARINT_U64];
                    b.extend_from_slice(&v.to_le_bytes());
                    b.truncate(cut);
                    b
                }),
                (0..3u8, any::<[u8; 8]>(), 0..12usize).prop_map(|(tag, v, cut)| {
                    let mut b = vec![tag];
                    b.extend_from_slice(&v);
                    b.truncate(cut);
                    b
                }),
            ],
        ) {
            let mut plain = WireReader::new(&bytes);
            let mut inline = WireReader::new(&bytes);
            let want = plain.u64();
            let got = inline.time();
            prop_assert_eq!(&got, &want);
            if want.is_ok() {
                prop_assert_eq!(inline.rest, plain.rest);
            }
            let mut plain = WireReader::new(&bytes);
            let mut inline = WireReader::new(&bytes);
            let want = plain
                .option()
                .and_then(|some| if some { plain.array::<8>().map(Some) } else { Ok(None) });
            let got = inline.option_array::<8>();
            prop_assert_eq!(&got, &want);
            if want.is_ok() {
                prop_assert_eq!(inline.rest, plain.rest);
            }
        }

        /// `span_ids` reads the ids of every span, and of any edit of one
        /// that the whole decoder takes, as the whole decoder does; it
        /// never panics on the rest.
        #[test]
        fn span_ids_are_the_decoded_ids(
            rec in stored_span(),
            edits in proptest::collection::vec(edit(), 0..3),
        ) {
            let mut bytes = Vec::new();
            prop_assert!(encode_span(&rec, &mut bytes).is_ok());
            prop_assert_eq!(
                span_ids(TAG_SPAN_V1, &bytes).ok(),
                Some((rec.span.trace_id.0, rec.span.span_id.0))
            );
            apply_edits(&mut bytes, edits);
            let ids = span_ids(TAG_SPAN_V1, &bytes);
            if let Ok(span) = decode_span_wire(&bytes) {
                prop_assert_eq!(ids.ok(), Some((span.span.trace_id.0, span.span.span_id.0)));
            }
            prop_assert!(span_ids(TAG_DELETE_V1, &bytes).is_err());
        }
    }
}

//! The index values written on every group ([`TraceRecord`], [`TurnBody`],
//! [`SessionState`]) encoded in bincode 2's wire format directly (see
//! [`Wire`]). Field by field in declaration order, as serde
//! encodes them: integers as varints, `u8` arrays byte for byte, `Option`
//! as a 0/1 tag before the value, strings and sequences after their
//! length, unit enum variants as their index. Session summaries, read
//! and rewritten for every session a group touches, and trace records,
//! read by every `trace` call, are also decoded that way
//! ([`SessionState::decode`], [`TraceRecord::decode`]; turns have
//! `TurnView`); the rest is decoded by bincode. The tests below check the bytes, and the
//! decoded values, are bincode's.

use crate::codec::{
    DecodeError, Wire, WireReader, put_len, put_str, put_time, put_varint, put_varint_inline,
};
use crate::model::{COMMON_MIME_TYPES, IoValue, Tokens, TraceStatus, mime_type_of};

use super::session::SessionState;
use super::trace::{Earliest, Filing, RootInfo, SpanFact, TraceRecord, TurnBody};

impl<T: Wire> Wire for Option<T> {
    fn put(&self, w: &mut Vec<u8>) {
        match self {
            None => w.push(0),
            Some(v) => {
                w.push(1);
                v.put(w);
            }
        }
    }
}

impl<T: Wire> Wire for [T] {
    fn put(&self, w: &mut Vec<u8>) {
        put_len(w, self.len());
        for v in self {
            v.put(w);
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, w: &mut Vec<u8>) {
        self.as_slice().put(w);
    }
}

impl Wire for u64 {
    fn put(&self, w: &mut Vec<u8>) {
        put_varint(w, *self);
    }
}

impl Wire for u32 {
    fn put(&self, w: &mut Vec<u8>) {
        put_varint(w, u64::from(*self));
    }
}

impl Wire for bool {
    fn put(&self, w: &mut Vec<u8>) {
        w.push(u8::from(*self));
    }
}

impl<const N: usize> Wire for [u8; N] {
    fn put(&self, w: &mut Vec<u8>) {
        w.extend_from_slice(self);
    }
}

impl Wire for String {
    fn put(&self, w: &mut Vec<u8>) {
        put_str(w, self);
    }
}

impl Wire for Tokens {
    #[inline]
    fn put(&self, w: &mut Vec<u8>) {
        put_varint_inline(w, self.prompt);
        put_varint_inline(w, self.completion);
        put_varint_inline(w, self.total);
    }
}

impl Wire for TraceStatus {
    fn put(&self, w: &mut Vec<u8>) {
        w.push(match self {
            TraceStatus::Unset => 0,
            TraceStatus::Ok => 1,
            TraceStatus::Error => 2,
        });
    }
}

impl Wire for IoValue {
    fn put(&self, w: &mut Vec<u8>) {
        put_str(w, &self.value);
        put_mime_type(w, &self.mime_type);
    }
}

/// A mime type, as `put_str` writes it: the common ones as constants
/// (their length and bytes in one write, no copy call).
#[inline]
fn put_mime_type(w: &mut Vec<u8>, mime_type: &str) {
    match mime_type {
        "text/plain" => w.extend_from_slice(b"\x0atext/plain"),
        "application/json" => w.extend_from_slice(b"\x10application/json"),
        other => put_str(w, other),
    }
}

/// An optional root input or output, as `Option::put` writes it: the tag
/// and a one-byte length in one write.
fn put_io(w: &mut Vec<u8>, io: &Option<IoValue>) {
    match io {
        None => w.push(0),
        Some(v) => {
            match u8::try_from(v.value.len()) {
                Ok(n) if n < 251 => w.extend_from_slice(&[1, n]),
                _ => {
                    w.push(1);
                    put_len(w, v.value.len());
                }
            }
            w.extend_from_slice(v.value.as_bytes());
            put_mime_type(w, &v.mime_type);
        }
    }
}

impl Wire for SpanFact {
    #[inline]
    fn put(&self, w: &mut Vec<u8>) {
        // The span id and the parent (its tag and id) in one write.
        match self.parent {
            None => {
                let mut b = [0u8; 9];
                b[..8].copy_from_slice(&self.span_id);
                w.extend_from_slice(&b);
            }
            Some(p) => {
                let mut b = [1u8; 17];
                b[..8].copy_from_slice(&self.span_id);
                b[9..].copy_from_slice(&p);
                w.extend_from_slice(&b);
            }
        }
        put_time(w, self.start);
        put_varint_inline(w, self.lsn);
    }
}

impl Wire for Earliest {
    fn put(&self, w: &mut Vec<u8>) {
        put_time(w, self.start);
        self.span_id.put(w);
        self.value.put(w);
    }
}

impl Wire for RootInfo {
    fn put(&self, w: &mut Vec<u8>) {
        self.span_id.put(w);
        put_time(w, self.start);
        self.project.put(w);
        self.session_id.put(w);
    }
}

/// An optional [`Earliest`], as `Option::put` writes it: the tag, a start
/// above `u32::MAX` (nine bytes) and the span id in one write.
fn put_earliest(w: &mut Vec<u8>, e: &Option<Earliest>) {
    match e {
        None => w.push(0),
        Some(e) if e.start > u64::from(u32::MAX) => {
            let mut b = [1u8; 18];
            b[1] = 253;
            b[2..10].copy_from_slice(&e.start.to_le_bytes());
            b[10..].copy_from_slice(&e.span_id);
            w.extend_from_slice(&b);
            put_str(w, &e.value);
        }
        Some(e) => {
            w.push(1);
            e.put(w);
        }
    }
}

/// An optional [`RootInfo`], as `Option::put` writes it: the tag, the
/// span id and a start above `u32::MAX` (nine bytes) in one write.
fn put_root(w: &mut Vec<u8>, r: &Option<RootInfo>) {
    match r {
        None => w.push(0),
        Some(r) if r.start > u64::from(u32::MAX) => {
            let mut b = [1u8; 18];
            b[1..9].copy_from_slice(&r.span_id);
            b[9] = 253;
            b[10..].copy_from_slice(&r.start.to_le_bytes());
            w.extend_from_slice(&b);
            put_str(w, &r.project);
            r.session_id.put(w);
        }
        Some(r) => {
            w.push(1);
            r.put(w);
        }
    }
}

/// An optional [`Filing`], as `Option::put` writes it: with a session
/// number below 65,536 and a start above `u32::MAX` (nine bytes), all in
/// one write.
fn put_filing(w: &mut Vec<u8>, f: &Option<Filing>) {
    match f {
        Some(f) if f.start > u64::from(u32::MAX) && f.session < 251 => {
            let mut b = [1u8; 11];
            b[1] = f.session as u8;
            b[2] = 253;
            b[3..].copy_from_slice(&f.start.to_le_bytes());
            w.extend_from_slice(&b);
        }
        Some(f) if f.start > u64::from(u32::MAX) && f.session <= u64::from(u16::MAX) => {
            let mut b = [1u8; 13];
            b[1] = 251;
            b[2..4].copy_from_slice(&(f.session as u16).to_le_bytes());
            b[4] = 253;
            b[5..].copy_from_slice(&f.start.to_le_bytes());
            w.extend_from_slice(&b);
        }
        None => w.push(0),
        Some(f) => {
            w.push(1);
            f.put(w);
        }
    }
}

impl Wire for Filing {
    fn put(&self, w: &mut Vec<u8>) {
        self.session.put(w);
        put_time(w, self.start);
    }
}

impl Wire for TraceRecord {
    fn put(&self, w: &mut Vec<u8>) {
        // Every field, so that a field added to the type and not here
        // fails to compile.
        let TraceRecord {
            spans,
            start,
            end,
            tokens,
            any_error,
            any_ok,
            root,
            earliest_project,
            earliest_session,
            session_ids,
            more_session_ids,
            user,
            filing,
        } = self;
        w.reserve(spans.len() * 24 + 64);
        spans.put(w);
        put_time(w, *start);
        put_time(w, *end);
        tokens.put(w);
        w.extend_from_slice(&[u8::from(*any_error), u8::from(*any_ok)]);
        put_root(w, root);
        put_earliest(w, earliest_project);
        put_earliest(w, earliest_session);
        session_ids.put(w);
        more_session_ids.put(w);
        put_earliest(w, user);
        put_filing(w, filing);
    }
}

impl Wire for TurnBody {
    fn put(&self, w: &mut Vec<u8>) {
        let TurnBody {
            end,
            head_span_id,
            root_missing,
            input,
            output,
            tokens,
            status,
            num_spans,
            conflicts,
            user,
            more_conflicts,
        } = self;
        put_time(w, *end);
        // The head's id and the root_missing flag in one write.
        let mut b = [u8::from(*root_missing); 9];
        b[..8].copy_from_slice(head_span_id);
        w.extend_from_slice(&b);
        put_io(w, input);
        put_io(w, output);
        tokens.put(w);
        status.put(w);
        num_spans.put(w);
        conflicts.put(w);
        put_earliest(w, user);
        more_conflicts.put(w);
    }
}

/// `(trace start, trace id, root input or output)` of a session summary.
impl Wire for (u64, [u8; 16], IoValue) {
    fn put(&self, w: &mut Vec<u8>) {
        put_time(w, self.0);
        self.1.put(w);
        self.2.put(w);
    }
}

/// `(span start, trace id, span id, user)` of a session summary.
impl Wire for (u64, [u8; 16], [u8; 8], String) {
    fn put(&self, w: &mut Vec<u8>) {
        put_time(w, self.0);
        self.1.put(w);
        self.2.put(w);
        self.3.put(w);
    }
}

/// A summary's optional first input or last output, as `Option::put`
/// writes it: the tag, a start above `u32::MAX` (nine bytes) and the
/// trace id in one write.
fn put_endpoint(w: &mut Vec<u8>, e: &Option<(u64, [u8; 16], IoValue)>) {
    match e {
        Some((start, trace_id, io)) if *start > u64::from(u32::MAX) => {
            let mut b = [1u8; 26];
            b[1] = 253;
            b[2..10].copy_from_slice(&start.to_le_bytes());
            b[10..].copy_from_slice(trace_id);
            w.extend_from_slice(&b);
            io.put(w);
        }
        e => e.put(w),
    }
}

/// A summary's optional user, as `Option::put` writes it: the tag, a
/// start above `u32::MAX` (nine bytes), the trace id and the span id in
/// one write.
fn put_session_user(w: &mut Vec<u8>, u: &Option<(u64, [u8; 16], [u8; 8], String)>) {
    match u {
        Some((start, trace_id, span_id, user)) if *start > u64::from(u32::MAX) => {
            let mut b = [1u8; 34];
            b[1] = 253;
            b[2..10].copy_from_slice(&start.to_le_bytes());
            b[10..26].copy_from_slice(trace_id);
            b[26..].copy_from_slice(span_id);
            w.extend_from_slice(&b);
            put_str(w, user);
        }
        u => u.put(w),
    }
}

impl Wire for SessionState {
    fn put(&self, w: &mut Vec<u8>) {
        let SessionState {
            project_id,
            project,
            session_id,
            num_traces,
            num_errors,
            tokens,
            start,
            end,
            first_input,
            last_output,
            user,
        } = self;
        project_id.put(w);
        project.put(w);
        session_id.put(w);
        num_traces.put(w);
        num_errors.put(w);
        tokens.put(w);
        put_time(w, *start);
        put_time(w, *end);
        put_endpoint(w, first_input);
        put_endpoint(w, last_output);
        put_session_user(w, user);
    }
}

impl SessionState {
    /// Decodes a stored summary field by field (the mirror of its
    /// [`Wire`] encoding), accepting exactly what bincode accepts and
    /// returning the same value; through serde this was about 7,000
    /// instructions per summary, on every session a group touches.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = WireReader::new(bytes);
        let project_id = r.u32()?;
        let project = r.str()?.to_owned();
        let session_id = r.str()?.to_owned();
        let num_traces = r.u64()?;
        let num_errors = r.u64()?;
        let tokens = Tokens {
            prompt: r.u64()?,
            completion: r.u64()?,
            total: r.u64()?,
        };
        let start = r.u64()?;
        let end = r.u64()?;
        let first_input = read_endpoint(&mut r)?;
        let last_output = read_endpoint(&mut r)?;
        let user = if r.option()? {
            Some((r.u64()?, r.array()?, r.array()?, r.str()?.to_owned()))
        } else {
            None
        };
        r.finish()?;
        Ok(SessionState {
            project_id,
            project,
            session_id,
            num_traces,
            num_errors,
            tokens,
            start,
            end,
            first_input,
            last_output,
            user,
        })
    }
}

/// A fact is at least 8 (span id) + 1 (parent tag) + 1 + 1 bytes.
const MIN_FACT_BYTES: usize = 11;

fn read_fact(r: &mut WireReader<'_>) -> Result<SpanFact, DecodeError> {
    Ok(SpanFact {
        span_id: r.array()?,
        parent: if r.option()? { Some(r.array()?) } else { None },
        start: r.u64()?,
        lsn: r.u64()?,
    })
}

impl TraceRecord {
    /// The span ids and LSNs of a stored trace record (its first field),
    /// in span id order, without decoding the rest: what a liveness check
    /// needs. A record [`Self::decode`] accepts gives its facts' ids and
    /// LSNs.
    pub(crate) fn span_locations(bytes: &[u8]) -> Result<Vec<([u8; 8], u64)>, DecodeError> {
        let mut r = WireReader::new(bytes);
        let n = r.len(MIN_FACT_BYTES)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let f = read_fact(&mut r)?;
            out.push((f.span_id, f.lsn));
        }
        Ok(out)
    }

    /// Decodes a stored trace record field by field (the mirror of its
    /// [`Wire`] encoding), accepting exactly what bincode accepts and
    /// returning the same value. Through serde a record of 29 spans took
    /// about 80,000 instructions, a seventh of a `trace` call.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = WireReader::new(bytes);
        let n = r.len(MIN_FACT_BYTES)?;
        let mut spans = Vec::with_capacity(n);
        for _ in 0..n {
            spans.push(read_fact(&mut r)?);
        }
        let start = r.u64()?;
        let end = r.u64()?;
        let tokens = Tokens {
            prompt: r.u64()?,
            completion: r.u64()?,
            total: r.u64()?,
        };
        let any_error = r.bool()?;
        let any_ok = r.bool()?;
        let root = if r.option()? {
            Some(RootInfo {
                span_id: r.array()?,
                start: r.u64()?,
                project: r.str()?.to_owned(),
                session_id: if r.option()? {
                    Some(r.str()?.to_owned())
                } else {
                    None
                },
            })
        } else {
            None
        };
        let earliest_project = read_earliest(&mut r)?;
        let earliest_session = read_earliest(&mut r)?;
        // A string is at least its length byte.
        let n = r.len(1)?;
        let mut session_ids = Vec::with_capacity(n);
        for _ in 0..n {
            session_ids.push(r.str()?.to_owned());
        }
        let more_session_ids = r.bool()?;
        let user = read_earliest(&mut r)?;
        let filing = if r.option()? {
            Some(Filing {
                session: r.u64()?,
                start: r.u64()?,
            })
        } else {
            None
        };
        r.finish()?;
        Ok(TraceRecord {
            spans,
            start,
            end,
            tokens,
            any_error,
            any_ok,
            root,
            earliest_project,
            earliest_session,
            session_ids,
            more_session_ids,
            user,
            filing,
        })
    }
}

/// An optional [`Earliest`].
fn read_earliest(r: &mut WireReader<'_>) -> Result<Option<Earliest>, DecodeError> {
    if !r.option()? {
        return Ok(None);
    }
    Ok(Some(Earliest {
        start: r.u64()?,
        span_id: r.array()?,
        value: r.str()?.to_owned(),
    }))
}

/// `(trace start, trace id, input or output)`, optional.
fn read_endpoint(r: &mut WireReader<'_>) -> Result<Option<(u64, [u8; 16], IoValue)>, DecodeError> {
    if !r.option()? {
        return Ok(None);
    }
    let start = r.u64()?;
    let trace_id = r.array()?;
    let value = r.str()?.to_owned();
    let mime_type = mime_type_of(r.str_or(&COMMON_MIME_TYPES)?);
    Ok(Some((start, trace_id, IoValue { value, mime_type })))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{encode_value, encode_wire};

    fn any_u64() -> impl Strategy<Value = u64> {
        prop_oneof![0..300u64, 0..70_000u64, 0..(1u64 << 33), any::<u64>()]
    }

    fn tokens() -> impl Strategy<Value = Tokens> {
        (any_u64(), any_u64(), any_u64()).prop_map(|(prompt, completion, total)| Tokens {
            prompt,
            completion,
            total,
        })
    }

    fn text() -> impl Strategy<Value = String> {
        // Lengths on both sides of the one-byte varint (250).
        prop_oneof![".{0,12}", ".{240,260}"]
    }

    fn io() -> impl Strategy<Value = IoValue> {
        (
            text(),
            prop_oneof![
                Just("text/plain".to_owned()),
                Just("application/json".to_owned()),
                ".{0,12}"
            ],
        )
            .prop_map(|(value, mime)| IoValue::new(value, &mime))
    }

    fn earliest() -> impl Strategy<Value = Earliest> {
        (any_u64(), any::<[u8; 8]>(), text()).prop_map(|(start, span_id, value)| Earliest {
            start,
            span_id,
            value,
        })
    }

    fn status() -> impl Strategy<Value = TraceStatus> {
        prop_oneof![
            Just(TraceStatus::Unset),
            Just(TraceStatus::Ok),
            Just(TraceStatus::Error)
        ]
    }

    prop_compose! {
        fn record()(
            spans in proptest::collection::vec(
                (any::<[u8; 8]>(), proptest::option::of(any::<[u8; 8]>()), any_u64(), any_u64()),
                0..300,
            ),
            (start, end) in (any_u64(), any_u64()),
            tokens in tokens(),
            (any_error, any_ok) in (any::<bool>(), any::<bool>()),
            root in proptest::option::of(
                (any::<[u8; 8]>(), any_u64(), text(), proptest::option::of(text())),
            ),
            earliest_project in proptest::option::of(earliest()),
            earliest_session in proptest::option::of(earliest()),
            (session_ids, more_session_ids) in
                (proptest::collection::vec(text(), 0..3), any::<bool>()),
            user in proptest::option::of(earliest()),
            filing in proptest::option::of((any_u64(), any_u64())),
        ) -> TraceRecord {
            TraceRecord {
                spans: spans
                    .into_iter()
                    .map(|(span_id, parent, start, lsn)| SpanFact { span_id, parent, start, lsn })
                    .collect(),
                start,
                end,
                tokens,
                any_error,
                any_ok,
                root: root.map(|(span_id, start, project, session_id)| RootInfo {
                    span_id,
                    start,
                    project,
                    session_id,
                }),
                earliest_project,
                earliest_session,
                session_ids,
                more_session_ids,
                user,
                filing: filing.map(|(session, start)| Filing { session, start }),
            }
        }
    }

    prop_compose! {
        fn turn()(
            (end, num_spans) in (any_u64(), any_u64()),
            head_span_id in any::<[u8; 8]>(),
            root_missing in any::<bool>(),
            input in proptest::option::of(io()),
            output in proptest::option::of(io()),
            tokens in tokens(),
            status in status(),
            (conflicts, more_conflicts) in
                (proptest::collection::vec(text(), 0..3), any::<bool>()),
            user in proptest::option::of(earliest()),
        ) -> TurnBody {
            TurnBody {
                end,
                head_span_id,
                root_missing,
                input,
                output,
                tokens,
                status,
                num_spans,
                conflicts,
                user,
                more_conflicts,
            }
        }
    }

    prop_compose! {
        fn session()(
            project_id in any::<u32>(),
            (project, session_id) in (text(), text()),
            (num_traces, num_errors, start, end) in (any_u64(), any_u64(), any_u64(), any_u64()),
            tokens in tokens(),
            first_input in proptest::option::of((any_u64(), any::<[u8; 16]>(), io())),
            last_output in proptest::option::of((any_u64(), any::<[u8; 16]>(), io())),
            user in proptest::option::of((any_u64(), any::<[u8; 16]>(), any::<[u8; 8]>(), text())),
        ) -> SessionState {
            SessionState {
                project_id,
                project,
                session_id,
                num_traces,
                num_errors,
                tokens,
                start,
                end,
                first_input,
                last_output,
                user,
            }
        }
    }

    proptest! {
        #[test]
        fn trace_records_encode_as_bincode_does(rec in record()) {
            prop_assert_eq!(encode_wire(&rec), encode_value(&rec));
        }

        #[test]
        fn span_locations_are_the_records_facts(rec in record(), cut in any::<usize>()) {
            let bytes = encode_wire(&rec);
            let want: Vec<_> = rec.spans.iter().map(|f| (f.span_id, f.lsn)).collect();
            prop_assert_eq!(TraceRecord::span_locations(&bytes).ok(), Some(want));
            // Cut short: an error wherever the facts are cut, never a panic.
            let cut = cut % (bytes.len() + 1);
            let facts_end = bytes.len() - encode_wire(&TraceRecord { spans: Vec::new(), ..rec.clone() }).len() + 1;
            let got = TraceRecord::span_locations(&bytes[..cut]);
            prop_assert_eq!(got.is_ok(), cut >= facts_end, "cut at {} of {}", cut, bytes.len());
        }

        #[test]
        fn turns_encode_as_bincode_does(body in turn()) {
            prop_assert_eq!(encode_wire(&body), encode_value(&body));
        }

        #[test]
        fn session_summaries_encode_as_bincode_does(state in session()) {
            prop_assert_eq!(encode_wire(&state), encode_value(&state));
        }

        #[test]
        fn session_summaries_decode_as_bincode_does(state in session()) {
            let bytes = encode_wire(&state);
            prop_assert_eq!(SessionState::decode(&bytes).ok(), Some(state));
        }

        /// Edited bytes: accepted exactly when bincode accepts them, and
        /// decoded to the same summary.
        #[test]
        fn edited_session_summaries_decode_as_bincode_does(
            state in session(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            edits_decode_as_bincode_does(&state, &edits, SessionState::decode)?;
        }

        #[test]
        fn trace_records_decode_as_bincode_does(rec in record()) {
            let bytes = encode_wire(&rec);
            prop_assert_eq!(TraceRecord::decode(&bytes).ok(), Some(rec));
        }

        /// Edited bytes: accepted exactly when bincode accepts them, and
        /// decoded to the same record.
        #[test]
        fn edited_trace_records_decode_as_bincode_does(
            rec in record(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            edits_decode_as_bincode_does(&rec, &edits, TraceRecord::decode)?;
        }
    }

    /// `value`'s encoding with each edit made in turn (where, byte, how;
    /// how 0 replaces a byte, 1 cuts the rest, 2 inserts a byte):
    /// `decode` accepts it exactly when bincode does, with the same value.
    fn edits_decode_as_bincode_does<T>(
        value: &T,
        edits: &[(usize, u8, u8)],
        decode: fn(&[u8]) -> Result<T, DecodeError>,
    ) -> Result<(), TestCaseError>
    where
        T: Wire + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut bytes = encode_wire(value);
        for &(at, byte, how) in edits {
            let i = at % (bytes.len() + 1);
            match how {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.truncate(i),
                _ => bytes.insert(i, byte),
            }
        }
        let serde = crate::codec::decode_value::<T>(&bytes).ok();
        prop_assert_eq!(decode(&bytes).ok(), serde);
        Ok(())
    }

    /// Every byte of `value`'s encoding replaced in turn by values invalid
    /// somewhere (option tags, bools, varint markers): `decode` accepts
    /// exactly what bincode accepts, with the same result.
    fn single_byte_edits_decode_as_bincode_does<T>(
        value: &T,
        decode: fn(&[u8]) -> Result<T, DecodeError>,
    ) where
        T: Wire + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
    {
        let bytes = encode_wire(value);
        assert_eq!(decode(&bytes).ok(), Some(value.clone()));
        let mut rejected = 0;
        for i in 0..bytes.len() {
            for b in [0, 1, 2, 250, 251, 252, 253, 254, 255] {
                let mut edited = bytes.clone();
                edited[i] = b;
                let serde = crate::codec::decode_value::<T>(&edited).ok();
                rejected += usize::from(serde.is_none());
                assert_eq!(decode(&edited).ok(), serde, "byte {i} set to {b}");
            }
        }
        assert!(rejected > bytes.len());
    }

    #[test]
    fn every_single_byte_edit_of_a_summary_decodes_as_bincode_does() {
        let io = |v: &str| IoValue::new(v, "text/plain");
        let state = SessionState {
            project_id: 70_000,
            project: "p".into(),
            session_id: "s".into(),
            num_traces: 3,
            num_errors: 1,
            tokens: Tokens {
                prompt: 1,
                completion: 300,
                total: 301,
            },
            start: 5,
            end: 1 << 40,
            first_input: Some((5, [1; 16], io("q"))),
            last_output: Some((9, [2; 16], IoValue::new("a", "application/x"))),
            user: Some((6, [3; 16], [4; 8], "u".into())),
        };
        single_byte_edits_decode_as_bincode_does(&state, SessionState::decode);
    }

    #[test]
    fn every_single_byte_edit_of_a_trace_record_decodes_as_bincode_does() {
        let earliest = |v: &str| Earliest {
            start: 7,
            span_id: [5; 8],
            value: v.into(),
        };
        let rec = TraceRecord {
            spans: vec![
                SpanFact {
                    span_id: [1; 8],
                    parent: None,
                    start: 300,
                    lsn: 1 << 33,
                },
                SpanFact {
                    span_id: [2; 8],
                    parent: Some([1; 8]),
                    start: 70_000,
                    lsn: 9,
                },
            ],
            start: 300,
            end: 1 << 40,
            tokens: Tokens {
                prompt: 1,
                completion: 300,
                total: 301,
            },
            any_error: true,
            any_ok: false,
            root: Some(RootInfo {
                span_id: [1; 8],
                start: 300,
                project: "p".into(),
                session_id: Some("s".into()),
            }),
            earliest_project: Some(earliest("p")),
            earliest_session: Some(earliest("s")),
            session_ids: vec!["s".into(), "t".into()],
            more_session_ids: true,
            user: Some(earliest("u")),
            filing: Some(Filing {
                session: 4,
                start: 300,
            }),
        };
        single_byte_edits_decode_as_bincode_does(&rec, TraceRecord::decode);
    }
}

//! The index values written on every group ([`TraceRecord`], [`TurnBody`],
//! [`SessionState`]) encoded in bincode 2's wire format directly (see
//! [`Wire`]). Field by field in declaration order, as serde
//! encodes them: integers as varints, `u8` arrays byte for byte, `Option`
//! as a 0/1 tag before the value, strings and sequences after their
//! length, unit enum variants as their index. Decoding stays with bincode
//! (and `TurnView`); the tests below check the bytes are bincode's.

use crate::codec::{Wire, put_len, put_str, put_varint};
use crate::model::{IoValue, Tokens, TraceStatus};

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
    fn put(&self, w: &mut Vec<u8>) {
        put_varint(w, self.prompt);
        put_varint(w, self.completion);
        put_varint(w, self.total);
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
        put_str(w, &self.mime_type);
    }
}

impl Wire for SpanFact {
    fn put(&self, w: &mut Vec<u8>) {
        self.span_id.put(w);
        self.parent.put(w);
        self.start.put(w);
        self.lsn.put(w);
    }
}

impl Wire for Earliest {
    fn put(&self, w: &mut Vec<u8>) {
        self.start.put(w);
        self.span_id.put(w);
        self.value.put(w);
    }
}

impl Wire for RootInfo {
    fn put(&self, w: &mut Vec<u8>) {
        self.span_id.put(w);
        self.start.put(w);
        self.project.put(w);
        self.session_id.put(w);
    }
}

impl Wire for Filing {
    fn put(&self, w: &mut Vec<u8>) {
        self.session.put(w);
        self.start.put(w);
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
            user,
            filing,
        } = self;
        w.reserve(spans.len() * 24 + 64);
        spans.put(w);
        start.put(w);
        end.put(w);
        tokens.put(w);
        any_error.put(w);
        any_ok.put(w);
        root.put(w);
        earliest_project.put(w);
        earliest_session.put(w);
        session_ids.put(w);
        user.put(w);
        filing.put(w);
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
        } = self;
        end.put(w);
        head_span_id.put(w);
        root_missing.put(w);
        input.put(w);
        output.put(w);
        tokens.put(w);
        status.put(w);
        num_spans.put(w);
        conflicts.put(w);
        user.put(w);
    }
}

/// `(trace start, trace id, root input or output)` of a session summary.
impl Wire for (u64, [u8; 16], IoValue) {
    fn put(&self, w: &mut Vec<u8>) {
        self.0.put(w);
        self.1.put(w);
        self.2.put(w);
    }
}

/// `(span start, trace id, span id, user)` of a session summary.
impl Wire for (u64, [u8; 16], [u8; 8], String) {
    fn put(&self, w: &mut Vec<u8>) {
        self.0.put(w);
        self.1.put(w);
        self.2.put(w);
        self.3.put(w);
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
        start.put(w);
        end.put(w);
        first_input.put(w);
        last_output.put(w);
        user.put(w);
    }
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
            prop_oneof![Just("text/plain".to_owned()), ".{0,12}"],
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
            session_ids in proptest::collection::vec(text(), 0..3),
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
            conflicts in proptest::collection::vec(text(), 0..3),
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
        fn turns_encode_as_bincode_does(body in turn()) {
            prop_assert_eq!(encode_wire(&body), encode_value(&body));
        }

        #[test]
        fn session_summaries_encode_as_bincode_does(state in session()) {
            prop_assert_eq!(encode_wire(&state), encode_value(&state));
        }
    }
}

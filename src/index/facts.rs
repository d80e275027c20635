//! What one span contributes to its trace: session id, user, tokens, input
//! and output. Pure functions of a span and the store's configuration.

use serde::{Deserialize, Serialize};

use crate::model::{AttributeValue, IoValue, JsonText, Span, Tokens, keys};
use crate::python;

/// Where a session id may be found on a span, tried in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SessionIdSource {
    /// A span attribute, for example `session.id`.
    Attribute(String),
    /// A top-level field of the JSON object in the span's `metadata`
    /// attribute (LangChain style), for example `thread_id`.
    MetadataField(String),
}

impl SessionIdSource {
    /// The default list: `session.id`, `gen_ai.conversation.id`, then the
    /// `metadata` JSON fields `session_id`, `conversation_id`, `thread_id`.
    pub fn defaults() -> Vec<SessionIdSource> {
        vec![
            SessionIdSource::Attribute(keys::SESSION_ID.into()),
            SessionIdSource::Attribute(keys::GEN_AI_CONVERSATION_ID.into()),
            SessionIdSource::MetadataField("session_id".into()),
            SessionIdSource::MetadataField("conversation_id".into()),
            SessionIdSource::MetadataField("thread_id".into()),
        ]
    }
}

/// The span attributes the facts of this module read, besides those the
/// session-id sources name ([`FactKeys`]). A function here that
/// reads another attribute must list it, or a replay, which decodes only
/// these (`codec::decode_span_facts`), would miss it; the property test
/// `facts_decode_gives_the_facts_of_the_whole_span` in `codec` checks
/// the two decodes agree.
const FACT_KEYS: [&str; 8] = [
    keys::SPAN_KIND,
    keys::GEN_AI_OPERATION_NAME,
    keys::TOKEN_COUNT_PROMPT,
    keys::TOKEN_COUNT_COMPLETION,
    keys::TOKEN_COUNT_TOTAL,
    keys::GEN_AI_USAGE_INPUT_TOKENS,
    keys::GEN_AI_USAGE_OUTPUT_TOKENS,
    keys::USER_ID,
];

/// The attributes read only of a span without a parent (a root candidate
/// keeps its input and output; see [`crate::index::SpanInfo::of`]).
const ROOT_FACT_KEYS: [&str; 4] = [
    keys::INPUT_VALUE,
    keys::INPUT_MIME_TYPE,
    keys::OUTPUT_VALUE,
    keys::OUTPUT_MIME_TYPE,
];

/// The attribute keys [`crate::index::SpanInfo::of`] and [`session_id`]
/// with given sources read, for telling a span's attributes apart one
/// after another (a replay reads only these: `codec::FactsScratch`).
/// Each distinct key has a slot: [`FACT_KEYS`] the first, in their order,
/// then [`ROOT_FACT_KEYS`], then the keys only the sources name, so that a
/// replay keeps the first attribute of each key in its slot and the facts
/// find it there ([`Attributes`]) without comparing keys again.
pub(crate) struct FactKeys<'s> {
    /// The keys of each length below [`SHORT_KEY`] bytes, each with its
    /// [`key_word`] and whether it is read only of a span without a
    /// parent ([`ROOT_FACT_KEYS`]) or of every span ([`FACT_KEYS`], the
    /// keys the sources name). Most attributes of a span are none of
    /// them, and most of those are told apart by their length alone; the
    /// rest by the word, without a call to compare their bytes.
    by_length: Vec<Vec<Known<'s>>>,
    /// The keys of [`SHORT_KEY`] bytes or more, likewise.
    long: Vec<Known<'s>>,
    /// The slot of each source's key (`metadata` for a metadata field),
    /// in the sources' order.
    source_slots: Vec<usize>,
    /// The [`slot_bit`]s of those slots.
    source_bits: u64,
    /// How many slots there are (distinct keys).
    slots: usize,
}

/// One of the keys of [`FactKeys`].
#[derive(Clone)]
struct Known<'s> {
    /// Its [`key_word`].
    word: u64,
    key: &'s str,
    /// Read only of a span without a parent.
    root_only: bool,
    /// Its slot.
    slot: usize,
}

/// Keys shorter than this are found by their length first.
const SHORT_KEY: usize = 64;

/// Eight bytes of `key` as one number: its last eight (all of it when it
/// is eight bytes long); of a shorter key, its first four and last four
/// (overlapping), or its bytes, which for keys of one length are all of
/// it. Keys of one length that differ in these bytes differ; keys of up
/// to eight bytes with the same word are the same.
#[inline(always)]
fn key_word(key: &[u8]) -> u64 {
    if let Some(last) = key.last_chunk::<8>() {
        return u64::from_le_bytes(*last);
    }
    if let (Some(first), Some(last)) = (key.first_chunk::<4>(), key.last_chunk::<4>()) {
        return u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32;
    }
    key.iter().fold(0, |w, &b| w << 8 | u64::from(b))
}

impl<'s> FactKeys<'s> {
    /// The keys read with `sources`.
    pub(crate) fn new(sources: &'s [SessionIdSource]) -> Self {
        let mut keys = FactKeys {
            by_length: vec![Vec::new(); SHORT_KEY],
            long: Vec::new(),
            source_slots: Vec::with_capacity(sources.len()),
            source_bits: 0,
            slots: 0,
        };
        for k in FACT_KEYS {
            keys.add(k, false);
        }
        for k in ROOT_FACT_KEYS {
            keys.add(k, true);
        }
        for source in sources {
            let k = match source {
                SessionIdSource::Attribute(k) => k.as_str(),
                SessionIdSource::MetadataField(_) => keys::METADATA,
            };
            let slot = keys.add(k, false);
            keys.source_slots.push(slot);
            keys.source_bits |= slot_bit(slot);
        }
        keys
    }

    /// Adds `k` (read of every span unless `root_only`) and gives its
    /// slot: the one it has when it is there already (then read of every
    /// span if either listing says so).
    fn add(&mut self, k: &'s str, root_only: bool) -> usize {
        let bucket = match self.by_length.get_mut(k.len()) {
            Some(bucket) => bucket,
            None => &mut self.long,
        };
        if let Some(known) = bucket.iter_mut().find(|known| known.key == k) {
            known.root_only &= root_only;
            return known.slot;
        }
        let slot = self.slots;
        bucket.push(Known {
            word: key_word(k.as_bytes()),
            key: k,
            root_only,
            slot,
        });
        self.slots += 1;
        slot
    }

    /// How many slots there are: one per distinct key.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    /// The [`slot_bit`]s of the sources' keys' slots.
    #[inline(always)]
    pub(crate) fn source_bits(&self) -> u64 {
        self.source_bits
    }

    /// The slot of source `i`'s key.
    #[inline(always)]
    pub(crate) fn source_slot(&self, i: usize) -> Option<usize> {
        self.source_slots.get(i).copied()
    }

    /// The attribute `key` (its bytes as stored) when it is one of these
    /// for a span with a parent (`root` false) or without one: such a
    /// span stripped of every other attribute has the same facts. `None`
    /// for the others.
    #[cfg(test)]
    pub(crate) fn find(&self, key: &[u8], root: bool) -> Option<&'s str> {
        self.known(key, root).map(|known| known.key)
    }

    /// The slot of [`Self::find`]'s key.
    #[inline(always)]
    pub(crate) fn find_slot(&self, key: &[u8], root: bool) -> Option<usize> {
        self.known(key, root).map(|known| known.slot)
    }

    #[inline(always)]
    fn known(&self, key: &[u8], root: bool) -> Option<&Known<'s>> {
        let bucket = self.by_length.get(key.len()).unwrap_or(&self.long);
        if bucket.is_empty() {
            return None;
        }
        let word = key_word(key);
        #[expect(
            clippy::manual_find,
            reason = "`Iterator::find` is not inlined here: 21 M more instructions on a replay's reading thread (64 MiB store)"
        )]
        for known in bucket {
            if known.word == word && (root || !known.root_only) && same_key(known.key, key) {
                return Some(known);
            }
        }
        None
    }
}

/// A bit for `slot` among 64: its own below 63, the last one shared by
/// the rest (so that a set of slots as bits may hold more, never fewer).
#[inline(always)]
pub(crate) fn slot_bit(slot: usize) -> u64 {
    1 << slot.min(63)
}

/// Whether `key` is `known`, whose [`key_word`] it has. Keys of up to
/// eight bytes are their word (and their length); the bytes of a longer
/// key before its word are compared eight at a time (the last eight
/// overlapping the word), not by a call to compare them.
#[inline(always)]
fn same_key(known: &str, key: &[u8]) -> bool {
    let known = known.as_bytes();
    if known.len() != key.len() {
        return false;
    }
    if key.len() <= 8 {
        return true;
    }
    if key.len() >= SHORT_KEY {
        return known == key;
    }
    let before = key.len() - 8;
    let mut at = 0;
    while at < before {
        let (Some(a), Some(b)) = (
            known.get(at..).and_then(<[u8]>::first_chunk::<8>),
            key.get(at..).and_then(<[u8]>::first_chunk::<8>),
        ) else {
            return false;
        };
        if a != b {
            return false;
        }
        at += 8;
    }
    true
}

/// The attribute keys the facts read of every span ([`FACT_KEYS`]) or of
/// a span without a parent ([`ROOT_FACT_KEYS`]); each is its slot in
/// [`FactKeys`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fact {
    SpanKind,
    OperationName,
    TokensPrompt,
    TokensCompletion,
    TokensTotal,
    UsageInput,
    UsageOutput,
    UserId,
    InputValue,
    InputMime,
    OutputValue,
    OutputMime,
}

impl Fact {
    /// The attribute key.
    #[inline(always)]
    pub(crate) fn key(self) -> &'static str {
        match self {
            Fact::SpanKind => FACT_KEYS[0],
            Fact::OperationName => FACT_KEYS[1],
            Fact::TokensPrompt => FACT_KEYS[2],
            Fact::TokensCompletion => FACT_KEYS[3],
            Fact::TokensTotal => FACT_KEYS[4],
            Fact::UsageInput => FACT_KEYS[5],
            Fact::UsageOutput => FACT_KEYS[6],
            Fact::UserId => FACT_KEYS[7],
            Fact::InputValue => ROOT_FACT_KEYS[0],
            Fact::InputMime => ROOT_FACT_KEYS[1],
            Fact::OutputValue => ROOT_FACT_KEYS[2],
            Fact::OutputMime => ROOT_FACT_KEYS[3],
        }
    }

    /// Its slot in every [`FactKeys`].
    #[inline(always)]
    pub(crate) fn slot(self) -> usize {
        self as usize
    }
}

/// An attribute value as the facts read it: a string by itself (as a
/// replay reads it, borrowed from the log's bytes), any other value
/// whole.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Value<'a> {
    Str(&'a str),
    Other(&'a AttributeValue),
}

impl<'a> Value<'a> {
    /// The value of an attribute.
    #[inline(always)]
    pub(crate) fn of(v: &'a AttributeValue) -> Self {
        match v {
            AttributeValue::String(s) => Value::Str(s),
            other => Value::Other(other),
        }
    }

    /// As [`AttributeValue::as_str`].
    #[inline(always)]
    fn as_str(self) -> Option<&'a str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Other(_) => None,
        }
    }

    /// As [`AttributeValue::as_i64`].
    #[inline(always)]
    fn as_i64(self) -> Option<i64> {
        match self {
            Value::Str(s) => s.trim().parse().ok(),
            Value::Other(v) => v.as_i64(),
        }
    }
}

/// Where the facts of this module find a span's attributes: the first
/// attribute with a key, for the keys of [`FactKeys`]. A [`Span`] looks
/// through its attributes; a replay's span read for its facts
/// (`codec::SpanFacts`) holds them in their slots.
pub(crate) trait Attributes {
    /// The first attribute with `f`'s key.
    fn fact(&self, f: Fact) -> Option<Value<'_>>;
    /// The first attribute with the key of source `i` of the sources the
    /// facts are asked for: `key` (`metadata` for a metadata field).
    fn source(&self, i: usize, key: &str) -> Option<Value<'_>>;
    /// False only when no source's key is among the attributes (then
    /// the session id is none without a look at each source).
    #[inline(always)]
    fn any_source(&self) -> bool {
        true
    }
}

impl Attributes for Span {
    #[inline(always)]
    fn fact(&self, f: Fact) -> Option<Value<'_>> {
        self.attribute(f.key()).map(Value::of)
    }

    #[inline(always)]
    fn source(&self, _: usize, key: &str) -> Option<Value<'_>> {
        self.attribute(key).map(Value::of)
    }
}

/// Strips an id as Python's `str.strip()` does and maps the empty string
/// to none (contract rule 2).
fn non_empty(s: &str) -> Option<String> {
    let t = python::strip(s);
    (!t.is_empty()).then(|| t.to_owned())
}

/// An id past its limit (see [`session_id_within`]).
pub(crate) use python::TooLong as IdTooLong;

/// Resolves a span's session id from the ordered list of sources: the
/// first source giving a non-empty (trimmed) value wins; non-string values
/// are stringified.
pub(crate) fn session_id(span: &impl Attributes, sources: &[SessionIdSource]) -> Option<String> {
    session_id_within(span, sources, usize::MAX).ok().flatten()
}

/// [`session_id`], or `Err` when the id it resolves to is longer than
/// `limit` bytes. A non-string value is measured before it is written
/// out, so that a huge array costs no more than the limit in memory;
/// sources after the one that gives an id are not looked at.
pub(crate) fn session_id_within(
    span: &impl Attributes,
    sources: &[SessionIdSource],
    limit: usize,
) -> Result<Option<String>, IdTooLong> {
    if !span.any_source() {
        return Ok(None);
    }
    let mut metadata: Option<Option<python::Metadata<'_>>> = None;
    for (i, source) in sources.iter().enumerate() {
        let found = match source {
            SessionIdSource::Attribute(key) => match span.source(i, key) {
                Some(v) => id_within(v, limit)?,
                None => None,
            },
            SessionIdSource::MetadataField(field) => {
                // Read once, as Python's `json.loads` reads it (`NaN` too);
                // the field's value as `str()` writes it, measured against
                // the limit as it is written.
                let parsed = metadata.get_or_insert_with(|| {
                    span.source(i, keys::METADATA)
                        .and_then(Value::as_str)
                        .and_then(python::Metadata::parse)
                });
                match parsed {
                    Some(m) => m.field(field, limit)?,
                    None => None,
                }
            }
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// An attribute value as an id: stringified, trimmed, none when empty;
/// `Err` past `limit` bytes.
fn id_within(v: Value<'_>, limit: usize) -> Result<Option<String>, IdTooLong> {
    match v {
        // The common case, without formatting a copy first.
        Value::Str(s) => {
            let t = python::strip(s);
            if t.len() > limit {
                return Err(IdTooLong {
                    bytes: Some(t.len()),
                });
            }
            Ok((!t.is_empty()).then(|| t.to_owned()))
        }
        // Other values' text neither starts nor ends with whitespace
        // (`[`, `]`, digits, `True`, `nan`), so its length is the id's.
        Value::Other(other) => match text_len_within(other, limit) {
            Some(_) => Ok(non_empty(&other.to_string())),
            None => Err(IdTooLong { bytes: None }),
        },
    }
}

/// The span's `user.id`, stringified and trimmed; none when empty.
pub(crate) fn user_id(span: &impl Attributes) -> Option<String> {
    user_id_within(span, usize::MAX).ok().flatten()
}

/// [`user_id`], or `Err` when it is longer than `limit` bytes (measured
/// as [`session_id_within`] measures).
pub(crate) fn user_id_within(
    span: &impl Attributes,
    limit: usize,
) -> Result<Option<String>, IdTooLong> {
    match span.fact(Fact::UserId) {
        Some(v) => id_within(v, limit),
        None => Ok(None),
    }
}

/// True for spans whose tokens count (contract rule 5): OpenInference kind
/// `LLM` (in any ASCII case, as Phoenix reads it), or, on a span without
/// an OpenInference kind, a GenAI `chat` / `text_completion` /
/// `generate_content` operation. A span that has an OpenInference kind is
/// that kind whatever its GenAI operation says, as in Phoenix, which
/// derives a kind from the GenAI attributes only where none is given: an
/// `AGENT` span reporting its children's usage is not counted again.
pub(crate) fn is_llm(span: &impl Attributes) -> bool {
    match span.fact(Fact::SpanKind) {
        Some(kind) => kind.as_str().is_some_and(|k| k.eq_ignore_ascii_case("LLM")),
        None => span
            .fact(Fact::OperationName)
            .and_then(Value::as_str)
            .is_some_and(|op| matches!(op, "chat" | "text_completion" | "generate_content")),
    }
}

fn count(span: &impl Attributes, f: Fact) -> Option<u64> {
    span.fact(f)
        .and_then(Value::as_i64)
        .map(|n| u64::try_from(n).unwrap_or(0))
}

/// Tokens of one span: zero unless it is an LLM span. OpenInference counts
/// win over GenAI usage; a missing total is prompt + completion.
pub(crate) fn tokens(span: &impl Attributes) -> Tokens {
    if !is_llm(span) {
        return Tokens::default();
    }
    let prompt = count(span, Fact::TokensPrompt)
        .or_else(|| count(span, Fact::UsageInput))
        .unwrap_or(0);
    let completion = count(span, Fact::TokensCompletion)
        .or_else(|| count(span, Fact::UsageOutput))
        .unwrap_or(0);
    let total = count(span, Fact::TokensTotal).unwrap_or(prompt.saturating_add(completion));
    Tokens {
        prompt,
        completion,
        total,
    }
}

fn io(span: &impl Attributes, value_key: Fact, mime_key: Fact) -> Option<IoValue> {
    let value = match span.fact(value_key)? {
        Value::Str(s) => s.to_owned(),
        // As Phoenix stores it: JSON, whatever mime type the span gave.
        Value::Other(other) => {
            return Some(IoValue::new(JsonText(other).to_string(), JSON_MIME));
        }
    };
    let mime_type = span
        .fact(mime_key)
        .map(|m| match m {
            Value::Str(s) => std::borrow::Cow::Borrowed(s),
            Value::Other(other) => std::borrow::Cow::Owned(other.to_string()),
        })
        .filter(|m| !m.trim().is_empty());
    Some(IoValue::new(
        value,
        mime_type.as_deref().unwrap_or("text/plain"),
    ))
}

/// Most bytes of text a value comes to per byte of its encoding (`False, `
/// for a one-byte boolean; checked by `text_is_at_most_seven_times_the_encoding`).
pub(crate) const TEXT_PER_ENCODED_BYTE: usize = 7;

/// The mime type of an input or output value that is not a string.
const JSON_MIME: &str = "application/json";

/// How many bytes `v` comes to as text (as an id: Python's `str()`), if
/// at most `limit`; `None` past it, found without writing the text out.
pub(crate) fn text_len_within(v: &AttributeValue, limit: usize) -> Option<usize> {
    if let AttributeValue::String(s) = v {
        return (s.len() <= limit).then_some(s.len());
    }
    display_len_within(v, limit)
}

/// How many bytes a span's input or output (`value_key`, with its mime
/// type) comes to as a turn shows it ([`input`], [`output`]), if at most
/// `limit`; `None` past it, found without writing the text out.
pub(crate) fn io_len_within(
    span: &Span,
    value_key: &str,
    mime_key: &str,
    limit: usize,
) -> Option<usize> {
    match span.attribute(value_key) {
        None => Some(0),
        Some(AttributeValue::String(s)) => {
            let room = limit.checked_sub(s.len())?;
            let mime = span
                .attribute(mime_key)
                .map_or(Some(0), |m| text_len_within(m, room))?;
            Some(s.len() + mime)
        }
        Some(other) => {
            let room = limit.checked_sub(JSON_MIME.len())?;
            Some(display_len_within(&JsonText(other), room)? + JSON_MIME.len())
        }
    }
}

/// How many bytes `v` comes to when displayed, if at most `limit`.
fn display_len_within(v: &dyn std::fmt::Display, limit: usize) -> Option<usize> {
    struct Count {
        n: usize,
        limit: usize,
    }
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.n += s.len();
            if self.n > self.limit {
                return Err(std::fmt::Error);
            }
            Ok(())
        }
    }
    let mut count = Count { n: 0, limit };
    std::fmt::write(&mut count, format_args!("{v}")).ok()?;
    Some(count.n)
}

/// The span's `input.value` and `input.mime_type` (default `text/plain`).
pub(crate) fn input(span: &impl Attributes) -> Option<IoValue> {
    io(span, Fact::InputValue, Fact::InputMime)
}

/// The span's `output.value` and `output.mime_type` (default `text/plain`).
pub(crate) fn output(span: &impl Attributes) -> Option<IoValue> {
    io(span, Fact::OutputValue, Fact::OutputMime)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worst cases of each kind of value, as text against the encoded
    /// span that carries them: none past `TEXT_PER_ENCODED_BYTE` times, so
    /// that `validate` may skip measuring the texts of spans too small to
    /// hold one over `MAX_IO_TEXT_BYTES`.
    #[test]
    fn text_is_at_most_seven_times_the_encoding() {
        let n = 10_000;
        let values = [
            AttributeValue::BoolArray(vec![false; n]),
            AttributeValue::IntArray(vec![-64; n]),
            AttributeValue::IntArray(vec![i64::MIN; n]),
            AttributeValue::DoubleArray(vec![-2.225_073_858_507_201_4e-308; n]),
            AttributeValue::StringArray(vec![String::new(); n]),
            AttributeValue::StringArray(vec!["\u{1}".into(); n]),
            AttributeValue::StringArray(vec!["\u{1}\u{85}".repeat(100); n / 100]),
            AttributeValue::Bool(false),
            AttributeValue::Int(-1),
        ];
        for v in values {
            // As an id (Python's `str()`) and as an input (JSON).
            let text = v.to_string().len();
            let json = JsonText(&v).to_string().len() + JSON_MIME.len();
            let span = Span::new(
                crate::model::TraceId([1; 16]),
                crate::model::SpanId([1; 8]),
                None,
                "",
                0,
                0,
            )
            .with_attribute("input.value", v.clone());
            let encoded = crate::codec::encoded_span_len("", &[], &span);
            assert!(
                text.max(json) <= TEXT_PER_ENCODED_BYTE * encoded,
                "{text} or {json} > 7 x {encoded}: {v:?}"
            );
            assert_eq!(text_len_within(&v, usize::MAX), Some(text));
            assert_eq!(text_len_within(&v, text - 1), None);
            let io = |limit| io_len_within(&span, "input.value", "input.mime_type", limit);
            assert_eq!(io(usize::MAX), Some(json));
            assert_eq!(io(json - 1), None);
        }
    }
    use crate::model::{SpanId, TraceId};

    fn span() -> Span {
        Span::new(TraceId([1; 16]), SpanId([1; 8]), None, "s", 0, 1)
    }

    #[test]
    fn session_id_sources_are_tried_in_order() {
        let d = SessionIdSource::defaults();
        let s = span()
            .with_attribute("gen_ai.conversation.id", "conv")
            .with_attribute("session.id", "sess");
        assert_eq!(session_id(&s, &d).as_deref(), Some("sess"));
        let s = span().with_attribute("gen_ai.conversation.id", "conv");
        assert_eq!(session_id(&s, &d).as_deref(), Some("conv"));
        let s = span().with_attribute(
            "metadata",
            r#"{"thread_id": "t", "conversation_id": "c", "x": 1}"#,
        );
        assert_eq!(session_id(&s, &d).as_deref(), Some("c"));
        let s = span().with_attribute("metadata", r#"{"thread_id": " t1 "}"#);
        assert_eq!(session_id(&s, &d).as_deref(), Some("t1"));
        let s = span().with_attribute("metadata", "not json");
        assert_eq!(session_id(&s, &d), None);
    }

    #[test]
    fn session_ids_are_stringified_trimmed_and_empty_means_none() {
        let d = SessionIdSource::defaults();
        assert_eq!(
            session_id(&span().with_attribute("session.id", 7i64), &d).as_deref(),
            Some("7")
        );
        assert_eq!(
            session_id(&span().with_attribute("session.id", true), &d).as_deref(),
            Some("True")
        );
        assert_eq!(
            session_id(&span().with_attribute("session.id", "  a b "), &d).as_deref(),
            Some("a b")
        );
        // An empty session.id falls through to the next source.
        let s = span()
            .with_attribute("session.id", "   ")
            .with_attribute("gen_ai.conversation.id", "c");
        assert_eq!(session_id(&s, &d).as_deref(), Some("c"));
        assert_eq!(
            session_id(&span().with_attribute("session.id", ""), &d),
            None
        );
        let s = span().with_attribute("metadata", r#"{"session_id": 12}"#);
        assert_eq!(session_id(&s, &d).as_deref(), Some("12"));
    }

    #[test]
    fn ids_past_the_limit_are_refused_as_resolved() {
        let d = SessionIdSource::defaults();
        let s = span().with_attribute("session.id", " abcd ");
        assert_eq!(session_id_within(&s, &d, 4), Ok(Some("abcd".into())));
        assert_eq!(
            session_id_within(&s, &d, 3),
            Err(IdTooLong { bytes: Some(4) })
        );
        let s = span().with_attribute("session.id", AttributeValue::IntArray(vec![1, 2]));
        assert_eq!(session_id_within(&s, &d, 6), Ok(Some("[1, 2]".into())));
        assert_eq!(session_id_within(&s, &d, 5), Err(IdTooLong { bytes: None }));
        let s = span().with_attribute("metadata", r#"{"thread_id": "abcde"}"#);
        assert_eq!(
            session_id_within(&s, &d, 4),
            Err(IdTooLong { bytes: Some(5) })
        );
        // Only the source that gives the id is measured.
        let s = span()
            .with_attribute("session.id", "a")
            .with_attribute("gen_ai.conversation.id", "long");
        assert_eq!(session_id_within(&s, &d, 1), Ok(Some("a".into())));
        let s = span().with_attribute("user.id", true);
        assert_eq!(user_id_within(&s, 4), Ok(Some("True".into())));
        assert_eq!(user_id_within(&s, 3), Err(IdTooLong { bytes: None }));
    }

    #[test]
    fn inputs_are_measured_as_turns_show_them() {
        let io = |s: &Span, limit| io_len_within(s, "input.value", "input.mime_type", limit);
        let text = span().with_attribute("input.value", "abcd");
        assert_eq!((io(&text, 4), io(&text, 3)), (Some(4), None));
        let typed = text.clone().with_attribute("input.mime_type", "text/x");
        assert_eq!((io(&typed, 10), io(&typed, 9)), (Some(10), None));
        // A value that is not a string is JSON, whatever mime type it gave.
        let json = span()
            .with_attribute("input.value", AttributeValue::BoolArray(vec![true]))
            .with_attribute("input.mime_type", "text/x");
        let shown = input(&json).map(|v| (v.value, v.mime_type.into_owned()));
        assert_eq!(shown, Some(("[true]".into(), "application/json".into())));
        assert_eq!((io(&json, 22), io(&json, 21)), (Some(22), None));
        assert_eq!(io(&span(), 0), Some(0));
    }

    const ALL_FACTS: [Fact; 12] = [
        Fact::SpanKind,
        Fact::OperationName,
        Fact::TokensPrompt,
        Fact::TokensCompletion,
        Fact::TokensTotal,
        Fact::UsageInput,
        Fact::UsageOutput,
        Fact::UserId,
        Fact::InputValue,
        Fact::InputMime,
        Fact::OutputValue,
        Fact::OutputMime,
    ];

    /// The facts' keys are the lists' keys, in the lists' order.
    #[test]
    fn facts_name_the_listed_keys() {
        let listed: Vec<&str> = FACT_KEYS.iter().chain(&ROOT_FACT_KEYS).copied().collect();
        let named: Vec<&str> = ALL_FACTS.iter().map(|f| f.key()).collect();
        assert_eq!(named, listed);
        assert!(ALL_FACTS.iter().enumerate().all(|(i, f)| f.slot() == i));
    }

    /// `FactKeys::find` by length and word gives what comparing every
    /// key gives: for the keys themselves, keys one byte off anywhere
    /// (the words differ or not), and any key, whatever the sources.
    #[test]
    fn fact_keys_are_found_as_compared_whole() {
        use proptest::prelude::*;
        let known = |sources: &[SessionIdSource]| -> Vec<(String, bool)> {
            let mut all: Vec<(String, bool)> =
                FACT_KEYS.iter().map(|k| ((*k).to_owned(), false)).collect();
            for s in sources {
                all.push((
                    match s {
                        SessionIdSource::Attribute(k) => k.clone(),
                        SessionIdSource::MetadataField(_) => keys::METADATA.to_owned(),
                    },
                    false,
                ));
            }
            all.extend(ROOT_FACT_KEYS.iter().map(|k| ((*k).to_owned(), true)));
            all
        };
        let naive = |all: &[(String, bool)], key: &[u8], root: bool| {
            // The first listing of a key decides (as `FactKeys::new` keeps it).
            all.iter()
                .find(|(k, _)| k.as_bytes() == key)
                .filter(|(_, root_only)| root || !*root_only)
                .map(|(k, _)| k.clone())
        };
        let source_key = prop_oneof![
            "[a-z.]{0,12}",
            "[ab]{0,10}",
            ".{0,3}",
            "[a-z]{60,70}",
            Just("session.id".to_owned()),
        ];
        let sources = proptest::collection::vec(
            prop_oneof![
                source_key.prop_map(SessionIdSource::Attribute),
                Just(SessionIdSource::MetadataField("x".into())),
            ],
            0..4,
        );
        let mut runner = proptest::test_runner::TestRunner::default();
        let result = runner.run(
            &(
                sources,
                "[a-z._]{0,20}",
                proptest::collection::vec(any::<u8>(), 0..70),
                any::<(usize, u8)>(),
            ),
            |(sources, key, bytes, (at, b))| {
                let all = known(&sources);
                let fact_keys = FactKeys::new(&sources);
                let mut tried: Vec<Vec<u8>> = vec![key.into_bytes(), bytes];
                for (k, _) in &all {
                    tried.push(k.as_bytes().to_vec());
                    let mut near = k.as_bytes().to_vec();
                    if !near.is_empty() {
                        let i = at % near.len();
                        near[i] = near[i].wrapping_add(b.max(1));
                        tried.push(near.clone());
                        near.push(b);
                        tried.push(near);
                    }
                }
                for key in &tried {
                    for root in [false, true] {
                        prop_assert_eq!(
                            fact_keys.find(key, root).map(str::to_owned),
                            naive(&all, key, root),
                            "{:?} root {}",
                            String::from_utf8_lossy(key),
                            root
                        );
                    }
                }
                // Each distinct key has its own slot, the facts' keys the
                // slots `Fact` names, and each source the slot of its key:
                // a replay finds in a slot the attribute a span's lookup
                // by key finds.
                let mut slot_keys: Vec<Option<&str>> = vec![None; fact_keys.slots()];
                for (k, _) in &all {
                    let slot = fact_keys.find_slot(k.as_bytes(), true);
                    prop_assert!(slot.is_some(), "{:?} has no slot", k);
                    let Some(slot) = slot else { continue };
                    prop_assert!(slot < fact_keys.slots());
                    let had = slot_keys.get_mut(slot).and_then(|s| s.replace(k.as_str()));
                    prop_assert!(had.is_none_or(|had| had == k), "{:?} and {:?}", had, k);
                    prop_assert_eq!(
                        fact_keys.find_slot(k.as_bytes(), false).is_some(),
                        naive(&all, k.as_bytes(), false).is_some()
                    );
                }
                prop_assert!(slot_keys.iter().all(Option::is_some));
                for f in ALL_FACTS {
                    prop_assert_eq!(
                        fact_keys.find_slot(f.key().as_bytes(), true),
                        Some(f.slot())
                    );
                }
                for (i, s) in sources.iter().enumerate() {
                    let key = match s {
                        SessionIdSource::Attribute(k) => k.as_str(),
                        SessionIdSource::MetadataField(_) => keys::METADATA,
                    };
                    prop_assert_eq!(
                        fact_keys.source_slot(i),
                        fact_keys.find_slot(key.as_bytes(), true)
                    );
                    // A span holding it is not taken for one without sources.
                    let bit = fact_keys.source_slot(i).map_or(0, slot_bit);
                    prop_assert!(bit != 0 && fact_keys.source_bits() & bit == bit);
                }
                prop_assert_eq!(fact_keys.source_slot(sources.len()), None);
                Ok(())
            },
        );
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn custom_sources_replace_the_defaults() {
        let only = vec![SessionIdSource::Attribute("langfuse.session.id".into())];
        let s = span()
            .with_attribute("session.id", "ignored")
            .with_attribute("langfuse.session.id", "lf");
        assert_eq!(session_id(&s, &only).as_deref(), Some("lf"));
    }

    #[test]
    fn tokens_count_only_on_llm_spans() {
        let chain = span()
            .with_attribute("openinference.span.kind", "CHAIN")
            .with_attribute("llm.token_count.total", 100i64);
        assert_eq!(tokens(&chain), Tokens::default());
        let llm = span()
            .with_attribute("openinference.span.kind", "LLM")
            .with_attribute("llm.token_count.prompt", 10i64)
            .with_attribute("llm.token_count.completion", 5i64);
        assert_eq!(
            tokens(&llm),
            Tokens {
                prompt: 10,
                completion: 5,
                total: 15
            }
        );
        let genai = span()
            .with_attribute("gen_ai.operation.name", "chat")
            .with_attribute("gen_ai.usage.input_tokens", 3i64)
            .with_attribute("gen_ai.usage.output_tokens", 4i64);
        assert_eq!(tokens(&genai).total, 7);
        let embed = span()
            .with_attribute("gen_ai.operation.name", "embeddings")
            .with_attribute("gen_ai.usage.input_tokens", 3i64);
        assert_eq!(tokens(&embed), Tokens::default());
    }

    #[test]
    fn io_defaults_mime_to_text_plain() {
        let s = span()
            .with_attribute("input.value", "hi")
            .with_attribute("output.value", "{}")
            .with_attribute("output.mime_type", "application/json");
        assert_eq!(
            input(&s).map(|v| v.mime_type).as_deref(),
            Some("text/plain")
        );
        assert_eq!(
            output(&s).map(|v| v.mime_type).as_deref(),
            Some("application/json")
        );
        assert_eq!(input(&span()), None);
    }
}

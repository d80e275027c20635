//! Public data types: spans as they are appended, and the answers queries give.
//!
//! This module does no I/O. Spans follow OpenTelemetry; the OpenInference
//! attribute keys that give them meaning (session id, input/output, tokens)
//! are listed in [`keys`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Well-known attribute keys (OpenInference and OpenTelemetry GenAI).
pub mod keys {
    /// Span attribute naming the session (OpenInference).
    pub const SESSION_ID: &str = "session.id";
    /// OpenTelemetry GenAI alias for a session id.
    pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
    /// JSON string with LangChain-style `session_id` / `conversation_id` / `thread_id`.
    pub const METADATA: &str = "metadata";
    /// The user of a session.
    pub const USER_ID: &str = "user.id";
    /// A span's input value.
    pub const INPUT_VALUE: &str = "input.value";
    /// The mime type of `input.value`.
    pub const INPUT_MIME_TYPE: &str = "input.mime_type";
    /// A span's output value.
    pub const OUTPUT_VALUE: &str = "output.value";
    /// The mime type of `output.value`.
    pub const OUTPUT_MIME_TYPE: &str = "output.mime_type";
    /// OpenInference span kind (`LLM`, `CHAIN`, `AGENT`, ...).
    pub const SPAN_KIND: &str = "openinference.span.kind";
    /// Prompt tokens of an LLM span (OpenInference).
    pub const TOKEN_COUNT_PROMPT: &str = "llm.token_count.prompt";
    /// Completion tokens of an LLM span (OpenInference).
    pub const TOKEN_COUNT_COMPLETION: &str = "llm.token_count.completion";
    /// Total tokens of an LLM span (OpenInference).
    pub const TOKEN_COUNT_TOTAL: &str = "llm.token_count.total";
    /// GenAI operation name (`chat`, `text_completion`, `generate_content`, ...).
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    /// Prompt tokens under the GenAI conventions.
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    /// Completion tokens under the GenAI conventions.
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    /// Resource attribute naming the project.
    pub const PROJECT_NAME: &str = "openinference.project.name";
    /// The project used when a resource names none.
    pub const DEFAULT_PROJECT: &str = "default";
}

/// Error returned when parsing a hex [`TraceId`] or [`SpanId`] fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIdError {
    expected_hex_digits: usize,
}

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected exactly {} hexadecimal digits",
            self.expected_hex_digits
        )
    }
}

impl std::error::Error for ParseIdError {}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], ParseIdError> {
    let err = ParseIdError {
        expected_hex_digits: N * 2,
    };
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return Err(err);
    }
    let digit = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let (Some(hi), Some(lo)) = (digit(pair[0]), digit(pair[1])) else {
            return Err(err);
        };
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

macro_rules! id_type {
    ($name:ident, $n:literal, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Displayed and parsed as lowercase hexadecimal (parsing accepts upper case too).
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
        )]
        pub struct $name(pub [u8; $n]);

        impl $name {
            /// The raw bytes.
            pub fn to_bytes(self) -> [u8; $n] {
                self.0
            }

            /// True when every byte is zero, which OpenTelemetry treats as invalid.
            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; $n]
            }
        }

        impl From<[u8; $n]> for $name {
            fn from(bytes: [u8; $n]) -> Self {
                Self(bytes)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                write_hex(f, &self.0)?;
                write!(f, ")")
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex::<$n>(s).map(Self)
            }
        }
    };
}

id_type!(TraceId, 16, "A 16-byte OpenTelemetry trace id.");
id_type!(SpanId, 8, "An 8-byte OpenTelemetry span id.");

/// A typed attribute value: the OpenTelemetry scalar types and arrays of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttributeValue {
    /// A UTF-8 string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Double(f64),
    /// An array of strings.
    StringArray(Vec<String>),
    /// An array of booleans.
    BoolArray(Vec<bool>),
    /// An array of integers.
    IntArray(Vec<i64>),
    /// An array of floats.
    DoubleArray(Vec<f64>),
}

impl AttributeValue {
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttributeValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an integer: an `Int`, an integral `Double`, or a string
    /// holding a decimal integer (some exporters send token counts as text).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttributeValue::Int(i) => Some(*i),
            #[expect(
                clippy::cast_possible_truncation,
                reason = "only integral values within i64 range reach the cast"
            )]
            AttributeValue::Double(d) if d.fract() == 0.0 && d.is_finite() && d.abs() < 9.0e18 => {
                Some(*d as i64)
            }
            AttributeValue::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// A list as Python writes one, in `str()` and in `json.dumps` alike:
/// `[a, b]`, each item written by `one`.
fn list<T>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    one: impl Fn(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
) -> fmt::Result {
    f.write_str("[")?;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        one(f, item)?;
    }
    f.write_str("]")
}

impl fmt::Display for AttributeValue {
    /// Strings print as themselves; other values as Python's `str()`
    /// prints them (`True`, `[1, 2]`, `1e+20`, `['a', "it's"]`), which is
    /// how Phoenix stringifies a non-string `session.id`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn py_bool(b: bool) -> &'static str {
            if b { "True" } else { "False" }
        }
        match self {
            AttributeValue::String(s) => f.write_str(s),
            AttributeValue::Bool(b) => f.write_str(py_bool(*b)),
            AttributeValue::Int(i) => write!(f, "{i}"),
            AttributeValue::Double(d) => crate::python::write_float(f, *d, false),
            AttributeValue::StringArray(v) => list(f, v, |f, s| crate::python::write_repr(f, s)),
            AttributeValue::BoolArray(v) => list(f, v, |f, b| f.write_str(py_bool(*b))),
            AttributeValue::IntArray(v) => list(f, v, |f, i| write!(f, "{i}")),
            AttributeValue::DoubleArray(v) => {
                list(f, v, |f, d| crate::python::write_float(f, *d, false))
            }
        }
    }
}

/// A value as Python's `json.dumps` writes it (`[true, false]`,
/// `["a\u00e9"]`, `NaN`): the text of a non-string input or output value
/// (`facts::io`).
pub(crate) struct JsonText<'a>(pub(crate) &'a AttributeValue);

impl fmt::Display for JsonText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::python::{write_float, write_json_str};
        let json_bool = |b: bool| if b { "true" } else { "false" };
        match self.0 {
            AttributeValue::String(s) => write_json_str(f, s),
            AttributeValue::Bool(b) => f.write_str(json_bool(*b)),
            AttributeValue::Int(i) => write!(f, "{i}"),
            AttributeValue::Double(d) => write_float(f, *d, true),
            AttributeValue::StringArray(v) => list(f, v, |f, s| write_json_str(f, s)),
            AttributeValue::BoolArray(v) => list(f, v, |f, b| f.write_str(json_bool(*b))),
            AttributeValue::IntArray(v) => list(f, v, |f, i| write!(f, "{i}")),
            AttributeValue::DoubleArray(v) => list(f, v, |f, d| write_float(f, *d, true)),
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::String(s.to_owned())
    }
}
impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(s)
    }
}
impl From<bool> for AttributeValue {
    fn from(b: bool) -> Self {
        AttributeValue::Bool(b)
    }
}
impl From<i64> for AttributeValue {
    fn from(i: i64) -> Self {
        AttributeValue::Int(i)
    }
}
impl From<f64> for AttributeValue {
    fn from(d: f64) -> Self {
        AttributeValue::Double(d)
    }
}

/// One attribute: a key and a typed value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The attribute key, for example `session.id`.
    pub key: String,
    /// The attribute value.
    pub value: AttributeValue,
}

impl KeyValue {
    /// Builds an attribute from anything convertible to a value.
    pub fn new(key: impl Into<String>, value: impl Into<AttributeValue>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Looks up the first attribute with `key` in a list.
pub fn find_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AttributeValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| &kv.value)
}

/// OpenTelemetry span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SpanKind {
    /// Not specified.
    #[default]
    Unspecified,
    /// An internal operation.
    Internal,
    /// Server side of a request.
    Server,
    /// Client side of a request.
    Client,
    /// Producer of a message.
    Producer,
    /// Consumer of a message.
    Consumer,
}

/// OpenTelemetry status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StatusCode {
    /// No status was set.
    #[default]
    Unset,
    /// The operation succeeded.
    Ok,
    /// The operation failed.
    Error,
}

/// A span's status: a code and an optional message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Status {
    /// The status code.
    pub code: StatusCode,
    /// A description, usually set only for errors.
    pub message: String,
}

/// A timed event inside a span (for example an exception).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in nanoseconds.
    pub time_unix_nano: u64,
    /// Event name.
    pub name: String,
    /// Event attributes.
    pub attributes: Vec<KeyValue>,
}

/// A link from a span to another span, possibly in another trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// Trace of the linked span.
    pub trace_id: TraceId,
    /// The linked span.
    pub span_id: SpanId,
    /// Link attributes.
    pub attributes: Vec<KeyValue>,
}

/// One OpenTelemetry span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// The trace this span belongs to. Must not be all zeros.
    pub trace_id: TraceId,
    /// This span's id, unique within its trace. Must not be all zeros.
    pub span_id: SpanId,
    /// The parent span, `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// Operation name.
    pub name: String,
    /// OpenTelemetry span kind.
    pub kind: SpanKind,
    /// Start, unix nanoseconds.
    pub start_time_unix_nano: u64,
    /// End, unix nanoseconds.
    pub end_time_unix_nano: u64,
    /// Status code and message.
    pub status: Status,
    /// Span attributes (OpenInference keys live here).
    pub attributes: Vec<KeyValue>,
    /// Events.
    pub events: Vec<Event>,
    /// Links.
    pub links: Vec<Link>,
}

impl Span {
    /// A span with the given ids, name and times, and nothing else set.
    pub fn new(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        name: impl Into<String>,
        start_time_unix_nano: u64,
        end_time_unix_nano: u64,
    ) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id,
            name: name.into(),
            kind: SpanKind::Unspecified,
            start_time_unix_nano,
            end_time_unix_nano,
            status: Status::default(),
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Adds an attribute (builder style).
    pub fn with_attribute(
        mut self,
        key: impl Into<String>,
        value: impl Into<AttributeValue>,
    ) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// Sets the status (builder style).
    pub fn with_status(mut self, code: StatusCode, message: impl Into<String>) -> Self {
        self.status = Status {
            code,
            message: message.into(),
        };
        self
    }

    /// The first attribute with `key`.
    pub fn attribute(&self, key: &str) -> Option<&AttributeValue> {
        find_attribute(&self.attributes, key)
    }
}

/// Spans that share one resource, as OTLP groups them. The resource's
/// `openinference.project.name` attribute names the project; absent means
/// `default`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResourceSpans {
    /// Resource attributes (`service.name`, `openinference.project.name`, ...).
    pub resource: Vec<KeyValue>,
    /// The spans.
    pub spans: Vec<Span>,
}

impl ResourceSpans {
    /// Spans of the named project (sets `openinference.project.name`).
    pub fn for_project(project: impl Into<String>, spans: Vec<Span>) -> Self {
        Self {
            resource: vec![KeyValue::new(keys::PROJECT_NAME, project.into())],
            spans,
        }
    }

    /// The project these spans belong to: the resource's
    /// `openinference.project.name` when it is a non-empty string (trimmed),
    /// else `default`.
    pub fn project(&self) -> &str {
        project_of_resource(&self.resource)
    }
}

/// The project named by resource attributes, `default` when none is given.
pub fn project_of_resource(resource: &[KeyValue]) -> &str {
    // The first non-empty string under the key, as Phoenix takes it (a
    // resource should not repeat a key, but may).
    resource
        .iter()
        .filter(|kv| kv.key == keys::PROJECT_NAME)
        .filter_map(|kv| kv.value.as_str())
        .map(str::trim)
        .find(|p| !p.is_empty())
        .unwrap_or(keys::DEFAULT_PROJECT)
}

/// A span as stored: the span, its resource and its resolved project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredSpan {
    /// The project the span was appended under.
    pub project: String,
    /// The resource attributes it came with.
    pub resource: Vec<KeyValue>,
    /// The span itself.
    pub span: Span,
}

/// Token counts, summed over LLM spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tokens {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
    /// Total tokens.
    pub total: u64,
}

impl Tokens {
    /// Field-wise saturating sum.
    pub fn saturating_add(self, other: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.saturating_add(other.prompt),
            completion: self.completion.saturating_add(other.completion),
            total: self.total.saturating_add(other.total),
        }
    }

    /// Field-wise saturating difference.
    pub fn saturating_sub(self, other: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.saturating_sub(other.prompt),
            completion: self.completion.saturating_sub(other.completion),
            total: self.total.saturating_sub(other.total),
        }
    }
}

/// An input or output value with its mime type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoValue {
    /// The value, as sent in `input.value` / `output.value`; a value that
    /// is not a string is written as JSON (as Python's `json.dumps` writes
    /// it, `[1, 2]`, `true`), and its mime type is then `application/json`,
    /// as in Phoenix.
    pub value: String,
    /// `input.mime_type` / `output.mime_type`, `text/plain` when absent.
    /// The mime types nearly every value has (`text/plain`,
    /// `application/json`) are borrowed from statics when the store builds
    /// an `IoValue`, so that a session history allocates only the values;
    /// it compares, prints and serializes like a `String` either way.
    pub mime_type: Cow<'static, str>,
}

/// Mime types nearly every input and output has.
pub(crate) const COMMON_MIME_TYPES: [&str; 2] = ["text/plain", "application/json"];

impl IoValue {
    /// A value with its mime type (borrowed, not copied, when it is one of
    /// the common ones).
    pub fn new(value: impl Into<String>, mime_type: &str) -> Self {
        Self {
            value: value.into(),
            mime_type: mime_type_of(mime_type),
        }
    }
}

/// `mime_type` as a [`IoValue::mime_type`]: a static for the common types,
/// an owned copy otherwise.
pub(crate) fn mime_type_of(mime_type: &str) -> Cow<'static, str> {
    match COMMON_MIME_TYPES.into_iter().find(|k| *k == mime_type) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(mime_type.to_owned()),
    }
}

/// Aggregate status of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceStatus {
    /// No span has status `Ok` or `Error`.
    Unset,
    /// Some span is `Ok` and none is `Error`.
    Ok,
    /// At least one span has status `Error`.
    Error,
}

/// One turn of a session: the summary of one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The trace.
    pub trace_id: TraceId,
    /// Minimum start over the trace's spans, unix nanoseconds.
    pub start_time_unix_nano: u64,
    /// Maximum end over the trace's spans, unix nanoseconds.
    pub end_time_unix_nano: u64,
    /// The root span (or its stand-in, see `root_missing`).
    pub root_span_id: SpanId,
    /// The root's `input.value` and mime type.
    pub input: Option<IoValue>,
    /// The root's `output.value` and mime type.
    pub output: Option<IoValue>,
    /// Tokens summed over the trace's LLM spans.
    pub tokens: Tokens,
    /// Error if any span has status ERROR, else Ok if any span is OK, else Unset.
    pub status: TraceStatus,
    /// Number of distinct spans stored.
    pub num_spans: u64,
    /// True when no span without a parent has arrived; the earliest span
    /// whose parent is absent stands in as root.
    pub root_missing: bool,
    /// Other session ids carried by spans of this trace that lost to the
    /// winning id (contract rule 3), sorted; empty when there was no conflict.
    /// A trace remembers at most 16 distinct session ids, the smallest in
    /// byte order (whatever order its spans came in); see
    /// `conflicting_session_ids_truncated`.
    pub conflicting_session_ids: Vec<String>,
    /// The trace's spans carried more than 16 distinct session ids, so
    /// `conflicting_session_ids` lists only some of the losers.
    pub conflicting_session_ids_truncated: bool,
}

impl Turn {
    /// Trace latency (end minus start) in milliseconds; 0 when end precedes start.
    pub fn latency_ms(&self) -> f64 {
        nanos_to_ms(
            self.end_time_unix_nano
                .saturating_sub(self.start_time_unix_nano),
        )
    }

    /// True when some span of the trace has status ERROR.
    pub fn has_error(&self) -> bool {
        self.status == TraceStatus::Error
    }
}

/// Converts a duration in nanoseconds to fractional milliseconds.
#[expect(
    clippy::cast_precision_loss,
    reason = "latencies are shown in ms; f64 is exact to 2^53 ns (104 days)"
)]
pub fn nanos_to_ms(nanos: u64) -> f64 {
    nanos as f64 / 1_000_000.0
}

/// Trace latency quantiles of a session, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyQuantiles {
    /// Median trace latency.
    pub p50: f64,
    /// 99th percentile trace latency.
    pub p99: f64,
}

/// The summary of one session (contract rule 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionSummary {
    /// The project.
    pub project: String,
    /// The session id.
    pub session_id: String,
    /// Number of traces in the session.
    pub num_traces: u64,
    /// Number of traces with at least one ERROR span.
    pub num_traces_with_error: u64,
    /// Tokens over all LLM spans of all traces.
    pub tokens: Tokens,
    /// Earliest trace start, unix nanoseconds.
    pub start_time_unix_nano: u64,
    /// Latest trace end, unix nanoseconds.
    pub end_time_unix_nano: u64,
    /// Root input of the earliest trace that has one.
    pub first_input: Option<IoValue>,
    /// Root output of the latest trace that has one.
    pub last_output: Option<IoValue>,
    /// First non-empty `user.id` by span start.
    pub user_id: Option<String>,
    /// Trace latency p50/p99 (linear interpolation, as numpy's default).
    pub trace_latency_ms: LatencyQuantiles,
}

impl SessionSummary {
    /// Session duration (end minus start) in nanoseconds; 0 when end precedes start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }
}

/// A page of results and the cursor that continues after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass this to get the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
}

/// Every stored span of one trace, in start order.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// The trace.
    pub trace_id: TraceId,
    /// The trace's project (contract rule 1).
    pub project: String,
    /// The session the trace belongs to, if any.
    pub session_id: Option<String>,
    /// Spans ordered by (start, span id); parent links are in each span.
    pub spans: Vec<StoredSpan>,
}

/// Why a span was not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Trace id of the rejected span (as sent).
    pub trace_id: TraceId,
    /// Span id of the rejected span (as sent).
    pub span_id: SpanId,
    /// What is wrong with it.
    pub reason: String,
}

/// What `append` did with a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppendReport {
    /// Spans newly stored.
    pub accepted: usize,
    /// Spans already stored (same trace id and span id), ignored.
    pub duplicates: usize,
    /// Spans that could not be stored, with the reason for each.
    pub rejected: Vec<Rejection>,
}

/// What a delete (or a retention run) removed. Deletes remove whole
/// traces; a session is counted when its last trace went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeleteReport {
    /// Sessions that vanished (their last trace was deleted).
    pub sessions: u64,
    /// Traces deleted, with or without a session.
    pub traces: u64,
    /// Stored spans deleted.
    pub spans: u64,
}

impl DeleteReport {
    /// Adds another report's counts to this one.
    pub fn add(&mut self, other: DeleteReport) {
        self.sessions += other.sessions;
        self.traces += other.traces;
        self.spans += other.spans;
    }
}

/// Which sessions a retention run keeps ([`crate::SessionStore::retain`]).
/// A session is kept or deleted whole; traces without a session are judged
/// by their own end time (and only by `max_age`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    /// The current time in unix nanoseconds, passed by the caller (the
    /// engine reads no clock).
    pub now_unix_nano: u64,
    /// Delete sessions whose last activity (end of their latest trace) is
    /// more than this many nanoseconds before `now_unix_nano`, and traces
    /// without a session that ended before then.
    pub max_age_nanos: Option<u64>,
    /// Keep at most this many sessions per project: the ones with the
    /// latest last activity (ties: the larger session id is kept).
    pub max_sessions: Option<u64>,
    /// Apply to this project only; `None`: to every project (each project
    /// keeps its own `max_sessions`).
    pub project: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_mime_types_are_borrowed_and_others_copied() {
        for common in COMMON_MIME_TYPES {
            let v = IoValue::new("x", common);
            assert!(matches!(v.mime_type, Cow::Borrowed(m) if m == common));
        }
        let other = IoValue::new("x", "text/markdown");
        assert!(matches!(&other.mime_type, Cow::Owned(m) if m == "text/markdown"));
        // A near miss is not mistaken for a common type.
        assert_eq!(IoValue::new("x", "text/plai").mime_type, "text/plai");
        // Borrowed or owned, the value compares, serializes and decodes the same.
        let owned = IoValue {
            value: "x".into(),
            mime_type: Cow::Owned("application/json".into()),
        };
        let borrowed = IoValue::new("x", "application/json");
        assert_eq!(owned, borrowed);
        let bytes = crate::codec::encode_value(&borrowed);
        assert_eq!(bytes, crate::codec::encode_value(&owned));
        let back: IoValue = crate::codec::decode_value(&bytes).unwrap();
        assert_eq!(back, borrowed);
    }

    #[test]
    fn ids_round_trip_through_lowercase_hex() {
        let t = TraceId([0xab; 16]);
        assert_eq!(t.to_string(), "ab".repeat(16));
        assert_eq!("AB".repeat(16).parse::<TraceId>(), Ok(t));
        let s = SpanId([1, 2, 3, 4, 5, 6, 7, 0xff]);
        assert_eq!(s.to_string(), "01020304050607ff");
        assert_eq!("01020304050607ff".parse::<SpanId>(), Ok(s));
    }

    #[test]
    fn ids_reject_wrong_length_and_non_hex() {
        assert!("abc".parse::<SpanId>().is_err());
        assert!("0102030405060g07".parse::<SpanId>().is_err());
        assert!("0".repeat(34).parse::<TraceId>().is_err());
        assert!("é".repeat(8).parse::<SpanId>().is_err());
    }

    #[test]
    fn non_string_values_stringify_like_phoenix() {
        assert_eq!(AttributeValue::Int(0).to_string(), "0");
        assert_eq!(AttributeValue::Bool(true).to_string(), "True");
        assert_eq!(AttributeValue::IntArray(vec![1, 2]).to_string(), "[1, 2]");
        assert_eq!(AttributeValue::Double(1.5).to_string(), "1.5");
    }

    #[test]
    fn project_defaults_and_trims() {
        assert_eq!(ResourceSpans::default().project(), "default");
        assert_eq!(ResourceSpans::for_project("  p1 ", vec![]).project(), "p1");
        assert_eq!(
            ResourceSpans::for_project("   ", vec![]).project(),
            "default"
        );
    }
}

//! What the commands print: the JSON documents (an interface scripts rely
//! on, so each is a struct with exactly the documented fields) and the
//! human-readable tables.

use std::io::{self, Write};

use serde::Serialize;
use span_sessions::{
    AttributeValue, IoValue, KeyValue, LatencyQuantiles, SessionSummary, SpanKind, StatusCode,
    StoredSpan, Tokens, Trace, TraceStatus, Turn, nanos_to_ms,
};

/// `{"value", "mime_type"}` of an input or output.
#[derive(Serialize)]
pub(crate) struct IoJson<'a> {
    value: &'a str,
    mime_type: &'a str,
}

impl<'a> IoJson<'a> {
    fn of(v: Option<&'a IoValue>) -> Option<Self> {
        v.map(|v| IoJson {
            value: &v.value,
            mime_type: &v.mime_type,
        })
    }
}

/// `{"prompt", "completion", "total"}`.
#[derive(Serialize, Default)]
pub(crate) struct TokensJson {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

impl From<Tokens> for TokensJson {
    fn from(t: Tokens) -> Self {
        TokensJson {
            prompt: t.prompt,
            completion: t.completion,
            total: t.total,
        }
    }
}

/// `{"p50", "p99"}` in milliseconds.
#[derive(Serialize)]
pub(crate) struct LatencyJson {
    pub p50: f64,
    pub p99: f64,
}

impl From<LatencyQuantiles> for LatencyJson {
    fn from(q: LatencyQuantiles) -> Self {
        LatencyJson {
            p50: q.p50,
            p99: q.p99,
        }
    }
}

/// One session of `sessions --json`.
#[derive(Serialize)]
pub(crate) struct SessionJson<'a> {
    project: &'a str,
    session_id: &'a str,
    num_traces: u64,
    num_traces_with_error: u64,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    first_input: Option<IoJson<'a>>,
    last_output: Option<IoJson<'a>>,
    user_id: Option<&'a str>,
    tokens: TokensJson,
    trace_latency_ms: LatencyJson,
}

impl<'a> From<&'a SessionSummary> for SessionJson<'a> {
    fn from(s: &'a SessionSummary) -> Self {
        SessionJson {
            project: &s.project,
            session_id: &s.session_id,
            num_traces: s.num_traces,
            num_traces_with_error: s.num_traces_with_error,
            start_time_unix_nano: s.start_time_unix_nano,
            end_time_unix_nano: s.end_time_unix_nano,
            first_input: IoJson::of(s.first_input.as_ref()),
            last_output: IoJson::of(s.last_output.as_ref()),
            user_id: s.user_id.as_deref(),
            tokens: s.tokens.into(),
            trace_latency_ms: s.trace_latency_ms.into(),
        }
    }
}

/// `sessions --json`.
#[derive(Serialize)]
pub(crate) struct SessionsJson<'a> {
    pub sessions: Vec<SessionJson<'a>>,
    pub next_cursor: Option<&'a str>,
}

/// One turn of `history --json`.
#[derive(Serialize)]
pub(crate) struct TurnJson<'a> {
    trace_id: String,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    latency_ms: f64,
    input: Option<IoJson<'a>>,
    output: Option<IoJson<'a>>,
    tokens: TokensJson,
    status: &'static str,
    num_spans: u64,
    root_missing: bool,
    /// Contract rule 3: the session ids that lost to this one.
    conflicting_session_ids: &'a [String],
    conflicting_session_ids_truncated: bool,
}

impl<'a> From<&'a Turn> for TurnJson<'a> {
    fn from(t: &'a Turn) -> Self {
        TurnJson {
            trace_id: t.trace_id.to_string(),
            start_time_unix_nano: t.start_time_unix_nano,
            end_time_unix_nano: t.end_time_unix_nano,
            latency_ms: t.latency_ms(),
            input: IoJson::of(t.input.as_ref()),
            output: IoJson::of(t.output.as_ref()),
            tokens: t.tokens.into(),
            status: match t.status {
                TraceStatus::Ok => "ok",
                TraceStatus::Error => "error",
                TraceStatus::Unset => "unset",
            },
            num_spans: t.num_spans,
            root_missing: t.root_missing,
            conflicting_session_ids: &t.conflicting_session_ids,
            conflicting_session_ids_truncated: t.conflicting_session_ids_truncated,
        }
    }
}

/// `history --json`.
#[derive(Serialize)]
pub(crate) struct HistoryJson<'a> {
    pub project: &'a str,
    pub session_id: &'a str,
    pub turns: Vec<TurnJson<'a>>,
    pub next_cursor: Option<&'a str>,
}

/// `{"code", "message"}` of a span.
#[derive(Serialize)]
pub(crate) struct StatusJson<'a> {
    code: &'static str,
    message: &'a str,
}

/// One span of `trace --json`.
#[derive(Serialize)]
pub(crate) struct SpanJson<'a> {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    name: &'a str,
    kind: &'static str,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    status: StatusJson<'a>,
    attributes: serde_json::Map<String, serde_json::Value>,
    events: Vec<EventJson<'a>>,
    links: Vec<LinkJson>,
    /// The resource's attributes (service name, SDK, host ...).
    resource: serde_json::Map<String, serde_json::Value>,
}

/// A span event in `trace --json`.
#[derive(Serialize)]
pub(crate) struct EventJson<'a> {
    time_unix_nano: u64,
    name: &'a str,
    attributes: serde_json::Map<String, serde_json::Value>,
}

/// A span link in `trace --json`.
#[derive(Serialize)]
pub(crate) struct LinkJson {
    trace_id: String,
    span_id: String,
    attributes: serde_json::Map<String, serde_json::Value>,
}

/// Attributes as a JSON object of typed values. Keys are unique in
/// OpenTelemetry; if not, the first wins, as in lookups.
fn attributes_json(attrs: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    for kv in attrs {
        if !out.contains_key(&kv.key) {
            out.insert(kv.key.clone(), attribute_json(&kv.value));
        }
    }
    out
}

fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Unspecified => "unspecified",
    }
}

fn status_name(code: StatusCode) -> &'static str {
    match code {
        StatusCode::Ok => "ok",
        StatusCode::Error => "error",
        StatusCode::Unset => "unset",
    }
}

fn double(d: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(d) {
        Some(n) => serde_json::Value::Number(n),
        None if d.is_nan() => "NaN".into(),
        None if d > 0.0 => "Infinity".into(),
        None => "-Infinity".into(),
    }
}

/// An attribute as a JSON value of its own type (non-finite doubles as the
/// strings `"NaN"`, `"Infinity"`, `"-Infinity"`).
pub(crate) fn attribute_json(v: &AttributeValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        AttributeValue::String(s) => J::String(s.clone()),
        AttributeValue::Bool(b) => J::Bool(*b),
        AttributeValue::Int(i) => J::from(*i),
        AttributeValue::Double(d) => double(*d),
        AttributeValue::StringArray(a) => {
            J::Array(a.iter().map(|s| J::String(s.clone())).collect())
        }
        AttributeValue::BoolArray(a) => J::Array(a.iter().map(|b| J::Bool(*b)).collect()),
        AttributeValue::IntArray(a) => J::Array(a.iter().map(|i| J::from(*i)).collect()),
        AttributeValue::DoubleArray(a) => J::Array(a.iter().map(|d| double(*d)).collect()),
    }
}

impl<'a> From<&'a StoredSpan> for SpanJson<'a> {
    fn from(s: &'a StoredSpan) -> Self {
        let span = &s.span;
        SpanJson {
            trace_id: span.trace_id.to_string(),
            span_id: span.span_id.to_string(),
            parent_span_id: span.parent_span_id.map(|p| p.to_string()),
            name: &span.name,
            kind: kind_name(span.kind),
            start_time_unix_nano: span.start_time_unix_nano,
            end_time_unix_nano: span.end_time_unix_nano,
            status: StatusJson {
                code: status_name(span.status.code),
                message: &span.status.message,
            },
            attributes: attributes_json(&span.attributes),
            events: span
                .events
                .iter()
                .map(|e| EventJson {
                    time_unix_nano: e.time_unix_nano,
                    name: &e.name,
                    attributes: attributes_json(&e.attributes),
                })
                .collect(),
            links: span
                .links
                .iter()
                .map(|l| LinkJson {
                    trace_id: l.trace_id.to_string(),
                    span_id: l.span_id.to_string(),
                    attributes: attributes_json(&l.attributes),
                })
                .collect(),
            resource: attributes_json(&s.resource),
        }
    }
}

/// `trace --json`.
#[derive(Serialize)]
pub(crate) struct TraceJson<'a> {
    pub trace_id: String,
    pub project: &'a str,
    pub session_id: Option<&'a str>,
    pub spans: Vec<SpanJson<'a>>,
}

/// Writes `value` as pretty JSON and a newline.
pub(crate) fn write_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    text.push(b'\n');
    out.write_all(&text)
}

/// `s` on one line and safe for a terminal: line breaks and tabs become
/// spaces, and every other control character (ESC and the rest of C0,
/// DEL, C1) its `\u{..}` escape, so that text from spans cannot move the
/// cursor, recolour or retitle the operator's terminal.
pub(crate) fn safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// `s` made [`safe`], at most `n` characters (an ellipsis marks a cut).
pub(crate) fn clip(s: &str, n: usize) -> String {
    let one_line = safe(s);
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut out: String = one_line.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

pub(crate) fn print_sessions(out: &mut dyn Write, sessions: &[SessionSummary]) -> io::Result<()> {
    writeln!(
        out,
        "{:<26} {:>6} {:>4} {:>8} {:>9} {:>9}  {:<30} {:<30}",
        "SESSION", "TRACES", "ERR", "TOKENS", "P50 ms", "P99 ms", "FIRST INPUT", "LAST OUTPUT"
    )?;
    for s in sessions {
        writeln!(
            out,
            "{:<26} {:>6} {:>4} {:>8} {:>9.1} {:>9.1}  {:<30} {:<30}",
            clip(&s.session_id, 26),
            s.num_traces,
            s.num_traces_with_error,
            s.tokens.total,
            s.trace_latency_ms.p50,
            s.trace_latency_ms.p99,
            clip(s.first_input.as_ref().map_or("", |v| &v.value), 30),
            clip(s.last_output.as_ref().map_or("", |v| &v.value), 30),
        )?;
    }
    Ok(())
}

pub(crate) fn print_turns(out: &mut dyn Write, turns: &[Turn]) -> io::Result<()> {
    for t in turns {
        let flag = if t.root_missing {
            " (root missing)"
        } else {
            ""
        };
        writeln!(
            out,
            "turn {} · {:.0} ms · {} tokens · {} spans · {:?}{flag}",
            t.trace_id,
            t.latency_ms(),
            t.tokens.total,
            t.num_spans,
            t.status
        )?;
        writeln!(
            out,
            "  user:      {}",
            clip(t.input.as_ref().map_or("", |v| &v.value), 100)
        )?;
        writeln!(
            out,
            "  assistant: {}",
            clip(t.output.as_ref().map_or("", |v| &v.value), 100)
        )?;
    }
    Ok(())
}

pub(crate) fn print_trace(out: &mut dyn Write, t: &Trace) -> io::Result<()> {
    writeln!(
        out,
        "trace {} · project {} · session {}",
        t.trace_id,
        safe(&t.project),
        safe(t.session_id.as_deref().unwrap_or("-"))
    )?;
    writeln!(
        out,
        "{:<16} {:<16} {:<28} {:<11} {:>10} {:<6}",
        "SPAN", "PARENT", "NAME", "KIND", "MS", "STATUS"
    )?;
    for s in &t.spans {
        let span = &s.span;
        writeln!(
            out,
            "{:<16} {:<16} {:<28} {:<11} {:>10.1} {:<6}",
            span.span_id,
            span.parent_span_id
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            clip(&span.name, 28),
            kind_name(span.kind),
            nanos_to_ms(
                span.end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano)
            ),
            status_name(span.status.code),
        )?;
        for kv in &span.attributes {
            writeln!(
                out,
                "    {} = {}",
                safe(&kv.key),
                clip(&kv.value.to_string(), 80)
            )?;
        }
    }
    Ok(())
}

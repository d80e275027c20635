//! OTLP trace ingest: decode an `ExportTraceServiceRequest` (protobuf or
//! OTLP/JSON), turn it into [`ResourceSpans`] of the public model, and store
//! it with OTLP's partial-success semantics.
//!
//! ```
//! use span_sessions::SessionStore;
//! use span_sessions::otlp::{self, IngestOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = SessionStore::open(dir.path())?;
//! let body = br#"{"resourceSpans": [{
//!   "resource": {"attributes": [{"key": "openinference.project.name", "value": {"stringValue": "chat"}}]},
//!   "scopeSpans": [{"spans": [{
//!     "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
//!     "name": "agent", "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
//!     "attributes": [{"key": "session.id", "value": {"stringValue": "s-1"}}]
//!   }]}]
//! }]}"#;
//! let request = otlp::decode_json(body)?;                     // malformed: Err, nothing stored
//! let report = otlp::export(&store, request, &IngestOptions::default())?;
//! assert_eq!(report.accepted, 1);
//! assert!(report.partial_success().is_none());                // nothing rejected
//! assert_eq!(store.session_history("chat", "s-1")?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! # Mapping
//!
//! - **Project**: [`IngestOptions::project`] if set (it replaces the
//!   resource's `openinference.project.name`), else the resource's
//!   `openinference.project.name`, else `default`.
//! - **Ids**: a span whose `trace_id` is not 16 bytes, whose `span_id` is
//!   not 8 bytes, either of them all zeros, whose `parent_span_id` is neither
//!   empty nor 8 bytes, or with a link whose ids have the wrong length, is
//!   rejected (a [`RejectedSpan`]); the rest of the request is stored. An
//!   all-zero `parent_span_id` means "no parent", as an invalid parent
//!   context does in the OpenTelemetry SDKs.
//! - **Attributes**: every OTLP `AnyValue` type is kept. Strings, bools,
//!   ints, doubles and homogeneous arrays of them keep their type; bytes
//!   become a base64 string; key-value lists and mixed arrays become a JSON
//!   string; attributes without a value are dropped. The instrumentation
//!   scope's name and version are added as the span attributes
//!   `otel.scope.name` / `otel.scope.version` (the OpenTelemetry convention
//!   for formats without scopes) unless the span already has them.
//! - Kind and status codes map one to one (unknown numbers become
//!   `Unspecified` / `Unset`). `trace_state`, `flags`, schema URLs, entity
//!   references and dropped-item counts are not stored.
//!
//! # Errors
//!
//! A request that does not decode is a [`DecodeError`], and a caller that
//! gets one has stored nothing. prost validates UTF-8 in every string
//! field, so a protobuf request with one bad string anywhere is rejected
//! whole ([`DecodeError::InvalidUtf8`]); OTLP requires valid UTF-8.

use std::fmt;

use prost::Message;

/// The `opentelemetry-proto` crate whose prost types this module speaks,
/// re-exported so callers name the same version.
pub use opentelemetry_proto as proto;
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use opentelemetry_proto::tonic::trace::v1 as pb;

pub use super::outgoing::from_resource_spans;
use super::{estimate, value};
use crate::error::Result;
use crate::model::{
    AppendReport, Event, KeyValue, Link, Rejection, ResourceSpans, Span, SpanId, SpanKind, Status,
    StatusCode, TraceId, keys,
};
use crate::store::SessionStore;

/// Span attribute holding the instrumentation scope's name.
pub const SCOPE_NAME: &str = "otel.scope.name";
/// Span attribute holding the instrumentation scope's version.
pub const SCOPE_VERSION: &str = "otel.scope.version";

/// How many rejection reasons the partial-success message spells out.
const REASONS_IN_MESSAGE: usize = 3;

/// The most bytes of resource attributes one request may have stored: a
/// span's record holds its resource's attributes, so a request of many
/// spans under one large resource is stored many times its size (a 1 MiB
/// resource over 2,000 spans, 1.1 MB of protobuf and 7 KB gzipped, wrote
/// 2 GB of log). Realistic requests stay far below it (512 spans under a
/// resource of a few hundred bytes: about 100 KiB). Past it, the spans of
/// the resource that crosses it are rejected (OTLP partial success).
pub const MAX_RESOURCE_COPY_BYTES: usize = 256 << 20;

/// Why a request body could not be decoded. Nothing of it was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not a protobuf `ExportTraceServiceRequest` (truncated,
    /// wrong wire types, bad lengths). The sender should fix its encoder;
    /// retrying the same bytes will fail again.
    Protobuf {
        /// prost's description, with the path of the field that failed.
        reason: String,
    },
    /// A protobuf string field holds bytes that are not UTF-8. OTLP
    /// requires UTF-8 and prost rejects the whole message, so the whole
    /// request is refused, not just the span carrying the string.
    InvalidUtf8 {
        /// prost's description, with the path of the field that failed.
        reason: String,
    },
    /// The body is not OTLP/JSON: not JSON, or a field of the wrong type
    /// (for example a non-hex id, or an enum value's unknown name).
    Json {
        /// 1-based line of the error in the body.
        line: usize,
        /// 1-based column of the error in the body.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The body would decode into more memory than its size allows
    /// (`estimated` bytes against a `limit` of 32 times its length plus
    /// 1 MiB): a request of many empty or tiny messages, which take a few
    /// bytes each on the wire and a few hundred in memory. Realistic
    /// requests are estimated at 1.4 to 16 times their protobuf size and
    /// 1.3 to 4.1 times their JSON size; nothing of this one was decoded
    /// or stored. The receiver answers it with 413.
    TooLarge {
        /// The body's length in bytes.
        body_bytes: u64,
        /// An upper bound of the memory it would decode into.
        estimated: u64,
        /// The most it may decode into.
        limit: u64,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Protobuf { reason } => {
                write!(f, "invalid OTLP protobuf request: {reason}")
            }
            DecodeError::InvalidUtf8 { reason } => write!(
                f,
                "invalid OTLP protobuf request: a string field is not valid UTF-8, \
                 so the whole request is rejected ({reason})"
            ),
            DecodeError::Json {
                line,
                column,
                reason,
            } => write!(
                f,
                "invalid OTLP/JSON request at line {line} column {column}: {reason}"
            ),
            DecodeError::TooLarge {
                body_bytes,
                estimated,
                limit,
            } => write!(
                f,
                "OTLP request of {body_bytes} bytes would decode into up to {estimated} bytes \
                 of memory, more than the limit of {limit}: send fewer or fuller messages \
                 (empty or tiny spans, attributes or values cost far more decoded than sent)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Refuses `body` when `estimated`, what it would decode into, is over its
/// budget.
fn check_estimate(body: &[u8], estimated: u64) -> Result<(), DecodeError> {
    let limit = estimate::budget(body.len());
    if estimated > limit {
        return Err(DecodeError::TooLarge {
            body_bytes: body.len() as u64,
            estimated,
            limit,
        });
    }
    Ok(())
}

/// The most memory [`decode_protobuf`] and [`decode_json`] let a body of
/// `len` bytes decode into: 32 times `len`, plus 1 MiB. A body estimated
/// past it is refused ([`DecodeError::TooLarge`]). A receiver decoding
/// several requests at once can bound their sum with it.
pub fn decode_budget(len: usize) -> u64 {
    estimate::budget(len)
}

/// Decodes an OTLP/HTTP protobuf body (`application/x-protobuf`).
///
/// A body that would decode into more than 32 times its size (plus 1 MiB)
/// is refused first, without decoding it: [`DecodeError::TooLarge`].
pub fn decode_protobuf(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    check_estimate(body, estimate::protobuf(body))?;
    ExportTraceServiceRequest::decode(body).map_err(|e| {
        let reason = e.to_string();
        if reason.contains("not UTF-8") {
            DecodeError::InvalidUtf8 { reason }
        } else {
            DecodeError::Protobuf { reason }
        }
    })
}

/// Decodes an OTLP/JSON body (`application/json`): the protobuf JSON
/// mapping with lowerCamelCase field names (or the proto's snake_case
/// ones, as the OpenTelemetry Collector also reads), hex trace and span
/// ids, integers as strings or numbers, doubles as numbers or as `"NaN"`,
/// `"Infinity"` and `"-Infinity"`, bytes as base64 (standard or URL-safe,
/// padded or not), enums as integers or names, and `null` as a field's
/// default. Unknown fields are ignored, as OTLP requires.
///
/// As [`decode_protobuf`], a body that would decode into more than 32
/// times its size (plus 1 MiB) is refused first: [`DecodeError::TooLarge`].
pub fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    check_estimate(body, estimate::json(body))?;
    serde_json::from_slice::<super::json::Request>(body)
        .map(ExportTraceServiceRequest::from)
        .map_err(|e| {
            let reason = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            DecodeError::Json {
                line: e.line(),
                column: e.column(),
                reason: reason.strip_suffix(&position).unwrap_or(&reason).to_owned(),
            }
        })
}

/// Choices a caller makes when converting or exporting a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOptions {
    project: Option<String>,
}

impl IngestOptions {
    /// The defaults: the project comes from each resource.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files every span under `project`, whatever its resource says (the
    /// resource's `openinference.project.name` is replaced).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The project override, if any.
    pub fn project_override(&self) -> Option<&str> {
        self.project.as_deref()
    }
}

/// A span that was not stored, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSpan {
    /// The trace id as sent, in lowercase hex (any length, possibly empty).
    pub trace_id: String,
    /// The span id as sent, in lowercase hex (any length, possibly empty).
    pub span_id: String,
    /// What is wrong with the span.
    pub reason: String,
}

impl fmt::Display for RejectedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_empty = |s: &str| if s.is_empty() { "(empty)" } else { s }.to_owned();
        write!(
            f,
            "span {} of trace {}: {}",
            or_empty(&self.span_id),
            or_empty(&self.trace_id),
            self.reason
        )
    }
}

impl From<Rejection> for RejectedSpan {
    fn from(r: Rejection) -> Self {
        RejectedSpan {
            trace_id: r.trace_id.to_string(),
            span_id: r.span_id.to_string(),
            reason: r.reason,
        }
    }
}

/// A request converted to the model: what can be appended, and what cannot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    /// Spans to append, grouped by resource.
    pub batch: Vec<ResourceSpans>,
    /// Spans that cannot be stored (bad ids, or a resource too large to
    /// store with every span: [`MAX_RESOURCE_COPY_BYTES`]).
    pub rejected: Vec<RejectedSpan>,
}

/// What [`export`] did with a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Spans newly stored.
    pub accepted: usize,
    /// Spans already stored (same trace id and span id): accepted, and
    /// ignored, so exporter retries are harmless.
    pub duplicates: usize,
    /// Spans not stored, with the reason for each.
    pub rejected: Vec<RejectedSpan>,
}

impl ExportReport {
    /// OTLP's partial success: `None` when every span was accepted, else
    /// the number of rejected spans and a message naming the first reasons.
    pub fn partial_success(&self) -> Option<ExportTracePartialSuccess> {
        if self.rejected.is_empty() {
            return None;
        }
        let mut message = format!("{} span(s) rejected: ", self.rejected.len());
        let shown: Vec<String> = self
            .rejected
            .iter()
            .take(REASONS_IN_MESSAGE)
            .map(ToString::to_string)
            .collect();
        message.push_str(&shown.join("; "));
        if self.rejected.len() > REASONS_IN_MESSAGE {
            message.push_str(&format!(
                "; and {} more",
                self.rejected.len() - REASONS_IN_MESSAGE
            ));
        }
        Some(ExportTracePartialSuccess {
            rejected_spans: i64::try_from(self.rejected.len()).unwrap_or(i64::MAX),
            error_message: message,
        })
    }

    /// The OTLP response to send back for this request.
    pub fn response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: self.partial_success(),
        }
    }
}

/// Converts a decoded request into the public model (no I/O).
pub fn to_resource_spans(
    request: ExportTraceServiceRequest,
    options: &IngestOptions,
) -> Conversion {
    let mut out = Conversion::default();
    // Bytes of resource attributes the spans taken so far will store.
    let mut copies = 0usize;
    for rs in request.resource_spans {
        let mut resource = rs
            .resource
            .map(|r| value::attributes(r.attributes))
            .unwrap_or_default();
        if let Some(project) = &options.project {
            resource.retain(|kv| kv.key != keys::PROJECT_NAME);
            resource.push(KeyValue::new(keys::PROJECT_NAME, project.as_str()));
        }
        let mut spans = Vec::new();
        for ss in rs.scope_spans {
            let scope = ss.scope.unwrap_or_default();
            for span in ss.spans {
                match convert_span(span, &scope.name, &scope.version) {
                    Ok(s) => spans.push(s),
                    Err(r) => out.rejected.push(r),
                }
            }
        }
        if spans.is_empty() {
            continue;
        }
        let each = crate::codec::encoded_attributes_len(&resource);
        let these = each.saturating_mul(spans.len());
        if copies.saturating_add(these) > MAX_RESOURCE_COPY_BYTES {
            let reason = format!(
                "its resource's attributes ({each} bytes) are stored with each span, and \
                 the request's spans would store more than {MAX_RESOURCE_COPY_BYTES} bytes \
                 of them: send fewer spans per request or a smaller resource"
            );
            out.rejected.extend(spans.iter().map(|s| RejectedSpan {
                trace_id: s.trace_id.to_string(),
                span_id: s.span_id.to_string(),
                reason: reason.clone(),
            }));
            continue;
        }
        copies += these;
        out.batch.push(ResourceSpans { resource, spans });
    }
    out
}

/// Converts a request and appends it to `store`: bad spans are reported in
/// [`ExportReport::rejected`] and the rest is stored (OTLP partial
/// success). An `Err` is a store failure; nothing of the request was
/// acknowledged.
pub fn export(
    store: &SessionStore,
    request: ExportTraceServiceRequest,
    options: &IngestOptions,
) -> Result<ExportReport> {
    let conversion = to_resource_spans(request, options);
    let appended = if conversion.batch.is_empty() {
        AppendReport::default()
    } else {
        store.append(&conversion.batch)?
    };
    let mut rejected = conversion.rejected;
    rejected.extend(appended.rejected.into_iter().map(RejectedSpan::from));
    Ok(ExportReport {
        accepted: appended.accepted,
        duplicates: appended.duplicates,
        rejected,
    })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A fixed-size id, or why it is not one.
fn fixed_id<const N: usize>(bytes: &[u8], what: &str) -> std::result::Result<[u8; N], String> {
    let id: [u8; N] = bytes
        .try_into()
        .map_err(|_| format!("{what} is {} bytes, expected {N}", bytes.len()))?;
    if id == [0u8; N] {
        return Err(format!("{what} is all zeros"));
    }
    Ok(id)
}

fn span_kind(kind: i32) -> SpanKind {
    match pb::span::SpanKind::try_from(kind) {
        Ok(pb::span::SpanKind::Internal) => SpanKind::Internal,
        Ok(pb::span::SpanKind::Server) => SpanKind::Server,
        Ok(pb::span::SpanKind::Client) => SpanKind::Client,
        Ok(pb::span::SpanKind::Producer) => SpanKind::Producer,
        Ok(pb::span::SpanKind::Consumer) => SpanKind::Consumer,
        Ok(pb::span::SpanKind::Unspecified) | Err(_) => SpanKind::Unspecified,
    }
}

fn status(status: Option<pb::Status>) -> Status {
    let Some(s) = status else {
        return Status::default();
    };
    let code = match pb::status::StatusCode::try_from(s.code) {
        Ok(pb::status::StatusCode::Ok) => StatusCode::Ok,
        Ok(pb::status::StatusCode::Error) => StatusCode::Error,
        Ok(pb::status::StatusCode::Unset) | Err(_) => StatusCode::Unset,
    };
    Status {
        code,
        message: s.message,
    }
}

fn convert_span(
    span: pb::Span,
    scope_name: &str,
    scope_version: &str,
) -> std::result::Result<Span, RejectedSpan> {
    let reject = |reason: String| RejectedSpan {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        reason,
    };
    let trace_id = TraceId(fixed_id::<16>(&span.trace_id, "trace_id").map_err(reject)?);
    let span_id = SpanId(fixed_id::<8>(&span.span_id, "span_id").map_err(reject)?);
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => fixed_id::<8>(&span.parent_span_id, "parent_span_id")
            .ok()
            .map(SpanId),
        n => {
            return Err(reject(format!(
                "parent_span_id is {n} bytes, expected 8 (or none for a root span)"
            )));
        }
    };
    let mut links = Vec::with_capacity(span.links.len());
    for (i, link) in span.links.iter().enumerate() {
        let (Ok(t), Ok(s)) = (
            <[u8; 16]>::try_from(link.trace_id.as_slice()),
            <[u8; 8]>::try_from(link.span_id.as_slice()),
        ) else {
            return Err(reject(format!(
                "link {i} has a {}-byte trace_id and a {}-byte span_id, expected 16 and 8",
                link.trace_id.len(),
                link.span_id.len()
            )));
        };
        links.push((TraceId(t), SpanId(s)));
    }

    let mut attributes = value::attributes(span.attributes);
    for (key, v) in [(SCOPE_NAME, scope_name), (SCOPE_VERSION, scope_version)] {
        if !v.is_empty() && !attributes.iter().any(|kv| kv.key == key) {
            attributes.push(KeyValue::new(key, v));
        }
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        name: span.name,
        kind: span_kind(span.kind),
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        status: status(span.status),
        attributes,
        events: span
            .events
            .into_iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name,
                attributes: value::attributes(e.attributes),
            })
            .collect(),
        links: span
            .links
            .into_iter()
            .zip(links)
            .map(|(l, (trace_id, span_id))| Link {
                trace_id,
                span_id,
                attributes: value::attributes(l.attributes),
            })
            .collect(),
    })
}

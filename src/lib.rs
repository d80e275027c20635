//! # span-sessions
//!
//! An embedded storage engine for LLM-tracing spans grouped into sessions.
//! See `README.md` for an overview and `docs/FORMAT.md` for the on-disk format.
#![deny(unsafe_code)]

mod codec;
mod error;
mod log;
mod model;

pub use error::{Error, ErrorKind, Result};
pub use model::{
    AppendReport, AttributeValue, Event, IoValue, KeyValue, LatencyQuantiles, Link, Page,
    ParseIdError, Rejection, ResourceSpans, SessionSummary, Span, SpanId, SpanKind, Status,
    StatusCode, StoredSpan, Tokens, Trace, TraceId, TraceStatus, Turn, find_attribute, keys,
    nanos_to_ms, project_of_resource,
};

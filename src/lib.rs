//! # span-sessions
//!
//! An embedded storage engine for LLM-tracing spans grouped into
//! **sessions** (conversations: sequences of traces linked by a session id,
//! OpenInference `session.id` and its aliases).
//!
//! Spans are appended to a CRC-framed, append-only log (the source of
//! truth); redb indexes keyed by (project, session, start time) keep exact
//! session and trace summaries up to date at ingest, so a session's history
//! and the session list never read span payloads.
//!
//! Start with [`SessionStore::open`], [`SessionStore::append`] and
//! [`SessionStore::session_history`]. `README.md` gives the contract and the
//! durability modes; `docs/FORMAT.md` draws the on-disk format.
//!
//! OpenTelemetry speaks to a store through [`otlp`] (OTLP requests as
//! protobuf or OTLP/JSON, feature `otlp`) and [`StoreExporter`] (an
//! `opentelemetry_sdk` span exporter, feature `opentelemetry`); both are on
//! by default.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod codec;
mod error;
mod fs;
#[doc(hidden)]
pub mod fuzzing;
mod hashing;
mod index;
#[cfg(feature = "otlp")]
mod ingest;
mod log;
mod model;
mod python;
mod query;
mod repair;
mod store;
pub mod workload;

/// Test support: the file-system seam and a simulated disk that injects
/// faults and power loss. Not part of the stable API; used by the crate's
/// tests and fuzz targets.
#[doc(hidden)]
pub mod testing {
    pub use crate::fs::sim::{
        Fault, FaultError, Injected, Op, Ops, SimFileSystem, Survival, Unsynced,
    };
    pub use crate::fs::{DIRECT_ALIGN, FileHandle, FileSystem, OpenMode, OsFileSystem};

    /// The texts a span's values become, as Python writes them
    /// (`tests/python_forms.rs` compares them with Python itself).
    pub mod python {
        use crate::index::facts;
        use crate::model::{AttributeValue, Span, SpanId, TraceId};
        use crate::{SessionIdSource, keys};

        fn span() -> Span {
            Span::new(TraceId([1; 16]), SpanId([1; 8]), None, "", 0, 0)
        }

        /// The session id a `session.id` of `v` gives: `str(v).strip()`,
        /// none when empty.
        pub fn id_text(v: &AttributeValue) -> Option<String> {
            let sources = [SessionIdSource::Attribute(keys::SESSION_ID.into())];
            facts::session_id(
                &span().with_attribute(keys::SESSION_ID, v.clone()),
                &sources,
            )
        }

        /// The session id a `metadata` of `text` gives from `field`:
        /// `str(json.loads(text)[field]).strip()`, none when that fails,
        /// is `None` or empty.
        pub fn metadata_id(text: &str, field: &str) -> Option<String> {
            let sources = [SessionIdSource::MetadataField(field.into())];
            facts::session_id(&span().with_attribute(keys::METADATA, text), &sources)
        }

        /// A root's input of `v`, as its turn shows it: the value and its
        /// mime type (`json.dumps(v)` and `application/json` for a value
        /// that is not a string).
        pub fn input_text(v: &AttributeValue) -> Option<(String, String)> {
            let root = span().with_attribute(keys::INPUT_VALUE, v.clone());
            facts::input(&root).map(|io| (io.value, io.mime_type.into_owned()))
        }
    }
}

/// The README's Rust examples, compiled as doctests (the whole programs;
/// fragments are marked `ignore`).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use error::{Error, ErrorKind, Result};
pub use index::facts::SessionIdSource;
#[cfg(feature = "opentelemetry")]
pub use ingest::exporter::StoreExporter;
#[cfg(feature = "otlp")]
pub use ingest::otlp;
#[doc(hidden)]
pub use log::SalvageStep;
pub use log::{DroppedRange, SalvageReport};
pub use model::{
    AppendReport, AttributeValue, DeleteReport, Event, IoValue, KeyValue, LatencyQuantiles, Link,
    Page, ParseIdError, Rejection, ResourceSpans, RetentionPolicy, SessionSummary, Span, SpanId,
    SpanKind, Status, StatusCode, StoredSpan, Tokens, Trace, TraceId, TraceStatus, Turn,
    find_attribute, keys, nanos_to_ms, project_of_resource,
};
pub use query::{ProjectStats, SessionFilter, SessionQuery, SessionSort};
pub use repair::{OpenReport, OpenTimings};
pub use store::{
    CompactReport, CompactStep, Durability, MAX_ID_BYTES, MAX_IO_TEXT_BYTES, MAX_SPANS_PER_TRACE,
    SegmentStats, SessionStore, StoreOptions, StoreStats, VerifyReport,
};

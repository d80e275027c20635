//! OpenTelemetry ingest, on top of the public [`SessionStore`](crate::SessionStore) API.
//!
//! - [`otlp`]: OTLP `ExportTraceServiceRequest`s (protobuf or OTLP/JSON) into
//!   the public model, and an `export` that stores one with OTLP's
//!   partial-success semantics (feature `otlp`).
//! - [`exporter`]: an `opentelemetry_sdk` `SpanExporter` writing into a
//!   store (feature `opentelemetry`).

pub(crate) mod estimate;
#[cfg(feature = "opentelemetry")]
pub(crate) mod exporter;
mod json;
pub mod otlp;
mod outgoing;
mod value;

//! An `opentelemetry_sdk` [`SpanExporter`] that writes into a [`SessionStore`].
//!
//! Spans take the same path as OTLP requests (SDK span -> OTLP message ->
//! model, see [`crate::otlp`]), so a span stored by the exporter is the
//! span an OTLP receiver would have stored.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::otlp::{self, ExportTraceServiceRequest, IngestOptions};
use crate::store::SessionStore;

/// Writes the spans of an OpenTelemetry SDK tracer provider into a store.
///
/// Each `export` call is one [`SessionStore::append`]: use it with the
/// SDK's batch span processor, which calls `export` from its own thread
/// with up to 512 spans, so a batch is one group commit. (The simple
/// processor works too, at one append per span.) `force_flush` and
/// `shutdown` call [`SessionStore::sync`].
///
/// ```
/// use std::sync::Arc;
/// use opentelemetry::trace::{Tracer, TracerProvider as _};
/// use opentelemetry::KeyValue;
/// use opentelemetry_sdk::trace::SdkTracerProvider;
/// use span_sessions::{SessionStore, StoreExporter};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let store = Arc::new(SessionStore::open(dir.path())?);
/// let provider = SdkTracerProvider::builder()
///     .with_batch_exporter(StoreExporter::new(store.clone()).with_project("my-app"))
///     .build();
/// provider.tracer("example").in_span("agent", |cx| {
///     use opentelemetry::trace::TraceContextExt;
///     cx.span().set_attribute(KeyValue::new("session.id", "chat-1"));
/// });
/// provider.shutdown()?;
/// assert_eq!(store.session_history("my-app", "chat-1")?.len(), 1);
/// # Ok(()) }
/// ```
///
/// A batch with rejected spans (which an SDK does not produce) stores the
/// rest and returns `OTelSdkError::InternalFailure` naming the rejects.
pub struct StoreExporter {
    store: Arc<SessionStore>,
    options: IngestOptions,
    resource: ResourceAttributesWithSchema,
    shut_down: AtomicBool,
}

impl StoreExporter {
    /// An exporter into `store`; the project comes from the tracer
    /// provider's resource (`openinference.project.name`, else `default`).
    pub fn new(store: Arc<SessionStore>) -> Self {
        StoreExporter {
            store,
            options: IngestOptions::default(),
            resource: ResourceAttributesWithSchema::default(),
            shut_down: AtomicBool::new(false),
        }
    }

    /// Files every span under `project`, whatever the resource says.
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.options = self.options.project(project);
        self
    }

    fn export_now(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let report = otlp::export(&self.store, request, &self.options)
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        match report.partial_success() {
            None => Ok(()),
            Some(p) => Err(OTelSdkError::InternalFailure(p.error_message)),
        }
    }

    fn sync(&self) -> OTelSdkResult {
        self.store
            .sync()
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

impl fmt::Debug for StoreExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreExporter")
            .field("store", &self.store.dir())
            .field("options", &self.options)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SpanExporter for StoreExporter {
    // The store call blocks; the SDK's processors run exporters on their
    // own thread (or block on the future), so that is expected here.
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.export_now(batch)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        self.sync()
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.sync()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}

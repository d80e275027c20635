//! The `opentelemetry_sdk` exporter: a Rust program traces straight into a
//! store through the SDK's batch processor.
#![cfg(feature = "opentelemetry")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use opentelemetry::trace::{Span as _, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use span_sessions::{AttributeValue, SessionStore, StoreExporter, TraceStatus};

fn provider(store: &Arc<SessionStore>, project: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_attribute(KeyValue::new(
                    "openinference.project.name",
                    project.to_owned(),
                ))
                .build(),
        )
        .with_batch_exporter(StoreExporter::new(Arc::clone(store)))
        .build()
}

/// One turn: an AGENT root with input/output and an LLM child with tokens.
fn turn(tracer: &opentelemetry_sdk::trace::SdkTracer, session: &str, i: u64, fail: bool) {
    let mut root = tracer.start("agent");
    root.set_attribute(KeyValue::new("session.id", session.to_owned()));
    root.set_attribute(KeyValue::new("openinference.span.kind", "AGENT"));
    root.set_attribute(KeyValue::new("input.value", format!("question {i}")));
    let cx = Context::current_with_span(root);
    {
        let mut llm = tracer.start_with_context("llm", &cx);
        llm.set_attribute(KeyValue::new("openinference.span.kind", "LLM"));
        llm.set_attribute(KeyValue::new("llm.token_count.prompt", 100i64));
        llm.set_attribute(KeyValue::new("llm.token_count.completion", 20i64));
        llm.set_attribute(KeyValue::new("llm.token_count.total", 120i64));
        if fail {
            llm.set_status(Status::error("rate limited"));
        }
        llm.end();
    }
    let span = cx.span();
    span.set_attribute(KeyValue::new("output.value", format!("answer {i}")));
    span.set_attribute(KeyValue::new(
        "flags",
        opentelemetry::Value::Array(opentelemetry::Array::Bool(vec![true, false])),
    ));
    span.end();
}

#[test]
fn sdk_spans_become_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SessionStore::open(dir.path()).unwrap());
    let p = provider(&store, "rust-app");
    let tracer = p.tracer("tests");
    for i in 0..3 {
        turn(&tracer, "rust-chat", i, i == 2);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    turn(&tracer, "other-chat", 9, false);
    p.force_flush().unwrap();
    p.shutdown().unwrap();

    let turns = store.session_history("rust-app", "rust-chat").unwrap();
    assert_eq!(turns.len(), 3);
    for (i, t) in turns.iter().enumerate() {
        assert_eq!(t.input.as_ref().unwrap().value, format!("question {i}"));
        assert_eq!(t.output.as_ref().unwrap().value, format!("answer {i}"));
        assert_eq!(t.tokens.total, 120);
        assert_eq!(t.num_spans, 2);
        assert!(!t.root_missing);
    }
    assert_eq!(turns[2].status, TraceStatus::Error);
    let summary = store.session("rust-app", "rust-chat").unwrap().unwrap();
    assert_eq!((summary.num_traces, summary.num_traces_with_error), (3, 1));
    assert_eq!(summary.tokens.total, 360);

    // Parent links, scope and typed attributes survive.
    let t = store.trace(turns[0].trace_id).unwrap().unwrap();
    let root = t.spans.iter().find(|s| s.span.name == "agent").unwrap();
    let llm = t.spans.iter().find(|s| s.span.name == "llm").unwrap();
    assert_eq!(llm.span.parent_span_id, Some(root.span.span_id));
    assert_eq!(
        root.span.attribute("otel.scope.name"),
        Some(&AttributeValue::String("tests".into()))
    );
    assert_eq!(
        root.span.attribute("flags"),
        Some(&AttributeValue::BoolArray(vec![true, false]))
    );
    assert!(root.resource.iter().any(|kv| kv.key == "service.name"));
    assert_eq!(
        store
            .session_history("rust-app", "other-chat")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn project_override_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SessionStore::open(dir.path()).unwrap());
    let p = SdkTracerProvider::builder()
        .with_simple_exporter(StoreExporter::new(Arc::clone(&store)).with_project("forced"))
        .build();
    turn(&p.tracer("tests"), "s", 0, false);
    p.shutdown().unwrap();
    assert_eq!(store.projects().unwrap(), ["forced"]);
    assert_eq!(store.session_history("forced", "s").unwrap().len(), 1);

    // An exporter used directly: shut down once, then it refuses.
    let exporter = StoreExporter::new(Arc::clone(&store));
    exporter.force_flush().unwrap();
    exporter.shutdown().unwrap();
    assert!(matches!(
        exporter.shutdown(),
        Err(OTelSdkError::AlreadyShutdown)
    ));
    let refused = futures_executor_block_on(exporter.export(Vec::new()));
    assert!(matches!(refused, Err(OTelSdkError::AlreadyShutdown)));
}

/// Polls a future that never waits (the exporter's does not) to completion.
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = TaskContext::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

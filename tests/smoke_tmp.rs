#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
use span_sessions::*;
#[test]
fn smoke() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path())?;
    let t = TraceId([1; 16]);
    let child = Span::new(t, SpanId([2; 8]), Some(SpanId([1; 8])), "llm", 15, 18)
        .with_attribute("openinference.span.kind", "LLM")
        .with_attribute("llm.token_count.total", 10i64)
        .with_attribute("session.id", "s1");
    let r = store.append(&[ResourceSpans::for_project("p", vec![child.clone()])])?;
    assert_eq!(r.accepted, 1);
    let h = store.session_history("p", "s1")?;
    assert_eq!(h.len(), 1);
    assert!(h[0].root_missing);
    let root = Span::new(t, SpanId([1; 8]), None, "agent", 10, 20)
        .with_attribute("input.value", "hi")
        .with_attribute("output.value", "yo");
    let r = store.append(&[ResourceSpans::for_project("p", vec![root, child])])?;
    assert_eq!((r.accepted, r.duplicates), (1, 1));
    let h = store.session_history("p", "s1")?;
    println!("{h:#?}");
    assert!(!h[0].root_missing);
    let s = store.session("p", "s1")?.unwrap();
    println!("{s:#?}");
    assert_eq!(s.first_input.unwrap().value, "hi");
    let l = store.sessions("p", &SessionQuery::default())?;
    assert_eq!(l.items.len(), 1);
    let tr = store.trace(t)?.unwrap();
    assert_eq!(tr.spans.len(), 2);
    Ok(())
}

//! The README's example: append one turn and read the session back.
//! Run with `cargo run --release --example quickstart`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use span_sessions::{ResourceSpans, SessionStore, Span, SpanId, TraceId};

fn main() -> Result<(), span_sessions::Error> {
    let dir = std::env::temp_dir().join("span-sessions-quickstart");
    let _ = std::fs::remove_dir_all(&dir);
    let store = SessionStore::open(&dir)?;

    // One turn: the root span carries the input and output, a child LLM span the tokens.
    let trace = TraceId([7; 16]);
    let root = Span::new(trace, SpanId([1; 8]), None, "agent", 1_000, 9_000)
        .with_attribute("session.id", "chat-42")
        .with_attribute("input.value", "What is the capital of France?")
        .with_attribute("output.value", "Paris.");
    let llm = Span::new(
        trace,
        SpanId([2; 8]),
        Some(SpanId([1; 8])),
        "llm",
        2_000,
        8_000,
    )
    .with_attribute("openinference.span.kind", "LLM")
    .with_attribute("llm.token_count.total", 57i64);

    // Children usually arrive before their root; order does not matter.
    let report = store.append(&[ResourceSpans::for_project("support-bot", vec![llm, root])])?;
    assert_eq!(report.accepted, 2);

    for turn in store.session_history("support-bot", "chat-42")? {
        println!(
            "{} -> {:?} ({} tokens)",
            turn.input.unwrap().value,
            turn.output.map(|o| o.value),
            turn.tokens.total
        );
    }
    let summary = store
        .session("support-bot", "chat-42")?
        .expect("session exists");
    assert_eq!(summary.num_traces, 1);
    println!("store in {}", dir.display());
    Ok(())
}

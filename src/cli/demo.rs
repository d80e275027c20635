//! `span-sessions demo`: realistic sessions appended through the public
//! API, then printed.

use std::io::{self, Write};

use serde::Serialize;
use span_sessions::workload::{Workload, WorkloadConfig};
use span_sessions::{
    ResourceSpans, SessionQuery, SessionStore, Span, SpanId, StatusCode, TraceId, keys,
};

use super::CliResult;
use super::output::{print_sessions, print_turns, safe, write_json};

pub(crate) fn run(store: &SessionStore, json: bool) -> CliResult {
    #[derive(Serialize)]
    struct DemoJson {
        store: String,
        spans_appended: usize,
    }
    if json {
        let spans_appended = demo(store, &mut io::sink())?;
        let summary = DemoJson {
            store: store.dir().display().to_string(),
            spans_appended,
        };
        write_json(&mut io::stdout().lock(), &summary)?;
    } else {
        demo(store, &mut io::stdout().lock())?;
    }
    Ok(())
}

fn hand_written_sessions() -> Vec<ResourceSpans> {
    let t0 = 1_767_225_600_000_000_000u64;
    let sec = 1_000_000_000u64;
    let mut out = Vec::new();
    // A LangChain-style conversation: the session id is a `thread_id` in the
    // `metadata` JSON of the chain span.
    let mut spans = Vec::new();
    for (i, (q, a)) in [
        (
            "Plan a 3-day trip to Lisbon.",
            "Day 1: Alfama and the castle; day 2: Belém; day 3: Sintra.",
        ),
        (
            "Make day 2 rainy-day friendly.",
            "Swap Belém's gardens for the Gulbenkian museum and the Oceanário.",
        ),
    ]
    .iter()
    .enumerate()
    {
        let i = i as u64;
        let trace = TraceId([0x10 + i as u8; 16]);
        let start = t0 + i * 60 * sec;
        spans.push(
            Span::new(
                trace,
                SpanId([1; 8]),
                None,
                "RunnableSequence",
                start,
                start + 4 * sec,
            )
            .with_attribute(keys::SPAN_KIND, "CHAIN")
            .with_attribute(
                keys::METADATA,
                r#"{"thread_id": "trip-planner-7", "ls_provider": "openai"}"#,
            )
            .with_attribute(keys::INPUT_VALUE, *q)
            .with_attribute(keys::OUTPUT_VALUE, *a),
        );
        spans.push(
            Span::new(
                trace,
                SpanId([2; 8]),
                Some(SpanId([1; 8])),
                "ChatOpenAI",
                start + sec / 10,
                start + 3 * sec,
            )
            .with_attribute(keys::SPAN_KIND, "LLM")
            .with_attribute(keys::TOKEN_COUNT_PROMPT, 420i64 + 100 * i as i64)
            .with_attribute(keys::TOKEN_COUNT_COMPLETION, 96i64),
        );
    }
    out.push(ResourceSpans::for_project("travel-agent", spans));

    // A support chat in another project whose second turn failed a tool call.
    let mut spans = Vec::new();
    for (i, (q, a)) in [
        (
            "My order #5521 hasn't arrived.",
            "I'm sorry! Let me check the tracking for #5521.",
        ),
        (
            "Any update?",
            "The carrier shows it out for delivery today before 18:00.",
        ),
    ]
    .iter()
    .enumerate()
    {
        let i = i as u64;
        let trace = TraceId([0x20 + i as u8; 16]);
        let start = t0 + 10 * sec + i * 90 * sec;
        let mut tool = Span::new(
            trace,
            SpanId([3; 8]),
            Some(SpanId([1; 8])),
            "track_order",
            start + sec,
            start + 2 * sec,
        )
        .with_attribute(keys::SPAN_KIND, "TOOL")
        // OpenInference's `using_session` puts the id on every span of the turn.
        .with_attribute(keys::SESSION_ID, "ticket-5521");
        if i == 1 {
            tool = tool.with_status(StatusCode::Error, "carrier API timeout");
        }
        spans.push(tool);
        spans.push(
            Span::new(
                trace,
                SpanId([1; 8]),
                None,
                "support-agent",
                start,
                start + 5 * sec,
            )
            .with_attribute(keys::SPAN_KIND, "AGENT")
            .with_attribute(keys::SESSION_ID, "ticket-5521")
            .with_attribute(keys::USER_ID, "alice@example.com")
            .with_attribute(keys::INPUT_VALUE, *q)
            .with_attribute(keys::OUTPUT_VALUE, *a),
        );
    }
    out.push(ResourceSpans::for_project("support-bot", spans));
    out
}

fn demo(store: &SessionStore, out: &mut dyn Write) -> CliResult<usize> {
    let mut total = 0;
    // 1. Hand-written sessions, with the root of the last support turn held
    //    back: its children arrive first, as OpenTelemetry exporters send them.
    let mut batch = hand_written_sessions();
    let late_root = batch.get_mut(1).and_then(|rs| rs.spans.pop());
    let report = store.append(&batch)?;
    total += report.accepted;
    writeln!(
        out,
        "appended {} spans ({} duplicates, {} rejected)",
        report.accepted,
        report.duplicates,
        report.rejected.len()
    )?;
    if report.accepted == 0 && report.duplicates > 0 {
        // A second run on the same store: its root already arrived then.
        writeln!(
            out,
            "\nthe store already holds these spans (an earlier demo), late root included:"
        )?;
    } else {
        writeln!(
            out,
            "\nbefore the late root arrives, ticket-5521 shows a stand-in turn:"
        )?;
    }
    print_turns(out, &store.session_history("support-bot", "ticket-5521")?)?;
    if let Some(root) = late_root {
        total += store
            .append(&[ResourceSpans::for_project("support-bot", vec![root])])?
            .accepted;
    }
    writeln!(out, "\nafter it arrives:")?;
    print_turns(out, &store.session_history("support-bot", "ticket-5521")?)?;

    // 2. A few hundred generated turns across two more projects.
    let mut spans = 0;
    for b in Workload::new(WorkloadConfig {
        sessions: 40,
        ..WorkloadConfig::default()
    })
    .batches(500)
    {
        spans += store.append(&b)?.accepted;
    }
    total += spans;
    writeln!(out, "\nappended {spans} generated spans")?;

    for project in store.projects()? {
        let page = store.sessions(
            &project,
            &SessionQuery {
                limit: 5,
                ..SessionQuery::default()
            },
        )?;
        writeln!(out, "\nproject {}: newest sessions", safe(&project))?;
        print_sessions(out, &page.items)?;
    }
    writeln!(
        out,
        "\nhistory of travel-agent / trip-planner-7 (found through metadata.thread_id):"
    )?;
    print_turns(
        out,
        &store.session_history("travel-agent", "trip-planner-7")?,
    )?;
    store.sync()?;
    writeln!(out, "\nstore: {}", store.dir().display())?;
    Ok(total)
}

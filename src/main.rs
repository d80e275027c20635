//! The `span-sessions` command line: a demo and read commands over a store.
//! It uses only the library's public API, like any embedding program.

use std::path::PathBuf;
use std::process::ExitCode;

use span_sessions::workload::{Workload, WorkloadConfig};
use span_sessions::{
    Error, ResourceSpans, SessionQuery, SessionStore, SessionSummary, Span, SpanId, StatusCode,
    TraceId, Turn, keys, nanos_to_ms,
};

const USAGE: &str = "\
usage: span-sessions [--store DIR] COMMAND

commands:
  demo                               ingest realistic sessions into the store and print them
  projects                           list projects
  sessions --project P [--limit N] [--cursor C]
                                     list a project's sessions, newest first
  history --project P --session S [--limit N] [--cursor C]
                                     show a session's turns, oldest first
  trace TRACE_ID                     show every span of a trace

The store directory is --store, else $SPAN_SESSIONS_DIR, else ./span-sessions-data.";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("span-sessions: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line arguments: positionals and `--flag value` pairs.
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Args {
    fn parse(raw: Vec<String>) -> Result<Args, String> {
        let mut positional = Vec::new();
        let mut flags = Vec::new();
        let mut it = raw.into_iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if name == "help" {
                    return Err(USAGE.to_owned());
                }
                let value = it
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value\n\n{USAGE}"))?;
                flags.push((name.to_owned(), value));
            } else {
                positional.push(a);
            }
        }
        Ok(Args { positional, flags })
    }

    fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.flag(name)
            .ok_or_else(|| format!("--{name} is required\n\n{USAGE}"))
    }

    fn limit(&self, default: usize) -> Result<usize, String> {
        match self.flag("limit") {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--limit takes a number, not {v:?}")),
        }
    }
}

fn run(raw: Vec<String>) -> Result<(), String> {
    let args = Args::parse(raw)?;
    let dir = args
        .flag("store")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("SPAN_SESSIONS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("span-sessions-data"));
    let Some(command) = args.positional.first() else {
        return Err(USAGE.to_owned());
    };
    let open = || SessionStore::open(&dir).map_err(|e| e.to_string());
    let err = |e: Error| e.to_string();
    match command.as_str() {
        "demo" => demo(&open()?).map_err(err),
        "projects" => {
            for p in open()?.projects().map_err(err)? {
                println!("{p}");
            }
            Ok(())
        }
        "sessions" => {
            let store = open()?;
            let q = SessionQuery {
                limit: args.limit(50)?,
                cursor: args.flag("cursor").map(str::to_owned),
                ..SessionQuery::default()
            };
            let page = store.sessions(args.required("project")?, &q).map_err(err)?;
            print_sessions(&page.items);
            if let Some(c) = page.next_cursor {
                println!("next page: --cursor {c}");
            }
            Ok(())
        }
        "history" => {
            let store = open()?;
            let page = store
                .session_history_page(
                    args.required("project")?,
                    args.required("session")?,
                    args.limit(100)?,
                    args.flag("cursor"),
                )
                .map_err(err)?;
            print_turns(&page.items);
            if let Some(c) = page.next_cursor {
                println!("next page: --cursor {c}");
            }
            Ok(())
        }
        "trace" => {
            let id: TraceId = args
                .positional
                .get(1)
                .ok_or_else(|| format!("trace needs a TRACE_ID\n\n{USAGE}"))?
                .parse()
                .map_err(|e| format!("bad trace id: {e}"))?;
            match open()?.trace(id).map_err(err)? {
                None => Err(format!("trace {id} not found")),
                Some(t) => {
                    println!(
                        "trace {} project {} session {}",
                        t.trace_id,
                        t.project,
                        t.session_id.as_deref().unwrap_or("-")
                    );
                    for s in &t.spans {
                        let span = &s.span;
                        println!(
                            "  {} parent {} {:<12} {:>9.1} ms {:?}",
                            span.span_id,
                            span.parent_span_id
                                .map_or_else(|| "-".repeat(16), |p| p.to_string()),
                            span.name,
                            nanos_to_ms(
                                span.end_time_unix_nano
                                    .saturating_sub(span.start_time_unix_nano)
                            ),
                            span.status.code
                        );
                    }
                    Ok(())
                }
            }
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    }
}

fn clip(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        let mut out: String = one_line.chars().take(n.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn print_sessions(sessions: &[SessionSummary]) {
    println!(
        "{:<26} {:>6} {:>4} {:>8} {:>9} {:>9}  {:<30} {:<30}",
        "SESSION", "TRACES", "ERR", "TOKENS", "P50 ms", "P99 ms", "FIRST INPUT", "LAST OUTPUT"
    );
    for s in sessions {
        println!(
            "{:<26} {:>6} {:>4} {:>8} {:>9.1} {:>9.1}  {:<30} {:<30}",
            clip(&s.session_id, 26),
            s.num_traces,
            s.num_traces_with_error,
            s.tokens.total,
            s.trace_latency_ms.p50,
            s.trace_latency_ms.p99,
            clip(s.first_input.as_ref().map_or("", |v| &v.value), 30),
            clip(s.last_output.as_ref().map_or("", |v| &v.value), 30),
        );
    }
}

fn print_turns(turns: &[Turn]) {
    for t in turns {
        let flag = if t.root_missing {
            " (root missing)"
        } else {
            ""
        };
        println!(
            "turn {} · {:.0} ms · {} tokens · {} spans · {:?}{flag}",
            t.trace_id,
            t.latency_ms(),
            t.tokens.total,
            t.num_spans,
            t.status
        );
        println!(
            "  user:      {}",
            clip(t.input.as_ref().map_or("", |v| &v.value), 100)
        );
        println!(
            "  assistant: {}",
            clip(t.output.as_ref().map_or("", |v| &v.value), 100)
        );
    }
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

fn demo(store: &SessionStore) -> Result<(), Error> {
    // 1. Hand-written sessions, with the root of the last support turn held
    //    back: its children arrive first, as OpenTelemetry exporters send them.
    let mut batch = hand_written_sessions();
    let late_root = batch.get_mut(1).and_then(|rs| rs.spans.pop());
    let report = store.append(&batch)?;
    println!(
        "appended {} spans ({} duplicates, {} rejected)",
        report.accepted,
        report.duplicates,
        report.rejected.len()
    );
    println!("\nbefore the late root arrives, ticket-5521 shows a stand-in turn:");
    print_turns(&store.session_history("support-bot", "ticket-5521")?);
    if let Some(root) = late_root {
        store.append(&[ResourceSpans::for_project("support-bot", vec![root])])?;
    }
    println!("\nafter it arrives:");
    print_turns(&store.session_history("support-bot", "ticket-5521")?);

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
    println!("\nappended {spans} generated spans");

    for project in store.projects()? {
        let page = store.sessions(
            &project,
            &SessionQuery {
                limit: 5,
                ..SessionQuery::default()
            },
        )?;
        println!("\nproject {project}: newest sessions");
        print_sessions(&page.items);
    }
    println!("\nhistory of travel-agent / trip-planner-7 (found through metadata.thread_id):");
    print_turns(&store.session_history("travel-agent", "trip-planner-7")?);
    store.sync()?;
    println!("\nstore: {}", store.dir().display());
    Ok(())
}

//! The read commands: `projects`, `sessions`, `history`, `trace`, `stats`
//! and `verify`, over the public query API.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use span_sessions::{
    SessionFilter, SessionQuery, SessionSort, SessionStore, SessionSummary, Tokens, TraceId,
    TraceStatus, Turn,
};

use super::output::{
    HistoryJson, LatencyJson, SessionJson, SessionsJson, SpanJson, TokensJson, TraceJson, TurnJson,
    clip, print_sessions, print_trace, print_turns, write_json,
};
use super::{CliError, CliResult};

/// Page size used when a command walks a whole list.
const WALK_PAGE: usize = 1000;

pub(crate) fn projects(store: &SessionStore, json: bool) -> CliResult {
    #[derive(Serialize)]
    struct ProjectsJson {
        projects: Vec<String>,
    }
    let projects = store.projects()?;
    let mut out = io::stdout().lock();
    if json {
        write_json(&mut out, &ProjectsJson { projects })?;
    } else {
        for p in projects {
            writeln!(out, "{p}")?;
        }
    }
    Ok(())
}

/// The arguments of `sessions`.
pub(crate) struct SessionsArgs {
    pub project: String,
    pub sort: SessionSort,
    pub descending: bool,
    pub search: Option<String>,
    pub limit: usize,
    pub cursor: Option<String>,
}

pub(crate) fn sessions(store: &SessionStore, args: &SessionsArgs, json: bool) -> CliResult {
    let query = SessionQuery {
        sort: args.sort,
        descending: args.descending,
        limit: args.limit,
        cursor: args.cursor.clone(),
        filter: SessionFilter {
            search: args.search.clone(),
            ..SessionFilter::default()
        },
    };
    let page = store.sessions(&args.project, &query)?;
    let mut out = io::stdout().lock();
    if json {
        write_json(
            &mut out,
            &SessionsJson {
                sessions: page.items.iter().map(SessionJson::from).collect(),
                next_cursor: page.next_cursor.as_deref(),
            },
        )?;
    } else {
        print_sessions(&mut out, &page.items)?;
        if let Some(c) = &page.next_cursor {
            writeln!(out, "next page: --cursor {c}")?;
        }
    }
    Ok(())
}

pub(crate) fn history(
    store: &SessionStore,
    project: &str,
    session: &str,
    limit: usize,
    cursor: Option<&str>,
    json: bool,
) -> CliResult {
    let page = store.session_history_page(project, session, limit, cursor)?;
    let mut out = io::stdout().lock();
    if json {
        write_json(
            &mut out,
            &HistoryJson {
                project,
                session_id: session,
                turns: page.items.iter().map(TurnJson::from).collect(),
                next_cursor: page.next_cursor.as_deref(),
            },
        )?;
    } else {
        if page.items.is_empty() && cursor.is_none() {
            return Err(CliError(format!(
                "no session {session:?} in project {project:?}"
            )));
        }
        print_turns(&mut out, &page.items)?;
        if let Some(c) = &page.next_cursor {
            writeln!(out, "next page: --cursor {c}")?;
        }
    }
    Ok(())
}

pub(crate) fn trace(store: &SessionStore, id: TraceId, json: bool) -> CliResult {
    let Some(t) = store.trace(id)? else {
        return Err(CliError(format!("trace {id} not found")));
    };
    let mut out = io::stdout().lock();
    if json {
        write_json(
            &mut out,
            &TraceJson {
                trace_id: t.trace_id.to_string(),
                spans: t.spans.iter().map(SpanJson::from).collect(),
            },
        )?;
    } else {
        print_trace(&mut out, &t)?;
    }
    Ok(())
}

/// Every session of a project, page by page.
fn for_each_session(
    store: &SessionStore,
    project: &str,
    mut f: impl FnMut(&SessionSummary) -> CliResult,
) -> CliResult {
    let mut cursor = None;
    loop {
        let q = SessionQuery {
            limit: WALK_PAGE,
            cursor,
            ..SessionQuery::default()
        };
        let page = store.sessions(project, &q)?;
        for s in &page.items {
            f(s)?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// Every turn of a session, page by page.
fn for_each_turn(
    store: &SessionStore,
    s: &SessionSummary,
    mut f: impl FnMut(&Turn) -> CliResult,
) -> CliResult {
    let mut cursor: Option<String> = None;
    loop {
        let page =
            store.session_history_page(&s.project, &s.session_id, WALK_PAGE, cursor.as_deref())?;
        for t in &page.items {
            f(t)?;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

#[derive(Serialize)]
struct ProjectStatsJson {
    project: String,
    sessions: u64,
    traces: u64,
    spans: u64,
    tokens: TokensJson,
    session_duration_ms: LatencyJson,
}

#[derive(Serialize)]
struct StatsJson {
    store: String,
    disk_bytes: u64,
    projects: Vec<ProjectStatsJson>,
}

fn disk_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            total += disk_bytes(&entry.path())?;
        } else if ty.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

pub(crate) fn stats(store: &SessionStore, json: bool) -> CliResult {
    let mut projects = Vec::new();
    for project in store.projects()? {
        let p = store.project_stats(&project)?.unwrap_or_default();
        projects.push(ProjectStatsJson {
            project,
            sessions: p.sessions,
            traces: p.traces,
            spans: p.spans,
            tokens: p.tokens.into(),
            session_duration_ms: p.session_duration_ms.into(),
        });
    }
    let stats = StatsJson {
        store: store.dir().display().to_string(),
        disk_bytes: disk_bytes(store.dir())
            .map_err(|e| CliError(format!("measuring {}: {e}", store.dir().display())))?,
        projects,
    };
    let mut out = io::stdout().lock();
    if json {
        return Ok(write_json(&mut out, &stats)?);
    }
    writeln!(
        out,
        "store {} · {:.1} MiB on disk",
        stats.store,
        stats.disk_bytes as f64 / f64::from(1u32 << 20)
    )?;
    writeln!(
        out,
        "{:<24} {:>9} {:>9} {:>10} {:>12} {:>14} {:>14}",
        "PROJECT", "SESSIONS", "TRACES", "SPANS", "TOKENS", "SESSION P50 ms", "SESSION P99 ms"
    )?;
    for p in &stats.projects {
        writeln!(
            out,
            "{:<24} {:>9} {:>9} {:>10} {:>12} {:>14.1} {:>14.1}",
            clip(&p.project, 24),
            p.sessions,
            p.traces,
            p.spans,
            p.tokens.total,
            p.session_duration_ms.p50,
            p.session_duration_ms.p99,
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct VerifyJson {
    ok: bool,
    sessions: u64,
    traces: u64,
    spans: u64,
    problems: Vec<String>,
    /// What was not checked, and why.
    not_checked: &'static str,
}

const VERIFY_NOT_CHECKED: &str = "log frames of traces without a session id, and frames no index points to \
     (a full frame scan needs SessionStore::verify in the library)";

/// Most problems listed; the count goes on.
const MAX_PROBLEMS: usize = 100;

impl VerifyJson {
    fn problem(&mut self, count: &mut usize, p: String) {
        *count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

pub(crate) fn verify(store: &SessionStore, json: bool) -> CliResult {
    let mut report = VerifyJson {
        ok: true,
        sessions: 0,
        traces: 0,
        spans: 0,
        problems: Vec::new(),
        not_checked: VERIFY_NOT_CHECKED,
    };
    let mut problems = 0usize;
    for project in store.projects()? {
        let before = (report.sessions, report.traces, report.spans);
        for_each_session(store, &project, |s| {
            report.sessions += 1;
            let mut turns = Vec::new();
            for_each_turn(store, s, |t| {
                turns.push(t.clone());
                Ok(())
            })?;
            for p in check_session(store, s, &turns, &mut report)? {
                report.problem(&mut problems, p);
            }
            Ok(())
        })?;
        // The project's counters cover every trace; sessions hold a subset.
        let (sessions, traces, spans) = (
            report.sessions - before.0,
            report.traces - before.1,
            report.spans - before.2,
        );
        match store.project_stats(&project)? {
            None => report.problem(
                &mut problems,
                format!("project {project:?} is listed but has no figures"),
            ),
            Some(ps) if ps.sessions != sessions || ps.traces < traces || ps.spans < spans => report
                .problem(
                    &mut problems,
                    format!(
                        "project {project:?}: its figures ({} sessions, {} traces, {} spans) \
                         disagree with its sessions ({sessions} sessions, {traces} traces, {spans} spans)",
                        ps.sessions, ps.traces, ps.spans
                    ),
                ),
            Some(_) => {}
        }
    }
    report.ok = problems == 0;
    if problems > report.problems.len() {
        report
            .problems
            .push(format!("... and {} more", problems - report.problems.len()));
    }
    let mut out = io::stdout().lock();
    if json {
        write_json(&mut out, &report)?;
    } else {
        writeln!(
            out,
            "checked {} sessions, {} traces, {} spans: {}",
            report.sessions,
            report.traces,
            report.spans,
            if report.ok { "ok" } else { "PROBLEMS" }
        )?;
        for p in &report.problems {
            writeln!(out, "  {p}")?;
        }
        writeln!(out, "not checked: {}", report.not_checked)?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError(format!("verify found {problems} problem(s)")))
    }
}

/// Compares a session's summary with its turns, and each turn with the
/// spans read back from the log.
fn check_session(
    store: &SessionStore,
    s: &SessionSummary,
    turns: &[Turn],
    report: &mut VerifyJson,
) -> CliResult<Vec<String>> {
    let mut problems = Vec::new();
    let at = format!("session {:?} of project {:?}", s.session_id, s.project);
    let errors = turns
        .iter()
        .filter(|t| t.status == TraceStatus::Error)
        .count() as u64;
    let tokens = turns
        .iter()
        .fold(Tokens::default(), |acc, t| acc.saturating_add(t.tokens));
    let start = turns.iter().map(|t| t.start_time_unix_nano).min();
    let end = turns.iter().map(|t| t.end_time_unix_nano).max();
    if s.num_traces != turns.len() as u64 {
        problems.push(format!(
            "{at}: summary says {} traces, history has {}",
            s.num_traces,
            turns.len()
        ));
    }
    if s.num_traces_with_error != errors {
        problems.push(format!(
            "{at}: summary says {} traces with errors, history has {errors}",
            s.num_traces_with_error
        ));
    }
    if s.tokens != tokens {
        problems.push(format!(
            "{at}: summary tokens {:?} differ from the turns' sum {tokens:?}",
            s.tokens
        ));
    }
    if start != Some(s.start_time_unix_nano) || end != Some(s.end_time_unix_nano) {
        problems.push(format!(
            "{at}: summary span [{}, {}] differs from the turns' [{start:?}, {end:?}]",
            s.start_time_unix_nano, s.end_time_unix_nano
        ));
    }
    for t in turns {
        report.traces += 1;
        let at = format!("{at}, trace {}", t.trace_id);
        let trace = match store.trace(t.trace_id) {
            Ok(Some(trace)) => trace,
            Ok(None) => {
                problems.push(format!("{at}: listed in the history but not found"));
                continue;
            }
            Err(e) => {
                problems.push(format!("{at}: reading its spans failed: {e}"));
                continue;
            }
        };
        report.spans += trace.spans.len() as u64;
        if trace.project != s.project || trace.session_id.as_deref() != Some(&s.session_id) {
            problems.push(format!(
                "{at}: the trace says project {:?}, session {:?}",
                trace.project, trace.session_id
            ));
        }
        if trace.spans.len() as u64 != t.num_spans {
            problems.push(format!(
                "{at}: the turn counts {} spans, the log holds {}",
                t.num_spans,
                trace.spans.len()
            ));
        }
        let span_start = trace
            .spans
            .iter()
            .map(|x| x.span.start_time_unix_nano)
            .min();
        let span_end = trace.spans.iter().map(|x| x.span.end_time_unix_nano).max();
        if span_start != Some(t.start_time_unix_nano) || span_end != Some(t.end_time_unix_nano) {
            problems.push(format!(
                "{at}: the turn spans [{}, {}], its spans [{span_start:?}, {span_end:?}]",
                t.start_time_unix_nano, t.end_time_unix_nano
            ));
        }
        if let Some(bad) = trace.spans.iter().find(|x| x.span.trace_id != t.trace_id) {
            problems.push(format!(
                "{at}: span {} read back with trace id {}",
                bad.span.span_id, bad.span.trace_id
            ));
        }
    }
    Ok(problems)
}

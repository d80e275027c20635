//! The read commands: `projects`, `sessions`, `history`, `trace`, `stats`
//! and `verify`, over the public query API.

use std::io::{self, Write};
use std::path::Path;

use serde::Serialize;
use span_sessions::{
    SessionFilter, SessionQuery, SessionSort, SessionStore, StoreOptions, TraceId,
};

use super::output::{
    HistoryJson, LatencyJson, SessionJson, SessionsJson, SpanJson, TokensJson, TraceJson, TurnJson,
    clip, print_sessions, print_trace, print_turns, safe, write_json,
};
use super::{CliError, CliResult};

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
            writeln!(out, "{}", safe(&p))?;
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
    // An unknown session is an error in both forms, as an unknown trace is.
    if page.items.is_empty() && cursor.is_none() {
        return Err(CliError(format!(
            "no session {session:?} in project {project:?}"
        )));
    }
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
                project: &t.project,
                session_id: t.session_id.as_deref(),
                spans: t.spans.iter().map(SpanJson::from).collect(),
            },
        )?;
    } else {
        print_trace(&mut out, &t)?;
    }
    Ok(())
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
    log_bytes: u64,
    index_bytes: u64,
    segments: Vec<SegmentJson>,
    projects: Vec<ProjectStatsJson>,
}

#[derive(Serialize)]
struct SegmentJson {
    path: String,
    base_lsn: u64,
    bytes: u64,
    sealed: bool,
    live_bytes: u64,
    dead_bytes: u64,
}

/// Bytes of the files under `dir`, recursively.
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

/// Bytes of the files under `dir`, recursively, as a command's error.
pub(crate) fn dir_bytes(dir: &Path) -> Result<u64, CliError> {
    disk_bytes(dir).map_err(|e| CliError(format!("measuring {}: {e}", dir.display())))
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
    let whole = store.stats()?;
    let stats = StatsJson {
        store: store.dir().display().to_string(),
        disk_bytes: dir_bytes(store.dir())?,
        log_bytes: whole.log_bytes,
        index_bytes: whole.index_bytes,
        segments: whole
            .segments
            .iter()
            .map(|s| SegmentJson {
                path: s.path.display().to_string(),
                base_lsn: s.base_lsn,
                bytes: s.bytes,
                sealed: s.sealed,
                live_bytes: s.live_bytes,
                dead_bytes: s.dead_bytes,
            })
            .collect(),
        projects,
    };
    let mut out = io::stdout().lock();
    if json {
        return Ok(write_json(&mut out, &stats)?);
    }
    writeln!(
        out,
        "store {} · {:.1} MiB on disk · log {:.1} MiB in {} segments · index {:.1} MiB",
        stats.store,
        stats.disk_bytes as f64 / f64::from(1u32 << 20),
        stats.log_bytes as f64 / f64::from(1u32 << 20),
        stats.segments.len(),
        stats.index_bytes as f64 / f64::from(1u32 << 20),
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
    frames: u64,
    log_bytes: u64,
    sessions: u64,
    traces: u64,
    spans: u64,
    problems: Vec<String>,
}

/// What to say after problems: the command that repairs them.
pub(crate) const REPAIR_HINT: &str =
    "`span-sessions repair` keeps every intact log frame and rebuilds the indexes";

fn checked(store: &SessionStore) -> CliResult<VerifyJson> {
    let checked = store.verify()?;
    let stats = store.stats()?;
    Ok(VerifyJson {
        ok: checked.is_ok(),
        frames: checked.frames,
        log_bytes: checked.log_bytes,
        sessions: stats.sessions,
        traces: stats.traces,
        spans: stats.spans,
        problems: checked.problems,
    })
}

fn write_checked(out: &mut impl Write, report: &VerifyJson) -> io::Result<()> {
    if report.frames == 0 && !report.ok {
        // The log's check stopped at a damaged frame (the problem
        // below names it); the index tables were not compared.
        writeln!(
            out,
            "stopped at a damaged log frame ({} bytes of log): PROBLEMS",
            report.log_bytes,
        )?;
    } else {
        writeln!(
            out,
            "checked {} log frames ({} bytes) and every index table: {} sessions, {} traces, {} spans: {}",
            report.frames,
            report.log_bytes,
            report.sessions,
            report.traces,
            report.spans,
            if report.ok { "ok" } else { "PROBLEMS" }
        )?;
    }
    for p in &report.problems {
        writeln!(out, "  {}", safe(p))?;
    }
    Ok(())
}

/// Checks every log frame and that every index table equals a replay of
/// the log (`SessionStore::verify`).
pub(crate) fn verify(store: &SessionStore, json: bool) -> CliResult {
    let report = checked(store)?;
    let mut out = io::stdout().lock();
    if json {
        write_json(&mut out, &report)?;
    } else {
        write_checked(&mut out, &report)?;
    }
    if report.ok {
        Ok(())
    } else {
        Err(CliError(format!(
            "verify found {} problem(s); {REPAIR_HINT}",
            report.problems.len()
        )))
    }
}

#[derive(Serialize)]
struct DroppedJson {
    segment: String,
    offset: u64,
    bytes: u64,
    reason: String,
}

#[derive(Serialize)]
struct RepairJson {
    frames_kept: u64,
    dropped: Vec<DroppedJson>,
    original_log: Option<String>,
    index_rebuilt: Option<String>,
    verify: VerifyJson,
}

/// Repairs the store in `dir`: opens it salvaging the log
/// (`StoreOptions::salvage_log`: every intact frame kept, every damaged
/// range dropped, the original log kept beside it) and rebuilding the
/// indexes from it, then verifies the result.
pub(crate) fn repair(dir: &Path, json: bool) -> CliResult {
    super::require_store(dir)?;
    let store = StoreOptions::default()
        .salvage_log(true)
        .open(dir)
        .map_err(|e| CliError(format!("repairing store {}: {e}", dir.display())))?;
    let opened = store.open_report();
    let salvage = opened.salvage.clone().unwrap_or_default();
    let report = RepairJson {
        frames_kept: salvage.frames_kept,
        dropped: salvage
            .dropped
            .iter()
            .map(|d| DroppedJson {
                segment: d.segment.display().to_string(),
                offset: d.offset,
                bytes: d.bytes,
                reason: d.reason.clone(),
            })
            .collect(),
        original_log: salvage.original.as_ref().map(|p| p.display().to_string()),
        index_rebuilt: opened.index_rebuilt.clone(),
        verify: checked(&store)?,
    };
    let mut out = io::stdout().lock();
    if json {
        write_json(&mut out, &report)?;
    } else {
        let dropped: u64 = report.dropped.iter().map(|d| d.bytes).sum();
        match &report.original_log {
            None => writeln!(
                out,
                "log intact: {} frames kept, nothing dropped",
                report.frames_kept
            )?,
            Some(original) => writeln!(
                out,
                "log salvaged: {} frames kept, {} damaged range(s) of {dropped} bytes dropped; the original log is kept at {}",
                report.frames_kept,
                report.dropped.len(),
                safe(original)
            )?,
        }
        for d in &report.dropped {
            writeln!(
                out,
                "  dropped {} bytes at offset {} of {}: {}",
                d.bytes,
                d.offset,
                safe(&d.segment),
                safe(&d.reason)
            )?;
        }
        if let Some(why) = &report.index_rebuilt {
            writeln!(out, "indexes rebuilt from the log ({})", safe(why))?;
        }
        write_checked(&mut out, &report.verify)?;
    }
    if report.verify.ok {
        Ok(())
    } else {
        Err(CliError(format!(
            "the repaired store still has {} problem(s)",
            report.verify.problems.len()
        )))
    }
}

//! The SQLite baseline: the same spans in one `spans` table, ingested in
//! one transaction per batch, and the same questions asked the SQL way
//! (GROUP BY at query time, as Phoenix does).
//!
//! Schema: one row per span with the columns the queries need extracted
//! at ingest (project, ids, times, OpenInference span kind, session id,
//! root input/output, token counts) and the attributes as JSON text, so
//! that a row holds the whole span as span-sessions' log record does.
//! Indexes: `(project, session_id, start_time)` and a unique
//! `(trace_id, span_id)`, which serves trace look-ups and makes a
//! re-sent span a no-op (`INSERT OR IGNORE`), the idempotency
//! span-sessions has. The page cache is 64 MiB, like span-sessions' redb
//! cache.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use span_sessions::{
    AttributeValue, KeyValue, ResourceSpans, Span, SpanId, StatusCode, TraceId, keys,
};

/// SQLite's `synchronous` setting, in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// `NORMAL`: a commit is not fsynced (the WAL is synced at
    /// checkpoints); survives a process crash, not a power loss. The
    /// same promise as `Durability::Buffered`.
    Normal,
    /// `FULL`: every commit fsyncs the WAL; the promise of
    /// `Durability::Sync` and `GroupCommit`.
    Full,
}

impl Synchronous {
    pub fn label(self) -> &'static str {
        match self {
            Synchronous::Normal => "sqlite_normal",
            Synchronous::Full => "sqlite_full",
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spans (
    project TEXT NOT NULL,
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    parent_span_id BLOB,
    name TEXT NOT NULL,
    span_kind TEXT,
    start_time INTEGER NOT NULL,
    end_time INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    session_id TEXT,
    user_id TEXT,
    input TEXT,
    output TEXT,
    tokens_prompt INTEGER NOT NULL,
    tokens_completion INTEGER NOT NULL,
    tokens_total INTEGER NOT NULL,
    attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_session ON spans (project, session_id, start_time);
CREATE UNIQUE INDEX IF NOT EXISTS spans_trace ON spans (trace_id, span_id);
";

const INSERT: &str = "INSERT OR IGNORE INTO spans VALUES
    (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)";

/// Opens (or creates) the baseline database at `path`.
pub fn open(path: &Path, sync: Synchronous) -> Connection {
    let conn = Connection::open(path).expect("open sqlite");
    configure(&conn, sync);
    conn.execute_batch(SCHEMA).expect("schema");
    conn
}

/// WAL, the given `synchronous`, a 64 MiB page cache.
pub fn configure(conn: &Connection, sync: Synchronous) {
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    let sync = match sync {
        Synchronous::Normal => "NORMAL",
        Synchronous::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous={sync}; PRAGMA cache_size=-65536; PRAGMA busy_timeout=60000;"
    ))
    .expect("pragmas");
}

fn text(span: &Span, key: &str) -> Option<String> {
    span.attribute(key).map(|v| match v {
        AttributeValue::String(s) => s.clone(),
        other => serde_json::to_string(other).expect("json"),
    })
}

fn int(span: &Span, key: &str) -> i64 {
    span.attribute(key)
        .and_then(AttributeValue::as_i64)
        .unwrap_or(0)
}

fn status_code(code: StatusCode) -> i64 {
    match code {
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
        StatusCode::Unset => 0,
    }
}

/// Appends a batch in one transaction (`BEGIN IMMEDIATE`, so that
/// concurrent writers queue instead of failing). Returns rows inserted.
pub fn append(conn: &Connection, batch: &[ResourceSpans]) -> usize {
    conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
    let mut inserted = 0;
    {
        let mut stmt = conn.prepare_cached(INSERT).expect("prepare");
        for rs in batch {
            let project = rs.project();
            for s in &rs.spans {
                let kind = text(s, keys::SPAN_KIND);
                let attributes = serde_json::to_string(&s.attributes).expect("json");
                inserted += stmt
                    .execute(params![
                        project,
                        &s.trace_id.0[..],
                        &s.span_id.0[..],
                        s.parent_span_id.as_ref().map(|p| p.0.to_vec()),
                        s.name,
                        kind,
                        s.start_time_unix_nano as i64,
                        s.end_time_unix_nano as i64,
                        status_code(s.status.code),
                        text(s, keys::SESSION_ID),
                        text(s, keys::USER_ID),
                        text(s, keys::INPUT_VALUE),
                        text(s, keys::OUTPUT_VALUE),
                        int(s, keys::TOKEN_COUNT_PROMPT),
                        int(s, keys::TOKEN_COUNT_COMPLETION),
                        int(s, keys::TOKEN_COUNT_TOTAL),
                        attributes,
                    ])
                    .expect("insert");
            }
        }
    }
    conn.execute_batch("COMMIT").expect("commit");
    inserted
}

/// One turn of a session's history, as SQL computes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnRow {
    pub trace_id: TraceId,
    pub start: u64,
    pub end: u64,
    pub num_spans: u64,
    pub tokens_prompt: u64,
    pub tokens_completion: u64,
    pub tokens_total: u64,
    pub has_error: bool,
    pub input: Option<String>,
    pub output: Option<String>,
}

/// The per-trace aggregation over the roots in `roots` (a CTE of root
/// rows with `trace_id`, `input`, `output`).
const TURNS_OF_ROOTS: &str = "
SELECT r.trace_id, min(s.start_time), max(s.end_time), count(*),
       sum(CASE WHEN s.span_kind = 'LLM' THEN s.tokens_prompt ELSE 0 END),
       sum(CASE WHEN s.span_kind = 'LLM' THEN s.tokens_completion ELSE 0 END),
       sum(CASE WHEN s.span_kind = 'LLM' THEN s.tokens_total ELSE 0 END),
       max(s.status_code = 2), r.input, r.output
FROM roots r JOIN spans s ON s.trace_id = r.trace_id
GROUP BY r.trace_id
ORDER BY min(s.start_time), r.trace_id";

fn turn_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TurnRow> {
    let id: Vec<u8> = r.get(0)?;
    Ok(TurnRow {
        trace_id: TraceId(id.try_into().expect("16-byte trace id")),
        start: r.get::<_, i64>(1)? as u64,
        end: r.get::<_, i64>(2)? as u64,
        num_spans: r.get::<_, i64>(3)? as u64,
        tokens_prompt: r.get::<_, i64>(4)? as u64,
        tokens_completion: r.get::<_, i64>(5)? as u64,
        tokens_total: r.get::<_, i64>(6)? as u64,
        has_error: r.get(7)?,
        input: r.get(8)?,
        output: r.get(9)?,
    })
}

/// A session's whole history: the roots of its traces, each joined to
/// its trace's spans and grouped, ordered by trace start.
pub fn session_history(conn: &Connection, project: &str, session_id: &str) -> Vec<TurnRow> {
    let sql = format!(
        "WITH roots AS (SELECT trace_id, input, output FROM spans
            WHERE project = ?1 AND session_id = ?2 AND parent_span_id IS NULL)
         {TURNS_OF_ROOTS}"
    );
    let mut stmt = conn.prepare_cached(&sql).expect("prepare");
    stmt.query_map(params![project, session_id], turn_row)
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

/// The first `limit` turns of a session. The roots are taken in
/// (start, trace id) order from the session index before the GROUP BY,
/// the cheapest correct plan when a root starts its trace (as in this
/// workload), so only `limit` traces are aggregated.
pub fn session_history_first_page(
    conn: &Connection,
    project: &str,
    session_id: &str,
    limit: usize,
) -> Vec<TurnRow> {
    let sql = format!(
        "WITH roots AS (SELECT trace_id, input, output FROM spans
            WHERE project = ?1 AND session_id = ?2 AND parent_span_id IS NULL
            ORDER BY start_time, trace_id LIMIT ?3)
         {TURNS_OF_ROOTS}"
    );
    let mut stmt = conn.prepare_cached(&sql).expect("prepare");
    stmt.query_map(params![project, session_id, limit as i64], turn_row)
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

/// One row of the session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub session_id: String,
    pub start: u64,
    pub end: u64,
    pub num_traces: u64,
    pub tokens_total: u64,
    pub first_input: Option<String>,
    pub last_output: Option<String>,
}

/// Summary columns for the sessions in `page` (a CTE of `session_id`,
/// `first_start`, `last_end`, `num_traces`): tokens over the LLM spans of
/// their traces, the first root's input and the last root's output.
const SUMMARY_OF_PAGE: &str = "
SELECT p.session_id, p.first_start, p.last_end, p.num_traces,
    (SELECT coalesce(sum(s.tokens_total), 0) FROM spans r JOIN spans s ON s.trace_id = r.trace_id
        WHERE r.project = ?1 AND r.session_id = p.session_id AND r.parent_span_id IS NULL
          AND s.span_kind = 'LLM'),
    (SELECT input FROM spans WHERE project = ?1 AND session_id = p.session_id
        AND parent_span_id IS NULL ORDER BY start_time, trace_id LIMIT 1),
    (SELECT output FROM spans WHERE project = ?1 AND session_id = p.session_id
        AND parent_span_id IS NULL ORDER BY start_time DESC, trace_id DESC LIMIT 1)
FROM page p";

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        session_id: r.get(0)?,
        start: r.get::<_, i64>(1)? as u64,
        end: r.get::<_, i64>(2)? as u64,
        num_traces: r.get::<_, i64>(3)? as u64,
        tokens_total: r.get::<_, i64>(4)? as u64,
        first_input: r.get(5)?,
        last_output: r.get(6)?,
    })
}

/// The first page of a project's sessions, newest start first: a GROUP
/// BY session over the project's roots, sorted and cut to `limit`, then
/// the summary columns of those sessions.
pub fn sessions_first_page(conn: &Connection, project: &str, limit: usize) -> Vec<SessionRow> {
    let sql = format!(
        "WITH page AS (SELECT session_id, min(start_time) AS first_start,
                max(end_time) AS last_end, count(*) AS num_traces
            FROM spans WHERE project = ?1 AND session_id IS NOT NULL AND parent_span_id IS NULL
            GROUP BY session_id ORDER BY first_start DESC, session_id DESC LIMIT ?2)
         {SUMMARY_OF_PAGE} ORDER BY p.first_start DESC, p.session_id DESC"
    );
    let mut stmt = conn.prepare_cached(&sql).expect("prepare");
    stmt.query_map(params![project, limit as i64], session_row)
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

/// The same first page, restricted to sessions where some root's input
/// or output contains `term` (`LIKE`: ASCII case-insensitive).
pub fn sessions_first_page_matching(
    conn: &Connection,
    project: &str,
    term: &str,
    limit: usize,
) -> Vec<SessionRow> {
    let pattern = format!(
        "%{}%",
        term.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let sql = format!(
        "WITH page AS (SELECT session_id, min(start_time) AS first_start,
                max(end_time) AS last_end, count(*) AS num_traces
            FROM spans WHERE project = ?1 AND session_id IS NOT NULL AND parent_span_id IS NULL
            GROUP BY session_id
            HAVING max(input LIKE ?3 ESCAPE '\\' OR output LIKE ?3 ESCAPE '\\')
            ORDER BY first_start DESC, session_id DESC LIMIT ?2)
         {SUMMARY_OF_PAGE} ORDER BY p.first_start DESC, p.session_id DESC"
    );
    let mut stmt = conn.prepare_cached(&sql).expect("prepare");
    stmt.query_map(params![project, limit as i64, pattern], session_row)
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

/// One session's summary row; `None` if it has no traces.
pub fn session(conn: &Connection, project: &str, session_id: &str) -> Option<SessionRow> {
    let sql = format!(
        "WITH page AS (SELECT session_id, min(start_time) AS first_start,
                max(end_time) AS last_end, count(*) AS num_traces
            FROM spans WHERE project = ?1 AND session_id = ?2 AND parent_span_id IS NULL
            GROUP BY session_id)
         {SUMMARY_OF_PAGE}"
    );
    let mut stmt = conn.prepare_cached(&sql).expect("prepare");
    stmt.query_row(params![project, session_id], session_row)
        .optional()
        .expect("query")
}

/// Every span of a trace in (start, span id) order, decoded back into
/// `Span`s (attributes from their JSON), as `SessionStore::trace` does.
pub fn trace(conn: &Connection, trace_id: TraceId) -> Vec<Span> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT span_id, parent_span_id, name, start_time, end_time, status_code, attributes
             FROM spans WHERE trace_id = ?1 ORDER BY start_time, span_id",
        )
        .expect("prepare");
    stmt.query_map(params![&trace_id.0[..]], |r| {
        let id: Vec<u8> = r.get(0)?;
        let parent: Option<Vec<u8>> = r.get(1)?;
        let attributes: String = r.get(6)?;
        let mut span = Span::new(
            trace_id,
            SpanId(id.try_into().expect("8-byte span id")),
            parent.map(|p| SpanId(p.try_into().expect("8-byte span id"))),
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)? as u64,
            r.get::<_, i64>(4)? as u64,
        );
        if r.get::<_, i64>(5)? == 2 {
            span = span.with_status(StatusCode::Error, "");
        }
        span.attributes = serde_json::from_str::<Vec<KeyValue>>(&attributes).expect("json");
        Ok(span)
    })
    .expect("query")
    .collect::<rusqlite::Result<_>>()
    .expect("rows")
}

/// Number of rows.
pub fn count(conn: &Connection) -> u64 {
    conn.query_row("SELECT count(*) FROM spans", [], |r| r.get::<_, i64>(0))
        .expect("count") as u64
}

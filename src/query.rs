//! Read paths. Each runs on one redb snapshot, so it sees whole batches
//! only. Lists and histories read stored summaries, never span payloads;
//! only [`trace`] reads spans back from the log.

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::{ReadTransaction, ReadableTable};

use crate::error::{Error, Result};
use crate::hashing::FastSet;
use crate::index::posting_runs;
use crate::index::runs::{self, SESSION_RUNS};
use crate::index::search::{self, ChunkSet, PostingBuffer};
use crate::index::session::{SessionState, quantile, quantile_of, sort_values};
use crate::index::{
    PROJECT_STATS, PROJECTS, ProjectCounters, SEARCH, SESSION_IDS, SESSIONS, TRACE_HOMES,
    TRACE_RECORDS, TURNS, decode, decode_posting, decode_session, decode_turn, decode_turn_end,
    increment, session_id_key, split_turn_key, turn_key,
};
use crate::model::{
    LatencyQuantiles, Page, SessionSummary, StoredSpan, Tokens, Trace, TraceId, Turn, nanos_to_ms,
};

/// The orders in which the session list can be sorted. Ties are broken by
/// session id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionSort {
    /// Start of the earliest trace.
    #[default]
    StartTime,
    /// End of the latest trace (last activity).
    EndTime,
    /// Number of traces.
    NumTraces,
    /// Total tokens.
    TotalTokens,
    /// End minus start.
    Duration,
}

impl SessionSort {
    fn kind(self) -> u8 {
        match self {
            SessionSort::StartTime => 0,
            SessionSort::EndTime => 1,
            SessionSort::NumTraces => 2,
            SessionSort::TotalTokens => 3,
            SessionSort::Duration => 4,
        }
    }
}

/// Which sessions to keep. Every set field must hold; the default keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Keep sessions whose `[start, end]` overlaps this inclusive window of
    /// unix nanoseconds (a long session that started before the window and
    /// is still active in it is kept).
    pub time_range: Option<(u64, u64)>,
    /// Keep sessions whose user id (contract rule 6) equals this.
    pub user_id: Option<String>,
    /// Keep sessions with at least this many traces.
    pub min_traces: Option<u64>,
    /// Keep sessions with at most this many traces.
    pub max_traces: Option<u64>,
    /// `Some(true)`: only sessions with an error trace; `Some(false)`: only without.
    pub has_errors: Option<bool>,
    /// Keep sessions where some trace's root input or output contains this
    /// text, compared case-insensitively (each character lowercased on its
    /// own, with the full Unicode mapping; `ς` as `σ`). Terms of
    /// three or more characters use the trigram index; shorter ones are
    /// checked against every session that passes the other filters.
    pub search: Option<String>,
}

/// A request for one page of a project's session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionQuery {
    /// Sort key.
    pub sort: SessionSort,
    /// Largest value first when true (the default: newest first).
    pub descending: bool,
    /// Page size (at least 1).
    pub limit: usize,
    /// The `next_cursor` of the previous page, `None` for the first page.
    pub cursor: Option<String>,
    /// Which sessions to list.
    pub filter: SessionFilter,
}

impl Default for SessionQuery {
    fn default() -> Self {
        Self {
            sort: SessionSort::StartTime,
            descending: true,
            limit: 50,
            cursor: None,
            filter: SessionFilter::default(),
        }
    }
}

/// Project-level figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProjectStats {
    /// Sessions with at least one trace.
    pub sessions: u64,
    /// Traces (with or without a session).
    pub traces: u64,
    /// Stored spans.
    pub spans: u64,
    /// Tokens over all LLM spans.
    pub tokens: Tokens,
    /// Session duration (end minus start) p50/p99 in ms, linear interpolation.
    pub session_duration_ms: LatencyQuantiles,
}

/// Every project that has stored spans, sorted by name.
pub(crate) fn projects(txn: &ReadTransaction) -> Result<Vec<String>> {
    let table = txn.open_table(PROJECTS)?;
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, _) = item?;
        out.push(k.value().to_owned());
    }
    Ok(out)
}

fn project_number(txn: &ReadTransaction, project: &str) -> Result<Option<u32>> {
    let table = txn.open_table(PROJECTS)?;
    Ok(table.get(project)?.map(|v| v.value()))
}

fn session_number(txn: &ReadTransaction, project: &str, session_id: &str) -> Result<Option<u64>> {
    let Some(p) = project_number(txn, project)? else {
        return Ok(None);
    };
    let table = txn.open_table(SESSION_IDS)?;
    let key = session_id_key(p, session_id);
    Ok(table.get(key.as_slice())?.map(|v| v.value()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

fn bad_cursor() -> Error {
    Error::invalid("cursor was not produced by this query")
}

/// The first byte of a history cursor (a sessions cursor starts with
/// [`SESSIONS_CURSOR`]), so that one query's cursor is refused by another.
const HISTORY_CURSOR: u8 = b'h';
/// The first byte of a sessions-list cursor.
const SESSIONS_CURSOR: u8 = b's';

/// What a history cursor is bound to: its project and session, hashed.
fn history_scope(project: &str, session_id: &str) -> [u8; 4] {
    let mut h = crc32fast::Hasher::new();
    h.update(project.as_bytes());
    h.update(&[0xff]);
    h.update(session_id.as_bytes());
    h.finalize().to_be_bytes()
}

/// What a sessions cursor is bound to: the project, the sort and its
/// direction (a filter may change between pages: the walk goes on past
/// the same key).
fn sessions_scope(project_id: u32, kind: u8, descending: bool) -> [u8; 7] {
    let mut b = [0u8; 7];
    b[0] = SESSIONS_CURSOR;
    b[1] = kind;
    b[2] = u8::from(descending);
    b[3..].copy_from_slice(&project_id.to_be_bytes());
    b
}

/// One page of a session's turns in (start, trace id) order. The cursor
/// is the key of the last turn returned, so a page boundary stays put
/// while new turns arrive.
pub(crate) fn history_page(
    txn: &ReadTransaction,
    project: &str,
    session_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<Turn>> {
    let limit = limit.max(1);
    let scope = history_scope(project, session_id);
    let Some(session) = session_number(txn, project, session_id)? else {
        if cursor.is_some_and(|c| parse_turn_cursor(c, scope).is_none()) {
            return Err(bad_cursor());
        }
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    };
    let lo = match cursor {
        None => turn_key(session, 0, [0; 16]),
        Some(c) => {
            let (start, id) = parse_turn_cursor(c, scope).ok_or_else(bad_cursor)?;
            // Strictly after the cursor: bump the key by one.
            let mut k = turn_key(session, start, id);
            if !increment(&mut k) {
                return Ok(Page {
                    items: Vec::new(),
                    next_cursor: None,
                });
            }
            k
        }
    };
    let hi = turn_key(session, u64::MAX, [0xff; 16]);
    let table = txn.open_table(TURNS)?;
    let mut items = Vec::with_capacity(limit.min(turn_count_hint(txn, session)?));
    let mut more = false;
    for item in table.range::<&[u8; 32]>(&lo..=&hi)? {
        if items.len() == limit {
            more = true;
            break;
        }
        let (k, v) = item?;
        let (_, start, trace_id) = split_turn_key(k.value());
        let body = decode_turn(v.value())?;
        items.push(body.to_turn(start, TraceId(trace_id)));
    }
    let next_cursor = if more {
        items.last().map(|t| {
            let mut b = vec![HISTORY_CURSOR];
            b.extend_from_slice(&scope);
            b.extend_from_slice(&t.start_time_unix_nano.to_be_bytes());
            b.extend_from_slice(&t.trace_id.0);
            hex(&b)
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Most turns a history reserves room for up front; a longer one grows.
const MAX_RESERVED_TURNS: usize = 1024;

/// The session's trace count from its stored summary, capped, for sizing
/// a history's buffer (0 if the summary is missing or does not decode).
fn turn_count_hint(txn: &ReadTransaction, session: u64) -> Result<usize> {
    let table = txn.open_table(SESSIONS)?;
    let n = table
        .get(session)?
        .and_then(|v| SessionState::stored_num_traces(v.value()))
        .unwrap_or(0);
    Ok(usize::try_from(n).map_or(MAX_RESERVED_TURNS, |n| n.min(MAX_RESERVED_TURNS)))
}

/// A history cursor of the session `scope` names: (start, trace id).
fn parse_turn_cursor(c: &str, scope: [u8; 4]) -> Option<(u64, [u8; 16])> {
    let b = unhex(c)?;
    if b.first() != Some(&HISTORY_CURSOR) || b.get(1..5)? != scope {
        return None;
    }
    let start = u64::from_be_bytes(b.get(5..13)?.try_into().ok()?);
    let id: [u8; 16] = b.get(13..)?.try_into().ok()?;
    Some((start, id))
}

/// A session's trace latency p50/p99, from its turns' keys (start) and the
/// first field of their values (end): every turn is read, none decoded
/// whole, and the two ranks of each quantile are selected, not sorted for.
fn latency_quantiles(txn: &ReadTransaction, session: u64) -> Result<LatencyQuantiles> {
    let table = txn.open_table(TURNS)?;
    let lo = turn_key(session, 0, [0; 16]);
    let hi = turn_key(session, u64::MAX, [0xff; 16]);
    let mut latencies = Vec::new();
    for item in table.range::<&[u8; 32]>(&lo..=&hi)? {
        let (k, v) = item?;
        let (_, start, _) = split_turn_key(k.value());
        let end = decode_turn_end(v.value())?;
        latencies.push(nanos_to_ms(end.saturating_sub(start)));
    }
    Ok(LatencyQuantiles {
        p50: quantile_of(&mut latencies, 0.5),
        p99: quantile_of(&mut latencies, 0.99),
    })
}

fn summary_of(txn: &ReadTransaction, session: u64) -> Result<Option<SessionSummary>> {
    let table = txn.open_table(SESSIONS)?;
    let Some(v) = table.get(session)? else {
        return Ok(None);
    };
    let state: SessionState = decode_session(v.value())?;
    let q = latency_quantiles(txn, session)?;
    Ok(Some(state.to_summary(q)))
}

/// The summary of one session, `None` if it has no traces.
pub(crate) fn session(
    txn: &ReadTransaction,
    project: &str,
    session_id: &str,
) -> Result<Option<SessionSummary>> {
    match session_number(txn, project, session_id)? {
        Some(n) => summary_of(txn, n),
        None => Ok(None),
    }
}

/// A prepared filter: the search term normalized and its candidate set.
pub(crate) struct Matcher {
    project_id: u32,
    filter: SessionFilter,
    term: Option<String>,
    /// Sessions the trigram index allows; `None` when the index was not used.
    candidates: Option<FastSet<u64>>,
}

impl Matcher {
    /// Prepares `filter` for a project; `None` when the project is unknown.
    /// `pending` holds search postings not yet written to the table; the
    /// caller must read it under the same lock as it opened `txn`, so that
    /// the two agree (see `SessionStore::sessions`).
    pub(crate) fn new(
        txn: &ReadTransaction,
        project: &str,
        filter: &SessionFilter,
        pending: &PostingBuffer,
    ) -> Result<Option<Matcher>> {
        let Some(project_id) = project_number(txn, project)? else {
            return Ok(None);
        };
        let term = filter
            .search
            .as_deref()
            .map(search::normalize)
            .filter(|t| !t.is_empty());
        let candidates = match &term {
            Some(t) if t.chars().count() >= 3 => Some(candidates(txn, project_id, t, pending)?),
            _ => None,
        };
        Ok(Some(Matcher {
            project_id,
            filter: filter.clone(),
            term,
            candidates,
        }))
    }

    /// Checks the cheap fields, then the index, then the text itself.
    fn matches(&self, txn: &ReadTransaction, session: u64, s: &SessionState) -> Result<bool> {
        let f = &self.filter;
        if let Some((from, to)) = f.time_range
            && (s.start > to || s.end < from)
        {
            return Ok(false);
        }
        if let Some(u) = &f.user_id
            && s.user.as_ref().map(|x| &x.3) != Some(u)
        {
            return Ok(false);
        }
        if f.min_traces.is_some_and(|m| s.num_traces < m)
            || f.max_traces.is_some_and(|m| s.num_traces > m)
            || f.has_errors.is_some_and(|e| e != (s.num_errors > 0))
        {
            return Ok(false);
        }
        if let Some(c) = &self.candidates
            && !c.contains(&session)
        {
            return Ok(false);
        }
        match &self.term {
            Some(term) => session_text_contains(txn, session, term),
            None => Ok(true),
        }
    }
}

/// Sessions of a project whose texts contain every trigram of `term`.
fn candidates(
    txn: &ReadTransaction,
    project_id: u32,
    term: &str,
    pending: &PostingBuffer,
) -> Result<FastSet<u64>> {
    let mut tris = Vec::new();
    search::trigrams(term, &mut tris);
    tris.sort_unstable();
    tris.dedup();
    let table = txn.open_table(SEARCH)?;
    let runs = txn.open_table(posting_runs::SEARCH_RUNS)?;
    let seqs = posting_runs::run_seqs(&txn.open_table(posting_runs::SEARCH_RUN_LIST)?)?;
    // chunk -> set, per trigram, from the table, its runs and the pending
    // buffer.
    let mut per_tri: Vec<BTreeMap<u32, ChunkSet>> = Vec::new();
    for tri in &tris {
        let lo = search::posting_key(project_id, *tri, 0);
        let hi = search::posting_key(project_id, *tri, u32::MAX);
        let mut chunks: BTreeMap<u32, ChunkSet> = BTreeMap::new();
        for item in table.range::<&[u8; 12]>(&lo..=&hi)? {
            let (k, v) = item?;
            let set = decode_posting(v.value())?;
            chunks.insert(search::key_chunk(k.value()), set);
        }
        for &seq in &seqs {
            let (run_lo, run_hi) = (
                posting_runs::run_key(seq, &lo),
                posting_runs::run_key(seq, &hi),
            );
            for item in runs.range::<&[u8; 20]>(&run_lo..=&run_hi)? {
                let (k, v) = item?;
                let set = decode_posting(v.value())?;
                let chunk = search::key_chunk(&posting_runs::posting_of(k.value()));
                match chunks.entry(chunk) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(set);
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        e.get_mut().union(&set);
                    }
                }
            }
        }
        for session in pending.sessions(project_id, *tri) {
            let (chunk, offset) = search::chunk_of(session);
            chunks
                .entry(chunk)
                .or_default()
                .extend_iter(std::iter::once(offset));
        }
        per_tri.push(chunks);
    }
    per_tri.sort_by_key(BTreeMap::len);
    let mut out = FastSet::default();
    let Some((first, rest)) = per_tri.split_first() else {
        return Ok(out);
    };
    for (chunk, set) in first {
        for session in set.sessions(*chunk) {
            let (_, offset) = search::chunk_of(session);
            if rest
                .iter()
                .all(|m| m.get(chunk).is_some_and(|s| s.contains(offset)))
            {
                out.insert(session);
            }
        }
    }
    Ok(out)
}

/// True when some turn's root input or output contains `term` (normalized).
fn session_text_contains(txn: &ReadTransaction, session: u64, term: &str) -> Result<bool> {
    let table = txn.open_table(TURNS)?;
    let lo = turn_key(session, 0, [0; 16]);
    let hi = turn_key(session, u64::MAX, [0xff; 16]);
    for item in table.range::<&[u8; 32]>(&lo..=&hi)? {
        let (_, v) = item?;
        let body = decode_turn(v.value())?;
        let hit = [body.input, body.output]
            .into_iter()
            .flatten()
            .any(|io| search::normalize(io.value).contains(term));
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

fn load_state(txn: &ReadTransaction, session: u64) -> Result<Option<SessionState>> {
    let table = txn.open_table(SESSIONS)?;
    match table.get(session)? {
        Some(v) => Ok(Some(decode_session(v.value())?)),
        None => Ok(None),
    }
}

/// Candidate sets at most this large are sorted in memory instead of
/// walking the sort index.
const SMALL_CANDIDATE_SET: usize = 4096;

/// One page of a project's sessions in the requested order.
pub(crate) fn sessions(
    txn: &ReadTransaction,
    matcher: Option<&Matcher>,
    q: &SessionQuery,
) -> Result<Page<SessionSummary>> {
    let limit = q.limit.max(1);
    let empty = Page {
        items: Vec::new(),
        next_cursor: None,
    };
    let kind = q.sort.kind();
    // The cursor's scope, then the key of the last session handed out
    // (a sort value of 8 bytes and the session id).
    let cursor = match &q.cursor {
        None => None,
        Some(c) => Some(
            unhex(c)
                .filter(|b| b.len() >= 7 + 8 && b.first() == Some(&SESSIONS_CURSOR))
                .ok_or_else(bad_cursor)?,
        ),
    };
    let Some(matcher) = matcher else {
        return Ok(empty);
    };
    let scope = sessions_scope(matcher.project_id, kind, q.descending);
    let cursor = match cursor {
        Some(b) if b.starts_with(&scope) => Some(b[scope.len()..].to_vec()),
        Some(_) => return Err(bad_cursor()),
        None => None,
    };
    let small = matches!(&matcher.candidates, Some(c) if c.len() <= SMALL_CANDIDATE_SET);
    let run = if small { sorted_candidates } else { walk_order };
    let hits = run(txn, matcher, kind, q.descending, cursor.as_deref(), limit)?;
    let (hits, more) = hits;
    let next_cursor = if more {
        hits.last().map(|(tail, _, _)| {
            let mut b = scope.to_vec();
            b.extend_from_slice(tail);
            hex(&b)
        })
    } else {
        None
    };
    let items = hits
        .into_iter()
        .map(|(_, session, state)| Ok(state.to_summary(latency_quantiles(txn, session)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Page { items, next_cursor })
}

/// Sort-order tail of a session: value (8 B BE) ‖ session id bytes.
fn order_tail(kind: u8, s: &SessionState) -> Vec<u8> {
    let value = sort_values(s).get(usize::from(kind)).copied().unwrap_or(0);
    let mut t = value.to_be_bytes().to_vec();
    t.extend_from_slice(s.session_id.as_bytes());
    t
}

type Hits = (Vec<(Vec<u8>, u64, SessionState)>, bool);

/// Sorts the (small) candidate set of a search in memory.
fn sorted_candidates(
    txn: &ReadTransaction,
    matcher: &Matcher,
    kind: u8,
    descending: bool,
    cursor: Option<&[u8]>,
    limit: usize,
) -> Result<Hits> {
    let mut rows = Vec::new();
    for &session in matcher.candidates.iter().flatten() {
        let Some(state) = load_state(txn, session)? else {
            continue;
        };
        let tail = order_tail(kind, &state);
        let after_cursor = match cursor {
            None => true,
            Some(c) if descending => tail.as_slice() < c,
            Some(c) => tail.as_slice() > c,
        };
        if after_cursor && state.num_traces > 0 {
            rows.push((tail, session, state));
        }
    }
    rows.sort_by(|a, b| {
        if descending {
            b.0.cmp(&a.0)
        } else {
            a.0.cmp(&b.0)
        }
    });
    let mut out = Vec::new();
    let mut more = false;
    for (tail, session, state) in rows {
        if !matcher.matches(txn, session, &state)? {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push((tail, session, state));
    }
    Ok((out, more))
}

/// Walks the project's sort index, filtering as it goes.
fn walk_order(
    txn: &ReadTransaction,
    matcher: &Matcher,
    kind: u8,
    descending: bool,
    cursor: Option<&[u8]>,
    limit: usize,
) -> Result<Hits> {
    let table = txn.open_table(SESSION_RUNS)?;
    // The cursor is the key of the last session handed out: the page
    // continues past it.
    let (lo, hi) = match cursor {
        Some(c) if descending => (Bound::Unbounded, Bound::Excluded(c)),
        Some(c) => (Bound::Excluded(c), Bound::Unbounded),
        None => (Bound::Unbounded, Bound::Unbounded),
    };
    let mut merged = runs::scan(&table, matcher.project_id, kind, lo, hi, descending)?;
    let mut out = Vec::new();
    let mut more = false;
    while let Some((tail, session)) = merged.next_entry(&table)? {
        let Some(state) = load_state(txn, session)? else {
            continue;
        };
        if !matcher.matches(txn, session, &state)? {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push((tail, session, state));
    }
    Ok((out, more))
}

/// Number of the project's sessions that pass `filter`.
pub(crate) fn session_count(txn: &ReadTransaction, matcher: Option<&Matcher>) -> Result<u64> {
    let Some(matcher) = matcher else {
        return Ok(0);
    };
    let p = matcher.project_id;
    if matcher.filter == SessionFilter::default() {
        return Ok(project_counters(txn, p)?.sessions);
    }
    let mut n = 0;
    if let Some(c) = &matcher.candidates {
        for &session in c {
            if let Some(state) = load_state(txn, session)?
                && state.num_traces > 0
                && matcher.matches(txn, session, &state)?
            {
                n += 1;
            }
        }
        return Ok(n);
    }
    let (all, _) = walk_order(txn, matcher, 0, false, None, usize::MAX)?;
    Ok(all.len() as u64)
}

fn project_counters(txn: &ReadTransaction, project_id: u32) -> Result<ProjectCounters> {
    let table = txn.open_table(PROJECT_STATS)?;
    match table.get(project_id)? {
        Some(v) => decode("project counters", v.value()),
        None => Ok(ProjectCounters::default()),
    }
}

/// Project-level figures; `None` for an unknown project.
pub(crate) fn project_stats(txn: &ReadTransaction, project: &str) -> Result<Option<ProjectStats>> {
    let Some(p) = project_number(txn, project)? else {
        return Ok(None);
    };
    let c = project_counters(txn, p)?;
    // The duration sort index is the sorted list of session durations.
    let table = txn.open_table(SESSION_RUNS)?;
    let mut durations = Vec::new();
    let kind = SessionSort::Duration.kind();
    let mut merged = runs::scan(&table, p, kind, Bound::Unbounded, Bound::Unbounded, false)?;
    while let Some((tail, _)) = merged.next_entry(&table)? {
        let v = tail.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
        durations.push(nanos_to_ms(v.map_or(0, u64::from_be_bytes)));
    }
    Ok(Some(ProjectStats {
        sessions: c.sessions,
        traces: c.traces,
        spans: c.spans,
        tokens: c.tokens,
        session_duration_ms: LatencyQuantiles {
            p50: quantile(&durations, 0.5),
            p99: quantile(&durations, 0.99),
        },
    }))
}

/// Every span of a trace, in (start, span id) order.
/// `known_home` is the trace's home if a deferred change holds it (see
/// `index::Deferred`), read together with opening `txn`; `read_spans`
/// reads the spans stored at the LSNs it is given, in that order.
pub(crate) fn trace(
    txn: &ReadTransaction,
    trace_id: TraceId,
    known_home: Option<u64>,
    read_spans: &dyn Fn(&[u64]) -> Result<Vec<StoredSpan>>,
) -> Result<Option<Trace>> {
    let homes = txn.open_table(TRACE_HOMES)?;
    let records = txn.open_table(TRACE_RECORDS)?;
    let found = crate::index::find_trace(&homes, known_home, &records, trace_id.0)?;
    let Some((_, mut rec)) = found else {
        return Ok(None);
    };
    let mut facts = std::mem::take(&mut rec.spans);
    // Span ids compare as big-endian numbers as they do as bytes (a
    // comparison of arrays is a `memcmp` call).
    facts.sort_by_key(|f| (f.start, u64::from_be_bytes(f.span_id)));
    let lsns: Vec<u64> = facts.iter().map(|f| f.lsn).collect();
    let spans = read_spans(&lsns)?;
    Ok(Some(Trace {
        trace_id,
        project: rec.project().unwrap_or_default().to_owned(),
        session_id: rec.session_id().map(str::to_owned),
        spans,
    }))
}

//! Read paths. Each runs on one redb snapshot, so it sees whole batches
//! only. Lists and histories read stored summaries, never span payloads;
//! only [`trace`] reads spans back from the log.

use redb::{ReadTransaction, ReadableTable};

use crate::error::{Error, Result};
use crate::index::session::{SessionState, quantile};
use crate::index::trace::{TraceRecord, TurnBody};
use crate::index::{
    PROJECTS, SESSION_IDS, SESSION_ORDER, SESSIONS, TRACES, TURNS, decode, order_key,
    session_id_key, split_turn_key, turn_key,
};
use crate::model::{
    LatencyQuantiles, Page, SessionSummary, StoredSpan, Trace, TraceId, Turn, nanos_to_ms,
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
}

impl Default for SessionQuery {
    fn default() -> Self {
        Self {
            sort: SessionSort::StartTime,
            descending: true,
            limit: 50,
            cursor: None,
        }
    }
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
    let Some(session) = session_number(txn, project, session_id)? else {
        if cursor.is_some_and(|c| parse_turn_cursor(c).is_none()) {
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
            let (start, id) = parse_turn_cursor(c).ok_or_else(bad_cursor)?;
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
    let mut items = Vec::new();
    let mut more = false;
    for item in table.range(lo..=hi)? {
        if items.len() == limit {
            more = true;
            break;
        }
        let (k, v) = item?;
        let (_, start, trace_id) = split_turn_key(&k.value());
        let body: TurnBody = decode("turn", v.value())?;
        items.push(body.into_turn(start, TraceId(trace_id)));
    }
    let next_cursor = if more {
        items.last().map(|t| {
            let mut b = t.start_time_unix_nano.to_be_bytes().to_vec();
            b.extend_from_slice(&t.trace_id.0);
            hex(&b)
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

fn parse_turn_cursor(c: &str) -> Option<(u64, [u8; 16])> {
    let b = unhex(c)?;
    let start = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let id: [u8; 16] = b.get(8..)?.try_into().ok()?;
    Some((start, id))
}

/// Big-endian increment; false on overflow.
fn increment(k: &mut [u8]) -> bool {
    for b in k.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return true;
        }
    }
    false
}

fn latency_quantiles(txn: &ReadTransaction, session: u64) -> Result<LatencyQuantiles> {
    let table = txn.open_table(TURNS)?;
    let lo = turn_key(session, 0, [0; 16]);
    let hi = turn_key(session, u64::MAX, [0xff; 16]);
    let mut latencies = Vec::new();
    for item in table.range(lo..=hi)? {
        let (k, v) = item?;
        let (_, start, _) = split_turn_key(&k.value());
        let body: TurnBody = decode("turn", v.value())?;
        latencies.push(nanos_to_ms(body.end.saturating_sub(start)));
    }
    latencies.sort_by(f64::total_cmp);
    Ok(LatencyQuantiles {
        p50: quantile(&latencies, 0.5),
        p99: quantile(&latencies, 0.99),
    })
}

fn summary_of(txn: &ReadTransaction, session: u64) -> Result<Option<SessionSummary>> {
    let table = txn.open_table(SESSIONS)?;
    let Some(v) = table.get(session)? else {
        return Ok(None);
    };
    let state: SessionState = decode("session summary", v.value())?;
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

/// One page of a project's sessions in the requested order.
pub(crate) fn sessions(
    txn: &ReadTransaction,
    project: &str,
    q: &SessionQuery,
) -> Result<Page<SessionSummary>> {
    let limit = q.limit.max(1);
    let Some(p) = project_number(txn, project)? else {
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    };
    let kind = q.sort.kind();
    let prefix = order_key(p, kind, 0, "");
    let prefix = prefix.get(..5).unwrap_or(&[]).to_vec();
    let mut end_prefix = prefix.clone();
    let has_end = increment(&mut end_prefix);
    let cursor_key = match &q.cursor {
        None => None,
        Some(c) => {
            let tail = unhex(c).filter(|t| t.len() >= 8).ok_or_else(bad_cursor)?;
            let mut k = prefix.clone();
            k.extend_from_slice(&tail);
            Some(k)
        }
    };
    let table = txn.open_table(SESSION_ORDER)?;
    let lo = cursor_key
        .as_deref()
        .filter(|_| !q.descending)
        .unwrap_or(prefix.as_slice());
    let hi_default: &[u8] = if has_end { &end_prefix } else { &[0xff; 6] };
    let hi = cursor_key
        .as_deref()
        .filter(|_| q.descending)
        .unwrap_or(hi_default);
    let range = table.range::<&[u8]>(lo..hi)?;
    let iter: Box<dyn Iterator<Item = _>> = if q.descending {
        Box::new(range.rev())
    } else {
        Box::new(range)
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for item in iter {
        let (k, v) = item?;
        let key = k.value();
        // Ascending ranges include the cursor itself; skip it.
        if !q.descending && cursor_key.as_deref() == Some(key) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        if let Some(s) = summary_of(txn, v.value())? {
            items.push(s);
            last_key = Some(key.to_vec());
        }
    }
    let next_cursor = if more {
        last_key.map(|k| hex(k.get(5..).unwrap_or(&[])))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Every span of a trace, in (start, span id) order.
pub(crate) fn trace(
    txn: &ReadTransaction,
    trace_id: TraceId,
    read_span: &dyn Fn(u64) -> Result<StoredSpan>,
) -> Result<Option<Trace>> {
    let table = txn.open_table(TRACES)?;
    let Some(v) = table.get(trace_id.0)? else {
        return Ok(None);
    };
    let rec: TraceRecord = decode("trace record", v.value())?;
    let mut facts = rec.spans.clone();
    facts.sort_by_key(|f| (f.start, f.span_id));
    let spans = facts
        .iter()
        .map(|f| read_span(f.lsn))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(Trace {
        trace_id,
        project: rec.project().unwrap_or_default().to_owned(),
        session_id: rec.session_id().map(str::to_owned),
        spans,
    }))
}

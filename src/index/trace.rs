//! The per-trace record kept in the index, and how spans update it.
//!
//! A trace record holds one small fact per span (for idempotency, root
//! selection and the `trace` read path) plus the aggregates of contract
//! rule 5, updated incrementally. Everything here is a pure function of the
//! spans seen so far, whatever their arrival order.

use serde::{Deserialize, Serialize};

use crate::model::{IoValue, Span, SpanId, Tokens, TraceId, TraceStatus};

use super::facts;

/// Most distinct session ids remembered per trace for conflict reporting.
pub(crate) const MAX_SESSION_IDS_PER_TRACE: usize = 16;

/// What the index remembers of one span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SpanFact {
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub start: u64,
    /// Where the span's frame is in the log.
    pub lsn: u64,
}

/// A value that competes by `(start, span_id)`: the smallest wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Earliest {
    pub start: u64,
    pub span_id: [u8; 8],
    pub value: String,
}

/// The root span: the earliest span without a parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootInfo {
    pub span_id: [u8; 8],
    pub start: u64,
    pub project: String,
    pub session_id: Option<String>,
}

/// Where a trace is filed in the session index: session and the start used in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Filing {
    pub session: u64,
    pub start: u64,
}

/// The stored state of one trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub(crate) struct TraceRecord {
    /// One fact per stored span, sorted by span id.
    pub spans: Vec<SpanFact>,
    pub start: u64,
    pub end: u64,
    pub tokens: Tokens,
    pub any_error: bool,
    pub any_ok: bool,
    pub root: Option<RootInfo>,
    pub earliest_project: Option<Earliest>,
    pub earliest_session: Option<Earliest>,
    /// Distinct session ids carried by the trace's spans, sorted, at most
    /// [`MAX_SESSION_IDS_PER_TRACE`].
    pub session_ids: Vec<String>,
    pub user: Option<Earliest>,
    pub filing: Option<Filing>,
}

/// What the indexes take from one span: a pure function of the span, the
/// project it was appended under and the configured session-id sources.
/// Computed once when the span is appended (or replayed), so the span
/// itself need not be kept until the indexes take it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpanInfo {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub start: u64,
    pub end: u64,
    pub tokens: Tokens,
    pub error: bool,
    pub ok: bool,
    pub user: Option<String>,
    /// Input and output, kept for spans without a parent (root
    /// candidates); a turn headed by another span reads them from the log.
    pub input: Option<IoValue>,
    pub output: Option<IoValue>,
}

impl SpanInfo {
    /// The facts of `span`.
    pub fn of(span: &Span) -> SpanInfo {
        let root = span.parent_span_id.is_none();
        SpanInfo {
            trace_id: span.trace_id.0,
            span_id: span.span_id.0,
            parent: span.parent_span_id.map(|p| p.0),
            start: span.start_time_unix_nano,
            end: span.end_time_unix_nano,
            tokens: facts::tokens(span),
            error: facts::is_error(span),
            ok: span.status.code == crate::model::StatusCode::Ok,
            user: facts::user_id(span),
            input: if root { facts::input(span) } else { None },
            output: if root { facts::output(span) } else { None },
        }
    }
}

/// One span of a batch, already written to the log at `lsn`.
pub(crate) struct NewRecord<'a> {
    pub lsn: u64,
    pub project: &'a str,
    pub span: SpanInfo,
    /// The span's own session id (`facts::session_id`), resolved by the caller.
    pub session_id: Option<String>,
}

impl TraceRecord {
    /// Folds one span in; returns false (and changes nothing) when a span
    /// with the same id is already stored.
    pub fn add(&mut self, new: &NewRecord<'_>) -> bool {
        let span = &new.span;
        let fact = SpanFact {
            span_id: span.span_id,
            parent: span.parent,
            start: span.start,
            lsn: new.lsn,
        };
        match self
            .spans
            .binary_search_by(|f| f.span_id.cmp(&fact.span_id))
        {
            Ok(_) => return false,
            Err(at) => self.spans.insert(at, fact),
        }
        let first = self.spans.len() == 1;
        self.start = if first {
            span.start
        } else {
            self.start.min(span.start)
        };
        self.end = if first {
            span.end
        } else {
            self.end.max(span.end)
        };
        self.tokens = self.tokens.saturating_add(span.tokens);
        self.any_error |= span.error;
        self.any_ok |= span.ok;
        let wins = |slot: &Option<Earliest>| {
            slot.as_ref()
                .is_none_or(|cur| (span.start, span.span_id) < (cur.start, cur.span_id))
        };
        let key = |value: String| Earliest {
            start: span.start,
            span_id: span.span_id,
            value,
        };
        if wins(&self.earliest_project) {
            self.earliest_project = Some(key(new.project.to_owned()));
        }
        if let Some(sid) = &new.session_id {
            if wins(&self.earliest_session) {
                self.earliest_session = Some(key(sid.clone()));
            }
            if let Err(at) = self.session_ids.binary_search(sid)
                && self.session_ids.len() < MAX_SESSION_IDS_PER_TRACE
            {
                self.session_ids.insert(at, sid.clone());
            }
        }
        if let Some(user) = &span.user
            && wins(&self.user)
        {
            self.user = Some(key(user.clone()));
        }
        if span.parent.is_none() {
            let better = self
                .root
                .as_ref()
                .is_none_or(|r| (span.start, span.span_id) < (r.start, r.span_id));
            if better {
                self.root = Some(RootInfo {
                    span_id: span.span_id,
                    start: span.start,
                    project: new.project.to_owned(),
                    session_id: new.session_id.clone(),
                });
            }
        }
        true
    }

    /// The trace's project: its root's, else its earliest span's (rule 1).
    pub fn project(&self) -> Option<&str> {
        match &self.root {
            Some(r) => Some(&r.project),
            None => self.earliest_project.as_ref().map(|e| e.value.as_str()),
        }
    }

    /// The winning session id: the root's, else the earliest-starting
    /// span's that has one (rule 3).
    pub fn session_id(&self) -> Option<&str> {
        self.root
            .as_ref()
            .and_then(|r| r.session_id.as_deref())
            .or(self.earliest_session.as_ref().map(|e| e.value.as_str()))
    }

    /// The span that heads the turn: the root, else the earliest span whose
    /// parent is absent (flagged `root_missing`), else (parent cycles) the
    /// earliest span. Returns the fact and the flag.
    pub fn head(&self) -> Option<(&SpanFact, bool)> {
        if let Some(root) = &self.root {
            return self.fact(root.span_id).map(|f| (f, false));
        }
        let orphan = self
            .spans
            .iter()
            .filter(|f| f.parent.is_none_or(|p| self.fact(p).is_none()))
            .min_by_key(|f| (f.start, f.span_id));
        // Parent links that form a cycle leave no orphan; the earliest span
        // stands in then, so every trace has a head.
        orphan
            .or_else(|| self.spans.iter().min_by_key(|f| (f.start, f.span_id)))
            .map(|f| (f, true))
    }

    fn fact(&self, span_id: [u8; 8]) -> Option<&SpanFact> {
        self.spans
            .binary_search_by(|f| f.span_id.cmp(&span_id))
            .ok()
            .and_then(|i| self.spans.get(i))
    }

    /// Session ids of this trace other than the winner.
    pub fn conflicts(&self) -> Vec<String> {
        let winner = self.session_id();
        self.session_ids
            .iter()
            .filter(|s| Some(s.as_str()) != winner)
            .cloned()
            .collect()
    }

    /// Aggregate status (Error over Ok over Unset).
    pub fn status(&self) -> TraceStatus {
        if self.any_error {
            TraceStatus::Error
        } else if self.any_ok {
            TraceStatus::Ok
        } else {
            TraceStatus::Unset
        }
    }
}

/// The stored value of one turn in the session index (see docs/FORMAT.md):
/// everything a session history shows, plus what session summaries need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TurnBody {
    pub end: u64,
    pub head_span_id: [u8; 8],
    pub root_missing: bool,
    pub input: Option<IoValue>,
    pub output: Option<IoValue>,
    pub tokens: Tokens,
    pub status: TraceStatus,
    pub num_spans: u64,
    pub conflicts: Vec<String>,
    pub user: Option<Earliest>,
}

impl TurnBody {
    /// Converts to the public turn given the key fields.
    pub fn into_turn(self, start: u64, trace_id: TraceId) -> crate::model::Turn {
        crate::model::Turn {
            trace_id,
            start_time_unix_nano: start,
            end_time_unix_nano: self.end,
            root_span_id: SpanId(self.head_span_id),
            input: self.input,
            output: self.output,
            tokens: self.tokens,
            status: self.status,
            num_spans: self.num_spans,
            root_missing: self.root_missing,
            conflicting_session_ids: self.conflicts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(rec: &mut TraceRecord, span: &Span, project: &str, sid: Option<&str>) {
        rec.add(&NewRecord {
            lsn: 0,
            project,
            span: SpanInfo::of(span),
            session_id: sid.map(str::to_owned),
        });
    }

    fn sp(id: u8, parent: Option<u8>, start: u64) -> Span {
        Span::new(
            TraceId([9; 16]),
            SpanId([id; 8]),
            parent.map(|p| SpanId([p; 8])),
            "x",
            start,
            start + 10,
        )
    }

    #[test]
    fn root_session_wins_over_earlier_children() {
        let mut r = TraceRecord::default();
        add(&mut r, &sp(2, Some(1), 5), "p", Some("child"));
        assert_eq!(r.session_id(), Some("child"));
        add(&mut r, &sp(1, None, 10), "p", Some("root"));
        assert_eq!(r.session_id(), Some("root"));
        assert_eq!(r.conflicts(), vec!["child".to_owned()]);
    }

    #[test]
    fn stand_in_is_earliest_span_with_absent_parent() {
        let mut r = TraceRecord::default();
        add(&mut r, &sp(3, Some(2), 30), "p", None);
        add(&mut r, &sp(4, Some(9), 40), "p", None);
        assert_eq!(r.head().map(|(f, m)| (f.span_id[0], m)), Some((3, true)));
        // 3's parent arrives: 2 (parent 1, absent) now stands in.
        add(&mut r, &sp(2, Some(1), 20), "p", None);
        assert_eq!(r.head().map(|(f, m)| (f.span_id[0], m)), Some((2, true)));
        add(&mut r, &sp(1, None, 50), "p", None);
        assert_eq!(r.head().map(|(f, m)| (f.span_id[0], m)), Some((1, false)));
    }

    #[test]
    fn project_is_roots_else_earliest() {
        let mut r = TraceRecord::default();
        add(&mut r, &sp(3, Some(1), 30), "b", None);
        add(&mut r, &sp(2, Some(1), 20), "a", None);
        assert_eq!(r.project(), Some("a"));
        add(&mut r, &sp(1, None, 40), "c", None);
        assert_eq!(r.project(), Some("c"));
    }
}

//! The per-trace record kept in the index, and how spans update it.
//!
//! A trace record holds one small fact per span (for idempotency, root
//! selection and the `trace` read path) plus the aggregates of contract
//! rule 5, updated incrementally. Everything here is a pure function of the
//! spans seen so far, whatever their arrival order.

use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, WireReader};
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
    /// Distinct session ids carried by the trace's spans, sorted: the
    /// smallest [`MAX_SESSION_IDS_PER_TRACE`] of them (byte order), so that
    /// which are kept does not depend on the order the spans came in.
    pub session_ids: Vec<String>,
    /// The spans carried more distinct session ids than `session_ids` holds.
    pub more_session_ids: bool,
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
    /// Bytes of text these facts hold (root input and output, user id):
    /// what a group of them holds in memory beyond their count.
    pub fn text_bytes(&self) -> usize {
        let io = |v: &Option<IoValue>| v.as_ref().map_or(0, |v| v.value.len() + v.mime_type.len());
        io(&self.input) + io(&self.output) + self.user.as_ref().map_or(0, String::len)
    }

    /// The facts of `span`.
    pub fn of(span: &Span) -> SpanInfo {
        SpanInfo::with_user(span, facts::user_id(span))
    }

    /// The facts of `span`, whose user id (`facts::user_id`) is `user`:
    /// an append has resolved it already, measuring it against its limit.
    pub fn with_user(span: &Span, user: Option<String>) -> SpanInfo {
        SpanInfo::of_parts(
            SpanHead {
                trace_id: span.trace_id.0,
                span_id: span.span_id.0,
                parent: span.parent_span_id.map(|p| p.0),
                start: span.start_time_unix_nano,
                end: span.end_time_unix_nano,
                status: span.status.code,
            },
            span,
            user,
        )
    }

    /// The facts of the span whose ids, times and status are `head` and
    /// whose attributes `attributes` finds (a span, or a replay's read of
    /// one for its facts), and whose user id is `user`.
    #[inline(always)]
    pub(crate) fn of_parts(
        head: SpanHead,
        attributes: &impl facts::Attributes,
        user: Option<String>,
    ) -> SpanInfo {
        let root = head.parent.is_none();
        SpanInfo {
            trace_id: head.trace_id,
            span_id: head.span_id,
            parent: head.parent,
            start: head.start,
            end: head.end,
            tokens: facts::tokens(attributes),
            error: head.status == crate::model::StatusCode::Error,
            ok: head.status == crate::model::StatusCode::Ok,
            user,
            input: if root { facts::input(attributes) } else { None },
            output: if root {
                facts::output(attributes)
            } else {
                None
            },
        }
    }
}

/// What [`SpanInfo`] takes of a span besides its attributes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SpanHead {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub start: u64,
    pub end: u64,
    pub status: crate::model::StatusCode,
}

/// One span of a batch, already written to the log at `lsn`.
#[cfg_attr(test, derive(Clone))]
pub(crate) struct NewRecord {
    pub lsn: u64,
    /// Index into its batch's project names (see [`NewRecords`]).
    pub project: usize,
    pub span: SpanInfo,
    /// The span's own session id (`facts::session_id`), resolved by the caller.
    pub session_id: Option<String>,
    /// Bytes of the span's frame in the log, header included.
    pub frame_bytes: u32,
}

/// Spans to be indexed together, in log order, naming each project once:
/// what an append leaves pending and what a replay reads, handed to
/// `IndexWriter::apply` as they are held. Records are added only by
/// [`NewRecords::push_record`] and [`NewRecords::append`], each naming a
/// project by the place [`NewRecords::project_at`] gave it, so each names
/// one of the batch's projects.
#[derive(Default)]
pub(crate) struct NewRecords {
    projects: Vec<String>,
    spans: Vec<NewRecord>,
}

impl NewRecords {
    /// Empty, with room for `spans` spans: a group or a replayed chunk
    /// sized once rather than grown by doubling (each growth copied every
    /// ~250-byte record so far).
    pub fn with_capacity(spans: usize) -> Self {
        NewRecords {
            projects: Vec::new(),
            spans: Vec::with_capacity(spans),
        }
    }

    /// The place of `project` among the batch's project names, added
    /// when it is new: the `project` of a record [`Self::append`] takes.
    pub fn project_at(&mut self, project: &str) -> usize {
        match self.projects.iter().position(|p| p == project) {
            Some(i) => i,
            None => {
                self.projects.push(project.to_owned());
                self.projects.len() - 1
            }
        }
    }

    /// Moves all of `records` to the end, in their order, leaving it
    /// empty. Each record's `project` must be a place
    /// [`Self::project_at`] gave for this batch. (Moved one by one:
    /// `Vec::append`'s one large copy is a `rep movsb`, which callgrind
    /// counts a byte at a time.)
    pub fn append(&mut self, records: &mut Vec<NewRecord>) {
        self.spans.reserve(records.len());
        for r in records.drain(..) {
            self.push_record(r);
        }
    }

    /// Adds `record`, whose `project` is a place [`Self::project_at`]
    /// gave for this batch.
    #[inline(always)]
    pub fn push_record(&mut self, record: NewRecord) {
        self.spans.push(record);
    }

    /// Number of spans.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there is no span.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Drops every span and project name.
    pub fn clear(&mut self) {
        self.spans.clear();
        self.projects.clear();
    }

    /// The spans, to be reordered in place, and the project names they
    /// index.
    pub fn parts(&mut self) -> (&mut [NewRecord], &[String]) {
        (&mut self.spans, &self.projects)
    }
}

/// Most buffers of each kind [`Spares`] keeps.
const SPARES_KEPT: usize = 16;
/// Largest string [`Spares`] keeps (a longer one is dropped, so that one
/// long value does not stay pinned in a group's spares).
const SPARE_STRING_MAX: usize = 1024;

/// The buffers of trace records a group is done with, for the next ones
/// it builds: a group's new traces each need the same few strings (project,
/// session id, user) and vectors, and reusing them saves an allocation and
/// a free each.
#[derive(Default)]
pub(crate) struct Spares {
    strings: Vec<String>,
    facts: Vec<Vec<SpanFact>>,
    ids: Vec<Vec<String>>,
}

impl Spares {
    /// A string equal to `s`, in a spare buffer if there is one.
    pub fn string(&mut self, s: &str) -> String {
        match self.strings.pop() {
            Some(mut b) => {
                b.clear();
                b.push_str(s);
                b
            }
            None => s.to_owned(),
        }
    }

    fn keep_string(&mut self, s: String) {
        if self.strings.len() < SPARES_KEPT && (1..=SPARE_STRING_MAX).contains(&s.capacity()) {
            self.strings.push(s);
        }
    }

    fn keep_earliest(&mut self, e: Option<Earliest>) {
        if let Some(e) = e {
            self.keep_string(e.value);
        }
    }

    /// Keeps the buffers of a record no longer needed.
    pub fn recycle(&mut self, rec: TraceRecord) {
        let TraceRecord {
            mut spans,
            root,
            earliest_project,
            earliest_session,
            mut session_ids,
            user,
            ..
        } = rec;
        if self.facts.len() < SPARES_KEPT && spans.capacity() > 0 {
            spans.clear();
            self.facts.push(spans);
        }
        for s in session_ids.drain(..) {
            self.keep_string(s);
        }
        if self.ids.len() < SPARES_KEPT && session_ids.capacity() > 0 {
            self.ids.push(session_ids);
        }
        if let Some(r) = root {
            self.keep_string(r.project);
            if let Some(s) = r.session_id {
                self.keep_string(s);
            }
        }
        self.keep_earliest(earliest_project);
        self.keep_earliest(earliest_session);
        self.keep_earliest(user);
    }

    /// Room for `n` more span facts in `spans`: a spare vector in place of
    /// an empty one without room.
    pub fn reserve_facts(&mut self, spans: &mut Vec<SpanFact>, n: usize) {
        if spans.capacity() == 0
            && let Some(spare) = self.facts.pop()
        {
            *spans = spare;
        }
        spans.reserve(n);
    }
}

impl TraceRecord {
    /// Folds one span, appended under `project`, in; returns false (and
    /// changes nothing) when a span with the same id is already stored.
    #[cfg(test)]
    pub fn add(&mut self, new: &NewRecord, project: &str) -> bool {
        self.add_with(&mut new.clone(), project, &mut Spares::default())
    }

    /// [`TraceRecord::add`], taking the strings and vectors it needs from
    /// `spares` where it can. A span it folds in gives its session id's
    /// buffer to `spares` (leaving `new.session_id` empty): the group's
    /// spans then bring as many buffers as their records take, where the
    /// names a group takes out of its records (see
    /// [`TraceRecord::take_names`]) used to leave the spares short, and
    /// every record that found none allocated its root's strings.
    pub fn add_with(&mut self, new: &mut NewRecord, project: &str, spares: &mut Spares) -> bool {
        let added = self.add_info(new, project, spares);
        if added && let Some(s) = new.session_id.take() {
            spares.keep_string(s);
        }
        added
    }

    fn add_info(&mut self, new: &NewRecord, project: &str, spares: &mut Spares) -> bool {
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
        // The spans of a trace nearly always carry the same project,
        // session and user, so a winner usually keeps the value and takes
        // only the new position (no allocation).
        let take = |slot: &mut Option<Earliest>, value: &str, spares: &mut Spares| match slot {
            Some(cur) if cur.value == value => {
                cur.start = span.start;
                cur.span_id = span.span_id;
            }
            Some(cur) => {
                cur.start = span.start;
                cur.span_id = span.span_id;
                cur.value.clear();
                cur.value.push_str(value);
            }
            None => {
                *slot = Some(Earliest {
                    start: span.start,
                    span_id: span.span_id,
                    value: spares.string(value),
                });
            }
        };
        if wins(&self.earliest_project) {
            take(&mut self.earliest_project, project, spares);
        }
        if let Some(sid) = &new.session_id {
            if wins(&self.earliest_session) {
                take(&mut self.earliest_session, sid, spares);
            }
            if let Err(at) = self.session_ids.binary_search(sid) {
                if self.session_ids.capacity() == 0
                    && let Some(spare) = spares.ids.pop()
                {
                    self.session_ids = spare;
                }
                if self.session_ids.len() < MAX_SESSION_IDS_PER_TRACE {
                    self.session_ids.insert(at, spares.string(sid));
                } else {
                    // Full: the smallest ids stay, whatever their order.
                    self.more_session_ids = true;
                    if at < self.session_ids.len() {
                        if let Some(dropped) = self.session_ids.pop() {
                            spares.keep_string(dropped);
                        }
                        self.session_ids.insert(at, spares.string(sid));
                    }
                }
            }
        }
        if let Some(user) = &span.user
            && wins(&self.user)
        {
            take(&mut self.user, user, spares);
        }
        if span.parent.is_none() {
            let better = self
                .root
                .as_ref()
                .is_none_or(|r| (span.start, span.span_id) < (r.start, r.span_id));
            if better {
                let old = self.root.take();
                self.root = Some(RootInfo {
                    span_id: span.span_id,
                    start: span.start,
                    project: spares.string(project),
                    session_id: new.session_id.as_deref().map(|s| spares.string(s)),
                });
                if let Some(r) = old {
                    spares.keep_string(r.project);
                    if let Some(s) = r.session_id {
                        spares.keep_string(s);
                    }
                }
            }
        }
        true
    }

    /// Points the stored span `new` duplicates at `new`'s frame, when that
    /// frame comes later in the log and holds the same bytes (a copy that
    /// compaction made); returns the old frame's LSN when it did.
    pub fn move_to_copy(
        &mut self,
        new: &NewRecord,
        source: &dyn super::SpanSource,
    ) -> crate::Result<Option<u64>> {
        let Ok(i) = self
            .spans
            .binary_search_by(|f| f.span_id.cmp(&new.span.span_id))
        else {
            return Ok(None);
        };
        let Some(fact) = self.spans.get_mut(i) else {
            return Ok(None);
        };
        if fact.lsn >= new.lsn || !source.same_frame(fact.lsn, new.lsn)? {
            return Ok(None);
        }
        let old = fact.lsn;
        fact.lsn = new.lsn;
        Ok(Some(old))
    }

    /// The trace's project: its root's, else its earliest span's (rule 1).
    pub fn project(&self) -> Option<&str> {
        match &self.root {
            Some(r) => Some(&r.project),
            None => self.earliest_project.as_ref().map(|e| e.value.as_str()),
        }
    }

    /// Takes [`TraceRecord::project`] and [`TraceRecord::session_id`] out
    /// of the record (for one already encoded, about to be dropped),
    /// leaving them empty; `None`, taking nothing, unless it has both.
    pub fn take_names(&mut self) -> Option<(String, String)> {
        if self.project().is_none() || self.session_id().is_none() {
            return None;
        }
        let project = match (&mut self.root, &mut self.earliest_project) {
            (Some(r), _) => std::mem::take(&mut r.project),
            (None, Some(e)) => std::mem::take(&mut e.value),
            (None, None) => return None,
        };
        let root_session = self.root.as_mut().and_then(|r| r.session_id.take());
        let session_id = match (root_session, &mut self.earliest_session) {
            (Some(s), _) => s,
            (None, Some(e)) => std::mem::take(&mut e.value),
            (None, None) => return None,
        };
        Some((project, session_id))
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

    /// Session ids of this trace other than the winner (of those the
    /// record holds: see [`TraceRecord::more_session_ids`]).
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
    /// The trace's spans carried more session ids than it remembers.
    pub more_conflicts: bool,
}

/// A stored [`TurnBody`] decoded in place: strings borrow the stored
/// bytes, so reading a turn allocates nothing until its strings are copied
/// out into a public [`Turn`](crate::model::Turn). This is the read paths'
/// decoder (a session history decodes one per turn); it reads the same
/// bytes as `codec::decode_value::<TurnBody>` (bincode) and accepts and
/// rejects the same inputs, which `view_decodes_like_bincode` checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TurnView<'a> {
    pub end: u64,
    pub head_span_id: [u8; 8],
    pub root_missing: bool,
    pub input: Option<IoView<'a>>,
    pub output: Option<IoView<'a>>,
    pub tokens: Tokens,
    pub status: TraceStatus,
    pub num_spans: u64,
    pub conflicts: Vec<&'a str>,
    /// `(start, span id, user id)` of the earliest span with a user id.
    pub user: Option<(u64, [u8; 8], &'a str)>,
    pub more_conflicts: bool,
}

/// A root input or output, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IoView<'a> {
    pub value: &'a str,
    pub mime_type: &'a str,
}

impl IoView<'_> {
    fn to_owned_value(self) -> IoValue {
        IoValue {
            value: self.value.to_owned(),
            mime_type: crate::model::mime_type_of(self.mime_type),
        }
    }
}

impl<'a> TurnView<'a> {
    /// The `end` of a stored turn, its first field, without decoding the
    /// rest (the latency quantiles of a session read only that, from
    /// every turn; the read paths that show a turn decode it whole).
    pub fn end_of(bytes: &[u8]) -> Result<u64, DecodeError> {
        WireReader::new(bytes).u64()
    }

    /// Decodes a stored turn (the whole slice must be one `TurnBody`).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        // Fields in `TurnBody`'s declaration order, as serde encodes them.
        let mut r = WireReader::new(bytes);
        let end = r.u64()?;
        let head_span_id = r.array()?;
        let root_missing = r.bool()?;
        let input = Self::io(&mut r)?;
        let output = Self::io(&mut r)?;
        let tokens = Tokens {
            prompt: r.u64()?,
            completion: r.u64()?,
            total: r.u64()?,
        };
        let status = match r.u32()? {
            0 => TraceStatus::Unset,
            1 => TraceStatus::Ok,
            2 => TraceStatus::Error,
            i => {
                return Err(DecodeError(format!(
                    "cannot decode: invalid trace status variant {i}"
                )));
            }
        };
        let num_spans = r.u64()?;
        let n = r.len(1)?;
        let mut conflicts = Vec::with_capacity(n);
        for _ in 0..n {
            conflicts.push(r.str()?);
        }
        let user = if r.option()? {
            Some((r.u64()?, r.array()?, r.str()?))
        } else {
            None
        };
        let more_conflicts = r.bool()?;
        r.finish()?;
        Ok(TurnView {
            end,
            head_span_id,
            root_missing,
            input,
            output,
            tokens,
            status,
            num_spans,
            conflicts,
            user,
            more_conflicts,
        })
    }

    fn io(r: &mut WireReader<'a>) -> Result<Option<IoView<'a>>, DecodeError> {
        if !r.option()? {
            return Ok(None);
        }
        Ok(Some(IoView {
            value: r.str()?,
            // The common mime types need no UTF-8 check.
            mime_type: r.str_or(&crate::model::COMMON_MIME_TYPES)?,
        }))
    }

    /// The public turn, given the key fields.
    pub fn to_turn(&self, start: u64, trace_id: TraceId) -> crate::model::Turn {
        crate::model::Turn {
            trace_id,
            start_time_unix_nano: start,
            end_time_unix_nano: self.end,
            root_span_id: SpanId(self.head_span_id),
            input: self.input.map(IoView::to_owned_value),
            output: self.output.map(IoView::to_owned_value),
            tokens: self.tokens,
            status: self.status,
            num_spans: self.num_spans,
            root_missing: self.root_missing,
            conflicting_session_ids: self.conflicts.iter().map(|c| (*c).to_owned()).collect(),
            conflicting_session_ids_truncated: self.more_conflicts,
        }
    }

    /// The owned body (what bincode decodes from the same bytes).
    pub fn to_body(&self) -> TurnBody {
        TurnBody {
            end: self.end,
            head_span_id: self.head_span_id,
            root_missing: self.root_missing,
            input: self.input.map(IoView::to_owned_value),
            output: self.output.map(IoView::to_owned_value),
            tokens: self.tokens,
            status: self.status,
            num_spans: self.num_spans,
            conflicts: self.conflicts.iter().map(|c| (*c).to_owned()).collect(),
            user: self.user.map(|(start, span_id, value)| Earliest {
                start,
                span_id,
                value: value.to_owned(),
            }),
            more_conflicts: self.more_conflicts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(rec: &mut TraceRecord, span: &Span, project: &str, sid: Option<&str>) {
        rec.add(
            &NewRecord {
                lsn: 0,
                project: 0,
                span: SpanInfo::of(span),
                session_id: sid.map(str::to_owned),
                frame_bytes: 0,
            },
            project,
        );
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
        assert_eq!(
            r.clone().take_names(),
            Some(("p".to_owned(), "root".to_owned()))
        );
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

    use proptest::prelude::*;

    proptest! {
        /// A record is a function of the set of spans folded in, whatever
        /// their order: with more distinct session ids than it remembers
        /// too (it keeps the smallest, and says there were more).
        #[test]
        fn a_record_does_not_depend_on_the_order_of_its_spans(
            (spans, shuffled) in proptest::collection::vec(
                (0u64..50, proptest::option::of(0u8..30), proptest::bool::ANY),
                1..40,
            )
            .prop_flat_map(|v| {
                let n = v.len();
                (proptest::strategy::Just(v), proptest::sample::subsequence((0..n).collect::<Vec<_>>(), n).prop_shuffle())
            })
        ) {
            let fold = |order: &mut dyn Iterator<Item = usize>| {
                let mut r = TraceRecord::default();
                for i in order {
                    let (start, sid, root) = spans[i];
                    let id = u8::try_from(i).unwrap_or(u8::MAX);
                    let span = sp(id, (!root).then_some(200), start);
                    let sid = sid.map(|s| format!("s{s:02}"));
                    add(&mut r, &span, "p", sid.as_deref());
                }
                r
            };
            let forward = fold(&mut (0..spans.len()));
            let other = fold(&mut shuffled.iter().copied());
            prop_assert_eq!(&forward, &other);
            // The names taken are the ones it gives.
            let names = forward.project().zip(forward.session_id()).map(|(p, s)| (p.to_owned(), s.to_owned()));
            prop_assert_eq!(other.clone().take_names(), names);
            let distinct: std::collections::BTreeSet<_> = spans.iter().filter_map(|s| s.1).collect();
            prop_assert_eq!(forward.more_session_ids, distinct.len() > MAX_SESSION_IDS_PER_TRACE);
            let kept: Vec<String> = distinct.iter().take(MAX_SESSION_IDS_PER_TRACE).map(|s| format!("s{s:02}")).collect();
            prop_assert_eq!(forward.session_ids, kept);
        }
    }

    /// A span of a generated trace: (span id, has a parent, start,
    /// project, session id, user), names of varied lengths.
    type Gen = (u8, bool, u64, u8, Option<u8>, Option<u8>);

    fn record_of(&(id, child, start, _, sid, user): &Gen) -> NewRecord {
        let mut span = SpanInfo::of(&sp(id, child.then_some(200), start));
        span.user = user.map(|u| "u".repeat(usize::from(u)));
        NewRecord {
            lsn: u64::from(id),
            project: 0,
            span,
            session_id: sid.map(|s| format!("s{}", "x".repeat(usize::from(s)))),
            frame_bytes: 0,
        }
    }

    proptest! {
        /// Folding spans with spare buffers (left by earlier records of
        /// any shape, and reused in place when a value changes) builds the
        /// same records as folding them without.
        #[test]
        fn spares_do_not_change_a_record(
            traces in proptest::collection::vec(
                proptest::collection::vec(
                    (0u8..40, proptest::bool::ANY, 0u64..20, 0u8..3,
                     proptest::option::of(0u8..40), proptest::option::of(0u8..5)),
                    0..30,
                ),
                0..8,
            )
        ) {
            let mut spares = Spares::default();
            for spans in &traces {
                let mut plain = TraceRecord::default();
                let mut reused = TraceRecord::default();
                spares.reserve_facts(&mut reused.spans, spans.len());
                for g in spans {
                    let r = record_of(g);
                    let project = "p".repeat(usize::from(g.3) * 7 + 1);
                    let added = plain.add(&r, &project);
                    let mut taken = r.clone();
                    prop_assert_eq!(reused.add_with(&mut taken, &project, &mut spares), added);
                    // A span folded in gives its session id's buffer; a
                    // duplicate keeps it.
                    let left = if added { None } else { r.session_id.clone() };
                    prop_assert_eq!(taken.session_id, left);
                }
                prop_assert_eq!(&reused, &plain);
                prop_assert!(spares.strings.len() <= SPARES_KEPT);
                spares.recycle(reused);
                prop_assert!(spares.facts.iter().all(Vec::is_empty));
                prop_assert!(spares.ids.iter().all(Vec::is_empty));
            }
        }
    }

    /// A spare string is a copy of the value asked for, whatever it held.
    #[test]
    fn a_spare_string_holds_the_value_asked_for() {
        let mut spares = Spares::default();
        assert_eq!(spares.string("abc"), "abc");
        spares.keep_string("a much longer value".to_owned());
        assert_eq!(spares.string("xy"), "xy");
        assert!(spares.strings.is_empty());
        // Too long or empty strings are not kept.
        spares.keep_string("z".repeat(SPARE_STRING_MAX + 1));
        spares.keep_string(String::new());
        assert!(spares.strings.is_empty());
    }

    #[test]
    fn project_is_roots_else_earliest() {
        let mut r = TraceRecord::default();
        add(&mut r, &sp(3, Some(1), 30), "b", None);
        add(&mut r, &sp(2, Some(1), 20), "a", None);
        assert_eq!(r.project(), Some("a"));
        add(&mut r, &sp(1, None, 40), "c", None);
        assert_eq!(r.project(), Some("c"));
        // No session id: nothing is taken.
        assert_eq!(r.take_names(), None);
        assert_eq!(r.project(), Some("c"));
    }
}

#[cfg(test)]
mod view_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::codec::{decode_value, encode_value};

    fn body() -> TurnBody {
        TurnBody {
            end: 300,
            head_span_id: [2; 8],
            root_missing: false,
            input: Some(IoValue {
                value: "hi".into(),
                mime_type: "text/plain".into(),
            }),
            output: Some(IoValue {
                value: "{}".into(),
                mime_type: "application/x".into(),
            }),
            tokens: Tokens {
                prompt: 1,
                completion: 2,
                total: 3,
            },
            status: TraceStatus::Error,
            num_spans: 4,
            conflicts: vec!["s2".into()],
            user: Some(Earliest {
                start: 5,
                span_id: [6; 8],
                value: "u".into(),
            }),
            more_conflicts: true,
        }
    }

    /// Golden bytes of a stored turn: the format the view decoder reads.
    #[test]
    fn turn_encoding_is_stable_and_view_reads_it() {
        let bytes = encode_value(&body());
        let mut expected = vec![251, 44, 1]; // end = 300, a u16 varint
        expected.extend_from_slice(&[2; 8]); // head span id
        expected.push(0); // root_missing
        expected.extend_from_slice(&[1, 2, b'h', b'i', 10]);
        expected.extend_from_slice(b"text/plain");
        expected.extend_from_slice(&[1, 2, b'{', b'}', 13]);
        expected.extend_from_slice(b"application/x");
        expected.extend_from_slice(&[1, 2, 3]); // tokens
        expected.push(2); // status Error
        expected.push(4); // num_spans
        expected.extend_from_slice(&[1, 2, b's', b'2']); // conflicts
        expected.extend_from_slice(&[1, 5]); // user: Some, start
        expected.extend_from_slice(&[6; 8]);
        expected.extend_from_slice(&[1, b'u']);
        expected.push(1); // more_conflicts
        assert_eq!(bytes, expected);
        let view = TurnView::decode(&bytes).map(|v| v.to_body());
        assert_eq!(view, Ok(body()));
    }

    #[test]
    fn view_rejects_damaged_turns() {
        let bytes = encode_value(&body());
        for cut in 0..bytes.len() {
            assert!(TurnView::decode(&bytes[..cut]).is_err(), "prefix {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(TurnView::decode(&long).is_err(), "trailing byte");
        // Byte 11 is root_missing, 12 the input's Option tag, 14.. its
        // value; the status is at 48.
        for (at, byte) in [(11, 2), (12, 2), (14, 0xff), (48, 3), (0, 254), (0, 255)] {
            let mut bad = bytes.clone();
            bad[at] = byte;
            assert!(TurnView::decode(&bad).is_err(), "byte {at} = {byte}");
            assert!(
                decode_value::<TurnBody>(&bad).is_err(),
                "bincode: byte {at}"
            );
        }
        // A conflict count far beyond the value's length allocates nothing.
        let mut huge = bytes[..49].to_vec();
        huge.extend_from_slice(&[4, 253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(TurnView::decode(&huge).is_err());
    }

    fn io() -> impl Strategy<Value = Option<IoValue>> {
        let mime = prop_oneof![
            Just("text/plain".to_owned()),
            Just("application/json".to_owned()),
            ".{0,20}",
        ];
        proptest::option::of(
            (".{0,300}", mime).prop_map(|(value, mime_type)| IoValue::new(value, &mime_type)),
        )
    }

    fn any_u64() -> impl Strategy<Value = u64> {
        prop_oneof![0..300u64, 0..70_000u64, 0..(1u64 << 33), any::<u64>()]
    }

    prop_compose! {
        fn turn_body()(
            end in any_u64(),
            head_span_id in any::<[u8; 8]>(),
            root_missing in any::<bool>(),
            input in io(),
            output in io(),
            tokens in (any_u64(), any_u64(), any_u64()),
            status in 0..3u8,
            num_spans in any_u64(),
            conflicts in proptest::collection::vec(".{0,10}", 0..3),
            user in proptest::option::of((any_u64(), any::<[u8; 8]>(), ".{0,10}")),
            more_conflicts in any::<bool>(),
        ) -> TurnBody {
            TurnBody {
                end,
                head_span_id,
                root_missing,
                input,
                output,
                tokens: Tokens { prompt: tokens.0, completion: tokens.1, total: tokens.2 },
                status: [TraceStatus::Unset, TraceStatus::Ok, TraceStatus::Error][usize::from(status)],
                num_spans,
                conflicts,
                user: user.map(|(start, span_id, value)| Earliest { start, span_id, value }),
                more_conflicts,
            }
        }
    }

    proptest! {
        #[test]
        fn view_round_trips(body in turn_body()) {
            let bytes = encode_value(&body);
            let view = TurnView::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(view.to_body(), body.clone());
            let turn = view.to_turn(7, TraceId([1; 16]));
            prop_assert_eq!(turn.input, body.input);
            prop_assert_eq!(turn.conflicting_session_ids, body.conflicts);
        }

        /// Damaged bytes: the view decoder fails exactly where bincode
        /// does, and agrees with it where both decode.
        #[test]
        fn view_decodes_like_bincode(
            body in turn_body(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = encode_value(&body);
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let serde = decode_value::<TurnBody>(&bytes).ok();
            let direct = TurnView::decode(&bytes).ok().map(|v| v.to_body());
            // What decodes whole has the `end` that `end_of` reads.
            if let Some(body) = &direct {
                prop_assert_eq!(TurnView::end_of(&bytes).ok(), Some(body.end));
            }
            prop_assert_eq!(direct, serde);
        }

        #[test]
        fn view_agrees_with_bincode_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let serde = decode_value::<TurnBody>(&bytes).ok();
            let direct = TurnView::decode(&bytes).ok().map(|v| v.to_body());
            prop_assert_eq!(direct, serde);
        }
    }
}

//! Applying a batch of log records to the indexes in one write transaction.
//!
//! The batch is aggregated in memory first: spans are grouped by trace
//! (one read and one write of each touched trace record), then the touched
//! sessions are updated once each, in key order. The search postings of
//! the group's new texts need nothing of the tables, so they are queued on
//! a scoped thread beside the table writes.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::hashing::FastMap;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::codec;
use crate::error::{Error, Result};
use crate::model::{StoredSpan, TraceId};

use super::facts::{self, SessionIdSource};
use super::search::{self, EncodedChunks};
use super::segments::LiveChanges;
use super::session::{SessionState, TurnRef, sort_values};
use super::trace::{Earliest, Filing, NewRecord, NewRecords, Spares, TraceRecord, TurnBody};
use super::{
    Deferred, HomesWritten, LEGACY_TRACES, META, META_APPLIED, META_NEXT_PROJECT,
    META_NEXT_SESSION, PROJECT_SPANS, PROJECT_STATS, PROJECTS, ProjectCounters, SEARCH,
    SESSION_IDS, SESSION_ORDER, SESSIONS, TRACE_HOMES, TRACE_RECORDS, TURNS, decode,
    decode_session, session_id_key_into, turn_key,
};

/// What the index derivation depends on besides the spans.
#[derive(Debug, Clone)]
pub(crate) struct IndexConfig {
    pub session_id_sources: Vec<SessionIdSource>,
}

/// What the index reads of the log (the store's `Log` is one).
pub(crate) trait SpanSource {
    /// The span stored at `lsn` (a turn's head span that arrived in an
    /// earlier batch, a deleted span), and its frame's bytes, header
    /// included.
    fn span(&self, lsn: u64) -> Result<(StoredSpan, u64)>;
    /// True when the frames at `a` and `b` hold the same record (tag and
    /// payload): a copy of a span frame that compaction made.
    fn same_frame(&self, a: u64, b: u64) -> Result<bool>;
    /// The segment holding `lsn`: its base and the next segment's base
    /// (`u64::MAX` for the last); `None` if no segment does.
    fn segment(&self, lsn: u64) -> Option<(u64, u64)>;
}

/// The write transaction of one batch.
pub(crate) struct IndexWriter {
    pub(super) txn: WriteTransaction,
}

pub(super) struct Tables<'t> {
    pub meta: Table<'t, &'static str, u64>,
    pub projects: Table<'t, &'static str, u32>,
    pub session_ids: Table<'t, &'static [u8], u64>,
    pub sessions: Table<'t, u64, &'static [u8]>,
    pub turns: Table<'t, &'static [u8; 32], &'static [u8]>,
    /// Sort-index changes, written as runs to `runs` by [`Tables::finish`].
    pub order: super::runs::OrderWrites,
    pub runs: Table<'t, &'static [u8], &'static [u8]>,
    pub trace_homes: Table<'t, &'static [u8; 16], u64>,
    pub trace_records: Table<'t, u64, &'static [u8]>,
    pub search: Table<'t, &'static [u8; 12], &'static [u8]>,
    pub project_stats: Table<'t, u32, &'static [u8]>,
    pub project_spans: Table<'t, u32, u64>,
    pub segment_live: Table<'t, u64, u64>,
}

/// Signed changes to one project's counters within a batch.
///
/// In `i128`: a trace's token counts take any `u64` (a span may claim
/// `u64::MAX` tokens), and a batch adds and subtracts many of them, so
/// the sum of changes must neither wrap (it did in `i64`: two traces of
/// `i64::MAX` tokens and one of 5 made a project total of 3) nor
/// saturate before the stored counter is reached (an addition clamped
/// early would no longer cancel the subtraction of the same trace's old
/// counts). The stored counters saturate, as the sessions' sums do.
#[derive(Default)]
pub(super) struct ProjectDelta {
    sessions: i128,
    traces: i128,
    spans: i128,
    tokens: [i128; 3],
}

impl ProjectDelta {
    pub(super) fn trace(&mut self, sign: i64, spans: usize, tokens: crate::model::Tokens) {
        let sign = i128::from(sign);
        self.traces = self.traces.saturating_add(sign);
        let spans = i128::try_from(spans).unwrap_or(i128::MAX);
        self.spans = self.spans.saturating_add(sign.saturating_mul(spans));
        for (slot, v) in
            self.tokens
                .iter_mut()
                .zip([tokens.prompt, tokens.completion, tokens.total])
        {
            *slot = slot.saturating_add(sign.saturating_mul(i128::from(v)));
        }
    }
}

impl ProjectDelta {
    /// Applies these changes to stored counters.
    pub(super) fn apply_to(&self, c: &mut ProjectCounters) {
        c.sessions = apply_signed(c.sessions, self.sessions);
        c.traces = apply_signed(c.traces, self.traces);
        c.spans = apply_signed(c.spans, self.spans);
        c.tokens.prompt = apply_signed(c.tokens.prompt, self.tokens[0]);
        c.tokens.completion = apply_signed(c.tokens.completion, self.tokens[1]);
        c.tokens.total = apply_signed(c.tokens.total, self.tokens[2]);
    }

    /// Counts one session appearing (`+1`) or vanishing (`-1`).
    pub(super) fn session(&mut self, change: i64) {
        self.sessions = self.sessions.saturating_add(i128::from(change));
    }
}

/// `v` changed by `d`, clamped to `0..=u64::MAX`.
pub(super) fn apply_signed(v: u64, d: i128) -> u64 {
    let sum = i128::from(v).saturating_add(d);
    u64::try_from(sum.max(0)).unwrap_or(u64::MAX)
}

/// A turn entering, changing in, or leaving one session.
pub(super) struct Delta {
    pub trace_id: [u8; 16],
    pub old: Option<(u64, TurnBody)>,
    pub new: Option<(u64, TurnBody)>,
}

/// What [`IndexWriter::apply`] leaves behind: the group's turn changes,
/// with the inputs and outputs they moved out of its records. Dropping it
/// frees them; a caller on a busy thread can hand it to another to drop.
#[must_use = "dropping it frees the group's turn texts; drop it where that costs least"]
pub(crate) struct Spent {
    _deltas: Vec<(u64, Delta)>,
}

/// Identity of a session, for creating its summary.
#[derive(Clone)]
pub(super) struct SessionIdent {
    project_id: u32,
    project: String,
    session_id: String,
}

/// A trace's home and record; no home and an empty record for a trace the
/// index does not hold. `known_home`: its home if a deferred change holds it.
pub(super) fn load_trace(
    t: &Tables<'_>,
    id: [u8; 16],
    known_home: Option<u64>,
) -> Result<(Option<u64>, TraceRecord)> {
    let found = super::find_trace(&t.trace_homes, known_home, &t.trace_records, id)?;
    Ok(match found {
        Some((home, rec)) => (Some(home), rec),
        None => (None, TraceRecord::default()),
    })
}

/// Writes a trace's record at its home.
pub(super) fn store_trace(t: &mut Tables<'_>, home: u64, rec: &TraceRecord) -> Result<()> {
    codec::with_wire(rec, |v| t.trace_records.insert(home, v))?;
    Ok(())
}

impl IndexWriter {
    pub(super) fn new(txn: WriteTransaction) -> Self {
        Self { txn }
    }

    /// The transaction itself, for tests that damage a table.
    #[cfg(test)]
    pub(crate) fn txn(&self) -> &WriteTransaction {
        &self.txn
    }

    /// Commits (non-durably: see `Index::checkpoint`).
    pub(crate) fn commit(self) -> Result<()> {
        self.txn.commit()?;
        Ok(())
    }

    /// Empties every derived table (for a rebuild) and resets the applied LSN.
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.txn.delete_table(LEGACY_TRACES)?;
        self.txn.delete_table(SESSION_ORDER)?;
        super::posting_runs::drop_runs(&self.txn)?;
        super::home_runs::drop_runs(&self.txn)?;
        let mut t = self.tables()?;
        t.meta.insert(META_APPLIED, 0)?;
        t.meta.insert(META_NEXT_SESSION, 0)?;
        t.meta.insert(META_NEXT_PROJECT, 0)?;
        t.projects.retain(|_, _| false)?;
        t.session_ids.retain(|_, _| false)?;
        t.sessions.retain(|_, _| false)?;
        t.turns.retain(|_, _| false)?;
        t.runs.retain(|_, _| false)?;
        t.trace_homes.retain(|_, _| false)?;
        t.trace_records.retain(|_, _| false)?;
        t.search.retain(|_, _| false)?;
        t.project_stats.retain(|_, _| false)?;
        t.project_spans.retain(|_, _| false)?;
        t.segment_live.retain(|_, _| false)?;
        Ok(())
    }

    /// Sets a meta value (checkpoint bookkeeping, config fingerprint).
    pub(crate) fn set_meta(&mut self, key: &str, value: u64) -> Result<()> {
        let mut meta = self.txn.open_table(META)?;
        meta.insert(key, value)?;
        Ok(())
    }

    pub(super) fn tables(&self) -> Result<Tables<'_>> {
        Ok(Tables {
            meta: self.txn.open_table(META)?,
            projects: self.txn.open_table(PROJECTS)?,
            session_ids: self.txn.open_table(SESSION_IDS)?,
            sessions: self.txn.open_table(SESSIONS)?,
            turns: self.txn.open_table(TURNS)?,
            order: super::runs::OrderWrites::default(),
            runs: self.txn.open_table(super::runs::SESSION_RUNS)?,
            trace_homes: self.txn.open_table(TRACE_HOMES)?,
            trace_records: self.txn.open_table(TRACE_RECORDS)?,
            search: self.txn.open_table(SEARCH)?,
            project_stats: self.txn.open_table(PROJECT_STATS)?,
            project_spans: self.txn.open_table(PROJECT_SPANS)?,
            segment_live: self.txn.open_table(super::segments::SEGMENT_LIVE)?,
        })
    }

    /// Writes the held trace homes (`Deferred::homes` and `run_homes`):
    /// the new ones as a run of `home_runs`, or, if `full` (more are held
    /// than `Deferred::homes_limit`), all of them to `trace_homes` (see
    /// `home_runs`).
    pub(crate) fn write_held_homes(
        &mut self,
        new: &FastMap<[u8; 16], u64>,
        in_runs: &FastMap<[u8; 16], u64>,
        full: bool,
    ) -> Result<HomesWritten> {
        if full {
            self.merge_homes(new, in_runs)?;
            Ok(HomesWritten::Table)
        } else {
            super::home_runs::write_run(&self.txn, new)?;
            Ok(HomesWritten::Run)
        }
    }

    /// Writes the held trace homes (`Deferred::homes` and `run_homes`) to
    /// `trace_homes`, in key order, and drops the runs: afterwards the
    /// tables alone find every trace.
    pub(crate) fn merge_homes(
        &mut self,
        new: &FastMap<[u8; 16], u64>,
        in_runs: &FastMap<[u8; 16], u64>,
    ) -> Result<()> {
        let mut sorted: Vec<(&[u8; 16], &u64)> = new.iter().chain(in_runs).collect();
        sorted.sort_unstable();
        {
            let mut table = self.txn.open_table(TRACE_HOMES)?;
            for (id, home) in sorted {
                table.insert(id, home)?;
            }
        }
        super::home_runs::drop_runs(&self.txn)
    }

    /// The trace homes the runs of `home_runs` hold (for an open).
    pub(crate) fn run_homes(&self) -> Result<FastMap<[u8; 16], u64>> {
        super::home_runs::load(&self.txn.open_table(super::home_runs::HOME_RUNS)?)
    }

    /// Writes search postings (from `Postings::chunks`, in key order) as a
    /// run (see `posting_runs`).
    pub(crate) fn write_postings(&mut self, chunks: &EncodedChunks) -> Result<()> {
        super::posting_runs::write_run(&self.txn, chunks)
    }

    /// Applies records (in log order) and records `applied_lsn`. Search
    /// postings and the homes of new traces go to `group`, not to their
    /// tables: the caller keeps them across groups and writes them with
    /// [`IndexWriter::write_postings`] and
    /// [`IndexWriter::write_held_homes`]; `committed` holds the homes of
    /// earlier groups not written yet. Spans already indexed are skipped,
    /// so replaying a record is harmless.
    pub(crate) fn apply(
        &mut self,
        records: &mut NewRecords,
        source: &dyn SpanSource,
        applied_lsn: u64,
        group: &mut Deferred,
        committed: &Deferred,
    ) -> Result<Spent> {
        let mut t = self.tables()?;
        let mut counters = Counters::load(&t.meta)?;
        let mut idents: FastMap<u64, SessionIdent> = FastMap::default();
        // Each trace's changes to its sessions, in trace order, with the
        // session each is for; `write_group` takes them session by session.
        let mut deltas: Vec<(u64, Delta)> = Vec::new();
        let mut projects: BTreeMap<u32, ProjectDelta> = BTreeMap::new();
        // Frames that became live, per segment.
        let mut live = LiveChanges::default();
        // Writes to `turns` and `trace_records`, applied in key order once
        // every trace of the group is read: a group's keys are spread over
        // the tables, and in key order neighbouring writes share pages.
        // (Each key names its trace, and a group reads each trace once, so
        // no key is written twice: a vector sorted once will do.)
        let spans = records.len();
        let mut writes = GROUP_WRITES.take(spans);
        let mut search_work = SearchWork::default();
        // The buffers of each trace record done with, for the next.
        let mut spares = Spares::default();

        let (batch, project_names) = records.parts();
        // Stored spans per project they were appended under (for
        // `projects()`), by the project's place in `project_names`.
        let mut appended: Vec<i64> = vec![0; project_names.len()];
        // Every project a span was appended under is listed by `projects()`,
        // whichever project its trace ends up in. (A batch names a project
        // only with a span appended under it, and every record names one of
        // the batch's: see `NewRecords::project_at`.)
        // (Their numbers are kept: a trace's project is nearly always the
        // one its records were appended under, and a batch names several
        // projects, in turn, which the last-project shortcut of
        // `Counters::project` misses.)
        let mut project_ids = Vec::with_capacity(project_names.len());
        for project in project_names {
            project_ids.push(counters.project(&mut t.projects, project)?);
        }
        let project_of = |r: &NewRecord| project_names.get(r.project).map_or("", String::as_str);
        // The group's spans by trace, each trace's in log order, traces
        // ascending. Mutable: a turn takes its root's texts rather than
        // copying them.
        let (mut by_trace, traces) = group_by_trace(batch);
        let same_trace =
            |a: &&mut NewRecord, b: &&mut NewRecord| a.span.trace_id == b.span.trace_id;
        // At most one new home per trace: room for them up front rather
        // than rehashing as the map doubles (1.3% of the indexing thread).
        group.homes.reserve(traces);
        deltas.reserve(traces);
        for recs in by_trace.chunk_by_mut(same_trace) {
            let Some(tid) = recs.first().map(|r| r.span.trace_id) else {
                continue;
            };
            let known = group.home(&tid).or_else(|| committed.home(&tid));
            let (home, mut rec) = load_trace(&t, tid, known)?;
            let old_filing = rec.filing;
            let old_head = rec.head().map(|(f, _)| f.span_id);
            let old_project = rec.project().map(str::to_owned);
            let (old_spans, old_tokens) = (rec.spans.len(), rec.tokens);
            let mut changed = false;
            // Room for the group's spans at once, not grown one by one.
            spares.reserve_facts(&mut rec.spans, recs.len());
            for r in recs.iter_mut() {
                let project = project_of(r);
                let added = rec.add_with(r, project, &mut spares);
                if added {
                    if let Some(n) = appended.get_mut(r.project) {
                        *n += 1;
                    }
                    live.add(source, r.lsn, i64::from(r.frame_bytes))?;
                } else if let Some(old) = rec.move_to_copy(r, source)? {
                    // A copy compaction made of the stored frame, met by a
                    // replay (the compaction was cut short before its index
                    // pointed at its copies, or a rebuild reads the log
                    // from the start): the span lives in the copy from
                    // now, as the compaction would have made it, so that
                    // the index is the same function of the log whichever
                    // way it was built. Appends write no duplicates.
                    let bytes = i64::from(r.frame_bytes);
                    live.add(source, old, -bytes)?;
                    live.add(source, r.lsn, bytes)?;
                    changed = true;
                    continue;
                }
                changed |= added;
            }
            if !changed {
                spares.recycle(rec);
                continue;
            }
            if let Some(p) = &old_project {
                let id = counters.project(&mut t.projects, p)?;
                projects
                    .entry(id)
                    .or_default()
                    .trace(-1, old_spans, old_tokens);
            }
            // The trace's project number, looked up once: by the project
            // its first record of the group was appended under when the
            // names agree, else by name.
            let project_id = match rec.project() {
                Some(p) => {
                    let hint = recs.first().and_then(|r| {
                        let id = project_ids.get(r.project)?;
                        (project_names.get(r.project)? == p).then_some(*id)
                    });
                    Some(match hint {
                        Some(id) => id,
                        None => counters.project(&mut t.projects, p)?,
                    })
                }
                None => None,
            };
            if let Some(id) = project_id {
                projects
                    .entry(id)
                    .or_default()
                    .trace(1, rec.spans.len(), rec.tokens);
            }
            let new_session = match (project_id, rec.session_id()) {
                (Some(project_id), Some(s)) => {
                    let n = counters.session(&mut t.session_ids, project_id, s)?;
                    Some((n, project_id))
                }
                _ => None,
            };
            let old_body = match old_filing {
                Some(f) => {
                    let v = t.turns.get(&turn_key(f.session, f.start, tid))?;
                    match v {
                        Some(v) => Some(decode::<TurnBody>("turn", v.value())?),
                        None => {
                            return Err(Error::Index(Box::new(redb::Error::Corrupted(format!(
                                "trace {} is filed under a missing turn",
                                TraceId(tid)
                            )))));
                        }
                    }
                }
                None => None,
            };
            let new_filing = new_session.map(|(session, _)| Filing {
                session,
                start: rec.start,
            });
            let mut new_body = match new_filing {
                Some(_) => Some(turn_body(&rec, recs, old_head, old_body.as_ref(), source)?),
                None => None,
            };
            // A turn whose texts are new to its session has them queued
            // for the search postings once every trace is read (see
            // `SearchWork`), from its delta below.
            let search_project = match (new_filing, &new_body) {
                (Some(nf), Some(body)) => {
                    let text_changed = old_filing.map(|f| f.session) != Some(nf.session)
                        || old_body
                            .as_ref()
                            .is_none_or(|ob| ob.input != body.input || ob.output != body.output);
                    new_session
                        .filter(|&(session, _)| text_changed && session == nf.session)
                        .map(|(_, project_id)| project_id)
                }
                _ => None,
            };
            rec.filing = new_filing;
            // A new trace's home: the LSN of its first span in this batch.
            let home = match home {
                Some(h) => h,
                None => {
                    let first = recs.iter().map(|r| r.lsn).min().unwrap_or_default();
                    group.homes.insert(tid, first);
                    first
                }
            };
            writes.records.push(home, Some(&rec));
            // The record is encoded: the turn takes its user rather than a
            // copy (see `turn_body`): the user id of the group's span it
            // came from, else the record's own (whose buffer then goes to
            // the spares).
            if let Some(body) = &mut new_body {
                body.user = take_user(&mut rec, recs);
            }
            // Named once per session and group, not once per trace: by the
            // record's own strings, which it no longer needs.
            if let Some((n, project_id)) = new_session
                && let std::collections::hash_map::Entry::Vacant(slot) = idents.entry(n)
                && let Some((project, session_id)) = rec.take_names()
            {
                slot.insert(SessionIdent {
                    project_id,
                    project,
                    session_id,
                });
            }
            if let Some(f) = old_filing
                && Some(f) != new_filing
            {
                writes
                    .turns
                    .push::<TurnBody>(key_words(&turn_key(f.session, f.start, tid)), None);
            }
            if let (Some(f), Some(body)) = (new_filing, &new_body) {
                writes
                    .turns
                    .push(key_words(&turn_key(f.session, f.start, tid)), Some(body));
            }

            // A turn with both filings and bodies in one session is one
            // delta; otherwise one for the old turn and one for the new,
            // each that has both. (The bodies move straight into the
            // deltas, not through pairs first: a body is a few hundred
            // bytes.)
            let old = old_filing.filter(|_| old_body.is_some());
            let new = new_filing.filter(|_| new_body.is_some());
            match (old, new) {
                (Some(of), Some(nf)) if of.session == nf.session => {
                    deltas.push((
                        nf.session,
                        Delta {
                            trace_id: tid,
                            old: old_body.map(|ob| (of.start, ob)),
                            new: new_body.map(|nb| (nf.start, nb)),
                        },
                    ));
                }
                (old, new) => {
                    if let Some(of) = old {
                        deltas.push((
                            of.session,
                            Delta {
                                trace_id: tid,
                                old: old_body.map(|ob| (of.start, ob)),
                                new: None,
                            },
                        ));
                    }
                    if let Some(nf) = new {
                        deltas.push((
                            nf.session,
                            Delta {
                                trace_id: tid,
                                old: None,
                                new: new_body.map(|nb| (nf.start, nb)),
                            },
                        ));
                    }
                }
            }
            // The delta just pushed carries the new turn.
            if let Some(project_id) = search_project {
                search_work.add(project_id, &deltas);
            }
            spares.recycle(rec);
        }

        // The search postings of the group's new texts are queued beside
        // the table writes below, on a thread of their own when there is
        // enough text to pay for one: they need nothing of the tables.
        let postings = &mut group.postings;
        let result = std::thread::scope(|scope| {
            let queued = if search_work.text_bytes >= SEARCH_THREAD_MIN_BYTES {
                let (work, deltas) = (&search_work, &deltas);
                Some(scope.spawn(move || work.queue(postings, deltas)))
            } else {
                search_work.queue(postings, &deltas);
                None
            };
            let written = Self::write_group(
                &mut t,
                &mut counters,
                &mut writes,
                &deltas,
                idents,
                projects,
                project_names
                    .iter()
                    .map(String::as_str)
                    .zip(appended)
                    .filter(|&(_, n)| n != 0),
                live,
                applied_lsn,
            );
            // `queue` cannot fail; a panic there (a bug) fails the group.
            match queued.map(std::thread::ScopedJoinHandle::join) {
                Some(Err(_)) => Err(Error::panicked()),
                _ => written,
            }
        });
        GROUP_WRITES.give_back(writes, spans);
        result.map(|()| Spent { _deltas: deltas })
    }

    /// The writes of [`Self::apply`] once every trace of the group is read.
    #[expect(clippy::too_many_arguments, reason = "the state of one apply")]
    fn write_group<'p>(
        t: &mut Tables<'_>,
        counters: &mut Counters,
        writes: &mut GroupWrites,
        deltas: &[(u64, Delta)],
        mut idents: FastMap<u64, SessionIdent>,
        mut projects: BTreeMap<u32, ProjectDelta>,
        appended: impl Iterator<Item = (&'p str, i64)>,
        live: LiveChanges,
        applied_lsn: u64,
    ) -> Result<()> {
        // Turns and trace records go to their tables in key order, after
        // every trace is read (no trace is read twice in one group) and
        // before sessions are refolded from their turns.
        // The turns of sessions new in this group sort after every stored
        // turn (session numbers only grow): they go to the end in one run.
        // (Keys held as two big-endian words each: in the bytes' order.)
        let GroupWrites {
            turns: turn_writes,
            records: record_writes,
            sessions: summaries,
        } = writes;
        // (Placed by session number, the key's first eight bytes, then
        // sorted within each session.)
        super::radix::sort_by_lead(&mut turn_writes.entries, |(w, _)| lead(w.0), |(w, _)| *w);
        let last = t.turns.last()?.map(|(k, _)| key_words(k.value()));
        let mut tail = Vec::new();
        for (w, v) in &turn_writes.entries {
            let k = words_key(*w);
            match v.map(|at| turn_writes.value(at)) {
                Some(body) if last.is_none_or(|l| *w > l) => tail.push((k, body)),
                Some(body) => {
                    t.turns.insert(&k, body)?;
                }
                // Nothing is stored past the last key to remove.
                None if last.is_none_or(|l| *w > l) => {}
                None => {
                    t.turns.remove(&k)?;
                }
            }
        }
        super::append_ascending(&mut t.turns, tail.iter().map(|(k, body)| (k, *body)))?;
        // A new trace's home is an LSN of this group, above every stored
        // home: new records go to the end of the table in one run.
        super::radix::sort_by_lead(
            &mut record_writes.entries,
            |(home, _)| *home,
            |(home, _)| *home,
        );
        let last = t.trace_records.last()?.map(|(k, _)| k.value());
        let (stored, new) = record_writes.entries.split_at(
            record_writes
                .entries
                .partition_point(|(home, _)| last.is_some_and(|l| *home <= l)),
        );
        let rec = |at: &Option<(usize, usize)>| at.map_or(&[][..], |at| record_writes.value(at));
        for (home, at) in stored {
            t.trace_records.insert(*home, rec(at))?;
        }
        super::append_ascending(
            &mut t.trace_records,
            new.iter().map(|(home, at)| (*home, rec(at))),
        )?;
        // Likewise the summaries of new sessions, after every stored one.
        let mut tail = SessionTail {
            above: t.sessions.last()?.map(|(k, _)| k.value()),
            entries: summaries,
        };
        // Sessions ascending, each one's deltas in the order they were made
        // (positions are unique, so an unstable sort is exact).
        let mut by_session: Vec<(u64, usize)> = deltas
            .iter()
            .enumerate()
            .map(|(at, (session, _))| (*session, at))
            .collect();
        super::radix::sort_by_lead(&mut by_session, |&(session, _)| session, |&e| e);
        for run in by_session.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(session, _)) = run.first() else {
                continue;
            };
            let ds = run
                .iter()
                .filter_map(|&(_, at)| deltas.get(at).map(|(_, d)| d));
            let (project_id, change) =
                update_session(t, session, ds, idents.remove(&session), Some(&mut tail))?;
            projects.entry(project_id).or_default().session(change);
        }
        let summaries = &*tail.entries;
        super::append_ascending(
            &mut t.sessions,
            summaries
                .entries
                .iter()
                .map(|(k, at)| (*k, at.map_or(&[][..], |at| summaries.value(at)))),
        )?;
        for (project, n) in appended {
            let id = counters.project(&mut t.projects, project)?;
            let old = t.project_spans.get(id)?.map_or(0, |v| v.value());
            t.project_spans
                .insert(id, apply_signed(old, i128::from(n)))?;
        }
        for (project_id, d) in projects {
            let mut c: ProjectCounters = match t.project_stats.get(project_id)? {
                Some(v) => decode("project counters", v.value())?,
                None => ProjectCounters::default(),
            };
            d.apply_to(&mut c);
            t.project_stats
                .insert(project_id, codec::encode_value(&c).as_slice())?;
        }
        live.write(&mut t.segment_live)?;
        counters.write_new_sessions(&mut t.session_ids)?;
        counters.store(&mut t.meta)?;
        t.meta.insert(META_APPLIED, applied_lsn)?;
        t.finish()
    }
}

/// Text of a group's new turns from which its search postings are queued
/// on a thread of their own, beside the table writes; less is queued in
/// place (a thread costs tens of microseconds; 64 KiB of text about a
/// millisecond of trigrams).
const SEARCH_THREAD_MIN_BYTES: usize = 64 * 1024;

/// The turns of a group whose texts go to the search postings: project
/// and where the turn's delta is in the group's deltas.
#[derive(Default)]
struct SearchWork {
    turns: Vec<(u32, usize)>,
    text_bytes: usize,
}

impl SearchWork {
    /// Notes the new turn of the last delta pushed to `deltas`.
    fn add(&mut self, project_id: u32, deltas: &[(u64, Delta)]) {
        let Some(at) = deltas.len().checked_sub(1) else {
            return;
        };
        let texts = deltas
            .get(at)
            .and_then(|(_, d)| d.new.as_ref())
            .map_or(0, |(_, body)| {
                [&body.input, &body.output]
                    .into_iter()
                    .flatten()
                    .map(|v| v.value.len())
                    .sum::<usize>()
            });
        self.text_bytes += texts;
        self.turns.push((project_id, at));
    }

    /// Queues the noted turns' texts, in the order they were noted.
    fn queue(&self, postings: &mut search::BatchPostings, deltas: &[(u64, Delta)]) {
        for &(project_id, at) in &self.turns {
            let Some((session, (_, body))) = deltas
                .get(at)
                .and_then(|(session, d)| Some((*session, d.new.as_ref()?)))
            else {
                continue;
            };
            let texts: Vec<&str> = [&body.input, &body.output]
                .into_iter()
                .flatten()
                .map(|v| v.value.as_str())
                .collect();
            search::queue(postings, project_id, session, &texts);
        }
    }
}

/// The record's user (`TraceRecord::user`), by the user id of the span of
/// `batch` it names (taken from that span) when one holds it, else taken
/// from the record.
fn take_user(rec: &mut TraceRecord, batch: &mut [&mut NewRecord]) -> Option<Earliest> {
    let user = rec.user.as_ref()?;
    let from_span = batch
        .iter_mut()
        .find(|r| r.span.span_id == user.span_id)
        .and_then(|r| r.span.user.take_if(|u| *u == user.value));
    match from_span {
        Some(value) => Some(Earliest {
            start: user.start,
            span_id: user.span_id,
            value,
        }),
        None => rec.user.take(),
    }
}

/// Builds the stored turn of a trace filed under a session, all but its
/// user (the caller moves `rec.user` in once it has encoded `rec`).
fn turn_body(
    rec: &TraceRecord,
    batch: &mut [&mut NewRecord],
    old_head: Option<[u8; 8]>,
    old_body: Option<&TurnBody>,
    source: &dyn SpanSource,
) -> Result<TurnBody> {
    let (head, root_missing) = match rec.head() {
        Some(h) => h,
        None => {
            return Err(Error::Index(Box::new(redb::Error::Corrupted(
                "trace record without spans".into(),
            ))));
        }
    };
    // Spans without a parent carry their input and output; another head
    // (a trace whose root is missing) is read back from the log.
    // The root's texts are taken: a trace's turn is made once per group.
    let in_batch = batch
        .iter_mut()
        .find(|r| r.span.span_id == head.span_id && r.span.parent.is_none());
    let (input, output) = match (in_batch, old_body) {
        (Some(r), _) => (r.span.input.take(), r.span.output.take()),
        (None, Some(ob)) if old_head == Some(head.span_id) => (ob.input.clone(), ob.output.clone()),
        _ => {
            let (stored, _) = source.span(head.lsn)?;
            (facts::input(&stored.span), facts::output(&stored.span))
        }
    };
    Ok(TurnBody {
        end: rec.end,
        head_span_id: head.span_id,
        root_missing,
        input,
        output,
        tokens: rec.tokens,
        status: rec.status(),
        num_spans: rec.spans.len() as u64,
        conflicts: rec.conflicts(),
        // The caller moves the record's user in once the record is encoded.
        user: None,
        more_conflicts: rec.more_session_ids,
    })
}

/// Updates one session's summary by its deltas (refolding it from its
/// turns when a delta can make a minimum or maximum worse) and its sort
/// keys.
pub(super) fn update_session<'d>(
    t: &mut Tables<'_>,
    session: u64,
    deltas: impl IntoIterator<Item = &'d Delta>,
    ident: Option<SessionIdent>,
    mut tail: Option<&mut SessionTail<'_>>,
) -> Result<(u32, i64)> {
    // A session numbered past the table's last has no summary yet, and its
    // new one is held for the append at the end.
    let tail = tail
        .take()
        .filter(|tail| tail.above.is_none_or(|a| session > a));
    let old: Option<SessionState> = match tail {
        Some(_) => None,
        None => match t.sessions.get(session)? {
            Some(v) => Some(decode_session(v.value())?),
            None => None,
        },
    };
    // What the sort index needs of the stored summary (its sort values
    // while it is listed); the summary itself becomes the new state rather
    // than being copied (its texts are a few allocations per session).
    let old_values = old.as_ref().filter(|o| o.num_traces > 0).map(sort_values);
    let mut state = match (old, ident) {
        (Some(s), _) => s,
        // A new summary takes the identity's strings rather than copies.
        (None, Some(i)) => SessionState::named(i.project_id, i.project, i.session_id),
        (None, None) => {
            return Err(Error::Index(Box::new(redb::Error::Corrupted(format!(
                "session {session} has turns but no summary"
            )))));
        }
    };
    let mut incremental = true;
    for d in deltas {
        match (&d.old, &d.new) {
            (None, Some((start, body))) => state.add(TurnRef {
                start: *start,
                trace_id: d.trace_id,
                body,
            }),
            (Some((os, ob)), Some((ns, nb))) => {
                let old_turn = TurnRef {
                    start: *os,
                    trace_id: d.trace_id,
                    body: ob,
                };
                let new_turn = TurnRef {
                    start: *ns,
                    trace_id: d.trace_id,
                    body: nb,
                };
                if !state.replace(old_turn, new_turn) {
                    incremental = false;
                    break;
                }
            }
            _ => {
                incremental = false;
                break;
            }
        }
    }
    if !incremental {
        // Partly updated: refolded from the turns, under the same identity.
        state = refold(&t.turns, session, &state)?;
    }
    // A summary's project and session id never change, so the old sort
    // keys are named by the new state's.
    let project_id = state.project_id;
    if let Some(ov) = &old_values {
        let nv = sort_values(&state);
        for (kind, (a, b)) in ov.iter().zip(nv.iter()).enumerate() {
            if a != b || state.num_traces == 0 {
                t.order
                    .remove(project_id, kind_byte(kind), *a, state.session_id.as_bytes());
            }
        }
    }
    let was_listed = old_values.is_some();
    if state.num_traces == 0 {
        t.sessions.remove(session)?;
        return Ok((project_id, -i64::from(was_listed)));
    }
    for (kind, v) in sort_values(&state).iter().enumerate() {
        if old_values.is_none_or(|ov| ov.get(kind) != Some(v)) {
            t.order.insert(
                project_id,
                kind_byte(kind),
                *v,
                state.session_id.as_bytes(),
                session,
            );
        }
    }
    match tail {
        Some(tail) => tail.entries.push(session, Some(&state)),
        None => {
            codec::with_wire(&state, |v| t.sessions.insert(session, v))?;
        }
    }
    Ok((project_id, i64::from(!was_listed)))
}

/// Summaries of sessions numbered past the last one stored, held by
/// [`update_session`] to be appended at the end of `sessions` in one run,
/// in the ascending order `write_group` updates sessions in.
pub(super) struct SessionTail<'e> {
    /// The last session number stored when the group began, if any.
    above: Option<u64>,
    entries: &'e mut Encoded<u64>,
}

/// Encoded writes of one group, in buffers reused from group to group on
/// the applying thread: grown once rather than (by doubling, copying
/// what they hold) for every group.
#[derive(Default)]
pub(super) struct GroupWrites {
    /// Writes to `turns` (`None`: a removal).
    /// (Keys as [`key_words`].)
    turns: Encoded<(u128, u128)>,
    /// Writes to `trace_records`.
    records: Encoded<u64>,
    /// New session summaries (see [`SessionTail`]).
    sessions: Encoded<u64>,
}

/// Bytes of encoded writes kept between groups (beyond them, the
/// buffers are given back, so that one huge group does not pin its memory).
const GROUP_WRITES_KEEP: usize = 8 << 20;

/// Most times the last group's length of a buffer that [`WritesPool::take`]
/// reserves, when that is above [`GROUP_WRITES_KEEP`] (a group of one span
/// of a long trace, scaled to a group of many spans, would ask for far more
/// than the group writes).
const GROUP_WRITES_GROWTH: usize = 4;

/// The [`GroupWrites`] of the last group, and its lengths, between groups.
/// (Not per thread: ingest indexes each group on a thread of its own, so
/// buffers a thread kept were never used again, and every group grew its
/// buffers from empty.)
static GROUP_WRITES: WritesPool = WritesPool::new();

/// [`GroupWrites`] kept for the next group, and what the last group wrote
/// (see [`GroupLengths`]), kept even when its buffers were given back.
pub(super) struct WritesPool(Mutex<(Option<GroupWrites>, Option<GroupLengths>)>);

/// The lengths a group's [`GroupWrites`] reached, and its number of spans:
/// the next group reserves them, scaled to its own spans, once. Grown by
/// doubling instead, a buffer copies what it holds at every step (about
/// its final length again): in a group after one whose buffers were
/// given back, or larger than the last, those copies were about a
/// twentieth of the indexing thread's instructions in the ingest profile.
#[derive(Clone, Copy, Debug, PartialEq)]
struct GroupLengths {
    spans: usize,
    /// Bytes and entries of `turns`, `records` and `sessions`.
    lengths: [(usize, usize); 3],
}

impl GroupLengths {
    /// The last group's length `last` scaled from its spans to `spans`,
    /// at most [`GROUP_WRITES_GROWTH`] times `last` or
    /// [`GROUP_WRITES_KEEP`], whichever is more. (Capped at a few times
    /// `last` alone, a large group after a small one, common while
    /// ingest runs ahead of the index, still grew by doubling.)
    fn scaled(&self, last: usize, spans: usize) -> usize {
        let cap = last
            .saturating_mul(GROUP_WRITES_GROWTH)
            .max(GROUP_WRITES_KEEP);
        (last.saturating_mul(spans) / self.spans.max(1)).min(cap)
    }
}

impl WritesPool {
    /// An empty pool.
    const fn new() -> Self {
        Self(Mutex::new((None, None)))
    }

    /// The kept buffers (else new ones), emptied, with room for a group of
    /// `spans` spans as large as the last group's per span. (A poisoned
    /// lock, from a panic elsewhere, only costs the reuse.)
    fn take(&self, spans: usize) -> GroupWrites {
        let (kept, last) = match self.0.lock() {
            Ok(mut pool) => (pool.0.take(), pool.1),
            Err(_) => (None, None),
        };
        let mut w = kept.unwrap_or_default();
        w.turns.clear();
        w.records.clear();
        w.sessions.clear();
        if let Some(last) = last {
            let [turns, records, sessions] = last.lengths;
            w.turns
                .reserve(last.scaled(turns.0, spans), last.scaled(turns.1, spans));
            w.records
                .reserve(last.scaled(records.0, spans), last.scaled(records.1, spans));
            w.sessions.reserve(
                last.scaled(sessions.0, spans),
                last.scaled(sessions.1, spans),
            );
        }
        w
    }

    /// Keeps `w` for the next group, unless its buffers grew too large,
    /// and its lengths (for a group of `spans` spans) always.
    fn give_back(&self, w: GroupWrites, spans: usize) {
        let lengths = w.lengths(spans);
        let held = w.turns.held() + w.records.held() + w.sessions.held();
        if let Ok(mut pool) = self.0.lock() {
            pool.1 = Some(lengths);
            if held <= GROUP_WRITES_KEEP {
                pool.0 = Some(w);
            }
        }
    }
}

impl GroupWrites {
    /// What this group's buffers hold, for [`WritesPool::take`].
    fn lengths(&self, spans: usize) -> GroupLengths {
        GroupLengths {
            spans,
            lengths: [
                self.turns.lengths(),
                self.records.lengths(),
                self.sessions.lengths(),
            ],
        }
    }
}

/// The records of `batch` grouped by trace, traces ascending by id, each
/// trace's records in their order in `batch`; and how many traces there
/// are. (Sorting only the distinct traces, and placing each record by a
/// count of its trace's records, costs less than sorting every record by
/// its trace id.)
fn group_by_trace(batch: &mut [NewRecord]) -> (Vec<&mut NewRecord>, usize) {
    // Each record's trace, numbered in order of first appearance, and
    // each trace's id and number of records.
    let mut numbers: FastMap<[u8; 16], usize> =
        FastMap::with_capacity_and_hasher(batch.len(), Default::default());
    let mut trace_of: Vec<usize> = Vec::with_capacity(batch.len());
    let mut traces: Vec<(u128, usize)> = Vec::new();
    let mut last: Option<([u8; 16], usize)> = None;
    for r in batch.iter() {
        let next = traces.len();
        // A trace's spans often come one after another.
        let n = match last {
            Some((id, n)) if id == r.span.trace_id => n,
            _ => *numbers.entry(r.span.trace_id).or_insert(next),
        };
        last = Some((r.span.trace_id, n));
        if n == next {
            traces.push((u128::from_be_bytes(r.span.trace_id), 0));
        }
        if let Some((_, count)) = traces.get_mut(n) {
            *count += 1;
        }
        trace_of.push(n);
    }
    // Traces ascending (ids are distinct: unstable is exact), and where
    // each one's records begin in the result.
    let mut order: Vec<(u128, usize)> = traces
        .iter()
        .enumerate()
        .map(|(n, &(id, _))| (id, n))
        .collect();
    // Placed by the ids' first sixteen bits, then sorted where those
    // tie: random ids rarely share them, and ids that do (time-ordered
    // ones) are sorted as before.
    super::radix::sort_by_lead(&mut order, |&(id, _)| top16(id), |&(id, _)| id);
    let mut next_place = vec![0usize; traces.len()];
    let mut at = 0;
    for &(_, n) in &order {
        if let (Some(place), Some((_, count))) = (next_place.get_mut(n), traces.get(n)) {
            *place = at;
            at += count;
        }
    }
    let mut places: Vec<Option<&mut NewRecord>> = Vec::with_capacity(batch.len());
    places.resize_with(batch.len(), || None);
    for (r, &n) in batch.iter_mut().zip(&trace_of) {
        if let Some(place) = next_place.get_mut(n)
            && let Some(slot) = places.get_mut(*place)
        {
            *slot = Some(r);
            *place += 1;
        }
    }
    (places.into_iter().flatten().collect(), traces.len())
}

/// The first eight bytes of a big-endian word, as a number (a turn key's
/// session): words whose leads differ are ordered as the leads are.
fn lead(word: u128) -> u64 {
    (word >> 64) as u64
}

/// The first sixteen bits of a big-endian word: words whose first
/// sixteen bits differ are ordered as those are.
fn top16(word: u128) -> u64 {
    u64::from((word >> 112) as u16)
}

/// A 32-byte key as two big-endian words: ordered as the bytes are.
fn key_words(k: &[u8; 32]) -> (u128, u128) {
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&k[..16]);
    lo.copy_from_slice(&k[16..]);
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// The key [`key_words`] gives as words.
fn words_key((hi, lo): (u128, u128)) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&hi.to_be_bytes());
    k[16..].copy_from_slice(&lo.to_be_bytes());
    k
}

/// Values encoded one after another into one buffer, each listed with its
/// key and where its bytes are (`None`: a removal): a group's writes
/// without an allocation (and a copy out of the encoding buffer) each.
pub(super) struct Encoded<K> {
    bytes: Vec<u8>,
    entries: Vec<(K, Option<(usize, usize)>)>,
}

impl<K> Default for Encoded<K> {
    fn default() -> Self {
        Self {
            bytes: Vec::new(),
            entries: Vec::new(),
        }
    }
}

impl<K> Encoded<K> {
    /// Lists `key` with the encoding of `value` (`encode_value`'s bytes),
    /// or with none.
    fn push<V: codec::Wire>(&mut self, key: K, value: Option<&V>) {
        let at = value.map(|v| {
            let start = self.bytes.len();
            v.put(&mut self.bytes);
            (start, self.bytes.len())
        });
        self.entries.push((key, at));
    }

    /// Drops every value, keeping the buffers.
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Room for `bytes` more bytes and `entries` more entries.
    fn reserve(&mut self, bytes: usize, entries: usize) {
        self.bytes.reserve(bytes);
        self.entries.reserve(entries);
    }

    /// Bytes and entries listed.
    fn lengths(&self) -> (usize, usize) {
        (self.bytes.len(), self.entries.len())
    }

    /// Bytes the buffers hold.
    fn held(&self) -> usize {
        self.bytes.capacity()
            + self.entries.capacity() * std::mem::size_of::<(K, Option<(usize, usize)>)>()
    }

    /// The bytes a listed value's place names.
    fn value(&self, (start, end): (usize, usize)) -> &[u8] {
        self.bytes.get(start..end).unwrap_or_default()
    }
}

#[expect(clippy::cast_possible_truncation, reason = "kind < SORT_KINDS (5)")]
fn kind_byte(kind: usize) -> u8 {
    kind as u8
}

/// Recomputes a session summary from all its turns.
fn refold(
    turns: &Table<'_, &'static [u8; 32], &'static [u8]>,
    session: u64,
    base: &SessionState,
) -> Result<SessionState> {
    let mut state = SessionState::new(base.project_id, &base.project, &base.session_id);
    let lo = turn_key(session, 0, [0; 16]);
    let hi = turn_key(session, u64::MAX, [0xff; 16]);
    for item in turns.range::<&[u8; 32]>(&lo..=&hi)? {
        let (k, v) = item?;
        let (_, start, trace_id) = super::split_turn_key(k.value());
        let body: TurnBody = decode("turn", v.value())?;
        state.add(TurnRef {
            start,
            trace_id,
            body: &body,
        });
    }
    Ok(state)
}

/// Project and session number allocation, written back once per batch.
struct Counters {
    next_project: u64,
    next_session: u64,
    /// Project numbers looked up so far (asked for several times per trace).
    known: FastMap<String, u32>,
    /// The project looked up last, and its number.
    last_project: Option<(String, u32)>,
    /// Session numbers looked up so far, by `session_ids` key: a session's
    /// traces in one group ask for it once each.
    known_sessions: KnownSessions,
    /// `session_ids` lookups made in this group, and how many found their
    /// session stored (see [`Counters::session`]).
    looked_up: u64,
    found_stored: u64,
    /// Scratch for building a `session_ids` key to look up.
    key: Vec<u8>,
    /// Each project asked for a session in this group, with the greatest
    /// `session_ids` key it had then (`None`: it had none): a key above
    /// it is not stored, and no lookup is needed to know it.
    last_stored: Vec<(u32, Option<Vec<u8>>)>,
    /// New sessions whose keys sort above their project's stored ones, by
    /// their place in `known_sessions` (with the key's [`key_prefix`]):
    /// not inserted at once but by [`Counters::write_new_sessions`], in
    /// key order.
    new_sessions: Vec<(u128, u32)>,
}

impl Counters {
    fn load(meta: &Table<'_, &'static str, u64>) -> Result<Self> {
        let get = |k| -> Result<u64> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
        Ok(Self {
            next_project: get(META_NEXT_PROJECT)?,
            next_session: get(META_NEXT_SESSION)?,
            known: FastMap::default(),
            last_project: None,
            known_sessions: KnownSessions::default(),
            looked_up: 0,
            found_stored: 0,
            key: Vec::new(),
            last_stored: Vec::new(),
            new_sessions: Vec::new(),
        })
    }

    fn store(&self, meta: &mut Table<'_, &'static str, u64>) -> Result<()> {
        meta.insert(META_NEXT_PROJECT, self.next_project)?;
        meta.insert(META_NEXT_SESSION, self.next_session)?;
        Ok(())
    }

    fn project(&mut self, projects: &mut Table<'_, &'static str, u32>, name: &str) -> Result<u32> {
        // A group's traces nearly always name the project the last one did.
        if let Some((last, id)) = &self.last_project
            && last == name
        {
            return Ok(*id);
        }
        let id = self.project_number(projects, name)?;
        match &mut self.last_project {
            // The name's memory is reused.
            Some((last, last_id)) => {
                last.clear();
                last.push_str(name);
                *last_id = id;
            }
            None => self.last_project = Some((name.to_owned(), id)),
        }
        Ok(id)
    }

    /// [`Counters::project`] without the last project's shortcut.
    fn project_number(
        &mut self,
        projects: &mut Table<'_, &'static str, u32>,
        name: &str,
    ) -> Result<u32> {
        if let Some(id) = self.known.get(name) {
            return Ok(*id);
        }
        let found = projects.get(name)?.map(|v| v.value());
        let id = match found {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.next_project)
                    .map_err(|_| Error::invalid("more than 2^32 projects"))?;
                self.next_project += 1;
                projects.insert(name, id)?;
                id
            }
        };
        self.known.insert(name.to_owned(), id);
        Ok(id)
    }

    fn session(
        &mut self,
        ids: &mut Table<'_, &'static [u8], u64>,
        project_id: u32,
        session_id: &str,
    ) -> Result<u64> {
        let key = &mut self.key;
        session_id_key_into(key, project_id, session_id);
        let hash = self.known_sessions.hash(key);
        if let Some(n) = self.known_sessions.get(hash, key) {
            return Ok(n);
        }
        let n = self.next_session;
        let after = n.checked_add(1);
        // A key above every stored key of its project is not stored: it
        // takes the next number, and is inserted with the group's other
        // such keys, in key order, once the group's traces are read.
        if let Some(after) = after
            && above_stored(&mut self.last_stored, ids, project_id, key)?
        {
            self.next_session = after;
            let at = self.known_sessions.insert(hash, key, n);
            self.new_sessions.push((key_prefix(key), at));
            return Ok(n);
        }
        // Otherwise the key is looked up. A session new to the index is
        // numbered and inserted at once, without a lookup first (one
        // descent of the table, not two), and a stored number found in its
        // place is put back. Once more than one in eight of the group's
        // lookups here has found its session stored, they look first, so
        // that stored sessions do not each rewrite a page of the table for
        // nothing.
        let insert_first = after.is_some() && self.found_stored.saturating_mul(8) <= self.looked_up;
        self.looked_up += 1;
        let stored = if insert_first {
            let stored = ids.insert(key.as_slice(), n)?.map(|v| v.value());
            if let Some(stored) = stored {
                ids.insert(key.as_slice(), stored)?;
            }
            stored
        } else {
            ids.get(key.as_slice())?.map(|v| v.value())
        };
        let n = match stored {
            Some(stored) => {
                self.found_stored += 1;
                stored
            }
            None => {
                // Numbers are never reused; only a damaged counter runs out.
                let Some(after) = after else {
                    return Err(super::corrupted(
                        "the next session number is at its maximum: the index's counter is \
                         damaged (rebuild the index: StoreOptions::rebuild_index_on_open)",
                    ));
                };
                if !insert_first {
                    ids.insert(key.as_slice(), n)?;
                }
                self.next_session = after;
                n
            }
        };
        self.known_sessions.insert(hash, key, n);
        Ok(n)
    }

    /// Inserts the new sessions [`Counters::session`] held (keys above
    /// their project's stored ones) into `session_ids`, in key order: one
    /// cursor per project, at the gap above its stored keys, where redb
    /// buffers the ascending run rather than descending the tree per key.
    fn write_new_sessions(&mut self, ids: &mut Table<'_, &'static [u8], u64>) -> Result<()> {
        let known = &self.known_sessions;
        // By the keys' first sixteen bytes, then (rarely: the bench's keys
        // differ within them) by the whole keys: the keys' order.
        self.new_sessions.sort_unstable_by(|&(pa, a), &(pb, b)| {
            pa.cmp(&pb).then_with(|| known.key(a).cmp(known.key(b)))
        });
        let mut held = self.new_sessions.as_slice();
        while let Some(&(_, first)) = held.first() {
            let project = known.key(first).get(..4);
            let run = held
                .iter()
                .position(|&(_, at)| known.key(at).get(..4) != project)
                .unwrap_or(held.len());
            let (now, rest) = held.split_at(run);
            held = rest;
            // The gap after the project's greatest stored key: every key of
            // the run sorts above it, and below the next project's keys.
            let mut cursor = ids.upper_bound_mut(std::ops::Bound::Excluded(known.key(first)))?;
            for &(_, at) in now {
                cursor.insert_before(known.key(at), known.number(at))?;
            }
            cursor.close()?;
        }
        self.new_sessions.clear();
        Ok(())
    }
}

/// The first sixteen bytes of `key` as a number ([`super::leading_bytes`]).
fn key_prefix(key: &[u8]) -> u128 {
    u128::from_be_bytes(super::leading_bytes(key))
}

/// Whether `key` (a `session_ids` key of `project_id`) sorts above every
/// key of the project stored in `ids` when the project was first asked
/// about in this group (remembered in `last_stored`).
fn above_stored(
    last_stored: &mut Vec<(u32, Option<Vec<u8>>)>,
    ids: &Table<'_, &'static [u8], u64>,
    project_id: u32,
    key: &[u8],
) -> Result<bool> {
    let at = match last_stored.iter().position(|(p, _)| *p == project_id) {
        Some(at) => at,
        None => {
            let lo = project_id.to_be_bytes();
            let last = match project_id.checked_add(1) {
                Some(next) => ids
                    .range::<&[u8]>(&lo[..]..&next.to_be_bytes()[..])?
                    .next_back(),
                None => ids.range::<&[u8]>(&lo[..]..)?.next_back(),
            };
            let last = match last {
                Some(entry) => Some(entry?.0.value().to_vec()),
                None => None,
            };
            last_stored.push((project_id, last));
            last_stored.len() - 1
        }
    };
    Ok(last_stored
        .get(at)
        .is_some_and(|(_, last)| last.as_deref().is_none_or(|l| key > l)))
}

/// Session numbers by `session_ids` key, the keys kept end to end in one
/// buffer rather than each in its own (a group names thousands of
/// sessions, each once). A key is hashed once per lookup, for the lookup
/// and the insert that may follow.
#[derive(Default)]
struct KnownSessions {
    /// Hash of a key -> the last entry with that hash.
    heads: FastMap<u64, u32>,
    /// Each key's end in `bytes`, its number, and the entry before it
    /// with the same hash (`u32::MAX` for none).
    entries: Vec<(usize, u64, u32)>,
    /// The keys, end to end.
    bytes: Vec<u8>,
    /// Hashes the keys (one seed per map, as `FastMap`'s).
    hasher: crate::hashing::Keyed,
}

impl KnownSessions {
    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The number of `key` (whose [`Self::hash`] is `hash`), if inserted.
    fn get(&self, hash: u64, key: &[u8]) -> Option<u64> {
        let mut at = *self.heads.get(&hash)?;
        while let Some(&(_, n, before)) = self.entries.get(at as usize) {
            if self.key(at) == key {
                return Some(n);
            }
            at = before;
        }
        None
    }

    /// Records the number of `key` (not inserted yet; `hash` as for
    /// [`Self::get`]).
    /// Returns the key's place, for [`Self::key`] and [`Self::number`].
    fn insert(&mut self, hash: u64, key: &[u8], n: u64) -> u32 {
        let at = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        let before = self.heads.insert(hash, at).unwrap_or(u32::MAX);
        self.bytes.extend_from_slice(key);
        self.entries.push((self.bytes.len(), n, before));
        at
    }

    /// The key inserted at `at` (empty for a place not given out).
    fn key(&self, at: u32) -> &[u8] {
        let end = self.entries.get(at as usize).map_or(0, |e| e.0);
        let start = match at.checked_sub(1) {
            Some(prev) => self.entries.get(prev as usize).map_or(0, |e| e.0),
            None => 0,
        };
        self.bytes.get(start..end).unwrap_or_default()
    }

    /// The number inserted at `at` (0 for a place not given out).
    fn number(&self, at: u32) -> u64 {
        self.entries.get(at as usize).map_or(0, |e| e.1)
    }
}

impl Tables<'_> {
    /// Writes the changes held for the sort index (see `runs`). Every
    /// writer that may change a session summary calls this before its
    /// transaction commits, and before it reads the sort index.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.order.flush(&mut self.runs, &mut self.meta)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

    use super::*;

    const IDS: TableDefinition<&[u8], u64> = TableDefinition::new("ids");
    const NAMES: TableDefinition<&str, u32> = TableDefinition::new("names");

    fn counters(next_session: u64) -> Counters {
        Counters {
            next_project: 0,
            next_session,
            known: FastMap::default(),
            last_project: None,
            known_sessions: KnownSessions::default(),
            looked_up: 0,
            found_stored: 0,
            key: Vec::new(),
            last_stored: Vec::new(),
            new_sessions: Vec::new(),
        }
    }

    proptest! {
        /// A session's number is the stored one if its key is stored, else
        /// the next one, stored under its key; numbers found are not
        /// changed, and the counter moves past each number given out.
        #[test]
        fn session_numbers_are_found_or_given_out_in_order(
            stored in prop::collection::btree_map((0u32..4, 0u8..40), any::<u64>(), 0..30),
            next in 0u64..1_000_000,
            asked in prop::collection::vec((0u32..4, 0u8..40), 0..80),
            groups in prop::collection::vec(0usize..80, 0..4),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
            // Names that are prefixes of one another ("session-1" of
            // "session-12"), in projects whose keys neighbour (the last one
            // with no project after it).
            let name = |s: u8| format!("session-{s}");
            let project = |p: u32| if p == 3 { u32::MAX } else { p };
            let mut want: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
            let txn = db.begin_write().unwrap();
            {
                let mut ids = txn.open_table(IDS).unwrap();
                for (&(p, s), &n) in &stored {
                    let key = super::super::session_id_key(project(p), &name(s));
                    ids.insert(key.as_slice(), n).unwrap();
                    want.insert(key, n);
                }
                // The requests split into groups (each with its own
                // counters, as `apply` has, writing the held sessions at
                // its end).
                let mut cuts: Vec<usize> = groups.iter().map(|&g| g.min(asked.len())).collect();
                cuts.push(0);
                cuts.push(asked.len());
                cuts.sort_unstable();
                let mut want_next = next;
                for bounds in cuts.windows(2) {
                    let mut c = counters(want_next);
                    for &(p, s) in &asked[bounds[0]..bounds[1]] {
                        let p = project(p);
                        let key = super::super::session_id_key(p, &name(s));
                        let expected = *want.entry(key).or_insert_with(|| {
                            want_next += 1;
                            want_next - 1
                        });
                        prop_assert_eq!(c.session(&mut ids, p, &name(s)).unwrap(), expected);
                    }
                    prop_assert_eq!(c.next_session, want_next);
                    c.write_new_sessions(&mut ids).unwrap();
                    prop_assert!(c.new_sessions.is_empty());
                }
                let got: BTreeMap<Vec<u8>, u64> = ids
                    .iter()
                    .unwrap()
                    .map(|e| {
                        let (k, v) = e.unwrap();
                        (k.value().to_vec(), v.value())
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }
            txn.abort().unwrap();
        }
    }

    proptest! {
        /// `KnownSessions` gives back the number of each key inserted and
        /// none for another, however the hashes collide (here they are
        /// forced to) and whether keys are prefixes of one another.
        #[test]
        fn known_sessions_find_their_keys(
            keys in prop::collection::vec((prop::collection::vec(0u8..3, 0..5), 0u64..4), 0..40),
            asked in prop::collection::vec(prop::collection::vec(0u8..3, 0..5), 0..20),
        ) {
            let mut known = KnownSessions::default();
            let mut want: BTreeMap<Vec<u8>, (u64, u64)> = BTreeMap::new();
            for (n, (key, h)) in (0u64..).zip(&keys) {
                let hash = if *h == 0 { known.hash(key) } else { *h };
                match want.get(key) {
                    Some(&(h, m)) => prop_assert_eq!(known.get(h, key), Some(m)),
                    None => {
                        prop_assert_eq!(known.get(hash, key), None);
                        known.insert(hash, key, n);
                        want.insert(key.clone(), (hash, n));
                    }
                }
            }
            for (key, &(h, n)) in &want {
                prop_assert_eq!(known.get(h, key), Some(n));
            }
            for key in &asked {
                for h in 1..4 {
                    let expected = want.get(key).filter(|w| w.0 == h).map(|w| w.1);
                    prop_assert_eq!(known.get(h, key), expected);
                }
            }
        }
    }

    proptest! {
        /// A project's number is the stored one if its name is stored,
        /// else the next one, stored under its name, however the names
        /// asked for alternate.
        #[test]
        fn project_numbers_are_found_or_given_out_in_order(
            stored in prop::collection::btree_map(0u8..8, 0u32..1000, 0..5),
            next in 1000u64..2000,
            asked in prop::collection::vec(0u8..8, 0..60),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
            // Names that share a prefix, one a prefix of another.
            let name = |p: u8| "p".repeat(usize::from(p) + 1);
            let mut want: BTreeMap<String, u32> = BTreeMap::new();
            let txn = db.begin_write().unwrap();
            {
                let mut names = txn.open_table(NAMES).unwrap();
                for (&p, &n) in &stored {
                    names.insert(name(p).as_str(), n).unwrap();
                    want.insert(name(p), n);
                }
                let mut c = counters(0);
                c.next_project = next;
                let mut want_next = next;
                for &p in &asked {
                    let expected = *want.entry(name(p)).or_insert_with(|| {
                        want_next += 1;
                        u32::try_from(want_next - 1).unwrap()
                    });
                    prop_assert_eq!(c.project(&mut names, &name(p)).unwrap(), expected);
                }
                prop_assert_eq!(c.next_project, want_next);
                let got: BTreeMap<String, u32> = names
                    .iter()
                    .unwrap()
                    .map(|e| {
                        let (k, v) = e.unwrap();
                        (k.value().to_owned(), v.value())
                    })
                    .collect();
                prop_assert_eq!(got, want);
            }
            txn.abort().unwrap();
        }
    }

    proptest! {
        /// Records grouped by trace come as a stable sort by trace id
        /// would give them (traces ascending by their bytes, each one's
        /// records in batch order), all of them once, with the count of
        /// distinct traces.
        #[test]
        fn records_are_grouped_as_a_stable_sort_by_trace(
            ids in prop::collection::vec((0u8..6, any::<u8>()), 0..60),
        ) {
            use crate::model::{Span, SpanId};
            let mut batch: Vec<NewRecord> = ids
                .iter()
                .enumerate()
                .map(|(at, &(t, high))| {
                    // Traces differing in the first byte and in the last.
                    let mut trace = [t; 16];
                    trace[0] = high % 3;
                    let span = Span::new(TraceId(trace), SpanId([1; 8]), None, "x", 0, 1);
                    NewRecord {
                        lsn: at as u64,
                        project: 0,
                        span: crate::index::trace::SpanInfo::of(&span),
                        session_id: None,
                        frame_bytes: 0,
                    }
                })
                .collect();
            let mut want: Vec<([u8; 16], u64)> =
                batch.iter().map(|r| (r.span.trace_id, r.lsn)).collect();
            want.sort_by_key(|&(t, _)| t);
            let distinct: std::collections::BTreeSet<[u8; 16]> =
                want.iter().map(|&(t, _)| t).collect();
            let (grouped, traces) = group_by_trace(&mut batch);
            let got: Vec<([u8; 16], u64)> =
                grouped.iter().map(|r| (r.span.trace_id, r.lsn)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(traces, distinct.len());
        }

        /// The user a turn takes is the record's, taken from the span of
        /// the batch that carried it when that span is there (the record
        /// keeps its own), else from the record.
        #[test]
        fn a_turn_takes_the_records_user(
            spans in prop::collection::vec((0u8..8, 0u64..5, prop::option::of(0u8..3)), 1..12),
            present in prop::collection::vec(any::<bool>(), 12),
        ) {
            use crate::model::{Span, SpanId};
            let record = |&(id, start, user): &(u8, u64, Option<u8>)| {
                let span = Span::new(TraceId([1; 16]), SpanId([id; 8]), None, "x", start, start + 1);
                let mut info = crate::index::trace::SpanInfo::of(&span);
                info.user = user.map(|u| format!("user-{u}"));
                NewRecord { lsn: 0, project: 0, span: info, session_id: None, frame_bytes: 0 }
            };
            let mut rec = TraceRecord::default();
            for g in &spans {
                rec.add(&record(g), "p");
            }
            let want = rec.user.clone();
            // The batch holds some of the spans (the others came earlier).
            let mut batch: Vec<NewRecord> = spans
                .iter()
                .zip(&present)
                .filter(|&(_, &p)| p)
                .map(|(g, _)| record(g))
                .collect();
            let mut refs: Vec<&mut NewRecord> = batch.iter_mut().collect();
            let users_before = refs.iter().filter(|r| r.span.user.is_some()).count();
            let got = take_user(&mut rec, &mut refs);
            prop_assert_eq!(&got, &want);
            let users_after = refs.iter().filter(|r| r.span.user.is_some()).count();
            // Taken from a span (which then has none), or from the record.
            if want.is_some() {
                prop_assert_eq!(users_before - users_after + usize::from(rec.user.is_none()), 1);
                prop_assert!(rec.user.is_none() || rec.user == want);
            }
        }

        /// Keys ordered by their prefixes, then by their bytes, are in
        /// their bytes' order; differing prefixes alone decide it.
        #[test]
        fn key_prefixes_order_as_the_bytes(
            a in prop::collection::vec(prop::sample::select(vec![0u8, 1, 0x7f, 0x80, 0xff]), 0..24),
            b in prop::collection::vec(prop::sample::select(vec![0u8, 1, 0x7f, 0x80, 0xff]), 0..24),
        ) {
            // Bytes from a few values, so that prefixes tie often, keys
            // end in zeros and one key is often a prefix of the other.
            let (pa, pb) = (key_prefix(&a), key_prefix(&b));
            prop_assert_eq!(pa.cmp(&pb).then_with(|| a.cmp(&b)), a.cmp(&b));
            if pa != pb {
                prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            }
        }

        /// Two 32-byte keys compare as their words as they do as bytes,
        /// and the words give the key back.
        #[test]
        fn key_words_order_as_the_bytes(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
            cut in 0usize..32,
        ) {
            prop_assert_eq!(key_words(&a).cmp(&key_words(&b)), a.cmp(&b));
            prop_assert_eq!(words_key(key_words(&a)), a);
            // Keys sharing a prefix.
            let mut c = a;
            c[cut..].copy_from_slice(&b[cut..]);
            prop_assert_eq!(key_words(&a).cmp(&key_words(&c)), a.cmp(&c));
        }

        /// Each value listed in an `Encoded` reads back as its
        /// `encode_value` bytes, a removal as none, in the order listed.
        #[test]
        fn encoded_values_read_back_as_encoded(
            values in prop::collection::vec(
                prop::option::of(prop::collection::vec(".{0,12}", 0..4)),
                0..20,
            ),
        ) {
            let mut enc: Encoded<usize> = Encoded::default();
            for (k, v) in values.iter().enumerate() {
                enc.push(k, v.as_ref());
            }
            prop_assert_eq!(enc.entries.len(), values.len());
            for ((k, at), (i, v)) in enc.entries.iter().zip(values.iter().enumerate()) {
                prop_assert_eq!(*k, i);
                let got = at.map(|at| enc.value(at).to_vec());
                prop_assert_eq!(got, v.as_ref().map(codec::encode_value));
            }
        }
    }

    proptest! {
        /// A last length scaled to a group's spans is the exact ratio
        /// (computed wide), or the cap when that is smaller.
        #[test]
        fn group_lengths_scale_to_the_spans_up_to_the_cap(
            last_spans in 0usize..100_000,
            last in 0usize..(64 << 20),
            spans in 0usize..1_000_000,
        ) {
            let g = GroupLengths { spans: last_spans, lengths: [(0, 0); 3] };
            let exact = (last as u128) * (spans as u128) / (last_spans.max(1) as u128);
            let cap = ((last as u128) * (GROUP_WRITES_GROWTH as u128)).max(GROUP_WRITES_KEEP as u128);
            prop_assert_eq!(g.scaled(last, spans) as u128, exact.min(cap));
        }
    }

    /// A group's buffers come with room for what the last group wrote,
    /// scaled to the group's spans, whether the last group's buffers were
    /// kept or (too large) given back; and empty either way.
    #[test]
    fn group_writes_reserve_the_last_groups_lengths() {
        let pool = WritesPool::new();
        let fresh = pool.take(100);
        assert_eq!(fresh.turns.bytes.capacity(), 0);
        assert_eq!(fresh.records.entries.capacity(), 0);
        for big in [false, true] {
            let mut w = pool.take(100);
            let value = vec![String::from("x"); if big { 1 << 20 } else { 100 }];
            for k in 0..10u64 {
                w.records.push(k, Some(&value));
            }
            w.turns.push((0, 0), None::<&TurnBody>);
            let (bytes, entries) = w.records.lengths();
            let held = w.turns.held() + w.records.held() + w.sessions.held();
            assert_eq!(held > GROUP_WRITES_KEEP, big);
            pool.give_back(w, 100);
            // Kept, or not.
            assert_eq!(pool.0.lock().unwrap().0.is_some(), !big);
            let next = pool.take(200);
            assert_eq!(next.records.lengths(), (0, 0));
            assert_eq!(next.turns.lengths(), (0, 0));
            // Twice the spans: twice the room.
            assert!(next.records.bytes.capacity() >= 2 * bytes);
            assert!(next.records.entries.capacity() >= 2 * entries);
            assert!(next.turns.entries.capacity() >= 2);
            pool.give_back(next, 0);
        }
    }

    /// With the counter at its maximum, stored sessions are still found,
    /// and a new one is refused without being stored.
    #[test]
    fn a_counter_at_its_maximum_finds_stored_sessions_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut ids = txn.open_table(IDS).unwrap();
            ids.insert(super::super::session_id_key(1, "old").as_slice(), 7)
                .unwrap();
            let mut c = counters(u64::MAX);
            assert_eq!(c.session(&mut ids, 1, "old").unwrap(), 7);
            assert!(c.session(&mut ids, 1, "new").is_err());
            // Above the stored key, and in a project with none.
            assert!(c.session(&mut ids, 1, "query").is_err());
            assert!(c.session(&mut ids, 2, "new").is_err());
            c.write_new_sessions(&mut ids).unwrap();
            assert_eq!(c.next_session, u64::MAX);
            assert_eq!(ids.len().unwrap(), 1);
        }
        txn.abort().unwrap();
    }
}

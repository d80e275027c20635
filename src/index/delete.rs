//! Applying a tombstone (a delete record) to the indexes, and choosing the
//! victims of a retention run.
//!
//! A delete resolves its targets to a set of traces against the indexes
//! as they stand at the tombstone's place in the log, then removes each
//! trace whole: its record, its turn, its share of the project counters.
//! Every touched session is refolded from its remaining turns, so its
//! start, end, first input, last output and user are exact; a session left
//! without turns vanishes (summary, sort keys and its id in `session_ids`).
//! A project left without stored spans is forgotten. Search postings are
//! left alone: they are a superset index and queries verify candidates
//! (`Index::prune_postings`, run by `compact_index`, drops them later).

use std::collections::BTreeMap;
use std::ops::Bound;

use redb::ReadableTable;

use crate::error::Result;
use crate::model::{DeleteReport, TraceId};

use super::apply::{
    Delta, IndexWriter, ProjectDelta, SpanSource, Tables, apply_signed, update_session,
};
use super::corrupted as corrupt;
use super::segments::LiveChanges;
use super::session::SessionState;
use super::trace::{TraceRecord, TurnBody};
use super::{
    ProjectCounters, decode, decode_session, find_trace, session_id_key, split_turn_key, turn_key,
};

/// Deletes are applied this many traces at a time, so that the memory a
/// delete holds besides the victims' ids stays bounded.
const CHUNK: usize = 4096;

/// What a delete call names; resolved to trace ids before a tombstone is
/// written (see `codec::DeleteRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeleteTarget {
    /// One trace, by id.
    Trace([u8; 16]),
    /// Every trace of one session.
    Session {
        /// Project name.
        project: String,
        /// Session id.
        session_id: String,
    },
    /// Every trace whose project is this one.
    Project(String),
    /// Every session whose user id (contract rule 6) is this one, in every
    /// project, and every trace without a session whose user id is this one.
    User(String),
}

/// Victims of a delete, grouped so that a session's traces stay together
/// when a very large delete is split over several tombstones.
pub(crate) struct Victims {
    /// Each group: the traces of one session, or one trace without a session.
    pub groups: Vec<Vec<[u8; 16]>>,
}

/// What a retention run asks of one pass over the indexes.
pub(crate) struct RetentionVictims<'a> {
    /// Only this project; `None`: every project.
    pub project: Option<&'a str>,
    /// Sessions whose last activity (end) is before this, and traces
    /// without a session whose end is before this, are victims.
    pub cutoff: Option<u64>,
    /// At most this many sessions are kept per project (newest end first).
    pub max_sessions: Option<u64>,
    /// Traces without a session are looked for from this trace id on (a
    /// retention run resumes where its previous round stopped).
    pub traces_from: [u8; 16],
}

/// A placeholder for a removed turn: a removal always refolds the session
/// from its remaining turns (`update_session`), which never reads the old
/// body, so the body is not kept in memory.
fn removed_turn() -> TurnBody {
    TurnBody {
        end: 0,
        head_span_id: [0; 8],
        root_missing: false,
        input: None,
        output: None,
        tokens: crate::model::Tokens::default(),
        status: crate::model::TraceStatus::Unset,
        num_spans: 0,
        conflicts: Vec::new(),
        user: None,
        more_conflicts: false,
    }
}

impl IndexWriter {
    /// The traces `targets` name, as the indexes stand now.
    pub(crate) fn resolve(&self, targets: &[DeleteTarget]) -> Result<Victims> {
        let t = self.tables()?;
        let found = resolve(&t, targets)?;
        let mut sessions: BTreeMap<u64, Vec<[u8; 16]>> = BTreeMap::new();
        let mut groups = Vec::new();
        for (id, session) in found {
            match session {
                Some(n) => sessions.entry(n).or_default().push(id),
                None => groups.push(vec![id]),
            }
        }
        groups.extend(sessions.into_values());
        Ok(Victims { groups })
    }

    /// Applies one tombstone: deletes these traces whole. Does not set the
    /// applied LSN (the caller does, once the tombstone is in the log).
    pub(crate) fn delete_traces(
        &mut self,
        ids: &[[u8; 16]],
        source: &dyn SpanSource,
    ) -> Result<DeleteReport> {
        let mut t = self.tables()?;
        let mut counts = DeleteReport::default();
        for chunk in ids.chunks(CHUNK) {
            delete_traces(&mut t, chunk, source, &mut counts)?;
        }
        t.finish()?;
        Ok(counts)
    }

    /// Up to `limit` retention victims: whole sessions (oldest last
    /// activity first) and traces without a session, each as a target.
    pub(crate) fn retention_victims(
        &self,
        policy: &RetentionVictims<'_>,
        limit: usize,
    ) -> Result<Vec<DeleteTarget>> {
        let t = self.tables()?;
        let mut projects: Vec<(String, u32)> = Vec::new();
        match policy.project {
            Some(p) => {
                if let Some(id) = t.projects.get(p)? {
                    projects.push((p.to_owned(), id.value()));
                }
            }
            None => {
                for item in t.projects.iter()? {
                    let (k, v) = item?;
                    projects.push((k.value().to_owned(), v.value()));
                }
            }
        }
        let mut out = Vec::new();
        for (name, pid) in &projects {
            if out.len() >= limit {
                return Ok(out);
            }
            let listed = match t.project_stats.get(*pid)? {
                Some(v) => decode::<ProjectCounters>("project counters", v.value())?.sessions,
                None => 0,
            };
            let excess = policy.max_sessions.map_or(0, |m| listed.saturating_sub(m));
            // The end-time sort index, ascending: oldest last activity first.
            let mut order =
                super::runs::scan(&t.runs, *pid, 1, Bound::Unbounded, Bound::Unbounded, false)?;
            let mut rank = 0u64;
            while let Some((tail, _)) = order.next_entry(&t.runs)? {
                if out.len() >= limit {
                    return Ok(out);
                }
                let key = tail.as_slice();
                let end = key
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_be_bytes);
                let too_old = policy.cutoff.is_some_and(|c| end < c);
                if !(too_old || rank < excess) {
                    break;
                }
                let sid = std::str::from_utf8(key.get(8..).unwrap_or(&[]))
                    .map_err(|_| corrupt("session id in a sort key is not UTF-8"))?;
                out.push(DeleteTarget::Session {
                    project: name.clone(),
                    session_id: sid.to_owned(),
                });
                rank += 1;
            }
        }
        if let Some(cutoff) = policy.cutoff {
            for item in t.trace_homes.range::<&[u8; 16]>(&policy.traces_from..)? {
                if out.len() >= limit {
                    break;
                }
                let (k, home) = item?;
                let rec = record_at(&t, *k.value(), home.value())?;
                let in_scope = policy.project.is_none_or(|p| rec.project() == Some(p));
                if rec.filing.is_none() && in_scope && rec.end < cutoff {
                    out.push(DeleteTarget::Trace(*k.value()));
                }
            }
        }
        Ok(out)
    }
}

/// The traces the targets name, as the indexes stand now, each with the
/// session it is filed under.
fn resolve(t: &Tables<'_>, targets: &[DeleteTarget]) -> Result<BTreeMap<[u8; 16], Option<u64>>> {
    let mut out = BTreeMap::new();
    let mut scan_projects: Vec<&str> = Vec::new();
    let mut scan_users: Vec<&str> = Vec::new();
    for target in targets {
        match target {
            DeleteTarget::Trace(id) => {
                if let Some((_, rec)) = find_trace(&t.trace_homes, None, &t.trace_records, *id)? {
                    out.insert(*id, rec.filing.map(|f| f.session));
                }
            }
            DeleteTarget::Session {
                project,
                session_id,
            } => {
                let Some(pid) = t.projects.get(project.as_str())?.map(|v| v.value()) else {
                    continue;
                };
                let key = session_id_key(pid, session_id);
                if let Some(n) = t.session_ids.get(key.as_slice())?.map(|v| v.value()) {
                    session_traces(t, n, &mut out)?;
                }
            }
            DeleteTarget::Project(p) => scan_projects.push(p),
            DeleteTarget::User(u) => scan_users.push(u),
        }
    }
    if !scan_users.is_empty() {
        // Sessions whose user id is one of these, in every project.
        for item in t.sessions.iter()? {
            let (k, v) = item?;
            let s: SessionState = decode_session(v.value())?;
            if s.user
                .as_ref()
                .is_some_and(|u| scan_users.contains(&u.3.as_str()))
            {
                session_traces(t, k.value(), &mut out)?;
            }
        }
    }
    if !scan_projects.is_empty() || !scan_users.is_empty() {
        // Traces by project (with or without a session), and traces
        // without a session by user. One pass over every trace record.
        for item in t.trace_homes.iter()? {
            let (k, home) = item?;
            let rec = record_at(t, *k.value(), home.value())?;
            let by_project = rec.project().is_some_and(|p| scan_projects.contains(&p));
            let by_user = rec.filing.is_none()
                && rec
                    .user
                    .as_ref()
                    .is_some_and(|u| scan_users.contains(&u.value.as_str()));
            if by_project || by_user {
                out.insert(*k.value(), rec.filing.map(|f| f.session));
            }
        }
    }
    Ok(out)
}

/// The record stored at a trace's home.
fn record_at(t: &Tables<'_>, id: [u8; 16], home: u64) -> Result<TraceRecord> {
    match t.trace_records.get(home)? {
        Some(v) => super::decode_record(v.value()),
        None => Err(corrupt(format!("trace {} has no record", TraceId(id)))),
    }
}

fn session_traces(
    t: &Tables<'_>,
    session: u64,
    out: &mut BTreeMap<[u8; 16], Option<u64>>,
) -> Result<()> {
    let lo = turn_key(session, 0, [0; 16]);
    let hi = turn_key(session, u64::MAX, [0xff; 16]);
    for item in t.turns.range::<&[u8; 32]>(&lo..=&hi)? {
        let (k, _) = item?;
        out.insert(split_turn_key(k.value()).2, Some(session));
    }
    Ok(())
}

/// Removes whole traces and brings every summary they touched up to date.
fn delete_traces(
    t: &mut Tables<'_>,
    ids: &[[u8; 16]],
    source: &dyn SpanSource,
    counts: &mut DeleteReport,
) -> Result<()> {
    let mut sessions: BTreeMap<u64, [u8; 16]> = BTreeMap::new();
    let mut projects: BTreeMap<u32, ProjectDelta> = BTreeMap::new();
    // Stored spans removed, per project they were appended under.
    let mut appended: BTreeMap<String, i64> = BTreeMap::new();
    // Frames no longer live, per segment.
    let mut live = LiveChanges::default();
    for id in ids {
        let Some(home) = t.trace_homes.remove(id)?.map(|v| v.value()) else {
            continue;
        };
        let rec: TraceRecord = match t.trace_records.remove(home)? {
            Some(v) => super::decode_record(v.value())?,
            None => return Err(corrupt(format!("trace {} has no record", TraceId(*id)))),
        };
        counts.traces += 1;
        counts.spans += rec.spans.len() as u64;
        if let Some(p) = rec.project() {
            let pid =
                t.projects.get(p)?.map(|v| v.value()).ok_or_else(|| {
                    corrupt(format!("trace {} has an unknown project", TraceId(*id)))
                })?;
            projects
                .entry(pid)
                .or_default()
                .trace(-1, rec.spans.len(), rec.tokens);
        }
        for fact in &rec.spans {
            let (span, frame_bytes) = source.span(fact.lsn)?;
            *appended.entry(span.project).or_default() -= 1;
            live.add(
                source,
                fact.lsn,
                -i64::try_from(frame_bytes).unwrap_or(i64::MAX),
            )?;
        }
        if let Some(f) = rec.filing {
            if t.turns
                .remove(&turn_key(f.session, f.start, *id))?
                .is_none()
            {
                return Err(corrupt(format!(
                    "trace {} is filed under a missing turn",
                    TraceId(*id)
                )));
            }
            sessions.entry(f.session).or_insert(*id);
        }
    }
    for (session, trace_id) in sessions {
        let before: SessionState = match t.sessions.get(session)? {
            Some(v) => decode_session(v.value())?,
            None => return Err(corrupt(format!("session {session} has no summary"))),
        };
        let removal = [Delta {
            trace_id,
            old: Some((0, removed_turn())),
            new: None,
        }];
        let (pid, change) = update_session(t, session, &removal, None, None)?;
        projects.entry(pid).or_default().session(change);
        if t.sessions.get(session)?.is_none() {
            counts.sessions += 1;
            let key = session_id_key(pid, &before.session_id);
            t.session_ids.remove(key.as_slice())?;
        }
    }
    for (pid, d) in projects {
        let mut c: ProjectCounters = match t.project_stats.get(pid)? {
            Some(v) => decode("project counters", v.value())?,
            None => ProjectCounters::default(),
        };
        d.apply_to(&mut c);
        t.project_stats
            .insert(pid, crate::codec::encode_value(&c).as_slice())?;
    }
    live.write(&mut t.segment_live)?;
    for (project, n) in appended {
        let Some(pid) = t.projects.get(project.as_str())?.map(|v| v.value()) else {
            continue;
        };
        let left = apply_signed(
            t.project_spans.get(pid)?.map_or(0, |v| v.value()),
            i128::from(n),
        );
        if left > 0 {
            t.project_spans.insert(pid, left)?;
        } else {
            forget_project(t, &project, pid)?;
        }
    }
    Ok(())
}

/// Forgets a project that no longer holds any span: its name, counters
/// and interned session ids. Its search postings stay (they are a
/// superset index, and some may still sit in the in-memory posting
/// buffer); its number is never reused (numbers only grow), so nothing
/// can reach them.
fn forget_project(t: &mut Tables<'_>, name: &str, pid: u32) -> Result<()> {
    t.project_spans.remove(pid)?;
    t.project_stats.remove(pid)?;
    t.projects.remove(name)?;
    let lo = pid.to_be_bytes();
    match pid.checked_add(1).map(u32::to_be_bytes) {
        Some(hi) => t
            .session_ids
            .retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?,
        None => t
            .session_ids
            .retain_in::<&[u8], _>(lo.as_slice().., |_, _| false)?,
    }
    Ok(())
}

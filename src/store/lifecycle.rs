//! Deleting and retention: the `delete_*` calls and `retain`, written to
//! the log as tombstones (see `docs/FORMAT.md`, 1.4.1).

use std::sync::MutexGuard;

use crate::codec::{self, DeleteRecord};
use crate::error::{Error, Result};
use crate::index::{Deferred, SpanSource};
use crate::index::{DeleteTarget, META_APPLIED, RetentionVictims};
use crate::log::{FrameRef, Lsn};
use crate::model::{DeleteReport, RetentionPolicy, TraceId};

use super::{SessionStore, WriterState};

/// A delete naming more traces than this is written as several tombstones
/// (never splitting a session); each is atomic on its own.
const MAX_TRACES_PER_TOMBSTONE: usize = 1 << 20;

impl SessionStore {
    /// Deletes one session: every trace filed under `(project,
    /// session_id)`, whole. Returns what was deleted (all zeros when the
    /// session does not exist, and then nothing is written).
    ///
    /// Like every delete, this appends a tombstone to the log and applies it
    /// to the indexes in one transaction: when it returns, no read sees the
    /// session; it is durable under the same rules as `append`
    /// ([`Durability`](crate::Durability)); a crash leaves the store as before or after it;
    /// recovery replays it in log order. Spans of a deleted trace that
    /// arrive later are stored again, as a new trace: idempotency is by
    /// what is stored now.
    pub fn delete_session(&self, project: &str, session_id: &str) -> Result<DeleteReport> {
        self.delete(vec![DeleteTarget::Session {
            project: project.to_owned(),
            session_id: session_id.to_owned(),
        }])
    }

    /// Deletes one trace (all its spans). The session it belonged to is
    /// refolded from its remaining traces (start, end, first input, last
    /// output, user, counts), and vanishes if none remain.
    pub fn delete_trace(&self, trace_id: TraceId) -> Result<DeleteReport> {
        self.delete(vec![DeleteTarget::Trace(trace_id.0)])
    }

    /// Deletes every trace whose project is `project` (with or without a
    /// session). Spans appended under `project` whose trace belongs to
    /// another project (contract rule 1) stay with that trace. The project
    /// disappears from [`SessionStore::projects`] once no stored span was
    /// appended under it. Cost: one pass over every trace record.
    pub fn delete_project(&self, project: &str) -> Result<DeleteReport> {
        self.delete(vec![DeleteTarget::Project(project.to_owned())])
    }

    /// Deletes a user's data (a privacy request), in every project: each
    /// session whose user id (contract rule 6: the first `user.id` by span
    /// start) is `user_id`, whole, and each trace without a session whose
    /// first `user.id` is `user_id`. A trace that carries `user_id` inside
    /// a session attributed to another user stays with that session.
    /// Cost: one pass over every session summary and trace record.
    pub fn delete_user(&self, user_id: &str) -> Result<DeleteReport> {
        self.delete(vec![DeleteTarget::User(user_id.to_owned())])
    }

    /// Applies a retention policy: computes the victims from the indexes
    /// and deletes them through the same tombstones as the `delete_*`
    /// calls, in rounds of at most 1,024 targets (one tombstone and one
    /// index transaction each). Sessions are deleted whole, so a session
    /// that received recent spans (its last activity is recent) is kept
    /// whole. A crash in the middle leaves some rounds done: each victim
    /// is either deleted whole or kept whole, and running `retain` again
    /// finishes the job. The caller passes the time; the engine reads no
    /// clock.
    pub fn retain(&self, policy: &RetentionPolicy) -> Result<DeleteReport> {
        const ROUND: usize = 1024;
        let mut victims = RetentionVictims {
            project: policy.project.as_deref(),
            cutoff: policy
                .max_age_nanos
                .map(|age| policy.now_unix_nano.saturating_sub(age)),
            max_sessions: policy.max_sessions,
            traces_from: [0; 16],
        };
        let mut total = DeleteReport::default();
        loop {
            self.ensure_writable()?;
            // One hold of the writer lock from choosing the victims to
            // deleting them: a span appended to a victim session in
            // between would otherwise be deleted with it, though its
            // session had just received recent spans.
            let ws = self.lock_applied()?;
            self.ensure_writable()?;
            let targets = self
                .index
                .begin_write()?
                .retention_victims(&victims, ROUND)?;
            if targets.is_empty() {
                return Ok(total);
            }
            // Victims are deleted in id order, so the next round's scan of
            // traces without a session can start at the last one.
            if let Some(DeleteTarget::Trace(last)) = targets.last() {
                victims.traces_from = *last;
            }
            let report = self.delete_locked(ws, targets)?;
            if report == DeleteReport::default() {
                // Every victim vanished in between (a concurrent delete).
                return Ok(total);
            }
            total.add(report);
        }
    }

    /// Resolves `targets` to traces, then writes and applies tombstones
    /// naming them (see [`SessionStore::delete_session`]).
    fn delete(&self, targets: Vec<DeleteTarget>) -> Result<DeleteReport> {
        self.ensure_writable()?;
        let ws = self.lock_applied()?;
        self.ensure_writable()?;
        self.delete_locked(ws, targets)
    }

    /// [`SessionStore::delete`] under the writer lock `ws` (with the pending
    /// spans applied), which it releases.
    fn delete_locked(
        &self,
        mut ws: MutexGuard<'_, WriterState>,
        targets: Vec<DeleteTarget>,
    ) -> Result<DeleteReport> {
        let victims = self.index.begin_write()?.resolve(&targets)?;
        let mut total = DeleteReport::default();
        let mut pack: Vec<[u8; 16]> = Vec::new();
        let mut end = self.log.end();
        for group in victims.groups {
            if !pack.is_empty() && pack.len() + group.len() > MAX_TRACES_PER_TOMBSTONE {
                end = self.write_tombstone(&mut ws, std::mem::take(&mut pack), &mut total)?;
            }
            pack.extend(group);
        }
        if !pack.is_empty() {
            end = self.write_tombstone(&mut ws, pack, &mut total)?;
        }
        if total == DeleteReport::default() {
            return Ok(total);
        }
        self.make_durable(ws, end)?;
        Ok(total)
    }

    /// Appends one tombstone and applies it in one index transaction;
    /// returns the log end after it.
    fn write_tombstone(
        &self,
        ws: &mut WriterState,
        mut traces: Vec<[u8; 16]>,
        total: &mut DeleteReport,
    ) -> Result<Lsn> {
        traces.sort_unstable();
        traces.dedup();
        let record = DeleteRecord { traces };
        let mut payload = Vec::new();
        let tag = codec::encode_delete(&record, &mut payload).map_err(|e| Error::invalid(e.0))?;
        if payload.len() > codec::MAX_DECODE_BYTES {
            return Err(Error::invalid(
                "one session has too many traces to delete in one tombstone",
            ));
        }
        let mut w = self.index.begin_write()?;
        let source: &dyn SpanSource = &*self.log;
        // Applied before the tombstone is written: if the log write fails,
        // the transaction is dropped (aborted) and nothing of it remains.
        let report = w.delete_traces(&record.traces, source)?;
        self.log.append(&[FrameRef {
            tag,
            payload: &payload,
        }])?;
        let end = self.log.end();
        w.set_meta(META_APPLIED, end)
            .and_then(|()| self.commit_with_deferred(w, Deferred::default()))
            .map_err(|e| self.poison(e))?;
        total.add(report);
        if end.saturating_sub(ws.checkpointed) >= self.opts.checkpoint_bytes {
            self.checkpoint(ws)?;
        }
        Ok(end)
    }
}

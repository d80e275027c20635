//! Indexing a group of appended spans, on a thread of its own.
//!
//! When the pending spans reach [`StoreOptions::index_batch_bytes`],
//! `append` hands them to a new thread and returns: the indexes take the
//! group on one core while later appends (encoding, validation, the log
//! write and its fsync) run on the other. At most one group is indexed at a
//! time: handing off the next one waits for it, which bounds memory to two
//! groups and makes appenders wait when indexing falls behind.
//!
//! Nothing else writes the indexes while a group is indexed: every path
//! that needs them current (a read that finds spans not indexed, a
//! checkpoint, deletes, compaction, verify, closing) first waits for the
//! group (`SessionStore::settle`), so groups are committed one after the
//! other in log order, exactly as when `append` indexed them itself. A
//! failure is reported when the group is waited for, and poisons the store
//! then; nothing is lost, since the log already holds every span of the
//! group.
//!
//! [`StoreOptions::index_batch_bytes`]: crate::StoreOptions::index_batch_bytes

use std::collections::HashMap;
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;

use super::pending::{Group, SpanIdSet};
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{Deferred, Index, IndexWriter};
use crate::log::{Log, Lsn};
use crate::model::StoredSpan;

/// What indexing a group needs of the store: shared with its thread.
pub(super) struct GroupIndexer {
    pub(super) log: Arc<Log>,
    pub(super) index: Arc<Index>,
    pub(super) deferred: Arc<RwLock<Deferred>>,
}

/// A group being indexed on its own thread.
pub(super) struct Indexing {
    thread: JoinHandle<Result<()>>,
    /// The stored span ids of every trace the group touched: appends made
    /// while the group is indexed check idempotency against these, since
    /// the indexes do not hold the group yet.
    pub(super) traces: HashMap<[u8; 16], SpanIdSet>,
}

impl Indexing {
    /// Waits until the group is indexed, returning how that ended.
    pub(super) fn wait(self) -> Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(Error::panicked()))
    }
}

impl GroupIndexer {
    /// Indexes `group` in one write transaction, recording that the indexes
    /// cover the log up to `applied`; writes the deferred changes out when
    /// they have grown large.
    pub(super) fn index(&self, group: Group, applied: Lsn) -> Result<()> {
        let source = |lsn: Lsn| read_span(&self.log, lsn);
        let mut changes = Deferred::default();
        group.with_records(|records| {
            let mut w = self.index.begin_write()?;
            {
                let committed = self.deferred.read().map_err(|_| Error::panicked())?;
                w.apply(records, &source, applied, &mut changes, &committed.homes)?;
            }
            commit_with_deferred(&self.deferred, w, changes)
        })?;
        if self.deferred.read().is_ok_and(|d| d.is_large()) {
            flush_deferred(&self.index, &self.deferred)?;
        }
        Ok(())
    }

    /// Starts indexing `group` on a new thread. If no thread can be
    /// started, gives the group back (to be indexed by the caller).
    pub(super) fn start(
        self,
        group: Group,
        applied: Lsn,
        traces: HashMap<[u8; 16], SpanIdSet>,
    ) -> std::result::Result<Indexing, Group> {
        // The group travels through a channel rather than the closure, so
        // that a failed spawn does not take it down with the closure.
        let (tx, rx) = mpsc::channel::<Group>();
        let spawned = std::thread::Builder::new()
            .name("span-sessions-index".into())
            .spawn(move || match rx.recv() {
                Ok(group) => self.index(group, applied),
                Err(_) => Ok(()),
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(_) => return Err(group),
        };
        match tx.send(group) {
            Ok(()) => Ok(Indexing { thread, traces }),
            Err(mpsc::SendError(group)) => {
                // The thread is gone without its group: nothing was indexed.
                let _ = thread.join();
                Err(group)
            }
        }
    }
}

/// Reads and decodes the span stored at `lsn`.
pub(super) fn read_span(log: &Log, lsn: Lsn) -> Result<StoredSpan> {
    let frame = log.read(lsn)?;
    codec::decode_span(frame.tag(), frame.payload()).map_err(|e| corruption_at(log, lsn, e.0))
}

/// A corruption error naming the segment and offset of `lsn`.
pub(super) fn corruption_at(log: &Log, lsn: Lsn, reason: String) -> Error {
    let segments = log.segments();
    let seg = segments.iter().rev().find(|s| s.base <= lsn);
    Error::Corruption {
        segment: seg.map(|s| s.path.clone()).unwrap_or_default(),
        offset: seg.map_or(lsn, |s| lsn - s.base),
        reason,
    }
}

/// Commits a group's index changes and publishes its deferred ones
/// atomically with respect to reads (see `SessionStore::deferred`).
pub(super) fn commit_with_deferred(
    deferred: &RwLock<Deferred>,
    w: IndexWriter,
    group: Deferred,
) -> Result<()> {
    let mut deferred = deferred.write().map_err(|_| Error::panicked())?;
    w.commit()?;
    deferred.merge(group);
    Ok(())
}

/// Writes every deferred index change to its table.
pub(super) fn flush_deferred(index: &Index, deferred: &RwLock<Deferred>) -> Result<()> {
    let mut deferred = deferred.write().map_err(|_| Error::panicked())?;
    if deferred.is_empty() {
        return Ok(());
    }
    let mut w = index.begin_write()?;
    w.write_deferred(&mut deferred)?;
    w.commit()?;
    deferred.clear();
    Ok(())
}

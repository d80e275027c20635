//! Indexing a group of appended spans, on a thread of its own.
//!
//! When the pending spans reach [`StoreOptions::index_batch_bytes`] or
//! [`StoreOptions::index_batch_spans`] (and at least 1 MiB), `append` hands them to a new thread and returns: the
//! indexes take the group there (with scoped helper threads for work that
//! can run beside the table writes, see `index::apply`) while later appends
//! (encoding, validation, the log write and its fsync) run. A checkpoint
//! goes the same way: the append syncs the log, the thread indexes the
//! group, writes the deferred changes and makes the indexes durable. At
//! most one job runs at a time. A group full by its span count while the
//! job before it still runs goes on taking appends, up to four times
//! `index_batch_spans` spans (never beyond the bounds of bytes and texts);
//! the append that fills it that far, or that finds it full and the job
//! done, waits for the job before writing. While no job runs, a group a
//! quarter full (and of at least 1 MiB) is handed off at once rather than
//! left to fill while the thread idles. That bounds memory to two
//! groups, keeps groups small while indexing keeps up, makes them larger
//! (cheaper per span) when it falls behind, and makes appenders wait only
//! when it falls behind by more than that.
//!
//! Nothing else writes the indexes while a job runs: every path that needs
//! them current (a read that finds spans not indexed, a checkpoint,
//! deletes, compaction, verify, closing) first waits for it
//! (`SessionStore::settle`), so groups are committed one after the other
//! in log order, exactly as when `append` indexed them itself. Large work
//! done while the caller waits (a checkpoint's, a large catch-up) also runs
//! here, so that index work allocates from one thread's memory. A failure
//! is reported when the job is waited for, and poisons the store then;
//! nothing is lost, since the log already holds every span of the group.
//!
//! [`StoreOptions::index_batch_bytes`]: crate::StoreOptions::index_batch_bytes
//! [`StoreOptions::index_batch_spans`]: crate::StoreOptions::index_batch_spans

use crate::hashing::FastMap;
use std::sync::{Arc, RwLock, mpsc};
use std::thread::JoinHandle;

use super::pending::{Group, SpanIdSet};
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{Deferred, Index, IndexWriter, SpanSource};
use crate::log::{FrameBuf, Log, Lsn};
use crate::model::StoredSpan;

/// What indexing a group needs of the store: shared with its thread.
pub(super) struct GroupIndexer {
    pub(super) log: Arc<Log>,
    pub(super) index: Arc<Index>,
    pub(super) deferred: Arc<RwLock<Deferred>>,
}

/// Work for an indexing thread.
pub(super) struct Job {
    /// Spans to index, if any.
    pub(super) group: Option<Group>,
    /// The log end the indexes cover once the group is in.
    pub(super) applied: Lsn,
    /// Then also take a durable checkpoint at `applied`: write the
    /// deferred changes, sync the log up to it, make the indexes durable.
    pub(super) checkpoint: bool,
}

/// How a job ended.
pub(super) struct Outcome {
    /// Whether the indexes hold the job's group (true if it had none):
    /// false only if indexing the group itself failed, true if what
    /// followed it failed (writing deferred changes, the checkpoint).
    pub(super) indexed: bool,
    pub(super) result: Result<()>,
}

/// A group being indexed on its own thread.
pub(super) struct Indexing {
    thread: JoinHandle<Outcome>,
    /// The log end the job checkpoints at, if it takes a checkpoint.
    pub(super) checkpoint: Option<Lsn>,
    /// The stored span ids of every trace the group touched: appends made
    /// while the group is indexed check idempotency against these, since
    /// the indexes do not hold the group yet.
    pub(super) traces: FastMap<[u8; 16], SpanIdSet>,
}

impl Indexing {
    /// True once the job is done (waiting would not block).
    pub(super) fn is_done(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits until the job is done, returning how it ended.
    pub(super) fn wait(self) -> Outcome {
        self.thread.join().unwrap_or_else(|_| Outcome {
            indexed: false,
            result: Err(Error::panicked()),
        })
    }
}

impl GroupIndexer {
    /// Indexes `group` in one write transaction, recording that the indexes
    /// cover the log up to `applied`.
    fn index(&self, group: Group, applied: Lsn) -> Result<()> {
        let source: &dyn SpanSource = &*self.log;
        let mut changes = Deferred::default();
        group.with_records(|records| {
            let mut w = self.index.begin_write()?;
            {
                let committed = self.deferred.read().map_err(|_| Error::panicked())?;
                // (The group's texts are freed here, as before.)
                drop(w.apply(records, source, applied, &mut changes, &committed)?);
            }
            commit_with_deferred(&self.deferred, w, changes)
        })
    }

    /// What follows a group: the checkpoint at `applied` if the job takes
    /// one, else writing the deferred changes out if they have grown large.
    fn after(&self, applied: Lsn, checkpoint: bool) -> Result<()> {
        if checkpoint {
            flush_deferred(&self.index, &self.deferred)?;
            self.log.sync(applied)?;
            self.index.checkpoint()
        } else if self.deferred.read().is_ok_and(|d| d.is_large()) {
            flush_deferred(&self.index, &self.deferred)
        } else {
            Ok(())
        }
    }

    /// Does `job`: indexes its group, then what follows it.
    pub(super) fn run(&self, job: Job) -> Outcome {
        if let Some(group) = job.group
            && let Err(e) = self.index(group, job.applied)
        {
            return Outcome {
                indexed: false,
                result: Err(e),
            };
        }
        Outcome {
            indexed: true,
            result: self.after(job.applied, job.checkpoint),
        }
    }

    /// Starts `job` on a new thread. If no thread can be started, gives the
    /// job back (for the caller to do).
    pub(super) fn start(
        self,
        job: Job,
        traces: FastMap<[u8; 16], SpanIdSet>,
    ) -> std::result::Result<Indexing, Job> {
        let checkpoint = job.checkpoint.then_some(job.applied);
        // The job travels through a channel rather than the closure, so
        // that a failed spawn does not take it down with the closure.
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("span-sessions-index".into())
            .spawn(move || match rx.recv() {
                Ok(job) => self.run(job),
                Err(_) => Outcome {
                    indexed: true,
                    result: Ok(()),
                },
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(_) => return Err(job),
        };
        match tx.send(job) {
            Ok(()) => Ok(Indexing {
                thread,
                checkpoint,
                traces,
            }),
            Err(mpsc::SendError(job)) => {
                // The thread is gone without its job: nothing was done.
                let _ = thread.join();
                Err(job)
            }
        }
    }
}

impl SpanSource for Log {
    fn span(&self, lsn: u64) -> Result<(StoredSpan, u64)> {
        let frame = self.read(lsn)?;
        Ok((decode_span_frame(self, lsn, &frame)?, frame.frame_bytes()))
    }

    fn same_frame(&self, a: u64, b: u64) -> Result<bool> {
        let (a, b) = (self.read(a)?, self.read(b)?);
        Ok(a.tag() == b.tag() && a.payload() == b.payload())
    }

    fn segment(&self, lsn: u64) -> Option<(u64, u64)> {
        self.segment_bounds(lsn)
    }
}

/// Decodes `frame`, read at `lsn`, as a span; a corruption there if it is not one.
pub(super) fn decode_span_frame(log: &Log, lsn: Lsn, frame: &FrameBuf) -> Result<StoredSpan> {
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

/// Writes every deferred index change out: the postings as a run, the
/// homes as a run or, once too many are held, to their table (see
/// `IndexWriter::write_held_homes`). The caller must be the one writer of
/// the indexes (the indexing thread, or a holder of the writer lock with
/// no group being indexed): nothing else changes `deferred` meanwhile, so
/// reads are shut out only while the postings are gathered (the trace
/// homes are written meanwhile, on this thread, while another gathers the
/// postings) and while the transaction commits, not while the postings
/// are written.
pub(super) fn flush_deferred(index: &Index, deferred: &RwLock<Deferred>) -> Result<()> {
    {
        let held = deferred.read().map_err(|_| Error::panicked())?;
        if held.is_empty() && !held.homes_full() {
            return Ok(());
        }
    }
    let mut w = index.begin_write()?;
    let (chunks, homes) = {
        let mut held = deferred.write().map_err(|_| Error::panicked())?;
        let full = held.homes_full();
        let Deferred {
            postings,
            homes,
            run_homes,
            ..
        } = &mut *held;
        std::thread::scope(|scope| {
            let gathering = scope.spawn(|| postings.chunks());
            let homes_written = w.write_held_homes(homes, run_homes, full);
            match gathering.join() {
                Ok(chunks) => homes_written.map(|h| (chunks, h)),
                // `chunks` cannot fail; a panic there (a bug) fails the
                // checkpoint.
                Err(_) => Err(Error::panicked()),
            }
        })?
    };
    w.write_postings(&chunks)?;
    let mut held = deferred.write().map_err(|_| Error::panicked())?;
    w.commit()?;
    held.written(homes);
    Ok(())
}

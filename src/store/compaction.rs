//! Compaction: giving back the log space of dead frames, and the index
//! file's free pages.
//!
//! The log can only lose a prefix of its segments (recovery requires
//! contiguous bases, but accepts any first base). So compaction picks the
//! longest prefix of sealed segments that ends in a mostly dead segment,
//! appends the prefix's live span frames again at the end of the log
//! (byte-identical payloads: they are the same spans), points the index at
//! the copies, makes that durable, and only then removes the prefix's
//! files, oldest first. `docs/FORMAT.md` (1.8) gives the crash analysis:
//! each step leaves a log and an index that agree, with the same answers.

use crate::codec;
use crate::error::{Error, Result};
use crate::index::Deferred;
use crate::index::{Index, IndexWriter, Liveness, META_APPLIED, META_COMPACT_CUT, Move};
use crate::log::{FrameRef, Log, Lsn};

use super::{SegmentStats, SessionStore};

/// Live frames are copied and remapped in batches of about this many bytes.
const COPY_BATCH_BYTES: usize = 4 << 20;

/// Frame header bytes (length, checksum, tag).
pub(super) const FRAME_HEADER: u64 = 9;

/// Segment header bytes.
const SEGMENT_HEADER: u64 = 32;

/// What [`SessionStore::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// Segment files removed.
    pub segments_dropped: usize,
    /// Bytes of the removed files.
    pub bytes_dropped: u64,
    /// Live span frames written again at the end of the log.
    pub frames_copied: u64,
    /// Bytes of those frames (headers included).
    pub bytes_copied: u64,
}

/// A point in a compaction where a crash is interesting (for crash tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactStep {
    /// A batch of live frames was appended and remapped in the (not yet
    /// committed) index transaction.
    Copied,
    /// The index transaction pointing at the copies committed (not durably).
    Remapped,
    /// Log and index are durable; no file was removed yet.
    Durable,
    /// The prefix's files are gone.
    Dropped,
}

/// On open: if a durable compaction remapped the index past segments that
/// a crash left on disk, removes them now (before any replay or rebuild
/// could point the index back at them).
pub(super) fn finish_interrupted(index: &Index, log: &Log) -> Result<()> {
    let cut = index.meta(META_COMPACT_CUT)?;
    let first_base = log.segments().first().map_or(0, |s| s.base);
    if cut > first_base {
        log.drop_segments_before(cut)?;
    }
    Ok(())
}

/// A live frame waiting to be copied.
struct Pending {
    tag: u8,
    payload: Vec<u8>,
    trace_id: [u8; 16],
    span_id: [u8; 8],
    from: Lsn,
}

impl SessionStore {
    /// Reclaims log space: rewrites the live frames of the oldest sealed
    /// segments, up to the last sealed segment whose dead bytes are at least
    /// its live bytes, at the end of the log, then removes those segments.
    /// A mostly dead active segment is sealed first so that it counts.
    /// Answers do not change. Appends wait while it runs; reads do not
    /// (`trace` waits only while the files are removed). Safe to interrupt
    /// at any point: a crash leaves the store with the same answers (see
    /// `docs/FORMAT.md`). Follow with
    /// [`SessionStore::compact_index`] to shrink the index file.
    pub fn compact(&self) -> Result<CompactReport> {
        self.compact_with_crash_points(&mut |_| {})
    }

    /// [`SessionStore::compact`], calling `at` at each step where a crash
    /// is worth simulating (tests copy the directory there).
    #[doc(hidden)]
    pub fn compact_with_crash_points(
        &self,
        at: &mut dyn FnMut(CompactStep),
    ) -> Result<CompactReport> {
        self.ensure_writable()?;
        let mut ws = self.lock_writer()?;
        self.ensure_writable()?;
        self.checkpoint(&mut ws)?;
        // Liveness reads traces from the tables alone.
        self.flush_homes().map_err(|e| self.poison(e))?;
        let mut segments = self.segment_list();
        self.segment_usage(&mut segments, &self.index.begin_read()?)?;
        // A mostly dead active segment is sealed first, so that it can go too.
        if let Some(active) = segments.last()
            && active.live_bytes < active.dead_bytes
            && active.bytes > SEGMENT_HEADER
        {
            self.log.seal_active()?;
            segments = self.segment_list();
            self.segment_usage(&mut segments, &self.index.begin_read()?)?;
        }
        let mut report = CompactReport::default();
        let Some(k) = segments
            .iter()
            .rposition(|s| s.sealed && s.dead_bytes >= s.live_bytes)
        else {
            return Ok(report);
        };
        let Some(cut) = segments.get(k + 1).map(|s| s.base_lsn) else {
            return Ok(report);
        };
        report.segments_dropped = k + 1;
        report.bytes_dropped = segments.iter().take(k + 1).map(|s| s.bytes).sum();

        let txn = self.index.begin_read()?;
        let mut live = Liveness::new(&txn)?;
        let mut w = self.index.begin_write()?;
        let mut batch: Vec<Pending> = Vec::new();
        let mut batch_bytes = 0usize;
        for item in self.log.scan(0) {
            let (lsn, frame) = item?;
            if lsn >= cut {
                break;
            }
            if frame.tag() != codec::TAG_SPAN_V1 {
                continue; // a tombstone: the spans it deleted are not copied
            }
            let (trace_id, span_id) = codec::span_ids(frame.tag(), frame.payload())
                .map_err(|e| self.corruption_at(lsn, e.0))?;
            if !live.is_live(trace_id, span_id, lsn)? {
                continue;
            }
            batch_bytes += frame.payload().len();
            batch.push(Pending {
                tag: frame.tag(),
                payload: frame.payload().to_vec(),
                trace_id,
                span_id,
                from: lsn,
            });
            if batch_bytes >= COPY_BATCH_BYTES {
                self.copy_batch(&mut w, &mut batch, &mut report)?;
                batch_bytes = 0;
                at(CompactStep::Copied);
            }
        }
        if !batch.is_empty() {
            self.copy_batch(&mut w, &mut batch, &mut report)?;
            at(CompactStep::Copied);
        }
        drop(live);
        drop(txn);
        w.forget_segments_before(cut)?;
        w.set_meta(META_APPLIED, self.log.end())?;
        // The intent travels with the remap: once this commit is durable,
        // an open finishes removing the prefix (`finish_interrupted`).
        w.set_meta(META_COMPACT_CUT, cut)?;
        self.commit_with_deferred(w, Deferred::default())
            .map_err(|e| self.poison(e))?;
        at(CompactStep::Remapped);
        self.checkpoint(&mut ws)?;
        at(CompactStep::Durable);
        {
            // Readers that hold an older snapshot may still follow its LSNs
            // into the prefix: wait for them.
            let _gate = self.read_gate.write().map_err(|_| Error::panicked())?;
            self.log.drop_segments_before(cut)?;
        }
        at(CompactStep::Dropped);
        Ok(report)
    }

    /// Appends a batch of live frames again and points the index at them.
    fn copy_batch(
        &self,
        w: &mut IndexWriter,
        batch: &mut Vec<Pending>,
        report: &mut CompactReport,
    ) -> Result<()> {
        let frames: Vec<FrameRef<'_>> = batch
            .iter()
            .map(|p| FrameRef {
                tag: p.tag,
                payload: &p.payload,
            })
            .collect();
        let lsns = self.log.append(&frames)?;
        let moves: Vec<Move> = batch
            .iter()
            .zip(lsns)
            .map(|(p, to)| Move {
                trace_id: p.trace_id,
                span_id: p.span_id,
                from: p.from,
                to,
                bytes: FRAME_HEADER + p.payload.len() as u64,
            })
            .collect();
        w.remap(&moves, &*self.log)?;
        report.frames_copied += batch.len() as u64;
        report.bytes_copied += batch
            .iter()
            .map(|p| FRAME_HEADER + p.payload.len() as u64)
            .sum::<u64>();
        batch.clear();
        Ok(())
    }

    /// Rewrites the index file without its free pages (redb `compact`),
    /// after merging the session sort index's runs into one per sort order
    /// (which drops the keys of deleted sessions and the old keys of
    /// changed ones), dropping deleted sessions from the search
    /// postings (see `docs/FORMAT.md`) and rewriting into full leaves each
    /// table whose leaves are a fifth or more empty. Needs `&mut self`: no other handle may use the store meanwhile (an
    /// `Arc<SessionStore>` must be unique: `Arc::get_mut`). Returns whether
    /// anything was reclaimed.
    pub fn compact_index(&mut self) -> Result<bool> {
        self.ensure_writable()?;
        {
            let mut ws = self.lock_writer()?;
            // The checkpoint writes every deferred posting to its table
            // first, so that the prune sees them all.
            self.checkpoint(&mut ws)?;
            self.index.merge_sort_runs()?;
            self.index.prune_postings()?;
            self.index.repack_tables()?;
        }
        // The checkpoint waited for the indexing thread, the only other
        // holder of the index.
        std::sync::Arc::get_mut(&mut self.index)
            .ok_or_else(|| Error::invalid("the index is still in use by an indexing thread"))?
            .compact()
    }

    /// The log's segments, without usage figures.
    pub(super) fn segment_list(&self) -> Vec<SegmentStats> {
        self.log
            .segments()
            .into_iter()
            .map(|s| SegmentStats {
                path: s.path,
                base_lsn: s.base,
                bytes: s.len,
                sealed: s.sealed,
                live_bytes: 0,
                dead_bytes: 0,
            })
            .collect()
    }

    /// The log's segments with their live and dead bytes (for `stats`).
    pub(super) fn segment_stats(&self) -> Result<Vec<SegmentStats>> {
        // The list and the snapshot must describe the same log: take both
        // where no append can run, with every appended span indexed.
        let (mut segments, txn) = {
            let mut ws = self.lock_writer()?;
            self.apply_pending(&mut ws)?;
            (self.segment_list(), self.index.begin_read()?)
        };
        self.segment_usage(&mut segments, &txn)?;
        Ok(segments)
    }

    /// Fills in live and dead bytes of `segments` from the live bytes
    /// `txn`'s index counts per segment.
    fn segment_usage(
        &self,
        segments: &mut [SegmentStats],
        txn: &redb::ReadTransaction,
    ) -> Result<()> {
        let live = crate::index::segments::live_bytes(txn)?;
        for s in segments.iter_mut() {
            s.live_bytes = live.get(&s.base_lsn).copied().unwrap_or(0);
            s.dead_bytes = s.bytes.saturating_sub(s.live_bytes);
        }
        Ok(())
    }

    /// For `verify`: compares the live bytes the index counts per log
    /// segment with a scan of the log for the frames it refers to.
    pub(super) fn check_live_bytes(&self, problems: &mut Vec<String>) -> Result<()> {
        // Liveness finds traces through the tables alone: `verify` holds
        // the writer lock from `lock_applied`, which wrote every held home
        // to its table.
        let txn = self.index.begin_read()?;
        let counted = crate::index::segments::live_bytes(&txn)?;
        let scanned = match self.scan_live_bytes(&txn) {
            Ok(s) => s,
            Err(e) if e.kind() == crate::error::ErrorKind::Corrupted => {
                problems.push(e.to_string());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let bases: std::collections::BTreeSet<Lsn> =
            counted.keys().chain(scanned.keys()).copied().collect();
        for base in bases {
            let (c, s) = (counted.get(&base), scanned.get(&base));
            if c != s {
                problems.push(format!(
                    "segment at LSN {base}: the index counts {} live bytes, its live frames hold {}",
                    c.copied().unwrap_or(0),
                    s.copied().unwrap_or(0)
                ));
            }
        }
        Ok(())
    }

    /// Live bytes per segment (by base LSN) as a scan of the log finds
    /// them: each span frame that `txn`'s index refers to, header
    /// included.
    fn scan_live_bytes(
        &self,
        txn: &redb::ReadTransaction,
    ) -> Result<std::collections::BTreeMap<Lsn, u64>> {
        let _gate = self.read_gate.read().map_err(|_| Error::panicked())?;
        let mut live = Liveness::new(txn)?;
        let mut out = std::collections::BTreeMap::new();
        let mut segment: Option<(Lsn, Lsn)> = None;
        for item in self.log.scan(0) {
            let (lsn, frame) = item?;
            if frame.tag() != codec::TAG_SPAN_V1 {
                continue;
            }
            let (trace_id, span_id) = codec::span_ids(frame.tag(), frame.payload())
                .map_err(|e| self.corruption_at(lsn, e.0))?;
            if !live.is_live(trace_id, span_id, lsn)? {
                continue;
            }
            let base = match segment {
                Some((base, next)) if base <= lsn && lsn < next => base,
                _ => {
                    let found = self.log.segment_bounds(lsn).ok_or_else(|| {
                        Error::invalid(format!("LSN {lsn} is in no segment of the log"))
                    })?;
                    segment = Some(found);
                    found.0
                }
            };
            *out.entry(base).or_default() += FRAME_HEADER + frame.payload().len() as u64;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use redb::ReadableTable;

    use super::SegmentStats;
    use crate::index::posting_runs::{SEARCH_RUNS, posting_of};
    use crate::index::search::{ChunkSet, key_chunk};
    use crate::index::{SEARCH, SESSIONS};
    use crate::{ResourceSpans, SessionFilter, SessionQuery, SessionStore, Span, SpanId, TraceId};

    /// The session numbers the search postings name, and those of the
    /// sessions there are.
    fn members_and_sessions(store: &SessionStore) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let txn = store.index.begin_read().unwrap();
        let mut members = BTreeSet::new();
        for entry in txn.open_table(SEARCH).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            let set = ChunkSet::decode(v.value()).unwrap();
            members.extend(set.sessions(key_chunk(k.value())));
        }
        for entry in txn.open_table(SEARCH_RUNS).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            let set = ChunkSet::decode(v.value()).unwrap();
            members.extend(set.sessions(key_chunk(&posting_of(k.value()))));
        }
        let sessions = txn
            .open_table(SESSIONS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect();
        (members, sessions)
    }

    fn search(store: &SessionStore, term: &str) -> Vec<String> {
        let q = SessionQuery {
            limit: 100,
            filter: SessionFilter {
                search: Some(term.to_owned()),
                ..SessionFilter::default()
            },
            ..SessionQuery::default()
        };
        let mut ids: Vec<String> = store
            .sessions("p", &q)
            .unwrap()
            .items
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        ids.sort();
        ids
    }

    /// A store of 40 one-turn sessions, 30 of them deleted, reopened (so
    /// that every posting is in its table).
    fn store_with_deleted_sessions(dir: &std::path::Path) -> SessionStore {
        let store = SessionStore::open(dir).unwrap();
        for i in 0..40u8 {
            let root = Span::new(
                TraceId([i + 1; 16]),
                SpanId([1; 8]),
                None,
                "agent",
                1_000 * u64::from(i) + 1,
                1_000 * u64::from(i) + 500,
            )
            .with_attribute("session.id", format!("s{i:02}"))
            .with_attribute("input.value", format!("question {i:02} about zebras"))
            .with_attribute("output.value", "an answer");
            store
                .append(&[ResourceSpans::for_project("p", vec![root])])
                .unwrap();
        }
        for i in 0..30u8 {
            store.delete_session("p", &format!("s{i:02}")).unwrap();
        }
        // Closing takes a checkpoint, which writes the postings held in
        // memory to their table.
        store.close().unwrap();
        SessionStore::open(dir).unwrap()
    }

    /// Deletes leave the deleted sessions in the search postings (a
    /// superset, verified on read); `compact_index` drops them, and
    /// every session left keeps its postings and is found as before.
    #[test]
    fn compact_index_drops_deleted_sessions_from_the_search_postings() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_deleted_sessions(dir.path());
        let (members, sessions) = members_and_sessions(&store);
        assert_eq!(sessions.len(), 10);
        assert_eq!(
            members.difference(&sessions).count(),
            30,
            "the deleted sessions are still in the postings"
        );
        let found = search(&store, "zebras");
        assert_eq!(found.len(), 10);

        store.compact_index().unwrap();
        let (after, sessions_after) = members_and_sessions(&store);
        assert_eq!(sessions_after, sessions);
        assert_eq!(after, sessions, "postings name exactly the sessions left");
        assert_eq!(search(&store, "zebras"), found);
        assert_eq!(search(&store, "question 35"), vec!["s35".to_owned()]);
        assert!(search(&store, "question 05").is_empty());
        assert!(store.verify().unwrap().problems.is_empty());
    }

    /// `verify` finds search postings that the stored turns need and the
    /// index lacks (no other check would: the postings are the only table
    /// compared as a superset).
    #[test]
    fn verify_finds_missing_search_postings() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_deleted_sessions(dir.path());
        // Everything held in memory written to the tables first.
        store.sync().unwrap();
        assert!(store.verify().unwrap().problems.is_empty());
        assert_eq!(search(&store, "zebras").len(), 10);
        // Half the postings dropped, in the table and in its runs.
        fn drop_half<const N: usize>(
            w: &crate::index::IndexWriter,
            def: redb::TableDefinition<&'static [u8; N], &'static [u8]>,
        ) {
            let mut table = w.txn().open_table(def).unwrap();
            let keys: Vec<[u8; N]> = table
                .iter()
                .unwrap()
                .map(|e| *e.unwrap().0.value())
                .collect();
            for k in keys.iter().take(keys.len() / 2) {
                table.remove(k).unwrap();
            }
        }
        let w = store.index.begin_write().unwrap();
        drop_half(&w, SEARCH);
        drop_half(&w, SEARCH_RUNS);
        w.commit().unwrap();
        let problems = store.verify().unwrap().problems;
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("search: postings of trigram")),
            "{problems:?}"
        );
    }

    /// Copies a store's directory (a crash: nothing of the copy is closed).
    fn copy_store(from: &std::path::Path, to: &std::path::Path) {
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                std::fs::create_dir(&target).unwrap();
                copy_store(&e.path(), &target);
            } else {
                std::fs::copy(e.path(), target).unwrap();
            }
        }
    }

    /// Checks `stats()`'s live bytes per segment against a whole decode of
    /// every frame: each span's last frame counts if `kept(trace byte)`.
    /// Returns the number of live spans.
    fn check_live_bytes(store: &SessionStore, kept: impl Fn(u8) -> bool) -> usize {
        let stats = store.stats().unwrap();
        let mut last = std::collections::BTreeMap::new();
        for item in store.log.scan(0) {
            let (lsn, frame) = item.unwrap();
            let Ok(span) = crate::codec::decode_span(frame.tag(), frame.payload()) else {
                continue; // a tombstone
            };
            let size = super::FRAME_HEADER + frame.payload().len() as u64;
            last.insert((span.span.trace_id.0, span.span.span_id.0), (lsn, size));
        }
        let mut want = vec![0u64; stats.segments.len()];
        let mut live = 0;
        for ((trace, _), (lsn, size)) in last {
            if kept(trace[0]) {
                let seg = stats
                    .segments
                    .iter()
                    .rposition(|s| s.base_lsn <= lsn)
                    .unwrap();
                want[seg] += size;
                live += 1;
            }
        }
        let got: Vec<u64> = stats.segments.iter().map(|s| s.live_bytes).collect();
        assert_eq!(got, want);
        for s in &stats.segments {
            assert_eq!(s.live_bytes + s.dead_bytes, s.bytes);
        }
        live
    }

    /// A segment's live bytes are the frames of the spans the store
    /// holds: not a deleted trace's, not a repeated span's second copy,
    /// not a tombstone, not a frame compaction copied away. They are kept
    /// by the index, and are the same after a replay (a crash past the
    /// checkpoint) and a compaction. Checked against a whole decode of
    /// every frame and the set of traces kept.
    #[test]
    fn live_bytes_are_the_frames_of_stored_spans() {
        let dir = tempfile::tempdir().unwrap();
        let opts = || SessionStore::options().segment_bytes(8 * 1024);
        let store = opts().open(dir.path()).unwrap();
        let batch = |i: u8| {
            let spans = (0..3u8)
                .map(|j| {
                    Span::new(
                        TraceId([i + 1; 16]),
                        SpanId([j + 1; 8]),
                        (j > 0).then_some(SpanId([1; 8])),
                        "step",
                        1_000 * u64::from(i) + u64::from(j) + 1,
                        1_000 * u64::from(i) + 500,
                    )
                    .with_attribute("session.id", format!("s{i:02}"))
                    .with_attribute("input.value", "x".repeat(200))
                })
                .collect();
            ResourceSpans::for_project("p", spans)
        };
        for i in 0..40u8 {
            store.append(&[batch(i)]).unwrap();
        }
        // Exporters retry: a repeat of a stored span changes nothing.
        for i in (0..40u8).step_by(3) {
            store.append(&[batch(i)]).unwrap();
        }
        store.sync().unwrap();
        for i in (0..40u8).filter(|i| i % 4 == 1) {
            store.delete_session("p", &format!("s{i:02}")).unwrap();
        }
        // A deleted session appended again: its spans' new frames are
        // live, the old ones stay dead.
        store.append(&[batch(1)]).unwrap();
        let kept = |t: u8| t % 4 != 2 || t == 2;
        assert_eq!(check_live_bytes(&store, kept), 31 * 3);
        let stats = store.stats().unwrap();
        assert!(
            stats.segments.len() > 3,
            "{} segments",
            stats.segments.len()
        );
        assert!(stats.segments.iter().any(|s| s.dead_bytes > s.bytes / 4));

        // A crash: the deletes and the last append are past the
        // checkpoint, and a reopen replays them.
        let crashed = tempfile::tempdir().unwrap();
        copy_store(dir.path(), crashed.path());
        let reopened = opts().open(crashed.path()).unwrap();
        assert!(reopened.open_report().frames_replayed > 0);
        assert_eq!(
            reopened.stats().unwrap().segments,
            store
                .stats()
                .unwrap()
                .segments
                .into_iter()
                .map(|s| SegmentStats {
                    path: crashed.path().join("log").join(s.path.file_name().unwrap()),
                    ..s
                })
                .collect::<Vec<_>>()
        );
        drop(reopened);

        // The oldest segments made mostly dead, so that compaction moves
        // their live frames.
        for i in 0..16u8 {
            store.delete_session("p", &format!("s{i:02}")).unwrap();
        }
        let kept = |t: u8| kept(t) && t > 16;
        let report = store.compact().unwrap();
        assert!(report.segments_dropped > 0 && report.frames_copied > 0);
        assert_eq!(check_live_bytes(&store, kept), 18 * 3);
        assert!(store.verify().unwrap().is_ok());
        drop(store);
        let store = opts().open(dir.path()).unwrap();
        assert_eq!(check_live_bytes(&store, kept), 18 * 3);
    }

    /// The prune changes the table a few postings at a time and, pass
    /// after pass, reaches every one.
    #[test]
    fn postings_are_pruned_in_passes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_deleted_sessions(dir.path());
        let (members, sessions) = members_and_sessions(&store);
        assert!(members.len() > sessions.len());
        let dropped = store.index.prune_postings_in(3).unwrap();
        assert!(dropped > 3 * 30, "{dropped} memberships dropped");
        let (after, _) = members_and_sessions(&store);
        assert_eq!(after, sessions);
        assert_eq!(store.index.prune_postings_in(3).unwrap(), 0);
        assert!(store.verify().unwrap().problems.is_empty());
    }
}

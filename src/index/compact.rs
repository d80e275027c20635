//! What compaction needs from the indexes: whether a span frame is live
//! (the trace record still points at that very LSN), and remapping the
//! LSNs of frames that compaction copied.

use crate::hashing::FastMap;

use redb::{ReadOnlyTable, ReadTransaction};

use crate::error::{Error, Result};
use crate::model::TraceId;

use super::apply::{IndexWriter, SpanSource, load_trace, store_trace};
use super::segments::LiveChanges;
use super::trace::TraceRecord;
use super::{TRACE_HOMES, TRACE_RECORDS, corrupt_index, find_trace_as};

/// Trace records cached by a liveness check before the cache is emptied.
const CACHE_RECORDS: usize = 16_384;

/// Answers "is the span frame at this LSN live?" against one snapshot.
pub(crate) struct Liveness {
    homes: ReadOnlyTable<&'static [u8; 16], u64>,
    records: ReadOnlyTable<u64, &'static [u8]>,
    /// Each trace's span ids and LSNs, in span id order (none for a trace
    /// the index does not hold).
    cache: FastMap<[u8; 16], Vec<([u8; 8], u64)>>,
}

impl Liveness {
    /// Liveness as of the snapshot `txn`.
    pub(crate) fn new(txn: &ReadTransaction) -> Result<Liveness> {
        Ok(Liveness {
            homes: txn.open_table(TRACE_HOMES)?,
            records: txn.open_table(TRACE_RECORDS)?,
            cache: FastMap::default(),
        })
    }

    /// True when the index refers to the span `(trace_id, span_id)` at
    /// `lsn`: any other frame (an older copy of a deleted trace's span, a
    /// copy compaction wrote but never switched to, a tombstone) is dead.
    pub(crate) fn is_live(
        &mut self,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        lsn: u64,
    ) -> Result<bool> {
        if self.cache.len() >= CACHE_RECORDS && !self.cache.contains_key(&trace_id) {
            self.cache.clear();
        }
        let rec = match self.cache.entry(trace_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let spans = find_trace_as(&self.homes, None, &self.records, trace_id, |b| {
                    TraceRecord::span_locations(b).map_err(|e| corrupt_index("trace record", e))
                })?
                .map(|(_, spans)| spans)
                .unwrap_or_default();
                e.insert(spans)
            }
        };
        Ok(rec
            .binary_search_by(|(id, _)| id.cmp(&span_id))
            .ok()
            .and_then(|i| rec.get(i))
            .is_some_and(|&(_, at)| at == lsn))
    }
}

/// One span frame moved by compaction.
pub(crate) struct Move {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub from: u64,
    pub to: u64,
    /// The frame's bytes, header included.
    pub bytes: u64,
}

impl IndexWriter {
    /// Points the span facts of moved frames at their new LSNs. A fact
    /// that no longer points at `from` is left alone (cannot happen under
    /// the writer lock, but a remap never resurrects anything). The live
    /// bytes of each moved frame move with it.
    pub(crate) fn remap(&mut self, moves: &[Move], source: &dyn SpanSource) -> Result<()> {
        let mut t = self.tables()?;
        let mut live = LiveChanges::default();
        let mut by_trace: FastMap<[u8; 16], Vec<&Move>> = FastMap::default();
        for m in moves {
            by_trace.entry(m.trace_id).or_default().push(m);
        }
        let mut ids: Vec<[u8; 16]> = by_trace.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let (Some(home), mut rec) = load_trace(&t, id, None)? else {
                return Err(Error::Index(Box::new(redb::Error::Corrupted(format!(
                    "compaction moved a span of unknown trace {}",
                    TraceId(id)
                )))));
            };
            for m in by_trace.get(&id).into_iter().flatten() {
                if let Ok(i) = rec.spans.binary_search_by(|f| f.span_id.cmp(&m.span_id))
                    && let Some(f) = rec.spans.get_mut(i)
                    && f.lsn == m.from
                {
                    f.lsn = m.to;
                    let bytes = i64::try_from(m.bytes).unwrap_or(i64::MAX);
                    live.add(source, m.from, -bytes)?;
                    live.add(source, m.to, bytes)?;
                }
            }
            store_trace(&mut t, home, &rec)?;
        }
        live.write(&mut t.segment_live)
    }

    /// Forgets the live bytes of the segments below `cut`, which a
    /// compaction removes (all their live frames were moved).
    pub(crate) fn forget_segments_before(&mut self, cut: u64) -> Result<()> {
        let mut t = self.tables()?;
        t.segment_live.retain_in(..cut, |_, _| false)?;
        Ok(())
    }
}

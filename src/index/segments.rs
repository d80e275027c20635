//! Live bytes per log segment: the bytes of the span frames the index
//! refers to (see `docs/FORMAT.md`, 1.8), kept in `segment_live` by every
//! change to what it refers to (a group of new spans, a delete, a
//! compaction's moves), so that `SessionStore::stats` and compaction read
//! them instead of scanning the log.

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition};

use super::apply::{SpanSource, apply_signed};
use crate::error::Result;

/// Base LSN of a segment -> bytes of its live span frames, headers
/// included. A segment without live frames has no entry.
pub(crate) const SEGMENT_LIVE: TableDefinition<u64, u64> = TableDefinition::new("segment_live");

/// Changes to live bytes per segment, gathered over one transaction's work
/// and written once by [`LiveChanges::write`].
#[derive(Default)]
pub(super) struct LiveChanges {
    /// The segment the last LSN fell in: its base and the next one's.
    last: Option<(u64, u64)>,
    by_segment: BTreeMap<u64, i64>,
}

impl LiveChanges {
    /// Counts `bytes` more (or fewer, if negative) live bytes at the frame
    /// at `lsn`, in whichever segment holds it.
    pub fn add(&mut self, source: &dyn SpanSource, lsn: u64, bytes: i64) -> Result<()> {
        let base = match self.last {
            Some((base, next)) if base <= lsn && lsn < next => base,
            _ => {
                let found = source.segment(lsn).ok_or_else(|| {
                    super::corrupted(format!("the index refers to LSN {lsn}, outside the log"))
                })?;
                self.last = Some(found);
                found.0
            }
        };
        *self.by_segment.entry(base).or_default() += bytes;
        Ok(())
    }

    /// Applies the changes to the table; a segment left without live
    /// bytes loses its entry.
    pub fn write(self, table: &mut Table<'_, u64, u64>) -> Result<()> {
        for (base, change) in self.by_segment {
            if change == 0 {
                continue;
            }
            let old = table.get(base)?.map_or(0, |v| v.value());
            match apply_signed(old, change) {
                0 => table.remove(base)?,
                live => table.insert(base, live)?,
            };
        }
        Ok(())
    }
}

/// Live bytes per segment base, as the table holds them.
pub(crate) fn live_bytes(txn: &redb::ReadTransaction) -> Result<BTreeMap<u64, u64>> {
    let table = txn.open_table(SEGMENT_LIVE)?;
    let mut out = BTreeMap::new();
    for item in table.iter()? {
        let (k, v) = item?;
        out.insert(k.value(), v.value());
    }
    Ok(out)
}

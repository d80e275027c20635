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
    /// The segment the last LSN fell in (its base and the next one's) and
    /// the change to it since: a group's spans are mostly in one segment,
    /// so most additions touch only this.
    current: Option<(u64, u64, i64)>,
    /// Changes to the segments left before `current`, by base.
    earlier: BTreeMap<u64, i64>,
}

impl LiveChanges {
    /// Counts `bytes` more (or fewer, if negative) live bytes at the frame
    /// at `lsn`, in whichever segment holds it.
    #[inline]
    pub fn add(&mut self, source: &dyn SpanSource, lsn: u64, bytes: i64) -> Result<()> {
        if let Some((base, next, change)) = &mut self.current
            && *base <= lsn
            && lsn < *next
        {
            *change += bytes;
            return Ok(());
        }
        self.add_elsewhere(source, lsn, bytes)
    }

    /// [`Self::add`] for an LSN outside the current segment.
    #[cold]
    fn add_elsewhere(&mut self, source: &dyn SpanSource, lsn: u64, bytes: i64) -> Result<()> {
        let (base, next) = source.segment(lsn).ok_or_else(|| {
            super::corrupted(format!("the index refers to LSN {lsn}, outside the log"))
        })?;
        self.flush();
        self.current = Some((base, next, bytes));
        Ok(())
    }

    /// Moves the change to the current segment into `earlier`.
    fn flush(&mut self) {
        if let Some((base, _, change)) = self.current.take() {
            *self.earlier.entry(base).or_default() += change;
        }
    }

    /// Applies the changes to the table; a segment left without live
    /// bytes loses its entry.
    pub fn write(mut self, table: &mut Table<'_, u64, u64>) -> Result<()> {
        self.flush();
        for (base, change) in self.earlier {
            if change == 0 {
                continue;
            }
            let old = table.get(base)?.map_or(0, |v| v.value());
            match apply_signed(old, i128::from(change)) {
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

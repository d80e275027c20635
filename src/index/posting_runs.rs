//! Search postings written as runs, merged into the `search` table by the
//! batch.
//!
//! A checkpoint's postings (see `search`) touch a key of `search` for
//! nearly every trigram its sessions' texts hold, and those keys lie all
//! over the table, so merging them into it one by one rewrote most of its
//! leaves at every checkpoint: a quarter of ~500 B ingest at a million
//! spans (BENCHMARK-ROUNDS.md, twenty-third round). Instead each flush
//! appends its postings, already sorted by key, as one *run* at the end of
//! `search_runs` (key: run sequence ‖ posting key), which costs about what
//! writing them sequentially costs; once [`MAX_RUNS`] runs are there, they
//! are merged into `search` together (a key the runs share is written
//! once) and the runs are dropped. Searches read `search` and every run.
//! Postings only grow, so the union of the base and the runs is the set.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::search::{ChunkSet, EncodedChunks};
use super::{META, SEARCH, corrupted as corrupt, decode_posting};
use crate::error::Result;

/// Search posting runs: run sequence (8 B BE) ‖ posting key (12 B) -> the
/// postings that run adds (a `ChunkSet`).
pub(crate) const SEARCH_RUNS: TableDefinition<&[u8; 20], &[u8]> =
    TableDefinition::new("search_runs");

/// The runs in `search_runs`: sequence -> number of its entries.
pub(crate) const SEARCH_RUN_LIST: TableDefinition<u64, u64> =
    TableDefinition::new("search_run_list");

/// Meta key: the sequence the next run takes.
const META_NEXT_SEARCH_RUN: &str = "next_search_run";

/// Runs kept before they are merged into `search`.
pub(crate) const MAX_RUNS: usize = 8;

/// The key of posting `key` in run `seq`.
pub(crate) fn run_key(seq: u64, key: &[u8; 12]) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(key);
    k
}

/// The posting key within a run key.
pub(crate) fn posting_of(k: &[u8; 20]) -> [u8; 12] {
    let mut p = [0u8; 12];
    p.copy_from_slice(&k[8..]);
    p
}

/// The sequences of the runs, ascending.
pub(crate) fn run_seqs(list: &impl ReadableTable<u64, u64>) -> Result<Vec<u64>> {
    list.iter()?
        .map(|entry| Ok(entry?.0.value()))
        .collect::<Result<Vec<u64>>>()
}

/// Appends `chunks` (posting keys ascending, distinct) as a new run, then
/// merges every run into `search` if there are [`MAX_RUNS`] of them.
pub(crate) fn write_run(txn: &WriteTransaction, chunks: &EncodedChunks) -> Result<()> {
    if chunks.is_empty() {
        return Ok(());
    }
    let seq = {
        let mut meta = txn.open_table(META)?;
        let seq = meta.get(META_NEXT_SEARCH_RUN)?.map_or(0, |v| v.value());
        let next = seq
            .checked_add(1)
            .ok_or_else(|| corrupt("search run sequence exhausted"))?;
        meta.insert(META_NEXT_SEARCH_RUN, next)?;
        seq
    };
    {
        let mut runs = txn.open_table(SEARCH_RUNS)?;
        // The values come encoded (see `EncodedChunks`).
        let entries = chunks.iter().map(|(key, v)| (run_key(seq, key), v));
        // Every run's sequence is above those stored, so the run goes to
        // the table's end.
        let keys_values: Vec<([u8; 20], &[u8])> = entries.collect();
        super::append_ascending(&mut runs, keys_values.iter().map(|(k, v)| (k, *v)))?;
    }
    let count = {
        let mut list = txn.open_table(SEARCH_RUN_LIST)?;
        list.insert(seq, chunks.len() as u64)?;
        list.len()?
    };
    if count >= MAX_RUNS as u64 {
        merge_runs(txn)?;
    }
    Ok(())
}

/// Merges every run into `search` (each key once, the runs' sets and the
/// stored one united) and drops the runs.
pub(crate) fn merge_runs(txn: &WriteTransaction) -> Result<()> {
    let seqs = run_seqs(&txn.open_table(SEARCH_RUN_LIST)?)?;
    if seqs.is_empty() {
        return Ok(());
    }
    {
        let runs = txn.open_table(SEARCH_RUNS)?;
        let mut base = txn.open_table(SEARCH)?;
        // One cursor per run; each yields its keys ascending.
        let mut cursors = seqs
            .iter()
            .map(|&seq| {
                let (lo, hi) = (run_key(seq, &[0; 12]), run_key(seq, &[0xff; 12]));
                runs.range::<&[u8; 20]>(&lo..=&hi)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut heads: Vec<Option<([u8; 12], ChunkSet)>> = Vec::with_capacity(cursors.len());
        for cursor in &mut cursors {
            heads.push(next_posting(cursor)?);
        }
        while let Some(key) = heads.iter().flatten().map(|(k, _)| *k).min() {
            let mut set: Option<ChunkSet> = None;
            for (head, cursor) in heads.iter_mut().zip(cursors.iter_mut()) {
                if head.as_ref().is_some_and(|(k, _)| *k == key) {
                    if let Some((_, s)) = head.take() {
                        match &mut set {
                            Some(acc) => {
                                acc.union(&s);
                            }
                            None => set = Some(s),
                        }
                    }
                    *head = next_posting(cursor)?;
                }
            }
            let Some(mut set) = set else { continue };
            let stored = match base.get(&key)? {
                Some(v) => Some(decode_posting(v.value())?),
                None => None,
            };
            if let Some(stored) = stored {
                set.union(&stored);
            }
            base.insert(&key, set.encode().as_slice())?;
        }
    }
    drop_runs(txn)
}

/// Empties both run tables (keeping them, empty, for readers).
pub(crate) fn drop_runs(txn: &WriteTransaction) -> Result<()> {
    txn.delete_table(SEARCH_RUNS)?;
    txn.open_table(SEARCH_RUNS)?;
    txn.open_table(SEARCH_RUN_LIST)?.retain(|_, _| false)?;
    Ok(())
}

/// The next posting of a run's cursor.
fn next_posting(
    cursor: &mut redb::Range<'_, &'static [u8; 20], &'static [u8]>,
) -> Result<Option<([u8; 12], ChunkSet)>> {
    match cursor.next() {
        None => Ok(None),
        Some(entry) => {
            let (k, v) = entry?;
            Ok(Some((posting_of(k.value()), decode_posting(v.value())?)))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, backends::InMemoryBackend};

    use super::*;

    /// Every posting key's members, from the base and every run.
    fn stored(db: &Database) -> BTreeMap<[u8; 12], BTreeSet<u16>> {
        let txn = db.begin_read().unwrap();
        let mut out: BTreeMap<[u8; 12], BTreeSet<u16>> = BTreeMap::new();
        for entry in txn.open_table(SEARCH).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            let set = ChunkSet::decode(v.value()).unwrap();
            out.entry(*k.value()).or_default().extend(set.offsets());
        }
        for entry in txn.open_table(SEARCH_RUNS).unwrap().iter().unwrap() {
            let (k, v) = entry.unwrap();
            let set = ChunkSet::decode(v.value()).unwrap();
            out.entry(posting_of(k.value()))
                .or_default()
                .extend(set.offsets());
        }
        out
    }

    fn runs(db: &Database) -> u64 {
        let txn = db.begin_read().unwrap();
        txn.open_table(SEARCH_RUN_LIST).unwrap().len().unwrap()
    }

    fn flush() -> impl Strategy<Value = BTreeMap<[u8; 12], BTreeSet<u16>>> {
        // Few keys and offsets, so that runs and the base share many, and
        // sets of both encodings (a bitmap from 1,024 offsets on).
        let offsets = prop_oneof![
            4 => prop::collection::btree_set(0..64u16, 1..5),
            1 => (0..3000u16, 1000..1100u16).prop_map(|(from, n)| (from..from + n).collect()),
        ];
        prop::collection::btree_map(
            (0..3u32, 0..6u32, 0..2u32)
                .prop_map(|(p, t, c)| super::super::search::posting_key(p, t, c)),
            offsets,
            0..6,
        )
    }

    proptest! {
        /// However many flushes, the base and the runs together hold the
        /// union of every flush's postings; runs never reach `MAX_RUNS`.
        #[test]
        fn base_and_runs_hold_the_union_of_every_flush(
            flushes in prop::collection::vec(flush(), 1..30),
        ) {
            let db = Database::builder()
                .create_with_backend(InMemoryBackend::new())
                .unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(SEARCH).unwrap();
            txn.open_table(SEARCH_RUNS).unwrap();
            txn.open_table(SEARCH_RUN_LIST).unwrap();
            txn.commit().unwrap();
            let mut model: BTreeMap<[u8; 12], BTreeSet<u16>> = BTreeMap::new();
            let mut written = 0u64;
            for f in flushes {
                let mut chunks = EncodedChunks::default();
                for (k, o) in &f {
                    chunks.push_set(*k, &ChunkSet::from_sorted(o.iter().copied().collect()));
                }
                let txn = db.begin_write().unwrap();
                write_run(&txn, &chunks).unwrap();
                txn.commit().unwrap();
                for (k, o) in f {
                    model.entry(k).or_default().extend(o);
                }
                if !chunks.is_empty() {
                    written += 1;
                }
                prop_assert_eq!(stored(&db), model.clone());
                prop_assert_eq!(runs(&db), written % MAX_RUNS as u64);
            }
            let txn = db.begin_write().unwrap();
            merge_runs(&txn).unwrap();
            txn.commit().unwrap();
            prop_assert_eq!(runs(&db), 0);
            prop_assert_eq!(stored(&db), model);
        }
    }
}

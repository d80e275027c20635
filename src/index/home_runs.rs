//! Trace homes written as runs, merged into `trace_homes` by the batch.
//!
//! A trace's home (see `TRACE_HOMES`) is looked up by its random trace id,
//! so the homes of new traces land all over `trace_homes`; inserted at
//! every checkpoint they were about a seventh of ~500 B ingest's indexing
//! thread at a million spans (BENCHMARK-ROUNDS.md, twenty-fourth round).
//! Instead the indexes keep every home not yet in `trace_homes` in memory
//! (`Deferred`), and a checkpoint makes the ones it adds durable by
//! appending them, sorted, as one *run* at the end of `home_runs`, which
//! costs about what writing them sequentially costs. Nothing reads the
//! runs but an open, which loads them back into memory. Once memory holds
//! more than its bound of homes, a flush writes them all into
//! `trace_homes` at once, many per leaf, and drops the runs; deletes,
//! compaction and verify do so first as well, since they read traces from
//! the tables alone.
//!
//! A run is stored as blocks of up to [`BLOCK_HOMES`] homes, each one
//! value of 24-byte entries (trace id ‖ home, `u64` LE) under the key run
//! sequence (8 B BE) ‖ its first trace id: a redb entry per home cost
//! about 1,000 instructions each, more than the rest of the run.

use crate::hashing::FastMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::corrupted as corrupt;
use crate::error::Result;

/// Trace home runs: run sequence (8 B BE) ‖ first trace id of the block
/// (16 B) -> the block's homes, 24 B each: trace id ‖ home (`u64` LE).
pub(crate) const HOME_RUNS: TableDefinition<&[u8; 24], &[u8]> = TableDefinition::new("home_runs");

/// Homes per block of a run.
const BLOCK_HOMES: usize = 1024;

/// Bytes of one home in a block.
const ENTRY: usize = 24;

/// The key of trace `id` in run `seq`.
fn run_key(seq: u64, id: &[u8; 16]) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&seq.to_be_bytes());
    k[8..].copy_from_slice(id);
    k
}

/// The run sequence and trace id of a run key.
fn split(k: &[u8; 24]) -> (u64, [u8; 16]) {
    let mut seq = [0u8; 8];
    let mut id = [0u8; 16];
    seq.copy_from_slice(&k[..8]);
    id.copy_from_slice(&k[8..]);
    (u64::from_be_bytes(seq), id)
}

/// Appends `homes` as a new run (nothing if it is empty).
pub(crate) fn write_run(txn: &WriteTransaction, homes: &FastMap<[u8; 16], u64>) -> Result<()> {
    if homes.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(HOME_RUNS)?;
    let seq = match table.last()? {
        Some((k, _)) => split(k.value())
            .0
            .checked_add(1)
            .ok_or_else(|| corrupt("trace home run sequence exhausted"))?,
        None => 0,
    };
    let mut run: Vec<(&[u8; 16], &u64)> = homes.iter().collect();
    // Big-endian bytes sort as the integer does.
    // Placed by the ids' first two bytes, then sorted where those tie
    // (random ids seldom do; ids that share them are sorted as before).
    super::radix::sort_by_lead(
        &mut run,
        |(id, _)| u64::from(u16::from_be_bytes([id[0], id[1]])),
        |(id, _)| u128::from_be_bytes(**id),
    );
    let blocks: Vec<([u8; 24], Vec<u8>)> = run
        .chunks(BLOCK_HOMES)
        .filter_map(|block| {
            let (first, _) = block.first()?;
            let mut value = Vec::with_capacity(block.len() * ENTRY);
            for (id, home) in block {
                value.extend_from_slice(*id);
                value.extend_from_slice(&home.to_le_bytes());
            }
            Some((run_key(seq, first), value))
        })
        .collect();
    // The run's sequence is above every stored one, so it goes to the
    // table's end.
    super::append_ascending(&mut table, blocks.iter().map(|(k, v)| (k, v.as_slice())))
}

/// Every home the runs hold.
pub(crate) fn load(
    table: &impl ReadableTable<&'static [u8; 24], &'static [u8]>,
) -> Result<FastMap<[u8; 16], u64>> {
    let mut homes = FastMap::default();
    for entry in table.iter()? {
        let (_, v) = entry?;
        let block = v.value();
        if block.len() % ENTRY != 0 {
            return Err(corrupt(
                "a trace home block of a length not a multiple of 24",
            ));
        }
        for e in block.chunks_exact(ENTRY) {
            let (id, home) = e.split_at(16);
            if let (Ok(id), Ok(home)) = (<[u8; 16]>::try_from(id), <[u8; 8]>::try_from(home)) {
                homes.insert(id, u64::from_le_bytes(home));
            }
        }
    }
    Ok(homes)
}

/// Empties the runs (keeping the table, empty).
pub(crate) fn drop_runs(txn: &WriteTransaction) -> Result<()> {
    txn.delete_table(HOME_RUNS)?;
    txn.open_table(HOME_RUNS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;
    use redb::{Database, ReadableDatabase, backends::InMemoryBackend};

    use super::*;

    fn stored(db: &Database) -> FastMap<[u8; 16], u64> {
        let txn = db.begin_read().unwrap();
        load(&txn.open_table(HOME_RUNS).unwrap()).unwrap()
    }

    fn runs(db: &Database) -> Vec<u64> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(HOME_RUNS).unwrap();
        let mut seqs: Vec<u64> = table
            .iter()
            .unwrap()
            .map(|e| split(e.unwrap().0.value()).0)
            .collect();
        seqs.dedup();
        seqs
    }

    proptest! {
        /// The runs hold every home written since they were last dropped,
        /// each written run one sequence above the one before.
        #[test]
        fn runs_hold_every_home_written_since_the_last_drop(
            flushes in prop::collection::vec(
                (
                    prop_oneof![
                        4 => prop::collection::hash_map(any::<[u8; 16]>(), any::<u64>(), 0..20),
                        // Runs of several blocks.
                        1 => prop::collection::hash_map(any::<[u8; 16]>(), any::<u64>(), 1000..2600),
                    ],
                    any::<bool>(),
                ),
                1..20,
            ),
        ) {
            let db = Database::builder()
                .create_with_backend(InMemoryBackend::new())
                .unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(HOME_RUNS).unwrap();
            txn.commit().unwrap();
            let mut model: FastMap<[u8; 16], u64> = FastMap::default();
            let mut written = 0u64;
            for (homes, then_drop) in flushes {
                let txn = db.begin_write().unwrap();
                let homes: FastMap<[u8; 16], u64> = homes.into_iter().collect();
                write_run(&txn, &homes).unwrap();
                if then_drop {
                    drop_runs(&txn).unwrap();
                }
                txn.commit().unwrap();
                if !homes.is_empty() {
                    written += 1;
                }
                model.extend(homes);
                if then_drop {
                    model.clear();
                    written = 0;
                }
                prop_assert_eq!(stored(&db), model.clone());
                prop_assert_eq!(runs(&db), (0..written).collect::<Vec<_>>());
            }
        }

        /// A run's blocks are its homes in the ids' byte order, cut every
        /// `BLOCK_HOMES`, each keyed by the sequence and its first id:
        /// byte for byte, entries and keys.
        #[test]
        fn a_runs_blocks_are_its_homes_in_id_order(
            homes in prop_oneof![
                prop::collection::hash_map(any::<[u8; 16]>(), any::<u64>(), 1..20),
                // Ids alike in their first bytes, and runs of several blocks.
                prop::collection::hash_map(
                    (any::<u8>(), any::<[u8; 2]>()).prop_map(|(a, b)| {
                        let mut id = [0x80; 16];
                        id[14] = a;
                        id[..2].copy_from_slice(&b);
                        id
                    }),
                    any::<u64>(),
                    1000..2600,
                ),
            ],
            runs_before in 0u64..3,
        ) {
            let db = Database::builder()
                .create_with_backend(InMemoryBackend::new())
                .unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(HOME_RUNS).unwrap();
            for _ in 0..runs_before {
                write_run(&txn, &[([0; 16], 0)].into_iter().collect()).unwrap();
            }
            let homes: FastMap<[u8; 16], u64> = homes.into_iter().collect();
            write_run(&txn, &homes).unwrap();
            txn.commit().unwrap();
            let sorted: std::collections::BTreeMap<[u8; 16], u64> =
                homes.iter().map(|(k, v)| (*k, *v)).collect();
            let sorted: Vec<([u8; 16], u64)> = sorted.into_iter().collect();
            let mut want: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for block in sorted.chunks(BLOCK_HOMES) {
                let mut key = runs_before.to_be_bytes().to_vec();
                key.extend_from_slice(&block[0].0);
                let mut value = Vec::new();
                for (id, home) in block {
                    value.extend_from_slice(id);
                    value.extend_from_slice(&home.to_le_bytes());
                }
                want.push((key, value));
            }
            let txn = db.begin_read().unwrap();
            let table = txn.open_table(HOME_RUNS).unwrap();
            let got: Vec<(Vec<u8>, Vec<u8>)> = table
                .iter()
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .filter(|(k, _)| k[..8] == runs_before.to_be_bytes())
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

//! What redb charges for the index's write pattern, without the store:
//! `cargo run --release --example redb_patterns -- [KEYS] [BATCH]`.
//!
//! KEYS (default 2,000,000) random 40-byte keys, each with an 8-byte value,
//! go into a new database in write transactions of BATCH keys (default
//! 16,384, one index group), a durable commit every eighth (a checkpoint),
//! the rest non-durable, with a 64 MiB cache (the store's defaults). Three
//! layouts:
//!
//! - `per key, random`: one entry per key, inserted in arrival order (what
//!   the index does for sort keys, session numbers and summaries);
//! - `per key, sorted`: the same entries, each batch sorted first (what it
//!   does for trace homes and postings at checkpoints);
//! - `sorted runs`: each batch sorted and packed into blocks of 64 entries,
//!   one value per block, keyed by (run number, first key), so that every
//!   insert lands at the end of the table (what an LSM-like index over redb
//!   would write);
//! - `merged runs`: the same, and whenever eight runs of one size exist
//!   they are merged, in the same transaction, into one run of the next
//!   size (their blocks read, merged, written as a new run and deleted):
//!   the write cost of keeping the number of runs logarithmic.
//!
//! For each: keys/s over the whole load and over its last quarter (the
//! table is largest then), and the cost of looking up 10,000 stored keys,
//! which for runs means one probe per live run. docs/BENCHMARK-ROUNDS.md,
//! "Where the B-tree inserts come from" (eleventh round), uses it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

const KEY: usize = 40;
const BLOCK: usize = 64;
/// Runs of one size merged into one of the next size.
const FANOUT: usize = 8;
const ENTRIES: TableDefinition<&[u8; KEY], u64> = TableDefinition::new("entries");
/// Batch number (8, big-endian) ++ first key -> packed (key, value) entries.
const RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("runs");

/// SplitMix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn keys(n: usize) -> Vec<[u8; KEY]> {
    let mut state = 7;
    (0..n)
        .map(|_| {
            let mut k = [0u8; KEY];
            for chunk in k.chunks_mut(8) {
                chunk.copy_from_slice(&next(&mut state).to_be_bytes()[..chunk.len()]);
            }
            k
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    Random,
    Sorted,
    Runs,
    Merged,
}

type RunsTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

/// Writes sorted (key, value) entries as run `run`, in blocks.
fn write_run(table: &mut RunsTable<'_>, run: u64, entries: &[([u8; KEY], u64)]) {
    for block in entries.chunks(BLOCK) {
        let mut key = run.to_be_bytes().to_vec();
        key.extend_from_slice(&block[0].0);
        let mut value = Vec::with_capacity(block.len() * (KEY + 8));
        for (k, v) in block {
            value.extend_from_slice(k);
            value.extend_from_slice(&v.to_le_bytes());
        }
        table.insert(key.as_slice(), value.as_slice()).unwrap();
    }
}

/// Merges `runs` into one new run `into` and deletes them.
fn merge_runs(table: &mut RunsTable<'_>, runs: &[u64], into: u64) {
    let mut entries = Vec::new();
    for &run in runs {
        let lo = run.to_be_bytes();
        let hi = (run + 1).to_be_bytes();
        for item in table.range(lo.as_slice()..hi.as_slice()).unwrap() {
            let (_, block) = item.unwrap();
            for e in block.value().chunks(KEY + 8) {
                let k: [u8; KEY] = e[..KEY].try_into().unwrap();
                entries.push((k, u64::from_le_bytes(e[KEY..].try_into().unwrap())));
            }
        }
        table
            .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)
            .unwrap();
    }
    entries.sort_unstable_by_key(|(k, _)| *k);
    write_run(table, into, &entries);
}

/// Loads `all` in batches; returns the load time, that of its last
/// quarter, and the runs left (for the run layouts).
fn load(
    db: &Database,
    all: &[[u8; KEY]],
    batch: usize,
    layout: Layout,
) -> (Duration, Duration, Vec<u64>) {
    let start = Instant::now();
    let mut last_quarter = Duration::ZERO;
    // Live runs by size (level), and the next run number.
    let mut levels: Vec<Vec<u64>> = Vec::new();
    let mut next_run = 0u64;
    for (n, keys) in all.chunks(batch).enumerate() {
        let t = Instant::now();
        let mut txn = db.begin_write().unwrap();
        let durability = if n % 8 == 7 {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).unwrap();
        let mut keys: Vec<([u8; KEY], u64)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, (n * batch + i) as u64))
            .collect();
        if layout != Layout::Random {
            keys.sort_unstable_by_key(|(k, _)| *k);
        }
        if matches!(layout, Layout::Runs | Layout::Merged) {
            let mut table = txn.open_table(RUNS).unwrap();
            write_run(&mut table, next_run, &keys);
            let mut carry = Some(next_run);
            next_run += 1;
            let mut level = 0;
            while let Some(run) = carry.take() {
                if levels.len() == level {
                    levels.push(Vec::new());
                }
                levels[level].push(run);
                if layout == Layout::Merged && levels[level].len() == FANOUT {
                    let runs = std::mem::take(&mut levels[level]);
                    merge_runs(&mut table, &runs, next_run);
                    carry = Some(next_run);
                    next_run += 1;
                    level += 1;
                }
            }
        } else {
            let mut table = txn.open_table(ENTRIES).unwrap();
            for (k, v) in &keys {
                table.insert(k, *v).unwrap();
            }
        }
        txn.commit().unwrap();
        if n * batch >= all.len() * 3 / 4 {
            last_quarter += t.elapsed();
        }
    }
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::Immediate).unwrap();
    txn.commit().unwrap();
    let runs = levels.into_iter().flatten().collect();
    (start.elapsed(), last_quarter, runs)
}

/// Looks up stored keys, probing every one of `runs` until the key is
/// found for the run layouts (keys are unique, so the order of the probes
/// does not change the answer); returns the time per lookup and how many were found with
/// the value they were stored with.
fn lookups(db: &Database, all: &[[u8; KEY]], layout: Layout, runs: &[u64]) -> (Duration, usize) {
    let probes = 10_000.min(all.len());
    let step = all.len() / probes;
    let txn = db.begin_read().unwrap();
    let start = Instant::now();
    let mut found = 0;
    for i in (0..probes).map(|p| p * step) {
        let k = &all[i];
        let value = if matches!(layout, Layout::Runs | Layout::Merged) {
            let table = txn.open_table(RUNS).unwrap();
            runs.iter().find_map(|run| {
                let mut hi = run.to_be_bytes().to_vec();
                hi.extend_from_slice(k);
                let lo = run.to_be_bytes().to_vec();
                let (_, block) = table
                    .range(lo.as_slice()..=hi.as_slice())
                    .unwrap()
                    .next_back()?
                    .unwrap();
                block
                    .value()
                    .chunks(KEY + 8)
                    .find(|e| &e[..KEY] == k)
                    .map(|e| u64::from_le_bytes(e[KEY..].try_into().unwrap()))
            })
        } else {
            let table = txn.open_table(ENTRIES).unwrap();
            table.get(k).unwrap().map(|v| v.value())
        };
        found += usize::from(value == Some(i as u64));
    }
    (start.elapsed() / probes as u32, found)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let batch: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(16_384);
    let all = keys(n);
    for (name, layout) in [
        ("per key, random", Layout::Random),
        ("per key, sorted", Layout::Sorted),
        ("sorted runs", Layout::Runs),
        ("merged runs", Layout::Merged),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .create(dir.path().join("patterns.redb"))
            .unwrap();
        let (total, last, runs) = load(&db, &all, batch, layout);
        let (per_lookup, found) = lookups(&db, &all, layout, &runs);
        let last_keys = n - (n * 3 / 4).div_ceil(batch) * batch;
        println!(
            "{name:<16} {:>9.0} keys/s, last quarter {:>9.0} keys/s; lookup {:>8.1} us ({found} found, {} runs)",
            n as f64 / total.as_secs_f64(),
            last_keys as f64 / last.as_secs_f64(),
            per_lookup.as_secs_f64() * 1e6,
            runs.len(),
        );
    }
}

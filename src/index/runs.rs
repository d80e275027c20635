//! The session sort index kept as sorted runs: a small log-structured
//! merge tree inside one redb table.
//!
//! A session has one sort key per sort kind (five), and a new session
//! writes all five at once. One redb entry per key made them a fifth of the
//! indexing thread's instructions: redb spends about as much on an insert
//! whatever the key, so what costs is the number of entries written, not
//! their order. Here a group's changes to one sort partition (one project
//! and one sort kind) are written as one *run*: a sorted list of changes
//! (a key with its session, or a tombstone that deletes the key) cut into
//! blocks of about one redb page, one entry per block. Reads merge the runs
//! of a partition, the youngest change to a key winning; every `FANOUT`
//! runs of one level are merged into one run of the next level, so a
//! partition holds a few runs per level and a level-`n` run about
//! `FANOUT^n` groups' worth of changes. Tombstones are dropped by a merge
//! whose output is the partition's oldest run.
//!
//! Keys of `session_runs` (the partition is the first five bytes of the
//! old `session_order` key: project number, 4 B BE, and sort kind, 1 B):
//!
//! - run header: partition ‖ `0` ‖ level (1 B) ‖ sequence (8 B BE) ->
//!   number of changes in the run (`u64` LE);
//! - block: partition ‖ `1` ‖ level ‖ sequence ‖ first key of the block ->
//!   the block's changes, in key order.
//!
//! A key (called a *tail* here) is the rest of the old `session_order`
//! key: sort value (8 B BE) ‖ session id bytes. Sequences are unique per
//! index (a counter in `meta`), so a younger run has a larger sequence
//! than any older run of its level, and every run of level `n` is younger
//! than every run of level `n + 1` (a merge empties its level into a new
//! run one level down).

use std::ops::{Bound, RangeBounds};

use redb::{ReadableTable, Table, TableDefinition};

use super::increment;
use crate::error::{Error, Result};

/// The session sort index (see the module documentation).
pub(crate) const SESSION_RUNS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("session_runs");

/// Meta key: the sequence the next run takes.
pub(crate) const META_NEXT_RUN: &str = "next_run";

/// Runs of one level that are merged into one of the next.
pub(crate) const FANOUT: usize = 8;

/// A block holds at most this many changes.
const BLOCK_ENTRIES: usize = 128;

/// A block is cut before a change that would make its entry (key and
/// value) larger than this: one entry then fills one 4 KiB redb leaf page
/// (redb's leaf header and the entry's two end offsets take 12 bytes;
/// the rest is slack). Blocks cut at a fixed 2 KiB made entries just over
/// half a page, one to a leaf, and left half of every page empty.
const BLOCK_ENTRY_BYTES: usize = 4096 - 32;

const HEADER: u8 = 0;
const BLOCK: u8 = 1;

/// Bytes of a partition: project number (4) and sort kind (1).
pub(crate) const PARTITION: usize = 5;

type Partition = [u8; PARTITION];

/// Sort-index changes of one transaction, held until [`OrderWrites::flush`]
/// writes them as runs. A key is partition (project, kind) ‖ sort value ‖
/// session id bytes; a later change to a key replaces an earlier one.
///
/// Held as fixed-width numbers and the session id's place in one buffer,
/// not as one allocated key per change: a group makes five or more changes
/// per session it touches, and allocating, comparing and freeing those
/// keys was about 3% of the replay's applying thread.
#[derive(Debug, Default)]
pub(crate) struct OrderWrites {
    /// The changes, in the order made (sorted at the flush).
    changes: Vec<Held>,
    /// The session ids of the changes, one for each stretch of consecutive
    /// changes to one session: where its bytes lie in `ids`.
    spans: Vec<(usize, usize)>,
    /// Session id bytes `spans` point into.
    ids: Vec<u8>,
    /// Tests: sort by [`SortKey`] even where one `u128` would do.
    #[cfg(test)]
    unpacked: bool,
}

/// One held change: its partition, sort value and session id, and the
/// session or a tombstone (`None`).
#[derive(Debug, Clone, Copy)]
struct Held {
    /// Project (bits 8 to 39) and sort kind (bits 0 to 7): ordered as the
    /// partition's bytes.
    part: u64,
    value: u64,
    /// The session id: its place in `OrderWrites::spans`.
    span: usize,
    change: Option<u64>,
}

/// A held change's place in the sorted order: by partition, sort value
/// and session id (its rank among the transaction's session ids in byte
/// order), then by the order made (`rank_seq` holds the rank above the
/// change's position). Comparing three numbers costs less than comparing
/// the keys' bytes, and the sort moves 24 bytes instead of a whole change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    part: u64,
    value: u64,
    rank_seq: u64,
}

/// The partition of [`Held::part`]: project (4 B BE) ‖ kind.
fn partition_bytes(part: u64) -> Partition {
    let b = part.to_be_bytes();
    [b[3], b[4], b[5], b[6], b[7]]
}

/// The first eight bytes of `id` as a number ([`super::leading_bytes`]).
fn id_prefix(id: &[u8]) -> u64 {
    u64::from_be_bytes(super::leading_bytes(id))
}

/// The rank of each of `spans`' ids (bytes in `ids`) among them in byte
/// order, equal ids ranked alike: the ranks order the ids as their bytes do.
///
/// Sorted eight bytes at a time, as numbers (see [`id_prefix`]) with how
/// many of the eight an id holds (nine: more follow), each run of ids
/// alike so far then by its next eight: session ids often share a prefix
/// longer than eight bytes, which a comparison of whole ids would read
/// again at every step of the sort.
fn rank_ids(spans: &[(usize, usize)], ids: &[u8]) -> Vec<u64> {
    let id = |i: usize| {
        spans
            .get(i)
            .and_then(|&(s, e)| ids.get(s..e))
            .unwrap_or(&[])
    };
    // (next eight bytes, how many of them the id holds, the id's place).
    let mut by: Vec<(u64, usize, usize)> = (0..spans.len()).map(|i| (0, 0, i)).collect();
    // Ranges of `by` alike in their first `depth` bytes, to sort further.
    let mut todo = vec![(0, by.len(), 0)];
    while let Some((lo, hi, depth)) = todo.pop() {
        let Some(run) = by.get_mut(lo..hi) else {
            continue;
        };
        for e in run.iter_mut() {
            let rest = id(e.2).get(depth..).unwrap_or(&[]);
            *e = (id_prefix(rest), rest.len().min(9), e.2);
        }
        run.sort_unstable_by_key(|e| (e.0, e.1));
        let mut at = lo;
        for alike in run.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
            if alike.len() > 1 && alike.first().is_some_and(|e| e.1 == 9) {
                todo.push((at, at + alike.len(), depth + 8));
            }
            at += alike.len();
        }
    }
    let mut ranks = vec![0u64; spans.len()];
    let mut rank = 0u64;
    let mut last: Option<usize> = None;
    for &(_, _, i) in &by {
        if last.is_some_and(|l| id(l) != id(i)) {
            rank += 1;
        }
        if let Some(r) = ranks.get_mut(i) {
            *r = rank;
        }
        last = Some(i);
    }
    ranks
}

/// Bits of a packed sort key's rank and position each (see [`latest_changes`]).
const PACKED_BITS: u32 = 24;

/// The positions of the last change to each key among `changes` (their
/// session ids in `spans`, bytes in `ids`), in key order.
///
/// The changes are sorted by key, then by the order made. Where it fits,
/// as it does short of 2^24 changes and 256 projects, a change's place
/// is one `u128`: project rank (8 bits) ‖ kind ‖ sort value ‖ session id
/// rank (24 bits) ‖ position (24 bits), cheaper to compare and move than
/// a [`SortKey`] (`packed` false: always a [`SortKey`]).
fn latest_changes(
    changes: &[Held],
    spans: &[(usize, usize)],
    ids: &[u8],
    packed: bool,
) -> Result<Vec<usize>> {
    let ranks = rank_ids(spans, ids);
    let mut projects: Vec<u64> = Vec::new();
    if packed {
        for h in changes {
            if projects.last() != Some(&(h.part >> 8)) {
                projects.push(h.part >> 8);
            }
        }
        projects.sort_unstable();
        projects.dedup();
    }
    let rank = |h: &Held| ranks.get(h.span).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(changes.len());
    if packed && changes.len() <= 1 << PACKED_BITS && projects.len() <= 256 {
        const MASK: u128 = (1 << PACKED_BITS) - 1;
        let mut last: Option<(u64, u128)> = None;
        let mut keys: Vec<u128> = Vec::with_capacity(changes.len());
        for (h, seq) in changes.iter().zip(0u128..) {
            let project = h.part >> 8;
            let p = match last {
                Some((lp, r)) if lp == project => r,
                _ => {
                    let r = projects.partition_point(|&q| q < project) as u128;
                    last = Some((project, r));
                    r
                }
            };
            keys.push(
                (p << 8 | u128::from(h.part & 0xff)) << 112
                    | u128::from(h.value) << 48
                    | u128::from(rank(h)) << PACKED_BITS
                    | seq,
            );
        }
        // Every position differs, so an unstable sort gives one order, the
        // last change to a key last.
        keys.sort_unstable();
        for (at, k) in keys.iter().enumerate() {
            if keys
                .get(at + 1)
                .is_none_or(|n| n >> PACKED_BITS != k >> PACKED_BITS)
            {
                out.push(usize::try_from(k & MASK).unwrap_or(usize::MAX));
            }
        }
        return Ok(out);
    }
    // A rank and a position each below the number of changes: both fit
    // in `bits` bits, so in one `u64` (short of 2^32 changes).
    let bits = usize::BITS - changes.len().leading_zeros();
    if bits > 32 {
        return Err(corrupt("over 2^32 changes in one transaction"));
    }
    let mut keys: Vec<SortKey> = changes
        .iter()
        .zip(0u64..)
        .map(|(h, seq)| SortKey {
            part: h.part,
            value: h.value,
            rank_seq: rank(h) << bits | seq,
        })
        .collect();
    keys.sort_unstable();
    let same_key = |a: &SortKey, b: &SortKey| {
        a.part == b.part && a.value == b.value && a.rank_seq >> bits == b.rank_seq >> bits
    };
    for (at, k) in keys.iter().enumerate() {
        if keys.get(at + 1).is_none_or(|n| !same_key(k, n)) {
            out.push(usize::try_from(k.rank_seq & ((1 << bits) - 1)).unwrap_or(usize::MAX));
        }
    }
    Ok(out)
}

impl OrderWrites {
    /// Sets key (`project`, `kind`, `value`, `session_id`) to `session`.
    pub(crate) fn insert(
        &mut self,
        project: u32,
        kind: u8,
        value: u64,
        session_id: &[u8],
        session: u64,
    ) {
        self.push(project, kind, value, session_id, Some(session));
    }

    /// Deletes key (`project`, `kind`, `value`, `session_id`).
    pub(crate) fn remove(&mut self, project: u32, kind: u8, value: u64, session_id: &[u8]) {
        self.push(project, kind, value, session_id, None);
    }

    fn push(&mut self, project: u32, kind: u8, value: u64, session_id: &[u8], change: Option<u64>) {
        let same = self
            .spans
            .last()
            .is_some_and(|&(s, e)| self.ids.get(s..e) == Some(session_id));
        if !same {
            let start = self.ids.len();
            self.ids.extend_from_slice(session_id);
            self.spans.push((start, self.ids.len()));
        }
        self.changes.push(Held {
            part: u64::from(project) << 8 | u64::from(kind),
            value,
            span: self.spans.len().saturating_sub(1),
            change,
        });
    }

    /// Writes the held changes as one new run per partition, merging runs
    /// where a level fills up, and forgets them.
    pub(crate) fn flush(
        &mut self,
        runs: &mut Table<'_, &'static [u8], &'static [u8]>,
        meta: &mut Table<'_, &'static str, u64>,
    ) -> Result<()> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.changes);
        let spans = std::mem::take(&mut self.spans);
        let ids = std::mem::take(&mut self.ids);
        #[cfg(test)]
        let packed = !self.unpacked;
        #[cfg(not(test))]
        let packed = true;
        let latest = latest_changes(&changes, &spans, &ids, packed)?;
        let mut next = meta.get(META_NEXT_RUN)?.map_or(0, |v| v.value());
        // One run per partition: its changes are consecutive.
        let part = |seq: &usize| changes.get(*seq).map_or(0, |h| h.part);
        for same in latest.chunk_by(|a, b| part(a) == part(b)) {
            let Some(first) = same.first() else {
                continue;
            };
            let p = partition_bytes(part(first));
            let mut w = RunWriter::new(
                p,
                RunId {
                    level: 0,
                    seq: take_seq(&mut next)?,
                },
            );
            for &seq in same {
                let h = changes
                    .get(seq)
                    .ok_or_else(|| corrupt("a held change lost"))?;
                let id = spans
                    .get(h.span)
                    .and_then(|&(s, e)| ids.get(s..e))
                    .unwrap_or(&[]);
                w.push(runs, &h.value.to_be_bytes(), id, h.change)?;
            }
            w.finish(runs)?;
            merge_full_levels(runs, p, &mut next)?;
        }
        meta.insert(META_NEXT_RUN, next)?;
        Ok(())
    }
}

/// Merges the full levels of partition `p`, from level 0 down: every
/// [`FANOUT`] runs of one level become one run of the next.
fn merge_full_levels(
    runs: &mut Table<'_, &'static [u8], &'static [u8]>,
    p: Partition,
    next: &mut u64,
) -> Result<()> {
    let mut level = 0u8;
    loop {
        let listed = list_runs(runs, p)?;
        let at_level: Vec<RunId> = listed
            .iter()
            .copied()
            .filter(|r| r.level == level)
            .collect();
        if at_level.len() < FANOUT {
            return Ok(());
        }
        let Some(down) = level.checked_add(1) else {
            return Ok(());
        };
        // Tombstones may go when nothing older than the merged run is left.
        let oldest = !listed.iter().any(|r| r.level >= down);
        merge(
            runs,
            p,
            &at_level,
            RunId {
                level: down,
                seq: take_seq(next)?,
            },
            oldest,
        )?;
        // The merge took every run of the level, and the merged run is a
        // level down: the level's headers and blocks go as two ranges, not
        // as a header and a range per run (a header removed alone cost
        // about 37,000 instructions, a range about 43,000).
        delete_level(runs, p, level)?;
        level = down;
    }
}

/// Merges runs `from` (youngest first) of partition `p` into one new run
/// `into`; the caller deletes them. The merge streams: the inputs are read
/// a block at a time and the output written a block at a time.
fn merge(
    runs: &mut Table<'_, &'static [u8], &'static [u8]>,
    p: Partition,
    from: &[RunId],
    into: RunId,
    drop_tombstones: bool,
) -> Result<()> {
    let mut merged = Merged::new(p, from, Bound::Unbounded, Bound::Unbounded, false);
    let mut w = RunWriter::new(p, into);
    while let Some((tail, change, encoded)) = merged.next_encoded(runs)? {
        if change.is_some() || !drop_tombstones {
            w.push_encoded(runs, tail, encoded)?;
        }
    }
    w.finish(runs)
}

/// Merges every partition's runs into one run without tombstones (a full
/// compaction of the sort index); partitions already so are left alone.
pub(crate) fn merge_all(
    runs: &mut Table<'_, &'static [u8], &'static [u8]>,
    meta: &mut Table<'_, &'static str, u64>,
) -> Result<()> {
    let mut next = meta.get(META_NEXT_RUN)?.map_or(0, |v| v.value());
    let mut from: Vec<u8> = Vec::new();
    loop {
        let found = runs.range::<&[u8]>(from.as_slice()..)?.next().transpose()?;
        let Some(p) = found.map(|(k, _)| partition_of(k.value())).transpose()? else {
            break;
        };
        let listed = list_runs(runs, p)?;
        let tombstones = {
            let mut all = Merged::new(p, &listed, Bound::Unbounded, Bound::Unbounded, false);
            let mut any = false;
            while let Some((_, change)) = all.next_change(runs)? {
                if change.is_none() {
                    any = true;
                    break;
                }
            }
            any
        };
        if listed.len() > 1 || tombstones {
            let level = listed.iter().map(|r| r.level).max().unwrap_or(0);
            merge(
                runs,
                p,
                &listed,
                RunId {
                    level,
                    seq: take_seq(&mut next)?,
                },
                true,
            )?;
            for r in &listed {
                delete_run(runs, p, *r)?;
            }
        }
        from = p.to_vec();
        if !increment(&mut from) {
            break;
        }
    }
    meta.insert(META_NEXT_RUN, next)?;
    Ok(())
}

fn partition_of(key: &[u8]) -> Result<Partition> {
    key.get(..PARTITION)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("a key shorter than its partition"))
}

fn take_seq(next: &mut u64) -> Result<u64> {
    let seq = *next;
    *next = next
        .checked_add(1)
        .ok_or_else(|| corrupt("run sequence exhausted"))?;
    Ok(seq)
}

/// A run's identity: its level and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RunId {
    level: u8,
    seq: u64,
}

impl RunId {
    /// partition ‖ `kind` ‖ level ‖ sequence.
    fn prefix(self, p: Partition, kind: u8) -> Vec<u8> {
        let mut k = Vec::with_capacity(KEY_PREFIX);
        k.extend_from_slice(&p);
        k.push(kind);
        k.push(self.level);
        k.extend_from_slice(&self.seq.to_be_bytes());
        k
    }
}

/// The runs of partition `p`, youngest first.
fn list_runs<T: ReadableTable<&'static [u8], &'static [u8]>>(
    runs: &T,
    p: Partition,
) -> Result<Vec<RunId>> {
    let mut lo = p.to_vec();
    lo.push(HEADER);
    let mut hi = p.to_vec();
    hi.push(BLOCK);
    let mut out = Vec::new();
    for item in runs.range::<&[u8]>(lo.as_slice()..hi.as_slice())? {
        let (k, _) = item?;
        let k = k.value();
        let level = *k
            .get(PARTITION + 1)
            .ok_or_else(|| corrupt("a run header without its level"))?;
        let seq = k
            .get(PARTITION + 2..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt("a run header without its sequence"))?;
        out.push(RunId { level, seq });
    }
    // Younger first: lower levels, then larger sequences.
    out.sort_unstable_by_key(|r| (r.level, std::cmp::Reverse(r.seq)));
    Ok(out)
}

/// Bytes of finished blocks (keys and values) a [`RunWriter`] holds
/// before it writes them: a bound on its memory in a large merge.
const HELD_BLOCK_BYTES: usize = 1 << 20;

/// Tests: how a [`RunWriter`] writes its blocks, per thread.
#[cfg(test)]
mod test_writes {
    use std::cell::Cell;

    thread_local! {
        /// Each block inserted alone as it ends (as before blocks were
        /// held and written through a cursor).
        pub(super) static ONE_BY_ONE: Cell<bool> = const { Cell::new(false) };
        /// Held bytes that make a writer write its held blocks, in place
        /// of [`super::HELD_BLOCK_BYTES`].
        pub(super) static HELD_LIMIT: Cell<Option<usize>> = const { Cell::new(None) };
    }
}

/// Writes one run, a block at a time, from changes given in key order.
///
/// Finished blocks are held and written together through one redb cursor
/// (at the latest by [`Self::finish`]): a run's block keys are consecutive
/// in the table (no other run shares its level and sequence), so they go
/// into one gap in ascending order, and redb builds their leaves and the
/// branch above them once per batch instead of once per block (a block
/// inserted alone cost about 42,000 instructions).
struct RunWriter {
    p: Partition,
    id: RunId,
    /// The current block's key: partition ‖ `1` ‖ level ‖ sequence, then
    /// (once the block holds a change) its first tail.
    key: Vec<u8>,
    block: Vec<u8>,
    in_block: usize,
    count: u64,
    /// Finished blocks not yet written: each one's key then its bytes.
    held: Vec<u8>,
    /// Where each held block's key and bytes end in `held`.
    held_ends: Vec<(usize, usize)>,
}

impl RunWriter {
    fn new(p: Partition, id: RunId) -> RunWriter {
        RunWriter {
            p,
            id,
            key: id.prefix(p, BLOCK),
            block: Vec::new(),
            in_block: 0,
            count: 0,
            held: Vec::new(),
            held_ends: Vec::new(),
        }
    }

    /// Adds a change to the tail `head` ‖ `rest`.
    fn push(
        &mut self,
        runs: &mut Table<'_, &'static [u8], &'static [u8]>,
        head: &[u8],
        rest: &[u8],
        change: Option<u64>,
    ) -> Result<()> {
        let len = head.len() + rest.len();
        self.begin_entry(runs, change_len(len, change), head, rest)?;
        encode_change(&mut self.block, head, rest, change)
    }

    /// [`Self::push`] for a change already encoded, as a merge reads it
    /// from a block: a change to `tail` encoded as `encoded`.
    fn push_encoded(
        &mut self,
        runs: &mut Table<'_, &'static [u8], &'static [u8]>,
        tail: &[u8],
        encoded: &[u8],
    ) -> Result<()> {
        self.begin_entry(runs, encoded.len(), tail, &[])?;
        self.block.extend_from_slice(encoded);
        Ok(())
    }

    /// Makes room for an entry of `entry_bytes` encoded bytes to the tail
    /// `head` ‖ `rest` (writing the block first when the entry would not
    /// fit in it; a new block's key holds its first tail) and counts it.
    fn begin_entry(
        &mut self,
        runs: &mut Table<'_, &'static [u8], &'static [u8]>,
        entry_bytes: usize,
        head: &[u8],
        rest: &[u8],
    ) -> Result<()> {
        if self.in_block > 0 {
            let entry = self.key.len() + self.block.len() + entry_bytes;
            if self.in_block == BLOCK_ENTRIES || entry > BLOCK_ENTRY_BYTES {
                self.put_block(runs)?;
            }
        }
        if self.in_block == 0 {
            self.key.truncate(KEY_PREFIX);
            self.key.extend_from_slice(head);
            self.key.extend_from_slice(rest);
        }
        self.in_block += 1;
        self.count += 1;
        Ok(())
    }

    /// Ends the current block: holds it, and writes the held blocks once
    /// they are [`HELD_BLOCK_BYTES`] or more.
    fn put_block(&mut self, runs: &mut Table<'_, &'static [u8], &'static [u8]>) -> Result<()> {
        #[cfg(test)]
        if test_writes::ONE_BY_ONE.get() && self.in_block > 0 {
            runs.insert(self.key.as_slice(), self.block.as_slice())?;
            self.block.clear();
            self.in_block = 0;
            return Ok(());
        }
        if self.in_block > 0 {
            self.held.extend_from_slice(&self.key);
            let key_end = self.held.len();
            self.held.extend_from_slice(&self.block);
            self.held_ends.push((key_end, self.held.len()));
            #[cfg(test)]
            let limit = test_writes::HELD_LIMIT.get().unwrap_or(HELD_BLOCK_BYTES);
            #[cfg(not(test))]
            let limit = HELD_BLOCK_BYTES;
            if self.held.len() >= limit {
                self.write_held(runs)?;
            }
        }
        self.block.clear();
        self.in_block = 0;
        Ok(())
    }

    /// Writes the held blocks, in key order, through one cursor at the gap
    /// where the first of them belongs.
    fn write_held(&mut self, runs: &mut Table<'_, &'static [u8], &'static [u8]>) -> Result<()> {
        let Some(&(first_end, _)) = self.held_ends.first() else {
            return Ok(());
        };
        let first = self
            .held
            .get(..first_end)
            .ok_or_else(|| corrupt("a held block lost"))?;
        let mut cursor = runs.lower_bound_mut(Bound::Included(first))?;
        let mut at = 0;
        for &(key_end, end) in &self.held_ends {
            let (Some(key), Some(block)) =
                (self.held.get(at..key_end), self.held.get(key_end..end))
            else {
                return Err(corrupt("a held block lost"));
            };
            cursor.insert_before(key, block)?;
            at = end;
        }
        cursor.close()?;
        self.held.clear();
        self.held_ends.clear();
        Ok(())
    }

    /// Writes the last block and the run's header; a run without changes
    /// is not written at all.
    fn finish(mut self, runs: &mut Table<'_, &'static [u8], &'static [u8]>) -> Result<()> {
        self.put_block(runs)?;
        self.write_held(runs)?;
        if self.count > 0 {
            let header = self.id.prefix(self.p, HEADER);
            runs.insert(header.as_slice(), self.count.to_le_bytes().as_slice())?;
        }
        Ok(())
    }
}

fn delete_run(
    runs: &mut Table<'_, &'static [u8], &'static [u8]>,
    p: Partition,
    id: RunId,
) -> Result<()> {
    runs.remove(id.prefix(p, HEADER).as_slice())?;
    // Every block key of the run starts with this prefix.
    delete_prefixed(runs, id.prefix(p, BLOCK))
}

/// Deletes every entry whose key starts with `lo` (raising `lo` bounds
/// them; a prefix of only `0xff` bytes has no bound above).
fn delete_prefixed(runs: &mut Table<'_, &'static [u8], &'static [u8]>, lo: Vec<u8>) -> Result<()> {
    let mut hi = lo.clone();
    if increment(&mut hi) {
        runs.retain_in::<&[u8], _>(lo.as_slice()..hi.as_slice(), |_, _| false)?;
    } else {
        runs.retain_in::<&[u8], _>(lo.as_slice().., |_, _| false)?;
    }
    Ok(())
}

/// Deletes every run of `level` in partition `p`: the headers (partition
/// ‖ `0` ‖ level ‖ ...) and the blocks (partition ‖ `1` ‖ level ‖ ...).
fn delete_level(
    runs: &mut Table<'_, &'static [u8], &'static [u8]>,
    p: Partition,
    level: u8,
) -> Result<()> {
    for kind in [HEADER, BLOCK] {
        let mut lo = p.to_vec();
        lo.extend_from_slice(&[kind, level]);
        delete_prefixed(runs, lo)?;
    }
    Ok(())
}

/// Bytes of a block key before its first tail: partition, kind, level, sequence.
const KEY_PREFIX: usize = PARTITION + 10;

/// Bytes [`encode_change`] writes for a change to a tail of `len` bytes.
fn change_len(len: usize, change: Option<u64>) -> usize {
    4 + len + if change.is_some() { 9 } else { 1 }
}

/// Encodes one change to the tail `head` ‖ `rest`: tail length (u32 LE),
/// tail, then `1` and the session (u64 LE), or `0` for a tombstone.
fn encode_change(out: &mut Vec<u8>, head: &[u8], rest: &[u8], change: Option<u64>) -> Result<()> {
    let len =
        u32::try_from(head.len() + rest.len()).map_err(|_| corrupt("a sort key over 4 GiB"))?;
    out.reserve(change_len(head.len() + rest.len(), change));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(rest);
    match change {
        Some(session) => {
            out.push(1);
            out.extend_from_slice(&session.to_le_bytes());
        }
        None => out.push(0),
    }
    Ok(())
}

/// One change of a decoded block: where its tail lies in the block's
/// bytes, and the change.
type Item = (usize, usize, Option<u64>);

/// Parses a block into its changes, in stored order, into `out`
/// (emptied first).
fn decode_block(b: &[u8], out: &mut Vec<Item>) -> Result<()> {
    out.clear();
    let mut at = 0usize;
    let truncated = || corrupt("a truncated sort-index block");
    while at < b.len() {
        let len = b
            .get(at..at.saturating_add(4))
            .and_then(|l| <[u8; 4]>::try_from(l).ok())
            .map(u32::from_le_bytes)
            .ok_or_else(truncated)?;
        let start = at.saturating_add(4);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|e| *e < b.len())
            .ok_or_else(truncated)?;
        let (change, next) = match b.get(end) {
            Some(0) => (None, end + 1),
            Some(1) => {
                let s = b
                    .get(end + 1..end.saturating_add(9))
                    .and_then(|s| <[u8; 8]>::try_from(s).ok())
                    .map(u64::from_le_bytes)
                    .ok_or_else(truncated)?;
                (Some(s), end + 9)
            }
            _ => return Err(corrupt("a sort-index change of unknown kind")),
        };
        out.push((start, end, change));
        at = next;
    }
    Ok(())
}

fn corrupt(what: &str) -> Error {
    super::corrupted(format!("session sort index: {what}"))
}

/// Reads one run's changes within a range, a block at a time. Holds no
/// borrow of the table between calls: each block is found by a fresh
/// lookup from the last block's key, so a merge can write to the table
/// between reads.
struct RunCursor {
    /// partition ‖ `1` ‖ level ‖ sequence.
    prefix: Vec<u8>,
    descending: bool,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Key of the last block read; `None` before the first.
    last_block: Option<Vec<u8>>,
    /// The current block's bytes.
    block: Vec<u8>,
    /// Its changes in range, in reading order.
    items: Vec<Item>,
    /// The next of `items` to hand out.
    at: usize,
    done: bool,
}

impl RunCursor {
    fn in_range(&self, tail: &[u8]) -> bool {
        RangeBounds::<[u8]>::contains(&as_slices(&self.lo, &self.hi), tail)
    }

    /// True if `tail` lies beyond the range in reading order.
    fn past(&self, tail: &[u8]) -> bool {
        if self.descending {
            match &self.lo {
                Bound::Included(l) => tail < l.as_slice(),
                Bound::Excluded(l) => tail <= l.as_slice(),
                Bound::Unbounded => false,
            }
        } else {
            match &self.hi {
                Bound::Included(h) => tail > h.as_slice(),
                Bound::Excluded(h) => tail >= h.as_slice(),
                Bound::Unbounded => false,
            }
        }
    }

    /// The end of this run's blocks: `prefix` raised.
    fn prefix_end(&self) -> Option<Vec<u8>> {
        let mut e = self.prefix.clone();
        increment(&mut e).then_some(e)
    }

    fn with_tail(&self, tail: &[u8]) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(tail);
        k
    }

    /// Finds the next block in reading order and reads its key into
    /// `last_block` and its bytes into `block`; false if there is none.
    fn next_block<T: ReadableTable<&'static [u8], &'static [u8]>>(
        &mut self,
        runs: &T,
    ) -> Result<bool> {
        let end = self.prefix_end();
        let upper: Bound<Vec<u8>> = end.map_or(Bound::Unbounded, Bound::Excluded);
        let start = Bound::Included(self.prefix.clone());
        let found = match (self.last_block.take(), self.descending) {
            (Some(k), true) => {
                let hi = Bound::Excluded(k);
                runs.range::<&[u8]>(as_slices(&start, &hi))?
                    .next_back()
                    .transpose()?
            }
            (Some(k), false) => {
                let lo = Bound::Excluded(k);
                runs.range::<&[u8]>(as_slices(&lo, &upper))?
                    .next()
                    .transpose()?
            }
            // Descending, the first block is the last one starting at or
            // below the range's upper bound.
            (None, true) => {
                let hi = match &self.hi {
                    Bound::Included(h) | Bound::Excluded(h) => Bound::Included(self.with_tail(h)),
                    Bound::Unbounded => upper,
                };
                runs.range::<&[u8]>(as_slices(&start, &hi))?
                    .next_back()
                    .transpose()?
            }
            // Ascending, the block holding the lower bound is the last one
            // starting at or below it; without one, the run's first block.
            (None, false) => {
                let holding = match &self.lo {
                    Bound::Included(l) | Bound::Excluded(l) => {
                        let hi = Bound::Included(self.with_tail(l));
                        runs.range::<&[u8]>(as_slices(&start, &hi))?
                            .next_back()
                            .transpose()?
                    }
                    Bound::Unbounded => None,
                };
                match holding {
                    Some(found) => Some(found),
                    None => runs
                        .range::<&[u8]>(as_slices(&start, &upper))?
                        .next()
                        .transpose()?,
                }
            }
        };
        let Some((k, v)) = found else {
            return Ok(false);
        };
        self.last_block = Some(k.value().to_vec());
        self.block.clear();
        self.block.extend_from_slice(v.value());
        Ok(true)
    }

    /// Loads blocks until a change in range is at hand or the run ends.
    fn fill<T: ReadableTable<&'static [u8], &'static [u8]>>(&mut self, runs: &T) -> Result<()> {
        while self.at >= self.items.len() && !self.done {
            self.items.clear();
            self.at = 0;
            if !self.next_block(runs)? {
                self.done = true;
                break;
            }
            let mut items = std::mem::take(&mut self.items);
            let decoded = decode_block(&self.block, &mut items);
            self.items = items;
            decoded?;
            // Ascending, blocks come in key order: one starting past the
            // range ends it. Descending, in reverse: one ending below it does.
            let edge = if self.descending {
                self.items.last()
            } else {
                self.items.first()
            };
            if edge.is_some_and(|&(s, e, _)| self.past(self.block.get(s..e).unwrap_or(&[]))) {
                self.items.clear();
                self.done = true;
                break;
            }
            if self.descending {
                self.items.reverse();
            }
            if !matches!((&self.lo, &self.hi), (Bound::Unbounded, Bound::Unbounded)) {
                let mut items = std::mem::take(&mut self.items);
                items.retain(|&(s, e, _)| self.in_range(self.block.get(s..e).unwrap_or(&[])));
                self.items = items;
            }
        }
        Ok(())
    }

    /// The next change in range (after [`Self::fill`]), without taking it.
    fn head(&self) -> Option<(&[u8], Option<u64>)> {
        let &(s, e, change) = self.items.get(self.at)?;
        Some((self.block.get(s..e)?, change))
    }

    /// [`Self::head`], with the change as encoded in the block.
    fn head_encoded(&self) -> Option<Encoded<'_>> {
        let item = self.items.get(self.at)?;
        let (s, e, change) = *item;
        let (es, ee) = encoded_range(item)?;
        Some((self.block.get(s..e)?, change, self.block.get(es..ee)?))
    }
}

/// A change's tail, the change, and its whole encoding in its block.
type Encoded<'a> = (&'a [u8], Option<u64>, &'a [u8]);

/// Where a decoded change's whole encoding (see [`encode_change`]) lies in
/// its block.
fn encoded_range(&(s, e, change): &Item) -> Option<(usize, usize)> {
    Some((s.checked_sub(4)?, e.checked_add(change_len(0, change) - 4)?))
}

/// A cursor of [`Merged`] with a change at hand, and the sort value that
/// leads that change's tail (`None` for a tail shorter than one, which only
/// a damaged block holds).
#[derive(Debug, Clone, Copy)]
struct Slot {
    value: Option<u64>,
    cursor: usize,
}

/// The sort value a tail starts with (see [`Slot`]).
fn sort_value(tail: &[u8]) -> Option<u64> {
    tail.first_chunk::<8>().map(|v| u64::from_be_bytes(*v))
}

/// Two heads in byte order of their tails (none first), the sort value
/// that leads every tail compared as one number: most heads differ there,
/// and a merge compares a few per change.
fn cmp_heads(a: Option<&[u8]>, b: Option<&[u8]>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (a.split_first_chunk::<8>(), b.split_first_chunk::<8>()) {
            (Some((va, ra)), Some((vb, rb))) => u64::from_be_bytes(*va)
                .cmp(&u64::from_be_bytes(*vb))
                .then_with(|| ra.cmp(rb)),
            _ => a.cmp(b),
        },
        _ => a.cmp(&b),
    }
}

/// Owned bounds, borrowed.
fn as_slices<'a>(
    lo: &'a Bound<Vec<u8>>,
    hi: &'a Bound<Vec<u8>>,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    (
        lo.as_ref().map(Vec::as_slice),
        hi.as_ref().map(Vec::as_slice),
    )
}

/// The merged view of some runs of one partition within a range of
/// tails: each key once, its youngest change deciding.
pub(crate) struct Merged {
    /// Youngest first.
    cursors: Vec<RunCursor>,
    descending: bool,
    /// Cursors with a change at hand, in the order their changes come,
    /// each with its head's sort value (see [`Slot`]).
    order: Vec<Slot>,
    /// Whether `order` has been filled.
    started: bool,
    /// How many of `order`'s first cursors hold the change last handed
    /// out: the next call moves them past it first.
    handed: usize,
    /// Room for the cursors one step passes (kept to save an allocation).
    passed: Vec<Slot>,
}

impl Merged {
    fn new(
        p: Partition,
        runs: &[RunId],
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
        descending: bool,
    ) -> Merged {
        let cursors = runs
            .iter()
            .map(|r| RunCursor {
                prefix: r.prefix(p, BLOCK),
                descending,
                lo: lo.map(<[u8]>::to_vec),
                hi: hi.map(<[u8]>::to_vec),
                last_block: None,
                block: Vec::new(),
                items: Vec::new(),
                at: 0,
                done: false,
            })
            .collect();
        Merged {
            cursors,
            descending,
            order: Vec::new(),
            started: false,
            handed: 0,
            passed: Vec::new(),
        }
    }

    /// Whether slot `a`'s head comes before slot `b`'s in reading order;
    /// on equal heads the younger (lower index) comes first. Heads whose
    /// sort values differ are ordered by them alone, without their tails.
    fn before(&self, a: Slot, b: Slot) -> bool {
        let by_key = match (a.value, b.value) {
            (Some(va), Some(vb)) if va != vb => {
                if self.descending {
                    vb.cmp(&va)
                } else {
                    va.cmp(&vb)
                }
            }
            _ => {
                let head = |i: usize| {
                    self.cursors
                        .get(i)
                        .and_then(RunCursor::head)
                        .map(|(t, _)| t)
                };
                let (ta, tb) = (head(a.cursor), head(b.cursor));
                if self.descending {
                    cmp_heads(tb, ta)
                } else {
                    cmp_heads(ta, tb)
                }
            }
        };
        by_key.then(a.cursor.cmp(&b.cursor)).is_lt()
    }

    /// Cursor `i`'s slot for its head, if it has one.
    fn slot(&self, i: usize) -> Option<Slot> {
        let (tail, _) = self.cursors.get(i)?.head()?;
        Some(Slot {
            value: sort_value(tail),
            cursor: i,
        })
    }

    /// Files cursor `i` into `order` by its head, if it has one.
    fn file<T: ReadableTable<&'static [u8], &'static [u8]>>(
        &mut self,
        runs: &T,
        i: usize,
    ) -> Result<()> {
        let Some(cursor) = self.cursors.get_mut(i) else {
            return Ok(());
        };
        cursor.fill(runs)?;
        if let Some(slot) = self.slot(i) {
            let at = self.order.partition_point(|&j| self.before(j, slot));
            self.order.insert(at, slot);
        }
        Ok(())
    }

    /// Moves the cursors holding the change last handed out past it.
    fn pass<T: ReadableTable<&'static [u8], &'static [u8]>>(&mut self, runs: &T) -> Result<()> {
        let n = std::mem::take(&mut self.handed);
        if n == 1 {
            // One cursor, the first: its next head most often comes first
            // again, or near the front, so it is refiled in place.
            let Some(&first) = self.order.first() else {
                return Ok(());
            };
            if let Some(cursor) = self.cursors.get_mut(first.cursor) {
                cursor.at += 1;
                cursor.fill(runs)?;
            }
            let Some(slot) = self.slot(first.cursor) else {
                self.order.remove(0);
                return Ok(());
            };
            let rest = self.order.get(1..).unwrap_or(&[]);
            let at = match rest.first() {
                Some(&j) if self.before(j, slot) => {
                    1 + rest
                        .get(1..)
                        .unwrap_or(&[])
                        .partition_point(|&j| self.before(j, slot))
                }
                _ => 0,
            };
            if at > 0 {
                self.order.copy_within(1..=at, 0);
            }
            if let Some(s) = self.order.get_mut(at) {
                *s = slot;
            }
            return Ok(());
        }
        let mut passed = std::mem::take(&mut self.passed);
        passed.clear();
        passed.extend(self.order.drain(..n.min(self.order.len())));
        for &j in &passed {
            if let Some(cursor) = self.cursors.get_mut(j.cursor) {
                cursor.at += 1;
            }
            self.file(runs, j.cursor)?;
        }
        self.passed = passed;
        Ok(())
    }

    /// The next key and its youngest change (a tombstone included). The
    /// tail is borrowed until the next call.
    fn next_change<T: ReadableTable<&'static [u8], &'static [u8]>>(
        &mut self,
        runs: &T,
    ) -> Result<Option<(&[u8], Option<u64>)>> {
        Ok(self.next_encoded(runs)?.map(|(t, c, _)| (t, c)))
    }

    /// [`Self::next_change`], with the change as encoded in its block.
    fn next_encoded<T: ReadableTable<&'static [u8], &'static [u8]>>(
        &mut self,
        runs: &T,
    ) -> Result<Option<Encoded<'_>>> {
        if self.started {
            self.pass(runs)?;
        } else {
            self.started = true;
            for i in 0..self.cursors.len() {
                self.file(runs, i)?;
            }
        }
        // `order` holds the cursors with a head, the next change first: the
        // youngest run's change to the smallest (largest, descending) key.
        let Some(&first) = self.order.first() else {
            return Ok(None);
        };
        let Some((tail, _)) = self.cursors.get(first.cursor).and_then(RunCursor::head) else {
            return Err(corrupt("a merge lost its place"));
        };
        // Every run's change to this key is passed; the older ones lose.
        let same = 1 + self
            .order
            .get(1..)
            .unwrap_or(&[])
            .iter()
            .take_while(|&&j| {
                j.value == first.value
                    && self
                        .cursors
                        .get(j.cursor)
                        .and_then(RunCursor::head)
                        .is_some_and(|(t, _)| t == tail)
            })
            .count();
        self.handed = same;
        Ok(self
            .cursors
            .get(first.cursor)
            .and_then(RunCursor::head_encoded))
    }

    /// The next live key and its session, in order.
    pub(crate) fn next_entry<T: ReadableTable<&'static [u8], &'static [u8]>>(
        &mut self,
        runs: &T,
    ) -> Result<Option<(Vec<u8>, u64)>> {
        while let Some((tail, change)) = self.next_change(runs)? {
            if let Some(session) = change {
                return Ok(Some((tail.to_vec(), session)));
            }
        }
        Ok(None)
    }
}

/// The sort index of one partition (project `project_id`, sort kind
/// `kind`) between `lo` and `hi` (bounds on tails), ascending or
/// descending; read it with [`Merged::next_entry`].
pub(crate) fn scan<T: ReadableTable<&'static [u8], &'static [u8]>>(
    runs: &T,
    project_id: u32,
    kind: u8,
    lo: Bound<&[u8]>,
    hi: Bound<&[u8]>,
    descending: bool,
) -> Result<Merged> {
    let mut p = [0u8; PARTITION];
    p[..4].copy_from_slice(&project_id.to_be_bytes());
    p[4] = kind;
    let ids = list_runs(runs, p)?;
    Ok(Merged::new(p, &ids, lo, hi, descending))
}

/// Every live entry of the sort index as whole `session_order` keys
/// (partition ‖ tail) with their sessions, in key order (for comparing
/// indexes, whose runs differ with their history).
pub(crate) fn entries<T: ReadableTable<&'static [u8], &'static [u8]>>(
    runs: &T,
) -> Result<Vec<(Vec<u8>, u64)>> {
    let mut out = Vec::new();
    let mut from: Vec<u8> = Vec::new();
    loop {
        let next = runs.range::<&[u8]>(from.as_slice()..)?.next().transpose()?;
        let Some((k, _)) = next else {
            return Ok(out);
        };
        let p = partition_of(k.value())?;
        let ids = list_runs(runs, p)?;
        let mut merged = Merged::new(p, &ids, Bound::Unbounded, Bound::Unbounded, false);
        while let Some((tail, session)) = merged.next_entry(runs)? {
            let mut key = p.to_vec();
            key.extend_from_slice(&tail);
            out.push((key, session));
        }
        from = p.to_vec();
        if !increment(&mut from) {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use redb::ReadableDatabase;

    /// A change to the model: partition (0..3), sort value, session id
    /// (its tail is value ‖ id), and the session or a deletion.
    type Op = (u8, u8, u8, Option<u64>);

    fn partition(i: u8) -> Partition {
        [0, 0, 0, i / 2, i % 2]
    }

    fn tail(value: u8, id: u8) -> Vec<u8> {
        let mut t = u64::from(value).to_be_bytes().to_vec();
        match id {
            // Ids of a few lengths, one of them long, so that blocks are
            // cut on bytes within one transaction's run too.
            0..=5 => {
                let len = if id == 5 {
                    900
                } else {
                    1 + usize::from(id) * 7
                };
                t.extend(std::iter::repeat_n(b'a' + id % 4, len));
            }
            // Ids that share their first eight bytes or more with others,
            // end in zeros, or are empty: ranked by all their bytes.
            6 => {}
            7 => t.extend(b"bbbbbbbb\0"),
            8 => t.extend(b"a\0"),
            _ => t.extend(b"bbbbbbbbbbbbbbbc"),
        }
        t
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: redb::Database,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let db = redb::Database::create(dir.path().join("runs.redb")).unwrap();
            Fixture { _dir: dir, db }
        }

        /// Writes one transaction's changes (as `update_session` does),
        /// then a full merge if `merge_all` is set.
        fn commit(&self, ops: &[Op], full_merge: bool) {
            self.commit_sorted(ops, full_merge, false);
        }

        /// As [`Self::commit`]; `unpacked` sorts the changes by
        /// [`SortKey`] as a transaction too large for a `u128` key would.
        fn commit_sorted(&self, ops: &[Op], full_merge: bool, unpacked: bool) {
            let txn = self.db.begin_write().unwrap();
            {
                let mut runs = txn.open_table(SESSION_RUNS).unwrap();
                let mut meta = txn.open_table(crate::index::META).unwrap();
                let mut w = OrderWrites {
                    unpacked,
                    ..OrderWrites::default()
                };
                for (p, value, id, change) in ops {
                    let p = partition(*p);
                    let project = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    let t = tail(*value, *id);
                    let (value, id) = t.split_at(8);
                    let value = u64::from_be_bytes(value.try_into().unwrap());
                    match change {
                        Some(s) => w.insert(project, p[4], value, id, *s),
                        None => w.remove(project, p[4], value, id),
                    }
                }
                w.flush(&mut runs, &mut meta).unwrap();
                if full_merge {
                    merge_all(&mut runs, &mut meta).unwrap();
                }
            }
            txn.commit().unwrap();
        }

        fn read(&self) -> redb::ReadOnlyTable<&'static [u8], &'static [u8]> {
            let txn = self.db.begin_read().unwrap();
            txn.open_table(SESSION_RUNS).unwrap()
        }
    }

    type Model = BTreeMap<Vec<u8>, u64>;

    /// Every entry of `session_runs` and of `meta`, in key order.
    type Stored = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(String, u64)>);

    fn apply(model: &mut Model, ops: &[Op]) {
        for (p, value, id, change) in ops {
            let mut key = partition(*p).to_vec();
            key.extend(tail(*value, *id));
            match change {
                Some(s) => model.insert(key, *s),
                None => model.remove(&key),
            };
        }
    }

    fn bound(b: &(u8, u8, u8)) -> Bound<Vec<u8>> {
        match b.0 % 3 {
            0 => Bound::Unbounded,
            1 => Bound::Included(tail(b.1, b.2)),
            _ => Bound::Excluded(tail(b.1, b.2)),
        }
    }

    /// What a scan of partition `p` between `lo` and `hi` must give.
    fn expected(
        model: &Model,
        p: u8,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        descending: bool,
    ) -> Vec<(Vec<u8>, u64)> {
        let part = partition(p);
        let mut out: Vec<(Vec<u8>, u64)> = model
            .iter()
            .filter(|(k, _)| k.starts_with(&part))
            .map(|(k, s)| (k[PARTITION..].to_vec(), *s))
            .filter(|(t, _)| RangeBounds::<[u8]>::contains(&as_slices(lo, hi), t.as_slice()))
            .collect();
        if descending {
            out.reverse();
        }
        out
    }

    fn scanned(
        runs: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
        p: u8,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        descending: bool,
    ) -> Vec<(Vec<u8>, u64)> {
        let part = partition(p);
        let project = u32::from_be_bytes([part[0], part[1], part[2], part[3]]);
        let (lo, hi) = as_slices(lo, hi);
        let mut m = scan(runs, project, part[4], lo, hi, descending).unwrap();
        let mut out = Vec::new();
        while let Some(e) = m.next_entry(runs).unwrap() {
            out.push(e);
        }
        out
    }

    fn op() -> impl Strategy<Value = Op> {
        (
            0u8..3,
            0u8..40,
            0u8..10,
            prop_oneof![3 => (0u64..1000).prop_map(Some), 1 => Just(None)],
        )
    }

    proptest! {
        /// Against a map of key -> session: after every transaction the
        /// whole index and every range scan, both ways, hold exactly the
        /// model's keys, however the runs were cut, merged and compacted,
        /// and whichever way a transaction's changes were sorted.
        #[test]
        fn runs_read_as_the_model(
            txns in proptest::collection::vec(
                (
                    proptest::collection::vec(op(), 0..30),
                    proptest::bool::weighted(0.05),
                    any::<bool>(),
                ),
                1..90,
            ),
            bounds in proptest::collection::vec(
                ((0u8..3, 0u8..40, 0u8..10), (0u8..3, 0u8..40, 0u8..10), any::<bool>(), 0u8..3),
                4,
            ),
        ) {
            let f = Fixture::new();
            let mut model = Model::new();
            for (ops, full_merge, unpacked) in &txns {
                f.commit_sorted(ops, *full_merge, *unpacked);
                apply(&mut model, ops);
                let runs = f.read();
                let all: Model = entries(&runs).unwrap().into_iter().collect();
                prop_assert_eq!(&all, &model);
                // Every block belongs to a listed run (merged runs leave
                // nothing behind), and no level holds `FANOUT` runs.
                for e in runs.iter().unwrap() {
                    let (k, _) = e.unwrap();
                    let k = k.value();
                    let listed = list_runs(&runs, partition_of(k).unwrap()).unwrap();
                    let id = RunId {
                        level: k[PARTITION + 1],
                        seq: u64::from_be_bytes(k[PARTITION + 2..KEY_PREFIX].try_into().unwrap()),
                    };
                    prop_assert!(listed.contains(&id), "{:?} not among {:?}", id, listed);
                    for level in listed.iter().map(|r| r.level) {
                        prop_assert!(listed.iter().filter(|r| r.level == level).count() < FANOUT);
                    }
                }
                for (lo, hi, descending, p) in &bounds {
                    let (lo, hi) = (bound(lo), bound(hi));
                    prop_assert_eq!(
                        scanned(&runs, *p, &lo, &hi, *descending),
                        expected(&model, *p, &lo, &hi, *descending)
                    );
                }
            }
        }

        /// Blocks held and written through a cursor, in batches of any
        /// size, leave the same `session_runs` and `meta` entries, byte for
        /// byte, as blocks inserted one by one as they end.
        #[test]
        fn held_blocks_store_the_same_bytes(
            txns in proptest::collection::vec(
                (
                    proptest::collection::vec(op(), 0..40),
                    proptest::bool::weighted(0.05),
                ),
                1..60,
            ),
            limit in prop_oneof![Just(1usize), 1usize..20_000, Just(HELD_BLOCK_BYTES)],
        ) {
            let contents = |f: &Fixture| -> Stored {
                let txn = f.db.begin_read().unwrap();
                let runs = txn.open_table(SESSION_RUNS).unwrap();
                let meta = txn.open_table(crate::index::META).unwrap();
                (
                    runs.iter()
                        .unwrap()
                        .map(|e| {
                            let (k, v) = e.unwrap();
                            (k.value().to_vec(), v.value().to_vec())
                        })
                        .collect(),
                    meta.iter()
                        .unwrap()
                        .map(|e| {
                            let (k, v) = e.unwrap();
                            (k.value().to_string(), v.value())
                        })
                        .collect(),
                )
            };
            let (held, one_by_one) = (Fixture::new(), Fixture::new());
            for (ops, full_merge) in &txns {
                test_writes::HELD_LIMIT.set(Some(limit));
                held.commit(ops, *full_merge);
                test_writes::HELD_LIMIT.set(None);
                test_writes::ONE_BY_ONE.set(true);
                one_by_one.commit(ops, *full_merge);
                test_writes::ONE_BY_ONE.set(false);
                prop_assert_eq!(contents(&held), contents(&one_by_one));
            }
        }

        /// Heads compare as their tails' bytes do, whatever their lengths
        /// (a short prefix shared, fewer than eight bytes, none).
        #[test]
        fn heads_compare_as_their_bytes(
            a in proptest::option::of(proptest::collection::vec(0..3u8, 0..14)),
            b in proptest::option::of(proptest::collection::vec(0..3u8, 0..14)),
        ) {
            let (a, b) = (a.as_deref(), b.as_deref());
            prop_assert_eq!(cmp_heads(a, b), a.cmp(&b));
            prop_assert_eq!(cmp_heads(b, a), b.cmp(&a));
            prop_assert_eq!(cmp_heads(a, a), std::cmp::Ordering::Equal);
        }

        /// Session ids rank as their bytes compare, however long a prefix
        /// they share (none, eight bytes, more), whether they end in zeros
        /// or are a prefix of another, and equal ids rank alike.
        #[test]
        fn ids_rank_as_their_bytes(
            ids in proptest::collection::vec(
                (
                    prop_oneof![
                        Just(&b""[..]),
                        Just(&b"sess-000"[..]),
                        Just(&b"sess-0001-"[..]),
                        Just(&b"\0\0\0\0\0\0\0\0"[..]),
                        Just(&b"sess-0001-sess-0001-"[..]),
                    ],
                    proptest::collection::vec(0u8..3, 0..12),
                ),
                0..40,
            ),
        ) {
            let ids: Vec<Vec<u8>> = ids.iter().map(|(p, s)| [*p, s.as_slice()].concat()).collect();
            let mut bytes = Vec::new();
            let mut spans = Vec::new();
            for id in &ids {
                let start = bytes.len();
                bytes.extend_from_slice(id);
                spans.push((start, bytes.len()));
            }
            let ranks = rank_ids(&spans, &bytes);
            prop_assert_eq!(ranks.len(), ids.len());
            for (a, ra) in ids.iter().zip(&ranks) {
                for (b, rb) in ids.iter().zip(&ranks) {
                    prop_assert_eq!(ra.cmp(rb), a.cmp(b), "{:?} {:?}", a, b);
                }
            }
            // Dense: every rank below the number of distinct ids.
            let distinct: std::collections::BTreeSet<&Vec<u8>> = ids.iter().collect();
            prop_assert!(ranks.iter().all(|&r| r < distinct.len() as u64));
        }

        /// A block's changes, each taken as encoded (as a merge copies
        /// them), are the block's bytes, and each decodes to its tail and
        /// change.
        #[test]
        fn changes_are_taken_as_encoded(
            changes in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..20), proptest::option::of(any::<u64>())),
                0..20,
            ),
        ) {
            let mut block = Vec::new();
            for (t, c) in &changes {
                let (head, rest) = t.split_at(t.len().min(8));
                encode_change(&mut block, head, rest, *c).unwrap();
            }
            let mut items = Vec::new();
            decode_block(&block, &mut items).unwrap();
            prop_assert_eq!(items.len(), changes.len());
            let mut again = Vec::new();
            for (item, (t, c)) in items.iter().zip(&changes) {
                let (s, e) = encoded_range(item).unwrap();
                again.extend_from_slice(&block[s..e]);
                prop_assert_eq!(&block[item.0..item.1], t.as_slice());
                prop_assert_eq!(item.2, *c);
            }
            prop_assert_eq!(again, block);
        }

        /// A damaged block is an error, never a panic.
        #[test]
        fn blocks_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_block(&bytes, &mut Vec::new());
        }
    }

    /// A run's blocks are cut greedily to fill a leaf page: every block
    /// entry but a run's last fits in `BLOCK_ENTRY_BYTES`, and the next
    /// change would not have fitted.
    #[test]
    fn blocks_fill_a_page() {
        let f = Fixture::new();
        // Tails of 8 + 29 bytes, as session ids of about that length make.
        let ops: Vec<Op> = (0..250u8).map(|v| (0, v, 4, Some(u64::from(v)))).collect();
        f.commit(&ops, false);
        let runs = f.read();
        let mut blocks: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
        for entry in runs.iter().unwrap() {
            let (k, v) = entry.unwrap();
            let k = k.value();
            if k[PARTITION] == BLOCK {
                let size = k.len() + v.value().len();
                blocks
                    .entry(k[..KEY_PREFIX].to_vec())
                    .or_default()
                    .push(size);
            }
        }
        let change = change_len(tail(0, 4).len(), Some(0));
        assert_eq!(blocks.len(), 1, "one run: {blocks:?}");
        for sizes in blocks.values() {
            assert!(sizes.len() > 2, "{sizes:?}");
            let (_, full) = sizes.split_last().unwrap();
            for &size in full {
                assert!(size <= BLOCK_ENTRY_BYTES, "{size} > {BLOCK_ENTRY_BYTES}");
                assert!(
                    size + change > BLOCK_ENTRY_BYTES,
                    "{size}: room for another change"
                );
            }
        }
    }

    #[test]
    fn change_len_is_what_encode_writes() {
        for (t, c) in [
            (tail(3, 0), None),
            (tail(3, 5), Some(7)),
            (Vec::new(), Some(u64::MAX)),
        ] {
            let mut out = Vec::new();
            let (head, rest) = t.split_at(t.len() / 2);
            encode_change(&mut out, head, rest, c).unwrap();
            assert_eq!(out.len(), change_len(t.len(), c));
            let mut items = Vec::new();
            decode_block(&out, &mut items).unwrap();
            assert_eq!(items, [(4, 4 + t.len(), c)]);
            assert_eq!(&out[4..4 + t.len()], t.as_slice());
        }
    }

    /// Many transactions on one partition: levels fill and merge, so the
    /// partition keeps fewer than `FANOUT` runs per level; a full merge
    /// leaves one run without tombstones, and once every key is deleted,
    /// nothing at all.
    #[test]
    fn levels_merge_and_full_merge_empties() {
        let f = Fixture::new();
        let mut model = Model::new();
        for n in 0..600u64 {
            let v = u8::try_from(n % 200).unwrap();
            let ops = [(0, v, 1, Some(n)), (0, v, 2, (n % 3 == 0).then_some(n))];
            f.commit(&ops, false);
            apply(&mut model, &ops);
        }
        let runs = f.read();
        let listed = list_runs(&runs, partition(0)).unwrap();
        let levels = listed.iter().map(|r| r.level).max().unwrap();
        assert!(levels >= 2, "600 runs make at least two levels: {listed:?}");
        for level in 0..=levels {
            let n = listed.iter().filter(|r| r.level == level).count();
            assert!(n < FANOUT, "level {level} holds {n} runs");
        }
        let all: Model = entries(&runs).unwrap().into_iter().collect();
        assert_eq!(all, model);
        drop(runs);

        f.commit(&[], true);
        let runs = f.read();
        assert_eq!(list_runs(&runs, partition(0)).unwrap().len(), 1);
        let all: Model = entries(&runs).unwrap().into_iter().collect();
        assert_eq!(all, model);
        drop(runs);

        let deletes: Vec<Op> = model
            .keys()
            .map(|k| {
                let t = &k[PARTITION..];
                let value = u8::try_from(u64::from_be_bytes(t[..8].try_into().unwrap())).unwrap();
                let id = u8::try_from((t.len() - 9) / 7).unwrap();
                (0, value, id, None)
            })
            .collect();
        f.commit(&deletes, true);
        let runs = f.read();
        assert_eq!(
            runs.iter().unwrap().count(),
            0,
            "tombstones outlived a full merge"
        );
    }
}

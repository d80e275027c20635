//! Secondary indexes in redb, derived from the span log.
//!
//! Every table is rebuildable by replaying the log. Keys are fixed-width
//! big-endian byte strings (projects and sessions interned to integers) so
//! that redb compares them with one memcmp and ranges are prefix scans.
//! The tables and their byte layouts are drawn in `docs/FORMAT.md`.

mod apply;
mod compact;
mod compare;
mod delete;
pub(crate) mod facts;
pub(crate) mod home_runs;
pub(crate) mod posting_runs;
mod radix;
pub(crate) mod runs;
pub(crate) mod search;
pub(crate) mod segments;
pub(crate) mod session;
pub(crate) mod trace;
mod wire;

use std::path::Path;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::codec;
use crate::error::{Error, Result};
use crate::fs::{Fence, Fenced, FileSystem, OpenMode, RedbBackend};

pub(crate) use apply::{IndexConfig, IndexWriter, SpanSource, Spent};
pub(crate) use compact::{Liveness, Move};
pub(crate) use compare::compare;
pub(crate) use delete::{DeleteTarget, RetentionVictims};
pub(crate) use trace::{NewRecords, SpanInfo};

/// Version of the table layout; a mismatch triggers a rebuild from the log.
pub(crate) const INDEX_FORMAT_VERSION: u64 = 12;

/// Counters and checkpoint state.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Project name -> project number.
pub(crate) const PROJECTS: TableDefinition<&str, u32> = TableDefinition::new("projects");
/// project number (4 B BE) ++ session id bytes -> session number.
pub(crate) const SESSION_IDS: TableDefinition<&[u8], u64> = TableDefinition::new("session_ids");
/// Session number -> `SessionState`.
pub(crate) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// session (8) ++ trace start (8) ++ trace id (16) -> `TurnBody`.
///
/// Fixed-width keys are declared as `&[u8; N]`, never `[u8; N]`: redb
/// gives both the type name `[u8;N]` (same bytes, same order, so the files
/// do not change), but compares `&[u8; N]` keys with one `memcmp` and reads
/// them in place, where it compares `[u8; N]` keys byte by byte, through a
/// call per byte, and rebuilds them through a `Vec` (6% of the indexing
/// thread's instructions with ~4 KiB spans went to those compares).
pub(crate) const TURNS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("turns");
/// The session sort index of index format 5: project (4) ++ sort kind (1)
/// ++ value (8) ++ session id bytes -> session number, one entry per key.
/// Format 6 keeps these keys as sorted runs in `runs::SESSION_RUNS`; this
/// table is dropped when an index of format 5 is rebuilt.
pub(crate) const SESSION_ORDER: TableDefinition<&[u8], u64> = TableDefinition::new("session_order");
/// Trace id -> the trace's home: the LSN of the first of its spans the
/// index took (unique: no two traces share a span frame, and LSNs are
/// never reused). Small entries, so this table, which trace ids reach in
/// random order, stays in the cache far longer than the records would.
pub(crate) const TRACE_HOMES: TableDefinition<&[u8; 16], u64> = TableDefinition::new("trace_homes");
/// Home -> `TraceRecord`. Keyed by home rather than by the (random) trace
/// id, so that new traces land at the end of the table and the traces
/// being written are neighbours: on a large store, random inserts of whole
/// records into a table bigger than the cache made ingest 1.7x slower.
pub(crate) const TRACE_RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("trace_records");
/// The trace table of index format 4 (trace id -> record), dropped when
/// an index of that format is rebuilt.
pub(crate) const LEGACY_TRACES: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("traces");
/// project (4) ++ trigram code (4) ++ chunk (4) -> set of session offsets
/// (see `search`): the base the runs of `posting_runs::SEARCH_RUNS` are
/// merged into.
pub(crate) const SEARCH: TableDefinition<&[u8; 12], &[u8]> = TableDefinition::new("search");
/// Project number -> `ProjectCounters`.
pub(crate) const PROJECT_STATS: TableDefinition<u32, &[u8]> = TableDefinition::new("project_stats");
/// Project number -> number of stored spans appended under that project
/// (whichever project their trace belongs to). A project is listed while
/// this is above zero; when a delete brings it to zero the project is
/// forgotten (see `delete`).
pub(crate) const PROJECT_SPANS: TableDefinition<u32, u64> = TableDefinition::new("project_spans");

/// Index changes held in memory and written to their tables together, in
/// key order, at checkpoints (or when they grow large): search postings,
/// and the homes of traces first seen since (their records are already in
/// `trace_records`). Both kinds of key arrive in random order, so writing
/// them one group at a time would touch most leaves of their tables each
/// time. Readers consult this next to the tables (see `SessionStore`);
/// after a crash the replay from the checkpoint re-derives it.
///
/// Homes stay here after a checkpoint too: it makes them durable as a run
/// of `home_runs` (see `home_runs`), and they move to `trace_homes` only
/// once more than `homes_limit` are held, or before deletes, compaction
/// and verify.
#[derive(Debug)]
pub(crate) struct Deferred {
    /// Search postings.
    pub postings: search::Postings,
    /// Trace id -> home, for traces first indexed since the last flush: in
    /// neither `trace_homes` nor `home_runs`.
    pub homes: crate::hashing::FastMap<[u8; 16], u64>,
    /// Trace id -> home, for traces whose home is in `home_runs` and not
    /// yet in `trace_homes`.
    pub run_homes: crate::hashing::FastMap<[u8; 16], u64>,
    /// Homes held (both maps) beyond which a flush writes them all to
    /// `trace_homes`.
    pub homes_limit: usize,
}

impl Default for Deferred {
    fn default() -> Self {
        Self {
            postings: search::Postings::default(),
            homes: crate::hashing::FastMap::default(),
            run_homes: crate::hashing::FastMap::default(),
            homes_limit: DEFERRED_HOMES,
        }
    }
}

/// Where a flush wrote the held trace homes (see [`Deferred::written`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HomesWritten {
    /// The new ones, as a run of `home_runs`.
    Run,
    /// All of them, into `trace_homes`; the runs were dropped.
    Table,
}

impl Deferred {
    /// Takes in a later group's changes.
    pub fn merge(&mut self, other: Deferred) {
        self.postings.merge(other.postings);
        absorb(&mut self.homes, other.homes);
        absorb(&mut self.run_homes, other.run_homes);
    }

    /// The home of a trace, if held here.
    pub fn home(&self, trace_id: &[u8; 16]) -> Option<u64> {
        self.homes
            .get(trace_id)
            .or_else(|| self.run_homes.get(trace_id))
            .copied()
    }

    /// True when nothing is held that a checkpoint must write.
    pub fn is_empty(&self) -> bool {
        self.postings.is_empty() && self.homes.is_empty()
    }

    /// True when any home is held (in a run or not).
    pub fn holds_homes(&self) -> bool {
        !self.homes.is_empty() || !self.run_homes.is_empty()
    }

    /// True when more homes are held than `homes_limit`.
    pub fn homes_full(&self) -> bool {
        self.homes.len().saturating_add(self.run_homes.len()) > self.homes_limit
    }

    /// True when it holds more than it should keep in memory.
    pub fn is_large(&self) -> bool {
        self.postings.len() > DEFERRED_POSTINGS || self.homes_full()
    }

    /// Takes note of a committed flush: its postings and the homes it
    /// wrote are no longer held as unwritten.
    pub fn written(&mut self, homes: HomesWritten) {
        self.postings.clear();
        match homes {
            HomesWritten::Run => absorb(&mut self.run_homes, std::mem::take(&mut self.homes)),
            HomesWritten::Table => self.clear_homes(),
        }
    }

    /// Nothing held, with `homes_limit` as the bound of held homes.
    pub fn with_homes_limit(homes_limit: usize) -> Self {
        Self {
            homes_limit,
            ..Self::default()
        }
    }

    /// Forgets the held homes once they are all in `trace_homes`.
    pub fn clear_homes(&mut self) {
        self.homes.clear();
        self.run_homes.clear();
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.postings.clear();
        self.clear_homes();
    }
}

/// Moves the homes of `from` into `into` (taking `from` whole when `into`
/// is empty, rather than rehashing it entry by entry).
fn absorb(
    into: &mut crate::hashing::FastMap<[u8; 16], u64>,
    from: crate::hashing::FastMap<[u8; 16], u64>,
) {
    if into.is_empty() {
        *into = from;
    } else {
        into.extend(from);
    }
}

/// Deferred search postings beyond this many (8 bytes each) are written out
/// early.
const DEFERRED_POSTINGS: usize = 1 << 21;
/// Trace homes held in memory (about 40 bytes each) beyond which a flush
/// writes them to `trace_homes`.
pub(crate) const DEFERRED_HOMES: usize = 1 << 19;

/// Per-project totals, kept by delta at ingest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct ProjectCounters {
    pub sessions: u64,
    pub traces: u64,
    pub spans: u64,
    pub tokens: crate::model::Tokens,
}

pub(crate) const META_FORMAT: &str = "format_version";
pub(crate) const META_APPLIED: &str = "applied_lsn";
pub(crate) const META_CONFIG: &str = "config_fingerprint";
pub(crate) const META_NEXT_SESSION: &str = "next_session";
pub(crate) const META_NEXT_PROJECT: &str = "next_project";
/// LSN before which a compaction made the log dead: segments below it are
/// removed on open if a crash interrupted their removal.
pub(crate) const META_COMPACT_CUT: &str = "compact_cut";

/// Key of a turn in `TURNS`.
pub(crate) fn turn_key(session: u64, start: u64, trace_id: [u8; 16]) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&session.to_be_bytes());
    k[8..16].copy_from_slice(&start.to_be_bytes());
    k[16..].copy_from_slice(&trace_id);
    k
}

/// Splits a `TURNS` key into (session, start, trace id).
pub(crate) fn split_turn_key(k: &[u8; 32]) -> (u64, u64, [u8; 16]) {
    let mut s = [0u8; 8];
    let mut t = [0u8; 8];
    let mut id = [0u8; 16];
    s.copy_from_slice(&k[..8]);
    t.copy_from_slice(&k[8..16]);
    id.copy_from_slice(&k[16..]);
    (u64::from_be_bytes(s), u64::from_be_bytes(t), id)
}

/// Inserts entries whose keys ascend and all sort after every key of
/// `table`, through a cursor at the table's end: redb buffers such a run
/// and splices it into full leaves, one update of the path above them per
/// megabyte, where `insert` descends the tree for each key (the writes of
/// a group's new traces, turns and sessions took a fifth fewer
/// instructions). A key not above the one before it, or not above the
/// table's last, fails the call with redb's `UnorderedKey`; callers pass
/// only keys they have checked, so that is a bug, and fails the group.
pub(crate) fn append_ascending<'k, 'v, K, V>(
    table: &mut redb::Table<'_, K, V>,
    entries: impl IntoIterator<Item = (K::SelfType<'k>, V::SelfType<'v>)>,
) -> Result<()>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    let mut cursor = table.upper_bound_mut(std::ops::Bound::<K::SelfType<'k>>::Unbounded)?;
    for (k, v) in entries {
        cursor.insert_before(k, v)?;
    }
    cursor.close()?;
    Ok(())
}

/// Name of the table [`repack_table`] fills before it takes the place of
/// the one it repacks (within one transaction, so never seen outside it).
const REPACK_SCRATCH: &str = "repack";

/// Rewrites `def` in key order into full leaves, if it has more than one
/// and at least a fifth of its leaf bytes are empty (redb merges a leaf
/// that deletes leave under a third full, not one above that, nor one
/// whose values shrank): the entries go, ascending, through a cursor
/// at the end of a new table (see [`append_ascending`]), which then
/// replaces `def`. Returns whether it did.
fn repack_table<K, V>(txn: &redb::WriteTransaction, def: TableDefinition<K, V>) -> Result<bool>
where
    K: redb::Key + 'static,
    V: redb::Value + 'static,
{
    use redb::ReadableTableMetadata;
    let scratch: TableDefinition<K, V> = TableDefinition::new(REPACK_SCRATCH);
    {
        let old = txn.open_table(def)?;
        let stats = old.stats()?;
        let bytes = stats.stored_bytes() + stats.fragmented_bytes();
        if stats.leaf_pages() < 2 || stats.fragmented_bytes().saturating_mul(5) < bytes {
            return Ok(false);
        }
        let mut new = txn.open_table(scratch)?;
        let mut cursor = new.upper_bound_mut(std::ops::Bound::<K::SelfType<'static>>::Unbounded)?;
        for entry in old.iter()? {
            let (k, v) = entry?;
            cursor.insert_before(k.value(), v.value())?;
        }
        cursor.close()?;
    }
    txn.delete_table(def)?;
    txn.rename_table(scratch, def)?;
    Ok(true)
}

/// The first `N` bytes of `bytes`, zeros after its end. Read as a
/// big-endian number, byte strings whose leading bytes differ are ordered
/// as those numbers are (equal numbers leave the order to the bytes past
/// them, or to the length).
pub(crate) fn leading_bytes<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let n = bytes.len().min(N);
    if let (Some(to), Some(from)) = (b.get_mut(..n), bytes.get(..n)) {
        to.copy_from_slice(from);
    }
    b
}

/// Big-endian increment; false on overflow. On a key prefix, gives a key
/// of the same length above every key with that prefix (an exclusive
/// upper bound for a prefix scan).
pub(crate) fn increment(k: &mut [u8]) -> bool {
    for b in k.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return true;
        }
    }
    false
}

/// Key of a session in `SESSION_IDS`.
pub(crate) fn session_id_key(project_id: u32, session_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + session_id.len());
    session_id_key_into(&mut k, project_id, session_id);
    k
}

/// [`session_id_key`] written into `k` (cleared first), reusing its memory.
pub(crate) fn session_id_key_into(k: &mut Vec<u8>, project_id: u32, session_id: &str) {
    k.clear();
    k.extend_from_slice(&project_id.to_be_bytes());
    k.extend_from_slice(session_id.as_bytes());
}

/// An index corruption error saying `what` is wrong.
pub(crate) fn corrupted(what: impl Into<String>) -> Error {
    Error::Index(Box::new(redb::Error::Corrupted(what.into())))
}

fn corrupt_index(what: &str, e: codec::DecodeError) -> Error {
    Error::Index(Box::new(redb::Error::Corrupted(format!(
        "undecodable {what}: {e}"
    ))))
}

/// Decodes a stored index value, mapping failure to an index corruption error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    codec::decode_value(bytes).map_err(|e| corrupt_index(what, e))
}

/// Decodes a stored session summary (see [`session::SessionState::decode`]),
/// mapping failure to an index corruption error.
pub(crate) fn decode_session(bytes: &[u8]) -> Result<session::SessionState> {
    session::SessionState::decode(bytes).map_err(|e| corrupt_index("session summary", e))
}

/// Decodes a stored trace record (see [`trace::TraceRecord::decode`]),
/// mapping failure to an index corruption error.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<trace::TraceRecord> {
    trace::TraceRecord::decode(bytes).map_err(|e| corrupt_index("trace record", e))
}

/// Decodes a stored turn in place (see [`trace::TurnView`]), mapping
/// failure to an index corruption error.
pub(crate) fn decode_turn(bytes: &[u8]) -> Result<trace::TurnView<'_>> {
    trace::TurnView::decode(bytes).map_err(|e| corrupt_index("turn", e))
}

/// The `end` of a stored turn, read alone (`TurnView::end_of`).
pub(crate) fn decode_turn_end(bytes: &[u8]) -> Result<u64> {
    trace::TurnView::end_of(bytes).map_err(|e| corrupt_index("turn", e))
}

/// A stored search posting (`SEARCH` value), or a corruption error.
pub(crate) fn decode_posting(bytes: &[u8]) -> Result<search::ChunkSet> {
    search::ChunkSet::decode(bytes).ok_or_else(|| {
        Error::Index(Box::new(redb::Error::Corrupted(
            "undecodable search posting".into(),
        )))
    })
}

/// The redb database holding every index table.
pub(crate) struct Index {
    db: redb::Database,
    /// Stops all writes to the file once the store is poisoned (see [`Fenced`]).
    fence: Fence,
}

impl Index {
    /// Opens or creates the index file (with redb's own file backend).
    pub(crate) fn open(path: &Path, cache_bytes: usize) -> Result<Index> {
        Index::open_with(path, None, cache_bytes, false)
    }

    /// Opens or creates the index file, through `fs` if given (fault
    /// injection in tests) and else with redb's own file backend. With
    /// `check_integrity`, redb verifies the checksum of every page first
    /// and reports a damaged file as corrupted; without it, redb trusts a
    /// file it closed cleanly and may panic on one damaged since.
    pub(crate) fn open_with(
        path: &Path,
        fs: Option<&dyn FileSystem>,
        cache_bytes: usize,
        check_integrity: bool,
    ) -> Result<Index> {
        let io = |e| Error::io(format!("opening {}", path.display()), e);
        match fs {
            None => {
                // What `redb::Builder::create` does, with a fence around the backend.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(io)?;
                let backend = redb::backends::FileBackend::new(file)?;
                Index::with_backend(backend, cache_bytes, check_integrity)
            }
            Some(fs) => {
                let file = fs.open(path, OpenMode::Create).map_err(io)?;
                Index::with_backend(RedbBackend::new(file), cache_bytes, check_integrity)
            }
        }
    }

    fn with_backend(
        backend: impl redb::StorageBackend,
        cache_bytes: usize,
        check_integrity: bool,
    ) -> Result<Index> {
        let fence = Fence::default();
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes)
            .set_check_integrity_on_open(check_integrity)
            .create_with_backend(Fenced::new(backend, fence.clone()))?;
        let index = Index { db, fence };
        index.ensure_tables()?;
        Ok(index)
    }

    /// From now on nothing is written to the index file, not even when it
    /// is closed: its last durable checkpoint stays what a reopen finds.
    pub(crate) fn fence(&self) {
        self.fence.raise();
    }

    fn ensure_tables(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            if meta.get(META_FORMAT)?.is_none() {
                meta.insert(META_FORMAT, INDEX_FORMAT_VERSION)?;
            }
            txn.open_table(PROJECTS)?;
            txn.open_table(SESSION_IDS)?;
            txn.open_table(SESSIONS)?;
            txn.open_table(TURNS)?;
            txn.open_table(runs::SESSION_RUNS)?;
            txn.open_table(TRACE_HOMES)?;
            txn.open_table(home_runs::HOME_RUNS)?;
            txn.open_table(TRACE_RECORDS)?;
            txn.open_table(SEARCH)?;
            txn.open_table(posting_runs::SEARCH_RUNS)?;
            txn.open_table(posting_runs::SEARCH_RUN_LIST)?;
            txn.open_table(PROJECT_STATS)?;
            txn.open_table(PROJECT_SPANS)?;
            txn.open_table(segments::SEGMENT_LIVE)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Reads one counter of the meta table (0 when absent).
    pub(crate) fn meta(&self, key: &str) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(key)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Starts the (single) write transaction of a batch. Commits are
    /// non-durable; [`Index::checkpoint`] makes them durable.
    pub(crate) fn begin_write(&self) -> Result<IndexWriter> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        Ok(IndexWriter::new(txn))
    }

    /// Makes every earlier non-durable commit durable with one fsync.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }

    /// Merges the runs of the session sort index into one per partition,
    /// without tombstones, and commits durably (see `runs::merge_all`).
    /// The caller must be the one writer of the index.
    pub(crate) fn merge_sort_runs(&self) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        {
            let mut order = txn.open_table(runs::SESSION_RUNS)?;
            let mut meta = txn.open_table(META)?;
            runs::merge_all(&mut order, &mut meta)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Rewrites, in one durable transaction, every table whose leaves are
    /// a fifth or more empty (see [`repack_table`]): deletes leave leaves
    /// part-empty, and redb's `compact` moves whole pages but never merges
    /// them, so without this an index that lost most of its sessions stayed
    /// about twice the size of one built from what is left. Entries are
    /// unchanged. Returns how many tables were rewritten.
    pub(crate) fn repack_tables(&self) -> Result<usize> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        let repacked = [
            repack_table(&txn, PROJECTS)?,
            repack_table(&txn, SESSION_IDS)?,
            repack_table(&txn, SESSIONS)?,
            repack_table(&txn, TURNS)?,
            repack_table(&txn, runs::SESSION_RUNS)?,
            repack_table(&txn, TRACE_HOMES)?,
            repack_table(&txn, TRACE_RECORDS)?,
            repack_table(&txn, SEARCH)?,
            repack_table(&txn, PROJECT_STATS)?,
            repack_table(&txn, PROJECT_SPANS)?,
        ];
        txn.commit()?;
        Ok(repacked.into_iter().filter(|&r| r).count())
    }

    /// Drops from the search postings every session number that no
    /// longer names a session (deleted, or of a forgotten project), and
    /// every posting left empty, in one durable transaction. Deletes leave
    /// such postings behind (the index is a superset, and a session's
    /// number is never reused, so nothing can find them), so without this
    /// the `search` table would keep growing with every session a store
    /// ever held. The caller must be the one writer, with no deferred
    /// postings held. Returns how many memberships were dropped.
    pub(crate) fn prune_postings(&self) -> Result<u64> {
        self.prune_postings_in(4096)
    }

    /// [`Self::prune_postings`], changing at most `pass` postings per pass
    /// over the table (memory stays bounded whatever the table's size).
    pub(crate) fn prune_postings_in(&self, pass: usize) -> Result<u64> {
        let pass = pass.max(1);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        // The runs first go into the base, which is then pruned.
        posting_runs::merge_runs(&txn)?;
        let mut dropped = 0u64;
        {
            // The numbers of the sessions there are, ascending (the
            // table's key order): 8 bytes per session.
            let live = txn
                .open_table(SESSIONS)?
                .iter()?
                .map(|entry| Ok(entry?.0.value()))
                .collect::<Result<Vec<u64>>>()?;
            let is_live = |n: u64| live.binary_search(&n).is_ok();
            let mut table = txn.open_table(SEARCH)?;
            let mut after: Option<[u8; 12]> = None;
            loop {
                // Each pass reads up to `pass` postings to change, then
                // changes them (the table cannot change while read).
                let mut changes: Vec<([u8; 12], Option<Vec<u8>>)> = Vec::new();
                let mut last = None;
                let range = match &after {
                    None => table.range::<&[u8; 12]>(..)?,
                    Some(k) => table.range::<&[u8; 12]>((
                        std::ops::Bound::Excluded(k),
                        std::ops::Bound::Unbounded,
                    ))?,
                };
                for entry in range {
                    let (k, v) = entry?;
                    let key = *k.value();
                    last = Some(key);
                    let set = decode_posting(v.value())?;
                    let base = u64::from(search::key_chunk(&key)) << search::CHUNK_BITS;
                    let offsets = set.offsets();
                    let kept: Vec<u16> = offsets
                        .iter()
                        .copied()
                        .filter(|&o| is_live(base | u64::from(o)))
                        .collect();
                    if kept.len() < offsets.len() {
                        dropped += (offsets.len() - kept.len()) as u64;
                        let value = (!kept.is_empty())
                            .then(|| search::ChunkSet::from_sorted(kept).encode());
                        changes.push((key, value));
                        if changes.len() == pass {
                            break;
                        }
                    }
                }
                let more = changes.len() == pass;
                for (key, value) in changes {
                    match value {
                        Some(v) => table.insert(&key, v.as_slice())?,
                        None => table.remove(&key)?,
                    };
                }
                match (more, last) {
                    (true, Some(k)) => after = Some(k),
                    _ => break,
                }
            }
        }
        txn.commit()?;
        Ok(dropped)
    }

    /// Rewrites the database file to drop free pages (redb `compact`).
    /// Needs exclusive access: no transaction may be open.
    pub(crate) fn compact(&mut self) -> Result<bool> {
        Ok(self.db.compact()?)
    }

    /// A consistent snapshot for reads.
    pub(crate) fn begin_read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.db.begin_read()?)
    }
}

/// The trace tables of one read snapshot, opened once for the span ids of
/// many traces (opening two tables per trace was a fifth of an append's
/// work with ~500 B spans).
pub(crate) struct SpanIdLookup {
    homes: redb::ReadOnlyTable<&'static [u8; 16], u64>,
    records: redb::ReadOnlyTable<u64, &'static [u8]>,
}

impl SpanIdLookup {
    /// Opens the trace tables of `txn`.
    pub(crate) fn open(txn: &redb::ReadTransaction) -> Result<Self> {
        Ok(Self {
            homes: txn.open_table(TRACE_HOMES)?,
            records: txn.open_table(TRACE_RECORDS)?,
        })
    }

    /// Span ids of a trace as the index holds them (empty for an unknown
    /// trace): what idempotency checks against. `deferred` must be the
    /// in-memory changes that go with the snapshot the tables were opened in.
    pub(crate) fn span_ids(&self, deferred: &Deferred, trace_id: [u8; 16]) -> Result<Vec<[u8; 8]>> {
        let known = deferred.home(&trace_id);
        match find_trace(&self.homes, known, &self.records, trace_id)? {
            Some((_, rec)) => Ok(rec.spans.iter().map(|f| f.span_id).collect()),
            None => Ok(Vec::new()),
        }
    }
}

/// A trace's home and record, if the index holds the trace. `known_home`
/// is its home when an in-memory change holds it (see [`Deferred`]).
pub(crate) fn find_trace(
    homes: &impl ReadableTable<&'static [u8; 16], u64>,
    known_home: Option<u64>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    trace_id: [u8; 16],
) -> Result<Option<(u64, trace::TraceRecord)>> {
    find_trace_as(homes, known_home, records, trace_id, decode_record)
}

/// [`find_trace`], the stored record read by `decode`.
pub(crate) fn find_trace_as<T>(
    homes: &impl ReadableTable<&'static [u8; 16], u64>,
    known_home: Option<u64>,
    records: &impl ReadableTable<u64, &'static [u8]>,
    trace_id: [u8; 16],
    decode: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<Option<(u64, T)>> {
    let home = match known_home {
        Some(h) => h,
        None => match homes.get(&trace_id)? {
            Some(v) => v.value(),
            None => return Ok(None),
        },
    };
    match records.get(home)? {
        Some(v) => Ok(Some((home, decode(v.value())?))),
        None => Err(Error::Index(Box::new(redb::Error::Corrupted(format!(
            "trace {} has a home ({home}) without a record",
            crate::model::TraceId(trace_id)
        ))))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

    fn contents(db: &redb::Database) -> Vec<(u64, Vec<u8>)> {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        t.iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect()
    }

    fn leaf_pages(db: &redb::Database) -> u64 {
        use redb::ReadableTableMetadata;
        let txn = db.begin_read().unwrap();
        txn.open_table(T).unwrap().stats().unwrap().leaf_pages()
    }

    /// A table left part-empty by deletes is rewritten into fewer leaves
    /// with the same entries; a dense one is left as it is.
    #[test]
    fn repack_rewrites_part_empty_tables_and_keeps_their_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            // In key order: full leaves.
            for k in 0..5_000u64 {
                t.insert(k, [u8::try_from(k % 251).unwrap(); 60].as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let dense_pages = leaf_pages(&db);
        let txn = db.begin_write().unwrap();
        assert!(
            !repack_table(&txn, T).unwrap(),
            "a dense table was rewritten"
        );
        txn.commit().unwrap();
        assert_eq!(leaf_pages(&db), dense_pages);

        // Every value made smaller (as pruning a search posting does):
        // redb merges leaves that deletes leave under a third full, but
        // not these.
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            for k in 0..5_000u64 {
                t.insert(k, [7u8; 12].as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let before = contents(&db);
        let sparse_pages = leaf_pages(&db);

        let txn = db.begin_write().unwrap();
        assert!(repack_table(&txn, T).unwrap());
        txn.commit().unwrap();
        assert_eq!(contents(&db), before);
        assert!(
            leaf_pages(&db) * 2 < sparse_pages,
            "{} leaves after, {sparse_pages} before",
            leaf_pages(&db)
        );
        // The scratch table took the old one's place.
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|h| redb::TableHandle::name(&h).to_owned())
            .collect();
        assert_eq!(names, vec!["t".to_owned()]);
    }

    #[test]
    fn append_ascending_adds_after_the_last_key_and_refuses_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let value = |k: u64| vec![u8::try_from(k % 251).unwrap(); 40 + (k % 7) as usize * 100];
        let mut want = Vec::new();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(T).unwrap();
            // Into an empty table, then past stored keys: enough entries
            // (about 2 MB) for several splices of full leaves.
            append_ascending(&mut t, (0..10u64).map(|k| (k * 2, &[][..]))).unwrap();
            want.extend((0..10u64).map(|k| (k * 2, Vec::new())));
            let values: Vec<_> = (20..5_000u64).map(|k| (k, value(k))).collect();
            append_ascending(&mut t, values.iter().map(|(k, v)| (*k, v.as_slice()))).unwrap();
            want.extend(values);
        }
        txn.commit().unwrap();
        assert_eq!(contents(&db), want);

        // A key at or below the last stored one, or out of order within
        // the call, is refused; the failed transaction is not committed.
        for keys in [vec![4_999u64], vec![7], vec![6_000, 5_500]] {
            let txn = db.begin_write().unwrap();
            {
                let mut t = txn.open_table(T).unwrap();
                let r = append_ascending(&mut t, keys.iter().map(|k| (*k, &b"x"[..])));
                assert!(r.is_err(), "{keys:?} was taken");
            }
            txn.abort().unwrap();
        }
        assert_eq!(contents(&db), want);
    }
}

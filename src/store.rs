//! `SessionStore`: the facade that ties the log and the indexes together,
//! with locking, durability and checkpoints.

mod compaction;
mod indexing;
mod lifecycle;
mod pending;

pub use compaction::{CompactReport, CompactStep};

use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crate::codec;
use crate::codec::LogRecord;
use crate::error::{Error, ErrorKind, Poison, Result};
use crate::fs::{FileSystem, OsFileSystem};
use crate::index::facts::{self, SessionIdSource};
use crate::index::search::{EncodedChunks, Postings};
use crate::index::trace::NewRecord;
use crate::index::{
    Deferred, INDEX_FORMAT_VERSION, Index, IndexConfig, IndexWriter, META_APPLIED, META_CONFIG,
    META_FORMAT, NewRecords, SpanInfo, SpanSource, Spent,
};
use crate::log::{FrameRef, FrameSource, Log, LogOptions, Lsn, SalvageStep};
use crate::model::{
    AppendReport, KeyValue, Page, Rejection, ResourceSpans, SessionSummary, Span, SpanId,
    StoredSpan, Trace, TraceId, Turn,
};
use crate::query::{self, ProjectStats, SessionFilter, SessionQuery};
use crate::repair::{self, OpenReport};

use indexing::{GroupIndexer, Indexing, Job};
use pending::{Pending, SpanIdSet};

/// What [`SessionStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Log frames checked (checksum and decoding). 0 when a damaged frame
    /// stopped the check: the problem names it.
    pub frames: u64,
    /// Bytes of the log's segment files (headers included), as
    /// [`StoreStats::log_bytes`] counts them.
    pub log_bytes: u64,
    /// Every problem found, one line each; empty when the store is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One log segment, for [`StoreStats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStats {
    /// The segment file.
    pub path: PathBuf,
    /// LSN of the file's first byte.
    pub base_lsn: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// True once the segment is full and read-only (memory-mapped).
    pub sealed: bool,
    /// Bytes of span frames the indexes still refer to (frame headers
    /// included).
    pub live_bytes: u64,
    /// Bytes compaction could reclaim: every other frame (copies of
    /// deleted traces' spans, tombstones) and the segment header.
    pub dead_bytes: u64,
}

/// Store-wide figures from [`SessionStore::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Projects with stored spans.
    pub projects: u64,
    /// Sessions with at least one trace.
    pub sessions: u64,
    /// Traces.
    pub traces: u64,
    /// Stored spans.
    pub spans: u64,
    /// Bytes in log segments.
    pub log_bytes: u64,
    /// The log's segments, oldest first.
    pub segments: Vec<SegmentStats>,
    /// Size of the index file.
    pub index_bytes: u64,
    /// Log end that the indexes cover.
    pub applied_lsn: u64,
}

/// Longest project name, session id or user id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 4096;

/// Most bytes a span's `input.value` or `output.value`, with its mime
/// type, may come to as text. A trace's turn holds its root's input and
/// output as text, and a session summary its first input and last output;
/// each is read back with the 64 MiB decode limit, so both together must
/// stay under it, conflicting session ids and the rest included. A string
/// is as long as text as in the span; an array can be several times longer
/// (`true` is 1 byte encoded, `True, ` 6 as text).
pub const MAX_IO_TEXT_BYTES: usize = 31 << 20;

/// Most spans one trace may hold (the default and the largest value of
/// [`StoreOptions::max_spans_per_trace`]). A trace's index record keeps a
/// small fact per span, and at about 35 bytes a fact this keeps the record
/// well under the 64 MiB any stored value may decode to.
pub const MAX_SPANS_PER_TRACE: usize = 1_000_000;

/// When an acknowledged append is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Each `append` fsyncs the log before it returns: an acknowledged
    /// batch survives a power loss. Appenders take turns, one fsync each.
    Sync,
    /// Like `Sync`, but concurrent appenders share fsyncs: each waits until
    /// one fsync covers its batch. Same promise, more throughput under
    /// concurrency.
    #[default]
    GroupCommit,
    /// The log is written to the operating system on every append but not
    /// fsynced: an acknowledged batch survives a crash of the process, not
    /// of the machine. [`SessionStore::sync`] makes everything durable.
    Buffered,
}

/// Smallest append (encoded frames) that `StoreOptions::direct_writes`
/// writes directly: sixteen 4 KiB blocks.
const DIRECT_MIN_APPEND_BYTES: u64 = 64 << 10;

/// The same under [`Durability::Buffered`], whose appends do not otherwise
/// wait for the disk: 1 MiB, the size from which the log's writer thread
/// writes an append's blocks while the rest are made, and a large batch's
/// copy into the page cache costs more than its direct writes (see
/// `StoreOptions::direct_writes`).
const BUFFERED_DIRECT_MIN_APPEND_BYTES: u64 = 1 << 20;

/// A test's callback for the steps of a salvage
/// ([`StoreOptions::salvage_crash_points`]).
#[derive(Clone)]
struct CrashPoints(Arc<dyn Fn(SalvageStep) + Send + Sync>);

impl std::fmt::Debug for CrashPoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CrashPoints")
    }
}

/// Options for opening a store; `StoreOptions::default()` gives sensible ones.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    segment_bytes: u64,
    durability: Durability,
    cache_bytes: usize,
    session_id_sources: Vec<SessionIdSource>,
    max_span_bytes: u32,
    checkpoint_bytes: u64,
    checkpoint_spans: u64,
    /// `None`: the operating system's, with redb's own file backend.
    file_system: Option<Arc<dyn FileSystem>>,
    check_index_on_open: bool,
    rebuild_index_on_open: bool,
    salvage_log: bool,
    salvage_crash_points: Option<CrashPoints>,
    max_spans_per_trace: usize,
    index_batch_bytes: usize,
    index_batch_spans: usize,
    own_thread_bytes: usize,
    deferred_homes: usize,
    direct_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            durability: Durability::default(),
            cache_bytes: 64 << 20,
            session_id_sources: SessionIdSource::defaults(),
            max_span_bytes: 16 << 20,
            checkpoint_bytes: 256 << 20,
            checkpoint_spans: 1 << 17,
            file_system: None,
            check_index_on_open: true,
            rebuild_index_on_open: false,
            salvage_log: false,
            salvage_crash_points: None,
            max_spans_per_trace: MAX_SPANS_PER_TRACE,
            index_batch_bytes: 64 << 20,
            index_batch_spans: 1 << 14,
            own_thread_bytes: OWN_THREAD_BYTES,
            deferred_homes: crate::index::DEFERRED_HOMES,
            direct_writes: true,
        }
    }
}

impl StoreOptions {
    /// The defaults: 64 MiB segments, group commit, 64 MiB index cache,
    /// the default session-id keys, spans up to 16 MiB encoded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size at which a log segment is sealed and a new one started.
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes.max(4096);
        self
    }

    /// When appends are durable (see [`Durability`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Size of redb's page cache for the indexes (64 MiB by default).
    /// Resident memory grows with it. A cache smaller than what a long
    /// replay after a crash changes makes that replay write pages out and
    /// read them back: on the benchmarks' machine, reopening after 1 GiB
    /// of log past the checkpoint took a median 4.61 s with 1 GiB of cache
    /// against 5.35 s with the default, at a peak of 573 MiB of anonymous
    /// memory against 129 MiB (BENCHMARKS.md, "What bounds each target not
    /// met").
    pub fn cache_bytes(mut self, bytes: usize) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Where session ids are looked for, in order (contract rule 2).
    /// Changing the list on an existing store rebuilds its indexes on open.
    pub fn session_id_sources(mut self, sources: Vec<SessionIdSource>) -> Self {
        self.session_id_sources = sources;
        self
    }

    /// Largest encoded span accepted; larger spans are rejected.
    pub fn max_span_bytes(mut self, bytes: u32) -> Self {
        self.max_span_bytes = bytes.clamp(1024, (codec::MAX_DECODE_BYTES - 1024) as u32);
        self
    }

    /// Most spans a trace may hold; spans beyond it are rejected with a
    /// reason (the rest of the batch is stored). At most
    /// [`MAX_SPANS_PER_TRACE`], which is the default.
    pub fn max_spans_per_trace(mut self, spans: usize) -> Self {
        self.max_spans_per_trace = spans.clamp(1, MAX_SPANS_PER_TRACE);
        self
    }

    /// Encoded span bytes appended before the indexes take them, in one
    /// write transaction (64 MiB by default), unless
    /// [`index_batch_spans`](Self::index_batch_spans) spans come first.
    /// Appends only write the log until then; then the group is indexed on
    /// a thread of its own while later appends go on, one group at a time
    /// (a next group full meanwhile goes on taking appends up to four times
    /// these bytes, see [`index_batch_spans`](Self::index_batch_spans)), or,
    /// below 1 MiB, by the `append` that filled it. Any read, checkpoint or
    /// other write first indexes what is waiting, so every query still sees
    /// every acknowledged batch. Larger
    /// groups mean fewer index writes per span (faster ingest), hold more
    /// in memory (each of the two groups keeps what the indexes need of its
    /// spans: their ids, times and counts, and the inputs and outputs of
    /// root spans; a group whose root inputs and outputs reach 8 MiB is
    /// indexed whatever this says) and make the first read after a burst
    /// of appends wait longer. 0 indexes every batch as it is appended.
    pub fn index_batch_bytes(mut self, bytes: usize) -> Self {
        self.index_batch_bytes = bytes;
        self
    }

    /// Spans appended before the indexes take them (16,384 by default), the
    /// other bound of a group beside
    /// [`index_batch_bytes`](Self::index_batch_bytes), whichever comes
    /// first. What indexing a group costs is mostly per span plus a part
    /// per group (a commit, the session summaries its spans touch), and
    /// what it holds in memory is per span, so with ~500 B spans a group
    /// closes at about 8 MiB, with ~4 KiB spans at about 64 MiB. While the
    /// group before it is still being indexed, a group full by this count
    /// or by bytes goes on taking appends up to four times as many spans
    /// or bytes (but never beyond the bound of texts): under a sustained
    /// ingest that outruns indexing, groups grow and cost less per span,
    /// while a read after a burst waits for groups of up to that size.
    /// While no group is being indexed, a group of at least 1 MiB that
    /// holds a quarter of this count or of `index_batch_bytes` is indexed
    /// at once: an idle indexing thread does not wait for a full one.
    pub fn index_batch_spans(mut self, spans: usize) -> Self {
        self.index_batch_spans = spans;
        self
    }

    /// Write large appends to the log with direct I/O (`O_DIRECT` on
    /// Linux; on by default): the appended bytes go from the store's buffer
    /// to the disk without being copied into the operating system's page
    /// cache, a copy that cost more CPU than the rest of a durable append
    /// of large spans on this project's test machine (see
    /// `docs/BENCHMARK-ROUNDS.md`, sixth round).
    ///
    /// It applies to appends of at least 64 KiB of encoded spans under
    /// [`Durability::Sync`] and [`Durability::GroupCommit`], which wait for
    /// the disk anyway, and of at least 1 MiB under
    /// [`Durability::Buffered`]. A direct write waits for the disk itself
    /// (and, for the block it shares with the append before, for that
    /// block's page to be written back first), which only a large append
    /// hides: its blocks are written by the log's writer thread while the
    /// rest are made, and copying a batch that large into the page cache
    /// cost more than writing it directly (~4 KiB spans in batches of
    /// 1,000: about 1.5-2x the spans per second on this project's test
    /// machine). Smaller appends go through the page cache. Whole 4 KiB
    /// blocks go directly; the last, partial block of an append goes
    /// through the page cache and is written again, unchanged, by the next
    /// direct append. The log's files and the crash guarantees are the
    /// same either way. Where the file system has no direct I/O (tmpfs,
    /// other platforms), everything goes through the page cache, as with
    /// `false`. Spans written directly are read back from the disk rather
    /// than from memory (`trace`, compaction).
    pub fn direct_writes(mut self, direct: bool) -> Self {
        self.direct_writes = direct;
        self
    }

    /// Log bytes between durable index checkpoints (256 MiB by default):
    /// more means fewer fsyncs of the index, and a longer replay after a
    /// crash. A checkpoint is taken when this many bytes or
    /// [`checkpoint_spans`](Self::checkpoint_spans) spans have been appended
    /// since the last one, whichever comes first.
    pub fn checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes.max(1);
        self
    }

    /// Spans appended between durable index checkpoints (131,072 by
    /// default), the other bound beside
    /// [`checkpoint_bytes`](Self::checkpoint_bytes). Replaying the log after
    /// a crash costs mostly per span (each is indexed again), so with small
    /// spans this count is what bounds the replay (about a second by
    /// default), and with large ones the byte count; a checkpoint's own
    /// cost (writing deferred index changes, an fsync of the index) is then
    /// spread over at least this many spans or bytes.
    pub fn checkpoint_spans(mut self, spans: u64) -> Self {
        self.checkpoint_spans = spans.max(1);
        self
    }

    /// Verify the checksum of every page of the index file on open (the
    /// default). A damaged index is then detected, set aside as
    /// `index.redb.corrupt` and rebuilt from the log, and the open reports
    /// it ([`SessionStore::open_report`]). The check reads the whole index
    /// file (see `docs/RELIABILITY.md` for what it costs); without it redb
    /// trusts a file it closed cleanly, and may panic on one damaged since.
    /// After a crash redb checks the file anyway.
    pub fn check_index_on_open(mut self, check: bool) -> Self {
        self.check_index_on_open = check;
        self
    }

    /// Drop the index and rebuild it from the log while opening: the repair
    /// for an index that queries or [`SessionStore::verify`] report as
    /// damaged, when the open's own check did not catch it.
    pub fn rebuild_index_on_open(mut self, rebuild: bool) -> Self {
        self.rebuild_index_on_open = rebuild;
        self
    }

    /// Salvage a damaged log while opening. A log with a damaged frame
    /// (anything but a torn tail) refuses to open with
    /// [`ErrorKind::Corrupted`] naming the segment and offset; with this set,
    /// every frame whose checksum holds is kept, every damaged range is
    /// dropped and listed in [`OpenReport::salvage`], the original log is
    /// kept as `log.before-salvage`, and the index is rebuilt (also when
    /// the log is intact, which is then left as it is). See
    /// `docs/FORMAT.md` ("Salvage") and `docs/RELIABILITY.md`.
    pub fn salvage_log(mut self, salvage: bool) -> Self {
        self.salvage_log = salvage;
        self
    }

    /// Test support: the log and index files go through `fs` (for example
    /// `span_sessions::testing::SimFileSystem`, which injects faults and
    /// power loss). Not part of the stable API.
    #[doc(hidden)]
    pub fn file_system(mut self, fs: Arc<dyn FileSystem>) -> Self {
        self.file_system = Some(fs);
        self
    }

    /// Test support: `at` is called after each step of a salvage that
    /// rewrites the log (see [`SalvageStep`]), so that a test can copy the
    /// store as a crash there would leave it. Not part of the stable API.
    #[doc(hidden)]
    pub fn salvage_crash_points(mut self, at: Arc<dyn Fn(SalvageStep) + Send + Sync>) -> Self {
        self.salvage_crash_points = Some(CrashPoints(at));
        self
    }

    /// Test support: groups of pending spans of at least this many encoded
    /// bytes are indexed on a thread of their own (1 MiB by default), so
    /// that tests with little data can run the background path. Not part
    /// of the stable API.
    #[doc(hidden)]
    pub fn own_thread_bytes(mut self, bytes: usize) -> Self {
        self.own_thread_bytes = bytes;
        self
    }

    /// Trace homes (where each trace's record is stored) held in memory,
    /// 2^19 by default: about 25 MiB. The indexes look up every trace a
    /// group of appends touches, and the homes of traces new since the
    /// last write to their table are found in memory; a checkpoint makes
    /// them durable by appending them, sorted, to a table of runs that only
    /// an open reads. Once more than this many are held, they are all
    /// written into their B-tree, whose random keys put them on most of
    /// its leaves, and forgotten. A smaller bound holds less memory and
    /// costs that write more often (0: at every checkpoint); an open loads
    /// up to this many homes back from the runs.
    pub fn deferred_homes(mut self, homes: usize) -> Self {
        self.deferred_homes = homes;
        self
    }

    /// Opens (or creates) the store in `dir` with these options.
    pub fn open(self, dir: impl AsRef<Path>) -> Result<SessionStore> {
        SessionStore::open_with(dir.as_ref(), self)
    }
}

/// Pending spans of at least this many encoded bytes are indexed on a
/// thread of their own (while appends go on, or while the caller waits);
/// smaller groups are indexed on the caller's thread
/// (`StoreOptions::own_thread_bytes` in tests).
const OWN_THREAD_BYTES: usize = 1 << 20;

/// A group of pending spans whose root inputs and outputs (and user and
/// session ids) reach this many bytes is indexed, whatever
/// `index_batch_bytes` says: the group holds those texts in memory, and
/// spans that are large because of them must not make groups of 64 MiB.
const GROUP_HELD_BYTES: usize = 8 << 20;

/// A group full by its span count or its encoded bytes
/// (`StoreOptions::index_batch_spans`, `StoreOptions::index_batch_bytes`)
/// while the group before it is still being indexed takes further appends,
/// up to this many times that count or those bytes, instead of making the
/// append wait: when the indexing thread keeps up, groups stay small (the
/// first read after a burst waits for little); when it falls behind, they
/// grow, and a larger group costs less to index per span (the session
/// summaries and sort keys its spans touch are written once per group; a
/// million ~500 B spans in groups of 65,536 took 12% fewer instructions to
/// index than in groups of 16,384). A group holds the facts the indexes
/// need of its spans, not their encoded bytes, so growing by bytes holds
/// no more memory than growing by count. Groups full by texts do not grow:
/// that bound is what a group may hold in memory ([`GROUP_HELD_BYTES`]).
const GROUP_GROWTH: usize = 4;

/// A group a `GROUP_EARLY`th full is handed to an idle indexing thread
/// (see `SessionStore::group_goes`). While indexing keeps up, groups stay
/// about this small, which costs the indexing thread more per span (its
/// fixed costs per group are shared by fewer spans) but is work an idle
/// core does, and a read after a burst of appends waits for less; when
/// indexing falls behind, a group fills while the one before it is
/// indexed, and groups grow as before.
const GROUP_EARLY: usize = 4;

/// A checkpoint writing at least this many deferred search postings does
/// so on a thread of its own, waited for.
const OWN_THREAD_POSTINGS: usize = 1 << 16;

struct WriterState {
    /// Log end covered by the last durable index checkpoint.
    checkpointed: Lsn,
    /// Spans in the log that the indexes have not taken yet.
    pending: Pending,
    /// The group of spans being indexed on its own thread, if any.
    indexing: Option<Indexing>,
    /// Log end of the last checkpoint started (at least `checkpointed`).
    checkpoint_started: Lsn,
    /// Spans appended since the last checkpoint started.
    spans_since_checkpoint: u64,
}

/// An embedded store of spans grouped into sessions.
///
/// `SessionStore` is `Send + Sync`: share it with an `Arc`. Appends are
/// serialized; reads run on snapshots. A read first indexes the spans
/// appended but not indexed yet, if any (contract rule 8): it then waits
/// for the writer lock and for a group being indexed, as the first read
/// after a burst of appends does.
///
/// ```
/// use span_sessions::{ResourceSpans, SessionStore, Span, SpanId, TraceId};
/// # fn main() -> Result<(), span_sessions::Error> {
/// # let dir = tempfile::tempdir().map_err(|e| span_sessions::Error::Io { context: "tempdir".into(), source: e })?;
/// let store = SessionStore::open(dir.path())?;
/// let root = Span::new(TraceId([1; 16]), SpanId([1; 8]), None, "agent", 1_000, 2_000)
///     .with_attribute("session.id", "chat-42")
///     .with_attribute("input.value", "What is the capital of France?")
///     .with_attribute("output.value", "Paris.");
/// let report = store.append(&[ResourceSpans::for_project("support-bot", vec![root])])?;
/// assert_eq!(report.accepted, 1);
/// let turns = store.session_history("support-bot", "chat-42")?;
/// assert_eq!(turns[0].output.as_ref().map(|o| o.value.as_str()), Some("Paris."));
/// # Ok(()) }
/// ```
pub struct SessionStore {
    dir: PathBuf,
    opts: StoreOptions,
    cfg: IndexConfig,
    log: Arc<Log>,
    index: Arc<Index>,
    writer: Mutex<WriterState>,
    /// True while `WriterState::pending` holds spans or a group is being
    /// indexed: reads then index them first (contract rule 8). Set and
    /// cleared with the writer lock held.
    unapplied: AtomicBool,
    /// Groups an append found full and indexed (test support, see
    /// [`SessionStore::full_groups`]).
    full_groups: std::sync::atomic::AtomicU64,
    /// Index changes not yet in their tables (search postings, homes of
    /// new traces). Indexing merges each group's into it while committing
    /// (write lock held across the commit); reads that use it take the read
    /// lock while they open their snapshot, so they see exactly the changes
    /// of the groups their snapshot holds (searches may see more postings,
    /// which verification discards). Changed only under the writer lock.
    /// Written out at checkpoints, when large, and before deletes.
    deferred: Arc<RwLock<Deferred>>,
    poison: Poison,
    /// What the open found and repaired.
    open_report: OpenReport,
    /// Taken (shared) by reads that follow LSNs from an index snapshot into
    /// the log, and (exclusively) by compaction while it drops segments,
    /// so that no reader looks for a frame in a segment that is gone.
    read_gate: RwLock<()>,
    _lock: File,
}

/// One log record as the reading side of a replay reads it whole (a
/// span read for its facts only is left in the reader's scratch).
enum Replay {
    /// Boxed as decoded (`LogRecord::Span`): a span is large, and each
    /// frame's result is moved twice on its way.
    Span(Box<StoredSpan>),
    Delete(codec::DeleteRecord),
}

/// What the reading side of a replay sends the applying side.
enum Replayed {
    /// Decoded spans (what the indexes need of each).
    Spans(NewRecords),
    Delete(codec::DeleteRecord),
}

/// How much of each span a replay decodes.
#[derive(Clone, Copy)]
enum SpanReads {
    /// What the indexes take of it (`codec::decode_span_facts`): the rest
    /// is stepped over, not allocated or UTF-8-checked (a reopen, a
    /// rebuild; the frames' CRCs are checked either way, a reopen's by
    /// the log's recovery: see `Log::scan_checked_at_open`).
    Facts,
    /// All of it, as a read of the span does (`verify`).
    Whole,
}

/// A span that passed validation, waiting to be written.
struct Candidate<'a> {
    project: &'a str,
    resource: &'a [KeyValue],
    span: &'a Span,
    /// Its session id (`facts::session_id`), taken by the pending spans
    /// once the span is written.
    session_id: std::cell::Cell<Option<String>>,
    /// Its length encoded (`codec::encoded_span_len`).
    encoded_len: usize,
    /// How much of that its project and resource take
    /// (`codec::encoded_prefix_len`): the same bytes for every span of
    /// its resource, written once and copied.
    prefix_len: usize,
    /// Where its encoding starts in a batch encoded before it is written.
    at: usize,
    /// Its user id (`facts::user_id`), resolved by validation and moved
    /// into its index facts.
    user: std::cell::Cell<Option<String>>,
}

impl Candidate<'_> {
    /// Its index record: its facts, with its user and session id taken
    /// (made once), and its frame's length; the LSN and the project's
    /// place are set once it is written (`place_records`). Made with its
    /// encoding when the batch is encoded before the writer lock
    /// (concurrent appenders make them side by side), else by
    /// [`SpanFrames`] as its frame is asked for, each straight into the
    /// vector the pending spans take whole: a record is about 250 bytes,
    /// and moving it through a cell, an option and two calls cost the
    /// appending thread about 300 instructions a span.
    #[inline(always)]
    fn record(&self) -> NewRecord {
        NewRecord {
            lsn: 0,
            project: 0,
            span: SpanInfo::with_user(self.span, self.user.take()),
            session_id: self.session_id.take(),
            frame_bytes: u32::try_from(compaction::FRAME_HEADER + self.encoded_len as u64)
                .unwrap_or(u32::MAX),
        }
    }
}

/// Search postings sorted and encoded by a replay's gathering thread (see
/// `SessionStore::apply_replayed`), with the emptied buffer they came from
/// (its map's room is used again for the next ones).
type Gathered = (EncodedChunks, Postings);

/// Writes the postings a replay's gathering thread made and returns its
/// emptied buffer.
fn write_gathered(
    w: &mut IndexWriter,
    done: std::thread::ScopedJoinHandle<'_, Gathered>,
) -> Result<Postings> {
    // Gathering cannot fail; a panic there (a bug) fails the replay.
    let (chunks, emptied) = done.join().map_err(|_| Error::panicked())?;
    w.write_postings(&chunks)?;
    Ok(emptied)
}

/// Sets the LSN (`lsns`, one per record) and the project's place in
/// `pending` of each of `records`, the index records of `spans` in
/// order.
fn place_records(
    records: &mut [NewRecord],
    spans: &[&Candidate<'_>],
    lsns: &[Lsn],
    pending: &mut Pending,
) {
    // Spans come in runs of one resource: its project's place is looked
    // up once a run.
    let mut last: Option<(&str, usize)> = None;
    for ((r, c), lsn) in records.iter_mut().zip(spans).zip(lsns) {
        r.lsn = *lsn;
        r.project = match last {
            Some((p, at)) if std::ptr::eq(p, c.project) => at,
            _ => {
                let at = pending.project_at(c.project);
                last = Some((c.project, at));
                at
            }
        };
    }
}

/// Keeps the records of `made` (one per candidate of `all`, in order)
/// whose candidate is in `accepted` (some of `all`, in their order).
fn keep_accepted(made: &mut Vec<NewRecord>, all: &[Candidate<'_>], accepted: &[&Candidate<'_>]) {
    let mut all = all.iter();
    let mut accepted = accepted.iter().peekable();
    made.retain(|_| {
        let c = all.next();
        let taken = matches!((c, accepted.peek()), (Some(c), Some(a)) if std::ptr::eq(c, **a));
        if taken {
            accepted.next();
        }
        taken
    });
}

/// Adds `span_id` to `ids`, the stored span ids of trace `trace_id`, and
/// returns true, unless it is there already (a duplicate, counted in
/// `report`) or the trace holds `max` spans (rejected in `report`).
#[inline(always)]
fn take_span_id(
    ids: &mut SpanIdSet,
    span_id: SpanId,
    trace_id: TraceId,
    max: usize,
    report: &mut AppendReport,
) -> bool {
    // One probe of the set for a span taken (the usual case), two for
    // one refused.
    if ids.len() < max {
        if ids.insert(span_id.0) {
            return true;
        }
    } else if !ids.contains(&span_id.0) {
        report.rejected.push(Rejection {
            trace_id,
            span_id,
            reason: format!(
                "the trace already holds {} spans, the most a trace may hold",
                ids.len()
            ),
        });
        return false;
    }
    report.duplicates += 1;
    false
}

/// True when `a` and `b` are spans of one resource (the same project
/// and resource attributes, not equal copies): their records start with
/// the same bytes.
fn same_prefix(a: &Candidate<'_>, b: &Candidate<'_>) -> bool {
    std::ptr::eq(a.project, b.project) && std::ptr::eq(a.resource, b.resource)
}

/// The records of `candidates` (`bytes` in all), one after another, each
/// at its [`Candidate::at`]; each one's index record
/// ([`Candidate::record`]) pushed to `made`.
fn encode_candidates(
    candidates: &mut [Candidate<'_>],
    bytes: usize,
    made: &mut Vec<NewRecord>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(bytes);
    // The project, resource and start of the span encoded last.
    let mut last: Option<(&str, &[KeyValue], usize)> = None;
    for c in candidates.iter_mut() {
        c.at = buf.len();
        // A span of the resource before's copies its project and resource
        // from there (the same bytes).
        match last {
            Some((project, resource, at))
                if std::ptr::eq(project, c.project)
                    && std::ptr::eq(resource, c.resource)
                    && at + c.prefix_len <= c.at =>
            {
                buf.extend_from_within(at..at + c.prefix_len);
            }
            _ => codec::put_prefix(&mut buf, c.project, c.resource),
        }
        codec::put_span_body(&mut buf, c.span);
        last = Some((c.project, c.resource, c.at));
        // Made once here, not asked for again (`SpanFrames::made` none).
        made.push(c.record());
    }
    buf
}

/// The frames of an append's accepted spans: read from the batch's
/// encoding, or each encoded as the log writes it.
struct SpanFrames<'c, 'a> {
    spans: &'c [&'c Candidate<'a>],
    /// The batch encoded (each span at `Candidate::at`), if it was.
    encoded: Option<&'c [u8]>,
    /// Otherwise the span being written, encoded.
    scratch: Vec<u8>,
    /// The span `scratch` holds (its project and resource are kept for
    /// the next span of the same resource).
    last: Option<usize>,
    /// Where each span's index record ([`Candidate::record`]) goes when
    /// it is still to be made, in the order of `spans`: records are made
    /// with the batch's encoding when it was encoded before the writer
    /// lock, else as the span's frame is asked for (in a large append the
    /// log's writer thread is writing the frames before it meanwhile, so
    /// this work fills time the appending thread would spend waiting for
    /// the disk).
    made: Option<&'c mut Vec<NewRecord>>,
}

impl FrameSource for SpanFrames<'_, '_> {
    fn count(&self) -> usize {
        self.spans.len()
    }

    fn payload_len(&self, i: usize) -> usize {
        self.spans.get(i).map_or(0, |c| c.encoded_len)
    }

    fn frame(&mut self, i: usize) -> FrameRef<'_> {
        // The records of the spans up to this one, each made once.
        if let Some(made) = self.made.as_deref_mut() {
            while made.len() <= i {
                let Some(c) = self.spans.get(made.len()) else {
                    break;
                };
                made.push(c.record());
            }
        }
        if let Some(buf) = self.encoded {
            // A span that is not there, or bytes that are not, are an empty
            // payload, which the log refuses as not of the announced length.
            let payload = self
                .spans
                .get(i)
                .and_then(|c| buf.get(c.at..c.at + c.encoded_len))
                .unwrap_or(&[]);
            return FrameRef {
                tag: codec::TAG_SPAN_V1,
                payload,
            };
        }
        // A span that is not there is an empty payload, which the log
        // refuses as not of the announced length.
        let last = self.last.take().and_then(|l| self.spans.get(l));
        match self.spans.get(i) {
            Some(c) => {
                // The span before, of the same resource, leaves its
                // project and resource in place.
                let kept =
                    last.is_some_and(|l| same_prefix(l, c)) && self.scratch.len() >= c.prefix_len;
                if kept {
                    self.scratch.truncate(c.prefix_len);
                } else {
                    self.scratch.clear();
                    codec::put_prefix(&mut self.scratch, c.project, c.resource);
                }
                codec::put_span_body(&mut self.scratch, c.span);
                self.last = Some(i);
            }
            None => self.scratch.clear(),
        }
        FrameRef {
            tag: codec::TAG_SPAN_V1,
            payload: &self.scratch,
        }
    }
}

impl SessionStore {
    /// Opens (or creates) a store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<SessionStore> {
        StoreOptions::default().open(dir)
    }

    /// Options to open a store with.
    pub fn options() -> StoreOptions {
        StoreOptions::default()
    }

    fn open_with(dir: &Path, opts: StoreOptions) -> Result<SessionStore> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
            Err(TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", lock_path.display()), e));
            }
        }
        let cfg = IndexConfig {
            session_id_sources: opts.session_id_sources.clone(),
        };
        let fs: Arc<dyn FileSystem> = match &opts.file_system {
            None => Arc::new(OsFileSystem),
            Some(fs) => Arc::clone(fs),
        };
        let log_opts = LogOptions {
            segment_bytes: opts.segment_bytes,
            // Fixed, not `max_span_bytes`: lowering that option must not
            // make frames written earlier unreadable.
            max_frame_bytes: codec::MAX_DECODE_BYTES as u32,
            // See `StoreOptions::direct_writes`.
            direct_writes: opts.direct_writes.then_some(match opts.durability {
                Durability::Buffered => BUFFERED_DIRECT_MIN_APPEND_BYTES,
                _ => DIRECT_MIN_APPEND_BYTES,
            }),
        };
        let mut report = OpenReport::default();
        let mut rebuild = opts
            .rebuild_index_on_open
            .then(|| "StoreOptions::rebuild_index_on_open was set".to_owned());
        let started = Instant::now();
        if opts.salvage_log {
            // The index goes first, durably: the salvaged log's frames
            // have new positions, and an index that outlived a crash in
            // the middle of the swap would point at the wrong ones.
            repair::remove_index(fs.as_ref(), dir)?;
            let mut at = |step| {
                if let Some(points) = &opts.salvage_crash_points {
                    (points.0)(step);
                }
            };
            at(SalvageStep::IndexRemoved);
            let salvage = Log::salvage(Arc::clone(&fs), &dir.join("log"), log_opts, &mut at)?;
            // Rebuilt even from an intact log: the index may be what is
            // damaged, or may cover more than the log still holds.
            rebuild = Some(if salvage.original.is_some() {
                "the log was salvaged: its frames have new positions".to_owned()
            } else {
                "StoreOptions::salvage_log was set".to_owned()
            });
            report.salvage = Some(salvage);
        } else if Log::finish_interrupted_salvage(fs.as_ref(), &dir.join("log"))? {
            rebuild = Some(
                "a salvage cut short by a crash was completed: the log's frames have \
                 new positions"
                    .to_owned(),
            );
        }
        report.timings.log = started.elapsed();
        let started = Instant::now();
        let index = repair::open_index(
            &dir.join("index.redb"),
            opts.file_system.as_deref(),
            opts.cache_bytes,
            opts.check_index_on_open,
            rebuild,
            &mut report,
        )?;
        let fingerprint = u64::from(crc32fast::hash(&codec::encode_value(
            &cfg.session_id_sources,
        )));
        let format = index.meta(META_FORMAT)?;
        let stale = format != INDEX_FORMAT_VERSION || index.meta(META_CONFIG)? != fingerprint;
        if stale {
            // Format 0: a new index (of a new store, or one just set aside
            // above), which has nothing to rebuild.
            if format != 0 && report.index_rebuilt.is_none() {
                report.index_rebuilt = Some(if format == INDEX_FORMAT_VERSION {
                    "the session id sources (StoreOptions::session_id_sources) differ \
                     from those the index was built with"
                        .to_owned()
                } else {
                    format!(
                        "the index is of format {format}; this version writes format \
                         {INDEX_FORMAT_VERSION}"
                    )
                });
            }
            let mut w = index.begin_write()?;
            w.clear()?;
            w.set_meta(META_FORMAT, INDEX_FORMAT_VERSION)?;
            w.set_meta(META_CONFIG, fingerprint)?;
            w.commit()?;
        }
        let applied = index.meta(META_APPLIED)?;
        report.timings.index = started.elapsed();
        let started = Instant::now();
        let (log, recovered) = Log::open_on(fs, &dir.join("log"), log_opts, applied)?;
        report.log_truncated_bytes = recovered.truncated_bytes;
        report.log_rewritten_bytes = recovered.rewritten_bytes;
        report.log_frames_checked = recovered.frames_scanned;
        compaction::finish_interrupted(&index, &log)?;
        report.timings.log += started.elapsed();
        let homes_limit = opts.deferred_homes;
        let mut store = SessionStore {
            dir: dir.to_owned(),
            opts,
            cfg,
            log: Arc::new(log),
            index: Arc::new(index),
            writer: Mutex::new(WriterState {
                checkpointed: applied,
                pending: Pending::default(),
                indexing: None,
                checkpoint_started: applied,
                spans_since_checkpoint: 0,
            }),
            unapplied: AtomicBool::new(false),
            full_groups: std::sync::atomic::AtomicU64::new(0),
            deferred: Arc::new(RwLock::new(Deferred::with_homes_limit(homes_limit))),
            poison: Poison::default(),
            open_report: report,
            read_gate: RwLock::new(()),
            _lock: lock,
        };
        let (replayed, replay, checkpoint) = {
            let mut ws = store.lock_writer()?;
            let started = Instant::now();
            let mut w = store.index.begin_write()?;
            // The homes the last checkpoint holds as runs, for the replay
            // and for everything after it (see `index::home_runs`).
            let mut deferred = Deferred::with_homes_limit(store.opts.deferred_homes);
            deferred.run_homes = w.run_homes()?;
            // The frames recovery has just checked are not checked again.
            let n = store.replay(&mut w, applied, &mut deferred, SpanReads::Facts, true)?;
            let replay = started.elapsed();
            let started = Instant::now();
            store.commit_with_deferred(w, deferred)?;
            if n == 0 {
                store.checkpoint(&mut ws)?;
            } else {
                // The replayed indexes are committed: reads see them and
                // appends may go on. Making them durable (writing the
                // deferred changes, an fsync of the index: about half a
                // second after 1 GiB of log) is a checkpoint like those appends
                // take, on the indexing thread; the open does not wait for
                // it. The log was made durable by its recovery, so a crash
                // meanwhile only replays the same frames again.
                store.hand_off(&mut ws, true)?;
            }
            (n, replay, started.elapsed())
        };
        store.open_report.frames_replayed = replayed;
        store.open_report.timings.replay = replay;
        store.open_report.timings.checkpoint = checkpoint;
        Ok(store)
    }

    /// What opening the store found and repaired: a torn log tail cut, the
    /// frames replayed into the index, an index rebuilt (and why), what
    /// salvage dropped.
    pub fn open_report(&self) -> &OpenReport {
        &self.open_report
    }

    /// The directory holding the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, WriterState>> {
        self.writer.lock().map_err(|_| Error::panicked())
    }

    /// Takes the writer lock with every appended span indexed: for writes
    /// that need the indexes current (deletes, compaction, verify).
    fn lock_applied(&self) -> Result<MutexGuard<'_, WriterState>> {
        let mut ws = self.lock_writer()?;
        self.apply_pending(&mut ws)?;
        self.flush_homes().map_err(|e| self.poison(e))?;
        Ok(ws)
    }

    /// Indexes the spans appended but not indexed yet, if any, so that a
    /// read that starts now sees every batch whose `append` returned
    /// (contract rule 8).
    fn catch_up(&self) -> Result<()> {
        if self.unapplied.load(Ordering::Acquire) {
            let mut ws = self.lock_writer()?;
            let applied = self.apply_pending(&mut ws);
            if applied.is_err() && !self.unapplied.load(Ordering::Acquire) {
                // Work after a group failed (its checkpoint): the store is
                // poisoned, which writes report, but every appended span is
                // indexed, so reads go on.
                return Ok(());
            }
            applied?;
        }
        Ok(())
    }

    /// Indexes every appended span not indexed yet: waits for the group
    /// being indexed on its own thread, then indexes the pending spans.
    fn apply_pending(&self, ws: &mut WriterState) -> Result<()> {
        self.settle(ws)?;
        self.index_pending(ws)
    }

    /// Indexes the pending spans in one write transaction (no group may be
    /// being indexed). A failure poisons the store: the log holds spans the
    /// indexes could not take.
    fn index_pending(&self, ws: &mut WriterState) -> Result<()> {
        // Set while spans are pending, and still set after a failed apply:
        // reads then fail (the store is poisoned) rather than silently miss
        // acknowledged spans.
        if !self.unapplied.load(Ordering::Acquire) {
            // Nothing pending, but appends made only of duplicates may have
            // remembered span ids read from the index: forget them, since
            // the caller may be about to change the index (a delete).
            ws.pending.clear();
            return Ok(());
        }
        self.run_waiting(ws, false)
    }

    /// Indexes what is pending, then, with `checkpoint`, writes the
    /// deferred changes, syncs the log and makes the indexes durable, all
    /// while the caller waits (no group may be being indexed).
    fn run_waiting(&self, ws: &mut WriterState, checkpoint: bool) -> Result<()> {
        let unapplied = self.unapplied.load(Ordering::Acquire);
        if unapplied && self.poison.is_set() {
            return Err(self.poison.error());
        }
        // Large work runs on a thread of its own, waited for: the
        // allocator keeps each thread's freed memory for that thread, so
        // indexing and writing deferred changes on the caller's thread as
        // well would hold that memory twice (closing a store after 2
        // million spans peaked at 165-173 MiB of RSS where ingest peaked at
        // 133 MiB).
        let large = ws.pending.bytes() >= self.opts.own_thread_bytes
            || (checkpoint
                && self
                    .deferred
                    .read()
                    .is_ok_and(|d| d.postings.len() >= OWN_THREAD_POSTINGS));
        let (job, _) = self.take_job(ws, checkpoint);
        let end = job.applied;
        let outcome = if large {
            match self.group_indexer().start(job, Default::default()) {
                Ok(running) => running.wait(),
                Err(job) => self.group_indexer().run(job),
            }
        } else {
            self.group_indexer().run(job)
        };
        self.finish(ws, outcome, checkpoint.then_some(end))?;
        self.unapplied.store(false, Ordering::Release);
        Ok(())
    }

    /// Waits for the group being indexed on its own thread, if any, and
    /// for the checkpoint it takes.
    fn settle(&self, ws: &mut WriterState) -> Result<()> {
        match ws.indexing.take() {
            Some(job) => {
                let checkpoint = job.checkpoint;
                self.finish(ws, job.wait(), checkpoint)
            }
            None => Ok(()),
        }
    }

    /// Takes in how a job ended (`checkpoint`: the log end it checkpointed
    /// at, if it took a checkpoint). A failure poisons the store; if only
    /// what followed the group failed, the pending spans are indexed first
    /// (best effort, as in `log_failed_with`), so that reads keep seeing
    /// every acknowledged batch.
    fn finish(
        &self,
        ws: &mut WriterState,
        outcome: indexing::Outcome,
        checkpoint: Option<Lsn>,
    ) -> Result<()> {
        match outcome.result {
            Ok(()) => {
                if let Some(end) = checkpoint {
                    ws.checkpointed = end;
                }
                Ok(())
            }
            Err(e) => {
                if outcome.indexed && !self.poison.is_set() {
                    if ws.pending.is_empty() {
                        // Every appended span is indexed.
                        self.unapplied.store(false, Ordering::Release);
                    } else {
                        let _ = self.index_pending(ws);
                    }
                }
                Err(self.poison(e))
            }
        }
    }

    /// Starts indexing the pending spans on a thread of their own, once the
    /// group before them is indexed (see `store::indexing`); with
    /// `checkpoint`, the thread then also takes a checkpoint.
    fn hand_off(&self, ws: &mut WriterState, checkpoint: bool) -> Result<()> {
        self.settle(ws)?;
        if self.poison.is_set() {
            return Err(self.poison.error());
        }
        let (job, traces) = self.take_job(ws, checkpoint);
        match self.group_indexer().start(job, traces) {
            Ok(job) => {
                ws.indexing = Some(job);
                Ok(())
            }
            // No thread could be started: do the job here.
            Err(job) => {
                let end = job.checkpoint.then_some(job.applied);
                let outcome = self.group_indexer().run(job);
                self.finish(ws, outcome, end)
            }
        }
    }

    /// Takes the pending spans (if any) into a job that covers the log up
    /// to its end, with the span ids of the traces they touched; with
    /// `checkpoint`, the checkpoint at that end counts as started.
    fn take_job(
        &self,
        ws: &mut WriterState,
        checkpoint: bool,
    ) -> (Job, crate::hashing::FastMap<[u8; 16], SpanIdSet>) {
        let (group, traces) = if ws.pending.is_empty() {
            ws.pending.clear();
            (None, Default::default())
        } else {
            let (group, traces) = ws.pending.take();
            (Some(group), traces)
        };
        let applied = self.log.end();
        if checkpoint {
            ws.checkpoint_started = applied;
            ws.spans_since_checkpoint = 0;
        }
        let job = Job {
            group,
            applied,
            checkpoint,
        };
        (job, traces)
    }

    fn group_indexer(&self) -> GroupIndexer {
        GroupIndexer {
            log: Arc::clone(&self.log),
            index: Arc::clone(&self.index),
            deferred: Arc::clone(&self.deferred),
        }
    }

    /// A log write or fsync failed while `ws` is held. If the failure
    /// poisons the store, the spans acknowledged before it are indexed
    /// first (best effort: reads must keep seeing them, and the indexes
    /// are fenced once poisoned).
    fn log_failed_with(&self, ws: &mut WriterState, e: Error) -> Error {
        if self.log.is_poisoned() && !self.poison.is_set() {
            let _ = self.apply_pending(ws);
        }
        self.log_failed(e)
    }

    fn ensure_writable(&self) -> Result<()> {
        if self.poison.is_set() {
            return Err(self.poison.error());
        }
        if self.log.is_poisoned() {
            return Err(self.log.poisoned_error());
        }
        Ok(())
    }

    /// Reads and decodes the spans stored at `lsns`, in that order. Fails
    /// with the first failing read in log order, else with the first span
    /// in `lsns`' order that does not decode. Each frame is decoded where
    /// it was read (no copy of it) into its place in the result.
    fn read_spans(&self, lsns: &[Lsn]) -> Result<Vec<StoredSpan>> {
        let mut spans: Vec<StoredSpan> = lsns.iter().map(|_| codec::empty_span()).collect();
        // The first (in `lsns`' order) span that did not decode, and why.
        let mut failed: Option<(usize, codec::DecodeError)> = None;
        self.log.visit_many(lsns, |i, tag, payload| {
            if let Some(out) = spans.get_mut(i)
                && let Err(e) = codec::decode_span_into(tag, payload, out)
                && failed.as_ref().is_none_or(|&(first, _)| i < first)
            {
                failed = Some((i, e));
            }
            Ok(())
        })?;
        if let Some((i, e)) = failed {
            let lsn = lsns.get(i).copied().unwrap_or_default();
            return Err(self.corruption_at(lsn, e.0));
        }
        Ok(spans)
    }

    fn corruption_at(&self, lsn: Lsn, reason: String) -> Error {
        indexing::corruption_at(&self.log, lsn, reason)
    }

    /// Commits a group's index changes and publishes its deferred ones
    /// atomically with respect to reads (see `deferred`).
    fn commit_with_deferred(&self, w: IndexWriter, group: Deferred) -> Result<()> {
        indexing::commit_with_deferred(&self.deferred, w, group)
    }

    /// Writes every deferred index change to its table.
    fn flush_deferred(&self) -> Result<()> {
        indexing::flush_deferred(&self.index, &self.deferred)
    }

    /// Writes every held trace home to its table (dropping the runs):
    /// deletes, retention and compaction read traces from the tables alone.
    pub(super) fn flush_homes(&self) -> Result<()> {
        let mut deferred = self.deferred.write().map_err(|_| Error::panicked())?;
        if !deferred.holds_homes() {
            return Ok(());
        }
        let mut w = self.index.begin_write()?;
        w.merge_homes(&deferred.homes, &deferred.run_homes)?;
        w.commit()?;
        deferred.clear_homes();
        Ok(())
    }

    /// Re-applies every log frame from `from` (0: the start) to the end,
    /// in log order: spans before a tombstone are applied before it, so a
    /// delete removes on replay exactly what it removed when it was made.
    /// Returns the number of frames read.
    ///
    /// Two threads: one reads and decodes the log and derives what the
    /// indexes need of each span, the calling one applies it, in chunks as
    /// large as the groups appends are indexed in, at most two chunks
    /// ahead. `reads` says how much of each span is decoded;
    /// `checked_at_open` true (the open's replay) skips the checksums of
    /// the frames the log's recovery verified (`Log::scan_checked_at_open`).
    fn replay(
        &self,
        w: &mut IndexWriter,
        from: Lsn,
        deferred: &mut Deferred,
        reads: SpanReads,
        checked_at_open: bool,
    ) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Replayed>>(2);
        std::thread::scope(|scope| {
            let reader =
                scope.spawn(move || self.read_for_replay(from, &tx, reads, checked_at_open));
            let applied = self.apply_replayed(w, rx, deferred);
            // The receiver is gone: a reader blocked on sending stops.
            let frames = reader.join().map_err(|_| Error::panicked())?;
            applied.and(frames)
        })
    }

    /// The reading side of [`Self::replay`]: sends chunks of decoded spans
    /// and each tombstone in log order, or the error that stopped it.
    /// Returns the number of frames read.
    fn read_for_replay(
        &self,
        from: Lsn,
        tx: &std::sync::mpsc::SyncSender<Result<Replayed>>,
        reads: SpanReads,
        checked_at_open: bool,
    ) -> Result<u64> {
        // As large as the groups appends are indexed in (at least 1 MiB
        // and 1,024 spans).
        let chunk_bytes = self.opts.index_batch_bytes.max(1 << 20);
        let chunk_spans = self.opts.index_batch_spans.max(1 << 10);
        // Each chunk gets room for as many spans as the one before held
        // (the first for up to 1,024), not a vector grown by doubling.
        let mut chunk = NewRecords::with_capacity(chunk_spans.min(1 << 10));
        let mut chunk_bytes_now = 0usize;
        // Texts the chunk holds, bounded as a group's are.
        let mut chunk_held = 0usize;
        // The place in `chunk` of the project of the span added last.
        let mut project_place: Option<usize> = None;
        let mut frames = 0u64;
        let send = |msg: Result<Replayed>| tx.send(msg).is_ok();
        let sources = &self.cfg.session_id_sources;
        let fact_keys = facts::FactKeys::new(sources);
        // Where spans are read for their facts, one after another, each
        // reusing the buffers of the one before.
        let mut scratch = codec::FactsScratch::new();
        let scan = if checked_at_open {
            self.log.scan_checked_at_open(from)
        } else {
            self.log.scan(from)
        };
        for item in scan {
            let (lsn, frame) = match item {
                Ok(d) => d,
                Err(e) => {
                    send(Err(e));
                    return Ok(frames);
                }
            };
            let bytes = frame.payload().len();
            let frame_bytes =
                u32::try_from(compaction::FRAME_HEADER + bytes as u64).unwrap_or(u32::MAX);
            // The project's place in the chunk: the last span's, or looked
            // up (spans come in runs of one project).
            let mut place = |chunk: &mut NewRecords, project: &str| match project_place {
                Some(at) if chunk.parts().1.get(at).is_some_and(|p| p == project) => at,
                _ => {
                    let at = chunk.project_at(project);
                    project_place = Some(at);
                    at
                }
            };
            let record = match (frame.tag(), reads) {
                // Read for its facts, its record built from them.
                (codec::TAG_SPAN_V1, SpanReads::Facts) => {
                    scratch.read(frame.tag(), frame.payload(), &fact_keys, |f| {
                        let record = NewRecord {
                            lsn,
                            project: place(&mut chunk, f.project),
                            span: SpanInfo::of_parts(f.head, f, facts::user_id(f)),
                            session_id: facts::session_id(f, sources),
                            frame_bytes,
                        };
                        chunk_held += record.span.text_bytes()
                            + record.session_id.as_ref().map_or(0, String::len);
                        chunk.push_record(record);
                        None
                    })
                }
                (tag, _) => codec::decode_record(tag, frame.payload()).map(|r| match r {
                    LogRecord::Span(s) => Some(Replay::Span(s)),
                    LogRecord::Delete(d) => Some(Replay::Delete(d)),
                }),
            };
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    send(Err(self.corruption_at(lsn, e.0)));
                    return Ok(frames);
                }
            };
            frames += 1;
            chunk_bytes_now += bytes;
            match record {
                None => {}
                Some(Replay::Span(stored)) => {
                    let record = NewRecord {
                        lsn,
                        project: place(&mut chunk, &stored.project),
                        span: SpanInfo::of(&stored.span),
                        session_id: facts::session_id(&stored.span, sources),
                        frame_bytes,
                    };
                    chunk_held += record.span.text_bytes()
                        + record.session_id.as_ref().map_or(0, String::len);
                    chunk.push_record(record);
                }
                Some(Replay::Delete(del)) => {
                    let room = chunk.len();
                    let spans = std::mem::replace(&mut chunk, NewRecords::with_capacity(room));
                    project_place = None;
                    chunk_bytes_now = 0;
                    chunk_held = 0;
                    if !send(Ok(Replayed::Spans(spans))) || !send(Ok(Replayed::Delete(del))) {
                        return Ok(frames);
                    }
                }
            }
            if chunk_bytes_now >= chunk_bytes
                || chunk_held >= GROUP_HELD_BYTES
                || chunk.len() >= chunk_spans
            {
                chunk_bytes_now = 0;
                chunk_held = 0;
                let room = chunk.len();
                let spans = std::mem::replace(&mut chunk, NewRecords::with_capacity(room));
                project_place = None;
                if !send(Ok(Replayed::Spans(spans))) {
                    return Ok(frames);
                }
            }
        }
        send(Ok(Replayed::Spans(chunk)));
        Ok(frames)
    }

    /// The applying side of [`Self::replay`].
    fn apply_replayed(
        &self,
        w: &mut IndexWriter,
        rx: std::sync::mpsc::Receiver<Result<Replayed>>,
        deferred: &mut Deferred,
    ) -> Result<()> {
        let source: &dyn SpanSource = &*self.log;
        // A replay never looks at the store's deferred changes: it starts
        // from the tables and the homes in `deferred` (open, rebuild and
        // verify see to that).
        let none = Deferred::default();
        std::thread::scope(|scope| {
            // A long replay's deferred changes go to their tables as they
            // grow, not all at the end (memory stays bounded). Their search
            // postings are sorted and encoded on a thread of their own
            // while the next chunks are applied, and written once that
            // thread is done (at the next such write, or at the end): on
            // this thread, which bounds the replay, they took about a
            // twelfth of its instructions. At most two sets of postings
            // are held meanwhile. The transaction is the same one, so
            // what the tables hold when it commits is unchanged.
            let mut gathering: Option<std::thread::ScopedJoinHandle<'_, Gathered>> = None;
            let mut spare = Postings::default();
            // Each applied chunk, with the turn texts its apply moved out,
            // is freed on a thread of its own: about 20 M instructions per
            // 132,000 spans on this thread. At most two wait there; when
            // they do, this thread frees the chunk itself.
            let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel::<(NewRecords, Spent)>(2);
            scope.spawn(move || spent_rx.into_iter().for_each(drop));
            for msg in rx {
                match msg? {
                    Replayed::Spans(mut chunk) => {
                        let spent = w.apply(&mut chunk, source, self.log.end(), deferred, &none)?;
                        // (A full queue hands the pair back, dropped here.)
                        let _ = spent_tx.try_send((chunk, spent));
                        if deferred.is_large() {
                            if let Some(done) = gathering.take() {
                                spare = write_gathered(w, done)?;
                            }
                            let full = deferred.homes_full();
                            let homes =
                                w.write_held_homes(&deferred.homes, &deferred.run_homes, full)?;
                            let mut postings = std::mem::replace(
                                &mut deferred.postings,
                                std::mem::take(&mut spare),
                            );
                            gathering = Some(scope.spawn(move || {
                                let chunks = postings.chunks();
                                postings.clear();
                                (chunks, postings)
                            }));
                            deferred.written(homes);
                        }
                    }
                    Replayed::Delete(del) => {
                        // Deletes find traces through the tables alone.
                        w.merge_homes(&deferred.homes, &deferred.run_homes)?;
                        deferred.clear_homes();
                        w.delete_traces(&del.traces, source)?;
                    }
                }
            }
            if let Some(done) = gathering.take() {
                write_gathered(w, done)?;
            }
            Ok(())
        })
    }

    /// Syncs the log and makes the index durable up to the log's end.
    fn checkpoint(&self, ws: &mut WriterState) -> Result<()> {
        self.settle(ws)?;
        self.run_waiting(ws, true)
    }

    /// Refuses writes from now on, because of `cause`, and fences the index
    /// so that not even closing it writes to it: the indexes may be ahead of
    /// what the log holds on disk, and only the last durable checkpoint (and
    /// a replay of the log from it on reopen) is known to agree with the log.
    /// Returns the error to report (`Poisoned`, with the first cause).
    fn poison(&self, cause: Error) -> Error {
        self.index.fence();
        match cause {
            // The log poisoned itself: share its cause.
            Error::Poisoned { cause } => {
                self.poison.adopt(cause);
                self.poison.error()
            }
            e => self.poison.poison(e),
        }
    }

    /// A log call failed: if the failure poisoned the log, it poisons the
    /// store too; other errors (invalid input) are returned as they are.
    fn log_failed(&self, e: Error) -> Error {
        if self.log.is_poisoned() {
            self.poison(e)
        } else {
            e
        }
    }

    fn is_poisoned(&self) -> bool {
        self.poison.is_set() || self.log.is_poisoned()
    }

    fn validate(
        &self,
        project: &str,
        span: &Span,
        session_id: &std::result::Result<Option<String>, facts::IdTooLong>,
        user: &std::result::Result<Option<String>, facts::IdTooLong>,
        encoded_len: usize,
    ) -> std::result::Result<(), String> {
        if span.trace_id.is_zero() {
            return Err("trace_id is all zeros".into());
        }
        if span.span_id.is_zero() {
            return Err("span_id is all zeros".into());
        }
        if span.parent_span_id.is_some_and(|p| p.is_zero()) {
            return Err("parent_span_id is all zeros (use None for a root span)".into());
        }
        if project.len() > MAX_ID_BYTES {
            return Err(format!(
                "project name is {} bytes, more than {MAX_ID_BYTES}",
                project.len()
            ));
        }
        // Both measured against the limit before they are written out as
        // text, so that a huge array value costs no more than the limit.
        if let Err(e) = session_id {
            return Err(e.reason("session id", MAX_ID_BYTES));
        }
        if let Err(e) = user {
            return Err(e.reason("user.id", MAX_ID_BYTES));
        }
        if encoded_len > self.opts.max_span_bytes as usize {
            return Err(format!(
                "span encodes to {encoded_len} bytes, more than the limit of {}",
                self.opts.max_span_bytes
            ));
        }
        // Any span may head its trace's turn (a root, or the stand-in for
        // one that never arrives). A span too small to hold a value that
        // long as text is not looked through.
        if encoded_len.saturating_mul(facts::TEXT_PER_ENCODED_BYTE) <= MAX_IO_TEXT_BYTES {
            return Ok(());
        }
        for (value, mime) in [
            (
                crate::model::keys::INPUT_VALUE,
                crate::model::keys::INPUT_MIME_TYPE,
            ),
            (
                crate::model::keys::OUTPUT_VALUE,
                crate::model::keys::OUTPUT_MIME_TYPE,
            ),
        ] {
            if facts::io_len_within(span, value, mime, MAX_IO_TEXT_BYTES).is_none() {
                return Err(format!(
                    "{value} comes to more than {MAX_IO_TEXT_BYTES} bytes as text, with \
                     its mime type (a turn and its session's summary show it as text)"
                ));
            }
        }
        Ok(())
    }

    /// Stores a batch of spans.
    ///
    /// Each span is stored, recognised as a duplicate of a stored span
    /// (same trace id and span id: ignored, so exporter retries are
    /// harmless), or rejected with a reason while the rest of the batch is
    /// stored. When `append` returns, every query sees the batch; under
    /// [`Durability::Sync`] and [`Durability::GroupCommit`] it is also on
    /// disk. An `Err` means nothing of the batch was acknowledged.
    pub fn append(&self, batch: &[ResourceSpans]) -> Result<AppendReport> {
        self.ensure_writable()?;
        let mut report = AppendReport::default();
        // Validation needs each span's encoded length, counted here.
        let mut batch_bytes = 0;
        let mut candidates: Vec<Candidate<'_>> =
            Vec::with_capacity(batch.iter().map(|rs| rs.spans.len()).sum());
        for rs in batch {
            let project = rs.project();
            // The same for every span of the resource.
            let prefix_len = codec::encoded_prefix_len(project, &rs.resource);
            for span in &rs.spans {
                let encoded_len = prefix_len + codec::encoded_body_len(span);
                let session_id =
                    facts::session_id_within(span, &self.cfg.session_id_sources, MAX_ID_BYTES);
                let user = facts::user_id_within(span, MAX_ID_BYTES);
                match self.validate(project, span, &session_id, &user, encoded_len) {
                    Ok(()) => {
                        let session_id = session_id.ok().flatten();
                        let user = user.ok().flatten();
                        batch_bytes += encoded_len;
                        candidates.push(Candidate {
                            project,
                            resource: &rs.resource,
                            span,
                            session_id: std::cell::Cell::new(session_id),
                            encoded_len,
                            prefix_len,
                            at: 0,
                            user: std::cell::Cell::new(user),
                        });
                    }
                    Err(reason) => {
                        report.rejected.push(Rejection {
                            trace_id: span.trace_id,
                            span_id: span.span_id,
                            reason,
                        });
                    }
                }
            }
        }

        // A batch the log writes behind its making (see `Log::writes_behind`)
        // is encoded as the log writes it, so that the disk takes its first
        // blocks while the rest is encoded; a smaller one here, before the
        // writer lock, so that concurrent appenders encode side by side.
        // The spans' index records, made with the encoding (one per
        // candidate) or as the log asks for the frames (one per span
        // accepted), moved to the pending spans together.
        let mut made: Vec<NewRecord> = Vec::with_capacity(candidates.len());
        let encoded = if self
            .log
            .writes_behind(batch_bytes as u64, candidates.len() as u64)
        {
            None
        } else {
            Some(encode_candidates(&mut candidates, batch_bytes, &mut made))
        };

        let mut ws = self.lock_writer()?;
        self.ensure_writable()?;
        let ws_ref = &mut *ws;
        // A batch that will hand the pending group off (or find the group
        // before it done) first waits for the group being indexed, so that
        // a failure there is reported before this batch is written.
        // (A batch's texts are part of its encoded bytes, so `batch_bytes`
        // bounds what it adds to those held.) A full group goes on growing
        // while the group before it is still being indexed, so it is
        // handed off only when that one was
        // done before this batch (and settled here) or when it is capped
        // (see `group_goes`).
        let (bytes, held, spans) = (
            ws_ref.pending.bytes() + batch_bytes,
            ws_ref.pending.held() + batch_bytes,
            ws_ref.pending.len() + candidates.len(),
        );
        let busy = ws_ref.indexing.as_ref().is_some_and(|job| !job.is_done());
        let hands_off = self.group_goes(bytes, held, spans, busy)
            || (self.log.end()
                + batch_bytes as u64
                + compaction::FRAME_HEADER * candidates.len() as u64)
                .saturating_sub(ws_ref.checkpoint_started)
                >= self.opts.checkpoint_bytes
            || ws_ref.spans_since_checkpoint + candidates.len() as u64
                >= self.opts.checkpoint_spans;
        if hands_off || ws_ref.indexing.as_ref().is_some_and(Indexing::is_done) {
            self.settle(ws_ref)?;
        }
        // Idempotency and the per-trace limit, against the indexes, the
        // group being indexed and the spans waiting to be indexed (read once
        // per trace per group).
        let mut snapshot = None;
        let mut accepted = Vec::with_capacity(candidates.len());
        // The span ids of the trace of the span before: a trace's spans
        // usually come together, and are checked against one set found
        // once.
        let mut last: Option<([u8; 16], &mut SpanIdSet)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let (trace_id, span_id) = (c.span.trace_id, c.span.span_id);
            if let Some((t, ids)) = &mut last
                && *t == trace_id.0
            {
                if !take_span_id(
                    ids,
                    span_id,
                    trace_id,
                    self.opts.max_spans_per_trace,
                    &mut report,
                ) {
                    continue;
                }
                accepted.push(c);
                continue;
            }
            let ids = match ws_ref.pending.trace_mut(&trace_id.0) {
                Some(ids) => ids,
                None => {
                    // A trace the group being indexed touched: the indexes
                    // may not hold that group yet.
                    let indexing = ws_ref.indexing.as_ref();
                    let ids = match indexing.and_then(|job| job.traces.get(&trace_id.0)) {
                        Some(ids) => ids.clone(),
                        None => {
                            // The deferred changes are read with the snapshot
                            // they belong to, as reads do: the indexing thread
                            // may commit or write them out meanwhile.
                            let looked: Result<SpanIdSet> = 'look: {
                                let (deferred, lookup) = match &mut snapshot {
                                    Some(s) => s,
                                    None => {
                                        let Ok(deferred) = self.deferred.read() else {
                                            break 'look Err(Error::panicked());
                                        };
                                        let opened = self
                                            .index
                                            .begin_read()
                                            .and_then(|txn| crate::index::SpanIdLookup::open(&txn));
                                        match opened {
                                            Ok(lookup) => snapshot.insert((deferred, lookup)),
                                            Err(e) => break 'look Err(e),
                                        }
                                    }
                                };
                                lookup
                                    .span_ids(deferred, trace_id.0)
                                    .map(|ids| ids.into_iter().collect())
                            };
                            match looked {
                                Ok(ids) => ids,
                                Err(e) => {
                                    // The spans taken so far are not written:
                                    // they must not count as stored.
                                    drop(snapshot);
                                    ws_ref.pending.forget_spans(accepted.iter().map(
                                        |c: &&Candidate<'_>| (c.span.trace_id.0, c.span.span_id.0),
                                    ));
                                    return Err(e);
                                }
                            }
                        }
                    };
                    // Room for this trace's spans that follow in the
                    // batch (a trace's spans usually come together), not
                    // a set grown and rehashed every few spans.
                    let mut ids = ids;
                    ids.reserve(
                        candidates
                            .iter()
                            .skip(i)
                            .take_while(|n| n.span.trace_id == trace_id)
                            .count(),
                    );
                    ws_ref.pending.insert_trace(trace_id.0, ids)
                }
            };
            let taken = take_span_id(
                ids,
                span_id,
                trace_id,
                self.opts.max_spans_per_trace,
                &mut report,
            );
            last = Some((trace_id.0, ids));
            if taken {
                accepted.push(c);
            }
        }
        drop(snapshot);
        report.accepted = accepted.len();
        if accepted.is_empty() {
            // A duplicate may be of a span another append has written and
            // not yet made durable (an exporter's retry racing its first
            // try, which waits for its fsync under group commit): it is
            // acknowledged only once the log is durable as far as it is
            // written, as that append will be.
            if report.duplicates > 0 {
                let end = self.log.end();
                self.make_durable(ws, end)?;
            }
            return Ok(report);
        }
        if encoded.is_some() && accepted.len() < candidates.len() {
            keep_accepted(&mut made, &candidates, &accepted);
        }
        let mut frames = SpanFrames {
            spans: &accepted,
            encoded: encoded.as_deref(),
            scratch: Vec::new(),
            last: None,
            made: encoded.is_none().then_some(&mut made),
        };
        let lsns = match self.log.append_from(&mut frames) {
            Ok(lsns) => lsns,
            Err(e) => {
                // Nothing of this batch is acknowledged; its span ids must
                // not count as stored.
                ws_ref.pending.forget_spans(
                    accepted
                        .iter()
                        .map(|c| (c.span.trace_id.0, c.span.span_id.0)),
                );
                return Err(self.log_failed_with(ws_ref, e));
            }
        };
        drop(frames);
        let end = self.log.end();
        // Records of spans the log did not ask for (it asks for each).
        while let Some(c) = accepted.get(made.len()) {
            made.push(c.record());
        }
        place_records(&mut made, &accepted, &lsns, &mut ws_ref.pending);
        let bytes = accepted.iter().map(|c| c.encoded_len).sum();
        ws_ref.pending.push_all(&mut made, bytes);
        self.unapplied.store(true, Ordering::Release);
        ws_ref.spans_since_checkpoint += accepted.len() as u64;
        if end.saturating_sub(ws_ref.checkpoint_started) >= self.opts.checkpoint_bytes
            || ws_ref.spans_since_checkpoint >= self.opts.checkpoint_spans
        {
            // The log part of a checkpoint is the append's: a failure is
            // this append's error, before anything is acknowledged (a failed
            // fsync may drop written pages, even under `Buffered`). The rest
            // is the indexing thread's, after the group.
            self.log
                .sync(end)
                .map_err(|e| self.log_failed_with(ws_ref, e))?;
            self.hand_off(ws_ref, true)?;
        } else if self.group_goes(
            ws_ref.pending.bytes(),
            ws_ref.pending.held(),
            ws_ref.pending.len(),
            // Busy unless settled before this batch was written (a job
            // done since is taken up by the next append).
            ws_ref.indexing.is_some(),
        ) {
            self.full_groups.fetch_add(1, Ordering::Relaxed);
            if ws_ref.pending.bytes() >= self.opts.own_thread_bytes {
                self.hand_off(ws_ref, false)?;
            } else {
                // A small group is indexed here: starting a thread would
                // cost more than the overlap gains.
                self.apply_pending(ws_ref)?;
            }
        }
        self.make_durable(ws, end)?;
        Ok(report)
    }

    /// Test support: how many times since open an append found the pending
    /// spans a group to index ([`StoreOptions::index_batch_bytes`],
    /// [`StoreOptions::index_batch_spans`]: full, or a quarter full while
    /// no group was being indexed) and had it indexed. Not part of the
    /// stable API.
    #[doc(hidden)]
    pub fn full_groups(&self) -> u64 {
        self.full_groups.load(Ordering::Relaxed)
    }

    /// True when a group of `spans` spans of `bytes` encoded bytes, holding
    /// `held` bytes of text, is to be indexed (see
    /// [`StoreOptions::index_batch_bytes`]).
    fn group_full(&self, bytes: usize, held: usize, spans: usize) -> bool {
        bytes >= self.opts.index_batch_bytes
            || held >= GROUP_HELD_BYTES
            || spans >= self.opts.index_batch_spans
    }

    /// True when a group of `spans` spans of `bytes` encoded bytes, holding
    /// `held` bytes of text, is to be handed to the indexes now: it is full
    /// and either no group is being indexed (`busy` false) or it may not
    /// wait any longer for that one, holding [`GROUP_GROWTH`] times
    /// [`StoreOptions::index_batch_spans`] spans or
    /// [`StoreOptions::index_batch_bytes`] bytes, or as many texts as a
    /// group may hold at all.
    ///
    /// A group not full yet also goes when no group is being indexed and it
    /// holds a [`GROUP_EARLY`]th of a full group's spans or bytes, and at
    /// least `own_thread_bytes` bytes, so that it is indexed on a thread
    /// of its own: the indexing thread would otherwise sit idle while the
    /// group fills.
    fn group_goes(&self, bytes: usize, held: usize, spans: usize, busy: bool) -> bool {
        let capped = bytes >= self.opts.index_batch_bytes.saturating_mul(GROUP_GROWTH)
            || held >= GROUP_HELD_BYTES
            || spans >= self.opts.index_batch_spans.saturating_mul(GROUP_GROWTH);
        let early = bytes >= self.opts.own_thread_bytes
            && (bytes >= self.opts.index_batch_bytes / GROUP_EARLY
                || spans >= self.opts.index_batch_spans / GROUP_EARLY);
        (self.group_full(bytes, held, spans) && (!busy || capped)) || (!busy && early)
    }

    /// Waits, as the durability mode asks, until the log is durable up to
    /// `end`. Group commit releases the writer first, so that appenders
    /// queued behind it can share the fsync.
    fn make_durable(&self, mut ws: MutexGuard<'_, WriterState>, end: Lsn) -> Result<()> {
        match self.opts.durability {
            Durability::Sync => self
                .log
                .sync(end)
                .map_err(|e| self.log_failed_with(&mut ws, e)),
            Durability::GroupCommit => {
                drop(ws);
                self.log.sync(end).map_err(|e| {
                    // Batches acknowledged before this one must stay
                    // readable: index them before the store is fenced.
                    match self.lock_writer() {
                        Ok(mut ws) => self.log_failed_with(&mut ws, e),
                        Err(_) => self.log_failed(e),
                    }
                })
            }
            Durability::Buffered => Ok(()),
        }
    }

    /// Makes everything appended so far durable (log and indexes), in any
    /// durability mode.
    pub fn sync(&self) -> Result<()> {
        self.ensure_writable()?;
        let mut ws = self.lock_writer()?;
        self.checkpoint(&mut ws)
    }

    /// Drops the indexes and recreates them from the log alone.
    pub fn rebuild_indexes(&self) -> Result<()> {
        self.ensure_writable()?;
        let mut ws = self.lock_applied()?;
        let mut w = self.index.begin_write()?;
        w.clear()?;
        let mut deferred = Deferred::with_homes_limit(self.opts.deferred_homes);
        self.replay(&mut w, 0, &mut deferred, SpanReads::Facts, false)?;
        {
            // Whatever was deferred described the tables just cleared. It
            // goes in the same hold of the lock as the rebuilt tables come
            // in: a read between the two would pair an empty buffer with
            // the old tables, which lack the postings it held (a search
            // would miss acknowledged sessions).
            let mut held = self.deferred.write().map_err(|_| Error::panicked())?;
            w.commit()?;
            held.clear();
            held.merge(deferred);
        }
        self.checkpoint(&mut ws)
    }

    /// Checks the whole store: every log frame's checksum and encoding, and
    /// that every index table equals what a replay of the log derives
    /// (rebuilt into a temporary file next to the index, then removed), and
    /// that the live bytes it counts per log segment are those of the
    /// frames it refers to. Read-only apart from writing the changes held
    /// in memory (search postings, trace homes) to their tables; appends
    /// wait while it runs, and so does a read that finds spans not yet
    /// indexed (it indexes them first). Damage is reported in the result,
    /// not as `Err`.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.ensure_writable()?;
        let _ws = self.lock_applied()?;
        let tmp = self.dir.join("verify-index.redb.tmp");
        let remove = |p: &Path| match fs::remove_file(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", p.display()), e)),
        };
        remove(&tmp)?;
        let result = self.verify_into(&tmp);
        remove(&tmp)?;
        result
    }

    fn verify_into(&self, tmp: &Path) -> Result<VerifyReport> {
        let mut report = VerifyReport {
            log_bytes: self.segment_list().iter().map(|s| s.bytes).sum(),
            ..VerifyReport::default()
        };
        let fresh = Index::open(tmp, 16 << 20)?;
        let mut w = fresh.begin_write()?;
        let mut deferred = Deferred::default();
        // Every span decoded whole: verify reports any frame that does not
        // decode, not only those whose facts do not.
        match self.replay(&mut w, 0, &mut deferred, SpanReads::Whole, false) {
            Ok(frames) => report.frames = frames,
            Err(e) if e.kind() == ErrorKind::Corrupted => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
        w.commit()?;
        let mut w = fresh.begin_write()?;
        w.write_postings(&deferred.postings.chunks())?;
        w.merge_homes(&deferred.homes, &deferred.run_homes)?;
        w.commit()?;
        self.flush_deferred()?;
        let live = self.index.begin_read()?;
        let expected = fresh.begin_read()?;
        report.problems = crate::index::compare(&live, &expected)?;
        if report.problems.is_empty() {
            self.check_live_bytes(&mut report.problems)?;
        }
        Ok(report)
    }

    /// Store-wide figures: totals over projects, log segments (with their
    /// live and dead bytes, which the index keeps per segment), file
    /// sizes. Reads no log frame.
    pub fn stats(&self) -> Result<StoreStats> {
        self.catch_up()?;
        let txn = self.index.begin_read()?;
        let projects = query::projects(&txn)?;
        let mut st = StoreStats {
            projects: projects.len() as u64,
            ..StoreStats::default()
        };
        for p in &projects {
            if let Some(ps) = query::project_stats(&txn, p)? {
                st.sessions += ps.sessions;
                st.traces += ps.traces;
                st.spans += ps.spans;
            }
        }
        st.segments = self.segment_stats()?;
        st.log_bytes = st.segments.iter().map(|s| s.bytes).sum();
        let index = self.dir.join("index.redb");
        st.index_bytes = fs::metadata(&index)
            .map_err(|e| Error::io(format!("reading {}", index.display()), e))?
            .len();
        st.applied_lsn = self.log.end();
        Ok(st)
    }

    /// A session's turns in (start, trace id) order, all of them.
    /// Empty when the session does not exist.
    pub fn session_history(&self, project: &str, session_id: &str) -> Result<Vec<Turn>> {
        self.catch_up()?;
        let txn = self.index.begin_read()?;
        let page = query::history_page(&txn, project, session_id, usize::MAX, None)?;
        Ok(page.items)
    }

    /// One page of a session's turns: at most `limit`, after `cursor` (the
    /// previous page's `next_cursor`). A session of any size can be read
    /// page by page in constant memory.
    pub fn session_history_page(
        &self,
        project: &str,
        session_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<Turn>> {
        self.catch_up()?;
        let txn = self.index.begin_read()?;
        query::history_page(&txn, project, session_id, limit, cursor)
    }

    /// The summary of one session (contract rule 6); `None` if unknown.
    pub fn session(&self, project: &str, session_id: &str) -> Result<Option<SessionSummary>> {
        self.catch_up()?;
        let txn = self.index.begin_read()?;
        query::session(&txn, project, session_id)
    }

    /// One page of a project's sessions, sorted as asked.
    pub fn sessions(&self, project: &str, q: &SessionQuery) -> Result<Page<SessionSummary>> {
        let (txn, matcher) = self.prepare(project, &q.filter)?;
        query::sessions(&txn, matcher.as_ref(), q)
    }

    /// Opens a snapshot and prepares a filter against it and the search buffer.
    fn prepare(
        &self,
        project: &str,
        filter: &SessionFilter,
    ) -> Result<(redb::ReadTransaction, Option<query::Matcher>)> {
        self.catch_up()?;
        let deferred = self.deferred.read().map_err(|_| Error::panicked())?;
        let txn = self.index.begin_read()?;
        let matcher = query::Matcher::new(&txn, project, filter, &deferred.postings)?;
        drop(deferred);
        Ok((txn, matcher))
    }

    /// How many of the project's sessions pass `filter`.
    pub fn session_count(&self, project: &str, filter: &SessionFilter) -> Result<u64> {
        let (txn, matcher) = self.prepare(project, filter)?;
        query::session_count(&txn, matcher.as_ref())
    }

    /// Project-level figures (sessions, traces, spans, tokens, session
    /// duration p50/p99); `None` for an unknown project.
    pub fn project_stats(&self, project: &str) -> Result<Option<ProjectStats>> {
        self.catch_up()?;
        let txn = self.index.begin_read()?;
        query::project_stats(&txn, project)
    }

    /// Every stored span of a trace in (start, span id) order; `None` if unknown.
    pub fn trace(&self, trace_id: TraceId) -> Result<Option<Trace>> {
        self.catch_up()?;
        let _gate = self.read_gate.read().map_err(|_| Error::panicked())?;
        let (txn, home) = {
            let deferred = self.deferred.read().map_err(|_| Error::panicked())?;
            let txn = self.index.begin_read()?;
            (txn, deferred.home(&trace_id.0))
        };
        query::trace(&txn, trace_id, home, &|lsns| self.read_spans(lsns))
    }

    /// Names of all projects with stored spans, sorted.
    pub fn projects(&self) -> Result<Vec<String>> {
        self.catch_up()?;
        let txn = self.index.begin_read()?;
        query::projects(&txn)
    }

    /// Makes everything durable and closes the store, reporting any error
    /// that dropping it would swallow. A poisoned store closes without
    /// writing anything and returns its `Poisoned` error: what it
    /// acknowledged since its last checkpoint is recovered from the log on
    /// reopen.
    pub fn close(self) -> Result<()> {
        self.stop_indexing();
        if self.is_poisoned() {
            self.index.fence();
            return Err(self.ensure_writable().err().unwrap_or_else(Error::panicked));
        }
        let mut ws = self.lock_writer()?;
        self.checkpoint(&mut ws)
    }

    /// Waits for the work on the indexing thread (a group, a checkpoint
    /// such as the one an open starts after its replay), if any, and
    /// reports how it ended (a failure poisons the store). For the fuzzing
    /// model, which must know that no write of the store's is under way
    /// before it arms a fault for the next append.
    pub(crate) fn wait_for_indexing(&self) -> Result<()> {
        let mut ws = self.lock_writer()?;
        self.settle(&mut ws)
    }

    /// Waits for the group being indexed on its own thread, if any, even
    /// if a writer panicked: its thread holds the index open, which must
    /// be closed before the store is.
    fn stop_indexing(&self) {
        let mut ws = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = self.settle(&mut ws);
    }
}

impl Drop for SessionStore {
    fn drop(&mut self) {
        self.stop_indexing();
        if self.is_poisoned() {
            // Also covers a log that poisoned itself without the store
            // noticing: nothing more may reach the index file.
            self.index.fence();
            return;
        }
        match self.writer.lock() {
            Ok(mut ws) => {
                if ws.checkpointed != self.log.end() {
                    // Best effort: an error loses nothing, the log is replayed
                    // on open (a failed checkpoint poisons, which fences the
                    // index).
                    let _ = self.checkpoint(&mut ws);
                }
            }
            // A writer panicked: whatever it left in the index must not be
            // made durable by closing it.
            Err(_) => self.index.fence(),
        }
    }
}

#[cfg(test)]
mod frame_tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::SpanId;

    /// Resources of one project and of two (one named the same as
    /// another), and none.
    fn resources() -> Vec<ResourceSpans> {
        let span = |n: u8, attrs: usize| {
            let mut s = Span::new(TraceId([n; 16]), SpanId([n; 8]), None, "s", 1, 2);
            for a in 0..attrs {
                s = s.with_attribute(format!("k{a}"), "v".repeat(a * 100));
            }
            s
        };
        let mut named = ResourceSpans::for_project("a", vec![span(1, 0), span(2, 3)]);
        named
            .resource
            .push(KeyValue::new("service.name", "x".repeat(300)));
        vec![
            named,
            ResourceSpans::for_project("a", vec![span(3, 1)]),
            ResourceSpans::for_project("b", vec![span(4, 2), span(5, 0)]),
            ResourceSpans {
                resource: Vec::new(),
                spans: vec![span(6, 1), span(7, 0)],
            },
        ]
    }

    fn candidate<'a>(rs: &'a ResourceSpans, span: &'a Span) -> Candidate<'a> {
        let project = rs.project();
        let prefix_len = codec::encoded_prefix_len(project, &rs.resource);
        Candidate {
            project,
            resource: &rs.resource,
            span,
            session_id: std::cell::Cell::new(None),
            encoded_len: prefix_len + codec::encoded_body_len(span),
            prefix_len,
            at: 0,
            user: std::cell::Cell::new(None),
        }
    }

    fn encoded(c: &Candidate<'_>) -> Vec<u8> {
        let mut bytes = Vec::new();
        let _ = codec::encode_span_parts(c.project, c.resource, c.span, &mut bytes);
        bytes
    }

    proptest! {
        /// The spans of an append, in any order (resources interleaved,
        /// a span repeated), encoded together before the writer lock or
        /// one at a time as the log asks for them (in any order), are
        /// each span's record, its project and resource copied from the
        /// span before where they are the same.
        #[test]
        fn frames_are_each_spans_record(
            picks in proptest::collection::vec((0..4usize, 0..2usize), 0..12),
            asks in proptest::collection::vec(0..14usize, 0..20),
        ) {
            let batch = resources();
            let spans: Vec<(&ResourceSpans, &Span)> = picks
                .iter()
                .filter_map(|&(r, s)| {
                    let rs = batch.get(r)?;
                    Some((rs, rs.spans.get(s % rs.spans.len())?))
                })
                .collect();
            let mut candidates: Vec<Candidate<'_>> =
                spans.iter().map(|(rs, span)| candidate(rs, span)).collect();
            let bytes = candidates.iter().map(|c| c.encoded_len).sum();
            let mut made_ahead = Vec::new();
            let buf = encode_candidates(&mut candidates, bytes, &mut made_ahead);
            prop_assert_eq!(buf.len(), bytes);
            let refs: Vec<&Candidate<'_>> = candidates.iter().collect();
            let mut made_behind = Vec::new();
            let mut ahead = SpanFrames {
                spans: &refs,
                encoded: Some(&buf),
                scratch: Vec::new(),
                last: None,
                made: None,
            };
            let mut behind = SpanFrames {
                spans: &refs,
                encoded: None,
                scratch: Vec::new(),
                last: None,
                made: Some(&mut made_behind),
            };
            for i in (0..refs.len()).chain(asks) {
                let expected = refs.get(i).map(|c| encoded(c)).unwrap_or_default();
                for frames in [&mut ahead, &mut behind] {
                    let frame = frames.frame(i);
                    prop_assert_eq!(frame.tag, codec::TAG_SPAN_V1);
                    prop_assert_eq!(frame.payload, &expected[..], "span {}", i);
                }
            }
            drop(behind);
            // Each span's record made once, in order, either way.
            for made in [&made_ahead, &made_behind] {
                prop_assert_eq!(made.len(), refs.len());
                for (r, c) in made.iter().zip(&refs) {
                    prop_assert_eq!(&r.span, &SpanInfo::of(c.span));
                    prop_assert_eq!(
                        r.frame_bytes as u64,
                        compaction::FRAME_HEADER + c.encoded_len as u64
                    );
                }
            }
        }

        /// A span id is taken when it is new and the trace holds fewer
        /// than the most spans, else counted a duplicate when it is
        /// there, else rejected: as a model set says, and with the set
        /// holding what was taken.
        #[test]
        fn span_ids_are_taken_as_a_set_says(
            ids in proptest::collection::vec(0..12u8, 0..40),
            max in 1..10usize,
        ) {
            let mut set = SpanIdSet::default();
            let mut model = std::collections::BTreeSet::new();
            let mut report = AppendReport::default();
            let (mut duplicates, mut rejected) = (0, 0);
            for id in ids {
                let taken = take_span_id(
                    &mut set,
                    SpanId([id; 8]),
                    TraceId([1; 16]),
                    max,
                    &mut report,
                );
                if model.contains(&id) {
                    duplicates += 1;
                    prop_assert!(!taken);
                } else if model.len() >= max {
                    rejected += 1;
                    prop_assert!(!taken);
                } else {
                    model.insert(id);
                    prop_assert!(taken);
                }
                prop_assert_eq!(report.duplicates, duplicates);
                prop_assert_eq!(report.rejected.len(), rejected);
                prop_assert_eq!(set.len(), model.len());
                prop_assert!(model.iter().all(|id| set.contains(&[*id; 8])));
            }
        }

        /// The records an append keeps are those of its accepted spans
        /// (any of its candidates, in order), each with its LSN and its
        /// project's place among the pending spans' project names.
        #[test]
        fn records_are_the_accepted_spans(
            picks in proptest::collection::vec((0..4usize, 0..2usize), 0..12),
            keep in proptest::collection::vec(any::<bool>(), 12),
            before in proptest::collection::vec(0..4usize, 0..3),
        ) {
            let batch = resources();
            let mut candidates: Vec<Candidate<'_>> = picks
                .iter()
                .filter_map(|&(r, s)| {
                    let rs = batch.get(r)?;
                    Some(candidate(rs, rs.spans.get(s % rs.spans.len())?))
                })
                .collect();
            let bytes = candidates.iter().map(|c| c.encoded_len).sum();
            let mut made = Vec::new();
            let _ = encode_candidates(&mut candidates, bytes, &mut made);
            let accepted: Vec<&Candidate<'_>> = candidates
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c)
                .collect();
            keep_accepted(&mut made, &candidates, &accepted);
            let lsns: Vec<Lsn> = (0..accepted.len() as u64).map(|n| 100 + 7 * n).collect();
            // Pending spans already naming some projects.
            let mut pending = Pending::default();
            let mut names: Vec<String> = Vec::new();
            for &b in &before {
                let name = batch[b].project();
                pending.project_at(name);
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
            place_records(&mut made, &accepted, &lsns, &mut pending);
            prop_assert_eq!(made.len(), accepted.len());
            for ((r, c), lsn) in made.iter().zip(&accepted).zip(&lsns) {
                prop_assert_eq!(r.lsn, *lsn);
                prop_assert_eq!(&r.span, &SpanInfo::of(c.span));
                if !names.iter().any(|n| n == c.project) {
                    names.push(c.project.to_owned());
                }
                let at = names.iter().position(|n| n == c.project);
                prop_assert_eq!(Some(r.project), at);
            }
            let n = made.len();
            pending.push_all(&mut made, 0);
            prop_assert!(made.is_empty());
            prop_assert_eq!(pending.len(), n);
            let (group, _) = pending.take();
            group.with_records(|records| {
                let (spans, projects) = records.parts();
                prop_assert_eq!(projects, &names[..]);
                for (r, c) in spans.iter().zip(&accepted) {
                    prop_assert_eq!(projects.get(r.project).map(String::as_str), Some(c.project));
                }
                Ok(())
            })?;
        }
    }
}

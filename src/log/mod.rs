//! The append-only span log: the store's source of truth.
//!
//! Records are opaque payloads with a tag byte, framed with a checksum and
//! appended to segment files in `dir`. A record's LSN is its global byte
//! offset, so an index entry finds it by a binary search over segment bases.
//! The layout and the recovery rules are in `docs/FORMAT.md`.
//!
//! Concurrency: one writer at a time (a mutex around the writer state);
//! readers never take that mutex. They look segments up in a read-mostly list
//! and only see bytes below a segment's published length, which the writer
//! advances after the bytes are written, so a reader never sees a partial
//! frame. Sealed segments are immutable and shared through `Arc<Mmap>`.
//!
//! Nothing above the storage layer uses this module yet, so outside of tests
//! its items look unused; the allowance below goes away once the store calls
//! the log.

mod direct;
mod file;
mod frame;
mod recovery;
mod salvage;
mod segment;
mod unsynced;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};

use self::file::SegmentFile;
use self::frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, frame_header};
use self::recovery::{create_segment, recover};
pub use self::salvage::{DroppedRange, SalvageReport, SalvageStep};
pub(crate) use self::segment::FrameBuf;
use self::segment::{Segment, Window};
use crate::error::{Error, Poison, Result};
use crate::fs::{DIRECT_ALIGN, FileSystem, OsFileSystem};

/// Log sequence number: the global byte offset of a frame. Frame LSNs grow
/// with every append and never repeat, even across segments.
pub(crate) type Lsn = u64;

/// A write buffer larger than this is flushed to the file before more frames
/// are encoded, so a huge batch does not need a buffer of its own size.
const WRITE_CHUNK: usize = 4 << 20;

/// [`Log::read_many`] reads frames of the active segment together when each
/// starts at most this many bytes after the one before...
const READ_RUN_GAP: u64 = 16 << 10;
/// ...in reads of at most this many bytes (a larger frame is read alone)...
const READ_RUN_MAX: u64 = 256 << 10;
/// ...that go this far past the last frame's start, for its bytes (frames
/// of spans are mostly smaller; a larger one takes one more read).
const READ_RUN_TAIL: u64 = 8 << 10;

/// Size knobs of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogOptions {
    /// A segment is sealed and a new one started once it has at least this
    /// many bytes; bounds how much one retention step deletes and how large
    /// one mapping is.
    pub segment_bytes: u64,
    /// Largest payload accepted; also bounds what recovery and reads will
    /// allocate for a frame whose length field is damaged.
    pub max_frame_bytes: u32,
    /// `Some(min)`: an append of at least `min` bytes of frames writes its
    /// whole aligned blocks with [`FileHandle::write_direct_at`]
    /// (`O_DIRECT`), bypassing the page cache; smaller ones, and every
    /// append with `None`, go through the page cache. (A direct write
    /// waits for the disk, and first for the disk to take any dirty page
    /// of its range, such as a small append's last block not synced yet:
    /// worth it for large appends, not for a few spans.) A direct append
    /// starts at the block holding the log's end, writing that block's
    /// bytes before the end again (unchanged) in front of its own frames,
    /// and writes its last, partial block through the page cache. The file
    /// holds exactly the frames at all times, as without direct writes: no
    /// padding, and the same torn-tail rules on recovery.
    ///
    /// [`FileHandle::write_direct_at`]: crate::fs::FileHandle::write_direct_at
    pub direct_writes: Option<u64>,
}

impl Default for LogOptions {
    /// 64 MiB segments, 16 MiB frames: segments large enough to make rolling
    /// rare, frames far above any sane span. Writes through the page cache.
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            max_frame_bytes: 16 << 20,
            direct_writes: None,
        }
    }
}

/// A frame to append: borrowed, so callers can encode into their own buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameRef<'a> {
    /// Caller-defined record type (e.g. the codec's tag); stored and checked
    /// with the payload.
    pub tag: u8,
    /// The record bytes, opaque to the log.
    pub payload: &'a [u8],
}

/// Frames produced one at a time while they are written, so that a
/// caller's encoding overlaps the log's writes ([`Log::append_from`]).
pub(crate) trait FrameSource {
    /// How many frames.
    fn count(&self) -> usize;
    /// The payload length of frame `i`, known before the frame is made.
    fn payload_len(&self, i: usize) -> usize;
    /// Frame `i`, `i` counting up from 0: its tag and its payload, of
    /// exactly `payload_len(i)` bytes.
    fn frame(&mut self, i: usize) -> FrameRef<'_>;
}

/// Frames already encoded.
struct Encoded<'f, 'a>(&'f [FrameRef<'a>]);

impl FrameSource for Encoded<'_, '_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn payload_len(&self, i: usize) -> usize {
        self.0.get(i).map_or(0, |f| f.payload.len())
    }
    fn frame(&mut self, i: usize) -> FrameRef<'_> {
        self.0.get(i).copied().unwrap_or(FrameRef {
            tag: 0,
            payload: &[],
        })
    }
}

/// What `Log::open` found and repaired, for the store to log or surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryReport {
    /// Bytes cut from the end of the last segment (torn or zero-filled tail,
    /// or a segment whose creation was interrupted).
    pub truncated_bytes: u64,
    /// Frames whose checksum was verified (those at or after `scan_from`).
    pub frames_scanned: u64,
    /// Number of segment files after recovery.
    pub segments: usize,
    /// End of the log after recovery (`Log::end`).
    pub end: Lsn,
    /// Bytes written again because a failed write or fsync had left them
    /// possibly not durable (see `unsynced`).
    pub rewritten_bytes: u64,
}

/// A description of one segment, for retention, diagnostics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    /// The segment file.
    pub path: PathBuf,
    /// LSN of the file's first byte.
    pub base: Lsn,
    /// Bytes of the file holding complete frames (and the header).
    pub len: u64,
    /// True once the segment is full and read-only (mapped).
    pub sealed: bool,
}

/// State owned by the single writer.
struct Writer {
    /// The segment being appended to (also in the segment list).
    active: Arc<Segment>,
    /// Its file handle, for writing and syncing.
    file: Arc<SegmentFile>,
    /// Its length on disk (equal to its published length between appends).
    len: u64,
    /// Encoding buffer, reused across appends.
    buf: Vec<u8>,
    /// With direct writes: the bytes of the active segment's partial last
    /// block (`len` rounded down to a block, up to `len`), which the next
    /// append writes again in front of its frames; `None` until read back
    /// from the file.
    tail: Option<Vec<u8>>,
    /// With direct writes: the aligned buffers frames are laid out in for
    /// the writes (`direct::DirectWriter`), made as appends need them.
    staging: Vec<memmap2::MmapMut>,
    /// With direct writes: the thread that writes large appends' buffers
    /// (`direct::WriterThread`), started by the first.
    thread: Option<direct::WriterThread>,
}

/// Group-commit state: what is durable and whether someone is syncing.
struct SyncState {
    /// Everything below this LSN is durable.
    synced: Lsn,
    /// A thread is inside `sync_data` right now; others wait for it.
    syncing: bool,
}

/// What an append did before it published anything; enough to undo it.
#[derive(Default)]
struct Staged {
    /// Segments filled and sealed during this append, with their final
    /// lengths and their new mappings.
    sealed: Vec<(Arc<Segment>, u64)>,
    /// Mappings of `sealed`, in the same order.
    maps: Vec<memmap2::Mmap>,
    /// Segments created during this append, with their file handles.
    created: Vec<(Arc<Segment>, Arc<SegmentFile>)>,
}

/// The result of writing an append, before it is published.
struct Written {
    /// LSN of each frame.
    lsns: Vec<Lsn>,
    /// The active segment after the append (a new one if it rolled).
    active: Arc<Segment>,
    /// Its file handle.
    file: Arc<SegmentFile>,
    /// Its length after the append.
    len: u64,
    /// With direct writes: its partial last block (see `Writer::tail`).
    tail: Option<Vec<u8>>,
}

/// The log: `Send + Sync`, every method takes `&self`.
pub(crate) struct Log {
    /// Where the files are.
    fs: Arc<dyn FileSystem>,
    /// The log directory.
    dir: PathBuf,
    /// Size limits.
    opts: LogOptions,
    /// LSN of the first frame; grows when compaction drops old segments.
    start: AtomicU64,
    /// All segments, oldest first; the last is the active one. Readers clone
    /// an `Arc` out and drop the lock before reading.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// The writer; held for the whole of an append.
    writer: Mutex<Writer>,
    /// Published end of the log: every frame below it is complete.
    end: AtomicU64,
    /// Mirror of `SyncState::synced`, readable without the lock.
    synced: AtomicU64,
    /// Group-commit state.
    sync_state: Mutex<SyncState>,
    /// Wakes threads waiting for an in-flight sync.
    sync_done: Condvar,
    /// Set by a failed write or fsync; refuses further appends and syncs.
    poison: Poison,
    /// The frames whose checksums the open's recovery verified (see
    /// [`Log::scan_checked_at_open`]).
    checked_at_open: std::ops::Range<Lsn>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("start", &self.start())
            .field("end", &self.end())
            .field("synced", &self.synced())
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens or creates the log in `dir`. Frames before `scan_from` are trusted
    /// (a durable checkpoint covers them); frames from `scan_from` to the end
    /// are CRC-checked. `scan_from` 0 means the first frame. Checks segment
    /// headers and continuity of bases, and cuts a torn tail off the last
    /// segment; corruption is reported without modifying any file.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "the store opens on a chosen file system")
    )]
    pub(crate) fn open(
        dir: &Path,
        opts: LogOptions,
        scan_from: Lsn,
    ) -> Result<(Log, RecoveryReport)> {
        Log::open_on(Arc::new(OsFileSystem), dir, opts, scan_from)
    }

    /// Like [`Log::open`], with every file operation going through `fs`.
    pub(crate) fn open_on(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        opts: LogOptions,
        scan_from: Lsn,
    ) -> Result<(Log, RecoveryReport)> {
        let rec = recover(fs.as_ref(), dir, &opts, scan_from)?;
        let start = rec
            .segments
            .first()
            .map_or(SEGMENT_HEADER_LEN, |s| s.base + SEGMENT_HEADER_LEN);
        let active = rec
            .segments
            .last()
            .cloned()
            .ok_or_else(|| Error::invalid("log recovery returned no segment"))?;
        let end = rec.report.end;
        let checked_at_open = rec.checked_from..end;
        let log = Log {
            fs,
            dir: dir.to_path_buf(),
            opts,
            start: AtomicU64::new(start),
            segments: RwLock::new(rec.segments),
            writer: Mutex::new(Writer {
                active,
                file: rec.active_file,
                len: rec.active_len,
                buf: Vec::new(),
                tail: None,
                staging: Vec::new(),
                thread: None,
            }),
            end: AtomicU64::new(end),
            // Recovery synced the active segment; sealed ones were synced
            // when they were sealed.
            synced: AtomicU64::new(end),
            sync_state: Mutex::new(SyncState {
                synced: end,
                syncing: false,
            }),
            sync_done: Condvar::new(),
            poison: Poison::default(),
            checked_at_open,
        };
        Ok((log, rec.report))
    }

    /// LSN just past the last frame (the next frame's LSN, modulo rolling).
    pub(crate) fn end(&self) -> Lsn {
        self.end.load(Ordering::Acquire)
    }

    /// LSN of the first frame (32 for a fresh log; later once compaction
    /// dropped old segments).
    pub(crate) fn start(&self) -> Lsn {
        self.start.load(Ordering::Acquire)
    }

    /// Seals the active segment now (as if it were full) and starts a new
    /// one after it, so that compaction can rewrite it. Does nothing when
    /// the active segment holds no frame. A failure poisons the log, like
    /// a failed roll during an append.
    pub(crate) fn seal_active(&self) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.poison.error());
        }
        let mut guard = self.writer.lock().map_err(|_| Error::panicked())?;
        let w = &mut *guard;
        if w.len <= SEGMENT_HEADER_LEN {
            return Ok(());
        }
        let mut staged = Staged::default();
        let result = (|| {
            let (next, next_file) =
                self.roll(Arc::clone(&w.active), &w.file, w.len, &mut staged)?;
            self.map_sealed(&mut staged)?;
            Ok(Written {
                lsns: Vec::new(),
                active: next,
                file: next_file,
                len: SEGMENT_HEADER_LEN,
                tail: None,
            })
        })();
        match result {
            Ok(written) => {
                self.publish(w, staged, written);
                Ok(())
            }
            Err(e) => {
                self.roll_back(w, staged);
                Err(self.fail(e))
            }
        }
    }

    /// Drops every segment before the one whose base is `base` (a sealed
    /// segment or the active one): the log then starts at `base`. The
    /// caller guarantees that nothing it will read lies below `base`.
    /// Readers that already hold one of the segments keep reading it (its
    /// mapping outlives the file's name). Files are removed oldest first, so
    /// a crash part-way leaves a log that starts at a later base and is
    /// still contiguous; recovery accepts any first base. Returns the
    /// number of segments dropped.
    pub(crate) fn drop_segments_before(&self, base: Lsn) -> Result<usize> {
        if self.is_poisoned() {
            return Err(self.poison.error());
        }
        // Held so that no segment is sealed or created meanwhile.
        let _w = self.writer.lock().map_err(|_| Error::panicked())?;
        let dropped: Vec<Arc<Segment>> = {
            let mut list = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if !list.iter().any(|s| s.base == base) {
                return Err(Error::invalid(format!("no segment starts at LSN {base}")));
            }
            let at = list.partition_point(|s| s.base < base);
            let keep = list.split_off(at);
            let dropped = std::mem::replace(&mut *list, keep);
            self.start
                .store(base + SEGMENT_HEADER_LEN, Ordering::Release);
            dropped
        };
        for s in &dropped {
            self.fs
                .remove_file(&s.path)
                .map_err(|e| io_err("removing segment", &s.path, e))?;
        }
        if !dropped.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| io_err("syncing", &self.dir, e))?;
        }
        Ok(dropped.len())
    }

    /// Everything below this LSN is known durable.
    pub(crate) fn synced(&self) -> Lsn {
        self.synced.load(Ordering::Acquire)
    }

    /// Poisons the log with `e`, a failed write, fsync or roll, and marks
    /// where its durability ended, so that the next open writes what lies
    /// past it again (see `unsynced`; best effort, the disk may be failing).
    fn fail(&self, e: Error) -> Error {
        let _ = unsynced::mark(self.fs.as_ref(), &self.dir, self.synced());
        self.poison.poison(e)
    }

    /// True after a failed write or fsync: appends and syncs are refused until
    /// the log is reopened (and recovered from what actually reached disk).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poison.is_set()
    }

    /// The error refusing writes once poisoned: `Error::Poisoned` naming the
    /// failure that poisoned the log.
    pub(crate) fn poisoned_error(&self) -> Error {
        self.poison.error()
    }

    /// Appends frames in order and returns each frame's LSN. The frames are
    /// written to the OS (visible to `read`/`scan`) on return, not synced.
    ///
    /// All frames become visible together. If a write fails part-way, the
    /// files are cut back to the previous end (best effort) and the log is
    /// poisoned: the error is `Error::Poisoned` with the failure as its
    /// cause. A payload larger than
    /// `max_frame_bytes` is `Error::InvalidInput` and nothing is written.
    pub(crate) fn append(&self, frames: &[FrameRef<'_>]) -> Result<Vec<Lsn>> {
        self.append_from(&mut Encoded(frames))
    }

    /// True if an append of `frames` frames with `payload_bytes` bytes of
    /// payloads in all would be written by a writer thread while its frames
    /// are made (direct writes of at least `direct::THREAD_BYTES`): then
    /// making them in [`Log::append_from`] overlaps the disk's time.
    pub(crate) fn writes_behind(&self, payload_bytes: u64, frames: u64) -> bool {
        let bytes = payload_bytes.saturating_add(FRAME_HEADER_LEN.saturating_mul(frames));
        self.opts.direct_writes.is_some_and(|min| bytes >= min) && bytes >= direct::THREAD_BYTES
    }

    /// [`Log::append`] of frames made one at a time by `src` as they are
    /// written: with direct writes, the blocks already made are written
    /// while the next ones are made. Every frame's length is checked
    /// against `max_frame_bytes` before anything is written; a frame whose
    /// payload is not the length `src` announced fails the append (and
    /// poisons the log, as a failed write does).
    pub(crate) fn append_from(&self, src: &mut impl FrameSource) -> Result<Vec<Lsn>> {
        if self.is_poisoned() {
            return Err(self.poison.error());
        }
        let max = self.opts.max_frame_bytes;
        let count = src.count();
        let mut lens = Vec::with_capacity(count);
        for i in 0..count {
            let len = src.payload_len(i);
            match u32::try_from(len) {
                Ok(n) if n <= max => lens.push(n),
                _ => {
                    return Err(Error::invalid(format!(
                        "frame {i}: payload of {len} bytes exceeds max_frame_bytes {max}"
                    )));
                }
            }
        }
        if count == 0 {
            return Ok(Vec::new());
        }
        let mut guard = self.writer.lock().map_err(|_| Error::panicked())?;
        // Checked again under the lock: another append may have failed while
        // this one waited.
        if self.is_poisoned() {
            return Err(self.poison.error());
        }
        let w = &mut *guard;
        let mut buf = std::mem::take(&mut w.buf);
        let mut staged = Staged::default();
        let result = self.write_frames(w, src, &lens, &mut buf, &mut staged);
        // Set again by a direct append that succeeds; the next one reads
        // the block back otherwise.
        w.tail = None;
        buf.clear();
        // Keep the buffer for the next append unless one huge frame grew it.
        if buf.capacity() > WRITE_CHUNK.saturating_add(max as usize).saturating_add(9) {
            buf = Vec::new();
        }
        w.buf = buf;
        match result {
            Ok(written) => Ok(self.publish(w, staged, written)),
            Err(e) => {
                self.roll_back(w, staged);
                Err(self.fail(e))
            }
        }
    }

    /// Writes the frames, rolling segments as needed, without publishing
    /// anything. Returns the LSNs and the new active segment and length.
    /// A direct append (`LogOptions::direct_writes`) lays the frames out in
    /// aligned buffers, each written directly, by the log's writer thread
    /// when the append is large enough for the overlap to pay
    /// (`Log::writes_behind`, `direct::WriterThread`); any other goes
    /// through the page cache.
    fn write_frames(
        &self,
        w: &mut Writer,
        src: &mut impl FrameSource,
        lens: &[u32],
        buf: &mut Vec<u8>,
        staged: &mut Staged,
    ) -> Result<Written> {
        let bytes: u64 = lens.iter().map(|&n| FRAME_HEADER_LEN + u64::from(n)).sum();
        let (seg, file, len) = (Arc::clone(&w.active), Arc::clone(&w.file), w.len);
        if self.opts.direct_writes.is_none_or(|min| bytes < min) {
            let mut out = PageCacheOut {
                buf,
                seg: Arc::clone(&seg),
                file: Arc::clone(&file),
                at: len,
            };
            return self.write_into(&mut out, src, lens, (seg, file, len), staged);
        }
        let tail = w.tail.take();
        let channel = if self.writes_behind(bytes, 0) {
            if w.thread.is_none() {
                w.thread = direct::WriterThread::start();
            }
            w.thread.as_mut().map(direct::WriterThread::next_append)
        } else {
            None
        };
        let mut out = direct::DirectWriter::new(
            channel,
            &mut w.staging,
            Arc::clone(&seg),
            Arc::clone(&file),
            len,
            tail.as_deref(),
        )?;
        self.write_into(&mut out, src, lens, (seg, file, len), staged)
    }

    /// The loop of `write_frames`: the frames of `src` into `out`, starting
    /// at `len` in `seg`, rolling segments as needed.
    fn write_into(
        &self,
        out: &mut impl FrameOut,
        src: &mut impl FrameSource,
        lens: &[u32],
        (mut seg, mut file, mut len): (Arc<Segment>, Arc<SegmentFile>, u64),
        staged: &mut Staged,
    ) -> Result<Written> {
        let mut lsns = Vec::with_capacity(lens.len());
        for (i, &n) in lens.iter().enumerate() {
            if len >= self.opts.segment_bytes && len > SEGMENT_HEADER_LEN {
                out.finish()?;
                (seg, file) = self.roll(seg, &file, len, staged)?;
                len = SEGMENT_HEADER_LEN;
                out.next_segment(Arc::clone(&seg), Arc::clone(&file), len)?;
            }
            lsns.push(seg.base + len);
            let f = checked_frame(src, i, n)?;
            out.frame(&frame_header(n, f.tag, f.payload), f.payload)?;
            len += FRAME_HEADER_LEN + u64::from(n);
        }
        let tail = out.finish()?;
        self.map_sealed(staged)?;
        Ok(Written {
            lsns,
            active: seg,
            file,
            len,
            tail,
        })
    }

    /// Seals the full segment `seg` at `len` (synced) and starts the next
    /// one right where it ends; returns it and its file.
    fn roll(
        &self,
        seg: Arc<Segment>,
        file: &SegmentFile,
        len: u64,
        staged: &mut Staged,
    ) -> Result<(Arc<Segment>, Arc<SegmentFile>)> {
        file.sync_data()
            .map_err(|e| io_err("syncing full segment", &seg.path, e))?;
        let (next, next_file) = create_segment(self.fs.as_ref(), &self.dir, seg.base + len)?;
        let next = Arc::new(next);
        staged
            .created
            .push((Arc::clone(&next), Arc::clone(&next_file)));
        staged.sealed.push((seg, len));
        Ok((next, next_file))
    }

    /// Sealed segments are final and synced: maps them for readers.
    fn map_sealed(&self, staged: &mut Staged) -> Result<()> {
        for (s, final_len) in &staged.sealed {
            let f = match &s.data {
                segment::SegmentData::File(f) => f,
                segment::SegmentData::Mapped(_) => continue,
            };
            let map = f
                .map()
                .map_err(|e| io_err("mapping sealed segment", &s.path, e))?;
            if map.len() as u64 != *final_len {
                return Err(s.corrupt(
                    *final_len,
                    format!(
                        "sealed segment is {} bytes on disk, expected {final_len}",
                        map.len()
                    ),
                ));
            }
            staged.maps.push(map);
        }
        Ok(())
    }

    /// Makes a completed append visible: new segments first, then sealed
    /// segments swapped for their mapped twins, then lengths, then the end.
    /// Returns the frames' LSNs.
    fn publish(&self, w: &mut Writer, staged: Staged, written: Written) -> Vec<Lsn> {
        let Written {
            lsns,
            active,
            file,
            len,
            tail,
        } = written;
        let rolled = !staged.sealed.is_empty();
        let mut mapped = Vec::with_capacity(staged.sealed.len());
        for ((s, final_len), map) in staged.sealed.into_iter().zip(staged.maps) {
            // Readers still holding the file-backed Arc see the final length.
            s.publish_len(final_len);
            mapped.push(Arc::new(Segment::mapped(s.path.clone(), s.base, map)));
        }
        {
            let mut list = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            list.extend(staged.created.into_iter().map(|(s, _)| s));
            for m in mapped {
                if let Some(slot) = list.iter_mut().rev().find(|s| s.base == m.base) {
                    *slot = m;
                }
            }
        }
        active.publish_len(len);
        let end = active.base + len;
        w.active = active;
        w.file = file;
        w.len = len;
        w.tail = tail;
        self.end.store(end, Ordering::Release);
        if rolled {
            // Sealing synced everything before the active segment. (Bumped
            // after the end moved, so `synced() <= end()` at all times.)
            let durable = w.active.base;
            if let Ok(mut st) = self.sync_state.lock()
                && st.synced < durable
            {
                st.synced = durable;
                self.synced.store(durable, Ordering::Release);
            }
        }
        lsns
    }

    /// Undoes an append that failed before publishing: removes the segments
    /// it created, then cuts the previously active segment back. Best effort;
    /// the log is poisoned anyway and recovery sorts out the rest on reopen.
    fn roll_back(&self, w: &Writer, staged: Staged) {
        drop(staged.maps);
        // Remove new segments before truncating the old one, so a crash in
        // between leaves a contiguous log (the old one still holds the synced
        // frames the new one's base was computed from).
        for (s, _) in staged.created.iter().rev() {
            let _ = file::remove_file(self.fs.as_ref(), &s.path);
        }
        if !staged.created.is_empty() {
            let _ = file::sync_dir(self.fs.as_ref(), &self.dir);
        }
        let _ = w.file.set_len(w.len);
    }

    /// Group commit: returns once every frame below `upto` is durable
    /// (fdatasync). Concurrent callers share one fsync: one thread syncs with
    /// the lock released while the others wait for it. A failed fsync poisons
    /// the log; that call, the calls waiting for it and every later append or
    /// sync return `Error::Poisoned` with the fsync's error as cause. Nothing is
    /// retried: after a failed fsync the kernel may already have marked the
    /// dirty pages clean without writing them, so only a reopen, which
    /// writes again what lies past the last durable point (the `unsynced`
    /// mark the failure leaves), can restore the promise.
    pub(crate) fn sync(&self, upto: Lsn) -> Result<()> {
        if self.is_poisoned() {
            return Err(self.poison.error());
        }
        let end = self.end();
        if upto > end {
            return Err(Error::invalid(format!(
                "cannot sync up to LSN {upto}: the log ends at {end}"
            )));
        }
        let mut st = self.sync_state.lock().map_err(|_| Error::panicked())?;
        loop {
            if self.is_poisoned() {
                return Err(self.poison.error());
            }
            if st.synced >= upto {
                return Ok(());
            }
            if st.syncing {
                st = self.sync_done.wait(st).map_err(|_| Error::panicked())?;
                continue;
            }
            st.syncing = true;
            drop(st);
            let outcome = self.sync_active();
            st = self.sync_state.lock().map_err(|_| Error::panicked())?;
            st.syncing = false;
            match outcome {
                Ok(target) => {
                    if target > st.synced {
                        st.synced = target;
                        self.synced.store(target, Ordering::Release);
                    }
                    self.sync_done.notify_all();
                }
                Err(e) => {
                    let e = self.fail(e);
                    self.sync_done.notify_all();
                    return Err(e);
                }
            }
        }
    }

    /// fdatasyncs the active segment; returns the LSN now durable.
    fn sync_active(&self) -> Result<Lsn> {
        // Read the end before picking the segment: if a roll happens in
        // between, the end lies in a segment that sealing already synced.
        let target = self.end();
        let last = self
            .segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned();
        let Some(last) = last else {
            return Ok(target); // no segment, nothing to sync
        };
        match &last.data {
            segment::SegmentData::File(f) => f
                .sync_data()
                .map(|()| target)
                .map_err(|e| io_err("syncing", &last.path, e)),
            segment::SegmentData::Mapped(_) => Ok(target),
        }
    }

    /// Reads and CRC-checks the frame at `lsn`, which must be a frame
    /// boundary returned by `append` or `scan`. Anything else is an error
    /// (`InvalidInput` outside the log, usually `Corruption` inside it, since
    /// a misaligned position cannot be told from damage).
    pub(crate) fn read(&self, lsn: Lsn) -> Result<FrameBuf> {
        let seg = self.holder(lsn)?;
        let (frame, _) = seg
            .frame_at(lsn - seg.base, self.opts.max_frame_bytes, None, true)
            .map_err(|e| at_boundary(e, lsn))?;
        Ok(frame)
    }

    /// [`Log::read`] of each of `lsns` (in any order, repeats allowed),
    /// returned in the order given; fails with the first failing read in
    /// log order. Frames of the active segment that lie within
    /// [`READ_RUN_GAP`] of each other are read together, one positional
    /// read of at most [`READ_RUN_MAX`] bytes for them all, instead of two
    /// per frame (sealed segments are mapped and need none).
    pub(crate) fn read_many(&self, lsns: &[Lsn]) -> Result<Vec<FrameBuf>> {
        let mut out: Vec<Option<FrameBuf>> = vec![None; lsns.len()];
        self.each_of_many(lsns, |i, s, lsn, win| {
            let (frame, _) = s
                .frame_at(lsn - s.base, self.opts.max_frame_bytes, Some(win), true)
                .map_err(|e| at_boundary(e, lsn))?;
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(frame);
            }
            Ok(())
        })?;
        out.into_iter()
            .map(|f| f.ok_or_else(|| Error::invalid("a frame of read_many was not read")))
            .collect()
    }

    /// [`Log::read_many`], each frame handed to `f` (with its index in
    /// `lsns`, its tag and its payload) as it is read, in log order, its
    /// payload borrowed from the segment's mapping or the read buffer
    /// instead of copied out: for readers that decode the frames at once
    /// (a trace's spans). Reads what `read_many` reads and fails where it
    /// fails, with the same errors; an error of `f` stops it too.
    pub(crate) fn visit_many(
        &self,
        lsns: &[Lsn],
        mut f: impl FnMut(usize, u8, &[u8]) -> Result<()>,
    ) -> Result<()> {
        self.each_of_many(lsns, |i, s, lsn, win| {
            let (tag, payload) = s
                .payload_at(lsn - s.base, self.opts.max_frame_bytes, win)
                .map_err(|e| at_boundary(e, lsn))?;
            f(i, tag, payload)
        })
    }

    /// The walk of [`Log::read_many`] and [`Log::visit_many`]: for each of
    /// `lsns` in log order, `read` is given its index in `lsns`, its
    /// segment, the LSN and the read-ahead window over that segment, sized to reach the frames wanted next nearby. The window's
    /// buffer is the thread's, reused from call to call.
    fn each_of_many(
        &self,
        lsns: &[Lsn],
        mut read: impl FnMut(usize, &Segment, Lsn, &mut Window) -> Result<()>,
    ) -> Result<()> {
        let mut order: Vec<(Lsn, usize)> = lsns.iter().copied().zip(0..).collect();
        order.sort_unstable();
        let mut win = Window::reused();
        let mut seg: Option<Arc<Segment>> = None;
        for (k, &(lsn, i)) in order.iter().enumerate() {
            let s: &Segment = match &mut seg {
                Some(s) if lsn >= s.base && lsn - s.base < s.len() => s,
                held => {
                    // A window holds bytes of one segment's file only.
                    win.forget();
                    held.insert(self.holder(lsn)?)
                }
            };
            // The frames wanted next that are near this one: read up to the
            // last of them (and a little past its start, for its bytes).
            let mut last = lsn;
            for &(next, _) in order.get(k + 1..).unwrap_or_default() {
                if next - last > READ_RUN_GAP || next - lsn >= READ_RUN_MAX {
                    break;
                }
                last = next;
            }
            win.set_chunk((last - lsn).saturating_add(READ_RUN_TAIL).min(READ_RUN_MAX));
            read(i, s, lsn, &mut win)?;
        }
        win.keep();
        Ok(())
    }

    /// The segment holding `lsn`, which must lie in the log.
    fn holder(&self, lsn: Lsn) -> Result<Arc<Segment>> {
        let end = self.end();
        let start = self.start();
        if lsn < start || lsn >= end {
            return Err(Error::invalid(format!(
                "LSN {lsn} is outside the log [{start}, {end})"
            )));
        }
        self.locate(lsn)
            .ok_or_else(|| Error::invalid(format!("no segment holds LSN {lsn}")))
    }

    /// Iterates frames from `from` (a frame boundary, or 0 for the start) up
    /// to `end()` as of this call, checking CRCs. Stops after the first error.
    pub(crate) fn scan(&self, from: Lsn) -> LogScan<'_> {
        self.scan_trusting(from, 0..0)
    }

    /// [`Log::scan`], but frames whose checksums this log's recovery
    /// verified when it was opened are not checked again: an open's
    /// replay reads every frame recovery has just checked, from the
    /// same mapped sealed segments and the active segment it synced, and
    /// a second CRC of each was about a tenth of the replay's reading
    /// thread. Frames outside that range (appended since, or before the
    /// checkpoint recovery started from) are checked as `scan` checks
    /// them. For the open's replay only: `verify` and `rebuild_indexes`
    /// check every frame they read.
    pub(crate) fn scan_checked_at_open(&self, from: Lsn) -> LogScan<'_> {
        self.scan_trusting(from, self.checked_at_open.clone())
    }

    fn scan_trusting(&self, from: Lsn, checked: std::ops::Range<Lsn>) -> LogScan<'_> {
        let limit = self.end();
        let mut scan = LogScan {
            log: self,
            next: if from == 0 { self.start() } else { from },
            limit,
            seg: None,
            win: Window::default(),
            pending: None,
            done: false,
            checked,
        };
        if from != 0 && (from < self.start() || from > limit) {
            scan.pending = Some(Error::invalid(format!(
                "scan from LSN {from} is outside the log [{}, {limit}]",
                self.start()
            )));
        }
        scan
    }

    /// A snapshot of the segment list.
    pub(crate) fn segments(&self) -> Vec<SegmentInfo> {
        self.segment_list()
            .iter()
            .map(|s| SegmentInfo {
                path: s.path.clone(),
                base: s.base,
                len: s.len(),
                sealed: s.is_sealed(),
            })
            .collect()
    }

    /// A clone of the segment list. The list stays consistent even if a
    /// thread panicked while holding the lock (each update is one replace or
    /// push), so a poisoned lock is recovered rather than reported.
    fn segment_list(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The bounds of the segment holding `lsn`: its base and the next
    /// segment's base (`u64::MAX` for the last segment). `None` below the
    /// first segment.
    pub(crate) fn segment_bounds(&self, lsn: Lsn) -> Option<(Lsn, Lsn)> {
        let list = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let idx = list.partition_point(|s| s.base <= lsn).checked_sub(1)?;
        let next = list.get(idx + 1).map_or(u64::MAX, |s| s.base);
        list.get(idx).map(|s| (s.base, next))
    }

    /// The segment holding `lsn`: the last one whose base is `<= lsn`.
    fn locate(&self, lsn: Lsn) -> Option<Arc<Segment>> {
        let list = self.segments.read().unwrap_or_else(PoisonError::into_inner);
        let idx = list.partition_point(|s| s.base <= lsn).checked_sub(1)?;
        list.get(idx).cloned()
    }
}

/// A read at `lsn` that found no valid frame: said to be corruption there,
/// or `lsn` not being a frame boundary.
fn at_boundary(e: Error, lsn: Lsn) -> Error {
    match e {
        Error::Corruption {
            segment,
            offset,
            reason,
        } => Error::Corruption {
            segment,
            offset,
            reason: format!("{reason} (or LSN {lsn} is not a frame boundary)"),
        },
        other => other,
    }
}

/// `n` rounded down to a whole number of direct-write blocks.
fn aligned_down(n: usize) -> usize {
    n - n % DIRECT_ALIGN
}

/// Frame `i` of `src`, which must have the announced payload length `n`.
fn checked_frame(src: &mut impl FrameSource, i: usize, n: u32) -> Result<FrameRef<'_>> {
    let f = src.frame(i);
    if f.payload.len() as u64 != u64::from(n) {
        return Err(Error::invalid(format!(
            "frame {i}: payload of {} bytes, announced as {n}",
            f.payload.len()
        )));
    }
    Ok(f)
}

/// Where `Log::write_into` puts an append's frames.
trait FrameOut {
    /// Appends a frame: its header, then its payload.
    fn frame(&mut self, header: &[u8], payload: &[u8]) -> Result<()>;
    /// Writes out every byte of the current segment; with direct writes,
    /// returns its partial last block (`Writer::tail`).
    fn finish(&mut self) -> Result<Option<Vec<u8>>>;
    /// Continues at `len` of a new segment, after `finish`.
    fn next_segment(&mut self, seg: Arc<Segment>, file: Arc<SegmentFile>, len: u64) -> Result<()>;
}

/// Frames written through the page cache, `WRITE_CHUNK` bytes at a time.
struct PageCacheOut<'b> {
    buf: &'b mut Vec<u8>,
    seg: Arc<Segment>,
    file: Arc<SegmentFile>,
    /// Where `buf` goes in the file.
    at: u64,
}

impl PageCacheOut<'_> {
    fn write_buf(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.file
                .write_all_at(self.buf, self.at)
                .map_err(|e| io_err("appending to segment", &self.seg.path, e))?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl FrameOut for PageCacheOut<'_> {
    fn frame(&mut self, header: &[u8], payload: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(header);
        self.buf.extend_from_slice(payload);
        if self.buf.len() >= WRITE_CHUNK {
            self.write_buf()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Option<Vec<u8>>> {
        self.write_buf()?;
        Ok(None)
    }

    fn next_segment(&mut self, seg: Arc<Segment>, file: Arc<SegmentFile>, len: u64) -> Result<()> {
        (self.seg, self.file, self.at) = (seg, file, len);
        Ok(())
    }
}

impl FrameOut for direct::DirectWriter<'_> {
    fn frame(&mut self, header: &[u8], payload: &[u8]) -> Result<()> {
        self.push(header)?;
        self.push(payload)
    }

    fn finish(&mut self) -> Result<Option<Vec<u8>>> {
        direct::DirectWriter::finish(self).map(Some)
    }

    fn next_segment(&mut self, seg: Arc<Segment>, file: Arc<SegmentFile>, len: u64) -> Result<()> {
        direct::DirectWriter::next_segment(self, seg, file, len)
    }
}

/// Builds an I/O error naming a segment.
fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// Iterator over frames, returned by [`Log::scan`]. Holds at most one
/// segment and one read-ahead buffer; frames of sealed segments are
/// zero-copy.
pub(crate) struct LogScan<'a> {
    /// The log being scanned.
    log: &'a Log,
    /// LSN of the next frame.
    next: Lsn,
    /// `end()` when the scan started; frames appended later are not visited.
    limit: Lsn,
    /// The segment `next` is in, cached to avoid the list lock per frame.
    seg: Option<Arc<Segment>>,
    /// Read-ahead buffer for the active segment.
    win: Window,
    /// An error to yield first (a bad `from`).
    pending: Option<Error>,
    /// Set after an error or the end.
    done: bool,
    /// Frames starting here were checked already (see
    /// [`Log::scan_checked_at_open`]): their checksums are not computed.
    checked: std::ops::Range<Lsn>,
}

impl LogScan<'_> {
    /// Finds the next frame, or `None` at the limit.
    fn step(&mut self) -> Result<Option<(Lsn, FrameBuf)>> {
        loop {
            if self.next >= self.limit {
                return Ok(None);
            }
            let next = self.next;
            let seg = match &self.seg {
                Some(s) if s.base <= next && next - s.base < s.len() => Arc::clone(s),
                _ => {
                    let s = self
                        .log
                        .locate(next)
                        .ok_or_else(|| Error::invalid(format!("no segment holds LSN {next}")))?;
                    if s.base != self.seg.as_ref().map_or(u64::MAX, |c| c.base) {
                        self.win = Window::default();
                    }
                    self.seg = Some(Arc::clone(&s));
                    s
                }
            };
            let off = next - seg.base;
            if off == 0 {
                // The end of the previous segment: skip this one's header.
                self.next = seg.base + SEGMENT_HEADER_LEN;
                continue;
            }
            if off < SEGMENT_HEADER_LEN || off >= seg.len() {
                return Err(Error::invalid(format!(
                    "LSN {next} is not a frame position in {}",
                    seg.path.display()
                )));
            }
            let win = match seg.data {
                segment::SegmentData::File(_) => Some(&mut self.win),
                segment::SegmentData::Mapped(_) => None,
            };
            let check_crc = !self.checked.contains(&next);
            let (frame, total) =
                seg.frame_at(off, self.log.opts.max_frame_bytes, win, check_crc)?;
            self.next = next + total;
            return Ok(Some((next, frame)));
        }
    }
}

impl Iterator for LogScan<'_> {
    type Item = Result<(Lsn, FrameBuf)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        match self.step() {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

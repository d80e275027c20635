//! One segment file as the readers see it, and frames read back from it.
//!
//! A segment is either sealed (length final, read through a shared read-only
//! mmap, frames handed out zero-copy) or active (still growing, read with
//! positional reads, frames copied out). Its published length only ever covers
//! complete frames, which is what lets readers run next to the writer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::Mmap;

use super::Lsn;
use super::file::SegmentFile;
use super::frame::{FRAME_HEADER_LEN, FrameHeader, SEGMENT_HEADER_LEN, frame_crc};
use crate::error::{Error, Result};

/// How many bytes a [`Window`] reads at once from an active segment: large
/// enough that scanning small frames costs one syscall per many frames.
const WINDOW_CHUNK: u64 = 1 << 20;

/// Where a segment's bytes come from.
#[derive(Debug)]
pub(super) enum SegmentData {
    /// Sealed: mapped once, shared by every frame read from it.
    Mapped(Arc<Mmap>),
    /// Active (or sealed but not yet swapped for its mapped twin in the
    /// segment list): positional reads on the shared file handle.
    File(Arc<SegmentFile>),
}

/// A segment file: its place in the LSN space and how to read it.
#[derive(Debug)]
pub(super) struct Segment {
    /// Path, for error messages and `Log::segments`.
    pub(super) path: PathBuf,
    /// LSN of the segment's first byte (its header).
    pub(super) base: Lsn,
    /// Bytes of the file that readers may look at: the header plus complete
    /// frames. Stored by the writer only after the bytes are written.
    len: AtomicU64,
    /// The bytes.
    pub(super) data: SegmentData,
}

impl Segment {
    /// A sealed segment over its mapping; its length is the mapping's length.
    pub(super) fn mapped(path: PathBuf, base: Lsn, map: Mmap) -> Segment {
        let len = map.len() as u64;
        Segment {
            path,
            base,
            len: AtomicU64::new(len),
            data: SegmentData::Mapped(Arc::new(map)),
        }
    }

    /// A segment read through its file, with `len` bytes published so far.
    pub(super) fn file(path: PathBuf, base: Lsn, file: Arc<SegmentFile>, len: u64) -> Segment {
        Segment {
            path,
            base,
            len: AtomicU64::new(len),
            data: SegmentData::File(file),
        }
    }

    /// Published length: every byte below it belongs to a complete frame.
    pub(super) fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Makes bytes up to `len` visible to readers. Called by the writer only
    /// after those bytes have been written.
    pub(super) fn publish_len(&self, len: u64) {
        self.len.store(len, Ordering::Release);
    }

    /// Sealed segments are the mapped ones.
    pub(super) fn is_sealed(&self) -> bool {
        matches!(self.data, SegmentData::Mapped(_))
    }

    /// A corruption error naming this segment.
    pub(super) fn corrupt(&self, offset: u64, reason: impl Into<String>) -> Error {
        corruption(&self.path, offset, reason)
    }

    /// Reads and checks the frame at byte `off` of this segment. Returns the
    /// frame and its total size (header plus payload). `win`, when given, is a
    /// read-ahead buffer reused across calls (sequential scans of the active
    /// segment); without it an active-segment read costs two positional reads.
    /// `check_crc` false skips the checksum (not the length checks): for a
    /// frame the log's recovery verified (see `Log::scan_checked_at_open`).
    pub(super) fn frame_at(
        &self,
        off: u64,
        max_frame_bytes: u32,
        win: Option<&mut Window>,
        check_crc: bool,
    ) -> Result<(FrameBuf, u64)> {
        let seg_len = self.check_offset(off)?;
        match &self.data {
            SegmentData::Mapped(map) => {
                let (h, p_start, p_end, total) =
                    self.mapped_frame(map, off, seg_len, max_frame_bytes, check_crc)?;
                Ok((
                    FrameBuf {
                        tag: h.tag,
                        data: FrameData::Mapped {
                            map: Arc::clone(map),
                            start: p_start,
                            end: p_end,
                        },
                    },
                    total,
                ))
            }
            SegmentData::File(file) => match win {
                Some(win) => {
                    let (h, payload, total) =
                        self.windowed_frame(file, win, off, seg_len, max_frame_bytes, check_crc)?;
                    Ok((FrameBuf::owned(h.tag, payload.to_vec()), total))
                }
                None => {
                    let mut hb = [0u8; 9];
                    file.read_exact_at(&mut hb, off)
                        .map_err(|e| self.read_error(off, e))?;
                    let h = FrameHeader::parse(&hb)
                        .ok_or_else(|| self.corrupt(off, "short frame header"))?;
                    let total = self.check_len(&h, off, seg_len, max_frame_bytes)?;
                    // Both bounds checked above, so this allocation is at most
                    // max_frame_bytes and within the file.
                    let mut payload = vec![0u8; to_usize(u64::from(h.len))?];
                    file.read_exact_at(&mut payload, off + FRAME_HEADER_LEN)
                        .map_err(|e| self.read_error(off, e))?;
                    if check_crc {
                        self.check_crc(&h, &payload, off)?;
                    }
                    Ok((FrameBuf::owned(h.tag, payload), total))
                }
            },
        }
    }

    /// [`Segment::frame_at`] with a read-ahead window, the frame's checksum
    /// checked, its payload borrowed (from the mapping of a sealed segment,
    /// from `win` for the active one) instead of copied out: returns the
    /// frame's tag and payload. Accepts and rejects exactly what `frame_at`
    /// does, with the same errors.
    pub(super) fn payload_at<'a>(
        &'a self,
        off: u64,
        max_frame_bytes: u32,
        win: &'a mut Window,
    ) -> Result<(u8, &'a [u8])> {
        let seg_len = self.check_offset(off)?;
        match &self.data {
            SegmentData::Mapped(map) => {
                let (h, p_start, p_end, _) =
                    self.mapped_frame(map, off, seg_len, max_frame_bytes, true)?;
                let payload = map
                    .get(p_start..p_end)
                    .ok_or_else(|| self.corrupt(off, "frame runs past the end"))?;
                Ok((h.tag, payload))
            }
            SegmentData::File(file) => {
                let (h, payload, _) =
                    self.windowed_frame(file, win, off, seg_len, max_frame_bytes, true)?;
                Ok((h.tag, payload))
            }
        }
    }

    /// The published length, once `off` is known to be where a frame's
    /// header can start (the first checks of [`Segment::frame_at`]).
    // Inlined, as are `mapped_frame` and `check_len`: called out of line,
    // each returning its `Result` through memory, these checks took a
    // third of a replay's scan of the log (`LogScan::next` 38.0 M -> 25.3 M
    // instructions inlined, 132,000 frames).
    #[inline(always)]
    fn check_offset(&self, off: u64) -> Result<u64> {
        let seg_len = self.len();
        if off < SEGMENT_HEADER_LEN || off >= seg_len {
            return Err(Error::invalid(format!(
                "offset {off} is not a frame position in {} ({seg_len} bytes)",
                self.path.display()
            )));
        }
        if seg_len - off < FRAME_HEADER_LEN {
            return Err(self.corrupt(off, "frame header runs past the end of the segment"));
        }
        Ok(seg_len)
    }

    /// The frame at `off` of a mapped segment, checked: its header, where its
    /// payload starts and ends in the mapping, and its total size.
    #[inline(always)]
    fn mapped_frame(
        &self,
        map: &Mmap,
        off: u64,
        seg_len: u64,
        max_frame_bytes: u32,
        check_crc: bool,
    ) -> Result<(FrameHeader, usize, usize, u64)> {
        let start = to_usize(off)?;
        let h = map
            .get(start..)
            .and_then(FrameHeader::parse)
            .ok_or_else(|| self.corrupt(off, "frame header runs past the end"))?;
        let total = self.check_len(&h, off, seg_len, max_frame_bytes)?;
        let p_start = start + 9;
        let p_end = start + to_usize(total)?;
        let payload = map
            .get(p_start..p_end)
            .ok_or_else(|| self.corrupt(off, "frame runs past the end"))?;
        if check_crc {
            self.check_crc(&h, payload, off)?;
        }
        Ok((h, p_start, p_end, total))
    }

    /// The frame at `off` of a segment read through its file, checked, read
    /// into `win`: its header, its payload (in `win`) and its total size.
    fn windowed_frame<'w>(
        &self,
        file: &SegmentFile,
        win: &'w mut Window,
        off: u64,
        seg_len: u64,
        max_frame_bytes: u32,
        check_crc: bool,
    ) -> Result<(FrameHeader, &'w [u8], u64)> {
        let h = FrameHeader::parse(win.get(file, &self.path, off, 9, seg_len)?)
            .ok_or_else(|| self.corrupt(off, "short frame header"))?;
        let total = self.check_len(&h, off, seg_len, max_frame_bytes)?;
        let bytes = win.get(file, &self.path, off, total, seg_len)?;
        let payload = bytes.get(9..).unwrap_or_default();
        if check_crc {
            self.check_crc(&h, payload, off)?;
        }
        Ok((h, payload, total))
    }

    /// Checks the length field before anything is allocated or sliced.
    #[inline(always)]
    fn check_len(&self, h: &FrameHeader, off: u64, seg_len: u64, max: u32) -> Result<u64> {
        if h.len > max {
            return Err(self.corrupt(
                off,
                format!("frame length {} exceeds max_frame_bytes {max}", h.len),
            ));
        }
        let total = h.frame_len();
        if total > seg_len - off {
            return Err(self.corrupt(
                off,
                format!(
                    "frame of {total} bytes runs past the end of the segment ({} bytes left)",
                    seg_len - off
                ),
            ));
        }
        Ok(total)
    }

    /// Verifies the checksum of a frame whose payload is in hand.
    fn check_crc(&self, h: &FrameHeader, payload: &[u8], off: u64) -> Result<()> {
        let crc = frame_crc(h.len, h.tag, payload);
        if crc == h.crc {
            Ok(())
        } else {
            Err(self.corrupt(
                off,
                format!(
                    "frame checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                    h.crc
                ),
            ))
        }
    }

    /// An I/O error while reading this segment.
    fn read_error(&self, off: u64, e: std::io::Error) -> Error {
        Error::io(
            format!("reading {} at offset {off}", self.path.display()),
            e,
        )
    }
}

/// Builds `Error::Corruption` for a segment file.
pub(super) fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        segment: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Converts a file offset to a slice index; only fails on targets where
/// `usize` is narrower than the file, which we report instead of truncating.
pub(super) fn to_usize(v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("offset {v} does not fit in memory")))
}

/// A read-ahead buffer over an active segment, so that sequential scans read
/// the file in large chunks instead of two syscalls per frame.
#[derive(Debug)]
pub(super) struct Window {
    /// File offset of `buf[0]`.
    start: u64,
    /// `buf[..filled]` are the file's bytes from `start`; the rest holds
    /// bytes of earlier reads (or zeros), which a later read overwrites:
    /// the buffer is zero-filled only where it grows, not before each read.
    buf: Vec<u8>,
    /// How many bytes of `buf` the last read filled (0 after a failed one).
    filled: usize,
    /// Bytes a read fetches at least ([`WINDOW_CHUNK`] unless set).
    chunk: u64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            start: 0,
            buf: Vec::new(),
            filled: 0,
            chunk: WINDOW_CHUNK,
        }
    }
}

/// A buffer a [`Window::reused`] window left is kept for the thread's next
/// one up to this many bytes (`Log::read_many` reads at most 256 KiB at
/// once, unless a frame is larger).
const WINDOW_KEEP: usize = 256 << 10;

std::thread_local! {
    /// The buffer the thread's last [`Window::reused`] window left: a read
    /// of a few frames (a trace) would otherwise allocate and zero-fill a
    /// buffer for each call.
    static SPARE_WINDOW: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Window {
    /// An empty window over the buffer the thread's last one left (see
    /// [`Window::keep`]), or a new one.
    pub(super) fn reused() -> Window {
        Window {
            buf: SPARE_WINDOW.with(std::cell::Cell::take),
            ..Window::default()
        }
    }

    /// Leaves this window's buffer for the thread's next [`Window::reused`],
    /// unless it is larger than [`WINDOW_KEEP`].
    pub(super) fn keep(self) {
        if self.buf.capacity() <= WINDOW_KEEP {
            SPARE_WINDOW.with(|spare| spare.set(self.buf));
        }
    }

    /// Forgets the bytes read (the window is about to read another file),
    /// keeping the buffer.
    pub(super) fn forget(&mut self) {
        self.start = 0;
        self.filled = 0;
    }

    /// Sets how many bytes the next read fetches at least (capped at
    /// [`WINDOW_CHUNK`]): for reads of frames that are not sequential, the
    /// bytes up to the last of the nearby frames wanted next.
    pub(super) fn set_chunk(&mut self, chunk: u64) {
        self.chunk = chunk.min(WINDOW_CHUNK);
    }

    /// Returns bytes `[off, off + n)` of `file`. The caller guarantees
    /// `off + n <= limit` where `limit` is a length known to be on disk, and
    /// that `n` was bounds-checked (it is at most a frame, or a chunk).
    pub(super) fn get(
        &mut self,
        file: &SegmentFile,
        path: &Path,
        off: u64,
        n: u64,
        limit: u64,
    ) -> Result<&[u8]> {
        let have_end = self.start + self.filled as u64;
        if off < self.start || off + n > have_end {
            let want = n.max(self.chunk).min(limit.saturating_sub(off));
            if want < n {
                return Err(corruption(path, off, "read past the end of the segment"));
            }
            let want = to_usize(want)?;
            // Nothing is held until the read succeeds.
            self.filled = 0;
            if self.buf.len() < want {
                self.buf.reserve_exact(want - self.buf.len());
                self.buf.resize(want, 0);
            }
            let into = self
                .buf
                .get_mut(..want)
                .ok_or_else(|| corruption(path, off, "read past the end of the buffered window"))?;
            file.read_exact_at(into, off)
                .map_err(|e| Error::io(format!("reading {} at offset {off}", path.display()), e))?;
            self.start = off;
            self.filled = want;
        }
        let s = to_usize(off - self.start)?;
        let e = s + to_usize(n)?;
        self.buf
            .get(..self.filled)
            .and_then(|held| held.get(s..e))
            .ok_or_else(|| corruption(path, off, "read past the end of the buffered window"))
    }
}

/// A frame read back from the log.
///
/// Zero-copy over the mapping for sealed segments (it keeps the mapping
/// alive, even if the segment is later deleted), owned for the active one.
#[derive(Debug, Clone)]
pub(crate) struct FrameBuf {
    /// The frame's tag byte.
    tag: u8,
    /// Where the payload lives.
    data: FrameData,
}

/// Storage behind a [`FrameBuf`].
#[derive(Debug, Clone)]
enum FrameData {
    /// A range of a sealed segment's mapping (bounds checked on creation).
    Mapped {
        /// The mapping, kept alive by this frame.
        map: Arc<Mmap>,
        /// Payload start in the mapping.
        start: usize,
        /// Payload end in the mapping.
        end: usize,
    },
    /// A copy, for frames of the active segment.
    Owned(Vec<u8>),
}

impl FrameBuf {
    /// An owned frame.
    fn owned(tag: u8, payload: Vec<u8>) -> FrameBuf {
        FrameBuf {
            tag,
            data: FrameData::Owned(payload),
        }
    }

    /// The caller-defined record type stored with the payload.
    pub(crate) fn tag(&self) -> u8 {
        self.tag
    }

    /// The frame's bytes in the log: header and payload.
    pub(crate) fn frame_bytes(&self) -> u64 {
        super::frame::FRAME_HEADER_LEN + self.payload().len() as u64
    }

    /// The payload bytes, as appended.
    pub(crate) fn payload(&self) -> &[u8] {
        match &self.data {
            // The range was checked against the mapping when the frame was read.
            FrameData::Mapped { map, start, end } => map.get(*start..*end).unwrap_or_default(),
            FrameData::Owned(v) => v,
        }
    }
}

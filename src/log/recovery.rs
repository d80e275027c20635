//! Opening a log directory: find the segments, check them, cut a torn tail.
//!
//! Everything is checked before anything is modified, so a log that fails to
//! open because of corruption is left exactly as it was found (for salvage).
//! The rules are documented in `docs/FORMAT.md` ("Recovery").

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::file::{self, SegmentFile};
use super::frame::{
    self, FRAME_HEADER_LEN, FrameHeader, HeaderProblem, SEGMENT_HEADER_LEN, check_frame,
    encode_segment_header,
};
use super::segment::{Segment, Window, corruption, to_usize};
use super::unsynced;
use super::{LogOptions, Lsn, RecoveryReport};
use crate::error::{Error, Result};
use crate::fs::FileSystem;

/// The smallest unit a disk writes: a write cut by a power loss leaves
/// whole sectors of old data (zeros past the old end of the file).
const TORN_SECTOR: u64 = 512;

/// Granularity of the zero-tail check, so a long zero-filled tail is checked
/// without reading it into memory at once.
const ZERO_CHECK_CHUNK: u64 = 1 << 20;

/// The outcome of recovery: what `Log::open` needs to build a `Log`.
pub(super) struct Recovered {
    /// All segments, oldest first; the last one is the active segment.
    pub(super) segments: Vec<Arc<Segment>>,
    /// Write handle of the active segment.
    pub(super) active_file: Arc<SegmentFile>,
    /// Length of the active segment after recovery.
    pub(super) active_len: u64,
    /// What recovery found and did.
    pub(super) report: RecoveryReport,
    /// The first frame whose checksum recovery verified: every frame from
    /// it to `report.end` was checked.
    pub(super) checked_from: Lsn,
}

/// Largest base LSN accepted from a file name (4 EiB). Real logs never get
/// near it; refusing larger ones keeps every `base + offset` sum far from
/// overflow even for a crafted file name.
pub(super) const MAX_BASE: Lsn = 1 << 62;

/// File name of the segment whose first byte has LSN `base`.
pub(super) fn segment_path(dir: &Path, base: Lsn) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// Creates a segment file holding only its header, durably: the header is
/// synced and so is the directory entry.
pub(super) fn create_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    base: Lsn,
) -> Result<(Segment, Arc<SegmentFile>)> {
    let path = segment_path(dir, base);
    let f = SegmentFile::create_new(fs, &path)
        .map_err(|e| Error::io(format!("creating segment {}", path.display()), e))?;
    let written = f
        .write_all_at(&encode_segment_header(base), 0)
        .and_then(|()| f.sync_data())
        .and_then(|()| file::sync_dir(fs, dir));
    if let Err(e) = written {
        // Best effort: a leftover header-less file would be repaired on the
        // next open anyway (see `last_segment_is_fresh`).
        let _ = file::remove_file(fs, &path);
        return Err(Error::io(
            format!("writing header of new segment {}", path.display()),
            e,
        ));
    }
    let f = Arc::new(f);
    Ok((
        Segment::file(path, base, Arc::clone(&f), SEGMENT_HEADER_LEN),
        f,
    ))
}

/// Parses the base LSN out of a `<20 digits>.seg` file name stem.
pub(super) fn parse_base(stem: &str) -> Option<Lsn> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Uniform access to a segment's bytes during recovery: a mapping for sealed
/// segments, buffered positional reads for the last one (never mapped before
/// its tail is cut).
trait Source {
    /// Length of the file.
    fn len(&self) -> u64;
    /// Bytes `[off, off + n)`; the caller guarantees `off + n <= len()`.
    fn get(&mut self, off: u64, n: u64) -> Result<&[u8]>;
}

/// A sealed segment's mapping.
struct SliceSource<'a> {
    /// The mapped bytes.
    bytes: &'a [u8],
    /// For error messages.
    path: &'a Path,
}

impl Source for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn get(&mut self, off: u64, n: u64) -> Result<&[u8]> {
        let s = to_usize(off)?;
        let e = s + to_usize(n)?;
        self.bytes
            .get(s..e)
            .ok_or_else(|| corruption(self.path, off, "read past the end of the segment"))
    }
}

/// The last segment, read through the file.
struct FileSource<'a> {
    /// The open file.
    file: &'a SegmentFile,
    /// For error messages.
    path: &'a Path,
    /// File length when recovery started.
    len: u64,
    /// Read-ahead buffer.
    win: Window,
}

impl Source for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn get(&mut self, off: u64, n: u64) -> Result<&[u8]> {
        self.win.get(self.file, self.path, off, n, self.len)
    }
}

/// True if bytes `[from, to)` of `src` are all zero; reads in bounded chunks.
fn all_zero(src: &mut dyn Source, from: u64, to: u64) -> Result<bool> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHECK_CHUNK);
        if !frame::is_all_zero(src.get(at, n)?) {
            return Ok(false);
        }
        at += n;
    }
    Ok(true)
}

/// What scanning one segment found.
struct SegmentScan {
    /// End of the last valid frame (the new file length if `torn`).
    valid_end: u64,
    /// Frames whose checksum was verified.
    frames: u64,
}

/// Checks every frame of `src` from `off` to the end.
///
/// For a sealed segment anything but a clean end is corruption. For the last
/// segment a torn tail (see `docs/FORMAT.md`) ends the scan: `valid_end` is
/// then where the file must be cut.
fn scan_segment(
    src: &mut dyn Source,
    path: &Path,
    mut off: u64,
    max: u32,
    last: bool,
) -> Result<SegmentScan> {
    let len = src.len();
    let mut frames = 0u64;
    let corrupt = |off: u64, reason: String| corruption(path, off, reason);
    while off < len {
        let rem = len - off;
        if rem < FRAME_HEADER_LEN {
            if last {
                break; // a torn frame header
            }
            return Err(corrupt(
                off,
                format!("{rem} trailing bytes are too short for a frame header"),
            ));
        }
        let h = FrameHeader::parse(src.get(off, FRAME_HEADER_LEN)?)
            .ok_or_else(|| corrupt(off, "short frame header".into()))?;
        let total = h.frame_len();
        if h.len > max || total > rem {
            let what = if h.len > max {
                format!("frame length {} exceeds max_frame_bytes {max}", h.len)
            } else {
                format!(
                    "frame of {total} bytes runs past the end of the segment ({rem} bytes left)"
                )
            };
            if !last {
                return Err(corrupt(off, what));
            }
            // (The header is not zero here: an all-zero header has length 0
            // and is handled as a complete frame below.)
            //
            // A torn write leaves only a prefix of the payload after the
            // header. Look for evidence of a damaged frame instead: a damaged
            // frame's successor starts within 9 + max bytes of it.
            let span = (2 * (FRAME_HEADER_LEN + u64::from(max))).min(rem);
            let region = src.get(off, span)?;
            if let Some(evidence) = frame::damage_evidence(region, max) {
                return Err(corrupt(off, format!("{what}: {evidence}")));
            }
            break; // torn tail
        }
        let bytes = src.get(off, total)?;
        if check_frame(bytes).is_some() {
            frames += 1;
            off += total;
            continue;
        }
        let what = format!("frame checksum mismatch (stored {:#010x})", h.crc);
        if !last {
            return Err(corrupt(off, what));
        }
        // The frame is complete but does not check. It is a torn write only
        // if zero fill follows it (or it is zero fill itself); a damaged frame
        // at the very end of the file is reported, never dropped.
        let frame_is_zero = frame::is_all_zero(bytes);
        // Where the frame's trailing run of zero bytes starts.
        let zeros_from = off
            + bytes
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i as u64 + 1);
        let after = off + total;
        if (frame_is_zero || after < len) && all_zero(src, after, len)? {
            break;
        }
        // A write torn by a power cut on a file system that had already
        // extended the file: the sectors that never reached the disk read as
        // zeros. That leaves a zero run from a sector boundary inside the
        // frame to the end of the file. A damaged frame (a flipped bit) does
        // not end that way unless its payload happened to end in zeros
        // across a sector boundary.
        let boundary = zeros_from.max(off + 1).div_ceil(TORN_SECTOR) * TORN_SECTOR;
        if boundary < after && all_zero(src, after, len)? {
            break;
        }
        return Err(corrupt(off, what));
    }
    Ok(SegmentScan {
        valid_end: off.min(len),
        frames,
    })
}

/// Checks every frame of the sealed segments `(path, bytes, from)`: each
/// must scan cleanly to its end. Returns the frames checked, or the error
/// of the first segment (in log order) that fails.
///
/// Two segments or more are checked on two threads, each taking the next
/// unchecked segment: the checksums of a replay's frames (1 GiB after a
/// long crash) are all the open does before the replay starts, and the
/// second core has nothing else to do then.
fn scan_sealed(segments: &[(&Path, &[u8], u64)], max: u32) -> Result<u64> {
    let scan_one = |&(path, bytes, off): &(&Path, &[u8], u64)| {
        let mut src = SliceSource { bytes, path };
        scan_segment(&mut src, path, off, max, false).map(|s| s.frames)
    };
    if segments.len() < 2 {
        return segments.iter().map(scan_one).sum();
    }
    let next = AtomicUsize::new(0);
    // The segments one thread checked, by place: (place, frames or error).
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(segment) = segments.get(i) else {
                return done;
            };
            let result = scan_one(segment);
            let failed = result.is_err();
            done.push((i, result));
            if failed {
                // Later segments do not matter once one fails; earlier
                // ones still do (the first failure in log order is the
                // one reported), and the other thread checks those.
                return done;
            }
        }
    };
    let (mine, theirs) = std::thread::scope(|scope| {
        let helper = scope.spawn(work);
        let mine = work();
        (mine, helper.join())
    });
    let theirs = theirs.map_err(|_| Error::panicked())?;
    let mut results: Vec<(usize, Result<u64>)> = mine.into_iter().chain(theirs).collect();
    results.sort_unstable_by_key(|(i, _)| *i);
    let mut frames = 0u64;
    for (_, result) in results {
        frames += result?;
    }
    Ok(frames)
}

/// Where the CRC-checked part of the log begins: segment index and offset.
fn scan_start(bases: &[Lsn], scan_from: Lsn, paths: &[PathBuf]) -> Result<(usize, u64)> {
    let first = bases.first().copied().unwrap_or(0);
    if scan_from == 0 || scan_from < first {
        // Frames before the oldest segment were removed by retention: the
        // checkpoint covers them, so checking starts at the first frame.
        return Ok((0, SEGMENT_HEADER_LEN));
    }
    let idx = bases.partition_point(|&b| b <= scan_from).saturating_sub(1);
    let base = bases.get(idx).copied().unwrap_or(0);
    let off = scan_from - base;
    if off == 0 {
        // The end of the previous segment, i.e. before this one's first frame.
        return Ok((idx, SEGMENT_HEADER_LEN));
    }
    if off < SEGMENT_HEADER_LEN {
        let path = paths.get(idx).cloned().unwrap_or_default();
        return Err(Error::invalid(format!(
            "scan_from {scan_from} points inside the header of {}",
            path.display()
        )));
    }
    Ok((idx, off))
}

/// Decides whether the last segment is a segment whose creation was torn by a
/// crash: shorter than a header and a prefix of the expected one, or nothing
/// but zeros. Such a file holds no frames and gets a fresh header.
fn last_segment_is_fresh(src: &mut dyn Source, base: Lsn) -> Result<bool> {
    let len = src.len();
    let expected = encode_segment_header(base);
    let head_len = len.min(SEGMENT_HEADER_LEN);
    let head = src.get(0, head_len)?;
    if len < SEGMENT_HEADER_LEN {
        let n = to_usize(head_len)?;
        return Ok(expected.get(..n) == Some(head) || frame::is_all_zero(head));
    }
    if frame::is_all_zero(head) {
        return all_zero(src, 0, len);
    }
    Ok(false)
}

/// Maps a header problem to the public error.
fn header_error(path: &Path, p: HeaderProblem) -> Error {
    match p {
        HeaderProblem::Corrupt(reason) => corruption(path, 0, reason),
        HeaderProblem::Incompatible(reason) => Error::Incompatible {
            reason: format!("{}: {reason}", path.display()),
        },
    }
}

/// Opens or creates the log in `dir` and recovers it; see `Log::open`.
pub(super) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    opts: &LogOptions,
    scan_from: Lsn,
) -> Result<Recovered> {
    file::ensure_dir(fs, dir)
        .map_err(|e| Error::io(format!("creating log directory {}", dir.display()), e))?;
    let entries = file::list_dir(fs, dir)
        .map_err(|e| Error::io(format!("listing log directory {}", dir.display()), e))?;
    let mut found: Vec<(Lsn, PathBuf)> = Vec::new();
    let mut mark_file = None;
    for (name, path) in entries {
        let Some(stem) = name.strip_suffix(".seg") else {
            if name == unsynced::MARK_FILE {
                mark_file = Some(path);
            }
            continue;
        };
        let base = parse_base(stem).filter(|&b| b <= MAX_BASE).ok_or_else(|| {
            corruption(
                &path,
                0,
                format!("segment file name is not a 20-digit base LSN of at most {MAX_BASE}"),
            )
        })?;
        found.push((base, path));
    }
    found.sort_by_key(|(b, _)| *b);

    let Some(((last_base, last_path), sealed)) = found.split_last() else {
        if scan_from > SEGMENT_HEADER_LEN {
            return Err(corruption(
                &segment_path(dir, 0),
                scan_from,
                format!("checkpoint at LSN {scan_from} but the log directory has no segments"),
            ));
        }
        let (seg, f) = create_segment(fs, dir, 0)?;
        return Ok(Recovered {
            segments: vec![Arc::new(seg)],
            active_file: f,
            active_len: SEGMENT_HEADER_LEN,
            report: RecoveryReport {
                truncated_bytes: 0,
                frames_scanned: 0,
                segments: 1,
                end: SEGMENT_HEADER_LEN,
                rewritten_bytes: 0,
            },
            checked_from: SEGMENT_HEADER_LEN,
        });
    };

    // 0. After a failed write or fsync (the `unsynced` mark), the bytes the
    // page cache shows past the mark may never reach the disk: write them
    // again, unchanged, and sync them, before anything (a checkpoint)
    // relies on them and before any segment is mapped. The content does
    // not change, so the checks below see what they would have seen.
    let mark = match &mark_file {
        None => unsynced::Mark::Absent,
        Some(path) => unsynced::read_file(fs, path)
            .map_err(|e| Error::io(format!("reading the unsynced mark {}", path.display()), e))?,
    };
    let rewritten_bytes = match mark {
        unsynced::Mark::Absent => 0,
        unsynced::Mark::DurableTo(lsn) => rewrite_unsynced(fs, &found, lsn)?,
        unsynced::Mark::Unreadable => rewrite_unsynced(fs, &found, scan_from)?,
    };

    // 1. Headers and continuity of the sealed segments (mapped once, here).
    let mut maps = Vec::with_capacity(sealed.len());
    let mut expected_base = found.first().map_or(0, |(b, _)| *b);
    for (base, path) in sealed {
        check_continuity(path, *base, expected_base)?;
        let f = SegmentFile::open_ro(fs, path)
            .map_err(|e| Error::io(format!("opening segment {}", path.display()), e))?;
        let map = f
            .map()
            .map_err(|e| Error::io(format!("mapping segment {}", path.display()), e))?;
        frame::check_segment_header(&map, *base).map_err(|p| header_error(path, p))?;
        expected_base = base
            .checked_add(map.len() as u64)
            .ok_or_else(|| corruption(path, 0, "segment ends past the largest LSN"))?;
        maps.push(map);
    }
    check_continuity(last_path, *last_base, expected_base)?;
    let last_file = SegmentFile::open_rw(fs, last_path)
        .map_err(|e| Error::io(format!("opening segment {}", last_path.display()), e))?;
    let last_len = last_file
        .len()
        .map_err(|e| Error::io(format!("reading size of {}", last_path.display()), e))?;
    let mut last_src = FileSource {
        file: &last_file,
        path: last_path,
        len: last_len,
        win: Window::default(),
    };
    let fresh = last_segment_is_fresh(&mut last_src, *last_base)?;
    if !fresh {
        let head = last_src.get(0, last_len.min(SEGMENT_HEADER_LEN))?;
        frame::check_segment_header(head, *last_base).map_err(|p| header_error(last_path, p))?;
    }

    // 2. Checksums from `scan_from` on.
    let bases: Vec<Lsn> = found.iter().map(|(b, _)| *b).collect();
    let paths: Vec<PathBuf> = found.iter().map(|(_, p)| p.clone()).collect();
    let (first_idx, first_off) = scan_start(&bases, scan_from, &paths)?;
    let checked_from = bases
        .get(first_idx)
        .map_or(Lsn::MAX, |base| base.saturating_add(first_off));
    let max = opts.max_frame_bytes;
    let to_scan: Vec<(&Path, &[u8], u64)> = sealed
        .iter()
        .zip(&maps)
        .enumerate()
        .skip(first_idx)
        .map(|(i, ((_, path), map))| {
            let off = if i == first_idx {
                first_off
            } else {
                SEGMENT_HEADER_LEN
            };
            (path.as_path(), &map[..], off)
        })
        .collect();
    let mut frames_scanned = scan_sealed(&to_scan, max)?;
    let last_idx = sealed.len();
    let start_off = if first_idx == last_idx {
        first_off
    } else {
        SEGMENT_HEADER_LEN
    };
    let on_disk = if fresh { SEGMENT_HEADER_LEN } else { last_len };
    if start_off > on_disk {
        return Err(corruption(
            last_path,
            start_off,
            format!(
                "checkpoint at LSN {scan_from} is past the end of the log (LSN {}): \
                 the log lost data that the checkpoint covers",
                last_base + on_disk
            ),
        ));
    }
    let valid_end = if fresh {
        SEGMENT_HEADER_LEN
    } else {
        let s = scan_segment(&mut last_src, last_path, start_off, max, true)?;
        frames_scanned += s.frames;
        s.valid_end
    };
    drop(last_src);

    // 3. Only now, with everything checked, repair the tail.
    let truncated_bytes = if fresh {
        last_len
    } else {
        last_len - valid_end
    };
    let ctx = |what: &str| format!("{what} {}", last_path.display());
    if fresh {
        last_file
            .set_len(0)
            .and_then(|()| last_file.write_all_at(&encode_segment_header(*last_base), 0))
            .map_err(|e| Error::io(ctx("rewriting the torn header of"), e))?;
    } else if truncated_bytes > 0 {
        last_file
            .set_len(valid_end)
            .map_err(|e| Error::io(ctx("truncating the torn tail of"), e))?;
    }
    // Whatever recovery read may still sit only in the page cache (the
    // process crashed, the OS did not): make it durable so `synced()` can
    // start at the end.
    if let Err(e) = last_file.sync_data() {
        // The pages this sync failed to write stay readable but may never
        // reach the disk: the next open must write them again (best
        // effort; the disk is failing).
        let _ = unsynced::mark(fs, dir, scan_from);
        return Err(Error::io(ctx("syncing"), e));
    }
    if fresh {
        file::sync_dir(fs, dir)
            .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))?;
    }

    // The bytes past the mark are durable now (step 0): the mark goes.
    if mark != unsynced::Mark::Absent {
        unsynced::clear(fs, dir).map_err(|e| {
            Error::io(
                format!("removing the unsynced mark in {}", dir.display()),
                e,
            )
        })?;
    }
    let end = last_base + valid_end;

    let mut segments: Vec<Arc<Segment>> = sealed
        .iter()
        .zip(maps)
        .map(|((base, path), map)| Arc::new(Segment::mapped(path.clone(), *base, map)))
        .collect();
    let active_file = Arc::new(last_file);
    segments.push(Arc::new(Segment::file(
        last_path.clone(),
        *last_base,
        Arc::clone(&active_file),
        valid_end,
    )));
    Ok(Recovered {
        report: RecoveryReport {
            truncated_bytes,
            frames_scanned,
            segments: segments.len(),
            end,
            rewritten_bytes,
        },
        segments,
        active_file,
        active_len: valid_end,
        checked_from,
    })
}

/// Writes every byte of the log's segment files from LSN `from` on again,
/// unchanged (segment headers excepted), syncing each file it touches
/// (see `unsynced`). Returns the bytes rewritten.
fn rewrite_unsynced(fs: &dyn FileSystem, segments: &[(Lsn, PathBuf)], from: Lsn) -> Result<u64> {
    let mut rewritten = 0;
    for (base, path) in segments {
        rewritten += unsynced::rewrite(fs, path, *base, from.max(base + SEGMENT_HEADER_LEN))
            .map_err(|e| Error::io(format!("rewriting unsynced bytes of {}", path.display()), e))?;
    }
    Ok(rewritten)
}

/// A segment must start exactly where the previous one ends.
fn check_continuity(path: &Path, base: Lsn, expected: Lsn) -> Result<()> {
    if base == expected {
        return Ok(());
    }
    let kind = if base > expected { "gap" } else { "overlap" };
    Err(corruption(
        path,
        0,
        format!(
            "segment base LSN {base} does not continue the previous segment, \
             which ends at LSN {expected} ({kind})"
        ),
    ))
}

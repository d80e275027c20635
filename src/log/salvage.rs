//! Salvage: rebuild a damaged log from every frame that is still intact.
//!
//! Normal recovery refuses to open a log with a damaged frame (anything but
//! a torn tail), because dropping it would lose data silently. Salvage is
//! the explicit way out: it checks every frame of every segment, keeps each
//! one whose checksum holds, skips each damaged region up to the next frame
//! that checks, and reports every byte range it dropped. The original log
//! is never modified: it is renamed aside (`log.before-salvage`, or
//! `log.before-salvage-N`) and a new log is written with the kept frames in
//! their original order. Frames get new LSNs, so the store rebuilds its
//! index from the new log. An intact log is left exactly as it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::{self, HeaderProblem, SEGMENT_HEADER_LEN, check_frame};
use super::recovery::{MAX_BASE, parse_base};
use super::{FrameRef, Log, LogOptions};
use crate::error::{Error, Result};
use crate::fs::{FileSystem, OpenMode};

/// Upper bound on checksum work spent looking for the next intact frame
/// after one damaged region, so that crafted bytes cannot make salvage
/// quadratic. Past it the rest of the segment is dropped (and reported).
const RESYNC_BUDGET_BYTES: u64 = 1 << 30;

/// Frames are re-appended in batches of at most this many payload bytes.
const APPEND_CHUNK_BYTES: usize = 4 << 20;

/// A byte range salvage dropped from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedRange {
    /// The segment file, in the renamed original log.
    pub segment: PathBuf,
    /// Byte offset of the range in that file.
    pub offset: u64,
    /// Length of the range.
    pub bytes: u64,
    /// Why it was dropped.
    pub reason: String,
}

/// What [`crate::StoreOptions::salvage_log`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// Intact frames found (and kept).
    pub frames_kept: u64,
    /// Every range dropped; empty when the log was intact (and then left
    /// untouched).
    pub dropped: Vec<DroppedRange>,
    /// Where the original log was moved, when it was rewritten.
    pub original: Option<PathBuf>,
}

/// The steps of a salvage that rewrites the log, in order, for tests that
/// stop it at each (`StoreOptions::salvage_crash_points`). Not part of the
/// stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SalvageStep {
    /// The store removed its index file, durably, before touching the log.
    IndexRemoved,
    /// The new log is written and synced under its temporary name
    /// (`<log>.salvage-tmp`).
    Written,
    /// The new log is renamed `<log>.salvaged`: complete, and what an open
    /// puts in place if the swap below is cut short.
    Complete,
    /// The original log is renamed aside (`<log>.before-salvage`).
    Aside,
    /// The new log is in place.
    Swapped,
}

/// One segment's intact frames, as offsets into its bytes. The bytes
/// themselves are not kept: salvage reads one segment at a time (to scan
/// it, then again to copy its intact frames), so that it holds at most one
/// segment in memory, not the whole log.
struct Scanned {
    /// The segment's length in bytes.
    len: u64,
    /// `(offset, total length)` of each intact frame.
    frames: Vec<(usize, usize)>,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

fn read_all(fs: &dyn FileSystem, path: &Path) -> Result<Vec<u8>> {
    let f = fs
        .open(path, OpenMode::ReadOnly)
        .map_err(|e| io("opening", path, e))?;
    let len = f.len().map_err(|e| io("reading size of", path, e))?;
    let len = usize::try_from(len)
        .map_err(|_| Error::invalid(format!("{} does not fit in memory", path.display())))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0)
        .map_err(|e| io("reading", path, e))?;
    Ok(buf)
}

/// Finds the intact frames of one segment; appends what it drops to `dropped`.
fn scan(
    bytes: &[u8],
    path: &Path,
    base: u64,
    max: u32,
    last: bool,
    dropped: &mut Vec<DroppedRange>,
) -> Result<Scanned> {
    let mut drop_range = |offset: usize, end: usize, reason: String| {
        dropped.push(DroppedRange {
            segment: path.to_path_buf(),
            offset: offset as u64,
            bytes: (end - offset) as u64,
            reason,
        });
    };
    match frame::check_segment_header(bytes, base) {
        Ok(()) => {}
        Err(HeaderProblem::Incompatible(reason)) => {
            return Err(Error::Incompatible {
                reason: format!("{}: {reason}", path.display()),
            });
        }
        Err(HeaderProblem::Corrupt(reason)) => {
            let end = bytes.len().min(SEGMENT_HEADER_LEN as usize);
            drop_range(0, end, format!("segment header: {reason}"));
        }
    }
    let ok = |at: usize| -> Option<usize> {
        let (h, _) = check_frame(bytes.get(at..)?)?;
        (h.len <= max).then(|| h.frame_len() as usize)
    };
    let mut frames = Vec::new();
    let mut off = SEGMENT_HEADER_LEN as usize;
    while off < bytes.len() {
        if let Some(total) = ok(off) {
            frames.push((off, total));
            off += total;
            continue;
        }
        // A damaged region: find the next frame that checks.
        let mut budget = RESYNC_BUDGET_BYTES;
        let mut next = None;
        let mut pos = off + 1;
        while pos + 9 <= bytes.len() {
            let cost = frame::FrameHeader::parse(&bytes[pos..])
                .map_or(0, |h| h.frame_len().min((bytes.len() - pos) as u64));
            if cost > budget {
                break;
            }
            budget -= cost;
            if ok(pos).is_some() {
                next = Some(pos);
                break;
            }
            pos += 1;
        }
        let end = next.unwrap_or(bytes.len());
        let reason = match (next, last) {
            (None, true) if frame::is_all_zero(&bytes[off..]) => {
                "zero bytes at the end of the log (a torn or preallocated tail)".to_owned()
            }
            (None, true) => "incomplete or damaged frame at the end of the log".to_owned(),
            (None, false) => "damaged frame at the end of a sealed segment".to_owned(),
            (Some(_), _) => {
                "damaged frame (checksum or length), followed by intact frames".to_owned()
            }
        };
        drop_range(off, end, reason);
        off = end;
    }
    Ok(Scanned {
        len: bytes.len() as u64,
        frames,
    })
}

/// The log directory's name (for the names of its siblings).
fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "log".to_owned())
}

/// `<dir>.<suffix>`, next to `dir`.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    dir.with_file_name(format!("{}.{suffix}", dir_name(dir)))
}

/// A directory name next to `dir` that does not exist yet.
fn free_name(dir: &Path, suffix: &str) -> PathBuf {
    let name = dir_name(dir);
    let mut candidate = sibling(dir, suffix);
    let mut n = 1;
    while candidate.exists() {
        n += 1;
        candidate = dir.with_file_name(format!("{name}.{suffix}-{n}"));
    }
    candidate
}

/// Renames `from` to `to` and fsyncs their parent directory, so that the
/// rename is durable before the next step.
fn rename_durably(fs: &dyn FileSystem, from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| io("renaming", from, e))?;
    match to.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => fs
            .sync_dir(parent)
            .map_err(|e| io("syncing directory", parent, e)),
        None => Ok(()),
    }
}

impl Log {
    /// Puts in place the new log of a salvage that a crash cut short after
    /// the new log was complete (`<dir>.salvaged` exists): moves `dir`
    /// aside if it is still there, then renames the new log `dir`. Returns
    /// true if it did; the caller must then rebuild anything that refers
    /// to LSNs, as after [`Log::salvage`].
    pub(crate) fn finish_interrupted_salvage(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
        let salvaged = sibling(dir, "salvaged");
        if !fs.is_dir(&salvaged) {
            return Ok(false);
        }
        if fs.is_dir(dir) {
            rename_durably(fs, dir, &free_name(dir, "before-salvage"))?;
        }
        rename_durably(fs, &salvaged, dir)?;
        Ok(true)
    }

    /// Salvages the log in `dir` (see the module documentation). Returns
    /// what was kept and dropped; the caller must rebuild anything that
    /// refers to LSNs when `original` is set. `at` is called after each
    /// step of a rewrite.
    ///
    /// The new log is written under a temporary name, synced, and renamed
    /// `<dir>.salvaged` (complete); only then is `dir` renamed aside and
    /// the new log renamed `dir`, each rename made durable before the next.
    /// An open that finds `<dir>.salvaged` finishes the swap
    /// ([`Log::finish_interrupted_salvage`]); a temporary log left by a
    /// crash is removed by the next salvage.
    pub(crate) fn salvage(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        opts: LogOptions,
        at: &mut dyn FnMut(SalvageStep),
    ) -> Result<SalvageReport> {
        let mut report = SalvageReport::default();
        // An earlier salvage cut short with its new log complete: that log
        // is put in place and salvaged again (it is intact, so left as is).
        Log::finish_interrupted_salvage(fs.as_ref(), dir)?;
        if !fs.is_dir(dir) {
            return Ok(report);
        }
        let mut found = Vec::new();
        for (name, path) in fs
            .list_dir(dir)
            .map_err(|e| io("listing log directory", dir, e))?
        {
            let Some(stem) = name.strip_suffix(".seg") else {
                continue;
            };
            match parse_base(stem).filter(|&b| b <= MAX_BASE) {
                Some(base) => found.push((base, path)),
                None => report.dropped.push(DroppedRange {
                    bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
                    segment: path,
                    offset: 0,
                    reason: "not a segment name (20-digit base LSN)".to_owned(),
                }),
            }
        }
        found.sort();
        let mut scanned = Vec::with_capacity(found.len());
        for (i, (base, path)) in found.iter().enumerate() {
            let bytes = read_all(fs.as_ref(), path)?;
            let last = i + 1 == found.len();
            scanned.push(scan(
                &bytes,
                path,
                *base,
                opts.max_frame_bytes,
                last,
                &mut report.dropped,
            )?);
            if let Some(next) = found.get(i + 1) {
                let end = base + scanned.last().map_or(0, |s| s.len);
                if next.0 != end {
                    report.dropped.push(DroppedRange {
                        segment: next.1.clone(),
                        offset: 0,
                        bytes: 0,
                        reason: format!(
                            "segment base LSN {} does not continue the previous segment \
                             (ends at {end}); frames are kept in file order",
                            next.0
                        ),
                    });
                }
            }
        }
        report.frames_kept = scanned.iter().map(|s| s.frames.len() as u64).sum();
        if report.dropped.is_empty() {
            return Ok(report);
        }

        // Write the kept frames into a new log, then swap it in. A
        // temporary log a crash left behind is not the log of anything.
        let fresh = sibling(dir, "salvage-tmp");
        if fs.is_dir(&fresh) {
            std::fs::remove_dir_all(&fresh).map_err(|e| io("removing", &fresh, e))?;
        }
        let (log, _) = Log::open_on(Arc::clone(&fs), &fresh, opts, 0)?;
        for (s, (_, path)) in scanned.iter().zip(&found) {
            if s.frames.is_empty() {
                continue;
            }
            let bytes = read_all(fs.as_ref(), path)?;
            let mut batch: Vec<FrameRef<'_>> = Vec::new();
            let mut batch_bytes = 0usize;
            for &(off, total) in &s.frames {
                let Some(f) = bytes.get(off..off + total) else {
                    continue;
                };
                let Some((h, payload)) = check_frame(f) else {
                    continue;
                };
                batch.push(FrameRef {
                    tag: h.tag,
                    payload,
                });
                batch_bytes += payload.len();
                if batch_bytes >= APPEND_CHUNK_BYTES {
                    log.append(&batch)?;
                    batch.clear();
                    batch_bytes = 0;
                }
            }
            log.append(&batch)?;
        }
        log.sync(log.end())?;
        drop(log);
        at(SalvageStep::Written);
        let salvaged = sibling(dir, "salvaged");
        rename_durably(fs.as_ref(), &fresh, &salvaged)?;
        at(SalvageStep::Complete);
        let original = free_name(dir, "before-salvage");
        rename_durably(fs.as_ref(), dir, &original)?;
        at(SalvageStep::Aside);
        rename_durably(fs.as_ref(), &salvaged, dir)?;
        at(SalvageStep::Swapped);
        for d in &mut report.dropped {
            if let Ok(rel) = d.segment.strip_prefix(dir) {
                d.segment = original.join(rel);
            }
        }
        report.original = Some(original);
        Ok(report)
    }
}

//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays every committed corpus file through
//! them on a plain `cargo test`. Not part of the stable API.
//!
//! Each entry takes arbitrary bytes, drives one part of the engine with
//! them, and returns `Err` with a description when a property is violated
//! (the fuzz target turns that into a crash). A panic anywhere inside is a
//! finding too. Inputs are read as small programs (see each entry), so that
//! the fuzzer reaches valid frames, stores and crashes instead of stopping
//! at the first checksum.
//!
//! | target | what it drives | what it checks |
//! |---|---|---|
//! | `log_recovery` | the span log: appends, syncs, reopens, simulated power loss, then bit flips, truncation and junk in segment files | intact logs reopen to exactly what was appended; a power loss keeps a prefix holding everything synced; damaged logs open or fail with a corruption error, never panic, and never return a frame that was not written; recovery is idempotent; salvage keeps every undamaged frame |
//! | `record_decode` | the codec: log records (spans, tombstones) and index values from arbitrary bytes | no panic or unbounded allocation; what decodes re-encodes to a fixed point |
//! | `otlp_protobuf`, `otlp_json` | OTLP decoding and conversion to the model | no panic; every converted span survives the log codec unchanged |
//! | `store_model` | a `SessionStore` on a simulated disk: batches of generated spans (duplicates, zero ids, oversize spans, odd timestamps), syncs, reopens, power loss, injected I/O faults, trace deletes, compaction of the log and the index | every report, trace, session summary and history equals a simple model's; acknowledged durable spans survive; what survives a crash is a prefix; `verify` passes |

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::codec;
use crate::error::ErrorKind;
use crate::fs::sim::{Fault, FaultError, Ops, SimFileSystem};
use crate::log::{FrameRef, Log, LogOptions, Lsn};
use crate::model::{ResourceSpans, Span, SpanId, StatusCode, Tokens, TraceId};
use crate::store::{Durability, SessionStore};

/// A fuzz entry point: `Err` describes a violated property.
pub type Entry = fn(&[u8]) -> Result<(), String>;

/// Every fuzz target: its name (the file under `fuzz/fuzz_targets/` and the
/// corpus folder under `fuzz/corpus/`) and its entry point.
pub fn targets() -> Vec<(&'static str, Entry)> {
    // Without the `otlp` feature nothing is pushed below.
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut t: Vec<(&'static str, Entry)> = vec![
        ("log_recovery", log_recovery),
        ("record_decode", record_decode),
        ("store_model", store_model),
    ];
    #[cfg(feature = "otlp")]
    {
        t.push(("otlp_protobuf", otlp_protobuf));
        t.push(("otlp_json", otlp_json));
    }
    t
}

// ---------------------------------------------------------------- helpers

/// Reads an input as a sequence of small values; past the end it yields
/// zeros, so every input is a complete program.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// A directory removed when dropped (the library has no `tempfile`).
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Result<TempDir, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "span-sessions-fuzz-{what}-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// With `SPAN_SESSIONS_FUZZ_DEBUG` set, entries print what they do (to
/// see what a corpus file exercises).
fn debug(what: impl FnOnce() -> String) {
    if std::env::var_os("SPAN_SESSIONS_FUZZ_DEBUG").is_some() {
        eprintln!("{}", what());
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

// ----------------------------------------------------------- log_recovery

/// A frame the log acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    lsn: Lsn,
    tag: u8,
    payload: Vec<u8>,
}

fn log_options(direct_writes: bool) -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        max_frame_bytes: 1 << 16,
        // Every append writes directly, however small.
        direct_writes: direct_writes.then_some(0),
    }
}

fn open_log(
    fs: &SimFileSystem,
    dir: &Path,
    scan_from: Lsn,
    direct_writes: bool,
) -> crate::error::Result<Log> {
    Log::open_on(
        Arc::new(fs.clone()),
        dir,
        log_options(direct_writes),
        scan_from,
    )
    .map(|(log, _)| log)
}

/// Every frame a scan from the start returns, up to the first error.
fn scan_all(log: &Log) -> (Vec<Written>, Option<crate::error::Error>) {
    let mut out = Vec::new();
    for item in log.scan(0) {
        match item {
            Ok((lsn, f)) => out.push(Written {
                lsn,
                tag: f.tag(),
                payload: f.payload().to_vec(),
            }),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// The frames a scan returned read back the same with `Log::read_many` (as
/// `trace` reads spans): all at once, in reverse log order, and every
/// other one from the end twice over.
fn reads_back(log: &Log, frames: &[Written]) -> Result<(), String> {
    let rev: Vec<&Written> = frames.iter().rev().collect();
    let mut asked: Vec<&Written> = rev.clone();
    asked.extend(rev.iter().step_by(2).copied());
    let lsns: Vec<Lsn> = asked.iter().map(|w| w.lsn).collect();
    let got = log
        .read_many(&lsns)
        .map_err(|e| format!("read_many of {} scanned frames: {e}", lsns.len()))?;
    check(got.len() == asked.len(), || {
        format!(
            "read_many returned {} frames for {}",
            got.len(),
            asked.len()
        )
    })?;
    for (f, w) in got.iter().zip(&asked) {
        check(
            f.tag() == w.tag && f.payload() == w.payload.as_slice(),
            || format!("read_many at LSN {} differs from the scan", w.lsn),
        )?;
    }
    Ok(())
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Drives the span log. The input is a program of one-byte opcodes:
/// append a few frames, sync, reopen (optionally from a checkpoint LSN),
/// simulate a power loss (seeded: each file keeps none, all or a torn
/// prefix of its unsynced writes), and, once any damage opcode appears,
/// flip bits, truncate, or append junk to segment files, then check how the
/// damaged log opens. Runs the program twice: writing through the page
/// cache, then with direct writes (`LogOptions::direct_writes`, whose block
/// rewrites a torn write must not damage).
pub fn log_recovery(data: &[u8]) -> Result<(), String> {
    log_recovery_with(data, false).map_err(|e| format!("page-cache writes: {e}"))?;
    log_recovery_with(data, true).map_err(|e| format!("direct writes: {e}"))
}

fn log_recovery_with(data: &[u8], direct: bool) -> Result<(), String> {
    let tmp = TempDir::new("log")?;
    let dir = tmp.path().join("log");
    let mut input = Input::new(data);
    let mut sim = SimFileSystem::new();
    let mut log = Some(open_log(&sim, &dir, 0, direct).map_err(|e| format!("fresh log: {e}"))?);
    let mut model: Vec<Written> = Vec::new();
    let mut counter = 0u32;
    let mut damage = false;
    let mut junk = false;
    // Byte ranges of segment files that damage touched.
    let mut touched: Vec<(PathBuf, u64, u64)> = Vec::new();
    let mut ops = 0;
    while !input.is_empty() && ops < 64 {
        ops += 1;
        let op = input.byte();
        if damage && op % 8 <= 4 {
            // After damage only more damage is applied.
            continue;
        }
        match op % 8 {
            0 | 1 => {
                let lg = match log.take() {
                    Some(l) => l,
                    None => open_log(&sim, &dir, 0, direct).map_err(|e| format!("reopen: {e}"))?,
                };
                let n = 1 + usize::from(input.byte() % 4);
                let mut frames = Vec::new();
                for _ in 0..n {
                    let size = usize::from(input.byte());
                    let size = if input.byte().is_multiple_of(8) {
                        size * 64
                    } else {
                        size
                    };
                    let tag = input.byte();
                    counter += 1;
                    let payload: Vec<u8> = (0..size)
                        .map(|i| (counter as u8).wrapping_mul(31) ^ (i as u8))
                        .collect();
                    frames.push((tag, payload));
                }
                let refs: Vec<FrameRef<'_>> = frames
                    .iter()
                    .map(|(tag, p)| FrameRef {
                        tag: *tag,
                        payload: p,
                    })
                    .collect();
                let lsns = lg.append(&refs).map_err(|e| format!("append: {e}"))?;
                debug(|| format!("log: appended {} frames, end {}", lsns.len(), lg.end()));
                for (lsn, (tag, payload)) in lsns.into_iter().zip(frames) {
                    model.push(Written { lsn, tag, payload });
                }
                log = Some(lg);
            }
            2 => {
                if let Some(lg) = &log {
                    lg.sync(lg.end()).map_err(|e| format!("sync: {e}"))?;
                }
            }
            3 => {
                // Power loss: what was synced must survive; the rest may
                // survive as a prefix.
                let seed = u64::from(input.u16());
                let synced = log.as_ref().map_or(Lsn::MAX, Log::synced);
                sim.crash();
                drop(log.take());
                sim.power_loss_random(seed)
                    .map_err(|e| format!("power loss: {e}"))?;
                sim = SimFileSystem::new();
                let lg = open_log(&sim, &dir, 0, direct)
                    .map_err(|e| format!("reopen after power loss (seed {seed}): {e}"))?;
                let (frames, err) = scan_all(&lg);
                if let Some(e) = err {
                    return Err(format!("scan after power loss: {e}"));
                }
                let durable = model
                    .iter()
                    .take_while(|w| w.lsn + 9 + w.payload.len() as u64 <= synced)
                    .count();
                check(
                    frames.len() >= durable && model.get(..frames.len()) == Some(&frames[..]),
                    || {
                        format!(
                            "power loss (seed {seed}) kept {} frames, not a prefix of the {} \
                             written holding the {durable} synced",
                            frames.len(),
                            model.len()
                        )
                    },
                )?;
                debug(|| {
                    format!(
                        "log: power loss (seed {seed}) kept {} of {} frames ({durable} synced)",
                        frames.len(),
                        model.len()
                    )
                });
                model.truncate(frames.len());
                log = Some(lg);
            }
            4 => {
                // Clean reopen, optionally trusting a checkpoint.
                drop(log.take());
                let scan_from = match model.len() {
                    0 => 0,
                    n => model
                        .get(usize::from(input.byte()) % n)
                        .map_or(0, |w| w.lsn),
                };
                sim = SimFileSystem::new();
                let lg = open_log(&sim, &dir, scan_from, direct)
                    .map_err(|e| format!("clean reopen from {scan_from}: {e}"))?;
                let (frames, err) = scan_all(&lg);
                if let Some(e) = err {
                    return Err(format!("scan after clean reopen: {e}"));
                }
                debug(|| {
                    format!(
                        "log: clean reopen from {scan_from}: {} frames",
                        frames.len()
                    )
                });
                check(frames == model, || {
                    format!(
                        "clean reopen gives {} frames, {} were written",
                        frames.len(),
                        model.len()
                    )
                })?;
                log = Some(lg);
            }
            5 => {
                // Flip bits in a segment.
                drop(log.take());
                damage = true;
                let files = segment_files(&dir);
                let Some(path) = files.get(usize::from(input.byte()) % files.len().max(1)) else {
                    continue;
                };
                let mut bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                if bytes.is_empty() {
                    continue;
                }
                let at = usize::from(input.u16()) % bytes.len();
                let mask = input.byte().max(1);
                if let Some(b) = bytes.get_mut(at) {
                    *b ^= mask;
                }
                touched.push((path.clone(), at as u64, at as u64 + 1));
                std::fs::write(path, &bytes).map_err(|e| e.to_string())?;
            }
            6 => {
                // Truncate the last segment.
                drop(log.take());
                damage = true;
                if let Some(path) = segment_files(&dir).last() {
                    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
                    let cut = u64::from(input.u16()) % (len + 1);
                    touched.push((path.clone(), cut, u64::MAX));
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|f| f.set_len(cut))
                        .map_err(|e| e.to_string())?;
                }
            }
            _ => {
                // Junk (or zeros) at the end of the last segment.
                drop(log.take());
                damage = true;
                let n = usize::from(input.byte());
                let zeros = input.byte().is_multiple_of(2);
                let bytes: Vec<u8> = if zeros {
                    vec![0; n]
                } else {
                    junk = true;
                    input.take(n).to_vec()
                };
                if let Some(path) = segment_files(&dir).last() {
                    use std::io::Write;
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(path)
                        .and_then(|mut f| f.write_all(&bytes))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }
    drop(log.take());
    if !damage {
        let lg = open_log(&SimFileSystem::new(), &dir, 0, direct)
            .map_err(|e| format!("final reopen: {e}"))?;
        let (frames, err) = scan_all(&lg);
        if let Some(e) = err {
            return Err(format!("final scan: {e}"));
        }
        check(frames == model, || "final reopen lost frames".to_owned())?;
        return reads_back(&lg, &frames);
    }
    // Salvage runs on a copy: `check_damaged` appends to the log.
    let copy = tmp.path().join("salvage");
    copy_files(&dir, &copy)?;
    check_damaged(&dir, &model, junk)?;
    check_salvage(&dir, &copy, &model, &touched, junk)
}

fn copy_files(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Salvages a copy of the damaged log: it must work (unless a segment
/// claims another format version), leave a log that opens strictly, keep
/// every frame the damage did not touch, in order, and (without junk)
/// keep nothing that was not written.
fn check_salvage(
    original: &Path,
    dir: &Path,
    model: &[Written],
    touched: &[(PathBuf, u64, u64)],
    junk: bool,
) -> Result<(), String> {
    // Where each frame was: the segment with the largest base at or below it.
    let segments: Vec<(Lsn, PathBuf)> = segment_files(dir)
        .into_iter()
        .filter_map(|p| {
            let base = p.file_stem()?.to_str()?.parse().ok()?;
            Some((base, p))
        })
        .collect();
    let is_touched = |w: &Written| {
        let Some((base, path)) = segments.iter().rev().find(|(b, _)| *b <= w.lsn) else {
            return true;
        };
        let (from, to) = (w.lsn - base, w.lsn - base + 9 + w.payload.len() as u64);
        touched.iter().any(|(p, a, b)| {
            p.file_name() == path.file_name()
                && p.parent() == Some(original)
                && *a < to
                && from < *b
        })
    };
    let report = match Log::salvage(
        Arc::new(SimFileSystem::new()),
        dir,
        log_options(false),
        &mut |_| {},
    ) {
        Ok(r) => r,
        Err(e) => {
            return check(e.kind() == ErrorKind::Incompatible, || {
                format!("salvage fails with {:?}: {e}", e.kind())
            });
        }
    };
    let lg = open_log(&SimFileSystem::new(), dir, 0, false)
        .map_err(|e| format!("a salvaged log does not open: {e} ({report:?})"))?;
    let (frames, err) = scan_all(&lg);
    if let Some(e) = err {
        return Err(format!("a salvaged log does not scan: {e}"));
    }
    debug(|| {
        format!(
            "log: salvage kept {} frames, dropped {:?}",
            frames.len(),
            report.dropped
        )
    });
    check(frames.len() as u64 == report.frames_kept, || {
        "salvage reports a different number of frames than it kept".to_owned()
    })?;
    let mut kept = frames.iter();
    for w in model.iter().filter(|w| !is_touched(w)) {
        check(
            kept.any(|f| f.tag == w.tag && f.payload == w.payload),
            || {
                format!(
                    "salvage lost the undamaged frame at LSN {} ({report:?})",
                    w.lsn
                )
            },
        )?;
    }
    if !junk {
        for f in &frames {
            check(
                model
                    .iter()
                    .any(|w| w.tag == f.tag && w.payload == f.payload),
                || "salvage kept a frame that was never written".to_owned(),
            )?;
        }
    }
    Ok(())
}

/// Opens a damaged log: it must open or fail with a corruption (or
/// incompatible-format) error; what it returns must be frames that were
/// written; and a second open must agree with the first.
fn check_damaged(dir: &Path, model: &[Written], junk: bool) -> Result<(), String> {
    let by_lsn: BTreeMap<Lsn, &Written> = model.iter().map(|w| (w.lsn, w)).collect();
    let first = open_log(&SimFileSystem::new(), dir, 0, false);
    debug(|| match &first {
        Ok(lg) => format!("log: damaged log opens, end {}", lg.end()),
        Err(e) => format!("log: damaged log refused: {e}"),
    });
    let lg = match first {
        Ok(lg) => lg,
        Err(e) => {
            return check(
                matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::Incompatible),
                || format!("damaged log fails to open with {:?}: {e}", e.kind()),
            );
        }
    };
    let (frames, err) = scan_all(&lg);
    if let Some(e) = &err {
        check(e.kind() == ErrorKind::Corrupted, || {
            format!("scan of a damaged log fails with {:?}: {e}", e.kind())
        })?;
    }
    reads_back(&lg, &frames)?;
    if !junk {
        for f in &frames {
            check(by_lsn.get(&f.lsn) == Some(&f), || {
                format!("frame at LSN {} was never written", f.lsn)
            })?;
        }
    }
    // Recovery is idempotent, and the log takes appends afterwards.
    let end = lg.end();
    drop(lg);
    let again = open_log(&SimFileSystem::new(), dir, 0, false)
        .map_err(|e| format!("second open of a recovered log fails: {e}"))?;
    check(again.end() == end, || {
        format!("second open ends at {}, the first at {end}", again.end())
    })?;
    let (frames2, err2) = scan_all(&again);
    check(frames2 == frames && err2.is_some() == err.is_some(), || {
        "second open scans differently".to_owned()
    })?;
    let lsn = again
        .append(&[FrameRef {
            tag: 7,
            payload: b"after recovery",
        }])
        .map_err(|e| format!("append after recovery: {e}"))?;
    drop(again);
    let third = open_log(&SimFileSystem::new(), dir, 0, false)
        .map_err(|e| format!("open after an append to a recovered log: {e}"))?;
    let f = third
        .read(lsn.first().copied().unwrap_or(0))
        .map_err(|e| format!("frame appended after recovery does not read back: {e}"))?;
    check(f.payload() == b"after recovery", || {
        "frame appended after recovery reads back different".to_owned()
    })
}

// ---------------------------------------------------------- record_decode

/// Decodes arbitrary bytes as a log record (a span or a tombstone; the
/// first byte picks the frame tag) or as one of the index values: no panic, no unbounded allocation (decodes
/// are size-limited), whatever decodes re-encodes to a fixed point, and
/// the decoders written for spans, turns, trace records and session
/// summaries agree with bincode's.
pub fn record_decode(data: &[u8]) -> Result<(), String> {
    let Some((&selector, rest)) = data.split_first() else {
        return Ok(());
    };
    match selector % 6 {
        0 | 1 => {
            // Spans, tombstones, and (with the high bit) any tag at all.
            let tag = match (selector % 6, selector & 0x80 != 0) {
                (0, _) => codec::TAG_SPAN_V1,
                (_, false) => codec::TAG_DELETE_V1,
                (_, true) => selector,
            };
            if tag == codec::TAG_SPAN_V1 {
                span_decoders_agree(rest)?;
            }
            match codec::decode_record(tag, rest) {
                Ok(codec::LogRecord::Span(rec)) => {
                    let mut once = Vec::new();
                    codec::encode_span_parts(&rec.project, &rec.resource, &rec.span, &mut once)
                        .map_err(|e| format!("re-encoding a decoded span: {e}"))?;
                    let again = codec::decode_span(codec::TAG_SPAN_V1, &once)
                        .map_err(|e| format!("a re-encoded span does not decode: {e}"))?;
                    let mut twice = Vec::new();
                    codec::encode_span_parts(
                        &again.project,
                        &again.resource,
                        &again.span,
                        &mut twice,
                    )
                    .map_err(|e| format!("re-encoding: {e}"))?;
                    check(once == twice, || {
                        "span encoding is not a fixed point".to_owned()
                    })?;
                }
                Ok(codec::LogRecord::Delete(rec)) => {
                    let mut once = Vec::new();
                    codec::encode_delete(&rec, &mut once)
                        .map_err(|e| format!("re-encoding a tombstone: {e}"))?;
                    let again = codec::decode_record(codec::TAG_DELETE_V1, &once)
                        .map_err(|e| format!("a re-encoded tombstone does not decode: {e}"))?;
                    check(again == codec::LogRecord::Delete(rec), || {
                        "tombstone does not round-trip".to_owned()
                    })?;
                }
                Err(_) => {}
            }
        }
        2 => {
            round_trip::<crate::index::trace::TraceRecord>(rest)?;
            decoders_agree(rest, crate::index::trace::TraceRecord::decode)?;
            span_locations_agree(rest)?;
        }
        3 => {
            round_trip::<crate::index::trace::TurnBody>(rest)?;
            turn_view_agrees(rest)?;
        }
        4 => {
            round_trip::<crate::index::session::SessionState>(rest)?;
            decoders_agree(rest, crate::index::session::SessionState::decode)?;
        }
        _ => {
            if let Some(set) = crate::index::search::ChunkSet::decode(rest) {
                let once = set.encode();
                let again = crate::index::search::ChunkSet::decode(&once)
                    .ok_or("a re-encoded posting set does not decode")?;
                check(again.encode() == once, || {
                    "posting set encoding is not a fixed point".to_owned()
                })?;
            }
        }
    }
    Ok(())
}

/// An index value's own decoder (`decode`) and bincode's agree on `bytes`:
/// both reject them, or both give the same value.
fn decoders_agree<T>(
    bytes: &[u8],
    decode: fn(&[u8]) -> Result<T, codec::DecodeError>,
) -> Result<(), String>
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let serde = codec::decode_value::<T>(bytes).ok();
    let direct = decode(bytes).ok();
    check(serde == direct, || {
        format!(
            "{}'s own decoder gives {direct:?} where bincode gives {serde:?}",
            std::any::type_name::<T>()
        )
    })
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<(), String> {
    if let Ok(v) = codec::decode_value::<T>(bytes) {
        let once = codec::encode_value(&v);
        let again: T = codec::decode_value(&once).map_err(|e| {
            format!(
                "a re-encoded {} does not decode: {e}",
                std::any::type_name::<T>()
            )
        })?;
        check(codec::encode_value(&again) == once, || {
            format!(
                "{} encoding is not a fixed point",
                std::any::type_name::<T>()
            )
        })?;
    }
    Ok(())
}

/// The direct span decoder accepts exactly what bincode's serde path
/// accepts, and decodes it to the same span (compared by re-encoding:
/// NaN attributes are not equal to themselves).
fn span_decoders_agree(bytes: &[u8]) -> Result<(), String> {
    let bytes_of = |s: &crate::model::StoredSpan| {
        let mut out = Vec::new();
        codec::encode_span_parts(&s.project, &s.resource, &s.span, &mut out).map(|_| out)
    };
    let serde = codec::decode_value::<crate::model::StoredSpan>(bytes)
        .ok()
        .map(|s| bytes_of(&s));
    let whole = codec::decode_span(codec::TAG_SPAN_V1, bytes).ok();
    let direct = whole.as_ref().map(bytes_of);
    check(serde == direct, || {
        format!("the span decoder gives {direct:?} where bincode gives {serde:?}")
    })?;
    // The ids-only reader (liveness scans) gives the ids of what decodes.
    let ids = codec::span_ids(codec::TAG_SPAN_V1, bytes).ok();
    let Some(s) = whole else {
        return Ok(());
    };
    check(ids == Some((s.span.trace_id.0, s.span.span_id.0)), || {
        format!("span_ids gives {ids:?} for a span of {:?}", s.span.trace_id)
    })?;
    // The facts-only reader (replays) takes what decodes, with the facts
    // of the whole span, and reads the same after another span (here the
    // whole span with another project and kept values of other kinds in
    // front) as afresh.
    use crate::index::SpanInfo;
    use crate::index::facts::{FactKeys, SessionIdSource, session_id};
    use crate::model::{AttributeValue, KeyValue, keys};
    let sources = SessionIdSource::defaults();
    let fact_keys = FactKeys::new(&sources);
    let whole_facts = (
        s.project.clone(),
        SpanInfo::of(&s.span),
        session_id(&s.span, &sources),
    );
    let fresh = codec::decode_span_facts(codec::TAG_SPAN_V1, bytes, &fact_keys, &sources)
        .map_err(|e| format!("the facts reader refuses what the whole decoder takes: {e}"))?;
    check(fresh == whole_facts, || {
        format!("the facts reader gives {fresh:?}, the whole span {whole_facts:?}")
    })?;
    let mut other = s.clone();
    other.project.push('x');
    for (i, key) in [
        keys::SESSION_ID,
        keys::USER_ID,
        keys::INPUT_VALUE,
        keys::SPAN_KIND,
    ]
    .into_iter()
    .enumerate()
    {
        let value = match i {
            0 => AttributeValue::Bool(true),
            1 => AttributeValue::Int(7),
            _ => AttributeValue::String("LLM".into()),
        };
        other.span.attributes.insert(0, KeyValue::new(key, value));
    }
    let other = bytes_of(&other).map_err(|e| format!("a span does not encode: {e}"))?;
    let mut scratch = codec::FactsScratch::new();
    let first = scratch.read(codec::TAG_SPAN_V1, &other, &fact_keys, |f| {
        f.facts(&sources)
    });
    check(first.is_ok(), || {
        format!("the facts reader refuses {first:?}")
    })?;
    let reused = scratch
        .read(codec::TAG_SPAN_V1, bytes, &fact_keys, |f| f.facts(&sources))
        .map_err(|e| format!("the facts reader fails after another span: {e}"))?;
    check(reused == fresh, || {
        format!("read after another span {reused:?}, afresh {fresh:?}")
    })
}

/// The facts-only reader of a trace record (liveness scans) gives the
/// span ids and LSNs of every record the whole decoder takes.
fn span_locations_agree(bytes: &[u8]) -> Result<(), String> {
    use crate::index::trace::TraceRecord;
    let facts = TraceRecord::span_locations(bytes).ok();
    match TraceRecord::decode(bytes) {
        Ok(rec) => {
            let want: Vec<_> = rec.spans.iter().map(|f| (f.span_id, f.lsn)).collect();
            check(facts.as_ref() == Some(&want), || {
                format!("span_locations gives {facts:?} where the record holds {want:?}")
            })
        }
        Err(_) => Ok(()),
    }
}

/// The read paths' in-place turn decoder accepts exactly what bincode
/// accepts, and decodes it to the same value.
fn turn_view_agrees(bytes: &[u8]) -> Result<(), String> {
    use crate::index::trace::{TurnBody, TurnView};
    let serde = codec::decode_value::<TurnBody>(bytes).ok();
    let direct = TurnView::decode(bytes).ok().map(|v| v.to_body());
    check(serde == direct, || {
        format!("TurnView decodes {direct:?} where bincode decodes {serde:?}")
    })
}

// ------------------------------------------------------------------- otlp

#[cfg(feature = "otlp")]
fn otlp_converted(request: crate::otlp::ExportTraceServiceRequest) -> Result<(), String> {
    use crate::otlp::{IngestOptions, to_resource_spans};
    let conversion = to_resource_spans(request, &IngestOptions::default());
    for rs in &conversion.batch {
        let project = rs.project();
        for span in &rs.spans {
            let mut once = Vec::new();
            codec::encode_span_parts(project, &rs.resource, span, &mut once)
                .map_err(|e| format!("encoding a converted span: {e}"))?;
            let back = codec::decode_span(codec::TAG_SPAN_V1, &once)
                .map_err(|e| format!("a converted span does not decode: {e}"))?;
            let mut twice = Vec::new();
            codec::encode_span_parts(&back.project, &back.resource, &back.span, &mut twice)
                .map_err(|e| format!("re-encoding: {e}"))?;
            check(once == twice && back.project == project, || {
                "a converted span does not survive the log codec".to_owned()
            })?;
        }
    }
    Ok(())
}

/// Decodes an OTLP/protobuf trace request and converts it: no panic, the
/// decode estimate at least what the request holds, and every converted
/// span survives the log codec unchanged.
#[cfg(feature = "otlp")]
pub fn otlp_protobuf(data: &[u8]) -> Result<(), String> {
    match crate::otlp::decode_protobuf(data) {
        Ok(request) => {
            let estimated = crate::ingest::estimate::protobuf(data);
            held_within(estimated, &request)?;
            otlp_converted(request)
        }
        Err(_) => Ok(()),
    }
}

/// Decodes an OTLP/JSON trace request and converts it: no panic, the
/// decode estimate at least what the request holds, and every converted
/// span survives the log codec unchanged.
#[cfg(feature = "otlp")]
pub fn otlp_json(data: &[u8]) -> Result<(), String> {
    match crate::otlp::decode_json(data) {
        Ok(request) => {
            held_within(crate::ingest::estimate::json(data), &request)?;
            otlp_converted(request)
        }
        Err(_) => Ok(()),
    }
}

/// An error when `request` holds more than `estimated` bytes.
#[cfg(feature = "otlp")]
fn held_within(
    estimated: u64,
    request: &crate::otlp::ExportTraceServiceRequest,
) -> Result<(), String> {
    let held = crate::ingest::estimate::held_bytes(request);
    if held > estimated {
        return Err(format!(
            "the request holds {held} bytes, over its estimate of {estimated}"
        ));
    }
    Ok(())
}

// ------------------------------------------------------------ store_model

/// Start and end times the generator picks from (indexes from the input).
const TIMES: [u64; 8] = [0, 1, 1_000, 2_000, 5_000, 1 << 40, u64::MAX - 1, u64::MAX];
const PROJECTS: [&str; 2] = ["p", "q"];
const SESSION_VALUES: [Option<&str>; 4] = [None, Some("s1"), Some(" s2 "), Some("")];
/// Encoded spans above this are rejected (the store's `max_span_bytes`).
const MAX_SPAN_BYTES: u32 = 1024;

/// A generated span and where it goes.
#[derive(Debug, Clone)]
struct GenSpan {
    project: &'static str,
    span: Span,
}

fn trace_id(n: u8) -> TraceId {
    if n == 0 {
        return TraceId([0; 16]);
    }
    let mut b = [0u8; 16];
    b[15] = n;
    TraceId(b)
}

fn span_id(n: u8) -> SpanId {
    SpanId([0, 0, 0, 0, 0, 0, 0, n])
}

fn gen_span(input: &mut Input<'_>) -> GenSpan {
    let ids = input.byte();
    let trace = ids % 5; // 0: an all-zero trace id (rejected)
    let span = (ids / 5) % 7; // 0: an all-zero span id (rejected)
    let p = input.byte();
    let parent = match p % 9 {
        0..=2 => None,
        8 => Some(SpanId([0; 8])), // rejected
        k => Some(span_id(k - 2)), // 1..=5: may be absent, or itself
    };
    let t = input.byte();
    let start = TIMES[usize::from(t % 8)];
    let end = TIMES[usize::from((t / 8) % 8)];
    let flags = input.byte();
    let project = PROJECTS[usize::from(p / 9 % 2)];
    let mut s = Span::new(
        trace_id(trace),
        span_id(span),
        parent,
        format!("op{}", flags % 3),
        start,
        end,
    );
    if let Some(v) = SESSION_VALUES[usize::from(flags % 4)] {
        s = s.with_attribute("session.id", v);
    }
    if flags & 0x04 != 0 {
        s = s
            .with_attribute("openinference.span.kind", "LLM")
            .with_attribute("llm.token_count.prompt", i64::from(t % 7))
            .with_attribute("llm.token_count.completion", i64::from(t % 5));
    }
    if flags & 0x08 != 0 {
        s = s.with_status(StatusCode::Error, "failed");
    }
    if flags & 0x10 != 0 {
        s = s
            .with_attribute("input.value", format!("in {trace}.{span}"))
            .with_attribute("output.value", "out\u{0}\u{7}\n");
    }
    if flags & 0x20 != 0 {
        // Well over MAX_SPAN_BYTES once encoded: rejected.
        s = s.with_attribute("blob", "x".repeat(2 * MAX_SPAN_BYTES as usize));
    }
    if flags & 0x40 != 0 {
        s = s.with_attribute("user.id", format!("u{}", t % 3));
    }
    GenSpan { project, span: s }
}

/// A trace's spans as the model keeps them.
type ModelTrace = BTreeMap<SpanId, GenSpan>;

/// The model: spans stored, by trace, and the order the log holds them in.
#[derive(Debug, Default)]
struct Model {
    /// The spans stored now.
    traces: BTreeMap<TraceId, ModelTrace>,
    /// What the log holds, in order: stored spans and deletes. A crash
    /// leaves a prefix of it.
    events: Vec<Event>,
    /// How many of `events` are durable.
    durable: usize,
}

/// One entry of the model's log.
#[derive(Debug, Clone)]
enum Event {
    /// A span stored.
    Add(GenSpan),
    /// A trace deleted (a tombstone).
    Delete(TraceId),
}

/// The spans a prefix of the events leaves.
fn replay(events: &[Event]) -> BTreeMap<TraceId, ModelTrace> {
    let mut traces: BTreeMap<TraceId, ModelTrace> = BTreeMap::new();
    for e in events {
        match e {
            Event::Add(g) => {
                traces
                    .entry(g.span.trace_id)
                    .or_default()
                    .insert(g.span.span_id, g.clone());
            }
            Event::Delete(t) => {
                traces.remove(t);
            }
        }
    }
    traces
}

/// What the model expects of an append.
struct Expect {
    rejected: Vec<(TraceId, SpanId)>,
    duplicates: usize,
    /// The spans to be stored, in the order the log gets them.
    fresh: Vec<GenSpan>,
}

impl Expect {
    fn check(&self, report: &crate::model::AppendReport, what: &str) -> Result<(), String> {
        let got_rejected: Vec<(TraceId, SpanId)> = report
            .rejected
            .iter()
            .map(|r| (r.trace_id, r.span_id))
            .collect();
        check(
            report.accepted == self.fresh.len()
                && report.duplicates == self.duplicates
                && got_rejected == self.rejected,
            || {
                format!(
                    "{what}: report {} accepted / {} duplicates / {} rejected, model \
                     {} / {} / {} ({:?})",
                    report.accepted,
                    report.duplicates,
                    got_rejected.len(),
                    self.fresh.len(),
                    self.duplicates,
                    self.rejected.len(),
                    report.rejected
                )
            },
        )
    }
}

impl Model {
    /// Rejections, duplicates and new spans of a batch (contract rules 4
    /// and 9): spans with zero ids or zero parents, or too large, are
    /// rejected; a span already stored or earlier in the batch is a
    /// duplicate.
    fn expect(&self, gens: &[GenSpan]) -> Expect {
        let mut e = Expect {
            rejected: Vec::new(),
            duplicates: 0,
            fresh: Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for g in gens {
            let s = &g.span;
            let bad = s.trace_id.is_zero()
                || s.span_id.is_zero()
                || s.parent_span_id.is_some_and(|p| p.is_zero())
                || encoded_len(g) > MAX_SPAN_BYTES as usize;
            if bad {
                e.rejected.push((s.trace_id, s.span_id));
            } else if self
                .traces
                .get(&s.trace_id)
                .is_some_and(|t| t.contains_key(&s.span_id))
                || !seen.insert((s.trace_id, s.span_id))
            {
                e.duplicates += 1;
            } else {
                e.fresh.push(g.clone());
            }
        }
        e
    }

    /// Adds stored spans, in log order.
    fn add(&mut self, fresh: &[GenSpan]) {
        for g in fresh {
            self.traces
                .entry(g.span.trace_id)
                .or_default()
                .insert(g.span.span_id, g.clone());
            self.events.push(Event::Add(g.clone()));
        }
    }

    /// Deletes a trace; returns how many spans it had (0: unknown trace).
    fn delete(&mut self, t: TraceId) -> usize {
        match self.traces.remove(&t) {
            Some(spans) => {
                self.events.push(Event::Delete(t));
                spans.len()
            }
            None => 0,
        }
    }

    /// Spans stored now, in total.
    fn spans(&self) -> usize {
        self.traces.values().map(BTreeMap::len).sum()
    }
}

fn session_of(span: &Span) -> Option<String> {
    span.attribute("session.id")
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn encoded_len(g: &GenSpan) -> usize {
    // Only to tell "small" from "huge" spans, which the generator keeps far
    // apart: a span is either under 400 bytes or over 2 KiB.
    let blob = g.span.attribute("blob").is_some();
    if blob { usize::MAX } else { 0 }
}

/// What the model expects of one trace.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExpectedTrace {
    project: String,
    session: Option<String>,
    start: u64,
    end: u64,
    error: bool,
    tokens: Tokens,
}

fn expected_trace(spans: &ModelTrace) -> Option<ExpectedTrace> {
    let key = |g: &GenSpan| (g.span.start_time_unix_nano, g.span.span_id);
    let earliest = spans.values().min_by_key(|g| key(g))?;
    let root = spans
        .values()
        .filter(|g| g.span.parent_span_id.is_none())
        .min_by_key(|g| key(g));
    let project = root.unwrap_or(earliest).project.to_owned();
    let session = root.and_then(|r| session_of(&r.span)).or_else(|| {
        spans
            .values()
            .filter(|g| session_of(&g.span).is_some())
            .min_by_key(|g| key(g))
            .and_then(|g| session_of(&g.span))
    });
    let mut tokens = Tokens::default();
    for g in spans.values() {
        if g.span
            .attribute("openinference.span.kind")
            .and_then(|v| v.as_str())
            == Some("LLM")
        {
            let n = |k: &str| match g.span.attribute(k) {
                Some(crate::model::AttributeValue::Int(i)) => u64::try_from(*i).unwrap_or(0),
                _ => 0,
            };
            let (p, c) = (n("llm.token_count.prompt"), n("llm.token_count.completion"));
            tokens.prompt += p;
            tokens.completion += c;
            tokens.total += p + c;
        }
    }
    Some(ExpectedTrace {
        project,
        session,
        start: spans.values().map(|g| g.span.start_time_unix_nano).min()?,
        end: spans.values().map(|g| g.span.end_time_unix_nano).max()?,
        error: spans
            .values()
            .any(|g| g.span.status.code == StatusCode::Error),
        tokens,
    })
}

/// Compares every answer of the store with the model.
fn check_store(store: &SessionStore, model: &Model, what: &str) -> Result<(), String> {
    let ctx = |e: String| format!("{what}: {e}");
    let mut sessions: BTreeMap<(String, String), Vec<(TraceId, ExpectedTrace)>> = BTreeMap::new();
    let mut projects = BTreeSet::new();
    for t in 1..=4u8 {
        let id = trace_id(t);
        let got = store
            .trace(id)
            .map_err(|e| ctx(format!("trace {t} does not read back: {e}")))?;
        let want = model.traces.get(&id);
        match (got, want) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                let got: Vec<(&str, &Span)> = g
                    .spans
                    .iter()
                    .map(|s| (s.project.as_str(), &s.span))
                    .collect();
                let mut want: Vec<&GenSpan> = w.values().collect();
                want.sort_by_key(|g| (g.span.start_time_unix_nano, g.span.span_id));
                let want: Vec<(&str, &Span)> = want.iter().map(|g| (g.project, &g.span)).collect();
                check(got == want, || ctx(format!("trace {t}: spans differ")))?;
                // `projects()` lists every project a span was appended
                // under, whichever project its trace ends up in.
                projects.extend(w.values().map(|g| g.project.to_owned()));
                if let Some(e) = expected_trace(w)
                    && let Some(s) = e.session.clone()
                {
                    sessions
                        .entry((e.project.clone(), s))
                        .or_default()
                        .push((id, e));
                }
            }
            (g, w) => {
                return Err(ctx(format!(
                    "trace {t}: store has {}, model has {}",
                    g.map_or(0, |x| x.spans.len()),
                    w.map_or(0, BTreeMap::len)
                )));
            }
        }
    }
    let got_projects: BTreeSet<String> = store
        .projects()
        .map_err(|e| ctx(format!("projects: {e}")))?
        .into_iter()
        .collect();
    check(got_projects == projects, || {
        ctx(format!(
            "projects: store {got_projects:?}, model {projects:?}"
        ))
    })?;
    for project in PROJECTS {
        for session in ["s1", "s2"] {
            let got = store
                .session(project, session)
                .map_err(|e| ctx(format!("session {project}/{session}: {e}")))?;
            let want = sessions.get(&(project.to_owned(), session.to_owned()));
            match (got, want) {
                (None, None) => {}
                (Some(g), Some(traces)) => {
                    let mut tokens = Tokens::default();
                    for (_, e) in traces {
                        tokens = tokens.saturating_add(e.tokens);
                    }
                    let want_summary = (
                        traces.len() as u64,
                        traces.iter().filter(|(_, e)| e.error).count() as u64,
                        tokens,
                        traces.iter().map(|(_, e)| e.start).min().unwrap_or(0),
                        traces.iter().map(|(_, e)| e.end).max().unwrap_or(0),
                    );
                    let got_summary = (
                        g.num_traces,
                        g.num_traces_with_error,
                        g.tokens,
                        g.start_time_unix_nano,
                        g.end_time_unix_nano,
                    );
                    check(got_summary == want_summary, || {
                        ctx(format!(
                            "session {project}/{session}: (traces, errors, tokens, start, end) \
                             store {got_summary:?}, model {want_summary:?}"
                        ))
                    })?;
                    let history = store
                        .session_history(project, session)
                        .map_err(|e| ctx(format!("history {project}/{session}: {e}")))?;
                    let got_order: Vec<TraceId> = history.iter().map(|t| t.trace_id).collect();
                    let mut want_order: Vec<(u64, TraceId)> =
                        traces.iter().map(|(id, e)| (e.start, *id)).collect();
                    want_order.sort();
                    let want_order: Vec<TraceId> = want_order.into_iter().map(|(_, t)| t).collect();
                    check(got_order == want_order, || {
                        ctx(format!("history {project}/{session}: order differs"))
                    })?;
                }
                (g, w) => {
                    return Err(ctx(format!(
                        "session {project}/{session}: store has {}, model has {}",
                        g.map_or(0, |s| s.num_traces),
                        w.map_or(0, Vec::len)
                    )));
                }
            }
        }
        check_session_list(store, project, &sessions).map_err(ctx)?;
    }
    Ok(())
}

/// The session list of `project`, in every sort order both ways, walked a
/// page of one at a time through its cursors, must be the model's sessions
/// ordered by (sort value, session id).
fn check_session_list(
    store: &SessionStore,
    project: &str,
    sessions: &BTreeMap<(String, String), Vec<(TraceId, ExpectedTrace)>>,
) -> Result<(), String> {
    use crate::query::{SessionQuery, SessionSort};
    // (session id, [start, end, traces, tokens, duration]) of each session.
    let rows: Vec<(&str, [u64; 5])> = sessions
        .iter()
        .filter(|((p, _), _)| p == project)
        .map(|((_, s), traces)| {
            let start = traces.iter().map(|(_, e)| e.start).min().unwrap_or(0);
            let end = traces.iter().map(|(_, e)| e.end).max().unwrap_or(0);
            let tokens = traces
                .iter()
                .fold(Tokens::default(), |t, (_, e)| t.saturating_add(e.tokens));
            let n = traces.len() as u64;
            (
                s.as_str(),
                [start, end, n, tokens.total, end.saturating_sub(start)],
            )
        })
        .collect();
    let sorts = [
        SessionSort::StartTime,
        SessionSort::EndTime,
        SessionSort::NumTraces,
        SessionSort::TotalTokens,
        SessionSort::Duration,
    ];
    for (i, sort) in sorts.into_iter().enumerate() {
        for descending in [false, true] {
            let mut want: Vec<(u64, &str)> = rows
                .iter()
                .map(|(s, v)| (v.get(i).copied().unwrap_or(0), *s))
                .collect();
            want.sort_unstable();
            if descending {
                want.reverse();
            }
            let want: Vec<&str> = want.into_iter().map(|(_, s)| s).collect();
            let mut got: Vec<String> = Vec::new();
            let mut cursor = None;
            loop {
                let q = SessionQuery {
                    sort,
                    descending,
                    limit: 1,
                    cursor: cursor.take(),
                    ..SessionQuery::default()
                };
                let page = store
                    .sessions(project, &q)
                    .map_err(|e| format!("sessions of {project} by {sort:?}: {e}"))?;
                got.extend(page.items.into_iter().map(|s| s.session_id));
                check(got.len() <= want.len(), || {
                    format!("sessions of {project} by {sort:?}: more pages than sessions")
                })?;
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            check(got == want, || {
                format!(
                    "sessions of {project} by {sort:?}, descending {descending}: \
                     store {got:?}, model {want:?}"
                )
            })?;
        }
    }
    Ok(())
}

/// After a crash: the store must hold what a prefix of the model's events
/// leaves, at least its durable part. Trims the model to that prefix.
fn reconcile_after_crash(
    store: &SessionStore,
    model: &mut Model,
    what: &str,
) -> Result<(), String> {
    let mut held: BTreeMap<TraceId, BTreeSet<SpanId>> = BTreeMap::new();
    for t in 1..=4u8 {
        let id = trace_id(t);
        let tr = store
            .trace(id)
            .map_err(|e| format!("{what}: trace does not read back: {e}"))?;
        if let Some(tr) = tr {
            held.insert(id, tr.spans.iter().map(|s| s.span.span_id).collect());
        }
    }
    for k in (model.durable..=model.events.len()).rev() {
        let state = replay(&model.events[..k]);
        let ids: BTreeMap<TraceId, BTreeSet<SpanId>> = state
            .iter()
            .map(|(t, spans)| (*t, spans.keys().copied().collect()))
            .collect();
        if ids == held {
            model.events.truncate(k);
            model.traces = state;
            model.durable = k;
            return Ok(());
        }
    }
    Err(format!(
        "{what}: what survived is not what any prefix of the log holding its {} durable \
         entries (of {}) leaves",
        model.durable,
        model.events.len()
    ))
}

fn durability(b: u8) -> Durability {
    match b % 3 {
        0 => Durability::Sync,
        1 => Durability::GroupCommit,
        _ => Durability::Buffered,
    }
}

fn open_store(
    dir: &Path,
    sim: &SimFileSystem,
    mode: Durability,
    small: bool,
) -> Result<SessionStore, String> {
    let mut o = SessionStore::options()
        .durability(mode)
        .max_span_bytes(MAX_SPAN_BYTES)
        .cache_bytes(1 << 20)
        .file_system(Arc::new(sim.clone()));
    if small {
        // Few trace homes held too: the deferred changes are written out
        // between checkpoints (the homes to their table) and during a
        // replay (its postings gathered on their own thread), under the
        // same faults and power losses.
        o = o
            .segment_bytes(4096)
            .checkpoint_bytes(2048)
            .deferred_homes(4);
    } else {
        o = o.checkpoint_bytes(u64::MAX);
    }
    o.open(dir).map_err(|e| format!("open ({mode:?}): {e}"))
}

/// Drives a `SessionStore` on a simulated disk against a model. Opcodes:
/// append a batch of generated spans (ids from a small space so that
/// duplicates are common; zero ids, zero parents and oversize spans that
/// must be rejected; timestamps 0, u64::MAX and end before start), sync,
/// reopen (with another durability mode), power loss (seeded), an I/O
/// fault at the n-th call of the next append, delete a trace, compact (the
/// log, and every other time the index), and a full check. The first
/// byte picks the durability mode and the segment and checkpoint sizes.
pub fn store_model(data: &[u8]) -> Result<(), String> {
    let tmp = TempDir::new("store")?;
    let dir = tmp.path().join("store");
    let mut input = Input::new(data);
    let first = input.byte();
    let mut mode = durability(first);
    let small = first & 0x10 != 0;
    let mut sim = SimFileSystem::new();
    let mut store = Some(open_store(&dir, &sim, mode, small)?);
    let mut model = Model::default();
    let mut ops = 0;
    while !input.is_empty() && ops < 24 {
        ops += 1;
        let what = format!("op {ops}");
        let op = input.byte();
        match op % 8 {
            0..=2 => {
                let st = match store.take() {
                    Some(s) => s,
                    None => open_store(&dir, &sim, mode, small)?,
                };
                let n = 1 + usize::from(input.byte() % 8);
                let gens: Vec<GenSpan> = (0..n).map(|_| gen_span(&mut input)).collect();
                let mut batch: Vec<ResourceSpans> = Vec::new();
                for g in &gens {
                    match batch.last_mut() {
                        Some(rs) if rs.project() == g.project => rs.spans.push(g.span.clone()),
                        _ => {
                            batch.push(ResourceSpans::for_project(g.project, vec![g.span.clone()]))
                        }
                    }
                }
                let expect = model.expect(&gens);
                let report = st
                    .append(&batch)
                    .map_err(|e| format!("{what}: append failed: {e}"))?;
                debug(|| format!("store: {what}: append {report:?}"));
                expect.check(&report, &what)?;
                model.add(&expect.fresh);
                if mode != Durability::Buffered {
                    model.durable = model.events.len();
                }
                store = Some(st);
            }
            3 => {
                if let Some(st) = &store {
                    st.sync().map_err(|e| format!("{what}: sync failed: {e}"))?;
                    model.durable = model.events.len();
                }
            }
            4 => {
                // Clean reopen, maybe in another mode.
                if let Some(st) = store.take() {
                    st.close()
                        .map_err(|e| format!("{what}: close failed: {e}"))?;
                }
                model.durable = model.events.len();
                mode = durability(input.byte());
                sim = SimFileSystem::new();
                let st = open_store(&dir, &sim, mode, small)?;
                check_store(&st, &model, &format!("{what}: after reopen"))?;
                debug(|| {
                    format!(
                        "store: {what}: reopened as {mode:?}, {} spans",
                        model.spans()
                    )
                });
                store = Some(st);
            }
            5 => {
                // Power loss.
                let seed = u64::from(input.u16());
                sim.crash();
                drop(store.take());
                sim.power_loss_random(seed)
                    .map_err(|e| format!("{what}: power loss: {e}"))?;
                sim = SimFileSystem::new();
                let st = open_store(&dir, &sim, mode, small)
                    .map_err(|e| format!("{what}: reopen after power loss (seed {seed}): {e}"))?;
                let before = model.spans();
                reconcile_after_crash(&st, &mut model, &format!("{what}: power loss seed {seed}"))?;
                debug(|| {
                    format!(
                        "store: {what}: power loss kept {} of {before} spans",
                        model.spans()
                    )
                });
                check_store(&st, &model, &format!("{what}: after power loss"))?;
                store = Some(st);
            }
            6 => {
                // An I/O fault at the n-th call of the next append.
                let Some(st) = store.take() else { continue };
                let nth = u64::from(input.byte() % 16);
                let error = if input.byte().is_multiple_of(2) {
                    FaultError::NoSpace
                } else {
                    FaultError::Io
                };
                let n = 1 + usize::from(input.byte() % 4);
                let gens: Vec<GenSpan> = (0..n).map(|_| gen_span(&mut input)).collect();
                let batch: Vec<ResourceSpans> = gens
                    .iter()
                    .map(|g| ResourceSpans::for_project(g.project, vec![g.span.clone()]))
                    .collect();
                let expect = model.expect(&gens);
                // Appends and opens leave work to an indexing thread (full
                // groups, checkpoints): wait for it, so that the fault meets
                // this append or the work this append leaves.
                st.projects()
                    .map_err(|e| format!("{what}: read before a fault: {e}"))?;
                st.wait_for_indexing()
                    .map_err(|e| format!("{what}: indexing before a fault: {e}"))?;
                sim.arm(Fault::nth(Ops::Mutating, nth, error));
                let result = st.append(&batch);
                let after = st.projects();
                if sim.injected().is_empty() {
                    // The append made fewer calls than `nth`: it must have
                    // worked, as without a fault. Disarm the fault.
                    sim.heal();
                    after.map_err(|e| format!("{what}: read failed without a fault: {e}"))?;
                    let report = result
                        .map_err(|e| format!("{what}: append failed without a fault: {e}"))?;
                    expect.check(&report, &what)?;
                    model.add(&expect.fresh);
                    if mode != Durability::Buffered {
                        model.durable = model.events.len();
                    }
                    store = Some(st);
                    continue;
                }
                let acknowledged = result.is_ok();
                // Whether reads must go on: not if the fault kept the
                // indexes from taking an acknowledged group (they fail with
                // `Poisoned` until the reopen, which recovers the group).
                let mut readable = true;
                match result {
                    // The fault met the work the append left to the indexing
                    // thread, after it returned: the batch is acknowledged
                    // and the store poisoned.
                    Ok(report) => {
                        debug(|| format!("store: {what}: fault {:?} after Ok", sim.injected()));
                        expect.check(&report, &what)?;
                        model.add(&expect.fresh);
                        if mode != Durability::Buffered {
                            model.durable = model.events.len();
                        }
                        if let Err(e) = after {
                            check(e.kind() == ErrorKind::Poisoned, || {
                                format!("{what}: a read after a background fault: {e}")
                            })?;
                            readable = false;
                        }
                    }
                    Err(err) => {
                        debug(|| format!("store: {what}: fault {:?} -> {err}", sim.injected()));
                        check(err.kind() == ErrorKind::Poisoned, || {
                            format!("{what}: a failed append returns {:?}: {err}", err.kind())
                        })?;
                    }
                }
                // Readable: everything acknowledged reads back (the failed
                // batch may or may not be visible).
                for (t, spans) in model.traces.iter().filter(|_| readable) {
                    let tr = st
                        .trace(*t)
                        .map_err(|e| format!("{what}: trace unreadable after a fault: {e}"))?;
                    check(
                        tr.is_some_and(|tr| {
                            spans
                                .keys()
                                .all(|sp| tr.spans.iter().any(|x| x.span.span_id == *sp))
                        }),
                        || format!("{what}: an acknowledged span is gone after a failed append"),
                    )?;
                }
                let refused = st.append(&batch);
                check(
                    refused
                        .as_ref()
                        .is_err_and(|e| e.kind() == ErrorKind::Poisoned),
                    || format!("{what}: an append after a fault is not refused"),
                )?;
                if !acknowledged {
                    // Its spans may be in the log (as a prefix of the
                    // batch): add them to the model's log order; the reopen
                    // keeps or drops them.
                    model.add(&expect.fresh);
                }
                let seed = u64::from(input.u16());
                drop(st);
                sim.power_loss_random(seed)
                    .map_err(|e| format!("{what}: power loss: {e}"))?;
                sim = SimFileSystem::new();
                let st = open_store(&dir, &sim, mode, small)
                    .map_err(|e| format!("{what}: reopen after a fault (seed {seed}): {e}"))?;
                reconcile_after_crash(&st, &mut model, &format!("{what}: after a fault"))?;
                check_store(&st, &model, &format!("{what}: after a fault"))?;
                store = Some(st);
            }
            _ => match (op / 8) % 8 {
                6 => {
                    // Delete a trace: a tombstone, durable like an append.
                    let Some(st) = &store else { continue };
                    let t = trace_id(1 + input.byte() % 4);
                    let report = st
                        .delete_trace(t)
                        .map_err(|e| format!("{what}: delete failed: {e}"))?;
                    let spans = model.delete(t);
                    debug(|| format!("store: {what}: delete {report:?}"));
                    check(
                        report.spans == spans as u64 && report.traces == u64::from(spans > 0),
                        || format!("{what}: delete reports {report:?}, the model {spans} spans"),
                    )?;
                    if mode != Durability::Buffered {
                        model.durable = model.events.len();
                    }
                }
                7 => {
                    // Compaction: moves live frames, drops a dead prefix;
                    // starts with a checkpoint, so everything is durable.
                    // Every other time the index is compacted too (sort
                    // runs merged, deleted sessions pruned from the search
                    // postings, the file rewritten).
                    let Some(st) = &mut store else { continue };
                    let report = st
                        .compact()
                        .map_err(|e| format!("{what}: compact failed: {e}"))?;
                    debug(|| format!("store: {what}: compact {report:?}"));
                    if input.byte() & 1 == 1 {
                        st.compact_index()
                            .map_err(|e| format!("{what}: compact_index failed: {e}"))?;
                        debug(|| format!("store: {what}: compact_index"));
                    }
                    model.durable = model.events.len();
                    check_store(st, &model, &format!("{what}: after compaction"))?;
                }
                _ => {
                    if let Some(st) = &store {
                        check_store(st, &model, &what)?;
                    }
                }
            },
        }
    }
    let st = match store.take() {
        Some(s) => s,
        None => open_store(&dir, &sim, mode, small)?,
    };
    check_store(&st, &model, "at the end")?;
    let report = st.verify().map_err(|e| format!("verify: {e}"))?;
    check(report.is_ok(), || format!("verify: {:?}", report.problems))
}

// ------------------------------------------------------------------ seeds

/// Seed inputs for `target`: small programs that reach each part of the
/// target (valid frames, rolls, power loss, damage; valid records; valid
/// OTLP requests; store operations of every kind). `fuzz/corpus/<target>/`
/// holds them (written by the ignored test `write_seed_corpora` in
/// `tests/fuzz_corpus.rs`), next to what fuzzing found.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "log_recovery" => log_seeds(),
        "record_decode" => record_seeds(),
        "store_model" => store_seeds(),
        #[cfg(feature = "otlp")]
        "otlp_protobuf" => otlp_seeds().0,
        #[cfg(feature = "otlp")]
        "otlp_json" => otlp_seeds().1,
        _ => Vec::new(),
    }
}

fn log_seeds() -> Vec<Vec<u8>> {
    // Appends: opcode 0, count-1, then (size, multiplier byte, tag) per
    // frame (multiplier byte % 8 == 0 means size * 64).
    let small = [0u8, 3, 50, 1, 1, 60, 1, 2, 0, 1, 3, 200, 1, 4];
    let big = [0u8, 1, 100, 0, 1, 120, 0, 2];
    vec![
        // Appends, sync, clean reopens from the start and from a checkpoint.
        [&small[..], &[2, 4, 0], &small[..], &[4, 3]].concat(),
        // Large frames roll segments; reopen.
        [&big[..], &big[..], &big[..], &[2, 4, 1]].concat(),
        // Power loss after synced and unsynced appends.
        [
            &small[..],
            &[2],
            &small[..],
            &[3, 7, 0],
            &small[..],
            &[3, 42, 1],
        ]
        .concat(),
        [&big[..], &small[..], &big[..], &[3, 9, 9]].concat(),
        // Damage: a flipped bit, a truncated tail, junk, zeros.
        [&small[..], &small[..], &[5, 0, 70, 0, 4]].concat(),
        [&big[..], &big[..], &small[..], &[5, 0, 40, 0, 1]].concat(),
        [&small[..], &small[..], &[6, 150, 0]].concat(),
        [&small[..], &[7, 20, 1], &[0xAB; 20][..]].concat(),
        [&small[..], &[7, 30, 0]].concat(),
    ]
}

fn record_seeds() -> Vec<Vec<u8>> {
    use crate::index::trace::{TraceRecord, TurnBody};
    let span = Span::new(
        TraceId([1; 16]),
        SpanId([2; 8]),
        Some(SpanId([3; 8])),
        "llm",
        10,
        20,
    )
    .with_attribute("session.id", "s1")
    .with_attribute("input.value", "question")
    .with_attribute("llm.token_count.total", 42i64)
    .with_attribute(
        "tags",
        crate::model::AttributeValue::StringArray(vec!["a".to_owned(), "b".to_owned()]),
    )
    .with_status(StatusCode::Error, "boom");
    let resource = vec![crate::model::KeyValue::new("service.name", "svc")];
    let mut rec = vec![0u8];
    let _ = codec::encode_span_parts("project", &resource, &span, &mut rec);
    let mut other_tag = rec.clone();
    if let Some(b) = other_tag.first_mut() {
        *b = 7;
    }
    vec![
        rec,
        other_tag,
        [&[2u8][..], &codec::encode_value(&TraceRecord::default())].concat(),
        [
            &[3u8][..],
            &codec::encode_value(&TurnBody {
                end: 20,
                head_span_id: [2; 8],
                root_missing: true,
                input: Some(crate::model::IoValue {
                    value: "question".into(),
                    mime_type: "text/plain".into(),
                }),
                output: None,
                tokens: Tokens::default(),
                status: crate::model::TraceStatus::Error,
                num_spans: 1,
                conflicts: vec!["other".into()],
                user: None,
                more_conflicts: false,
            }),
        ]
        .concat(),
        vec![4, 0, 0, 0],
        vec![5, 0],
        {
            let mut tomb = vec![1u8];
            let rec = codec::DeleteRecord {
                traces: vec![[1; 16], [2; 16]],
            };
            let _ = codec::encode_delete(&rec, &mut tomb);
            tomb
        },
    ]
}

fn store_seeds() -> Vec<Vec<u8>> {
    // A span: ids byte (trace = b % 5, span = b / 5 % 7), parent byte
    // (b % 9: 0-2 none, 3-7 span 1-5, 8 zero; project = b / 9 % 2), time
    // byte (start = TIMES[b % 8], end = TIMES[b / 8 % 8]), flags byte
    // (session = b % 4, 0x04 LLM, 0x08 error, 0x10 input/output, 0x20
    // oversize, 0x40 user).
    let root = |trace: u8| [trace + 5, 0, 2 + 8 * 3, 1 | 0x10 | 0x40];
    let child = |trace: u8, span: u8| [trace + 5 * span, 3, 2 + 8 * 3, 1 | 0x04];
    let turn = |trace: u8| {
        [
            &[0u8, 2][..],
            &child(trace, 2),
            &child(trace, 3),
            &root(trace),
        ]
        .concat()
    };
    vec![
        // Sync mode: turns, a check, a reopen in another mode, duplicates.
        [&[0u8][..], &turn(1), &[7], &turn(2), &[4, 2, 7], &turn(1)].concat(),
        // Buffered, small segments: turns, power loss, more turns, sync, power loss.
        [
            &[0x12u8][..],
            &turn(1),
            &turn(2),
            &[5, 3, 0],
            &turn(3),
            &[3],
            &turn(4),
            &[5, 1, 1],
        ]
        .concat(),
        // Group commit with an I/O fault in the third call of an append.
        [
            &[1u8][..],
            &turn(1),
            &[6, 2, 1, 1],
            &child(2, 2)[..],
            &[0, 0],
            &[7],
        ]
        .concat(),
        [
            &[0x11u8][..],
            &turn(1),
            &[6, 0, 0, 2],
            &child(2, 2)[..],
            &root(2)[..],
            &[5, 0],
            &turn(3),
        ]
        .concat(),
        // Deletes (opcode 55 and a trace byte) and compaction (63), late
        // spans of a deleted trace, power loss after both.
        [
            &[0x10u8][..],
            &turn(1),
            &turn(2),
            &turn(3),
            &[55, 1, 63],
            &turn(2),
            &[55, 0, 3, 63, 5, 4, 4],
            &turn(4),
            &[5, 9, 9, 7],
        ]
        .concat(),
        // Bad spans: zero trace id, zero span id, zero parent, oversize;
        // timestamps 0 and u64::MAX, end before start; another session.
        [
            &[2u8, 0, 4][..],
            &[5, 0, 2, 1],
            &[1, 0, 2, 1],
            &[6, 8, 2, 1],
            &[7, 0, 2, 0x21],
            &[3, 5, 7, 2 | 0x08],
            &[8, 1, 7, 2],      // start u64::MAX, end 0
            &[9 + 5, 0, 13, 3], // start 2^40, end 1
            &[7],
        ]
        .concat(),
    ]
}

#[cfg(feature = "otlp")]
fn otlp_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1 as pb;
    use prost::Message;
    let kv = |k: &str, v: any_value::Value| KeyValue {
        key: k.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    };
    let span = |id: u8, parent: Option<u8>| pb::Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span {id}"),
        start_time_unix_nano: 1_000 * u64::from(id),
        end_time_unix_nano: 5_000,
        attributes: vec![
            kv("session.id", any_value::Value::StringValue("s-1".into())),
            kv("llm.token_count.total", any_value::Value::IntValue(12)),
            kv("flag", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
            kv("raw", any_value::Value::BytesValue(vec![0, 1, 2])),
        ],
        ..pb::Span::default()
    };
    let request = crate::otlp::ExportTraceServiceRequest {
        resource_spans: vec![pb::ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "openinference.project.name",
                    any_value::Value::StringValue("chat".into()),
                )],
                ..Resource::default()
            }),
            scope_spans: vec![pb::ScopeSpans {
                spans: vec![span(1, None), span(2, Some(1)), span(3, Some(9))],
                ..pb::ScopeSpans::default()
            }],
            ..pb::ResourceSpans::default()
        }],
    };
    let protobuf = vec![request.encode_to_vec(), Vec::new()];
    let json = vec![
        br#"{"resourceSpans": [{
  "resource": {"attributes": [{"key": "openinference.project.name", "value": {"stringValue": "chat"}}]},
  "scopeSpans": [{"scope": {"name": "lib", "version": "1"}, "spans": [{
    "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
    "parentSpanId": "", "name": "agent", "kind": 2,
    "startTimeUnixNano": "1000", "endTimeUnixNano": "2000",
    "attributes": [{"key": "session.id", "value": {"stringValue": "s-1"}},
                   {"key": "n", "value": {"intValue": "3"}},
                   {"key": "list", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}},
                   {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"boolValue": true}}]}}}],
    "events": [{"timeUnixNano": "1500", "name": "exception"}],
    "status": {"code": 2, "message": "boom"}
  }]}]
}]}"#
            .to_vec(),
        br#"{"resourceSpans": []}"#.to_vec(),
    ];
    (protobuf, json)
}

//! Behaviour tests of the log: round trips, recovery, concurrency.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use super::*;

/// Tests return errors instead of panicking (the crate denies unwrap).
type TestResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Small segments so a few hundred bytes already roll.
fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 256,
        max_frame_bytes: 4096,
        ..LogOptions::default()
    }
}

/// One big segment, so recovery tests work on the last (active) segment.
fn single() -> LogOptions {
    LogOptions {
        segment_bytes: 1 << 30,
        max_frame_bytes: 4096,
        ..LogOptions::default()
    }
}

/// A deterministic, non-zero, self-describing payload for record `i`: its
/// first 4 bytes are `i`, the rest a pattern derived from `i`.
fn payload(i: u32) -> Vec<u8> {
    let n = 4 + (i as usize * 37) % 120;
    let mut v = i.to_le_bytes().to_vec();
    v.extend((4..n).map(|k| (k as u32 * 31 + i * 7) as u8 | 1));
    v
}

/// The tag stored with record `i`.
fn tag(i: u32) -> u8 {
    (i % 250) as u8 + 1
}

/// Checks that a frame is record `i`, as written.
fn is_record(f: &FrameBuf, i: u32) -> bool {
    f.tag() == tag(i) && f.payload() == payload(i).as_slice()
}

/// Appends records `from..to` in batches of varying size; returns their LSNs.
fn append_records(log: &Log, from: u32, to: u32) -> Result<Vec<Lsn>> {
    let mut lsns = Vec::new();
    let mut i = from;
    let mut batch = 1;
    while i < to {
        let hi = (i + batch).min(to);
        let payloads: Vec<Vec<u8>> = (i..hi).map(payload).collect();
        let frames: Vec<FrameRef<'_>> = (i..hi)
            .zip(&payloads)
            .map(|(j, p)| FrameRef {
                tag: tag(j),
                payload: p,
            })
            .collect();
        lsns.extend(log.append(&frames)?);
        i = hi;
        batch = batch % 7 + 1;
    }
    Ok(lsns)
}

/// Collects a full scan, failing on the first error.
fn scan_all(log: &Log, from: Lsn) -> Result<Vec<(Lsn, FrameBuf)>> {
    log.scan(from).collect()
}

/// Copies every file of `src` into a new temporary directory.
fn copy_dir(src: &Path) -> std::io::Result<tempfile::TempDir> {
    let dst = tempfile::tempdir()?;
    for e in fs::read_dir(src)? {
        let e = e?;
        fs::copy(e.path(), dst.path().join(e.file_name()))?;
    }
    Ok(dst)
}

/// The segment holding `lsn`, from a `segments()` snapshot.
fn seg_of(segs: &[SegmentInfo], lsn: Lsn) -> Option<&SegmentInfo> {
    segs.iter().rev().find(|s| s.base <= lsn)
}

/// Flips one bit of a file.
fn flip_bit(path: &Path, offset: u64, bit: u8) -> std::io::Result<()> {
    let mut bytes = fs::read(path)?;
    if let Some(b) = bytes.get_mut(offset as usize) {
        *b ^= 1 << bit;
    }
    fs::write(path, bytes)
}

/// Expects `Error::Corruption` naming `segment` and `offset`.
fn expect_corruption<T>(r: Result<T>, segment: &Path, offset: u64) -> TestResult {
    match r {
        Err(Error::Corruption {
            segment: s,
            offset: o,
            ..
        }) if s == segment && o == offset => Ok(()),
        Err(e) => Err(format!(
            "expected corruption in {} at {offset}, got {e}",
            segment.display()
        )
        .into()),
        Ok(_) => Err(format!(
            "expected corruption in {} at {offset}, got success",
            segment.display()
        )
        .into()),
    }
}

/// A log in `dir` holding records `0..n`, closed again; returns the LSNs.
fn build(dir: &Path, opts: LogOptions, n: u32) -> Result<Vec<Lsn>> {
    let (log, _) = Log::open(dir, opts, 0)?;
    let lsns = append_records(&log, 0, n)?;
    log.sync(log.end())?;
    Ok(lsns)
}

#[test]
fn log_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
    check::<FrameBuf>();
}

#[test]
fn fresh_log_starts_at_32() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (log, report) = Log::open(&dir.path().join("log"), small(), 0)?;
    assert_eq!(
        report,
        RecoveryReport {
            truncated_bytes: 0,
            frames_scanned: 0,
            segments: 1,
            end: 32,
            rewritten_bytes: 0,
        }
    );
    assert_eq!((log.start(), log.end(), log.synced()), (32, 32, 32));
    assert_eq!(scan_all(&log, 0)?.len(), 0);
    assert_eq!(log.append(&[])?, Vec::<Lsn>::new());
    let segs = log.segments();
    assert_eq!(segs.len(), 1);
    assert_eq!(
        segs.first()
            .map(|s| s.path.file_name().map(|n| n.to_owned())),
        Some(Some("00000000000000000000.seg".into()))
    );
    Ok(())
}

#[test]
fn round_trip_across_rolls_and_reopen() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, small(), 0)?;
    let mut lsns = append_records(&log, 0, 100)?;
    assert_eq!(lsns.first(), Some(&32));
    check_log(&log, &lsns)?;
    let segs = log.segments();
    assert!(segs.len() > 5, "expected several rolls, got {}", segs.len());
    let end = log.end();
    drop(log);

    let (log, report) = Log::open(&dir, small(), 0)?;
    assert_eq!(report.end, end);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.frames_scanned, 100);
    assert_eq!(report.segments, segs.len());
    assert_eq!(log.end(), end);
    let more = append_records(&log, 100, 150)?;
    // Continuity: the next frame sits at the old end, or just past the next
    // segment's header if the full segment rolled first.
    let first_new = more.first().copied().unwrap_or(0);
    assert!(
        first_new == end || first_new == end + 32,
        "{first_new} vs {end}"
    );
    lsns.extend(more);
    check_log(&log, &lsns)?;
    drop(log);

    let (log, report) = Log::open(&dir, small(), 0)?;
    assert_eq!(report.frames_scanned, 150);
    check_log(&log, &lsns)?;
    Ok(())
}

/// Checks every invariant a healthy log holding records `0..lsns.len()` has.
fn check_log(log: &Log, lsns: &[Lsn]) -> TestResult {
    for w in lsns.windows(2) {
        if let [a, b] = w {
            assert!(a < b);
        }
    }
    for (i, &lsn) in lsns.iter().enumerate() {
        let f = log.read(lsn)?;
        assert!(is_record(&f, i as u32), "record {i} at {lsn}");
    }
    let scanned = scan_all(log, 0)?;
    assert_eq!(scanned.len(), lsns.len());
    for (i, ((lsn, f), want)) in scanned.iter().zip(lsns).enumerate() {
        assert_eq!(lsn, want);
        assert!(is_record(f, i as u32));
    }
    // Segments are contiguous, all but the last sealed, and no frame spans two.
    let segs = log.segments();
    for w in segs.windows(2) {
        if let [a, b] = w {
            assert_eq!(a.base + a.len, b.base);
            assert!(a.sealed);
        }
    }
    let last = segs.last().ok_or("no segments")?;
    assert!(!last.sealed);
    assert_eq!(last.base + last.len, log.end());
    for (i, &lsn) in lsns.iter().enumerate() {
        let s = seg_of(&segs, lsn).ok_or("lsn outside segments")?;
        assert!(lsn + 9 + payload(i as u32).len() as u64 <= s.base + s.len);
        assert!(lsn >= s.base + 32);
    }
    // Scanning from the middle starts at that frame.
    if let Some(&mid) = lsns.get(lsns.len() / 2) {
        let tail = scan_all(log, mid)?;
        assert_eq!(tail.len(), lsns.len() - lsns.len() / 2);
        assert_eq!(tail.first().map(|(l, _)| *l), Some(mid));
    }
    Ok(())
}

#[test]
fn oversize_frame_goes_alone_and_too_large_is_refused() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let big = vec![7u8; 1000]; // larger than a 256-byte segment
    let two = |log: &Log| {
        log.append(&[
            FrameRef {
                tag: 1,
                payload: &big,
            },
            FrameRef {
                tag: 2,
                payload: b"after",
            },
        ])
    };
    // First in a segment: the big frame is written whole and alone, and the
    // next frame starts a new segment.
    let lsns = two(&log)?;
    let segs = log.segments();
    let a = seg_of(&segs, lsns[0]).ok_or("no seg")?;
    let b = seg_of(&segs, lsns[1]).ok_or("no seg")?;
    assert_eq!((lsns[0], a.base), (32, 0));
    assert_eq!(a.len, 32 + 9 + 1000);
    assert_eq!(b.base, a.base + a.len);
    assert_eq!(log.read(lsns[0])?.payload(), big.as_slice());
    // Behind smaller frames in a segment that is not yet full, it joins them
    // (the roll rule only looks at the length before each frame), and again
    // the frame after it rolls.
    let lsns = two(&log)?;
    let segs = log.segments();
    let a = seg_of(&segs, lsns[0]).ok_or("no seg")?;
    let b = seg_of(&segs, lsns[1]).ok_or("no seg")?;
    assert_eq!(lsns[0], a.base + 32 + 9 + 5);
    assert_eq!(b.base, a.base + a.len);
    assert_eq!(log.read(lsns[0])?.payload(), big.as_slice());

    // Too large: refused, nothing written, log still usable.
    let end = log.end();
    let huge = vec![1u8; 4097];
    let r = log.append(&[
        FrameRef {
            tag: 1,
            payload: b"ok",
        },
        FrameRef {
            tag: 1,
            payload: &huge,
        },
    ]);
    assert!(matches!(r, Err(Error::InvalidInput { .. })));
    assert_eq!(log.end(), end);
    assert!(!log.is_poisoned());
    assert_eq!(
        log.append(&[FrameRef {
            tag: 3,
            payload: &[]
        }])?
        .len(),
        1
    );
    // An empty payload round-trips.
    let last = scan_all(&log, 0)?.pop().ok_or("empty")?;
    assert_eq!((last.1.tag(), last.1.payload()), (3, &[][..]));
    Ok(())
}

#[test]
fn bad_positions_are_errors_not_panics() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let lsns = append_records(&log, 0, 40)?;
    let end = log.end();
    for lsn in [0, 1, 31, end, end + 1, u64::MAX] {
        assert!(log.read(lsn).is_err(), "read({lsn})");
    }
    // Misaligned positions inside frames, including inside later headers.
    for &l in &lsns {
        for d in [1, 4, 8, 9] {
            let _ = log.read(l + d); // may be Err; must not panic
        }
    }
    for &b in log.segments().iter().map(|s| &s.base).skip(1) {
        assert!(log.read(b).is_err());
        assert!(log.read(b + 5).is_err());
    }
    assert!(scan_all(&log, end + 1).is_err());
    assert!(scan_all(&log, 5).is_err());
    assert_eq!(scan_all(&log, end)?.len(), 0);
    assert!(log.sync(end + 1).is_err());
    let mut s = log.scan(lsns[1] + 3);
    assert!(matches!(s.next(), Some(Err(_))));
    assert!(s.next().is_none(), "a scan stops after an error");
    Ok(())
}

/// Cuts the last segment of a copy of `dir` at `cut` and checks recovery.
fn check_cut(dir: &Path, opts: LogOptions, lsns: &[Lsn], last_seg: &Path, cut: u64) -> TestResult {
    let copy = copy_dir(dir)?;
    let seg = copy.path().join(last_seg.file_name().ok_or("no name")?);
    let f = fs::OpenOptions::new().write(true).open(&seg)?;
    let full = f.metadata()?.len();
    f.set_len(cut)?;
    drop(f);
    let base = lsns
        .iter()
        .zip(0u32..)
        .map(|(&l, i)| (l, l + 9 + payload(i).len() as u64))
        .collect::<Vec<_>>();
    let seg_base: Lsn = last_seg
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .ok_or("bad name")?;
    // Records that survive: those ending at or before the cut.
    let keep = base
        .iter()
        .take_while(|(_, e)| *e <= seg_base + cut)
        .count();
    let expect_end = base
        .get(keep.wrapping_sub(1))
        .map_or(seg_base + 32, |(_, e)| *e)
        .max(seg_base + 32);
    // A cut inside the header is an interrupted segment creation: the whole
    // stub is discarded and a fresh header written.
    let expect_truncated = if cut < 32 {
        cut
    } else {
        seg_base + cut - expect_end
    };
    let (log, report) = Log::open(copy.path(), opts, 0)?;
    assert_eq!(report.end, expect_end, "cut {cut} of {full}");
    assert_eq!(log.end(), expect_end);
    assert_eq!(report.truncated_bytes, expect_truncated, "cut {cut}");
    let got = scan_all(&log, 0)?;
    assert_eq!(got.len(), keep, "cut {cut}");
    for (i, (_, f)) in got.iter().enumerate() {
        assert!(is_record(f, i as u32));
    }
    // Appending after recovery works and survives a reopen.
    let p = payload(9999);
    let l = log.append(&[FrameRef {
        tag: 42,
        payload: &p,
    }])?;
    assert_eq!(l.first().copied(), Some(expect_end));
    log.sync(log.end())?;
    drop(log);
    let (log, report) = Log::open(copy.path(), opts, 0)?;
    assert_eq!(report.truncated_bytes, 0);
    let got = scan_all(&log, 0)?;
    assert_eq!(got.len(), keep + 1);
    let (last_lsn, last) = got.last().ok_or("empty")?;
    assert_eq!(
        (*last_lsn, last.tag(), last.payload()),
        (expect_end, 42, p.as_slice())
    );
    Ok(())
}

#[test]
fn torn_tail_at_every_cut_point_single_segment() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), single(), 12)?;
    let seg = tmp.path().join("00000000000000000000.seg");
    let len = fs::metadata(&seg)?.len();
    let from = lsns[lsns.len() - 2];
    for cut in from..=len {
        check_cut(tmp.path(), single(), &lsns, &seg, cut)?;
    }
    Ok(())
}

#[test]
fn torn_tail_at_every_cut_point_after_rolls() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let opts = LogOptions {
        segment_bytes: 600,
        max_frame_bytes: 4096,
        ..LogOptions::default()
    };
    // Pick a record count whose last two frames share the last segment.
    let (log, _) = Log::open(tmp.path(), opts, 0)?;
    let mut lsns = append_records(&log, 0, 30)?;
    let mut i = 30;
    loop {
        let segs = log.segments();
        let last = segs.last().ok_or("no segments")?;
        if segs.len() > 2 && lsns.len() >= 2 && lsns[lsns.len() - 2] > last.base {
            break;
        }
        lsns.extend(append_records(&log, i, i + 1)?);
        i += 1;
    }
    log.sync(log.end())?;
    let last = log.segments().last().cloned().ok_or("none")?;
    drop(log);
    for cut in (lsns[lsns.len() - 2] - last.base)..=last.len {
        check_cut(tmp.path(), opts, &lsns, &last.path, cut)?;
    }
    // Cutting into the header of the last segment: a torn segment creation.
    for cut in 0..32 {
        check_cut(tmp.path(), opts, &lsns, &last.path, cut)
            .map_err(|e| format!("header cut {cut}: {e}"))?;
    }
    Ok(())
}

#[test]
fn zero_filled_tail_is_truncated() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), single(), 10)?;
    let seg = tmp.path().join("00000000000000000000.seg");
    let len = fs::metadata(&seg)?.len();

    // Zeros after the last complete frame.
    let copy = copy_dir(tmp.path())?;
    let cseg = copy.path().join("00000000000000000000.seg");
    fs::OpenOptions::new()
        .write(true)
        .open(&cseg)?
        .set_len(len + 5000)?;
    let (log, report) = Log::open(copy.path(), single(), 0)?;
    assert_eq!((report.end, report.truncated_bytes), (len, 5000));
    assert_eq!(scan_all(&log, 0)?.len(), 10);
    assert_eq!(fs::metadata(&cseg)?.len(), len);
    drop(log);

    // A torn last frame followed by zeros.
    let copy = copy_dir(tmp.path())?;
    let cseg = copy.path().join("00000000000000000000.seg");
    let f = fs::OpenOptions::new().write(true).open(&cseg)?;
    f.set_len(lsns[9] + 12)?;
    f.set_len(len + 100)?;
    drop(f);
    let (log, report) = Log::open(copy.path(), single(), 0)?;
    assert_eq!(report.end, lsns[9]);
    assert_eq!(report.truncated_bytes, len + 100 - lsns[9]);
    assert_eq!(scan_all(&log, 0)?.len(), 9);
    drop(log);

    // The last frame's payload end zero-filled (complete, bad CRC) and zeros
    // after it: torn.
    let copy = copy_dir(tmp.path())?;
    let cseg = copy.path().join("00000000000000000000.seg");
    let mut bytes = fs::read(&cseg)?;
    let n = bytes.len();
    bytes[n - 3..].fill(0);
    bytes.extend([0u8; 64]);
    fs::write(&cseg, &bytes)?;
    let (log, report) = Log::open(copy.path(), single(), 0)?;
    assert_eq!(report.end, lsns[9]);
    assert_eq!(scan_all(&log, 0)?.len(), 9);
    drop(log);

    // The same damage with nothing after it is reported, not dropped.
    let copy = copy_dir(tmp.path())?;
    let cseg = copy.path().join("00000000000000000000.seg");
    fs::write(&cseg, &bytes[..n])?;
    expect_corruption(Log::open(copy.path(), single(), 0), &cseg, lsns[9])?;
    Ok(())
}

/// Flips every bit of the frame header and some payload bits of record `k`
/// and expects corruption at that frame each time.
fn check_flips(dir: &Path, opts: LogOptions, seg: &SegmentInfo, lsn: Lsn, k: u32) -> TestResult {
    let off = lsn - seg.base;
    let name = seg.path.file_name().ok_or("no name")?;
    let plen = payload(k).len() as u64;
    let mut positions: Vec<(u64, u8)> = (0..9)
        .flat_map(|b| (0..8).map(move |bit| (b, bit)))
        .collect();
    positions.extend([(9, 0), (9, 7), (9 + plen / 2, 3), (9 + plen - 1, 5)]);
    for (b, bit) in positions {
        let copy = copy_dir(dir)?;
        let path = copy.path().join(name);
        flip_bit(&path, off + b, bit)?;
        expect_corruption(Log::open(copy.path(), opts, 0), &path, off)
            .map_err(|e| format!("byte {b} bit {bit} of record {k}: {e}"))?;
    }
    Ok(())
}

#[test]
fn flipped_bits_in_the_active_segment_are_corruption() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), single(), 10)?;
    let (log, _) = Log::open(tmp.path(), single(), 0)?;
    let seg = log.segments().last().cloned().ok_or("none")?;
    drop(log);
    // An earlier frame, the second to last, and even the very last one.
    for k in [0u32, 3, 8, 9] {
        check_flips(tmp.path(), single(), &seg, lsns[k as usize], k)?;
    }
    Ok(())
}

#[test]
fn flipped_bits_in_a_sealed_segment_are_corruption() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), small(), 60)?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let segs = log.segments();
    drop(log);
    let k = 5u32;
    let seg = seg_of(&segs, lsns[k as usize]).cloned().ok_or("none")?;
    assert!(seg.sealed);
    check_flips(tmp.path(), small(), &seg, lsns[k as usize], k)?;

    // A sealed segment that lost its last byte is corruption too (it was
    // synced whole before the next one began): the next base no longer follows.
    let copy = copy_dir(tmp.path())?;
    let p = copy.path().join(seg.path.file_name().ok_or("no name")?);
    let mut bytes = fs::read(&p)?;
    bytes.truncate(bytes.len() - 1);
    fs::write(&p, &bytes)?;
    assert!(matches!(
        Log::open(copy.path(), small(), 0),
        Err(Error::Corruption { .. })
    ));
    Ok(())
}

/// Sealed segments are checked on two threads; whichever finishes first,
/// the damage reported is the first one in log order, and a clean log
/// counts every frame once.
#[test]
fn the_first_damaged_sealed_segment_is_the_one_reported() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), small(), 60)?;
    let (log, report) = Log::open(tmp.path(), small(), 0)?;
    let segs = log.segments();
    drop(log);
    assert_eq!(report.frames_scanned, 60);
    let sealed: Vec<&SegmentInfo> = segs.iter().filter(|s| s.sealed).collect();
    assert!(sealed.len() >= 6, "expected several sealed segments");
    // Each sealed segment's first frame: (record number, lsn, segment).
    let firsts: Vec<(u32, Lsn, &SegmentInfo)> = sealed
        .iter()
        .filter_map(|seg| {
            let k = lsns
                .iter()
                .position(|&l| seg_of(&segs, l).map(|s| s.base) == Some(seg.base))?;
            Some((u32::try_from(k).ok()?, lsns[k], *seg))
        })
        .collect();
    let n = firsts.len();
    for (a, b) in [
        (0, 1),
        (0, n - 1),
        (1, n - 2),
        (n - 2, n - 1),
        (2, 3),
        (n / 2, n / 2 + 1),
    ] {
        let copy = copy_dir(tmp.path())?;
        let mut first_damaged = None;
        for &i in &[b, a] {
            let (k, lsn, seg) = firsts[i];
            let path = copy.path().join(seg.path.file_name().ok_or("no name")?);
            // A bit in the middle of the payload: the checksum fails.
            let plen = payload(k).len() as u64;
            flip_bit(&path, lsn - seg.base + 9 + plen / 2, 2)?;
            first_damaged = Some((path, lsn - seg.base));
        }
        let (path, off) = first_damaged.ok_or("none")?;
        expect_corruption(Log::open(copy.path(), small(), 0), &path, off)
            .map_err(|e| format!("segments {a} and {b} damaged: {e}"))?;
    }
    // Checked from a later segment on, only the frames from there count.
    let (k, lsn, _) = firsts[n / 2];
    let (_, report) = Log::open(tmp.path(), small(), lsn)?;
    assert_eq!(report.frames_scanned, 60 - u64::from(k));
    Ok(())
}

#[test]
fn damaged_segment_headers_are_reported() -> TestResult {
    let tmp = tempfile::tempdir()?;
    build(tmp.path(), small(), 60)?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let segs = log.segments();
    drop(log);
    let sealed = segs.get(1).ok_or("no second segment")?;
    let last = segs.last().ok_or("none")?;
    for seg in [sealed, last] {
        let name = seg.path.file_name().ok_or("no name")?;
        for (b, bit) in [
            (0u64, 0u8),
            (3, 1),
            (5, 0),
            (8, 2),
            (15, 7),
            (20, 4),
            (30, 6),
        ] {
            let copy = copy_dir(tmp.path())?;
            let p = copy.path().join(name);
            flip_bit(&p, b, bit)?;
            let r = Log::open(copy.path(), small(), 0);
            let ok = match &r {
                Err(Error::Corruption {
                    segment, offset, ..
                }) => segment == &p && *offset == 0,
                // A flipped version byte reads as an unknown version.
                Err(Error::Incompatible { reason }) => {
                    b == 5 && reason.contains(&*p.to_string_lossy())
                }
                _ => false,
            };
            assert!(ok, "header byte {b} bit {bit} of {}: {r:?}", p.display());
        }
    }
    // A well-formed header of a newer version is incompatible.
    let copy = copy_dir(tmp.path())?;
    let p = copy.path().join(sealed.path.file_name().ok_or("no name")?);
    let mut bytes = fs::read(&p)?;
    bytes[4] = 2;
    let crc = crc32fast::hash(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    fs::write(&p, &bytes)?;
    assert!(matches!(
        Log::open(copy.path(), small(), 0),
        Err(Error::Incompatible { .. })
    ));
    Ok(())
}

/// A valid header for base 18446744073709551000.
fn encode_huge_header() -> [u8; 32] {
    frame::encode_segment_header(18_446_744_073_709_551_000)
}

#[test]
fn segment_set_problems_are_reported() -> TestResult {
    let tmp = tempfile::tempdir()?;
    build(tmp.path(), small(), 60)?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let segs = log.segments();
    drop(log);

    // A missing middle segment leaves a gap, reported on the next one.
    let copy = copy_dir(tmp.path())?;
    let name = |s: &SegmentInfo| s.path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    fs::remove_file(copy.path().join(name(&segs[2])))?;
    expect_corruption(
        Log::open(copy.path(), small(), 0),
        &copy.path().join(name(&segs[3])),
        0,
    )?;

    // A badly named .seg file is reported; other files are ignored.
    let copy = copy_dir(tmp.path())?;
    fs::write(copy.path().join("notes.txt"), b"hello")?;
    fs::write(copy.path().join("00000000000000000000.seg.bak"), b"x")?;
    fs::create_dir(copy.path().join("sub.seg"))?;
    assert!(Log::open(copy.path(), small(), 0).is_ok());
    fs::write(copy.path().join("12.seg"), b"")?;
    expect_corruption(
        Log::open(copy.path(), small(), 0),
        &copy.path().join("12.seg"),
        0,
    )?;
    // A base so large that offsets from it could overflow is refused.
    let copy = copy_dir(tmp.path())?;
    let huge = copy.path().join("18446744073709551000.seg");
    fs::write(&huge, encode_huge_header())?;
    expect_corruption(Log::open(copy.path(), small(), 0), &huge, 0)?;

    // Garbage that is not a header prefix in a short last segment.
    let copy = copy_dir(tmp.path())?;
    let last = segs.last().ok_or("none")?;
    let next_base = last.base + last.len;
    let p = copy.path().join(format!("{next_base:020}.seg"));
    fs::write(&p, b"garbage")?;
    expect_corruption(Log::open(copy.path(), small(), 0), &p, 0)?;
    Ok(())
}

#[test]
fn interrupted_roll_leaves_a_repairable_segment() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), small(), 60)?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let segs = log.segments();
    drop(log);
    let last = segs.last().ok_or("none")?;
    let next_base = last.base + last.len;
    for junk in [Vec::new(), vec![0u8; 32], vec![0u8; 100]] {
        let copy = copy_dir(tmp.path())?;
        let p = copy.path().join(format!("{next_base:020}.seg"));
        fs::write(&p, &junk)?;
        let (log, report) = Log::open(copy.path(), small(), 0)?;
        assert_eq!(report.end, next_base + 32);
        assert_eq!(report.segments, segs.len() + 1);
        assert_eq!(report.truncated_bytes, junk.len() as u64);
        assert_eq!(fs::metadata(&p)?.len(), 32);
        let l = log.append(&[FrameRef {
            tag: 9,
            payload: b"x",
        }])?;
        assert_eq!(l, vec![next_base + 32]);
        assert_eq!(scan_all(&log, 0)?.len(), lsns.len() + 1);
    }
    Ok(())
}

#[test]
fn scan_from_skips_checks_but_finds_the_end() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), small(), 60)?;
    let end = {
        let (log, _) = Log::open(tmp.path(), small(), 0)?;
        log.end()
    };
    // Damage a frame before the checkpoint: open does not look at it.
    let copy = copy_dir(tmp.path())?;
    let (log, _) = Log::open(copy.path(), small(), 0)?;
    let segs = log.segments();
    drop(log);
    let seg = seg_of(&segs, lsns[3]).ok_or("none")?;
    let p = copy.path().join(seg.path.file_name().ok_or("no name")?);
    flip_bit(&p, lsns[3] - seg.base + 12, 0)?;
    let (log, report) = Log::open(copy.path(), small(), lsns[40])?;
    assert_eq!(report.frames_scanned, 20);
    assert_eq!(report.end, end);
    // ...but reading it still checks.
    expect_corruption(log.read(lsns[3]), &p, lsns[3] - seg.base)?;
    assert!(is_record(&log.read(lsns[40])?, 40));
    drop(log);
    // From scratch the damage is found.
    expect_corruption(Log::open(copy.path(), small(), 0), &p, lsns[3] - seg.base)?;

    // A checkpoint at a segment boundary (the end of a full segment).
    let b = segs.get(3).ok_or("few segments")?.base;
    let (_, report) = Log::open(tmp.path(), small(), b)?;
    assert_eq!(report.end, end);
    let after = lsns.iter().filter(|&&l| l > b).count() as u64;
    assert_eq!(report.frames_scanned, after);

    // A checkpoint at the end scans nothing; past it is corruption.
    let (_, report) = Log::open(tmp.path(), small(), end)?;
    assert_eq!((report.frames_scanned, report.end), (0, end));
    let last = segs.last().ok_or("none")?;
    let last_name = last.path.file_name().ok_or("no name")?;
    expect_corruption(
        Log::open(tmp.path(), small(), end + 10),
        &tmp.path().join(last_name),
        end + 10 - last.base,
    )?;
    // Inside a header: not a frame boundary.
    assert!(matches!(
        Log::open(tmp.path(), small(), b + 3),
        Err(Error::InvalidInput { .. })
    ));
    // A checkpoint the lost tail used to cover.
    let copy = copy_dir(tmp.path())?;
    let p = copy.path().join(last_name);
    let f = fs::OpenOptions::new().write(true).open(&p)?;
    f.set_len(f.metadata()?.len() - 3)?;
    drop(f);
    expect_corruption(Log::open(copy.path(), small(), end), &p, end - last.base)?;
    // An empty directory with a checkpoint lost everything.
    let empty = tempfile::tempdir()?;
    assert!(matches!(
        Log::open(empty.path(), small(), 1000),
        Err(Error::Corruption { .. })
    ));
    Ok(())
}

#[test]
fn a_scan_after_open_checks_what_recovery_did_not() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), small(), 60)?;
    // Damage a frame before the checkpoint the open starts from.
    let segs = {
        let (log, _) = Log::open(tmp.path(), small(), 0)?;
        log.segments()
    };
    let seg = seg_of(&segs, lsns[3]).ok_or("none")?;
    let p = tmp.path().join(seg.path.file_name().ok_or("no name")?);
    flip_bit(&p, lsns[3] - seg.base + 12, 0)?;
    let (log, report) = Log::open(tmp.path(), small(), lsns[40])?;
    assert_eq!(report.frames_scanned, 20);
    // The frames recovery checked read as `scan` reads them.
    let checked: Vec<(Lsn, FrameBuf)> =
        log.scan_checked_at_open(lsns[40]).collect::<Result<_>>()?;
    assert_eq!(checked.len(), 20);
    for ((lsn, f), (i, want)) in checked.iter().zip((40u32..).zip(&lsns[40..])) {
        assert_eq!(lsn, want);
        assert!(is_record(f, i));
    }
    // A frame before them is checked, and its damage found.
    let before = log
        .scan_checked_at_open(0)
        .find_map(Result::err)
        .ok_or("the damaged frame was not found")?;
    expect_corruption::<()>(Err(before), &p, lsns[3] - seg.base)?;
    // So is a frame appended since the open.
    let new = append_records(&log, 60, 61)?;
    log.sync(log.end())?;
    let segs = log.segments();
    let last = seg_of(&segs, new[0]).ok_or("none")?;
    assert!(!last.sealed);
    flip_bit(&last.path, new[0] - last.base + 12, 0)?;
    let after = log
        .scan_checked_at_open(lsns[40])
        .find_map(Result::err)
        .ok_or("the damaged new frame was not found")?;
    expect_corruption::<()>(Err(after), &last.path, new[0] - last.base)?;
    Ok(())
}

#[test]
fn failed_roll_poisons_and_rolls_back() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let lsns = append_records(&log, 0, 20)?;
    // Fill the active segment so the next append rolls, then block the roll
    // by occupying the next segment's file name.
    while log.segments().last().is_some_and(|s| s.len < 256) {
        log.append(&[FrameRef {
            tag: 1,
            payload: b"fill",
        }])?;
    }
    let end = log.end();
    let blocker = tmp.path().join(format!("{end:020}.seg"));
    fs::write(&blocker, b"")?;
    let r = log.append(&[FrameRef {
        tag: 1,
        payload: b"rolls",
    }]);
    // The failure poisons the log and is reported as its cause.
    match &r {
        Err(Error::Poisoned { cause: Some(c) }) => {
            assert!(matches!(c.as_ref(), Error::Io { .. }), "{r:?}");
        }
        other => panic!("expected Poisoned with an I/O cause, got {other:?}"),
    }
    assert!(log.is_poisoned());
    assert_eq!(log.end(), end);
    assert!(matches!(
        log.append(&[FrameRef {
            tag: 1,
            payload: b"x"
        }]),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(log.sync(end), Err(Error::Poisoned { .. })));
    // Reads still work.
    assert!(is_record(&log.read(lsns[7])?, 7));
    assert_eq!(
        fs::metadata(&log.segments().last().ok_or("none")?.path)?.len(),
        end - log.segments().last().map_or(0, |s| s.base)
    );
    drop(log);
    // The blocker is an empty last segment: reopening repairs it.
    let (log, report) = Log::open(tmp.path(), small(), 0)?;
    assert_eq!(report.end, end + 32);
    let l = log.append(&[FrameRef {
        tag: 1,
        payload: b"again",
    }])?;
    assert_eq!(l, vec![end + 32]);
    Ok(())
}

#[test]
fn group_commit_from_many_threads() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let log = Arc::new(log);
    let threads = 4u32;
    let per = 150u32;
    let mut handles = Vec::new();
    for t in 0..threads {
        let log = Arc::clone(&log);
        handles.push(thread::spawn(move || -> Result<Vec<(u32, Lsn)>> {
            let mut mine = Vec::new();
            for j in 0..per {
                let i = t * per + j;
                let p = payload(i);
                let l = log.append(&[FrameRef {
                    tag: tag(i),
                    payload: &p,
                }])?;
                let lsn = l.first().copied().unwrap_or(0);
                let upto = lsn + 9 + p.len() as u64;
                log.sync(upto)?;
                if log.synced() < upto {
                    return Err(Error::invalid("synced() did not advance"));
                }
                mine.push((i, lsn));
            }
            Ok(mine)
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().map_err(|_| "thread panicked")??);
    }
    assert_eq!(all.len(), (threads * per) as usize);
    for &(i, lsn) in &all {
        assert!(is_record(&log.read(lsn)?, i));
    }
    assert_eq!(scan_all(&log, 0)?.len(), all.len());
    log.sync(log.end())?;
    assert_eq!(log.synced(), log.end());
    Ok(())
}

#[test]
fn readers_never_see_partial_frames() -> TestResult {
    readers_never_see_partial_frames_with(LogOptions {
        segment_bytes: 4096,
        max_frame_bytes: 4096,
        ..LogOptions::default()
    })
}

/// With direct writes, every append rewrites the block holding the end
/// while readers read the frames before it through the page cache.
#[test]
fn readers_never_see_partial_frames_with_direct_writes() -> TestResult {
    readers_never_see_partial_frames_with(LogOptions {
        segment_bytes: 64 << 10,
        max_frame_bytes: 4096,
        direct_writes: Some(0),
    })
}

fn readers_never_see_partial_frames_with(opts: LogOptions) -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, _) = Log::open(tmp.path(), opts, 0)?;
    let log = Arc::new(log);
    let done = Arc::new(AtomicBool::new(false));
    let total = 3000u32;
    let writer = {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        thread::spawn(move || -> Result<()> {
            let r = append_records(&log, 0, total);
            done.store(true, Ordering::Release);
            r.map(|_| ())
        })
    };
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        readers.push(thread::spawn(
            move || -> std::result::Result<u64, String> {
                let mut rounds = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let mut n = 0u32;
                    let mut last = None;
                    for item in log.scan(0) {
                        let (lsn, f) = item.map_err(|e| e.to_string())?;
                        if !is_record(&f, n) {
                            return Err(format!("bad record {n} at {lsn}"));
                        }
                        last = Some((lsn, n));
                        n += 1;
                    }
                    // Point reads of the newest frame seen race the writer too.
                    if let Some((lsn, i)) = last {
                        let f = log.read(lsn).map_err(|e| e.to_string())?;
                        if !is_record(&f, i) {
                            return Err(format!("bad point read {i}"));
                        }
                    }
                    rounds += 1;
                    if finished {
                        if n != total {
                            return Err(format!("saw {n} of {total} records"));
                        }
                        return Ok(rounds);
                    }
                }
            },
        ));
    }
    writer.join().map_err(|_| "writer panicked")??;
    for r in readers {
        r.join().map_err(|_| "reader panicked")??;
    }
    check_log(
        &log,
        &scan_all(&log, 0)?
            .iter()
            .map(|(l, _)| *l)
            .collect::<Vec<_>>(),
    )?;
    Ok(())
}

#[test]
fn frames_from_sealed_segments_outlive_the_log() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let lsns = build(tmp.path(), small(), 30)?;
    let (log, _) = Log::open(tmp.path(), small(), 0)?;
    let f = log.read(lsns[0])?;
    let path: PathBuf = log
        .segments()
        .first()
        .map(|s| s.path.clone())
        .ok_or("none")?;
    drop(log);
    // The mapping stays valid through the frame even after the file is gone.
    fs::remove_file(path)?;
    assert!(is_record(&f, 0));
    Ok(())
}

/// Rough throughput figures, not a benchmark (the crate's criterion benches
/// cover the store). Run with
/// `cargo test --release --lib log::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "timing, run by hand"]
fn throughput() -> TestResult {
    use std::time::Instant;
    let tmp = tempfile::tempdir()?;
    let span = vec![0x5Au8; 500];
    for (label, sync) in [("no sync", false), ("sync per batch", true)] {
        let dir = tmp.path().join(label.replace(' ', "_"));
        let (log, _) = Log::open(&dir, LogOptions::default(), 0)?;
        let batches = 2000;
        let frames: Vec<FrameRef<'_>> = (0..512)
            .map(|_| FrameRef {
                tag: 1,
                payload: &span,
            })
            .collect();
        let t = Instant::now();
        for _ in 0..batches {
            log.append(&frames)?;
            if sync {
                log.sync(log.end())?;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let n = f64::from(batches * 512);
        println!(
            "append {label}: {:.2} M frames/s, {:.0} MB/s ({} segments)",
            n / secs / 1e6,
            (log.end() as f64) / secs / 1e6,
            log.segments().len()
        );
        let t = Instant::now();
        let mut count = 0u64;
        for item in log.scan(0) {
            let (_, f) = item?;
            count += f.payload().len() as u64;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "scan (sealed mmap + active pread): {:.2} M frames/s ({count} payload bytes)",
            n / secs / 1e6
        );
        drop(log);
        let t = Instant::now();
        let (_, report) = Log::open(&dir, LogOptions::default(), 0)?;
        println!(
            "reopen, checking {} frames: {:.0} ms",
            report.frames_scanned,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Every segment file of a log directory with its bytes, by file name.
fn segment_bytes(dir: &Path) -> std::io::Result<Vec<(std::ffi::OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        out.push((e.file_name(), fs::read(e.path())?));
    }
    out.sort();
    Ok(out)
}

/// A payload of `n` bytes, distinct per `seed`, with no zero byte.
fn sized_payload(seed: u32, n: usize) -> Vec<u8> {
    (0..n)
        .map(|k| (k as u32).wrapping_mul(131).wrapping_add(seed * 7) as u8 | 1)
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(32),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Direct writes leave files byte for byte equal to writes through the
    /// page cache after every append (no padding, nothing rewritten
    /// differently), across partial blocks, whole blocks, write chunks
    /// larger than `WRITE_CHUNK`, appends of 1 MiB and more (written by the
    /// writer thread, several buffers each) and segment rolls inside them;
    /// and read back the same.
    #[test]
    fn direct_writes_leave_the_same_files(
        batches in proptest::collection::vec(
            proptest::collection::vec(
                proptest::prop_oneof![
                    8 => 0usize..600,
                    3 => 3000usize..9000,
                    1 => (WRITE_CHUNK / 2)..(WRITE_CHUNK + 5000),
                ],
                1..6,
            ),
            1..8,
        ),
        segment_kib in 8u64..64,
    ) {
        let run = || -> TestResult {
            let (plain_dir, direct_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
            let opts = |direct_writes| LogOptions {
                segment_bytes: segment_kib << 10,
                max_frame_bytes: 16 << 20,
                direct_writes,
            };
            // Appends of 16 KiB or more write directly, smaller ones
            // through the page cache: both, and the switches between them.
            let direct_opts = opts(Some(16 << 10));
            let (plain, _) = Log::open(plain_dir.path(), opts(None), 0)?;
            let (direct, _) = Log::open(direct_dir.path(), direct_opts, 0)?;
            let mut seed = 0u32;
            let mut written = Vec::new();
            for sizes in &batches {
                let payloads: Vec<Vec<u8>> = sizes
                    .iter()
                    .map(|&n| {
                        seed += 1;
                        sized_payload(seed, n)
                    })
                    .collect();
                let frames: Vec<FrameRef<'_>> = payloads
                    .iter()
                    .map(|p| FrameRef { tag: 7, payload: p })
                    .collect();
                let a = plain.append(&frames)?;
                let b = direct.append(&frames)?;
                assert_eq!(a, b);
                assert_eq!(
                    segment_bytes(plain_dir.path())?,
                    segment_bytes(direct_dir.path())?,
                    "files differ after an append of {sizes:?}"
                );
                written.extend(a.into_iter().zip(payloads));
            }
            direct.sync(direct.end())?;
            for (lsn, p) in &written {
                assert_eq!(direct.read(*lsn)?.payload(), p.as_slice());
            }
            drop(direct);
            let (reopened, report) = Log::open(direct_dir.path(), direct_opts, 0)?;
            assert_eq!(report.truncated_bytes, 0);
            let scanned = scan_all(&reopened, 0)?;
            assert_eq!(scanned.len(), written.len());
            for ((lsn, f), (want_lsn, p)) in scanned.iter().zip(&written) {
                assert_eq!((lsn, f.payload()), (want_lsn, p.as_slice()));
            }
            Ok(())
        };
        if let Err(e) = run() {
            panic!("{e}");
        }
    }

    /// `read_many` returns what `read` returns for each LSN, in the order
    /// asked, repeats included: frames near each other, far apart, larger
    /// than one read of a run (`READ_RUN_MAX`) or than its tail
    /// (`READ_RUN_TAIL`), in sealed segments and in the active one (one
    /// segment for everything, or small ones that roll).
    #[test]
    fn read_many_reads_what_read_reads(
        sizes in proptest::collection::vec(
            proptest::prop_oneof![
                8 => 0usize..700,
                2 => 5_000usize..20_000,
                1 => 250_000usize..300_000,
            ],
            1..60,
        ),
        picks in proptest::collection::vec(proptest::prelude::any::<proptest::sample::Index>(), 0..80),
        one_segment in proptest::prelude::any::<bool>(),
    ) {
        let run = || -> TestResult {
            let dir = tempfile::tempdir()?;
            let opts = LogOptions {
                segment_bytes: if one_segment { 1 << 30 } else { 64 << 10 },
                max_frame_bytes: 1 << 20,
                ..LogOptions::default()
            };
            let (log, _) = Log::open(dir.path(), opts, 0)?;
            let payloads: Vec<Vec<u8>> = sizes
                .iter()
                .zip(0u32..)
                .map(|(&n, seed)| sized_payload(seed, n))
                .collect();
            let mut lsns = Vec::new();
            for chunk in payloads.chunks(5) {
                let frames: Vec<FrameRef<'_>> = chunk
                    .iter()
                    .map(|p| FrameRef { tag: 9, payload: p })
                    .collect();
                lsns.extend(log.append(&frames)?);
            }
            let asked: Vec<Lsn> = picks.iter().map(|i| lsns[i.index(lsns.len())]).collect();
            let got = log.read_many(&asked)?;
            assert_eq!(got.len(), asked.len());
            for (f, &lsn) in got.iter().zip(&asked) {
                let want = log.read(lsn)?;
                assert_eq!((f.tag(), f.payload()), (want.tag(), want.payload()), "LSN {lsn}");
            }
            // `visit_many` hands out the same frames, each index once, in
            // log order (its read buffer is the thread's, left by the calls
            // and cases before: bytes of other logs' files).
            let mut visited: Vec<(usize, u8, Vec<u8>)> = Vec::new();
            log.visit_many(&asked, |i, tag, payload| {
                visited.push((i, tag, payload.to_vec()));
                Ok(())
            })?;
            let mut seen: Vec<usize> = visited.iter().map(|v| v.0).collect();
            assert!(visited.windows(2).all(|w| (asked[w[0].0], w[0].0) < (asked[w[1].0], w[1].0)));
            seen.sort_unstable();
            assert_eq!(seen, (0..asked.len()).collect::<Vec<_>>());
            for (i, tag, payload) in &visited {
                let want = &got[*i];
                assert_eq!((*tag, payload.as_slice()), (want.tag(), want.payload()), "index {i}");
            }
            // Every frame at once, backwards.
            let all: Vec<Lsn> = lsns.iter().rev().copied().collect();
            let got = log.read_many(&all)?;
            for (f, lsn) in got.iter().zip(&all) {
                let i = lsns.iter().position(|l| l == lsn).ok_or("no such LSN")?;
                assert_eq!(f.payload(), payloads[i].as_slice(), "LSN {lsn}");
            }
            Ok(())
        };
        if let Err(e) = run() {
            panic!("{e}");
        }
    }
}

/// `read_many` fails as `read` does: on an LSN outside the log, on one
/// that is not a frame boundary, and on a damaged frame of the active
/// segment, even when the frames around it are read in the same run.
#[test]
fn read_many_fails_where_read_fails() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (log, _) = Log::open(dir.path(), single(), 0)?;
    let lsns = append_records(&log, 0, 40)?;
    log.sync(log.end())?;
    assert!(matches!(
        log.read_many(&[lsns[3], log.end()]),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        log.read_many(&[lsns[3], lsns[4] + 1, lsns[5]]),
        Err(Error::Corruption { .. })
    ));
    // `visit_many` fails where `read_many` fails, with the same error.
    let visit_error = |asked: &[Lsn]| -> Option<String> {
        log.visit_many(asked, |_, _, _| Ok(()))
            .err()
            .map(|e| e.to_string())
    };
    let read_error = |asked: &[Lsn]| log.read_many(asked).err().map(|e| e.to_string());
    let bad_sets: [Vec<Lsn>; 2] = [
        vec![lsns[3], log.end()],
        vec![lsns[3], lsns[4] + 1, lsns[5]],
    ];
    for asked in &bad_sets {
        assert!(read_error(asked).is_some());
        assert_eq!(visit_error(asked), read_error(asked));
    }
    // An error of the visitor stops the walk and is returned as it is.
    let mut calls = 0;
    let stopped = log.visit_many(&[lsns[5], lsns[6], lsns[7]], |_, _, _| {
        calls += 1;
        Err(Error::invalid("stop"))
    });
    assert_eq!(calls, 1);
    assert_eq!(
        stopped.err().map(|e| e.to_string()),
        Some(Error::invalid("stop").to_string())
    );
    let segs = log.segments();
    let seg = seg_of(&segs, lsns[20]).ok_or("no segment")?;
    assert!(!seg.sealed);
    // One bit of record 20's payload.
    let offset = lsns[20] - seg.base;
    flip_bit(&seg.path, offset + FRAME_HEADER_LEN + 2, 1)?;
    expect_corruption(log.read(lsns[20]), &seg.path, offset)?;
    expect_corruption(
        log.read_many(&[lsns[19], lsns[20], lsns[21]]),
        &seg.path,
        offset,
    )?;
    expect_corruption(
        log.read_many(&[lsns[30], lsns[20], lsns[2]]),
        &seg.path,
        offset,
    )?;
    for asked in [
        [lsns[19], lsns[20], lsns[21]],
        [lsns[30], lsns[20], lsns[2]],
    ] {
        let mut visited = Vec::new();
        let got = log.visit_many(&asked, |i, _, _| {
            visited.push(i);
            Ok(())
        });
        expect_corruption(got, &seg.path, offset)?;
        // The frames before it in log order were handed out, no others.
        assert_eq!(visited.len(), 1);
    }
    // The frames around it still read.
    let around = log.read_many(&[lsns[21], lsns[19]])?;
    assert!(is_record(&around[0], 21) && is_record(&around[1], 19));
    Ok(())
}

/// A frame source whose frame `bad` is one byte shorter than announced.
struct Lying {
    payloads: Vec<Vec<u8>>,
    bad: usize,
}

impl FrameSource for Lying {
    fn count(&self) -> usize {
        self.payloads.len()
    }
    fn payload_len(&self, i: usize) -> usize {
        self.payloads.get(i).map_or(0, Vec::len)
    }
    fn frame(&mut self, i: usize) -> FrameRef<'_> {
        let p = self.payloads.get(i).map_or(&[][..], Vec::as_slice);
        let p = if i == self.bad {
            p.get(1..).unwrap_or(&[])
        } else {
            p
        };
        FrameRef { tag: 7, payload: p }
    }
}

/// `append_from` with a frame not of its announced length, as the first,
/// a middle or the last frame of an append that is written through the
/// page cache, directly, or directly by the writer thread (8 MiB, several
/// buffers already written when the bad frame comes): the append fails,
/// the log is poisoned, nothing of the append is visible, and a reopen
/// finds exactly the frames appended before it.
#[test]
fn a_frame_of_the_wrong_length_fails_the_append_and_loses_nothing() -> TestResult {
    for direct in [None, Some(0)] {
        for (frames, size) in [(3usize, 100usize), (8, 1 << 20)] {
            for bad in [0, frames / 2, frames - 1] {
                let what = format!("direct {direct:?}, {frames} frames of {size}, bad {bad}");
                let opts = LogOptions {
                    segment_bytes: 64 << 20,
                    max_frame_bytes: 2 << 20,
                    direct_writes: direct,
                };
                let tmp = tempfile::tempdir()?;
                let (log, _) = Log::open(tmp.path(), opts, 0)?;
                let before = append_records(&log, 0, 10)?;
                let end = log.end();
                let mut src = Lying {
                    payloads: (0..frames).map(|i| sized_payload(i as u32, size)).collect(),
                    bad,
                };
                let r = log.append_from(&mut src);
                assert!(matches!(r, Err(Error::Poisoned { .. })), "{what}: {r:?}");
                assert_eq!(log.end(), end, "{what}");
                assert_eq!(scan_all(&log, 0)?.len(), 10, "{what}");
                drop(log);
                let (log, _) = Log::open(tmp.path(), opts, 0)?;
                assert_eq!(log.end(), end, "{what}");
                let found = scan_all(&log, 0)?;
                assert_eq!(found.len(), 10, "{what}");
                for (i, ((lsn, f), want)) in found.iter().zip(&before).enumerate() {
                    assert_eq!(lsn, want, "{what}");
                    assert!(is_record(f, i as u32), "{what}: record {i}");
                }
            }
        }
    }
    Ok(())
}

/// Opens the log in `dir` on the simulated disk `sim`.
fn open_sim(
    sim: &crate::fs::sim::SimFileSystem,
    dir: &Path,
    opts: LogOptions,
    scan_from: Lsn,
) -> Result<(Log, RecoveryReport)> {
    Log::open_on(Arc::new(sim.clone()), dir, opts, scan_from)
}

/// The records a log holds, all of them read back as written.
fn records_held(log: &Log) -> std::result::Result<usize, String> {
    let found = scan_all(log, 0).map_err(|e| e.to_string())?;
    for (i, (_, f)) in found.iter().enumerate() {
        if !is_record(f, i as u32) {
            return Err(format!("frame {i} is not record {i}"));
        }
    }
    Ok(found.len())
}

/// A failed fsync leaves frames the page cache shows but the disk never
/// gets (the simulated disk drops them, as Linux does). The log marks
/// where its durability ended; the next open writes the rest again and
/// syncs it, so a power loss afterwards keeps it. Without the mark (removed
/// here by hand) the same power loss takes it.
#[test]
fn a_failed_fsync_marks_the_log_and_the_next_open_writes_the_rest_again() -> TestResult {
    use crate::fs::sim::{Fault, FaultError, Op, Ops, SimFileSystem, Survival};
    for keep_mark in [true, false] {
        for opts in [single(), small()] {
            let what = format!(
                "keep_mark {keep_mark}, segment_bytes {}",
                opts.segment_bytes
            );
            let tmp = tempfile::tempdir()?;
            let sim = SimFileSystem::new();
            let (log, _) = open_sim(&sim, tmp.path(), opts, 0)?;
            let mut lsns = append_records(&log, 0, 10)?;
            log.sync(log.end())?;
            lsns.extend(append_records(&log, 10, 20)?);
            // The syncs of full segments, sealed since, count too.
            let durable = log.synced();
            let end = log.end();
            assert!(durable < end, "{what}");
            sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io));
            let failed = log.sync(end);
            assert!(
                matches!(failed, Err(Error::Poisoned { .. })),
                "{what}: {failed:?}"
            );
            assert_eq!(
                unsynced::read(&sim, tmp.path())?,
                unsynced::Mark::DurableTo(durable),
                "{what}"
            );
            drop(log);
            if !keep_mark {
                sim.remove_file(&tmp.path().join(unsynced::MARK_FILE))?;
            }
            // The next open (the program restarted, the machine did not).
            let (log, report) = open_sim(&sim, tmp.path(), opts, 0)?;
            assert_eq!(records_held(&log)?, 20, "{what}");
            assert_eq!(
                unsynced::read(&sim, tmp.path())?,
                unsynced::Mark::Absent,
                "{what}"
            );
            if keep_mark {
                // Every byte past the mark but the segments' headers.
                let headers = log.segments().iter().filter(|s| s.base >= durable).count() as u64;
                assert_eq!(
                    report.rewritten_bytes,
                    end - durable - headers * SEGMENT_HEADER_LEN,
                    "{what}"
                );
            } else {
                assert_eq!(report.rewritten_bytes, 0, "{what}");
            }
            drop(log);
            sim.power_loss(&mut |_, _| Survival::Nothing)?;
            let (log, _) = Log::open(tmp.path(), opts, 0)?;
            // Without the mark only what lies below the durable point
            // (in segments sealed, and synced, before the failure) is kept.
            let want = if keep_mark {
                20
            } else {
                let below = lsns.iter().filter(|&&lsn| lsn < durable).count();
                assert!(below < 20, "{what}");
                below
            };
            assert_eq!(records_held(&log)?, want, "{what}");
        }
    }
    Ok(())
}

/// An fsync that fails while recovery makes what it read durable leaves
/// the mark at the checkpoint; the next open writes everything past it
/// again.
#[test]
fn a_failed_fsync_during_recovery_marks_the_log_from_the_checkpoint() -> TestResult {
    use crate::fs::sim::{Fault, FaultError, Op, Ops, SimFileSystem, Survival};
    let tmp = tempfile::tempdir()?;
    let sim = SimFileSystem::new();
    let (log, _) = open_sim(&sim, tmp.path(), single(), 0)?;
    append_records(&log, 0, 10)?;
    let checkpoint = log.end();
    log.sync(checkpoint)?;
    append_records(&log, 10, 20)?;
    let end = log.end();
    drop(log); // a process crash: the last ten only in the page cache
    sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io));
    let failed = open_sim(&sim, tmp.path(), single(), checkpoint);
    assert!(
        matches!(failed, Err(Error::Io { .. })),
        "{:?}",
        failed.map(|_| ())
    );
    assert_eq!(
        unsynced::read(&sim, tmp.path())?,
        unsynced::Mark::DurableTo(checkpoint)
    );
    let (log, report) = open_sim(&sim, tmp.path(), single(), checkpoint)?;
    assert_eq!(report.rewritten_bytes, end - checkpoint);
    drop(log);
    sim.power_loss(&mut |_, _| Survival::Nothing)?;
    let (log, _) = Log::open(tmp.path(), single(), checkpoint)?;
    assert_eq!(records_held(&log)?, 20);
    Ok(())
}

/// A mark that does not read back (cut as it was written) says nothing
/// about where durability ended: the open writes everything past the
/// checkpoint again. A mark with an earlier LSN than a new failure's is
/// kept.
#[test]
fn an_unreadable_mark_rewrites_from_the_checkpoint_and_the_earliest_mark_wins() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let (log, _) = Log::open(tmp.path(), single(), 0)?;
    let lsns = append_records(&log, 0, 30)?;
    let end = log.end();
    drop(log);
    let fs = OsFileSystem;
    unsynced::mark(&fs, tmp.path(), 500)?;
    unsynced::mark(&fs, tmp.path(), 900)?;
    assert_eq!(
        unsynced::read(&fs, tmp.path())?,
        unsynced::Mark::DurableTo(500)
    );
    let (log, report) = Log::open(tmp.path(), single(), 0)?;
    assert_eq!(report.rewritten_bytes, end - 500);
    drop(log);
    let checkpoint = lsns[10];
    for garbage in [&b""[..], b"SSUNSYN1", &[7u8; 20]] {
        for scan_from in [0, checkpoint] {
            fs::write(tmp.path().join(unsynced::MARK_FILE), garbage)?;
            assert_eq!(unsynced::read(&fs, tmp.path())?, unsynced::Mark::Unreadable);
            let (log, report) = Log::open(tmp.path(), single(), scan_from)?;
            let from = scan_from.max(SEGMENT_HEADER_LEN);
            assert_eq!(
                report.rewritten_bytes,
                end - from,
                "{garbage:?} {scan_from}"
            );
            assert_eq!(records_held(&log)?, 30);
            assert_eq!(unsynced::read(&fs, tmp.path())?, unsynced::Mark::Absent);
        }
    }
    Ok(())
}

/// A window whose read fails holds nothing: a later read of bytes the
/// failed read had covered reads the file, where the old window, whose
/// buffer was zero-filled before the read, handed out those zeros as the
/// file's bytes.
#[test]
fn a_failed_read_leaves_the_window_empty() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("short.seg");
    fs::write(&path, [0xab_u8; 100])?;
    let file = file::SegmentFile::open_ro(&crate::fs::OsFileSystem, &path)?;
    let mut win = segment::Window::default();
    // 200 bytes claimed, 100 on disk: the read fails.
    assert!(win.get(&file, &path, 0, 10, 200).is_err());
    // Bytes within the failed read's 200: read from the file.
    assert_eq!(win.get(&file, &path, 0, 10, 100)?, &[0xab_u8; 10]);
    assert_eq!(win.get(&file, &path, 90, 10, 100)?, &[0xab_u8; 10]);
    Ok(())
}

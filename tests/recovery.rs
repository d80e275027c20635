//! Recovery: torn log tails, flipped bits, lost indexes.
//!
//! A crash is simulated by copying a live store's directory (every append
//! has been written to the OS, and redb's last durable commit is what its
//! file says), then damaging the copy and opening it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Gate, GatedSync, copy_dir};

use std::fs;
use std::path::{Path, PathBuf};

use span_sessions::{
    Durability, ErrorKind, ResourceSpans, SessionQuery, SessionSort, SessionStore, Span, SpanId,
    TraceId,
};

fn only_segment(dir: &Path) -> PathBuf {
    let mut segs = common::segments(dir);
    assert_eq!(segs.len(), 1, "test expects one segment: {segs:?}");
    segs.remove(0)
}

/// Turn `i` of session `s{i % 2}`: a single root span with input and output.
fn turn(i: u8) -> Vec<ResourceSpans> {
    let span = Span::new(
        TraceId([i + 1; 16]),
        SpanId([1; 8]),
        None,
        "agent",
        1_000 * u64::from(i),
        1_000 * u64::from(i) + 500,
    )
    .with_attribute("session.id", format!("s{}", i % 2))
    .with_attribute("input.value", format!("question {i}"))
    .with_attribute("output.value", format!("answer {i}"));
    vec![ResourceSpans::for_project("p", vec![span])]
}

fn options() -> span_sessions::StoreOptions {
    SessionStore::options()
        .durability(Durability::Buffered)
        .checkpoint_bytes(u64::MAX)
}

/// What a store answers, for comparisons.
fn answers(store: &SessionStore) -> String {
    let mut out = String::new();
    for p in store.projects().unwrap() {
        for sort in [SessionSort::StartTime, SessionSort::NumTraces] {
            let q = SessionQuery {
                sort,
                limit: 1000,
                ..SessionQuery::default()
            };
            out += &format!("{:?}\n", store.sessions(&p, &q).unwrap().items);
        }
        let all = SessionQuery {
            limit: 100_000,
            ..SessionQuery::default()
        };
        for s in store.sessions(&p, &all).unwrap().items {
            out += &format!("{:?}\n", store.session_history(&p, &s.session_id).unwrap());
        }
    }
    out
}

/// Builds a store with `durable` checkpointed turns and `pending` turns
/// after the checkpoint; returns the live store's dir and the log size
/// after each append (index i: size after turn i).
fn crashed_store(durable: u8, pending: u8) -> (tempfile::TempDir, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let store = options().open(dir.path()).unwrap();
    let seg = only_segment(dir.path());
    let mut sizes = Vec::new();
    for i in 0..durable + pending {
        assert_eq!(store.append(&turn(i)).unwrap().accepted, 1);
        if i + 1 == durable {
            store.sync().unwrap();
        }
        sizes.push(fs::metadata(&seg).unwrap().len());
    }
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), snapshot.path());
    drop(store);
    (snapshot, sizes)
}

#[test]
fn torn_tail_at_every_byte_reopens_to_the_complete_prefix() {
    let (durable, pending) = (3u8, 3u8);
    let (snapshot, sizes) = crashed_store(durable, pending);
    let first_cut = sizes[usize::from(durable + pending) - 3];
    let last = *sizes.last().unwrap();
    for cut in first_cut..=last {
        let work = tempfile::tempdir().unwrap();
        copy_dir(snapshot.path(), work.path());
        let seg = only_segment(work.path());
        fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let store = options()
            .open(work.path())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = sizes.iter().filter(|&&s| s <= cut).count();
        let traces: u64 = ["s0", "s1"]
            .iter()
            .map(|s| store.session("p", s).unwrap().map_or(0, |x| x.num_traces))
            .sum();
        assert_eq!(traces, complete as u64, "cut at {cut}");
        for i in 0..durable + pending {
            let present = store.trace(TraceId([i + 1; 16])).unwrap().is_some();
            assert_eq!(present, usize::from(i) < complete, "turn {i}, cut at {cut}");
        }
        // The store takes appends after recovery, and they survive a reopen.
        store.append(&turn(100)).unwrap();
        drop(store);
        let store = options().open(work.path()).unwrap();
        assert!(store.trace(TraceId([101; 16])).unwrap().is_some());
    }
}

#[test]
fn flipped_bit_after_the_checkpoint_stops_the_open_and_names_the_frame() {
    let (snapshot, sizes) = crashed_store(2, 3);
    // A byte inside the payload of turn 3 (not the last frame).
    let frame_start = sizes[2];
    let target = frame_start + 12;
    let seg = only_segment(snapshot.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[usize::try_from(target).unwrap()] ^= 0x10;
    fs::write(&seg, &bytes).unwrap();
    let err = match options().open(snapshot.path()) {
        Ok(_) => panic!("a corrupted frame must stop the open"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    let msg = err.to_string();
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(msg.contains(&name), "{msg}");
    assert!(msg.contains(&format!("offset {frame_start}")), "{msg}");
}

#[test]
fn flipped_bit_before_the_checkpoint_is_reported_when_read() {
    let (snapshot, sizes) = crashed_store(3, 0);
    // Damage turn 1's frame, which a durable checkpoint covers.
    let target = sizes[0] + 12;
    let seg = only_segment(snapshot.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[usize::try_from(target).unwrap()] ^= 0x01;
    fs::write(&seg, &bytes).unwrap();
    let store = options().open(snapshot.path()).unwrap();
    let err = store.trace(TraceId([2; 16])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    // Undamaged spans still read.
    assert!(store.trace(TraceId([1; 16])).unwrap().is_some());
    // A rebuild refuses to silently drop the frame.
    assert_eq!(
        store.rebuild_indexes().unwrap_err().kind(),
        ErrorKind::Corrupted
    );
}

#[test]
fn deleted_index_is_rebuilt_from_the_log_with_identical_answers() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::options()
        .segment_bytes(4096)
        .open(dir.path())
        .unwrap();
    for b in span_sessions::workload::Workload::new(Default::default()).batches(50) {
        store.append(&b).unwrap();
    }
    let before = answers(&store);
    assert!(before.len() > 1000);
    drop(store);
    fs::remove_file(dir.path().join("index.redb")).unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    assert_eq!(answers(&store), before);
    store.rebuild_indexes().unwrap();
    assert_eq!(answers(&store), before);
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    let err = match SessionStore::open(dir.path()) {
        Ok(_) => panic!("second open must fail"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::Locked);
    // Another process gets a clear error too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_span-sessions"))
        .arg("--store")
        .arg(dir.path())
        .arg("projects")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already open"), "{stderr}");
    drop(store);
    assert!(SessionStore::open(dir.path()).is_ok());
}

#[test]
fn verify_passes_on_a_sound_store_and_reports_damage() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::options()
        .segment_bytes(8192)
        .open(dir.path())
        .unwrap();
    // Appended in batches of 37; verify replays the log in larger chunks,
    // so sessions are numbered differently and compared by name.
    for b in span_sessions::workload::Workload::new(Default::default()).batches(37) {
        store.append(&b).unwrap();
    }
    let report = store.verify().unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.frames > 100);
    let stats = store.stats().unwrap();
    assert_eq!(stats.spans, report.frames);
    assert!(stats.segments.len() > 1);
    assert_eq!(stats.log_bytes, report.log_bytes);
    drop(store);

    // Reopened (index replayed from the checkpoint) and rebuilt: still sound.
    let store = SessionStore::options()
        .segment_bytes(8192)
        .open(dir.path())
        .unwrap();
    store.rebuild_indexes().unwrap();
    assert!(store.verify().unwrap().is_ok());
    drop(store);

    // Remove one turn behind the store's back: verify names the table.
    {
        const TURNS: redb::TableDefinition<[u8; 32], &[u8]> = redb::TableDefinition::new("turns");
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(TURNS).unwrap();
            let first = {
                use redb::ReadableTable;
                let (k, _) = t.first().unwrap().unwrap();
                k.value()
            };
            t.remove(first).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = SessionStore::options()
        .segment_bytes(8192)
        .open(dir.path())
        .unwrap();
    let report = store.verify().unwrap();
    assert!(
        report.problems.iter().any(|p| p.starts_with("turns:")),
        "{:?}",
        report.problems
    );
    // The index is derived: a rebuild repairs it.
    store.rebuild_indexes().unwrap();
    assert!(store.verify().unwrap().is_ok());
}

#[test]
fn verify_reports_a_damaged_frame() {
    let (snapshot, sizes) = crashed_store(3, 0);
    let seg = only_segment(snapshot.path());
    let mut bytes = fs::read(&seg).unwrap();
    bytes[usize::try_from(sizes[0] + 12).unwrap()] ^= 0x04;
    fs::write(&seg, &bytes).unwrap();
    let store = options().open(snapshot.path()).unwrap();
    let report = store.verify().unwrap();
    assert!(!report.is_ok());
    let name = seg.file_name().unwrap().to_string_lossy().to_string();
    assert!(report.problems[0].contains(&name), "{:?}", report.problems);
}

/// A frame whose checksum holds but whose span does not decode (here: a
/// name that is not UTF-8, as only a bug could write) is reported by
/// `verify`, which decodes every span whole, though a replay, which reads
/// spans only for their index facts, steps over the name.
#[test]
fn verify_reports_a_span_that_does_not_decode_behind_a_sound_checksum() {
    let (snapshot, _) = crashed_store(3, 0);
    let seg = only_segment(snapshot.path());
    let mut bytes = fs::read(&seg).unwrap();
    // The first frame: 32-byte segment header, then len u32 | crc u32 |
    // tag u8 | payload; its span's name "agent" made invalid UTF-8.
    let len = usize::try_from(u32::from_le_bytes(bytes[32..36].try_into().unwrap())).unwrap();
    let (tag_at, payload_at) = (40, 41);
    let payload = &mut bytes[payload_at..payload_at + len];
    let name = payload
        .windows(6)
        .position(|w| w == b"\x05agent")
        .expect("the span's name in the first frame");
    payload[name + 1] = 0xff;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&u32::try_from(len).unwrap().to_le_bytes());
    crc.update(&[bytes[tag_at]]);
    crc.update(&bytes[payload_at..payload_at + len]);
    bytes[36..40].copy_from_slice(&crc.finalize().to_le_bytes());
    fs::write(&seg, &bytes).unwrap();

    let store = options().open(snapshot.path()).unwrap();
    // Reading the span decodes it whole: an error, not a panic, naming
    // the frame (the segment's first, just past its 32-byte header).
    let err = store.trace(TraceId([1; 16])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted);
    match err {
        span_sessions::Error::Corruption {
            segment,
            offset,
            reason,
        } => {
            assert_eq!((segment.file_name(), offset), (seg.file_name(), 32));
            assert!(reason.contains("UTF-8"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let report = store.verify().unwrap();
    assert!(!report.is_ok());
    assert!(
        report.problems[0].contains("UTF-8"),
        "{:?}",
        report.problems
    );
    // A rebuild reads the spans for their facts only; the other turns
    // are all there.
    store.rebuild_indexes().unwrap();
    for i in 1..3u8 {
        assert!(store.trace(TraceId([i + 1; 16])).unwrap().is_some());
    }
}

/// Trace ids of every span a workload appended.
fn appended_trace_ids(
    batches: &[Vec<span_sessions::ResourceSpans>],
) -> Vec<span_sessions::TraceId> {
    let mut ids: Vec<_> = batches
        .iter()
        .flatten()
        .flat_map(|rs| rs.spans.iter().map(|s| s.trace_id))
        .collect();
    ids.sort_by_key(|t| t.0);
    ids.dedup();
    ids
}

/// An index written by format 4 (trace records keyed by trace id, in a
/// table named `traces`) is rebuilt from the log on open: same answers,
/// and the old table is gone.
#[test]
fn an_index_of_the_previous_format_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let batches: Vec<_> = span_sessions::workload::Workload::new(Default::default())
        .batches(50)
        .take(20)
        .collect();
    let ids = appended_trace_ids(&batches);
    let store = SessionStore::open(dir.path()).unwrap();
    for b in &batches {
        store.append(b).unwrap();
    }
    let before = common::snapshot(&store, &ids, &[], &[]);
    drop(store);
    {
        const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        const OLD: redb::TableDefinition<[u8; 16], &[u8]> = redb::TableDefinition::new("traces");
        const HOMES: redb::TableDefinition<[u8; 16], u64> =
            redb::TableDefinition::new("trace_homes");
        const RECORDS: redb::TableDefinition<u64, &[u8]> =
            redb::TableDefinition::new("trace_records");
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(HOMES).unwrap();
        txn.delete_table(RECORDS).unwrap();
        txn.open_table(OLD)
            .unwrap()
            .insert([7; 16], &b"old"[..])
            .unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 4)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = SessionStore::open(dir.path()).unwrap();
    assert_eq!(common::snapshot(&store, &ids, &[], &[]), before);
    assert!(store.verify().unwrap().is_ok());
    drop(store);
    let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let names: Vec<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "traces"), "{names:?}");
    assert!(names.iter().any(|n| n == "trace_homes"), "{names:?}");
}

/// An index of format 8, which kept no live bytes per log segment, is
/// rebuilt on open, so that `stats` reports every span frame live.
#[test]
fn an_index_without_live_bytes_per_segment_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::options()
        .segment_bytes(64 << 10)
        .open(dir.path())
        .unwrap();
    for b in span_sessions::workload::Workload::new(Default::default())
        .batches(50)
        .take(20)
    {
        store.append(&b).unwrap();
    }
    let before = store.stats().unwrap();
    assert!(before.segments.len() > 2, "{:?}", before.segments);
    drop(store);
    {
        const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        const LIVE: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("segment_live");
        let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(LIVE).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("format_version", 8)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = SessionStore::options()
        .segment_bytes(64 << 10)
        .open(dir.path())
        .unwrap();
    let why = store
        .open_report()
        .index_rebuilt
        .clone()
        .unwrap_or_default();
    assert!(why.contains("format 8"), "{why:?}");
    let after = store.stats().unwrap();
    assert_eq!(after.segments, before.segments);
    // Nothing deleted: every byte but each segment's header is live.
    for s in &after.segments {
        assert_eq!(s.dead_bytes, 32, "{s:?}");
    }
    assert!(store.verify().unwrap().is_ok());
}

/// A trace whose home leads nowhere, or a record no trace leads to, is
/// damage that `verify` names (and a rebuild repairs).
#[test]
fn verify_names_trace_records_out_of_step_with_their_homes() {
    const HOMES: redb::TableDefinition<[u8; 16], u64> = redb::TableDefinition::new("trace_homes");
    const RECORDS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("trace_records");
    const HOME_RUNS: redb::TableDefinition<&[u8; 24], &[u8]> =
        redb::TableDefinition::new("home_runs");
    for damage in ["drop a record", "drop a home"] {
        let dir = tempfile::tempdir().unwrap();
        let store = SessionStore::open(dir.path()).unwrap();
        for b in span_sessions::workload::Workload::new(Default::default())
            .batches(50)
            .take(10)
        {
            store.append(&b).unwrap();
        }
        drop(store);
        {
            let db = redb::Database::create(dir.path().join("index.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            {
                use redb::ReadableTable;
                if damage == "drop a record" {
                    let mut t = txn.open_table(RECORDS).unwrap();
                    let home = t.first().unwrap().unwrap().0.value();
                    t.remove(home).unwrap();
                } else {
                    // Where the close left the homes: as runs, or in their table.
                    let mut runs = txn.open_table(HOME_RUNS).unwrap();
                    let first = runs.first().unwrap().map(|(k, _)| *k.value());
                    if let Some(k) = first {
                        runs.remove(&k).unwrap();
                    } else {
                        let mut t = txn.open_table(HOMES).unwrap();
                        let id = t.first().unwrap().unwrap().0.value();
                        t.remove(id).unwrap();
                    }
                }
            }
            txn.commit().unwrap();
        }
        let store = SessionStore::open(dir.path()).unwrap();
        let report = store.verify().unwrap();
        assert!(
            report.problems.iter().any(|p| p.starts_with("traces:")),
            "{damage}: {:?}",
            report.problems
        );
        store.rebuild_indexes().unwrap();
        assert!(store.verify().unwrap().is_ok(), "{damage}");
    }
}

/// Every session of project `p` in every sort order and direction, page
/// by page.
fn every_listing(store: &SessionStore) -> Vec<String> {
    let mut out = Vec::new();
    for sort in [
        SessionSort::StartTime,
        SessionSort::EndTime,
        SessionSort::NumTraces,
        SessionSort::TotalTokens,
        SessionSort::Duration,
    ] {
        for descending in [false, true] {
            let mut q = SessionQuery {
                sort,
                descending,
                limit: 1000,
                ..SessionQuery::default()
            };
            loop {
                let page = store.sessions("p", &q).unwrap();
                out.extend(
                    page.items
                        .iter()
                        .map(|s| format!("{sort:?} {descending} {s:?}")),
                );
                match page.next_cursor {
                    Some(c) => q.cursor = Some(c),
                    None => break,
                }
            }
        }
    }
    out
}

/// A replay long enough to apply in several chunks, each writing its
/// sort-index changes as runs that later merge, with tombstones between
/// them: 50,000 sessions started, some deleted, and every one given a
/// later turn, all past the checkpoint (about 550,000 sort-index changes).
/// The reopened store lists the sessions in every order exactly as the
/// live store, which wrote them in other groups, did.
#[test]
fn a_long_replay_lists_sessions_in_every_order_as_the_live_store_did() {
    const SESSIONS: u32 = 50_000;
    let trace = |phase: u8, i: u32| {
        let mut id = [phase; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        TraceId(id)
    };
    let turns = |phase: u8, range: std::ops::Range<u32>| -> Vec<ResourceSpans> {
        let spans = range
            .map(|i| {
                // Later turns start later and last longer, so that every
                // sort value but the start changes.
                let start = 1_000_000 * u64::from(phase) + u64::from(i);
                Span::new(
                    trace(phase, i),
                    SpanId([1; 8]),
                    None,
                    "agent",
                    start,
                    start + 10 + u64::from(i % 97) * u64::from(phase + 1),
                )
                .with_attribute("session.id", format!("s{i:05}"))
                .with_attribute("llm.token_count.total", i64::from(i % 13 + 1))
            })
            .collect();
        vec![ResourceSpans::for_project("p", spans)]
    };
    let dir = tempfile::tempdir().unwrap();
    let store = options()
        .checkpoint_spans(u64::MAX)
        .open(dir.path())
        .unwrap();
    for from in (0..SESSIONS).step_by(1000) {
        store.append(&turns(0, from..from + 1000)).unwrap();
    }
    // Sessions started above and deleted: their keys are inserted and then
    // removed within one replay.
    for i in (0..SESSIONS).step_by(50) {
        store.delete_trace(trace(0, i)).unwrap();
    }
    for from in (0..SESSIONS).step_by(1000) {
        store.append(&turns(1, from..from + 1000)).unwrap();
    }
    let live = every_listing(&store);
    assert_eq!(live.len(), 10 * SESSIONS as usize);
    let snapshot = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), snapshot.path());
    drop(store);
    let reopened = options().open(snapshot.path()).unwrap();
    assert!(reopened.open_report().frames_replayed >= 2 * u64::from(SESSIONS));
    assert_eq!(every_listing(&reopened), live);
}

/// The open report says how long each step of the open took: the steps
/// are timed separately, so together they fit in the open's own time, and
/// a store with frames past its checkpoint spends time replaying them.
#[test]
fn the_open_report_times_each_step_within_the_open() {
    let (snapshot, _) = crashed_store(3, 3);
    let started = std::time::Instant::now();
    let store = options().open(snapshot.path()).unwrap();
    let elapsed = started.elapsed();
    let report = store.open_report();
    assert_eq!(report.frames_replayed, 3);
    let t = report.timings;
    for (step, took) in [
        ("index", t.index),
        ("log", t.log),
        ("replay", t.replay),
        ("checkpoint", t.checkpoint),
    ] {
        assert!(!took.is_zero(), "{step} took no time: {t:?}");
    }
    assert!(
        t.index + t.log + t.replay + t.checkpoint <= elapsed,
        "{t:?} against {elapsed:?}"
    );
}

/// After a replay, the open returns with the replayed spans readable and
/// takes the checkpoint that makes the index durable on the indexing
/// thread, as appends' checkpoints are taken: while its fsync of the index
/// waits, reads answer and a crash leaves a store with the same answers;
/// once it is done, appends go on, and closing leaves a store
/// that reopens with nothing to replay.
#[test]
fn the_checkpoint_after_a_replay_does_not_hold_up_the_open() {
    let (crashed, _) = crashed_store(2, 6);
    let (replayed, appended) = {
        let scratch = tempfile::tempdir().unwrap();
        copy_dir(crashed.path(), scratch.path());
        let store = options().open(scratch.path()).unwrap();
        assert_eq!(store.open_report().frames_replayed, 6);
        let replayed = answers(&store);
        store.append(&turn(8)).unwrap();
        (replayed, answers(&store))
    };
    assert_ne!(replayed, appended);
    let gate = std::sync::Arc::new(Gate::default());
    gate.set_closed(true);
    let (tx, opened) = std::sync::mpsc::channel();
    {
        let fs = GatedSync {
            gate: std::sync::Arc::clone(&gate),
            indexing_thread_only: true,
            files: "index.redb",
        };
        let dir = crashed.path().to_owned();
        std::thread::spawn(move || {
            let _ = tx.send(options().file_system(std::sync::Arc::new(fs)).open(dir));
        });
    }
    // The open's checkpoint reaches its fsync of the index and waits
    // there; an open that took it itself would not return until the gate
    // opens.
    assert!(
        gate.someone_waits(std::time::Duration::from_secs(60)),
        "no checkpoint was started on the indexing thread"
    );
    let store = opened
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the open waits for its checkpoint")
        .unwrap();
    assert_eq!(store.open_report().frames_replayed, 6);
    assert_eq!(answers(&store), replayed);
    let during = tempfile::tempdir().unwrap();
    copy_dir(crashed.path(), during.path());
    gate.set_closed(false);
    store.append(&turn(8)).unwrap();
    assert_eq!(answers(&store), appended);
    store.close().unwrap();
    let again = options().open(during.path()).unwrap();
    // Whether the copy caught the checkpoint's writes (a process crash
    // keeps what reached the OS) or not, it answers the same.
    assert!([0, 6].contains(&again.open_report().frames_replayed));
    assert_eq!(answers(&again), replayed);
    drop(again);
    let reopened = options().open(crashed.path()).unwrap();
    assert_eq!(reopened.open_report().frames_replayed, 0);
    assert_eq!(answers(&reopened), appended);
}

/// Trace homes in `home_runs` and in `trace_homes` of the store in `dir`
/// (closed).
fn held_homes(dir: &Path) -> (u64, u64) {
    use redb::{ReadableTable, ReadableTableMetadata};
    const RUNS: redb::TableDefinition<&[u8; 24], &[u8]> = redb::TableDefinition::new("home_runs");
    const HOMES: redb::TableDefinition<&[u8; 16], u64> = redb::TableDefinition::new("trace_homes");
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let in_runs = txn
        .open_table(RUNS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|e| e.unwrap().1.value().len() as u64 / 24)
        .sum();
    (in_runs, txn.open_table(HOMES).unwrap().len().unwrap())
}

/// A late span of trace `id`: a child with a new span id.
fn late_span(id: TraceId, n: u8) -> ResourceSpans {
    let span = Span::new(
        id,
        SpanId([0xee, n, 0, 0, 0, 0, 0, 1]),
        Some(SpanId([9; 8])),
        "late",
        5,
        6,
    );
    ResourceSpans::for_project("p", vec![span])
}

/// Trace homes are kept in memory after a checkpoint and made durable as
/// runs of `home_runs`, and move to `trace_homes` only once more than a
/// bound are held (`StoreOptions::deferred_homes`: here 1,000,000, so
/// never; 20, so at most checkpoints; 0, so at every checkpoint). Either
/// way, a crash copy finds every trace again: late
/// spans of traces from before the last checkpoint, appended after the
/// reopen, join those traces exactly as in the live store, and `verify`
/// finds the index a rebuild derives. (An open that did not load the runs
/// would file those spans as new traces.)
#[test]
fn traces_whose_homes_are_held_as_runs_are_found_after_a_crash() {
    for limit in [1_000_000, 20, 0] {
        let dir = tempfile::tempdir().unwrap();
        let batches: Vec<_> = span_sessions::workload::Workload::new(Default::default())
            .batches(50)
            .take(24)
            .collect();
        let ids = appended_trace_ids(&batches);
        let opts = || {
            SessionStore::options()
                .durability(Durability::Buffered)
                .checkpoint_spans(200)
                .deferred_homes(limit)
        };
        let store = opts().open(dir.path()).unwrap();
        for b in &batches {
            store.append(b).unwrap();
        }
        for (n, id) in ids.iter().take(5).enumerate() {
            store.append(&[late_span(*id, n as u8)]).unwrap();
        }
        store.sync().unwrap();
        let crashed = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), crashed.path());
        let (runs, homes) = held_homes(crashed.path());
        if limit == 0 {
            // Every checkpoint writes the homes to the table.
            assert!(
                homes == ids.len() as u64 && runs == 0,
                "{limit}: {runs} in runs, {homes} in the table"
            );
        } else if limit == 20 {
            assert!(
                homes > 0 && runs < 100,
                "{limit}: {runs} in runs, {homes} in the table"
            );
        } else {
            assert!(
                homes == 0 && runs == ids.len() as u64,
                "{limit}: {runs} in runs, {homes} in the table"
            );
        }
        let copy = opts().open(crashed.path()).unwrap();
        for (n, id) in ids.iter().skip(5).take(20).enumerate() {
            let late = [late_span(*id, 100 + n as u8)];
            store.append(&late).unwrap();
            copy.append(&late).unwrap();
        }
        let live = common::snapshot(&store, &ids, &[], &[]);
        assert_eq!(common::snapshot(&copy, &ids, &[], &[]), live, "{limit}");
        assert!(
            live.traces.iter().take(25).all(|(_, t)| t
                .as_ref()
                .is_some_and(|t| t.spans.iter().any(|s| s.span.name == "late"))),
            "{limit}"
        );
        assert!(copy.verify().unwrap().is_ok(), "{limit}");
        assert!(store.verify().unwrap().is_ok(), "{limit}");
    }
}

/// A replay several chunks long, with sessions running across chunks and
/// a delete that empties one session, numbers each session once, as the
/// live store did: the copy answers exactly as the live store does (lists,
/// summaries, histories, traces, searches), before and after more turns
/// of the same sessions arrive, the emptied session's id is gone from
/// `session_ids` once the copy closes, and `verify` finds both indexes as
/// a rebuild derives them. Run twice: with the default bound of held
/// trace homes, the replay holds its deferred changes to the end; with
/// none (`deferred_homes(0)`), it writes them out after every chunk, the
/// search postings as a run and the homes to their table (a posting lost
/// on the way fails the searches and `verify`).
#[test]
fn a_replay_across_chunks_and_a_delete_numbers_sessions_as_the_live_store() {
    for held_homes in [None, Some(0)] {
        replay_across_chunks_and_a_delete(held_homes);
    }
}

fn replay_across_chunks_and_a_delete(held_homes: Option<usize>) {
    let dir = tempfile::tempdir().unwrap();
    // About 6,000 spans: 80 sessions of up to 20 turns, 16 at a time.
    let batches: Vec<_> =
        span_sessions::workload::Workload::new(span_sessions::workload::WorkloadConfig {
            sessions: 80,
            turns: (1, 20),
            concurrent_sessions: 16,
            ..Default::default()
        })
        .batches(50)
        .collect();
    let (before, after) = batches.split_at(batches.len() * 2 / 3);
    let ids = appended_trace_ids(&batches);
    let opts = || {
        let o = SessionStore::options()
            .durability(Durability::Buffered)
            .checkpoint_spans(u64::MAX)
            .checkpoint_bytes(u64::MAX)
            .index_batch_spans(500);
        match held_homes {
            Some(n) => o.deferred_homes(n),
            None => o,
        }
    };
    let store = opts().open(dir.path()).unwrap();
    for b in before {
        store.append(b).unwrap();
    }
    // A delete empties one session: the replay must forget its number as
    // the delete did.
    let listed = common::snapshot(&store, &ids, &[], &[]);
    let (project, session) = (&listed.sessions[0].0, &listed.sessions[0].1);
    assert!(store.delete_session(project, session).unwrap().traces > 0);
    let live = common::snapshot(&store, &ids, &[], &[(project, session)]);
    let turns: usize = live.sessions.iter().map(|s| s.3.len()).sum();
    assert!(
        live.sessions.len() > 10 && turns > live.sessions.len() * 2,
        "{} sessions, {turns} turns",
        live.sessions.len()
    );
    let crashed = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), crashed.path());
    let copy = opts().open(crashed.path()).unwrap();
    assert!(copy.open_report().frames_replayed >= 4_000);
    assert_eq!(
        common::snapshot(&copy, &ids, &[], &[(project, session)]),
        live
    );
    // Searches for pieces of the sessions' texts find the same sessions.
    let terms = search_terms(&live);
    assert!(terms.len() >= 10, "{terms:?}");
    for (p, term) in &terms {
        let found = common::search(&store, p, term);
        assert!(!found.is_empty(), "{term:?}");
        assert_eq!(common::search(&copy, p, term), found, "{term:?}");
    }
    // The replayed delete dropped the number as the delete did.
    copy.close().unwrap();
    assert!(!session_numbered(crashed.path(), project, session));
    assert!(session_numbered(
        crashed.path(),
        &live.sessions[1].0,
        &live.sessions[1].1
    ));
    let copy = opts().open(crashed.path()).unwrap();
    for b in after {
        store.append(b).unwrap();
        copy.append(b).unwrap();
    }
    let live = common::snapshot(&store, &ids, &[], &[(project, session)]);
    assert_eq!(
        common::snapshot(&copy, &ids, &[], &[(project, session)]),
        live
    );
    for (p, term) in &terms {
        assert_eq!(
            common::search(&copy, p, term),
            common::search(&store, p, term),
            "{term:?}"
        );
    }
    assert!(copy.verify().unwrap().is_ok());
    assert!(store.verify().unwrap().is_ok());
}

/// (project, term) pairs for searches: a piece of the first input of
/// each of the first sessions listed, from the middle of it.
fn search_terms(s: &common::Snapshot) -> Vec<(String, String)> {
    s.sessions
        .iter()
        .filter_map(|(p, _, _, turns)| {
            let text = turns.iter().find_map(|t| t.input.as_ref())?.value.clone();
            let chars: Vec<char> = text.chars().collect();
            let at = chars.len() / 2;
            let piece: String = chars.get(at..at + 6)?.iter().collect();
            Some((p.clone(), piece))
        })
        .take(12)
        .collect()
}

/// Whether the index of the closed store in `dir` holds a `session_ids`
/// entry for the session.
fn session_numbered(dir: &Path, project: &str, session_id: &str) -> bool {
    const PROJECTS: redb::TableDefinition<&str, u32> = redb::TableDefinition::new("projects");
    const IDS: redb::TableDefinition<&[u8], u64> = redb::TableDefinition::new("session_ids");
    let db = redb::Database::create(dir.join("index.redb")).unwrap();
    let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
    let Some(p) = txn.open_table(PROJECTS).unwrap().get(project).unwrap() else {
        return false;
    };
    let mut key = p.value().to_be_bytes().to_vec();
    key.extend_from_slice(session_id.as_bytes());
    let ids = txn.open_table(IDS).unwrap();
    ids.get(key.as_slice()).unwrap().is_some()
}

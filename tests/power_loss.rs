//! Simulated power loss: the power fails at an I/O call of an append, and
//! each file keeps none, all, or a torn prefix of the writes it had not
//! synced (see `testing::SimFileSystem`). The store must reopen and hold
//! everything acknowledged durable, a prefix of what was sent, summaries
//! equal to a recomputation, and pass `verify`.
//!
//! - `a_power_cut_at_any_call_of_an_append_...`: every call of one append,
//!   in every durability mode, with and without a segment roll and a
//!   checkpoint inside the append; every file loses all its unsynced
//!   writes, or keeps them all.
//! - `tearing_the_last_append_at_every_byte_...`: the power fails just
//!   before the append's fsync; the log keeps a prefix of the append's
//!   bytes cut at every byte (every `SPAN_SESSIONS_TEAR_STEP`-th byte in CI,
//!   1 in the long run), plain or zero-filled to the written length.
//! - `random_power_cuts_during_a_workload_...`: seeded runs of appends,
//!   syncs and power cuts at random calls, with random survival per file,
//!   on one store (`SPAN_SESSIONS_POWER_LOSS_ITERS` runs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod reliability;

use std::path::Path;
use std::sync::Arc;

use reliability::{BatchId, Rng, check_store, env_bound};
use span_sessions::testing::{Fault, FaultError, Op, Ops, SimFileSystem, Survival};
use span_sessions::{Durability, SessionStore, StoreOptions};

const MODES: [Durability; 3] = [
    Durability::Sync,
    Durability::GroupCommit,
    Durability::Buffered,
];

fn options(mode: Durability, roll_and_checkpoint: bool) -> StoreOptions {
    let o = SessionStore::options()
        .durability(mode)
        .cache_bytes(1 << 20);
    if roll_and_checkpoint {
        o.segment_bytes(4096).checkpoint_bytes(1)
    } else {
        o.checkpoint_bytes(u64::MAX)
    }
}

fn open_sim(dir: &Path, sim: &SimFileSystem, mode: Durability, rc: bool) -> SessionStore {
    options(mode, rc)
        .file_system(Arc::new(sim.clone()))
        .open(dir)
        .unwrap_or_else(|e| panic!("open: {e}"))
}

/// Appends `n` batches; returns them (all acknowledged). Under `Buffered`
/// it ends with a `sync`, so that they are durable in every mode.
fn preload(store: &SessionStore, n: u64) -> Vec<BatchId> {
    let ids: Vec<BatchId> = (0..n).map(|i| BatchId::new(0, i)).collect();
    for id in &ids {
        store.append(&id.batch()).unwrap();
    }
    store.sync().unwrap();
    ids
}

fn reopen_and_check(dir: &Path, mode: Durability, sent: &[BatchId], acked: &[BatchId], what: &str) {
    let store = options(mode, false)
        .open(dir)
        .unwrap_or_else(|e| panic!("{what}: reopen after power loss failed: {e}"));
    check_store(&store, sent, acked).unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn a_power_cut_at_any_call_of_an_append_loses_nothing_acknowledged() {
    let mut cases = 0;
    for mode in MODES {
        for rc in [false, true] {
            // Calls one append makes, with the work it leaves to the
            // indexing thread (its checkpoint, with `rc`): a read waits
            // for that work.
            let calls = {
                let dir = tempfile::tempdir().unwrap();
                let sim = SimFileSystem::new();
                let store = open_sim(dir.path(), &sim, mode, rc);
                preload(&store, 3);
                store.projects().unwrap();
                let before = sim.count(Ops::Mutating);
                store.append(&BatchId::new(0, 3).batch()).unwrap();
                store.projects().unwrap();
                sim.count(Ops::Mutating) - before
            };
            for nth in 0..=calls {
                for survival in [Survival::Nothing, Survival::All] {
                    let what =
                        format!("{mode:?} roll+checkpoint={rc} cut at call {nth} {survival:?}");
                    let dir = tempfile::tempdir().unwrap();
                    let sim = SimFileSystem::new();
                    let store = open_sim(dir.path(), &sim, mode, rc);
                    let acked = preload(&store, 3);
                    store.projects().unwrap();
                    let last = BatchId::new(0, 3);
                    sim.arm(Fault::power_cut(Ops::Mutating, nth));
                    let result = store.append(&last.batch());
                    let mut acked = acked;
                    if result.is_ok() && mode != Durability::Buffered {
                        acked.push(last);
                    }
                    drop(store);
                    sim.power_loss(&mut |_, _| survival).unwrap();
                    let sent: Vec<BatchId> = (0..4).map(|n| BatchId::new(0, n)).collect();
                    reopen_and_check(dir.path(), mode, &sent, &acked, &what);
                    cases += 1;
                }
            }
        }
    }
    eprintln!("power cuts at every call of an append: {cases} cases");
}

#[test]
fn tearing_the_last_append_at_every_byte_keeps_a_consistent_prefix() {
    let step = env_bound("SPAN_SESSIONS_TEAR_STEP", 9).max(1);
    let mut cases = 0;
    for mode in MODES {
        // How many bytes the append leaves unsynced in the log segment.
        let (pending, segment) = {
            let dir = tempfile::tempdir().unwrap();
            let sim = SimFileSystem::new();
            let store = open_sim(dir.path(), &sim, mode, false);
            preload(&store, 3);
            sim.arm(Fault::power_cut(Ops::Only(Op::Sync), 0));
            let _ = store.append(&BatchId::new(0, 3).batch());
            let seg = sim
                .unsynced()
                .into_iter()
                .find(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
                .unwrap();
            (seg.1.bytes, seg.0.file_name().unwrap().to_owned())
        };
        assert!(pending > 500, "{mode:?}: {pending} bytes pending");
        let mut cuts: Vec<u64> = (0..=pending).step_by(step as usize).collect();
        cuts.push(pending);
        for cut in cuts {
            for zero_filled in [false, true] {
                let what =
                    format!("{mode:?} tear at byte {cut} of {pending} zero_filled={zero_filled}");
                let dir = tempfile::tempdir().unwrap();
                let sim = SimFileSystem::new();
                let store = open_sim(dir.path(), &sim, mode, false);
                let acked = preload(&store, 3);
                // The power fails at the append's fsync: its writes are in
                // the page cache only.
                sim.arm(Fault::power_cut(Ops::Only(Op::Sync), 0));
                assert!(
                    store.append(&BatchId::new(0, 3).batch()).is_err()
                        || mode == Durability::Buffered
                );
                drop(store);
                sim.power_loss(&mut |p, _| {
                    if p.file_name() == Some(segment.as_os_str()) {
                        if zero_filled {
                            Survival::PrefixZeroFilled(cut)
                        } else {
                            Survival::Prefix(cut)
                        }
                    } else {
                        Survival::Nothing
                    }
                })
                .unwrap();
                let sent: Vec<BatchId> = (0..4).map(|n| BatchId::new(0, n)).collect();
                reopen_and_check(dir.path(), mode, &sent, &acked, &what);
                cases += 1;
            }
        }
    }
    eprintln!("torn last appends: {cases} cases (step {step})");
}

#[test]
fn random_power_cuts_during_a_workload_lose_nothing_acknowledged() {
    let runs = env_bound("SPAN_SESSIONS_POWER_LOSS_ITERS", 12);
    let seed0 = env_bound("SPAN_SESSIONS_POWER_LOSS_SEED", 0xC0FFEE);
    let mut cuts = 0;
    for run in 0..runs {
        let seed = seed0 + run;
        let mut rng = Rng::new(seed);
        let mode = MODES[rng.below(3) as usize];
        let rc = rng.below(2) == 0;
        let dir = tempfile::tempdir().unwrap();
        let mut sent: Vec<BatchId> = Vec::new();
        let mut acked: Vec<BatchId> = Vec::new();
        let mut next = 0u64;
        for cycle in 0..4 {
            let sim = SimFileSystem::new();
            let store = open_sim(dir.path(), &sim, mode, rc);
            // Under Buffered only what a sync covered is durable.
            let mut since_sync: Vec<BatchId> = Vec::new();
            let appends = 1 + rng.below(12);
            let cut_at = rng.below(appends * 6);
            sim.arm(Fault::power_cut(Ops::Mutating, cut_at));
            for _ in 0..appends {
                // Re-send the batch a cut interrupted, as an exporter would.
                let id = BatchId::new(0, next);
                if sent.last() != Some(&id) {
                    sent.push(id);
                }
                match store.append(&id.batch()) {
                    Ok(_) => {
                        next += 1;
                        if mode == Durability::Buffered {
                            since_sync.push(id);
                        } else {
                            acked.push(id);
                        }
                        if rng.below(4) == 0 && store.sync().is_ok() {
                            acked.append(&mut since_sync);
                        }
                    }
                    Err(_) => break,
                }
            }
            drop(store);
            let chosen = sim.power_loss_random(seed * 31 + cycle).unwrap();
            cuts += 1;
            let what = format!("run {run} (seed {seed}) cycle {cycle} {mode:?} rc={rc} {chosen:?}");
            let store = options(mode, rc)
                .open(dir.path())
                .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
            let whole =
                check_store(&store, &sent, &acked).unwrap_or_else(|e| panic!("{what}: {e}"));
            // What survived is durable now (recovery synced it).
            acked = sent.iter().copied().take(whole).collect();
            next = whole as u64;
            sent.truncate(whole + 1);
            if sent.len() > whole
                && reliability::presence(&store, sent[whole]).unwrap()
                    == reliability::Presence::None
            {
                sent.truncate(whole);
            }
        }
    }
    eprintln!("random power cuts: {cuts} cuts over {runs} runs");
}

/// How the store to recover was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crash {
    /// The process died as the last append's fsync failed: the log holds
    /// that batch whole, but only in the page cache, until recovery syncs
    /// it.
    Process,
    /// The power failed at the last append's fsync: the log keeps half of
    /// the batch's unsynced bytes and its length (zeros past the tear).
    Power,
    /// As `Power`, and the index file is lost too: the open rebuilds it
    /// from the whole log.
    PowerIndexLost,
    /// The process died as a checkpoint's fsync of the index file failed
    /// (the log's fsync before it succeeded): the index's last durable
    /// commit is the checkpoint before.
    ProcessIndexSync,
}

/// A crashed store for the recovery sweeps, on its simulated disk: three
/// batches covered by a checkpoint (`sync`), then `replayed` batches
/// acknowledged durable but past the checkpoint (group commit, 4 KiB
/// segments, so the replay crosses segment rolls), then one batch that the
/// `crash` interrupted. Returns the directory, its disk, the batches sent
/// and those acknowledged.
fn crashed_for_recovery(
    replayed: u64,
    crash: Crash,
) -> (tempfile::TempDir, SimFileSystem, Vec<BatchId>, Vec<BatchId>) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let store = options(Durability::GroupCommit, false)
        .segment_bytes(4096)
        .checkpoint_spans(u64::MAX)
        .file_system(Arc::new(sim.clone()))
        .open(dir.path())
        .unwrap();
    let mut acked = preload(&store, 3);
    for n in 3..3 + replayed {
        let id = BatchId::new(0, n);
        store.append(&id.batch()).unwrap();
        acked.push(id);
    }
    if crash == Crash::ProcessIndexSync {
        // The first fsync of `sync` is the log's, the next the index's.
        sim.arm(Fault::nth(Ops::Only(Op::Sync), 1, FaultError::Io));
        assert!(store.sync().is_err());
        let failed = sim.injected();
        assert!(
            failed.len() == 1 && failed[0].path.ends_with("index.redb"),
            "{failed:?}"
        );
        drop(store);
        return (dir, sim, acked.clone(), acked);
    }
    let last = BatchId::new(0, 3 + replayed);
    let sent = (0..=3 + replayed).map(|n| BatchId::new(0, n)).collect();
    if crash == Crash::Process {
        sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io));
        assert!(store.append(&last.batch()).is_err());
        drop(store);
        return (dir, sim, sent, acked);
    }
    sim.arm(Fault::power_cut(Ops::Only(Op::Sync), 0));
    assert!(store.append(&last.batch()).is_err());
    let unsynced = sim.unsynced();
    drop(store);
    sim.power_loss(&mut |p, _| match unsynced.get(p) {
        Some(u) if p.extension().is_some_and(|e| e == "seg") => {
            Survival::PrefixZeroFilled(u.bytes / 2)
        }
        _ => Survival::Nothing,
    })
    .unwrap();
    if crash == Crash::PowerIndexLost {
        std::fs::remove_file(dir.path().join("index.redb")).unwrap();
    }
    (dir, SimFileSystem::new(), sent, acked)
}

/// Opens the store in `dir` on `sim` (the open that recovers it), waits for
/// the work the open leaves to the store's threads (a read does) and
/// closes it.
fn recover(dir: &Path, sim: &SimFileSystem) -> span_sessions::Result<span_sessions::OpenReport> {
    let store = options(Durability::GroupCommit, true)
        .file_system(Arc::new(sim.clone()))
        .open(dir)?;
    store.projects()?;
    Ok(store.open_report().clone())
}

/// Cuts the power at every mutating call of the recovery of a `crash`,
/// with every file losing all its unsynced writes or keeping them all;
/// then, after a recovery cut half way, at every call of the next one.
/// Each time the store must reopen and hold every acknowledged batch, a
/// prefix of what was sent, summaries equal to a recomputation, and pass
/// `verify`. Returns the number of cases.
fn cut_every_call_of_recovery(crash: Crash) -> u64 {
    let replayed = 6;
    // The calls of a whole recovery, and that it is one.
    let calls = {
        let (dir, sim, _, _) = crashed_for_recovery(replayed, crash);
        let before = sim.count(Ops::Mutating);
        let report = recover(dir.path(), &sim).unwrap();
        // After the failed fsync the log marked where its durability
        // ended, and the open wrote the rest again; a power cut leaves
        // no mark (the disk was gone before it could be written).
        match crash {
            Crash::Process => {
                assert_eq!(report.log_truncated_bytes, 0, "{report:?}");
                assert!(report.log_rewritten_bytes > 0, "{report:?}");
            }
            // The log did not fail: nothing to cut or write again.
            Crash::ProcessIndexSync => {
                assert_eq!(report.log_truncated_bytes, 0, "{report:?}");
                assert_eq!(report.log_rewritten_bytes, 0, "{report:?}");
            }
            _ => {
                assert!(report.log_truncated_bytes > 0, "{report:?}");
                assert_eq!(report.log_rewritten_bytes, 0, "{report:?}");
            }
        }
        match crash {
            Crash::PowerIndexLost => assert!(report.index_rebuilt.is_some(), "{report:?}"),
            // The page cache may show the failed checkpoint's commit.
            Crash::ProcessIndexSync => assert!(report.index_rebuilt.is_none(), "{report:?}"),
            _ => {
                assert!(report.index_rebuilt.is_none(), "{report:?}");
                assert!(report.frames_replayed > 0, "{report:?}");
            }
        }
        sim.count(Ops::Mutating) - before
    };
    assert!(calls > 5, "a recovery of {calls} mutating calls");
    let mut cases = 0;
    let mut cut = |first_cut: Option<u64>, nth: u64, survival: Survival| {
        let (dir, mut sim, sent, acked) = crashed_for_recovery(replayed, crash);
        let what = format!("{crash:?}: cut at call {nth} of {calls}, {survival:?}");
        let what = match first_cut {
            None => what,
            Some(first) => {
                sim.arm(Fault::power_cut(Ops::Mutating, first));
                let _ = recover(dir.path(), &sim);
                sim.power_loss(&mut |_, _| Survival::Nothing).unwrap();
                sim = SimFileSystem::new();
                format!("{what} of the open after one cut at call {first}")
            }
        };
        sim.arm(Fault::power_cut(Ops::Mutating, nth));
        // The open may fail (the power is gone) or end before the cut.
        let _ = recover(dir.path(), &sim);
        sim.power_loss(&mut |_, _| survival).unwrap();
        reopen_and_check(dir.path(), Durability::GroupCommit, &sent, &acked, &what);
        cases += 1;
    };
    for nth in 0..=calls {
        for survival in [Survival::Nothing, Survival::All] {
            cut(None, nth, survival);
        }
        cut(Some(calls / 2), nth, Survival::Nothing);
    }
    cases
}

#[test]
fn a_power_cut_at_any_call_of_a_recovery_loses_nothing_acknowledged() {
    for crash in [
        Crash::Process,
        Crash::Power,
        Crash::PowerIndexLost,
        Crash::ProcessIndexSync,
    ] {
        let cases = cut_every_call_of_recovery(crash);
        eprintln!("power cuts at every call of the recovery of {crash:?}: {cases} cases");
    }
}

/// After a checkpoint's fsync of the index file fails, the page cache may
/// show the index's failed commit as made (Linux keeps the pages, clean,
/// never written). The next run of the program opens the store on that
/// state, appends, and makes new checkpoints durable on top of it; a power
/// loss then takes whatever of the failed commit never reached the disk.
/// Every batch acknowledged in either run must survive, for a failure at
/// each of the index's fsyncs in that checkpoint.
#[test]
fn a_failed_index_fsync_a_restart_and_a_power_loss_lose_nothing_acknowledged() {
    let mut cases = 0;
    for nth in 1.. {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimFileSystem::new();
        let open = || {
            options(Durability::GroupCommit, false)
                .file_system(Arc::new(sim.clone()))
                .open(dir.path())
                .unwrap()
        };
        let store = open();
        let mut acked = preload(&store, 3);
        for n in 3..9 {
            let id = BatchId::new(0, n);
            store.append(&id.batch()).unwrap();
            acked.push(id);
        }
        // The sync's first fsync is the log's; the rest are the index's.
        sim.arm(Fault::nth(Ops::Only(Op::Sync), nth, FaultError::Io));
        let synced = store.sync();
        let failed = sim.injected();
        if failed.is_empty() {
            assert!(synced.is_ok(), "{synced:?}");
            break; // past the checkpoint's last fsync
        }
        assert!(synced.is_err(), "fsync {nth}: {synced:?}");
        assert!(failed[0].path.ends_with("index.redb"), "{failed:?}");
        drop(store);
        // The program starts again (the machine did not).
        let store = open();
        for n in 9..14 {
            let id = BatchId::new(0, n);
            store.append(&id.batch()).unwrap();
            acked.push(id);
            store.sync().unwrap();
        }
        drop(store);
        sim.power_loss(&mut |_, _| Survival::Nothing).unwrap();
        let sent: Vec<BatchId> = (0..14).map(|n| BatchId::new(0, n)).collect();
        reopen_and_check(
            dir.path(),
            Durability::GroupCommit,
            &sent,
            &acked,
            &format!("the checkpoint's fsync {nth} failed"),
        );
        cases += 1;
    }
    assert!(cases > 0);
    eprintln!("failed index fsyncs, a restart and a power loss: {cases} cases");
}

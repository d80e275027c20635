//! Faults injected at every I/O call of an append, in turn.
//!
//! Each case opens a store on a simulated disk (`testing::SimFileSystem`,
//! which puts the log and the index file on the same seam), appends a few
//! acknowledged batches, arms one fault (ENOSPC or EIO, a write that fails
//! half-way, a failed fsync, ...) at the n-th I/O call of the next append,
//! and checks:
//!
//! 1. the append returns an error;
//! 2. the store stays readable: every acknowledged batch reads back;
//! 3. further writes are refused with `ErrorKind::Poisoned`, naming the
//!    original failure as the cause;
//! 4. after a reopen (with and without a simulated power loss that drops
//!    every unsynced write), every acknowledged batch is present, the failed
//!    batch is present as a prefix or not at all, summaries equal a
//!    recomputation, and `verify` passes.
//!
//! The sweep covers every durability mode, with and without a segment roll
//! and an index checkpoint inside the append.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod reliability;

use std::sync::Arc;

use reliability::{BatchId, check_store};
use span_sessions::testing::{Fault, FaultError, Ops, SimFileSystem, Survival};
use span_sessions::{Durability, ErrorKind, SessionStore, StoreOptions};

const MODES: [Durability; 3] = [
    Durability::Sync,
    Durability::GroupCommit,
    Durability::Buffered,
];

/// Acknowledged batches appended before the faulty one.
const PRELOAD: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// The append writes the log, commits the index, syncs the log.
    Plain,
    /// Small segments and a checkpoint after every append: the append also
    /// rolls segments now and then and makes the index durable.
    RollAndCheckpoint,
}

fn options(mode: Durability, layout: Layout) -> StoreOptions {
    let o = SessionStore::options().durability(mode);
    match layout {
        Layout::Plain => o.checkpoint_bytes(u64::MAX),
        Layout::RollAndCheckpoint => o.segment_bytes(4096).checkpoint_bytes(1),
    }
}

fn open(
    dir: &std::path::Path,
    sim: &SimFileSystem,
    mode: Durability,
    layout: Layout,
) -> SessionStore {
    options(mode, layout)
        .file_system(Arc::new(sim.clone()))
        .open(dir)
        .unwrap_or_else(|e| panic!("open: {e}"))
}

fn preload(store: &SessionStore) -> Vec<BatchId> {
    (0..PRELOAD)
        .map(|n| {
            let id = BatchId::new(0, n);
            assert_eq!(store.append(&id.batch()).unwrap().accepted, 6);
            id
        })
        .collect()
}

/// Calls in `ops` that one append makes (the last of `PRELOAD + 1`).
fn calls_per_append(mode: Durability, layout: Layout, ops: Ops, failing: BatchId) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let store = open(dir.path(), &sim, mode, layout);
    preload(&store);
    store.projects().unwrap();
    let before = sim.count(ops);
    store.append(&failing.batch()).unwrap();
    // With the work the append left to the indexing thread.
    store.projects().unwrap();
    sim.count(ops) - before
}

#[derive(Debug, Default)]
struct Tally {
    cases: u64,
    fired: u64,
}

/// One case: returns whether the fault fired.
fn case(
    mode: Durability,
    layout: Layout,
    fault: Fault,
    power_loss: bool,
    failing: BatchId,
) -> bool {
    let what = format!("{mode:?} {layout:?} {fault:?} power_loss={power_loss} {failing:?}");
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let store = open(dir.path(), &sim, mode, layout);
    let mut acked = preload(&store);
    // Appends leave work to an indexing thread (with a checkpoint every
    // append in `RollAndCheckpoint`): a read waits for it, so that the
    // fault meets the next append or the work that append leaves.
    store.projects().unwrap();
    sim.arm(fault);
    let result = store.append(&failing.batch());
    let after = store.projects();
    let fired = !sim.injected().is_empty();
    if !fired {
        assert!(result.is_ok(), "{what}: no fault fired, yet {result:?}");
        assert!(after.is_ok(), "{what}: no fault fired, yet {after:?}");
        return false;
    }
    match result {
        // The fault met the work the append left to the indexing thread
        // (its checkpoint), after the append returned: the batch was
        // acknowledged, the store is poisoned, and reads go on.
        Ok(r) => {
            assert_eq!(r.accepted, 6, "{what}");
            assert!(
                layout == Layout::RollAndCheckpoint,
                "{what}: the append succeeded ({r:?}) despite {:?}",
                sim.injected()
            );
            assert!(after.is_ok(), "{what}: a read after the fault: {after:?}");
            acked.push(failing);
        }
        Err(err) => assert!(
            matches!(err.kind(), ErrorKind::Io | ErrorKind::Poisoned),
            "{what}: unexpected error kind: {err}"
        ),
    }

    // Readable: every acknowledged batch reads back.
    for id in &acked {
        let p = reliability::presence(&store, *id)
            .unwrap_or_else(|e| panic!("{what}: store not readable after the fault: {e}"));
        assert_eq!(p, reliability::Presence::All, "{what}: {id:?}");
    }
    assert!(
        store
            .session(&failing.project(), &failing.session())
            .is_ok()
    );

    // Writes refused until reopen, with the cause named.
    let again = store.append(&BatchId::new(0, PRELOAD + 1).batch());
    let refused = again.expect_err("a write after a failed write or fsync must be refused");
    assert_eq!(refused.kind(), ErrorKind::Poisoned, "{what}: {refused}");
    assert!(store.sync().is_err(), "{what}: sync after poisoning");
    drop(store);

    if power_loss {
        sim.power_loss(&mut |_, _| Survival::Nothing).unwrap();
    } else {
        sim.power_loss(&mut |_, _| Survival::All).unwrap();
    }
    // Reopen on the real file system.
    let store = options(mode, layout)
        .open(dir.path())
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let mut sent = acked.clone();
    if !sent.contains(&failing) {
        sent.push(failing);
    }
    // Under Buffered, acknowledged means "written to the OS": a power loss
    // may take batches after the last checkpoint.
    let must_have: &[BatchId] = if power_loss && mode == Durability::Buffered {
        &[]
    } else {
        &acked
    };
    check_store(&store, &sent, must_have).unwrap_or_else(|e| panic!("{what}: {e}"));
    true
}

/// The batches whose append the sweeps fail: a small one, and a large
/// one (`BatchId::is_large`) that every mode writes directly.
const FAILING: [BatchId; 2] = [
    BatchId {
        writer: 0,
        n: PRELOAD,
    },
    BatchId { writer: 2, n: 0 },
];

fn sweep(ops: Ops, errors: &[FaultError], partial: bool) -> Tally {
    let mut tally = Tally::default();
    for mode in MODES {
        for layout in [Layout::Plain, Layout::RollAndCheckpoint] {
            for failing in FAILING {
                let calls = calls_per_append(mode, layout, ops, failing);
                assert!(calls > 0, "{mode:?} {layout:?}: no calls in {ops:?}");
                for nth in 0..calls + 1 {
                    for &error in errors {
                        for power_loss in [false, true] {
                            let mut fault = Fault::nth(ops, nth, error);
                            if partial {
                                fault = fault.partial();
                            }
                            tally.cases += 1;
                            if case(mode, layout, fault, power_loss, failing) {
                                tally.fired += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!("{ops:?}: {tally:?}");
    tally
}

#[test]
fn the_large_batch_is_written_directly_in_every_mode() {
    use span_sessions::testing::Op;
    let large = FAILING[1];
    assert!(large.is_large());
    for mode in MODES {
        let direct = calls_per_append(mode, Layout::Plain, Ops::Only(Op::DirectWrite), large);
        // 1.2 MB in buffers of 512 KiB: written by the log's writer
        // thread, three writes or more, each of which the sweeps fail
        // (under `Buffered` too: 1 MiB or more).
        assert!(direct >= 3, "{mode:?}: {direct}");
    }
}

#[test]
fn a_failed_write_or_sync_at_any_call_of_an_append_loses_nothing_acknowledged() {
    let t = sweep(Ops::Mutating, &[FaultError::NoSpace, FaultError::Io], false);
    assert!(t.fired > 0);
}

#[test]
fn a_write_that_fails_half_way_loses_nothing_acknowledged() {
    let t = sweep(Ops::Writes, &[FaultError::NoSpace], true);
    assert!(t.fired > 0);
}

#[test]
fn a_failed_read_during_an_append_loses_nothing_acknowledged() {
    let t = sweep(Ops::All, &[FaultError::Io], false);
    assert!(t.fired > 0);
}

/// Regression: a failed log fsync poisons the store, but dropping it let
/// redb persist its last non-durable commit, whose `applied_lsn` covers the
/// batch whose fsync failed. After a power loss that batch is gone from the
/// log, and the store refused to open ("checkpoint past the end of the log").
#[test]
fn a_failed_fsync_then_power_loss_reopens() {
    use span_sessions::testing::Op;
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let store = open(dir.path(), &sim, Durability::Sync, Layout::Plain);
    store.append(&BatchId::new(0, 0).batch()).unwrap();
    sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io));
    assert!(store.append(&BatchId::new(0, 1).batch()).is_err());
    drop(store);
    sim.power_loss(&mut |_, _| Survival::Nothing).unwrap();
    let store = SessionStore::open(dir.path()).unwrap_or_else(|e| panic!("reopen: {e}"));
    check_store(
        &store,
        &[BatchId::new(0, 0), BatchId::new(0, 1)],
        &[BatchId::new(0, 0)],
    )
    .unwrap();
}

/// Group commit under a failing fsync: several threads append at once and
/// share fsyncs; one fsync fails. No thread may be told its batch is durable
/// unless an fsync that succeeded covered it: after a power loss that keeps
/// only synced bytes, every batch acknowledged to any thread is present.
/// Every append after the failure is refused.
#[test]
fn group_commit_never_acknowledges_a_batch_whose_shared_fsync_failed() {
    use span_sessions::testing::Op;
    use std::sync::{Arc as StdArc, Mutex};
    let rounds = reliability::env_bound("SPAN_SESSIONS_GROUP_FAULT_ROUNDS", 12);
    let (mut total_acked, mut total_refused, mut direct) = (0, 0, 0);
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let sim = SimFileSystem::new();
        let store = StdArc::new(open(
            dir.path(),
            &sim,
            Durability::GroupCommit,
            Layout::Plain,
        ));
        // Fail the (3 + round % 7)-th fsync from now.
        sim.arm(Fault::nth(
            Ops::Only(Op::Sync),
            3 + round % 7,
            FaultError::Io,
        ));
        let acked = StdArc::new(Mutex::new(Vec::new()));
        let sent = StdArc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4u32)
            .map(|w| {
                let store = StdArc::clone(&store);
                let acked = StdArc::clone(&acked);
                let sent = StdArc::clone(&sent);
                std::thread::spawn(move || {
                    for n in 0..40 {
                        let id = BatchId::new(w, n);
                        sent.lock().unwrap().push(id);
                        match store.append(&id.batch()) {
                            Ok(_) => acked.lock().unwrap().push(id),
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::Poisoned, "{e}");
                                // Refused from now on.
                                let again = store.append(&BatchId::new(w, n + 1).batch());
                                assert!(again.is_err_and(|e| e.kind() == ErrorKind::Poisoned));
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(
            !sim.injected().is_empty(),
            "round {round}: the fsync fault never fired"
        );
        direct += sim.count(Ops::Only(Op::DirectWrite));
        drop(store);
        sim.power_loss(&mut |_, _| Survival::Nothing).unwrap();
        let store = options(Durability::GroupCommit, Layout::Plain)
            .open(dir.path())
            .unwrap();
        let sent = sent.lock().unwrap().clone();
        let acked = acked.lock().unwrap().clone();
        check_store(&store, &sent, &acked).unwrap_or_else(|e| panic!("round {round}: {e}"));
        total_acked += acked.len();
        total_refused += sent.len() - acked.len();
    }
    eprintln!(
        "group commit, a shared fsync fails: {rounds} rounds, {total_acked} batches \
         acknowledged and present after the power loss, {total_refused} not acknowledged, \
         {direct} direct writes"
    );
    // (Writer 2's large batches, `BatchId::is_large`, write directly when
    // they come before the fault; whether any does depends on the threads'
    // timing, so it is reported, not asserted: the fault sweeps and
    // `the_large_batch_is_written_directly_in_every_mode`
    // cover direct writes deterministically.)
}

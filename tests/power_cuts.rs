//! A power cut at every I/O call of every operation that changes a store
//! other than `append` (which `power_loss.rs` sweeps): deletes of a trace,
//! a session, a user and a project, retention, `sync` (a checkpoint),
//! log compaction, index compaction, `rebuild_indexes` and closing.
//!
//! Each operation runs on a store on the simulated disk (`SimFileSystem`)
//! holding spans both under its last checkpoint and past it, with a
//! delete already in the log, so that compaction has something to drop.
//! The power fails at the operation's n-th mutating call (its writes,
//! truncations, syncs, creations and removals, including those of the work
//! it leaves to the store's threads, which a read waits for, and of the
//! close), for every n; every file then keeps none or all of its unsynced
//! writes, or each file its own choice of none, all or a torn prefix. The store must reopen and give exactly the answers of before the
//! operation or of after it, never a mix, and pass `verify`.
//!
//! Then each operation meets an I/O error at each of its mutating calls
//! instead (EIO once; or ENOSPC that writes half of a write and stays, a
//! full disk): reads of the live store must keep working and give exactly
//! the answers of before or of after, and the store must reopen (after a
//! power loss that keeps no unsynced write, or without one) to before or
//! after, passing `verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::tid;
use span_sessions::testing::{Fault, FaultError, Ops, SimFileSystem, Survival};
use span_sessions::{
    Durability, ResourceSpans, RetentionPolicy, SessionFilter, SessionQuery, SessionStore, Span,
    SpanId, StoreOptions,
};

/// Traces `1..=TRACES`.
const TRACES: u64 = 24;

fn options() -> StoreOptions {
    SessionStore::options()
        .durability(Durability::GroupCommit)
        .segment_bytes(4096)
        .checkpoint_bytes(u64::MAX)
        .checkpoint_spans(u64::MAX)
        .cache_bytes(1 << 20)
}

/// Trace `n`: two spans (a root and an LLM child) in session `s{n % 4}`
/// (none for every fifth) of project `p` or `q`, by user `u{n % 3}`.
fn turn(n: u64) -> ResourceSpans {
    let project = if n % 4 == 3 { "q" } else { "p" };
    let start = 1_000 * n;
    let mut root = Span::new(tid(n), SpanId([1; 8]), None, "agent", start, start + 500)
        .with_attribute("input.value", format!("question {n}"))
        .with_attribute("output.value", format!("answer {n}"))
        .with_attribute("user.id", format!("u{}", n % 3));
    if !n.is_multiple_of(5) {
        root = root.with_attribute("session.id", format!("s{}", n % 4));
    }
    let llm = Span::new(
        tid(n),
        SpanId([2; 8]),
        Some(SpanId([1; 8])),
        "llm",
        start + 10,
        start + 400,
    )
    .with_attribute("openinference.span.kind", "LLM")
    .with_attribute("llm.token_count.prompt", 10 + n as i64)
    .with_attribute("llm.token_count.completion", 5);
    ResourceSpans::for_project(project, vec![root, llm])
}

/// Every answer an operation could change, or the first read that failed.
fn answers(store: &SessionStore) -> span_sessions::Result<String> {
    let mut out = format!("{:?}\n", store.projects()?);
    for p in ["p", "q"] {
        let all = SessionQuery {
            limit: 1000,
            ..SessionQuery::default()
        };
        out += &format!("{:?}\n", store.sessions(p, &all)?.items);
        out += &format!("{:?}\n", store.project_stats(p)?);
        let search = SessionQuery {
            filter: SessionFilter {
                search: Some("question".into()),
                ..SessionFilter::default()
            },
            ..all
        };
        out += &format!("{:?}\n", store.sessions(p, &search)?.items);
        for s in 0..4 {
            out += &format!("{:?}\n", store.session_history(p, &format!("s{s}"))?);
        }
    }
    for n in 1..=TRACES {
        out += &format!("{:?}\n", store.trace(tid(n))?);
    }
    Ok(out)
}

/// The store every sweep starts from, on `sim`: traces 1-12 under a
/// checkpoint, traces 2-7 deleted (so that the first segments are mostly
/// dead), traces 13-24 past the checkpoint (durable: group commit).
fn build(dir: &Path, sim: &SimFileSystem) -> SessionStore {
    let store = options()
        .file_system(Arc::new(sim.clone()))
        .open(dir)
        .unwrap();
    for n in 1..=TRACES / 2 {
        store.append(&[turn(n)]).unwrap();
    }
    for n in 2..=7 {
        store.delete_trace(tid(n)).unwrap();
    }
    store.sync().unwrap();
    for n in TRACES / 2 + 1..=TRACES {
        store.append(&[turn(n)]).unwrap();
    }
    store
}

/// An operation under test: it may fail (the power is gone).
type Operation = fn(&mut SessionStore) -> span_sessions::Result<()>;

/// Runs `op` whole, without a fault: the answers before and after it, and
/// the mutating calls it makes (with the close's).
fn run_whole(name: &str, op: Operation) -> (String, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let mut store = build(dir.path(), &sim);
    let before = answers(&store).unwrap();
    let start = sim.count(Ops::Mutating);
    op(&mut store).unwrap_or_else(|e| panic!("{name}: {e}"));
    let after = answers(&store).unwrap();
    drop(store);
    (before, after, sim.count(Ops::Mutating) - start)
}

/// Reopens the store in `dir` (on the real disk) and checks that it gives
/// exactly the answers of `before` or of `after`, and passes `verify`.
fn reopens_to_before_or_after(dir: &Path, before: &str, after: &str, what: &str) {
    let store = options()
        .open(dir)
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    let got = answers(&store).unwrap();
    assert!(
        got == before || got == after,
        "{what}: reopened, the answers are neither those of before nor of after"
    );
    let v = store.verify().unwrap();
    assert!(v.is_ok(), "{what}: {:?}", v.problems);
}

/// Cuts the power at every mutating call of `op`; returns the cases run.
fn sweep(name: &str, changes: bool, op: Operation) -> u64 {
    let (before, after, calls) = run_whole(name, op);
    assert!(calls > 0, "{name}: no call to cut");
    assert_eq!(
        before != after,
        changes,
        "{name}: the answers changed or not"
    );
    let mut cases = 0;
    for nth in 0..=calls {
        // Every file keeps none of its unsynced writes, all of them, or
        // (seeded by the call) each its own choice: none, all or a torn
        // prefix.
        for survival in [Some(Survival::Nothing), Some(Survival::All), None] {
            let dir = tempfile::tempdir().unwrap();
            let sim = SimFileSystem::new();
            let mut store = build(dir.path(), &sim);
            sim.arm(Fault::power_cut(Ops::Mutating, nth));
            let _ = op(&mut store);
            drop(store);
            let chosen = match survival {
                Some(survival) => {
                    sim.power_loss(&mut |_, _| survival).unwrap();
                    format!("{survival:?}")
                }
                None => format!("{:?}", sim.power_loss_random(nth).unwrap()),
            };
            let what = format!("{name}: cut at call {nth} of {calls}, {chosen}");
            reopens_to_before_or_after(dir.path(), &before, &after, &what);
            cases += 1;
        }
    }
    eprintln!("{name}: {calls} calls, {cases} cases");
    cases
}

/// An I/O error at every mutating call of `op`, once (EIO) or for good
/// (ENOSPC, the failing write writing half its bytes); returns the cases
/// in which the fault fired.
fn fault_sweep(name: &str, op: Operation) -> u64 {
    let (before, after, calls) = run_whole(name, op);
    let faults = [
        |nth| Fault::nth(Ops::Mutating, nth, FaultError::Io),
        |nth| {
            Fault::nth(Ops::Mutating, nth, FaultError::NoSpace)
                .partial()
                .sticky()
        },
    ];
    let mut fired = 0;
    for nth in 0..=calls {
        for (f, fault) in faults.iter().enumerate() {
            let fault = fault(nth);
            let power_loss = (nth + f as u64).is_multiple_of(2);
            let what = format!("{name}: {fault:?} of {calls} calls, power loss {power_loss}");
            let dir = tempfile::tempdir().unwrap();
            let sim = SimFileSystem::new();
            let mut store = build(dir.path(), &sim);
            sim.arm(fault);
            let result = op(&mut store);
            // Reads keep working, and see a whole operation or none of it
            // (a fault in the close fires below).
            if !sim.injected().is_empty() {
                match answers(&store) {
                    Ok(got) => assert!(
                        got == before || got == after,
                        "{what} ({result:?}): the live store answers neither as before nor as after"
                    ),
                    Err(e) => panic!("{what} ({result:?}): a read failed: {e}"),
                }
            }
            drop(store);
            if sim.injected().is_empty() {
                continue; // past the last call of the operation and the close
            }
            fired += 1;
            if power_loss {
                sim.power_loss(&mut |_, _| Survival::Nothing).unwrap();
            }
            reopens_to_before_or_after(dir.path(), &before, &after, &what);
        }
    }
    eprintln!("{name}: {calls} calls, {fired} faults fired");
    fired
}

#[test]
fn a_power_cut_at_any_call_of_a_delete_reopens_to_before_or_after() {
    sweep("delete_trace", true, |s| s.delete_trace(tid(1)).map(drop));
    sweep("delete_trace past the checkpoint", true, |s| {
        s.delete_trace(tid(TRACES)).map(drop)
    });
    sweep("delete_session", true, |s| {
        s.delete_session("p", "s1").map(drop)
    });
    sweep("delete_user", true, |s| s.delete_user("u1").map(drop));
    sweep("delete_project", true, |s| s.delete_project("q").map(drop));
    sweep("retain", true, |s| {
        s.retain(&RetentionPolicy {
            now_unix_nano: 1_000 * TRACES,
            max_age_nanos: None,
            max_sessions: Some(1),
            project: Some("p".to_owned()),
        })
        .map(drop)
    });
}

#[test]
fn a_power_cut_at_any_call_of_a_checkpoint_or_a_close_loses_nothing() {
    sweep("sync", false, |s| s.sync());
    sweep("close", false, |_| Ok(()));
}

#[test]
fn a_power_cut_at_any_call_of_a_compaction_keeps_the_answers() {
    sweep("compact", false, |s| {
        s.compact()
            .map(|r| assert!(r.segments_dropped > 0, "{r:?}"))
    });
    sweep("compact_index", false, |s| {
        s.compact_index().map(|rewrote| assert!(rewrote))
    });
    sweep("rebuild_indexes", false, |s| s.rebuild_indexes());
}

#[test]
fn an_io_error_at_any_call_of_an_operation_keeps_reads_whole_and_reopens_to_before_or_after() {
    let ops: [(&str, Operation); 9] = [
        ("delete_trace", |s| s.delete_trace(tid(1)).map(drop)),
        ("delete_session", |s| s.delete_session("p", "s1").map(drop)),
        ("delete_user", |s| s.delete_user("u1").map(drop)),
        ("delete_project", |s| s.delete_project("q").map(drop)),
        ("sync", |s| s.sync()),
        ("compact", |s| s.compact().map(drop)),
        ("compact_index", |s| s.compact_index().map(drop)),
        ("rebuild_indexes", |s| s.rebuild_indexes()),
        ("close", |_| Ok(())),
    ];
    for (name, op) in ops {
        assert!(fault_sweep(name, op) > 0, "{name}");
    }
}

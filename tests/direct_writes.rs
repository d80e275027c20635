//! `StoreOptions::direct_writes`: which appends write their blocks past the
//! page cache, and that the log and every answer they leave are exactly
//! what page-cache writes leave, before and after a reopen.
//!
//! The stores run on the simulated file system, which counts direct writes
//! (`Op::DirectWrite`) and rejects misaligned ones; the simulation writes
//! them to real files through the page cache, so what is compared here is
//! the store's choice and the bytes, not the kernel's path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{snapshot, tid};
use span_sessions::testing::{Op, Ops, SimFileSystem};
use span_sessions::{Durability, ResourceSpans, SessionStore, Span, SpanId};

/// Batch `n`: one trace of `spans` spans, each with an input of
/// `input_bytes`, in session `s{n % 3}`.
fn batch(n: u64, spans: u64, input_bytes: usize) -> Vec<ResourceSpans> {
    let trace = tid(n + 1);
    let start = 1_000_000 + n * 1_000;
    let text: String = (0..input_bytes)
        .map(|i| char::from(b'a' + ((i as u64 * 7 + n) % 26) as u8))
        .collect();
    let spans = (0..spans)
        .map(|i| {
            let parent = (i > 0).then_some(SpanId([0, 0, 0, 0, 0, 0, 0, 1]));
            let mut span = Span::new(
                trace,
                SpanId([0, 0, 0, 0, 0, 0, 0, u8::try_from(i + 1).unwrap()]),
                parent,
                if i == 0 { "agent" } else { "llm" },
                start + i,
                start + 500,
            )
            .with_attribute("session.id", format!("s{}", n % 3))
            .with_attribute("input.value", text.clone());
            if i == 0 {
                span = span.with_attribute("output.value", format!("answer {n}"));
            } else {
                span = span.with_attribute("llm.token_count.total", 10i64);
            }
            span
        })
        .collect();
    vec![ResourceSpans::for_project("p", spans)]
}

/// The batches appended: small ones (well under 64 KiB), large ones (one
/// span of ~100 KiB, 40 spans of ~3 KiB, one of ~70 KiB) with a small one
/// between, and a batch of over 1 MiB (12 spans of ~100 KiB).
fn batches() -> Vec<Vec<ResourceSpans>> {
    vec![
        batch(0, 3, 100),
        batch(1, 1, 100_000),
        batch(2, 4, 50),
        batch(3, 2, 10),
        batch(4, 40, 3_000),
        batch(5, 1, 70_000),
        batch(6, 3, 200),
        batch(7, 12, 100_000),
    ]
}

/// Whether `mode` writes batch `n` of [`batches`] directly: 64 KiB or more
/// under `Sync` and `GroupCommit`, 1 MiB or more under `Buffered`.
fn written_directly(mode: Durability, n: usize) -> bool {
    match mode {
        Durability::Buffered => n == 7,
        _ => matches!(n, 1 | 4 | 5 | 7),
    }
}

fn open(dir: &Path, sim: &SimFileSystem, mode: Durability, direct: bool) -> SessionStore {
    SessionStore::options()
        .durability(mode)
        .direct_writes(direct)
        // Small segments, so that large appends also roll.
        .segment_bytes(128 << 10)
        .file_system(Arc::new(sim.clone()))
        .open(dir)
        .unwrap()
}

/// Every log file's name and bytes.
fn log_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::segments(dir)
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

fn direct_writes(sim: &SimFileSystem) -> u64 {
    sim.count(Ops::Only(Op::DirectWrite))
}

#[test]
fn large_appends_write_directly_and_leave_the_same_store() {
    for mode in [
        Durability::Sync,
        Durability::GroupCommit,
        Durability::Buffered,
    ] {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a_sim, b_sim) = (SimFileSystem::new(), SimFileSystem::new());
        let direct = open(a_dir.path(), &a_sim, mode, true);
        let plain = open(b_dir.path(), &b_sim, mode, false);
        for (n, b) in batches().iter().enumerate() {
            let before = direct_writes(&a_sim);
            let spans: usize = b.iter().map(|r| r.spans.len()).sum();
            assert_eq!(direct.append(b).unwrap().accepted, spans);
            assert_eq!(plain.append(b).unwrap().accepted, spans);
            let large = written_directly(mode, n);
            assert_eq!(
                direct_writes(&a_sim) > before,
                large,
                "{mode:?}: batch {n} (large: {large})"
            );
            assert_eq!(
                log_files(a_dir.path()),
                log_files(b_dir.path()),
                "{mode:?}: logs differ after batch {n}"
            );
        }
        assert_eq!(direct_writes(&b_sim), 0, "{mode:?}: direct_writes(false)");
        assert!(common::segments(a_dir.path()).len() > 1, "no roll");
        let traces: Vec<_> = (0..8).map(|n| tid(n + 1)).collect();
        let want = snapshot(&plain, &traces, &[], &[]);
        assert_eq!(snapshot(&direct, &traces, &[], &[]), want, "{mode:?}");
        drop(direct);
        let reopened = open(a_dir.path(), &SimFileSystem::new(), mode, true);
        assert_eq!(reopened.open_report().log_truncated_bytes, 0, "{mode:?}");
        assert_eq!(snapshot(&reopened, &traces, &[], &[]), want, "{mode:?}");
    }
}

#[test]
fn buffered_appends_under_1_mib_and_small_appends_go_through_the_page_cache() {
    // Buffered appends do not wait for the disk; a direct write would, and
    // below 1 MiB nothing hides it.
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let store = open(dir.path(), &sim, Durability::Buffered, true);
    for b in &batches()[..7] {
        store.append(b).unwrap();
    }
    store.sync().unwrap();
    assert_eq!(direct_writes(&sim), 0, "Buffered");
    // Durable appends under 64 KiB of encoded spans.
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFileSystem::new();
    let store = open(dir.path(), &sim, Durability::GroupCommit, true);
    for n in 0..200 {
        store.append(&batch(n, 3, 2_000)).unwrap();
    }
    assert_eq!(direct_writes(&sim), 0, "small GroupCommit appends");
    assert_eq!(store.stats().unwrap().spans, 600);
}

/// A batch of more than 1 MiB (in every durability mode) is encoded
/// span by span while the log's writer thread writes the blocks already
/// made (`Log::writes_behind`), instead of being encoded before the writer
/// lock. With duplicates of stored spans, a span repeated inside the
/// batch and a span rejected in its middle, it is stored exactly as the
/// same batch written through the page cache: the same report, the same
/// log bytes, the same answers, before and after a reopen.
#[test]
fn a_large_batch_with_duplicates_and_rejections_is_stored_as_a_small_one() {
    for mode in [
        Durability::Sync,
        Durability::GroupCommit,
        Durability::Buffered,
    ] {
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a_sim, b_sim) = (SimFileSystem::new(), SimFileSystem::new());
        let direct = open(a_dir.path(), &a_sim, mode, true);
        let plain = open(b_dir.path(), &b_sim, mode, false);
        // 200 spans of ~6 KB: 1.2 MB.
        let first = batch(7, 200, 6_000);
        let want_first = direct.append(&first).unwrap();
        assert_eq!(want_first.accepted, 200, "{mode:?}");
        assert_eq!(plain.append(&first).unwrap(), want_first, "{mode:?}");
        // Half of the first batch again, a new trace of 200 such spans
        // (1.2 MB again) with one of them twice, and a span with a zero
        // span id between.
        let mut spans: Vec<Span> = first[0].spans[..100].to_vec();
        let new = batch(8, 200, 6_000);
        spans.extend(new[0].spans[..100].iter().cloned());
        let mut bad = new[0].spans[0].clone();
        bad.span_id = SpanId([0; 8]);
        spans.push(bad);
        spans.push(new[0].spans[10].clone());
        spans.extend(new[0].spans[100..].iter().cloned());
        let mixed = vec![ResourceSpans::for_project("p", spans)];
        let before = direct_writes(&a_sim);
        let report = direct.append(&mixed).unwrap();
        assert!(
            direct_writes(&a_sim) > before,
            "{mode:?}: not written directly"
        );
        assert_eq!(
            (report.accepted, report.duplicates, report.rejected.len()),
            (200, 101, 1),
            "{mode:?}: {report:?}"
        );
        assert_eq!(plain.append(&mixed).unwrap(), report, "{mode:?}");
        assert_eq!(
            log_files(a_dir.path()),
            log_files(b_dir.path()),
            "{mode:?}: logs differ"
        );
        let traces = [tid(8), tid(9)];
        let want = snapshot(&plain, &traces, &[], &[]);
        assert_eq!(snapshot(&direct, &traces, &[], &[]), want, "{mode:?}");
        drop(direct);
        let reopened = open(a_dir.path(), &SimFileSystem::new(), mode, true);
        assert_eq!(snapshot(&reopened, &traces, &[], &[]), want, "{mode:?}");
    }
}

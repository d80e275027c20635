//! Reopening a crashed store, for profiling recovery:
//! `cargo run --release --example recovery_profile -- DIR [SCRATCH]`.
//! DIR is a store left by a crash (for example the recovery bench's
//! `target/bench-stores/recovery-<MiB>MiB-<key>/span-sessions`); it is
//! copied into a temporary directory under SCRATCH (default: the system's)
//! and the copy is opened, so DIR itself is never changed. `CACHE_MIB`
//! sets `StoreOptions::cache_bytes` (64 MiB by default), `INDEX_BATCH_MIB`
//! `StoreOptions::index_batch_bytes` (a bound of the replay's chunks),
//! `INDEX_SPANS` `StoreOptions::index_batch_spans` (the other), and
//! `SYNC_FIRST=1` writes the copy to disk before the open is timed, and
//! `COLD=1` (as root) also drops the page cache, as after a reboot.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/cpu.rs"]
mod cpu;
use cpu::cpu_ticks;

use std::path::{Path, PathBuf};
use std::time::Instant;

use span_sessions::SessionStore;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn main() {
    let from = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: recovery_profile DIR [SCRATCH]"),
    );
    let scratch = std::env::args().nth(2).map(PathBuf::from);
    let tmp = match &scratch {
        Some(s) => tempfile::tempdir_in(s).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let dir = tmp.path().join("store");
    copy_dir(&from, &dir);
    // SYNC_FIRST=1: write the copy back to disk before the clock starts,
    // so that the open does not share the disk and a core with the
    // kernel's writeback of the copy (about a second of a 1 GiB open).
    if std::env::var_os("SYNC_FIRST").is_some() {
        let _ = std::process::Command::new("sync").status();
    }
    // COLD=1 (root only): also drop the page cache, so that the open reads
    // the log and the index from the disk, as after a reboot.
    if std::env::var_os("COLD").is_some() {
        let _ = std::process::Command::new("sync").status();
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
            eprintln!("COLD=1: could not drop the page cache: {e}");
        }
    }
    let t = Instant::now();
    let mut options = SessionStore::options();
    if let Some(mib) = std::env::var("CACHE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options = options.cache_bytes(mib << 20);
    }
    if let Some(mib) = std::env::var("INDEX_BATCH_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options = options.index_batch_bytes(mib << 20);
    }
    // INDEX_SPANS: `StoreOptions::index_batch_spans`.
    if let Some(spans) = std::env::var("INDEX_SPANS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        options = options.index_batch_spans(spans);
    }
    let before = cpu_ticks();
    let store = options.open(&dir).unwrap();
    let el = t.elapsed();
    let after = cpu_ticks();
    let report = store.open_report();
    let t = report.timings;
    println!(
        "opened in {el:?}: {} frames replayed, {} log bytes\n  index {:?}, log {:?}, replay {:?}, checkpoint {:?}",
        report.frames_replayed,
        store.stats().map(|s| s.log_bytes).unwrap_or(0),
        t.index,
        t.log,
        t.replay,
        t.checkpoint
    );
    // CPU time of the opening thread (which applies the replay) and of
    // the whole process during the open, in clock ticks (1/100 s): on a
    // shared machine steadier than the wall time.
    println!(
        "  cpu: opening thread {} ticks, process {} ticks",
        after.0 - before.0,
        after.1 - before.1
    );
}

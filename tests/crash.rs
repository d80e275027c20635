//! Crash consistency with real processes: a child process appends numbered
//! batches from several threads and is killed with SIGKILL at a random
//! moment, again and again, on the same store.
//!
//! The child is this test binary, re-run with `SPAN_SESSIONS_CRASH_CHILD`
//! set (see `child_process_entry_point`). It prints `send w n` before writer
//! `w` appends its batch `n` and `ack w n` once `append` returned `Ok`; on
//! start it recovers the store (the previous child was killed too, maybe in
//! the middle of its own recovery) and re-sends each writer's last batch,
//! as a retrying exporter would. Writer 0 also calls `sync` now and then, so
//! kills land in checkpoints as well.
//!
//! After each kill the parent opens a copy of the store (so that the next
//! child still finds the crashed original) and checks, with
//! `reliability::check_store`: every acknowledged batch is present; per
//! writer, what is present is a prefix of what was sent (whole batches,
//! then at most a prefix of the batch in flight); every span reads back;
//! every session summary equals a recomputation from the spans present;
//! `verify` (a replay of the whole log compared with every index table)
//! passes.
//!
//! SIGKILL is a process crash: the operating system keeps what was written,
//! so every mode, `Buffered` included, must keep every acknowledged batch.
//! Power loss is simulated in `power_loss.rs`.
//!
//! `SPAN_SESSIONS_CRASH_ITERS` sets the kills per durability mode (default
//! 8; `docs/RELIABILITY.md` gives the long run). `SPAN_SESSIONS_CRASH_SEED`
//! replays a run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod reliability;

mod common;

use common::copy_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reliability::{BatchId, Rng, check_store, env_bound};
use span_sessions::{Durability, SessionStore, StoreOptions};

const CHILD_ENV: &str = "SPAN_SESSIONS_CRASH_CHILD";

/// Small segments, so that kills land in rolls; checkpoints either small
/// (kills land in checkpoints) or large (the next child replays a long log
/// tail, and kills land in that recovery).
fn options(mode: Durability, long_replay: bool) -> StoreOptions {
    SessionStore::options()
        .durability(mode)
        .segment_bytes(64 << 10)
        .checkpoint_bytes(if long_replay { 64 << 20 } else { 48 << 10 })
        .cache_bytes(4 << 20)
}

fn mode_name(mode: Durability) -> &'static str {
    match mode {
        Durability::Sync => "sync",
        Durability::GroupCommit => "group",
        _ => "buffered",
    }
}

fn parse_mode(s: &str) -> Durability {
    match s {
        "sync" => Durability::Sync,
        "group" => Durability::GroupCommit,
        _ => Durability::Buffered,
    }
}

/// The child: `SPAN_SESSIONS_CRASH_CHILD=<dir>;<mode>;<long replay: 0 or
/// 1>;<first batch of writer 0>,<first batch of writer 1>,...`. Appends until killed (or
/// for at most 60 s, should the parent be gone).
#[test]
fn child_process_entry_point() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return; // a normal test run: nothing to do
    };
    let parts: Vec<&str> = spec.split(';').collect();
    let dir = PathBuf::from(parts[0]);
    let mode = parse_mode(parts[1]);
    let long_replay = parts[2] == "1";
    let starts: Vec<u64> = parts[3].split(',').map(|s| s.parse().unwrap()).collect();
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let say = |out: &std::sync::Mutex<std::io::Stdout>, line: String| {
        let out = out.lock().unwrap();
        let mut out = out.lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    };
    say(&out, "CRASH opening".into());
    let store = Arc::new(options(mode, long_replay).open(&dir).unwrap());
    say(&out, "CRASH ready".into());
    let deadline = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = starts
        .iter()
        .enumerate()
        .map(|(w, &start)| {
            let store = Arc::clone(&store);
            let out = Arc::clone(&out);
            std::thread::spawn(move || {
                let w = u32::try_from(w).unwrap();
                for n in start.. {
                    if Instant::now() > deadline {
                        return;
                    }
                    let id = BatchId::new(w, n);
                    say(&out, format!("CRASH send {w} {n}"));
                    store.append(&id.batch()).unwrap();
                    say(&out, format!("CRASH ack {w} {n}"));
                    if w == 0 && n % 23 == 22 {
                        store.sync().unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// What happened over a run.
#[derive(Debug, Default)]
struct Figures {
    kills: u64,
    /// Kills while the child was opening (recovering) the store.
    kills_during_open: u64,
    acked: u64,
    batches_present: u64,
    partial_batches: u64,
}

/// Kills per store: a long run starts a fresh store every so often, so that
/// the check (which replays the whole log) does not grow without bound.
const KILLS_PER_STORE: u64 = 25;

/// Runs `iters` kill-and-check cycles in `mode`, `KILLS_PER_STORE` per store.
fn crash_loop(mode: Durability, writers: u32, iters: u64, seed: u64) -> Figures {
    let mut figures = Figures::default();
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(KILLS_PER_STORE);
        crash_store(mode, writers, n, seed + done, &mut figures);
        done += n;
    }
    figures
}

/// `iters` kill-and-check cycles on one store.
fn crash_store(mode: Durability, writers: u32, iters: u64, seed: u64, figures: &mut Figures) {
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let exe = std::env::current_exe().unwrap();
    // Per writer: the highest batch sent, and every batch acknowledged.
    let mut sent: BTreeMap<u32, u64> = BTreeMap::new();
    let mut acked: BTreeSet<BatchId> = BTreeSet::new();
    for iter in 0..iters {
        let starts: Vec<String> = (0..writers)
            .map(|w| sent.get(&w).copied().unwrap_or(0).to_string())
            .collect();
        let long_replay = rng.below(2) == 0;
        let spec = format!(
            "{};{};{};{}",
            dir.display(),
            mode_name(mode),
            u8::from(long_replay),
            starts.join(",")
        );
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_process_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The test harness may print its own text before ours on a
                // line ("test child_process_entry_point ... CRASH opening").
                let Some(at) = line.find("CRASH ") else {
                    continue;
                };
                if tx.send(line[at..].to_owned()).is_err() {
                    break;
                }
            }
        });
        // A quarter of the kills aim at the child's recovery of the previous
        // crash (right after it starts opening the store); the rest land
        // at a random moment of the appends.
        let (milestone, wait_ms) = if rng.below(4) == 0 {
            ("CRASH opening", rng.below(25))
        } else {
            ("CRASH ready", rng.below(300))
        };
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines.iter().any(|l: &String| l == milestone) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(l) => lines.push(l),
                Err(_) => {
                    panic!("iteration {iter}: the child never printed {milestone:?}; seed {seed}")
                }
            }
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "iteration {iter}: the child exited on its own ({status}); seed {seed}"
        );
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        figures.kills += 1;
        if lines.iter().any(|l| l == "CRASH opening") && !lines.iter().any(|l| l == "CRASH ready") {
            figures.kills_during_open += 1;
        }
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() == 4 && f[0] == "CRASH" {
                let (w, n): (u32, u64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
                match f[1] {
                    "send" => {
                        let s = sent.entry(w).or_insert(0);
                        *s = (*s).max(n);
                    }
                    "ack" => {
                        acked.insert(BatchId::new(w, n));
                    }
                    _ => {}
                }
            }
        }
        // Check a copy; the next child recovers the original.
        let check_dir = tmp.path().join(format!("check-{iter}"));
        copy_dir(&dir, &check_dir);
        let store = options(mode, false).open(&check_dir).unwrap_or_else(|e| {
            panic!("{mode:?} iteration {iter}: reopen after SIGKILL failed: {e}; seed {seed}")
        });
        let all_sent: Vec<BatchId> = sent
            .iter()
            .flat_map(|(&w, &max)| (0..=max).map(move |n| BatchId::new(w, n)))
            .collect();
        let acked_list: Vec<BatchId> = acked.iter().copied().collect();
        let whole = check_store(&store, &all_sent, &acked_list).unwrap_or_else(|e| {
            panic!("{mode:?} iteration {iter} (killed after {wait_ms} ms): {e}; seed {seed}")
        });
        if iter + 1 == iters {
            figures.batches_present += whole as u64;
        }
        figures.partial_batches += all_sent
            .iter()
            .filter(|id| {
                matches!(
                    reliability::presence(&store, **id),
                    Ok(reliability::Presence::Prefix(_))
                )
            })
            .count() as u64;
        drop(store);
        std::fs::remove_dir_all(&check_dir).unwrap();
    }
    figures.acked += acked.len() as u64;
}

fn run(mode: Durability, writers: u32) {
    let iters = env_bound("SPAN_SESSIONS_CRASH_ITERS", 8);
    let seed = env_bound("SPAN_SESSIONS_CRASH_SEED", 0x5eed_0000 + writers as u64);
    let started = Instant::now();
    let f = crash_loop(mode, writers, iters, seed);
    eprintln!(
        "crash {mode:?} ({writers} writers, seed {seed}): {f:?} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(f.kills, iters);
}

#[test]
fn sigkill_during_sync_appends_loses_nothing_acknowledged() {
    run(Durability::Sync, 2);
}

#[test]
fn sigkill_during_group_commit_appends_loses_nothing_acknowledged() {
    run(Durability::GroupCommit, 3);
}

#[test]
fn sigkill_during_buffered_appends_loses_nothing_acknowledged() {
    // Three writers: the third's batches include one of 1.2 MB, which
    // `Buffered` writes directly, and some of ~70 KiB, which it does not.
    run(Durability::Buffered, 3);
}

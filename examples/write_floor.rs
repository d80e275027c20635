//! What a durable append costs the machine, without the store: writes
//! MiB (default 1,600) to a new file in DIR (default `target`) in 4 MiB
//! appends, each followed by an fdatasync, once through the page cache and
//! once with `O_DIRECT` (alternating, ROUNDS times, default 2), and prints
//! wall-clock MB/s and the CPU seconds the process spent (user and system).
//! `cargo run --release --example write_floor -- [MiB] [DIR] [ROUNDS]`.
//!
//! This is the floor under `append` for large spans: the store's log writes
//! the same way (`StoreOptions::direct_writes`). Linux only.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Instant;

const CHUNK: usize = 4 << 20;

/// User and system CPU seconds of this process so far (/proc/self/stat).
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| f[i].parse::<f64>().unwrap() / 100.0;
    (ticks(11), ticks(12))
}

fn run(path: &PathBuf, mib: usize, direct: bool) {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts.open(path).unwrap();
    // Page-aligned, as O_DIRECT needs; filled with non-zero bytes.
    let mut buf = memmap2::MmapMut::map_anon(CHUNK).unwrap();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    let chunks = (mib << 20) / CHUNK;
    let (u0, s0) = cpu_seconds();
    let t = Instant::now();
    for i in 0..chunks {
        file.write_all_at(&buf, (i * CHUNK) as u64).unwrap();
        file.sync_data().unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    let (u1, s1) = cpu_seconds();
    let bytes = (chunks * CHUNK) as f64;
    println!(
        "{:<10} {:>7.0} MB/s  {:.2} s wall  cpu {:.2} s user + {:.2} s system for {:.2} GB",
        if direct { "O_DIRECT" } else { "page cache" },
        bytes / el / 1e6,
        el,
        u1 - u0,
        s1 - s0,
        bytes / 1e9
    );
    drop(file);
    std::fs::remove_file(path).unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1600, |s| s.parse().expect("MiB"));
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "target".into()));
    let rounds: usize = args.next().map_or(2, |s| s.parse().expect("ROUNDS"));
    let path = dir.join("write-floor.tmp");
    for _ in 0..rounds {
        run(&path, mib, false);
        run(&path, mib, true);
    }
}

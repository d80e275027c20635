//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`)
//! through the same entry points the cargo-fuzz targets call
//! (`span_sessions::fuzzing`), so a plain `cargo test` runs them as
//! regression cases. A file that once crashed a target belongs in its
//! corpus folder, so that it keeps being checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    let mut total = 0;
    for (name, entry) in span_sessions::fuzzing::targets() {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target needs a seed corpus)", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: empty corpus", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap();
            if let Err(e) = entry(&data) {
                panic!("{name}: {} fails: {e}", f.display());
            }
        }
        eprintln!("{name}: {} corpus files pass", files.len());
        total += files.len();
    }
    assert!(total > 0);
}

/// Regenerates the seed corpora from `span_sessions::fuzzing::seeds`:
/// `cargo test --test fuzz_corpus -- --ignored write_seed_corpora`.
/// Seeds are named `seed-<n>`; other files (fuzzing finds) are kept.
#[test]
#[ignore = "writes into fuzz/corpus"]
fn write_seed_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus");
    for (name, _) in span_sessions::fuzzing::targets() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in span_sessions::fuzzing::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}

/// Replays one input (a fuzzing artifact) through its target with the
/// target's debug output: `FUZZ_TARGET=store_model FUZZ_INPUT=path
/// SPAN_SESSIONS_FUZZ_DEBUG=1 cargo test --release --test fuzz_corpus --
/// --ignored replay --nocapture`.
#[test]
#[ignore = "needs FUZZ_TARGET and FUZZ_INPUT"]
fn replay() {
    let target = std::env::var("FUZZ_TARGET").expect("FUZZ_TARGET");
    let input = std::env::var("FUZZ_INPUT").expect("FUZZ_INPUT");
    let data = std::fs::read(&input).unwrap();
    let (_, entry) = span_sessions::fuzzing::targets()
        .into_iter()
        .find(|(n, _)| *n == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    if let Err(e) = entry(&data) {
        panic!("{target}: {input}: {e}");
    }
}

//! Every file-system call the log makes, in one place.
//!
//! The rest of the log module never touches `std::fs` or `memmap2` directly, so a
//! fault-injection layer (failing writes, failing fsyncs, short reads) can later
//! replace this one file without touching the recovery or append logic. It is
//! also the only place in the crate that holds `unsafe` code (the `mmap` call).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// An open segment file. A newtype so that callers cannot reach the raw
/// `File` and bypass this module.
#[derive(Debug)]
pub(super) struct SegmentFile {
    file: File,
}

impl SegmentFile {
    /// Opens an existing segment for reading and writing (the active segment).
    pub(super) fn open_rw(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(SegmentFile { file })
    }

    /// Opens an existing segment for reading only (a sealed segment, about to
    /// be mapped).
    pub(super) fn open_ro(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new().read(true).open(path)?;
        Ok(SegmentFile { file })
    }

    /// Creates a new segment file; fails if it already exists, so that a bug in
    /// base computation can never overwrite a segment holding data.
    pub(super) fn create_new(path: &Path) -> io::Result<SegmentFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(SegmentFile { file })
    }

    /// Current length of the file on disk.
    pub(super) fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Positional read of exactly `buf.len()` bytes; safe to call from many
    /// threads at once (pread does not move a shared cursor).
    pub(super) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Positional write of all of `buf`.
    pub(super) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Truncates (or extends with zeros) to `len`.
    pub(super) fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// fdatasync: data and the metadata needed to read it back (the size).
    pub(super) fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Maps the whole file read-only.
    ///
    /// Only sealed segments are mapped: their length is final and nothing in
    /// this process writes to or truncates them afterwards.
    #[allow(unsafe_code)]
    pub(super) fn map(&self) -> io::Result<Mmap> {
        // SAFETY: `Mmap::map` is unsafe because the mapped bytes are handed out
        // as `&[u8]`, which Rust assumes cannot change, and because accessing a
        // page past the end of a truncated file raises SIGBUS. Both hazards need
        // someone to modify or truncate the file while the map is alive. The log
        // only maps sealed segments, whose length was fixed and synced before
        // mapping, and never writes to, truncates or reuses a sealed segment
        // (the only truncation, tail recovery and rollback of a failed append,
        // happens before a segment is mapped). Other processes are kept out by
        // the store's lock file; we assume nobody edits the files by hand while
        // the store is open, as every mmap-based engine must.
        unsafe { Mmap::map(&self.file) }
    }
}

/// Creates `dir` if it is missing; when it had to be created, fsyncs the parent
/// so the new directory entry survives a crash.
pub(super) fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Lists the names and paths of the regular entries in `dir`.
pub(super) fn list_dir(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        // A name that is not UTF-8 cannot be one of ours; skip it like any other
        // foreign file.
        if let Ok(name) = entry.file_name().into_string() {
            out.push((name, entry.path()));
        }
    }
    Ok(out)
}

/// fsyncs a directory, making created or removed entries durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes a file (used only to roll back a segment created by a failed append).
pub(super) fn remove_file(path: &Path) -> io::Result<()> {
    fs::remove_file(path)
}

//! Every file-system call the log makes, in one place.
//!
//! The rest of the log module never touches `std::fs` or `memmap2` directly:
//! it goes through these wrappers over the crate's [`FileSystem`] seam, which
//! is the operating system's in production and a fault-injecting simulation
//! in tests (`crate::fs::sim`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::fs::{FileHandle, FileSystem, OpenMode};

/// An open segment file. A newtype so that callers cannot reach the handle
/// and bypass this module.
#[derive(Debug)]
pub(super) struct SegmentFile {
    file: Arc<dyn FileHandle>,
}

impl SegmentFile {
    /// Opens an existing segment for reading and writing (the active segment).
    pub(super) fn open_rw(fs: &dyn FileSystem, path: &Path) -> io::Result<SegmentFile> {
        Ok(SegmentFile {
            file: fs.open(path, OpenMode::ReadWrite)?,
        })
    }

    /// Opens an existing segment for reading only (a sealed segment, about to
    /// be mapped).
    pub(super) fn open_ro(fs: &dyn FileSystem, path: &Path) -> io::Result<SegmentFile> {
        Ok(SegmentFile {
            file: fs.open(path, OpenMode::ReadOnly)?,
        })
    }

    /// Creates a new segment file; fails if it already exists, so that a bug in
    /// base computation can never overwrite a segment holding data.
    pub(super) fn create_new(fs: &dyn FileSystem, path: &Path) -> io::Result<SegmentFile> {
        Ok(SegmentFile {
            file: fs.open(path, OpenMode::CreateNew)?,
        })
    }

    /// Current length of the file on disk.
    pub(super) fn len(&self) -> io::Result<u64> {
        self.file.len()
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

    /// Positional write of all of `buf`, bypassing the page cache where
    /// possible; `buf`'s address and length and `offset` are multiples of
    /// [`crate::fs::DIRECT_ALIGN`].
    pub(super) fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_direct_at(buf, offset)
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
    /// this process writes to or truncates them afterwards (see the SAFETY
    /// note in `crate::fs`).
    pub(super) fn map(&self) -> io::Result<Mmap> {
        self.file.map()
    }
}

/// Creates `dir` if it is missing; when it had to be created, fsyncs the parent
/// so the new directory entry survives a crash.
pub(super) fn ensure_dir(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    if fs.is_dir(dir) {
        return Ok(());
    }
    fs.create_dir_all(dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs.sync_dir(parent)?;
    }
    Ok(())
}

/// Lists the names and paths of the regular entries in `dir`.
pub(super) fn list_dir(fs: &dyn FileSystem, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    fs.list_dir(dir)
}

/// fsyncs a directory, making created or removed entries durable.
pub(super) fn sync_dir(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    fs.sync_dir(dir)
}

/// Removes a file (used only to roll back a segment created by a failed append).
pub(super) fn remove_file(fs: &dyn FileSystem, path: &Path) -> io::Result<()> {
    fs.remove_file(path)
}

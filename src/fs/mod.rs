//! The file-system seam: every file the log touches, and (when a store is
//! opened on a non-default file system) the index file, go through the
//! [`FileSystem`] and [`FileHandle`] traits.
//!
//! Production uses [`OsFileSystem`], a thin layer over `std::fs`. Tests use
//! [`sim::SimFileSystem`], which fails chosen calls (ENOSPC, EIO) and keeps a
//! "durable" image next to the written one to simulate power loss.
//!
//! Why trait objects and not a type parameter: the file system is chosen once
//! at open and held as `Arc<dyn FileSystem>`, so `SessionStore` stays a plain,
//! non-generic type. The price is one indirect call per system call (a pread,
//! pwrite or fdatasync that costs microseconds); sealed segments are read
//! through their memory map, with no call at all. The index uses redb's own
//! file backend unless a non-default file system is given, so the default
//! path is exactly what it was before this seam existed.
//!
//! This module also holds the crate's only `unsafe` code: the `mmap` call in
//! [`OsFileHandle::map`].

pub(crate) mod sim;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::Mmap;

/// How [`FileSystem::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// An existing file, for reading only.
    ReadOnly,
    /// An existing file, for reading and writing.
    ReadWrite,
    /// A new file for reading and writing; fails if the file exists.
    CreateNew,
    /// An existing file for reading and writing, created empty if missing.
    Create,
}

/// The directory operations of a file system, and the way to open files.
pub trait FileSystem: fmt::Debug + Send + Sync {
    /// Opens `path` as `mode` says.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// True if `dir` exists and is a directory.
    fn is_dir(&self, dir: &Path) -> bool;
    /// The names and paths of the regular files in `dir` (names that are not
    /// UTF-8 are skipped: they cannot be ours).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>>;
    /// fsyncs a directory, making created and removed entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// An open file: positional reads and writes, length, fdatasync, mapping.
/// Every method takes `&self` and is safe to call from several threads.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's length is an I/O call that can fail; emptiness is never asked"
)]
pub trait FileHandle: fmt::Debug + Send + Sync {
    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, bypassing the operating system's
    /// page cache where the file system allows it (`O_DIRECT`). The
    /// caller's buffer address, buffer length and offset are multiples of
    /// [`DIRECT_ALIGN`]. The default writes through the page
    /// cache, as [`FileHandle::write_all_at`] does; either way the bytes
    /// are durable only after [`FileHandle::sync_data`].
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    /// Truncates, or extends with zeros, to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: data and the metadata needed to read it back.
    fn sync_data(&self) -> io::Result<()>;
    /// Maps the whole file read-only. Only called for files whose length is
    /// final and that nothing writes to any more (sealed segments).
    fn map(&self) -> io::Result<Mmap>;
}

/// Alignment of [`FileHandle::write_direct_at`]'s buffer address, length
/// and offset: 4 KiB, the logical block size of every disk and file system
/// that direct I/O is used on here (a multiple of 512-byte sectors too).
pub const DIRECT_ALIGN: usize = 4096;

/// The operating system's file system (`std::fs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct OsFileSystem;

/// A file of [`OsFileSystem`].
#[derive(Debug)]
pub struct OsFileHandle {
    file: File,
    path: PathBuf,
    /// A second descriptor opened with `O_DIRECT` at the first direct
    /// write; `None` when the file system refuses direct I/O (tmpfs), and
    /// then direct writes go through `file`.
    direct: OnceLock<Option<File>>,
    /// Set when a direct write was refused (`EINVAL`): later ones go
    /// through the page cache.
    direct_refused: AtomicBool,
}

impl FileSystem for OsFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let mut o = OpenOptions::new();
        o.read(true);
        match mode {
            OpenMode::ReadOnly => {}
            OpenMode::ReadWrite => {
                o.write(true);
            }
            OpenMode::CreateNew => {
                o.write(true).create_new(true);
            }
            OpenMode::Create => {
                o.write(true).create(true).truncate(false);
            }
        }
        Ok(Arc::new(OsFileHandle {
            file: o.open(path)?,
            path: path.to_path_buf(),
            direct: OnceLock::new(),
            direct_refused: AtomicBool::new(false),
        }))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            if let Ok(name) = entry.file_name().into_string() {
                out.push((name, entry.path()));
            }
        }
        Ok(out)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

impl FileHandle for OsFileHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.direct_refused.load(Ordering::Relaxed)
            && let Some(direct) = self.direct.get_or_init(|| open_direct(&self.path))
        {
            match direct.write_all_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    // The file system takes O_DIRECT opens but not this
                    // alignment: use the page cache from now on.
                    self.direct_refused.store(true, Ordering::Relaxed);
                }
                done => return done,
            }
        }
        self.file.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    #[allow(unsafe_code)]
    fn map(&self) -> io::Result<Mmap> {
        // SAFETY: `Mmap::map` is unsafe because the mapped bytes are handed out
        // as `&[u8]`, which Rust assumes cannot change, and because accessing a
        // page past the end of a truncated file raises SIGBUS. Both hazards need
        // someone to modify or truncate the file while the map is alive. The log
        // only maps sealed segments, whose length was fixed and synced before
        // mapping, and never writes to, truncates or reuses a sealed segment
        // (the only truncation, tail recovery and rollback of a failed append,
        // happens before a segment is mapped; salvage rewrites damaged bytes
        // before recovery maps anything). Other processes are kept out by the
        // store's lock file; we assume nobody edits the files by hand while the
        // store is open, as every mmap-based engine must.
        unsafe { Mmap::map(&self.file) }
    }
}

/// Opens `path` for writing with `O_DIRECT`; `None` where the file system
/// (or the platform) has no direct I/O.
fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// Adapts a [`FileHandle`] to redb's storage backend, so that the index file
/// of a store opened on a non-default file system goes through it too.
#[derive(Debug)]
pub(crate) struct RedbBackend {
    file: Arc<dyn FileHandle>,
}

impl RedbBackend {
    pub(crate) fn new(file: Arc<dyn FileHandle>) -> RedbBackend {
        RedbBackend { file }
    }
}

impl redb::StorageBackend for RedbBackend {
    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
}

/// A redb backend that can be fenced off: once [`Fence::raise`] is called,
/// every write, truncation and sync fails, so nothing more reaches the
/// index file.
///
/// Why: redb makes its last non-durable commit durable when the database is
/// closed. The store commits the index non-durably and only makes it durable
/// after the log is synced (a checkpoint). After a failed log write or fsync
/// that order can no longer be kept, and a close would record in the index
/// an `applied_lsn` past what the log holds on disk; after a power loss the
/// store would then refuse to open. Fencing makes the close fail instead, so
/// the index file keeps its last checkpoint and the reopen replays the log.
#[derive(Debug)]
pub(crate) struct Fenced<B> {
    inner: B,
    fence: Fence,
}

/// The switch of a [`Fenced`] backend; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fence(Arc<AtomicBool>);

impl Fence {
    /// Refuses every later write and sync of the fenced backend.
    pub(crate) fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn check(&self) -> io::Result<()> {
        if self.0.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the index is fenced: the store is poisoned and writes nothing more until reopened",
            ));
        }
        Ok(())
    }
}

impl<B> Fenced<B> {
    pub(crate) fn new(inner: B, fence: Fence) -> Fenced<B> {
        Fenced { inner, fence }
    }
}

impl<B: redb::StorageBackend> redb::StorageBackend for Fenced<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fence.check()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fence.check()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fence.check()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

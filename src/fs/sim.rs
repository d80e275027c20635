//! A simulated disk for tests and fuzzing: a [`FileSystem`] over real files
//! that fails chosen calls and simulates power loss.
//!
//! The real files hold the *written* image: what the page cache shows, and
//! what every read returns. Next to each file the simulation keeps the
//! *durable* image (its content as of its last successful `sync_data`) and
//! the list of writes and truncations made since. [`SimFileSystem::power_loss`]
//! then rewrites every file to what a power cut would leave: the durable
//! image plus none, all, or a prefix of the unsynced writes (the last one torn
//! at any byte, optionally with the file's full length zero-filled). A file
//! whose directory entry was never fsynced vanishes unless its writes survive.
//!
//! Failures follow what Linux does:
//! - a failing write may write part of its buffer first ([`Fault::partial`]);
//! - a failing `sync_data` loses the file's unsynced writes: they stay
//!   readable (the page cache keeps them) but never become durable, and a
//!   later sync that succeeds does not bring them back ("fsyncgate");
//! - after [`SimFileSystem::crash`] the disk is gone: every call fails with
//!   EIO and changes nothing, so a store being dropped cannot write more.
//!
//! The simulation calls no `fsync` on the real files: durability is only
//! simulated, which makes it fast enough for fuzzing.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use memmap2::Mmap;

use super::{DIRECT_ALIGN, FileHandle, FileSystem, OpenMode, OsFileSystem};

/// Linux's ENOSPC ("No space left on device").
const ENOSPC: i32 = 28;
/// Linux's EIO ("Input/output error").
const EIO: i32 = 5;

/// One kind of call, as counted and matched by [`Ops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// Opening an existing file.
    Open,
    /// Creating a file.
    Create,
    /// Reading a file's length.
    Len,
    /// A positional read.
    Read,
    /// A positional write.
    Write,
    /// A positional write of whole aligned blocks past the page cache
    /// (`FileHandle::write_direct_at`); simulated like [`Op::Write`].
    DirectWrite,
    /// Truncating or extending a file.
    SetLen,
    /// fdatasync of a file.
    Sync,
    /// fsync of a directory.
    SyncDir,
    /// Removing a file.
    Remove,
    /// Listing a directory.
    List,
    /// Creating a directory.
    CreateDir,
    /// Mapping a file.
    Map,
}

/// A set of [`Op`]s, for arming faults and counting calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ops {
    /// Every call.
    All,
    /// Calls that change the disk: writes, truncations, syncs, creations
    /// and removals.
    Mutating,
    /// Writes and truncations.
    Writes,
    /// File and directory syncs.
    Syncs,
    /// Exactly one kind of call.
    Only(Op),
}

impl Ops {
    /// True if `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        match self {
            Ops::All => true,
            Ops::Mutating => matches!(
                op,
                Op::Write
                    | Op::DirectWrite
                    | Op::SetLen
                    | Op::Sync
                    | Op::SyncDir
                    | Op::Create
                    | Op::Remove
            ),
            Ops::Writes => matches!(op, Op::Write | Op::DirectWrite | Op::SetLen),
            Ops::Syncs => matches!(op, Op::Sync | Op::SyncDir),
            Ops::Only(o) => o == op,
        }
    }
}

/// The error a fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultError {
    /// ENOSPC: the disk is full.
    NoSpace,
    /// EIO: the device failed.
    Io,
}

impl FaultError {
    fn to_io(self) -> io::Error {
        match self {
            FaultError::NoSpace => io::Error::from_raw_os_error(ENOSPC),
            FaultError::Io => io::Error::from_raw_os_error(EIO),
        }
    }
}

/// A fault to inject: the `nth` call (0 = the next one) in `ops`, counted
/// from when it is armed, fails with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which calls are counted.
    pub ops: Ops,
    /// How many matching calls succeed before the failing one.
    pub nth: u64,
    /// The error returned.
    pub error: FaultError,
    /// For a write: write the first half of the buffer before failing.
    pub partial: bool,
    /// Keep failing every matching call after the first failure (a disk
    /// that stays full or broken) until [`SimFileSystem::heal`].
    pub sticky: bool,
    /// The power fails at this call: it and every later call fail with EIO
    /// and change nothing, as after [`SimFileSystem::crash`].
    pub crash: bool,
}

impl Fault {
    /// The `nth` call in `ops` fails once with `error`.
    pub fn nth(ops: Ops, nth: u64, error: FaultError) -> Fault {
        Fault {
            ops,
            nth,
            error,
            partial: false,
            sticky: false,
            crash: false,
        }
    }

    /// The power fails at the `nth` call in `ops`: that call and everything
    /// after it never happen. Follow with [`SimFileSystem::power_loss`].
    pub fn power_cut(ops: Ops, nth: u64) -> Fault {
        Fault {
            crash: true,
            ..Fault::nth(ops, nth, FaultError::Io)
        }
    }

    /// A failing write writes half of its buffer first.
    pub fn partial(mut self) -> Fault {
        self.partial = true;
        self
    }

    /// Every matching call from the failing one on fails.
    pub fn sticky(mut self) -> Fault {
        self.sticky = true;
        self
    }
}

/// A fault that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// The call that failed.
    pub op: Op,
    /// The file or directory it was about.
    pub path: PathBuf,
    /// The error it returned.
    pub error: FaultError,
}

/// What of a file's unsynced writes survives a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survival {
    /// Only the durable image: every unsynced write is lost, and a file
    /// whose directory entry was never synced disappears.
    Nothing,
    /// Every write reached the disk (what a process crash leaves).
    All,
    /// The unsynced writes reached the disk in order, up to this many bytes
    /// of written data; the write in progress at that point is torn.
    Prefix(u64),
    /// Like `Prefix`, but the file keeps the length it had in the page cache
    /// (the size reached the disk, the data did not): past the tear, rounded
    /// down to a 512-byte sector, it reads as zeros (never below the durable
    /// length: synced bytes are not lost).
    PrefixZeroFilled(u64),
}

/// What a file had not yet synced when the power went, for choosing its
/// [`Survival`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsynced {
    /// Bytes written since the last sync (sum over the writes).
    pub bytes: u64,
    /// Writes and truncations since the last sync.
    pub ops: usize,
    /// Whether the file's directory entry is durable.
    pub entry_durable: bool,
}

/// A change to a file not yet synced.
#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// What the simulation knows about one file.
#[derive(Debug, Clone, Default)]
struct Shadow {
    /// The content as of the last successful sync.
    durable: Vec<u8>,
    /// True once a directory sync made the file's entry durable.
    entry_durable: bool,
    /// Changes since the last successful sync, in order.
    pending: Vec<Pending>,
}

impl Shadow {
    fn unsynced(&self) -> Unsynced {
        Unsynced {
            bytes: self
                .pending
                .iter()
                .map(|p| match p {
                    Pending::Write { data, .. } => data.len() as u64,
                    Pending::SetLen(_) => 0,
                })
                .sum(),
            ops: self.pending.len(),
            entry_durable: self.entry_durable,
        }
    }

    /// The content after applying unsynced changes up to `budget` bytes.
    fn image(&self, budget: u64, zero_fill: bool) -> Vec<u8> {
        let mut img = self.durable.clone();
        let durable_len = img.len() as u64;
        let mut full_len = img.len() as u64;
        let mut left = budget;
        let mut torn = false;
        // File offset where the surviving data stops (for zero fill).
        let mut tear_at: Option<u64> = None;
        for p in &self.pending {
            match p {
                Pending::SetLen(n) => {
                    full_len = *n;
                    if !torn {
                        img.resize(to_usize(*n), 0);
                    }
                }
                Pending::Write { offset, data } => {
                    let end = offset + data.len() as u64;
                    full_len = full_len.max(end);
                    if torn {
                        continue;
                    }
                    let n = (data.len() as u64).min(left);
                    left -= n;
                    let start = to_usize(*offset);
                    let stop = start + to_usize(n);
                    if img.len() < stop {
                        img.resize(stop, 0);
                    }
                    if let (Some(dst), Some(src)) =
                        (img.get_mut(start..stop), data.get(..to_usize(n)))
                    {
                        dst.copy_from_slice(src);
                    }
                    if n < data.len() as u64 {
                        torn = true;
                        tear_at = Some(offset + n);
                    }
                }
            }
        }
        if zero_fill && (img.len() as u64) < full_len {
            // Whole sectors reach the disk: the sector holding the tear
            // reads as zeros too, unless it held synced data.
            const SECTOR: u64 = 512;
            if let Some(t) = tear_at {
                let from = (t / SECTOR * SECTOR).max(durable_len);
                img.truncate(to_usize(from.min(img.len() as u64)));
            }
            img.resize(to_usize(full_len), 0);
        }
        img
    }

    /// Folds the pending changes into the durable image.
    fn settle(&mut self) {
        self.durable = self.image(u64::MAX, false);
        self.pending.clear();
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

#[derive(Debug, Default)]
struct State {
    /// Calls seen, per kind.
    counts: BTreeMap<Op, u64>,
    /// Armed faults, with the number of matching calls still to let through.
    armed: Vec<(Fault, u64)>,
    /// Sticky faults that fired and keep failing.
    failing: Vec<Fault>,
    /// Faults that fired, in order.
    injected: Vec<Injected>,
    /// After `crash`: every call fails and changes nothing.
    crashed: bool,
    /// Files the simulation has seen, by path.
    files: BTreeMap<PathBuf, Shadow>,
    /// Files removed while their removal is not yet durable.
    removed: BTreeMap<PathBuf, Shadow>,
}

impl State {
    /// Counts a call and decides whether it fails (and whether a failing
    /// write writes half first).
    fn admit(&mut self, op: Op, path: &Path) -> Result<(), (io::Error, bool)> {
        *self.counts.entry(op).or_default() += 1;
        if self.crashed {
            return Err((FaultError::Io.to_io(), false));
        }
        if let Some(f) = self.failing.iter().find(|f| f.ops.contains(op)).copied() {
            self.record(op, path, f.error);
            return Err((f.error.to_io(), f.partial));
        }
        let mut fired = None;
        for (i, (fault, left)) in self.armed.iter_mut().enumerate() {
            if !fault.ops.contains(op) {
                continue;
            }
            if *left == 0 {
                fired = Some(i);
                break;
            }
            *left -= 1;
        }
        if let Some(i) = fired {
            let (f, _) = self.armed.remove(i);
            if f.crash {
                self.crashed = true;
                self.record(op, path, f.error);
                return Err((f.error.to_io(), false));
            }
            if f.sticky {
                self.failing.push(f);
            }
            self.record(op, path, f.error);
            return Err((f.error.to_io(), f.partial));
        }
        Ok(())
    }

    fn record(&mut self, op: Op, path: &Path, error: FaultError) {
        self.injected.push(Injected {
            op,
            path: path.to_path_buf(),
            error,
        });
    }

    /// The shadow of `path`, created from the real file's content the first
    /// time the simulation sees it (a file that existed before is durable).
    fn shadow(&mut self, path: &Path, real: &dyn FileHandle) -> io::Result<&mut Shadow> {
        if !self.files.contains_key(path) {
            let len = real.len()?;
            let mut durable = vec![0u8; to_usize(len)];
            real.read_exact_at(&mut durable, 0)?;
            self.files.insert(
                path.to_path_buf(),
                Shadow {
                    durable,
                    entry_durable: true,
                    pending: Vec::new(),
                },
            );
        }
        self.files
            .get_mut(path)
            .ok_or_else(|| io::Error::other("simulated file vanished"))
    }
}

/// A simulated disk over real files; see the module documentation.
/// Clones share the same disk.
#[derive(Clone, Default)]
pub struct SimFileSystem {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFileSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimFileSystem")
            .field("files", &st.files.len())
            .field("crashed", &st.crashed)
            .field("injected", &st.injected.len())
            .finish_non_exhaustive()
    }
}

impl SimFileSystem {
    /// A simulation with no faults armed; files already on disk count as
    /// durable.
    pub fn new() -> SimFileSystem {
        SimFileSystem::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is updated in small steps that leave it consistent, so
        // a panic elsewhere does not make it unusable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms a fault.
    pub fn arm(&self, fault: Fault) {
        self.lock().armed.push((fault, fault.nth));
    }

    /// Disarms every fault, including sticky ones that fired.
    pub fn heal(&self) {
        let mut st = self.lock();
        st.armed.clear();
        st.failing.clear();
    }

    /// The faults that fired so far, in order.
    pub fn injected(&self) -> Vec<Injected> {
        self.lock().injected.clone()
    }

    /// How many calls in `ops` were made so far.
    pub fn count(&self, ops: Ops) -> u64 {
        self.lock()
            .counts
            .iter()
            .filter(|(op, _)| ops.contains(**op))
            .map(|(_, n)| *n)
            .sum()
    }

    /// The machine stops: from now on every call fails with EIO and changes
    /// nothing. Drop the store, then call [`SimFileSystem::power_loss`].
    pub fn crash(&self) {
        self.lock().crashed = true;
    }

    /// Bytes and writes each file has not synced, by path.
    pub fn unsynced(&self) -> BTreeMap<PathBuf, Unsynced> {
        self.lock()
            .files
            .iter()
            .map(|(p, s)| (p.clone(), s.unsynced()))
            .collect()
    }

    /// Rewrites every file the simulation has seen to what a power loss
    /// leaves, as `choose` decides per file, and then forgets everything:
    /// the disk is up again, with no faults armed, and the files as they
    /// are now count as durable. Returns what was chosen for each file.
    pub fn power_loss(
        &self,
        choose: &mut dyn FnMut(&Path, &Unsynced) -> Survival,
    ) -> io::Result<Vec<(PathBuf, Survival)>> {
        let mut st = self.lock();
        let files = std::mem::take(&mut st.files);
        let removed = std::mem::take(&mut st.removed);
        st.armed.clear();
        st.failing.clear();
        st.crashed = false;
        drop(st);
        let os = OsFileSystem;
        let mut chosen = Vec::new();
        for (path, shadow) in &files {
            let survival = choose(path, &shadow.unsynced());
            chosen.push((path.clone(), survival));
            let image = match survival {
                Survival::Nothing if !shadow.entry_durable => {
                    match os.remove_file(path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                Survival::Nothing => shadow.durable.clone(),
                Survival::All => shadow.image(u64::MAX, false),
                Survival::Prefix(n) => shadow.image(n, false),
                Survival::PrefixZeroFilled(n) => shadow.image(n, true),
            };
            let f = os.open(path, OpenMode::Create)?;
            f.set_len(0)?;
            f.write_all_at(&image, 0)?;
        }
        // A removal that was never made durable is undone by the power loss.
        for (path, shadow) in &removed {
            if shadow.entry_durable && !files.contains_key(path) {
                let f = os.open(path, OpenMode::Create)?;
                f.set_len(0)?;
                f.write_all_at(&shadow.durable, 0)?;
                chosen.push((path.clone(), Survival::Nothing));
            }
        }
        Ok(chosen)
    }

    /// [`SimFileSystem::power_loss`] with a seeded random choice per file:
    /// nothing, everything, or a random prefix (zero-filled or not).
    pub fn power_loss_random(&self, seed: u64) -> io::Result<Vec<(PathBuf, Survival)>> {
        let mut rng = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64*: deterministic, no dependency.
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        self.power_loss(&mut |_, u| {
            let cut = if u.bytes == 0 {
                0
            } else {
                next() % (u.bytes + 1)
            };
            match next() % 4 {
                0 => Survival::Nothing,
                1 => Survival::All,
                2 => Survival::Prefix(cut),
                _ => Survival::PrefixZeroFilled(cut),
            }
        })
    }

    /// Runs `f` under the state lock, after admitting the call.
    fn with<T>(
        &self,
        op: Op,
        path: &Path,
        f: impl FnOnce(&mut State, bool) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut st = self.lock();
        match st.admit(op, path) {
            Ok(()) => f(&mut st, false),
            Err((e, partial)) => {
                if partial && !st.crashed {
                    // Let the callee write part of the data, then fail.
                    f(&mut st, true)?;
                }
                Err(e)
            }
        }
    }
}

impl FileSystem for SimFileSystem {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let op = match mode {
            OpenMode::CreateNew => Op::Create,
            OpenMode::Create if !path.exists() => Op::Create,
            _ => Op::Open,
        };
        let real = self.with(op, path, |st, _| {
            let real = OsFileSystem.open(path, mode)?;
            if op == Op::Create {
                st.files.insert(path.to_path_buf(), Shadow::default());
                st.removed.remove(path);
            } else {
                st.shadow(path, real.as_ref())?;
            }
            Ok(real)
        })?;
        Ok(Arc::new(SimFileHandle {
            sim: self.clone(),
            path: path.to_path_buf(),
            real,
        }))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.with(Op::CreateDir, dir, |_, _| OsFileSystem.create_dir_all(dir))
    }

    fn is_dir(&self, dir: &Path) -> bool {
        OsFileSystem.is_dir(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        self.with(Op::List, dir, |_, _| OsFileSystem.list_dir(dir))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.with(Op::SyncDir, dir, |st, _| {
            for (p, s) in st.files.iter_mut() {
                if p.parent() == Some(dir) {
                    s.entry_durable = true;
                }
            }
            st.removed.retain(|p, _| p.parent() != Some(dir));
            Ok(())
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.with(Op::Remove, path, |st, _| {
            OsFileSystem.remove_file(path)?;
            if let Some(s) = st.files.remove(path) {
                st.removed.insert(path.to_path_buf(), s);
            }
            Ok(())
        })
    }
}

/// A file of [`SimFileSystem`].
#[derive(Debug)]
struct SimFileHandle {
    sim: SimFileSystem,
    path: PathBuf,
    real: Arc<dyn FileHandle>,
}

impl SimFileHandle {
    /// A write (`op`: [`Op::Write`] or [`Op::DirectWrite`]): to the real
    /// file, and recorded as pending until the next sync.
    fn write(&self, op: Op, buf: &[u8], offset: u64) -> io::Result<()> {
        self.sim.with(op, &self.path, |st, partial| {
            let data = if partial {
                buf.get(..buf.len() / 2).unwrap_or_default()
            } else {
                buf
            };
            self.real.write_all_at(data, offset)?;
            st.shadow(&self.path, self.real.as_ref())?
                .pending
                .push(Pending::Write {
                    offset,
                    data: data.to_vec(),
                });
            Ok(())
        })
    }
}

impl FileHandle for SimFileHandle {
    fn len(&self) -> io::Result<u64> {
        self.sim.with(Op::Len, &self.path, |_, _| self.real.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.sim.with(Op::Read, &self.path, |_, _| {
            self.real.read_exact_at(buf, offset)
        })
    }

    /// A write like `write_all_at` (counted as [`Op::DirectWrite`]),
    /// after checking the alignment that `O_DIRECT` demands: a misaligned
    /// direct write fails every test run on the simulation, not only on
    /// the disks that refuse it (where the operating system's handle falls
    /// back to the page cache).
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let align = DIRECT_ALIGN;
        if !buf.as_ptr().addr().is_multiple_of(align)
            || !buf.len().is_multiple_of(align)
            || !offset.is_multiple_of(align as u64)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("misaligned direct write of {} bytes at {offset}", buf.len()),
            ));
        }
        self.write(Op::DirectWrite, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(Op::Write, buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.sim.with(Op::SetLen, &self.path, |st, partial| {
            if partial {
                return Ok(());
            }
            self.real.set_len(len)?;
            st.shadow(&self.path, self.real.as_ref())?
                .pending
                .push(Pending::SetLen(len));
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let path = self.path.clone();
        let result = self.sim.with(Op::Sync, &path, |st, _| {
            st.shadow(&path, self.real.as_ref())?.settle();
            Ok(())
        });
        if result.is_err() {
            // A failed fsync loses the unsynced writes for good (they stay
            // in the page cache, so reads still see them).
            let mut st = self.sim.lock();
            if !st.crashed
                && let Some(s) = st.files.get_mut(&path)
            {
                s.pending.clear();
            }
        }
        result
    }

    fn map(&self) -> io::Result<Mmap> {
        self.sim.with(Op::Map, &self.path, |_, _| self.real.map())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_default()
    }

    #[test]
    fn power_loss_keeps_synced_and_chosen_unsynced_bytes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sim = SimFileSystem::new();
        let path = dir.path().join("f");
        let f = sim.open(&path, OpenMode::CreateNew)?;
        f.write_all_at(b"hello", 0)?;
        f.sync_data()?;
        sim.sync_dir(dir.path())?;
        f.write_all_at(b" world", 5)?;
        f.write_all_at(b"!", 11)?;
        assert_eq!(read(&path), b"hello world!");

        for (survival, expected) in [
            (Survival::Nothing, &b"hello"[..]),
            (Survival::All, b"hello world!"),
            (Survival::Prefix(3), b"hello wo"),
            // The tear is in the first sector, which also holds synced
            // bytes: those stay, the rest of the sector reads as zeros.
            (Survival::PrefixZeroFilled(3), b"hello\0\0\0\0\0\0\0"),
            (Survival::Prefix(6), b"hello world"),
        ] {
            let copy = SimFileSystem::new();
            let p2 = dir.path().join("g");
            let g = copy.open(&p2, OpenMode::CreateNew)?;
            g.write_all_at(b"hello", 0)?;
            g.sync_data()?;
            copy.sync_dir(dir.path())?;
            g.write_all_at(b" world", 5)?;
            g.write_all_at(b"!", 11)?;
            drop(g);
            copy.power_loss(&mut |_, _| survival)?;
            assert_eq!(read(&p2), expected, "{survival:?}");
            std::fs::remove_file(&p2)?;
        }
        Ok(())
    }

    #[test]
    fn unsynced_new_file_vanishes_and_failed_sync_loses_writes() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sim = SimFileSystem::new();
        let a = dir.path().join("a");
        let f = sim.open(&a, OpenMode::CreateNew)?;
        f.write_all_at(b"data", 0)?;
        f.sync_data()?;
        let b = dir.path().join("b");
        let g = sim.open(&b, OpenMode::CreateNew)?;
        sim.sync_dir(dir.path())?;
        g.write_all_at(b"lost", 0)?;
        sim.arm(Fault::nth(Ops::Syncs, 0, FaultError::Io));
        assert!(g.sync_data().is_err());
        // Still readable, never durable, even after a later good sync.
        assert_eq!(read(&b), b"lost");
        g.sync_data()?;
        let c = dir.path().join("c");
        sim.open(&c, OpenMode::CreateNew)?;
        sim.power_loss(&mut |_, _| Survival::Nothing)?;
        assert_eq!(read(&a), b"data");
        assert_eq!(read(&b), b"");
        assert!(!c.exists());
        assert_eq!(sim.injected().len(), 1);
        Ok(())
    }

    #[test]
    fn faults_fire_on_the_nth_matching_call_and_crash_stops_everything() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let sim = SimFileSystem::new();
        let f = sim.open(&dir.path().join("f"), OpenMode::CreateNew)?;
        sim.arm(Fault::nth(Ops::Writes, 2, FaultError::NoSpace).partial());
        f.write_all_at(b"aa", 0)?;
        f.sync_data()?; // not a write: not counted
        f.write_all_at(b"bb", 2)?;
        let err = f.write_all_at(b"cccc", 4).err();
        assert_eq!(err.and_then(|e| e.raw_os_error()), Some(ENOSPC));
        assert_eq!(read(&dir.path().join("f")), b"aabbcc");
        f.write_all_at(b"d", 8)?;
        sim.crash();
        assert!(f.write_all_at(b"e", 9).is_err());
        assert!(f.len().is_err());
        assert_eq!(sim.count(Ops::Writes), 5);
        Ok(())
    }
}

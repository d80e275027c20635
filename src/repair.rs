//! What opening a store found and repaired, and the repair of a damaged
//! index: the index is derived from the log, so a damaged index file is set
//! aside and rebuilt by a replay, and the open reports it.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::fs::FileSystem;
use crate::index::Index;
use crate::log::SalvageReport;

/// What [`crate::SessionStore::open`] found and repaired, from
/// [`crate::SessionStore::open_report`]. Nothing is repaired silently: every
/// byte cut and every rebuild is here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// Bytes cut from the end of the log: the torn or zero-filled tail of
    /// writes a crash interrupted (see `docs/FORMAT.md`, "Recovery").
    pub log_truncated_bytes: u64,
    /// Bytes of log written again because a write or fsync of the log had
    /// failed before (in this program or an earlier one): what the page
    /// cache showed past the last durable point might never have reached
    /// the disk, so the open wrote it again and synced it before relying on
    /// it (see `docs/FORMAT.md`, "Recovery").
    pub log_rewritten_bytes: u64,
    /// Log frames whose checksum recovery verified (those after the last
    /// durable checkpoint).
    pub log_frames_checked: u64,
    /// Log frames re-applied to the index (those after its checkpoint, or
    /// all of them when it was rebuilt).
    pub frames_replayed: u64,
    /// Why the index was rebuilt from the log, when it was: it was damaged
    /// (and where the damaged file went), the log was salvaged,
    /// [`crate::StoreOptions::rebuild_index_on_open`] asked for it, it was
    /// of an older format, or it was built with other
    /// [`crate::StoreOptions::session_id_sources`].
    pub index_rebuilt: Option<String>,
    /// What [`crate::StoreOptions::salvage_log`] kept and dropped.
    pub salvage: Option<SalvageReport>,
    /// How long each step of the open took.
    pub timings: OpenTimings,
}

/// How long each step of [`crate::SessionStore::open`] took (in
/// [`OpenReport::timings`]). After a crash, `replay` is what grows with the
/// log written since the last checkpoint (see
/// [`crate::StoreOptions::checkpoint_bytes`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenTimings {
    /// Opening the index file (redb's own recovery of an unclean close
    /// included), and rebuilding it empty when that was needed.
    pub index: Duration,
    /// Opening the log: finding its segments, checking the frames past the
    /// checkpoint, cutting a torn tail, salvage when asked for, and
    /// finishing an interrupted compaction.
    pub log: Duration,
    /// Re-applying the log frames past the index's checkpoint to the
    /// index (all of them after a rebuild).
    pub replay: Duration,
    /// Committing the replayed changes, and making the index durable if
    /// nothing was replayed. After a replay the checkpoint that makes the
    /// index durable runs on the indexing thread once the open returns (as
    /// the checkpoints appends trigger do): reads do not wait for it; an
    /// append waits only if it hands a group to that thread, and closing
    /// the store waits.
    pub checkpoint: Duration,
}

/// Opens the index file; rebuilds it from scratch when `rebuild` gives a
/// reason, and when the file turns out to be damaged (moved aside to
/// `index.redb.corrupt` for inspection).
pub(crate) fn open_index(
    path: &Path,
    fs: Option<&dyn FileSystem>,
    cache_bytes: usize,
    check_integrity: bool,
    rebuild: Option<String>,
    report: &mut OpenReport,
) -> Result<Index> {
    if let Some(reason) = rebuild {
        remove_if_present(path)?;
        report.index_rebuilt = Some(reason);
        return Index::open_with(path, fs, cache_bytes, false);
    }
    match Index::open_with(path, fs, cache_bytes, check_integrity) {
        Err(e) if damaged(&e) => {
            let aside = path.with_extension("redb.corrupt");
            std::fs::rename(path, &aside).map_err(|io| {
                Error::io(
                    format!("moving the damaged index {} aside", path.display()),
                    io,
                )
            })?;
            report.index_rebuilt = Some(format!(
                "the index file {} is damaged ({e}); it was moved to {} and rebuilt from the log",
                path.display(),
                aside.display()
            ));
            Index::open_with(path, fs, cache_bytes, false)
        }
        other => other,
    }
}

/// True if opening the index failed because of what the file holds (as
/// opposed to the disk or the operating system): damaged pages, a header
/// that is not redb's, or a redb file format this build cannot read. The
/// index is derived from the log, so all of these are repaired by a rebuild.
fn damaged(e: &Error) -> bool {
    match e {
        Error::Index(inner) => match inner.as_ref() {
            redb::Error::Corrupted(_) | redb::Error::UpgradeRequired(_) => true,
            redb::Error::Io(io) => io.kind() == std::io::ErrorKind::InvalidData,
            _ => false,
        },
        other => other.kind() == ErrorKind::Corrupted,
    }
}

/// Removes the index file of the store in `dir`, if there is one, and
/// makes the removal durable (the directory is synced).
pub(crate) fn remove_index(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    remove_if_present(&dir.join("index.redb"))?;
    fs.sync_dir(dir)
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

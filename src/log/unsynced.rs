//! The mark a failed write or fsync leaves in the log directory, and the
//! rewrite that clears it on the next open.
//!
//! When an fsync fails, Linux marks the file's dirty pages clean: the page
//! cache still shows the bytes, but they never reach the disk, and a later
//! fsync succeeds without writing them ("fsyncgate"). A store reopened
//! after such a failure (by the same program or the next one) would read
//! those bytes as log frames, replay them, and let a checkpoint cover them;
//! a power loss then takes them away, and the log no longer holds what its
//! index's checkpoint says it does, so the store refuses to open.
//!
//! So when a write or an fsync of the log fails, the log records in the
//! file [`MARK_FILE`] the LSN up to which it knows itself durable (written
//! and synced, best effort: the disk may be failing). An open that finds
//! the mark writes every byte of the log from that LSN to its end again,
//! unchanged (which makes the pages dirty, so that the next fsync writes
//! them), syncs each file it rewrote, and removes the mark only once
//! recovery is done. An open cut short leaves the mark for the next one.
//!
//! Layout: 8 bytes of magic, the LSN (8 bytes, little-endian) and a CRC32
//! of both. A mark that does not read back whole is taken to say nothing
//! about where durability ended: the open rewrites from its checkpoint.

use std::io;
use std::path::Path;

use super::Lsn;
use crate::fs::{FileSystem, OpenMode};

/// The mark's file name, next to the segments.
pub(crate) const MARK_FILE: &str = "unsynced";

/// The mark's first bytes.
const MAGIC: &[u8; 8] = b"SSUNSYN1";

/// Magic, LSN, CRC32.
const MARK_LEN: usize = 20;

/// Bytes rewritten at a time.
const CHUNK: u64 = 1 << 20;

/// What an open finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// No mark: every byte the log holds was made durable or was never
    /// reported lost.
    Absent,
    /// Everything below this LSN was durable when a write or fsync failed.
    DurableTo(Lsn),
    /// A mark whose bytes do not read back (cut by a crash as it was
    /// written): durability is known only up to the checkpoint.
    Unreadable,
}

fn encode(lsn: Lsn) -> [u8; MARK_LEN] {
    let mut out = [0u8; MARK_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32fast::hash(&out[..16]);
    out[16..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<Lsn> {
    let (head, crc) = (bytes.get(..16)?, bytes.get(16..MARK_LEN)?);
    if bytes.len() != MARK_LEN
        || head.get(..8)? != MAGIC
        || crc32fast::hash(head).to_le_bytes() != crc
    {
        return None;
    }
    Some(Lsn::from_le_bytes(head.get(8..16)?.try_into().ok()?))
}

/// Reads the mark in the log directory `dir`.
pub(super) fn read(fs: &dyn FileSystem, dir: &Path) -> io::Result<Mark> {
    let names = fs.list_dir(dir)?;
    match names.iter().find(|(name, _)| name == MARK_FILE) {
        Some((_, path)) => read_file(fs, path),
        None => Ok(Mark::Absent),
    }
}

/// Reads the mark file at `path`, which exists.
pub(super) fn read_file(fs: &dyn FileSystem, path: &Path) -> io::Result<Mark> {
    let f = fs.open(path, OpenMode::ReadOnly)?;
    let len = f.len()?;
    if len != MARK_LEN as u64 {
        return Ok(Mark::Unreadable);
    }
    let mut buf = [0u8; MARK_LEN];
    f.read_exact_at(&mut buf, 0)?;
    Ok(decode(&buf).map_or(Mark::Unreadable, Mark::DurableTo))
}

/// Records that the log in `dir` is known durable only below `durable`:
/// written and synced, with its directory entry. A mark already there
/// with a lower LSN is kept.
pub(super) fn mark(fs: &dyn FileSystem, dir: &Path, durable: Lsn) -> io::Result<()> {
    let durable = match read(fs, dir)? {
        Mark::Absent => durable,
        Mark::DurableTo(earlier) => earlier.min(durable),
        // Already says "from the checkpoint", the most it can say.
        Mark::Unreadable => return Ok(()),
    };
    let path = dir.join(MARK_FILE);
    let f = fs.open(&path, OpenMode::Create)?;
    f.set_len(0)?;
    f.write_all_at(&encode(durable), 0)?;
    f.sync_data()?;
    fs.sync_dir(dir)
}

/// Removes the mark, durably.
pub(super) fn clear(fs: &dyn FileSystem, dir: &Path) -> io::Result<()> {
    fs.remove_file(&dir.join(MARK_FILE))?;
    fs.sync_dir(dir)
}

/// Writes the bytes of the segment file at `path` (whose first byte has
/// LSN `base`) from LSN `from` to its end again, unchanged, and syncs the
/// file if it wrote anything. Returns the number of bytes rewritten.
pub(super) fn rewrite(fs: &dyn FileSystem, path: &Path, base: Lsn, from: Lsn) -> io::Result<u64> {
    let f = fs.open(path, OpenMode::ReadWrite)?;
    let (start, end) = (from.saturating_sub(base), f.len()?);
    if end <= start {
        return Ok(0);
    }
    let mut buf = Vec::new();
    let mut off = start;
    while off < end {
        let n = (end - off).min(CHUNK);
        buf.resize(usize::try_from(n).map_err(io::Error::other)?, 0);
        f.read_exact_at(&mut buf, off)?;
        f.write_all_at(&buf, off)?;
        off += n;
    }
    f.sync_data()?;
    Ok(end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_and_a_damaged_one_is_unreadable() {
        let bytes = encode(123_456);
        assert_eq!(decode(&bytes), Some(123_456));
        for i in 0..MARK_LEN {
            let mut b = bytes;
            b[i] ^= 0x10;
            assert_eq!(decode(&b), None, "byte {i} flipped");
        }
        assert_eq!(decode(&bytes[..MARK_LEN - 1]), None);
        assert_eq!(decode(&[]), None);
    }
}

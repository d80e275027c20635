//! TEMPORARY in-memory stand-in for the span log (replaced by the real log).
#![allow(dead_code, missing_docs)]
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

pub(crate) type Lsn = u64;
pub(crate) struct LogOptions {
    pub segment_bytes: u64,
    pub max_frame_bytes: u32,
}
pub(crate) struct FrameRef<'a> {
    pub tag: u8,
    pub payload: &'a [u8],
}
pub(crate) struct FrameBuf {
    tag: u8,
    payload: Vec<u8>,
}
impl FrameBuf {
    pub(crate) fn tag(&self) -> u8 {
        self.tag
    }
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }
}
pub(crate) struct RecoveryReport {
    pub truncated_bytes: u64,
    pub frames_scanned: u64,
    pub segments: usize,
    pub end: Lsn,
}
pub(crate) struct SegmentInfo {
    pub path: PathBuf,
    pub base: Lsn,
    pub len: u64,
    pub sealed: bool,
}
pub(crate) struct Log {
    frames: Mutex<Vec<(Lsn, u8, Vec<u8>)>>,
}
pub(crate) struct LogScan<'a> {
    log: &'a Log,
    at: usize,
}
impl Iterator for LogScan<'_> {
    type Item = Result<(Lsn, FrameBuf)>;
    fn next(&mut self) -> Option<Self::Item> {
        let f = self.log.frames.lock().ok()?;
        let (lsn, tag, p) = f.get(self.at)?.clone();
        self.at += 1;
        Some(Ok((lsn, FrameBuf { tag, payload: p })))
    }
}
impl Log {
    pub(crate) fn open(_dir: &Path, _o: LogOptions, _from: Lsn) -> Result<(Log, RecoveryReport)> {
        Ok((
            Log {
                frames: Mutex::new(Vec::new()),
            },
            RecoveryReport {
                truncated_bytes: 0,
                frames_scanned: 0,
                segments: 1,
                end: 32,
            },
        ))
    }
    pub(crate) fn end(&self) -> Lsn {
        self.frames
            .lock()
            .ok()
            .and_then(|f| f.last().map(|(l, _, p)| l + 9 + p.len() as u64))
            .unwrap_or(32)
    }
    pub(crate) fn start(&self) -> Lsn {
        32
    }
    pub(crate) fn append(&self, frames: &[FrameRef<'_>]) -> Result<Vec<Lsn>> {
        let mut end = self.end();
        let mut f = self.frames.lock().map_err(|_| Error::Poisoned)?;
        let mut out = vec![];
        for fr in frames {
            f.push((end, fr.tag, fr.payload.to_vec()));
            out.push(end);
            end += 9 + fr.payload.len() as u64;
        }
        Ok(out)
    }
    pub(crate) fn sync(&self, _upto: Lsn) -> Result<()> {
        Ok(())
    }
    pub(crate) fn synced(&self) -> Lsn {
        self.end()
    }
    pub(crate) fn read(&self, lsn: Lsn) -> Result<FrameBuf> {
        let f = self.frames.lock().map_err(|_| Error::Poisoned)?;
        f.iter()
            .find(|x| x.0 == lsn)
            .map(|(_, t, p)| FrameBuf {
                tag: *t,
                payload: p.clone(),
            })
            .ok_or_else(|| Error::invalid("no frame"))
    }
    pub(crate) fn scan(&self, from: Lsn) -> LogScan<'_> {
        let at = self
            .frames
            .lock()
            .map(|f| f.iter().position(|x| x.0 >= from).unwrap_or(f.len()))
            .unwrap_or(0);
        LogScan { log: self, at }
    }
    pub(crate) fn segments(&self) -> Vec<SegmentInfo> {
        vec![]
    }
    pub(crate) fn is_poisoned(&self) -> bool {
        false
    }
}

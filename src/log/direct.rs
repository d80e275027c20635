//! Direct appends (`LogOptions::direct_writes`): frames are laid out in
//! aligned buffers of whole blocks and written with `O_DIRECT`. In an
//! append of at least [`THREAD_BYTES`], each full buffer is written by the
//! log's writer thread while the next one is filled, so that the disk's
//! time overlaps the making of the frames (in the store, the encoding of
//! the spans: `Log::append_from`) instead of following it.
//!
//! The order of the file-system calls is the one a single thread would
//! make: the direct writes in file order, one at a time; after a failed
//! one nothing more is written; the partial last block goes through the
//! page cache only once every direct write before it has returned; and the
//! caller syncs only after [`DirectWriter::finish`], which waits for all of
//! them. So the files, the crash rules and the fault-injection tests are
//! those of the single-threaded version.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};

use memmap2::MmapMut;

use super::file::SegmentFile;
use super::segment::Segment;
use super::{aligned_down, io_err};
use crate::error::{Error, Result};
use crate::fs::DIRECT_ALIGN;

/// Bytes per direct write. Small enough that the framing of the next
/// buffer overlaps most of an append's writes, large enough that a write
/// is not mostly its system call.
const DIRECT_CHUNK: usize = 512 << 10;
const _: () = assert!(DIRECT_CHUNK.is_multiple_of(DIRECT_ALIGN));

/// Buffers an append uses at most: one being filled, the others queued or
/// being written.
const BUFFERS: usize = 3;

/// An append with at least this many bytes of frames hands its writes to a
/// thread; a smaller one writes each buffer itself (a thread would cost
/// more than the overlap gains).
pub(super) const THREAD_BYTES: u64 = 2 * DIRECT_CHUNK as u64;

/// One direct write, for the writer thread.
struct Job {
    /// Which append it belongs to (see [`WriterThread::next_append`]).
    append: u64,
    /// The bytes: `buf[..len]`, whole blocks.
    buf: MmapMut,
    len: usize,
    /// Where they go.
    at: u64,
    seg: Arc<Segment>,
    file: Arc<SegmentFile>,
}

/// A buffer back from the writer thread, with how its write went.
type Done = (MmapMut, Result<()>);

/// The writer thread's loop: writes each job in order, and after a failed
/// write writes nothing more of that append (which is failing; its caller
/// waits for every job before undoing it).
fn writer_loop(jobs: &Receiver<Job>, done: &std::sync::mpsc::Sender<Done>) {
    let mut failed = None;
    for job in jobs {
        let result = if failed == Some(job.append) {
            Err(Error::invalid(
                "an earlier direct write of this append failed",
            ))
        } else {
            write_job(&job)
        };
        if result.is_err() {
            failed = Some(job.append);
        }
        // The segment and file handles go before the buffer is back, so
        // that none outlives the append that handed them over.
        let Job { buf, seg, file, .. } = job;
        drop((seg, file));
        if done.send((buf, result)).is_err() {
            return;
        }
    }
}

fn write_job(job: &Job) -> Result<()> {
    let bytes = job.buf.get(..job.len).unwrap_or(&[]);
    job.file
        .write_direct_at(bytes, job.at)
        .map_err(|e| io_err("appending to segment", &job.seg.path, e))
}

/// The log's writer thread, started at the first append that needs it and
/// kept until the log is dropped. (One thread for the log's life rather
/// than one per append: glibc gives each new thread a malloc arena from
/// those that exited threads left, so threads started per append made the
/// indexing threads' arenas change hands, and peak memory grow by half
/// with ~4 KiB spans.)
pub(super) struct WriterThread {
    /// Jobs in; `None` once dropping.
    jobs: Option<SyncSender<Job>>,
    /// Buffers back, with how their writes went.
    done: Receiver<Done>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The number of the append using the thread now.
    append: u64,
}

impl WriterThread {
    /// Starts the thread; `None` if it could not be started (then each
    /// append writes its buffers itself).
    pub(super) fn start() -> Option<WriterThread> {
        // Never full: at most `BUFFERS - 1` buffers are handed off at a time.
        let (jobs, jobs_rx) = std::sync::mpsc::sync_channel(BUFFERS);
        let (done_tx, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("span-sessions-log-writer".into())
            .spawn(move || writer_loop(&jobs_rx, &done_tx))
            .ok()?;
        Some(WriterThread {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            append: 0,
        })
    }

    /// Starts a new append's jobs: a failed write of an earlier append no
    /// longer stops them.
    pub(super) fn next_append(&mut self) -> &WriterThread {
        self.append = self.append.wrapping_add(1);
        self
    }
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Lays frames out in aligned buffers and writes them directly.
pub(super) struct DirectWriter<'p> {
    /// `Some`: buffers are written by the writer thread behind it.
    channel: Option<&'p WriterThread>,
    /// Spare buffers, kept across appends by the log's writer.
    pool: &'p mut Vec<MmapMut>,
    /// Buffers handed to the writer thread and not back yet.
    in_flight: usize,
    /// The buffer being filled, its length and the file offset of its
    /// first byte (a block boundary).
    cur: Option<MmapMut>,
    cur_len: usize,
    cur_at: u64,
    seg: Arc<Segment>,
    file: Arc<SegmentFile>,
}

impl<'p> DirectWriter<'p> {
    /// Starts writing at `len` in `file`: the buffer starts at the block
    /// holding `len`, with that block's bytes before `len` (`tail`, or read
    /// back from the file).
    pub(super) fn new(
        channel: Option<&'p WriterThread>,
        pool: &'p mut Vec<MmapMut>,
        seg: Arc<Segment>,
        file: Arc<SegmentFile>,
        len: u64,
        tail: Option<&[u8]>,
    ) -> Result<Self> {
        let mut w = DirectWriter {
            channel,
            pool,
            in_flight: 0,
            cur: None,
            cur_len: 0,
            cur_at: 0,
            seg,
            file,
        };
        w.start(len, tail)?;
        Ok(w)
    }

    /// Points the writer at `len` of its (new) segment.
    fn start(&mut self, len: u64, tail: Option<&[u8]>) -> Result<()> {
        let head = len % DIRECT_ALIGN as u64;
        self.cur_at = len - head;
        let head = usize::try_from(head).unwrap_or(0);
        let mut buf = self.buffer()?;
        let out = buf
            .get_mut(..head)
            .ok_or_else(|| Error::invalid("direct write buffer smaller than a block"))?;
        match tail {
            Some(t) if t.len() == head => out.copy_from_slice(t),
            _ => self
                .file
                .read_exact_at(out, self.cur_at)
                .map_err(|e| io_err("reading the last block of", &self.seg.path, e))?,
        }
        self.cur = Some(buf);
        self.cur_len = head;
        Ok(())
    }

    /// Appends `bytes` to the file's bytes, writing each buffer once full.
    pub(super) fn push(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let cur = match self.cur.as_mut() {
                Some(c) => c,
                None => {
                    let b = self.buffer()?;
                    self.cur.insert(b)
                }
            };
            let room = DIRECT_CHUNK - self.cur_len;
            let n = room.min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            if let Some(out) = cur.get_mut(self.cur_len..self.cur_len + n) {
                out.copy_from_slice(now);
            }
            self.cur_len += n;
            bytes = rest;
            if self.cur_len == DIRECT_CHUNK {
                self.submit(DIRECT_CHUNK)?;
            }
        }
        Ok(())
    }

    /// Hands the first `len` bytes (whole blocks) of the current buffer to
    /// be written; the next bytes go into a new buffer at the offset after
    /// them. A failed write is this call's error, or, through the writer
    /// thread, a later call's.
    fn submit(&mut self, len: usize) -> Result<()> {
        let Some(buf) = self.cur.take() else {
            return Ok(());
        };
        let job = Job {
            append: self.channel.map_or(0, |t| t.append),
            buf,
            len,
            at: self.cur_at,
            seg: Arc::clone(&self.seg),
            file: Arc::clone(&self.file),
        };
        self.cur_at += len as u64;
        self.cur_len = 0;
        let jobs = self.channel.and_then(|t| t.jobs.as_ref());
        match jobs {
            Some(jobs) => match jobs.send(job) {
                Ok(()) => {
                    self.in_flight += 1;
                    Ok(())
                }
                Err(e) => {
                    self.pool.push(e.0.buf);
                    Err(Error::invalid("the log's writer thread stopped"))
                }
            },
            None => {
                let result = write_job(&job);
                self.pool.push(job.buf);
                result
            }
        }
    }

    /// A buffer to fill: a spare one, a new one while fewer than
    /// [`BUFFERS`] are in use, else the next one the writer thread is done
    /// with.
    fn buffer(&mut self) -> Result<MmapMut> {
        loop {
            if let Some(b) = self.pool.pop() {
                return Ok(b);
            }
            if self.in_flight + 1 < BUFFERS {
                return MmapMut::map_anon(DIRECT_CHUNK)
                    .map_err(|e| io_err("allocating the write buffer for", &self.seg.path, e));
            }
            self.take_done()?;
        }
    }

    /// Waits for one buffer to come back from the writer thread.
    fn take_done(&mut self) -> Result<()> {
        let Some(t) = self.channel else {
            return Err(Error::invalid("no direct write in flight"));
        };
        match t.done.recv() {
            Ok((buf, result)) => {
                self.in_flight -= 1;
                self.pool.push(buf);
                result
            }
            Err(_) => {
                self.in_flight = 0;
                Err(Error::invalid("the log's writer thread stopped"))
            }
        }
    }

    /// Waits until every buffer handed off is written; the first failure.
    fn drain(&mut self) -> Result<()> {
        let mut first = None;
        while self.in_flight > 0 {
            if let Err(e) = self.take_done() {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Ends the bytes of the current segment: writes its whole blocks,
    /// waits for every write, then writes the partial last block through
    /// the page cache. Returns that block's bytes (which lead the next
    /// append's first write).
    pub(super) fn finish(&mut self) -> Result<Vec<u8>> {
        let whole = aligned_down(self.cur_len);
        let tail = self
            .cur
            .as_ref()
            .and_then(|c| c.get(whole..self.cur_len))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        let tail_at = self.cur_at + whole as u64;
        let submitted = if whole > 0 {
            self.submit(whole)
        } else {
            if let Some(b) = self.cur.take() {
                self.pool.push(b);
            }
            Ok(())
        };
        // Every write is waited for, even after a failure, so that nothing
        // lands after the caller undoes the append.
        let drained = self.drain();
        submitted?;
        drained?;
        if !tail.is_empty() {
            self.file
                .write_all_at(&tail, tail_at)
                .map_err(|e| io_err("appending to segment", &self.seg.path, e))?;
        }
        Ok(tail)
    }

    /// Continues in a new segment, at `len`, after [`DirectWriter::finish`].
    pub(super) fn next_segment(
        &mut self,
        seg: Arc<Segment>,
        file: Arc<SegmentFile>,
        len: u64,
    ) -> Result<()> {
        self.seg = seg;
        self.file = file;
        self.start(len, None)
    }
}

impl Drop for DirectWriter<'_> {
    /// An append that failed part-way still waits for its writes.
    fn drop(&mut self) {
        let _ = self.drain();
        if let Some(b) = self.cur.take() {
            self.pool.push(b);
        }
    }
}

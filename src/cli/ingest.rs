//! `span-sessions ingest PATH...`: OTLP request files into the store.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use span_sessions::SessionStore;
use span_sessions::otlp::{self, DecodeError, ExportTraceServiceRequest, IngestOptions};

use super::output::{safe, write_json};
use super::{CliError, CliResult};

/// Most rejections and failures listed in the summary; the counts go on.
const MAX_LISTED: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
    JsonLines,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "pb" | "binpb" => Some(Format::Protobuf),
            "json" => Some(Format::Json),
            "jsonl" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// A span that was not stored, and where it came from.
#[derive(Serialize)]
struct RejectionJson {
    source: String,
    trace_id: String,
    span_id: String,
    reason: String,
}

/// A request that could not be read or decoded (nothing of it was stored).
#[derive(Serialize)]
struct FailureJson {
    source: String,
    error: String,
}

/// The end-of-run summary (`ingest --json` prints exactly this).
#[derive(Serialize, Default)]
struct Summary {
    files: u64,
    requests: u64,
    failed_requests: u64,
    spans_accepted: u64,
    duplicates: u64,
    spans_rejected: u64,
    rejections: Vec<RejectionJson>,
    failures: Vec<FailureJson>,
}

impl Summary {
    fn fail(&mut self, source: String, error: String) {
        self.failed_requests += 1;
        if self.failures.len() < MAX_LISTED {
            self.failures.push(FailureJson { source, error });
        }
    }
}

/// The files to read, in order: explicit files as given, directories
/// walked recursively in name order (files of other types skipped).
fn collect(paths: &[PathBuf]) -> CliResult<Vec<(PathBuf, Format)>> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Format)>) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(fs::DirEntry::path);
        for e in entries {
            let path = e.path();
            // Follows symlinks to files, not to directories (no cycles).
            if e.file_type()?.is_dir() {
                walk(&path, out)?;
            } else if let Some(f) = Format::of(&path)
                && path.is_file()
            {
                out.push((path, f));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta =
            fs::metadata(p).map_err(|e| CliError(format!("cannot read {}: {e}", p.display())))?;
        if meta.is_dir() {
            walk(p, &mut out).map_err(|e| CliError(format!("walking {}: {e}", p.display())))?;
        } else {
            let f = Format::of(p).ok_or_else(|| {
                CliError(format!(
                    "{}: unknown file type; expected .pb or .binpb (protobuf), \
                     .json (one OTLP/JSON request) or .jsonl (one per line)",
                    p.display()
                ))
            })?;
            out.push((p.clone(), f));
        }
    }
    Ok(out)
}

/// Progress on stderr for long runs: one line, rewritten, only on a terminal.
struct Progress {
    enabled: bool,
    started: Instant,
    last: Option<Instant>,
    total_files: usize,
}

impl Progress {
    fn new(total_files: usize) -> Self {
        Progress {
            enabled: io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            total_files,
        }
    }

    fn tick(&mut self, s: &Summary) {
        let now = Instant::now();
        let due = match self.last {
            None => now.duration_since(self.started) >= Duration::from_secs(1),
            Some(last) => now.duration_since(last) >= Duration::from_millis(250),
        };
        if !self.enabled || !due {
            return;
        }
        self.last = Some(now);
        let secs = now.duration_since(self.started).as_secs_f64().max(1e-9);
        let _ = write!(
            io::stderr(),
            "\r{}/{} files · {} requests · {} spans ({:.0}/s)\x1b[K",
            s.files,
            self.total_files,
            s.requests,
            s.spans_accepted,
            s.spans_accepted as f64 / secs
        );
    }

    fn finish(&self) {
        if self.last.is_some() {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

struct Ingest<'a> {
    store: &'a SessionStore,
    options: IngestOptions,
    max_request_bytes: u64,
    summary: Summary,
}

impl Ingest<'_> {
    /// Stores one request; a store failure ends the run.
    fn request(
        &mut self,
        source: impl Fn() -> String,
        decoded: Result<ExportTraceServiceRequest, DecodeError>,
    ) -> CliResult {
        let request = match decoded {
            Ok(r) => r,
            Err(e) => {
                self.summary.fail(source(), e.to_string());
                return Ok(());
            }
        };
        let report = otlp::export(self.store, request, &self.options)
            .map_err(|e| CliError(format!("storing {}: {e}", source())))?;
        let s = &mut self.summary;
        s.requests += 1;
        s.spans_accepted += report.accepted as u64;
        s.duplicates += report.duplicates as u64;
        s.spans_rejected += report.rejected.len() as u64;
        for r in report.rejected {
            if s.rejections.len() < MAX_LISTED {
                s.rejections.push(RejectionJson {
                    source: source(),
                    trace_id: r.trace_id,
                    span_id: r.span_id,
                    reason: r.reason,
                });
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, format: Format) -> CliResult {
        let name = path.display().to_string();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.summary.fail(name, format!("cannot open: {e}"));
                return Ok(());
            }
        };
        match format {
            Format::Protobuf | Format::Json => {
                let mut body = Vec::new();
                let read = file
                    .take(self.max_request_bytes.saturating_add(1))
                    .read_to_end(&mut body);
                if let Err(e) = read {
                    self.summary.fail(name, format!("cannot read: {e}"));
                    return Ok(());
                }
                if body.len() as u64 > self.max_request_bytes {
                    self.summary.fail(
                        name,
                        format!(
                            "larger than --max-request-bytes ({} bytes)",
                            self.max_request_bytes
                        ),
                    );
                    return Ok(());
                }
                let decoded = if format == Format::Protobuf {
                    otlp::decode_protobuf(&body)
                } else {
                    otlp::decode_json(&body).map_err(|e| match e {
                        DecodeError::Json {
                            line,
                            column,
                            reason,
                        } if line > 1 && reason.contains("trailing characters") => {
                            DecodeError::Json {
                                line,
                                column,
                                reason: format!(
                                    "{reason} (a .json file holds one request; \
                                     name a file with one request per line .jsonl)"
                                ),
                            }
                        }
                        other => other,
                    })
                };
                self.request(|| name.clone(), decoded)
            }
            Format::JsonLines => {
                let mut reader = BufReader::new(file);
                let mut line = Vec::new();
                let mut number = 0u64;
                loop {
                    number += 1;
                    let source = || format!("{name}:{number}");
                    match read_line(&mut reader, self.max_request_bytes, &mut line) {
                        Err(e) => {
                            self.summary.fail(source(), format!("cannot read: {e}"));
                            return Ok(());
                        }
                        Ok(Line::End) => return Ok(()),
                        Ok(Line::TooLong) => self.summary.fail(
                            source(),
                            format!(
                                "line longer than --max-request-bytes ({} bytes)",
                                self.max_request_bytes
                            ),
                        ),
                        Ok(Line::Read) if line.iter().all(u8::is_ascii_whitespace) => {}
                        Ok(Line::Read) => self.request(source, otlp::decode_json(&line))?,
                    }
                }
            }
        }
    }
}

enum Line {
    Read,
    TooLong,
    End,
}

/// Reads one line (without its end) of at most `max` bytes into `buf`; a
/// longer line is skipped, never held in memory whole.
fn read_line(r: &mut impl BufRead, max: u64, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = r
        .by_ref()
        .take(max.saturating_add(1))
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Line::Read);
    }
    if buf.len() as u64 <= max {
        return Ok(Line::Read); // the last line, without a newline
    }
    buf.clear();
    loop {
        let (found, used) = {
            let avail = r.fill_buf()?;
            match avail.iter().position(|b| *b == b'\n') {
                Some(i) => (true, i + 1),
                None => (avail.is_empty(), avail.len()),
            }
        };
        r.consume(used);
        if found {
            return Ok(Line::TooLong);
        }
    }
}

/// Ingests `paths` into the store `open` opens (once the paths are found:
/// a path that is not there creates no store).
pub(crate) fn run(
    open: impl FnOnce() -> CliResult<SessionStore>,
    paths: &[PathBuf],
    project: Option<String>,
    max_request_bytes: u64,
    json: bool,
) -> CliResult {
    let files = collect(paths)?;
    let store = &open()?;
    let mut options = IngestOptions::new();
    if let Some(p) = project {
        options = options.project(p);
    }
    let mut ingest = Ingest {
        store,
        options,
        max_request_bytes,
        summary: Summary::default(),
    };
    let mut progress = Progress::new(files.len());
    for (path, format) in &files {
        ingest.summary.files += 1;
        ingest.file(path, *format)?;
        progress.tick(&ingest.summary);
    }
    progress.finish();
    store.sync()?;
    let s = ingest.summary;
    let mut out = io::stdout().lock();
    if json {
        write_json(&mut out, &s)?;
    } else {
        writeln!(
            out,
            "ingested {} file(s), {} request(s): {} spans accepted, {} duplicates, {} rejected",
            s.files, s.requests, s.spans_accepted, s.duplicates, s.spans_rejected
        )?;
        if !s.rejections.is_empty() {
            writeln!(out, "rejected spans:")?;
            for r in &s.rejections {
                writeln!(
                    out,
                    "  {}: span {} of trace {}: {}",
                    safe(&r.source),
                    r.span_id,
                    r.trace_id,
                    safe(&r.reason)
                )?;
            }
            if s.spans_rejected > s.rejections.len() as u64 {
                writeln!(
                    out,
                    "  ... and {} more",
                    s.spans_rejected - s.rejections.len() as u64
                )?;
            }
        }
    }
    if s.failed_requests > 0 {
        for f in &s.failures {
            let _ = writeln!(
                io::stderr(),
                "span-sessions: {}: {}",
                safe(&f.source),
                safe(&f.error)
            );
        }
        return Err(CliError(format!(
            "{} request(s) could not be read or decoded and were not stored",
            s.failed_requests
        )));
    }
    Ok(())
}

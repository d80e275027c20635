//! The receiver's HTTP/1.1 server: small, and bounded in everything a
//! client sends.
//!
//! `tiny_http`, used before, read a request's head line by line into
//! vectors without a limit: one endless header line made the receiver
//! allocate until it died. Here:
//! - the request line and each header line are at most [`MAX_LINE`] bytes,
//!   and there are at most [`MAX_HEADERS`] headers (431 beyond);
//! - a body is read only by the handler, through [`Body`], which stops at
//!   its `Content-Length` or at the end of its chunks (`Transfer-Encoding:
//!   chunked`, chunk-size lines bounded too); the handler bounds how much
//!   it reads;
//! - every read and write times out ([`Limits::timeout`]), a request's
//!   head must arrive whole within that time of its first byte (408
//!   beyond), and its body within that time of the handler's first read
//!   plus one second per [`BODY_MIN_RATE`] bytes it brings (the read then
//!   fails, and the connection closes after the answer), so a client that
//!   stalls, or sends a byte at a time, does not hold its connection's
//!   thread, one of [`Limits::connections`], for long;
//! - a body's framing follows RFC 9112, 6: `Transfer-Encoding` must end in
//!   `chunked` (400) and hold nothing else (501), and is refused in an
//!   HTTP/1.0 request (400); `Content-Length` must be digits, the same in
//!   every field that gives it (400); a request with both is read as
//!   chunked and its connection closed after the answer. A server reading
//!   a body's end differently from a proxy in front of it would take the
//!   rest of that body as another request;
//! - at most [`Limits::connections`] connections are served at once (one
//!   thread each); one more is answered 503 and closed.
//!
//! Connections are kept alive as HTTP/1.1 says (HTTP/1.0: only when asked)
//! unless a handler left part of a body unread, an error ended the
//! request, or the client asked to close. `Expect: 100-continue` is
//! answered when the handler starts reading the body, so a request refused
//! from its head alone (415, 413 on its `Content-Length`) is not sent.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Longest request line or header line, CRLF included.
pub(crate) const MAX_LINE: usize = 8 << 10;

/// Most header lines in a request (trailers of a chunked body included).
pub(crate) const MAX_HEADERS: usize = 100;

/// Longest chunk-size line of a chunked body (with its extensions).
const MAX_CHUNK_LINE: usize = 1 << 10;

/// The slowest average rate, in bytes a second, at which a body is read
/// once its first [`Limits::timeout`] has passed (Apache's
/// `mod_reqtimeout` makes the same rule, at 500 bytes a second).
pub(crate) const BODY_MIN_RATE: u64 = 16 << 10;

/// What the server lets a client do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub connections: usize,
    /// Longest wait for a read or a write on a connection (an idle
    /// keep-alive connection is closed after it too).
    pub timeout: Duration,
}

/// A request's line and headers.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// HTTP/1.1 (else 1.0).
    http11: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The value of the first header named `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The elements of every header named `name`, as comma-separated
    /// lists, trimmed, empty ones left out (RFC 9110, 5.6.1).
    fn elements<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// Whether the header `name` holds `token` in its comma-separated list.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.elements(name).any(|t| t.eq_ignore_ascii_case(token))
    }

    /// How the request's body ends (RFC 9112, 6.1-6.3), and whether the
    /// connection must close after the answer; or the error to answer
    /// (status and reason), after which it closes.
    fn framing(&self) -> Result<(Framing, bool), (u16, &'static str)> {
        let codings: Vec<&str> = self.elements("Transfer-Encoding").collect();
        let lengths = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("Content-Length"));
        if let Some(last) = codings.last() {
            if !self.http11 {
                return Err((400, "Transfer-Encoding in an HTTP/1.0 request"));
            }
            if !last.eq_ignore_ascii_case("chunked") {
                return Err((400, "Transfer-Encoding does not end in chunked"));
            }
            if codings.len() > 1 {
                return Err((501, "only the chunked transfer coding is supported"));
            }
            // With a Content-Length as well, chunked decides, and the
            // connection must close (RFC 9112, 6.3).
            return Ok((Framing::Chunked { left: 0 }, lengths));
        }
        let mut length = None;
        for value in self.elements("Content-Length") {
            let n = Some(value)
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or((400, "Content-Length is not a number"))?;
            if length.is_some_and(|m| m != n) {
                return Err((400, "Content-Length fields disagree"));
            }
            length = Some(n);
        }
        match length {
            Some(n) => Ok((Framing::Length(n), false)),
            // A Content-Length field holding no value at all.
            None if lengths => Err((400, "Content-Length is not a number")),
            None => Ok((Framing::Done, false)),
        }
    }
}

/// An answer to write.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// More headers (name, value).
    pub headers: Vec<(&'static str, &'static str)>,
}

/// Why a request's head could not be read.
#[derive(Debug)]
enum HeadError {
    /// The connection ended, or timed out, before a request began.
    Closed,
    /// A line or the header count over its limit: 431.
    TooLarge,
    /// The head did not arrive in time: 408.
    TimedOut,
    /// Not HTTP/1.x: 400.
    Malformed(&'static str),
    /// The connection failed in the middle.
    Io,
}

/// Reads one line ending in CRLF (or LF) of at most `max` bytes, without
/// its line end. `Ok(None)` at the end of the stream before any byte.
fn read_line(r: &mut impl BufRead, max: usize) -> Result<Option<Vec<u8>>, HeadError> {
    let mut line = Vec::new();
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A socket's read timeout is `WouldBlock` on Unix.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return Err(HeadError::TimedOut);
            }
            Err(_) if line.is_empty() => return Err(HeadError::Closed),
            Err(_) => return Err(HeadError::Io),
        };
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(HeadError::Io)
            };
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        if line.len() + chunk.len() > max {
            return Err(HeadError::TooLarge);
        }
        line.extend_from_slice(chunk);
        let n = chunk.len();
        r.consume(n);
        if done {
            line.pop(); // '\n'
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(line));
        }
    }
}

/// Reads a request's head; `Ok(None)` when the client closed the
/// connection between requests.
fn read_head(r: &mut impl BufRead) -> Result<Option<Head>, HeadError> {
    // Empty lines before a request are allowed (RFC 9112, 2.2).
    let line = loop {
        match read_line(r, MAX_LINE)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => continue,
            Some(l) => break l,
        }
    };
    let line = String::from_utf8(line).map_err(|_| HeadError::Malformed("request line"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("request line"));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HeadError::Malformed("HTTP version")),
    };
    if method.is_empty() || target.is_empty() {
        return Err(HeadError::Malformed("request line"));
    }
    let headers = read_fields(r, MAX_HEADERS)?;
    Ok(Some(Head {
        method: method.to_owned(),
        target: target.to_owned(),
        http11,
        headers,
    }))
}

/// Reads header fields up to the empty line that ends them.
fn read_fields(r: &mut impl BufRead, max: usize) -> Result<Vec<(String, String)>, HeadError> {
    let mut fields = Vec::new();
    loop {
        let line = read_line(r, MAX_LINE)?.ok_or(HeadError::Io)?;
        if line.is_empty() {
            return Ok(fields);
        }
        if fields.len() == max {
            return Err(HeadError::TooLarge);
        }
        let line = String::from_utf8(line).map_err(|_| HeadError::Malformed("header"))?;
        let (name, value) = line.split_once(':').ok_or(HeadError::Malformed("header"))?;
        // No whitespace before the colon, nor obsolete line folding.
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed("header"));
        }
        fields.push((name.to_owned(), value.trim().to_owned()));
    }
}

/// How a request's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`: this many bytes are left of the
    /// current chunk (0: a chunk-size line comes next).
    Chunked { left: u64 },
    /// The body has been read to its end (and a chunked one's trailers).
    Done,
}

/// A client's connection: a socket whose reads time out after the
/// server's timeout, and also at a deadline while one is set (the end of
/// the time a request's head or body may take to arrive), which each byte
/// read may push back.
pub(crate) struct Conn {
    stream: TcpStream,
    timeout: Duration,
    deadline: Option<Instant>,
    /// How far each byte read pushes the deadline back.
    per_byte: Duration,
}

impl Conn {
    fn new(stream: TcpStream, timeout: Duration) -> Conn {
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            timeout,
            deadline: None,
            per_byte: Duration::ZERO,
        }
    }

    /// Reads stop at `deadline` (as well as after the timeout), pushed
    /// back by `per_byte` for each byte read, until [`Conn::no_deadline`].
    fn deadline(&mut self, deadline: Instant, per_byte: Duration) {
        self.deadline = Some(deadline);
        self.per_byte = per_byte;
    }

    fn no_deadline(&mut self) {
        if self.deadline.take().is_some() {
            let _ = self.stream.set_read_timeout(Some(self.timeout));
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            self.stream.set_read_timeout(Some(left.min(self.timeout)))?;
            let n = self.stream.read(buf)?;
            let later = self
                .per_byte
                .saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            self.deadline = Some(deadline + later);
            return Ok(n);
        }
        self.stream.read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A request's body, read as the handler asks, from a connection `S`.
pub(crate) struct Body<'a, S: Read + Write = Conn> {
    conn: &'a mut BufReader<S>,
    framing: Framing,
    /// `Expect: 100-continue` not yet answered.
    must_continue: bool,
    /// The framing was broken (a bad chunk line): the connection closes.
    broken: bool,
}

impl<S: Read + Write> Body<'_, S> {
    /// The body's length, when its `Content-Length` gave one.
    pub(crate) fn length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    fn finished(&self) -> bool {
        self.framing == Framing::Done && !self.broken
    }

    fn bad(&mut self, what: &str) -> io::Error {
        self.broken = true;
        io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
    }

    /// A read of the connection failed: a timeout, or the deadline, is
    /// `TimedOut` whatever the platform calls it (a socket's read timeout
    /// is `WouldBlock` on Unix), so that the handler can answer 408.
    fn failed(&mut self, e: io::Error) -> io::Error {
        match e.kind() {
            // Read again.
            io::ErrorKind::Interrupted => e,
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                self.broken = true;
                timed_out()
            }
            _ => {
                self.broken = true;
                e
            }
        }
    }

    /// A line of the chunked framing could not be read.
    fn bad_line(&mut self, e: &HeadError, what: &str) -> io::Error {
        match e {
            HeadError::TimedOut => {
                self.broken = true;
                timed_out()
            }
            _ => self.bad(what),
        }
    }

    /// Reads a chunk-size line; moves to the next chunk or the end.
    fn next_chunk(&mut self) -> io::Result<()> {
        let what = "a chunked body's chunk-size line is missing or too long";
        let line = match read_line(self.conn, MAX_CHUNK_LINE) {
            Ok(Some(l)) => l,
            Ok(None) => return Err(self.bad(what)),
            Err(e) => return Err(self.bad_line(&e, what)),
        };
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 15)
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        match size {
            Some(0) => {
                // Trailers, then the empty line.
                if let Err(e) = read_fields(self.conn, MAX_HEADERS) {
                    return Err(
                        self.bad_line(&e, "a chunked body's trailers are malformed or too large")
                    );
                }
                self.framing = Framing::Done;
                Ok(())
            }
            Some(n) => {
                self.framing = Framing::Chunked { left: n };
                Ok(())
            }
            None => Err(self.bad("a chunked body's chunk size is not hexadecimal")),
        }
    }
}

/// The error of a body that did not arrive in time.
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the request body did not arrive in time",
    )
}

impl<S: Read + Write> Read for Body<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.broken {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "broken body"));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.must_continue {
            self.must_continue = false;
            let out = self.conn.get_mut();
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            out.flush()?;
        }
        loop {
            match self.framing {
                Framing::Done | Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(0);
                }
                Framing::Length(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self
                        .conn
                        .read(&mut buf[..want])
                        .map_err(|e| self.failed(e))?;
                    if n == 0 {
                        return Err(self.bad("the body ended before its Content-Length"));
                    }
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(n);
                }
                Framing::Chunked { left: 0 } => self.next_chunk()?,
                Framing::Chunked { left } => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self
                        .conn
                        .read(&mut buf[..want])
                        .map_err(|e| self.failed(e))?;
                    if n == 0 {
                        return Err(self.bad("the body ended inside a chunk"));
                    }
                    let left = left - n as u64;
                    if left == 0 {
                        // The CRLF after the chunk's data.
                        let what = "a chunk's data is not followed by CRLF";
                        match read_line(self.conn, 2) {
                            Ok(Some(l)) if l.is_empty() => {}
                            Ok(_) => return Err(self.bad(what)),
                            Err(e) => return Err(self.bad_line(&e, what)),
                        }
                    }
                    self.framing = Framing::Chunked { left };
                    return Ok(n);
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Writes `r`; without its body in answer to a `HEAD` request (`bodiless`),
/// as HTTP requires, its `Content-Length` still that of the body.
fn write_response(
    out: &mut impl Write,
    r: &Response,
    close: bool,
    bodiless: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if !bodiless {
        out.write_all(&r.body)?;
    }
    out.flush()
}

fn plain(status: u16, message: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("{message}\n").into_bytes(),
        headers: Vec::new(),
    }
}

/// Closes a connection the client may still be sending on: stops
/// writing, then reads and drops what arrives for a little while (at most
/// [`LINGER`], [`LINGER_BYTES`]), so that the answer already sent is read
/// before the connection goes. Closing a socket with unread input makes
/// the kernel reset the connection, and a client reading after the reset
/// gets an error instead of the answer (a 413 or 431 it should act on).
fn linger(conn: BufReader<Conn>) {
    linger_stream(conn.into_inner().stream);
}

/// [`linger`] on a bare socket.
fn linger_stream(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER / 4));
    let deadline = std::time::Instant::now() + LINGER;
    let mut buf = [0u8; 16 << 10];
    let mut read = 0;
    while read < LINGER_BYTES && std::time::Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
}

/// How long a closing connection is drained, at most ([`linger`])...
const LINGER: Duration = Duration::from_secs(2);
/// ...and how many bytes.
const LINGER_BYTES: usize = 64 << 20;

/// Serves one connection until it closes.
fn serve_connection<H>(stream: TcpStream, limits: Limits, handler: &H)
where
    H: Fn(&Head, &mut Body<'_>) -> Response,
{
    let mut conn = BufReader::with_capacity(64 << 10, Conn::new(stream, limits.timeout));
    loop {
        // Wait (up to the timeout) for the next request to begin; from its
        // first byte, its whole head must come within the timeout.
        match conn.fill_buf() {
            Ok([]) | Err(_) => return,
            Ok(_) => {}
        }
        conn.get_mut()
            .deadline(Instant::now() + limits.timeout, Duration::ZERO);
        let head = read_head(&mut conn);
        conn.get_mut().no_deadline();
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) | Err(HeadError::Closed | HeadError::Io) => return,
            Err(HeadError::TimedOut) => {
                let r = plain(408, "the request head did not arrive in time");
                let _ = write_response(conn.get_mut(), &r, true, false);
                return linger(conn);
            }
            Err(HeadError::TooLarge) => {
                let r = plain(
                    431,
                    &format!(
                        "request head too large: lines of at most {MAX_LINE} bytes, at most {MAX_HEADERS} headers"
                    ),
                );
                let _ = write_response(conn.get_mut(), &r, true, false);
                return linger(conn);
            }
            Err(HeadError::Malformed(what)) => {
                let r = plain(400, &format!("malformed HTTP/1.1 request: {what}"));
                let _ = write_response(conn.get_mut(), &r, true, false);
                return linger(conn);
            }
        };
        let (framing, must_close) = match head.framing() {
            Ok(f) => f,
            Err((status, what)) => {
                let r = plain(status, &format!("malformed HTTP/1.1 request: {what}"));
                let _ = write_response(conn.get_mut(), &r, true, false);
                return linger(conn);
            }
        };
        let keep_alive = if must_close || head.has_token("Connection", "close") {
            false
        } else {
            head.http11 || head.has_token("Connection", "keep-alive")
        };
        let must_continue = head.http11 && head.has_token("Expect", "100-continue");
        // The body has the timeout from the handler's start, and a second
        // more for each `BODY_MIN_RATE` bytes it brings.
        conn.get_mut().deadline(
            Instant::now() + limits.timeout,
            Duration::from_nanos(1_000_000_000 / BODY_MIN_RATE),
        );
        let (response, finished) = {
            let mut body = Body {
                conn: &mut conn,
                framing,
                must_continue,
                broken: false,
            };
            let response = handler(&head, &mut body);
            // What the handler left of a small body is read past, so the
            // connection can carry the next request; anything more closes
            // it. A body the client waits to be asked for (`Expect:
            // 100-continue`) and that the handler did not want is not asked
            // for: the connection closes instead.
            if !body.must_continue {
                let mut rest = (&mut body).take(64 << 10);
                let _ = io::copy(&mut rest, &mut io::sink());
            }
            let finished = body.finished() || matches!(body.framing, Framing::Length(0));
            (response, finished)
        };
        conn.get_mut().no_deadline();
        let close = !keep_alive || !finished;
        let bodiless = head.method == "HEAD";
        let mut response = response;
        if !close && !head.http11 {
            // An HTTP/1.0 client keeps the connection only when told so
            // (RFC 9112, C.2.2).
            response.headers.push(("Connection", "keep-alive"));
        }
        if write_response(conn.get_mut(), &response, close, bodiless).is_err() {
            return;
        }
        if close {
            return linger(conn);
        }
    }
}

/// Connections over the limit answered at once, each on a short-lived
/// thread of its own; past these, one more is answered and closed without
/// waiting.
const REFUSERS: usize = 32;

/// Answers a connection over the limit 503 and closes it. The client may
/// be sending a request already: on a thread of its own (at most
/// [`REFUSERS`] at once) the connection is drained as [`linger`] does, so
/// that the client finishes sending and reads the 503, which OTLP
/// clients retry with backoff, rather than failing its write on a reset.
fn refuse(mut stream: TcpStream, timeout: Duration, refusing: &Arc<AtomicUsize>) {
    let _ = stream.set_write_timeout(Some(timeout));
    let too_many = || plain(503, "too many connections; retry later");
    if refusing.fetch_add(1, Ordering::AcqRel) >= REFUSERS {
        refusing.fetch_sub(1, Ordering::AcqRel);
        let _ = write_response(&mut stream, &too_many(), true, false);
        return;
    }
    // Handed over once the thread exists, so that the answer is still
    // written here if it does not.
    let (tx, rx) = std::sync::mpsc::channel::<TcpStream>();
    let done = Arc::clone(refusing);
    let spawned = thread::Builder::new()
        .name("span-sessions-http-refuse".to_owned())
        .spawn(move || {
            if let Ok(mut s) = rx.recv()
                && write_response(&mut s, &too_many(), true, false).is_ok()
            {
                linger_stream(s);
            }
            done.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_ok() {
        let _ = tx.send(stream);
    } else {
        refusing.fetch_sub(1, Ordering::AcqRel);
        let _ = write_response(&mut stream, &too_many(), true, false);
    }
}

/// A server listening on an address, serving each connection on a thread
/// of its own.
pub(crate) struct Server {
    listener: TcpListener,
    limits: Limits,
}

impl Server {
    pub(crate) fn bind(addr: &str, limits: Limits) -> io::Result<Server> {
        Ok(Server {
            listener: TcpListener::bind(addr)?,
            limits,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts and serves connections until accepting fails for good.
    pub(crate) fn run<H>(&self, handler: Arc<H>) -> io::Result<()>
    where
        H: Fn(&Head, &mut Body<'_>) -> Response + Send + Sync + 'static,
    {
        let active = Arc::new(AtomicUsize::new(0));
        let refusing = Arc::new(AtomicUsize::new(0));
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                // A client that went away before it was accepted, or a
                // momentary shortage of file descriptors: go on.
                Err(e) => {
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) || e.raw_os_error() == Some(24)
                    {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    return Err(e);
                }
            };
            if active.fetch_add(1, Ordering::AcqRel) >= self.limits.connections {
                active.fetch_sub(1, Ordering::AcqRel);
                refuse(stream, self.limits.timeout, &refusing);
                continue;
            }
            let (handler, done, limits) = (Arc::clone(&handler), Arc::clone(&active), self.limits);
            let spawned = thread::Builder::new()
                .name("span-sessions-http".to_owned())
                .spawn(move || {
                    serve_connection(stream, limits, handler.as_ref());
                    done.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// Requests read from bytes in memory, for tests of the server and its
/// handlers, and for the `http` fuzz target.
#[cfg(any(test, fuzzing))]
pub(crate) mod in_memory {
    use super::*;
    use std::io::Cursor;

    /// A connection in memory: reads what `input` holds, keeps what is
    /// written.
    pub(crate) struct Duplex {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
        /// Once `input` is read, reads time out (as a socket's do, with
        /// `WouldBlock`) instead of ending.
        stalls: bool,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.input.read(buf)? {
                0 if self.stalls && !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    pub(crate) fn duplex(bytes: Vec<u8>) -> BufReader<Duplex> {
        // A small buffer, so that lines and chunks straddle its refills.
        BufReader::with_capacity(
            7,
            Duplex {
                input: Cursor::new(bytes),
                output: Vec::new(),
                stalls: false,
            },
        )
    }

    /// `data` as a chunked body: chunks of the given sizes (cycled), some
    /// with extensions, and a trailer.
    pub(crate) fn chunked(data: &[u8], sizes: &[usize], ext: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).clamp(1, rest.len()));
            out.extend_from_slice(format!("{:X}", chunk.len()).as_bytes());
            if ext {
                out.extend_from_slice(b";name=\"v\"");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = tail;
        }
        out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
        out
    }

    /// The entry of the `http` cargo-fuzz target
    /// (`fuzz/fuzz_targets/http.rs`, which compiles this file); a unit test
    /// runs it on the target's corpus. `Err` names a broken property. The
    /// first byte picks how the rest is read:
    /// - even: as the bytes a client sent on one connection. Requests are
    ///   read one after the other as the server reads them, each body
    ///   through its framing (at most 1 MiB of it), until the bytes end or
    ///   a request would close the connection. No panic, every head within
    ///   the limits, no more body bytes read than were sent.
    /// - odd: as up to 8 requests to send (framing, chunk sizes, body),
    ///   sent one after the other: they must read back exactly, bodies
    ///   whole, and nothing after them.
    pub(crate) fn connection(data: &[u8]) -> Result<(), String> {
        match data.split_first() {
            Some((mode, rest)) if mode % 2 == 1 => round_trip(rest),
            Some((_, rest)) => read_all(rest),
            None => Ok(()),
        }
    }

    fn read_all(bytes: &[u8]) -> Result<(), String> {
        let mut conn = duplex(bytes.to_vec());
        let mut read = 0;
        // Each request takes at least one byte.
        for _ in 0..=bytes.len() {
            let Ok(Some(head)) = read_head(&mut conn) else {
                return Ok(());
            };
            if head.headers.len() > MAX_HEADERS || head.target.len() > MAX_LINE {
                return Err(format!("a head over the limits: {head:?}"));
            }
            let Ok((framing, close)) = head.framing() else {
                return Ok(());
            };
            let mut body = Body {
                conn: &mut conn,
                framing,
                must_continue: false,
                broken: false,
            };
            let mut got = Vec::new();
            let _ = (&mut body).take(1 << 20).read_to_end(&mut got);
            read += got.len();
            if read > bytes.len() {
                return Err(format!("{read} body bytes read from {} sent", bytes.len()));
            }
            if close || !body.finished() {
                return Ok(());
            }
        }
        Err("more requests read than bytes sent".to_owned())
    }

    fn round_trip(spec: &[u8]) -> Result<(), String> {
        let mut spec = spec.iter().copied();
        let mut byte = || spec.next().unwrap_or(0);
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for i in 0..1 + byte() % 8 {
            let flags = byte();
            let len = usize::from(byte()) * 7;
            let sizes: Vec<usize> = (0..1 + flags % 4)
                .map(|_| 1 + usize::from(byte()))
                .collect();
            let body: Vec<u8> = (0..len).map(|_| byte()).collect();
            if flags & 0x10 != 0 {
                wire.extend_from_slice(b"\r\n");
            }
            let target = format!("/r{i}?f={flags}");
            wire.extend_from_slice(format!("POST {target} HTTP/1.1\r\nHost: h\r\n").as_bytes());
            if flags & 0x20 != 0 {
                wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                wire.extend_from_slice(&chunked(&body, &sizes, flags & 0x40 != 0));
            } else {
                let n = body.len();
                wire.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
                if flags & 0x40 != 0 {
                    wire.extend_from_slice(format!("content-length: {n}, {n}\r\n").as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&body);
            }
            sent.push((target, body));
        }
        let mut conn = duplex(wire);
        for (target, body) in sent {
            let head = match read_head(&mut conn) {
                Ok(Some(head)) => head,
                other => return Err(format!("{target}: {other:?}")),
            };
            if head.target != target || head.method != "POST" {
                return Err(format!("{target}: read {} {}", head.method, head.target));
            }
            let (framing, close) = head.framing().map_err(|e| format!("{target}: {e:?}"))?;
            if close {
                return Err(format!("{target}: framed to close"));
            }
            let mut b = Body {
                conn: &mut conn,
                framing,
                must_continue: false,
                broken: false,
            };
            let mut got = Vec::new();
            b.read_to_end(&mut got)
                .map_err(|e| format!("{target}: {e}"))?;
            if got != body || !b.finished() {
                return Err(format!(
                    "{target}: body of {} bytes read as {}",
                    body.len(),
                    got.len()
                ));
            }
        }
        match read_head(&mut conn) {
            Ok(None) => Ok(()),
            other => Err(format!("after the requests: {other:?}")),
        }
    }

    /// Reads the request in `wire` and gives its head and body to
    /// `handler`, as the server would.
    #[cfg(test)]
    pub(crate) fn handle<T>(
        wire: &[u8],
        handler: impl FnOnce(&Head, &mut Body<'_, Duplex>) -> T,
    ) -> T {
        handle_on(duplex(wire.to_vec()), handler)
    }

    /// [`handle`], on a connection whose client sends `wire` and then
    /// nothing more, so that reads past it time out.
    #[cfg(test)]
    pub(crate) fn handle_stalled<T>(
        wire: &[u8],
        handler: impl FnOnce(&Head, &mut Body<'_, Duplex>) -> T,
    ) -> T {
        let mut conn = duplex(wire.to_vec());
        conn.get_mut().stalls = true;
        handle_on(conn, handler)
    }

    #[cfg(test)]
    fn handle_on<T>(
        mut conn: BufReader<Duplex>,
        handler: impl FnOnce(&Head, &mut Body<'_, Duplex>) -> T,
    ) -> T {
        let head = match read_head(&mut conn) {
            Ok(Some(head)) => head,
            other => panic!("not a request: {other:?}"),
        };
        let (framing, _) = head.framing().unwrap_or_else(|e| panic!("{e:?}"));
        let mut body = Body {
            conn: &mut conn,
            framing,
            must_continue: false,
            broken: false,
        };
        handler(&head, &mut body)
    }
}

#[cfg(test)]
mod tests {
    use super::in_memory::{chunked, duplex};
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    proptest! {
        /// Any body, chunked any way (or sent with its length), reads back
        /// whole, and the request after it on the same connection reads
        /// too.
        #[test]
        fn bodies_read_back_whole_in_either_framing(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            sizes in proptest::collection::vec(1usize..300, 1..5),
            ext in any::<bool>(),
            by_length in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            if by_length {
                wire.extend_from_slice(format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", data.len()).as_bytes());
                wire.extend_from_slice(&data);
            } else {
                wire.extend_from_slice(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
                wire.extend_from_slice(&chunked(&data, &sizes, ext));
            }
            wire.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let mut conn = duplex(wire);
            let head = read_head(&mut conn).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            let head = head.ok_or_else(|| TestCaseError::fail("no request"))?;
            let framing = if by_length {
                Framing::Length(data.len() as u64)
            } else {
                Framing::Chunked { left: 0 }
            };
            let mut body = Body { conn: &mut conn, framing, must_continue: false, broken: false };
            let mut got = Vec::new();
            body.read_to_end(&mut got).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got, &data);
            prop_assert!(body.finished());
            prop_assert_eq!(head.method.as_str(), "POST");
            let next = read_head(&mut conn).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(next.map(|h| h.target), Some("/next".to_owned()));
        }

        /// Any bytes as a connection's requests, and any requests sent
        /// one after the other: the fuzz target's properties (see
        /// `in_memory::connection`).
        #[test]
        fn any_bytes_are_read_without_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            prefix in prop::sample::select(vec![
                &b""[..],
                b"POST / HTTP/1.1\r\n",
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n",
            ]),
            mode in 0u8..2,
        ) {
            let mut input = vec![mode];
            if mode == 0 {
                input.extend_from_slice(prefix);
            }
            input.extend_from_slice(&bytes);
            in_memory::connection(&input).map_err(TestCaseError::fail)?;
        }
    }

    /// Every input in the `http` fuzz target's corpus keeps its
    /// properties (as `tests/fuzz_corpus.rs` does for the library's
    /// targets).
    #[test]
    fn the_fuzz_corpus_passes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/http");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
            .collect();
        assert!(files.len() >= 4, "{} files", files.len());
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{e}"));
            if let Err(e) = in_memory::connection(&data) {
                panic!("{}: {e}", f.display());
            }
        }
    }

    /// The framing of a request with these header lines (HTTP/1.1 unless
    /// `http10`).
    fn framing_of(fields: &str, http10: bool) -> Result<(Framing, bool), (u16, &'static str)> {
        let version = if http10 { "1.0" } else { "1.1" };
        let wire = format!("POST / HTTP/{version}\r\n{fields}\r\n").into_bytes();
        match read_head(&mut duplex(wire)) {
            Ok(Some(head)) => head.framing(),
            other => panic!("{fields:?}: {other:?}"),
        }
    }

    #[test]
    fn a_body_is_framed_as_rfc_9112_says() {
        let chunked = Framing::Chunked { left: 0 };
        for (fields, http10, want) in [
            ("", false, Ok((Framing::Done, false))),
            (
                "Content-Length: 5\r\n",
                false,
                Ok((Framing::Length(5), false)),
            ),
            (
                "Content-Length: 007\r\n",
                true,
                Ok((Framing::Length(7), false)),
            ),
            // The same length given twice, or as a list, is one length.
            (
                "Content-Length: 5\r\ncontent-length: 5\r\n",
                false,
                Ok((Framing::Length(5), false)),
            ),
            (
                "Content-Length: 5, 5\r\n",
                false,
                Ok((Framing::Length(5), false)),
            ),
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                false,
                Err(400),
            ),
            ("Content-Length: 5, 6\r\n", false, Err(400)),
            ("Content-Length: +5\r\n", false, Err(400)),
            ("Content-Length: -0\r\n", false, Err(400)),
            ("Content-Length: 5 5\r\n", false, Err(400)),
            ("Content-Length:\r\n", false, Err(400)),
            ("Content-Length: 18446744073709551616\r\n", false, Err(400)),
            (
                "Transfer-Encoding: chunked\r\n",
                false,
                Ok((chunked, false)),
            ),
            (
                "Transfer-Encoding: Chunked, \r\n",
                false,
                Ok((chunked, false)),
            ),
            // Both: chunked decides, and the connection closes after.
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                false,
                Ok((chunked, true)),
            ),
            (
                "Content-Length: x\r\nTransfer-Encoding: chunked\r\n",
                false,
                Ok((chunked, true)),
            ),
            // Not ending in chunked: the body's end cannot be known.
            ("Transfer-Encoding: gzip\r\n", false, Err(400)),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
                false,
                Err(400),
            ),
            (
                "Transfer-Encoding: chunked, gzip\r\nContent-Length: 5\r\n",
                false,
                Err(400),
            ),
            // Ending in chunked, with a coding the server does not know.
            ("Transfer-Encoding: gzip, chunked\r\n", false, Err(501)),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                false,
                Err(501),
            ),
            ("Transfer-Encoding: chunked\r\n", true, Err(400)),
        ] {
            let got = framing_of(fields, http10).map_err(|(status, _)| status);
            assert_eq!(got, want, "{fields:?}, HTTP/1.0: {http10}");
        }
    }

    #[test]
    fn an_empty_read_of_a_body_reads_nothing_and_breaks_nothing() {
        for (wire, framing) in [
            (&b"abc"[..], Framing::Length(3)),
            (b"3\r\nabc\r\n0\r\n\r\n", Framing::Chunked { left: 0 }),
        ] {
            let mut conn = duplex(wire.to_vec());
            let mut body = Body {
                conn: &mut conn,
                framing,
                must_continue: false,
                broken: false,
            };
            assert_eq!(body.read(&mut []).unwrap_or_else(|e| panic!("{e}")), 0);
            let mut got = Vec::new();
            body.read_to_end(&mut got).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, b"abc");
            assert!(body.finished());
        }
    }

    /// A server whose handler answers "METHOD TARGET BODY" (reading at most
    /// 1 MiB of the body, or none of it for targets starting "/skip").
    fn start(limits: Limits) -> SocketAddr {
        let server = Server::bind("127.0.0.1:0", limits).unwrap_or_else(|e| panic!("{e}"));
        let addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let handler = Arc::new(|head: &Head, body: &mut Body<'_>| {
            let mut data = Vec::new();
            if !head.target.starts_with("/skip") {
                let _ = body.take(1 << 20).read_to_end(&mut data);
            }
            Response {
                status: 200,
                content_type: "text/plain",
                body: format!(
                    "{} {} {}",
                    head.method,
                    head.target,
                    String::from_utf8_lossy(&data)
                )
                .into_bytes(),
                headers: Vec::new(),
            }
        });
        thread::spawn(move || server.run(handler));
        addr
    }

    fn limits() -> Limits {
        Limits {
            connections: 8,
            timeout: Duration::from_secs(5),
        }
    }

    /// Reads one response: its status, headers and body.
    fn response(r: &mut BufReader<TcpStream>) -> (u16, Vec<String>, String) {
        let mut line = String::new();
        r.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {line:?}"));
        let mut headers = Vec::new();
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap_or_else(|e| panic!("{e}"));
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("Content-Length: ") {
                len = v.parse().unwrap_or_else(|e| panic!("{e}"));
            }
            headers.push(h);
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap_or_else(|e| panic!("{e}"));
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        BufReader::new(s)
    }

    fn send(c: &mut BufReader<TcpStream>, bytes: &[u8]) {
        c.get_mut()
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// True if the server closed the connection (EOF, or reset).
    fn closed(c: &mut BufReader<TcpStream>) -> bool {
        let mut b = [0u8; 1];
        matches!(c.read(&mut b), Ok(0) | Err(_))
    }

    #[test]
    fn requests_share_a_connection_with_either_framing() {
        let addr = start(limits());
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nTrailer: t\r\n\r\n\
              \r\nPOST /b?q=1 HTTP/1.1\r\ncontent-length: 3\r\n\r\nxyz",
        );
        let (status, headers, body) = response(&mut c);
        assert_eq!((status, body.as_str()), (200, "POST /a abcdefg"));
        assert!(!headers.iter().any(|h| h.starts_with("Connection")));
        let (status, _, body) = response(&mut c);
        assert_eq!((status, body.as_str()), (200, "POST /b?q=1 xyz"));
        // HTTP/1.0 keeps the connection when asked, and says so.
        send(&mut c, b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let (status, headers, _) = response(&mut c);
        assert_eq!(status, 200);
        assert!(
            headers.iter().any(|h| h == "Connection: keep-alive"),
            "{headers:?}"
        );
        // HTTP/1.0 closes unless asked to keep the connection.
        send(&mut c, b"GET /c HTTP/1.0\r\n\r\n");
        let (status, headers, _) = response(&mut c);
        assert_eq!(status, 200);
        assert!(headers.iter().any(|h| h == "Connection: close"));
        assert!(closed(&mut c));
    }

    #[test]
    fn an_endless_header_line_or_too_many_headers_is_431_and_closes() {
        let addr = start(limits());
        let mut c = connect(addr);
        send(&mut c, b"POST / HTTP/1.1\r\nX-Long: ");
        // Far past the limit, never ending the line: the server stops
        // reading at the limit, answers and closes.
        let chunk = vec![b'a'; 64 << 10];
        for _ in 0..16 {
            if c.get_mut().write_all(&chunk).is_err() {
                break;
            }
        }
        let (status, _, _) = response(&mut c);
        assert_eq!(status, 431);
        assert!(closed(&mut c));
        let mut c = connect(addr);
        let mut head = b"POST / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        send(&mut c, &head);
        assert_eq!(response(&mut c).0, 431);
        assert!(closed(&mut c));
    }

    #[test]
    fn malformed_heads_and_chunks_are_400_and_close() {
        let addr = start(limits());
        for bad in [
            &b"PRI * HTTP/2.0\r\n\r\n"[..],
            b"POST /\r\n\r\n",
            b"POST / HTTP/1.1\r\nNo-Colon\r\n\r\n",
            b"POST / HTTP/1.1\r\nBad Name: v\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: ten\r\n\r\n",
        ] {
            let mut c = connect(addr);
            send(&mut c, bad);
            assert_eq!(response(&mut c).0, 400, "{}", String::from_utf8_lossy(bad));
            assert!(closed(&mut c));
        }
        // A bad chunk size: the handler reads an error, and the connection
        // closes after its answer.
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        );
        let (status, headers, body) = response(&mut c);
        assert_eq!((status, body.as_str()), (200, "POST /a "));
        assert!(headers.iter().any(|h| h == "Connection: close"));
        assert!(closed(&mut c));
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        );
        assert_eq!(response(&mut c).0, 501);
        assert!(closed(&mut c));
    }

    #[test]
    fn a_body_whose_end_is_in_doubt_is_not_followed_by_another_request() {
        let addr = start(limits());
        // Two lengths: a proxy taking the second would pass "GET /smuggled"
        // on as part of this body; the server answers 400 and closes.
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 26\r\n\r\n\
              xyzGET /smuggled HTTP/1.1\r\n\r\n",
        );
        assert_eq!(response(&mut c).0, 400);
        assert!(closed(&mut c));
        // Chunked and a length: read as chunked, then closed.
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        );
        let (status, headers, body) = response(&mut c);
        assert_eq!((status, body.as_str()), (200, "POST /a abc"));
        assert!(headers.iter().any(|h| h == "Connection: close"));
        assert!(closed(&mut c));
    }

    #[test]
    fn a_body_sent_a_byte_at_a_time_is_cut_off() {
        let addr = start(Limits {
            connections: 4,
            timeout: Duration::from_millis(300),
        });
        let mut c = connect(addr);
        send(&mut c, b"POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n");
        // Each byte within the timeout of the one before, but far below
        // the body's least rate: the handler's read fails after about the
        // timeout, it answers what it read, and the connection closes.
        let mut writer = c.get_ref().try_clone().unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let dripping = thread::spawn(move || {
            for _ in 0..100 {
                if writer.write_all(b"x").is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let (status, headers, body) = response(&mut c);
        let waited = started.elapsed();
        assert_eq!(status, 200);
        assert!(headers.iter().any(|h| h == "Connection: close"));
        assert!(body.len() < "POST /a ".len() + 20, "{body}");
        // The drip would last 10 s.
        assert!(waited < Duration::from_secs(4), "{waited:?}");
        let _ = dripping.join();
        // A body sent in pieces for longer than the timeout, but faster
        // than the least rate, is read whole: each byte pushes the
        // deadline back.
        let mut c = connect(addr);
        send(&mut c, b"POST /b HTTP/1.1\r\nContent-Length: 65536\r\n\r\n");
        let started = Instant::now();
        for _ in 0..16 {
            thread::sleep(Duration::from_millis(50));
            send(&mut c, &[b'y'; 4096]);
        }
        let (status, headers, body) = response(&mut c);
        assert!(started.elapsed() > Duration::from_millis(300));
        assert_eq!((status, body.len()), (200, "POST /b ".len() + 65536));
        assert!(!headers.iter().any(|h| h.starts_with("Connection")));
    }

    #[test]
    fn a_head_sent_a_byte_at_a_time_is_cut_off_at_the_timeout() {
        let addr = start(Limits {
            connections: 4,
            timeout: Duration::from_millis(300),
        });
        let mut c = connect(addr);
        // Each byte comes well within the timeout of the one before it, but
        // the head never ends.
        let mut writer = c.get_ref().try_clone().unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let dripping = thread::spawn(move || {
            for b in b"POST / HTTP/1.1\r\nX-Slow: "
                .iter()
                .chain([b'a'; 60].iter())
            {
                if writer.write_all(&[*b]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        let (status, headers, _) = response(&mut c);
        let waited = started.elapsed();
        assert_eq!(status, 408);
        assert!(headers.iter().any(|h| h == "Connection: close"));
        // The drip would last 8.5 s; the head had 0.3 s from its first byte.
        assert!(waited < Duration::from_secs(4), "{waited:?}");
        let _ = dripping.join();
        // An idle keep-alive connection still waits a whole timeout for the
        // next request, and a head sent at once is served.
        let mut c = connect(addr);
        thread::sleep(Duration::from_millis(200));
        send(&mut c, b"GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(response(&mut c).0, 200);
    }

    #[test]
    fn a_head_request_is_answered_without_a_body() {
        let addr = start(limits());
        let mut c = connect(addr);
        send(&mut c, b"HEAD /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
        let mut line = String::new();
        c.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            c.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
            if line == "\r\n" {
                break;
            }
        }
        // The next bytes are the second answer, not a body.
        let (status, _, body) = response(&mut c);
        assert_eq!((status, body.as_str()), (200, "GET /y "));
    }

    #[test]
    fn expect_100_continue_is_answered_when_the_body_is_read() {
        let addr = start(limits());
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        let mut line = String::new();
        c.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
        line.clear();
        c.read_line(&mut line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(line, "\r\n");
        send(&mut c, b"hello");
        assert_eq!(response(&mut c).2, "POST /a hello");
        // Not read by the handler: no 100, and the connection closes.
        send(
            &mut c,
            b"POST /skip HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        );
        let (status, headers, _) = response(&mut c);
        assert_eq!(status, 200);
        assert!(headers.iter().any(|h| h == "Connection: close"));
        assert!(closed(&mut c));
    }

    #[test]
    fn a_large_body_left_unread_closes_the_connection_and_a_small_one_does_not() {
        let addr = start(limits());
        let mut c = connect(addr);
        send(
            &mut c,
            b"POST /skip HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd",
        );
        let (status, headers, _) = response(&mut c);
        assert_eq!(status, 200);
        assert!(!headers.iter().any(|h| h.starts_with("Connection")));
        send(
            &mut c,
            b"POST /skip HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n",
        );
        // The client goes on sending the body the handler does not read:
        // the answer still reaches it whole (the server drains before it
        // closes, instead of resetting the connection).
        let mut writer = c.get_ref().try_clone().unwrap_or_else(|e| panic!("{e}"));
        let sender = thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..4 {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
            }
        });
        let (status, headers, _) = response(&mut c);
        assert_eq!(status, 200);
        assert!(headers.iter().any(|h| h == "Connection: close"));
        let _ = sender.join();
        assert!(closed(&mut c));
    }

    /// A client over the connection limit that sends its request at once
    /// finishes sending it and reads the 503: the server drains the
    /// connection before closing it, instead of resetting it under the
    /// client's write.
    #[test]
    fn a_client_over_the_limit_sends_its_request_whole_and_reads_503() {
        let addr = start(Limits {
            connections: 1,
            timeout: Duration::from_secs(5),
        });
        let _first = connect(addr);
        thread::sleep(Duration::from_millis(50));
        let mut second = connect(addr);
        // More than the sockets' buffers hold: the write only ends if the
        // server reads it.
        let body = 16usize << 20;
        let mut writer = second
            .get_ref()
            .try_clone()
            .unwrap_or_else(|e| panic!("{e}"));
        let sender = thread::spawn(move || {
            writer.write_all(
                format!("POST /a HTTP/1.1\r\nContent-Length: {body}\r\n\r\n").as_bytes(),
            )?;
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..body >> 20 {
                writer.write_all(&chunk)?;
            }
            Ok::<_, io::Error>(())
        });
        let sent = sender.join().unwrap_or_else(|_| panic!("the sender"));
        assert!(sent.is_ok(), "{sent:?}");
        let (status, headers, _) = response(&mut second);
        assert_eq!(status, 503);
        assert!(headers.iter().any(|h| h == "Connection: close"));
        assert!(closed(&mut second));
    }

    #[test]
    fn a_silent_client_is_cut_off_and_connections_are_limited() {
        let addr = start(Limits {
            connections: 1,
            timeout: Duration::from_millis(300),
        });
        let mut first = connect(addr);
        // Give the server time to take the first connection.
        thread::sleep(Duration::from_millis(50));
        let mut second = connect(addr);
        assert_eq!(response(&mut second).0, 503);
        let started = Instant::now();
        assert!(closed(&mut first));
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The slot is free again.
        thread::sleep(Duration::from_millis(50));
        let mut third = connect(addr);
        send(&mut third, b"GET /x HTTP/1.1\r\n\r\n");
        assert_eq!(response(&mut third).0, 200);
    }
}

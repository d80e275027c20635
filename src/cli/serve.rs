//! `span-sessions serve`: an OTLP/HTTP receiver for traces.
//!
//! `POST /v1/traces` with `application/x-protobuf` (or
//! `application/protobuf`) or `application/json`, optionally
//! `Content-Encoding: gzip`. Answers follow the OTLP/HTTP specification:
//! 200 with an `ExportTraceServiceResponse` (carrying the partial success
//! when spans were rejected) in the request's encoding; 400 with a
//! `google.rpc.Status` for a body that does not decode (nothing of it is
//! stored); 408 for a body that did not arrive in time (30 s, and a
//! second more for each 16 KiB it brings); 413 for a body over the limit (checked on `Content-Length`,
//! while reading, and again after gzip decompression) or one that would
//! decode into more than 32 times its size (`otlp::DecodeError::TooLarge`),
//! so memory stays bounded; 415 for another content type or encoding; 404/405 for other
//! paths and methods; 503 (retryable) when the store fails to write or is
//! being reopened, 500 when it finds damage.
//!
//! A failed write or fsync poisons the store: it refuses every later write
//! until reopened. The receiver then reopens it itself (see [`Stores`]):
//! once the requests still using the poisoned store are answered, the
//! next request closes it and opens the store again (recovery writes again
//! what the failure may have left undurable), at most once a second while
//! that fails (a disk still full); meanwhile requests get 503, which
//! exporters retry.

use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use prost::Message;
use span_sessions::otlp::{self, ExportTraceServiceRequest, IngestOptions};
use span_sessions::{ErrorKind, SessionStore};

use super::http::{Body, Head, Limits, Response, Server};
use super::output::safe;
use super::{CliError, CliResult};

pub(crate) struct ServeOptions {
    pub listen: String,
    pub project: Option<String>,
    pub max_body_bytes: u64,
    /// Room for the bodies held at once (read, waiting for a slot or being
    /// handled): at least `max_body_bytes`.
    pub max_buffered_bytes: u64,
    pub threads: usize,
}

/// `google.rpc.Status`, the error body OTLP/HTTP servers send.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// gRPC codes used in error bodies.
const INVALID_ARGUMENT: i32 = 3;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// An HTTP answer before it is encoded.
struct Answer {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    /// For errors: what went wrong, for the server's log.
    error: Option<String>,
}

impl Answer {
    fn text(status: u16, message: &str) -> Answer {
        Answer {
            status,
            body: format!("{message}\n").into_bytes(),
            content_type: "text/plain; charset=utf-8",
            error: Some(message.to_owned()),
        }
    }

    /// An error as a `google.rpc.Status` in the request's encoding.
    fn status(status: u16, encoding: Encoding, code: i32, message: String) -> Answer {
        let body = match encoding {
            Encoding::Protobuf => RpcStatus {
                code,
                message: message.clone(),
            }
            .encode_to_vec(),
            Encoding::Json => serde_json::json!({ "code": code, "message": message })
                .to_string()
                .into_bytes(),
        };
        Answer {
            status,
            body,
            content_type: encoding.content_type(),
            error: Some(message),
        }
    }
}

/// Reads at most `max` bytes of `r`; `None` when there are more.
fn read_bounded(r: impl Read, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

/// A request body as read by [`read_held`].
enum Held {
    /// The whole body, at most the limit.
    Body(Vec<u8>),
    /// The body goes past the limit.
    TooLarge,
    /// The room for held bodies ran out before the body's end.
    NoRoom,
}

/// How much more of a body [`read_held`] reads (and takes room for) at a time.
const HELD_STEP: u64 = 64 << 10;

/// Reads at most `max` bytes of `r`, as [`read_bounded`], growing `held`
/// by what it reads before it reads it: a body holds room only for what
/// its client has sent, so a slow sender holds little, and bodies stop
/// being read once the room is full ([`Held::NoRoom`]).
fn read_held(mut r: impl Read, max: u64, held: &mut Taken<'_>) -> io::Result<Held> {
    // One byte past the limit tells a body over it.
    let limit = max.saturating_add(1);
    let mut buf: Vec<u8> = Vec::new();
    // Room taken for the buffer: what it may be filled to.
    let mut room = 0u64;
    loop {
        let len = buf.len() as u64;
        if len >= limit {
            return Ok(Held::TooLarge);
        }
        if len == room {
            // Doubling, so that a large body is not copied over and over.
            let grown = room.saturating_mul(2).max(HELD_STEP).min(limit);
            if grown > held.bytes && !held.grow(grown - held.bytes) {
                return Ok(Held::NoRoom);
            }
            let Ok(extra) = usize::try_from(grown - len) else {
                return Ok(Held::TooLarge);
            };
            buf.reserve_exact(extra);
            room = grown;
        }
        // A step at a time, so that a short read does not zero the rest.
        let end = usize::try_from(room.min(len + HELD_STEP)).unwrap_or(usize::MAX);
        let start = buf.len();
        buf.resize(end, 0);
        let n = loop {
            match r.read(&mut buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return Ok(Held::Body(buf));
        }
    }
}

/// Room shared by the requests being handled, each taking some while it
/// is decoded and stored; one finding too little left waits for the others
/// to give theirs back (at most `wait`, then 503). The receiver has two:
/// `--threads` slots, and memory: each request takes room for what its
/// body may decode into ([`otlp::decode_budget`]) out of room for one
/// request of the largest body the receiver accepts, so the receiver's
/// peak memory does not grow with the requests it handles at once, while
/// realistic requests, far smaller, still run side by side.
struct Room {
    capacity: u64,
    used: Mutex<u64>,
    freed: Condvar,
    wait: Duration,
}

/// Room taken in a [`Room`], given back when dropped.
struct Taken<'a> {
    room: &'a Room,
    bytes: u64,
}

impl Room {
    fn new(capacity: u64, wait: Duration) -> Room {
        Room {
            capacity,
            used: Mutex::new(0),
            freed: Condvar::new(),
            wait,
        }
    }

    /// Takes room for `bytes` (at most the whole room), waiting for other
    /// requests to give theirs back; `None` if it is not free in time.
    fn take(&self, bytes: u64) -> Option<Taken<'_>> {
        let bytes = bytes.min(self.capacity);
        let deadline = Instant::now() + self.wait;
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used + bytes > self.capacity {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            used = self
                .freed
                .wait_timeout(used, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *used += bytes;
        Some(Taken { room: self, bytes })
    }
}

impl Room {
    /// Holds no room yet: a [`Taken`] to [`Taken::grow`].
    fn hold(&self) -> Taken<'_> {
        Taken {
            room: self,
            bytes: 0,
        }
    }
}

impl Taken<'_> {
    /// Takes `more` room without waiting; false (nothing taken) when the
    /// room does not have it.
    fn grow(&mut self, more: u64) -> bool {
        let mut used = self
            .room
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if used.saturating_add(more) > self.room.capacity {
            return false;
        }
        *used += more;
        self.bytes += more;
        true
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        let mut used = self
            .room
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used -= self.bytes;
        self.room.freed.notify_all();
    }
}

/// Connections served at once; one more is answered 503 and closed.
const CONNECTIONS: usize = 256;

/// Opens the receiver's store.
type Opener = Box<dyn Fn() -> span_sessions::Result<SessionStore> + Send + Sync>;

/// The receiver's store, reopened after a failure poisons it.
struct Stores {
    open: Opener,
    /// How long to wait after a failed reopen before the next try.
    retry: Duration,
    state: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    /// The store requests write to.
    current: Option<Arc<SessionStore>>,
    /// A store that refused writes: closed, then opened again, once no
    /// request holds it any more.
    retired: Option<Arc<SessionStore>>,
    /// No reopen before this (the last one failed).
    next_try: Option<Instant>,
    /// Why there is no current store.
    why: String,
}

impl Stores {
    fn new(store: SessionStore, open: Opener, retry: Duration) -> Stores {
        Stores {
            open,
            retry,
            state: Mutex::new(StoreState {
                current: Some(Arc::new(store)),
                ..StoreState::default()
            }),
        }
    }

    /// The store to write to, reopening it if a failure retired it; or why
    /// there is none now (for a 503).
    fn get(&self) -> Result<Arc<SessionStore>, String> {
        // A thread that panicked holding the lock left the state whole
        // (every change is one assignment).
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = &st.current {
            return Ok(Arc::clone(store));
        }
        if st
            .retired
            .as_ref()
            .is_some_and(|r| Arc::strong_count(r) > 1)
        {
            return Err(format!(
                "the store is being reopened (requests that used it are still running) after: {}",
                st.why
            ));
        }
        if st.next_try.is_some_and(|t| Instant::now() < t) {
            return Err(format!("the store could not be reopened: {}", st.why));
        }
        // Closes the poisoned store (its directory lock too).
        st.retired = None;
        match (self.open)() {
            Ok(store) => {
                let _ = writeln!(
                    io::stderr(),
                    "span-sessions: the store was reopened (after: {})",
                    st.why
                );
                let store = Arc::new(store);
                st.current = Some(Arc::clone(&store));
                st.next_try = None;
                Ok(store)
            }
            Err(e) => {
                st.why = format!("reopening: {e}");
                st.next_try = Some(Instant::now() + self.retry);
                Err(format!("the store could not be reopened: {}", st.why))
            }
        }
    }

    /// Takes `store`, which refused a write with `e`, out of service; the
    /// next [`Stores::get`] after the last request using it reopens it.
    fn retire(&self, store: &Arc<SessionStore>, e: &span_sessions::Error) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.current.as_ref().is_some_and(|c| Arc::ptr_eq(c, store)) {
            st.retired = st.current.take();
            st.why = e.to_string();
            let _ = writeln!(
                io::stderr(),
                "span-sessions: the store refuses writes ({e}); reopening it"
            );
        }
    }
}

struct Receiver {
    stores: Stores,
    /// `--threads`: requests decoded and stored at once.
    workers: Room,
    room: Room,
    /// `--max-buffered-bytes`: room for the bodies held at once, taken as
    /// they are read ([`read_held`]) and given back once answered.
    bodies: Room,
    options: IngestOptions,
    max_body_bytes: u64,
}

impl Receiver {
    fn handle<S: Read + Write>(&self, head: &Head, body: &mut Body<'_, S>) -> Answer {
        let path = head.target.split('?').next().unwrap_or("");
        if path != "/v1/traces" {
            return Answer::text(404, "not found: this receiver serves POST /v1/traces");
        }
        if head.method != "POST" {
            return Answer::text(405, "method not allowed: use POST");
        }
        let media = head
            .header("Content-Type")
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let encoding = match media.as_deref() {
            Some("application/x-protobuf" | "application/protobuf") => Encoding::Protobuf,
            Some("application/json") => Encoding::Json,
            other => {
                return Answer::text(
                    415,
                    &format!(
                        "unsupported content type {:?}: send application/x-protobuf or application/json",
                        other.unwrap_or("(none)")
                    ),
                );
            }
        };
        let gzip = match head
            .header("Content-Encoding")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) if v.is_empty() || v == "identity" => false,
            Some(v) if v == "gzip" => true,
            Some(v) => {
                return Answer::text(
                    415,
                    &format!("unsupported content encoding {v:?}: send gzip or none"),
                );
            }
        };
        let max = self.max_body_bytes;
        let too_large = || {
            Answer::status(
                413,
                encoding,
                RESOURCE_EXHAUSTED,
                format!("request body larger than the limit of {max} bytes"),
            )
        };
        let no_room = || {
            Answer::status(
                503,
                encoding,
                UNAVAILABLE,
                "the receiver holds as many request bodies as it may; retry later".to_owned(),
            )
        };
        if body.length().is_some_and(|n| n > max) {
            return too_large();
        }
        let mut held = self.bodies.hold();
        // A body of a known length takes room for no more than that.
        let expected = body.length().map_or(max, |n| n.min(max));
        let body = match read_held(&mut *body, expected, &mut held) {
            Ok(Held::Body(b)) => b,
            Ok(Held::TooLarge) => return too_large(),
            Ok(Held::NoRoom) => return no_room(),
            // Too slow: past the read timeout or the body's least rate.
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Answer::status(408, encoding, DEADLINE_EXCEEDED, e.to_string());
            }
            Err(e) => {
                return Answer::status(
                    400,
                    encoding,
                    INVALID_ARGUMENT,
                    format!("reading the body: {e}"),
                );
            }
        };
        // Held until the request is stored: the decompressed body, the
        // decoded request and the spans made from it live that long. Taken
        // before decompressing: a body of a few KiB can gunzip to the
        // whole limit, and the connections waiting for a slot (up to 256)
        // must not each hold that much, only what their clients sent.
        let Some(_worker) = self.workers.take(1) else {
            return Answer::status(
                503,
                encoding,
                UNAVAILABLE,
                "the receiver is busy with other requests; retry later".to_owned(),
            );
        };
        let body = if gzip {
            match read_bounded(MultiGzDecoder::new(body.as_slice()), max) {
                Ok(Some(b)) => b,
                Ok(None) => return too_large(),
                Err(e) => {
                    return Answer::status(
                        400,
                        encoding,
                        INVALID_ARGUMENT,
                        format!("invalid gzip body: {e}"),
                    );
                }
            }
        } else {
            body
        };
        let Some(_room) = self.room.take(otlp::decode_budget(body.len())) else {
            return Answer::status(
                503,
                encoding,
                UNAVAILABLE,
                "the receiver is decoding as much as it may hold at once; retry later".to_owned(),
            );
        };
        let decoded = match encoding {
            Encoding::Protobuf => otlp::decode_protobuf(&body),
            Encoding::Json => otlp::decode_json(&body),
        };
        match decoded {
            Ok(request) => self.store(request, encoding),
            // Too much to decode: like a body over the limit.
            Err(e @ otlp::DecodeError::TooLarge { .. }) => {
                Answer::status(413, encoding, RESOURCE_EXHAUSTED, e.to_string())
            }
            Err(e) => Answer::status(400, encoding, INVALID_ARGUMENT, e.to_string()),
        }
    }

    /// Stores a decoded request and answers it.
    fn store(&self, request: ExportTraceServiceRequest, encoding: Encoding) -> Answer {
        let store = match self.stores.get() {
            Ok(store) => store,
            Err(why) => return Answer::status(503, encoding, UNAVAILABLE, why),
        };
        let report = match otlp::export(&store, request, &self.options) {
            Ok(r) => r,
            Err(e) => {
                // Damage will not go away by retrying. A poisoned store is
                // reopened (the client's retry finds it back), and
                // anything else (a full disk) may pass later.
                let (status, code) = match e.kind() {
                    ErrorKind::Corrupted => (500, INTERNAL),
                    ErrorKind::Poisoned => {
                        self.stores.retire(&store, &e);
                        (503, UNAVAILABLE)
                    }
                    _ => (503, UNAVAILABLE),
                };
                return Answer::status(status, encoding, code, format!("storing spans: {e}"));
            }
        };
        let response = report.response();
        let body = match encoding {
            Encoding::Protobuf => response.encode_to_vec(),
            Encoding::Json => match response.partial_success {
                None => b"{}".to_vec(),
                Some(p) => serde_json::json!({
                    "partialSuccess": {
                        "rejectedSpans": p.rejected_spans.to_string(),
                        "errorMessage": p.error_message,
                    }
                })
                .to_string()
                .into_bytes(),
            },
        };
        Answer {
            status: 200,
            body,
            content_type: encoding.content_type(),
            error: None,
        }
    }
}

/// Serves the store `first` opens (called once the address is bound, so
/// that a bad address creates no store), reopening it with `open` after a
/// failure poisons it.
pub(crate) fn run(
    first: impl FnOnce() -> CliResult<SessionStore>,
    open: Opener,
    opts: &ServeOptions,
) -> CliResult {
    let limits = Limits {
        connections: CONNECTIONS,
        timeout: Duration::from_secs(30),
    };
    let server = Server::bind(opts.listen.as_str(), limits)
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = server
        .local_addr()
        .map_or_else(|_| opts.listen.clone(), |a| a.to_string());
    let store = first()?;
    let dir = store.dir().display().to_string();
    let mut options = IngestOptions::new();
    if let Some(p) = &opts.project {
        options = options.project(p.clone());
    }
    let receiver = Arc::new(Receiver {
        stores: Stores::new(store, open, Duration::from_secs(1)),
        workers: Room::new(opts.threads.max(1) as u64, Duration::from_secs(60)),
        room: Room::new(
            otlp::decode_budget(usize::try_from(opts.max_body_bytes).unwrap_or(usize::MAX)),
            Duration::from_secs(10),
        ),
        bodies: Room::new(opts.max_buffered_bytes, Duration::ZERO),
        options,
        max_body_bytes: opts.max_body_bytes,
    });
    {
        // Tests and scripts read this line to learn the port.
        let mut out = io::stdout().lock();
        writeln!(out, "listening on http://{addr}/v1/traces (store {dir})")?;
        out.flush()?;
    }
    let handler = Arc::new(move |head: &Head, body: &mut Body<'_>| {
        let answer = receiver.handle(head, body);
        if let Some(error) = &answer.error {
            let _ = writeln!(io::stderr(), "{}", log_line(head, answer.status, error));
        }
        Response {
            status: answer.status,
            content_type: answer.content_type,
            body: answer.body,
            headers: if answer.status == 405 {
                vec![("Allow", "POST")]
            } else {
                Vec::new()
            },
        }
    });
    server
        .run(handler)
        .map_err(|e| CliError(format!("accepting connections on {addr}: {e}")))
}

/// The server's log line for a request answered with an error. What the
/// client sent (its method, target, and what the error quotes of its body)
/// is escaped: a client must not be able to drive the operator's terminal.
fn log_line(head: &Head, status: u16, error: &str) -> String {
    format!(
        "span-sessions: {} {} -> {status}: {}",
        safe(&head.method),
        safe(&head.target),
        safe(error)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::http::in_memory;
    use span_sessions::testing::{Fault, FaultError, Op, Ops, SimFileSystem};

    /// An OTLP/JSON request of one root span, trace `n` of session `s`.
    fn request(n: u8) -> ExportTraceServiceRequest {
        let json = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{
                "traceId":"{n:032x}","spanId":"00000000000000{n:02x}",
                "name":"turn","startTimeUnixNano":"{n}000","endTimeUnixNano":"{n}500",
                "attributes":[{{"key":"session.id","value":{{"stringValue":"s"}}}}]
            }}]}}]}}]}}"#
        );
        otlp::decode_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens the store in `dir` on the simulated disk `sim`.
    fn opener(sim: &SimFileSystem, dir: &std::path::Path) -> Opener {
        let (sim, dir) = (sim.clone(), dir.to_owned());
        Box::new(move || {
            SessionStore::options()
                .file_system(Arc::new(sim.clone()))
                .open(&dir)
        })
    }

    /// A receiver of one worker slot and bodies of at most 1 MiB, on the
    /// store in `dir` on the simulated disk `sim`, that reopens it at once.
    fn receiver(sim: &SimFileSystem, dir: &std::path::Path) -> Receiver {
        let open = opener(sim, dir);
        let first = open().unwrap_or_else(|e| panic!("{e}"));
        Receiver {
            stores: Stores::new(first, open, Duration::ZERO),
            workers: Room::new(1, Duration::ZERO),
            room: Room::new(otlp::decode_budget(1 << 20), Duration::ZERO),
            bodies: Room::new(4 << 20, Duration::ZERO),
            options: IngestOptions::new(),
            max_body_bytes: 1 << 20,
        }
    }

    fn turns(r: &Receiver) -> usize {
        let store = r.stores.get().unwrap_or_else(|e| panic!("{e}"));
        store.session_history("default", "s").map_or(0, |h| h.len())
    }

    /// What a client sent is escaped in the server's log: its method, its
    /// target and what the error quotes of its body cannot drive the
    /// operator's terminal.
    #[test]
    fn the_log_line_escapes_what_the_client_sent() {
        let wire = b"GET\x1b[2J /\x1b]0;pwned\x07 HTTP/1.1\r\n\r\n";
        let line = in_memory::handle(wire, |head, _| {
            log_line(head, 404, "not found: \u{1b}[31mred\nnext")
        });
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("\\u{1b}]0;pwned\\u{7}"), "{line}");
        assert!(line.contains("\\u{1b}[31mred next"), "{line}");
    }

    /// A failed fsync poisons the store: that request gets a retryable
    /// 503, the next one finds the store reopened and is stored, and so is
    /// its retry's duplicate. While the reopen fails (the disk still
    /// refusing), requests get 503 naming why, at most one try per
    /// `retry`; once the disk works again, the store comes back with
    /// everything acknowledged.
    #[test]
    fn a_poisoned_store_is_reopened_and_the_retry_is_stored() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = SimFileSystem::new();
        let r = receiver(&sim, dir.path());
        assert_eq!(r.store(request(1), Encoding::Json).status, 200);
        assert_eq!(turns(&r), 1);

        sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io));
        let failed = r.store(request(2), Encoding::Json);
        assert_eq!(failed.status, 503, "{:?}", failed.error);
        assert!(
            failed
                .error
                .as_deref()
                .is_some_and(|e| e.contains("poisoned")),
            "{:?}",
            failed.error
        );
        // The retry: the store is reopened and takes it.
        let retried = r.store(request(2), Encoding::Json);
        assert_eq!(retried.status, 200, "{:?}", retried.error);
        assert_eq!(turns(&r), 2);

        // Poisoned again, and now the reopen itself fails (every fsync does).
        sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io).sticky());
        assert_eq!(r.store(request(3), Encoding::Json).status, 503);
        let refused = r.store(request(3), Encoding::Json);
        assert_eq!(refused.status, 503);
        assert!(
            refused
                .error
                .as_deref()
                .is_some_and(|e| e.contains("could not be reopened")),
            "{:?}",
            refused.error
        );
        sim.heal();
        let stored = r.store(request(3), Encoding::Json);
        assert_eq!(stored.status, 200, "{:?}", stored.error);
        assert_eq!(turns(&r), 3);
    }

    /// A gzipped body is decompressed only once the request holds a worker
    /// slot: a few KiB can gunzip to the whole body limit, and requests
    /// waiting for a slot (one per connection, up to 256) then hold only
    /// what their clients sent. With the one slot taken, a gzip bomb waits
    /// for it and is answered 503 without being decompressed (413 once it
    /// gets the slot), and a real gzipped request is stored once the slot
    /// is free.
    #[test]
    fn a_gzipped_body_is_decompressed_only_under_a_worker_slot() {
        use flate2::{Compression, write::GzEncoder};
        let gzip = |data: &[u8]| {
            let mut z = GzEncoder::new(Vec::new(), Compression::best());
            z.write_all(data).unwrap_or_else(|e| panic!("{e}"));
            z.finish().unwrap_or_else(|e| panic!("{e}"))
        };
        let post = |body: &[u8]| {
            let mut wire = format!(
                "POST /v1/traces HTTP/1.1\r\nContent-Type: application/json\r\n\
                 Content-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            wire.extend_from_slice(body);
            wire
        };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = SimFileSystem::new();
        let r = receiver(&sim, dir.path());
        let bomb = post(&gzip(&vec![b' '; 64 << 20]));
        assert!(bomb.len() < 256 << 10, "{}", bomb.len());
        let real = post(&gzip(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
                "traceId":"0000000000000000000000000000000a","spanId":"000000000000000a",
                "name":"turn","startTimeUnixNano":"1000","endTimeUnixNano":"1500",
                "attributes":[{"key":"session.id","value":{"stringValue":"s"}}]
            }]}]}]}"#,
        ));
        // The status of `wire` handled by `r`, with its error if any.
        let status = |wire: &[u8]| {
            let answer = in_memory::handle(wire, |head, body| r.handle(head, body));
            (answer.status, answer.error)
        };
        let slot = r.workers.take(1).unwrap_or_else(|| panic!("the slot"));
        assert_eq!(status(&bomb).0, 503);
        assert_eq!(status(&real).0, 503);
        assert_eq!(turns(&r), 0);
        drop(slot);
        assert_eq!(status(&bomb).0, 413);
        assert_eq!(status(&real), (200, None));
        assert_eq!(turns(&r), 1);
    }

    /// A body that stops arriving (the read times out, wherever in its
    /// framing) is answered 408; one cut short by the client closing is
    /// 400. Nothing of either is stored.
    #[test]
    fn a_body_that_stops_arriving_is_408_and_one_cut_short_is_400() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = SimFileSystem::new();
        let r = receiver(&sim, dir.path());
        let head = "POST /v1/traces HTTP/1.1\r\nContent-Type: application/json\r\n";
        let cases = [
            "Content-Length: 1000\r\n\r\n{\"resourceSpans\"",
            // Inside a chunk's data, before its CRLF, at the next
            // chunk-size line, inside the trailers.
            "Transfer-Encoding: chunked\r\n\r\n20\r\n{\"resourceSpans\"",
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}",
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n",
            "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: t\r\n",
        ];
        for case in cases {
            let wire = format!("{head}{case}");
            let stalled = in_memory::handle_stalled(wire.as_bytes(), |h, b| r.handle(h, b));
            assert_eq!(stalled.status, 408, "{case:?}: {:?}", stalled.error);
            let error = stalled.error.unwrap_or_default();
            assert!(error.contains("did not arrive in time"), "{error}");
            let cut = in_memory::handle(wire.as_bytes(), |h, b| r.handle(h, b));
            assert_eq!(cut.status, 400, "{case:?}: {:?}", cut.error);
        }
        assert_eq!(turns(&r), 0);
        // A whole body in the same framing is stored.
        let mut whole = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
        whole.extend(in_memory::chunked(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
                "traceId":"0000000000000000000000000000000b","spanId":"000000000000000b",
                "name":"turn","startTimeUnixNano":"1000","endTimeUnixNano":"1500",
                "attributes":[{"key":"session.id","value":{"stringValue":"s"}}]
            }]}]}]}"#,
            &[16],
            false,
        ));
        let answer = in_memory::handle_stalled(&whole, |h, b| r.handle(h, b));
        assert_eq!((answer.status, answer.error), (200, None));
        assert_eq!(turns(&r), 1);
    }

    /// Room is shared out until it runs short; then a request waits for
    /// room given back, or gives up after the wait.
    #[test]
    fn decode_room_is_shared_and_given_back() {
        let room = Room::new(100, Duration::from_millis(50));
        let a = room.take(60).unwrap_or_else(|| panic!("room for 60"));
        let b = room.take(40).unwrap_or_else(|| panic!("room for 40"));
        let started = Instant::now();
        assert!(room.take(1).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(b);
        assert!(room.take(40).is_some());
        // A request larger than the whole room takes all of it, alone.
        assert!(room.take(1_000).is_none());
        drop(a);
        let all = room.take(1_000).unwrap_or_else(|| panic!("the whole room"));
        assert!(room.take(1).is_none());
        drop(all);
        // A waiting request goes on as soon as room is given back.
        let slow = Room::new(10, Duration::from_secs(10));
        let held = slow.take(10).unwrap_or_else(|| panic!("room for 10"));
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let started = Instant::now();
                let got = slow.take(5).is_some();
                (got, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(30));
            drop(held);
            let (got, waited) = waiter.join().unwrap_or_else(|_| panic!("waiter"));
            assert!(got);
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        });
    }

    /// A body holds room for what its client has sent (a step ahead at
    /// most), not for what it announces: a client that sent 10 KiB of a
    /// 1 MiB body and stalls holds 64 KiB. Bodies are read whole up to the
    /// limit, one byte more is too large, and a body the room cannot take
    /// stops being read, with the room it held given back.
    #[test]
    fn a_body_holds_room_for_what_was_sent() {
        struct Stalls<'a> {
            sent: Option<Vec<u8>>,
            room: &'a Room,
            held_while_stalled: Option<u64>,
        }
        impl Read for Stalls<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if let Some(sent) = self.sent.take() {
                    buf[..sent.len()].copy_from_slice(&sent);
                    return Ok(sent.len());
                }
                self.held_while_stalled =
                    Some(*self.room.used.lock().unwrap_or_else(|e| panic!("{e}")));
                Err(io::ErrorKind::TimedOut.into())
            }
        }
        let used = |room: &Room| *room.used.lock().unwrap_or_else(|e| panic!("{e}"));
        let room = Room::new(1 << 20, Duration::ZERO);
        let mut slow = Stalls {
            sent: Some(vec![7; 10 << 10]),
            room: &room,
            held_while_stalled: None,
        };
        {
            let mut held = room.hold();
            let e = read_held(&mut slow, 1 << 20, &mut held)
                .map(|_| ())
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        }
        assert_eq!(slow.held_while_stalled, Some(HELD_STEP));
        assert_eq!(used(&room), 0);

        let read = |body: &[u8], max: u64| {
            let mut held = room.hold();
            let got = read_held(body, max, &mut held).unwrap_or_else(|e| panic!("{e}"));
            assert!(held.bytes <= room.capacity);
            got
        };
        let body: Vec<u8> = (0..300_000u32).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
        assert!(matches!(read(&body, 300_000), Held::Body(b) if b == body));
        assert!(matches!(read(&body, 299_999), Held::TooLarge));
        assert!(matches!(read(&[], 10), Held::Body(b) if b.is_empty()));
        assert_eq!(used(&room), 0);

        // With all but 100 KiB of the room held elsewhere, a body of 300 KB
        // is refused and one of 50 KB read.
        let other = room
            .take((1 << 20) - (100 << 10))
            .unwrap_or_else(|| panic!("no room"));
        assert!(matches!(read(&body, 1 << 20), Held::NoRoom));
        assert!(matches!(read(&body[..50_000], 1 << 20), Held::Body(b) if b.len() == 50_000));
        drop(other);
        assert_eq!(used(&room), 0);
    }

    /// A reader giving at most `step` bytes a read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            let (now, rest) = self.data.split_at(n);
            buf[..n].copy_from_slice(now);
            self.data = rest;
            Ok(n)
        }
    }

    proptest::proptest! {
        /// Whatever the body, the limit, the room and how the client's
        /// bytes arrive: a body within the limit reads back exactly, one
        /// past it is too large, room runs out only for a body that needs
        /// more than the room has (its buffer, doubling from 64 KiB, is at
        /// most twice the body and never past the limit), the room taken
        /// covers the body and never passes the room or the limit, and all
        /// of it comes back.
        #[test]
        fn read_held_reads_bodies_within_the_room(
            len in 0usize..300_000,
            max in 0u64..300_000,
            capacity in 0u64..700_000,
            step in 1usize..100_000,
            seed in proptest::prelude::any::<u8>(),
        ) {
            let body: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let room = Room::new(capacity, Duration::ZERO);
            let got = {
                let mut held = room.hold();
                let got = read_held(Trickle { data: &body, step }, max, &mut held)
                    .unwrap_or_else(|e| panic!("{e}"));
                proptest::prop_assert!(held.bytes <= capacity && held.bytes <= max + 1);
                if let Held::Body(b) = &got {
                    // What is held was taken.
                    proptest::prop_assert!(held.bytes >= b.len() as u64);
                }
                got
            };
            proptest::prop_assert_eq!(*room.used.lock().unwrap_or_else(|e| panic!("{e}")), 0);
            let needed = (max + 1).min(HELD_STEP.max(2 * (len as u64 + 1)));
            match got {
                Held::Body(b) => {
                    proptest::prop_assert!(len as u64 <= max);
                    proptest::prop_assert!(b == body);
                }
                Held::TooLarge => proptest::prop_assert!(len as u64 > max),
                Held::NoRoom => proptest::prop_assert!(capacity < needed),
            }
        }
    }

    /// A request whose body the room for held bodies cannot take is
    /// answered 503 (clients retry it) and nothing of it is stored; once
    /// the room is given back the same request is stored, and the room it
    /// held is given back after its answer.
    #[test]
    fn a_body_past_the_room_for_held_bodies_is_503() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = SimFileSystem::new();
        let r = receiver(&sim, dir.path());
        let json = serde_json::to_vec(
            &serde_json::json!({"resourceSpans":[{"scopeSpans":[{"spans":[{
                "traceId":"0000000000000000000000000000000b","spanId":"000000000000000b",
                "name":"turn","startTimeUnixNano":"1000","endTimeUnixNano":"1500",
                "attributes":[
                    {"key":"session.id","value":{"stringValue":"s"}},
                    {"key":"input.value","value":{"stringValue":"x".repeat(200_000)}}
                ]
            }]}]}]}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut wire = format!(
            "POST /v1/traces HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            json.len()
        )
        .into_bytes();
        wire.extend_from_slice(&json);
        let status = |wire: &[u8]| {
            let answer = in_memory::handle(wire, |head, body| r.handle(head, body));
            (answer.status, answer.error)
        };
        let used = || *r.bodies.used.lock().unwrap_or_else(|e| panic!("{e}"));
        let others = r
            .bodies
            .take(r.bodies.capacity - (100 << 10))
            .unwrap_or_else(|| panic!("no room"));
        let (code, error) = status(&wire);
        assert_eq!(code, 503);
        assert!(error.is_some_and(|e| e.contains("request bodies")));
        assert_eq!(turns(&r), 0);
        assert_eq!(used(), r.bodies.capacity - (100 << 10));
        drop(others);
        assert_eq!(status(&wire), (200, None));
        assert_eq!(turns(&r), 1);
        assert_eq!(used(), 0);
    }

    /// A request still using the poisoned store holds the reopen back (its
    /// directory lock is not released before it is closed).
    #[test]
    fn the_reopen_waits_for_requests_that_still_use_the_old_store() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sim = SimFileSystem::new();
        let open = opener(&sim, dir.path());
        let first = open().unwrap_or_else(|e| panic!("{e}"));
        let stores = Stores::new(first, open, Duration::ZERO);
        let held = stores.get().unwrap_or_else(|e| panic!("{e}"));
        sim.arm(Fault::nth(Ops::Only(Op::Sync), 0, FaultError::Io));
        let e = held.append(&[]).and_then(|_| held.sync());
        let e = match e {
            Err(e) => e,
            Ok(()) => panic!("the fsync did not fail"),
        };
        stores.retire(&held, &e);
        let waiting = stores.get().map(drop).unwrap_err();
        assert!(waiting.contains("being reopened"), "{waiting}");
        drop(held);
        assert!(stores.get().is_ok());
    }
}

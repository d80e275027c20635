//! `span-sessions serve`: an OTLP/HTTP receiver for traces.
//!
//! `POST /v1/traces` with `application/x-protobuf` (or
//! `application/protobuf`) or `application/json`, optionally
//! `Content-Encoding: gzip`. Answers follow the OTLP/HTTP specification:
//! 200 with an `ExportTraceServiceResponse` (carrying the partial success
//! when spans were rejected) in the request's encoding; 400 with a
//! `google.rpc.Status` for a body that does not decode (nothing of it is
//! stored); 413 for a body over the limit (checked on `Content-Length`,
//! while reading, and again after gzip decompression) or one that would
//! decode into more than 32 times its size (`otlp::DecodeError::TooLarge`),
//! so memory stays bounded; 415 for another content type or encoding; 404/405 for other
//! paths and methods; 503 (retryable) when the store fails to write, 500
//! when it refuses writes for good.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::thread;

use flate2::read::MultiGzDecoder;
use prost::Message;
use span_sessions::otlp::{self, IngestOptions};
use span_sessions::{ErrorKind, SessionStore};
use tiny_http::{Header, Method, Request, Response, Server};

use super::{CliError, CliResult};

pub(crate) struct ServeOptions {
    pub listen: String,
    pub project: Option<String>,
    pub max_body_bytes: u64,
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

fn header<'a>(req: &'a Request, name: &'static str) -> Option<&'a str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Reads at most `max` bytes of `r`; `None` when there are more.
fn read_bounded(r: impl Read, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

struct Receiver {
    store: Arc<SessionStore>,
    options: IngestOptions,
    max_body_bytes: u64,
}

impl Receiver {
    fn handle(&self, req: &mut Request) -> Answer {
        let path = req.url().split('?').next().unwrap_or("");
        if path != "/v1/traces" {
            return Answer::text(404, "not found: this receiver serves POST /v1/traces");
        }
        if *req.method() != Method::Post {
            return Answer::text(405, "method not allowed: use POST");
        }
        let media = header(req, "Content-Type")
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
        let gzip = match header(req, "Content-Encoding").map(|v| v.trim().to_ascii_lowercase()) {
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
        if req.body_length().is_some_and(|n| n as u64 > max) {
            return too_large();
        }
        let body = match read_bounded(req.as_reader(), max) {
            Ok(Some(b)) => b,
            Ok(None) => return too_large(),
            Err(e) => {
                return Answer::status(
                    400,
                    encoding,
                    INVALID_ARGUMENT,
                    format!("reading the body: {e}"),
                );
            }
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
        let decoded = match encoding {
            Encoding::Protobuf => otlp::decode_protobuf(&body),
            Encoding::Json => otlp::decode_json(&body),
        };
        let request = match decoded {
            Ok(r) => r,
            // Too much to decode: like a body over the limit.
            Err(e @ otlp::DecodeError::TooLarge { .. }) => {
                return Answer::status(413, encoding, RESOURCE_EXHAUSTED, e.to_string());
            }
            Err(e) => return Answer::status(400, encoding, INVALID_ARGUMENT, e.to_string()),
        };
        let report = match otlp::export(&self.store, request, &self.options) {
            Ok(r) => r,
            Err(e) => {
                // A poisoned store refuses writes until reopened: retrying
                // will not help. Anything else (a full disk) may pass later.
                let (status, code) = match e.kind() {
                    ErrorKind::Poisoned | ErrorKind::Corrupted => (500, INTERNAL),
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

    fn serve(&self, server: &Server) {
        loop {
            let mut req = match server.recv() {
                Ok(r) => r,
                Err(e) => {
                    let _ = writeln!(io::stderr(), "span-sessions: accepting a request: {e}");
                    continue;
                }
            };
            let answer = self.handle(&mut req);
            if let Some(error) = &answer.error {
                let _ = writeln!(
                    io::stderr(),
                    "span-sessions: {} {} -> {}: {error}",
                    req.method(),
                    req.url(),
                    answer.status,
                );
            }
            let mut response = Response::from_data(answer.body).with_status_code(answer.status);
            if let Ok(h) = Header::from_bytes(&b"Content-Type"[..], answer.content_type.as_bytes())
            {
                response.add_header(h);
            }
            if answer.status == 405
                && let Ok(h) = Header::from_bytes(&b"Allow"[..], &b"POST"[..])
            {
                response.add_header(h);
            }
            // Errors here are the client going away; nothing to do.
            let _ = req.respond(response);
        }
    }
}

pub(crate) fn run(store: SessionStore, opts: &ServeOptions) -> CliResult {
    let server = Server::http(opts.listen.as_str())
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| opts.listen.clone(), |a| a.to_string());
    let dir = store.dir().display().to_string();
    let mut options = IngestOptions::new();
    if let Some(p) = &opts.project {
        options = options.project(p.clone());
    }
    let receiver = Arc::new(Receiver {
        store: Arc::new(store),
        options,
        max_body_bytes: opts.max_body_bytes,
    });
    let server = Arc::new(server);
    {
        // Tests and scripts read this line to learn the port.
        let mut out = io::stdout().lock();
        writeln!(out, "listening on http://{addr}/v1/traces (store {dir})")?;
        out.flush()?;
    }
    let workers: Vec<_> = (0..opts.threads)
        .map(|_| {
            let receiver = Arc::clone(&receiver);
            let server = Arc::clone(&server);
            thread::spawn(move || receiver.serve(&server))
        })
        .collect();
    for w in workers {
        if w.join().is_err() {
            return Err(CliError("a receiver thread failed".to_owned()));
        }
    }
    Ok(())
}

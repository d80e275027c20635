//! Helpers for the tests that drive the `span-sessions` binary: running
//! commands, a receiver child process, a tiny HTTP client and OTLP request
//! builders.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use span_sessions::otlp::ExportTraceServiceRequest;
use span_sessions::otlp::proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value,
};
use span_sessions::otlp::proto::tonic::resource::v1::Resource;
use span_sessions::otlp::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_span-sessions"))
}

/// Runs `span-sessions --store STORE ARGS...`.
pub fn run(store: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("SPAN_SESSIONS_DIR")
        .output()
        .expect("run span-sessions")
}

/// Runs a command that must succeed and print JSON (`--json` is added).
pub fn json(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(store, &all);
    assert!(
        out.status.success(),
        "span-sessions {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "span-sessions {args:?} printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The keys of a JSON object, sorted.
pub fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Sorted owned strings, for comparing with [`keys`].
pub fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// A `span-sessions serve` child process on a free loopback port.
pub struct Receiver {
    child: Child,
    pub addr: String,
    pub store: PathBuf,
}

impl Receiver {
    pub fn start(store: &Path, extra: &[&str]) -> Receiver {
        let mut child = bin()
            .arg("--store")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start span-sessions serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        // "listening on http://127.0.0.1:PORT/v1/traces (store DIR)"
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
            .to_owned();
        Receiver {
            child,
            addr,
            store: store.to_owned(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Stops the receiver (SIGKILL: it has acknowledged only durable data).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response: status, headers (lowercased names) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one HTTP/1.1 request and reads the whole response.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; that is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// POSTs an OTLP body to `/v1/traces`.
pub fn post(addr: &str, content_type: &str, extra: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let mut headers = vec![("Content-Type", content_type)];
    headers.extend_from_slice(extra);
    http(addr, "POST", "/v1/traces", &headers, body)
}

pub fn string(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    }
}

pub fn int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

/// A 16-byte trace id from a number.
pub fn trace_id(n: u64) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    b.extend_from_slice(&n.to_be_bytes());
    b[0] = 0xab;
    b
}

/// An 8-byte span id from a number.
pub fn span_id(n: u64) -> Vec<u8> {
    (n | 1 << 56).to_be_bytes().to_vec()
}

/// An OTLP span with the given ids, times and attributes.
pub fn span(
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: &str,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace,
        span_id: id,
        parent_span_id: parent,
        name: name.to_owned(),
        kind: 1,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(Status::default()),
        ..Default::default()
    }
}

/// One OTLP request: the spans under one resource naming `project`.
pub fn request(project: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string("openinference.project.name", project),
                    string("service.name", "tests"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tests".to_owned(),
                    version: "1.0".to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A session of `turns` traces (root with input/output + an LLM child
/// with 10 prompt and 5 completion tokens), trace ids from `first_trace`.
pub fn session_request(
    project: &str,
    session: &str,
    first_trace: u64,
    turns: u64,
) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    for i in 0..turns {
        let t = trace_id(first_trace + i);
        let start = 1_700_000_000_000_000_000 + i * 1_000_000_000;
        spans.push(span(
            t.clone(),
            span_id(1),
            vec![],
            "agent",
            start,
            start + 500_000_000,
            vec![
                string("session.id", session),
                string("input.value", &format!("question {i} in {session}")),
                string("output.value", &format!("answer {i} in {session}")),
            ],
        ));
        spans.push(span(
            t,
            span_id(2),
            span_id(1),
            "llm",
            start + 1_000,
            start + 400_000_000,
            vec![
                string("openinference.span.kind", "LLM"),
                int("llm.token_count.prompt", 10),
                int("llm.token_count.completion", 5),
                int("llm.token_count.total", 15),
            ],
        ));
    }
    request(project, spans)
}

/// Gzip-compresses `data`.
#[cfg(feature = "cli")]
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

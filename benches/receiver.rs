//! The OTLP/HTTP receiver (`span-sessions serve`) under load, against the
//! same requests exported in the bench's own process.
//!
//! One iteration, and one sample, is a whole ingest into a fresh store of
//! 100,000 ~500 B spans (`SPAN_SESSIONS_BENCH_RECEIVER_SPANS`) of the
//! realistic workload, as OTLP requests of 512 spans (the OpenTelemetry
//! SDKs' default export batch) sent by four clients, each on its own
//! keep-alive connection and waiting for each answer before it sends its
//! next request, as an SDK's exporter does:
//!
//! - `http_protobuf`: `span-sessions serve --threads 4`, in its own
//!   process, with protobuf bodies (what the SDKs send by default);
//! - `http_protobuf_gzip`: the same bodies gzip-compressed;
//! - `http_json`: OTLP/JSON bodies;
//! - `in_process_export`, the baseline: `otlp::export` of the same
//!   requests, decoded beforehand, from four threads on a store in the
//!   bench's process. The ratio to it is what the receiver adds: HTTP,
//!   decompressing and decoding the bodies, a second process.
//!
//! Both store with the default `Durability::GroupCommit`: a request is
//! answered once its spans are durable. The time runs from the first
//! request to the last answer, as a collector's exports see it (the spans
//! are durable, their indexing may still be under way). Every answer is
//! checked: status 200, nothing rejected. Starting the receiver and
//! encoding the bodies are not timed. Criterion warns that it is "unable
//! to complete 10 samples" in its target time: that is how it takes one
//! iteration per sample in flat sampling, as intended here.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use prost::Message;
use span_sessions::SessionStore;
use span_sessions::otlp::{
    self, ExportTraceServiceRequest, ExportTraceServiceResponse, IngestOptions,
};
use support::BatchPool;

/// Spans per request: `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`'s default.
const REQUEST_SPANS: usize = 512;
/// Concurrent clients, and the receiver's threads.
const CLIENTS: usize = 4;

/// How the bodies are sent.
#[derive(Clone, Copy)]
enum Body {
    Protobuf,
    ProtobufGzip,
    Json,
}

impl Body {
    fn label(self) -> &'static str {
        match self {
            Body::Protobuf => "http_protobuf",
            Body::ProtobufGzip => "http_protobuf_gzip",
            Body::Json => "http_json",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Body::Protobuf | Body::ProtobufGzip => "application/x-protobuf",
            Body::Json => "application/json",
        }
    }

    fn encode(self, request: &ExportTraceServiceRequest) -> Vec<u8> {
        match self {
            Body::Protobuf => request.encode_to_vec(),
            Body::ProtobufGzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(&request.encode_to_vec()).unwrap();
                enc.finish().unwrap()
            }
            Body::Json => serde_json::to_vec(request).unwrap(),
        }
    }
}

/// A `span-sessions serve` process on a free loopback port, killed on drop
/// (it has acknowledged only durable spans).
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(store: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_span-sessions"))
            .arg("--store")
            .arg(store)
            .args(["serve", "--listen", "127.0.0.1:0", "--threads"])
            .arg(CLIENTS.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start span-sessions serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "listening on http://127.0.0.1:PORT/v1/traces (store DIR)"
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
            .to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the receiver.
struct Client {
    conn: BufReader<TcpStream>,
    head: Vec<u8>,
    line: String,
    answer: Vec<u8>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            conn: BufReader::new(stream),
            head: Vec::new(),
            line: String::new(),
            answer: Vec::new(),
        }
    }

    /// POSTs one body to `/v1/traces` and checks the answer: 200 and an
    /// `ExportTraceServiceResponse` (or `{}`) without rejected spans.
    fn export(&mut self, body: Body, bytes: &[u8]) {
        self.head.clear();
        write!(
            self.head,
            "POST /v1/traces HTTP/1.1\r\nHost: localhost\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
            body.content_type(),
            bytes.len(),
            if matches!(body, Body::ProtobufGzip) {
                "Content-Encoding: gzip\r\n"
            } else {
                ""
            },
        )
        .unwrap();
        let stream = self.conn.get_mut();
        stream.write_all(&self.head).unwrap();
        stream.write_all(bytes).unwrap();
        self.line.clear();
        self.conn.read_line(&mut self.line).unwrap();
        let status = self.line.trim_end().to_owned();
        let mut length = 0usize;
        loop {
            self.line.clear();
            self.conn.read_line(&mut self.line).unwrap();
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            let lower = self.line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        self.answer.resize(length, 0);
        self.conn.read_exact(&mut self.answer).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "{status}: {}",
            String::from_utf8_lossy(&self.answer)
        );
        match body {
            Body::Json => assert_eq!(self.answer, b"{}", "spans rejected"),
            Body::Protobuf | Body::ProtobufGzip => {
                let r = ExportTraceServiceResponse::decode(self.answer.as_slice()).unwrap();
                assert_eq!(r.partial_success, None, "spans rejected");
            }
        }
    }
}

/// Runs `work(client)` on `CLIENTS` threads at once, timed from when all
/// are ready to when the last one is done.
fn timed(work: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(CLIENTS + 1);
    let (work, barrier) = (&work, &barrier);
    let start = std::thread::scope(|s| {
        for client in 0..CLIENTS {
            s.spawn(move || {
                barrier.wait();
                work(client);
            });
        }
        barrier.wait();
        Instant::now()
    });
    start.elapsed()
}

/// One whole ingest of `bodies` through a fresh receiver.
fn over_http(body: Body, bodies: &[Vec<u8>]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("store"));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| Mutex::new(Client::connect(&server.addr)))
        .collect();
    let elapsed = timed(|c| {
        let mut client = clients[c].lock().unwrap();
        for b in bodies.iter().skip(c).step_by(CLIENTS) {
            client.export(body, b);
        }
    });
    drop(clients);
    drop(server);
    elapsed
}

/// One whole ingest of `requests` by `otlp::export` in this process.
fn in_process(requests: &[ExportTraceServiceRequest]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let store = SessionStore::open(dir.path()).unwrap();
    let options = IngestOptions::new();
    // Each client's requests, owned (`export` takes them), copied before
    // the clock starts.
    let shares: Vec<Mutex<Vec<ExportTraceServiceRequest>>> = (0..CLIENTS)
        .map(|c| Mutex::new(requests.iter().skip(c).step_by(CLIENTS).cloned().collect()))
        .collect();
    let elapsed = timed(|c| {
        let share = std::mem::take(&mut *shares[c].lock().unwrap());
        for r in share {
            let report = otlp::export(&store, r, &options).unwrap();
            assert!(report.rejected.is_empty(), "spans rejected");
        }
    });
    drop(store);
    elapsed
}

/// Spans per second beyond any path here: criterion's target time is ten
/// samples at this rate, so that it never fits a second iteration (a
/// second whole ingest) into a sample.
const FASTER_THAN_ANY: f64 = 1_000_000.0;

fn receiver(c: &mut Criterion) {
    let requests = support::env_number("SPAN_SESSIONS_BENCH_RECEIVER_SPANS", 100_000)
        .div_ceil(REQUEST_SPANS as u64)
        .max(1) as usize;
    let mut pool = BatchPool::new(3, 500, REQUEST_SPANS);
    let bytes = pool.bytes(requests);
    let batches = pool.take(requests);
    let spans: usize = batches.iter().map(|b| support::span_count(b)).sum();
    let decoded: Vec<ExportTraceServiceRequest> = batches
        .iter()
        .map(|b| otlp::from_resource_spans(b))
        .collect();

    let mut group = c.benchmark_group("receiver_otlp_http_500B");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs_f64(
        10.0 * spans as f64 / FASTER_THAN_ANY,
    ));
    // Bytes: the spans' encoded records, as in the ingest benches (not
    // the bodies, whose size depends on the encoding).
    group.throughput(Throughput::ElementsAndBytes {
        elements: spans as u64,
        bytes,
    });
    let param = REQUEST_SPANS;
    group.bench_function(BenchmarkId::new("in_process_export", param), |b| {
        b.iter_custom(|iters| (0..iters).map(|_| in_process(&decoded)).sum());
    });
    for body in [Body::Protobuf, Body::ProtobufGzip, Body::Json] {
        let bodies: Vec<Vec<u8>> = decoded.iter().map(|r| body.encode(r)).collect();
        group.bench_function(BenchmarkId::new(body.label(), param), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| over_http(body, &bodies)).sum());
        });
    }
    group.finish();
}

criterion_group!(benches, receiver);
criterion_main!(benches);

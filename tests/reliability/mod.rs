//! Shared by the reliability tests (`faults`, `power_loss`, `crash`,
//! `corruption`): numbered batches with known content, and a checker that
//! compares a reopened store with a recomputation from what it holds.
//!
//! A batch is identified by `(writer, n)`: writer `w`'s batch `n`. It holds
//! two traces of three spans each (a root and two LLM children), every span
//! carrying the session id, so that any span of a trace that survives puts
//! the trace in its session, and the expected session summary can be
//! recomputed from the spans present.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use span_sessions::{ResourceSpans, SessionStore, Span, SpanId, StatusCode, Tokens, TraceId};

/// Traces per batch.
pub const TRACES_PER_BATCH: u64 = 2;
/// Spans per trace.
pub const SPANS_PER_TRACE: u64 = 3;
/// Spans per batch.
pub const SPANS_PER_BATCH: usize = (TRACES_PER_BATCH * SPANS_PER_TRACE) as usize;

/// Writer `w`'s batch `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId {
    pub writer: u32,
    pub n: u64,
}

impl BatchId {
    pub fn new(writer: u32, n: u64) -> BatchId {
        BatchId { writer, n }
    }

    /// The project of the batch's traces.
    pub fn project(self) -> String {
        format!("p{}", self.writer % 2)
    }

    /// The session of the batch's traces.
    pub fn session(self) -> String {
        format!("w{}-s{}", self.writer, self.n % 5)
    }

    /// Trace `t` (0 or 1) of the batch.
    pub fn trace_id(self, t: u64) -> TraceId {
        let mut b = [0u8; 16];
        b[0] = 0xA5; // never all zeros
        b[4..8].copy_from_slice(&self.writer.to_be_bytes());
        b[8..15].copy_from_slice(&self.n.to_be_bytes()[1..]);
        b[15] = u8::try_from(t).unwrap();
        TraceId(b)
    }

    /// Writer 2's batches 0, 3, 6, ... carry about 70 KiB more (on its
    /// first root span), so that under `Sync` and `GroupCommit` it is
    /// appended with direct writes (`StoreOptions::direct_writes`: appends
    /// of 64 KiB and more): the crash and fault tests that run three or
    /// more writers then crash and fail direct writes too. Its batch 0
    /// carries 1.2 MB, enough for the log to hand its direct writes to a
    /// writer thread (appends of 1 MiB and more, which `Buffered` writes
    /// directly too), so that the fault sweeps fail each of those writes
    /// too, in every mode.
    pub fn is_large(self) -> bool {
        self.writer == 2 && self.n.is_multiple_of(3)
    }

    /// The spans of the batch, in the order they are appended (and so
    /// written to the log).
    pub fn spans(self) -> Vec<Span> {
        let mut out = Vec::new();
        for t in 0..TRACES_PER_BATCH {
            let trace = self.trace_id(t);
            let start = 1_000_000 + self.n * 10_000 + t * 1_000;
            for s in 0..SPANS_PER_TRACE {
                let span_id = SpanId([0, 0, 0, 0, 0, 0, 0, u8::try_from(s + 1).unwrap()]);
                let (parent, name) = if s == 0 {
                    (None, "agent")
                } else {
                    (Some(SpanId([0, 0, 0, 0, 0, 0, 0, 1])), "llm")
                };
                let mut span = Span::new(
                    trace,
                    span_id,
                    parent,
                    name,
                    start + s * 10,
                    start + 500 - s * 10,
                )
                .with_attribute("session.id", self.session());
                if s == 0 {
                    span = span
                        .with_attribute("input.value", format!("question {} {t}", self.n))
                        .with_attribute("output.value", format!("answer {} {t}", self.n));
                    if t == 0 && self.is_large() {
                        let bytes = if self.n == 0 { 1_200_000 } else { 70_000 };
                        span = span.with_attribute("padding", padding(self.n, bytes));
                    }
                } else {
                    span = span
                        .with_attribute("openinference.span.kind", "LLM")
                        .with_attribute("llm.token_count.prompt", 10i64)
                        .with_attribute("llm.token_count.completion", 5i64)
                        .with_attribute("llm.token_count.total", 15i64);
                    if (self.n + t).is_multiple_of(7) && s == 2 {
                        span = span.with_status(StatusCode::Error, "rate limited");
                    }
                }
                out.push(span);
            }
        }
        out
    }

    /// The batch as `append` takes it.
    pub fn batch(self) -> Vec<ResourceSpans> {
        vec![ResourceSpans::for_project(self.project(), self.spans())]
    }
}

/// The padding of a large batch: `bytes` bytes, different per batch.
fn padding(n: u64, bytes: u64) -> String {
    (0..bytes)
        .map(|i| char::from(b'a' + ((i * 31 + n) % 26) as u8))
        .collect()
}

/// How much of a batch a store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Every span.
    All,
    /// No span.
    None,
    /// The first `k` spans in append order (0 < k < all).
    Prefix(usize),
    /// Some spans, but not a prefix: a hole.
    Holes,
}

/// Which of the batch's spans the store holds, by reading its traces back.
pub fn presence(store: &SessionStore, id: BatchId) -> Result<Presence, String> {
    let spans = id.spans();
    let mut have = Vec::with_capacity(spans.len());
    let mut traces = BTreeMap::new();
    for t in 0..TRACES_PER_BATCH {
        let trace = store
            .trace(id.trace_id(t))
            .map_err(|e| format!("trace of {id:?} does not read back: {e}"))?;
        traces.insert(id.trace_id(t), trace);
    }
    for s in &spans {
        let stored = traces
            .get(&s.trace_id)
            .and_then(|t| t.as_ref())
            .and_then(|t| t.spans.iter().find(|x| x.span.span_id == s.span_id));
        match stored {
            Some(x) if x.span == *s => have.push(true),
            Some(x) => {
                return Err(format!(
                    "{id:?}: span {:?} reads back different: {:?}",
                    s.span_id, x.span
                ));
            }
            None => have.push(false),
        }
    }
    let k = have.iter().take_while(|h| **h).count();
    Ok(if have.iter().skip(k).any(|h| *h) {
        Presence::Holes
    } else if k == spans.len() {
        Presence::All
    } else if k == 0 {
        Presence::None
    } else {
        Presence::Prefix(k)
    })
}

/// A session summary recomputed from the spans a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpectedSession {
    pub num_traces: u64,
    pub num_traces_with_error: u64,
    pub tokens: Tokens,
    pub start: u64,
    pub end: u64,
}

/// Checks a (reopened) store against the batches that were sent, in the
/// order each writer sent them:
///
/// - every batch in `acked` is wholly present;
/// - per writer, the batches present form a prefix of what it sent: whole
///   batches, then at most one batch of which only a prefix of spans is
///   present (the one being written when the process died), then nothing;
/// - every span reads back equal to what was sent;
/// - every session summary equals a recomputation from the spans present;
/// - `verify` (a full replay of the log compared with every index table)
///   passes.
///
/// Returns the number of batches wholly present.
pub fn check_store(
    store: &SessionStore,
    sent: &[BatchId],
    acked: &[BatchId],
) -> Result<usize, String> {
    let mut by_writer: BTreeMap<u32, Vec<BatchId>> = BTreeMap::new();
    for id in sent {
        by_writer.entry(id.writer).or_default().push(*id);
    }
    let mut present_spans: Vec<(BatchId, usize)> = Vec::new();
    let mut whole = 0;
    for (writer, ids) in &by_writer {
        let mut ended = false;
        for id in ids {
            let p = presence(store, *id)?;
            match (p, ended) {
                (Presence::All, false) => {
                    whole += 1;
                    present_spans.push((*id, SPANS_PER_BATCH));
                }
                (Presence::Prefix(k), false) => {
                    ended = true;
                    present_spans.push((*id, k));
                }
                (Presence::None, _) => ended = true,
                (Presence::Holes, _) => {
                    return Err(format!("{id:?} is present with holes"));
                }
                (p, true) => {
                    return Err(format!(
                        "writer {writer}: {id:?} is present ({p:?}) after a batch that is not"
                    ));
                }
            }
        }
    }
    for id in acked {
        let p = presence(store, *id)?;
        if p != Presence::All {
            return Err(format!("acknowledged {id:?} is {p:?}"));
        }
    }

    // Recompute every session summary from the spans present.
    let mut traces: BTreeMap<TraceId, (String, String, Vec<Span>)> = BTreeMap::new();
    for (id, k) in &present_spans {
        for s in id.spans().into_iter().take(*k) {
            traces
                .entry(s.trace_id)
                .or_insert_with(|| (id.project(), id.session(), Vec::new()))
                .2
                .push(s);
        }
    }
    let mut sessions: BTreeMap<(String, String), ExpectedSession> = BTreeMap::new();
    for (project, session, spans) in traces.values() {
        let e = sessions
            .entry((project.clone(), session.clone()))
            .or_insert(ExpectedSession {
                start: u64::MAX,
                ..ExpectedSession::default()
            });
        e.num_traces += 1;
        if spans.iter().any(|s| s.status.code == StatusCode::Error) {
            e.num_traces_with_error += 1;
        }
        for _ in spans.iter().filter(|s| s.name == "llm") {
            e.tokens.prompt += 10;
            e.tokens.completion += 5;
            e.tokens.total += 15;
        }
        e.start = e
            .start
            .min(spans.iter().map(|s| s.start_time_unix_nano).min().unwrap());
        e.end = e
            .end
            .max(spans.iter().map(|s| s.end_time_unix_nano).max().unwrap());
    }
    let mut all_sessions: Vec<(String, String)> = by_writer
        .values()
        .flatten()
        .map(|id| (id.project(), id.session()))
        .collect();
    all_sessions.sort();
    all_sessions.dedup();
    for (project, session) in all_sessions {
        let got = store
            .session(&project, &session)
            .map_err(|e| format!("session {project}/{session}: {e}"))?;
        let want = sessions.get(&(project.clone(), session.clone()));
        match (got, want) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                let g2 = ExpectedSession {
                    num_traces: g.num_traces,
                    num_traces_with_error: g.num_traces_with_error,
                    tokens: g.tokens,
                    start: g.start_time_unix_nano,
                    end: g.end_time_unix_nano,
                };
                if g2 != *w {
                    return Err(format!(
                        "session {project}/{session}: store says {g2:?}, recomputed {w:?}"
                    ));
                }
                let history = store
                    .session_history(&project, &session)
                    .map_err(|e| format!("history {project}/{session}: {e}"))?;
                if history.len() as u64 != w.num_traces {
                    return Err(format!(
                        "session {project}/{session}: {} turns, expected {}",
                        history.len(),
                        w.num_traces
                    ));
                }
            }
            (g, w) => {
                return Err(format!(
                    "session {project}/{session}: store has {g:?}, recomputed {w:?}"
                ));
            }
        }
    }
    let report = store.verify().map_err(|e| format!("verify failed: {e}"))?;
    if !report.is_ok() {
        return Err(format!("verify found problems: {:?}", report.problems));
    }
    Ok(whole)
}

/// A tiny deterministic random number generator (xorshift64*), so tests
/// need no dependency and print a seed to replay.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x2545_f491_4f6c_dd1d | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Reads a bound for a test loop from an environment variable.
pub fn env_bound(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

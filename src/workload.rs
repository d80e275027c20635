//! A deterministic generator of realistic session workloads, for the demo,
//! tests and benchmarks.
//!
//! Sessions are multi-turn conversations: each turn is a trace whose root
//! (an `AGENT` or `CHAIN` span) carries the user's question and the answer,
//! with `LLM` children that carry token counts and flattened chat messages,
//! and `TOOL` and `RETRIEVER` spans. Spans arrive the way OpenTelemetry's
//! batch processor sends them: children (which end first) before their
//! root, turns of concurrent sessions interleaved.
//!
//! The defaults are small and uniform (the demo uses them). For benchmarks,
//! [`WorkloadConfig::realistic`] draws turns per session and spans per trace
//! from power laws (most sessions short, a few of up to 1,000 turns), sends
//! some roots first and some spans late, and mentions rare ticket numbers
//! for search. [`encoded_bytes`] tells how many bytes a batch takes in the log.
//!
//! ```
//! use span_sessions::workload::{Workload, WorkloadConfig};
//! let batches: Vec<_> = Workload::new(WorkloadConfig { sessions: 3, ..Default::default() })
//!     .batches(100)
//!     .collect();
//! assert!(!batches.is_empty());
//! ```

use std::collections::VecDeque;

use crate::codec;
use crate::model::{KeyValue, ResourceSpans, Span, SpanId, SpanKind, StatusCode, TraceId, keys};

/// How a count is drawn from its inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Spread {
    /// Every value of the range equally likely.
    #[default]
    Uniform,
    /// A power law truncated to the range: the chance of exceeding the low
    /// end by `k` or more falls like `(k + 1)^-exponent`, so most draws are
    /// near the low end and a few reach the high end. With an exponent of
    /// 1.5 over `1..=1000`, 97% of draws are below 10 and one in a thousand
    /// is 100 or more.
    PowerLaw(f64),
}

/// Shape of a generated workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Seed: the same config and seed give the same spans.
    pub seed: u64,
    /// Number of projects (`project-0`, `project-1`, ...).
    pub projects: usize,
    /// Number of sessions, spread over the projects.
    pub sessions: usize,
    /// Turns per session, drawn in this inclusive range (see `turns_spread`)...
    pub turns: (usize, usize),
    /// ...with this distribution...
    pub turns_spread: Spread,
    /// ...except that one session in this many is long (`long_turns`); 0 for none.
    pub long_session_every: usize,
    /// Turns of a long session.
    pub long_turns: usize,
    /// Spans per trace, inclusive range (at least 3).
    pub spans_per_trace: (usize, usize),
    /// How spans per trace are drawn from their range.
    pub spans_spread: Spread,
    /// Approximate encoded size of a span in bytes (about 500 or 4096).
    pub span_bytes: usize,
    /// How many sessions are active at once (their turns interleave).
    pub concurrent_sessions: usize,
    /// Unix nanoseconds of the first turn.
    pub start_unix_nano: u64,
    /// One trace in this many sends its root before its children (as an
    /// exporter that flushes per span does); 0 for none.
    pub root_first_every: usize,
    /// One trace in this many holds back one child span, which arrives
    /// alone (as a one-span [`GeneratedTrace`]) after up to `late_delay`
    /// further traces, usually after its root; 0 for none.
    pub late_span_every: usize,
    /// Most traces that pass before a held-back span arrives.
    pub late_delay: usize,
    /// One turn in this many mentions a ticket number (`ticket T-123456`,
    /// six random digits) in its question: rare terms for search
    /// benchmarks; 0 for none.
    pub ticket_every: usize,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            projects: 2,
            sessions: 10,
            turns: (1, 8),
            long_session_every: 0,
            long_turns: 1000,
            spans_per_trace: (3, 12),
            span_bytes: 500,
            concurrent_sessions: 8,
            start_unix_nano: 1_767_225_600_000_000_000, // 2026-01-01T00:00:00Z
            turns_spread: Spread::Uniform,
            spans_spread: Spread::Uniform,
            root_first_every: 0,
            late_span_every: 0,
            late_delay: 64,
            ticket_every: 0,
        }
    }
}

impl WorkloadConfig {
    /// The shape the benchmarks use: `sessions` sessions of 1 to 1,000
    /// turns (power law, exponent 1.5: mean about 2.5, a few hundred-plus),
    /// traces of 3 to 30 spans (power law, exponent 1.2: mean about 6),
    /// spans of about `span_bytes` encoded bytes (500 or 4096), four
    /// projects, 64 sessions active at once, one root in ten sent first,
    /// one trace in twenty with a late span, one turn in a thousand
    /// mentioning a ticket number.
    pub fn realistic(seed: u64, sessions: usize, span_bytes: usize) -> Self {
        Self {
            seed,
            projects: 4,
            sessions,
            turns: (1, 1000),
            turns_spread: Spread::PowerLaw(1.5),
            long_session_every: 0,
            spans_per_trace: (3, 30),
            spans_spread: Spread::PowerLaw(1.2),
            span_bytes,
            concurrent_sessions: 64,
            root_first_every: 10,
            late_span_every: 20,
            late_delay: 256,
            ticket_every: 1000,
            ..Self::default()
        }
    }
}

/// Bytes the spans of `batch` take as log records (the encoded payloads,
/// without frame headers): the "bytes" of bytes-per-second figures.
pub fn encoded_bytes(batch: &[ResourceSpans]) -> u64 {
    let mut buf = Vec::new();
    let mut total = 0;
    for rs in batch {
        for span in &rs.spans {
            buf.clear();
            if codec::encode_span_parts(rs.project(), &rs.resource, span, &mut buf).is_ok() {
                total += buf.len() as u64;
            }
        }
    }
    total
}

/// SplitMix64: small, fast, and good enough for test data.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = (hi.saturating_sub(lo) as u64).saturating_add(1);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the result is below `span`, which came from a usize"
        )]
        let r = (self.next() % span) as usize;
        lo + r
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        #[expect(
            clippy::cast_precision_loss,
            reason = "53 random bits fit an f64 mantissa exactly"
        )]
        let r = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        r
    }

    /// In `lo..=hi`, drawn as `spread` says.
    fn draw(&mut self, lo: usize, hi: usize, spread: Spread) -> usize {
        let hi = hi.max(lo);
        match spread {
            Spread::Uniform => self.range(lo, hi),
            Spread::PowerLaw(exponent) => {
                // Inverse CDF of a Pareto law on [1, n + 1), floored to 1..=n.
                let exponent = exponent.max(0.01);
                #[expect(clippy::cast_precision_loss, reason = "ranges are far below 2^52")]
                let n = (hi - lo + 1) as f64;
                let tail = (n + 1.0).powf(-exponent);
                let x = (1.0 - self.unit() * (1.0 - tail)).powf(-1.0 / exponent);
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "x is in [1, n + 1), clamped to the range below"
                )]
                let k = x.floor() as usize;
                lo + k.clamp(1, hi - lo + 1) - 1
            }
        }
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items
            .get(self.range(0, items.len().saturating_sub(1)))
            .copied()
            .unwrap_or("")
    }
}

const QUESTIONS: &[&str] = &[
    "How do I reset my password?",
    "What is the refund policy for annual plans?",
    "Can you summarise the last three invoices?",
    "Why did my deployment fail with exit code 137?",
    "Translate 'good morning' into Japanese.",
    "Which regions support GPU instances?",
    "Draft a polite reply declining the meeting.",
    "What changed between v2.3 and v2.4?",
    "¿Cuál es el horario de atención al cliente?",
    "Explain the difference between p50 and p99 latency.",
];

const ANSWERS: &[&str] = &[
    "Open Settings > Security and choose 'Reset password'. A link is emailed to you.",
    "Annual plans are refundable within 30 days, pro rata after that.",
    "Invoices 1041-1043 total $4,210; the largest item is compute (68%).",
    "Exit code 137 means the container was killed for exceeding its memory limit.",
    "おはようございます (ohayō gozaimasu).",
    "GPU instances are available in us-east-1, eu-west-4 and ap-northeast-1.",
    "Thank you for the invitation. Unfortunately I cannot attend; could we share notes instead?",
    "v2.4 adds streaming exports and fixes the retry storm in the OTLP client.",
    "Atendemos de lunes a viernes, de 9:00 a 18:00 (CET).",
    "p50 is the median latency; p99 is exceeded by only 1% of requests.",
];

const MODELS: &[&str] = &["gpt-4o-mini", "claude-sonnet-4", "llama-3.1-70b"];
const TOOLS: &[&str] = &["search_docs", "get_invoice", "lookup_account", "run_sql"];

/// One generated trace: its project and its spans in arrival order.
#[derive(Debug, Clone)]
pub struct GeneratedTrace {
    /// The project the trace belongs to.
    pub project: String,
    /// The session id on the root span.
    pub session_id: String,
    /// Spans in arrival order: children before the root, unless the
    /// config sends some roots first; a held-back span arrives alone.
    pub spans: Vec<Span>,
}

#[derive(Clone)]
struct SessionPlan {
    project: usize,
    id: String,
    user: String,
    turns_left: usize,
    turn: usize,
    clock: u64,
}

/// The generator; iterate it for traces, or call [`Workload::batches`].
#[derive(Debug, Clone)]
pub struct Workload {
    cfg: WorkloadConfig,
    rng: Rng,
    next_session: usize,
    active: Vec<SessionPlan>,
    /// Traces emitted so far, the clock of held-back spans.
    emitted: usize,
    /// Held-back spans with the `emitted` count at which they arrive.
    late: VecDeque<(usize, GeneratedTrace)>,
}

impl std::fmt::Debug for SessionPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPlan").field("id", &self.id).finish()
    }
}

impl Workload {
    /// A generator for `cfg`.
    pub fn new(cfg: WorkloadConfig) -> Self {
        let rng = Rng(cfg.seed);
        Self {
            cfg,
            rng,
            next_session: 0,
            active: Vec::new(),
            emitted: 0,
            late: VecDeque::new(),
        }
    }

    /// Spans grouped into batches of `size` spans (the last may be
    /// smaller), each batch one `ResourceSpans` per project.
    pub fn batches(self, size: usize) -> impl Iterator<Item = Vec<ResourceSpans>> {
        let size = size.max(1);
        let mut traces = self;
        let mut pending: Vec<(String, Span)> = Vec::new();
        std::iter::from_fn(move || {
            while pending.len() < size {
                match traces.next() {
                    Some(t) => {
                        let project = t.project;
                        pending.extend(t.spans.into_iter().map(|s| (project.clone(), s)));
                    }
                    None => break,
                }
            }
            if pending.is_empty() {
                return None;
            }
            let rest = pending.split_off(size.min(pending.len()));
            let batch = std::mem::replace(&mut pending, rest);
            let mut groups: Vec<ResourceSpans> = Vec::new();
            for (project, span) in batch {
                match groups.iter_mut().find(|g| g.project() == project) {
                    Some(g) => g.spans.push(span),
                    None => groups.push(ResourceSpans::for_project(project, vec![span])),
                }
            }
            Some(groups)
        })
    }

    fn session(&self, n: usize, rng: &mut Rng) -> SessionPlan {
        let cfg = &self.cfg;
        let long = cfg.long_session_every > 0 && n.is_multiple_of(cfg.long_session_every);
        let turns = if long {
            cfg.long_turns
        } else {
            rng.draw(cfg.turns.0.max(1), cfg.turns.1, cfg.turns_spread)
        };
        SessionPlan {
            project: n % cfg.projects.max(1),
            id: format!("sess-{n:06}-{:08x}", rng.next() & 0xffff_ffff),
            user: format!("user-{}", rng.range(1, 500)),
            turns_left: turns,
            turn: 0,
            clock: cfg.start_unix_nano + (n as u64) * 7_000_000_000,
        }
    }

    fn trace(&mut self, plan: &mut SessionPlan) -> GeneratedTrace {
        let rng = &mut self.rng;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&rng.next().to_be_bytes());
        id[8..].copy_from_slice(&rng.next().to_be_bytes());
        let trace_id = TraceId(id);
        let mut next_span = || SpanId((rng.next() | 1).to_be_bytes());
        let root_id = next_span();
        let n = self.rng.draw(
            self.cfg.spans_per_trace.0.max(3),
            self.cfg.spans_per_trace.1.max(3),
            self.cfg.spans_spread,
        );
        let qa = self.rng.range(0, QUESTIONS.len().min(ANSWERS.len()) - 1);
        let q = QUESTIONS.get(qa).copied().unwrap_or("");
        let a = ANSWERS.get(qa).copied().unwrap_or("");
        let question = if self.cfg.ticket_every > 0
            && self.rng.next().is_multiple_of(self.cfg.ticket_every as u64)
        {
            format!("{q} (ticket T-{:06})", self.rng.next() % 1_000_000)
        } else {
            q.to_owned()
        };
        let project = format!("project-{}", plan.project);
        let resource = ResourceSpans::for_project(project.as_str(), Vec::new()).resource;
        let start = plan.clock;
        let mut t = start + 1_000_000;
        let mut children = Vec::new();
        for i in 0..n - 1 {
            let dur = 50_000_000 + (self.rng.next() % 900_000_000);
            let mut sid = [0u8; 8];
            sid.copy_from_slice(&(self.rng.next() | 1).to_be_bytes());
            let kind = match i % 3 {
                0 => "LLM",
                1 => "TOOL",
                _ => "RETRIEVER",
            };
            let mut s = Span::new(
                trace_id,
                SpanId(sid),
                Some(root_id),
                kind.to_lowercase(),
                t,
                t + dur,
            )
            .with_attribute(keys::SPAN_KIND, kind);
            s.kind = SpanKind::Internal;
            match kind {
                "LLM" => {
                    let prompt = 200 + (self.rng.next() % 1800) as i64;
                    let completion = 20 + (self.rng.next() % 400) as i64;
                    s = s
                        .with_attribute("llm.model_name", self.rng.pick(MODELS))
                        .with_attribute("llm.input_messages.0.message.role", "user")
                        .with_attribute("llm.input_messages.0.message.content", q)
                        .with_attribute("llm.output_messages.0.message.role", "assistant")
                        .with_attribute("llm.output_messages.0.message.content", a)
                        .with_attribute(keys::TOKEN_COUNT_PROMPT, prompt)
                        .with_attribute(keys::TOKEN_COUNT_COMPLETION, completion)
                        .with_attribute(keys::TOKEN_COUNT_TOTAL, prompt + completion);
                }
                "TOOL" => {
                    s = s
                        .with_attribute("tool.name", self.rng.pick(TOOLS))
                        .with_attribute(keys::INPUT_VALUE, "{\"query\": \"status\"}")
                        .with_attribute(keys::INPUT_MIME_TYPE, "application/json");
                }
                _ => {
                    s = s.with_attribute("retrieval.documents.0.document.id", "doc-17");
                }
            }
            if self.rng.next().is_multiple_of(50) {
                s = s.with_status(StatusCode::Error, "upstream timeout");
            }
            children.push(s);
            t += dur / 2;
        }
        let end = children
            .iter()
            .map(|c| c.end_time_unix_nano)
            .max()
            .unwrap_or(t)
            + 2_000_000;
        let mut root = Span::new(trace_id, root_id, None, "agent", start, end)
            .with_attribute(
                keys::SPAN_KIND,
                if plan.turn.is_multiple_of(2) {
                    "AGENT"
                } else {
                    "CHAIN"
                },
            )
            .with_attribute(keys::SESSION_ID, plan.id.as_str())
            .with_attribute(keys::USER_ID, plan.user.as_str())
            .with_attribute(keys::INPUT_VALUE, question)
            .with_attribute(keys::OUTPUT_VALUE, a);
        root.kind = SpanKind::Server;
        let mut buf = Vec::new();
        pad_to(
            &mut root,
            &project,
            &resource,
            self.cfg.span_bytes,
            &mut buf,
        );
        for s in &mut children {
            pad_to(s, &project, &resource, self.cfg.span_bytes, &mut buf);
        }
        if self.cfg.root_first_every > 0
            && self
                .rng
                .next()
                .is_multiple_of(self.cfg.root_first_every as u64)
        {
            children.insert(0, root);
        } else {
            children.push(root);
        }
        if self.cfg.late_span_every > 0
            && self
                .rng
                .next()
                .is_multiple_of(self.cfg.late_span_every as u64)
        {
            // Hold back one child; the root (first or last) stays.
            let at = if children.first().is_some_and(|s| s.parent_span_id.is_none()) {
                self.rng.range(1, children.len() - 1)
            } else {
                self.rng.range(0, children.len() - 2)
            };
            let span = children.remove(at);
            let due = self.emitted + 1 + self.rng.range(0, self.cfg.late_delay);
            let pos = self.late.partition_point(|(d, _)| *d <= due);
            self.late.insert(
                pos,
                (
                    due,
                    GeneratedTrace {
                        project: project.clone(),
                        session_id: plan.id.clone(),
                        spans: vec![span],
                    },
                ),
            );
        }
        plan.turn += 1;
        // Next turn: the user reads and types for a few seconds.
        plan.clock = end + 3_000_000_000 + self.rng.next() % 20_000_000_000;
        GeneratedTrace {
            project,
            session_id: plan.id.clone(),
            spans: children,
        }
    }
}

/// Adds a `padding` attribute so that `span` encodes to about `target`
/// bytes as a log record of `project` (no change if it is already larger).
fn pad_to(span: &mut Span, project: &str, resource: &[KeyValue], target: usize, buf: &mut Vec<u8>) {
    buf.clear();
    if codec::encode_span_parts(project, resource, span, buf).is_err() {
        return;
    }
    // The attribute costs its key (1 + 7 bytes), the value's variant (1)
    // and the string's length (1 byte below 251, else 3), plus the text.
    let room = target.saturating_sub(buf.len() + 9);
    let pad = if room > 251 {
        room - 3
    } else {
        room.saturating_sub(1)
    };
    if pad > 0 {
        span.attributes
            .push(KeyValue::new("padding", "x".repeat(pad)));
    }
}

impl Iterator for Workload {
    type Item = GeneratedTrace;

    fn next(&mut self) -> Option<GeneratedTrace> {
        if self
            .late
            .front()
            .is_some_and(|(due, _)| *due <= self.emitted)
        {
            return self.late.pop_front().map(|(_, t)| t);
        }
        while self.active.len() < self.cfg.concurrent_sessions.max(1)
            && self.next_session < self.cfg.sessions
        {
            let n = self.next_session;
            self.next_session += 1;
            let mut rng = Rng(self.cfg.seed ^ (n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
            let plan = self.session(n, &mut rng);
            self.active.push(plan);
        }
        if self.active.is_empty() {
            return self.late.pop_front().map(|(_, t)| t);
        }
        let i = self.rng.range(0, self.active.len() - 1);
        let mut plan = self.active.swap_remove(i);
        let trace = self.trace(&mut plan);
        self.emitted += 1;
        plan.turns_left -= 1;
        if plan.turns_left > 0 {
            self.active.push(plan);
        }
        Some(trace)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn spans_of(cfg: WorkloadConfig) -> Vec<(String, Span)> {
        Workload::new(cfg)
            .flat_map(|t| {
                let p = t.project;
                t.spans.into_iter().map(move |s| (p.clone(), s))
            })
            .collect()
    }

    #[test]
    fn same_seed_same_spans() {
        let a = spans_of(WorkloadConfig::realistic(7, 200, 500));
        let b = spans_of(WorkloadConfig::realistic(7, 200, 500));
        assert_eq!(a, b);
        let c = spans_of(WorkloadConfig::realistic(8, 200, 500));
        assert_ne!(a, c);
    }

    #[test]
    fn realistic_shape() {
        let cfg = WorkloadConfig::realistic(1, 3000, 500);
        let mut turns: HashMap<String, HashSet<TraceId>> = HashMap::new();
        let mut spans_per_trace: HashMap<TraceId, usize> = HashMap::new();
        let mut seen_root: HashSet<TraceId> = HashSet::new();
        let (mut late, mut root_first, mut bytes, mut n) = (0, 0, 0, 0);
        for t in Workload::new(cfg) {
            if t.spans.len() == 1 {
                // A held-back span: a child, usually after its root.
                assert!(t.spans[0].parent_span_id.is_some());
                late += usize::from(seen_root.contains(&t.spans[0].trace_id));
            } else {
                root_first += usize::from(t.spans[0].parent_span_id.is_none());
                assert!(
                    t.spans
                        .iter()
                        .filter(|s| s.parent_span_id.is_none())
                        .count()
                        == 1
                );
            }
            for s in &t.spans {
                turns
                    .entry(t.session_id.clone())
                    .or_default()
                    .insert(s.trace_id);
                *spans_per_trace.entry(s.trace_id).or_default() += 1;
                if s.parent_span_id.is_none() {
                    seen_root.insert(s.trace_id);
                }
            }
            bytes += encoded_bytes(&[ResourceSpans::for_project(t.project, t.spans.clone())]);
            n += t.spans.len() as u64;
        }
        assert_eq!(turns.len(), 3000);
        let counts: Vec<usize> = turns.values().map(HashSet::len).collect();
        assert!(counts.iter().all(|&c| (1..=1000).contains(&c)));
        assert!(counts.iter().filter(|&&c| c == 1).count() > 1500);
        assert!(counts.iter().any(|&c| c >= 50));
        assert!(spans_per_trace.values().all(|&c| (3..=30).contains(&c)));
        assert!(spans_per_trace.values().any(|&c| c >= 20));
        assert!(late > 100, "late spans after their root: {late}");
        assert!(root_first > 100, "roots first: {root_first}");
        let mean = bytes / n;
        assert!((450..=560).contains(&mean), "mean span bytes {mean}");
    }

    #[test]
    fn large_spans_are_about_4_kib() {
        let mut cfg = WorkloadConfig::realistic(3, 50, 4096);
        cfg.late_span_every = 0;
        for t in Workload::new(cfg) {
            for s in t.spans {
                let b = encoded_bytes(&[ResourceSpans::for_project(t.project.as_str(), vec![s])]);
                assert!((4090..=4200).contains(&b), "span of {b} bytes");
            }
        }
    }

    #[test]
    fn power_law_stays_in_range() {
        let mut rng = Rng(5);
        let draws: Vec<usize> = (0..100_000)
            .map(|_| rng.draw(1, 1000, Spread::PowerLaw(1.5)))
            .collect();
        assert!(draws.iter().all(|&d| (1..=1000).contains(&d)));
        let below_10 = draws.iter().filter(|&&d| d < 10).count();
        assert!((95_000..99_000).contains(&below_10), "{below_10}");
        assert!(draws.iter().filter(|&&d| d >= 100).count() > 20);
    }
}

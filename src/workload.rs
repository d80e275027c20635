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
//! ```
//! use span_sessions::workload::{Workload, WorkloadConfig};
//! let batches: Vec<_> = Workload::new(WorkloadConfig { sessions: 3, ..Default::default() })
//!     .batches(100)
//!     .collect();
//! assert!(!batches.is_empty());
//! ```

use crate::model::{ResourceSpans, Span, SpanId, SpanKind, StatusCode, TraceId, keys};

/// Shape of a generated workload.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Seed: the same config and seed give the same spans.
    pub seed: u64,
    /// Number of projects (`project-0`, `project-1`, ...).
    pub projects: usize,
    /// Number of sessions, spread over the projects.
    pub sessions: usize,
    /// Turns per session, drawn uniformly in this inclusive range...
    pub turns: (usize, usize),
    /// ...except that one session in this many is long (`long_turns`); 0 for none.
    pub long_session_every: usize,
    /// Turns of a long session.
    pub long_turns: usize,
    /// Spans per trace, inclusive range (at least 3).
    pub spans_per_trace: (usize, usize),
    /// Approximate encoded size of a span in bytes (about 500 or 4096).
    pub span_bytes: usize,
    /// How many sessions are active at once (their turns interleave).
    pub concurrent_sessions: usize,
    /// Unix nanoseconds of the first turn.
    pub start_unix_nano: u64,
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
        }
    }
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
    /// Spans, children before the root.
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
            rng.range(cfg.turns.0.max(1), cfg.turns.1.max(cfg.turns.0.max(1)))
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
        let n = self.rng.range(
            self.cfg.spans_per_trace.0.max(3),
            self.cfg.spans_per_trace.1.max(3),
        );
        let qa = self.rng.range(0, QUESTIONS.len().min(ANSWERS.len()) - 1);
        let q = QUESTIONS.get(qa).copied().unwrap_or("");
        let a = ANSWERS.get(qa).copied().unwrap_or("");
        let pad = self.cfg.span_bytes.saturating_sub(420);
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
            if pad > 0 {
                s = s.with_attribute("padding", "x".repeat(pad));
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
            .with_attribute(keys::INPUT_VALUE, q)
            .with_attribute(keys::OUTPUT_VALUE, a);
        root.kind = SpanKind::Server;
        children.push(root);
        plan.turn += 1;
        // Next turn: the user reads and types for a few seconds.
        plan.clock = end + 3_000_000_000 + self.rng.next() % 20_000_000_000;
        GeneratedTrace {
            project: format!("project-{}", plan.project),
            session_id: plan.id.clone(),
            spans: children,
        }
    }
}

impl Iterator for Workload {
    type Item = GeneratedTrace;

    fn next(&mut self) -> Option<GeneratedTrace> {
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
            return None;
        }
        let i = self.rng.range(0, self.active.len() - 1);
        let mut plan = self.active.swap_remove(i);
        let trace = self.trace(&mut plan);
        plan.turns_left -= 1;
        if plan.turns_left > 0 {
            self.active.push(plan);
        }
        Some(trace)
    }
}

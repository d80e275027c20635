//! Session summaries (contract rule 6), kept exact incrementally.
//!
//! Sums are updated by delta. Minimums and maximums (start, end, first
//! input, last output, user) only ever improve while a trace stays in its
//! session, so they are updated by comparison; when a change could make one
//! worse (a trace leaves the session, or the trace holding the first input
//! or last output changes in a way that may lose its place) the summary is
//! refolded from the session's turns. Latency quantiles are computed when
//! read, from the turn keys.

use serde::{Deserialize, Serialize};

use crate::codec::WireReader;
use crate::model::{IoValue, LatencyQuantiles, SessionSummary, Tokens, TraceStatus};

use super::trace::{Earliest, TurnBody};

/// The stored summary of one session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionState {
    pub project_id: u32,
    pub project: String,
    pub session_id: String,
    pub num_traces: u64,
    pub num_errors: u64,
    pub tokens: Tokens,
    pub start: u64,
    pub end: u64,
    /// (trace start, trace id, root input) of the earliest trace with an input.
    pub first_input: Option<(u64, [u8; 16], IoValue)>,
    /// (trace start, trace id, root output) of the latest trace with an output.
    pub last_output: Option<(u64, [u8; 16], IoValue)>,
    /// (span start, trace id, span id, user) of the first span with a user id.
    pub user: Option<(u64, [u8; 16], [u8; 8], String)>,
}

/// A turn as seen by the session summary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TurnRef<'a> {
    pub start: u64,
    pub trace_id: [u8; 16],
    pub body: &'a TurnBody,
}

/// A summary's first input or last output.
type Endpoint = (u64, [u8; 16], IoValue);

/// Puts `(start, trace_id, value)` in `slot`, in the buffers of the value
/// it held, if any: a session's last output moves on with nearly every
/// turn added, and a copy into a fresh value cost an allocation and the
/// old value's free each time.
fn set_endpoint(slot: &mut Option<Endpoint>, start: u64, trace_id: [u8; 16], value: &IoValue) {
    match slot {
        Some((s, id, cur)) => {
            *s = start;
            *id = trace_id;
            cur.value.clone_from(&value.value);
            cur.mime_type.clone_from(&value.mime_type);
        }
        None => *slot = Some((start, trace_id, value.clone())),
    }
}

/// The sort values of a session (see `SortKey` in the index).
pub(crate) fn sort_values(s: &SessionState) -> [u64; 5] {
    [
        s.start,
        s.end,
        s.num_traces,
        s.tokens.total,
        s.end.saturating_sub(s.start),
    ]
}

impl SessionState {
    /// The trace count of a stored summary, read from its leading fields
    /// without decoding the rest; `None` if they do not decode. Only for
    /// sizing buffers: the rest of the value is not checked.
    pub fn stored_num_traces(bytes: &[u8]) -> Option<u64> {
        // Fields in declaration order: project_id, project, session_id, num_traces.
        let mut r = WireReader::new(bytes);
        r.u32().ok()?;
        r.str().ok()?;
        r.str().ok()?;
        r.u64().ok()
    }

    /// An empty session (no traces yet).
    pub fn new(project_id: u32, project: &str, session_id: &str) -> Self {
        Self::named(project_id, project.to_owned(), session_id.to_owned())
    }

    /// [`SessionState::new`], taking the names rather than copying them.
    pub fn named(project_id: u32, project: String, session_id: String) -> Self {
        Self {
            project_id,
            project,
            session_id,
            num_traces: 0,
            num_errors: 0,
            tokens: Tokens::default(),
            start: 0,
            end: 0,
            first_input: None,
            last_output: None,
            user: None,
        }
    }

    /// Adds a turn that is not yet counted (also used to fold from scratch).
    pub fn add(&mut self, t: TurnRef<'_>) {
        if self.num_traces == 0 {
            self.start = t.start;
            self.end = t.body.end;
        } else {
            self.start = self.start.min(t.start);
            self.end = self.end.max(t.body.end);
        }
        self.num_traces += 1;
        self.num_errors += u64::from(t.body.status == TraceStatus::Error);
        self.tokens = self.tokens.saturating_add(t.body.tokens);
        if let Some(input) = &t.body.input
            && self
                .first_input
                .as_ref()
                .is_none_or(|(s, id, _)| (t.start, t.trace_id) < (*s, *id))
        {
            set_endpoint(&mut self.first_input, t.start, t.trace_id, input);
        }
        if let Some(output) = &t.body.output
            && self
                .last_output
                .as_ref()
                .is_none_or(|(s, id, _)| (t.start, t.trace_id) > (*s, *id))
        {
            set_endpoint(&mut self.last_output, t.start, t.trace_id, output);
        }
        // Compared before anything is copied (most turns' users do not
        // win), in the order of the summary's tuple: a string orders as its
        // `str` does.
        if let Some(Earliest {
            start,
            span_id,
            value,
        }) = &t.body.user
        {
            let user = (*start, t.trace_id, *span_id, value.as_str());
            match &mut self.user {
                Some(cur) if user < (cur.0, cur.1, cur.2, cur.3.as_str()) => {
                    (cur.0, cur.1, cur.2) = (user.0, user.1, user.2);
                    cur.3.clone_from(value);
                }
                Some(_) => {}
                None => self.user = Some((user.0, user.1, user.2, value.clone())),
            }
        }
    }

    /// Replaces a counted turn `old` by `new` (the same trace, still in this
    /// session). Returns false when the result cannot be derived
    /// incrementally and the caller must refold.
    pub fn replace(&mut self, old: TurnRef<'_>, new: TurnRef<'_>) -> bool {
        // A trace only gains spans: start never rises, end never falls.
        if new.start > old.start || new.body.end < old.body.end {
            return false;
        }
        let holds_input = self
            .first_input
            .as_ref()
            .is_some_and(|(_, id, _)| *id == old.trace_id);
        if holds_input && new.body.input.is_none() {
            return false;
        }
        let holds_output = self
            .last_output
            .as_ref()
            .is_some_and(|(_, id, _)| *id == old.trace_id);
        if holds_output && (new.body.output.is_none() || new.start != old.start) {
            return false;
        }
        let holds_user = self
            .user
            .as_ref()
            .is_some_and(|(_, id, _, _)| *id == old.trace_id);
        if holds_user && new.body.user.is_none() {
            return false;
        }
        self.num_traces -= 1;
        self.num_errors -= u64::from(old.body.status == TraceStatus::Error);
        self.tokens = self.tokens.saturating_sub(old.body.tokens);
        if holds_input {
            self.first_input = None;
        }
        if holds_output {
            self.last_output = None;
        }
        if holds_user {
            self.user = None;
        }
        // The new turn's keys are no worse than the old ones (checked
        // above), so it re-takes every slot the old turn held.
        self.add(new);
        true
    }

    /// The public summary, given latency quantiles computed at read time.
    pub fn to_summary(&self, trace_latency_ms: LatencyQuantiles) -> SessionSummary {
        SessionSummary {
            project: self.project.clone(),
            session_id: self.session_id.clone(),
            num_traces: self.num_traces,
            num_traces_with_error: self.num_errors,
            tokens: self.tokens,
            start_time_unix_nano: self.start,
            end_time_unix_nano: self.end,
            first_input: self.first_input.as_ref().map(|(_, _, v)| v.clone()),
            last_output: self.last_output.as_ref().map(|(_, _, v)| v.clone()),
            user_id: self.user.as_ref().map(|(_, _, _, u)| u.clone()),
            trace_latency_ms,
        }
    }
}

/// Where quantile `q` of `len` ascending values lies: the lower of its two
/// closest ranks and how far it is towards the next (`None` when empty).
fn rank(len: usize, q: f64) -> Option<(usize, f64)> {
    let last = len.checked_sub(1)?;
    #[expect(clippy::cast_precision_loss, reason = "ranks stay far below 2^52")]
    let pos = q.clamp(0.0, 1.0) * last as f64;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "pos is within [0, last]"
    )]
    let lo = (pos.floor() as usize).min(last);
    #[expect(clippy::cast_precision_loss, reason = "lo is small")]
    let frac = pos - lo as f64;
    Some((lo, frac))
}

/// Quantile by linear interpolation between closest ranks (numpy's
/// default, which Phoenix uses). `sorted` must be ascending.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some((lo, frac)) = rank(sorted.len(), q) else {
        return 0.0;
    };
    let (Some(a), Some(b)) = (sorted.get(lo), sorted.get(lo + 1).or(sorted.get(lo))) else {
        return 0.0;
    };
    a + (b - a) * frac
}

/// [`quantile`] of `values` in any order, without sorting them: the two
/// closest ranks are selected (linear time); `values` is reordered.
pub(crate) fn quantile_of(values: &mut [f64], q: f64) -> f64 {
    let Some((lo, frac)) = rank(values.len(), q) else {
        return 0.0;
    };
    let (_, &mut a, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    // The next rank is the least of what lies above the selected one.
    let b = above.iter().copied().min_by(f64::total_cmp).unwrap_or(a);
    a + (b - a) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        assert_eq!(quantile(&[], 0.5), 0.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&v, 0.99) - 99.01).abs() < 1e-9);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Selecting the two closest ranks gives exactly what sorting does,
        /// whatever the order of the values (repeats included).
        #[test]
        fn quantile_of_unsorted_values_is_the_sorted_quantile(
            values in proptest::collection::vec(0u32..50, 0..200),
            q in 0.0f64..=1.0,
        ) {
            let mut unsorted: Vec<f64> = values.iter().map(|&v| f64::from(v) / 4.0).collect();
            let mut sorted = unsorted.clone();
            sorted.sort_by(f64::total_cmp);
            for q in [q, 0.0, 0.5, 0.99, 1.0] {
                let want = quantile(&sorted, q);
                let got = quantile_of(&mut unsorted, q);
                proptest::prop_assert_eq!(got.to_bits(), want.to_bits(), "q {}", q);
            }
        }
    }
}

#[cfg(test)]
mod add_tests {
    use super::*;
    use proptest::prelude::*;

    /// [`SessionState::add`] as it was written before it reused the
    /// summary's buffers: every winning value copied in afresh.
    fn add_simply(s: &mut SessionState, t: TurnRef<'_>) {
        if s.num_traces == 0 {
            s.start = t.start;
            s.end = t.body.end;
        } else {
            s.start = s.start.min(t.start);
            s.end = s.end.max(t.body.end);
        }
        s.num_traces += 1;
        s.num_errors += u64::from(t.body.status == TraceStatus::Error);
        s.tokens = s.tokens.saturating_add(t.body.tokens);
        if let Some(input) = &t.body.input
            && s.first_input
                .as_ref()
                .is_none_or(|(st, id, _)| (t.start, t.trace_id) < (*st, *id))
        {
            s.first_input = Some((t.start, t.trace_id, input.clone()));
        }
        if let Some(output) = &t.body.output
            && s.last_output
                .as_ref()
                .is_none_or(|(st, id, _)| (t.start, t.trace_id) > (*st, *id))
        {
            s.last_output = Some((t.start, t.trace_id, output.clone()));
        }
        let user = t
            .body
            .user
            .as_ref()
            .map(|e| (e.start, t.trace_id, e.span_id, e.value.clone()));
        if let Some(user) = user
            && s.user.as_ref().is_none_or(|cur| user < *cur)
        {
            s.user = Some(user);
        }
    }

    fn io() -> impl Strategy<Value = IoValue> {
        (
            prop_oneof!["[ab]{0,3}", ".{0,40}"],
            prop_oneof![Just("text/plain".to_owned()), "[xy]{0,3}"],
        )
            .prop_map(|(value, mime)| IoValue::new(value, &mime))
    }

    prop_compose! {
        fn turn()(
            (start, end) in (0..8u64, 0..8u64),
            trace_id in prop_oneof![Just([0u8; 16]), Just([1u8; 16]), any::<[u8; 16]>()],
            input in proptest::option::of(io()),
            output in proptest::option::of(io()),
            status in prop_oneof![Just(TraceStatus::Ok), Just(TraceStatus::Error)],
            user in proptest::option::of(
                (0..4u64, prop_oneof![Just([0u8; 8]), any::<[u8; 8]>()], "[ab]{0,3}"),
            ),
        ) -> (u64, [u8; 16], TurnBody) {
            let body = TurnBody {
                end,
                head_span_id: [0; 8],
                root_missing: false,
                input,
                output,
                tokens: Tokens::default(),
                status,
                num_spans: 1,
                conflicts: Vec::new(),
                user: user.map(|(start, span_id, value)| Earliest { start, span_id, value }),
                more_conflicts: false,
            };
            (start, trace_id, body)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
            ..ProptestConfig::default()
        })]

        /// Adding turns in place of copies gives the summary the copies
        /// gave, turn after turn (ties and repeated traces included).
        #[test]
        fn adding_turns_in_place_is_adding_copies(
            turns in proptest::collection::vec(turn(), 0..12),
        ) {
            let mut got = SessionState::new(1, "p", "s");
            let mut want = got.clone();
            for (start, trace_id, body) in &turns {
                let t = TurnRef { start: *start, trace_id: *trace_id, body };
                got.add(t);
                add_simply(&mut want, t);
                prop_assert_eq!(&got, &want);
            }
        }
    }
}

#[cfg(test)]
mod hint_tests {
    use super::*;

    #[test]
    fn stored_num_traces_reads_the_count() {
        let mut s = SessionState::new(300, "pröject", "session-1");
        s.num_traces = 70_000;
        let bytes = crate::codec::encode_value(&s);
        assert_eq!(SessionState::stored_num_traces(&bytes), Some(70_000));
        assert_eq!(SessionState::stored_num_traces(&bytes[..5]), None);
        assert_eq!(SessionState::stored_num_traces(&[]), None);
    }
}

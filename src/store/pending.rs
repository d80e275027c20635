//! Appended spans waiting to be indexed.
//!
//! `append` writes a batch to the log and keeps it here instead of
//! updating the indexes at once; the indexes take the pending spans in one
//! write transaction when they reach [`StoreOptions::index_batch_bytes`]
//! or [`StoreOptions::index_batch_spans`] (from 1 MiB on a thread of their
//! own, see `store::indexing`), at a checkpoint, before any write that needs the indexes current
//! (deletes, compaction, verify), and before any read (contract rule 8:
//! when `append` returns, every query sees the batch). One large
//! transaction groups many batches' spans by trace and session, so each
//! touched trace record, turn, session summary and sort key is written
//! once per group instead of once per batch, in key order; that is what
//! bounds ingest (see BENCHMARKS.md, "What bounds each target not met").
//!
//! The log is written before a span is kept here, so a crash loses
//! nothing: a reopen replays the log from the last checkpoint.
//!
//! [`StoreOptions::index_batch_bytes`]: crate::StoreOptions::index_batch_bytes
//! [`StoreOptions::index_batch_spans`]: crate::StoreOptions::index_batch_spans

use crate::hashing::{FastMap, FastSet};

use crate::index::NewRecords;
use crate::index::trace::NewRecord;

/// A set of span ids. Ids come from clients, so the hasher is keyed at
/// random for each set (see `crate::hashing`): ids cannot be chosen to
/// make the set quadratic.
pub(super) type SpanIdSet = FastSet<[u8; 8]>;

/// Spans written to the log since the indexes last took them.
#[derive(Default)]
pub(super) struct Pending {
    records: NewRecords,
    /// For every trace an append touched since the last apply: the ids of
    /// all its stored spans, indexed or pending (idempotency and the spans
    /// per trace limit, without reading the trace record again).
    traces: FastMap<[u8; 16], SpanIdSet>,
    /// Encoded bytes of `records`.
    bytes: usize,
    /// Bytes of text `records` hold: root inputs and outputs, user and
    /// session ids (what a group's memory grows with beyond its count).
    held: usize,
}

/// Spans taken from [`Pending`] to be indexed together, in log order.
pub(super) struct Group {
    records: NewRecords,
}

impl Group {
    /// Gives `with` the group's spans as index records, in log order.
    pub(super) fn with_records<T>(mut self, with: impl FnOnce(&mut NewRecords) -> T) -> T {
        with(&mut self.records)
    }
}

impl Pending {
    /// Encoded bytes waiting.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of text the waiting spans hold in memory (see `held`).
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// The stored span ids of a trace, if an append since the last apply
    /// looked them up.
    pub(super) fn trace_mut(&mut self, trace_id: &[u8; 16]) -> Option<&mut SpanIdSet> {
        self.traces.get_mut(trace_id)
    }

    /// Remembers the stored span ids of a trace (read from the index).
    pub(super) fn insert_trace(&mut self, trace_id: [u8; 16], ids: SpanIdSet) -> &mut SpanIdSet {
        self.traces.entry(trace_id).or_insert(ids)
    }

    /// Forgets span ids an append added but did not store (its log write
    /// failed).
    pub(super) fn forget_spans(&mut self, spans: impl Iterator<Item = ([u8; 16], [u8; 8])>) {
        for (trace, span) in spans {
            if let Some(ids) = self.traces.get_mut(&trace) {
                ids.remove(&span);
            }
        }
    }

    /// The place of `project` among the waiting spans' project names
    /// (added when new): the `project` of a record [`Self::push_all`]
    /// takes.
    pub(super) fn project_at(&mut self, project: &str) -> usize {
        self.records.project_at(project)
    }

    /// Keeps spans written to the log (`encoded` bytes in all), moving
    /// all of `records` (left empty); each names its project by its place
    /// from [`Self::project_at`].
    pub(super) fn push_all(&mut self, records: &mut Vec<NewRecord>, encoded: usize) {
        self.held += records
            .iter()
            .map(|r| r.span.text_bytes() + r.session_id.as_ref().map_or(0, String::len))
            .sum::<usize>();
        self.records.append(records);
        self.bytes += encoded;
    }

    /// Takes the waiting spans, leaving nothing pending, with the stored
    /// span ids of the traces they touched (which appends made while the
    /// group is indexed still need).
    pub(super) fn take(&mut self) -> (Group, FastMap<[u8; 16], SpanIdSet>) {
        // The next group gets room for as many spans as this one held
        // (groups of a steady ingest are alike), not a vector grown by
        // doubling from empty.
        let room = self.records.len();
        let group = Group {
            records: std::mem::replace(&mut self.records, NewRecords::with_capacity(room)),
        };
        // Room for as many traces as this group touched, likewise.
        let mut traces = FastMap::default();
        traces.reserve(self.traces.len());
        let traces = std::mem::replace(&mut self.traces, traces);
        self.clear();
        (group, traces)
    }

    /// Number of spans waiting.
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no span is waiting.
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Forgets everything (after the indexes took it).
    pub(super) fn clear(&mut self) {
        self.records.clear();
        self.traces.clear();
        self.bytes = 0;
        self.held = 0;
    }
}

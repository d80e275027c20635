//! What checking a span's ids costs in memory: a session id or `user.id`
//! sent as a huge array is measured against `MAX_ID_BYTES` as it is
//! written out, not written out whole first (a 12,000,000-element boolean
//! array comes to 72 MB of text, and cost that much before it was
//! refused).
//!
//! Measured by a counting global allocator: the most bytes live at once
//! during an `append`, above what was live when it began. One test in
//! this binary, so that nothing else allocates beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use span_sessions::{
    AttributeValue, Durability, MAX_ID_BYTES, ResourceSpans, SessionStore, Span, SpanId, TraceId,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counters are
// only arithmetic beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as the new block before the old one is freed, which is
        // what a moving reallocation holds at its peak.
        grew(new_size);
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Appends `span` and returns the report and the most bytes the append
/// held at once beyond what was live before it.
fn append_measured(s: &SessionStore, span: Span) -> (span_sessions::AppendReport, usize) {
    let batch = [ResourceSpans::for_project("p", vec![span])];
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let r = s.append(&batch).unwrap();
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    (r, held)
}

#[test]
fn ids_sent_as_huge_arrays_are_refused_without_being_written_out() {
    let dir = tempfile::tempdir().unwrap();
    let s = SessionStore::options()
        .durability(Durability::Buffered)
        .open(dir.path())
        .unwrap();
    let huge = || AttributeValue::BoolArray(vec![true; 12_000_000]);
    let span = |t: u8| Span::new(TraceId([t; 16]), SpanId([1; 8]), None, "agent", 1, 2);
    // Each is refused for `what`, holding under 1 MiB.
    let refused = |span: Span, what: &str| {
        let (r, held) = append_measured(&s, span);
        assert_eq!(r.accepted, 0);
        let reason = format!("{what} comes to more than {MAX_ID_BYTES} bytes");
        assert!(r.rejected[0].reason.contains(&reason), "{:?}", r.rejected);
        eprintln!("the append held {held} bytes at most");
        assert!(held < 1 << 20, "the append held {held} bytes");
    };
    refused(span(1).with_attribute("session.id", huge()), "session id");
    refused(
        span(2)
            .with_attribute("session.id", "s")
            .with_attribute("user.id", huge()),
        "user.id",
    );
    // A `metadata` field is written out only as far as the limit: two
    // million `1e15`s (10 MB) come to 40 MB as Python writes them.
    let floats = format!(r#"{{"session_id": [{}1e15]}}"#, "1e15,".repeat(2_000_000));
    refused(
        span(5).with_attribute("metadata", floats.as_str()),
        "session id",
    );

    // A source after the one that gives the id is not looked at: the huge
    // conversation id is never the session id, so the span is stored.
    let r = s
        .append(&[ResourceSpans::for_project(
            "p",
            vec![
                span(3)
                    .with_attribute("session.id", "s")
                    .with_attribute("gen_ai.conversation.id", huge()),
            ],
        )])
        .unwrap();
    assert_eq!(r.accepted, 1, "{:?}", r.rejected);
    assert_eq!(s.session_history("p", "s").unwrap().len(), 1);

    // An array just within the limit as text is an id like any other.
    let ids = AttributeValue::IntArray(vec![7; MAX_ID_BYTES / 3]);
    let text = ids.to_string();
    assert!(text.len() <= MAX_ID_BYTES, "{}", text.len());
    let r = s
        .append(&[ResourceSpans::for_project(
            "p",
            vec![span(4).with_attribute("session.id", ids)],
        )])
        .unwrap();
    assert_eq!(r.accepted, 1, "{:?}", r.rejected);
    assert_eq!(s.session_history("p", &text).unwrap().len(), 1);
    assert!(s.verify().unwrap().is_ok());
}

//! Helpers shared by the behavioural tests: id builders, paging loops and a
//! snapshot of every answer a store gives, for order-independence checks.
#![allow(dead_code)]

use span_sessions::{
    ErrorKind, SessionFilter, SessionQuery, SessionSort, SessionStore, SessionSummary, SpanId,
    Trace, TraceId, Turn,
};

/// Every sort key of the session list.
pub const SORTS: [SessionSort; 5] = [
    SessionSort::StartTime,
    SessionSort::EndTime,
    SessionSort::NumTraces,
    SessionSort::TotalTokens,
    SessionSort::Duration,
];

/// The ids of a project's sessions whose texts contain `term` (the first
/// 1,000, in the list's default order).
pub fn search(store: &SessionStore, project: &str, term: &str) -> Vec<String> {
    let q = SessionQuery {
        limit: 1000,
        filter: SessionFilter {
            search: Some(term.into()),
            ..SessionFilter::default()
        },
        ..SessionQuery::default()
    };
    let page = store.sessions(project, &q).unwrap();
    page.items.into_iter().map(|s| s.session_id).collect()
}

/// A trace id whose last eight bytes are `n` (big endian), so ids order like numbers.
pub fn tid(n: u64) -> TraceId {
    let mut b = [0u8; 16];
    b[8..].copy_from_slice(&n.to_be_bytes());
    TraceId(b)
}

/// A span id holding `n` big endian, so ids order like numbers.
pub fn sid(n: u64) -> SpanId {
    SpanId(n.to_be_bytes())
}

/// Reads the whole session list page by page with `limit` items per page,
/// checking that no page is larger than asked and that every cursor leads on.
pub fn list_all(
    store: &SessionStore,
    project: &str,
    sort: SessionSort,
    descending: bool,
    limit: usize,
) -> Vec<SessionSummary> {
    let mut out = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let q = SessionQuery {
            sort,
            descending,
            limit,
            cursor: cursor.clone(),
            ..SessionQuery::default()
        };
        let page = store
            .sessions(project, &q)
            .unwrap_or_else(|e| panic!("sessions({project}, {q:?}) failed: {e}"));
        assert!(
            page.items.len() <= limit.max(1),
            "page of {} items for limit {limit}",
            page.items.len()
        );
        if page.next_cursor.is_some() {
            assert!(!page.items.is_empty(), "empty page with a next cursor");
        }
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("session list paging does not terminate");
}

/// Reads a session's history page by page.
pub fn history_all(store: &SessionStore, project: &str, session: &str, limit: usize) -> Vec<Turn> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = store
            .session_history_page(project, session, limit, cursor.as_deref())
            .unwrap_or_else(|e| panic!("session_history_page({project}, {session}) failed: {e}"));
        assert!(page.items.len() <= limit.max(1));
        if page.next_cursor.is_some() {
            assert!(
                !page.items.is_empty(),
                "empty history page with a next cursor"
            );
        }
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("history paging does not terminate");
}

/// Every answer a store gives about a set of projects, sessions and traces.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub projects: Vec<String>,
    /// (project, sort, descending, full list)
    pub lists: Vec<(String, SessionSort, bool, Vec<SessionSummary>)>,
    /// (project, session id, summary, history)
    pub sessions: Vec<(String, String, Option<SessionSummary>, Vec<Turn>)>,
    pub traces: Vec<(TraceId, Option<Trace>)>,
}

/// Takes a snapshot of `store`: the project list, every project's session
/// list in every order, every listed session (plus `extra_sessions`, which
/// may have vanished) and the given traces.
pub fn snapshot(
    store: &SessionStore,
    trace_ids: &[TraceId],
    extra_projects: &[&str],
    extra_sessions: &[(&str, &str)],
) -> Snapshot {
    let projects = store.projects().unwrap();
    let mut project_names: Vec<String> = projects.clone();
    project_names.extend(extra_projects.iter().map(|p| (*p).to_owned()));
    project_names.extend(extra_sessions.iter().map(|(p, _)| (*p).to_owned()));
    project_names.sort();
    project_names.dedup();
    let mut lists = Vec::new();
    let mut keys: Vec<(String, String)> = extra_sessions
        .iter()
        .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
        .collect();
    for p in &project_names {
        for sort in SORTS {
            for desc in [false, true] {
                let l = list_all(store, p, sort, desc, 1000);
                keys.extend(l.iter().map(|s| (s.project.clone(), s.session_id.clone())));
                lists.push((p.clone(), sort, desc, l));
            }
        }
    }
    keys.sort();
    keys.dedup();
    let sessions = keys
        .into_iter()
        .map(|(p, s)| {
            let summary = store.session(&p, &s).unwrap();
            let history = store.session_history(&p, &s).unwrap();
            (p, s, summary, history)
        })
        .collect();
    let traces = trace_ids
        .iter()
        .map(|t| (*t, store.trace(*t).unwrap()))
        .collect();
    Snapshot {
        projects,
        lists,
        sessions,
        traces,
    }
}

/// Asserts that `r` failed with `ErrorKind::InvalidInput`.
pub fn assert_invalid_input<T: std::fmt::Debug>(r: span_sessions::Result<T>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}"),
        Ok(v) => panic!("{what}: expected InvalidInput, got Ok({v:?})"),
    }
}

/// Copies a directory tree (a store as a crash at this moment leaves it).
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file of a directory, recursively, in bytes (the lock file too).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += entry.metadata().unwrap().len();
        }
    }
    total
}

/// The store's log segment files, oldest first.
pub fn segments(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

/// A gate the test closes and opens; threads calling `pass` wait while it
/// is closed.
#[derive(Debug, Default)]
pub struct Gate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    /// Threads waiting in `pass` now.
    waiting: usize,
}

impl Gate {
    pub fn set_closed(&self, closed: bool) {
        self.state.lock().unwrap().closed = closed;
        self.changed.notify_all();
    }

    pub fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.waiting += 1;
        self.changed.notify_all();
        while s.closed {
            s = self.changed.wait(s).unwrap();
        }
        s.waiting -= 1;
    }

    /// Waits until a thread waits at the gate, for `limit` at most; false
    /// if none came.
    pub fn someone_waits(&self, limit: std::time::Duration) -> bool {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .changed
            .wait_timeout_while(s, limit, |s| s.waiting == 0)
            .unwrap();
        s.waiting > 0
    }
}

/// The operating system's file system, except that fsyncs of the files
/// whose names end in `files` (`"index.redb"`, or `".seg"` for the log's
/// segments) wait at `gate` (with `indexing_thread_only`, only those made
/// by the store's indexing thread): a checkpoint, or an append's fsync,
/// then keeps the thread that takes it busy for as long as the test wants.
#[derive(Debug)]
pub struct GatedSync {
    pub gate: std::sync::Arc<Gate>,
    pub indexing_thread_only: bool,
    pub files: &'static str,
}

#[derive(Debug)]
struct GatedFile {
    inner: std::sync::Arc<dyn span_sessions::testing::FileHandle>,
    gate: Option<std::sync::Arc<Gate>>,
    indexing_thread_only: bool,
}

impl span_sessions::testing::FileHandle for GatedFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }
    fn write_direct_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_direct_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let indexing = std::thread::current().name() == Some("span-sessions-index");
        if let Some(gate) = &self.gate
            && (indexing || !self.indexing_thread_only)
        {
            gate.pass();
        }
        self.inner.sync_data()
    }
    fn map(&self) -> std::io::Result<memmap2::Mmap> {
        self.inner.map()
    }
}

impl span_sessions::testing::FileSystem for GatedSync {
    fn open(
        &self,
        path: &std::path::Path,
        mode: span_sessions::testing::OpenMode,
    ) -> std::io::Result<std::sync::Arc<dyn span_sessions::testing::FileHandle>> {
        let inner = span_sessions::testing::OsFileSystem.open(path, mode)?;
        let gated = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(self.files));
        Ok(std::sync::Arc::new(GatedFile {
            inner,
            gate: gated.then(|| std::sync::Arc::clone(&self.gate)),
            indexing_thread_only: self.indexing_thread_only,
        }))
    }
    fn create_dir_all(&self, dir: &std::path::Path) -> std::io::Result<()> {
        span_sessions::testing::OsFileSystem.create_dir_all(dir)
    }
    fn is_dir(&self, dir: &std::path::Path) -> bool {
        span_sessions::testing::OsFileSystem.is_dir(dir)
    }
    fn list_dir(
        &self,
        dir: &std::path::Path,
    ) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
        span_sessions::testing::OsFileSystem.list_dir(dir)
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        span_sessions::testing::OsFileSystem.sync_dir(dir)
    }
    fn remove_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        span_sessions::testing::OsFileSystem.remove_file(path)
    }
}

/// Text case-folded as search compares it: each character lowercased on
/// its own, final sigma as sigma (what a model of search applies to terms
/// and texts alike).
pub fn fold(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c == 'ς' {
                'σ'.to_lowercase()
            } else {
                c.to_lowercase()
            }
        })
        .collect()
}

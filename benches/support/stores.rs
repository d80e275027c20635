//! Stores built once and cached on disk, so that reruns of the query
//! benches skip the build.
//!
//! Each fixture lives in `<target>/bench-stores/<name>-<key>/`, where
//! `<target>` is `$CARGO_TARGET_DIR` or this package's `target/`, and
//! `<key>` is a hash of everything that decides its contents (the
//! generator configs and [`BUILD_VERSION`]). A `COMPLETE` file is written
//! last; a directory without it, or whose stores fail a quick check on
//! open (for example because the on-disk format changed), is deleted and
//! built again. Delete `target/bench-stores/` to force a rebuild.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use span_sessions::workload::{Spread, Workload, WorkloadConfig, encoded_bytes};
use span_sessions::{Durability, ResourceSpans, SessionStore, TraceId};

use super::sqlite::{self, Synchronous};

/// Bump when the way fixtures are built changes (2: index format 5, trace
/// records keyed by home).
const BUILD_VERSION: u32 = 2;

/// Spans are appended in batches of this size when a fixture is built.
const BUILD_BATCH: usize = 1000;

/// Where cached stores live.
pub fn cache_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench-stores")
}

/// FNV-1a, 64 bits: a stable hash of a fixture's description.
fn key(description: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in description.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn read_complete(dir: &Path) -> Option<Vec<(String, String)>> {
    let text = fs::read_to_string(dir.join("COMPLETE")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

fn field(fields: &[(String, String)], name: &str) -> Option<u64> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Copies a directory tree (regular files only).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create dir");
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let ty = entry.file_type().expect("file type");
        let dest = to.join(entry.file_name());
        if ty.is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if ty.is_file() {
            fs::copy(entry.path(), &dest).expect("copy file");
        }
    }
}

/// Total size of the regular files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// A session of a known number of turns in the query store.
#[derive(Debug, Clone)]
pub struct Probe {
    pub turns: usize,
    pub project: String,
    pub session_id: String,
}

/// The query store: span-sessions and SQLite holding the same spans.
pub struct QueryFixture {
    pub store: SessionStore,
    pub sqlite: Connection,
    pub dir: PathBuf,
    pub spans: u64,
    pub sessions: u64,
    /// Sessions of exactly 10, 100 and 10,000 turns, in project-0.
    pub probes: Vec<Probe>,
    /// The largest trace of the 100-turn session, and its span count.
    pub sample_trace: (TraceId, usize),
    /// A ticket number mentioned in a single turn (a rare search term).
    pub rare_term: String,
}

/// The bulk of the query store: `sessions` realistic sessions of ~500 B
/// spans in two projects.
pub fn bulk_config(sessions: usize) -> WorkloadConfig {
    WorkloadConfig {
        projects: 2,
        ..WorkloadConfig::realistic(20_260_101, sessions, 500)
    }
}

/// One session of exactly `turns` turns, in project-0.
pub fn probe_config(turns: usize) -> WorkloadConfig {
    WorkloadConfig {
        projects: 1,
        sessions: 1,
        turns: (turns, turns),
        turns_spread: Spread::Uniform,
        concurrent_sessions: 1,
        // Start after the bulk's first sessions, so that no probe session
        // id can equal a bulk one (`sess-000000-...` differs by suffix anyway).
        ..WorkloadConfig::realistic(7_000 + turns as u64, 1, 500)
    }
}

const PROBE_TURNS: [usize; 3] = [10, 100, 10_000];

fn probes() -> (
    Vec<Probe>,
    Vec<Vec<ResourceSpans>>,
    (TraceId, usize),
    String,
) {
    let mut probes = Vec::new();
    let mut batches = Vec::new();
    let mut sample = (TraceId([0; 16]), 0);
    let mut rare = None;
    for turns in PROBE_TURNS {
        let cfg = probe_config(turns);
        let mut traces: Vec<_> = Workload::new(cfg.clone()).collect();
        let first = traces.first().expect("a probe session has turns");
        probes.push(Probe {
            turns,
            project: first.project.clone(),
            session_id: first.session_id.clone(),
        });
        let mut sizes = std::collections::HashMap::<TraceId, usize>::new();
        for t in &traces {
            for s in &t.spans {
                *sizes.entry(s.trace_id).or_default() += 1;
                if rare.is_none()
                    && let Some(v) = s.attribute(span_sessions::keys::INPUT_VALUE)
                    && let Some(text) = v.as_str()
                    && let Some(at) = text.find("T-")
                {
                    rare = Some(text[at..at + 8].to_owned());
                }
            }
        }
        if turns == 100 {
            let (id, n) = sizes
                .into_iter()
                .max_by_key(|(id, n)| (*n, *id))
                .expect("traces");
            sample = (id, n);
        }
        let spans: Vec<_> = traces
            .drain(..)
            .flat_map(|t| {
                let p = t.project;
                t.spans.into_iter().map(move |s| (p.clone(), s))
            })
            .collect();
        for chunk in spans.chunks(BUILD_BATCH) {
            let mut groups: Vec<ResourceSpans> = Vec::new();
            for (p, s) in chunk {
                match groups.iter_mut().find(|g| g.project() == p) {
                    Some(g) => g.spans.push(s.clone()),
                    None => groups.push(ResourceSpans::for_project(p.as_str(), vec![s.clone()])),
                }
            }
            batches.push(groups);
        }
    }
    let rare = rare.unwrap_or_else(|| "T-000000".to_owned());
    (probes, batches, sample, rare)
}

/// Opens the cached query store of `sessions` bulk sessions, building it
/// first if needed (about 1.2 million spans for 100,000 sessions).
pub fn query_fixture(sessions: usize) -> QueryFixture {
    let bulk = bulk_config(sessions);
    let probe_cfgs: Vec<_> = PROBE_TURNS.iter().map(|t| probe_config(*t)).collect();
    let description = format!("{BUILD_VERSION}|{bulk:?}|{probe_cfgs:?}");
    let dir = cache_root().join(format!("query-{}", key(&description)));
    let (probes, probe_batches, sample_trace, rare_term) = probes();

    if let Some(fields) = read_complete(&dir) {
        match open_query_fixture(&dir, &fields, &probes, sample_trace) {
            Some((store, sqlite)) => {
                eprintln!("query store: reusing {}", dir.display());
                return QueryFixture {
                    store,
                    sqlite,
                    spans: field(&fields, "spans").unwrap_or(0),
                    sessions: field(&fields, "sessions").unwrap_or(0),
                    dir,
                    probes,
                    sample_trace,
                    rare_term,
                };
            }
            None => eprintln!(
                "query store: {} failed its check, rebuilding",
                dir.display()
            ),
        }
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove stale fixture");
    }
    fs::create_dir_all(&dir).expect("create fixture dir");
    eprintln!(
        "query store: building {} ({sessions} sessions)...",
        dir.display()
    );
    let started = std::time::Instant::now();
    let store = SessionStore::options()
        .durability(Durability::Buffered)
        .open(dir.join("span-sessions"))
        .expect("open store");
    let conn = sqlite::open(&dir.join("sqlite.db"), Synchronous::Normal);
    let mut spans = 0u64;
    let mut bytes = 0u64;
    let mut session_ids = std::collections::HashSet::new();
    let bulk_batches = Workload::new(bulk).batches(BUILD_BATCH);
    for batch in bulk_batches.chain(probe_batches) {
        for rs in &batch {
            for s in &rs.spans {
                if let Some(id) = s.attribute(span_sessions::keys::SESSION_ID)
                    && let Some(id) = id.as_str()
                {
                    session_ids.insert((rs.project().to_owned(), id.to_owned()));
                }
            }
        }
        let r = store.append(&batch).expect("append");
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
        let n = sqlite::append(&conn, &batch);
        assert_eq!(n, r.accepted);
        spans += r.accepted as u64;
        bytes += encoded_bytes(&batch);
    }
    store.sync().expect("sync store");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    drop(conn);
    fs::write(
        dir.join("COMPLETE"),
        format!(
            "spans={spans}\nsessions={}\nspan_bytes={bytes}\nbuild_seconds={}\n",
            session_ids.len(),
            started.elapsed().as_secs()
        ),
    )
    .expect("write COMPLETE");
    eprintln!(
        "query store: built {spans} spans in {:.0?}",
        started.elapsed()
    );
    // Keep the store that built the fixture open: reopening it is what
    // the next run checks.
    let sqlite = sqlite::open(&dir.join("sqlite.db"), Synchronous::Normal);
    QueryFixture {
        store,
        sqlite,
        spans,
        sessions: session_ids.len() as u64,
        dir,
        probes,
        sample_trace,
        rare_term,
    }
}

/// Opens a built fixture and checks that both stores hold what they should.
fn open_query_fixture(
    dir: &Path,
    fields: &[(String, String)],
    probes: &[Probe],
    sample_trace: (TraceId, usize),
) -> Option<(SessionStore, Connection)> {
    let store = SessionStore::open(dir.join("span-sessions")).ok()?;
    for p in probes {
        let s = store.session(&p.project, &p.session_id).ok()??;
        if s.num_traces != p.turns as u64 {
            return None;
        }
    }
    let trace = store.trace(sample_trace.0).ok()??;
    if trace.spans.len() != sample_trace.1 {
        return None;
    }
    let conn = sqlite::open(&dir.join("sqlite.db"), Synchronous::Normal);
    if Some(sqlite::count(&conn)) != field(fields, "spans") {
        return None;
    }
    Some((store, conn))
}

/// A store that crashed with `log_bytes` of log past its last checkpoint,
/// and SQLite that crashed with the same spans in its WAL (automatic
/// checkpoints off), ready to be copied and reopened.
pub struct CrashedTemplate {
    pub dir: PathBuf,
    pub spans: u64,
    /// Size of the span-sessions log on disk (all of it past the checkpoint).
    pub log_bytes: u64,
    /// Size of SQLite's WAL.
    pub wal_bytes: u64,
}

impl CrashedTemplate {
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("span-sessions")
    }
    pub fn sqlite_dir(&self) -> PathBuf {
        self.dir.join("sqlite")
    }
}

/// Builds (or reuses) the crashed stores for the recovery bench. The
/// crash is simulated by copying the live directories while the stores
/// are open and idle, which leaves on disk exactly what a SIGKILL at that
/// moment would (the copy sees every write the process made, and nothing
/// that was still in its memory).
pub fn crashed_template(log_mib: u64) -> CrashedTemplate {
    let cfg = WorkloadConfig::realistic(99, usize::MAX, 500);
    let description = format!("{BUILD_VERSION}|crash|{log_mib}|{cfg:?}");
    let dir = cache_root().join(format!("recovery-{log_mib}MiB-{}", key(&description)));
    // A template without a log dates from a build whose log was not on disk.
    if let Some(fields) = read_complete(&dir).filter(|f| field(f, "log_bytes") > Some(0)) {
        eprintln!("recovery template: reusing {}", dir.display());
        return CrashedTemplate {
            spans: field(&fields, "spans").unwrap_or(0),
            log_bytes: field(&fields, "log_bytes").unwrap_or(0),
            wal_bytes: field(&fields, "wal_bytes").unwrap_or(0),
            dir,
        };
    }
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove stale template");
    }
    let live = dir.join("live");
    fs::create_dir_all(&live).expect("create template dir");
    eprintln!(
        "recovery template: building {} ({log_mib} MiB)...",
        dir.display()
    );
    let store = SessionStore::options()
        .durability(Durability::Buffered)
        .checkpoint_bytes(u64::MAX)
        .checkpoint_spans(u64::MAX)
        .open(live.join("span-sessions"))
        .expect("open store");
    let conn = sqlite::open(&live.join("sqlite.db"), Synchronous::Normal);
    conn.execute_batch("PRAGMA wal_autocheckpoint=0")
        .expect("pragma");
    let target = log_mib << 20;
    let (mut spans, mut bytes) = (0u64, 0u64);
    for batch in Workload::new(cfg).batches(BUILD_BATCH) {
        if bytes >= target {
            break;
        }
        let r = store.append(&batch).expect("append");
        sqlite::append(&conn, &batch);
        spans += r.accepted as u64;
        bytes += encoded_bytes(&batch);
    }
    // The crash: copy while both are open, then throw the live ones away.
    let crashed = dir.join("span-sessions");
    copy_dir(&live.join("span-sessions"), &crashed);
    let sqlite_dir = dir.join("sqlite");
    fs::create_dir_all(&sqlite_dir).expect("create dir");
    for name in ["sqlite.db", "sqlite.db-wal"] {
        fs::copy(live.join(name), sqlite_dir.join(name)).expect("copy sqlite");
    }
    drop(store);
    drop(conn);
    fs::remove_dir_all(&live).expect("remove live");
    let log_bytes = dir_bytes(&crashed.join("log"));
    let wal_bytes = fs::metadata(sqlite_dir.join("sqlite.db-wal")).map_or(0, |m| m.len());
    fs::write(
        dir.join("COMPLETE"),
        format!(
            "spans={spans}\nspan_bytes={bytes}\nlog_bytes={log_bytes}\nwal_bytes={wal_bytes}\n"
        ),
    )
    .expect("write COMPLETE");
    CrashedTemplate {
        dir,
        spans,
        log_bytes,
        wal_bytes,
    }
}

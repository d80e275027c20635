//! Comparing a live index with one rebuilt from the log (for `verify`).
//!
//! Session numbers are allocated in the order sessions are first seen, and
//! that order depends on how spans were batched, so a rebuild may number
//! sessions differently. Every table is therefore compared in a canonical
//! form where each session number is replaced by the session's name
//! (project number ‖ session id).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use redb::{ReadTransaction, ReadableTable, TableDefinition};

use crate::codec;
use crate::error::Result;
use crate::hashing::FastSet;

use super::search::{self, ChunkSet};
use super::session::SessionState;
use super::trace::{TraceRecord, TurnBody};
use super::{
    PROJECT_SPANS, PROJECT_STATS, PROJECTS, SEARCH, SESSION_IDS, SESSIONS, TRACE_HOMES,
    TRACE_RECORDS, TURNS, decode, decode_session,
};

/// Differences reported per table before the rest are summarised.
const MAX_REPORTED: usize = 10;

type Canon = BTreeMap<Vec<u8>, Vec<u8>>;

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for x in b.iter().take(40) {
        let _ = write!(s, "{x:02x}");
    }
    if b.len() > 40 {
        s.push('…');
    }
    s
}

/// Raw (key, value) bytes of a whole table, in key order.
fn raw<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let table = txn.open_table(def)?;
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        out.push((
            K::as_bytes(&k.value()).as_ref().to_vec(),
            V::as_bytes(&v.value()).as_ref().to_vec(),
        ));
    }
    Ok(out)
}

/// One index snapshot in canonical form.
struct Snapshot {
    names: HashMap<u64, Vec<u8>>,
    tables: Vec<(&'static str, Canon)>,
    /// The postings held, of the live index only: (project, trigram) ->
    /// numbers of named sessions.
    search: HashMap<Vec<u8>, FastSet<u64>>,
    /// The postings the stored turns need, of the rebuilt index only:
    /// (project, trigram) -> session numbers (ascending, no repeats).
    required: BTreeMap<Vec<u8>, Vec<u64>>,
}

/// Which side of the comparison a snapshot is: each needs only one of the
/// search forms (`Snapshot::search` or `Snapshot::required`), and they are
/// by far the costliest part of loading one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Live,
    Expected,
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(..8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(..8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

impl Snapshot {
    fn name(&self, session: u64) -> Vec<u8> {
        self.names
            .get(&session)
            .cloned()
            .unwrap_or_else(|| format!("<unnamed session {session}>").into_bytes())
    }

    fn load(txn: &ReadTransaction, side: Side) -> Result<Snapshot> {
        let mut s = Snapshot {
            names: HashMap::new(),
            tables: Vec::new(),
            search: HashMap::new(),
            required: BTreeMap::new(),
        };
        // Project numbers depend on the order projects first appear in the
        // log (compaction moves frames), so a project is named by its name:
        // name bytes, then 0xff (never inside UTF-8).
        let mut projects: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        // redb stores a `u32` little-endian; keys built by hand are big-endian.
        let le_to_be = |b: &[u8]| -> Vec<u8> {
            let mut a = [0u8; 4];
            if let Some(x) = b.get(..4) {
                a.copy_from_slice(x);
            }
            u32::from_le_bytes(a).to_be_bytes().to_vec()
        };
        for (k, v) in raw(txn, PROJECTS)? {
            let mut name = k;
            name.push(0xff);
            projects.insert(le_to_be(&v), name);
        }
        // Replaces a key's leading 4-byte project number by the project's name.
        let by_project = |k: &[u8]| -> Vec<u8> {
            let (num, rest) = k.split_at(k.len().min(4));
            let mut out = projects
                .get(num)
                .cloned()
                .unwrap_or_else(|| format!("<unnamed project {}>", hex(num)).into_bytes());
            out.extend_from_slice(rest);
            out
        };
        // session_ids: key is the name, value the number (redb stores u64 LE).
        for (k, v) in raw(txn, SESSION_IDS)? {
            s.names.insert(le_u64(&v), by_project(&k));
        }
        let live_sessions: BTreeSet<u64> = raw(txn, SESSIONS)?
            .into_iter()
            .map(|(k, _)| le_u64(&k))
            .collect();
        let names = raw(txn, PROJECTS)?
            .into_iter()
            .map(|(k, _)| (k, Vec::new()))
            .collect();
        s.tables.push(("projects", names));
        // All-zero counters equal no counters: a project whose traces all
        // moved away or were deleted keeps a zero entry, which a rebuild
        // batching the spans differently may never write.
        let zero = codec::encode_value(&super::ProjectCounters::default());
        let stats = raw(txn, PROJECT_STATS)?
            .into_iter()
            .filter(|(_, v)| *v != zero)
            .map(|(k, v)| (by_project(&le_to_be(&k)), v))
            .collect();
        s.tables.push(("project_stats", stats));
        let spans = raw(txn, PROJECT_SPANS)?
            .into_iter()
            .map(|(k, v)| (by_project(&le_to_be(&k)), v))
            .collect();
        s.tables.push(("project_spans", spans));
        let live = raw(txn, super::segments::SEGMENT_LIVE)?
            .into_iter()
            .collect();
        s.tables.push(("segment_live", live));
        let mut sessions = Canon::new();
        for (k, v) in raw(txn, SESSIONS)? {
            let mut state: SessionState = decode_session(&v)?;
            state.project_id = 0;
            sessions.insert(s.name(le_u64(&k)), codec::encode_value(&state));
        }
        s.tables.push(("sessions", sessions));
        // Only names of sessions with traces: an emptied session keeps its
        // number, which a rebuild may never allocate.
        let ids = live_sessions
            .iter()
            .map(|n| (s.name(*n), Vec::new()))
            .collect();
        s.tables.push(("session_ids", ids));
        let mut turns = Canon::new();
        let mut tris = Vec::new();
        let mut key = Vec::new();
        for (k, v) in raw(txn, TURNS)? {
            let session = be_u64(&k);
            let name = s.name(session);
            if side == Side::Expected {
                // The project part of a session's name ends at the 0xff mark.
                let project = name
                    .iter()
                    .position(|b| *b == 0xff)
                    .map_or(&name[..0], |i| &name[..=i]);
                let body: TurnBody = decode("turn", &v)?;
                tris.clear();
                for io in [&body.input, &body.output].into_iter().flatten() {
                    search::trigrams(&search::normalize(&io.value), &mut tris);
                }
                tris.sort_unstable();
                tris.dedup();
                for t in &tris {
                    key.clear();
                    key.extend_from_slice(project);
                    key.extend_from_slice(&t.to_be_bytes());
                    // Turns come in session order: a session is last if
                    // it is there at all.
                    match s.required.get_mut(&key) {
                        Some(sessions) if sessions.last() == Some(&session) => {}
                        Some(sessions) => sessions.push(session),
                        None => {
                            s.required.insert(key.clone(), vec![session]);
                        }
                    }
                }
            }
            let mut key = name;
            key.push(0);
            key.extend_from_slice(k.get(8..).unwrap_or(&[]));
            turns.insert(key, v);
        }
        s.tables.push(("turns", turns));
        let order = super::runs::entries(&txn.open_table(super::runs::SESSION_RUNS)?)?
            .into_iter()
            .map(|(k, v)| (by_project(&k), s.name(v)))
            .collect();
        s.tables.push(("session_order", order));
        // Compared by trace id: a home is the LSN of the first span the
        // index took, which a rebuild after compaction (frames copied to
        // new LSNs) finds elsewhere. A record no home leads to is listed
        // under its home, so that it shows up as a difference.
        let mut records: BTreeMap<u64, Vec<u8>> = raw(txn, TRACE_RECORDS)?
            .into_iter()
            .map(|(k, v)| (le_u64(&k), v))
            .collect();
        let mut traces = Canon::new();
        // The table and its runs alike: where a home is kept is no part of
        // what it says.
        let run_homes = super::home_runs::load(&txn.open_table(super::home_runs::HOME_RUNS)?)?
            .into_iter()
            .map(|(id, home)| (id.to_vec(), home.to_le_bytes().to_vec()));
        for (k, home) in raw(txn, TRACE_HOMES)?.into_iter().chain(run_homes) {
            let Some(v) = records.remove(&le_u64(&home)) else {
                traces.insert(k, b"a home without a record".to_vec());
                continue;
            };
            let mut rec: TraceRecord = super::decode_record(&v)?;
            let filing = rec.filing.take();
            let mut value = codec::encode_value(&rec);
            if let Some(f) = filing {
                value.extend_from_slice(&s.name(f.session));
                value.extend_from_slice(&f.start.to_be_bytes());
            }
            traces.insert(k, value);
        }
        for (home, v) in records {
            let mut key = b"record without a trace id at ".to_vec();
            key.extend_from_slice(&home.to_be_bytes());
            traces.insert(key, v);
        }
        s.tables.push(("traces", traces));
        if side == Side::Expected {
            return Ok(s);
        }
        // The base and its runs alike: a posting's run is no part of what
        // it says.
        let run_postings = raw(txn, super::posting_runs::SEARCH_RUNS)?
            .into_iter()
            .map(|(k, v)| (k.get(8..).unwrap_or(&[]).to_vec(), v));
        for (k, v) in raw(txn, SEARCH)?.into_iter().chain(run_postings) {
            let chunk = u64::from(u32::from_be_bytes(
                k.get(8..12)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .unwrap_or_default(),
            ));
            let sessions = ChunkSet::decode(&v)
                .map(|set| set.sessions(u32::try_from(chunk).unwrap_or(u32::MAX)))
                .unwrap_or_default()
                .into_iter()
                // A deleted session's number has no name and can never
                // be found again: its stale postings are not compared.
                .filter(|n| s.names.contains_key(n));
            s.search
                .entry(by_project(k.get(..8).unwrap_or(&[])))
                .or_default()
                .extend(sessions);
        }
        Ok(s)
    }
}

/// Compares every derived table of `live` with `expected` (rebuilt from
/// the log). Search postings must cover every trigram of the stored turns'
/// texts; they may hold more (they only grow). Returns one line per
/// problem.
pub(crate) fn compare(live: &ReadTransaction, expected: &ReadTransaction) -> Result<Vec<String>> {
    let a = Snapshot::load(live, Side::Live)?;
    let b = Snapshot::load(expected, Side::Expected)?;
    let mut problems = Vec::new();
    for ((name, ta), (_, tb)) in a.tables.iter().zip(&b.tables) {
        let mut found = 0usize;
        let keys: BTreeSet<&Vec<u8>> = ta.keys().chain(tb.keys()).collect();
        for k in keys {
            let msg = match (ta.get(k), tb.get(k)) {
                (Some(va), Some(vb)) if va == vb => continue,
                (Some(_), Some(_)) => format!("value differs at key {}", hex(k)),
                (Some(_), None) => format!("key {} is not derived from the log", hex(k)),
                (None, _) => format!("key {} derived from the log is missing", hex(k)),
            };
            if found < MAX_REPORTED {
                problems.push(format!("{name}: {msg}"));
            }
            found += 1;
        }
        if found > MAX_REPORTED {
            problems.push(format!("{name}: {} more differences", found - MAX_REPORTED));
        }
    }
    let mut missing = 0usize;
    // Required: what the turns' texts need. (Postings of a rebuild are not
    // the reference: they also keep trigrams of texts that a turn showed
    // while its spans arrived in the rebuild's order, which compaction may
    // have changed.)
    // Session numbers differ between the two: a session of `expected` is
    // found in `live` by its name. One without a name in `expected` counts
    // as missing (its stand-in `<unnamed session n>` names no live posting).
    let mut live_numbers: HashMap<&[u8], Vec<u64>> = HashMap::new();
    for (n, name) in &a.names {
        live_numbers.entry(name.as_slice()).or_default().push(*n);
    }
    for (tri, want) in &b.required {
        let have = a.search.get(tri);
        let held = |s: &u64| {
            b.names
                .get(s)
                .and_then(|name| live_numbers.get(name.as_slice()))
                .is_some_and(|ns| ns.iter().any(|n| have.is_some_and(|h| h.contains(n))))
        };
        if !want.iter().all(held) {
            if missing < MAX_REPORTED {
                problems.push(format!(
                    "search: postings of trigram {} are missing",
                    hex(tri)
                ));
            }
            missing += 1;
        }
    }
    Ok(problems)
}

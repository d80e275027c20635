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

use super::search::ChunkSet;
use super::trace::TraceRecord;
use super::{
    PROJECT_STATS, PROJECTS, ProjectCounters, SEARCH, SESSION_IDS, SESSION_ORDER, SESSIONS, TRACES,
    TURNS, decode,
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
    search: BTreeMap<Vec<u8>, BTreeSet<Vec<u8>>>,
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

    fn load(txn: &ReadTransaction) -> Result<Snapshot> {
        let mut s = Snapshot {
            names: HashMap::new(),
            tables: Vec::new(),
            search: BTreeMap::new(),
        };
        // session_ids: key is the name, value the number (redb stores u64 LE).
        for (k, v) in raw(txn, SESSION_IDS)? {
            s.names.insert(le_u64(&v), k);
        }
        let live_sessions: BTreeSet<u64> = raw(txn, SESSIONS)?
            .into_iter()
            .map(|(k, _)| le_u64(&k))
            .collect();
        let exact = |pairs: Vec<(Vec<u8>, Vec<u8>)>| pairs.into_iter().collect::<Canon>();
        s.tables.push(("projects", exact(raw(txn, PROJECTS)?)));
        // A project whose traces all moved to another project keeps a row
        // of zeros, which a replay that sees the spans together never
        // writes; both read back as the same (zero) counters.
        let zero = codec::encode_value(&ProjectCounters::default());
        let stats = raw(txn, PROJECT_STATS)?
            .into_iter()
            .filter(|(_, v)| *v != zero)
            .collect();
        s.tables.push(("project_stats", stats));
        let sessions = raw(txn, SESSIONS)?
            .into_iter()
            .map(|(k, v)| (s.name(le_u64(&k)), v))
            .collect();
        s.tables.push(("sessions", sessions));
        // Only names of sessions with traces: an emptied session keeps its
        // number, which a rebuild may never allocate.
        let ids = live_sessions
            .iter()
            .map(|n| (s.name(*n), Vec::new()))
            .collect();
        s.tables.push(("session_ids", ids));
        let mut turns = Canon::new();
        for (k, v) in raw(txn, TURNS)? {
            let mut key = s.name(be_u64(&k));
            key.push(0);
            key.extend_from_slice(k.get(8..).unwrap_or(&[]));
            turns.insert(key, v);
        }
        s.tables.push(("turns", turns));
        let order = raw(txn, SESSION_ORDER)?
            .into_iter()
            .map(|(k, v)| (k, s.name(le_u64(&v))))
            .collect();
        s.tables.push(("session_order", order));
        let mut traces = Canon::new();
        for (k, v) in raw(txn, TRACES)? {
            let mut rec: TraceRecord = decode("trace record", &v)?;
            let filing = rec.filing.take();
            let mut value = codec::encode_value(&rec);
            if let Some(f) = filing {
                value.extend_from_slice(&s.name(f.session));
                value.extend_from_slice(&f.start.to_be_bytes());
            }
            traces.insert(k, value);
        }
        s.tables.push(("traces", traces));
        for (k, v) in raw(txn, SEARCH)? {
            let chunk = u64::from(u32::from_be_bytes(
                k.get(8..12)
                    .and_then(|b| <[u8; 4]>::try_from(b).ok())
                    .unwrap_or_default(),
            ));
            let names: Vec<Vec<u8>> = ChunkSet::decode(&v)
                .map(|set| set.sessions(u32::try_from(chunk).unwrap_or(u32::MAX)))
                .unwrap_or_default()
                .into_iter()
                .map(|n| s.name(n))
                .collect();
            s.search
                .entry(k.get(..8).unwrap_or(&[]).to_vec())
                .or_default()
                .extend(names);
        }
        Ok(s)
    }
}

/// Compares every derived table of `live` with `expected` (rebuilt from
/// the log). Search postings may hold more in the live index (they only
/// grow), never less. Returns one line per problem.
pub(crate) fn compare(live: &ReadTransaction, expected: &ReadTransaction) -> Result<Vec<String>> {
    let a = Snapshot::load(live)?;
    let b = Snapshot::load(expected)?;
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
    for (tri, want) in &b.search {
        let have = a.search.get(tri);
        if !want.iter().all(|s| have.is_some_and(|h| h.contains(s))) {
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

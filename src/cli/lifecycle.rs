//! `delete`, `retain` and `compact`: forgetting data and reclaiming space.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use span_sessions::{DeleteReport, RetentionPolicy, SessionStore, TraceId};

use super::output::write_json;
use super::read::dir_bytes;
use super::{CliError, CliResult};

/// What to delete, as given on the command line.
pub(crate) enum Target {
    Session { project: String, session: String },
    Trace(String),
    Project(String),
    User(String),
}

#[derive(Serialize)]
struct DeletedJson {
    sessions: u64,
    traces: u64,
    spans: u64,
}

fn print_deleted(what: &str, r: &DeleteReport, json: bool) -> CliResult {
    let mut out = io::stdout().lock();
    if json {
        write_json(
            &mut out,
            &DeletedJson {
                sessions: r.sessions,
                traces: r.traces,
                spans: r.spans,
            },
        )?;
    } else {
        writeln!(
            out,
            "{what}: deleted {} sessions, {} traces, {} spans",
            r.sessions, r.traces, r.spans
        )?;
    }
    Ok(())
}

pub(crate) fn delete(store: &SessionStore, target: Target, json: bool) -> CliResult {
    let (what, report) = match target {
        Target::Session { project, session } => (
            format!("session {session:?} of project {project:?}"),
            store.delete_session(&project, &session)?,
        ),
        Target::Trace(id) => {
            let trace: TraceId = id
                .parse()
                .map_err(|e| CliError(format!("bad trace id {id:?}: {e}")))?;
            (format!("trace {trace}"), store.delete_trace(trace)?)
        }
        Target::Project(project) => (
            format!("project {project:?}"),
            store.delete_project(&project)?,
        ),
        Target::User(user) => (format!("user {user:?}"), store.delete_user(&user)?),
    };
    print_deleted(&what, &report, json)
}

/// Parses an age such as `30d`, `12h`, `90m`, `45s` or `2w` into nanoseconds.
pub(crate) fn parse_age(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("age {s:?} needs a unit: s, m, h, d or w (for example 30d)"))?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("age {s:?} must start with a whole number"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        other => {
            return Err(format!(
                "unknown unit {other:?} in age {s:?}: use s, m, h, d or w"
            ));
        }
    };
    n.checked_mul(unit_secs)
        .and_then(|secs| secs.checked_mul(1_000_000_000))
        .ok_or_else(|| format!("age {s:?} is too large"))
}

pub(crate) fn retain(
    store: &SessionStore,
    project: Option<String>,
    max_age: Option<String>,
    max_sessions: Option<u64>,
    json: bool,
) -> CliResult {
    let max_age_nanos = max_age
        .as_deref()
        .map(parse_age)
        .transpose()
        .map_err(CliError)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| CliError(format!("the system clock is before 1970: {e}")))?;
    let policy = RetentionPolicy {
        now_unix_nano: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
        max_age_nanos,
        max_sessions,
        project: project.clone(),
    };
    let report = store.retain(&policy)?;
    let scope = project.map_or_else(|| "every project".to_owned(), |p| format!("project {p:?}"));
    print_deleted(&format!("retention on {scope}"), &report, json)
}

#[derive(Serialize)]
struct CompactedJson {
    segments_dropped: usize,
    bytes_dropped: u64,
    frames_copied: u64,
    bytes_copied: u64,
    index_compacted: bool,
    disk_bytes_before: u64,
    disk_bytes_after: u64,
}

pub(crate) fn compact(mut store: SessionStore, json: bool) -> CliResult {
    let disk_bytes_before = dir_bytes(store.dir())?;
    let r = store.compact()?;
    let index_compacted = store.compact_index()?;
    // Measured closed: closing takes a checkpoint, which writes to the index.
    let dir = store.dir().to_path_buf();
    store.close()?;
    let out_json = CompactedJson {
        segments_dropped: r.segments_dropped,
        bytes_dropped: r.bytes_dropped,
        frames_copied: r.frames_copied,
        bytes_copied: r.bytes_copied,
        index_compacted,
        disk_bytes_before,
        disk_bytes_after: dir_bytes(&dir)?,
    };
    let mut out = io::stdout().lock();
    if json {
        write_json(&mut out, &out_json)?;
    } else {
        writeln!(
            out,
            "compacted: {} segments ({} bytes) dropped, {} live spans ({} bytes) copied; index file {}; {:.1} MiB -> {:.1} MiB on disk",
            out_json.segments_dropped,
            out_json.bytes_dropped,
            out_json.frames_copied,
            out_json.bytes_copied,
            if index_compacted {
                "compacted"
            } else {
                "already compact"
            },
            mib(disk_bytes_before),
            mib(out_json.disk_bytes_after),
        )?;
    }
    Ok(())
}

#[expect(clippy::cast_precision_loss, reason = "a size to print")]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("30d"), Ok(30 * 86_400 * 1_000_000_000));
        assert_eq!(parse_age("90m"), Ok(90 * 60 * 1_000_000_000));
        assert_eq!(parse_age("1w"), Ok(604_800 * 1_000_000_000));
        assert!(parse_age("30").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("3y").is_err());
        assert!(parse_age("99999999999999d").is_err());
    }
}

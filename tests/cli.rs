//! The command line: every `--json` document parsed back and checked field
//! by field (scripts rely on them), paging, errors, and `ingest`.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod support;

use std::collections::HashSet;
use std::path::Path;

use prost::Message;
use serde_json::Value;
use support::*;

const SESSION_KEYS: [&str; 11] = [
    "project",
    "session_id",
    "num_traces",
    "num_traces_with_error",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "first_input",
    "last_output",
    "user_id",
    "tokens",
    "trace_latency_ms",
];

const TURN_KEYS: [&str; 12] = [
    "trace_id",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "latency_ms",
    "input",
    "output",
    "tokens",
    "status",
    "num_spans",
    "root_missing",
    "conflicting_session_ids",
    "conflicting_session_ids_truncated",
];

const SPAN_KEYS: [&str; 12] = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "status",
    "attributes",
    "events",
    "links",
    "resource",
];

fn demo_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = run(&store, &["demo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("history of travel-agent / trip-planner-7"),
        "{text}"
    );
    (dir, store)
}

/// The demo shows the stand-in turn of a root that has not arrived yet; a
/// second run on the same store, where the root is stored already, says so
/// instead of calling the complete turn a stand-in.
#[test]
fn a_second_demo_on_the_same_store_says_the_spans_are_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let text = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = text(run(&store, &["demo"]));
    assert!(
        first.contains("shows a stand-in turn") && first.contains("(root missing)"),
        "{first}"
    );
    let second = text(run(&store, &["demo"]));
    assert!(
        second.contains("appended 0 spans (7 duplicates"),
        "{second}"
    );
    assert!(second.contains("already holds these spans"), "{second}");
    assert!(
        !second.contains("stand-in") && !second.contains("(root missing)"),
        "{second}"
    );
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_io(v: &Value) {
    if !v.is_null() {
        assert_eq!(keys(v), sorted(&["value", "mime_type"]));
        assert!(v["value"].is_string() && v["mime_type"].is_string());
    }
}

fn check_tokens(v: &Value) {
    assert_eq!(keys(v), sorted(&["prompt", "completion", "total"]));
    assert!(v["prompt"].is_u64() && v["completion"].is_u64() && v["total"].is_u64());
}

#[test]
fn every_read_command_prints_the_documented_json() {
    let (_dir, store) = demo_store();

    let projects = json(&store, &["projects"]);
    assert_eq!(keys(&projects), ["projects"]);
    let names: Vec<&str> = projects["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"support-bot") && names.contains(&"travel-agent"),
        "{names:?}"
    );

    // sessions
    let page = json(&store, &["sessions", "--project", "support-bot"]);
    assert_eq!(keys(&page), sorted(&["sessions", "next_cursor"]));
    assert!(page["next_cursor"].is_null());
    let sessions = page["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(keys(s), sorted(&SESSION_KEYS));
    assert_eq!(s["project"], "support-bot");
    assert_eq!(s["session_id"], "ticket-5521");
    assert_eq!(s["num_traces"], 2);
    assert_eq!(s["num_traces_with_error"], 1);
    assert!(
        s["start_time_unix_nano"].as_u64().unwrap() < s["end_time_unix_nano"].as_u64().unwrap()
    );
    check_io(&s["first_input"]);
    check_io(&s["last_output"]);
    assert_eq!(s["first_input"]["value"], "My order #5521 hasn't arrived.");
    assert_eq!(s["first_input"]["mime_type"], "text/plain");
    assert_eq!(s["user_id"], "alice@example.com");
    check_tokens(&s["tokens"]);
    assert_eq!(keys(&s["trace_latency_ms"]), sorted(&["p50", "p99"]));
    assert_eq!(s["trace_latency_ms"]["p50"], 5000.0);

    // history
    let h = json(
        &store,
        &[
            "history",
            "--project",
            "support-bot",
            "--session",
            "ticket-5521",
        ],
    );
    assert_eq!(
        keys(&h),
        sorted(&["project", "session_id", "turns", "next_cursor"])
    );
    assert_eq!(h["project"], "support-bot");
    assert_eq!(h["session_id"], "ticket-5521");
    assert!(h["next_cursor"].is_null());
    let turns = h["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    for t in turns {
        assert_eq!(keys(t), sorted(&TURN_KEYS));
        assert!(is_hex(t["trace_id"].as_str().unwrap(), 32));
        check_io(&t["input"]);
        check_io(&t["output"]);
        check_tokens(&t["tokens"]);
        assert!(t["latency_ms"].is_f64());
        assert!(t["num_spans"].is_u64());
        assert!(t["root_missing"].is_boolean());
        assert_eq!(t["conflicting_session_ids"], serde_json::json!([]));
        assert_eq!(t["conflicting_session_ids_truncated"], false);
    }
    assert_eq!(turns[0]["status"], "unset");
    assert_eq!(turns[1]["status"], "error");
    assert_eq!(turns[1]["latency_ms"], 5000.0);
    assert!(turns[0]["start_time_unix_nano"].as_u64() < turns[1]["start_time_unix_nano"].as_u64());
    assert_eq!(
        turns[1]["output"]["value"],
        "The carrier shows it out for delivery today before 18:00."
    );

    // trace
    let id = turns[1]["trace_id"].as_str().unwrap();
    let t = json(&store, &["trace", id]);
    assert_eq!(
        keys(&t),
        sorted(&["trace_id", "project", "session_id", "spans"])
    );
    assert_eq!(t["trace_id"], id);
    assert_eq!(t["session_id"], "ticket-5521");
    assert!(t["project"].is_string());
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    for sp in spans {
        assert_eq!(keys(sp), sorted(&SPAN_KEYS));
        assert_eq!(sp["trace_id"], id);
        assert!(is_hex(sp["span_id"].as_str().unwrap(), 16));
        assert_eq!(keys(&sp["status"]), sorted(&["code", "message"]));
        assert!(sp["attributes"].is_object());
        assert!(sp["events"].is_array() && sp["links"].is_array());
        assert!(sp["resource"].is_object());
    }
    assert!(spans[0]["parent_span_id"].is_null());
    assert_eq!(spans[0]["name"], "support-agent");
    assert_eq!(spans[0]["kind"], "unspecified");
    assert_eq!(spans[0]["attributes"]["session.id"], "ticket-5521");
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(spans[1]["status"]["code"], "error");
    assert_eq!(spans[1]["status"]["message"], "carrier API timeout");

    // stats and verify
    let stats = json(&store, &["stats"]);
    assert_eq!(
        keys(&stats),
        sorted(&[
            "store",
            "disk_bytes",
            "log_bytes",
            "index_bytes",
            "segments",
            "projects"
        ])
    );
    assert!(stats["log_bytes"].as_u64().unwrap() > 0);
    assert!(stats["index_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        keys(&stats["segments"][0]),
        sorted(&[
            "path",
            "base_lsn",
            "bytes",
            "sealed",
            "live_bytes",
            "dead_bytes"
        ])
    );
    assert!(stats["disk_bytes"].as_u64().unwrap() > 0);
    let support = stats["projects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["project"] == "support-bot")
        .unwrap();
    assert_eq!(
        keys(support),
        sorted(&[
            "project",
            "sessions",
            "traces",
            "spans",
            "tokens",
            "session_duration_ms"
        ])
    );
    assert_eq!(
        (
            support["sessions"].as_u64(),
            support["traces"].as_u64(),
            support["spans"].as_u64()
        ),
        (Some(1), Some(2), Some(4))
    );
    let verify = json(&store, &["verify"]);
    assert_eq!(
        keys(&verify),
        sorted(&[
            "ok",
            "frames",
            "log_bytes",
            "sessions",
            "traces",
            "spans",
            "problems"
        ])
    );
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["problems"].as_array().unwrap().len(), 0);
    assert!(verify["spans"].as_u64().unwrap() > 1000);
    assert_eq!(verify["frames"], verify["spans"]);

    // Human output is a table.
    let out = run(&store, &["sessions", "--project", "support-bot"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("SESSION") && text.contains("ticket-5521"),
        "{text}"
    );
}

/// The value a sort key orders by, from a session's JSON.
fn sort_value(s: &Value, sort: &str) -> u64 {
    let n = |k: &str| s[k].as_u64().unwrap();
    match sort {
        "start" => n("start_time_unix_nano"),
        "end" => n("end_time_unix_nano"),
        "traces" => n("num_traces"),
        "tokens" => s["tokens"]["total"].as_u64().unwrap(),
        "duration" => n("end_time_unix_nano") - n("start_time_unix_nano"),
        _ => unreachable!(),
    }
}

#[test]
fn session_list_pages_sorts_and_searches() {
    let (_dir, store) = demo_store();
    for sort in ["start", "end", "traces", "tokens", "duration"] {
        for dir in ["--asc", "--desc"] {
            let all = json(
                &store,
                &[
                    "sessions",
                    "--project",
                    "project-0",
                    "--sort",
                    sort,
                    dir,
                    "--limit",
                    "1000",
                ],
            );
            let all: Vec<Value> = all["sessions"].as_array().unwrap().clone();
            assert_eq!(all.len(), 20);
            for w in all.windows(2) {
                let (a, b) = (sort_value(&w[0], sort), sort_value(&w[1], sort));
                assert!(
                    if dir == "--asc" { a <= b } else { a >= b },
                    "{sort} {dir}: {a} then {b}"
                );
            }
            // Pages of 3 add up to the same list, each session once.
            let mut walked = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut args = vec![
                    "sessions",
                    "--project",
                    "project-0",
                    "--sort",
                    sort,
                    dir,
                    "--limit",
                    "3",
                ];
                if let Some(c) = &cursor {
                    args.extend(["--cursor", c.as_str()]);
                }
                let page = json(&store, &args);
                let items = page["sessions"].as_array().unwrap();
                assert!(items.len() <= 3);
                walked.extend(
                    items
                        .iter()
                        .map(|s| s["session_id"].as_str().unwrap().to_owned()),
                );
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            let expected: Vec<String> = all
                .iter()
                .map(|s| s["session_id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(walked, expected, "{sort} {dir}");
        }
    }
    // Descending is the default.
    let default = json(
        &store,
        &["sessions", "--project", "project-0", "--limit", "1000"],
    );
    let desc = json(
        &store,
        &[
            "sessions",
            "--project",
            "project-0",
            "--desc",
            "--limit",
            "1000",
        ],
    );
    assert_eq!(default, desc);

    // --search finds a session by its first input, case-insensitively.
    let first = &default["sessions"][0];
    let input = first["first_input"]["value"].as_str().unwrap().to_owned();
    let word = input
        .split_whitespace()
        .max_by_key(|w| w.len())
        .unwrap()
        .to_uppercase();
    let hits = json(
        &store,
        &[
            "sessions",
            "--project",
            "project-0",
            "--search",
            &word,
            "--limit",
            "1000",
        ],
    );
    let ids: HashSet<&str> = hits["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(first["session_id"].as_str().unwrap()),
        "{word}: {ids:?}"
    );
    let none = json(
        &store,
        &[
            "sessions",
            "--project",
            "project-0",
            "--search",
            "zqxj-never-said",
        ],
    );
    assert_eq!(none["sessions"].as_array().unwrap().len(), 0);
}

#[test]
fn errors_go_to_stderr_with_a_non_zero_exit_code() {
    let (_dir, store) = demo_store();
    let cases: [&[&str]; 7] = [
        &["trace", "not-hex"],
        &["trace", "0123456789abcdef0123456789abcdef"],
        &[
            "history",
            "--project",
            "support-bot",
            "--session",
            "no-such-session",
        ],
        &["sessions", "--project", "project-0", "--cursor", "zz"],
        &["sessions", "--project", "project-0", "--asc", "--desc"],
        &["sessions"],
        &["sessions", "--project", "p", "--limit", "0"],
    ];
    for args in cases {
        let out = run(&store, args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!out.stderr.is_empty(), "{args:?} said nothing on stderr");
    }
    let out = run(
        &store,
        &["--json", "trace", "0123456789abcdef0123456789abcdef"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // Usage errors exit with 2.
    assert_eq!(run(&store, &["sessions"]).status.code(), Some(2));
    assert_eq!(run(&store, &["no-such-command"]).status.code(), Some(2));
}

#[test]
fn the_store_directory_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = dir.path().join("from-env");
    let out = bin()
        .args(["--json", "demo"])
        .env("SPAN_SESSIONS_DIR", &from_env)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["spans_appended"].as_u64().unwrap() > 1000);
    assert!(from_env.join("index.redb").exists());
    // --store wins over the environment.
    let flag = dir.path().join("flag");
    let out = bin()
        .arg("--store")
        .arg(&flag)
        .arg("projects")
        .env("SPAN_SESSIONS_DIR", &from_env)
        .output()
        .unwrap();
    // The flag's directory holds no store: the command says so, naming it.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no store at") && err.contains(&*flag.to_string_lossy()),
        "{err}"
    );
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn json_line(req: &span_sessions::otlp::ExportTraceServiceRequest) -> String {
    serde_json::to_string(req).unwrap()
}

#[test]
fn ingest_reads_every_file_type_from_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = session_request("files", "a", 1, 2);
    write(&data.join("a.pb"), &a.encode_to_vec());
    write(
        &data.join("nested/b.binpb"),
        &session_request("files", "b", 10, 1).encode_to_vec(),
    );
    write(
        &data.join("c.json"),
        serde_json::to_string_pretty(&session_request("files", "c", 20, 3))
            .unwrap()
            .as_bytes(),
    );
    let lines = format!(
        "{}\n\n{}\r\n",
        json_line(&session_request("files", "d", 30, 1)),
        json_line(&a), // a retry of a.pb: duplicates
    );
    write(&data.join("d.JSONL"), lines.as_bytes());
    write(
        &data.join("notes.txt"),
        b"not an OTLP file: skipped in a directory",
    );
    let extra = dir.path().join("e.json");
    write(
        &extra,
        json_line(&session_request("files", "e", 40, 1)).as_bytes(),
    );

    let store = dir.path().join("store");
    let summary = json(
        &store,
        &["ingest", data.to_str().unwrap(), extra.to_str().unwrap()],
    );
    assert_eq!(
        keys(&summary),
        sorted(&[
            "files",
            "requests",
            "failed_requests",
            "spans_accepted",
            "duplicates",
            "spans_rejected",
            "rejections",
            "failures"
        ])
    );
    assert_eq!(summary["files"], 5);
    assert_eq!(summary["requests"], 6);
    assert_eq!(summary["failed_requests"], 0);
    assert_eq!(summary["spans_accepted"], 2 * (2 + 1 + 3 + 1 + 1));
    assert_eq!(summary["duplicates"], 4);
    assert_eq!(summary["spans_rejected"], 0);

    let list = json(
        &store,
        &["sessions", "--project", "files", "--sort", "start", "--asc"],
    );
    let counts: Vec<(String, u64)> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_owned(),
                s["num_traces"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut counts = counts;
    counts.sort();
    assert_eq!(
        counts,
        [
            ("a".into(), 2),
            ("b".into(), 1),
            ("c".into(), 3),
            ("d".into(), 1),
            ("e".into(), 1)
        ]
    );
    // Human summary.
    let out = run(&store, &["ingest", data.join("a.pb").to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
        "ingested 1 file(s), 1 request(s): 0 spans accepted, 4 duplicates, 0 rejected"
    );
}

#[test]
fn ingest_reports_rejected_spans_and_bad_requests_and_stores_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut partial = session_request("mixed", "p", 1, 2);
    partial.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2];
    write(&data.join("1-partial.pb"), &partial.encode_to_vec());
    let pb = session_request("bad-truncated", "x", 50, 2).encode_to_vec();
    write(&data.join("2-truncated.pb"), &pb[..pb.len() - 3]);
    write(&data.join("3-broken.json"), b"{\"resourceSpans\": [}");
    let lines = format!(
        "{}\nnot json\n{}\n",
        json_line(&session_request("mixed", "q", 10, 1)),
        json_line(&session_request("mixed", "r", 20, 1)),
    );
    write(&data.join("4-lines.jsonl"), lines.as_bytes());
    let big = session_request("bad-big", "big", 100, 50).encode_to_vec();
    write(&data.join("5-big.pb"), &big);
    let two = format!(
        "{}\n{}\n",
        json_line(&session_request("bad-two", "t", 200, 1)),
        json_line(&session_request("bad-two", "t", 201, 1))
    );
    write(&data.join("6-two-requests.json"), two.as_bytes());

    let store = dir.path().join("store");
    let limit = (big.len() - 1).to_string();
    let out = run(
        &store,
        &[
            "--json",
            "ingest",
            "--max-request-bytes",
            &limit,
            data.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "bad requests make the run fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("5 request(s) could not be read or decoded"),
        "{stderr}"
    );
    assert!(stderr.contains("4-lines.jsonl:2"), "{stderr}");
    assert!(
        stderr.contains("name a file with one request per line .jsonl"),
        "{stderr}"
    );
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The keys README.md lists under "From files".
    assert_eq!(
        keys(&s),
        sorted(&[
            "files",
            "requests",
            "failed_requests",
            "spans_accepted",
            "duplicates",
            "spans_rejected",
            "rejections",
            "failures"
        ])
    );
    assert_eq!(s["files"], 6);
    assert_eq!(s["requests"], 3);
    assert_eq!(s["failed_requests"], 5);
    assert_eq!(s["spans_accepted"], 3 + 2 + 2);
    assert_eq!(s["spans_rejected"], 1);
    let r = &s["rejections"][0];
    assert_eq!(
        keys(r),
        sorted(&["source", "trace_id", "span_id", "reason"])
    );
    assert!(r["source"].as_str().unwrap().ends_with("1-partial.pb"));
    assert_eq!(r["span_id"], "0102");
    assert_eq!(r["reason"], "span_id is 2 bytes, expected 8");
    let failures = s["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 5);
    for f in failures {
        assert_eq!(keys(f), sorted(&["source", "error"]));
    }
    assert!(failures.iter().any(|f| {
        f["error"]
            .as_str()
            .unwrap()
            .contains("larger than --max-request-bytes")
    }));

    // Only the good requests are there.
    let projects = json(&store, &["projects"]);
    assert_eq!(projects["projects"], serde_json::json!(["mixed"]));
    let list = json(&store, &["sessions", "--project", "mixed"]);
    assert_eq!(list["sessions"].as_array().unwrap().len(), 3);

    // An explicit file of an unknown type is refused before anything is read.
    let txt = dir.path().join("x.txt");
    write(&txt, b"?");
    let out = run(
        &store,
        &[
            "ingest",
            data.join("1-partial.pb").to_str().unwrap(),
            txt.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown file type"));
    assert!(out.stdout.is_empty());
    // So is a path that does not exist, even after a good one.
    let fresh = dir.path().join("fresh");
    let out = run(
        &fresh,
        &[
            "ingest",
            data.join("1-partial.pb").to_str().unwrap(),
            dir.path().join("missing.pb").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.pb"));
    assert!(out.stdout.is_empty());
    // Nothing of the good file was stored: the store was not even made.
    assert!(!fresh.exists());
}

#[test]
fn delete_retain_and_compact_from_the_command_line() {
    let (_dir, store) = demo_store();
    let count = |project: &str| {
        json(
            &store,
            &["sessions", "--project", project, "--limit", "1000"],
        )["sessions"]
            .as_array()
            .unwrap()
            .len()
    };
    // One session.
    let d = json(
        &store,
        &[
            "delete",
            "--project",
            "support-bot",
            "--session",
            "ticket-5521",
        ],
    );
    assert_eq!(keys(&d), sorted(&["sessions", "traces", "spans"]));
    assert_eq!(
        (d["sessions"].as_u64(), d["traces"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(count("support-bot"), 0);
    // One trace of the LangChain session (its turns have trace ids 10.. and 11..).
    let d = json(&store, &["delete", "--trace", &"10".repeat(16)]);
    assert_eq!(
        (d["traces"].as_u64(), d["sessions"].as_u64()),
        (Some(1), Some(0))
    );
    let h = json(
        &store,
        &[
            "history",
            "--project",
            "travel-agent",
            "--session",
            "trip-planner-7",
        ],
    );
    assert_eq!(h["turns"].as_array().unwrap().len(), 1);
    // A whole project.
    let before = count("project-0");
    assert!(before > 0);
    let d = json(&store, &["delete", "--project", "project-0"]);
    assert_eq!(d["sessions"].as_u64(), Some(before as u64));
    assert_eq!(count("project-0"), 0);
    // Retention: keep the newest 2 sessions of each project.
    let d = json(&store, &["retain", "--max-sessions", "2"]);
    assert!(d["sessions"].as_u64().unwrap() > 0);
    assert!(count("project-1") <= 2);
    // Everything demo wrote is from 2026-01-01; 1 day is old enough for all of it.
    json(&store, &["retain", "--max-age", "1d"]);
    assert_eq!(count("project-1"), 0);
    assert_eq!(count("travel-agent"), 0);
    // Compaction reclaims the log; stats show live and dead bytes.
    let before = json(&store, &["stats"]);
    let dead: u64 = before["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dead_bytes"].as_u64().unwrap())
        .sum();
    assert!(dead > 0);
    let c = json(&store, &["compact"]);
    assert_eq!(
        keys(&c),
        sorted(&[
            "segments_dropped",
            "bytes_dropped",
            "frames_copied",
            "bytes_copied",
            "index_compacted",
            "disk_bytes_before",
            "disk_bytes_after"
        ])
    );
    // What the directory holds once the command is done.
    assert_eq!(
        c["disk_bytes_after"].as_u64(),
        Some(common::dir_bytes(&store))
    );
    assert!(c["disk_bytes_after"].as_u64() < c["disk_bytes_before"].as_u64());
    let after = json(&store, &["stats"]);
    assert!(after["log_bytes"].as_u64() < before["log_bytes"].as_u64());
    let verified = json(&store, &["verify"]);
    assert_eq!(verified["ok"], true);
    // Both count the bytes of the segment files (verify gave the log's
    // end, an LSN, which compaction leaves far above them).
    assert_eq!(verified["log_bytes"], after["log_bytes"]);
    // Bad arguments are usage errors.
    for args in [
        vec!["delete"],
        vec!["delete", "--session", "s"],
        vec!["delete", "--trace", "xyz"],
        vec!["retain"],
        vec!["retain", "--max-age", "3y"],
    ] {
        let out = run(&store, &args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// Flips a bit of byte 100 of the first log segment: inside the first
/// frame, past the segment header.
fn damage_first_frame(store: &Path) {
    let segment = common::segments(store)[0].clone();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
}

#[test]
fn verify_says_where_it_stopped_on_a_damaged_frame_and_repair_salvages_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("a.pb");
    write(&file, &session_request("p", "s", 1, 20).encode_to_vec());
    assert!(
        run(&store, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    let ok = run(&store, &["verify"]);
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("checked 40 log frames"));
    damage_first_frame(&store);
    let damaged = run(&store, &["verify"]);
    assert_eq!(damaged.status.code(), Some(1));
    let text = String::from_utf8_lossy(&damaged.stdout);
    assert!(text.starts_with("stopped at a damaged log frame"), "{text}");
    assert!(!text.contains("checked 0 log frames"), "{text}");
    let err = String::from_utf8_lossy(&damaged.stderr);
    assert!(err.contains("`span-sessions repair`"), "{err}");

    // `repair` drops the damaged frame, keeps the other 39 and the
    // original log, rebuilds the indexes and verifies them.
    let repaired = run(&store, &["--json", "repair"]);
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&repaired.stdout).unwrap();
    assert_eq!(
        keys(&r),
        sorted(&[
            "frames_kept",
            "dropped",
            "original_log",
            "index_rebuilt",
            "verify"
        ])
    );
    assert_eq!(r["frames_kept"], 39);
    let dropped = r["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1);
    assert_eq!(
        keys(&dropped[0]),
        sorted(&["segment", "offset", "bytes", "reason"])
    );
    assert!(dropped[0]["offset"].as_u64().unwrap() <= 100);
    let original = std::path::PathBuf::from(r["original_log"].as_str().unwrap());
    assert!(original.is_dir(), "{original:?}");
    assert!(r["index_rebuilt"].as_str().unwrap().contains("salvaged"));
    assert_eq!(r["verify"]["ok"], true);
    assert_eq!(r["verify"]["frames"], 39);
    assert_eq!(r["verify"]["spans"], 39);
    let after = run(&store, &["verify"]);
    assert!(after.status.success());
    assert!(String::from_utf8_lossy(&after.stdout).starts_with("checked 39 log frames"));

    // On a sound store it only rebuilds the indexes: nothing dropped.
    let again = run(&store, &["repair"]);
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        text.starts_with("log intact: 39 frames kept, nothing dropped"),
        "{text}"
    );
    assert!(text.contains("checked 39 log frames"), "{text}");
}

/// A crash that leaves damage in the log past the checkpoint: every
/// command's open refuses the store and names `repair`, which brings it
/// back without the damaged frame.
#[test]
fn a_refused_open_names_repair_which_recovers_the_store() {
    use span_sessions::otlp::{self, IngestOptions};
    let live = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    {
        let s = span_sessions::SessionStore::options()
            .checkpoint_bytes(u64::MAX)
            .open(live.path())
            .unwrap();
        let req = session_request("p", "s", 1, 20);
        otlp::export(&s, req, &IngestOptions::default()).unwrap();
        // Copied while open, as a crash leaves it: no checkpoint covers
        // the 40 frames.
        common::copy_dir(live.path(), crashed.path());
    }
    let store = crashed.path().to_path_buf();
    damage_first_frame(&store);
    let refused = run(&store, &["stats"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("corrupted log frame"), "{err}");
    assert!(err.contains("`span-sessions repair`"), "{err}");
    let repaired = run(&store, &["repair"]);
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    let text = String::from_utf8_lossy(&repaired.stdout);
    assert!(text.starts_with("log salvaged: 39 frames kept"), "{text}");
    assert!(text.contains("checked 39 log frames"), "{text}");
    let stats = json(&store, &["stats"]);
    assert_eq!(stats["projects"][0]["spans"], 39);
}

#[test]
fn commands_on_a_missing_store_fail_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo/store");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), b"not a store").unwrap();
    let trace = "0123456789abcdef0123456789abcdef";
    for store in [&missing, &empty] {
        for args in [
            vec!["projects"],
            vec!["sessions", "--project", "p"],
            vec!["history", "--project", "p", "--session", "s"],
            vec!["trace", trace],
            vec!["stats"],
            vec!["verify"],
            vec!["repair"],
            vec!["delete", "--project", "p"],
            vec!["retain", "--max-age", "1d"],
            vec!["compact"],
            vec!["--json", "stats"],
        ] {
            let out = run(store, &args);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} in {}",
                store.display()
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("no store at"), "{args:?}: {err}");
            assert!(out.stdout.is_empty(), "{args:?}");
        }
    }
    assert!(!dir.path().join("typo").exists());
    let left: Vec<_> = std::fs::read_dir(&empty)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("notes.txt")]);
    // The commands that create a store do not when they fail before
    // storing anything: an input path that is not there, an address that
    // cannot be listened on.
    for args in [
        vec!["ingest", "no-such-file.pb"],
        vec!["ingest", "notes.txt"],
        vec!["serve", "--listen", "not an address"],
    ] {
        let out = run(&missing, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!missing.exists(), "{args:?} created the store");
    }
    // The commands that create a store still do.
    let file = dir.path().join("a.pb");
    write(&file, &session_request("p", "s", 1, 1).encode_to_vec());
    assert!(
        run(&missing, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    assert!(run(&missing, &["projects"]).status.success());
}

#[test]
fn an_unknown_session_or_trace_fails_in_both_forms() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("a.pb");
    write(&file, &session_request("p", "s", 1, 1).encode_to_vec());
    assert!(
        run(&store, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    let unknown_trace = "0123456789abcdef0123456789abcdef";
    for args in [
        vec!["history", "--project", "p", "--session", "nope"],
        vec!["history", "--project", "nope", "--session", "s"],
        vec!["trace", unknown_trace],
    ] {
        for json in [false, true] {
            let mut all = if json { vec!["--json"] } else { vec![] };
            all.extend(args.iter().copied());
            let out = run(&store, &all);
            assert_eq!(out.status.code(), Some(1), "{all:?}");
            assert!(out.stdout.is_empty(), "{all:?}");
            assert!(!out.stderr.is_empty(), "{all:?}");
        }
    }
    let known = run(
        &store,
        &["--json", "history", "--project", "p", "--session", "s"],
    );
    assert!(known.status.success());
}

#[test]
fn span_text_cannot_drive_the_terminal() {
    use support::{span, span_id, string, trace_id};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let esc = "\u{1b}[31mred\u{1b}]0;title\u{7}\u{9b}2J";
    let root = span(
        trace_id(1),
        span_id(1),
        vec![],
        esc,
        10,
        20,
        vec![
            string("session.id", "multi\nline\u{1b}[2J"),
            string("input.value", esc),
            string("output.value", esc),
            string(esc, esc),
        ],
    );
    let file = dir.path().join("a.pb");
    write(&file, &support::request(esc, vec![root]).encode_to_vec());
    assert!(
        run(&store, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    let session = "multi\nline\u{1b}[2J";
    for args in [
        vec!["projects"],
        vec!["sessions", "--project", esc],
        vec!["history", "--project", esc, "--session", session],
        vec!["trace", "ab000000000000000000000000000001"],
        vec!["stats"],
    ] {
        let out = run(&store, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.is_empty(), "{args:?}");
        for c in ['\u{1b}', '\u{7}', '\u{9b}'] {
            assert!(!text.contains(c), "{args:?} printed {c:?}: {text:?}");
        }
        assert!(text.contains("\\u{1b}"), "{args:?}: {text:?}");
        // Every line break is the table's own.
        assert!(!text.contains("multi\n"), "{args:?}: {text:?}");
    }
    // JSON keeps the text as stored (serde escapes it).
    let out = run(
        &store,
        &["--json", "history", "--project", esc, "--session", session],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["turns"][0]["input"]["value"], esc);
}

#[test]
fn trace_json_holds_events_links_and_the_resource() {
    use span_sessions::otlp::proto::tonic::trace::v1::span::{Event, Link};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut root = span(
        trace_id(7),
        span_id(1),
        vec![],
        "agent",
        10,
        20,
        vec![string("session.id", "s")],
    );
    root.events = vec![Event {
        time_unix_nano: 15,
        name: "exception".into(),
        attributes: vec![string("exception.message", "boom")],
        ..Default::default()
    }];
    root.links = vec![Link {
        trace_id: trace_id(8),
        span_id: span_id(2),
        attributes: vec![string("why", "retry of")],
        ..Default::default()
    }];
    let file = dir.path().join("a.pb");
    write(&file, &request("p", vec![root]).encode_to_vec());
    assert!(
        run(&store, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    let t = json(&store, &["trace", "ab000000000000000000000000000007"]);
    assert_eq!(t["project"], "p");
    assert_eq!(t["session_id"], "s");
    let sp = &t["spans"][0];
    assert_eq!(sp["events"][0]["name"], "exception");
    assert_eq!(sp["events"][0]["time_unix_nano"], 15);
    assert_eq!(sp["events"][0]["attributes"]["exception.message"], "boom");
    assert_eq!(
        sp["links"][0]["trace_id"],
        "ab000000000000000000000000000008"
    );
    assert_eq!(sp["links"][0]["attributes"]["why"], "retry of");
    assert_eq!(sp["resource"]["service.name"], "tests");
}

#[test]
fn ingest_and_demo_escape_control_characters_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let data = dir.path().join("data");
    // File names found in a walked directory are data too: one with a
    // rejected span (listed in the summary) and one that does not decode
    // (named on stderr). The project name reaches demo's headers.
    let project = "proj\u{1b}]0;retitled\u{7}";
    let mut partial = session_request(project, "s", 1, 2);
    partial.resource_spans[0].scope_spans[0].spans[0].span_id = vec![1, 2];
    write(&data.join("a\u{1b}[31m.pb"), &partial.encode_to_vec());
    write(&data.join("b\u{1b}[2J.json"), b"{");
    let out = run(&store, &["ingest", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let demo = run(&store, &["demo"]);
    assert!(
        demo.status.success(),
        "{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    for (what, bytes) in [
        ("ingest stdout", &out.stdout),
        ("ingest stderr", &out.stderr),
        ("demo stdout", &demo.stdout),
    ] {
        let text = String::from_utf8_lossy(bytes);
        let raw: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{what} printed {raw:?}: {text:?}");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("a\\u{1b}[31m.pb"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("b\\u{1b}[2J.json"));
    assert!(
        String::from_utf8_lossy(&demo.stdout)
            .contains("project proj\\u{1b}]0;retitled\\u{7}: newest sessions")
    );
}

/// Contract rule 3 from the command line: the ids that lost to a turn's
/// session are in `history --json`.
#[test]
fn history_json_lists_the_conflicting_session_ids() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("conflict.json");
    let span = |id: &str, parent: &str, session: &str| {
        format!(
            r#"{{"traceId":"0123456789abcdef0123456789abcdef","spanId":"{id}",{parent}
            "name":"s","startTimeUnixNano":"1","endTimeUnixNano":"2",
            "attributes":[{{"key":"session.id","value":{{"stringValue":"{session}"}}}}]}}"#
        )
    };
    let body = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{},{},{}]}}]}}]}}"#,
        span("0000000000000001", "", "winner"),
        span(
            "0000000000000002",
            r#""parentSpanId":"0000000000000001","#,
            "b-loser"
        ),
        span(
            "0000000000000003",
            r#""parentSpanId":"0000000000000001","#,
            "a-loser"
        ),
    );
    write(&file, body.as_bytes());
    assert!(
        run(&store, &["ingest", file.to_str().unwrap()])
            .status
            .success()
    );
    let h = json(
        &store,
        &["history", "--project", "default", "--session", "winner"],
    );
    let turn = &h["turns"][0];
    assert_eq!(
        turn["conflicting_session_ids"],
        serde_json::json!(["a-loser", "b-loser"])
    );
    assert_eq!(turn["conflicting_session_ids_truncated"], false);
}

//! Spans from real OpenTelemetry clients: the Python SDK with OpenInference's
//! `using_session` / `using_metadata` sends multi-turn sessions to
//! `span-sessions serve` over OTLP/HTTP and writes OTLP files for `ingest`
//! (`tests/python/otel_sessions.py`); the sessions and histories that come
//! back must be the ones it sent.
//!
//! Needs `python3` with the packages of `tests/python/requirements.txt`.
//! Without them the test prints a notice and passes, unless
//! `SPAN_SESSIONS_REQUIRE_PYTHON=1` (CI sets it), where it fails.
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otel_sessions.py");
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/requirements.txt");

/// `Ok` when python3 can import the clients, else why not.
fn python_clients() -> Result<(), String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, openinference.instrumentation",
        ])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        // The last line of the traceback names the missing module.
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(stderr
            .lines()
            .last()
            .unwrap_or("import failed")
            .trim()
            .to_owned())
    }
}

/// True when the test may run; panics when it must run and cannot.
fn python_available() -> bool {
    match python_clients() {
        Ok(()) => true,
        Err(why) => {
            let required = std::env::var("SPAN_SESSIONS_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "SPAN_SESSIONS_REQUIRE_PYTHON=1 but the Python OpenTelemetry clients are missing \
                 ({why}); install them with: python3 -m pip install -r {REQUIREMENTS}"
            );
            // Written to the process's stderr, past libtest's capture, so the
            // skip shows in a normal `cargo test` run.
            let _ = writeln!(
                std::io::stderr(),
                "NOTICE: skipping the Python OpenTelemetry client test ({why}); \
                 install with: python3 -m pip install -r {REQUIREMENTS}"
            );
            false
        }
    }
}

/// Checks a store's sessions against the script's manifest for one way in.
fn check_sessions(store: &Path, expected: &Value) {
    for (project, sessions) in expected.as_object().unwrap() {
        let list = json(store, &["sessions", "--project", project, "--limit", "100"]);
        let mut listed: Vec<&str> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["session_id"].as_str().unwrap())
            .collect();
        listed.sort_unstable();
        let mut want: Vec<&str> = sessions
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        want.sort_unstable();
        assert_eq!(listed, want, "sessions of {project}");
        for (session_id, exp) in sessions.as_object().unwrap() {
            let summary = list["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["session_id"] == session_id.as_str())
                .unwrap();
            let exp_turns = exp["turns"].as_array().unwrap();
            assert_eq!(summary["num_traces"], exp_turns.len());
            assert_eq!(summary["user_id"], exp["user_id"], "{project}/{session_id}");
            assert_eq!(summary["first_input"]["value"], exp_turns[0]["input"]);
            assert_eq!(
                summary["last_output"]["value"],
                exp_turns[exp_turns.len() - 1]["output"]
            );
            let history = json(
                store,
                &["history", "--project", project, "--session", session_id],
            );
            let turns = history["turns"].as_array().unwrap();
            assert_eq!(turns.len(), exp_turns.len(), "{project}/{session_id}");
            for (got, want) in turns.iter().zip(exp_turns) {
                assert_eq!(got["input"]["value"], want["input"]);
                assert_eq!(got["output"]["value"], want["output"]);
                assert_eq!(got["tokens"]["total"], want["tokens_total"]);
                assert_eq!(got["status"], want["status"]);
                assert_eq!(got["num_spans"], 3);
                assert_eq!(got["root_missing"], false);
            }
        }
    }
}

#[test]
fn python_opentelemetry_clients_over_http_and_files() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let http_store = dir.path().join("http-store");
    let files = dir.path().join("files");

    let receiver = Receiver::start(&http_store, &[]);
    let out = Command::new("python3")
        .arg(SCRIPT)
        .args(["--endpoint", &receiver.url(), "--out"])
        .arg(&files)
        .output()
        .expect("run the Python client script");
    receiver.stop();
    assert!(
        out.status.success(),
        "otel_sessions.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Over HTTP: py-chat has two using_session sessions and one named only
    // by using_metadata's conversation_id; py-other reuses an id.
    let http = &manifest["http"];
    assert_eq!(http["py-chat"].as_object().unwrap().len(), 3);
    assert_eq!(
        http["py-chat"]["py-session-1"]["turns"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    check_sessions(&http_store, http);
    let other = json(
        &http_store,
        &[
            "history",
            "--project",
            "py-other",
            "--session",
            "py-session-1",
        ],
    );
    assert_eq!(
        other["turns"].as_array().unwrap().len(),
        1,
        "same id, other project: other session"
    );

    // The spans as the SDK sent them: ids, parents, typed attributes, context attributes.
    let history = json(
        &http_store,
        &[
            "history",
            "--project",
            "py-chat",
            "--session",
            "py-session-2",
        ],
    );
    let trace_id = history["turns"][1]["trace_id"].as_str().unwrap();
    let trace = json(&http_store, &["trace", trace_id]);
    let spans = trace["spans"].as_array().unwrap();
    let root = spans.iter().find(|s| s["name"] == "agent").unwrap();
    let llm = spans.iter().find(|s| s["name"] == "llm").unwrap();
    let tool = spans.iter().find(|s| s["name"] == "tool").unwrap();
    assert!(root["parent_span_id"].is_null());
    assert_eq!(llm["parent_span_id"], root["span_id"]);
    assert_eq!(tool["status"]["code"], "error");
    assert_eq!(tool["status"]["message"], "tool timed out");
    let a = &root["attributes"];
    assert_eq!(a["test.bool"], true);
    assert_eq!(a["test.int"], 42);
    assert_eq!(a["test.double"], 0.25);
    assert_eq!(a["test.strings"], serde_json::json!(["a", "b"]));
    assert_eq!(a["test.ints"], serde_json::json!([1, 2, 3]));
    assert_eq!(a["otel.scope.name"], "otel-sessions-test");
    for s in spans {
        // using_session / using_user / using_metadata reach every span of the turn.
        assert_eq!(s["attributes"]["session.id"], "py-session-2");
        assert_eq!(s["attributes"]["user.id"], "user-2");
        let metadata: Value =
            serde_json::from_str(s["attributes"]["metadata"].as_str().unwrap()).unwrap();
        assert_eq!(metadata["tier"], "gold");
    }

    // Files: the same spans as protobuf, OTLP/JSON and JSON lines.
    let expected_files = &manifest["files"];
    let span_count = expected_files["span_count"].as_u64().unwrap();
    let mut file_sessions = expected_files.clone();
    file_sessions.as_object_mut().unwrap().remove("span_count");
    let pb_store = dir.path().join("pb-store");
    let summary = json(
        &pb_store,
        &["ingest", files.join("sessions.pb").to_str().unwrap()],
    );
    assert_eq!(summary["spans_accepted"], span_count);
    assert_eq!(summary["spans_rejected"], 0);
    check_sessions(&pb_store, &file_sessions);
    let again = json(
        &pb_store,
        &[
            "ingest",
            files.join("sessions.json").to_str().unwrap(),
            files.join("sessions.jsonl").to_str().unwrap(),
        ],
    );
    assert_eq!(again["requests"], 3);
    assert_eq!(
        again["spans_accepted"], 0,
        "the same spans in JSON are duplicates"
    );
    assert_eq!(again["duplicates"], 2 * span_count);

    for name in ["sessions.json", "sessions.jsonl"] {
        let store = dir.path().join(format!("{name}-store"));
        let summary = json(&store, &["ingest", files.join(name).to_str().unwrap()]);
        assert_eq!(summary["spans_accepted"], span_count, "{name}");
        check_sessions(&store, &file_sessions);
        for session in ["py-file-session", "py-file-meta"] {
            let args = ["history", "--project", "py-files", "--session", session];
            assert_eq!(
                json(&store, &args),
                json(&pb_store, &args),
                "{name}: {session}"
            );
        }
    }
}

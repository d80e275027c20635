//! What decoding an OTLP/JSON body costs in memory: no more than the
//! budget `decode_json` documents (32 times the body, plus 1 MiB), even for
//! nested values with large unknown members, which serde's `flatten`
//! copied once per level of nesting (1.3 GB for a 4 MB body).
//!
//! Measured as the process's peak resident set (`VmHWM`), reset before
//! each body through `/proc/self/clear_refs`; Linux only. One test in this
//! binary, so that nothing else runs beside it.
#![cfg(all(feature = "otlp", target_os = "linux"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use span_sessions::otlp;

/// The `VmHWM` line of `/proc/self/status`, in bytes.
fn peak_resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Resets the peak to the present resident set.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

/// One span whose attribute `a` is `value` wrapped in `depth` array values.
fn nested(depth: usize, value: &str) -> Vec<u8> {
    let mut v = value.to_owned();
    for _ in 0..depth {
        v = format!(r#"{{"arrayValue":{{"values":[{v}]}}}}"#);
    }
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c",
        "spanId":"eee19b7ec3c1b174","attributes":[{{"key":"a","value":{v}}}]}}]}}]}}]}}"#
    )
    .into_bytes()
}

#[test]
fn decoding_json_stays_within_its_budget() {
    let numbers = vec!["1"; 2_000_000].join(",");
    let escaped = "ab\\n".repeat(1_000_000);
    let cases = [
        // An unknown member of two million numbers, nested 20 deep:
        // 1.3 GB through serde's flatten.
        (
            "unknown member, 20 deep",
            nested(20, &format!(r#"{{"stringValue":"x","junk":[{numbers}]}}"#)),
        ),
        (
            "unknown member, flat",
            nested(0, &format!(r#"{{"junk":[{numbers}]}}"#)),
        ),
        // A string with escapes (so serde cannot borrow it), 38 deep:
        // 503 MB for 16 MB, and 4 MB here.
        (
            "escaped string, 38 deep",
            nested(38, &format!(r#"{{"stringValue":"{escaped}"}}"#)),
        ),
    ];
    for (what, body) in cases {
        let budget = 32 * body.len() as u64 + (1 << 20);
        reset_peak();
        let before = peak_resident();
        let request = otlp::decode_json(&body).unwrap();
        let used = peak_resident().saturating_sub(before);
        drop(request);
        assert!(
            used <= budget,
            "{what}: {used} bytes at peak for a body of {} (budget {budget})",
            body.len()
        );
    }
}

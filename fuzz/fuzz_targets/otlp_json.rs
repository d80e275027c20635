//! Fuzz target `otlp_json`: see `span_sessions::fuzzing::otlp_json` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = span_sessions::fuzzing::otlp_json(data) {
        panic!("otlp_json: {violation}");
    }
});

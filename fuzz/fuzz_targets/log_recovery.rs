//! Fuzz target `log_recovery`: see `span_sessions::fuzzing::log_recovery` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = span_sessions::fuzzing::log_recovery(data) {
        panic!("log_recovery: {violation}");
    }
});

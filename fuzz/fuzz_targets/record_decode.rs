//! Fuzz target `record_decode`: see `span_sessions::fuzzing::record_decode` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = span_sessions::fuzzing::record_decode(data) {
        panic!("record_decode: {violation}");
    }
});

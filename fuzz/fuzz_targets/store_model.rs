//! Fuzz target `store_model`: see `span_sessions::fuzzing::store_model` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = span_sessions::fuzzing::store_model(data) {
        panic!("store_model: {violation}");
    }
});

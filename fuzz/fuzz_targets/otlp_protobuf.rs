//! Fuzz target `otlp_protobuf`: see `span_sessions::fuzzing::otlp_protobuf` for what it drives and checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = span_sessions::fuzzing::otlp_protobuf(data) {
        panic!("otlp_protobuf: {violation}");
    }
});

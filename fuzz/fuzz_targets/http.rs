//! Fuzz target `http`: the receiver's HTTP/1.1 request reader. Its code is
//! in the binary (`src/cli/http.rs`), not the library, so this target
//! compiles that file itself; see `in_memory::connection` there for what it
//! drives and checks (a unit test of the binary replays this corpus).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/cli/http.rs"]
#[allow(dead_code)]
mod http;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = http::in_memory::connection(data) {
        panic!("http: {violation}");
    }
});

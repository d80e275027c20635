//! The `span-sessions` command line: ingest OTLP files, receive OTLP/HTTP,
//! and read a store from the shell. Its code is in `src/cli/`; like any
//! embedding program it uses only the library's public API.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
